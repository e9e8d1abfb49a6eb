/* BINARY (numpy broadcasting, rank <= 8: per-dimension element strides, 0 where broadcast) and
 * UNARY, each with the fused activation. */
inline float binary_op(float a, float b, int op) {
  switch (op) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    case 3: return a / b;
    case 4: return pow(a, b);
    case 5: return isnan(a) ? a : (isnan(b) ? b : (b < a ? b : a));
    case 6: return isnan(a) ? a : (isnan(b) ? b : (b > a ? b : a));
    case 15: return a < 0.0f ? a * b : a;
    case 17: return fmod(a, b);
  }
  return 0.0f;
}

__kernel void binary(__global storage *y, int yo, __global const storage *a, int ao, __global const storage *b,
                     int bo, int rank, int8 shape, int8 a_strides, int8 b_strides, int n, int op, int act,
                     float alpha, float beta) {
  int i = get_global_id(0);
  if (i >= n) return;
  int dims[8] = {shape.s0, shape.s1, shape.s2, shape.s3, shape.s4, shape.s5, shape.s6, shape.s7};
  int as[8] = {a_strides.s0, a_strides.s1, a_strides.s2, a_strides.s3, a_strides.s4, a_strides.s5, a_strides.s6,
               a_strides.s7};
  int bs[8] = {b_strides.s0, b_strides.s1, b_strides.s2, b_strides.s3, b_strides.s4, b_strides.s5, b_strides.s6,
               b_strides.s7};
  int rest = i, ai = 0, bi = 0;
  for (int d = rank - 1; d >= 0; --d) {
    int c = rest % dims[d];
    rest /= dims[d];
    ai += c * as[d];
    bi += c * bs[d];
  }
  STORE(activate(binary_op(LOAD(a, ao + ai), LOAD(b, bo + bi), op), act, alpha, beta), y, yo + i);
}

__kernel void unary(__global storage *y, int yo, __global const storage *x, int xo, int n, int op, float alpha,
                    float beta) {
  int i = get_global_id(0);
  if (i < n) STORE(activate(LOAD(x, xo + i), op, alpha, beta), y, yo + i);
}

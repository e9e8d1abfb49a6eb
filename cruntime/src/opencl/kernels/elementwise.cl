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

/* Shapes and strides come right-aligned in the 8 lanes (leading lanes: size 1, stride 0), so the
 * index walk is unrolled with no private arrays. */
#define BINARY_STEP(k)        \
  {                           \
    int c = rest % shape.s##k; \
    rest /= shape.s##k;       \
    ai += c * a_strides.s##k; \
    bi += c * b_strides.s##k; \
  }

__kernel void binary(__global storage *y, int yo, __global const storage *a, int ao, __global const storage *b,
                     int bo, int8 shape, int8 a_strides, int8 b_strides, int n, int op, int act, float alpha,
                     float beta) {
  int i = get_global_id(0);
  if (i >= n) return;
  int rest = i, ai = 0, bi = 0;
  BINARY_STEP(7) BINARY_STEP(6) BINARY_STEP(5) BINARY_STEP(4) BINARY_STEP(3) BINARY_STEP(2) BINARY_STEP(1)
  BINARY_STEP(0)
  STORE(activate(binary_op(LOAD(a, ao + ai), LOAD(b, bo + bi), op), act, alpha, beta), y, yo + i);
}

__kernel void unary(__global storage *y, int yo, __global const storage *x, int xo, int n, int op, float alpha,
                    float beta) {
  int i = get_global_id(0);
  if (i < n) STORE(activate(LOAD(x, xo + i), op, alpha, beta), y, yo + i);
}

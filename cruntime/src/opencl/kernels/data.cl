/* Data movement: copies with index maps for RESHAPE, TRANSPOSE, CONCAT, SLICE, PAD and GATHER.
 * Shapes and strides are rank <= 8 vectors. */
#ifndef INDEX_TYPE
#define INDEX_TYPE int
#endif
__kernel void copy(__global storage *y, int yo, __global const storage *x, int xo, int n) {
  const int i = get_global_id(0);
  if (i < n) STORE(LOAD(x, xo + i), y, yo + i);
}

/* y[i] = x[sum_d c_d * x_strides[d] + x_start] over the output's coordinates c (TRANSPOSE: strides
 * permuted; SLICE: start and steps folded in). */
__kernel void strided(__global storage *y, int yo, __global const storage *x, int xo, int rank, int8 out_shape,
                      int8 x_strides, int n) {
  const int i = get_global_id(0);
  if (i >= n) return;
  int dims[8] = {out_shape.s0, out_shape.s1, out_shape.s2, out_shape.s3, out_shape.s4, out_shape.s5, out_shape.s6,
                 out_shape.s7};
  int xs[8] = {x_strides.s0, x_strides.s1, x_strides.s2, x_strides.s3, x_strides.s4, x_strides.s5, x_strides.s6,
               x_strides.s7};
  int rest = i, xi = 0;
  for (int d = rank - 1; d >= 0; --d) {
    xi += (rest % dims[d]) * xs[d];
    rest /= dims[d];
  }
  STORE(LOAD(x, xo + xi), y, yo + i);
}

/* One input of a CONCAT: x is outer x part (part = its axis extent x inner) and lands at column
 * offset of y's outer x whole rows. */
__kernel void concat_part(__global storage *y, int yo, __global const storage *x, int xo, int outer, int part,
                          int whole, int offset) {
  const int i = get_global_id(0);
  if (i >= outer * part) return;
  STORE(LOAD(x, xo + i), y, yo + (i / part) * whole + offset + i % part);
}

/* PAD (constant mode): out coordinate c reads x at c - before when inside, else `value`. */
__kernel void pad_constant(__global storage *y, int yo, __global const storage *x, int xo, int rank, int8 out_shape,
                           int8 in_shape, int8 before, float value, int n) {
  const int i = get_global_id(0);
  if (i >= n) return;
  int od[8] = {out_shape.s0, out_shape.s1, out_shape.s2, out_shape.s3, out_shape.s4, out_shape.s5, out_shape.s6,
               out_shape.s7};
  int id[8] = {in_shape.s0, in_shape.s1, in_shape.s2, in_shape.s3, in_shape.s4, in_shape.s5, in_shape.s6,
               in_shape.s7};
  int bd[8] = {before.s0, before.s1, before.s2, before.s3, before.s4, before.s5, before.s6, before.s7};
  int rest = i, xi = 0, stride = 1;
  bool inside = true;
  for (int d = rank - 1; d >= 0; --d) {
    int c = rest % od[d] - bd[d];
    rest /= od[d];
    inside = inside && c >= 0 && c < id[d];
    xi += c * stride;
    stride *= id[d];
  }
  STORE(inside ? LOAD(x, xo + xi) : value, y, yo + i);
}

/* GATHER: y[o, j, i] = x[o, idx[j], i] (idx checked on the host before the launch; negative ones
 * count from the end). INDEX_TYPE is int or long. */
__kernel void gather(__global storage *y, int yo, __global const storage *x, int xo, __global const INDEX_TYPE *idx,
                     int io, int outer, int axis_size, int inner, int count) {
  const int i = get_global_id(0);
  if (i >= outer * count * inner) return;
  const int in = i % inner, j = (i / inner) % count, o = i / (inner * count);
  long k = idx[io + j];
  if (k < 0) k += axis_size;
  STORE(LOAD(x, xo + (o * axis_size + (int)k) * inner + in), y, yo + i);
}

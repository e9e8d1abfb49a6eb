/* Data movement: copies with index maps for RESHAPE, TRANSPOSE, CONCAT, SLICE, PAD and GATHER.
 * Shapes and strides are rank <= 8 vectors. */
#ifndef INDEX_TYPE
#define INDEX_TYPE int
#endif
__kernel void copy(__global storage *y, int yo, __global const storage *x, int xo, int n) {
  const int i = get_global_id(0);
  if (i < n) STORE(LOAD(x, xo + i), y, yo + i);
}

/* y[i] = x[sum_d c_d * x_strides[d]] over the output's coordinates c (TRANSPOSE: strides
 * permuted; SLICE: steps folded in, its start in the offset). Shapes and strides come right-aligned
 * in the 8 lanes (leading lanes: size 1), so the walk is unrolled with no private arrays. */
#define STRIDED_STEP(k)          \
  {                              \
    int c = rest % out_shape.s##k; \
    rest /= out_shape.s##k;      \
    xi += c * x_strides.s##k;    \
  }

__kernel void strided(__global storage *y, int yo, __global const storage *x, int xo, int8 out_shape,
                      int8 x_strides, int n) {
  const int i = get_global_id(0);
  if (i >= n) return;
  int rest = i, xi = 0;
  STRIDED_STEP(7) STRIDED_STEP(6) STRIDED_STEP(5) STRIDED_STEP(4) STRIDED_STEP(3) STRIDED_STEP(2) STRIDED_STEP(1)
  STRIDED_STEP(0)
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

/* PAD (constant mode): out coordinate c reads x at c - before when inside, else `value`. Lanes as
 * for `strided`; x_strides are x's own contiguous strides. */
#define PAD_STEP(k)                              \
  {                                              \
    int c = rest % out_shape.s##k - before.s##k; \
    rest /= out_shape.s##k;                      \
    inside = inside && c >= 0 && c < in_shape.s##k; \
    xi += c * x_strides.s##k;                    \
  }

__kernel void pad_constant(__global storage *y, int yo, __global const storage *x, int xo, int8 out_shape,
                           int8 in_shape, int8 x_strides, int8 before, float value, int n) {
  const int i = get_global_id(0);
  if (i >= n) return;
  int rest = i, xi = 0;
  bool inside = true;
  PAD_STEP(7) PAD_STEP(6) PAD_STEP(5) PAD_STEP(4) PAD_STEP(3) PAD_STEP(2) PAD_STEP(1) PAD_STEP(0)
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

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

/* RESIZE (nearest or linear) of two adjacent dims of a tensor seen as [outer, rows (in_h), columns
 * (in_w), inner (channels)], from the CPU prepare's tables: per output row and column the lower and
 * upper source coordinate and the upper one's weight (0 for nearest). The corners are weighted and summed in the CPU's order, products then sums, with no
 * contraction into fma, so both devices round alike. */
#pragma OPENCL FP_CONTRACT OFF
__kernel void resize_hw(__global storage *y, int yo, __global const storage *x, int xo, int in_h, int in_w,
                        int channels, int out_h, int out_w, __global const int *lower_h,
                        __global const int *upper_h, __global const float *weight_h, __global const int *lower_w,
                        __global const int *upper_w, __global const float *weight_w) {
  const int c = get_global_id(0), ow = get_global_id(1), row = get_global_id(2);
  if (c >= channels || ow >= out_w) return;
  const int n = row / out_h, oh = row % out_h;
  const float wh = weight_h[oh], ww = weight_w[ow];
  const int base = xo + n * in_h * in_w * channels + c;
  const int hl = lower_h[oh] * in_w, hu = upper_h[oh] * in_w, wl = lower_w[ow], wu = upper_w[ow];
  float v;
  if (wh == 0.0f && ww == 0.0f) {
    v = LOAD(x, base + (hl + wl) * channels);
  } else if (ww == 0.0f) {
    float a = (1.0f - wh) * LOAD(x, base + (hl + wl) * channels);
    float b = wh * LOAD(x, base + (hu + wl) * channels);
    v = a + b;
  } else if (wh == 0.0f) {
    float a = (1.0f - ww) * LOAD(x, base + (hl + wl) * channels);
    float b = ww * LOAD(x, base + (hl + wu) * channels);
    v = a + b;
  } else {
    float c0 = ((1.0f - wh) * (1.0f - ww)) * LOAD(x, base + (hl + wl) * channels);
    float c1 = (wh * (1.0f - ww)) * LOAD(x, base + (hu + wl) * channels);
    float c2 = ((1.0f - wh) * ww) * LOAD(x, base + (hl + wu) * channels);
    float c3 = (wh * ww) * LOAD(x, base + (hu + wu) * channels);
    v = ((c0 + c1) + c2) + c3;
  }
  STORE(v, y, yo + ((n * out_h + oh) * out_w + ow) * channels + c);
}

/* BatchNorm kernels over one block of `rows` rows of `channels` contiguous floats (NHWC: a row is
 * a pixel), compiled once per ISA (see simd.h); the contracts are in kernels/vector.h:
 *   channel_moments    mean[c] = sum_r x[r][c] / rows,  m2[c] = sum_r (x[r][c] - mean[c])^2
 *   channel_grad_sums  sum[c] = sum_r dy[r][c],  dot[c] = sum_r dy[r][c] * (x[r][c] - mean[c])
 *   channel_affine     y[r][c] = (x[r][c] - shift[c]) * mul[c] + add[c]
 *   channel_grad_apply dx[r][c] = a[c] * dy[r][c] + (b[c] * (x[r][c] - mean[c]) + d[c])
 * Lanes run across channels and each channel is walked down the rows, a vector of channels at a
 * time, so the callers keep a block within L1 (ops/norm_grad.c: at most 4096 floats). Sums use
 * four float accumulators (rows r % 4), folded (0 + 1) + (2 + 3): a result depends only on the
 * block's shape and the ISA, never on how the caller splits its work. The caller adds the blocks'
 * results in double, so the float rounding is that of a chain of at most rows / 4 terms. */
#include "../vector.h"
#include "../simd.h"

EDGE_SIMD_INLINE f32xN load_lanes(const float *p, size_t width) {
  return width == EDGE_SIMD_N ? vf_loadu(p) : vf_load_partial(p, width);
}
EDGE_SIMD_INLINE void store_lanes(float *p, f32xN v, size_t width) {
  if (width == EDGE_SIMD_N) vf_storeu(p, v);
  else vf_store_partial(p, v, width);
}

/* One vector of channels (width lanes) starting at x. */
EDGE_SIMD_INLINE void moments_lanes(size_t rows, size_t stride, const float *x, float *mean, float *m2,
                                    size_t width) {
  f32xN s0 = vf_zero(), s1 = vf_zero(), s2 = vf_zero(), s3 = vf_zero();
  size_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    s0 = vf_add(s0, load_lanes(x + r * stride, width));
    s1 = vf_add(s1, load_lanes(x + (r + 1) * stride, width));
    s2 = vf_add(s2, load_lanes(x + (r + 2) * stride, width));
    s3 = vf_add(s3, load_lanes(x + (r + 3) * stride, width));
  }
  for (; r < rows; ++r) s0 = vf_add(s0, load_lanes(x + r * stride, width));
  const f32xN mu = vf_div(vf_add(vf_add(s0, s1), vf_add(s2, s3)), vf_set1((float)rows));
  f32xN q0 = vf_zero(), q1 = vf_zero(), q2 = vf_zero(), q3 = vf_zero();
  for (r = 0; r + 4 <= rows; r += 4) {
    const f32xN d0 = vf_sub(load_lanes(x + r * stride, width), mu);
    const f32xN d1 = vf_sub(load_lanes(x + (r + 1) * stride, width), mu);
    const f32xN d2 = vf_sub(load_lanes(x + (r + 2) * stride, width), mu);
    const f32xN d3 = vf_sub(load_lanes(x + (r + 3) * stride, width), mu);
    q0 = vf_fma(d0, d0, q0);
    q1 = vf_fma(d1, d1, q1);
    q2 = vf_fma(d2, d2, q2);
    q3 = vf_fma(d3, d3, q3);
  }
  for (; r < rows; ++r) {
    const f32xN d = vf_sub(load_lanes(x + r * stride, width), mu);
    q0 = vf_fma(d, d, q0);
  }
  store_lanes(mean, mu, width);
  store_lanes(m2, vf_add(vf_add(q0, q1), vf_add(q2, q3)), width);
}

void EDGE_SIMD_FN(f32_channel_moments)(size_t rows, size_t channels, const float *x, float *mean, float *m2) {
  size_t c = 0;
  for (; c + EDGE_SIMD_N <= channels; c += EDGE_SIMD_N)
    moments_lanes(rows, channels, x + c, mean + c, m2 + c, EDGE_SIMD_N);
  if (c < channels) moments_lanes(rows, channels, x + c, mean + c, m2 + c, channels - c);
}

EDGE_SIMD_INLINE void grad_sums_lanes(size_t rows, size_t stride, const float *x, const float *dy, const float *mean,
                                      float *sum, float *dot, size_t width) {
  const f32xN mu = load_lanes(mean, width);
  f32xN s0 = vf_zero(), s1 = vf_zero(), s2 = vf_zero(), s3 = vf_zero();
  f32xN p0 = vf_zero(), p1 = vf_zero(), p2 = vf_zero(), p3 = vf_zero();
  size_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    const f32xN g0 = load_lanes(dy + r * stride, width), g1 = load_lanes(dy + (r + 1) * stride, width);
    const f32xN g2 = load_lanes(dy + (r + 2) * stride, width), g3 = load_lanes(dy + (r + 3) * stride, width);
    s0 = vf_add(s0, g0);
    s1 = vf_add(s1, g1);
    s2 = vf_add(s2, g2);
    s3 = vf_add(s3, g3);
    p0 = vf_fma(g0, vf_sub(load_lanes(x + r * stride, width), mu), p0);
    p1 = vf_fma(g1, vf_sub(load_lanes(x + (r + 1) * stride, width), mu), p1);
    p2 = vf_fma(g2, vf_sub(load_lanes(x + (r + 2) * stride, width), mu), p2);
    p3 = vf_fma(g3, vf_sub(load_lanes(x + (r + 3) * stride, width), mu), p3);
  }
  for (; r < rows; ++r) {
    const f32xN g = load_lanes(dy + r * stride, width);
    s0 = vf_add(s0, g);
    p0 = vf_fma(g, vf_sub(load_lanes(x + r * stride, width), mu), p0);
  }
  store_lanes(sum, vf_add(vf_add(s0, s1), vf_add(s2, s3)), width);
  store_lanes(dot, vf_add(vf_add(p0, p1), vf_add(p2, p3)), width);
}

void EDGE_SIMD_FN(f32_channel_grad_sums)(size_t rows, size_t channels, const float *x, const float *dy,
                                         const float *mean, float *sum, float *dot) {
  size_t c = 0;
  for (; c + EDGE_SIMD_N <= channels; c += EDGE_SIMD_N)
    grad_sums_lanes(rows, channels, x + c, dy + c, mean + c, sum + c, dot + c, EDGE_SIMD_N);
  if (c < channels) grad_sums_lanes(rows, channels, x + c, dy + c, mean + c, sum + c, dot + c, channels - c);
}

EDGE_SIMD_INLINE void affine_lanes(size_t rows, size_t stride, const float *x, const float *shift, const float *mul,
                                   const float *add, float *y, size_t width) {
  const f32xN s = load_lanes(shift, width), m = load_lanes(mul, width), a = load_lanes(add, width);
  for (size_t r = 0; r < rows; ++r)
    store_lanes(y + r * stride, vf_fma(vf_sub(load_lanes(x + r * stride, width), s), m, a), width);
}

void EDGE_SIMD_FN(f32_channel_affine)(size_t rows, size_t channels, const float *x, const float *shift,
                                      const float *mul, const float *add, float *y) {
  size_t c = 0;
  for (; c + EDGE_SIMD_N <= channels; c += EDGE_SIMD_N)
    affine_lanes(rows, channels, x + c, shift + c, mul + c, add + c, y + c, EDGE_SIMD_N);
  if (c < channels) affine_lanes(rows, channels, x + c, shift + c, mul + c, add + c, y + c, channels - c);
}

EDGE_SIMD_INLINE void grad_apply_lanes(size_t rows, size_t stride, const float *x, const float *dy, const float *mean,
                                       const float *a, const float *b, const float *d, float *dx, size_t width) {
  const f32xN mu = load_lanes(mean, width), va = load_lanes(a, width), vb = load_lanes(b, width);
  const f32xN vd = load_lanes(d, width);
  for (size_t r = 0; r < rows; ++r) {
    const f32xN centred = vf_sub(load_lanes(x + r * stride, width), mu);
    store_lanes(dx + r * stride, vf_fma(va, load_lanes(dy + r * stride, width), vf_fma(vb, centred, vd)), width);
  }
}

void EDGE_SIMD_FN(f32_channel_grad_apply)(size_t rows, size_t channels, const float *x, const float *dy,
                                          const float *mean, const float *a, const float *b, const float *d,
                                          float *dx) {
  size_t c = 0;
  for (; c + EDGE_SIMD_N <= channels; c += EDGE_SIMD_N)
    grad_apply_lanes(rows, channels, x + c, dy + c, mean + c, a + c, b + c, d + c, dx + c, EDGE_SIMD_N);
  if (c < channels)
    grad_apply_lanes(rows, channels, x + c, dy + c, mean + c, a + c, b + c, d + c, dx + c, channels - c);
}

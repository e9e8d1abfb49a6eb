/* Depthwise convolution over NHWC rows, written once over simd.h (contract in conv.h): channels
 * in vectors of EDGE_SIMD_N (the table's channel tile), every tap's input row found through the
 * indirection buffer, so stride, dilation and padding cost nothing here. The 3x3 and 5x5 entry
 * points fix the tap count at compile time (unrolled taps, weights held in registers); the generic
 * one loops over any count; the s1 / s2 entry points (horizontal stride 1 or 2, dilation 1) load
 * each input column once for all the pixels of a group that read it. Each output is bias, then
 * + x_t * w_t for taps t in order (vf_fma), whatever the tiling, so every ISA and every entry point
 * sums in the same order. */
#include "../conv_kernels.h"
#include "../simd.h"

#include <stdbool.h>

#define PIXEL_TILE 8
#define PIXELS_IN_FLIGHT 4

EDGE_SIMD_INLINE f32xN load_lanes(const float *p, size_t lanes, bool full) {
  return full ? vf_loadu(p) : vf_load_partial(p, lanes);
}

EDGE_SIMD_INLINE void store_lanes(float *p, f32xN v, size_t lanes, bool full) {
  if (full)
    vf_storeu(p, v);
  else
    vf_store_partial(p, v, lanes);
}

/* The row pointer of pixel x, tap (r, k) (kernel row r, column k): input[x * input_stride +
 * r * row_pitch + k] (conv.h). offset_rows is false when input_offset is 0 (one image), which
 * drops the compare against zero from the inner loop. */
EDGE_SIMD_INLINE const float *tap_row(const float *const *input, size_t input_stride, size_t row_pitch, size_t x,
                                      size_t r, size_t k, size_t input_offset, const float *zero, bool offset_rows) {
  const float *p = input[x * input_stride + r * row_pitch + k];
  return offset_rows && p != zero ? p + input_offset : p;
}

/* Tap t of a kernel `width` columns wide (t = r * width + k); width 0 is a flat list of taps
 * (the generic kernel: one "row" of all of them). */
EDGE_SIMD_INLINE const float *tap_at(const float *const *input, size_t input_stride, size_t row_pitch, size_t width,
                                     size_t x, size_t t, size_t input_offset, const float *zero, bool offset_rows) {
  return width ? tap_row(input, input_stride, row_pitch, x, t / width, t % width, input_offset, zero, offset_rows)
               : tap_row(input, input_stride, 0, x, 0, t, input_offset, zero, offset_rows);
}

/* One channel block (EDGE_SIMD_N channels from c, `lanes` valid) over `pixels` consecutive output
 * pixels: the block's bias and tap weights are loaded once into registers (all of them for 3x3
 * everywhere and for 5x5 with 32 vector registers; the compiler spills the rest), and four pixels
 * run side by side so four independent FMA chains hide the FMA latency. */
EDGE_SIMD_INLINE void dwconv_block(size_t c, size_t lanes, bool full, size_t pixels, size_t taps, size_t width,
                                   size_t unit_width, const float *const *input, size_t input_stride,
                                   size_t row_pitch, size_t input_offset, const float *zero, bool offset_rows, const float *w,
                                   float *output, size_t output_stride, f32xN vmin, f32xN vmax) {
  f32xN weight[26];
  const size_t kept = taps < 25 ? taps : 25;
#pragma GCC unroll 26
  for (size_t t = 0; t <= kept; ++t) weight[t] = vf_loadu(w + t * EDGE_SIMD_N);
  size_t x = 0;
  for (; x + PIXELS_IN_FLIGHT <= pixels; x += PIXELS_IN_FLIGHT) {
    f32xN acc[PIXELS_IN_FLIGHT];
#pragma GCC unroll 4
    for (int j = 0; j < PIXELS_IN_FLIGHT; ++j) acc[j] = weight[0];
    if (unit_width) {
      /* Unit horizontal stride and dilation: pixel x + j's tap (r, k) reads input column
       * x + j + k of row r, so each row's PIXELS_IN_FLIGHT + K - 1 columns are loaded once
       * (their pointers taken from whichever pixel's taps include them) and shared. */
#pragma GCC unroll 5
      for (size_t r = 0; r < unit_width; ++r) {
        f32xN column[PIXELS_IN_FLIGHT + 4];
#pragma GCC unroll 8
        for (size_t u = 0; u < PIXELS_IN_FLIGHT + unit_width - 1; ++u) {
          const size_t j = u < unit_width ? 0 : u - unit_width + 1;
          const float *row =
              tap_row(input, input_stride, row_pitch, x + j, r, u - j, input_offset, zero, offset_rows);
          column[u] = load_lanes(row + c, lanes, full);
        }
#pragma GCC unroll 5
        for (size_t k = 0; k < unit_width; ++k) {
          const size_t t = r * unit_width + k;
          const f32xN wt = t < kept ? weight[t + 1] : vf_loadu(w + (t + 1) * EDGE_SIMD_N);
#pragma GCC unroll 4
          for (int j = 0; j < PIXELS_IN_FLIGHT; ++j) acc[j] = vf_fma(column[(size_t)j + k], wt, acc[j]);
        }
      }
    } else {
#pragma GCC unroll 25
      for (size_t t = 0; t < taps; ++t) {
        const f32xN wt = t < kept ? weight[t + 1] : vf_loadu(w + (t + 1) * EDGE_SIMD_N);
#pragma GCC unroll 4
        for (int j = 0; j < PIXELS_IN_FLIGHT; ++j) {
          const float *row =
              tap_at(input, input_stride, row_pitch, width, x + (size_t)j, t, input_offset, zero, offset_rows);
          acc[j] = vf_fma(load_lanes(row + c, lanes, full), wt, acc[j]);
        }
      }
    }
#pragma GCC unroll 4
    for (int j = 0; j < PIXELS_IN_FLIGHT; ++j)
      store_lanes(output + (x + (size_t)j) * output_stride + c, vf_clamp(acc[j], vmin, vmax), lanes, full);
  }
  for (; x < pixels; ++x) {
    f32xN acc = weight[0];
#pragma GCC unroll 25
    for (size_t t = 0; t < taps; ++t) {
      const f32xN wt = t < kept ? weight[t + 1] : vf_loadu(w + (t + 1) * EDGE_SIMD_N);
      const float *row = tap_at(input, input_stride, row_pitch, width, x, t, input_offset, zero, offset_rows);
      acc = vf_fma(load_lanes(row + c, lanes, full), wt, acc);
    }
    store_lanes(output + x * output_stride + c, vf_clamp(acc, vmin, vmax), lanes, full);
  }
}

/* Pixels in tiles of PIXEL_TILE, channel blocks inside a tile: the tile's input rows stay in L1
 * while every block passes over them, and each block's weights are loaded once per tile. */
EDGE_SIMD_INLINE void dwconv_rows_with(bool offset_rows, size_t channels, size_t output_width, size_t taps,
                                       size_t width, size_t unit_width, const float *const *input,
                                       size_t input_stride, size_t row_pitch, size_t input_offset,
                                       const float *zero, const float *weights, float *output,
                                       size_t output_stride, const edge_f32_minmax_params *params) {
  const f32xN vmin = vf_set1(params->min), vmax = vf_set1(params->max);
  const size_t block = (taps + 1) * EDGE_SIMD_N;
  for (size_t x0 = 0; x0 < output_width; x0 += PIXEL_TILE) {
    const size_t pixels = output_width - x0 < PIXEL_TILE ? output_width - x0 : PIXEL_TILE;
    const float *const *tile_input = input + x0 * input_stride;
    float *tile_output = output + x0 * output_stride;
    const float *w = weights;
    size_t c = 0;
    for (; c + EDGE_SIMD_N <= channels; c += EDGE_SIMD_N, w += block)
      dwconv_block(c, EDGE_SIMD_N, true, pixels, taps, width, unit_width, tile_input, input_stride, row_pitch,
                   input_offset, zero, offset_rows, w, tile_output, output_stride, vmin, vmax);
    if (c < channels)
      dwconv_block(c, channels - c, false, pixels, taps, width, unit_width, tile_input, input_stride, row_pitch,
                   input_offset, zero, offset_rows, w, tile_output, output_stride, vmin, vmax);
  }
}

#define MAX_SHARED_COLUMNS (2 * (PIXELS_IN_FLIGHT - 1) + 5)

/* One channel block of one group of PIXELS_IN_FLIGHT pixels of a shared-column row (below):
 * columns[r][u] is input column u of kernel row r, already offset; when `direct`, column u of row
 * r is columns[r][0] + u * pixel_stride instead (no padding in the group), which keeps the
 * addresses in a few registers rather than reloading pointers. */
EDGE_SIMD_INLINE void dwconv_shared_block(size_t c, size_t lanes, bool full, size_t kernel, size_t column_step,
                                          bool direct, size_t pixel_stride,
                                          const float *const columns[5][MAX_SHARED_COLUMNS], const float *w,
                                          float *output, size_t output_stride, f32xN vmin, f32xN vmax) {
  const f32xN bias = vf_loadu(w);
  f32xN acc[PIXELS_IN_FLIGHT];
#pragma GCC unroll 4
  for (int j = 0; j < PIXELS_IN_FLIGHT; ++j) acc[j] = bias;
#pragma GCC unroll 5
  for (size_t r = 0; r < kernel; ++r) {
    f32xN column[MAX_SHARED_COLUMNS];
#pragma GCC unroll 11
    for (size_t u = 0; u < column_step * (PIXELS_IN_FLIGHT - 1) + kernel; ++u)
      column[u] = load_lanes((direct ? columns[r][0] + u * pixel_stride : columns[r][u]) + c, lanes, full);
#pragma GCC unroll 5
    for (size_t k = 0; k < kernel; ++k) {
      const f32xN wt = vf_loadu(w + (1 + r * kernel + k) * EDGE_SIMD_N);
#pragma GCC unroll 4
      for (int j = 0; j < PIXELS_IN_FLIGHT; ++j) acc[j] = vf_fma(column[column_step * (size_t)j + k], wt, acc[j]);
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < PIXELS_IN_FLIGHT; ++j)
    store_lanes(output + (size_t)j * output_stride + c, vf_clamp(acc[j], vmin, vmax), lanes, full);
}

/* A KxK kernel at horizontal dilation 1 and stride S = column_step: pixel x + j's tap (r, k)
 * reads input column S * (x + j) + k of row r, so a group of PIXELS_IN_FLIGHT pixels reads
 * S * (PIXELS_IN_FLIGHT - 1) + K columns per kernel row, each loaded once and used by every tap
 * that needs it (for 3x3 at stride 2: 9 loads per row of four pixels instead of 12). Used at
 * stride 2; stride 1 keeps dwconv_block's shared columns inside each pixel tile, which measured
 * faster there for few channels (this function's per-group pointer work is spread over the
 * channel blocks). The group's column pointers (taken from a pixel whose taps include them) are
 * found once and serve every channel block, the blocks' weights come from L1, so a group costs
 * about one load per FMA. Each output still adds its taps in order t = r * K + k; the last
 * output_width % PIXELS_IN_FLIGHT pixels take the per-tap path. */
EDGE_SIMD_INLINE void dwconv_shared_rows(bool offset_rows, size_t kernel, size_t column_step, size_t channels,
                                         size_t output_width, const float *const *input, size_t input_stride,
                                         size_t row_pitch, size_t input_offset, const float *zero, const float *weights,
                                         float *output, size_t output_stride, const edge_f32_minmax_params *params) {
  const f32xN vmin = vf_set1(params->min), vmax = vf_set1(params->max);
  const size_t taps = kernel * kernel, block = (taps + 1) * EDGE_SIMD_N;
  const size_t column_count = column_step * (PIXELS_IN_FLIGHT - 1) + kernel;
  size_t x = 0;
  for (; x + PIXELS_IN_FLIGHT <= output_width; x += PIXELS_IN_FLIGHT) {
    const float *columns[5][MAX_SHARED_COLUMNS];
#pragma GCC unroll 5
    for (size_t r = 0; r < kernel; ++r)
#pragma GCC unroll 11
      for (size_t u = 0; u < column_count; ++u) {
        const size_t j = u / column_step < PIXELS_IN_FLIGHT ? u / column_step : PIXELS_IN_FLIGHT - 1;
        columns[r][u] = tap_row(input, input_stride, row_pitch, x + j, r, u - column_step * j, input_offset, zero,
                                offset_rows);
      }
    /* the group's columns are consecutive pixels of `channels` floats in every kernel row */
    bool direct = true;
    for (size_t r = 0; r < kernel; ++r)
      for (size_t u = 1; u < column_count; ++u) direct &= columns[r][u] == columns[r][0] + u * channels;
    float *out = output + x * output_stride;
    const float *w = weights;
    size_t c = 0;
    if (direct) {
      for (; c + EDGE_SIMD_N <= channels; c += EDGE_SIMD_N, w += block)
        dwconv_shared_block(c, EDGE_SIMD_N, true, kernel, column_step, true, channels, columns, w, out,
                            output_stride, vmin, vmax);
    } else {
      for (; c + EDGE_SIMD_N <= channels; c += EDGE_SIMD_N, w += block)
        dwconv_shared_block(c, EDGE_SIMD_N, true, kernel, column_step, false, channels, columns, w, out,
                            output_stride, vmin, vmax);
    }
    if (c < channels)
      dwconv_shared_block(c, channels - c, false, kernel, column_step, false, channels, columns, w, out,
                          output_stride, vmin, vmax);
  }
  if (x < output_width)
    dwconv_rows_with(offset_rows, channels, output_width - x, taps, kernel, 0, input + x * input_stride,
                     input_stride, row_pitch, input_offset, zero, weights, output + x * output_stride, output_stride,
                     params);
}

/* width: K for a KxK kernel, 0 for the generic flat tap list; unit_width: 0, or K at unit
 * horizontal stride and dilation. */
EDGE_SIMD_INLINE void dwconv_rows(size_t channels, size_t output_width, size_t taps, size_t width, size_t unit_width,
                                  const float *const *input, size_t input_stride, size_t row_pitch,
                                  size_t input_offset, const float *zero, const float *weights, float *output,
                                  size_t output_stride, const edge_f32_minmax_params *params) {
  if (input_offset == 0)
    dwconv_rows_with(false, channels, output_width, taps, width, unit_width, input, input_stride, row_pitch, 0, zero,
                     weights, output, output_stride, params);
  else
    dwconv_rows_with(true, channels, output_width, taps, width, unit_width, input, input_stride, row_pitch,
                     input_offset, zero, weights, output, output_stride, params);
}

void EDGE_SIMD_FN(f32_dwconv_minmax_ukernel_3x3)(size_t channels, size_t output_width, size_t taps,
                                                 const float *const *input, size_t input_stride,
                                                 size_t row_pitch, size_t input_offset, const float *zero, const float *weights,
                                                 float *output, size_t output_stride,
                                                 const edge_f32_minmax_params *params) {
  (void)taps;
  dwconv_rows(channels, output_width, 9, 3, 0, input, input_stride, row_pitch, input_offset, zero, weights, output,
              output_stride, params);
}

void EDGE_SIMD_FN(f32_dwconv_minmax_ukernel_5x5)(size_t channels, size_t output_width, size_t taps,
                                                 const float *const *input, size_t input_stride,
                                                 size_t row_pitch, size_t input_offset, const float *zero, const float *weights,
                                                 float *output, size_t output_stride,
                                                 const edge_f32_minmax_params *params) {
  (void)taps;
  dwconv_rows(channels, output_width, 25, 5, 0, input, input_stride, row_pitch, input_offset, zero, weights, output,
              output_stride, params);
}

void EDGE_SIMD_FN(f32_dwconv_minmax_ukernel_any)(size_t channels, size_t output_width, size_t taps,
                                                 const float *const *input, size_t input_stride,
                                                 size_t row_pitch, size_t input_offset, const float *zero, const float *weights,
                                                 float *output, size_t output_stride,
                                                 const edge_f32_minmax_params *params) {
  (void)row_pitch;
  dwconv_rows(channels, output_width, taps, 0, 0, input, input_stride, 0, input_offset, zero, weights, output,
              output_stride, params);
}

void EDGE_SIMD_FN(f32_dwconv_minmax_ukernel_3x3s1)(size_t channels, size_t output_width, size_t taps,
                                                   const float *const *input, size_t input_stride,
                                                   size_t row_pitch, size_t input_offset, const float *zero, const float *weights,
                                                   float *output, size_t output_stride,
                                                   const edge_f32_minmax_params *params) {
  (void)taps;
  dwconv_rows(channels, output_width, 9, 3, 3, input, input_stride, row_pitch, input_offset, zero, weights, output,
              output_stride, params);
}

void EDGE_SIMD_FN(f32_dwconv_minmax_ukernel_5x5s1)(size_t channels, size_t output_width, size_t taps,
                                                   const float *const *input, size_t input_stride,
                                                   size_t row_pitch, size_t input_offset, const float *zero, const float *weights,
                                                   float *output, size_t output_stride,
                                                   const edge_f32_minmax_params *params) {
  (void)taps;
  dwconv_rows(channels, output_width, 25, 5, 5, input, input_stride, row_pitch, input_offset, zero, weights, output,
              output_stride, params);
}

void EDGE_SIMD_FN(f32_dwconv_minmax_ukernel_3x3s2)(size_t channels, size_t output_width, size_t taps,
                                                   const float *const *input, size_t input_stride,
                                                   size_t row_pitch, size_t input_offset, const float *zero, const float *weights,
                                                   float *output, size_t output_stride,
                                                   const edge_f32_minmax_params *params) {
  (void)taps;
  dwconv_shared_rows(input_offset != 0, 3, 2, channels, output_width, input, input_stride, row_pitch, input_offset,
                     zero, weights, output, output_stride, params);
}

void EDGE_SIMD_FN(f32_dwconv_minmax_ukernel_5x5s2)(size_t channels, size_t output_width, size_t taps,
                                                   const float *const *input, size_t input_stride,
                                                   size_t row_pitch, size_t input_offset, const float *zero, const float *weights,
                                                   float *output, size_t output_stride,
                                                   const edge_f32_minmax_params *params) {
  (void)taps;
  dwconv_shared_rows(input_offset != 0, 5, 2, channels, output_width, input, input_stride, row_pitch, input_offset,
                     zero, weights, output, output_stride, params);
}

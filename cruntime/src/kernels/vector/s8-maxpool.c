/* int8 max pooling of one NHWC output pixel (edge_s8_maxpool_ukernel), also REDUCE MAX over an
 * outer axis (cols = 1): y[j] = clamp(max over the rows x cols taps of x[tap][j], lo, hi), taps
 * all real (the caller clips the window; padding never wins). A max is exact, so every ISA gives
 * the scalar reference's bytes. Channels go in blocks of 64, then 16, then one by one. */
#include "../vector.h"
#include "../simd.h"
#include "s8-common.h"

void EDGE_SIMD_FN(s8_maxpool)(size_t rows, size_t cols, const int8_t *x, size_t row_step, size_t col_step,
                              size_t channels, int8_t *y, int8_t lo, int8_t hi) {
  const int8_t least = -128;
  size_t j = 0;
  const edge_s8x64 lo64 = (edge_s8x64){0} + lo, hi64 = (edge_s8x64){0} + hi;
  for (; j + 64 <= channels; j += 64) {
    edge_s8x64 acc = (edge_s8x64){0} + least;
    for (size_t r = 0; r < rows; ++r)
      for (size_t c = 0; c < cols; ++c) acc = s8x64_max(acc, s8x64_load(x + r * row_step + c * col_step + j));
    s8x64_store(y + j, s8x64_min(s8x64_max(acc, lo64), hi64));
  }
  const edge_s8x16 lo16 = (edge_s8x16){0} + lo, hi16 = (edge_s8x16){0} + hi;
  for (; j + 16 <= channels; j += 16) {
    edge_s8x16 acc = (edge_s8x16){0} + least;
    for (size_t r = 0; r < rows; ++r)
      for (size_t c = 0; c < cols; ++c) acc = s8x16_max(acc, s8x16_load(x + r * row_step + c * col_step + j));
    s8x16_store(y + j, s8x16_min(s8x16_max(acc, lo16), hi16));
  }
  for (; j < channels; ++j) {
    int8_t acc = -128;
    for (size_t r = 0; r < rows; ++r)
      for (size_t c = 0; c < cols; ++c) {
        int8_t v = x[r * row_step + c * col_step + j];
        acc = v > acc ? v : acc;
      }
    y[j] = acc < lo ? lo : (acc > hi ? hi : acc);
  }
}

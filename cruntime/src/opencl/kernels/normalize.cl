/* SOFTMAX over one axis (outer x axis x inner; one work-item per (outer, inner) pair, the maximum
 * subtracted first) and LAYER_NORM over rows of `row` elements with float scale and bias. */
__kernel void softmax(__global storage *y, int yo, __global const storage *x, int xo, int outer, int axis_size,
                      int inner, int log_softmax) {
  const int i = get_global_id(0);
  if (i >= outer * inner) return;
  const int base = (i / inner) * axis_size * inner + i % inner;
  float high = -INFINITY;
  for (int a = 0; a < axis_size; ++a) high = fmax(high, LOAD(x, xo + base + a * inner));
  float sum = 0.0f;
  for (int a = 0; a < axis_size; ++a) sum += exp(LOAD(x, xo + base + a * inner) - high);
  for (int a = 0; a < axis_size; ++a) {
    float v = LOAD(x, xo + base + a * inner) - high;
    STORE(log_softmax ? v - log(sum) : exp(v) / sum, y, yo + base + a * inner);
  }
}

__kernel void layer_norm(__global storage *y, int yo, __global const storage *x, int xo, __global const float *scale,
                         __global const float *bias, int has_bias, int rows, int row, float epsilon) {
  const int r = get_global_id(0);
  if (r >= rows) return;
  const int base = r * row;
  float mean = 0.0f;
  for (int i = 0; i < row; ++i) mean += LOAD(x, xo + base + i);
  mean /= (float)row;
  float var = 0.0f;
  for (int i = 0; i < row; ++i) {
    float d = LOAD(x, xo + base + i) - mean;
    var += d * d;
  }
  float inv = 1.0f / sqrt(var / (float)row + epsilon);
  for (int i = 0; i < row; ++i) {
    float v = (LOAD(x, xo + base + i) - mean) * inv * scale[i] + (has_bias ? bias[i] : 0.0f);
    STORE(v, y, yo + base + i);
  }
}

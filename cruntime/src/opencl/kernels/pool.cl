/* POOL_2D (max, average) over NHWC, and REDUCE (sum, mean, max, min) over any set of axes. */
__kernel void pool2d(__global storage *y, int yo, __global const storage *x, int xo, int in_h, int in_w, int c_size,
                     int out_h, int out_w, int kernel_h, int kernel_w, int stride_h, int stride_w, int dilation_h,
                     int dilation_w, int pad_top, int pad_left, int pad_bottom, int pad_right, int average,
                     int count_include_pad) {
  const int c = get_global_id(0), ow = get_global_id(1), row = get_global_id(2);
  if (c >= c_size || ow >= out_w) return;
  const int n = row / out_h, oh = row % out_h;
  float acc = average ? 0.0f : -INFINITY;
  int taps = 0, padded = 0;
  for (int kh = 0; kh < kernel_h; ++kh) {
    int ih = oh * stride_h - pad_top + kh * dilation_h;
    for (int kw = 0; kw < kernel_w; ++kw) {
      int iw = ow * stride_w - pad_left + kw * dilation_w;
      if (ih >= -pad_top && ih < in_h + pad_bottom && iw >= -pad_left && iw < in_w + pad_right) ++padded;
      if (ih < 0 || ih >= in_h || iw < 0 || iw >= in_w) continue;
      float v = LOAD(x, xo + ((n * in_h + ih) * in_w + iw) * c_size + c);
      acc = average ? acc + v : fmax(acc, v);
      ++taps;
    }
  }
  if (average) acc /= (float)(count_include_pad ? padded : taps);
  STORE(acc, y, yo + ((n * out_h + oh) * out_w + ow) * c_size + c);
}

/* One work-item per output element: the input is seen as rank <= 8 dims, `reduced` marks the
 * reduced ones (the output keeps every kept dim, in order). */
__kernel void reduce(__global storage *y, int yo, __global const storage *x, int xo, int rank, int8 shape,
                     int8 reduced, int n_out, int n_reduced, int op) {
  const int i = get_global_id(0);
  if (i >= n_out) return;
  int dims[8] = {shape.s0, shape.s1, shape.s2, shape.s3, shape.s4, shape.s5, shape.s6, shape.s7};
  int red[8] = {reduced.s0, reduced.s1, reduced.s2, reduced.s3, reduced.s4, reduced.s5, reduced.s6, reduced.s7};
  int strides[8];
  int s = 1;
  for (int d = rank - 1; d >= 0; --d) {
    strides[d] = s;
    s *= dims[d];
  }
  int base = 0, rest = i;
  for (int d = rank - 1; d >= 0; --d)
    if (!red[d]) {
      base += (rest % dims[d]) * strides[d];
      rest /= dims[d];
    }
  float acc = op == 2 ? -INFINITY : (op == 3 ? INFINITY : 0.0f);
  for (int j = 0; j < n_reduced; ++j) {
    int offset = 0, r = j;
    for (int d = rank - 1; d >= 0; --d)
      if (red[d]) {
        offset += (r % dims[d]) * strides[d];
        r /= dims[d];
      }
    float v = LOAD(x, xo + base + offset);
    acc = op == 2 ? fmax(acc, v) : (op == 3 ? fmin(acc, v) : acc + v);
  }
  if (op == 1) acc /= (float)n_reduced;
  STORE(acc, y, yo + i);
}

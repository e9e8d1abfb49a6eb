/* CONV_2D over NHWC activations with OHWI float weights [OC, KH, KW, C / groups], directly: what
 * depthwise convolutions run (one input channel per group, where the implicit GEMM of gemm.cl would
 * fill its tiles with one column). Stride, dilation, asymmetric padding (top/left given; the output
 * size says the rest), groups, bias and the fused activation. One work-item per output element (oc
 * fastest, so neighbours share the input loads through the cache). Padding taps are skipped, as on
 * the CPU. */
__kernel void conv2d(__global storage *y, int yo, __global const storage *x, int xo, __global const float *w,
                     __global const float *bias, int has_bias, int in_h, int in_w, int in_c, int out_h, int out_w,
                     int out_c, int kernel_h, int kernel_w, int stride_h, int stride_w, int dilation_h,
                     int dilation_w, int pad_top, int pad_left, int group_in_c, int group_out_c, int act,
                     float alpha, float beta) {
  const int oc = get_global_id(0), ow = get_global_id(1), row = get_global_id(2);  /* row = n * out_h + oh */
  if (oc >= out_c || ow >= out_w) return;
  const int n = row / out_h, oh = row % out_h;
  const int c0 = (oc / group_out_c) * group_in_c;
  float acc = has_bias ? bias[oc] : 0.0f;
  for (int kh = 0; kh < kernel_h; ++kh) {
    int ih = oh * stride_h - pad_top + kh * dilation_h;
    if (ih < 0 || ih >= in_h) continue;
    for (int kw = 0; kw < kernel_w; ++kw) {
      int iw = ow * stride_w - pad_left + kw * dilation_w;
      if (iw < 0 || iw >= in_w) continue;
      int xi = xo + ((n * in_h + ih) * in_w + iw) * in_c + c0;
      int wi = ((oc * kernel_h + kh) * kernel_w + kw) * group_in_c;
      for (int c = 0; c < group_in_c; ++c) acc = fma(LOAD(x, xi + c), w[wi + c], acc);
    }
  }
  STORE(activate(acc, act, alpha, beta), y, yo + ((n * out_h + oh) * out_w + ow) * out_c + oc);
}

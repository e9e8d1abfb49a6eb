/* CONV_2D 3x3, stride 1, dilation 1, one group, as Winograd F(4x4, 3x3) (Lavin and Gray, 2016):
 * each 4x4 output tile comes from a 6x6 input tile in 36 elementwise products of transformed
 * input and transformed weights, summed over channels, which is 36 matrix products [tiles, C] x
 * [C, OC] (gemm.cl's gemm with 36 batches). The interpolation points are 0, 1, -1, 2, -2 and
 * infinity: B^T, G and A^T below. The transformed tensors are float32 scratch buffers,
 * V[36][tiles][C] and M[36][tiles][OC]; tile t is (batch, tile row, tile column) in that order. */

/* V = B^T d B for one channel of one tile (zeros outside the input: the padding). */
__kernel void winograd_input(__global float *v, __global const storage *x, int xo, int in_h, int in_w, int in_c,
                             int tiles_h, int tiles_w, int tiles, int pad_top, int pad_left) {
  const int c = get_global_id(0), t = get_global_id(1);
  if (c >= in_c || t >= tiles) return;
  const int tw = t % tiles_w, rest = t / tiles_w, th = rest % tiles_h, n = rest / tiles_h;
  const int h0 = th * 4 - pad_top, w0 = tw * 4 - pad_left;
  float d[6][6], r[6][6];
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 6; ++j) {
      int h = h0 + i, w = w0 + j;
      d[i][j] = (h >= 0 && h < in_h && w >= 0 && w < in_w) ? LOAD(x, xo + ((n * in_h + h) * in_w + w) * in_c + c)
                                                            : 0.0f;
    }
  for (int j = 0; j < 6; ++j) {  /* B^T d */
    r[0][j] = 4.0f * d[0][j] - 5.0f * d[2][j] + d[4][j];
    r[1][j] = -4.0f * d[1][j] - 4.0f * d[2][j] + d[3][j] + d[4][j];
    r[2][j] = 4.0f * d[1][j] - 4.0f * d[2][j] - d[3][j] + d[4][j];
    r[3][j] = -2.0f * d[1][j] - d[2][j] + 2.0f * d[3][j] + d[4][j];
    r[4][j] = 2.0f * d[1][j] - d[2][j] - 2.0f * d[3][j] + d[4][j];
    r[5][j] = 4.0f * d[1][j] - 5.0f * d[3][j] + d[5][j];
  }
  const int stride = tiles * in_c;
  __global float *out = v + t * in_c + c;
  for (int i = 0; i < 6; ++i) {  /* (B^T d) B */
    __global float *row = out + i * 6 * stride;
    row[0 * stride] = 4.0f * r[i][0] - 5.0f * r[i][2] + r[i][4];
    row[1 * stride] = -4.0f * r[i][1] - 4.0f * r[i][2] + r[i][3] + r[i][4];
    row[2 * stride] = 4.0f * r[i][1] - 4.0f * r[i][2] - r[i][3] + r[i][4];
    row[3 * stride] = -2.0f * r[i][1] - r[i][2] + 2.0f * r[i][3] + r[i][4];
    row[4 * stride] = 2.0f * r[i][1] - r[i][2] - 2.0f * r[i][3] + r[i][4];
    row[5 * stride] = 4.0f * r[i][1] - 5.0f * r[i][3] + r[i][5];
  }
}

/* y tile = A^T M A for one output channel of one tile, plus bias, activated; the part of the 4x4
 * tile inside the output is stored. */
__kernel void winograd_output(__global storage *y, int yo, __global const float *m, __global const float *bias,
                              int has_bias, int out_h, int out_w, int out_c, int tiles_h, int tiles_w, int tiles,
                              int act, float alpha, float beta) {
  const int oc = get_global_id(0), t = get_global_id(1);
  if (oc >= out_c || t >= tiles) return;
  const int tw = t % tiles_w, rest = t / tiles_w, th = rest % tiles_h, n = rest / tiles_h;
  const int stride = tiles * out_c;
  float q[6][6], s[4][6];
  for (int e = 0; e < 36; ++e) q[e / 6][e % 6] = m[e * stride + t * out_c + oc];
  for (int j = 0; j < 6; ++j) {  /* A^T M */
    s[0][j] = q[0][j] + q[1][j] + q[2][j] + q[3][j] + q[4][j];
    s[1][j] = q[1][j] - q[2][j] + 2.0f * (q[3][j] - q[4][j]);
    s[2][j] = q[1][j] + q[2][j] + 4.0f * (q[3][j] + q[4][j]);
    s[3][j] = q[1][j] - q[2][j] + 8.0f * (q[3][j] - q[4][j]) + q[5][j];
  }
  const float b = has_bias ? bias[oc] : 0.0f;
  for (int i = 0; i < 4; ++i) {  /* (A^T M) A */
    float o[4] = {s[i][0] + s[i][1] + s[i][2] + s[i][3] + s[i][4], s[i][1] - s[i][2] + 2.0f * (s[i][3] - s[i][4]),
                  s[i][1] + s[i][2] + 4.0f * (s[i][3] + s[i][4]),
                  s[i][1] - s[i][2] + 8.0f * (s[i][3] - s[i][4]) + s[i][5]};
    int h = th * 4 + i;
    if (h >= out_h) break;
    for (int j = 0; j < 4; ++j) {
      int w = tw * 4 + j;
      if (w < out_w) STORE(activate(o[j] + b, act, alpha, beta), y, yo + ((n * out_h + h) * out_w + w) * out_c + oc);
    }
  }
}

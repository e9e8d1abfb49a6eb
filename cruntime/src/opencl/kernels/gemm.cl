/* Matrix products on TILE x TILE tiles (16 unless the tuning table says 8 or 32) staged in local
 * memory; each work-item accumulates a 1x4 strip of outputs (four columns TILE/4 apart), so a
 * work-group of TILE x TILE/4 covers a TILE x TILE output tile.
 *
 * gemm: y[m, n] = act(sum_k A(m, k) B(k, n) + bias[n]) for `batch` products. A(m, k) is
 * a[ao + batch_a * p + m * a_m + k * a_k], B likewise, so transposes and broadcast batches are
 * strides. FULLY_CONNECTED passes its [N, K] weights as B with b_k = 1, b_n = K; MatMul and
 * BatchMatMul their operands as they lie. A is an activation (storage), B is an activation or
 * float weights (B_FLOAT). */
#ifndef TILE /* -DTILE=8, 16 or 32: the tuning table's (ops.c) */
#define TILE 16
#endif
#define STRIP 4

/* acc[s] += the 16-wide tile product for this work-item's row and its strip of columns. */
inline void multiply_tiles(__local float (*a_tile)[TILE + 1], __local float (*b_tile)[TILE + 1], int lm, int ln,
                           float *acc) {
  for (int kk = 0; kk < TILE; ++kk) {
    float av = a_tile[lm][kk];
    for (int s = 0; s < STRIP; ++s) acc[s] = fma(av, b_tile[kk][ln + s * (TILE / STRIP)], acc[s]);
  }
}

#ifdef B_FLOAT
#define B_TYPE float
#define LOAD_B(p, i) ((p)[i])
#else
#define B_TYPE storage
#define LOAD_B(p, i) LOAD(p, i)
#endif
#ifdef AY_FLOAT /* A and y float32 whatever the storage (winograd.cl's scratch buffers) */
#define AY_TYPE float
#define LOAD_A(p, i) ((p)[i])
#define STORE_Y(v, p, i) ((p)[i] = (v))
#else
#define AY_TYPE storage
#define LOAD_A(p, i) LOAD(p, i)
#define STORE_Y(v, p, i) STORE(v, p, i)
#endif

__kernel __attribute__((reqd_work_group_size(TILE, TILE / STRIP, 1)))
void gemm(__global AY_TYPE *y, int yo, __global const AY_TYPE *a, int ao, __global const B_TYPE *b, int bo,
          __global const float *bias, int has_bias, int m_size, int n_size, int k_size, int a_batch, int a_m,
          int a_k, int b_batch, int b_k, int b_n, int act, float alpha, float beta) {
  __local float a_tile[TILE][TILE + 1];
  __local float b_tile[TILE][TILE + 1];
  const int lm = get_local_id(0), ln = get_local_id(1);
  const int m = get_group_id(0) * TILE + lm;
  const int n0 = get_group_id(1) * TILE + ln;
  const int p = get_global_id(2);
  const int a_base = ao + p * a_batch, b_base = bo + p * b_batch;
  float acc[STRIP] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int k0 = 0; k0 < k_size; k0 += TILE) {
    for (int s = 0; s < STRIP; ++s) {
      /* each work-item loads 4 elements of each tile: rows lm, columns ln + s * TILE / STRIP */
      int kk = ln + s * (TILE / STRIP);
      int row = get_group_id(0) * TILE + lm, k = k0 + kk;
      a_tile[lm][kk] = (row < m_size && k < k_size) ? LOAD_A(a, a_base + row * a_m + k * a_k) : 0.0f;
      int col = get_group_id(1) * TILE + kk, kb = k0 + lm;
      b_tile[lm][kk] = (col < n_size && kb < k_size) ? LOAD_B(b, b_base + kb * b_k + col * b_n) : 0.0f;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    multiply_tiles(a_tile, b_tile, lm, ln, acc);
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  if (m >= m_size) return;
  for (int s = 0; s < STRIP; ++s) {
    int n = n0 + s * (TILE / STRIP);
    if (n < n_size) {
      float v = acc[s] + (has_bias ? bias[n] : 0.0f);
      STORE_Y(activate(v, act, alpha, beta), y, yo + p * m_size * n_size + m * n_size + n);
    }
  }
}

/* CONV_2D as an implicit GEMM on the same tiles: M = batch x out_h x out_w output pixels, N = the
 * group's output channels, K = kernel_h x kernel_w x the group's input channels; A(m, k) is the input
 * pixel under tap k of pixel m (0 in the padding), B(k, n) the OHWI weight w[n][k]. The group is
 * the third dimension of the range. */
__kernel __attribute__((reqd_work_group_size(TILE, TILE / STRIP, 1)))
void conv_gemm(__global storage *y, int yo, __global const storage *x, int xo, __global const float *w,
               __global const float *bias, int has_bias, int in_h, int in_w, int in_c, int out_h, int out_w,
               int out_c, int kernel_h, int kernel_w, int stride_h, int stride_w, int dilation_h, int dilation_w,
               int pad_top, int pad_left, int group_in_c, int group_out_c, int m_size, int k_size, int act,
               float alpha, float beta) {
  __local float a_tile[TILE][TILE + 1];
  __local float b_tile[TILE][TILE + 1];
  const int lm = get_local_id(0), ln = get_local_id(1), g = get_global_id(2);
  const int m = get_group_id(0) * TILE + lm;
  const int n0 = get_group_id(1) * TILE + ln;
  /* the pixel of row m of the A tile this work-item loads */
  const int ow = m % out_w, rest = m / out_w, oh = rest % out_h, batch = rest / out_h;
  const int ih0 = oh * stride_h - pad_top, iw0 = ow * stride_w - pad_left;
  const int x_base = xo + batch * in_h * in_w * in_c + g * group_in_c;
  const int w_base = g * group_out_c * k_size;
  float acc[STRIP] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int k0 = 0; k0 < k_size; k0 += TILE) {
    for (int s = 0; s < STRIP; ++s) {
      int kk = ln + s * (TILE / STRIP), k = k0 + kk;
      float v = 0.0f;
      if (m < m_size && k < k_size) {
        int c = k % group_in_c, tap = k / group_in_c;
        int ih = ih0 + (tap / kernel_w) * dilation_h, iw = iw0 + (tap % kernel_w) * dilation_w;
        if (ih >= 0 && ih < in_h && iw >= 0 && iw < in_w) v = LOAD(x, x_base + (ih * in_w + iw) * in_c + c);
      }
      a_tile[lm][kk] = v;
      int col = get_group_id(1) * TILE + kk, kb = k0 + lm;
      b_tile[lm][kk] = (col < group_out_c && kb < k_size) ? w[w_base + col * k_size + kb] : 0.0f;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    multiply_tiles(a_tile, b_tile, lm, ln, acc);
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  if (m >= m_size) return;
  for (int s = 0; s < STRIP; ++s) {
    int n = n0 + s * (TILE / STRIP);
    if (n < group_out_c) {
      int oc = g * group_out_c + n;
      float v = acc[s] + (has_bias ? bias[oc] : 0.0f);
      STORE(activate(v, act, alpha, beta), y, yo + m * out_c + oc);
    }
  }
}

/* Fast convolution plans over the conv and gemm kernel families (conv.h, gemm.h).
 *
 * A plan is made once per shape (at the op's prepare): it picks a method, packs or transforms the
 * weights into the GEMM panel layout, and sizes its scratch. Running it only computes, except that
 * the first run against a new input address fills the indirection buffer (its layout was fixed at
 * create; the pointers need the arena, which does not exist at prepare).
 *
 * Methods, chosen in this order:
 *   GEMM      1x1, stride 1, no padding: the NHWC input is already the [N*H*W, C] matrix.
 *   DWCONV    one input channel per group (depthwise, any multiplier): 3x3 / 5x5 / any-tap
 *             kernels over an indirection buffer of tap rows per output pixel.
 *   WINOGRAD  3x3, stride 1, dilation 1, one group, where edge_conv_winograd_wins() says so:
 *             F(4x4, 3x3), 36 GEMMs per block of tiles.
 *   IGEMM     everything else: indirect GEMM, groups run over their channel slices.
 *   DECONV    CONV_TRANSPOSE_2D: GEMM of the input against [Cin, KH*KW*Cout] into columns, then a
 *             gather over the taps that reach each output pixel (col2im without scatter races).
 *
 * Every method splits its work into fixed cells computed by one thread each; no sum is split
 * across threads, so results are bit-identical for any thread count. */
#ifndef EDGE_KERNELS_CONV_DRIVER_H
#define EDGE_KERNELS_CONV_DRIVER_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "common.h"

typedef struct {
  bool transposed;
  int64_t batch, in_h, in_w, in_c;
  int64_t out_h, out_w, out_c;
  int64_t kernel_h, kernel_w;
  int64_t groups;
  int64_t stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left;
  /* CONV_2D with a fused residual (a skip connection's ADD): its channel count, 1 .. out_c (fewer:
   * zero-padded at the end), added to the outputs before the activation; 0: none. */
  int64_t residual_c;
} edge_conv_shape;

typedef enum {
  EDGE_CONV_METHOD_GEMM,
  EDGE_CONV_METHOD_DWCONV,
  EDGE_CONV_METHOD_WINOGRAD,
  EDGE_CONV_METHOD_IGEMM,
  EDGE_CONV_METHOD_DECONV,
} edge_conv_method;

/* Winograd selection: AUTO applies edge_conv_winograd_wins, OFF never, ON whenever the shape is
 * eligible (3x3, stride 1, dilation 1, one group). edge_conv_winograd_mode_from_env reads
 * EDGE_WINOGRAD=0|1 (anything else: AUTO). */
typedef enum { EDGE_CONV_WINOGRAD_AUTO, EDGE_CONV_WINOGRAD_OFF, EDGE_CONV_WINOGRAD_ON } edge_conv_winograd_mode;
edge_conv_winograd_mode edge_conv_winograd_mode_from_env(void);
bool edge_conv_winograd_eligible(const edge_conv_shape *s);
/* The measured rule (see conv_driver.c): whether Winograd beats igemm for an eligible shape. */
bool edge_conv_winograd_wins(const edge_conv_shape *s);

typedef struct edge_conv_plan edge_conv_plan;

/* weights: OHWI [out_c, kh, kw, in_c / groups] (CONV_2D) or [out_c, kh, kw, in_c / groups]
 * (CONV_TRANSPOSE_2D, the runtime's layout); bias: out_c floats or NULL; act: fused activation
 * (NULL: none). Returns NULL when out of memory.
 * weights NULL: a plan for weights that change between runs (training variables): everything is
 * allocated (kept_bytes counts it) but nothing is packed; edge_conv_plan_pack must be called before
 * the first run and after every change of the weights or bias. */
edge_conv_plan *edge_conv_plan_create(const edge_kernel_config *kernels, const edge_conv_shape *shape,
                                      const float *weights, const float *bias, const edge_activation *act,
                                      edge_conv_winograd_mode winograd);
/* Packs (or transforms) weights and bias into a plan created with weights NULL, into memory it
 * allocated at create: no allocation, same layout and values as create would have packed. */
void edge_conv_plan_pack(edge_conv_plan *plan, const float *weights, const float *bias);
void edge_conv_plan_free(edge_conv_plan *plan);
edge_conv_method edge_conv_plan_method(const edge_conv_plan *plan);
const char *edge_conv_method_name(edge_conv_method method);
/* Scratch run needs for a pool of num_threads threads (EDGE_ALIGNMENT-aligned when given). */
size_t edge_conv_plan_scratch_bytes(const edge_conv_plan *plan, int32_t num_threads);
/* Bytes the plan keeps between runs (packed or transformed weights). */
size_t edge_conv_plan_kept_bytes(const edge_conv_plan *plan);
/* y = act(conv(x) + residual); pool may be NULL (one thread); residual: [pixels, residual_c] floats,
 * NULL when the shape has none. */
void edge_conv_plan_run(edge_conv_plan *plan, edge_threadpool *pool, const float *x, float *y, const float *residual,
                        void *scratch);

#endif

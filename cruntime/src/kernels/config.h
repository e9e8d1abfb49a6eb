/* Per-family kernel tables, filled once from the ISA level (XNNPACK's init_*_config idea):
 * an op reads edge_kernels()->gemm etc. at prepare and calls the function pointers at eval.
 * Tests fill a table for any supported level with edge_kernels_for(level) to compare ISAs.
 *
 * Each family owns its header and its init function:
 *   gemm.h    edge_gemm_kernels    edge_gemm_kernels_init     (gemm.c)
 *   conv.h    edge_conv_kernels    edge_conv_kernels_init     (conv_config.c: igemm, depthwise, winograd)
 *   qs8.h     edge_qs8_kernels     edge_qs8_kernels_init      (qgemm_config.c: int8 gemm, igemm, depthwise)
 *   vector.h  edge_vector_kernels  edge_vector_kernels_init   (vector_config.c: elementwise, activations,
 *                                                              pooling, softmax, norms, reductions, transpose)
 */
#ifndef EDGE_KERNELS_CONFIG_H
#define EDGE_KERNELS_CONFIG_H

#include "conv.h"
#include "gemm.h"
#include "isa.h"
#include "qs8.h"
#include "vector.h"

typedef struct {
  edge_isa_level isa;
  edge_gemm_kernels gemm;
  edge_conv_kernels conv;
  edge_qs8_kernels qs8;
  edge_vector_kernels vector;
} edge_kernel_config;

/* The table for the picked level (edge_isa_level_get), built once, thread-safe. */
const edge_kernel_config *edge_kernels(void);
/* The table for a given level; NULL if the level is not supported here. Built once per level. */
const edge_kernel_config *edge_kernels_for(edge_isa_level level);

void edge_gemm_kernels_init(edge_isa_level isa, edge_gemm_kernels *out);
void edge_conv_kernels_init(edge_isa_level isa, edge_conv_kernels *out);
void edge_qs8_kernels_init(edge_isa_level isa, edge_qs8_kernels *out);
void edge_vector_kernels_init(edge_isa_level isa, edge_vector_kernels *out);

#endif

/* Parameters shared by kernel families' fused epilogues. */
#ifndef EDGE_KERNELS_PARAMS_H
#define EDGE_KERNELS_PARAMS_H

/* Every output is clamped to [min, max] (identity: -inf..inf; ReLU: 0..inf; ReLU6: 0..6). */
typedef struct {
  float min, max;
} edge_f32_minmax_params;

#endif

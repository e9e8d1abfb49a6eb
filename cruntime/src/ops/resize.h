/* RESIZE's prepared tables (resize.c), shared with the OpenCL backend so that both devices use the
 * same source coordinates and weights. */
#ifndef EDGE_OPS_RESIZE_H
#define EDGE_OPS_RESIZE_H

#include "../internal.h"

typedef struct {
  int32_t rank;
  bool linear;
  bool resized[EDGE_MAX_RANK];
  int64_t *lower[EDGE_MAX_RANK], *upper[EDGE_MAX_RANK]; /* source coordinates per output coordinate */
  float *upper_weight[EDGE_MAX_RANK];                   /* LINEAR: weight of upper; lower gets 1 - it */
  bool cubic;
  int64_t *cubic_index[EDGE_MAX_RANK];                  /* CUBIC: 4 source coordinates per output one */
  float *cubic_weight[EDGE_MAX_RANK];                   /* CUBIC: their 4 weights */
  int64_t x_strides[EDGE_MAX_RANK];
  /* NEAREST or LINEAR resizing only the two dims outside an unresized innermost one (NHWC's H and
   * W): eval walks whole output lines of W x C (resize.c's line path). */
  bool lines;
  void *tables, *cubic_tables;
} resize_plan;

#endif

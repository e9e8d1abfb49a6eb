/* What the kernel layer uses of the rest of the runtime, and nothing more: status codes (edge.h),
 * the op enums (schema_enums.h), the thread pool, the thread-local error message, and the fused
 * activation with its epilogue (activation.c). Kernels include this, not internal.h; the ops
 * layer above sees it through internal.h. */
#ifndef EDGE_KERNELS_COMMON_H
#define EDGE_KERNELS_COMMON_H

#include <stddef.h>

#include "edge.h"
#include "schema_enums.h"
#include "threadpool.h"

/* Alignment (bytes) of arena buffers, scratch and packed weights. */
#define EDGE_ALIGNMENT 64

/* A fused activation, applied to an op's output (IDENTITY: none). Same vocabulary as UNARY. */
typedef struct { edge_unary_kind op; float alpha, beta; } edge_activation;

/* The epilogue of every float driver (GEMM, convolutions, int8 dynamic mode): applies an
 * activation to n floats in place, through the vector family's kernel for the op at the picked
 * level, else the scalar definition. */
void edge_activation_apply(const edge_activation *act, float *data, size_t n);
/* The scalar definition of each unary function, the reference every kernel is tested against. */
float edge_unary_float(edge_unary_kind op, float x, float alpha, float beta);

/* The thread-local message behind edge_last_error() (common.c). */
edge_status edge_set_last_error(edge_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif

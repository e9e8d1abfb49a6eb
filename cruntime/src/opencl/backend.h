/* What backend.c and ops.c share: the per-interpreter GPU state and a GPU op's prepared launches. */
#ifndef EDGE_OPENCL_BACKEND_H
#define EDGE_OPENCL_BACKEND_H

#include "gpu.h"

#define EDGE_GPU_MAX_LAUNCHES 16

typedef struct {
  cl_kernel kernel;
  char name[32];                        /* the kernel's function name */
  cl_uint dims;
  size_t global[3], local[3];
  bool has_local;
} edge_gpu_launch;

typedef struct {
  int32_t num_launches;
  edge_gpu_launch launches[EDGE_GPU_MAX_LAUNCHES];
  cl_mem owned[4];                      /* packed weights, bias, scratch: released with the op */
  cl_mem tables[6];                     /* RESIZE: per resized dim, lower/upper coordinates and weights */
  int32_t check_indices;                /* GATHER: input index whose values are checked before launch, else -1 */
  int64_t index_limit;                  /* ... against [-limit, limit) */
} edge_gpu_op;

typedef enum { EDGE_GPU_ON_HOST = 0, EDGE_GPU_ON_DEVICE = 1, EDGE_GPU_ON_BOTH = 2 } edge_gpu_residency;

struct edge_gpu {
  edge_gpu_device dev;
  cl_mem arena;                          /* the host arena's twin */
  size_t arena_bytes;
  void *host_arena;
  int32_t num_tensors, num_ops;
  uint8_t *residency;                    /* per tensor, for arena tensors */
  cl_mem *constants;                     /* per tensor: a constant uploaded in storage format, on first use */
  edge_gpu_op **ops;                     /* per op, NULL when it runs on the CPU */
  edge_gpu_counters counters;
  void *staging;                         /* fp16 conversions */
  size_t staging_bytes;
};

/* Whether the GPU takes the op as prepared by the CPU (dtypes, constant weights, options it has). */
bool edge_gpu_op_supported(const edge_context *ctx, const edge_node *node);
/* Builds the op's launches (kernels built, weights packed and uploaded, arguments set). */
edge_status edge_gpu_op_build(edge_gpu *gpu, edge_context *ctx, const edge_node *node, edge_gpu_op *op, char *error);
void edge_gpu_op_release(edge_gpu *gpu, edge_gpu_op *op);

/* For ops.c: sets a tensor argument pair (buffer, element offset) at *arg (advanced by two). */
edge_status edge_gpu_arg_tensor(edge_gpu *gpu, edge_context *ctx, cl_kernel kernel, cl_uint *arg, int32_t tensor,
                                char *error);
/* A float32 buffer of n floats on the device holding data (weights, bias). */
edge_status edge_gpu_upload_floats(edge_gpu *gpu, const float *data, size_t n, cl_mem *out, char *error);

#endif

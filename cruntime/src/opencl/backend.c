/* Placement, the device arena and the coherence of each activation's host and device copies (see
 * gpu.h for the model). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

/* `auto`: a run of consecutive GPU-capable ops goes to the GPU when its ops do at least this many
 * FLOPs in all (the file's per-op counts), so that a lone cheap op does not pay two transfers and
 * a sync. A stated threshold, not a measured cost model (see the notes). */
#define AUTO_MIN_PARTITION_FLOPS 1000000ull

edge_status edge_gpu_create(int32_t precision, int32_t device, void *queue, edge_gpu **out, char *error) {
  *out = NULL;
  if (precision != EDGE_GPU_FP32 && precision != EDGE_GPU_FP16) {
    snprintf(error, EDGE_ERROR_CAPACITY, "gpu_precision %d: use EDGE_GPU_FP32 (0) or EDGE_GPU_FP16 (1)", precision);
    return EDGE_INVALID_ARGUMENT;
  }
  edge_gpu *gpu = calloc(1, sizeof *gpu);
  if (!gpu) {
    snprintf(error, EDGE_ERROR_CAPACITY, "out of memory");
    return EDGE_OUT_OF_MEMORY;
  }
  edge_status status = edge_gpu_device_open(&gpu->dev, device, queue, precision == EDGE_GPU_FP16, error);
  if (status != EDGE_OK) {
    free(gpu);
    return status;
  }
  *out = gpu;
  return EDGE_OK;
}

bool edge_gpu_is_gpu_device(const edge_gpu *gpu) { return gpu && gpu->dev.is_gpu; }

static void release_plan(edge_gpu *gpu) {
  const edge_cl_api *cl = gpu->dev.cl;
  for (int32_t i = 0; gpu->ops && i < gpu->num_ops; ++i)
    if (gpu->ops[i]) {
      edge_gpu_op_release(gpu, gpu->ops[i]);
      free(gpu->ops[i]);
    }
  free(gpu->ops);
  gpu->ops = NULL;
  if (gpu->arena) cl->clReleaseMemObject(gpu->arena);
  gpu->arena = NULL;
  free(gpu->residency);
  gpu->residency = NULL;
}

void edge_gpu_free(edge_gpu *gpu) {
  if (!gpu) return;
  release_plan(gpu);
  for (int32_t t = 0; gpu->constants && t < gpu->num_tensors; ++t)
    if (gpu->constants[t]) gpu->dev.cl->clReleaseMemObject(gpu->constants[t]);
  free(gpu->constants);
  free(gpu->staging);
  edge_gpu_device_close(&gpu->dev);
  free(gpu);
}

void edge_gpu_op_release(edge_gpu *gpu, edge_gpu_op *op) {
  const edge_cl_api *cl = gpu->dev.cl;
  for (int32_t i = 0; i < op->num_launches; ++i)
    if (op->launches[i].kernel) cl->clReleaseKernel(op->launches[i].kernel);
  for (size_t i = 0; i < sizeof op->owned / sizeof *op->owned; ++i)
    if (op->owned[i]) cl->clReleaseMemObject(op->owned[i]);
  for (size_t i = 0; i < sizeof op->tables / sizeof *op->tables; ++i)
    if (op->tables[i]) cl->clReleaseMemObject(op->tables[i]);
  memset(op, 0, sizeof *op);
}

static bool in_arena(const edge_gpu *gpu, const edge_tensor *t) {
  const uint8_t *p = t->data, *base = gpu->host_arena;
  return t->kind == EDGE_TENSOR_ACTIVATION && !t->folded && p && base && p >= base &&
         p + t->nbytes <= base + gpu->arena_bytes;
}

static bool stored_as_half(const edge_gpu *gpu, const edge_tensor *t) {
  return gpu->dev.half && t->dtype == EDGE_FLOAT32;
}

static void *staging(edge_gpu *gpu, size_t bytes) {
  if (bytes > gpu->staging_bytes) {
    void *grown = realloc(gpu->staging, bytes);
    if (!grown) return NULL;
    gpu->staging = grown;
    gpu->staging_bytes = bytes;
  }
  return gpu->staging;
}

static edge_status cl_fail(edge_context *ctx, cl_int err, const char *what, const edge_gpu *gpu) {
  return edge_fail(ctx, err == -4 || err == -5 || err == -6 ? EDGE_OUT_OF_MEMORY : EDGE_RUNTIME_ERROR,
                   "OpenCL device '%s': %s failed: %s (%d)", gpu->dev.name, what, edge_cl_error_name(err), err);
}

static edge_status upload(edge_gpu *gpu, edge_context *ctx, int32_t index) {
  edge_tensor *t = &ctx->tensors[index];
  size_t offset = (size_t)((uint8_t *)t->data - (uint8_t *)gpu->host_arena), bytes = t->nbytes;
  const void *source = t->data;
  if (stored_as_half(gpu, t)) {
    size_t n = t->nbytes / 4;
    uint16_t *half = staging(gpu, n * 2 + 1);
    if (!half) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "out of memory converting '%s' to fp16", t->name);
    const float *f = t->data;
    for (size_t i = 0; i < n; ++i) half[i] = edge_float_to_half(f[i]);
    source = half;
    bytes = n * 2;
  }
  if (bytes) {
    cl_int err = gpu->dev.cl->clEnqueueWriteBuffer(gpu->dev.queue, gpu->arena, CL_TRUE, offset, bytes, source, 0, NULL,
                                                   NULL);
    if (err != CL_SUCCESS) return cl_fail(ctx, err, "uploading a tensor", gpu);
  }
  gpu->residency[index] = EDGE_GPU_ON_BOTH;
  ++gpu->counters.uploads;
  gpu->counters.upload_bytes += bytes;
  return EDGE_OK;
}

static edge_status download(edge_gpu *gpu, edge_context *ctx, int32_t index) {
  edge_tensor *t = &ctx->tensors[index];
  size_t offset = (size_t)((uint8_t *)t->data - (uint8_t *)gpu->host_arena), bytes = t->nbytes;
  bool half = stored_as_half(gpu, t);
  void *target = t->data;
  if (half) {
    bytes = t->nbytes / 2;
    target = staging(gpu, bytes + 1);
    if (!target) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "out of memory converting '%s' from fp16", t->name);
  }
  if (bytes) {
    cl_int err = gpu->dev.cl->clEnqueueReadBuffer(gpu->dev.queue, gpu->arena, CL_TRUE, offset, bytes, target, 0, NULL,
                                                  NULL);
    if (err != CL_SUCCESS) return cl_fail(ctx, err, "downloading a tensor", gpu);
  }
  if (half) {
    const uint16_t *h = target;
    float *f = t->data;
    for (size_t i = 0; i < t->nbytes / 4; ++i) f[i] = edge_half_to_float(h[i]);
  }
  gpu->residency[index] = EDGE_GPU_ON_BOTH;
  ++gpu->counters.downloads;
  gpu->counters.download_bytes += bytes;
  return EDGE_OK;
}

edge_status edge_gpu_to_host(edge_gpu *gpu, edge_context *ctx, int32_t tensor) {
  if (!gpu || !gpu->residency || tensor < 0 || tensor >= gpu->num_tensors) return EDGE_OK;
  if (gpu->residency[tensor] != EDGE_GPU_ON_DEVICE) return EDGE_OK;
  return download(gpu, ctx, tensor);
}

void edge_gpu_host_wrote(edge_gpu *gpu, int32_t tensor) {
  if (gpu && gpu->residency && tensor >= 0 && tensor < gpu->num_tensors) gpu->residency[tensor] = EDGE_GPU_ON_HOST;
}

edge_status edge_gpu_tensor_buffer(edge_gpu *gpu, edge_context *ctx, int32_t tensor, cl_mem *mem, size_t *offset) {
  const edge_tensor *t = &ctx->tensors[tensor];
  if (!gpu->arena || !gpu->residency || !in_arena(gpu, t))
    return edge_fail(ctx, EDGE_UNSUPPORTED, "tensor '%s' (%d) has no device memory (%s)", t->name ? t->name : "?",
                     tensor, gpu->arena ? "not an activation" : "no op runs on the GPU");
  if (gpu->residency[tensor] == EDGE_GPU_ON_HOST) {
    edge_status status = upload(gpu, ctx, tensor);
    if (status != EDGE_OK) return status;
  }
  *mem = gpu->arena;
  *offset = (size_t)((const uint8_t *)t->data - (const uint8_t *)gpu->host_arena);
  return EDGE_OK;
}

edge_status edge_gpu_device_wrote(edge_gpu *gpu, edge_context *ctx, int32_t tensor) {
  const edge_tensor *t = &ctx->tensors[tensor];
  if (!gpu->arena || !gpu->residency || !in_arena(gpu, t))
    return edge_fail(ctx, EDGE_UNSUPPORTED, "tensor '%s' (%d) has no device memory", t->name ? t->name : "?", tensor);
  gpu->residency[tensor] = EDGE_GPU_ON_DEVICE;
  return EDGE_OK;
}

void edge_gpu_counters_get(const edge_gpu *gpu, edge_gpu_counters *out) {
  if (gpu) *out = gpu->counters;
  else memset(out, 0, sizeof *out);
}

edge_status edge_gpu_op_kernel(const edge_gpu *gpu, int32_t op, const char **name, size_t local[3]) {
  if (!gpu || !gpu->ops || op < 0 || op >= gpu->num_ops || !gpu->ops[op] || gpu->ops[op]->num_launches < 1)
    return EDGE_UNSUPPORTED;
  const edge_gpu_launch *l = &gpu->ops[op]->launches[0];
  *name = l->name;
  for (int i = 0; i < 3; ++i) local[i] = l->has_local ? l->local[i] : 0;
  return EDGE_OK;
}

edge_status edge_gpu_upload_floats(edge_gpu *gpu, const float *data, size_t n, cl_mem *out, char *error) {
  cl_int err = CL_SUCCESS;
  *out = gpu->dev.cl->clCreateBuffer(gpu->dev.context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                     (n ? n : 1) * sizeof(float), (void *)(n ? data : (const float[]){0.0f}), &err);
  if (!*out || err != CL_SUCCESS) {
    snprintf(error, EDGE_ERROR_CAPACITY, "OpenCL device '%s': a %zu-byte weight buffer: %s (%d)", gpu->dev.name,
             n * sizeof(float), edge_cl_error_name(err), err);
    return err == -4 || err == -5 || err == -6 ? EDGE_OUT_OF_MEMORY : EDGE_RUNTIME_ERROR;
  }
  return EDGE_OK;
}

/* A constant (or folded) tensor in the device's storage format, uploaded once per interpreter. */
static edge_status constant_buffer(edge_gpu *gpu, edge_context *ctx, int32_t index, cl_mem *out, char *error) {
  if (gpu->constants[index]) {
    *out = gpu->constants[index];
    return EDGE_OK;
  }
  const edge_tensor *t = &ctx->tensors[index];
  const void *data = t->data;
  size_t bytes = t->nbytes;
  if (stored_as_half(gpu, t)) {
    size_t n = t->nbytes / 4;
    uint16_t *half = staging(gpu, n * 2 + 2);
    if (!half) {
      snprintf(error, EDGE_ERROR_CAPACITY, "out of memory");
      return EDGE_OUT_OF_MEMORY;
    }
    for (size_t i = 0; i < n; ++i) half[i] = edge_float_to_half(((const float *)t->data)[i]);
    data = half;
    bytes = n * 2;
  }
  cl_int err = CL_SUCCESS;
  uint64_t zero = 0;
  cl_mem buffer = gpu->dev.cl->clCreateBuffer(gpu->dev.context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                              bytes ? bytes : sizeof zero, bytes ? (void *)data : &zero, &err);
  if (!buffer || err != CL_SUCCESS) {
    snprintf(error, EDGE_ERROR_CAPACITY, "OpenCL device '%s': constant '%s' (%zu bytes): %s (%d)", gpu->dev.name,
             t->name ? t->name : "?", bytes, edge_cl_error_name(err), err);
    return EDGE_OUT_OF_MEMORY;
  }
  gpu->constants[index] = buffer;
  *out = buffer;
  return EDGE_OK;
}

edge_status edge_gpu_arg_tensor(edge_gpu *gpu, edge_context *ctx, cl_kernel kernel, cl_uint *arg, int32_t index,
                                char *error) {
  const edge_tensor *t = &ctx->tensors[index];
  cl_mem buffer = NULL;
  cl_int offset = 0;
  if (in_arena(gpu, t)) {
    size_t element = stored_as_half(gpu, t) ? 2 : edge_dtype_size(t->dtype);
    size_t bytes = (size_t)((const uint8_t *)t->data - (const uint8_t *)gpu->host_arena);
    if (element == 0 || bytes % element != 0 || bytes / element > 0x7fffffff) {
      snprintf(error, EDGE_ERROR_CAPACITY, "tensor '%s' sits at arena byte %zu, not addressable by the kernels",
               t->name ? t->name : "?", bytes);
      return EDGE_UNSUPPORTED;
    }
    buffer = gpu->arena;
    offset = (cl_int)(bytes / element);
  } else {
    edge_status status = constant_buffer(gpu, ctx, index, &buffer, error);
    if (status != EDGE_OK) return status;
  }
  const edge_cl_api *cl = gpu->dev.cl;
  cl_int err = cl->clSetKernelArg(kernel, (*arg)++, sizeof buffer, &buffer);
  if (err == CL_SUCCESS) err = cl->clSetKernelArg(kernel, (*arg)++, sizeof offset, &offset);
  if (err != CL_SUCCESS) {
    snprintf(error, EDGE_ERROR_CAPACITY, "clSetKernelArg for tensor '%s': %s (%d)", t->name ? t->name : "?",
             edge_cl_error_name(err), err);
    return EDGE_RUNTIME_ERROR;
  }
  return EDGE_OK;
}

static bool tensors_fit(const edge_gpu *gpu, const edge_context *ctx, const edge_node *node) {
  for (int32_t i = 0; i < node->num_inputs; ++i) {
    int32_t t = node->inputs[i];
    if (t < 0) continue;
    const edge_tensor *x = &ctx->tensors[t];
    if (x->kind == EDGE_TENSOR_VARIABLE) return false;   /* training stays on the CPU */
    if (x->kind == EDGE_TENSOR_ACTIVATION && !x->folded && !in_arena(gpu, x)) return false;
  }
  for (int32_t i = 0; i < node->num_outputs; ++i) {
    int32_t t = node->outputs[i];
    if (t < 0 || !in_arena(gpu, &ctx->tensors[t])) return false;
  }
  return !node->writes_variables && !node->rows_set_at_eval && !node->quantized;
}

edge_status edge_gpu_plan(edge_gpu *gpu, edge_context *ctx, edge_node *nodes, int32_t num_ops, void *arena,
                          size_t arena_bytes, bool auto_mode, const uint8_t *allowed, uint8_t *placement) {
  release_plan(gpu);
  memset(placement, 0, (size_t)num_ops);
  if (!gpu->constants || gpu->num_tensors != ctx->num_tensors) {
    for (int32_t t = 0; gpu->constants && t < gpu->num_tensors; ++t)
      if (gpu->constants[t]) gpu->dev.cl->clReleaseMemObject(gpu->constants[t]);
    free(gpu->constants);
    gpu->constants = calloc((size_t)(ctx->num_tensors ? ctx->num_tensors : 1), sizeof(cl_mem));
    if (!gpu->constants) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "out of memory");
  }
  gpu->num_tensors = ctx->num_tensors;
  gpu->num_ops = num_ops;
  gpu->host_arena = arena;
  gpu->arena_bytes = arena_bytes;
  gpu->residency = calloc((size_t)(ctx->num_tensors ? ctx->num_tensors : 1), 1);
  gpu->ops = calloc((size_t)(num_ops ? num_ops : 1), sizeof *gpu->ops);
  if (!gpu->residency || !gpu->ops) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "out of memory");
  /* a CPU OpenCL device does not beat the CPU kernels, unless a measured placement says so */
  if (auto_mode && !allowed && !gpu->dev.is_gpu) return EDGE_OK;

  for (int32_t op = 0; op < num_ops; ++op)
    placement[op] = (!allowed || allowed[op]) && tensors_fit(gpu, ctx, &nodes[op]) &&
                    edge_gpu_op_supported(ctx, &nodes[op]);
  if (auto_mode && !allowed) {
    for (int32_t begin = 0; begin < num_ops;) {
      if (!placement[begin]) {
        ++begin;
        continue;
      }
      int32_t end = begin;
      uint64_t flops = 0;
      while (end < num_ops && placement[end]) flops += nodes[end++].flops;
      if (flops < AUTO_MIN_PARTITION_FLOPS) memset(placement + begin, 0, (size_t)(end - begin));
      begin = end;
    }
  }
  bool any = false;
  for (int32_t op = 0; op < num_ops; ++op) any |= placement[op] != 0;
  if (!any) return EDGE_OK;

  cl_int err = CL_SUCCESS;
  gpu->arena = gpu->dev.cl->clCreateBuffer(gpu->dev.context, CL_MEM_READ_WRITE, arena_bytes ? arena_bytes : 64, NULL,
                                           &err);
  if (!gpu->arena || err != CL_SUCCESS) {
    gpu->arena = NULL;
    return cl_fail(ctx, err, "allocating the device arena", gpu);
  }
  for (int32_t op = 0; op < num_ops; ++op) {
    if (!placement[op]) continue;
    edge_gpu_op *g = calloc(1, sizeof *g);
    if (!g) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "out of memory");
    g->check_indices = -1;
    char error[EDGE_ERROR_CAPACITY] = "";
    edge_status status = edge_gpu_op_build(gpu, ctx, &nodes[op], g, error);
    if (status != EDGE_OK) {
      edge_gpu_op_release(gpu, g);
      free(g);
      if (auto_mode) {  /* the CPU runs it */
        placement[op] = 0;
        continue;
      }
      return edge_fail(ctx, status, "op %d (%s) on OpenCL: %s", op, edge_op_names[nodes[op].opcode], error);
    }
    gpu->ops[op] = g;
  }
  return EDGE_OK;
}

static edge_status check_indices(edge_gpu *gpu, edge_context *ctx, const edge_node *node, const edge_gpu_op *g) {
  int32_t index = node->inputs[g->check_indices];
  edge_status status = edge_gpu_to_host(gpu, ctx, index);
  if (status != EDGE_OK) return status;
  const edge_tensor *t = &ctx->tensors[index];
  size_t n = t->nbytes / edge_dtype_size(t->dtype);
  for (size_t i = 0; i < n; ++i) {
    int64_t v = t->dtype == EDGE_INT64 ? ((const int64_t *)t->data)[i] : ((const int32_t *)t->data)[i];
    if (v < -g->index_limit || v >= g->index_limit)
      return edge_fail(ctx, EDGE_RUNTIME_ERROR, "index %lld of '%s' is out of range [-%lld, %lld)", (long long)v,
                       t->name ? t->name : "?", (long long)g->index_limit, (long long)g->index_limit);
  }
  return EDGE_OK;
}

edge_status edge_gpu_run(edge_gpu *gpu, edge_context *ctx, edge_node *node, int32_t op, bool wait) {
  const edge_gpu_op *g = gpu->ops[op];
  if (!g) return edge_fail(ctx, EDGE_BAD_STATE, "op %d is not placed on the GPU", op);
  edge_status status;
  if (g->check_indices >= 0 && (status = check_indices(gpu, ctx, node, g)) != EDGE_OK) return status;
  for (int32_t i = 0; i < node->num_inputs; ++i) {
    int32_t t = node->inputs[i];
    if (t >= 0 && in_arena(gpu, &ctx->tensors[t]) && gpu->residency[t] == EDGE_GPU_ON_HOST &&
        (status = upload(gpu, ctx, t)) != EDGE_OK)
      return status;
  }
  const edge_cl_api *cl = gpu->dev.cl;
  for (int32_t i = 0; i < g->num_launches; ++i) {
    const edge_gpu_launch *l = &g->launches[i];
    cl_int err = cl->clEnqueueNDRangeKernel(gpu->dev.queue, l->kernel, l->dims, NULL, l->global,
                                            l->has_local ? l->local : NULL, 0, NULL, NULL);
    if (err != CL_SUCCESS) return cl_fail(ctx, err, "launching a kernel", gpu);
    ++gpu->counters.launches;
  }
  for (int32_t i = 0; i < node->num_outputs; ++i)
    if (node->outputs[i] >= 0) gpu->residency[node->outputs[i]] = EDGE_GPU_ON_DEVICE;
  if (wait) {
    cl_int err = cl->clFinish(gpu->dev.queue);
    if (err != CL_SUCCESS) return cl_fail(ctx, err, "waiting for a kernel", gpu);
  }
  return EDGE_OK;
}

/* Per op: whether the GPU takes it (edge_gpu_op_supported) and its launches (edge_gpu_op_build).
 *
 * An op is built after the CPU prepare, so shapes are final and the CPU's validation has run; the
 * checks here are only about what the GPU kernels cover. Weights of CONV_2D and FULLY_CONNECTED
 * are uploaded as float32 in the model's own layout (OHWI, [N, K]); other constant operands in the
 * storage format, shared between ops (backend.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../ops/broadcast.h"
#include "../ops/resize.h"
#include "backend.h"

#define GEMM_STRIP 4 /* gemm.cl's STRIP */

static const edge_tensor *input(const edge_context *ctx, const edge_node *node, int32_t i) {
  return i < node->num_inputs && node->inputs[i] >= 0 ? &ctx->tensors[node->inputs[i]] : NULL;
}

static const edge_tensor *output(const edge_context *ctx, const edge_node *node) {
  return &ctx->tensors[node->outputs[0]];
}

static bool is_constant(const edge_tensor *t) { return t && (t->kind == EDGE_TENSOR_CONSTANT || t->folded) && t->data; }

static bool all_float(const edge_context *ctx, const edge_node *node) {
  for (int32_t i = 0; i < node->num_inputs; ++i)
    if (node->inputs[i] >= 0 && ctx->tensors[node->inputs[i]].dtype != EDGE_FLOAT32) return false;
  for (int32_t i = 0; i < node->num_outputs; ++i)
    if (node->outputs[i] >= 0 && ctx->tensors[node->outputs[i]].dtype != EDGE_FLOAT32) return false;
  return true;
}

static int64_t elements(const edge_tensor *t) { return edge_num_elements(t->rank, t->shape); }

/* Every size a kernel indexes fits an int. */
static bool small(const edge_context *ctx, const edge_node *node) {
  for (int32_t i = 0; i < node->num_inputs; ++i)
    if (node->inputs[i] >= 0 && elements(&ctx->tensors[node->inputs[i]]) > 0x3fffffff) return false;
  for (int32_t i = 0; i < node->num_outputs; ++i)
    if (node->outputs[i] >= 0 && elements(&ctx->tensors[node->outputs[i]]) > 0x3fffffff) return false;
  return true;
}

/* BATCH_MATMUL's batch dims as one stride per operand: equal batch shapes, or one side a single
 * matrix. False for other broadcasts (the CPU runs those). */
static bool matmul_batches(const edge_tensor *a, const edge_tensor *b, const edge_tensor *y, int64_t *batch,
                           int64_t *a_batch, int64_t *b_batch) {
  if (a->rank < 2 || b->rank < 2 || y->rank < 2) return false;
  int64_t na = edge_num_elements(a->rank - 2, a->shape), nb = edge_num_elements(b->rank - 2, b->shape);
  *batch = edge_num_elements(y->rank - 2, y->shape);
  *a_batch = na == 1 ? 0 : a->shape[a->rank - 2] * a->shape[a->rank - 1];
  *b_batch = nb == 1 ? 0 : b->shape[b->rank - 2] * b->shape[b->rank - 1];
  if (na != 1 && na != *batch) return false;
  if (nb != 1 && nb != *batch) return false;
  if (na != 1 && nb != 1 && (a->rank != b->rank || memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)(a->rank - 2))))
    return false;
  return true;
}

/* The first of two adjacent dims holding every resized one (the kernel's "rows" and "columns"),
 * or -1 when the resized dims are not within two adjacent ones. */
static int32_t resize_pair(const resize_plan *plan) {
  int32_t first = -1, last = -1;
  for (int32_t d = 0; d < plan->rank; ++d)
    if (plan->resized[d]) {
      if (first < 0) first = d;
      last = d;
    }
  if (first < 0 || last - first > 1 || plan->rank < 2) return -1;
  return first + 1 < plan->rank ? first : first - 1;
}

bool edge_gpu_op_supported(const edge_context *ctx, const edge_node *node) {
  if (node->num_outputs != 1 || node->outputs[0] < 0 || !small(ctx, node)) return false;
  const edge_tensor *y = output(ctx, node);
  const edge_tensor *x = input(ctx, node, 0);
  if (!x) return false;
  switch (node->opcode) {
    case EDGE_OP_CONV_2D: {
      const edge_tensor *w = input(ctx, node, 1), *bias = input(ctx, node, 2);
      /* A fused residual (input 3) is a second launch, an in-place ADD; one narrower than the
       * output (zero-padded channels) runs on the CPU. */
      const edge_tensor *residual = input(ctx, node, 3);
      return all_float(ctx, node) && x->rank == 4 && is_constant(w) && w->rank == 4 && (!bias || is_constant(bias)) &&
             (!residual || (residual->rank == 4 && residual->shape[3] == y->shape[3]));
    }
    case EDGE_OP_FULLY_CONNECTED: {
      const edge_tensor *w = input(ctx, node, 1), *bias = input(ctx, node, 2);
      return all_float(ctx, node) && is_constant(w) && w->rank == 2 && (!bias || is_constant(bias)) &&
             x->shape[x->rank - 1] == w->shape[1];
    }
    case EDGE_OP_BATCH_MATMUL: {
      int64_t batch, ab, bb;
      return all_float(ctx, node) && node->num_inputs == 2 &&
             matmul_batches(x, input(ctx, node, 1), y, &batch, &ab, &bb);
    }
    case EDGE_OP_BINARY: {
      edge_binary_kind op = node->options.binary.op;
      bool arithmetic = op == EDGE_BINARY_ADD || op == EDGE_BINARY_SUB || op == EDGE_BINARY_MUL ||
                        op == EDGE_BINARY_DIV || op == EDGE_BINARY_POW || op == EDGE_BINARY_MIN ||
                        op == EDGE_BINARY_MAX || op == EDGE_BINARY_PRELU || op == EDGE_BINARY_FMOD;
      return arithmetic && all_float(ctx, node) && node->num_inputs == 2 && y->rank <= 8;
    }
    case EDGE_OP_UNARY:
      return all_float(ctx, node) && (unsigned)node->options.unary.op < EDGE_UNARY_COUNT_;
    case EDGE_OP_SOFTMAX:
    case EDGE_OP_RESHAPE:
    case EDGE_OP_TRANSPOSE:
    case EDGE_OP_SLICE:
      return all_float(ctx, node) && x->rank <= 8 && y->rank <= 8;
    case EDGE_OP_LAYER_NORM: {
      const edge_tensor *scale = input(ctx, node, 1), *bias = input(ctx, node, 2);
      int32_t axis = node->options.layer_norm.axis;
      if (axis < 0) axis += x->rank;
      if (node->options.layer_norm.rms) return false; /* the GPU kernel centres; RMSNorm runs on the CPU */
      if (axis < 0 || axis >= x->rank || !is_constant(scale) || (bias && !is_constant(bias))) return false;
      int64_t row = edge_num_elements(x->rank - axis, x->shape + axis);
      return all_float(ctx, node) && elements(scale) == row && (!bias || elements(bias) == row);
    }
    case EDGE_OP_POOL_2D:
      return all_float(ctx, node) && x->rank == 4 && node->num_inputs == 1;
    case EDGE_OP_REDUCE: {
      edge_reduce_kind op = node->options.reduce.op;
      return all_float(ctx, node) && x->rank <= 8 && node->num_inputs == 1 &&
             (op == EDGE_REDUCE_MEAN || op == EDGE_REDUCE_SUM || op == EDGE_REDUCE_MAX || op == EDGE_REDUCE_MIN);
    }
    case EDGE_OP_CONCAT:
      return all_float(ctx, node) && y->rank <= 8 && node->num_inputs <= EDGE_GPU_MAX_LAUNCHES;
    case EDGE_OP_PAD:
      return all_float(ctx, node) && node->options.pad.mode == EDGE_PAD_CONSTANT && x->rank <= 8 &&
             node->num_inputs == 1;
    case EDGE_OP_RESIZE: {  /* nearest or linear over two adjacent dims, from the CPU's tables */
      const resize_plan *plan = node->plan;
      return all_float(ctx, node) && plan && !plan->cubic && plan->rank == x->rank && resize_pair(plan) >= 0;
    }
    case EDGE_OP_GATHER: {
      const edge_tensor *idx = input(ctx, node, 1);
      return idx && x->dtype == EDGE_FLOAT32 && y->dtype == EDGE_FLOAT32 &&
             (idx->dtype == EDGE_INT32 || idx->dtype == EDGE_INT64) && node->num_inputs == 2;
    }
    default:
      return false;
  }
}

/* ---- building launches ---- */

typedef struct {
  edge_gpu *gpu;
  edge_context *ctx;
  edge_gpu_op *op;
  char *error;
  edge_status status;
  edge_gpu_launch *launch;
  cl_uint arg;
} builder;

static bool begin(builder *b, const char *family, const char *options, const char *name) {
  if (b->status != EDGE_OK) return false;
  if (b->op->num_launches >= EDGE_GPU_MAX_LAUNCHES) {
    snprintf(b->error, EDGE_ERROR_CAPACITY, "too many launches");
    b->status = EDGE_UNSUPPORTED;
    return false;
  }
  b->launch = &b->op->launches[b->op->num_launches];
  memset(b->launch, 0, sizeof *b->launch);
  snprintf(b->launch->name, sizeof b->launch->name, "%s", name);
  b->status = edge_gpu_kernel(&b->gpu->dev, family, options, name, &b->launch->kernel, b->error);
  if (b->status != EDGE_OK) return false;
  ++b->op->num_launches;
  b->arg = 0;
  return true;
}

static void arg_bytes(builder *b, size_t size, const void *value) {
  if (b->status != EDGE_OK) return;
  cl_int err = b->gpu->dev.cl->clSetKernelArg(b->launch->kernel, b->arg, size, value);
  if (err != CL_SUCCESS) {
    snprintf(b->error, EDGE_ERROR_CAPACITY, "clSetKernelArg %u: %s (%d)", b->arg, edge_cl_error_name(err), err);
    b->status = EDGE_RUNTIME_ERROR;
  }
  ++b->arg;
}

static void arg_int(builder *b, int64_t v) {
  cl_int value = (cl_int)v;
  arg_bytes(b, sizeof value, &value);
}

static void arg_float(builder *b, float v) { arg_bytes(b, sizeof v, &v); }

static void arg_int8(builder *b, const int64_t *values, int32_t n) {
  cl_int vector[8] = {0};
  for (int32_t i = 0; i < n && i < 8; ++i) vector[i] = (cl_int)values[i];
  arg_bytes(b, sizeof vector, vector);
}

/* n values right-aligned in an int8 (the unrolled kernels' lanes), the leading lanes `fill`. */
static void arg_lanes(builder *b, const int64_t *values, int32_t n, cl_int fill) {
  cl_int vector[8];
  for (int32_t i = 0; i < 8; ++i) vector[i] = fill;
  for (int32_t i = 0; i < n && i < 8; ++i) vector[8 - n + i] = (cl_int)values[i];
  arg_bytes(b, sizeof vector, vector);
}

static void arg_tensor(builder *b, int32_t tensor) {
  if (b->status != EDGE_OK) return;
  b->status = edge_gpu_arg_tensor(b->gpu, b->ctx, b->launch->kernel, &b->arg, tensor, b->error);
}

static void arg_mem(builder *b, cl_mem mem) { arg_bytes(b, sizeof mem, &mem); }

/* A float buffer the op owns (weights, bias, scale), or a one-float placeholder when data is NULL. */
static cl_mem owned_floats(builder *b, int slot, const edge_tensor *t) {
  if (b->status != EDGE_OK) return NULL;
  static const float none = 0.0f;
  b->status = edge_gpu_upload_floats(b->gpu, t ? t->data : &none, t ? (size_t)elements(t) : 1, &b->op->owned[slot],
                                     b->error);
  return b->op->owned[slot];
}

static void activation_args(builder *b, const edge_activation *act) {
  arg_int(b, act->op);
  arg_float(b, act->alpha);
  arg_float(b, act->beta);
}

static void global_1d(builder *b, int64_t n) {
  b->launch->dims = 1;
  b->launch->global[0] = (size_t)(n > 0 ? n : 1);
}

static void global_3d(builder *b, int64_t x, int64_t y, int64_t z) {
  b->launch->dims = 3;
  b->launch->global[0] = (size_t)(x > 0 ? x : 1);
  b->launch->global[1] = (size_t)(y > 0 ? y : 1);
  b->launch->global[2] = (size_t)(z > 0 ? z : 1);
}

static size_t round_up(int64_t n, size_t m) { return ((size_t)(n > 0 ? n : 1) + m - 1) / m * m; }

/* Starts a tiled gemm.cl kernel with the device's tile for it (the tuning table's, else 16); 0 on failure. */
static int begin_tiled(builder *b, int kernel, const char *options) {
  int tile = b->gpu->dev.tiles[kernel];
  char with_tile[160];
  snprintf(with_tile, sizeof with_tile, "%s -DTILE=%d", options, tile);
  return begin(b, "gemm", with_tile, edge_gpu_tile_kernels[kernel]) ? tile : 0;
}

/* The range of a tiled kernel: m rows, n columns (strips of GEMM_STRIP per work-item), `depth` products. */
static void tiled_range(builder *b, int tile, int64_t m, int64_t n, int64_t depth) {
  b->launch->dims = 3;
  b->launch->global[0] = round_up(m, (size_t)tile);
  b->launch->global[1] = round_up(n, (size_t)tile) / GEMM_STRIP;
  b->launch->global[2] = (size_t)(depth > 0 ? depth : 1);
  b->launch->local[0] = (size_t)tile;
  b->launch->local[1] = (size_t)tile / GEMM_STRIP;
  b->launch->local[2] = 1;
  b->launch->has_local = true;
}

static void gemm(builder *b, int32_t y, int32_t a, const char *options, cl_mem weights, int32_t b_tensor,
                 cl_mem bias, bool has_bias, int64_t m, int64_t n, int64_t k, int64_t batch, int64_t a_batch,
                 int64_t a_m, int64_t a_k, int64_t b_batch, int64_t b_k, int64_t b_n, const edge_activation *act) {
  int tile = begin_tiled(b, EDGE_GPU_TILE_GEMM, options);
  if (!tile) return;
  arg_tensor(b, y);
  arg_tensor(b, a);
  if (weights) {
    arg_mem(b, weights);
    arg_int(b, 0);
  } else {
    arg_tensor(b, b_tensor);
  }
  arg_mem(b, bias);
  arg_int(b, has_bias);
  arg_int(b, m);
  arg_int(b, n);
  arg_int(b, k);
  arg_int(b, a_batch);
  arg_int(b, a_m);
  arg_int(b, a_k);
  arg_int(b, b_batch);
  arg_int(b, b_k);
  arg_int(b, b_n);
  activation_args(b, act);
  tiled_range(b, tile, m, n, batch);
}

/* The geometry both convolution kernels take after (y, x, w, bias, has_bias), in one order. */
static void conv_geometry_args(builder *b, const edge_tensor *x, const edge_tensor *y, const edge_tensor *w,
                               const edge_conv2d_options *o) {
  int64_t values[] = {x->shape[1], x->shape[2], x->shape[3], y->shape[1], y->shape[2], y->shape[3], w->shape[1],
                      w->shape[2], o->strides[0], o->strides[1], o->dilations[0], o->dilations[1], o->pads[0],
                      o->pads[1], w->shape[3], y->shape[3] / o->groups};
  for (size_t i = 0; i < sizeof values / sizeof *values; ++i) arg_int(b, values[i]);
}

/* Winograd F(4x4, 3x3) (winograd.cl) for 3x3 stride-1 undilated ungrouped convolutions with at
 * least this many input and output channels, unless the device's tuning table turns it off. */
#define WINOGRAD_MIN_CHANNELS 8

static bool winograd_fits(const edge_gpu *gpu, const edge_tensor *x, const edge_tensor *w, const edge_tensor *y,
                          const edge_conv2d_options *o) {
  int64_t tiles = y->shape[0] * ((y->shape[1] + 3) / 4) * ((y->shape[2] + 3) / 4);
  int64_t widest = x->shape[3] > y->shape[3] ? x->shape[3] : y->shape[3];
  return gpu->dev.winograd && w->shape[1] == 3 && w->shape[2] == 3 && o->strides[0] == 1 && o->strides[1] == 1 &&
         o->dilations[0] == 1 && o->dilations[1] == 1 && o->groups == 1 && x->shape[3] >= WINOGRAD_MIN_CHANNELS &&
         y->shape[3] >= WINOGRAD_MIN_CHANNELS && 36 * tiles * widest <= 0x3fffffff;
}

/* U[e][oc][c] = (G g G^T)[e / 6][e % 6] for the 3x3 filter g of (oc, c), from OHWI weights. */
static float *winograd_weights(const edge_tensor *w) {
  static const double g[6][3] = {{0.25, 0, 0},          {-1.0 / 6, -1.0 / 6, -1.0 / 6}, {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                 {1.0 / 24, 1.0 / 12, 1.0 / 6}, {1.0 / 24, -1.0 / 12, 1.0 / 6}, {0, 0, 1}};
  int64_t oc = w->shape[0], c = w->shape[3];
  float *u = malloc(sizeof(float) * (size_t)(36 * oc * c));
  if (!u) return NULL;
  const float *wd = w->data;
  for (int64_t o = 0; o < oc; ++o)
    for (int64_t ch = 0; ch < c; ++ch) {
      double t[6][3];  /* G g */
      for (int i = 0; i < 6; ++i)
        for (int j = 0; j < 3; ++j) {
          double sum = 0;
          for (int k = 0; k < 3; ++k) sum += g[i][k] * wd[((o * 3 + k) * 3 + j) * c + ch];
          t[i][j] = sum;
        }
      for (int i = 0; i < 6; ++i)
        for (int j = 0; j < 6; ++j) {
          double sum = 0;
          for (int k = 0; k < 3; ++k) sum += t[i][k] * g[j][k];
          u[((int64_t)(i * 6 + j) * oc + o) * c + ch] = (float)sum;
        }
    }
  return u;
}

static cl_mem scratch(builder *b, int slot, int64_t floats) {
  if (b->status != EDGE_OK) return NULL;
  cl_int err = CL_SUCCESS;
  b->op->owned[slot] = b->gpu->dev.cl->clCreateBuffer(b->gpu->dev.context, CL_MEM_READ_WRITE,
                                                      sizeof(float) * (size_t)floats, NULL, &err);
  if (!b->op->owned[slot] || err != CL_SUCCESS) {
    snprintf(b->error, EDGE_ERROR_CAPACITY, "a Winograd scratch buffer of %lld floats: %s (%d)", (long long)floats,
             edge_cl_error_name(err), err);
    b->status = EDGE_OUT_OF_MEMORY;
  }
  return b->op->owned[slot];
}

static void build_winograd(builder *b, const edge_node *node, const edge_tensor *x, const edge_tensor *w,
                           const edge_tensor *bias, const edge_tensor *y, const edge_activation *act) {
  const edge_conv2d_options *o = &node->options.conv2d;
  int64_t c = x->shape[3], oc = y->shape[3], tiles_h = (y->shape[1] + 3) / 4, tiles_w = (y->shape[2] + 3) / 4;
  int64_t tiles = y->shape[0] * tiles_h * tiles_w;
  float *u = winograd_weights(w);
  if (!u) {
    snprintf(b->error, EDGE_ERROR_CAPACITY, "out of memory (Winograd weights)");
    b->status = EDGE_OUT_OF_MEMORY;
    return;
  }
  b->status = edge_gpu_upload_floats(b->gpu, u, (size_t)(36 * oc * c), &b->op->owned[0], b->error);
  free(u);
  cl_mem bias_mem = owned_floats(b, 1, bias), v = scratch(b, 2, 36 * tiles * c), m = scratch(b, 3, 36 * tiles * oc);
  if (!begin(b, "winograd", "", "winograd_input")) return;
  arg_mem(b, v);
  arg_tensor(b, node->inputs[0]);
  int64_t input_args[] = {x->shape[1], x->shape[2], c, tiles_h, tiles_w, tiles, o->pads[0], o->pads[1]};
  for (size_t i = 0; i < sizeof input_args / sizeof *input_args; ++i) arg_int(b, input_args[i]);
  global_3d(b, c, tiles, 1);
  int tile = begin_tiled(b, EDGE_GPU_TILE_GEMM, "-DB_FLOAT=1 -DAY_FLOAT=1");
  if (!tile) return;
  const edge_activation none = {0};
  arg_mem(b, m);
  arg_int(b, 0);
  arg_mem(b, v);
  arg_int(b, 0);
  arg_mem(b, b->op->owned[0]);
  arg_int(b, 0);
  arg_mem(b, bias_mem);
  int64_t gemm_args[] = {0, tiles, oc, c, tiles * c, c, 1, oc * c, 1, c};
  for (size_t i = 0; i < sizeof gemm_args / sizeof *gemm_args; ++i) arg_int(b, gemm_args[i]);
  activation_args(b, &none);
  tiled_range(b, tile, tiles, oc, 36);
  if (!begin(b, "winograd", "", "winograd_output")) return;
  arg_tensor(b, node->outputs[0]);
  arg_mem(b, m);
  arg_mem(b, bias_mem);
  int64_t output_args[] = {bias != NULL, y->shape[1], y->shape[2], oc, tiles_h, tiles_w, tiles};
  for (size_t i = 0; i < sizeof output_args / sizeof *output_args; ++i) arg_int(b, output_args[i]);
  activation_args(b, act);
  global_3d(b, oc, tiles, 1);
}

/* The convolution itself; with a residual (input 3) its activation waits for the add (build_conv). */
static void build_conv_launches(builder *b, const edge_node *node) {
  const edge_context *ctx = b->ctx;
  const edge_tensor *x = input(ctx, node, 0), *w = input(ctx, node, 1), *bias = input(ctx, node, 2);
  const edge_tensor *y = output(ctx, node);
  const edge_conv2d_options *o = &node->options.conv2d;
  static const edge_activation identity = {EDGE_UNARY_IDENTITY, 0.0f, 0.0f};
  const edge_activation *act = input(ctx, node, 3) ? &identity : &node->activation;
  if (winograd_fits(b->gpu, x, w, y, o)) {
    build_winograd(b, node, x, w, bias, y, act);
    return;
  }
  cl_mem weights = owned_floats(b, 0, w), bias_mem = owned_floats(b, 1, bias);
  int64_t out_c = y->shape[3], kh = w->shape[1], kw = w->shape[2], group_in_c = w->shape[3];
  int64_t group_out_c = out_c / o->groups;
  bool pointwise = kh == 1 && kw == 1 && o->strides[0] == 1 && o->strides[1] == 1 && o->pads[0] == 0 &&
                   o->pads[1] == 0 && o->pads[2] == 0 && o->pads[3] == 0 && o->groups == 1;
  if (pointwise) {  /* [N H W, C] x [OC, C]^T */
    int64_t rows = y->shape[0] * y->shape[1] * y->shape[2], c = x->shape[3];
    gemm(b, node->outputs[0], node->inputs[0], "-DB_FLOAT=1", weights, -1, bias_mem, bias != NULL, rows, out_c, c, 1,
         0, c, 1, 0, 1, c, act);
    return;
  }
  /* an implicit GEMM; a depthwise convolution (one channel in, few out per group) stays direct */
  bool implicit_gemm = group_in_c > 1 || group_out_c > 1;
  int tile = implicit_gemm ? begin_tiled(b, EDGE_GPU_TILE_CONV_GEMM, "-DB_FLOAT=1") : begin(b, "conv2d", "", "conv2d");
  if (!tile) return;
  arg_tensor(b, node->outputs[0]);
  arg_tensor(b, node->inputs[0]);
  arg_mem(b, weights);
  arg_mem(b, bias_mem);
  arg_int(b, bias != NULL);
  conv_geometry_args(b, x, y, w, o);
  if (!implicit_gemm) {
    activation_args(b, act);
    global_3d(b, out_c, y->shape[2], y->shape[0] * y->shape[1]);
    return;
  }
  int64_t m = y->shape[0] * y->shape[1] * y->shape[2];
  arg_int(b, m);
  arg_int(b, kh * kw * group_in_c);
  activation_args(b, act);
  tiled_range(b, tile, m, group_out_c, o->groups);
}

static void build_fully_connected(builder *b, const edge_node *node) {
  const edge_tensor *x = input(b->ctx, node, 0), *w = input(b->ctx, node, 1), *bias = input(b->ctx, node, 2);
  cl_mem weights = owned_floats(b, 0, w), bias_mem = owned_floats(b, 1, bias);
  int64_t k = w->shape[1], n = w->shape[0], m = elements(x) / (k ? k : 1);
  gemm(b, node->outputs[0], node->inputs[0], "-DB_FLOAT=1", weights, -1, bias_mem, bias != NULL, m, n, k, 1, 0, k, 1,
       0, 1, k, &node->activation);
}

static void build_batch_matmul(builder *b, const edge_node *node) {
  const edge_tensor *a = input(b->ctx, node, 0), *bt = input(b->ctx, node, 1), *y = output(b->ctx, node);
  int64_t batch, a_batch, b_batch;
  matmul_batches(a, bt, y, &batch, &a_batch, &b_batch);
  bool ta = node->options.batch_matmul.transpose_a, tb = node->options.batch_matmul.transpose_b;
  int64_t m = y->shape[y->rank - 2], n = y->shape[y->rank - 1];
  int64_t k = ta ? a->shape[a->rank - 2] : a->shape[a->rank - 1];
  int64_t a_cols = a->shape[a->rank - 1], b_cols = bt->shape[bt->rank - 1];
  cl_mem none = owned_floats(b, 1, NULL);
  gemm(b, node->outputs[0], node->inputs[0], "", NULL, node->inputs[1], none, false, m, n, k, batch, a_batch,
       ta ? 1 : a_cols, ta ? a_cols : 1, b_batch, tb ? 1 : b_cols, tb ? b_cols : 1, &node->activation);
}

/* node's output = act(tensor a op tensor c), both broadcast to the output, act the node's. */
static void binary_launch(builder *b, const edge_node *node, int32_t a, int32_t c, edge_binary_kind op) {
  const edge_tensor *ta = &b->ctx->tensors[a], *tc = &b->ctx->tensors[c], *y = output(b->ctx, node);
  int64_t as[EDGE_MAX_RANK] = {0}, cs[EDGE_MAX_RANK] = {0};
  edge_nd_broadcast_strides(y->rank, y->shape, ta->rank, ta->shape, as);
  edge_nd_broadcast_strides(y->rank, y->shape, tc->rank, tc->shape, cs);
  if (!begin(b, "elementwise", "", "binary")) return;
  arg_tensor(b, node->outputs[0]);
  arg_tensor(b, a);
  arg_tensor(b, c);
  arg_lanes(b, y->shape, y->rank, 1);
  arg_lanes(b, as, y->rank, 0);
  arg_lanes(b, cs, y->rank, 0);
  arg_int(b, elements(y));
  arg_int(b, op);
  activation_args(b, &node->activation);
  global_1d(b, elements(y));
}

static void build_binary(builder *b, const edge_node *node) {
  binary_launch(b, node, node->inputs[0], node->inputs[1], node->options.binary.op);
}

/* A residual is added after the convolution in place, y = act(y + residual): each work item reads
 * and writes only its own element. */
static void build_conv(builder *b, const edge_node *node) {
  build_conv_launches(b, node);
  if (input(b->ctx, node, 3)) binary_launch(b, node, node->outputs[0], node->inputs[3], EDGE_BINARY_ADD);
}

static void build_unary(builder *b, const edge_node *node) {
  const edge_tensor *y = output(b->ctx, node);
  if (!begin(b, "elementwise", "", "unary")) return;
  arg_tensor(b, node->outputs[0]);
  arg_tensor(b, node->inputs[0]);
  arg_int(b, elements(y));
  arg_int(b, node->options.unary.op);
  arg_float(b, node->options.unary.alpha);
  arg_float(b, node->options.unary.beta);
  global_1d(b, elements(y));
}

static void build_copy(builder *b, const edge_node *node) {
  if (!begin(b, "data", "", "copy")) return;
  arg_tensor(b, node->outputs[0]);
  arg_tensor(b, node->inputs[0]);
  arg_int(b, elements(output(b->ctx, node)));
  global_1d(b, elements(output(b->ctx, node)));
}

/* y[c] = x[base + sum c_d strides[d]]: base must be folded into the offset, so x's argument is
 * (buffer, offset + base). */
static void build_strided(builder *b, const edge_node *node, int32_t rank, const int64_t *out_shape,
                          const int64_t *x_strides, int64_t base) {
  if (!begin(b, "data", "", "strided")) return;
  arg_tensor(b, node->outputs[0]);
  cl_uint x_arg = b->arg;
  arg_tensor(b, node->inputs[0]);
  if (b->status == EDGE_OK && base) {  /* the offset just set, plus base */
    const edge_tensor *x = input(b->ctx, node, 0);
    size_t element = b->gpu->dev.half ? 2 : 4;
    bool arena = x->kind == EDGE_TENSOR_ACTIVATION && !x->folded;
    cl_int offset = (cl_int)((arena ? (size_t)((uint8_t *)x->data - (uint8_t *)b->gpu->host_arena) / element : 0) +
                             (size_t)base);
    b->arg = x_arg + 1;
    arg_int(b, offset);
  }
  arg_lanes(b, out_shape, rank, 1);
  arg_lanes(b, x_strides, rank, 0);
  arg_int(b, elements(output(b->ctx, node)));
  global_1d(b, elements(output(b->ctx, node)));
}

static void build_transpose(builder *b, const edge_node *node) {
  const edge_tensor *x = input(b->ctx, node, 0), *y = output(b->ctx, node);
  int64_t strides[EDGE_MAX_RANK], read[EDGE_MAX_RANK];
  edge_nd_contiguous_strides(x->rank, x->shape, strides);
  for (int32_t d = 0; d < y->rank; ++d) read[d] = strides[node->options.transpose.perm[d]];
  build_strided(b, node, y->rank, y->shape, read, 0);
}

static void build_slice(builder *b, const edge_node *node) {
  /* the CPU prepare's iterator: operand 1 reads the input with the slice's steps and start */
  const edge_nd_iter *it = node->plan;
  const edge_tensor *y = output(b->ctx, node);
  if (!it || it->num_operands != 2) {
    snprintf(b->error, EDGE_ERROR_CAPACITY, "SLICE has no prepared plan");
    b->status = EDGE_UNSUPPORTED;
    return;
  }
  if (elements(y) == 0) {
    int64_t one = 1, zero = 0;
    build_strided(b, node, 1, &one, &zero, 0);
    b->launch->global[0] = 1;
    return;
  }
  build_strided(b, node, it->rank, it->shape, it->strides[1], it->base[1]);
}

static void build_softmax(builder *b, const edge_node *node) {
  const edge_tensor *x = input(b->ctx, node, 0);
  int32_t axis = node->options.softmax.axis;
  if (axis < 0) axis += x->rank;
  int64_t outer = edge_num_elements(axis, x->shape), inner = edge_num_elements(x->rank - axis - 1, x->shape + axis + 1);
  if (!begin(b, "normalize", "", "softmax")) return;
  arg_tensor(b, node->outputs[0]);
  arg_tensor(b, node->inputs[0]);
  arg_int(b, outer);
  arg_int(b, x->shape[axis]);
  arg_int(b, inner);
  arg_int(b, node->options.softmax.log);
  global_1d(b, outer * inner);
}

static void build_layer_norm(builder *b, const edge_node *node) {
  const edge_tensor *x = input(b->ctx, node, 0), *scale = input(b->ctx, node, 1), *bias = input(b->ctx, node, 2);
  int32_t axis = node->options.layer_norm.axis;
  if (axis < 0) axis += x->rank;
  int64_t row = edge_num_elements(x->rank - axis, x->shape + axis), rows = edge_num_elements(axis, x->shape);
  cl_mem scale_mem = owned_floats(b, 0, scale), bias_mem = owned_floats(b, 1, bias);
  if (!begin(b, "normalize", "", "layer_norm")) return;
  arg_tensor(b, node->outputs[0]);
  arg_tensor(b, node->inputs[0]);
  arg_mem(b, scale_mem);
  arg_mem(b, bias_mem);
  arg_int(b, bias != NULL);
  arg_int(b, rows);
  arg_int(b, row);
  arg_float(b, node->options.layer_norm.epsilon);
  global_1d(b, rows);
}

static void build_pool(builder *b, const edge_node *node) {
  const edge_tensor *x = input(b->ctx, node, 0), *y = output(b->ctx, node);
  const edge_pool2d_options *o = &node->options.pool2d;
  if (!begin(b, "pool", "", "pool2d")) return;
  arg_tensor(b, node->outputs[0]);
  arg_tensor(b, node->inputs[0]);
  arg_int(b, x->shape[1]);
  arg_int(b, x->shape[2]);
  arg_int(b, x->shape[3]);
  arg_int(b, y->shape[1]);
  arg_int(b, y->shape[2]);
  arg_int(b, o->kernel[0]);
  arg_int(b, o->kernel[1]);
  arg_int(b, o->strides[0]);
  arg_int(b, o->strides[1]);
  arg_int(b, o->dilations[0] ? o->dilations[0] : 1);
  arg_int(b, o->dilations[1] ? o->dilations[1] : 1);
  arg_int(b, o->pads[0]);
  arg_int(b, o->pads[1]);
  arg_int(b, o->pads[2]);
  arg_int(b, o->pads[3]);
  arg_int(b, o->type == EDGE_POOL_AVERAGE);
  arg_int(b, o->count_include_pad);
  global_3d(b, x->shape[3], y->shape[2], y->shape[0] * y->shape[1]);
}

static void build_reduce(builder *b, const edge_node *node) {
  const edge_tensor *x = input(b->ctx, node, 0), *y = output(b->ctx, node);
  const edge_reduce_options *o = &node->options.reduce;
  int64_t reduced[EDGE_MAX_RANK] = {0};
  int64_t count = 1;
  if (o->num_axes == 0) {
    for (int32_t d = 0; d < x->rank; ++d) reduced[d] = 1;
  }
  for (int32_t i = 0; i < o->num_axes; ++i) {
    int32_t axis = o->axes[i] < 0 ? o->axes[i] + x->rank : o->axes[i];
    if (axis >= 0 && axis < x->rank) reduced[axis] = 1;
  }
  for (int32_t d = 0; d < x->rank; ++d)
    if (reduced[d]) count *= x->shape[d];
  static const int ops[] = {[EDGE_REDUCE_MEAN] = 1, [EDGE_REDUCE_SUM] = 0, [EDGE_REDUCE_MAX] = 2, [EDGE_REDUCE_MIN] = 3};
  if (!begin(b, "pool", "", "reduce")) return;
  arg_tensor(b, node->outputs[0]);
  arg_tensor(b, node->inputs[0]);
  arg_int(b, x->rank);
  arg_int8(b, x->shape, x->rank);
  arg_int8(b, reduced, x->rank);
  arg_int(b, elements(y));
  arg_int(b, count);
  arg_int(b, ops[o->op]);
  global_1d(b, elements(y));
}

static void build_concat(builder *b, const edge_node *node) {
  const edge_tensor *y = output(b->ctx, node);
  int32_t axis = node->options.axis.axis;
  if (axis < 0) axis += y->rank;
  int64_t outer = edge_num_elements(axis, y->shape), inner = edge_num_elements(y->rank - axis - 1, y->shape + axis + 1);
  int64_t whole = y->shape[axis] * inner, offset = 0;
  for (int32_t i = 0; i < node->num_inputs; ++i) {
    const edge_tensor *x = input(b->ctx, node, i);
    if (!x) continue;
    int64_t part = x->shape[axis] * inner;
    if (part > 0) {
      if (!begin(b, "data", "", "concat_part")) return;
      arg_tensor(b, node->outputs[0]);
      arg_tensor(b, node->inputs[i]);
      arg_int(b, outer);
      arg_int(b, part);
      arg_int(b, whole);
      arg_int(b, offset);
      global_1d(b, outer * part);
    }
    offset += part;
  }
}

static void build_pad(builder *b, const edge_node *node) {
  const edge_tensor *x = input(b->ctx, node, 0), *y = output(b->ctx, node);
  const edge_pad_options *o = &node->options.pad;
  int64_t before[EDGE_MAX_RANK] = {0};  /* pads: every dim's begin, then every dim's end (ONNX) */
  for (int32_t d = 0; d < x->rank; ++d) before[d] = o->pads[d];
  if (!begin(b, "data", "", "pad_constant")) return;
  arg_tensor(b, node->outputs[0]);
  arg_tensor(b, node->inputs[0]);
  int64_t strides[EDGE_MAX_RANK];
  edge_nd_contiguous_strides(x->rank, x->shape, strides);
  arg_lanes(b, y->shape, y->rank, 1);
  arg_lanes(b, x->shape, x->rank, 1);
  arg_lanes(b, strides, x->rank, 0);
  arg_lanes(b, before, x->rank, 0);
  arg_float(b, o->value);
  arg_int(b, elements(y));
  global_1d(b, elements(y));
}

static void build_gather(builder *b, const edge_node *node) {
  const edge_tensor *x = input(b->ctx, node, 0), *idx = input(b->ctx, node, 1);
  int32_t axis = node->options.axis.axis;
  if (axis < 0) axis += x->rank;
  int64_t outer = edge_num_elements(axis, x->shape), inner = edge_num_elements(x->rank - axis - 1, x->shape + axis + 1);
  b->op->check_indices = 1;
  b->op->index_limit = x->shape[axis];
  if (!begin(b, "data", idx->dtype == EDGE_INT64 ? "-DINDEX_TYPE=long" : "-DINDEX_TYPE=int", "gather")) return;
  arg_tensor(b, node->outputs[0]);
  arg_tensor(b, node->inputs[0]);
  arg_tensor(b, node->inputs[1]);
  arg_int(b, outer);
  arg_int(b, x->shape[axis]);
  arg_int(b, inner);
  arg_int(b, elements(idx));
  global_1d(b, outer * elements(idx) * inner);
}

/* A resized dimension's table as device buffers (an unresized one is the identity). */
static void resize_tables(builder *b, const resize_plan *plan, int32_t d, int64_t in, int64_t out, cl_mem *lower,
                          cl_mem *upper, cl_mem *weight) {
  if (b->status != EDGE_OK) return;
  int32_t *lo = malloc(sizeof(int32_t) * (size_t)out), *hi = malloc(sizeof(int32_t) * (size_t)out);
  float *w = malloc(sizeof(float) * (size_t)out);
  if (!lo || !hi || !w) {
    snprintf(b->error, EDGE_ERROR_CAPACITY, "out of memory");
    b->status = EDGE_OUT_OF_MEMORY;
  } else {
    for (int64_t o = 0; o < out; ++o) {
      lo[o] = (int32_t)(plan->resized[d] ? plan->lower[d][o] : (o < in ? o : in - 1));
      hi[o] = (int32_t)(plan->resized[d] ? plan->upper[d][o] : lo[o]);
      w[o] = plan->resized[d] && plan->linear ? plan->upper_weight[d][o] : 0.0f;
    }
    cl_int err = CL_SUCCESS;
    const edge_cl_api *cl = b->gpu->dev.cl;
    size_t ints = sizeof(int32_t) * (size_t)out, floats = sizeof(float) * (size_t)out;
    *lower = cl->clCreateBuffer(b->gpu->dev.context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, ints, lo, &err);
    if (err == CL_SUCCESS) *upper = cl->clCreateBuffer(b->gpu->dev.context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, ints, hi, &err);
    if (err == CL_SUCCESS) *weight = cl->clCreateBuffer(b->gpu->dev.context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, floats, w, &err);
    if (err != CL_SUCCESS) {
      snprintf(b->error, EDGE_ERROR_CAPACITY, "RESIZE tables: %s (%d)", edge_cl_error_name(err), err);
      b->status = EDGE_OUT_OF_MEMORY;
    }
  }
  free(lo);
  free(hi);
  free(w);
}

/* The tensor as [outer, rows, columns, inner] around the two dims resize_pair picks. */
static void build_resize(builder *b, const edge_node *node) {
  const edge_tensor *x = input(b->ctx, node, 0), *y = output(b->ctx, node);
  const resize_plan *plan = node->plan;
  int32_t d = resize_pair(plan);
  int64_t outer = edge_num_elements(d, x->shape), inner = edge_num_elements(x->rank - d - 2, x->shape + d + 2);
  cl_mem *t = b->op->tables;
  resize_tables(b, plan, d, x->shape[d], y->shape[d], &t[0], &t[1], &t[2]);
  resize_tables(b, plan, d + 1, x->shape[d + 1], y->shape[d + 1], &t[3], &t[4], &t[5]);
  if (!begin(b, "data", "", "resize_hw")) return;
  arg_tensor(b, node->outputs[0]);
  arg_tensor(b, node->inputs[0]);
  arg_int(b, x->shape[d]);
  arg_int(b, x->shape[d + 1]);
  arg_int(b, inner);
  arg_int(b, y->shape[d]);
  arg_int(b, y->shape[d + 1]);
  for (int i = 0; i < 6; ++i) arg_mem(b, t[i]);
  global_3d(b, inner, y->shape[d + 1], outer * y->shape[d]);
}

edge_status edge_gpu_op_build(edge_gpu *gpu, edge_context *ctx, const edge_node *node, edge_gpu_op *op, char *error) {
  builder b = {gpu, ctx, op, error, EDGE_OK, NULL, 0};
  switch (node->opcode) {
    case EDGE_OP_CONV_2D: build_conv(&b, node); break;
    case EDGE_OP_FULLY_CONNECTED: build_fully_connected(&b, node); break;
    case EDGE_OP_BATCH_MATMUL: build_batch_matmul(&b, node); break;
    case EDGE_OP_BINARY: build_binary(&b, node); break;
    case EDGE_OP_UNARY: build_unary(&b, node); break;
    case EDGE_OP_RESHAPE: build_copy(&b, node); break;
    case EDGE_OP_TRANSPOSE: build_transpose(&b, node); break;
    case EDGE_OP_SLICE: build_slice(&b, node); break;
    case EDGE_OP_SOFTMAX: build_softmax(&b, node); break;
    case EDGE_OP_LAYER_NORM: build_layer_norm(&b, node); break;
    case EDGE_OP_POOL_2D: build_pool(&b, node); break;
    case EDGE_OP_REDUCE: build_reduce(&b, node); break;
    case EDGE_OP_CONCAT: build_concat(&b, node); break;
    case EDGE_OP_PAD: build_pad(&b, node); break;
    case EDGE_OP_GATHER: build_gather(&b, node); break;
    case EDGE_OP_RESIZE: build_resize(&b, node); break;
    default:
      snprintf(error, EDGE_ERROR_CAPACITY, "no GPU kernel for %s", edge_op_names[node->opcode]);
      return EDGE_UNSUPPORTED;
  }
  return b.status;
}

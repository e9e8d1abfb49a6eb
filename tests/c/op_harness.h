/* The one-node graph every op test suite (test_ops_data.c, test_ops_compute.c, test_ops_index.c,
 * test_ops_training.c, test_ops_quant.c) builds by hand, quantization parameters included: tensors and a node, prepare and eval through the registration table, outputs and
 * scratch poisoned (0xA5) before eval so a kernel that skips an element is caught. Header-only,
 * everything static inline: each suite is one translation unit. */
#ifndef EDGE_OP_HARNESS_H
#define EDGE_OP_HARNESS_H

#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "test.h"

#define MAX_TENSORS 16

/* Room for per-channel quantization parameters of each tensor. */
#define MAX_QUANT_PARAMS 64

typedef struct {
  edge_tensor tensors[MAX_TENSORS];
  float scales[MAX_TENSORS][MAX_QUANT_PARAMS];
  int64_t zero_points[MAX_TENSORS][MAX_QUANT_PARAMS];
  void *owned[MAX_TENSORS]; /* the data buffers this graph allocated (a folded output points elsewhere) */
  int32_t num_tensors;
  int32_t inputs[MAX_TENSORS], outputs[MAX_TENSORS];
  edge_node node;
  edge_context ctx;
  char error[EDGE_ERROR_CAPACITY];
  void *scratch;
} graph;

static inline void graph_init(graph *g, edge_op_kind opcode) {
  memset(g, 0, sizeof *g);
  g->node.opcode = opcode;
  g->node.inputs = g->inputs;
  g->node.outputs = g->outputs;
  g->ctx.tensors = g->tensors;
  g->ctx.error = g->error;
  g->ctx.num_threads = 1;
}

/* A zero-filled tensor (64 spare bytes past its end) of the given shape; returns its index. */
static inline int32_t add_tensor(graph *g, const char *name, edge_dtype dtype, int32_t rank, const int64_t *shape) {
  int32_t index = g->num_tensors++;
  edge_tensor *t = &g->tensors[index];
  t->name = name;
  t->dtype = dtype;
  t->rank = t->declared_rank = rank;
  for (int32_t d = 0; d < rank; ++d) t->shape[d] = t->declared_shape[d] = shape[d];
  t->nbytes = (size_t)edge_num_elements(rank, shape) * edge_dtype_size(dtype);
  t->data = g->owned[index] = calloc(1, t->nbytes + 64);
  t->scales = g->scales[index];
  t->zero_points = g->zero_points[index];
  g->ctx.num_tensors = g->num_tensors;
  return index;
}

static inline void graph_add_input(graph *g, int32_t tensor) { g->inputs[g->node.num_inputs++] = tensor; }
static inline void graph_add_output(graph *g, int32_t tensor) { g->outputs[g->node.num_outputs++] = tensor; }

/* Quantization parameters of tensor t: count scales and zero points along axis (count 1: per tensor). */
static inline void graph_set_quant(graph *g, int32_t t, int32_t count, const float *scales,
                                   const int64_t *zero_points, int32_t axis) {
  for (int32_t i = 0; i < count; ++i) {
    g->scales[t][i] = scales[i];
    g->zero_points[t][i] = zero_points[i];
  }
  g->tensors[t].num_quant_params = count;
  g->tensors[t].quantized_dimension = axis;
}

static inline edge_status graph_prepare(graph *g) {
  g->node.scratch_bytes = 0;
  g->error[0] = '\0';
  return edge_op_lookup(g->node.opcode)->prepare(&g->ctx, &g->node);
}

/* prepare, allocate outputs (poisoned) and scratch at their new sizes, eval. An output the op folded
 * at prepare keeps the data it points to. */
static inline edge_status graph_run(graph *g) {
  edge_status status = graph_prepare(g);
  if (status != EDGE_OK) return status;
  for (int32_t i = 0; i < g->node.num_outputs; ++i) {
    const int32_t t = g->outputs[i];
    if (t < 0 || g->tensors[t].folded) continue;
    free(g->owned[t]);
    g->tensors[t].data = g->owned[t] = malloc(g->tensors[t].nbytes + 64);
    memset(g->owned[t], 0xA5, g->tensors[t].nbytes + 64);
  }
  free(g->scratch);
  g->scratch = NULL;
  if (g->node.scratch_bytes) {
    size_t bytes = (g->node.scratch_bytes + EDGE_ALIGNMENT - 1) / EDGE_ALIGNMENT * EDGE_ALIGNMENT;
    g->scratch = aligned_alloc(EDGE_ALIGNMENT, bytes);
    memset(g->scratch, 0xA5, bytes);
  }
  g->node.scratch = g->scratch;
  return edge_op_lookup(g->node.opcode)->eval(&g->ctx, &g->node);
}

static inline void graph_free(graph *g) {
  const edge_op_registration *reg = edge_op_lookup(g->node.opcode);
  if (reg->release && g->node.plan) reg->release(&g->node);
  for (int32_t i = 0; i < g->num_tensors; ++i) free(g->owned[i]);
  free(g->scratch);
}

#endif

/* The one-node graph the op test suites (test_ops_data.c, test_ops_compute.c, test_ops_training.c)
 * build by hand: tensors and a node, prepare and eval through the registration table, outputs and
 * scratch poisoned (0xA5) before eval so a kernel that skips an element is caught. Also the
 * suites' xorshift generator; an includer defines OP_HARNESS_SEED first, so each suite keeps its own
 * random cases. Header-only, everything static inline: each suite is one translation unit. */
#ifndef EDGE_OP_HARNESS_H
#define EDGE_OP_HARNESS_H

#include <stdlib.h>
#include <string.h>

#include "internal.h"

#ifndef OP_HARNESS_SEED
#error "define OP_HARNESS_SEED before including op_harness.h"
#endif

static uint64_t rng_state = OP_HARNESS_SEED;

static inline uint32_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state >> 16);
}
static inline int64_t rnd_range(int64_t lo, int64_t hi) { return lo + (int64_t)(rnd() % (uint32_t)(hi - lo + 1)); }
static inline float rnd_float(float lo, float hi) { return lo + (hi - lo) * (float)(rnd() % 1000000) / 1000000.0f; }

#define MAX_TENSORS 16

typedef struct {
  edge_tensor tensors[MAX_TENSORS];
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
  t->data = calloc(1, t->nbytes + 64);
  g->ctx.num_tensors = g->num_tensors;
  return index;
}

/* prepare, allocate outputs (poisoned) and scratch at their new sizes, eval. */
static inline edge_status graph_run(graph *g) {
  const edge_op_registration *reg = edge_op_lookup(g->node.opcode);
  g->node.scratch_bytes = 0;
  g->error[0] = '\0';
  edge_status status = reg->prepare(&g->ctx, &g->node);
  if (status != EDGE_OK) return status;
  for (int32_t i = 0; i < g->node.num_outputs; ++i) {
    if (g->outputs[i] < 0) continue;
    edge_tensor *t = &g->tensors[g->outputs[i]];
    free(t->data);
    t->data = malloc(t->nbytes + 64);
    memset(t->data, 0xA5, t->nbytes + 64);
  }
  free(g->scratch);
  g->scratch = NULL;
  if (g->node.scratch_bytes) {
    size_t bytes = (g->node.scratch_bytes + EDGE_ALIGNMENT - 1) / EDGE_ALIGNMENT * EDGE_ALIGNMENT;
    g->scratch = aligned_alloc(EDGE_ALIGNMENT, bytes);
    memset(g->scratch, 0xA5, bytes);
  }
  g->node.scratch = g->scratch;
  return reg->eval(&g->ctx, &g->node);
}

static inline void graph_free(graph *g) {
  const edge_op_registration *reg = edge_op_lookup(g->node.opcode);
  if (reg->release) reg->release(&g->node);
  for (int32_t i = 0; i < g->num_tensors; ++i) free(g->tensors[i].data);
  free(g->scratch);
}

#endif

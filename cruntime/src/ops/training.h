/* Helpers the training ops share (conv_grad.c, pool_grad.c, activation_grad.c, loss.c,
 * norm_grad.c, gather_grad.c, optimizer.c).
 *
 * Determinism: every training kernel gives bit-identical results for any thread count. Work is
 * split into cells whose boundaries depend only on the shapes (never on the number of threads),
 * each value is produced by one cell in a fixed order, and sums that span cells (losses, norms)
 * are kept per cell in scratch and added in cell order afterwards. */
#ifndef EDGE_OPS_TRAINING_H
#define EDGE_OPS_TRAINING_H

#include "broadcast.h"

/* Elements per cell of the elementwise training kernels and of the partial sums. */
#define EDGE_TRAINING_BLOCK 4096

static inline edge_tensor *edge_training_optional(edge_context *ctx, const edge_node *node, bool output, int32_t i) {
  int32_t count = output ? node->num_outputs : node->num_inputs;
  const int32_t *list = output ? node->outputs : node->inputs;
  return i < count && list[i] >= 0 ? &ctx->tensors[list[i]] : NULL;
}

/* Input/output counts and that every index (-1 allowed where optional_* permits) names a tensor. */
static inline edge_status edge_training_check_arity(edge_context *ctx, const edge_node *node, const char *op,
                                                    int32_t min_inputs, int32_t max_inputs, int32_t min_outputs,
                                                    int32_t max_outputs, bool optional_outputs) {
  return edge_op_check_arity_optional(ctx, node, op, min_inputs, max_inputs, min_outputs, max_outputs,
                                      optional_outputs);
}

static inline edge_status edge_training_check_float(edge_context *ctx, const char *op, const char *role,
                                                    const edge_tensor *t) {
  if (t->dtype != EDGE_FLOAT32)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: %s '%s' is %s; only float32 is supported", op, role, edge_tensor_name(t),
                     edge_dtype_name(t->dtype));
  return EDGE_OK;
}

static inline bool edge_training_same_shape(const edge_tensor *a, const edge_tensor *b) {
  if (a->rank != b->rank) return false;
  for (int32_t d = 0; d < a->rank; ++d)
    if (a->shape[d] != b->shape[d]) return false;
  return true;
}

static inline edge_status edge_training_check_same_shape(edge_context *ctx, const char *op, const char *role_a,
                                                         const edge_tensor *a, const char *role_b,
                                                         const edge_tensor *b) {
  if (edge_training_same_shape(a, b)) return EDGE_OK;
  char sa[128], sb[128];
  edge_format_shape(sa, sizeof sa, a->rank, a->shape);
  edge_format_shape(sb, sizeof sb, b->rank, b->shape);
  return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: %s '%s' is %s but %s '%s' is %s; they must match", op, role_a,
                   edge_tensor_name(a), sa, role_b, edge_tensor_name(b), sb);
}

/* Ops that update a tensor in place write through its data pointer: it must be a variable (the
 * persistent area), never a constant (read-only model bytes) nor an activation (the arena). */
static inline edge_status edge_training_check_variable(edge_context *ctx, const char *op, const char *role,
                                                       const edge_tensor *t) {
  if (t->kind != EDGE_TENSOR_VARIABLE)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: %s '%s' is updated in place, so it must be a variable tensor, not %s",
                     op, role, edge_tensor_name(t), t->kind == EDGE_TENSOR_CONSTANT ? "a constant" : "an activation");
  return EDGE_OK;
}

static inline size_t edge_training_align(size_t n) { return (n + EDGE_ALIGNMENT - 1) / EDGE_ALIGNMENT * EDGE_ALIGNMENT; }

#endif

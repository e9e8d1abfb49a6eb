/* How an op reaches its tensors: the node's input and output tensors by position, a tensor's name
 * for messages, an axis normalised against a rank, and the arity check every prepare starts with. */
#ifndef EDGE_OPS_TENSOR_ACCESS_H
#define EDGE_OPS_TENSOR_ACCESS_H

#include "../internal.h"

/* Checks the node's input and output counts and that every index names a tensor (outputs after the
 * first may be -1, left out, where optional_outputs); op is the name used in messages. */
edge_status edge_op_check_arity_optional(edge_context *ctx, const edge_node *node, const char *op,
                                         int32_t min_inputs, int32_t max_inputs, int32_t min_outputs,
                                         int32_t max_outputs, bool optional_outputs);
static inline edge_status edge_op_check_arity(edge_context *ctx, const edge_node *node, const char *op,
                                              int32_t min_inputs, int32_t max_inputs, int32_t min_outputs,
                                              int32_t max_outputs) {
  return edge_op_check_arity_optional(ctx, node, op, min_inputs, max_inputs, min_outputs, max_outputs, false);
}

/* Input / output i of the node (after edge_op_check_arity; an optional input left out is -1 and must
 * be tested by the caller before this). */
static inline edge_tensor *edge_op_input(edge_context *ctx, const edge_node *node, int32_t i) {
  return &ctx->tensors[node->inputs[i]];
}
static inline edge_tensor *edge_op_output(edge_context *ctx, const edge_node *node, int32_t i) {
  return &ctx->tensors[node->outputs[i]];
}
static inline const char *edge_tensor_name(const edge_tensor *t) { return t->name ? t->name : "?"; }

/* Normalises a possibly negative axis against rank; false if out of range. */
static inline bool edge_normalize_axis(int32_t *axis, int32_t rank) {
  int32_t a = *axis < 0 ? *axis + rank : *axis;
  if (a < 0 || a >= rank) return false;
  *axis = a;
  return true;
}

#endif

#include "tensor_access.h"

edge_status edge_op_check_arity_optional(edge_context *ctx, const edge_node *node, const char *op,
                                         int32_t min_inputs, int32_t max_inputs, int32_t min_outputs,
                                         int32_t max_outputs, bool optional_outputs) {
  if (node->num_inputs < min_inputs || node->num_inputs > max_inputs)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: has %d inputs, expects %d to %d", op, node->num_inputs,
                     min_inputs, max_inputs);
  if (node->num_outputs < min_outputs || node->num_outputs > max_outputs)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: has %d outputs, expects %d to %d", op, node->num_outputs,
                     min_outputs, max_outputs);
  for (int32_t i = 0; i < node->num_inputs; ++i)
    if (node->inputs[i] < 0 || node->inputs[i] >= ctx->num_tensors)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: input %d is tensor %d, not one of the %d tensors", op, i,
                       node->inputs[i], ctx->num_tensors);
  for (int32_t i = 0; i < node->num_outputs; ++i)
    if (node->outputs[i] < (optional_outputs && i > 0 ? -1 : 0) || node->outputs[i] >= ctx->num_tensors)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: output %d is tensor %d, not one of the %d tensors", op, i,
                       node->outputs[i], ctx->num_tensors);
  return EDGE_OK;
}

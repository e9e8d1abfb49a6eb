/* The registration table: runtime opcode -> {prepare, eval, release}. Adding an op means adding
 * its enum value to cruntime/schema/edge.fbs (then regen), its file under ops/, and one line here. */
#include "ops.h"

static const edge_op_registration *const registry[EDGE_OP_COUNT_] = {
    [EDGE_OP_CONV_2D] = &edge_op_conv2d,
    [EDGE_OP_CONV_TRANSPOSE_2D] = &edge_op_conv_transpose2d,
    [EDGE_OP_FULLY_CONNECTED] = &edge_op_fully_connected,
    [EDGE_OP_BATCH_MATMUL] = &edge_op_batch_matmul,
    [EDGE_OP_BINARY] = &edge_op_binary,
    [EDGE_OP_UNARY] = &edge_op_unary,
    [EDGE_OP_SOFTMAX] = &edge_op_softmax,
    [EDGE_OP_LAYER_NORM] = &edge_op_layer_norm,
    [EDGE_OP_POOL_2D] = &edge_op_pool2d,
    [EDGE_OP_REDUCE] = &edge_op_reduce,
    [EDGE_OP_RESHAPE] = &edge_op_reshape,
    [EDGE_OP_TRANSPOSE] = &edge_op_transpose,
    [EDGE_OP_CONCAT] = &edge_op_concat,
    [EDGE_OP_SPLIT] = &edge_op_split,
    [EDGE_OP_SLICE] = &edge_op_slice,
    [EDGE_OP_GATHER] = &edge_op_gather,
    [EDGE_OP_GATHER_ELEMENTS] = &edge_op_gather_elements,
    [EDGE_OP_PAD] = &edge_op_pad,
    [EDGE_OP_RESIZE] = &edge_op_resize,
    [EDGE_OP_CAST] = &edge_op_cast,
    [EDGE_OP_WHERE] = &edge_op_where,
    [EDGE_OP_BROADCAST_TO] = &edge_op_broadcast_to,
    [EDGE_OP_LSTM] = &edge_op_lstm,
    [EDGE_OP_GRU] = &edge_op_gru,
    [EDGE_OP_LRN] = &edge_op_lrn,
    [EDGE_OP_CONV_2D_BACKPROP_INPUT] = &edge_op_conv2d_backprop_input,
    [EDGE_OP_CONV_2D_BACKPROP_FILTER] = &edge_op_conv2d_backprop_filter,
    [EDGE_OP_POOL_2D_GRAD] = &edge_op_pool2d_grad,
    [EDGE_OP_ACTIVATION_GRAD] = &edge_op_activation_grad,
    [EDGE_OP_LOSS] = &edge_op_loss,
    [EDGE_OP_LAYER_NORM_GRAD] = &edge_op_layer_norm_grad,
    [EDGE_OP_BATCH_NORM_TRAIN] = &edge_op_batch_norm_train,
    [EDGE_OP_BATCH_NORM_GRAD] = &edge_op_batch_norm_grad,
    [EDGE_OP_GATHER_GRAD] = &edge_op_gather_grad,
    [EDGE_OP_OPTIMIZER_UPDATE] = &edge_op_optimizer_update,
    [EDGE_OP_CLIP_BY_GLOBAL_NORM] = &edge_op_clip_by_global_norm,
    [EDGE_OP_QUANTIZE] = &edge_op_quantize,
    [EDGE_OP_DEQUANTIZE] = &edge_op_dequantize,
    [EDGE_OP_TRILU] = &edge_op_trilu,
    [EDGE_OP_CUMSUM] = &edge_op_cumsum,
    [EDGE_OP_ARG_MAX] = &edge_op_arg_max,
    [EDGE_OP_ARG_MIN] = &edge_op_arg_min,
    [EDGE_OP_TOP_K] = &edge_op_top_k,
    [EDGE_OP_GATHER_ND] = &edge_op_gather_nd,
    [EDGE_OP_SCATTER_ND] = &edge_op_scatter_nd,
    [EDGE_OP_SCATTER_ELEMENTS] = &edge_op_scatter_elements,
    [EDGE_OP_NON_MAX_SUPPRESSION] = &edge_op_non_max_suppression,
    [EDGE_OP_ROI_ALIGN] = &edge_op_roi_align,
};

const edge_op_registration *edge_op_lookup(edge_op_kind opcode) {
  if ((int)opcode < 0 || (int)opcode >= EDGE_OP_COUNT_) return NULL;
  return registry[opcode];
}

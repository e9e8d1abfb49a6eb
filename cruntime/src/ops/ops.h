/* Every op family's registration, one per runtime opcode. Each lives in its family's file under
 * cruntime/src/ops/ and is placed in the table in registry.c. */
#ifndef EDGE_OPS_H
#define EDGE_OPS_H

#include "../internal.h"

extern const edge_op_registration edge_op_conv2d;            /* conv.c */
extern const edge_op_registration edge_op_conv_transpose2d;  /* conv.c */
extern const edge_op_registration edge_op_fully_connected;   /* matmul.c */
extern const edge_op_registration edge_op_batch_matmul;      /* matmul.c */
extern const edge_op_registration edge_op_binary;            /* binary.c */
extern const edge_op_registration edge_op_unary;             /* unary.c */
extern const edge_op_registration edge_op_softmax;           /* softmax.c */
extern const edge_op_registration edge_op_layer_norm;        /* norm.c */
extern const edge_op_registration edge_op_lrn;               /* norm.c */
extern const edge_op_registration edge_op_pool2d;            /* pool.c */
extern const edge_op_registration edge_op_reduce;            /* reduce.c */
extern const edge_op_registration edge_op_reshape;           /* reshape.c */
extern const edge_op_registration edge_op_broadcast_to;      /* reshape.c */
extern const edge_op_registration edge_op_transpose;         /* transpose.c */
extern const edge_op_registration edge_op_concat;            /* concat_split.c */
extern const edge_op_registration edge_op_split;             /* concat_split.c */
extern const edge_op_registration edge_op_slice;             /* slice.c */
extern const edge_op_registration edge_op_gather;            /* gather.c */
extern const edge_op_registration edge_op_gather_elements;   /* gather.c */
extern const edge_op_registration edge_op_pad;               /* pad.c */
extern const edge_op_registration edge_op_resize;            /* resize.c */
extern const edge_op_registration edge_op_cast;              /* cast.c */
extern const edge_op_registration edge_op_where;             /* where.c */
extern const edge_op_registration edge_op_lstm;              /* rnn.c */
extern const edge_op_registration edge_op_gru;               /* rnn.c */
/* Training: gradients and optimizer updates */
extern const edge_op_registration edge_op_conv2d_backprop_input;   /* conv_grad.c */
extern const edge_op_registration edge_op_conv2d_backprop_filter;  /* conv_grad.c */
extern const edge_op_registration edge_op_pool2d_grad;             /* pool_grad.c */
extern const edge_op_registration edge_op_activation_grad;         /* activation_grad.c */
extern const edge_op_registration edge_op_loss;                    /* loss.c */
extern const edge_op_registration edge_op_layer_norm_grad;         /* norm_grad.c */
extern const edge_op_registration edge_op_batch_norm_train;        /* norm_grad.c */
extern const edge_op_registration edge_op_batch_norm_grad;         /* norm_grad.c */
extern const edge_op_registration edge_op_gather_grad;             /* gather_grad.c */
extern const edge_op_registration edge_op_optimizer_update;        /* optimizer.c */
extern const edge_op_registration edge_op_clip_by_global_norm;     /* optimizer.c */
extern const edge_op_registration edge_op_quantize;          /* quantize.c */
extern const edge_op_registration edge_op_dequantize;        /* quantize.c */
extern const edge_op_registration edge_op_trilu;             /* trilu.c */
extern const edge_op_registration edge_op_cumsum;            /* cumsum.c */
extern const edge_op_registration edge_op_arg_max;           /* arg_reduce.c */
extern const edge_op_registration edge_op_arg_min;           /* arg_reduce.c */
extern const edge_op_registration edge_op_top_k;             /* topk.c */
extern const edge_op_registration edge_op_gather_nd;         /* gather_nd.c */
extern const edge_op_registration edge_op_scatter_nd;        /* scatter.c */
extern const edge_op_registration edge_op_scatter_elements;  /* scatter.c */
extern const edge_op_registration edge_op_non_max_suppression; /* nms.c */
extern const edge_op_registration edge_op_roi_align;         /* roi_align.c */
extern const edge_op_registration edge_op_attention;         /* attention.c */
extern const edge_op_registration edge_op_grid_sample;       /* grid_sample.c */
extern const edge_op_registration edge_op_bitcast;           /* cast.c */
extern const edge_op_registration edge_op_det;               /* det.c */

#endif

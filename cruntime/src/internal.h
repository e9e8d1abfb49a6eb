/* Internal structures shared by the loader, the interpreter and the op kernels.
 *
 * Op contract (TFLite Micro's split): prepare() validates dtypes and ranks, computes every output's
 * shape from its inputs' shapes (writing tensors[out].rank/shape), computes whatever eval needs
 * (node->plan, malloc'd; freed by release()) and asks for scratch (node->scratch_bytes). eval()
 * only computes: no malloc, no validation of the model, but it must still check data-dependent
 * values (gather indices) and return EDGE_RUNTIME_ERROR with a message instead of reading out of
 * bounds.
 */
#ifndef EDGE_INTERNAL_H
#define EDGE_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edge.h"
#include "kernels/common.h"
#include "schema_enums.h"

#define EDGE_ERROR_CAPACITY 512

/* ---- parsed operator options (defaults filled in by the loader) ---- */

typedef struct { int32_t strides[2], dilations[2], pads[4], groups, output_padding[2]; } edge_conv2d_options;
typedef struct { bool transpose_a, transpose_b; } edge_batch_matmul_options;
typedef struct { edge_binary_kind op; } edge_binary_options;
typedef struct { edge_unary_kind op; float alpha, beta; } edge_unary_options;
typedef struct { int32_t axis; bool log; } edge_softmax_options;
typedef struct { int32_t axis; float epsilon; bool rms; } edge_layer_norm_options;
typedef struct {
  edge_pool_kind type;
  int32_t kernel[2], strides[2], dilations[2], pads[4];
  bool count_include_pad, ceil_mode;
} edge_pool2d_options;
typedef struct { edge_reduce_kind op; int32_t num_axes; int32_t axes[EDGE_MAX_RANK]; bool keepdims; } edge_reduce_options;
typedef struct { int32_t rank; int32_t perm[EDGE_MAX_RANK]; } edge_transpose_options;
typedef struct { int32_t axis; } edge_axis_options;
/* With has_ends_from, ends_from[d] >= 0 makes dim d's end that axis of the second input at run time
 * (start 0, step 1), and -1 keeps ends[d]. */
typedef struct {
  int32_t rank;
  bool has_ends_from;
  int64_t starts[EDGE_MAX_RANK], ends[EDGE_MAX_RANK], steps[EDGE_MAX_RANK], ends_from[EDGE_MAX_RANK];
} edge_slice_options;
typedef struct { edge_pad_kind mode; int32_t rank; int64_t pads[2 * EDGE_MAX_RANK]; float value; } edge_pad_options;
typedef struct {
  edge_resize_kind mode;
  edge_coord_kind coordinate_mode;
  edge_nearest_kind nearest_mode;
  int32_t rank;
  float scales[EDGE_MAX_RANK];
  float cubic_coeff_a;                  /* CUBIC only */
  bool exclude_outside;                 /* CUBIC only */
} edge_resize_options;
typedef struct { int32_t hidden_size; edge_rnn_kind direction; float clip; bool linear_before_reset; } edge_rnn_options;
typedef struct { int32_t size; float alpha, beta, bias; } edge_lrn_options;
typedef struct { edge_loss_kind kind; } edge_loss_options;
typedef struct { float epsilon, momentum; } edge_batch_norm_options;
typedef struct {
  edge_optimizer_kind kind;
  float momentum, beta1, beta2, epsilon, weight_decay;
  bool nesterov, sparse;
} edge_optimizer_options;
typedef struct { float max_norm; } edge_clip_options;
typedef struct { bool upper; int64_t k; } edge_trilu_options;
typedef struct { bool saturate; edge_cast_round_kind round_mode; } edge_cast_options;
typedef struct { int32_t axis; bool exclusive, reverse, product; } edge_cumsum_options;
typedef struct { int32_t axis; bool keepdims, select_last_index; } edge_arg_options;
typedef struct { int64_t k; int32_t axis; bool largest, sorted; } edge_top_k_options;
typedef struct { int32_t batch_dims; } edge_gather_nd_options;
typedef struct { int32_t axis; edge_scatter_kind reduction; } edge_scatter_options;
typedef struct {
  bool center_point_box, has_score_threshold;
  int64_t max_output_boxes_per_class;
  float iou_threshold, score_threshold;
} edge_nms_options;
typedef struct {
  edge_roi_align_kind mode;
  int32_t output_height, output_width, sampling_ratio;
  float spatial_scale;
  bool half_pixel;
} edge_roi_align_options;
typedef struct {
  float scale, softcap;                 /* scale 0: 1 / sqrt(head size); softcap 0: none */
  edge_causal_kind causal;
  bool k_transposed;
} edge_attention_options;
typedef struct {
  edge_resize_kind mode;                /* NEAREST, LINEAR or CUBIC */
  edge_grid_padding_kind padding;
  bool align_corners;
} edge_grid_sample_options;

typedef union {
  edge_conv2d_options conv2d;           /* CONV_2D, CONV_TRANSPOSE_2D, CONV_2D_BACKPROP_* */
  edge_batch_matmul_options batch_matmul;
  edge_binary_options binary;
  edge_unary_options unary;
  edge_softmax_options softmax;
  edge_layer_norm_options layer_norm;
  edge_pool2d_options pool2d;
  edge_reduce_options reduce;
  edge_transpose_options transpose;
  edge_axis_options axis;               /* CONCAT, SPLIT, GATHER, GATHER_ELEMENTS */
  edge_slice_options slice;
  edge_pad_options pad;
  edge_resize_options resize;
  edge_rnn_options rnn;                 /* LSTM, GRU */
  edge_lrn_options lrn;
  edge_loss_options loss;
  edge_batch_norm_options batch_norm;   /* BATCH_NORM_TRAIN, BATCH_NORM_GRAD */
  edge_optimizer_options optimizer;     /* OPTIMIZER_UPDATE */
  edge_clip_options clip;               /* CLIP_BY_GLOBAL_NORM */
  edge_trilu_options trilu;
  edge_cumsum_options cumsum;
  edge_arg_options arg;                 /* ARG_MAX, ARG_MIN */
  edge_top_k_options top_k;
  edge_gather_nd_options gather_nd;
  edge_scatter_options scatter;         /* SCATTER_ND, SCATTER_ELEMENTS */
  edge_nms_options nms;                 /* NON_MAX_SUPPRESSION */
  edge_roi_align_options roi_align;
  edge_attention_options attention;
  edge_cast_options cast;
  edge_grid_sample_options grid_sample;
} edge_options;

/* ---- tensors and nodes ---- */

typedef struct {
  const char *name;
  edge_dtype dtype;
  edge_tensor_kind kind;
  int32_t rank;
  int64_t shape[EDGE_MAX_RANK];
  int32_t shape_signature[EDGE_MAX_RANK];
  int32_t declared_rank;                /* the shape stored in the file */
  int64_t declared_shape[EDGE_MAX_RANK];
  size_t nbytes;                        /* bytes of the current shape */
  void *data;                           /* arena, model bytes (constants) or persistent area */
  const void *initial;                  /* constants and variables: their bytes in the model */
  size_t initial_nbytes;
  int32_t num_quant_params;
  const float *scales;
  const int64_t *zero_points;
  int32_t quantized_dimension;
  bool folded;                          /* an activation its producer computed once at prepare (DEQUANTIZE
                                           of a constant): kind reads CONSTANT and data points into the
                                           producer's node->plan until the next allocate */
} edge_tensor;

typedef struct {
  edge_op_kind opcode;
  int32_t version;
  int32_t num_inputs, num_outputs;
  int32_t *inputs;                      /* -1: optional input left out */
  int32_t *outputs;
  edge_options options;
  edge_activation activation;
  uint64_t flops, bytes_in, bytes_out, bytes_weights;
  void *plan;                           /* what prepare computed for eval: set by prepare, freed by release */
  bool quantized;                       /* prepare picked the op's integer (int8 or dynamic) kernel,
                                           whose plan is in node->plan: eval and release go to it */
  size_t plan_bytes;                    /* large memory the plan keeps (packed weights), set by prepare:
                                           reported in edge_memory_info.persistent_bytes */
  size_t scratch_bytes;                 /* asked for by prepare */
  void *scratch;                        /* given to eval: EDGE_ALIGNMENT-aligned, uninitialised */
  uint64_t last_ns, total_ns, runs;     /* profiling */
  bool writes_variables;                /* eval may change a variable (an output is one, or it updates its
                                           inputs in place): the interpreter bumps variables_version */
  bool rows_set_at_eval;                /* set by prepare: eval sets its outputs' leading dim to the real
                                           count, at most the prepared one (NON_MAX_SUPPRESSION). The arena
                                           keeps the prepared size; other ops were prepared for that size,
                                           so allocate refuses a model where another op reads such an output */
} edge_node;

/* What a kernel sees while it prepares or runs. */
typedef struct {
  edge_tensor *tensors;
  int32_t num_tensors;
  edge_threadpool *pool;
  int32_t num_threads;
  char *error;                          /* EDGE_ERROR_CAPACITY bytes */
  /* Changes whenever a variable may have changed (set_tensor, tensor_data or reset_variables on
   * one, an op that writes one), so a kernel that keeps a packed copy of variable weights packs
   * again only when this differs from the value it packed at. */
  uint64_t variables_version;
  /* edge_interpreter_options.memory_limit (0: none): edge_set_shape refuses a tensor larger than this,
   * so an op fails in prepare before it builds tables or packs for a shape it could never run. */
  uint64_t memory_limit;
} edge_context;

typedef struct {
  edge_status (*prepare)(edge_context *ctx, edge_node *node);
  edge_status (*eval)(edge_context *ctx, edge_node *node);
  void (*release)(edge_node *node);     /* may be NULL */
} edge_op_registration;

/* The registration table, indexed by edge_op_kind (cruntime/src/ops/registry.c). NULL prepare:
 * the op is known to the schema but this runtime has no kernel. */
const edge_op_registration *edge_op_lookup(edge_op_kind opcode);

/* ---- helpers every part uses (cruntime/src/common.c) ---- */

/* Formats a message into ctx->error prefixed by nothing; returns status for `return edge_fail(...)`. */
edge_status edge_fail(edge_context *ctx, edge_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

int64_t edge_num_elements(int32_t rank, const int64_t *shape);
/* rank/shape of a, b broadcast together (numpy rules); EDGE_INVALID_MODEL with a message if they
 * do not broadcast. */
edge_status edge_broadcast_shape(edge_context *ctx, const edge_tensor *a, const edge_tensor *b,
                                 int32_t *rank, int64_t *shape);
/* Sets a tensor's shape and recomputes nbytes (fails on overflow). */
edge_status edge_set_shape(edge_context *ctx, edge_tensor *t, int32_t rank, const int64_t *shape);
void edge_format_shape(char *buf, size_t cap, int32_t rank, const int64_t *shape);

float edge_half_to_float(uint16_t h);
uint16_t edge_float_to_half(float f);

/* Bytes a tensor of `elements` elements holds: ceil(elements * bits / 8) (packed dtypes included). */
size_t edge_tensor_bytes(edge_dtype dtype, int64_t elements);

/* The narrow dtypes' element codecs (narrow.c). A code is one element's bits, in the low bits of a
 * byte for the packed dtypes. float8 and float4 decode exactly to float; encoding rounds to nearest
 * even (e8m0: by `round`), with ONNX Cast's saturate meaning for values past the largest finite one
 * (float4, which has no infinity, always saturates). The packed integers decode by sign extension;
 * from float they truncate toward zero, out-of-range values and NaN becoming 0. */
bool edge_is_narrow_float(edge_dtype dtype);
float edge_narrow_to_float(edge_dtype dtype, uint8_t code);
uint8_t edge_float_to_narrow(edge_dtype dtype, float value, bool saturate, edge_cast_round_kind round);
int64_t edge_narrow_int_from_code(edge_dtype dtype, uint8_t code);
uint8_t edge_narrow_int_from_float(edge_dtype dtype, float value);
/* Element `index` of a packed buffer of `bits`-bit elements, low bits of each byte first. */
uint8_t edge_packed_get(const void *data, int64_t index, int32_t bits);
void edge_packed_set(void *data, int64_t index, int32_t bits, uint8_t code);

#endif

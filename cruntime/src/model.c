/* The model loader: verifies an untrusted .edge file completely and parses it into edge_model.
 *
 * Order of checks: the FlatBuffer structure of each table is verified by fb.c as it is reached;
 * then values: versions, buffers, tensors, operators (opcodes, options, indices), graph order,
 * signatures. Malformed input is EDGE_INVALID_MODEL; a well-formed file that needs something this
 * runtime lacks (a newer schema, an unknown opcode or enum value, rank > EDGE_MAX_RANK) is
 * EDGE_UNSUPPORTED. Every message names the thing at fault. */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* madvise */

#include "model.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fb.h"
#include "schema_fields.h"

/* Element counts are bounded so that byte sizes and sums of a few of them never overflow. */
#define MODEL_MAX_ELEMENTS ((int64_t)1 << 46)


/* The options table each opcode takes (NONE: the op has no options). */
static int expected_options(edge_op_kind opcode) {
  switch (opcode) {
    case EDGE_OP_CONV_2D: case EDGE_OP_CONV_TRANSPOSE_2D: return EDGE_OPTIONS_CONV2D;
    /* The training ops carry their forward op's options. */
    case EDGE_OP_CONV_2D_BACKPROP_INPUT: case EDGE_OP_CONV_2D_BACKPROP_FILTER: return EDGE_OPTIONS_CONV2D;
    case EDGE_OP_POOL_2D_GRAD: return EDGE_OPTIONS_POOL2D;
    case EDGE_OP_ACTIVATION_GRAD: return EDGE_OPTIONS_UNARY;
    case EDGE_OP_LAYER_NORM_GRAD: return EDGE_OPTIONS_LAYER_NORM;
    case EDGE_OP_GATHER_GRAD: return EDGE_OPTIONS_AXIS;
    case EDGE_OP_LOSS: return EDGE_OPTIONS_LOSS;
    case EDGE_OP_BATCH_NORM_TRAIN: case EDGE_OP_BATCH_NORM_GRAD: return EDGE_OPTIONS_BATCH_NORM;
    case EDGE_OP_OPTIMIZER_UPDATE: return EDGE_OPTIONS_OPTIMIZER;
    case EDGE_OP_CLIP_BY_GLOBAL_NORM: return EDGE_OPTIONS_CLIP;
    case EDGE_OP_BATCH_MATMUL: return EDGE_OPTIONS_BATCH_MAT_MUL;
    case EDGE_OP_BINARY: return EDGE_OPTIONS_BINARY;
    case EDGE_OP_UNARY: return EDGE_OPTIONS_UNARY;
    case EDGE_OP_SOFTMAX: return EDGE_OPTIONS_SOFTMAX;
    case EDGE_OP_LAYER_NORM: return EDGE_OPTIONS_LAYER_NORM;
    case EDGE_OP_POOL_2D: return EDGE_OPTIONS_POOL2D;
    case EDGE_OP_REDUCE: return EDGE_OPTIONS_REDUCE;
    case EDGE_OP_TRANSPOSE: return EDGE_OPTIONS_TRANSPOSE;
    case EDGE_OP_CONCAT: case EDGE_OP_SPLIT: case EDGE_OP_GATHER: case EDGE_OP_GATHER_ELEMENTS: return EDGE_OPTIONS_AXIS;
    case EDGE_OP_SLICE: return EDGE_OPTIONS_SLICE;
    case EDGE_OP_PAD: return EDGE_OPTIONS_PAD;
    case EDGE_OP_RESIZE: return EDGE_OPTIONS_RESIZE;
    case EDGE_OP_LSTM: case EDGE_OP_GRU: return EDGE_OPTIONS_RNN;
    case EDGE_OP_LRN: return EDGE_OPTIONS_LRN;
    case EDGE_OP_TRILU: return EDGE_OPTIONS_TRILU;
    case EDGE_OP_CUMSUM: return EDGE_OPTIONS_CUM_SUM;
    case EDGE_OP_ARG_MAX: case EDGE_OP_ARG_MIN: return EDGE_OPTIONS_ARG;
    case EDGE_OP_TOP_K: return EDGE_OPTIONS_TOP_K;
    case EDGE_OP_GATHER_ND: return EDGE_OPTIONS_GATHER_ND;
    case EDGE_OP_SCATTER_ND: case EDGE_OP_SCATTER_ELEMENTS: return EDGE_OPTIONS_SCATTER;
    case EDGE_OP_NON_MAX_SUPPRESSION: return EDGE_OPTIONS_NON_MAX_SUPPRESSION;
    case EDGE_OP_ROI_ALIGN: return EDGE_OPTIONS_ROI_ALIGN;
    case EDGE_OP_ATTENTION: return EDGE_OPTIONS_ATTENTION;
    case EDGE_OP_CAST: return EDGE_OPTIONS_CAST;
    case EDGE_OP_GRID_SAMPLE: return EDGE_OPTIONS_GRID_SAMPLE;
    default: return EDGE_OPTIONS_NONE;
  }
}

struct edge_model_block {
  edge_model_block *next;
  max_align_t data[];
};

typedef struct {
  uint64_t offset, size;
  bool checked;
} loader_buffer;

typedef struct {
  edge_op_kind opcode;
  uint16_t raw_opcode;
  int32_t version;
  const char *custom_name;
} loader_code;

typedef struct {
  edge_model *model;
  fb_reader reader;
  uint32_t num_buffers;
  loader_buffer *buffers;
  uint32_t num_codes;
  loader_code *codes;
  int32_t *graph_input_of;              /* per tensor: 1 if a graph input */
} loader;

/* Zeroed memory owned by the model; NULL on overflow or exhaustion. */
static void *model_alloc(edge_model *m, size_t count, size_t size) {
  if (size && count > (SIZE_MAX - sizeof(edge_model_block)) / size) return NULL;
  edge_model_block *block = calloc(1, sizeof(edge_model_block) + (count * size != 0 ? count * size : 1));
  if (!block) return NULL;
  block->next = m->blocks;
  m->blocks = block;
  return block->data;
}

#define ALLOC_OR_FAIL(ptr, count, type)                                                            \
  do {                                                                                             \
    (ptr) = (type *)model_alloc(L->model, (size_t)(count), sizeof(type));                          \
    if (!(ptr)) return edge_set_last_error(EDGE_OUT_OF_MEMORY, "out of memory while loading the model"); \
  } while (0)

/* Turns a reader failure into a message that names what was being read. */
static edge_status structure_error(loader *L, const char *where) {
  return edge_set_last_error(EDGE_INVALID_MODEL, "%s: %s", where, L->reader.message);
}

#define READ_OR_FAIL(call, where)                  \
  do {                                             \
    if (!(call)) return structure_error(L, where); \
  } while (0)

static const char *op_name(edge_op_kind opcode) {
  return (int)opcode >= 0 && (int)opcode < EDGE_OP_COUNT_ ? edge_op_names[opcode] : "?";
}

/* ---- buffers ---- */

static edge_status parse_buffers(loader *L, const fb_table *root) {
  fb_vector buffers;
  READ_OR_FAIL(fb_vector_field(&L->reader, root, FIELD_MODEL_BUFFERS, 4, &buffers), "model buffers");
  L->num_buffers = buffers.length;
  ALLOC_OR_FAIL(L->buffers, buffers.length, loader_buffer);
  for (uint32_t i = 0; i < buffers.length; ++i) {
    char where[64];
    snprintf(where, sizeof where, "buffer %u", i);
    fb_table buffer;
    READ_OR_FAIL(fb_vector_table(&L->reader, &buffers, i, &buffer), where);
    READ_OR_FAIL(fb_u64(&L->reader, &buffer, FIELD_BUFFER_OFFSET, &L->buffers[i].offset), where);
    READ_OR_FAIL(fb_u64(&L->reader, &buffer, FIELD_BUFFER_SIZE, &L->buffers[i].size), where);
  }
  if (L->num_buffers > 0 && L->buffers[0].size != 0)
    return edge_set_last_error(EDGE_INVALID_MODEL, "buffer 0 must be the empty sentinel but holds %llu bytes",
                               (unsigned long long)L->buffers[0].size);
  return EDGE_OK;
}

/* prefix names the tensor that uses the buffer ("tensor 'w' (3): "), or is empty. */
static edge_status check_buffer(loader *L, uint32_t index, const char *prefix) {
  loader_buffer *b = &L->buffers[index];
  if (b->checked || b->size == 0) return EDGE_OK;
  size_t file_size = L->model->size;
  if (b->offset > file_size || b->size > file_size - b->offset)
    return edge_set_last_error(EDGE_INVALID_MODEL, "%sbuffer %u ends at byte %llu, past the %zu-byte file", prefix,
                               index, (unsigned long long)b->offset + (unsigned long long)b->size, file_size);
  if (b->offset % EDGE_ALIGNMENT != 0)
    return edge_set_last_error(EDGE_INVALID_MODEL, "%sbuffer %u starts at byte %llu, not %d-byte aligned", prefix,
                               index, (unsigned long long)b->offset, EDGE_ALIGNMENT);
  b->checked = true;
  return EDGE_OK;
}

/* ---- tensors ---- */

static edge_status parse_quantization(loader *L, const fb_table *q, edge_model_tensor *t, const char *where) {
  fb_vector scales, zero_points;
  READ_OR_FAIL(fb_vector_field(&L->reader, q, FIELD_QUANTIZATION_SCALE, 4, &scales), where);
  READ_OR_FAIL(fb_vector_field(&L->reader, q, FIELD_QUANTIZATION_ZERO_POINT, 8, &zero_points), where);
  int32_t dimension = 0;
  READ_OR_FAIL(fb_i32(&L->reader, q, FIELD_QUANTIZATION_QUANTIZED_DIMENSION, &dimension), where);
  /* One zero point with several scales: the channels share it (what symmetric per-channel weights
   * and int32 biases write, 8 bytes instead of 8 per channel). */
  if (scales.length != zero_points.length && zero_points.length != 1)
    return edge_set_last_error(EDGE_INVALID_MODEL, "%s: quantization has %u scales but %u zero points", where,
                               scales.length, zero_points.length);
  if (scales.length == 0) return EDGE_OK;
  if (dimension < 0 || (t->rank > 0 ? dimension >= t->rank : dimension != 0))
    return edge_set_last_error(EDGE_INVALID_MODEL, "%s: quantized dimension %d is outside rank %d", where, dimension,
                               t->rank);
  if (scales.length != 1 && (t->rank == 0 || (int64_t)scales.length != t->shape[dimension]))
    return edge_set_last_error(EDGE_INVALID_MODEL,
                               "%s: %u quantization scales, expected 1 or the size of dimension %d (%lld)", where,
                               scales.length, dimension, t->rank ? (long long)t->shape[dimension] : 0LL);
  ALLOC_OR_FAIL(t->scales, scales.length, float);
  ALLOC_OR_FAIL(t->zero_points, scales.length, int64_t);
  for (uint32_t i = 0; i < scales.length; ++i) {
    t->scales[i] = fb_vector_f32(&L->reader, &scales, i);
    t->zero_points[i] = fb_vector_i64(&L->reader, &zero_points, zero_points.length == 1 ? 0 : i);
    if (!isfinite(t->scales[i]) || t->scales[i] < 0)
      return edge_set_last_error(EDGE_INVALID_MODEL, "%s: quantization scale %u is %g", where, i, t->scales[i]);
    int64_t zp = t->zero_points[i];
    if ((t->dtype == EDGE_INT8 && (zp < -128 || zp > 127)) || (t->dtype == EDGE_UINT8 && (zp < 0 || zp > 255)))
      return edge_set_last_error(EDGE_INVALID_MODEL, "%s: zero point %lld does not fit %s", where, (long long)zp,
                                 edge_dtype_name(t->dtype));
  }
  t->num_quant_params = (int32_t)scales.length;
  t->quantized_dimension = dimension;
  return EDGE_OK;
}

static edge_status parse_tensor(loader *L, const fb_table *table, int32_t index, edge_model_tensor *t) {
  char where[160];
  snprintf(where, sizeof where, "tensor %d", index);
  READ_OR_FAIL(fb_string_field(&L->reader, table, FIELD_TENSOR_NAME, &t->name), where);
  if (!t->name) t->name = "";
  snprintf(where, sizeof where, "tensor '%.100s' (%d)", t->name, index);

  fb_vector shape, signature;
  READ_OR_FAIL(fb_vector_field(&L->reader, table, FIELD_TENSOR_SHAPE, 4, &shape), where);
  READ_OR_FAIL(fb_vector_field(&L->reader, table, FIELD_TENSOR_SHAPE_SIGNATURE, 4, &signature), where);
  if (shape.length > EDGE_MAX_RANK)
    return edge_set_last_error(EDGE_UNSUPPORTED, "%s: rank %u exceeds this runtime's maximum of %d", where,
                               shape.length, EDGE_MAX_RANK);
  t->rank = (int32_t)shape.length;
  int64_t elements = 1;
  for (int32_t d = 0; d < t->rank; ++d) {
    int32_t dim = fb_vector_i32(&L->reader, &shape, (uint32_t)d);
    if (dim < 0) return edge_set_last_error(EDGE_INVALID_MODEL, "%s: dimension %d is %d", where, d, dim);
    if (dim > 0 && elements > MODEL_MAX_ELEMENTS / dim)
      return edge_set_last_error(EDGE_INVALID_MODEL, "%s: shape has more than 2^46 elements", where);
    elements *= dim;
    t->shape[d] = dim;
    t->shape_signature[d] = dim;
  }
  if (signature.length != 0) {
    if (signature.length != shape.length)
      return edge_set_last_error(EDGE_INVALID_MODEL, "%s: shape_signature has %u dimensions but shape has %u", where,
                                 signature.length, shape.length);
    for (int32_t d = 0; d < t->rank; ++d) {
      int32_t s = fb_vector_i32(&L->reader, &signature, (uint32_t)d);
      if (s != -1 && s != t->shape[d])
        return edge_set_last_error(EDGE_INVALID_MODEL, "%s: shape_signature[%d] is %d but the shape says %lld", where,
                                   d, s, (long long)t->shape[d]);
      t->shape_signature[d] = s;
    }
  }

  int8_t dtype = 0;
  READ_OR_FAIL(fb_i8(&L->reader, table, FIELD_TENSOR_DTYPE, &dtype), where);
  if (dtype < 0) return edge_set_last_error(EDGE_INVALID_MODEL, "%s: dtype %d is negative", where, dtype);
  if (dtype > EDGE_UINT2) return edge_set_last_error(EDGE_UNSUPPORTED, "%s: dtype %d is unknown to this runtime", where, dtype);
  t->dtype = (edge_dtype)dtype;
  t->nbytes = edge_tensor_bytes(t->dtype, elements);

  uint32_t buffer = 0;
  bool is_variable = false;
  READ_OR_FAIL(fb_u32(&L->reader, table, FIELD_TENSOR_BUFFER, &buffer), where);
  READ_OR_FAIL(fb_bool(&L->reader, table, FIELD_TENSOR_IS_VARIABLE, &is_variable), where);
  if (buffer != 0 && buffer >= L->num_buffers)
    return edge_set_last_error(EDGE_INVALID_MODEL, "%s: buffer index %u is out of range (%u buffers)", where, buffer,
                               L->num_buffers);
  t->kind = is_variable ? EDGE_TENSOR_VARIABLE : buffer != 0 ? EDGE_TENSOR_CONSTANT : EDGE_TENSOR_ACTIVATION;
  if (t->kind != EDGE_TENSOR_ACTIVATION) {
    for (int32_t d = 0; d < t->rank; ++d)
      if (t->shape_signature[d] == -1)
        return edge_set_last_error(EDGE_INVALID_MODEL, "%s: a %s cannot have a dynamic dimension (%d)", where,
                                   is_variable ? "variable" : "constant", d);
  }
  if (buffer != 0) {
    char prefix[200];
    snprintf(prefix, sizeof prefix, "%s: ", where);
    edge_status status = check_buffer(L, buffer, prefix);
    if (status != EDGE_OK) return status;
    const loader_buffer *b = &L->buffers[buffer];
    if (b->size != t->nbytes)
      return edge_set_last_error(EDGE_INVALID_MODEL, "%s: buffer %u holds %llu bytes but the %s tensor needs %zu", where,
                                 buffer, (unsigned long long)b->size, edge_dtype_name(t->dtype), t->nbytes);
    t->data = b->size ? L->model->bytes + b->offset : NULL;
  }

  fb_table quantization;
  bool has_quantization;
  READ_OR_FAIL(fb_subtable(&L->reader, table, FIELD_TENSOR_QUANTIZATION, &quantization, &has_quantization), where);
  if (has_quantization) return parse_quantization(L, &quantization, t, where);
  return EDGE_OK;
}

/* ---- operator options ---- */

/* Reads an int vector of exactly `want` entries (or none: *len = 0); max_len bounds the any-length case. */
static edge_status read_ints(loader *L, const fb_table *t, int field, uint32_t want, uint32_t max_len, int32_t *out,
                             uint32_t *len, const char *where, const char *what) {
  fb_vector v;
  READ_OR_FAIL(fb_vector_field(&L->reader, t, field, 4, &v), where);
  if (v.length != 0 && want != 0 && v.length != want)
    return edge_set_last_error(EDGE_INVALID_MODEL, "%s: %s has %u entries, expected %u", where, what, v.length, want);
  if (v.length > max_len)
    return edge_set_last_error(EDGE_INVALID_MODEL, "%s: %s has %u entries, at most %u allowed", where, what, v.length,
                               max_len);
  for (uint32_t i = 0; i < v.length; ++i) out[i] = fb_vector_i32(&L->reader, &v, i);
  if (len) *len = v.length;
  return EDGE_OK;
}

static edge_status read_longs(loader *L, const fb_table *t, int field, uint32_t max_len, int64_t *out, uint32_t *len,
                              const char *where, const char *what) {
  fb_vector v;
  READ_OR_FAIL(fb_vector_field(&L->reader, t, field, 8, &v), where);
  if (v.length > max_len)
    return edge_set_last_error(EDGE_INVALID_MODEL, "%s: %s has %u entries, at most %u allowed", where, what, v.length,
                               max_len);
  for (uint32_t i = 0; i < v.length; ++i) out[i] = fb_vector_i64(&L->reader, &v, i);
  *len = v.length;
  return EDGE_OK;
}

#define TRY(expr)                          \
  do {                                     \
    edge_status status_ = (expr);          \
    if (status_ != EDGE_OK) return status_; \
  } while (0)

static edge_status check_enum(int value, int count, const char *where, const char *what) {
  if (value < 0) return edge_set_last_error(EDGE_INVALID_MODEL, "%s: %s %d is negative", where, what, value);
  if (value >= count)
    return edge_set_last_error(EDGE_UNSUPPORTED, "%s: %s %d is unknown to this runtime", where, what, value);
  return EDGE_OK;
}

static edge_status check_positive(const int32_t *v, int n, const char *where, const char *what) {
  for (int i = 0; i < n; ++i)
    if (v[i] <= 0) return edge_set_last_error(EDGE_INVALID_MODEL, "%s: %s[%d] is %d, must be positive", where, what, i, v[i]);
  return EDGE_OK;
}

static edge_status check_non_negative(const int32_t *v, int n, const char *where, const char *what) {
  for (int i = 0; i < n; ++i)
    if (v[i] < 0) return edge_set_last_error(EDGE_INVALID_MODEL, "%s: %s[%d] is %d, must be >= 0", where, what, i, v[i]);
  return EDGE_OK;
}

static edge_status check_finite(float v, const char *where, const char *what) {
  if (!isfinite(v)) return edge_set_last_error(EDGE_INVALID_MODEL, "%s: %s is not finite", where, what);
  return EDGE_OK;
}

/* Fills options with the schema's defaults (schema_fields.h), then overrides them from the table when
 * present; slots are the generated FIELD_<TABLE>_<FIELD>. */
static edge_status parse_options(loader *L, int type, const fb_table *t, bool present, edge_options *o,
                                 const char *where) {
  fb_reader *r = &L->reader;
  int8_t e = 0;
  memset(o, 0, sizeof *o);
#define FIELD(call) READ_OR_FAIL(!present || (call), where)
  switch (type) {
    case EDGE_OPTIONS_CONV2D: {
      edge_conv2d_options *c = &o->conv2d;
      c->strides[0] = c->strides[1] = c->dilations[0] = c->dilations[1] = 1;
      c->groups = FIELD_DEFAULT_CONV2D_OPTIONS_GROUPS;
      if (present) {
        TRY(read_ints(L, t, FIELD_CONV2D_OPTIONS_STRIDES, 2, 2, c->strides, NULL, where, "strides"));
        TRY(read_ints(L, t, FIELD_CONV2D_OPTIONS_DILATIONS, 2, 2, c->dilations, NULL, where, "dilations"));
        TRY(read_ints(L, t, FIELD_CONV2D_OPTIONS_PADS, 4, 4, c->pads, NULL, where, "pads"));
        FIELD(fb_i32(r, t, FIELD_CONV2D_OPTIONS_GROUPS, &c->groups));
        TRY(read_ints(L, t, FIELD_CONV2D_OPTIONS_OUTPUT_PADDING, 2, 2, c->output_padding, NULL, where, "output_padding"));
      }
      TRY(check_positive(c->strides, 2, where, "strides"));
      TRY(check_positive(c->dilations, 2, where, "dilations"));
      TRY(check_positive(&c->groups, 1, where, "groups"));
      TRY(check_non_negative(c->pads, 4, where, "pads"));
      TRY(check_non_negative(c->output_padding, 2, where, "output_padding"));
      break;
    }
    case EDGE_OPTIONS_BATCH_MAT_MUL:
      FIELD(fb_bool(r, t, FIELD_BATCH_MAT_MUL_OPTIONS_TRANSPOSE_A, &o->batch_matmul.transpose_a));
      FIELD(fb_bool(r, t, FIELD_BATCH_MAT_MUL_OPTIONS_TRANSPOSE_B, &o->batch_matmul.transpose_b));
      break;
    case EDGE_OPTIONS_BINARY:
      FIELD(fb_i8(r, t, FIELD_BINARY_OPTIONS_OP, &e));
      TRY(check_enum(e, EDGE_BINARY_COUNT_, where, "binary op"));
      o->binary.op = (edge_binary_kind)e;
      break;
    case EDGE_OPTIONS_UNARY:
      FIELD(fb_i8(r, t, FIELD_UNARY_OPTIONS_OP, &e));
      FIELD(fb_f32(r, t, FIELD_UNARY_OPTIONS_ALPHA, &o->unary.alpha));
      FIELD(fb_f32(r, t, FIELD_UNARY_OPTIONS_BETA, &o->unary.beta));
      TRY(check_enum(e, EDGE_UNARY_COUNT_, where, "unary op"));
      o->unary.op = (edge_unary_kind)e;
      break;
    case EDGE_OPTIONS_SOFTMAX:
      o->softmax.axis = FIELD_DEFAULT_SOFTMAX_OPTIONS_AXIS;
      FIELD(fb_i32(r, t, FIELD_SOFTMAX_OPTIONS_AXIS, &o->softmax.axis));
      FIELD(fb_bool(r, t, FIELD_SOFTMAX_OPTIONS_LOG, &o->softmax.log));
      break;
    case EDGE_OPTIONS_LAYER_NORM:
      o->layer_norm.axis = FIELD_DEFAULT_LAYER_NORM_OPTIONS_AXIS;
      o->layer_norm.epsilon = FIELD_DEFAULT_LAYER_NORM_OPTIONS_EPSILON;
      FIELD(fb_i32(r, t, FIELD_LAYER_NORM_OPTIONS_AXIS, &o->layer_norm.axis));
      FIELD(fb_f32(r, t, FIELD_LAYER_NORM_OPTIONS_EPSILON, &o->layer_norm.epsilon));
      FIELD(fb_bool(r, t, FIELD_LAYER_NORM_OPTIONS_RMS, &o->layer_norm.rms));
      TRY(check_finite(o->layer_norm.epsilon, where, "epsilon"));
      break;
    case EDGE_OPTIONS_POOL2D: {
      edge_pool2d_options *p = &o->pool2d;
      p->strides[0] = p->strides[1] = p->dilations[0] = p->dilations[1] = 1;
      uint32_t kernel_len = 0;
      if (present) {
        FIELD(fb_i8(r, t, FIELD_POOL2D_OPTIONS_TYPE, &e));
        TRY(read_ints(L, t, FIELD_POOL2D_OPTIONS_KERNEL, 2, 2, p->kernel, &kernel_len, where, "kernel"));
        TRY(read_ints(L, t, FIELD_POOL2D_OPTIONS_STRIDES, 2, 2, p->strides, NULL, where, "strides"));
        TRY(read_ints(L, t, FIELD_POOL2D_OPTIONS_DILATIONS, 2, 2, p->dilations, NULL, where, "dilations"));
        TRY(read_ints(L, t, FIELD_POOL2D_OPTIONS_PADS, 4, 4, p->pads, NULL, where, "pads"));
        FIELD(fb_bool(r, t, FIELD_POOL2D_OPTIONS_COUNT_INCLUDE_PAD, &p->count_include_pad));
        FIELD(fb_bool(r, t, FIELD_POOL2D_OPTIONS_CEIL_MODE, &p->ceil_mode));
      }
      TRY(check_enum(e, EDGE_POOL_COUNT_, where, "pool type"));
      p->type = (edge_pool_kind)e;
      if (kernel_len != 2) return edge_set_last_error(EDGE_INVALID_MODEL, "%s: pool kernel [h, w] is missing", where);
      TRY(check_positive(p->kernel, 2, where, "kernel"));
      TRY(check_positive(p->strides, 2, where, "strides"));
      TRY(check_positive(p->dilations, 2, where, "dilations"));
      TRY(check_non_negative(p->pads, 4, where, "pads"));
      break;
    }
    case EDGE_OPTIONS_REDUCE: {
      edge_reduce_options *p = &o->reduce;
      p->keepdims = FIELD_DEFAULT_REDUCE_OPTIONS_KEEPDIMS;
      uint32_t n = 0;
      if (present) {
        FIELD(fb_i8(r, t, FIELD_REDUCE_OPTIONS_OP, &e));
        TRY(read_ints(L, t, FIELD_REDUCE_OPTIONS_AXES, 0, EDGE_MAX_RANK, p->axes, &n, where, "axes"));
        FIELD(fb_bool(r, t, FIELD_REDUCE_OPTIONS_KEEPDIMS, &p->keepdims));
      }
      TRY(check_enum(e, EDGE_REDUCE_COUNT_, where, "reduce op"));
      p->op = (edge_reduce_kind)e;
      p->num_axes = (int32_t)n;
      break;
    }
    case EDGE_OPTIONS_TRANSPOSE: {
      uint32_t n = 0;
      if (present) TRY(read_ints(L, t, FIELD_TRANSPOSE_OPTIONS_PERM, 0, EDGE_MAX_RANK, o->transpose.perm, &n, where, "perm"));
      o->transpose.rank = (int32_t)n;
      bool seen[EDGE_MAX_RANK] = {false};
      for (uint32_t i = 0; i < n; ++i) {
        int32_t p = o->transpose.perm[i];
        if (p < 0 || (uint32_t)p >= n || seen[p])
          return edge_set_last_error(EDGE_INVALID_MODEL, "%s: perm is not a permutation of 0..%u", where, n ? n - 1 : 0);
        seen[p] = true;
      }
      break;
    }
    case EDGE_OPTIONS_AXIS:
      FIELD(fb_i32(r, t, FIELD_AXIS_OPTIONS_AXIS, &o->axis.axis));
      break;
    case EDGE_OPTIONS_SLICE: {
      edge_slice_options *s = &o->slice;
      uint32_t ns = 0, ne = 0, nsteps = 0, nfrom = 0;
      if (present) {
        TRY(read_longs(L, t, FIELD_SLICE_OPTIONS_STARTS, EDGE_MAX_RANK, s->starts, &ns, where, "starts"));
        TRY(read_longs(L, t, FIELD_SLICE_OPTIONS_ENDS, EDGE_MAX_RANK, s->ends, &ne, where, "ends"));
        TRY(read_longs(L, t, FIELD_SLICE_OPTIONS_STEPS, EDGE_MAX_RANK, s->steps, &nsteps, where, "steps"));
        TRY(read_longs(L, t, FIELD_SLICE_OPTIONS_ENDS_FROM, EDGE_MAX_RANK, s->ends_from, &nfrom, where, "ends_from"));
      }
      if (ns != ne || (nsteps != 0 && nsteps != ns) || (nfrom != 0 && nfrom != ns))
        return edge_set_last_error(EDGE_INVALID_MODEL, "%s: slice has %u starts, %u ends, %u steps and %u ends_from",
                                   where, ns, ne, nsteps, nfrom);
      if (nsteps == 0)
        for (uint32_t i = 0; i < ns; ++i) s->steps[i] = 1;
      for (uint32_t i = 0; i < ns; ++i)
        if (s->steps[i] == 0) return edge_set_last_error(EDGE_INVALID_MODEL, "%s: slice step %u is 0", where, i);
      s->has_ends_from = nfrom != 0;
      for (uint32_t i = 0; i < ns && nfrom != 0; ++i) {
        if (s->ends_from[i] < -1 || s->ends_from[i] >= EDGE_MAX_RANK ||
            (s->ends_from[i] >= 0 && (s->starts[i] != 0 || s->steps[i] != 1)))
          return edge_set_last_error(EDGE_INVALID_MODEL,
                                     "%s: slice dim %u takes its end from axis %lld of the second input, which needs "
                                     "an axis in [0, %d), start 0 and step 1",
                                     where, i, (long long)s->ends_from[i], EDGE_MAX_RANK);
      }
      s->rank = (int32_t)ns;
      break;
    }
    case EDGE_OPTIONS_PAD: {
      edge_pad_options *p = &o->pad;
      uint32_t n = 0;
      if (present) {
        FIELD(fb_i8(r, t, FIELD_PAD_OPTIONS_MODE, &e));
        TRY(read_longs(L, t, FIELD_PAD_OPTIONS_PADS, 2 * EDGE_MAX_RANK, p->pads, &n, where, "pads"));
        FIELD(fb_f32(r, t, FIELD_PAD_OPTIONS_VALUE, &p->value));
      }
      TRY(check_enum(e, EDGE_PAD_COUNT_, where, "pad mode"));
      p->mode = (edge_pad_kind)e;
      if (n % 2 != 0)
        return edge_set_last_error(EDGE_INVALID_MODEL, "%s: pads has %u entries, expected begins then ends", where, n);
      for (uint32_t i = 0; i < n; ++i)
        if (p->pads[i] < -MODEL_MAX_ELEMENTS || p->pads[i] > MODEL_MAX_ELEMENTS)
          return edge_set_last_error(EDGE_INVALID_MODEL, "%s: pad %u is %lld", where, i, (long long)p->pads[i]);
      p->rank = (int32_t)(n / 2);
      break;
    }
    case EDGE_OPTIONS_RESIZE: {
      edge_resize_options *p = &o->resize;
      int8_t coord = 0, nearest = 0;
      fb_vector scales = {0, 0, 4};
      if (present) {
        FIELD(fb_i8(r, t, FIELD_RESIZE_OPTIONS_MODE, &e));
        FIELD(fb_i8(r, t, FIELD_RESIZE_OPTIONS_COORDINATE_MODE, &coord));
        FIELD(fb_i8(r, t, FIELD_RESIZE_OPTIONS_NEAREST_MODE, &nearest));
        READ_OR_FAIL(fb_vector_field(r, t, FIELD_RESIZE_OPTIONS_SCALES, 4, &scales), where);
      }
      p->cubic_coeff_a = FIELD_DEFAULT_RESIZE_OPTIONS_CUBIC_COEFF_A;
      p->exclude_outside = false;
      FIELD(fb_f32(r, t, FIELD_RESIZE_OPTIONS_CUBIC_COEFF_A, &p->cubic_coeff_a));
      FIELD(fb_bool(r, t, FIELD_RESIZE_OPTIONS_EXCLUDE_OUTSIDE, &p->exclude_outside));
      TRY(check_finite(p->cubic_coeff_a, where, "cubic_coeff_a"));
      TRY(check_enum(e, EDGE_RESIZE_COUNT_, where, "resize mode"));
      TRY(check_enum(coord, EDGE_COORD_COUNT_, where, "coordinate mode"));
      TRY(check_enum(nearest, EDGE_NEAREST_COUNT_, where, "nearest mode"));
      if (scales.length > EDGE_MAX_RANK)
        return edge_set_last_error(EDGE_INVALID_MODEL, "%s: %u resize scales, at most %d allowed", where, scales.length,
                                   EDGE_MAX_RANK);
      p->mode = (edge_resize_kind)e;
      p->coordinate_mode = (edge_coord_kind)coord;
      p->nearest_mode = (edge_nearest_kind)nearest;
      p->rank = (int32_t)scales.length;
      for (uint32_t i = 0; i < scales.length; ++i) {
        p->scales[i] = fb_vector_f32(r, &scales, i);
        if (!isfinite(p->scales[i]) || p->scales[i] <= 0)
          return edge_set_last_error(EDGE_INVALID_MODEL, "%s: resize scale %u is %g", where, i, p->scales[i]);
      }
      break;
    }
    case EDGE_OPTIONS_RNN: {
      edge_rnn_options *p = &o->rnn;
      if (present) {
        FIELD(fb_i32(r, t, FIELD_RNN_OPTIONS_HIDDEN_SIZE, &p->hidden_size));
        FIELD(fb_i8(r, t, FIELD_RNN_OPTIONS_DIRECTION, &e));
        FIELD(fb_f32(r, t, FIELD_RNN_OPTIONS_CLIP, &p->clip));
        FIELD(fb_bool(r, t, FIELD_RNN_OPTIONS_LINEAR_BEFORE_RESET, &p->linear_before_reset));
      }
      TRY(check_enum(e, EDGE_RNN_COUNT_, where, "rnn direction"));
      p->direction = (edge_rnn_kind)e;
      TRY(check_positive(&p->hidden_size, 1, where, "hidden_size"));
      if (!isfinite(p->clip) || p->clip < 0)
        return edge_set_last_error(EDGE_INVALID_MODEL, "%s: rnn clip is %g", where, p->clip);
      break;
    }
    case EDGE_OPTIONS_LRN: {
      edge_lrn_options *p = &o->lrn;
      p->bias = FIELD_DEFAULT_LRN_OPTIONS_BIAS;
      FIELD(fb_i32(r, t, FIELD_LRN_OPTIONS_SIZE, &p->size));
      FIELD(fb_f32(r, t, FIELD_LRN_OPTIONS_ALPHA, &p->alpha));
      FIELD(fb_f32(r, t, FIELD_LRN_OPTIONS_BETA, &p->beta));
      FIELD(fb_f32(r, t, FIELD_LRN_OPTIONS_BIAS, &p->bias));
      TRY(check_positive(&p->size, 1, where, "size"));
      TRY(check_finite(p->alpha, where, "alpha"));
      TRY(check_finite(p->beta, where, "beta"));
      TRY(check_finite(p->bias, where, "bias"));
      break;
    }
    case EDGE_OPTIONS_LOSS:
      FIELD(fb_i8(r, t, FIELD_LOSS_OPTIONS_KIND, &e));
      TRY(check_enum(e, EDGE_LOSS_COUNT_, where, "loss kind"));
      o->loss.kind = (edge_loss_kind)e;
      break;
    case EDGE_OPTIONS_BATCH_NORM: {
      edge_batch_norm_options *p = &o->batch_norm;
      p->epsilon = FIELD_DEFAULT_BATCH_NORM_OPTIONS_EPSILON;
      p->momentum = FIELD_DEFAULT_BATCH_NORM_OPTIONS_MOMENTUM;
      FIELD(fb_f32(r, t, FIELD_BATCH_NORM_OPTIONS_EPSILON, &p->epsilon));
      FIELD(fb_f32(r, t, FIELD_BATCH_NORM_OPTIONS_MOMENTUM, &p->momentum));
      if (!isfinite(p->epsilon) || p->epsilon < 0)
        return edge_set_last_error(EDGE_INVALID_MODEL, "%s: batch-norm epsilon is %g; it must be finite and >= 0",
                                   where, p->epsilon);
      if (!(p->momentum >= 0 && p->momentum <= 1))
        return edge_set_last_error(EDGE_INVALID_MODEL, "%s: batch-norm momentum is %g; it must be in [0, 1]", where,
                                   p->momentum);
      break;
    }
    case EDGE_OPTIONS_OPTIMIZER: {
      edge_optimizer_options *p = &o->optimizer;
      p->beta1 = FIELD_DEFAULT_OPTIMIZER_OPTIONS_BETA1;
      p->beta2 = FIELD_DEFAULT_OPTIMIZER_OPTIONS_BETA2;
      p->epsilon = FIELD_DEFAULT_OPTIMIZER_OPTIONS_EPSILON;
      FIELD(fb_i8(r, t, FIELD_OPTIMIZER_OPTIONS_KIND, &e));
      FIELD(fb_f32(r, t, FIELD_OPTIMIZER_OPTIONS_MOMENTUM, &p->momentum));
      FIELD(fb_bool(r, t, FIELD_OPTIMIZER_OPTIONS_NESTEROV, &p->nesterov));
      FIELD(fb_f32(r, t, FIELD_OPTIMIZER_OPTIONS_BETA1, &p->beta1));
      FIELD(fb_f32(r, t, FIELD_OPTIMIZER_OPTIONS_BETA2, &p->beta2));
      FIELD(fb_f32(r, t, FIELD_OPTIMIZER_OPTIONS_EPSILON, &p->epsilon));
      FIELD(fb_f32(r, t, FIELD_OPTIMIZER_OPTIONS_WEIGHT_DECAY, &p->weight_decay));
      FIELD(fb_bool(r, t, FIELD_OPTIMIZER_OPTIONS_SPARSE, &p->sparse));
      TRY(check_enum(e, EDGE_OPTIMIZER_COUNT_, where, "optimizer kind"));
      p->kind = (edge_optimizer_kind)e;
      /* The learning rate is a tensor (the Trainer may change it); everything else is fixed here. */
      if (!(p->momentum >= 0 && p->momentum < 1))
        return edge_set_last_error(EDGE_INVALID_MODEL, "%s: optimizer momentum is %g; it must be in [0, 1)", where,
                                   p->momentum);
      if (!(p->beta1 >= 0 && p->beta1 < 1) || !(p->beta2 >= 0 && p->beta2 < 1))
        return edge_set_last_error(EDGE_INVALID_MODEL, "%s: optimizer beta1 %g and beta2 %g must both be in [0, 1)",
                                   where, p->beta1, p->beta2);
      if (!isfinite(p->epsilon) || p->epsilon < 0)
        return edge_set_last_error(EDGE_INVALID_MODEL, "%s: optimizer epsilon is %g; it must be finite and >= 0",
                                   where, p->epsilon);
      if (!isfinite(p->weight_decay) || p->weight_decay < 0)
        return edge_set_last_error(EDGE_INVALID_MODEL, "%s: optimizer weight_decay is %g; it must be finite and >= 0",
                                   where, p->weight_decay);
      break;
    }
    case EDGE_OPTIONS_CLIP:
      FIELD(fb_f32(r, t, FIELD_CLIP_OPTIONS_MAX_NORM, &o->clip.max_norm));
      if (!isfinite(o->clip.max_norm) || !(o->clip.max_norm > 0))
        return edge_set_last_error(EDGE_INVALID_MODEL, "%s: clip max_norm is %g; it must be finite and > 0", where,
                                   o->clip.max_norm);
      break;
    case EDGE_OPTIONS_CAST:
      o->cast.saturate = FIELD_DEFAULT_CAST_OPTIONS_SATURATE;
      FIELD(fb_bool(r, t, FIELD_CAST_OPTIONS_SATURATE, &o->cast.saturate));
      FIELD(fb_i8(r, t, FIELD_CAST_OPTIONS_ROUND_MODE, &e));
      TRY(check_enum(e, EDGE_CAST_ROUND_COUNT_, where, "cast round mode"));
      o->cast.round_mode = (edge_cast_round_kind)e;
      break;
    /* Axes are checked against the input's rank by each op's prepare. */
    case EDGE_OPTIONS_TRILU:
      o->trilu.upper = FIELD_DEFAULT_TRILU_OPTIONS_UPPER;
      FIELD(fb_bool(r, t, FIELD_TRILU_OPTIONS_UPPER, &o->trilu.upper));
      FIELD(fb_scalar(r, t, FIELD_TRILU_OPTIONS_K, 8, &o->trilu.k));
      break;
    case EDGE_OPTIONS_CUM_SUM:
      FIELD(fb_i32(r, t, FIELD_CUM_SUM_OPTIONS_AXIS, &o->cumsum.axis));
      FIELD(fb_bool(r, t, FIELD_CUM_SUM_OPTIONS_EXCLUSIVE, &o->cumsum.exclusive));
      FIELD(fb_bool(r, t, FIELD_CUM_SUM_OPTIONS_REVERSE, &o->cumsum.reverse));
      FIELD(fb_bool(r, t, FIELD_CUM_SUM_OPTIONS_PRODUCT, &o->cumsum.product));
      break;
    case EDGE_OPTIONS_ARG:
      o->arg.keepdims = FIELD_DEFAULT_ARG_OPTIONS_KEEPDIMS;
      FIELD(fb_i32(r, t, FIELD_ARG_OPTIONS_AXIS, &o->arg.axis));
      FIELD(fb_bool(r, t, FIELD_ARG_OPTIONS_KEEPDIMS, &o->arg.keepdims));
      FIELD(fb_bool(r, t, FIELD_ARG_OPTIONS_SELECT_LAST_INDEX, &o->arg.select_last_index));
      break;
    case EDGE_OPTIONS_TOP_K:
      o->top_k.axis = FIELD_DEFAULT_TOP_K_OPTIONS_AXIS;
      o->top_k.largest = FIELD_DEFAULT_TOP_K_OPTIONS_LARGEST;
      o->top_k.sorted = FIELD_DEFAULT_TOP_K_OPTIONS_SORTED;
      FIELD(fb_scalar(r, t, FIELD_TOP_K_OPTIONS_K, 8, &o->top_k.k));
      FIELD(fb_i32(r, t, FIELD_TOP_K_OPTIONS_AXIS, &o->top_k.axis));
      FIELD(fb_bool(r, t, FIELD_TOP_K_OPTIONS_LARGEST, &o->top_k.largest));
      FIELD(fb_bool(r, t, FIELD_TOP_K_OPTIONS_SORTED, &o->top_k.sorted));
      if (o->top_k.k < 0)
        return edge_set_last_error(EDGE_INVALID_MODEL, "%s: top-k k is %lld; it must be >= 0", where,
                                   (long long)o->top_k.k);
      break;
    case EDGE_OPTIONS_GATHER_ND:
      FIELD(fb_i32(r, t, FIELD_GATHER_ND_OPTIONS_BATCH_DIMS, &o->gather_nd.batch_dims));
      if (o->gather_nd.batch_dims < 0)
        return edge_set_last_error(EDGE_INVALID_MODEL, "%s: gather-nd batch_dims is %d; it must be >= 0", where,
                                   o->gather_nd.batch_dims);
      break;
    case EDGE_OPTIONS_SCATTER:
      FIELD(fb_i32(r, t, FIELD_SCATTER_OPTIONS_AXIS, &o->scatter.axis));
      FIELD(fb_i8(r, t, FIELD_SCATTER_OPTIONS_REDUCTION, &e));
      TRY(check_enum(e, EDGE_SCATTER_COUNT_, where, "scatter reduction"));
      o->scatter.reduction = (edge_scatter_kind)e;
      break;
    case EDGE_OPTIONS_NON_MAX_SUPPRESSION: {
      edge_nms_options *n = &o->nms;
      FIELD(fb_bool(r, t, FIELD_NON_MAX_SUPPRESSION_OPTIONS_CENTER_POINT_BOX, &n->center_point_box));
      FIELD(fb_scalar(r, t, FIELD_NON_MAX_SUPPRESSION_OPTIONS_MAX_OUTPUT_BOXES_PER_CLASS, 8, &n->max_output_boxes_per_class));
      FIELD(fb_f32(r, t, FIELD_NON_MAX_SUPPRESSION_OPTIONS_IOU_THRESHOLD, &n->iou_threshold));
      FIELD(fb_f32(r, t, FIELD_NON_MAX_SUPPRESSION_OPTIONS_SCORE_THRESHOLD, &n->score_threshold));
      FIELD(fb_bool(r, t, FIELD_NON_MAX_SUPPRESSION_OPTIONS_HAS_SCORE_THRESHOLD, &n->has_score_threshold));
      if (n->max_output_boxes_per_class < 0)
        return edge_set_last_error(EDGE_INVALID_MODEL, "%s: max_output_boxes_per_class is %lld; it must be >= 0",
                                   where, (long long)n->max_output_boxes_per_class);
      TRY(check_finite(n->iou_threshold, where, "iou_threshold"));
      break;
    }
    case EDGE_OPTIONS_ROI_ALIGN: {
      edge_roi_align_options *a = &o->roi_align;
      a->output_height = FIELD_DEFAULT_ROI_ALIGN_OPTIONS_OUTPUT_HEIGHT;
      a->output_width = FIELD_DEFAULT_ROI_ALIGN_OPTIONS_OUTPUT_WIDTH;
      a->spatial_scale = FIELD_DEFAULT_ROI_ALIGN_OPTIONS_SPATIAL_SCALE;
      a->half_pixel = FIELD_DEFAULT_ROI_ALIGN_OPTIONS_HALF_PIXEL;
      FIELD(fb_i8(r, t, FIELD_ROI_ALIGN_OPTIONS_MODE, &e));
      FIELD(fb_i32(r, t, FIELD_ROI_ALIGN_OPTIONS_OUTPUT_HEIGHT, &a->output_height));
      FIELD(fb_i32(r, t, FIELD_ROI_ALIGN_OPTIONS_OUTPUT_WIDTH, &a->output_width));
      FIELD(fb_i32(r, t, FIELD_ROI_ALIGN_OPTIONS_SAMPLING_RATIO, &a->sampling_ratio));
      FIELD(fb_f32(r, t, FIELD_ROI_ALIGN_OPTIONS_SPATIAL_SCALE, &a->spatial_scale));
      FIELD(fb_bool(r, t, FIELD_ROI_ALIGN_OPTIONS_HALF_PIXEL, &a->half_pixel));
      TRY(check_enum(e, EDGE_ROI_ALIGN_COUNT_, where, "roi-align mode"));
      a->mode = (edge_roi_align_kind)e;
      if (a->output_height < 1 || a->output_width < 1 || a->sampling_ratio < 0)
        return edge_set_last_error(EDGE_INVALID_MODEL,
                                   "%s: roi-align output %dx%d and sampling_ratio %d must be positive (ratio >= 0)",
                                   where, a->output_height, a->output_width, a->sampling_ratio);
      TRY(check_finite(a->spatial_scale, where, "spatial_scale"));
      break;
    }
    case EDGE_OPTIONS_ATTENTION: {
      edge_attention_options *a = &o->attention;
      FIELD(fb_f32(r, t, FIELD_ATTENTION_OPTIONS_SCALE, &a->scale));
      FIELD(fb_i8(r, t, FIELD_ATTENTION_OPTIONS_CAUSAL, &e));
      FIELD(fb_f32(r, t, FIELD_ATTENTION_OPTIONS_SOFTCAP, &a->softcap));
      FIELD(fb_bool(r, t, FIELD_ATTENTION_OPTIONS_K_TRANSPOSED, &a->k_transposed));
      TRY(check_enum(e, EDGE_CAUSAL_COUNT_, where, "attention causal mode"));
      a->causal = (edge_causal_kind)e;
      TRY(check_finite(a->scale, where, "scale"));
      TRY(check_finite(a->softcap, where, "softcap"));
      if (a->softcap < 0.0f)
        return edge_set_last_error(EDGE_INVALID_MODEL, "%s: attention softcap is %g; it must be >= 0", where,
                                   (double)a->softcap);
      break;
    }
    case EDGE_OPTIONS_GRID_SAMPLE: {
      edge_grid_sample_options *g = &o->grid_sample;
      int8_t padding = 0;
      e = FIELD_DEFAULT_GRID_SAMPLE_OPTIONS_MODE;
      FIELD(fb_i8(r, t, FIELD_GRID_SAMPLE_OPTIONS_MODE, &e));
      FIELD(fb_i8(r, t, FIELD_GRID_SAMPLE_OPTIONS_PADDING, &padding));
      FIELD(fb_bool(r, t, FIELD_GRID_SAMPLE_OPTIONS_ALIGN_CORNERS, &g->align_corners));
      TRY(check_enum(e, EDGE_RESIZE_COUNT_, where, "grid-sample mode"));
      TRY(check_enum(padding, EDGE_GRID_PADDING_COUNT_, where, "grid-sample padding"));
      g->mode = (edge_resize_kind)e;
      g->padding = (edge_grid_padding_kind)padding;
      break;
    }
    default:
      break;
  }
#undef FIELD
  return EDGE_OK;
}

/* ---- operators ---- */

static edge_status parse_operator_codes(loader *L, const fb_table *root) {
  fb_vector codes;
  READ_OR_FAIL(fb_vector_field(&L->reader, root, FIELD_MODEL_OPERATOR_CODES, 4, &codes), "model operator_codes");
  L->num_codes = codes.length;
  ALLOC_OR_FAIL(L->codes, codes.length, loader_code);
  for (uint32_t i = 0; i < codes.length; ++i) {
    char where[64];
    snprintf(where, sizeof where, "operator code %u", i);
    fb_table code;
    loader_code *c = &L->codes[i];
    c->version = FIELD_DEFAULT_OPERATOR_CODE_VERSION;
    READ_OR_FAIL(fb_vector_table(&L->reader, &codes, i, &code), where);
    READ_OR_FAIL(fb_u16(&L->reader, &code, FIELD_OPERATOR_CODE_OPCODE, &c->raw_opcode), where);
    READ_OR_FAIL(fb_i32(&L->reader, &code, FIELD_OPERATOR_CODE_VERSION, &c->version), where);
    READ_OR_FAIL(fb_string_field(&L->reader, &code, FIELD_OPERATOR_CODE_CUSTOM_NAME, &c->custom_name), where);
    c->opcode = (edge_op_kind)c->raw_opcode;
  }
  return EDGE_OK;
}

static edge_status read_index_vector(loader *L, const fb_table *t, int field, int32_t **out, int32_t *count,
                                     const char *where, const char *what) {
  fb_vector v;
  char label[200];
  snprintf(label, sizeof label, "%s %s", where, what);
  READ_OR_FAIL(fb_vector_field(&L->reader, t, field, 4, &v), label);
  ALLOC_OR_FAIL(*out, v.length, int32_t);
  for (uint32_t i = 0; i < v.length; ++i) (*out)[i] = fb_vector_i32(&L->reader, &v, i);
  *count = (int32_t)v.length;
  return EDGE_OK;
}

static edge_status parse_operator(loader *L, const fb_table *table, int32_t index, edge_model_op *op) {
  char where[128];
  snprintf(where, sizeof where, "op %d", index);
  uint32_t code_index = 0;
  READ_OR_FAIL(fb_u32(&L->reader, table, FIELD_OPERATOR_OPCODE_INDEX, &code_index), where);
  if (code_index >= L->num_codes)
    return edge_set_last_error(EDGE_INVALID_MODEL, "op %d: opcode_index %u is out of range (%u operator codes)", index,
                               code_index, L->num_codes);
  const loader_code *code = &L->codes[code_index];
  if (code->raw_opcode >= EDGE_OP_COUNT_)
    return edge_set_last_error(EDGE_UNSUPPORTED, "op %d: opcode %u is unknown to this runtime (version %d)", index,
                               code->raw_opcode, EDGE_RUNTIME_VERSION);
  op->opcode = code->opcode;
  op->version = code->version;
  op->custom_name = code->custom_name;
  snprintf(where, sizeof where, "op %d (%s)", index, op_name(op->opcode));
  const edge_op_registration *reg = edge_op_lookup(op->opcode);
  if (!reg || !reg->prepare || !reg->eval) {
    if (op->opcode == EDGE_OP_CUSTOM)
      return edge_set_last_error(EDGE_UNSUPPORTED, "%s: custom op '%.100s' has no kernel in this runtime", where,
                                 op->custom_name ? op->custom_name : "");
    return edge_set_last_error(EDGE_UNSUPPORTED, "%s: this runtime has no kernel for %s", where, op_name(op->opcode));
  }

  TRY(read_index_vector(L, table, FIELD_OPERATOR_INPUTS, &op->inputs, &op->num_inputs, where, "inputs"));
  TRY(read_index_vector(L, table, FIELD_OPERATOR_OUTPUTS, &op->outputs, &op->num_outputs, where, "outputs"));
  for (int32_t i = 0; i < op->num_inputs; ++i)
    if (op->inputs[i] < -1 || op->inputs[i] >= L->model->num_tensors)
      return edge_set_last_error(EDGE_INVALID_MODEL, "%s: input %d is tensor %d, out of range (%d tensors)", where, i,
                                 op->inputs[i], L->model->num_tensors);
  /* Only the recurrent ops (ONNX's Y, Y_h, Y_c) and the normalisation gradients and batch-norm
   * training (dscale, dbias, batch statistics) have optional outputs; they check which they got. */
  int32_t lowest_output = op->opcode == EDGE_OP_LSTM || op->opcode == EDGE_OP_GRU ||
                                  op->opcode == EDGE_OP_LAYER_NORM_GRAD || op->opcode == EDGE_OP_BATCH_NORM_TRAIN ||
                                  op->opcode == EDGE_OP_BATCH_NORM_GRAD
                              ? -1
                              : 0;
  for (int32_t i = 0; i < op->num_outputs; ++i)
    if (op->outputs[i] < lowest_output || op->outputs[i] >= L->model->num_tensors)
      return edge_set_last_error(EDGE_INVALID_MODEL, "%s: output %d is tensor %d, out of range (%d tensors)", where, i,
                                 op->outputs[i], L->model->num_tensors);

  /* Packed elements are not whole bytes: only CAST reads or writes them (the ops that move
   * elements of any dtype address them by byte). */
  if (op->opcode != EDGE_OP_CAST) {
    for (int32_t i = 0; i < op->num_inputs + op->num_outputs; ++i) {
      int32_t t = i < op->num_inputs ? op->inputs[i] : op->outputs[i - op->num_inputs];
      if (t >= 0 && edge_dtype_size(L->model->tensors[t].dtype) == 0)
        return edge_set_last_error(EDGE_UNSUPPORTED, "%s: tensor %d is %s, a packed dtype that only CAST reads or "
                                   "writes", where, t, edge_dtype_name(L->model->tensors[t].dtype));
    }
  }

  uint8_t options_type = 0;
  READ_OR_FAIL(fb_u8(&L->reader, table, FIELD_OPERATOR_OPTIONS_TYPE, &options_type), where);
  fb_table options;
  bool has_options = false;
  READ_OR_FAIL(fb_subtable(&L->reader, table, FIELD_OPERATOR_OPTIONS, &options, &has_options), where);
  int expected = expected_options(op->opcode);
  if (options_type >= EDGE_OPTIONS_COUNT_)
    return edge_set_last_error(EDGE_INVALID_MODEL, "%s: options type %u is not in the OpOptions union", where,
                               options_type);
  if (options_type != EDGE_OPTIONS_NONE && options_type != expected)
    return edge_set_last_error(EDGE_INVALID_MODEL, "%s: has %s, expected %s", where, edge_options_names[options_type],
                               edge_options_names[expected]);
  if (options_type == EDGE_OPTIONS_NONE && has_options)
    return edge_set_last_error(EDGE_INVALID_MODEL, "%s: has an options table but options type NONE", where);
  TRY(parse_options(L, expected, &options, has_options, &op->options, where));

  int8_t activation = 0;
  READ_OR_FAIL(fb_i8(&L->reader, table, FIELD_OPERATOR_ACTIVATION, &activation), where);
  TRY(check_enum(activation, EDGE_UNARY_COUNT_, where, "fused activation"));
  op->activation.op = (edge_unary_kind)activation;
  READ_OR_FAIL(fb_f32(&L->reader, table, FIELD_OPERATOR_ACTIVATION_ALPHA, &op->activation.alpha), where);
  READ_OR_FAIL(fb_f32(&L->reader, table, FIELD_OPERATOR_ACTIVATION_BETA, &op->activation.beta), where);

  fb_table cost;
  bool has_cost = false;
  READ_OR_FAIL(fb_subtable(&L->reader, table, FIELD_OPERATOR_COST, &cost, &has_cost), where);
  if (has_cost) {
    READ_OR_FAIL(fb_u64(&L->reader, &cost, FIELD_OP_COST_FLOPS, &op->flops), where);
    READ_OR_FAIL(fb_u64(&L->reader, &cost, FIELD_OP_COST_BYTES_IN, &op->bytes_in), where);
    READ_OR_FAIL(fb_u64(&L->reader, &cost, FIELD_OP_COST_BYTES_OUT, &op->bytes_out), where);
    READ_OR_FAIL(fb_u64(&L->reader, &cost, FIELD_OP_COST_BYTES_WEIGHTS, &op->bytes_weights), where);
  }
  return EDGE_OK;
}

/* Every op reads only tensors that exist before it runs and writes tensors nobody else writes;
 * checking this in file order also rules out cycles. */
static edge_status check_graph_order(loader *L) {
  edge_model *m = L->model;
  int32_t *producer;
  ALLOC_OR_FAIL(producer, m->num_tensors, int32_t);
  for (int32_t t = 0; t < m->num_tensors; ++t) producer[t] = -1;
  for (int32_t i = 0; i < m->num_ops; ++i) {
    const edge_model_op *op = &m->ops[i];
    for (int32_t j = 0; j < op->num_inputs; ++j) {
      int32_t t = op->inputs[j];
      if (t < 0) continue;
      const edge_model_tensor *tensor = &m->tensors[t];
      if (tensor->kind == EDGE_TENSOR_ACTIVATION && !L->graph_input_of[t] && producer[t] < 0)
        return edge_set_last_error(EDGE_INVALID_MODEL,
                                   "op %d (%s): input %d, tensor '%.100s' (%d), is read before any earlier op writes it "
                                   "(ops out of order, a cycle, or a missing graph input)",
                                   i, op_name(op->opcode), j, tensor->name, t);
    }
    for (int32_t j = 0; j < op->num_outputs; ++j) {
      int32_t t = op->outputs[j];
      if (t < 0) continue;
      const edge_model_tensor *tensor = &m->tensors[t];
      if (tensor->kind == EDGE_TENSOR_CONSTANT)
        return edge_set_last_error(EDGE_INVALID_MODEL, "op %d (%s): output %d writes constant tensor '%.100s' (%d)", i,
                                   op_name(op->opcode), j, tensor->name, t);
      if (L->graph_input_of[t])
        return edge_set_last_error(EDGE_INVALID_MODEL, "op %d (%s): output %d writes graph input '%.100s' (%d)", i,
                                   op_name(op->opcode), j, tensor->name, t);
      if (producer[t] >= 0)
        return edge_set_last_error(EDGE_INVALID_MODEL, "op %d (%s): tensor '%.100s' (%d) is already written by op %d", i,
                                   op_name(op->opcode), tensor->name, t, producer[t]);
      if (tensor->kind == EDGE_TENSOR_ACTIVATION)
        for (int32_t k = 0; k < op->num_inputs; ++k)
          if (op->inputs[k] == t)
            return edge_set_last_error(EDGE_INVALID_MODEL, "op %d (%s): reads and writes tensor '%.100s' (%d)", i,
                                       op_name(op->opcode), tensor->name, t);
      producer[t] = i;
    }
  }
  for (int32_t i = 0; i < m->num_outputs; ++i) {
    int32_t t = m->outputs[i];
    if (m->tensors[t].kind == EDGE_TENSOR_ACTIVATION && !L->graph_input_of[t] && producer[t] < 0)
      return edge_set_last_error(EDGE_INVALID_MODEL, "graph output %d, tensor '%.100s' (%d), is never written", i,
                                 m->tensors[t].name, t);
  }
  return EDGE_OK;
}

static edge_status parse_graph(loader *L, const fb_table *graph) {
  edge_model *m = L->model;
  READ_OR_FAIL(fb_string_field(&L->reader, graph, FIELD_GRAPH_NAME, &m->graph_name), "graph 0");
  if (!m->graph_name) m->graph_name = "";

  fb_vector tensors;
  READ_OR_FAIL(fb_vector_field(&L->reader, graph, FIELD_GRAPH_TENSORS, 4, &tensors), "graph 0 tensors");
  if (tensors.length > INT32_MAX / 2) return edge_set_last_error(EDGE_INVALID_MODEL, "graph 0 has too many tensors");
  m->num_tensors = (int32_t)tensors.length;
  ALLOC_OR_FAIL(m->tensors, m->num_tensors, edge_model_tensor);
  for (int32_t i = 0; i < m->num_tensors; ++i) {
    char where[64];
    snprintf(where, sizeof where, "tensor %d", i);
    fb_table t;
    READ_OR_FAIL(fb_vector_table(&L->reader, &tensors, (uint32_t)i, &t), where);
    TRY(parse_tensor(L, &t, i, &m->tensors[i]));
  }
  for (uint32_t b = 0; b < L->num_buffers; ++b) TRY(check_buffer(L, b, ""));

  TRY(read_index_vector(L, graph, FIELD_GRAPH_INPUTS, &m->inputs, &m->num_inputs, "graph 0", "inputs"));
  TRY(read_index_vector(L, graph, FIELD_GRAPH_OUTPUTS, &m->outputs, &m->num_outputs, "graph 0", "outputs"));
  ALLOC_OR_FAIL(L->graph_input_of, m->num_tensors, int32_t);
  for (int32_t i = 0; i < m->num_inputs; ++i) {
    int32_t t = m->inputs[i];
    if (t < 0 || t >= m->num_tensors)
      return edge_set_last_error(EDGE_INVALID_MODEL, "graph input %d is tensor %d, out of range (%d tensors)", i, t,
                                 m->num_tensors);
    if (m->tensors[t].kind != EDGE_TENSOR_ACTIVATION)
      return edge_set_last_error(EDGE_INVALID_MODEL, "graph input %d, tensor '%.100s' (%d), is a %s", i,
                                 m->tensors[t].name, t,
                                 m->tensors[t].kind == EDGE_TENSOR_CONSTANT ? "constant" : "variable");
    if (L->graph_input_of[t])
      return edge_set_last_error(EDGE_INVALID_MODEL, "tensor '%.100s' (%d) is listed twice as a graph input",
                                 m->tensors[t].name, t);
    L->graph_input_of[t] = 1;
  }
  for (int32_t i = 0; i < m->num_outputs; ++i)
    if (m->outputs[i] < 0 || m->outputs[i] >= m->num_tensors)
      return edge_set_last_error(EDGE_INVALID_MODEL, "graph output %d is tensor %d, out of range (%d tensors)", i,
                                 m->outputs[i], m->num_tensors);

  fb_vector ops;
  READ_OR_FAIL(fb_vector_field(&L->reader, graph, FIELD_GRAPH_OPERATORS, 4, &ops), "graph 0 operators");
  if (ops.length > INT32_MAX / 2) return edge_set_last_error(EDGE_INVALID_MODEL, "graph 0 has too many operators");
  m->num_ops = (int32_t)ops.length;
  ALLOC_OR_FAIL(m->ops, m->num_ops, edge_model_op);
  for (int32_t i = 0; i < m->num_ops; ++i) {
    char where[64];
    snprintf(where, sizeof where, "op %d", i);
    fb_table op;
    READ_OR_FAIL(fb_vector_table(&L->reader, &ops, (uint32_t)i, &op), where);
    TRY(parse_operator(L, &op, i, &m->ops[i]));
  }
  return check_graph_order(L);
}

/* ---- signatures and metadata ---- */

static edge_status parse_tensor_maps(loader *L, const fb_table *sig, int field, const char ***names, int32_t **tensors,
                                     int32_t *count, const char *where, const char *what) {
  fb_vector maps;
  char label[200];
  snprintf(label, sizeof label, "%s %s", where, what);
  READ_OR_FAIL(fb_vector_field(&L->reader, sig, field, 4, &maps), label);
  *count = (int32_t)maps.length;
  ALLOC_OR_FAIL(*names, maps.length, const char *);
  ALLOC_OR_FAIL(*tensors, maps.length, int32_t);
  for (uint32_t i = 0; i < maps.length; ++i) {
    fb_table map;
    uint32_t tensor = 0;
    READ_OR_FAIL(fb_vector_table(&L->reader, &maps, i, &map), label);
    READ_OR_FAIL(fb_string_field(&L->reader, &map, FIELD_TENSOR_MAP_NAME, &(*names)[i]), label);
    READ_OR_FAIL(fb_u32(&L->reader, &map, FIELD_TENSOR_MAP_TENSOR, &tensor), label);
    if (!(*names)[i]) (*names)[i] = "";
    if (tensor >= (uint32_t)L->model->num_tensors)
      return edge_set_last_error(EDGE_INVALID_MODEL, "%s %s %u ('%.100s'): tensor %u is out of range (%d tensors)",
                                 where, what, i, (*names)[i], tensor, L->model->num_tensors);
    (*tensors)[i] = (int32_t)tensor;
  }
  return EDGE_OK;
}

/* The ops that the given outputs depend on, stopping at the given inputs, in model order. */
static edge_status ops_needed(loader *L, const int32_t *inputs, int32_t num_inputs, const int32_t *outputs,
                              int32_t num_outputs, int32_t **ops_out, int32_t *num_ops_out) {
  edge_model *m = L->model;
  uint8_t *needed, *is_input, *runs;
  ALLOC_OR_FAIL(needed, m->num_tensors, uint8_t);
  ALLOC_OR_FAIL(is_input, m->num_tensors, uint8_t);
  ALLOC_OR_FAIL(runs, m->num_ops, uint8_t);
  for (int32_t i = 0; i < num_inputs; ++i) is_input[inputs[i]] = 1;
  for (int32_t i = 0; i < num_outputs; ++i) needed[outputs[i]] = 1;
  int32_t count = 0;
  for (int32_t i = m->num_ops - 1; i >= 0; --i) {
    const edge_model_op *op = &m->ops[i];
    bool wanted = false;
    for (int32_t j = 0; j < op->num_outputs; ++j) {
      int32_t t = op->outputs[j];
      wanted |= t >= 0 && needed[t] && !is_input[t];
    }
    if (!wanted) continue;
    runs[i] = 1;
    ++count;
    for (int32_t j = 0; j < op->num_inputs; ++j)
      if (op->inputs[j] >= 0) needed[op->inputs[j]] = 1;
  }
  int32_t *ops;
  ALLOC_OR_FAIL(ops, count, int32_t);
  int32_t n = 0;
  for (int32_t i = 0; i < m->num_ops; ++i)
    if (runs[i]) ops[n++] = i;
  *ops_out = ops;
  *num_ops_out = n;
  return EDGE_OK;
}

/* An empty operator list means every op the outputs depend on, stopping at the signature's inputs. */
static edge_status derive_signature_ops(loader *L, edge_signature_def *s) {
  return ops_needed(L, s->input_tensors, s->num_inputs, s->output_tensors, s->num_outputs, &s->ops, &s->num_ops);
}

static edge_status parse_signatures(loader *L, const fb_table *root, uint32_t num_graphs) {
  edge_model *m = L->model;
  fb_vector sigs;
  READ_OR_FAIL(fb_vector_field(&L->reader, root, FIELD_MODEL_SIGNATURES, 4, &sigs), "model signatures");
  m->num_signatures = (int32_t)sigs.length;
  ALLOC_OR_FAIL(m->signatures, sigs.length, edge_signature_def);
  for (uint32_t i = 0; i < sigs.length; ++i) {
    edge_signature_def *s = &m->signatures[i];
    char where[160];
    snprintf(where, sizeof where, "signature %u", i);
    fb_table sig;
    READ_OR_FAIL(fb_vector_table(&L->reader, &sigs, i, &sig), where);
    READ_OR_FAIL(fb_string_field(&L->reader, &sig, FIELD_SIGNATURE_KEY, &s->key), where);
    if (!s->key) return edge_set_last_error(EDGE_INVALID_MODEL, "signature %u has no key", i);
    snprintf(where, sizeof where, "signature %u ('%.100s')", i, s->key);
    uint32_t graph = 0;
    READ_OR_FAIL(fb_u32(&L->reader, &sig, FIELD_SIGNATURE_GRAPH, &graph), where);
    if (graph >= num_graphs)
      return edge_set_last_error(EDGE_INVALID_MODEL, "%s: graph %u is out of range (%u graphs)", where, graph, num_graphs);
    if (graph != 0)
      return edge_set_last_error(EDGE_UNSUPPORTED, "%s: runs graph %u; this runtime runs only graph 0", where, graph);
    TRY(parse_tensor_maps(L, &sig, FIELD_SIGNATURE_INPUTS, &s->input_names, &s->input_tensors, &s->num_inputs, where, "input"));
    TRY(parse_tensor_maps(L, &sig, FIELD_SIGNATURE_OUTPUTS, &s->output_names, &s->output_tensors, &s->num_outputs, where,
                          "output"));
    fb_vector ops;
    char label[200];
    snprintf(label, sizeof label, "%s operators", where);
    READ_OR_FAIL(fb_vector_field(&L->reader, &sig, FIELD_SIGNATURE_OPERATORS, 4, &ops), label);
    if (ops.length == 0) {
      TRY(derive_signature_ops(L, s));
      continue;
    }
    s->num_ops = (int32_t)ops.length;
    ALLOC_OR_FAIL(s->ops, ops.length, int32_t);
    for (uint32_t j = 0; j < ops.length; ++j) {
      uint32_t op = fb_vector_u32(&L->reader, &ops, j);
      if (op >= (uint32_t)m->num_ops)
        return edge_set_last_error(EDGE_INVALID_MODEL, "%s: operator %u is op %u, out of range (%d ops)", where, j, op,
                                   m->num_ops);
      s->ops[j] = (int32_t)op;
    }
  }
  return EDGE_OK;
}

static edge_status parse_metadata(loader *L, const fb_table *root) {
  edge_model *m = L->model;
  fb_vector entries;
  READ_OR_FAIL(fb_vector_field(&L->reader, root, FIELD_MODEL_METADATA, 4, &entries), "model metadata");
  m->num_metadata = (int32_t)entries.length;
  ALLOC_OR_FAIL(m->metadata_names, entries.length, const char *);
  ALLOC_OR_FAIL(m->metadata_values, entries.length, const char *);
  for (uint32_t i = 0; i < entries.length; ++i) {
    char where[64];
    snprintf(where, sizeof where, "metadata %u", i);
    fb_table entry;
    READ_OR_FAIL(fb_vector_table(&L->reader, &entries, i, &entry), where);
    READ_OR_FAIL(fb_string_field(&L->reader, &entry, FIELD_METADATA_NAME, &m->metadata_names[i]), where);
    READ_OR_FAIL(fb_string_field(&L->reader, &entry, FIELD_METADATA_VALUE, &m->metadata_values[i]), where);
    if (!m->metadata_names[i]) m->metadata_names[i] = "";
    if (!m->metadata_values[i]) m->metadata_values[i] = "";
  }
  return EDGE_OK;
}

static edge_status parse_model(loader *L) {
  edge_model *m = L->model;
  fb_table root;
  if (!fb_open(&L->reader, m->bytes, m->size, "EDG1", &root))
    return edge_set_last_error(EDGE_INVALID_MODEL, "not an edge model: %s", L->reader.message);
  uint32_t version = 0, min_runtime = 0;
  READ_OR_FAIL(fb_u32(&L->reader, &root, FIELD_MODEL_VERSION, &version), "model");
  if (version > EDGE_SCHEMA_VERSION)
    return edge_set_last_error(EDGE_UNSUPPORTED, "model schema version %u is newer than this runtime's %d", version,
                               EDGE_SCHEMA_VERSION);
  if (version != EDGE_SCHEMA_VERSION)
    return edge_set_last_error(EDGE_INVALID_MODEL, "model schema version %u, expected %d", version, EDGE_SCHEMA_VERSION);
  READ_OR_FAIL(fb_u32(&L->reader, &root, FIELD_MODEL_MIN_RUNTIME_VERSION, &min_runtime), "model");
  if (min_runtime > EDGE_RUNTIME_VERSION)
    return edge_set_last_error(EDGE_UNSUPPORTED, "model needs runtime version %u; this runtime is %d", min_runtime,
                               EDGE_RUNTIME_VERSION);
  READ_OR_FAIL(fb_string_field(&L->reader, &root, FIELD_MODEL_DESCRIPTION, &m->description), "model description");
  READ_OR_FAIL(fb_string_field(&L->reader, &root, FIELD_MODEL_PRODUCER, &m->producer), "model producer");
  if (!m->description) m->description = "";
  if (!m->producer) m->producer = "";

  TRY(parse_buffers(L, &root));
  TRY(parse_operator_codes(L, &root));
  fb_vector graphs;
  READ_OR_FAIL(fb_vector_field(&L->reader, &root, FIELD_MODEL_GRAPHS, 4, &graphs), "model graphs");
  if (graphs.length == 0) return edge_set_last_error(EDGE_INVALID_MODEL, "model has no graph");
  for (uint32_t g = 1; g < graphs.length; ++g) {
    char where[64];
    snprintf(where, sizeof where, "graph %u", g);
    fb_table other;
    READ_OR_FAIL(fb_vector_table(&L->reader, &graphs, g, &other), where);
  }
  fb_table graph;
  READ_OR_FAIL(fb_vector_table(&L->reader, &graphs, 0, &graph), "graph 0");
  TRY(parse_graph(L, &graph));
  TRY(parse_signatures(L, &root, graphs.length));
  TRY(ops_needed(L, L->model->inputs, L->model->num_inputs, L->model->outputs, L->model->num_outputs,
                 &L->model->invoke_ops, &L->model->num_invoke_ops));
  return parse_metadata(L, &root);
}

/* ---- public entry points ---- */

static edge_status finish_load(edge_model *m, edge_model **out) {
  loader L;
  memset(&L, 0, sizeof L);
  L.model = m;
  edge_status status = parse_model(&L);
  if (status != EDGE_OK) {
    edge_model_free(m);
    return status;
  }
  *out = m;
  return EDGE_OK;
}

edge_status edge_model_load_buffer(const void *data, size_t size, int32_t copy, edge_model **out) {
  if (!out) return edge_set_last_error(EDGE_INVALID_ARGUMENT, "load_buffer: out is NULL");
  *out = NULL;
  if (!data && size) return edge_set_last_error(EDGE_INVALID_ARGUMENT, "load_buffer: data is NULL");
  edge_model *m = calloc(1, sizeof *m);
  if (!m) return edge_set_last_error(EDGE_OUT_OF_MEMORY, "out of memory allocating the model");
  /* Constants are used in place, and kernels may rely on their alignment: a buffer that is not
   * EDGE_ALIGNMENT-aligned is copied even when the caller asked to lend it. */
  if (copy || ((uintptr_t)data % EDGE_ALIGNMENT) != 0) {
    size_t rounded = (size + EDGE_ALIGNMENT - 1) / EDGE_ALIGNMENT * EDGE_ALIGNMENT;
    if (rounded < size || !(m->owned_copy = aligned_alloc(EDGE_ALIGNMENT, rounded ? rounded : EDGE_ALIGNMENT))) {
      free(m);
      return edge_set_last_error(EDGE_OUT_OF_MEMORY, "out of memory copying the %zu-byte model", size);
    }
    if (size) memcpy(m->owned_copy, data, size);
    m->bytes = m->owned_copy;
  } else {
    m->bytes = data;
  }
  m->size = size;
  return finish_load(m, out);
}

edge_status edge_model_load_file(const char *path, edge_model **out) {
  if (!out) return edge_set_last_error(EDGE_INVALID_ARGUMENT, "load_file: out is NULL");
  *out = NULL;
  if (!path) return edge_set_last_error(EDGE_INVALID_ARGUMENT, "load_file: path is NULL");
  int fd = open(path, O_RDONLY);
  if (fd < 0) return edge_set_last_error(EDGE_IO_ERROR, "cannot open '%s': %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    return edge_set_last_error(EDGE_IO_ERROR, "cannot stat '%s': %s", path, strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return edge_set_last_error(EDGE_IO_ERROR, "'%s' is not a regular file", path);
  }
  if (st.st_size < 8) {
    close(fd);
    return edge_set_last_error(EDGE_INVALID_MODEL, "'%s' is %lld bytes, too short for an edge model", path,
                               (long long)st.st_size);
  }
  size_t size = (size_t)st.st_size;
  void *mapping = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  close(fd);
  if (mapping == MAP_FAILED) return edge_set_last_error(EDGE_IO_ERROR, "cannot map '%s': %s", path, strerror(map_errno));
  edge_model *m = calloc(1, sizeof *m);
  if (!m) {
    munmap(mapping, size);
    return edge_set_last_error(EDGE_OUT_OF_MEMORY, "out of memory allocating the model");
  }
  m->mapping = mapping;
  m->mapping_size = size;
  m->bytes = mapping;
  m->size = size;
  edge_status status = finish_load(m, out);
  if (status != EDGE_OK) {
    char message[EDGE_ERROR_CAPACITY];
    snprintf(message, sizeof message, "%s", edge_last_error());
    edge_set_last_error(status, "'%s': %s", path, message);
  }
  return status;
}

void edge_model_release_pages(const edge_model *model) {
#ifdef MADV_DONTNEED
  if (model && model->mapping) (void)madvise(model->mapping, model->mapping_size, MADV_DONTNEED);
#else
  (void)model;
#endif
}

void edge_model_free(edge_model *model) {
  if (!model) return;
  edge_model_block *block = model->blocks;
  while (block) {
    edge_model_block *next = block->next;
    free(block);
    block = next;
  }
  if (model->mapping) munmap(model->mapping, model->mapping_size);
  free(model->owned_copy);
  free(model);
}

const char *edge_model_description(const edge_model *model) { return model ? model->description : ""; }

int32_t edge_model_num_signatures(const edge_model *model) { return model ? model->num_signatures : 0; }

edge_status edge_model_signature(const edge_model *model, int32_t index, edge_signature_info *out) {
  if (!model || !out) return edge_set_last_error(EDGE_INVALID_ARGUMENT, "signature: model or out is NULL");
  if (index < 0 || index >= model->num_signatures)
    return edge_set_last_error(EDGE_INVALID_ARGUMENT, "signature %d is out of range (%d signatures)", index,
                               model->num_signatures);
  const edge_signature_def *s = &model->signatures[index];
  out->key = s->key;
  out->num_inputs = s->num_inputs;
  out->input_names = s->input_names;
  out->input_tensors = s->input_tensors;
  out->num_outputs = s->num_outputs;
  out->output_names = s->output_names;
  out->output_tensors = s->output_tensors;
  out->num_ops = s->num_ops;
  out->ops = s->ops;
  return EDGE_OK;
}

int32_t edge_model_num_metadata(const edge_model *model) { return model ? model->num_metadata : 0; }

edge_status edge_model_metadata(const edge_model *model, int32_t index, const char **name, const char **value) {
  if (!model) return edge_set_last_error(EDGE_INVALID_ARGUMENT, "metadata: model is NULL");
  if (index < 0 || index >= model->num_metadata)
    return edge_set_last_error(EDGE_INVALID_ARGUMENT, "metadata %d is out of range (%d entries)", index,
                               model->num_metadata);
  if (name) *name = model->metadata_names[index];
  if (value) *value = model->metadata_values[index];
  return EDGE_OK;
}

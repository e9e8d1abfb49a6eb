/* PAD: CONSTANT, REFLECT, EDGE or SYMMETRIC, pads [begins..., ends...] (negative pads crop); any
 * dtype in every mode (a quantized int8 tensor pads with its quantized constant, the zero point
 * for 0). REFLECT mirrors about the border element, SYMMETRIC repeats it (TFLite's MIRROR_PAD).
 * Prepare builds, for each dimension, a table from output coordinate to source coordinate (-1:
 * the constant), so eval only looks coordinates up. Dimensions after the innermost padded one are
 * whole blocks, contiguous in x and y alike, so they are folded into the element: a spatial pad of
 * NHWC copies W x C rows, not C-channel pixels. Eval goes over the rows of the innermost padded
 * dimension on the thread pool: a row whose outer coordinates fall in constant padding is one
 * fill, any other one block copy of its unpadded middle plus its padded ends (in CONSTANT mode one
 * fill each, else cell by cell from the table). */
#include <stdlib.h>
#include <string.h>

#include "broadcast.h"
#include "ops.h"
#include "qcommon.h"

typedef struct {
  /* The walk: dimensions 0..rank-1 of the output up to the innermost padded one, whose elements
   * are blocks of `block` cells of the dtype (the unpadded dimensions after it). */
  int32_t rank;
  int64_t shape[EDGE_MAX_RANK], block;
  int64_t *source[EDGE_MAX_RANK]; /* per dimension, output coordinate -> x coordinate or -1 */
  int64_t x_strides[EDGE_MAX_RANK]; /* in blocks */
  /* The innermost dimension's output row: `lead` elements from the table, then `run` elements
   * copied from x coordinates run_source.. in one block, then the rest from the table. */
  int64_t lead, run, run_source;
  bool constant; /* CONSTANT mode: every element outside the run is the constant */
  bool zero;     /* the constant's bytes are all zero */
  unsigned char value[8];         /* the constant in the tensor's dtype */
  int64_t *tables;                /* the one allocation behind source[] */
} pad_plan;

static void free_pad_plan(pad_plan *plan) {
  if (!plan) return;
  free(plan->tables);
  free(plan);
}

static void encode_value(float value, edge_dtype dtype, unsigned char *out) {
  memset(out, 0, 8);
  /* Saturating, and NaN to 0, so no float-to-integer conversion is undefined. */
  double v = value != value ? 0.0 : (double)value;
  if (v > 9.2e18) v = 9.2e18;
  if (v < -9.2e18) v = -9.2e18;
  int64_t i = (int64_t)v;
  switch (dtype) {
    case EDGE_FLOAT32: memcpy(out, &value, 4); return;
    case EDGE_FLOAT16: { uint16_t h = edge_float_to_half(value); memcpy(out, &h, 2); return; }
    case EDGE_INT8: { int8_t t = (int8_t)(i < -128 ? -128 : (i > 127 ? 127 : i)); memcpy(out, &t, 1); return; }
    case EDGE_UINT8: { uint8_t t = (uint8_t)(i < 0 ? 0 : (i > 255 ? 255 : i)); memcpy(out, &t, 1); return; }
    case EDGE_INT32: {
      int32_t t = (int32_t)(i < INT32_MIN ? INT32_MIN : (i > INT32_MAX ? INT32_MAX : i));
      memcpy(out, &t, 4);
      return;
    }
    case EDGE_INT64: memcpy(out, &i, 8); return;
    case EDGE_BOOL: out[0] = value != 0.0f; return;
    case EDGE_FLOAT64: { double d = value; memcpy(out, &d, 8); return; }
    default: memset(out, 0, edge_dtype_size(dtype)); return; /* boundary-only dtypes: Cast alone reads them */
  }
}

static edge_status pad_prepare(edge_context *ctx, edge_node *node) {
  free_pad_plan(node->plan);
  node->plan = NULL;
  edge_status status = edge_op_check_arity(ctx, node, "PAD", 1, 1, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  const edge_pad_options *options = &node->options.pad;
  int32_t rank = x->rank;
  if (options->rank != rank)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "PAD '%s': pads cover %d dimensions but input '%s' has rank %d",
                     edge_tensor_name(y), options->rank, edge_tensor_name(x), rank);
  if ((int)options->mode < 0 || options->mode >= EDGE_PAD_COUNT_)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "PAD '%s': unknown mode %d", edge_tensor_name(y), (int)options->mode);
  if (y->dtype != x->dtype)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "PAD '%s': output is %s but input '%s' is %s", edge_tensor_name(y),
                     edge_dtype_name(y->dtype), edge_tensor_name(x), edge_dtype_name(x->dtype));
  int64_t shape[EDGE_MAX_RANK], table_entries = 0;
  for (int32_t d = 0; d < rank; ++d) {
    int64_t dim = x->shape[d], before = options->pads[d], after = options->pads[rank + d];
    /* Pads beyond the element limit could overflow the sum; no valid output is that large anyway. */
    const int64_t limit = (int64_t)1 << 46;
    if (before > limit || after > limit || before < -limit || after < -limit || before + dim + after < 0)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "PAD '%s': pads %lld, %lld on dimension %d of size %lld are invalid",
                       edge_tensor_name(y), (long long)before, (long long)after, d, (long long)dim);
    if (options->mode == EDGE_PAD_REFLECT && (before >= dim || after >= dim) && (before > 0 || after > 0))
      return edge_fail(ctx, EDGE_INVALID_MODEL,
                       "PAD '%s': reflect pads %lld, %lld on dimension %d need a dimension larger than both, not %lld",
                       edge_tensor_name(y), (long long)before, (long long)after, d, (long long)dim);
    /* SYMMETRIC repeats the border element, so a pad may reach the whole dimension but no further. */
    if (options->mode == EDGE_PAD_SYMMETRIC && (before > dim || after > dim))
      return edge_fail(ctx, EDGE_INVALID_MODEL,
                       "PAD '%s': symmetric pads %lld, %lld on dimension %d may not exceed its size %lld",
                       edge_tensor_name(y), (long long)before, (long long)after, d, (long long)dim);
    if (options->mode == EDGE_PAD_EDGE && dim == 0 && (before > 0 || after > 0))
      return edge_fail(ctx, EDGE_INVALID_MODEL, "PAD '%s': edge padding of empty dimension %d", edge_tensor_name(y), d);
    shape[d] = before + dim + after;
    table_entries += shape[d];
  }
  status = edge_set_shape(ctx, y, rank, shape);
  if (status != EDGE_OK) return status;

  pad_plan *plan = calloc(1, sizeof *plan);
  if (plan) plan->tables = malloc((size_t)(table_entries > 0 ? table_entries : 1) * sizeof(int64_t));
  if (!plan || !plan->tables) {
    free_pad_plan(plan);
    return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "PAD '%s': out of memory for %lld table entries", edge_tensor_name(y),
                     (long long)table_entries);
  }
  plan->rank = rank > 0 ? 1 : 0;
  for (int32_t d = 0; d < rank; ++d)
    if (options->pads[d] != 0 || options->pads[rank + d] != 0) plan->rank = d + 1;
  plan->block = edge_num_elements(rank - plan->rank, x->shape + plan->rank);
  for (int32_t d = 0; d < plan->rank; ++d) plan->shape[d] = shape[d];
  edge_nd_contiguous_strides(plan->rank, x->shape, plan->x_strides);
  plan->constant = options->mode == EDGE_PAD_CONSTANT;
  encode_value(options->value, x->dtype, plan->value);
  if ((x->dtype == EDGE_INT8 || x->dtype == EDGE_UINT8) && x->num_quant_params == 1) {
    /* Quantized: the constant is a real value, so it pads with its quantized form (0 -> the zero
     * point), which keeps the padding cells meaning what they mean in float. */
    int32_t lo = x->dtype == EDGE_INT8 ? -128 : 0, hi = x->dtype == EDGE_INT8 ? 127 : 255;
    int32_t q = edge_q_quantize(options->value, 1.0f / x->scales[0], (int32_t)x->zero_points[0], lo, hi);
    int8_t s8 = (int8_t)q;
    uint8_t u8 = (uint8_t)q;
    if (x->dtype == EDGE_INT8) memcpy(plan->value, &s8, 1);
    else memcpy(plan->value, &u8, 1);
  }
  plan->zero = true;
  for (size_t b = 0; b < sizeof plan->value; ++b) plan->zero = plan->zero && plan->value[b] == 0;
  int64_t *next = plan->tables;
  for (int32_t d = 0; d < rank; ++d) {
    int64_t dim = x->shape[d], before = options->pads[d];
    plan->source[d] = next;
    for (int64_t o = 0; o < shape[d]; ++o) {
      int64_t c = o - before;
      if (c < 0 || c >= dim) {
        switch (options->mode) {
          case EDGE_PAD_CONSTANT: c = -1; break;
          case EDGE_PAD_EDGE: c = c < 0 ? 0 : dim - 1; break;
          case EDGE_PAD_REFLECT: c = c < 0 ? -c : 2 * (dim - 1) - c; break;
          case EDGE_PAD_SYMMETRIC: c = c < 0 ? -c - 1 : 2 * dim - 1 - c; break;
          default: break;
        }
      }
      next[o] = c;
    }
    next += shape[d];
  }
  if (plan->rank > 0) {
    const int32_t inner = plan->rank - 1;
    const int64_t dim = x->shape[inner], before = options->pads[inner], row = shape[inner];
    plan->lead = before > 0 ? (before < row ? before : row) : 0;
    plan->run_source = before < 0 ? -before : 0;
    const int64_t available = dim - plan->run_source, room = row - plan->lead;
    plan->run = available < room ? (available > 0 ? available : 0) : room;
  }
  node->plan = plan;
  return EDGE_OK;
}

/* memcpy for the short rows of a channel pad (a few hundred bytes, many thousand times): whole
 * 16-byte pieces inline, where a call to memcpy would cost more than the copy. */
static inline void copy_bytes(char *dst, const char *src, size_t bytes) {
  if (bytes > 256 || bytes % 16 != 0) {
    memcpy(dst, src, bytes);
    return;
  }
  for (size_t i = 0; i < bytes; i += 16) memcpy(dst + i, src + i, 16);
}

/* count copies of the size-byte value at out. */
static inline void fill_cells(char *out, int64_t count, const unsigned char *value, size_t size, bool zero) {
  if (count <= 0) return;
  if (zero && (size_t)count * size <= 64) {
    for (size_t i = 0; i < (size_t)count * size; ++i) out[i] = 0;
    return;
  }
  if (zero || size == 1) {
    memset(out, zero ? 0 : value[0], (size_t)count * size);
    return;
  }
  /* Doubling copies: one cell, then 1, 2, 4... cells already written. */
  memcpy(out, value, size);
  for (int64_t done = 1; done < count;) {
    const int64_t next = done < count - done ? done : count - done;
    memcpy(out + (size_t)done * size, out, (size_t)next * size);
    done += next;
  }
}

typedef struct {
  const pad_plan *plan;
  const char *src;
  char *dst;
  size_t size;  /* of a dtype cell */
  size_t block; /* bytes of a walk element: size * plan->block */
} pad_job;

/* One element of the innermost dimension through its table: the constant or a copy. */
static inline void table_element(const pad_job *job, int64_t base, int64_t o, char *out) {
  const int64_t c = job->plan->source[job->plan->rank - 1][o];
  if (c < 0) fill_cells(out, job->plan->block, job->plan->value, job->size, job->plan->zero);
  else memcpy(out, job->src + (size_t)(base + c) * job->block, job->block);
}

/* Output rows [begin, end) of the innermost padded dimension. */
static void pad_rows(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const pad_job *job = arg;
  const pad_plan *plan = job->plan;
  const int32_t inner = plan->rank - 1;
  const int64_t row = plan->shape[inner], tail = row - plan->lead - plan->run;
  const size_t block = job->block;
  int64_t position[EDGE_MAX_RANK] = {0}, rest = begin;
  for (int32_t d = inner - 1; d >= 0; --d) {
    position[d] = rest % plan->shape[d];
    rest /= plan->shape[d];
  }
  for (int64_t r = begin; r < end; ++r) {
    /* x offset of the row's outer coordinates, or -1 when any of them falls in constant padding. */
    int64_t base = 0;
    for (int32_t d = 0; d < inner && base >= 0; ++d) {
      int64_t c = plan->source[d][position[d]];
      base = c < 0 ? -1 : base + c * plan->x_strides[d];
    }
    char *out = job->dst + (size_t)(r * row) * block;
    if (base < 0) {
      fill_cells(out, row * plan->block, plan->value, job->size, plan->zero);
    } else {
      if (plan->constant) {
        fill_cells(out, plan->lead * plan->block, plan->value, job->size, plan->zero);
      } else {
        for (int64_t o = 0; o < plan->lead; ++o) table_element(job, base, o, out + (size_t)o * block);
      }
      if (plan->run > 0)
        copy_bytes(out + (size_t)plan->lead * block, job->src + (size_t)(base + plan->run_source) * block,
                   (size_t)plan->run * block);
      if (plan->constant) {
        fill_cells(out + (size_t)(plan->lead + plan->run) * block, tail * plan->block, plan->value, job->size,
                   plan->zero);
      } else {
        for (int64_t o = plan->lead + plan->run; o < row; ++o) table_element(job, base, o, out + (size_t)o * block);
      }
    }
    for (int32_t d = inner - 1; d >= 0; --d) {
      if (++position[d] < plan->shape[d]) break;
      position[d] = 0;
    }
  }
}

static edge_status pad_eval(edge_context *ctx, edge_node *node) {
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  const pad_plan *plan = node->plan;
  size_t size = edge_dtype_size(y->dtype);
  int64_t total = edge_num_elements(y->rank, y->shape);
  if (total == 0) return EDGE_OK;
  if (plan->rank == 0) {
    memcpy(y->data, x->data, size);
    return EDGE_OK;
  }
  pad_job job = {plan, x->data, y->data, size, size * (size_t)plan->block};
  const int64_t row_bytes = plan->shape[plan->rank - 1] * (int64_t)job.block;
  edge_nd_parallel(ctx, total / (plan->shape[plan->rank - 1] * plan->block), 1 + 16384 / (row_bytes + 1),
                   pad_rows, &job);
  return EDGE_OK;
}

static void pad_release(edge_node *node) {
  free_pad_plan(node->plan);
  node->plan = NULL;
}

const edge_op_registration edge_op_pad = {pad_prepare, pad_eval, pad_release};

/* CAST: x -> y, the output dtype being the output tensor's. Values pass through one of two
 * intermediate forms: float (from float32/float16/bfloat16/float64) or int64 (from integers and bool),
 * in blocks so each loop switches on a dtype once per block rather than once per element. float64,
 * bfloat16, int16, uint16, uint32 and uint64 exist only at a model's boundary, where the importer casts
 * them to and from the float32, int32 or int64 it computes in; those casts are exact except from
 * uint64, whose values past INT64_MAX have no int64 form: the cast refuses them.
 *
 * Float to integer truncates toward zero (NumPy astype, ONNX Cast). Values a C conversion would
 * leave undefined are given a defined result: NaN becomes 0; to int32/int64 the value saturates at
 * the type's range; to int8/uint8 it is first converted to int32 (saturating) and then wrapped to
 * 8 bits, which is what NumPy and onnxruntime produce on x86 for values within int32 range
 * (-1.0 -> 255 as uint8); int16 and uint16 likewise. Float to uint32/uint64 goes through int64
 * (saturating) and wraps. Integer to narrower integer wraps (two's complement). To bool: x != 0.
 * float32 to bfloat16 rounds to nearest even (NaN stays NaN).
 *
 * The narrow dtypes (float8, float4, int4/uint4, int2/uint2) are boundary dtypes too, read and
 * written element by element through narrow.c's codecs (the packed ones by element index, low bits
 * first). To float8 the node's saturate and round_mode options apply as ONNX Cast defines them.
 * Threads split the elements in whole bytes of the packed side, so no two write one byte. */
#include <math.h>
#include <string.h>

#include "broadcast.h"
#include "ops.h"

#define CAST_BLOCK 256

typedef struct {
  edge_dtype from, to;
  bool saturate;
  edge_cast_round_kind round;
  const char *x;
  char *y;
  int64_t n, unit; /* elements, and the elements per unit of work (4 when a side is packed) */
} cast_job;

static bool is_float(edge_dtype dtype) {
  return dtype == EDGE_FLOAT32 || dtype == EDGE_FLOAT16 || dtype == EDGE_FLOAT64 || dtype == EDGE_BFLOAT16 ||
         edge_is_narrow_float(dtype);
}

static bool is_packed(edge_dtype dtype) { return edge_dtype_bits(dtype) < 8; }

/* One element's code of a narrow dtype: a byte of its own, or bits of a packed byte. */
static uint8_t narrow_code(edge_dtype dtype, const void *base, int64_t index) {
  int32_t bits = edge_dtype_bits(dtype);
  return bits == 8 ? ((const uint8_t *)base)[index] : edge_packed_get(base, index, bits);
}

static void set_narrow_code(edge_dtype dtype, void *base, int64_t index, uint8_t code) {
  int32_t bits = edge_dtype_bits(dtype);
  if (bits == 8) {
    ((uint8_t *)base)[index] = code;
  } else {
    edge_packed_set(base, index, bits, code);
  }
}

static float bfloat16_to_float(uint16_t b) {
  uint32_t bits = (uint32_t)b << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static uint16_t float_to_bfloat16(float f) {
  uint32_t bits;
  memcpy(&bits, &f, 4);
  if (isnan(f)) return (uint16_t)((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return (uint16_t)(bits >> 16);
}

static int64_t float_to_int64_saturated(float v) {
  if (isnan(v)) return 0;
  /* 2^63 is exactly representable as float; anything at or above it saturates. */
  if (v >= 9223372036854775808.0f) return INT64_MAX;
  if (v < -9223372036854775808.0f) return INT64_MIN;
  return (int64_t)v;
}

static int32_t float_to_int32_saturated(float v) {
  if (isnan(v)) return 0;
  if (v >= 2147483648.0f) return INT32_MAX;
  if (v < -2147483648.0f) return INT32_MIN;
  return (int32_t)v;
}

/* Elements [start, start + n) of base, as float or int64. */
static void read_floats(edge_dtype dtype, const void *base, int64_t start, int64_t n, float *out) {
  if (edge_is_narrow_float(dtype)) {
    for (int64_t i = 0; i < n; ++i) out[i] = edge_narrow_to_float(dtype, narrow_code(dtype, base, start + i));
    return;
  }
  const void *src = (const char *)base + start * (int64_t)edge_dtype_size(dtype);
  if (dtype == EDGE_FLOAT32) {
    memcpy(out, src, (size_t)n * sizeof *out);
  } else if (dtype == EDGE_FLOAT64) {
    const double *d = src;
    for (int64_t i = 0; i < n; ++i) out[i] = (float)d[i];
  } else if (dtype == EDGE_BFLOAT16) {
    const uint16_t *b = src;
    for (int64_t i = 0; i < n; ++i) out[i] = bfloat16_to_float(b[i]);
  } else {
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; ++i) out[i] = edge_half_to_float(h[i]);
  }
}

static void read_integers(edge_dtype dtype, const void *base, int64_t start, int64_t n, int64_t *out) {
  if (is_packed(dtype)) {
    for (int64_t i = 0; i < n; ++i) out[i] = edge_narrow_int_from_code(dtype, narrow_code(dtype, base, start + i));
    return;
  }
  const void *src = (const char *)base + start * (int64_t)edge_dtype_size(dtype);
  switch (dtype) {
    case EDGE_INT8: for (int64_t i = 0; i < n; ++i) out[i] = ((const int8_t *)src)[i]; return;
    case EDGE_UINT8: for (int64_t i = 0; i < n; ++i) out[i] = ((const uint8_t *)src)[i]; return;
    case EDGE_INT32: for (int64_t i = 0; i < n; ++i) out[i] = ((const int32_t *)src)[i]; return;
    case EDGE_INT64: memcpy(out, src, (size_t)n * sizeof *out); return;
    case EDGE_BOOL: for (int64_t i = 0; i < n; ++i) out[i] = ((const uint8_t *)src)[i] != 0; return;
    case EDGE_INT16: for (int64_t i = 0; i < n; ++i) out[i] = ((const int16_t *)src)[i]; return;
    case EDGE_UINT16: for (int64_t i = 0; i < n; ++i) out[i] = ((const uint16_t *)src)[i]; return;
    case EDGE_UINT32: for (int64_t i = 0; i < n; ++i) out[i] = ((const uint32_t *)src)[i]; return;
    /* cast_eval has refused values past INT64_MAX. */
    case EDGE_UINT64: for (int64_t i = 0; i < n; ++i) out[i] = (int64_t)((const uint64_t *)src)[i]; return;
    default: return;
  }
}

static void write_from_floats(const cast_job *job, const float *in, int64_t start, int64_t n) {
  edge_dtype dtype = job->to;
  if (edge_is_narrow_float(dtype)) {
    for (int64_t i = 0; i < n; ++i)
      set_narrow_code(dtype, job->y, start + i, edge_float_to_narrow(dtype, in[i], job->saturate, job->round));
    return;
  }
  if (is_packed(dtype)) {
    for (int64_t i = 0; i < n; ++i) set_narrow_code(dtype, job->y, start + i, edge_narrow_int_from_float(dtype, in[i]));
    return;
  }
  void *dst = job->y + start * (int64_t)edge_dtype_size(dtype);
  switch (dtype) {
    case EDGE_FLOAT32: memcpy(dst, in, (size_t)n * sizeof *in); return;
    case EDGE_FLOAT16: for (int64_t i = 0; i < n; ++i) ((uint16_t *)dst)[i] = edge_float_to_half(in[i]); return;
    case EDGE_INT8:
      for (int64_t i = 0; i < n; ++i) ((int8_t *)dst)[i] = (int8_t)(uint8_t)(uint32_t)float_to_int32_saturated(in[i]);
      return;
    case EDGE_UINT8:
      for (int64_t i = 0; i < n; ++i) ((uint8_t *)dst)[i] = (uint8_t)(uint32_t)float_to_int32_saturated(in[i]);
      return;
    case EDGE_INT32: for (int64_t i = 0; i < n; ++i) ((int32_t *)dst)[i] = float_to_int32_saturated(in[i]); return;
    case EDGE_INT64: for (int64_t i = 0; i < n; ++i) ((int64_t *)dst)[i] = float_to_int64_saturated(in[i]); return;
    case EDGE_BOOL: for (int64_t i = 0; i < n; ++i) ((uint8_t *)dst)[i] = in[i] != 0.0f; return;
    case EDGE_FLOAT64: for (int64_t i = 0; i < n; ++i) ((double *)dst)[i] = in[i]; return;
    case EDGE_BFLOAT16: for (int64_t i = 0; i < n; ++i) ((uint16_t *)dst)[i] = float_to_bfloat16(in[i]); return;
    case EDGE_INT16:
      for (int64_t i = 0; i < n; ++i) ((int16_t *)dst)[i] = (int16_t)(uint16_t)(uint32_t)float_to_int32_saturated(in[i]);
      return;
    case EDGE_UINT16:
      for (int64_t i = 0; i < n; ++i) ((uint16_t *)dst)[i] = (uint16_t)(uint32_t)float_to_int32_saturated(in[i]);
      return;
    case EDGE_UINT32:
      for (int64_t i = 0; i < n; ++i) ((uint32_t *)dst)[i] = (uint32_t)(uint64_t)float_to_int64_saturated(in[i]);
      return;
    case EDGE_UINT64:
      for (int64_t i = 0; i < n; ++i) ((uint64_t *)dst)[i] = (uint64_t)float_to_int64_saturated(in[i]);
      return;
    default: return; /* the narrow dtypes, written above */
  }
}

static void write_from_integers(const cast_job *job, const int64_t *in, int64_t start, int64_t n) {
  edge_dtype dtype = job->to;
  if (edge_is_narrow_float(dtype)) {
    for (int64_t i = 0; i < n; ++i)
      set_narrow_code(dtype, job->y, start + i, edge_float_to_narrow(dtype, (float)in[i], job->saturate, job->round));
    return;
  }
  if (is_packed(dtype)) { /* integers wrap to the low bits (two's complement) */
    for (int64_t i = 0; i < n; ++i) set_narrow_code(dtype, job->y, start + i, (uint8_t)((uint64_t)in[i] & 0xffu));
    return;
  }
  void *dst = job->y + start * (int64_t)edge_dtype_size(dtype);
  switch (dtype) {
    case EDGE_FLOAT32: for (int64_t i = 0; i < n; ++i) ((float *)dst)[i] = (float)in[i]; return;
    case EDGE_FLOAT16:
      for (int64_t i = 0; i < n; ++i) ((uint16_t *)dst)[i] = edge_float_to_half((float)in[i]);
      return;
    case EDGE_INT8: for (int64_t i = 0; i < n; ++i) ((int8_t *)dst)[i] = (int8_t)(uint8_t)(uint64_t)in[i]; return;
    case EDGE_UINT8: for (int64_t i = 0; i < n; ++i) ((uint8_t *)dst)[i] = (uint8_t)(uint64_t)in[i]; return;
    case EDGE_INT32: for (int64_t i = 0; i < n; ++i) ((int32_t *)dst)[i] = (int32_t)(uint32_t)(uint64_t)in[i]; return;
    case EDGE_INT64: memcpy(dst, in, (size_t)n * sizeof *in); return;
    case EDGE_BOOL: for (int64_t i = 0; i < n; ++i) ((uint8_t *)dst)[i] = in[i] != 0; return;
    case EDGE_FLOAT64: for (int64_t i = 0; i < n; ++i) ((double *)dst)[i] = (double)in[i]; return;
    case EDGE_BFLOAT16:
      for (int64_t i = 0; i < n; ++i) ((uint16_t *)dst)[i] = float_to_bfloat16((float)in[i]);
      return;
    case EDGE_INT16: for (int64_t i = 0; i < n; ++i) ((int16_t *)dst)[i] = (int16_t)(uint16_t)(uint64_t)in[i]; return;
    case EDGE_UINT16: for (int64_t i = 0; i < n; ++i) ((uint16_t *)dst)[i] = (uint16_t)(uint64_t)in[i]; return;
    case EDGE_UINT32: for (int64_t i = 0; i < n; ++i) ((uint32_t *)dst)[i] = (uint32_t)(uint64_t)in[i]; return;
    case EDGE_UINT64: for (int64_t i = 0; i < n; ++i) ((uint64_t *)dst)[i] = (uint64_t)in[i]; return;
    default: return; /* the narrow dtypes, written above */
  }
}


static void cast_range(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const cast_job *job = arg;
  begin *= job->unit;
  end = end * job->unit < job->n ? end * job->unit : job->n;
  if (job->from == job->to && !is_packed(job->from)) {
    size_t size = edge_dtype_size(job->from);
    memcpy(job->y + begin * (int64_t)size, job->x + begin * (int64_t)size, (size_t)(end - begin) * size);
    return;
  }
  for (int64_t start = begin; start < end; start += CAST_BLOCK) {
    int64_t n = end - start < CAST_BLOCK ? end - start : CAST_BLOCK;
    if (is_float(job->from)) {
      float block[CAST_BLOCK];
      read_floats(job->from, job->x, start, n, block);
      write_from_floats(job, block, start, n);
    } else {
      int64_t block[CAST_BLOCK];
      read_integers(job->from, job->x, start, n, block);
      write_from_integers(job, block, start, n);
    }
  }
}

static edge_status cast_prepare(edge_context *ctx, edge_node *node) {
  edge_status status = edge_op_check_arity(ctx, node, "CAST", 1, 1, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  if (edge_dtype_bits(x->dtype) == 0 || edge_dtype_bits(y->dtype) == 0)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "CAST '%s': unknown dtype (input %d, output %d)", edge_tensor_name(y),
                     (int)x->dtype, (int)y->dtype);
  return edge_set_shape(ctx, y, x->rank, x->shape);
}

static edge_status cast_eval(edge_context *ctx, edge_node *node) {
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  int64_t n = edge_num_elements(x->rank, x->shape);
  if (x->dtype == EDGE_UINT64 && y->dtype != EDGE_UINT64) {
    const uint64_t *values = x->data;
    for (int64_t i = 0; i < n; ++i)
      if (values[i] > (uint64_t)INT64_MAX)
        return edge_fail(ctx, EDGE_RUNTIME_ERROR, "CAST '%s': uint64 value %llu at index %lld of '%s' is past "
                         "INT64_MAX, which the int64 this model computes in cannot hold", edge_tensor_name(y),
                         (unsigned long long)values[i], (long long)i, edge_tensor_name(x));
  }
  int64_t unit = is_packed(x->dtype) || is_packed(y->dtype) ? 4 : 1;
  cast_job job = {x->dtype, y->dtype, node->options.cast.saturate, node->options.cast.round_mode, x->data, y->data,
                  n, unit};
  edge_nd_parallel(ctx, (n + unit - 1) / unit, 16384 / unit, cast_range, &job);
  return EDGE_OK;
}

const edge_op_registration edge_op_cast = {cast_prepare, cast_eval, NULL};

/* BITCAST: y holds x's bytes, read as y's dtype (ONNX BitCast); both dtypes have one size. */
static edge_status bitcast_prepare(edge_context *ctx, edge_node *node) {
  edge_status status = edge_op_check_arity(ctx, node, "BITCAST", 1, 1, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  size_t size = edge_dtype_size(x->dtype);
  if (size == 0 || size != edge_dtype_size(y->dtype))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "BITCAST '%s': input '%s' is %s and output %s; they must have one size",
                     edge_tensor_name(y), edge_tensor_name(x), edge_dtype_name(x->dtype), edge_dtype_name(y->dtype));
  return edge_set_shape(ctx, y, x->rank, x->shape);
}

static edge_status bitcast_eval(edge_context *ctx, edge_node *node) {
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  size_t bytes = (size_t)edge_num_elements(x->rank, x->shape) * edge_dtype_size(x->dtype);
  if (bytes && y->data != x->data) memcpy(y->data, x->data, bytes);
  return EDGE_OK;
}

const edge_op_registration edge_op_bitcast = {bitcast_prepare, bitcast_eval, NULL};

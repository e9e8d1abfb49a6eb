/* Helpers shared by the loader, the interpreter and the kernels. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

static _Thread_local char last_error[EDGE_ERROR_CAPACITY];

const char *edge_last_error(void) { return last_error; }

edge_status edge_set_last_error(edge_status status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  return status;
}

edge_status edge_fail(edge_context *ctx, edge_status status, const char *fmt, ...) {
  if (ctx && ctx->error) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->error, EDGE_ERROR_CAPACITY, fmt, ap);
    va_end(ap);
  }
  return status;
}

const char *edge_status_name(edge_status status) {
  switch (status) {
    case EDGE_OK: return "OK";
    case EDGE_INVALID_MODEL: return "INVALID_MODEL";
    case EDGE_INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case EDGE_UNSUPPORTED: return "UNSUPPORTED";
    case EDGE_OUT_OF_MEMORY: return "OUT_OF_MEMORY";
    case EDGE_BAD_STATE: return "BAD_STATE";
    case EDGE_RUNTIME_ERROR: return "RUNTIME_ERROR";
    case EDGE_IO_ERROR: return "IO_ERROR";
  }
  return "UNKNOWN";
}

const char *edge_dtype_name(edge_dtype dtype) {
  static const char *const names[] = {"float32", "float16", "int8", "uint8", "int32", "int64", "bool", "float64",
                                       "int16", "uint16", "uint32", "uint64", "bfloat16", "float8_e4m3fn",
                                       "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu",
                                       "float4_e2m1fn", "int4", "uint4", "int2", "uint2"};
  return (unsigned)dtype < sizeof names / sizeof names[0] ? names[dtype] : "unknown";
}

int32_t edge_dtype_bits(edge_dtype dtype) {
  switch (dtype) {
    case EDGE_FLOAT32: case EDGE_INT32: case EDGE_UINT32: return 32;
    case EDGE_FLOAT16: case EDGE_INT16: case EDGE_UINT16: case EDGE_BFLOAT16: return 16;
    case EDGE_INT8: case EDGE_UINT8: case EDGE_BOOL: return 8;
    case EDGE_FLOAT8_E4M3FN: case EDGE_FLOAT8_E4M3FNUZ: case EDGE_FLOAT8_E5M2: case EDGE_FLOAT8_E5M2FNUZ:
    case EDGE_FLOAT8_E8M0FNU: return 8;
    case EDGE_INT64: case EDGE_FLOAT64: case EDGE_UINT64: return 64;
    case EDGE_FLOAT4_E2M1FN: case EDGE_INT4: case EDGE_UINT4: return 4;
    case EDGE_INT2: case EDGE_UINT2: return 2;
  }
  return 0;
}

size_t edge_dtype_size(edge_dtype dtype) {
  int32_t bits = edge_dtype_bits(dtype);
  return bits % 8 ? 0 : (size_t)bits / 8;
}

size_t edge_tensor_bytes(edge_dtype dtype, int64_t elements) {
  return ((size_t)elements * (size_t)edge_dtype_bits(dtype) + 7) / 8;
}

int64_t edge_num_elements(int32_t rank, const int64_t *shape) {
  int64_t n = 1;
  for (int32_t i = 0; i < rank; ++i) n *= shape[i];
  return n;
}

void edge_format_shape(char *buf, size_t cap, int32_t rank, const int64_t *shape) {
  size_t used = 0;
  used += (size_t)snprintf(buf, cap, "[");
  for (int32_t i = 0; i < rank && used < cap; ++i)
    used += (size_t)snprintf(buf + used, cap - used, i ? ", %lld" : "%lld", (long long)shape[i]);
  if (used < cap) snprintf(buf + used, cap - used, "]");
}

edge_status edge_broadcast_shape(edge_context *ctx, const edge_tensor *a, const edge_tensor *b,
                                 int32_t *rank, int64_t *shape) {
  int32_t r = a->rank > b->rank ? a->rank : b->rank;
  for (int32_t i = 0; i < r; ++i) {
    int32_t ia = i - (r - a->rank), ib = i - (r - b->rank);
    int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
    if (da != db && da != 1 && db != 1) {
      char sa[128], sb[128];
      edge_format_shape(sa, sizeof sa, a->rank, a->shape);
      edge_format_shape(sb, sizeof sb, b->rank, b->shape);
      return edge_fail(ctx, EDGE_INVALID_MODEL, "shapes %s ('%s') and %s ('%s') do not broadcast", sa,
                       a->name ? a->name : "?", sb, b->name ? b->name : "?");
    }
    shape[i] = da == 1 ? db : da;
  }
  *rank = r;
  return EDGE_OK;
}

/* Element counts are bounded so that byte sizes never overflow: 2^46 elements of 8 bytes. */
#define EDGE_MAX_ELEMENTS ((int64_t)1 << 46)

edge_status edge_set_shape(edge_context *ctx, edge_tensor *t, int32_t rank, const int64_t *shape) {
  if (rank < 0 || rank > EDGE_MAX_RANK)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "tensor '%s': rank %d exceeds %d", t->name ? t->name : "?",
                     rank, EDGE_MAX_RANK);
  int64_t n = 1;
  for (int32_t i = 0; i < rank; ++i) {
    if (shape[i] < 0 || shape[i] > EDGE_MAX_ELEMENTS || (shape[i] > 0 && n > EDGE_MAX_ELEMENTS / shape[i]))
      return edge_fail(ctx, EDGE_INVALID_MODEL, "tensor '%s': dimension %d is %lld (negative or too large)",
                       t->name ? t->name : "?", i, (long long)shape[i]);
    n *= shape[i];
  }
  size_t nbytes = edge_tensor_bytes(t->dtype, n);
  if (ctx && ctx->memory_limit && nbytes > ctx->memory_limit)
    return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "tensor '%s' would need %zu bytes, over the memory limit of %llu",
                     t->name ? t->name : "?", nbytes, (unsigned long long)ctx->memory_limit);
  t->rank = rank;
  for (int32_t i = 0; i < rank; ++i) t->shape[i] = shape[i];
  t->nbytes = nbytes;
  return EDGE_OK;
}

float edge_half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else { /* subnormal: normalise */
      int e = -1;
      do { ++e; mant <<= 1; } while (!(mant & 0x400));
      bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

uint16_t edge_float_to_half(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000, exp = (x >> 23) & 0xff, mant = x & 0x7fffff;
  if (exp == 0xff) return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 : 0));
  int32_t e = (int32_t)exp - 127 + 15;
  if (e >= 31) return (uint16_t)(sign | 0x7c00);
  if (e <= 0) {
    if (e < -10) return (uint16_t)sign;
    mant |= 0x800000;
    uint32_t shift = (uint32_t)(14 - e), half = mant >> shift, rem = mant & ((1u << shift) - 1),
             mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) ++half;
    return (uint16_t)(sign | half);
  }
  uint32_t half = sign | ((uint32_t)e << 10) | (mant >> 13), rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) ++half; /* round to nearest even; may carry into exp */
  return (uint16_t)half;
}

/* The narrow dtypes' element codecs: float8 (e4m3fn, e4m3fnuz, e5m2, e5m2fnuz, e8m0fnu), float4 e2m1fn
 * and the packed sub-byte integers. These dtypes exist only at a model's boundary; CAST reads and
 * writes them through these functions, computing in float32 (the floats) or int64 (the integers).
 *
 * The small floats are decoded and encoded by bit arithmetic on one description per format
 * (mantissa bits, exponent bias, largest finite code, how NaN and infinity are spelled), so the four
 * float8 formats and float4 share one rounding path: round to nearest even on the target's grid,
 * subnormals included, with the carry out of the mantissa moving into the exponent by itself. The
 * results match ml_dtypes code for code (tests/converter/test_onnx_narrow_dtypes.py sweeps every code and the
 * midpoints between neighbours); e8m0 follows ONNX Cast's rounding modes instead. */
#include <math.h>
#include <string.h>

#include "internal.h"

typedef enum {
  NAN_IEEE,  /* exponent all ones: infinity (mantissa 0) or NaN (e5m2) */
  NAN_FN,    /* magnitude all ones is NaN; no infinity (e4m3fn) */
  NAN_FNUZ,  /* 0x80 (negative zero's code) is the one NaN; no infinity, no negative zero */
  NAN_NONE   /* neither NaN nor infinity (e2m1fn): both saturate, NaN becomes a zero */
} nan_style;

typedef struct {
  int32_t bits, mantissa, bias;
  uint8_t max_finite; /* largest finite magnitude code */
  nan_style style;
} float_format;

static const float_format *format_of(edge_dtype dtype) {
  static const float_format e4m3fn = {8, 3, 7, 0x7e, NAN_FN}, e4m3fnuz = {8, 3, 8, 0x7f, NAN_FNUZ},
                            e5m2 = {8, 2, 15, 0x7b, NAN_IEEE}, e5m2fnuz = {8, 2, 16, 0x7f, NAN_FNUZ},
                            e2m1fn = {4, 1, 1, 0x7, NAN_NONE};
  switch (dtype) {
    case EDGE_FLOAT8_E4M3FN: return &e4m3fn;
    case EDGE_FLOAT8_E4M3FNUZ: return &e4m3fnuz;
    case EDGE_FLOAT8_E5M2: return &e5m2;
    case EDGE_FLOAT8_E5M2FNUZ: return &e5m2fnuz;
    case EDGE_FLOAT4_E2M1FN: return &e2m1fn;
    default: return NULL;
  }
}

bool edge_is_narrow_float(edge_dtype dtype) { return format_of(dtype) != NULL || dtype == EDGE_FLOAT8_E8M0FNU; }

float edge_narrow_to_float(edge_dtype dtype, uint8_t code) {
  if (dtype == EDGE_FLOAT8_E8M0FNU) return code == 0xff ? NAN : ldexpf(1.0f, (int)code - 127);
  const float_format *f = format_of(dtype);
  uint8_t sign_bit = (uint8_t)(1u << (f->bits - 1)), magnitude = code & (uint8_t)(sign_bit - 1);
  float sign = code & sign_bit ? -1.0f : 1.0f;
  int32_t exponent = magnitude >> f->mantissa, mantissa = magnitude & ((1 << f->mantissa) - 1);
  int32_t exponent_max = (1 << (f->bits - 1 - f->mantissa)) - 1;
  switch (f->style) {
    case NAN_FNUZ: if (code == sign_bit) return NAN; break;
    case NAN_FN: if (magnitude == (uint8_t)(sign_bit - 1)) return copysignf(NAN, sign); break;
    case NAN_IEEE:
      if (exponent == exponent_max) return mantissa ? copysignf(NAN, sign) : sign * INFINITY;
      break;
    case NAN_NONE: break;
  }
  if (exponent == 0) return sign * ldexpf((float)mantissa, 1 - f->bias - f->mantissa);
  return sign * ldexpf((float)(mantissa | (1 << f->mantissa)), exponent - f->bias - f->mantissa);
}

/* The code for a value past the largest finite one (or infinite): saturated, or what the format
 * spells overflow with. */
static uint8_t overflow_code(const float_format *f, uint8_t sign, bool saturate) {
  if (saturate || f->style == NAN_NONE) return sign | f->max_finite;
  switch (f->style) {
    case NAN_IEEE: return sign | (uint8_t)(f->max_finite + 1);  /* the infinity after the largest finite */
    case NAN_FN: return sign | (uint8_t)(f->max_finite + 1);    /* all ones: NaN */
    default: return 0x80;                                      /* FNUZ's NaN */
  }
}

static uint8_t encode_e8m0(float value, bool saturate, edge_cast_round_kind round) {
  uint32_t bits;
  memcpy(&bits, &value, 4);
  uint32_t exponent = (bits >> 23) & 0xff, fraction = bits & 0x7fffff;
  if (exponent == 0xff) return 0xff;
  bool up = false;
  if (round == EDGE_CAST_ROUND_UP) {
    up = fraction != 0;
  } else if (round == EDGE_CAST_ROUND_NEAREST) {
    /* Half or more of the way to the next power of two goes up; below the normal range (a float32
     * subnormal) exactly half stays down, as ONNX's reference rounds. */
    up = (fraction & 0x400000) && ((fraction & 0x3fffff) || exponent > 0);
  }
  if (up && exponent == 0xfe && saturate) up = false;
  return (uint8_t)(exponent + up);
}

uint8_t edge_float_to_narrow(edge_dtype dtype, float value, bool saturate, edge_cast_round_kind round) {
  if (dtype == EDGE_FLOAT8_E8M0FNU) return encode_e8m0(value, saturate, round);
  const float_format *f = format_of(dtype);
  uint8_t sign_bit = (uint8_t)(1u << (f->bits - 1)), sign = signbit(value) ? sign_bit : 0;
  if (isnan(value)) {
    switch (f->style) {
      case NAN_IEEE: return sign | (uint8_t)(f->max_finite + 3);  /* exponent all ones, mantissa's top bit */
      case NAN_FN: return sign | (uint8_t)(sign_bit - 1);
      case NAN_FNUZ: return 0x80;
      case NAN_NONE: return sign ^ sign_bit;                      /* a zero, with ml_dtypes' sign */
    }
  }
  float magnitude = fabsf(value);
  if (isinf(magnitude)) return overflow_code(f, sign, saturate);
  int32_t exponent;
  frexpf(magnitude, &exponent);
  --exponent; /* magnitude is in [2^exponent, 2^(exponent + 1)) */
  int64_t code;
  if (magnitude == 0.0f) {
    code = 0;
  } else if (exponent < 1 - f->bias) {
    /* Below the smallest normal: multiples of the smallest subnormal; rounding up to 2^mantissa
     * gives the smallest normal's code. */
    code = (int64_t)rintf(ldexpf(magnitude, f->bias - 1 + f->mantissa));
  } else {
    /* The significand scaled to [2^m, 2^(m+1)]; reaching 2^(m+1) carries into the exponent. */
    int64_t significand = (int64_t)rintf(ldexpf(magnitude, f->mantissa - exponent));
    code = ((int64_t)(exponent + f->bias) << f->mantissa) + significand - ((int64_t)1 << f->mantissa);
  }
  if (code > f->max_finite) return overflow_code(f, sign, saturate);
  if (code == 0 && f->style == NAN_FNUZ) return 0;
  return sign | (uint8_t)code;
}

int64_t edge_narrow_int_from_code(edge_dtype dtype, uint8_t code) {
  int32_t bits = edge_dtype_bits(dtype);
  bool is_signed = dtype == EDGE_INT4 || dtype == EDGE_INT2;
  int64_t value = code & ((1 << bits) - 1);
  return is_signed && value >= (1 << (bits - 1)) ? value - (1 << bits) : value;
}

uint8_t edge_narrow_int_from_float(edge_dtype dtype, float value) {
  int32_t bits = edge_dtype_bits(dtype);
  bool is_signed = dtype == EDGE_INT4 || dtype == EDGE_INT2;
  float low = is_signed ? -(float)(1 << (bits - 1)) : 0.0f, high = (float)((1 << (bits - (is_signed ? 1 : 0))) - 1);
  float truncated = truncf(value);
  /* ONNX leaves out-of-range values undefined; NaN and those become 0, as ml_dtypes gives. */
  if (!(truncated >= low && truncated <= high)) return 0;
  return (uint8_t)((int32_t)truncated & ((1 << bits) - 1));
}

uint8_t edge_packed_get(const void *data, int64_t index, int32_t bits) {
  int32_t per_byte = 8 / bits, shift = (int32_t)(index % per_byte) * bits;
  return (uint8_t)((((const uint8_t *)data)[index / per_byte] >> shift) & ((1u << bits) - 1));
}

void edge_packed_set(void *data, int64_t index, int32_t bits, uint8_t code) {
  int32_t per_byte = 8 / bits, shift = (int32_t)(index % per_byte) * bits;
  uint8_t *byte = (uint8_t *)data + index / per_byte, mask = (uint8_t)(((1u << bits) - 1) << shift);
  *byte = (uint8_t)((*byte & ~mask) | ((code << shift) & mask));
}

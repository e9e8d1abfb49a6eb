/* Fills the vector family's table for an ISA level from the kernels compiled per ISA out of
 * kernels/vector/ (their names end in __sse2, __avx2, __avx512, __neon). The scalar level leaves
 * every entry NULL, so EDGE_ISA=scalar runs the ops' reference code. */
#include <string.h>

#include "config.h"

/* Unary kernels by the UNARY kind they implement. */
#define EDGE_VECTOR_UNARY_LIST(X, isa) \
  X(relu, RELU, isa)                   \
  X(relu6, RELU6, isa)                 \
  X(clip, CLIP, isa)                   \
  X(leaky_relu, LEAKY_RELU, isa)       \
  X(hard_sigmoid, HARD_SIGMOID, isa)   \
  X(hard_swish, HARD_SWISH, isa)       \
  X(exp, EXP, isa)                     \
  X(sigmoid, SIGMOID, isa)             \
  X(tanh, TANH, isa)                   \
  X(erf, ERF, isa)                     \
  X(gelu, GELU, isa)                   \
  X(gelu_tanh, GELU_TANH, isa)         \
  X(silu, SILU, isa)                   \
  X(sqrt, SQRT, isa)                   \
  X(rsqrt, RSQRT, isa)                 \
  X(reciprocal, RECIPROCAL, isa)       \
  X(neg, NEG, isa)                     \
  X(abs, ABS, isa)                     \
  X(square, SQUARE, isa)               \
  X(sign, SIGN, isa)

#define EDGE_VECTOR_BINARY_LIST(X, isa) \
  X(add, ADD, isa)                      \
  X(sub, SUB, isa)                      \
  X(mul, MUL, isa)                      \
  X(div, DIV, isa)                      \
  X(min, MIN, isa)                      \
  X(max, MAX, isa)                      \
  X(prelu, PRELU, isa)

#define EDGE_VECTOR_REDUCE_LIST(X, isa) \
  X(sum, SUM, isa)                      \
  X(max, MAX, isa)                      \
  X(min, MIN, isa)                      \
  X(abs_sum, ABS_SUM, isa)              \
  X(square_sum, SQUARE_SUM, isa)

#define DECLARE_UNARY(name, KIND, isa) \
  void edge_f32_v##name##__##isa(size_t, const float *, float *, const edge_f32_unary_params *);
#define DECLARE_BINARY(name, KIND, isa)                                           \
  void edge_f32_v##name##__##isa(size_t, const float *, const float *, float *);  \
  void edge_f32_v##name##c__##isa(size_t, const float *, const float *, float *); \
  void edge_f32_vr##name##c__##isa(size_t, const float *, const float *, float *);
#define DECLARE_REDUCE(name, KIND, isa)                   \
  float edge_f32_r##name##__##isa(size_t, const float *); \
  void edge_f32_raccumulate_##name##__##isa(size_t, size_t, const float *, size_t, float *);

#define SET_UNARY(name, KIND, isa) out->unary[EDGE_UNARY_##KIND] = edge_f32_v##name##__##isa;
#define SET_BINARY(name, KIND, isa)                                \
  out->binary_vv[EDGE_BINARY_##KIND] = edge_f32_v##name##__##isa;  \
  out->binary_vc[EDGE_BINARY_##KIND] = edge_f32_v##name##c__##isa; \
  out->binary_rvc[EDGE_BINARY_##KIND] = edge_f32_vr##name##c__##isa;
#define SET_REDUCE(name, KIND, isa)                              \
  out->rreduce[EDGE_VREDUCE_##KIND] = edge_f32_r##name##__##isa; \
  out->raccumulate[EDGE_VREDUCE_##KIND] = edge_f32_raccumulate_##name##__##isa;

/* Declares one ISA's kernels and defines fill_<isa>, which points the table at them. */
#define EDGE_VECTOR_ISA(isa)                                                                           \
  EDGE_VECTOR_UNARY_LIST(DECLARE_UNARY, isa)                                                           \
  EDGE_VECTOR_BINARY_LIST(DECLARE_BINARY, isa)                                                         \
  EDGE_VECTOR_REDUCE_LIST(DECLARE_REDUCE, isa)                                                         \
  void edge_f32_softmax__##isa(size_t, const float *, float *);                                        \
  void edge_f32_log_softmax__##isa(size_t, const float *, float *);                                    \
  void edge_f32_softmax_strided__##isa(size_t, size_t, size_t, const float *, float *, int);           \
  void edge_f32_layernorm__##isa(size_t, const float *, const float *, const float *, float, float *); \
  void edge_f32_rmsnorm__##isa(size_t, const float *, const float *, const float *, float, float *);   \
  float edge_f32_attention_row__##isa(size_t, float *, float, float, const float *, float *, float *); \
  void edge_f32_maxpool__##isa(size_t, size_t, const float *, size_t, size_t, size_t, float *, float); \
  void edge_f32_avgpool__##isa(size_t, size_t, const float *, size_t, size_t, size_t, float *, float); \
  void edge_x32_transpose__##isa(size_t, size_t, const uint32_t *, size_t, uint32_t *, size_t);        \
  void edge_f32_vrelu_grad__##isa(size_t, const float *, const float *, float *);                      \
  void edge_f32_maxpool_grad__##isa(size_t, const float *const *, float *const *, const float *, size_t); \
  void edge_f32_channel_moments__##isa(size_t, size_t, const float *, float *, float *);               \
  void edge_f32_channel_grad_sums__##isa(size_t, size_t, const float *, const float *, const float *, float *, \
                                         float *);                                                     \
  void edge_f32_channel_affine__##isa(size_t, size_t, const float *, const float *, const float *,      \
                                      const float *, float *);                                         \
  void edge_f32_channel_grad_apply__##isa(size_t, size_t, const float *, const float *, const float *,  \
                                          const float *, const float *, const float *, float *);       \
  void edge_f32_adam__##isa(size_t, float *, const float *, float *, float *, const edge_f32_adam_params *); \
  void edge_f32_bilinear__##isa(size_t, const float *const *, const float *, float *, edge_bilinear_mode); \
  void edge_f32_bilinear_line__##isa(size_t, size_t, const float *, const float *, const int64_t *,        \
                                     const int64_t *, const float *, float, size_t, float *);             \
  void edge_s8_maxpool__##isa(size_t, size_t, const int8_t *, size_t, size_t, size_t, int8_t *, int8_t,   \
                              int8_t);                                                                 \
  void edge_s8_raccumulate_sum__##isa(size_t, size_t, const int8_t *, size_t, int32_t *);              \
  void edge_s8_vadd__##isa(size_t, const int8_t *, const int8_t *, int8_t *, const edge_s8_vadd_params *); \
  void edge_s8_quantize__##isa(size_t, const float *, int8_t *, float, int32_t);                       \
  void edge_s8_lut__##isa(size_t, const int8_t *, int8_t *, const int8_t *);                           \
  void edge_s8_layernorm__##isa(size_t, const int8_t *, int8_t *, const float *, const float *,          \
                                const edge_s8_layernorm_params *);                                     \
  void edge_s8_matmul__##isa(size_t, size_t, size_t, const int16_t *, const int16_t *, int32_t *, size_t); \
  void edge_s8_matmul_pack_a__##isa(size_t, size_t, const int8_t *, size_t, int32_t, int16_t *);       \
  void edge_s8_matmul_pack_b__##isa(size_t, size_t, const int8_t *, size_t, int32_t, int16_t *);       \
  void edge_s8_requantize__##isa(size_t, const int32_t *, int8_t *, const edge_s8_requantize_params *);  \
  void edge_s8_softmax__##isa(size_t, const int8_t *, int8_t *, const int32_t *);                      \
  static void fill_##isa(edge_vector_kernels *out) {                                                   \
    EDGE_VECTOR_UNARY_LIST(SET_UNARY, isa)                                                             \
    EDGE_VECTOR_BINARY_LIST(SET_BINARY, isa)                                                           \
    EDGE_VECTOR_REDUCE_LIST(SET_REDUCE, isa)                                                           \
    out->softmax = edge_f32_softmax__##isa;                                                            \
    out->log_softmax = edge_f32_log_softmax__##isa;                                                    \
    out->softmax_strided = edge_f32_softmax_strided__##isa;                                            \
    out->layernorm = edge_f32_layernorm__##isa;                                                        \
    out->rmsnorm = edge_f32_rmsnorm__##isa;                                                            \
    out->attention_row = edge_f32_attention_row__##isa;                                                \
    out->maxpool = edge_f32_maxpool__##isa;                                                            \
    out->avgpool = edge_f32_avgpool__##isa;                                                            \
    out->transpose = edge_x32_transpose__##isa;                                                        \
    out->relu_grad = edge_f32_vrelu_grad__##isa;                                                       \
    out->maxpool_grad = edge_f32_maxpool_grad__##isa;                                                  \
    out->channel_moments = edge_f32_channel_moments__##isa;                                            \
    out->channel_grad_sums = edge_f32_channel_grad_sums__##isa;                                        \
    out->channel_affine = edge_f32_channel_affine__##isa;                                              \
    out->channel_grad_apply = edge_f32_channel_grad_apply__##isa;                                      \
    out->adam = edge_f32_adam__##isa;                                                                  \
    out->bilinear = edge_f32_bilinear__##isa;                                                          \
    out->bilinear_line = edge_f32_bilinear_line__##isa;                                                \
    out->s8_maxpool = edge_s8_maxpool__##isa;                                                          \
    out->s8_raccumulate_sum = edge_s8_raccumulate_sum__##isa;                                          \
    out->s8_vadd = edge_s8_vadd__##isa;                                                                \
    out->s8_quantize = edge_s8_quantize__##isa;                                                        \
    out->s8_lut = edge_s8_lut__##isa;                                                                  \
    out->s8_layernorm = edge_s8_layernorm__##isa;                                                      \
    out->s8_matmul = edge_s8_matmul__##isa;                                                            \
    out->s8_matmul_pack_a = edge_s8_matmul_pack_a__##isa;                                              \
    out->s8_matmul_pack_b = edge_s8_matmul_pack_b__##isa;                                              \
    out->s8_requantize = edge_s8_requantize__##isa;                                                    \
    out->s8_softmax = edge_s8_softmax__##isa;                                                          \
  }

#if defined(__x86_64__) || defined(_M_X64)
EDGE_VECTOR_ISA(sse2)
EDGE_VECTOR_ISA(avx2)
EDGE_VECTOR_ISA(avx512)
#elif defined(__aarch64__)
EDGE_VECTOR_ISA(neon)
#endif

void edge_vector_kernels_init(edge_isa_level isa, edge_vector_kernels *out) {
  memset(out, 0, sizeof *out);
  out->isa_name = edge_isa_level_name(isa);
  switch (isa) {
#if defined(__x86_64__) || defined(_M_X64)
    case EDGE_ISA_SSE2: fill_sse2(out); break;
    case EDGE_ISA_AVX2: fill_avx2(out); break;
    case EDGE_ISA_AVX512:
    case EDGE_ISA_AVX512VNNI: fill_avx512(out); break;
#elif defined(__aarch64__)
    case EDGE_ISA_NEON:
    case EDGE_ISA_NEONDOT: fill_neon(out); break;
#endif
    default: break;
  }
}

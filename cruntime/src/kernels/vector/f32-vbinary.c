/* Elementwise binary kernels (edge_f32_vbinary_ukernel) in three operand shapes:
 *   edge_f32_v<op>__isa    y[i] = a[i] op b[i]
 *   edge_f32_v<op>c__isa   y[i] = a[i] op b[0]
 *   edge_f32_vr<op>c__isa  y[i] = b[0] op a[i]
 * exactly n elements, y may alias a or b, tails through the same vector code. ADD, SUB, MUL,
 * DIV, MIN, MAX and PRELU give the scalar reference's results bit for bit (one IEEE operation
 * each; MIN/MAX let a NaN operand win, a's first). Compiled once per ISA (see simd.h). */
#include "../vector.h"
#include "../simd.h"

EDGE_SIMD_INLINE f32xN op_add(f32xN a, f32xN b) { return vf_add(a, b); }
EDGE_SIMD_INLINE f32xN op_sub(f32xN a, f32xN b) { return vf_sub(a, b); }
EDGE_SIMD_INLINE f32xN op_mul(f32xN a, f32xN b) { return vf_mul(a, b); }
EDGE_SIMD_INLINE f32xN op_div(f32xN a, f32xN b) { return vf_div(a, b); }
EDGE_SIMD_INLINE f32xN op_min(f32xN a, f32xN b) {
  f32xN r = vf_min(b, a);
  r = vf_select(vf_unord(b, b), b, r);
  return vf_select(vf_unord(a, a), a, r);
}
EDGE_SIMD_INLINE f32xN op_max(f32xN a, f32xN b) {
  f32xN r = vf_max(b, a);
  r = vf_select(vf_unord(b, b), b, r);
  return vf_select(vf_unord(a, a), a, r);
}
EDGE_SIMD_INLINE f32xN op_prelu(f32xN a, f32xN b) { return vf_select(vf_lt(a, vf_zero()), vf_mul(a, b), a); }

/* B(i) gives b's vector at element i (a load, or the broadcast bv); B_PART(i, rest) its tail. */
#define EDGE_VBINARY_LOOP(B, B_PART, COMBINE)                                                    \
  size_t i = 0;                                                                                  \
  for (; i + 2 * EDGE_SIMD_N <= n; i += 2 * EDGE_SIMD_N) {                                       \
    f32xN r0 = COMBINE(vf_loadu(a + i), B(i));                                                   \
    f32xN r1 = COMBINE(vf_loadu(a + i + EDGE_SIMD_N), B(i + EDGE_SIMD_N));                       \
    vf_storeu(y + i, r0);                                                                        \
    vf_storeu(y + i + EDGE_SIMD_N, r1);                                                          \
  }                                                                                              \
  for (; i + EDGE_SIMD_N <= n; i += EDGE_SIMD_N) vf_storeu(y + i, COMBINE(vf_loadu(a + i), B(i))); \
  if (i < n) vf_store_partial(y + i, COMBINE(vf_load_partial(a + i, n - i), B_PART(i, n - i)), n - i);

#define B_VECTOR(i) vf_loadu(b + (i))
#define B_VECTOR_PART(i, rest) vf_load_partial(b + (i), (rest))
#define B_SCALAR(i) bv
#define B_SCALAR_PART(i, rest) bv

#define EDGE_VBINARY_KERNELS(name)                                                           \
  EDGE_SIMD_INLINE f32xN reversed_##name(f32xN a, f32xN b) { return op_##name(b, a); }       \
  void EDGE_SIMD_FN(f32_v##name)(size_t n, const float *a, const float *b, float *y) {       \
    EDGE_VBINARY_LOOP(B_VECTOR, B_VECTOR_PART, op_##name)                                    \
  }                                                                                          \
  void EDGE_SIMD_FN(f32_v##name##c)(size_t n, const float *a, const float *b, float *y) {    \
    const f32xN bv = vf_set1(b[0]);                                                          \
    EDGE_VBINARY_LOOP(B_SCALAR, B_SCALAR_PART, op_##name)                                    \
  }                                                                                          \
  void EDGE_SIMD_FN(f32_vr##name##c)(size_t n, const float *a, const float *b, float *y) {   \
    const f32xN bv = vf_set1(b[0]);                                                          \
    EDGE_VBINARY_LOOP(B_SCALAR, B_SCALAR_PART, reversed_##name)                              \
  }

EDGE_VBINARY_KERNELS(add)
EDGE_VBINARY_KERNELS(sub)
EDGE_VBINARY_KERNELS(mul)
EDGE_VBINARY_KERNELS(div)
EDGE_VBINARY_KERNELS(min)
EDGE_VBINARY_KERNELS(max)
EDGE_VBINARY_KERNELS(prelu)

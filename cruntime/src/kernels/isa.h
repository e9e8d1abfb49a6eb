/* Instruction sets the runtime has kernels for, and the one picked at start.
 *
 * The pick happens once (edge_isa_level_get: CPU features from cpuid/xgetbv on x86, getauxval
 * HWCAP on Linux/Android aarch64), lowered by the environment variable EDGE_ISA
 * (scalar|sse2|avx2|avx512|avx512vnni|neon|neondot) when it names a level this CPU supports; a name it does not
 * support, or does not know, leaves the detected level. Levels are ordered within an
 * architecture: a level includes every lower one of its architecture (x86: sse2 < avx2 < avx512 <
 * avx512vnni; aarch64: neon < neondot). Every family's kernels are chosen from it
 * in edge_kernels() (config.h), never per call. */
#ifndef EDGE_KERNELS_ISA_H
#define EDGE_KERNELS_ISA_H

typedef enum {
  EDGE_ISA_SCALAR = 0,
  EDGE_ISA_SSE2 = 1,    /* x86-64 baseline */
  EDGE_ISA_AVX2 = 2,    /* AVX2 + FMA3 */
  EDGE_ISA_AVX512 = 3,  /* AVX-512 F/BW/VL (+DQ) */
  EDGE_ISA_AVX512VNNI = 4, /* AVX512 + VNNI (vpdpbusd): int8 kernels of their own, float ones of AVX512 */
  EDGE_ISA_NEON = 5,    /* aarch64 ASIMD */
  EDGE_ISA_NEONDOT = 6, /* aarch64 ASIMD + dot product (sdot/udot) */
  EDGE_ISA_COUNT_
} edge_isa_level;

/* The level kernels run at (detected, possibly lowered by EDGE_ISA). Thread-safe; computed once. */
edge_isa_level edge_isa_level_get(void);
/* The highest level this CPU and OS support (ignores EDGE_ISA). */
edge_isa_level edge_isa_level_detected(void);
const char *edge_isa_level_name(edge_isa_level level);
/* Whether kernels of `level` can run here (compiled in and supported by the CPU). */
int edge_isa_level_supported(edge_isa_level level);

#endif

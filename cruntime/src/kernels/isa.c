/* Picks the ISA level once from what the CPU and the OS support (isa.h). On x86-64 the OS must
 * also save the wider registers on context switch (xgetbv), or using them would corrupt state. */
#include "isa.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#define EDGE_ARCH_X86_64 1
#include <cpuid.h>
#elif defined(__aarch64__)
#define EDGE_ARCH_AARCH64 1
#if defined(__linux__) || defined(__ANDROID__)
#include <sys/auxv.h>
#endif
#endif

static const char *const level_names[EDGE_ISA_COUNT_] = {"scalar", "sse2", "avx2", "avx512", "avx512vnni",
                                                                "neon", "neondot"};

const char *edge_isa_level_name(edge_isa_level level) {
  return (unsigned)level < EDGE_ISA_COUNT_ ? level_names[level] : "unknown";
}

#if defined(EDGE_ARCH_X86_64)
static uint64_t read_xcr0(void) {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return ((uint64_t)hi << 32) | lo;
}

static edge_isa_level detect(void) {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return EDGE_ISA_SSE2;
  const int osxsave = (ecx >> 27) & 1, avx = (ecx >> 28) & 1, fma = (ecx >> 12) & 1;
  if (!osxsave || !avx) return EDGE_ISA_SSE2;
  const uint64_t xcr0 = read_xcr0();
  if ((xcr0 & 0x6) != 0x6) return EDGE_ISA_SSE2; /* XMM and YMM state saved by the OS */
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return EDGE_ISA_SSE2;
  const int avx2 = (ebx >> 5) & 1;
  if (!avx2 || !fma) return EDGE_ISA_SSE2;
  const int avx512f = (ebx >> 16) & 1, avx512dq = (ebx >> 17) & 1, avx512bw = (ebx >> 30) & 1,
            avx512vl = (ebx >> 31) & 1;
  /* opmask, upper halves of zmm0-15 and zmm16-31 */
  const int avx512vnni = (ecx >> 11) & 1; /* leaf 7 ECX bit 11 */
  if (avx512f && avx512dq && avx512bw && avx512vl && (xcr0 & 0xe0) == 0xe0)
    return avx512vnni ? EDGE_ISA_AVX512VNNI : EDGE_ISA_AVX512;
  return EDGE_ISA_AVX2;
}
#elif defined(EDGE_ARCH_AARCH64)
static edge_isa_level detect(void) {
#if defined(__linux__) || defined(__ANDROID__)
  /* Bit numbers from the Linux arm64 ABI (asm/hwcap.h), spelled out so old headers still build. */
  const unsigned long hwcap_asimd = 1ul << 1, hwcap_asimddp = 1ul << 20;
  const unsigned long hwcap = getauxval(AT_HWCAP);
  if (!(hwcap & hwcap_asimd)) return EDGE_ISA_SCALAR;
  return (hwcap & hwcap_asimddp) ? EDGE_ISA_NEONDOT : EDGE_ISA_NEON;
#else
  return EDGE_ISA_NEON; /* ASIMD is mandatory in ARMv8-A */
#endif
}
#else
static edge_isa_level detect(void) { return EDGE_ISA_SCALAR; }
#endif

static edge_isa_level detected_level = EDGE_ISA_SCALAR;
static edge_isa_level picked_level = EDGE_ISA_SCALAR;
static pthread_once_t pick_once = PTHREAD_ONCE_INIT;

static int level_in_reach(edge_isa_level level, edge_isa_level detected) {
  if (level == EDGE_ISA_SCALAR) return 1;
#if defined(EDGE_ARCH_X86_64)
  return level >= EDGE_ISA_SSE2 && level <= EDGE_ISA_AVX512VNNI && level <= detected;
#elif defined(EDGE_ARCH_AARCH64)
  return level >= EDGE_ISA_NEON && level <= EDGE_ISA_NEONDOT && level <= detected;
#else
  (void)detected;
  return 0;
#endif
}

static void pick(void) {
  detected_level = detect();
  picked_level = detected_level;
  const char *forced = getenv("EDGE_ISA");
  if (!forced || !*forced) return;
  for (int level = 0; level < EDGE_ISA_COUNT_; ++level)
    if (strcmp(forced, level_names[level]) == 0 && level_in_reach((edge_isa_level)level, detected_level))
      picked_level = (edge_isa_level)level;
}

edge_isa_level edge_isa_level_get(void) {
  pthread_once(&pick_once, pick);
  return picked_level;
}

edge_isa_level edge_isa_level_detected(void) {
  pthread_once(&pick_once, pick);
  return detected_level;
}

int edge_isa_level_supported(edge_isa_level level) {
  pthread_once(&pick_once, pick);
  return (unsigned)level < EDGE_ISA_COUNT_ && level_in_reach(level, detected_level);
}

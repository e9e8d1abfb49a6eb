/* The per-level kernel tables (config.h), built together once: every family fills its part from
 * the level, and nothing tests CPU features after this. */
#include "config.h"

#include <pthread.h>
#include <string.h>

static edge_kernel_config tables[EDGE_ISA_COUNT_];
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void build_tables(void) {
  for (int level = 0; level < EDGE_ISA_COUNT_; ++level) {
    if (!edge_isa_level_supported((edge_isa_level)level)) continue;
    edge_kernel_config *t = &tables[level];
    memset(t, 0, sizeof *t);
    t->isa = (edge_isa_level)level;
    edge_gemm_kernels_init(t->isa, &t->gemm);
    edge_conv_kernels_init(t->isa, &t->conv);
    edge_qs8_kernels_init(t->isa, &t->qs8);
    edge_vector_kernels_init(t->isa, &t->vector);
  }
}

const edge_kernel_config *edge_kernels_for(edge_isa_level level) {
  if (!edge_isa_level_supported(level)) return NULL;
  pthread_once(&tables_once, build_tables);
  return &tables[level];
}

const edge_kernel_config *edge_kernels(void) { return edge_kernels_for(edge_isa_level_get()); }

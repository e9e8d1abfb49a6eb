#include "arena.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "internal.h"

typedef struct {
  const edge_arena_item *items;
  int32_t index;
} order_entry;

static size_t align_up(size_t n) { return (n + EDGE_ALIGNMENT - 1) / EDGE_ALIGNMENT * EDGE_ALIGNMENT; }

/* Largest first; ties broken by first use then index so the plan is deterministic. */
static int by_size_descending(const void *pa, const void *pb) {
  const order_entry *a = pa, *b = pb;
  const edge_arena_item *x = &a->items[a->index], *y = &b->items[b->index];
  if (x->size != y->size) return x->size > y->size ? -1 : 1;
  if (x->first != y->first) return x->first < y->first ? -1 : 1;
  return a->index < b->index ? -1 : a->index > b->index;
}

static int by_offset(const void *pa, const void *pb) {
  const edge_arena_item *const *a = pa, *const *b = pb;
  if ((*a)->offset != (*b)->offset) return (*a)->offset < (*b)->offset ? -1 : 1;
  return (*a)->size < (*b)->size ? -1 : (*a)->size > (*b)->size;
}

/* True if [offset, offset + need) meets none of the live items (sorted by offset; reach[j] is the
 * largest end among live[0..j]). */
static bool fits(const edge_arena_item *const *live, const size_t *reach, int32_t num_live, size_t offset,
                 size_t need) {
  int32_t lo = 0, hi = num_live; /* the first live item starting at or after offset + need */
  while (lo < hi) {
    const int32_t mid = lo + (hi - lo) / 2;
    if (live[mid]->offset < offset + need) lo = mid + 1;
    else hi = mid;
  }
  return lo == 0 || reach[lo - 1] <= offset;
}

edge_status edge_plan_arena(edge_arena_item *items, int32_t count, bool centered, size_t *planned, size_t *naive) {
  *planned = 0;
  *naive = 0;
  if (count <= 0) return EDGE_OK;
  size_t total = 0;
  for (int32_t i = 0; i < count; ++i) {
    size_t aligned = align_up(items[i].size);
    if (aligned < items[i].size || total + aligned < total) return EDGE_OUT_OF_MEMORY;
    total += aligned;
  }
  order_entry *order = malloc(sizeof *order * (size_t)count);
  const edge_arena_item **live = malloc(sizeof *live * (size_t)count);
  size_t *reach = malloc(sizeof *reach * (size_t)count);
  size_t *centers = malloc(sizeof *centers * (size_t)count);
  if (!order || !live || !reach || !centers) {
    free(order);
    free(live);
    free(reach);
    free(centers);
    return EDGE_OUT_OF_MEMORY;
  }
  for (int32_t i = 0; i < count; ++i) order[i] = (order_entry){items, i};
  qsort(order, (size_t)count, sizeof *order, by_size_descending);

  size_t arena_end = 0;
  int32_t num_centers = 0;
  for (int32_t k = 0; k < count; ++k) {
    edge_arena_item *item = &items[order[k].index];
    size_t need = align_up(item->size);
    item->offset = 0;
    if (need == 0) continue;
    int32_t num_live = 0;
    for (int32_t j = 0; j < k; ++j) {
      const edge_arena_item *placed = &items[order[j].index];
      if (placed->size > 0 && placed->first <= item->last && item->first <= placed->last) live[num_live++] = placed;
    }
    qsort(live, (size_t)num_live, sizeof *live, by_offset);
    size_t candidate = 0;
    for (int32_t j = 0; j < num_live; ++j) {
      if (candidate + need <= live[j]->offset) break;
      size_t end = live[j]->offset + align_up(live[j]->size);
      if (end > candidate) candidate = end;
    }
    if (centered) {
      /* The lowest-ending placement centred where an earlier tensor was, if it grows the arena
       * no more than the lowest free offset would. */
      for (int32_t j = 0; j < num_live; ++j) {
        const size_t end = live[j]->offset + align_up(live[j]->size);
        reach[j] = j > 0 && reach[j - 1] > end ? reach[j - 1] : end;
      }
      const size_t limit = candidate + need > arena_end ? candidate + need : arena_end;
      size_t best = SIZE_MAX;
      for (int32_t c = 0; c < num_centers; ++c) {
        if (centers[c] < need / 2) continue;
        const size_t offset = (centers[c] - need / 2) / EDGE_ALIGNMENT * EDGE_ALIGNMENT;
        if (offset + need <= limit && offset < best && fits(live, reach, num_live, offset, need)) best = offset;
      }
      if (best != SIZE_MAX) candidate = best;
      else centers[num_centers++] = candidate + need / 2;
    }
    item->offset = candidate;
    if (candidate + need > arena_end) arena_end = candidate + need;
  }
  free(order);
  free(live);
  free(reach);
  free(centers);
  *planned = arena_end;
  *naive = total;
  return EDGE_OK;
}

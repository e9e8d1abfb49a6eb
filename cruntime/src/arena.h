/* The activation arena planner.
 *
 * One allocation per interpreter holds every activation tensor and the shared op scratch:
 *
 *   arena (EDGE_ALIGNMENT-aligned, owned by the interpreter, replanned by every allocate)
 *   +-----------------------------------------------------------+---------------------+
 *   | activation tensors at planned offsets: two tensors share   | scratch: one region |
 *   | bytes only when their lifetimes [first op, last op] are    | of the largest      |
 *   | disjoint. Graph inputs live from op 0, graph and signature | scratch_bytes any   |
 *   | outputs to the last op, so callers can set and read them.  | op asked for; each  |
 *   |   0 ........................................ planned_bytes | op owns it while    |
 *   |                                                            | its eval runs       |
 *   +-----------------------------------------------------------+---------------------+
 *
 * Constants are not here (they stay in the model bytes); variables live in the interpreter's
 * persistent area and survive allocate. */
#ifndef EDGE_ARENA_H
#define EDGE_ARENA_H

#include <stddef.h>
#include <stdint.h>

#include "edge.h"

typedef struct {
  size_t size;       /* bytes the tensor needs */
  int32_t first;     /* first op index at which the tensor must hold its value */
  int32_t last;      /* last op index (inclusive) */
  size_t offset;     /* out: EDGE_ALIGNMENT-aligned byte offset in the arena */
} edge_arena_item;

/* Greedy by size: items are placed largest first, each at the lowest aligned offset where it
 * overlaps no already-placed item whose lifetime intersects its own. *planned is the arena size;
 * *naive the sum of every item's aligned size (the arena without reuse), so *planned <= *naive. */
edge_status edge_plan_arena(edge_arena_item *items, int32_t count, size_t *planned, size_t *naive);

#endif

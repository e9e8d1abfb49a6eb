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

#include <stdbool.h>
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
 * *naive the sum of every item's aligned size (the arena without reuse), so *planned <= *naive.
 *
 * `centered` (an interpreter with several threads) keeps cache lines with the core that wrote them.
 * Ops split their output into contiguous equal ranges, one per thread, so on two threads the
 * first half of a tensor's bytes is written by one core and the second by the other. A tensor
 * placed over bytes that an earlier tensor's *other* half covered must take each line from the
 * other core's cache before writing it, several times slower than writing lines the core already
 * holds (3.2 MB: 150 us against 48 us on two Xeon cores). So a centered plan places each item,
 * where it can, with its middle at the middle of an earlier-placed item (within the alignment):
 * then the two halves of every tensor over those bytes fall on the same sides, and each line keeps
 * its core. It takes such a place only if the arena grows no more than by the lowest free offset;
 * an item with no such place is placed as above and starts a middle of its own. On more threads
 * only the middle split lines up. */
edge_status edge_plan_arena(edge_arena_item *items, int32_t count, bool centered, size_t *planned, size_t *naive);

#endif

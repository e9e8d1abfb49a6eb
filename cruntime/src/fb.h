/* A bounds-checked FlatBuffers reader for untrusted bytes.
 *
 * Every accessor checks the offset, length, alignment and (for strings) the terminator it is
 * about to use against the whole buffer before reading, and reads through memcpy so a hostile
 * buffer can neither crash the reader nor make it read outside [data, data + size). A failed
 * check returns false and leaves a message in reader->message naming the byte positions; the
 * caller prefixes what it was reading ("tensor 3 field 'shape': ...").
 *
 * Positions are byte offsets from the start of the buffer. FlatBuffers stores little-endian
 * values; like the rest of the runtime this reader assumes a little-endian host.
 */
#ifndef EDGE_FB_H
#define EDGE_FB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FB_MESSAGE_CAPACITY 256

typedef struct {
  const uint8_t *data;
  size_t size;
  char message[FB_MESSAGE_CAPACITY];
} fb_reader;

typedef struct {
  size_t pos;            /* the table's first byte (its soffset to the vtable) */
  size_t vtable;
  uint16_t vtable_size;  /* bytes, including the two size fields */
  uint16_t table_size;   /* bytes of inline table data, including the soffset */
} fb_table;

typedef struct {
  size_t data;           /* position of element 0 */
  uint32_t length;
  uint32_t elem_size;
} fb_vector;

/* Checks the root offset and the 4-byte file identifier, then the root table. */
bool fb_open(fb_reader *r, const void *data, size_t size, const char identifier[4], fb_table *root);

/* Verifies the table starting at pos and its vtable. */
bool fb_table_at(fb_reader *r, size_t pos, fb_table *out);

/* Scalars: out keeps its default when the field is absent. width is 1, 2, 4 or 8. */
bool fb_scalar(fb_reader *r, const fb_table *t, int field, size_t width, void *out);
bool fb_u8(fb_reader *r, const fb_table *t, int field, uint8_t *out);
bool fb_i8(fb_reader *r, const fb_table *t, int field, int8_t *out);
bool fb_bool(fb_reader *r, const fb_table *t, int field, bool *out);
bool fb_u16(fb_reader *r, const fb_table *t, int field, uint16_t *out);
bool fb_i32(fb_reader *r, const fb_table *t, int field, int32_t *out);
bool fb_u32(fb_reader *r, const fb_table *t, int field, uint32_t *out);
bool fb_u64(fb_reader *r, const fb_table *t, int field, uint64_t *out);
bool fb_f32(fb_reader *r, const fb_table *t, int field, float *out);

/* Offset fields. *present is false (and the call succeeds) when the field is absent. */
bool fb_subtable(fb_reader *r, const fb_table *t, int field, fb_table *out, bool *present);
/* An absent vector reads as an empty one. */
bool fb_vector_field(fb_reader *r, const fb_table *t, int field, uint32_t elem_size, fb_vector *out);
/* *out is NULL when absent; otherwise a NUL-terminated string inside the buffer. */
bool fb_string_field(fb_reader *r, const fb_table *t, int field, const char **out);

/* Elements of a verified vector; the index must be below its length. */
bool fb_vector_table(fb_reader *r, const fb_vector *v, uint32_t index, fb_table *out);
int32_t fb_vector_i32(const fb_reader *r, const fb_vector *v, uint32_t index);
uint32_t fb_vector_u32(const fb_reader *r, const fb_vector *v, uint32_t index);
int64_t fb_vector_i64(const fb_reader *r, const fb_vector *v, uint32_t index);
float fb_vector_f32(const fb_reader *r, const fb_vector *v, uint32_t index);

#endif

#include "fb.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static bool fb_error(fb_reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool fb_error(fb_reader *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->message, sizeof r->message, fmt, ap);
  va_end(ap);
  return false;
}

/* True when [pos, pos + len) lies inside the buffer; written so that nothing can overflow. */
static bool fb_in_bounds(const fb_reader *r, uint64_t pos, uint64_t len) {
  return pos <= r->size && len <= r->size - pos;
}

static uint16_t fb_load_u16(const fb_reader *r, size_t pos) {
  uint16_t v;
  memcpy(&v, r->data + pos, 2);
  return v;
}

static uint32_t fb_load_u32(const fb_reader *r, size_t pos) {
  uint32_t v;
  memcpy(&v, r->data + pos, 4);
  return v;
}

bool fb_open(fb_reader *r, const void *data, size_t size, const char identifier[4], fb_table *root) {
  r->data = data;
  r->size = size;
  r->message[0] = '\0';
  if (!data || size < 8) return fb_error(r, "%zu bytes is too short for a FlatBuffer (at least 8)", size);
  if (memcmp(r->data + 4, identifier, 4) != 0) {
    char found[5];
    for (int i = 0; i < 4; ++i) {
      char c = (char)r->data[4 + i];
      found[i] = (c >= 32 && c < 127) ? c : '?';
    }
    found[4] = '\0';
    return fb_error(r, "file identifier is '%s', expected '%.4s'", found, identifier);
  }
  uint32_t root_pos = fb_load_u32(r, 0);
  if (!fb_in_bounds(r, root_pos, 4))
    return fb_error(r, "root table offset %u is past the %zu-byte buffer", root_pos, size);
  return fb_table_at(r, root_pos, root);
}

bool fb_table_at(fb_reader *r, size_t pos, fb_table *out) {
  if (pos % 4 != 0) return fb_error(r, "table at byte %zu is not 4-byte aligned", pos);
  if (!fb_in_bounds(r, pos, 4)) return fb_error(r, "table at byte %zu is past the %zu-byte buffer", pos, r->size);
  int32_t to_vtable;
  memcpy(&to_vtable, r->data + pos, 4);
  int64_t vtable = (int64_t)pos - (int64_t)to_vtable;
  if (vtable < 0 || !fb_in_bounds(r, (uint64_t)vtable, 4))
    return fb_error(r, "table at byte %zu: vtable at byte %lld is outside the %zu-byte buffer", pos,
                    (long long)vtable, r->size);
  if (vtable % 2 != 0) return fb_error(r, "table at byte %zu: vtable at byte %lld is not 2-byte aligned", pos, (long long)vtable);
  uint16_t vtable_size = fb_load_u16(r, (size_t)vtable), table_size = fb_load_u16(r, (size_t)vtable + 2);
  if (vtable_size < 4 || vtable_size % 2 != 0 || !fb_in_bounds(r, (uint64_t)vtable, vtable_size))
    return fb_error(r, "table at byte %zu: vtable at byte %lld has bad size %u", pos, (long long)vtable, vtable_size);
  if (table_size < 4 || !fb_in_bounds(r, pos, table_size))
    return fb_error(r, "table at byte %zu: its %u bytes run past the %zu-byte buffer", pos, table_size, r->size);
  for (size_t slot = 4; slot < vtable_size; slot += 2) {
    uint16_t field_offset = fb_load_u16(r, (size_t)vtable + slot);
    if (field_offset != 0 && (field_offset < 4 || field_offset >= table_size))
      return fb_error(r, "table at byte %zu: field %zu at offset %u is outside the %u-byte table", pos,
                      (slot - 4) / 2, field_offset, table_size);
  }
  out->pos = pos;
  out->vtable = (size_t)vtable;
  out->vtable_size = vtable_size;
  out->table_size = table_size;
  return true;
}

/* Offset of a field inside its table, 0 when absent. The vtable was verified by fb_table_at. */
static uint16_t fb_field_offset(const fb_reader *r, const fb_table *t, int field) {
  size_t slot = 4 + 2 * (size_t)field;
  if (field < 0 || slot + 2 > t->vtable_size) return 0;
  return fb_load_u16(r, t->vtable + slot);
}

/* Position of a present field of the given width, checked for size and alignment; 0 if absent. */
static bool fb_field_pos(fb_reader *r, const fb_table *t, int field, size_t width, size_t *pos) {
  uint16_t offset = fb_field_offset(r, t, field);
  *pos = 0;
  if (offset == 0) return true;
  if ((size_t)offset + width > t->table_size)
    return fb_error(r, "table at byte %zu: %zu-byte field %d at offset %u runs past the %u-byte table", t->pos,
                    width, field, offset, t->table_size);
  size_t p = t->pos + offset;
  if (p % width != 0) return fb_error(r, "table at byte %zu: field %d at byte %zu is not %zu-byte aligned", t->pos, field, p, width);
  *pos = p;
  return true;
}

bool fb_scalar(fb_reader *r, const fb_table *t, int field, size_t width, void *out) {
  size_t pos;
  if (!fb_field_pos(r, t, field, width, &pos)) return false;
  if (pos) memcpy(out, r->data + pos, width);
  return true;
}

bool fb_u8(fb_reader *r, const fb_table *t, int field, uint8_t *out) { return fb_scalar(r, t, field, 1, out); }
bool fb_i8(fb_reader *r, const fb_table *t, int field, int8_t *out) { return fb_scalar(r, t, field, 1, out); }
bool fb_u16(fb_reader *r, const fb_table *t, int field, uint16_t *out) { return fb_scalar(r, t, field, 2, out); }
bool fb_i32(fb_reader *r, const fb_table *t, int field, int32_t *out) { return fb_scalar(r, t, field, 4, out); }
bool fb_u32(fb_reader *r, const fb_table *t, int field, uint32_t *out) { return fb_scalar(r, t, field, 4, out); }
bool fb_u64(fb_reader *r, const fb_table *t, int field, uint64_t *out) { return fb_scalar(r, t, field, 8, out); }
bool fb_f32(fb_reader *r, const fb_table *t, int field, float *out) { return fb_scalar(r, t, field, 4, out); }

bool fb_bool(fb_reader *r, const fb_table *t, int field, bool *out) {
  uint8_t v = *out ? 1 : 0;
  if (!fb_scalar(r, t, field, 1, &v)) return false;
  *out = v != 0;
  return true;
}

/* Follows the uoffset stored in a field; *target is 0 when the field is absent. */
static bool fb_follow(fb_reader *r, const fb_table *t, int field, uint64_t *target) {
  size_t pos;
  *target = 0;
  if (!fb_field_pos(r, t, field, 4, &pos)) return false;
  if (!pos) return true;
  uint64_t dest = (uint64_t)pos + fb_load_u32(r, pos);
  if (dest >= r->size)
    return fb_error(r, "table at byte %zu: field %d points at byte %llu, past the %zu-byte buffer", t->pos, field,
                    (unsigned long long)dest, r->size);
  *target = dest;
  return true;
}

bool fb_subtable(fb_reader *r, const fb_table *t, int field, fb_table *out, bool *present) {
  uint64_t target;
  *present = false;
  if (!fb_follow(r, t, field, &target)) return false;
  if (!target) return true;
  if (!fb_table_at(r, (size_t)target, out)) return false;
  *present = true;
  return true;
}

static bool fb_vector_at(fb_reader *r, uint64_t pos, uint32_t elem_size, fb_vector *out) {
  if (pos % 4 != 0) return fb_error(r, "vector at byte %llu is not 4-byte aligned", (unsigned long long)pos);
  if (!fb_in_bounds(r, pos, 4))
    return fb_error(r, "vector at byte %llu is past the %zu-byte buffer", (unsigned long long)pos, r->size);
  uint32_t length = fb_load_u32(r, (size_t)pos);
  uint64_t data = pos + 4, bytes = (uint64_t)length * elem_size;
  if (!fb_in_bounds(r, data, bytes))
    return fb_error(r, "vector at byte %llu: %u elements of %u bytes run past the %zu-byte buffer",
                    (unsigned long long)pos, length, elem_size, r->size);
  if (elem_size > 1 && data % elem_size != 0)
    return fb_error(r, "vector at byte %llu: elements of %u bytes are not aligned", (unsigned long long)pos, elem_size);
  out->data = (size_t)data;
  out->length = length;
  out->elem_size = elem_size;
  return true;
}

bool fb_vector_field(fb_reader *r, const fb_table *t, int field, uint32_t elem_size, fb_vector *out) {
  uint64_t target;
  out->data = 0;
  out->length = 0;
  out->elem_size = elem_size;
  if (!fb_follow(r, t, field, &target)) return false;
  if (!target) return true;
  return fb_vector_at(r, target, elem_size, out);
}

bool fb_string_field(fb_reader *r, const fb_table *t, int field, const char **out) {
  uint64_t target;
  fb_vector bytes;
  *out = NULL;
  if (!fb_follow(r, t, field, &target)) return false;
  if (!target) return true;
  if (!fb_vector_at(r, target, 1, &bytes)) return false;
  uint64_t terminator = (uint64_t)bytes.data + bytes.length;
  if (terminator >= r->size || r->data[terminator] != 0)
    return fb_error(r, "string at byte %llu (%u bytes) is not NUL-terminated inside the buffer",
                    (unsigned long long)target, bytes.length);
  *out = (const char *)(r->data + bytes.data);
  return true;
}

bool fb_vector_table(fb_reader *r, const fb_vector *v, uint32_t index, fb_table *out) {
  if (index >= v->length || v->elem_size != 4) return fb_error(r, "vector index %u out of range", index);
  size_t pos = v->data + 4 * (size_t)index;
  uint64_t target = (uint64_t)pos + fb_load_u32(r, pos);
  if (target >= r->size)
    return fb_error(r, "vector element %u points at byte %llu, past the %zu-byte buffer", index,
                    (unsigned long long)target, r->size);
  return fb_table_at(r, (size_t)target, out);
}

int32_t fb_vector_i32(const fb_reader *r, const fb_vector *v, uint32_t index) {
  int32_t x = 0;
  if (index < v->length && v->elem_size == 4) memcpy(&x, r->data + v->data + 4 * (size_t)index, 4);
  return x;
}

uint32_t fb_vector_u32(const fb_reader *r, const fb_vector *v, uint32_t index) {
  uint32_t x = 0;
  if (index < v->length && v->elem_size == 4) memcpy(&x, r->data + v->data + 4 * (size_t)index, 4);
  return x;
}

int64_t fb_vector_i64(const fb_reader *r, const fb_vector *v, uint32_t index) {
  int64_t x = 0;
  if (index < v->length && v->elem_size == 8) memcpy(&x, r->data + v->data + 8 * (size_t)index, 8);
  return x;
}

float fb_vector_f32(const fb_reader *r, const fb_vector *v, uint32_t index) {
  float x = 0;
  if (index < v->length && v->elem_size == 4) memcpy(&x, r->data + v->data + 4 * (size_t)index, 4);
  return x;
}

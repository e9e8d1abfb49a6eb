/* The FlatBuffer reader and the model verifier on valid, broken and truncated files. */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <stdlib.h>

#include "fb.h"
#include "test.h"

static void put16(unsigned char *b, size_t pos, uint16_t v) { memcpy(b + pos, &v, 2); }
static void put32(unsigned char *b, size_t pos, uint32_t v) { memcpy(b + pos, &v, 4); }

/* root -> table at 16 with vtable at 8; field 0 is a u32 (42) or an offset to data at 24. */
static void tiny_buffer(unsigned char *b) {
  memset(b, 0, 48);
  put32(b, 0, 16);
  memcpy(b + 4, "EDG1", 4);
  put16(b, 8, 6);
  put16(b, 10, 8);
  put16(b, 12, 4);
  put32(b, 16, 8);
  put32(b, 20, 42);
}

void test_fb_reader_rejects_bad_tables(void) {
  unsigned char b[48];
  fb_reader r;
  fb_table root;
  uint32_t value = 7;
  tiny_buffer(b);
  CHECK(fb_open(&r, b, 24, "EDG1", &root));
  CHECK(fb_u32(&r, &root, 0, &value) && value == 42);
  value = 7;
  CHECK(fb_u32(&r, &root, 1, &value) && value == 7);
  CHECK(!fb_open(&r, b, 24, "EDG2", &root) && strstr(r.message, "identifier"));
  CHECK(!fb_open(&r, b, 7, "EDG1", &root));

  struct {
    size_t pos;
    uint32_t value;
    int width;
  } breaks[] = {
      {0, 17, 4},          /* root misaligned */
      {0, 24, 4},          /* root at the end */
      {0, 0xfffffff0u, 4}, /* root far past the end */
      {16, 100, 4},        /* vtable before the buffer */
      {16, (uint32_t)-1000, 4}, /* vtable after it */
      {16, 9, 4},          /* vtable misaligned */
      {8, 3, 2},           /* vtable size too small */
      {8, 400, 2},         /* vtable runs past the end */
      {10, 100, 2},        /* table runs past the end */
      {10, 2, 2},          /* table smaller than its soffset */
      {12, 8, 2},          /* field offset outside the table */
      {12, 2, 2},          /* field offset inside the soffset */
  };
  for (size_t i = 0; i < sizeof breaks / sizeof breaks[0]; ++i) {
    tiny_buffer(b);
    if (breaks[i].width == 4) put32(b, breaks[i].pos, breaks[i].value);
    else put16(b, breaks[i].pos, (uint16_t)breaks[i].value);
    CHECK(!fb_open(&r, b, 24, "EDG1", &root), "break %zu was accepted", i);
    CHECK(r.message[0] != '\0', "break %zu left no message", i);
  }
  /* A u64 field in a 8-byte table slot that is not 8-aligned. */
  tiny_buffer(b);
  put16(b, 10, 12);
  CHECK(fb_open(&r, b, 28, "EDG1", &root));
  uint64_t wide = 0;
  CHECK(!fb_u64(&r, &root, 0, &wide));
}

void test_fb_reader_rejects_bad_vectors_and_strings(void) {
  unsigned char b[48];
  fb_reader r;
  fb_table root;
  fb_vector v;
  tiny_buffer(b);
  put32(b, 20, 4); /* field 0 -> byte 24 */
  put32(b, 24, 2);
  put32(b, 28, 7);
  put32(b, 32, 9);
  CHECK(fb_open(&r, b, 36, "EDG1", &root));
  CHECK(fb_vector_field(&r, &root, 0, 4, &v) && v.length == 2);
  CHECK(fb_vector_i32(&r, &v, 0) == 7 && fb_vector_i32(&r, &v, 1) == 9);
  CHECK(fb_vector_field(&r, &root, 3, 4, &v) && v.length == 0); /* absent: empty */
  CHECK(!fb_vector_field(&r, &root, 0, 8, &v));                  /* 8-byte elements misaligned */
  CHECK(!fb_open(&r, b, 35, "EDG1", &root) || !fb_vector_field(&r, &root, 0, 4, &v));
  put32(b, 24, 0x40000000u);
  CHECK(fb_open(&r, b, 36, "EDG1", &root));
  CHECK(!fb_vector_field(&r, &root, 0, 4, &v) && strstr(r.message, "run past"));
  put32(b, 24, 0xffffffffu);
  CHECK(!fb_vector_field(&r, &root, 0, 8, &v));
  put32(b, 20, 0xfffffff0u);
  CHECK(!fb_vector_field(&r, &root, 0, 4, &v));

  const char *s = NULL;
  tiny_buffer(b);
  put32(b, 20, 4);
  put32(b, 24, 3);
  memcpy(b + 28, "abc", 4);
  CHECK(fb_open(&r, b, 32, "EDG1", &root));
  CHECK(fb_string_field(&r, &root, 0, &s) && s && strcmp(s, "abc") == 0);
  CHECK(!fb_open(&r, b, 31, "EDG1", &root) || !fb_string_field(&r, &root, 0, &s));
  b[31] = 'd';
  CHECK(fb_open(&r, b, 32, "EDG1", &root));
  CHECK(!fb_string_field(&r, &root, 0, &s) && strstr(r.message, "NUL"));
  CHECK(fb_open(&r, b, 33, "EDG1", &root) && !fb_string_field(&r, &root, 0, &s));
}

static const char *const valid_models[] = {"add_relu.edge",   "passthrough.edge",     "reshape_add.edge",
                                           "conv.edge",       "fully_connected.edge", "chain.edge"};

void test_loader_accepts_valid_models(void) {
  for (size_t i = 0; i < sizeof valid_models / sizeof valid_models[0]; ++i) {
    edge_model *model = test_load_seed(valid_models[i]);
    edge_model_free(model);
    size_t size = 0;
    unsigned char *bytes = test_read_file(test_seed_path(valid_models[i]), &size);
    if (!bytes) continue;
    /* Borrowed (aligned), copied, and borrowed from a misaligned address (copied internally). */
    void *aligned = NULL;
    CHECK(posix_memalign(&aligned, 64, size + 1) == 0);
    memcpy(aligned, bytes, size);
    CHECK_STATUS(edge_model_load_buffer(aligned, size, 0, &model), EDGE_OK);
    edge_model_free(model);
    CHECK_STATUS(edge_model_load_buffer(bytes, size, 1, &model), EDGE_OK);
    edge_model_free(model);
    unsigned char *shifted = malloc(size + 1);
    memcpy(shifted + 1, bytes, size);
    CHECK_STATUS(edge_model_load_buffer(shifted + 1, size, 0, &model), EDGE_OK);
    memset(shifted, 0xff, size + 1); /* the model must not depend on the caller's misaligned bytes */
    CHECK(model && edge_model_num_signatures(model) >= 0);
    edge_model_free(model);
    free(shifted);
    free(aligned);
    free(bytes);
  }
}

void test_loader_rejects_invalid_models(void) {
  char dir_path[4096];
  snprintf(dir_path, sizeof dir_path, "%s/invalid", test_seed_dir);
  DIR *dir = opendir(dir_path);
  CHECK(dir != NULL, "cannot open %s", dir_path);
  if (!dir) return;
  int cases = 0;
  struct dirent *entry;
  while ((entry = readdir(dir))) {
    size_t len = strlen(entry->d_name);
    if (len < 6 || strcmp(entry->d_name + len - 5, ".edge") != 0) continue;
    char model_path[8192], expect_path[8192];
    snprintf(model_path, sizeof model_path, "%s/%s", dir_path, entry->d_name);
    snprintf(expect_path, sizeof expect_path, "%s/%.*s.expect", dir_path, (int)(len - 5), entry->d_name);
    size_t expect_size = 0;
    char *expect = (char *)test_read_file(expect_path, &expect_size);
    if (!expect) continue;
    char status_name[64] = "", fragment[256] = "";
    sscanf(expect, "%63[^\n]\n%255[^\n]", status_name, fragment);
    free(expect);
    edge_model *model = NULL;
    edge_status status = edge_model_load_file(model_path, &model);
    CHECK(strcmp(edge_status_name(status), status_name) == 0, "%s: got %s (%s), expected %s", entry->d_name,
              edge_status_name(status), edge_last_error(), status_name);
    CHECK(model == NULL, "%s: a model came back from a failed load", entry->d_name);
    CHECK(strstr(edge_last_error(), fragment) != NULL, "%s: message '%s' lacks '%s'", entry->d_name,
              edge_last_error(), fragment);
    edge_model_free(model);
    ++cases;
  }
  closedir(dir);
  CHECK(cases >= 30, "only %d invalid models found", cases);
}

static void check_every_truncation(const char *name) {
  size_t size = 0;
  unsigned char *bytes = test_read_file(test_seed_path(name), &size);
  if (!bytes) return;
  for (size_t n = 0; n <= size; ++n) {
    /* An exact-size copy so that any read past n is a heap overflow under ASan. */
    unsigned char *copy = malloc(n ? n : 1);
    memcpy(copy, bytes, n);
    edge_model *model = NULL;
    edge_status status = edge_model_load_buffer(copy, n, 1, &model);
    if (n < size) {
      CHECK(status != EDGE_OK, "%s truncated to %zu of %zu bytes was accepted", name, n, size);
      CHECK(edge_last_error()[0] != '\0', "%s truncated to %zu bytes: empty message", name, n);
    } else {
      CHECK(status == EDGE_OK, "%s in full: %s", name, edge_last_error());
    }
    edge_model_free(model);
    free(copy);
  }
  free(bytes);
}

void test_loader_rejects_every_truncation(void) {
  check_every_truncation("add_relu.edge");
  check_every_truncation("chain.edge");
}

void test_loader_rejects_bad_identifier(void) {
  size_t size = 0;
  unsigned char *bytes = test_read_file(test_seed_path("add_relu.edge"), &size);
  if (!bytes) return;
  edge_model *model = NULL;
  memcpy(bytes + 4, "TFL3", 4);
  CHECK_STATUS(edge_model_load_buffer(bytes, size, 1, &model), EDGE_INVALID_MODEL);
  CHECK(strstr(edge_last_error(), "identifier is 'TFL3'") != NULL);
  free(bytes);
}

void test_loader_rejects_bad_root_offsets(void) {
  size_t size = 0;
  unsigned char *bytes = test_read_file(test_seed_path("add_relu.edge"), &size);
  if (!bytes) return;
  uint32_t original;
  memcpy(&original, bytes, 4);
  uint32_t roots[] = {(uint32_t)size, (uint32_t)size - 4, 0xffffffffu, 0x7ffffffcu, original + 1, original + 4, 0, 4};
  for (size_t i = 0; i < sizeof roots / sizeof roots[0]; ++i) {
    edge_model *model = NULL;
    memcpy(bytes, &roots[i], 4);
    edge_status status = edge_model_load_buffer(bytes, size, 1, &model);
    CHECK(status == EDGE_INVALID_MODEL, "root offset %u: %s", roots[i], edge_status_name(status));
    CHECK(edge_last_error()[0] != '\0');
    edge_model_free(model);
  }
  free(bytes);
}

void test_loader_reports_missing_file(void) {
  edge_model *model = (edge_model *)1;
  CHECK_STATUS(edge_model_load_file("/nonexistent/model.edge", &model), EDGE_IO_ERROR);
  CHECK(model == NULL);
  CHECK(strstr(edge_last_error(), "/nonexistent/model.edge") != NULL);
  CHECK_STATUS(edge_model_load_file(test_seed_dir, &model), EDGE_IO_ERROR);
  CHECK_STATUS(edge_model_load_buffer(NULL, 0, 0, &model), EDGE_INVALID_MODEL);
}

void test_loader_reads_signatures_and_metadata(void) {
  edge_model *model = test_load_seed("chain.edge");
  if (!model) return;
  CHECK(strcmp(edge_model_description(model), "seed model") == 0);
  CHECK(edge_model_num_signatures(model) == 2);
  edge_signature_info sig;
  CHECK_STATUS(edge_model_signature(model, 0, &sig), EDGE_OK);
  CHECK(strcmp(sig.key, "infer") == 0 && sig.num_inputs == 1 && sig.num_outputs == 1 && sig.num_ops == 4);
  CHECK(strcmp(sig.input_names[0], "x") == 0 && sig.input_tensors[0] == 0);
  CHECK(sig.ops[0] == 0 && sig.ops[3] == 3);
  /* "features" lists no ops: the loader derives the ones its output needs (conv, reshape). */
  CHECK_STATUS(edge_model_signature(model, 1, &sig), EDGE_OK);
  CHECK(strcmp(sig.key, "features") == 0 && sig.num_ops == 2 && sig.ops[0] == 0 && sig.ops[1] == 1);
  CHECK_STATUS(edge_model_signature(model, 2, &sig), EDGE_INVALID_ARGUMENT);
  const char *name = NULL, *value = NULL;
  CHECK(edge_model_num_metadata(model) == 1);
  CHECK_STATUS(edge_model_metadata(model, 0, &name, &value), EDGE_OK);
  CHECK(name && value && strcmp(name, "license") == 0 && strcmp(value, "test") == 0);
  CHECK_STATUS(edge_model_metadata(model, -1, &name, &value), EDGE_INVALID_ARGUMENT);
  edge_model_free(model);
}

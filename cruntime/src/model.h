/* A verified model: everything the interpreter needs, parsed out of the FlatBuffer once.
 *
 * Ownership: strings (names, keys, metadata) and constant data point into the model bytes, which
 * the model either maps (load_file), copies (load_buffer with copy, or a buffer that is not
 * EDGE_ALIGNMENT-aligned) or borrows. Every array here is owned by the model and freed with it.
 * Nothing in this structure refers to an unverified offset: the loader checks each one first.
 */
#ifndef EDGE_MODEL_H
#define EDGE_MODEL_H

#include "internal.h"

typedef struct {
  const char *name;                     /* "" when the file has none */
  edge_dtype dtype;
  edge_tensor_kind kind;
  int32_t rank;
  int64_t shape[EDGE_MAX_RANK];
  int32_t shape_signature[EDGE_MAX_RANK];
  size_t nbytes;
  const void *data;                     /* constants and variables with a buffer; else NULL */
  int32_t num_quant_params;
  float *scales;
  int64_t *zero_points;
  int32_t quantized_dimension;
} edge_model_tensor;

typedef struct {
  edge_op_kind opcode;
  const char *custom_name;
  int32_t version;
  int32_t num_inputs, num_outputs;
  int32_t *inputs;
  int32_t *outputs;
  edge_options options;
  edge_activation activation;
  uint64_t flops, bytes_in, bytes_out, bytes_weights;
} edge_model_op;

typedef struct {
  const char *key;
  int32_t num_inputs, num_outputs, num_ops;
  const char **input_names;
  int32_t *input_tensors;
  const char **output_names;
  int32_t *output_tensors;
  int32_t *ops;
} edge_signature_def;

typedef struct edge_model_block edge_model_block;

struct edge_model {
  const uint8_t *bytes;
  size_t size;
  void *owned_copy;                     /* non-NULL when the model copied the caller's bytes */
  void *mapping;                        /* non-NULL when load_file mapped the file */
  size_t mapping_size;
  edge_model_block *blocks;             /* every allocation below, freed together */

  const char *description;
  const char *producer;
  const char *graph_name;
  int32_t num_tensors;
  edge_model_tensor *tensors;
  int32_t num_inputs, num_outputs;
  int32_t *inputs;
  int32_t *outputs;
  int32_t num_ops;
  edge_model_op *ops;
  /* What a plain invoke runs: the ops the graph outputs depend on, in order. For an inference
   * model that is every op; a trainable one's backward and optimizer ops run only through their
   * signatures ("grad", "train"). */
  int32_t num_invoke_ops;
  int32_t *invoke_ops;
  int32_t num_signatures;
  edge_signature_def *signatures;
  int32_t num_metadata;
  const char **metadata_names;
  const char **metadata_values;
};

/* Drops the resident pages of a file-mapped model (load_file) and keeps the mapping: its pages are
 * clean copies of the file, so a page read again is read back from the page cache. Called once an
 * interpreter has prepared, when the weights it packed are no longer read from the file; a model
 * loaded from a buffer is left as it is. */
void edge_model_release_pages(const edge_model *model);

#endif

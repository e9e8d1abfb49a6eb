/* The interpreter: tensors, shape propagation, the arena, invoke and everything around them.
 *
 * Memory an interpreter owns:
 *   - tensors/nodes: descriptors copied from the model at create (constants point into the model
 *     bytes, which the model keeps alive);
 *   - persistent area: one block holding every variable, initialised from the model at create
 *     and by reset_variables, untouched by allocate;
 *   - arena: activations and the shared scratch, replanned by every allocate (see arena.h);
 *   - node->plan: whatever each kernel's prepare allocated, freed by its release. A DEQUANTIZE of
 *     a constant (float16 or int8 weights) computes its output there once: that tensor is then
 *     marked folded, reads as a constant (so consumers prepack it) and stays out of the arena.
 * An interpreter is not safe to use from two threads at once; its thread pool is used only from
 * inside invoke. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "arena.h"
#include "internal.h"
#include "kernels/isa.h"
#include "model.h"
#include "opencl/gpu.h"

#define MAX_THREADS 1024

struct edge_interpreter {
  const edge_model *model;
  int32_t num_tensors, num_ops;
  edge_tensor *tensors;
  edge_node *nodes;
  edge_context ctx;
  char error[EDGE_ERROR_CAPACITY];
  edge_threadpool *pool;
  int32_t num_threads;
  uint64_t memory_limit;                /* options.memory_limit: 0 none, else the cap on variables + op plans
                                           + arena */
  bool profiling;
  bool allocated;
  bool variables_exposed;               /* tensor_data handed out a variable's address: the caller may
                                           write through it at any time, so every invoke counts as a change */
  uint8_t *resizable;                   /* graph and signature inputs */
  int32_t *first_use, *last_use;        /* activation lifetimes in op indices */
  edge_arena_item *plan;                /* one per activation tensor, planned by allocate */
  int32_t *plan_tensor;
  int32_t num_planned;
  void *arena;
  size_t arena_bytes, naive_bytes, scratch_bytes;
  void *persistent;
  size_t variable_bytes;
  size_t persistent_bytes; /* variables + what ops keep between runs (node->plan_bytes) */
  int32_t backend;                      /* edge_backend asked for */
  edge_gpu *gpu;                        /* the OpenCL device, when one is in use (opencl/gpu.h) */
  uint8_t *placement;                   /* per op after allocate: 1 on the GPU */
  uint8_t *exposed;                     /* per tensor: its host address was handed out (tensor_data) */
  uint8_t *gpu_allowed;                 /* per op, set_op_devices; NULL: no list */
};

static size_t align_up(size_t n) { return (n + EDGE_ALIGNMENT - 1) / EDGE_ALIGNMENT * EDGE_ALIGNMENT; }

static const char *opcode_name(edge_op_kind opcode) {
  return (int)opcode >= 0 && (int)opcode < EDGE_OP_COUNT_ ? edge_op_names[opcode] : "?";
}

static edge_status interp_fail(edge_interpreter *interp, edge_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static edge_status interp_fail(edge_interpreter *interp, edge_status status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(interp->error, sizeof interp->error, fmt, ap);
  va_end(ap);
  edge_set_last_error(status, "%s", interp->error);
  return status;
}

/* Puts "op 12 (CONV_2D): " in front of the message a kernel left in the error buffer. */
static edge_status op_fail(edge_interpreter *interp, int32_t op, edge_status status) {
  char kernel_message[EDGE_ERROR_CAPACITY];
  snprintf(kernel_message, sizeof kernel_message, "%s", interp->error[0] ? interp->error : edge_status_name(status));
  return interp_fail(interp, status, "op %d (%s): %s", op, opcode_name(interp->nodes[op].opcode), kernel_message);
}

static const char *tensor_name(const edge_tensor *t) { return t->name ? t->name : ""; }

const char *edge_version(void) { return "0.1.0"; }
int32_t edge_abi_version(void) { return EDGE_ABI_VERSION; }

const char *edge_isa(void) { return edge_isa_level_name(edge_isa_level_get()); }

/* ---- create / free ---- */

static void compute_lifetimes(edge_interpreter *interp) {
  const edge_model *m = interp->model;
  int32_t last_op = m->num_ops > 0 ? m->num_ops - 1 : 0;
  for (int32_t t = 0; t < m->num_tensors; ++t) {
    interp->first_use[t] = INT32_MAX;
    interp->last_use[t] = -1;
  }
#define TOUCH(t, i)                                                 \
  do {                                                              \
    if (interp->first_use[t] > (i)) interp->first_use[t] = (i);     \
    if (interp->last_use[t] < (i)) interp->last_use[t] = (i);       \
  } while (0)
  /* Inputs stay intact to the end, as in TFLite: invoking again without setting them reruns on
   * the same values, and a caller may read them back. */
  for (int32_t i = 0; i < m->num_inputs; ++i) {
    TOUCH(m->inputs[i], 0);
    TOUCH(m->inputs[i], last_op);
  }
  for (int32_t i = 0; i < m->num_outputs; ++i) TOUCH(m->outputs[i], last_op);
  for (int32_t s = 0; s < m->num_signatures; ++s) {
    const edge_signature_def *sig = &m->signatures[s];
    for (int32_t i = 0; i < sig->num_inputs; ++i) {
      TOUCH(sig->input_tensors[i], 0);
      TOUCH(sig->input_tensors[i], last_op);
    }
    for (int32_t i = 0; i < sig->num_outputs; ++i) TOUCH(sig->output_tensors[i], last_op);
  }
  for (int32_t op = 0; op < m->num_ops; ++op) {
    const edge_model_op *o = &m->ops[op];
    for (int32_t j = 0; j < o->num_inputs; ++j)
      if (o->inputs[j] >= 0) TOUCH(o->inputs[j], op);
    for (int32_t j = 0; j < o->num_outputs; ++j)
      if (o->outputs[j] >= 0) TOUCH(o->outputs[j], op);
  }
#undef TOUCH
  for (int32_t t = 0; t < m->num_tensors; ++t)
    if (interp->last_use[t] < 0) interp->first_use[t] = interp->last_use[t] = 0;
}

static void release_nodes(edge_interpreter *interp) {
  for (int32_t i = 0; i < interp->num_ops; ++i) {
    edge_node *node = &interp->nodes[i];
    const edge_op_registration *reg = edge_op_lookup(node->opcode);
    if (node->plan && reg && reg->release) reg->release(node);
    node->plan = NULL;
  }
}

void edge_interpreter_free(edge_interpreter *interp) {
  if (!interp) return;
  if (interp->nodes) release_nodes(interp);
  edge_threadpool_free(interp->pool);
  free(interp->arena);
  free(interp->persistent);
  free(interp->tensors);
  free(interp->nodes);
  free(interp->resizable);
  free(interp->first_use);
  free(interp->last_use);
  free(interp->plan);
  free(interp->plan_tensor);
  edge_gpu_free(interp->gpu);
  free(interp->gpu_allowed);
  free(interp->placement);
  free(interp->exposed);
  free(interp);
}

static void load_variable(edge_tensor *t) {
  if (t->initial && t->nbytes) memcpy(t->data, t->initial, t->nbytes);
  else if (t->nbytes) memset(t->data, 0, t->nbytes);
}

edge_status edge_interpreter_create(const edge_model *model, const edge_interpreter_options *options,
                                    edge_interpreter **out) {
  if (!out) return edge_set_last_error(EDGE_INVALID_ARGUMENT, "interpreter_create: out is NULL");
  *out = NULL;
  if (!model) return edge_set_last_error(EDGE_INVALID_ARGUMENT, "interpreter_create: model is NULL");
  int32_t num_threads = options ? options->num_threads : 1;
  if (num_threads < 1 || num_threads > MAX_THREADS)
    return edge_set_last_error(EDGE_INVALID_ARGUMENT, "num_threads is %d, must be between 1 and %d", num_threads,
                               MAX_THREADS);
  int32_t backend = options ? options->backend : EDGE_BACKEND_CPU;
  if (backend < EDGE_BACKEND_CPU || backend > EDGE_BACKEND_AUTO)
    return edge_set_last_error(EDGE_INVALID_ARGUMENT, "backend is %d: use EDGE_BACKEND_CPU (0), OPENCL (1) or AUTO (2)",
                               backend);
  edge_interpreter *interp = calloc(1, sizeof *interp);
  if (!interp) return edge_set_last_error(EDGE_OUT_OF_MEMORY, "out of memory creating the interpreter");
  interp->model = model;
  interp->backend = backend;
  if (backend != EDGE_BACKEND_CPU) {
    char message[EDGE_ERROR_CAPACITY] = "";
    edge_status status = edge_gpu_create(options->gpu_precision, options->gpu_device, options->opencl_queue,
                                         &interp->gpu, message);
    if (status != EDGE_OK && backend == EDGE_BACKEND_OPENCL) {
      free(interp);
      return edge_set_last_error(status, "backend opencl: %s", message);
    }
    /* auto without a usable device: the CPU, as before */
  }
  interp->num_tensors = model->num_tensors;
  interp->num_ops = model->num_ops;
  interp->num_threads = num_threads;
  interp->profiling = options && options->profiling;
  size_t nt = (size_t)model->num_tensors, no = (size_t)model->num_ops;
  interp->tensors = calloc(nt ? nt : 1, sizeof *interp->tensors);
  interp->nodes = calloc(no ? no : 1, sizeof *interp->nodes);
  interp->resizable = calloc(nt ? nt : 1, 1);
  interp->first_use = calloc(nt ? nt : 1, sizeof(int32_t));
  interp->last_use = calloc(nt ? nt : 1, sizeof(int32_t));
  interp->plan = calloc(nt ? nt : 1, sizeof *interp->plan);
  interp->plan_tensor = calloc(nt ? nt : 1, sizeof(int32_t));
  interp->placement = calloc(no ? no : 1, 1);
  interp->exposed = calloc(nt ? nt : 1, 1);
  if (!interp->tensors || !interp->nodes || !interp->resizable || !interp->first_use || !interp->last_use ||
      !interp->plan || !interp->plan_tensor || !interp->placement || !interp->exposed)
    goto out_of_memory;

  size_t persistent = 0;
  for (int32_t i = 0; i < model->num_tensors; ++i) {
    const edge_model_tensor *src = &model->tensors[i];
    edge_tensor *t = &interp->tensors[i];
    t->name = src->name;
    t->dtype = src->dtype;
    t->kind = src->kind;
    t->rank = t->declared_rank = src->rank;
    for (int32_t d = 0; d < src->rank; ++d) {
      t->shape[d] = t->declared_shape[d] = src->shape[d];
      t->shape_signature[d] = src->shape_signature[d];
    }
    t->nbytes = src->nbytes;
    t->initial = src->data;
    t->initial_nbytes = src->data ? src->nbytes : 0;
    t->num_quant_params = src->num_quant_params;
    t->scales = src->scales;
    t->zero_points = src->zero_points;
    t->quantized_dimension = src->quantized_dimension;
    if (t->kind == EDGE_TENSOR_CONSTANT) t->data = (void *)src->data; /* read-only: set_tensor refuses constants */
    if (t->kind == EDGE_TENSOR_VARIABLE) persistent += align_up(t->nbytes);
  }
  interp->memory_limit = options ? options->memory_limit : 0;
  if (interp->memory_limit && persistent > interp->memory_limit) {
    unsigned long long limit = interp->memory_limit; /* read before the interpreter is freed */
    edge_interpreter_free(interp);
    return edge_set_last_error(EDGE_OUT_OF_MEMORY, "the model's variables need %zu bytes, over the memory limit of %llu",
                               persistent, limit);
  }
  if (persistent) {
    interp->persistent = aligned_alloc(EDGE_ALIGNMENT, persistent);
    if (!interp->persistent) goto out_of_memory;
    size_t offset = 0;
    for (int32_t i = 0; i < model->num_tensors; ++i) {
      edge_tensor *t = &interp->tensors[i];
      if (t->kind != EDGE_TENSOR_VARIABLE) continue;
      t->data = (char *)interp->persistent + offset;
      offset += align_up(t->nbytes);
      load_variable(t);
    }
  }
  interp->variable_bytes = interp->persistent_bytes = persistent;

  for (int32_t i = 0; i < model->num_ops; ++i) {
    const edge_model_op *op = &model->ops[i];
    edge_node *node = &interp->nodes[i];
    node->opcode = op->opcode;
    node->version = op->version;
    node->num_inputs = op->num_inputs;
    node->num_outputs = op->num_outputs;
    node->inputs = op->inputs;
    node->outputs = op->outputs;
    node->options = op->options;
    node->activation = op->activation;
    node->flops = op->flops;
    node->bytes_in = op->bytes_in;
    node->bytes_out = op->bytes_out;
    node->bytes_weights = op->bytes_weights;
    node->writes_variables = op->opcode == EDGE_OP_OPTIMIZER_UPDATE || op->opcode == EDGE_OP_BATCH_NORM_TRAIN;
    for (int32_t j = 0; j < op->num_outputs; ++j)
      if (op->outputs[j] >= 0 && interp->tensors[op->outputs[j]].kind == EDGE_TENSOR_VARIABLE)
        node->writes_variables = true;
  }
  for (int32_t i = 0; i < model->num_inputs; ++i) interp->resizable[model->inputs[i]] = 1;
  for (int32_t s = 0; s < model->num_signatures; ++s)
    for (int32_t i = 0; i < model->signatures[s].num_inputs; ++i) {
      int32_t t = model->signatures[s].input_tensors[i];
      if (interp->tensors[t].kind == EDGE_TENSOR_ACTIVATION) interp->resizable[t] = 1;
    }
  compute_lifetimes(interp);

  interp->pool = edge_threadpool_create(num_threads);
  if (!interp->pool) {
    edge_interpreter_free(interp);
    return edge_set_last_error(EDGE_OUT_OF_MEMORY, "cannot start a pool of %d threads", num_threads);
  }
  interp->ctx.tensors = interp->tensors;
  interp->ctx.num_tensors = interp->num_tensors;
  interp->ctx.pool = interp->pool;
  interp->ctx.num_threads = num_threads;
  interp->ctx.error = interp->error;
  interp->ctx.memory_limit = interp->memory_limit;
  *out = interp;
  return EDGE_OK;

out_of_memory:
  edge_interpreter_free(interp);
  return edge_set_last_error(EDGE_OUT_OF_MEMORY, "out of memory creating the interpreter");
}

/* ---- simple queries ---- */

const char *edge_interpreter_error(const edge_interpreter *interp) { return interp ? interp->error : ""; }
int32_t edge_interpreter_num_tensors(const edge_interpreter *interp) { return interp ? interp->num_tensors : 0; }
int32_t edge_interpreter_num_inputs(const edge_interpreter *interp) { return interp ? interp->model->num_inputs : 0; }
int32_t edge_interpreter_num_outputs(const edge_interpreter *interp) { return interp ? interp->model->num_outputs : 0; }
int32_t edge_interpreter_num_ops(const edge_interpreter *interp) { return interp ? interp->num_ops : 0; }

int32_t edge_interpreter_input(const edge_interpreter *interp, int32_t i) {
  if (!interp || i < 0 || i >= interp->model->num_inputs) return -1;
  return interp->model->inputs[i];
}

int32_t edge_interpreter_output(const edge_interpreter *interp, int32_t i) {
  if (!interp || i < 0 || i >= interp->model->num_outputs) return -1;
  return interp->model->outputs[i];
}

static edge_status check_tensor_index(const edge_interpreter *interp, int32_t tensor) {
  if (tensor < 0 || tensor >= interp->num_tensors)
    return interp_fail((edge_interpreter *)interp, EDGE_INVALID_ARGUMENT, "tensor %d is out of range (%d tensors)",
                       tensor, interp->num_tensors);
  return EDGE_OK;
}

edge_status edge_interpreter_tensor_info(const edge_interpreter *interp, int32_t tensor, edge_tensor_info *out) {
  if (!interp || !out) return edge_set_last_error(EDGE_INVALID_ARGUMENT, "tensor_info: NULL argument");
  edge_status status = check_tensor_index(interp, tensor);
  if (status != EDGE_OK) return status;
  const edge_tensor *t = &interp->tensors[tensor];
  memset(out, 0, sizeof *out);
  out->name = tensor_name(t);
  out->dtype = t->dtype;
  out->kind = t->kind;
  out->rank = t->rank;
  for (int32_t d = 0; d < t->rank; ++d) {
    out->shape[d] = t->shape[d];
    out->shape_signature[d] = t->shape_signature[d];
  }
  out->nbytes = t->nbytes;
  out->num_quant_params = t->num_quant_params;
  out->scales = t->scales;
  out->zero_points = t->zero_points;
  out->quantized_dimension = t->quantized_dimension;
  return EDGE_OK;
}

edge_status edge_interpreter_op_info(const edge_interpreter *interp, int32_t op, edge_op_info *out) {
  if (!interp || !out) return edge_set_last_error(EDGE_INVALID_ARGUMENT, "op_info: NULL argument");
  if (op < 0 || op >= interp->num_ops)
    return interp_fail((edge_interpreter *)interp, EDGE_INVALID_ARGUMENT, "op %d is out of range (%d ops)", op,
                       interp->num_ops);
  const edge_node *node = &interp->nodes[op];
  out->op_name = opcode_name(node->opcode);
  out->opcode = (int32_t)node->opcode;
  out->version = node->version;
  out->num_inputs = node->num_inputs;
  out->inputs = node->inputs;
  out->num_outputs = node->num_outputs;
  out->outputs = node->outputs;
  out->flops = node->flops;
  out->last_ns = node->last_ns;
  out->total_ns = node->total_ns;
  out->runs = node->runs;
  return EDGE_OK;
}

edge_status edge_interpreter_memory(const edge_interpreter *interp, edge_memory_info *out) {
  if (!interp || !out) return edge_set_last_error(EDGE_INVALID_ARGUMENT, "memory: NULL argument");
  out->arena_bytes = interp->allocated ? interp->arena_bytes : 0;
  out->naive_bytes = interp->allocated ? interp->naive_bytes : 0;
  out->scratch_bytes = interp->allocated ? interp->scratch_bytes : 0;
  out->persistent_bytes = interp->persistent_bytes;
  out->model_bytes = interp->model->size;
  return EDGE_OK;
}

/* ---- resize and allocate ---- */

edge_status edge_interpreter_resize_input(edge_interpreter *interp, int32_t tensor, int32_t rank, const int64_t *shape) {
  if (!interp) return edge_set_last_error(EDGE_INVALID_ARGUMENT, "resize_input: interpreter is NULL");
  edge_status status = check_tensor_index(interp, tensor);
  if (status != EDGE_OK) return status;
  edge_tensor *t = &interp->tensors[tensor];
  if (!interp->resizable[tensor])
    return interp_fail(interp, EDGE_INVALID_ARGUMENT, "tensor '%s' (%d) is not an input", tensor_name(t), tensor);
  if (rank != t->declared_rank || (rank > 0 && !shape))
    return interp_fail(interp, EDGE_INVALID_ARGUMENT, "tensor '%s' (%d) has rank %d, got rank %d", tensor_name(t),
                       tensor, t->declared_rank, rank);
  bool same = true;
  for (int32_t d = 0; d < rank; ++d) {
    if (shape[d] < 0 || (t->shape_signature[d] != -1 && shape[d] != t->shape_signature[d])) {
      char want[160], got[160];
      int64_t signature[EDGE_MAX_RANK];
      for (int32_t k = 0; k < rank; ++k) signature[k] = t->shape_signature[k];
      edge_format_shape(want, sizeof want, rank, signature);
      edge_format_shape(got, sizeof got, rank, shape);
      return interp_fail(interp, EDGE_INVALID_ARGUMENT,
                         "tensor '%s' (%d): shape %s does not fit its signature %s (-1 marks a dimension that may change)",
                         tensor_name(t), tensor, got, want);
    }
    same &= shape[d] == t->shape[d];
  }
  if (same) return EDGE_OK;
  status = edge_set_shape(&interp->ctx, t, rank, shape);
  if (status != EDGE_OK) {
    char message[EDGE_ERROR_CAPACITY];
    snprintf(message, sizeof message, "%s", interp->error);
    return interp_fail(interp, EDGE_INVALID_ARGUMENT, "%s", message);
  }
  interp->allocated = false;
  return EDGE_OK;
}

static bool same_shape(int32_t rank_a, const int64_t *a, int32_t rank_b, const int64_t *b) {
  if (rank_a != rank_b) return false;
  for (int32_t d = 0; d < rank_a; ++d)
    if (a[d] != b[d]) return false;
  return true;
}

static edge_status check_output_shape(edge_interpreter *interp, int32_t op, int32_t tensor, bool inputs_resized) {
  edge_tensor *t = &interp->tensors[tensor];
  /* Recomputes nbytes in case a kernel wrote rank/shape directly, and bounds the shape. */
  int64_t shape[EDGE_MAX_RANK];
  int32_t rank = t->rank;
  if (rank < 0 || rank > EDGE_MAX_RANK)
    return interp_fail(interp, EDGE_INVALID_MODEL, "op %d (%s): output '%s' (%d) got rank %d", op,
                       opcode_name(interp->nodes[op].opcode), tensor_name(t), tensor, rank);
  memcpy(shape, t->shape, sizeof shape);
  interp->error[0] = '\0';
  edge_status status = edge_set_shape(&interp->ctx, t, rank, shape);
  if (status != EDGE_OK) return op_fail(interp, op, status);
  bool fixed = t->kind == EDGE_TENSOR_VARIABLE || !inputs_resized;
  if (fixed && !same_shape(t->rank, t->shape, t->declared_rank, t->declared_shape)) {
    char computed[160], declared[160];
    edge_format_shape(computed, sizeof computed, t->rank, t->shape);
    edge_format_shape(declared, sizeof declared, t->declared_rank, t->declared_shape);
    return interp_fail(interp, EDGE_INVALID_MODEL, "op %d (%s): computes shape %s for tensor '%s' (%d), but the file declares %s",
                       op, opcode_name(interp->nodes[op].opcode), computed, tensor_name(t), tensor, declared);
  }
  return EDGE_OK;
}

/* An op whose eval sets its outputs' row count (rows_set_at_eval) leaves the other ops prepared
 * for the most rows, so no op may read such an output: it can only be a model output. */
static edge_status check_rows_unread(edge_interpreter *interp, int32_t op) {
  const edge_node *node = &interp->nodes[op];
  for (int32_t j = 0; j < node->num_outputs; ++j) {
    int32_t tensor = node->outputs[j];
    if (tensor < 0) continue;
    for (int32_t k = 0; k < interp->num_ops; ++k)
      for (int32_t i = 0; i < interp->nodes[k].num_inputs; ++i)
        if (interp->nodes[k].inputs[i] == tensor)
          return interp_fail(interp, EDGE_UNSUPPORTED,
                             "op %d (%s): output '%s' (%d) has a row count known only after the run, so it can only "
                             "be a model output, but op %d (%s) reads it", op, opcode_name(node->opcode),
                             tensor_name(&interp->tensors[tensor]), tensor, k, opcode_name(interp->nodes[k].opcode));
  }
  return EDGE_OK;
}

edge_status edge_interpreter_allocate(edge_interpreter *interp) {
  if (!interp) return edge_set_last_error(EDGE_INVALID_ARGUMENT, "allocate: interpreter is NULL");
  interp->error[0] = '\0';
  interp->allocated = false;
  release_nodes(interp);
  free(interp->arena);
  interp->arena = NULL;

  bool inputs_resized = false;
  for (int32_t t = 0; t < interp->num_tensors; ++t) {
    edge_tensor *tensor = &interp->tensors[t];
    if (tensor->folded) { /* its producer's plan was just released; its prepare folds it again */
      tensor->folded = false;
      tensor->kind = EDGE_TENSOR_ACTIVATION;
    }
    if (tensor->kind == EDGE_TENSOR_ACTIVATION) tensor->data = NULL;
    if (interp->resizable[t]) {
      inputs_resized |= !same_shape(tensor->rank, tensor->shape, tensor->declared_rank, tensor->declared_shape);
    } else if (tensor->kind == EDGE_TENSOR_ACTIVATION) {
      /* Outputs start from the declared shape: ops such as RESHAPE read their target from it. */
      edge_set_shape(&interp->ctx, tensor, tensor->declared_rank, tensor->declared_shape);
    }
  }

  size_t scratch = 0, kept = 0;
  for (int32_t i = 0; i < interp->num_ops; ++i) {
    edge_node *node = &interp->nodes[i];
    const edge_op_registration *reg = edge_op_lookup(node->opcode);
    node->scratch_bytes = 0;
    node->plan_bytes = 0;
    node->scratch = NULL;
    node->rows_set_at_eval = false;
    interp->error[0] = '\0';
    edge_status status = reg->prepare(&interp->ctx, node);
    if (status != EDGE_OK) return op_fail(interp, i, status);
    for (int32_t j = 0; j < node->num_outputs; ++j) {
      if (node->outputs[j] < 0) continue;
      status = check_output_shape(interp, i, node->outputs[j], inputs_resized);
      if (status != EDGE_OK) return status;
    }
    if (node->rows_set_at_eval && (status = check_rows_unread(interp, i)) != EDGE_OK) return status;
    if (node->scratch_bytes > scratch) scratch = node->scratch_bytes;
    kept += node->plan_bytes;
  }
  interp->persistent_bytes = interp->variable_bytes + kept;

  int32_t planned = 0;
  for (int32_t t = 0; t < interp->num_tensors; ++t) {
    if (interp->tensors[t].kind != EDGE_TENSOR_ACTIVATION) continue;
    interp->plan[planned] = (edge_arena_item){interp->tensors[t].nbytes, interp->first_use[t], interp->last_use[t], 0};
    interp->plan_tensor[planned++] = t;
  }
  interp->num_planned = planned;
  size_t arena_bytes, naive_bytes;
  if (edge_plan_arena(interp->plan, planned, interp->num_threads > 1, &arena_bytes, &naive_bytes) != EDGE_OK)
    return interp_fail(interp, EDGE_OUT_OF_MEMORY, "activation sizes overflow the address space");
  size_t scratch_aligned = align_up(scratch), total = arena_bytes + scratch_aligned;
  if (scratch_aligned < scratch || total < arena_bytes)
    return interp_fail(interp, EDGE_OUT_OF_MEMORY, "scratch of %zu bytes overflows the address space", scratch);
  if (interp->memory_limit && (total > interp->memory_limit || interp->persistent_bytes > interp->memory_limit - total))
    return interp_fail(interp, EDGE_OUT_OF_MEMORY,
                       "the plan needs %zu bytes of arena (%zu activations + %zu scratch) and %zu persistent, over the "
                       "memory limit of %llu", total, arena_bytes, scratch_aligned, interp->persistent_bytes,
                       (unsigned long long)interp->memory_limit);
  interp->arena = aligned_alloc(EDGE_ALIGNMENT, total ? total : EDGE_ALIGNMENT);
  if (!interp->arena)
    return interp_fail(interp, EDGE_OUT_OF_MEMORY, "cannot allocate the %zu-byte arena (%zu activations + %zu scratch)",
                       total, arena_bytes, scratch_aligned);
  for (int32_t k = 0; k < planned; ++k)
    interp->tensors[interp->plan_tensor[k]].data = (char *)interp->arena + interp->plan[k].offset;
  for (int32_t i = 0; i < interp->num_ops; ++i)
    interp->nodes[i].scratch = interp->nodes[i].scratch_bytes ? (char *)interp->arena + arena_bytes : NULL;
  interp->arena_bytes = arena_bytes;
  interp->naive_bytes = naive_bytes;
  interp->scratch_bytes = scratch;
  memset(interp->placement, 0, (size_t)(interp->num_ops ? interp->num_ops : 1));
  if (interp->gpu) {
    interp->error[0] = '\0';
    edge_status status = edge_gpu_plan(interp->gpu, &interp->ctx, interp->nodes, interp->num_ops, interp->arena,
                                       arena_bytes, interp->backend == EDGE_BACKEND_AUTO, interp->gpu_allowed,
                                       interp->placement);
    if (status != EDGE_OK) {
      char message[EDGE_ERROR_CAPACITY];
      snprintf(message, sizeof message, "%s", interp->error);
      return interp_fail(interp, status, "%s", message);
    }
  }
  /* Packed weights are in the ops' plans now: the file's copies need not stay resident. */
  edge_model_release_pages(interp->model);
  interp->allocated = true;
  return EDGE_OK;
}

/* ---- tensor data ---- */

static edge_status check_data_access(const edge_interpreter *interp, int32_t tensor, const char *what) {
  edge_status status = check_tensor_index(interp, tensor);
  if (status != EDGE_OK) return status;
  const edge_tensor *t = &interp->tensors[tensor];
  if (t->kind == EDGE_TENSOR_ACTIVATION && !interp->allocated)
    return interp_fail((edge_interpreter *)interp, EDGE_BAD_STATE, "%s tensor '%s' (%d) before allocate", what,
                       tensor_name(t), tensor);
  return EDGE_OK;
}

static edge_status check_byte_count(const edge_interpreter *interp, int32_t tensor, size_t nbytes) {
  const edge_tensor *t = &interp->tensors[tensor];
  if (nbytes == t->nbytes) return EDGE_OK;
  char shape[160];
  edge_format_shape(shape, sizeof shape, t->rank, t->shape);
  return interp_fail((edge_interpreter *)interp, EDGE_INVALID_ARGUMENT, "tensor '%s' (%d) holds %zu bytes (%s %s), got %zu",
                     tensor_name(t), tensor, t->nbytes, edge_dtype_name(t->dtype), shape, nbytes);
}

edge_status edge_interpreter_set_tensor(edge_interpreter *interp, int32_t tensor, const void *data, size_t nbytes) {
  if (!interp) return edge_set_last_error(EDGE_INVALID_ARGUMENT, "set_tensor: interpreter is NULL");
  edge_status status = check_data_access(interp, tensor, "set_tensor on");
  if (status != EDGE_OK) return status;
  edge_tensor *t = &interp->tensors[tensor];
  if (t->kind == EDGE_TENSOR_CONSTANT)
    return interp_fail(interp, EDGE_INVALID_ARGUMENT, "tensor '%s' (%d) is a constant and cannot be set", tensor_name(t),
                       tensor);
  if ((status = check_byte_count(interp, tensor, nbytes)) != EDGE_OK) return status;
  if (nbytes && !data) return interp_fail(interp, EDGE_INVALID_ARGUMENT, "set_tensor: data is NULL");
  if (nbytes) memcpy(t->data, data, nbytes);
  if (t->kind == EDGE_TENSOR_VARIABLE) ++interp->ctx.variables_version;
  edge_gpu_host_wrote(interp->gpu, tensor);
  return EDGE_OK;
}

edge_status edge_interpreter_get_tensor(const edge_interpreter *interp, int32_t tensor, void *data, size_t nbytes) {
  if (!interp) return edge_set_last_error(EDGE_INVALID_ARGUMENT, "get_tensor: interpreter is NULL");
  edge_status status = check_data_access(interp, tensor, "get_tensor on");
  if (status != EDGE_OK) return status;
  if ((status = check_byte_count(interp, tensor, nbytes)) != EDGE_OK) return status;
  if (nbytes && !data) return interp_fail((edge_interpreter *)interp, EDGE_INVALID_ARGUMENT, "get_tensor: data is NULL");
  edge_interpreter *self = (edge_interpreter *)interp;  /* the host copy brought up to date: not a visible change */
  if (self->gpu && (status = edge_gpu_to_host(self->gpu, &self->ctx, tensor)) != EDGE_OK)
    return edge_set_last_error(status, "get_tensor: %s", self->error);
  if (nbytes) memcpy(data, interp->tensors[tensor].data, nbytes);
  return EDGE_OK;
}

edge_status edge_interpreter_tensor_data(edge_interpreter *interp, int32_t tensor, void **data) {
  if (!interp || !data) return edge_set_last_error(EDGE_INVALID_ARGUMENT, "tensor_data: NULL argument");
  *data = NULL;
  edge_status status = check_data_access(interp, tensor, "tensor_data on");
  if (status != EDGE_OK) return status;
  if (interp->gpu) {  /* the caller may read or write through the address at any time: see sync_exposed */
    if ((status = edge_gpu_to_host(interp->gpu, &interp->ctx, tensor)) != EDGE_OK)
      return edge_set_last_error(status, "tensor_data: %s", interp->error);
    edge_gpu_host_wrote(interp->gpu, tensor);
    interp->exposed[tensor] = 1;
  }
  *data = interp->tensors[tensor].data;
  if (interp->tensors[tensor].kind == EDGE_TENSOR_VARIABLE) {
    interp->variables_exposed = true;
    ++interp->ctx.variables_version;
  }
  return EDGE_OK;
}

edge_status edge_interpreter_reset_variables(edge_interpreter *interp) {
  if (!interp) return edge_set_last_error(EDGE_INVALID_ARGUMENT, "reset_variables: interpreter is NULL");
  for (int32_t t = 0; t < interp->num_tensors; ++t)
    if (interp->tensors[t].kind == EDGE_TENSOR_VARIABLE) load_variable(&interp->tensors[t]);
  ++interp->ctx.variables_version;
  return EDGE_OK;
}

/* ---- saving the variables ---- */

static edge_status write_all(int fd, const void *data, size_t nbytes, off_t offset) {
  const char *p = data;
  while (nbytes > 0) {
    ssize_t n = pwrite(fd, p, nbytes, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return EDGE_IO_ERROR;
    p += n;
    nbytes -= (size_t)n;
    offset += n;
  }
  return EDGE_OK;
}

/* The model's bytes with every variable's current value over its buffer: the buffers keep their
 * offsets and sizes, so the FlatBuffer is unchanged and the file loads anywhere the original
 * did. Written to path.tmp, synced, then renamed over path, so a crash leaves either the old file
 * or the new one. */
edge_status edge_interpreter_save_model(const edge_interpreter *interp, const char *path) {
  if (!interp || !path) return edge_set_last_error(EDGE_INVALID_ARGUMENT, "save_model: interpreter or path is NULL");
  edge_interpreter *self = (edge_interpreter *)interp;
  const edge_model *m = interp->model;
  for (int32_t i = 0; i < interp->num_tensors; ++i) {
    const edge_tensor *v = &interp->tensors[i];
    if (v->kind != EDGE_TENSOR_VARIABLE || v->nbytes == 0) continue;
    if (!v->initial)
      return interp_fail(self, EDGE_UNSUPPORTED,
                         "save_model: variable '%s' (%d) has no buffer in the model, so its value has nowhere to go",
                         tensor_name(v), i);
    const char *begin = v->initial, *end = begin + v->nbytes;
    for (int32_t j = 0; j < interp->num_tensors; ++j) {
      const edge_tensor *t = &interp->tensors[j];
      if (j == i || !t->initial || t->kind == EDGE_TENSOR_ACTIVATION) continue;
      const char *other = t->initial;
      if (other < end && begin < other + t->initial_nbytes)
        return interp_fail(self, EDGE_UNSUPPORTED, "save_model: variable '%s' (%d) shares buffer bytes with tensor '%s' (%d)",
                           tensor_name(v), i, tensor_name(t), j);
    }
  }
  size_t path_len = strlen(path);
  char *tmp = malloc(path_len + 5);
  if (!tmp) return interp_fail(self, EDGE_OUT_OF_MEMORY, "save_model: out of memory");
  memcpy(tmp, path, path_len);
  memcpy(tmp + path_len, ".tmp", 5);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) {
    edge_status status = interp_fail(self, EDGE_IO_ERROR, "save_model: cannot create '%s': %s", tmp, strerror(errno));
    free(tmp);
    return status;
  }
  edge_status status = write_all(fd, m->bytes, m->size, 0);
  for (int32_t i = 0; status == EDGE_OK && i < interp->num_tensors; ++i) {
    const edge_tensor *v = &interp->tensors[i];
    if (v->kind != EDGE_TENSOR_VARIABLE || v->nbytes == 0) continue;
    status = write_all(fd, v->data, v->nbytes, (off_t)((const uint8_t *)v->initial - m->bytes));
  }
  int err = status == EDGE_OK ? 0 : errno;
  if (status == EDGE_OK && fsync(fd) != 0) status = EDGE_IO_ERROR, err = errno;
  if (close(fd) != 0 && status == EDGE_OK) status = EDGE_IO_ERROR, err = errno;
  if (status == EDGE_OK && rename(tmp, path) != 0) status = EDGE_IO_ERROR, err = errno;
  if (status != EDGE_OK) {
    unlink(tmp);
    interp_fail(self, status, "save_model: writing '%s' failed: %s", path, strerror(err ? err : EIO));
  }
  free(tmp);
  return status;
}

/* ---- invoke ---- */

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* With a GPU: a GPU op uploads what only the host holds; a CPU op first downloads what only the
 * device holds, and its outputs are then the host's. */
static edge_status eval_on_device(edge_interpreter *interp, int32_t op, edge_node *node,
                                  const edge_op_registration *reg) {
  edge_gpu *gpu = interp->gpu;
  if (!gpu) return reg->eval(&interp->ctx, node);
  if (interp->placement[op]) return edge_gpu_run(gpu, &interp->ctx, node, op, interp->profiling);
  edge_status status = EDGE_OK;
  for (int32_t i = 0; status == EDGE_OK && i < node->num_inputs; ++i)
    status = edge_gpu_to_host(gpu, &interp->ctx, node->inputs[i]);
  /* an op that updates an input in place (OPTIMIZER_UPDATE) writes it on the host too */
  for (int32_t i = 0; status == EDGE_OK && i < node->num_outputs; ++i)
    status = edge_gpu_to_host(gpu, &interp->ctx, node->outputs[i]);
  if (status == EDGE_OK) status = reg->eval(&interp->ctx, node);
  for (int32_t i = 0; i < node->num_outputs; ++i) edge_gpu_host_wrote(gpu, node->outputs[i]);
  if (node->writes_variables)
    for (int32_t i = 0; i < node->num_inputs; ++i) edge_gpu_host_wrote(gpu, node->inputs[i]);
  return status;
}

/* Tensors whose host address was handed out: before a run the caller may have written them, after
 * it they must show the results. */
static edge_status sync_exposed(edge_interpreter *interp, bool after) {
  if (!interp->gpu) return EDGE_OK;
  for (int32_t t = 0; t < interp->num_tensors; ++t) {
    if (!interp->exposed[t]) continue;
    if (!after) {
      edge_gpu_host_wrote(interp->gpu, t);
      continue;
    }
    edge_status status = edge_gpu_to_host(interp->gpu, &interp->ctx, t);
    if (status != EDGE_OK) {
      edge_set_last_error(status, "%s", interp->error);
      return status;
    }
  }
  return EDGE_OK;
}

static edge_status run_op(edge_interpreter *interp, int32_t op) {
  edge_node *node = &interp->nodes[op];
  const edge_op_registration *reg = edge_op_lookup(node->opcode);
  interp->error[0] = '\0';
  uint64_t start = interp->profiling ? now_ns() : 0;
  edge_status status = eval_on_device(interp, op, node, reg);
  if (node->writes_variables) ++interp->ctx.variables_version;
  if (interp->profiling) {
    uint64_t elapsed = now_ns() - start;
    node->last_ns = elapsed;
    node->total_ns += elapsed;
    ++node->runs;
  }
  if (status != EDGE_OK) return op_fail(interp, op, status);
  return EDGE_OK;
}

static edge_status check_allocated(edge_interpreter *interp, const char *what) {
  if (!interp->allocated)
    return interp_fail(interp, EDGE_BAD_STATE, "%s before allocate (or after a resize without allocate)", what);
  return EDGE_OK;
}

edge_status edge_interpreter_invoke(edge_interpreter *interp) {
  if (!interp) return edge_set_last_error(EDGE_INVALID_ARGUMENT, "invoke: interpreter is NULL");
  edge_status status = check_allocated(interp, "invoke");
  if (status != EDGE_OK) return status;
  if (interp->variables_exposed) ++interp->ctx.variables_version;
  const edge_model *m = interp->model;
  sync_exposed(interp, false);
  for (int32_t i = 0; status == EDGE_OK && i < m->num_invoke_ops; ++i) status = run_op(interp, m->invoke_ops[i]);
  if (status == EDGE_OK) status = sync_exposed(interp, true);
  return status;
}

edge_status edge_interpreter_invoke_ops(edge_interpreter *interp, const int32_t *ops, int32_t num_ops) {
  if (!interp) return edge_set_last_error(EDGE_INVALID_ARGUMENT, "invoke_ops: interpreter is NULL");
  edge_status status = check_allocated(interp, "invoke_ops");
  if (status != EDGE_OK) return status;
  if (num_ops < 0 || (num_ops > 0 && !ops))
    return interp_fail(interp, EDGE_INVALID_ARGUMENT, "invoke_ops: %d ops from a %s list", num_ops, ops ? "" : "NULL");
  for (int32_t i = 0; i < num_ops; ++i)
    if (ops[i] < 0 || ops[i] >= interp->num_ops)
      return interp_fail(interp, EDGE_INVALID_ARGUMENT, "invoke_ops: entry %d is op %d, out of range (%d ops)", i, ops[i],
                         interp->num_ops);
  if (interp->variables_exposed) ++interp->ctx.variables_version;
  sync_exposed(interp, false);
  for (int32_t i = 0; status == EDGE_OK && i < num_ops; ++i) status = run_op(interp, ops[i]);
  if (status == EDGE_OK) status = sync_exposed(interp, true);
  return status;
}

edge_status edge_interpreter_invoke_signature(edge_interpreter *interp, int32_t signature) {
  if (!interp) return edge_set_last_error(EDGE_INVALID_ARGUMENT, "invoke_signature: interpreter is NULL");
  if (signature < 0 || signature >= interp->model->num_signatures)
    return interp_fail(interp, EDGE_INVALID_ARGUMENT, "signature %d is out of range (%d signatures)", signature,
                       interp->model->num_signatures);
  const edge_signature_def *s = &interp->model->signatures[signature];
  return edge_interpreter_invoke_ops(interp, s->ops, s->num_ops);
}

void edge_interpreter_set_profiling(edge_interpreter *interp, int32_t enabled) {
  if (interp) interp->profiling = enabled != 0;
}

void edge_interpreter_reset_profile(edge_interpreter *interp) {
  if (!interp) return;
  for (int32_t i = 0; i < interp->num_ops; ++i) {
    interp->nodes[i].last_ns = 0;
    interp->nodes[i].total_ns = 0;
    interp->nodes[i].runs = 0;
  }
}

/* ---- the OpenCL backend's placement and transfers ---- */

edge_status edge_interpreter_set_op_devices(edge_interpreter *interp, const uint8_t *devices, int32_t num_ops) {
  if (!interp) return edge_set_last_error(EDGE_INVALID_ARGUMENT, "set_op_devices: interpreter is NULL");
  if (!devices || num_ops == 0) {
    free(interp->gpu_allowed);
    interp->gpu_allowed = NULL;
  } else {
    if (num_ops != interp->num_ops)
      return interp_fail(interp, EDGE_INVALID_ARGUMENT, "set_op_devices: %d entries for a model of %d ops", num_ops,
                         interp->num_ops);
    uint8_t *copy = malloc((size_t)num_ops);
    if (!copy) return interp_fail(interp, EDGE_OUT_OF_MEMORY, "set_op_devices: out of memory");
    for (int32_t i = 0; i < num_ops; ++i) {
      if (devices[i] > 1) {
        free(copy);
        return interp_fail(interp, EDGE_INVALID_ARGUMENT, "set_op_devices: entry %d is %u; use 0 (CPU) or 1 (GPU)", i,
                           devices[i]);
      }
      copy[i] = devices[i];
    }
    free(interp->gpu_allowed);
    interp->gpu_allowed = copy;
  }
  interp->allocated = false;  /* takes effect at the next allocate */
  return EDGE_OK;
}

edge_status edge_interpreter_tensor_gpu_buffer(edge_interpreter *interp, int32_t tensor, void **buffer,
                                               size_t *byte_offset) {
  if (!interp || !buffer || !byte_offset)
    return edge_set_last_error(EDGE_INVALID_ARGUMENT, "tensor_gpu_buffer: NULL argument");
  edge_status status = check_data_access(interp, tensor, "tensor_gpu_buffer on");
  if (status != EDGE_OK) return status;
  if (!interp->gpu) return interp_fail(interp, EDGE_UNSUPPORTED, "tensor_gpu_buffer: this interpreter uses no GPU");
  cl_mem mem = NULL;
  interp->error[0] = '\0';
  if ((status = edge_gpu_tensor_buffer(interp->gpu, &interp->ctx, tensor, &mem, byte_offset)) != EDGE_OK)
    return edge_set_last_error(status, "tensor_gpu_buffer: %s", interp->error);
  *buffer = mem;
  return EDGE_OK;
}

edge_status edge_interpreter_tensor_gpu_written(edge_interpreter *interp, int32_t tensor) {
  if (!interp) return edge_set_last_error(EDGE_INVALID_ARGUMENT, "tensor_gpu_written: interpreter is NULL");
  edge_status status = check_data_access(interp, tensor, "tensor_gpu_written on");
  if (status != EDGE_OK) return status;
  if (!interp->gpu) return interp_fail(interp, EDGE_UNSUPPORTED, "tensor_gpu_written: this interpreter uses no GPU");
  interp->error[0] = '\0';
  if ((status = edge_gpu_device_wrote(interp->gpu, &interp->ctx, tensor)) != EDGE_OK)
    return edge_set_last_error(status, "tensor_gpu_written: %s", interp->error);
  return EDGE_OK;
}

int32_t edge_interpreter_op_device(const edge_interpreter *interp, int32_t op) {
  if (!interp || !interp->allocated || op < 0 || op >= interp->num_ops) return 0;
  return interp->placement[op];
}

edge_status edge_interpreter_gpu_kernel(const edge_interpreter *interp, int32_t op, char *name, size_t capacity,
                                        uint64_t local[3]) {
  if (!interp || !name || capacity == 0 || !local)
    return edge_set_last_error(EDGE_INVALID_ARGUMENT, "gpu_kernel: NULL argument");
  const char *kernel = NULL;
  size_t sizes[3];
  if (edge_gpu_op_kernel(interp->gpu, op, &kernel, sizes) != EDGE_OK)
    return edge_set_last_error(EDGE_UNSUPPORTED, "gpu_kernel: op %d does not run on the GPU", op);
  snprintf(name, capacity, "%s", kernel);
  for (int i = 0; i < 3; ++i) local[i] = sizes[i];
  return EDGE_OK;
}

edge_status edge_interpreter_gpu_transfers(const edge_interpreter *interp, edge_gpu_transfer_info *out) {
  if (!interp || !out) return edge_set_last_error(EDGE_INVALID_ARGUMENT, "gpu_transfers: NULL argument");
  edge_gpu_counters counters;
  edge_gpu_counters_get(interp->gpu, &counters);
  out->uploads = counters.uploads;
  out->downloads = counters.downloads;
  out->upload_bytes = counters.upload_bytes;
  out->download_bytes = counters.download_bytes;
  out->launches = counters.launches;
  return EDGE_OK;
}

/* edgesplit C runtime: the one public header.
 *
 * Lifetimes: an edge_model borrows or maps the model bytes and must outlive every interpreter made
 * from it. An interpreter owns its arena (activations), its persistent area (variables, prepacked
 * weights) and its thread pool. Pointers returned by edge_interpreter_tensor_data stay valid until
 * the next edge_interpreter_allocate or edge_interpreter_free.
 *
 * Errors: every call returns an edge_status; the message for a failed call on an interpreter is
 * edge_interpreter_error(interp); for calls without one (loading) it is edge_last_error(), which is
 * thread-local.
 *
 * Threads: every function says what may run concurrently with it. In short: the global queries,
 * loading, and everything on a loaded edge_model except edge_model_free may be called from any
 * number of threads at once (a loaded model is never written); an edge_interpreter belongs to one
 * thread at a time (calls on the same interpreter must not overlap; the caller serializes them),
 * while different interpreters, even of one model, run in parallel. An interpreter's own thread pool
 * is internal: its threads never call back into the caller.
 *
 * ABI: libedge.so exports exactly the functions declared here (a version script made from this
 * header). EDGE_ABI_VERSION grows whenever a declaration or struct layout here changes in a way an
 * already-built caller would misread; edge_abi_version() returns the number the library was built
 * with, and cruntime/binding.py refuses a library whose number differs from its header's.
 *
 * This header is also read by cffi (cruntime/binding.py): keep declarations plain C, constants as
 * integer #defines, and no other preprocessor logic between the include guard and the C++ guard
 * (the one exception: the #ifndef around EDGE_ABI_VERSION, so that a test can build a library that
 * claims another version).
 */
#ifndef EDGE_H
#define EDGE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EDGE_SCHEMA_VERSION 1
#define EDGE_RUNTIME_VERSION 100
#define EDGE_MAX_RANK 8
#ifndef EDGE_ABI_VERSION
#define EDGE_ABI_VERSION 1
#endif

typedef enum {
  EDGE_OK = 0,
  EDGE_INVALID_MODEL = 1,     /* the file is malformed or inconsistent */
  EDGE_INVALID_ARGUMENT = 2,  /* a caller's argument is wrong (index, shape, byte count) */
  EDGE_UNSUPPORTED = 3,       /* valid, but this runtime lacks the op, dtype or feature */
  EDGE_OUT_OF_MEMORY = 4,
  EDGE_BAD_STATE = 5,         /* e.g. invoke before allocate */
  EDGE_RUNTIME_ERROR = 6,     /* a data-dependent failure during invoke (index out of range) */
  EDGE_IO_ERROR = 7
} edge_status;

typedef enum {
  EDGE_FLOAT32 = 0,
  EDGE_FLOAT16 = 1,
  EDGE_INT8 = 2,
  EDGE_UINT8 = 3,
  EDGE_INT32 = 4,
  EDGE_INT64 = 5,
  EDGE_BOOL = 6,
  EDGE_FLOAT64 = 7,
  /* The dtypes below and FLOAT64 exist only at a model's boundary: Cast is the one op that reads or
   * writes them (the converter computes them in int32, int64 or float32 inside). */
  EDGE_INT16 = 8,
  EDGE_UINT16 = 9,
  EDGE_UINT32 = 10,
  EDGE_UINT64 = 11,
  EDGE_BFLOAT16 = 12,
  /* float8 and float4 as ONNX and ml_dtypes define them (fn: no infinities; fnuz: no negative zero,
   * 0x80 is NaN; e8m0fnu: powers of two 2^(code - 127), 0xff NaN), computed in float32 inside. */
  EDGE_FLOAT8_E4M3FN = 13,
  EDGE_FLOAT8_E4M3FNUZ = 14,
  EDGE_FLOAT8_E5M2 = 15,
  EDGE_FLOAT8_E5M2FNUZ = 16,
  EDGE_FLOAT8_E8M0FNU = 17,
  /* Packed below a byte: a tensor of n elements holds ceil(n * bits / 8) bytes, element i in the
   * low bits of its byte first (ONNX's layout). edge_dtype_size is 0 for these; see edge_dtype_bits. */
  EDGE_FLOAT4_E2M1FN = 18,
  EDGE_INT4 = 19,
  EDGE_UINT4 = 20,
  EDGE_INT2 = 21,
  EDGE_UINT2 = 22
} edge_dtype;

typedef enum {
  EDGE_TENSOR_ACTIVATION = 0,  /* lives in the arena */
  EDGE_TENSOR_CONSTANT = 1,    /* read-only weights, used in place from the model bytes */
  EDGE_TENSOR_VARIABLE = 2     /* persistent and mutable */
} edge_tensor_kind;

typedef struct edge_model edge_model;
typedef struct edge_interpreter edge_interpreter;

typedef struct {
  const char *name;
  edge_dtype dtype;
  edge_tensor_kind kind;
  int32_t rank;
  int64_t shape[EDGE_MAX_RANK];           /* current shape (after allocate) */
  int32_t shape_signature[EDGE_MAX_RANK]; /* -1 marks a dynamic dimension */
  size_t nbytes;
  int32_t num_quant_params;               /* 0: not quantized */
  const float *scales;
  const int64_t *zero_points;
  int32_t quantized_dimension;
} edge_tensor_info;

typedef struct {
  const char *key;
  int32_t num_inputs;
  const char *const *input_names;
  const int32_t *input_tensors;
  int32_t num_outputs;
  const char *const *output_names;
  const int32_t *output_tensors;
  int32_t num_ops;                        /* the ops invoke_signature runs, in order */
  const int32_t *ops;
} edge_signature_info;

typedef struct {
  const char *op_name;                    /* "CONV_2D", ... */
  int32_t opcode;
  int32_t version;
  int32_t num_inputs;
  const int32_t *inputs;                  /* -1: optional input left out */
  int32_t num_outputs;
  const int32_t *outputs;                 /* -1: optional output not wanted (LSTM, GRU) */
  uint64_t flops;                         /* from the model's cost metadata (0 if absent) */
  uint64_t last_ns;                       /* profiling: time of the last run of this op */
  uint64_t total_ns;                      /* profiling: sum over runs since the last reset */
  uint64_t runs;
} edge_op_info;

typedef struct {
  size_t arena_bytes;                     /* planned activation arena */
  size_t naive_bytes;                     /* sum of all activation tensors (no reuse) */
  size_t persistent_bytes;                /* variables, prepacked weights, op state */
  size_t scratch_bytes;                   /* largest per-op scratch (shared, part of the arena) */
  size_t model_bytes;                     /* size of the model file */
} edge_memory_info;

typedef enum {
  EDGE_BACKEND_CPU = 0,                   /* every op on the CPU kernels */
  EDGE_BACKEND_OPENCL = 1,                /* ops the OpenCL backend has on the GPU, the rest on the CPU */
  EDGE_BACKEND_AUTO = 2                   /* the GPU only where it is expected to pay; the CPU without OpenCL */
} edge_backend;

typedef enum { EDGE_GPU_FP32 = 0, EDGE_GPU_FP16 = 1 } edge_gpu_precision;   /* storage; arithmetic is fp32 */

typedef struct {
  int32_t num_threads;                    /* exactly this many threads run an op (>= 1) */
  int32_t profiling;                      /* record per-op times */
  int32_t backend;                        /* edge_backend */
  int32_t gpu_precision;                  /* edge_gpu_precision */
  int32_t gpu_device;                     /* 0: the first GPU, else the first OpenCL device; k >= 1: device
                                             k - 1 of edge_opencl_device's list */
  void *opencl_queue;                     /* a caller's cl_command_queue (in-order): the interpreter runs on
                                             it, in its context, instead of making its own (gpu_device is
                                             then ignored); retained while the interpreter lives */
  uint64_t memory_limit;                  /* 0: none; else create and allocate fail with EDGE_OUT_OF_MEMORY
                                             (before allocating) when variables + op state + arena would
                                             need more bytes: a cap on what an untrusted model may take */
} edge_interpreter_options;

/* OpenCL devices, in platform order (libOpenCL is loaded on the first call; EDGE_OPENCL_LIBRARY
 * names another library). EDGE_UNSUPPORTED with a message when OpenCL cannot be loaded.
 * Thread-safe: the library is loaded once whichever thread calls first. */
typedef struct {
  char platform[128], name[128], vendor[128], version[128], driver[128];
  int32_t is_gpu, compute_units, clock_mhz, fp16;
  uint64_t global_memory, local_memory, max_allocation, max_work_group;
} edge_opencl_device_info;
edge_status edge_opencl_num_devices(int32_t *out);
edge_status edge_opencl_device(int32_t index, edge_opencl_device_info *out);
/* Host -> device -> host copy rate of ``bytes`` bytes (best of ``repeats``), in bytes per second;
 * device as gpu_device in edge_interpreter_options. */
edge_status edge_opencl_copy_rate(int32_t device, size_t bytes, int32_t repeats, double *bytes_per_second);
/* The device's tuning table (`edge tune` writes it; an interpreter reads it when it opens the device;
 * absent or malformed lines leave the defaults): lines "<kernel> <tile>", kernel gemm or conv_gemm,
 * tile 8, 16 or 32 (work-groups of tile x tile/4; default 16), and "winograd 0" to run 3x3
 * convolutions as implicit GEMMs instead of Winograd F(4x4, 3x3). Its folder is created. */
edge_status edge_opencl_tuning_file(int32_t device, char *path, size_t capacity);

typedef struct {
  uint64_t uploads, downloads, upload_bytes, download_bytes, launches;
} edge_gpu_transfer_info;

/* Thread-safe: constant answers (the ISA is picked once, whichever thread asks first);
 * edge_last_error is the calling thread's own message. */
const char *edge_version(void);
int32_t edge_abi_version(void);         /* EDGE_ABI_VERSION as the library was built */
const char *edge_last_error(void);
const char *edge_status_name(edge_status status);
const char *edge_dtype_name(edge_dtype dtype);
size_t edge_dtype_size(edge_dtype dtype);     /* bytes per element; 0 for packed and unknown dtypes */
int32_t edge_dtype_bits(edge_dtype dtype);    /* bits per element (4 or 2 when packed); 0 if unknown */
const char *edge_isa(void);             /* the kernel ISA picked at start ("scalar", ...) */

/* Models. load_file maps the file; load_buffer borrows the caller's bytes (which must outlive the
 * model) unless copy is non-zero. Both verify the whole file before returning.
 * Thread-safe: loads may run concurrently, and a loaded model's queries below (and
 * edge_interpreter_create from it) from any threads at once; edge_model_free only when no other call
 * uses the model and every interpreter made from it is freed. */
edge_status edge_model_load_file(const char *path, edge_model **out);
edge_status edge_model_load_buffer(const void *data, size_t size, int32_t copy, edge_model **out);
void edge_model_free(edge_model *model);
const char *edge_model_description(const edge_model *model);
int32_t edge_model_num_signatures(const edge_model *model);
edge_status edge_model_signature(const edge_model *model, int32_t index, edge_signature_info *out);
int32_t edge_model_num_metadata(const edge_model *model);
edge_status edge_model_metadata(const edge_model *model, int32_t index, const char **name,
                                const char **value);

/* Interpreters. Not thread-safe per interpreter: every call below that takes an interpreter must not
 * overlap another call on the same interpreter (queries included, since allocate and invoke change
 * what they read); distinct interpreters are independent. edge_interpreter_create itself is
 * thread-safe. */
edge_status edge_interpreter_create(const edge_model *model, const edge_interpreter_options *options,
                                    edge_interpreter **out);
void edge_interpreter_free(edge_interpreter *interp);
const char *edge_interpreter_error(const edge_interpreter *interp);
int32_t edge_interpreter_num_tensors(const edge_interpreter *interp);
int32_t edge_interpreter_num_inputs(const edge_interpreter *interp);
int32_t edge_interpreter_input(const edge_interpreter *interp, int32_t i);   /* tensor index */
int32_t edge_interpreter_num_outputs(const edge_interpreter *interp);
int32_t edge_interpreter_output(const edge_interpreter *interp, int32_t i);  /* tensor index */
int32_t edge_interpreter_num_ops(const edge_interpreter *interp);
edge_status edge_interpreter_tensor_info(const edge_interpreter *interp, int32_t tensor,
                                         edge_tensor_info *out);
edge_status edge_interpreter_op_info(const edge_interpreter *interp, int32_t op, edge_op_info *out);

/* Changes an input's shape (within its shape_signature); takes effect at the next allocate. */
edge_status edge_interpreter_resize_input(edge_interpreter *interp, int32_t tensor, int32_t rank,
                                          const int64_t *shape);
/* Shape propagation, kernel preparation and arena planning. Needed before the first invoke and
 * after a resize. */
edge_status edge_interpreter_allocate(edge_interpreter *interp);
edge_status edge_interpreter_memory(const edge_interpreter *interp, edge_memory_info *out);

/* Copies in or out; nbytes must equal the tensor's byte size. */
edge_status edge_interpreter_set_tensor(edge_interpreter *interp, int32_t tensor, const void *data,
                                        size_t nbytes);
edge_status edge_interpreter_get_tensor(const edge_interpreter *interp, int32_t tensor, void *data,
                                        size_t nbytes);
edge_status edge_interpreter_tensor_data(edge_interpreter *interp, int32_t tensor, void **data);

/* Runs the ops the graph outputs depend on, in order: every op of an inference model. A trainable
 * model's backward and optimizer ops run only through its "grad" and "train" signatures. */
edge_status edge_interpreter_invoke(edge_interpreter *interp);
/* Runs the given ops in the given order (used by split execution): the caller has set every tensor
 * they read that none of them writes. */
edge_status edge_interpreter_invoke_ops(edge_interpreter *interp, const int32_t *ops, int32_t num_ops);
edge_status edge_interpreter_invoke_signature(edge_interpreter *interp, int32_t signature);

/* Variables: back to the values stored in the model. */
edge_status edge_interpreter_reset_variables(edge_interpreter *interp);
/* Writes the model with every variable's current value in place of its initial value (a valid
 * .edge any runtime loads: trained weights, optimizer state). Atomic: written to path + ".tmp",
 * synced, then renamed over path. Every variable must have its own buffer in the model. */
edge_status edge_interpreter_save_model(const edge_interpreter *interp, const char *path);

/* Which ops the GPU may take (backend opencl or auto), from the next allocate on: devices[op] = 0
 * keeps op on the CPU, 1 lets the GPU take it when it has a kernel for it. With a list, auto follows it
 * (its own FLOP threshold is not applied). NULL (or num_ops 0) clears it. */
edge_status edge_interpreter_set_op_devices(edge_interpreter *interp, const uint8_t *devices, int32_t num_ops);
/* A tensor's device memory (OpenCL backend, after allocate): the cl_mem holding it (buffer) and the byte
 * offset of its first element; the tensor is uploaded first if only the host holds it. fp16
 * storage holds float32 tensors as halves. EDGE_UNSUPPORTED for a tensor without device memory
 * (a constant, or no GPU in use). */
edge_status edge_interpreter_tensor_gpu_buffer(edge_interpreter *interp, int32_t tensor, void **buffer,
                                               size_t *byte_offset);
/* The caller wrote a tensor's device memory (through the queue the interpreter runs on): the next
 * op reads it there, and reading it on the host downloads it. */
edge_status edge_interpreter_tensor_gpu_written(edge_interpreter *interp, int32_t tensor);
/* Where an op runs after allocate: 0 the CPU, 1 the GPU. */
int32_t edge_interpreter_op_device(const edge_interpreter *interp, int32_t op);
/* Host/GPU transfers and kernel launches since the interpreter was created (all zero on the CPU). */
edge_status edge_interpreter_gpu_transfers(const edge_interpreter *interp, edge_gpu_transfer_info *out);
/* A GPU-placed op's first kernel: its function name and work-group size (0s: the driver picks). */
edge_status edge_interpreter_gpu_kernel(const edge_interpreter *interp, int32_t op, char *name, size_t capacity,
                                        uint64_t local[3]);

/* Profiling switches: like every call on an interpreter, not concurrently with another on it. */
void edge_interpreter_set_profiling(edge_interpreter *interp, int32_t enabled);
void edge_interpreter_reset_profile(edge_interpreter *interp);

#ifdef __cplusplus
}
#endif

#endif

/* One OpenCL device per interpreter: its context, an in-order queue, and the programs built from
 * the embedded kernel sources.
 *
 * Program binaries are cached on disk ($EDGE_OPENCL_CACHE, else $XDG_CACHE_HOME/edgesplit/opencl,
 * else ~/.cache/edgesplit/opencl), one file per (device name, driver version, runtime version,
 * source, options) key. A file holds a magic, the full key's hash, the binary's length and a
 * checksum of the binary; one whose header or checksum does not match, or that the driver refuses,
 * is ignored and rebuilt from source (never trusted). Files are written to a temporary name and
 * renamed, so a reader sees a whole file or none. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gpu.h"

edge_status edge_gpu_find_device(int32_t index, cl_platform_id *platform, cl_device_id *device, char *error);

typedef struct edge_gpu_program {
  char key[192];                         /* family + options */
  cl_program program;
  struct edge_gpu_program *next;
} edge_gpu_program;

#define CACHE_MAGIC "EDGECLB1"

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
  const unsigned char *p = data;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

static uint64_t fnv_string(uint64_t h, const char *s) { return fnv1a(h, s, strlen(s) + 1); }

static edge_status adopt_queue(edge_gpu_device *d, cl_command_queue queue, char *error) {
  const edge_cl_api *cl = d->cl;
  cl_int err = cl->clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof d->context, &d->context, NULL);
  if (err == CL_SUCCESS) err = cl->clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof d->device, &d->device, NULL);
  if (err == CL_SUCCESS) err = cl->clGetDeviceInfo(d->device, CL_DEVICE_PLATFORM, sizeof d->platform, &d->platform, NULL);
  if (err != CL_SUCCESS) {
    d->context = NULL;
    snprintf(error, EDGE_ERROR_CAPACITY, "opencl_queue is not a usable command queue: %s (%d)",
             edge_cl_error_name(err), err);
    return EDGE_INVALID_ARGUMENT;
  }
  cl->clRetainContext(d->context);
  cl->clRetainCommandQueue(queue);
  d->queue = queue;
  return EDGE_OK;
}

static void load_tiles(edge_gpu_device *d);

edge_status edge_gpu_device_open(edge_gpu_device *d, int32_t index, void *queue, bool half, char *error) {
  memset(d, 0, sizeof *d);
  const char *message = NULL;
  d->cl = edge_cl_load(&message);
  if (!d->cl) {
    snprintf(error, EDGE_ERROR_CAPACITY, "%s", message);
    return EDGE_UNSUPPORTED;
  }
  edge_status status = queue ? adopt_queue(d, queue, error) : edge_gpu_find_device(index, &d->platform, &d->device, error);
  if (status != EDGE_OK) return status;
  const edge_cl_api *cl = d->cl;
  cl_device_type type = 0;
  cl->clGetDeviceInfo(d->device, CL_DEVICE_TYPE, sizeof type, &type, NULL);
  d->is_gpu = (type & CL_DEVICE_TYPE_GPU) != 0;
  if (cl->clGetDeviceInfo(d->device, CL_DEVICE_NAME, sizeof d->name - 1, d->name, NULL) != CL_SUCCESS) d->name[0] = 0;
  if (cl->clGetDeviceInfo(d->device, CL_DRIVER_VERSION, sizeof d->driver - 1, d->driver, NULL) != CL_SUCCESS)
    d->driver[0] = 0;
  cl->clGetDeviceInfo(d->device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof d->max_work_group, &d->max_work_group, NULL);
  if (d->max_work_group == 0) d->max_work_group = 1;
  d->half = half;
  load_tiles(d);
  if (queue) return EDGE_OK;
  cl_int err = CL_SUCCESS;
  cl_context_properties properties[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)d->platform, 0};
  d->context = cl->clCreateContext(properties, 1, &d->device, NULL, NULL, &err);
  if (!d->context || err != CL_SUCCESS) {
    snprintf(error, EDGE_ERROR_CAPACITY, "OpenCL device '%s': clCreateContext failed: %s (%d)", d->name,
             edge_cl_error_name(err), err);
    return EDGE_RUNTIME_ERROR;
  }
  d->queue = cl->clCreateCommandQueue(d->context, d->device, 0, &err);
  if (!d->queue || err != CL_SUCCESS) {
    snprintf(error, EDGE_ERROR_CAPACITY, "OpenCL device '%s': clCreateCommandQueue failed: %s (%d)", d->name,
             edge_cl_error_name(err), err);
    cl->clReleaseContext(d->context);
    d->context = NULL;
    return EDGE_RUNTIME_ERROR;
  }
  return EDGE_OK;
}

void edge_gpu_device_close(edge_gpu_device *d) {
  if (!d->cl) return;
  for (edge_gpu_program *p = d->programs, *next; p; p = next) {
    next = p->next;
    d->cl->clReleaseProgram(p->program);
    free(p);
  }
  d->programs = NULL;
  if (d->queue) d->cl->clReleaseCommandQueue(d->queue);
  if (d->context) d->cl->clReleaseContext(d->context);
  d->queue = NULL;
  d->context = NULL;
}

/* ---- the binary cache ---- */

/* The cache directory (created when ``create``), or -1 when there is none. */
static int cache_base(char *base, size_t cap, bool create) {
  const char *dir = getenv("EDGE_OPENCL_CACHE");
  int n;
  if (dir && *dir) {
    n = snprintf(base, cap, "%s", dir);
  } else {
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (xdg && *xdg) n = snprintf(base, cap, "%s/edgesplit/opencl", xdg);
    else if (home && *home) n = snprintf(base, cap, "%s/.cache/edgesplit/opencl", home);
    else return -1;
  }
  if (n < 0 || (size_t)n >= cap) return -1;
  if (!create) return 0;
  /* mkdir -p */
  char partial[512];
  for (size_t i = 1; i <= strlen(base) && i < sizeof partial; ++i) {
    if (base[i] == '/' || base[i] == '\0') {
      memcpy(partial, base, i);
      partial[i] = '\0';
      if (mkdir(partial, 0755) != 0 && errno != EEXIST) return -1;
    }
  }
  return 0;
}

static int cache_path(char *out, size_t cap, uint64_t key) {
  char base[512];
  if (cache_base(base, sizeof base, true) != 0) return -1;
  return snprintf(out, cap, "%s/%016llx.bin", base, (unsigned long long)key) < (int)cap ? 0 : -1;
}

/* ---- the tuning table: GEMM tile sizes per device ---- */

const char *const edge_gpu_tile_kernels[EDGE_GPU_TILE_KERNELS] = {"gemm", "conv_gemm"};

static int tuning_path(const char *name, const char *driver, char *out, size_t cap, bool create) {
  char base[512];
  if (cache_base(base, sizeof base, false) != 0) return -1;
  int n = snprintf(out, cap, "%s/tuning", base);
  if (n < 0 || (size_t)n >= cap) return -1;
  if (create && cache_base(base, sizeof base, true) == 0 && mkdir(out, 0755) != 0 && errno != EEXIST) return -1;
  uint64_t hash = fnv_string(fnv_string(0xcbf29ce484222325ull, name), driver);
  n = snprintf(out, cap, "%s/tuning/local-%016llx.txt", base, (unsigned long long)hash);
  return n >= 0 && (size_t)n < cap ? 0 : -1;
}

/* Lines "<kernel> <tile>", and "winograd 0" or "winograd 1"; a line naming another kernel, a tile other than 8, 16 or 32, or one whose
 * work-group (tile x tile / 4) the device cannot run is ignored: the default stays. */
static void load_tiles(edge_gpu_device *d) {
  for (int k = 0; k < EDGE_GPU_TILE_KERNELS; ++k) d->tiles[k] = EDGE_GPU_DEFAULT_TILE;
  d->winograd = true;
  char path[600], line[128], kernel[32];
  if (tuning_path(d->name, d->driver, path, sizeof path, false) != 0) return;
  FILE *f = fopen(path, "r");
  if (!f) return;
  for (int lines = 0; lines < 64 && fgets(line, sizeof line, f); ++lines) {
    int tile = 0;
    if (sscanf(line, "%31s %d", kernel, &tile) != 2) continue;
    if (strcmp(kernel, "winograd") == 0 && (tile == 0 || tile == 1)) d->winograd = tile == 1;
    if ((tile != 8 && tile != 16 && tile != 32) || (size_t)(tile * tile / 4) > d->max_work_group) continue;
    for (int k = 0; k < EDGE_GPU_TILE_KERNELS; ++k)
      if (strcmp(kernel, edge_gpu_tile_kernels[k]) == 0) d->tiles[k] = tile;
  }
  fclose(f);
}

edge_status edge_opencl_tuning_file(int32_t device, char *path, size_t capacity) {
  if (!path || capacity == 0) return edge_set_last_error(EDGE_INVALID_ARGUMENT, "opencl_tuning_file: no buffer");
  char error[EDGE_ERROR_CAPACITY] = "";
  cl_platform_id platform;
  cl_device_id id;
  edge_status status = edge_gpu_find_device(device, &platform, &id, error);
  if (status != EDGE_OK) return edge_set_last_error(status, "%s", error);
  const char *message = NULL;
  const edge_cl_api *cl = edge_cl_load(&message);
  char name[256] = "", driver[128] = "";
  if (cl->clGetDeviceInfo(id, CL_DEVICE_NAME, sizeof name - 1, name, NULL) != CL_SUCCESS) name[0] = 0;
  if (cl->clGetDeviceInfo(id, CL_DRIVER_VERSION, sizeof driver - 1, driver, NULL) != CL_SUCCESS) driver[0] = 0;
  if (tuning_path(name, driver, path, capacity, true) != 0)
    return edge_set_last_error(EDGE_UNSUPPORTED, "opencl_tuning_file: no cache directory ($EDGE_OPENCL_CACHE, "
                               "$XDG_CACHE_HOME or $HOME), or the path is longer than %zu bytes", capacity);
  return EDGE_OK;
}

static unsigned char *cache_read(const char *path, uint64_t key, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char magic[8];
  uint64_t stored_key = 0, length = 0, checksum = 0;
  unsigned char *data = NULL;
  if (fread(magic, 1, 8, f) == 8 && memcmp(magic, CACHE_MAGIC, 8) == 0 && fread(&stored_key, 8, 1, f) == 1 &&
      stored_key == key && fread(&length, 8, 1, f) == 1 && fread(&checksum, 8, 1, f) == 1 && length > 0 &&
      length < ((uint64_t)1 << 30)) {
    data = malloc((size_t)length);
    if (data && (fread(data, 1, (size_t)length, f) != length || fgetc(f) != EOF ||
                 fnv1a(0xcbf29ce484222325ull, data, (size_t)length) != checksum)) {
      free(data);
      data = NULL;
    }
  }
  fclose(f);
  if (data) *size = (size_t)length;
  return data;
}

static void cache_write(const char *path, uint64_t key, const unsigned char *data, size_t size) {
  char tmp[640];
  snprintf(tmp, sizeof tmp, "%.600s.%ld.tmp", path, (long)getpid());
  FILE *f = fopen(tmp, "wb");
  if (!f) return;
  uint64_t length = size, checksum = fnv1a(0xcbf29ce484222325ull, data, size);
  bool ok = fwrite(CACHE_MAGIC, 1, 8, f) == 8 && fwrite(&key, 8, 1, f) == 1 && fwrite(&length, 8, 1, f) == 1 &&
            fwrite(&checksum, 8, 1, f) == 1 && fwrite(data, 1, size, f) == size;
  ok = (fclose(f) == 0) && ok;
  if (!ok || rename(tmp, path) != 0) unlink(tmp);
}

static const char *find_source(const char *family) {
  for (int i = 0; i < edge_cl_num_sources; ++i)
    if (strcmp(edge_cl_sources[i].name, family) == 0) return edge_cl_sources[i].source;
  return NULL;
}

static edge_status build(edge_gpu_device *d, cl_program program, const char *options, const char *family,
                         char *error) {
  const edge_cl_api *cl = d->cl;
  cl_int err = cl->clBuildProgram(program, 1, &d->device, options, NULL, NULL);
  if (err == CL_SUCCESS) return EDGE_OK;
  char log[1024] = "";
  cl->clGetProgramBuildInfo(program, d->device, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log, NULL);
  log[sizeof log - 1] = '\0';
  snprintf(error, EDGE_ERROR_CAPACITY, "OpenCL kernels '%.24s.cl' (options '%.64s') do not build on '%.64s': %s (%d): %.200s",
           family, options, d->name, edge_cl_error_name(err), err, log);
  return EDGE_UNSUPPORTED;
}

static edge_status program_for(edge_gpu_device *d, const char *family, const char *extra, cl_program *out,
                               char *error) {
  char options[140];
  snprintf(options, sizeof options, "-cl-std=CL1.2 %s %.80s", d->half ? "-DSTORAGE_HALF=1" : "", extra ? extra : "");
  char key[192];
  snprintf(key, sizeof key, "%.40s|%.140s", family, options);
  for (edge_gpu_program *p = d->programs; p; p = p->next)
    if (strcmp(p->key, key) == 0) {
      *out = p->program;
      return EDGE_OK;
    }
  const char *source = find_source(family);
  if (!source) {
    snprintf(error, EDGE_ERROR_CAPACITY, "no OpenCL kernel family '%s' in this build", family);
    return EDGE_UNSUPPORTED;
  }
  const edge_cl_api *cl = d->cl;
  uint64_t hash = 0xcbf29ce484222325ull;
  hash = fnv_string(hash, d->name);
  hash = fnv_string(hash, d->driver);
  hash = fnv_string(hash, edge_version());
  hash = fnv_string(hash, source);
  hash = fnv_string(hash, options);
  char path[600];
  bool cacheable = cache_path(path, sizeof path, hash) == 0;
  cl_program program = NULL;
  cl_int err = CL_SUCCESS;
  size_t size = 0;
  unsigned char *binary = cacheable ? cache_read(path, hash, &size) : NULL;
  if (binary) {
    cl_int binary_status = CL_SUCCESS;
    const unsigned char *binaries[1] = {binary};
    program = cl->clCreateProgramWithBinary(d->context, 1, &d->device, &size, binaries, &binary_status, &err);
    free(binary);
    char ignored[EDGE_ERROR_CAPACITY];
    if (program && (err != CL_SUCCESS || binary_status != CL_SUCCESS || build(d, program, options, family, ignored) != EDGE_OK)) {
      cl->clReleaseProgram(program);
      program = NULL;
    }
  }
  if (!program) {
    program = cl->clCreateProgramWithSource(d->context, 1, &source, NULL, &err);
    if (!program || err != CL_SUCCESS) {
      snprintf(error, EDGE_ERROR_CAPACITY, "clCreateProgramWithSource('%s.cl') failed: %s (%d)", family,
               edge_cl_error_name(err), err);
      return EDGE_RUNTIME_ERROR;
    }
    edge_status status = build(d, program, options, family, error);
    if (status != EDGE_OK) {
      cl->clReleaseProgram(program);
      return status;
    }
    size_t binary_size = 0;
    if (cacheable && cl->clGetProgramInfo(program, CL_PROGRAM_BINARY_SIZES, sizeof binary_size, &binary_size, NULL) ==
                         CL_SUCCESS && binary_size > 0) {
      unsigned char *bytes = malloc(binary_size);
      unsigned char *pointers[1] = {bytes};
      if (bytes && cl->clGetProgramInfo(program, CL_PROGRAM_BINARIES, sizeof pointers, pointers, NULL) == CL_SUCCESS)
        cache_write(path, hash, bytes, binary_size);
      free(bytes);
    }
  }
  edge_gpu_program *entry = calloc(1, sizeof *entry);
  if (!entry) {
    cl->clReleaseProgram(program);
    snprintf(error, EDGE_ERROR_CAPACITY, "out of memory");
    return EDGE_OUT_OF_MEMORY;
  }
  snprintf(entry->key, sizeof entry->key, "%s", key);
  entry->program = program;
  entry->next = d->programs;
  d->programs = entry;
  *out = program;
  return EDGE_OK;
}

edge_status edge_gpu_kernel(edge_gpu_device *d, const char *family, const char *options, const char *name,
                            cl_kernel *out, char *error) {
  cl_program program = NULL;
  edge_status status = program_for(d, family, options, &program, error);
  if (status != EDGE_OK) return status;
  cl_int err = CL_SUCCESS;
  *out = d->cl->clCreateKernel(program, name, &err);
  if (!*out || err != CL_SUCCESS) {
    snprintf(error, EDGE_ERROR_CAPACITY, "OpenCL kernel '%s' of '%s.cl': clCreateKernel failed: %s (%d)", name, family,
             edge_cl_error_name(err), err);
    return EDGE_RUNTIME_ERROR;
  }
  return EDGE_OK;
}

/* ---- the host <-> device copy rate (edge.h) ---- */

#include <time.h>

static double seconds_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

edge_status edge_opencl_copy_rate(int32_t device, size_t bytes, int32_t repeats, double *bytes_per_second) {
  if (!bytes_per_second || bytes == 0 || repeats < 1)
    return edge_set_last_error(EDGE_INVALID_ARGUMENT, "opencl_copy_rate: needs bytes > 0, repeats >= 1 and an output");
  char error[EDGE_ERROR_CAPACITY] = "";
  edge_gpu_device d;
  edge_status status = edge_gpu_device_open(&d, device, NULL, false, error);
  if (status != EDGE_OK) return edge_set_last_error(status, "%s", error);
  void *host = malloc(bytes);
  cl_int err = CL_SUCCESS;
  cl_mem buffer = host ? d.cl->clCreateBuffer(d.context, CL_MEM_READ_WRITE, bytes, NULL, &err) : NULL;
  double best = 0.0;
  if (!host || !buffer || err != CL_SUCCESS) {
    status = edge_set_last_error(EDGE_OUT_OF_MEMORY, "opencl_copy_rate: %zu bytes: %s", bytes,
                                 host ? edge_cl_error_name(err) : "out of host memory");
  } else {
    memset(host, 1, bytes);
    for (int32_t r = 0; r < repeats && status == EDGE_OK; ++r) {
      double start = seconds_now();
      err = d.cl->clEnqueueWriteBuffer(d.queue, buffer, CL_TRUE, 0, bytes, host, 0, NULL, NULL);
      if (err == CL_SUCCESS) err = d.cl->clEnqueueReadBuffer(d.queue, buffer, CL_TRUE, 0, bytes, host, 0, NULL, NULL);
      double elapsed = seconds_now() - start;
      if (err != CL_SUCCESS)
        status = edge_set_last_error(EDGE_RUNTIME_ERROR, "opencl_copy_rate: %s (%d)", edge_cl_error_name(err), err);
      else if (elapsed > 0 && 2.0 * (double)bytes / elapsed > best)
        best = 2.0 * (double)bytes / elapsed;
    }
  }
  if (buffer) d.cl->clReleaseMemObject(buffer);
  free(host);
  edge_gpu_device_close(&d);
  *bytes_per_second = best;
  return status;
}

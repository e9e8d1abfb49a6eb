/* Loading OpenCL at run time: libOpenCL.so.1, then libOpenCL.so (or only $EDGE_OPENCL_LIBRARY when
 * set), opened once with dlopen, every entry point of cl_api.h resolved into one table. A machine
 * without OpenCL never gets here unless a caller asks for the GPU, and then gets a message. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu.h"

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static edge_cl_api api;
static const edge_cl_api *loaded;
static char load_message[512];

static void load(void) {
  const char *override = getenv("EDGE_OPENCL_LIBRARY");  /* when set, the only library tried */
  bool overridden = override && *override;
  const char *candidates[] = {overridden ? override : "libOpenCL.so.1", overridden ? NULL : "libOpenCL.so"};
  void *handle = NULL;
  char tried[384] = "";
  for (size_t i = 0; i < sizeof candidates / sizeof *candidates && !handle; ++i) {
    if (!candidates[i]) continue;
    handle = dlopen(candidates[i], RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      size_t used = strlen(tried);
      snprintf(tried + used, sizeof tried - used, "%s%s", used ? ", " : "", candidates[i]);
    }
  }
  if (!handle) {
    snprintf(load_message, sizeof load_message,
             "OpenCL is not available: none of %s could be opened (install an OpenCL driver, e.g. Debian's "
             "ocl-icd-libopencl1 with pocl-opencl-icd, or set EDGE_OPENCL_LIBRARY)", tried);
    return;
  }
#define EDGE_CL_RESOLVE(ret, name, params)                                                                     \
  *(void **)&api.name = dlsym(handle, #name);                                                                 \
  if (!api.name) {                                                                                             \
    snprintf(load_message, sizeof load_message, "OpenCL library lacks the entry point %s", #name);             \
    dlclose(handle);                                                                                           \
    return;                                                                                                    \
  }
  EDGE_CL_FUNCTIONS(EDGE_CL_RESOLVE)
#undef EDGE_CL_RESOLVE
  loaded = &api;  /* the handle stays open for the process's life */
}

const edge_cl_api *edge_cl_load(const char **message) {
  pthread_once(&load_once, load);
  if (!loaded && message) *message = load_message;
  return loaded;
}

const char *edge_cl_error_name(cl_int code) {
  switch (code) {
    case 0: return "CL_SUCCESS";
    case -1: return "CL_DEVICE_NOT_FOUND";
    case -2: return "CL_DEVICE_NOT_AVAILABLE";
    case -3: return "CL_COMPILER_NOT_AVAILABLE";
    case -4: return "CL_MEM_OBJECT_ALLOCATION_FAILURE";
    case -5: return "CL_OUT_OF_RESOURCES";
    case -6: return "CL_OUT_OF_HOST_MEMORY";
    case -11: return "CL_BUILD_PROGRAM_FAILURE";
    case -30: return "CL_INVALID_VALUE";
    case -33: return "CL_INVALID_DEVICE";
    case -34: return "CL_INVALID_CONTEXT";
    case -36: return "CL_INVALID_COMMAND_QUEUE";
    case -38: return "CL_INVALID_MEM_OBJECT";
    case -42: return "CL_INVALID_BINARY";
    case -44: return "CL_INVALID_PROGRAM";
    case -45: return "CL_INVALID_PROGRAM_EXECUTABLE";
    case -46: return "CL_INVALID_KERNEL_NAME";
    case -48: return "CL_INVALID_KERNEL";
    case -49: return "CL_INVALID_ARG_INDEX";
    case -50: return "CL_INVALID_ARG_VALUE";
    case -51: return "CL_INVALID_ARG_SIZE";
    case -52: return "CL_INVALID_KERNEL_ARGS";
    case -54: return "CL_INVALID_WORK_GROUP_SIZE";
    case -55: return "CL_INVALID_WORK_ITEM_SIZE";
    case -61: return "CL_INVALID_BUFFER_SIZE";
    case -63: return "CL_INVALID_GLOBAL_WORK_SIZE";
    default: return "an OpenCL error";
  }
}

/* ---- the device list (edge.h) ---- */

#define MAX_PLATFORMS 16
#define MAX_DEVICES 64

static edge_status list_devices(const edge_cl_api *cl, cl_platform_id *platforms_of, cl_device_id *devices,
                                int32_t *count) {
  cl_platform_id platforms[MAX_PLATFORMS];
  cl_uint num_platforms = 0;
  *count = 0;
  cl_int err = cl->clGetPlatformIDs(MAX_PLATFORMS, platforms, &num_platforms);
  if (err == -1001 /* CL_PLATFORM_NOT_FOUND_KHR: the ICD loader found no driver */ || num_platforms == 0) return EDGE_OK;
  if (err != CL_SUCCESS)
    return edge_set_last_error(EDGE_RUNTIME_ERROR, "clGetPlatformIDs failed: %s (%d)", edge_cl_error_name(err), err);
  if (num_platforms > MAX_PLATFORMS) num_platforms = MAX_PLATFORMS;
  for (cl_uint p = 0; p < num_platforms; ++p) {
    cl_device_id found[MAX_DEVICES];
    cl_uint n = 0;
    if (cl->clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, MAX_DEVICES, found, &n) != CL_SUCCESS) continue;
    for (cl_uint i = 0; i < n && i < MAX_DEVICES && *count < MAX_DEVICES; ++i) {
      platforms_of[*count] = platforms[p];
      devices[(*count)++] = found[i];
    }
  }
  return EDGE_OK;
}

edge_status edge_gpu_find_device(int32_t index, cl_platform_id *platform, cl_device_id *device, char *error) {
  const char *message = NULL;
  const edge_cl_api *cl = edge_cl_load(&message);
  if (!cl) {
    snprintf(error, EDGE_ERROR_CAPACITY, "%s", message);
    return EDGE_UNSUPPORTED;
  }
  cl_platform_id platforms[MAX_DEVICES];
  cl_device_id devices[MAX_DEVICES];
  int32_t count = 0;
  if (list_devices(cl, platforms, devices, &count) != EDGE_OK) {
    snprintf(error, EDGE_ERROR_CAPACITY, "%s", edge_last_error());
    return EDGE_RUNTIME_ERROR;
  }
  if (count == 0) {
    snprintf(error, EDGE_ERROR_CAPACITY, "OpenCL is installed but reports no platform with a device");
    return EDGE_UNSUPPORTED;
  }
  int32_t pick = -1;
  if (index == 0) {
    for (int32_t i = 0; i < count && pick < 0; ++i) {
      cl_device_type type = 0;
      if (cl->clGetDeviceInfo(devices[i], CL_DEVICE_TYPE, sizeof type, &type, NULL) == CL_SUCCESS &&
          (type & CL_DEVICE_TYPE_GPU))
        pick = i;
    }
    if (pick < 0) pick = 0;
  } else if (index >= 1 && index <= count) {
    pick = index - 1;
  } else {
    snprintf(error, EDGE_ERROR_CAPACITY, "gpu_device %d: there are %d OpenCL devices (1..%d, or 0 for the first GPU)",
             index, count, count);
    return EDGE_INVALID_ARGUMENT;
  }
  *platform = platforms[pick];
  *device = devices[pick];
  return EDGE_OK;
}

edge_status edge_opencl_num_devices(int32_t *out) {
  if (!out) return edge_set_last_error(EDGE_INVALID_ARGUMENT, "opencl_num_devices: out is NULL");
  const char *message = NULL;
  const edge_cl_api *cl = edge_cl_load(&message);
  if (!cl) return edge_set_last_error(EDGE_UNSUPPORTED, "%s", message);
  cl_platform_id platforms[MAX_DEVICES];
  cl_device_id devices[MAX_DEVICES];
  return list_devices(cl, platforms, devices, out);
}

static void info_string(const edge_cl_api *cl, cl_device_id d, cl_device_info what, char *out, size_t cap) {
  out[0] = '\0';
  if (cl->clGetDeviceInfo(d, what, cap - 1, out, NULL) != CL_SUCCESS) out[0] = '\0';
  out[cap - 1] = '\0';
}

edge_status edge_opencl_device(int32_t index, edge_opencl_device_info *out) {
  if (!out) return edge_set_last_error(EDGE_INVALID_ARGUMENT, "opencl_device: out is NULL");
  memset(out, 0, sizeof *out);
  const char *message = NULL;
  const edge_cl_api *cl = edge_cl_load(&message);
  if (!cl) return edge_set_last_error(EDGE_UNSUPPORTED, "%s", message);
  cl_platform_id platforms[MAX_DEVICES];
  cl_device_id devices[MAX_DEVICES];
  int32_t count = 0;
  edge_status status = list_devices(cl, platforms, devices, &count);
  if (status != EDGE_OK) return status;
  if (index < 0 || index >= count)
    return edge_set_last_error(EDGE_INVALID_ARGUMENT, "opencl_device: index %d is out of range (%d devices)", index,
                               count);
  cl_device_id d = devices[index];
  if (cl->clGetPlatformInfo(platforms[index], CL_PLATFORM_NAME, sizeof out->platform - 1, out->platform, NULL) !=
      CL_SUCCESS)
    out->platform[0] = '\0';
  info_string(cl, d, CL_DEVICE_NAME, out->name, sizeof out->name);
  info_string(cl, d, CL_DEVICE_VENDOR, out->vendor, sizeof out->vendor);
  info_string(cl, d, CL_DEVICE_VERSION, out->version, sizeof out->version);
  info_string(cl, d, CL_DRIVER_VERSION, out->driver, sizeof out->driver);
  cl_device_type type = 0;
  cl_uint units = 0, clock = 0;
  cl_ulong global = 0, local = 0, alloc = 0;
  size_t group = 0;
  cl->clGetDeviceInfo(d, CL_DEVICE_TYPE, sizeof type, &type, NULL);
  cl->clGetDeviceInfo(d, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof units, &units, NULL);
  cl->clGetDeviceInfo(d, CL_DEVICE_MAX_CLOCK_FREQUENCY, sizeof clock, &clock, NULL);
  cl->clGetDeviceInfo(d, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof global, &global, NULL);
  cl->clGetDeviceInfo(d, CL_DEVICE_LOCAL_MEM_SIZE, sizeof local, &local, NULL);
  cl->clGetDeviceInfo(d, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof alloc, &alloc, NULL);
  cl->clGetDeviceInfo(d, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof group, &group, NULL);
  out->is_gpu = (type & CL_DEVICE_TYPE_GPU) != 0;
  out->compute_units = (int32_t)units;
  out->clock_mhz = (int32_t)clock;
  out->global_memory = global;
  out->local_memory = local;
  out->max_allocation = alloc;
  out->max_work_group = group;
  char extensions[4096];
  info_string(cl, d, CL_DEVICE_EXTENSIONS, extensions, sizeof extensions);
  out->fp16 = strstr(extensions, "cl_khr_fp16") != NULL;
  return EDGE_OK;
}

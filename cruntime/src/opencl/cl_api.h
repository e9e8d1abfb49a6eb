/* The slice of the OpenCL 1.2 C API the runtime uses, declared here so that the runtime builds
 * without OpenCL headers and links without libOpenCL: the entry points are resolved at the first
 * GPU request with dlopen/dlsym (loader.c) into one table. Values are the specification's. */
#ifndef EDGE_OPENCL_CL_API_H
#define EDGE_OPENCL_CL_API_H

#include <stddef.h>
#include <stdint.h>

typedef int32_t cl_int;
typedef uint32_t cl_uint;
typedef uint64_t cl_ulong;
typedef uint64_t cl_bitfield;
typedef cl_bitfield cl_device_type;
typedef cl_bitfield cl_mem_flags;
typedef cl_bitfield cl_command_queue_properties;
typedef cl_uint cl_bool;
typedef cl_uint cl_platform_info;
typedef cl_uint cl_device_info;
typedef cl_uint cl_program_info;
typedef cl_uint cl_program_build_info;
typedef cl_uint cl_kernel_work_group_info;
typedef cl_uint cl_profiling_info;
typedef cl_uint cl_command_queue_info;
typedef intptr_t cl_context_properties;

typedef struct _cl_platform_id *cl_platform_id;
typedef struct _cl_device_id *cl_device_id;
typedef struct _cl_context *cl_context;
typedef struct _cl_command_queue *cl_command_queue;
typedef struct _cl_mem *cl_mem;
typedef struct _cl_program *cl_program;
typedef struct _cl_kernel *cl_kernel;
typedef struct _cl_event *cl_event;

#define CL_SUCCESS 0
#define CL_DEVICE_NOT_FOUND (-1)
#define CL_BUILD_PROGRAM_FAILURE (-11)
#define CL_FALSE 0u
#define CL_TRUE 1u

#define CL_PLATFORM_VERSION 0x0901
#define CL_PLATFORM_NAME 0x0902
#define CL_PLATFORM_VENDOR 0x0903

#define CL_DEVICE_TYPE_CPU (1u << 1)
#define CL_DEVICE_TYPE_GPU (1u << 2)
#define CL_DEVICE_TYPE_ACCELERATOR (1u << 3)
#define CL_DEVICE_TYPE_ALL 0xFFFFFFFFu

#define CL_DEVICE_TYPE 0x1000
#define CL_DEVICE_MAX_COMPUTE_UNITS 0x1002
#define CL_DEVICE_MAX_WORK_GROUP_SIZE 0x1004
#define CL_DEVICE_MAX_CLOCK_FREQUENCY 0x100C
#define CL_DEVICE_MAX_MEM_ALLOC_SIZE 0x1010
#define CL_DEVICE_GLOBAL_MEM_SIZE 0x101F
#define CL_DEVICE_LOCAL_MEM_SIZE 0x1023
#define CL_DEVICE_NAME 0x102B
#define CL_DEVICE_VENDOR 0x102C
#define CL_DRIVER_VERSION 0x102D
#define CL_DEVICE_VERSION 0x102F
#define CL_DEVICE_EXTENSIONS 0x1030
#define CL_DEVICE_PLATFORM 0x1031

#define CL_QUEUE_PROFILING_ENABLE (1u << 1)
#define CL_CONTEXT_PLATFORM 0x1084
#define CL_QUEUE_CONTEXT 0x1090
#define CL_QUEUE_DEVICE 0x1091

#define CL_MEM_READ_WRITE (1u << 0)
#define CL_MEM_READ_ONLY (1u << 2)
#define CL_MEM_COPY_HOST_PTR (1u << 5)

#define CL_PROGRAM_BINARY_SIZES 0x1165
#define CL_PROGRAM_BINARIES 0x1166
#define CL_PROGRAM_BUILD_LOG 0x1183
#define CL_KERNEL_WORK_GROUP_SIZE 0x11B0
#define CL_PROFILING_COMMAND_START 0x1282
#define CL_PROFILING_COMMAND_END 0x1283

/* X(return type, name, parameter list): every entry point the runtime calls. */
#define EDGE_CL_FUNCTIONS(X)                                                                                      \
  X(cl_int, clGetPlatformIDs, (cl_uint, cl_platform_id *, cl_uint *))                                             \
  X(cl_int, clGetPlatformInfo, (cl_platform_id, cl_platform_info, size_t, void *, size_t *))                      \
  X(cl_int, clGetDeviceIDs, (cl_platform_id, cl_device_type, cl_uint, cl_device_id *, cl_uint *))                 \
  X(cl_int, clGetDeviceInfo, (cl_device_id, cl_device_info, size_t, void *, size_t *))                            \
  X(cl_context, clCreateContext,                                                                                  \
    (const cl_context_properties *, cl_uint, const cl_device_id *,                                                \
     void (*)(const char *, const void *, size_t, void *), void *, cl_int *))                                     \
  X(cl_int, clReleaseContext, (cl_context))                                                                       \
  X(cl_int, clRetainContext, (cl_context))                                                                        \
  X(cl_int, clRetainCommandQueue, (cl_command_queue))                                                             \
  X(cl_int, clGetCommandQueueInfo, (cl_command_queue, cl_command_queue_info, size_t, void *, size_t *))           \
  X(cl_command_queue, clCreateCommandQueue, (cl_context, cl_device_id, cl_command_queue_properties, cl_int *))    \
  X(cl_int, clReleaseCommandQueue, (cl_command_queue))                                                            \
  X(cl_mem, clCreateBuffer, (cl_context, cl_mem_flags, size_t, void *, cl_int *))                                 \
  X(cl_int, clReleaseMemObject, (cl_mem))                                                                         \
  X(cl_program, clCreateProgramWithSource, (cl_context, cl_uint, const char **, const size_t *, cl_int *))        \
  X(cl_program, clCreateProgramWithBinary,                                                                        \
    (cl_context, cl_uint, const cl_device_id *, const size_t *, const unsigned char **, cl_int *, cl_int *))      \
  X(cl_int, clBuildProgram,                                                                                       \
    (cl_program, cl_uint, const cl_device_id *, const char *, void (*)(cl_program, void *), void *))              \
  X(cl_int, clGetProgramInfo, (cl_program, cl_program_info, size_t, void *, size_t *))                            \
  X(cl_int, clGetProgramBuildInfo, (cl_program, cl_device_id, cl_program_build_info, size_t, void *, size_t *))   \
  X(cl_int, clReleaseProgram, (cl_program))                                                                       \
  X(cl_kernel, clCreateKernel, (cl_program, const char *, cl_int *))                                              \
  X(cl_int, clReleaseKernel, (cl_kernel))                                                                         \
  X(cl_int, clSetKernelArg, (cl_kernel, cl_uint, size_t, const void *))                                           \
  X(cl_int, clGetKernelWorkGroupInfo, (cl_kernel, cl_device_id, cl_kernel_work_group_info, size_t, void *, size_t *)) \
  X(cl_int, clEnqueueNDRangeKernel,                                                                               \
    (cl_command_queue, cl_kernel, cl_uint, const size_t *, const size_t *, const size_t *, cl_uint,               \
     const cl_event *, cl_event *))                                                                               \
  X(cl_int, clEnqueueWriteBuffer,                                                                                 \
    (cl_command_queue, cl_mem, cl_bool, size_t, size_t, const void *, cl_uint, const cl_event *, cl_event *))     \
  X(cl_int, clEnqueueReadBuffer,                                                                                  \
    (cl_command_queue, cl_mem, cl_bool, size_t, size_t, void *, cl_uint, const cl_event *, cl_event *))           \
  X(cl_int, clEnqueueCopyBuffer,                                                                                  \
    (cl_command_queue, cl_mem, cl_mem, size_t, size_t, size_t, cl_uint, const cl_event *, cl_event *))            \
  X(cl_int, clFinish, (cl_command_queue))                                                                         \
  X(cl_int, clFlush, (cl_command_queue))                                                                          \
  X(cl_int, clWaitForEvents, (cl_uint, const cl_event *))                                                         \
  X(cl_int, clGetEventProfilingInfo, (cl_event, cl_profiling_info, size_t, void *, size_t *))                     \
  X(cl_int, clReleaseEvent, (cl_event))

typedef struct {
#define EDGE_CL_MEMBER(ret, name, params) ret(*name) params;
  EDGE_CL_FUNCTIONS(EDGE_CL_MEMBER)
#undef EDGE_CL_MEMBER
} edge_cl_api;

#endif

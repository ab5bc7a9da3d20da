/* OpenCL and CLBlast opened at run time (dlopen), as the CUDA driver is, so that the library installs and
 * runs on a machine without an OpenCL loader or CLBlast: the OpenCL backend then reports
 * FA_ERROR_BACKEND_UNAVAILABLE, and FA_ALGO_STANDARD on OpenCL FA_ERROR_UNSUPPORTED, with dlopen's reason.
 *
 * The backend's code calls clFoo() and CLBlastFoo() as usual: in a dlopen build (-Dopencl_loading=dlopen, the
 * default) the names below are macros for pointers that fa_cl_load() and fa_clblast_load() fill with dlsym.
 * A call to an OpenCL function missing from this list fails the library's link (libOpenCL is not linked):
 * add it to FA_CL_FUNCTIONS and to the #define list. With -Dopencl_loading=link the library links libOpenCL
 * and libclblast, the names stay the real functions, and the load calls only return FA_SUCCESS. */
#ifndef FA_CL_LOADER_H
#define FA_CL_LOADER_H

#include <stddef.h>

#include "backend.h"
#include "config.h"

#if FA_HAVE_CLBLAST
#include <clblast_c.h>
#endif

/* Open the OpenCL ICD loader (libOpenCL.so.1, or the file FLASHATTN_OPENCL_LIB names) once per process.
 * On failure msg (size msg_len) says which library and why. Thread-safe. */
FA_HIDDEN fa_status fa_cl_load(char *msg, size_t msg_len);

/* Open CLBlast (libclblast.so.1, or FLASHATTN_CLBLAST_LIB) once per process; after fa_cl_load(). The
 * failure is FA_ERROR_UNSUPPORTED with a sentence starting with `call` in ctx's last error. */
FA_HIDDEN fa_status fa_clblast_load(fa_context *ctx, const char *call);

#if FA_OPENCL_DLOPEN

#define FA_CL_FUNCTIONS(X)                                                                                     \
  X(clGetPlatformIDs) X(clGetPlatformInfo) X(clGetDeviceIDs) X(clGetDeviceInfo) X(clCreateContext)            \
  X(clRetainContext) X(clReleaseContext) X(clCreateCommandQueue) X(clRetainCommandQueue)                       \
  X(clReleaseCommandQueue) X(clGetCommandQueueInfo) X(clCreateBuffer) X(clCreateSubBuffer)                     \
  X(clRetainMemObject) X(clReleaseMemObject) X(clGetMemObjectInfo) X(clCreateProgramWithSource)                \
  X(clCreateProgramWithBinary) X(clBuildProgram) X(clGetProgramInfo) X(clGetProgramBuildInfo)                  \
  X(clReleaseProgram) X(clCreateKernel) X(clSetKernelArg) X(clReleaseKernel) X(clGetKernelWorkGroupInfo)       \
  X(clEnqueueNDRangeKernel) X(clEnqueueReadBuffer) X(clEnqueueWriteBuffer) X(clEnqueueBarrierWithWaitList)     \
  X(clFinish) X(clWaitForEvents) X(clReleaseEvent) X(clGetEventProfilingInfo)

#define FA_CLBLAST_FUNCTIONS(X) X(CLBlastSgemmStridedBatched) X(CLBlastSGemmTempBufferSize)

/* One pointer per function, typed from the header's own declaration. */
#define FA_CL_FIELD(name) __typeof__(&name) name;
typedef struct fa_cl_api {
  FA_CL_FUNCTIONS(FA_CL_FIELD)
#if FA_HAVE_CLBLAST
  FA_CLBLAST_FUNCTIONS(FA_CL_FIELD)
#endif
} fa_cl_api;
#undef FA_CL_FIELD

extern FA_HIDDEN fa_cl_api fa_cl_fn;

#define clGetPlatformIDs fa_cl_fn.clGetPlatformIDs
#define clGetPlatformInfo fa_cl_fn.clGetPlatformInfo
#define clGetDeviceIDs fa_cl_fn.clGetDeviceIDs
#define clGetDeviceInfo fa_cl_fn.clGetDeviceInfo
#define clCreateContext fa_cl_fn.clCreateContext
#define clRetainContext fa_cl_fn.clRetainContext
#define clReleaseContext fa_cl_fn.clReleaseContext
#define clCreateCommandQueue fa_cl_fn.clCreateCommandQueue
#define clRetainCommandQueue fa_cl_fn.clRetainCommandQueue
#define clReleaseCommandQueue fa_cl_fn.clReleaseCommandQueue
#define clGetCommandQueueInfo fa_cl_fn.clGetCommandQueueInfo
#define clCreateBuffer fa_cl_fn.clCreateBuffer
#define clCreateSubBuffer fa_cl_fn.clCreateSubBuffer
#define clRetainMemObject fa_cl_fn.clRetainMemObject
#define clReleaseMemObject fa_cl_fn.clReleaseMemObject
#define clGetMemObjectInfo fa_cl_fn.clGetMemObjectInfo
#define clCreateProgramWithSource fa_cl_fn.clCreateProgramWithSource
#define clCreateProgramWithBinary fa_cl_fn.clCreateProgramWithBinary
#define clBuildProgram fa_cl_fn.clBuildProgram
#define clGetProgramInfo fa_cl_fn.clGetProgramInfo
#define clGetProgramBuildInfo fa_cl_fn.clGetProgramBuildInfo
#define clReleaseProgram fa_cl_fn.clReleaseProgram
#define clCreateKernel fa_cl_fn.clCreateKernel
#define clSetKernelArg fa_cl_fn.clSetKernelArg
#define clReleaseKernel fa_cl_fn.clReleaseKernel
#define clGetKernelWorkGroupInfo fa_cl_fn.clGetKernelWorkGroupInfo
#define clEnqueueNDRangeKernel fa_cl_fn.clEnqueueNDRangeKernel
#define clEnqueueReadBuffer fa_cl_fn.clEnqueueReadBuffer
#define clEnqueueWriteBuffer fa_cl_fn.clEnqueueWriteBuffer
#define clEnqueueBarrierWithWaitList fa_cl_fn.clEnqueueBarrierWithWaitList
#define clFinish fa_cl_fn.clFinish
#define clWaitForEvents fa_cl_fn.clWaitForEvents
#define clReleaseEvent fa_cl_fn.clReleaseEvent
#define clGetEventProfilingInfo fa_cl_fn.clGetEventProfilingInfo
#define CLBlastSgemmStridedBatched fa_cl_fn.CLBlastSgemmStridedBatched
#define CLBlastSGemmTempBufferSize fa_cl_fn.CLBlastSGemmTempBufferSize

#endif /* FA_OPENCL_DLOPEN */

#endif

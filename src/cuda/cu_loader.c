/* The CUDA driver and NVRTC, opened with dlopen once per process, so that the library loads and reports
 * FA_ERROR_BACKEND_UNAVAILABLE on machines without them instead of failing to load. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cu_internal.h"

/* ---- driver ---- */

static fa_cu_driver driver;
static fa_status driver_status;
static char driver_msg[512];
static pthread_once_t driver_once = PTHREAD_ONCE_INIT;

/* dlsym into a function-pointer field; the cast goes through void * as POSIX allows. */
#define RESOLVE(lib, table, field, symbol, msg_buf, lib_name)                                              \
  do {                                                                                                     \
    void *sym_ = dlsym(lib, symbol);                                                                       \
    if (!sym_) {                                                                                           \
      snprintf(msg_buf, sizeof msg_buf, "%s: no symbol %s", lib_name, symbol);                            \
      return FA_ERROR_BACKEND_UNAVAILABLE;                                                                 \
    }                                                                                                      \
    memcpy(&(table).field, &sym_, sizeof sym_);                                                            \
  } while (0)

static fa_status open_driver(void) {
  void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char *err = dlerror();
    /* dlerror's sentence starts with the file's name already */
    snprintf(driver_msg, sizeof driver_msg, "%s", err ? err : "libcuda.so.1: cannot be opened");
    return FA_ERROR_BACKEND_UNAVAILABLE;
  }
  const char *n = "libcuda.so.1";
  /* The _v2 names are the ones cuda.h's macros select: the unversioned symbols keep 32-bit-era ABIs. */
  RESOLVE(lib, driver, Init, "cuInit", driver_msg, n);
  RESOLVE(lib, driver, DriverGetVersion, "cuDriverGetVersion", driver_msg, n);
  RESOLVE(lib, driver, GetErrorName, "cuGetErrorName", driver_msg, n);
  RESOLVE(lib, driver, GetErrorString, "cuGetErrorString", driver_msg, n);
  RESOLVE(lib, driver, DeviceGetCount, "cuDeviceGetCount", driver_msg, n);
  RESOLVE(lib, driver, DeviceGet, "cuDeviceGet", driver_msg, n);
  RESOLVE(lib, driver, DeviceGetName, "cuDeviceGetName", driver_msg, n);
  RESOLVE(lib, driver, DeviceGetAttribute, "cuDeviceGetAttribute", driver_msg, n);
  RESOLVE(lib, driver, DeviceTotalMem, "cuDeviceTotalMem_v2", driver_msg, n);
  RESOLVE(lib, driver, DevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", driver_msg, n);
  RESOLVE(lib, driver, DevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", driver_msg, n);
  RESOLVE(lib, driver, CtxPushCurrent, "cuCtxPushCurrent_v2", driver_msg, n);
  RESOLVE(lib, driver, CtxPopCurrent, "cuCtxPopCurrent_v2", driver_msg, n);
  RESOLVE(lib, driver, CtxGetDevice, "cuCtxGetDevice", driver_msg, n);
  RESOLVE(lib, driver, StreamCreate, "cuStreamCreate", driver_msg, n);
  RESOLVE(lib, driver, StreamDestroy, "cuStreamDestroy_v2", driver_msg, n);
  RESOLVE(lib, driver, StreamSynchronize, "cuStreamSynchronize", driver_msg, n);
  RESOLVE(lib, driver, StreamGetCtx, "cuStreamGetCtx", driver_msg, n);
  RESOLVE(lib, driver, MemAlloc, "cuMemAlloc_v2", driver_msg, n);
  RESOLVE(lib, driver, MemFree, "cuMemFree_v2", driver_msg, n);
  RESOLVE(lib, driver, MemGetAddressRange, "cuMemGetAddressRange_v2", driver_msg, n);
  RESOLVE(lib, driver, PointerGetAttribute, "cuPointerGetAttribute", driver_msg, n);
  RESOLVE(lib, driver, MemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2", driver_msg, n);
  RESOLVE(lib, driver, MemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2", driver_msg, n);
  RESOLVE(lib, driver, MemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2", driver_msg, n);
  RESOLVE(lib, driver, MemsetD8Async, "cuMemsetD8Async", driver_msg, n);
  RESOLVE(lib, driver, MemsetD32Async, "cuMemsetD32Async", driver_msg, n);
  RESOLVE(lib, driver, ModuleLoadData, "cuModuleLoadData", driver_msg, n);
  RESOLVE(lib, driver, ModuleUnload, "cuModuleUnload", driver_msg, n);
  RESOLVE(lib, driver, ModuleGetFunction, "cuModuleGetFunction", driver_msg, n);
  RESOLVE(lib, driver, FuncGetAttribute, "cuFuncGetAttribute", driver_msg, n);
  RESOLVE(lib, driver, FuncSetAttribute, "cuFuncSetAttribute", driver_msg, n);
  RESOLVE(lib, driver, LaunchKernel, "cuLaunchKernel", driver_msg, n);
  RESOLVE(lib, driver, EventCreate, "cuEventCreate", driver_msg, n);
  RESOLVE(lib, driver, EventRecord, "cuEventRecord", driver_msg, n);
  RESOLVE(lib, driver, EventSynchronize, "cuEventSynchronize", driver_msg, n);
  RESOLVE(lib, driver, EventElapsedTime, "cuEventElapsedTime", driver_msg, n);
  RESOLVE(lib, driver, EventDestroy, "cuEventDestroy_v2", driver_msg, n);
  RESOLVE(lib, driver, EventQuery, "cuEventQuery", driver_msg, n);
  RESOLVE(lib, driver, StreamIsCapturing, "cuStreamIsCapturing", driver_msg, n);
  /* Optional: drivers before CUDA 12 lack it, and then the Hopper kernels are not offered. */
  void *encode = dlsym(lib, "cuTensorMapEncodeTiled");
  memcpy(&driver.TensorMapEncodeTiled, &encode, sizeof encode);
  /* The library is never closed: its function pointers live as long as the process. */
  return FA_SUCCESS;
}

static void driver_init(void) { driver_status = open_driver(); }

fa_status fa_cu_load_driver(const fa_cu_driver **out, char *msg, size_t msg_len) {
  pthread_once(&driver_once, driver_init);
  *out = driver_status == FA_SUCCESS ? &driver : NULL;
  if (driver_status != FA_SUCCESS && msg && msg_len) snprintf(msg, msg_len, "%s", driver_msg);
  return driver_status;
}

void fa_cu_result_text(const fa_cu_driver *cu, CUresult r, char *buf, size_t len) {
  const char *name = NULL, *text = NULL;
  if (cu) {
    if (cu->GetErrorName(r, &name) != CUDA_SUCCESS) name = NULL;
    if (cu->GetErrorString(r, &text) != CUDA_SUCCESS) text = NULL;
  }
  if (name && text) snprintf(buf, len, "%s: %s", name, text);
  else if (name) snprintf(buf, len, "%s", name);
  else snprintf(buf, len, "CUDA error %d", (int)r);
}

/* ---- NVRTC ---- */

static fa_cu_nvrtc nvrtc;
static int nvrtc_version;
static fa_status nvrtc_status;
static char nvrtc_msg[1024];
static pthread_once_t nvrtc_once = PTHREAD_ONCE_INIT;

static fa_status resolve_nvrtc(void *lib, const char *path) {
  RESOLVE(lib, nvrtc, Version, "nvrtcVersion", nvrtc_msg, path);
  RESOLVE(lib, nvrtc, GetErrorString, "nvrtcGetErrorString", nvrtc_msg, path);
  RESOLVE(lib, nvrtc, CreateProgram, "nvrtcCreateProgram", nvrtc_msg, path);
  RESOLVE(lib, nvrtc, CompileProgram, "nvrtcCompileProgram", nvrtc_msg, path);
  RESOLVE(lib, nvrtc, GetProgramLogSize, "nvrtcGetProgramLogSize", nvrtc_msg, path);
  RESOLVE(lib, nvrtc, GetProgramLog, "nvrtcGetProgramLog", nvrtc_msg, path);
  /* nvrtcGetCUBIN arrived in CUDA 11.1: older NVRTCs are refused here, with this sentence. */
  RESOLVE(lib, nvrtc, GetCUBINSize, "nvrtcGetCUBINSize", nvrtc_msg, path);
  RESOLVE(lib, nvrtc, GetCUBIN, "nvrtcGetCUBIN", nvrtc_msg, path);
  RESOLVE(lib, nvrtc, DestroyProgram, "nvrtcDestroyProgram", nvrtc_msg, path);
  int major = 0, minor = 0;
  if (nvrtc.Version(&major, &minor) != NVRTC_SUCCESS) {
    snprintf(nvrtc_msg, sizeof nvrtc_msg, "%s: nvrtcVersion failed", path);
    return FA_ERROR_BACKEND_UNAVAILABLE;
  }
  nvrtc_version = major * 1000 + minor * 10;
  return FA_SUCCESS;
}

static fa_status open_nvrtc(void) {
  char tried[768] = "";
  size_t used = 0;
  const char *env = getenv("FLASHATTN_NVRTC");
  char home_path[1024] = "";
  const char *cuda_home = getenv("CUDA_HOME");
  if (cuda_home && *cuda_home) snprintf(home_path, sizeof home_path, "%s/lib64/libnvrtc.so", cuda_home);
  const char *names[] = {"libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2",
                         home_path, "/usr/local/cuda/lib64/libnvrtc.so"};
  /* FLASHATTN_NVRTC names the one library to use: a wrong path is an error, not a reason to look elsewhere. */
  const char *only[] = {env};
  const char **list = env && *env ? only : names;
  size_t count = env && *env ? 1 : sizeof names / sizeof names[0];
  for (size_t i = 0; i < count; i++) {
    if (!list[i][0]) continue;
    void *lib = dlopen(list[i], RTLD_NOW | RTLD_LOCAL);
    const char *why;
    if (lib) {
      if (resolve_nvrtc(lib, list[i]) == FA_SUCCESS) return FA_SUCCESS;
      dlclose(lib); /* too old (no nvrtcGetCUBIN): a later name may be newer */
      why = nvrtc_msg;
    } else {
      why = dlerror();
    }
    if (used < sizeof tried) {
      int n = snprintf(tried + used, sizeof tried - used, "%s%s", used ? "; " : "", why ? why : list[i]);
      if (n > 0) used += (size_t)n;
    }
  }
  snprintf(nvrtc_msg, sizeof nvrtc_msg, "NVRTC not found (set FLASHATTN_NVRTC to libnvrtc.so's path): %s", tried);
  return FA_ERROR_BACKEND_UNAVAILABLE;
}

static void nvrtc_init(void) { nvrtc_status = open_nvrtc(); }

fa_status fa_cu_load_nvrtc(const fa_cu_nvrtc **out, int *version, char *msg, size_t msg_len) {
  pthread_once(&nvrtc_once, nvrtc_init);
  *out = nvrtc_status == FA_SUCCESS ? &nvrtc : NULL;
  if (version) *version = nvrtc_status == FA_SUCCESS ? nvrtc_version : 0;
  if (nvrtc_status != FA_SUCCESS && msg && msg_len) snprintf(msg, msg_len, "%s", nvrtc_msg);
  return nvrtc_status;
}

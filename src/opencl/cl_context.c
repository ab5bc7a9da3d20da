/* The OpenCL backend's state: devices, contexts and queues, buffers, the program cache and the workspace.
 * The operations (cl_flash.c, cl_backward.c, ...) depend on it; cl_backend.c binds both into the table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "cl_internal.h"
#include "kernels.h"

const char *fa_cl_error_name(cl_int err) {
  switch (err) {
#define E(x) \
  case x: return #x;
    E(CL_SUCCESS) E(CL_DEVICE_NOT_FOUND) E(CL_DEVICE_NOT_AVAILABLE) E(CL_COMPILER_NOT_AVAILABLE)
    E(CL_MEM_OBJECT_ALLOCATION_FAILURE) E(CL_OUT_OF_RESOURCES) E(CL_OUT_OF_HOST_MEMORY)
    E(CL_PROFILING_INFO_NOT_AVAILABLE) E(CL_MEM_COPY_OVERLAP) E(CL_IMAGE_FORMAT_MISMATCH)
    E(CL_IMAGE_FORMAT_NOT_SUPPORTED) E(CL_BUILD_PROGRAM_FAILURE) E(CL_MAP_FAILURE)
    E(CL_MISALIGNED_SUB_BUFFER_OFFSET) E(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)
    E(CL_COMPILE_PROGRAM_FAILURE) E(CL_LINKER_NOT_AVAILABLE) E(CL_LINK_PROGRAM_FAILURE)
    E(CL_DEVICE_PARTITION_FAILED) E(CL_KERNEL_ARG_INFO_NOT_AVAILABLE) E(CL_INVALID_VALUE)
    E(CL_INVALID_DEVICE_TYPE) E(CL_INVALID_PLATFORM) E(CL_INVALID_DEVICE) E(CL_INVALID_CONTEXT)
    E(CL_INVALID_QUEUE_PROPERTIES) E(CL_INVALID_COMMAND_QUEUE) E(CL_INVALID_HOST_PTR)
    E(CL_INVALID_MEM_OBJECT) E(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR) E(CL_INVALID_IMAGE_SIZE)
    E(CL_INVALID_SAMPLER) E(CL_INVALID_BINARY) E(CL_INVALID_BUILD_OPTIONS) E(CL_INVALID_PROGRAM)
    E(CL_INVALID_PROGRAM_EXECUTABLE) E(CL_INVALID_KERNEL_NAME) E(CL_INVALID_KERNEL_DEFINITION)
    E(CL_INVALID_KERNEL) E(CL_INVALID_ARG_INDEX) E(CL_INVALID_ARG_VALUE) E(CL_INVALID_ARG_SIZE)
    E(CL_INVALID_KERNEL_ARGS) E(CL_INVALID_WORK_DIMENSION) E(CL_INVALID_WORK_GROUP_SIZE)
    E(CL_INVALID_WORK_ITEM_SIZE) E(CL_INVALID_GLOBAL_OFFSET) E(CL_INVALID_EVENT_WAIT_LIST)
    E(CL_INVALID_EVENT) E(CL_INVALID_OPERATION) E(CL_INVALID_GL_OBJECT) E(CL_INVALID_BUFFER_SIZE)
    E(CL_INVALID_MIP_LEVEL) E(CL_INVALID_GLOBAL_WORK_SIZE) E(CL_INVALID_PROPERTY)
    E(CL_INVALID_IMAGE_DESCRIPTOR) E(CL_INVALID_COMPILER_OPTIONS) E(CL_INVALID_LINKER_OPTIONS)
    E(CL_INVALID_DEVICE_PARTITION_COUNT)
#undef E
  case -1001: return "CL_PLATFORM_NOT_FOUND_KHR"; /* the ICD loader found no platform */
  default: {
    static _Thread_local char unknown[32];
    snprintf(unknown, sizeof unknown, "CL error %d", (int)err);
    return unknown;
  }
  }
}

static int is_oom(cl_int err) {
  return err == CL_MEM_OBJECT_ALLOCATION_FAILURE || err == CL_OUT_OF_RESOURCES || err == CL_OUT_OF_HOST_MEMORY ||
         err == CL_INVALID_BUFFER_SIZE;
}

fa_status fa_cl_fail(fa_context *ctx, const char *call, cl_int err) {
  return fa_fail(ctx, is_oom(err) ? FA_ERROR_OUT_OF_MEMORY : FA_ERROR_DEVICE, "%s: %s", call, fa_cl_error_name(err));
}

/* Mesa's rusticl on its llvmpipe CPU device, whose quirks docs/OPENCL_IMPLEMENTATIONS.md lists. */
static int is_rusticl_llvmpipe(const fa_cl *cl) {
  return strcmp(cl->platform_name, "rusticl") == 0 && strncmp(cl->device_name, "llvmpipe", 8) == 0;
}

void fa_cl_tile_limits(const fa_context *ctx, fa_tile_limits *lim) {
  const fa_cl *cl = fa_cl_of(ctx);
  lim->local_mem_bytes = ctx->info.local_mem_bytes;
  /* Register pressure can lower a kernel's own limit on GPUs: 256 work-items is safe on every GPU we know. */
  size_t group = cl->max_group_size;
  if (cl->is_gpu && group > 256) group = 256;
  lim->max_group_size = group > 4096 ? 4096 : (int)group;
  lim->simd_width = cl->is_gpu ? (cl->is_nvidia ? 32 : 64) : 1;
  /* llvmpipe runs work-items as SIMD lanes, and stops one work-item's loops after 65535 iterations in all:
   * the GPU layout (8 work-items per row) keeps each work-item's loops 8 times shorter. */
  if (is_rusticl_llvmpipe(cl)) {
    lim->simd_width = 8;
    if (lim->max_group_size > 256) lim->max_group_size = 256;
  }
  /* FLASHATTN_OPENCL_TILES=gpu|cpu picks the other kernel layout on any device: the GPU one (several
   * work-items per row) can then be tested on a CPU, and the CPU one timed on a GPU. */
  const char *env = getenv("FLASHATTN_OPENCL_TILES");
  if (env && strcmp(env, "gpu") == 0) {
    lim->simd_width = 32;
    if (lim->max_group_size > 256) lim->max_group_size = 256;
  } else if (env && strcmp(env, "cpu") == 0) {
    lim->simd_width = 1;
  }
}

/* ---- devices ---- */

/* The device a caller gets without naming one: the first GPU, else the first device (DESIGN.md). */
static int default_device(const cl_device_id *devs, cl_uint n) {
  for (cl_uint i = 0; i < n; i++) {
    cl_device_type type = 0;
    if (clGetDeviceInfo(devs[i], CL_DEVICE_TYPE, sizeof type, &type, NULL) == CL_SUCCESS && (type & CL_DEVICE_TYPE_GPU))
      return (int)i;
  }
  return 0;
}

/* Every device of every platform, in the loader's order, with its platform. Caller frees both arrays. */
static cl_int list_devices(cl_device_id **devs_out, cl_platform_id **plats_out, cl_uint *n_out, const char **call) {
  *devs_out = NULL;
  *plats_out = NULL;
  *n_out = 0;
  cl_uint nplat = 0;
  *call = "clGetPlatformIDs";
  cl_int err = clGetPlatformIDs(0, NULL, &nplat);
  if (err != CL_SUCCESS) return err;
  if (nplat == 0) return CL_SUCCESS;
  cl_platform_id *plats = malloc(nplat * sizeof *plats);
  if (!plats) return CL_OUT_OF_HOST_MEMORY;
  err = clGetPlatformIDs(nplat, plats, NULL);
  if (err != CL_SUCCESS) {
    free(plats);
    return err;
  }
  cl_device_id *devs = NULL;
  cl_platform_id *owners = NULL;
  cl_uint total = 0;
  *call = "clGetDeviceIDs";
  for (cl_uint i = 0; i < nplat; i++) {
    cl_uint nd = 0;
    err = clGetDeviceIDs(plats[i], CL_DEVICE_TYPE_ALL, 0, NULL, &nd);
    if (err == CL_DEVICE_NOT_FOUND || nd == 0) continue; /* a platform without devices is not an error */
    if (err != CL_SUCCESS) break;
    cl_device_id *d2 = realloc(devs, (total + nd) * sizeof *devs);
    cl_platform_id *o2 = d2 ? realloc(owners, (total + nd) * sizeof *owners) : NULL;
    if (d2) devs = d2;
    if (o2) owners = o2;
    if (!d2 || !o2) {
      err = CL_OUT_OF_HOST_MEMORY;
      break;
    }
    err = clGetDeviceIDs(plats[i], CL_DEVICE_TYPE_ALL, nd, devs + total, NULL);
    if (err != CL_SUCCESS) break;
    for (cl_uint j = 0; j < nd; j++) owners[total + j] = plats[i];
    total += nd;
  }
  free(plats);
  if (err != CL_SUCCESS && err != CL_DEVICE_NOT_FOUND) {
    free(devs);
    free(owners);
    return err;
  }
  *devs_out = devs;
  *plats_out = owners;
  *n_out = total;
  return CL_SUCCESS;
}

fa_status fa_cl_device_count(int *count, char *msg, size_t msg_len) {
  *count = 0;
  fa_status loaded = fa_cl_load(msg, msg_len);
  if (loaded != FA_SUCCESS) return loaded;
  cl_device_id *devs;
  cl_platform_id *plats;
  cl_uint n;
  const char *call;
  cl_int err = list_devices(&devs, &plats, &n, &call);
  free(devs);
  free(plats);
  *count = 0;
  if (err != CL_SUCCESS) {
    snprintf(msg, msg_len, "%s: %s", call, fa_cl_error_name(err));
    return FA_ERROR_BACKEND_UNAVAILABLE;
  }
  if (n == 0) {
    snprintf(msg, msg_len, "OpenCL: no platform offers a device");
    return FA_ERROR_BACKEND_UNAVAILABLE;
  }
  *count = (int)n;
  return FA_SUCCESS;
}

static void get_string(cl_device_id dev, cl_device_info what, char *out, size_t len) {
  out[0] = '\0';
  if (clGetDeviceInfo(dev, what, len, out, NULL) != CL_SUCCESS) out[0] = '\0';
  out[len - 1] = '\0';
}

/* Copy, truncating to the destination (device strings are longer than some fa_device_info fields). */
static void copy_string(char *dst, size_t len, const char *src) {
  size_t n = strnlen(src, len - 1);
  memcpy(dst, src, n);
  dst[n] = '\0';
}

/* Device facts into cl and ctx->info. */
static fa_status query_device(fa_context *ctx, fa_cl *cl) {
  cl_device_id dev = cl->device;
  cl_device_type type = 0;
  cl_int err = clGetDeviceInfo(dev, CL_DEVICE_TYPE, sizeof type, &type, NULL);
  if (err == CL_SUCCESS) err = clGetDeviceInfo(dev, CL_DEVICE_LOCAL_MEM_SIZE, sizeof cl->local_mem_bytes,
                                               &cl->local_mem_bytes, NULL);
  if (err == CL_SUCCESS) err = clGetDeviceInfo(dev, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof cl->max_group_size,
                                               &cl->max_group_size, NULL);
  if (err == CL_SUCCESS) err = clGetDeviceInfo(dev, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cl->compute_units,
                                               &cl->compute_units, NULL);
  if (err == CL_SUCCESS) err = clGetDeviceInfo(dev, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof cl->global_mem_bytes,
                                               &cl->global_mem_bytes, NULL);
  if (err == CL_SUCCESS) err = clGetDeviceInfo(dev, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof cl->max_alloc_bytes,
                                               &cl->max_alloc_bytes, NULL);
  if (err == CL_SUCCESS) err = clGetDeviceInfo(dev, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof cl->mem_base_align_bits,
                                               &cl->mem_base_align_bits, NULL);
  if (err != CL_SUCCESS) return fa_cl_fail(ctx, "clGetDeviceInfo", err);

  cl->is_cpu = (type & CL_DEVICE_TYPE_CPU) != 0;
  cl->is_gpu = (type & CL_DEVICE_TYPE_GPU) != 0;
  get_string(dev, CL_DEVICE_NAME, cl->device_name, sizeof cl->device_name);
  get_string(dev, CL_DEVICE_VENDOR, cl->vendor, sizeof cl->vendor);
  get_string(dev, CL_DRIVER_VERSION, cl->driver_version, sizeof cl->driver_version);
  get_string(dev, CL_DEVICE_VERSION, cl->device_version, sizeof cl->device_version);
  cl->platform_name[0] = '\0';
  if (clGetPlatformInfo(cl->platform, CL_PLATFORM_NAME, sizeof cl->platform_name, cl->platform_name, NULL) !=
      CL_SUCCESS)
    cl->platform_name[0] = '\0';
  cl->platform_name[sizeof cl->platform_name - 1] = '\0';
  cl->is_nvidia = strstr(cl->vendor, "NVIDIA") != NULL || strstr(cl->platform_name, "NVIDIA") != NULL;
  cl->is_pocl = strstr(cl->platform_name, "Portable Computing Language") != NULL ||
                strstr(cl->device_version, "PoCL") != NULL;
  char cver[128];
  get_string(dev, CL_DEVICE_OPENCL_C_VERSION, cver, sizeof cver); /* "OpenCL C 1.2 ..." */
  cl->cl_c_major = 1;
  cl->cl_c_minor = 2;
  if (sscanf(cver, "OpenCL C %d.%d", &cl->cl_c_major, &cl->cl_c_minor) != 2) {
    cl->cl_c_major = 1;
    cl->cl_c_minor = 2;
  }

  fa_device_info *info = &ctx->info;
  info->backend = FA_BACKEND_OPENCL;
  copy_string(info->name, sizeof info->name, cl->device_name);
  copy_string(info->platform, sizeof info->platform, cl->platform_name);
  copy_string(info->driver_version, sizeof info->driver_version, cl->driver_version);
  copy_string(info->api_version, sizeof info->api_version, cl->device_version);
  info->device_local_mem_bytes = (size_t)cl->local_mem_bytes;
  info->local_mem_bytes = fa_env_local_mem((size_t)cl->local_mem_bytes);
  info->global_mem_bytes = (size_t)cl->global_mem_bytes;
  info->compute_units = (int)cl->compute_units;
  info->max_work_group_size = cl->max_group_size > 1u << 30 ? 1 << 30 : (int)cl->max_group_size;
  info->compute_capability = 0;
  return FA_SUCCESS;
}

fa_status fa_cl_create(fa_context *ctx, int device, void *native_queue) {
  fa_cl *cl = calloc(1, sizeof *cl);
  if (!cl) return fa_fail(ctx, FA_ERROR_OUT_OF_MEMORY, "OpenCL context: out of host memory");
  ctx->impl = cl;
  cl_int err;

  if (native_queue) {
    /* The caller's queue decides device and context; we hold references to both. */
    cl_command_queue q = (cl_command_queue)native_queue;
    cl_command_queue_properties props = 0;
    err = clGetCommandQueueInfo(q, CL_QUEUE_DEVICE, sizeof cl->device, &cl->device, NULL);
    if (err == CL_SUCCESS) err = clGetCommandQueueInfo(q, CL_QUEUE_CONTEXT, sizeof cl->context, &cl->context, NULL);
    if (err == CL_SUCCESS) err = clGetCommandQueueInfo(q, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL);
    if (err == CL_SUCCESS) err = clGetDeviceInfo(cl->device, CL_DEVICE_PLATFORM, sizeof cl->platform, &cl->platform, NULL);
    if (err != CL_SUCCESS) {
      fa_status s = fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "native_queue: clGetCommandQueueInfo: %s (not a cl_command_queue?)",
                            fa_cl_error_name(err));
      cl->context = NULL;
      cl->device = NULL;
      fa_cl_destroy(ctx);
      return s;
    }
    clRetainCommandQueue(q);
    clRetainContext(cl->context);
    cl->queue = q;
    cl->profiling = (props & CL_QUEUE_PROFILING_ENABLE) != 0;
    cl->in_order = (props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE) == 0;
    /* Its index in our device list, for fa_context_info. */
    cl_device_id *devs;
    cl_platform_id *plats;
    cl_uint n;
    const char *call;
    ctx->info.device_index = -1;
    if (list_devices(&devs, &plats, &n, &call) == CL_SUCCESS)
      for (cl_uint i = 0; i < n; i++)
        if (devs[i] == cl->device) {
          ctx->info.device_index = (int)i;
          break;
        }
    free(devs);
    free(plats);
  } else {
    cl_device_id *devs;
    cl_platform_id *plats;
    cl_uint n;
    const char *call;
    err = list_devices(&devs, &plats, &n, &call);
    if (err != CL_SUCCESS) {
      fa_cl_destroy(ctx);
      return fa_fail(ctx, FA_ERROR_BACKEND_UNAVAILABLE, "%s: %s", call, fa_cl_error_name(err));
    }
    if (device == -1) device = default_device(devs, n);
    if (device == -1) { /* the default: the first GPU, else the first device */
      device = 0;
      for (cl_uint i = 0; i < n; i++) {
        cl_device_type type = 0;
        if (clGetDeviceInfo(devs[i], CL_DEVICE_TYPE, sizeof type, &type, NULL) == CL_SUCCESS &&
            (type & CL_DEVICE_TYPE_GPU)) {
          device = (int)i;
          break;
        }
      }
    }
    if (device < 0 || (cl_uint)device >= n) {
      free(devs);
      free(plats);
      fa_cl_destroy(ctx);
      if (n == 0) return fa_fail(ctx, FA_ERROR_BACKEND_UNAVAILABLE, "OpenCL: no platform offers a device");
      return fa_fail(ctx, FA_ERROR_BACKEND_UNAVAILABLE, "OpenCL device %d: out of range (%u devices)", device, n);
    }
    cl->device = devs[device];
    cl->platform = plats[device];
    ctx->info.device_index = device;
    free(devs);
    free(plats);
    cl_context_properties cprops[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)cl->platform, 0};
    cl->context = clCreateContext(cprops, 1, &cl->device, NULL, NULL, &err);
    if (err != CL_SUCCESS) {
      cl->context = NULL;
      fa_cl_destroy(ctx);
      return fa_fail(ctx, FA_ERROR_BACKEND_UNAVAILABLE, "clCreateContext: %s (device %d)", fa_cl_error_name(err), device);
    }
    cl->queue = clCreateCommandQueue(cl->context, cl->device, CL_QUEUE_PROFILING_ENABLE, &err);
    cl->profiling = 1;
    cl->in_order = 1;
    if (err != CL_SUCCESS) { /* some drivers refuse profiling: try without */
      cl->queue = clCreateCommandQueue(cl->context, cl->device, 0, &err);
      cl->profiling = 0;
    }
    if (err != CL_SUCCESS) {
      cl->queue = NULL;
      fa_cl_destroy(ctx);
      return fa_fail(ctx, FA_ERROR_BACKEND_UNAVAILABLE, "clCreateCommandQueue: %s (device %d)", fa_cl_error_name(err),
                     device);
    }
  }

  ctx->info.events_host_clock = !cl->profiling;
  fa_status s = query_device(ctx, cl);
  if (s != FA_SUCCESS) {
    char keep[sizeof ctx->last_error];
    memcpy(keep, ctx->last_error, sizeof keep);
    fa_cl_destroy(ctx);
    return fa_fail(ctx, s, "%s", keep);
  }
  return FA_SUCCESS;
}

void fa_cl_destroy(fa_context *ctx) {
  fa_cl *cl = fa_cl_of(ctx);
  if (!cl) return;
  if (cl->queue) clFinish(cl->queue);
  for (fa_cl_program_entry *p = cl->programs; p;) {
    for (fa_cl_kernel_entry *k = p->kernels; k;) {
      fa_cl_kernel_entry *next = k->next;
      clReleaseKernel(k->kernel);
      free(k->name);
      free(k);
      k = next;
    }
    fa_cl_program_entry *next = p->next;
    clReleaseProgram(p->program);
    free(p->key);
    free(p);
    p = next;
  }
  fa_cl_workspace_release(ctx);
  if (cl->queue) clReleaseCommandQueue(cl->queue);
  if (cl->context) clReleaseContext(cl->context);
  free(cl);
  ctx->impl = NULL;
}

fa_status fa_cl_synchronize(fa_context *ctx) {
  cl_int err = clFinish(fa_cl_of(ctx)->queue);
  return err == CL_SUCCESS ? FA_SUCCESS : fa_cl_fail(ctx, "clFinish", err);
}

/* ---- buffers ---- */

fa_status fa_cl_buffer_alloc(fa_context *ctx, size_t bytes, uint64_t *native) {
  fa_cl *cl = fa_cl_of(ctx);
  if (bytes > cl->max_alloc_bytes)
    return fa_fail(ctx, FA_ERROR_OUT_OF_MEMORY, "clCreateBuffer: %zu bytes is above CL_DEVICE_MAX_MEM_ALLOC_SIZE (%llu)",
                   bytes, (unsigned long long)cl->max_alloc_bytes);
  cl_int err;
  cl_mem m = clCreateBuffer(cl->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
  if (err != CL_SUCCESS)
    return fa_fail(ctx, is_oom(err) ? FA_ERROR_OUT_OF_MEMORY : FA_ERROR_DEVICE, "clCreateBuffer(%zu bytes): %s", bytes,
                   fa_cl_error_name(err));
  *native = (uint64_t)(uintptr_t)m;
  return FA_SUCCESS;
}

void fa_cl_buffer_free(fa_context *ctx, uint64_t native) {
  if (native) clReleaseMemObject((cl_mem)(uintptr_t)native);
}

fa_status fa_cl_buffer_wrap(fa_context *ctx, uint64_t native, size_t bytes) {
  fa_cl *cl = fa_cl_of(ctx);
  cl_mem m = (cl_mem)(uintptr_t)native;
  if (!m) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "fa_buffer_wrap: native cl_mem is NULL");
  size_t size = 0;
  cl_context owner = NULL;
  cl_int err = clGetMemObjectInfo(m, CL_MEM_SIZE, sizeof size, &size, NULL);
  if (err == CL_SUCCESS) err = clGetMemObjectInfo(m, CL_MEM_CONTEXT, sizeof owner, &owner, NULL);
  if (err != CL_SUCCESS)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "fa_buffer_wrap: clGetMemObjectInfo: %s (not a cl_mem?)",
                   fa_cl_error_name(err));
  if (owner != cl->context)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT,
                   "fa_buffer_wrap: the cl_mem belongs to another cl_context than this context's (create the context "
                   "from a queue of that cl_context through native_queue)");
  if (size < bytes)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "fa_buffer_wrap: the cl_mem holds %zu bytes, fewer than the %zu asked",
                   size, bytes);
  err = clRetainMemObject(m);
  if (err != CL_SUCCESS) return fa_cl_fail(ctx, "clRetainMemObject", err);
  return FA_SUCCESS;
}

/* A sub-buffer shares its parent's memory: place it there, so two views of one cl_mem are compared. */
void fa_cl_buffer_origin(fa_context *ctx, fa_buffer *buf) {
  (void)ctx;
  cl_mem m = (cl_mem)(uintptr_t)buf->native, parent = NULL;
  size_t origin = 0;
  if (clGetMemObjectInfo(m, CL_MEM_ASSOCIATED_MEMOBJECT, sizeof parent, &parent, NULL) == CL_SUCCESS && parent &&
      clGetMemObjectInfo(m, CL_MEM_OFFSET, sizeof origin, &origin, NULL) == CL_SUCCESS) {
    buf->space = (uint64_t)(uintptr_t)parent;
    buf->base = origin;
  }
}

void fa_cl_buffer_unwrap(fa_context *ctx, uint64_t native) {
  if (native) clReleaseMemObject((cl_mem)(uintptr_t)native);
}

/* On an out-of-order queue, a copy must still see the kernels enqueued before it. */
static cl_int order_barrier(const fa_cl *cl) {
  return cl->in_order ? CL_SUCCESS : clEnqueueBarrierWithWaitList(cl->queue, 0, NULL, NULL);
}

fa_status fa_cl_buffer_write(fa_context *ctx, uint64_t native, size_t offset, const void *src, size_t bytes) {
  fa_cl *cl = fa_cl_of(ctx);
  cl_int err = order_barrier(cl);
  if (err != CL_SUCCESS) return fa_cl_fail(ctx, "clEnqueueBarrierWithWaitList", err);
  err = clEnqueueWriteBuffer(cl->queue, (cl_mem)(uintptr_t)native, CL_TRUE, offset, bytes, src, 0, NULL, NULL);
  if (err != CL_SUCCESS)
    return fa_fail(ctx, is_oom(err) ? FA_ERROR_OUT_OF_MEMORY : FA_ERROR_DEVICE,
                   "clEnqueueWriteBuffer(offset %zu, %zu bytes): %s", offset, bytes, fa_cl_error_name(err));
  return FA_SUCCESS;
}

fa_status fa_cl_buffer_read(fa_context *ctx, uint64_t native, size_t offset, void *dst, size_t bytes) {
  fa_cl *cl = fa_cl_of(ctx);
  cl_int err = order_barrier(cl);
  if (err != CL_SUCCESS) return fa_cl_fail(ctx, "clEnqueueBarrierWithWaitList", err);
  err = clEnqueueReadBuffer(cl->queue, (cl_mem)(uintptr_t)native, CL_TRUE, offset, bytes, dst, 0, NULL, NULL);
  if (err != CL_SUCCESS)
    return fa_fail(ctx, is_oom(err) ? FA_ERROR_OUT_OF_MEMORY : FA_ERROR_DEVICE,
                   "clEnqueueReadBuffer(offset %zu, %zu bytes): %s", offset, bytes, fa_cl_error_name(err));
  return FA_SUCCESS;
}

/* ---- launches ---- */

fa_status fa_cl_arg(fa_context *ctx, cl_kernel kernel, cl_uint index, size_t size, const void *value,
                    const char *what) {
  cl_int err = clSetKernelArg(kernel, index, size, value);
  if (err != CL_SUCCESS)
    return fa_fail(ctx, FA_ERROR_DEVICE, "clSetKernelArg(%s, arg %u, %zu bytes): %s", what, index, size,
                   fa_cl_error_name(err));
  return FA_SUCCESS;
}

fa_status fa_cl_launch(fa_context *ctx, cl_kernel kernel, cl_uint dims, const size_t *global, const size_t *local,
                       const char *what) {
  fa_cl *cl = fa_cl_of(ctx);
  cl_int err = order_barrier(cl);
  if (err != CL_SUCCESS) return fa_cl_fail(ctx, "clEnqueueBarrierWithWaitList", err);
  err = clEnqueueNDRangeKernel(cl->queue, kernel, dims, NULL, global, local, 0, NULL, NULL);
  if (err != CL_SUCCESS)
    return fa_fail(ctx, is_oom(err) ? FA_ERROR_OUT_OF_MEMORY : FA_ERROR_DEVICE,
                   "clEnqueueNDRangeKernel(%s, global %zu x %zu x %zu, local %zu x %zu x %zu): %s", what, global[0],
                   dims > 1 ? global[1] : 1, dims > 2 ? global[2] : 1, local ? local[0] : 0,
                   local && dims > 1 ? local[1] : 0, local && dims > 2 ? local[2] : 0, fa_cl_error_name(err));
  return FA_SUCCESS;
}

/* The device grants a built kernel fewer work-items than CL_DEVICE_MAX_WORK_GROUP_SIZE when its registers or
 * private arrays are large (llvmpipe allows 32 for some), and its local memory includes what the compiler
 * adds: both are known only after the build. */
fa_status fa_cl_fit_kernel(fa_context *ctx, cl_kernel kernel, size_t local, fa_tile_limits *lim, int *fits) {
  const fa_cl *cl = fa_cl_of(ctx);
  size_t most = 0;
  cl_ulong used = 0;
  cl_int err = clGetKernelWorkGroupInfo(kernel, cl->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof most, &most, NULL);
  if (err == CL_SUCCESS)
    err = clGetKernelWorkGroupInfo(kernel, cl->device, CL_KERNEL_LOCAL_MEM_SIZE, sizeof used, &used, NULL);
  if (err != CL_SUCCESS) return fa_cl_fail(ctx, "clGetKernelWorkGroupInfo", err);
  /* rusticl's llvmpipe device (Mesa 22.3) reports twice the __local bytes a kernel declares, and runs it
   * within the real figure (docs/OPENCL_IMPLEMENTATIONS.md has the reproducer). */
  if (is_rusticl_llvmpipe(cl)) used /= 2;
  *fits = 1;
  if (local > most) {
    *fits = 0;
    if ((size_t)lim->max_group_size > most) lim->max_group_size = (int)most;
    else lim->max_group_size = lim->max_group_size > 1 ? lim->max_group_size / 2 : 0;
  }
  if (used > cl->local_mem_bytes) {
    *fits = 0;
    size_t over = (size_t)(used - cl->local_mem_bytes);
    lim->local_mem_bytes = lim->local_mem_bytes > over ? lim->local_mem_bytes - over : 0;
  }
  return FA_SUCCESS;
}

/* ---- programs ---- */

/* kernels/common.cl then each file of the space-separated list, each behind a #line so build logs name it. */
static char *gather_source(fa_context *ctx, const char *files, fa_status *status) {
  char *all = NULL;
  size_t all_len = 0;
  char list[512];
  int n = snprintf(list, sizeof list, "common.cl %s", files);
  if (n < 0 || (size_t)n >= sizeof list) {
    *status = fa_fail(ctx, FA_ERROR_KERNEL_BUILD, "OpenCL program: kernel file list too long: %s", files);
    return NULL;
  }
  for (char *save = NULL, *name = strtok_r(list, " ", &save); name; name = strtok_r(NULL, " ", &save)) {
    char msg[256];
    size_t len = 0;
    char *text = fa_kernel_source(name, &len, msg, sizeof msg);
    if (!text) {
      free(all);
      *status = fa_fail(ctx, FA_ERROR_KERNEL_BUILD, "kernel source %s: %s", name, msg);
      return NULL;
    }
    char head[300];
    int hl = snprintf(head, sizeof head, "#line 1 \"%s\"\n", name);
    char *grown = realloc(all, all_len + (size_t)hl + len + 2);
    if (!grown) {
      free(text);
      free(all);
      *status = fa_fail(ctx, FA_ERROR_OUT_OF_MEMORY, "OpenCL program: out of host memory for the source");
      return NULL;
    }
    all = grown;
    memcpy(all + all_len, head, (size_t)hl);
    all_len += (size_t)hl;
    memcpy(all + all_len, text, len);
    all_len += len;
    all[all_len++] = '\n';
    all[all_len] = '\0';
    free(text);
  }
  return all;
}

/* The build log's head, one line per newline turned into " | ", for the error sentence. */
static void build_log_head(const fa_cl *cl, cl_program prog, char *out, size_t len) {
  out[0] = '\0';
  size_t size = 0;
  if (clGetProgramBuildInfo(prog, cl->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &size) != CL_SUCCESS || size == 0) return;
  char *log = malloc(size + 1);
  if (!log) return;
  if (clGetProgramBuildInfo(prog, cl->device, CL_PROGRAM_BUILD_LOG, size, log, NULL) == CL_SUCCESS) {
    log[size] = '\0';
    size_t j = 0;
    for (size_t i = 0; log[i] && j + 4 < len; i++) {
      if (log[i] == '\n') {
        if (j > 0 && log[i + 1]) {
          memcpy(out + j, " | ", 3);
          j += 3;
        }
      } else {
        out[j++] = log[i];
      }
    }
    out[j] = '\0';
  }
  free(log);
}

/* The program binary, for the disk cache; NULL when the driver gives none. */
static unsigned char *program_binary(const fa_cl *cl, cl_program prog, size_t *size) {
  cl_uint ndev = 0;
  if (clGetProgramInfo(prog, CL_PROGRAM_NUM_DEVICES, sizeof ndev, &ndev, NULL) != CL_SUCCESS || ndev != 1) return NULL;
  size_t sz = 0;
  if (clGetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, sizeof sz, &sz, NULL) != CL_SUCCESS || sz == 0) return NULL;
  unsigned char *bin = malloc(sz);
  if (!bin) return NULL;
  if (clGetProgramInfo(prog, CL_PROGRAM_BINARIES, sizeof bin, &bin, NULL) != CL_SUCCESS) {
    free(bin);
    return NULL;
  }
  *size = sz;
  return bin;
}

static fa_status build_program(fa_context *ctx, const char *files, const char *options, cl_program *out) {
  fa_cl *cl = fa_cl_of(ctx);
  fa_status status = FA_SUCCESS;
  char *source = gather_source(ctx, files, &status);
  if (!source) return status;

  /* The disk-cache key: everything that changes the binary. */
  uint64_t h = fa_hash64(source, strlen(source), FA_HASH_SEED);
  size_t key_len = strlen(options) + strlen(files) + sizeof cl->device_name + sizeof cl->platform_name +
                   sizeof cl->driver_version + sizeof cl->device_version + 64;
  char *key = malloc(key_len);
  if (!key) {
    free(source);
    return fa_fail(ctx, FA_ERROR_OUT_OF_MEMORY, "OpenCL program: out of host memory");
  }
  snprintf(key, key_len, "opencl|%016llx|%s|%s|%s|%s|%s|%s", (unsigned long long)h, files, options, cl->device_name,
           cl->platform_name, cl->device_version, cl->driver_version);

  cl_int err;
  size_t bin_size = 0;
  unsigned char *bin = fa_cache_load(key, &bin_size);
  if (bin) {
    cl_int bin_status = CL_SUCCESS;
    const unsigned char *bins[1] = {bin};
    cl_program prog = clCreateProgramWithBinary(cl->context, 1, &cl->device, &bin_size, bins, &bin_status, &err);
    free(bin);
    if (err == CL_SUCCESS && bin_status == CL_SUCCESS) {
      err = clBuildProgram(prog, 1, &cl->device, options, NULL, NULL);
      if (err == CL_SUCCESS) {
        free(key);
        free(source);
        *out = prog;
        return FA_SUCCESS;
      }
    }
    if (prog) clReleaseProgram(prog);
    /* An unloadable binary (other driver build, corrupt file): build from source below and overwrite it. */
  }

  const char *src = source;
  cl_program prog = clCreateProgramWithSource(cl->context, 1, &src, NULL, &err);
  free(source);
  if (err != CL_SUCCESS) {
    free(key);
    return fa_cl_fail(ctx, "clCreateProgramWithSource", err);
  }
  err = clBuildProgram(prog, 1, &cl->device, options, NULL, NULL);
  if (err != CL_SUCCESS) {
    char log[700];
    build_log_head(cl, prog, log, sizeof log);
    clReleaseProgram(prog);
    free(key);
    return fa_fail(ctx, err == CL_BUILD_PROGRAM_FAILURE || err == CL_INVALID_BUILD_OPTIONS ? FA_ERROR_KERNEL_BUILD
                                                                                            : FA_ERROR_DEVICE,
                   "clBuildProgram(%s, \"%s\"): %s: %s", files, options, fa_cl_error_name(err), log);
  }
  /* FLASHATTN_OPENCL_BUILD_LOG=1: a successful build's log on stderr too (measurements: with
   * FLASHATTN_OPENCL_NV_DEFINES=-cl-nv-verbose, NVIDIA's ptxas reports each kernel's registers there). */
  const char *show = getenv("FLASHATTN_OPENCL_BUILD_LOG");
  if (show && strcmp(show, "1") == 0) {
    char log[4000];
    build_log_head(cl, prog, log, sizeof log);
    fprintf(stderr, "flashattn: clBuildProgram(%s, \"%s\"): %s\n", files, options, log);
  }
  unsigned char *made = program_binary(cl, prog, &bin_size);
  if (made) fa_cache_store(key, made, bin_size);
  free(made);
  free(key);
  *out = prog;
  return FA_SUCCESS;
}

fa_status fa_cl_kernel(fa_context *ctx, const char *files, const char *options, const char *name, cl_kernel *out) {
  fa_cl *cl = fa_cl_of(ctx);
  size_t klen = strlen(files) + strlen(options) + 2;
  char *key = malloc(klen);
  if (!key) return fa_fail(ctx, FA_ERROR_OUT_OF_MEMORY, "OpenCL program: out of host memory");
  snprintf(key, klen, "%s|%s", files, options);

  fa_cl_program_entry *p = cl->programs;
  while (p && strcmp(p->key, key) != 0) p = p->next;
  if (p) {
    free(key);
  } else {
    cl_program prog;
    fa_status s = build_program(ctx, files, options, &prog);
    if (s != FA_SUCCESS) {
      free(key);
      return s;
    }
    p = calloc(1, sizeof *p);
    if (!p) {
      clReleaseProgram(prog);
      free(key);
      return fa_fail(ctx, FA_ERROR_OUT_OF_MEMORY, "OpenCL program: out of host memory");
    }
    p->key = key;
    p->program = prog;
    p->next = cl->programs;
    cl->programs = p;
  }

  for (fa_cl_kernel_entry *k = p->kernels; k; k = k->next)
    if (strcmp(k->name, name) == 0) {
      *out = k->kernel;
      return FA_SUCCESS;
    }
  cl_int err;
  cl_kernel kernel = clCreateKernel(p->program, name, &err);
  if (err != CL_SUCCESS) return fa_fail(ctx, FA_ERROR_KERNEL_BUILD, "clCreateKernel(%s): %s", name, fa_cl_error_name(err));
  fa_cl_kernel_entry *k = calloc(1, sizeof *k);
  char *kname = malloc(strlen(name) + 1);
  if (!k || !kname) {
    free(k);
    free(kname);
    clReleaseKernel(kernel);
    return fa_fail(ctx, FA_ERROR_OUT_OF_MEMORY, "OpenCL kernel: out of host memory");
  }
  strcpy(kname, name);
  k->name = kname;
  k->kernel = kernel;
  k->next = p->kernels;
  p->kernels = k;
  *out = kernel;
  return FA_SUCCESS;
}

/* ---- workspace ---- */

fa_status fa_cl_workspace(fa_context *ctx, size_t bytes, cl_mem *out) {
  fa_cl *cl = fa_cl_of(ctx);
  if (bytes == 0) bytes = 1;
  if (cl->workspace && cl->workspace_bytes >= bytes) {
    *out = cl->workspace;
    return FA_SUCCESS;
  }
  if (bytes > cl->max_alloc_bytes)
    return fa_fail(ctx, FA_ERROR_OUT_OF_MEMORY,
                   "workspace: %zu bytes is above the device's CL_DEVICE_MAX_MEM_ALLOC_SIZE (%llu)", bytes,
                   (unsigned long long)cl->max_alloc_bytes);
  /* Work enqueued earlier may still read the old buffer; releasing it is safe (the driver keeps it alive
   * until those commands finish), so there is no need to wait. */
  fa_cl_workspace_release(ctx);
  fa_status st = fa_mem_admit(ctx, bytes, "workspace");
  if (st != FA_SUCCESS) return st;
  cl_int err;
  cl_mem m = clCreateBuffer(cl->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
  if (err != CL_SUCCESS)
    return fa_fail(ctx, is_oom(err) ? FA_ERROR_OUT_OF_MEMORY : FA_ERROR_DEVICE, "workspace: clCreateBuffer(%zu bytes): %s",
                   bytes, fa_cl_error_name(err));
  cl->workspace = m;
  cl->workspace_bytes = bytes;
  fa_mem_track(ctx, (int64_t)bytes);
  *out = m;
  return FA_SUCCESS;
}

void fa_cl_workspace_release(fa_context *ctx) {
  fa_cl *cl = fa_cl_of(ctx);
  if (!cl || !cl->workspace) return;
  clReleaseMemObject(cl->workspace);
  fa_mem_track(ctx, -(int64_t)cl->workspace_bytes);
  cl->workspace = NULL;
  cl->workspace_bytes = 0;
}

/* The CUDA backend table: devices, the primary context and stream, buffers. Kernels and launches live in
 * cu_module.c, the forward in cu_flash.c, the backward in cu_backward.c. Every entry that touches the driver
 * pushes the context's CUDA context and pops it again, so the caller's thread keeps its own current one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cu_cublas.h"
#include "cu_internal.h"
#include "decode.h"

fa_status fa_cu_fail(fa_context *ctx, const char *call, CUresult r) {
  char text[256];
  fa_cu_result_text(ctx->impl ? fa_cu_of(ctx)->cu : NULL, r, text, sizeof text);
  return fa_fail(ctx, r == CUDA_ERROR_OUT_OF_MEMORY ? FA_ERROR_OUT_OF_MEMORY : FA_ERROR_DEVICE, "%s: %s", call, text);
}

fa_status fa_cu_push(fa_context *ctx) {
  fa_cu *c = fa_cu_of(ctx);
  CUresult r = c->cu->CtxPushCurrent(c->context);
  return r == CUDA_SUCCESS ? FA_SUCCESS : fa_cu_fail(ctx, "cuCtxPushCurrent", r);
}

void fa_cu_pop(fa_context *ctx) {
  CUcontext popped;
  fa_cu_of(ctx)->cu->CtxPopCurrent(&popped);
}

void fa_cu_tile_limits(const fa_context *ctx, fa_tile_limits *lim) {
  const fa_cu *c = fa_cu_of(ctx);
  lim->local_mem_bytes = ctx->info.local_mem_bytes;
  lim->max_group_size = c->max_threads;
  lim->simd_width = 32;
}

/* ---- devices ---- */

/* The driver, initialised: cuInit runs on every call (it is cheap after the first and reports the state). */
static fa_status init_driver(const fa_cu_driver **cu, char *msg, size_t msg_len) {
  fa_status st = fa_cu_load_driver(cu, msg, msg_len);
  if (st != FA_SUCCESS) return st;
  CUresult r = (*cu)->Init(0);
  if (r != CUDA_SUCCESS) {
    char text[256];
    fa_cu_result_text(*cu, r, text, sizeof text);
    snprintf(msg, msg_len, "cuInit/cuDeviceGetCount: %s", text);
    return FA_ERROR_BACKEND_UNAVAILABLE;
  }
  return FA_SUCCESS;
}

static fa_status cu_device_count(int *count, char *msg, size_t msg_len) {
  *count = 0;
  const fa_cu_driver *cu;
  fa_status st = init_driver(&cu, msg, msg_len);
  if (st != FA_SUCCESS) return st;
  int n = 0;
  CUresult r = cu->DeviceGetCount(&n);
  if (r != CUDA_SUCCESS) {
    char text[256];
    fa_cu_result_text(cu, r, text, sizeof text);
    snprintf(msg, msg_len, "cuInit/cuDeviceGetCount: %s", text);
    return FA_ERROR_BACKEND_UNAVAILABLE;
  }
  if (n <= 0) {
    snprintf(msg, msg_len, "cuInit/cuDeviceGetCount: no CUDA device");
    return FA_ERROR_BACKEND_UNAVAILABLE;
  }
  *count = n;
  return FA_SUCCESS;
}

static CUresult attribute(const fa_cu *c, CUdevice_attribute a, int *v) { return c->cu->DeviceGetAttribute(v, a, c->device); }

/* Device facts into c and ctx->info. The context is current. */
static fa_status query_device(fa_context *ctx) {
  fa_cu *c = fa_cu_of(ctx);
  CUresult r;
  int optin = 0;
  size_t total = 0;
  if ((r = c->cu->DeviceGetName(c->name, (int)sizeof c->name, c->device)) != CUDA_SUCCESS)
    return fa_cu_fail(ctx, "cuDeviceGetName", r);
  if ((r = attribute(c, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, &c->cc_major)) != CUDA_SUCCESS ||
      (r = attribute(c, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, &c->cc_minor)) != CUDA_SUCCESS ||
      (r = attribute(c, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, &c->sm_count)) != CUDA_SUCCESS ||
      (r = attribute(c, CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, &c->max_threads)) != CUDA_SUCCESS ||
      (r = attribute(c, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, &optin)) != CUDA_SUCCESS)
    return fa_cu_fail(ctx, "cuDeviceGetAttribute", r);
  if ((r = c->cu->DeviceTotalMem(&total, c->device)) != CUDA_SUCCESS) return fa_cu_fail(ctx, "cuDeviceTotalMem", r);
  if ((r = c->cu->DriverGetVersion(&c->driver_version)) != CUDA_SUCCESS)
    return fa_cu_fail(ctx, "cuDriverGetVersion", r);
  c->shared_optin = (size_t)optin;
  snprintf(c->arch, sizeof c->arch, "sm_%d%d", c->cc_major, c->cc_minor);

  fa_device_info *info = &ctx->info;
  info->backend = FA_BACKEND_CUDA;
  info->device_index = c->ordinal;
  snprintf(info->name, sizeof info->name, "%s", c->name);
  snprintf(info->platform, sizeof info->platform, "CUDA %d.%d", c->driver_version / 1000,
           c->driver_version % 1000 / 10);
  snprintf(info->driver_version, sizeof info->driver_version, "%d.%d (NVRTC %d.%d)", c->driver_version / 1000,
           c->driver_version % 1000 / 10, c->nvrtc_version / 1000, c->nvrtc_version % 1000 / 10);
  snprintf(info->api_version, sizeof info->api_version, "%s", c->arch);
  info->device_local_mem_bytes = c->shared_optin;
  info->local_mem_bytes = fa_env_local_mem(c->shared_optin);
  info->global_mem_bytes = total;
  info->compute_units = c->sm_count;
  info->max_work_group_size = c->max_threads;
  info->compute_capability = c->cc_major * 10 + c->cc_minor;
  info->tensor_cores = c->cc_major >= 8;
  fa_cu_describe_kernels(ctx, info->kernels, sizeof info->kernels);
  return FA_SUCCESS;
}

/* The caller's stream decides the device and the CUDA context: a stream belongs to one context. The
 * special handles (legacy and per-thread default streams) belong to whatever context is current, so for
 * those we take the requested device's primary context. */
static fa_status adopt_stream(fa_context *ctx, CUstream stream, int device) {
  fa_cu *c = fa_cu_of(ctx);
  CUresult r;
  if (stream == CU_STREAM_LEGACY || stream == CU_STREAM_PER_THREAD) return FA_SUCCESS;
  CUcontext sctx = NULL;
  if ((r = c->cu->StreamGetCtx(stream, &sctx)) != CUDA_SUCCESS)
    return fa_cu_fail(ctx, "cuStreamGetCtx(native_queue)", r);
  if ((r = c->cu->CtxPushCurrent(sctx)) != CUDA_SUCCESS) return fa_cu_fail(ctx, "cuCtxPushCurrent", r);
  CUdevice dev;
  r = c->cu->CtxGetDevice(&dev);
  fa_cu_pop(ctx);
  if (r != CUDA_SUCCESS) return fa_cu_fail(ctx, "cuCtxGetDevice(native_queue's context)", r);
  if (device >= 0 && dev != c->device)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT,
                   "native_queue: the stream belongs to CUDA device %d, not the requested device %d", (int)dev, device);
  c->device = dev;
  c->ordinal = (int)dev; /* CUdevice handles are the ordinals */
  c->context = sctx;
  return FA_SUCCESS;
}

static void cu_destroy(fa_context *ctx);

static fa_status cu_create(fa_context *ctx, int device, void *native_queue) {
  char msg[1024] = "";
  int count = 0;
  fa_status st = cu_device_count(&count, msg, sizeof msg);
  if (st != FA_SUCCESS) return fa_fail(ctx, st, "%s", msg);
  if (device >= count)
    return fa_fail(ctx, FA_ERROR_BACKEND_UNAVAILABLE, "cuda: device %d requested, %d present", device, count);
  fa_cu *c = calloc(1, sizeof *c);
  if (!c) return fa_fail(ctx, FA_ERROR_OUT_OF_MEMORY, "fa_context_create: out of host memory");
  ctx->impl = c;
  fa_cu_load_driver(&c->cu, NULL, 0);
  if ((st = fa_cu_load_nvrtc(&c->nv, &c->nvrtc_version, msg, sizeof msg)) != FA_SUCCESS) {
    free(c);
    ctx->impl = NULL;
    return fa_fail(ctx, st, "cuda: NVRTC, which compiles the kernels at run time, is unavailable: %s", msg);
  }
  c->ordinal = device < 0 ? 0 : device;
  CUresult r = c->cu->DeviceGet(&c->device, c->ordinal);
  if (r != CUDA_SUCCESS) {
    st = fa_cu_fail(ctx, "cuDeviceGet", r);
    goto fail;
  }
  if (native_queue && (st = adopt_stream(ctx, (CUstream)native_queue, device)) != FA_SUCCESS) goto fail;
  /* The primary context is the one the CUDA runtime uses: memory from cudaMalloc works here as is. We hold
   * a reference even when a caller's stream lives in it, so it cannot be reset under us. */
  CUcontext primary = NULL;
  if ((r = c->cu->DevicePrimaryCtxRetain(&primary, c->device)) != CUDA_SUCCESS) {
    st = fa_cu_fail(ctx, "cuDevicePrimaryCtxRetain", r);
    goto fail;
  }
  c->retained = 1;
  if (!c->context) c->context = primary;
  if ((st = fa_cu_push(ctx)) != FA_SUCCESS) goto fail;
  st = query_device(ctx);
  if (st == FA_SUCCESS) {
    if (native_queue) {
      c->stream = (CUstream)native_queue;
    } else if ((r = c->cu->StreamCreate(&c->stream, CU_STREAM_NON_BLOCKING)) != CUDA_SUCCESS) {
      st = fa_cu_fail(ctx, "cuStreamCreate", r);
    } else {
      c->own_stream = 1;
    }
  }
  fa_cu_pop(ctx);
  if (st != FA_SUCCESS) goto fail;
  return FA_SUCCESS;
fail:
  cu_destroy(ctx);
  return st;
}

static void cu_destroy(fa_context *ctx) {
  fa_cu *c = fa_cu_of(ctx);
  if (!c) return;
  if (c->context && c->cu->CtxPushCurrent(c->context) == CUDA_SUCCESS) {
    if (c->stream) c->cu->StreamSynchronize(c->stream);
    fa_cu_modules_release(ctx);
    fa_cu_workspace_release(ctx);
    fa_cu_cublas_release(ctx);
    if (c->own_stream) c->cu->StreamDestroy(c->stream);
    fa_cu_pop(ctx);
  }
  if (c->retained) c->cu->DevicePrimaryCtxRelease(c->device);
  free(c);
  ctx->impl = NULL;
}

static fa_status cu_synchronize(fa_context *ctx) {
  fa_status st = fa_cu_push(ctx);
  if (st != FA_SUCCESS) return st;
  CUresult r = fa_cu_of(ctx)->cu->StreamSynchronize(fa_cu_of(ctx)->stream);
  fa_cu_pop(ctx);
  return r == CUDA_SUCCESS ? FA_SUCCESS : fa_cu_fail(ctx, "cuStreamSynchronize", r);
}

/* ---- buffers ---- */

static fa_status cu_buffer_alloc(fa_context *ctx, size_t bytes, uint64_t *native) {
  fa_status st = fa_cu_push(ctx);
  if (st != FA_SUCCESS) return st;
  CUdeviceptr p = 0;
  CUresult r = fa_cu_of(ctx)->cu->MemAlloc(&p, bytes);
  fa_cu_pop(ctx);
  if (r != CUDA_SUCCESS) {
    char text[256];
    fa_cu_result_text(fa_cu_of(ctx)->cu, r, text, sizeof text);
    return fa_fail(ctx, r == CUDA_ERROR_OUT_OF_MEMORY ? FA_ERROR_OUT_OF_MEMORY : FA_ERROR_DEVICE,
                   "cuMemAlloc(%zu bytes): %s", bytes, text);
  }
  *native = (uint64_t)p;
  return FA_SUCCESS;
}

static void cu_buffer_free(fa_context *ctx, uint64_t native) {
  if (fa_cu_push(ctx) != FA_SUCCESS) return;
  fa_cu_of(ctx)->cu->MemFree((CUdeviceptr)native);
  fa_cu_pop(ctx);
}

/* A caller's pointer must be device memory of this device (this context, or a stream-ordered pool of the
 * device, which has no context) with at least `bytes` after it inside its allocation. */
static fa_status cu_buffer_wrap(fa_context *ctx, uint64_t native, size_t bytes) {
  fa_cu *c = fa_cu_of(ctx);
  fa_status st = fa_cu_push(ctx);
  if (st != FA_SUCCESS) return st;
  CUdeviceptr p = (CUdeviceptr)native, base = 0;
  unsigned int mem_type = 0;
  int ordinal = -1;
  CUcontext owner = NULL;
  size_t size = 0;
  CUresult r = c->cu->PointerGetAttribute(&mem_type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, p);
  if (r != CUDA_SUCCESS) {
    char text[256];
    fa_cu_result_text(c->cu, r, text, sizeof text);
    st = fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "fa_buffer_wrap: 0x%llx is not CUDA memory (cuPointerGetAttribute: %s)",
                 (unsigned long long)p, text);
    goto done;
  }
  if (mem_type != CU_MEMORYTYPE_DEVICE && mem_type != CU_MEMORYTYPE_UNIFIED) {
    st = fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "fa_buffer_wrap: 0x%llx is host memory (memory type %u), not device memory",
                 (unsigned long long)p, mem_type);
    goto done;
  }
  if ((r = c->cu->PointerGetAttribute(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, p)) == CUDA_SUCCESS &&
      ordinal != (int)c->device) {
    st = fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "fa_buffer_wrap: 0x%llx lives on CUDA device %d, the context's is %d",
                 (unsigned long long)p, ordinal, (int)c->device);
    goto done;
  }
  if (c->cu->PointerGetAttribute(&owner, CU_POINTER_ATTRIBUTE_CONTEXT, p) == CUDA_SUCCESS && owner &&
      owner != c->context) {
    st = fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT,
                 "fa_buffer_wrap: 0x%llx belongs to another CUDA context than the context's (the device's primary one)",
                 (unsigned long long)p);
    goto done;
  }
  if ((r = c->cu->MemGetAddressRange(&base, &size, p)) != CUDA_SUCCESS) {
    st = fa_cu_fail(ctx, "fa_buffer_wrap: cuMemGetAddressRange", r);
    goto done;
  }
  if (bytes > size - (size_t)(p - base)) {
    st = fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT,
                 "fa_buffer_wrap: %zu bytes asked at 0x%llx, its allocation holds %zu bytes from there", bytes,
                 (unsigned long long)p, size - (size_t)(p - base));
    goto done;
  }
done:
  fa_cu_pop(ctx);
  return st;
}

static void cu_buffer_unwrap(fa_context *ctx, uint64_t native) {
  (void)ctx;
  (void)native; /* CUDA has no reference count on memory: the caller keeps it alive */
}

static fa_status cu_buffer_write(fa_context *ctx, uint64_t native, size_t offset, const void *src, size_t bytes) {
  fa_cu *c = fa_cu_of(ctx);
  fa_status st = fa_cu_push(ctx);
  if (st != FA_SUCCESS) return st;
  CUresult r = c->cu->MemcpyHtoDAsync((CUdeviceptr)(native + offset), src, bytes, c->stream);
  if (r != CUDA_SUCCESS) st = fa_cu_fail(ctx, "cuMemcpyHtoDAsync", r);
  else if ((r = c->cu->StreamSynchronize(c->stream)) != CUDA_SUCCESS) st = fa_cu_fail(ctx, "cuStreamSynchronize", r);
  fa_cu_pop(ctx);
  return st;
}

static fa_status cu_buffer_read(fa_context *ctx, uint64_t native, size_t offset, void *dst, size_t bytes) {
  fa_cu *c = fa_cu_of(ctx);
  fa_status st = fa_cu_push(ctx);
  if (st != FA_SUCCESS) return st;
  /* On the context's stream: the copy starts after the work enqueued before it. */
  CUresult r = c->cu->MemcpyDtoHAsync(dst, (CUdeviceptr)(native + offset), bytes, c->stream);
  if (r != CUDA_SUCCESS) st = fa_cu_fail(ctx, "cuMemcpyDtoHAsync", r);
  else if ((r = c->cu->StreamSynchronize(c->stream)) != CUDA_SUCCESS) st = fa_cu_fail(ctx, "cuStreamSynchronize", r);
  fa_cu_pop(ctx);
  return st;
}

/* ---- compute: the context is made current here, around the files that do the work ---- */

static fa_status cu_tiles(fa_context *ctx, int head_dim, fa_dtype dtype, fa_tiles *out) {
  return fa_cu_tiles(ctx, head_dim, dtype, out);
}

static fa_status cu_forward(fa_context *ctx, const fa_problem *p) {
  fa_status st = fa_cu_push(ctx);
  if (st != FA_SUCCESS) return st;
  st = fa_decode_wanted(p)                ? fa_cu_decode(ctx, p)
       : p->algo == FA_ALGO_STANDARD ? fa_cu_standard_forward(ctx, p)
                                     : fa_cu_forward(ctx, p);
  fa_cu_pop(ctx);
  return st;
}

static fa_status cu_combine(fa_context *ctx, const fa_problem *p) {
  fa_status st = fa_cu_push(ctx);
  if (st != FA_SUCCESS) return st;
  st = fa_cu_combine(ctx, p);
  fa_cu_pop(ctx);
  return st;
}

static fa_status cu_kv_append(fa_context *ctx, const fa_problem *p) {
  fa_status st = fa_cu_push(ctx);
  if (st != FA_SUCCESS) return st;
  st = fa_cu_kv_append(ctx, p);
  fa_cu_pop(ctx);
  return st;
}

static fa_status cu_backward(fa_context *ctx, const fa_problem *p) {
  fa_status st = fa_cu_push(ctx);
  if (st != FA_SUCCESS) return st;
  st = p->algo == FA_ALGO_STANDARD ? fa_cu_standard_backward(ctx, p) : fa_cu_backward(ctx, p);
  fa_cu_pop(ctx);
  return st;
}

const fa_backend_ops fa_cuda_ops = {
    .kind = FA_BACKEND_CUDA,
    .name = "cuda",
    .device_count = cu_device_count,
    .create = cu_create,
    .destroy = cu_destroy,
    .synchronize = cu_synchronize,
    .tiles = cu_tiles,
    .buffer_alloc = cu_buffer_alloc,
    .buffer_free = cu_buffer_free,
    .buffer_wrap = cu_buffer_wrap,
    .buffer_unwrap = cu_buffer_unwrap,
    .buffer_write = cu_buffer_write,
    .buffer_read = cu_buffer_read,
    .forward = cu_forward,
    .backward = cu_backward,
    .dropout_mask = fa_cu_dropout_mask,
    .combine = cu_combine,
    .kv_append = cu_kv_append,
    .event_record = fa_cu_event_record,
    .event_elapsed = fa_cu_event_elapsed,
    .event_destroy = fa_cu_event_destroy,
};

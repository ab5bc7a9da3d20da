/* Kernels for one context: compiled by NVRTC (cu_nvrtc.c) or taken from the on-disk cache, loaded as
 * modules once per context and kept until it is destroyed; launches; the scratch workspace. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "cu_internal.h"
#include "kernels.h"

/* FNV-1a over a kernel file's text and, recursively, every kernels/ header it names in an #include "x" line,
 * in order of appearance (fa_cu_compile sees the same texts). depth bounds a cycle. */
static fa_status hash_text(const char *file, int depth, uint64_t *h, char *msg, size_t msg_len) {
  size_t len = 0;
  char *src = fa_kernel_source(file, &len, msg, msg_len);
  if (!src) return FA_ERROR_KERNEL_BUILD;
  *h = fa_hash64(src, len, *h);
  fa_status st = FA_SUCCESS;
  for (const char *p = strstr(src, "#include \""); p && st == FA_SUCCESS && depth < 8; p = strstr(p + 1, "#include \"")) {
    const char *name = p + 10, *end = strchr(name, '"');
    if (!end || end - name > 200) continue;
    char hdr[256];
    memcpy(hdr, name, (size_t)(end - name));
    hdr[end - name] = '\0';
    st = hash_text(hdr, depth + 1, h, msg, msg_len);
  }
  free(src);
  return st;
}

static fa_status source_hash(const char *file, uint64_t *hash, char *msg, size_t msg_len) {
  *hash = FA_HASH_SEED;
  return hash_text(file, 0, hash, msg, msg_len);
}

/* Load a CUBIN as a module and take `kernel` from it. */
static CUresult load_module(const fa_cu *c, const void *image, const char *kernel, CUmodule *mod, CUfunction *fn) {
  CUresult r = c->cu->ModuleLoadData(mod, image);
  if (r != CUDA_SUCCESS) return r;
  r = c->cu->ModuleGetFunction(fn, *mod, kernel);
  if (r != CUDA_SUCCESS) {
    c->cu->ModuleUnload(*mod);
    *mod = NULL;
  }
  return r;
}

/* Build (or fetch from disk) and load the module for one entry. */
static fa_status build_entry(fa_context *ctx, const char *arch, const char *file, const char *defines,
                             const char *kernel, fa_cu_module *e) {
  fa_cu *c = fa_cu_of(ctx);
  char msg[1024] = "";
  uint64_t hash = 0;
  fa_status st = source_hash(file, &hash, msg, sizeof msg);
  if (st != FA_SUCCESS) return fa_fail(ctx, st, "%s", msg);

  size_t key_len = strlen(file) + strlen(defines) + strlen(c->name) + strlen(FA_CU_NVRTC_OPTIONS) + 160;
  char *key = malloc(key_len);
  if (!key) return fa_fail(ctx, FA_ERROR_OUT_OF_MEMORY, "%s: out of host memory", file);
  snprintf(key, key_len, "cuda|%s|%016llx|%s|%s %s|%s|driver %d|nvrtc %d", file, (unsigned long long)hash,
           arch, FA_CU_NVRTC_OPTIONS, defines, c->name, c->driver_version, c->nvrtc_version);

  size_t size = 0;
  void *image = fa_cache_load(key, &size);
  CUresult r = CUDA_ERROR_INVALID_IMAGE;
  if (image) {
    r = load_module(c, image, kernel, &e->module, &e->function);
    free(image);
    image = NULL;
  }
  if (r != CUDA_SUCCESS) { /* a miss, or an entry the driver refuses: build it afresh */
    st = fa_cu_compile(c->nv, file, defines, arch, 0, &image, &size, NULL, msg, sizeof msg);
    if (st != FA_SUCCESS) {
      free(key);
      return fa_fail(ctx, st, "%s", msg);
    }
    r = load_module(c, image, kernel, &e->module, &e->function);
    if (r == CUDA_SUCCESS) fa_cache_store(key, image, size);
    free(image);
    if (r != CUDA_SUCCESS) {
      free(key);
      char text[256];
      fa_cu_result_text(c->cu, r, text, sizeof text);
      return fa_fail(ctx, r == CUDA_ERROR_OUT_OF_MEMORY ? FA_ERROR_OUT_OF_MEMORY : FA_ERROR_DEVICE,
                     "cuModuleLoadData/cuModuleGetFunction(%s %s, %s): %s", file, defines, kernel, text);
    }
  }
  free(key);
  e->shared_limit = 48 * 1024;
  return FA_SUCCESS;
}

fa_status fa_cu_function(fa_context *ctx, const char *file, const char *defines, const char *kernel,
                         size_t shared_bytes, CUfunction *out) {
  return fa_cu_function_arch(ctx, fa_cu_of(ctx)->arch, file, defines, kernel, shared_bytes, out);
}

fa_status fa_cu_function_arch(fa_context *ctx, const char *arch, const char *file, const char *defines,
                              const char *kernel, size_t shared_bytes, CUfunction *out) {
  fa_cu *c = fa_cu_of(ctx);
  size_t key_len = strlen(arch) + strlen(file) + strlen(defines) + strlen(kernel) + 4;
  char *key = malloc(key_len);
  if (!key) return fa_fail(ctx, FA_ERROR_OUT_OF_MEMORY, "%s: out of host memory", file);
  snprintf(key, key_len, "%s|%s|%s|%s", arch, file, defines, kernel);
  fa_cu_module *e = c->modules;
  while (e && strcmp(e->key, key) != 0) e = e->next;
  if (!e) {
    e = calloc(1, sizeof *e);
    if (!e) {
      free(key);
      return fa_fail(ctx, FA_ERROR_OUT_OF_MEMORY, "%s: out of host memory", file);
    }
    fa_status st = build_entry(ctx, arch, file, defines, kernel, e);
    if (st != FA_SUCCESS) {
      free(e);
      free(key);
      return st;
    }
    e->key = key;
    e->next = c->modules;
    c->modules = e;
  } else {
    free(key);
  }
  /* Above 48 KiB a block's dynamic shared memory must be allowed per function (the opt-in limit). */
  if (shared_bytes > (size_t)e->shared_limit) {
    if (shared_bytes > c->shared_optin)
      return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "%s: %zu bytes of shared memory per block, the device allows %zu",
                     kernel, shared_bytes, c->shared_optin);
    CUresult r = c->cu->FuncSetAttribute(e->function, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                         (int)shared_bytes);
    if (r != CUDA_SUCCESS) return fa_cu_fail(ctx, "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)", r);
    e->shared_limit = (int)shared_bytes;
  }
  *out = e->function;
  return FA_SUCCESS;
}

void fa_cu_modules_release(fa_context *ctx) {
  fa_cu *c = fa_cu_of(ctx);
  while (c->modules) {
    fa_cu_module *e = c->modules;
    c->modules = e->next;
    if (e->module) c->cu->ModuleUnload(e->module);
    free(e->key);
    free(e);
  }
}

fa_status fa_cu_launch(fa_context *ctx, CUfunction fn, const unsigned grid[3], unsigned threads,
                       size_t shared_bytes, void **params, const char *what) {
  fa_cu *c = fa_cu_of(ctx);
  if (grid[0] == 0 || grid[1] == 0 || grid[2] == 0) return FA_SUCCESS;
  if (grid[1] > 65535 || grid[2] > 65535)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "%s: grid %u x %u x %u is beyond the 65535 limit of y and z", what,
                   grid[0], grid[1], grid[2]);
  CUresult r = c->cu->LaunchKernel(fn, grid[0], grid[1], grid[2], threads, 1, 1, (unsigned)shared_bytes, c->stream,
                                   params, NULL);
  if (r != CUDA_SUCCESS) {
    char text[256];
    fa_cu_result_text(c->cu, r, text, sizeof text);
    return fa_fail(ctx, r == CUDA_ERROR_OUT_OF_MEMORY ? FA_ERROR_OUT_OF_MEMORY : FA_ERROR_DEVICE,
                   "cuLaunchKernel(%s, grid %u x %u x %u, %u threads, %zu shared bytes): %s", what, grid[0], grid[1],
                   grid[2], threads, shared_bytes, text);
  }
  return FA_SUCCESS;
}

fa_status fa_cu_launch_split(fa_context *ctx, CUfunction fn, unsigned blocks, int64_t heads, int64_t batch,
                             unsigned threads, size_t shared_bytes, void **params, int *b0, int *h0, const char *what) {
  for (int64_t b = 0; b < batch; b += 65535) {
    for (int64_t h = 0; h < heads; h += 65535) {
      *b0 = (int)b;
      *h0 = (int)h;
      const unsigned grid[3] = {blocks, (unsigned)(heads - h < 65535 ? heads - h : 65535),
                                (unsigned)(batch - b < 65535 ? batch - b : 65535)};
      fa_status st = fa_cu_launch(ctx, fn, grid, threads, shared_bytes, params, what);
      if (st != FA_SUCCESS) return st;
    }
  }
  return FA_SUCCESS;
}

/* Free the retired workspaces whose work has completed; wait: also those still in use (the caller has
 * waited for the stream, or needs a slot). */
static void reap_retired(fa_cu *c, fa_context *ctx, int wait) {
  for (size_t i = 0; i < sizeof c->retired / sizeof c->retired[0]; i++) {
    if (!c->retired[i].ptr) continue;
    if (wait) c->cu->EventSynchronize(c->retired[i].done);
    else if (c->cu->EventQuery(c->retired[i].done) != CUDA_SUCCESS) continue;
    c->cu->EventDestroy(c->retired[i].done);
    c->cu->MemFree(c->retired[i].ptr);
    fa_mem_track(ctx, -(int64_t)c->retired[i].bytes);
    c->retired[i].ptr = 0;
  }
}

/* Move the workspace to a free retired slot with an event recorded after the work queued so far. Every slot
 * still busy (four grows within one run of in-flight work): wait for the oldest ones first. */
static fa_status retire_workspace(fa_cu *c, fa_context *ctx) {
  const size_t n = sizeof c->retired / sizeof c->retired[0];
  size_t i = 0;
  while (i < n && c->retired[i].ptr) i++;
  if (i == n) {
    reap_retired(c, ctx, 1);
    i = 0;
  }
  CUevent ev;
  CUresult r = c->cu->EventCreate(&ev, CU_EVENT_DISABLE_TIMING);
  if (r == CUDA_SUCCESS && (r = c->cu->EventRecord(ev, c->stream)) != CUDA_SUCCESS) c->cu->EventDestroy(ev);
  if (r != CUDA_SUCCESS) return fa_cu_fail(ctx, "cuEventRecord", r);
  c->retired[i].ptr = c->workspace;
  c->retired[i].bytes = c->workspace_bytes;
  c->retired[i].done = ev;
  c->workspace = 0;
  c->workspace_bytes = 0;
  return FA_SUCCESS;
}

fa_status fa_cu_workspace(fa_context *ctx, size_t bytes, CUdeviceptr *out) {
  fa_cu *c = fa_cu_of(ctx);
  if (bytes == 0) bytes = 1;
  if (c->workspace && c->workspace_bytes >= bytes) {
    *out = c->workspace;
    return FA_SUCCESS;
  }
  CUstreamCaptureStatus capture = CU_STREAM_CAPTURE_STATUS_NONE;
  CUresult r = c->cu->StreamIsCapturing(c->stream, &capture);
  if (r != CUDA_SUCCESS) return fa_cu_fail(ctx, "cuStreamIsCapturing", r);
  if (capture != CU_STREAM_CAPTURE_STATUS_NONE)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT,
                   "the context's workspace must grow from %zu to %zu bytes, which cannot be done while its stream "
                   "is being captured into a CUDA graph: run the same call once before capturing (the workspace "
                   "never shrinks)",
                   c->workspace_bytes, bytes);
  reap_retired(c, ctx, 0);
  fa_status st = fa_mem_admit(ctx, bytes, "workspace");
  if (st != FA_SUCCESS) return st;
  CUdeviceptr p = 0;
  r = c->cu->MemAlloc(&p, bytes);
  if (r != CUDA_SUCCESS) {
    char text[256];
    fa_cu_result_text(c->cu, r, text, sizeof text);
    return fa_fail(ctx, r == CUDA_ERROR_OUT_OF_MEMORY ? FA_ERROR_OUT_OF_MEMORY : FA_ERROR_DEVICE,
                   "cuMemAlloc: workspace of %zu bytes: %s", bytes, text);
  }
  st = c->workspace ? retire_workspace(c, ctx) : FA_SUCCESS;
  if (st != FA_SUCCESS) {
    c->cu->MemFree(p);
    return st;
  }
  c->workspace = p;
  c->workspace_bytes = bytes;
  fa_mem_track(ctx, (int64_t)bytes);
  *out = p;
  return FA_SUCCESS;
}

void fa_cu_workspace_release(fa_context *ctx) {
  fa_cu *c = fa_cu_of(ctx);
  reap_retired(c, ctx, 1);
  if (!c->workspace) return;
  c->cu->MemFree(c->workspace);
  fa_mem_track(ctx, -(int64_t)c->workspace_bytes);
  c->workspace = 0;
  c->workspace_bytes = 0;
}

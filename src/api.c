/* The public API: argument checks, backend choice, dispatch through the backend table.
 * Every check happens here, once, before any backend code runs, so that a bad call writes nothing. */
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cache.h"
#include "checked.h"
#include "config.h"
#include "overlap.h"

/* ---- names, versions, errors ---- */

int fa_version(void) {
  return FLASHATTN_VERSION_MAJOR * 10000 + FLASHATTN_VERSION_MINOR * 100 + FLASHATTN_VERSION_PATCH;
}

const char *fa_version_string(void) { return FA_VERSION_STRING; }

const char *fa_status_string(fa_status s) {
  switch (s) {
  case FA_SUCCESS: return "FA_SUCCESS";
  case FA_ERROR_INVALID_ARGUMENT: return "FA_ERROR_INVALID_ARGUMENT";
  case FA_ERROR_UNSUPPORTED: return "FA_ERROR_UNSUPPORTED";
  case FA_ERROR_BACKEND_UNAVAILABLE: return "FA_ERROR_BACKEND_UNAVAILABLE";
  case FA_ERROR_OUT_OF_MEMORY: return "FA_ERROR_OUT_OF_MEMORY";
  case FA_ERROR_DEVICE: return "FA_ERROR_DEVICE";
  case FA_ERROR_KERNEL_BUILD: return "FA_ERROR_KERNEL_BUILD";
  }
  return "FA_STATUS_UNKNOWN";
}

const char *fa_backend_name(fa_backend b) {
  switch (b) {
  case FA_BACKEND_AUTO: return "auto";
  case FA_BACKEND_CUDA: return "cuda";
  case FA_BACKEND_OPENCL: return "opencl";
  }
  return "unknown";
}

const char *fa_dtype_name(fa_dtype d) {
  switch (d) {
  case FA_F32: return "f32";
  case FA_F16: return "f16";
  case FA_BF16: return "bf16";
  case FA_U8: return "u8";
  case FA_I32: return "i32";
  }
  return "unknown";
}

size_t fa_dtype_size(fa_dtype d) {
  switch (d) {
  case FA_F32:
  case FA_I32: return 4;
  case FA_F16:
  case FA_BF16: return 2;
  case FA_U8: return 1;
  }
  return 0;
}

fa_status fa_fail(fa_context *ctx, fa_status status, const char *fmt, ...) {
  if (ctx) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->last_error, sizeof ctx->last_error, fmt, ap);
    va_end(ap);
  }
  return status;
}

const char *fa_context_last_error(const fa_context *ctx) { return ctx ? ctx->last_error : ""; }

static _Thread_local char create_error[1024];

const char *fa_last_create_error(void) { return create_error; }

fa_status fa_fail_thread(fa_status status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(create_error, sizeof create_error, fmt, ap);
  va_end(ap);
  return status;
}

void fa_mem_track(fa_context *ctx, int64_t delta_bytes) {
  if (delta_bytes < 0 && (size_t)(-delta_bytes) > ctx->mem_current) delta_bytes = -(int64_t)ctx->mem_current;
  ctx->mem_current += (size_t)delta_bytes; /* wraps back correctly for negative deltas */
  if (ctx->mem_current > ctx->mem_peak) ctx->mem_peak = ctx->mem_current;
}

fa_status fa_mem_admit(fa_context *ctx, size_t bytes, const char *what) {
  const size_t total = ctx->info.global_mem_bytes;
  if (total == 0 || (bytes <= total && ctx->mem_current <= total - bytes)) return FA_SUCCESS;
  return fa_fail(ctx, FA_ERROR_OUT_OF_MEMORY,
                 "%s: %zu bytes on top of the %zu this context has allocated exceed the device's %zu bytes", what,
                 bytes, ctx->mem_current, total);
}

size_t fa_env_local_mem(size_t device_bytes) {
  const char *env = getenv("FLASHATTN_LOCAL_MEM_BYTES");
  if (!env || !*env) return device_bytes;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(env, &end, 10);
  if (errno || *end || v == 0) return device_bytes;
  return v < device_bytes ? (size_t)v : device_bytes;
}

/* ---- backends and contexts ---- */

static const fa_backend_ops *backend_table(fa_backend b) {
#if FA_HAVE_CUDA
  if (b == FA_BACKEND_CUDA) return &fa_cuda_ops;
#endif
#if FA_HAVE_OPENCL
  if (b == FA_BACKEND_OPENCL) return &fa_opencl_ops;
#endif
  (void)b;
  return NULL;
}

int fa_backend_built(fa_backend b) { return backend_table(b) != NULL; }

static fa_status count_devices(fa_backend b, int *count, char *msg, size_t msg_len) {
  *count = 0;
  const fa_backend_ops *ops = backend_table(b);
  if (!ops) {
    snprintf(msg, msg_len, "the %s backend is not built into this library", fa_backend_name(b));
    return FA_ERROR_BACKEND_UNAVAILABLE;
  }
  return ops->device_count(count, msg, msg_len);
}

fa_status fa_device_count(fa_backend b, int *count) {
  if (!count) return FA_ERROR_INVALID_ARGUMENT;
  *count = 0;
  if (b != FA_BACKEND_CUDA && b != FA_BACKEND_OPENCL) return FA_ERROR_INVALID_ARGUMENT;
  char msg[512];
  return count_devices(b, count, msg, sizeof msg);
}

/* ---- structs that grow (the header's "Structs that grow") ---- */

/* What struct_size 0 stands for: each struct as of 0.2.0, every field today, so that a zeroed descriptor reads
 * its window or varlen offsets (when 0 stood for the fields before them, a caller's `= {0}` descriptor
 * silently ran without them: flashattn-bench did). An explicit struct_size may still stop earlier, after the
 * fields of the first layout (the *_MIN sizes; the Python package's descriptor does): the rest read as zero. */
#define BASE_SIZE(type, last) (offsetof(type, last) + sizeof(((type *)0)->last))
#define OPTIONS_BASE BASE_SIZE(fa_context_options, native_queue)
#define OPTIONS_MIN OPTIONS_BASE
#define DESC_BASE BASE_SIZE(fa_attention_desc, max_seqlen_q)
#define DESC_MIN BASE_SIZE(fa_attention_desc, dropout_offset)
#define INFO_BASE BASE_SIZE(fa_device_info, events_host_clock)
#define INFO_MIN BASE_SIZE(fa_device_info, tensor_cores)

/* The caller's struct_size resolved to the bytes that may be read or written, or 0 when it is not valid:
 * smaller than the first layout's fields. */
static size_t grown_size(size_t struct_size, size_t base, size_t min) {
  if (struct_size == 0) return base;
  return struct_size < min ? 0 : struct_size;
}

/* Copy a caller's growable input struct (`given` bytes, from grown_size) into `dst`, this library's full
 * struct: fields past `given` become zero. A caller's struct larger than ours must hold zeros where we have
 * no field; returns the offset of the first nonzero unknown byte there, or 0 when every byte was taken. */
static size_t read_grown(void *dst, size_t ours, const void *src, size_t given) {
  memset(dst, 0, ours);
  memcpy(dst, src, given < ours ? given : ours);
  for (size_t i = ours; i < given; i++)
    if (((const unsigned char *)src)[i]) return i;
  return 0;
}

/* FLASHATTN_BACKEND for a caller who asked for FA_BACKEND_AUTO. */
static fa_status backend_from_env(fa_backend *out) {
  const char *env = getenv("FLASHATTN_BACKEND");
  if (!env || !*env || strcmp(env, "auto") == 0) *out = FA_BACKEND_AUTO;
  else if (strcmp(env, "cuda") == 0) *out = FA_BACKEND_CUDA;
  else if (strcmp(env, "opencl") == 0) *out = FA_BACKEND_OPENCL;
  else
    return fa_fail_thread(FA_ERROR_INVALID_ARGUMENT,
                       "FLASHATTN_BACKEND: unknown value '%.64s' (expected cuda, opencl or auto)", env);
  return FA_SUCCESS;
}

/* FLASHATTN_DEVICE for a caller who passed device -1; -1 again when unset (the backend's default). */
static fa_status device_from_env(int *out) {
  const char *env = getenv("FLASHATTN_DEVICE");
  *out = -1;
  if (!env || !*env) return FA_SUCCESS;
  char *end;
  errno = 0;
  long v = strtol(env, &end, 10);
  if (errno || *end || v < 0 || v > INT_MAX)
    return fa_fail_thread(FA_ERROR_INVALID_ARGUMENT,
                       "FLASHATTN_DEVICE: '%.64s' is not a device index (a whole number >= 0)", env);
  *out = (int)v;
  return FA_SUCCESS;
}

/* auto: CUDA when a CUDA device answers, else OpenCL (whose default device is the first GPU). */
static fa_status pick_backend(fa_backend requested, fa_backend *out) {
  if (requested != FA_BACKEND_AUTO) {
    *out = requested;
    return FA_SUCCESS;
  }
  char cuda_msg[512] = "", cl_msg[512] = "";
  int n = 0;
  if (count_devices(FA_BACKEND_CUDA, &n, cuda_msg, sizeof cuda_msg) == FA_SUCCESS && n > 0) {
    *out = FA_BACKEND_CUDA;
    return FA_SUCCESS;
  }
  if (count_devices(FA_BACKEND_OPENCL, &n, cl_msg, sizeof cl_msg) == FA_SUCCESS && n > 0) {
    *out = FA_BACKEND_OPENCL;
    return FA_SUCCESS;
  }
  return fa_fail_thread(FA_ERROR_BACKEND_UNAVAILABLE, "no backend has a device: cuda: %s; opencl: %s",
                     cuda_msg[0] ? cuda_msg : "no device", cl_msg[0] ? cl_msg : "no device");
}

fa_status fa_context_create(const fa_context_options *opt, fa_context **out) {
  create_error[0] = '\0';
  if (!out) return fa_fail_thread(FA_ERROR_INVALID_ARGUMENT, "out: pointer for the new context is NULL");
  *out = NULL;
  fa_context_options o;
  if (opt) {
    const size_t given = grown_size(opt->struct_size, OPTIONS_BASE, OPTIONS_MIN);
    if (!given)
      return fa_fail_thread(FA_ERROR_INVALID_ARGUMENT,
                            "opt->struct_size: %zu is smaller than the %zu bytes of the base fields (use 0 or sizeof)",
                            opt->struct_size, (size_t)OPTIONS_MIN);
    const size_t unknown = read_grown(&o, sizeof o, opt, given);
    if (unknown)
      return fa_fail_thread(FA_ERROR_UNSUPPORTED,
                            "opt: byte %zu of a %zu-byte struct is set, but this library (%s) knows %zu bytes",
                            unknown, given, FA_VERSION_STRING, sizeof o);
  } else {
    fa_context_options_default(&o);
  }
  if (o.backend != FA_BACKEND_AUTO && o.backend != FA_BACKEND_CUDA && o.backend != FA_BACKEND_OPENCL)
    return fa_fail_thread(FA_ERROR_INVALID_ARGUMENT, "opt->backend: unknown value %d", (int)o.backend);
  if (o.device < -1)
    return fa_fail_thread(FA_ERROR_INVALID_ARGUMENT, "opt->device: %d is not a device index (-1 or >= 0)", o.device);
  fa_status st;
  fa_backend b = o.backend;
  if (b == FA_BACKEND_AUTO && (st = backend_from_env(&b)) != FA_SUCCESS) return st;
  if (o.device == -1 && (st = device_from_env(&o.device)) != FA_SUCCESS) return st;
  if ((st = pick_backend(b, &b)) != FA_SUCCESS) return st;

  char msg[512] = "";
  int n = 0;
  if ((st = count_devices(b, &n, msg, sizeof msg)) != FA_SUCCESS)
    return fa_fail_thread(st, "%s backend unavailable: %s", fa_backend_name(b), msg);
  if (n == 0) return fa_fail_thread(FA_ERROR_BACKEND_UNAVAILABLE, "%s backend: no device", fa_backend_name(b));
  if (o.device >= n)
    return fa_fail_thread(FA_ERROR_BACKEND_UNAVAILABLE, "%s backend: device %d requested, %d present",
                       fa_backend_name(b), o.device, n);

  fa_context *ctx = calloc(1, sizeof *ctx);
  if (!ctx) return fa_fail_thread(FA_ERROR_OUT_OF_MEMORY, "fa_context_create: out of host memory");
  ctx->ops = backend_table(b);
  if ((st = ctx->ops->create(ctx, o.device, o.native_queue)) != FA_SUCCESS) {
    fa_fail_thread(st, "%s", ctx->last_error[0] ? ctx->last_error : fa_status_string(st));
    free(ctx);
    return st;
  }
  ctx->info.backend = b;
  fa_cache_describe(ctx->info.kernel_cache, sizeof ctx->info.kernel_cache);
  pthread_mutex_init(&ctx->lock, NULL);
  *out = ctx;
  return FA_SUCCESS;
}

void fa_context_destroy(fa_context *ctx) {
  if (!ctx) return;
  ctx->ops->destroy(ctx);
  pthread_mutex_destroy(&ctx->lock);
  free(ctx);
}

fa_status fa_context_info(const fa_context *ctx, fa_device_info *info) {
  if (!ctx || !info) return FA_ERROR_INVALID_ARGUMENT;
  const size_t size = grown_size(info->struct_size, INFO_BASE, INFO_MIN);
  if (!size) return FA_ERROR_INVALID_ARGUMENT;
  fa_device_info full = ctx->info;
  full.struct_size = info->struct_size;
  /* A caller's struct larger than ours gets zeros in the fields it knows and we do not. */
  if (size > sizeof full) memset((char *)info + sizeof full, 0, size - sizeof full);
  memcpy(info, &full, size < sizeof full ? size : sizeof full);
  return FA_SUCCESS;
}

/* Every call on a context runs under its lock (struct fa_context says why); the lock is state, not the
 * context's value, so the const calls take it too. */
static void lock(const fa_context *ctx) { pthread_mutex_lock(&((fa_context *)ctx)->lock); }
static fa_status unlock(const fa_context *ctx, fa_status st) {
  pthread_mutex_unlock(&((fa_context *)ctx)->lock);
  return st;
}

static fa_status check_head_dim(fa_context *ctx, const char *what, int64_t d) {
  if (d <= 0) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "%s: head dim %lld is not positive", what, (long long)d);
  if (d > FA_MAX_HEAD_DIM)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "%s: head dim %lld is above the %d this build supports", what,
                   (long long)d, FA_MAX_HEAD_DIM);
  if (d % 8)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "%s: head dim %lld is not a multiple of 8, which the kernels need",
                   what, (long long)d);
  return FA_SUCCESS;
}

/* The element types of attention's operands (FA_U8 is for masks only). */
static int valid_dtype(fa_dtype d) { return d == FA_F32 || d == FA_F16 || d == FA_BF16; }
static int known_dtype(fa_dtype d) { return valid_dtype(d) || d == FA_U8 || d == FA_I32; }

static fa_status context_tiles_locked(fa_context *ctx, int head_dim, fa_dtype dtype, fa_tiles *out) {
  if (!out) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "out: NULL");
  if (!valid_dtype(dtype)) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "dtype: unknown value %d", (int)dtype);
  fa_status st = check_head_dim(ctx, "head_dim", head_dim);
  if (st != FA_SUCCESS) return st;
  return ctx->ops->tiles(ctx, head_dim, dtype, out);
}

fa_status fa_context_tiles(fa_context *ctx, int head_dim, fa_dtype dtype, fa_tiles *out) {
  if (!ctx) return FA_ERROR_INVALID_ARGUMENT;
  lock(ctx);
  return unlock(ctx, context_tiles_locked(ctx, head_dim, dtype, out));
}

static fa_status synchronize_locked(fa_context *ctx) {
  return ctx->ops->synchronize(ctx);
}

fa_status fa_synchronize(fa_context *ctx) {
  if (!ctx) return FA_ERROR_INVALID_ARGUMENT;
  lock(ctx);
  return unlock(ctx, synchronize_locked(ctx));
}

static fa_status context_memory_locked(const fa_context *ctx, size_t *current_bytes, size_t *peak_bytes) {
  if (current_bytes) *current_bytes = ctx->mem_current;
  if (peak_bytes) *peak_bytes = ctx->mem_peak;
  return FA_SUCCESS;
}

fa_status fa_context_memory(const fa_context *ctx, size_t *current_bytes, size_t *peak_bytes) {
  if (!ctx) return FA_ERROR_INVALID_ARGUMENT;
  lock(ctx);
  return unlock(ctx, context_memory_locked(ctx, current_bytes, peak_bytes));
}

static fa_status context_reset_peak_memory_locked(fa_context *ctx) {
  ctx->mem_peak = ctx->mem_current;
  return FA_SUCCESS;
}

fa_status fa_context_reset_peak_memory(fa_context *ctx) {
  if (!ctx) return FA_ERROR_INVALID_ARGUMENT;
  lock(ctx);
  return unlock(ctx, context_reset_peak_memory_locked(ctx));
}

/* ---- buffers ---- */

static fa_status new_buffer(fa_context *ctx, size_t bytes, int owned, uint64_t native, fa_buffer **out) {
  fa_buffer *b = calloc(1, sizeof *b);
  if (!b) return fa_fail(ctx, FA_ERROR_OUT_OF_MEMORY, "fa_buffer: out of host memory");
  b->ctx = ctx;
  b->bytes = bytes;
  b->owned = owned;
  b->native = native;
  b->space = native;
  if (ctx->ops->buffer_origin) ctx->ops->buffer_origin(ctx, b);
  *out = b;
  return FA_SUCCESS;
}

static fa_status buffer_create_locked(fa_context *ctx, size_t bytes, fa_buffer **out) {
  if (!out) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "out: pointer for the new buffer is NULL");
  *out = NULL;
  if (bytes == 0) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "bytes: 0 (a buffer needs at least one byte)");
  fa_status st = fa_mem_admit(ctx, bytes, "fa_buffer_create");
  if (st != FA_SUCCESS) return st;
  uint64_t native = 0;
  st = ctx->ops->buffer_alloc(ctx, bytes, &native);
  if (st != FA_SUCCESS) return st;
  if ((st = new_buffer(ctx, bytes, 1, native, out)) != FA_SUCCESS) {
    ctx->ops->buffer_free(ctx, native);
    return st;
  }
  fa_mem_track(ctx, (int64_t)bytes);
  return FA_SUCCESS;
}

fa_status fa_buffer_create(fa_context *ctx, size_t bytes, fa_buffer **out) {
  if (!ctx) return FA_ERROR_INVALID_ARGUMENT;
  lock(ctx);
  return unlock(ctx, buffer_create_locked(ctx, bytes, out));
}

static fa_status buffer_wrap_locked(fa_context *ctx, void *native, size_t bytes, fa_buffer **out) {
  if (!out) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "out: pointer for the new buffer is NULL");
  *out = NULL;
  if (!native) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "native: NULL memory object");
  if (bytes == 0) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "bytes: 0 (a buffer needs at least one byte)");
  uint64_t handle = (uint64_t)(uintptr_t)native;
  fa_status st = ctx->ops->buffer_wrap(ctx, handle, bytes);
  if (st != FA_SUCCESS) return st;
  if ((st = new_buffer(ctx, bytes, 0, handle, out)) != FA_SUCCESS) ctx->ops->buffer_unwrap(ctx, handle);
  return st;
}

fa_status fa_buffer_wrap(fa_context *ctx, void *native, size_t bytes, fa_buffer **out) {
  if (!ctx) return FA_ERROR_INVALID_ARGUMENT;
  lock(ctx);
  return unlock(ctx, buffer_wrap_locked(ctx, native, bytes, out));
}

size_t fa_buffer_size(const fa_buffer *buf) { return buf ? buf->bytes : 0; }

void fa_buffer_destroy(fa_buffer *buf) {
  if (!buf) return;
  fa_context *ctx = buf->ctx;
  lock(ctx);
  if (buf->owned) {
    ctx->ops->buffer_free(ctx, buf->native);
    fa_mem_track(ctx, -(int64_t)buf->bytes);
  } else {
    ctx->ops->buffer_unwrap(ctx, buf->native);
  }
  unlock(ctx, FA_SUCCESS);
  free(buf);
}

static fa_status check_range(fa_context *ctx, const char *name, const fa_buffer *buf, size_t offset, size_t bytes) {
  if (!buf) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "%s: buffer is NULL", name);
  if (buf->ctx != ctx) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "%s: buffer belongs to another context", name);
  if (offset > buf->bytes || bytes > buf->bytes - offset)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "%s: bytes [%zu, %zu + %zu) reach past the buffer's %zu bytes",
                   name, offset, offset, bytes, buf->bytes);
  return FA_SUCCESS;
}

static fa_status buffer_write_locked(fa_context *ctx, fa_buffer *dst, size_t offset, const void *src, size_t bytes) {
  fa_status st = check_range(ctx, "dst", dst, offset, bytes);
  if (st != FA_SUCCESS) return st;
  if (bytes == 0) return FA_SUCCESS;
  if (!src) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "src: NULL host pointer for %zu bytes", bytes);
  return ctx->ops->buffer_write(ctx, dst->native, offset, src, bytes);
}

fa_status fa_buffer_write(fa_context *ctx, fa_buffer *dst, size_t offset, const void *src, size_t bytes) {
  if (!ctx) return FA_ERROR_INVALID_ARGUMENT;
  lock(ctx);
  return unlock(ctx, buffer_write_locked(ctx, dst, offset, src, bytes));
}

static fa_status buffer_read_locked(fa_context *ctx, const fa_buffer *src, size_t offset, void *dst, size_t bytes) {
  fa_status st = check_range(ctx, "src", src, offset, bytes);
  if (st != FA_SUCCESS) return st;
  if (bytes == 0) return FA_SUCCESS;
  if (!dst) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "dst: NULL host pointer for %zu bytes", bytes);
  return ctx->ops->buffer_read(ctx, src->native, offset, dst, bytes);
}

fa_status fa_buffer_read(fa_context *ctx, const fa_buffer *src, size_t offset, void *dst, size_t bytes) {
  if (!ctx) return FA_ERROR_INVALID_ARGUMENT;
  lock(ctx);
  return unlock(ctx, buffer_read_locked(ctx, src, offset, dst, bytes));
}

void fa_tensor_packed(fa_tensor *t, fa_buffer *buf, size_t offset, fa_dtype dtype, int64_t d0, int64_t d1,
                      int64_t d2, int64_t d3) {
  if (!t) return;
  memset(t, 0, sizeof *t);
  t->buf = buf;
  t->offset = offset;
  t->dtype = dtype;
  t->shape[0] = d0, t->shape[1] = d1, t->shape[2] = d2, t->shape[3] = d3;
  /* A stride too large for int64 saturates; check_tensor then refuses it as reaching past the buffer. */
  t->stride[3] = 1;
  t->stride[2] = d3;
  t->stride[1] = fa_mul_i64_sat(d2, d3);
  t->stride[0] = fa_mul_i64_sat(d1, t->stride[1]);
}

/* ---- tensor checks ---- */

/* What a tensor operand must look like; 0 in shape means "any positive size" (the first operand sets it). */
typedef struct tensor_rule {
  const char *name;
  fa_dtype dtype;
  const char *dtype_from; /* why it must have that dtype: "q's" (the operand it must match), "lse's fixed" */
  int64_t shape[4];
  const char *shape_from[4]; /* which operand or quantity each expected size comes from */
  int contiguous_last;       /* stride[3] must be 1 (not lse, not masks) */
  const char *const *names;  /* of the four dimensions */
} tensor_rule;

static const char *const dim_names[4] = {"batch", "seqlen", "heads", "head dim"};
static const char *const lse_dim_names[4] = {"batch", "heads", "seqlen", "last dim"};
static const char *const block_dim_names[4] = {"batch", "heads", "block rows", "block columns"};
static const char *const keep_dim_names[4] = {"batch", "heads", "seqlen_q", "seqlen_k"};
static const char *const index_dim_names[4] = {"batch", "dim 1", "dim 2", "dim 3"};
static const char *const page_dim_names[4] = {"pages", "page size", "heads", "head dim"};

/* Largest element index + 1 that the view touches, or -1 on overflow. */
static int64_t tensor_extent(const fa_tensor *t) {
  int64_t last = 0;
  for (int i = 0; i < 4; i++) {
    int64_t step;
    if (!fa_mul_i64(t->shape[i] - 1, t->stride[i], &step) || !fa_add_i64(last, step, &last))
      return -1;
  }
  return fa_add_i64(last, 1, &last) ? last : -1;
}

/* The buffer a workspace-size query's tensor without one stands for: large enough, at an aligned address. */
static const fa_buffer shape_only_buffer = {NULL, SIZE_MAX, 0, 0, 0, 0};

/* shape_only (the workspace-size queries): t->buf may be NULL, and is then not checked against the shape. */
static fa_status check_tensor(fa_context *ctx, const tensor_rule *r, const fa_tensor *t, fa_view *view,
                              int shape_only) {
  const char *const *names = r->names;
  if (!t) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "%s: tensor is NULL", r->name);
  const fa_buffer *buf = t->buf ? t->buf : shape_only ? &shape_only_buffer : NULL;
  if (!buf) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "%s: buf is NULL", r->name);
  if (t->buf && t->buf->ctx != ctx) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "%s: buffer belongs to another context", r->name);
  if (!known_dtype(t->dtype)) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "%s: unknown dtype %d", r->name, (int)t->dtype);
  if (t->dtype != r->dtype)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "%s: dtype %s differs from %s %s", r->name,
                   fa_dtype_name(t->dtype), r->dtype_from, fa_dtype_name(r->dtype));
  for (int i = 0; i < 4; i++) {
    if (t->shape[i] <= 0)
      return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "%s: %s (shape[%d]) is %lld, must be positive", r->name, names[i],
                     i, (long long)t->shape[i]);
    if (r->shape[i] && t->shape[i] != r->shape[i])
      return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "%s: %s (shape[%d]) is %lld, expected %lld as %s", r->name,
                     names[i], i, (long long)t->shape[i], (long long)r->shape[i], r->shape_from[i]);
    if (t->stride[i] < 0)
      return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "%s: stride[%d] is %lld, negative strides are not supported",
                     r->name, i, (long long)t->stride[i]);
  }
  if (r->contiguous_last && t->stride[3] != 1)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "%s: stride[3] is %lld, the head dim must be contiguous (1)",
                   r->name, (long long)t->stride[3]);
  size_t es = fa_dtype_size(t->dtype);
  if (t->offset % es)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "%s: offset %zu bytes is not a multiple of the %zu-byte element",
                   r->name, t->offset, es);
  int64_t extent = tensor_extent(t);
  int64_t end_bytes;
  if (extent < 0 || !fa_mul_i64(extent, (int64_t)es, &end_bytes) ||
      (uint64_t)end_bytes > (uint64_t)buf->bytes || t->offset > buf->bytes - (size_t)end_bytes)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT,
                   "%s: shape [%lld, %lld, %lld, %lld] with strides [%lld, %lld, %lld, %lld] at offset %zu reaches "
                   "past the end of its %zu-byte buffer",
                   r->name, (long long)t->shape[0], (long long)t->shape[1], (long long)t->shape[2],
                   (long long)t->shape[3], (long long)t->stride[0], (long long)t->stride[1], (long long)t->stride[2],
                   (long long)t->stride[3], t->offset, buf->bytes);
  /* Only a tensor that fits its buffer can be valid-but-too-large. */
  for (int i = 0; i < 4; i++)
    if (t->shape[i] > INT32_MAX)
      return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "%s: %s (shape[%d]) is %lld, above the %d the kernels index",
                     r->name, names[i], i, (long long)t->shape[i], INT32_MAX);
  view->buf = buf;
  view->offset = (int64_t)(t->offset / es);
  for (int i = 0; i < 4; i++) view->stride[i] = t->stride[i];
  return FA_SUCCESS;
}

static tensor_rule rule(const char *name, fa_dtype dtype, const char *dtype_from, int64_t d0, int64_t d1, int64_t d2,
                        int64_t d3, const char *from) {
  tensor_rule r = {name, dtype, dtype_from, {d0, d1, d2, d3}, {from, from, from, from}, 1, dim_names};
  return r;
}

/* Dropout fields of desc into p; batch and heads_q must be set (the Philox counter holds b * Hq + h). */
static fa_status check_dropout(fa_context *ctx, const fa_attention_desc *desc, fa_problem *p) {
  const float dp = desc->dropout_p;
  if (!(dp >= 0.0f && dp < 1.0f))
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "desc->dropout_p: %g (must be in [0, 1))", (double)dp);
  if (dp > 0.0f && p->batch * p->heads_q > (int64_t)UINT32_MAX + 1)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED,
                   "desc->dropout_p: batch %lld x heads %lld exceeds the 2^32 batch-heads the dropout counter holds",
                   (long long)p->batch, (long long)p->heads_q);
  p->dropout_p = dp;
  const double t = nearbyint((double)dp * 4294967296.0);
  p->dropout_threshold = t > (double)UINT32_MAX ? UINT32_MAX : (uint32_t)t;
  p->dropout_scale = (float)(1.0 / (1.0 - (double)dp));
  p->dropout_seed = desc->dropout_seed;
  p->dropout_offset = desc->dropout_offset;
  return FA_SUCCESS;
}

/* Read the caller's descriptor (struct_size bytes of it) into *desc, this library's full struct, and check the
 * fields every call shares. */
static fa_status check_desc(fa_context *ctx, const fa_attention_desc *given, fa_attention_desc *desc) {
  if (!given) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "desc: NULL attention descriptor");
  const size_t size = grown_size(given->struct_size, DESC_BASE, DESC_MIN);
  if (!size)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT,
                   "desc->struct_size: %zu is smaller than the %zu bytes of the base fields (use 0 or sizeof)",
                   given->struct_size, (size_t)DESC_MIN);
  const size_t unknown = read_grown(desc, sizeof *desc, given, size);
  if (unknown)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED,
                   "desc: byte %zu of a %zu-byte descriptor is set, but this library (%s) knows %zu bytes",
                   unknown, size, FA_VERSION_STRING, sizeof *desc);
  if (desc->algo != FA_ALGO_FLASH && desc->algo != FA_ALGO_STANDARD)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "desc->algo: unknown value %d", (int)desc->algo);
  float s = desc->softmax_scale;
  if (isnan(s) || isinf(s) || s < 0)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "desc->softmax_scale: %g (must be finite and >= 0; 0 means 1/sqrt(D))",
                   (double)s);
  return FA_SUCCESS;
}

/* The block mask against the problem's shapes: [B or 1, Hq or 1, ceil(Sq / bq), ceil(Sk / bk)] uint8. */
static fa_status check_block_mask(fa_context *ctx, const fa_attention_desc *desc, fa_problem *p, int shape_only) {
  const fa_tensor *m = desc->block_mask;
  if (desc->block_q <= 0 || desc->block_k <= 0)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "desc->%s: %lld, must be positive with a block_mask",
                   desc->block_q <= 0 ? "block_q" : "block_k",
                   (long long)(desc->block_q <= 0 ? desc->block_q : desc->block_k));
  const int64_t rows = (p->seqlen_q - 1) / desc->block_q + 1, cols = (p->seqlen_k - 1) / desc->block_k + 1;
  if (m->shape[0] != 1 && m->shape[0] != p->batch)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "desc->block_mask: batch (shape[0]) is %lld, expected 1 or q's %lld",
                   (long long)m->shape[0], (long long)p->batch);
  if (m->shape[1] != 1 && m->shape[1] != p->heads_q)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "desc->block_mask: heads (shape[1]) is %lld, expected 1 or q's %lld",
                   (long long)m->shape[1], (long long)p->heads_q);
  tensor_rule r = {"desc->block_mask", FA_U8, "a block mask's fixed", {0, 0, rows, cols},
                   {"", "", "ceil(Sq / block_q)", "ceil(Sk / block_k)"}, 0, block_dim_names};
  fa_status st = check_tensor(ctx, &r, m, &p->mask, shape_only);
  if (st != FA_SUCCESS) return st;
  for (int i = 0; i < 2; i++)
    if (m->shape[i] == 1) p->mask.stride[i] = 0;
  /* A block longer than the sequence is one block, like the sequence itself: i / bq is the same for every
   * row, and the kernels' int arithmetic stays in range. */
  p->block_q = desc->block_q < p->seqlen_q ? desc->block_q : p->seqlen_q;
  p->block_k = desc->block_k < p->seqlen_k ? desc->block_k : p->seqlen_k;
  return FA_SUCCESS;
}

/* ---- inference options (the header's "Inference") ---- */

/* Copy an int32 view of `n0` x `n1` elements (strides in elements) to the host: malloc'd, NULL on failure
 * (the context's error set). */
static int32_t *read_indices(fa_context *ctx, const char *name, const fa_view *v, int64_t n0, int64_t n1) {
  const int64_t last = v->offset + (n0 - 1) * v->stride[0] + (n1 - 1) * v->stride[1];
  const size_t bytes = (size_t)(last - v->offset + 1) * 4;
  int32_t *span = malloc(bytes), *out = malloc((size_t)(n0 * n1) * 4);
  if (!span || !out) {
    free(span);
    free(out);
    fa_fail(ctx, FA_ERROR_OUT_OF_MEMORY, "%s: out of host memory for the index check", name);
    return NULL;
  }
  if (ctx->ops->buffer_read(ctx, v->buf->native, (size_t)v->offset * 4, span, bytes) != FA_SUCCESS) {
    free(span);
    free(out);
    return NULL;
  }
  for (int64_t a = 0; a < n0; a++)
    for (int64_t b = 0; b < n1; b++) out[a * n1 + b] = span[a * v->stride[0] + b * v->stride[1]];
  free(span);
  return out;
}

/* The values of seqlens_k and block_table: lengths within the capacity, the pages they use within k. */
static fa_status check_index_values(fa_context *ctx, const fa_problem *p) {
  int32_t *lens = NULL, *table = NULL;
  fa_status st = FA_SUCCESS;
  if (p->seqlens_k.buf && !(lens = read_indices(ctx, "desc->seqlens_k", &p->seqlens_k, p->batch, 1)))
    return FA_ERROR_DEVICE;
  if (p->block_table.buf &&
      !(table = read_indices(ctx, "desc->block_table", &p->block_table, p->batch, p->max_pages))) {
    free(lens);
    return FA_ERROR_DEVICE;
  }
  for (int64_t b = 0; b < p->batch && st == FA_SUCCESS; b++) {
    const int64_t len = (lens ? lens[b] : p->seqlen_k) + p->seqlen_new; /* fa_kv_append writes seqlen_new more */
    if (len < 0 || len > p->seqlen_k) {
      st = fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT,
                   "desc->seqlens_k: sequence %lld has %lld keys%s, outside 0 .. the cache's capacity %lld (%s)",
                   (long long)b, (long long)len, p->seqlen_new ? " with the appended ones" : "",
                   (long long)p->seqlen_k, table ? "max_pages x page_size" : "k's seqlen");
      break;
    }
    for (int64_t pg = 0; table && pg < (len + p->page_size - 1) / p->page_size; pg++) {
      const int32_t e = table[b * p->max_pages + pg];
      if (e < 0 || e >= p->num_pages) {
        st = fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT,
                     "desc->block_table: entry [%lld, %lld] is %d, outside the %lld pages of k (0 .. %lld)",
                     (long long)b, (long long)pg, (int)e, (long long)p->num_pages, (long long)p->num_pages - 1);
        break;
      }
    }
  }
  free(lens);
  free(table);
  return st;
}

/* A [d0, d1, 1, 1] tensor operand of dtype `dt` (d0 or d1 may be 0: any positive size). */
static fa_status check_small(fa_context *ctx, const char *name, const fa_tensor *t, fa_dtype dt, int64_t d0,
                             int64_t d1, const char *from, fa_view *view) {
  tensor_rule r = {name, dt, dt == FA_I32 ? "an index tensor's fixed" : "ALiBi slopes' fixed", {d0, d1, 1, 1},
                   {from, from, "", ""}, 0, index_dim_names};
  return check_tensor(ctx, &r, t, view, 0);
}

/* The block table ([B, max_pages] int32) and k's page shape; sets the capacity as seqlen_k. */
static fa_status check_pages(fa_context *ctx, const fa_attention_desc *desc, const fa_tensor *k, fa_problem *p) {
  fa_status st = check_small(ctx, "desc->block_table", desc->block_table, FA_I32, p->batch, 0, "q's batch",
                             &p->block_table);
  if (st != FA_SUCCESS) return st;
  p->page_size = k->shape[1];
  p->num_pages = k->shape[0];
  p->max_pages = desc->block_table->shape[1];
  if (p->page_size % 16)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT,
                   "k: page size (shape[1]) is %lld with a block_table; it must be a multiple of 16",
                   (long long)p->page_size);
  if (p->max_pages > INT32_MAX / p->page_size)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "desc->block_table: %lld pages of %lld keys exceed 2^31 keys",
                   (long long)p->max_pages, (long long)p->page_size);
  p->seqlen_k = p->max_pages * p->page_size;
  return FA_SUCCESS;
}

/* Varlen offsets: cu_seqlens_q and cu_seqlens_k [seqs + 1] within q's and k's token axes, non-decreasing;
 * max_seqlen_q from them (or the caller's, when trusted). */
static fa_status check_varlen(fa_context *ctx, const fa_attention_desc *desc, fa_problem *p) {
  if (!desc->cu_seqlens_q || !desc->cu_seqlens_k)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "desc->%s: NULL, but %s is set (varlen takes both)",
                   desc->cu_seqlens_q ? "cu_seqlens_k" : "cu_seqlens_q",
                   desc->cu_seqlens_q ? "cu_seqlens_q" : "cu_seqlens_k");
  if (desc->seqlens_k || desc->block_table)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "desc->cu_seqlens_q: varlen does not combine with %s yet",
                   desc->seqlens_k ? "seqlens_k" : "block_table");
  if (p->batch != 1)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT,
                   "q: batch (shape[0]) is %lld; with cu_seqlens_q the sequences are packed along one token axis (batch 1)",
                   (long long)p->batch);
  fa_status st;
  const int64_t n = desc->cu_seqlens_q->shape[0];
  if (n < 2)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "desc->cu_seqlens_q: %lld offsets; B + 1 >= 2 are needed", (long long)n);
  if ((st = check_small(ctx, "desc->cu_seqlens_q", desc->cu_seqlens_q, FA_I32, n, 1, "", &p->cu_seqlens_q)) != FA_SUCCESS ||
      (st = check_small(ctx, "desc->cu_seqlens_k", desc->cu_seqlens_k, FA_I32, n, 1, "cu_seqlens_q's B + 1",
                        &p->cu_seqlens_k)) != FA_SUCCESS)
    return st;
  p->seqs = n - 1;
  p->max_seqlen_q = desc->max_seqlen_q;
  /* the bound for trusted offsets; the longest one when they are read below */
  p->max_seqlen_k = desc->max_seqlen_k ? desc->max_seqlen_k : p->seqlen_k;
  if (desc->max_seqlen_q < 0 || desc->max_seqlen_q > p->seqlen_q)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "desc->max_seqlen_q: %lld, outside 0 .. q's %lld tokens",
                   (long long)desc->max_seqlen_q, (long long)p->seqlen_q);
  if (desc->max_seqlen_k < 0 || desc->max_seqlen_k > p->seqlen_k)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "desc->max_seqlen_k: %lld, outside 0 .. k's %lld tokens",
                   (long long)desc->max_seqlen_k, (long long)p->seqlen_k);
  if (desc->trust_indices) {
    if (!p->max_seqlen_q)
      return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "desc->max_seqlen_q: 0, but trust_indices needs it given");
    return FA_SUCCESS;
  }
  const char *names[2] = {"desc->cu_seqlens_q", "desc->cu_seqlens_k"};
  const fa_view *views[2] = {&p->cu_seqlens_q, &p->cu_seqlens_k};
  const int64_t totals[2] = {p->seqlen_q, p->seqlen_k};
  int64_t longest = 0, longest_k = 0;
  for (int x = 0; x < 2 && st == FA_SUCCESS; x++) {
    int32_t *cu = read_indices(ctx, names[x], views[x], n, 1);
    if (!cu) return FA_ERROR_DEVICE;
    for (int64_t b = 0; b < n && st == FA_SUCCESS; b++) {
      if (cu[b] < 0 || cu[b] > totals[x] || (b && cu[b] < cu[b - 1]))
        st = fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT,
                     "%s: offset %lld is %d (offsets must not decrease and lie in 0 .. the %lld tokens of %s)",
                     names[x], (long long)b, (int)cu[b], (long long)totals[x], x ? "k" : "q");
      else if (b && !x && cu[b] - cu[b - 1] > longest)
        longest = cu[b] - cu[b - 1];
      else if (b && x && cu[b] - cu[b - 1] > longest_k)
        longest_k = cu[b] - cu[b - 1];
    }
    free(cu);
  }
  if (st == FA_SUCCESS && !p->max_seqlen_q) p->max_seqlen_q = longest;
  if (st == FA_SUCCESS && !desc->max_seqlen_k) p->max_seqlen_k = longest_k;
  if (st == FA_SUCCESS && longest > p->max_seqlen_q)
    st = fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "desc->max_seqlen_q: %lld, below the longest query sequence (%lld)",
                 (long long)p->max_seqlen_q, (long long)longest);
  if (st == FA_SUCCESS && longest_k > p->max_seqlen_k)
    st = fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "desc->max_seqlen_k: %lld, below the longest key sequence (%lld)",
                 (long long)p->max_seqlen_k, (long long)longest_k);
  return st;
}

/* Every inference option of desc into p (k is already checked; with a block_table it holds pages). */
static fa_status check_inference(fa_context *ctx, const fa_attention_desc *desc, fa_problem *p) {
  fa_status st;
  if ((desc->cu_seqlens_q || desc->cu_seqlens_k) && (st = check_varlen(ctx, desc, p)) != FA_SUCCESS) return st;
  const int64_t seqs = p->cu_seqlens_q.buf ? p->seqs : p->batch; /* what ALiBi's [B, Hq] counts */
  if (desc->seqlens_k && (st = check_small(ctx, "desc->seqlens_k", desc->seqlens_k, FA_I32, p->batch, 1,
                                           "q's batch", &p->seqlens_k)) != FA_SUCCESS)
    return st;
  if (desc->window) {
    if (desc->window_left < -1 || desc->window_right < -1)
      return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "desc->%s: %lld (must be >= -1; -1 is unbounded)",
                     desc->window_left < -1 ? "window_left" : "window_right",
                     (long long)(desc->window_left < -1 ? desc->window_left : desc->window_right));
    p->window = 1;
    /* Beyond the cache's length a bound changes nothing; clamped, it fits the kernels' int. */
    p->window_left = desc->window_left > p->seqlen_k + p->seqlen_q ? p->seqlen_k + p->seqlen_q : desc->window_left;
    p->window_right = desc->window_right > p->seqlen_k + p->seqlen_q ? p->seqlen_k + p->seqlen_q : desc->window_right;
  }
  if (desc->alibi_slopes) {
    const fa_tensor *a = desc->alibi_slopes;
    if (a->shape[0] != 1 && a->shape[0] != seqs)
      return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT,
                     "desc->alibi_slopes: batch (shape[0]) is %lld, expected 1 or the %lld sequences",
                     (long long)a->shape[0], (long long)seqs);
    if ((st = check_small(ctx, "desc->alibi_slopes", a, FA_F32, 0, p->heads_q, "q's heads", &p->alibi)) !=
        FA_SUCCESS)
      return st;
    if (a->shape[0] == 1) p->alibi.stride[0] = 0;
  }
  const float cap = desc->softcap;
  if (!(cap >= 0.0f) || isinf(cap))
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "desc->softcap: %g (must be finite and >= 0; 0 is off)",
                   (double)cap);
  p->softcap = cap;
  if (desc->num_splits < 0)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "desc->num_splits: %d (must be >= 0; 0 lets the library choose)",
                   desc->num_splits);
  p->num_splits = desc->num_splits;
  if (fa_problem_inference(p)) {
    const char *other = desc->algo == FA_ALGO_STANDARD ? "the standard algorithm"
                        : p->mask.buf                  ? "a block mask"
                        : p->dropout_p > 0.0f          ? "dropout"
                                                       : NULL;
    if (other)
      return fa_fail(ctx, FA_ERROR_UNSUPPORTED,
                     "desc: seqlens_k, block_table, cu_seqlens, window, ALiBi and softcap do not combine with %s yet",
                     other);
  }
  if (!desc->trust_indices && (p->seqlens_k.buf || p->block_table.buf)) return check_index_values(ctx, p);
  return FA_SUCCESS;
}

/* Checks q, k, v, o (and lse when given or required) and fills the problem's shared part. */
static fa_status check_attention(fa_context *ctx, const fa_attention_desc *given, const fa_tensor *q,
                                 const fa_tensor *k, const fa_tensor *v, const fa_tensor *o, const fa_tensor *lse,
                                 int lse_required, int shape_only, fa_problem *p) {
  fa_status st;
  memset(p, 0, sizeof *p);
  fa_attention_desc full;
  const fa_attention_desc *desc = &full;
  if ((st = check_desc(ctx, given, &full)) != FA_SUCCESS) return st;
  if (!q) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "q: tensor is NULL");
  tensor_rule rq = rule("q", q->dtype, "q's", 0, 0, 0, 0, "");
  if ((st = check_tensor(ctx, &rq, q, &p->q, shape_only)) != FA_SUCCESS) return st;
  if (!valid_dtype(q->dtype))
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "q: dtype %s is for masks; attention takes f32, f16 or bf16",
                   fa_dtype_name(q->dtype));
  if ((st = check_head_dim(ctx, "q", q->shape[3])) != FA_SUCCESS) return st;
  p->dtype = q->dtype;
  p->batch = q->shape[0], p->seqlen_q = q->shape[1], p->heads_q = q->shape[2], p->head_dim = q->shape[3];

  if (!k) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "k: tensor is NULL");
  tensor_rule rk = rule("k", p->dtype, "q's", desc->block_table ? 0 : p->batch, 0, 0, p->head_dim, "in q");
  if (desc->block_table) rk.names = page_dim_names;
  if ((st = check_tensor(ctx, &rk, k, &p->k, shape_only)) != FA_SUCCESS) return st;
  p->seqlen_k = k->shape[1], p->heads_kv = k->shape[2];
  if (p->heads_q % p->heads_kv)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "k: %lld key/value heads do not divide q's %lld heads",
                   (long long)p->heads_kv, (long long)p->heads_q);
  tensor_rule rv = rule("v", p->dtype, "q's", k->shape[0], p->seqlen_k, p->heads_kv, p->head_dim, "in k");
  rv.names = rk.names;
  if ((st = check_tensor(ctx, &rv, v, &p->v, shape_only)) != FA_SUCCESS) return st;
  if (desc->block_table && (st = check_pages(ctx, desc, k, p)) != FA_SUCCESS) return st;
  tensor_rule ro = rule("o", p->dtype, "q's", p->batch, p->seqlen_q, p->heads_q, p->head_dim, "in q");
  if ((st = check_tensor(ctx, &ro, o, &p->o, shape_only)) != FA_SUCCESS) return st;
  if (lse || lse_required) {
    tensor_rule rl = rule("lse", FA_F32, "lse's fixed", p->batch, p->heads_q, p->seqlen_q, 1,
                          "[B, Hq, Sq, 1] from q");
    rl.contiguous_last = 0;
    rl.names = lse_dim_names;
    if (!lse) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "lse: tensor is NULL, and the backward pass needs it");
    if ((st = check_tensor(ctx, &rl, lse, &p->lse, shape_only)) != FA_SUCCESS) return st;
  }
  if (desc->block_mask && (st = check_block_mask(ctx, desc, p, shape_only)) != FA_SUCCESS) return st;
  if ((st = check_dropout(ctx, desc, p)) != FA_SUCCESS) return st;
  if (desc->algo == FA_ALGO_STANDARD && (p->mask.buf || p->dropout_p > 0.0f))
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "desc->algo: the standard algorithm has no %s; use FA_ALGO_FLASH",
                   p->mask.buf ? "block mask" : "dropout");
  if ((st = check_inference(ctx, desc, p)) != FA_SUCCESS) return st;
  p->algo = desc->algo;
  p->causal = desc->causal != 0;
  p->deterministic = desc->deterministic != 0;
  p->scale = desc->softmax_scale > 0 ? desc->softmax_scale : (float)(1.0 / sqrt((double)p->head_dim));
  /* The kernels compute scale · log2 e · q·k in float: past this bound, inputs of f16's range (|x| <= 65504)
   * overflow it to inf and every output becomes NaN. */
  const double max_scale = FLT_MAX / (1.4426950408889634 * (double)p->head_dim * 65504.0 * 65504.0);
  if ((double)p->scale > max_scale)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT,
                   "desc->softmax_scale: %g is above %g, the largest for head dim %lld whose scaled scores stay finite "
                   "in float (scale * log2(e) * q.k with |q|, |k| <= 65504)",
                   (double)p->scale, max_scale, (long long)p->head_dim);
  return FA_SUCCESS;
}

/* One operand of a call, for the aliasing rule: outputs share no element with themselves or anything else. */
typedef struct operand {
  const char *name;
  const fa_tensor *t; /* NULL: absent (lse in a forward without it, no block mask) */
  int output;
} operand;

static fa_status check_aliasing(fa_context *ctx, const operand *ops, int n) {
  for (int i = 0; i < n; i++) {
    if (!ops[i].t || !ops[i].output) continue;
    const fa_tensor *t = ops[i].t;
    if (fa_tensor_self_overlaps(t))
      return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT,
                     "%s: strides [%lld, %lld, %lld, %lld] over shape [%lld, %lld, %lld, %lld] let two elements share "
                     "memory (an output needs distinct elements, each dimension's stride past the smaller ones' span)",
                     ops[i].name, (long long)t->stride[0], (long long)t->stride[1], (long long)t->stride[2],
                     (long long)t->stride[3], (long long)t->shape[0], (long long)t->shape[1], (long long)t->shape[2],
                     (long long)t->shape[3]);
    for (int j = 0; j < n; j++) {
      if (j == i || !ops[j].t || (ops[j].output && j < i)) continue;
      if (fa_tensors_overlap(t, ops[j].t))
        return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT,
                       "%s: shares memory with %s (at byte offsets %zu and %zu); outputs must not overlap "
                       "any operand, in-place is not supported",
                       ops[i].name, ops[j].name, t->offset, ops[j].t->offset);
    }
  }
  return FA_SUCCESS;
}

static fa_status forward_locked(fa_context *ctx, const fa_attention_desc *desc, const fa_tensor *q,
                                const fa_tensor *k, const fa_tensor *v, const fa_tensor *o, const fa_tensor *lse) {
  fa_problem p;
  fa_status st = check_attention(ctx, desc, q, k, v, o, lse, 0, 0, &p);
  if (st != FA_SUCCESS) return st;
  const operand ops[] = {{"q", q, 0}, {"k", k, 0}, {"v", v, 0}, {"desc->block_mask", desc->block_mask, 0},
                         {"o", o, 1}, {"lse", lse, 1}};
  if ((st = check_aliasing(ctx, ops, 6)) != FA_SUCCESS) return st;
  return ctx->ops->forward(ctx, &p);
}

fa_status fa_forward(fa_context *ctx, const fa_attention_desc *desc, const fa_tensor *q, const fa_tensor *k,
                     const fa_tensor *v, const fa_tensor *o, const fa_tensor *lse) {
  if (!ctx) return FA_ERROR_INVALID_ARGUMENT;
  lock(ctx);
  return unlock(ctx, forward_locked(ctx, desc, q, k, v, o, lse));
}

/* Checks every operand of a backward call and fills the problem. */
static fa_status check_backward(fa_context *ctx, const fa_attention_desc *desc, const fa_tensor *q,
                                const fa_tensor *k, const fa_tensor *v, const fa_tensor *o, const fa_tensor *lse,
                                const fa_tensor *dout, const fa_tensor *dq, const fa_tensor *dk, const fa_tensor *dv,
                                int shape_only, fa_problem *p) {
  fa_status st = check_attention(ctx, desc, q, k, v, o, lse, 1, shape_only, p);
  if (st != FA_SUCCESS) return st;
  if (p->seqlens_k.buf || p->block_table.buf)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED,
                   "fa_backward: %s (a KV cache's lengths and pages) is forward-only; varlen (cu_seqlens), window, "
                   "ALiBi and softcap have a backward",
                   p->seqlens_k.buf ? "seqlens_k" : "block_table");
  tensor_rule rdo = rule("dout", p->dtype, "q's", p->batch, p->seqlen_q, p->heads_q, p->head_dim, "in o");
  tensor_rule rdq = rule("dq", p->dtype, "q's", p->batch, p->seqlen_q, p->heads_q, p->head_dim, "in q");
  tensor_rule rdk = rule("dk", p->dtype, "q's", p->batch, p->seqlen_k, p->heads_kv, p->head_dim, "in k");
  tensor_rule rdv = rule("dv", p->dtype, "q's", p->batch, p->seqlen_k, p->heads_kv, p->head_dim, "in v");
  if ((st = check_tensor(ctx, &rdo, dout, &p->dout, shape_only)) != FA_SUCCESS) return st;
  if ((st = check_tensor(ctx, &rdq, dq, &p->dq, shape_only)) != FA_SUCCESS) return st;
  if ((st = check_tensor(ctx, &rdk, dk, &p->dk, shape_only)) != FA_SUCCESS) return st;
  return check_tensor(ctx, &rdv, dv, &p->dv, shape_only);
}

static fa_status backward_locked(fa_context *ctx, const fa_attention_desc *desc, const fa_tensor *q,
                                 const fa_tensor *k, const fa_tensor *v, const fa_tensor *o, const fa_tensor *lse,
                                 const fa_tensor *dout, const fa_tensor *dq, const fa_tensor *dk,
                                 const fa_tensor *dv) {
  fa_problem p;
  fa_status st = check_backward(ctx, desc, q, k, v, o, lse, dout, dq, dk, dv, 0, &p);
  if (st != FA_SUCCESS) return st;
  const operand ops[] = {{"q", q, 0}, {"k", k, 0}, {"v", v, 0}, {"o", o, 0}, {"lse", lse, 0}, {"dout", dout, 0},
                         {"desc->block_mask", desc->block_mask, 0}, {"dq", dq, 1}, {"dk", dk, 1}, {"dv", dv, 1}};
  if ((st = check_aliasing(ctx, ops, 10)) != FA_SUCCESS) return st;
  return ctx->ops->backward(ctx, &p);
}

fa_status fa_backward(fa_context *ctx, const fa_attention_desc *desc, const fa_tensor *q, const fa_tensor *k,
                      const fa_tensor *v, const fa_tensor *o, const fa_tensor *lse, const fa_tensor *dout,
                      const fa_tensor *dq, const fa_tensor *dk, const fa_tensor *dv) {
  if (!ctx) return FA_ERROR_INVALID_ARGUMENT;
  lock(ctx);
  return unlock(ctx, backward_locked(ctx, desc, q, k, v, o, lse, dout, dq, dk, dv));
}

/* The workspace queries check like the calls (a tensor's buf may be NULL) and ask the backend, which plans
 * without touching the device. */
static fa_status workspace_size(fa_context *ctx, const fa_problem *p, int backward, size_t *bytes) {
  if (!ctx->ops->workspace_size)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "the %s backend does not report its workspace", ctx->ops->name);
  return ctx->ops->workspace_size(ctx, p, backward, bytes);
}

fa_status fa_forward_workspace_size(fa_context *ctx, const fa_attention_desc *desc, const fa_tensor *q,
                                    const fa_tensor *k, const fa_tensor *v, const fa_tensor *o, const fa_tensor *lse,
                                    size_t *bytes) {
  if (!ctx) return FA_ERROR_INVALID_ARGUMENT;
  lock(ctx);
  if (!bytes) return unlock(ctx, fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "bytes: NULL"));
  *bytes = 0;
  fa_problem p;
  fa_status st = check_attention(ctx, desc, q, k, v, o, lse, 0, 1, &p);
  return unlock(ctx, st != FA_SUCCESS ? st : workspace_size(ctx, &p, 0, bytes));
}

fa_status fa_backward_workspace_size(fa_context *ctx, const fa_attention_desc *desc, const fa_tensor *q,
                                     const fa_tensor *k, const fa_tensor *v, const fa_tensor *o, const fa_tensor *lse,
                                     const fa_tensor *dout, const fa_tensor *dq, const fa_tensor *dk,
                                     const fa_tensor *dv, size_t *bytes) {
  if (!ctx) return FA_ERROR_INVALID_ARGUMENT;
  lock(ctx);
  if (!bytes) return unlock(ctx, fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "bytes: NULL"));
  *bytes = 0;
  fa_problem p;
  fa_status st = check_backward(ctx, desc, q, k, v, o, lse, dout, dq, dk, dv, 1, &p);
  return unlock(ctx, st != FA_SUCCESS ? st : workspace_size(ctx, &p, 1, bytes));
}

static fa_status dropout_mask_locked(fa_context *ctx, const fa_attention_desc *given, const fa_tensor *mask) {
  fa_problem p;
  memset(&p, 0, sizeof p);
  fa_attention_desc full;
  const fa_attention_desc *desc = &full;
  fa_status st = check_desc(ctx, given, &full);
  if (st != FA_SUCCESS) return st;
  tensor_rule r = {"mask", FA_U8, "a dropout mask's fixed", {0, 0, 0, 0}, {"", "", "", ""}, 0,
                   keep_dim_names};
  if ((st = check_tensor(ctx, &r, mask, &p.keep, 0)) != FA_SUCCESS) return st;
  p.batch = mask->shape[0], p.heads_q = mask->shape[1], p.seqlen_q = mask->shape[2], p.seqlen_k = mask->shape[3];
  if ((st = check_dropout(ctx, desc, &p)) != FA_SUCCESS) return st;
  const operand ops[] = {{"mask", mask, 1}};
  if ((st = check_aliasing(ctx, ops, 1)) != FA_SUCCESS) return st;
  if (!ctx->ops->dropout_mask)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "fa_dropout_mask: the %s backend cannot write the mask yet",
                   ctx->ops->name);
  return ctx->ops->dropout_mask(ctx, &p);
}

fa_status fa_dropout_mask(fa_context *ctx, const fa_attention_desc *given, const fa_tensor *mask) {
  if (!ctx) return FA_ERROR_INVALID_ARGUMENT;
  lock(ctx);
  return unlock(ctx, dropout_mask_locked(ctx, given, mask));
}

/* The view of part `last` of a run of parts `stride` elements apart, for checking that it fits the buffer. */
static fa_status last_part(fa_context *ctx, const char *name, const fa_tensor *t, int64_t last, int64_t stride,
                           fa_tensor *out) {
  int64_t step, bytes;
  *out = *t;
  if (__builtin_mul_overflow(last, stride, &step) ||
      __builtin_mul_overflow(step, (int64_t)fa_dtype_size(t->dtype), &bytes) ||
      (uint64_t)bytes > (uint64_t)SIZE_MAX - t->offset)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "%s: part %lld at %lld x %lld elements overflows", name,
                   (long long)last, (long long)last, (long long)stride);
  out->offset = t->offset + (size_t)bytes;
  return FA_SUCCESS;
}

static fa_status combine_locked(fa_context *ctx, int64_t num_parts, const fa_tensor *o_parts, int64_t o_part_stride,
                     const fa_tensor *lse_parts, int64_t lse_part_stride, const fa_tensor *o, const fa_tensor *lse) {
  fa_problem p;
  memset(&p, 0, sizeof p);
  fa_status st;
  if (num_parts < 1 || num_parts > INT32_MAX)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "num_parts: %lld (must be 1 .. 2^31-1)", (long long)num_parts);
  if (o_part_stride < 0 || lse_part_stride < 0)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "%s: %lld, must be >= 0",
                   o_part_stride < 0 ? "o_part_stride" : "lse_part_stride",
                   (long long)(o_part_stride < 0 ? o_part_stride : lse_part_stride));
  if (!o_parts) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "o_parts: tensor is NULL");
  if (!valid_dtype(o_parts->dtype))
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "o_parts: dtype %s; partial outputs are f32, f16 or bf16",
                   fa_dtype_name(o_parts->dtype));
  tensor_rule rp = rule("o_parts", o_parts->dtype, "o_parts'", 0, 0, 0, 0, "");
  fa_tensor last;
  if ((st = check_tensor(ctx, &rp, o_parts, &p.o_parts, 0)) != FA_SUCCESS) return st;
  if ((st = last_part(ctx, "o_parts", o_parts, num_parts - 1, o_part_stride, &last)) != FA_SUCCESS) return st;
  fa_view unused;
  rp.name = "o_parts (its last part)";
  if ((st = check_tensor(ctx, &rp, &last, &unused, 0)) != FA_SUCCESS) return st;
  p.parts_dtype = o_parts->dtype;
  p.batch = o_parts->shape[0], p.seqlen_q = o_parts->shape[1], p.heads_q = o_parts->shape[2];
  p.head_dim = o_parts->shape[3];
  if ((st = check_head_dim(ctx, "o_parts", p.head_dim)) != FA_SUCCESS) return st;
  tensor_rule rl = rule("lse_parts", FA_F32, "lse's fixed", p.batch, p.heads_q, p.seqlen_q, 1,
                        "[B, Hq, Sq, 1] from o_parts");
  rl.contiguous_last = 0;
  rl.names = lse_dim_names;
  if ((st = check_tensor(ctx, &rl, lse_parts, &p.lse_parts, 0)) != FA_SUCCESS) return st;
  if ((st = last_part(ctx, "lse_parts", lse_parts, num_parts - 1, lse_part_stride, &last)) != FA_SUCCESS) return st;
  rl.name = "lse_parts (its last part)";
  if ((st = check_tensor(ctx, &rl, &last, &unused, 0)) != FA_SUCCESS) return st;
  if (!o) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "o: tensor is NULL");
  if (!valid_dtype(o->dtype))
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "o: dtype %s; the output is f32, f16 or bf16",
                   fa_dtype_name(o->dtype));
  tensor_rule ro = rule("o", o->dtype, "o's", p.batch, p.seqlen_q, p.heads_q, p.head_dim, "in o_parts");
  if ((st = check_tensor(ctx, &ro, o, &p.o, 0)) != FA_SUCCESS) return st;
  p.dtype = o->dtype;
  if (lse) {
    rl.name = "lse";
    rl.shape_from[0] = rl.shape_from[1] = rl.shape_from[2] = "[B, Hq, Sq, 1] from o_parts";
    if ((st = check_tensor(ctx, &rl, lse, &p.lse, 0)) != FA_SUCCESS) return st;
  }
  const int64_t o_span = (num_parts - 1) * o_part_stride * (int64_t)fa_dtype_size(o_parts->dtype);
  const int64_t l_span = (num_parts - 1) * lse_part_stride * 4;
  const fa_tensor *outs[2] = {o, lse};
  for (int i = 0; i < 2; i++)
    if (fa_spans_overlap(o_parts, (uint64_t)o_span, outs[i]) || fa_spans_overlap(lse_parts, (uint64_t)l_span, outs[i]))
      return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "%s: overlaps the parts it is computed from", i ? "lse" : "o");
  p.num_parts = num_parts, p.o_part_stride = o_part_stride, p.lse_part_stride = lse_part_stride;
  if (!ctx->ops->combine)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "fa_combine: the %s backend has no combine kernel", ctx->ops->name);
  return ctx->ops->combine(ctx, &p);
}

static fa_status kv_append_locked(fa_context *ctx, const fa_tensor *k_cache, const fa_tensor *v_cache,
                       const fa_tensor *block_table, const fa_tensor *seqlens_k, const fa_tensor *k_new,
                       const fa_tensor *v_new, int trust_indices) {
  fa_problem p;
  memset(&p, 0, sizeof p);
  fa_status st;
  if (!k_new) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "k_new: tensor is NULL");
  if (!valid_dtype(k_new->dtype))
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "k_new: dtype %s; keys are f32, f16 or bf16",
                   fa_dtype_name(k_new->dtype));
  tensor_rule rn = rule("k_new", k_new->dtype, "k_new's", 0, 0, 0, 0, "");
  if ((st = check_tensor(ctx, &rn, k_new, &p.k_new, 0)) != FA_SUCCESS) return st;
  p.dtype = k_new->dtype;
  p.batch = k_new->shape[0], p.seqlen_new = k_new->shape[1], p.heads_kv = k_new->shape[2];
  p.head_dim = k_new->shape[3];
  tensor_rule rv = rule("v_new", p.dtype, "k_new's", p.batch, p.seqlen_new, p.heads_kv, p.head_dim, "in k_new");
  if ((st = check_tensor(ctx, &rv, v_new, &p.v_new, 0)) != FA_SUCCESS) return st;
  if (!k_cache) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "k_cache: tensor is NULL");
  tensor_rule rk = rule("k_cache", p.dtype, "k_new's", block_table ? 0 : p.batch, 0, p.heads_kv, p.head_dim, "in k_new");
  if (block_table) rk.names = page_dim_names;
  if ((st = check_tensor(ctx, &rk, k_cache, &p.k, 0)) != FA_SUCCESS) return st;
  tensor_rule rc = rule("v_cache", p.dtype, "k_new's", k_cache->shape[0], k_cache->shape[1], p.heads_kv, p.head_dim,
                        "in k_cache");
  rc.names = rk.names;
  if ((st = check_tensor(ctx, &rc, v_cache, &p.v, 0)) != FA_SUCCESS) return st;
  p.seqlen_k = k_cache->shape[1];
  if (block_table) {
    fa_attention_desc d;
    memset(&d, 0, sizeof d);
    d.block_table = block_table;
    if ((st = check_pages(ctx, &d, k_cache, &p)) != FA_SUCCESS) return st;
  }
  if (!seqlens_k) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "seqlens_k: tensor is NULL (the append positions)");
  if ((st = check_small(ctx, "seqlens_k", seqlens_k, FA_I32, p.batch, 1, "k_new's batch", &p.seqlens_k)) != FA_SUCCESS)
    return st;
  const fa_tensor *outs[2] = {k_cache, v_cache}, *ins[4] = {k_new, v_new, seqlens_k, block_table};
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 4; j++)
      if (fa_spans_overlap(outs[i], 0, ins[j]))
        return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "%s: overlaps %s", i ? "v_cache" : "k_cache",
                       (const char *const[]){"k_new", "v_new", "seqlens_k", "block_table"}[j]);
  if (fa_spans_overlap(k_cache, 0, v_cache))
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "v_cache: overlaps k_cache");
  if (!trust_indices && (st = check_index_values(ctx, &p)) != FA_SUCCESS) return st;
  if (!ctx->ops->kv_append)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "fa_kv_append: the %s backend has no append kernel", ctx->ops->name);
  return ctx->ops->kv_append(ctx, &p);
}

fa_status fa_combine(fa_context *ctx, int64_t num_parts, const fa_tensor *o_parts, int64_t o_part_stride,
                     const fa_tensor *lse_parts, int64_t lse_part_stride, const fa_tensor *o, const fa_tensor *lse) {
  if (!ctx) return FA_ERROR_INVALID_ARGUMENT;
  lock(ctx);
  return unlock(ctx, combine_locked(ctx, num_parts, o_parts, o_part_stride, lse_parts, lse_part_stride, o, lse));
}

fa_status fa_kv_append(fa_context *ctx, const fa_tensor *k_cache, const fa_tensor *v_cache,
                       const fa_tensor *block_table, const fa_tensor *seqlens_k, const fa_tensor *k_new,
                       const fa_tensor *v_new, int trust_indices) {
  if (!ctx) return FA_ERROR_INVALID_ARGUMENT;
  lock(ctx);
  return unlock(ctx, kv_append_locked(ctx, k_cache, v_cache, block_table, seqlens_k, k_new, v_new, trust_indices));
}

/* ---- events ---- */

static fa_status event_record_locked(fa_context *ctx, fa_event **out) {
  if (!out) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "out: pointer for the new event is NULL");
  *out = NULL;
  fa_event *ev = calloc(1, sizeof *ev);
  if (!ev) return fa_fail(ctx, FA_ERROR_OUT_OF_MEMORY, "fa_event_record: out of host memory");
  fa_status st = ctx->ops->event_record(ctx, &ev->native);
  if (st != FA_SUCCESS) {
    free(ev);
    return st;
  }
  ev->ctx = ctx;
  *out = ev;
  return FA_SUCCESS;
}

fa_status fa_event_record(fa_context *ctx, fa_event **out) {
  if (!ctx) return FA_ERROR_INVALID_ARGUMENT;
  lock(ctx);
  return unlock(ctx, event_record_locked(ctx, out));
}

static fa_status event_elapsed_ms_locked(fa_context *ctx, const fa_event *start, const fa_event *end, double *ms) {
  if (!start || !end || !ms)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "%s: NULL", !start ? "start" : !end ? "end" : "ms");
  if (start->ctx != ctx || end->ctx != ctx)
    return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "%s: event recorded on another context",
                   start->ctx != ctx ? "start" : "end");
  return ctx->ops->event_elapsed(ctx, start->native, end->native, ms);
}

fa_status fa_event_elapsed_ms(fa_context *ctx, const fa_event *start, const fa_event *end, double *ms) {
  if (!ctx) return FA_ERROR_INVALID_ARGUMENT;
  lock(ctx);
  return unlock(ctx, event_elapsed_ms_locked(ctx, start, end, ms));
}

void fa_event_destroy(fa_event *ev) {
  if (!ev) return;
  lock(ev->ctx);
  ev->ctx->ops->event_destroy(ev->ctx, ev->native);
  unlock(ev->ctx, FA_SUCCESS);
  free(ev);
}

/* The internal backend interface: api.c validates a call once, fills a plain fa_problem and hands it to
 * one table of function pointers. Backends never re-validate what api.c checked. */
#ifndef FA_BACKEND_H
#define FA_BACKEND_H

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>

#include "flashattn.h"

#define FA_HIDDEN __attribute__((visibility("hidden")))

/* Device memory: a cl_mem (as a pointer value) or a CUdeviceptr, whichever the backend uses. */
struct fa_buffer {
  fa_context *ctx;
  size_t bytes;
  int owned; /* 0: wrapped caller memory, not freed by us */
  uint64_t native;
  /* Where its bytes live, for the aliasing checks: byte `base` of memory object `space`. Buffers in different
   * spaces never overlap. Default (native, 0); CUDA: (0, device address); an OpenCL sub-buffer: its parent
   * cl_mem and its origin in it. */
  uint64_t space, base;
};

/* One tensor operand after validation: where its first element is and how to step through it. */
typedef struct fa_view {
  const fa_buffer *buf; /* NULL: operand absent (lse in a forward call that did not ask for it) */
  int64_t offset;       /* in elements of the operand's dtype */
  int64_t stride[4];    /* elements; BSHD order (lse: B, H, S) */
} fa_view;

typedef struct fa_problem {
  fa_algo algo;
  fa_dtype dtype; /* of q, k, v, o and every gradient; lse is always float32 */
  int causal;
  int deterministic;
  float scale; /* resolved: never 0 */
  int64_t batch, seqlen_q, seqlen_k, heads_q, heads_kv, head_dim;
  fa_view q, k, v, o, lse;  /* forward and backward */
  fa_view dout, dq, dk, dv; /* backward only */
  /* Block-sparse mask (kernels/masks.h): mask.buf NULL when dense. uint8, so offset and strides are bytes;
   * stride[0] (batch) and stride[1] (head) are 0 where the mask broadcasts; stride[2] and [3] step one block
   * row and column. block_q, block_k: scores per block, at most seqlen_q and seqlen_k (api.c clamps longer
   * blocks, which cover the same scores), so they fit the kernels' int. */
  fa_view mask;
  int64_t block_q, block_k;
  /* Dropout (kernels/masks.h): off when dropout_p == 0. A score is dropped when its Philox word is below
   * dropout_threshold; kept ones are multiplied by dropout_scale = 1 / (1 - p). */
  float dropout_p, dropout_scale;
  uint32_t dropout_threshold, dropout_offset;
  uint64_t dropout_seed;
  /* fa_dropout_mask only: the uint8 [B, Hq, Sq, Sk] output (offset and strides in bytes). */
  fa_view keep;
  /* Inference (kernels/decode.h): seqlens_k int32 [B] (buf NULL: every sequence uses seqlen_k keys);
   * block_table int32 [B, max_pages] (buf NULL: contiguous k, v), with k and v then views of pages
   * [num_pages, page_size, Hkv, D] and seqlen_k = max_pages x page_size, the capacity. window: 1 applies
   * window_left / window_right (-1 unbounded). alibi float32 [B or 1, Hq] (stride[0] 0 when broadcast).
   * softcap 0: off. num_splits: 0 the backend chooses. */
  fa_view seqlens_k, block_table, alibi;
  int64_t page_size, max_pages, num_pages;
  int window;
  int64_t window_left, window_right;
  float softcap;
  int num_splits;
  /* Varlen: cu_seqlens_q, cu_seqlens_k int32 [seqs + 1] (buf NULL: not varlen); batch is then 1 (q's), the
   * sequences number seqs, the longest query has max_seqlen_q rows, the longest key sequence max_seqlen_k (k's
   * whole token axis when the offsets are trusted: not read then). */
  fa_view cu_seqlens_q, cu_seqlens_k;
  int64_t seqs, max_seqlen_q, max_seqlen_k;
  /* fa_combine only: num_parts partial results, o_parts (dtype parts_dtype) and lse_parts views of part 0,
   * part i that many elements further on; the results go to o (dtype) and lse (buf NULL: not wanted). */
  int64_t num_parts, o_part_stride, lse_part_stride;
  fa_dtype parts_dtype;
  fa_view o_parts, lse_parts;
  /* fa_kv_append only: k_new, v_new [B, seqlen_new, Hkv, D] go into k, v (the cache) from seqlens_k[b] on. */
  fa_view k_new, v_new;
  int64_t seqlen_new;
} fa_problem;

/* Whether a problem uses the inference options (none combines with a block mask, dropout or the standard
 * algorithm yet). */
static inline int fa_problem_inference(const fa_problem *p) {
  return p->seqlens_k.buf || p->block_table.buf || p->alibi.buf || p->window || p->softcap > 0.0f ||
         p->cu_seqlens_q.buf;
}

/* Whether it uses those the flash kernels serve, forward and backward (their FA_INFER variants, kernels/masks.h):
 * varlen, window, ALiBi, softcap. A KV cache's lengths and pages (seqlens_k, block_table) only the decode
 * kernels read. */
static inline int fa_problem_flash_infer(const fa_problem *p) {
  return p->alibi.buf || p->window || p->softcap > 0.0f || p->cu_seqlens_q.buf;
}
/* Whether a score modifier (softcap, ALiBi) is on. */
static inline int fa_problem_score_mods(const fa_problem *p) { return p->alibi.buf || p->softcap > 0.0f; }

/* The window bounds as the kernels take them: -1 unbounded (also without a window), else at most INT32_MAX. */
static inline int fa_problem_window_left(const fa_problem *p) {
  return !p->window || p->window_left < 0 ? -1 : p->window_left > INT32_MAX ? INT32_MAX : (int)p->window_left;
}
static inline int fa_problem_window_right(const fa_problem *p) {
  return !p->window || p->window_right < 0 ? -1 : p->window_right > INT32_MAX ? INT32_MAX : (int)p->window_right;
}

/* Query rows (Sq x Hq / Hkv) up to which a plain forward goes to the decode kernels. */
#define FA_DECODE_MAX_ROWS 16

typedef struct fa_backend_ops {
  fa_backend kind;
  const char *name;
  /* Devices visible now; on failure *count = 0 and msg (size msg_len) says why. */
  fa_status (*device_count)(int *count, char *msg, size_t msg_len);
  /* Fill ctx->impl and ctx->info for device `device`: api.c has checked it is below device_count; -1 asks
   * for the backend's default (OpenCL: the first GPU, else device 0; CUDA: device 0). With native_queue,
   * the device is the queue's or stream's and `device` is ignored. */
  fa_status (*create)(fa_context *ctx, int device, void *native_queue);
  void (*destroy)(fa_context *ctx);
  fa_status (*synchronize)(fa_context *ctx);
  fa_status (*tiles)(fa_context *ctx, int head_dim, fa_dtype dtype, fa_tiles *out);
  fa_status (*buffer_alloc)(fa_context *ctx, size_t bytes, uint64_t *native);
  void (*buffer_free)(fa_context *ctx, uint64_t native);
  /* Check a caller's memory object for fa_buffer_wrap (that it exists, belongs to this device and holds
   * `bytes`) and take a reference where the API has one. */
  fa_status (*buffer_wrap)(fa_context *ctx, uint64_t native, size_t bytes);
  void (*buffer_unwrap)(fa_context *ctx, uint64_t native);
  /* Optional: fill buf->space and buf->base (struct fa_buffer) for a new buffer; NULL keeps the default. */
  void (*buffer_origin)(fa_context *ctx, fa_buffer *buf);
  fa_status (*buffer_write)(fa_context *ctx, uint64_t native, size_t offset, const void *src, size_t bytes);
  fa_status (*buffer_read)(fa_context *ctx, uint64_t native, size_t offset, void *dst, size_t bytes);
  /* Device timing: record a marker (cl_event or CUevent) after the enqueued work; elapsed waits for end. */
  fa_status (*event_record)(fa_context *ctx, uint64_t *native);
  fa_status (*event_elapsed)(fa_context *ctx, uint64_t start, uint64_t end, double *ms);
  void (*event_destroy)(fa_context *ctx, uint64_t native);
  fa_status (*forward)(fa_context *ctx, const fa_problem *p);
  fa_status (*backward)(fa_context *ctx, const fa_problem *p);
  /* Write the dropout keep-mask of p (batch, heads_q, seqlen_q, seqlen_k and the dropout fields) to p->keep. */
  fa_status (*dropout_mask)(fa_context *ctx, const fa_problem *p);
  /* Device bytes of workspace that forward (backward = 0) or backward would take for p; p's buffers may be a
   * placeholder (native 0, the size of the address space): read shapes, strides and offsets, not memory. */
  fa_status (*workspace_size)(fa_context *ctx, const fa_problem *p, int backward, size_t *bytes);
  /* fa_combine: merge p->num_parts partial (o, lse) results into p->o and p->lse. */
  fa_status (*combine)(fa_context *ctx, const fa_problem *p);
  /* fa_kv_append: copy p->k_new, p->v_new into the cache p->k, p->v at the positions seqlens_k gives. */
  fa_status (*kv_append)(fa_context *ctx, const fa_problem *p);
} fa_backend_ops;

struct fa_event {
  fa_context *ctx;
  uint64_t native;
};

struct fa_context {
  const fa_backend_ops *ops;
  void *impl;
  fa_device_info info;
  size_t mem_current, mem_peak; /* bytes allocated through this context: buffers and workspace */
  char last_error[1024];
  /* Held by api.c around every call that reads or changes the context (argument checks, kernel arguments,
   * enqueueing, memory accounting), so threads that share a context take turns. */
  pthread_mutex_t lock;
};

/* Record `status` and a printf-style sentence as the context's last error; returns status. */
FA_HIDDEN fa_status fa_fail(fa_context *ctx, fa_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The same for calls that have no context (fa_context_create, the mask pattern helpers): the sentence goes to
 * this thread's fa_last_create_error(). */
FA_HIDDEN fa_status fa_fail_thread(fa_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Account device memory the backend allocates (+bytes) or frees (-bytes) for fa_context_memory(). */
FA_HIDDEN void fa_mem_track(fa_context *ctx, int64_t delta_bytes);

/* Before allocating `bytes` of device memory (a buffer or workspace): FA_ERROR_OUT_OF_MEMORY with a sentence
 * starting with `what` when it would take what the context has allocated past the device's reported size. */
FA_HIDDEN fa_status fa_mem_admit(fa_context *ctx, size_t bytes, const char *what);

/* Environment helpers shared by both backends. */
/* FLASHATTN_LOCAL_MEM_BYTES lowers the on-chip budget: min(device_bytes, env) when set and valid. */
FA_HIDDEN size_t fa_env_local_mem(size_t device_bytes);

/* Backend tables; a backend that was not built in has a NULL entry. */
extern FA_HIDDEN const fa_backend_ops fa_opencl_ops;
extern FA_HIDDEN const fa_backend_ops fa_cuda_ops;

#endif

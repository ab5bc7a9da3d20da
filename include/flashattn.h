/* flashattn: exact attention with the FlashAttention algorithm, on CUDA and OpenCL devices.
 *
 * O = softmax(scale · Q Kᵀ + mask) · V and its gradients, computed in tiles that fit the device's on-chip
 * memory, with an online softmax; the Sq × Sk score matrix never reaches device memory.
 *
 * Every function returns an fa_status; on error, fa_context_last_error() holds a sentence naming the
 * argument or the device call and the values involved, and no output has been written.
 *
 * What the library checks, for every call (an error before any work is enqueued):
 *   - NULL handles and pointers it needs; enum values outside their enum; struct_size (below);
 *   - every size, stride, offset and count: products and sums are computed with overflow checks, so a
 *     huge or negative value is an error, never a wrapped one; every tensor lies inside its buffer;
 *   - that buffers, events and tensors belong to the context they are used with;
 *   - outputs: no element shared with another operand or within themselves (see "Outputs and aliasing");
 *   - device memory: a request beyond what the device reports (fa_device_info.global_mem_bytes, less what
 *     the context already holds) is FA_ERROR_OUT_OF_MEMORY without asking the driver.
 * What the caller guarantees (the library cannot check it):
 *   - handles are live: not destroyed, not made up; a wrapped native object stays valid while wrapped;
 *   - host pointers hold the bytes the call is told (fa_buffer_write/read, the mask helpers), and a growable
 *     struct has struct_size bytes that may be read (written, for fa_device_info);
 *   - a native queue or stream given to fa_context_create is valid and outlives the context;
 *   - nothing else writes the buffers a call uses until its work is done (fa_synchronize), and
 *     fa_context_destroy() and the destroy functions run when no other thread uses the object;
 *   - the environment (FLASHATTN_*) is not changed while other threads run: it is read at context
 *     creation, and setenv() racing getenv() is undefined in POSIX.
 *
 * Threads: a context may be shared by threads. Every call on it holds the context's lock while it checks
 * its arguments, sets kernel arguments and enqueues, so calls from several threads take turns and each
 * behaves as if it ran alone (uncontended, the lock costs tens of nanoseconds; a forward call costs
 * microseconds). fa_context_last_error() is the message of the context's last failed call, from whichever
 * thread: threads that need their own messages use a context each. Separate contexts run independently.
 *
 * Outputs and aliasing: in-place computation is not supported. An output (o and lse of fa_forward; dq, dk,
 * dv of fa_backward; the mask of fa_dropout_mask) must share no element with any other operand of the call,
 * input or output, and no two of its own elements may share memory. The library proves this or refuses
 * the call with FA_ERROR_INVALID_ARGUMENT:
 *   - operands in different buffers are apart (CUDA: buffers whose device address ranges do not meet);
 *   - in one buffer, operands whose byte ranges do not meet are apart; operands of one dtype with the same
 *     strides that interleave (q, k, v or dq, dk, dv as views of one packed [B, S, 3, H, D] tensor) are
 *     accepted exactly when no element is shared; other interleavings are refused;
 *   - an output's own layout must, dimension by dimension in order of stride, step past the span of the
 *     smaller ones (every packed, padded or permuted layout does); a stride of 0 over a size above 1 is
 *     refused. Inputs may alias each other freely (q may be k).
 */
#ifndef FLASHATTN_H
#define FLASHATTN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(FLASHATTN_BUILDING) && defined(__GNUC__)
#define FA_API __attribute__((visibility("default")))
#else
#define FA_API
#endif

#define FLASHATTN_VERSION_MAJOR 0
#define FLASHATTN_VERSION_MINOR 2
#define FLASHATTN_VERSION_PATCH 0

/*
 * Structs that grow: fa_context_options, fa_attention_desc and fa_device_info begin with struct_size,
 * the size of the struct as the caller's header declared it (sizeof). The library reads (or, for
 * fa_device_info, writes) only that many bytes, so a program built against an older header keeps working
 * with a newer library: fields it does not know are taken as zero, and zero always means "off" or "the
 * default". struct_size 0 stands for the struct of 0.2.0, the first version with struct_size (every field
 * above each struct's "grown since 0.2.0" line), so a zeroed struct (`= {0}`) reads every field it can set
 * today; a field a later version adds is read only when struct_size covers it. An explicit struct_size may
 * end after the first layout's fields (through dropout_offset in fa_attention_desc, tensor_cores in
 * fa_device_info): what lies past it reads as zero. A smaller one is refused.
 * A struct_size larger than this library's struct is accepted when the bytes this library does not know
 * are all zero, and refused with FA_ERROR_UNSUPPORTED otherwise (the caller asked for a feature this
 * library lacks). Initialise with fa_context_options_default(), fa_attention_desc_init() or
 * fa_device_info_init(), which set struct_size from the caller's own sizeof.
 */

/** Status of every call. */
typedef enum fa_status {
  FA_SUCCESS = 0,
  FA_ERROR_INVALID_ARGUMENT,    /* null pointer, bad shape, stride, dtype or option */
  FA_ERROR_UNSUPPORTED,         /* valid, but this backend or device cannot run it (say, head dim 512) */
  FA_ERROR_BACKEND_UNAVAILABLE, /* backend not built in, its driver absent, or no device */
  FA_ERROR_OUT_OF_MEMORY,
  FA_ERROR_DEVICE,              /* a driver or runtime call failed; the message has its code */
  FA_ERROR_KERNEL_BUILD,        /* run-time compilation failed; the message has the log's head */
} fa_status;

typedef enum fa_backend { FA_BACKEND_AUTO = 0, FA_BACKEND_CUDA, FA_BACKEND_OPENCL } fa_backend;
/** Element types. FA_U8 serves only masks (the block-sparse mask, the materialised dropout mask); FA_I32 only
 * indices (seqlens_k, block_table). */
typedef enum fa_dtype { FA_F32 = 0, FA_F16, FA_BF16, FA_U8, FA_I32 } fa_dtype;
/** FA_ALGO_STANDARD materialises the Sq × Sk scores in device memory (GEMM through CLBlast or cuBLAS). */
typedef enum fa_algo { FA_ALGO_FLASH = 0, FA_ALGO_STANDARD } fa_algo;

typedef struct fa_context fa_context; /* backend, device, stream or queue, compiled kernels, workspace */
typedef struct fa_buffer fa_buffer;   /* device memory owned by, or wrapped into, a context */

/** Largest head dimension any backend serves. */
#define FA_MAX_HEAD_DIM 256

/**
 * Version of the library that is loaded, as MAJOR * 10000 + MINOR * 100 + PATCH.
 * Compare with FLASHATTN_VERSION_* to detect a header/library mismatch.
 */
FA_API int fa_version(void);

/** The loaded library's version as "MAJOR.MINOR.PATCH". Never NULL. */
FA_API const char *fa_version_string(void);

/** A constant English name for a status ("FA_ERROR_INVALID_ARGUMENT"). Never NULL. */
FA_API const char *fa_status_string(fa_status s);

/** Name of a backend ("cuda", "opencl", "auto"). Never NULL. */
FA_API const char *fa_backend_name(fa_backend b);

/** Name of a dtype ("f32", "f16", "bf16", "u8", "i32"). Never NULL. */
FA_API const char *fa_dtype_name(fa_dtype d);

/** Bytes per element of a dtype (4, 2 or 1), 0 for a value outside the enum. */
FA_API size_t fa_dtype_size(fa_dtype d);

/**
 * Whether a backend was built into this library: 1 or 0. A built-in backend may still find no
 * driver or device at run time; fa_device_count() tells.
 */
FA_API int fa_backend_built(fa_backend b);

/**
 * Number of devices a backend sees now.
 * @param b      FA_BACKEND_CUDA or FA_BACKEND_OPENCL.
 * @param count  receives the number; 0 when the backend cannot run here.
 * @return FA_SUCCESS, FA_ERROR_INVALID_ARGUMENT (count NULL, b not a concrete backend) or
 *         FA_ERROR_BACKEND_UNAVAILABLE (not built in, driver absent), with *count set to 0.
 */
FA_API fa_status fa_device_count(fa_backend b, int *count);

/** Options for fa_context_create(). Fill with fa_context_options_default() and change what you need. */
typedef struct fa_context_options {
  size_t struct_size; /* sizeof(fa_context_options), or 0 for the base fields (see "Structs that grow") */
  fa_backend backend; /* FA_BACKEND_AUTO reads FLASHATTN_BACKEND (cuda|opencl|auto, default auto) */
  int device;         /* -1 reads FLASHATTN_DEVICE, default 0; else the device index within the backend */
  void *native_queue; /* optional: the caller's CUstream / cudaStream_t, or cl_command_queue */
  /* grown since 0.2.0: nothing yet */
} fa_context_options;

/**
 * Defaults: backend FA_BACKEND_AUTO, device -1, no native queue, struct_size = sizeof *opt (inline, so it
 * is the caller's sizeof). @param opt must not be NULL.
 */
static inline void fa_context_options_default(fa_context_options *opt) {
  memset(opt, 0, sizeof *opt);
  opt->struct_size = sizeof *opt;
  opt->backend = FA_BACKEND_AUTO;
  opt->device = -1;
}

/**
 * Create a context on one device.
 * @param opt  options, or NULL for fa_context_options_default().
 * @param out  receives the context; set to NULL on error.
 * With a native_queue, work is enqueued on the caller's stream or queue (the library retains a
 * cl_command_queue; a CUDA stream must outlive the context), and its device is the context's device.
 * @return FA_SUCCESS; FA_ERROR_BACKEND_UNAVAILABLE when the backend is not built in, has no driver or no
 *         such device; FA_ERROR_INVALID_ARGUMENT for an unknown FLASHATTN_BACKEND or FLASHATTN_DEVICE
 *         value. On error, fa_last_create_error() says why.
 */
FA_API fa_status fa_context_create(const fa_context_options *opt, fa_context **out);

/**
 * Why the last failed call of this thread that has no context failed: fa_context_create() or a mask
 * pattern helper ("" if none has failed). Never NULL.
 */
FA_API const char *fa_last_create_error(void);

/**
 * Destroy a context: waits for its work, frees its workspace and kernels. NULL is a no-op.
 * The caller guarantees no other thread uses the context or its buffers and events any more, and that
 * its buffers and events were destroyed first.
 */
FA_API void fa_context_destroy(fa_context *ctx);

/**
 * The sentence describing the last error on this context ("" if none). Never NULL, even for NULL ctx.
 * It lives in the context and changes with its next failed call (of any thread sharing it).
 */
FA_API const char *fa_context_last_error(const fa_context *ctx);

/** Tile sizes a kernel uses for one head dimension and dtype. */
typedef struct fa_tiles {
  int block_q;            /* Br: query rows per work-group / thread block */
  int block_k;            /* Bc: key rows per tile */
  int threads;            /* work-items / threads per group */
  size_t local_mem_bytes; /* on-chip memory one group uses */
} fa_tiles;

/** What a context runs on. Set struct_size before fa_context_info() (fa_device_info_init() does). */
typedef struct fa_device_info {
  size_t struct_size;            /* sizeof(fa_device_info), or 0 for the base fields: how much the library writes */
  fa_backend backend;
  int device_index;              /* within the backend */
  char name[256];                /* device name */
  char platform[256];            /* OpenCL platform name, or "CUDA <driver version>" */
  char driver_version[64];
  char api_version[64];          /* "OpenCL 3.0 ...", or "sm_90" */
  size_t local_mem_bytes;        /* on-chip memory the tiles are sized against (after FLASHATTN_LOCAL_MEM_BYTES) */
  size_t device_local_mem_bytes; /* on-chip memory per group as the device reports it */
  size_t global_mem_bytes;
  int compute_units;
  int max_work_group_size;
  int compute_capability;        /* CUDA: major * 10 + minor; OpenCL: 0 */
  int tensor_cores;              /* 1 when the flash kernels use matrix instructions for f16/bf16 */
  char kernels[512];             /* which kernel families serve this device, and when ("forward: ...; backward: ...") */
  char kernel_cache[512];        /* the on-disk kernel cache's directory, "off (...)", or "unusable: DIR why" */
  int events_host_clock;         /* 1: fa_event_* time with the host clock (an OpenCL queue without profiling) */
  /* grown since 0.2.0: nothing yet */
} fa_device_info;

/** Zero an fa_device_info and set struct_size to the caller's sizeof, before fa_context_info(). */
static inline void fa_device_info_init(fa_device_info *info) {
  memset(info, 0, sizeof *info);
  info->struct_size = sizeof *info;
}

/**
 * Describe the context's device: writes info's first info->struct_size bytes (the base fields when 0).
 * @return FA_ERROR_INVALID_ARGUMENT when ctx or info is NULL or struct_size is neither 0 nor at least the
 *         base fields' size.
 */
FA_API fa_status fa_context_info(const fa_context *ctx, fa_device_info *info);

/**
 * Tiles the forward flash kernel uses on this context for a head dimension and dtype.
 * @return FA_ERROR_UNSUPPORTED when the head dim is not served.
 */
FA_API fa_status fa_context_tiles(fa_context *ctx, int head_dim, fa_dtype dtype, fa_tiles *out);

/** Wait until all work enqueued on the context has finished. */
FA_API fa_status fa_synchronize(fa_context *ctx);

/**
 * Allocate device memory owned by the context. bytes must be > 0. Contents are undefined.
 * @return FA_ERROR_OUT_OF_MEMORY, before the driver is asked, when bytes and what the context already holds
 *         (fa_context_memory()) exceed the device's global_mem_bytes; or when the driver refuses. Memory
 *         other contexts or processes hold is not counted: the driver can still refuse below that bound.
 */
FA_API fa_status fa_buffer_create(fa_context *ctx, size_t bytes, fa_buffer **out);

/**
 * Wrap the caller's device memory without a copy: a CUdeviceptr (passed as (void *)(uintptr_t)ptr) for
 * CUDA, a cl_mem for OpenCL (retained until fa_buffer_destroy). bytes is how much of it may be used.
 * Checked: native not NULL, bytes > 0; OpenCL: that the cl_mem is one, of this context, holding bytes;
 * CUDA: that the pointer is device memory of this context holding bytes where the driver can tell. The
 * caller guarantees the memory stays allocated while wrapped.
 */
FA_API fa_status fa_buffer_wrap(fa_context *ctx, void *native, size_t bytes, fa_buffer **out);

/**
 * Copy host memory into a buffer; blocks until the copy is done. Checked: dst is this context's, and
 * [offset, offset + bytes) lies inside it (without overflow); src not NULL when bytes > 0. The caller
 * guarantees src holds bytes readable bytes.
 */
FA_API fa_status fa_buffer_write(fa_context *ctx, fa_buffer *dst, size_t offset, const void *src, size_t bytes);

/**
 * Copy a buffer into host memory; waits for work enqueued before it, then for the copy. Checked as
 * fa_buffer_write(); the caller guarantees dst holds bytes writable bytes. On error dst is untouched.
 */
FA_API fa_status fa_buffer_read(fa_context *ctx, const fa_buffer *src, size_t offset, void *dst, size_t bytes);

/** Size in bytes of a buffer, 0 for NULL. */
FA_API size_t fa_buffer_size(const fa_buffer *buf);

/**
 * Free a buffer (or release a wrapped one). Call before destroying its context. NULL is a no-op.
 * The caller guarantees no call still in use reads or writes it from another thread.
 */
FA_API void fa_buffer_destroy(fa_buffer *buf);

/**
 * A view of device memory. BSHD order: shape and stride per dimension, strides in elements.
 * The last dimension must be contiguous (stride 1). lse is [B, H, S] and uses shape[3] = 1.
 */
typedef struct fa_tensor {
  fa_buffer *buf;
  size_t offset; /* bytes into buf; a multiple of the element size */
  fa_dtype dtype;
  int64_t shape[4], stride[4];
} fa_tensor;

/**
 * Fill a tensor with a packed (contiguous, row-major) layout of the given shape. NULL t is a no-op. A stride
 * that does not fit int64 (the product of the inner sizes overflows) is set to INT64_MAX, which every call
 * then refuses as reaching past the buffer; shapes are not checked here but by the call that uses t.
 */
FA_API void fa_tensor_packed(fa_tensor *t, fa_buffer *buf, size_t offset, fa_dtype dtype,
                             int64_t d0, int64_t d1, int64_t d2, int64_t d3);

/**
 * What to compute. Start from fa_attention_desc_init() (or zero it and set struct_size = sizeof), then set
 * fields: zero means the default for each (dense, no dropout). A zeroed struct with struct_size 0 is read as
 * the struct of 0.2.0: every field below.
 *
 * Block-sparse attention (FlashAttention §3.3): block_mask is a uint8 tensor (dtype FA_U8, strides in
 * bytes, any layout) of shape [B or 1, Hq or 1, ceil(Sq / block_q), ceil(Sk / block_k)]; a size of 1 is
 * broadcast over batches or heads. Score (i, j) is masked when block (i / block_q, j / block_k) is 0, on
 * top of the causal mask. Work falls with the density: tiles whose blocks are all 0 are never loaded. Rows
 * left with no key get o = 0, lse = -inf and zero gradients. block_q and block_k are any positive sizes.
 *
 * Dropout on the attention probabilities (FlashAttention Algorithm 2): each probability is dropped with
 * probability dropout_p and the kept ones are scaled by 1 / (1 - dropout_p); lse is that of the softmax
 * before dropout. Which ones are dropped is a function of (dropout_seed, dropout_offset, batch, query head,
 * row, column) through Philox-4x32-10, so the backward pass regenerates the forward's mask, and the CUDA
 * and OpenCL backends drop the same scores. fa_dropout_mask() writes that mask out. Use a new offset (or
 * seed) for each call that needs fresh randomness. Both need the flash algorithm.
 *
 * Inference (grown since 0.2; FlashAttention-2's flash_attn_with_kvcache and flash_attn_varlen_func). Each is
 * off when zero or NULL. Where they run: seqlens_k and block_table (a KV cache's lengths and pages) on the
 * split-KV decode kernels, forward only; every other forward goes to those kernels when its query rows per
 * key/value head, Sq x (Hq / Hkv) (the longest sequence's with varlen), are at most 16 (8 on CUDA), and to the
 * flash kernels otherwise, which also run the backward of varlen, window, ALiBi and softcap (on Hopper, the
 * Hopper forward serves them for f16/bf16 tensors that suit TMA, and the sm_80 kernels their backward). On the
 * flash kernels a sliding window costs time in
 * proportion to the tiles it touches: key tiles outside a query block's band are never loaded, tiles inside
 * it skip the per-score test. The rules, written once for every kernel and the tests, are kernels/masks.h's:
 * - seqlens_k: int32 [B, 1, 1, 1], the keys in use per sequence (a KV cache's lengths): sequence b attends
 *   to keys 0 .. seqlens_k[b] - 1, each at most the cache's capacity (Sk, or max_pages x page_size), and the
 *   causal alignment and window use seqlens_k[b] as that sequence's Sk. NULL: every key.
 * - block_table: int32 [B, max_pages, 1, 1]: k and v are pages [num_pages, page_size, Hkv, D] (page_size a
 *   multiple of 16; strides as any tensor's) and key j of sequence b lives in row j % page_size of page
 *   block_table[b][j / page_size]. Pages may be in any order and shared. The cache holds max_pages x
 *   page_size keys per sequence.
 * - window: 1 applies a sliding window: query i (at diagonal position p = i + Sk - Sq) sees keys j with
 *   p - window_left <= j <= p + window_right; -1 is unbounded on that side (FlashAttention's convention).
 *   Key tiles outside the window are never loaded.
 * - alibi_slopes: float32 [B or 1, Hq, 1, 1]: score (i, j) of head h gets - slope[h] x |p - j| added after
 *   the scale (and the softcap). It moves P, not the gradients' form: dS is that of the biased score.
 * - softcap: > 0 replaces each scaled score s by softcap x tanh(s / softcap) (Gemma 2, Grok); the backward
 *   multiplies dS by its derivative 1 - tanh^2(s / softcap).
 * - num_splits: the keys of each sequence are split across this many groups whose partial outputs are
 *   merged by fa_combine()'s kernel; 0 lets the library choose from the device's SM / compute-unit count
 *   (FLASHATTN_NUM_SPLITS overrides that choice), 1 never splits.
 * - cu_seqlens_q, cu_seqlens_k: variable-length batches (FlashAttention's varlen): q, o are [1, total_q, Hq,
 *   D], k, v [1, total_k, Hkv, D] and lse [1, Hq, total_q, 1], sequence b's queries are rows
 *   cu_seqlens_q[b] .. cu_seqlens_q[b + 1] - 1 and its keys rows cu_seqlens_k[b] .. cu_seqlens_k[b + 1] - 1
 *   (offsets non-decreasing, from >= 0, at most the total); causal, window and ALiBi ([B or 1, Hq]) are per
 *   sequence. Rows of q outside every sequence are not written (nor, in the backward, those rows of dq and the
 *   rows of dk, dv outside every sequence). Both or neither; not with seqlens_k or block_table. max_seqlen_q
 *   sizes the launch, max_seqlen_k the backward's key grid (FlashAttention's max_seqlen_q and max_seqlen_k):
 *   0 reads them from the offsets; with trusted offsets max_seqlen_q is needed and max_seqlen_k 0 takes k's
 *   whole token axis (a grid of mostly idle blocks). Given values below the longest sequence are refused.
 * - trust_indices: 0 (the default) copies seqlens_k and block_table to the host and checks every value before
 *   any work is enqueued (one blocking read per call); 1 skips that, for callers that check themselves or
 *   capture graphs: the kernels then clamp a bad value into range instead of reading out of bounds.
 * The standard algorithm, block masks and dropout do not take these options yet, nor the backward seqlens_k and
 * block_table (FA_ERROR_UNSUPPORTED says which).
 */
typedef struct fa_attention_desc {
  size_t struct_size;  /* sizeof(fa_attention_desc), or 0 for the base fields (see "Structs that grow") */
  fa_algo algo;
  float softmax_scale; /* 0: 1/sqrt(head_dim); finite, >= 0 and at most FLT_MAX / (log2(e) * D * 65504^2)
                          (3.4e27 for D = 16, 2.1e26 for D = 256): beyond it, inputs in f16's range overflow the
                          float scores scale * log2(e) * q.k and every output would be NaN */
  int causal;          /* mask key j for query i when j > i + (Sk - Sq): bottom-right aligned */
  int deterministic;   /* backward: bit-identical gradients from run to run on one device */
  const fa_tensor *block_mask; /* NULL: dense */
  int64_t block_q, block_k;    /* query rows and keys per mask block; > 0 with a block_mask */
  float dropout_p;             /* in [0, 1); 0: no dropout */
  uint64_t dropout_seed;
  uint32_t dropout_offset;
  /* inference, see above */
  const fa_tensor *seqlens_k;        /* int32 [B, 1, 1, 1]; NULL: all keys */
  const fa_tensor *block_table;      /* int32 [B, max_pages, 1, 1]; NULL: contiguous k, v */
  int window;                        /* 1: sliding window of window_left / window_right keys */
  int64_t window_left, window_right; /* >= -1; -1: unbounded on that side */
  const fa_tensor *alibi_slopes;     /* float32 [B or 1, Hq, 1, 1]; NULL: no ALiBi */
  float softcap;                     /* >= 0; 0: off */
  int num_splits;                    /* >= 0; 0: chosen from the device */
  int trust_indices;                 /* 1: skip the host check of seqlens_k and block_table values */
  const fa_tensor *cu_seqlens_q, *cu_seqlens_k; /* int32 [B + 1, 1, 1, 1] each; NULL: padded batches */
  int64_t max_seqlen_q;              /* longest query sequence; 0: read from cu_seqlens_q (needed when trusted) */
  /* grown since 0.2.0 (read only when struct_size covers them) */
  int64_t max_seqlen_k;              /* longest key sequence; 0: read from cu_seqlens_k (trusted: k's whole axis) */
} fa_attention_desc;

/** Zero every field (dense flash attention, default scale) and set struct_size to the caller's sizeof. */
static inline void fa_attention_desc_init(fa_attention_desc *desc) {
  memset(desc, 0, sizeof *desc);
  desc->struct_size = sizeof *desc;
}

/**
 * Forward pass: o = softmax(scale · q kᵀ [causal mask]) v, and optionally the per-row log-sum-exp.
 * @param q    [B, Sq, Hq, D]
 * @param k,v  [B, Sk, Hkv, D], Hq a multiple of Hkv: query head h reads key/value head h / (Hq / Hkv)
 * @param o    [B, Sq, Hq, D], same dtype as q, k, v
 * @param lse  [B, Hq, Sq, 1] float32 (natural log, of the scaled scores), or NULL. A row whose keys are
 *             all masked gets o = 0 and lse = -inf.
 * Enqueues the work and returns; fa_synchronize() waits.
 * Checked: every field of desc (struct_size, enums, scale, block mask and dropout fields); each tensor's
 * buffer, context, dtype, shape against q's, strides (>= 0, stride[3] = 1 but for lse and masks) and extent
 * inside its buffer; that o and lse share no memory with any operand (in-place is refused; see "Outputs
 * and aliasing"). The caller guarantees the inputs are not written until the work is done.
 */
FA_API fa_status fa_forward(fa_context *ctx, const fa_attention_desc *desc, const fa_tensor *q,
                            const fa_tensor *k, const fa_tensor *v, const fa_tensor *o,
                            const fa_tensor *lse);

/**
 * Backward pass: dq, dk, dv from q, k, v, the forward's o and lse, and dout (the gradient of o),
 * recomputing the scores in tiles. Shapes as fa_forward(); dout like o; dq like q; dk, dv like k.
 * With GQA, dk and dv sum over the query heads that share a key/value head.
 *
 * Workspace (the context's, kept between calls and counted by fa_context_memory()), CUDA, at its peak:
 * 4·B·Hq·Sq·(D + 1) bytes on the sm_80 kernels (f16/bf16 on sm_80 and later; f32 deterministic: 4·B·Hq·Sq),
 * 4·B·Hq·Sq'·(64·⌈D/64⌉ + 2) on the Hopper kernels (Sq' = Sq rounded up to 64); with deterministic = 1 also
 * 4 bytes per head and 64 queries (times ⌈D/64⌉ on Hopper; with an inference option, 4 bytes per head and
 * query row). With varlen, on the sm_80 kernels Sq is q's token axis and B is 1; on the Hopper kernels B is
 * the number of sequences and Sq the longest query sequence. It is sized before the first launch and only
 * grows: a call whose workspace is already large enough neither allocates nor waits for the stream, so it
 * can be captured into a CUDA graph; a call that would grow it while the stream is being captured returns
 * FA_ERROR_INVALID_ARGUMENT (run it once before capturing). A grow never waits for the stream either.
 *
 * Checked as fa_forward(); lse is required; dq, dk and dv are the outputs (o, lse and dout are inputs here)
 * and share no memory with any operand or each other (dq, dk, dv interleaved in one packed tensor is fine).
 */
FA_API fa_status fa_backward(fa_context *ctx, const fa_attention_desc *desc, const fa_tensor *q,
                             const fa_tensor *k, const fa_tensor *v, const fa_tensor *o,
                             const fa_tensor *lse, const fa_tensor *dout, const fa_tensor *dq,
                             const fa_tensor *dk, const fa_tensor *dv);

/**
 * Device memory, in bytes, that fa_forward() with these arguments would take as the library's workspace
 * (beyond the tensors; kept by the context and reused by later calls, counted by fa_context_memory()).
 * The flash forward needs none; the standard algorithm holds its score matrices there. The arguments are
 * checked as fa_forward() checks them, except that a tensor's buf may be NULL: its shape, strides and
 * offset are then read alone, so the size can be asked before any memory is allocated. cuBLAS and CLBlast
 * may allocate scratch memory of their own on top.
 * @param bytes  receives the size; 0 on error.
 * @return FA_SUCCESS, or the status fa_forward() would return for these arguments (FA_ERROR_UNSUPPORTED where
 *         the backend cannot say yet: the message names the case).
 */
FA_API fa_status fa_forward_workspace_size(fa_context *ctx, const fa_attention_desc *desc, const fa_tensor *q,
                                           const fa_tensor *k, const fa_tensor *v, const fa_tensor *o,
                                           const fa_tensor *lse, size_t *bytes);

/** The same for fa_backward(): Di, the dQ accumulator or the standard algorithm's matrices. */
FA_API fa_status fa_backward_workspace_size(fa_context *ctx, const fa_attention_desc *desc, const fa_tensor *q,
                                            const fa_tensor *k, const fa_tensor *v, const fa_tensor *o,
                                            const fa_tensor *lse, const fa_tensor *dout, const fa_tensor *dq,
                                            const fa_tensor *dk, const fa_tensor *dv, size_t *bytes);

/**
 * Append new tokens' keys and values to a KV cache, before an fa_forward() over it: for each sequence b,
 * k_new[b, t] and v_new[b, t] are written to cache position seqlens_k[b] + t (t < S_new), in the contiguous
 * cache [B, cap, Hkv, D] or, with a block_table, in row (position % page_size) of page
 * block_table[b][position / page_size] of the paged cache [num_pages, page_size, Hkv, D]. seqlens_k is not
 * changed: the caller adds S_new to it (then passes it to fa_forward, whose new query rows see the new keys).
 * @param k_cache, v_cache  the cache, as fa_forward() takes it (same dtype as k_new)
 * @param block_table       int32 [B, max_pages, 1, 1], or NULL for a contiguous cache
 * @param seqlens_k         int32 [B, 1, 1, 1]: the lengths before the append
 * @param k_new, v_new      [B, S_new, Hkv, D]
 * Every position written must lie within the cache's capacity and, when paged, on a valid page: checked on
 * the host (one blocking read of seqlens_k and block_table) unless trust_indices is 1, when bad values are
 * clamped instead (no write outside the cache, but a wrong row may be overwritten).
 */
FA_API fa_status fa_kv_append(fa_context *ctx, const fa_tensor *k_cache, const fa_tensor *v_cache,
                              const fa_tensor *block_table, const fa_tensor *seqlens_k, const fa_tensor *k_new,
                              const fa_tensor *v_new, int trust_indices);

/**
 * Merge partial attention results over disjoint key sets into the result over their union (the second
 * kernel of split-KV decoding, public for callers that split keys across devices or calls):
 *   lse = log sum_i exp(lse_i),  o = sum_i exp(lse_i - lse) o_i.
 * Parts whose lse is -inf (no key) contribute nothing; if every part's is, o = 0 and lse = -inf.
 * @param num_parts       number of parts, >= 1
 * @param o_parts         part 0's output, [B, Sq, Hq, D], f32, f16 or bf16; part i starts o_part_stride
 *                        elements after part 0 (in the same buffer), with the same strides
 * @param lse_parts       part 0's log-sum-exp, float32 [B, Hq, Sq, 1]; part i at i x lse_part_stride elements
 * @param o               [B, Sq, Hq, D], any of the three float dtypes (not necessarily o_parts')
 * @param lse             float32 [B, Hq, Sq, 1], or NULL
 * The outputs must not overlap the inputs.
 */
FA_API fa_status fa_combine(fa_context *ctx, int64_t num_parts, const fa_tensor *o_parts, int64_t o_part_stride,
                            const fa_tensor *lse_parts, int64_t lse_part_stride, const fa_tensor *o,
                            const fa_tensor *lse);

/**
 * Write the dropout mask that fa_forward() and fa_backward() apply for desc's dropout_p, dropout_seed and
 * dropout_offset: mask is FA_U8 [B, Hq, Sq, Sk] (strides in bytes; any layout), 1 where a probability is
 * kept and 0 where it is dropped. B, Hq, Sq and Sk are read from the mask's shape. With dropout_p = 0 every
 * element is 1. For tests and debugging: it materialises the Sq x Sk matrix that attention never stores.
 * Checked: desc's fields as fa_forward(), the mask's dtype, shape, extent, and that no two of its elements
 * share memory.
 */
FA_API fa_status fa_dropout_mask(fa_context *ctx, const fa_attention_desc *desc, const fa_tensor *mask);

/**
 * Fill a host block mask of rows x cols blocks (row-major, rows * cols bytes) with the fixed butterfly
 * pattern of Pixelated Butterfly (Chen et al. 2021), the one FlashAttention's block-sparse experiments use:
 * block (i, j) is 1 when i and j differ in at most one bit. Density about (1 + log2 n) / n for n x n.
 * @return FA_ERROR_INVALID_ARGUMENT for a NULL mask or sizes that are not positive (fa_last_create_error()
 *         says which).
 */
FA_API fa_status fa_block_mask_butterfly(uint8_t *mask, int64_t rows, int64_t cols);

/**
 * Fill a host block mask of rows x cols blocks (row-major) with a local + global pattern: block (i, j) is 1
 * when |i - j| <= window (a band around the diagonal), or i < global or j < global (the first `global`
 * block rows attend everywhere and are attended by every row).
 * @return FA_ERROR_INVALID_ARGUMENT for a NULL mask, sizes that are not positive, or a negative window or
 *         global.
 */
FA_API fa_status fa_block_mask_local_global(uint8_t *mask, int64_t rows, int64_t cols, int64_t window,
                                            int64_t global);

/** A point in a context's stream or queue, for timing device work (CUDA events, OpenCL profiling). */
typedef struct fa_event fa_event;

/**
 * Record an event after the work enqueued so far on the context. It completes when that work has.
 * Events time on any queue: with CUDA events, with OpenCL profiling, and on an OpenCL queue created without
 * CL_QUEUE_PROFILING_ENABLE with the host's monotonic clock, after waiting here for the queue to drain (so
 * the time includes launch gaps, and recording blocks); fa_device_info.events_host_clock is then 1.
 */
FA_API fa_status fa_event_record(fa_context *ctx, fa_event **out);

/**
 * Milliseconds between two events recorded on the same context, start before end (device time, or host
 * time where events_host_clock says so); waits for end to complete. Checked: neither is NULL, both were
 * recorded on ctx. The caller guarantees start was recorded before end.
 */
FA_API fa_status fa_event_elapsed_ms(fa_context *ctx, const fa_event *start, const fa_event *end, double *ms);

/** Free an event. NULL is a no-op. */
FA_API void fa_event_destroy(fa_event *ev);

/**
 * Device memory allocated through the context, now and at its peak since the last reset: buffers from
 * fa_buffer_create() plus the library's workspace (the standard algorithm's score matrices, the backward
 * pass's accumulators). Wrapped buffers are the caller's and are not counted.
 */
FA_API fa_status fa_context_memory(const fa_context *ctx, size_t *current_bytes, size_t *peak_bytes);

/** Reset the peak that fa_context_memory() reports to the current value. */
FA_API fa_status fa_context_reset_peak_memory(fa_context *ctx);

#ifdef __cplusplus
}
#endif

#endif /* FLASHATTN_H */

/* The OpenCL backend's shared state and helpers: one fa_cl per context (device, queue, device facts),
 * programs built from the kernels/ sources and cached in memory and on disk, kernels, and a scratch workspace.
 * Files depend one way: cl_context.c owns the state; the operations (cl_flash.c, cl_flash_nv.c, cl_backward.c,
 * cl_standard*.c, cl_dropout.c, cl_event.c) use it; cl_backend.c binds both into the backend table. */
#ifndef FA_CL_INTERNAL_H
#define FA_CL_INTERNAL_H

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>

#include "backend.h"
#include "cl_loader.h"
#include "cl_options.h"
#include "tiling.h"
#include "decode.h"

/* A built program and the kernels created from it, kept for the context's lifetime. */
typedef struct fa_cl_kernel_entry {
  struct fa_cl_kernel_entry *next;
  char *name;
  cl_kernel kernel;
} fa_cl_kernel_entry;

typedef struct fa_cl_program_entry {
  struct fa_cl_program_entry *next;
  char *key; /* "<files>|<options>" */
  cl_program program;
  fa_cl_kernel_entry *kernels;
} fa_cl_program_entry;

/* What the backend keeps in ctx->impl. */
typedef struct fa_cl {
  cl_platform_id platform;
  cl_device_id device;
  cl_context context;     /* ours, or the caller's queue's (retained either way) */
  cl_command_queue queue; /* ours, or the caller's native_queue (retained either way) */
  int profiling;          /* the queue has CL_QUEUE_PROFILING_ENABLE: events carry timestamps */
  int in_order;           /* 0 for a caller's out-of-order queue: fa_cl_launch() then puts barriers between commands */

  /* Device facts, queried once at create. */
  int is_cpu, is_gpu, is_nvidia, is_pocl;
  cl_ulong local_mem_bytes; /* CL_DEVICE_LOCAL_MEM_SIZE as reported (ctx->info has the budget after the env) */
  size_t max_group_size;
  cl_uint compute_units;
  cl_ulong global_mem_bytes, max_alloc_bytes;
  cl_uint mem_base_align_bits; /* CL_DEVICE_MEM_BASE_ADDR_ALIGN: sub-buffer origins must be multiples */
  int cl_c_major, cl_c_minor;  /* CL_DEVICE_OPENCL_C_VERSION */
  char device_name[256], vendor[256], platform_name[256], driver_version[64], device_version[128];

  fa_cl_program_entry *programs;

  /* Scratch device memory shared by the backend's calls; contents undefined between calls. */
  cl_mem workspace;
  size_t workspace_bytes;
} fa_cl;

static inline fa_cl *fa_cl_of(const fa_context *ctx) { return (fa_cl *)ctx->impl; }

/* The name of an OpenCL error code ("CL_OUT_OF_RESOURCES"), or "CL error <n>" for an unknown one
 * (the text then lives in a static buffer: fine for messages, not for keeping). */
FA_HIDDEN const char *fa_cl_error_name(cl_int err);

/* fa_fail() for a failed driver call: "<call>: <CL_NAME>", and FA_ERROR_OUT_OF_MEMORY for the
 * allocation codes, FA_ERROR_DEVICE for the rest. */
FA_HIDDEN fa_status fa_cl_fail(fa_context *ctx, const char *call, cl_int err);

/* A kernel from a program built from kernels/common.cl followed by `files` (space-separated names under
 * kernels/, e.g. "flash_fwd.cl"), with build `options` (the -D defines). Programs and kernels are built
 * once per context and kept until it is destroyed; the program binary is also kept in the on-disk cache
 * (src/cache.c). The kernel belongs to the context: do not release it. Since a context is used by one
 * thread at a time, setting its arguments and enqueueing it is safe.
 * Errors: FA_ERROR_KERNEL_BUILD with the build log's head, FA_ERROR_DEVICE, FA_ERROR_OUT_OF_MEMORY. */
FA_HIDDEN fa_status fa_cl_kernel(fa_context *ctx, const char *files, const char *options, const char *name,
                                 cl_kernel *out);

/* The context's scratch buffer, grown (never shrunk) to at least `bytes`, with its growth tracked by
 * fa_mem_track(). Valid until the next fa_cl_workspace() call or context destruction; contents undefined.
 * A call that needs several regions asks once for their sum and addresses them by offset (kernel args)
 * or with clCreateSubBuffer (origins aligned to mem_base_align_bits / 8).
 * Errors: FA_ERROR_OUT_OF_MEMORY when the device cannot hold it (bytes > CL_DEVICE_MAX_MEM_ALLOC_SIZE,
 * or an allocation failure). */
FA_HIDDEN fa_status fa_cl_workspace(fa_context *ctx, size_t bytes, cl_mem *out);

/* Free the workspace now (for example after a large standard-attention call). */
FA_HIDDEN void fa_cl_workspace_release(fa_context *ctx);

/* Enqueue an NDRange launch of `kernel` (arguments already set) on the context's queue, behind a barrier
 * when the queue is out of order, so that launches and copies of one context run in issue order.
 * `local` may be NULL. `what` names the kernel in the error sentence. */
FA_HIDDEN fa_status fa_cl_launch(fa_context *ctx, cl_kernel kernel, cl_uint dims, const size_t *global,
                                 const size_t *local, const char *what);

/* Set argument `index` of `kernel` from `size` bytes at `value` (NULL for a __local size), failing with a
 * sentence that names the kernel and the argument. */
FA_HIDDEN fa_status fa_cl_arg(fa_context *ctx, cl_kernel kernel, cl_uint index, size_t size, const void *value,
                              const char *what);

/* What the device offers one work-group, after FLASHATTN_LOCAL_MEM_BYTES, for the tiling functions. */
FA_HIDDEN void fa_cl_tile_limits(const fa_context *ctx, fa_tile_limits *lim);

/* Whether `kernel` as built runs groups of `local` work-items within the device's local memory
 * (CL_KERNEL_WORK_GROUP_SIZE, CL_KERNEL_LOCAL_MEM_SIZE). When it does not (*fits = 0), lowers lim's group size
 * or local budget by what the kernel lacks, so that the caller picks smaller tiles and builds again. */
FA_HIDDEN fa_status fa_cl_fit_kernel(fa_context *ctx, cl_kernel kernel, size_t local, fa_tile_limits *lim, int *fits);

/* A buffer's cl_mem. */
static inline cl_mem fa_cl_mem(const fa_buffer *buf) { return (cl_mem)(uintptr_t)buf->native; }

/* Launch sizes rounded up: the smallest multiple of `multiple` >= n. */
static inline size_t fa_cl_round_up(size_t n, size_t multiple) { return (n + multiple - 1) / multiple * multiple; }

/* cl_context.c: the state entries of the backend table (backend.h says what each does). */
FA_HIDDEN fa_status fa_cl_device_count(int *count, char *msg, size_t msg_len);
FA_HIDDEN fa_status fa_cl_create(fa_context *ctx, int device, void *native_queue);
FA_HIDDEN void fa_cl_destroy(fa_context *ctx);
FA_HIDDEN fa_status fa_cl_synchronize(fa_context *ctx);
FA_HIDDEN fa_status fa_cl_buffer_alloc(fa_context *ctx, size_t bytes, uint64_t *native);
FA_HIDDEN void fa_cl_buffer_free(fa_context *ctx, uint64_t native);
FA_HIDDEN fa_status fa_cl_buffer_wrap(fa_context *ctx, uint64_t native, size_t bytes);
FA_HIDDEN void fa_cl_buffer_unwrap(fa_context *ctx, uint64_t native);
FA_HIDDEN void fa_cl_buffer_origin(fa_context *ctx, fa_buffer *buf);
FA_HIDDEN fa_status fa_cl_buffer_write(fa_context *ctx, uint64_t native, size_t offset, const void *src, size_t bytes);
FA_HIDDEN fa_status fa_cl_buffer_read(fa_context *ctx, uint64_t native, size_t offset, void *dst, size_t bytes);

/* The operations, bound into the table by cl_backend.c. */
/* cl_flash.c: FA_ALGO_FLASH forward on the portable kernels (cl_backend.c chooses among the forwards). */
FA_HIDDEN fa_status fa_cl_flash_forward(fa_context *ctx, const fa_problem *p);
/* cl_flash.c: the forward tiles for a head dim (the table's .tiles entry). */
FA_HIDDEN fa_status fa_cl_tiles(fa_context *ctx, int head_dim, fa_dtype dtype, fa_tiles *out);
/* cl_flash.c: the whole argument list of flash_fwd.cl's and flash_fwd_nv.cl's kernels (views, lse, sizes,
 * scale, and FA_MASK_ARGS in the block-mask and dropout variants). */
FA_HIDDEN fa_status fa_cl_forward_args(fa_context *ctx, cl_kernel kern, const fa_problem *p, const char *what);
/* cl_dropout.c: fa_dropout_mask (the table's .dropout_mask entry): the keep bits of kernels/masks.h. */
FA_HIDDEN fa_status fa_cl_dropout_mask(fa_context *ctx, const fa_problem *p);
/* cl_flash_nv.c: f16/bf16 forward on NVIDIA tensor cores; FA_ERROR_UNSUPPORTED where it does not apply. */
FA_HIDDEN fa_status fa_cl_flash_nv_forward(fa_context *ctx, const fa_problem *p);
/* cl_backward_nv.c: the flash backward on NVIDIA tensor cores; FA_ERROR_UNSUPPORTED where it does not apply. */
FA_HIDDEN fa_status fa_cl_flash_nv_backward(fa_context *ctx, const fa_problem *p);
/* cl_flash_nv.c, shared by both passes. The tensor-core kernels a call may use (FLASHATTN_OPENCL_NV_TC and the
 * device): off (portable kernels), on (a failed build falls back), force (a failed build is an error),
 * emulate (the warp primitives in plain OpenCL C, on any device; a failed build is an error). */
typedef enum fa_cl_nv_mode { FA_CL_NV_OFF, FA_CL_NV_ON, FA_CL_NV_FORCE, FA_CL_NV_EMULATE } fa_cl_nv_mode;
FA_HIDDEN fa_cl_nv_mode fa_cl_nv_mode_of(const fa_cl *cl);
/* The head dim the tensor-core kernels pad D to (kernels/nv_warp.cl's DP), and the largest the backward serves. */
FA_HIDDEN int fa_cl_nv_dp(int d);
#define FA_CL_NV_BWD_MAX_D 256
/* Whether a view's offset and batch/seq/head strides are multiples of 8 elements (16-byte tile loads). */
FA_HIDDEN int fa_cl_nv_aligned8(const fa_view *view);
/* fa_cl_kernel for a tensor-core kernel, options with -DFA_NV_LDMATRIX and -DFA_NV_CPASYNC added (cl_flash_nv.c's
 * head). In mode on, a build the driver refuses is tried without those instructions; when none builds it returns
 * FA_ERROR_UNSUPPORTED (the caller falls back), remembers the device in *failed (later calls fall back at once)
 * and adds the reason to fa_device_info.kernels. */
FA_HIDDEN fa_status fa_cl_nv_kernel(fa_context *ctx, fa_cl_nv_mode mode, _Atomic uintptr_t *failed, const char *files,
                                    const char *options, const char *name, cl_kernel *out);
/* The fa_device_info.kernels sentence of a device. */
FA_HIDDEN void fa_cl_nv_describe(const fa_cl *cl, char *buf, size_t len);
/* cl_standard.c: FA_ALGO_STANDARD forward (scores in device memory, GEMMs through CLBlast). */
FA_HIDDEN fa_status fa_cl_standard_forward(fa_context *ctx, const fa_problem *p);
/* cl_standard_bwd.c: FA_ALGO_STANDARD backward (P, dP, dS in device memory, GEMMs through CLBlast). */
FA_HIDDEN fa_status fa_cl_standard_backward(fa_context *ctx, const fa_problem *p);
/* cl_backward.c: the backward pass (both algorithms: the flash one recomputes, by tiles). */
FA_HIDDEN fa_status fa_cl_backward(fa_context *ctx, const fa_problem *p);
/* Workspace bytes the calls above would take for p (the table's .workspace_size entry, in cl_backend.c):
 * cl_backward.c for both backward algorithms, cl_standard.c and cl_standard_bwd.c for the standard passes. */
FA_HIDDEN fa_status fa_cl_backward_workspace(fa_context *ctx, const fa_problem *p, size_t *bytes);
FA_HIDDEN fa_status fa_cl_standard_forward_workspace(fa_context *ctx, const fa_problem *p, size_t *bytes);
FA_HIDDEN fa_status fa_cl_standard_backward_workspace(fa_context *ctx, const fa_problem *p, size_t *bytes);
/* cl_decode.c: the decode kernels (split-KV, inference options) and fa_combine (the table's .combine). */
FA_HIDDEN fa_status fa_cl_decode(fa_context *ctx, const fa_problem *p);
FA_HIDDEN size_t fa_cl_decode_workspace(fa_context *ctx, const fa_problem *p);
FA_HIDDEN fa_status fa_cl_combine(fa_context *ctx, const fa_problem *p);
FA_HIDDEN fa_status fa_cl_kv_append(fa_context *ctx, const fa_problem *p);
/* cl_decode_nv.c: which decode kernel serves p. nv 1: fa_decode_nv (kernels/decode_nv.cl, tensor cores on NVIDIA,
 * or emulated) with this ring; 0: the portable fa_decode. plan is the kernel's split plan either way. */
typedef struct fa_cl_decode_choice {
  int nv;
  fa_cl_nv_mode mode;
  int warps, stages;  /* fa_decode_nv's group: warps, and the stages of each warp's ring */
  size_t local_bytes; /* its local memory */
  int per_unit;       /* groups resident per compute unit, waves included (the split plan's target) */
  fa_decode_plan plan;
} fa_cl_decode_choice;
/* Fills *ch; returns NULL when fa_decode_nv serves p, else why not (a phrase for an error sentence). */
FA_HIDDEN const char *fa_cl_decode_choose(fa_context *ctx, const fa_problem *p, fa_cl_decode_choice *ch);
/* Whether FLASHATTN_DECODE_KERNEL=nv asks for the tensor-core kernel or an error. */
FA_HIDDEN int fa_cl_decode_forced(void);
/* fa_decode_nv built for p and ch (fa_cl_nv_kernel: FA_ERROR_UNSUPPORTED when the driver refused it, mode on). */
FA_HIDDEN fa_status fa_cl_decode_nv_kernel(fa_context *ctx, const fa_problem *p, const fa_cl_decode_choice *ch,
                                           cl_kernel *out);
/* cl_backward.c: FA_ERROR_UNSUPPORTED (and a sentence) when the device allows fewer than `local` work-items per
 * group for this kernel: checked before the first launch, so that a failure leaves every output untouched. */
FA_HIDDEN fa_status fa_cl_check_group(fa_context *ctx, cl_kernel kernel, size_t local, const char *what);
/* cl_backward.c: the flash backward's workspace, Di [B, Hq, Sq] (`rows` floats) and with `atomic` the float32
 * dQ accumulator after it (shared by the portable and the tensor-core kernels). */
FA_HIDDEN fa_status fa_cl_flash_bwd_workspace(fa_context *ctx, const fa_problem *p, int atomic, size_t *rows,
                                              size_t *bytes);
/* cl_event.c: device timing through the queue's profiling (the table's event entries). */
FA_HIDDEN fa_status fa_cl_event_record(fa_context *ctx, uint64_t *native);
FA_HIDDEN fa_status fa_cl_event_elapsed(fa_context *ctx, uint64_t start, uint64_t end, double *ms);
FA_HIDDEN void fa_cl_event_destroy(fa_context *ctx, uint64_t native);

#endif

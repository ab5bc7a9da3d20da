/* The CUDA backend's shared state and helpers: the driver and NVRTC entry points (opened with dlopen, so the
 * library loads where neither exists), one fa_cu per context (device, primary context, stream, device facts),
 * kernels compiled with NVRTC and cached in memory and on disk, launches and a scratch workspace.
 * Used by cu_loader.c, cu_nvrtc.c, cu_module.c, cu_context.c, cu_flash.c, cu_backward.c and cu_standard.c.
 * cuda.h and nvrtc.h are included for their types only: nothing links against libcuda or libnvrtc. */
#ifndef FA_CU_INTERNAL_H
#define FA_CU_INTERNAL_H

#include <cuda.h>
#include <nvrtc.h>

#include "backend.h"
#include "tiling.h"
#include "kernels/cuda_params.h"

/* ---- cu_loader.c: entry points ---- */

/* The driver entry points we use, resolved by their versioned symbol names (cuMemAlloc_v2, ...).
 * Field names drop the "cu" prefix so that cuda.h's renaming macros do not touch them. */
typedef struct fa_cu_driver {
  CUresult (*Init)(unsigned int flags);
  CUresult (*DriverGetVersion)(int *version);
  CUresult (*GetErrorName)(CUresult err, const char **str);
  CUresult (*GetErrorString)(CUresult err, const char **str);
  CUresult (*DeviceGetCount)(int *count);
  CUresult (*DeviceGet)(CUdevice *dev, int ordinal);
  CUresult (*DeviceGetName)(char *name, int len, CUdevice dev);
  CUresult (*DeviceGetAttribute)(int *value, CUdevice_attribute attr, CUdevice dev);
  CUresult (*DeviceTotalMem)(size_t *bytes, CUdevice dev);
  CUresult (*DevicePrimaryCtxRetain)(CUcontext *ctx, CUdevice dev);
  CUresult (*DevicePrimaryCtxRelease)(CUdevice dev);
  CUresult (*CtxPushCurrent)(CUcontext ctx);
  CUresult (*CtxPopCurrent)(CUcontext *ctx);
  CUresult (*CtxGetDevice)(CUdevice *dev);
  CUresult (*StreamCreate)(CUstream *stream, unsigned int flags);
  CUresult (*StreamDestroy)(CUstream stream);
  CUresult (*StreamSynchronize)(CUstream stream);
  CUresult (*StreamGetCtx)(CUstream stream, CUcontext *ctx);
  CUresult (*MemAlloc)(CUdeviceptr *ptr, size_t bytes);
  CUresult (*MemFree)(CUdeviceptr ptr);
  CUresult (*MemGetAddressRange)(CUdeviceptr *base, size_t *size, CUdeviceptr ptr);
  CUresult (*PointerGetAttribute)(void *data, CUpointer_attribute attr, CUdeviceptr ptr);
  CUresult (*MemcpyHtoDAsync)(CUdeviceptr dst, const void *src, size_t bytes, CUstream stream);
  CUresult (*MemcpyDtoHAsync)(void *dst, CUdeviceptr src, size_t bytes, CUstream stream);
  CUresult (*MemcpyDtoDAsync)(CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream stream);
  CUresult (*MemsetD8Async)(CUdeviceptr dst, unsigned char value, size_t n, CUstream stream);
  CUresult (*MemsetD32Async)(CUdeviceptr dst, unsigned int value, size_t n, CUstream stream);
  CUresult (*ModuleLoadData)(CUmodule *module, const void *image);
  CUresult (*ModuleUnload)(CUmodule module);
  CUresult (*ModuleGetFunction)(CUfunction *fn, CUmodule module, const char *name);
  CUresult (*FuncGetAttribute)(int *value, CUfunction_attribute attr, CUfunction fn);
  CUresult (*FuncSetAttribute)(CUfunction fn, CUfunction_attribute attr, int value);
  CUresult (*LaunchKernel)(CUfunction fn, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                           unsigned int by, unsigned int bz, unsigned int shared_bytes, CUstream stream,
                           void **params, void **extra);
  CUresult (*EventCreate)(CUevent *ev, unsigned int flags);
  CUresult (*EventRecord)(CUevent ev, CUstream stream);
  CUresult (*EventSynchronize)(CUevent ev);
  CUresult (*EventElapsedTime)(float *ms, CUevent start, CUevent end);
  CUresult (*EventDestroy)(CUevent ev);
  CUresult (*EventQuery)(CUevent ev);
  CUresult (*StreamIsCapturing)(CUstream stream, CUstreamCaptureStatus *status);
  /* NULL when the driver has none (before CUDA 12): no TMA, so no sm_90 kernels. */
  CUresult (*TensorMapEncodeTiled)(CUtensorMap *map, CUtensorMapDataType type, cuuint32_t rank, void *addr,
                                   const cuuint64_t *dims, const cuuint64_t *strides, const cuuint32_t *box,
                                   const cuuint32_t *element_strides, CUtensorMapInterleave interleave,
                                   CUtensorMapSwizzle swizzle, CUtensorMapL2promotion l2,
                                   CUtensorMapFloatOOBfill fill);
} fa_cu_driver;

typedef struct fa_cu_nvrtc {
  nvrtcResult (*Version)(int *major, int *minor);
  const char *(*GetErrorString)(nvrtcResult err);
  nvrtcResult (*CreateProgram)(nvrtcProgram *prog, const char *src, const char *name, int num_headers,
                               const char *const *headers, const char *const *include_names);
  nvrtcResult (*CompileProgram)(nvrtcProgram prog, int num_options, const char *const *options);
  nvrtcResult (*GetProgramLogSize)(nvrtcProgram prog, size_t *size);
  nvrtcResult (*GetProgramLog)(nvrtcProgram prog, char *log);
  nvrtcResult (*GetCUBINSize)(nvrtcProgram prog, size_t *size);
  nvrtcResult (*GetCUBIN)(nvrtcProgram prog, char *cubin);
  nvrtcResult (*DestroyProgram)(nvrtcProgram *prog);
} fa_cu_nvrtc;

/* Open libcuda.so.1 and resolve the driver table (once per process; later calls return the first result).
 * On failure msg says why ("libcuda.so.1: <dlerror>", "libcuda.so.1: no symbol cuMemAlloc_v2"). */
FA_HIDDEN fa_status fa_cu_load_driver(const fa_cu_driver **out, char *msg, size_t msg_len);

/* Open NVRTC (FLASHATTN_NVRTC, else libnvrtc.so, .so.13, .so.12, .so.11.2, then $CUDA_HOME/lib64 and
 * /usr/local/cuda/lib64) and resolve its table, once per process. version is major * 1000 + minor * 10. */
FA_HIDDEN fa_status fa_cu_load_nvrtc(const fa_cu_nvrtc **out, int *version, char *msg, size_t msg_len);

/* "CUDA_ERROR_OUT_OF_MEMORY: out of memory" for a driver result (the names come from the driver itself). */
FA_HIDDEN void fa_cu_result_text(const fa_cu_driver *cu, CUresult r, char *buf, size_t len);

/* ---- cu_nvrtc.c: compiling kernels (no device or context needed: the dev workshops' nvrtc mode uses it too) ---- */

/* Compile kernels/<file> with NVRTC for gpu arch `arch` ("sm_90") with the space-separated `defines`
 * ("-DHEAD_DIM=128 -DBLOCK_N=64"); the headers it #includes ("x.cuh") are taken from kernels/ as well.
 * On success *image is a malloc'd CUBIN (caller frees) of *size bytes, and *log (may be NULL) the
 * malloc'd compile log (ptxas notes when `verbose`). On failure FA_ERROR_KERNEL_BUILD (or
 * FA_ERROR_OUT_OF_MEMORY) and msg holds "nvrtcCompileProgram(<file> <defines>): <log head>". */
FA_HIDDEN fa_status fa_cu_compile(const fa_cu_nvrtc *nv, const char *file, const char *defines, const char *arch,
                                  int verbose, void **image, size_t *size, char **log, char *msg, size_t msg_len);

/* The options fa_cu_compile passes to NVRTC besides the defines (part of the cache key). */
#define FA_CU_NVRTC_OPTIONS "-default-device -std=c++14 --use_fast_math"

/* ---- cu_variants.c: which kernel variant serves a problem (pure, shared with the dev workshops' nvrtc mode) ---- */

/* The -D define that selects the storage type in kernels/cuda_common.cuh: "-DFA_DTYPE=0|1|2". */
FA_HIDDEN const char *fa_cu_dtype_define(fa_dtype dtype);

typedef struct fa_cu_fwd_variant {
  int tc;             /* 1: flash_fwd_tc (tensor cores); 0: flash_fwd_simt (CUDA cores) */
  int q_regs;         /* flash_fwd_tc holds Q in registers */
  fa_tiles tiles;     /* block_q, block_k, threads per block, dynamic shared bytes */
  const char *kernel; /* the function's name in kernels/flash_fwd.cu */
  char defines[256];  /* what it is compiled with */
} fa_cu_fwd_variant;

/* The forward kernel for a head dim and dtype on a device of compute capability cc_major.x within the
 * limits; async: q, k and v rows all start on 16-byte boundaries (cp.async loads). FA_ERROR_UNSUPPORTED
 * when no tile fits the shared-memory budget. */
FA_HIDDEN fa_status fa_cu_forward_variant(const fa_tile_limits *lim, int cc_major, int head_dim, fa_dtype dtype,
                                          int async, fa_cu_fwd_variant *out);
/* The Hopper forward (kernels/flash_fwd_sm90.cu, compiled for sm_90a) for f16/bf16: its tiles from
 * fa_tiles_cuda_sm90_forward (banded, infer, seqlen_q and the mask's blocks as there; FLASHATTN_SM90_TILE=BMxBN
 * overrides them for tuning) and defines (fa_cu_forward_infer adds FA_INFER's). FA_ERROR_UNSUPPORTED for other
 * dtypes or when no tile fits. */
FA_HIDDEN fa_status fa_cu_forward_sm90_variant(const fa_tile_limits *lim, int head_dim, fa_dtype dtype, int banded,
                                               int infer, int64_t seqlen_q, int mask_bq, int mask_bk,
                                               fa_cu_fwd_variant *out);
/* Add the optional features' defines to a variant: FA_BLOCK_MASK=1 with a block mask, FA_DROPOUT=1 with dropout. */
FA_HIDDEN void fa_cu_forward_features(fa_cu_fwd_variant *var, int block_mask, int dropout);
/* Add FA_INFER=1 for the inference options (varlen, window, ALiBi, softcap), which take no other feature, and
 * FA_INFER_MODS=mods: whether softcap or ALiBi is on (fa_problem_score_mods; the Hopper kernel leaves their code
 * out otherwise). */
FA_HIDDEN void fa_cu_forward_infer(fa_cu_fwd_variant *var, int mods);
/* cu_flash.c: the inference options' part of both passes' argument blocks (kernels/cuda_params.h). */
FA_HIDDEN void fa_cu_infer_params(const fa_problem *p, fa_infer_params *a);

/* ---- the context ---- */

/* A module compiled for this context and the one kernel taken from it. */
typedef struct fa_cu_module {
  struct fa_cu_module *next;
  char *key; /* "<file>|<defines>|<kernel>" */
  CUmodule module;
  CUfunction function;
  int shared_limit; /* dynamic shared bytes the function is allowed so far (48 KiB by default) */
} fa_cu_module;

/* What the backend keeps in ctx->impl. */
typedef struct fa_cu {
  const fa_cu_driver *cu;
  const fa_cu_nvrtc *nv;
  int nvrtc_version; /* major * 1000 + minor * 10 */
  int driver_version; /* cuDriverGetVersion: 13000 for 13.0 */
  CUdevice device;
  int ordinal;
  CUcontext context; /* the device's primary context (retained), or the caller's stream's context */
  int retained;      /* 1: we hold a reference on the primary context */
  CUstream stream;   /* ours, or the caller's native_queue */
  int own_stream;

  /* Device facts, queried once at create. */
  int cc_major, cc_minor, sm_count, max_threads;
  size_t shared_optin;  /* CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN */
  char arch[16];        /* "sm_90" */
  char name[256];

  fa_cu_module *modules;

  /* Scratch device memory shared by the backend's calls; contents undefined between calls. */
  CUdeviceptr workspace;
  size_t workspace_bytes;
  /* Workspaces outgrown while work queued before the grow may still use them: each is freed once its event
   * (recorded on the stream at the grow) has completed. */
  struct {
    CUdeviceptr ptr;
    size_t bytes;
    CUevent done;
  } retired[4];
} fa_cu;

static inline fa_cu *fa_cu_of(const fa_context *ctx) { return (fa_cu *)ctx->impl; }

/* fa_fail() for a failed driver call: "<call>: CUDA_ERROR_X: <text>", FA_ERROR_OUT_OF_MEMORY for
 * CUDA_ERROR_OUT_OF_MEMORY, FA_ERROR_DEVICE for the rest. */
FA_HIDDEN fa_status fa_cu_fail(fa_context *ctx, const char *call, CUresult r);

/* Make the context's CUDA context current on this thread for the length of one call (push), and give the
 * caller's back (pop). Every entry point that touches the driver brackets its work with these. */
FA_HIDDEN fa_status fa_cu_push(fa_context *ctx);
FA_HIDDEN void fa_cu_pop(fa_context *ctx);

/* ---- cu_module.c ---- */

/* A kernel `kernel` from kernels/<file> compiled with `defines` for this device: compiled once per context
 * (NVRTC, or the on-disk cache: key = source hash, options, device name, arch, driver and NVRTC versions)
 * and kept until the context is destroyed. When shared_bytes > 48 KiB, the function's dynamic shared
 * memory limit is raised to it. Call between fa_cu_push and fa_cu_pop.
 * Errors: FA_ERROR_KERNEL_BUILD with the log's head, FA_ERROR_DEVICE, FA_ERROR_OUT_OF_MEMORY. */
FA_HIDDEN fa_status fa_cu_function(fa_context *ctx, const char *file, const char *defines, const char *kernel,
                                   size_t shared_bytes, CUfunction *out);
/* The same for another target than the device's own arch: "sm_90a" for the Hopper kernels (wgmma and
 * setmaxnreg exist only in the arch-specific target). */
FA_HIDDEN fa_status fa_cu_function_arch(fa_context *ctx, const char *arch, const char *file, const char *defines,
                                        const char *kernel, size_t shared_bytes, CUfunction *out);

/* Unload every module of the context (at destroy). */
FA_HIDDEN void fa_cu_modules_release(fa_context *ctx);

/* Launch on the context's stream; `what` names the kernel in the error sentence. */
FA_HIDDEN fa_status fa_cu_launch(fa_context *ctx, CUfunction fn, const unsigned grid[3], unsigned threads,
                                 size_t shared_bytes, void **params, const char *what);

/* Launch over (blocks, heads, batch): grid y and z stop at 65535, so larger counts take several launches, each
 * with *h0 and *b0 (fields of the argument block behind params) set to its first head and batch. */
FA_HIDDEN fa_status fa_cu_launch_split(fa_context *ctx, CUfunction fn, unsigned blocks, int64_t heads, int64_t batch,
                                       unsigned threads, size_t shared_bytes, void **params, int *b0, int *h0,
                                       const char *what);

/* ---- cu_tma.c: TMA maps for the Hopper kernels ---- */

/* Why view v of shape {batch, seq, heads} (x D contiguous) cannot be a TMA operand, or NULL when it can:
 * TMA takes a 16-byte aligned base and strides that are positive multiples of 16 bytes below 2^40 for the
 * dimensions that are stepped. The same test serves 16-byte vector stores. */
FA_HIDDEN const char *fa_cu_tma_unfit(const fa_view *v, const int64_t shape3[3], size_t elem_bytes);

/* A 4-D map (D, S, H, B innermost first) of a 16-bit [B, S, H, D] view: boxes of 64 columns x `rows` rows,
 * 128-byte swizzle, zeros outside the tensor. FA_ERROR_DEVICE with the driver's reason on failure. */
FA_HIDDEN fa_status fa_cu_tma_map(fa_context *ctx, fa_tmap *map, const fa_view *v, fa_dtype dtype, int64_t b,
                                  int64_t s, int64_t h, int64_t d, int rows, const char *name);

/* The context's scratch buffer, grown (never shrunk) to at least `bytes`, its growth tracked by
 * fa_mem_track(). Valid until the next fa_cu_workspace() call or context destruction; contents undefined.
 * Call it before a call's first launch, between push/pop. When the buffer is large enough it does nothing
 * else: no allocation, no synchronisation, so such a call can be captured into a CUDA graph. A grow never
 * waits for the stream: the old buffer is retired (freed once the work queued before the grow is done) and
 * a new one allocated; a grow while the stream is being captured is refused (FA_ERROR_INVALID_ARGUMENT
 * with a sentence: run the call once before capturing). Errors: FA_ERROR_OUT_OF_MEMORY with a sentence. */
FA_HIDDEN fa_status fa_cu_workspace(fa_context *ctx, size_t bytes, CUdeviceptr *out);

/* Free the workspace and the retired ones now (the caller has waited for the stream). Call between
 * push/pop. */
FA_HIDDEN void fa_cu_workspace_release(fa_context *ctx);

/* What the device offers one thread block, after FLASHATTN_LOCAL_MEM_BYTES, for the tiling functions. */
FA_HIDDEN void fa_cu_tile_limits(const fa_context *ctx, fa_tile_limits *lim);

/* A view's device address: the buffer's plus the view's element offset. */
static inline CUdeviceptr fa_cu_addr(const fa_view *v, size_t elem_bytes) {
  return (CUdeviceptr)(v->buf->native + (uint64_t)v->offset * elem_bytes);
}

/* ---- the entry points of the backend table (cu_context.c) that live in other files ---- */
/* cu_context.c makes the context current around the compute entries (forward, backward). */
/* cu_flash.c: FA_ALGO_FLASH forward. */
FA_HIDDEN fa_status fa_cu_forward(fa_context *ctx, const fa_problem *p);
/* cu_context.c: the state entries of the backend table (backend.h says what each does; cu_backend.c's
 * create and destroy wrap fa_cu_create and fa_cu_context_destroy with what the operations keep). */
FA_HIDDEN fa_status fa_cu_device_count(int *count, char *msg, size_t msg_len);
FA_HIDDEN fa_status fa_cu_create(fa_context *ctx, int device, void *native_queue);
FA_HIDDEN void fa_cu_context_destroy(fa_context *ctx);
FA_HIDDEN fa_status fa_cu_synchronize(fa_context *ctx);
FA_HIDDEN fa_status fa_cu_buffer_alloc(fa_context *ctx, size_t bytes, uint64_t *native);
FA_HIDDEN void fa_cu_buffer_free(fa_context *ctx, uint64_t native);
FA_HIDDEN fa_status fa_cu_buffer_wrap(fa_context *ctx, uint64_t native, size_t bytes);
FA_HIDDEN void fa_cu_buffer_origin(fa_context *ctx, fa_buffer *buf);
FA_HIDDEN void fa_cu_buffer_unwrap(fa_context *ctx, uint64_t native);
FA_HIDDEN fa_status fa_cu_buffer_write(fa_context *ctx, uint64_t native, size_t offset, const void *src, size_t bytes);
FA_HIDDEN fa_status fa_cu_buffer_read(fa_context *ctx, uint64_t native, size_t offset, void *dst, size_t bytes);

/* cu_flash.c: the fa_device_info.kernels sentence of a context. */
FA_HIDDEN void fa_cu_describe_kernels(const fa_context *ctx, char *buf, size_t len);
/* cu_flash.c: the forward tiles for a head dim and dtype (the table's .tiles entry). */
FA_HIDDEN fa_status fa_cu_tiles(fa_context *ctx, int head_dim, fa_dtype dtype, fa_tiles *out);
/* cu_standard.c: FA_ALGO_STANDARD forward (scores in device memory, GEMMs through cuBLAS). */
FA_HIDDEN fa_status fa_cu_standard_forward(fa_context *ctx, const fa_problem *p);
FA_HIDDEN fa_status fa_cu_standard_backward(fa_context *ctx, const fa_problem *p); /* cu_standard.c: FA_ALGO_STANDARD backward */
/* cu_standard.c: the workspace bytes of either standard pass for p, without a device call. */
FA_HIDDEN fa_status fa_cu_standard_workspace(fa_context *ctx, const fa_problem *p, int backward, size_t *bytes);
/* cu_backward_sm90.c: the Hopper backward; choice: 1 take it, 0 take the sm_80 kernels, -1 an error is set
 * (FLASHATTN_CUDA_BWD=sm90 where it cannot run). */
FA_HIDDEN int fa_cu_backward_sm90_choice(fa_context *ctx, const fa_problem *p);
FA_HIDDEN fa_status fa_cu_backward_sm90(fa_context *ctx, const fa_problem *p);
/* Workspace bytes of the two backward families for p, for fa_backward_workspace_size() (the launches size
 * theirs with the same functions): cu_backward_sm90.c, cu_backward.c. */
FA_HIDDEN fa_status fa_cu_backward_sm90_workspace(fa_context *ctx, const fa_problem *p, size_t *bytes);
FA_HIDDEN fa_status fa_cu_backward_sm80_workspace(fa_context *ctx, const fa_problem *p, size_t *bytes);
/* cu_backward.c: the backward pass. */
FA_HIDDEN fa_status fa_cu_backward(fa_context *ctx, const fa_problem *p);
FA_HIDDEN fa_status fa_cu_dropout_mask(fa_context *ctx, const fa_problem *p); /* cu_dropout.c: the table's .dropout_mask (pushes the context itself) */
/* cu_decode.c: the decode kernels (split-KV, inference options) and fa_combine's kernel. */
/* Query rows per group of the decode kernels: the CUDA-core one (fa_decode) holds q and the accumulators of 8
 * rows in registers; the tensor-core one (fa_decode_mma) one m16n8k16 tile of 16 rows. */
#define FA_CU_DECODE_SIMPLE_ROWS 8
#define FA_CU_DECODE_MMA_ROWS 16
/* The rows per KV head up to which a plain forward takes the decode kernels (fa_decode_wanted's max_rows): 16
 * where fa_decode_mma serves p (16-bit, D a multiple of 16 up to 256, sm_80+), so Sq 4 x 4 heads reads K and
 * V once; 8 elsewhere (a second row block would read them twice, slower than the flash forward). */
FA_HIDDEN int fa_cu_decode_max_rows(const fa_context *ctx, const fa_problem *p);
FA_HIDDEN fa_status fa_cu_decode(fa_context *ctx, const fa_problem *p);
/* Its workspace for p (split-KV partials), for fa_forward_workspace_size(). */
FA_HIDDEN size_t fa_cu_decode_workspace(fa_context *ctx, const fa_problem *p);
FA_HIDDEN fa_status fa_cu_combine(fa_context *ctx, const fa_problem *p);
FA_HIDDEN fa_status fa_cu_kv_append(fa_context *ctx, const fa_problem *p);
/* cu_event.c: device timing with CUDA events on the context's stream (the table's event entries). */
FA_HIDDEN fa_status fa_cu_event_record(fa_context *ctx, uint64_t *native);
FA_HIDDEN fa_status fa_cu_event_elapsed(fa_context *ctx, uint64_t start, uint64_t end, double *ms);
FA_HIDDEN void fa_cu_event_destroy(fa_context *ctx, uint64_t native);

#endif

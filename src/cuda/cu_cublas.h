/* cuBLAS for the CUDA standard-attention path (cu_standard.c), opened with dlopen like the driver and NVRTC:
 * the library links against nothing of CUDA's, and a machine without cuBLAS still runs the flash kernels.
 * Only the handful of entry points and constants the standard path uses are declared here, with the values
 * of cublas_api.h and library_types.h (a stable ABI; cu_cublas.c checks them against those headers when the
 * build has them), so that building needs no cuBLAS headers either. */
#ifndef FA_CU_CUBLAS_H
#define FA_CU_CUBLAS_H

#include "cu_internal.h"

/* cublasStatus_t */
#define FA_CUBLAS_STATUS_SUCCESS 0
#define FA_CUBLAS_STATUS_ALLOC_FAILED 3
/* cublasOperation_t */
#define FA_CUBLAS_OP_N 0
#define FA_CUBLAS_OP_T 1
/* cudaDataType */
#define FA_CUDA_R_32F 0
#define FA_CUDA_R_16F 2
#define FA_CUDA_R_16BF 14
/* cublasComputeType_t: float32 accumulation, no TF32 (that would be CUBLAS_COMPUTE_32F_FAST_TF32) */
#define FA_CUBLAS_COMPUTE_32F 68
/* cublasGemmAlgo_t */
#define FA_CUBLAS_GEMM_DEFAULT (-1)

/* The entry points, by their versioned names (cublasCreate_v2, ...). Enums travel as int, cublasHandle_t as
 * void *, cudaStream_t as CUstream. Field names drop the "cublas" prefix (cublas_v2.h's macros rename the
 * unversioned names). */
typedef struct fa_cu_cublas {
  int (*Create)(void **handle);
  int (*Destroy)(void *handle);
  int (*SetStream)(void *handle, CUstream stream);
  int (*GemmStridedBatchedEx)(void *handle, int transa, int transb, int m, int n, int k, const void *alpha,
                              const void *a, int a_type, int lda, long long stride_a, const void *b, int b_type,
                              int ldb, long long stride_b, const void *beta, void *c, int c_type, int ldc,
                              long long stride_c, int batch_count, int compute_type, int algo);
  const char *(*GetStatusName)(int status); /* cuBLAS 11.4 and later; NULL before */
} fa_cu_cublas;

/* Open cuBLAS (FLASHATTN_CUBLAS, else libcublas.so, .so.13, .so.12, then $CUDA_HOME/lib64 and
 * /usr/local/cuda/lib64) and resolve the table, once per process. On failure FA_ERROR_UNSUPPORTED and msg
 * names every library tried and why it failed. */
FA_HIDDEN fa_status fa_cu_cublas_load(const fa_cu_cublas **out, char *msg, size_t msg_len);

/* "CUBLAS_STATUS_ALLOC_FAILED" for a status (cuBLAS's own name where it has cublasGetStatusName). */
FA_HIDDEN const char *fa_cu_cublas_status_name(const fa_cu_cublas *api, int status);

/* The context's cuBLAS handle, created on first use (with the context current: call between fa_cu_push and
 * fa_cu_pop) and bound to the context's stream. `call` starts error sentences ("fa_forward (standard)").
 * Errors: FA_ERROR_UNSUPPORTED when cuBLAS is missing (a sentence naming the libraries looked for),
 * FA_ERROR_OUT_OF_MEMORY, FA_ERROR_DEVICE. */
FA_HIDDEN fa_status fa_cu_cublas_handle(fa_context *ctx, const char *call, const fa_cu_cublas **api, void **handle);

/* Destroy the context's handle, if it has one. cu_destroy calls it with the context current, before the
 * stream and the context go. */
FA_HIDDEN void fa_cu_cublas_release(fa_context *ctx);

#endif

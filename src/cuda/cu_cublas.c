/* cuBLAS opened with dlopen once per process, and one cuBLAS handle per fa_context.
 *
 * The handles live in a small list keyed by the context rather than in fa_cu, so that the CUDA backend's
 * shared state does not change for a path only the baseline uses; cu_destroy hands each back through
 * fa_cu_cublas_release. A handle is created on the first standard call of a context (cublasCreate allocates
 * cuBLAS's own workspace, and its destruction synchronises the device: once per context, not per call). */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cu_cublas.h"

/* Where the build has cuBLAS's headers, check that the constants above are theirs. */
#if defined(__has_include)
#if __has_include(<cublas_api.h>)
#include <cublas_api.h>
_Static_assert(FA_CUBLAS_STATUS_SUCCESS == CUBLAS_STATUS_SUCCESS, "cublasStatus_t");
_Static_assert(FA_CUBLAS_STATUS_ALLOC_FAILED == CUBLAS_STATUS_ALLOC_FAILED, "cublasStatus_t");
_Static_assert(FA_CUBLAS_OP_N == CUBLAS_OP_N && FA_CUBLAS_OP_T == CUBLAS_OP_T, "cublasOperation_t");
_Static_assert(FA_CUDA_R_32F == CUDA_R_32F && FA_CUDA_R_16F == CUDA_R_16F && FA_CUDA_R_16BF == CUDA_R_16BF,
               "cudaDataType");
_Static_assert(FA_CUBLAS_COMPUTE_32F == CUBLAS_COMPUTE_32F, "cublasComputeType_t");
_Static_assert(FA_CUBLAS_GEMM_DEFAULT == CUBLAS_GEMM_DEFAULT, "cublasGemmAlgo_t");
#endif
#endif

/* ---- the library ---- */

static fa_cu_cublas api;
static fa_status api_status;
static char api_msg[1024];
static pthread_once_t api_once = PTHREAD_ONCE_INIT;

/* dlsym into a function-pointer field, through void * as POSIX allows; 0 when the symbol is missing. */
static int resolve(void *lib, void *field, size_t field_size, const char *symbol) {
  void *sym = dlsym(lib, symbol);
  if (sym) memcpy(field, &sym, field_size);
  return sym != NULL;
}

static const char *resolve_all(void *lib) {
  if (!resolve(lib, &api.Create, sizeof api.Create, "cublasCreate_v2")) return "cublasCreate_v2";
  if (!resolve(lib, &api.Destroy, sizeof api.Destroy, "cublasDestroy_v2")) return "cublasDestroy_v2";
  if (!resolve(lib, &api.SetStream, sizeof api.SetStream, "cublasSetStream_v2")) return "cublasSetStream_v2";
  /* cublasGemmStridedBatchedEx with a cublasComputeType_t: CUDA 11 and later. */
  if (!resolve(lib, &api.GemmStridedBatchedEx, sizeof api.GemmStridedBatchedEx, "cublasGemmStridedBatchedEx"))
    return "cublasGemmStridedBatchedEx";
  if (!resolve(lib, &api.GetStatusName, sizeof api.GetStatusName, "cublasGetStatusName")) api.GetStatusName = NULL;
  return NULL;
}

static fa_status open_cublas(void) {
  char tried[896] = "";
  size_t used = 0;
  const char *env = getenv("FLASHATTN_CUBLAS");
  char home_path[1024] = "";
  const char *cuda_home = getenv("CUDA_HOME");
  if (cuda_home && *cuda_home) snprintf(home_path, sizeof home_path, "%s/lib64/libcublas.so", cuda_home);
  const char *names[] = {"libcublas.so", "libcublas.so.13", "libcublas.so.12", home_path,
                         "/usr/local/cuda/lib64/libcublas.so"};
  /* FLASHATTN_CUBLAS names the one library to use: a wrong path is an error, not a reason to look elsewhere. */
  const char *only[] = {env};
  const char **list = env && *env ? only : names;
  size_t count = env && *env ? 1 : sizeof names / sizeof names[0];
  for (size_t i = 0; i < count; i++) {
    if (!list[i][0]) continue;
    void *lib = dlopen(list[i], RTLD_NOW | RTLD_LOCAL);
    char why[512];
    if (lib) {
      const char *missing = resolve_all(lib);
      if (!missing) return FA_SUCCESS; /* never closed: the pointers live as long as the process */
      dlclose(lib);                    /* too old: a later name may be newer */
      snprintf(why, sizeof why, "%s: no symbol %s", list[i], missing);
    } else {
      const char *err = dlerror();
      snprintf(why, sizeof why, "%s", err ? err : list[i]);
    }
    if (used < sizeof tried) {
      int n = snprintf(tried + used, sizeof tried - used, "%s%s", used ? "; " : "", why);
      if (n > 0) used += (size_t)n;
    }
  }
  snprintf(api_msg, sizeof api_msg, "cuBLAS not found (set FLASHATTN_CUBLAS to libcublas.so's path): %s", tried);
  return FA_ERROR_UNSUPPORTED;
}

static void api_init(void) { api_status = open_cublas(); }

fa_status fa_cu_cublas_load(const fa_cu_cublas **out, char *msg, size_t msg_len) {
  pthread_once(&api_once, api_init);
  *out = api_status == FA_SUCCESS ? &api : NULL;
  if (api_status != FA_SUCCESS && msg && msg_len) snprintf(msg, msg_len, "%s", api_msg);
  return api_status;
}

const char *fa_cu_cublas_status_name(const fa_cu_cublas *a, int status) {
  if (a && a->GetStatusName) {
    const char *name = a->GetStatusName(status);
    if (name) return name;
  }
  switch (status) {
  case 0: return "CUBLAS_STATUS_SUCCESS";
  case 1: return "CUBLAS_STATUS_NOT_INITIALIZED";
  case 3: return "CUBLAS_STATUS_ALLOC_FAILED";
  case 7: return "CUBLAS_STATUS_INVALID_VALUE";
  case 8: return "CUBLAS_STATUS_ARCH_MISMATCH";
  case 11: return "CUBLAS_STATUS_MAPPING_ERROR";
  case 13: return "CUBLAS_STATUS_EXECUTION_FAILED";
  case 14: return "CUBLAS_STATUS_INTERNAL_ERROR";
  case 15: return "CUBLAS_STATUS_NOT_SUPPORTED";
  case 16: return "CUBLAS_STATUS_LICENSE_ERROR";
  default: return "CUBLAS_STATUS_(unknown)";
  }
}

/* ---- one handle per context ---- */

typedef struct handle_entry {
  struct handle_entry *next;
  const fa_context *ctx;
  void *handle;
} handle_entry;

static handle_entry *handles;
static pthread_mutex_t handles_lock = PTHREAD_MUTEX_INITIALIZER;

fa_status fa_cu_cublas_handle(fa_context *ctx, const char *call, const fa_cu_cublas **out_api, void **out) {
  char msg[1024];
  const fa_cu_cublas *a;
  if (fa_cu_cublas_load(&a, msg, sizeof msg) != FA_SUCCESS)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "%s: FA_ALGO_STANDARD on CUDA needs cuBLAS: %s", call, msg);

  pthread_mutex_lock(&handles_lock);
  handle_entry *e = handles;
  while (e && e->ctx != ctx) e = e->next;
  pthread_mutex_unlock(&handles_lock);

  if (!e) {
    /* A context is used by one thread at a time, so no other thread adds an entry for this one meanwhile. */
    e = calloc(1, sizeof *e);
    if (!e) return fa_fail(ctx, FA_ERROR_OUT_OF_MEMORY, "%s: out of host memory", call);
    int s = a->Create(&e->handle);
    if (s != FA_CUBLAS_STATUS_SUCCESS) {
      free(e);
      return fa_fail(ctx, s == FA_CUBLAS_STATUS_ALLOC_FAILED ? FA_ERROR_OUT_OF_MEMORY : FA_ERROR_DEVICE,
                     "%s: cublasCreate_v2: %s (%d)", call, fa_cu_cublas_status_name(a, s), s);
    }
    e->ctx = ctx;
    pthread_mutex_lock(&handles_lock);
    e->next = handles;
    handles = e;
    pthread_mutex_unlock(&handles_lock);
  }
  /* Every call: the handle then follows the context's stream whatever happened since. */
  int s = a->SetStream(e->handle, fa_cu_of(ctx)->stream);
  if (s != FA_CUBLAS_STATUS_SUCCESS)
    return fa_fail(ctx, FA_ERROR_DEVICE, "%s: cublasSetStream_v2: %s (%d)", call, fa_cu_cublas_status_name(a, s), s);
  *out_api = a;
  *out = e->handle;
  return FA_SUCCESS;
}

void fa_cu_cublas_release(fa_context *ctx) {
  pthread_mutex_lock(&handles_lock);
  handle_entry **at = &handles;
  while (*at && (*at)->ctx != ctx) at = &(*at)->next;
  handle_entry *e = *at;
  if (e) *at = e->next;
  pthread_mutex_unlock(&handles_lock);
  if (!e) return;
  const fa_cu_cublas *a;
  if (fa_cu_cublas_load(&a, NULL, 0) == FA_SUCCESS) a->Destroy(e->handle);
  free(e);
}

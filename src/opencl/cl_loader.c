/* The OpenCL ICD loader and CLBlast opened with dlopen once per process (see cl_loader.h). */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl_internal.h"

#if FA_OPENCL_DLOPEN

FA_HIDDEN fa_cl_api fa_cl_fn;

typedef struct fa_lib_load {
  pthread_once_t once;
  fa_status status;
  char msg[512];
} fa_lib_load;

static fa_lib_load cl_load = {PTHREAD_ONCE_INIT, FA_SUCCESS, ""};
static fa_lib_load blast_load = {PTHREAD_ONCE_INIT, FA_SUCCESS, ""};

/* The first of `names` that opens, its name in *used; an environment override is the only one tried, so a
 * wrong path is an error rather than a reason to look elsewhere. NULL with the reason in load->msg. */
static void *open_first(const char *env_name, const char *const *names, size_t count, fa_lib_load *load,
                        const char **used) {
  const char *env = getenv(env_name);
  const char *only[] = {env};
  if (env && *env) {
    names = only;
    count = 1;
  }
  *used = names[0];
  for (size_t i = 0; i < count; i++) {
    void *lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    *used = names[i];
    if (lib) return lib;
    if (i == 0) {
      const char *err = dlerror();
      snprintf(load->msg, sizeof load->msg, "%s", err ? err : names[i]);
    }
  }
  return NULL;
}

/* dlsym into a pointer field; the cast goes through void * as POSIX allows. 0 when the symbol is missing. */
static int resolve(void *lib, const char *symbol, void *field, size_t field_size, fa_lib_load *load,
                   const char *lib_name) {
  void *sym = dlsym(lib, symbol);
  if (!sym) {
    snprintf(load->msg, sizeof load->msg, "%s: no symbol %s", lib_name, symbol);
    return 0;
  }
  memcpy(field, &sym, field_size);
  return 1;
}

/* `name` arrives expanded (fa_cl_fn.clFoo, see cl_loader.h), #name as written. */
#define FA_RESOLVE(name) ok = ok && resolve(lib, #name, &name, sizeof name, load, lib_name);

static void open_opencl(void) {
  static const char *const names[] = {"libOpenCL.so.1", "libOpenCL.so"};
  fa_lib_load *load = &cl_load;
  const char *lib_name;
  void *lib = open_first("FLASHATTN_OPENCL_LIB", names, sizeof names / sizeof names[0], load, &lib_name);
  int ok = lib != NULL;
  FA_CL_FUNCTIONS(FA_RESOLVE)
  /* The library is never closed: its function pointers live as long as the process. */
  load->status = ok ? FA_SUCCESS : FA_ERROR_BACKEND_UNAVAILABLE;
}

static void open_clblast(void) {
#if FA_HAVE_CLBLAST
  static const char *const names[] = {"libclblast.so.1", "libclblast.so"};
  fa_lib_load *load = &blast_load;
  const char *lib_name;
  void *lib = open_first("FLASHATTN_CLBLAST_LIB", names, sizeof names / sizeof names[0], load, &lib_name);
  int ok = lib != NULL;
  FA_CLBLAST_FUNCTIONS(FA_RESOLVE)
  load->status = ok ? FA_SUCCESS : FA_ERROR_UNSUPPORTED;
#endif
}

fa_status fa_cl_load(char *msg, size_t msg_len) {
  pthread_once(&cl_load.once, open_opencl);
  if (cl_load.status != FA_SUCCESS && msg && msg_len) snprintf(msg, msg_len, "%s", cl_load.msg);
  return cl_load.status;
}

fa_status fa_clblast_load(fa_context *ctx, const char *call) {
  pthread_once(&blast_load.once, open_clblast);
  if (blast_load.status == FA_SUCCESS) return FA_SUCCESS;
  return fa_fail(ctx, blast_load.status, "%s: FA_ALGO_STANDARD on OpenCL needs CLBlast: %s", call, blast_load.msg);
}

#else /* linked: the dynamic linker has already done the work */

fa_status fa_cl_load(char *msg, size_t msg_len) {
  (void)msg;
  (void)msg_len;
  return FA_SUCCESS;
}

fa_status fa_clblast_load(fa_context *ctx, const char *call) {
  (void)ctx;
  (void)call;
  return FA_SUCCESS;
}

#endif

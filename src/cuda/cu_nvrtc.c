/* Compiling a kernels/ .cu file with NVRTC into a CUBIN for one GPU architecture. It needs no device, so
 * The dev workshops' nvrtc mode compiles every variant through this same function on a machine without a GPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cu_internal.h"
#include "kernels.h"

#define MAX_HEADERS 8
#define MAX_OPTIONS 48

typedef struct headers {
  int n;
  char *name[MAX_HEADERS];
  char *text[MAX_HEADERS];
} headers;

static void headers_free(headers *h) {
  for (int i = 0; i < h->n; i++) {
    free(h->name[i]);
    free(h->text[i]);
  }
  h->n = 0;
}

/* Collect the files named by `#include "x"` lines in src (and, recursively, in those files) from kernels/:
 * NVRTC sees no file system of ours, so each header is handed to it by name. */
static int collect_headers(const char *src, headers *h, char *msg, size_t msg_len) {
  for (const char *line = src; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
    const char *p = line;
    while (*p == ' ' || *p == '\t') p++;
    if (strncmp(p, "#include", 8) != 0) continue;
    p += 8;
    while (*p == ' ' || *p == '\t') p++;
    if (*p != '"') continue; /* <...> includes are NVRTC's own business */
    const char *end = strchr(p + 1, '"');
    if (!end || end - p - 1 <= 0 || end - p - 1 > 200) continue;
    char name[256];
    memcpy(name, p + 1, (size_t)(end - p - 1));
    name[end - p - 1] = '\0';
    int known = 0;
    for (int i = 0; i < h->n; i++) known |= strcmp(h->name[i], name) == 0;
    if (known) continue;
    if (h->n == MAX_HEADERS) {
      snprintf(msg, msg_len, "%s: more than %d headers", name, MAX_HEADERS);
      return -1;
    }
    char *text = fa_kernel_source(name, NULL, msg, msg_len);
    char *copy = strdup(name);
    if (!text || !copy) {
      free(text);
      free(copy);
      if (!text) return -1;
      snprintf(msg, msg_len, "%s: out of host memory", name);
      return -1;
    }
    h->name[h->n] = copy;
    h->text[h->n] = text;
    h->n++;
    if (collect_headers(text, h, msg, msg_len) != 0) return -1;
  }
  return 0;
}

/* Split a copy of `s` at spaces into argv entries appended to opts. */
static int split_options(char *s, const char **opts, int n) {
  char *save = NULL;
  for (char *tok = strtok_r(s, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
    if (n == MAX_OPTIONS) return -1;
    opts[n++] = tok;
  }
  return n;
}

fa_status fa_cu_compile(const fa_cu_nvrtc *nv, const char *file, const char *defines, const char *arch,
                        int verbose, void **image, size_t *size, char **log, char *msg, size_t msg_len) {
  *image = NULL;
  *size = 0;
  if (log) *log = NULL;
  fa_status st = FA_ERROR_KERNEL_BUILD;
  headers h = {0};
  nvrtcProgram prog = NULL;
  char *log_text = NULL;
  char *src = fa_kernel_source(file, NULL, msg, msg_len);
  size_t opt_len = strlen(FA_CU_NVRTC_OPTIONS) + strlen(defines) + 64;
  char *opt_copy = malloc(opt_len);
  if (!src) return FA_ERROR_KERNEL_BUILD;
  if (!opt_copy) {
    snprintf(msg, msg_len, "%s: out of host memory", file);
    st = FA_ERROR_OUT_OF_MEMORY;
    goto done;
  }
  if (collect_headers(src, &h, msg, msg_len) != 0) goto done;

  const char *opts[MAX_OPTIONS];
  snprintf(opt_copy, opt_len, "--gpu-architecture=%s %s %s%s", arch, FA_CU_NVRTC_OPTIONS, defines,
           verbose ? " --ptxas-options=-v" : "");
  int nopt = split_options(opt_copy, opts, 0);
  if (nopt < 0) {
    snprintf(msg, msg_len, "%s: more than %d compile options in '%s'", file, MAX_OPTIONS, defines);
    goto done;
  }
  nvrtcResult r = nv->CreateProgram(&prog, src, file, h.n, (const char *const *)h.text,
                                    (const char *const *)h.name);
  if (r != NVRTC_SUCCESS) {
    snprintf(msg, msg_len, "nvrtcCreateProgram(%s): %s", file, nv->GetErrorString(r));
    st = r == NVRTC_ERROR_OUT_OF_MEMORY ? FA_ERROR_OUT_OF_MEMORY : FA_ERROR_KERNEL_BUILD;
    prog = NULL;
    goto done;
  }
  r = nv->CompileProgram(prog, nopt, opts);
  size_t log_size = 0;
  if (nv->GetProgramLogSize(prog, &log_size) == NVRTC_SUCCESS && log_size > 1 &&
      (log_text = malloc(log_size + 1)) != NULL) {
    if (nv->GetProgramLog(prog, log_text) != NVRTC_SUCCESS) log_text[0] = '\0';
    log_text[log_size] = '\0';
  }
  if (r != NVRTC_SUCCESS) {
    /* The log's head: the first error is what the reader needs; the rest often follows from it. */
    snprintf(msg, msg_len, "nvrtcCompileProgram(%s %s, %s): %s: %.600s", file, defines, arch, nv->GetErrorString(r),
             log_text ? log_text : "(no log)");
    goto done;
  }
  size_t n = 0;
  if ((r = nv->GetCUBINSize(prog, &n)) != NVRTC_SUCCESS || n == 0) {
    snprintf(msg, msg_len, "nvrtcGetCUBINSize(%s, %s): %s", file, arch,
             r != NVRTC_SUCCESS ? nv->GetErrorString(r) : "empty CUBIN");
    goto done;
  }
  void *cubin = malloc(n);
  if (!cubin) {
    snprintf(msg, msg_len, "%s: out of host memory for a %zu-byte CUBIN", file, n);
    st = FA_ERROR_OUT_OF_MEMORY;
    goto done;
  }
  if ((r = nv->GetCUBIN(prog, cubin)) != NVRTC_SUCCESS) {
    snprintf(msg, msg_len, "nvrtcGetCUBIN(%s, %s): %s", file, arch, nv->GetErrorString(r));
    free(cubin);
    goto done;
  }
  *image = cubin;
  *size = n;
  st = FA_SUCCESS;
done:
  if (prog) nv->DestroyProgram(&prog);
  if (st == FA_SUCCESS && log) {
    *log = log_text;
    log_text = NULL;
  }
  free(log_text);
  free(opt_copy);
  headers_free(&h);
  free(src);
  return st;
}

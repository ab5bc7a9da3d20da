/* std_nvrtc: compile kernels/standard.cu (the CUDA standard-attention kernels) with NVRTC through the library's
 * own fa_cu_compile, for each dtype and each architecture given (default sm_80 sm_90), and print ptxas's
 * register / spill report for every kernel. Needs NVRTC, no GPU. Exit status 1 when a compile fails or a
 * kernel spills.   std_nvrtc [-q] [sm_XY ...] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cu_internal.h"

/* Print the ptxas lines of a log; returns 1 when one reports spill stores or loads. */
static int report(const char *log, int quiet) {
  int spills = 0;
  for (const char *line = log; *line;) {
    const char *end = strchr(line, '\n');
    size_t n = end ? (size_t)(end - line) : strlen(line);
    const char *sp = memmem(line, n, "bytes spill stores", 18);
    if (sp) {
      const char *q = sp;
      while (q > line && q[-1] != ',') q--;
      const char *c = memchr(sp, ',', n - (size_t)(sp - line));
      if (atoi(q) > 0 || (c && atoi(c + 1) > 0)) spills = 1;
    }
    if (!quiet && (memmem(line, n, "Compiling entry", 15) || memmem(line, n, "Used", 4) || sp))
      printf("    %.*s\n", (int)n, line);
    line += n + (end ? 1 : 0);
  }
  return spills;
}

int main(int argc, char **argv) {
  int quiet = 0;
  const char *archs[16];
  int narch = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-q") == 0)
      quiet = 1;
    else if (strncmp(argv[i], "sm_", 3) == 0 && narch < 16)
      archs[narch++] = argv[i];
    else {
      fprintf(stderr, "usage: %s [-q] [sm_XY ...]\n", argv[0]);
      return 2;
    }
  }
  if (!narch) archs[narch++] = "sm_80", archs[narch++] = "sm_90";

  const fa_cu_nvrtc *nv;
  int version;
  char msg[2048];
  if (fa_cu_load_nvrtc(&nv, &version, msg, sizeof msg) != FA_SUCCESS) {
    fprintf(stderr, "std_nvrtc: %s\n", msg);
    return 1;
  }
  printf("NVRTC %d.%d\n", version / 1000, version % 1000 / 10);
  int failed = 0, spilled = 0;
  for (int a = 0; a < narch; a++) {
    for (int dt = 0; dt < 3; dt++) {
      const char *defines = fa_cu_dtype_define((fa_dtype)dt);
      void *image = NULL;
      size_t size = 0;
      char *log = NULL;
      fa_status st = fa_cu_compile(nv, "standard.cu", defines, archs[a], 1, &image, &size, &log, msg, sizeof msg);
      if (st != FA_SUCCESS) {
        printf("FAIL %s standard.cu %s\n  %s\n", archs[a], defines, msg);
        failed++;
      } else {
        printf("%s standard.cu %s: %zu-byte CUBIN\n", archs[a], defines, size);
        spilled += report(log ? log : "", quiet);
      }
      free(image);
      free(log);
    }
  }
  printf("%d failed, %d spill\n", failed, spilled);
  return failed || spilled ? 1 : 0;
}

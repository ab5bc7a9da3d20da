/* cu_bwd_nvrtc: compile kernels/flash_bwd.cu through the library's NVRTC path with the given defines, for
 * the given arch, and print ptxas's registers and spills (no GPU needed). Built by hand (not by meson):
 *   cc -std=c11 -O1 -D_GNU_SOURCE -Iinclude -Isrc -Isrc/cuda -I/usr/local/cuda/include -I. dev/cu_bwd_nvrtc.c \
 *      src/cuda/cu_loader.c src/cuda/cu_nvrtc.c src/kernels.c build-cub/kernels/kernels_embedded.c -ldl -lpthread \
 *      -o build-cub/cu_bwd_nvrtc
 *   FLASHATTN_KERNEL_DIR=kernels build-cub/cu_bwd_nvrtc [-o DIR] sm_XY "DEFINES" ["DEFINES" ...]
 * -o DIR writes each CUBIN to DIR/<n>.cubin (n counts the define strings from 0), to compare images.
 * Exit status 1 when a variant fails to compile. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cu_internal.h"

int main(int argc, char **argv) {
  const char *dir = NULL;
  int a = 1;
  if (argc > 2 && strcmp(argv[1], "-o") == 0) dir = argv[2], a = 3;
  if (argc - a < 2) {
    fprintf(stderr, "usage: %s [-o DIR] sm_XY DEFINES...\n", argv[0]);
    return 2;
  }
  const char *arch = argv[a++];
  const fa_cu_nvrtc *nv;
  int version, failed = 0;
  char msg[4096];
  if (fa_cu_load_nvrtc(&nv, &version, msg, sizeof msg) != FA_SUCCESS) {
    fprintf(stderr, "cu_bwd_nvrtc: %s\n", msg);
    return 1;
  }
  for (int n = 0; a < argc; a++, n++) {
    void *image = NULL;
    size_t size = 0;
    char *log = NULL;
    if (fa_cu_compile(nv, "flash_bwd.cu", argv[a], arch, 1, &image, &size, &log, msg, sizeof msg) != FA_SUCCESS) {
      printf("FAIL %s %s\n  %s\n", arch, argv[a], msg);
      failed = 1;
      continue;
    }
    printf("%s %s: %zu bytes\n", arch, argv[a], size);
    for (const char *line = log ? log : ""; *line;) {
      const char *end = strchr(line, '\n');
      size_t len = end ? (size_t)(end - line) : strlen(line);
      if (memmem(line, len, "Function properties", 19) || memmem(line, len, "Used", 4) ||
          memmem(line, len, "spill", 5) || memmem(line, len, "Compiling entry", 15))
        printf("    %.*s\n", (int)len, line);
      line += len + (end ? 1 : 0);
    }
    if (dir) {
      char path[1024];
      snprintf(path, sizeof path, "%s/%d.cubin", dir, n);
      FILE *f = fopen(path, "wb");
      if (f) fwrite(image, 1, size, f), fclose(f);
    }
    free(image);
    free(log);
  }
  return failed;
}

/* Kernel sources: the copies embedded at build time, or the files under FLASHATTN_KERNEL_DIR. */
#include "kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels_table.h"

static char *read_file(const char *path, size_t *len, char *msg, size_t msg_len) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(msg, msg_len, "FLASHATTN_KERNEL_DIR: cannot open %s", path);
    return NULL;
  }
  char *text = NULL;
  long n = -1;
  if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
  if (n >= 0 && fseek(f, 0, SEEK_SET) == 0) text = malloc((size_t)n + 1);
  if (text && fread(text, 1, (size_t)n, f) != (size_t)n) {
    free(text);
    text = NULL;
  }
  fclose(f);
  if (!text) {
    snprintf(msg, msg_len, "FLASHATTN_KERNEL_DIR: cannot read %s", path);
    return NULL;
  }
  text[n] = '\0';
  if (len) *len = (size_t)n;
  return text;
}

char *fa_kernel_source(const char *name, size_t *len, char *msg, size_t msg_len) {
  const char *dir = getenv("FLASHATTN_KERNEL_DIR");
  if (dir && *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return read_file(path, len, msg, msg_len);
  }
  for (const fa_embedded_kernel *k = fa_embedded_kernels; k->name; k++) {
    if (strcmp(k->name, name) != 0) continue;
    char *text = malloc(k->len + 1);
    if (!text) {
      snprintf(msg, msg_len, "%s: out of host memory", name);
      return NULL;
    }
    memcpy(text, k->text, k->len);
    text[k->len] = '\0';
    if (len) *len = k->len;
    return text;
  }
  snprintf(msg, msg_len, "kernel source %s is not embedded in this build", name);
  return NULL;
}

/* The table tools/embed_kernels.py generates: one entry per file under kernels/, NULL-terminated. */
#ifndef FA_KERNELS_TABLE_H
#define FA_KERNELS_TABLE_H

#include <stddef.h>

typedef struct fa_embedded_kernel {
  const char *name;
  const char *text;
  size_t len;
} fa_embedded_kernel;

extern const fa_embedded_kernel fa_embedded_kernels[];

#endif

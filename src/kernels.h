/* Device source files (kernels/NAME.cl, .cu, .cuh), embedded into the library at build time.
 * With FLASHATTN_KERNEL_DIR set, they are read from that directory instead, for kernel work. */
#ifndef FA_KERNELS_H
#define FA_KERNELS_H

#include <stddef.h>

#include "backend.h"

/* The text of kernels/<name> ("flash_fwd.cl"), malloc'd and NUL-terminated (caller frees), with its
 * length in *len (may be NULL). NULL when it is unknown or unreadable; msg (size msg_len) says why. */
FA_HIDDEN char *fa_kernel_source(const char *name, size_t *len, char *msg, size_t msg_len);

#endif

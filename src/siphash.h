/* SipHash-2-4 (Aumasson and Bernstein, 2012): a keyed 64-bit hash that, unlike FNV, cannot be recomputed for
 * altered data without the key. The kernel cache tags its entries with it. */
#ifndef FA_SIPHASH_H
#define FA_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

/* The tag of n bytes under a 16-byte key. */
FA_HIDDEN uint64_t fa_siphash(const unsigned char key[16], const void *data, size_t n);

#endif

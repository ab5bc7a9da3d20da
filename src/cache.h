/* On-disk cache of compiled kernels, shared by both backends.
 * Directory: FLASHATTN_CACHE_DIR, else $XDG_CACHE_HOME/flashattn, else $HOME/.cache/flashattn.
 * FLASHATTN_CACHE_DIR=off disables it. An entry is keyed by a string the backend builds from the source's
 * hash, the build options, the device and the driver version; the full key is stored in the entry and
 * compared on load, with the file's length and the payload's keyed tag (cache.c), so a collision, a truncated,
 * corrupt or forged file is a miss. Only regular files owned by the user are opened, without following links
 * or blocking; the directory must be the user's and not writable by others. Writes go to a temporary file
 * that is renamed into place.
 * Size: after each store the oldest entries (by write time) are removed until the cache holds at most
 * FLASHATTN_CACHE_MAX_BYTES (bytes, or with a K, M or G suffix; 0: no cap; default 256M). */
#ifndef FA_CACHE_H
#define FA_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

#define FA_CACHE_DEFAULT_MAX_BYTES ((uint64_t)256 << 20)

/* 64-bit FNV-1a of n bytes, continuing from seed (use FA_HASH_SEED to start). */
#define FA_HASH_SEED 0xcbf29ce484222325ull
FA_HIDDEN uint64_t fa_hash64(const void *data, size_t n, uint64_t seed);

/* The payload stored under key, malloc'd (caller frees), with its size; NULL on a miss. */
FA_HIDDEN void *fa_cache_load(const char *key, size_t *size);

/* Store a payload under key; best effort: returns 0 on success, -1 when nothing was written. */
FA_HIDDEN int fa_cache_store(const char *key, const void *data, size_t size);

/* What the cache is for fa_device_info.kernel_cache: its directory (returns 1), "off ..." (0), or a sentence
 * saying why it cannot be used (-1). Makes the directory and its secret when they are missing. */
FA_HIDDEN int fa_cache_describe(char *out, size_t n);

#endif

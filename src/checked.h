/* Overflow-safe arithmetic for shapes, strides, offsets and byte counts: each returns 1 and stores the
 * result when it fits, 0 (leaving *out unspecified) when it does not. Every product of caller-given sizes
 * in the library goes through these, so a hostile shape becomes an error instead of a wrapped value. */
#ifndef FA_CHECKED_H
#define FA_CHECKED_H

#include <stddef.h>
#include <stdint.h>

static inline int fa_mul_i64(int64_t a, int64_t b, int64_t *out) { return !__builtin_mul_overflow(a, b, out); }
static inline int fa_add_i64(int64_t a, int64_t b, int64_t *out) { return !__builtin_add_overflow(a, b, out); }
static inline int fa_mul_size(size_t a, size_t b, size_t *out) { return !__builtin_mul_overflow(a, b, out); }
static inline int fa_add_size(size_t a, size_t b, size_t *out) { return !__builtin_add_overflow(a, b, out); }

/* a * b, or INT64_MAX when the product does not fit: for values that must stay defined but will be refused
 * later (a saturated stride reaches past every buffer). */
static inline int64_t fa_mul_i64_sat(int64_t a, int64_t b) {
  int64_t r;
  return fa_mul_i64(a, b, &r) ? r : INT64_MAX;
}

#endif

/* Block-mask patterns for block-sparse attention, built on the host: the caller uploads the bytes and
 * passes them as desc->block_mask. */
#include "backend.h"

static fa_status check_grid(const char *fn, const uint8_t *mask, int64_t rows, int64_t cols) {
  if (!mask) return fa_fail_thread(FA_ERROR_INVALID_ARGUMENT, "%s: mask is NULL", fn);
  if (rows <= 0 || cols <= 0)
    return fa_fail_thread(FA_ERROR_INVALID_ARGUMENT, "%s: %s is %lld, must be positive", fn,
                          rows <= 0 ? "rows" : "cols", (long long)(rows <= 0 ? rows : cols));
  int64_t n;
  if (__builtin_mul_overflow(rows, cols, &n) || (uint64_t)n > SIZE_MAX)
    return fa_fail_thread(FA_ERROR_INVALID_ARGUMENT, "%s: rows %lld x cols %lld overflows the address space", fn,
                          (long long)rows, (long long)cols);
  return FA_SUCCESS;
}

fa_status fa_block_mask_butterfly(uint8_t *mask, int64_t rows, int64_t cols) {
  fa_status st = check_grid("fa_block_mask_butterfly", mask, rows, cols);
  if (st != FA_SUCCESS) return st;
  /* The support of the flat butterfly: the identity plus one butterfly factor per stride 2^k, each linking
   * block i with block i xor 2^k. */
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < cols; j++) mask[i * cols + j] = __builtin_popcountll((uint64_t)(i ^ j)) <= 1;
  return FA_SUCCESS;
}

fa_status fa_block_mask_local_global(uint8_t *mask, int64_t rows, int64_t cols, int64_t window, int64_t global) {
  fa_status st = check_grid("fa_block_mask_local_global", mask, rows, cols);
  if (st != FA_SUCCESS) return st;
  if (window < 0 || global < 0)
    return fa_fail_thread(FA_ERROR_INVALID_ARGUMENT, "fa_block_mask_local_global: %s is %lld, must be >= 0",
                          window < 0 ? "window" : "global", (long long)(window < 0 ? window : global));
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < cols; j++) {
      const int64_t dist = i > j ? i - j : j - i;
      mask[i * cols + j] = dist <= window || i < global || j < global;
    }
  return FA_SUCCESS;
}

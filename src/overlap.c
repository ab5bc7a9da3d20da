/* Aliasing between tensor views, for the rule that outputs share no element with anything (overlap.h). */
#include "overlap.h"

#include <stdlib.h>

typedef struct span_dim {
  int64_t stride;
  int64_t lo, hi; /* the range of index differences along this dimension */
  int64_t rest_lo, rest_hi; /* what the dimensions of smaller stride can add to the offset, at most */
} span_dim;

static int by_stride_desc(const void *x, const void *y) {
  const span_dim *a = x, *b = y;
  return (a->stride < b->stride) - (a->stride > b->stride);
}

/* Largest element index + 1 (all strides >= 0, checked by the caller). */
static int64_t extent(const fa_tensor *t) {
  int64_t last = 0;
  for (int i = 0; i < 4; i++) last += (t->shape[i] - 1) * t->stride[i];
  return last + 1;
}

int fa_tensor_self_overlaps(const fa_tensor *t) {
  span_dim d[4];
  int n = 0;
  for (int i = 0; i < 4; i++) {
    if (t->shape[i] == 1) continue;
    if (t->stride[i] == 0) return 1;
    d[n].stride = t->stride[i], d[n].hi = t->shape[i] - 1;
    n++;
  }
  qsort(d, (size_t)n, sizeof d[0], by_stride_desc);
  int64_t span = 1; /* elements the dimensions of smaller stride cover, gaps included */
  for (int i = n - 1; i >= 0; i--) {
    if (d[i].stride < span) return 1;
    span += d[i].hi * d[i].stride;
  }
  return 0;
}

static int64_t floor_div(int64_t a, int64_t b) { return a / b - (a % b != 0 && (a < 0) != (b < 0)); }
static int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }

/* Whether rem = sum of k_i * d[i].stride has a solution with d[i].lo <= k_i <= d[i].hi, searching from the
 * largest stride down; only indices that the smaller strides can still complete are tried, so a nested
 * layout leaves one or two per dimension. *budget bounds the search: when it runs out, assume a solution. */
static int reachable(const span_dim *d, int n, int64_t rem, int *budget) {
  if (n == 0) return rem == 0;
  if (--*budget < 0) return 1;
  if (d->stride == 0) return reachable(d + 1, n - 1, rem, budget);
  int64_t first = ceil_div(rem - d->rest_hi, d->stride), last = floor_div(rem - d->rest_lo, d->stride);
  if (first < d->lo) first = d->lo;
  if (last > d->hi) last = d->hi;
  for (int64_t k = first; k <= last; k++)
    if (reachable(d + 1, n - 1, rem - k * d->stride, budget)) return 1;
  return 0;
}

/* Same dtype, and the same stride wherever either view has more than one index: a solves b's element
 * offsets exactly. delta is b's first element minus a's, in elements. */
static int interleaved_overlap(const fa_tensor *a, const fa_tensor *b, int64_t delta) {
  span_dim d[4];
  int n = 0;
  for (int i = 0; i < 4; i++) {
    if (a->shape[i] == 1 && b->shape[i] == 1) continue;
    int64_t s = a->shape[i] > 1 ? a->stride[i] : b->stride[i];
    if (a->shape[i] > 1 && b->shape[i] > 1 && a->stride[i] != b->stride[i]) return -1;
    /* a's index minus b's index: from -(b's size - 1) to a's size - 1 */
    d[n].stride = s, d[n].lo = -(b->shape[i] - 1), d[n].hi = a->shape[i] - 1;
    n++;
  }
  qsort(d, (size_t)n, sizeof d[0], by_stride_desc);
  int64_t lo = 0, hi = 0;
  for (int i = n - 1; i >= 0; i--) {
    d[i].rest_lo = lo, d[i].rest_hi = hi;
    lo += d[i].lo * d[i].stride, hi += d[i].hi * d[i].stride;
  }
  int budget = 4096;
  return reachable(d, n, delta, &budget);
}

int fa_spans_overlap(const fa_tensor *a, uint64_t a_extra_bytes, const fa_tensor *b) {
  if (!a || !b || a->buf->space != b->buf->space) return 0;
  const uint64_t base_a = a->buf->base + a->offset, base_b = b->buf->base + b->offset;
  const uint64_t end_a = base_a + (uint64_t)extent(a) * fa_dtype_size(a->dtype) + a_extra_bytes;
  const uint64_t end_b = base_b + (uint64_t)extent(b) * fa_dtype_size(b->dtype);
  return base_a < end_b && base_b < end_a;
}

int fa_tensors_overlap(const fa_tensor *a, const fa_tensor *b) {
  if (!fa_spans_overlap(a, 0, b)) return 0;
  const uint64_t base_a = a->buf->base + a->offset, base_b = b->buf->base + b->offset;
  const size_t es_a = fa_dtype_size(a->dtype);
  if (a->dtype != b->dtype) return 1;
  const int64_t diff = (int64_t)(base_b - base_a);
  if (diff % (int64_t)es_a) return 1; /* misaligned against each other: elements straddle */
  const int r = interleaved_overlap(a, b, diff / (int64_t)es_a);
  return r != 0; /* -1: different strides, not solved: assume they meet */
}

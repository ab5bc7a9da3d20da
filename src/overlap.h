/* Whether operands share memory: outputs must have distinct elements of their own and none in common with
 * any other operand of the call (the header's "Outputs and aliasing"). Both take tensors that passed
 * check_tensor (in bounds, strides >= 0, extents that fit int64). */
#ifndef FA_OVERLAP_H
#define FA_OVERLAP_H

#include "backend.h"

/* 1 when two of t's indices may reach one element: a stride of 0 over a size above 1, or a layout that is
 * not, dimension by dimension in order of stride, past the span of the smaller ones (such a layout may be
 * disjoint, but proving it takes more than it is worth; no packed, padded or permuted layout is refused). */
FA_HIDDEN int fa_tensor_self_overlaps(const fa_tensor *t);

/* 1 when a and b may share an element. Buffers in different memory spaces (struct fa_buffer) are apart;
 * in one space, byte ranges that do not meet are apart, and
 * interleaved views with the same dtype and strides (q, k, v in one packed qkv tensor) are solved exactly. */
FA_HIDDEN int fa_tensors_overlap(const fa_tensor *a, const fa_tensor *b);

/* 1 when the byte ranges of a (stretched by a_extra_bytes past its end: a run of parts) and b meet in one
 * memory space; 0 when either is NULL. The coarse test fa_tensors_overlap starts from. */
FA_HIDDEN int fa_spans_overlap(const fa_tensor *a, uint64_t a_extra_bytes, const fa_tensor *b);

#endif

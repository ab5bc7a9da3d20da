/* How the decode kernels split a forward problem: query rows per group, groups per key/value head, and the
 * number of key splits (pure functions of the problem and the device, shared by both backends). */
#ifndef FA_DECODE_PLAN_H
#define FA_DECODE_PLAN_H

#include "backend.h"

typedef struct fa_decode_plan {
  int rows;       /* query rows per group: a power of two <= max_rows covering Sq x Hq / Hkv where it can */
  int row_blocks; /* groups per key/value head: ceil(Sq x Hq / Hkv / rows), Sq the longest with varlen */
  int splits;     /* key splits per group: 1 writes o directly, more go through the combine kernel */
} fa_decode_plan;

/* The plan for p on a device of `units` SMs or compute units, each worth `groups_per_unit` resident groups:
 * p->num_splits when set (at most one split per 16 keys), else FLASHATTN_NUM_SPLITS when set, else the most
 * splits whose groups fit in units x groups_per_unit (at least 1: every group runs equally long, so a count
 * just above a multiple of the device would leave a last wave nearly empty), with at least 256 keys per split
 * and at most 128 splits. */
FA_HIDDEN void fa_decode_plan_make(const fa_problem *p, int max_rows, int units, int groups_per_unit,
                                   fa_decode_plan *out);

/* Whether the decode kernels serve p: a KV cache's lengths or pages (seqlens_k, block_table) need them; any other
 * forward (varlen, window, ALiBi and softcap included) goes there when its query rows per key/value head (the
 * longest sequence's, with varlen) are at most max_rows, the rows one group of the backend's kernel holds (more
 * would read K and V once per row block, slower than the flash forward: H200, Sq 4 x 4 heads per KV head,
 * 0.48 TB/s against the flash forward's 1.0), and to the flash kernels otherwise. FLASHATTN_DECODE=0 turns the
 * first off. */
FA_HIDDEN int fa_decode_wanted(const fa_problem *p, int max_rows);

/* Workspace bytes of a plan: with more than one split, the float32 partial outputs and log-sum-exps. */
FA_HIDDEN size_t fa_decode_workspace_bytes(const fa_problem *p, const fa_decode_plan *plan);

#endif

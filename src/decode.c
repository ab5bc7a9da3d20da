/* The decode kernels' plan (src/decode.h). */
#include "decode.h"

#include <stdlib.h>
#include <string.h>

static int env_splits(void) {
  const char *env = getenv("FLASHATTN_NUM_SPLITS");
  if (!env || !*env) return 0;
  const long v = strtol(env, NULL, 10);
  return v > 0 && v <= 1024 ? (int)v : 0;
}

void fa_decode_plan_make(const fa_problem *p, int max_rows, int units, int groups_per_unit, fa_decode_plan *out) {
  const int varlen = p->cu_seqlens_q.buf != NULL;
  const int64_t rows_total = (varlen ? p->max_seqlen_q : p->seqlen_q) * (p->heads_q / p->heads_kv);
  int rows = 1;
  while (rows < max_rows && rows < rows_total) rows *= 2;
  out->rows = rows;
  out->row_blocks = rows_total ? (int)((rows_total + rows - 1) / rows) : 1;
  const int64_t most = (p->seqlen_k + 15) / 16; /* a split below 16 keys is never useful */
  int64_t splits = p->num_splits ? p->num_splits : env_splits();
  if (!splits) {
    const int64_t groups = (varlen ? p->seqs : p->batch) * p->heads_kv * out->row_blocks;
    const int64_t target = (int64_t)(units > 0 ? units : 1) * groups_per_unit;
    splits = target / groups; /* rounded down: a last wave of a few blocks would cost a whole wave's time */
    if (splits < 1) splits = 1;
    const int64_t by_keys = (p->seqlen_k + 255) / 256;
    if (splits > by_keys) splits = by_keys;
    if (splits > 128) splits = 128;
  }
  if (splits > most) splits = most;
  out->splits = splits < 1 ? 1 : (int)splits;
}

int fa_decode_wanted(const fa_problem *p, int max_rows) {
  if (p->seqlens_k.buf || p->block_table.buf) return 1;
  if (p->algo != FA_ALGO_FLASH || p->mask.buf || p->dropout_p > 0.0f) return 0;
  const char *env = getenv("FLASHATTN_DECODE");
  if (env && strcmp(env, "0") == 0) return 0;
  return (p->cu_seqlens_q.buf ? p->max_seqlen_q : p->seqlen_q) * (p->heads_q / p->heads_kv) <= max_rows;
}

size_t fa_decode_workspace_bytes(const fa_problem *p, const fa_decode_plan *plan) {
  if (plan->splits < 2) return 0;
  const size_t rows = (size_t)p->batch * (size_t)p->heads_q * (size_t)p->seqlen_q;
  return (size_t)plan->splits * rows * ((size_t)p->head_dim + 1) * sizeof(float);
}

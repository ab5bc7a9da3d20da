/* The portable split-KV decode kernel and the combine kernel (fa_combine, and the second step of a split
 * decode), for every OpenCL device. The host puts common.cl, masks.h and decode.h before this file.
 *
 * fa_decode: q [B, Sq, Hq, D]; k, v [B, cap, Hkv, D] or pages [num_pages, page_size, Hkv, D]; o like q;
 * lse [B, Hq, Sq]. One work-group serves ROWS query rows of one key/value head (the rows are the flattened
 * (query position, head of the group) pairs, so every head that shares the K/V head reads it once) and one
 * split of their keys; grid (row blocks x splits, Hkv, B). Per tile of WG keys:
 *   each work-item scores one key against the ROWS rows (q, pre-scaled, in local memory),
 *   one work-item per row takes the tile's max, every work-item its key's exponentials, then the row's sum,
 *   each work-item accumulates its columns of P V for every row, reading each V element once (coalesced).
 * With one split the result goes to o and lse; with several, to part_o (float32, normalised by the split's
 * own sum) and part_lse (from element plse_off), packed [split][B][Hq][Sq][D] and [split][B][Hq][Sq], for fa_combine.
 * Defines: HEAD_DIM, ROWS, WG, FA_DTYPE, FA_DEC_MODS (1: softcap or ALiBi present). */

#define FA_DEC_COLS ((HEAD_DIM + WG - 1) / WG) /* columns per work-item: t, t + WG, ... (every row of each) */

__kernel __attribute__((reqd_work_group_size(WG, 1, 1))) void fa_decode(
    const __global fa_t *q, long q_off, long q_sb, long q_ss, long q_sh, const __global fa_t *k, long k_off,
    long k_sb, long k_ss, long k_sh, const __global fa_t *v, long v_off, long v_sb, long v_ss, long v_sh,
    __global fa_t *o, long o_off, long o_sb, long o_ss, long o_sh, __global float *lse, long l_off, long l_sb,
    long l_sh, long l_ss, int has_lse, __global float *part_o, __global float *part_lse, long plse_off,
    const __global int *seqlens_buf, long sl_off, long sl_s, int has_seqlens, const __global int *table_buf,
    long t_off, long t_sb, long t_sp, int paged, int page_size, int num_pages, const __global float *alibi_buf,
    long al_off, long al_sb, long al_sh, int has_alibi, const __global int *cuq_buf, long cuq_off, long cuq_s,
    const __global int *cuk_buf, long cuk_off, long cuk_s, int varlen,
    int batch, int seqlen_q, int cap, int heads_q, int group, int causal, int window, int wl, int wr, float scale,
    float softcap, int splits, int row_blocks) {
  const __global int *seqlens = seqlens_buf + sl_off, *table = table_buf + t_off;
  const __global float *alibi = alibi_buf + al_off;
  __local float qs[ROWS][HEAD_DIM];
  __local float ps[ROWS][WG];
  __local float row_scale[ROWS], row_max[ROWS];
  __local int row_lo[ROWS], row_hi[ROWS];
  const int t = (int)get_local_id(0);
  const int rb = (int)get_group_id(0) % row_blocks, split = (int)get_group_id(0) / row_blocks;
  const int hk = (int)get_group_id(1), b = (int)get_group_id(2);
  /* The sequence's query rows q0 .. q0 + sq - 1 (of batch qb) and keys kr0 .. kr0 + len - 1 (of batch kb). */
  int len, sq, q0, kr0;
  const int qb = varlen ? 0 : b, kb = varlen ? 0 : b;
  fa_dec_sequence(cuq_buf + cuq_off, cuq_s, cuk_buf + cuk_off, cuk_s, varlen, seqlens, sl_s, has_seqlens, b, seqlen_q,
                  cap, &q0, &sq, &kr0, &len);
  const int rows_total = sq * group;

  /* Rows: flat index f = query position * group + head of the group. */
  for (int x = t; x < ROWS * HEAD_DIM; x += WG) {
    const int r = x / HEAD_DIM, d = x % HEAD_DIM, f = rb * ROWS + r;
    float val = 0.0f;
    if (f < rows_total)
      val = scale * fa_load(q, q_off + qb * q_sb + (long)(q0 + f / group) * q_ss + (long)(hk * group + f % group) * q_sh + d);
    qs[r][d] = val;
  }
  if (t < ROWS) {
    const int f = rb * ROWS + t;
    int lo = 0, hi = 0;
    if (f < rows_total) fa_dec_row_keys(f / group, sq, len, causal, window, wl, wr, &lo, &hi);
    row_lo[t] = lo, row_hi[t] = hi;
  }
  barrier(CLK_LOCAL_MEM_FENCE);
  /* The group's keys: the union of its rows' ranges (rows in between see a sub-range), then this split's. */
  int glo = cap, ghi = 0;
  for (int r = 0; r < ROWS; r++)
    if (row_hi[r] > row_lo[r]) glo = min(glo, row_lo[r]), ghi = max(ghi, row_hi[r]);
  int klo = 0, khi = 0;
  if (ghi > glo) fa_dec_split_keys(glo, ghi, split, splits, &klo, &khi);

  float m = FA_MAX_INIT, l = 0.0f; /* work-items t < ROWS: row t's running max (base 2) and sum */
  float acc[ROWS][FA_DEC_COLS];
  for (int r = 0; r < ROWS; r++)
    for (int e = 0; e < FA_DEC_COLS; e++) acc[r][e] = 0.0f;

  for (int k0 = klo; k0 < khi; k0 += WG) {
    /* Scores of key k0 + t against every row. */
    const int j = k0 + t;
    if (j < khi) {
      const long kr = k_off + fa_dec_key_offset(table, t_sb, t_sp, paged, page_size, num_pages, kb, kr0 + j, k_sb, k_ss) +
                      (long)hk * k_sh;
      float sc[ROWS];
      for (int r = 0; r < ROWS; r++) sc[r] = 0.0f;
      for (int d = 0; d < HEAD_DIM; d += 8) {
        const float8 kv = fa_load8(k, kr + d);
        for (int r = 0; r < ROWS; r++) {
          const float8 qv = vload8(0, &qs[r][d]);
          sc[r] += dot(qv.lo, kv.lo) + dot(qv.hi, kv.hi);
        }
      }
      for (int r = 0; r < ROWS; r++) {
        float s = -INFINITY;
        if (j >= row_lo[r] && j < row_hi[r]) {
          s = sc[r];
#if FA_DEC_MODS
          const int f = rb * ROWS + r, h = hk * group + f % group;
          const float slope = has_alibi ? alibi[b * al_sb + h * al_sh] : 0.0f;
          s = fa_dec_modify(s, softcap, slope, f / group + len - sq, j);
#endif
          s *= FA_LOG2E;
        }
        ps[r][t] = s;
      }
    } else {
      for (int r = 0; r < ROWS; r++) ps[r][t] = -INFINITY;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    /* Row t's new running max and the factor on its old accumulators; then each work-item turns its key's
     * scores into probabilities (the exponentials in parallel), and row t adds them to its sum. */
    if (t < ROWS) {
      float mt = m;
      for (int c = 0; c < WG; c++) mt = fmax(mt, ps[t][c]);
      row_scale[t] = exp2(m - mt);
      row_max[t] = mt;
      m = mt;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int r = 0; r < ROWS; r++) ps[r][t] = exp2(ps[r][t] - row_max[r]);
    barrier(CLK_LOCAL_MEM_FENCE);
    if (t < ROWS) {
      float sum = 0.0f;
      for (int c = 0; c < WG; c++) sum += ps[t][c];
      l = l * row_scale[t] + sum;
    }
    /* Each V element is read once and serves every row. */
    const int nk = min(WG, khi - k0);
    for (int r = 0; r < ROWS; r++)
      for (int e = 0; e < FA_DEC_COLS; e++) acc[r][e] *= row_scale[r];
    for (int c = 0; c < nk; c++) {
      const long vr = v_off + fa_dec_key_offset(table, t_sb, t_sp, paged, page_size, num_pages, kb, kr0 + k0 + c, v_sb, v_ss) +
                      (long)hk * v_sh;
      for (int e = 0; e < FA_DEC_COLS; e++) {
        const int d = t + e * WG;
        if (d >= HEAD_DIM) break;
        const float vv = fa_load(v, vr + d);
        for (int r = 0; r < ROWS; r++) acc[r][e] += ps[r][c] * vv;
      }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
  }

  /* Row sums to every work-item, then the outputs. */
  if (t < ROWS) row_scale[t] = l;
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int r = 0; r < ROWS; r++) {
    const int f = rb * ROWS + r;
    if (f >= rows_total) break;
    const int i = q0 + f / group, h = hk * group + f % group;
    const float lr = row_scale[r];
    for (int e = 0; e < FA_DEC_COLS; e++) {
      const int d = t + e * WG;
      if (d >= HEAD_DIM) break;
      const float val = lr > 0.0f ? acc[r][e] / lr : 0.0f;
      if (splits == 1)
        fa_store(o, o_off + qb * o_sb + (long)i * o_ss + (long)h * o_sh + d, val);
      else
        part_o[((((long)split * batch + qb) * heads_q + h) * seqlen_q + i) * HEAD_DIM + d] = val;
    }
  }
  const int f = rb * ROWS + t;
  if (t < ROWS && f < rows_total) {
    const int i = q0 + f / group, h = hk * group + f % group;
    const float row_lse = l > 0.0f ? m * FA_LN2 + log(l) : -INFINITY;
    if (splits > 1)
      part_lse[plse_off + (((long)split * batch + qb) * heads_q + h) * seqlen_q + i] = row_lse;
    else if (has_lse)
      lse[l_off + qb * l_sb + (long)h * l_sh + (long)i * l_ss] = row_lse;
  }
}

/* fa_combine: o = sum_p exp(lse_p - lse) o_p, lse = log sum_p exp(lse_p). One work-group of FA_COMBINE_WG
 * work-items per (row, head, batch), as decode.cu's: the max and the sum go over the parts with the work-items
 * side by side; then slice s of FA_COMBINE_WG / 32 sums parts s, s + slices, ... with its 32 work-items over
 * the columns (HEAD_DIM / 32 each, rounded up), so that a split decode's many parts cost a few rounds of
 * independent loads rather than one round per part (one work-group per row walking them in turn was most of a
 * B 1 decode's time), and the slices add up in local memory. Parts are views of part 0 (offsets and strides in elements of
 * their dtype, FA_PART_DTYPE) stepped by op_stride / lp_stride per part. */
#ifndef FA_PART_DTYPE
#define FA_PART_DTYPE FA_DTYPE
#endif
#if FA_PART_DTYPE == 0
#define fa_part_t float
#define fa_part_load fa_load_f32
#elif FA_PART_DTYPE == 1
#define fa_part_t half
#define fa_part_load fa_load_f16
#else
#define fa_part_t ushort
#define fa_part_load fa_load_bf16
#endif

#ifndef FA_COMBINE_WG
#define FA_COMBINE_WG 128 /* or 32, where the device allows fewer for it (src/opencl/cl_decode.c) */
#endif
#define FA_COMBINE_SLICES (FA_COMBINE_WG / 32)
#define FA_COMBINE_COLS ((HEAD_DIM + 31) / 32)

__kernel __attribute__((reqd_work_group_size(FA_COMBINE_WG, 1, 1))) void fa_combine(
    const __global fa_part_t *op, long op_off, long op_sb, long op_ss, long op_sh, long op_stride,
    const __global float *lp, long lp_off, long lp_sb, long lp_sh, long lp_ss, long lp_stride, __global fa_t *o,
    long o_off, long o_sb, long o_ss, long o_sh, __global float *lse, long l_off, long l_sb, long l_sh, long l_ss,
    int has_lse, int parts, int head_dim) {
  __local float red[FA_COMBINE_WG], acc_s[FA_COMBINE_SLICES][FA_COMBINE_COLS * 32];
  const int i = (int)get_group_id(0), h = (int)get_group_id(1), b = (int)get_group_id(2);
  const int t = (int)get_local_id(0), slice = t / 32, c = t % 32;
  const long lrow = lp_off + b * lp_sb + (long)h * lp_sh + (long)i * lp_ss;
  float mx = -INFINITY;
  for (int p = t; p < parts; p += FA_COMBINE_WG) mx = fmax(mx, lp[lrow + p * lp_stride]);
  red[t] = mx;
  barrier(CLK_LOCAL_MEM_FENCE);
  mx = -INFINITY;
  for (int x = 0; x < FA_COMBINE_WG; x++) mx = fmax(mx, red[x]);
  barrier(CLK_LOCAL_MEM_FENCE); /* red is reused for the sum */
  float sum = 0.0f;
  if (mx > -INFINITY)
    for (int p = t; p < parts; p += FA_COMBINE_WG) sum += exp(lp[lrow + p * lp_stride] - mx);
  red[t] = sum;
  barrier(CLK_LOCAL_MEM_FENCE);
  sum = 0.0f;
  for (int x = 0; x < FA_COMBINE_WG; x++) sum += red[x];
  const float total = mx > -INFINITY ? mx + log(sum) : -INFINITY;
  const long orow = op_off + b * op_sb + (long)i * op_ss + (long)h * op_sh;
  float acc[FA_COMBINE_COLS];
  for (int j = 0; j < FA_COMBINE_COLS; j++) acc[j] = 0.0f;
  if (mx > -INFINITY)
    for (int p = slice; p < parts; p += FA_COMBINE_SLICES) {
      const float lv = lp[lrow + p * lp_stride];
      if (lv > -INFINITY) {
        const float wt = exp(lv - total);
        for (int j = 0; j < FA_COMBINE_COLS; j++) {
          const int d = c + 32 * j;
          if (d < head_dim) acc[j] += wt * fa_part_load(op, orow + p * op_stride + d);
        }
      }
    }
  for (int j = 0; j < FA_COMBINE_COLS; j++) acc_s[slice][c + 32 * j] = acc[j];
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int d = t; d < head_dim; d += FA_COMBINE_WG) {
    float val = 0.0f;
    for (int x = 0; x < FA_COMBINE_SLICES; x++) val += acc_s[x][d];
    fa_store(o, o_off + b * o_sb + (long)i * o_ss + (long)h * o_sh + d, val);
  }
  if (has_lse && t == 0) lse[l_off + b * l_sb + (long)h * l_sh + (long)i * l_ss] = total;
}

/* fa_kv_append: element (b, t, h, d) of k_new and v_new into cache position seqlens_k[b] + t (clamped into the
 * cache: the host has checked it unless the caller trusts its indices). One work-item per element. */
__kernel void fa_kv_append(__global fa_t *kc, long kc_off, long kc_sb, long kc_ss, long kc_sh, __global fa_t *vc,
                           long vc_off, long vc_sb, long vc_ss, long vc_sh, const __global fa_t *kn, long kn_off,
                           long kn_sb, long kn_ss, long kn_sh, const __global fa_t *vn, long vn_off, long vn_sb,
                           long vn_ss, long vn_sh, const __global int *seqlens_buf, long sl_off, long sl_s,
                           const __global int *table_buf, long t_off, long t_sb, long t_sp, int paged, int page_size,
                           int num_pages, int cap, int seqlen_new, int heads_kv, int head_dim, long total) {
  const long x = (long)get_global_id(0);
  if (x >= total) return;
  const int d = (int)(x % head_dim), h = (int)(x / head_dim % heads_kv);
  const int t = (int)(x / ((long)head_dim * heads_kv) % seqlen_new), b = (int)(x / ((long)head_dim * heads_kv * seqlen_new));
  const int len = fa_dec_length(seqlens_buf + sl_off, sl_s, 1, b, cap);
  const int pos = min(len + t, cap - 1);
  const __global int *table = table_buf + t_off;
  const long ko = fa_dec_key_offset(table, t_sb, t_sp, paged, page_size, num_pages, b, pos, kc_sb, kc_ss);
  const long vo = fa_dec_key_offset(table, t_sb, t_sp, paged, page_size, num_pages, b, pos, vc_sb, vc_ss);
  fa_store(kc, kc_off + ko + (long)h * kc_sh + d, fa_load(kn, kn_off + b * kn_sb + (long)t * kn_ss + (long)h * kn_sh + d));
  fa_store(vc, vc_off + vo + (long)h * vc_sh + d, fa_load(vn, vn_off + b * vn_sb + (long)t * vn_ss + (long)h * vn_sh + d));
}

/* The CUDA split-KV decode kernel and the combine kernel (fa_combine, and the second step of a split decode).
 *
 * fa_decode: q [B, Sq, Hq, D]; k, v [B, cap, Hkv, D] or pages [num_pages, page_size, Hkv, D]; o like q;
 * lse [B, Hq, Sq]. One block of 128 threads serves ROWS query rows of one key/value head (the flattened
 * (query position, head of the group) pairs: every query head that shares the K/V head reads it once) and one
 * split of their keys; grid (row blocks x splits, Hkv, B). The keys stream at memory speed:
 *   LPK lanes hold one key row, 16 bytes each (one vector load per lane and row), so a warp reads 32 / LPK
 *   whole rows per load and a block SLOTS = 128 / LPK rows, U at a time per slot, K and V loads issued together;
 *   q, pre-scaled, and the P V accumulators live in registers (ROWS x the lane's columns);
 *   a score is the lanes' partial dots summed by xor shuffles; each slot keeps its own online softmax, and
 *   the slots merge through shared memory at the end.
 * With one split the result goes to o and lse; with several, to the float32 workspace for fa_combine.
 * Defines: HEAD_DIM, ROWS (<= 8), FA_DTYPE, FA_DEC_MODS (softcap or ALiBi present), FA_DEC_VEC16 (1: every
 * k and v row starts on a 16-byte boundary; 0: element loads). */
#include "cuda_common.cuh"
#include "cuda_params.h"
#include "decode.h"

#define THREADS 128
#define U 2 /* keys per slot per step */

constexpr int kVec = 16 / (int)sizeof(fa_elem); /* elements per 16-byte piece */
constexpr int kChunks = HEAD_DIM / kVec;
constexpr int pow2_at_least(int n) { return n <= 1 ? 1 : 2 * pow2_at_least((n + 1) / 2); }
constexpr int kLpk = kChunks >= 32 ? 32 : pow2_at_least(kChunks); /* lanes per key row */
constexpr int kNc = (kChunks + kLpk - 1) / kLpk;                  /* pieces per lane */
constexpr int kSlots = THREADS / kLpk;
constexpr int kCols = kNc * kVec; /* columns per lane */

/* kVec elements from p (16-byte aligned when FA_DEC_VEC16) as floats. */
static __device__ __forceinline__ void load_piece(const fa_elem *p, float *out) {
#if FA_DEC_VEC16
  const uint4 w = *reinterpret_cast<const uint4 *>(p);
  const unsigned u[4] = {w.x, w.y, w.z, w.w};
#if FA_DTYPE == 0
#pragma unroll
  for (int e = 0; e < 4; e++) out[e] = __uint_as_float(u[e]);
#else
#pragma unroll
  for (int e = 0; e < 8; e++) {
    const unsigned short h = (unsigned short)(u[e / 2] >> (16 * (e % 2)));
#if FA_DTYPE == 1
    out[e] = fa_f16_to_float(h);
#else
    out[e] = fa_bf16_to_float(h);
#endif
  }
#endif
#else
#pragma unroll
  for (int e = 0; e < kVec; e++) out[e] = fa_load(p + e);
#endif
}

extern "C" __global__ void __launch_bounds__(THREADS) fa_decode(const fa_decode_params a) {
  __shared__ float sm_acc[kSlots][ROWS][HEAD_DIM];
  __shared__ float sm_m[kSlots][ROWS], sm_l[kSlots][ROWS];
  const int t = threadIdx.x, slot = t / kLpk, lane = t % kLpk;
  const int rb = blockIdx.x % a.row_blocks, split = blockIdx.x / a.row_blocks;
  const int hk = blockIdx.y, b = blockIdx.z;
  const int *seqlens = (const int *)a.seqlens, *table = (const int *)a.table;
  /* The sequence's query rows q0 .. q0 + sq - 1 (of batch qb) and keys kr0 .. kr0 + len - 1 (of batch kb). */
  int len, sq = a.seqlen_q, q0 = 0, kr0 = 0;
  const int qb = a.varlen ? 0 : b, kb = a.varlen ? 0 : b;
  if (a.varlen) {
    fa_dec_span((const int *)a.cu_q, a.cu_q_s, b, a.seqlen_q, &q0, &sq);
    fa_dec_span((const int *)a.cu_k, a.cu_k_s, b, a.cap, &kr0, &len);
  } else {
    len = fa_dec_length(seqlens, a.sl_s, a.has_seqlens, b, a.cap);
  }
  const int rows_total = sq * a.group;
  const fa_elem *q = (const fa_elem *)a.q, *k = (const fa_elem *)a.k, *v = (const fa_elem *)a.v;

  /* This lane's columns of each row's q (pre-scaled), and every row's key range. */
  float qr[ROWS][kCols];
  int lo[ROWS], hi[ROWS];
  int glo = len, ghi = 0;
#pragma unroll
  for (int r = 0; r < ROWS; r++) {
    const int f = rb * ROWS + r;
    lo[r] = hi[r] = 0;
    if (f < rows_total) fa_dec_row_keys(f / a.group, sq, len, a.causal, a.window, a.wl, a.wr, &lo[r], &hi[r]);
    if (hi[r] > lo[r]) glo = min(glo, lo[r]), ghi = max(ghi, hi[r]);
#pragma unroll
    for (int n = 0; n < kNc; n++)
#pragma unroll
      for (int e = 0; e < kVec; e++) {
        const int d = (lane + n * kLpk) * kVec + e;
        qr[r][n * kVec + e] =
            f < rows_total && d < HEAD_DIM
                ? a.scale * fa_load(q + qb * a.q_sb + (long long)(q0 + f / a.group) * a.q_ss +
                                    (long long)(hk * a.group + f % a.group) * a.q_sh + d)
                : 0.0f;
      }
  }
  int klo = 0, khi = 0;
  if (ghi > glo) fa_dec_split_keys(glo, ghi, split, a.splits, &klo, &khi);

  float m[ROWS], l[ROWS], acc[ROWS][kCols];
#pragma unroll
  for (int r = 0; r < ROWS; r++) {
    m[r] = -FA_FLT_MAX, l[r] = 0.0f;
#pragma unroll
    for (int c = 0; c < kCols; c++) acc[r][c] = 0.0f;
  }

  /* Every thread takes the same number of steps (the shuffles need the whole warp); keys past khi are off. */
  for (int base = klo; base < khi; base += kSlots * U) {
    float kf[U][kCols], vf[U][kCols];
    int jj[U];
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int j = base + slot * U + u;
      jj[u] = j;
      const bool in = j < khi;
      const long long ko = in ? fa_dec_key_offset(table, a.t_sb, a.t_sp, a.paged, a.page_size, a.num_pages, kb,
                                                  kr0 + j, a.k_sb, a.k_ss) + (long long)hk * a.k_sh
                              : 0;
      const long long vo = in ? fa_dec_key_offset(table, a.t_sb, a.t_sp, a.paged, a.page_size, a.num_pages, kb,
                                                  kr0 + j, a.v_sb, a.v_ss) + (long long)hk * a.v_sh
                              : 0;
#pragma unroll
      for (int n = 0; n < kNc; n++) {
        const int piece = lane + n * kLpk;
        if (in && piece < kChunks) {
          load_piece(k + ko + piece * kVec, &kf[u][n * kVec]);
          load_piece(v + vo + piece * kVec, &vf[u][n * kVec]);
        } else {
#pragma unroll
          for (int e = 0; e < kVec; e++) kf[u][n * kVec + e] = vf[u][n * kVec + e] = 0.0f;
        }
      }
    }
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
      float s[U];
#pragma unroll
      for (int u = 0; u < U; u++) {
        float dot = 0.0f;
#pragma unroll
        for (int c = 0; c < kCols; c++) dot += qr[r][c] * kf[u][c];
#pragma unroll
        for (int off = kLpk / 2; off > 0; off /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, off);
        const int j = jj[u];
        if (j < khi && j >= lo[r] && j < hi[r]) {
#if FA_DEC_MODS
          const int f = rb * ROWS + r, h = hk * a.group + f % a.group;
          const float slope = a.has_alibi ? ((const float *)a.alibi)[b * a.al_sb + h * a.al_sh] : 0.0f;
          dot = fa_dec_modify(dot, a.softcap, slope, f / a.group + len - sq, j);
#endif
          s[u] = dot * 1.4426950408889634f;
        } else {
          s[u] = FA_NEG_INF;
        }
      }
      float mn = m[r];
#pragma unroll
      for (int u = 0; u < U; u++) mn = fmaxf(mn, s[u]);
      const float scale_old = exp2f(m[r] - mn);
      l[r] *= scale_old;
#pragma unroll
      for (int c = 0; c < kCols; c++) acc[r][c] *= scale_old;
#pragma unroll
      for (int u = 0; u < U; u++) {
        const float p = exp2f(s[u] - mn);
        l[r] += p;
#pragma unroll
        for (int c = 0; c < kCols; c++) acc[r][c] += p * vf[u][c];
      }
      m[r] = mn;
    }
  }

  /* Merge the slots: each writes its state, then the block sums them per (row, column). */
#pragma unroll
  for (int r = 0; r < ROWS; r++) {
#pragma unroll
    for (int n = 0; n < kNc; n++)
#pragma unroll
      for (int e = 0; e < kVec; e++) {
        const int d = (lane + n * kLpk) * kVec + e;
        if (d < HEAD_DIM) sm_acc[slot][r][d] = acc[r][n * kVec + e];
      }
    if (lane == 0) sm_m[slot][r] = m[r], sm_l[slot][r] = l[r];
  }
  __syncthreads();
  for (int x = t; x < ROWS * HEAD_DIM; x += THREADS) {
    const int r = x / HEAD_DIM, d = x % HEAD_DIM, f = rb * ROWS + r;
    if (f >= rows_total) continue;
    float mx = -FA_FLT_MAX, sum = 0.0f, o = 0.0f;
    for (int sl = 0; sl < kSlots; sl++) mx = fmaxf(mx, sm_m[sl][r]);
    for (int sl = 0; sl < kSlots; sl++) {
      const float w = exp2f(sm_m[sl][r] - mx);
      sum += sm_l[sl][r] * w;
      o += sm_acc[sl][r][d] * w;
    }
    const int i = q0 + f / a.group, h = hk * a.group + f % a.group;
    const float val = sum > 0.0f ? o / sum : 0.0f;
    const float row_lse = sum > 0.0f ? mx * FA_LN2 + logf(sum) : FA_NEG_INF;
    const long long row = (((long long)split * a.batch + qb) * a.heads_q + h) * a.seqlen_q + i;
    if (a.splits == 1) {
      ((fa_elem *)a.o)[qb * a.o_sb + (long long)i * a.o_ss + (long long)h * a.o_sh + d] = fa_from_float(val);
      if (d == 0 && a.has_lse)
        ((float *)a.lse)[qb * a.lse_sb + (long long)h * a.lse_sh + (long long)i * a.lse_ss] = row_lse;
    } else {
      ((float *)a.part_o)[row * HEAD_DIM + d] = val;
      if (d == 0) ((float *)a.part_lse)[row] = row_lse;
    }
  }
}

/* fa_combine: o = sum_p exp(lse_p - lse) o_p, lse = log sum_p exp(lse_p); one block per (row, head, batch),
 * its threads over the columns. */
#ifndef FA_PART_DTYPE
#define FA_PART_DTYPE FA_DTYPE
#endif

static __device__ __forceinline__ float load_part(const void *p, long long i) {
#if FA_PART_DTYPE == 0
  return ((const float *)p)[i];
#elif FA_PART_DTYPE == 1
  return fa_f16_to_float(((const unsigned short *)p)[i]);
#else
  return fa_bf16_to_float(((const unsigned short *)p)[i]);
#endif
}

extern "C" __global__ void __launch_bounds__(64) fa_combine(const fa_combine_params a) {
  const int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const float *lp = (const float *)a.lp + b * a.lp_sb + (long long)h * a.lp_sh + (long long)i * a.lp_ss;
  float mx = FA_NEG_INF;
  for (int p = 0; p < a.parts; p++) mx = fmaxf(mx, lp[p * a.lp_stride]);
  float sum = 0.0f;
  if (mx > FA_NEG_INF)
    for (int p = 0; p < a.parts; p++) sum += expf(lp[p * a.lp_stride] - mx);
  const float total = mx > FA_NEG_INF ? mx + logf(sum) : FA_NEG_INF;
  const long long orow = b * a.op_sb + (long long)i * a.op_ss + (long long)h * a.op_sh;
  for (int d = threadIdx.x; d < a.head_dim; d += blockDim.x) {
    float val = 0.0f;
    if (mx > FA_NEG_INF)
      for (int p = 0; p < a.parts; p++) {
        const float lv = lp[p * a.lp_stride];
        if (lv > FA_NEG_INF) val += expf(lv - total) * load_part((const void *)a.op, orow + p * a.op_stride + d);
      }
    ((fa_elem *)a.o)[b * a.o_sb + (long long)i * a.o_ss + (long long)h * a.o_sh + d] = fa_from_float(val);
  }
  if (a.lse && threadIdx.x == 0) ((float *)a.lse)[b * a.l_sb + (long long)h * a.l_sh + (long long)i * a.l_ss] = total;
}

/* fa_kv_append: element (b, t, h, d) of k_new and v_new into cache position seqlens_k[b] + t (clamped into the
 * cache: the host has checked it unless the caller trusts its indices). A grid-stride loop over the elements. */
extern "C" __global__ void __launch_bounds__(256) fa_kv_append(const fa_kv_append_params a) {
  const int *seqlens = (const int *)a.seqlens, *table = (const int *)a.table;
  const fa_elem *kn = (const fa_elem *)a.k_new, *vn = (const fa_elem *)a.v_new;
  fa_elem *kc = (fa_elem *)a.k, *vc = (fa_elem *)a.v;
  for (long long x = (long long)blockIdx.x * blockDim.x + threadIdx.x; x < a.total;
       x += (long long)gridDim.x * blockDim.x) {
    const int d = (int)(x % a.head_dim), h = (int)(x / a.head_dim % a.heads_kv);
    const int t = (int)(x / ((long long)a.head_dim * a.heads_kv) % a.seqlen_new);
    const int b = (int)(x / ((long long)a.head_dim * a.heads_kv * a.seqlen_new));
    const int len = fa_dec_length(seqlens, a.sl_s, 1, b, a.cap);
    const int pos = min(len + t, a.cap - 1);
    const long long ko = fa_dec_key_offset(table, a.t_sb, a.t_sp, a.paged, a.page_size, a.num_pages, b, pos, a.k_sb, a.k_ss);
    const long long vo = fa_dec_key_offset(table, a.t_sb, a.t_sp, a.paged, a.page_size, a.num_pages, b, pos, a.v_sb, a.v_ss);
    kc[ko + (long long)h * a.k_sh + d] = kn[b * a.kn_sb + (long long)t * a.kn_ss + (long long)h * a.kn_sh + d];
    vc[vo + (long long)h * a.v_sh + d] = vn[b * a.vn_sb + (long long)t * a.vn_ss + (long long)h * a.vn_sh + d];
  }
}

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

/* Sequence b's query rows q0 .. q0 + sq - 1 and keys kr0 .. kr0 + len - 1 (varlen: on the packed token axes;
 * else rows 0 .. Sq - 1 and seqlens_k's length), for both decode kernels. */
static __device__ __forceinline__ void seq_span(const fa_decode_params &a, int b, int *len, int *sq, int *q0,
                                                int *kr0) {
  fa_dec_sequence((const int *)a.cu_q, a.cu_q_s, (const int *)a.cu_k, a.cu_k_s, a.varlen, (const int *)a.seqlens,
                  a.sl_s, a.has_seqlens, b, a.seqlen_q, a.cap, q0, sq, kr0, len);
}

#if !FA_DEC_MMA /* one of the two decode kernels per compile: they take the same defines */
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
  const int *table = (const int *)a.table;
  /* The sequence's query rows q0 .. q0 + sq - 1 (of batch qb) and keys kr0 .. kr0 + len - 1 (of batch kb). */
  int len, sq, q0, kr0;
  const int qb = a.varlen ? 0 : b, kb = a.varlen ? 0 : b;
  seq_span(a, b, &len, &sq, &q0, &kr0);
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

#endif

#if FA_DEC_MMA
/* fa_decode_mma: the same problem as fa_decode for 16-bit K and V with D a multiple of 16 (<= 256) whose rows
 * start on 16-byte boundaries, on tensor cores (sm_80+). One block of WARPS warps serves 16 query rows of one
 * key/value head (or HEADS of them; row block rb: flattened (query position, head of the group) pairs, so the GQA group x Sq
 * rows share every K/V load: Sq 4 x 4 heads is one block) and one split of their keys; grid as fa_decode's.
 *   The split's keys go in chunks of 16 (from the 16-aligned one holding its first key). A block serves HEADS
 *   consecutive KV heads (1 by default; with more, its warps read neighbouring 256-byte pieces of the same
 *   [B, S, Hkv, D] rows): warp w takes head w % HEADS and that head's chunks w / HEADS, + WARPS / HEADS, ...,
 *   streamed through its own STAGES-deep cp.async ring in shared memory (16-byte copies; no block barrier in
 *   the loop, only __syncwarp), so WARPS x (STAGES - 1) chunks of K and V are in flight per block (D 128,
 *   8 warps, 3 stages: 136 KiB).
 *   Per 16 keys: S = Q K^T (m16n8k16, K by ldmatrix), the online softmax on the fragments (rows g, g + 8 of
 *   each lane), O += P V (P from the S fragments, V by ldmatrix.trans). Each warp keeps its own max, sum and
 *   O; the warps merge through shared memory at the end.
 *   Paged K/V: a chunk (16-aligned; page sizes are multiples of 16) lies in one page, so the block table is
 *   read once per chunk, one chunk ahead of its copies.
 * Shared memory (dynamic): above D 128 Q's 16 rows per head, then WARPS x STAGES x (K, V) x 16 rows of HEAD_DIM + 8
 * elements (the 16-byte pad puts ldmatrix's 8 rows on distinct banks), reused as WARPS x 16 x (HEAD_DIM + 4)
 * floats for the merge (cu_decode.c's mma_smem gives the bytes). Registers (NVRTC, sm_90): 192 at D 128, 247
 * at D 256, so 2 blocks of 4 warps per SM. */
#ifndef FA_DEC_WARPS
#define FA_DEC_WARPS 8
#endif
#ifndef FA_DEC_HEADS
#define FA_DEC_HEADS 1
#endif
#ifndef FA_DEC_STAGES
#define FA_DEC_STAGES 3
#endif
constexpr int kW = FA_DEC_WARPS, kS = FA_DEC_STAGES;
constexpr int kH = FA_DEC_HEADS, kWph = kW / kH; /* KV heads per block, warps per head */
static_assert(kW % kH == 0, "FA_DEC_HEADS divides FA_DEC_WARPS");
constexpr int kRowE = HEAD_DIM + 8;  /* elements per shared row */
constexpr int kTileE = 16 * kRowE;   /* one tensor's chunk */
constexpr int kPieces = HEAD_DIM / 8; /* 16-byte pieces per row */
constexpr int kCopies = kPieces / 2;  /* cp.async per lane per tensor and chunk: 16 rows x kPieces / 32 */
constexpr int kKs = HEAD_DIM / 16;    /* k-steps of Q K^T, d-tile pairs of P V */
constexpr int kOrow = HEAD_DIM + 4;   /* floats per merge row */
static_assert(HEAD_DIM % 16 == 0 && HEAD_DIM <= 256, "fa_decode_mma takes D a multiple of 16 up to 256");
static_assert(kS >= 2, "FA_DEC_STAGES is at least 2");
static_assert(kS * 2 * kTileE * 2 >= 16 * kOrow * 4, "the merge fits in the ring");
#define FA_DEC_QSMEM (HEAD_DIM > 128)
constexpr int kQe = FA_DEC_QSMEM ? kH * 16 * kRowE : 0; /* elements of Q in shared memory, before the rings */

/* FA_DEC_EMULATE: tests/decode_emu.cpp runs this kernel on the host (tests/emu/cuda_common.cuh), where the
 * copies are synchronous and the dynamic shared memory is its buffer. */
template <int N> static __device__ __forceinline__ void cp_async_wait(void) {
#ifndef FA_DEC_EMULATE
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}

extern "C" __global__ void __launch_bounds__(kW * 32) fa_decode_mma(const fa_decode_params a) {
#ifdef FA_DEC_EMULATE
  unsigned char *smem = emu_smem;
#else
  extern __shared__ __align__(16) unsigned char smem[];
#endif
  __shared__ float sm_m[kW][16], sm_l[kW][16];
  const int tid = threadIdx.x, w = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const int wh = w % kH, wc = w / kH; /* this warp's head in the block, and its phase among that head's warps */
  const int rb = blockIdx.x % a.row_blocks, split = blockIdx.x / a.row_blocks;
  const int hk = blockIdx.y * kH + wh, b = blockIdx.z;
  const int *table = (const int *)a.table;
  int len, sq, q0, kr0;
  const int qb = a.varlen ? 0 : b, kb = a.varlen ? 0 : b;
  seq_span(a, b, &len, &sq, &q0, &kr0);
  const int rows_total = sq * a.group;
  const unsigned short *q = (const unsigned short *)a.q;
  const fa_elem *k = (const fa_elem *)a.k + (long long)kr0 * a.k_ss, *v = (const fa_elem *)a.v + (long long)kr0 * a.v_ss;

  /* Every row's keys (the block's union gives the split), and this lane's rows g and g + 8. */
  int glo = len, ghi = 0, lo[2] = {0, 0}, hi[2] = {0, 0};
#pragma unroll
  for (int r = 0; r < 16; r++) {
    const int f = rb * 16 + r;
    int rl = 0, rh = 0;
    if (f < rows_total) fa_dec_row_keys(f / a.group, sq, len, a.causal, a.window, a.wl, a.wr, &rl, &rh);
    if (rh > rl) glo = min(glo, rl), ghi = max(ghi, rh);
    if (r == g) lo[0] = rl, hi[0] = rh;
    if (r == g + 8) lo[1] = rl, hi[1] = rh;
  }
  int klo = 0, khi = 0;
  if (ghi > glo) fa_dec_split_keys(glo, ghi, split, a.splits, &klo, &khi);
#pragma unroll
  for (int x = 0; x < 2; x++) lo[x] = max(lo[x], klo), hi[x] = min(hi[x], khi);
#if FA_DEC_MODS
  float slope[2];
  int diag[2];
#pragma unroll
  for (int x = 0; x < 2; x++) {
    const int f = rb * 16 + g + 8 * x, h = hk * a.group + f % a.group;
    slope[x] = a.has_alibi && f < rows_total ? ((const float *)a.alibi)[b * a.al_sb + h * a.al_sh] : 0.0f;
    diag[x] = f / a.group + len - sq;
  }
#endif

  /* Q's A fragments (rows g, g + 8; columns 2 t4, 2 t4 + 1 and + 8 of each k-step), zero for padding rows:
   * in registers up to D 128; above, Q's 16 rows wait in shared memory and each k-step loads its fragment
   * (ldmatrix), so that the registers hold O's 2 D / 8 floats without spilling. */
#if FA_DEC_QSMEM
  for (int x = tid; x < kH * 16 * HEAD_DIM; x += kW * 32) {
    const int hh = blockIdx.y * kH + x / (16 * HEAD_DIM), r = x / HEAD_DIM % 16, d = x % HEAD_DIM, f = rb * 16 + r;
    const unsigned short val =
        f < rows_total ? q[qb * a.q_sb + (long long)(q0 + f / a.group) * a.q_ss +
                           (long long)(hh * a.group + f % a.group) * a.q_sh + d]
                       : (unsigned short)0;
    ((unsigned short *)smem)[(x / HEAD_DIM) * kRowE + d] = val;
  }
  __syncthreads();
  const unsigned qsm = fa_smem_addr(smem) + (unsigned)(((wh * 16 + (lane & 15)) * kRowE + (lane / 16) * 8) * 2);
#else
  unsigned qa[kKs][4];
#pragma unroll
  for (int x = 0; x < 2; x++) {
    const int f = rb * 16 + g + 8 * x;
    const unsigned short *qr =
        q + qb * a.q_sb + (long long)(q0 + f / a.group) * a.q_ss + (long long)(hk * a.group + f % a.group) * a.q_sh;
#pragma unroll
    for (int ks = 0; ks < kKs; ks++)
#pragma unroll
      for (int y = 0; y < 2; y++) {
        const int d = ks * 16 + y * 8 + 2 * t4;
        qa[ks][x + 2 * y] = f < rows_total ? (unsigned)qr[d] | (unsigned)qr[d + 1] << 16 : 0u;
      }
  }
#endif

  /* Chunks of 16 keys from the one holding klo; this warp's are wc, wc + kWph, ... of its head's. */
  const int kbeg = klo & ~15;
  const int chunks = khi > klo ? (khi - kbeg + 15) / 16 : 0;
  const int mine = chunks > wc ? (chunks - 1 - wc) / kWph + 1 : 0;
  const unsigned ring = fa_smem_addr(smem) + (unsigned)((kQe + w * kS * 2 * kTileE) * 2);

  /* Where this warp's chunk number c starts: row `row` of batch entry or page `page` (a paged chunk lies in one
   * page); one table read per chunk, none past khi. The entry is clamped into the pages where it is used, so
   * that the read, issued a chunk ahead, is waited for only then. */
  struct place {
    int page, row;
  };
  auto place_of = [&](int c) {
    const int j0 = kbeg + (wc + c * kWph) * 16;
    place pl = {kb, j0};
    if (a.paged) {
      const int t = j0 / a.page_size;
      pl.row = j0 - t * a.page_size;
      pl.page = c < mine && j0 < khi ? table[(long long)kb * a.t_sb + (long long)t * a.t_sp] : 0;
    }
    return pl;
  };
  /* This lane's copies of a chunk: piece idx % kPieces of row idx / kPieces for idx = lane + 32 i, at element
   * offsets that fit 32 bits (the host checks that 15 row steps and a row do). */
  int crow[kCopies];
  unsigned koff[kCopies], voff[kCopies];
#pragma unroll
  for (int i = 0; i < kCopies; i++) {
    const unsigned idx = (unsigned)lane + 32u * i, row = idx / kPieces, pc = idx % kPieces;
    crow[i] = (int)row;
    koff[i] = row * (unsigned)a.k_ss + pc * 8u;
    voff[i] = row * (unsigned)a.v_ss + pc * 8u;
  }
  /* Copies of chunk c (< mine) into ring stage st; keys outside [klo, khi) are zero-filled (finite V under
   * P = 0). Row r of a stage's K starts at element r (D + 8): piece p of it at byte 16 (idx + r). */
  auto issue = [&](int c, int st, place pl) {
    const int c0 = kbeg + (wc + c * kWph) * 16, rlo = klo - c0, rhi = khi - c0;
    if (a.paged) pl.page = pl.page < 0 ? 0 : pl.page >= a.num_pages ? a.num_pages - 1 : pl.page;
    const fa_elem *kc = k + (long long)pl.page * a.k_sb + (long long)pl.row * a.k_ss + (long long)hk * a.k_sh;
    const fa_elem *vc = v + (long long)pl.page * a.v_sb + (long long)pl.row * a.v_ss + (long long)hk * a.v_sh;
    const unsigned sk = ring + (unsigned)(st * 2 * kTileE * 2), sv = sk + (unsigned)(kTileE * 2);
#pragma unroll
    for (int i = 0; i < kCopies; i++) {
      const bool in = crow[i] >= rlo && crow[i] < rhi;
      const unsigned off = 16u * ((unsigned)lane + 32u * i + (unsigned)crow[i]);
      fa_cp_async16(sk + off, in ? kc + koff[i] : k, in ? 16 : 0);
      fa_cp_async16(sv + off, in ? vc + voff[i] : v, in ? 16 : 0);
    }
  };

  float m[2] = {-FA_FLT_MAX, -FA_FLT_MAX}, l[2] = {0.0f, 0.0f}, acc[2 * kKs][4];
#pragma unroll
  for (int n = 0; n < 2 * kKs; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
  const float qk_scale = a.scale * (FA_DEC_MODS ? 1.0f : 1.4426950408889634f);

  place next = place_of(0);
#pragma unroll
  for (int s = 0; s < kS - 1; s++) {
    const place pl = next;
    next = place_of(s + 1);
    if (s < mine) issue(s, s, pl);
    fa_cp_async_commit();
  }
  for (int it = 0; it < mine; it++) {
    __syncwarp(); /* every lane has read the stage the next copies overwrite (computed at it - 1) */
    {
      const place pl = next;
      next = place_of(it + kS); /* one chunk ahead: the table read's latency hides behind this chunk's math */
      if (it + kS - 1 < mine) issue(it + kS - 1, (it + kS - 1) % kS, pl);
      fa_cp_async_commit();
    }
    cp_async_wait<kS - 1>();
    __syncwarp();
    const unsigned sk = ring + (unsigned)((it % kS) * 2 * kTileE * 2), sv = sk + (unsigned)(kTileE * 2);
    const int c0 = kbeg + (wc + it * kWph) * 16;

    /* S = Q K^T: s[n-tile][fragment] for key c0 + 8 n + 2 t4 + (e & 1), row g (e < 2) or g + 8. K's fragments:
     * ldmatrix's matrices (keys 0-7, d 0-7), (0-7, 8-15), (8-15, 0-7), (8-15, 8-15) of each k-step. */
    float s[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
    for (int ks = 0; ks < kKs; ks++) {
      unsigned kf[4];
      fa_ldmatrix_x4(kf, sk + (unsigned)((((lane / 16) * 8 + lane % 8) * kRowE + ks * 16 + ((lane / 8) & 1) * 8) * 2));
#if FA_DEC_QSMEM
      unsigned qf[4]; /* matrices (rows 0-7, k 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15) */
      fa_ldmatrix_x4(qf, qsm + (unsigned)(ks * 32));
#else
      const unsigned *qf = qa[ks];
#endif
      fa_mma_16816(s[0], qf, kf[0], kf[1]);
      fa_mma_16816(s[1], qf, kf[2], kf[3]);
    }
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int n = 0; n < 2; n++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int x = e / 2, j = c0 + n * 8 + 2 * t4 + (e & 1);
        float sc = s[n][e] * qk_scale;
#if FA_DEC_MODS
        sc = fa_dec_modify(sc, a.softcap, slope[x], diag[x], j) * 1.4426950408889634f;
#endif
        sc = j >= lo[x] && j < hi[x] ? sc : FA_NEG_INF;
        s[n][e] = sc;
        mx[x] = fmaxf(mx[x], sc);
      }
#pragma unroll
    for (int x = 0; x < 2; x++) {
      mx[x] = fmaxf(mx[x], __shfl_xor_sync(0xffffffffu, mx[x], 1));
      mx[x] = fmaxf(mx[x], __shfl_xor_sync(0xffffffffu, mx[x], 2));
      const float old = exp2f(m[x] - mx[x]);
      m[x] = mx[x];
      l[x] *= old;
#pragma unroll
      for (int n = 0; n < 2 * kKs; n++) acc[n][2 * x] *= old, acc[n][2 * x + 1] *= old;
    }
    /* O += P V: P's A fragment is S's accumulator layout (n-tile 0 then 1); V's B fragments by ldmatrix.trans of
     * the matrices (keys 0-7, d-tile 2 dp), (8-15, 2 dp), (0-7, 2 dp + 1), (8-15, 2 dp + 1). */
#pragma unroll
    for (int n = 0; n < 2; n++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        s[n][e] = exp2f(s[n][e] - m[e / 2]);
        l[e / 2] += s[n][e];
      }
    const unsigned pa[4] = {fa_pack2(s[0][0], s[0][1]), fa_pack2(s[0][2], s[0][3]), fa_pack2(s[1][0], s[1][1]),
                            fa_pack2(s[1][2], s[1][3])};
#pragma unroll
    for (int dp = 0; dp < kKs; dp++) {
      unsigned vf[4];
      fa_ldmatrix_x4_trans(vf, sv + (unsigned)(((((lane / 8) & 1) * 8 + lane % 8) * kRowE + dp * 16 + (lane / 16) * 8) * 2));
      fa_mma_16816(acc[2 * dp], pa, vf[0], vf[1]);
      fa_mma_16816(acc[2 * dp + 1], pa, vf[2], vf[3]);
    }
  }

  /* Merge the warps: each writes its rows' max, sum and O, then the block combines per (row, column). */
  fa_cp_async_wait_all();
  __syncthreads(); /* the ring is free */
  float *so = (float *)(smem + kQe * 2);
#pragma unroll
  for (int x = 0; x < 2; x++) {
    l[x] += __shfl_xor_sync(0xffffffffu, l[x], 1);
    l[x] += __shfl_xor_sync(0xffffffffu, l[x], 2);
    const int r = g + 8 * x;
#pragma unroll
    for (int n = 0; n < 2 * kKs; n++) {
      so[(w * 16 + r) * kOrow + n * 8 + 2 * t4] = acc[n][2 * x];
      so[(w * 16 + r) * kOrow + n * 8 + 2 * t4 + 1] = acc[n][2 * x + 1];
    }
    if (t4 == 0) sm_m[w][r] = m[x], sm_l[w][r] = l[x];
  }
  __syncthreads();
  for (int x = tid; x < kH * 16 * HEAD_DIM; x += kW * 32) {
    const int hh = x / (16 * HEAD_DIM), r = x / HEAD_DIM % 16, d = x % HEAD_DIM, f = rb * 16 + r;
    if (f >= rows_total) continue; /* a padding row */
    float mxw = -FA_FLT_MAX, sum = 0.0f, o = 0.0f;
#pragma unroll
    for (int ww = hh; ww < kW; ww += kH) mxw = fmaxf(mxw, sm_m[ww][r]);
#pragma unroll
    for (int ww = hh; ww < kW; ww += kH) {
      const float wt = exp2f(sm_m[ww][r] - mxw);
      sum += sm_l[ww][r] * wt;
      o += so[(ww * 16 + r) * kOrow + d] * wt;
    }
    const int i = q0 + f / a.group, h = (blockIdx.y * kH + hh) * a.group + f % a.group;
    const float val = sum > 0.0f ? o / sum : 0.0f;
    const float row_lse = sum > 0.0f ? mxw * FA_LN2 + logf(sum) : FA_NEG_INF;
    if (a.splits == 1) {
      ((fa_elem *)a.o)[qb * a.o_sb + (long long)i * a.o_ss + (long long)h * a.o_sh + d] = fa_from_float(val);
      if (d == 0 && a.has_lse)
        ((float *)a.lse)[qb * a.lse_sb + (long long)h * a.lse_sh + (long long)i * a.lse_ss] = row_lse;
    } else {
      const long long row = (((long long)split * a.batch + qb) * a.heads_q + h) * a.seqlen_q + i;
      ((float *)a.part_o)[row * HEAD_DIM + d] = val;
      if (d == 0) ((float *)a.part_lse)[row] = row_lse;
    }
  }
}
#endif

/* fa_combine: o = sum_p exp(lse_p - lse) o_p, lse = log sum_p exp(lse_p); one block of 4 warps per (row, head,
 * batch). The max and the sum go over the parts with the threads side by side; then warp w sums parts w, w + 4,
 * ... with its lanes over the columns (up to 8 a lane: D <= 256), two parts at a time, so that a split decode's
 * 16 to 128 parts cost a few rounds of loads rather than one round per part; the warps add up in shared
 * memory. */
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

#define COMBINE_WARPS 4
extern "C" __global__ void __launch_bounds__(32 * COMBINE_WARPS) fa_combine(const fa_combine_params a) {
  __shared__ float red[COMBINE_WARPS], acc_w[COMBINE_WARPS][256];
  const int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z, tid = threadIdx.x, w = tid / 32, lane = tid % 32;
  const float *lp = (const float *)a.lp + b * a.lp_sb + (long long)h * a.lp_sh + (long long)i * a.lp_ss;
  float mx = FA_NEG_INF;
  for (int p = tid; p < a.parts; p += 32 * COMBINE_WARPS) mx = fmaxf(mx, lp[p * a.lp_stride]);
#pragma unroll
  for (int off = 16; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
  if (lane == 0) red[w] = mx;
  __syncthreads();
  mx = red[0];
#pragma unroll
  for (int x = 1; x < COMBINE_WARPS; x++) mx = fmaxf(mx, red[x]);
  __syncthreads(); /* red is reused for the sum */
  float sum = 0.0f;
  if (mx > FA_NEG_INF)
    for (int p = tid; p < a.parts; p += 32 * COMBINE_WARPS) sum += expf(lp[p * a.lp_stride] - mx);
#pragma unroll
  for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  if (lane == 0) red[w] = sum;
  __syncthreads();
  sum = 0.0f;
#pragma unroll
  for (int x = 0; x < COMBINE_WARPS; x++) sum += red[x];
  const float total = mx > FA_NEG_INF ? mx + logf(sum) : FA_NEG_INF;
  const long long orow = b * a.op_sb + (long long)i * a.op_ss + (long long)h * a.op_sh;
  float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  if (mx > FA_NEG_INF) {
#pragma unroll 2
    for (int p = w; p < a.parts; p += COMBINE_WARPS) {
      const float lv = lp[p * a.lp_stride];
      const float wt = lv > FA_NEG_INF ? expf(lv - total) : 0.0f;
      if (wt > 0.0f)
#pragma unroll
        for (int j = 0; j < 8; j++) {
          const int d = lane + 32 * j;
          if (d < a.head_dim) acc[j] += wt * load_part((const void *)a.op, orow + p * a.op_stride + d);
        }
    }
  }
#pragma unroll
  for (int j = 0; j < 8; j++) acc_w[w][lane + 32 * j] = acc[j];
  __syncthreads();
  for (int d = tid; d < a.head_dim; d += 32 * COMBINE_WARPS) {
    float val = 0.0f;
#pragma unroll
    for (int x = 0; x < COMBINE_WARPS; x++) val += acc_w[x][d];
    ((fa_elem *)a.o)[b * a.o_sb + (long long)i * a.o_ss + (long long)h * a.o_sh + d] = fa_from_float(val);
  }
  if (a.lse && tid == 0) ((float *)a.lse)[b * a.l_sb + (long long)h * a.l_sh + (long long)i * a.l_ss] = total;
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

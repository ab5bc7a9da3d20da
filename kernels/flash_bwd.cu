/* FlashAttention backward for CUDA (FlashAttention-2's ordering, Dao 2023, Algorithm 2): dq, dk, dv from
 * q, k, v, o, dout and the forward's lse, recomputing the scores tile by tile; the Sq x Sk matrices never
 * reach device memory.
 *
 * Tensors (element strides in fa_bwd_params, head dim contiguous):
 *   q, o, dout, dq [B, Sq, Hq, D]; k, v, dk, dv [B, Sk, Hkv, D]; lse [B, Hq, Sq] float32 (natural log of the
 *   scaled scores, -inf for a row whose keys are all masked). Query head h reads key/value head h / group.
 *   Causal (bottom-right): key j masked for query i when j > i + Sk - Sq.
 *   Workspace (float32): di [B, Hq, Sq] = rowsum(dO o O); with DQ_ATOMIC also dq_acc [B, Hq, Sq, D]; with
 *   FA_DQ_ORDERED also int32 semaphores [B, Hq, ceil(Sq / BLOCK_M)].
 *
 *   S = scale Q K^T, P = exp(S - lse), dV = P^T dO, dP = dO V^T, dS = P o (dP - Di),
 *   dK = scale dS^T Q, dQ = scale dS K.
 * A row with lse = -inf (or past Sq) and a key past Sk or above the causal limit get P = 0 by a select,
 * never through exp of an infinity: so dS = 0 and no NaN can appear.
 *
 * Work, for the benchmark's arithmetic (non-causal; causal does about half):
 *   FLOPs: the backward's five matrix products (S, dP, dV, dK, dQ) are 5 x 2 B Hq Sq Sk D = 2.5 x the
 *   forward's 4 B Hq Sq Sk D, so forward + backward = 3.5 x forward, as the papers count. The separate dQ
 *   scheme (CUDA cores) recomputes S and dP in flash_bwd_dq: 7 products, 1.4 x the arithmetic of the atomic
 *   one; flash_bwd_dkdv_tc with two warps per key group (D > 128) computes S and dP twice: the same 7.
 *   exp2: B Hq Sq Sk (twice in the deterministic scheme).
 *   DRAM bytes >= e (4 B Sq Hq D + 4 B Sk Hkv D) (q, o, dout, dq; k, v, dk, dv) + 8 B Hq Sq (lse, di),
 *   e = element size; plus, atomic scheme, 4 B Hq Sq D x (2 + ceil(Sk / BLOCK_N)) for dq_acc (zeroing,
 *   the atomic adds, which L2 mostly absorbs, and the conversion). Each key block reads its group's Q and
 *   dO (e Sq D each per head) from L2.
 *   D = 128, Sq = Sk = 8192, B = 2, H = 16, f16: backward 1.10e13 FLOPs over ~0.5 GB of DRAM traffic:
 *   compute-bound.
 *
 * Kernels (src/cuda/cu_backward.c launches them in this order):
 *   flash_bwd_pre         di, one warp per row; zeroes the row of dq_acc when DQ_ATOMIC, and the semaphores
 *                         when FA_DQ_ORDERED.
 *   flash_bwd_dkdv_simt   one block per (BLOCK_N keys, kv head, batch): K and V as float in shared memory,
 *                         dK and dV in registers; walks the BLOCK_M-query blocks of every query head of the
 *                         GQA group (dK and dV sum over the group without atomics), skipping blocks the causal
 *                         mask hides. With DQ_ATOMIC, adds dS K into dq_acc with atomicAdd.
 *   flash_bwd_dq_simt     (deterministic, no DQ_ATOMIC) one block per (BLOCK_M queries, head, batch) walking
 *                         the key blocks, recomputing S and dP; writes dq in a fixed order: bit-identical runs.
 *   flash_bwd_dq_convert  (DQ_ATOMIC) dq = scale x dq_acc, in dq's dtype and strides.
 *   flash_bwd_dkdv_tc     (FA_TC=1) flash_bwd_dkdv_simt's job on tensor cores for f16/bf16, sm_80+, every D:
 *                         4 or 8 warps, 32 or 64 keys per block, 32 or 64 queries per step (see its comment);
 *                         dQ by atomics, in key-block order when deterministic (FA_DQ_ORDERED).
 * The _simt kernels run on CUDA cores, any dtype (float32 in shared memory, float32 arithmetic): the f32 path
 * and the fallback (before sm_80, budgets too small for the tensor-core tiles, FLASHATTN_CUDA_BWD=simt).
 *
 * Defines: FA_DTYPE (0 f32, 1 f16, 2 bf16), HEAD_DIM (multiple of 8, <= 256), BLOCK_M and BLOCK_N (powers
 * of two; src/tiling.c sizes them for the shared-memory budget; 32 or 64 with FA_TC), DQ_ATOMIC (0 or 1),
 * FA_TC (0: the row kernels and the _simt kernels; 1: the row kernels and flash_bwd_dkdv_tc, with TC_WARPS,
 * FA_DQ_ORDERED and FA_BWD_PIPELINE),
 * FA_BLOCK_MASK and FA_DROPOUT (0 or 1, default 0: a dense variant compiles exactly the code it had before):
 *   FA_BLOCK_MASK  every kernel that recomputes scores classifies each tile it would visit (its rows x keys,
 *                  clipped to Sq and Sk) with kernels/masks.h's fa_block_tile against that query head's mask:
 *                  FA_TILE_SKIP tiles are neither loaded nor computed (flash_bwd_dkdv_tc's pipeline prefetches
 *                  the next tile that is not skipped), FA_TILE_PARTIAL ones get P = 0 where fa_block_keep says
 *                  masked (as the causal mask), FA_TILE_FULL ones take the dense path;
 *   FA_DROPOUT     keep Z from fa_dropout_words (the forward's bits), s = dropout_scale: dV uses P Z s,
 *                  dS = P (dP Z s - di); di = rowsum(dO o O) is unchanged (O already carries the dropout).
 *   FA_INFER       (not with the two above) the inference options of kernels/masks.h. Varlen: the block
 *                  kernels' grid z counts sequences, a block reads its sequence's span (seq_of), leaves when its
 *                  block starts past it and works on the sequence's rows of the packed axes (batch 0); the row
 *                  kernels work on the token axis, and flash_bwd_dq_convert writes only rows inside the
 *                  sequences. The band of causal and the window bounds every walk (fa_band_rows for a block of
 *                  keys, fa_band_lo / fa_band_hi for a block of queries: tiles outside are never loaded) and the
 *                  visibility of each score; softcap and ALiBi modify the base-2 scores before P = exp2(s - lse2)
 *                  and softcap's factor 1 - tanh^2 multiplies dS. FA_DQ_ORDERED: one semaphore per token row
 *                  (the rows that start a query block are used), turns counted over the key blocks the band
 *                  lets reach the query block.
 *
 * The argument block below is shared with the host: src/cuda/cu_backward.c includes this file with
 * FA_BWD_PARAMS_ONLY defined and gets only the struct, so both sides see one definition. */
#ifndef FA_FLASH_BWD_PARAMS
#define FA_FLASH_BWD_PARAMS
#include "cuda_params.h" /* fa_infer_params */
/* The -D defines of a variant, for the host's snprintf: FA_DTYPE define, HEAD_DIM, BLOCK_M, BLOCK_N, DQ_ATOMIC. */
#define FA_BWD_DEFINES_FMT "%s -DHEAD_DIM=%d -DBLOCK_M=%d -DBLOCK_N=%d -DDQ_ATOMIC=%d"
/* ... then, for flash_bwd_dkdv_tc: TC_WARPS, FA_DQ_ORDERED, FA_BWD_PIPELINE. */
#define FA_BWD_TC_DEFINES_FMT FA_BWD_DEFINES_FMT " -DFA_TC=1 -DTC_WARPS=%d -DFA_DQ_ORDERED=%d -DFA_BWD_PIPELINE=%d"
/* Plain C, fixed-size types, no padding holes (8-byte fields first, then an even number of 4-byte ones, then
 * again). */
typedef struct fa_bwd_params {
  /* Device addresses of element 0 of each tensor (view offsets applied); di and dq_acc in the workspace
   * (dq_acc 0 when not used). */
  unsigned long long q, k, v, o, dout, lse, dq, dk, dv, di, dq_acc;
  /* Strides in elements: batch, sequence, head. lse: batch, head, sequence. */
  long long q_sb, q_ss, q_sh;
  long long k_sb, k_ss, k_sh;
  long long v_sb, v_ss, v_sh;
  long long o_sb, o_ss, o_sh;
  long long do_sb, do_ss, do_sh;
  long long dq_sb, dq_ss, dq_sh;
  long long dk_sb, dk_ss, dk_sh;
  long long dv_sb, dv_ss, dv_sh;
  long long lse_sb, lse_sh, lse_ss;
  int seqlen_q, seqlen_k;
  int heads_q;
  int group;  /* heads_q / heads_kv */
  int causal; /* 1: key j is masked for query i when j > i + seqlen_k - seqlen_q */
  int b0, h0; /* batch and head of grid index 0 (a launch covers at most 65535 of each) */
  float scale;      /* softmax scale */
  float scale_log2; /* scale * log2(e): exponentials are taken in base 2 */
  int vec16; /* tensor cores: every row of q, k, v and dout starts on a 16-byte boundary */
  /* Block-sparse mask and dropout (FA_BLOCK_MASK, FA_DROPOUT; 0 otherwise), after the fields above so that
   * those keep their offsets (10 four-byte fields: 8-byte aligned here). mask: the uint8 mask's block (0, 0)
   * of batch 0, head 0 (view offset applied); its strides in bytes: batch, head (0 where it broadcasts),
   * block row, block column. */
  unsigned long long mask;
  long long mask_sb, mask_sh, mask_sr, mask_sc;
  unsigned long long dropout_seed; /* Philox key (kernels/masks.h) */
  int block_q, block_k;       /* FA_BLOCK_MASK: scores per mask block */
  unsigned dropout_offset;    /* FA_DROPOUT: Philox counter word 3 */
  unsigned dropout_threshold; /* FA_DROPOUT: a score is dropped when its word is below this */
  float dropout_scale;        /* FA_DROPOUT: 1 / (1 - p) */
  int pad_;
  /* FA_DQ_ORDERED: the workspace's semaphores [B Hq][ceil(Sq / BLOCK_M)] (FA_INFER: [B Hq][Sq]), int32, zeroed
   * by flash_bwd_pre; 0 otherwise. */
  unsigned long long sem;
  fa_infer_params inf; /* FA_INFER (kernels/cuda_params.h) */
} fa_bwd_params;
#endif

#ifndef FA_BWD_PARAMS_ONLY
#include "cuda_common.cuh"

#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif
#ifndef BLOCK_M
#error "BLOCK_M must be defined"
#endif
#ifndef BLOCK_N
#error "BLOCK_N must be defined"
#endif
#ifndef DQ_ATOMIC
#define DQ_ATOMIC 0
#endif
#ifndef FA_TC
#define FA_TC 0
#endif
#ifndef FA_BLOCK_MASK
#define FA_BLOCK_MASK 0
#endif
#ifndef FA_DROPOUT
#define FA_DROPOUT 0
#endif
#ifndef FA_INFER
#define FA_INFER 0
#endif
#if FA_BLOCK_MASK || FA_DROPOUT || FA_INFER
#include "masks.h"
#endif
#include "flash_infer.cuh"
#if FA_INFER && (FA_BLOCK_MASK || FA_DROPOUT)
#error "FA_INFER does not combine with FA_BLOCK_MASK or FA_DROPOUT"
#endif

#define D HEAD_DIM
#define BM BLOCK_M
#define BN BLOCK_N
#define LOG2E 1.4426950408889634f
#define FA_POS_INF __int_as_float(0x7f800000)

/* ---- sequences (varlen) and the inference options, shared by both families ---- */

/* The semaphore of query block q0 (local) of (tensor batch bt, head h), sequence rows from qfirst on: one per
 * query block, or with FA_INFER one per token row (blocks of different sequences start anywhere). */
static __device__ __forceinline__ long long sem_index(const fa_bwd_params &p, int bt, int h, int qfirst, int q0) {
#if FA_INFER
  return ((long long)bt * p.heads_q + h) * p.seqlen_q + qfirst + q0;
#else
  (void)qfirst;
  return ((long long)bt * p.heads_q + h) * ((p.seqlen_q + BM - 1) / BM) + q0 / BM;
#endif
}

/* ---- row kernels, shared by both families ---- */
#define ROW_THREADS 256

/* di = rowsum(dO o O) for one row per warp, 8 rows per block; zeroes the row of dq_acc when there is one.
 * Grid (ceil(Sq / 8), Hq, B). */
extern "C" __global__ void __launch_bounds__(ROW_THREADS) flash_bwd_pre(const fa_bwd_params p) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int i = blockIdx.x * (ROW_THREADS / 32) + warp;
  const int h = (int)blockIdx.y + p.h0, b = (int)blockIdx.z + p.b0;
  if (i >= p.seqlen_q) return; /* whole warps leave together: the shuffles below see full warps */
  const fa_elem *o = (const fa_elem *)p.o + b * p.o_sb + h * p.o_sh + (long long)i * p.o_ss;
  const fa_elem *g = (const fa_elem *)p.dout + b * p.do_sb + h * p.do_sh + (long long)i * p.do_ss;
  float acc = 0.f;
  for (int d = lane; d < D; d += 32) acc = fmaf(fa_load(o + d), fa_load(g + d), acc);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  const long long row = ((long long)b * p.heads_q + h) * p.seqlen_q + i;
  if (lane == 0) ((float *)p.di)[row] = acc;
  if (p.dq_acc)
    for (int d = lane; d < D; d += 32) ((float *)p.dq_acc)[row * D + d] = 0.f;
  if (p.sem && lane == 0 && (FA_INFER || i % BM == 0)) ((int *)p.sem)[sem_index(p, b, h, 0, i)] = 0;
}

#if DQ_ATOMIC
/* dq = scale * dq_acc in dq's dtype and strides, one warp per row. Grid (ceil(Sq / 8), Hq, B). */
extern "C" __global__ void __launch_bounds__(ROW_THREADS) flash_bwd_dq_convert(const fa_bwd_params p) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int i = blockIdx.x * (ROW_THREADS / 32) + warp;
  const int h = (int)blockIdx.y + p.h0, b = (int)blockIdx.z + p.b0;
  if (i >= p.seqlen_q) return;
#if FA_INFER
  /* Varlen: rows outside every sequence are not written (the sequences are contiguous, from cu_q[0] on). */
  if (p.inf.varlen && (i < ((const int *)p.inf.cu_q)[0] || i >= ((const int *)p.inf.cu_q)[p.inf.seqs * p.inf.cu_q_s])) return;
#endif
  const float *src = (const float *)p.dq_acc + (((long long)b * p.heads_q + h) * p.seqlen_q + i) * D;
  fa_elem *dst = (fa_elem *)p.dq + b * p.dq_sb + h * p.dq_sh + (long long)i * p.dq_ss;
  for (int d = lane; d < D; d += 32) dst[d] = fa_from_float(src[d] * p.scale);
}
#endif

/* ---- block-sparse mask and dropout (kernels/masks.h), shared by both families ---- */
#if FA_BLOCK_MASK
/* The mask of batch b, query head h, at its block (0, 0). */
static __device__ __forceinline__ const fa_u8 *mask_of(const fa_bwd_params &p, int b, int h) {
  return (const fa_u8 *)p.mask + b * p.mask_sb + h * p.mask_sh;
}

/* fa_block_tile for query rows [q0, q0 + rows) x keys [k0, k0 + cols), clipped to Sq and Sk (q0 < Sq, k0 < Sk).
 * Every thread computes the same value from the same bytes: it may steer barriers. */
static __device__ __forceinline__ int tile_class(const fa_bwd_params &p, const fa_u8 *m, int q0, int rows, int k0,
                                                 int cols) {
  return fa_block_tile(m, p.mask_sr, p.mask_sc, p.block_q, p.block_k, q0, min(q0 + rows, p.seqlen_q), k0,
                       min(k0 + cols, p.seqlen_k));
}

/* fa_block_keep for a visible score (i < Sq, j < Sk: the mask has no block beyond them). */
static __device__ __forceinline__ bool block_keep(const fa_bwd_params &p, const fa_u8 *m, int i, int j) {
  return fa_block_keep(m, p.mask_sr, p.mask_sc, p.block_q, p.block_k, i, j) != 0;
}
#endif

#if !FA_TC
/* ======================= CUDA cores: any dtype ======================= */

#if (BM & (BM - 1)) != 0 || (BN & (BN - 1)) != 0 || BM > 128 || BN > 128
#error "BLOCK_M and BLOCK_N must be powers of two up to 128"
#endif

#define NTHREADS 256
#define QS (D + 4)  /* Q, dO, K, V row stride in floats: an odd number of 16-byte units (D is a multiple of 8),
                       so the rows a warp's float4 reads touch fall in different bank groups */
#define PS (BN + 4) /* P and dS row stride */

/* Shared layout, floats: K, V [BN][QS]; Q, dO [BM][QS]; P, dS [BM][PS]; the rows' lse offset and di [BM].
 * src/tiling.c (fa_tiles_cuda_backward) counts the same. */
#define SK_OFF 0
#define SV_OFF (BN * QS)
#define SQ_OFF (2 * BN * QS)
#define SDO_OFF (2 * BN * QS + BM * QS)
#define SP_OFF (2 * BN * QS + 2 * BM * QS)
#define SDS_OFF (SP_OFF + BM * PS)
#define SL_OFF (SDS_OFF + BM * PS)
#define SDI_OFF (SL_OFF + BM)

/* Thread layout of the score tiles (S, dP: BM x BN): TXA threads across the keys, TYA down the rows; each
 * thread holds RMA x CNA scores, rows ty + TYA i, keys tx + TXA j. Threads past TXA x TYA sit out. */
#define TXA (BN < 16 ? BN : 16)
#define TYA (BM < NTHREADS / TXA ? BM : NTHREADS / TXA)
#define RMA (BM / TYA)
#define CNA (BN / TXA)

/* Thread layout of the products with D columns (dK, dV: BN x D; dQ: BM x D): 8 threads across the columns,
 * each float4 groups 4 (tx + 8 c); 32 threads down the rows, rows ty + 32 i. */
#define TXC 8
#define TYC (NTHREADS / TXC)
#define CDC ((D + 4 * TXC - 1) / (4 * TXC))  /* float4 column groups per thread */
#define COLS_FULL ((D % (4 * TXC)) == 0)
#define RKC ((BN + TYC - 1) / TYC) /* key rows per thread (dK, dV) */
#define RQC ((BM + TYC - 1) / TYC) /* query rows per thread (dQ) */

/* Rows [0, ROWS) of a [rows][D] tile at g (row stride `stride` elements) into shared floats at s (row stride
 * QS); rows >= valid become zeros. */
template <int ROWS>
static __device__ __forceinline__ void load_rows(float *s, const fa_elem *g, long long stride, int valid, int tid) {
#pragma unroll 4
  for (int i = tid; i < ROWS * D; i += NTHREADS) {
    const int r = i / D, c = i % D;
    s[r * QS + c] = r < valid ? fa_load(g + r * stride + c) : 0.f;
  }
}

/* The lse offset (base 2) and di of query rows [q0, q0 + BM) of head h of sequence s into shared memory: +inf
 * marks a row that takes no part (past the sequence, or every key masked: lse = -inf), whose P is forced to 0. */
static __device__ __forceinline__ void load_row_stats(const fa_bwd_params &p, float *sl, float *sdi, const seq_span &s,
                                                      int h, int q0, int tid) {
  for (int r = tid; r < BM; r += NTHREADS) {
    const int i = q0 + r;
    float l = FA_POS_INF, di = 0.f;
    if (i < s.sq) {
      const long long row = (long long)s.qfirst + i;
      const float lse = ((const float *)p.lse)[s.bt * p.lse_sb + h * p.lse_sh + row * p.lse_ss];
      if (lse != FA_NEG_INF) l = lse * LOG2E;
      di = ((const float *)p.di)[((long long)s.bt * p.heads_q + h) * p.seqlen_q + row];
    }
    sl[r] = l;
    sdi[r] = di;
  }
}

/* What a tile's scores need beyond the dense case (empty in dense variants): the mask of this batch and head
 * and whether the tile is FA_TILE_PARTIAL (each score tested); the dropout stream b * Hq + h. */
struct tile_extra {
#if FA_BLOCK_MASK
  const fa_u8 *m;
  int partial;
#endif
#if FA_DROPOUT
  unsigned bh;
#endif
#if FA_INFER
  int sq, sk;   /* the sequence's rows and keys */
  float slope2; /* ALiBi, base 2 */
#endif
};

/* S = Q K^T and dP = dO V^T for query rows q0.. and keys k0.. of the tiles in shared memory, then
 * P = exp(scale S - lse) (0 where masked) into sp (when not NULL) and dS = P (dP - di) into sds.
 * FA_DROPOUT, keep Z, s = dropout_scale: sp gets P Z s (for dV) and dS = P (dP Z s - di). CUDA-core layout:
 * one Philox call per score (fa_dropout_keep), the fallback's price for simplicity. */
static __device__ __forceinline__ void scores(const fa_bwd_params &p, const float *smem, float *sp, float *sds,
                                              int q0, int k0, int tid, const tile_extra &te) {
  (void)te;
  const int tx = tid % TXA, ty = tid / TXA;
  if (ty >= TYA) return;
  const float *sq = smem + SQ_OFF, *sdo = smem + SDO_OFF, *sk = smem + SK_OFF, *sv = smem + SV_OFF;
  const float *sl = smem + SL_OFF, *sdi = smem + SDI_OFF;
  float s[RMA][CNA], dp[RMA][CNA];
#pragma unroll
  for (int i = 0; i < RMA; i++)
#pragma unroll
    for (int j = 0; j < CNA; j++) s[i][j] = dp[i][j] = 0.f;
#pragma unroll 2
  for (int d = 0; d < D; d += 4) {
    float4 qv[RMA], gv[RMA], kv[CNA], vv[CNA];
#pragma unroll
    for (int i = 0; i < RMA; i++) {
      qv[i] = *(const float4 *)(sq + (ty + TYA * i) * QS + d);
      gv[i] = *(const float4 *)(sdo + (ty + TYA * i) * QS + d);
    }
#pragma unroll
    for (int j = 0; j < CNA; j++) {
      kv[j] = *(const float4 *)(sk + (tx + TXA * j) * QS + d);
      vv[j] = *(const float4 *)(sv + (tx + TXA * j) * QS + d);
    }
#pragma unroll
    for (int i = 0; i < RMA; i++)
#pragma unroll
      for (int j = 0; j < CNA; j++) {
        float a = s[i][j], c = dp[i][j];
        a = fmaf(qv[i].x, kv[j].x, a);
        a = fmaf(qv[i].y, kv[j].y, a);
        a = fmaf(qv[i].z, kv[j].z, a);
        a = fmaf(qv[i].w, kv[j].w, a);
        c = fmaf(gv[i].x, vv[j].x, c);
        c = fmaf(gv[i].y, vv[j].y, c);
        c = fmaf(gv[i].z, vv[j].z, c);
        c = fmaf(gv[i].w, vv[j].w, c);
        s[i][j] = a;
        dp[i][j] = c;
      }
  }
#if FA_INFER
  const long long diag = (long long)te.sk - te.sq;
#else
  const long long diag = (long long)p.seqlen_k - p.seqlen_q;
#endif
#pragma unroll
  for (int i = 0; i < RMA; i++) {
    const int r = ty + TYA * i;
    const float l = sl[r], di = sdi[r];
    /* Last key row q0 + r sees; rows past Sq have l = +inf and are excluded by it. */
#if FA_INFER
    const int lo = fa_band_lo(q0 + r, te.sq, te.sk, p.inf.wl), hi = fa_band_hi(q0 + r, te.sq, te.sk, p.causal, p.inf.wr);
#pragma unroll
    for (int j = 0; j < CNA; j++) {
      const int c = tx + TXA * j;
      float g;
      const float x = mod_score<FA_TC>(p, s[i][j], te.slope2, q0 + r + (int)diag, k0 + c, g);
      const float pe = l != FA_POS_INF && k0 + c >= lo && k0 + c < hi ? exp2f(x - l) : 0.f;
      if (sp) sp[r * PS + c] = pe;
      sds[r * PS + c] = pe * (dp[i][j] - di) * g;
    }
    continue;
#endif
    long long last = (long long)p.seqlen_k - 1;
    if (p.causal && (long long)q0 + r + diag < last) last = (long long)q0 + r + diag;
#pragma unroll
    for (int j = 0; j < CNA; j++) {
      const int c = tx + TXA * j;
#if FA_BLOCK_MASK
      bool visible = l != FA_POS_INF && (long long)k0 + c <= last;
      if (te.partial) visible = visible && block_keep(p, te.m, q0 + r, k0 + c);
#else
      const bool visible = l != FA_POS_INF && (long long)k0 + c <= last;
#endif
      const float pe = visible ? exp2f(fmaf(s[i][j], p.scale_log2, -l)) : 0.f;
#if FA_DROPOUT
      /* A hidden score has P = 0 whatever its keep bit: no Philox call for it. */
      const bool z = visible && fa_dropout_keep(p.dropout_seed, p.dropout_offset, p.dropout_threshold, te.bh,
                                                (fa_u32)(q0 + r), (fa_u32)(k0 + c)) != 0;
      if (sp) sp[r * PS + c] = z ? pe * p.dropout_scale : 0.f;
      sds[r * PS + c] = pe * ((z ? dp[i][j] * p.dropout_scale : 0.f) - di);
#else
      if (sp) sp[r * PS + c] = pe;
      sds[r * PS + c] = pe * (dp[i][j] - di);
#endif
    }
  }
}

/* dK, dV (and with DQ_ATOMIC, dQ's share) of one block of BN keys. Grid (ceil(Sk / BN), Hkv, B). */
/* acc += dS K for the tile in shared memory: this thread's query rows ty + TYC i and columns 4 (tx + TXC c), the
 * dQ step of both the atomic path (flash_bwd_dkdv_simt) and flash_bwd_dq_simt. */
static __device__ __forceinline__ void add_ds_k(float4 (&acc)[RQC][CDC], const float *sds, const float *sk, int tx,
                                                int ty) {
#pragma unroll 2
  for (int x = 0; x < BN; x++) {
    float ds[RQC];
#pragma unroll
    for (int i = 0; i < RQC; i++) ds[i] = sds[min(ty + TYC * i, BM - 1) * PS + x];
#pragma unroll
    for (int c = 0; c < CDC; c++) {
      const int col = 4 * (tx + TXC * c);
      if (COLS_FULL || col < D) {
        const float4 kv = *(const float4 *)(sk + x * QS + col);
#pragma unroll
        for (int i = 0; i < RQC; i++) {
          acc[i][c].x = fmaf(ds[i], kv.x, acc[i][c].x);
          acc[i][c].y = fmaf(ds[i], kv.y, acc[i][c].y);
          acc[i][c].z = fmaf(ds[i], kv.z, acc[i][c].z);
          acc[i][c].w = fmaf(ds[i], kv.w, acc[i][c].w);
        }
      }
    }
  }
}

extern "C" __global__ void __launch_bounds__(NTHREADS) flash_bwd_dkdv_simt(const fa_bwd_params p) {
  extern __shared__ float4 fa_smem4[];
  float *smem = (float *)fa_smem4;
  float *sk = smem + SK_OFF, *sv = smem + SV_OFF, *sq = smem + SQ_OFF, *sdo = smem + SDO_OFF;
  float *sp = smem + SP_OFF, *sds = smem + SDS_OFF, *sl = smem + SL_OFF, *sdi = smem + SDI_OFF;
  const int tid = threadIdx.x, tx = tid % TXC, ty = tid / TXC;
  const int k0 = (int)blockIdx.x * BN;
  const int hk = (int)blockIdx.y + p.h0, b = (int)blockIdx.z + p.b0;
  const seq_span sq_ = seq_of(p, b);
  const int Sq = sq_.sq, Sk = sq_.sk, bt = sq_.bt;
  if (k0 >= Sk) return; /* varlen: past this sequence's keys (the whole block) */
  const long long diag = (long long)Sk - Sq, krow0 = sq_.kfirst, qrow0 = sq_.qfirst;

  load_rows<BN>(sk, (const fa_elem *)p.k + bt * p.k_sb + hk * p.k_sh + (krow0 + k0) * p.k_ss, p.k_ss,
                min(BN, Sk - k0), tid);
  load_rows<BN>(sv, (const fa_elem *)p.v + bt * p.v_sb + hk * p.v_sh + (krow0 + k0) * p.v_ss, p.v_ss,
                min(BN, Sk - k0), tid);

  float4 dk[RKC][CDC], dv[RKC][CDC];
#pragma unroll
  for (int i = 0; i < RKC; i++)
#pragma unroll
    for (int c = 0; c < CDC; c++) dk[i][c] = dv[i][c] = make_float4(0.f, 0.f, 0.f, 0.f);

  /* Rows before k0 - diag see no key of this block: start at the query block holding that row. */
  int qstart = 0, qend = Sq;
#if FA_INFER
  fa_band_rows(k0, min(k0 + BN, Sk), Sq, Sk, p.causal, p.inf.wl, p.inf.wr, &qstart, &qend); /* the band's rows */
  qstart -= qstart % BM;
#else
  if (p.causal) {
    long long first = (long long)k0 - diag;
    qstart = first < 0 ? 0 : first > Sq ? Sq : (int)first;
    qstart -= qstart % BM;
  }
#endif

  for (int g = 0; g < p.group; g++) {
    const int h = hk * p.group + g;
    const fa_elem *qg = (const fa_elem *)p.q + bt * p.q_sb + h * p.q_sh + qrow0 * p.q_ss;
    const fa_elem *dog = (const fa_elem *)p.dout + bt * p.do_sb + h * p.do_sh + qrow0 * p.do_ss;
    tile_extra te;
#if FA_BLOCK_MASK
    te.m = mask_of(p, b, h);
#endif
#if FA_DROPOUT
    te.bh = (unsigned)(b * p.heads_q + h);
#endif
#if FA_INFER
    te.sq = Sq, te.sk = Sk, te.slope2 = slope2_of(p, b, h);
#endif
    for (int q0 = qstart; q0 < qend; q0 += BM) {
#if FA_BLOCK_MASK
      /* A tile with every score masked is skipped whole (the same decision in every thread). */
      const int cls = tile_class(p, te.m, q0, BM, k0, BN);
      if (cls == FA_TILE_SKIP) continue;
      te.partial = cls == FA_TILE_PARTIAL;
#endif
      __syncthreads(); /* the previous block's tiles are no longer read */
      load_rows<BM>(sq, qg + (long long)q0 * p.q_ss, p.q_ss, min(BM, Sq - q0), tid);
      load_rows<BM>(sdo, dog + (long long)q0 * p.do_ss, p.do_ss, min(BM, Sq - q0), tid);
      load_row_stats(p, sl, sdi, sq_, h, q0, tid);
      __syncthreads();
      scores(p, smem, sp, sds, q0, k0, tid, te);
      __syncthreads();

      /* dV += P^T dO and dK += dS^T Q: keys ty + TYC i, columns 4 (tx + TXC c). A key row past BN (BN < 32)
       * reads row BN - 1 and is never stored. */
#pragma unroll 2
      for (int r = 0; r < BM; r++) {
        float pr[RKC], dsr[RKC];
#pragma unroll
        for (int i = 0; i < RKC; i++) {
          const int key = min(ty + TYC * i, BN - 1);
          pr[i] = sp[r * PS + key];
          dsr[i] = sds[r * PS + key];
        }
#pragma unroll
        for (int c = 0; c < CDC; c++) {
          const int col = 4 * (tx + TXC * c);
          if (COLS_FULL || col < D) {
            const float4 gv = *(const float4 *)(sdo + r * QS + col);
            const float4 qv = *(const float4 *)(sq + r * QS + col);
#pragma unroll
            for (int i = 0; i < RKC; i++) {
              dv[i][c].x = fmaf(pr[i], gv.x, dv[i][c].x);
              dv[i][c].y = fmaf(pr[i], gv.y, dv[i][c].y);
              dv[i][c].z = fmaf(pr[i], gv.z, dv[i][c].z);
              dv[i][c].w = fmaf(pr[i], gv.w, dv[i][c].w);
              dk[i][c].x = fmaf(dsr[i], qv.x, dk[i][c].x);
              dk[i][c].y = fmaf(dsr[i], qv.y, dk[i][c].y);
              dk[i][c].z = fmaf(dsr[i], qv.z, dk[i][c].z);
              dk[i][c].w = fmaf(dsr[i], qv.w, dk[i][c].w);
            }
          }
        }
      }

#if DQ_ATOMIC
      /* dq_acc += dS K for this block's keys: rows ty + TYC i, columns 4 (tx + TXC c). */
      {
        float4 acc[RQC][CDC];
#pragma unroll
        for (int i = 0; i < RQC; i++)
#pragma unroll
          for (int c = 0; c < CDC; c++) acc[i][c] = make_float4(0.f, 0.f, 0.f, 0.f);
        add_ds_k(acc, sds, sk, tx, ty);
#pragma unroll
        for (int i = 0; i < RQC; i++) {
          const int r = ty + TYC * i, row = q0 + r;
          if ((BM >= TYC || r < BM) && row < Sq) {
            float *dst = (float *)p.dq_acc + (((long long)bt * p.heads_q + h) * p.seqlen_q + qrow0 + row) * D;
#pragma unroll
            for (int c = 0; c < CDC; c++) {
              const int col = 4 * (tx + TXC * c);
              if (COLS_FULL || col < D) {
                atomicAdd(dst + col, acc[i][c].x);
                atomicAdd(dst + col + 1, acc[i][c].y);
                atomicAdd(dst + col + 2, acc[i][c].z);
                atomicAdd(dst + col + 3, acc[i][c].w);
              }
            }
          }
        }
      }
#endif
    }
  }

  /* dk = scale dS^T Q summed, dv = P^T dO summed; keys past Sk are not written. */
#pragma unroll
  for (int i = 0; i < RKC; i++) {
    const int key = ty + TYC * i, j = k0 + key;
    if ((BN >= TYC || key < BN) && j < Sk) {
      fa_elem *dkg = (fa_elem *)p.dk + bt * p.dk_sb + hk * p.dk_sh + (krow0 + j) * p.dk_ss;
      fa_elem *dvg = (fa_elem *)p.dv + bt * p.dv_sb + hk * p.dv_sh + (krow0 + j) * p.dv_ss;
#pragma unroll
      for (int c = 0; c < CDC; c++) {
        const int col = 4 * (tx + TXC * c);
        if (COLS_FULL || col < D) {
          dkg[col] = fa_from_float(dk[i][c].x * p.scale);
          dkg[col + 1] = fa_from_float(dk[i][c].y * p.scale);
          dkg[col + 2] = fa_from_float(dk[i][c].z * p.scale);
          dkg[col + 3] = fa_from_float(dk[i][c].w * p.scale);
          dvg[col] = fa_from_float(dv[i][c].x);
          dvg[col + 1] = fa_from_float(dv[i][c].y);
          dvg[col + 2] = fa_from_float(dv[i][c].z);
          dvg[col + 3] = fa_from_float(dv[i][c].w);
        }
      }
    }
  }
}

#if !DQ_ATOMIC
/* dq of one block of BM queries, walking the key blocks (recomputing S and dP): no atomics, a fixed order of
 * summation, bit-identical from run to run. Grid (ceil(Sq / BM), Hq, B). */
extern "C" __global__ void __launch_bounds__(NTHREADS) flash_bwd_dq_simt(const fa_bwd_params p) {
  extern __shared__ float4 fa_smem4[];
  float *smem = (float *)fa_smem4;
  float *sk = smem + SK_OFF, *sv = smem + SV_OFF, *sq = smem + SQ_OFF, *sdo = smem + SDO_OFF;
  float *sds = smem + SDS_OFF, *sl = smem + SL_OFF, *sdi = smem + SDI_OFF;
  const int tid = threadIdx.x, tx = tid % TXC, ty = tid / TXC;
  const int q0 = (int)blockIdx.x * BM;
  const int h = (int)blockIdx.y + p.h0, b = (int)blockIdx.z + p.b0;
  const int hk = h / p.group;
  const seq_span sq_ = seq_of(p, b);
  const int Sq = sq_.sq, Sk = sq_.sk, bt = sq_.bt;
  if (q0 >= Sq) return; /* varlen: past this sequence's rows (the whole block) */
  const long long qrow0 = sq_.qfirst, krow0 = sq_.kfirst;

  load_rows<BM>(sq, (const fa_elem *)p.q + bt * p.q_sb + h * p.q_sh + (qrow0 + q0) * p.q_ss, p.q_ss,
                min(BM, Sq - q0), tid);
  load_rows<BM>(sdo, (const fa_elem *)p.dout + bt * p.do_sb + h * p.do_sh + (qrow0 + q0) * p.do_ss, p.do_ss,
                min(BM, Sq - q0), tid);
  load_row_stats(p, sl, sdi, sq_, h, q0, tid);

  float4 acc[RQC][CDC];
#pragma unroll
  for (int i = 0; i < RQC; i++)
#pragma unroll
    for (int c = 0; c < CDC; c++) acc[i][c] = make_float4(0.f, 0.f, 0.f, 0.f);

  /* Keys past the last row's causal limit are masked for the whole block: those tiles are never visited. */
  long long kbeg = 0, kend = Sk;
#if FA_INFER
  kbeg = fa_band_lo(q0, Sq, Sk, p.inf.wl) / BN * BN; /* the band of the block's rows */
  kend = fa_band_hi(min(q0 + BM, Sq) - 1, Sq, Sk, p.causal, p.inf.wr);
#else
  if (p.causal) {
    const long long lim = (long long)min(q0 + BM, Sq) + Sk - Sq;
    kend = lim < 0 ? 0 : lim < Sk ? lim : Sk;
  }
#endif
  const fa_elem *kg = (const fa_elem *)p.k + bt * p.k_sb + hk * p.k_sh + krow0 * p.k_ss;
  const fa_elem *vg = (const fa_elem *)p.v + bt * p.v_sb + hk * p.v_sh + krow0 * p.v_ss;
  tile_extra te;
#if FA_BLOCK_MASK
  te.m = mask_of(p, b, h);
#endif
#if FA_DROPOUT
  te.bh = (unsigned)(b * p.heads_q + h);
#endif
#if FA_INFER
  te.sq = Sq, te.sk = Sk, te.slope2 = slope2_of(p, b, h);
#endif
  for (int k0 = (int)kbeg; k0 < kend; k0 += BN) {
#if FA_BLOCK_MASK
    /* A tile with every score masked is skipped whole (the same decision in every thread). */
    const int cls = tile_class(p, te.m, q0, BM, k0, BN);
    if (cls == FA_TILE_SKIP) continue;
    te.partial = cls == FA_TILE_PARTIAL;
#endif
    __syncthreads(); /* the previous tile's K and dS are no longer read */
    load_rows<BN>(sk, kg + (long long)k0 * p.k_ss, p.k_ss, min(BN, Sk - k0), tid);
    load_rows<BN>(sv, vg + (long long)k0 * p.v_ss, p.v_ss, min(BN, Sk - k0), tid);
    __syncthreads();
    scores(p, smem, (float *)0, sds, q0, k0, tid, te);
    __syncthreads();
    add_ds_k(acc, sds, sk, tx, ty);
  }

#pragma unroll
  for (int i = 0; i < RQC; i++) {
    const int r = ty + TYC * i, row = q0 + r;
    if ((BM >= TYC || r < BM) && row < Sq) {
      fa_elem *dst = (fa_elem *)p.dq + bt * p.dq_sb + h * p.dq_sh + (qrow0 + row) * p.dq_ss;
#pragma unroll
      for (int c = 0; c < CDC; c++) {
        const int col = 4 * (tx + TXC * c);
        if (COLS_FULL || col < D) {
          dst[col] = fa_from_float(acc[i][c].x * p.scale);
          dst[col + 1] = fa_from_float(acc[i][c].y * p.scale);
          dst[col + 2] = fa_from_float(acc[i][c].z * p.scale);
          dst[col + 3] = fa_from_float(acc[i][c].w * p.scale);
        }
      }
    }
  }
}
#endif
#else
/* ======================= tensor cores: f16 / bf16, sm_80+ ======================= */
/* flash_bwd_dkdv_tc: one block of TC_WARPS warps per (BN keys, kv head, batch). Warp w owns keys
 * 16 (w % KG) .. + 15 (KG = BN / 16 key groups) and the columns of split w / KG (CS = TC_WARPS / KG splits of
 * DP / CS columns) of their dK and dV, which stay in mma accumulators: a warp holds 16 x DP / CS of each, so
 * D > 128 takes CS = 2 (the accumulators of D = 256 then take as many registers as D = 128 with CS = 1).
 * Per block of BM queries (Q, dO, lse, di staged in shared memory), each warp walks the queries 16 at a time:
 *   S^T = K_w Q^T and dP^T = V_w dO^T (16 keys x 16 queries, mma.m16n8k16: K_w, V_w rows as A, Q, dO rows as
 *   the column-major B, as the forward's K), P^T and dS^T on the accumulators, then dV += P^T dO and
 *   dK += dS^T Q over the warp's columns with the accumulators repacked as A operands (as the forward's P)
 *   and dO, Q through ldmatrix.trans; dS^T goes to shared memory as 16-bit dS [query][key]. With CS = 2 the
 *   two warps of a key group compute the same S^T and dP^T (2 of the 5 products twice: simpler than trading
 *   halves through shared memory, and the column split is only taken where the registers demand it).
 * With DQ_ATOMIC, after a barrier warp w adds dS K for queries 16 (w % QG) .. + 15 (QG = BM / 16) and the
 * columns of split w / QG into dq_acc (dS rows as A, K through ldmatrix.trans), 16 columns at a time.
 * FA_DQ_ORDERED (deterministic): those additions are ordered by a semaphore per (query head, query block),
 * which counts the key blocks that have added: key block n waits for its turn (dq_turn: key block order, and
 * with causal the reverse, in which the blocks reach a query block), so every element of dq_acc is summed in
 * one order; blocks that a mask skips still take their turn.
 * P and dS are rounded to the storage type before their products, as in FlashAttention-2; accumulation is
 * float32.
 * Shapes (src/tiling.c picks one for D and the shared-memory budget): BN, BM in {32, 64}, TC_WARPS 4 or 8,
 * with CS = TC_WARPS / KG and QCS = TC_WARPS / QG both 1 or 2. */

#if FA_DTYPE == 0
#error "flash_bwd_dkdv_tc needs a 16-bit FA_DTYPE"
#endif
#ifndef TC_WARPS
#define TC_WARPS 4
#endif
#ifndef FA_DQ_ORDERED
#define FA_DQ_ORDERED 0
#endif
#define KG (BN / 16)            /* key groups of 16 */
#define CS (TC_WARPS / KG)      /* column splits of dK, dV */
#define QG (BM / 16)            /* query groups of 16 (dQ) */
#define QCS (TC_WARPS / QG)     /* column splits of dQ */
#if (BM != 32 && BM != 64) || (BN != 32 && BN != 64) || (CS != 1 && CS != 2) || (QCS != 1 && QCS != 2) || \
    CS * KG != TC_WARPS || QCS * QG != TC_WARPS
#error "flash_bwd_dkdv_tc: BLOCK_M, BLOCK_N in {32, 64}, TC_WARPS = (1 or 2) x BLOCK_N / 16 = (1 or 2) x BLOCK_M / 16"
#endif
#if FA_DQ_ORDERED && !DQ_ATOMIC
#error "FA_DQ_ORDERED orders the DQ_ATOMIC additions"
#endif

#define NTHREADS (32 * TC_WARPS)
/* Head dim padded with zeros to the mma's k of 16, or to 32 when columns are split (each split an even
 * number of 8-column n-tiles, taken two at a time). */
#define DP (CS == 1 && QCS == 1 ? (D + 15) / 16 * 16 : (D + 31) / 32 * 32)
#define DS (DP + 8)  /* row stride of K, V, Q, dO in elements: an odd number of 16-byte units, so the 8 rows an
                        ldmatrix phase reads fall in 8 different bank groups */
#define DSS (BN + 8) /* row stride of dS: 72 or 40 elements, 9 or 5 units */
#define CPR (DP / 8) /* 16-byte chunks per shared row */
#define DCH (D / 8)  /* of which hold data */
#define NDW (DP / 8 / CS)  /* n-tiles of dK, dV per warp */
#define NDQ (DP / 8 / QCS) /* n-tiles of dQ per warp */

/* FA_BWD_PIPELINE (default 1; FLASHATTN_CUDA_BWD_DEFINES=-DFA_BWD_PIPELINE=0 gives the unpipelined kernel):
 * two buffers of Q, dO, lse2, di; the next block of queries is loaded (cp.async, element-wise when rows are
 * not 16-byte aligned) while this one is computed. src/cuda/cu_backward.c adds the second buffer's bytes
 * (4 BM DS + 8 BM) to fa_tiles_cuda_backward's count and sets FA_BWD_PIPELINE=0 when they do not fit.
 * MIN_BLOCKS: the blocks per SM that the register allocation must allow (launch bounds); 8 warps take 1 (a
 * warp's 128 accumulators need more than 64 K registers / 512 threads). */
#ifndef FA_BWD_PIPELINE
#define FA_BWD_PIPELINE 1
#endif
#ifndef MIN_BLOCKS
#define MIN_BLOCKS (TC_WARPS > 4 ? 1 : 2)
#endif
#define TNB (FA_BWD_PIPELINE ? 2 : 1)

/* Shared layout: 16-bit K, V [BN][DS], TNB x (Q, dO [BM][DS]), dS [BM][DSS]; then TNB x float lse2, di [BM].
 * src/tiling.c (fa_tiles_cuda_backward for 16-bit dtypes) counts it for TNB = 1. */
#define TK_OFF 0
#define TV_OFF (BN * DS)
#define TQ_OFF(buf) (2 * BN * DS + (buf) * 2 * BM * DS)
#define TDO_OFF(buf) (TQ_OFF(buf) + BM * DS)
#define TDS_OFF (2 * BN * DS + TNB * 2 * BM * DS)
#define TF_OFF_BYTES (((TDS_OFF + BM * DSS) * 2 + 15) / 16 * 16)

/* Rows [0, ROWS) of a [rows][D] tile at g into shared memory at s (row stride DS); rows >= valid and columns
 * >= D become zeros. vec: every row starts on a 16-byte boundary, so 16-byte loads. */
template <int ROWS>
static __device__ __forceinline__ void tc_load(unsigned short *s, const unsigned short *g, long long stride,
                                               int valid, int vec, int tid) {
  if (vec) {
#pragma unroll 4
    for (int i = tid; i < ROWS * CPR; i += NTHREADS) {
      const int r = i / CPR, c = i % CPR;
      uint4 x = make_uint4(0u, 0u, 0u, 0u);
      if (r < valid && c < DCH) x = *(const uint4 *)(g + r * stride + c * 8);
      *(uint4 *)(s + r * DS + c * 8) = x;
    }
  } else {
#pragma unroll 4
    for (int i = tid; i < ROWS * DP; i += NTHREADS) {
      const int r = i / DP, c = i % DP;
      s[r * DS + c] = (r < valid && c < D) ? g[r * stride + c] : (unsigned short)0;
    }
  }
}

/* tc_load's vec path with cp.async into shared byte address s; the caller commits and waits. */
template <int ROWS>
static __device__ __forceinline__ void tc_load_async(unsigned s, const unsigned short *g, long long stride,
                                                     int valid, int tid) {
#pragma unroll 4
  for (int i = tid; i < ROWS * CPR; i += NTHREADS) {
    const int r = i / CPR, c = i % CPR;
    const bool ok = r < valid && c < DCH;
    fa_cp_async16(s + (unsigned)((r * DS + c * 8) * 2), ok ? (const void *)(g + r * stride + c * 8) : (const void *)g,
                  ok ? 16 : 0);
  }
}

static __device__ __forceinline__ unsigned short tc_half(float f) { return (unsigned short)fa_from_float(f); }

#if FA_DQ_ORDERED
/* Wait (one thread) until the semaphore counts `target` key blocks done; acquire: their additions are
 * visible from here on. */
static __device__ __forceinline__ void sem_wait(const int *sem, int target) {
  int v;
  for (;;) {
    asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(sem) : "memory");
    if (v == target) return;
    __nanosleep(32);
  }
}

/* The number of key blocks that add into query block m before key block n (of nk). A block waits only on
 * blocks launched before it (lower blockIdx.x): those are resident or done, whatever the grid's size.
 *   causal: blocks are launched last key block first, and block n starts at the query block holding row
 *     n BN - diag and walks up, so higher blocks reach block m first: the blocks after n that see block m go
 *     before it, the n' < cnt = ceil(((m + 1) BM + diag) / BN) (at most nk; block n' sees block m when
 *     n' BN - diag < (m + 1) BM).
 *   otherwise every block walks the query blocks from the first: block order, n before it. */
static __device__ __forceinline__ int dq_turn(int causal, int n, int nk, int m, long long diag) {
  if (!causal) return n;
  const long long x = (long long)(m + 1) * BM + diag, cnt = (x + BN - 1) / BN;
  return (int)(cnt < nk ? cnt : nk) - 1 - n;
}

#if FA_INFER
/* dq_turn under the band: the key blocks that reach query block q0 (rows q0 .. of sq) are those from the one
 * holding its first row's first key to the one holding its last row's last key; they add in launch order
 * (ascending, or from the last when causal). */
static __device__ __forceinline__ int dq_turn_band(const fa_bwd_params &p, int n, int q0, int sq, int sk) {
  if (!p.causal) return n - fa_band_lo(q0, sq, sk, p.inf.wl) / BN;
  return (fa_band_hi(min(q0 + BM, sq) - 1, sq, sk, p.causal, p.inf.wr) - 1) / BN - n;
}
#endif

/* Count this key block done (every thread calls it, after its additions). */
static __device__ __forceinline__ void sem_post(int tid, int *sem) {
  __threadfence(); /* this thread's additions before the count */
  __syncthreads();
  if (tid == 0) asm volatile("red.release.gpu.global.add.s32 [%0], 1;" ::"l"(sem) : "memory");
}
#endif

extern "C" __global__ void __launch_bounds__(NTHREADS, MIN_BLOCKS) flash_bwd_dkdv_tc(const fa_bwd_params p) {
  extern __shared__ __align__(16) unsigned char fa_smem[];
  unsigned short *smem = (unsigned short *)fa_smem;
  float *const sf = (float *)(fa_smem + TF_OFF_BYTES); /* buffer buf's lse2, di at sf + 2 BM buf */
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int hk = (int)blockIdx.y + p.h0, b = (int)blockIdx.z + p.b0;
  const seq_span sq_ = seq_of(p, b);
  const int Sq = sq_.sq, Sk = sq_.sk, bt = sq_.bt;
  const long long qrow0 = sq_.qfirst, krow0 = sq_.kfirst;
#if FA_DQ_ORDERED
  /* Causal: the last key block first (dq_turn: it adds first, and a block waits only on blocks launched
   * before it, which are resident or done). */
  const int nkb = (Sk + BN - 1) / BN, kb = p.causal ? nkb - 1 - (int)blockIdx.x : (int)blockIdx.x;
#else
  const int kb = (int)blockIdx.x;
#endif
  const int k0 = kb * BN;
  if (k0 < 0 || k0 >= Sk) return; /* varlen: past this sequence's keys (the whole block) */
  const long long diag = (long long)Sk - Sq;
  const int kw = (warp % KG) * 16;  /* this warp's first key row in the tile */
  const int cw = (warp / KG) * NDW;  /* its first n-tile of dK, dV columns */
  const int qw = (warp % QG) * 16;   /* dQ: its first query row in the block */
  const int cq = (warp / QG) * NDQ;  /* ... and first n-tile of columns */
  (void)qw, (void)cq;

  tc_load<BN>(smem + TK_OFF, (const unsigned short *)p.k + bt * p.k_sb + hk * p.k_sh + (krow0 + k0) * p.k_ss,
              p.k_ss, min(BN, Sk - k0), p.vec16, tid);
  tc_load<BN>(smem + TV_OFF, (const unsigned short *)p.v + bt * p.v_sb + hk * p.v_sh + (krow0 + k0) * p.v_ss,
              p.v_ss, min(BN, Sk - k0), p.vec16, tid);

  /* ldmatrix byte offsets of this lane (see the forward, kernels/flash_fwd.cu):
   * A from row-major rows: matrices (rows 0-7, k 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15);
   * B from row-major [n][k] rows: b0, b1 of n-tile 0 and of n-tile 1;
   * B from row-major [k][n] rows (transposed): b0, b1 of n-tile 0 and of n-tile 1. */
  const unsigned a_row = (unsigned)(lane & 15), a_col = (unsigned)((lane >> 4) * 8);
  const unsigned b_off = (unsigned)((((lane & 7) + ((lane >> 4) << 3)) * DS + ((lane >> 3) & 1) * 8) * 2);
  const unsigned t_off = (unsigned)((((lane & 7) + (((lane >> 3) & 1) << 3)) * DS + (lane >> 4) * 8) * 2);
  const unsigned sbase = fa_smem_addr(smem);
  const unsigned sk_a = sbase + (unsigned)((TK_OFF + (kw + a_row) * DS + a_col) * 2);
  const unsigned sv_a = sbase + (unsigned)((TV_OFF + (kw + a_row) * DS + a_col) * 2);
  const unsigned sk_addr = sbase + TK_OFF * 2;
  const unsigned sds_a = sbase + (unsigned)((TDS_OFF + (qw + a_row) * DSS + a_col) * 2);
  unsigned short *sds = smem + TDS_OFF;
  (void)sds, (void)sds_a, (void)sk_addr; /* used by the dQ part (DQ_ATOMIC) only */

  float dk[NDW][4], dv[NDW][4];
#pragma unroll
  for (int nd = 0; nd < NDW; nd++)
#pragma unroll
    for (int e = 0; e < 4; e++) dk[nd][e] = dv[nd][e] = 0.f;

  /* Rows before k0 - diag see no key of this block: start at the query block holding that row. The walk ends
   * at qstop. */
  int qstart = 0;
#if FA_INFER
  int qstop;
  fa_band_rows(k0, min(k0 + BN, Sk), Sq, Sk, p.causal, p.inf.wl, p.inf.wr, &qstart, &qstop); /* the band's rows */
  qstart -= qstart % BM;
  if (qstart >= qstop) qstop = qstart = Sq; /* no row sees this block: no step */
  /* The rows [rlo, rhi) that see this lane's two keys kw + g and kw + g + 8, and the query heads' slopes. */
  int rlo[2], rhi[2];
#pragma unroll
  for (int x = 0; x < 2; x++) {
    const int j = k0 + kw + g + 8 * x;
    rlo[x] = rhi[x] = 0;
    if (j < Sk) fa_band_rows(j, j + 1, Sq, Sk, p.causal, p.inf.wl, p.inf.wr, &rlo[x], &rhi[x]);
  }
#else
  const int qstop = Sq;
  if (p.causal) {
    const long long first = (long long)k0 - diag;
    qstart = first < 0 ? 0 : first > Sq ? Sq : (int)first;
    qstart -= qstart % BM;
  }
#endif
#if FA_DQ_ORDERED
  const int nmq = (Sq + BM - 1) / BM;
  (void)nmq;
#endif

  /* The (query head, query block) steps in order, flattened so that step n + 1's loads can be issued during
   * step n: load(gi, q0, buf) fills buffer buf (cp.async uncommitted, or plain stores) and reads lse2, di. */
  auto load = [&](int gi, int q0, int buf) {
    const int h = hk * p.group + gi;
    const unsigned short *qg = (const unsigned short *)p.q + bt * p.q_sb + h * p.q_sh + (qrow0 + q0) * p.q_ss;
    const unsigned short *dog = (const unsigned short *)p.dout + bt * p.do_sb + h * p.do_sh + (qrow0 + q0) * p.do_ss;
    const int valid = min(BM, Sq - q0);
    if (FA_BWD_PIPELINE && p.vec16) {
      tc_load_async<BM>(sbase + (unsigned)(TQ_OFF(buf) * 2), qg, p.q_ss, valid, tid);
      tc_load_async<BM>(sbase + (unsigned)(TDO_OFF(buf) * 2), dog, p.do_ss, valid, tid);
      fa_cp_async_commit();
    } else {
      tc_load<BM>(smem + TQ_OFF(buf), qg, p.q_ss, valid, p.vec16, tid);
      tc_load<BM>(smem + TDO_OFF(buf), dog, p.do_ss, valid, p.vec16, tid);
    }
    for (int r = tid; r < BM; r += NTHREADS) {
      const int i = q0 + r;
      float l = FA_POS_INF, di = 0.f;
      if (i < Sq) {
        const float lse = ((const float *)p.lse)[bt * p.lse_sb + h * p.lse_sh + (qrow0 + i) * p.lse_ss];
        if (lse != FA_NEG_INF) l = lse * LOG2E;
        di = ((const float *)p.di)[((long long)bt * p.heads_q + h) * p.seqlen_q + qrow0 + i];
      }
      sf[2 * BM * buf + r] = l;
      sf[2 * BM * buf + BM + r] = di;
    }
  };

#if FA_DQ_ORDERED
  auto sem_of = [&](int h, int q0) -> int * { return (int *)p.sem + sem_index(p, bt, h, (int)qrow0, q0); };
#if FA_INFER
  auto turn = [&](int q0) { return dq_turn_band(p, kb, q0, Sq, Sk); };
#else
  auto turn = [&](int q0) { return dq_turn(p.causal, kb, nkb, q0 / BM, diag); };
#endif
#endif

#if FA_BLOCK_MASK
  /* Steps whose tile (BM queries of head hk group + gi x this block's keys) the mask hides are never loaded.
   * Step s (0 <= s < nsteps) is query block qstart + (s % nq) BM of head gi = s / nq. seek(s) returns the
   * first step at or after s that is not skipped (nsteps when none is left) and its class, so the pipeline
   * prefetches the next tile that will be computed; s only grows from call to call. Each warp classifies a
   * window of 32 steps at once (a lane each: the mask bytes' loads in parallel) and keeps the ballot of those
   * not skipped, and each lane its step's class: the mask is read once per 32 steps, and every warp finds the
   * same steps. */
  const int nq = qstart < Sq ? (Sq - qstart + BM - 1) / BM : 0, nsteps = p.group * nq;
  auto step_q0 = [&](int s, int gs) { return qstart + (s - gs * nq) * BM; }; /* step s, of head gs */
  int win = -32, win_cls = FA_TILE_SKIP; /* the window's first step; this lane's step's class */
  unsigned win_hit = 0u;                 /* bit i: step win + i is not skipped */
  auto seek = [&](int s, int &cls_) -> int {
    while (s < nsteps) {
      if (s >= win + 32) {
        win = s;
        const int me = s + lane;
        win_cls = FA_TILE_SKIP;
        if (me < nsteps) {
          const int gm = me / nq;
          win_cls = tile_class(p, mask_of(p, b, hk * p.group + gm), step_q0(me, gm), BM, k0, BN);
        }
        win_hit = __ballot_sync(0xffffffffu, win_cls != FA_TILE_SKIP);
      }
      const unsigned hit = win_hit & (0xffffffffu << (s - win)); /* steps s.. of the window */
      if (hit) {
        const int src = __ffs(hit) - 1;
        cls_ = __shfl_sync(0xffffffffu, win_cls, src);
        return win + src;
      }
      s = win + 32;
    }
    return nsteps;
  };
#if FA_DQ_ORDERED
  /* Skipped steps [from, to) still count for the key blocks after this one: wait for this block's turn and
   * count it, adding nothing. */
  auto sem_pass = [&](int from, int to) {
    for (int s = from; s < to; s++) {
      const int gs = s / nq;
      const int sq0 = step_q0(s, gs);
      int *sem = sem_of(hk * p.group + gs, sq0);
      sem_wait(sem, turn(sq0));
      asm volatile("red.release.gpu.global.add.s32 [%0], 1;" ::"l"(sem) : "memory");
    }
  };
#endif
  int cls = FA_TILE_SKIP;
  int step = seek(0, cls), gi = nq ? step / nq : p.group, q0 = step < nsteps ? step_q0(step, gi) : Sq;
  int buf = 0;
#if FA_DQ_ORDERED
  if (tid == 0) sem_pass(0, step);
#endif
#else
  int gi = 0, q0 = qstart, buf = 0;
#endif
  if (FA_BWD_PIPELINE && q0 < qstop) load(gi, q0, 0);
  for (; q0 < qstop; buf ^= FA_BWD_PIPELINE) {
    const int h = hk * p.group + gi; /* used by the dQ part (DQ_ATOMIC), the mask and dropout only */
    (void)h;
#if FA_INFER
    const float slope2 = slope2_of(p, b, h);
#endif
#if FA_BLOCK_MASK
    int ncls = FA_TILE_SKIP; /* the next step that is not skipped */
    const int nstep = seek(step + 1, ncls);
    const int ngi = nstep / nq, nq0 = nstep < nsteps ? step_q0(nstep, ngi) : Sq;
    const fa_u8 *const mh = mask_of(p, b, h);
    const bool partial = cls == FA_TILE_PARTIAL; /* FA_TILE_FULL: no score is tested */
#else
    int ngi = gi, nq0 = q0 + BM; /* the next step */
    if (nq0 >= qstop) ngi++, nq0 = qstart;
    if (ngi >= p.group) nq0 = qstop;
#endif
#if FA_DROPOUT
    const unsigned bh = (unsigned)(b * p.heads_q + h);
#endif
#if FA_BWD_PIPELINE
    fa_cp_async_wait_all(); /* this step's Q, dO (committed during the previous step) */
    __syncthreads();        /* ... for every thread; and the previous step no longer reads buffer buf ^ 1 */
    if (nq0 < qstop) load(ngi, nq0, buf ^ 1);
#else
    __syncthreads(); /* the previous block's Q, dO and dS are no longer read */
    load(gi, q0, 0);
    __syncthreads();
#endif
    const float *sl = sf + 2 * BM * buf, *sdi = sl + BM;
    const unsigned sq_addr = sbase + (unsigned)(TQ_OFF(buf) * 2), sdo_addr = sbase + (unsigned)(TDO_OFF(buf) * 2);

#pragma unroll 1
    for (int c = 0; c < BM / 16; c++) {
      /* S^T and dP^T for keys kw.., queries 16 c .. 16 c + 15 (n-tiles 0 and 1). */
      float st[2][4], dpt[2][4];
#pragma unroll
      for (int nt = 0; nt < 2; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) st[nt][e] = dpt[nt][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < DP / 16; kk++) {
        unsigned a[4], bq[4];
        fa_ldmatrix_x4(a, sk_a + kk * 32);
        fa_ldmatrix_x4(bq, sq_addr + b_off + (unsigned)((c * 16 * DS + kk * 16) * 2));
        fa_mma_16816(st[0], a, bq[0], bq[1]);
        fa_mma_16816(st[1], a, bq[2], bq[3]);
        fa_ldmatrix_x4(a, sv_a + kk * 32);
        fa_ldmatrix_x4(bq, sdo_addr + b_off + (unsigned)((c * 16 * DS + kk * 16) * 2));
        fa_mma_16816(dpt[0], a, bq[0], bq[1]);
        fa_mma_16816(dpt[1], a, bq[2], bq[3]);
      }
#if FA_DROPOUT
      /* The keep bits of this lane's 8 scores, bit 4 nt + e. masks.h groups the scores (i, j), (i, j + 1),
       * (i + 8, j), (i + 8, j + 1) (i % 16 < 8, j even) under one Philox call; this lane holds queries
       * i = q0 + 16 c + 2 t + x (x = 0, 1) and i + 8 for keys kw + g and kw + g + 8, so the group of (x, key)
       * holds 2 of its scores and the lane across g ^ 1 (lane ^ 4, same t, the other key of each pair) the
       * other 2. Each lane of the pair draws the groups of x = g & 1 (one per key) and hands the partner the
       * words of its key parity: 2 calls per lane per 8 scores, no redundancy. */
      unsigned zbits = 0;
      {
        const unsigned par = (unsigned)g & 1u;
#pragma unroll
        for (int kh = 0; kh < 2; kh++) {
          unsigned w[4];
          fa_dropout_words(p.dropout_seed, p.dropout_offset, bh, (unsigned)(q0 + c * 16 + 2 * t) + par,
                           (unsigned)(k0 + kw + g + 8 * kh), w);
          /* Word 2 n + (key parity) is score (i + 8 n, key): this lane's own are those of parity par. */
          const unsigned own0 = par ? w[1] : w[0], own1 = par ? w[3] : w[2];
          const unsigned give0 = par ? w[0] : w[1], give1 = par ? w[2] : w[3];
          const unsigned got0 = __shfl_xor_sync(0xffffffffu, give0, 4);
          const unsigned got1 = __shfl_xor_sync(0xffffffffu, give1, 4);
          /* Element e = x + 2 kh of n-tile nt: own words for x = par, the partner's for x = par ^ 1. */
          const int eo = (int)par + 2 * kh, ep = (int)(par ^ 1u) + 2 * kh;
          zbits |= (unsigned)(own0 >= p.dropout_threshold) << eo;
          zbits |= (unsigned)(own1 >= p.dropout_threshold) << (4 + eo);
          zbits |= (unsigned)(got0 >= p.dropout_threshold) << ep;
          zbits |= (unsigned)(got1 >= p.dropout_threshold) << (4 + ep);
        }
      }
#endif
      /* P^T and dS^T: element e of n-tile nt is key kw + g + 8 (e / 2), query 16 c + 8 nt + 2 t + e % 2. */
#pragma unroll
      for (int nt = 0; nt < 2; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int r = c * 16 + nt * 8 + 2 * t + (e & 1);
          const long long key = (long long)k0 + kw + g + 8 * (e >> 1);
          long long last = (long long)Sk - 1; /* the last key query q0 + r sees */
          if (p.causal && q0 + r + diag < last) last = q0 + r + diag;
          const float l = sl[r];
#if FA_INFER
          /* The modified base-2 score; P zero outside the rows that see the key; dS takes softcap's factor. */
          (void)last;
          float gf;
          const float x = mod_score<FA_TC>(p, st[nt][e], slope2, q0 + r + (int)diag, (int)key, gf);
          const int qr = q0 + r;
          const float pe = (l != FA_POS_INF && qr >= rlo[e >> 1] && qr < rhi[e >> 1]) ? exp2f(x - l) : 0.f;
          st[nt][e] = pe;
          dpt[nt][e] = pe * (dpt[nt][e] - sdi[r]) * gf;
#elif FA_BLOCK_MASK || FA_DROPOUT
          bool visible = l != FA_POS_INF && key <= last;
#if FA_BLOCK_MASK
          if (partial) visible = visible && block_keep(p, mh, q0 + r, (int)key);
#endif
          const float pe = visible ? exp2f(fmaf(st[nt][e], p.scale_log2, -l)) : 0.f;
#if FA_DROPOUT
          /* dV takes P Z s; dS = P (dP Z s - di). */
          const bool z = (zbits >> (4 * nt + e)) & 1u;
          st[nt][e] = z ? pe * p.dropout_scale : 0.f;
          dpt[nt][e] = pe * ((z ? dpt[nt][e] * p.dropout_scale : 0.f) - sdi[r]);
#else
          st[nt][e] = pe;
          dpt[nt][e] = pe * (dpt[nt][e] - sdi[r]);
#endif
#else
          const float pe = (l != FA_POS_INF && key <= last) ? exp2f(fmaf(st[nt][e], p.scale_log2, -l)) : 0.f;
          st[nt][e] = pe;
          dpt[nt][e] = pe * (dpt[nt][e] - sdi[r]);
#endif
        }
      unsigned ap[4], as[4];
      ap[0] = fa_pack2(st[0][0], st[0][1]);
      ap[1] = fa_pack2(st[0][2], st[0][3]);
      ap[2] = fa_pack2(st[1][0], st[1][1]);
      ap[3] = fa_pack2(st[1][2], st[1][3]);
      as[0] = fa_pack2(dpt[0][0], dpt[0][1]);
      as[1] = fa_pack2(dpt[0][2], dpt[0][3]);
      as[2] = fa_pack2(dpt[1][0], dpt[1][1]);
      as[3] = fa_pack2(dpt[1][2], dpt[1][3]);
      /* dV += P^T dO and dK += dS^T Q over these 16 queries. */
#pragma unroll
      for (int nd = 0; nd < NDW; nd += 2) {
        unsigned bb[4];
        fa_ldmatrix_x4_trans(bb, sdo_addr + t_off + (unsigned)((c * 16 * DS + (cw + nd) * 8) * 2));
        fa_mma_16816(dv[nd], ap, bb[0], bb[1]);
        fa_mma_16816(dv[nd + 1], ap, bb[2], bb[3]);
        fa_ldmatrix_x4_trans(bb, sq_addr + t_off + (unsigned)((c * 16 * DS + (cw + nd) * 8) * 2));
        fa_mma_16816(dk[nd], as, bb[0], bb[1]);
        fa_mma_16816(dk[nd + 1], as, bb[2], bb[3]);
      }
#if DQ_ATOMIC
      /* dS [query][key] for the dQ product: the transpose of this warp's dS^T fragment (written by the
       * first warp of the key group when two hold it). */
      if (CS == 1 || warp < KG) {
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
          for (int e = 0; e < 4; e++)
            sds[(c * 16 + nt * 8 + 2 * t + (e & 1)) * DSS + kw + g + 8 * (e >> 1)] = tc_half(dpt[nt][e]);
      }
#endif
    }

#if DQ_ATOMIC
#if FA_DQ_ORDERED
    if (tid == 0) sem_wait(sem_of(h, q0), turn(q0));
#endif
    __syncthreads(); /* every warp's dS is in shared memory (FA_DQ_ORDERED: and key blocks before this one
                        have added theirs) */
    {
      /* dq_acc += dS K for queries q0 + qw .., columns 8 cq .., 16 columns at a time. */
      unsigned af[BN / 16][4];
#pragma unroll
      for (int kb = 0; kb < BN / 16; kb++) fa_ldmatrix_x4(af[kb], sds_a + kb * 32);
      const int row_a = q0 + qw + g, row_b = row_a + 8;
      float *acc_a = (float *)p.dq_acc + (((long long)bt * p.heads_q + h) * p.seqlen_q + qrow0 + row_a) * D;
      float *acc_b = acc_a + 8 * D;
#pragma unroll
      for (int nd = cq; nd < cq + NDQ; nd += 2) {
        float q2[2][4];
#pragma unroll
        for (int j = 0; j < 2; j++) q2[j][0] = q2[j][1] = q2[j][2] = q2[j][3] = 0.f;
#pragma unroll
        for (int kb = 0; kb < BN / 16; kb++) {
          unsigned bb[4];
          fa_ldmatrix_x4_trans(bb, sk_addr + t_off + (unsigned)((kb * 16 * DS + nd * 8) * 2));
          fa_mma_16816(q2[0], af[kb], bb[0], bb[1]);
          fa_mma_16816(q2[1], af[kb], bb[2], bb[3]);
        }
#pragma unroll
        for (int j = 0; j < 2; j++) {
          const int col = (nd + j) * 8 + 2 * t;
          if (col < D) {
            if (row_a < Sq) {
              atomicAdd(acc_a + col, q2[j][0]);
              atomicAdd(acc_a + col + 1, q2[j][1]);
            }
            if (row_b < Sq) {
              atomicAdd(acc_b + col, q2[j][2]);
              atomicAdd(acc_b + col + 1, q2[j][3]);
            }
          }
        }
      }
    }
#if FA_DQ_ORDERED
    sem_post(tid, sem_of(h, q0));
#if FA_BLOCK_MASK
    if (tid == 0) sem_pass(step + 1, nstep); /* the skipped steps up to the next one */
#endif
#endif
#endif
    gi = ngi, q0 = nq0;
#if FA_BLOCK_MASK
    step = nstep, cls = ncls;
#endif
  }

  /* dk = scale dS^T Q summed, dv = P^T dO summed; keys past Sk are not written. */
#pragma unroll
  for (int hh = 0; hh < 2; hh++) {
    const int j = k0 + kw + g + 8 * hh;
    if (j < Sk) {
      unsigned short *dkg = (unsigned short *)p.dk + bt * p.dk_sb + hk * p.dk_sh + (krow0 + j) * p.dk_ss;
      unsigned short *dvg = (unsigned short *)p.dv + bt * p.dv_sb + hk * p.dv_sh + (krow0 + j) * p.dv_ss;
#pragma unroll
      for (int nd = 0; nd < NDW; nd++) {
        const int col = (cw + nd) * 8 + 2 * t;
        if (col < D) {
          dkg[col] = tc_half(dk[nd][2 * hh] * p.scale);
          dkg[col + 1] = tc_half(dk[nd][2 * hh + 1] * p.scale);
          dvg[col] = tc_half(dv[nd][2 * hh]);
          dvg[col + 1] = tc_half(dv[nd][2 * hh + 1]);
        }
      }
    }
  }
}
#endif /* FA_TC */
#endif /* FA_BWD_PARAMS_ONLY */

/* FlashAttention forward for CUDA: O = softmax(scale Q K^T [causal mask]) V and the per-row log-sum-exp,
 * one thread block per (block of query rows, query head, batch), one pass over the key tiles with an online
 * softmax; the Sq x Sk scores never leave the chip.
 *
 * Tensors (element strides in fa_fwd_params, head dim contiguous):
 *   q [B, Sq, Hq, D], k and v [B, Sk, Hkv, D], o [B, Sq, Hq, D], lse [B, Hq, Sq] float32 (optional).
 *   Query head h reads key/value head h / group. Causal (bottom-right): key j masked for query i when
 *   j > i + Sk - Sq. A row whose keys are all masked gets o = 0 and lse = -inf.
 *
 * Work, for the benchmark's arithmetic (non-causal; causal does about half):
 *   FLOPs = 4 B Hq Sq Sk D (two matrix products of 2 Sq Sk D each, per head); exp2: B Hq Sq Sk.
 *   DRAM bytes >= e (2 B Sq Hq D + 2 B Sk Hkv D) + 4 B Hq Sq (lse), e = element size; each block also reads
 *   its head's whole K and V (Sk D e each) from L2, ceil(Sq / Br) times per head.
 *   D = 128, Sq = Sk = 8192, B = 2, H = 16, f16: 1.10e12 FLOPs over 268 MB of DRAM traffic: compute-bound.
 *
 * Two kernels, one compiled per variant by -D defines:
 *   FA_TC=1  flash_fwd_tc, f16/bf16 on tensor cores (sm_80+), FlashAttention-2's structure: 4 warps and
 *            64 query rows per block (16 per warp); Q fragments in registers (D <= 128; above that re-read
 *            from shared memory each tile, to keep registers for O); K/V tiles of BLOCK_N rows double-buffered
 *            in shared memory and loaded with cp.async (FA_ASYNC=1; FA_ASYNC=0 loads element by element when
 *            strides or addresses are not 16-byte aligned); S = Q K^T and O += P V with mma.m16n8k16;
 *            the online softmax runs on the accumulator fragments; P goes from accumulators straight into A
 *            operands; V fragments through ldmatrix.trans.
 *   FA_TC=0  flash_fwd_simt, any dtype on CUDA cores (float32 in shared memory): BLOCK_M x BLOCK_N score
 *            tiles, each thread a small register block of scores and of O.
 * Defines: FA_DTYPE (0 f32, 1 f16, 2 bf16), HEAD_DIM (multiple of 8, <= 256), BLOCK_N, and FA_ASYNC,
 * Q_IN_REGS (tensor cores) or BLOCK_M (CUDA cores).
 *
 * Optional features, each a define so that dense calls compile exactly the code they had before
 * (kernels/masks.h holds the one implementation of both masks):
 *   FA_BLOCK_MASK=1  block-sparse: each key tile (the block's rows clipped to Sq x the tile's keys clipped
 *                    to Sk) is classified against the (batch, head)'s block mask first. SKIP tiles are never
 *                    loaded or computed (the loop and the tensor-core prefetch step from one non-skipped tile
 *                    to the next), FULL tiles take the dense path, PARTIAL ones set masked scores to -inf
 *                    where the causal mask is applied.
 *   FA_DROPOUT=1     each probability used in O += P V is kept with Philox's word (fa_dropout_keep) and the
 *                    final 1 / l is scaled by 1 / (1 - p); m, l and lse are those of the undropped softmax.
 *   FA_INFER=1       the inference options (not with the two above; masks.h's band, spans and modifiers):
 *                    varlen (grid z over sequences; a block reads its sequence's span from cu_q / cu_k, leaves
 *                    when its rows start past it, and works on that sequence's rows and keys of the packed
 *                    axes), the band of causal and the sliding window (the key loop runs from the block's first
 *                    row's first key to its last row's last: tiles outside are never loaded; tiles wholly
 *                    inside need no per-score test), softcap and ALiBi on the scores in base 2 (the scores
 *                    are scaled before the softmax, which then takes a scale of 1). */
#include "cuda_common.cuh"
#include "cuda_params.h"
#ifndef FA_INFER
#define FA_INFER 0
#endif
#if FA_BLOCK_MASK || FA_DROPOUT || FA_INFER
#include "masks.h"
#endif
#if FA_INFER && (FA_BLOCK_MASK || FA_DROPOUT)
#error "FA_INFER does not combine with FA_BLOCK_MASK or FA_DROPOUT"
#endif

#include "flash_fwd_tiles.cuh"

#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif
#ifndef BLOCK_N
#error "BLOCK_N must be defined"
#endif

#if FA_TC
/* ======================= tensor cores: f16 / bf16, sm_80+ ======================= */

#if FA_DTYPE == 0
#error "flash_fwd_tc needs a 16-bit FA_DTYPE"
#endif
#ifndef FA_ASYNC
#define FA_ASYNC 1
#endif
#ifndef Q_IN_REGS
#define Q_IN_REGS 1
#endif

#define BM 64       /* query rows per block */
#define NTHREADS 128
#define BN BLOCK_N  /* key rows per tile: a multiple of 16 */
#define DP ((HEAD_DIM + 15) / 16 * 16) /* head dim padded to the mma's k of 16 (zeros) */
#define DS (DP + 8) /* shared row stride in elements: an odd number of 16-byte units, so the 8 rows an
                       ldmatrix phase reads fall in 8 different bank groups */
#define CPR (DP / 8)        /* 16-byte chunks per shared row */
#define DCH (HEAD_DIM / 8)  /* of which hold data */
/* Shared layout, in elements: stage s at s * 2 * BN * DS holds K (BN rows) then V (BN rows). Q (BM rows)
 * sits in stage 1 while it is moved into registers, or after both stages when it stays in shared memory. */
#if Q_IN_REGS
#define SQ_OFFSET (2 * BN * DS)
#else
#define SQ_OFFSET (4 * BN * DS)
#endif

/* Blocks per SM the register allocation must allow (__launch_bounds__): 3 x 4 warps at D <= 128 (168 registers
 * a thread, which ptxas reaches without spilling; 12 warps hide the latency of a block's barrier), 2 above. */
#ifndef MIN_BLOCKS
#define MIN_BLOCKS (DP <= 64 ? 4 : DP <= 128 ? 3 : 2)
#endif

#if (BN % 16) != 0 || BN < 16
#error "BLOCK_N must be a multiple of 16"
#endif

/* Rows [0, ROWS) of a tile at g (row stride `stride` elements) into shared memory at s (row stride DS):
 * rows >= valid and columns >= HEAD_DIM become zeros, so padding adds nothing to the products.
 * cp.async path: thread tid always copies 16-byte column chunk tid % CPW of rows tid / CPW + RPI it, so one
 * running pointer per thread suffices (CPW, the chunks per row rounded up to a power of two, divides the
 * block; threads past the row's CPR chunks sit out). */
static __device__ constexpr int fa_pow2_at_least(int n) { return n <= 1 ? 1 : 2 * fa_pow2_at_least((n + 1) / 2); }
#define CPW fa_pow2_at_least(CPR)
#define RPI (NTHREADS / CPW) /* rows per pass of the block */

template <int ROWS>
static __device__ __forceinline__ void load_tile(unsigned short *s, const unsigned short *g, long long stride,
                                                 int valid, int tid) {
#if FA_ASYNC
  const int c = tid % CPW, r0 = tid / CPW;
  if (c < CPR) {
    const unsigned dst = fa_smem_addr(s) + (unsigned)(r0 * DS + c * 8) * 2u;
    const unsigned short *src = g + r0 * stride + c * 8;
    const long long step = RPI * stride;
#pragma unroll
    for (int it = 0; it < (ROWS + RPI - 1) / RPI; it++) {
      const int r = r0 + it * RPI;
      if (ROWS % RPI == 0 || r < ROWS) {
        const bool ok = c < DCH && r < valid; /* else zero-fill, from an address known to be valid */
        fa_cp_async16(dst + (unsigned)(it * RPI * DS * 2), ok ? src : g, ok ? 16 : 0);
      }
      src += step;
    }
  }
#else
#pragma unroll 4
  for (int i = tid; i < ROWS * DP; i += NTHREADS) {
    const int r = i / DP, c = i % DP;
    s[r * DS + c] = (r < valid && c < HEAD_DIM) ? g[r * stride + c] : (unsigned short)0;
  }
#endif
}

extern "C" __global__ void __launch_bounds__(NTHREADS, MIN_BLOCKS) flash_fwd_tc(const fa_fwd_params p) {
  extern __shared__ __align__(16) unsigned char fa_smem[];
  unsigned short *smem = (unsigned short *)fa_smem;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3; /* mma fragment coordinates: row group and column pair */
  /* Causal blocks further down have more keys: launch those first so the tail of the grid is short. */
  const int mb = p.causal ? (int)(gridDim.x - 1 - blockIdx.x) : (int)blockIdx.x;
  const int h = (int)blockIdx.y + p.h0, b = (int)blockIdx.z + p.b0;
  const int hk = h / p.group;
  const int m0 = mb * BM;
  const fa_walk w = fa_walk_of(p, b, h, m0, BM, BN);
  const int Sq = w.sq, Sk = w.sk, bt = w.bt, j_first = w.j_first, n_tiles = w.n_tiles, r_last = min(m0 + BM, Sq);
  const long long qrow0 = w.qrow0, krow0 = w.krow0;
  if (m0 >= Sq) return; /* varlen: past this sequence's rows (the whole block, before any barrier) */
  (void)r_last;
  const unsigned short *qg = (const unsigned short *)p.q + bt * p.q_sb + h * p.q_sh + (qrow0 + m0) * p.q_ss;
  const unsigned short *kg = (const unsigned short *)p.k + bt * p.k_sb + hk * p.k_sh + krow0 * p.k_ss;
  const unsigned short *vg = (const unsigned short *)p.v + bt * p.v_sb + hk * p.v_sh + krow0 * p.v_ss;
#if FA_BLOCK_MASK
  /* The tiles visited, in order: j (computed now, in stage st), jn (prefetched now), jn2 (found at the end of
   * this iteration, so that jn's prefetch is issued at once and the mask loads overlap it and the mma).
   * cls, ncls, ncls2: their classes (FULL or PARTIAL). The stage alternates per visited tile. */
  const unsigned char *mk = (const unsigned char *)p.mask + b * p.mask_sb + h * p.mask_sh;
  const int r_end = min(m0 + BM, Sq);
  int cls, ncls, ncls2, jn2, st = 0;
  int j = fa_next_tile(p, mk, m0, r_end, BN, 0, n_tiles, lane, 32, 0xffffffffu, &cls);
  int jn = fa_next_tile(p, mk, m0, r_end, BN, j + 1, n_tiles, lane, 32, 0xffffffffu, &ncls);
#endif
#if FA_DROPOUT
  const unsigned bh = (unsigned)b * (unsigned)p.heads_q + (unsigned)h; /* < 2^32: fa_forward checks B * Hq */
#endif

  /* Prologue: Q and the first K/V tile. */
  unsigned short *sq = smem + SQ_OFFSET;
  load_tile<BM>(sq, qg, p.q_ss, min(BM, Sq - m0), tid);
#if FA_BLOCK_MASK
  if (j < n_tiles) {
    const int n1 = j * BN;
    load_tile<BN>(smem, kg + (long long)n1 * p.k_ss, p.k_ss, min(BN, Sk - n1), tid);
    load_tile<BN>(smem + BN * DS, vg + (long long)n1 * p.v_ss, p.v_ss, min(BN, Sk - n1), tid);
  }
#else
  if (j_first < n_tiles) {
    const int n1 = j_first * BN;
    load_tile<BN>(smem, kg + (long long)n1 * p.k_ss, p.k_ss, min(BN, Sk - n1), tid);
    load_tile<BN>(smem + BN * DS, vg + (long long)n1 * p.v_ss, p.v_ss, min(BN, Sk - n1), tid);
  }
#endif
#if FA_ASYNC
  fa_cp_async_commit();
  fa_cp_async_wait_all();
#endif
  __syncthreads();

  /* Byte offsets of this lane's ldmatrix row inside a tile (see fa_ldmatrix_x4):
   * A (Q rows, non-transposed): matrices (rows 0-7, k 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15).
   * B = K^T from K rows (non-transposed): (keys 0-7, k 0-7), (0-7, 8-15), (8-15, 0-7), (8-15, 8-15): b0,b1 of
   *   key n-tile 0 and b0,b1 of n-tile 1.
   * B = V from V rows (transposed): (keys 0-7, d 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15): b0,b1 of
   *   d n-tile 0 and b0,b1 of d n-tile 1. */
  const unsigned a_off = (unsigned)(((warp * 16 + (lane & 15)) * DS + (lane >> 4) * 8) * 2);
  const unsigned k_off = (unsigned)((((lane & 7) + ((lane >> 4) << 3)) * DS + ((lane >> 3) & 1) * 8) * 2);
  const unsigned v_off = (unsigned)((((lane & 7) + (((lane >> 3) & 1) << 3)) * DS + (lane >> 4) * 8) * 2);
  const unsigned sbase = fa_smem_addr(smem);
  const unsigned sq_addr = fa_smem_addr(sq);

#if Q_IN_REGS
  unsigned qf[DP / 16][4];
#pragma unroll
  for (int kk = 0; kk < DP / 16; kk++) fa_ldmatrix_x4(qf[kk], sq_addr + a_off + kk * 32);
  __syncthreads(); /* Q's shared copy lives in stage 1, which the first iteration refills */
#endif

  float o[DP / 8][4];
#pragma unroll
  for (int nd = 0; nd < DP / 8; nd++) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.f;
  /* Running max (base-2, scaled) and partial sums of rows row0 and row0 + 8. A finite sentinel: masked
   * scores are -inf, and -inf - (-inf) never occurs. */
  float m[2] = {-FA_FLT_MAX, -FA_FLT_MAX}, l[2] = {0.f, 0.f};
  const int row0 = m0 + warp * 16 + g;

#if FA_BLOCK_MASK
  for (; j < n_tiles; j = jn, cls = ncls, jn = jn2, ncls = ncls2, st ^= 1) {
#else
  for (int j = j_first; j < n_tiles; j++) {
    const int st = (j - j_first) & 1;
#endif
    const unsigned sk_addr = sbase + (unsigned)(st * 2 * BN * DS * 2);
    const unsigned sv_addr = sk_addr + (unsigned)(BN * DS * 2);
    /* Prefetch the next tile (the next one visited) into the other stage while this one is computed. */
#if FA_BLOCK_MASK
    if (jn < n_tiles) {
      unsigned short *nk = smem + (st ^ 1) * 2 * BN * DS;
      const int n1 = jn * BN;
#else
    if (j + 1 < n_tiles) {
      unsigned short *nk = smem + (st ^ 1) * 2 * BN * DS;
      const int n1 = (j + 1) * BN;
#endif
      load_tile<BN>(nk, kg + (long long)n1 * p.k_ss, p.k_ss, min(BN, Sk - n1), tid);
      load_tile<BN>(nk + BN * DS, vg + (long long)n1 * p.v_ss, p.v_ss, min(BN, Sk - n1), tid);
    }
#if FA_ASYNC
    fa_cp_async_commit();
#endif

    /* S = Q K^T for this warp's 16 rows and the tile's BN keys. */
    float s[BN / 8][4];
#pragma unroll
    for (int nt = 0; nt < BN / 8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < DP / 16; kk++) {
#if Q_IN_REGS
      const unsigned *a = qf[kk];
#else
      unsigned a[4];
      fa_ldmatrix_x4(a, sq_addr + a_off + kk * 32);
#endif
#pragma unroll
      for (int nn = 0; nn < BN / 8; nn += 2) {
        unsigned bk[4];
        fa_ldmatrix_x4(bk, sk_addr + k_off + (unsigned)((nn * 8 * DS + kk * 16) * 2));
        fa_mma_16816(s[nn], a, bk[0], bk[1]);
        fa_mma_16816(s[nn + 1], a, bk[2], bk[3]);
      }
    }

    const int n0 = j * BN;
#if FA_INFER
    /* Into base 2, softcap and ALiBi, then the band's per-score test on tiles it cuts (keys past Sk too). */
#pragma unroll
    for (int rr = 0; rr < 2; rr++)
#pragma unroll
      for (int nt = 0; nt < BN / 8; nt++)
#pragma unroll
        for (int e = 0; e < 2; e++)
          s[nt][2 * rr + e] = fa_modify2<FA_TC>(p, w.seq, s[nt][2 * rr + e] * p.scale_log2, row0 + rr * 8 + Sk - Sq,
                                         n0 + nt * 8 + 2 * t + e);
    if (fa_band_tile(m0, r_last, n0, n0 + BN, Sq, Sk, p.causal, p.inf.wl, p.inf.wr) != FA_TILE_FULL) {
#pragma unroll
      for (int rr = 0; rr < 2; rr++) {
        const int lo = fa_band_lo(row0 + rr * 8, Sq, Sk, p.inf.wl), hi = fa_band_hi(row0 + rr * 8, Sq, Sk, p.causal, p.inf.wr);
#pragma unroll
        for (int nt = 0; nt < BN / 8; nt++) {
          const int col = n0 + nt * 8 + 2 * t;
          if (col < lo || col >= hi) s[nt][2 * rr] = FA_NEG_INF;
          if (col + 1 < lo || col + 1 >= hi) s[nt][2 * rr + 1] = FA_NEG_INF;
        }
      }
    }
#else
    /* Mask keys past Sk and, on diagonal tiles, above the causal limit. */
    if (fa_tile_masked(p, m0, n0, BN)) {
#pragma unroll
      for (int rr = 0; rr < 2; rr++) {
        const long long lim = fa_key_limit(p, row0 + rr * 8);
#pragma unroll
        for (int nt = 0; nt < BN / 8; nt++) {
          const int col = n0 + nt * 8 + 2 * t;
          if (col > lim) s[nt][2 * rr] = FA_NEG_INF;
          if (col + 1 > lim) s[nt][2 * rr + 1] = FA_NEG_INF;
        }
      }
    }
#endif
#if FA_BLOCK_MASK
    /* Block mask, on tiles it cuts: rows past Sq and keys past Sk are skipped (their blocks lie outside the
     * mask; those keys are -inf already and those rows are never stored). fa_block_keep on the row's block
     * row (mr) leaves one division per score. */
    if (cls == FA_TILE_PARTIAL) {
#pragma unroll
      for (int rr = 0; rr < 2; rr++) {
        const int row = row0 + rr * 8;
        if (row < Sq) {
          const unsigned char *mr = mk + (long long)(row / p.block_q) * p.mask_sr;
#pragma unroll
          for (int nt = 0; nt < BN / 8; nt++) {
#pragma unroll
            for (int e = 0; e < 2; e++) {
              const int col = n0 + nt * 8 + 2 * t + e;
              if (col < Sk && !fa_block_keep(mr, 0, p.mask_sc, 1, p.block_k, 0, col)) s[nt][2 * rr + e] = FA_NEG_INF;
            }
          }
        }
      }
    }
#endif

    /* Online softmax on the fragments: a row's 8 columns per n-tile are spread over the 4 lanes of a quad. */
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
      float mx = FA_NEG_INF;
#pragma unroll
      for (int nt = 0; nt < BN / 8; nt++) mx = fmaxf(mx, fmaxf(s[nt][2 * rr], s[nt][2 * rr + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[rr], mx * w.sm_scale);
      const float alpha = exp2f(m[rr] - m_new);
      m[rr] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < BN / 8; nt++) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
          const float pe = exp2f(fmaf(s[nt][2 * rr + e], w.sm_scale, -m_new));
          s[nt][2 * rr + e] = pe;
          sum += pe;
        }
      }
      l[rr] = l[rr] * alpha + sum; /* per-lane partial: the quad's lanes are summed once, at the end */
#pragma unroll
      for (int nd = 0; nd < DP / 8; nd++) {
        o[nd][2 * rr] *= alpha;
        o[nd][2 * rr + 1] *= alpha;
      }
    }
#if FA_DROPOUT
    /* Dropout on P (l above keeps the undropped sum). n-tile nt's four accumulators are rows row0, row0 + 8
     * and keys col, col + 1 (col = n0 + 8 nt + 2 t, even): row0 = m0 + 16 warp + g with m0 and 16 warp
     * multiples of 16 and g < 8, so row0 % 16 = g < 8: one Philox group, one call. */
#pragma unroll
    for (int nt = 0; nt < BN / 8; nt++)
      fa_dropout_fragment(p.dropout_seed, p.dropout_offset, p.dropout_threshold, bh, (unsigned)row0,
                          (unsigned)(n0 + nt * 8 + 2 * t), s[nt]);
#endif

    /* O += P V: the score accumulators of key n-tiles 2 kb and 2 kb + 1 are exactly the A fragment of
     * k-step kb (rows g / g + 8, columns 2t, 2t + 1 and 8 + 2t, 9 + 2t). */
#pragma unroll
    for (int kb = 0; kb < BN / 16; kb++) {
      unsigned a[4];
      a[0] = fa_pack2(s[2 * kb][0], s[2 * kb][1]);
      a[1] = fa_pack2(s[2 * kb][2], s[2 * kb][3]);
      a[2] = fa_pack2(s[2 * kb + 1][0], s[2 * kb + 1][1]);
      a[3] = fa_pack2(s[2 * kb + 1][2], s[2 * kb + 1][3]);
#pragma unroll
      for (int nd = 0; nd < DP / 8; nd += 2) {
        unsigned bv[4];
        fa_ldmatrix_x4_trans(bv, sv_addr + v_off + (unsigned)((kb * 16 * DS + nd * 8) * 2));
        fa_mma_16816(o[nd], a, bv[0], bv[1]);
        fa_mma_16816(o[nd + 1], a, bv[2], bv[3]);
      }
    }

#if FA_BLOCK_MASK
    /* Here, where the score registers are free, while jn's loads and the last mma are in flight. */
    jn2 = fa_next_tile(p, mk, m0, r_end, BN, jn + 1, n_tiles, lane, 32, 0xffffffffu, &ncls2); /* n_tiles at the end */
#endif
    /* The next tile has landed and everyone is done with this one before its stage is refilled. */
#if FA_ASYNC
    fa_cp_async_wait_all();
#endif
    __syncthreads();
  }

  /* Epilogue: O / l, and lse = ln(sum exp(scale s)) = (m + log2 l) ln 2. */
#pragma unroll
  for (int rr = 0; rr < 2; rr++) {
    float lt = l[rr];
    lt += __shfl_xor_sync(0xffffffffu, lt, 1);
    lt += __shfl_xor_sync(0xffffffffu, lt, 2);
#if FA_DROPOUT
    const float inv = lt > 0.f ? p.dropout_scale / lt : 0.f; /* kept probabilities are scaled by 1 / (1 - p) */
#else
    const float inv = lt > 0.f ? 1.f / lt : 0.f;
#endif
    const int row = row0 + rr * 8;
    if (row < Sq) {
      unsigned short *og = (unsigned short *)p.o + bt * p.o_sb + h * p.o_sh + (qrow0 + row) * p.o_ss;
#pragma unroll
      for (int nd = 0; nd < DP / 8; nd++) {
        if (nd * 8 < HEAD_DIM) {
          const int col = nd * 8 + 2 * t;
          const float x0 = o[nd][2 * rr] * inv, x1 = o[nd][2 * rr + 1] * inv;
          if (p.o_pairs) {
            *(unsigned *)(og + col) = fa_pack2(x0, x1);
          } else {
            og[col] = fa_from_float(x0);
            og[col + 1] = fa_from_float(x1);
          }
        }
      }
      if (p.lse && t == 0)
        ((float *)p.lse)[bt * p.lse_sb + h * p.lse_sh + (qrow0 + row) * p.lse_ss] =
            lt > 0.f ? (m[rr] + log2f(lt)) * FA_LN2 : FA_NEG_INF;
    }
  }
}

#else
/* ======================= CUDA cores: any dtype ======================= */

#ifndef BLOCK_M
#error "BLOCK_M must be defined"
#endif

#define BM BLOCK_M
#define BN BLOCK_N
#define TX 8                      /* threads across a row of scores (and of O) */
#define TY (BM < 16 ? BM : 16)    /* threads down the rows */
#define RM (BM / TY)              /* rows per thread: ty, ty + TY, ... */
#define NTHREADS (TY * TX)
#define CN ((BN + TX - 1) / TX)   /* score columns per thread: tx, tx + TX, ... (below 8 keys, some have none) */
#define COLS_FULL (BN % TX == 0)
#define CD ((HEAD_DIM + 4 * TX - 1) / (4 * TX)) /* float4 column groups of O per thread: 4 (tx + TX c) */
#define QS (HEAD_DIM + 4) /* Q and K row stride in floats: an odd number of 16-byte units, so the 8 rows that a
                             phase of float4 reads touches fall in different bank groups */
#define VS HEAD_DIM
#define PS (BN + 8)       /* P row stride: the 4 rows a warp touches land 8 banks apart */
#define FULL_MASK (NTHREADS >= 32 ? 0xffffffffu : ((1u << NTHREADS) - 1u))

#if BN < TX && (TX % BN) != 0 || BN > TX && (BN % TX) != 0
#error "BLOCK_N must be a power of two below 8 or a multiple of 8"
#endif

/* Rows [0, ROWS) of a [rows][HEAD_DIM] tile at g into shared floats at s (row stride ss); rows >= valid are 0. */
template <int ROWS>
static __device__ __forceinline__ void load_rows(float *s, int ss, const fa_elem *g, long long stride, int valid,
                                                 int tid) {
#pragma unroll 4
  for (int i = tid; i < ROWS * HEAD_DIM; i += NTHREADS) {
    const int r = i / HEAD_DIM, c = i % HEAD_DIM;
    s[r * ss + c] = r < valid ? fa_load(g + r * stride + c) : 0.f;
  }
}

extern "C" __global__ void __launch_bounds__(NTHREADS) flash_fwd_simt(const fa_fwd_params p) {
  extern __shared__ float4 fa_smem4[];
  float *sq = (float *)fa_smem4;
  float *sk = sq + BM * QS;
  float *sv = sk + BN * QS;
  float *sp = sv + BN * VS;
  const int tid = threadIdx.x, tx = tid % TX, ty = tid / TX;
  const int mb = p.causal ? (int)(gridDim.x - 1 - blockIdx.x) : (int)blockIdx.x;
  const int h = (int)blockIdx.y + p.h0, b = (int)blockIdx.z + p.b0;
  const int hk = h / p.group;
  const int m0 = mb * BM;
  const fa_walk w = fa_walk_of(p, b, h, m0, BM, BN);
  const int Sq = w.sq, Sk = w.sk, bt = w.bt, j_first = w.j_first, n_tiles = w.n_tiles, r_last = min(m0 + BM, Sq);
  const long long qrow0 = w.qrow0, krow0 = w.krow0;
  if (m0 >= Sq) return; /* varlen: past this sequence's rows (the whole block, before any barrier) */
  (void)r_last;
  const fa_elem *qg = (const fa_elem *)p.q + bt * p.q_sb + h * p.q_sh + (qrow0 + m0) * p.q_ss;
  const fa_elem *kg = (const fa_elem *)p.k + bt * p.k_sb + hk * p.k_sh + krow0 * p.k_ss;
  const fa_elem *vg = (const fa_elem *)p.v + bt * p.v_sb + hk * p.v_sh + krow0 * p.v_ss;

  load_rows<BM>(sq, QS, qg, p.q_ss, min(BM, Sq - m0), tid);
#if FA_BLOCK_MASK
  const unsigned char *mk = (const unsigned char *)p.mask + b * p.mask_sb + h * p.mask_sh;
  const int r_end = min(m0 + BM, Sq);
  int cls;
#endif
#if FA_DROPOUT
  const unsigned bh = (unsigned)b * (unsigned)p.heads_q + (unsigned)h; /* < 2^32: fa_forward checks B * Hq */
#endif

  float o[RM][CD][4];
  float m[RM], l[RM];
#pragma unroll
  for (int i = 0; i < RM; i++) {
    m[i] = -FA_FLT_MAX;
    l[i] = 0.f;
#pragma unroll
    for (int c = 0; c < CD; c++) o[i][c][0] = o[i][c][1] = o[i][c][2] = o[i][c][3] = 0.f;
  }

#if FA_BLOCK_MASK
  /* The next tile with a visible score: every thread classifies it alone (the same loads, so the same
   * answer), which ptxas handles without spills, unlike the warp-vote fa_next_tile here. */
  for (int j = 0;; j++) {
    for (; j < n_tiles; j++) {
      cls = fa_block_tile(mk, p.mask_sr, p.mask_sc, p.block_q, p.block_k, m0, r_end, j * BN,
                               j * BN + min(BN, Sk - j * BN));
      if (cls != FA_TILE_SKIP) break;
    }
    if (j >= n_tiles) break;
#else
  for (int j = j_first; j < n_tiles; j++) {
#endif
    const int n0 = j * BN;
    __syncthreads(); /* the previous tile's K, V and P are no longer read */
    load_rows<BN>(sk, QS, kg + (long long)n0 * p.k_ss, p.k_ss, min(BN, Sk - n0), tid);
    load_rows<BN>(sv, VS, vg + (long long)n0 * p.v_ss, p.v_ss, min(BN, Sk - n0), tid);
    __syncthreads();

    /* S = Q K^T: rows ty + TY i, keys tx + TX jj. */
    float s[RM][CN];
#pragma unroll
    for (int i = 0; i < RM; i++)
#pragma unroll
      for (int jj = 0; jj < CN; jj++) s[i][jj] = 0.f;
#pragma unroll 8
    for (int d = 0; d < HEAD_DIM; d += 4) {
      float4 qv[RM], kv[CN];
#pragma unroll
      for (int i = 0; i < RM; i++) qv[i] = *(const float4 *)(sq + (ty + TY * i) * QS + d);
#pragma unroll
      for (int jj = 0; jj < CN; jj++) /* a column past BN reads row BN - 1: in bounds, and masked below */
        kv[jj] = *(const float4 *)(sk + (COLS_FULL ? tx + TX * jj : min(tx + TX * jj, BN - 1)) * QS + d);
#pragma unroll
      for (int i = 0; i < RM; i++)
#pragma unroll
        for (int jj = 0; jj < CN; jj++) {
          float a = s[i][jj];
          a = fmaf(qv[i].x, kv[jj].x, a);
          a = fmaf(qv[i].y, kv[jj].y, a);
          a = fmaf(qv[i].z, kv[jj].z, a);
          a = fmaf(qv[i].w, kv[jj].w, a);
          s[i][jj] = a;
        }
    }

#if FA_BLOCK_MASK
    /* Block mask on tiles it cuts; rows past Sq and keys past Sk or the tile lie outside the mask. One
     * division per row for its block row (mr), one per score for its block column. */
    if (cls == FA_TILE_PARTIAL) {
#pragma unroll
      for (int i = 0; i < RM; i++) {
        const int row = m0 + ty + TY * i;
        if (row < Sq) {
          const unsigned char *mr = mk + (long long)(row / p.block_q) * p.mask_sr;
#pragma unroll
          for (int jj = 0; jj < CN; jj++) {
            const int col = n0 + tx + TX * jj;
            if ((COLS_FULL || tx + TX * jj < BN) && col < Sk &&
                !fa_block_keep(mr, 0, p.mask_sc, 1, p.block_k, 0, col))
              s[i][jj] = FA_NEG_INF;
          }
        }
      }
    }
#endif
#if FA_INFER
    /* Into base 2, softcap and ALiBi, then the band's per-score test on tiles it cuts (keys past Sk too). */
    const bool masked = fa_band_tile(m0, r_last, n0, n0 + BN, Sq, Sk, p.causal, p.inf.wl, p.inf.wr) != FA_TILE_FULL;
#else
    const bool masked = fa_tile_masked(p, m0, n0, BN);
#endif
#pragma unroll
    for (int i = 0; i < RM; i++) {
#if FA_INFER
      const int row = m0 + ty + TY * i;
#pragma unroll
      for (int jj = 0; jj < CN; jj++) s[i][jj] = fa_modify2<FA_TC>(p, w.seq, s[i][jj] * p.scale_log2, row + Sk - Sq, n0 + tx + TX * jj);
      if (masked) {
        const int lo = fa_band_lo(row, Sq, Sk, p.inf.wl), hi = fa_band_hi(row, Sq, Sk, p.causal, p.inf.wr);
#pragma unroll
        for (int jj = 0; jj < CN; jj++)
          if (n0 + tx + TX * jj < lo || n0 + tx + TX * jj >= hi) s[i][jj] = FA_NEG_INF;
      }
#else
      if (masked) {
        const long long lim = fa_key_limit(p, m0 + ty + TY * i);
#pragma unroll
        for (int jj = 0; jj < CN; jj++)
          if (n0 + tx + TX * jj > lim) s[i][jj] = FA_NEG_INF;
      }
#endif
      if (!COLS_FULL)
#pragma unroll
        for (int jj = 0; jj < CN; jj++)
          if (tx + TX * jj >= BN) s[i][jj] = FA_NEG_INF;
      /* Online softmax: a row's scores are spread over the TX lanes that share ty (adjacent lanes). */
      float mx = FA_NEG_INF;
#pragma unroll
      for (int jj = 0; jj < CN; jj++) mx = fmaxf(mx, s[i][jj]);
#pragma unroll
      for (int off = 1; off < TX; off <<= 1) mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, off));
      const float m_new = fmaxf(m[i], mx * w.sm_scale);
      const float alpha = exp2f(m[i] - m_new);
      m[i] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int jj = 0; jj < CN; jj++) {
        const float pe = exp2f(fmaf(s[i][jj], w.sm_scale, -m_new));
#if FA_DROPOUT
        /* P V takes the kept probabilities only; l sums them all. */
        if (COLS_FULL || tx + TX * jj < BN)
          sp[(ty + TY * i) * PS + tx + TX * jj] =
              fa_dropout_keep(p.dropout_seed, p.dropout_offset, p.dropout_threshold, bh, (unsigned)(m0 + ty + TY * i),
                              (unsigned)(n0 + tx + TX * jj))
                  ? pe
                  : 0.f;
#else
        if (COLS_FULL || tx + TX * jj < BN) sp[(ty + TY * i) * PS + tx + TX * jj] = pe;
#endif
        sum += pe;
      }
      l[i] = l[i] * alpha + sum;
#pragma unroll
      for (int c = 0; c < CD; c++) {
        o[i][c][0] *= alpha;
        o[i][c][1] *= alpha;
        o[i][c][2] *= alpha;
        o[i][c][3] *= alpha;
      }
    }
    __syncthreads();

    /* O += P V: rows ty + TY i, columns 4 (tx + TX c) .. + 3. */
#pragma unroll 4
    for (int kx = 0; kx < BN; kx++) {
      float pv[RM];
#pragma unroll
      for (int i = 0; i < RM; i++) pv[i] = sp[(ty + TY * i) * PS + kx];
#pragma unroll
      for (int c = 0; c < CD; c++) {
        if ((HEAD_DIM % (4 * TX)) == 0 || 4 * (tx + TX * c) < HEAD_DIM) {
          const float4 vv = *(const float4 *)(sv + kx * VS + 4 * (tx + TX * c));
#pragma unroll
          for (int i = 0; i < RM; i++) {
            o[i][c][0] = fmaf(pv[i], vv.x, o[i][c][0]);
            o[i][c][1] = fmaf(pv[i], vv.y, o[i][c][1]);
            o[i][c][2] = fmaf(pv[i], vv.z, o[i][c][2]);
            o[i][c][3] = fmaf(pv[i], vv.w, o[i][c][3]);
          }
        }
      }
    }
  }

  /* Epilogue: O / l and lse; the row's sum is spread over its TX lanes. */
#pragma unroll
  for (int i = 0; i < RM; i++) {
    float lt = l[i];
#pragma unroll
    for (int off = 1; off < TX; off <<= 1) lt += __shfl_xor_sync(FULL_MASK, lt, off);
#if FA_DROPOUT
    const float inv = lt > 0.f ? p.dropout_scale / lt : 0.f; /* kept probabilities are scaled by 1 / (1 - p) */
#else
    const float inv = lt > 0.f ? 1.f / lt : 0.f;
#endif
    const int row = m0 + ty + TY * i;
    if (row < Sq) {
      fa_elem *og = (fa_elem *)p.o + bt * p.o_sb + h * p.o_sh + (qrow0 + row) * p.o_ss;
#pragma unroll
      for (int c = 0; c < CD; c++) {
        const int col = 4 * (tx + TX * c);
        if ((HEAD_DIM % (4 * TX)) == 0 || col < HEAD_DIM) {
#pragma unroll
          for (int e = 0; e < 4; e++) og[col + e] = fa_from_float(o[i][c][e] * inv);
        }
      }
      if (p.lse && tx == 0)
        ((float *)p.lse)[bt * p.lse_sb + h * p.lse_sh + (qrow0 + row) * p.lse_ss] =
            lt > 0.f ? (m[i] + log2f(lt)) * FA_LN2 : FA_NEG_INF;
    }
  }
}
#endif

/* FlashAttention forward for Hopper (sm_90a), FlashAttention-3's design (Shah et al., 2024): a producer
 * warp moves Q, K and V tiles with TMA into a shared-memory ring guarded by mbarriers; consumer warpgroups
 * compute S = Q K^T and O += P V with wgmma, the softmax on the accumulator registers, P from registers.
 *
 * Tensors as in flash_fwd.cu (fa_fwd_params): q [B, Sq, Hq, D], k and v [B, Sk, Hkv, D], o [B, Sq, Hq, D],
 * lse [B, Hq, Sq] float32 (optional); causal bottom-right; masked rows get o = 0 and lse = -inf; block
 * mask (FA_BLOCK_MASK), dropout (FA_DROPOUT) and the inference options (FA_INFER) with kernels/masks.h exactly
 * as the sm_80 kernel.
 * q, k and v are read through the TMA maps in fa_fwd_sm90_maps (dims D, S, H, B innermost first; boxes of
 * 64 columns x BLOCK_M or BLOCK_N rows, 128-byte swizzle): rows past S and columns past D arrive as zeros.
 *
 * FA_INFER (not with the two above; flash_fwd_tiles.cuh's fa_walk_of, the same walk as the sm_80 kernel's):
 *   varlen: the grid's z counts sequences; a block reads its sequence's span, leaves (before any barrier) when
 *     its rows start past it, and its boxes start at the sequence's first row of the packed axes (the maps
 *     describe the packed tensors, batch 1). A box's rows past the sequence hold the next sequence's tokens:
 *     its query rows are computed but never stored (o and lse stores take the sequence's rows only), its keys
 *     are masked in the scores, and its value rows are zeroed in shared memory before P V (P is 0 there, but
 *     0 x a value that is not finite would not be).
 *   band (causal and the window): the producer walks the key tiles [j_first, n_tiles) that meet the block's
 *     rows' band (tiles outside are never loaded); each consumer classifies every tile against its own 64
 *     rows (fa_band_tile): SKIP tiles it passes over (its turns taken, its stages released), PARTIAL ones take
 *     the per-score band test, FULL ones none.
 *   softcap and ALiBi: on the scores in base 2 before the online softmax (which then takes a scale of 1),
 *     only when one of them is on.
 *
 * Work: FLOPs 4 B Hq Sq Sk D (non-causal; causal about half), exp2 B Hq Sq Sk; DRAM bytes >= e (2 B Sq Hq D +
 * 2 B Sk Hkv D) + 4 B Hq Sq; each block reads its head's K and V from L2 once. Compute-bound for S >= 512.
 *
 * One block per (BLOCK_M query rows, query head, batch), 128 (NWG + 1) threads:
 *   warpgroup 0, the producer: gives its registers away; its warp 0 walks the key tiles (with a block mask,
 *     the next tile not skipped, 32 tiles classified per vote) and lane 0 issues the TMA loads: Q once, then
 *     K and V of each visited tile into stage n % STAGES once the consumers have released it. Each stage's
 *     tile index and class go in tile_info[] beside the data; -1 after the last tile ends the consumers' loop.
 *   warpgroups 1..NWG, the consumers: warpgroup c owns query rows [64 c, 64 c + 64) of the block and holds
 *     S (BLOCK_N / 2 floats a thread), P as A fragments and O (DN / 2 floats) in registers.
 *     FA_SM90_PINGPONG: named barriers make the consumers issue their GEMMs in turn, so one's softmax runs
 *       while another's GEMMs keep the tensor cores busy.
 *     FA_SM90_OVERLAP: inside a warpgroup, S of tile n is issued together with O += P V of tile n - 1, and
 *       tile n's softmax runs while that P V is in flight; O is rescaled once it has landed.
 *
 * Shared memory (1024-byte aligned, sm90.cuh's slab layout): Q [NSLAB][BLOCK_M][64], then per stage K and V
 * [NSLAB][BLOCK_N][64], then the barriers and tile_info. The epilogue stages O in the warpgroup's own Q
 * rows (same layout) and writes it with 16-byte stores.
 *
 * Defines: FA_DTYPE (1 f16, 2 bf16), HEAD_DIM (multiple of 8, <= 256), BLOCK_M (64 NWG), BLOCK_N (multiple
 * of 16, <= 256), NWG (consumer warpgroups, 1..3), STAGES, FA_SM90_PINGPONG, FA_SM90_OVERLAP, FA_BLOCK_MASK,
 * FA_DROPOUT, FA_INFER, FA_INFER_MODS (0: softcap and ALiBi off, their code left out: with it D 64 and D 128's
 * widest tiles spill 100 bytes). src/cuda/cu_flash.c picks them and checks that every tensor suits TMA. */
#include "cuda_common.cuh"
#include "cuda_params.h"
#include "masks.h"
#include "flash_fwd_tiles.cuh"
#include "sm90.cuh"
#include "sm90_wgmma.cuh"

#if FA_DTYPE != 1 && FA_DTYPE != 2
#error "flash_fwd_sm90 needs FA_DTYPE 1 (f16) or 2 (bf16)"
#endif
#if FA_INFER && (FA_BLOCK_MASK || FA_DROPOUT)
#error "FA_INFER does not combine with FA_BLOCK_MASK or FA_DROPOUT"
#endif
#ifndef STAGES
#define STAGES 2
#endif
#ifndef FA_SM90_PINGPONG
#define FA_SM90_PINGPONG (NWG > 1)
#endif
#ifndef FA_SM90_OVERLAP
#define FA_SM90_OVERLAP 1
#endif
#ifndef FA_INFER_MODS
#define FA_INFER_MODS FA_INFER
#endif

#define BM BLOCK_M
#define BN BLOCK_N
#define NTHREADS (128 * (NWG + 1))
#define NSLAB ((HEAD_DIM + 63) / 64)      /* 64-column slabs of a row */
#define KSTEPS ((HEAD_DIM + 15) / 16)     /* k-steps of S = Q K^T */
/* O's width, the wgmma N of P V: whole slabs, since an MN-major operand with 128-byte swizzle comes in atoms of
 * 64 columns (columns past D are zeros from TMA, never stored). */
#define DN (NSLAB * 64)
#define Q_SLAB (BM * 128)                 /* bytes of one Q slab */
#define KV_SLAB (BN * 128)
#define KV_TILE (NSLAB * KV_SLAB)          /* bytes of one K (or V) tile: what TMA delivers per stage */
#define SMEM_Q 0
#define SMEM_K (NSLAB * Q_SLAB)
#define SMEM_V (SMEM_K + STAGES * KV_TILE)
#define SMEM_BAR (SMEM_V + STAGES * KV_TILE)
/* Barriers: q_full, then per stage full_k, full_v, empty_k, empty_v; then tile_info[STAGES]. */
#define BAR_Q 0
#define BAR_FULL_K(s) (8 * (1 + 4 * (s)))
#define BAR_FULL_V(s) (8 * (2 + 4 * (s)))
#define BAR_EMPTY_K(s) (8 * (3 + 4 * (s)))
#define BAR_EMPTY_V(s) (8 * (4 + 4 * (s)))
#define TILE_INFO (8 * (1 + 4 * STAGES))
/* Registers: the producer keeps 24 (32 with three consumers, as FlashAttention-3), the consumers take the
 * rest of the 64 K the block may use: 240 each for two, 160 for three. */
#define PRODUCER_REGS (NWG == 3 ? 32 : 24)
#define CONSUMER_REGS (NWG == 1 ? 256 : NWG == 2 ? 240 : 160)
/* Named barriers: 1..NWG the ping-pong turns, NWG + 1 + c consumer c's epilogue. */
#define BAR_TURN(c) (1 + (c))
#define BAR_EPI(c) (1 + NWG + (c))

#if BM != 64 * NWG || (BN % 16) != 0 || BN > 256 || HEAD_DIM > 256 || (HEAD_DIM % 8) != 0
#error "bad flash_fwd_sm90 tile"
#endif

/* 16-byte chunk c of row r of a slab, swizzled as TMA writes it (sm90.cuh). */
static __device__ __forceinline__ unsigned fa_swz(int r, int c) { return (unsigned)(r * 128 + ((c ^ (r & 7)) << 4)); }

extern "C" __global__ void __launch_bounds__(NTHREADS, 1)
    flash_fwd_sm90(const __grid_constant__ fa_fwd_params p, const __grid_constant__ fa_fwd_sm90_maps maps) {
  extern __shared__ __align__(1024) unsigned char fa_smem[];
  const unsigned base = (fa_smem_addr(fa_smem) + 1023u) & ~1023u; /* the host adds 1024 bytes of slack */
  unsigned char *const sbase = fa_smem + (base - fa_smem_addr(fa_smem));
  const unsigned bars = base + SMEM_BAR;
  volatile int *const tile_info = (volatile int *)(sbase + SMEM_BAR + TILE_INFO);
  const int tid = threadIdx.x, lane = tid & 31, wg = tid >> 7;
  /* Causal blocks further down have more keys: launch those first so the tail of the grid is short. */
  const int mb = p.causal ? (int)(gridDim.x - 1 - blockIdx.x) : (int)blockIdx.x;
  const int h = (int)blockIdx.y + p.h0, b = (int)blockIdx.z + p.b0;
  const int hk = h / p.group;
  const int m0 = mb * BM;
  /* The block's sequence (tensor batch bt, first rows qrow0 and krow0 of the axes) and key tiles. */
  const fa_walk bw = fa_walk_of(p, b, h, m0, BM, BN);
  if (m0 >= bw.sq) return; /* varlen: past this sequence's rows (the whole block, before any barrier) */
  const int Sq = bw.sq, Sk = bw.sk, bt = bw.bt, qrow0 = (int)bw.qrow0, krow0 = (int)bw.krow0;

  if (tid == 0) {
    fa_mbar_init(bars + BAR_Q, 1);
    for (int s = 0; s < STAGES; s++) {
      fa_mbar_init(bars + BAR_FULL_K(s), 1);
      fa_mbar_init(bars + BAR_FULL_V(s), 1);
      fa_mbar_init(bars + BAR_EMPTY_K(s), 4 * NWG); /* one arrival per consumer warp */
      fa_mbar_init(bars + BAR_EMPTY_V(s), 4 * NWG);
    }
    fa_mbar_init_fence();
  }
  __syncthreads();

  if (wg == 0) {
    /* ======== producer ======== */
    fa_regs_dealloc<PRODUCER_REGS>();
    if (tid >= 32) return;
    const int n_tiles = bw.n_tiles;
    if (lane == 0) {
      fa_tma_prefetch_map(&maps.q);
      fa_tma_prefetch_map(&maps.k);
      fa_tma_prefetch_map(&maps.v);
      fa_mbar_arrive_expect_tx(bars + BAR_Q, NSLAB * Q_SLAB);
      for (int s = 0; s < NSLAB; s++) fa_tma_load4(base + SMEM_Q + s * Q_SLAB, &maps.q, bars + BAR_Q, 64 * s, qrow0 + m0, h, bt);
    }
#if FA_BLOCK_MASK
    const unsigned char *mk = (const unsigned char *)p.mask + b * p.mask_sb + h * p.mask_sh;
    const int r_end = min(m0 + BM, Sq);
    /* Mask blocks of 32 or more: a walk classifying whole tiles per lane; smaller: fa_next_tile per tile. */
    const bool walk = p.block_q >= 32 && p.block_k >= 32;
    auto classify = [&](int jl) {
      const int c0 = jl * BN;
      return fa_block_tile(mk, p.mask_sr, p.mask_sc, p.block_q, p.block_k, m0, r_end, c0, c0 + min(BN, Sk - c0));
    };
    fa_tile_walk tw = fa_walk_start(0, n_tiles);
    int cls;
    int j = walk ? fa_walk_next(tw, lane, false, classify, &cls)
                 : fa_next_tile(p, mk, m0, r_end, BN, 0, n_tiles, lane, 32, 0xffffffffu, &cls);
#else
    const int cls = FA_TILE_FULL;
    int j = bw.j_first;
#endif
    int n = 0;
    for (;; n++) {
      const int st = n % STAGES;
      const unsigned ph = ((n / STAGES) & 1) ^ 1;
      fa_mbar_wait(bars + BAR_EMPTY_K(st), ph);
      if (j >= n_tiles) {
        if (lane == 0) {
          tile_info[st] = -1;
          fa_mbar_arrive(bars + BAR_FULL_K(st));
        }
        break;
      }
      if (lane == 0) {
        tile_info[st] = j | (cls << 28);
        fa_mbar_arrive_expect_tx(bars + BAR_FULL_K(st), KV_TILE);
        for (int s = 0; s < NSLAB; s++)
          fa_tma_load4(base + SMEM_K + st * KV_TILE + s * KV_SLAB, &maps.k, bars + BAR_FULL_K(st), 64 * s, krow0 + j * BN, hk, bt);
      }
      fa_mbar_wait(bars + BAR_EMPTY_V(st), ph);
      if (lane == 0) {
        fa_mbar_arrive_expect_tx(bars + BAR_FULL_V(st), KV_TILE);
        for (int s = 0; s < NSLAB; s++)
          fa_tma_load4(base + SMEM_V + st * KV_TILE + s * KV_SLAB, &maps.v, bars + BAR_FULL_V(st), 64 * s, krow0 + j * BN, hk, bt);
      }
#if FA_BLOCK_MASK
      j = walk ? fa_walk_next(tw, lane, false, classify, &cls)
               : fa_next_tile(p, mk, m0, r_end, BN, j + 1, n_tiles, lane, 32, 0xffffffffu, &cls);
#else
      j++;
#endif
      __syncwarp();
    }
    return;
  }

  /* ======== consumers ======== */
  fa_regs_alloc<CONSUMER_REGS>();
  /* c through a shuffle: ptxas then knows it is the same across a warp. Taken from tid, the FA_INFER variant's
   * skip loop before the first S (its exit depends on c) counted as divergent, and ptxas serialised every
   * wgmma of the kernel (C7520; CUTLASS's canonical_warp_group_idx does the same). */
  const int c = __shfl_sync(0xffffffffu, wg - 1, 0), w = (tid >> 5) & 3, g = lane >> 2, t = lane & 3;
  const int mc = m0 + 64 * c;            /* this warpgroup's first row */
  const int row0 = mc + 16 * w + g;      /* this thread's rows: row0 and row0 + 8 */
  const unsigned q_addr = base + SMEM_Q + c * 64 * 128;
#if FA_BLOCK_MASK
  const unsigned char *mk = (const unsigned char *)p.mask + b * p.mask_sb + h * p.mask_sh;
#endif
#if FA_DROPOUT
  const unsigned bh = (unsigned)b * (unsigned)p.heads_q + (unsigned)h; /* < 2^32: fa_forward checks B * Hq */
#endif
#if FA_INFER
  const int wl = p.inf.wl, wr = p.inf.wr, r_end = min(mc + 64, Sq);
  /* Tile j against this warpgroup's rows' band: SKIP (passed over), PARTIAL or FULL; SKIP for all when its rows
   * start past the sequence. */
  auto wg_class = [&](int j) {
    return mc < Sq ? fa_band_tile(mc, r_end, j * BN, j * BN + BN, Sq, Sk, p.causal, wl, wr) : FA_TILE_SKIP;
  };
  /* With softcap or ALiBi the scores are scaled before them and the softmax takes them as they are. */
  const bool mods = FA_INFER_MODS && (p.inf.softcap2 > 0.f || bw.seq.slope2 != 0.f);
  const float sl2 = mods ? 1.f : p.scale_log2;
  int j_last = 0; /* the last tile this warpgroup computed */
#define FA_CLS(info) wg_class((info) & 0x0fffffff)
#else
  const float sl2 = p.scale_log2;
  /* The causal limit of this warpgroup's first row: tiles ending after it need the per-score mask. */
  const long long first_lim = fa_key_limit(p, mc);
#define FA_CLS(info) ((info) >> 28)
#endif

  float o[DN / 2];
#pragma unroll
  for (int i = 0; i < DN / 2; i++) o[i] = 0.f;
  float s[BN / 2];
  unsigned pa[BN / 16][4];
  /* Running max (base 2, scaled) and per-lane partial sums of rows row0 and row0 + 8; a finite sentinel so
   * that -inf - (-inf) never occurs (masked scores are -inf). */
  float m[2] = {-FA_FLT_MAX, -FA_FLT_MAX}, l[2] = {0.f, 0.f};

#if FA_SM90_PINGPONG
  /* The first consumer goes first: the last one opens its turn. */
  if (c == NWG - 1) fa_named_arrive(BAR_TURN(0), 256);
#define FA_TURN_WAIT() fa_named_sync(BAR_TURN(c), 256)
#define FA_TURN_PASS() fa_named_arrive(BAR_TURN((c + 1) % NWG), 256)
#else
#define FA_TURN_WAIT() ((void)0)
#define FA_TURN_PASS() ((void)0)
#endif

  /* S = Q K^T for stage st: the KSTEPS k-steps walk the slabs, 32 bytes per step inside one. */
#define FA_ISSUE_S(st)                                                                                        \
  do {                                                                                                        \
    _Pragma("unroll") for (int kk = 0; kk < KSTEPS; kk++) {                                                    \
      const unsigned off = (unsigned)((kk & 3) * 32);                                                         \
      fa_wgmma<BN>::ss(s, fa_wgmma_desc_k(q_addr + (kk >> 2) * Q_SLAB + off),                                 \
                       fa_wgmma_desc_k(base + SMEM_K + (st) * KV_TILE + (kk >> 2) * KV_SLAB + off), kk > 0);   \
    }                                                                                                         \
    fa_wgmma_commit();                                                                                        \
  } while (0)
  /* O += P V for stage st: k-steps of 16 keys, 2048 bytes apart in every slab. */
#define FA_ISSUE_PV(st)                                                                                       \
  do {                                                                                                        \
    _Pragma("unroll") for (int kk = 0; kk < BN / 16; kk++)                                                     \
      fa_wgmma<DN>::rs<1>(o, pa[kk], fa_wgmma_desc_mn(base + SMEM_V + (st) * KV_TILE + kk * 2048, KV_SLAB), 1); \
    fa_wgmma_commit();                                                                                        \
  } while (0)

  /* Mask, max, exponentials and partial sums of the tile in s (tile index j of class cls); alpha[] gets
   * the factor the rows' earlier O and l must be scaled by. */
  float alpha[2];
  auto softmax = [&](int j, int cls) {
    const int n0 = j * BN;
#if FA_INFER
    j_last = j;
    if (mods) {
#pragma unroll
      for (int hh = 0; hh < 2; hh++)
#pragma unroll
        for (int i = 0; i < BN / 8; i++)
#pragma unroll
          for (int e = 0; e < 2; e++)
            s[4 * i + 2 * hh + e] = fa_modify2<true>(p, bw.seq, s[4 * i + 2 * hh + e] * p.scale_log2,
                                                     row0 + 8 * hh + Sk - Sq - (n0 + 8 * i + 2 * t + e), 0);
      /* (ALiBi's distance diag - col as one int: fa_alibi's 64-bit difference spilled 56 bytes at D 64) */
    }
    if (cls == FA_TILE_PARTIAL) { /* the band's per-score test (keys past Sk too) */
      /* Against this thread's first key n0 + 2 t: one unsigned test of a constant per score (with the keys'
       * indices in registers, D 64's consumers spilled 108 bytes). */
#pragma unroll
      for (int hh = 0; hh < 2; hh++) {
        const int lo = fa_band_lo(row0 + 8 * hh, Sq, Sk, wl) - (n0 + 2 * t);
        const unsigned span = (unsigned)max(fa_band_hi(row0 + 8 * hh, Sq, Sk, p.causal, wr) - (n0 + 2 * t) - lo, 0);
#pragma unroll
        for (int i = 0; i < BN / 8; i++)
#pragma unroll
          for (int e = 0; e < 2; e++)
            if ((unsigned)(8 * i + e - lo) >= span) s[4 * i + 2 * hh + e] = FA_NEG_INF;
      }
    }
#else
    const bool edge = n0 + BN > Sk || (p.causal && (long long)n0 + BN - 1 > first_lim);
    if (edge) {
#pragma unroll
      for (int hh = 0; hh < 2; hh++) {
        const long long lim = fa_key_limit(p, row0 + 8 * hh);
#pragma unroll
        for (int i = 0; i < BN / 8; i++)
#pragma unroll
          for (int e = 0; e < 2; e++)
            if (n0 + 8 * i + 2 * t + e > lim) s[4 * i + 2 * hh + e] = FA_NEG_INF;
      }
    }
#endif
#if FA_BLOCK_MASK
    if (cls == FA_TILE_PARTIAL) {
#pragma unroll
      for (int hh = 0; hh < 2; hh++) {
        const int row = row0 + 8 * hh;
        if (row < Sq) {
          const unsigned char *mr = mk + (long long)(row / p.block_q) * p.mask_sr;
#pragma unroll
          for (int i = 0; i < BN / 8; i++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
              const int col = n0 + 8 * i + 2 * t + e;
              if (col < Sk && !fa_block_keep(mr, 0, p.mask_sc, 1, p.block_k, 0, col)) s[4 * i + 2 * hh + e] = FA_NEG_INF;
            }
        }
      }
    }
#elif !FA_INFER
    (void)cls;
#endif
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
      float mx = FA_NEG_INF;
#pragma unroll
      for (int i = 0; i < BN / 8; i++) mx = fmaxf(mx, fmaxf(s[4 * i + 2 * hh], s[4 * i + 2 * hh + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[hh], mx * sl2);
      alpha[hh] = exp2f(m[hh] - m_new);
      m[hh] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int i = 0; i < BN / 8; i++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
          const float pe = exp2f(fmaf(s[4 * i + 2 * hh + e], sl2, -m_new));
          s[4 * i + 2 * hh + e] = pe;
          sum += pe;
        }
      l[hh] = l[hh] * alpha[hh] + sum;
    }
#if FA_DROPOUT
    /* Chunk i's four accumulators are rows row0, row0 + 8 and keys col, col + 1 (col even), row0 % 16 < 8:
     * one Philox group (kernels/masks.h), as in the sm_80 kernel. */
#pragma unroll
    for (int i = 0; i < BN / 8; i++)
      fa_dropout_fragment(p.dropout_seed, p.dropout_offset, p.dropout_threshold, bh, (unsigned)row0,
                          (unsigned)(n0 + 8 * i + 2 * t), &s[4 * i]);
#endif
  };
  /* P as the A fragments of the P V k-steps: accumulator chunks 2 kk and 2 kk + 1. */
  auto pack_p = [&]() {
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++) {
      pa[kk][0] = fa_pack2(s[8 * kk + 0], s[8 * kk + 1]);
      pa[kk][1] = fa_pack2(s[8 * kk + 2], s[8 * kk + 3]);
      pa[kk][2] = fa_pack2(s[8 * kk + 4], s[8 * kk + 5]);
      pa[kk][3] = fa_pack2(s[8 * kk + 6], s[8 * kk + 7]);
    }
  };
  auto rescale_o = [&]() {
#pragma unroll
    for (int i = 0; i < DN / 8; i++) {
      o[4 * i + 0] *= alpha[0];
      o[4 * i + 1] *= alpha[0];
      o[4 * i + 2] *= alpha[1];
      o[4 * i + 3] *= alpha[1];
    }
  };
  auto release = [&](unsigned bar) {
    __syncwarp();
    if (lane == 0) fa_mbar_arrive(bar);
  };
#if FA_INFER
  /* A tile none of this warpgroup's rows sees: its turns (every consumer takes the same number, or the
   * ping-pong would hang), and its stage released once loaded (an arrival before the fill would count towards
   * the stage's previous one). */
  auto pass = [&](int n) {
    const int st = n % STAGES;
    FA_TURN_WAIT();
    FA_TURN_PASS();
    release(bars + BAR_EMPTY_K(st));
    fa_mbar_wait(bars + BAR_FULL_V(st), (n / STAGES) & 1);
    release(bars + BAR_EMPTY_V(st));
#if !FA_SM90_OVERLAP
    FA_TURN_WAIT();
    FA_TURN_PASS();
#endif
  };
  /* Varlen: value rows [valid, BN) of stage st (loaded, not yet read by this warpgroup) belong to the next
   * sequence or to nobody; zeroed, since P's zeros there would not cancel a value that is not finite. Whole
   * 128-byte rows, so the swizzle does not matter; another consumer may write the same zeros. */
  auto fix_v = [&](int st, int valid) {
    uint4 zero;
    zero.x = zero.y = zero.z = zero.w = 0u;
    for (int k = tid & 127; k < (BN - valid) * NSLAB * 8; k += 128) {
      const int r = valid + k / (NSLAB * 8), sl = (k / 8) % NSLAB;
      *(uint4 *)(sbase + SMEM_V + st * KV_TILE + sl * KV_SLAB + r * 128 + (k % 8) * 16) = zero;
    }
    fa_fence_proxy_async();
    fa_named_sync(BAR_EPI(c), 128);
  };
#endif

  fa_mbar_wait(bars + BAR_Q, 0);
  int n = 0;
#if FA_SM90_OVERLAP
  /* The first tile alone, then each step issues S of tile n with P V of tile n - 1. */
  fa_mbar_wait(bars + BAR_FULL_K(0), 0);
  int info = tile_info[0];
  int cls = info >= 0 ? FA_CLS(info) : 0;
#if FA_INFER
  /* The tiles before this warpgroup's first: passed over. */
  while (info >= 0 && cls == FA_TILE_SKIP) {
    pass(n++);
    fa_mbar_wait(bars + BAR_FULL_K(n % STAGES), (n / STAGES) & 1);
    info = tile_info[n % STAGES];
    cls = info >= 0 ? FA_CLS(info) : 0;
  }
  const bool idle = info < 0 && n > 0; /* no tile of its own: the last turn below, which the others take */
#endif
  if (info >= 0) {
    const int s0 = n % STAGES;
    FA_TURN_WAIT();
    fa_wgmma_fence();
    FA_ISSUE_S(s0);
    FA_TURN_PASS();
    fa_wgmma_wait<0>();
#pragma unroll
    for (int i = 0; i < BN / 2; i++) fa_reg_fence(s[i]);
    release(bars + BAR_EMPTY_K(s0));
    softmax(info & 0x0fffffff, cls);
    pack_p();
    for (n = n + 1;; n++) {
      const int st = n % STAGES, sp = (n - 1) % STAGES;
      fa_mbar_wait(bars + BAR_FULL_K(st), (n / STAGES) & 1);
      info = tile_info[st];
      if (info < 0) break;
      cls = FA_CLS(info);
#if FA_INFER
      if (cls == FA_TILE_SKIP) break; /* past this warpgroup's last tile */
#endif
      FA_TURN_WAIT();
      fa_wgmma_fence();
      FA_ISSUE_S(st);
      fa_mbar_wait(bars + BAR_FULL_V(sp), ((n - 1) / STAGES) & 1);
      FA_ISSUE_PV(sp);
      FA_TURN_PASS();
      fa_wgmma_wait<1>();
#pragma unroll
      for (int i = 0; i < BN / 2; i++) fa_reg_fence(s[i]);
      release(bars + BAR_EMPTY_K(st));
      softmax(info & 0x0fffffff, cls);
      fa_wgmma_wait<0>();
#pragma unroll
      for (int i = 0; i < DN / 2; i++) fa_reg_fence(o[i]);
      release(bars + BAR_EMPTY_V(sp));
      rescale_o();
      pack_p();
    }
    const int sp = (n - 1) % STAGES;
    fa_mbar_wait(bars + BAR_FULL_V(sp), ((n - 1) / STAGES) & 1);
#if FA_INFER
    /* Only the last tile of the walk reaches past the sequence, and it is this warpgroup's last if it is its. */
    if (p.inf.varlen && j_last * BN + BN > Sk) fix_v(sp, Sk - j_last * BN);
#endif
    FA_TURN_WAIT();
    fa_wgmma_fence();
    FA_ISSUE_PV(sp);
    FA_TURN_PASS();
    fa_wgmma_wait<0>();
#pragma unroll
    for (int i = 0; i < DN / 2; i++) fa_reg_fence(o[i]);
    release(bars + BAR_EMPTY_V(sp));
#if FA_INFER
    /* The tiles after this warpgroup's last: passed over. */
    while (info >= 0) {
      pass(n++);
      fa_mbar_wait(bars + BAR_FULL_K(n % STAGES), (n / STAGES) & 1);
      info = tile_info[n % STAGES];
    }
#endif
  }
#if FA_INFER
  else if (idle) {
    FA_TURN_WAIT();
    FA_TURN_PASS();
  }
#endif
#else
  for (;; n++) {
    const int st = n % STAGES;
    const unsigned ph = (n / STAGES) & 1;
    fa_mbar_wait(bars + BAR_FULL_K(st), ph);
    const int info = tile_info[st];
    if (info < 0) break;
    const int cls = FA_CLS(info);
#if FA_INFER
    if (cls == FA_TILE_SKIP) {
      pass(n);
      continue;
    }
#endif
    FA_TURN_WAIT();
    fa_wgmma_fence();
    FA_ISSUE_S(st);
    FA_TURN_PASS();
    fa_wgmma_wait<0>();
#pragma unroll
    for (int i = 0; i < BN / 2; i++) fa_reg_fence(s[i]);
    release(bars + BAR_EMPTY_K(st));
    softmax(info & 0x0fffffff, cls);
    rescale_o();
    pack_p();
    fa_mbar_wait(bars + BAR_FULL_V(st), ph);
#if FA_INFER
    if (p.inf.varlen && j_last * BN + BN > Sk) fix_v(st, Sk - j_last * BN);
#endif
    FA_TURN_WAIT();
    fa_wgmma_fence();
    FA_ISSUE_PV(st);
    FA_TURN_PASS();
    fa_wgmma_wait<0>();
#pragma unroll
    for (int i = 0; i < DN / 2; i++) fa_reg_fence(o[i]);
    release(bars + BAR_EMPTY_V(st));
  }
#endif

  /* Epilogue: O / l into this warpgroup's Q rows (swizzled: conflict-free), then 16-byte stores of the rows
   * below Sq; lse = ln(sum exp(scale s)) = (m + log2 l) ln 2. */
  float inv[2];
#pragma unroll
  for (int hh = 0; hh < 2; hh++) {
    float lt = l[hh];
    lt += __shfl_xor_sync(0xffffffffu, lt, 1);
    lt += __shfl_xor_sync(0xffffffffu, lt, 2);
#if FA_DROPOUT
    inv[hh] = lt > 0.f ? p.dropout_scale / lt : 0.f;
#else
    inv[hh] = lt > 0.f ? 1.f / lt : 0.f;
#endif
    const int row = row0 + 8 * hh;
    if (p.lse && t == 0 && row < Sq)
      ((float *)p.lse)[bt * p.lse_sb + h * p.lse_sh + (long long)(qrow0 + row) * p.lse_ss] =
          lt > 0.f ? (m[hh] + log2f(lt)) * FA_LN2 : FA_NEG_INF;
  }
  fa_named_sync(BAR_EPI(c), 128); /* every warp of the group is done reading Q */
  unsigned char *const sq = sbase + SMEM_Q + c * 64 * 128;
#pragma unroll
  for (int i = 0; i < DN / 8; i++) {
    if (8 * i < HEAD_DIM) {
      const int col = 8 * i + 2 * t, slab = col >> 6, ch = (col & 63) >> 3;
#pragma unroll
      for (int hh = 0; hh < 2; hh++) {
        const int r = 16 * w + g + 8 * hh;
        *(unsigned *)(sq + slab * Q_SLAB + fa_swz(r, ch) + (col & 7) * 2) =
            fa_pack2(o[4 * i + 2 * hh] * inv[hh], o[4 * i + 2 * hh + 1] * inv[hh]);
      }
    }
  }
  fa_named_sync(BAR_EPI(c), 128);
  const int chunks = HEAD_DIM / 8; /* 16-byte chunks of a row */
  unsigned short *og = (unsigned short *)p.o + bt * p.o_sb + h * p.o_sh + (long long)qrow0 * p.o_ss;
  for (int k = tid & 127; k < 64 * chunks; k += 128) {
    const int r = k / chunks, ch = k % chunks, row = mc + r;
    if (row < Sq) {
      const uint4 v = *(const uint4 *)(sq + (ch >> 3) * Q_SLAB + fa_swz(r, ch & 7));
      *(uint4 *)(og + (long long)row * p.o_ss + ch * 8) = v;
    }
  }
}

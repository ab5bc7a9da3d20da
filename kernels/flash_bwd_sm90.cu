/* FlashAttention backward for Hopper (sm_90a), FlashAttention-3's design: per block of BLOCK_N keys, a producer
 * warp streams the query blocks (Q, dO and their rows' lse and di) with TMA through a two-stage ring while
 * two consumer warpgroups compute on wgmma:
 *   S^T = K Q^T and dP^T = V dO^T (keys as rows: the accumulators are then the A operands below),
 *   P^T = exp2(S^T scale log2 e - lse2), dS^T = P^T o (dP^T - di),
 *   dV += P^T dO, dK += dS^T Q (Q and dO from shared memory, MN-major),
 *   dQ = dS K through shared memory (dS^T stored as the MN-major A operand), added into the float32
 *   accumulator dq_acc with a bulk reduction (cp.reduce.async.bulk ... add.f32) per 64-column slab; in
 *   deterministic mode (FA_DQ_ORDERED) the key blocks take their turns on a counter per slab, in a fixed order
 *   (causal: from the last block that sees the query block down to block 0).
 * Two ways to share a block between the consumers, by head dim:
 *   D <= 128: 128 keys, 64 to each warpgroup, which holds its keys' dK and dV for every column; P^T and dS^T
 *     stay in registers as the A operands of dV and dK.
 *   D > 128 (SPLIT_D): dK and dV of 64 keys for all of D do not fit one warpgroup's registers (256 a thread),
 *     so the block is 64 keys and warpgroup c holds columns [128 c, 128 c + 128) of dK, dV and dQ; each
 *     computes S^T and dP^T for half of the step's queries and writes P^T and dS^T to shared memory, where
 *     both read them. Shared memory then has no room for a dQ staging buffer: a warpgroup stages its dQ
 *     slabs in its own slabs of the step's Q and dO tiles, dead once its dK and dV have read them, and the
 *     stage goes back to the producer once the reduction has read it.
 * dK, dV sum over the GQA group's query heads inside the block (no atomics). The scale of dK and dQ is
 * applied at the end (flash_bwd_sm90_dq converts dq_acc to dq).
 *
 * Tensors as in kernels/flash_bwd.cu; the workspace as in fa_bwd_sm90_params (cuda_params.h).
 * Work: 5 products of 2 Sq Sk D each (non-causal): 2.5 x the forward's FLOPs; compute-bound.
 *
 * Kernels (src/cuda/cu_backward_sm90.c launches them in this order, dq_acc and sem zeroed first):
 *   flash_bwd_sm90_pre  di and lse2, one warp per row. Grid (ceil(Sq_pad / 8), Hq, B).
 *   flash_bwd_sm90      grid (ceil(Sk / BLOCK_N), Hkv, B), 384 threads.
 *   flash_bwd_sm90_dq   dq = scale dq_acc in dq's dtype and strides, one warp per row. Grid (ceil(Sq / 8), Hq, B).
 * Defines: FA_DTYPE (1, 2), HEAD_DIM (multiple of 8, <= 256), BLOCK_M (64), BLOCK_N (128; 64 when
 * HEAD_DIM > 128), STAGES, FA_DQ_ORDERED, FA_BLOCK_MASK, FA_DROPOUT, FA_INFER, FA_INFER_MODS (0: softcap and
 * ALiBi off, their code left out). */
#include "cuda_common.cuh"
#include "cuda_params.h"
#include "masks.h"
#include "sm90.cuh"
#include "sm90_wgmma.cuh"
#ifndef FA_INFER
#define FA_INFER 0
#endif
#ifndef FA_INFER_MODS
#define FA_INFER_MODS FA_INFER
#endif
#include "flash_infer.cuh"
#if FA_INFER && (FA_BLOCK_MASK || FA_DROPOUT)
#error "FA_INFER does not combine with FA_BLOCK_MASK or FA_DROPOUT"
#endif
#if FA_INFER /* the window's bounds (kernels/masks.h's band), -1: unbounded */
#define WIN_L (p.inf.wl)
#define WIN_R (p.inf.wr)
#else
#define WIN_L (-1)
#define WIN_R (-1)
#endif

#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif
#define SPLIT_D (HEAD_DIM > 128)
#ifndef BLOCK_M
#define BLOCK_M 64
#endif
#ifndef BLOCK_N
#define BLOCK_N (SPLIT_D ? 64 : 128)
#endif
#ifndef STAGES
#define STAGES 2
#endif
#ifndef FA_DQ_ORDERED
#define FA_DQ_ORDERED 0
#endif

#define BM BLOCK_M
#define BN BLOCK_N
#define NWG 2
#define NSLAB ((HEAD_DIM + 63) / 64) /* slabs of the tensors (and of dq_acc) */
#define KSTEPS ((HEAD_DIM + 15) / 16)
#if SPLIT_D
#define NSL 4       /* slabs in shared memory, two to each warpgroup (beyond NSLAB: zeros) */
#define QW (BM / 2) /* queries of a warpgroup's S^T */
#define DW 128      /* columns of a warpgroup's dK, dV and dQ */
#else
#define NSL NSLAB
#define QW BM
#define DW (NSLAB * 64)
#endif
#define KV_SLAB (BN * 128)
#define Q_SLAB (BM * 128)
#define Q_TILE (NSL * Q_SLAB)
#define SM_K 0
#define SM_V (SM_K + NSL * KV_SLAB)
#define SM_Q (SM_V + NSL * KV_SLAB)
#define SM_DO (SM_Q + STAGES * Q_TILE)
#define SM_DS (SM_DO + STAGES * Q_TILE)   /* two buffers of BN rows x BM queries (128 bytes) */
#define SM_P (SM_DS + 2 * BN * 128)       /* SPLIT_D: P^T, two buffers as dS^T */
#define SM_DQ (SM_P + (SPLIT_D ? 2 * BN * 128 : 0)) /* per slab: BM x 64 floats (not SPLIT_D) */
#define SM_LSE (SM_DQ + (SPLIT_D ? 0 : NSLAB * BM * 256))
#define SM_DI (SM_LSE + STAGES * BM * 4)
#define SM_BAR (SM_DI + STAGES * BM * 4)
#define BAR_KV 0
#define BAR_FULL_Q(s) (8 * (1 + 4 * (s)))
#define BAR_FULL_DO(s) (8 * (2 + 4 * (s)))
#define BAR_EMPTY_Q(s) (8 * (3 + 4 * (s)))
#define BAR_EMPTY_DO(s) (8 * (4 + 4 * (s)))
#define TILE_INFO (8 * (1 + 4 * STAGES))
#if SPLIT_D
/* Deterministic: warpgroup c hands the step's staged dQ (in stage s) to its writer warp by BAR_DQ_FULL(s, c);
 * the writer gives the stage back to the producer. DQ_JOB(s, c): the job's tile_info word and head. */
#define BAR_DQ_FULL(s, c) (TILE_INFO + 8 * STAGES + 8 * ((s) * NWG + (c)))
#define DQ_JOB(s, c) (BAR_DQ_FULL(STAGES, 0) + 8 * ((s) * NWG + (c)))
#define EMPTY_ARRIVALS NWG /* one a warpgroup (or its writer), once its dQ staging is read */
#else
/* Deterministic: per slab, the consumer hands its staged dQ to a writer warp (DQ_FULL) and the writer hands
 * the stage back once added (DQ_EMPTY); DQ_JOB: the job, tile_info's word and the head within the group. */
#define BAR_DQ_FULL(sl) (TILE_INFO + 8 * STAGES + 16 * (sl))
#define BAR_DQ_EMPTY(sl) (BAR_DQ_FULL(sl) + 8)
#define DQ_JOB (BAR_DQ_FULL(2))
#define EMPTY_ARRIVALS (4 * NWG) /* every consumer warp */
#endif
/* named barriers */
#define NB_DS 1     /* both consumers: dS^T written */
#define NB_ALL 2    /* both consumers: done with K (epilogue) */
#define NB_WG(c) (3 + (c))

#if BM != 64 || (SPLIT_D ? BN != 64 : BN != 64 * NWG) || HEAD_DIM > 256 || (HEAD_DIM % 8) != 0 || FA_DTYPE == 0
#error "bad flash_bwd_sm90 configuration"
#endif

#define ROW_THREADS 256

/* A compile-time bool as a value, to instantiate a generic lambda's two versions. */
template <bool B> struct fa_bool {
  static constexpr bool value = B;
};

/* 16-byte chunk c of row r of a 128-byte-row slab, as TMA swizzles it. */
static __device__ __forceinline__ unsigned fa_swz(int r, int c) { return (unsigned)(r * 128 + ((c ^ (r & 7)) << 4)); }

/* di = rowsum(dO o O) and lse2 = lse log2 e (+inf where the row gets no probability: past Sq, or lse = -inf,
 * so that exp2(s - lse2) is 0 there). */
extern "C" __global__ void __launch_bounds__(ROW_THREADS) flash_bwd_sm90_pre(const fa_bwd_sm90_params p) {
  const int lane = threadIdx.x & 31, i = blockIdx.x * 8 + (threadIdx.x >> 5);
  const int h = (int)blockIdx.y + p.h0, b = (int)blockIdx.z + p.b0;
  if (i >= p.seqlen_q_pad) return;
  const seq_span sp = seq_of(p, b);
  const long long row = ((long long)b * p.heads_q + h) * p.seqlen_q_pad + i, t = (long long)sp.qfirst + i;
  float di = 0.f, l2 = __int_as_float(0x7f800000);
  if (i < sp.sq) {
    const fa_elem *o = (const fa_elem *)p.o + sp.bt * p.o_sb + h * p.o_sh + t * p.o_ss;
    const fa_elem *g = (const fa_elem *)p.dout + sp.bt * p.do_sb + h * p.do_sh + t * p.do_ss;
    for (int d = lane; d < HEAD_DIM; d += 32) di += fa_load(o + d) * fa_load(g + d);
    const float lse = ((const float *)p.lse)[sp.bt * p.lse_sb + h * p.lse_sh + t * p.lse_ss];
    if (lse > FA_NEG_INF) l2 = lse * 1.4426950408889634f;
  }
#pragma unroll
  for (int off = 16; off; off >>= 1) di += __shfl_xor_sync(0xffffffffu, di, off);
  if (lane == 0) {
    ((float *)p.di)[row] = di;
    ((float *)p.lse2)[row] = l2;
  }
}

/* dq = scale dq_acc, one warp per row. */
extern "C" __global__ void __launch_bounds__(ROW_THREADS) flash_bwd_sm90_dq(const fa_bwd_sm90_params p) {
  const int lane = threadIdx.x & 31, i = blockIdx.x * 8 + (threadIdx.x >> 5);
  const int h = (int)blockIdx.y + p.h0, b = (int)blockIdx.z + p.b0;
  const seq_span sp = seq_of(p, b);
  if (i >= sp.sq) return;
  const int m = i / BM, r = i % BM;
  const float *acc =
      (const float *)p.dq_acc + (((long long)b * p.heads_q + h) * p.n_mblocks + m) * (NSLAB * BM * 64) + r * 64;
  fa_elem *dst = (fa_elem *)p.dq + sp.bt * p.dq_sb + h * p.dq_sh + ((long long)sp.qfirst + i) * p.dq_ss;
  for (int d = lane; d < HEAD_DIM; d += 32)
    dst[d] = fa_from_float(p.scale * acc[(d >> 6) * (BM * 64) + ((d & 63) ^ ((r & 7) << 3))]);
}

#if FA_DQ_ORDERED
/* Deterministic dQ: a lane of the producer's warpgroup adds the consumers' staged dQ into dq_acc in a fixed
 * order, waiting for this block's turn on the slab's counter, so that the consumers never wait on the turn or
 * on the reduction's round trip (in their path, those made deterministic mode 0.70x of the default, H200;
 * here 0.94-1.0x). The blocks that add to query block m are key blocks 0 .. last, a prefix. Causal: from the
 * last down, so that each block's first query block (its diagonal) is its turn 0 and the blocks run in step
 * instead of each waiting for all before it; otherwise in increasing order. */
static __device__ __forceinline__ int *dq_turn(const fa_bwd_sm90_params &p, const seq_span &sp, long long bh, int m,
                                               int sl, int nb) {
  int *sem = (int *)p.sem + (bh * p.n_mblocks + m) * NSLAB + sl;
  /* The key blocks that reach query block m: from the one holding its first row's first key to the one holding
   * its last row's last (the band's bounds never decrease). */
  const int q0 = m * BM, q1 = min(q0 + BM, sp.sq);
  const int first = fa_band_lo(q0, sp.sq, sp.sk, WIN_L) / BN;
  const int last = min((sp.sk - 1) / BN, (fa_band_hi(q1 - 1, sp.sq, sp.sk, p.causal, WIN_R) - 1) / BN);
  const int turn = p.causal ? last - nb : nb - first;
  int seen;
  do {
    asm volatile("ld.acquire.gpu.global.s32 %0, [%1];" : "=r"(seen) : "l"(sem) : "memory");
  } while (seen != turn);
  return sem;
}

/* After this block's addition has landed: the next block's turn. */
static __device__ __forceinline__ void dq_turn_done(int *sem) {
  __threadfence();
  atomicAdd(sem, 1);
}

#if SPLIT_D
/* The writer of warpgroup c: its slabs 2 c, 2 c + 1 (those below NSLAB), staged as rows 0-31 in the slab of
 * the step's Q tile and rows 32-63 in the slab of its dO tile; then the stage goes back to the producer. */
static __device__ __forceinline__ void dq_writer(const fa_bwd_sm90_params &p, const seq_span &sp, unsigned char *sbase,
                                              unsigned base, unsigned bars, int nb, int hk, int b, int c) {
  for (int j = 0;; j++) {
    const int st = j % STAGES;
    fa_mbar_wait(bars + BAR_DQ_FULL(st, c), (j / STAGES) & 1);
    volatile const int *job = (volatile const int *)(sbase + SM_BAR + DQ_JOB(st, c));
    const int info = job[0];
    if (info < 0) return;
    const int m = info & 0x0fffffff, cls = info >> 28;
    const long long bh = (long long)b * p.heads_q + hk * p.group + job[1];
    for (int sl = 2 * c; sl < 2 * c + 2 && sl < NSLAB; sl++) {
      int *sem = dq_turn(p, sp, bh, m, sl, nb);
      if (cls != FA_TILE_SKIP) {
        float *dst = (float *)p.dq_acc + ((bh * p.n_mblocks + m) * NSLAB + sl) * (BM * 64);
        fa_bulk_add_f32(dst, base + SM_Q + st * Q_TILE + sl * Q_SLAB, Q_SLAB);
        fa_bulk_add_f32(dst + 32 * 64, base + SM_DO + st * Q_TILE + sl * Q_SLAB, Q_SLAB);
        fa_bulk_commit();
        fa_bulk_wait<0>();
      }
      dq_turn_done(sem);
    }
    fa_mbar_arrive(bars + BAR_EMPTY_Q(st));
    fa_mbar_arrive(bars + BAR_EMPTY_DO(st));
  }
}
#else
/* The writer of slab sl, from the consumers' staging buffer, handed back by BAR_DQ_EMPTY. */
static __device__ __forceinline__ void dq_writer(const fa_bwd_sm90_params &p, const seq_span &sp, unsigned char *sbase,
                                              unsigned bars, int nb, int hk, int b, int sl) {
  const int n_m = p.n_mblocks;
  const unsigned stage = fa_smem_addr(sbase + SM_DQ + sl * (BM * 256));
  volatile const int *job = (volatile const int *)(sbase + SM_BAR + DQ_JOB) + 2 * sl;
  for (int j = 0;; j++) {
    fa_mbar_wait(bars + BAR_DQ_FULL(sl), j & 1);
    const int info = job[0];
    if (info < 0) return;
    const int m = info & 0x0fffffff, cls = info >> 28;
    const long long bh = (long long)b * p.heads_q + hk * p.group + job[1];
    float *dst = (float *)p.dq_acc + ((bh * n_m + m) * NSLAB + sl) * (BM * 64);
    int *sem = dq_turn(p, sp, bh, m, sl, nb);
    if (cls != FA_TILE_SKIP) {
      fa_bulk_add_f32(dst, stage, BM * 256);
      fa_bulk_commit();
      fa_bulk_wait<0>();
    }
    dq_turn_done(sem);
    fa_mbar_arrive(bars + BAR_DQ_EMPTY(sl));
  }
}
#endif
#endif

extern "C" __global__ void __launch_bounds__(384, 1)
    flash_bwd_sm90(const __grid_constant__ fa_bwd_sm90_params p, const __grid_constant__ fa_bwd_sm90_maps maps) {
  extern __shared__ __align__(1024) unsigned char fa_smem[];
  const unsigned base = (fa_smem_addr(fa_smem) + 1023u) & ~1023u;
  unsigned char *const sbase = fa_smem + (base - fa_smem_addr(fa_smem));
  const unsigned bars = base + SM_BAR;
  volatile int *const tile_info = (volatile int *)(sbase + SM_BAR + TILE_INFO);
  volatile int *const tile_head = tile_info + STAGES;
  const int tid = threadIdx.x, lane = tid & 31, wg = tid >> 7;
  /* Causal and ordered, a block waits for the key blocks after it (see the dQ turns below): launch those first. */
  const int nb = FA_DQ_ORDERED && p.causal ? (int)gridDim.x - 1 - (int)blockIdx.x : (int)blockIdx.x;
  const int hk = (int)blockIdx.y + p.h0, b = (int)blockIdx.z + p.b0;
  const seq_span sp = seq_of(p, b); /* varlen: the grid spans the longest sequence */
  const int Sq = sp.sq, Sk = sp.sk, bt = sp.bt, n0 = nb * BN;
  if (n0 >= Sk) return;
  const int n_m = p.n_mblocks;
  /* The query blocks whose rows see a key of this block (causal: from row n0 - (Sk - Sq) on). */
  int r0, r1;
  fa_band_rows(n0, min(n0 + BN, Sk), Sq, Sk, p.causal, WIN_L, WIN_R, &r0, &r1);
  const int m_first = r0 / BM, m_end = r0 < r1 ? (r1 + BM - 1) / BM : m_first;

  if (tid == 0) {
    fa_mbar_init(bars + BAR_KV, 1);
    for (int s = 0; s < STAGES; s++) {
      fa_mbar_init(bars + BAR_FULL_Q(s), 1);
      fa_mbar_init(bars + BAR_FULL_DO(s), 1);
      fa_mbar_init(bars + BAR_EMPTY_Q(s), EMPTY_ARRIVALS);
      fa_mbar_init(bars + BAR_EMPTY_DO(s), EMPTY_ARRIVALS);
    }
#if SPLIT_D
    for (int s = 0; s < STAGES; s++)
      for (int cc = 0; cc < NWG; cc++) fa_mbar_init(bars + BAR_DQ_FULL(s, cc), 1);
#else
    for (int sl = 0; sl < NSLAB; sl++) fa_mbar_init(bars + BAR_DQ_FULL(sl), 1), fa_mbar_init(bars + BAR_DQ_EMPTY(sl), 1);
#endif
    fa_mbar_init_fence();
  }
#if SPLIT_D && NSLAB < NSL
  /* Slabs past NSLAB are never loaded (nor dQ staged there): zeros, so that the products over them add 0. */
  for (int i = tid; i < (NSL - NSLAB) * KV_SLAB / 16; i += blockDim.x) {
    const int off = NSLAB * KV_SLAB + 16 * i;
    *(uint4 *)(sbase + SM_K + off) = make_uint4(0, 0, 0, 0);
    *(uint4 *)(sbase + SM_V + off) = make_uint4(0, 0, 0, 0);
  }
  for (int i = tid; i < STAGES * (NSL - NSLAB) * Q_SLAB / 16; i += blockDim.x) {
    const int per = (NSL - NSLAB) * Q_SLAB / 16, off = (i / per) * Q_TILE + NSLAB * Q_SLAB + 16 * (i % per);
    *(uint4 *)(sbase + SM_Q + off) = make_uint4(0, 0, 0, 0);
    *(uint4 *)(sbase + SM_DO + off) = make_uint4(0, 0, 0, 0);
  }
  fa_fence_proxy_async();
#endif
  __syncthreads();

  if (wg == 0) {
    /* ======== producer ======== */
    fa_regs_dealloc<24>();
#if FA_DQ_ORDERED && SPLIT_D
    if (tid >= 32 && tid < 32 * (1 + NWG)) {
      if (lane == 0) dq_writer(p, sp, sbase, base, bars, nb, hk, b, (tid >> 5) - 1);
      return;
    }
#elif FA_DQ_ORDERED
    if (tid >= 32 && tid < 32 * (1 + NSLAB)) {
      if (lane == 0) dq_writer(p, sp, sbase, bars, nb, hk, b, (tid >> 5) - 1);
      return;
    }
#endif
    if (tid >= 32) return;
    if (lane == 0) {
      fa_tma_prefetch_map(&maps.q);
      fa_tma_prefetch_map(&maps.dout);
      fa_mbar_arrive_expect_tx(bars + BAR_KV, 2 * NSLAB * KV_SLAB);
      for (int s = 0; s < NSLAB; s++) {
        fa_tma_load4(base + SM_K + s * KV_SLAB, &maps.k, bars + BAR_KV, 64 * s, sp.kfirst + n0, hk, bt);
        fa_tma_load4(base + SM_V + s * KV_SLAB, &maps.v, bars + BAR_KV, 64 * s, sp.kfirst + n0, hk, bt);
      }
    }
    int n = 0;
    for (int gi = 0; gi < p.group; gi++) {
      const int h = hk * p.group + gi;
      const long long bh = (long long)b * p.heads_q + h;
#if FA_BLOCK_MASK
      const unsigned char *mk = (const unsigned char *)p.mask + b * p.mask_sb + h * p.mask_sh;
      const int c1 = min(n0 + BN, Sk);
      auto classify = [&](int ml) {
        return fa_block_tile(mk, p.mask_sr, p.mask_sc, p.block_q, p.block_k, ml * BM, min(ml * BM + BM, Sq), n0, c1);
      };
      fa_tile_walk tw = fa_walk_start(m_first, m_end);
      int cls;
      int m = fa_walk_next(tw, lane, FA_DQ_ORDERED, classify, &cls);
#else
      int m = m_first;
      auto band_class = [&](int ml) {
        return fa_band_tile(ml * BM, min(ml * BM + BM, Sq), n0, n0 + BN, Sq, Sk, p.causal, WIN_L, WIN_R);
      };
      int cls = band_class(m);
#endif
      for (; m < m_end; n++) {
        const int st = n % STAGES;
        const unsigned ph = ((n / STAGES) & 1) ^ 1;
        const bool load = cls != FA_TILE_SKIP; /* a skipped block reaches the consumers only to keep dQ's turns */
        fa_mbar_wait(bars + BAR_EMPTY_Q(st), ph);
        if (lane == 0) {
          tile_info[st] = m | (cls << 28);
          tile_head[st] = gi;
          if (load) {
            fa_mbar_arrive_expect_tx(bars + BAR_FULL_Q(st), NSLAB * Q_SLAB + BM * 4);
            for (int s = 0; s < NSLAB; s++)
              fa_tma_load4(base + SM_Q + st * Q_TILE + s * Q_SLAB, &maps.q, bars + BAR_FULL_Q(st), 64 * s,
                           sp.qfirst + m * BM, h, bt);
            fa_bulk_load(base + SM_LSE + st * BM * 4, (const float *)p.lse2 + bh * p.seqlen_q_pad + m * BM, BM * 4,
                         bars + BAR_FULL_Q(st));
          } else {
            fa_mbar_arrive(bars + BAR_FULL_Q(st));
          }
        }
        fa_mbar_wait(bars + BAR_EMPTY_DO(st), ph);
        if (lane == 0) {
          if (load) {
            fa_mbar_arrive_expect_tx(bars + BAR_FULL_DO(st), NSLAB * Q_SLAB + BM * 4);
            for (int s = 0; s < NSLAB; s++)
              fa_tma_load4(base + SM_DO + st * Q_TILE + s * Q_SLAB, &maps.dout, bars + BAR_FULL_DO(st), 64 * s,
                           sp.qfirst + m * BM, h, bt);
            fa_bulk_load(base + SM_DI + st * BM * 4, (const float *)p.di + bh * p.seqlen_q_pad + m * BM, BM * 4,
                         bars + BAR_FULL_DO(st));
          } else {
            fa_mbar_arrive(bars + BAR_FULL_DO(st));
          }
        }
#if FA_BLOCK_MASK
        m = fa_walk_next(tw, lane, FA_DQ_ORDERED, classify, &cls);
#else
        if (++m < m_end) cls = band_class(m);
#endif
        __syncwarp();
      }
    }
    const int st = n % STAGES;
    fa_mbar_wait(bars + BAR_EMPTY_Q(st), ((n / STAGES) & 1) ^ 1);
    if (lane == 0) {
      tile_info[st] = -1;
      fa_mbar_arrive(bars + BAR_FULL_Q(st));
    }
    return;
  }

  /* ======== consumers ======== */
  fa_regs_alloc<240>();
  const int c = wg - 1, w = (tid >> 5) & 3, g = lane >> 2, t = lane & 3, wtid = tid & 127;
#if SPLIT_D
  const int kb = 0, qc = QW * c, db = 2 * c; /* keys, first query of S^T, first slab of dK, dV, dQ */
#else
  const int kb = 64 * c, qc = 0, db = 0;
#endif
  const int kr = kb + 16 * w + g; /* this thread's key rows: kr and kr + 8 (of the block) */
  const unsigned k_rows = base + SM_K + kb * 128, v_rows = base + SM_V + kb * 128;
#if FA_BLOCK_MASK
  const float sl2 = p.scale_log2;
#endif
#if FA_DROPOUT
  const int odd = g & 1; /* key parity: the Philox pair partner is the lane 4 away */
#endif

  float dk[DW / 2], dv[DW / 2];
#pragma unroll
  for (int i = 0; i < DW / 2; i++) dk[i] = dv[i] = 0.f;
  float s[QW / 2], dp[QW / 2];
#if SPLIT_D
  float dq[DW / 2];
#else
  unsigned pa[BM / 16][4], da[BM / 16][4];
#endif

  fa_mbar_wait(bars + BAR_KV, 0);
  for (int n = 0;; n++) {
    const int st = n % STAGES;
    const unsigned ph = (n / STAGES) & 1;
    fa_mbar_wait(bars + BAR_FULL_Q(st), ph);
    const int info = tile_info[st];
#if FA_DQ_ORDERED && SPLIT_D
    if (info < 0 && wtid == 0) { /* tell the writer there is no more */
      ((volatile int *)(sbase + SM_BAR + DQ_JOB(st, c)))[0] = -1;
      fa_mbar_arrive(bars + BAR_DQ_FULL(st, c));
    }
#elif FA_DQ_ORDERED
    if (info < 0 && c < NSLAB && wtid == 0) {
      fa_mbar_wait(bars + BAR_DQ_EMPTY(c), (n & 1) ^ 1);
      ((volatile int *)(sbase + SM_BAR + DQ_JOB))[2 * c] = -1;
      fa_mbar_arrive(bars + BAR_DQ_FULL(c));
    }
#endif
    if (info < 0) break;
    const int m = info & 0x0fffffff, cls = info >> 28, h = hk * p.group + tile_head[st];
    const long long bh = (long long)b * p.heads_q + h;
    const int q0 = m * BM;
    const unsigned sq = base + SM_Q + st * Q_TILE, sdo = base + SM_DO + st * Q_TILE;
    if (cls != FA_TILE_SKIP) {
      const float *lse2 = (const float *)(sbase + SM_LSE + st * BM * 4);
      const float *dis = (const float *)(sbase + SM_DI + st * BM * 4);
      /* S^T = K Q^T and dP^T = V dO^T for this warpgroup's keys and queries qc .. qc + QW. */
      fa_wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < KSTEPS; kk++) {
        const unsigned off = (kk & 3) * 32;
        fa_wgmma<QW>::ss(s, fa_wgmma_desc_k(k_rows + (kk >> 2) * KV_SLAB + off),
                         fa_wgmma_desc_k(sq + qc * 128 + (kk >> 2) * Q_SLAB + off), kk > 0);
      }
      fa_wgmma_commit();
      fa_mbar_wait(bars + BAR_FULL_DO(st), ph);
      fa_wgmma_fence(); /* dp's registers were last written by the previous block's dS */
#pragma unroll
      for (int kk = 0; kk < KSTEPS; kk++) {
        const unsigned off = (kk & 3) * 32;
        fa_wgmma<QW>::ss(dp, fa_wgmma_desc_k(v_rows + (kk >> 2) * KV_SLAB + off),
                         fa_wgmma_desc_k(sdo + qc * 128 + (kk >> 2) * Q_SLAB + off), kk > 0);
      }
      fa_wgmma_commit();
      fa_wgmma_wait<1>();
#pragma unroll
      for (int i = 0; i < QW / 2; i++) fa_reg_fence(s[i]);

      /* P^T: s[4 i + 2 hh + e] is key kr + 8 hh, query q0 + qc + 8 i + 2 t + e. */
#if !FA_BLOCK_MASK
      /* Softcap's factor on dS is known only here, and a register array for it does not fit: with softcap, P
       * and dS are computed in one pass, once dP is in. Rows past the sequence have lse2 = +inf: P = 0. */
      const bool capped = FA_INFER_MODS && p.inf.softcap2 > 0.f;
      const float slope2 = FA_INFER_MODS ? slope2_of(p, b, h) : 0.f;
      /* MODS: softcap or ALiBi, in a loop of its own: with them tested per score, the compiler computed
       * softcap's exp2 and division (and ALiBi's 64-bit distance) for every score and selected, and the
       * backward with a window or varlen alone ran 1.7x slower per step than without (H200). CAP: dS here
       * too, in the one path that has waited for dP: a read of dP that ptxas cannot place after its wait
       * serialises every wgmma of the kernel (ptxas C7514). */
      auto probs = [&](auto mods, auto cap) {
        /* The band: the queries that see this thread's keys, from its first query q0 + qc + 2 t on (one unsigned
         * test of a constant per score; per-score bounds spilled 128 bytes at D 256, deterministic). */
        int rlo[2];
        unsigned rspan[2];
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
          const int key = n0 + kr + 8 * hh;
          int r0, r1;
          fa_band_rows(key, key + 1, Sq, Sk, p.causal, WIN_L, WIN_R, &r0, &r1);
          rlo[hh] = r0 - (q0 + qc + 2 * t);
          rspan[hh] = key < Sk ? (unsigned)(r1 - r0) : 0u;
        }
#pragma unroll
        for (int i = 0; i < QW / 8; i++)
#pragma unroll
          for (int hh = 0; hh < 2; hh++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
              const int q = qc + 8 * i + 2 * t + e, key = n0 + kr + 8 * hh, x = 4 * i + 2 * hh + e, qa = q0 + q;
              float g = 1.f, pr;
              if (decltype(mods)::value)
                pr = exp2f(mod_score<true>(p, s[x], slope2, qa + Sk - Sq, key, g) - lse2[q]);
              else
                pr = exp2f(fmaf(s[x], p.scale_log2, -lse2[q]));
              if (cls == FA_TILE_PARTIAL && (unsigned)(8 * i + e - rlo[hh]) >= rspan[hh]) pr = 0.f;
              s[x] = pr;
              if (decltype(cap)::value) dp[x] = pr * g * (dp[x] - dis[q]);
            }
      };
      if (capped) {
        fa_wgmma_wait<0>();
#pragma unroll
        for (int i = 0; i < QW / 2; i++) fa_reg_fence(dp[i]);
        probs(fa_bool<true>(), fa_bool<true>());
      } else {
        if (slope2 != 0.f)
          probs(fa_bool<true>(), fa_bool<false>());
        else
          probs(fa_bool<false>(), fa_bool<false>());
        fa_wgmma_wait<0>();
#pragma unroll
        for (int i = 0; i < QW / 2; i++) fa_reg_fence(dp[i]);
      }
#else
      const bool edge = n0 + BN > Sk || (p.causal && n0 + BN - 1 > q0 + Sk - Sq);
      const unsigned char *mk = (const unsigned char *)p.mask + b * p.mask_sb + h * p.mask_sh;
#pragma unroll
      for (int i = 0; i < QW / 8; i++)
#pragma unroll
        for (int hh = 0; hh < 2; hh++)
#pragma unroll
          for (int e = 0; e < 2; e++) {
            const int q = qc + 8 * i + 2 * t + e, key = n0 + kr + 8 * hh, x = 4 * i + 2 * hh + e;
            float pr = exp2f(fmaf(s[x], sl2, -lse2[q]));
            if (edge && (key >= Sk || (p.causal && key > q0 + q + Sk - Sq))) pr = 0.f;
            if (cls == FA_TILE_PARTIAL && q0 + q < Sq && key < Sk &&
                !fa_block_keep(mk, p.mask_sr, p.mask_sc, p.block_q, p.block_k, q0 + q, key))
              pr = 0.f;
            s[x] = pr;
          }
      fa_wgmma_wait<0>();
#pragma unroll
      for (int i = 0; i < QW / 2; i++) fa_reg_fence(dp[i]);
#endif

      /* dS^T = P^T o (dP^T Z / (1 - p) - di); dV takes P^T Z / (1 - p) (Z the forward's keep mask). */
#pragma unroll
      for (int i = 0; i < QW / 8; i += 2) {
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
#if FA_DROPOUT
          /* Philox group (queries q, q + 8; keys kp, kp + 1) serves chunks i and i + 1 (i even; qc is a
           * multiple of 16) of this key row and of the partner's (key parity flipped, lane ^ 4): each lane
           * draws the group of query qc + 8 i + 2 t + odd and hands the partner the two words of its key. */
          const unsigned kp = (unsigned)(n0 + kr + 8 * hh - odd);
          unsigned wd[4];
          fa_dropout_words(p.dropout_seed, p.dropout_offset, (unsigned)bh, (unsigned)(q0 + qc + 8 * i + 2 * t + odd), kp,
                           wd);
          const unsigned mine0 = odd ? wd[1] : wd[0], mine1 = odd ? wd[3] : wd[2];
          const unsigned give0 = odd ? wd[0] : wd[1], give1 = odd ? wd[2] : wd[3];
          const unsigned got0 = __shfl_xor_sync(0xffffffffu, give0, 4), got1 = __shfl_xor_sync(0xffffffffu, give1, 4);
          const unsigned thr = p.dropout_threshold;
          /* keep[chunk][e]: e = odd from my draw, e = 1 - odd from the partner's */
          const bool k00 = (odd ? got0 : mine0) >= thr, k01 = (odd ? mine0 : got0) >= thr;
          const bool k10 = (odd ? got1 : mine1) >= thr, k11 = (odd ? mine1 : got1) >= thr;
          const bool keep[2][2] = {{k00, k01}, {k10, k11}};
#endif
#pragma unroll
          for (int ci = 0; ci < 2; ci++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
              const int x = 4 * (i + ci) + 2 * hh + e, q = qc + 8 * (i + ci) + 2 * t + e;
              const float pr = s[x];
#if FA_DROPOUT
              const float z = keep[ci][e] ? p.dropout_scale : 0.f;
              s[x] = pr * z;
              dp[x] = pr * (dp[x] * z - dis[q]);
#elif !FA_BLOCK_MASK
              if (!capped) dp[x] = pr * (dp[x] - dis[q]);
#else
              dp[x] = pr * (dp[x] - dis[q]);
#endif
            }
        }
#if !SPLIT_D
        /* Chunks i and i + 1 are k-step i / 2 of the products below: pack them now, so that their floats die. */
        const int kk = i >> 1;
        pa[kk][0] = fa_pack2(s[8 * kk + 0], s[8 * kk + 1]);
        pa[kk][1] = fa_pack2(s[8 * kk + 2], s[8 * kk + 3]);
        pa[kk][2] = fa_pack2(s[8 * kk + 4], s[8 * kk + 5]);
        pa[kk][3] = fa_pack2(s[8 * kk + 6], s[8 * kk + 7]);
        da[kk][0] = fa_pack2(dp[8 * kk + 0], dp[8 * kk + 1]);
        da[kk][1] = fa_pack2(dp[8 * kk + 2], dp[8 * kk + 3]);
        da[kk][2] = fa_pack2(dp[8 * kk + 4], dp[8 * kk + 5]);
        da[kk][3] = fa_pack2(dp[8 * kk + 6], dp[8 * kk + 7]);
#endif
      }
      /* dS^T (and, SPLIT_D, P^T) into shared memory, rows = keys, 128 bytes of queries each: the K-major A
       * operand of dK (and dV) and the MN-major A operand of dQ = dS K. */
      unsigned char *const ds = sbase + SM_DS + (n & 1) * (BN * 128);
#if SPLIT_D
      unsigned char *const pt = sbase + SM_P + (n & 1) * (BN * 128);
#pragma unroll
      for (int i = 0; i < QW / 8; i++)
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
          const unsigned off = fa_swz(kr + 8 * hh, qc / 8 + i) + 4 * t;
          *(unsigned *)(pt + off) = fa_pack2(s[4 * i + 2 * hh], s[4 * i + 2 * hh + 1]);
          *(unsigned *)(ds + off) = fa_pack2(dp[4 * i + 2 * hh], dp[4 * i + 2 * hh + 1]);
        }
#else
      /* dV += P^T dO, dK += dS^T Q: k-steps of 16 queries, 2048 bytes apart in every slab. */
      fa_wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < BM / 16; kk++) fa_wgmma<DW>::rs<1>(dv, pa[kk], fa_wgmma_desc_mn(sdo + kk * 2048, Q_SLAB), 1);
#pragma unroll
      for (int kk = 0; kk < BM / 16; kk++) fa_wgmma<DW>::rs<1>(dk, da[kk], fa_wgmma_desc_mn(sq + kk * 2048, Q_SLAB), 1);
      fa_wgmma_commit();
#pragma unroll
      for (int i = 0; i < BM / 8; i++)
#pragma unroll
        for (int hh = 0; hh < 2; hh++)
          *(unsigned *)(ds + fa_swz(kr + 8 * hh, i) + 4 * t) = da[i >> 1][2 * (i & 1) + hh];
#endif
      fa_fence_proxy_async();
    } else {
      fa_mbar_wait(bars + BAR_FULL_DO(st), ph); /* a skipped block's stages complete without data */
    }
    /* Both consumers' dS^T are in (and, with two buffers, both are past their reads of the one before). */
    fa_named_sync(NB_DS, 256);

#if SPLIT_D
    if (cls != FA_TILE_SKIP) {
      const unsigned pt = base + SM_P + (n & 1) * (BN * 128), ds = base + SM_DS + (n & 1) * (BN * 128);
      /* dV += P^T dO, dK += dS^T Q for this warpgroup's slabs db, db + 1: k-steps of 16 queries. */
      fa_wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < BM / 16; kk++)
        fa_wgmma<DW>::ss<0, 1>(dv, fa_wgmma_desc_k(pt + kk * 32), fa_wgmma_desc_mn(sdo + db * Q_SLAB + kk * 2048, Q_SLAB), 1);
#pragma unroll
      for (int kk = 0; kk < BM / 16; kk++)
        fa_wgmma<DW>::ss<0, 1>(dk, fa_wgmma_desc_k(ds + kk * 32), fa_wgmma_desc_mn(sq + db * Q_SLAB + kk * 2048, Q_SLAB), 1);
      /* dQ = dS K for the same slabs: k-steps of 16 keys. */
#pragma unroll
      for (int kk = 0; kk < BN / 16; kk++)
        fa_wgmma<DW>::ss<1, 1>(dq, fa_wgmma_desc_mn(ds + kk * 2048, BN * 128),
                               fa_wgmma_desc_mn(base + SM_K + db * KV_SLAB + kk * 2048, KV_SLAB), kk > 0);
      fa_wgmma_commit();
      fa_wgmma_wait<0>();
#pragma unroll
      for (int i = 0; i < DW / 2; i++) fa_reg_fence(dk[i]), fa_reg_fence(dv[i]), fa_reg_fence(dq[i]);
      /* Stage dQ in this warpgroup's slabs of the Q tile (rows 0-31) and the dO tile (rows 32-63), which its dK
       * and dV were the last to read: row r, column col at col ^ (r % 8) * 8, as dq_acc holds it. */
#pragma unroll
      for (int i = 0; i < DW / 8; i++)
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
          const int r = 16 * w + g + 8 * hh, sl = db + (i >> 3), col = 8 * (i & 7) + 2 * t;
          if (sl < NSLAB) {
            unsigned char *const tile = sbase + (r < 32 ? SM_Q : SM_DO) + st * Q_TILE + sl * Q_SLAB;
            *(float2 *)(tile + 4 * ((r & 31) * 64 + (col ^ ((r & 7) << 3)))) =
                make_float2(dq[4 * i + 2 * hh], dq[4 * i + 2 * hh + 1]);
          }
        }
      fa_fence_proxy_async();
    }
    fa_named_sync(NB_WG(c), 128);
    if (wtid == 0) {
#if FA_DQ_ORDERED
      volatile int *job = (volatile int *)(sbase + SM_BAR + DQ_JOB(st, c));
      job[0] = info;
      job[1] = tile_head[st];
      fa_mbar_arrive(bars + BAR_DQ_FULL(st, c));
#else
      if (cls != FA_TILE_SKIP) {
        for (int sl = db; sl < db + 2 && sl < NSLAB; sl++) {
          float *dst = (float *)p.dq_acc + ((bh * n_m + m) * NSLAB + sl) * (BM * 64);
          fa_bulk_add_f32(dst, sq + sl * Q_SLAB, Q_SLAB);
          fa_bulk_add_f32(dst + 32 * 64, sdo + sl * Q_SLAB, Q_SLAB);
        }
        fa_bulk_commit();
        fa_bulk_wait_read<0>(); /* the stage goes back to the producer */
      }
      fa_mbar_arrive(bars + BAR_EMPTY_Q(st));
      fa_mbar_arrive(bars + BAR_EMPTY_DO(st));
#endif
    }
#else
    /* dQ for the slab this warpgroup owns (slab c: columns [64 c, 64 c + 64); at D <= 64 only the first). Its
     * accumulator takes the registers of S^T, which are dead by now. */
    if (c < NSLAB) {
      const int sl = c;
      float *const dq = s;
      if (cls != FA_TILE_SKIP) {
        const unsigned ds = base + SM_DS + (n & 1) * (BN * 128);
        fa_wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++)
          fa_wgmma<64>::ss<1, 1>(dq, fa_wgmma_desc_mn(ds + kk * 2048, BN * 128),
                                 fa_wgmma_desc_mn(base + SM_K + sl * KV_SLAB + kk * 2048, KV_SLAB), kk > 0);
        fa_wgmma_commit();
        fa_wgmma_wait<0>();
#pragma unroll
        for (int i = 0; i < 32; i++) fa_reg_fence(dq[i]);
      }
      /* Stage dQ (row r, column col stored at col ^ (r % 8) * 8: conflict-free) and add it with one bulk
       * reduction, once the previous one has read its source (deterministic: once the writer is done with
       * it, and the writer adds it). */
      float *stage = (float *)(sbase + SM_DQ + sl * (BM * 256));
#if FA_DQ_ORDERED
      fa_mbar_wait(bars + BAR_DQ_EMPTY(sl), (n & 1) ^ 1);
#else
      if (wtid == 0) fa_bulk_wait_read<0>();
      fa_named_sync(NB_WG(c), 128);
#endif
      if (cls != FA_TILE_SKIP) {
#pragma unroll
        for (int i = 0; i < 8; i++)
#pragma unroll
          for (int hh = 0; hh < 2; hh++) {
            const int r = 16 * w + g + 8 * hh;
            *(float2 *)(stage + r * 64 + ((8 * i + 2 * t) ^ ((r & 7) << 3))) = make_float2(dq[4 * i + 2 * hh], dq[4 * i + 2 * hh + 1]);
          }
        fa_fence_proxy_async();
      }
      fa_named_sync(NB_WG(c), 128);
      if (wtid == 0) {
#if FA_DQ_ORDERED
        volatile int *job = (volatile int *)(sbase + SM_BAR + DQ_JOB) + 2 * sl;
        job[0] = info;
        job[1] = tile_head[st];
        fa_mbar_arrive(bars + BAR_DQ_FULL(sl));
#else
        float *dst = (float *)p.dq_acc + ((bh * n_m + m) * NSLAB + sl) * (BM * 64);
        if (cls != FA_TILE_SKIP) {
          fa_bulk_add_f32(dst, fa_smem_addr(stage), BM * 256);
          fa_bulk_commit();
        }
#endif
      }
    }
    fa_wgmma_wait<0>(); /* dV and dK have read Q and dO */
#pragma unroll
    for (int i = 0; i < DW / 2; i++) fa_reg_fence(dk[i]), fa_reg_fence(dv[i]);
    __syncwarp();
    if (lane == 0) {
      fa_mbar_arrive(bars + BAR_EMPTY_Q(st));
      fa_mbar_arrive(bars + BAR_EMPTY_DO(st));
    }
#endif
  }

  /* Epilogue: dK (scaled) and dV through this warpgroup's part of the K and V tiles (its keys, or SPLIT_D its
   * slabs), once both consumers are done with K, then 16-byte stores of the keys below Sk. */
  if (wtid == 0) fa_bulk_wait<0>();
  fa_named_sync(NB_ALL, 256);
  unsigned char *const sk = sbase + SM_K + kb * 128, *const sv = sbase + SM_V + kb * 128;
#pragma unroll
  for (int i = 0; i < DW / 8; i++) {
    const int col = 64 * db + 8 * i + 2 * t, slab = col >> 6, ch = (col & 63) >> 3;
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
      const int r = 16 * w + g + 8 * hh;
      const unsigned off = slab * KV_SLAB + fa_swz(r, ch) + (col & 7) * 2;
      *(unsigned *)(sk + off) = fa_pack2(dk[4 * i + 2 * hh] * p.scale, dk[4 * i + 2 * hh + 1] * p.scale);
      *(unsigned *)(sv + off) = fa_pack2(dv[4 * i + 2 * hh], dv[4 * i + 2 * hh + 1]);
    }
  }
  fa_named_sync(NB_WG(c), 128);
  const int chunks = HEAD_DIM / 8, ch0 = 8 * db, ch1 = min(chunks, ch0 + DW / 8);
  unsigned short *gk = (unsigned short *)p.dk + bt * p.dk_sb + hk * p.dk_sh + (long long)sp.kfirst * p.dk_ss;
  unsigned short *gv = (unsigned short *)p.dv + bt * p.dv_sb + hk * p.dv_sh + (long long)sp.kfirst * p.dv_ss;
  for (int k = wtid; k < 64 * (ch1 - ch0); k += 128) {
    const int r = k / (ch1 - ch0), ch = ch0 + k % (ch1 - ch0), key = n0 + kb + r;
    if (key < Sk) {
      const unsigned off = (ch >> 3) * KV_SLAB + fa_swz(r, ch & 7);
      *(uint4 *)(gk + (long long)key * p.dk_ss + ch * 8) = *(const uint4 *)(sk + off);
      *(uint4 *)(gv + (long long)key * p.dv_ss + ch * 8) = *(const uint4 *)(sv + off);
    }
  }
}

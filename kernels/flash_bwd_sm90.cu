/* FlashAttention backward for Hopper (sm_90a), FlashAttention-3's design: per block of BLOCK_N keys, a producer
 * warp streams the query blocks (Q, dO and their rows' lse and di) with TMA through a two-stage ring while
 * two consumer warpgroups, 64 keys each, compute on wgmma:
 *   S^T = K Q^T and dP^T = V dO^T (keys as rows: the accumulators are then the A operands below),
 *   P^T = exp2(S^T scale log2 e - lse2), dS^T = P^T o (dP^T - di),
 *   dV += P^T dO, dK += dS^T Q (A from registers, B = dO, Q from shared memory, MN-major),
 *   dQ = dS K through shared memory (dS^T stored as the MN-major A operand), added into the float32
 *   accumulator dq_acc with a bulk reduction (cp.reduce.async.bulk ... add.f32) per 64-column slab; in
 *   deterministic mode (FA_DQ_ORDERED) the key blocks take their turns on a counter per slab, in a fixed order
 *   (causal: from the last block that sees the query block down to block 0).
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
 * Defines: FA_DTYPE (1, 2), HEAD_DIM (multiple of 8, <= 128), BLOCK_M (64), BLOCK_N (128), STAGES,
 * FA_DQ_ORDERED, FA_BLOCK_MASK, FA_DROPOUT. */
#include "cuda_common.cuh"
#include "cuda_params.h"
#include "masks.h"
#include "sm90.cuh"
#include "sm90_wgmma.cuh"

#ifndef BLOCK_M
#define BLOCK_M 64
#endif
#ifndef BLOCK_N
#define BLOCK_N 128
#endif
#ifndef STAGES
#define STAGES 2
#endif
#ifndef FA_DQ_ORDERED
#define FA_DQ_ORDERED 0
#endif
#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif

#define BM BLOCK_M
#define BN BLOCK_N
#define NWG 2
#define NSLAB ((HEAD_DIM + 63) / 64)
#define KSTEPS ((HEAD_DIM + 15) / 16)
#define DN (NSLAB * 64)
#define KV_SLAB (BN * 128)
#define Q_SLAB (BM * 128)
#define Q_TILE (NSLAB * Q_SLAB)
#define SM_K 0
#define SM_V (SM_K + NSLAB * KV_SLAB)
#define SM_Q (SM_V + NSLAB * KV_SLAB)
#define SM_DO (SM_Q + STAGES * Q_TILE)
#define SM_DS (SM_DO + STAGES * Q_TILE)   /* two buffers of BN rows x BM queries (128 bytes) */
#define SM_DQ (SM_DS + 2 * BN * 128)      /* per slab: BM x 64 floats */
#define SM_LSE (SM_DQ + NSLAB * BM * 256)
#define SM_DI (SM_LSE + STAGES * BM * 4)
#define SM_BAR (SM_DI + STAGES * BM * 4)
#define BAR_KV 0
#define BAR_FULL_Q(s) (8 * (1 + 4 * (s)))
#define BAR_FULL_DO(s) (8 * (2 + 4 * (s)))
#define BAR_EMPTY_Q(s) (8 * (3 + 4 * (s)))
#define BAR_EMPTY_DO(s) (8 * (4 + 4 * (s)))
#define TILE_INFO (8 * (1 + 4 * STAGES))
/* Deterministic: per slab, the consumer hands its staged dQ to a writer warp (DQ_FULL) and the writer hands
 * the stage back once added (DQ_EMPTY); DQ_JOB: the job, tile_info's word and the head within the group. */
#define BAR_DQ_FULL(sl) (TILE_INFO + 8 * STAGES + 16 * (sl))
#define BAR_DQ_EMPTY(sl) (BAR_DQ_FULL(sl) + 8)
#define DQ_JOB (BAR_DQ_FULL(2))
/* named barriers */
#define NB_DS 1     /* both consumers: dS^T written */
#define NB_ALL 2    /* both consumers: done with K (epilogue) */
#define NB_WG(c) (3 + (c))

#if BM != 64 || BN != 64 * NWG || HEAD_DIM > 128 || (HEAD_DIM % 8) != 0 || FA_DTYPE == 0
#error "bad flash_bwd_sm90 configuration"
#endif

#define ROW_THREADS 256

/* 16-byte chunk c of row r of a 128-byte-row slab, as TMA swizzles it. */
static __device__ __forceinline__ unsigned fa_swz(int r, int c) { return (unsigned)(r * 128 + ((c ^ (r & 7)) << 4)); }

/* di = rowsum(dO o O) and lse2 = lse log2 e (+inf where the row gets no probability: past Sq, or lse = -inf,
 * so that exp2(s - lse2) is 0 there). */
extern "C" __global__ void __launch_bounds__(ROW_THREADS) flash_bwd_sm90_pre(const fa_bwd_sm90_params p) {
  const int lane = threadIdx.x & 31, i = blockIdx.x * 8 + (threadIdx.x >> 5);
  const int h = (int)blockIdx.y + p.h0, b = (int)blockIdx.z + p.b0;
  if (i >= p.seqlen_q_pad) return;
  const long long row = ((long long)b * p.heads_q + h) * p.seqlen_q_pad + i;
  float di = 0.f, l2 = __int_as_float(0x7f800000);
  if (i < p.seqlen_q) {
    const fa_elem *o = (const fa_elem *)p.o + b * p.o_sb + h * p.o_sh + (long long)i * p.o_ss;
    const fa_elem *g = (const fa_elem *)p.dout + b * p.do_sb + h * p.do_sh + (long long)i * p.do_ss;
    for (int d = lane; d < HEAD_DIM; d += 32) di += fa_load(o + d) * fa_load(g + d);
    const float lse = ((const float *)p.lse)[b * p.lse_sb + h * p.lse_sh + (long long)i * p.lse_ss];
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
  if (i >= p.seqlen_q) return;
  const int m = i / BM, r = i % BM;
  const float *acc =
      (const float *)p.dq_acc + (((long long)b * p.heads_q + h) * p.n_mblocks + m) * (NSLAB * BM * 64) + r * 64;
  fa_elem *dst = (fa_elem *)p.dq + b * p.dq_sb + h * p.dq_sh + (long long)i * p.dq_ss;
  for (int d = lane; d < HEAD_DIM; d += 32)
    dst[d] = fa_from_float(p.scale * acc[(d >> 6) * (BM * 64) + ((d & 63) ^ ((r & 7) << 3))]);
}

#if FA_DQ_ORDERED
/* Deterministic dQ: one lane of the producer's warp 1 + sl adds the consumers' staged dQ slab sl into dq_acc in
 * a fixed order, waiting for this block's turn on the slab's counter, so that the consumers never wait on the
 * turn or on the reduction's round trip (in their path, those made deterministic mode 0.70x of the default,
 * H200; here 0.94-1.0x). The blocks that add to query block m are key blocks 0 .. last, a prefix. Causal: from
 * the last down, so that each block's first query block (its diagonal) is its turn 0 and the blocks run in step
 * instead of each waiting for all before it; otherwise in increasing order. */
static __device__ __forceinline__ void dq_writer(const fa_bwd_sm90_params &p, unsigned char *sbase, unsigned bars,
                                              int nb, int hk, int b, int sl) {
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
    int *sem = (int *)p.sem + (bh * n_m + m) * NSLAB + sl;
    const int last = min((int)gridDim.x - 1, ((m + 1) * BM + p.seqlen_k - p.seqlen_q - 1) / BN);
    const int turn = p.causal ? last - nb : nb;
    int seen;
    do {
      asm volatile("ld.acquire.gpu.global.s32 %0, [%1];" : "=r"(seen) : "l"(sem) : "memory");
    } while (seen != turn);
    if (cls != FA_TILE_SKIP) {
      fa_bulk_add_f32(dst, stage, BM * 256);
      fa_bulk_commit();
      fa_bulk_wait<0>();
    }
    __threadfence();
    atomicAdd(sem, 1);
    fa_mbar_arrive(bars + BAR_DQ_EMPTY(sl));
  }
}
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
  const int n0 = nb * BN, Sq = p.seqlen_q, Sk = p.seqlen_k;
  const int n_m = p.n_mblocks;
  /* Causal: the first query that sees key n0 is n0 - (Sk - Sq). */
  const int m_first = p.causal ? max(0, n0 - (Sk - Sq)) / BM : 0;

  if (tid == 0) {
    fa_mbar_init(bars + BAR_KV, 1);
    for (int s = 0; s < STAGES; s++) {
      fa_mbar_init(bars + BAR_FULL_Q(s), 1);
      fa_mbar_init(bars + BAR_FULL_DO(s), 1);
      fa_mbar_init(bars + BAR_EMPTY_Q(s), 4 * NWG);
      fa_mbar_init(bars + BAR_EMPTY_DO(s), 4 * NWG);
    }
    for (int sl = 0; sl < NSLAB; sl++) fa_mbar_init(bars + BAR_DQ_FULL(sl), 1), fa_mbar_init(bars + BAR_DQ_EMPTY(sl), 1);
    fa_mbar_init_fence();
  }
  __syncthreads();

  if (wg == 0) {
    /* ======== producer ======== */
    fa_regs_dealloc<24>();
#if FA_DQ_ORDERED
    if (tid >= 32 && tid < 32 * (1 + NSLAB)) {
      if (lane == 0) dq_writer(p, sbase, bars, nb, hk, b, (tid >> 5) - 1);
      return;
    }
#endif
    if (tid >= 32) return;
    if (lane == 0) {
      fa_tma_prefetch_map(&maps.q);
      fa_tma_prefetch_map(&maps.dout);
      fa_mbar_arrive_expect_tx(bars + BAR_KV, 2 * NSLAB * KV_SLAB);
      for (int s = 0; s < NSLAB; s++) {
        fa_tma_load4(base + SM_K + s * KV_SLAB, &maps.k, bars + BAR_KV, 64 * s, n0, hk, b);
        fa_tma_load4(base + SM_V + s * KV_SLAB, &maps.v, bars + BAR_KV, 64 * s, n0, hk, b);
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
      fa_tile_walk tw = fa_walk_start(m_first, n_m);
      int cls;
      int m = fa_walk_next(tw, lane, FA_DQ_ORDERED, classify, &cls);
#else
      const int cls = FA_TILE_FULL;
      int m = m_first;
#endif
      for (; m < n_m; n++) {
        const int st = n % STAGES;
        const unsigned ph = ((n / STAGES) & 1) ^ 1;
        const bool load = cls != FA_TILE_SKIP; /* a skipped block reaches the consumers only to keep dQ's turns */
        fa_mbar_wait(bars + BAR_EMPTY_Q(st), ph);
        if (lane == 0) {
          tile_info[st] = m | (cls << 28);
          tile_head[st] = gi;
          if (load) {
            fa_mbar_arrive_expect_tx(bars + BAR_FULL_Q(st), Q_TILE + BM * 4);
            for (int s = 0; s < NSLAB; s++)
              fa_tma_load4(base + SM_Q + st * Q_TILE + s * Q_SLAB, &maps.q, bars + BAR_FULL_Q(st), 64 * s, m * BM, h, b);
            fa_bulk_load(base + SM_LSE + st * BM * 4, (const float *)p.lse2 + bh * p.seqlen_q_pad + m * BM, BM * 4,
                         bars + BAR_FULL_Q(st));
          } else {
            fa_mbar_arrive(bars + BAR_FULL_Q(st));
          }
        }
        fa_mbar_wait(bars + BAR_EMPTY_DO(st), ph);
        if (lane == 0) {
          if (load) {
            fa_mbar_arrive_expect_tx(bars + BAR_FULL_DO(st), Q_TILE + BM * 4);
            for (int s = 0; s < NSLAB; s++)
              fa_tma_load4(base + SM_DO + st * Q_TILE + s * Q_SLAB, &maps.dout, bars + BAR_FULL_DO(st), 64 * s, m * BM,
                           h, b);
            fa_bulk_load(base + SM_DI + st * BM * 4, (const float *)p.di + bh * p.seqlen_q_pad + m * BM, BM * 4,
                         bars + BAR_FULL_DO(st));
          } else {
            fa_mbar_arrive(bars + BAR_FULL_DO(st));
          }
        }
#if FA_BLOCK_MASK
        m = fa_walk_next(tw, lane, FA_DQ_ORDERED, classify, &cls);
#else
        m++;
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
  const int kr = 64 * c + 16 * w + g;          /* this thread's key rows: kr and kr + 8 (of the block) */
  const unsigned k_rows = base + SM_K + c * 64 * 128, v_rows = base + SM_V + c * 64 * 128;
  const float sl2 = p.scale_log2;
#if FA_DROPOUT
  const int odd = g & 1; /* key parity: the Philox pair partner is the lane 4 away */
#endif

  float dk[DN / 2], dv[DN / 2];
#pragma unroll
  for (int i = 0; i < DN / 2; i++) dk[i] = dv[i] = 0.f;
  float s[BM / 2], dp[BM / 2];
  unsigned pa[BM / 16][4], da[BM / 16][4];

  fa_mbar_wait(bars + BAR_KV, 0);
  for (int n = 0;; n++) {
    const int st = n % STAGES;
    const unsigned ph = (n / STAGES) & 1;
    fa_mbar_wait(bars + BAR_FULL_Q(st), ph);
    const int info = tile_info[st];
#if FA_DQ_ORDERED
    if (info < 0 && c < NSLAB && wtid == 0) { /* tell the writer there is no more */
      fa_mbar_wait(bars + BAR_DQ_EMPTY(c), (n & 1) ^ 1);
      ((volatile int *)(sbase + SM_BAR + DQ_JOB))[2 * c] = -1;
      fa_mbar_arrive(bars + BAR_DQ_FULL(c));
    }
#endif
    if (info < 0) break;
    const int m = info & 0x0fffffff, cls = info >> 28, h = hk * p.group + tile_head[st];
    const long long bh = (long long)b * p.heads_q + h;
    const int q0 = m * BM;
    if (cls != FA_TILE_SKIP) {
      const unsigned sq = base + SM_Q + st * Q_TILE, sdo = base + SM_DO + st * Q_TILE;
      const float *lse2 = (const float *)(sbase + SM_LSE + st * BM * 4);
      const float *dis = (const float *)(sbase + SM_DI + st * BM * 4);
      /* S^T = K Q^T and dP^T = V dO^T for this warpgroup's 64 keys. */
      fa_wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < KSTEPS; kk++) {
        const unsigned off = (kk & 3) * 32;
        fa_wgmma<BM>::ss(s, fa_wgmma_desc_k(k_rows + (kk >> 2) * KV_SLAB + off),
                         fa_wgmma_desc_k(sq + (kk >> 2) * Q_SLAB + off), kk > 0);
      }
      fa_wgmma_commit();
      fa_mbar_wait(bars + BAR_FULL_DO(st), ph);
      fa_wgmma_fence(); /* dp's registers were last written by the previous block's dS */
#pragma unroll
      for (int kk = 0; kk < KSTEPS; kk++) {
        const unsigned off = (kk & 3) * 32;
        fa_wgmma<BM>::ss(dp, fa_wgmma_desc_k(v_rows + (kk >> 2) * KV_SLAB + off),
                         fa_wgmma_desc_k(sdo + (kk >> 2) * Q_SLAB + off), kk > 0);
      }
      fa_wgmma_commit();
      fa_wgmma_wait<1>();
#pragma unroll
      for (int i = 0; i < BM / 2; i++) fa_reg_fence(s[i]);

      /* P^T: s[4 i + 2 hh + e] is key kr + 8 hh, query q0 + 8 i + 2 t + e. */
      const bool edge = n0 + BN > Sk || (p.causal && n0 + BN - 1 > q0 + Sk - Sq);
#if FA_BLOCK_MASK
      const unsigned char *mk = (const unsigned char *)p.mask + b * p.mask_sb + h * p.mask_sh;
#endif
#pragma unroll
      for (int i = 0; i < BM / 8; i++)
#pragma unroll
        for (int hh = 0; hh < 2; hh++)
#pragma unroll
          for (int e = 0; e < 2; e++) {
            const int q = 8 * i + 2 * t + e, key = n0 + kr + 8 * hh, x = 4 * i + 2 * hh + e;
            float pr = exp2f(fmaf(s[x], sl2, -lse2[q]));
            if (edge && (key >= Sk || (p.causal && key > q0 + q + Sk - Sq))) pr = 0.f;
#if FA_BLOCK_MASK
            if (cls == FA_TILE_PARTIAL && q0 + q < Sq && key < Sk &&
                !fa_block_keep(mk, p.mask_sr, p.mask_sc, p.block_q, p.block_k, q0 + q, key))
              pr = 0.f;
#endif
            s[x] = pr;
          }
      fa_wgmma_wait<0>();
#pragma unroll
      for (int i = 0; i < BM / 2; i++) fa_reg_fence(dp[i]);

      /* dS^T = P^T o (dP^T Z / (1 - p) - di); dV takes P^T Z / (1 - p) (Z the forward's keep mask). */
#pragma unroll
      for (int i = 0; i < BM / 8; i += 2) {
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
#if FA_DROPOUT
          /* Philox group (queries q, q + 8; keys kp, kp + 1) serves chunks i and i + 1 (i even) of this key row
           * and of the partner's (key parity flipped, lane ^ 4): each lane draws the group of query
           * 8 i + 2 t + odd and hands the partner the two words of its key. */
          const unsigned kp = (unsigned)(n0 + kr + 8 * hh - odd);
          unsigned wd[4];
          fa_dropout_words(p.dropout_seed, p.dropout_offset, (unsigned)bh, (unsigned)(q0 + 8 * i + 2 * t + odd), kp, wd);
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
              const int x = 4 * (i + ci) + 2 * hh + e, q = 8 * (i + ci) + 2 * t + e;
              const float pr = s[x];
#if FA_DROPOUT
              const float z = keep[ci][e] ? p.dropout_scale : 0.f;
              s[x] = pr * z;
              dp[x] = pr * (dp[x] * z - dis[q]);
#else
              dp[x] = pr * (dp[x] - dis[q]);
#endif
            }
        }
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
      }
      /* dV += P^T dO, dK += dS^T Q: k-steps of 16 queries, 2048 bytes apart in every slab. */
      fa_wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < BM / 16; kk++) fa_wgmma<DN>::rs<1>(dv, pa[kk], fa_wgmma_desc_mn(sdo + kk * 2048, Q_SLAB), 1);
#pragma unroll
      for (int kk = 0; kk < BM / 16; kk++) fa_wgmma<DN>::rs<1>(dk, da[kk], fa_wgmma_desc_mn(sq + kk * 2048, Q_SLAB), 1);
      fa_wgmma_commit();

      /* dS^T into shared memory, rows = keys, 128 bytes of queries each: the MN-major A operand of dQ = dS K. */
      unsigned char *const ds = sbase + SM_DS + (n & 1) * (BN * 128);
#pragma unroll
      for (int i = 0; i < BM / 8; i++)
#pragma unroll
        for (int hh = 0; hh < 2; hh++)
          *(unsigned *)(ds + fa_swz(kr + 8 * hh, i) + 4 * t) = da[i >> 1][2 * (i & 1) + hh];
      fa_fence_proxy_async();
    } else {
      fa_mbar_wait(bars + BAR_FULL_DO(st), ph); /* a skipped block's stages complete without data */
    }
    /* Both consumers' dS^T are in (and, with two buffers, both are past their reads of the one before). */
    fa_named_sync(NB_DS, 256);

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
    for (int i = 0; i < DN / 2; i++) fa_reg_fence(dk[i]), fa_reg_fence(dv[i]);
    __syncwarp();
    if (lane == 0) {
      fa_mbar_arrive(bars + BAR_EMPTY_Q(st));
      fa_mbar_arrive(bars + BAR_EMPTY_DO(st));
    }
  }

  /* Epilogue: dK (scaled) and dV through this warpgroup's K and V rows, once both consumers are done with K,
   * then 16-byte stores of the keys below Sk. */
  if (wtid == 0) fa_bulk_wait<0>();
  fa_named_sync(NB_ALL, 256);
  unsigned char *const sk = sbase + SM_K + c * 64 * 128, *const sv = sbase + SM_V + c * 64 * 128;
#pragma unroll
  for (int i = 0; i < DN / 8; i++) {
    const int col = 8 * i + 2 * t, slab = col >> 6, ch = (col & 63) >> 3;
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
      const int r = 16 * w + g + 8 * hh;
      const unsigned off = slab * KV_SLAB + fa_swz(r, ch) + (col & 7) * 2;
      *(unsigned *)(sk + off) = fa_pack2(dk[4 * i + 2 * hh] * p.scale, dk[4 * i + 2 * hh + 1] * p.scale);
      *(unsigned *)(sv + off) = fa_pack2(dv[4 * i + 2 * hh], dv[4 * i + 2 * hh + 1]);
    }
  }
  fa_named_sync(NB_WG(c), 128);
  const int chunks = HEAD_DIM / 8;
  unsigned short *gk = (unsigned short *)p.dk + b * p.dk_sb + hk * p.dk_sh;
  unsigned short *gv = (unsigned short *)p.dv + b * p.dv_sb + hk * p.dv_sh;
  for (int k = wtid; k < 64 * chunks; k += 128) {
    const int r = k / chunks, ch = k % chunks, key = n0 + 64 * c + r;
    if (key < Sk) {
      const unsigned off = (ch >> 3) * KV_SLAB + fa_swz(r, ch & 7);
      *(uint4 *)(gk + (long long)key * p.dk_ss + ch * 8) = *(const uint4 *)(sk + off);
      *(uint4 *)(gv + (long long)key * p.dv_ss + ch * 8) = *(const uint4 *)(sv + off);
    }
  }
}

/* Tile sizes from the device's on-chip memory. Pure functions of the limits the backend queried, shared
 * by both backends; each kernel family sizes its own local-memory layout below the paper's rule. */
#include "tiling.h"

void fa_tiles_paper(size_t bytes, int head_dim, int *block_q, int *block_k) {
  size_t floats = bytes / sizeof(float);
  size_t bc = (floats + 4 * (size_t)head_dim - 1) / (4 * (size_t)head_dim);
  if (bc < 1) bc = 1;
  *block_k = bc > 4096 ? 4096 : (int)bc;
  *block_q = *block_k < head_dim ? *block_k : head_dim;
}

/* OpenCL forward (kernels/flash_fwd.cl). Local floats: Qs BR*(D+pad) + KT D*(BC+pad) + Vs BC*D, plus Ps
 * BR*(BC+pad) and red BR*TPR when several work-items share a row (the GPU layout, where pad = 1 against bank
 * conflicts; 0 on CPUs).
 * GPUs (simd_width > 1): TPR = 8 work-items per row (D/8 accumulators each), at most 256 work-items, and
 * the paper's Br = min(Bc, d), Bc = ceil(M / 4d).
 * CPUs: one work-item per two rows (RPT = 2: each K and V vector loaded serves both), vector arithmetic,
 * Bc = min(64, 8192/d) (the K and V tiles together stay within 64 KiB, in L2) and Br = 128, above the
 * paper's min(Bc, d): each K/V tile staged serves more rows. Measured on PoCL (docs/PERFORMANCE.md): Br 128
 * beats 64 at d = 64..256; 256 gains a little without a mask and loses with causal (fewer, unequal groups).
 * Then shrink the larger of Br and Bc until the layout fits the budget; when even Br = 1 does not fit the
 * GPU layout, fall back to the CPU one, whose smallest tile (Br = Bc = 1) needs 12 d bytes. */
static size_t ocl_fwd_bytes(int d, int br, int bc, int tpr) {
  const int pad = tpr > 1;
  size_t floats = (size_t)br * (d + pad) + (size_t)d * (bc + pad) + (size_t)bc * d;
  if (tpr > 1) floats += (size_t)br * (bc + pad) + (size_t)br * tpr;
  return floats * sizeof(float);
}

static int ocl_fwd_fit(const fa_tile_limits *lim, int d, int gpu, fa_tiles *out) {
  const int tpr = gpu ? 8 : 1;
  int br, bc;
  fa_tiles_paper(lim->local_mem_bytes, d, &br, &bc);
  int max_rows = gpu ? lim->max_group_size / tpr : 2 * lim->max_group_size;
  if (!gpu) {
    br = 128;
    bc = 8192 / d < 64 ? 8192 / d : 64;
  }
  if (max_rows < 1) return 0;
  if (br > max_rows) br = max_rows;
  /* BC: a multiple of 8 keys (whole vectors; one key per work-item of a row on GPUs), else (tiny budgets,
   * CPU layout only) any count. */
  if (bc >= 8) bc -= bc % 8;
  else if (gpu) bc = 8;
  while (ocl_fwd_bytes(d, br, bc, tpr) > lim->local_mem_bytes) {
    const int bc_min = gpu ? 8 : 1;
    if ((bc > br || br == 1) && bc > bc_min) {
      int nb = bc / 2;
      if (nb >= 8) nb -= nb % 8;
      bc = nb < bc_min ? bc_min : nb;
    } else if (br > 1) {
      br /= 2;
    } else {
      return 0;
    }
  }
  /* CPU: two rows per work-item where the block has an even row count. */
  const int rpt = !gpu && br % 2 == 0 ? 2 : 1;
  out->block_q = br;
  out->block_k = bc;
  out->threads = gpu ? br * tpr : br / rpt;
  out->local_mem_bytes = ocl_fwd_bytes(d, br, bc, tpr);
  return 1;
}

fa_status fa_tiles_opencl_forward(const fa_tile_limits *lim, int head_dim, fa_tiles *out) {
  if (head_dim <= 0 || head_dim % 8 != 0 || head_dim > 256) return FA_ERROR_UNSUPPORTED;
  if (lim->simd_width > 1) {
    fa_tile_limits gpu = *lim;
    if (gpu.max_group_size > 256) gpu.max_group_size = 256;
    if (ocl_fwd_fit(&gpu, head_dim, 1, out)) return FA_SUCCESS;
  }
  if (ocl_fwd_fit(lim, head_dim, 0, out)) return FA_SUCCESS;
  return FA_ERROR_UNSUPPORTED;
}

/* CUDA forward (kernels/flash_fwd.cu). The dtype names the kernel family:
 * - F16/BF16: flash_fwd_tc (tensor cores): 128 threads, Br = 64 query rows, Bc key rows a multiple of 16
 *   (64 for D <= 128, 32 above: registers hold O's 64 x D accumulators), K and V double-buffered as 16-bit
 *   values with rows of Dp + 8 elements (Dp = D rounded up to 16), and Q (64 rows) sharing the second stage
 *   while it moves into registers (D <= 128) or kept apart (D > 128).
 * - F32: flash_fwd_simt (CUDA cores, float32 in shared memory, also the fallback for 16-bit types on
 *   devices without tensor cores or budgets too small for the tensor-core tiles): Q Br x (D + 4), K Bc x (D + 4),
 *   V Bc x D and P Br x (Bc + 8) floats; Br <= 64 (32 for D > 128) and Bc <= 64 (32 for D > 64) keep the
 *   per-thread register blocks of S and O near 64 floats; 8 threads across a row, min(Br, 16) down; below
 *   8 keys some of a row's threads hold no score (down to Br = Bc = 1: about 3 KiB at D = 256).
 * Both start from the paper's Bc (counted in elements of the type held in shared memory) and shrink until the
 * layout fits the budget; FA_ERROR_UNSUPPORTED when the smallest does not. */
static size_t cuda_tc_bytes(int d, int bc) {
  size_t ds = (size_t)(d + 15) / 16 * 16 + 8;
  size_t elems = 4 * (size_t)bc * ds;
  if (d <= 128) {
    size_t with_q = 2 * (size_t)bc * ds + 64 * ds;
    if (with_q > elems) elems = with_q;
  } else {
    elems += 64 * ds;
  }
  return elems * 2;
}

static size_t cuda_simt_bytes(int d, int br, int bc) {
  size_t floats = (size_t)br * (d + 4) + (size_t)bc * (d + 4) + (size_t)bc * d + (size_t)br * (bc + 8);
  return floats * sizeof(float);
}

/* Shared bytes of kernels/flash_fwd_sm90.cu: Q (block_q rows) and `stages` K and V tiles (block_k rows), each
 * row as ceil(D / 64) slabs of 128 bytes; the barriers and tile indices; 1024 bytes of slack for aligning the
 * base to the swizzle's 1024-byte period. */
static size_t cuda_sm90_bytes(int head_dim, int bm, int bn, int stages) {
  const size_t slabs = (size_t)(head_dim + 63) / 64;
  return slabs * 128 * ((size_t)bm + 2 * (size_t)stages * bn) + 8 * (1 + 4 * (size_t)stages) + 4 * (size_t)stages + 1024;
}

fa_status fa_tiles_cuda_sm90_forward(const fa_tile_limits *lim, int head_dim, int banded, int infer,
                                     int64_t seqlen_q, int mask_bq, int mask_bk, int *stages, fa_tiles *out) {
  if (head_dim <= 0 || head_dim % 8 != 0 || head_dim > 256) return FA_ERROR_UNSUPPORTED;
  /* Starting points after FlashAttention-3's tile_size_fwd_sm90 and the register budget of two (three)
   * consumer warpgroups at 240 (160) registers a thread: O takes D / 2, S block_k / 2 and P block_k / 4.
   * Non-causal work favours wide key tiles; banded ones (causal, a window) waste less on the band's edges
   * with narrower ones. With softcap or ALiBi (infer 2) the FA_INFER variant spilled 100-130 bytes at D 64's 192
   * rows, D 128's 176 keys and (8) D 256's 80: those take the next tile down. */
  const int mods = infer == 2;
  int bm = 128, bn;
  if (head_dim <= 64) bm = mods ? 128 : 192, bn = 128;
  else if (head_dim <= 96) bn = 128;
  else if (head_dim <= 128) bn = banded || mods ? 128 : 176;
  else if (head_dim <= 192) bn = banded ? 96 : 112;
  else bn = banded || mods ? 64 : 80;
  /* D 64's 192 rows run 7 % faster than 128 at S 4096 (H200, causal bf16: 424 against 395 TFLOP/s) but pad
   * each sequence's last block: where that pads 8 % more rows than 128 would, 128 wins (270 against 240 at
   * S 1024, where 192 pads 1152 rows for 1024). */
  if (bm == 192 && seqlen_q > 0 && (seqlen_q + 191) / 192 * 192 * 100 > (seqlen_q + 127) / 128 * 128 * 108) bm = 128;
  /* With a block mask, a tile inside one mask block is skipped or taken whole: one that straddles blocks is
   * masked score by score, which made density 1/2 cost 4.4x the dense time (D 128, tile 128 x 176, blocks of
   * 128). So take the largest rows and keys below the default that divide the mask's blocks. */
  if (mask_bq > 0 && mask_bk > 0) {
    for (int m = bm; m >= 64; m -= 64)
      if (mask_bq % m == 0) {
        bm = m;
        break;
      }
    for (int n = bn; n >= 64; n -= 16)
      if (mask_bk % n == 0) {
        bn = n;
        break;
      }
  }
  const int st = 2;
  if (lim->max_group_size < 2 * bm + 128) return FA_ERROR_UNSUPPORTED;
  for (; bn >= 64; bn -= 16) {
    const size_t bytes = cuda_sm90_bytes(head_dim, bm, bn, st);
    if (bytes <= lim->local_mem_bytes) {
      out->block_q = bm;
      out->block_k = bn;
      out->threads = 2 * bm + 128; /* a 128-thread warpgroup per 64 rows, plus the producer */
      out->local_mem_bytes = bytes;
      *stages = st;
      return FA_SUCCESS;
    }
  }
  return FA_ERROR_UNSUPPORTED;
}

fa_status fa_tiles_cuda_sm90_backward(const fa_tile_limits *lim, int head_dim, fa_tiles *out) {
  /* kernels/flash_bwd_sm90.cu, 64 queries a step, two stages. D <= 128: 128 keys a block (two consumer
   * warpgroups of 64), whose registers hold dK and dV for 64 keys. Shared: K and V; Q and dO per stage; dS^T
   * twice; dQ's float staging per slab; lse2 and di per stage; barriers and tile indices (and the
   * deterministic dQ hand-over's: 48 bytes); 1024 bytes of slack for the swizzle's alignment.
   * D > 128: 64 keys a block, the warpgroups splitting the head dim; four slabs of K, V, Q and dO; P^T and
   * dS^T twice; no dQ staging (it goes into the step's Q and dO tiles); the hand-over's 64 bytes. */
  if (head_dim <= 0 || head_dim % 8 != 0 || head_dim > 256) return FA_ERROR_UNSUPPORTED;
  const int split = head_dim > 128;
  const size_t slabs = split ? 4 : (size_t)(head_dim + 63) / 64, bm = 64, bn = split ? 64 : 128, st = 2;
  const size_t bytes = 2 * slabs * bn * 128 + 2 * st * slabs * bm * 128 + (split ? 4 : 2) * bn * 128 +
                       (split ? 0 : slabs * bm * 256) + 2 * st * bm * 4 + 8 * (1 + 4 * st) + 8 * st +
                       (split ? 64 : 48) + 1024;
  if (bytes > lim->local_mem_bytes || lim->max_group_size < 384) return FA_ERROR_UNSUPPORTED;
  out->block_q = (int)bm;
  out->block_k = (int)bn;
  out->threads = 384;
  out->local_mem_bytes = bytes;
  return FA_SUCCESS;
}

fa_status fa_tiles_cuda_forward(const fa_tile_limits *lim, int head_dim, fa_dtype dtype, fa_tiles *out) {
  if (head_dim <= 0 || head_dim % 8 != 0 || head_dim > 256) return FA_ERROR_UNSUPPORTED;
  int pq, pk;
  if (dtype == FA_F16 || dtype == FA_BF16) {
    if (lim->max_group_size < 128) return FA_ERROR_UNSUPPORTED;
    fa_tiles_paper(lim->local_mem_bytes * 2, head_dim, &pq, &pk); /* M in 16-bit elements */
    int bc = head_dim <= 128 ? 64 : 32;
    if (pk < bc) bc = pk;
    bc -= bc % 16;
    if (bc < 16) bc = 16;
    for (; bc >= 16; bc -= 16) {
      size_t bytes = cuda_tc_bytes(head_dim, bc);
      if (bytes <= lim->local_mem_bytes) {
        out->block_q = 64;
        out->block_k = bc;
        out->threads = 128;
        out->local_mem_bytes = bytes;
        return FA_SUCCESS;
      }
    }
    return FA_ERROR_UNSUPPORTED;
  }
  fa_tiles_paper(lim->local_mem_bytes, head_dim, &pq, &pk);
  int br = head_dim <= 128 ? 64 : 32, bc = head_dim <= 64 ? 64 : 32;
  if (pq < br) br = pq;
  if (pk < bc) bc = pk;
  while (br & (br - 1)) br &= br - 1; /* powers of two: the thread layout divides them evenly */
  while (bc & (bc - 1)) bc &= bc - 1;
  if (bc < 8) bc = 8; /* a full row of 8 threads as long as the layout fits */
  while (br * 8 > lim->max_group_size && br > 1) br /= 2;
  while (cuda_simt_bytes(head_dim, br, bc) > lim->local_mem_bytes) {
    if (bc > 16) bc /= 2;
    else if (br > 16) br /= 2;
    else if (bc > 8) bc /= 2;
    else if (br > 1) br /= 2;
    else if (bc > 1) bc /= 2;
    else return FA_ERROR_UNSUPPORTED;
  }
  out->block_q = br;
  out->block_k = bc;
  out->threads = (br < 16 ? br : 16) * 8;
  out->local_mem_bytes = cuda_simt_bytes(head_dim, br, bc);
  return FA_SUCCESS;
}

/* OpenCL backward (kernels/flash_bwd.cl): each work-item owns RPW key rows in flash_bwd_dkdv (BC / RPW per
 * group) and RPW query rows in flash_bwd_dq (BR / RPW per group); threads reports BC / RPW. CPUs take RPW = 4
 * where BR and BC allow (each tile vector loaded feeds four rows' multiply-adds: fewer loads per flop; on PoCL
 * 1.6x faster than RPW = 1, see docs/PERFORMANCE.md), GPUs RPW = 1 (where the GPU layout does not fit). Local
 * floats, the larger of the two kernels' layouts: dkdv Qs, QT, dOs, dOT 4*BR*D + lse2, Di 2*BR + (atomic dQ)
 * Ks BC*D + dS BR*BC; dq KT, VT, Ks 3*BC*D. Every work-item keeps its rows' D-float accumulators and a
 * block's scores privately, so the caps (BR <= 64, BC <= 128) keep a group's private memory in a CPU core's
 * cache and a GPU's registers spilling little. From the paper's Bc, Br, shrink the larger of the two until the
 * layout fits; BR and BC stay multiples of 8 (whole vectors) while they are 8 or more. */
static size_t ocl_bwd_bytes(int d, int br, int bc) {
  size_t dkdv = 4 * (size_t)br * d + 2 * (size_t)br + (size_t)bc * d + (size_t)br * bc;
  size_t dq = 3 * (size_t)bc * d;
  return (dkdv > dq ? dkdv : dq) * sizeof(float);
}

static int ocl_bwd_shrink(int n) {
  n /= 2;
  if (n >= 8) n -= n % 8;
  return n < 1 ? 1 : n;
}

/* The GPU layout (simd_width > 1; TPR = 8 work-items per row, threads = 8 * BC, the dQ kernel 8 * BR): local
 * floats, the larger of dkdv Ks, Vs 2*BC*(D+1) + Qs, dOs 2*BR*(D+1) + P, dS 2*BC*(BR+1) + lse2, Di 2*BR and dq
 * 2*BR*(D+1) + 2*BC*(D+1) + dS BR*(BC+1). Br = Bc = 32 (256 work-items, 8 scores per work-item per block; at
 * D = 64 about 41 KiB, within NVIDIA's 48), else as large as the group-size cap allows, multiples of 8; halve
 * the larger (Bc first) until the layout fits. When even 8 x 8 does not, the row layout (RPW = 1) below. */
static size_t ocl_bwd_split_bytes(int d, int br, int bc) {
  size_t rl = (size_t)d + 1;
  size_t dkdv = 2 * (size_t)bc * rl + 2 * (size_t)br * rl + 2 * (size_t)bc * (br + 1) + 2 * (size_t)br;
  size_t dq = 2 * (size_t)br * rl + 2 * (size_t)bc * rl + (size_t)br * (bc + 1);
  return (dkdv > dq ? dkdv : dq) * sizeof(float);
}

static int ocl_bwd_split(const fa_tile_limits *lim, int d, fa_tiles *out) {
  int n = lim->max_group_size / 8;
  if (n > 32) n = 32;
  n -= n % 8;
  if (n < 8) return 0;
  int br = n, bc = n;
  while (ocl_bwd_split_bytes(d, br, bc) > lim->local_mem_bytes) {
    if (bc >= br && bc > 8)
      bc = (bc / 2) - (bc / 2) % 8;
    else if (br > 8)
      br = (br / 2) - (br / 2) % 8;
    else
      return 0;
  }
  /* Two rows per work-item where the tiles allow: half the local-memory loads per FMA. Measured on the H100
   * (f16, S 16384): D 64 8.7 -> 13.0 TFLOP/s backward (32 x 32), D 128 7.9 -> 10.1 (16 x 16). */
  int rpw = br % 16 == 0 && bc % 16 == 0 ? 2 : 1;
  out->block_q = br;
  out->block_k = bc;
  out->threads = 8 * bc / rpw;
  out->local_mem_bytes = ocl_bwd_split_bytes(d, br, bc);
  return 1;
}

fa_status fa_tiles_opencl_backward(const fa_tile_limits *lim, int head_dim, fa_tiles *out) {
  if (head_dim <= 0 || head_dim % 8 != 0 || head_dim > 256) return FA_ERROR_UNSUPPORTED;
  if (lim->simd_width > 1 && ocl_bwd_split(lim, head_dim, out)) return FA_SUCCESS;
  int br, bc;
  fa_tiles_paper(lim->local_mem_bytes, head_dim, &br, &bc);
  const int cap = lim->max_group_size;
  if (cap < 1) return FA_ERROR_UNSUPPORTED;
  if (br > 64) br = 64;
  if (bc > 128) bc = 128;
  if (br > cap) br = cap;
  if (bc > cap) bc = cap;
  if (br >= 8) br -= br % 8;
  if (bc >= 8) bc -= bc % 8;
  while (ocl_bwd_bytes(head_dim, br, bc) > lim->local_mem_bytes) {
    if (bc > br && bc > 1)
      bc = ocl_bwd_shrink(bc);
    else if (br > 1)
      br = ocl_bwd_shrink(br);
    else
      return FA_ERROR_UNSUPPORTED;
  }
  int rpw = 1;
  if (lim->simd_width == 1) rpw = br % 4 == 0 && bc % 4 == 0 ? 4 : br % 2 == 0 && bc % 2 == 0 ? 2 : 1;
  out->block_q = br;
  out->block_k = bc;
  out->threads = bc / rpw;
  out->local_mem_bytes = ocl_bwd_bytes(head_dim, br, bc);
  return FA_SUCCESS;
}

/* CUDA backward (kernels/flash_bwd.cu), the CUDA-core kernels flash_bwd_dkdv_simt and flash_bwd_dq_simt:
 * 256 threads; shared floats K and V BN x (D + 4), Q and dO BM x (D + 4), P and dS BM x (BN + 4), and two
 * per-row values (lse, di) BM. BN <= 64 (32 for D > 128) keeps a thread's dK and dV accumulators at
 * BN D / 128 <= 64 floats; BM = 64 (D <= 64), 32 (D <= 128) or 16 keeps the layout near 100-120 KiB at the
 * H100's budget. Both start below the paper's Bc = ceil(M / 4d), Br = min(Bc, d), are powers of two (the
 * thread layouts divide them), and the larger is halved until the layout fits; the smallest (1 x 1) needs
 * about 4.2 KiB at D = 256. The dtype does not change this layout: 16-bit inputs are widened to float32. */
static size_t cuda_bwd_simt_bytes(int d, int br, int bc) {
  size_t rows = (size_t)d + 4, ps = (size_t)bc + 4;
  size_t floats = 2 * (size_t)bc * rows + 2 * (size_t)br * rows + 2 * (size_t)br * ps + 2 * (size_t)br;
  return floats * sizeof(float);
}

/* The tensor-core kernel flash_bwd_dkdv_tc (F16/BF16): BN keys a block (block_k), BM queries a step
 * (block_q), `warps` warps; 16-bit K, V [BN] and Q, dO [BM] with rows of Dp + 8 elements (Dp = D rounded up
 * to 16, or to 32 when a warp owns half of the columns), dS BM x (BN + 8), and float lse, di [BM]. A warp
 * holds 16 keys x Dp / splits of dK and dV in registers (splits = warps / (BN / 16)), at most 16 x 128 each.
 * 46.5 KiB at D = 64, 77.5 KiB at D = 128 (64 x 64, 4 warps); 141.5 KiB at D = 256 (64 x 64, 8 warps),
 * 68.75 KiB (32 x 32, 4 warps). */
size_t fa_tiles_cuda_backward_tc_bytes(int d, int bm, int bn, int warps, int buffers) {
  const int split = warps / (bn / 16) > 1 || warps / (bm / 16) > 1;
  const size_t ds = (size_t)(split ? (d + 31) / 32 * 32 : (d + 15) / 16 * 16) + 8;
  const size_t halves = 2 * (size_t)bn * ds + 2 * (size_t)buffers * bm * ds + (size_t)bm * (bn + 8);
  return (halves * 2 + 15) / 16 * 16 + 2 * (size_t)buffers * bm * sizeof(float);
}

fa_status fa_tiles_cuda_backward_tc(const fa_tile_limits *lim, int head_dim, fa_tiles *out) {
  /* {BM, BN, warps} by preference: a warp's own 16 x D of dK and dV while D <= 128 (the tuned shape), else
   * 64 x 64 with two warps per key group, then smaller tiles for smaller budgets (sm_86/89: 99 KiB). */
  static const int shapes[][3] = {{64, 64, 4}, {64, 64, 8}, {64, 32, 4}, {32, 32, 4}};
  if (head_dim <= 0 || head_dim % 8 != 0 || head_dim > 256) return FA_ERROR_UNSUPPORTED;
  for (int i = head_dim <= 128 ? 0 : 1; i < 4; i++) {
    const int bm = shapes[i][0], bn = shapes[i][1], warps = shapes[i][2];
    const size_t bytes = fa_tiles_cuda_backward_tc_bytes(head_dim, bm, bn, warps, 1);
    if ((size_t)lim->max_group_size < (size_t)warps * 32 || bytes > lim->local_mem_bytes) continue;
    out->block_q = bm;
    out->block_k = bn;
    out->threads = warps * 32;
    out->local_mem_bytes = bytes;
    return FA_SUCCESS;
  }
  return FA_ERROR_UNSUPPORTED;
}

fa_status fa_tiles_cuda_backward(const fa_tile_limits *lim, int head_dim, fa_dtype dtype, fa_tiles *out) {
  if (head_dim <= 0 || head_dim % 8 != 0 || head_dim > 256) return FA_ERROR_UNSUPPORTED;
  if ((dtype == FA_F16 || dtype == FA_BF16) && fa_tiles_cuda_backward_tc(lim, head_dim, out) == FA_SUCCESS)
    return FA_SUCCESS;
  if (lim->max_group_size < 256) return FA_ERROR_UNSUPPORTED;
  int pq, pk;
  fa_tiles_paper(lim->local_mem_bytes, head_dim, &pq, &pk);
  int bc = head_dim <= 128 ? 64 : 32, br = head_dim <= 64 ? 64 : head_dim <= 128 ? 32 : 16;
  if (pk < bc) bc = pk;
  if (pq < br) br = pq;
  while (bc & (bc - 1)) bc &= bc - 1;
  while (br & (br - 1)) br &= br - 1;
  while (cuda_bwd_simt_bytes(head_dim, br, bc) > lim->local_mem_bytes) {
    if (br >= bc && br > 1) br /= 2;
    else if (bc > 1) bc /= 2;
    else if (br > 1) br /= 2;
    else return FA_ERROR_UNSUPPORTED;
  }
  out->block_q = br;
  out->block_k = bc;
  out->threads = 256;
  out->local_mem_bytes = cuda_bwd_simt_bytes(head_dim, br, bc);
  return FA_SUCCESS;
}

/* Forward attention on NVIDIA tensor cores from OpenCL C: FlashAttention-2's structure (kernels/flash_fwd.cu,
 * flash_fwd_tc) with inline PTX mma.sync.m16n8k16, which NVIDIA's OpenCL compiler accepts (sm_80+).
 *
 *   q [B, Sq, Hq, D], k and v [B, Sk, Hkv, D] (f16 or bf16), o like q, lse [B, Hq, Sq] float32 (natural log);
 *   any strides (elements, 64-bit), the last dimension contiguous. Same arguments as flash_fwd.cl.
 *   Grid: (ceil(Sq / BM) * 128, Hq, B); groups of 128 work-items = 4 warps (NVIDIA puts 32 consecutive local
 *   ids in a warp), 16 query rows per warp. Query head h reads kv head h / group. Causal (bottom-right): key j
 *   masked for row i when j > i + Sk - Sq; tiles wholly above the block's last diagonal are skipped, only
 *   tiles crossing a diagonal (or Sk) are masked. A row with every key masked gets o = 0 and lse = -inf.
 *
 * Per group and key tile: K (BN x DP, row-major, 16-bit) and V transposed (DP x BN) in local memory; each
 * warp computes its 16 x BN scores S = Q K^T on tensor cores with Q fragments held in registers (read once
 * from local memory, where Q is staged in K's space), runs the online softmax on the accumulator fragments
 * (a row's values sit in the 4 lanes of a quad: reduced with shfl.sync), packs P to 16 bits as the A operand
 * and accumulates O += P V in float32 fragments. No cp.async or ldmatrix (those need .shared addresses,
 * which OpenCL pointers do not give): fragments are 32-bit loads from local memory, conflict-free thanks to
 * the row padding of 8 elements.
 *
 * Fragment layouts (PTX ISA, mma.m16n8k16 with .f16/.bf16 inputs; g = lane / 4, t = lane % 4):
 *   A 16x16 row: a[0] = (row g, cols 2t, 2t+1), a[1] = (g+8, 2t..), a[2] = (g, 2t+8..), a[3] = (g+8, 2t+8..)
 *   B 16x8 col:  b0 = (k 2t, 2t+1; col g), b1 = (k 2t+8, 2t+9; col g)
 *   C 16x8:      c[0], c[1] = (row g, cols 2t, 2t+1), c[2], c[3] = (row g+8, cols 2t, 2t+1)
 *   Each 32-bit register holds two 16-bit values, the lower index in the low half.
 *
 * Defines: FA_DTYPE (1 f16, 2 bf16), HEAD_DIM (multiple of 8, <= 128), BLOCK_N (multiple of 16),
 * FA_ALIGNED (1: every offset and row stride of q, k, v is a multiple of 8 elements, tiles move as 16-byte
 * vectors; 0: element by element), FA_NV_EMULATE (1: mma, shfl and the 16-bit packing done in plain OpenCL C
 * through local memory, so that the fragment bookkeeping can be tested on a CPU OpenCL; slow).
 * FA_BLOCK_MASK, FA_DROPOUT (0 or 1): the block-sparse mask and dropout of kernels/masks.h (put before this
 * file by the host), as in flash_fwd.cl: the arguments after scale_log2 (none when both are 0: the dense
 * kernel as it was); each key tile classified over the group's 64 rows (fa_block_tile, uniform), skipped
 * before any load when no block of it is on, masked score by score when some are; dropout zeroes P after the
 * row sums are taken, one Philox call per n-tile per thread (its four accumulators are one masks.h group),
 * and scales the final 1/l by 1/(1-p). */

#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif
#ifndef BLOCK_N
#error "BLOCK_N must be defined"
#endif
#if FA_DTYPE != 1 && FA_DTYPE != 2
#error "flash_fwd_nv needs FA_DTYPE 1 (f16) or 2 (bf16)"
#endif
#ifndef FA_ALIGNED
#define FA_ALIGNED 0
#endif
#ifndef FA_NV_EMULATE
#define FA_NV_EMULATE 0
#endif

#define BM 64 /* query rows per group */
#define NTHREADS 128
#define BN BLOCK_N
#define DP ((HEAD_DIM + 15) / 16 * 16) /* head dim padded to the mma's k of 16 (zero columns) */
#define KS (DP + 8) /* row stride of Q and K in local memory, elements: the 8 rows of a fragment load start 4
                       banks apart, so 8 rows x 4 lanes hit 32 different banks */
#define VS (BN + 8) /* row stride of V^T, same reason */
#define CH (DP / 8) /* 8-element chunks per row of Q / K / V */

#if BN % 16 != 0 || BN > BM
#error "BLOCK_N must be a multiple of 16 and at most 64"
#endif

#ifndef FA_BLOCK_MASK
#define FA_BLOCK_MASK 0
#endif
#ifndef FA_DROPOUT
#define FA_DROPOUT 0
#endif
#if FA_BLOCK_MASK || FA_DROPOUT
/* The same arguments as flash_fwd.cl's (cl_flash.c's fa_cl_mask_args sets both). */
#define FA_MASK_ARGS                                                                                             \
  , __global const uchar *bmask, long bm_off, long bm_sb, long bm_sh, long bm_sr, long bm_sc, int block_q,      \
      int block_k, ulong drop_seed, uint drop_offset, uint drop_threshold, float drop_scale
#else
#define FA_MASK_ARGS
#endif

/* ---- the warp-level primitives ---- */

#if !FA_NV_EMULATE

/* d += a b, 16x16 (row) by 16x8 (col), 16-bit inputs, float32 accumulators. Not volatile: a pure function
 * of its operands, which the compiler may schedule freely (as flash_fwd.cu's). */
inline void mma16816(float *d, const uint *a, uint b0, uint b1) {
  float d0 = d[0], d1 = d[1], d2 = d[2], d3 = d[3];
#if FA_DTYPE == 2
  __asm__("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%10,%11,%12,%13};"
               : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(d0), "f"(d1), "f"(d2), "f"(d3));
#else
  __asm__("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%10,%11,%12,%13};"
               : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(d0), "f"(d1), "f"(d2), "f"(d3));
#endif
}

/* x from lane (lane ^ mask) of the warp. */
inline float shfl_xor(float x, int mask) {
  uint r;
  __asm__ __volatile__("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=r"(r) : "r"(as_uint(x)), "r"(mask));
  return as_float(r);
}

/* Two floats as one register of two 16-bit values, lo in the low half (cvt packs its first source high). */
inline uint pack2(float lo, float hi) {
  uint r;
#if FA_DTYPE == 2
  __asm__("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
#else
  __asm__("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
#endif
  return r;
}

#define MMA(d, a, b0, b1) mma16816(d, a, b0, b1)
#define SHFL_XOR(x, m) shfl_xor(x, m)
/* ex2.approx: relative error near 2^-22, far below the 16-bit inputs' rounding; ex2(-inf) = +0. */
#define EXP2(x) native_exp2(x)

#else /* FA_NV_EMULATE: the same operations with local-memory exchanges; every call is made by the whole
         group in uniform control flow, so barriers are legal. */

inline ushort to16(float x) {
#if FA_DTYPE == 2
  return fa_f32_to_bf16(x);
#else
  ushort h[1];
  vstore_half_rte(x, 0, (__private half *)h);
  return h[0];
#endif
}

inline float from16(uint h) {
#if FA_DTYPE == 2
  return as_float((h & 0xffffu) << 16);
#else
  ushort b[1] = {(ushort)h};
  return vload_half(0, (const __private half *)b);
#endif
}

inline uint pack2(float lo, float hi) { return (uint)to16(lo) | ((uint)to16(hi) << 16); }

/* scratch: 6 words per work-item (a[0..3], b0, b1). */
inline void mma_emul(float *d, const uint *a, uint b0, uint b1, __local uint *scratch) {
  const int lid = get_local_id(0), lane = lid & 31, g = lane >> 2, t = lane & 3;
  __local uint *w = scratch + (lid - lane) * 6; /* this warp's 32 x 6 words */
  for (int x = 0; x < 4; x++) w[lane * 6 + x] = a[x];
  w[lane * 6 + 4] = b0, w[lane * 6 + 5] = b1;
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int i = 0; i < 4; i++) {
    const int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
    float acc = 0.0f;
    for (int k = 0; k < 16; k++) {
      /* A[row][k]: lane (row % 8) * 4 + (k % 8) / 2, register (row >= 8) + 2 (k >= 8), half k & 1 */
      uint ar = w[((row & 7) * 4 + (k & 7) / 2) * 6 + (row >> 3) + 2 * (k >> 3)];
      /* B[k][col]: lane col * 4 + (k % 8) / 2, register 4 + (k >= 8), half k & 1 */
      uint br = w[(col * 4 + (k & 7) / 2) * 6 + 4 + (k >> 3)];
      acc += from16((k & 1) ? ar >> 16 : ar) * from16((k & 1) ? br >> 16 : br);
    }
    d[i] += acc;
  }
  barrier(CLK_LOCAL_MEM_FENCE);
}

inline float shfl_emul(float x, int mask, __local uint *scratch) {
  const int lid = get_local_id(0);
  scratch[lid] = as_uint(x);
  barrier(CLK_LOCAL_MEM_FENCE);
  float r = as_float(scratch[lid ^ mask]);
  barrier(CLK_LOCAL_MEM_FENCE);
  return r;
}

#define MMA(d, a, b0, b1) mma_emul(d, a, b0, b1, emul)
#define SHFL_XOR(x, m) shfl_emul(x, m, emul)
#define EXP2(x) exp2(x)

#endif

/* Two consecutive 16-bit elements of local memory (an even element index) as one register. */
inline uint ld32(const __local ushort *p) { return *(const __local uint *)p; }

/* Rows [0, ROWS) of a tile at global element `base` (row stride `stride`) into local memory, row-major with
 * row stride KS: rows >= valid and columns >= HEAD_DIM become zeros, so padding adds nothing to products. */
inline void load_rows(__local ushort *s, const __global ushort *gm, long base, long stride, int rows, int valid) {
  const int lid = get_local_id(0);
#if FA_ALIGNED
  for (int x = lid; x < rows * CH; x += NTHREADS) {
    const int r = x / CH, c = x - r * CH;
    uint4 val = (uint4)(0u);
    if (r < valid && c * 8 < HEAD_DIM) val = *(const __global uint4 *)(gm + base + r * stride + c * 8);
    *(__local uint4 *)(s + r * KS + c * 8) = val;
  }
#else
  for (int x = lid; x < rows * DP; x += NTHREADS) {
    const int r = x / DP, c = x - r * DP;
    s[r * KS + c] = (r < valid && c < HEAD_DIM) ? gm[base + r * stride + c] : (ushort)0;
  }
#endif
}

/* The same for V, stored transposed: element (key r, column c) at s[c * VS + r]. */
inline void load_rows_t(__local ushort *s, const __global ushort *gm, long base, long stride, int valid) {
  const int lid = get_local_id(0);
#if FA_ALIGNED
  for (int x = lid; x < BN * CH; x += NTHREADS) {
    const int r = x / CH, c = x - r * CH;
    uint4 val = (uint4)(0u);
    if (r < valid && c * 8 < HEAD_DIM) val = *(const __global uint4 *)(gm + base + r * stride + c * 8);
    __local ushort *d = s + c * 8 * VS + r;
    d[0] = (ushort)val.s0, d[VS] = (ushort)(val.s0 >> 16);
    d[2 * VS] = (ushort)val.s1, d[3 * VS] = (ushort)(val.s1 >> 16);
    d[4 * VS] = (ushort)val.s2, d[5 * VS] = (ushort)(val.s2 >> 16);
    d[6 * VS] = (ushort)val.s3, d[7 * VS] = (ushort)(val.s3 >> 16);
  }
#else
  for (int x = lid; x < BN * DP; x += NTHREADS) {
    const int r = x / DP, c = x - r * DP;
    s[c * VS + r] = (r < valid && c < HEAD_DIM) ? gm[base + r * stride + c] : (ushort)0;
  }
#endif
}

__kernel __attribute__((reqd_work_group_size(NTHREADS, 1, 1))) void
flash_fwd_nv(__global const ushort *q, long q_off, long q_sb, long q_ss, long q_sh,
             __global const ushort *k, long k_off, long k_sb, long k_ss, long k_sh,
             __global const ushort *v, long v_off, long v_sb, long v_ss, long v_sh,
             __global fa_t *o, long o_off, long o_sb, long o_ss, long o_sh,
             __global float *lse, long l_off, long l_sb, long l_sh, long l_ss, int has_lse,
             int Sq, int Sk, int group, int causal, float scale_log2 FA_MASK_ARGS) {
  /* K (and Q before the loop) then V^T; uint4 so that 16-byte accesses are aligned. */
  __local uint4 sk4[BM * KS / 8];
  __local uint4 sv4[DP * VS / 8];
  __local ushort *sk = (__local ushort *)sk4;
  __local ushort *sv = (__local ushort *)sv4;
#if FA_NV_EMULATE
  __local uint emul[NTHREADS * 6];
#endif

  const int lid = get_local_id(0), lane = lid & 31, warp = lid >> 5;
  const int g = lane >> 2, t = lane & 3;
  /* Causal groups further down have more keys: start those first so that the tail of the grid is short. */
  const int mb = causal ? (int)(get_num_groups(0) - 1 - get_group_id(0)) : (int)get_group_id(0);
  const int h = get_group_id(1), b = get_group_id(2);
  const int hk = h / group;
  const int m0 = mb * BM;
  const long diag = (long)Sk - Sq; /* row i sees keys j <= i + diag */
  const long qb = q_off + b * q_sb + h * q_sh + (long)m0 * q_ss;
  const long kb = k_off + b * k_sb + hk * k_sh;
  const long vb = v_off + b * v_sb + hk * v_sh;
#if FA_BLOCK_MASK
  const __global uchar *mbase = bmask + bm_off + b * bm_sb + h * bm_sh; /* this batch and head's block (0, 0) */
#endif
#if FA_DROPOUT
  const uint bh = (uint)b * get_num_groups(1) + h; /* the grid's dimension 1 is Hq */
#endif
#if FA_DROPOUT && !FA_BLOCK_MASK /* the other feature's arguments, unused in this variant */
  (void)bmask, (void)bm_off, (void)bm_sb, (void)bm_sh, (void)bm_sr, (void)bm_sc, (void)block_q, (void)block_k;
#elif FA_BLOCK_MASK && !FA_DROPOUT
  (void)drop_seed, (void)drop_offset, (void)drop_threshold, (void)drop_scale;
#endif

  /* Key tiles the block needs: up to the last row's causal limit; 0 when every row is masked. */
  long max_key = (long)Sk - 1;
  if (causal) max_key = min(max_key, (long)min(m0 + BM, Sq) - 1 + diag);
  const int n_tiles = max_key < 0 ? 0 : (int)(max_key / BN) + 1;

  /* Q fragments into registers, through K's local space. */
  load_rows(sk, q, qb, q_ss, BM, min(BM, Sq - m0));
  barrier(CLK_LOCAL_MEM_FENCE);
  uint qf[DP / 16][4];
  {
    const __local ushort *qr = sk + (warp * 16 + g) * KS + 2 * t;
#pragma unroll
    for (int kk = 0; kk < DP / 16; kk++) {
      qf[kk][0] = ld32(qr + kk * 16);
      qf[kk][1] = ld32(qr + 8 * KS + kk * 16);
      qf[kk][2] = ld32(qr + kk * 16 + 8);
      qf[kk][3] = ld32(qr + 8 * KS + kk * 16 + 8);
    }
  }

  float oacc[DP / 8][4];
#pragma unroll
  for (int nd = 0; nd < DP / 8; nd++) oacc[nd][0] = oacc[nd][1] = oacc[nd][2] = oacc[nd][3] = 0.0f;
  /* Running max (base 2, scaled) and per-lane partial sums of rows row0 and row0 + 8. Finite start: masked
   * scores are -inf and -inf - (-inf) never occurs. */
  float m[2] = {-FLT_MAX, -FLT_MAX}, l[2] = {0.0f, 0.0f};
  const int row0 = m0 + warp * 16 + g;

#if FA_BLOCK_MASK
  /* Classes of the next NTHREADS key tiles, one classified by each work-item: at low densities most tiles are
   * skipped, and walking them one mask load after another would cost more than the tiles computed. */
  __local uchar tile_class[NTHREADS];
#endif
  for (int j = 0; j < n_tiles; j++) {
    const int n0 = j * BN;
#if FA_BLOCK_MASK
    if (j % NTHREADS == 0) {
      barrier(CLK_LOCAL_MEM_FENCE); /* the previous chunk's classes read */
      const int jc = j + lid;
      tile_class[lid] = (uchar)(jc < n_tiles ? fa_block_tile(mbase, bm_sr, bm_sc, block_q, block_k, m0,
                                                             min(m0 + BM, Sq), jc * BN, min(jc * BN + BN, Sk))
                                             : FA_TILE_SKIP);
      barrier(CLK_LOCAL_MEM_FENCE);
    }
    /* The same value in every work-item: a skipped tile skips its barriers uniformly, and the next tile's
     * first barrier does what this one's would have. */
    const int tile = tile_class[j % NTHREADS];
    if (tile == FA_TILE_SKIP) continue;
#endif
    barrier(CLK_LOCAL_MEM_FENCE); /* Q's fragments read (first tile) and the previous tile's readers done */
    load_rows(sk, k, kb + (long)n0 * k_ss, k_ss, BN, min(BN, Sk - n0));
    load_rows_t(sv, v, vb + (long)n0 * v_ss, v_ss, min(BN, Sk - n0));
    barrier(CLK_LOCAL_MEM_FENCE);

    /* S = Q K^T for this warp's 16 rows and the tile's BN keys: B[k][n] = K[key n][d k]. */
    float s[BN / 8][4];
#pragma unroll
    for (int nt = 0; nt < BN / 8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < DP / 16; kk++) {
#pragma unroll
      for (int nt = 0; nt < BN / 8; nt++) {
        const __local ushort *kr = sk + (nt * 8 + g) * KS + kk * 16 + 2 * t;
        MMA(s[nt], qf[kk], ld32(kr), ld32(kr + 8));
      }
    }

    /* Scale into base 2, then mask keys past Sk and, on diagonal tiles, above the causal limit. */
#pragma unroll
    for (int nt = 0; nt < BN / 8; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) s[nt][e] *= scale_log2;
    if ((long)n0 + BN > Sk || (causal && (long)n0 + BN - 1 > (long)m0 + diag)) {
#pragma unroll
      for (int rr = 0; rr < 2; rr++) {
        long lim = (long)Sk - 1;
        if (causal) lim = min(lim, (long)(row0 + rr * 8) + diag);
#pragma unroll
        for (int nt = 0; nt < BN / 8; nt++) {
          const long col = n0 + nt * 8 + 2 * t;
          if (col > lim) s[nt][2 * rr] = -INFINITY;
          if (col + 1 > lim) s[nt][2 * rr + 1] = -INFINITY;
        }
      }
    }
#if FA_BLOCK_MASK
    /* Tiles the mask covers in part: score by score, like the causal mask (rows past Sq and keys past Sk have
     * no mask byte; those keys are -inf already). */
    if (tile == FA_TILE_PARTIAL) {
#pragma unroll
      for (int rr = 0; rr < 2; rr++) {
        const int row = row0 + rr * 8;
        if (row < Sq) {
#pragma unroll
          for (int nt = 0; nt < BN / 8; nt++) {
            const int col = n0 + nt * 8 + 2 * t;
            if (col < Sk && !fa_block_keep(mbase, bm_sr, bm_sc, block_q, block_k, row, col)) s[nt][2 * rr] = -INFINITY;
            if (col + 1 < Sk && !fa_block_keep(mbase, bm_sr, bm_sc, block_q, block_k, row, col + 1))
              s[nt][2 * rr + 1] = -INFINITY;
          }
        }
      }
    }
#endif

    /* Online softmax on the fragments: a row's 8 columns of an n-tile lie in the 4 lanes of a quad. */
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < BN / 8; nt++) mx = fmax(mx, fmax(s[nt][2 * rr], s[nt][2 * rr + 1]));
      mx = fmax(mx, SHFL_XOR(mx, 1));
      mx = fmax(mx, SHFL_XOR(mx, 2));
      const float m_new = fmax(m[rr], mx);
      const float alpha = EXP2(m[rr] - m_new); /* both finite */
      m[rr] = m_new;
      float sum = 0.0f;
#pragma unroll
      for (int nt = 0; nt < BN / 8; nt++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
          const float pe = EXP2(s[nt][2 * rr + e] - m_new);
          s[nt][2 * rr + e] = pe;
          sum += pe;
        }
      l[rr] = l[rr] * alpha + sum; /* the quad's lanes are summed once, at the end */
#pragma unroll
      for (int nd = 0; nd < DP / 8; nd++) oacc[nd][2 * rr] *= alpha, oacc[nd][2 * rr + 1] *= alpha;
    }
#if FA_DROPOUT
    /* P for O += P V loses its dropped scores (l above has them all). row0 % 16 == g < 8 and the n-tile's
     * column n0 + nt*8 + 2t is even, so s[nt][0..3] = rows row0, row0 + 8 x keys col, col + 1 are exactly the
     * four words of one fa_dropout_words() call, in its order. */
#pragma unroll
    for (int nt = 0; nt < BN / 8; nt++)
      fa_dropout_fragment(drop_seed, drop_offset, drop_threshold, bh, (uint)row0, (uint)(n0 + nt * 8 + 2 * t), s[nt]);
#endif

    /* O += P V: the accumulators of key n-tiles 2 kb and 2 kb + 1 are exactly the A fragment of k-step kb;
     * B[k][n] = V[key k][d n] = V^T[n][k], two consecutive keys per register. */
#pragma unroll
    for (int kb2 = 0; kb2 < BN / 16; kb2++) {
      uint a[4];
      a[0] = pack2(s[2 * kb2][0], s[2 * kb2][1]);
      a[1] = pack2(s[2 * kb2][2], s[2 * kb2][3]);
      a[2] = pack2(s[2 * kb2 + 1][0], s[2 * kb2 + 1][1]);
      a[3] = pack2(s[2 * kb2 + 1][2], s[2 * kb2 + 1][3]);
#pragma unroll
      for (int nd = 0; nd < DP / 8; nd++) {
        const __local ushort *vr = sv + (nd * 8 + g) * VS + kb2 * 16 + 2 * t;
        MMA(oacc[nd], a, ld32(vr), ld32(vr + 8));
      }
    }
  }

  /* Epilogue: O / l, and lse = ln(sum exp(scale s)) = (m + log2 l) ln 2. */
#pragma unroll
  for (int rr = 0; rr < 2; rr++) {
    float lt = l[rr];
    lt += SHFL_XOR(lt, 1);
    lt += SHFL_XOR(lt, 2);
#if FA_DROPOUT
    const float inv = lt > 0.0f ? drop_scale / lt : 0.0f; /* kept P scaled by 1/(1-p) */
#else
    const float inv = lt > 0.0f ? 1.0f / lt : 0.0f;
#endif
    const int row = row0 + rr * 8;
    if (row < Sq) {
      const long ob = o_off + b * o_sb + h * o_sh + (long)row * o_ss;
#pragma unroll
      for (int nd = 0; nd < DP / 8; nd++)
        if (nd * 8 < HEAD_DIM) {
          const int col = nd * 8 + 2 * t;
          fa_store(o, ob + col, oacc[nd][2 * rr] * inv);
          fa_store(o, ob + col + 1, oacc[nd][2 * rr + 1] * inv);
        }
      if (has_lse && t == 0)
        lse[l_off + b * l_sb + h * l_sh + (long)row * l_ss] = lt > 0.0f ? (m[rr] + log2(lt)) * FA_LN2 : -INFINITY;
    }
  }
}

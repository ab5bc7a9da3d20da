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
 * Per group: K and V tiles (BN x DP, row-major, 16-bit) in local memory, one buffer each; each warp computes
 * its 16 x BN scores S = Q K^T on tensor cores with Q fragments held in registers (read once from global
 * memory), runs the online softmax on the accumulator fragments (a row's values sit in the 4 lanes of a quad:
 * reduced with shfl.sync), packs P to 16 bits as the A operand and accumulates O += P V in float32
 * fragments. FlashAttention-2's pipeline over the two buffers: V of tile j moves in while S = Q K_j^T and the
 * softmax run, K of tile j + 1 while O += P V_j runs (kernels/nv_warp.cl's nv_fetch / nv_put: cp.async, or
 * staged through registers), two barriers per tile. B operands through ldmatrix (K as is, V transposed on
 * the way) with FA_NV_LDMATRIX, else 32-bit (K) and paired 16-bit (V) local loads; rows padded by 8
 * elements, so either is free of bank conflicts.
 *
 * Fragment layouts (PTX ISA, mma.m16n8k16 with .f16/.bf16 inputs; g = lane / 4, t = lane % 4):
 *   A 16x16 row: a[0] = (row g, cols 2t, 2t+1), a[1] = (g+8, 2t..), a[2] = (g, 2t+8..), a[3] = (g+8, 2t+8..)
 *   B 16x8 col:  b0 = (k 2t, 2t+1; col g), b1 = (k 2t+8, 2t+9; col g)
 *   C 16x8:      c[0], c[1] = (row g, cols 2t, 2t+1), c[2], c[3] = (row g+8, cols 2t, 2t+1)
 *   Each 32-bit register holds two 16-bit values, the lower index in the low half.
 *
 * Defines: FA_DTYPE (1 f16, 2 bf16), HEAD_DIM (multiple of 8, <= 256), BLOCK_N (multiple of 16, <= 64; the host
 * takes 64 where K and V fit the local memory, 32 at D > 128 in NVIDIA's 48 KiB),
 * FA_ALIGNED (1: every offset and row stride of q, k, v is a multiple of 8 elements, tiles move as 16-byte
 * chunks; 0: element by element), FA_NV_LDMATRIX, FA_NV_CPASYNC (kernels/nv_warp.cl), FA_NV_EMULATE (1: the
 * warp primitives done in plain OpenCL C, so that the fragment bookkeeping can be tested on a CPU OpenCL; slow).
 * FA_BLOCK_MASK, FA_DROPOUT (0 or 1): the block-sparse mask and dropout of kernels/masks.h (put before this
 * file by the host), as in flash_fwd.cl: the arguments after scale_log2 (none when both are 0: the dense
 * kernel as it was); each key tile classified over the group's 64 rows (fa_block_tile, uniform), skipped
 * before any load when no block of it is on, masked score by score when some are; dropout zeroes P after the
 * row sums are taken, one Philox call per n-tile per thread (its four accumulators are one masks.h group),
 * and scales the final 1/l by 1/(1-p).
 * FA_INFER (0 or 1, not with the two above; kernels/nv_warp.cl): the inference options of kernels/masks.h, their
 * arguments (FA_INFER_ARGS) after scale_log2, as flash_fwd.cl's. Varlen: the grid's dimension 2 counts
 * sequences; a group takes its sequence's span and leaves when its rows start past it; q, o, lse and k, v are
 * then the packed token axes (batch 0). The key loop walks the band of the group's 64 rows only (tiles outside
 * it are never loaded: a window of W keys costs about (W + BM) / BN + 1 tiles), each tile classified with
 * fa_band_tile (uniform): FULL tiles take no per-score test. Softcap and ALiBi act on the base-2 scores. */

#ifndef BLOCK_N
#error "BLOCK_N must be defined"
#endif
#if FA_DTYPE != 1 && FA_DTYPE != 2
#error "flash_fwd_nv needs FA_DTYPE 1 (f16) or 2 (bf16)"
#endif

#define BM 64 /* query rows per group */
#define BN BLOCK_N

#if BN % 16 != 0 || BN > BM
#error "BLOCK_N must be a multiple of 16 and at most 64"
#endif

#ifndef FA_BLOCK_MASK
#define FA_BLOCK_MASK 0
#endif
/* FA_NV_STAGES 2: K and V of tile j + 1 move into a second buffer pair while tile j computes, one barrier per
 * tile (flash_fwd.cu's ring); 1: one K and one V buffer, FlashAttention-2's half-tile overlap above. The block
 * mask's walk takes 1. */
#ifndef FA_NV_STAGES
#define FA_NV_STAGES 1
#endif
#if FA_NV_STAGES != 1 && FA_NV_STAGES != 2
#error "FA_NV_STAGES must be 1 or 2"
#endif
#if FA_NV_STAGES == 2 && FA_BLOCK_MASK
#error "FA_NV_STAGES 2 does not take FA_BLOCK_MASK"
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

/* The warp-level primitives (MMA, SHFL_XOR, pack2, EXP2, FRAG_*, nv_fetch / nv_put) are kernels/nv_warp.cl's,
 * put before this file. */

__kernel __attribute__((reqd_work_group_size(NTHREADS, 1, 1))) void
flash_fwd_nv(__global const ushort *q, long q_off, long q_sb, long q_ss, long q_sh,
             __global const ushort *k, long k_off, long k_sb, long k_ss, long k_sh,
             __global const ushort *v, long v_off, long v_sb, long v_ss, long v_sh,
             __global fa_t *o, long o_off, long o_sb, long o_ss, long o_sh,
             __global float *lse, long l_off, long l_sb, long l_sh, long l_ss, int has_lse,
             int Sq_all, int Sk_all, int group, int causal, float scale_log2 FA_MASK_ARGS FA_INFER_ARGS) {
  /* K and V tiles (stage s of FA_NV_STAGES at s * 2 * BN * DS: K, then V); uint4 so that 16-byte accesses
   * are aligned. */
  __local uint4 kv4[FA_NV_STAGES * 2 * BN * DS / 8];
  __local ushort *sk = (__local ushort *)kv4, *sv = sk + BN * DS;
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
  NV_SEQ_SETUP(b)
#if FA_INFER
  if (m0 >= Sq) return; /* varlen: past this sequence's rows (the whole group: no barrier is left waiting) */
  const float slope2 = NV_SLOPE2(b, h);
#endif
  const long diag = (long)Sk - Sq; /* row i sees keys j <= i + diag */
  const long qb = q_off + bt * q_sb + h * q_sh + (long)(qfirst + m0) * q_ss;
  const long kb = k_off + bt * k_sb + hk * k_sh + (long)kfirst * k_ss;
  const long vb = v_off + bt * v_sb + hk * v_sh + (long)kfirst * v_ss;
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

  /* Key tiles j0 .. n_tiles - 1 the block needs: up to the last row's causal limit (with FA_INFER, the band of
   * the block's rows: from the first row's first key to the last row's last); none when every row is masked. */
#if FA_INFER
  const int qlast = min(m0 + BM, Sq);
  const int j0 = fa_band_lo(m0, Sq, Sk, wl) / BN, kend = fa_band_hi(qlast - 1, Sq, Sk, causal, wr);
  const int n_tiles = kend <= j0 * BN ? j0 : (kend + BN - 1) / BN;
#else
  const int j0 = 0;
  long max_key = (long)Sk - 1;
  if (causal) max_key = min(max_key, (long)min(m0 + BM, Sq) - 1 + diag);
  const int n_tiles = max_key < 0 ? 0 : (int)(max_key / BN) + 1;
#endif

  /* Q fragments straight into registers (local memory holds only K and V^T, so D = 256 fits). */
  uint qf[DP / 16][4];
  nv_a_frags(qf, DP / 16, 0, q, qb, q_ss, warp * 16, min(BM, Sq - m0));

  float oacc[DP / 8][4];
NV_UNROLL
  for (int nd = 0; nd < DP / 8; nd++) oacc[nd][0] = oacc[nd][1] = oacc[nd][2] = oacc[nd][3] = 0.0f;
  /* Running max (base 2, scaled) and per-lane partial sums of rows row0 and row0 + 8. Finite start: masked
   * scores are -inf and -inf - (-inf) never occurs. */
  float m[2] = {-FLT_MAX, -FLT_MAX}, l[2] = {0.0f, 0.0f};
  const int row0 = m0 + warp * 16 + g;
#if FA_INFER
  /* The keys [klo, khi) rows row0 and row0 + 8 see, once: per tile they cost registers the kernel lacks. */
  int klo[2], khi[2];
NV_UNROLL
  for (int rr = 0; rr < 2; rr++)
    klo[rr] = fa_band_lo(row0 + 8 * rr, Sq, Sk, wl), khi[rr] = fa_band_hi(row0 + 8 * rr, Sq, Sk, causal, wr);
#endif

  /* Staging registers of the tile on its way (FA_ALIGNED without cp.async; unused otherwise). */
  uint4 st[NV_STAGED(BN)];
#if FA_BLOCK_MASK
  /* Classes of the next NTHREADS key tiles, one classified by each work-item: at low densities most tiles are
   * skipped, and walking them one mask load after another would cost more than the tiles computed. */
  __local uchar tile_class[NTHREADS];
#elif FA_NV_STAGES == 2
  /* K and V of the first tile, in place before the loop; later ones are fetched a whole tile ahead. */
  if (j0 < n_tiles) {
    nv_fetch(st, sk, k, kb + (long)j0 * BN * k_ss, k_ss, BN, min(BN, Sk - j0 * BN));
    nv_put(st, sk, k, kb + (long)j0 * BN * k_ss, k_ss, BN, min(BN, Sk - j0 * BN));
    nv_fetch(st, sv, v, vb + (long)j0 * BN * v_ss, v_ss, BN, min(BN, Sk - j0 * BN));
    nv_put(st, sv, v, vb + (long)j0 * BN * v_ss, v_ss, BN, min(BN, Sk - j0 * BN));
  }
  barrier(CLK_LOCAL_MEM_FENCE);
#else
  /* K of the first tile; later ones are fetched during the previous tile's O += P V. */
  if (j0 < n_tiles) nv_fetch(st, sk, k, kb + (long)j0 * BN * k_ss, k_ss, BN, min(BN, Sk - j0 * BN));
#endif
  for (int j = j0; j < n_tiles; j++) {
    const int n0 = j * BN;
#if FA_NV_STAGES == 2
    /* This tile's stage, and the next tile into the other one: its readers (tile j - 1) passed the barrier
     * that ended their iteration. With cp.async the copies run under this tile's work and nv_put at the end
     * waits for them; otherwise they are done here, at once. */
    const __local ushort *skj = sk + ((j - j0) & 1) * 2 * BN * DS, *svj = skj + BN * DS;
    __local ushort *skn = sk + ((j - j0 + 1) & 1) * 2 * BN * DS, *svn = skn + BN * DS;
    const int n1 = n0 + BN, more = j + 1 < n_tiles;
    if (more) {
      nv_fetch(st, skn, k, kb + (long)n1 * k_ss, k_ss, BN, min(BN, Sk - n1));
#if !(FA_ALIGNED && FA_NV_CPASYNC)
      nv_put(st, skn, k, kb + (long)n1 * k_ss, k_ss, BN, min(BN, Sk - n1));
#endif
      nv_fetch(st, svn, v, vb + (long)n1 * v_ss, v_ss, BN, min(BN, Sk - n1));
#if !(FA_ALIGNED && FA_NV_CPASYNC)
      nv_put(st, svn, v, vb + (long)n1 * v_ss, v_ss, BN, min(BN, Sk - n1));
#endif
    }
#else
    const __local ushort *skj = sk, *svj = sv;
#endif
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
    /* The next tile visited is not known ahead: K is fetched here (the buffer's readers, the previous tile's
     * S, are done: the barrier before its O += P V). */
    nv_fetch(st, sk, k, kb + (long)n0 * k_ss, k_ss, BN, min(BN, Sk - n0));
#endif
#if FA_NV_STAGES == 1
    nv_put(st, sk, k, kb + (long)n0 * k_ss, k_ss, BN, min(BN, Sk - n0));
    barrier(CLK_LOCAL_MEM_FENCE); /* K_j in place; the previous tile's readers of V are done */
    nv_fetch(st, sv, v, vb + (long)n0 * v_ss, v_ss, BN, min(BN, Sk - n0));
#endif

    /* S = Q K^T for this warp's 16 rows and the tile's BN keys: B[k][n] = K[key n][d k]. */
    const __local ushort *kl = NV_LANE_B(skj), *vl = NV_LANE_BT(svj); /* this lane's fragment pointers */
    float s[BN / 8][4];
NV_UNROLL
    for (int nt = 0; nt < BN / 8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
NV_UNROLL
    for (int kk = 0; kk < DP / 16; kk++) {
NV_UNROLL
      for (int nn = 0; nn < BN / 8; nn += 2) {
        uint bk[4];
        FRAG_B(bk, kl, nn * 8, kk * 16);
        MMA(s[nn], qf[kk], bk[0], bk[1]);
        MMA(s[nn + 1], qf[kk], bk[2], bk[3]);
      }
    }

    /* Scale into base 2, then mask keys past Sk and, on diagonal tiles, above the causal limit. */
NV_UNROLL
    for (int nt = 0; nt < BN / 8; nt++)
NV_UNROLL
      for (int e = 0; e < 4; e++) s[nt][e] *= scale_log2;
#if FA_INFER
    /* Softcap and ALiBi on every score (the masked ones become -inf below), then the band's per-score test on
     * the tiles it covers in part (keys past Sk included: a tile reaching past Sk is never FULL). */
    if (softcap2 > 0.0f || slope2 != 0.0f) {
NV_UNROLL
      for (int nt = 0; nt < BN / 8; nt++)
NV_UNROLL
        for (int e = 0; e < 4; e++) {
          float gf;
          s[nt][e] = nv_mod_score(s[nt][e], softcap2, slope2, (long)(row0 + 8 * (e >> 1)) + diag,
                                  n0 + nt * 8 + 2 * t + (e & 1), &gf);
        }
    }
    if (fa_band_tile(m0, qlast, n0, n0 + BN, Sq, Sk, causal, wl, wr) != FA_TILE_FULL) {
NV_UNROLL
      for (int rr = 0; rr < 2; rr++) {
        const int lo = klo[rr] - n0, hi = khi[rr] - n0;
NV_UNROLL
        for (int nt = 0; nt < BN / 8; nt++) {
          const int col = nt * 8 + 2 * t;
          if (col < lo || col >= hi) s[nt][2 * rr] = -INFINITY;
          if (col + 1 < lo || col + 1 >= hi) s[nt][2 * rr + 1] = -INFINITY;
        }
      }
    }
#else
    if ((long)n0 + BN > Sk || (causal && (long)n0 + BN - 1 > (long)m0 + diag)) {
NV_UNROLL
      for (int rr = 0; rr < 2; rr++) {
        long lim = (long)Sk - 1;
        if (causal) lim = min(lim, (long)(row0 + rr * 8) + diag);
NV_UNROLL
        for (int nt = 0; nt < BN / 8; nt++) {
          const long col = n0 + nt * 8 + 2 * t;
          if (col > lim) s[nt][2 * rr] = -INFINITY;
          if (col + 1 > lim) s[nt][2 * rr + 1] = -INFINITY;
        }
      }
    }
#endif
#if FA_BLOCK_MASK
    /* Tiles the mask covers in part: score by score, like the causal mask (rows past Sq and keys past Sk have
     * no mask byte; those keys are -inf already). */
    if (tile == FA_TILE_PARTIAL) {
NV_UNROLL
      for (int rr = 0; rr < 2; rr++) {
        const int row = row0 + rr * 8;
        if (row < Sq) {
NV_UNROLL
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
NV_UNROLL
    for (int rr = 0; rr < 2; rr++) {
      float mx = -INFINITY;
NV_UNROLL
      for (int nt = 0; nt < BN / 8; nt++) mx = fmax(mx, fmax(s[nt][2 * rr], s[nt][2 * rr + 1]));
      mx = fmax(mx, SHFL_XOR(mx, 1));
      mx = fmax(mx, SHFL_XOR(mx, 2));
      const float m_new = fmax(m[rr], mx);
      const float alpha = EXP2(m[rr] - m_new); /* both finite */
      m[rr] = m_new;
      float sum = 0.0f;
NV_UNROLL
      for (int nt = 0; nt < BN / 8; nt++)
NV_UNROLL
        for (int e = 0; e < 2; e++) {
          const float pe = EXP2(s[nt][2 * rr + e] - m_new);
          s[nt][2 * rr + e] = pe;
          sum += pe;
        }
      l[rr] = l[rr] * alpha + sum; /* the quad's lanes are summed once, at the end */
NV_UNROLL
      for (int nd = 0; nd < DP / 8; nd++) oacc[nd][2 * rr] *= alpha, oacc[nd][2 * rr + 1] *= alpha;
    }
#if FA_DROPOUT
    /* P for O += P V loses its dropped scores (l above has them all). row0 % 16 == g < 8 and the n-tile's
     * column n0 + nt*8 + 2t is even, so s[nt][0..3] = rows row0, row0 + 8 x keys col, col + 1 are exactly the
     * four words of one fa_dropout_words() call, in its order. */
NV_UNROLL
    for (int nt = 0; nt < BN / 8; nt++)
      fa_dropout_fragment(drop_seed, drop_offset, drop_threshold, bh, (uint)row0, (uint)(n0 + nt * 8 + 2 * t), s[nt]);
#endif

#if FA_NV_STAGES == 1
    nv_put(st, sv, v, vb + (long)n0 * v_ss, v_ss, BN, min(BN, Sk - n0));
    barrier(CLK_LOCAL_MEM_FENCE); /* V_j in place; every warp's S is done with K_j */
#if !FA_BLOCK_MASK
    if (j + 1 < n_tiles) nv_fetch(st, sk, k, kb + (long)(n0 + BN) * k_ss, k_ss, BN, min(BN, Sk - n0 - BN));
#endif
#endif

    /* O += P V: the accumulators of key n-tiles 2 kb and 2 kb + 1 are exactly the A fragment of k-step kb;
     * B[k][n] = V[key k][d n], V's rows the k index. */
NV_UNROLL
    for (int kb2 = 0; kb2 < BN / 16; kb2++) {
      uint a[4];
      a[0] = pack2(s[2 * kb2][0], s[2 * kb2][1]);
      a[1] = pack2(s[2 * kb2][2], s[2 * kb2][3]);
      a[2] = pack2(s[2 * kb2 + 1][0], s[2 * kb2 + 1][1]);
      a[3] = pack2(s[2 * kb2 + 1][2], s[2 * kb2 + 1][3]);
NV_UNROLL
      for (int nd = 0; nd < DP / 8; nd += 2) {
        uint bv[4];
        FRAG_BT(bv, vl, kb2 * 16, nd * 8);
        MMA(oacc[nd], a, bv[0], bv[1]);
        MMA(oacc[nd + 1], a, bv[2], bv[3]);
      }
    }
#if FA_NV_STAGES == 2
#if FA_ALIGNED && FA_NV_CPASYNC
    if (more) nv_cp_wait(); /* the next tile's copies (nv_put's wait) */
#endif
    barrier(CLK_LOCAL_MEM_FENCE); /* the next tile in place; every warp is done with this one */
#endif
  }

  /* Epilogue: O / l, and lse = ln(sum exp(scale s)) = (m + log2 l) ln 2. */
NV_UNROLL
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
      const long ob = o_off + bt * o_sb + h * o_sh + (long)(qfirst + row) * o_ss;
NV_UNROLL
      for (int nd = 0; nd < DP / 8; nd++)
        if (nd * 8 < HEAD_DIM) {
          const int col = nd * 8 + 2 * t;
          fa_store(o, ob + col, oacc[nd][2 * rr] * inv);
          fa_store(o, ob + col + 1, oacc[nd][2 * rr + 1] * inv);
        }
      if (has_lse && t == 0)
        lse[l_off + bt * l_sb + h * l_sh + (long)(qfirst + row) * l_ss] = lt > 0.0f ? (m[rr] + log2(lt)) * FA_LN2 : -INFINITY;
    }
  }
}

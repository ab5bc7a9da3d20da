/* The split-KV decode kernel on NVIDIA tensor cores from OpenCL C: kernels/decode.cu's fa_decode_mma with the
 * inline PTX of kernels/nv_warp.cl (mma.sync m16n8k16, ldmatrix, cp.async), which the host puts before this
 * file after common.cl, masks.h and decode.h. Same arguments and outputs as decode.cl's fa_decode, so that the
 * same combine kernel merges the splits of both.
 *
 *   q [B, Sq, Hq, D]; k, v [B, cap, Hkv, D] or pages [num_pages, page_size, Hkv, D] (f16 or bf16, every row on a
 *   16-byte boundary: the host checks); o like q; lse [B, Hq, Sq]. Grid (row blocks x splits, Hkv, B or
 *   sequences); groups of FA_DEC_WARPS warps (NVIDIA puts 32 consecutive local ids in a warp).
 *
 * One group serves 16 query rows (the flattened (query position, head of the GQA group) pairs, so that K and V
 * are read once for all of them) of one KV head and one split of their keys. Warp w takes the split's 16-key
 * chunks w, w + warps, ... and streams them through its own ring of FA_DEC_STAGES stages in local memory
 * (cp.async, 16 bytes a copy, keys outside the split zero-filled; the warp meets only itself, bar.warp.sync),
 * so FA_DEC_STAGES - 1 chunks of each warp are in flight while it computes one. Per chunk: S = Q K^T (Q's A
 * fragments in registers, K's B fragments through ldmatrix), the online softmax on the accumulators (a row's
 * values in the 4 lanes of a quad), P packed to 16 bits as the A operand of O += P V (V through
 * ldmatrix.trans). At the end the warps' (max, sum, O) states merge once through local memory (the ring is free
 * then). A paged chunk lies in one page (page sizes are multiples of 16, chunks start on 16): one table read
 * per chunk, one chunk ahead of its copies.
 *
 * Defines: FA_DTYPE (1, 2), HEAD_DIM (a multiple of 16, <= 128), FA_DEC_MODS (softcap or ALiBi present),
 * FA_DEC_WARPS (1, 2, 4, 8), FA_DEC_STAGES (2..8) and FA_DEC_PENDING (= FA_DEC_STAGES - 1, as a literal for the
 * cp.async.wait_group immediate), FA_NV_LDMATRIX, FA_NV_CPASYNC (0: synchronous 16-byte copies), FA_NV_EMULATE
 * (the warp primitives in plain OpenCL C: every warp then runs as many loop iterations as the busiest one, the
 * extra ones on zero-filled chunks, because the emulated primitives hold group barriers). */

#if FA_DTYPE != 1 && FA_DTYPE != 2
#error "fa_decode_nv needs FA_DTYPE 1 (f16) or 2 (bf16)"
#endif
#if HEAD_DIM % 16 != 0 || HEAD_DIM > 128
#error "fa_decode_nv takes HEAD_DIM a multiple of 16 up to 128"
#endif
#if FA_DEC_STAGES < 2 || FA_DEC_PENDING != FA_DEC_STAGES - 1
#error "FA_DEC_STAGES >= 2 and FA_DEC_PENDING = FA_DEC_STAGES - 1"
#endif

#define DEC_W FA_DEC_WARPS
#define DEC_S FA_DEC_STAGES
#define DEC_THREADS (32 * DEC_W)
#define DEC_TILE (16 * DS)        /* elements of one tensor's chunk: 16 rows of D + 8 (nv_warp.cl's DS) */
#define DEC_COPIES (CH / 2)       /* 16-byte copies per lane per tensor and chunk: 16 rows x CH pieces / 32 */
#define DEC_KS (HEAD_DIM / 16)    /* k-steps of Q K^T, and d-tile pairs of P V */
#define DEC_OROW (HEAD_DIM + 4)   /* floats per row of the merge */
#define DEC_STR2(x) #x
#define DEC_STR(x) DEC_STR2(x)

/* The warp's own copies and barrier: cp.async with wait_group FA_DEC_PENDING (chunk `it` is commit group `it`
 * of the warp's lanes), bar.warp.sync. Emulated, or without cp.async: a copy is done when it returns, and the
 * warp barrier is a group barrier (uniform there). */
#if FA_NV_EMULATE || !FA_NV_CPASYNC
inline void dec_cp16(__local ushort *dst, const __global ushort *src, int n) {
  *(__local uint4 *)dst = n ? *(const __global uint4 *)src : (uint4)(0u);
}
#define dec_cp_commit() ((void)0)
#define dec_cp_wait_pending() ((void)0)
#define dec_cp_wait_all() ((void)0)
#else
#define dec_cp16(dst, src, n) nv_cp16(dst, src, n)
#define dec_cp_commit() nv_cp_commit()
inline void dec_cp_wait_pending(void) {
  __asm__ __volatile__("cp.async.wait_group " DEC_STR(FA_DEC_PENDING) ";" ::: "memory");
}
#define dec_cp_wait_all() nv_cp_wait()
#endif
#if FA_NV_EMULATE
#define DEC_SYNCWARP() barrier(CLK_LOCAL_MEM_FENCE)
#else
#define DEC_SYNCWARP() __asm__ __volatile__("bar.warp.sync -1;" ::: "memory")
#endif

/* Where chunk c of a warp starts: row `row` of batch entry or page `page`. */
typedef struct dec_place {
  int page, row;
} dec_place;

__kernel __attribute__((reqd_work_group_size(DEC_THREADS, 1, 1))) void fa_decode_nv(
    const __global ushort *q, long q_off, long q_sb, long q_ss, long q_sh, const __global ushort *k, long k_off,
    long k_sb, long k_ss, long k_sh, const __global ushort *v, long v_off, long v_sb, long v_ss, long v_sh,
    __global fa_t *o, long o_off, long o_sb, long o_ss, long o_sh, __global float *lse, long l_off, long l_sb,
    long l_sh, long l_ss, int has_lse, __global float *part_o, __global float *part_lse, long plse_off,
    const __global int *seqlens_buf, long sl_off, long sl_s, int has_seqlens, const __global int *table_buf,
    long t_off, long t_sb, long t_sp, int paged, int page_size, int num_pages, const __global float *alibi_buf,
    long al_off, long al_sb, long al_sh, int has_alibi, const __global int *cuq_buf, long cuq_off, long cuq_s,
    const __global int *cuk_buf, long cuk_off, long cuk_s, int varlen, int batch, int seqlen_q, int cap,
    int heads_q, int group, int causal, int window, int wl, int wr, float scale, float softcap, int splits,
    int row_blocks) {
  /* The warps' rings (warp w's stage s at (w S + s) 2 DEC_TILE: K, then V), later the merge's O rows. */
  __local uint4 ring4[DEC_W * DEC_S * 2 * DEC_TILE / 8];
  __local float sm_m[DEC_W][16], sm_l[DEC_W][16];
#if FA_NV_EMULATE
  __local uint emul[DEC_THREADS * 6];
#endif
  const int tid = (int)get_local_id(0), w = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int rb = (int)get_group_id(0) % row_blocks, split = (int)get_group_id(0) / row_blocks;
  const int hk = (int)get_group_id(1), b = (int)get_group_id(2);
  const __global int *seqlens = seqlens_buf + sl_off, *table = table_buf + t_off;
  const __global float *alibi = alibi_buf + al_off;
  (void)has_alibi, (void)alibi, (void)softcap;
  /* The sequence's query rows q0 .. q0 + sq - 1 (of batch qb) and keys kr0 .. kr0 + len - 1 (of batch kb). */
  int len, sq, q0, kr0;
  const int qb = varlen ? 0 : b, kb = varlen ? 0 : b;
  fa_dec_sequence(cuq_buf + cuq_off, cuq_s, cuk_buf + cuk_off, cuk_s, varlen, seqlens, sl_s, has_seqlens, b, seqlen_q,
                  cap, &q0, &sq, &kr0, &len);
  const int rows_total = sq * group;

  /* Every row's keys (their union gives the split), and this lane's rows g and g + 8. */
  int glo = len, ghi = 0, lo[2] = {0, 0}, hi[2] = {0, 0};
  for (int r = 0; r < 16; r++) {
    const int f = rb * 16 + r;
    int rl = 0, rh = 0;
    if (f < rows_total) fa_dec_row_keys(f / group, sq, len, causal, window, wl, wr, &rl, &rh);
    if (rh > rl) glo = min(glo, rl), ghi = max(ghi, rh);
    if (r == g) lo[0] = rl, hi[0] = rh;
    if (r == g + 8) lo[1] = rl, hi[1] = rh;
  }
  int klo = 0, khi = 0;
  if (ghi > glo) fa_dec_split_keys(glo, ghi, split, splits, &klo, &khi);
  NV_UNROLL
  for (int x = 0; x < 2; x++) lo[x] = max(lo[x], klo), hi[x] = min(hi[x], khi);
#if FA_DEC_MODS
  float slope[2];
  int diag[2];
  NV_UNROLL
  for (int x = 0; x < 2; x++) {
    const int f = rb * 16 + g + 8 * x, h = hk * group + f % group;
    slope[x] = has_alibi && f < rows_total ? alibi[b * al_sb + h * al_sh] : 0.0f;
    diag[x] = f / group + len - sq;
  }
#endif

  /* Q's A fragments (rows g, g + 8; columns 2 t4, 2 t4 + 1 and + 8 of each k-step), zero for padding rows; once
   * per group, so 16-bit loads (q's rows need no alignment). */
  uint qa[DEC_KS][4];
  NV_UNROLL
  for (int x = 0; x < 2; x++) {
    const int f = rb * 16 + g + 8 * x, ok = f < rows_total, fs = ok ? f : 0;
    const __global ushort *qr = q + q_off + qb * q_sb + (long)(q0 + fs / group) * q_ss + (long)(hk * group + fs % group) * q_sh;
    NV_UNROLL
    for (int ks = 0; ks < DEC_KS; ks++)
      NV_UNROLL
      for (int y = 0; y < 2; y++) {
        const int d = ks * 16 + y * 8 + 2 * t4;
        qa[ks][x + 2 * y] = ok ? (uint)qr[d] | ((uint)qr[d + 1] << 16) : 0u;
      }
  }

  /* Chunks of 16 keys from the one holding klo; this warp's are w, w + DEC_W, ... */
  const int kbeg = klo & ~15;
  const int chunks = khi > klo ? (khi - kbeg + 15) / 16 : 0;
  const int mine = chunks > w ? (chunks - 1 - w) / DEC_W + 1 : 0;
#if FA_NV_EMULATE
  const int iters = (chunks + DEC_W - 1) / DEC_W; /* uniform over the group: the emulation's barriers */
#else
  const int iters = mine;
#endif
  __local ushort *ring = (__local ushort *)ring4 + w * DEC_S * 2 * DEC_TILE;
  const __global ushort *kbase = k + k_off + (long)kr0 * k_ss + (long)hk * k_sh;
  const __global ushort *vbase = v + v_off + (long)kr0 * v_ss + (long)hk * v_sh;

  /* This lane's copies of a chunk: piece idx % CH of row idx / CH for idx = lane + 32 i, at element offsets that
   * fit 32 bits (the host checks that 15 row steps and a row do); local row r starts at element r DS, so
   * piece p of it at 8 (idx + r). */
  int crow[DEC_COPIES];
  uint koff[DEC_COPIES], voff[DEC_COPIES];
  NV_UNROLL
  for (int i = 0; i < DEC_COPIES; i++) {
    const uint idx = (uint)lane + 32u * (uint)i, row = idx / CH, pc = idx % CH;
    crow[i] = (int)row;
    koff[i] = row * (uint)k_ss + pc * 8u;
    voff[i] = row * (uint)v_ss + pc * 8u;
  }

  float m[2] = {FA_MAX_INIT, FA_MAX_INIT}, l[2] = {0.0f, 0.0f}, acc[2 * DEC_KS][4];
  NV_UNROLL
  for (int n = 0; n < 2 * DEC_KS; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
  const float qk_scale = scale * (FA_DEC_MODS ? 1.0f : FA_LOG2E);

/* Where this warp's chunk c starts; the table is read only for a chunk of this warp's below khi, and its entry
 * is clamped into the pages where it is used (ISSUE), so that the read issued a chunk ahead is waited for then. */
#define PLACE_OF(pl, c)                                                                 \
  do {                                                                                  \
    const int j0_ = kbeg + (w + (c) * DEC_W) * 16;                                      \
    (pl).page = kb, (pl).row = j0_;                                                     \
    if (paged) {                                                                        \
      const int tp_ = j0_ / page_size;                                                  \
      (pl).row = j0_ - tp_ * page_size;                                                 \
      (pl).page = (c) < mine && j0_ < khi ? table[(long)kb * t_sb + (long)tp_ * t_sp] : 0; \
    }                                                                                   \
  } while (0)
/* The copies of chunk c into ring stage st: keys outside [klo, khi), and every key of a chunk past this warp's
 * own (emulation's extra iterations), zero-filled (finite V under P = 0). */
#define ISSUE(c, st, pl0)                                                                              \
  do {                                                                                                 \
    dec_place pl_ = (pl0);                                                                             \
    const int c0_ = kbeg + (w + (c) * DEC_W) * 16, rlo_ = klo - c0_, rhi_ = (c) < mine ? khi - c0_ : rlo_; \
    if (paged) pl_.page = pl_.page < 0 ? 0 : pl_.page >= num_pages ? num_pages - 1 : pl_.page;        \
    const __global ushort *kc_ = kbase + (long)pl_.page * k_sb + (long)pl_.row * k_ss;               \
    const __global ushort *vc_ = vbase + (long)pl_.page * v_sb + (long)pl_.row * v_ss;               \
    __local ushort *sk_ = ring + (st) * 2 * DEC_TILE, *sv_ = sk_ + DEC_TILE;                           \
    NV_UNROLL                                                                                          \
    for (int i_ = 0; i_ < DEC_COPIES; i_++) {                                                          \
      const int in_ = crow[i_] >= rlo_ && crow[i_] < rhi_;                                             \
      const int off_ = 8 * (lane + 32 * i_ + crow[i_]);                                                \
      dec_cp16(sk_ + off_, in_ ? kc_ + koff[i_] : kbase, in_ ? 16 : 0);                                \
      dec_cp16(sv_ + off_, in_ ? vc_ + voff[i_] : vbase, in_ ? 16 : 0);                                \
    }                                                                                                  \
  } while (0)

  dec_place next;
  PLACE_OF(next, 0);
  for (int s = 0; s < DEC_S - 1; s++) {
    const dec_place pl = next;
    PLACE_OF(next, s + 1);
    if (s < iters) ISSUE(s, s, pl);
    dec_cp_commit();
  }
  for (int it = 0; it < iters; it++) {
    DEC_SYNCWARP(); /* every lane has read the stage the next copies overwrite (computed at it - 1) */
    {
      const dec_place pl = next;
      PLACE_OF(next, it + DEC_S); /* one chunk ahead: the table read hides behind this chunk's math */
      if (it + DEC_S - 1 < iters) ISSUE(it + DEC_S - 1, (it + DEC_S - 1) % DEC_S, pl);
      dec_cp_commit();
    }
    dec_cp_wait_pending();
    DEC_SYNCWARP(); /* the other lanes' copies of chunk it are visible */
    const __local ushort *sk = ring + (it % DEC_S) * 2 * DEC_TILE, *sv = sk + DEC_TILE;
    const __local ushort *kl = NV_LANE_B(sk), *vl = NV_LANE_BT(sv);
    const int c0 = kbeg + (w + it * DEC_W) * 16;

    /* S = Q K^T: s[n-tile][e] for key c0 + 8 n + 2 t4 + (e & 1), row g (e < 2) or g + 8. */
    float s[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
    NV_UNROLL
    for (int ks = 0; ks < DEC_KS; ks++) {
      uint kf[4];
      FRAG_B(kf, kl, 0, ks * 16);
      MMA(s[0], qa[ks], kf[0], kf[1]);
      MMA(s[1], qa[ks], kf[2], kf[3]);
    }
    float mx[2] = {m[0], m[1]};
    NV_UNROLL
    for (int n = 0; n < 2; n++)
      NV_UNROLL
      for (int e = 0; e < 4; e++) {
        const int x = e >> 1, j = c0 + n * 8 + 2 * t4 + (e & 1);
        float sc = s[n][e] * qk_scale;
#if FA_DEC_MODS
        sc = fa_dec_modify(sc, softcap, slope[x], diag[x], j) * FA_LOG2E;
#endif
        sc = j >= lo[x] && j < hi[x] ? sc : -INFINITY;
        s[n][e] = sc;
        mx[x] = fmax(mx[x], sc);
      }
    NV_UNROLL
    for (int x = 0; x < 2; x++) {
      mx[x] = fmax(mx[x], SHFL_XOR(mx[x], 1));
      mx[x] = fmax(mx[x], SHFL_XOR(mx[x], 2));
      const float old = EXP2(m[x] - mx[x]);
      m[x] = mx[x];
      l[x] *= old;
      NV_UNROLL
      for (int n = 0; n < 2 * DEC_KS; n++) acc[n][2 * x] *= old, acc[n][2 * x + 1] *= old;
    }
    NV_UNROLL
    for (int n = 0; n < 2; n++)
      NV_UNROLL
      for (int e = 0; e < 4; e++) {
        s[n][e] = EXP2(s[n][e] - m[e >> 1]);
        l[e >> 1] += s[n][e];
      }
    /* O += P V: P's A fragment is S's accumulator layout (n-tile 0 then 1). */
    const uint pa[4] = {pack2(s[0][0], s[0][1]), pack2(s[0][2], s[0][3]), pack2(s[1][0], s[1][1]),
                        pack2(s[1][2], s[1][3])};
    NV_UNROLL
    for (int dp = 0; dp < DEC_KS; dp++) {
      uint vf[4];
      FRAG_BT(vf, vl, 0, dp * 16);
      MMA(acc[2 * dp], pa, vf[0], vf[1]);
      MMA(acc[2 * dp + 1], pa, vf[2], vf[3]);
    }
  }
#undef PLACE_OF
#undef ISSUE

  /* Merge the warps: each writes its rows' max, sum and O, then the group combines per (row, column). */
  dec_cp_wait_all();
  barrier(CLK_LOCAL_MEM_FENCE); /* the ring is free */
  __local float *so = (__local float *)ring4;
  NV_UNROLL
  for (int x = 0; x < 2; x++) {
    l[x] += SHFL_XOR(l[x], 1);
    l[x] += SHFL_XOR(l[x], 2);
    const int r = g + 8 * x;
    NV_UNROLL
    for (int n = 0; n < 2 * DEC_KS; n++) {
      so[(w * 16 + r) * DEC_OROW + n * 8 + 2 * t4] = acc[n][2 * x];
      so[(w * 16 + r) * DEC_OROW + n * 8 + 2 * t4 + 1] = acc[n][2 * x + 1];
    }
    if (t4 == 0) sm_m[w][r] = m[x], sm_l[w][r] = l[x];
  }
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int x = tid; x < 16 * HEAD_DIM; x += DEC_THREADS) {
    const int r = x / HEAD_DIM, d = x % HEAD_DIM, f = rb * 16 + r;
    if (f >= rows_total) continue; /* a padding row */
    float mxw = FA_MAX_INIT, sum = 0.0f, val = 0.0f;
    for (int ww = 0; ww < DEC_W; ww++) mxw = fmax(mxw, sm_m[ww][r]);
    for (int ww = 0; ww < DEC_W; ww++) {
      const float wt = exp2(sm_m[ww][r] - mxw);
      sum += sm_l[ww][r] * wt;
      val += so[(ww * 16 + r) * DEC_OROW + d] * wt;
    }
    const int i = q0 + f / group, h = hk * group + f % group;
    val = sum > 0.0f ? val / sum : 0.0f;
    const float row_lse = sum > 0.0f ? mxw * FA_LN2 + log(sum) : -INFINITY;
    if (splits == 1) {
      fa_store(o, o_off + qb * o_sb + (long)i * o_ss + (long)h * o_sh + d, val);
      if (d == 0 && has_lse) lse[l_off + qb * l_sb + (long)h * l_sh + (long)i * l_ss] = row_lse;
    } else {
      const long row = (((long)split * batch + qb) * heads_q + h) * seqlen_q + i;
      part_o[row * HEAD_DIM + d] = val;
      if (d == 0) part_lse[plse_off + row] = row_lse;
    }
  }
}

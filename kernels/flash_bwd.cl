/* Backward attention, FlashAttention-2's ordering (Dao 2023, Algorithm 2): the scores are recomputed tile by
 * tile from q, k and the forward's lse, never stored; dK and dV are summed in private memory by the work-group
 * that owns a block of keys.
 *
 *   q, o, dout, dq [B, Sq, Hq, D]; k, v, dk, dv [B, Sk, Hkv, D]; lse [B, Hq, Sq] float32 (natural log of the
 *   scaled scores). ws: float32 workspace, Di [B, Hq, Sq] at di_off and (DQ_ATOMIC) dQ [B, Hq, Sq, D] at dq_off.
 *   Query head h reads key/value head h / group. Key j is masked for row i when causal and j > i + (Sk - Sq).
 *
 *   S = scale Q K^T, P = exp(S - lse), dV = P^T dO, dP = dO V^T, Di = rowsum(dO o O), dS = P o (dP - Di),
 *   dK = scale dS^T Q, dQ = scale dS K.
 *
 * Kernels, launched in this order by src/opencl/cl_backward.c:
 *   flash_bwd_pre         Di, one work-item per row; zeroes the dQ accumulator when zero_dq.
 *   flash_bwd_dkdv        one group of BC / RPW work-items per (block of BC keys, kv head, batch); each
 *                         work-item owns RPW key rows: their K and V rows and dK and dV accumulators are
 *                         private. It walks the query blocks of every query head of its GQA group (so dK and dV
 *                         sum over the group without atomics), skipping blocks the causal mask hides entirely.
 *                         With DQ_ATOMIC, it also adds dS K into the dQ accumulator with compare-and-swap loops.
 *   flash_bwd_dq          (without DQ_ATOMIC) one group of BR / RPW work-items per (block of BR queries, head,
 *                         batch); each owns RPW query rows and walks the key blocks, recomputing S and dP, and
 *                         writes dq itself: no atomics, a fixed summation order, bit-identical runs.
 *   flash_bwd_dq_convert  (with DQ_ATOMIC) the float32 accumulator, times scale, into dq's dtype and strides.
 *
 * Rows with every key masked have lse = -inf: their offset becomes +inf, so P = exp2(s - inf) = 0 for finite
 * and masked (-inf) scores alike, never NaN. Padding rows (past Sq) get the same +inf, padding keys (past Sk)
 * a forced P = 0.
 *
 * Compile-time parameters (the host's -D defines; src/tiling.c sizes BR and BC for the local memory):
 *   HEAD_DIM  D, a multiple of 8
 *   BR, BC    queries per block, keys per block
 *   RPW       rows per work-item (1, 2, 4): divides BR and BC. Every vector loaded from a local tile feeds RPW
 *             rows' multiply-adds, which makes CPUs less bound by loads (src/tiling.c: 4 on CPUs, 1 on GPUs).
 *   TPR       work-items per row: 1, the row layout described here; 8, the GPU layout (flash_bwd_dkdv and
 *             flash_bwd_dq after the row ones, see the comment there; VEC unused, no DQ_ATOMIC).
 *   VEC       floats per vector (1, 2, 4, 8): divides BR, BC and D. Each work-item runs explicit vectors,
 *             which PoCL turns into AVX; whole rows per work-item need no barrier inside a tile's arithmetic.
 *   HAS_FMA   1 when the device does float32 fma in hardware (then MAD is fma, else mad)
 *   DQ_ATOMIC 1: dQ by atomics in flash_bwd_dkdv (then flash_bwd_dq_convert); 0: by flash_bwd_dq
 *   FA_BLOCK_MASK, FA_DROPOUT  0 or 1: the block-sparse mask and dropout of kernels/masks.h (the host then puts
 *             masks.h before this file). Both 0 compile exactly the dense kernels, arguments included.
 *
 * Block mask: every dK/dV and dQ kernel classifies each (query block, key block) tile it would visit with
 * fa_block_tile against that query head's mask: a SKIP tile is passed over before its Q/dO (or K/V) rows are
 * loaded, a FULL one runs the dense code, a PARTIAL one sets P = 0 where fa_block_keep says so, as the causal
 * mask does. Dropout: with Z the keep bit of each score and s = 1 / (1 - p), dV = (P o Z s)^T dO and
 * dP = (dO V^T) o Z s, so dS = P o (dP - Di) and everything after it is as dense; Di is unchanged. The keep
 * bits, four scores per Philox call where a group shares them: the row layout's kernels draw the whole tile's
 * into local memory (drop_tile, eight calls at a time in vectors; drop_line per work-item, two per call, where
 * BR is not a multiple of 16), so does the GPU layout's flash_bwd_dq; its flash_bwd_dkdv draws its lane's with
 * drop_line, two per call.
 *
 * Local memory, floats. flash_bwd_dkdv: Qs and dOs BR*D row-major (for dK and dV, vectors over columns), QT
 * and dOT D*BR transposed (for S and dP, vectors over queries), lse2 and Di BR; with DQ_ATOMIC also Ks BC*D
 * and dSs BR*BC. flash_bwd_dq: KT and VT D*BC transposed, Ks BC*D. fa_tiles_opencl_backward() counts the
 * larger of the two. */

#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif
#define D HEAD_DIM

/* floatv: VEC floats. VLD / VST: a vector from / to VEC consecutive floats. LOADV(p, i): elements i .. i+VEC-1
 * of a tensor in the program's storage type, widened to a floatv (f16: vload_halfN, core OpenCL C; bf16: the
 * high halves of float32s). */
#if VEC == 1
typedef float floatv;
#define VLD(p) (*(p))
#define VST(x, p) (*(p) = (x))
#define VLD_HALF(p) vload_half(0, p)
#define VLD_BF16(p) fa_bf16_to_f32(*(p))
#elif VEC == 2
typedef float2 floatv;
#define VLD(p) vload2(0, p)
#define VST(x, p) vstore2(x, 0, p)
#define VLD_HALF(p) vload_half2(0, p)
#define VLD_BF16(p) as_float2(convert_uint2(vload2(0, p)) << 16)
#elif VEC == 4
typedef float4 floatv;
#define VLD(p) vload4(0, p)
#define VST(x, p) vstore4(x, 0, p)
#define VLD_HALF(p) vload_half4(0, p)
#define VLD_BF16(p) as_float4(convert_uint4(vload4(0, p)) << 16)
#elif VEC == 8
typedef float8 floatv;
#define VLD(p) vload8(0, p)
#define VST(x, p) vstore8(x, 0, p)
#define VLD_HALF(p) vload_half8(0, p)
#define VLD_BF16(p) as_float8(convert_uint8(vload8(0, p)) << 16)
#else
#error "VEC must be 1, 2, 4 or 8"
#endif
#if FA_DTYPE == 0
#define LOADV(p, i) VLD((p) + (i))
#elif FA_DTYPE == 1
#define LOADV(p, i) VLD_HALF((p) + (i))
#else
#define LOADV(p, i) VLD_BF16((p) + (i))
#endif

/* MAD: fma where the device has it in hardware (the host sets HAS_FMA from CL_DEVICE_SINGLE_FP_CONFIG): PoCL
 * lowers mad() to a multiply and an add but fma() to one FMA instruction. Elsewhere fma() could be a slow
 * software routine, so mad(). */
#if HAS_FMA
#define MAD fma
#else
#define MAD mad
#endif

#if BR % VEC != 0 || BC % VEC != 0 || D % VEC != 0
#error "BR, BC and D must be multiples of VEC"
#endif
#define RV (BR / VEC) /* vectors across a query block */
#define CV (BC / VEC) /* vectors across a key block */
#define DV (D / VEC)  /* vectors across a row */

#ifndef RPW
#define RPW 1
#endif
#ifndef TPR
#define TPR 1 /* work-items per row: 1, the row layout; 8, the GPU layout (after the row kernels) */
#endif
#if BR % RPW != 0 || BC % RPW != 0
#error "BR and BC must be multiples of RPW"
#endif
#define WGK (BC / RPW) /* work-items of flash_bwd_dkdv */
#define WGQ (BR / RPW) /* work-items of flash_bwd_dq */

/* Register blocking: RPW rows times this many vectors of accumulators (at most 8 in all: AVX2 has 16
 * registers) stay in registers across an inner loop. */
#define ACC_MAX (8 / RPW)
#if ACC_MAX >= 8 && RV % 8 == 0
#define RB 8
#elif ACC_MAX >= 4 && RV % 4 == 0
#define RB 4
#elif ACC_MAX >= 2 && RV % 2 == 0
#define RB 2
#else
#define RB 1
#endif
#if ACC_MAX >= 8 && CV % 8 == 0
#define CB 8
#elif ACC_MAX >= 4 && CV % 4 == 0
#define CB 4
#elif ACC_MAX >= 2 && CV % 2 == 0
#define CB 2
#else
#define CB 1
#endif
#if ACC_MAX >= 8 && DV % 8 == 0
#define DB 8
#elif ACC_MAX >= 4 && DV % 4 == 0
#define DB 4
#elif ACC_MAX >= 2 && DV % 2 == 0
#define DB 2
#else
#define DB 1
#endif

#ifndef FA_BLOCK_MASK
#define FA_BLOCK_MASK 0
#endif
#ifndef FA_DROPOUT
#define FA_DROPOUT 0
#endif
/* The extra arguments that end the dK/dV and dQ kernels' lists. Mask: its buffer, the byte offset and the
 * batch, head, block-row and block-column byte strides (0 where it broadcasts), scores per block. Dropout:
 * Philox's seed and offset, the drop threshold and the scale of kept probabilities. */
#if FA_BLOCK_MASK
#define MASK_PARAMS \
  , __global const uchar *bmask, long m_off, long m_sb, long m_sh, long m_sr, long m_sc, int bq, int bk
/* The mask of batch b and query head h, at its block (0, 0). */
#define MASK_AT(b, h) (bmask + m_off + (long)(b) * m_sb + (long)(h) * m_sh)
#else
#define MASK_PARAMS
#endif
#if FA_DROPOUT
#define DROP_PARAMS , ulong seed, uint drop_off, uint drop_thr, float drop_scale

/* z[x] = scale where score (i0 + x * di, j0 + x * dj) of batch-head bh is kept, 0 where it is dropped, x < n.
 * The kernels walk lines with steps (1, 0), (8, 0) and (0, 1); masks.h's Philox call covers rows i and i + 8
 * (i % 16 < 8) and keys j and j + 1 (j even), so each takes two scores per call (a score whose partner is
 * earlier in the line was filled with it); any other step takes one. */
inline void drop_line(float *z, int n, ulong seed, uint off, uint thr, float scale, uint bh, int i0, int di, int j0,
                      int dj) {
  /* How far along the line a score's partner lies; 0: not on it. */
  const int pstep = di == 1 ? 8 : di == 8 ? 1 : (di == 0 && dj == 1) ? 1 : 0;
  for (int x = 0; x < n; x++) {
    const uint i = (uint)(i0 + x * di), j = (uint)(j0 + x * dj);
    const int second = di ? (i & 8u) != 0 : (j & 1u) != 0; /* the group's later row or key */
    if (pstep && second && x >= pstep) continue;
    uint w[4];
    fa_dropout_words(seed, off, bh, i, j, w);
    z[x] = w[fa_dropout_lane(i, j)] >= thr ? scale : 0.0f;
    if (pstep && !second && x + pstep < n) {
      const uint i2 = di ? i + 8u : i, j2 = di ? j : j + 1u;
      z[x + pstep] = w[fa_dropout_lane(i2, j2)] >= thr ? scale : 0.0f;
    }
  }
}

/* Eight Philox calls at once in uint8 vectors, which PoCL turns into AVX (drop_line's one call at a time made
 * the dropout backward 2.4 times the dense one on PoCL): the same rounds as fa_philox4x32_10. */
inline void philox8(uint8 *c0, uint8 *c1, uint8 *c2, uint8 *c3, ulong seed) {
  uint k0 = (uint)seed, k1 = (uint)(seed >> 32);
  for (int r = 0; r < 10; r++) {
    const uint8 hi0 = mul_hi((uint8)(FA_PHILOX_M0), *c0), lo0 = (uint8)(FA_PHILOX_M0) * *c0;
    const uint8 hi1 = mul_hi((uint8)(FA_PHILOX_M1), *c2), lo1 = (uint8)(FA_PHILOX_M1) * *c2;
    *c0 = hi1 ^ *c1 ^ (uint8)(k0);
    *c2 = hi0 ^ *c3 ^ (uint8)(k1);
    *c1 = lo1;
    *c3 = lo0;
    k0 += FA_PHILOX_W0;
    k1 += FA_PHILOX_W1;
  }
}
#if TPR == 1 && BR % 16 == 0 && BC % 2 == 0
#define DROP_TILE 1
/* Zs[x * BC + y] = 1 where score (q0 + x, k0 + y) of batch-head bh is kept, for the whole BR x BC tile, shared
 * by the group's nwi work-items: each philox8 covers rows q0 + g .. + 7 and 8 rows further, keys k0 + jj and
 * jj + 1, four scores per call (q0 is a multiple of BR, so of 16; k0 of BC, so even). */
inline void drop_tile(__local uchar *Zs, int lid, int nwi, ulong seed, uint off, uint thr, uint bh, int q0, int k0) {
  const uint8 u = (uint8)(0, 1, 2, 3, 4, 5, 6, 7);
  for (int y = lid; y < (BR / 16) * (BC / 2); y += nwi) {
    const int g = y / (BC / 2) * 16, jj = 2 * (y % (BC / 2));
    uint8 c0 = (uint8)((uint)(k0 + jj) >> 1), c1 = (uint8)((uint)(q0 + g) >> 4 << 3) + u, c2 = (uint8)(bh),
          c3 = (uint8)(off);
    philox8(&c0, &c1, &c2, &c3, seed);
    uint w0[8], w1[8], w2[8], w3[8]; /* rows g + e: keys jj, jj + 1; rows g + 8 + e: the same */
    vstore8(c0, 0, w0);
    vstore8(c1, 0, w1);
    vstore8(c2, 0, w2);
    vstore8(c3, 0, w3);
    for (int e = 0; e < 8; e++) {
      __local uchar *zr = Zs + (g + e) * BC + jj;
      zr[0] = w0[e] >= thr;
      zr[1] = w1[e] >= thr;
      zr[8 * BC] = w2[e] >= thr;
      zr[8 * BC + 1] = w3[e] >= thr;
    }
  }
}
#else
#define DROP_TILE 0
#endif
#else
#define DROP_PARAMS
#endif

#if FA_BLOCK_MASK
/* w[x] = 0 for x < n where the block mask hides score x of a line along one axis: m points at the line's
 * block column (or row), step is the mask's stride along the line, bsz its block size there, and the line
 * starts at index start. One load per block the line crosses, no division per score: the same test as
 * fa_block_keep. */
inline void mask_line(float *w, int n, const __global uchar *m, long step, int bsz, int start) {
  for (long bi = start / bsz; bi * bsz < (long)start + n; bi++)
    if (!m[bi * step]) {
      const int lo = (int)(max(bi * bsz, (long)start) - start);
      const int hi = (int)(min(bi * bsz + bsz, (long)start + n) - start);
      for (int x = lo; x < hi; x++) w[x] = 0.0f;
    }
}
#endif

/* P = exp2(s * scale_log2 - lse2): lse in base 2, and +inf for a row whose keys are all masked. */
inline float row_lse2(float lse) { return lse == -INFINITY ? INFINITY : lse * FA_LOG2E; }

/* OpenCL 1.2 has no float atomic add: compare-and-swap on the bits. */
inline void atomic_add_f32(volatile __global float *p, float x) {
  volatile __global uint *u = (volatile __global uint *)p;
  uint old = *u, seen;
  do {
    seen = old;
    old = atomic_cmpxchg(u, seen, as_uint(as_float(seen) + x));
  } while (old != seen);
}

/* Di = rowsum(dO o O). Grid (Sq rounded up, Hq, B). */
__kernel void flash_bwd_pre(__global const fa_t *o, long o_off, long o_sb, long o_ss, long o_sh,
                            __global const fa_t *dout, long g_off, long g_sb, long g_ss, long g_sh,
                            __global float *ws, long di_off, long dq_off, int zero_dq, int Sq, int Hq) {
  const int i = get_global_id(0), h = get_global_id(1), b = get_global_id(2);
  if (i >= Sq) return;
  const long ob = o_off + b * o_sb + (long)i * o_ss + h * o_sh;
  const long gb = g_off + b * g_sb + (long)i * g_ss + h * g_sh;
  float acc = 0.0f;
  for (int d = 0; d < D; d++) acc = MAD(fa_load(dout, gb + d), fa_load(o, ob + d), acc);
  const long row = ((long)b * Hq + h) * Sq + i;
  ws[di_off + row] = acc;
  if (zero_dq)
    for (int d = 0; d < D; d++) ws[dq_off + row * D + d] = 0.0f;
}

#if TPR == 1
/* dK and dV (and with DQ_ATOMIC, dQ) for one block of BC keys. Grid (ceil(Sk / BC) * WGK, Hkv, B). Work-item w
 * owns keys k0 + w + r * WGK, r < RPW. */
__kernel __attribute__((reqd_work_group_size(WGK, 1, 1))) void
flash_bwd_dkdv(__global const fa_t *q, long q_off, long q_sb, long q_ss, long q_sh,
               __global const fa_t *k, long k_off, long k_sb, long k_ss, long k_sh,
               __global const fa_t *v, long v_off, long v_sb, long v_ss, long v_sh,
               __global const fa_t *dout, long g_off, long g_sb, long g_ss, long g_sh,
               __global fa_t *dk, long dk_off, long dk_sb, long dk_ss, long dk_sh,
               __global fa_t *dv, long dv_off, long dv_sb, long dv_ss, long dv_sh,
               __global const float *lse, long l_off, long l_sb, long l_sh, long l_ss,
               __global float *ws, long di_off, long dq_off,
               int Sq, int Sk, int Hq, int group, int causal, float scale, float scale_log2 MASK_PARAMS DROP_PARAMS) {
  __local float Qs[BR * D];
  __local float QT[D * BR];
  __local float Gs[BR * D]; /* dO */
  __local float GT[D * BR];
  __local float L2[BR];
  __local float Di[BR];
#if DQ_ATOMIC
  __local float Ks[BC * D];
  __local float dSs[BR * BC];
#endif
#if FA_DROPOUT && DROP_TILE
  __local uchar Zs[BR * BC]; /* the tile's keep bits */
#endif

  const int lid = get_local_id(0);
  const int k0 = get_group_id(0) * BC;
  const int hk = get_group_id(1), b = get_group_id(2);
  const long diag = (long)Sk - Sq; /* row i sees keys j <= i + diag */

  /* This work-item's key rows (zero past Sk), and their dK, dV accumulators. */
  float kr[RPW * D], vr[RPW * D], dka[RPW * D], dva[RPW * D];
  for (int r = 0; r < RPW; r++) {
    const int j = k0 + lid + r * WGK;
    const long kb = k_off + b * k_sb + (long)j * k_ss + hk * k_sh;
    const long vb = v_off + b * v_sb + (long)j * v_ss + hk * v_sh;
    for (int d = 0; d < D; d++) {
      kr[r * D + d] = j < Sk ? fa_load(k, kb + d) : 0.0f;
      vr[r * D + d] = j < Sk ? fa_load(v, vb + d) : 0.0f;
      dka[r * D + d] = 0.0f;
      dva[r * D + d] = 0.0f;
#if DQ_ATOMIC
      Ks[(lid + r * WGK) * D + d] = kr[r * D + d];
#endif
    }
  }

  /* Rows before k0 - diag see no key of this block: start at the query block holding that row. */
  int qstart = 0;
  if (causal) {
    qstart = (int)clamp((long)k0 - diag, 0L, (long)Sq);
    qstart -= qstart % BR;
  }

  for (int g = 0; g < group; g++) {
    const int h = hk * group + g;
    const long qb = q_off + b * q_sb + h * q_sh;
    const long gb = g_off + b * g_sb + h * g_sh;
    const long lb = l_off + b * l_sb + h * l_sh;
    const long rowb = ((long)b * Hq + h) * Sq; /* this head's first row in the workspace */
#if FA_BLOCK_MASK
    const __global uchar *mh = MASK_AT(b, h);
#endif

    for (int q0 = qstart; q0 < Sq; q0 += BR) {
#if FA_BLOCK_MASK
      /* The same value in every work-item, so a skipped tile skips its barriers in all of them. */
      const int tile = fa_block_tile(mh, m_sr, m_sc, bq, bk, q0, min(q0 + BR, Sq), k0, min(k0 + BC, Sk));
      if (tile == FA_TILE_SKIP) continue;
#endif
      barrier(CLK_LOCAL_MEM_FENCE); /* the previous block's readers are done */
      for (int x = lid; x < BR * DV; x += WGK) {
        const int rr = x / DV, c = (x - rr * DV) * VEC, i = q0 + rr;
        floatv qx = (floatv)(0.0f), gx = (floatv)(0.0f);
        if (i < Sq) {
          qx = LOADV(q, qb + (long)i * q_ss + c);
          gx = LOADV(dout, gb + (long)i * g_ss + c);
        }
        VST(qx, Qs + rr * D + c);
        VST(gx, Gs + rr * D + c);
        float qe[VEC], ge[VEC];
        VST(qx, qe);
        VST(gx, ge);
        for (int e = 0; e < VEC; e++) {
          QT[(c + e) * BR + rr] = qe[e];
          GT[(c + e) * BR + rr] = ge[e];
        }
      }
      for (int x = lid; x < BR; x += WGK) {
        const int i = q0 + x;
        L2[x] = i < Sq ? row_lse2(lse[lb + (long)i * l_ss]) : INFINITY;
        Di[x] = i < Sq ? ws[di_off + rowb + i] : 0.0f;
      }
#if FA_DROPOUT && DROP_TILE
      drop_tile(Zs, lid, WGK, seed, drop_off, drop_thr, (uint)(b * Hq + h), q0, k0);
#endif
      barrier(CLK_LOCAL_MEM_FENCE);

      /* s = K Q^T, then dp = V dO^T, for the RPW keys over the block's queries, VEC queries per vector:
       * per step d, RB vectors of the tile feed RPW * RB multiply-adds. */
      float s[RPW * BR], dp[RPW * BR];
      for (int pass = 0; pass < 2; pass++) {
        const float *a = pass ? vr : kr;
        const __local float *bt = pass ? GT : QT;
        float *out = pass ? dp : s;
        for (int c0 = 0; c0 < RV; c0 += RB) {
          floatv acc[RPW][RB];
#pragma unroll
          for (int r = 0; r < RPW; r++)
#pragma unroll
            for (int u = 0; u < RB; u++) acc[r][u] = (floatv)(0.0f);
#pragma unroll 2
          for (int dd = 0; dd < D; dd++) {
            floatv t[RB];
#pragma unroll
            for (int u = 0; u < RB; u++) t[u] = VLD(bt + dd * BR + (c0 + u) * VEC);
#pragma unroll
            for (int r = 0; r < RPW; r++) {
              const floatv ad = (floatv)(a[r * D + dd]);
#pragma unroll
              for (int u = 0; u < RB; u++) acc[r][u] = MAD(ad, t[u], acc[r][u]);
            }
          }
#pragma unroll
          for (int r = 0; r < RPW; r++)
#pragma unroll
            for (int u = 0; u < RB; u++) VST(acc[r][u], out + r * BR + (c0 + u) * VEC);
        }
      }

      /* P and dS, VEC queries per vector (the vector exp2 is what keeps this step cheap on CPUs). Key j is
       * visible to row i when i >= j - diag (causal) and j < Sk; padding rows have lse2 = +inf. */
      for (int r = 0; r < RPW; r++) {
        const int j = k0 + lid + r * WGK;
        for (int c = 0; c < RV; c++) {
          const floatv p = exp2(MAD(VLD(s + r * BR + c * VEC), (floatv)(scale_log2), -VLD(L2 + c * VEC)));
          VST(p, s + r * BR + c * VEC);
        }
        const long first = causal ? (long)j - diag : LONG_MIN;
        if (j >= Sk || q0 < first)
          for (int x = 0; x < BR; x++)
            if (j >= Sk || q0 + x < first) s[r * BR + x] = 0.0f;
#if FA_BLOCK_MASK
        if (tile == FA_TILE_PARTIAL && j < Sk)
          mask_line(s + r * BR, min(BR, Sq - q0), mh + (long)(j / bk) * m_sc, m_sr, bq, q0);
#endif
#if FA_DROPOUT
        /* dS = P o (dP o Z s - Di), then P o Z s for dV. */
        float z[BR];
#if DROP_TILE
        for (int x = 0; x < BR; x++) z[x] = Zs[x * BC + lid + r * WGK] ? drop_scale : 0.0f;
#else
        drop_line(z, BR, seed, drop_off, drop_thr, drop_scale, (uint)(b * Hq + h), q0, 1, j, 0);
#endif
        for (int c = 0; c < RV; c++) {
          const floatv p = VLD(s + r * BR + c * VEC), zv = VLD(z + c * VEC);
          VST(p * MAD(VLD(dp + r * BR + c * VEC), zv, -VLD(Di + c * VEC)), dp + r * BR + c * VEC);
          VST(p * zv, s + r * BR + c * VEC);
        }
#else
        for (int c = 0; c < RV; c++)
          VST(VLD(s + r * BR + c * VEC) * (VLD(dp + r * BR + c * VEC) - VLD(Di + c * VEC)), dp + r * BR + c * VEC);
#endif
      }

      /* dV += P^T dO, then dK += dS^T Q (scale applied at the end), VEC columns per vector: per query x, DB
       * vectors of the tile feed RPW * DB multiply-adds. */
      for (int pass = 0; pass < 2; pass++) {
        const float *w = pass ? dp : s;
        const __local float *tile = pass ? Qs : Gs;
        float *accum = pass ? dka : dva;
        for (int c0 = 0; c0 < DV; c0 += DB) {
          floatv acc[RPW][DB];
#pragma unroll
          for (int r = 0; r < RPW; r++)
#pragma unroll
            for (int u = 0; u < DB; u++) acc[r][u] = VLD(accum + r * D + (c0 + u) * VEC);
#pragma unroll 2
          for (int x = 0; x < BR; x++) {
            floatv t[DB];
#pragma unroll
            for (int u = 0; u < DB; u++) t[u] = VLD(tile + x * D + (c0 + u) * VEC);
#pragma unroll
            for (int r = 0; r < RPW; r++) {
              const floatv wx = (floatv)(w[r * BR + x]);
#pragma unroll
              for (int u = 0; u < DB; u++) acc[r][u] = MAD(wx, t[u], acc[r][u]);
            }
          }
#pragma unroll
          for (int r = 0; r < RPW; r++)
#pragma unroll
            for (int u = 0; u < DB; u++) VST(acc[r][u], accum + r * D + (c0 + u) * VEC);
        }
      }

#if DQ_ATOMIC
      /* dQ_i += dS_i K over this block's keys: the BR x DV output vectors spread over the group. */
      for (int r = 0; r < RPW; r++)
        for (int x = 0; x < BR; x++) dSs[x * BC + lid + r * WGK] = dp[r * BR + x];
      barrier(CLK_LOCAL_MEM_FENCE);
      for (int y = lid; y < BR * DV; y += WGK) {
        const int rr = y / DV, cv = y - rr * DV, i = q0 + rr;
        if (i >= Sq) continue;
        floatv acc = (floatv)(0.0f);
        for (int jj = 0; jj < BC; jj++) acc = MAD((floatv)(dSs[rr * BC + jj]), VLD(Ks + jj * D + cv * VEC), acc);
        float accs[VEC];
        VST(acc, accs);
        volatile __global float *dst = ws + dq_off + (rowb + i) * D + cv * VEC;
        for (int e = 0; e < VEC; e++)
          if (accs[e] != 0.0f) atomic_add_f32(dst + e, accs[e]);
      }
#endif
    }
  }

  for (int r = 0; r < RPW; r++) {
    const int j = k0 + lid + r * WGK;
    if (j >= Sk) continue;
    const long kb = dk_off + b * dk_sb + (long)j * dk_ss + hk * dk_sh;
    const long vb = dv_off + b * dv_sb + (long)j * dv_ss + hk * dv_sh;
    for (int d = 0; d < D; d++) {
      fa_store(dk, kb + d, dka[r * D + d] * scale);
      fa_store(dv, vb + d, dva[r * D + d]);
    }
  }
}

#if !DQ_ATOMIC
/* dq for one block of BR queries, walking the key blocks. Grid (ceil(Sq / BR) * WGQ, Hq, B). Work-item w owns
 * queries q0 + w + r * WGQ, r < RPW. */
__kernel __attribute__((reqd_work_group_size(WGQ, 1, 1))) void
flash_bwd_dq(__global const fa_t *q, long q_off, long q_sb, long q_ss, long q_sh,
             __global const fa_t *k, long k_off, long k_sb, long k_ss, long k_sh,
             __global const fa_t *v, long v_off, long v_sb, long v_ss, long v_sh,
             __global const fa_t *dout, long g_off, long g_sb, long g_ss, long g_sh,
             __global fa_t *dq, long dq_off, long dq_sb, long dq_ss, long dq_sh,
             __global const float *lse, long l_off, long l_sb, long l_sh, long l_ss,
             __global const float *ws, long di_off,
             int Sq, int Sk, int Hq, int group, int causal, float scale, float scale_log2 MASK_PARAMS DROP_PARAMS) {
  __local float KT[D * BC];
  __local float VT[D * BC];
  __local float Ks[BC * D];
#if FA_DROPOUT && DROP_TILE
  __local uchar Zs[BR * BC]; /* the tile's keep bits */
#endif

  const int lid = get_local_id(0);
  const int q0 = get_group_id(0) * BR;
  const int h = get_group_id(1), b = get_group_id(2);
  const int hk = h / group;
  const long diag = (long)Sk - Sq;

  /* This work-item's query and dO rows (zero past Sq), their lse2 and Di, and the dQ accumulators. */
  float qr[RPW * D], gr[RPW * D], dqa[RPW * D], l2[RPW], di[RPW];
  for (int r = 0; r < RPW; r++) {
    const int i = q0 + lid + r * WGQ;
    const long qb = q_off + b * q_sb + (long)i * q_ss + h * q_sh;
    const long gb = g_off + b * g_sb + (long)i * g_ss + h * g_sh;
    for (int d = 0; d < D; d++) {
      qr[r * D + d] = i < Sq ? fa_load(q, qb + d) : 0.0f;
      gr[r * D + d] = i < Sq ? fa_load(dout, gb + d) : 0.0f;
      dqa[r * D + d] = 0.0f;
    }
    l2[r] = i < Sq ? row_lse2(lse[l_off + b * l_sb + h * l_sh + (long)i * l_ss]) : INFINITY;
    di[r] = i < Sq ? ws[di_off + ((long)b * Hq + h) * Sq + i] : 0.0f;
  }

  const long kb = k_off + b * k_sb + hk * k_sh;
  const long vb = v_off + b * v_sb + hk * v_sh;
  /* Keys past the last row's diagonal are masked for the whole block: those tiles are never visited. */
  int kend = Sk;
  if (causal) kend = (int)clamp((long)min(q0 + BR, Sq) + diag, 0L, (long)Sk);
#if FA_BLOCK_MASK
  const __global uchar *mh = MASK_AT(b, h);
#endif

  for (int k0 = 0; k0 < kend; k0 += BC) {
#if FA_BLOCK_MASK
    const int tile = fa_block_tile(mh, m_sr, m_sc, bq, bk, q0, min(q0 + BR, Sq), k0, min(k0 + BC, Sk));
    if (tile == FA_TILE_SKIP) continue;
#endif
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int x = lid; x < BC * DV; x += WGQ) {
      const int jj = x / DV, c = (x - jj * DV) * VEC, kj = k0 + jj;
      floatv kx = (floatv)(0.0f), vx = (floatv)(0.0f);
      if (kj < Sk) {
        kx = LOADV(k, kb + (long)kj * k_ss + c);
        vx = LOADV(v, vb + (long)kj * v_ss + c);
      }
      VST(kx, Ks + jj * D + c);
      float ke[VEC], ve[VEC];
      VST(kx, ke);
      VST(vx, ve);
      for (int e = 0; e < VEC; e++) {
        KT[(c + e) * BC + jj] = ke[e];
        VT[(c + e) * BC + jj] = ve[e];
      }
    }
#if FA_DROPOUT && DROP_TILE
    drop_tile(Zs, lid, WGQ, seed, drop_off, drop_thr, (uint)(b * Hq + h), q0, k0);
#endif
    barrier(CLK_LOCAL_MEM_FENCE);

    /* s = Q K^T, then dp = dO V^T, for the RPW queries over the block's keys, VEC keys per vector. */
    float s[RPW * BC], dp[RPW * BC];
    for (int pass = 0; pass < 2; pass++) {
      const float *a = pass ? gr : qr;
      const __local float *bt = pass ? VT : KT;
      float *out = pass ? dp : s;
      for (int c0 = 0; c0 < CV; c0 += CB) {
        floatv acc[RPW][CB];
#pragma unroll
        for (int r = 0; r < RPW; r++)
#pragma unroll
          for (int u = 0; u < CB; u++) acc[r][u] = (floatv)(0.0f);
#pragma unroll 2
        for (int dd = 0; dd < D; dd++) {
          floatv t[CB];
#pragma unroll
          for (int u = 0; u < CB; u++) t[u] = VLD(bt + dd * BC + (c0 + u) * VEC);
#pragma unroll
          for (int r = 0; r < RPW; r++) {
            const floatv ad = (floatv)(a[r * D + dd]);
#pragma unroll
            for (int u = 0; u < CB; u++) acc[r][u] = MAD(ad, t[u], acc[r][u]);
          }
        }
#pragma unroll
        for (int r = 0; r < RPW; r++)
#pragma unroll
          for (int u = 0; u < CB; u++) VST(acc[r][u], out + r * BC + (c0 + u) * VEC);
      }
    }

    /* P and dS, VEC keys per vector. Keys past Sk and, causal, past i + diag are masked. */
    for (int r = 0; r < RPW; r++) {
      const int i = q0 + lid + r * WGQ;
      for (int c = 0; c < CV; c++) {
        const floatv p = exp2(MAD(VLD(s + r * BC + c * VEC), (floatv)(scale_log2), (floatv)(-l2[r])));
        VST(p, s + r * BC + c * VEC);
      }
      const long last = causal ? min((long)i + diag, (long)Sk - 1) : (long)Sk - 1; /* last visible key */
      if (k0 + BC - 1 > last)
        for (int x = 0; x < BC; x++)
          if (k0 + x > last) s[r * BC + x] = 0.0f;
#if FA_BLOCK_MASK
      if (tile == FA_TILE_PARTIAL && i < Sq)
        mask_line(s + r * BC, min(BC, Sk - k0), mh + (long)(i / bq) * m_sr, m_sc, bk, k0);
#endif
#if FA_DROPOUT
      float z[BC];
#if DROP_TILE
      for (int x = 0; x < BC; x++) z[x] = Zs[(lid + r * WGQ) * BC + x] ? drop_scale : 0.0f;
#else
      drop_line(z, BC, seed, drop_off, drop_thr, drop_scale, (uint)(b * Hq + h), i, 0, k0, 1);
#endif
      for (int c = 0; c < CV; c++)
        VST(VLD(s + r * BC + c * VEC) * MAD(VLD(dp + r * BC + c * VEC), VLD(z + c * VEC), (floatv)(-di[r])),
            dp + r * BC + c * VEC);
#else
      for (int c = 0; c < CV; c++)
        VST(VLD(s + r * BC + c * VEC) * (VLD(dp + r * BC + c * VEC) - (floatv)(di[r])), dp + r * BC + c * VEC);
#endif
    }

    /* dQ += dS K, VEC columns per vector. */
    for (int c0 = 0; c0 < DV; c0 += DB) {
      floatv acc[RPW][DB];
#pragma unroll
      for (int r = 0; r < RPW; r++)
#pragma unroll
        for (int u = 0; u < DB; u++) acc[r][u] = VLD(dqa + r * D + (c0 + u) * VEC);
#pragma unroll 2
      for (int x = 0; x < BC; x++) {
        floatv t[DB];
#pragma unroll
        for (int u = 0; u < DB; u++) t[u] = VLD(Ks + x * D + (c0 + u) * VEC);
#pragma unroll
        for (int r = 0; r < RPW; r++) {
          const floatv wx = (floatv)(dp[r * BC + x]);
#pragma unroll
          for (int u = 0; u < DB; u++) acc[r][u] = MAD(wx, t[u], acc[r][u]);
        }
      }
#pragma unroll
      for (int r = 0; r < RPW; r++)
#pragma unroll
        for (int u = 0; u < DB; u++) VST(acc[r][u], dqa + r * D + (c0 + u) * VEC);
    }
  }

  for (int r = 0; r < RPW; r++) {
    const int i = q0 + lid + r * WGQ;
    if (i >= Sq) continue;
    const long ob = dq_off + b * dq_sb + (long)i * dq_ss + h * dq_sh;
    for (int d = 0; d < D; d++) fa_store(dq, ob + d, dqa[r * D + d] * scale);
  }
}
#endif

#else /* TPR > 1 */

/* The GPU layout, in the style of flash_fwd.cl's: TPR work-items share a row (a key in flash_bwd_dkdv, a query
 * in flash_bwd_dq), and each work-item has RPW such rows (1 by default; 2 makes every local load feed twice the
 * multiply-adds, at twice the private accumulators). Each owns its rows' interleaved columns t, t + TPR, ...
 * (D / TPR accumulators per row of dK and dV, or of dQ: no D-float private arrays, which NVIDIA's compiler
 * would spill) and every TPR-th score of a block. The other operand's rows sit in local memory, padded by one
 * float so that the TPR lanes of a row, reading different rows at the same column, fall in different banks; P
 * and dS go through local memory to the lanes that own the columns. Whole dot products per work-item: no
 * reduction across lanes. No DQ_ATOMIC (the host takes the separate dQ kernel with this layout).
 * Deterministic: every sum has a fixed order.
 *
 * Local floats: dkdv Ks, Vs 2*BC*(D+1), Qs, dOs 2*BR*(D+1), Ps, dSs 2*BC*(BR+1), lse2, Di 2*BR; dq Qs, dOs
 * 2*BR*(D+1), Ks, Vs 2*BC*(D+1), dSs BR*(BC+1). fa_tiles_opencl_backward() counts the larger. */
#if DQ_ATOMIC
#error "the GPU layout (TPR > 1) has no DQ_ATOMIC"
#endif
#if BR % TPR != 0 || BC % TPR != 0 || D % TPR != 0
#error "BR, BC and D must be multiples of TPR"
#endif
#define RL (D + 1)          /* padded row of a D-wide tile */
#define SK (BR / TPR)       /* flash_bwd_dkdv: queries per row per block */
#define SQ (BC / TPR)       /* flash_bwd_dq: keys per row per block */
#define CN (D / TPR)        /* accumulator columns per row */
#define KR (BC / RPW)       /* flash_bwd_dkdv: work-items' row groups; a work-item's rows are KR apart */
#define QR (BR / RPW)       /* flash_bwd_dq: the same */
#define GK (KR * TPR)       /* work-items of flash_bwd_dkdv */
#define GQ (QR * TPR)       /* work-items of flash_bwd_dq */

/* Grid (ceil(Sk / BC) * GK, Hkv, B). Work-item (jr, t) = (lid / TPR, lid % TPR) owns keys k0 + jr + r * KR
 * (r < RPW), columns c * TPR + t of their dK and dV, and queries c * TPR + t of each query block. */
__kernel __attribute__((reqd_work_group_size(GK, 1, 1))) void
flash_bwd_dkdv(__global const fa_t *q, long q_off, long q_sb, long q_ss, long q_sh,
               __global const fa_t *k, long k_off, long k_sb, long k_ss, long k_sh,
               __global const fa_t *v, long v_off, long v_sb, long v_ss, long v_sh,
               __global const fa_t *dout, long g_off, long g_sb, long g_ss, long g_sh,
               __global fa_t *dk, long dk_off, long dk_sb, long dk_ss, long dk_sh,
               __global fa_t *dv, long dv_off, long dv_sb, long dv_ss, long dv_sh,
               __global const float *lse, long l_off, long l_sb, long l_sh, long l_ss,
               __global float *ws, long di_off, long dq_off,
               int Sq, int Sk, int Hq, int group, int causal, float scale, float scale_log2 MASK_PARAMS DROP_PARAMS) {
  __local float Ks[BC * RL];
  __local float Vs[BC * RL];
  __local float Qs[BR * RL];
  __local float Gs[BR * RL]; /* dO */
  __local float Ps[BC * (BR + 1)];
  __local float dSs[BC * (BR + 1)];
  __local float L2[BR];
  __local float Di[BR];

  const int lid = get_local_id(0), jr = lid / TPR, t = lid % TPR;
  const int k0 = get_group_id(0) * BC;
  const int hk = get_group_id(1), b = get_group_id(2);
  const long diag = (long)Sk - Sq; /* row i sees keys j <= i + diag */

  /* The block's K and V rows, zero past Sk; neighbouring work-items read neighbouring elements. */
  const long kb = k_off + b * k_sb + hk * k_sh;
  const long vb = v_off + b * v_sb + hk * v_sh;
  for (int x = lid; x < BC * D; x += GK) {
    const int jj = x / D, dd = x - jj * D, kj = k0 + jj;
    Ks[jj * RL + dd] = kj < Sk ? fa_load(k, kb + (long)kj * k_ss + dd) : 0.0f;
    Vs[jj * RL + dd] = kj < Sk ? fa_load(v, vb + (long)kj * v_ss + dd) : 0.0f;
  }
  float dka[RPW * CN], dva[RPW * CN];
#pragma unroll
  for (int c = 0; c < RPW * CN; c++) dka[c] = dva[c] = 0.0f;

  int qstart = 0;
  if (causal) {
    qstart = (int)clamp((long)k0 - diag, 0L, (long)Sq);
    qstart -= qstart % BR;
  }

  for (int g = 0; g < group; g++) {
    const int h = hk * group + g;
    const long qb = q_off + b * q_sb + h * q_sh;
    const long gb = g_off + b * g_sb + h * g_sh;
    const long lb = l_off + b * l_sb + h * l_sh;
    const long rowb = ((long)b * Hq + h) * Sq;
#if FA_BLOCK_MASK
    const __global uchar *mh = MASK_AT(b, h);
#endif

    for (int q0 = qstart; q0 < Sq; q0 += BR) {
#if FA_BLOCK_MASK
      const int tile = fa_block_tile(mh, m_sr, m_sc, bq, bk, q0, min(q0 + BR, Sq), k0, min(k0 + BC, Sk));
      if (tile == FA_TILE_SKIP) continue; /* uniform: every work-item skips the same barriers */
#endif
      barrier(CLK_LOCAL_MEM_FENCE); /* K, V staged (first block); the previous block's readers done */
      for (int x = lid; x < BR * D; x += GK) {
        const int rr = x / D, dd = x - rr * D, i = q0 + rr;
        Qs[rr * RL + dd] = i < Sq ? fa_load(q, qb + (long)i * q_ss + dd) : 0.0f;
        Gs[rr * RL + dd] = i < Sq ? fa_load(dout, gb + (long)i * g_ss + dd) : 0.0f;
      }
      for (int x = lid; x < BR; x += GK) {
        const int i = q0 + x;
        L2[x] = i < Sq ? row_lse2(lse[lb + (long)i * l_ss]) : INFINITY;
        Di[x] = i < Sq ? ws[di_off + rowb + i] : 0.0f;
      }
      barrier(CLK_LOCAL_MEM_FENCE);

      /* s = K_j . Q_i and dp = V_j . dO_i for this work-item's keys j and queries i = c * TPR + t. */
      float s[RPW * SK], dp[RPW * SK];
#pragma unroll
      for (int c = 0; c < RPW * SK; c++) s[c] = dp[c] = 0.0f;
#pragma unroll 4
      for (int dd = 0; dd < D; dd++) {
        float kd[RPW], vd[RPW];
#pragma unroll
        for (int r = 0; r < RPW; r++) kd[r] = Ks[(jr + r * KR) * RL + dd], vd[r] = Vs[(jr + r * KR) * RL + dd];
#pragma unroll
        for (int c = 0; c < SK; c++) {
          const float qv = Qs[(c * TPR + t) * RL + dd], gv = Gs[(c * TPR + t) * RL + dd];
#pragma unroll
          for (int r = 0; r < RPW; r++) {
            s[r * SK + c] = MAD(kd[r], qv, s[r * SK + c]);
            dp[r * SK + c] = MAD(vd[r], gv, dp[r * SK + c]);
          }
        }
      }
      /* P (0 for masked keys, padding keys and rows: lse2 = +inf) and dS, into local memory for the lanes
       * that own the columns. */
#pragma unroll
      for (int r = 0; r < RPW; r++) {
        const int jl = jr + r * KR, j = k0 + jl;
        const long first = causal ? (long)j - diag : LONG_MIN; /* the first row that sees key j */
#if FA_DROPOUT
        float z[SK];
        drop_line(z, SK, seed, drop_off, drop_thr, drop_scale, (uint)(b * Hq + h), q0 + t, TPR, j, 0);
#endif
#pragma unroll
        for (int c = 0; c < SK; c++) {
          const int x = c * TPR + t;
          float p = exp2(MAD(s[r * SK + c], scale_log2, -L2[x]));
          if (j >= Sk || q0 + x < first) p = 0.0f;
#if FA_BLOCK_MASK
          if (tile == FA_TILE_PARTIAL && j < Sk && q0 + x < Sq && !fa_block_keep(mh, m_sr, m_sc, bq, bk, q0 + x, j))
            p = 0.0f;
#endif
#if FA_DROPOUT
          Ps[jl * (BR + 1) + x] = p * z[c];
          dSs[jl * (BR + 1) + x] = p * MAD(dp[r * SK + c], z[c], -Di[x]);
#else
          Ps[jl * (BR + 1) + x] = p;
          dSs[jl * (BR + 1) + x] = p * (dp[r * SK + c] - Di[x]);
#endif
        }
      }
      barrier(CLK_LOCAL_MEM_FENCE);

      /* dV_j += P_j,x dO_x and dK_j += dS_j,x Q_x over the block's queries, for this work-item's columns. */
      for (int x = 0; x < BR; x++) {
        float p[RPW], ds[RPW];
#pragma unroll
        for (int r = 0; r < RPW; r++) {
          p[r] = Ps[(jr + r * KR) * (BR + 1) + x];
          ds[r] = dSs[(jr + r * KR) * (BR + 1) + x];
        }
#pragma unroll
        for (int c = 0; c < CN; c++) {
          const float gv = Gs[x * RL + c * TPR + t], qv = Qs[x * RL + c * TPR + t];
#pragma unroll
          for (int r = 0; r < RPW; r++) {
            dva[r * CN + c] = MAD(p[r], gv, dva[r * CN + c]);
            dka[r * CN + c] = MAD(ds[r], qv, dka[r * CN + c]);
          }
        }
      }
    }
  }

#pragma unroll
  for (int r = 0; r < RPW; r++) {
    const int j = k0 + jr + r * KR;
    const long kd = dk_off + b * dk_sb + (long)j * dk_ss + hk * dk_sh;
    const long vd = dv_off + b * dv_sb + (long)j * dv_ss + hk * dv_sh;
#pragma unroll
    for (int c = 0; c < CN; c++)
      if (j < Sk) {
        fa_store(dk, kd + c * TPR + t, dka[r * CN + c] * scale);
        fa_store(dv, vd + c * TPR + t, dva[r * CN + c]);
      }
  }
}

/* Grid (ceil(Sq / BR) * GQ, Hq, B). Work-item (ir, t) owns queries q0 + ir + r * QR (r < RPW), columns
 * c * TPR + t of their dQ, and keys c * TPR + t of each key block. */
__kernel __attribute__((reqd_work_group_size(GQ, 1, 1))) void
flash_bwd_dq(__global const fa_t *q, long q_off, long q_sb, long q_ss, long q_sh,
             __global const fa_t *k, long k_off, long k_sb, long k_ss, long k_sh,
             __global const fa_t *v, long v_off, long v_sb, long v_ss, long v_sh,
             __global const fa_t *dout, long g_off, long g_sb, long g_ss, long g_sh,
             __global fa_t *dq, long dq_off, long dq_sb, long dq_ss, long dq_sh,
             __global const float *lse, long l_off, long l_sb, long l_sh, long l_ss,
             __global const float *ws, long di_off,
             int Sq, int Sk, int Hq, int group, int causal, float scale, float scale_log2 MASK_PARAMS DROP_PARAMS) {
  __local float Qs[BR * RL];
  __local float Gs[BR * RL];
  __local float Ks[BC * RL];
  __local float Vs[BC * RL];
  __local float dSs[BR * (BC + 1)];
#if FA_DROPOUT
  /* The tile's keep bits: a lane's keys are TPR apart, so it could draw only one per Philox call; the group
   * draws four per call here instead (within the local memory flash_bwd_dkdv takes beyond this kernel's). */
  __local uchar Zs[BR * BC];
#endif

  const int lid = get_local_id(0), ir = lid / TPR, t = lid % TPR;
  const int q0 = get_group_id(0) * BR;
  const int h = get_group_id(1), b = get_group_id(2);
  const int hk = h / group;
  const long diag = (long)Sk - Sq;

  const long qb = q_off + b * q_sb + h * q_sh;
  const long gb = g_off + b * g_sb + h * g_sh;
  for (int x = lid; x < BR * D; x += GQ) {
    const int rr = x / D, dd = x - rr * D, qi = q0 + rr;
    Qs[rr * RL + dd] = qi < Sq ? fa_load(q, qb + (long)qi * q_ss + dd) : 0.0f;
    Gs[rr * RL + dd] = qi < Sq ? fa_load(dout, gb + (long)qi * g_ss + dd) : 0.0f;
  }
  float l2[RPW], di[RPW];
  long last[RPW]; /* the last key each row sees */
#pragma unroll
  for (int r = 0; r < RPW; r++) {
    const int i = q0 + ir + r * QR;
    l2[r] = i < Sq ? row_lse2(lse[l_off + b * l_sb + h * l_sh + (long)i * l_ss]) : INFINITY;
    di[r] = i < Sq ? ws[di_off + ((long)b * Hq + h) * Sq + i] : 0.0f;
    last[r] = causal ? min((long)i + diag, (long)Sk - 1) : (long)Sk - 1;
  }
  float dqa[RPW * CN];
#pragma unroll
  for (int c = 0; c < RPW * CN; c++) dqa[c] = 0.0f;

  const long kb = k_off + b * k_sb + hk * k_sh;
  const long vb = v_off + b * v_sb + hk * v_sh;
  int kend = Sk;
  if (causal) kend = (int)clamp((long)min(q0 + BR, Sq) + diag, 0L, (long)Sk);
#if FA_BLOCK_MASK
  const __global uchar *mh = MASK_AT(b, h);
#endif

  for (int k0 = 0; k0 < kend; k0 += BC) {
#if FA_BLOCK_MASK
    const int tile = fa_block_tile(mh, m_sr, m_sc, bq, bk, q0, min(q0 + BR, Sq), k0, min(k0 + BC, Sk));
    if (tile == FA_TILE_SKIP) continue; /* uniform: every work-item skips the same barriers */
#endif
    barrier(CLK_LOCAL_MEM_FENCE); /* Q, dO staged (first block); the previous block's readers done */
    for (int x = lid; x < BC * D; x += GQ) {
      const int jj = x / D, dd = x - jj * D, kj = k0 + jj;
      Ks[jj * RL + dd] = kj < Sk ? fa_load(k, kb + (long)kj * k_ss + dd) : 0.0f;
      Vs[jj * RL + dd] = kj < Sk ? fa_load(v, vb + (long)kj * v_ss + dd) : 0.0f;
    }
#if FA_DROPOUT
    /* One Philox call per group of rows (i, i + 8) and keys (j, j + 1) (masks.h), by the group's first row in
     * the tile; BC is even, so key pairs never straddle it. */
    for (int y = lid; y < BR * (BC / 2); y += GQ) {
      const int rr = y / (BC / 2), jj = 2 * (y - rr * (BC / 2)), i = q0 + rr;
      if ((i & 8) && rr >= 8) continue; /* drawn with row i - 8 */
      uint w[4];
      fa_dropout_words(seed, drop_off, (uint)(b * Hq + h), (uint)i, (uint)(k0 + jj), w);
      const int e = (i & 8) ? 2 : 0; /* the words of row i; row i + 8 (when i % 16 < 8) has 2 and 3 */
      Zs[rr * BC + jj] = w[e] >= drop_thr;
      Zs[rr * BC + jj + 1] = w[e + 1] >= drop_thr;
      if (!(i & 8) && rr + 8 < BR) {
        Zs[(rr + 8) * BC + jj] = w[2] >= drop_thr;
        Zs[(rr + 8) * BC + jj + 1] = w[3] >= drop_thr;
      }
    }
#endif
    barrier(CLK_LOCAL_MEM_FENCE);

    /* s = Q_i . K_j and dp = dO_i . V_j for this work-item's queries i and keys j = c * TPR + t. */
    float s[RPW * SQ], dp[RPW * SQ];
#pragma unroll
    for (int c = 0; c < RPW * SQ; c++) s[c] = dp[c] = 0.0f;
#pragma unroll 4
    for (int dd = 0; dd < D; dd++) {
      float qd[RPW], gd[RPW];
#pragma unroll
      for (int r = 0; r < RPW; r++) qd[r] = Qs[(ir + r * QR) * RL + dd], gd[r] = Gs[(ir + r * QR) * RL + dd];
#pragma unroll
      for (int c = 0; c < SQ; c++) {
        const float kv = Ks[(c * TPR + t) * RL + dd], vv = Vs[(c * TPR + t) * RL + dd];
#pragma unroll
        for (int r = 0; r < RPW; r++) {
          s[r * SQ + c] = MAD(qd[r], kv, s[r * SQ + c]);
          dp[r * SQ + c] = MAD(gd[r], vv, dp[r * SQ + c]);
        }
      }
    }
#pragma unroll
    for (int r = 0; r < RPW; r++) {
#if FA_BLOCK_MASK
      const int i = q0 + ir + r * QR;
#endif
#pragma unroll
      for (int c = 0; c < SQ; c++) {
        const int x = c * TPR + t;
        float p = exp2(MAD(s[r * SQ + c], scale_log2, -l2[r]));
        if (k0 + x > last[r]) p = 0.0f;
#if FA_BLOCK_MASK
        if (tile == FA_TILE_PARTIAL && i < Sq && k0 + x < Sk && !fa_block_keep(mh, m_sr, m_sc, bq, bk, i, k0 + x))
          p = 0.0f;
#endif
#if FA_DROPOUT
        const float z = Zs[(ir + r * QR) * BC + x] ? drop_scale : 0.0f;
        dSs[(ir + r * QR) * (BC + 1) + x] = p * MAD(dp[r * SQ + c], z, -di[r]);
#else
        dSs[(ir + r * QR) * (BC + 1) + x] = p * (dp[r * SQ + c] - di[r]);
#endif
      }
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    /* dQ_i += dS_i,x K_x over the block's keys, for this work-item's columns. */
    for (int x = 0; x < BC; x++) {
      float ds[RPW];
#pragma unroll
      for (int r = 0; r < RPW; r++) ds[r] = dSs[(ir + r * QR) * (BC + 1) + x];
#pragma unroll
      for (int c = 0; c < CN; c++) {
        const float kv = Ks[x * RL + c * TPR + t];
#pragma unroll
        for (int r = 0; r < RPW; r++) dqa[r * CN + c] = MAD(ds[r], kv, dqa[r * CN + c]);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < RPW; r++) {
    const int i = q0 + ir + r * QR;
    const long ob = dq_off + b * dq_sb + (long)i * dq_ss + h * dq_sh;
#pragma unroll
    for (int c = 0; c < CN; c++)
      if (i < Sq) fa_store(dq, ob + c * TPR + t, dqa[r * CN + c] * scale);
  }
}
#endif /* TPR */

#if DQ_ATOMIC
/* dq = scale * the float32 accumulator, in dq's dtype and strides. Grid (Sq rounded up, Hq, B). */
__kernel void flash_bwd_dq_convert(__global const float *ws, long acc_off,
                                   __global fa_t *dq, long dq_off, long dq_sb, long dq_ss, long dq_sh,
                                   int Sq, int Hq, float scale) {
  const int i = get_global_id(0), h = get_global_id(1), b = get_global_id(2);
  if (i >= Sq) return;
  const long src = acc_off + (((long)b * Hq + h) * Sq + i) * D;
  const long dst = dq_off + b * dq_sb + (long)i * dq_ss + h * dq_sh;
  for (int d = 0; d < D; d++) fa_store(dq, dst + d, ws[src + d] * scale);
}
#endif

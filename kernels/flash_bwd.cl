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
 * This file holds what both layouts share (the parameters' checks, the helpers, flash_bwd_pre and
 * flash_bwd_dq_convert); src/opencl/cl_backward.c appends the layout's flash_bwd_dkdv and flash_bwd_dq:
 * kernels/flash_bwd_rows.cl (TPR = 1) or kernels/flash_bwd_tiles.cl (TPR > 1).
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
 *   TPR       work-items per row: 1, the row layout described here (flash_bwd_rows.cl); 8, the GPU layout
 *             (flash_bwd_tiles.cl, see the comment there; VEC unused, no DQ_ATOMIC).
 *   VEC       floats per vector (1, 2, 4, 8): divides BR, BC and D. Each work-item runs explicit vectors,
 *             which PoCL turns into AVX; whole rows per work-item need no barrier inside a tile's arithmetic.
 *   HAS_FMA   1 when the device does float32 fma in hardware (then MAD is fma, else mad)
 *   DQ_ATOMIC 1: dQ by atomics in flash_bwd_dkdv (then flash_bwd_dq_convert); 0: by flash_bwd_dq
 *   FA_BLOCK_MASK, FA_DROPOUT  0 or 1: the block-sparse mask and dropout of kernels/masks.h (the host then puts
 *             masks.h before this file). Both 0 compile exactly the dense kernels, arguments included.
 *   FA_INFER  0 or 1 (not with the two above, no DQ_ATOMIC): the inference options of kernels/masks.h, their
 *             arguments (INFER_PARAMS) after the walk's. Varlen: the grid's dimension 2 counts sequences; a group
 *             takes its sequence's span (SEQ_SETUP), leaves when its block starts past it, and works on the
 *             sequence's rows of the packed axes (batch 0; Di's rows are the token axis's). The band of causal and
 *             the window bounds every walk (fa_band_rows for a block of keys, fa_band_lo / fa_band_hi for a block
 *             of queries) and tiles wholly inside it need no per-score test. Softcap and ALiBi modify the base-2
 *             scores before P = exp2(s - lse2) (the softmax scale is then applied first), and softcap's factor
 *             1 - tanh^2 multiplies dS.
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
/* The argument lists of flash_bwd_dkdv and flash_bwd_dq, the same in both layouts' files (cl_backward.c sets
 * them in this order): q, k, v and dO, then the outputs, lse and the workspace, then the walk's sizes;
 * MASK_PARAMS and DROP_PARAMS (below) end them. */
#define BWD_INPUTS                                                       \
  __global const fa_t *q, long q_off, long q_sb, long q_ss, long q_sh,   \
      __global const fa_t *k, long k_off, long k_sb, long k_ss, long k_sh, \
      __global const fa_t *v, long v_off, long v_sb, long v_ss, long v_sh, \
      __global const fa_t *dout, long g_off, long g_sb, long g_ss, long g_sh
#define BWD_WALK \
  int Sq_all, int Sk_all, int Hq, int group, int causal, float scale, float scale_log2 MASK_PARAMS DROP_PARAMS INFER_PARAMS
#define BWD_DKDV_PARAMS                                                                       \
  BWD_INPUTS, __global fa_t *dk, long dk_off, long dk_sb, long dk_ss, long dk_sh,              \
      __global fa_t *dv, long dv_off, long dv_sb, long dv_ss, long dv_sh,                       \
      __global const float *lse, long l_off, long l_sb, long l_sh, long l_ss, __global float *ws, \
      long di_off, long dq_off, BWD_WALK
#define BWD_DQ_PARAMS                                                                                  \
  BWD_INPUTS, __global fa_t *dq, long dq_off, long dq_sb, long dq_ss, long dq_sh,                       \
      __global const float *lse, long l_off, long l_sb, long l_sh, long l_ss, __global const float *ws, \
      long di_off, BWD_WALK

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

#ifndef FA_INFER
#define FA_INFER 0
#endif
#if FA_INFER && (FA_BLOCK_MASK || FA_DROPOUT || DQ_ATOMIC)
#error "FA_INFER takes no block mask, dropout or DQ_ATOMIC"
#endif
#if FA_INFER
#define INFER_PARAMS FA_INFER_CL_PARAMS /* masks.h */
/* This group's sequence: query rows qfirst .. qfirst + Sq - 1 and keys kfirst .. kfirst + Sk - 1 of tensor batch
 * bt (varlen: batch 0 and the grid's b-th sequence; else all of batch b). */
#define SEQ_SETUP(b)                                                 \
  int Sq = Sq_all, Sk = Sk_all, qfirst = 0, kfirst = 0, bt = (b);   \
  if (varlen) {                                                      \
    fa_seq_span(cu_q + cuq_off, cuq_s, (b), Sq_all, &qfirst, &Sq);   \
    fa_seq_span(cu_k + cuk_off, cuk_s, (b), Sk_all, &kfirst, &Sk);   \
    bt = 0;                                                          \
  }
/* ALiBi's slope of head h of sequence b, in base 2 (0: none). */
#define SLOPE2(b, h) (has_alibi ? alibi[al_off + (long)(b) * al_sb + (long)(h) * al_sh] * FA_LOG2E : 0.0f)

/* The base-2 score of raw q.k x for a row at diagonal position diag and key j: scaled, capped, ALiBi'd; *g gets
 * softcap's factor on dS (1 without it). */
inline float mod_score(float x, float scale_log2, float softcap2, float slope2, long diag, int j, float *g) {
  x *= scale_log2;
  *g = 1.0f;
  if (softcap2 > 0.0f) {
    x = fa_softcap(x, softcap2);
    *g = fa_softcap_grad(x, softcap2);
  }
  return slope2 != 0.0f ? x + fa_alibi(slope2, diag, j) : x;
}
#else
#define INFER_PARAMS
#define SEQ_SETUP(b) const int Sq = Sq_all, Sk = Sk_all, qfirst = 0, kfirst = 0, bt = (b);
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

/* Standard attention (FA_ALGO_STANDARD) on CUDA: the kernels around the cuBLAS GEMMs of src/cuda/cu_standard.c.
 * The Sq x Sk scores live in device memory; these kernels gather the operands, take the masked softmax, form
 * dS, and scatter the results to the caller's layout.
 *
 * Workspace, per unit u = b * Hkv + kv_head (a kv head and the g = Hq / Hkv query heads that read it; M = g Sq
 * rows ordered (query head in the group, position): row r is query head kv_head * g + r / Sq at r % Sq).
 * Row-major, ld_d = head dim rounded up to 8, ld_k = Sk rounded up to 8 (16-byte rows for cuBLAS):
 *   Q, dO [u][M][ld_d], K, V [u][Sk][ld_d]    storage dtype (fa_elem), gathered from any strides
 *   S     [u][M][ld_k] float32                scaled scores (the GEMM's alpha), later dP
 *   P     [u][M][ld_k] fa_elem                probabilities, later dS (float32 P may be S itself)
 *   O, dQ [u][M][ld_d], dK, dV [u][Sk][ld_d] float32 GEMM results; L, D [u][M] float32 lse, Di
 * Every kernel takes the unit of grid index y as u0 + blockIdx.y (a launch covers at most 65535 units).
 * Columns j >= Sk of S and P are never read (the GEMMs stop at Sk), so nothing pads them.
 * FA_DTYPE: 0 float32, 1 float16, 2 bfloat16 (cuda_common.cuh). */
#include "cuda_common.cuh"

#define FA_STD_THREADS 256
#define FA_LOG2E 1.4426950408889634f

/* Gather src [B, S, H, D] (element strides sb, ss, sh) into dst [u][rows][ld], rows = g * S, in the same
 * dtype. Grid: x covers rows * D elements per unit (FA_STD_THREADS per block), y the units. */
extern "C" __global__ void __launch_bounds__(FA_STD_THREADS)
    fa_std_pack(const fa_elem *src, long long sb, long long ss, long long sh, fa_elem *dst, long long ld,
                long long seqlen, long long g, long long heads_kv, long long head_dim, long long u0) {
  const long long e = (long long)blockIdx.x * FA_STD_THREADS + threadIdx.x, u = u0 + blockIdx.y;
  if (e >= g * seqlen * head_dim) return;
  const long long r = e / head_dim, d = e % head_dim;
  const long long b = u / heads_kv, h = (u % heads_kv) * g + r / seqlen, s = r % seqlen;
  dst[(u * g * seqlen + r) * ld + d] = src[b * sb + s * ss + h * sh + d];
}

/* Combine two partial (max, sum) pairs of an online softmax in base 2. Maxima start at -FA_FLT_MAX, so a
 * difference is never inf - inf, and an empty part (sum 0) contributes 0. */
static __device__ __forceinline__ void fa_merge(float &m, float &l, float m2, float l2) {
  const float mx = fmaxf(m, m2);
  l = l * exp2f(m - mx) + l2 * exp2f(m2 - mx);
  m = mx;
}

/* (max, sum) of the whole block, in every thread. */
static __device__ __forceinline__ void fa_block_merge(float &m, float &l) {
  __shared__ float sm[FA_STD_THREADS / 32], sl[FA_STD_THREADS / 32];
  for (int off = 16; off > 0; off /= 2)
    fa_merge(m, l, __shfl_xor_sync(0xffffffffu, m, off), __shfl_xor_sync(0xffffffffu, l, off));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) sm[warp] = m, sl[warp] = l;
  __syncthreads();
  m = sm[0], l = sl[0];
  for (int w = 1; w < FA_STD_THREADS / 32; w++) fa_merge(m, l, sm[w], sl[w]);
}

/* Masked softmax of one row per block: P[r][j] = exp(S[r][j] - max) / sum for the visible keys j < limit
 * (limit = Sk, or with causal min(Sk, pos + Sk - Sq + 1), pos = r % Sq), 0 for the masked ones; a row with
 * every key masked gets P = 0 and lse = -inf. S already carries the softmax scale. lse goes to L[u][r] when
 * L is not null. P may be S itself (float32): each element is read, then written, by one thread.
 * Grid: x = M rows, y = units; FA_STD_THREADS threads. */
extern "C" __global__ void __launch_bounds__(FA_STD_THREADS)
    fa_std_softmax(const float *S, fa_elem *P, float *L, long long ld, long long rows, int seqlen_q, int seqlen_k,
                   int causal, long long u0) {
  const long long r = blockIdx.x, u = u0 + blockIdx.y;
  const float *s = S + (u * rows + r) * ld;
  fa_elem *p = P + (u * rows + r) * ld;
  int limit = seqlen_k;
  if (causal) {
    const long long lim = (long long)(r % seqlen_q) + seqlen_k - seqlen_q + 1;
    limit = lim < limit ? (int)(lim > 0 ? lim : 0) : limit;
  }
  float m = -FA_FLT_MAX, l = 0.0f; /* base 2 */
  for (int j = threadIdx.x; j < limit; j += FA_STD_THREADS) {
    const float x = s[j] * FA_LOG2E;
    if (x > m) {
      l = l * exp2f(m - x) + 1.0f;
      m = x;
    } else {
      l += exp2f(x - m);
    }
  }
  fa_block_merge(m, l);
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  for (int j = threadIdx.x; j < seqlen_k; j += FA_STD_THREADS)
    p[j] = fa_from_float(j < limit ? exp2f(s[j] * FA_LOG2E - m) * inv : 0.0f);
  if (L && threadIdx.x == 0) L[u * rows + r] = limit > 0 ? (m + log2f(l)) * FA_LN2 : FA_NEG_INF;
}

/* Write o (and lse) from O [u][M][ld] and L [u][M]: the forward's only write to the caller's memory, and its
 * last launch, so that an error before it leaves o and lse unwritten. o: [B, Sq, Hq, D] with strides
 * (ob, os, oh); lse: [B, Hq, Sq] with strides (lb, lh, ls), written when not null.
 * Grid: x covers M * D per unit, y the units. */
extern "C" __global__ void __launch_bounds__(FA_STD_THREADS)
    fa_std_unpack(const float *O, const float *L, long long ld, fa_elem *o, long long ob, long long os, long long oh,
                  float *lse, long long lb, long long lh, long long ls, long long seqlen_q, long long g,
                  long long heads_kv, long long head_dim, long long u0) {
  const long long e = (long long)blockIdx.x * FA_STD_THREADS + threadIdx.x, u = u0 + blockIdx.y;
  const long long rows = g * seqlen_q;
  if (e >= rows * head_dim) return;
  const long long r = e / head_dim, d = e % head_dim;
  const long long b = u / heads_kv, h = (u % heads_kv) * g + r / seqlen_q, s = r % seqlen_q;
  o[b * ob + s * os + h * oh + d] = fa_from_float(O[(u * rows + r) * ld + d]);
  if (lse && d == 0) lse[b * lb + h * lh + s * ls] = L[u * rows + r];
}

/* Di = rowsum(dO o O) of each query row, from the caller's dout and o ([B, Sq, Hq, D], strides (b, s, h)),
 * into D [u][M]: one warp per row. Grid: x = ceil(M / (FA_STD_THREADS / 32)), y = units. */
extern "C" __global__ void __launch_bounds__(FA_STD_THREADS)
    fa_std_rowdot(const fa_elem *o, long long ob, long long os, long long oh, const fa_elem *dout, long long gb,
                  long long gs, long long gh, float *D, long long seqlen_q, long long g, long long heads_kv,
                  long long head_dim, long long u0) {
  const long long rows = g * seqlen_q, u = u0 + blockIdx.y;
  const long long r = (long long)blockIdx.x * (FA_STD_THREADS / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return; /* whole warps leave together: the shuffles below see all 32 lanes */
  const long long b = u / heads_kv, h = (u % heads_kv) * g + r / seqlen_q, s = r % seqlen_q;
  const fa_elem *x = o + b * ob + s * os + h * oh, *y = dout + b * gb + s * gs + h * gh;
  float acc = 0.0f;
  for (long long d = lane; d < head_dim; d += 32) acc += fa_load(x + d) * fa_load(y + d);
  for (int off = 16; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (lane == 0) D[u * rows + r] = acc;
}

/* dS = P o (dP - Di), in place over P: P [u][M][ld] (fa_elem), dP [u][M][ld] float32, D [u][M]. Masked
 * entries have P = 0 and get dS = 0. Grid: x = M rows, y = units. */
extern "C" __global__ void __launch_bounds__(FA_STD_THREADS)
    fa_std_dscore(fa_elem *P, const float *dP, const float *D, long long ld, long long rows, int seqlen_k,
                  long long u0) {
  const long long r = blockIdx.x, u = u0 + blockIdx.y;
  fa_elem *p = P + (u * rows + r) * ld;
  const float *dp = dP + (u * rows + r) * ld;
  const float di = D[u * rows + r];
  for (int j = threadIdx.x; j < seqlen_k; j += FA_STD_THREADS) p[j] = fa_from_float(fa_load(p + j) * (dp[j] - di));
}

/* Write dq, dk and dv from dQ [u][M][ld], dK and dV [u][Sk][ld] (float32): the backward's only write to the
 * caller's memory, and its last launch. dq: [B, Sq, Hq, D]; dk, dv: [B, Sk, Hkv, D]; strides (b, s, h). With
 * GQA the GEMMs have already summed dk and dv over the group's query heads.
 * Grid: x covers max(M, Sk) * D per unit, y the units. */
extern "C" __global__ void __launch_bounds__(FA_STD_THREADS)
    fa_std_unpack_bwd(const float *dQ, const float *dK, const float *dV, long long ld, fa_elem *dq, long long qb,
                      long long qs, long long qh, fa_elem *dk, long long kb, long long ks, long long kh, fa_elem *dv,
                      long long vb, long long vs, long long vh, long long seqlen_q, long long seqlen_k, long long g,
                      long long heads_kv, long long head_dim, long long u0) {
  const long long e = (long long)blockIdx.x * FA_STD_THREADS + threadIdx.x, u = u0 + blockIdx.y;
  const long long rows = g * seqlen_q, r = e / head_dim, d = e % head_dim;
  const long long b = u / heads_kv, kv = u % heads_kv;
  if (r < rows) {
    const long long h = kv * g + r / seqlen_q, s = r % seqlen_q;
    dq[b * qb + s * qs + h * qh + d] = fa_from_float(dQ[(u * rows + r) * ld + d]);
  }
  if (r < seqlen_k) {
    const long long at = (u * seqlen_k + r) * ld + d;
    dk[b * kb + r * ks + kv * kh + d] = fa_from_float(dK[at]);
    dv[b * vb + r * vs + kv * vh + d] = fa_from_float(dV[at]);
  }
}

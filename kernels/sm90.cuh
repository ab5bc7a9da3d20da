/* Hopper (sm_90a) building blocks shared by the sm_90 kernels: mbarriers, TMA tile loads, warpgroup MMA
 * (wgmma) shared-memory descriptors and fences, register reallocation and named barriers. Plain inline PTX,
 * no toolkit header (NVRTC may have none). The wgmma instructions themselves are in sm90_wgmma.cuh.
 *
 * Shared-memory tiles are kept in the layout TMA writes with CU_TENSOR_MAP_SWIZZLE_128B: a tile of R rows
 * of a 16-bit tensor is stored as ceil(D / 64) slabs, slab s holding columns [64 s, 64 s + 64) of every row,
 * R rows of 128 bytes each; within a row, 16-byte chunk c of row r sits at chunk c ^ (r % 8). Slabs start
 * on 1024-byte boundaries (the swizzle repeats every 8 rows), which is what the wgmma descriptors assume. */
#ifndef FA_SM90_CUH
#define FA_SM90_CUH

#include "cuda_common.cuh"
#include "cuda_params.h" /* fa_tmap */

/* ---- mbarriers (64-bit, in shared memory) ---- */

static __device__ __forceinline__ void fa_mbar_init(unsigned bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}

/* Makes the initialisations visible to the async proxy (TMA) and to the other threads; then __syncthreads. */
static __device__ __forceinline__ void fa_mbar_init_fence(void) {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

static __device__ __forceinline__ void fa_mbar_arrive(unsigned bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}

/* One arrival that also announces `bytes` of TMA transactions the phase must wait for. */
static __device__ __forceinline__ void fa_mbar_arrive_expect_tx(unsigned bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}

/* Wait until the phase of parity `parity` has completed. A freshly initialised barrier is in phase 0, so
 * waiting for parity 1 returns at once: a producer waits for "empty" with the parity opposite to the
 * consumer's "full" wait, and the first round passes. */
static __device__ __forceinline__ void fa_mbar_wait(unsigned bar, unsigned parity) {
  unsigned done;
  do {
    asm volatile(
        "{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}

/* ---- TMA ---- */

/* The 4-D box at coordinates (c0 innermost .. c3) of tensor map `map` into shared memory at dst, completing
 * `bar`'s transactions. Elements outside the tensor arrive as zeros (and still count as bytes). */
static __device__ __forceinline__ void fa_tma_load4(unsigned dst, const fa_tmap *map, unsigned bar, int c0, int c1,
                                                    int c2, int c3) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5, %6}], [%2];"
      ::"r"(dst), "l"((unsigned long long)map), "r"(bar), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
      : "memory");
}

/* `bytes` (a multiple of 16) from global src to shared dst, both 16-byte aligned, completing `bar`'s
 * transactions: the 1-D bulk copy, for vectors beside the tiles. */
static __device__ __forceinline__ void fa_bulk_load(unsigned dst, const void *src, unsigned bytes, unsigned bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
               ::"r"(dst), "l"(src), "r"(bytes), "r"(bar)
               : "memory");
}

/* dst[i] += src[i] for `bytes` / 4 floats, global dst, shared src (16-byte aligned, bytes a multiple of 16):
 * the reduction runs in L2, ordered as one operation; completes with the thread's bulk groups. */
static __device__ __forceinline__ void fa_bulk_add_f32(void *dst, unsigned src, unsigned bytes) {
  asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;" ::"l"(dst), "r"(src),
               "r"(bytes)
               : "memory");
}
static __device__ __forceinline__ void fa_bulk_commit(void) { asm volatile("cp.async.bulk.commit_group;" ::: "memory"); }
/* Wait until at most N of this thread's bulk groups still read their shared source / are incomplete. */
template <int N> static __device__ __forceinline__ void fa_bulk_wait_read(void) {
  asm volatile("cp.async.bulk.wait_group.read %0;" ::"n"(N) : "memory");
}
template <int N> static __device__ __forceinline__ void fa_bulk_wait(void) {
  asm volatile("cp.async.bulk.wait_group %0;" ::"n"(N) : "memory");
}

/* Fetch the tensor map into the cache ahead of its first use. */
static __device__ __forceinline__ void fa_tma_prefetch_map(const fa_tmap *map) {
  asm volatile("prefetch.tensormap [%0];" ::"l"((unsigned long long)map) : "memory");
}

/* ---- warpgroup MMA ---- */

/* Descriptor of a 128-byte-swizzled operand in shared memory (the layout above). K-major (the reduction
 * dimension contiguous, Q and K in S = Q K^T): rows at 128 bytes, 8-row groups at 1024 bytes (SBO); the
 * leading offset is unused. Stepping k by 16 elements inside a slab adds 32 bytes to the start address. */
static __device__ __forceinline__ unsigned long long fa_wgmma_desc_k(unsigned addr) {
  return (unsigned long long)((addr >> 4) & 0x3FFF) | (1ull << 16) | (64ull << 32) | (1ull << 62);
}

/* MN-major (the output dimension contiguous: V in O += P V, whose rows are keys = the reduction dimension):
 * 64-element slabs of N at `slab_bytes` apart (LBO), 8 keys at 128 bytes, 8-key groups at 1024 bytes (SBO).
 * Stepping k by 16 keys adds 2048 bytes. */
static __device__ __forceinline__ unsigned long long fa_wgmma_desc_mn(unsigned addr, unsigned slab_bytes) {
  return (unsigned long long)((addr >> 4) & 0x3FFF) | ((unsigned long long)((slab_bytes >> 4) & 0x3FFF) << 16) |
         (64ull << 32) | (1ull << 62);
}

/* Orders this warpgroup's register and shared-memory accesses before the wgmma that follow. */
static __device__ __forceinline__ void fa_wgmma_fence(void) { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }

static __device__ __forceinline__ void fa_wgmma_commit(void) {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}

/* Wait until at most N committed wgmma groups are still in flight. */
template <int N> static __device__ __forceinline__ void fa_wgmma_wait(void) {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}

/* Keeps the compiler from moving accesses of an accumulator across wgmma fences and waits. */
static __device__ __forceinline__ void fa_reg_fence(float &r) { asm volatile("" : "+f"(r)::"memory"); }
static __device__ __forceinline__ void fa_reg_fence(unsigned &r) { asm volatile("" : "+r"(r)::"memory"); }

/* Ordinary shared-memory stores become visible to the async proxy (wgmma operands, TMA stores) after this
 * and a barrier. */
static __device__ __forceinline__ void fa_fence_proxy_async(void) {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

/* ---- registers and barriers ---- */

/* Give registers back (the producer warpgroup) or take them (the consumers); every warp of a warpgroup
 * executes it with the same count. */
template <int N> static __device__ __forceinline__ void fa_regs_dealloc(void) {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(N));
}
template <int N> static __device__ __forceinline__ void fa_regs_alloc(void) {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(N));
}

/* Named barriers among `threads` threads (a multiple of 32): sync waits, arrive does not. Id 0 is
 * __syncthreads'. */
static __device__ __forceinline__ void fa_named_sync(unsigned id, unsigned threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}
static __device__ __forceinline__ void fa_named_arrive(unsigned id, unsigned threads) {
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

/* ---- a producer warp's walk over the tiles a block mask leaves ---- */

/* Tiles [start, n) in order, each lane classifying one tile of a window of 32 (classify(j) gives
 * FA_TILE_SKIP, _PARTIAL or _FULL of kernels/masks.h) and the window's ballot kept: one round trip to the mask
 * per 32 tiles, where a search started afresh at every tile paid one per tile visited, on the producer's
 * path (D 64 at density 1/2 ran at 0.68x the dense time). every: visit skipped tiles too (ordered dQ). */
struct fa_tile_walk {
  int base, n, c;
  unsigned hit;
};

static __device__ __forceinline__ fa_tile_walk fa_walk_start(int start, int n) { return {start - 32, n, 0, 0u}; }

template <class F>
static __device__ __forceinline__ int fa_walk_next(fa_tile_walk &w, int lane, bool every, F classify, int *cls) {
  while (!w.hit) {
    w.base += 32;
    if (w.base >= w.n) {
      *cls = 0; /* FA_TILE_SKIP */
      return w.n;
    }
    const int j = w.base + lane;
    w.c = j < w.n ? classify(j) : 0;
    w.hit = __ballot_sync(0xffffffffu, j < w.n && (every || w.c != 0));
  }
  const int first = __ffs(w.hit) - 1;
  w.hit &= w.hit - 1;
  *cls = __shfl_sync(0xffffffffu, w.c, first);
  return w.base + first;
}

#endif

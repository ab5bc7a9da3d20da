/* kernels/cuda_common.cuh for the host (tests/decode_emu.cpp): one block at a time, one std::thread per CUDA
 * thread; the warp collectives (shfl, ldmatrix, mma) go through per-warp slots and barriers, cp.async is a
 * synchronous copy. Defines the real header's include guard, so kernels/decode.cu included after it gets this one. */
#ifndef FA_CUDA_COMMON_CUH
#define FA_CUDA_COMMON_CUH
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
using std::max;
using std::min;
#ifndef FA_DTYPE
#define FA_DTYPE 0
#endif
#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__ static
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
static inline unsigned __float_as_uint(float f) { unsigned i; memcpy(&i, &f, 4); return i; }
#define FA_NEG_INF __int_as_float(0xff800000)
#define FA_FLT_MAX 3.402823466e+38f
#define FA_LN2 0.6931471805599453f
#if FA_DTYPE == 0
typedef float fa_elem;
#else
typedef unsigned short fa_elem;
#endif
struct emu_dim { int x, y, z; };
extern thread_local emu_dim threadIdx, blockIdx;
static const emu_dim blockDim = {128, 1, 1}, gridDim = {1, 1, 1};
#define _Alignas(n) alignas(n)
extern unsigned char *emu_smem;
struct emu_warp { std::barrier<> *bar; uint32_t u[32][8]; float f[32]; };
extern emu_warp emu_warps[8];
extern std::barrier<> *emu_block_bar;
static inline emu_warp &emu_w() { return emu_warps[threadIdx.x / 32]; }
static inline int emu_lane() { return threadIdx.x % 32; }
static inline void __syncwarp() { emu_w().bar->arrive_and_wait(); }
static inline void __syncthreads() { emu_block_bar->arrive_and_wait(); }
static inline float __shfl_xor_sync(unsigned, float v, int off) {
  emu_warp &w = emu_w();
  w.f[emu_lane()] = v;
  w.bar->arrive_and_wait();
  const float r = w.f[emu_lane() ^ off];
  w.bar->arrive_and_wait();
  return r;
}
static inline float fa_f16_to_float(unsigned short h) { _Float16 x; memcpy(&x, &h, 2); return (float)x; }
static inline unsigned short fa_float_to_f16(float f) { _Float16 x = (_Float16)f; unsigned short h; memcpy(&h, &x, 2); return h; }
static inline float fa_bf16_to_float(unsigned short h) { return __uint_as_float((unsigned)h << 16); }
static inline unsigned short fa_float_to_bf16(float f) {
  unsigned u = __float_as_uint(f);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (unsigned short)(u >> 16);
}
static inline float emu_h(unsigned short h) {
#if FA_DTYPE == 2
  return fa_bf16_to_float(h);
#else
  return fa_f16_to_float(h);
#endif
}
static inline float fa_load(const fa_elem *p) {
#if FA_DTYPE == 0
  return *p;
#else
  return emu_h(*p);
#endif
}
static inline fa_elem fa_from_float(float f) {
#if FA_DTYPE == 0
  return f;
#elif FA_DTYPE == 1
  return fa_float_to_f16(f);
#else
  return fa_float_to_bf16(f);
#endif
}
static inline unsigned fa_smem_addr(const void *p) { return (unsigned)((const unsigned char *)p - emu_smem); }
static inline void fa_cp_async16(unsigned dst, const void *src, int src_bytes) {
  if (src_bytes == 16) memcpy(emu_smem + dst, src, 16);
  else memset(emu_smem + dst, 0, 16);
}
static inline void fa_cp_async_commit(void) {}
static inline void fa_cp_async_wait_all(void) {}
static inline unsigned short emu_sh(unsigned addr) { unsigned short h; memcpy(&h, emu_smem + addr, 2); return h; }
static inline void fa_ldmatrix_x4(unsigned r[4], unsigned addr) {
  emu_warp &w = emu_w();
  const int l = emu_lane();
  w.u[l][0] = addr;
  w.bar->arrive_and_wait();
  for (int i = 0; i < 4; i++) {
    const unsigned row = w.u[i * 8 + l / 4][0];
    r[i] = emu_sh(row + 4 * (l % 4)) | (unsigned)emu_sh(row + 4 * (l % 4) + 2) << 16;
  }
  w.bar->arrive_and_wait();
}
static inline void fa_ldmatrix_x4_trans(unsigned r[4], unsigned addr) {
  emu_warp &w = emu_w();
  const int l = emu_lane();
  w.u[l][0] = addr;
  w.bar->arrive_and_wait();
  for (int i = 0; i < 4; i++) {
    const unsigned r0 = w.u[i * 8 + 2 * (l % 4)][0], r1 = w.u[i * 8 + 2 * (l % 4) + 1][0];
    r[i] = emu_sh(r0 + 2 * (l / 4)) | (unsigned)emu_sh(r1 + 2 * (l / 4)) << 16;
  }
  w.bar->arrive_and_wait();
}
static inline void fa_mma_16816(float d[4], const unsigned a[4], unsigned b0, unsigned b1) {
  emu_warp &w = emu_w();
  const int l = emu_lane();
  for (int i = 0; i < 4; i++) w.u[l][i] = a[i];
  w.u[l][4] = b0, w.u[l][5] = b1;
  w.bar->arrive_and_wait();
  float A[16][16], B[16][8];
  for (int L = 0; L < 32; L++) {
    const int g = L / 4, t = L % 4;
    for (int e = 0; e < 2; e++) {
      const int sh = 16 * e;
      A[g][2 * t + e] = emu_h((unsigned short)(w.u[L][0] >> sh));
      A[g + 8][2 * t + e] = emu_h((unsigned short)(w.u[L][1] >> sh));
      A[g][2 * t + 8 + e] = emu_h((unsigned short)(w.u[L][2] >> sh));
      A[g + 8][2 * t + 8 + e] = emu_h((unsigned short)(w.u[L][3] >> sh));
      B[2 * t + e][g] = emu_h((unsigned short)(w.u[L][4] >> sh));
      B[2 * t + 8 + e][g] = emu_h((unsigned short)(w.u[L][5] >> sh));
    }
  }
  w.bar->arrive_and_wait();
  const int g = l / 4, t = l % 4;
  for (int i = 0; i < 4; i++) {
    const int row = g + 8 * (i / 2), col = 2 * t + (i % 2);
    float s = 0.0f;
    for (int k = 0; k < 16; k++) s += A[row][k] * B[k][col];
    d[i] += s;
  }
}
static inline unsigned fa_pack2(float lo, float hi) {
#if FA_DTYPE == 2
  return fa_float_to_bf16(lo) | (unsigned)fa_float_to_bf16(hi) << 16;
#else
  return fa_float_to_f16(lo) | (unsigned)fa_float_to_f16(hi) << 16;
#endif
}
#endif

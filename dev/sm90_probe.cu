/* sm90_probe: checks, on a Hopper GPU, each layout assumption kernels/sm90.cuh makes, one at a time, so that a
 * wrong result of the Hopper kernels can be pinned to a piece:
 *   tma      a TMA load with 128-byte swizzle puts 16-byte chunk c of row r at chunk c ^ (r % 8);
 *   ss       wgmma m64n64k16 over K = 128 with A and B K-major from TMA tiles (two slabs): S = Q K^T;
 *   rs       wgmma m64n128k16 over K = 64 with A from registers (mma fragment layout) and B MN-major from a
 *            TMA tile of two slabs (LBO): O = P V;
 *   rs-acc   the same, accumulating onto a nonzero O (scale_d = 1).
 * Built by dev/meson.build as BUILD/dev/sm90_probe where nvcc is found (linked against the driver's stub, so it
 * builds without a GPU); `dev/gpu_run.sh BUILD probe` runs it on the GPU machine.
 * Prints one PASS/FAIL line per check with the largest error; exit status 1 on any failure. */
#include <cuda.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sm90.cuh"
#include "sm90_wgmma.cuh"

#define CK(x)                                                                                                 \
  do {                                                                                                        \
    CUresult r_ = (x);                                                                                        \
    if (r_ != CUDA_SUCCESS) {                                                                                 \
      const char *s_ = "?";                                                                                   \
      cuGetErrorName(r_, &s_);                                                                                \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, s_);                                         \
      exit(1);                                                                                                \
    }                                                                                                         \
  } while (0)

/* Raw copy of a TMA-loaded 64 x 64 tile (one slab) of smem to out. */
extern "C" __global__ void probe_tma(const __grid_constant__ fa_tmap map, unsigned short *out) {
  __shared__ __align__(1024) unsigned char tile[64 * 128];
  __shared__ __align__(8) unsigned long long bar;
  const unsigned b = fa_smem_addr(&bar), t = fa_smem_addr(tile);
  if (threadIdx.x == 0) {
    fa_mbar_init(b, 1);
    fa_mbar_init_fence();
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    fa_mbar_arrive_expect_tx(b, 64 * 128);
    fa_tma_load4(t, &map, b, 0, 0, 0, 0);
  }
  fa_mbar_wait(b, 0);
  for (int i = threadIdx.x; i < 64 * 64; i += blockDim.x) out[i] = ((unsigned short *)tile)[i];
}

/* S[64][64] = A[64][128] B[64][128]^T, A and B from two-slab TMA tiles. One warpgroup. */
extern "C" __global__ void probe_ss(const __grid_constant__ fa_tmap ma, const __grid_constant__ fa_tmap mb, float *out) {
  __shared__ __align__(1024) unsigned char sa[2 * 64 * 128];
  __shared__ __align__(1024) unsigned char sb[2 * 64 * 128];
  __shared__ __align__(8) unsigned long long bar;
  const unsigned b = fa_smem_addr(&bar), a0 = fa_smem_addr(sa), b0 = fa_smem_addr(sb);
  if (threadIdx.x == 0) {
    fa_mbar_init(b, 1);
    fa_mbar_init_fence();
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    fa_mbar_arrive_expect_tx(b, 4 * 64 * 128);
    for (int s = 0; s < 2; s++) {
      fa_tma_load4(a0 + s * 8192, &ma, b, 64 * s, 0, 0, 0);
      fa_tma_load4(b0 + s * 8192, &mb, b, 64 * s, 0, 0, 0);
    }
  }
  fa_mbar_wait(b, 0);
  float d[32];
  for (int i = 0; i < 32; i++) d[i] = 0.f;
  fa_wgmma_fence();
  for (int kk = 0; kk < 8; kk++) {
    const unsigned off = (kk >> 2) * 8192 + (kk & 3) * 32;
    fa_wgmma<64>::ss(d, fa_wgmma_desc_k(a0 + off), fa_wgmma_desc_k(b0 + off), kk > 0);
  }
  fa_wgmma_commit();
  fa_wgmma_wait<0>();
  for (int i = 0; i < 32; i++) fa_reg_fence(d[i]);
  const int w = threadIdx.x >> 5, l = threadIdx.x & 31;
  for (int i = 0; i < 8; i++)
    for (int h = 0; h < 2; h++)
      for (int e = 0; e < 2; e++) out[(16 * w + l / 4 + 8 * h) * 64 + 8 * i + 2 * (l % 4) + e] = d[4 * i + 2 * h + e];
}

/* O[64][128] (+)= P[64][64] V[64][128]: P from global into the A fragments, V a two-slab TMA tile. */
extern "C" __global__ void probe_rs(const __grid_constant__ fa_tmap mv, const unsigned short *pg, float *out, int acc) {
  __shared__ __align__(1024) unsigned char sv[2 * 64 * 128];
  __shared__ __align__(8) unsigned long long bar;
  const unsigned b = fa_smem_addr(&bar), v0 = fa_smem_addr(sv);
  if (threadIdx.x == 0) {
    fa_mbar_init(b, 1);
    fa_mbar_init_fence();
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    fa_mbar_arrive_expect_tx(b, 2 * 64 * 128);
    for (int s = 0; s < 2; s++) fa_tma_load4(v0 + s * 8192, &mv, b, 64 * s, 0, 0, 0);
  }
  fa_mbar_wait(b, 0);
  const int w = threadIdx.x >> 5, l = threadIdx.x & 31, r = 16 * w + l / 4, k = 2 * (l % 4);
  unsigned a[4][4];
  for (int kk = 0; kk < 4; kk++) {
    const unsigned short *p = pg + 16 * kk;
    a[kk][0] = p[r * 64 + k] | (unsigned)p[r * 64 + k + 1] << 16;
    a[kk][1] = p[(r + 8) * 64 + k] | (unsigned)p[(r + 8) * 64 + k + 1] << 16;
    a[kk][2] = p[r * 64 + k + 8] | (unsigned)p[r * 64 + k + 9] << 16;
    a[kk][3] = p[(r + 8) * 64 + k + 8] | (unsigned)p[(r + 8) * 64 + k + 9] << 16;
  }
  float d[64];
  for (int i = 0; i < 64; i++) d[i] = acc ? 1.f : 0.f;
  fa_wgmma_fence();
  for (int kk = 0; kk < 4; kk++) fa_wgmma<128>::rs<1>(d, a[kk], fa_wgmma_desc_mn(v0 + kk * 2048, 8192), 1);
  fa_wgmma_commit();
  fa_wgmma_wait<0>();
  for (int i = 0; i < 64; i++) fa_reg_fence(d[i]);
  for (int i = 0; i < 16; i++)
    for (int h = 0; h < 2; h++)
      for (int e = 0; e < 2; e++) out[(r + 8 * h) * 128 + 8 * i + k + e] = d[4 * i + 2 * h + e];
}

static unsigned short to_bf16(float f) {
  unsigned u;
  memcpy(&u, &f, 4);
  return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
static float from_bf16(unsigned short h) {
  unsigned u = (unsigned)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* A 2-D [rows][cols] bf16 matrix as a 4-D map (cols, rows, 1, 1) with boxes of 64 x 64, 128-byte swizzle. */
static void make_map(fa_tmap *map, CUdeviceptr p, int rows, int cols) {
  cuuint64_t dims[4] = {(cuuint64_t)cols, (cuuint64_t)rows, 1, 1};
  cuuint64_t strides[3] = {(cuuint64_t)cols * 2, (cuuint64_t)rows * cols * 2, (cuuint64_t)rows * cols * 2};
  cuuint32_t box[4] = {64, 64, 1, 1}, es[4] = {1, 1, 1, 1};
  CK(cuTensorMapEncodeTiled((CUtensorMap *)map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, (void *)p, dims, strides, box, es,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_NONE,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE));
}

static void *upload(const void *h, size_t n) {
  void *d;
  if (cudaMalloc(&d, n) != cudaSuccess || cudaMemcpy(d, h, n, cudaMemcpyHostToDevice) != cudaSuccess) {
    fprintf(stderr, "cudaMalloc/cudaMemcpy failed\n");
    exit(1);
  }
  return d;
}

static void download(void *h, const void *d, size_t n) {
  cudaError_t e = cudaDeviceSynchronize();
  if (e == cudaSuccess) e = cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost);
  if (e != cudaSuccess) {
    fprintf(stderr, "kernel or copy failed: %s\n", cudaGetErrorString(e));
    exit(1);
  }
}

static int verdict(const char *what, double err, double tol) {
  printf("%s %-8s max error %.3g\n", err <= tol ? "PASS" : "FAIL", what, err);
  return err <= tol ? 0 : 1;
}

int main(void) {
  int bad = 0;
  srand(1);
  /* Random bf16 matrices: A [64][128], B [64][128], P [64][64], V [64][128]. */
  static unsigned short A[64 * 128], Bm[64 * 128], P[64 * 64], V[64 * 128];
  unsigned short *mats[4] = {A, Bm, P, V};
  const int sizes[4] = {64 * 128, 64 * 128, 64 * 64, 64 * 128};
  for (int m = 0; m < 4; m++)
    for (int i = 0; i < sizes[m]; i++) mats[m][i] = to_bf16((float)rand() / RAND_MAX * 2.f - 1.f);
  unsigned short *dA = (unsigned short *)upload(A, sizeof A), *dB = (unsigned short *)upload(Bm, sizeof Bm);
  unsigned short *dP = (unsigned short *)upload(P, sizeof P), *dV = (unsigned short *)upload(V, sizeof V);
  fa_tmap ma, mb, mv;
  make_map(&ma, (CUdeviceptr)dA, 64, 128);
  make_map(&mb, (CUdeviceptr)dB, 64, 128);
  make_map(&mv, (CUdeviceptr)dV, 64, 128);

  /* tma: slab 0 of A, swizzled. */
  unsigned short raw[64 * 64], *draw;
  float *dout;
  cudaMalloc((void **)&draw, sizeof raw);
  cudaMalloc((void **)&dout, 64 * 128 * sizeof(float));
  probe_tma<<<1, 128>>>(ma, draw);
  download(raw, draw, sizeof raw);
  double err = 0;
  for (int r = 0; r < 64; r++)
    for (int c = 0; c < 64; c++) {
      const int chunk = c / 8, at = r * 64 + ((chunk ^ (r % 8)) * 8) + c % 8;
      if (raw[at] != A[r * 128 + c]) err = 1;
    }
  bad |= verdict("tma", err, 0);

  /* ss: S = A B^T. */
  static float out[64 * 128];
  probe_ss<<<1, 128>>>(ma, mb, dout);
  download(out, dout, 64 * 64 * sizeof(float));
  err = 0;
  for (int i = 0; i < 64; i++)
    for (int j = 0; j < 64; j++) {
      double ref = 0;
      for (int k = 0; k < 128; k++) ref += (double)from_bf16(A[i * 128 + k]) * from_bf16(Bm[j * 128 + k]);
      err = fmax(err, fabs(out[i * 64 + j] - ref));
    }
  bad |= verdict("ss", err, 1e-3);

  /* rs, rs-acc: O = (1 +) P V. */
  for (int acc = 0; acc < 2; acc++) {
    probe_rs<<<1, 128>>>(mv, dP, dout, acc);
    download(out, dout, 64 * 128 * sizeof(float));
    err = 0;
    for (int i = 0; i < 64; i++)
      for (int n = 0; n < 128; n++) {
        double ref = acc;
        for (int k = 0; k < 64; k++) ref += (double)from_bf16(P[i * 64 + k]) * from_bf16(V[k * 128 + n]);
        err = fmax(err, fabs(out[i * 128 + n] - ref));
      }
    bad |= verdict(acc ? "rs-acc" : "rs", err, 1e-3);
  }
  printf("%s\n", bad ? "sm90_probe: FAILED" : "sm90_probe: all passed");
  return bad;
}

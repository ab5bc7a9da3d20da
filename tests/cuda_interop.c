/* CUDA interop through the runtime API: a caller's stream as native_queue, cudaMalloc'd memory wrapped with
 * fa_buffer_wrap (no copy), a forward on it, the result read back with cudaMemcpy and compared with a
 * float64 loop. Prints TAP; `1..0 # SKIP no CUDA device` where no CUDA device answers. */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flashattn.h"
#include "reference.h"

#define N_TESTS 24
static int test_no;
static int failures;

static void check(int ok, const char *what, const char *detail) {
  printf("%s %d - %s%s%s\n", ok ? "ok" : "not ok", ++test_no, what, detail && *detail ? ": " : "",
         detail ? detail : "");
  failures += !ok;
}

/* One forward on wrapped memory: B=2, Sq=77, Sk=130, Hq=4, Hkv=2, D=64, causal, BSHD packed. */
enum { B = 2, SQ = 77, SK = 130, HQ = 4, HKV = 2, D = 64 };

static double element(const void *host, fa_dtype dt, size_t i) {
  return dt == FA_F16 ? ref_f16_to_f32(((const uint16_t *)host)[i]) : ((const float *)host)[i];
}

static void run_forward(fa_context *ctx, cudaStream_t stream, fa_dtype dt) {
  char what[96], detail[256] = "";
  const char *dn = fa_dtype_name(dt);
  size_t es = fa_dtype_size(dt);
  size_t nq = (size_t)B * SQ * HQ * D, nk = (size_t)B * SK * HKV * D, nl = (size_t)B * HQ * SQ;
  void *q_host = malloc(nq * es), *k_host = malloc(nk * es), *v_host = malloc(nk * es), *o_host = malloc(nq * es);
  float *l_host = malloc(nl * sizeof(float));
  uint64_t seed = 12345;
  void *hosts[3] = {q_host, k_host, v_host};
  size_t counts[3] = {nq, nk, nk};
  for (int t = 0; t < 3; t++)
    for (size_t i = 0; i < counts[t]; i++) {
      seed = seed * 6364136223846793005ull + 1442695040888963407ull;
      float x = (float)((double)(seed >> 11) / 9007199254740992.0 * 4.0 - 2.0);
      if (dt == FA_F16) ((uint16_t *)hosts[t])[i] = ref_f32_to_f16(x);
      else ((float *)hosts[t])[i] = x;
    }

  void *dq = NULL, *dk = NULL, *dv = NULL, *dout = NULL, *dl = NULL;
  int ok = cudaMalloc(&dq, nq * es) == cudaSuccess && cudaMalloc(&dk, nk * es) == cudaSuccess &&
           cudaMalloc(&dv, nk * es) == cudaSuccess && cudaMalloc(&dout, nq * es) == cudaSuccess &&
           cudaMalloc(&dl, nl * sizeof(float)) == cudaSuccess;
  ok = ok && cudaMemcpy(dq, q_host, nq * es, cudaMemcpyHostToDevice) == cudaSuccess &&
       cudaMemcpy(dk, k_host, nk * es, cudaMemcpyHostToDevice) == cudaSuccess &&
       cudaMemcpy(dv, v_host, nk * es, cudaMemcpyHostToDevice) == cudaSuccess &&
       cudaMemset(dout, 0xff, nq * es) == cudaSuccess && cudaMemset(dl, 0xff, nl * sizeof(float)) == cudaSuccess;
  snprintf(what, sizeof what, "%s: cudaMalloc and upload", dn);
  check(ok, what, ok ? "" : cudaGetErrorString(cudaGetLastError()));
  if (!ok) goto out;

  fa_buffer *bq = NULL, *bk = NULL, *bv = NULL, *bo = NULL, *bl = NULL;
  ok = fa_buffer_wrap(ctx, dq, nq * es, &bq) == FA_SUCCESS && fa_buffer_wrap(ctx, dk, nk * es, &bk) == FA_SUCCESS &&
       fa_buffer_wrap(ctx, dv, nk * es, &bv) == FA_SUCCESS && fa_buffer_wrap(ctx, dout, nq * es, &bo) == FA_SUCCESS &&
       fa_buffer_wrap(ctx, dl, nl * sizeof(float), &bl) == FA_SUCCESS;
  snprintf(what, sizeof what, "%s: fa_buffer_wrap of cudaMalloc'd pointers", dn);
  check(ok, what, ok ? "" : fa_context_last_error(ctx));
  if (!ok) goto release;

  fa_tensor q, k, v, o, lse;
  fa_tensor_packed(&q, bq, 0, dt, B, SQ, HQ, D);
  fa_tensor_packed(&k, bk, 0, dt, B, SK, HKV, D);
  fa_tensor_packed(&v, bv, 0, dt, B, SK, HKV, D);
  fa_tensor_packed(&o, bo, 0, dt, B, SQ, HQ, D);
  fa_tensor_packed(&lse, bl, 0, FA_F32, B, HQ, SQ, 1);
  fa_attention_desc desc = {0};
  desc.causal = 1;
  fa_status st = fa_forward(ctx, &desc, &q, &k, &v, &o, &lse);
  snprintf(what, sizeof what, "%s: fa_forward on the caller's stream", dn);
  check(st == FA_SUCCESS, what, st == FA_SUCCESS ? "" : fa_context_last_error(ctx));
  if (st != FA_SUCCESS) goto release;
  /* The work went onto the caller's stream: synchronising that stream is enough. */
  ok = cudaStreamSynchronize(stream) == cudaSuccess &&
       cudaMemcpy(o_host, dout, nq * es, cudaMemcpyDeviceToHost) == cudaSuccess &&
       cudaMemcpy(l_host, dl, nl * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess;
  snprintf(what, sizeof what, "%s: cudaStreamSynchronize and cudaMemcpy back", dn);
  check(ok, what, ok ? "" : cudaGetErrorString(cudaGetLastError()));
  if (!ok) goto release;

  double err2 = 0, ref2 = 0, lse_err = 0, scale = 1.0 / sqrt((double)D);
  int masked_bad = 0;
  double s[SK], acc[D];
  for (int b = 0; b < B; b++)
    for (int h = 0; h < HQ; h++)
      for (int i = 0; i < SQ; i++) {
        int kvh = h / (HQ / HKV);
        double mx = -INFINITY;
        for (int j = 0; j < SK; j++) {
          double dot = 0;
          for (int x = 0; x < D; x++)
            dot += element(q_host, dt, (((size_t)b * SQ + i) * HQ + h) * D + x) *
                   element(k_host, dt, (((size_t)b * SK + j) * HKV + kvh) * D + x);
          s[j] = j > i + SK - SQ ? -INFINITY : dot * scale;
          if (s[j] > mx) mx = s[j];
        }
        float got_lse = l_host[((size_t)b * HQ + h) * SQ + i];
        if (mx == -INFINITY) {
          masked_bad |= !(isinf(got_lse) && got_lse < 0);
          continue;
        }
        double sum = 0;
        for (int x = 0; x < D; x++) acc[x] = 0;
        for (int j = 0; j < SK; j++) {
          double p = exp(s[j] - mx);
          sum += p;
          for (int x = 0; x < D; x++) acc[x] += p * element(v_host, dt, (((size_t)b * SK + j) * HKV + kvh) * D + x);
        }
        for (int x = 0; x < D; x++) {
          double ref = acc[x] / sum, got = element(o_host, dt, (((size_t)b * SQ + i) * HQ + h) * D + x);
          err2 += (got - ref) * (got - ref);
          ref2 += ref * ref;
        }
        double e = fabs(got_lse - (mx + log(sum))) / fmax(1.0, fabs(mx + log(sum)));
        if (!(e <= lse_err)) lse_err = e;
      }
  double rel = sqrt(err2 / ref2), tol = dt == FA_F16 ? 2e-3 : 1e-5;
  snprintf(what, sizeof what, "%s: o matches the float64 loop", dn);
  snprintf(detail, sizeof detail, "relative error %.3g (tolerance %.0g)", rel, tol);
  check(rel <= tol, what, detail);
  snprintf(what, sizeof what, "%s: lse matches the float64 loop", dn);
  snprintf(detail, sizeof detail, "largest error %.3g%s", lse_err, masked_bad ? ", masked row not -inf" : "");
  check(lse_err <= 1e-3 && !masked_bad, what, detail);

  /* fa_buffer_read sees the same bytes as cudaMemcpy. */
  void *again = malloc(nq * es);
  st = fa_buffer_read(ctx, bo, 0, again, nq * es);
  snprintf(what, sizeof what, "%s: fa_buffer_read of a wrapped buffer", dn);
  check(st == FA_SUCCESS && memcmp(again, o_host, nq * es) == 0, what, st == FA_SUCCESS ? "" : fa_context_last_error(ctx));
  free(again);
release:
  fa_buffer_destroy(bq);
  fa_buffer_destroy(bk);
  fa_buffer_destroy(bv);
  fa_buffer_destroy(bo);
  fa_buffer_destroy(bl);
out:
  cudaFree(dq);
  cudaFree(dk);
  cudaFree(dv);
  cudaFree(dout);
  cudaFree(dl);
  free(q_host);
  free(k_host);
  free(v_host);
  free(o_host);
  free(l_host);
}

/* Graph capture of fa_backward (include/flashattn.h: a call whose workspace is large enough neither allocates
 * nor waits): f16, D = 128, deterministic, so the captured call must reproduce the uncaptured one's bits; then
 * a call with twice the batch (a larger workspace) during capture is refused and writes nothing. 4 checks. */
#define GB 2
#define GS 200
#define GH 2
#define GD 128
static void run_backward_graph(fa_context *ctx, cudaStream_t stream) {
  const size_t n = (size_t)GB * GS * GH * GD, bytes = n * 2, lbytes = (size_t)GB * GH * GS * sizeof(float);
  fa_buffer *buf[9] = {0}; /* q, k, v, o, dout, dq, dk, dv; lse */
  uint16_t *host = malloc(bytes), *got = malloc(3 * bytes), *want = malloc(3 * bytes);
  uint64_t seed = 777;
  int ok = host && got && want;
  for (int i = 0; ok && i < 9; i++) ok = fa_buffer_create(ctx, i < 8 ? bytes : lbytes, &buf[i]) == FA_SUCCESS;
  for (int i = 0; ok && i < 5; i++) {
    for (size_t e = 0; e < n; e++) {
      seed = seed * 6364136223846793005ull + 1442695040888963407ull;
      host[e] = ref_f32_to_f16((float)((double)(seed >> 11) / 9007199254740992.0 * 2.0 - 1.0));
    }
    ok = fa_buffer_write(ctx, buf[i], 0, host, bytes) == FA_SUCCESS;
  }
  fa_tensor t[8], lse;
  for (int i = 0; i < 8 && ok; i++) fa_tensor_packed(&t[i], buf[i], 0, FA_F16, 1, GS, GH, GD); /* batch 1 */
  if (ok) fa_tensor_packed(&lse, buf[8], 0, FA_F32, 1, GH, GS, 1);
  fa_attention_desc desc = {0};
  desc.causal = 1;
  desc.deterministic = 1;
  ok = ok && fa_forward(ctx, &desc, &t[0], &t[1], &t[2], &t[3], &lse) == FA_SUCCESS &&
       fa_backward(ctx, &desc, &t[0], &t[1], &t[2], &t[3], &lse, &t[4], &t[5], &t[6], &t[7]) == FA_SUCCESS;
  for (int i = 0; ok && i < 3; i++) ok = fa_buffer_read(ctx, buf[5 + i], 0, want + i * n, bytes) == FA_SUCCESS;
  check(ok, "graph: fa_forward and fa_backward before capturing", ok ? "" : fa_context_last_error(ctx));
  if (!ok) goto out;

  /* Capture the same call on poisoned outputs, replay it twice. */
  memset(host, 0xff, bytes);
  for (int i = 0; ok && i < 3; i++) ok = fa_buffer_write(ctx, buf[5 + i], 0, host, bytes) == FA_SUCCESS;
  cudaGraph_t graph = NULL;
  cudaGraphExec_t exec = NULL;
  fa_status st = FA_ERROR_DEVICE;
  if (ok && cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal) == cudaSuccess) {
    st = fa_backward(ctx, &desc, &t[0], &t[1], &t[2], &t[3], &lse, &t[4], &t[5], &t[6], &t[7]);
    ok = cudaStreamEndCapture(stream, &graph) == cudaSuccess && st == FA_SUCCESS;
  } else {
    ok = 0;
  }
  ok = ok && cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
  check(ok, "graph: fa_backward captured into a CUDA graph",
        ok ? "" : st != FA_SUCCESS ? fa_context_last_error(ctx) : cudaGetErrorString(cudaGetLastError()));
  for (int r = 0; ok && r < 2; r++) ok = cudaGraphLaunch(exec, stream) == cudaSuccess;
  ok = ok && cudaStreamSynchronize(stream) == cudaSuccess;
  for (int i = 0; ok && i < 3; i++) ok = fa_buffer_read(ctx, buf[5 + i], 0, got + i * n, bytes) == FA_SUCCESS;
  /* The calls use batch 1: the first half of each buffer (the rest holds the other batch of the grow test). */
  char differs[160] = "";
  const size_t used = n / GB;
  for (int i = 0; ok && i < 3 && !*differs; i++)
    for (size_t e = 0; e < used; e++)
      if (got[i * n + e] != want[i * n + e]) {
        snprintf(differs, sizeof differs, "%s element %zu: 0x%04x uncaptured, 0x%04x replayed", (const char *[]){"dq", "dk", "dv"}[i],
                 e, want[i * n + e], got[i * n + e]);
        break;
      }
  check(ok && !*differs, "graph: the replayed graph gives the uncaptured call's bits",
        ok ? differs : cudaGetErrorString(cudaGetLastError()));
  if (exec) cudaGraphExecDestroy(exec);
  if (graph) cudaGraphDestroy(graph);

  /* Twice the batch needs a larger workspace: refused while capturing, outputs untouched. */
  fa_tensor t2[8], lse2;
  for (int i = 0; i < 8; i++) fa_tensor_packed(&t2[i], buf[i], 0, FA_F16, GB, GS, GH, GD);
  fa_tensor_packed(&lse2, buf[8], 0, FA_F32, GB, GH, GS, 1);
  ok = fa_forward(ctx, &desc, &t2[0], &t2[1], &t2[2], &t2[3], &lse2) == FA_SUCCESS;
  for (int i = 0; ok && i < 3; i++) ok = fa_buffer_write(ctx, buf[5 + i], 0, host, bytes) == FA_SUCCESS;
  ok = ok && cudaStreamSynchronize(stream) == cudaSuccess;
  graph = NULL;
  st = FA_SUCCESS;
  if (ok && cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal) == cudaSuccess) {
    st = fa_backward(ctx, &desc, &t2[0], &t2[1], &t2[2], &t2[3], &lse2, &t2[4], &t2[5], &t2[6], &t2[7]);
    cudaStreamEndCapture(stream, &graph);
    if (graph) cudaGraphDestroy(graph);
  }
  int untouched = 1;
  for (int i = 0; i < 3; i++) {
    untouched = untouched && fa_buffer_read(ctx, buf[5 + i], 0, got, bytes) == FA_SUCCESS;
    for (size_t e = 0; untouched && e < n; e++) untouched = got[e] == 0xffff;
  }
  check(ok && st == FA_ERROR_INVALID_ARGUMENT && untouched,
        "graph: a workspace grow while capturing is refused, nothing written", fa_context_last_error(ctx));
out:
  for (int i = 0; i < 9; i++) fa_buffer_destroy(buf[i]);
  free(host);
  free(got);
  free(want);
}

int main(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    printf("1..0 # SKIP no CUDA device\n");
    return 0;
  }
  printf("1..%d\n", N_TESTS);
  cudaStream_t stream;
  int ok = cudaSetDevice(0) == cudaSuccess && cudaStreamCreate(&stream) == cudaSuccess;
  check(ok, "cudaStreamCreate", ok ? "" : cudaGetErrorString(cudaGetLastError()));
  fa_context_options opt;
  fa_context_options_default(&opt);
  opt.backend = FA_BACKEND_CUDA;
  opt.native_queue = ok ? (void *)stream : NULL;
  fa_context *ctx = NULL;
  fa_status st = fa_context_create(&opt, &ctx);
  check(st == FA_SUCCESS, "fa_context_create on the caller's stream", st == FA_SUCCESS ? "" : fa_last_create_error());
  if (st != FA_SUCCESS) {
    for (int i = test_no; i < N_TESTS; i++) printf("not ok %d - skipped after the context failed\n", ++test_no);
    return 1;
  }

  /* Wrapping checks: more bytes than the allocation holds, and host memory, are refused. */
  void *dptr = NULL;
  fa_buffer *b = NULL;
  cudaMalloc(&dptr, 4096);
  st = fa_buffer_wrap(ctx, dptr, 8192, &b);
  check(st == FA_ERROR_INVALID_ARGUMENT && !b, "fa_buffer_wrap refuses more bytes than the allocation", fa_context_last_error(ctx));
  st = fa_buffer_wrap(ctx, (char *)dptr + 1024, 3072, &b);
  check(st == FA_SUCCESS, "fa_buffer_wrap accepts an interior pointer with the bytes left", st == FA_SUCCESS ? "" : fa_context_last_error(ctx));
  fa_buffer_destroy(b);
  b = NULL;
  static char host_bytes[4096];
  st = fa_buffer_wrap(ctx, host_bytes, sizeof host_bytes, &b);
  check(st == FA_ERROR_INVALID_ARGUMENT && !b, "fa_buffer_wrap refuses host memory", fa_context_last_error(ctx));
  cudaFree(dptr);

  run_forward(ctx, stream, FA_F16);
  run_forward(ctx, stream, FA_F32);
  run_backward_graph(ctx, stream);
  /* The runtime's own work still runs after the library pushed and popped its context. */
  ok = cudaMalloc(&dptr, 256) == cudaSuccess && cudaMemset(dptr, 0, 256) == cudaSuccess &&
       cudaDeviceSynchronize() == cudaSuccess;
  check(ok, "the runtime API works after library calls", ok ? "" : cudaGetErrorString(cudaGetLastError()));
  cudaFree(dptr);
  fa_context_destroy(ctx);
  cudaStreamDestroy(stream);
  while (test_no < N_TESTS) printf("not ok %d - missing (an earlier step failed)\n", ++test_no), failures++;
  return failures ? 1 : 0;
}

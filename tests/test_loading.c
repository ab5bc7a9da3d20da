/* OpenCL and CLBlast opened at run time (src/opencl/cl_loader.c): a missing library is a clear status and
 * sentence, never a failed load or a crash. Run once per mode, each in its own process since a library is
 * opened once per process (tests/meson.build sets the environment):
 *   test_loading no-opencl   FLASHATTN_OPENCL_LIB names a file that does not exist
 *   test_loading no-clblast  FLASHATTN_CLBLAST_LIB names a file that does not exist (needs an OpenCL device)
 * Prints TAP; with -Dopencl_loading=link (FA_TEST_DLOPEN 0) the variables mean nothing and both modes skip. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flashattn.h"

static int failures, cases;

static void check(int ok, const char *what, const char *detail) {
  cases++;
  if (!ok) failures++;
  printf("%s %d - %s\n", ok ? "ok" : "not ok", cases, what);
  if (!ok && detail) printf("# %s\n", detail);
}

static int no_opencl(void) {
  const char *path = getenv("FLASHATTN_OPENCL_LIB");
  printf("1..3\n");
  int n = -1;
  fa_status st = fa_device_count(FA_BACKEND_OPENCL, &n);
  check(st == FA_ERROR_BACKEND_UNAVAILABLE && n == 0, "fa_device_count(OpenCL) is unavailable, 0 devices",
        fa_status_string(st));
  fa_context_options opt;
  fa_context_options_default(&opt);
  opt.backend = FA_BACKEND_OPENCL;
  fa_context *ctx = (fa_context *)&opt; /* must come back NULL */
  st = fa_context_create(&opt, &ctx);
  check(st == FA_ERROR_BACKEND_UNAVAILABLE && ctx == NULL, "fa_context_create(OpenCL) is unavailable",
        fa_last_create_error());
  check(path && strstr(fa_last_create_error(), path) != NULL, "the sentence names the library",
        fa_last_create_error());
  return failures ? 1 : 0;
}

/* q, k, v of [1, 17, 1, 8] and o poisoned with NaN: the standard algorithm must fail without writing o, the
 * flash one must still run. */
static int no_clblast(void) {
  int n = 0;
  if (fa_device_count(FA_BACKEND_OPENCL, &n) != FA_SUCCESS || n == 0) {
    printf("1..0 # SKIP no OpenCL device\n");
    return 0;
  }
  printf("1..4\n");
  fa_context_options opt;
  fa_context_options_default(&opt);
  opt.backend = FA_BACKEND_OPENCL;
  fa_context *ctx = NULL;
  fa_status st = fa_context_create(&opt, &ctx);
  check(st == FA_SUCCESS, "an OpenCL context without CLBlast", fa_last_create_error());
  if (st != FA_SUCCESS) return 1;

  enum { S = 17, D = 8, N = S * D };
  float host[N], out[N];
  for (int i = 0; i < N; i++) host[i] = (float)((i * 37 % 19) - 9) / 9.0f;
  for (int i = 0; i < N; i++) out[i] = NAN;
  fa_buffer *in = NULL, *o = NULL;
  fa_tensor tq, to;
  int ok = fa_buffer_create(ctx, sizeof host, &in) == FA_SUCCESS && fa_buffer_create(ctx, sizeof out, &o) == FA_SUCCESS &&
           fa_buffer_write(ctx, in, 0, host, sizeof host) == FA_SUCCESS &&
           fa_buffer_write(ctx, o, 0, out, sizeof out) == FA_SUCCESS;
  fa_tensor_packed(&tq, in, 0, FA_F32, 1, S, 1, D);
  fa_tensor_packed(&to, o, 0, FA_F32, 1, S, 1, D);

  fa_attention_desc desc;
  fa_attention_desc_init(&desc);
  desc.algo = FA_ALGO_STANDARD;
  st = ok ? fa_forward(ctx, &desc, &tq, &tq, &tq, &to, NULL) : FA_ERROR_DEVICE;
  const char *msg = fa_context_last_error(ctx);
  const char *path = getenv("FLASHATTN_CLBLAST_LIB");
  check(st == FA_ERROR_UNSUPPORTED && strstr(msg, "CLBlast") && path && strstr(msg, path),
        "FA_ALGO_STANDARD is unsupported, and the sentence names CLBlast and the library", msg);

  int untouched = fa_synchronize(ctx) == FA_SUCCESS && fa_buffer_read(ctx, o, 0, out, sizeof out) == FA_SUCCESS;
  for (int i = 0; untouched && i < N; i++) untouched = isnan(out[i]);
  check(untouched, "o is not written", NULL);

  desc.algo = FA_ALGO_FLASH;
  st = fa_forward(ctx, &desc, &tq, &tq, &tq, &to, NULL);
  int written = st == FA_SUCCESS && fa_synchronize(ctx) == FA_SUCCESS &&
                fa_buffer_read(ctx, o, 0, out, sizeof out) == FA_SUCCESS;
  for (int i = 0; written && i < N; i++) written = isfinite(out[i]);
  check(written, "FA_ALGO_FLASH still runs", fa_context_last_error(ctx));

  fa_buffer_destroy(in);
  fa_buffer_destroy(o);
  fa_context_destroy(ctx);
  return failures ? 1 : 0;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  if (!FA_TEST_DLOPEN || !fa_backend_built(FA_BACKEND_OPENCL)) {
    printf("1..0 # SKIP OpenCL is linked, or not built in\n");
    return 0;
  }
  if (!strcmp(mode, "no-opencl")) return no_opencl();
  if (!strcmp(mode, "no-clblast")) return no_clblast();
  fprintf(stderr, "usage: test_loading no-opencl|no-clblast\n");
  return 2;
}

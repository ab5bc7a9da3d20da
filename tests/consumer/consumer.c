/* A user's first program, built against an installed flashattn through pkg-config, CMake's find_package or
 * a meson subproject (tests/consumer/run.sh): the version it was built for, and where a device answers,
 * one small forward pass against a float64 loop. Prints TAP. Usage: consumer EXPECTED_VERSION */
#include <flashattn.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

enum { S = 5, D = 8 };

/* o = softmax(q k^T / sqrt(D)) v for one head, in float64. */
static void attention(const float *q, const float *k, const float *v, double *o) {
  for (int i = 0; i < S; i++) {
    double w[S], max = -INFINITY, sum = 0;
    for (int j = 0; j < S; j++) {
      w[j] = 0;
      for (int d = 0; d < D; d++) w[j] += (double)q[i * D + d] * k[j * D + d] / sqrt((double)D);
      if (w[j] > max) max = w[j];
    }
    for (int j = 0; j < S; j++) sum += w[j] = exp(w[j] - max);
    for (int d = 0; d < D; d++) {
      o[i * D + d] = 0;
      for (int j = 0; j < S; j++) o[i * D + d] += w[j] / sum * v[j * D + d];
    }
  }
}

static int forward_matches(fa_context *ctx) {
  float q[S * D], k[S * D], v[S * D], o[S * D];
  for (int i = 0; i < S * D; i++) {
    q[i] = (float)((i * 7 % 11) - 5) / 5.0f;
    k[i] = (float)((i * 5 % 13) - 6) / 6.0f;
    v[i] = (float)((i * 3 % 7) - 3) / 3.0f;
    o[i] = NAN;
  }
  fa_buffer *buf = NULL;
  const size_t bytes = sizeof q;
  if (fa_buffer_create(ctx, 4 * bytes, &buf) != FA_SUCCESS) return 0;
  fa_tensor tq, tk, tv, to;
  fa_tensor_packed(&tq, buf, 0 * bytes, FA_F32, 1, S, 1, D);
  fa_tensor_packed(&tk, buf, 1 * bytes, FA_F32, 1, S, 1, D);
  fa_tensor_packed(&tv, buf, 2 * bytes, FA_F32, 1, S, 1, D);
  fa_tensor_packed(&to, buf, 3 * bytes, FA_F32, 1, S, 1, D);
  fa_attention_desc desc;
  fa_attention_desc_init(&desc);
  int ok = fa_buffer_write(ctx, buf, 0 * bytes, q, bytes) == FA_SUCCESS &&
           fa_buffer_write(ctx, buf, 1 * bytes, k, bytes) == FA_SUCCESS &&
           fa_buffer_write(ctx, buf, 2 * bytes, v, bytes) == FA_SUCCESS &&
           fa_buffer_write(ctx, buf, 3 * bytes, o, bytes) == FA_SUCCESS &&
           fa_forward(ctx, &desc, &tq, &tk, &tv, &to, NULL) == FA_SUCCESS &&
           fa_buffer_read(ctx, buf, 3 * bytes, o, bytes) == FA_SUCCESS && fa_synchronize(ctx) == FA_SUCCESS;
  fa_buffer_destroy(buf);
  if (!ok) {
    printf("# %s\n", fa_context_last_error(ctx));
    return 0;
  }
  double ref[S * D], err = 0, norm = 0;
  attention(q, k, v, ref);
  for (int i = 0; i < S * D; i++) {
    err += (o[i] - ref[i]) * (o[i] - ref[i]);
    norm += ref[i] * ref[i];
  }
  printf("# relative error %.3g\n", sqrt(err / norm));
  return sqrt(err / norm) <= 1e-5; /* also false for a NaN left in o */
}

int main(int argc, char **argv) {
  printf("1..2\n");
  int version_ok = argc > 1 && strcmp(fa_version_string(), argv[1]) == 0;
  printf("%s 1 - the library is version %s (expected %s)\n", version_ok ? "ok" : "not ok", fa_version_string(),
         argc > 1 ? argv[1] : "?");

  fa_context *ctx = NULL;
  if (fa_context_create(NULL, &ctx) != FA_SUCCESS) {
    printf("ok 2 # SKIP no device: %s\n", fa_last_create_error());
    return version_ok ? 0 : 1;
  }
  fa_device_info info;
  fa_device_info_init(&info);
  if (fa_context_info(ctx, &info) == FA_SUCCESS) printf("# %s: %s\n", fa_backend_name(info.backend), info.name);
  int fwd_ok = forward_matches(ctx);
  fa_context_destroy(ctx);
  printf("%s 2 - a forward pass matches the float64 loop\n", fwd_ok ? "ok" : "not ok");
  return version_ok && fwd_ok ? 0 : 1;
}

/* The API around the attention calls: versions and names, options, context info and tiles, buffers
 * (round trips with offsets, out-of-range access rejected), memory accounting, and OpenCL interop
 * (a context on the caller's cl_command_queue, fa_buffer_wrap of the caller's cl_mem). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#if TH_HAVE_OPENCL
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#endif

START_TEST(t_version) {
  th_case_begin("version query");
  ck_assert_int_eq(fa_version(), FLASHATTN_VERSION_MAJOR * 10000 + FLASHATTN_VERSION_MINOR * 100 + FLASHATTN_VERSION_PATCH);
  char want[32];
  snprintf(want, sizeof want, "%d.%d.%d", FLASHATTN_VERSION_MAJOR, FLASHATTN_VERSION_MINOR, FLASHATTN_VERSION_PATCH);
  ck_assert_str_eq(fa_version_string(), want);
  th_finish_case();
}
END_TEST

START_TEST(t_names) {
  th_case_begin("status, backend and dtype names");
  const fa_status all[] = {FA_SUCCESS,         FA_ERROR_INVALID_ARGUMENT, FA_ERROR_UNSUPPORTED,
                           FA_ERROR_BACKEND_UNAVAILABLE, FA_ERROR_OUT_OF_MEMORY, FA_ERROR_DEVICE,
                           FA_ERROR_KERNEL_BUILD};
  const int n = (int)(sizeof all / sizeof all[0]);
  for (int i = 0; i < n; i++) {
    const char *s = fa_status_string(all[i]);
    ck_assert_ptr_nonnull(s);
    ck_assert_msg(strncmp(s, "FA_", 3) == 0, "status %d named \"%s\"", (int)all[i], s);
    for (int j = 0; j < i; j++) ck_assert_str_ne(s, fa_status_string(all[j]));
  }
  ck_assert_str_eq(fa_status_string(FA_ERROR_INVALID_ARGUMENT), "FA_ERROR_INVALID_ARGUMENT");
  ck_assert_ptr_nonnull(fa_status_string((fa_status)99));
  ck_assert_str_eq(fa_backend_name(FA_BACKEND_CUDA), "cuda");
  ck_assert_str_eq(fa_backend_name(FA_BACKEND_OPENCL), "opencl");
  ck_assert_str_eq(fa_backend_name(FA_BACKEND_AUTO), "auto");
  ck_assert_ptr_nonnull(fa_backend_name((fa_backend)99));
  ck_assert_str_eq(fa_dtype_name(FA_F32), "f32");
  ck_assert_str_eq(fa_dtype_name(FA_F16), "f16");
  ck_assert_str_eq(fa_dtype_name(FA_BF16), "bf16");
  ck_assert_ptr_nonnull(fa_dtype_name((fa_dtype)99));
  ck_assert_uint_eq(fa_dtype_size(FA_F32), 4);
  ck_assert_uint_eq(fa_dtype_size(FA_F16), 2);
  ck_assert_uint_eq(fa_dtype_size(FA_BF16), 2);
  ck_assert_uint_eq(fa_dtype_size((fa_dtype)99), 0);
  ck_assert_int_eq(fa_backend_built(FA_BACKEND_OPENCL), TH_HAVE_OPENCL);
  ck_assert_int_eq(fa_backend_built((fa_backend)99), 0);
  th_finish_case();
}
END_TEST

START_TEST(t_options_and_tensor_helpers) {
  th_case_begin("fa_context_options_default and fa_tensor_packed");
  fa_context_options opt;
  memset(&opt, 0x5a, sizeof opt);
  fa_context_options_default(&opt);
  ck_assert_int_eq(opt.backend, FA_BACKEND_AUTO);
  ck_assert_int_eq(opt.device, -1);
  ck_assert_ptr_null(opt.native_queue);
  fa_tensor t;
  fa_buffer *fake = (fa_buffer *)&t;
  fa_tensor_packed(&t, fake, 12, FA_F16, 2, 3, 5, 7);
  ck_assert_ptr_eq(t.buf, fake);
  ck_assert_uint_eq(t.offset, 12);
  ck_assert_int_eq(t.dtype, FA_F16);
  const int64_t shape[4] = {2, 3, 5, 7}, stride[4] = {105, 35, 7, 1};
  for (int i = 0; i < 4; i++) {
    ck_assert_int_eq(t.shape[i], shape[i]);
    ck_assert_int_eq(t.stride[i], stride[i]);
  }
  th_finish_case();
}
END_TEST

START_TEST(t_context_info) {
  th_case_begin("fa_context_info");
  for (int bi = 0; bi < th_backend_count(); bi++) {
    fa_device_info info;
    memset(&info, 0x5a, sizeof info);
    info.struct_size = sizeof info;
    ck_assert_int_eq(fa_context_info(th_context(bi), &info), FA_SUCCESS);
    ck_assert_uint_eq(info.struct_size, sizeof info);
    const char *be = th_backend_label(bi);
    ck_assert_msg(info.backend == th_backend_kind(bi), "%s: info.backend %d", be, (int)info.backend);
    ck_assert_msg(info.name[0] && memchr(info.name, 0, sizeof info.name), "%s: empty or unterminated name", be);
    ck_assert_msg(info.platform[0] && memchr(info.platform, 0, sizeof info.platform), "%s: empty platform", be);
    ck_assert_msg(memchr(info.driver_version, 0, sizeof info.driver_version), "%s: driver_version unterminated", be);
    ck_assert_msg(info.api_version[0] && memchr(info.api_version, 0, sizeof info.api_version), "%s: api_version", be);
    ck_assert_msg(info.local_mem_bytes > 0, "%s: local_mem_bytes 0", be);
    ck_assert_msg(info.device_local_mem_bytes >= info.local_mem_bytes, "%s: local %zu > device's %zu", be,
                  info.local_mem_bytes, info.device_local_mem_bytes);
    ck_assert_msg(info.global_mem_bytes > 0 && info.compute_units > 0 && info.max_work_group_size > 0,
                  "%s: global mem %zu, %d compute units, work groups of %d", be, info.global_mem_bytes,
                  info.compute_units, info.max_work_group_size);
    ck_assert_msg(info.device_index >= 0, "%s: device_index %d", be, info.device_index);
    ck_assert_msg(info.tensor_cores == 0 || info.tensor_cores == 1, "%s: tensor_cores %d", be, info.tensor_cores);
    if (info.backend == FA_BACKEND_OPENCL) ck_assert_int_eq(info.compute_capability, 0);
    th_diag("%s: %s | %s | driver %s | %s | %d CUs | local %zu (device %zu) | global %zu | wg %d | cc %d | tc %d",
            be, info.name, info.platform, info.driver_version, info.api_version, info.compute_units,
            info.local_mem_bytes, info.device_local_mem_bytes, info.global_mem_bytes, info.max_work_group_size,
            info.compute_capability, info.tensor_cores);
    th_ran(bi);
  }
  th_finish_case();
}
END_TEST

static void check_tiles(fa_context *ctx, const char *be, size_t budget, int max_group) {
  static const int dims[] = {16, 32, 64, 80, 128, 256};
  static const fa_dtype dtypes[] = {FA_F32, FA_F16, FA_BF16};
  for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
    for (size_t j = 0; j < 3; j++) {
      fa_tiles t;
      memset(&t, 0, sizeof t);
      fa_status st = fa_context_tiles(ctx, dims[i], dtypes[j], &t);
      ck_assert_msg(st == FA_SUCCESS, "%s: tiles D=%d %s: %s: %s", be, dims[i], fa_dtype_name(dtypes[j]),
                    fa_status_string(st), fa_context_last_error(ctx));
      ck_assert_msg(t.block_q > 0 && t.block_k > 0 && t.threads > 0 && t.threads <= max_group &&
                        t.local_mem_bytes > 0 && t.local_mem_bytes <= budget,
                    "%s: D=%d %s: tiles Br=%d Bc=%d threads=%d local=%zu (budget %zu, groups of %d)", be, dims[i],
                    fa_dtype_name(dtypes[j]), t.block_q, t.block_k, t.threads, t.local_mem_bytes, budget, max_group);
      if (j == 0 && (dims[i] == 64 || dims[i] == 256))
        th_diag("%s: budget %zu: D=%d f32: Br=%d Bc=%d threads=%d local=%zu", be, budget, dims[i], t.block_q,
                t.block_k, t.threads, t.local_mem_bytes);
    }
  fa_tiles t;
  ck_assert_int_eq(fa_context_tiles(ctx, 512, FA_F32, &t), FA_ERROR_UNSUPPORTED);
  ck_assert_int_ne(fa_context_tiles(ctx, 0, FA_F32, &t), FA_SUCCESS);
  ck_assert_int_ne(fa_context_tiles(ctx, -64, FA_F32, &t), FA_SUCCESS);
}

/* The header's "Structs that grow": struct_size 0 reads the base fields, sizeof the whole struct; a size below
 * the base is refused; a larger (newer) struct is accepted when its unknown tail is zero and refused when a
 * byte of it is set; fa_context_info writes exactly struct_size bytes. */
START_TEST(t_struct_growth) {
  th_case_begin("growable structs: struct_size 0, sizeof, too small, a newer caller's larger struct");
  enum { S = 16, H = 1, D = 8 };
  const size_t bytes = (size_t)S * H * D * sizeof(float);
  for (int bi = 0; bi < th_backend_count(); bi++) {
    fa_context *ctx = th_context(bi);
    const char *be = th_backend_label(bi);
    fa_buffer *buf[5];
    float host[S * H * D], out[3][S * H * D];
    th_rng r;
    th_rng_init(&r, th_case_seed(bi));
    for (int t = 0; t < 5; t++) ck_assert_int_eq(fa_buffer_create(ctx, bytes, &buf[t]), FA_SUCCESS);
    for (int t = 0; t < 3; t++) {
      for (int i = 0; i < S * H * D; i++) host[i] = (float)th_rng_normal(&r);
      ck_assert_int_eq(fa_buffer_write(ctx, buf[t], 0, host, bytes), FA_SUCCESS);
    }
    fa_tensor q, k, v, o;
    fa_tensor_packed(&q, buf[0], 0, FA_F32, 1, S, H, D);
    fa_tensor_packed(&k, buf[1], 0, FA_F32, 1, S, H, D);
    fa_tensor_packed(&v, buf[2], 0, FA_F32, 1, S, H, D);
    fa_tensor_packed(&o, buf[3], 0, FA_F32, 1, S, H, D);

    /* A newer caller's descriptor: ours followed by fields this library does not know. */
    struct {
      fa_attention_desc d;
      uint64_t newer[2];
    } big;
    memset(&big, 0, sizeof big);
    big.d.struct_size = sizeof big;
    big.d.causal = 1;
    fa_attention_desc base = {0}, full;
    base.causal = 1;
    fa_attention_desc_init(&full);
    full.causal = 1;
    const fa_attention_desc *ok[3] = {&base, &full, &big.d};
    for (int c = 0; c < 3; c++) {
      ck_assert_msg(fa_forward(ctx, ok[c], &q, &k, &v, &o, NULL) == FA_SUCCESS, "%s: case %d: %s", be, c,
                    fa_context_last_error(ctx));
      ck_assert_int_eq(fa_buffer_read(ctx, buf[3], 0, out[c], bytes), FA_SUCCESS);
    }
    ck_assert_msg(!memcmp(out[0], out[1], bytes) && !memcmp(out[0], out[2], bytes), "%s: outputs differ", be);

    /* struct_size 0 reads every field of 0.2.0, the inference ones too: a zeroed descriptor's window counts. */
    fa_attention_desc zw = {0}, iw;
    fa_attention_desc_init(&iw);
    zw.causal = iw.causal = 1;
    zw.window = iw.window = 1;
    zw.window_left = iw.window_left = 2;
    const fa_attention_desc *win[2] = {&zw, &iw};
    for (int c = 0; c < 2; c++) {
      ck_assert_msg(fa_forward(ctx, win[c], &q, &k, &v, &o, NULL) == FA_SUCCESS, "%s: window case %d: %s", be, c,
                    fa_context_last_error(ctx));
      ck_assert_int_eq(fa_buffer_read(ctx, buf[3], 0, out[1 + c], bytes), FA_SUCCESS);
    }
    ck_assert_msg(!memcmp(out[1], out[2], bytes), "%s: a zeroed descriptor's window was not read", be);
    ck_assert_msg(memcmp(out[0], out[1], bytes) != 0, "%s: the window changed nothing", be);

    /* Refusals write nothing: o keeps a poison pattern. */
    memset(host, 0x7f, bytes);
    ck_assert_int_eq(fa_buffer_write(ctx, buf[3], 0, host, bytes), FA_SUCCESS);
    big.newer[1] = 1;
    ck_assert_int_eq(fa_forward(ctx, &big.d, &q, &k, &v, &o, NULL), FA_ERROR_UNSUPPORTED);
    ck_assert_msg(strstr(fa_context_last_error(ctx), "desc: byte"), "%s: %s", be, fa_context_last_error(ctx));
    full.struct_size = 4;
    ck_assert_int_eq(fa_forward(ctx, &full, &q, &k, &v, &o, NULL), FA_ERROR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(fa_context_last_error(ctx), "desc->struct_size"), "%s: %s", be, fa_context_last_error(ctx));
    ck_assert_int_eq(fa_buffer_read(ctx, buf[3], 0, out[0], bytes), FA_SUCCESS);
    ck_assert_msg(!memcmp(out[0], host, bytes), "%s: a refused call wrote o", be);

    /* fa_context_info: a newer caller's larger struct gets zeros past ours; too small a size is refused. */
    struct {
      fa_device_info i;
      unsigned char newer[16];
    } info;
    memset(&info, 0x5a, sizeof info);
    info.i.struct_size = sizeof info;
    ck_assert_int_eq(fa_context_info(ctx, &info.i), FA_SUCCESS);
    ck_assert_uint_eq(info.i.struct_size, sizeof info);
    for (size_t i = 0; i < sizeof info.newer; i++) ck_assert_int_eq(info.newer[i], 0);
    info.i.struct_size = 3;
    ck_assert_int_eq(fa_context_info(ctx, &info.i), FA_ERROR_INVALID_ARGUMENT);
    for (int t = 0; t < 5; t++) fa_buffer_destroy(buf[t]);
  }

  /* Context options: too small a size, and a set byte in a newer caller's tail, are refused up front. */
  struct {
    fa_context_options o;
    uint64_t newer;
  } opt;
  fa_context_options_default(&opt.o);
  opt.o.struct_size = 2;
  fa_context *ctx = NULL;
  ck_assert_int_eq(fa_context_create(&opt.o, &ctx), FA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_null(ctx);
  ck_assert_msg(strstr(fa_last_create_error(), "opt->struct_size"), "%s", fa_last_create_error());
  opt.o.struct_size = sizeof opt;
  opt.newer = 7;
  ck_assert_int_eq(fa_context_create(&opt.o, &ctx), FA_ERROR_UNSUPPORTED);
  ck_assert_ptr_null(ctx);
  th_finish_case();
}
END_TEST

START_TEST(t_tiles) {
  th_case_begin("fa_context_tiles for several head dims, default and 48 KiB budgets");
  for (int bi = 0; bi < th_backend_count(); bi++) {
    fa_context *ctx = th_context(bi);
    fa_device_info info;
    fa_device_info_init(&info);
    ck_assert_int_eq(fa_context_info(ctx, &info), FA_SUCCESS);
    check_tiles(ctx, th_backend_label(bi), info.local_mem_bytes, info.max_work_group_size);

    /* FLASHATTN_LOCAL_MEM_BYTES is read at context creation: a fresh context sees the lower budget. */
    const char *old = getenv("FLASHATTN_LOCAL_MEM_BYTES");
    char *keep = old ? strdup(old) : NULL;
    setenv("FLASHATTN_LOCAL_MEM_BYTES", "49152", 1);
    fa_context_options opt;
    fa_context_options_default(&opt);
    opt.backend = th_backend_kind(bi);
    fa_context *small = NULL;
    fa_status st = fa_context_create(&opt, &small);
    if (keep) setenv("FLASHATTN_LOCAL_MEM_BYTES", keep, 1);
    else unsetenv("FLASHATTN_LOCAL_MEM_BYTES");
    free(keep);
    ck_assert_msg(st == FA_SUCCESS, "fa_context_create: %s", fa_last_create_error());
    fa_device_info si;
    fa_device_info_init(&si);
    ck_assert_int_eq(fa_context_info(small, &si), FA_SUCCESS);
    size_t want = si.device_local_mem_bytes < 49152 ? si.device_local_mem_bytes : 49152;
    ck_assert_msg(si.local_mem_bytes == want, "FLASHATTN_LOCAL_MEM_BYTES=49152: local_mem_bytes %zu, want %zu",
                  si.local_mem_bytes, want);
    check_tiles(small, th_backend_label(bi), si.local_mem_bytes, si.max_work_group_size);
    fa_context_destroy(small);
    th_ran(bi);
  }
  th_finish_case();
}
END_TEST

START_TEST(t_buffers) {
  th_case_begin("buffer create, write, read with offsets; out-of-range access rejected");
  enum { N = 4096 };
  unsigned char pattern[N], got[N], want[N];
  for (int i = 0; i < N; i++) pattern[i] = (unsigned char)(i * 7 + 3);
  for (int bi = 0; bi < th_backend_count(); bi++) {
    fa_context *ctx = th_context(bi);
    fa_buffer *b = NULL;
    ck_assert_int_eq(fa_buffer_create(ctx, N, &b), FA_SUCCESS);
    ck_assert_uint_eq(fa_buffer_size(b), N);
    ck_assert_int_eq(fa_buffer_write(ctx, b, 0, pattern, N), FA_SUCCESS);
    memcpy(want, pattern, N);
    /* Partial writes at odd offsets, then whole and partial reads. */
    unsigned char patch[300];
    for (int i = 0; i < 300; i++) patch[i] = (unsigned char)(255 - i);
    ck_assert_int_eq(fa_buffer_write(ctx, b, 1001, patch, 300), FA_SUCCESS);
    memcpy(want + 1001, patch, 300);
    ck_assert_int_eq(fa_buffer_write(ctx, b, N - 5, patch, 5), FA_SUCCESS); /* up to the last byte */
    memcpy(want + N - 5, patch, 5);
    ck_assert_int_eq(fa_buffer_read(ctx, b, 0, got, N), FA_SUCCESS);
    ck_assert_msg(memcmp(got, want, N) == 0, "%s: whole read differs", th_backend_label(bi));
    memset(got, 0, N);
    ck_assert_int_eq(fa_buffer_read(ctx, b, 999, got, 7), FA_SUCCESS);
    ck_assert_msg(memcmp(got, want + 999, 7) == 0, "%s: read at 999 differs", th_backend_label(bi));
    ck_assert_int_eq(fa_buffer_read(ctx, b, N - 1, got, 1), FA_SUCCESS);
    ck_assert_int_eq(got[0], want[N - 1]);
    ck_assert_int_eq(fa_buffer_write(ctx, b, N, patch, 0), FA_SUCCESS); /* empty, at the end: fine */
    ck_assert_int_eq(fa_buffer_read(ctx, b, N, got, 0), FA_SUCCESS);

    /* Out of range: rejected, nothing copied either way. */
    memset(got, 0xee, N);
    const struct {
      size_t off, bytes;
    } bad[] = {{N - 10, 11}, {N, 1}, {N + 1, 0}, {0, N + 1}, {SIZE_MAX, 2}, {2, SIZE_MAX}, {SIZE_MAX, SIZE_MAX}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
      ck_assert_msg(fa_buffer_write(ctx, b, bad[i].off, patch, bad[i].bytes) == FA_ERROR_INVALID_ARGUMENT,
                    "%s: write of %zu bytes at %zu accepted", th_backend_label(bi), bad[i].bytes, bad[i].off);
      ck_assert_msg(fa_context_last_error(ctx)[0], "no message");
      ck_assert_msg(fa_buffer_read(ctx, b, bad[i].off, got, bad[i].bytes) == FA_ERROR_INVALID_ARGUMENT,
                    "%s: read of %zu bytes at %zu accepted", th_backend_label(bi), bad[i].bytes, bad[i].off);
    }
    for (int i = 0; i < N; i++) ck_assert_int_eq(got[i], 0xee);
    ck_assert_int_eq(fa_buffer_write(ctx, b, 0, NULL, 16), FA_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(fa_buffer_read(ctx, b, 0, NULL, 16), FA_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(fa_buffer_read(ctx, b, 0, got, N), FA_SUCCESS);
    ck_assert_msg(memcmp(got, want, N) == 0, "%s: contents changed by rejected writes", th_backend_label(bi));

    /* A buffer of another context is rejected. */
    fa_context_options opt;
    fa_context_options_default(&opt);
    opt.backend = th_backend_kind(bi);
    fa_context *other = NULL;
    ck_assert_int_eq(fa_context_create(&opt, &other), FA_SUCCESS);
    ck_assert_int_eq(fa_buffer_read(other, b, 0, got, 16), FA_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(fa_buffer_write(other, b, 0, patch, 16), FA_ERROR_INVALID_ARGUMENT);
    fa_context_destroy(other);
    fa_buffer_destroy(b);
    th_ran(bi);
  }
  th_finish_case();
}
END_TEST

/* A forward of B=1, S=Sq=Sk, H=2, D=64 f32 packed on the given buffers; relative error vs the reference. */
static double small_forward(fa_context *ctx, fa_algo algo, int S, fa_buffer *bq, fa_buffer *bk, fa_buffer *bv,
                            fa_buffer *bo, int upload) {
  const int H = 2, D = 64;
  size_t n = (size_t)S * H * D;
  double *host[4];
  float *f = malloc(n * sizeof(float));
  ck_assert_ptr_nonnull(f);
  th_rng r;
  th_rng_init(&r, th_case_seed(S));
  fa_buffer *bufs[3] = {bq, bk, bv};
  for (int t = 0; t < 4; t++) {
    host[t] = malloc(n * sizeof(double));
    ck_assert_ptr_nonnull(host[t]);
    if (t == 3) break;
    for (size_t i = 0; i < n; i++) f[i] = (float)th_rng_normal(&r), host[t][i] = f[i];
    if (upload) ck_assert_int_eq(fa_buffer_write(ctx, bufs[t], 0, f, n * sizeof(float)), FA_SUCCESS);
  }
  fa_tensor q, k, v, o;
  fa_tensor_packed(&q, bq, 0, FA_F32, 1, S, H, D);
  fa_tensor_packed(&k, bk, 0, FA_F32, 1, S, H, D);
  fa_tensor_packed(&v, bv, 0, FA_F32, 1, S, H, D);
  fa_tensor_packed(&o, bo, 0, FA_F32, 1, S, H, D);
  fa_attention_desc desc = {0};
  desc.algo = algo;
  desc.causal = 1;
  fa_status st = fa_forward(ctx, &desc, &q, &k, &v, &o, NULL);
  double err = -1;
  if (st == FA_SUCCESS) {
    ck_assert_int_eq(fa_buffer_read(ctx, bo, 0, f, n * sizeof(float)), FA_SUCCESS);
    for (size_t i = 0; i < n; i++) host[3][i] = f[i];
    ref_problem p = {1, S, S, H, H, D, 1.0 / 8.0, 1};
    double *ro = malloc(n * sizeof(double));
    ck_assert_ptr_nonnull(ro);
    ck_assert_int_eq(ref_forward(&p, host[0], host[1], host[2], ro, NULL), 0);
    err = ref_rel_error(host[3], ro, n);
    free(ro);
  } else {
    ck_assert_msg(st == FA_ERROR_UNSUPPORTED, "fa_forward: %s: %s", fa_status_string(st), fa_context_last_error(ctx));
  }
  for (int t = 0; t < 4; t++) free(host[t]);
  free(f);
  return err;
}

START_TEST(t_memory) {
  th_case_begin("memory accounting: buffers, flash forward without an Sq x Sk matrix, standard with one");
  for (int bi = 0; bi < th_backend_count(); bi++) {
    fa_context *ctx = th_context(bi);
    const char *be = th_backend_label(bi);
    size_t cur0, peak0, cur, peak;
    ck_assert_int_eq(fa_context_memory(ctx, &cur0, &peak0), FA_SUCCESS);
    ck_assert_int_eq(fa_context_memory(ctx, NULL, NULL), FA_SUCCESS);
    ck_assert_msg(peak0 >= cur0, "%s: peak %zu below current %zu", be, peak0, cur0);
    ck_assert_int_eq(fa_context_reset_peak_memory(ctx), FA_SUCCESS);
    ck_assert_int_eq(fa_context_memory(ctx, &cur, &peak), FA_SUCCESS);
    ck_assert_msg(peak == cur && cur == cur0, "%s: after reset: current %zu peak %zu (was %zu)", be, cur, peak, cur0);

    /* Buffers come and go; the current value comes back to where it was. */
    fa_buffer *b = NULL;
    ck_assert_int_eq(fa_buffer_create(ctx, 1 << 20, &b), FA_SUCCESS);
    size_t with_buf;
    ck_assert_int_eq(fa_context_memory(ctx, &with_buf, &peak), FA_SUCCESS);
    ck_assert_msg(peak >= with_buf, "%s: peak below current", be);
    fa_buffer_destroy(b);
    ck_assert_int_eq(fa_context_memory(ctx, &cur, &peak), FA_SUCCESS);
    ck_assert_msg(cur == cur0, "%s: current %zu after freeing the buffer, was %zu", be, cur, cur0);
    th_diag("%s: a 1 MiB buffer moved the current value by %zu bytes", be, with_buf - cur0);

    /* Flash forward at S = 1024: the Sq x Sk scores of one head alone would be 4 MiB. */
    const int S = 1024;
    size_t bytes = (size_t)S * 2 * 64 * 4, scores = (size_t)S * S * 4;
    fa_buffer *bq, *bk, *bv, *bo;
    ck_assert_int_eq(fa_buffer_create(ctx, bytes, &bq), FA_SUCCESS);
    ck_assert_int_eq(fa_buffer_create(ctx, bytes, &bk), FA_SUCCESS);
    ck_assert_int_eq(fa_buffer_create(ctx, bytes, &bv), FA_SUCCESS);
    ck_assert_int_eq(fa_buffer_create(ctx, bytes, &bo), FA_SUCCESS);
    size_t base;
    ck_assert_int_eq(fa_context_reset_peak_memory(ctx), FA_SUCCESS);
    ck_assert_int_eq(fa_context_memory(ctx, &base, NULL), FA_SUCCESS);
    double err = small_forward(ctx, FA_ALGO_FLASH, S, bq, bk, bv, bo, 1);
    ck_assert_msg(err >= 0 && err <= 1e-5, "%s: flash forward S=1024: relative error %g", be, err);
    ck_assert_int_eq(fa_synchronize(ctx), FA_SUCCESS);
    ck_assert_int_eq(fa_context_memory(ctx, &cur, &peak), FA_SUCCESS);
    ck_assert_msg(peak - base < scores, "%s: flash forward: peak grew by %zu bytes, an Sq x Sk float matrix is %zu",
                  be, peak - base, scores);
    th_diag("%s: flash forward S=1024 H=2 D=64: peak grew by %zu bytes", be, peak - base);

    ck_assert_int_eq(fa_context_reset_peak_memory(ctx), FA_SUCCESS);
    ck_assert_int_eq(fa_context_memory(ctx, &base, NULL), FA_SUCCESS);
    err = small_forward(ctx, FA_ALGO_STANDARD, S, bq, bk, bv, bo, 0);
    if (err < 0) {
      th_diag("%s: standard forward unsupported: %s", be, fa_context_last_error(ctx));
    } else {
      ck_assert_msg(err <= 1e-5, "%s: standard forward S=1024: relative error %g", be, err);
      ck_assert_int_eq(fa_context_memory(ctx, &cur, &peak), FA_SUCCESS);
      ck_assert_msg(peak - base >= scores, "%s: standard forward: peak grew by %zu bytes only, under Sq x Sk x 4 = %zu",
                    be, peak - base, scores);
      th_diag("%s: standard forward S=1024 H=2 D=64: peak grew by %zu bytes", be, peak - base);
    }
    fa_buffer_destroy(bq);
    fa_buffer_destroy(bk);
    fa_buffer_destroy(bv);
    fa_buffer_destroy(bo);
    th_ran(bi);
  }
  th_finish_case();
}
END_TEST

/* The workspace-size queries against what the calls then take: on a fresh context (no workspace yet) the
 * context's memory grows by exactly the queried bytes, and a query with buf = NULL tensors (shape only)
 * answers the same as one with the buffers. */
static void shape_only(const fa_tensor *t, fa_tensor *out) {
  *out = *t;
  out->buf = NULL;
}

static void check_workspace(fa_context *ctx, const char *be, fa_algo algo, int backward, th_tensor *t) {
  const char *what = backward ? "backward" : "forward";
  const char *name = algo == FA_ALGO_STANDARD ? "standard" : "flash";
  fa_attention_desc desc;
  fa_attention_desc_init(&desc);
  desc.algo = algo;
  desc.causal = 1;
  fa_tensor n[9];
  for (int i = 0; i < 9; i++) shape_only(&t[i].t, &n[i]);
  size_t bytes = 1, bytes_shape = 1;
  fa_status st, st_shape;
  if (backward) {
    st = fa_backward_workspace_size(ctx, &desc, &t[0].t, &t[1].t, &t[2].t, &t[3].t, &t[4].t, &t[5].t, &t[6].t,
                                    &t[7].t, &t[8].t, &bytes);
    st_shape = fa_backward_workspace_size(ctx, &desc, &n[0], &n[1], &n[2], &n[3], &n[4], &n[5], &n[6], &n[7], &n[8],
                                          &bytes_shape);
  } else {
    st = fa_forward_workspace_size(ctx, &desc, &t[0].t, &t[1].t, &t[2].t, &t[3].t, &t[4].t, &bytes);
    st_shape = fa_forward_workspace_size(ctx, &desc, &n[0], &n[1], &n[2], &n[3], &n[4], &bytes_shape);
  }
  ck_assert_msg(st == st_shape && bytes == bytes_shape, "%s %s %s: %s %zu with buffers, %s %zu shape only", be, name,
                what, fa_status_string(st), bytes, fa_status_string(st_shape), bytes_shape);
  if (st != FA_SUCCESS) {
    ck_assert_msg(st == FA_ERROR_UNSUPPORTED && bytes == 0, "%s %s %s: %s: %s", be, name, what, fa_status_string(st),
                  fa_context_last_error(ctx));
    th_diag("%s: %s %s workspace not reported: %s", be, name, what, fa_context_last_error(ctx));
    return;
  }
  if (algo == FA_ALGO_FLASH && !backward) ck_assert_msg(bytes == 0, "%s: flash forward: %zu bytes", be, bytes);
  size_t before, after;
  ck_assert_int_eq(fa_context_memory(ctx, &before, NULL), FA_SUCCESS);
  st = backward ? fa_backward(ctx, &desc, &t[0].t, &t[1].t, &t[2].t, &t[3].t, &t[4].t, &t[5].t, &t[6].t, &t[7].t,
                              &t[8].t)
                : fa_forward(ctx, &desc, &t[0].t, &t[1].t, &t[2].t, &t[3].t, &t[4].t);
  if (st == FA_ERROR_UNSUPPORTED) { /* a vendor library the query does not open (cuBLAS) is missing */
    th_diag("%s: %s %s unsupported: %s", be, name, what, fa_context_last_error(ctx));
    return;
  }
  ck_assert_msg(st == FA_SUCCESS, "%s %s %s: %s", be, name, what, fa_context_last_error(ctx));
  ck_assert_int_eq(fa_synchronize(ctx), FA_SUCCESS);
  ck_assert_int_eq(fa_context_memory(ctx, &after, NULL), FA_SUCCESS);
  ck_assert_msg(after - before == bytes, "%s %s %s: the workspace grew by %zu bytes, the query said %zu", be, name,
                what, after - before, bytes);
  th_diag("%s: %s %s of B=1 S=300 H=2 D=64 f32: workspace %zu bytes, as queried", be, name, what, bytes);
}

START_TEST(t_workspace_size) {
  th_case_begin("fa_forward_workspace_size / fa_backward_workspace_size against the calls' own workspace");
  for (int bi = 0; bi < th_backend_count(); bi++) {
    const char *be = th_backend_label(bi);
    static const fa_algo algos[2] = {FA_ALGO_FLASH, FA_ALGO_STANDARD};
    for (int pass = 0; pass < 4; pass++) {
      /* A fresh context per pass: each call meets an empty workspace. */
      fa_context_options opt;
      fa_context_options_default(&opt);
      opt.backend = th_backend_kind(bi);
      fa_context *ctx = NULL;
      ck_assert_msg(fa_context_create(&opt, &ctx) == FA_SUCCESS, "%s: %s", be, fa_last_create_error());
      const int64_t qs[4] = {1, 300, 2, 64}, ls[4] = {1, 2, 300, 1};
      /* q k v o lse dout dq dk dv */
      th_tensor t[9];
      th_rng r;
      th_rng_init(&r, th_case_seed(pass));
      for (int i = 0; i < 9; i++) {
        ck_assert_int_eq(th_tensor_create(&t[i], ctx, FA_F32, i == 4 ? ls : qs, TH_PACKED, 0),
                         FA_SUCCESS);
        ck_assert_int_eq(th_tensor_fill_random(&t[i], &r, 1.0), FA_SUCCESS);
      }
      /* Random o, lse and dout serve: only the memory is checked here, the gradients in test_backward. */
      const int backward = pass & 1;
      check_workspace(ctx, be, algos[pass / 2], backward, t);
      for (int i = 0; i < 9; i++) th_tensor_destroy(&t[i]);
      fa_context_destroy(ctx);
    }
    size_t bytes = 7;
    fa_context *ctx = th_context(bi);
    ck_assert_int_eq(fa_forward_workspace_size(ctx, NULL, NULL, NULL, NULL, NULL, NULL, &bytes), FA_ERROR_INVALID_ARGUMENT);
    ck_assert_msg(bytes == 0, "%s: bytes %zu after a failed query", be, bytes);
    th_ran(bi);
  }
  th_finish_case();
}
END_TEST

#if TH_HAVE_OPENCL
/* The first OpenCL device in loader order (what device index 0 means), with a context and a queue. */
static int own_queue(cl_context *cctx, cl_command_queue *queue, cl_device_id *dev) {
  cl_platform_id plats[16];
  cl_uint np = 0;
  if (clGetPlatformIDs(16, plats, &np) != CL_SUCCESS) return -1;
  for (cl_uint i = 0; i < np; i++) {
    cl_uint nd = 0;
    if (clGetDeviceIDs(plats[i], CL_DEVICE_TYPE_ALL, 1, dev, &nd) != CL_SUCCESS || nd == 0) continue;
    cl_int err;
    *cctx = clCreateContext(NULL, 1, dev, NULL, NULL, &err);
    if (err != CL_SUCCESS) return -1;
    *queue = clCreateCommandQueue(*cctx, *dev, 0, &err);
    if (err != CL_SUCCESS) {
      clReleaseContext(*cctx);
      return -1;
    }
    return 0;
  }
  return -1;
}

static cl_uint ref_count(cl_mem m) {
  cl_uint n = 0;
  clGetMemObjectInfo(m, CL_MEM_REFERENCE_COUNT, sizeof n, &n, NULL);
  return n;
}

START_TEST(t_opencl_interop) {
  th_case_begin("OpenCL interop: context on the caller's queue, fa_buffer_wrap of the caller's cl_mem");
  int bi = -1;
  for (int i = 0; i < th_backend_count(); i++)
    if (th_backend_kind(i) == FA_BACKEND_OPENCL) bi = i;
  if (bi < 0) {
    th_unsupported(0, "no OpenCL device");
    th_finish_case();
    return;
  }
  cl_context cctx;
  cl_command_queue queue;
  cl_device_id dev;
  ck_assert_msg(own_queue(&cctx, &queue, &dev) == 0, "could not make an OpenCL context and queue");
  fa_context_options opt;
  fa_context_options_default(&opt);
  opt.backend = FA_BACKEND_OPENCL;
  opt.native_queue = queue;
  fa_context *ctx = NULL;
  fa_status st = fa_context_create(&opt, &ctx);
  ck_assert_msg(st == FA_SUCCESS, "fa_context_create(native_queue): %s: %s", fa_status_string(st),
                fa_last_create_error());

  /* Wrap the caller's memory: writes through one API are seen through the other. */
  const int S = 100, H = 2, D = 64;
  const size_t bytes = (size_t)S * H * D * 4;
  cl_int err;
  cl_mem mem[4];
  fa_buffer *fb[4];
  for (int i = 0; i < 4; i++) {
    mem[i] = clCreateBuffer(cctx, CL_MEM_READ_WRITE, bytes + 64, NULL, &err);
    ck_assert_int_eq(err, CL_SUCCESS);
    ck_assert_int_eq(ref_count(mem[i]), 1);
    st = fa_buffer_wrap(ctx, mem[i], bytes, &fb[i]);
    ck_assert_msg(st == FA_SUCCESS, "fa_buffer_wrap: %s: %s", fa_status_string(st), fa_context_last_error(ctx));
    ck_assert_uint_eq(fa_buffer_size(fb[i]), bytes);
  }
  ck_assert_msg(ref_count(mem[0]) == 2, "fa_buffer_wrap did not retain the cl_mem (count %u)", ref_count(mem[0]));
  unsigned char in[256], out[256];
  for (int i = 0; i < 256; i++) in[i] = (unsigned char)(i ^ 0x5a);
  ck_assert_int_eq(clEnqueueWriteBuffer(queue, mem[0], CL_TRUE, 128, 256, in, 0, NULL, NULL), CL_SUCCESS);
  ck_assert_int_eq(fa_buffer_read(ctx, fb[0], 128, out, 256), FA_SUCCESS);
  ck_assert(memcmp(in, out, 256) == 0);
  ck_assert_int_eq(fa_buffer_write(ctx, fb[1], 40, in, 256), FA_SUCCESS);
  ck_assert_int_eq(clEnqueueReadBuffer(queue, mem[1], CL_TRUE, 40, 256, out, 0, NULL, NULL), CL_SUCCESS);
  ck_assert(memcmp(in, out, 256) == 0);

  /* A forward on wrapped memory, on the caller's queue. */
  double e = small_forward(ctx, FA_ALGO_FLASH, S, fb[0], fb[1], fb[2], fb[3], 1);
  ck_assert_msg(e >= 0 && e <= 1e-5, "forward on wrapped buffers: relative error %g", e);
  ck_assert_int_eq(clFinish(queue), CL_SUCCESS);

  /* Sub-buffers of one cl_mem are compared where they lie in it: o overlapping q through two wrapped
   * sub-buffers is refused, o in a disjoint sub-buffer of the same cl_mem is accepted. */
  {
    cl_uint align_bits = 0;
    ck_assert_int_eq(clGetDeviceInfo(dev, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits, &align_bits, NULL), CL_SUCCESS);
    const size_t align = align_bits / 8 ? align_bits / 8 : 1, span = (bytes + align - 1) / align * align;
    cl_mem parent = clCreateBuffer(cctx, CL_MEM_READ_WRITE, 2 * span + align, NULL, &err);
    ck_assert_int_eq(err, CL_SUCCESS);
    const cl_buffer_region regions[3] = {{0, bytes}, {align, bytes}, {span + align, bytes}};
    cl_mem sub[3];
    fa_buffer *fs[3];
    fa_tensor ts[3];
    for (int i = 0; i < 3; i++) {
      sub[i] = clCreateSubBuffer(parent, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &regions[i], &err);
      ck_assert_int_eq(err, CL_SUCCESS);
      ck_assert_int_eq(fa_buffer_wrap(ctx, sub[i], bytes, &fs[i]), FA_SUCCESS);
      fa_tensor_packed(&ts[i], fs[i], 0, FA_F32, 1, S, H, D);
    }
    ck_assert_int_eq(fa_buffer_write(ctx, fs[0], 0, in, 256), FA_SUCCESS);
    fa_attention_desc desc;
    fa_attention_desc_init(&desc);
    st = fa_forward(ctx, &desc, &ts[0], &ts[0], &ts[0], &ts[1], NULL);
    ck_assert_msg(st == FA_ERROR_INVALID_ARGUMENT && strstr(fa_context_last_error(ctx), "o: shares memory with q"),
                  "o overlapping q through sub-buffers: %s: %s", fa_status_string(st), fa_context_last_error(ctx));
    st = fa_forward(ctx, &desc, &ts[0], &ts[0], &ts[0], &ts[2], NULL);
    ck_assert_msg(st == FA_SUCCESS, "o in a disjoint sub-buffer: %s: %s", fa_status_string(st), fa_context_last_error(ctx));
    ck_assert_int_eq(fa_synchronize(ctx), FA_SUCCESS);
    for (int i = 0; i < 3; i++) {
      fa_buffer_destroy(fs[i]);
      ck_assert_int_eq(clReleaseMemObject(sub[i]), CL_SUCCESS);
    }
    ck_assert_int_eq(clReleaseMemObject(parent), CL_SUCCESS);
  }

  /* The caller's queue has no profiling: events time with the host clock, and fa_device_info says so; the
   * library's own contexts have a profiling queue (PoCL and NVIDIA give one). */
  fa_device_info info;
  fa_device_info_init(&info);
  ck_assert_int_eq(fa_context_info(ctx, &info), FA_SUCCESS);
  ck_assert_int_eq(info.events_host_clock, 1);
  fa_device_info_init(&info);
  ck_assert_int_eq(fa_context_info(th_context(bi), &info), FA_SUCCESS);
  ck_assert_int_eq(info.events_host_clock, 0);
  fa_event *e0 = NULL, *e1 = NULL;
  double ms = -1;
  ck_assert_int_eq(fa_event_record(ctx, &e0), FA_SUCCESS);
  e = small_forward(ctx, FA_ALGO_FLASH, S, fb[0], fb[1], fb[2], fb[3], 1);
  ck_assert_int_eq(fa_event_record(ctx, &e1), FA_SUCCESS);
  ck_assert_int_eq(fa_event_elapsed_ms(ctx, e0, e1, &ms), FA_SUCCESS);
  ck_assert_msg(ms > 0 && ms < 600e3, "host-clock events around a forward: %g ms", ms);
  ck_assert_int_eq(fa_event_elapsed_ms(ctx, e1, e0, &ms), FA_ERROR_INVALID_ARGUMENT);
  th_diag("opencl: a forward on the caller's queue (no profiling) took %.3f ms by the host clock", ms);
  fa_event_destroy(e0);
  fa_event_destroy(e1);

  /* Wrapping more than the cl_mem holds, or memory of another cl_context, is refused. */
  fa_buffer *bad = NULL;
  st = fa_buffer_wrap(ctx, mem[0], bytes + 65, &bad);
  ck_assert_msg(st == FA_ERROR_INVALID_ARGUMENT && bad == NULL, "wrap of %zu bytes of a %zu-byte cl_mem: %s",
                bytes + 65, bytes + 64, fa_status_string(st));
  ck_assert_msg(fa_context_last_error(ctx)[0], "no message");
  cl_context other = clCreateContext(NULL, 1, &dev, NULL, NULL, &err);
  ck_assert_int_eq(err, CL_SUCCESS);
  cl_mem foreign = clCreateBuffer(other, CL_MEM_READ_WRITE, 1024, NULL, &err);
  ck_assert_int_eq(err, CL_SUCCESS);
  st = fa_buffer_wrap(ctx, foreign, 1024, &bad);
  ck_assert_msg(st == FA_ERROR_INVALID_ARGUMENT, "wrap of another cl_context's cl_mem: %s", fa_status_string(st));
  clReleaseMemObject(foreign);
  clReleaseContext(other);

  /* Destroying the wrappers and the context leaves the caller's objects alive. */
  /* Compared with the count just before: rusticl's commands keep references of their own for a while
   * (after clFinish too), so the absolute count says nothing about ours. */
  const cl_uint before = ref_count(mem[0]);
  for (int i = 0; i < 4; i++) fa_buffer_destroy(fb[i]);
  ck_assert_msg(ref_count(mem[0]) == before - 1, "fa_buffer_destroy of a wrapped cl_mem: count %u, want %u",
                ref_count(mem[0]), before - 1);
  fa_context_destroy(ctx);
  ck_assert_int_eq(clFinish(queue), CL_SUCCESS);
  ck_assert_int_eq(clEnqueueReadBuffer(queue, mem[1], CL_TRUE, 40, 256, out, 0, NULL, NULL), CL_SUCCESS);
  for (int i = 0; i < 4; i++) ck_assert_int_eq(clReleaseMemObject(mem[i]), CL_SUCCESS);
  ck_assert_int_eq(clReleaseCommandQueue(queue), CL_SUCCESS);
  ck_assert_int_eq(clReleaseContext(cctx), CL_SUCCESS);
  th_ran(bi);
  th_finish_case();
}
END_TEST
#endif

static Suite *make_suite(void) {
  Suite *s = suite_create("api");
  TCase *tc = tcase_create("api");
  tcase_set_timeout(tc, TH_TIMEOUT_S);
  tcase_add_test(tc, t_version);
  tcase_add_test(tc, t_names);
  tcase_add_test(tc, t_options_and_tensor_helpers);
  tcase_add_test(tc, t_context_info);
  tcase_add_test(tc, t_struct_growth);
  tcase_add_test(tc, t_tiles);
  tcase_add_test(tc, t_buffers);
  tcase_add_test(tc, t_memory);
  tcase_add_test(tc, t_workspace_size);
#if TH_HAVE_OPENCL
  tcase_add_test(tc, t_opencl_interop);
#endif
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return th_main(make_suite(), 1);
}

/* The kernel workshops' shared part: see workshop.h. */
#include "workshop.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/masks.h"

#if FA_HAVE_CUDA
#include "cu_internal.h"
#endif

/* ---- options ---- */

static void usage_exit(const char *usage, const char *why, const char *arg) {
  if (why) fprintf(stderr, "%s%s%s\n", why, arg ? ": " : "", arg ? arg : "");
  fprintf(stderr, "%s", usage);
  exit(2);
}

static int64_t number(const char *s, const char *usage, const char *opt) {
  char *end;
  long long x = strtoll(s, &end, 0);
  if (end == s || *end) usage_exit(usage, "not a number", opt);
  return x;
}

void ws_parse(int argc, char **argv, ws_opts *o, const char *usage) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      printf("%s", usage);
      exit(0);
    }
    if (strncmp(a, "--", 2) != 0 || !v) usage_exit(usage, "an option and its value expected", a);
    i++;
    if (!strcmp(a, "--backend")) {
      o->backend = !strcmp(v, "cuda") ? FA_BACKEND_CUDA : !strcmp(v, "opencl") ? FA_BACKEND_OPENCL : FA_BACKEND_AUTO;
      if (o->backend == FA_BACKEND_AUTO && strcmp(v, "auto")) usage_exit(usage, "--backend: cuda, opencl or auto", v);
    } else if (!strcmp(a, "--dtype")) {
      o->dtype = !strcmp(v, "f32") ? FA_F32 : !strcmp(v, "f16") ? FA_F16 : FA_BF16;
      if (o->dtype == FA_BF16 && strcmp(v, "bf16")) usage_exit(usage, "--dtype: f32, f16 or bf16", v);
    } else if (!strcmp(a, "--shape")) {
      long long s[6];
      if (sscanf(v, "%lld,%lld,%lld,%lld,%lld,%lld", &s[0], &s[1], &s[2], &s[3], &s[4], &s[5]) != 6)
        usage_exit(usage, "--shape: B,Sq,Sk,Hq,Hkv,D", v);
      o->b = s[0], o->sq = s[1], o->sk = s[2], o->hq = s[3], o->hkv = s[4], o->d = s[5];
    } else if (!strcmp(a, "--causal")) {
      o->causal = (int)number(v, usage, a);
    } else if (!strcmp(a, "--scale")) {
      o->scale = strtof(v, NULL);
    } else if (!strcmp(a, "--layout")) {
      static const char *names[] = {"packed", "bhsd", "padded", "bhsd+padded"};
      int l = 0;
      while (l < 4 && strcmp(v, names[l])) l++;
      if (l == 4) usage_exit(usage, "--layout: packed, bhsd, padded or bhsd+padded", v);
      o->layout = (th_layout)l;
    } else if (!strcmp(a, "--mask")) {
      long long bq, bk;
      if (sscanf(v, "%lldx%lld:%lf", &bq, &bk, &o->density) != 3 || bq < 1 || bk < 1)
        usage_exit(usage, "--mask: BQxBK:DENSITY", v);
      o->block_q = bq, o->block_k = bk;
    } else if (!strcmp(a, "--dropout")) {
      o->dropout = strtof(v, NULL);
    } else if (!strcmp(a, "--deterministic")) {
      o->deterministic = (int)number(v, usage, a);
    } else if (!strcmp(a, "--seqlens-k")) {
      o->seqlens_k = !strcmp(v, "rand") ? -1 : number(v, usage, a);
    } else if (!strcmp(a, "--window")) {
      long long l, r;
      if (sscanf(v, "%lld,%lld", &l, &r) != 2) usage_exit(usage, "--window: LEFT,RIGHT", v);
      o->window = 1, o->window_left = l, o->window_right = r;
    } else if (!strcmp(a, "--splits")) {
      o->splits = (int)number(v, usage, a);
    } else if (!strcmp(a, "--check")) {
      o->check = (int)number(v, usage, a);
    } else if (!strcmp(a, "--iters")) {
      o->iters = (int)number(v, usage, a);
    } else if (!strcmp(a, "--warmup")) {
      o->warmup = (int)number(v, usage, a);
    } else if (!strcmp(a, "--seed")) {
      o->seed = (uint64_t)number(v, usage, a);
    } else {
      usage_exit(usage, "unknown option", a);
    }
  }
  if (o->b < 1 || o->sq < 1 || o->sk < 1 || o->hq < 1 || o->hkv < 1 || o->d < 1 || o->hq % o->hkv)
    usage_exit(usage, "--shape: sizes >= 1 and Hq a multiple of Hkv", NULL);
  if (o->seqlens_k > o->sk) usage_exit(usage, "--seqlens-k: at most Sk", NULL);
}

/* ---- context ---- */

fa_context *ws_context(const ws_opts *o, int *status) {
  fa_context_options opt;
  fa_context_options_default(&opt);
  opt.backend = o->backend;
  /* Run as a test (suite dev), follow the suites' choice of backend. */
  const char *test_backend = getenv("FLASHATTN_TEST_BACKEND");
  if (opt.backend == FA_BACKEND_AUTO && test_backend)
    opt.backend = !strcmp(test_backend, "cuda") ? FA_BACKEND_CUDA : !strcmp(test_backend, "opencl") ? FA_BACKEND_OPENCL
                                                                                                   : FA_BACKEND_AUTO;
  fa_context *ctx = NULL;
  fa_status st = fa_context_create(&opt, &ctx);
  if (st != FA_SUCCESS) {
    printf("no context: %s: %s\n", fa_status_string(st), fa_last_create_error());
    *status = st == FA_ERROR_BACKEND_UNAVAILABLE ? 77 : 1;
    return NULL;
  }
  fa_device_info info;
  fa_device_info_init(&info);
  if (fa_context_info(ctx, &info) == FA_SUCCESS)
    printf("device: %s: %s (%s, %s), on-chip budget %zu of %zu bytes\nkernels: %s\n", fa_backend_name(info.backend),
           info.name, info.platform, info.api_version, info.local_mem_bytes, info.device_local_mem_bytes,
           info.kernels);
  *status = 0;
  return ctx;
}

/* ---- the problem ---- */

static fa_status report(fa_context *ctx, const char *what, fa_status st) {
  if (st != FA_SUCCESS) printf("%s: %s: %s\n", what, fa_status_string(st), fa_context_last_error(ctx));
  return st;
}

fa_status ws_problem_init(ws_problem *p, fa_context *ctx, const ws_opts *o, int grads) {
  memset(p, 0, sizeof *p);
  p->o = *o;
  p->ctx = ctx;
  p->grads = grads;
  p->mask_density = 1.0;
  th_rng r;
  th_rng_init(&r, o->seed);
  const int64_t qs[4] = {o->b, o->sq, o->hq, o->d}, ks[4] = {o->b, o->sk, o->hkv, o->d};
  const int64_t ls[4] = {o->b, o->hq, o->sq, 1};
  /* Offsets differ per tensor where the layout has gaps, so that mixing two tensors' offsets up shows. */
  const int pad = o->layout == TH_PADDED || o->layout == TH_BHSD_PADDED;
  struct {
    th_tensor *t;
    const int64_t *shape;
    fa_dtype dtype;
    int fill, needed;
  } all[] = {{&p->q, qs, o->dtype, 1, 1},     {&p->k, ks, o->dtype, 1, 1},     {&p->v, ks, o->dtype, 1, 1},
             {&p->out, qs, o->dtype, 0, 1},   {&p->lse, ls, FA_F32, 0, 1},     {&p->dout, qs, o->dtype, 1, grads},
             {&p->dq, qs, o->dtype, 0, grads}, {&p->dk, ks, o->dtype, 0, grads}, {&p->dv, ks, o->dtype, 0, grads}};
  fa_status st = FA_SUCCESS;
  for (size_t i = 0; i < sizeof all / sizeof all[0] && st == FA_SUCCESS; i++) {
    if (!all[i].needed) continue;
    st = th_tensor_create(all[i].t, ctx, all[i].dtype, all[i].shape, o->layout, pad ? (int64_t)(3 * i + 1) : 0);
    if (st == FA_SUCCESS && all[i].fill) st = th_tensor_fill_random(all[i].t, &r, 1.0);
  }
  if (report(ctx, "tensors", st) != FA_SUCCESS) return st;

  fa_attention_desc_init(&p->desc);
  p->desc.algo = o->algo;
  p->desc.softmax_scale = o->scale;
  p->desc.causal = o->causal;
  p->desc.deterministic = o->deterministic;
  p->ref = (ref_problem){.batch = o->b, .seqlen_q = o->sq, .seqlen_k = o->sk, .heads_q = o->hq, .heads_kv = o->hkv,
                         .head_dim = o->d, .scale = o->scale > 0 ? (double)o->scale : 1.0 / sqrt((double)o->d),
                         .causal = o->causal};
  if (o->block_q) {
    const int64_t ms[4] = {1, o->hq, (o->sq + o->block_q - 1) / o->block_q, (o->sk + o->block_k - 1) / o->block_k};
    if ((st = report(ctx, "mask", th_tensor_create(&p->mask, ctx, FA_U8, ms, TH_PACKED, 0))) != FA_SUCCESS) return st;
    p->mask_host = malloc(p->mask.elems);
    if (!p->mask_host) return FA_ERROR_OUT_OF_MEMORY;
    size_t on = 0;
    for (size_t e = 0; e < p->mask.elems; e++) on += p->mask.host[e] = p->mask_host[e] = th_rng_uniform(&r) < o->density;
    p->mask_density = (double)on / (double)p->mask.elems;
    if ((st = report(ctx, "mask", th_tensor_upload(&p->mask))) != FA_SUCCESS) return st;
    p->desc.block_mask = &p->mask.t, p->desc.block_q = o->block_q, p->desc.block_k = o->block_k;
  }
  if (o->dropout > 0) p->desc.dropout_p = o->dropout, p->desc.dropout_seed = th_rng_next(&r), p->desc.dropout_offset = 7;
  if (o->seqlens_k) {
    int32_t *lens = malloc((size_t)o->b * sizeof *lens);
    p->seqlens_host = malloc((size_t)o->b * sizeof *p->seqlens_host);
    if (!lens || !p->seqlens_host) return FA_ERROR_OUT_OF_MEMORY;
    for (int64_t b = 0; b < o->b; b++)
      p->seqlens_host[b] = lens[b] = (int32_t)(o->seqlens_k > 0 ? o->seqlens_k : 1 + (int64_t)(th_rng_uniform(&r) * (double)o->sk));
    st = fa_buffer_create(ctx, (size_t)o->b * sizeof *lens, &p->seqlens_buf);
    if (st == FA_SUCCESS) st = fa_buffer_write(ctx, p->seqlens_buf, 0, lens, (size_t)o->b * sizeof *lens);
    free(lens);
    if (report(ctx, "seqlens_k", st) != FA_SUCCESS) return st;
    fa_tensor_packed(&p->seqlens, p->seqlens_buf, 0, FA_I32, o->b, 1, 1, 1);
    p->desc.seqlens_k = &p->seqlens;
    p->ref.seqlens_k = p->seqlens_host;
  }
  if (o->window) {
    p->desc.window = 1, p->desc.window_left = o->window_left, p->desc.window_right = o->window_right;
    p->ref.window = 1, p->ref.window_left = o->window_left, p->ref.window_right = o->window_right;
  }
  p->desc.num_splits = o->splits;
  return FA_SUCCESS;
}

void ws_problem_free(ws_problem *p) {
  th_tensor *all[] = {&p->q, &p->k, &p->v, &p->out, &p->lse, &p->dout, &p->dq, &p->dk, &p->dv, &p->mask};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    if (all[i]->buf) th_tensor_destroy(all[i]);
  fa_buffer_destroy(p->seqlens_buf);
  free(p->seqlens_host);
  free(p->mask_host);
  free(p->keep);
  free(p->dropout_mult);
  memset(p, 0, sizeof *p);
}

const char *ws_describe(const ws_problem *p, char *buf, size_t len) {
  const ws_opts *o = &p->o;
  static const char *layouts[] = {"packed", "bhsd", "padded", "bhsd+padded"};
  int n = snprintf(buf, len, "%s%s B=%lld Sq=%lld Sk=%lld Hq=%lld Hkv=%lld D=%lld%s %s",
                   o->algo == FA_ALGO_STANDARD ? "standard " : "", fa_dtype_name(o->dtype), (long long)o->b,
                   (long long)o->sq, (long long)o->sk, (long long)o->hq, (long long)o->hkv, (long long)o->d,
                   o->causal ? " causal" : "", layouts[o->layout]);
  if (n >= 0 && (size_t)n < len && o->block_q)
    n += snprintf(buf + n, len - (size_t)n, " mask=%lldx%lld:%.2f", (long long)o->block_q, (long long)o->block_k,
                  p->mask_density);
  if (n >= 0 && (size_t)n < len && o->dropout > 0) n += snprintf(buf + n, len - (size_t)n, " dropout=%g", o->dropout);
  if (n >= 0 && (size_t)n < len && o->deterministic) n += snprintf(buf + n, len - (size_t)n, " deterministic");
  if (n >= 0 && (size_t)n < len && o->seqlens_k)
    n += snprintf(buf + n, len - (size_t)n, " seqlens_k=%s", o->seqlens_k < 0 ? "rand" : "fixed");
  if (n >= 0 && (size_t)n < len && o->window)
    n += snprintf(buf + n, len - (size_t)n, " window=%lld,%lld", (long long)o->window_left, (long long)o->window_right);
  if (n >= 0 && (size_t)n < len && o->splits) snprintf(buf + n, len - (size_t)n, " splits=%d", o->splits);
  return buf;
}

fa_status ws_forward(ws_problem *p) {
  return fa_forward(p->ctx, &p->desc, &p->q.t, &p->k.t, &p->v.t, &p->out.t, &p->lse.t);
}

fa_status ws_backward(ws_problem *p) {
  return fa_backward(p->ctx, &p->desc, &p->q.t, &p->k.t, &p->v.t, &p->out.t, &p->lse.t, &p->dout.t, &p->dq.t,
                     &p->dk.t, &p->dv.t);
}

fa_status ws_forward_backward(ws_problem *p) {
  fa_status st = ws_forward(p);
  return st == FA_SUCCESS ? ws_backward(p) : st;
}

int ws_should_check(const ws_problem *p) {
  const ws_opts *o = &p->o;
  if (o->check >= 0) return o->check;
  return (double)o->b * (double)o->hq * (double)o->sq * (double)o->sk * (double)o->d <= 1073741824.0;
}

/* The reference's mask and dropout, expanded to scores (B·Hq·Sq·Sk each: made only when checking). */
static int reference_masks(ws_problem *p) {
  const size_t ns = ref_score_elems(&p->ref);
  if (p->mask_host && !p->keep) {
    if (!(p->keep = malloc(ns))) return -1;
    ref_expand_block_mask(&p->ref, p->mask_host, 1, p->o.hq, p->o.block_q, p->o.block_k, p->keep);
    p->ref.keep = p->keep;
  }
  if (p->desc.dropout_p > 0 && !p->dropout_mult) {
    if (!(p->dropout_mult = malloc(ns * sizeof(double)))) return -1;
    /* The library's threshold (api.c): round(p · 2^32); kept scores are scaled by 1 / (1 - p). */
    const double t = nearbyint((double)p->desc.dropout_p * 4294967296.0);
    const uint32_t thr = t > 4294967295.0 ? 0xffffffffu : (uint32_t)t;
    const double kept = 1.0 / (1.0 - (double)p->desc.dropout_p);
    size_t e = 0;
    for (int64_t bh = 0; bh < p->o.b * p->o.hq; bh++)
      for (int64_t i = 0; i < p->o.sq; i++)
        for (int64_t j = 0; j < p->o.sk; j++, e++)
          p->dropout_mult[e] = fa_dropout_keep(p->desc.dropout_seed, p->desc.dropout_offset, thr, (uint32_t)bh,
                                               (uint32_t)i, (uint32_t)j) ? kept : 0.0;
    p->ref.dropout = p->dropout_mult;
  }
  return 0;
}

static fa_status run_and_wait(ws_problem *p, fa_status (*fn)(ws_problem *), const char *what) {
  fa_status st = fn(p);
  if (st == FA_SUCCESS) st = fa_synchronize(p->ctx);
  return report(p->ctx, what, st);
}

int ws_check_forward(ws_problem *p) {
  char name[512];
  ws_describe(p, name, sizeof name);
  if (run_and_wait(p, ws_forward, "fa_forward") != FA_SUCCESS) {
    printf("not ok - forward %s: the call failed\n", name);
    return 1;
  }
  int o_outside_ok = 0, l_outside_ok = 0;
  if (th_tensor_download(&p->out, &o_outside_ok) != FA_SUCCESS || th_tensor_download(&p->lse, &l_outside_ok) != FA_SUCCESS)
    return printf("not ok - forward %s: reading the outputs failed\n", name), 1;
  double *ro = malloc(p->out.elems * sizeof(double)), *rl = malloc(p->lse.elems * sizeof(double));
  if (!ro || !rl || reference_masks(p) || ref_forward(&p->ref, p->q.host, p->k.host, p->v.host, ro, rl)) {
    printf("not ok - forward %s: the reference is out of host memory\n", name);
    free(ro), free(rl);
    return 1;
  }
  const double tol = th_tolerance(p->o.dtype), err = ref_rel_error(p->out.host, ro, p->out.elems);
  const double lerr = ref_max_abs_error_scaled(p->lse.host, rl, p->lse.elems);
  size_t empty_rows = 0, empty_bad = 0;
  for (int64_t b = 0; b < p->o.b; b++)
    for (int64_t h = 0; h < p->o.hq; h++)
      for (int64_t i = 0; i < p->o.sq; i++) {
        if (!ref_row_empty(&p->ref, b, h, i)) continue;
        empty_rows++;
        for (int64_t x = 0; x < p->o.d; x++)
          empty_bad += p->out.host[((b * p->o.sq + i) * p->o.hq + h) * p->o.d + x] != 0.0;
      }
  const int ok = err <= tol && lerr <= 1e-3 && !empty_bad && o_outside_ok && l_outside_ok;
  printf("%s - forward %s: o %.2e (bound %.0e), lse %.2e (bound 1e-3), %zu rows without keys%s%s\n",
         ok ? "ok" : "not ok", name, err, tol, lerr, empty_rows, empty_bad ? " not zero" : "",
         o_outside_ok && l_outside_ok ? "" : ", wrote outside o or lse");
  free(ro), free(rl);
  return !ok;
}

int ws_check_backward(ws_problem *p) {
  char name[512];
  ws_describe(p, name, sizeof name);
  if (run_and_wait(p, ws_forward_backward, "fa_forward, fa_backward") != FA_SUCCESS) {
    printf("not ok - backward %s: the call failed\n", name);
    return 1;
  }
  th_tensor *g[3] = {&p->dq, &p->dk, &p->dv};
  int outside_ok = 1, same = 1;
  double *first[3] = {NULL, NULL, NULL};
  for (int i = 0; i < 3; i++) {
    int ok = 0;
    if (th_tensor_download(g[i], &ok) != FA_SUCCESS) return printf("not ok - backward %s: reading failed\n", name), 1;
    outside_ok &= ok;
  }
  if (p->o.deterministic) { /* a second call must give the same bits */
    for (int i = 0; i < 3; i++) {
      first[i] = malloc(g[i]->elems * sizeof(double));
      if (first[i]) memcpy(first[i], g[i]->host, g[i]->elems * sizeof(double));
    }
    if (run_and_wait(p, ws_backward, "fa_backward (again)") != FA_SUCCESS) same = 0;
    for (int i = 0; i < 3; i++) {
      same &= first[i] && th_tensor_download(g[i], NULL) == FA_SUCCESS &&
              !memcmp(first[i], g[i]->host, g[i]->elems * sizeof(double));
      free(first[i]);
    }
  }
  double *ref[3];
  for (int i = 0; i < 3; i++) ref[i] = malloc(g[i]->elems * sizeof(double));
  if (!ref[0] || !ref[1] || !ref[2] || reference_masks(p) ||
      ref_backward(&p->ref, p->q.host, p->k.host, p->v.host, p->dout.host, ref[0], ref[1], ref[2])) {
    printf("not ok - backward %s: the reference is out of host memory\n", name);
    for (int i = 0; i < 3; i++) free(ref[i]);
    return 1;
  }
  const double tol = th_tolerance(p->o.dtype);
  double err[3];
  int ok = outside_ok && same;
  for (int i = 0; i < 3; i++) {
    err[i] = ref_rel_error(g[i]->host, ref[i], g[i]->elems);
    ok &= err[i] <= tol;
    free(ref[i]);
  }
  printf("%s - backward %s: dq %.2e dk %.2e dv %.2e (bound %.0e)%s%s\n", ok ? "ok" : "not ok", name, err[0], err[1],
         err[2], tol, outside_ok ? "" : ", wrote outside a gradient", same ? "" : ", two calls differ");
  return !ok;
}

/* ---- timing ---- */

static double cpu_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double ws_time(ws_problem *p, fa_status (*fn)(ws_problem *), double *cpu_ms) {
  *cpu_ms = NAN;
  for (int i = 0; i < p->o.warmup; i++)
    if (run_and_wait(p, fn, "warm-up call") != FA_SUCCESS) return NAN;
  const int n = p->o.iters;
  double *ms = malloc((size_t)(n > 0 ? n : 1) * sizeof *ms), cpu = cpu_now_ms();
  fa_status st = FA_SUCCESS;
  for (int i = 0; i < n && st == FA_SUCCESS; i++) {
    fa_event *e0 = NULL, *e1 = NULL;
    st = fa_event_record(p->ctx, &e0);
    if (st == FA_SUCCESS) st = fn(p);
    if (st == FA_SUCCESS) st = fa_event_record(p->ctx, &e1);
    if (st == FA_SUCCESS) st = fa_event_elapsed_ms(p->ctx, e0, e1, &ms[i]);
    fa_event_destroy(e0);
    fa_event_destroy(e1);
  }
  if (report(p->ctx, "timed call", st) != FA_SUCCESS || n < 1) {
    free(ms);
    return NAN;
  }
  *cpu_ms = (cpu_now_ms() - cpu) / n;
  qsort(ms, (size_t)n, sizeof *ms, cmp_double);
  double med = n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
  free(ms);
  return med;
}

double ws_forward_flops(const ws_problem *p) {
  const ws_opts *o = &p->o;
  return 4.0 * (double)o->b * (double)o->hq * (double)o->sq * (double)o->sk * (double)o->d * (o->causal ? 0.5 : 1.0) *
         p->mask_density;
}

/* ---- nvrtc mode ---- */

size_t ws_nvrtc_optin(const char *arch) {
  const int cc_major = atoi(arch + 3) / 10;
  return cc_major >= 9 ? 232448 : cc_major == 8 ? 166912 : 49152;
}

#if FA_HAVE_CUDA
int ws_nvrtc_begin(ws_nvrtc *t, int argc, char **argv, const char *usage) {
  memset(t, 0, sizeof *t);
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-a")) t->all = 1;
    else if (!strcmp(argv[i], "-f")) t->features = 1;
    else if (!strcmp(argv[i], "-q")) t->quiet = 1;
    else if (!strcmp(argv[i], "-o") && i + 1 < argc) t->out_dir = argv[++i];
    else if (!strcmp(argv[i], "-D") && i + 1 < argc && t->ndefines < 16) t->defines[t->ndefines++] = argv[++i];
    else if (!strncmp(argv[i], "sm_", 3) && t->narch < 16) t->archs[t->narch++] = argv[i];
    else {
      fprintf(stderr, "%s", usage);
      return 2;
    }
  }
  if (!t->narch) t->archs[t->narch++] = "sm_80", t->archs[t->narch++] = "sm_90";
  static const int some[] = {16, 32, 64, 80, 96, 128, 160, 192, 224, 256};
  if (t->all)
    for (int d = 8; d <= 256; d += 8) t->dims[t->ndims++] = d;
  else
    for (size_t i = 0; i < sizeof some / sizeof some[0]; i++) t->dims[t->ndims++] = some[i];
  const fa_cu_nvrtc *nv;
  int version;
  char msg[2048];
  if (fa_cu_load_nvrtc(&nv, &version, msg, sizeof msg) != FA_SUCCESS) {
    printf("nvrtc: %s\n", msg);
    return 77;
  }
  t->nv = nv;
  printf("NVRTC %d.%d\n", version / 1000, version % 1000 / 10);
  return 0;
}

/* ptxas's lines of a log: "Used N registers, ...", "N bytes stack frame, N bytes spill stores, ...", and
 * "Potential Performance Loss: wgmma.mma_async instructions are serialized" (C7510-C7520: every wgmma of the
 * kernel waits for the one before; sets *serial). Returns the largest count of spill-store bytes among its
 * functions. */
static int ptxas_report(const char *log, int print, int *serial) {
  int spills = 0;
  *serial = 0;
  for (const char *line = log; *line;) {
    const char *end = strchr(line, '\n');
    size_t n = end ? (size_t)(end - line) : strlen(line);
    const char *sp = memmem(line, n, "bytes spill stores", 18);
    if (sp) {
      const char *q = sp;
      while (q > line && q[-1] != ',') q--;
      if (atoi(q) > spills) spills = atoi(q);
    }
    const int ser = memmem(line, n, "are serialized", 14) != NULL;
    *serial |= ser;
    if (print && (memmem(line, n, "Compiling entry", 15) || memmem(line, n, "Used", 4) || sp || ser))
      printf("    %.*s\n", (int)n, line);
    line += n + (end ? 1 : 0);
  }
  return spills;
}

void ws_nvrtc_compile(ws_nvrtc *t, const char *file, const char *arch, const char *defines, const char *note) {
  static char *seen[8192];
  static int nseen;
  char key[512], msg[2048];
  snprintf(key, sizeof key, "%s %s %s", arch, file, defines);
  for (int i = 0; i < nseen; i++)
    if (!strcmp(seen[i], key)) return; /* budgets often give the same tiles */
  if (nseen < 8192) seen[nseen++] = strdup(key);
  void *image = NULL;
  size_t size = 0;
  char *log = NULL;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  fa_status st = fa_cu_compile(t->nv, file, defines, arch, 1, &image, &size, &log, msg, sizeof msg);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  const double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  t->seconds += s;
  if (st != FA_SUCCESS) {
    t->failed++;
    printf("FAIL %s\n  %s\n", key, msg);
  } else {
    int serial;
    const int spills = ptxas_report(log ? log : "", 0, &serial);
    if (!t->quiet || spills > 64 || serial) {
      printf("%s: %zu-byte CUBIN%s%s, %.1f s\n", key, size, note && *note ? ", " : "", note ? note : "", s);
      ptxas_report(log ? log : "", 1, &serial);
    }
    t->spilled += spills > 0;
    t->big_spills += spills > 64;
    t->serialized += serial;
    if (t->out_dir) {
      char path[1024];
      snprintf(path, sizeof path, "%s/%d.cubin", t->out_dir, t->compiled);
      FILE *f = fopen(path, "wb");
      if (f) fwrite(image, 1, size, f), fclose(f);
    }
  }
  t->compiled++;
  free(image);
  free(log);
}

void ws_nvrtc_compile_given(ws_nvrtc *t, const char *file) {
  for (int a = 0; a < t->narch; a++)
    for (int i = 0; i < t->ndefines; i++) ws_nvrtc_compile(t, file, t->archs[a], t->defines[i], "");
}

int ws_nvrtc_end(ws_nvrtc *t) {
  printf("%d variants compiled in %.1f s, %d failed, %d spill (%d more than 64 bytes), %d with wgmma serialized\n",
         t->compiled, t->seconds, t->failed, t->spilled, t->big_spills, t->serialized);
  return t->failed || t->big_spills || t->serialized ? 1 : 0;
}
#else
int ws_nvrtc_begin(ws_nvrtc *t, int argc, char **argv, const char *usage) {
  (void)t, (void)argc, (void)argv, (void)usage;
  printf("nvrtc: this build has no CUDA backend (cuda.h and nvrtc.h were not found)\n");
  return 77;
}
void ws_nvrtc_compile(ws_nvrtc *t, const char *file, const char *arch, const char *defines, const char *note) {
  (void)t, (void)file, (void)arch, (void)defines, (void)note;
}
void ws_nvrtc_compile_given(ws_nvrtc *t, const char *file) {
  (void)t, (void)file;
}
int ws_nvrtc_end(ws_nvrtc *t) {
  (void)t;
  return 1;
}
#endif

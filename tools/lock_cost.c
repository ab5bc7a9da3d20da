/* What the context lock (issue 14) costs on the smallest forward: B = Sq = Sk = H = 1, D = 8, f32.
 *
 *   lock_cost [CALLS]   (default 20000; FLASHATTN_BACKEND picks the backend)
 *
 * Prints, per call:
 *   forward      fa_forward alone (enqueue; one fa_synchronize per 256 calls, so kernels run too)
 *   +pair        the same inside one more lock/unlock of an uncontended mutex: the difference is what the
 *                library's own lock pair adds, measured where it sits (same call, same caches)
 *   pair         an uncontended pthread_mutex lock/unlock pair by itself
 *   shared x2    two threads calling fa_forward on one context (they take turns at the lock), per call
 * Each figure is the median of 7 runs. Built as build/tools/lock_cost (tools/meson.build). */
#include <flashattn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef struct problem {
  fa_context *ctx;
  fa_attention_desc desc;
  fa_tensor q, k, v, o;
  long calls;
  pthread_mutex_t *extra; /* NULL, or a mutex taken around each call */
} problem;

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static void *calls(void *arg) {
  problem *p = arg;
  for (long i = 0; i < p->calls; i++) {
    if (p->extra) pthread_mutex_lock(p->extra);
    fa_status st = fa_forward(p->ctx, &p->desc, &p->q, &p->k, &p->v, &p->o, NULL);
    if (p->extra) pthread_mutex_unlock(p->extra);
    if (st != FA_SUCCESS) {
      fprintf(stderr, "fa_forward: %s: %s\n", fa_status_string(st), fa_context_last_error(p->ctx));
      exit(1);
    }
    if (i % 256 == 255) fa_synchronize(p->ctx);
  }
  fa_synchronize(p->ctx);
  return NULL;
}

/* Microseconds per call of `threads` threads each making p->calls / threads calls. */
static double run(problem *p, int threads) {
  pthread_t tid[2];
  problem each = *p;
  each.calls = p->calls / threads;
  double t0 = now_us();
  for (int i = 0; i < threads; i++) pthread_create(&tid[i], NULL, calls, &each);
  for (int i = 0; i < threads; i++) pthread_join(tid[i], NULL);
  return (now_us() - t0) / (double)(each.calls * threads);
}

static double pair_us(long n) {
  pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
  double t0 = now_us();
  for (long i = 0; i < n; i++) {
    pthread_mutex_lock(&m);
    __asm__ volatile("" ::: "memory");
    pthread_mutex_unlock(&m);
  }
  return (now_us() - t0) / (double)n;
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median7(problem *p, int threads, pthread_mutex_t *extra, long pairs) {
  double v[7];
  for (int i = 0; i < 7; i++) {
    p->extra = extra;
    v[i] = pairs ? pair_us(pairs) : run(p, threads);
  }
  qsort(v, 7, sizeof v[0], by_value);
  return v[3];
}

int main(int argc, char **argv) {
  problem p = {0};
  p.calls = argc > 1 ? atol(argv[1]) : 20000;
  if (p.calls < 2) p.calls = 2;
  if (fa_context_create(NULL, &p.ctx) != FA_SUCCESS) {
    fprintf(stderr, "fa_context_create: %s\n", fa_last_create_error());
    return 1;
  }
  fa_buffer *buf[4];
  for (int i = 0; i < 4; i++) {
    float zero[8] = {0};
    if (fa_buffer_create(p.ctx, sizeof zero, &buf[i]) != FA_SUCCESS ||
        fa_buffer_write(p.ctx, buf[i], 0, zero, sizeof zero) != FA_SUCCESS)
      return 1;
  }
  fa_tensor_packed(&p.q, buf[0], 0, FA_F32, 1, 1, 1, 8);
  fa_tensor_packed(&p.k, buf[1], 0, FA_F32, 1, 1, 1, 8);
  fa_tensor_packed(&p.v, buf[2], 0, FA_F32, 1, 1, 1, 8);
  fa_tensor_packed(&p.o, buf[3], 0, FA_F32, 1, 1, 1, 8);
  fa_attention_desc_init(&p.desc);
  fa_device_info info;
  fa_device_info_init(&info);
  fa_context_info(p.ctx, &info);
  run(&p, 1); /* warm-up: kernels compiled or loaded */
  pthread_mutex_t extra = PTHREAD_MUTEX_INITIALIZER;
  const double alone = median7(&p, 1, NULL, 0), with_pair = median7(&p, 1, &extra, 0);
  const double pair = median7(&p, 1, NULL, p.calls * 50), shared = median7(&p, 2, NULL, 0);
  printf("device: %s (%s), %ld calls per run, median of 7\n", info.name, fa_backend_name(info.backend), p.calls);
  printf("forward     %8.3f us/call\n+pair       %8.3f us/call (lock pair in place: %+.3f us, %.2f%% of the call)\n",
         alone, with_pair, with_pair - alone, 100.0 * (with_pair - alone) / alone);
  printf("pair        %8.4f us (uncontended pthread_mutex lock + unlock)\nshared x2   %8.3f us/call\n", pair, shared);
  for (int i = 0; i < 4; i++) fa_buffer_destroy(buf[i]);
  fa_context_destroy(p.ctx);
  return 0;
}

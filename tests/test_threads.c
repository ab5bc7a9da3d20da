/* Threads sharing one context (issue 14): before the context lock, two threads calling fa_forward on one
 * context set arguments on the same kernel object at once, and PoCL crashed or results came out wrong.
 * Each of several threads runs forward and backward passes on its own inputs through the one context,
 * creating and freeing its buffers and events as it goes; every result must be bit-identical to the same
 * call made alone. Check's assertions are not thread-safe, so threads record and the main thread asserts. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

enum { THREADS = 4, ROUNDS = 100, B = 1, S = 40, H = 2, D = 32 };
#define ELEMS ((size_t)B * S * H * D)

typedef struct worker {
  fa_context *ctx;
  int backward; /* whether the backend serves the backward pass */
  float in[3][ELEMS];
  float want[4][ELEMS]; /* o, dq, dk, dv from a call made alone */
  char error[512];
} worker;

/* One forward (and backward) pass of w's inputs on fresh buffers; results into out[4]. Returns 0 or -1 with
 * w->error set. dout is q: any fixed gradient will do. */
static int run_once(worker *w, float out[4][ELEMS]) {
  fa_buffer *buf[9] = {NULL};
  fa_tensor t[9];
  int rc = -1;
  fa_status st = FA_SUCCESS;
  for (int i = 0; i < 9 && st == FA_SUCCESS; i++) {
    if (i == 4) {
      st = fa_buffer_create(w->ctx, (size_t)B * H * S * 4, &buf[i]);
      fa_tensor_packed(&t[i], buf[i], 0, FA_F32, B, H, S, 1);
    } else {
      st = fa_buffer_create(w->ctx, ELEMS * 4, &buf[i]);
      fa_tensor_packed(&t[i], buf[i], 0, FA_F32, B, S, H, D);
    }
    if (st == FA_SUCCESS && i < 3) st = fa_buffer_write(w->ctx, buf[i], 0, w->in[i], ELEMS * 4);
  }
  fa_attention_desc desc;
  fa_attention_desc_init(&desc);
  desc.causal = 1, desc.deterministic = 1;
  fa_event *start = NULL, *end = NULL;
  if (st == FA_SUCCESS) st = fa_event_record(w->ctx, &start);
  if (st == FA_ERROR_UNSUPPORTED) st = FA_SUCCESS; /* a queue that cannot time */
  if (st == FA_SUCCESS) st = fa_forward(w->ctx, &desc, &t[0], &t[1], &t[2], &t[3], &t[4]);
  if (st == FA_SUCCESS && w->backward)
    st = fa_backward(w->ctx, &desc, &t[0], &t[1], &t[2], &t[3], &t[4], &t[0], &t[6], &t[7], &t[8]);
  if (st == FA_SUCCESS && start && (st = fa_event_record(w->ctx, &end)) == FA_SUCCESS) {
    double ms;
    st = fa_event_elapsed_ms(w->ctx, start, end, &ms);
  }
  const int outs[4] = {3, 6, 7, 8};
  for (int i = 0; i < (w->backward ? 4 : 1) && st == FA_SUCCESS; i++)
    st = fa_buffer_read(w->ctx, buf[outs[i]], 0, out[i], ELEMS * 4);
  size_t cur, peak;
  if (st == FA_SUCCESS) st = fa_context_memory(w->ctx, &cur, &peak);
  if (st == FA_SUCCESS) rc = 0;
  else snprintf(w->error, sizeof w->error, "%s: %s", fa_status_string(st), fa_context_last_error(w->ctx));
  fa_event_destroy(start);
  fa_event_destroy(end);
  for (int i = 0; i < 9; i++) fa_buffer_destroy(buf[i]);
  return rc;
}

static void *work(void *arg) {
  worker *w = arg;
  static _Thread_local float got[4][ELEMS];
  for (int r = 0; r < ROUNDS && !w->error[0]; r++) {
    if (run_once(w, got) != 0) break;
    for (int i = 0; i < (w->backward ? 4 : 1); i++)
      if (memcmp(got[i], w->want[i], ELEMS * 4) != 0) {
        snprintf(w->error, sizeof w->error, "round %d: %s differs from the same call made alone", r,
                 (const char *[]){"o", "dq", "dk", "dv"}[i]);
        break;
      }
  }
  return NULL;
}

START_TEST(t_shared_context) {
  th_case_begin("%d threads share one context: forward, backward, buffers, events; results as if alone", THREADS);
  for (int bi = 0; bi < th_backend_count(); bi++) {
    worker *w = calloc(THREADS, sizeof *w);
    ck_assert_ptr_nonnull(w);
    fa_context *ctx = th_context(bi);
    for (int k = 0; k < THREADS; k++) {
      w[k].ctx = ctx;
      w[k].backward = 1;
      th_rng r;
      th_rng_init(&r, th_case_seed(k));
      for (int i = 0; i < 3; i++)
        for (size_t e = 0; e < ELEMS; e++) w[k].in[i][e] = (float)th_rng_normal(&r);
      if (run_once(&w[k], w[k].want) != 0 && w[k].backward) {
        /* A backend without the backward pass: threads run the forward alone. */
        w[k].backward = 0, w[k].error[0] = '\0';
        ck_assert_msg(run_once(&w[k], w[k].want) == 0, "%s: alone: %s", th_backend_label(bi), w[k].error);
      }
    }
    pthread_t tid[THREADS];
    for (int k = 0; k < THREADS; k++) ck_assert_int_eq(pthread_create(&tid[k], NULL, work, &w[k]), 0);
    for (int k = 0; k < THREADS; k++) pthread_join(tid[k], NULL);
    for (int k = 0; k < THREADS; k++)
      ck_assert_msg(!w[k].error[0], "%s: thread %d: %s", th_backend_label(bi), k, w[k].error);
    free(w);
    th_ran(bi);
  }
  th_finish_case();
}
END_TEST

int main(void) {
  Suite *s = suite_create("threads");
  TCase *tc = tcase_create("threads");
  tcase_set_timeout(tc, TH_TIMEOUT_S);
  tcase_add_test(tc, t_shared_context);
  suite_add_tcase(s, tc);
  return th_main(s, 1);
}

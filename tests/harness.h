/* Plumbing shared by the Check suites: which backends run, one context per backend for the whole process,
 * random inputs, device tensors in any strided layout with their host copy, NaN poison and TAP output.
 *
 * Every suite's main() builds its Suite and returns th_main(suite, needs_backend). Tests run without
 * forking (an OpenCL or CUDA context created before Check forks makes the child hang, and one context kept
 * for the process keeps its compiled kernels), so one crash ends the suite: meson reports it as failed.
 * TAP goes to stdout when CK_TAP_LOG_FILE_NAME=- (tests/meson.build sets it); diagnostics are "# " lines.
 *
 * Environment: FLASHATTN_TEST_SEED=N repeats a run's random inputs (the seed is printed first);
 * FLASHATTN_TEST_BACKEND=cuda|opencl runs one backend only. */
#ifndef FA_TEST_HARNESS_H
#define FA_TEST_HARNESS_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

#include "flashattn.h"
#include "reference.h"

/* Generous: a cold PoCL compile of one kernel variant takes seconds to tens of seconds on 2 cores. */
#define TH_TIMEOUT_S 600

/* ---- backends ---- */

/* Probe the backends, print which run and which are skipped, run s without forking, free it.
 * needs_backend: when no backend answers, print the TAP plan "1..0 # SKIP no backend" and succeed.
 * Returns main()'s exit status. */
int th_main(Suite *s, int needs_backend);

/* A function th_main calls after the tests, before it destroys the backends' contexts (for a suite's
 * own buffers and contexts). */
void th_set_cleanup(void (*fn)(void));

/* Backends that answered (0 .. th_backend_count() - 1), their kind and name. */
int th_backend_count(void);
fa_backend th_backend_kind(int i);
const char *th_backend_label(int i);

/* Context of backend i: created on first use with default options and the backend named, then kept;
 * fails the running test when creation fails. */
fa_context *th_context(int i);

/* Whether any backend ran a case: tests call th_ran(i) after a backend computed something and
 * th_unsupported(i, why) when it answered FA_ERROR_UNSUPPORTED; th_finish_case() then names the TAP line
 * and turns it into a TAP skip when no backend ran it (never a silent pass). */
void th_case_begin(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void th_ran(int i);
void th_unsupported(int i, const char *why);
void th_finish_case(void);

/* The current case's description ("fwd f32 B=2 Sq=17 ..."), for failure messages. */
const char *th_case(void);

/* A "# " diagnostic line on stdout (TAP comment). */
void th_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- random numbers ---- */

typedef struct th_rng {
  uint64_t state;
} th_rng;

/* The run's base seed (FLASHATTN_TEST_SEED, else time and pid) mixed with a case number. */
uint64_t th_case_seed(int case_number);
uint64_t th_base_seed(void);
void th_rng_init(th_rng *r, uint64_t seed);
uint64_t th_rng_next(th_rng *r);
double th_rng_uniform(th_rng *r); /* [0, 1) */
double th_rng_normal(th_rng *r);  /* N(0, 1) */

/* ---- tensors ---- */

/* Memory layouts of a 4-d logical tensor (BSHD, or B H S 1 for lse). */
typedef enum th_layout {
  TH_PACKED,      /* packed in logical order */
  TH_BHSD,        /* memory ordered B, H, S, D (heads outside the sequence); strides say so */
  TH_PADDED,      /* logical order with gaps after every row, head and sequence (poisoned) */
  TH_BHSD_PADDED, /* both */
} th_layout;

/* A device tensor and its values on the host. The buffer holds `offset` elements before the first one,
 * gaps per the layout and nothing else; the library sees `t`. */
typedef struct th_tensor {
  fa_context *ctx;
  fa_tensor t;       /* the view passed to the library */
  fa_buffer *buf;
  size_t elems;      /* logical elements: shape product */
  size_t buf_elems;  /* elements in the buffer, gaps and offset included */
  double *host;      /* elems values, packed in logical order: inputs as stored, outputs after download */
  unsigned char *image; /* buf_elems elements: what the buffer should hold outside the tensor */
} th_tensor;

/* Create the buffer and host arrays of a tensor of `shape` with `layout` and `offset` elements before it.
 * The buffer starts poisoned. Returns FA_SUCCESS or the library's status (t->ctx's last error says why). */
fa_status th_tensor_create(th_tensor *t, fa_context *ctx, fa_dtype dtype, const int64_t shape[4],
                           th_layout layout, int64_t offset);
void th_tensor_destroy(th_tensor *t);

/* Fill host with N(0, 1) · scale values rounded to the tensor's dtype (so the reference sees exactly what
 * the device stores), and upload: values in place, NaN poison in every gap. */
fa_status th_tensor_fill_random(th_tensor *t, th_rng *r, double scale);

/* Upload host as it stands (values rounded to the dtype first). */
fa_status th_tensor_upload(th_tensor *t);

/* Fill the whole buffer with NaN poison (outputs before a call). */
fa_status th_tensor_poison(th_tensor *t);

/* Read the buffer back: host gets the tensor's values. *outside_ok (may be NULL) says whether every
 * element outside the tensor still holds what was uploaded (poison for outputs). */
fa_status th_tensor_download(th_tensor *t, int *outside_ok);

/* Read the buffer back and compare it whole, bit for bit, with what was last uploaded or poisoned:
 * 1 when unchanged. Returns -1 when the read itself failed. */
int th_tensor_unchanged(th_tensor *t);

/* Bit patterns of the poison: a quiet NaN with a payload, per dtype; 0xa5 for FA_U8 (mask) tensors, whose
 * host values are the bytes (th_round_to clamps to 0..255). */
int th_is_poison(fa_dtype dtype, const void *element);

/* Values as the dtype stores them: float64 -> float32 -> dtype, round to nearest even. */
double th_round_to(fa_dtype dtype, double x);

/* Accuracy bound vs float64 from DESIGN.md: 1e-5, 2e-3, 1e-2. */
double th_tolerance(fa_dtype dtype);

/* A small device tensor [d0, d1, 1, 1] of 4-byte values (int32, float32; uint8 masks take the same bytes), packed
 * after 3 elements of junk, so that a kernel ignoring the view's offset reads the junk: the index and slope
 * operands (seqlens_k, block_table, cu_seqlens, ALiBi). Fails the running test when the device refuses. */
typedef struct th_small {
  fa_buffer *buf;
  fa_tensor t;
} th_small;
void th_small_create(th_small *s, fa_context *ctx, fa_dtype dt, const void *vals, int64_t d0, int64_t d1);

/* Count of values that are NaN. */
size_t th_count_nan(const double *a, size_t n);

#endif

/* Device timing with CUDA events recorded on the context's stream. */
#include "cu_internal.h"

fa_status fa_cu_event_record(fa_context *ctx, uint64_t *native) {
  fa_cu *c = fa_cu_of(ctx);
  fa_status st = fa_cu_push(ctx);
  if (st != FA_SUCCESS) return st;
  CUevent ev = NULL;
  CUresult r = c->cu->EventCreate(&ev, CU_EVENT_DEFAULT);
  if (r == CUDA_SUCCESS) {
    r = c->cu->EventRecord(ev, c->stream);
    if (r != CUDA_SUCCESS) c->cu->EventDestroy(ev);
  }
  fa_cu_pop(ctx);
  if (r != CUDA_SUCCESS) return fa_cu_fail(ctx, "cuEventRecord", r);
  *native = (uint64_t)(uintptr_t)ev;
  return FA_SUCCESS;
}

fa_status fa_cu_event_elapsed(fa_context *ctx, uint64_t start, uint64_t end, double *ms) {
  fa_cu *c = fa_cu_of(ctx);
  fa_status st = fa_cu_push(ctx);
  if (st != FA_SUCCESS) return st;
  float t = 0;
  CUresult r = c->cu->EventSynchronize((CUevent)(uintptr_t)end);
  if (r == CUDA_SUCCESS) r = c->cu->EventElapsedTime(&t, (CUevent)(uintptr_t)start, (CUevent)(uintptr_t)end);
  fa_cu_pop(ctx);
  if (r != CUDA_SUCCESS) return fa_cu_fail(ctx, "cuEventElapsedTime", r);
  *ms = t;
  return FA_SUCCESS;
}

void fa_cu_event_destroy(fa_context *ctx, uint64_t native) {
  fa_cu *c = fa_cu_of(ctx);
  if (fa_cu_push(ctx) != FA_SUCCESS) return;
  c->cu->EventDestroy((CUevent)(uintptr_t)native);
  fa_cu_pop(ctx);
}

/* Device timing on OpenCL: a marker enqueued on the context's queue, timed by the queue's profiling
 * (CL_PROFILING_COMMAND_END: the marker ends once every command before it has). */
#include "cl_internal.h"

fa_status fa_cl_event_record(fa_context *ctx, uint64_t *native) {
  fa_cl *cl = fa_cl_of(ctx);
  if (!cl->profiling)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "fa_event_record: the command queue was created without CL_QUEUE_PROFILING_ENABLE");
  cl_event ev;
  /* A barrier rather than a plain marker: it also orders an out-of-order caller's queue. */
  cl_int err = clEnqueueBarrierWithWaitList(cl->queue, 0, NULL, &ev);
  if (err != CL_SUCCESS) return fa_cl_fail(ctx, "clEnqueueBarrierWithWaitList", err);
  *native = (uint64_t)(uintptr_t)ev;
  return FA_SUCCESS;
}

static cl_int event_end(cl_event ev, cl_ulong *ns) {
  cl_int err = clWaitForEvents(1, &ev);
  if (err != CL_SUCCESS) return err;
  return clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof *ns, ns, NULL);
}

fa_status fa_cl_event_elapsed(fa_context *ctx, uint64_t start, uint64_t end, double *ms) {
  cl_ulong t0, t1;
  cl_int err = event_end((cl_event)(uintptr_t)start, &t0);
  if (err == CL_SUCCESS) err = event_end((cl_event)(uintptr_t)end, &t1);
  if (err != CL_SUCCESS) return fa_cl_fail(ctx, "clGetEventProfilingInfo", err);
  *ms = t1 >= t0 ? (double)(t1 - t0) * 1e-6 : 0.0;
  return FA_SUCCESS;
}

void fa_cl_event_destroy(fa_context *ctx, uint64_t native) {
  (void)ctx;
  clReleaseEvent((cl_event)(uintptr_t)native);
}

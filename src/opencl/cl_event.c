/* Device timing on OpenCL: an empty kernel enqueued on the context's queue as the timing point, read
 * through the queue's profiling (CL_PROFILING_COMMAND_END: on an in-order queue it ends after every
 * command before it). Markers and barriers would do, but some drivers (NVIDIA's) give them no timestamps.
 * A queue without CL_QUEUE_PROFILING_ENABLE (a caller's, or a driver that refuses profiling) is timed with
 * the host's monotonic clock after waiting for the queue: the event's native value is then nanoseconds,
 * and fa_device_info.events_host_clock says so. */
#include <time.h>

#include "cl_internal.h"

static fa_status host_clock_record(fa_context *ctx, uint64_t *native) {
  cl_int err = clFinish(fa_cl_of(ctx)->queue);
  if (err != CL_SUCCESS) return fa_cl_fail(ctx, "clFinish", err);
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  *native = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
  return FA_SUCCESS;
}

fa_status fa_cl_event_record(fa_context *ctx, uint64_t *native) {
  fa_cl *cl = fa_cl_of(ctx);
  if (!cl->profiling) return host_clock_record(ctx, native);
  cl_kernel marker;
  fa_status st = fa_cl_kernel(ctx, "marker.cl", "", "fa_marker", &marker);
  if (st != FA_SUCCESS) return st;
  cl_event ev;
  size_t one = 1;
  cl_int err = clEnqueueNDRangeKernel(cl->queue, marker, 1, NULL, &one, &one, 0, NULL, &ev);
  if (err != CL_SUCCESS) return fa_cl_fail(ctx, "clEnqueueNDRangeKernel(fa_marker)", err);
  *native = (uint64_t)(uintptr_t)ev;
  return FA_SUCCESS;
}

static cl_int event_end(cl_event ev, cl_ulong *ns) {
  cl_int err = clWaitForEvents(1, &ev);
  if (err != CL_SUCCESS) return err;
  return clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof *ns, ns, NULL);
}

fa_status fa_cl_event_elapsed(fa_context *ctx, uint64_t start, uint64_t end, double *ms) {
  if (!fa_cl_of(ctx)->profiling) {
    if (end < start) return fa_fail(ctx, FA_ERROR_INVALID_ARGUMENT, "fa_event_elapsed_ms: end was recorded before start");
    *ms = (double)(end - start) * 1e-6;
    return FA_SUCCESS;
  }
  cl_ulong t0 = 0, t1 = 0;
  cl_int err = event_end((cl_event)(uintptr_t)start, &t0);
  if (err == CL_SUCCESS) err = event_end((cl_event)(uintptr_t)end, &t1);
  if (err != CL_SUCCESS) return fa_cl_fail(ctx, "clGetEventProfilingInfo", err);
  if (t0 == 0 || t1 < t0)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "fa_event_elapsed_ms: the driver's timestamps are unusable (%llu, %llu)",
                   (unsigned long long)t0, (unsigned long long)t1);
  *ms = (double)(t1 - t0) * 1e-6;
  return FA_SUCCESS;
}

void fa_cl_event_destroy(fa_context *ctx, uint64_t native) {
  if (fa_cl_of(ctx)->profiling) clReleaseEvent((cl_event)(uintptr_t)native);
}

/* Placeholder until the backward helper writes the CUDA backward pass. */
#include "cu_internal.h"

fa_status fa_cu_backward(fa_context *ctx, const fa_problem *p) {
  (void)p;
  return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "fa_backward: the CUDA backward pass is not implemented yet");
}

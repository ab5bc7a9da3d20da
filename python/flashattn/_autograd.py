"""torch.autograd.Function over the library's forward and backward: the forward saves o and lse, the
backward calls fa_backward with the forward's dropout (seed, offset), writing packed gradients in place."""
import torch

from . import _ops
from ._ops import split


class FlashAttnFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pack, params, *tensors):
        q, k, v = split(pack, tensors)
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        lse = torch.empty((q.shape[0], q.shape[2], q.shape[1]), dtype=torch.float32, device=q.device)
        _ops.forward(params, q, k, v, out, lse)
        ctx.save_for_backward(*tensors, out, lse)
        ctx.pack, ctx.params = pack, params
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        *tensors, out, lse = ctx.saved_tensors
        if not dout.is_contiguous():
            dout = dout.contiguous()
        grads = [torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in tensors]
        q, k, v = split(ctx.pack, tensors)
        dq, dk, dv = split(ctx.pack, grads)
        _ops.backward(ctx.params, q, k, v, out, lse, dout, dq, dk, dv)
        return (None, None, *grads)

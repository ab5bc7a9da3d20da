"""torch.autograd.Function over the library's forward and backward: the forward saves o and lse, the
backward calls fa_backward with the forward's parameters (dropout's (seed, offset), window, ALiBi, softcap,
varlen offsets), writing packed gradients in place."""
import torch

from . import _ops
from ._ops import split


class FlashAttnFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pack, params, *tensors):
        q, k, v = split(pack, tensors)
        out, lse = _ops.new_outputs(params, q)
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
        grads = [_ops.new_output(ctx.params, t, t.shape) for t in tensors]
        q, k, v = split(ctx.pack, tensors)
        dq, dk, dv = split(ctx.pack, grads)
        _ops.backward(ctx.params, q, k, v, out, lse, dout, dq, dk, dv)
        return (None, None, *grads)

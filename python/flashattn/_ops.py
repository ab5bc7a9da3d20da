"""The library's three operations on any DLPack arrays whose outputs are already allocated."""
import ctypes
from dataclasses import dataclass

from . import _arrays, _context, _dlpack, _lib


@dataclass(frozen=True)
class Params:
    """What fa_attention_desc says, in Python terms. softmax_scale None: 1/sqrt(head dim)."""
    softmax_scale: float = None
    causal: bool = False
    dropout_p: float = 0.0
    seed: int = 0
    offset: int = 0
    deterministic: bool = False

    def desc(self):
        d = _lib.AttentionDesc()
        d.struct_size = ctypes.sizeof(d)
        d.algo = _lib.ALGO_FLASH
        d.softmax_scale = 0.0 if self.softmax_scale is None else float(self.softmax_scale)
        d.causal = int(bool(self.causal))
        d.deterministic = int(bool(self.deterministic))
        d.dropout_p = float(self.dropout_p)
        d.dropout_seed = int(self.seed) & 0xFFFFFFFFFFFFFFFF
        d.dropout_offset = int(self.offset) & 0xFFFFFFFF
        return d


def split(pack, arrays):
    """(q, k, v) views of the inputs: "qkv" [B, S, 3, H, D], "kv" q and [B, S, 2, H, D], or q, k, v."""
    if pack == "qkv":
        (qkv,) = arrays
        return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if pack == "kv":
        q, kv = arrays
        return q, kv[:, :, 0], kv[:, :, 1]
    return tuple(arrays)


_FLOATS = (_lib.F32, _lib.F16, _lib.BF16)
_RANKS = {"lse": 3}  # every other operand is [B, S, H, D]; the dropout mask is [B, H, Sq, Sk]


def placement(arrays):
    """(device type, device id) that every array (a dict name -> array) lives on, refusing arrays that do not
    speak DLPack, that live apart, or on a device flashattn does not serve. Reads no memory."""
    first = next(iter(arrays))
    dev = _dlpack.device_of(arrays[first], first)
    if dev[0] not in _dlpack.CUDA_DEVICES + _dlpack.HOST_DEVICES:
        raise _lib.FlashAttnError(_lib.UNSUPPORTED, f"{first}: arrays on {_dlpack.device_name(dev[0])} are not "
                                  "served; flashattn takes CUDA arrays and host (CPU) arrays")
    for name, x in arrays.items():
        d = _dlpack.device_of(x, name)
        if d != dev:
            raise _lib.FlashAttnError(
                _lib.INVALID_ARGUMENT, f"{name}: on {_dlpack.device_name(d[0])}:{d[1]}, but {first} is on "
                f"{_dlpack.device_name(dev[0])}:{dev[1]}; every array of a call must be on one device")
    return dev


def _import(arrays, outputs):
    """Views of the arrays (a dict name -> array), checked for what this layer relies on; and the context.
    CUDA arrays run on the CUDA backend on the caller's current stream, host arrays on the OpenCL backend."""
    names = iter(arrays)
    first_name = next(names)
    first = arrays[first_name]
    dev = placement({first_name: first})
    if dev[0] in _dlpack.CUDA_DEVICES:
        stream = _arrays.cuda_stream(first)
        ctx = _context.get(_lib.BACKEND_CUDA, dev[1], stream)
        dl_stream = stream or _context.CU_STREAM_LEGACY
    else:
        ctx, dl_stream = _context.get(_lib.BACKEND_OPENCL, -1), None
    with _arrays.device_scope(first):
        views = [_dlpack.view(_arrays.for_dlpack(x), name, dl_stream) for name, x in arrays.items()]
    for v in views:
        if (v.device_type, v.device_id) != dev:  # placement() read only the first array's device
            placement({first_name: first, v.name: arrays[v.name]})
        _check(v, outputs)
    return ctx, views


def _check(v, outputs):
    rank = _RANKS.get(v.name, 4)
    if len(v.shape) != rank:
        raise _lib.FlashAttnError(_lib.INVALID_ARGUMENT,
                                  f"{v.name}: has {len(v.shape)} dimensions, {rank} expected (shape {v.shape})")
    if any(s < 0 for s in v.strides):
        raise _lib.FlashAttnError(_lib.INVALID_ARGUMENT, f"{v.name}: negative strides {v.strides} are not served")
    if v.name in outputs and v.read_only:
        raise _lib.FlashAttnError(_lib.INVALID_ARGUMENT, f"{v.name}: the output array is read-only")
    want = {"lse": (_lib.F32,), "mask": (_lib.U8,)}.get(v.name, _FLOATS)
    if v.dtype not in want:
        raise _lib.FlashAttnError(_lib.INVALID_ARGUMENT,
                                  f"{v.name}: dtype {_dlpack.DTYPE_NAMES[v.dtype]} is not served here; expected "
                                  + " or ".join(_dlpack.DTYPE_NAMES[d] for d in want))


def _run(fn, params, arrays, outputs):
    """Import the arrays, bind them to buffers, call fn(ctx handle, desc, *tensor pointers) under the
    context's lock, and copy host outputs back."""
    ctx, views = _import({n: x for n, x in arrays.items() if x is not None}, outputs)
    desc = params.desc()
    with ctx.lock:
        binding = _context.Binding(ctx, views, outputs)
        try:
            ctx.check(fn(ctx.handle, ctypes.byref(desc), *(binding.get(name) for name in arrays)))
        except BaseException:
            binding.release()
            raise
        binding.finish()


def forward(params, q, k, v, out, lse=None):
    """out (and lse when given) = attention of q, k, v; arrays [B, S, H, D], lse float32 [B, H, Sq]."""
    arrays = {"q": q, "k": k, "v": v, "o": out, "lse": lse}
    _run(_lib.lib.fa_forward, params, arrays, ("o", "lse"))


def backward(params, q, k, v, out, lse, dout, dq, dk, dv):
    """dq, dk, dv from the forward's q, k, v, out, lse and the gradient dout of out."""
    arrays = {"q": q, "k": k, "v": v, "o": out, "lse": lse, "dout": dout, "dq": dq, "dk": dk, "dv": dv}
    _run(_lib.lib.fa_backward, params, arrays, ("dq", "dk", "dv"))


def dropout_mask(params, mask):
    """mask (uint8 [B, H, Sq, Sk]) = 1 where params' dropout keeps a probability, 0 where it drops it."""
    _run(_lib.lib.fa_dropout_mask, params, {"mask": mask}, ("mask",))

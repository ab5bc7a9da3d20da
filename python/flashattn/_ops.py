"""The library's operations on any DLPack arrays whose outputs are already allocated."""
import contextlib
import ctypes
from dataclasses import dataclass, field

from . import _arrays, _context, _dlpack, _lib

# fa_attention_desc's tensor fields: arrays a call hands over through the descriptor (Params.tensors).
DESC_TENSORS = ("seqlens_k", "block_table", "alibi_slopes", "cu_seqlens_q", "cu_seqlens_k")


def _c_int(name, value, bits):
    """value as a signed integer of that many bits, or FlashAttnError naming it (ctypes would wrap it)."""
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise _lib.FlashAttnError(_lib.INVALID_ARGUMENT, f"{name}: {value!r} is not an integer") from None
    if not -(1 << (bits - 1)) <= n < 1 << (bits - 1):
        raise _lib.FlashAttnError(_lib.INVALID_ARGUMENT, f"{name}: {n} does not fit a {bits}-bit integer")
    return n


def window_pair(window_size):
    """(left, right) from flash_attn's window_size, checked for shape; the library checks the values."""
    try:
        left, right = window_size
    except (TypeError, ValueError):
        raise _lib.FlashAttnError(_lib.INVALID_ARGUMENT, f"window_size: {window_size!r} is not a pair "
                                  "(left, right)") from None
    return _c_int("window_size[0]", left, 64), _c_int("window_size[1]", right, 64)


@dataclass(frozen=True)
class Params:
    """What fa_attention_desc says, in Python terms. softmax_scale None: 1/sqrt(head dim). window_size
    (-1, -1): no window. tensors: the arrays of DESC_TENSORS the call uses (absent or None: off)."""
    softmax_scale: float = None
    causal: bool = False
    dropout_p: float = 0.0
    seed: int = 0
    offset: int = 0
    deterministic: bool = False
    window_size: tuple = (-1, -1)
    softcap: float = 0.0
    num_splits: int = 0
    max_seqlen_q: int = 0
    tensors: dict = field(default_factory=dict)
    max_seqlen_k: int = 0

    @property
    def varlen(self):
        return self.tensors.get("cu_seqlens_q") is not None or self.tensors.get("cu_seqlens_k") is not None

    def desc(self, binding=None):
        """The descriptor, the one place it is built; its tensor fields point into binding's fa_tensors."""
        d = _lib.AttentionDesc()
        d.struct_size = ctypes.sizeof(d)
        d.algo = _lib.ALGO_FLASH
        d.softmax_scale = 0.0 if self.softmax_scale is None else float(self.softmax_scale)
        d.causal = int(bool(self.causal))
        d.deterministic = int(bool(self.deterministic))
        d.dropout_p = float(self.dropout_p)
        d.dropout_seed = int(self.seed) & 0xFFFFFFFFFFFFFFFF
        d.dropout_offset = int(self.offset) & 0xFFFFFFFF
        left, right = window_pair(self.window_size)
        d.window = int((left, right) != (-1, -1))
        d.window_left, d.window_right = left, right
        d.softcap = float(self.softcap or 0.0)
        d.num_splits = _c_int("num_splits", self.num_splits or 0, 32)
        d.max_seqlen_q = _c_int("max_seqlen_q", self.max_seqlen_q or 0, 64)
        d.max_seqlen_k = _c_int("max_seqlen_k", self.max_seqlen_k or 0, 64)
        for name in DESC_TENSORS:
            if binding is not None and self.tensors.get(name) is not None:
                setattr(d, name, binding.pointer(name))
        return d


def split(pack, arrays):
    """(q, k, v) views of the inputs: "qkv" [..., 3, H, D], "kv" q and [..., 2, H, D], or q, k, v; the
    leading dimensions are [B, S] or, with varlen, [total]."""
    if pack == "qkv":
        (qkv,) = arrays
        return qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
    if pack == "kv":
        q, kv = arrays
        return q, kv[..., 0, :, :], kv[..., 1, :, :]
    return tuple(arrays)


def lse_shape(params, q):
    """softmax_lse's shape, as flash_attn returns it: [B, H, Sq], or [H, total_q] with varlen."""
    return (q.shape[1], q.shape[0]) if params.varlen else (q.shape[0], q.shape[2], q.shape[1])


def new_output(params, like, shape, dtype=None):
    """An output array for a call with params: uninitialised, but zeros with varlen, where rows outside
    every sequence are not written by the library."""
    return _arrays.empty(like, shape, dtype, 0 if params.varlen else None)


def new_outputs(params, q):
    """(out, softmax_lse) arrays for a forward of q with params."""
    return new_output(params, q, q.shape), new_output(params, q, lse_shape(params, q), "float32")


_FLOATS = (_lib.F32, _lib.F16, _lib.BF16)
_INDICES = ("cu_seqlens_q", "cu_seqlens_k", "seqlens_k", "cache_seqlens", "block_table")
# Dimensions of each operand as the header has it (the rest are trailing 1s); every other one is [B, S, H, D].
_RANKS = {"lse": 3, "alibi_slopes": 2, "block_table": 2, "out_partial": 5, "lse_partial": 4,
          **{n: 1 for n in _INDICES if n != "block_table"}}
_DTYPES = {"lse": (_lib.F32,), "lse_partial": (_lib.F32,), "alibi_slopes": (_lib.F32,), "mask": (_lib.U8,),
           **{n: (_lib.I32,) for n in _INDICES}}


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


def _import(arrays, outputs, lead, axes):
    """Views of the arrays (a dict name -> array), checked for what this layer relies on and laid out as the
    header has them; and the context. CUDA arrays run on the CUDA backend on the caller's current stream,
    host arrays on the OpenCL backend."""
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
    for i, v in enumerate(views):
        if (v.device_type, v.device_id) != dev:  # placement() read only the first array's device
            placement({first_name: first, v.name: arrays[v.name]})
        # ALiBi slopes [H] serve every sequence: the header's [1, H].
        n = 1 if v.name == "alibi_slopes" and len(v.shape) == 1 else lead.get(v.name, 0)
        _check(v, outputs, _RANKS.get(v.name, 4) - n)
        views[i] = v.lead(n).permute(axes[v.name]) if v.name in axes else v.lead(n)
    return ctx, views


def _check(v, outputs, rank):
    if len(v.shape) != rank:
        raise _lib.FlashAttnError(_lib.INVALID_ARGUMENT,
                                  f"{v.name}: has {len(v.shape)} dimensions, {rank} expected (shape {v.shape})")
    if any(s < 0 for s in v.strides):
        raise _lib.FlashAttnError(_lib.INVALID_ARGUMENT, f"{v.name}: negative strides {v.strides} are not served")
    if v.name in outputs and v.read_only:
        raise _lib.FlashAttnError(_lib.INVALID_ARGUMENT, f"{v.name}: the output array is read-only")
    want = _DTYPES.get(v.name, _FLOATS)
    if v.dtype not in want:
        raise _lib.FlashAttnError(_lib.INVALID_ARGUMENT,
                                  f"{v.name}: dtype {_dlpack.DTYPE_NAMES[v.dtype]} is not served here; expected "
                                  + " or ".join(_dlpack.DTYPE_NAMES[d] for d in want))


@contextlib.contextmanager
def _bound(params, arrays, outputs, partial=(), axes=None):
    """Import the arrays (None ones left out) and params' descriptor tensors, bind them to buffers and hold
    the context's lock: yields (context, binding, descriptor); host outputs are copied back at the end.
    With varlen, the call's operands are packed along one token axis: the header's batch of 1 is added."""
    arrays = {n: x for n, x in {**arrays, **params.tensors}.items() if x is not None}
    lead = {n: 1 for n in ("q", "k", "v", "o", "lse", "dout", "dq", "dk", "dv")} if params.varlen else {}
    ctx, views = _import(arrays, outputs, lead, axes or {})
    with ctx.lock:
        binding = _context.Binding(ctx, views, outputs, partial)
        try:
            yield ctx, binding, params.desc(binding)
        except BaseException:
            binding.release()
            raise
        binding.finish()


def forward(params, q, k, v, out, lse=None):
    """out (and lse when given) = attention of q, k, v; arrays [B, S, H, D] (varlen: [total, H, D]), lse float32
    [B, H, Sq] (varlen: [H, total_q])."""
    arrays = {"q": q, "k": k, "v": v, "o": out, "lse": lse}
    with _bound(params, arrays, ("o", "lse"), ("o", "lse") if params.varlen else ()) as (ctx, b, desc):
        ctx.check(_lib.lib.fa_forward(ctx.handle, ctypes.byref(desc), *(b.get(n) for n in arrays)))


def backward(params, q, k, v, out, lse, dout, dq, dk, dv):
    """dq, dk, dv from the forward's q, k, v, out, lse and the gradient dout of out."""
    arrays = {"q": q, "k": k, "v": v, "o": out, "lse": lse, "dout": dout, "dq": dq, "dk": dk, "dv": dv}
    grads = ("dq", "dk", "dv")
    with _bound(params, arrays, grads, grads if params.varlen else ()) as (ctx, b, desc):
        ctx.check(_lib.lib.fa_backward(ctx.handle, ctypes.byref(desc), *(b.get(n) for n in arrays)))


def kvcache(params, q, k_cache, v_cache, out, lse, k=None, v=None, cache_seqlens=None):
    """Attention of q over a KV cache (params.tensors: seqlens_k, the lengths the forward sees, block_table,
    alibi_slopes); with k and v, those are first appended at positions cache_seqlens, in place. The forward's
    arguments are checked before the append, so an error leaves the cache as it was."""
    lib, appending = _lib.lib, k is not None
    arrays = {"q": q, "k_cache": k_cache, "v_cache": v_cache, "o": out, "lse": lse, "k": k, "v": v,
              "cache_seqlens": cache_seqlens}
    outputs = ("o", "lse", "k_cache", "v_cache") if appending else ("o", "lse")
    with _bound(params, arrays, outputs, ("k_cache", "v_cache")) as (ctx, b, desc):
        fwd = [b.get(n) for n in ("q", "k_cache", "v_cache", "o", "lse")]
        if appending:
            nbytes = ctypes.c_size_t()
            ctx.check(lib.fa_forward_workspace_size(ctx.handle, ctypes.byref(desc), *fwd, ctypes.byref(nbytes)))
            ctx.check(lib.fa_kv_append(ctx.handle, b.get("k_cache"), b.get("v_cache"), b.get("block_table"),
                                       b.get("cache_seqlens"), b.get("k"), b.get("v"), 0))
        ctx.check(lib.fa_forward(ctx.handle, ctypes.byref(desc), *fwd))


def combine(out_partial, lse_partial, out, lse):
    """out [B, S, H, D] and lse [B, S, H] from the parts out_partial [n, B, S, H, D] and lse_partial
    [n, B, S, H] (FlashAttention-3's layouts; the header's lse is [B, H, S], so both lse are permuted)."""
    arrays = {"out_partial": out_partial, "lse_partial": lse_partial, "out": out, "lse": lse}
    axes = {"lse_partial": (0, 1, 3, 2), "lse": (0, 2, 1)}
    with _bound(Params(), arrays, ("out", "lse"), axes=axes) as (ctx, b, _):
        o_parts, lse_parts = b.views["out_partial"], b.views["lse_partial"]
        ctx.check(_lib.lib.fa_combine(ctx.handle, o_parts.shape[0], b.get("out_partial"), o_parts.strides[0],
                                      b.get("lse_partial"), lse_parts.strides[0], b.get("out"), b.get("lse")))


def dropout_mask(params, mask):
    """mask (uint8 [B, H, Sq, Sk]) = 1 where params' dropout keeps a probability, 0 where it drops it."""
    with _bound(params, {"mask": mask}, ("mask",)) as (ctx, b, desc):
        ctx.check(_lib.lib.fa_dropout_mask(ctx.handle, ctypes.byref(desc), b.get("mask")))

"""FlashAttention-2's Python functions (flash_attn.flash_attn_interface), over flashattn.

Code written for flash_attn runs by changing the import. q is [B, Sq, H, D], k and v [B, Sk, Hkv, D]; any
DLPack array works: CUDA arrays on the CUDA backend (on torch's current stream for torch tensors), host
arrays on the OpenCL backend. Torch tensors are differentiable through FlashAttnFunction.
"""
from . import _arrays, _lib, _ops, _rng
from ._lib import FlashAttnError


_NAMES = {None: ("q", "k", "v"), "qkv": ("qkv",), "kv": ("q", "kv")}


def _refuse_missing_features(window_size, softcap, alibi_slopes):
    """flash_attn options this library does not have yet: refused before any work, never ignored."""
    if tuple(window_size) != (-1, -1):
        raise FlashAttnError(_lib.UNSUPPORTED, f"window_size: {tuple(window_size)} asks for local attention, "
                             "which flashattn does not have yet; use (-1, -1)")
    if softcap:
        raise FlashAttnError(_lib.UNSUPPORTED, f"softcap: {softcap} is not served yet; use 0.0")
    if alibi_slopes is not None:
        raise FlashAttnError(_lib.UNSUPPORTED, "alibi_slopes: ALiBi is not served yet; use None")


def _params(first, dropout_p, softmax_scale, causal, deterministic, rng_state=None):
    """The call's parameters; dropout takes (seed, offset) from rng_state, else from the caller's generator."""
    seed, offset = (0, 0) if not dropout_p else (rng_state if rng_state is not None else _rng.take(first))
    return _ops.Params(softmax_scale, causal, dropout_p, seed, offset, deterministic)


def _forward(pack, arrays, params):
    """(out, lse): through autograd for torch tensors, else a plain forward."""
    if _arrays.is_torch(arrays[0]):
        from ._autograd import FlashAttnFunction
        return FlashAttnFunction.apply(pack, params, *arrays)
    q, k, v = _ops.split(pack, arrays)
    out = _arrays.empty(q, q.shape)
    lse = _arrays.empty(q, (q.shape[0], q.shape[2], q.shape[1]), "float32")
    _ops.forward(params, q, k, v, out, lse)
    return out, lse


def _func(pack, arrays, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic,
          return_attn_probs):
    _refuse_missing_features(window_size, softcap, alibi_slopes)
    _ops.placement(dict(zip(_NAMES[pack], arrays)))
    params = _params(arrays[0], dropout_p, softmax_scale, causal, deterministic)
    out, lse = _forward(pack, arrays, params)
    if not return_attn_probs:
        return out
    q, k, _ = _ops.split(pack, arrays)
    return out, lse, (dropout_keep_mask(q, k, params) if dropout_p else None)


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                    alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Attention of q [B, Sq, H, D] over k, v [B, Sk, Hkv, D] (H a multiple of Hkv).

    dropout_p: probability of dropping an attention probability (use 0.0 at evaluation).
    softmax_scale: None for 1/sqrt(D). causal: bottom-right aligned mask, as flash_attn 2.1+.
    deterministic: bit-identical gradients from run to run.
    return_attn_probs: also return softmax_lse [B, H, Sq] (float32, natural log) and, where flash_attn gives
    its S_dmask, the dropout keep mask [B, H, Sq, Sk] (uint8, 1 = kept) when dropout_p > 0, else None.
    Returns out [B, Sq, H, D], or (out, softmax_lse, mask) with return_attn_probs.
    """
    return _func(None, (q, k, v), dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                 deterministic, return_attn_probs)


def flash_attn_qkvpacked_func(qkv, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """flash_attn_func on qkv [B, S, 3, H, D], read in place; its gradient is written packed, with no copy."""
    return _func("qkv", (qkv,), dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                 deterministic, return_attn_probs)


def flash_attn_kvpacked_func(q, kv, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """flash_attn_func on q [B, Sq, H, D] and kv [B, Sk, 2, Hkv, D], read in place."""
    return _func("kv", (q, kv), dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                 deterministic, return_attn_probs)


def dropout_keep_mask(q, k, params):
    """The uint8 [B, H, Sq, Sk] mask that params' dropout applies (1 = kept), for tests and debugging."""
    mask = _arrays.empty(q, (q.shape[0], q.shape[2], q.shape[1], k.shape[1]), "uint8")
    _ops.dropout_mask(params, mask)
    return mask


def attention_forward(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, rng_state=None):
    """The forward without autograd, for any DLPack arrays: returns (out, lse, rng_state), where rng_state is
    the (seed, offset) that dropout used (drawn from the caller's generator when None), for
    attention_backward."""
    _ops.placement({"q": q, "k": k, "v": v})
    params = _params(q, dropout_p, softmax_scale, causal, False, rng_state)
    out = _arrays.empty(q, q.shape)
    lse = _arrays.empty(q, (q.shape[0], q.shape[2], q.shape[1]), "float32")
    _ops.forward(params, q, k, v, out, lse)
    return out, lse, (params.seed, params.offset)


def attention_backward(dout, q, k, v, out, lse, dropout_p=0.0, softmax_scale=None, causal=False,
                       deterministic=False, rng_state=(0, 0)):
    """(dq, dk, dv) for the forward that gave out and lse (pass its rng_state when dropout_p > 0)."""
    _ops.placement({"q": q, "k": k, "v": v, "o": out, "lse": lse, "dout": dout})
    params = _params(q, dropout_p, softmax_scale, causal, deterministic, rng_state)
    dq, dk, dv = (_arrays.empty(t, t.shape) for t in (q, k, v))
    _ops.backward(params, q, k, v, out, lse, dout, dq, dk, dv)
    return dq, dk, dv

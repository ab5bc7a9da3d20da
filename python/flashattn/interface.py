"""FlashAttention-2's Python functions (flash_attn.flash_attn_interface), over flashattn.

Code written for flash_attn runs by changing the import. q is [B, Sq, H, D], k and v [B, Sk, Hkv, D] (varlen:
[total, H, D] packed along one token axis); any DLPack array works: CUDA arrays on the CUDA backend (on
torch's current stream for torch tensors), host arrays on the OpenCL backend. Torch tensors are
differentiable through FlashAttnFunction.
"""
from . import _arrays, _lib, _ops, _rng
from ._lib import FlashAttnError


_NAMES = {None: ("q", "k", "v"), "qkv": ("qkv",), "kv": ("q", "kv")}


def _params(first, dropout_p, softmax_scale, causal, deterministic, rng_state=None, window_size=(-1, -1),
            softcap=0.0, num_splits=0, max_seqlen_q=0, alibi_slopes=None, cu_seqlens_q=None, cu_seqlens_k=None,
            seqlens_k=None, block_table=None, max_seqlen_k=0):
    """The call's parameters; dropout takes (seed, offset) from rng_state, else from the caller's generator."""
    seed, offset = (0, 0) if not dropout_p else (rng_state if rng_state is not None else _rng.take(first))
    tensors = {"alibi_slopes": alibi_slopes, "cu_seqlens_q": cu_seqlens_q, "cu_seqlens_k": cu_seqlens_k,
               "seqlens_k": seqlens_k, "block_table": block_table}
    return _ops.Params(softmax_scale, causal, dropout_p, seed, offset, deterministic, _ops.window_pair(window_size),
                       softcap, num_splits, max_seqlen_q, {n: t for n, t in tensors.items() if t is not None},
                       max_seqlen_k)


def _forward(pack, arrays, params):
    """(out, lse): through autograd for torch tensors, else a plain forward."""
    if _arrays.is_torch(arrays[0]):
        from ._autograd import FlashAttnFunction
        return FlashAttnFunction.apply(pack, params, *arrays)
    q, k, v = _ops.split(pack, arrays)
    out, lse = _ops.new_outputs(params, q)
    _ops.forward(params, q, k, v, out, lse)
    return out, lse


def _func(pack, arrays, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic,
          return_attn_probs, **varlen):
    _ops.placement(dict(zip(_NAMES[pack], arrays)))
    params = _params(arrays[0], dropout_p, softmax_scale, causal, deterministic, window_size=window_size,
                     softcap=softcap, alibi_slopes=alibi_slopes, **varlen)
    out, lse = _forward(pack, arrays, params)
    if not return_attn_probs:
        return out
    q, k, _ = _ops.split(pack, arrays)
    return out, lse, (dropout_keep_mask(q, k, params) if dropout_p and not params.varlen else None)


_OPTIONS_DOC = """dropout_p: probability of dropping an attention probability (use 0.0 at evaluation).
    softmax_scale: None for 1/sqrt(D). causal: bottom-right aligned mask, as flash_attn 2.1+.
    window_size: (left, right): query i (at diagonal position p = i + Sk - Sq) sees keys p - left .. p + right;
    -1 is unbounded on that side; (-1, -1) is no window.
    softcap: > 0 replaces each scaled score s by softcap * tanh(s / softcap).
    alibi_slopes: float32 [H] or [B, H]: score (i, j) of head h gets -slope * |p - j| added.
    deterministic: bit-identical gradients from run to run.
    Dropout does not combine with window_size, softcap, alibi_slopes or varlen yet (FlashAttnError)."""


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                    alibi_slopes=None, deterministic=False, return_attn_probs=False):
    return _func(None, (q, k, v), dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                 deterministic, return_attn_probs)


flash_attn_func.__doc__ = f"""Attention of q [B, Sq, H, D] over k, v [B, Sk, Hkv, D] (H a multiple of Hkv).

    {_OPTIONS_DOC}
    return_attn_probs: also return softmax_lse [B, H, Sq] (float32, natural log) and, where flash_attn gives
    its S_dmask, the dropout keep mask [B, H, Sq, Sk] (uint8, 1 = kept) when dropout_p > 0, else None.
    Returns out [B, Sq, H, D], or (out, softmax_lse, mask) with return_attn_probs.
    """


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


def _varlen(cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, block_table=None):
    """The varlen options, checked for what the library cannot say in the caller's terms."""
    for name, x in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        if x is None:
            raise FlashAttnError(_lib.INVALID_ARGUMENT, f"{name}: None; the varlen functions need int32 [B + 1] "
                                 "offsets of the sequences along the token axis")
    if block_table is not None:
        raise FlashAttnError(_lib.UNSUPPORTED, "block_table: paged K/V with varlen batches is not served yet; use "
                             "flash_attn_with_kvcache for a paged cache")
    return {"cu_seqlens_q": cu_seqlens_q, "cu_seqlens_k": cu_seqlens_k,
            "max_seqlen_q": _ops._c_int("max_seqlen_q", max_seqlen_q, 64),
            "max_seqlen_k": _ops._c_int("max_seqlen_k", max_seqlen_k, 64)}


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                           deterministic=False, return_attn_probs=False, block_table=None):
    return _func(None, (q, k, v), dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                 deterministic, return_attn_probs,
                 **_varlen(cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, block_table))


flash_attn_varlen_func.__doc__ = f"""Attention over a batch of sequences of different lengths, packed along one
    token axis: q [total_q, H, D], k, v [total_k, Hkv, D]; sequence b is rows cu_seqlens_q[b] ..
    cu_seqlens_q[b + 1] - 1 of q and rows cu_seqlens_k[b] .. cu_seqlens_k[b + 1] - 1 of k and v.

    cu_seqlens_q, cu_seqlens_k: int32 [B + 1], non-decreasing, on q's device. max_seqlen_q: the longest
    query sequence, max_seqlen_k the longest key sequence (both checked against the offsets; they size the
    launches). Causal, window and ALiBi ([H] or [B, H]) apply
    per sequence. Rows outside every sequence get zeros (in out, softmax_lse and the gradients).
    {_OPTIONS_DOC}
    block_table: not served with varlen yet (FlashAttnError); flash_attn_with_kvcache takes paged caches.
    Returns out [total_q, H, D], or (out, softmax_lse [H, total_q], None) with return_attn_probs.
    """


def flash_attn_varlen_qkvpacked_func(qkv, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None, causal=False,
                                     window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
                                     return_attn_probs=False):
    """flash_attn_varlen_func on qkv [total, 3, H, D], read in place, with one set of offsets for q and k."""
    return _func("qkv", (qkv,), dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                 deterministic, return_attn_probs, **_varlen(cu_seqlens, cu_seqlens, max_seqlen, max_seqlen))


def flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                                    softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                                    alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """flash_attn_varlen_func on q [total_q, H, D] and kv [total_k, 2, Hkv, D], read in place."""
    return _func("kv", (q, kv), dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                 deterministic, return_attn_probs,
                 **_varlen(cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k))


def flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, rotary_cos=None, rotary_sin=None,
                            cache_seqlens=None, cache_batch_idx=None, cache_leftpad=None, block_table=None,
                            softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                            rotary_interleaved=True, alibi_slopes=None, num_splits=0, return_softmax_lse=False):
    """Decoding over a KV cache, forward only: q [B, Sq, H, D] attends to the first cache_seqlens[b] keys of
    sequence b's cache (causal aligned to them, as flash_attn).

    k_cache, v_cache: [B, capacity, Hkv, D], or pages [num_pages, page_size, Hkv, D] with block_table
    (int32 [B, max_pages]; page_size a multiple of 16; pages in any order). cache_seqlens: int32 [B] or an
    int for every sequence; None: the whole cache. k, v: [B, S_new, Hkv, D] new tokens, written into the
    cache in place at positions cache_seqlens[b] .. + S_new - 1 before the attention, which then sees
    cache_seqlens + S_new keys (cache_seqlens itself is not changed, as in flash_attn). num_splits: key
    splits of the split-KV kernels; 0 lets the library choose from the device, 1 never splits.
    window_size, softcap, alibi_slopes: as flash_attn_func. rotary_cos, rotary_sin, cache_batch_idx and
    cache_leftpad are not served (FlashAttnError unless None); rotary_interleaved is then unused.
    Returns out [B, Sq, H, D], or (out, softmax_lse [B, H, Sq]) with return_softmax_lse.
    """
    for name, x in (("rotary_cos", rotary_cos), ("rotary_sin", rotary_sin), ("cache_batch_idx", cache_batch_idx),
                    ("cache_leftpad", cache_leftpad)):
        if x is not None:
            raise FlashAttnError(_lib.UNSUPPORTED, f"{name}: not served by flashattn; pass None")
    if (k is None) != (v is None):
        raise FlashAttnError(_lib.INVALID_ARGUMENT, f"{'v' if k is not None else 'k'}: None, but "
                             f"{'k' if k is not None else 'v'} is given; the new tokens need both")
    if k is not None and cache_seqlens is None:
        raise FlashAttnError(_lib.INVALID_ARGUMENT, "cache_seqlens: None, but k and v are given; it says where "
                             "in the cache they are appended")
    named = {"q": q, "k_cache": k_cache, "v_cache": v_cache, "k": k, "v": v, "block_table": block_table,
             "alibi_slopes": alibi_slopes}
    _ops.placement({n: x for n, x in named.items() if x is not None})
    if cache_seqlens is not None and not hasattr(cache_seqlens, "__dlpack_device__"):
        cache_seqlens = _arrays.empty(q, (q.shape[0],), "int32", _ops._c_int("cache_seqlens", cache_seqlens, 32))
    lens = cache_seqlens if k is None or cache_seqlens is None else cache_seqlens + k.shape[1]
    params = _params(q, 0.0, softmax_scale, causal, False, window_size=window_size, softcap=softcap,
                     num_splits=num_splits, alibi_slopes=alibi_slopes, seqlens_k=lens, block_table=block_table)
    out, lse = _ops.new_outputs(params, q)
    _ops.kvcache(params, q, k_cache, v_cache, out, lse, k, v, cache_seqlens)
    return (out, lse) if return_softmax_lse else out


def flash_attn_combine(out_partial, lse_partial, out=None, out_dtype=None):
    """Merge attention results over disjoint key sets (FlashAttention-3's flash_attn_combine): out_partial
    [num_splits, B, S, H, D] (float32, float16 or bfloat16) and lse_partial float32 [num_splits, B, S, H]
    give out [B, S, H, D] (dtype out_dtype, default out_partial's; written into out when given) and
    softmax_lse float32 [B, S, H]: lse = log sum_i exp(lse_i), out = sum_i exp(lse_i - lse) out_i. Parts with
    lse -inf (no key) count for nothing. A flash_attn_func softmax_lse [B, H, S] is lse_partial's part
    transposed. Returns (out, softmax_lse)."""
    named = {"out_partial": out_partial, "lse_partial": lse_partial}
    _ops.placement(dict(named, **({"out": out} if out is not None else {})))
    shape = tuple(out_partial.shape)
    if len(shape) != 5:
        raise FlashAttnError(_lib.INVALID_ARGUMENT, f"out_partial: has {len(shape)} dimensions, 5 expected "
                             f"[num_splits, B, S, H, D] (shape {shape})")
    if out is None:
        out = _arrays.empty(out_partial, shape[1:], _arrays.dtype_name(out_dtype))
    lse = _arrays.empty(out_partial, shape[1:4], "float32")
    _ops.combine(out_partial, lse_partial, out, lse)
    return out, lse


def dropout_keep_mask(q, k, params):
    """The uint8 [B, H, Sq, Sk] mask that params' dropout applies (1 = kept), for tests and debugging."""
    mask = _arrays.empty(q, (q.shape[0], q.shape[2], q.shape[1], k.shape[1]), "uint8")
    _ops.dropout_mask(params, mask)
    return mask


def attention_forward(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, rng_state=None, **options):
    """The forward without autograd, for any DLPack arrays: returns (out, lse, rng_state), where rng_state is
    the (seed, offset) that dropout used (drawn from the caller's generator when None), for
    attention_backward. options: window_size, softcap, alibi_slopes, and for varlen (q, k, v [total, H, D],
    lse [H, total_q]) cu_seqlens_q, cu_seqlens_k, max_seqlen_q and max_seqlen_k; as flash_attn_varlen_func."""
    _ops.placement({"q": q, "k": k, "v": v})
    params = _params(q, dropout_p, softmax_scale, causal, False, rng_state, **options)
    out, lse = _ops.new_outputs(params, q)
    _ops.forward(params, q, k, v, out, lse)
    return out, lse, (params.seed, params.offset)


def attention_backward(dout, q, k, v, out, lse, dropout_p=0.0, softmax_scale=None, causal=False,
                       deterministic=False, rng_state=(0, 0), **options):
    """(dq, dk, dv) for the forward that gave out and lse (pass its rng_state when dropout_p > 0, and its
    options)."""
    _ops.placement({"q": q, "k": k, "v": v, "o": out, "lse": lse, "dout": dout})
    params = _params(q, dropout_p, softmax_scale, causal, deterministic, rng_state, **options)
    dq, dk, dv = (_ops.new_output(params, t, t.shape) for t in (q, k, v))
    _ops.backward(params, q, k, v, out, lse, dout, dq, dk, dv)
    return dq, dk, dv

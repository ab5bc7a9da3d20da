"""Attention and its gradients in float64 NumPy, written from the definitions: the tests' ground truth."""
import numpy as np


def _expand(k, heads):
    """Key/value heads repeated so query head h reads head h // (H / Hkv)."""
    return np.repeat(k, heads // k.shape[2], axis=2)


def _unexpand(dk, kv_heads):
    b, s, h, d = dk.shape
    return dk.reshape(b, s, kv_heads, h // kv_heads, d).sum(axis=3)


def _scores(q, k, scale, causal, window, alibi, softcap, seqlens_k):
    """The scores the softmax sees [B, H, Sq, Sk] (-inf where masked), and d score / d (scale q.k) for the
    backward: kernels/masks.h's rules written from flash_attn's definitions. Query i sits at diagonal
    position p = i + Sk_b - Sq, Sk_b being sequence b's keys (seqlens_k[b], else Sk)."""
    b, sq, h, _ = q.shape
    sk = k.shape[1]
    s = np.einsum("bqhd,bkhd->bhqk", q, k) * scale
    dcap = 1.0
    if softcap:
        t = np.tanh(s / softcap)
        s, dcap = softcap * t, 1 - t * t
    lens = np.full(b, sk) if seqlens_k is None else np.asarray(seqlens_k, dtype=np.int64).reshape(b)
    i, j = np.arange(sq)[None, :, None], np.arange(sk)[None, None, :]
    p = i + (lens[:, None, None] - sq)  # [B, Sq, 1]
    if alibi is not None:
        slopes = np.broadcast_to(np.asarray(alibi, dtype=np.float64).reshape(-1, h), (b, h))
        s = s - slopes[:, :, None, None] * np.abs(p - j)[:, None]
    masked = j >= lens[:, None, None]
    if causal:
        masked = masked | (j > p)
    left, right = window
    if left >= 0:
        masked = masked | (j < p - left)
    if right >= 0:
        masked = masked | (j > p + right)
    return np.where(masked[:, None], -np.inf, s), dcap


def forward(q, k, v, scale=None, causal=False, keep=None, dropout_p=0.0, window=(-1, -1), alibi=None, softcap=0.0,
            seqlens_k=None):
    """(o [B, Sq, H, D], lse [B, H, Sq], probs [B, H, Sq, Sk]) in float64; keep: the dropout keep mask;
    window (left, right), alibi slopes [H] or [B, H], softcap and per-sequence key counts seqlens_k [B]."""
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    h, d = q.shape[2], q.shape[3]
    scale = 1 / np.sqrt(d) if scale is None else scale
    k, v = _expand(k, h), _expand(v, h)
    s, _ = _scores(q, k, scale, causal, window, alibi, softcap, seqlens_k)
    m = s.max(axis=-1, keepdims=True, initial=-np.inf)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    total = e.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        lse = np.where(total > 0, np.log(total) + m, -np.inf)[..., 0]
        p = np.where(total > 0, e / total, 0.0)
    pd = p if keep is None else p * keep / (1 - dropout_p)
    return np.einsum("bhqk,bkhd->bqhd", pd, v), lse, p


def backward(dout, q, k, v, scale=None, causal=False, keep=None, dropout_p=0.0, window=(-1, -1), alibi=None,
             softcap=0.0):
    """(dq, dk, dv) in float64, dk and dv summed over the query heads that share a key/value head."""
    dout, q, k, v = (np.asarray(t, dtype=np.float64) for t in (dout, q, k, v))
    h, hkv, d = q.shape[2], k.shape[2], q.shape[3]
    scale = 1 / np.sqrt(d) if scale is None else scale
    _, _, p = forward(q, k, v, scale, causal, window=window, alibi=alibi, softcap=softcap)
    ke, ve = _expand(k, h), _expand(v, h)
    _, dcap = _scores(q, ke, scale, causal, window, alibi, softcap, None)
    drop = 1.0 if keep is None else keep / (1 - dropout_p)
    dv = np.einsum("bhqk,bqhd->bkhd", p * drop, dout)
    dp = np.einsum("bqhd,bkhd->bhqk", dout, ve) * drop
    ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True)) * dcap
    dq = np.einsum("bhqk,bkhd->bqhd", ds, ke) * scale
    dk = np.einsum("bhqk,bqhd->bkhd", ds, q) * scale
    return dq, _unexpand(dk, hkv), _unexpand(dv, hkv)


def varlen(fn, cu_q, cu_k, q, k, v, *rest, alibi=None, **options):
    """fn (forward or backward) per sequence of a varlen batch, packed back: q-like arrays [total_q, H, D]
    (and rest, dout), k-like [total_k, Hkv, D]; rows outside every sequence are zero. forward gives
    (o, lse [H, total_q]), backward (dq, dk, dv)."""
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    rest = [np.asarray(t, dtype=np.float64) for t in rest]
    outs = [np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)] if fn is backward else \
        [np.zeros_like(q), np.zeros((q.shape[1], q.shape[0]))]
    for b in range(len(cu_q) - 1):
        rq, rk = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        a = None if alibi is None else np.asarray(alibi).reshape(-1, q.shape[1])[b if len(alibi.shape) == 2 else 0]
        got = fn(*(t[rq][None] for t in rest), q[rq][None], k[rk][None], v[rk][None], alibi=a, **options)
        if fn is backward:
            for o, g, r in zip(outs, got, (rq, rk, rk)):
                o[r] = g[0]
        else:
            outs[0][rq], outs[1][:, rq] = got[0][0], got[1][0]
    return tuple(outs)


def rel_err(x, ref):
    """||x - ref|| / ||ref||, in float64, with non-finite values where ref is finite counted as failures."""
    x, ref = np.asarray(x, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if not np.array_equal(np.isfinite(x), np.isfinite(ref)):
        return np.inf
    fin = np.isfinite(ref)
    return np.linalg.norm(x[fin] - ref[fin]) / max(np.linalg.norm(ref[fin]), 1e-300)

"""Attention and its gradients in float64 NumPy, written from the definitions: the tests' ground truth."""
import numpy as np


def _expand(k, heads):
    """Key/value heads repeated so query head h reads head h // (H / Hkv)."""
    return np.repeat(k, heads // k.shape[2], axis=2)


def _unexpand(dk, kv_heads):
    b, s, h, d = dk.shape
    return dk.reshape(b, s, kv_heads, h // kv_heads, d).sum(axis=3)


def forward(q, k, v, scale=None, causal=False, keep=None, dropout_p=0.0):
    """(o [B, Sq, H, D], lse [B, H, Sq], probs [B, H, Sq, Sk]) in float64; keep: the dropout keep mask."""
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    sq, sk, h, d = q.shape[1], k.shape[1], q.shape[2], q.shape[3]
    scale = 1 / np.sqrt(d) if scale is None else scale
    k, v = _expand(k, h), _expand(v, h)
    s = np.einsum("bqhd,bkhd->bhqk", q, k) * scale
    if causal:
        i, j = np.arange(sq)[:, None], np.arange(sk)[None, :]
        s = np.where(j > i + (sk - sq), -np.inf, s)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    total = e.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        lse = np.where(total > 0, np.log(total) + m, -np.inf)[..., 0]
        p = np.where(total > 0, e / total, 0.0)
    pd = p if keep is None else p * keep / (1 - dropout_p)
    return np.einsum("bhqk,bkhd->bqhd", pd, v), lse, p


def backward(dout, q, k, v, scale=None, causal=False, keep=None, dropout_p=0.0):
    """(dq, dk, dv) in float64, dk and dv summed over the query heads that share a key/value head."""
    dout, q, k, v = (np.asarray(t, dtype=np.float64) for t in (dout, q, k, v))
    h, hkv, d = q.shape[2], k.shape[2], q.shape[3]
    scale = 1 / np.sqrt(d) if scale is None else scale
    _, _, p = forward(q, k, v, scale, causal)
    drop = 1.0 if keep is None else keep / (1 - dropout_p)
    ke, ve = _expand(k, h), _expand(v, h)
    dv = np.einsum("bhqk,bqhd->bkhd", p * drop, dout)
    dp = np.einsum("bqhd,bkhd->bhqk", dout, ve) * drop
    ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True))
    dq = np.einsum("bhqk,bkhd->bqhd", ds, ke) * scale
    dk = np.einsum("bhqk,bqhd->bkhd", ds, q) * scale
    return dq, _unexpand(dk, hkv), _unexpand(dv, hkv)


def rel_err(x, ref):
    """||x - ref|| / ||ref||, in float64, with non-finite values where ref is finite counted as failures."""
    x, ref = np.asarray(x, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if not np.array_equal(np.isfinite(x), np.isfinite(ref)):
        return np.inf
    fin = np.isfinite(ref)
    return np.linalg.norm(x[fin] - ref[fin]) / max(np.linalg.norm(ref[fin]), 1e-300)

"""flashattn on torch tensors through autograd: CPU tensors on the OpenCL backend (PoCL in CI), CUDA tensors on
the CUDA backend when torch has CUDA; against scaled_dot_product_attention in float64 and the C API itself."""
import ctypes

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import flashattn  # noqa: E402
from flashattn import FlashAttnError, _lib  # noqa: E402

NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch has no CUDA device here")
DEVICES = ["cpu", pytest.param("cuda", marks=NEEDS_CUDA)]
# Forward as DESIGN.md; gradients sum over Sk (dq) or Sq (dk, dv) products and get twice the room.
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
DTYPES = {"cpu": [torch.float32], "cuda": [torch.float32, torch.float16, torch.bfloat16]}
SHAPES = [(2, 37, 45, 4, 2, 64), (3, 64, 64, 3, 3, 32), (1, 1, 33, 2, 1, 128)]


def cases():
    """(device, dtype) pairs; the CUDA ones skip where torch has no CUDA device."""
    return [pytest.param(device, dtype, id=f"{device}-{str(dtype)[6:]}", marks=(NEEDS_CUDA if device == "cuda" else ()))
            for device in DTYPES for dtype in DTYPES[device]]


def rel_err(x, ref):
    x, ref = x.double(), ref.double()
    return ((x - ref).norm() / ref.norm()).item()


def sdpa_reference(q, k, v, causal, scale=None, keep=None, dropout_p=0.0):
    """float64 attention through torch's SDPA (math backend) in BHSD, with the bottom-right causal mask and the
    dropout keep mask applied as flashattn does; differentiable."""
    qt, kt, vt = (t.double().transpose(1, 2) for t in (q, k, v))
    rep = qt.shape[1] // kt.shape[1]
    kt, vt = kt.repeat_interleave(rep, dim=1), vt.repeat_interleave(rep, dim=1)
    sq, sk = qt.shape[2], kt.shape[2]
    if keep is None:
        mask = None
        if causal:
            i = torch.arange(sq, device=q.device)[:, None]
            j = torch.arange(sk, device=q.device)[None, :]
            mask = j <= i + (sk - sq)
        return F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, scale=scale).transpose(1, 2)
    # SDPA draws its own dropout; with a given mask, write the product out.
    s = qt @ kt.transpose(-1, -2) * (scale or qt.shape[-1] ** -0.5)
    if causal:
        i = torch.arange(sq, device=q.device)[:, None]
        j = torch.arange(sk, device=q.device)[None, :]
        s = s.masked_fill(j > i + (sk - sq), float("-inf"))
    p = torch.softmax(s, dim=-1) * keep.double() / (1 - dropout_p)
    return (p @ vt).transpose(1, 2)


def make(shape, device, dtype, grad=True):
    b, sq, sk, h, hkv, d = shape
    q = torch.randn(b, sq, h, d, device=device, dtype=dtype)
    k = torch.randn(b, sk, hkv, d, device=device, dtype=dtype)
    v = torch.randn(b, sk, hkv, d, device=device, dtype=dtype)
    return [t.requires_grad_(grad) for t in (q, k, v)]


def grads_of(fn, tensors, dout):
    for t in tensors:
        t.grad = None
    out = fn(*tensors)
    out.backward(dout)
    return out, [t.grad.clone() for t in tensors]


@pytest.mark.parametrize("device, dtype", cases())
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("causal", [False, True])
def test_autograd_matches_sdpa_float64(device, dtype, shape, causal):
    torch.manual_seed(sum(shape) + causal)
    q, k, v = make(shape, device, dtype)
    dout = torch.randn_like(q)
    out, grads = grads_of(lambda a, b, c: flashattn.flash_attn_func(a, b, c, causal=causal), (q, k, v), dout)
    ref, ref_grads = grads_of(lambda a, b, c: sdpa_reference(a, b, c, causal), (q, k, v), dout)
    assert out.dtype == dtype and out.shape == q.shape
    assert rel_err(out, ref) <= TOL[dtype]
    for name, g, r in zip("qkv", grads, ref_grads):
        assert g.dtype == dtype and rel_err(g, r) <= 2 * TOL[dtype], name


@pytest.mark.parametrize("device, dtype", cases())
def test_transposed_inputs_and_scale(device, dtype):
    # The usual [B, H, S, D] projections, handed over as strided [B, S, H, D] views: no copy.
    q, k, v = (torch.randn(2, 4, 50, 64, device=device, dtype=dtype).transpose(1, 2).requires_grad_() for _ in "qkv")
    assert not q.is_contiguous()
    dout = torch.randn_like(q)
    out, grads = grads_of(lambda a, b, c: flashattn.flash_attn_func(a, b, c, softmax_scale=0.2), (q, k, v), dout)
    ref, ref_grads = grads_of(lambda a, b, c: sdpa_reference(a, b, c, False, scale=0.2), (q, k, v), dout)
    assert rel_err(out, ref) <= TOL[dtype]
    assert all(rel_err(g, r) <= 2 * TOL[dtype] for g, r in zip(grads, ref_grads))


@pytest.mark.parametrize("device, dtype", cases())
@pytest.mark.parametrize("causal", [False, True])
def test_packed_gradients_match_unpacked(device, dtype, causal):
    torch.manual_seed(7)
    qkv = torch.randn(2, 40, 3, 4, 64, device=device, dtype=dtype, requires_grad=True)
    dout = torch.randn(2, 40, 4, 64, device=device, dtype=dtype)
    out = flashattn.flash_attn_qkvpacked_func(qkv, causal=causal)
    out.backward(dout)
    q, k, v = (qkv.detach()[:, :, i].clone().requires_grad_() for i in range(3))
    out_ref, ref_grads = grads_of(lambda a, b, c: flashattn.flash_attn_func(a, b, c, causal=causal), (q, k, v), dout)
    assert qkv.grad.shape == qkv.shape and rel_err(out, out_ref) <= TOL[dtype]
    for i in range(3):
        assert rel_err(qkv.grad[:, :, i], ref_grads[i]) <= TOL[dtype]
    qc = q.detach().clone().requires_grad_()
    kv = torch.stack([k.detach(), v.detach()], dim=2).requires_grad_()
    flashattn.flash_attn_kvpacked_func(qc, kv, causal=causal).backward(dout)
    assert rel_err(qc.grad, ref_grads[0]) <= TOL[dtype]
    assert rel_err(kv.grad[:, :, 0], ref_grads[1]) <= TOL[dtype] and rel_err(kv.grad[:, :, 1], ref_grads[2]) <= TOL[dtype]


@pytest.mark.parametrize("device, dtype", cases())
def test_dropout_follows_torch_rng(device, dtype):
    q, k, v = make((2, 48, 48, 2, 2, 32), device, dtype, grad=False)
    torch.manual_seed(11)
    first = flashattn.flash_attn_func(q, k, v, dropout_p=0.3)
    second = flashattn.flash_attn_func(q, k, v, dropout_p=0.3)
    torch.manual_seed(11)
    replay = flashattn.flash_attn_func(q, k, v, dropout_p=0.3)
    assert not torch.equal(first, second)
    assert torch.equal(first, replay)


@pytest.mark.parametrize("device, dtype", cases())
@pytest.mark.parametrize("causal", [False, True])
def test_dropout_gradients_match_reference_given_the_mask(device, dtype, causal):
    torch.manual_seed(3)
    q, k, v = make((2, 37, 45, 4, 2, 64), device, dtype)
    dout = torch.randn_like(q)
    out, lse, keep = flashattn.flash_attn_func(q, k, v, dropout_p=0.2, causal=causal, return_attn_probs=True)
    out.backward(dout)
    grads = [t.grad.clone() for t in (q, k, v)]
    assert keep.shape == (2, 4, 37, 45) and keep.dtype == torch.uint8 and lse.shape == (2, 4, 37)
    ref, ref_grads = grads_of(lambda a, b, c: sdpa_reference(a, b, c, causal, keep=keep, dropout_p=0.2),
                              (q, k, v), dout)
    assert rel_err(out, ref) <= TOL[dtype]
    assert all(rel_err(g, r) <= 2 * TOL[dtype] for g, r in zip(grads, ref_grads))


@pytest.mark.parametrize("device, dtype", cases())
def test_deterministic_backward_is_bit_identical(device, dtype):
    q, k, v = make((2, 200, 200, 4, 4, 64), device, dtype)
    dout = torch.randn_like(q)
    fn = lambda a, b, c: flashattn.flash_attn_func(a, b, c, causal=True, deterministic=True)  # noqa: E731
    _, first = grads_of(fn, (q, k, v), dout)
    _, again = grads_of(fn, (q, k, v), dout)
    assert all(torch.equal(a, b) for a, b in zip(first, again))


@pytest.mark.parametrize("device", DEVICES)
def test_bad_input_raises_before_work(device):
    q, k, v = make((1, 8, 8, 2, 2, 16), device, torch.float32)
    with pytest.raises(FlashAttnError, match="k: dtype float64"):
        flashattn.flash_attn_func(q, k.double(), v)
    with pytest.raises(FlashAttnError, match="q"):
        flashattn.flash_attn_func(torch.randn(1, 8, 2, 32, device=device)[..., ::2], k, v)
    with pytest.raises(FlashAttnError, match="softcap"):
        flashattn.flash_attn_func(q, k, v, softcap=-30.0)


@NEEDS_CUDA
def test_cuda_runs_on_the_current_stream_and_caches_its_context():
    q, k, v = make((2, 300, 300, 4, 4, 64), "cuda", torch.float16, grad=False)
    ref = sdpa_reference(q, k, v, True)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        out = flashattn.flash_attn_func(q, k, v, causal=True)
        again = flashattn.flash_attn_func(q, k, v, causal=True)
    side.synchronize()
    assert rel_err(out, ref) <= TOL[torch.float16] and torch.equal(out, again)
    keys = [key for key in flashattn._context.cached() if key[2] == side.cuda_stream]
    assert len(keys) == 1 and keys[0][:2] == (_lib.BACKEND_CUDA, q.device.index)


@NEEDS_CUDA
def test_cuda_cpu_mix_is_refused():
    q, k, v = make((1, 8, 8, 2, 2, 16), "cuda", torch.float16, grad=False)
    with pytest.raises(FlashAttnError, match="every array of a call must be on one device"):
        flashattn.flash_attn_func(q, k.cpu(), v)


@NEEDS_CUDA
def test_cuda_matches_the_c_api_bit_for_bit():
    """The package adds nothing to the numbers: fa_forward called directly on the same memory agrees exactly."""
    q, k, v = make((2, 257, 257, 8, 8, 64), "cuda", torch.bfloat16, grad=False)
    out = flashattn.flash_attn_func(q, k, v, causal=True)
    torch.cuda.synchronize()
    lib, c = _lib.lib, ctypes.c_void_p()
    opt = _lib.ContextOptions(ctypes.sizeof(_lib.ContextOptions), _lib.BACKEND_CUDA, q.device.index, None)
    _lib.check(lib.fa_context_create(ctypes.byref(opt), ctypes.byref(c)))
    direct = torch.empty_like(q)
    tensors, bufs = [], []
    for t in (q, k, v, direct):
        b = ctypes.c_void_p()
        _lib.check(lib.fa_buffer_wrap(c, t.data_ptr(), t.numel() * t.element_size(), ctypes.byref(b)), c)
        bufs.append(b)
        tensors.append(_lib.Tensor(b.value, 0, _lib.BF16, (ctypes.c_int64 * 4)(*t.shape),
                                   (ctypes.c_int64 * 4)(*t.stride())))
    desc = _lib.AttentionDesc()
    desc.struct_size, desc.causal = ctypes.sizeof(desc), 1
    _lib.check(lib.fa_forward(c, ctypes.byref(desc), *(ctypes.byref(t) for t in tensors), None), c)
    _lib.check(lib.fa_synchronize(c), c)
    for b in bufs:
        lib.fa_buffer_destroy(b)
    lib.fa_context_destroy(c)
    assert torch.equal(out, direct)


# ---- inference options: window, ALiBi, softcap, varlen, the KV cache, combine ----

def definition(q, k, v, causal=False, window=(-1, -1), alibi=None, softcap=0.0, seqlens_k=None, scale=None):
    """float64 attention written from flash_attn's definitions in torch, differentiable; [B, S, H, D] layout.
    Query i sits at p = i + Sk_b - Sq (Sk_b = seqlens_k[b], else Sk); rows with no key give zeros."""
    qt, kt, vt = (t.double().transpose(1, 2) for t in (q, k, v))
    b, h, sq, sk = qt.shape[0], qt.shape[1], qt.shape[2], kt.shape[2]
    kt, vt = kt.repeat_interleave(h // kt.shape[1], dim=1), vt.repeat_interleave(h // vt.shape[1], dim=1)
    s = qt @ kt.transpose(-1, -2) * (scale or qt.shape[-1] ** -0.5)
    if softcap:
        s = softcap * torch.tanh(s / softcap)
    dev = q.device
    lens = torch.full((b,), sk, device=dev) if seqlens_k is None else seqlens_k.to(dev).long()
    i, j = torch.arange(sq, device=dev)[None, :, None], torch.arange(sk, device=dev)[None, None, :]
    p = i + (lens[:, None, None] - sq)
    if alibi is not None:
        s = s - alibi.double().reshape(-1, h).expand(b, h)[:, :, None, None] * (p - j).abs()[:, None]
    masked = j >= lens[:, None, None]
    if causal:
        masked = masked | (j > p)
    if window[0] >= 0:
        masked = masked | (j < p - window[0])
    if window[1] >= 0:
        masked = masked | (j > p + window[1])
    masked = masked[:, None].expand_as(s)
    probs = torch.softmax(s.masked_fill(masked, -1e30), dim=-1) * (~masked.all(-1, keepdim=True))
    return (probs @ vt).transpose(1, 2)


OPTIONS = {"window": dict(window=(9, 4)), "window_causal": dict(causal=True, window=(20, -1)),
           "alibi": dict(causal=True, alibi="h"), "softcap": dict(softcap=3.0),
           "all": dict(causal=True, window=(12, 0), softcap=5.0, alibi="bh")}


def as_kwargs(opts, b, h, device):
    """(flashattn's keyword arguments, definition's) for one OPTIONS entry."""
    opts = dict(opts)
    kind = opts.pop("alibi", None)
    if kind:
        opts["alibi"] = torch.rand((h,) if kind == "h" else (b, h), device=device) * 0.4 + 0.05
    fa = {"causal": opts.get("causal", False), "window_size": opts.get("window", (-1, -1)),
          "softcap": opts.get("softcap", 0.0), "alibi_slopes": opts.get("alibi")}
    return fa, opts


@pytest.mark.parametrize("device, dtype", cases())
@pytest.mark.parametrize("name", OPTIONS)
def test_options_autograd_matches_the_definition(device, dtype, name):
    torch.manual_seed(len(name))
    q, k, v = make((2, 37, 45, 4, 2, 64), device, dtype)
    dout = torch.randn_like(q)
    fa, opts = as_kwargs(OPTIONS[name], 2, 4, device)
    out, grads = grads_of(lambda a, b, c: flashattn.flash_attn_func(a, b, c, **fa), (q, k, v), dout)
    want, want_grads = grads_of(lambda a, b, c: definition(a, b, c, **opts), (q, k, v), dout)
    assert rel_err(out, want) <= TOL[dtype]
    for n, g, r in zip("qkv", grads, want_grads):
        assert rel_err(g, r) <= 2 * TOL[dtype], n


def varlen_definition(q, k, v, cu_q, cu_k, alibi=None, **opts):
    """definition() per sequence of a packed batch, concatenated (rows past the last sequence: zeros)."""
    outs = []
    for b in range(len(cu_q) - 1):
        a = None if alibi is None else alibi.reshape(-1, q.shape[1])[b if alibi.dim() == 2 else 0]
        rq, rk = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        outs.append(definition(q[rq][None], k[rk][None], v[rk][None], alibi=a, **opts)[0])
    outs.append(torch.zeros(q.shape[0] - cu_q[-1], *q.shape[1:], dtype=torch.float64, device=q.device))
    return torch.cat(outs)


@pytest.mark.parametrize("device, dtype", cases())
@pytest.mark.parametrize("name", ["dense", "causal", "all"])
def test_varlen_autograd_matches_the_definition(device, dtype, name):
    torch.manual_seed(5)
    lens_q, lens_k = [5, 0, 17, 70, 3], [9, 4, 17, 64, 0]
    cu_q = torch.tensor([0] + list(torch.tensor(lens_q).cumsum(0)), dtype=torch.int32, device=device)
    cu_k = torch.tensor([0] + list(torch.tensor(lens_k).cumsum(0)), dtype=torch.int32, device=device)
    q = torch.randn(int(cu_q[-1]) + 2, 4, 64, device=device, dtype=dtype, requires_grad=True)
    k, v = (torch.randn(int(cu_k[-1]) + 2, 2, 64, device=device, dtype=dtype, requires_grad=True) for _ in "kv")
    dout = torch.randn_like(q)
    fa, opts = as_kwargs({"dense": {}, "causal": dict(causal=True), "all": OPTIONS["all"]}[name], 5, 4, device)
    out, grads = grads_of(lambda a, b, c: flashattn.flash_attn_varlen_func(a, b, c, cu_q, cu_k, 70, 64, **fa),
                          (q, k, v), dout)
    cq, ck = cu_q.tolist(), cu_k.tolist()
    want, want_grads = grads_of(lambda a, b, c: varlen_definition(a, b, c, cq, ck, **opts), (q, k, v), dout)
    assert out.shape == q.shape and rel_err(out, want) <= TOL[dtype]
    for n, g, r in zip("qkv", grads, want_grads):
        assert rel_err(g, r) <= 2 * TOL[dtype], n
    _, lse, _ = flashattn.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 70, 64, return_attn_probs=True, **fa)
    assert lse.shape == (4, q.shape[0]) and lse.dtype == torch.float32


@pytest.mark.parametrize("device, dtype", cases())
def test_varlen_packed_gradients_match_unpacked(device, dtype):
    torch.manual_seed(9)
    cu = torch.tensor([0, 7, 40, 58], dtype=torch.int32, device=device)
    qkv = torch.randn(58, 3, 2, 32, device=device, dtype=dtype, requires_grad=True)
    dout = torch.randn(58, 2, 32, device=device, dtype=dtype)
    flashattn.flash_attn_varlen_qkvpacked_func(qkv, cu, 33, causal=True).backward(dout)
    q, k, v = (qkv.detach()[:, i].clone().requires_grad_() for i in range(3))
    _, grads = grads_of(lambda a, b, c: flashattn.flash_attn_varlen_func(a, b, c, cu, cu, 33, 33, causal=True),
                        (q, k, v), dout)
    for i in range(3):
        assert rel_err(qkv.grad[:, i], grads[i]) <= TOL[dtype]


@pytest.mark.parametrize("device, dtype", cases())
@pytest.mark.parametrize("paged", [False, True], ids=["contiguous", "paged"])
def test_kvcache_append_matches_the_definition(device, dtype, paged):
    torch.manual_seed(2)
    b, cap, h, hkv, d, new = 3, 96, 8, 2, 64, 2
    k_full, v_full = (torch.randn(b, cap, hkv, d, device=device, dtype=dtype) for _ in "kv")
    q = torch.randn(b, new, h, d, device=device, dtype=dtype)  # the new tokens' queries
    k_new, v_new = (torch.randn(b, new, hkv, d, device=device, dtype=dtype) for _ in "kv")
    lens = torch.tensor([10, cap - new, 47], dtype=torch.int32, device=device)
    table = None
    if paged:  # pages of 16 in a shuffled order, two spare
        n = b * cap // 16
        order = torch.randperm(n + 2, device=device)[:n].to(torch.int32)
        kc, vc = (torch.randn(n + 2, 16, hkv, d, device=device, dtype=dtype) for _ in "kv")
        kc[order.long()], vc[order.long()] = k_full.reshape(n, 16, hkv, d), v_full.reshape(n, 16, hkv, d)
        table = order.reshape(b, cap // 16)
    else:
        kc, vc = k_full.clone(), v_full.clone()
    out, lse = flashattn.flash_attn_with_kvcache(q, kc, vc, k=k_new, v=v_new, cache_seqlens=lens, block_table=table,
                                                 causal=True, return_softmax_lse=True, num_splits=0)
    for i in range(b):
        k_full[i, lens[i]:lens[i] + new], v_full[i, lens[i]:lens[i] + new] = k_new[i], v_new[i]
    assert rel_err(out, definition(q, k_full, v_full, causal=True, seqlens_k=lens + new)) <= TOL[dtype]
    assert lse.shape == (b, h, q.shape[1])
    got = kc if table is None else kc[table.long()].reshape(b, cap, hkv, d)
    assert torch.equal(got, k_full)


@pytest.mark.parametrize("device", DEVICES)
def test_kvcache_error_leaves_the_cache_unchanged(device):
    # The forward's arguments (here its window) are checked before the append writes the cache.
    kc, vc = (torch.randn(2, 32, 2, 16, device=device) for _ in "kv")
    before = kc.clone()
    q, k_new = torch.randn(2, 1, 2, 16, device=device), torch.randn(2, 1, 2, 16, device=device)
    lens = torch.tensor([3, 7], dtype=torch.int32, device=device)
    with pytest.raises(FlashAttnError, match="window_left"):
        flashattn.flash_attn_with_kvcache(q, kc, vc, k=k_new, v=k_new, cache_seqlens=lens, window_size=(-4, 0))
    if device == "cuda":
        torch.cuda.synchronize()
    assert torch.equal(kc, before)


@pytest.mark.parametrize("device, dtype", cases())
def test_combine_matches_the_whole(device, dtype):
    torch.manual_seed(4)
    q, k, v = make((2, 5, 80, 4, 2, 64), device, dtype, grad=False)
    parts = [flashattn.flash_attn_func(q, k[:, a:z], v[:, a:z], return_attn_probs=True)[:2]
             for a, z in ((0, 30), (30, 31), (31, 80))]
    out_partial = torch.stack([o.float() for o, _ in parts])
    lse_partial = torch.stack([lse.transpose(1, 2) for _, lse in parts])
    out, lse = flashattn.flash_attn_combine(out_partial, lse_partial, out_dtype=dtype)
    assert out.dtype == dtype and lse.shape == (2, 5, 4)
    assert rel_err(out, definition(q, k, v)) <= 2 * TOL[dtype]

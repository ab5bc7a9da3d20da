"""flashattn's inference options on NumPy arrays (the OpenCL backend, PoCL in CI) against the float64 reference:
sliding window, ALiBi and softcap (forward and gradients), varlen batches (forward and gradients), the KV
cache (contiguous and paged, with appended tokens, split-KV) and flash_attn_combine; and their bad input."""
import pytest

np = pytest.importorskip("numpy")

import flashattn  # noqa: E402
import reference as ref  # noqa: E402
from flashattn import FlashAttnError  # noqa: E402

TOL = 1e-5  # float32, as DESIGN.md


def normals(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.fixture
def rng(request):
    return np.random.default_rng(abs(hash(request.node.name)) % 2 ** 32)


# (name, causal, window_size, softcap, ALiBi: None, "h" for [H] or "bh" for [B, H])
OPTIONS = [("window", False, (8, 3), 0.0, None), ("window_causal", True, (16, -1), 0.0, None),
           ("right_only", False, (-1, 2), 0.0, None), ("alibi", True, (-1, -1), 0.0, "h"),
           ("alibi_batch", False, (-1, -1), 0.0, "bh"), ("softcap", False, (-1, -1), 2.0, None),
           ("all", True, (10, 0), 5.0, "bh")]
# (B, Sq, Sk, H, Hkv, D): Sq != Sk, GQA; Sq = 1 runs on the split-KV decode kernels.
SHAPES = [(2, 37, 45, 4, 2, 32), (3, 1, 70, 4, 1, 64)]


def slopes(rng, kind, b, h):
    return None if kind is None else (rng.uniform(0.05, 0.5, (h,) if kind == "h" else (b, h)).astype(np.float32))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name, causal, window, softcap, alibi", OPTIONS, ids=[o[0] for o in OPTIONS])
def test_options_forward_and_gradients_match_reference(rng, shape, name, causal, window, softcap, alibi):
    b, sq, sk, h, hkv, d = shape
    q, k, v, dout = normals(rng, b, sq, h, d), normals(rng, b, sk, hkv, d), normals(rng, b, sk, hkv, d), \
        normals(rng, b, sq, h, d)
    a = slopes(rng, alibi, b, h)
    opts = dict(window_size=window, softcap=softcap, alibi_slopes=a)
    out, lse, _ = flashattn.flash_attn_func(q, k, v, causal=causal, return_attn_probs=True, **opts)
    o_ref, lse_ref, _ = ref.forward(q, k, v, causal=causal, window=window, alibi=a, softcap=softcap)
    assert ref.rel_err(out, o_ref) <= TOL and ref.rel_err(lse, lse_ref) <= TOL
    out, lse, _ = flashattn.attention_forward(q, k, v, causal=causal, **opts)
    grads = flashattn.attention_backward(dout, q, k, v, out, lse, causal=causal, **opts)
    for got, want in zip(grads, ref.backward(dout, q, k, v, causal=causal, window=window, alibi=a, softcap=softcap)):
        assert ref.rel_err(got, want) <= 2 * TOL


def test_packed_forms_take_the_options(rng):
    q, k, v = normals(rng, 2, 33, 2, 32), normals(rng, 2, 33, 2, 32), normals(rng, 2, 33, 2, 32)
    opts = dict(causal=True, window_size=(5, 0), softcap=3.0, alibi_slopes=np.array([0.2, 0.4], np.float32))
    out = flashattn.flash_attn_func(q, k, v, **opts)
    np.testing.assert_array_equal(flashattn.flash_attn_qkvpacked_func(np.stack([q, k, v], axis=2), **opts), out)
    np.testing.assert_array_equal(flashattn.flash_attn_kvpacked_func(q, np.stack([k, v], axis=2), **opts), out)


def varlen_batch(rng, lens_q, lens_k, h, hkv, d, slack=3):
    """Packed q, k, v with `slack` rows past the last sequence, and the int32 offsets."""
    cu_q = np.concatenate([[0], np.cumsum(lens_q)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(lens_k)]).astype(np.int32)
    tq, tk = cu_q[-1] + slack, cu_k[-1] + slack
    return normals(rng, tq, h, d), normals(rng, tk, hkv, d), normals(rng, tk, hkv, d), cu_q, cu_k


# Lengths: tile-unaligned, Sq != Sk both ways, a sequence of no queries and one of no keys.
LENS_Q, LENS_K = [5, 0, 17, 40, 3], [9, 4, 17, 33, 0]


@pytest.mark.parametrize("causal, window, softcap, alibi", [(False, (-1, -1), 0.0, None), (True, (-1, -1), 0.0, None),
                                                            (True, (6, 0), 2.0, "bh"), (False, (4, 4), 0.0, "h")],
                         ids=["dense", "causal", "window_softcap_alibi", "band_alibi"])
def test_varlen_forward_and_gradients_match_reference(rng, causal, window, softcap, alibi):
    q, k, v, cu_q, cu_k = varlen_batch(rng, LENS_Q, LENS_K, 4, 2, 32)
    dout = normals(rng, *q.shape)
    a = slopes(rng, alibi, len(LENS_Q), 4)
    opts = dict(causal=causal, window_size=window, softcap=softcap, alibi_slopes=a)
    out, lse, mask = flashattn.flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(LENS_Q), max(LENS_K),
                                                      return_attn_probs=True, **opts)
    o_ref, lse_ref = ref.varlen(ref.forward, cu_q, cu_k, q, k, v, alibi=a, causal=causal, window=window,
                                softcap=softcap)
    assert out.shape == q.shape and lse.shape == (4, q.shape[0]) and mask is None
    assert ref.rel_err(out, o_ref) <= TOL and ref.rel_err(lse, lse_ref) <= TOL
    assert np.all(out[cu_q[-1]:] == 0) and np.all(lse[:, cu_q[-1]:] == 0)  # the slack rows: zeros
    vl = dict(opts, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=max(LENS_Q))
    out, lse, _ = flashattn.attention_forward(q, k, v, **vl)
    grads = flashattn.attention_backward(dout, q, k, v, out, lse, **vl)
    want = ref.varlen(ref.backward, cu_q, cu_k, q, k, v, dout, alibi=a, causal=causal, window=window, softcap=softcap)
    for got, w in zip(grads, want):
        assert got.shape == w.shape and ref.rel_err(got, w) <= 2 * TOL


def test_varlen_packed_forms_match_unpacked(rng):
    q, k, v, cu, _ = varlen_batch(rng, [7, 30, 18], [7, 30, 18], 2, 2, 16, slack=0)
    out = flashattn.flash_attn_varlen_func(q, k, v, cu, cu, 30, 30, causal=True)
    packed = flashattn.flash_attn_varlen_qkvpacked_func(np.stack([q, k, v], axis=1), cu, 30, causal=True)
    kv = flashattn.flash_attn_varlen_kvpacked_func(q, np.stack([k, v], axis=1), cu, cu, 30, 30, causal=True)
    np.testing.assert_array_equal(packed, out)
    np.testing.assert_array_equal(kv, out)


def paged(rng, cache, page):
    """cache [B, cap, Hkv, D] as shuffled pages [B * cap / page + 2, page, Hkv, D] and its block table."""
    b, cap, hkv, d = cache.shape
    n = b * cap // page
    order = rng.permutation(n + 2)[:n].astype(np.int32)  # two spare pages that no sequence uses
    pages = normals(rng, n + 2, page, hkv, d)
    pages[order] = cache.reshape(n, page, hkv, d)
    return pages, order.reshape(b, cap // page)


def unpage(pages, table):
    return pages[table].reshape(table.shape[0], -1, *pages.shape[2:])


@pytest.mark.parametrize("layout", ["contiguous", "paged"])
@pytest.mark.parametrize("sq, new", [(1, 0), (4, 0), (1, 1), (3, 3)], ids=["sq1", "sq4", "append1", "append3"])
def test_kvcache_matches_reference(rng, layout, sq, new):
    b, cap, h, hkv, d = 3, 64, 4, 2, 32
    k_cache, v_cache = normals(rng, b, cap, hkv, d), normals(rng, b, cap, hkv, d)
    lens = np.array([5, cap - new, 30], np.int32)
    q, k_new, v_new = normals(rng, b, sq, h, d), normals(rng, b, new, hkv, d), normals(rng, b, new, hkv, d)
    table = None
    kc, vc = k_cache.copy(), v_cache.copy()
    if layout == "paged":
        kc, table = paged(rng, k_cache, 16)
        vc = normals(rng, *kc.shape)
        vc[table.reshape(-1)] = v_cache.reshape(-1, 16, hkv, d)
    before_k = kc.copy()
    extra = dict(k=k_new, v=v_new) if new else {}
    out, lse = flashattn.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens, block_table=table, causal=True,
                                                 return_softmax_lse=True, **extra)
    for i in range(b):  # the reference's cache after the append
        k_cache[i, lens[i]:lens[i] + new], v_cache[i, lens[i]:lens[i] + new] = k_new[i], v_new[i]
    o_ref, lse_ref, _ = ref.forward(q, k_cache, v_cache, causal=True, seqlens_k=lens + new)
    assert ref.rel_err(out, o_ref) <= TOL and ref.rel_err(lse, lse_ref) <= TOL
    got_k, got_v = (kc, vc) if table is None else (unpage(kc, table), unpage(vc, table))
    np.testing.assert_array_equal(got_k, k_cache)  # the new rows written, every other row as it was
    np.testing.assert_array_equal(got_v, v_cache)
    if table is not None:
        spare = np.setdiff1d(np.arange(kc.shape[0]), table)
        np.testing.assert_array_equal(kc[spare], before_k[spare])


@pytest.mark.parametrize("name, window, softcap, alibi", [("window", (20, 0), 0.0, None), ("softcap", (-1, -1), 3.0, None),
                                                          ("alibi", (-1, -1), 0.0, "bh")], ids=lambda x: str(x))
def test_kvcache_options_and_splits(rng, name, window, softcap, alibi):
    b, cap, h, hkv, d = 2, 200, 8, 2, 64
    k_cache, v_cache, q = normals(rng, b, cap, hkv, d), normals(rng, b, cap, hkv, d), normals(rng, b, 2, h, d)
    a = slopes(rng, alibi, b, h)
    o_ref = ref.forward(q, k_cache, v_cache, causal=True, window=window, softcap=softcap, alibi=a,
                        seqlens_k=[150, 200])[0]
    for splits in (0, 1, 3):
        out = flashattn.flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=np.array([150, 200], np.int32),
                                                causal=True, window_size=window, softcap=softcap, alibi_slopes=a,
                                                num_splits=splits)
        assert ref.rel_err(out, o_ref) <= TOL, splits


def test_kvcache_int_lengths_and_whole_cache(rng):
    k_cache, v_cache, q = normals(rng, 2, 40, 1, 16), normals(rng, 2, 40, 1, 16), normals(rng, 2, 1, 2, 16)
    out = flashattn.flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=25)
    assert ref.rel_err(out, ref.forward(q, k_cache, v_cache, seqlens_k=[25, 25])[0]) <= TOL
    out = flashattn.flash_attn_with_kvcache(q, k_cache, v_cache)
    assert ref.rel_err(out, ref.forward(q, k_cache, v_cache)[0]) <= TOL


def test_combine_merges_key_splits(rng):
    q, k, v = normals(rng, 2, 9, 4, 32), normals(rng, 2, 50, 2, 32), normals(rng, 2, 50, 2, 32)
    parts = [flashattn.flash_attn_func(q, k[:, a:z], v[:, a:z], return_attn_probs=True)[:2]
             for a, z in ((0, 7), (7, 31), (31, 50))]
    out_partial = np.stack([o for o, _ in parts])
    lse_partial = np.stack([lse.transpose(0, 2, 1) for _, lse in parts])  # [n, B, S, H]
    o_ref, lse_ref, _ = ref.forward(q, k, v)
    out, lse = flashattn.flash_attn_combine(out_partial, lse_partial)
    assert out.shape == q.shape and lse.shape == (2, 9, 4)
    assert ref.rel_err(out, o_ref) <= TOL and ref.rel_err(lse, lse_ref.transpose(0, 2, 1)) <= TOL
    given = np.zeros(q.shape, np.float16)
    out16, _ = flashattn.flash_attn_combine(out_partial, lse_partial, out=given)
    assert out16 is given and ref.rel_err(given, o_ref) <= 2e-3
    assert flashattn.flash_attn_combine(out_partial, lse_partial, out_dtype=np.float16)[0].dtype == np.float16


BAD = [
    ("window_below_minus_one", "FA_ERROR_INVALID_ARGUMENT", "window_left"),
    ("window_not_a_pair", "FA_ERROR_INVALID_ARGUMENT", "window_size"),
    ("negative_softcap", "FA_ERROR_INVALID_ARGUMENT", "softcap"),
    ("alibi_heads", "FA_ERROR_INVALID_ARGUMENT", "alibi_slopes"),
    ("alibi_float64", "FA_ERROR_INVALID_ARGUMENT", "alibi_slopes: dtype float64"),
    ("window_with_dropout", "FA_ERROR_UNSUPPORTED", "dropout"),
    ("offsets_decrease", "FA_ERROR_INVALID_ARGUMENT", "cu_seqlens_k"),
    ("offsets_int64", "FA_ERROR_INVALID_ARGUMENT", "cu_seqlens_q: dtype int64"),
    ("offsets_missing", "FA_ERROR_INVALID_ARGUMENT", "cu_seqlens_k: None"),
    ("max_seqlen_q_short", "FA_ERROR_INVALID_ARGUMENT", "max_seqlen_q"),
    ("varlen_block_table", "FA_ERROR_UNSUPPORTED", "block_table"),
    ("rotary", "FA_ERROR_UNSUPPORTED", "rotary_cos"),
    ("append_without_lengths", "FA_ERROR_INVALID_ARGUMENT", "cache_seqlens"),
    ("k_without_v", "FA_ERROR_INVALID_ARGUMENT", "v: None"),
    ("lengths_above_capacity", "FA_ERROR_INVALID_ARGUMENT", "seqlens_k"),
    ("append_past_capacity", "FA_ERROR_INVALID_ARGUMENT", "seqlens_k"),
    ("page_out_of_range", "FA_ERROR_INVALID_ARGUMENT", "block_table"),
    ("page_size_not_16", "FA_ERROR_INVALID_ARGUMENT", "page size"),
    ("combine_rank", "FA_ERROR_INVALID_ARGUMENT", "out_partial: has 4 dimensions"),
]


@pytest.mark.parametrize("case, status, words", BAD, ids=[c[0] for c in BAD])
def test_bad_input_raises_with_the_sentence(rng, case, status, words):
    q, k, v = normals(rng, 2, 9, 2, 16), normals(rng, 2, 9, 2, 16), normals(rng, 2, 9, 2, 16)
    cu = np.array([0, 5, 9], np.int32)
    k_cache, v_cache = normals(rng, 2, 32, 2, 16), normals(rng, 2, 32, 2, 16)
    kv_before = k_cache.copy()
    lens = np.array([3, 32], np.int32)
    call = {
        "window_below_minus_one": lambda: flashattn.flash_attn_func(q, k, v, window_size=(-2, 0)),
        "window_not_a_pair": lambda: flashattn.flash_attn_func(q, k, v, window_size=4),
        "negative_softcap": lambda: flashattn.flash_attn_func(q, k, v, softcap=-1.0),
        "alibi_heads": lambda: flashattn.flash_attn_func(q, k, v, alibi_slopes=np.ones(3, np.float32)),
        "alibi_float64": lambda: flashattn.flash_attn_func(q, k, v, alibi_slopes=np.ones(2)),
        "window_with_dropout": lambda: flashattn.flash_attn_func(q, k, v, dropout_p=0.1, window_size=(2, 2)),
        "offsets_decrease": lambda: flashattn.flash_attn_varlen_func(q[0], k[0], v[0], cu,
                                                                     np.array([0, 6, 4], np.int32), 5, 6),
        "offsets_int64": lambda: flashattn.flash_attn_varlen_func(q[0], k[0], v[0], cu.astype(np.int64), cu, 5, 5),
        "offsets_missing": lambda: flashattn.flash_attn_varlen_func(q[0], k[0], v[0], cu, None, 5, 5),
        "max_seqlen_q_short": lambda: flashattn.flash_attn_varlen_func(q[0], k[0], v[0], cu, cu, 3, 5),
        "varlen_block_table": lambda: flashattn.flash_attn_varlen_func(q[0], k[0], v[0], cu, cu, 5, 5,
                                                                       block_table=np.zeros((2, 1), np.int32)),
        "rotary": lambda: flashattn.flash_attn_with_kvcache(q, k_cache, v_cache, rotary_cos=q),
        "append_without_lengths": lambda: flashattn.flash_attn_with_kvcache(q, k_cache, v_cache, k=k, v=v),
        "k_without_v": lambda: flashattn.flash_attn_with_kvcache(q, k_cache, v_cache, k=k, cache_seqlens=lens),
        "lengths_above_capacity": lambda: flashattn.flash_attn_with_kvcache(q, k_cache, v_cache,
                                                                            cache_seqlens=np.array([3, 33], np.int32)),
        "append_past_capacity": lambda: flashattn.flash_attn_with_kvcache(q, k_cache, v_cache, k=k, v=v,
                                                                          cache_seqlens=lens),
        "page_out_of_range": lambda: flashattn.flash_attn_with_kvcache(  # key 40 of sequence 1 is on page 2
            q, k_cache, v_cache, cache_seqlens=np.array([3, 41], np.int32),
            block_table=np.array([[0, 1], [1, 2]], np.int32)),
        "page_size_not_16": lambda: flashattn.flash_attn_with_kvcache(q, k_cache[:, :24], v_cache[:, :24],
                                                                      block_table=np.array([[0], [1]], np.int32)),
        "combine_rank": lambda: flashattn.flash_attn_combine(q, q[..., 0]),
    }[case]
    with pytest.raises(FlashAttnError) as err:
        call()
    assert err.value.status == status and words in str(err.value), str(err.value)
    np.testing.assert_array_equal(k_cache, kv_before)

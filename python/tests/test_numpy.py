"""flashattn on NumPy arrays (host memory: the OpenCL backend, PoCL in CI) against the float64 reference."""
import pytest

np = pytest.importorskip("numpy")

import flashattn  # noqa: E402
import reference as ref  # noqa: E402
from flashattn import FlashAttnError  # noqa: E402

TOL = {np.float32: 1e-5, np.float16: 2e-3}
# (B, Sq, Sk, H, Hkv, D): tile-unaligned lengths, Sq != Sk both ways, Sq = 1, odd batch and heads, GQA, MQA.
SHAPES = [(1, 1, 17, 1, 1, 16), (3, 37, 45, 3, 1, 32), (2, 70, 33, 4, 2, 64), (1, 129, 129, 2, 2, 40)]


def normals(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def qkv(rng, shape, dtype=np.float32):
    b, sq, sk, h, hkv, d = shape
    return normals(rng, (b, sq, h, d), dtype), normals(rng, (b, sk, hkv, d), dtype), normals(rng, (b, sk, hkv, d),
                                                                                             dtype)


@pytest.fixture
def rng(request):
    return np.random.default_rng(abs(hash(request.node.name)) % 2 ** 32)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=lambda t: t.__name__)
def test_forward_matches_reference(rng, shape, causal, dtype):
    q, k, v = qkv(rng, shape, dtype)
    out, lse, mask = flashattn.flash_attn_func(q, k, v, causal=causal, return_attn_probs=True)
    o_ref, lse_ref, _ = ref.forward(q, k, v, causal=causal)
    assert out.dtype == dtype and out.shape == q.shape and lse.dtype == np.float32 and mask is None
    assert ref.rel_err(out, o_ref) <= TOL[dtype]
    assert ref.rel_err(lse, lse_ref) <= TOL[dtype]


def test_softmax_scale_and_fully_masked_rows(rng):
    # Sq > Sk with causal: the first Sq - Sk query rows see no key (o = 0, lse = -inf).
    q, k, v = qkv(rng, (2, 20, 7, 2, 2, 16))
    out, lse, _ = flashattn.flash_attn_func(q, k, v, softmax_scale=0.3, causal=True, return_attn_probs=True)
    o_ref, lse_ref, _ = ref.forward(q, k, v, scale=0.3, causal=True)
    assert np.all(out[:, :13] == 0) and np.all(lse[:, :, :13] == -np.inf)
    assert ref.rel_err(out, o_ref) <= 1e-5 and ref.rel_err(lse, lse_ref) <= 1e-5


def test_strided_inputs_are_read_in_place(rng):
    # q, k, v as slices of wider arrays: strides that are not packed, and no copy made by the caller.
    wide = normals(rng, (2, 33, 3, 2, 48), np.float32)
    q, k, v = wide[:, :, 0, :, :32], wide[:, :, 1, :, 8:40], wide[:, :, 2, :, 16:]
    assert not q.flags.c_contiguous
    out = flashattn.flash_attn_func(q, k, v)
    assert ref.rel_err(out, ref.forward(q, k, v)[0]) <= 1e-5


@pytest.mark.parametrize("causal", [False, True])
def test_packed_forms_match_unpacked(rng, causal):
    q, k, v = qkv(rng, (2, 41, 41, 4, 4, 32))
    out = flashattn.flash_attn_func(q, k, v, causal=causal)
    packed = flashattn.flash_attn_qkvpacked_func(np.stack([q, k, v], axis=2), causal=causal)
    kv = flashattn.flash_attn_kvpacked_func(q, np.stack([k, v], axis=2), causal=causal)
    np.testing.assert_array_equal(packed, out)
    np.testing.assert_array_equal(kv, out)


@pytest.mark.parametrize("shape", SHAPES[1:3], ids=str)
@pytest.mark.parametrize("causal", [False, True])
def test_backward_matches_reference(rng, shape, causal):
    q, k, v = qkv(rng, shape)
    dout = normals(rng, q.shape, np.float32)
    out, lse, state = flashattn.attention_forward(q, k, v, causal=causal)
    grads = flashattn.attention_backward(dout, q, k, v, out, lse, causal=causal, rng_state=state)
    for got, want in zip(grads, ref.backward(dout, q, k, v, causal=causal)):
        assert got.shape == want.shape and ref.rel_err(got, want) <= 1e-5


def test_dropout_matches_reference_given_its_mask(rng):
    q, k, v = qkv(rng, (2, 37, 45, 2, 1, 32))
    dout = normals(rng, q.shape, np.float32)
    out, lse, state = flashattn.attention_forward(q, k, v, dropout_p=0.25, causal=True)
    params = flashattn._ops.Params(None, True, 0.25, *state)
    keep = flashattn.dropout_keep_mask(q, k, params)
    assert keep.shape == (2, 2, 37, 45) and 0.65 < keep.mean() < 0.85
    assert ref.rel_err(out, ref.forward(q, k, v, causal=True, keep=keep, dropout_p=0.25)[0]) <= 1e-5
    grads = flashattn.attention_backward(dout, q, k, v, out, lse, dropout_p=0.25, causal=True, rng_state=state)
    for got, want in zip(grads, ref.backward(dout, q, k, v, causal=True, keep=keep, dropout_p=0.25)):
        assert ref.rel_err(got, want) <= 1e-5


def test_dropout_advances_and_replays(rng):
    q, k, v = qkv(rng, (1, 32, 32, 2, 2, 16))
    flashattn.manual_seed(1234)
    first = flashattn.flash_attn_func(q, k, v, dropout_p=0.5)
    second = flashattn.flash_attn_func(q, k, v, dropout_p=0.5)
    flashattn.manual_seed(1234)
    replay = flashattn.flash_attn_func(q, k, v, dropout_p=0.5)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, replay)
    _, _, mask = flashattn.flash_attn_func(q, k, v, dropout_p=0.5, return_attn_probs=True)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}


def test_contexts_are_cached(rng):
    q, k, v = qkv(rng, (1, 8, 8, 1, 1, 16))
    flashattn.flash_attn_func(q, k, v)
    before = flashattn._context.cached()
    flashattn.flash_attn_func(q, k, v)
    after = flashattn._context.cached()
    assert list(after) == list(before) and all(after[key] is before[key] for key in before)
    assert all(key[0] == flashattn._lib.BACKEND_OPENCL for key in after)


class _ClaimsDevice:
    """An object that says it lives on another DLPack device."""

    def __init__(self, device):
        self.device = device

    def __dlpack_device__(self):
        return self.device

    def __dlpack__(self, **kwargs):
        raise AssertionError("flashattn must refuse before asking for the memory")


@pytest.mark.parametrize("case, status, words", [
    ("last_dim_strided", "FA_ERROR_INVALID_ARGUMENT", "q"),
    ("mixed_dtypes", "FA_ERROR_INVALID_ARGUMENT", "k"),
    ("float64", "FA_ERROR_INVALID_ARGUMENT", "float64"),
    ("three_dims", "FA_ERROR_INVALID_ARGUMENT", "3 dimensions"),
    ("heads_not_multiple", "FA_ERROR_INVALID_ARGUMENT", "k"),
    ("other_device", "FA_ERROR_INVALID_ARGUMENT", "every array"),
    ("metal_device", "FA_ERROR_UNSUPPORTED", "metal"),
    ("window_size", "FA_ERROR_INVALID_ARGUMENT", "window_right"),
    ("dropout_p", "FA_ERROR_INVALID_ARGUMENT", "dropout_p"),
    ("not_an_array", "FA_ERROR_INVALID_ARGUMENT", "DLPack"),
])
def test_bad_input_raises_with_the_sentence(rng, case, status, words):
    q, k, v = qkv(rng, (1, 9, 9, 2, 2, 16))
    kwargs = {}
    if case == "last_dim_strided":
        q = normals(rng, (1, 9, 2, 32), np.float32)[..., ::2]
    elif case == "mixed_dtypes":
        k = k.astype(np.float16)
    elif case == "float64":
        q, k, v = (t.astype(np.float64) for t in (q, k, v))
    elif case == "three_dims":
        q = q[0]
    elif case == "heads_not_multiple":
        q = normals(rng, (1, 9, 3, 16), np.float32)
    elif case == "other_device":
        k = _ClaimsDevice((2, 0))
    elif case == "metal_device":
        q = k = v = _ClaimsDevice((8, 0))
    elif case == "window_size":
        kwargs["window_size"] = (4, -5)
    elif case == "dropout_p":
        kwargs["dropout_p"] = 1.5
    elif case == "not_an_array":
        q = q.tolist()
    with pytest.raises(FlashAttnError) as err:
        flashattn.flash_attn_func(q, k, v, **kwargs)
    assert err.value.status == status and words in str(err.value), str(err.value)

"""The ctypes mirror of include/flashattn.h's structs (flashattn._lib) against the C compiler's layout of the
header, as tests/struct_layout.c prints it (meson builds it and names it in FLASHATTN_STRUCT_LAYOUT)."""
import ctypes
import os
import subprocess

import pytest

from flashattn import _lib

STRUCTS = {"fa_context_options": _lib.ContextOptions, "fa_tensor": _lib.Tensor,
           "fa_attention_desc": _lib.AttentionDesc, "fa_device_info": _lib.DeviceInfo}


def c_layout():
    tool = os.environ.get("FLASHATTN_STRUCT_LAYOUT")
    if not tool or not os.access(tool, os.X_OK):
        pytest.skip("no FLASHATTN_STRUCT_LAYOUT program (meson test sets it)")
    layout = {}
    for line in subprocess.run([tool], check=True, capture_output=True, text=True).stdout.splitlines():
        struct, field, offset, size = line.split()
        layout.setdefault(struct, {})[field] = (int(offset), int(size))
    return layout


@pytest.mark.parametrize("struct", STRUCTS)
def test_ctypes_structs_match_the_header(struct):
    c, py = c_layout()[struct], STRUCTS[struct]
    assert ctypes.sizeof(py) == c.pop("sizeof")[1]
    fields = {name: (getattr(py, name).offset, getattr(py, name).size) for name, _ in py._fields_}
    assert fields == c


def test_the_descriptor_carries_the_options():
    from flashattn import _ops
    d = _ops.Params(window_size=(3, -1), softcap=2.0, num_splits=4, max_seqlen_q=7).desc()
    assert d.struct_size == ctypes.sizeof(_lib.AttentionDesc)  # the library reads every field
    assert (d.window, d.window_left, d.window_right, d.softcap, d.num_splits, d.max_seqlen_q) == (1, 3, -1, 2.0, 4, 7)
    assert _ops.Params().desc().window == 0 and not _ops.Params().desc().alibi_slopes

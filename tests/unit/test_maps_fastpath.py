"""The fast, streaming parse equals the line-by-line reference (parse(..., fast=False)) on every
capture, in every chunking, and on damaged variants (where it must raise the same error)."""

import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmatrace_bpf.errors import VmabpfError
from vmatrace_bpf.procmaps import parse, parse_stream

SMAPS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "smaps")
FILES = sorted(f for f in os.listdir(SMAPS) if f.endswith((".smaps", ".maps", ".rollup")))


def raw(name):
    with open(os.path.join(SMAPS, name), "rb") as f:
        return f.read()


def result(fn):
    try:
        pm = fn()
    except VmabpfError as e:
        return ("error", str(e))
    return ("ok", pm.kind, [v._tuple() for v in pm.vmas])


def chunked(data, sizes):
    out, i, k = [], 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        out.append(data[i:i + n])
        i += n
        k += 1
    return out


@pytest.mark.parametrize("name", FILES)
def test_fast_equals_reference(name):
    data = raw(name)
    text = data.decode("utf-8", "surrogateescape")
    ref = result(lambda: parse(text, "x", fast=False))
    assert ref[0] == "ok"
    assert result(lambda: parse(text, "x")) == ref
    for size in (1, 7, 4096, 1 << 20):
        assert result(lambda: parse_stream(chunked(data, [size]), "x")) == ref, size


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from([f for f in FILES if f.endswith(".smaps")]), where=st.floats(0, 1),
       edit=st.sampled_from(["drop", "dup", "crlf", "garbage", "space", "bigaddr", "truncate"]),
       sizes=st.lists(st.integers(1, 5000), min_size=1, max_size=4))
def test_damaged_same_as_reference(name, where, edit, sizes):
    lines = raw(name).split(b"\n")
    i = int(where * (len(lines) - 2))
    if edit == "drop":
        del lines[i]
    elif edit == "dup":
        lines.insert(i, lines[i])
    elif edit == "crlf":
        lines[i] += b"\r"
    elif edit == "garbage":
        lines.insert(i, b"Rss: lots kB")
    elif edit == "space":
        lines[i] += b" "
    elif edit == "bigaddr":
        lines[i] = b"ffffffff-00000001 " + lines[i].split(b" ", 1)[-1]
    else:
        lines = lines[:i]
    data = b"\n".join(lines)
    text = data.decode("utf-8", "surrogateescape")
    ref = result(lambda: parse(text, "x", fast=False))
    assert result(lambda: parse(text, "x")) == ref
    if text.strip():
        assert result(lambda: parse_stream(chunked(data, sizes), "x")) == ref


def test_the_fast_path_is_taken_on_a_real_capture(monkeypatch):
    """Otherwise the equality above would only compare the reference with itself."""
    from vmatrace_bpf import smapsparse
    taken = []
    orig = smapsparse._Parser._bulk
    monkeypatch.setattr(smapsparse._Parser, "_bulk", lambda self, text: taken.append(orig(self, text)) or taken[-1])
    data = raw("glibc-k7.2.smaps")
    pm = parse_stream(chunked(data, [4096]), "x")
    assert True in taken and len(pm.vmas) > 10


@pytest.mark.parametrize("data,msg", [(b"  \n\n", "empty (no VMAs)"), (b"", "empty (no VMAs)"),
                                      (b"\n00400000-00401000 r--p 00000000 00:00 0\n", "line 1: empty line")])
def test_blank_files_stream_like_the_reference(tmp_path, data, msg):
    from vmatrace_bpf.procmaps import parse_file
    f = tmp_path / "f"
    f.write_bytes(data)
    with pytest.raises(VmabpfError, match=re.escape(msg)):
        parse_file(str(f))
    with pytest.raises(VmabpfError, match=re.escape(msg)):
        parse(data.decode(), str(f), fast=False)

"""The event layout is defined once (bpf/vmatrace.h); Python reads it.  Here the C
compiler says where every field really is, and the ctypes side must agree."""

import ctypes
import shutil
import subprocess

import pytest

from vmatrace_bpf import events


def c_offsets(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        pytest.skip("no C compiler on this machine (apt-get install gcc)")
    lay = events.layout()
    lines = ['#include <stdio.h>', '#include <stddef.h>', f'#include "{events.header_path()}"', "int main(void) {"]
    for sname, fields in lay.fields.items():
        lines.append(f'printf("{sname} sizeof %zu\\n", sizeof(struct {sname}));')
        for fname, _, _ in fields:
            lines.append(f'printf("{sname} {fname} %zu %zu\\n", offsetof(struct {sname}, {fname}), '
                         f'sizeof(((struct {sname} *)0)->{fname}));')
    for name in lay.constants:
        lines.append(f'printf("const {name} %lld\\n", (long long)({name}));')
    lines.append("return 0; }")
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "layout"
    subprocess.run([cc, "-Wall", "-Werror", "-o", str(exe), str(src)], check=True)
    return subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.splitlines()


def test_every_field_offset_and_size_matches_c(tmp_path):
    lay = events.layout()
    seen = 0
    for line in c_offsets(tmp_path):
        parts = line.split()
        if parts[0] == "const":
            assert lay.constants[parts[1]] == int(parts[2]), parts[1]
            continue
        st = lay.structs[parts[0]]
        if parts[1] == "sizeof":
            assert ctypes.sizeof(st) == int(parts[2]), parts[0]
        else:
            f = getattr(st, parts[1])
            assert (f.offset, f.size) == (int(parts[2]), int(parts[3])), f"{parts[0]}.{parts[1]}"
            seen += 1
    assert seen == sum(len(f) for f in lay.fields.values()) > 40


def test_every_event_type_decodes():
    lay = events.layout()
    kernel_types = [t for t in events.SCHEMA.values() if t.code]
    assert len(kernel_types) == 6
    for t in kernel_types:
        tname, sname = t.name, t.struct
        rec = lay.structs[sname]()
        rec.h.type = lay.constants[t.code]
        rec.h.pid = 42
        rec.h.comm = b"worker"
        ev = events.decode(bytes(rec))
        assert ev["type"] == tname and ev["pid"] == 42 and ev["comm"] == "worker"
        assert events.valid_event(ev), tname  # what the kernel sends, the reader accepts


def test_header_parser_rejects_unsupported_fields():
    with pytest.raises(ValueError, match="cannot parse field"):
        events.Layout("struct vt_x {\n\tunsigned long x;\n};\n")


def test_bpf_program_uses_the_shared_header():
    src = open(events.bpf_dir() + "/vmatrace.bpf.c").read()
    assert '#include "vmatrace.h"' in src
    for sname in events.layout().structs:
        if sname != "vt_hdr":
            assert f"struct {sname}" in src, sname

"""Event records: decoded from the BPF programs' raw bytes, and to/from JSON.

The layout is read from ``bpf/vmatrace.h`` (the one definition shared with the
C side) and turned into ctypes structures here; ``tests/unit/test_layout.py``
compiles the header with a C compiler and checks every offset against these.
An event is a plain dict: ``{"type": "merge", "ts": ns, "pid": tgid, "tid":
..., "comm": ..., ...}`` with the struct's fields, names as str, errors as
negative errno plus their symbolic name.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
from functools import lru_cache
from typing import Any, Dict, List, Optional, Tuple

Event = Dict[str, Any]

_CTYPES = {"u8": ctypes.c_uint8, "u16": ctypes.c_uint16, "u32": ctypes.c_uint32, "u64": ctypes.c_uint64,
           "s32": ctypes.c_int32, "s64": ctypes.c_int64}


def bpf_dir() -> str:
    """Where the BPF C sources are: the repo's bpf/ or the installed vmatrace_bpf/bpf."""
    here = os.path.dirname(os.path.abspath(__file__))
    for cand in (os.path.join(os.path.dirname(here), "bpf"), os.path.join(here, "bpf")):
        if os.path.exists(os.path.join(cand, "vmatrace.h")):
            return cand
    raise FileNotFoundError("vmatrace.h not found next to the vmatrace_bpf package (broken install?)")


def header_path() -> str:
    return os.path.join(bpf_dir(), "vmatrace.h")


class Layout:
    """Structs and VT_ constants parsed from the shared header."""

    def __init__(self, text: str):
        self.constants: Dict[str, int] = {}
        for m in re.finditer(r"^#define\s+(VT_\w+)\s+(0x[0-9a-fA-F]+|\d+)\b", text, re.M):
            self.constants[m.group(1)] = int(m.group(2), 0)
        self.fields: Dict[str, List[Tuple[str, str, int]]] = {}  # struct -> [(name, ctype, array len)]
        self.structs: Dict[str, type] = {}
        for m in re.finditer(r"^struct\s+(vt_\w+)\s*\{(.*?)^\};", text, re.M | re.S):
            name, body = m.group(1), m.group(2)
            fields: List[Tuple[str, Any]] = []
            spec = []
            for line in body.splitlines():
                line = re.sub(r"/\*.*?\*/", "", line).strip()
                if not line:
                    continue
                fm = re.fullmatch(r"(struct\s+vt_\w+|\w+)\s+(\w+)(?:\[(\d+)\])?;", line)
                if not fm:
                    raise ValueError(f"vmatrace.h: cannot parse field {line!r} of struct {name}")
                typ, fname, n = fm.group(1), fm.group(2), fm.group(3)
                if typ.startswith("struct"):
                    ct = self.structs[typ.split()[1]]
                elif typ == "char":
                    ct = ctypes.c_char
                else:
                    ct = _CTYPES[typ]
                if n:
                    ct = ct * int(n)
                fields.append((fname, ct))
                spec.append((fname, typ, int(n) if n else 0))
            self.structs[name] = type(name, (ctypes.Structure,), {"_fields_": fields})
            self.fields[name] = spec

    def c(self, name: str) -> int:
        return self.constants[name]


@lru_cache(maxsize=1)
def layout() -> Layout:
    with open(header_path()) as f:
        return Layout(f.read())


# event type number -> (json type name, struct name)
def _types() -> Dict[int, Tuple[str, str]]:
    c = layout().constants
    return {c["VT_EV_NAME_SET"]: ("name_set", "vt_name_set"), c["VT_EV_MERGE"]: ("merge", "vt_merge"),
            c["VT_EV_SPLIT"]: ("split", "vt_split"), c["VT_EV_FORK"]: ("fork", "vt_fork"),
            c["VT_EV_NAME_ALLOC"]: ("name_alloc", "vt_name_obj"), c["VT_EV_NAME_FREE"]: ("name_free", "vt_name_obj")}


EVENT_TYPES = ("name_set", "merge", "split", "fork", "name_alloc", "name_free", "lost", "exit")

MERGE_OUTCOMES = {0: "none", 1: "prev", 2: "next", 3: "both", 4: "error"}
MERGE_SOURCES = {1: "vma_merge", 2: "new_range", 3: "existing_range"}
# VT_CAUSE_* bit -> word used in JSON and tables
CAUSE_WORDS = (("VT_CAUSE_NO_VMA", "no_vma"), ("VT_CAUSE_NOT_ADJACENT", "not_adjacent"),
               ("VT_CAUSE_FLAGS", "flags"), ("VT_CAUSE_FILE", "file"), ("VT_CAUSE_ANON_VMA", "anon_vma"),
               ("VT_CAUSE_PGOFF", "pgoff"), ("VT_CAUSE_UFFD", "uffd"), ("VT_CAUSE_NAME", "name"),
               ("VT_CAUSE_SPECIAL", "special"), ("VT_CAUSE_UNSEEN", "unseen"),
               ("VT_CAUSE_INSIDE", "inside"))


def cause_words(bits: int) -> List[str]:
    c = layout().constants
    return [w for macro, w in CAUSE_WORDS if bits & c[macro]]


def decode_name(raw: bytes) -> str:
    """A C name buffer as str: up to the NUL; bytes that are not UTF-8 kept as \\xNN."""
    raw = raw.split(b"\0", 1)[0]
    return raw.decode("utf-8", "backslashreplace")


def errno_name(ret: int) -> Optional[str]:
    return errno.errorcode.get(-ret) if ret < 0 else None


def decode(raw: bytes) -> Optional[Event]:
    """One raw record from the ring/perf buffer -> event dict (None if unknown type)."""
    lay = layout()
    hdr_t = lay.structs["vt_hdr"]
    if len(raw) < ctypes.sizeof(hdr_t):
        return None
    hdr = hdr_t.from_buffer_copy(raw[:ctypes.sizeof(hdr_t)])
    kind = _types().get(hdr.type)
    if kind is None:
        return None
    tname, sname = kind
    st = lay.structs[sname]
    if len(raw) < ctypes.sizeof(st):
        return None
    rec = st.from_buffer_copy(raw[:ctypes.sizeof(st)])
    ev: Event = {"type": tname, "ts": hdr.ts, "pid": hdr.pid, "tid": hdr.tid, "comm": decode_name(hdr.comm)}
    c = lay.constants
    for fname, typ, n in lay.fields[sname]:
        if fname in ("h", "pad"):
            continue
        val = getattr(rec, fname)
        if typ == "char":
            val = decode_name(bytes(val))
        ev[fname] = val
    flags = hdr.flags
    if tname in ("name_set", "split", "name_alloc", "name_free"):
        ev["name_truncated"] = bool(flags & c["VT_F_NAME_TRUNCATED"])
    if tname == "name_set":
        ev["name_null"] = bool(flags & c["VT_F_NAME_NULL"])
    if "ret" in ev:
        ev["err"] = errno_name(ev["ret"])
    if tname == "merge":
        ev["source"] = MERGE_SOURCES.get(ev["source"], str(ev["source"]))
        ev["outcome"] = MERGE_OUTCOMES.get(ev["outcome"], str(ev["outcome"]))
        ev["prev_cause"] = cause_words(ev["prev_cause"])
        ev["next_cause"] = cause_words(ev["next_cause"])
    if tname == "fork":
        ev["probe"] = {1: "dup_mmap", 2: "uprobe_dup_mmap_window"}.get(ev["probe"], str(ev["probe"]))
    return ev


def to_json(ev: Event) -> str:
    return json.dumps(ev, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


class RecordError(ValueError):
    """A line that is not a vmabpf event."""


def from_json(line: str) -> Event:
    try:
        ev = json.loads(line)
    except ValueError as e:
        raise RecordError(f"not JSON: {e}") from None
    if not isinstance(ev, dict) or not isinstance(ev.get("type"), str):
        raise RecordError("not a vmabpf record (no \"type\" field)")
    return ev

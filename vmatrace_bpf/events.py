"""The event schema, and decoding of the BPF programs' raw records.

The record layout is read from ``bpf/vmatrace.h`` (the one definition shared
with the C side) and turned into ctypes structures here;
``tests/unit/test_layout.py`` compiles the header with a C compiler and checks
every offset against these.  An event is a plain dict: ``{"type": "merge",
"ts": ns, "pid": tgid, "tid": ..., "comm": ..., ...}`` with the struct's
fields, names as str, errors as negative errno plus their symbolic name.

``SCHEMA`` says, per event type, everything the rest of the program needs:
the C record and its ``VT_EV_`` code, the enums (numbers read from the
``VT_`` constants), the header flags it carries, its labels in text and in a
chrome trace, and the fields (with their JSON types) that the aggregation and
the exports use — the reader validates recordings by exactly these.  Adding
an event type = the C struct in vmatrace.h + one ``EventType`` here (+ tests).
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Dict, List, Optional, Tuple

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


# -- the schema ------------------------------------------------------------------------------------------------

# JSON field kinds, as checked by the reader (``validator``): each is an expression on g = ev.get
_KINDS = {
    "int": 'type(g("{f}")) is int',
    "int?": 'type(g("{f}", 0)) is int',                      # may be absent
    "u64": '(type(_x := g("{f}")) is int and 0 <= _x < 18446744073709551616)',
    "u64?": '(type(_x := g("{f}", 0)) is int and 0 <= _x < 18446744073709551616)',
    "str": 'type(g("{f}")) is str',
    "str?": 'type(g("{f}", "")) is str',
    "str|null": '((_x := g("{f}")) is None or type(_x) is str)',
    # e.g. merge causes: lists of 0 or 1 words (most) checked without a call
    "words": '(type(_x := g("{f}")) is list and (not _x or (type(_x[0]) is str if len(_x) == 1 else _words(_x))))',
}


def _words(v: list) -> bool:
    for w in v:
        if type(w) is not str:
            return False
    return True


@dataclass(frozen=True)
class EventType:
    name: str                   # "type" in JSON
    label: str                  # EVENT column of watch's lines
    chrome: str                 # slice name in a chrome trace
    fields: Tuple[Tuple[str, str], ...]  # (field, kind): what aggregation and exports read, validated on input
    code: Optional[str] = None  # VT_EV_* of the kernel's record; None: made by vmabpf itself (lost, exit)
    struct: Optional[str] = None  # its C struct in vmatrace.h
    flags: Tuple[Tuple[str, str], ...] = ()  # (JSON bool field, VT_F_* header flag)
    enums: Tuple[Tuple[str, Tuple[Tuple[str, str], ...]], ...] = ()  # (field, ((VT_ constant, word), ...))
    named: bool = False         # has a "name": the chrome label shows it


_PC = (("pid", "int"), ("comm", "str?"))  # every event of a process: the aggregation keys on them
_NAME_FLAGS = (("name_truncated", "VT_F_NAME_TRUNCATED"),)

SCHEMA: Dict[str, EventType] = {t.name: t for t in (
    EventType("name_set", "NAME", "name", _PC + (("ret", "int"), ("name", "str"), ("err", "str|null")),
              "VT_EV_NAME_SET", "vt_name_set", _NAME_FLAGS + (("name_null", "VT_F_NAME_NULL"),), named=True),
    EventType("merge", "MERGE", "merge",
              _PC + (("outcome", "str"), ("source", "str"), ("name", "str"), ("prev_cause", "words"),
                     ("next_cause", "words"), ("prev_name", "str?"), ("next_name", "str?")),
              "VT_EV_MERGE", "vt_merge",
              enums=(("source", (("VT_SRC_VMA_MERGE", "vma_merge"), ("VT_SRC_NEW_RANGE", "new_range"),
                                 ("VT_SRC_EXISTING", "existing_range"))),
                     ("outcome", (("VT_MERGE_NONE", "none"), ("VT_MERGE_PREV", "prev"), ("VT_MERGE_NEXT", "next"),
                                  ("VT_MERGE_BOTH", "both"), ("VT_MERGE_ERROR", "error"))))),
    EventType("split", "SPLIT", "split", _PC + (("ret", "int"), ("name", "str"), ("refcount", "int")),
              "VT_EV_SPLIT", "vt_split", _NAME_FLAGS, named=True),
    EventType("fork", "FORK", "fork",
              _PC + (("child_pid", "int"), ("latency_ns", "u64"), ("map_count", "int"), ("vmas_copied", "int"),
                     ("named_copied", "int")),
              "VT_EV_FORK", "vt_fork",
              enums=(("probe", (("VT_PROBE_DUP_MMAP", "dup_mmap"),
                                ("VT_PROBE_DUP_MMAP_WINDOW", "uprobe_dup_mmap_window"))),)),
    EventType("name_alloc", "ALLOC", "name alloc", _PC + (("ptr", "int"), ("name", "str"), ("refcount", "int?")),
              "VT_EV_NAME_ALLOC", "vt_name_obj", _NAME_FLAGS, named=True),
    EventType("name_free", "FREE", "name free", _PC + (("ptr", "int"), ("name", "str"), ("refcount", "int?")),
              "VT_EV_NAME_FREE", "vt_name_obj", _NAME_FLAGS, named=True),
    EventType("exit", "EXIT", "exit", _PC),                        # the watched process exited (session.trace_loop)
    EventType("lost", "LOST", "lost", (("count", "u64"), ("ts", "u64?"))),  # the buffer overflowed: COUNT events
)}


def _compile_validator(t: EventType) -> Callable[[dict], bool]:
    # one generated expression per type: as fast as a hand-written chain of checks (the reader calls it for
    # every line of a recording), and it cannot drift from the schema
    expr = " and ".join(_KINDS[kind].format(f=f) for f, kind in t.fields) or "True"
    ns = {"_words": _words}
    exec(f"def valid(ev):\n    g = ev.get\n    return {expr}\n", ns)  # noqa: S102  (text built from SCHEMA only)
    return ns["valid"]


VALIDATORS: Dict[str, Callable[[dict], bool]] = {name: _compile_validator(t) for name, t in SCHEMA.items()}


def _compile_all_valid() -> Callable[[list], bool]:
    # the same checks as VALIDATORS, for a whole batch of dicts in one call (the reader's fast path: no
    # call per event); the commonest types first
    order = sorted(SCHEMA.values(), key=lambda t: _COMMON.index(t.name) if t.name in _COMMON else len(_COMMON))
    # a field that must be there is read by subscript (faster than ev.get; missing: KeyError = not valid)
    src = ["def all_valid(evs):", "  try:", "    for ev in evs:", "        g = ev.get", '        t = g("type")']
    for i, t in enumerate(order):
        expr = " and ".join(_KINDS[kind].format(f=f).replace(f'g("{f}")', f'ev["{f}"]')
                            if kind in _REQUIRED else _KINDS[kind].format(f=f) for f, kind in t.fields) or "True"
        src += [f"        {'if' if i == 0 else 'elif'} t == {t.name!r}:", f"            if not ({expr}):",
                "                return False"]
    src += ["        else:", "            return False", "  except KeyError:", "    return False", "  return True"]
    ns = {"_words": _words}
    exec("\n".join(src) + "\n", ns)  # noqa: S102  (text built from SCHEMA only)
    return ns["all_valid"]


_REQUIRED = ("int", "u64", "str", "words")  # kinds false when the field is missing
_COMMON = ("merge", "name_set", "split", "name_alloc", "name_free", "fork")
all_valid: Callable[[list], bool] = _compile_all_valid()
all_valid.__doc__ = "Is every one of EVS (dicts) a valid event (valid_event)?  One call for a batch."


def valid_event(ev: dict) -> bool:
    """Is EV (a dict with a known event type) safe to aggregate and export?"""
    t = ev.get("type")
    v = VALIDATORS.get(t) if type(t) is str else None
    return v is not None and v(ev)


@lru_cache(maxsize=1)
def _decoders() -> Dict[int, tuple]:
    """VT_EV_* number -> (EventType, ctypes struct, [(field, is char array)], [(flag field, bit)],
    {field: {number: word}})."""
    lay = layout()
    c = lay.constants
    out = {}
    for t in SCHEMA.values():
        if t.code is None:
            continue
        fields = [(f, typ == "char") for f, typ, _ in lay.fields[t.struct] if f not in ("h", "pad")]
        flags = [(f, c[macro]) for f, macro in t.flags]
        enums = {f: {c[macro]: word for macro, word in words} for f, words in t.enums}
        out[c[t.code]] = (t, lay.structs[t.struct], fields, flags, enums)
    return out


CAUSE_WORDS = (("VT_CAUSE_NO_VMA", "no_vma"), ("VT_CAUSE_NOT_ADJACENT", "not_adjacent"),
               ("VT_CAUSE_FLAGS", "flags"), ("VT_CAUSE_FILE", "file"), ("VT_CAUSE_ANON_VMA", "anon_vma"),
               ("VT_CAUSE_PGOFF", "pgoff"), ("VT_CAUSE_UFFD", "uffd"), ("VT_CAUSE_NAME", "name"),
               ("VT_CAUSE_SPECIAL", "special"), ("VT_CAUSE_UNSEEN", "unseen"),
               ("VT_CAUSE_INSIDE", "inside"))  # VT_CAUSE_* bit -> the word in JSON and tables


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
    """One raw record from the ring/perf buffer -> event dict (None if unknown type or short)."""
    hdr_t = layout().structs["vt_hdr"]
    if len(raw) < ctypes.sizeof(hdr_t):
        return None
    hdr = hdr_t.from_buffer_copy(raw[:ctypes.sizeof(hdr_t)])
    known = _decoders().get(hdr.type)
    if known is None:
        return None
    t, st, fields, flags, enums = known
    if len(raw) < ctypes.sizeof(st):
        return None
    rec = st.from_buffer_copy(raw[:ctypes.sizeof(st)])
    ev: Event = {"type": t.name, "ts": hdr.ts, "pid": hdr.pid, "tid": hdr.tid, "comm": decode_name(hdr.comm)}
    for fname, is_text in fields:
        val = getattr(rec, fname)
        ev[fname] = decode_name(bytes(val)) if is_text else val
    for fname, bit in flags:
        ev[fname] = bool(hdr.flags & bit)
    if "ret" in ev:
        ev["err"] = errno_name(ev["ret"])
    for fname, words in enums.items():
        ev[fname] = words.get(ev[fname], str(ev[fname]))
    if t.name == "merge":
        ev["prev_cause"] = cause_words(ev["prev_cause"])
        ev["next_cause"] = cause_words(ev["next_cause"])
    return ev

"""trace_pipe lines -> vmabpf events: what the BPF programs compute in the kernel, done on the host.

``parse_line`` reads one line of an instance's trace_pipe (with the
``record-tgid`` option) into (event, tid, tgid, comm, ts_ns, fields), each
field by the type its definition fetched.  ``Assembler`` keeps the per-thread
state the BPF maps keep (a merge, split, fork or prctl in flight) and emits
the same event dicts as ``events.decode``: the merge causes by the rules of
``neighbour_cause()`` in bpf/vmatrace.bpf.c, the constants from vmatrace.h.

Two things differ, and the banner says so: times come from trace_pipe with
microsecond resolution (fork latency is a multiple of 1 us), and a
neighbour's members are read when the merge is entered (BPF reads them on
return; the side that did not merge is not changed in between).

Longer than 350 lines on purpose: it is the host-side copy of the BPF program's logic, kept in one
file as the C is, so the two are read side by side.
"""

from __future__ import annotations

import re
from typing import Callable, Dict, List, Optional, Tuple

from . import events
from .tracefs_defs import EventDef

_C = events.layout().constants
_NAME_LEN = _C["VT_NAME_LEN"]

# "  comm-TID  (  TGID) [CPU] FLAGS  SECONDS.USEC: EVENT: REST"; the flags column is absent on old kernels
_HEAD = re.compile(rb"^\s*(?P<comm>.*?)-(?P<tid>\d+)\s+\(\s*(?P<tgid>\d+|-+)\)\s+\[(?P<cpu>\d+)\]\s+(?:\S+\s+)?"
                   rb"(?P<s>\d+)\.(?P<us>\d{6}):\s+(?P<event>\w+):\s(?P<rest>.*)$", re.S)
_LOC = rb"\([^)]*\)"  # "(func+0x4/0x90)" or "(caller+0x6e/0x2d0 <- func)"
_VALUE = {"x64": rb"0x[0-9a-f]+", "u32": rb"\d+", "s32": rb"-?\d+", "s64": rb"-?\d+",
          "array": rb"\{[0-9a-fx,]*\}"}
_FORK = re.compile(rb"pid=(?P<pid>\d+) child_comm=.* child_pid=(?P<child>\d+)$", re.S)


def _field_re(name: str, typ: str) -> bytes:
    n = re.escape(name.encode())
    if typ == "ustring":
        return n + rb'=(?:"(?P<' + n + rb'>.*)"|(?P<' + n + rb'__fault>\(fault\)))'
    pat = _VALUE["array" if "[" in typ else typ]
    return n + rb"=(?P<" + n + rb">" + pat + rb"|\(fault\))"


class LineParser:
    """Parses the lines of the events in DEFS (and sched_process_fork)."""

    def __init__(self, defs: List[EventDef]):
        self.defs: Dict[bytes, EventDef] = {}
        self.res: Dict[bytes, re.Pattern] = {}
        for d in defs:
            if d.kind == "tracepoint":
                continue
            key = d.event.encode()
            self.defs[key] = d
            body = rb" ".join(_field_re(n, t) for n, _, t in d.fields)
            self.res[key] = re.compile(rb"^" + _LOC + (rb"\s" + body if body else b"") + rb"\s*$", re.S)

    def parse(self, line: bytes) -> Optional[Tuple[str, int, Optional[int], str, int, Dict[str, object]]]:
        m = _HEAD.match(line)
        if not m:
            return None
        ev = m.group("event")
        tgid = int(m.group("tgid")) if m.group("tgid")[:1] != b"-" else None
        ts = int(m.group("s")) * 1_000_000_000 + int(m.group("us")) * 1000
        comm = events.decode_name(m.group("comm")[:16])
        head = (int(m.group("tid")), tgid, comm, ts)
        if ev == b"sched_process_fork":
            f = _FORK.search(m.group("rest"))
            if not f:
                return None
            return ("tp_sched_fork",) + head + ({"child_pid": int(f.group("child"))},)
        d = self.defs.get(ev)
        if d is None:
            return None
        fm = self.res[ev].match(m.group("rest"))
        if not fm:
            return None
        fields: Dict[str, object] = {}
        for name, _, typ in d.fields:
            raw = fm.group(name)
            if raw is None or raw == b"(fault)":
                fields[name] = None
            elif typ == "ustring":
                fields[name] = raw
            elif "[" in typ:
                fields[name] = b"".join(int(w, 16).to_bytes(8, "little") for w in raw[1:-1].split(b",") if w)
            else:
                fields[name] = int(raw, 0)
        return (d.fn,) + head + (fields,)


def _name(raw) -> str:
    return events.decode_name(raw[:_NAME_LEN - 1]) if raw else ""


class Assembler:
    """Per-thread state -> events, as the BPF programs build them."""

    def __init__(self, on_event: Callable[[dict], None], watched: Dict[int, int], tid: Optional[int] = None,
                 children: bool = False, self_tgid: Optional[int] = None, page_shift: int = 12,
                 softdirty: int = 0, uffd: bool = True, tgid_of: Optional[Callable[[int], Optional[int]]] = None,
                 filter_pids: bool = True):
        self.on_event = on_event
        self.watched = watched  # TGID -> since when (CLOCK_MONOTONIC ns)
        self.filter_pids = filter_pids  # False: every process but SELF_TGID
        self.tid = tid
        self.children = children
        self.self_tgid = self_tgid
        self.page_shift = page_shift
        self.ignore_flags = softdirty
        self.uffd = uffd
        self.tgid_of = tgid_of or (lambda tid: None)
        self.prctl: Dict[int, dict] = {}
        self.merge: Dict[int, dict] = {}
        self.split: Dict[int, dict] = {}
        self.fork: Dict[int, dict] = {}
        self.undecodable = 0

    def is_watched(self, tgid: int, tid: int, ts: int) -> bool:
        """As is_watched() in the BPF program, at time TS: lines are read after the fact, so a process
        watched from some time on is watched for the events from then on only."""
        if self.tid is not None and tid != self.tid:
            return False
        if self.filter_pids:
            since = self.watched.get(tgid)
            return since is not None and ts >= since
        return tgid != self.self_tgid

    def _hdr(self, typ: str, tid: int, tgid: int, comm: str, ts: int) -> dict:
        return {"type": typ, "ts": ts, "pid": tgid, "tid": tid, "comm": comm}

    def feed(self, rec) -> None:
        fn, tid, tgid, comm, ts, f = rec
        if tgid is None:
            tgid = self.tgid_of(tid)
            if tgid is None:
                self.undecodable += 1
                return
        handler = getattr(self, "_" + fn, None)
        if handler is not None:
            handler(tid, tgid, comm, ts, f)

    # -- prctl -----------------------------------------------------------------------------------------------
    def _kp_prctl_enter(self, tid, tgid, comm, ts, f):
        if self.is_watched(tgid, tid, ts):
            self.prctl[tid] = f

    def _kr_prctl_exit(self, tid, tgid, comm, ts, f):
        a = self.prctl.pop(tid, None)
        if a is None:
            return
        ev = self._hdr("name_set", tid, tgid, comm, ts)
        raw = a["name"] or b""
        ev.update(addr=a["addr"] or 0, len=a["len"] or 0, ret=f["ret"], name="" if not a["nameptr"] else _name(raw),
                  name_truncated=bool(a["nameptr"]) and len(raw) >= _NAME_LEN,
                  name_null=not a["nameptr"], err=events.errno_name(f["ret"]))
        self.on_event(ev)

    # -- merges ------------------------------------------------------------------------------------------------
    @staticmethod
    def _vma(f: dict, prefix: str) -> Optional[dict]:
        ptr = f.get(prefix)
        if not ptr:
            return None
        g = lambda k: f.get(f"{prefix}_{k}") or 0  # noqa: E731
        nb = {k: g(k) for k in ("start", "end", "flags", "file", "av", "pgoff", "anon", "uffd")}
        nb["ptr"] = ptr
        nb["name"] = f.get(f"{prefix}_name")
        return nb

    def _merge_begin(self, tid, tgid, ts, f, source, next_seen):
        if not self.is_watched(tgid, tid, ts):
            return
        m = {"source": source, "req": f, "prev": self._vma(f, "prev"), "next": self._vma(f, "next"),
             "next_seen": next_seen, "middle_end": f.get("middle_end") or 0}
        for side in ("prev", "next"):
            nb = m[side]
            m[f"{side}_range"] = (nb["start"], nb["end"]) if nb else (0, 0)
        self.merge[tid] = m

    def _kp_vma_merge(self, tid, tgid, comm, ts, f):
        self._merge_begin(tid, tgid, ts, f, "vma_merge", False)

    def _kp_vmg_new(self, tid, tgid, comm, ts, f):
        self._merge_begin(tid, tgid, ts, f, "new_range", True)

    def _kp_vmg_existing(self, tid, tgid, comm, ts, f):
        self._merge_begin(tid, tgid, ts, f, "existing_range", False)

    def _kp_can_merge_before(self, tid, tgid, comm, ts, f):
        m = self.merge.get(tid)
        if m is not None and not m["next_seen"]:
            m["next"] = self._vma(f, "next")
            m["next_seen"] = True
            m["next_range"] = (m["next"]["start"], m["next"]["end"]) if m["next"] else (0, 0)

    def _kr_vma_merge(self, tid, tgid, comm, ts, f):
        m = self.merge.pop(tid, None)
        if m is not None:
            self._merge_done(tid, tgid, comm, ts, m, f["res"] or 0, f, False)

    def _kr_vmg(self, tid, tgid, comm, ts, f):
        m = self.merge.pop(tid, None)
        if m is None:
            return
        if m["source"] == "existing_range" and m["req"]["end"] == m["middle_end"]:
            m["next"] = self._vma(f, "next")
            m["next_seen"] = True
            m["next_range"] = (m["next"]["start"], m["next"]["end"]) if m["next"] else (0, 0)
        state = f["state"]
        res = f["res"] if state == 3 else 0  # VMA_MERGE_SUCCESS (mm/vma.h); 1 = VMA_MERGE_ERROR_NOMEM
        self._merge_done(tid, tgid, comm, ts, m, res or 0, f, state == 1)

    _kr_vmg_new = _kr_vmg
    _kr_vmg_existing = _kr_vmg

    def _names_equal(self, a_ptr, b_ptr, a_name, b_name) -> bool:
        if a_ptr == b_ptr:
            return True
        if not a_ptr or not b_ptr:
            return False
        return _name(a_name) == _name(b_name)

    def _cause(self, nb, rng, is_prev, req) -> int:
        """neighbour_cause() of bpf/vmatrace.bpf.c."""
        c = _C
        if nb is None:
            return c["VT_CAUSE_NO_VMA"]
        nb_start, nb_end = rng
        start, end = req["start"] or 0, req["end"] or 0
        if is_prev and nb_start < start < nb_end:
            return c["VT_CAUSE_INSIDE"]
        if not is_prev and nb_start < end < nb_end:
            return c["VT_CAUSE_INSIDE"]
        cause = 0
        if (nb_end != start) if is_prev else (nb_start != end):
            cause |= c["VT_CAUSE_NOT_ADJACENT"]
        rflags = req["flags"] or 0
        if (nb["flags"] ^ rflags) & ~self.ignore_flags:
            cause |= c["VT_CAUSE_FLAGS"]
        if (nb["flags"] | rflags) & c["VT_VM_SPECIAL"]:
            cause |= c["VT_CAUSE_SPECIAL"]
        if nb["file"] != (req["file"] or 0):
            cause |= c["VT_CAUSE_FILE"]
        if self.uffd and nb["uffd"] != (req.get("uffd") or 0):
            cause |= c["VT_CAUSE_UFFD"]
        if nb["av"] and req["av"] and nb["av"] != req["av"]:
            cause |= c["VT_CAUSE_ANON_VMA"]
        pgoff = req["pgoff"] or 0
        if is_prev:
            if nb["pgoff"] + ((nb_end - nb_start) >> self.page_shift) != pgoff:
                cause |= c["VT_CAUSE_PGOFF"]
        elif nb["pgoff"] != pgoff + ((end - start) >> self.page_shift):
            cause |= c["VT_CAUSE_PGOFF"]
        nb_anon = 0 if nb["file"] else nb["anon"]
        if not self._names_equal(nb_anon, req["anon"] or 0, nb["name"] if nb_anon else None, req["name"]):
            cause |= c["VT_CAUSE_NAME"]
        return cause

    def _merge_done(self, tid, tgid, comm, ts, m, res, f, err):
        req = m["req"]
        ev = self._hdr("merge", tid, tgid, comm, ts)
        start, end = req["start"] or 0, req["end"] or 0
        ev.update(start=start, end=end, vm_flags=req["flags"] or 0, prev_start=m["prev_range"][0],
                  prev_end=m["prev_range"][1], next_start=m["next_range"][0], next_end=m["next_range"][1],
                  res_start=0, res_end=0)
        with_prev = with_next = False
        if err:
            outcome = "error"
        elif not res:
            outcome = "none"
        else:
            ev["res_start"], ev["res_end"] = f["res_start"] or 0, f["res_end"] or 0
            with_prev, with_next = ev["res_start"] < start, ev["res_end"] > end
            outcome = "both" if with_prev and with_next else "prev" if with_prev else "next"
            with_next = not with_prev or with_next
        ev["source"], ev["outcome"] = m["source"], outcome
        ev["name"] = _name(req["name"]) if req["anon"] else ""
        prev, nxt = m["prev"], m["next"]
        if with_prev:
            prev_cause, ev["prev_name"] = 0, ""
        else:
            ev["prev_name"] = _name(prev["name"]) if prev and prev["anon"] and not prev["file"] else ""
            prev_cause = self._cause(prev, m["prev_range"], True, req)
        ev["next_name"] = ""
        if with_next:
            next_cause = 0
        elif m["middle_end"] and end < m["middle_end"]:
            next_cause = _C["VT_CAUSE_INSIDE"]
        elif nxt:
            ev["next_name"] = _name(nxt["name"]) if nxt["anon"] and not nxt["file"] else ""
            next_cause = self._cause(nxt, m["next_range"], False, req)
        else:
            next_cause = _C["VT_CAUSE_NO_VMA"] if m["next_seen"] else _C["VT_CAUSE_UNSEEN"]
        ev["source"] = m["source"]
        ev["prev_cause"], ev["next_cause"] = events.cause_words(prev_cause), events.cause_words(next_cause)
        self.on_event(ev)

    # -- splits ------------------------------------------------------------------------------------------------
    def _kp_split(self, tid, tgid, comm, ts, f):
        if self.is_watched(tgid, tid, ts):
            self.split[tid] = dict(f, dup_ref=None)

    def _kr_split(self, tid, tgid, comm, ts, f):
        s = self.split.pop(tid, None)
        if s is None:
            return
        ret = f["ret"]
        named = bool(s["anon"]) and not s["file"]
        ev = self._hdr("split", tid, tgid, comm, ts)
        ev.update(vma_start=s["start"] or 0, vma_end=s["end"] or 0, addr=s["addr"] or 0, ret=ret,
                  new_below=s["new_below"] or 0, name=_name(s["name"]) if named else "", name_truncated=False,
                  err=events.errno_name(ret))
        if not named:
            ev["refcount"] = 0
        elif ret == 0 and s["dup_ref"] is not None:
            ev["refcount"] = s["dup_ref"]  # the copy's reference was the split's one change to it
        elif ret != 0 and s.get("ref") is not None:
            ev["refcount"] = s["ref"]  # failed: the count it had
        self.on_event(ev)

    def _kr_vm_area_dup(self, tid, tgid, comm, ts, f):
        s = self.split.get(tid)
        if s is not None:
            s["dup_ref"] = f["ref"] if f["anon"] and not f["file"] else 0
            return
        fk = self.fork.get(tid)
        if fk is not None and not fk["done"] and f["vma"]:
            fk["vmas"] += 1
            if f["anon"] and not f["file"]:
                fk["named"] += 1

    # -- fork --------------------------------------------------------------------------------------------------
    def _kp_dup_mmap(self, tid, tgid, comm, ts, f):
        if self.is_watched(tgid, tid, ts):
            self.fork[tid] = {"ts": ts, "map_count": f["map_count"], "vmas": 0, "named": 0, "done": False}

    def _kr_dup_mmap(self, tid, tgid, comm, ts, f):
        fk = self.fork.get(tid)
        if fk is not None and not fk["done"]:
            fk["latency"] = ts - fk["ts"]
            fk["done"] = True

    # dup_mmap inlined (6.12): uprobe_start_dup_mmap() .. uprobe_end_dup_mmap(), map_count from
    # uprobe_dup_mmap(oldmm, mm) in between
    def _kp_dup_mmap_start(self, tid, tgid, comm, ts, f):
        if self.is_watched(tgid, tid, ts):
            self.fork[tid] = {"ts": ts, "map_count": None, "vmas": 0, "named": 0, "done": False,
                              "probe": "uprobe_dup_mmap_window"}

    def _kp_uprobe_dup_mmap(self, tid, tgid, comm, ts, f):
        fk = self.fork.get(tid)
        if fk is not None and not fk["done"]:
            fk["map_count"] = f["map_count"]

    _kp_dup_mmap_end = _kr_dup_mmap

    def _tp_sched_fork(self, tid, tgid, comm, ts, f):
        fk = self.fork.pop(tid, None)
        if fk is None or not fk["done"] or fk["map_count"] is None:
            return
        ev = self._hdr("fork", tid, tgid, comm, ts)
        ev.update(latency_ns=fk["latency"], child_pid=f["child_pid"], map_count=fk["map_count"],
                  vmas_copied=fk["vmas"], named_copied=fk["named"], probe=fk.get("probe", "dup_mmap"))
        self.on_event(ev)
        if self.children and self.filter_pids:
            self.watched.setdefault(f["child_pid"], ts)

    # -- name objects ------------------------------------------------------------------------------------------
    def _kr_name_alloc(self, tid, tgid, comm, ts, f):
        if not f["ptr"] or not self.is_watched(tgid, tid, ts):
            return
        ev = self._hdr("name_alloc", tid, tgid, comm, ts)
        ev.update(ptr=f["ptr"], refcount=f["ref"] or 0, name=_name(f["name"]), name_truncated=False)
        self.on_event(ev)


def split_lines(buf: bytes, continues: Callable[[bytes], bool]) -> Tuple[List[bytes], bytes]:
    """Complete lines of BUF (and the unfinished rest).  A line that does not start like an event
    continues the one before it (a newline inside a user string): CONTINUES says whether a line
    starts like an event."""
    parts = buf.split(b"\n")
    rest = parts.pop()
    out: List[bytes] = []
    for p in parts:
        if out and not continues(p):
            out[-1] += b"\n" + p
        else:
            out.append(p)
    return out, rest


def starts_event(line: bytes) -> bool:
    return _HEAD.match(line) is not None

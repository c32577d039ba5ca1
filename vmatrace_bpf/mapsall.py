"""Maps across processes and over time: per name (or allocator family, or dumpsys class) over every process
of a Snapshot -- processes, VMAs, Rss/Pss/Private/Swap, like AOSP librank --, and the diff
of two snapshots per name and per process, including name-caused fragmentation (the VMAs
that equal names would merge away, mapstotals.fragments)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from .categories import category, family
from .errors import VmabpfError
from .mapstotals import fragments
from .smapsparse import parse
from .vma import ProcMaps, Vma
from .snapshot import Snapshot

COLUMNS = ("Rss", "Pss", "Private", "Swap")


@dataclass
class Cell:
    """What one name (or family) adds up to, in one process or over all."""

    vmas: int = 0
    rss: int = 0
    pss: int = 0
    private: int = 0
    swap: int = 0
    frag: int = 0                   # boundaries with a neighbour of another name that only names keep apart
    pids: set = field(default_factory=set)

    def add_vma(self, v: Vma) -> None:
        self.vmas += 1
        self.rss += v.get("Rss")
        self.pss += v.get("Pss")
        self.private += v.get("Private_Clean") + v.get("Private_Dirty")
        self.swap += v.get("Swap")

    def merge(self, o: "Cell") -> None:
        self.vmas += o.vmas
        self.rss += o.rss
        self.pss += o.pss
        self.private += o.private
        self.swap += o.swap
        self.frag += o.frag
        self.pids |= o.pids

    def values(self) -> Dict[str, int]:
        return {"processes": len(self.pids), "vmas": self.vmas, "rss_kb": self.rss, "pss_kb": self.pss,
                "private_kb": self.private, "swap_kb": self.swap, "name_fragments": self.frag}


@dataclass
class ProcSummary:
    pid: int
    comm: str
    vmas: int
    rss: int
    pss: int
    frag: int                       # VMAs that equal names would merge away
    cells: Dict[str, Cell]          # key (name or family) -> Cell


@dataclass
class Across:
    snapshot: Snapshot
    by: str
    procs: Dict[int, ProcSummary]
    damaged: List[Tuple[int, str]]  # (pid, why): smaps that did not parse (exited while read)

    def totals(self) -> Dict[str, Cell]:
        out: Dict[str, Cell] = {}
        for ps in self.procs.values():
            for k, c in ps.cells.items():
                out.setdefault(k, Cell()).merge(c)
        return out


# what a row is: a name ("[anon]" for none), an allocator family, or a class as `dumpsys meminfo` counts
# them (its "Total PSS by category" over all processes)
KEYS = {"name": lambda n: n or "[anon]", "family": family, "category": category}
LABELS = {"name": "name", "family": "family", "category": "class"}


def summarise(pm: ProcMaps, pid: int, comm: str, by: str) -> ProcSummary:
    key = KEYS[by]
    cells: Dict[str, Cell] = {}
    rss = pss = 0
    for v in pm.vmas:
        k = key(v.name)
        c = cells.get(k)
        if c is None:
            c = cells[k] = Cell(pids={pid})
        c.add_vma(v)
        rss += v.get("Rss")
        pss += v.get("Pss")
    fr = fragments(pm)
    for (a, b), n in fr.pairs.items():
        ka, kb = key("" if a == "[anon]" else a), key("" if b == "[anon]" else b)
        for k in {ka, kb}:
            if k in cells:
                cells[k].frag += n
    return ProcSummary(pid, comm, len(pm.vmas), rss, pss, fr.vmas_in_runs - fr.would_remain, cells)


def across(snap: Snapshot, by: str = "name") -> Across:
    procs: Dict[int, ProcSummary] = {}
    damaged = []
    for p in snap.processes:
        try:
            pm = parse(p.smaps, f"PID {p.pid}")
        except VmabpfError as e:
            damaged.append((p.pid, str(e)))      # most often: it exited while its smaps was read
            continue
        procs[p.pid] = summarise(pm, p.pid, p.comm, by)
    return Across(snap, by, procs, damaged)


SORT_KEYS = {
    "pss": lambda kv: (-kv[1].pss, kv[0]),
    "rss": lambda kv: (-kv[1].rss, kv[0]),
    "private": lambda kv: (-kv[1].private, kv[0]),
    "swap": lambda kv: (-kv[1].swap, kv[0]),
    "vmas": lambda kv: (-kv[1].vmas, kv[0]),
    "procs": lambda kv: (-len(kv[1].pids), kv[0]),
    "name": lambda kv: kv[0],
}


def rows(a: Across, pattern: Optional[str], sort: str) -> List[Tuple[str, Cell]]:
    tot = a.totals()
    items = [(k, c) for k, c in tot.items() if pattern is None or pattern in k]
    return sorted(items, key=SORT_KEYS[sort])


def per_process(a: Across, key: str, sort: str) -> List[Tuple[ProcSummary, Cell]]:
    """The processes holding KEY, largest first by SORT (by PID for name/procs)."""
    out = [(ps, ps.cells[key]) for ps in a.procs.values() if key in ps.cells]
    if sort in ("name", "procs"):
        return sorted(out, key=lambda t: t[0].pid)
    return sorted(out, key=lambda t: SORT_KEYS[sort]((t[0].pid, t[1])))


# -- diff ------------------------------------------------------------------------------
_FIELDS = ("vmas", "rss_kb", "pss_kb", "private_kb", "swap_kb", "name_fragments")


def _delta(old: Optional[Dict[str, int]], new: Optional[Dict[str, int]]) -> Dict[str, int]:
    o = old or {}
    n = new or {}
    return {k: n.get(k, 0) - o.get(k, 0) for k in _FIELDS}


def diff(old: Across, new: Across, pattern: Optional[str] = None) -> Dict:
    """Per name (or family, or class) and per process: new minus old.  A process is matched by PID and
    comm (a reused PID with another comm is one that exited and one that started).  With PATTERN only
    the names containing it, and each process's change in those names only."""
    to, tn = old.totals(), new.totals()
    names = []
    for k in sorted(set(to) | set(tn)):
        if pattern is not None and pattern not in k:
            continue
        o = to[k].values() if k in to else None
        n = tn[k].values() if k in tn else None
        d = _delta(o, n)
        if any(d.values()) or (o is None) != (n is None):
            names.append({"name": k, "status": "new" if o is None else "gone" if n is None else "changed",
                          "old": o, "new": n, "delta": d})
    names.sort(key=lambda r: (-abs(r["delta"]["pss_kb"]), -abs(r["delta"]["vmas"]), r["name"]))

    def pv(ps: ProcSummary) -> Dict[str, int]:
        if pattern is None:
            return {"vmas": ps.vmas, "rss_kb": ps.rss, "pss_kb": ps.pss, "name_fragments": ps.frag}
        cs = [c for k, c in ps.cells.items() if pattern in k]
        return {"vmas": sum(c.vmas for c in cs), "rss_kb": sum(c.rss for c in cs), "pss_kb": sum(c.pss for c in cs),
                "name_fragments": sum(c.frag for c in cs)}
    procs = []
    keys_o = {(ps.pid, ps.comm): ps for ps in old.procs.values()}
    keys_n = {(ps.pid, ps.comm): ps for ps in new.procs.values()}
    for key in sorted(set(keys_o) | set(keys_n)):
        o = pv(keys_o[key]) if key in keys_o else None
        n = pv(keys_n[key]) if key in keys_n else None
        d = {k: (n or {}).get(k, 0) - (o or {}).get(k, 0) for k in ("vmas", "rss_kb", "pss_kb", "name_fragments")}
        if pattern is not None and not (o or {}).get("vmas") and not (n or {}).get("vmas"):
            continue                    # held none of those names, before or after
        if any(d.values()) or (o is None) != (n is None):
            procs.append({"pid": key[0], "comm": key[1],
                          "status": "started" if o is None else "exited" if n is None else "changed",
                          "old": o, "new": n, "delta": d})
    procs.sort(key=lambda r: (-abs(r["delta"]["pss_kb"]), -abs(r["delta"]["vmas"]), r["pid"]))
    return {"old": _about(old), "new": _about(new), "by": old.by, "pattern": pattern, "names": names,
            "processes": procs}


def _about(a: Across) -> Dict:
    s = a.snapshot
    j = s.to_json()
    return {"source": s.source, "time": j["time"], "kernel": s.kernel, "root": s.root,
            "processes": len(a.procs), "unreadable": len(s.unreadable), "damaged": len(a.damaged)}

"""Per-process aggregation of events: one code path for watch, record+report and tests.

Feed events (dicts, see events.py) to ``Aggregator.add``; ``summary()`` gives a
JSON-able dict per process.  Live and offline runs give the same report for
the same events because this is the only place the numbers are made.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

# side causes that say where the range is rather than what differs
_POSITIONAL = {"no_vma", "not_adjacent", "inside", "unseen"}


def percentile(sorted_vals: List[int], q: float) -> Optional[int]:
    """Nearest-rank percentile of an ascending list (None if empty)."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(round(q / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def blocked_by_name_only(cause: List[str]) -> bool:
    """The neighbour was adjacent and identical but for its name."""
    return cause == ["name"]


@dataclass
class ProcessStats:
    pid: int
    comm: str = ""
    names_set: int = 0
    names_cleared: int = 0
    names_rejected: Counter = field(default_factory=Counter)  # err name -> count
    names_by_value: Counter = field(default_factory=Counter)  # accepted name -> times set
    name_objs_allocated: int = 0
    name_objs_freed: int = 0
    live_name_objs: Dict[int, str] = field(default_factory=dict)  # ptr -> name
    merges_attempted: int = 0
    merges_by_outcome: Counter = field(default_factory=Counter)  # none/prev/next/both/error
    merges_by_source: Counter = field(default_factory=Counter)
    not_merged_causes: Counter = field(default_factory=Counter)  # side cause word -> count
    name_blocked: int = 0  # merges prevented by the name alone (one per neighbour side)
    name_blocked_pairs: Counter = field(default_factory=Counter)  # (neighbour name, proposed name)
    splits: int = 0
    split_errors: int = 0
    split_refcount_max: Dict[str, int] = field(default_factory=dict)  # name -> highest refcount after a split
    forks: List[dict] = field(default_factory=list)
    refcount_increments: int = 0  # name references taken by fork (vm_area_dup of named VMAs)
    exited: bool = False
    objs_allocated_by_name: Counter = field(default_factory=Counter)  # name -> anon_vma_name objects allocated
    max_refcount_by_name: Dict[str, int] = field(default_factory=dict)  # name -> highest refcount seen (any event)
    freed_ptrs: Optional[set] = None  # name objects freed, kept only for merge() (Aggregator(track_frees=True))

    # -- feeding -------------------------------------------------------------
    def add(self, ev: dict) -> None:
        comm = ev.get("comm")
        if comm:
            self.comm = comm
        # fast path: one dict lookup instead of building "_on_<type>" and getattr (report reads millions)
        handler = _HANDLERS.get(ev["type"])
        if handler is not None:
            handler(self, ev)

    def _on_name_set(self, ev: dict) -> None:
        if ev["ret"] == 0:
            if ev.get("name_null"):
                self.names_cleared += 1
            else:
                self.names_set += 1
                self.names_by_value[ev["name"]] += 1
        else:
            self.names_rejected[ev.get("err") or str(ev["ret"])] += 1

    def _on_merge(self, ev: dict) -> None:
        self.merges_attempted += 1
        self.merges_by_outcome[ev["outcome"]] += 1
        self.merges_by_source[ev["source"]] += 1
        if ev["outcome"] != "none":
            return
        for side, nb_name in (("prev", ev.get("prev_name", "")), ("next", ev.get("next_name", ""))):
            cause = ev[f"{side}_cause"]
            for word in cause:
                self.not_merged_causes[word] += 1
            if blocked_by_name_only(cause):
                self.name_blocked += 1
                self.name_blocked_pairs[(nb_name, ev["name"])] += 1

    def _on_split(self, ev: dict) -> None:
        if ev["ret"] != 0:
            self.split_errors += 1
            return
        self.splits += 1
        if ev["name"]:
            self.split_refcount_max[ev["name"]] = max(self.split_refcount_max.get(ev["name"], 0), ev["refcount"])
            self._seen_refcount(ev["name"], ev["refcount"])

    def _seen_refcount(self, name: str, refcount: int) -> None:
        if refcount > self.max_refcount_by_name.get(name, 0):
            self.max_refcount_by_name[name] = refcount

    def _on_fork(self, ev: dict) -> None:
        self.forks.append({"child_pid": ev["child_pid"], "latency_ns": ev["latency_ns"],
                           "map_count": ev["map_count"], "vmas_copied": ev["vmas_copied"],
                           "named_copied": ev["named_copied"]})
        self.refcount_increments += ev["named_copied"]

    def _on_name_alloc(self, ev: dict) -> None:
        self.name_objs_allocated += 1
        self.live_name_objs[ev["ptr"]] = ev["name"]
        self.objs_allocated_by_name[ev["name"]] += 1
        self._seen_refcount(ev["name"], ev.get("refcount", 0))

    def _on_name_free(self, ev: dict) -> None:
        self.name_objs_freed += 1
        self.live_name_objs.pop(ev["ptr"], None)
        if self.freed_ptrs is not None:
            self.freed_ptrs.add(ev["ptr"])
        self._seen_refcount(ev["name"], ev.get("refcount", 0))

    def _on_exit(self, ev: dict) -> None:
        self.exited = True

    def merge(self, later: "ProcessStats") -> None:
        """Fold in the stats of the events that came right after ours, as if add() had seen them all
        (report reads a big recording in parts, in parallel).  LATER must have tracked its frees."""
        if later.comm:
            self.comm = later.comm
        self.names_set += later.names_set
        self.names_cleared += later.names_cleared
        self.names_rejected.update(later.names_rejected)
        self.names_by_value.update(later.names_by_value)
        self.name_objs_allocated += later.name_objs_allocated
        self.name_objs_freed += later.name_objs_freed
        # an object LATER allocated or freed is in the state LATER left it in
        for ptr in later.freed_ptrs or ():
            if ptr not in later.live_name_objs:
                self.live_name_objs.pop(ptr, None)
        self.live_name_objs.update(later.live_name_objs)
        if self.freed_ptrs is not None and later.freed_ptrs:
            self.freed_ptrs |= later.freed_ptrs
        self.merges_attempted += later.merges_attempted
        self.merges_by_outcome.update(later.merges_by_outcome)
        self.merges_by_source.update(later.merges_by_source)
        self.not_merged_causes.update(later.not_merged_causes)
        self.name_blocked += later.name_blocked
        self.name_blocked_pairs.update(later.name_blocked_pairs)
        self.splits += later.splits
        self.split_errors += later.split_errors
        for name, rc in later.split_refcount_max.items():
            self.split_refcount_max[name] = max(self.split_refcount_max.get(name, 0), rc)
        self.forks.extend(later.forks)
        self.refcount_increments += later.refcount_increments
        self.exited = self.exited or later.exited
        self.objs_allocated_by_name.update(later.objs_allocated_by_name)
        for name, rc in later.max_refcount_by_name.items():
            self._seen_refcount(name, rc)

    # -- results ---------------------------------------------------------------
    def sharing(self) -> dict:
        """Per name: times set, anon_vma_name objects allocated and still live, and the highest
        refcount seen (after a split, at alloc/free): how much one name object is shared."""
        live = Counter(self.live_name_objs.values())
        names = set(self.names_by_value) | set(self.objs_allocated_by_name) | set(self.max_refcount_by_name)
        return {n: {"set": self.names_by_value.get(n, 0), "objects_allocated": self.objs_allocated_by_name.get(n, 0),
                    "objects_live": live.get(n, 0), "max_refcount": self.max_refcount_by_name.get(n, 0)}
                for n in sorted(names)}

    def summary(self, top: int = 5) -> dict:
        lat = sorted(f["latency_ns"] for f in self.forks)
        return {
            "pid": self.pid,
            "comm": self.comm,
            "names": {"set": self.names_set, "cleared": self.names_cleared,
                      "rejected": dict(sorted(self.names_rejected.items())),
                      "distinct": len(self.names_by_value)},
            "name_objects": {"allocated": self.name_objs_allocated, "freed": self.name_objs_freed,
                             "live": len(self.live_name_objs)},
            "merges": {"attempted": self.merges_attempted,
                       "merged": sum(v for k, v in self.merges_by_outcome.items() if k in ("prev", "next", "both")),
                       "not_merged": self.merges_by_outcome.get("none", 0),
                       "errors": self.merges_by_outcome.get("error", 0),
                       "by_outcome": dict(sorted(self.merges_by_outcome.items())),
                       "by_source": dict(sorted(self.merges_by_source.items())),
                       "not_merged_causes": dict(sorted(self.not_merged_causes.items())),
                       "blocked_by_name_only": self.name_blocked,
                       "top_name_pairs": [{"neighbour": a, "proposed": b, "count": n}
                                          for (a, b), n in self.name_blocked_pairs.most_common(top)]},
            # every merge the name alone prevented leaves one VMA more than there would be
            "vmas_cost_by_names": self.name_blocked,
            "splits": {"count": self.splits, "errors": self.split_errors,
                       "max_refcount_by_name": dict(sorted(self.split_refcount_max.items()))},
            "forks": {"count": len(self.forks), "refcount_increments": self.refcount_increments,
                      "latency_ns": {"min": lat[0] if lat else None, "p50": percentile(lat, 50),
                                     "p90": percentile(lat, 90), "p99": percentile(lat, 99),
                                     "max": lat[-1] if lat else None},
                      "named_copied_per_fork": [f["named_copied"] for f in self.forks]},
            "exited": self.exited,
            "sharing": self.sharing(),
        }


_HANDLERS = {name[4:]: fn for name, fn in vars(ProcessStats).items() if name.startswith("_on_")}


class Aggregator:
    """Events in, per-process summaries out."""

    def __init__(self, track_frees: bool = False):
        self.procs: Dict[int, ProcessStats] = {}
        self.lost = 0
        self.events = 0
        self.track_frees = track_frees  # for merge(): see ProcessStats.merge

    def add(self, ev: dict) -> None:
        self.events += 1
        t = ev["type"]
        if t == "lost":
            self.lost += int(ev.get("count", 0))
            return
        pid = ev.get("pid")
        if pid is None:
            return
        st = self.procs.get(pid)
        if st is None:
            st = self.procs[pid] = ProcessStats(pid)
            if self.track_frees:
                st.freed_ptrs = set()
        # ProcessStats.add inlined (report feeds millions of events through here)
        comm = ev.get("comm")
        if comm:
            st.comm = comm
        handler = _HANDLERS.get(t)
        if handler is not None:
            handler(st, ev)

    def merge(self, later: "Aggregator") -> "Aggregator":
        """Fold in an Aggregator(track_frees=True) fed the events that came right after ours."""
        self.events += later.events
        self.lost += later.lost
        for pid, st in later.procs.items():
            mine = self.procs.get(pid)
            if mine is None:
                self.procs[pid] = st
            else:
                mine.merge(st)
        return self

    def add_all(self, evs: Iterable[dict]) -> "Aggregator":
        for ev in evs:
            self.add(ev)
        return self

    def summary(self, pids: Optional[Iterable[int]] = None) -> dict:
        wanted = set(pids) if pids else None
        return {"processes": [p.summary() for pid, p in sorted(self.procs.items())
                              if wanted is None or pid in wanted],
                "lost_events": self.lost}

"""Per-process aggregation of events: one code path for watch, record+report and tests.

Feed events (dicts, see events.py) to ``Aggregator.add``; ``summary()`` gives a
JSON-able dict per process.  Live and offline runs give the same report for
the same events because this is the only place the numbers are made.
"""

from __future__ import annotations

from collections import Counter
import heapq
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

def percentile(sorted_vals: List[int], q: float) -> Optional[int]:
    """Nearest-rank percentile of an ascending list (None if empty)."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(round(q / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def regression(unnamed: Optional[float], named: Optional[float]) -> Optional[float]:
    """How much slower NAMED is than UNNAMED, in percent (None when it cannot be said)."""
    if not unnamed or named is None:
        return None
    return (named - unnamed) / unnamed * 100.0


def blocked_by_name_only(cause: List[str]) -> bool:
    """The neighbour was adjacent and identical but for its name."""
    return cause == _NAME_ONLY


_NAME_ONLY = ["name"]  # never changed


class ProcessStats:
    """What one process did.  Compact: a report over a million processes keeps a million of these,
    so there are slots instead of a __dict__, and every container is made when first needed
    (None until then)."""

    __slots__ = ("pid", "comm", "names_set", "names_cleared", "names_rejected", "names_by_value",
                 "name_objs_allocated", "name_objs_freed", "live_name_objs", "merges_attempted",
                 "merges_by_outcome", "merges_by_source", "not_merged_causes", "name_blocked",
                 "name_blocked_pairs", "splits", "split_errors", "split_refcount_max", "forks",
                 "refcount_increments", "exited", "objs_allocated_by_name", "max_refcount_by_name", "freed_ptrs")

    def __init__(self, pid: int):
        self.pid = pid
        self.comm = ""
        self.names_set = self.names_cleared = 0
        self.names_rejected: Optional[Counter] = None  # err name -> count
        self.names_by_value: Optional[Counter] = None  # accepted name -> times set
        self.name_objs_allocated = self.name_objs_freed = 0
        self.live_name_objs: Optional[Dict[int, str]] = None  # ptr -> name
        self.merges_attempted = 0
        self.merges_by_outcome: Optional[Counter] = None  # none/prev/next/both/error
        self.merges_by_source: Optional[Counter] = None
        self.not_merged_causes: Optional[Counter] = None  # side cause word -> count
        self.name_blocked = 0  # merges prevented by the name alone (one per neighbour side)
        self.name_blocked_pairs: Optional[Counter] = None  # (neighbour name, proposed name)
        self.splits = self.split_errors = 0
        self.split_refcount_max: Optional[Dict[str, int]] = None  # name -> highest refcount after a split
        self.forks: Optional[List[tuple]] = None  # (child_pid, latency_ns, map_count, vmas_copied, named_copied)
        self.refcount_increments = 0  # name references taken by fork (vm_area_dup of named VMAs)
        self.exited = False
        self.objs_allocated_by_name: Optional[Counter] = None  # name -> anon_vma_name objects allocated
        self.max_refcount_by_name: Optional[Dict[str, int]] = None  # name -> highest refcount seen (any event)
        self.freed_ptrs: Optional[set] = None  # name objects freed, kept only for merge() (track_frees)

    @property
    def activity(self) -> int:
        """How much this process did (what `report --top` ranks by)."""
        return (self.names_set + self.names_cleared + (sum(self.names_rejected.values()) if self.names_rejected else 0)
                + self.merges_attempted + self.splits + self.split_errors + len(self.forks or ())
                + self.name_objs_allocated + self.name_objs_freed)

    # -- feeding -------------------------------------------------------------
    # fed by Aggregator.add_many: a handler per event type (_HANDLERS)
    def _on_name_set(self, ev: dict) -> None:
        if ev["ret"] == 0:
            if ev.get("name_null"):
                self.names_cleared += 1
            else:
                self.names_set += 1
                if self.names_by_value is None:
                    self.names_by_value = Counter()
                self.names_by_value[ev["name"]] += 1
        else:
            if self.names_rejected is None:
                self.names_rejected = Counter()
            self.names_rejected[ev.get("err") or str(ev["ret"])] += 1

    def _on_merge(self, ev: dict) -> None:
        self.merges_attempted += 1
        if self.merges_by_outcome is None:
            self.merges_by_outcome, self.merges_by_source = Counter(), Counter()
        outcome = ev["outcome"]
        self.merges_by_outcome[outcome] += 1
        self.merges_by_source[ev["source"]] += 1
        if outcome != "none":
            return
        causes = self.not_merged_causes
        if causes is None:
            causes = self.not_merged_causes = Counter()
        # the two sides unrolled (report reads millions of merges)
        prev, nxt = ev["prev_cause"], ev["next_cause"]
        for word in prev:
            causes[word] += 1
        for word in nxt:
            causes[word] += 1
        if prev == _NAME_ONLY:  # blocked_by_name_only
            self._name_blocked(ev.get("prev_name", ""), ev["name"])
        if nxt == _NAME_ONLY:
            self._name_blocked(ev.get("next_name", ""), ev["name"])

    def _name_blocked(self, neighbour: str, proposed: str) -> None:
        self.name_blocked += 1
        if self.name_blocked_pairs is None:
            self.name_blocked_pairs = Counter()
        self.name_blocked_pairs[(neighbour, proposed)] += 1

    def _on_split(self, ev: dict) -> None:
        if ev["ret"] != 0:
            self.split_errors += 1
            return
        self.splits += 1
        if ev["name"]:
            if self.split_refcount_max is None:
                self.split_refcount_max = {}
            self.split_refcount_max[ev["name"]] = max(self.split_refcount_max.get(ev["name"], 0), ev["refcount"])
            self._seen_refcount(ev["name"], ev["refcount"])

    def _seen_refcount(self, name: str, refcount: int) -> None:
        if self.max_refcount_by_name is None:
            self.max_refcount_by_name = {}
        if refcount > self.max_refcount_by_name.get(name, 0):
            self.max_refcount_by_name[name] = refcount

    def _on_fork(self, ev: dict) -> None:
        if self.forks is None:
            self.forks = []
        self.forks.append((ev["child_pid"], ev["latency_ns"], ev["map_count"], ev["vmas_copied"],
                           ev["named_copied"]))
        self.refcount_increments += ev["named_copied"]

    def _on_name_alloc(self, ev: dict) -> None:
        self.name_objs_allocated += 1
        if self.live_name_objs is None:
            self.live_name_objs = {}
        self.live_name_objs[ev["ptr"]] = ev["name"]
        if self.objs_allocated_by_name is None:
            self.objs_allocated_by_name = Counter()
        self.objs_allocated_by_name[ev["name"]] += 1
        self._seen_refcount(ev["name"], ev.get("refcount", 0))

    def _on_name_free(self, ev: dict) -> None:
        self.name_objs_freed += 1
        if self.live_name_objs:
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
        self.names_rejected = _merged(self.names_rejected, later.names_rejected)
        self.names_by_value = _merged(self.names_by_value, later.names_by_value)
        self.name_objs_allocated += later.name_objs_allocated
        self.name_objs_freed += later.name_objs_freed
        # an object LATER allocated or freed is in the state LATER left it in
        later_live = later.live_name_objs or {}
        if self.live_name_objs:
            for ptr in later.freed_ptrs or ():
                if ptr not in later_live:
                    self.live_name_objs.pop(ptr, None)
        if later_live:
            if self.live_name_objs is None:
                self.live_name_objs = {}
            self.live_name_objs.update(later_live)
        if self.freed_ptrs is not None and later.freed_ptrs:
            self.freed_ptrs |= later.freed_ptrs
        self.merges_attempted += later.merges_attempted
        self.merges_by_outcome = _merged(self.merges_by_outcome, later.merges_by_outcome)
        self.merges_by_source = _merged(self.merges_by_source, later.merges_by_source)
        self.not_merged_causes = _merged(self.not_merged_causes, later.not_merged_causes)
        self.name_blocked += later.name_blocked
        self.name_blocked_pairs = _merged(self.name_blocked_pairs, later.name_blocked_pairs)
        self.splits += later.splits
        self.split_errors += later.split_errors
        for name, rc in (later.split_refcount_max or {}).items():
            if self.split_refcount_max is None:
                self.split_refcount_max = {}
            self.split_refcount_max[name] = max(self.split_refcount_max.get(name, 0), rc)
        if later.forks:
            self.forks = (self.forks or []) + later.forks
        self.refcount_increments += later.refcount_increments
        self.exited = self.exited or later.exited
        self.objs_allocated_by_name = _merged(self.objs_allocated_by_name, later.objs_allocated_by_name)
        for name, rc in (later.max_refcount_by_name or {}).items():
            self._seen_refcount(name, rc)

    # -- results ---------------------------------------------------------------
    def sharing(self) -> dict:
        """Per name: times set, anon_vma_name objects allocated and still live, and the highest
        refcount seen (after a split, at alloc/free): how much one name object is shared."""
        by_value = self.names_by_value or {}
        allocated = self.objs_allocated_by_name or {}
        max_rc = self.max_refcount_by_name or {}
        live = Counter((self.live_name_objs or {}).values())
        names = set(by_value) | set(allocated) | set(max_rc)
        return {n: {"set": by_value.get(n, 0), "objects_allocated": allocated.get(n, 0),
                    "objects_live": live.get(n, 0), "max_refcount": max_rc.get(n, 0)}
                for n in sorted(names)}

    def summary(self, top: int = 5) -> dict:
        forks = self.forks or []
        lat = sorted(f[1] for f in forks)
        outcome = self.merges_by_outcome or {}
        pairs = self.name_blocked_pairs.most_common(top) if self.name_blocked_pairs else []
        return {
            "pid": self.pid,
            "comm": self.comm,
            "names": {"set": self.names_set, "cleared": self.names_cleared,
                      "rejected": dict(sorted((self.names_rejected or {}).items())),
                      "distinct": len(self.names_by_value or ())},
            "name_objects": {"allocated": self.name_objs_allocated, "freed": self.name_objs_freed,
                             "live": len(self.live_name_objs or ())},
            "merges": {"attempted": self.merges_attempted,
                       "merged": sum(v for k, v in outcome.items() if k in ("prev", "next", "both")),
                       "not_merged": outcome.get("none", 0),
                       "errors": outcome.get("error", 0),
                       "by_outcome": dict(sorted(outcome.items())),
                       "by_source": dict(sorted((self.merges_by_source or {}).items())),
                       "not_merged_causes": dict(sorted((self.not_merged_causes or {}).items())),
                       "blocked_by_name_only": self.name_blocked,
                       "top_name_pairs": [{"neighbour": a, "proposed": b, "count": n} for (a, b), n in pairs]},
            # every merge the name alone prevented leaves one VMA more than there would be
            "vmas_cost_by_names": self.name_blocked,
            "splits": {"count": self.splits, "errors": self.split_errors,
                       "max_refcount_by_name": dict(sorted((self.split_refcount_max or {}).items()))},
            "forks": {"count": len(forks), "refcount_increments": self.refcount_increments,
                      "latency_ns": {"min": lat[0] if lat else None, "p50": percentile(lat, 50),
                                     "p90": percentile(lat, 90), "p99": percentile(lat, 99),
                                     "max": lat[-1] if lat else None},
                      "named_copied_per_fork": [f[4] for f in forks]},
            "exited": self.exited,
            "sharing": self.sharing(),
        }


def _merged(mine: Optional[Counter], later: Optional[Counter]) -> Optional[Counter]:
    if not later:
        return mine
    if mine is None:
        return Counter(later)
    mine.update(later)
    return mine


_HANDLERS = {name[4:]: fn for name, fn in vars(ProcessStats).items() if name.startswith("_on_")}


class Aggregator:
    """Events in, per-process summaries out."""

    def __init__(self, track_frees: bool = False):
        self.procs: Dict[int, ProcessStats] = {}
        self.lost = 0
        self.events = 0
        self.track_frees = track_frees  # for merge(): see ProcessStats.merge

    def add(self, ev: dict) -> None:
        self.add_many((ev,))

    def add_many(self, evs: Sequence[dict]) -> None:
        """add() of each of EVS, in order (the reader's path: one call per batch of ~100)."""
        self.events += len(evs)
        procs, handlers = self.procs, _HANDLERS
        for ev in evs:
            t = ev["type"]
            if t == "lost":
                self.lost += int(ev.get("count", 0))
                continue
            pid = ev.get("pid")
            if pid is None:
                continue
            st = procs.get(pid)
            if st is None:
                st = procs[pid] = ProcessStats(pid)
                if self.track_frees:
                    st.freed_ptrs = set()
            comm = ev.get("comm")
            if comm:
                st.comm = comm
            handler = handlers.get(t)
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
        self.add_many(list(evs))
        return self

    def selected(self, pids: Optional[Iterable[int]] = None, top: Optional[int] = None) -> List[ProcessStats]:
        """The processes of PIDS (all by default), by PID; with TOP, only the TOP most active."""
        wanted = set(pids) if pids else None
        procs = [p for pid, p in self.procs.items() if wanted is None or pid in wanted]
        if top and len(procs) > top:
            procs = heapq.nlargest(top, procs, key=lambda p: (p.activity, -p.pid))
        return sorted(procs, key=lambda p: p.pid)

    def iter_summaries(self, pids: Optional[Iterable[int]] = None) -> Iterator[dict]:
        """One process summary at a time (report -j over a million processes never holds them all)."""
        for p in self.selected(pids):
            yield p.summary()

    def summary(self, pids: Optional[Iterable[int]] = None, top: Optional[int] = None) -> dict:
        """Every process's summary (of PIDS); with TOP only the TOP most active, and how many were left
        out ("processes_omitted")."""
        chosen = self.selected(pids, top)
        out = {"processes": [p.summary() for p in chosen], "lost_events": self.lost}
        if top:
            total = len(self.procs) if not pids else len(set(pids) & set(self.procs))
            if total > len(chosen):
                out["processes_omitted"] = total - len(chosen)
        return out

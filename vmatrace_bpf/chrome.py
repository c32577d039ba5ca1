"""Chrome trace-event JSON (ui.perfetto.dev, chrome://tracing) of events: `vmabpf report --format chrome`."""

from __future__ import annotations

from typing import Dict, List, Optional

from .events import SCHEMA
from .render import event_detail

_U64 = 1 << 64


def _plain(v) -> bool:
    """A value that goes into trace JSON as is (no floats: a fuzzed 1e999 would be Infinity, not JSON)."""
    t = type(v)
    if t is int or t is str or t is bool or v is None:
        return True
    return t is list and all(type(x) is int or type(x) is str for x in v)


CHROME_LABEL = {name: t.chrome for name, t in SCHEMA.items()}


def chrome_trace(events: List[dict], meta: Optional[dict] = None) -> dict:
    """Chrome trace-event JSON (ui.perfetto.dev, chrome://tracing): each process a track (pid),
    forks as complete ("X") slices from dup_mmap's start to its end, the rest as thread-scoped
    instants.  ts/dur in microseconds from the earliest event."""
    raw = []  # (start ns, event dict without ts)
    comms: Dict[int, str] = {}
    threads: Dict[tuple, str] = {}
    for ev in events:
        t = ev["type"]
        ts = ev.get("ts")
        if type(ts) is not int or not 0 <= ts < _U64:
            continue  # no usable time: not on a timeline
        if t == "lost":
            raw.append((ts, {"name": f"{ev['count']} events lost", "cat": "lost", "ph": "i", "s": "g",
                             "pid": 0, "tid": 0, "args": {"count": ev["count"]}}))
            continue
        pid = ev["pid"]
        tid = ev.get("tid", pid)
        if type(tid) is not int:
            tid = pid
        comm = ev.get("comm") or ""
        if comm:
            comms[pid] = comm
            threads[(pid, tid)] = comm
        else:
            comms.setdefault(pid, "")
        try:
            detail = event_detail(ev, verbose=True)
        except Exception:  # fields the detail text wants but this event lacks: the args still say it all
            detail = ""
        args = {k: v for k, v in ev.items() if k not in ("type", "pid", "tid", "comm", "ts") and _plain(v)}
        args["detail"] = detail
        if t == "fork":
            lat = max(0, ev["latency_ns"])
            raw.append((ts - lat, {"name": f"fork (dup_mmap) -> {ev['child_pid']}", "cat": "fork", "ph": "X",
                                   "dur": lat / 1000.0, "pid": pid, "tid": tid, "args": args}))
        else:
            label = CHROME_LABEL.get(t, t)
            if t in SCHEMA and SCHEMA[t].named and isinstance(ev.get("name"), str):
                label += f" '{ev['name'][:40]}'"
            if t == "merge":
                label += f" {ev['outcome']}"
            if t in ("name_set", "split") and ev.get("ret"):
                label += f" {ev.get('err') or ev['ret']}"
            raw.append((ts, {"name": label, "cat": t, "ph": "i", "s": "t", "pid": pid, "tid": tid, "args": args}))
    t0 = min((r[0] for r in raw), default=0)
    out = []
    for pid, comm in sorted(comms.items()):
        out.append({"name": "process_name", "ph": "M", "ts": 0, "pid": pid, "tid": pid,
                    "args": {"name": f"{comm} ({pid})" if comm else f"PID {pid}"}})
    for (pid, tid), comm in sorted(threads.items()):
        out.append({"name": "thread_name", "ph": "M", "ts": 0, "pid": pid, "tid": tid,
                    "args": {"name": f"{comm} ({tid})"}})
    if any(r[1]["pid"] == 0 for r in raw):
        out.append({"name": "process_name", "ph": "M", "ts": 0, "pid": 0, "tid": 0,
                    "args": {"name": "vmabpf (lost events)"}})
    for start, ce in raw:
        ce["ts"] = (start - t0) / 1000.0
        out.append(ce)
    return {"traceEvents": out, "displayTimeUnit": "ms",
            "otherData": {"generator": "vmabpf report", **(meta or {}), "t0_monotonic_ns": t0}}



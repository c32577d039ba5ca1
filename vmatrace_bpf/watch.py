"""`vmabpf watch`: live events for one process, and the trace loop `record` shares."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Callable, List, Optional

import click

from .options import PID, COUNT, SECONDS

from .errors import VmabpfError, one_line_errors


def process_state(pid: int) -> Optional[str]:
    """The state letter from /proc/PID/stat, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return "?"
    # comm may hold spaces and parentheses: the state follows the last ')'
    return data[data.rfind(")") + 2:][:1] or "?"


def process_alive(pid: int) -> bool:
    return process_state(pid) not in (None, "Z", "X")


def check_pid(pid: int) -> None:
    if pid <= 0 or not process_alive(pid):
        raise VmabpfError(f"no process with PID {pid} (check the number with ps; it may have exited)")


def check_tid(pid: int, tid: int) -> None:
    if not os.path.exists(f"/proc/{pid}/task/{tid}"):
        raise VmabpfError(f"PID {pid} has no thread {tid} (see /proc/{pid}/task)")


class StopFlag:
    """Ctrl-C and SIGTERM end the trace loop cleanly (summary, detach, exit 0)."""

    def __init__(self):
        self.why: Optional[str] = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame):
        self.why = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def prepare(pids: List[int], tid: Optional[int], force: tuple):
    """Checks, kernel info and plan for a trace of PIDS; raises VmabpfError with one line."""
    from .doctor import blocking_problem
    from .kernel import KernelInfo
    from .plan import PlanError, choose, parse_force

    try:
        forced = parse_force(force)
    except PlanError as e:
        raise VmabpfError(str(e)) from None
    for pid in pids:
        check_pid(pid)
        if tid:
            check_tid(pid, tid)
    kinfo = KernelInfo.live()
    problem = blocking_problem(kinfo)
    if problem:
        raise VmabpfError(f"cannot trace on this kernel: {problem}; see 'vmabpf doctor'")
    plan = choose(kinfo, force=forced)
    refused = plan.forced_failures()
    if refused:
        raise VmabpfError("--force refused on this kernel: " + "; ".join(refused))
    return kinfo, plan


def missing_note(plan) -> str:
    """' (not traced here: merge (why); ...)' for a banner's first line, or ''."""
    from .escape import escape
    line = plan.missing_line()
    return f" (not traced here: {escape(line)})" if line else ""


def trace_loop(tracer, on_event: Callable[[dict], None], pids: List[int], stop: StopFlag,
               duration: Optional[float] = None, interval: Optional[float] = None,
               on_interval: Optional[Callable[[], bool]] = None) -> str:
    """Poll until Ctrl-C/SIGTERM, DURATION, the (first) watched process exiting, or
    ON_INTERVAL returning False.  Lost events are reported as {"type": "lost"}.
    Returns why it stopped."""
    start = time.monotonic()
    next_tick = start + interval if interval else None
    next_alive_check = start
    lost_seen = 0
    why = ""
    while not why:
        tracer.poll(100)
        now = time.monotonic()
        lost = tracer.lost()
        if lost > lost_seen:
            on_event({"type": "lost", "ts": time.monotonic_ns(), "count": lost - lost_seen})
            lost_seen = lost
        if stop.why:
            why = stop.why
        elif duration is not None and now - start >= duration:
            why = "duration"
        elif pids and now >= next_alive_check:
            next_alive_check = now + 0.25
            if not process_alive(pids[0]):
                why = "exit"
        if next_tick and now >= next_tick and not why:
            next_tick += interval
            if on_interval and on_interval() is False:
                why = "count"
    tracer.drain()
    lost = tracer.lost()
    if lost > lost_seen:
        on_event({"type": "lost", "ts": time.monotonic_ns(), "count": lost - lost_seen})
    if why == "exit":
        on_event({"type": "exit", "ts": time.monotonic_ns(), "pid": pids[0], "tid": pids[0], "comm": ""})
    return why


@click.command()
@click.option("-p", "--pid", type=PID, help="trace this process (TGID)")
@click.option("-t", "--tid", type=PID, help="only this thread of it")
@click.option("--children", is_flag=True, help="follow processes it forks")
@click.option("-j", "--json", "as_json", is_flag=True, help="JSON Lines: one event per line, then a summary")
@click.option("-T", "--timestamp", is_flag=True, help="print a time column (seconds since start)")
@click.option("-v", "--verbose", is_flag=True, help="full names and neighbours (lines wider than 80)")
@click.option("--duration", type=SECONDS, help="stop after this many seconds")
@click.option("--ebpf", is_flag=True, help="print the BPF program and exit")
@click.option("--force", multiple=True, metavar="CAP=VARIANT",
              help="pin a capability to a variant of the attach plan (see doctor), e.g. fork=uprobe_dup_mmap-window")
@click.argument("interval", required=False, type=SECONDS)
@click.argument("count", required=False, type=COUNT)
def watch(pid, tid, children, as_json, timestamp, verbose, duration, ebpf, force, interval, count):
    """Live events for one process: names set and rejected, merges (merged or why
    not), splits, forks and name refcount sharing.

    With INTERVAL, print a summary every INTERVAL seconds (COUNT times).
    Ctrl-C or SIGTERM prints the final summary and exits 0.
    """
    one_line_errors(_watch)(pid, tid, children, as_json, timestamp, verbose, duration, ebpf, force, interval, count)


def _watch(pid, tid, children, as_json, timestamp, verbose, duration, ebpf, force, interval, count):
    from .render import event_header, event_line, summary_table
    from .report import Aggregator

    if ebpf:
        from .kernel import KernelInfo
        from .loader import build_defines, ebpf_text
        from .plan import PlanError, choose, parse_force
        kinfo = KernelInfo.live()
        try:
            plan = choose(kinfo, force=parse_force(force))
        except PlanError as e:
            raise VmabpfError(str(e)) from None
        if plan.forced_failures():
            raise VmabpfError("--force refused on this kernel: " + "; ".join(plan.forced_failures()))
        click.echo(ebpf_text(build_defines(plan, kinfo, [pid] if pid else [], tid, children)))
        return
    if pid is None:
        raise VmabpfError("watch needs -p PID (the process to trace)", exit_code=2)
    if interval is not None and interval <= 0:
        raise VmabpfError("INTERVAL must be a positive number of seconds", exit_code=2)
    kinfo, plan = prepare([pid], tid, force)
    from .loader import Tracer

    agg = Aggregator()
    out = sys.stdout
    first_ts = []

    def on_event(ev: dict) -> None:
        agg.add(ev)
        if ev["type"] == "exit":
            ev["comm"] = agg.procs[pid].comm if pid in agg.procs else ""
        if as_json:
            out.write(json.dumps(ev, separators=(",", ":"), allow_nan=False) + "\n")
        else:
            if not first_ts and "ts" in ev:
                first_ts.append(ev["ts"])
            out.write(event_line(ev, first_ts[0] if first_ts else 0, timestamp, verbose) + "\n")
        out.flush()

    def emit_summary(final: bool) -> None:
        summ = agg.summary()
        if as_json:
            out.write(json.dumps({"type": "summary", "final": final, **summ}, separators=(",", ":"), allow_nan=False) + "\n")
        else:
            out.write("\n" + summary_table(summ) + "\n\n")
        out.flush()

    ticks = []

    def on_interval() -> bool:
        emit_summary(False)
        ticks.append(1)
        return count is None or len(ticks) < count

    with StopFlag() as stop, Tracer(plan, kinfo, on_event, pids=[pid], tid=tid, children=children,
                                    filter_pids=True) as tracer:
        click.echo(f"Tracing named-VMA events for PID {pid}{' and its children' if children else ''}"
                   f"{missing_note(plan)}... Hit Ctrl-C to end.", err=True)
        if not as_json:
            out.write(event_header(timestamp) + "\n")
        why = trace_loop(tracer, on_event, [pid], stop, duration, interval, on_interval)
    if why == "exit":
        click.echo(f"PID {pid} exited; detached.", err=True)
    emit_summary(True)

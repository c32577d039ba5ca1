"""`vmabpf watch`: live events for one process."""

from __future__ import annotations

import json
import sys

import click

from ..aggregate import Aggregator
from ..errors import VmabpfError, one_line_errors
from ..loader import build_defines, ebpf_text
from ..options import PID, backend_option, children_option, duration_option, ebpf_option, force_option, interval_count_arguments
from ..render import event_header, event_line, summary_table
from ..session import StopFlag, backend_and_device, ebpf_plan, missing_note, open_tracer, prepare, trace_loop


@click.command()
@click.option("-p", "--pid", type=PID, help="trace this process (TGID)")
@click.option("-t", "--tid", type=PID, help="only this thread of it")
@children_option
@click.option("-j", "--json", "as_json", is_flag=True, help="JSON Lines: one event per line, then a summary")
@click.option("-T", "--timestamp", is_flag=True, help="print a time column (seconds since start)")
@click.option("-v", "--verbose", is_flag=True, help="full names and neighbours (lines wider than 80)")
@duration_option
@ebpf_option
@force_option
@backend_option
@interval_count_arguments
@one_line_errors
def watch(pid, tid, children, as_json, timestamp, verbose, duration, ebpf, force, backend, use_adb, serial,
          interval, count):
    """Live events for one process: names set and rejected, merges (merged or why
    not), splits, forks and name refcount sharing.

    With INTERVAL, print a summary every INTERVAL seconds (COUNT times).
    Ctrl-C or SIGTERM prints the final summary and exits 0.
    """
    if ebpf:
        kinfo, plan = ebpf_plan(force)
        click.echo(ebpf_text(build_defines(plan, kinfo, [pid] if pid else [], tid, children)))
        return
    if pid is None:
        raise VmabpfError("watch needs -p PID (the process to trace)", exit_code=2)
    if interval is not None and interval <= 0:
        raise VmabpfError("INTERVAL must be a positive number of seconds", exit_code=2)
    backend, device = backend_and_device(backend, use_adb, serial)
    kinfo, plan = prepare([pid], tid, force, backend=backend, device=device)

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

    with StopFlag() as stop, open_tracer(plan, kinfo, on_event, device, pids=[pid], tid=tid, children=children,
                                         filter_pids=True) as tracer:
        click.echo(f"Tracing named-VMA events for PID {pid}{' and its children' if children else ''}"
                   f"{missing_note(plan)}... Hit Ctrl-C to end.", err=True)
        if not as_json:
            out.write(event_header(timestamp) + "\n")
        why = trace_loop(tracer, on_event, [pid], stop, duration, interval, on_interval,
                         alive=device.alive if device else None)
    if why == "exit":
        click.echo(f"PID {pid} exited; detached.", err=True)
    elif why == "ended":
        click.echo(f"{tracer.ended}; stopped, the events received are above.", err=True)
    emit_summary(True)

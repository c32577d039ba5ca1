"""`vmabpf record`: events to a JSON Lines file, for `vmabpf report` later and elsewhere.

A recording is a header line, one line per event (exactly as `watch -j` prints
them, plus ``{"type": "lost", "count": N}`` records), and a footer line::

    {"type": "header", "format": "vmabpf-record", "version": 1, ...}
    {"type": "name_set", "ts": ..., "pid": ..., ...}
    ...
    {"type": "footer", "events": N, "lost_events": N, "end_time": {...}, "reason": "SIGINT"}

Every line is flushed when written, so a recording cut short (power loss,
SIGKILL) loses at most its last line; `report` skips a truncated last line.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from typing import IO, List

import click

from .options import PID, SECONDS

from . import __version__
from .errors import VmabpfError, one_line_errors

FORMAT = "vmabpf-record"
VERSION = 1


def clock_now() -> dict:
    """Wall clock (ISO 8601, local time with offset) and CLOCK_MONOTONIC ns (the clock of events' ts)."""
    return {"wall": datetime.datetime.now().astimezone().isoformat(), "monotonic_ns": time.monotonic_ns()}


def make_header(plan_json: dict, kernel_release: str, arch: str, pids: List[int], children: bool) -> dict:
    return {"type": "header", "format": FORMAT, "version": VERSION, "tool_version": __version__,
            "kernel_release": kernel_release, "arch": arch, "plan": plan_json, "start_time": clock_now(),
            "pid_filter": list(pids), "children": bool(children)}


class RecordWriter:
    """Writes a recording to FP: ``write_header``, ``write_event`` per event, ``close(reason)``.

    Knows nothing of BPF, so tests feed it synthetic events."""

    def __init__(self, fp: IO[str], name: str = "-", close_fp: bool = False):
        self.fp = fp
        self.name = name
        self.close_fp = close_fp
        self.events = 0
        self.lost = 0
        self.closed = False
        self._comms = {}

    def _line(self, rec: dict) -> None:
        try:
            self.fp.write(json.dumps(rec, separators=(",", ":"), allow_nan=False) + "\n")
            self.fp.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            raise VmabpfError(f"writing {self.name} failed: {e.strerror or e}") from None

    def write_header(self, header: dict) -> None:
        self._line(header)

    def write_event(self, ev: dict) -> None:
        t = ev["type"]
        if t == "lost":
            self.lost += int(ev.get("count", 0))
        elif t == "exit":
            # trace_loop does not know the comm of the process that exited; watch fills it the same way
            if not ev.get("comm"):
                ev["comm"] = self._comms.get(ev.get("pid"), "")
        else:
            comm = ev.get("comm")
            if comm:
                self._comms[ev.get("pid")] = comm
        self.events += 1
        self._line(ev)

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._line({"type": "footer", "events": self.events, "lost_events": self.lost, "end_time": clock_now(),
                        "reason": reason})
        finally:
            if self.close_fp:
                try:
                    self.fp.close()
                except OSError:
                    pass


def open_output(path: str, replace: bool = False):
    """(file object, display name, OutputFile or None) for -o PATH ('-' = stdout)."""
    if path == "-":
        return sys.stdout, "stdout", None
    from .outfile import OutputFile
    out = OutputFile(path, force=replace)
    return out.open(), path, out


@click.command()
@click.option("-o", "--output", required=True, metavar="FILE",
              help="the recording (JSON Lines), a new file; - for stdout")
@click.option("--replace", is_flag=True, help="replace FILE if it exists (once the new recording ends)")
@click.option("-p", "--pid", type=PID, help="record this process (TGID); default: every process")
@click.option("--children", is_flag=True, help="follow processes it forks")
@click.option("--duration", type=SECONDS, help="stop after this many seconds")
@click.option("--force", multiple=True, metavar="CAP=VARIANT",
              help="pin a capability to a variant of the attach plan (see doctor)")
def record(output, replace, pid, children, duration, force):
    """Record named-VMA events to FILE (JSON Lines: header, events, footer)
    for `vmabpf report`, here or on another machine.

    Ctrl-C, SIGTERM, --duration or the process exiting end the recording
    cleanly (footer written, exit 0).
    """
    one_line_errors(_record)(output, pid, children, duration, force, replace)


def _record(output, pid, children, duration, force, replace=False):
    if duration is not None and duration <= 0:
        raise VmabpfError("--duration must be a positive number of seconds", exit_code=2)
    if children and pid is None:
        raise VmabpfError("--children needs -p PID (without -p every process is recorded)", exit_code=2)
    from .escape import escape
    from .watch import StopFlag, missing_note, prepare, trace_loop

    pids = [pid] if pid is not None else []
    # the output first: an existing file is refused before anything else is tried
    fp, name, outfile = open_output(output, replace)
    writer = RecordWriter(fp, name, close_fp=False)
    why = "error"
    header_written = False
    try:
        kinfo, plan = prepare(pids, None, force)
        from .loader import Tracer

        with StopFlag() as stop, Tracer(plan, kinfo, writer.write_event, pids=pids, children=children,
                                        filter_pids=bool(pids)) as tracer:
            writer.write_header(make_header(plan.to_json(), kinfo.release, kinfo.arch, pids, children))
            header_written = True
            who = f"PID {pid}{' and its children' if children else ''}" if pids else "all processes"
            click.echo(f"Recording named-VMA events of {who} to {escape(name)}"
                       f"{missing_note(plan)}... Hit Ctrl-C to end.", err=True)
            why = trace_loop(tracer, writer.write_event, pids, stop, duration)
    finally:
        if header_written:
            writer.close(why)
            if outfile:
                outfile.commit()
        elif outfile:
            # nothing recorded (the BPF program did not load): remove the file we made, and only that
            outfile.discard()
    if why == "exit":
        click.echo(f"PID {pid} exited; detached.", err=True)
    click.echo(f"Recorded {writer.events} events ({writer.lost} lost) to {escape(name)}.", err=True)

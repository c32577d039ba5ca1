"""The recording: vmabpf's JSON Lines file format, its writer and its reader.

A recording is a header line, one line per event (exactly as `watch -j` prints
them, plus ``{"type": "lost", "count": N}`` records), and a footer line::

    {"type": "header", "format": "vmabpf-record", "version": 1, ...}
    {"type": "name_set", "ts": ..., "pid": ..., ...}
    ...
    {"type": "footer", "events": N, "lost_events": N, "end_time": {...}, "reason": "SIGINT"}

Every line is flushed when written, so a recording cut short (power loss,
SIGKILL) loses at most its last line; the reader skips a truncated last line.
The reader is in ``reader.py``.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from typing import IO, List

from . import __version__
from .errors import VmabpfError
from .outfile import OutputFile

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
    out = OutputFile(path, force=replace)
    return out.open(), path, out

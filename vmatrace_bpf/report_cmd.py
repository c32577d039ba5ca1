"""`vmabpf report`: the per-process report of recordings (`vmabpf record`) or `watch -j` output.

Events go through ``report.Aggregator``, the aggregation `watch` uses, so a
recording gives the same numbers offline as `watch` gave live.  The reader is
strict about what it feeds the aggregation (every field it uses has the right
JSON type) and lenient about the file: a malformed line is skipped with a
warning naming it, a truncated last line (recording cut by power loss) is
skipped with one warning; only a file that is not a recording at all is an
error.  It raises nothing but VmabpfError subclasses.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import sys
from typing import Callable, Dict, Iterator, List, Optional

import click

from .options import PID

from .errors import VmabpfError, one_line_errors
from .inputs import MAX_LINE
from .record import FORMAT, VERSION

MAX_WARNINGS = 10  # per file; the rest are counted


class RecordReadError(VmabpfError):
    """A file that cannot be read as a recording."""


class NotARecordError(RecordReadError):
    """Not a vmabpf recording (nor watch -j output) at all."""


# -- validation: exactly the fields (and JSON types) the aggregation and the exports use ----------------------

def _str_list(v) -> bool:
    if type(v) is not list:
        return False
    for w in v:
        if type(w) is not str:
            return False
    return True


# Each validator checks the fields the aggregation uses: pid and comm (written out in each: one call per
# event) and its own.  ts and tid only matter to the chrome export, which checks them itself.
def _v_name_set(ev: dict) -> bool:
    g = ev.get
    err = g("err")
    return (type(g("pid")) is int and type(g("comm", "")) is str
            and type(g("ret")) is int and type(g("name")) is str and (err is None or type(err) is str))


def _v_merge(ev: dict) -> bool:
    g = ev.get
    pc = g("prev_cause")
    nc = g("next_cause")
    return (type(g("pid")) is int and type(g("comm", "")) is str
            and type(g("outcome")) is str and type(g("source")) is str and type(g("name")) is str
            and type(pc) is list and type(nc) is list and (not pc or _str_list(pc)) and (not nc or _str_list(nc))
            and type(g("prev_name", "")) is str and type(g("next_name", "")) is str)


def _v_split(ev: dict) -> bool:
    g = ev.get
    return (type(g("pid")) is int and type(g("comm", "")) is str
            and type(g("ret")) is int and type(g("name")) is str and type(g("refcount")) is int)


def _v_fork(ev: dict) -> bool:
    g = ev.get
    lat = g("latency_ns")
    return (type(g("pid")) is int and type(g("comm", "")) is str
            and type(g("child_pid")) is int and type(lat) is int and 0 <= lat < _U64 and type(g("map_count")) is int
            and type(g("vmas_copied")) is int and type(g("named_copied")) is int)


def _v_name_obj(ev: dict) -> bool:
    g = ev.get
    return (type(g("pid")) is int and type(g("comm", "")) is str
            and type(g("ptr")) is int and type(g("name")) is str and type(g("refcount", 0)) is int)


def _v_exit(ev: dict) -> bool:
    g = ev.get
    return type(g("pid")) is int and type(g("comm", "")) is str


def _v_lost(ev: dict) -> bool:
    c = ev.get("count")
    ts = ev.get("ts", 0)
    return type(c) is int and 0 <= c < _U64 and type(ts) is int and 0 <= ts < _U64


VALIDATORS: Dict[str, Callable[[dict], bool]] = {
    "name_set": _v_name_set, "merge": _v_merge, "split": _v_split, "fork": _v_fork, "name_alloc": _v_name_obj,
    "name_free": _v_name_obj, "exit": _v_exit, "lost": _v_lost}
_U64 = 1 << 64


def valid_event(ev: dict) -> bool:
    """Is EV (a dict with a known event type) safe to aggregate and export?"""
    t = ev.get("type")
    v = VALIDATORS.get(t) if type(t) is str else None
    return v is not None and v(ev)


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    v = float(text)
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{text[:20]} is out of range")  # 1e400: would be printed as Infinity
    return v


# NaN/Infinity are not JSON (Python's json accepts them), nor is a number too large for a double:
# a recording never holds them, and the line is refused (with its number) instead
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)
_SCAN = _DECODER.scan_once
JSON_DECODER = "json"  # the standard library (the design keeps to it), one JSON array per batch of lines
_OBJ_COMMA = re.compile(rb"\}\s*,")
_BATCH_BYTES = 32768  # bytes read per batch: ~100 events


# -- reading ------------------------------------------------------------------------------------------------

class RecordFile:
    """One file's recordings: headers, footers, and the count of what was skipped.

    ``events()`` yields the valid events in file order."""

    def __init__(self, path: str, warn: Callable[[str], None] = None, max_warnings: int = MAX_WARNINGS,
                 start: int = 0, end: Optional[int] = None, part: bool = False):
        # START/END: a byte range starting at a line start; PART: a later part of a file read in parts
        # (it is known to be a recording; warnings are kept as (line in part, text) for the reader of part 0)
        self.start, self.end, self.part = start, end, part
        self.deferred: List[tuple] = []
        self.known = part
        self.lineno = 0
        self.path = path
        self.name = "stdin" if path == "-" else path
        self._warn = warn or (lambda msg: click.echo(f"vmabpf: warning: {msg}", err=True))
        self.max_warnings = max_warnings
        self.headers: List[dict] = []
        self.footers: List[dict] = []
        self.events_read = 0
        self.malformed = 0
        self.unknown = 0
        self.truncated = False
        self.warnings = 0

    def warn(self, msg: str) -> None:
        self.warnings += 1
        if self.warnings <= self.max_warnings:
            self._warn(msg)

    def warn_line(self, lineno: int, msg: str) -> None:
        if self.part:
            self.deferred.append((lineno, msg))
        else:
            self.warn(f"{self.name}:{lineno}: {msg}")

    def _open(self):
        if self.path == "-":
            return sys.stdin.buffer
        from .inputs import open_regular
        try:
            return open_regular(self.path, "a recording")
        except VmabpfError as e:
            raise RecordReadError(str(e)) from None

    def _not_record(self, lineno: int, raw: bytes, why: str) -> NotARecordError:
        if b"\0" in raw[:4096]:
            why = "binary data"
        return NotARecordError(f"{self.name} is not a vmabpf recording (line {lineno}: {why}); "
                               "record one with 'vmabpf record -o FILE' or 'vmabpf watch -j'")

    def events(self) -> Iterator[dict]:
        """The valid events of the file, in order; warnings for what is skipped."""
        buf: List[dict] = []
        for _ in self._scan(buf.append):
            yield from buf
            buf.clear()
        self.finish()

    def feed(self, sink: Callable[[dict], None]) -> None:
        """SINK(event) for each valid event of the file, in order (faster than events())."""
        for _ in self._scan(sink):
            pass
        self.finish()

    def _scan(self, sink: Callable[[dict], None]) -> Iterator[None]:
        """Read the file (or its byte range), one batch of lines per step."""
        f = self._open()
        try:
            if self.start:
                f.seek(self.start)
            # bytes of this part still to read (None: to the end); parts start at line starts
            to_read = None if self.end is None else self.end - self.start
            rest = b""
            while True:
                # whole lines, ~_BATCH_BYTES at a time; a line longer than MAX_LINE (an endless
                # line, a binary file) is refused instead of read into memory
                chunk = f.read(_BATCH_BYTES if to_read is None else min(_BATCH_BYTES, to_read)) \
                    if to_read is None or to_read > 0 else b""
                if to_read is not None:
                    to_read -= len(chunk)
                if not chunk:
                    if rest:
                        self._batch([rest], sink)  # a last line without its newline
                        yield None
                    break
                data = rest + chunk
                cut = data.rfind(b"\n") + 1
                rest = data[cut:]
                if len(rest) > MAX_LINE:
                    n = self.lineno + data.count(b"\n", 0, cut) + 1
                    raise NotARecordError(f"{self.name}: line {n} is longer than {MAX_LINE} bytes: "
                                          "not a vmabpf recording")
                if cut:
                    self._batch(io.BytesIO(data[:cut]).readlines(), sink)
                    yield None
        except OSError as e:
            raise RecordReadError(f"reading {self.name} failed: {e.strerror or e}") from None
        finally:
            if f is not sys.stdin.buffer:
                f.close()

    def part_state(self) -> dict:
        return {"headers": self.headers, "footers": self.footers, "events_read": self.events_read,
                "malformed": self.malformed, "unknown": self.unknown, "truncated": self.truncated,
                "deferred": self.deferred, "lines": self.lineno}

    def absorb(self, state: dict) -> None:
        """Take in what a later part of this file found (its lines follow ours)."""
        for lineno, msg in state["deferred"]:
            self.warn_line(self.lineno + lineno, msg)
        self.headers += state["headers"]
        self.footers += state["footers"]
        self.events_read += state["events_read"]
        self.malformed += state["malformed"]
        self.unknown += state["unknown"]
        self.truncated = self.truncated or state["truncated"]
        self.lineno += state["lines"]

    def finish(self) -> None:
        """The checks of the whole file, once read."""
        if not self.known:
            raise NotARecordError(f"{self.name} is empty, not a vmabpf recording")
        if self.warnings > self.max_warnings:
            self._warn(f"{self.name}: {self.warnings - self.max_warnings} more lines skipped")
        if self.headers and not self.footers and not self.truncated:
            self._warn(f"{self.name}: no footer: the recording did not end cleanly (killed?)")
        elif len(self.headers) == 1 and len(self.footers) == 1:
            said = self.footers[0].get("events")
            if type(said) is int and said != self.events_read:
                self._warn(f"{self.name}: the footer counts {said} events, {self.events_read} were read")

    def _decode(self, lines: List[bytes]) -> list:
        """The JSON value of each line (None where it is not JSON)."""
        if self.known:
            # Decode the batch as one JSON array when that is provably the same as line by line (about
            # twice as fast: one call, and the decoder's key cache spans the batch).  No line may hold a
            # top-level comma: then each element starts at a line start, and a count that matches proves it.
            for raw in lines:
                if not (raw.startswith(b'{"type":"') and raw.endswith(b"}\n")):
                    break
            else:
                block = b"".join(lines)
                if not _OBJ_COMMA.search(block):
                    try:
                        text = "[" + block.decode("utf-8")[:-1].replace("\n", ",") + "]"
                        objs, end = _SCAN(text, 0)
                    except (ValueError, RecursionError, StopIteration):
                        objs = end = None
                    # the array must be the whole text: a line ending in '],[{...}' would close it early
                    if end == len(text) and len(objs) == len(lines):
                        return objs
        objs = []
        for raw in lines:
            try:
                objs.append(_DECODER.decode(raw.decode("utf-8")))
            except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; Recursion: [[[[...
                objs.append(None)
        return objs

    def _batch(self, lines: List[bytes], sink: Callable[[dict], None]) -> None:
        first = self.lineno + 1
        self.lineno += len(lines)
        validators = VALIDATORS
        n = 0
        for i, ev in enumerate(self._decode(lines)):
            t = ev.get("type") if type(ev) is dict else None
            v = validators.get(t) if type(t) is str else None
            if v is not None:
                if v(ev):
                    n += 1
                    sink(ev)
                    continue
            elif t == "header" and ev.get("format") == FORMAT:
                self.known = True
                self._header(ev, first + i)
                continue
            elif t == "footer" and (self.known or n):
                self.footers.append(ev)
                continue
            elif t == "summary" and type(ev.get("processes")) is list:
                self.known = True  # watch -j's summaries: recomputed here from the events
                continue
            elif ev is None and not lines[i].strip():
                continue  # blank line
            if n:
                self.known = True
                self.events_read += n
                n = 0
            self._bad_line(lines[i], first + i, ev, t)
        if n:
            self.known = True
            self.events_read += n

    def _bad_line(self, raw: bytes, lineno: int, ev, t) -> None:
        """A line that is not a usable record: fatal before the file showed it is a recording."""
        if not self.known:
            if not raw.endswith(b"\n") and raw.lstrip().startswith(b'{"type":"header"'):
                raise NotARecordError(f"{self.name}: the recording was cut short inside its header "
                                      "(no events in it)")
            raise self._not_record(lineno, raw, "not JSON" if ev is None else "not a vmabpf event")
        if not raw.endswith(b"\n"):
            self.truncated = True
            self.warn_line(lineno, "last line is incomplete (recording cut short?); skipped")
        elif type(t) is str and t not in VALIDATORS and t not in ("lost", "header", "footer", "summary"):
            self.unknown += 1
            self.warn_line(lineno, f"unknown event type {t[:40]!r}; skipped")
        else:
            self.malformed += 1
            self.warn_line(lineno, "malformed line skipped")

    def _header(self, ev: dict, lineno: int) -> None:
        v = ev.get("version")
        if type(v) is int and v > VERSION:
            self.warn_line(lineno, f"recording format version {v} is newer than this vmabpf reads ({VERSION}); "
                           "reading what it can")
        self.headers.append(ev)

    def info(self) -> dict:
        """What the report says about this file."""
        hdrs = []
        for h in self.headers:
            hdrs.append({k: h.get(k) for k in ("tool_version", "kernel_release", "arch", "start_time",
                                                 "pid_filter", "children")})
        ftr = [{k: f.get(k) for k in ("events", "lost_events", "end_time", "reason")} for f in self.footers]
        return {"path": self.name, "recordings": hdrs, "footers": ftr, "events": self.events_read,
                "malformed_lines": self.malformed, "unknown_lines": self.unknown, "truncated": self.truncated}


def read_events(paths: List[str], warn: Callable[[str], None] = None) -> Iterator[dict]:
    """All valid events of PATHS in order (convenience for tests)."""
    for p in paths:
        yield from RecordFile(p, warn).events()


# -- rendering ----------------------------------------------------------------------------------------------

def render_table(summary: dict, files: List[dict]) -> str:
    from .render import escape, summary_table
    out = []
    for f in files:
        for h in f["recordings"]:
            st = h.get("start_time")
            start = st.get("wall") if isinstance(st, dict) else None
            pids = h.get("pid_filter")
            who = ("PID " + ", ".join(str(x) for x in pids)) if isinstance(pids, list) and pids else "all processes"
            out.append(escape(f"{f['path']}: kernel {h.get('kernel_release')} ({h.get('arch')}), vmabpf "
                              f"{h.get('tool_version')}, {who}, started {start}"))
        for ft in f["footers"]:
            out.append(escape(f"  ended by {ft.get('reason')}: {ft.get('events')} events, "
                              f"{ft.get('lost_events')} lost"))
        if not f["recordings"]:
            out.append(escape(f"{f['path']}: {f['events']} events (no header: watch -j output)"))
        skipped = f["malformed_lines"] + f["unknown_lines"] + (1 if f["truncated"] else 0)
        if skipped:
            out.append(f"  {skipped} lines skipped" + (" (incomplete last line)" if f["truncated"] else ""))
    out.append("")
    out.append(summary_table(summary))  # the same text as watch's summary
    return "\n".join(out)


def _plain(v) -> bool:
    """A value that goes into trace JSON as is (no floats: a fuzzed 1e999 would be Infinity, not JSON)."""
    t = type(v)
    if t is int or t is str or t is bool or v is None:
        return True
    return t is list and all(type(x) is int or type(x) is str for x in v)


CHROME_LABEL = {"name_set": "name", "merge": "merge", "split": "split", "name_alloc": "name alloc",
                "name_free": "name free", "exit": "exit"}


def chrome_trace(events: List[dict], meta: Optional[dict] = None) -> dict:
    """Chrome trace-event JSON (ui.perfetto.dev, chrome://tracing): each process a track (pid),
    forks as complete ("X") slices from dup_mmap's start to its end, the rest as thread-scoped
    instants.  ts/dur in microseconds from the earliest event."""
    from .render import event_detail
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
            if t in ("name_set", "split", "name_alloc", "name_free") and isinstance(ev.get("name"), str):
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


# -- the command --------------------------------------------------------------------------------------------

PARALLEL_MIN_BYTES = 16 << 20  # below this, starting worker processes costs more than it saves
PART_MIN_BYTES = 8 << 20


def _read_part(path: str, start: int, end: int):
    """In a worker process: one later part of a big file -> (Aggregator, what the reader found)."""
    from .report import Aggregator
    agg = Aggregator(track_frees=True)
    rf = RecordFile(path, start=start, end=end, part=True)
    for _ in rf._scan(agg.add):
        pass
    return agg, rf.part_state()


def _part_bounds(path: str, size: int, n: int) -> List[int]:
    """N+1 byte offsets splitting PATH at line starts (fewer when lines are long)."""
    bounds = [0]
    with open(path, "rb") as f:
        for i in range(1, n):
            f.seek(max(size * i // n, bounds[-1]))
            f.readline()
            pos = f.tell()
            if pos > bounds[-1] and pos < size:
                bounds.append(pos)
    return bounds + [size]


def jobs_for(path: str, jobs: Optional[int] = None) -> int:
    """How many processes read PATH: one per idle CPU for big regular files (VMABPF_REPORT_JOBS=N sets it)."""
    if path == "-":
        return 1
    try:
        size = os.stat(path).st_size
        if not stat.S_ISREG(os.stat(path).st_mode):
            return 1
    except OSError:
        return 1  # RecordFile says why
    if jobs is None:
        env = os.environ.get("VMABPF_REPORT_JOBS", "")
        jobs = int(env) if env.isdigit() and int(env) > 0 else None
    if jobs is None:
        if size < PARALLEL_MIN_BYTES:
            return 1
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
        try:  # only CPUs that are idle: on busy ones the parts just compete (measured: 10% slower)
            busy = int(os.getloadavg()[0] + 0.5)
        except OSError:
            busy = 0
        jobs = min(max(1, cpus - busy), 8)
    return max(1, min(jobs, size // PART_MIN_BYTES if jobs > 1 and size >= PART_MIN_BYTES else 1))


def _read_parallel(rf: RecordFile, agg, n: int) -> bool:
    """Read RF's file in N parts: part 0 here, the others in worker processes, merged in file order
    (Aggregator.merge: the same numbers as one pass).  False if it could not (then read it in one pass)."""
    import multiprocessing
    size = os.stat(rf.path).st_size
    bounds = _part_bounds(rf.path, size, n)
    if len(bounds) < 3:
        return False
    try:
        ctx = multiprocessing.get_context("fork")
    except ValueError:
        return False
    rf.end = bounds[1]
    with ctx.Pool(len(bounds) - 2) as pool:
        later = pool.starmap_async(_read_part, [(rf.path, a, b) for a, b in zip(bounds[1:-1], bounds[2:])])
        for _ in rf._scan(agg.add):
            pass
        if not rf.known:
            return False  # part 0 was blank lines only: let one pass decide what the file is
        for part_agg, state in later.get():
            agg.merge(part_agg)
            rf.absorb(state)
    rf.finish()
    return True


def build_report(paths: List[str], pid: Optional[int] = None, keep_events: bool = False,
                 warn: Callable[[str], None] = None, jobs: Optional[int] = None, top: Optional[int] = None):
    """(summary dict, per-file info, events kept for export) of PATHS; with TOP, only the TOP most
    active processes are summarised."""
    agg, files, kept = aggregate(paths, pid, keep_events, warn, jobs)
    return agg.summary([pid] if pid is not None else None, top), files, kept


def aggregate(paths: List[str], pid: Optional[int] = None, keep_events: bool = False,
              warn: Callable[[str], None] = None, jobs: Optional[int] = None):
    """(Aggregator, per-file info, events kept for export) of PATHS.  Big files are read by several
    processes (JOBS; default one per CPU) unless the events are kept."""
    from .report import Aggregator
    agg = Aggregator()
    add = agg.add
    kept: List[dict] = []
    files = []
    for path in paths:
        rf = RecordFile(path, warn)
        if keep_events:
            def add_keep(ev):
                add(ev)
                if pid is None or ev.get("pid") == pid or ev["type"] == "lost":
                    kept.append(ev)
            rf.feed(add_keep)
        else:
            n = jobs_for(path, jobs)
            if n > 1:
                part_agg = Aggregator(track_frees=True)  # merged after earlier files: its frees count too
                if _read_parallel(rf, part_agg, n):
                    agg.merge(part_agg)
                    files.append(rf.info())
                    continue
                rf = RecordFile(path, warn)
            rf.feed(add)
        files.append(rf.info())
    return agg, files, kept


@click.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("-p", "--pid", type=PID, help="only this process")
@click.option("-j", "--json", "as_json", is_flag=True, help="same as --format json")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "chrome"]), default=None,
              help="table (default), json, or chrome (trace-event JSON for ui.perfetto.dev / chrome://tracing)")
@click.option("-o", "--output", metavar="OUT", help="write the report to OUT instead of stdout (a new file)")
@click.option("--replace", is_flag=True, help="with -o: replace OUT if it exists (once the new one is complete)")
@click.option("--top", type=click.IntRange(min=0), default=20, show_default=True,
              help="the table shows the N most active processes (0: all); -j always gives every one")
def report(files, pid, as_json, fmt, output, replace, top):
    """The per-process report of recordings made by `vmabpf record` (or of
    `vmabpf watch -j` output): names set and rejected, name objects, merges and
    why they failed, the VMAs names cost, splits, forks and name sharing.

    Needs no BPF and no root: record on the device, report anywhere.
    """
    one_line_errors(_report)(files, pid, as_json, fmt, output, replace, top)


def json_report(agg, infos: List[dict], pid: Optional[int], write: Callable[[str], None]) -> None:
    """report -j: {"type": "report", "files": [...], "processes": [...], "lost_events": N}, written one
    process at a time (a million processes are never all in memory as summaries)."""
    write('{"type": "report", "files": ' + json.dumps(infos, allow_nan=False) + ', "processes": [')
    for i, summ in enumerate(agg.iter_summaries([pid] if pid is not None else None)):
        write(("," if i else "") + "\n " + json.dumps(summ, allow_nan=False))
    write("\n], " + f'"lost_events": {int(agg.lost)}' + "}\n")


def _report(files, pid, as_json, fmt, output, replace=False, top=20):
    if as_json and fmt not in (None, "json"):
        raise VmabpfError(f"-j and --format {fmt} disagree; use one", exit_code=2)
    fmt = fmt or ("json" if as_json else "table")
    out = None
    if output and output != "-":
        from .outfile import OutputFile
        out = OutputFile(output, force=replace)  # refused at once if it exists, before the reading
        fp = out.open()
    else:
        fp = sys.stdout
    try:
        agg, infos, kept = aggregate(list(files), pid, keep_events=(fmt == "chrome"))
        if fmt == "json":
            json_report(agg, infos, pid, fp.write)
        elif fmt == "chrome":
            fp.write(json.dumps(chrome_trace(kept, {"files": [i["path"] for i in infos]}), separators=(",", ":"),
                                allow_nan=False) + "\n")
        else:
            fp.write(render_table(agg.summary([pid] if pid is not None else None, top or None), infos) + "\n")
        fp.flush()
    except OSError as e:
        if out:
            out.discard()
        if isinstance(e, BrokenPipeError):
            raise
        raise VmabpfError(f"cannot write {output or 'stdout'}: {e.strerror or e}") from None
    except BaseException:
        if out:
            out.discard()
        raise
    if out:
        out.commit()
        from .escape import escape
        click.echo(f"Wrote {fmt} report to {escape(output)}.", err=True)

"""Reading recordings (``recording.py`` has the format) and `watch -j` output into the aggregation.

The reader is strict about what it feeds the aggregation (every field it uses
has the right JSON type) and lenient about the file: a malformed line is
skipped with a warning naming it, a truncated last line (recording cut by power
loss) is skipped with one warning; only a file that is not a recording at all is
an error.  It raises nothing but VmabpfError subclasses.  Big files are read by
several processes, merged in file order (``Aggregator.merge``).

Longer than the other modules (~420 lines) because one reader's parts share the
state of ``RecordFile``: strict validation, batched decoding (the speed of
`report` is here), and reading one file in parts in parallel.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import re
import stat
import sys
from typing import Callable, Iterator, List, Optional

import click

from .aggregate import Aggregator
from .events import VALIDATORS, all_valid
from .errors import VmabpfError
from .inputs import MAX_LINE, STRICT_JSON, open_regular
from .recording import FORMAT, VERSION

MAX_WARNINGS = 10  # per file; the rest are counted


class RecordReadError(VmabpfError):
    """A file that cannot be read as a recording."""


class NotARecordError(RecordReadError):
    """Not a vmabpf recording (nor watch -j output) at all."""




_DECODER = STRICT_JSON
_SCAN = _DECODER.scan_once
_OBJ_COMMA = re.compile(rb"\}\s*,")
_BATCH_BYTES = 32768  # bytes read per batch: ~100 events
_DICT_ONLY = {dict}


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
        for _ in self._scan(buf.extend):
            yield from buf
            buf.clear()
        self.finish()

    def feed(self, sink: Callable[[dict], None]) -> None:
        """SINK(event) for each valid event of the file, in order (faster than events())."""
        def take(evs: List[dict]) -> None:
            for ev in evs:
                sink(ev)
        self.feed_batches(take)

    def feed_batches(self, take: Callable[[List[dict]], None]) -> None:
        """TAKE(events) for each batch of valid events of the file, in order (the fastest:
        ``Aggregator.add_many``)."""
        for _ in self._scan(take):
            pass
        self.finish()

    def _scan(self, take: Callable[[List[dict]], None]) -> Iterator[None]:
        """Read the file (or its byte range), one batch of lines per step: TAKE(its valid events)."""
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
                        self._batch([rest], take)  # a last line without its newline
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
                    self._block(data[:cut] if cut < len(data) else data, take)
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

    def _block(self, block: bytes, take: Callable[[List[dict]], None]) -> None:
        """BLOCK: whole lines (the last ends in a newline)."""
        n = block.count(b"\n")
        objs = self._decode_array(block, n)
        if objs is not None and all_valid(objs):
            # the common case, without a Python step per line: every line a valid event
            self.lineno += n
            self.known = True
            self.events_read += n
            take(objs)
            return
        self._batch(io.BytesIO(block).readlines(), take, objs)

    def _decode_array(self, block: bytes, n: int) -> Optional[list]:
        """The JSON values of the N lines of BLOCK decoded as one JSON array, when that is provably the
        same as line by line (about twice as fast: one call, and the decoder's key cache spans the
        batch); else None."""
        # Only once the file is known to be a recording.  The proof: if every element of the array is an
        # object, the comma after each ends it, and a comma that was in a line (not a newline we turned
        # into one) would follow a '}' in that line, which _OBJ_COMMA refuses.  So all top-level commas are
        # ours, and if there are N elements then all N-1 of ours are top level: each element is one line.
        if not self.known or _OBJ_COMMA.search(block):
            return None
        try:
            text = "[" + block.decode("utf-8")[:-1].replace("\n", ",") + "]"
            objs, end = _SCAN(text, 0)
        except (ValueError, RecursionError, StopIteration):
            return None
        # the array must be the whole text: a line ending in '],[{...}' would close it early
        if end == len(text) and len(objs) == n and set(map(type, objs)) == _DICT_ONLY:
            return objs
        return None

    def _decode(self, lines: List[bytes]) -> list:
        """The JSON value of each line (None where it is not JSON)."""
        objs = self._decode_array(b"".join(lines), len(lines)) if lines and lines[-1].endswith(b"\n") else None
        if objs is not None:
            return objs
        objs = []
        for raw in lines:
            try:
                objs.append(_DECODER.decode(raw.decode("utf-8")))
            except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; Recursion: [[[[...
                objs.append(None)
        return objs

    def _batch(self, lines: List[bytes], take: Callable[[List[dict]], None], objs: Optional[list] = None) -> None:
        """Lines one by one (OBJS: their values if already decoded)."""
        first = self.lineno + 1
        self.lineno += len(lines)
        validators = VALIDATORS
        good: List[dict] = []
        n = 0
        for i, ev in enumerate(self._decode(lines) if objs is None else objs):
            t = ev.get("type") if type(ev) is dict else None
            v = validators.get(t) if type(t) is str else None
            if v is not None:
                if v(ev):
                    n += 1
                    good.append(ev)
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
        if good:
            take(good)

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


# -- reading big files in parallel ---------------------------------------------------------------------------

PARALLEL_MIN_BYTES = 16 << 20  # below this, starting worker processes costs more than it saves
PART_MIN_BYTES = 8 << 20


def _read_part(path: str, start: int, end: int):
    """In a worker process: one later part of a big file -> (Aggregator, what the reader found)."""
    agg = Aggregator(track_frees=True)
    rf = RecordFile(path, start=start, end=end, part=True)
    for _ in rf._scan(agg.add_many):
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
        for _ in rf._scan(agg.add_many):
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
    agg, files, kept = read_recordings(paths, pid, keep_events, warn, jobs)
    return agg.summary([pid] if pid is not None else None, top), files, kept


def read_recordings(paths: List[str], pid: Optional[int] = None, keep_events: bool = False,
              warn: Callable[[str], None] = None, jobs: Optional[int] = None):
    """(Aggregator, per-file info, events kept for export) of PATHS.  Big files are read by several
    processes (JOBS; default one per CPU) unless the events are kept."""
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
            rf.feed_batches(agg.add_many)
        files.append(rf.info())
    return agg, files, kept



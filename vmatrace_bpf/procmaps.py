"""/proc/PID/maps, smaps and smaps_rollup without BPF: reading a live process or a saved
file, and the names the rest of the package uses from the modules that do the work:

- vma.py: the Vma type (compact: slots, values in one tuple, keys shared), ProcMaps, the checks
  of one line and of a whole text;
- smapsparse.py: the parser (a streaming fast path and the line-by-line reference it is tested
  against);
- mapstotals.py: the per-name / per-class / per-family table and the fragment runs;
- categories.py: the classes of `dumpsys meminfo` and the allocator families.

Everything works on text, so a live process, a saved file and a device over adb go through the
same code.  Errors a user can act on raise VmabpfError.
"""

from __future__ import annotations

import os
from functools import partial
from itertools import chain
from typing import Iterator, Tuple

from .errors import VmabpfError
from .inputs import open_regular, read_regular
from .mapstotals import (SMAPS_COLUMNS, SORT_KEYS, Fragments, Row, Run, find_runs, fragments, group,
                         mergeable_neighbours)
from .smapsparse import parse, parse_stream
from .vma import UNNAMED, ProcMaps, Vma, decode, parse_header

__all__ = ["MAX_SMAPS_BYTES", "SMAPS_COLUMNS", "SORT_KEYS", "UNNAMED", "Fragments", "ProcMaps", "Row", "Run", "Vma",
           "VmabpfError", "decode", "find_runs", "fragments", "group", "iter_file", "mergeable_neighbours", "parse",
           "parse_file", "parse_header", "parse_pid", "parse_stream", "read_file", "read_pid"]

MAX_SMAPS_BYTES = 4 << 30  # a saved smaps of 1M VMAs is ~1 GiB


def read_file(path: str) -> str:
    """The text of a saved maps/smaps file; VmabpfError if it cannot be read."""
    try:
        data = read_regular(path, "a maps/smaps file", MAX_SMAPS_BYTES)
    except OSError as e:
        raise VmabpfError(f"{path}: cannot read: {e.strerror or e}") from None
    return decode(data)


def read_pid(pid: int, proc: str = "/proc") -> Tuple[str, str]:
    """(text, path) of /proc/PID/smaps (or maps where smaps does not exist), read whole (for a
    snapshot that keeps it)."""
    return _from_pid(pid, proc, lambda first, f, path: (decode(first + f.read()), path))


def parse_pid(pid: int, proc: str = "/proc") -> "ProcMaps":
    """/proc/PID/smaps (or maps) parsed as it is read, 1 MiB at a time (no copy of the whole text)."""
    def stream(first: bytes, f, path: str) -> ProcMaps:
        return parse_stream(chain((first,), iter(partial(f.read, 1 << 20), b"")), path)
    return _from_pid(pid, proc, stream)


def _from_pid(pid: int, proc: str, use):
    """USE(first piece, file, path) on /proc/PID/smaps (maps where there is no smaps), with the
    errors a user can act on for a PID that is not there, not readable or has no memory map."""
    if pid <= 0:
        raise VmabpfError(f"invalid PID {pid}")
    if not os.path.isdir(os.path.join(proc, str(pid))):
        raise VmabpfError(f"no process with PID {pid}")
    last_error = None
    for name in ("smaps", "maps"):
        path = os.path.join(proc, str(pid), name)
        try:
            with open(path, "rb") as f:
                first = f.read(1 << 20)
                if not first:
                    raise VmabpfError(f"PID {pid} has no memory map (a kernel thread, or it is exiting)")
                return use(first, f, path)
        except FileNotFoundError as e:
            last_error = e
            if not os.path.isdir(os.path.join(proc, str(pid))):
                raise VmabpfError(f"no process with PID {pid} (it exited)")
            continue
        except PermissionError:
            raise VmabpfError(f"cannot read {path}: permission denied (PID {pid} belongs to another user); "
                              "run as root (sudo vmabpf maps ...)")
        except ProcessLookupError:
            raise VmabpfError(f"no process with PID {pid} (it exited)")
    raise VmabpfError(f"cannot read {proc}/{pid}/smaps or maps: {last_error}")


def parse_file(path: str) -> ProcMaps:
    """Parse a saved maps/smaps file, streamed from disk (never whole in memory)."""
    with open_regular(path, "a maps/smaps file") as f:
        def chunks() -> Iterator[bytes]:
            total = 0
            while True:
                try:
                    b = f.read(1 << 20)
                except OSError as e:
                    raise VmabpfError(f"{path}: cannot read: {e.strerror or e}") from None
                if not b:
                    return
                total += len(b)
                if total > MAX_SMAPS_BYTES:
                    raise VmabpfError(f"{path} is larger than {MAX_SMAPS_BYTES >> 20} MiB: not a maps/smaps file")
                yield b
        first = f.peek(1) if hasattr(f, "peek") else b"x"
        if not first:
            raise VmabpfError(f"{path}: empty (no VMAs)")
        return parse_stream(chunks(), path)


def iter_file(path: str, size: int = 1 << 20) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while True:
            b = f.read(size)
            if not b:
                return
            yield b

"""Reading files a user names (saved kallsyms, BTF, configs, smaps, recordings): bounded.

Only regular files are read where a file is expected (a FIFO, a device such as /dev/zero or a
directory gets one clear line instead of a hang or a process that grows until it is killed),
and no line may be longer than a limit far above anything real.
"""

from __future__ import annotations

import json
import os
import stat
from typing import BinaryIO, Iterator

from .errors import VmabpfError

def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    v = float(text)
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{text[:20]} is out of range")  # 1e400: would be printed as Infinity
    return v


# NaN/Infinity are not JSON (Python's json accepts them), nor is a number too large for a double: the
# files vmabpf writes (recordings, maps snapshots) never hold them, so a file that does is refused
STRICT_JSON = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)

MAX_LINE = 1 << 20  # bytes; the longest real lines (smaps paths, recordings' merge events) are < 1 KiB


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str, what: str) -> BinaryIO:
    """PATH opened for reading in binary, if it is a regular file; else VmabpfError saying why.
    WHAT names what the file should be ("a saved kallsyms")."""
    try:
        # O_NONBLOCK: opening a FIFO nobody writes to must not block before the check below
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise VmabpfError(f"{path}: no such file") from None
    except PermissionError:
        raise VmabpfError(f"{path}: permission denied") from None
    except OSError as e:
        raise VmabpfError(f"{path}: cannot read: {e.strerror or e}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise VmabpfError(f"{path} is {_kind(st.st_mode)}, not {what}")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_regular(path: str, what: str, limit: int) -> bytes:
    """The whole of regular file PATH, refused when over LIMIT bytes."""
    too_big = VmabpfError(f"{path} is larger than {limit >> 20} MiB: not {what}")
    with open_regular(path, what) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise too_big
        # not f.read(limit + 1): that allocates LIMIT bytes first (8 GiB for a snapshot: MemoryError in a
        # small guest).  The size read as stat gives it (one read), then on until EOF: a file that grew, or
        # one that says 0 (/proc), in 1 MiB steps
        parts, total, want = [], 0, size + 1 if size else 1 << 20
        while total <= limit:
            chunk = f.read(min(want, limit + 1 - total))
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
            want = 1 << 20
    if total > limit:
        raise too_big
    return parts[0] if len(parts) == 1 else b"".join(parts)


def lines(f: BinaryIO, name: str, what: str, limit: int = MAX_LINE) -> Iterator[bytes]:
    """The lines of F (newline kept), refusing one longer than LIMIT bytes."""
    n = 0
    while True:
        line = f.readline(limit + 1)
        if not line:
            return
        n += 1
        if len(line) > limit:
            raise VmabpfError(f"{name}: line {n} is longer than {limit} bytes: not {what}")
        yield line

"""/proc/PID/maps, smaps and smaps_rollup without BPF: parsing, per-name totals,
the classes of `dumpsys meminfo`, and the fragmentation that names cause.

The text is what fs/proc/task_mmu.c prints.  show_map_vma() writes one header
line per VMA::

    start-end perms pgoff major:minor inode [padding name]

where the name is a file path (``\\n`` escaped as ``\\012``, `` (deleted)``
appended once unlinked), ``[heap]``, ``[stack]``, ``[vdso]``, ``[vvar]``, an
anonymous VMA's name ``[anon:NAME]`` (struct anon_vma_name, 5.17+; Android's
older out-of-tree patch prints the same) or ``[anon_shmem:NAME]`` (6.2+, shmem
VMAs).  smaps adds ``Key: N kB`` lines after each header (``Size``, ``Rss``,
``Pss``, ..., ``THPeligible:`` and ``ProtectionKey:`` without a unit), Android
kernels a ``Name:`` line, and ``VmFlags:`` last.  smaps_rollup is one pseudo-VMA
named ``[rollup]`` covering the whole address space.

Everything here works on text, so a live process, a saved file and a device over
adb go through the same code.  Errors a user can act on raise VmabpfError.

Longer than 350 lines because the reading, the parser (a streaming fast path and the
line-by-line reference it is tested against), the per-name table and the fragment runs
share the compact Vma type and its invariants; the classes and allocator
families are in categories.py, snapshots in snapshot.py, across-process views in
mapsall.py.
"""

from __future__ import annotations

import gc
import os
import re
from array import array
from collections import Counter
from functools import partial
from itertools import chain, repeat
from operator import attrgetter, floordiv, itemgetter, sub
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from .categories import category, family
from .errors import VmabpfError
from .inputs import open_regular, read_regular

#: The columns of the per-name table, as smaps names them (all kB).
SMAPS_COLUMNS = ("Rss", "Pss", "Private_Dirty", "Swap", "SwapPss")

#: How the per-name table calls a VMA without any name (AOSP showmap: "[anon]").
UNNAMED = "[anon]"

_HEADER_RE = re.compile(r"([0-9a-f]+)-([0-9a-f]+) ([r-][w-][x-][ps]) ([0-9a-f]+) "
                        r"([0-9a-f]+:[0-9a-f]+) ([0-9]+)(?: (.*))?\Z")
# A header starts with a lower-case hex digit (the kernel prints %08lx); smaps
# keys start with an upper-case letter (AnonHugePages, FilePmdMapped, ...).
_HEXCHARS = frozenset("0123456789abcdef")


class _Keys(dict):
    """The smaps keys of a VMA in file order -> their index in its values; one object shared
    by every VMA with the same keys (the kernel prints the same for all of a process)."""

    __slots__ = ()


_KEYS_CACHE: Dict[Tuple[str, ...], _Keys] = {}
_NO_KEYS = _Keys()


def _keys_for(keys: Tuple[str, ...]) -> _Keys:
    k = _KEYS_CACHE.get(keys)
    if k is None:
        k = _KEYS_CACHE[keys] = _Keys((key, i) for i, key in enumerate(keys))
    return k


class Vma:
    """One VMA as /proc/PID/{maps,smaps} shows it (the kernel's vm_area_struct).

    Compact (slots; the smaps numbers in one array, their keys shared): 100k VMAs fit in
    tens of MB.  ``fields`` builds a dict; ``get(key)`` reads one value without one."""

    __slots__ = ("vm_start", "vm_end", "perms", "pgoff", "dev", "inode", "name", "line", "_keys", "_vals",
                 "vm_flags", "_extra")

    def __init__(self, vm_start: int, vm_end: int, perms: str, pgoff: int, dev: str, inode: int, name: str,
                 line: int, fields: Optional[Dict[str, int]] = None, vm_flags: Optional[Tuple[str, ...]] = None,
                 extra: Optional[Dict[str, str]] = None):
        self.vm_start = vm_start
        self.vm_end = vm_end
        self.perms = perms              # "rw-p": r, w, x, then p (private) or s (shared)
        self.pgoff = pgoff              # file offset in bytes; 0 for anonymous VMAs
        self.dev = dev                  # "major:minor", "00:00" when there is no file
        self.inode = inode
        self.name = name                # as printed (may be ""), " (deleted)" kept
        self.line = line                # line number of the header (1-based)
        self.set_fields(fields or {})
        self.vm_flags = vm_flags        # smaps "VmFlags:" mnemonics
        self._extra = extra or None     # other smaps lines, e.g. "Name"

    def set_fields(self, fields: Dict[str, int]) -> None:
        self._keys = _keys_for(tuple(fields)) if fields else _NO_KEYS
        try:
            self._vals = array("q", fields.values()) if fields else ()
        except OverflowError:                       # not a real smaps number; keep it exact anyway
            self._vals = tuple(fields.values())

    @property
    def fields(self) -> Dict[str, int]:
        """smaps "Key: N kB" (and unit-less ints), in file order (a new dict)."""
        vals = self._vals
        return {k: vals[i] for k, i in self._keys.items()}

    def get(self, key: str, default: int = 0) -> int:
        i = self._keys.get(key)
        return default if i is None else self._vals[i]

    @property
    def extra(self) -> Dict[str, str]:
        return self._extra if self._extra is not None else {}

    def _tuple(self):
        return (self.vm_start, self.vm_end, self.perms, self.pgoff, self.dev, self.inode, self.name, self.line,
                self.fields, self.vm_flags, self.extra)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vma) and self._tuple() == other._tuple()

    def __repr__(self) -> str:
        return f"Vma({self.vm_start:x}-{self.vm_end:x} {self.perms} {self.name!r} line {self.line})"

    @property
    def size_kb(self) -> int:
        """Virtual size in kB (vm_end - vm_start)."""
        return (self.vm_end - self.vm_start) // 1024

    @property
    def display_name(self) -> str:
        """The name for grouping: UNNAMED for a VMA without one."""
        return self.name if self.name else UNNAMED

    @property
    def is_private(self) -> bool:
        return self.perms[3] == "p"

    @property
    def is_anon_named_or_unnamed(self) -> bool:
        """An anonymous private VMA that a user name could be set on:
        unnamed, or ``[anon:NAME]`` (not [heap], [stack], [vdso], shmem)."""
        return (self.inode == 0 and self.perms[3] == "p" and self.dev in ("00:00", "0:0")
                and (self.name == "" or self.name.startswith("[anon:")))

    @property
    def deleted(self) -> bool:
        return self.name.endswith(" (deleted)")


@dataclass
class ProcMaps:
    """A parsed maps, smaps or smaps_rollup text."""

    vmas: List[Vma]
    kind: str                       # "maps", "smaps" or "rollup"
    source: str = ""

    @property
    def has_fields(self) -> bool:
        return self.kind in ("smaps", "rollup")


# -- reading -----------------------------------------------------------------------
MAX_SMAPS_BYTES = 4 << 30  # a saved smaps of 1M VMAs is ~1 GiB


def decode(data: bytes) -> str:
    # Paths are bytes; keep what is not UTF-8 (shown escaped later).
    return data.decode("utf-8", "surrogateescape")


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


# -- parsing ----------------------------------------------------------------------
def _fail(source: str, lineno: int, what: str, text: str = "") -> "VmabpfError":
    # raw: the one-line error printer (errors.fail) escapes the whole message once
    shown = text[:60] + ("..." if len(text) > 60 else "")
    where = f"{source}: line {lineno}" if source else f"line {lineno}"
    return VmabpfError(f"{where}: {what}" + (f": '{shown}'" if text else ""))


def parse_header(line: str) -> Optional[Tuple[int, int, str, int, str, int, str]]:
    """The fields of a maps/smaps header line, or None if LINE is not one."""
    m = _HEADER_RE.match(line)
    if m is None:
        return None
    start, end, perms, pgoff, dev, inode, rest = m.groups()
    name = rest.lstrip(" ") if rest else ""
    return int(start, 16), int(end, 16), perms, int(pgoff, 16), dev, int(inode), name


def _parse_field(fields: Dict[str, int], extra: Dict[str, str], key: str, value: str) -> Optional[str]:
    """Store one smaps "Key: value" line; the VmFlags value is returned (else None); raises
    ValueError if the value is malformed."""
    if key == "VmFlags":
        return value
    if key == "Name":
        extra["Name"] = value.strip()
        return None
    parts = value.split()
    if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
        fields[key] = int(parts[0])
        return None
    if len(parts) == 1 and parts[0].isdigit():      # THPeligible, ProtectionKey
        fields[key] = int(parts[0])
        return None
    if not parts and key[:1].isupper():
        extra[key] = ""
        return None
    if key in ("THPeligible", "ProtectionKey") or (parts and parts[-1] == "kB"):
        raise ValueError(key)
    extra[key] = value.strip()                      # a line from a future kernel
    return None


_FLAGS_CACHE: Dict[str, Tuple[str, ...]] = {}


def _flags(value: str) -> Tuple[str, ...]:
    f = _FLAGS_CACHE.get(value)
    if f is None:
        if len(_FLAGS_CACHE) > 10_000:
            _FLAGS_CACHE.clear()
        f = _FLAGS_CACHE[value] = tuple(value.split())
    return f


_CACHE_MAX = 1 << 16


class _Ints(dict):
    """str -> int, converting each distinct value once (most smaps values repeat: 0, 4, 8 kB, ...);
    equal values share one int object."""

    __slots__ = ()

    def __missing__(self, s: str) -> int:
        v = self[s] = int(s)
        return v


class _Mids(dict):
    """"perms pgoff dev inode" of a header -> (perms, pgoff, dev, inode), parsed once per distinct
    text (anonymous VMAs all print "rw-p 00000000 00:00 0"); the strings are shared by the VMAs."""

    __slots__ = ()

    def __missing__(self, mid: str):
        perms, pgoff, dev, inode = mid.split(" ")
        v = self[mid] = (perms, int(pgoff, 16), dev, int(inode))
        return v


class _Parser:
    """The parse of one text, fed in pieces that end at a VMA header (streaming: no copy of the
    whole file).  Each VMA is first tried with a regular expression made from the first VMA's
    smaps keys (the kernel prints the same keys, in the same order, for every VMA of a process),
    matching the header and all its lines at once; anything that does not match exactly goes
    line by line through the checks that name the bad line.  The fast path converts each distinct
    value text once (_Ints, _Mids): 0.67 -> 0.47 s for 100k VMAs (benchmarks/maps_parse.py)."""

    def __init__(self, source: str, fast: bool = True):
        self.source = source
        self.vmas: List[Vma] = []
        self.lineno = 0
        self.fast_re = None
        self.fast_lines = 0
        self.want_fast = fast
        self.names: Dict[str, str] = {}
        self.seen_text = False
        self.pending = ""

    # the checks every VMA passes, fast or slow
    def _add(self, start, end, perms, pgoff, dev, inode, name, lineno, line_text) -> Vma:
        if end < start:
            raise _fail(self.source, lineno, "VMA ends before it starts", line_text())
        vmas = self.vmas
        if vmas and start < vmas[-1].vm_end:
            # the kernel prints one process's VMAs in address order, never overlapping: two files
            # pasted together (or an edited one) would be counted twice
            prev = vmas[-1]
            raise _fail(self.source, lineno, f"VMA overlaps or comes before the one on line {prev.line} "
                        f"({prev.vm_start:x}-{prev.vm_end:x}): not one process's maps in address order",
                        line_text())
        name = self.names.setdefault(name, name)
        v = Vma(start, end, perms, pgoff, dev, inode, name, lineno)
        vmas.append(v)
        return v

    def feed(self, text: str) -> None:
        if "\0" in text:
            raise VmabpfError(f"{self.source or 'input'}: binary data, not a /proc/PID/maps or smaps text")
        if not self.seen_text:
            if not text.strip():                    # only blanks so far: empty, unless more follows
                self.pending += text
                return
            self.seen_text = True
            text, self.pending = self.pending + text, ""
        pos, n = 0, len(text)
        fast = self.fast_re
        if fast is not None and self._bulk(text):
            return
        while pos < n:
            if fast is not None:
                m = fast.match(text, pos)
                if m is not None:
                    g = m.groups()
                    lineno = self.lineno + 1
                    perms, pgoff, dev, inode = self.mids[g[2]]
                    v = self._add(int(g[0], 16), int(g[1], 16), perms, pgoff, dev, inode,
                                  g[3].lstrip(" ") if g[3] else "", lineno, lambda: m.group(0).split("\n", 1)[0])
                    v._keys = self.fast_keys
                    v._vals = tuple(map(self.ints.__getitem__, g[4:-1]))
                    v.vm_flags = _flags(g[-1])
                    self.lineno += self.fast_lines
                    pos = m.end()
                    continue
            nxt = _next_header(text, pos)
            self._slow(text[pos:nxt])
            pos = nxt
            if fast is None and self.want_fast and len(self.vmas) >= 1:
                fast = self.fast_re = self._make_fast()

    def _bulk(self, text: str) -> bool:
        """All of TEXT at once if every line of it is a VMA in the first VMA's shape: findall
        (one C loop); the matches start at line starts and each takes the same number of whole
        lines, so equal line counts prove no line was skipped.  False: nothing was taken."""
        if not text.endswith("\n"):
            return False
        found = self.bulk_re.findall(text)
        if len(found) * self.fast_lines != text.count("\n"):
            return False
        keys, names, flags, vmas, new = self.fast_keys, self.names, _flags, self.vmas, object.__new__
        mids, ints = self.mids, self.ints.__getitem__
        lineno = self.lineno + 1
        step = self.fast_lines
        prev_end = vmas[-1].vm_end if vmas else -1
        start_len = len(vmas)
        append = vmas.append
        for g in found:
            start, end = int(g[0], 16), int(g[1], 16)
            if end < start or start < prev_end:
                del vmas[start_len:]                # let the line-by-line path name the line
                return False
            name = g[3]
            if name[:1] == " ":
                name = name.lstrip(" ")
            v = new(Vma)                            # no __init__: every slot is set here
            v.vm_start, v.vm_end, (v.perms, v.pgoff, v.dev, v.inode) = start, end, mids[g[2]]
            v.name, v.line, v._keys, v._vals = names.setdefault(name, name), lineno, keys, tuple(map(ints, g[4:-1]))
            v.vm_flags, v._extra = flags(g[-1]), None
            append(v)
            prev_end = end
            lineno += step
        if len(mids) > _CACHE_MAX:
            mids.clear()
        if len(self.ints) > _CACHE_MAX:
            self.ints.clear()
        self.lineno = lineno - 1
        return True

    def _slow(self, block: str) -> None:
        """One VMA (or a few lines) line by line, with the error that names the line."""
        lines = block.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        cur: Optional[Vma] = self.vmas[-1] if self.vmas else None
        fields: Optional[Dict[str, int]] = None
        extra: Dict[str, str] = {}
        for line in lines:
            self.lineno += 1
            lineno = self.lineno
            if line.endswith("\r"):                # saved from an old adb shell (a pty): CRLF
                line = line[:-1]
            if not line:
                raise _fail(self.source, lineno, "empty line inside a maps/smaps text")
            if line[0] in _HEXCHARS:
                hdr = parse_header(line)
                if hdr is None:
                    raise _fail(self.source, lineno, "not a /proc/PID/maps or smaps line", line)
                self._finish(cur, fields, extra)
                cur = self._add(*hdr, lineno, lambda: line)
                fields, extra = {}, {}
                continue
            key, sep, value = line.partition(":")
            if not sep or cur is None or not key or not (key[0].isalpha() and key.replace("_", "").isalnum()):
                raise _fail(self.source, lineno, "not a /proc/PID/maps or smaps line", line)
            if fields is None:                      # lines continuing the VMA of the last block
                fields, extra = cur.fields, dict(cur.extra)
            try:
                flags = _parse_field(fields, extra, key, value)
            except ValueError:
                raise _fail(self.source, lineno, f"malformed smaps field {key}", line) from None
            if flags is not None:
                cur.vm_flags = _flags(flags)
        self._finish(cur, fields, extra)

    @staticmethod
    def _finish(cur: Optional[Vma], fields, extra) -> None:
        if cur is not None and fields is not None:
            cur.set_fields(fields)
            cur._extra = extra or None

    def _make_fast(self):
        """The regular expression of a whole VMA with the first VMA's keys, or None (a maps
        text, or one with Name or other non-number lines: line by line then)."""
        first = self.vmas[0]
        if first.extra:
            return None
        keys = list(first.fields)
        parts = [r"([0-9a-f]+)-([0-9a-f]+) ([r-][w-][x-][ps] [0-9a-f]+ [0-9a-f]+:[0-9a-f]+ [0-9]+)"
                 r"(?: ([^\n]*))?(?<!\r)\n"]
        for k in keys:
            unit = "" if k in ("THPeligible", "ProtectionKey") else " kB"
            parts.append(re.escape(k) + r": *([0-9]+)" + unit + r"\n")
        if first.vm_flags is None:
            return None                             # every smaps since 2.6.x ends with VmFlags (3.8+)
        parts.append(r"VmFlags:([^\n]*)(?<!\r)\n")
        self.fast_keys = first._keys
        self.mids, self.ints = _Mids(), _Ints()
        self.fast_lines = 1 + len(keys) + 1
        self.bulk_re = re.compile("(?m)^" + "".join(parts))
        return re.compile("".join(parts))

    def finish(self) -> "ProcMaps":
        if not self.vmas:
            if not self.seen_text:
                raise VmabpfError(f"{self.source or 'input'}: empty (no VMAs)")
            raise _fail(self.source, 1, "not a /proc/PID/maps or smaps line")
        kind = _check_complete(self.vmas, self.source)
        return ProcMaps(self.vmas, kind, self.source)


def _next_header(text: str, pos: int) -> int:
    """Where the next VMA header after POS starts (a line starting with a hex digit), or the end."""
    i = pos
    n = len(text)
    while True:
        i = text.find("\n", i)
        if i < 0 or i + 1 >= n:
            return n
        if text[i + 1] in _HEXCHARS:
            return i + 1
        i += 1


def _last_header(text: str) -> int:
    """Where the last VMA header in TEXT starts (0 if none after the first line)."""
    i = len(text) - 1
    while True:
        i = text.rfind("\n", 0, i)
        if i < 0:
            return 0
        if i + 1 < len(text) and text[i + 1] in _HEXCHARS:
            return i + 1


def parse(text: str, source: str = "", fast: bool = True) -> ProcMaps:
    """Parse maps, smaps or smaps_rollup TEXT; SOURCE names it in errors; FAST=False:
    line by line only (the reference the fast path is tested against).

    Raises VmabpfError for an empty text, a binary file, a line that is neither
    a VMA header nor a smaps field, and a truncated smaps (a VMA at the end
    without the fields every other VMA has).
    """
    if not text.strip():
        raise VmabpfError(f"{source or 'input'}: empty (no VMAs)")
    p = _Parser(source, fast)
    with _no_gc():
        p.feed(text)
    return p.finish()


class _no_gc:
    """The cyclic GC off while VMAs are made: they hold no cycles, and the collector's passes
    over 100k new objects cost ~20% of the parse (measured with benchmarks/maps_parse.py)."""

    def __enter__(self):
        self.was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc):
        if self.was:
            gc.enable()


def parse_stream(chunks: Iterable[bytes], source: str = "", fast: bool = True) -> ProcMaps:
    """Parse what CHUNKS (bytes, any sizes) hold without joining them: each piece is cut at
    the last VMA header in it, decoded and parsed; only the rest is carried over."""
    p = _Parser(source, fast)
    with _no_gc():
        return _stream(p, chunks)


def _stream(p: "_Parser", chunks: Iterable[bytes]) -> ProcMaps:
    carry = b""
    for chunk in chunks:
        if not chunk:
            continue
        buf = carry + chunk if carry else chunk
        nl = buf.rfind(b"\n")
        if nl < 0:
            carry = buf
            continue
        text = decode(buf[:nl + 1])
        cut = _last_header(text)
        if cut == 0:
            carry = buf
            continue
        head = text[:cut]
        carry = text[cut:].encode("utf-8", "surrogateescape") + buf[nl + 1:]
        p.feed(head)
    if carry:
        p.feed(decode(carry))
    if not p.vmas and not p.seen_text:
        raise VmabpfError(f"{p.source or 'input'}: empty (no VMAs)")
    return p.finish()


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


def _check_complete(vmas: Sequence[Vma], source: str) -> str:
    """The kind of text ("maps", "smaps", "rollup"); raises if a smaps is truncated."""
    first = vmas[0]
    if len(vmas) == 1 and first.name == "[rollup]" and first.fields:
        return "rollup"
    if not first.fields and first.vm_flags is None:
        for v in vmas:
            if v.fields or v.vm_flags is not None:
                raise _fail(source, v.line, "smaps fields after a VMA without any: mixed or damaged file")
        return "maps"
    expected = set(first.fields) | ({"VmFlags"} if first.vm_flags is not None else set())
    fk, ff = first._keys, first.vm_flags is not None
    for v in vmas:
        if v._keys is fk and (v.vm_flags is not None) == ff:
            continue                                # the same keys object: the same fields
        have = set(v.fields) | ({"VmFlags"} if v.vm_flags is not None else set())
        missing = expected - have
        if missing:
            last = v is vmas[-1]
            what = ("truncated smaps: the last VMA lacks " if last else "VMA lacks smaps fields ")
            raise _fail(source, v.line, what + ", ".join(sorted(missing)))
    return "smaps"


# -- per-name table -----------------------------------------------------------------
_START, _END, _KEYS_OF, _VALS_OF = (attrgetter(a) for a in ("vm_start", "vm_end", "_keys", "_vals"))


@dataclass
class Row:
    """What a group of VMAs (one name or one class) adds up to."""

    name: str
    vmas: int = 0
    size: int = 0                   # virtual kB
    values: Dict[str, int] = field(default_factory=lambda: {c: 0 for c in SMAPS_COLUMNS})

    def add_all(self, vmas: Sequence[Vma]) -> None:
        """Add VMAS (C-level sums: one pass per column, not one Python step per VMA and column)."""
        self.vmas += len(vmas)
        self.size += sum(map(floordiv, map(sub, map(_END, vmas), map(_START, vmas)), repeat(1024, len(vmas))))
        values = self.values
        if len({id(k) for k in map(_KEYS_OF, vmas)}) == 1:   # the parse's fast path: one shared keys object
            keys, vals = vmas[0]._keys, list(map(_VALS_OF, vmas))
            for col in SMAPS_COLUMNS:
                i = keys.get(col)
                if i is not None:
                    values[col] += sum(map(itemgetter(i), vals))
            return
        for v in vmas:
            for col in SMAPS_COLUMNS:
                values[col] += v.get(col)

    def to_json(self) -> Dict:
        return {"name": self.name, "vmas": self.vmas, "size_kb": self.size,
                **{c.lower() + "_kb": v for c, v in self.values.items()}}


SORT_KEYS = {
    "size": lambda r: (-r.size, r.name),
    "rss": lambda r: (-r.values["Rss"], r.name),
    "pss": lambda r: (-r.values["Pss"], r.name),
    "vmas": lambda r: (-r.vmas, r.name),
    "name": lambda r: r.name,
}


def group(pm: ProcMaps, by: str = "name", sort: str = "pss") -> Tuple[List[Row], Row]:
    """Rows per name (per class with BY="category", per allocator family with BY="family")
    sorted by SORT, and the total row."""
    if sort not in SORT_KEYS:
        raise VmabpfError(f"unknown sort key {sort!r} (one of {', '.join(SORT_KEYS)})")
    if by == "family":
        key = family
    elif by == "name":
        def key(name: str) -> str:
            return name or UNNAMED
    else:
        cache: Dict[str, str] = {}

        def key(name: str) -> str:
            c = cache.get(name)
            if c is None:
                c = cache[name] = category(name)
            return c
    per_name: Dict[str, List[Vma]] = {}
    for v in pm.vmas:
        same = per_name.get(v.name)
        if same is None:
            same = per_name[v.name] = []
        same.append(v)
    rows: Dict[str, Row] = {}
    for name, vmas in per_name.items():
        k = key(name)
        row = rows.get(k)
        if row is None:
            row = rows[k] = Row(k)
        row.add_all(vmas)
    total = Row("TOTAL")
    for r in rows.values():
        total.vmas += r.vmas
        total.size += r.size
        for c in SMAPS_COLUMNS:
            total.values[c] += r.values[c]
    return sorted(rows.values(), key=SORT_KEYS[sort]), total


# -- fragments ---------------------------------------------------------------------
@dataclass
class Run:
    """Adjacent anonymous private VMAs that only names (or invisible state) keep apart:
    each one ends where the next starts, all with the same permissions and VmFlags."""

    vmas: List[Vma]

    @property
    def start(self) -> int:
        return self.vmas[0].vm_start

    @property
    def end(self) -> int:
        return self.vmas[-1].vm_end

    def boundaries(self) -> Iterable[Tuple[Vma, Vma]]:
        return zip(self.vmas, self.vmas[1:])

    @property
    def name_boundaries(self) -> int:
        """Boundaries where the names differ: merges that the names prevent."""
        return sum(1 for a, b in self.boundaries() if a.name != b.name)

    @property
    def same_name_boundaries(self) -> int:
        """Boundaries with equal names: something else (anon_vma, vm_pgoff,
        userfaultfd context, mempolicy, ...) keeps these VMAs apart."""
        return sum(1 for a, b in self.boundaries() if a.name == b.name)

    @property
    def would_remain(self) -> int:
        """VMAs left if every name in the run were the same."""
        return 1 + self.same_name_boundaries

    def to_json(self) -> Dict:
        return {"start": self.start, "end": self.end, "vmas": len(self.vmas), "would_remain": self.would_remain,
                "perms": self.vmas[0].perms, "names": [v.display_name for v in self.vmas]}


def mergeable_neighbours(a: Vma, b: Vma) -> bool:
    """Could A and B be one VMA but for their names (as far as maps shows)?

    Both anonymous and private (vma_is_anonymous()), B starting where A ends,
    the same permissions and the same VmFlags (vm_flags; when the text has
    them).  What maps does not show (anon_vma, vm_pgoff, uffd context,
    mempolicy) is not compared.
    """
    return (a.vm_end == b.vm_start and a.perms == b.perms and a.vm_flags == b.vm_flags
            and a.is_anon_named_or_unnamed and b.is_anon_named_or_unnamed)


def find_runs(pm: ProcMaps) -> List[Run]:
    """Maximal runs of two or more VMAs joined by mergeable_neighbours()."""
    runs: List[Run] = []
    vmas = pm.vmas
    start = 0                       # where the current run starts
    for j in range(1, len(vmas)):
        a, b = vmas[j - 1], vmas[j]
        # mergeable_neighbours(a, b), with A's anonymity known when it already joined the run
        if (a.vm_end == b.vm_start and a.perms == b.perms and a.vm_flags == b.vm_flags
                and b.is_anon_named_or_unnamed and (j - 1 > start or a.is_anon_named_or_unnamed)):
            continue
        if j - start > 1:
            runs.append(Run(vmas[start:j]))
        start = j
    if len(vmas) - start > 1:
        runs.append(Run(vmas[start:]))
    return runs


@dataclass
class Fragments:
    """What --fragments reports."""

    name_runs: List[Run]            # runs with at least one boundary between different names
    pairs: Counter                  # (left name, right name) -> boundaries
    same_name_splits: Counter       # name -> boundaries between two VMAs of that name
    vmas_total: int

    @property
    def vmas_in_runs(self) -> int:
        return sum(len(r.vmas) for r in self.name_runs)

    @property
    def would_remain(self) -> int:
        return sum(r.would_remain for r in self.name_runs)

    def to_json(self) -> Dict:
        return {
            "vmas_total": self.vmas_total,
            "vmas_in_runs": self.vmas_in_runs,
            "would_remain": self.would_remain,
            "runs": [r.to_json() for r in self.name_runs],
            "pairs": [{"left": a, "right": b, "boundaries": n} for (a, b), n in self.pairs.most_common()],
            "same_name_splits": [{"name": n, "boundaries": c} for n, c in self.same_name_splits.most_common()],
        }


def fragments(pm: ProcMaps) -> Fragments:
    """Runs that differ only in name, the name pairs behind them, and same-name splits."""
    name_runs: List[Run] = []
    pairs: Counter = Counter()
    same: Counter = Counter()
    for run in find_runs(pm):
        for a, b in run.boundaries():
            if a.name == b.name:
                same[a.display_name] += 1
            else:
                pairs[(a.display_name, b.display_name)] += 1
        if run.name_boundaries:
            name_runs.append(run)
    return Fragments(name_runs, pairs, same, len(pm.vmas))

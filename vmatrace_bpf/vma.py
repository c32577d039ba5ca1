"""One VMA as /proc/PID/{maps,smaps,smaps_rollup} prints it, and the checks of one line.

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

The compact Vma type, the parsed text (ProcMaps), the header and field checks the
line-by-line parse makes, and the completeness check of a whole text; the parser is in
smapsparse.py, the per-name table and fragment runs in mapstotals.py, reading in procmaps.py.
"""

from __future__ import annotations

import re
from array import array
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from .errors import VmabpfError

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


def decode(data: bytes) -> str:
    # Paths are bytes; keep what is not UTF-8 (shown escaped later).
    return data.decode("utf-8", "surrogateescape")


def _fail(source: str, lineno: int, what: str, text: str = "") -> VmabpfError:
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

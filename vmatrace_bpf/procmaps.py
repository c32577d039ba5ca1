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

Longer than 350 lines because the reading, the parser, the per-name table and the
fragment runs share the Vma type and its invariants; the classes and allocator
families are in categories.py, snapshots in snapshot.py, across-process views in
mapsall.py.
"""

from __future__ import annotations

import os
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .categories import category_of_vma_list
from .errors import VmabpfError

#: The columns of the per-name table, as smaps names them (all kB).
SMAPS_COLUMNS = ("Rss", "Pss", "Private_Dirty", "Swap", "SwapPss")

#: How the per-name table calls a VMA without any name (AOSP showmap: "[anon]").
UNNAMED = "[anon]"

_HEADER_RE = re.compile(r"([0-9a-f]+)-([0-9a-f]+) ([r-][w-][x-][ps]) ([0-9a-f]+) "
                        r"([0-9a-f]+:[0-9a-f]+) ([0-9]+)(?: (.*))?\Z")
# A header starts with a lower-case hex digit (the kernel prints %08lx); smaps
# keys start with an upper-case letter (AnonHugePages, FilePmdMapped, ...).
_HEXCHARS = frozenset("0123456789abcdef")


@dataclass
class Vma:
    """One VMA as /proc/PID/{maps,smaps} shows it (the kernel's vm_area_struct)."""

    vm_start: int
    vm_end: int
    perms: str                      # "rw-p": r, w, x, then p (private) or s (shared)
    pgoff: int                      # file offset in bytes; 0 for anonymous VMAs
    dev: str                        # "major:minor", "00:00" when there is no file
    inode: int
    name: str                       # as printed (may be ""), " (deleted)" kept
    line: int                       # line number of the header (1-based)
    fields: Dict[str, int] = field(default_factory=dict)   # smaps "Key: N kB" (and unit-less ints)
    vm_flags: Optional[Tuple[str, ...]] = None              # smaps "VmFlags:" mnemonics
    extra: Dict[str, str] = field(default_factory=dict)     # other smaps lines, e.g. "Name"

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
        return (self.inode == 0 and self.is_private and self.dev in ("00:00", "0:0")
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
    from .inputs import read_regular
    try:
        data = read_regular(path, "a maps/smaps file", MAX_SMAPS_BYTES)
    except OSError as e:
        raise VmabpfError(f"{path}: cannot read: {e.strerror or e}") from None
    return decode(data)


def read_pid(pid: int, proc: str = "/proc") -> Tuple[str, str]:
    """(text, path) of /proc/PID/smaps (or maps where smaps does not exist)."""
    if pid <= 0:
        raise VmabpfError(f"invalid PID {pid}")
    if not os.path.isdir(os.path.join(proc, str(pid))):
        raise VmabpfError(f"no process with PID {pid}")
    last_error = None
    for name in ("smaps", "maps"):
        path = os.path.join(proc, str(pid), name)
        try:
            with open(path, "rb") as f:
                data = f.read()
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
        if not data:
            raise VmabpfError(f"PID {pid} has no memory map (a kernel thread, or it is exiting)")
        return decode(data), path
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


def _parse_field(vma: Vma, key: str, value: str) -> bool:
    """Store one smaps "Key: value" line in VMA; False if the value is malformed."""
    if key == "VmFlags":
        vma.vm_flags = tuple(value.split())
        return True
    if key == "Name":
        vma.extra["Name"] = value.strip()
        return True
    parts = value.split()
    if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
        vma.fields[key] = int(parts[0])
        return True
    if len(parts) == 1 and parts[0].isdigit():      # THPeligible, ProtectionKey
        vma.fields[key] = int(parts[0])
        return True
    if not parts and key[:1].isupper():
        vma.extra[key] = ""
        return True
    if key in ("THPeligible", "ProtectionKey") or (parts and parts[-1] == "kB"):
        return False
    vma.extra[key] = value.strip()                  # a line from a future kernel
    return True


def parse(text: str, source: str = "") -> ProcMaps:
    """Parse maps, smaps or smaps_rollup TEXT; SOURCE names it in errors.

    Raises VmabpfError for an empty text, a binary file, a line that is neither
    a VMA header nor a smaps field, and a truncated smaps (a VMA at the end
    without the fields every other VMA has).
    """
    if not text.strip():
        raise VmabpfError(f"{source or 'input'}: empty (no VMAs)")
    if "\0" in text:
        raise VmabpfError(f"{source or 'input'}: binary data, not a /proc/PID/maps or smaps text")
    vmas: List[Vma] = []
    cur: Optional[Vma] = None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for lineno, line in enumerate(lines, 1):
        if line.endswith("\r"):                     # saved from an old adb shell (a pty): CRLF
            line = line[:-1]
        if not line:
            raise _fail(source, lineno, "empty line inside a maps/smaps text")
        if line[0] in _HEXCHARS:
            hdr = parse_header(line)
            if hdr is None:
                raise _fail(source, lineno, "not a /proc/PID/maps or smaps line", line)
            start, end, perms, pgoff, dev, inode, name = hdr
            if end < start:
                raise _fail(source, lineno, "VMA ends before it starts", line)
            if vmas and start < vmas[-1].vm_end:
                # the kernel prints one process's VMAs in address order, never overlapping: two files
                # pasted together (or an edited one) would be counted twice
                raise _fail(source, lineno, f"VMA overlaps or comes before the one on line {vmas[-1].line} "
                            f"({vmas[-1].vm_start:x}-{vmas[-1].vm_end:x}): not one process's maps in address order",
                            line)
            cur = Vma(start, end, perms, pgoff, dev, inode, name, lineno)
            vmas.append(cur)
            continue
        key, sep, value = line.partition(":")
        if not sep or cur is None or not key or not (key[0].isalpha() and key.replace("_", "").isalnum()):
            raise _fail(source, lineno, "not a /proc/PID/maps or smaps line", line)
        if not _parse_field(cur, key, value):
            raise _fail(source, lineno, f"malformed smaps field {key}", line)
    kind = _check_complete(vmas, source)
    return ProcMaps(vmas, kind, source)


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
    for v in vmas:
        have = set(v.fields) | ({"VmFlags"} if v.vm_flags is not None else set())
        missing = expected - have
        if missing:
            last = v is vmas[-1]
            what = ("truncated smaps: the last VMA lacks " if last else "VMA lacks smaps fields ")
            raise _fail(source, v.line, what + ", ".join(sorted(missing)))
    return "smaps"


# -- per-name table -----------------------------------------------------------------
@dataclass
class Row:
    """What a group of VMAs (one name or one class) adds up to."""

    name: str
    vmas: int = 0
    size: int = 0                   # virtual kB
    values: Dict[str, int] = field(default_factory=lambda: {c: 0 for c in SMAPS_COLUMNS})

    def add(self, vma: Vma) -> None:
        self.vmas += 1
        self.size += vma.size_kb
        for col in SMAPS_COLUMNS:
            self.values[col] += vma.fields.get(col, 0)

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
    if by == "family":
        from .categories import family

        def key(v: Vma) -> str:
            return family(v.name)
    else:
        key = (lambda v: v.display_name) if by == "name" else category_of_vma_list(pm.vmas)
    rows: "OrderedDict[str, Row]" = OrderedDict()
    total = Row("TOTAL")
    for v in pm.vmas:
        k = key(v)
        row = rows.get(k)
        if row is None:
            row = rows[k] = Row(k)
        row.add(v)
        total.add(v)
    if sort not in SORT_KEYS:
        raise VmabpfError(f"unknown sort key {sort!r} (one of {', '.join(SORT_KEYS)})")
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
    cur: List[Vma] = []
    for v in pm.vmas:
        if cur and mergeable_neighbours(cur[-1], v):
            cur.append(v)
            continue
        if len(cur) > 1:
            runs.append(Run(cur))
        cur = [v]
    if len(cur) > 1:
        runs.append(Run(cur))
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

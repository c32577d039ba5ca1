"""What a parsed text adds up to: the per-name (per-class, per-family) table and the runs of
adjacent anonymous VMAs that only names keep apart (--fragments)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import repeat
from operator import attrgetter, floordiv, itemgetter, sub
from typing import Dict, Iterable, List, Sequence, Tuple

from .categories import category, family
from .errors import VmabpfError
from .vma import UNNAMED, ProcMaps, Vma

#: The columns of the per-name table, as smaps names them (all kB).
SMAPS_COLUMNS = ("Rss", "Pss", "Private_Dirty", "Swap", "SwapPss")


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

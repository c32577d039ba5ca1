"""forklat's histograms: aggregated in the kernel (BPF hash maps forklat_hist/forklat_totals), read out here."""

from __future__ import annotations

from typing import Dict, List, Tuple

from .events import decode_name

FORKLAT_BY = {"vmas": 1, "named": 2, "comm": 3}  # FORKLAT_BY in the BPF program


def section_label(by: str, section: int, comm: str) -> str:
    if by == "vmas":
        low, high = (1 << section) >> 1, (1 << section) - 1  # log2 of map_count: exact bounds, not log2_bucket's
        return f"map_count {low} -> {high}"
    if by == "named":
        return "with named VMAs" if section else "without named VMAs"
    return f"comm = {comm}"


def fork_histograms(tracer, by: str) -> List[Tuple[int, str, List[int], int, int]]:
    """[(sort key, section label, log2 bucket counts, fork count, total ns)], cleared after reading."""
    hist, totals = tracer.table("forklat_hist"), tracer.table("forklat_totals")
    sections: Dict[Tuple[int, str], List[int]] = {}
    for k, v in hist.items():
        key = (k.section, decode_name(bytes(k.comm)))
        vals = sections.setdefault(key, [0] * 65)
        if k.slot < 65:
            vals[k.slot] += v.value
    sums = {(k.section, decode_name(bytes(k.comm))): (v.count, v.sum_ns) for k, v in totals.items()}
    hist.clear()
    totals.clear()
    out = []
    for key in sorted(sections):
        count, total = sums.get(key, (sum(sections[key]), 0))
        out.append((key[0], section_label(by, key[0], key[1]), sections[key], count, total))
    return out

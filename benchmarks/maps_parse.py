#!/usr/bin/env python3
"""Time `vmabpf maps` parsing and analysis of a large smaps (not a unit test).

    python3 benchmarks/maps_parse.py [LINES]

Builds a smaps text of about LINES lines (default 100,000) by repeating the
VMAs of a real capture (tests/data/smaps/glibc-k7.2.smaps) at increasing
addresses, with a run of alternating names every few VMAs, then times
parse(), the per-name and per-class tables and --fragments.
"""

import os
import re
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from vmatrace_bpf.procmaps import fragments, group, parse  # noqa: E402

SAMPLE = os.path.join(REPO, "tests", "data", "smaps", "glibc-k7.2.smaps")
HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+)( .*)$")


def blocks(text):
    cur = []
    for line in text.splitlines():
        if HEADER.match(line) and cur:
            yield cur
            cur = []
        cur.append(line)
    yield cur


def build(lines_wanted):
    with open(SAMPLE) as f:
        sample = list(blocks(f.read()))
    out, n, addr, i = [], 0, 0x10000000, 0
    while n < lines_wanted:
        b = sample[i % len(sample)]
        m = HEADER.match(b[0])
        size = int(m.group(2), 16) - int(m.group(1), 16)
        rest = m.group(3)
        if i % 7 in (1, 2, 3):      # a run of differently named anonymous VMAs
            rest = " rw-p 00000000 00:00 0                          [anon:bench-%d]" % (i % 2)
            b = [b[0]] + [ln for ln in sample[0][1:]]
            b[-1] = "VmFlags: rd wr mr mw me ac "
        out.append(f"{addr:x}-{addr + size:x}{rest}")
        out.extend(b[1:])
        n += len(b)
        addr += size
        i += 1
    return "\n".join(out) + "\n"


def main():
    lines = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    text = build(lines)
    t0 = time.perf_counter()
    pm = parse(text, "bench")
    t1 = time.perf_counter()
    group(pm, by="name")
    group(pm, by="category")
    t2 = time.perf_counter()
    f = fragments(pm)
    t3 = time.perf_counter()
    print(f"{text.count(chr(10)):,} lines, {len(pm.vmas):,} VMAs, {len(f.name_runs):,} name runs")
    print(f"parse {t1 - t0:.3f} s, tables {t2 - t1:.3f} s, fragments {t3 - t2:.3f} s, total {t3 - t0:.3f} s")


if __name__ == "__main__":
    main()

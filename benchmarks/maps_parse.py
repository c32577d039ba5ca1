#!/usr/bin/env python3
"""Time and memory of `vmabpf maps` parsing and analysis of a large smaps (not a unit test).

    python3 benchmarks/maps_parse.py [--vmas N] [--startup PID]

Builds a smaps of N VMAs (default 100,000) by repeating the VMAs of a real capture
(tests/data/smaps/glibc-k7.2.smaps) at increasing addresses, with a run of alternating
names every few VMAs, writes it to a temporary file, and then -- each in a fresh
process, side by side -- parses it with the streaming fast path (parse_stream, what
`maps --file` and `maps PID` use) and with the line-by-line reference path (fast=False,
the pre-issue-14 algorithm on the same compact Vma), then runs the per-name and per-class
tables and --fragments.  Peak memory is the child's ru_maxrss minus that of a child that
only imported the modules.  --startup PID also times `vmabpf --help` and `vmabpf maps PID`
(5 runs each, best and median).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def build(vmas_wanted, out):
    with open(SAMPLE) as f:
        sample = list(blocks(f.read()))
    addr, i = 0x10000000, 0
    while i < vmas_wanted:
        b = sample[i % len(sample)]
        m = HEADER.match(b[0])
        size = int(m.group(2), 16) - int(m.group(1), 16)
        rest = m.group(3)
        if i % 7 in (1, 2, 3):      # a run of differently named anonymous VMAs
            rest = " rw-p 00000000 00:00 0                          [anon:bench-%d]" % (i % 2)
            b = [b[0]] + [ln for ln in sample[0][1:]]
            b[-1] = "VmFlags: rd wr mr mw me ac "
        out.write(f"{addr:x}-{addr + size:x}{rest}\n")
        out.write("\n".join(b[1:]) + ("\n" if len(b) > 1 else ""))
        addr += size
        i += 1


CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from vmatrace_bpf.procmaps import fragments, group, iter_file, parse, parse_stream, read_file
mode, path = sys.argv[2], sys.argv[3]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if mode == "stream":
    pm = parse_stream(iter_file(path), "bench")
elif mode == "slow":
    pm = parse(read_file(path), "bench", fast=False)
else:
    pm = None
t1 = time.perf_counter()
if pm is not None:
    group(pm, by="name"); group(pm, by="category"); group(pm, by="family")
t2 = time.perf_counter()
f = fragments(pm) if pm is not None else None
t3 = time.perf_counter()
print(json.dumps({"vmas": len(pm.vmas) if pm else 0, "runs": len(f.name_runs) if f else 0, "parse": t1 - t0,
                  "tables": t2 - t1, "fragments": t3 - t2, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "base_kb": base}))
"""


def child(mode, path):
    out = subprocess.run([sys.executable, "-c", CHILD, REPO, mode, path], check=True, stdout=subprocess.PIPE,
                         text=True).stdout
    return json.loads(out)


def timed(argv, runs=5):
    ts = []
    env = dict(os.environ, PYTHONPATH=REPO)
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env, cwd=REPO)
        ts.append(time.perf_counter() - t0)
    return min(ts), statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vmas", type=int, default=100_000)
    ap.add_argument("--startup", type=int, metavar="PID", help="also time `vmabpf maps PID` and `vmabpf --help`")
    a = ap.parse_args()
    with tempfile.NamedTemporaryFile("w", suffix=".smaps", delete=False) as f:
        build(a.vmas, f)
        path = f.name
    try:
        size = os.path.getsize(path)
        base = child("import", path)["maxrss_kb"]
        print(f"{a.vmas:,} VMAs, {size / 1e6:.0f} MB of smaps; interpreter + modules {base / 1024:.0f} MB")
        res = {}
        for mode in ("stream", "slow"):
            r = res[mode] = child(mode, path)
            print(f"{mode:6}: parse {r['parse']:.3f} s, tables {r['tables']:.3f} s, fragments {r['fragments']:.3f} s, "
                  f"total {r['parse'] + r['tables'] + r['fragments']:.3f} s; peak {r['maxrss_kb'] / 1024:.0f} MB "
                  f"({(r['maxrss_kb'] - base) / 1024:.0f} MB above the modules); {r['runs']:,} name runs")
        print(f"stream/slow: parse {res['stream']['parse'] / res['slow']['parse']:.2f}x time, "
              f"peak above modules {(res['stream']['maxrss_kb'] - base) / max(1, res['slow']['maxrss_kb'] - base):.2f}x")
    finally:
        os.unlink(path)
    if a.startup:
        vm = [sys.executable, "-m", "vmatrace_bpf"]
        for what, argv in (("vmabpf --help", vm + ["--help"]), (f"vmabpf maps {a.startup}", vm + ["maps", str(a.startup)]),
                           ("python3 -c pass", [sys.executable, "-c", "pass"])):
            best, med = timed(argv)
            print(f"{what}: best {best:.3f} s, median {med:.3f} s (5 runs)")


if __name__ == "__main__":
    main()

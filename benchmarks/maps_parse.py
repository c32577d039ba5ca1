#!/usr/bin/env python3
"""Time and memory of `vmabpf maps` parsing and analysis of a large smaps (not a unit test).

    python3 benchmarks/maps_parse.py [--vmas N] [--baseline REV] [--startup [PID]]

Builds a smaps of N VMAs (default 100,000) by repeating the VMAs of a real capture
(tests/data/smaps/glibc-k7.2.smaps) at increasing addresses, with a run of alternating
names every few VMAs and the Rss/Pss/Referenced/Private_Dirty of every resident VMA raised
by a per-VMA amount (so values repeat no more than in a real process: caches of parsed
values get no free hits), writes it to a temporary file, and then -- each in a fresh
process, side by side -- parses it with the streaming fast path (parse_stream, what
`maps --file` and `maps PID` use) and with the line-by-line reference path (fast=False,
the pre-issue-14 algorithm on the same compact Vma), then runs the per-name, per-class and
per-family tables and --fragments.  Peak memory is the child's ru_maxrss minus that of a
child that only imported the modules.  Then the whole command, `vmabpf maps --file FILE`
(start-up, parse, table, output), 3 runs: best and median wall time, peak RSS.  Each child
runs --rounds times (default 3), interleaved with the others; medians are printed.

--baseline REV runs the same children and the same command on the package as it was at
git revision REV (exported to a temporary directory), in the same run, and prints the
ratios.  --startup times `vmabpf --help` and `vmabpf maps PID` (5 runs each, best and
median) on PID, or without one on a process this script starts with 3,000 named,
populated VMAs (vmatrace_bpf.workload.make_vmas).
"""

import argparse
import json
import os
import re
import shutil
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


def vary(block, size_kb, delta):
    """BLOCK with up to DELTA kB more resident (Rss <= Size kept) if it has any resident."""
    vals = {}
    for ln in block[1:]:
        k, _, v = ln.partition(":")
        if v.endswith(" kB"):
            vals[k] = int(v[:-3])
    add = min(delta, size_kb - vals.get("Rss", 0)) if vals.get("Rss") else 0
    if add <= 0:
        return block
    out = [block[0]]
    for ln in block[1:]:
        k = ln.partition(":")[0]
        if k in ("Rss", "Pss", "Referenced", "Private_Dirty"):
            ln = f"{k + ':':<16}{vals[k] + add:>8} kB"
        out.append(ln)
    return out


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
        b = vary(b, size // 1024, 4 * (i % 251))
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


def child(mode, path, root=REPO):
    out = subprocess.run([sys.executable, "-c", CHILD, root, mode, path], check=True, stdout=subprocess.PIPE,
                         text=True).stdout
    return json.loads(out)


def command(root, path):
    """Wall time, CPU time (user + system: what the load of a shared machine changes least) and peak RSS (kB)
    of one `vmabpf maps --file PATH` with the package at ROOT."""
    env = dict(os.environ, PYTHONPATH=root)
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "vmatrace_bpf", "maps", "--file", path],
                         stdout=subprocess.DEVNULL, env=env, cwd=root)
    _, status, ru = os.wait4(p.pid, 0)
    t = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        raise SystemExit(f"vmabpf maps --file failed ({p.returncode}) under {root}")
    return t, ru.ru_utime + ru.ru_stime, ru.ru_maxrss


def med(results):
    """Per field, the median over runs (peak memory: the largest)."""
    out = {k: statistics.median(r[k] for r in results) for k in results[0]}
    out["maxrss_kb"] = max(r["maxrss_kb"] for r in results)
    return out


def export(rev, into):
    """The package as at git revision REV, in a new directory under INTO."""
    root = os.path.join(into, "baseline")
    os.mkdir(root)
    tar = subprocess.run(["git", "-C", REPO, "archive", rev, "vmatrace_bpf"], check=True, stdout=subprocess.PIPE).stdout
    subprocess.run(["tar", "-x", "-C", root], input=tar, check=True)
    return root


VMAS_PROC = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
from vmatrace_bpf.workload import PAGE, make_vmas, map_count, map_region, set_name
named = int(set_name(map_region(1), PAGE, b"probe") == 0)    # 0: a kernel without CONFIG_ANON_VMA_NAME
make_vmas(int(sys.argv[2]) - 1, name_len=16 if named else 0, distinct=False, pages=1)
print(os.getpid(), map_count(), named, flush=True)
sys.stdin.read()
"""


def timed(argv, runs=5):
    ts = []
    env = dict(os.environ, PYTHONPATH=REPO)
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env, cwd=REPO)
        ts.append(time.perf_counter() - t0)
    return min(ts), statistics.median(ts)


def line(label, r, base):
    return (f"{label:6}: parse {r['parse']:.3f} s, tables {r['tables']:.3f} s, fragments {r['fragments']:.3f} s, "
            f"total {r['parse'] + r['tables'] + r['fragments']:.3f} s; peak {r['maxrss_kb'] / 1024:.0f} MB "
            f"({(r['maxrss_kb'] - base) / 1024:.0f} MB above the modules); {int(r['runs']):,} name runs")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vmas", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved runs of each parse child (medians shown)")
    ap.add_argument("--baseline", metavar="REV", help="also measure the package at git revision REV, side by side")
    ap.add_argument("--startup", type=int, nargs="?", const=0, metavar="PID",
                    help="also time `vmabpf maps PID` and `vmabpf --help` (no PID: a 3,000-VMA process of our own)")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="maps-bench-")
    try:
        path = os.path.join(tmp, "big.smaps")
        with open(path, "w") as f:
            build(a.vmas, f)
        old = export(a.baseline, tmp) if a.baseline else None
        size = os.path.getsize(path)
        base = child("import", path)["maxrss_kb"]
        print(f"{a.vmas:,} VMAs, {size / 1e6:.0f} MB of smaps; interpreter + modules {base / 1024:.0f} MB")
        roots = [("stream", "stream", REPO)] + ([("old", "stream", old)] if old else []) + [("slow", "slow", REPO)]
        runs = {label: [] for label, _, _ in roots}
        for _ in range(a.rounds):               # interleaved, so a change in the load hits both sides
            for label, mode, root in roots:
                runs[label].append(child(mode, path, root))
        res = {label: med(rs) for label, rs in runs.items()}
        obase = child("import", path, old)["maxrss_kb"] if old else base
        print(f"medians of {a.rounds} interleaved rounds:")
        print(line("stream", res["stream"], base))
        print(line("slow", res["slow"], base))
        print(f"stream/slow: parse {res['stream']['parse'] / res['slow']['parse']:.2f}x time, "
              f"peak above modules {(res['stream']['maxrss_kb'] - base) / max(1, res['slow']['maxrss_kb'] - base):.2f}x")
        if old:
            r = res["old"]
            print(line(a.baseline[:7], r, obase))
            print(f"now/{a.baseline[:7]}: parse {res['stream']['parse'] / r['parse']:.2f}x time, tables "
                  f"{res['stream']['tables'] / r['tables']:.2f}x, fragments {res['stream']['fragments'] / r['fragments']:.2f}x, "
                  f"peak above modules {(res['stream']['maxrss_kb'] - base) / max(1, r['maxrss_kb'] - obase):.2f}x")
        cmds = [("now", REPO)] + ([(a.baseline[:7], old)] if old else [])
        got = {label: ([], [], 0) for label, _ in cmds}
        for _ in range(3):
            for label, root in cmds:
                t, cpu, rss = command(root, path)
                got[label] = (got[label][0] + [t], got[label][1] + [cpu], max(got[label][2], rss))
        for label, (ts, cpus, rss) in got.items():
            print(f"vmabpf maps --file ({label}): best {min(ts):.3f} s, median {statistics.median(ts):.3f} s (3 runs); "
                  f"CPU median {statistics.median(cpus):.3f} s; peak RSS {rss / 1024:.0f} MB")
        print(f"load average at the end: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
        if old:
            (n, _, nr), (o, _, orss) = got["now"], got[a.baseline[:7]]
            print(f"vmabpf maps --file now/{a.baseline[:7]}: {statistics.median(n) / statistics.median(o):.2f}x median "
                  f"time, {nr / orss:.2f}x peak RSS")
    finally:
        shutil.rmtree(tmp)
    if a.startup is not None:
        startup(a.startup)


def startup(pid):
    proc = None
    if not pid:
        proc = subprocess.Popen([sys.executable, "-c", VMAS_PROC, REPO, "3000"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        pid, count, named = map(int, proc.stdout.readline().split())
        print(f"a process with 3,000 {'named' if named else 'unnamed (no CONFIG_ANON_VMA_NAME)'} VMAs "
              "of one populated page each")
    else:
        with open(f"/proc/{pid}/maps") as f:
            count = sum(1 for _ in f)
    try:
        vm = [sys.executable, "-m", "vmatrace_bpf"]
        for what, argv in (("vmabpf --help", vm + ["--help"]),
                           (f"vmabpf maps PID ({count:,} VMAs)", vm + ["maps", str(pid)]),
                           ("python3 -c pass", [sys.executable, "-c", "pass"])):
            best, med = timed(argv)
            print(f"{what}: best {best:.3f} s, median {med:.3f} s (5 runs)")
    finally:
        if proc is not None:
            proc.stdin.close()
            proc.wait()


if __name__ == "__main__":
    main()

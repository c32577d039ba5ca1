"""How fast `vmabpf report` reads and aggregates a recording.

    python3 benchmarks/report_read.py [N]      (default 1,000,000 events)

Writes N synthetic events (a realistic mix: mostly merges, then names set and
rejected, splits, name objects allocated and freed, a few forks) through the
record writer into a temporary recording, then times what `report` does with
it: read, validate and aggregate (no rendering), in one process and as
`report` does by default (big files in parts, one process per CPU).
Target: >= 300k events/s.
"""

import os
import platform
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vmatrace_bpf.recording import RecordWriter, make_header  # noqa: E402
from vmatrace_bpf.reader import build_report, jobs_for  # noqa: E402

NAMES = ["dalvik-main space", "libc_malloc", "scudo:primary", "stack_and_tls:1234", "jit-cache", "a", "b", "cache"]
CAUSES = [["name"], ["flags"], ["inside"], ["no_vma"], ["name", "flags"], ["unseen"], ["anon_vma"], []]


def synthetic_events(n, seed=1, pids=(1200, 1201, 1202, 1203)):
    rnd = random.Random(seed)
    ts = 1_000_000_000
    ptr = 0xFFFF888000000000
    for i in range(n):
        ts += rnd.randint(200, 20000)
        pid = pids[i % len(pids)]
        base = {"ts": ts, "pid": pid, "tid": pid + rnd.randint(0, 3), "comm": f"app{pid % 10}"}
        r = rnd.random()
        name = rnd.choice(NAMES)
        addr = 0x7F0000000000 + rnd.randint(0, 1 << 20) * 4096
        if r < 0.50:
            outcome = rnd.choice(["none", "none", "prev", "next", "both"])
            yield {"type": "merge", **base, "source": rnd.choice(["new_range", "existing_range", "vma_merge"]),
                   "outcome": outcome, "start": addr, "end": addr + 4096, "res_start": addr - 4096 if outcome != "none"
                   else 0, "res_end": addr + 4096 if outcome != "none" else 0, "prev_start": addr - 4096,
                   "prev_end": addr, "next_start": addr + 4096, "next_end": addr + 8192, "name": name,
                   "prev_name": rnd.choice(NAMES), "next_name": "", "prev_cause": rnd.choice(CAUSES),
                   "next_cause": rnd.choice(CAUSES), "vm_flags": 0x100073}
        elif r < 0.70:
            ret = 0 if rnd.random() < 0.9 else rnd.choice([-22, -12])
            yield {"type": "name_set", **base, "addr": addr, "len": 4096 * rnd.randint(1, 64), "name": name,
                   "ret": ret, "err": {0: None, -22: "EINVAL", -12: "ENOMEM"}[ret], "name_truncated": False,
                   "name_null": False}
        elif r < 0.82:
            yield {"type": "split", **base, "vma_start": addr, "vma_end": addr + 3 * 4096, "addr": addr + 4096,
                   "name": name, "refcount": rnd.randint(1, 5), "ret": 0, "err": None, "name_truncated": False}
        elif r < 0.91:
            ptr += 64
            yield {"type": "name_alloc", **base, "ptr": ptr, "name": name, "refcount": 1, "name_truncated": False}
        elif r < 0.995:
            yield {"type": "name_free", **base, "ptr": ptr - rnd.randint(0, 64) * 64, "name": name, "refcount": 0,
                   "name_truncated": False}
        else:
            yield {"type": "fork", **base, "child_pid": 30000 + i % 30000, "latency_ns": rnd.randint(20000, 5000000),
                   "map_count": rnd.randint(50, 5000), "vmas_copied": rnd.randint(50, 5000),
                   "named_copied": rnd.randint(0, 500), "probe": "dup_mmap"}


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.vmabpf.jsonl")
        t = time.perf_counter()
        with open(path, "w") as f:
            w = RecordWriter(f, path)
            w.write_header(make_header({"release": "bench", "arch": "x86_64", "capabilities": []}, "bench",
                                       "x86_64", [], False))
            for ev in synthetic_events(n):
                w.write_event(ev)
            w.close("exit")
        size = os.path.getsize(path)
        print(f"wrote {n:,} events ({size / 1e6:.0f} MB) in {time.perf_counter() - t:.1f} s")
        for jobs in (1, None):
            best = cpu_best = None
            for _ in range(2):
                t, c = time.perf_counter(), time.process_time()
                summ, files, _ = build_report([path], jobs=jobs)
                dt, dc = time.perf_counter() - t, time.process_time() - c
                best = dt if best is None else min(best, dt)
                cpu_best = dc if cpu_best is None else min(cpu_best, dc)
            assert files[0]["events"] == n and files[0]["malformed_lines"] == 0
            rate = n / best
            how = "1 process" if jobs == 1 else f"{jobs_for(path)} processes (the default)"
            cpu = (f"; {cpu_best:.2f} s CPU in this process = {n / cpu_best / 1000:.0f}k events/s per CPU second"
                   if jobs == 1 else "")
            # on a shared machine (QEMU guests on the same cores) wall time also measures the others
            print(f"report, {how}: read + aggregated {n:,} events ({len(summ['processes'])} processes) in "
                  f"{best:.2f} s wall = {rate / 1000:.0f}k events/s{cpu} "
                  f"[target >= 300k events/s: {'ok' if rate >= 300e3 else 'SLOW'}]")
        # the interpreter matters: Debian's python3 runs this ~15% faster than a self-built one (docs/record-report.md)
        print(f"python: {sys.executable} {platform.python_version()} ({platform.python_implementation()}, "
              f"{platform.python_compiler()})")
        print(f"load average now: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()

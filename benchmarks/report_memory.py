"""What `vmabpf report` costs on a recording of very many processes: time and peak memory.

    python3 benchmarks/report_memory.py [EVENTS [PIDS]]     (default 1,000,000 events over 1,000,000 PIDs)

Writes EVENTS synthetic events (names set, a merge refused by name, a split, spread evenly over PIDS
processes) through the record writer, then runs `vmabpf report FILE` (the table: the --top processes
in detail) and `vmabpf report -j FILE` (every process, exactly) as child processes, one after the
other, and prints each one's wall time and peak RSS (getrusage of the child).
"""

import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from vmatrace_bpf.recording import RecordWriter, make_header  # noqa: E402


def write_recording(path, n_events, n_pids):
    with open(path, "w") as f:
        w = RecordWriter(f, path)
        w.write_header(make_header({"capabilities": []}, "bench", "x86_64", [], False))
        for i in range(n_events):
            pid = 1000 + i % n_pids
            k = i // n_pids % 3
            base = {"ts": i, "pid": pid, "tid": pid, "comm": f"app{pid % 97}"}
            if k == 0:
                w.write_event(dict(base, type="name_set", addr=0x1000, len=4096, ret=0, err=None,
                                   name=f"heap{pid % 13}", name_null=False, name_truncated=False))
            elif k == 1:
                w.write_event(dict(base, type="merge", start=0x2000, end=0x3000, vm_flags=0x73, prev_start=0x1000,
                                   prev_end=0x2000, next_start=0, next_end=0, res_start=0, res_end=0,
                                   source="existing_range", outcome="none", prev_cause=["name"],
                                   next_cause=["no_vma"], name="b", prev_name="a", next_name=""))
            else:
                w.write_event(dict(base, type="split", vma_start=0x1000, vma_end=0x4000, addr=0x2000, ret=0,
                                   new_below=0, refcount=2, name="a"))
        w.close("bench")


def run(args):
    """(wall seconds, peak RSS in KiB) of one `vmabpf report ARGS` child (its own rusage: os.wait4)."""
    t0 = time.monotonic()
    with open(os.devnull, "w") as out:
        p = subprocess.Popen([sys.executable, "-m", "vmatrace_bpf", "report", *args], stdout=out,
                             stderr=subprocess.PIPE, cwd=REPO)
        err = p.stderr.read()
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    if p.returncode:
        sys.exit(f"report {' '.join(args)} failed: {err.decode(errors='replace').strip()}")
    return wall, usage.ru_maxrss


def main():
    n_events = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    n_pids = int(sys.argv[2]) if len(sys.argv) > 2 else n_events
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "many.jsonl")
        t0 = time.monotonic()
        write_recording(path, n_events, n_pids)
        print(f"wrote {n_events:,} events over {n_pids:,} PIDs ({os.path.getsize(path) >> 20} MB) "
              f"in {time.monotonic() - t0:.1f} s")
        for args in ([], ["-j"]):
            wall, peak = run(args + [path])
            print(f"report {' '.join(args) or '(table)'}: {wall:.1f} s, peak RSS {peak / 1024:.0f} MB")
    print(f"load average now: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()

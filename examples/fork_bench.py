#!/usr/bin/env python3
"""What names cost fork(), from Python: the same as `vmabpf bench fork`, as a library call.

    sudo python3 examples/fork_bench.py [VMAS [FORKS]]

Builds a process with VMAS unmergeable anonymous VMAs twice (unnamed, then named
with distinct 79-character names), forks each FORKS times, and prints the
median fork() latency of both and the regression.  Needs a kernel with
CONFIG_ANON_VMA_NAME; tracing (--trace in the CLI) additionally needs root and bcc.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vmatrace_bpf.forkbench import run_bench  # noqa: E402


def main():
    vmas = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    forks = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    res = run_bench(vmas, name_len=79, pages=0, forks=forks, modes=["off"], distinct=True)
    off = res["modes"]["off"]
    print(f"{vmas} VMAs: unnamed {off['unnamed']['median_ms']:.2f} ms, named {off['named']['median_ms']:.2f} ms, "
          f"regression {off['regression_pct']:+.1f}%")


if __name__ == "__main__":
    main()

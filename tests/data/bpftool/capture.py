"""Capture `bpftool prog show --json` while a full Tracer (the plan `vmabpf watch` uses) is loaded and
attached, with the Tracer's own view of its programs (Tracer.programs(): fdinfo), into
tests/data/bpftool/<release>.json.  Run in a test guest, as root, with bpf_stats on:

    tests/vm/run --kernel 6.12 -- python3 tests/data/bpftool/capture.py

tests/unit/test_bpf_stats.py matches the two as `vmabpf bench` does."""

import json
import os
import platform
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))

from vmatrace_bpf.forkbench import BpfStats  # noqa: E402
from vmatrace_bpf.kernel import KernelInfo  # noqa: E402
from vmatrace_bpf.loader import Tracer  # noqa: E402
from vmatrace_bpf.plan import choose  # noqa: E402

kinfo = KernelInfo.live()
plan = choose(kinfo)
with BpfStats():
    with Tracer(plan, kinfo, lambda ev: None, pids=[os.getpid()], filter_pids=True) as t:
        for _ in range(3):
            subprocess.run(["true"], check=True)  # forks of this (watched) process
        t.drain()
        progs = BpfStats.bpftool_progs()
        out = {"release": platform.release(), "arch": platform.machine(),
               "command": "tests/vm/run --kernel %s -- python3 tests/data/bpftool/capture.py" % platform.release(),
               "plan_probes": [[p.kind, p.target, p.fn, p.program] for p in plan.probes()],
               "tracer_programs": t.programs(), "bpftool_prog_show": progs}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), platform.release() + ".json")
with open(path, "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
print(json.dumps(BpfStats.match(progs, out["tracer_programs"]), indent=1))

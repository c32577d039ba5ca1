"""docs/maps.md's `maps --interval` example: a process names 2N one-page VMAs per line it reads (the program of
tests/kernel/test_maps_diff.py); `vmabpf maps PID --interval 2 --count 2` watches it grow.  Needs a kernel with
CONFIG_ANON_VMA_NAME (e.g. tests/vm/run --kernel 6.12 -- python3 examples/maps_interval_demo.py)."""

import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "kernel"))
from test_maps_diff import GROW  # noqa: E402

env = dict(os.environ, PYTHONPATH=REPO)
p = subprocess.Popen([sys.executable, "-c", GROW], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                     cwd=REPO, env=env)
pid = json.loads(p.stdout.readline())["pid"]
m = subprocess.Popen([sys.executable, "-m", "vmatrace_bpf", "maps", str(pid), "--interval", "2", "--count", "2"],
                     cwd=REPO, env=env)
time.sleep(1)
for n in (4, 8):
    p.stdin.write(f"{n} demo-cache\n")
    p.stdin.flush()
    p.stdout.readline()
    time.sleep(2)
m.wait()
p.stdin.close()
p.wait()

"""Starting workloads and vmabpf commands as a user would, for the kernel tests."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VMABPF = [sys.executable, "-m", "vmatrace_bpf"]


def start_workload(scenario):
    """A `vmatrace_bpf.workload SCENARIO --wait` process: (Popen, pid). Write a line to start it."""
    p = subprocess.Popen([sys.executable, "-m", "vmatrace_bpf.workload", scenario, "--wait"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    return p, json.loads(p.stdout.readline())["pid"]


def go(workload):
    """Let the workload run; returns its result JSON (it then waits for finish())."""
    workload.stdin.write("\n")
    workload.stdin.flush()
    return json.loads(workload.stdout.readline())


def finish(workload):
    workload.stdin.write("\n")
    workload.stdin.close()
    workload.wait(timeout=120)


def start_vmabpf(*args):
    """`vmabpf ARGS` as a subprocess, returned once it says it is tracing (its banner on stderr)."""
    p = subprocess.Popen(VMABPF + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    banner = p.stderr.readline()
    assert "Hit Ctrl-C to end." in banner, banner + p.stderr.read()
    return p

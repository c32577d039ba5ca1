"""Starting workloads and vmabpf commands as a user would, for the kernel tests."""

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VMABPF = [sys.executable, "-m", "vmatrace_bpf"]


STEP_TIMEOUT = 240  # seconds one step may take under TCG (a bcc compile takes 15-25 s)


def readline(proc, stream, what, timeout=STEP_TIMEOUT):
    """A line from STREAM of PROC, or fail the test after TIMEOUT seconds, first asking every vmabpf
    process in the guest (SIGUSR1: faulthandler) to print where it is stuck."""
    got = []
    reader = threading.Thread(target=lambda: got.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if got:
        return got[0]
    subprocess.run(["pkill", "-USR1", "-f", "vmatrace_bpf"], check=False)
    time.sleep(2)
    try:
        state = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        state = "gone"
    raise AssertionError(f"no {what} from PID {proc.pid} (state {state}) after {timeout} s; the Python stacks "
                         "of the vmabpf processes are on the console above")


def start_workload(scenario, *args):
    """A `vmatrace_bpf.workload SCENARIO [ARGS] --wait` process: (Popen, pid). Write a line to start it."""
    p = subprocess.Popen([sys.executable, "-m", "vmatrace_bpf.workload", scenario, *args, "--wait"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO, bufsize=1)
    return p, json.loads(readline(p, p.stdout, "ready line from the workload"))["pid"]


def go(workload):
    """Let the workload run; returns its result JSON (it then waits for finish())."""
    workload.stdin.write("\n")
    workload.stdin.flush()
    return json.loads(readline(workload, workload.stdout, "result from the workload"))


def finish(workload):
    workload.stdin.write("\n")
    workload.stdin.close()
    workload.wait(timeout=120)


def start_vmabpf(*args, stdout=subprocess.PIPE):
    """`vmabpf ARGS` as a subprocess, returned once it says it is tracing (its banner on stderr)."""
    p = subprocess.Popen(VMABPF + list(args), stdout=stdout, stderr=subprocess.PIPE, text=True, errors="replace",
                         cwd=REPO, bufsize=1)
    wait_banner(p)
    return p


def wait_banner(p):
    """The banner line of a started vmabpf command (it is tracing from then on).  Lines before it
    (bcc or libbpf warnings) are shown on the console, not taken for the banner; if the command ends
    without a banner, the test fails with what it said."""
    before = []
    deadline = time.monotonic() + STEP_TIMEOUT
    while True:
        line = readline(p, p.stderr, "banner from vmabpf", timeout=max(1.0, deadline - time.monotonic()))
        if "Hit Ctrl-C to end." in line:
            if before:
                sys.stderr.write(f"[vmabpf PID {p.pid} printed before its banner]\n" + "".join(before))
            return line
        if not line:  # EOF: it exited
            p.wait(timeout=30)
            raise AssertionError(f"vmabpf exited ({p.returncode}) without tracing: " + "".join(before))
        before.append(line)


def names_in_maps(pid):
    """VMA names straight from /proc/PID/maps: the text after the five fixed fields and the padding."""
    out = Counter()
    with open(f"/proc/{pid}/maps", "rb") as f:
        for line in f.read().decode("utf-8", "surrogateescape").splitlines():
            fields = line.split(" ", 5)
            name = fields[5].lstrip(" ") if len(fields) > 5 else ""
            out[name or "[anon]"] += 1
    return out


def maps_json(*args):
    """`vmabpf maps ARGS -j`: its JSON (the test fails on a non-zero exit)."""
    env = dict(os.environ, PYTHONPATH=REPO)
    p = subprocess.run([sys.executable, "-m", "vmatrace_bpf", "maps", *args, "-j"], cwd=REPO, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)

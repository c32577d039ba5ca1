#!/usr/bin/env python3
"""Run `vmabpf watch` on a process that names, merges, splits and forks named VMAs.

The workload (vmatrace_bpf/workload.py) waits until the watch is attached,
then: names pages a, a, b in a row (the second 'a' merges, 'b' cannot: names
differ), tries three names the kernel rejects, mprotects the middle page of a
named VMA (two splits, refcount 2 then 3) and forks with five named VMAs.
"""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


def main():
    wl = subprocess.Popen([PY, "-m", "vmatrace_bpf.workload", "all", "--wait"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, cwd=REPO)
    pid = json.loads(wl.stdout.readline())["pid"]
    watch = subprocess.Popen([PY, "-m", "vmatrace_bpf", "watch", "-p", str(pid)] + sys.argv[1:],
                             stderr=subprocess.PIPE, text=True, cwd=REPO)
    banner = watch.stderr.readline()
    sys.stderr.write(banner)
    if "Hit Ctrl-C" not in banner:
        sys.stderr.write(watch.stderr.read())
        wl.kill()
        return watch.wait() or 1
    wl.stdin.write("\n")
    wl.stdin.flush()
    wl.stdout.readline()
    wl.stdin.write("\n")
    wl.stdin.close()
    wl.wait()
    sys.stderr.write(watch.stderr.read())
    return watch.wait()


if __name__ == "__main__":
    sys.exit(main())

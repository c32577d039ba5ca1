#!/usr/bin/env python3
"""Capture the smaps of a Go 1.25 program, whose runtime names its mappings ("[anon: Go: heap]", ...).

    python3 tests/data/smaps/gocapture.py OUTFILE

Run in a test guest, after `python3 tests/vm/gobuild.py` on the host (it builds
build/go/gonames-GOARCH from tests/kernel/go with Debian trixie-backports' Go 1.25):
starts gonames for this machine (GODEBUG unset: decoratemappings is on by default), reads
its ready line, writes its /proc/PID/smaps to OUTFILE, and prints the Go version and kernel.
"""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gocapture.py OUTFILE")
    goarch = {"x86_64": "amd64", "aarch64": "arm64"}[os.uname().machine]
    env = {k: v for k, v in os.environ.items() if k != "GODEBUG"}
    p = subprocess.Popen([os.path.join(REPO, "build", "go", f"gonames-{goarch}")], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=env)
    ready = json.loads(p.stdout.readline())
    with open(f"/proc/{p.pid}/smaps") as f:
        data = f.read()
    p.stdin.write("\n")
    p.stdin.close()
    p.wait()
    with open(sys.argv[1], "w") as f:
        f.write(data)
    print(f"{sys.argv[1]}: gonames ({ready['go']}, {goarch}) PID {ready['pid']}, kernel {os.uname().release}")


if __name__ == "__main__":
    main()

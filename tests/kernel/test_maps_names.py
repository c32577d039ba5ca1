"""`vmabpf maps` on the names a real allocator gives: glibc 2.40+ with
GLIBC_TUNABLES=glibc.mem.decorate_maps=1 names its malloc arenas
("[anon: glibc: malloc arena]") and each thread's stack ("[anon: glibc: pthread stack:
TID]"), with a space after "anon:".  The program is python3 itself (the guest root has no
compiler): threads that malloc (bytearrays above pymalloc's 512-byte limit, below the
128 KiB mmap threshold) get arenas of their own.  The names maps reports must be exactly
the names /proc/PID/maps shows, VMA for VMA."""

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from guestutil import REPO, readline

PROGRAM = r"""
import threading, json, sys
go = threading.Event()
ready = []
keep = []
def worker():
    keep.append([bytearray(50000) for _ in range(20)])     # malloc in this thread: its own arena
    ready.append(threading.get_native_id())
    go.wait()
ts = [threading.Thread(target=worker) for _ in range(4)]
for t in ts: t.start()
while len(ready) < len(ts): pass
print(json.dumps({"tids": ready}), flush=True)
sys.stdin.readline()
go.set()
"""


def glibc_version():
    v = os.confstr("CS_GNU_LIBC_VERSION") or ""
    parts = v.split()[-1].split(".") if v.startswith("glibc") else []
    return tuple(int(x) for x in parts[:2]) if parts else None


def names_in_maps(pid):
    """VMA names straight from /proc/PID/maps: the text after the five fixed fields and the padding."""
    out = Counter()
    with open(f"/proc/{pid}/maps", "rb") as f:
        for line in f.read().decode("utf-8", "surrogateescape").splitlines():
            fields = line.split(" ", 5)
            name = fields[5].lstrip(" ") if len(fields) > 5 else ""
            out[name or "[anon]"] += 1
    return out


@pytest.fixture
def decorated():
    v = glibc_version()
    if v is None or v < (2, 40):
        pytest.skip(f"needs glibc >= 2.40 for glibc.mem.decorate_maps (this is {v})")
    env = dict(os.environ, GLIBC_TUNABLES="glibc.mem.decorate_maps=1")
    p = subprocess.Popen([sys.executable, "-I", "-c", PROGRAM], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env=env)
    tids = json.loads(readline(p, p.stdout, "ready line from the threaded python3"))["tids"]
    yield p, tids
    p.stdin.write("\n")
    p.stdin.close()
    p.wait(timeout=60)


def maps_json(*args):
    env = dict(os.environ, PYTHONPATH=REPO)
    p = subprocess.run([sys.executable, "-m", "vmatrace_bpf", "maps", *args, "-j"], cwd=REPO, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_maps_sees_exactly_the_glibc_names(decorated):
    p, tids = decorated
    out = maps_json(str(p.pid))
    seen = Counter({r["name"]: r["vmas"] for r in out["rows"]})
    want = names_in_maps(p.pid)
    assert seen == want
    for tid in tids:
        assert want[f"[anon: glibc: pthread stack: {tid}]"] >= 1, tid   # one name per thread: never merged
    assert want["[anon: glibc: malloc arena]"] >= 1


def test_all_and_family_count_them(decorated):
    p, tids = decorated
    out = maps_json("--all", "--name", "glibc: pthread stack")
    rows = {r["name"]: r for r in out["rows"]}
    for tid in tids:
        r = rows[f"[anon: glibc: pthread stack: {tid}]"]
        assert [x["pid"] for x in r["per_process"]] == [p.pid]
    fam = maps_json(str(p.pid), "--by", "family")
    glibc = sum(n for name, n in names_in_maps(p.pid).items() if name.startswith("[anon: glibc: "))
    assert {r["name"]: r["vmas"] for r in fam["rows"]}["glibc"] == glibc

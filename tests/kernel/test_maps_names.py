"""`vmabpf maps` on the names a real allocator gives: glibc 2.40+ with
GLIBC_TUNABLES=glibc.mem.decorate_maps=1 names its malloc arenas
("[anon: glibc: malloc arena]") and each thread's stack ("[anon: glibc: pthread stack:
TID]"), with a space after "anon:".  The program is python3 itself (the guest root has no
compiler): threads that malloc (bytearrays above pymalloc's 512-byte limit, below the
128 KiB mmap threshold) get arenas of their own.  The names maps reports must be exactly
the names /proc/PID/maps shows, VMA for VMA; and `vmabpf watch` sees glibc set each of them
(prctl PR_SET_VMA_ANON_NAME), the name byte for byte as maps then shows it."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from guestutil import maps_json, names_in_maps, readline, start_vmabpf

PROGRAM = r"""
import threading, json, os, sys
if sys.argv[1:] == ["gated"]:          # wait before any thread exists (for a tracer to attach)
    print(json.dumps({"pid": os.getpid()}), flush=True)
    sys.stdin.readline()
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


def start_program(*args):
    """PROGRAM under glibc.mem.decorate_maps=1 (skips without glibc >= 2.40)."""
    v = glibc_version()
    if v is None or v < (2, 40):
        pytest.skip(f"needs glibc >= 2.40 for glibc.mem.decorate_maps (this is {v})")
    env = dict(os.environ, GLIBC_TUNABLES="glibc.mem.decorate_maps=1")
    return subprocess.Popen([sys.executable, "-I", "-c", PROGRAM, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)


@pytest.fixture
def decorated():
    p = start_program()
    tids = json.loads(readline(p, p.stdout, "ready line from the threaded python3"))["tids"]
    yield p, tids
    p.stdin.write("\n")
    p.stdin.close()
    p.wait(timeout=60)


@pytest.fixture
def decorated_gated():
    """The same program, stopped before its first thread: (Popen, pid); write a line to go on."""
    p = start_program("gated")
    pid = json.loads(readline(p, p.stdout, "pid line from the threaded python3"))["pid"]
    yield p, pid
    if p.poll() is None:
        p.kill()
        p.wait(timeout=60)


def test_watch_sees_glibc_set_exactly_the_names_maps_shows(decorated_gated):
    p, pid = decorated_gated
    before = names_in_maps(pid)
    w = start_vmabpf("watch", "-p", str(pid), "-j")
    p.stdin.write("\n")                                    # the threads start, malloc, name
    p.stdin.flush()
    tids = json.loads(readline(p, p.stdout, "ready line from the threaded python3"))["tids"]
    after = names_in_maps(pid)
    time.sleep(2)                                          # let the 100 ms poll loop deliver
    w.send_signal(signal.SIGINT)
    out, err = w.communicate(timeout=120)
    p.stdin.write("\n")
    p.stdin.close()
    p.wait(timeout=60)
    assert w.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[-1]["type"] == "summary" and events[-1]["lost_events"] == 0
    sets = [e for e in events if e["type"] == "name_set"]
    assert sets and {e["pid"] for e in sets} == {pid}
    assert [e for e in sets if e["err"] is not None] == []
    named = Counter(e["name"] for e in sets)
    # exact counts from the program: each thread names its stack once (glibc puts the TID in it),
    # and each thread's first malloc makes a new arena, named once
    stacks = Counter({n: c for n, c in named.items() if n.startswith(" glibc: pthread stack: ")})
    assert stacks == Counter({f" glibc: pthread stack: {tid}": 1 for tid in tids})
    assert named[" glibc: malloc arena"] == len(tids)
    # byte for byte: what glibc passed is what maps shows inside "[anon:...]" (leading space kept)
    shown = {f"[anon:{n}]" for n in named}
    assert shown <= set(after), shown - set(after)
    # and every name that appeared in maps while watched came through an event watch saw
    assert set(after) - set(before) <= shown, (set(after) - set(before)) - shown


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

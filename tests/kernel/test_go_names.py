"""`vmabpf maps` and `watch` on the names a real runtime gives: Go 1.25 names every anonymous
mapping it makes, by default, with prctl(PR_SET_VMA_ANON_NAME) and " Go: " in front
(runtime/set_vma_name_linux.go: "[anon: Go: heap]", "[anon: Go: page summary]", ...).

The program is tests/kernel/go/gonames.go, built on the host by tests/vm/gobuild.py with
Debian trixie-backports' golang-1.25 (CGO_ENABLED=0: no C library in the process, so every
name in it is the Go runtime's).  Checked here: `maps PID -j` reports exactly the names
/proc/PID/maps shows, VMA for VMA; --by family counts them as the Go runtime and --by
category as Go Heap / Go Runtime; and `watch` sees the runtime set them, byte for byte as maps
then shows them.  The runtime names its first mappings before main, so watch attaches to the
program at a gate after which it execs itself (same PID, a fresh address space): watch sees the
new runtime's names from the very first one; then, at a second gate, the program allocates
256 MiB, more than the runtime mapped at start-up: the heap grows, and watch sees the new
mapping named " Go: heap".
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from guestutil import REPO, maps_json, names_in_maps, readline, start_vmabpf

sys.path.insert(0, os.path.join(REPO, "tests", "vm"))
import gobuild  # noqa: E402  (tests/vm/gobuild.py: where the program is built, and from what)

GO_PREFIX = "[anon: Go: "
# Named at every start on 64-bit Linux, whatever the program does (Go 1.25 runtime sources): the first
# arena (mheap.go sysMap "heap", its unused rest malloc.go sysReserve "heap reservation"), the arena index
# (malloc.go "heap index"), the page allocator (mpagealloc_64bit.go "page summary", "page alloc",
# "scavenge index"; mpagealloc.go "page alloc index"), persistentalloc (malloc.go "immortal metadata"),
# the span array (mheap.go "allspans array") and the mark bits (mheap.go "gc bits").
STARTUP_NAMES = {"heap", "heap reservation", "heap index", "page summary", "page alloc", "scavenge index",
                 "page alloc index", "immortal metadata", "allspans array", "gc bits"}


def go_binary():
    goarch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine)
    if goarch is None:
        pytest.skip(f"no Go program built for {os.uname().machine}")
    path = gobuild.binary_path(goarch)
    if not os.path.isfile(path):
        pytest.skip(f"no {os.path.relpath(path, REPO)}: build it on the host with python3 tests/vm/gobuild.py "
                    "(.ci/setup does)")
    stamp = gobuild.read_stamp() or {}
    assert stamp.get("sources") == gobuild.sources_hash(), \
        f"{os.path.relpath(path, REPO)} is older than tests/kernel/go: run python3 tests/vm/gobuild.py on the host"
    return path


def start_go(*args):
    """gonames ARGS with the runtime's default GODEBUG: (Popen, its ready line)."""
    env = {k: v for k, v in os.environ.items() if k != "GODEBUG"}
    p = subprocess.Popen([go_binary(), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    return p, json.loads(readline(p, p.stdout, "ready line from gonames"))


def go_on(p, what):
    p.stdin.write("\n")
    p.stdin.flush()
    return json.loads(readline(p, p.stdout, what))


def end(p):
    if p.poll() is None:
        try:
            p.stdin.write("\n")
            p.stdin.close()
        except OSError:
            pass
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=60)


@pytest.fixture
def gonames():
    p, ready = start_go()
    assert ready["pid"] == p.pid and ready["go"].startswith("go1.25"), ready
    yield p
    end(p)


def go_names(names):
    return Counter({n: c for n, c in names.items() if n.startswith(GO_PREFIX)})


def test_maps_sees_exactly_the_go_names(gonames):
    pid = gonames.pid
    out = maps_json(str(pid))
    seen = Counter({r["name"]: r["vmas"] for r in out["rows"]})
    want = names_in_maps(pid)
    assert seen == want
    assert {n[len(GO_PREFIX):-1] for n in go_names(want)} >= STARTUP_NAMES, sorted(want)
    # no C library: every name in the process is the Go runtime's or the kernel's
    assert [n for n in want if n.startswith("[anon:") and not n.startswith(GO_PREFIX)] == []


def test_family_and_category_put_them_under_go(gonames):
    pid = gonames.pid
    names = names_in_maps(pid)
    go = go_names(names)
    fam = {r["name"]: r["vmas"] for r in maps_json(str(pid), "--by", "family")["rows"]}
    assert fam["Go runtime"] == sum(go.values())
    assert "other named" not in fam, fam
    cat = {r["name"]: r["vmas"] for r in maps_json(str(pid), "--by", "category")["rows"]}
    heap = names["[anon: Go: heap]"] + names["[anon: Go: heap reservation]"]
    assert cat["Go Heap"] == heap and heap >= 2
    assert cat["Go Runtime"] == sum(go.values()) - heap


def watched(w, pid):
    """The name_set events of a stopped `watch -j`: all from PID, none failed."""
    w.send_signal(signal.SIGINT)
    out, err = w.communicate(timeout=120)
    assert w.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[-1]["type"] == "summary" and events[-1]["lost_events"] == 0
    sets = [e for e in events if e["type"] == "name_set"]
    assert sets and {e["pid"] for e in sets} == {pid}
    assert [e for e in sets if e["err"] is not None or e["ret"] != 0 or e.get("name_truncated")] == []
    return sets


def vma_at(pid, addr):
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split(" ", 5)
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if lo <= addr < hi:
                return lo, hi, fields[5].strip()
    return None


def test_watch_sees_the_runtime_name_its_mappings():
    """One watch (one bcc compile) over two phases, told apart by the events' CLOCK_MONOTONIC time."""
    p, ready = start_go("exec-gated")
    try:
        pid = ready["pid"]
        w = start_vmabpf("watch", "-p", str(pid), "-j")
        again = go_on(p, "ready line from gonames after its exec")   # exec: a fresh runtime, the same PID
        assert again["pid"] == pid
        started = names_in_maps(pid)
        gate = time.monotonic_ns()
        big = go_on(p, "line from gonames after its 256 MiB allocation")
        grown = names_in_maps(pid)
        first, last = vma_at(pid, big["big"]), vma_at(pid, big["big"] + big["big_len"] - 1)
        time.sleep(2)                                      # let the 100 ms poll loop deliver
        sets = watched(w, pid)
    finally:
        end(p)
    # every name came from the Go runtime (" Go: " and what), with its leading space
    assert [e["name"] for e in sets if not e["name"].startswith(" Go: ")] == []
    # start-up, from the first prctl: every name the runtime set is in maps inside "[anon:...]" byte for
    # byte (none was overwritten entirely), and every Go name maps shows came through an event watch saw
    at_start = {f"[anon:{e['name']}]" for e in sets if e["ts"] < gate}
    assert at_start <= set(started), at_start - set(started)
    assert set(go_names(started)) == at_start
    assert {n[len(GO_PREFIX):-1] for n in at_start} >= STARTUP_NAMES
    # after the second gate: the 256 MiB object lies in mappings named " Go: heap", and watch saw the
    # runtime name more heap (there was far less than 256 MiB mapped at the gate)
    assert first and first[2] == "[anon: Go: heap]" and last and last[2] == "[anon: Go: heap]", (first, last)
    grew = {f"[anon:{e['name']}]" for e in sets if e["ts"] >= gate}
    assert "[anon: Go: heap]" in grew
    assert grew <= set(grown), grew - set(grown)
    assert set(grown) - set(started) <= grew, (set(grown) - set(started)) - grew

"""Workloads whose effect on VMAs is known: what the kernel tests (and examples) run.

Each scenario maps its own anonymous region with MAP_FIXED_NOREPLACE at an
address far from everything else, so no foreign VMA is ever its neighbour,
then names, protects and forks it.  It reports the region and the resulting
``[anon:...]`` lines of /proc/self/maps as JSON.

    python3 -m vmatrace_bpf.workload SCENARIO [--wait]
    python3 -m vmatrace_bpf.workload storm [SECONDS [PROCS]] [--wait]
    python3 -m vmatrace_bpf.workload merge-storm [SECONDS [VMAS]] [--wait]

With --wait it prints {"pid": N, "ready": true} and waits for a line on stdin
before doing anything (so a tracer can start watching the PID first).
"""

from __future__ import annotations

import ctypes
import errno
import faulthandler
import json
import mmap
import os
import signal
import sys
import time
from typing import Dict, List, Optional

PR_SET_VMA = 0x53564D41
PR_SET_VMA_ANON_NAME = 0
MAP_FIXED_NOREPLACE = 0x100000
PAGE = mmap.PAGESIZE

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_void_p]

PROT_NONE, PROT_READ, PROT_RW = 0, mmap.PROT_READ, mmap.PROT_READ | mmap.PROT_WRITE


_regions = [0]


def map_region(pages: int, base: Optional[int] = None, prot: int = PROT_RW) -> int:
    """mmap PAGES anonymous private pages at BASE (MAP_FIXED_NOREPLACE); by default
    at an address of this process's own, far from any other mapping."""
    if base is None:
        # 64-128 GiB: below every kernel's TASK_SIZE (arm64 with 39-bit VAs, as many Android devices and
        # the arm64 6.6 test kernel have, ends user space at 512 GiB) and far from the binary, heap,
        # libraries and stack on x86_64 and arm64
        base = 0x1000000000 + (os.getpid() % 256) * 0x10000000 + _regions[0] * 0x1000000
        _regions[0] += 1
    addr = _libc.mmap(base, pages * PAGE, prot, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0)
    if addr in (None, ctypes.c_void_p(-1).value) or addr != base:
        raise OSError(ctypes.get_errno(), f"mmap at {base:#x} failed")
    return addr


def set_name(addr: int, length: int, name: Optional[bytes]) -> int:
    """prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, ...): 0 or -errno."""
    rc = _libc.prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, addr, length, name)
    return 0 if rc == 0 else -ctypes.get_errno()


def protect(addr: int, length: int, prot: int) -> None:
    if _libc.mprotect(addr, length, prot) != 0:
        raise OSError(ctypes.get_errno(), "mprotect failed")


def touch(addr: int, pages: int) -> None:
    for i in range(pages):
        ctypes.c_char.from_address(addr + i * PAGE).value = b"x"


def maps_in(lo: int, hi: int) -> List[Dict]:
    """/proc/self/maps lines inside [lo, hi)."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            start, end = (int(x, 16) for x in parts[0].split("-"))
            if start >= lo and end <= hi:
                out.append({"start": start, "end": end, "perms": parts[1],
                            "name": parts[5].strip() if len(parts) > 5 else ""})
    return out


# -- scenarios -------------------------------------------------------------------
def scenario_names() -> Dict:
    """Pages named a, a, b in a row; then names the kernel rejects."""
    base = map_region(3)
    results = {
        "a0": set_name(base, PAGE, b"a"),
        "a1": set_name(base + PAGE, PAGE, b"a"),
        "b2": set_name(base + 2 * PAGE, PAGE, b"b"),
        "bad_char": set_name(base, PAGE, b"bad$name"),
        "too_long": set_name(base, PAGE, b"x" * 80),
        "unmapped": set_name(base + 16 * PAGE, PAGE, b"nowhere"),
    }
    return {"base": base, "end": base + 3 * PAGE, "results": results, "maps": maps_in(base, base + 64 * PAGE)}


def scenario_unnamed() -> Dict:
    """The same pattern without names: page by page to PROT_READ, each merges with the one before."""
    base = map_region(3)
    for i in range(3):
        protect(base + i * PAGE, PAGE, PROT_READ)
    return {"base": base, "end": base + 3 * PAGE, "maps": maps_in(base, base + 3 * PAGE)}


def scenario_split() -> Dict:
    """mprotect the middle page of a 3-page VMA named 'mid'."""
    base = map_region(3)
    rc = set_name(base, 3 * PAGE, b"mid")
    protect(base + PAGE, PAGE, PROT_READ)
    return {"base": base, "end": base + 3 * PAGE, "results": {"name": rc}, "maps": maps_in(base, base + 3 * PAGE)}


def scenario_fork(k: int = 5) -> Dict:
    """K named VMAs (k0..k{K-1}, each a separate mapping two pages apart), then one fork."""
    base = map_region(2 * k, prot=PROT_NONE)
    rcs = {}
    for i in range(k):
        protect(base + 2 * i * PAGE, PAGE, PROT_RW)
        rcs[f"k{i}"] = set_name(base + 2 * i * PAGE, PAGE, f"k{i}".encode())
    sys.stdout.flush()
    child = os.fork()
    if child == 0:
        # the child renames its copy of k0 (seen only when children are followed)
        os._exit(0 if set_name(base, PAGE, b"child") == 0 else 1)
    _, status = os.waitpid(child, 0)
    rcs["child"] = os.waitstatus_to_exitcode(status)
    return {"base": base, "end": base + 2 * k * PAGE, "k": k, "child": child, "results": rcs,
            "maps": maps_in(base, base + 2 * k * PAGE)}


def map_count() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def bench_name(i: int, name_len: int, distinct: bool) -> bytes:
    """A name of exactly NAME_LEN characters, unique per VMA index I when DISTINCT."""
    tag = f"{i:x}-" if distinct else "v-"
    return (tag * (name_len // len(tag) + 1))[:name_len].encode()


def make_vmas(n: int, name_len: int = 0, distinct: bool = True, pages: int = 0) -> int:
    """N anonymous VMAs of max(1, PAGES) pages that cannot merge (protections alternate), named
    with names of NAME_LEN characters (distinct or all equal) when NAME_LEN > 0, and with PAGES
    pages of each populated.  Returns the base address."""
    size = max(1, pages) * PAGE
    base = map_region(n * max(1, pages), prot=PROT_RW)
    if pages:
        ctypes.memset(base, 1, n * size)  # populate while still writable
    for i in range(1, n, 2):
        protect(base + i * size, size, PROT_READ)
    for i in range(n if name_len else 0):
        rc = set_name(base + i * size, size, bench_name(i, name_len, distinct))
        if rc:
            raise OSError(-rc, f"naming VMA {i} failed: {errno.errorcode.get(-rc, rc)}")
    return base


def bench_server(argv: List[str]) -> int:
    """`workload bench-server N NAME_LEN PAGES DISTINCT COMM`: build the VMAs, then for each
    line "fork K" on stdin fork K times and print the fork() latencies (ns) as JSON."""
    n, name_len, pages, distinct = int(argv[0]), int(argv[1]), int(argv[2]), argv[3] == "1"
    if len(argv) > 4:
        with open("/proc/self/comm", "w") as f:  # so per-comm histograms tell the scenarios apart
            f.write(argv[4][:15])
    try:
        make_vmas(n, name_len, distinct, pages)
    except OSError as e:
        print(json.dumps({"error": str(e)}), flush=True)
        return 1
    print(json.dumps({"pid": os.getpid(), "map_count": map_count()}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[:1] != ["fork"]:
            break
        print(json.dumps([fork_once() for _ in range(int(cmd[1]))]), flush=True)
    return 0


def fork_once() -> int:
    """fork(); the child exits at once.  Returns the parent's fork() time in ns."""
    t0 = time.perf_counter_ns()
    child = os.fork()
    if child == 0:
        os._exit(0)
    t1 = time.perf_counter_ns()
    os.waitpid(child, 0)
    return t1 - t0


def scenario_forks(sizes=(10, 1000, 10000), forks: int = 3) -> Dict:
    """For each size N: N more VMAs, then FORKS forks; the VMAs are unmapped before the next size."""
    out = []
    for n in sizes:
        base = make_vmas(n)
        count = map_count()
        for _ in range(forks):
            fork_once()
        _libc.munmap(base, n * PAGE)
        out.append({"vmas": n, "map_count": count, "forks": forks})
    return {"runs": out}


def scenario_noise(rounds: int = 200) -> Dict:
    """A busy neighbour: names and renames VMAs in a loop (must not show up for another PID)."""
    base = map_region(4)
    for i in range(rounds):
        set_name(base + (i % 4) * PAGE, PAGE, f"noise{i % 3}".encode())
        protect(base + (i % 4) * PAGE, PAGE, PROT_READ if i % 2 else PROT_RW)
    return {"base": base, "end": base + 4 * PAGE, "rounds": rounds}


def _storm(seconds: float) -> Dict:
    base = map_region(2)
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # no argtypes: ctypes objects passed as they are
    halves = (ctypes.c_ulong(base), ctypes.c_ulong(base + PAGE))
    size = ctypes.c_ulong(PAGE)
    names = (ctypes.c_char_p(b"storm-a"), ctypes.c_char_p(b"storm-b"))
    calls = failed = 0
    t0 = time.monotonic()
    end = t0 + seconds
    while True:
        for i in range(1000):  # the clock read once per 1000 calls
            if prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, halves[i & 1], size, names[(i >> 1) & 1]):
                failed += 1
        calls += 1000
        now = time.monotonic()
        if now >= end:
            break
    return {"pid": os.getpid(), "calls": calls, "failed": failed, "seconds": now - t0}


def scenario_storm(seconds: float = 3.0, procs: int = 1) -> Dict:
    """An event storm for SECONDS: prctl(PR_SET_VMA_ANON_NAME) in a tight ctypes loop over the halves of
    a 2-page mapping (first page "storm-a", second "storm-a", first "storm-b", second "storm-b", ...), so
    that every call splits the VMA or merges it back; in PROCS processes (this one and PROCS-1 children
    forked first).  Counts its own calls: each one makes exactly one name_set event (with its result),
    besides the splits, merges and name objects it causes."""
    r, w = os.pipe()
    kids = []
    for _ in range(int(procs) - 1):
        kid = os.fork()
        if kid == 0:
            os.close(r)
            os.write(w, (json.dumps(_storm(seconds)) + "\n").encode())
            os._exit(0)
        kids.append(kid)
    os.close(w)
    runs = [_storm(seconds)]
    for kid in kids:
        os.waitpid(kid, 0)
    with os.fdopen(r) as f:
        runs += [json.loads(line) for line in f]
    took = max(x["seconds"] for x in runs)
    calls = sum(x["calls"] for x in runs)
    return {"procs": len(runs), "calls": calls, "failed": sum(x["failed"] for x in runs), "seconds": took,
            "calls_per_s": calls / took, "runs": runs}


def merge_storm_vmas(vmas: int) -> int:
    """VMAS one-page VMAs named "storm-a"/"storm-b" alternately (so no two merge); their base."""
    base = map_region(vmas)
    for i in range(vmas):
        rc = set_name(base + i * PAGE, PAGE, b"storm-b" if i & 1 else b"storm-a")
        if rc:
            raise OSError(-rc, f"naming VMA {i} failed")
    return base


def scenario_merge_storm(seconds: float = 3.0, vmas: int = 1000, base: Optional[int] = None) -> Dict:
    """A merge storm for SECONDS: mprotect over VMAS one-page VMAs (merge_storm_vmas; with --wait made
    before the ready line, so that a tracer sees the storm only) in a tight loop, PROT_READ and back: each
    call asks the kernel to merge every VMA of the range with its neighbours (vma_modify; vma_merge before
    6.11), one merge event each, which all fail on the names.  Many events per system call: the densest
    storm."""
    vmas = int(vmas)
    if base is None:
        base = merge_storm_vmas(vmas)
    mprotect = ctypes.CDLL(None, use_errno=True).mprotect  # no argtypes: ctypes objects passed as they are
    addr, size = ctypes.c_ulong(base), ctypes.c_ulong(vmas * PAGE)
    calls = failed = 0
    t0 = time.monotonic()
    end = t0 + seconds
    while True:
        for prot in (PROT_READ, PROT_RW):
            if mprotect(addr, size, prot):
                failed += 1
        calls += 2
        now = time.monotonic()
        if now >= end:
            break
    return {"base": base, "end": base + vmas * PAGE, "vmas": vmas, "map_count": len(maps_in(base, base + vmas * PAGE)),
            "calls": calls, "failed": failed,
            "seconds": now - t0, "merge_attempts": calls * vmas, "calls_per_s": calls / (now - t0)}


def scenario_all() -> Dict:
    """names, split and fork in one process (the demo)."""
    return {"names": scenario_names(), "split": scenario_split(), "fork": scenario_fork()}


SCENARIOS = {"forks": scenario_forks, "all": scenario_all, "names": scenario_names, "unnamed": scenario_unnamed, "split": scenario_split,
             "fork": scenario_fork, "noise": scenario_noise, "storm": scenario_storm,
             "merge-storm": scenario_merge_storm}


def main(argv: List[str]) -> int:
    if argv[:1] == ["bench-server"]:
        return bench_server(argv[1:])
    args = [a for a in argv if not a.startswith("--")]
    if not args or args[0] not in SCENARIOS:
        print(f"usage: python3 -m vmatrace_bpf.workload {{{'|'.join(SCENARIOS)}}} [--wait]", file=sys.stderr)
        return 2
    nums = [float(a) for a in args[1:3]] if args[0].endswith("storm") else []  # storm/merge-storm [SECONDS [N]]
    kw = {}
    if "--wait" in argv:
        if args[0] == "merge-storm":  # its VMAs before the ready line: not part of the storm a tracer sees
            kw["base"] = merge_storm_vmas(int(nums[1]) if len(nums) > 1 else 1000)
        faulthandler.register(signal.SIGUSR1)  # a test harness can ask where it is stuck
        print(json.dumps({"pid": os.getpid(), "ready": True}), flush=True)
        sys.stdin.readline()
    out = SCENARIOS[args[0]](*nums, **kw)
    out["pid"] = os.getpid()
    print(json.dumps(out), flush=True)
    if "--wait" in argv:
        sys.stdin.readline()  # stay alive until told, so the PID stays valid while events drain
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

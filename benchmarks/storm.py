"""Event storms: how fast the storm workloads make events, and what vmabpf keeps of them.

    tests/vm/run --kernel 6.12 -- python3 benchmarks/storm.py [prctl|merge] [SECONDS [N]]   (root, test guest)

prctl (the default): `python3 -m vmatrace_bpf.workload storm SECONDS N`, prctl(PR_SET_VMA_ANON_NAME) in a
tight ctypes loop over the halves of a 2-page mapping in N processes (each call makes one name_set event and
splits the VMA or merges it back).  merge: `workload merge-storm SECONDS N`, mprotect toggles over N one-page
VMAs that the names keep apart (each call makes N merge events).  Each runs three times, default buffer:

- untraced: the calls per second the workload reaches;
- `vmabpf record -p PID` (every probe; --children with several processes): calls per second, events
  recorded by type, events lost (counted by the kernel's ring buffer or the perf buffer), the event rate
  the kernel made ((recorded + lost) / the storm's seconds), and whether every event the workload counted
  (name_set, or merge) is recorded or within the lost count;
- a Tracer with that capability's programs only: received + lost == the workload's count?
"""

import json
import os
import select
import subprocess
import sys
import tempfile
from collections import Counter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

WORKLOAD = [sys.executable, "-m", "vmatrace_bpf.workload"]
# kind: (workload scenario, capability, event type it counts, the workload's count of those events)
KINDS = {"prctl": ("storm", "prctl", "name_set", "calls"), "merge": ("merge-storm", "merge", "merge", "merge_attempts")}
KIND = "prctl"


def start(seconds, procs):
    wl = subprocess.Popen(WORKLOAD + [KINDS[KIND][0], str(seconds), str(procs), "--wait"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, cwd=REPO, bufsize=1)
    return wl, json.loads(wl.stdout.readline())["pid"]


def finish(wl):
    wl.stdin.write("\n")
    wl.stdin.close()
    wl.wait(timeout=120)


def untraced(seconds, procs):
    wl, _ = start(seconds, procs)
    wl.stdin.write("\n")
    wl.stdin.flush()
    res = json.loads(wl.stdout.readline())
    finish(wl)
    return res


def recorded(seconds, procs, path):
    wl, pid = start(seconds, procs)
    rec = subprocess.Popen([sys.executable, "-m", "vmatrace_bpf", "record", "-o", path, "-p", str(pid)]
                           + (["--children"] if KIND == "prctl" and procs > 1 else []),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO, bufsize=1)
    for line in rec.stderr:
        if "Hit Ctrl-C to end." in line:
            break
    else:
        sys.exit(f"storm: record did not start (exit status {rec.wait()})")
    wl.stdin.write("\n")
    wl.stdin.flush()
    res = json.loads(wl.stdout.readline())
    finish(wl)
    rec.communicate(timeout=600)
    with open(path) as f:
        return res, [json.loads(ln) for ln in f]


def one_capability(seconds, procs):
    from vmatrace_bpf.kernel import KernelInfo
    from vmatrace_bpf.loader import Tracer
    from vmatrace_bpf.plan import choose
    kinfo = KernelInfo.live()
    wl, pid = start(seconds, procs)
    got = Counter()
    # one process: its PID only; several: every process but this one (a prctl-only plan does not follow
    # children), nothing else in a test guest names VMAs (if it did, received + lost would exceed the calls)
    one = KIND == "merge" or procs == 1
    t = Tracer(choose(kinfo, only=[KINDS[KIND][1]]), kinfo, lambda ev: got.update([ev["type"]]),
               pids=[pid] if one else [], filter_pids=one)
    try:
        t.start()
        wl.stdin.write("\n")
        wl.stdin.flush()
        while not select.select([wl.stdout], [], [], 0)[0]:
            t.poll(100)
        res = json.loads(wl.stdout.readline())
        t.drain()
        lost = t.lost()
    finally:
        t.close()
        finish(wl)
    return res, got, lost


def main():
    global KIND
    args = sys.argv[1:]
    if args and args[0] in KINDS:
        KIND = args.pop(0)
    _, _, etype, count = KINDS[KIND]
    seconds = float(args[0]) if args else 3.0
    n = int(args[1]) if len(args) > 1 else (1 if KIND == "prctl" else 1000)
    off = untraced(seconds, n)
    what = f"{n} process{'es' if n > 1 else ''}" if KIND == "prctl" else f"mprotect over {n} VMAs"
    print(f"{KIND} storm: {what}, {seconds:g} s; default buffer everywhere")
    print(f"untraced: {off['calls']:,} calls in {off['seconds']:.2f} s = {off['calls_per_s'] / 1000:.1f}k calls/s = "
          f"{off[count] / off['seconds'] / 1000:.1f}k {etype} events/s ({off['failed']} failed)")
    with tempfile.TemporaryDirectory() as d:
        on, lines = recorded(seconds, n, os.path.join(d, "storm.vmabpf.jsonl"))
    pids = {r["pid"] for r in on["runs"]} if "runs" in on else {on["pid"]}
    footer = lines[-1]
    types = Counter(e["type"] for e in lines[1:-1] if e["type"] != "lost")
    lost = sum(e["count"] for e in lines if e["type"] == "lost")
    got = sum(types.values())
    # the workload's own events: name_set of its processes; merges of VMAs in its range (not the interpreter's)
    mine = sum(1 for e in lines if e.get("type") == etype and e.get("pid") in pids
               and ("base" not in on or on["base"] <= e["start"] < on["end"]))
    rate = (got + lost) / on["seconds"]
    print(f"record, every probe: {on['calls']:,} calls in {on['seconds']:.2f} s = "
          f"{on['calls_per_s'] / 1000:.1f}k calls/s ({on['calls_per_s'] / off['calls_per_s']:.2f} x untraced)")
    print(f"  events recorded: {got:,} ({', '.join(f'{t} {k:,}' for t, k in types.most_common())}); "
          f"lost (counted): {lost:,} = {lost / max(1, got + lost) * 100:.1f}% (footer: {footer.get('lost_events')})")
    print(f"  events made by the kernel: {got + lost:,} = {rate / 1000:.1f}k events/s "
          f"[target >= 100k events/s: {'ok' if rate >= 100e3 else 'SLOW'}]")
    ok = mine <= on[count] and on[count] - mine <= lost
    print(f"  {etype} events: {mine:,} of the workload's {on[count]:,}; missing {on[count] - mine:,} "
          f"{'<=' if ok else '>'} lost {lost:,}: {'nothing lost silently' if ok else 'EVENTS LOST SILENTLY'}")
    res, types, lost = one_capability(seconds, n)
    exact = types[etype] + lost == res[count] and set(types) <= {etype}
    print(f"Tracer, {KINDS[KIND][1]} programs only: {res[count]:,} {etype} events in {res['seconds']:.2f} s = "
          f"{res[count] / res['seconds'] / 1000:.1f}k events/s; received {types[etype]:,}, lost (counted) "
          f"{lost:,} = {lost / max(1, res[count]) * 100:.1f}%; received + lost == the workload's count: {exact}")
    if KIND == "merge":
        print(f"  VMAs in the range at the end: {res['map_count']} of {res['vmas']} (none merged)")
    print(f"load average now: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    return 0 if ok and exact else 1


if __name__ == "__main__":
    sys.exit(main())

"""Event storms: workloads naming VMAs as fast as ctypes can call prctl (workload.py `storm`) or
mprotect-ing hundreds of VMAs that cannot merge (`merge-storm`), traced at the default buffer size.
Whatever the consumer cannot keep up with must be counted as lost, never dropped silently: events
received + lost == the workload's own count of the operations that each make one event."""

import json
import select
import subprocess

from guestutil import REPO, VMABPF, finish, go, readline, start_workload, wait_banner
from vmatrace_bpf.kernel import KernelInfo
from vmatrace_bpf.loader import Tracer
from vmatrace_bpf.plan import choose

SECONDS = "1"


def storm_traced(capability, scenario, *args):
    """SCENARIO under a Tracer with CAPABILITY's programs only: (the workload's result, events, lost)."""
    kinfo = KernelInfo.live()
    plan = choose(kinfo, only=[capability])
    assert not plan.missing, plan.missing_line()
    wl, pid = start_workload(scenario, *args)
    got = []
    t = Tracer(plan, kinfo, got.append, pids=[pid], filter_pids=True)  # the default buffer (record's)
    try:
        t.start()
        wl.stdin.write("\n")
        wl.stdin.flush()
        while not select.select([wl.stdout], [], [], 0)[0]:  # poll as record does until the storm ends
            t.poll(100)
        res = json.loads(readline(wl, wl.stdout, "storm result"))
        t.drain()  # every event of a finished call is queued already
        lost = t.lost()
    finally:
        t.close()
        finish(wl)
    assert t.undecodable == 0 and res["failed"] == 0 and res["calls"] > 0, res
    assert all(e["pid"] == pid for e in got)
    return res, got, lost


def test_prctl_storm_every_event_received_or_counted_lost(bcc_to_ourselves):
    """Only the prctl programs: each call makes exactly one name_set event, so the sum is exact."""
    res, got, lost = storm_traced("prctl", "storm", SECONDS)
    assert {e["type"] for e in got} <= {"name_set"}
    assert len(got) + lost == res["calls"], (len(got), lost, res)
    assert all(e["ret"] == 0 for e in got)


def test_merge_storm_every_event_received_or_counted_lost(bcc_to_ourselves):
    """Only the merge programs: each mprotect over the VMAs makes one merge attempt per VMA (none merges:
    the names differ), so the sum is exact; hundreds of events per system call."""
    res, got, lost = storm_traced("merge", "merge-storm", SECONDS, "500")
    assert res["vmas"] == res["map_count"] == 500, res  # nothing merged, nothing split
    assert {e["type"] for e in got} <= {"merge"}
    assert len(got) + lost == res["merge_attempts"] == res["calls"] * 500, (len(got), lost, res)
    assert all(e["outcome"] == "none" for e in got)


def test_record_under_storm_counts_what_it_lost(tmp_path, bcc_to_ourselves):
    """`record` with every probe: name_set events that did not arrive are within the lost count it wrote
    (the other events a call makes, splits, merges, name objects, also compete for the buffer)."""
    out = tmp_path / "storm.vmabpf.jsonl"
    wl, pid = start_workload("storm", SECONDS)
    rec = subprocess.Popen(VMABPF + ["record", "-o", str(out), "-p", str(pid)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, errors="replace", cwd=REPO, bufsize=1)
    wait_banner(rec)
    res = go(wl)
    finish(wl)  # record ends when the process exits
    _, err = rec.communicate(timeout=300)
    assert rec.returncode == 0 and "Traceback" not in err, err
    lines = [json.loads(ln) for ln in open(out)]
    footer = lines[-1]
    assert footer["type"] == "footer" and footer["reason"] == "exit", footer
    evs = [e for e in lines[1:-1] if e["type"] != "lost"]
    lost = sum(e["count"] for e in lines if e["type"] == "lost")
    assert footer["lost_events"] == lost and footer["events"] == len(lines) - 2, footer  # lost lines count too
    names = sum(e["type"] == "name_set" and e["pid"] == pid for e in evs)
    assert res["failed"] == 0 and names <= res["calls"], (names, res)
    assert res["calls"] - names <= lost, (names, lost, res)
    if lost == 0:
        assert names == res["calls"]

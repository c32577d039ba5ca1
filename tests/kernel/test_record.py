"""`vmabpf record` then `vmabpf report`, against `vmabpf watch` on the same workload.

record and watch trace the same workload process at the same time (two tracer processes, each with its own
programs and buffers), so they see the same kernel events, each with the time its own probe took (ts and
dup_mmap latency differ by the other probe's run time): the offline report of the recording must equal
watch's final summary field by field, timing fields aside.  Both compile their BPF program in
parallel, which keeps this to one compile round (~20 s under TCG)."""

import json
import signal
import subprocess
import time

from guestutil import REPO, VMABPF, go, start_workload, wait_banner


def start(*args, stdout=subprocess.PIPE):
    return subprocess.Popen(VMABPF + list(args), stdout=stdout, stderr=subprocess.PIPE, text=True, errors="replace",
                            cwd=REPO)


def banner(proc):
    return wait_banner(proc)


def untimed(ev):
    return {k: v for k, v in ev.items() if k not in ("ts", "latency_ns")}


def diff(a, b, path=""):
    """Paths where two JSON values differ (for a readable failure)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += diff(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{path}.{k}")
        return out
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_record_then_report_equals_watch(tmp_path):
    rec_file = tmp_path / "names.vmabpf.jsonl"
    wl, pid = start_workload("all")
    rec = start("record", "-o", str(rec_file), "-p", str(pid), stdout=subprocess.DEVNULL)
    w = start("watch", "-p", str(pid), "-j")
    rec_banner = banner(rec)
    banner(w)
    assert f"Recording named-VMA events of PID {pid} to {rec_file}" in rec_banner
    go(wl)
    time.sleep(2)  # let both 100 ms poll loops deliver
    rec.send_signal(signal.SIGTERM)
    w.send_signal(signal.SIGINT)
    _, rec_err = rec.communicate(timeout=60)
    w_out, w_err = w.communicate(timeout=60)
    wl.stdin.write("\n")
    wl.stdin.close()
    wl.wait(timeout=30)
    assert rec.returncode == 0 and "Traceback" not in rec_err, rec_err
    assert w.returncode == 0, w_err

    # the recording: header, events, footer (SIGTERM ended it cleanly)
    recs = [json.loads(line) for line in open(rec_file)]
    hdr, ftr = recs[0], recs[-1]
    assert hdr["type"] == "header" and hdr["format"] == "vmabpf-record" and hdr["pid_filter"] == [pid]
    assert hdr["kernel_release"] == open("/proc/sys/kernel/osrelease").read().strip()
    assert {c["capability"] for c in hdr["plan"]["capabilities"]} >= {"merge", "fork"}
    assert ftr["type"] == "footer" and ftr["reason"] == "SIGTERM" and ftr["events"] == len(recs) - 2
    assert ftr["lost_events"] == 0
    assert f"Recorded {ftr['events']} events (0 lost)" in rec_err

    # the same events as watch printed (each tracer timed them itself)
    w_lines = [json.loads(line) for line in w_out.splitlines()]
    w_events = [e for e in w_lines if e["type"] != "summary"]
    assert [untimed(e) for e in recs[1:-1]] == [untimed(e) for e in w_events]

    # report of the file == watch's final summary, field by field
    r = subprocess.run(VMABPF + ["report", "--format", "json", str(rec_file)], capture_output=True, text=True,
                       errors="replace", cwd=REPO)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    rep = json.loads(r.stdout)
    final = [e for e in w_lines if e["type"] == "summary" and e["final"]][0]
    rep_proc = {p["pid"]: p for p in rep["processes"]}[pid]
    w_proc = {p["pid"]: p for p in final["processes"]}[pid]
    assert [d for d in diff(rep_proc, w_proc) if not d.startswith(".forks.latency_ns.")] == []
    assert rep["lost_events"] == final["lost_events"] == 0

    # and the workload's known numbers (names: a, a, b set; bad$name and 80 x's EINVAL; unmapped ENOMEM;
    # split: 'mid'; fork: k0..k4)
    p = rep_proc
    assert p["names"]["set"] == 9 and p["names"]["rejected"] == {"EINVAL": 2, "ENOMEM": 1}
    assert p["merges"]["blocked_by_name_only"] >= 1 and p["vmas_cost_by_names"] >= 1
    assert any(t["neighbour"] == "a" and t["proposed"] == "b" for t in p["merges"]["top_name_pairs"])
    assert p["splits"]["count"] >= 2 and p["splits"]["max_refcount_by_name"]["mid"] == 3
    assert p["forks"]["count"] == 1 and p["forks"]["refcount_increments"] >= 5
    assert p["forks"]["latency_ns"]["p50"] > 0
    assert p["sharing"]["a"]["set"] == 2 and p["sharing"]["mid"]["max_refcount"] == 3

    # the chrome export of a real recording: one slice for the fork, instants for the rest
    r = subprocess.run(VMABPF + ["report", "--format", "chrome", "-p", str(pid), str(rec_file)],
                       capture_output=True, text=True, errors="replace", cwd=REPO)
    assert r.returncode == 0, r.stderr
    trace = json.loads(r.stdout)["traceEvents"]
    assert len([e for e in trace if e["ph"] == "X" and e["pid"] == pid]) == 1
    assert any(e["ph"] == "i" and e.get("cat") == "merge" for e in trace)


def test_record_all_processes_to_stdout_for_a_duration():
    """No -p: every process; -o -: the recording on stdout; --duration ends it (footer reason "duration")."""
    rec = start("record", "-o", "-", "--duration", "10")
    assert "of all processes to stdout" in banner(rec)
    wl, pid = start_workload("names")
    go(wl)
    wl.stdin.write("\n")
    wl.stdin.close()
    wl.wait(timeout=30)
    out, err = rec.communicate(timeout=60)
    assert rec.returncode == 0 and "Traceback" not in err, err
    recs = [json.loads(line) for line in out.splitlines()]  # stdout holds the recording and nothing else
    assert recs[0]["type"] == "header" and recs[0]["pid_filter"] == [] and recs[0]["children"] is False
    assert recs[-1]["type"] == "footer" and recs[-1]["reason"] == "duration"
    assert not [e for e in recs[1:-1] if e.get("pid") == rec.pid]  # vmabpf does not trace itself
    mine = [e for e in recs[1:-1] if e.get("pid") == pid]
    assert [(e["name"], e["err"]) for e in mine if e["type"] == "name_set"] == [
        ("a", None), ("a", None), ("b", None), ("bad$name", "EINVAL"), ("x" * 79, "EINVAL"), ("nowhere", "ENOMEM")]

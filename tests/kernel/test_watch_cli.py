"""`vmabpf watch` as a user runs it: a subprocess, JSON output, Ctrl-C, exits."""

import json
import os
import re
import signal
import subprocess
import time

from vmatrace_bpf.aggregate import Aggregator

from guestutil import REPO, VMABPF, finish, go, start_vmabpf, start_workload


def kprobe_events():
    with open("/sys/kernel/tracing/kprobe_events") as f:
        return f.read()


def test_watch_json_then_ctrl_c(tmp_path):
    before = kprobe_events()
    wl, pid = start_workload("names")
    w = start_vmabpf("watch", "-p", str(pid), "-j", "1")  # and a summary every second
    assert kprobe_events() != before  # attached
    res = go(wl)
    time.sleep(2)  # let the 100 ms poll loop deliver
    w.send_signal(signal.SIGINT)
    out, err = w.communicate(timeout=60)
    assert w.returncode == 0, err
    assert "Traceback" not in err
    lines = [json.loads(line) for line in out.splitlines()]  # every line is real JSON
    events = [e for e in lines if e["type"] != "summary"]
    summary = [e for e in lines if e["type"] == "summary" and e["final"]]
    assert len(summary) == 1 and summary[0] is lines[-1]
    assert [e for e in lines if e["type"] == "summary" and not e["final"]]  # the interval summaries
    assert {e["pid"] for e in events} == {pid}
    sets = [(e["name"], e["err"]) for e in events if e["type"] == "name_set"]
    assert sets == [("a", None), ("a", None), ("b", None), ("bad$name", "EINVAL"), ("x" * 79, "EINVAL"),
                    ("nowhere", "ENOMEM")]
    region = [e for e in events if e["type"] == "merge" and res["base"] <= e["start"] < res["end"]
              and e["source"] != "new_range"]
    assert [m["outcome"] for m in region] == ["none", "prev", "none"]
    assert region[2]["prev_cause"] == ["name"]
    # the final summary is the same aggregation of the same events
    proc = summary[0]["processes"][0]
    assert proc == Aggregator().add_all(events).summary()["processes"][0]
    assert proc["names"]["set"] == 3 and proc["names"]["rejected"] == {"EINVAL": 2, "ENOMEM": 1}
    assert proc["merges"]["blocked_by_name_only"] >= 1
    assert summary[0]["lost_events"] == 0
    # Ctrl-C detached everything
    assert kprobe_events() == before
    finish(wl)


def test_watch_children_and_process_exit():
    wl, pid = start_workload("fork")
    w = start_vmabpf("watch", "-p", str(pid), "--children")
    res = go(wl)
    finish(wl)
    out, err = w.communicate(timeout=60)
    assert w.returncode == 0, err
    assert f"PID {pid} exited" in err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["PID", "COMM", "EVENT", "DETAIL"]
    forks = [ln for ln in lines if " FORK " in ln]
    assert len(forks) == 1 and f"child {res['child']}" in forks[0] and "named=5" in forks[0]
    assert any(" EXIT " in ln for ln in lines)
    # --children: the child's own prctl is traced under its PID
    child_names = [ln for ln in lines if ln.startswith(str(res["child"])) and " NAME " in ln]
    assert len(child_names) == 1 and "'child' ok" in child_names[0]
    assert all(len(ln) <= 80 for ln in lines if " FORK " in ln or " MERGE " in ln or " NAME " in ln)
    assert "lost events: 0" in out


def test_watch_missing_pid_one_line():
    r = subprocess.run(VMABPF + ["watch", "-p", "999999"], capture_output=True, text=True, errors="replace", cwd=REPO)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == ["vmabpf: no process with PID 999999 (check the number with ps; "
                                             "it may have exited)"]


def test_watch_non_root_one_line():
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                        "--bounding-set=-all"] + VMABPF + ["watch", "-p", "1"],
                       capture_output=True, text=True, errors="replace", cwd=REPO, env={**os.environ, "HOME": "/tmp"})
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vmabpf: cannot trace on this kernel: privileges"), r.stderr
    assert "Traceback" not in r.stderr


def test_doctor_names_the_merge_prototype_it_checked(kinfo):
    """doctor, as a user runs it here: exit 0, and the merge path's prototype as this kernel's BTF has it."""
    from vmatrace_bpf.plan import choose
    merge = choose(kinfo).choices["merge"]
    r = subprocess.run(VMABPF + ["doctor"], capture_output=True, text=True, errors="replace", cwd=REPO, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    proto = kinfo.btf.func_prototypes(merge.probes[0].target)[0]
    assert f"  merge: {proto.text()} [BTF]: " in r.stdout  # e.g. vma_merge(vmi, mm, prev, ...) on 6.6
    assert re.search(rf"^merge\s+{re.escape(merge.variant.name)}\s", r.stdout, re.M)

"""The tracefs backend against the bcc backend: one workload, both tracing it at once, the same events.

Both tracers watch the same process during the same run, so every field but the times must agree
(addresses, names, causes, refcounts, child PIDs, VMA counts).  Times differ by design (trace_pipe
prints microseconds); name frees are not traced with tracefs (plan.py says why).
"""

import json
import os
import signal
import subprocess
import time

import pytest

from guestutil import REPO, VMABPF, readline, wait_banner
from vmatrace_bpf.plan import choose
from vmatrace_bpf.tracefs import PREFIX, TracefsTracer

TIMES = ("ts", "latency_ns")


def _strip(ev):
    return {k: v for k, v in ev.items() if k not in TIMES}


@pytest.fixture(scope="module")
def tracefs_tracer(kinfo):
    events = []
    plan = choose(kinfo, backend="tracefs")
    t = TracefsTracer(plan, kinfo, events.append, filter_pids=True).start()
    t.events = events
    yield t
    t.close()


def _run_both(collector, tracefs_tracer, scenario):
    """Run SCENARIO watched by both tracers; (result, bcc events, tracefs events) of its PID."""
    p, pid = collector.spawn(scenario)
    collector.tracer.watch_pid(pid)
    tracefs_tracer.watch_pid(pid)
    p.stdin.write("\n")
    p.stdin.flush()
    result = json.loads(readline(p, p.stdout, "result from the workload"))
    p.stdin.write("\n")
    p.stdin.close()
    p.wait(timeout=60)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        collector.tracer.poll(50)
        tracefs_tracer.poll(50)
    tracefs_tracer.drain()
    mine = [e for e in collector.events if e["pid"] == pid]
    theirs = [e for e in tracefs_tracer.events if e["pid"] == pid]
    return result, mine, theirs


def _compare(bcc, tfs, types):
    for t in types:
        a = [_strip(e) for e in bcc if e["type"] == t]
        b = [_strip(e) for e in tfs if e["type"] == t]
        assert a, f"the workload made no {t} event under bcc: the comparison would prove nothing"
        assert b == a, f"{t} events differ between bcc and tracefs"


@pytest.mark.parametrize("scenario,types", [
    ("names", ("name_set", "merge", "split", "name_alloc")),
    ("unnamed", ("merge",)),
    ("split", ("split", "name_set")),
])
def test_same_events_as_bcc(collector, tracefs_tracer, scenario, types):
    _, bcc, tfs = _run_both(collector, tracefs_tracer, scenario)
    _compare(bcc, tfs, types)
    assert tracefs_tracer.lost() == 0


def test_fork_same_as_bcc(collector, tracefs_tracer):
    assert tracefs_tracer.plan.choices["fork"].variant is not None, \
        tracefs_tracer.plan.choices["fork"].why_missing()
    result, bcc, tfs = _run_both(collector, tracefs_tracer, "fork")
    a = [_strip(e) for e in bcc if e["type"] == "fork"]
    b = [_strip(e) for e in tfs if e["type"] == "fork"]
    assert [e["child_pid"] for e in a] == [result["child"]]  # one fork, the workload's
    assert a[0]["named_copied"] >= result["k"]  # its K named VMAs at least (the interpreter may name more)
    assert b == a
    lat = [e["latency_ns"] for e in tfs if e["type"] == "fork"]
    assert all(x > 0 and x % 1000 == 0 for x in lat), lat  # microsecond resolution, and measured


def test_name_free_refused_with_reason(tracefs_tracer):
    ch = tracefs_tracer.plan.choices["name_free"]
    assert ch.variant is None
    assert "kfree" in ch.why_missing()


def test_instance_and_probes_removed(kinfo):
    plan = choose(kinfo, backend="tracefs")
    t = TracefsTracer(plan, kinfo, lambda ev: None, pids=[os.getpid()], filter_pids=True).start()
    inst = os.path.join(kinfo.files.tracefs, t.inst)
    assert os.path.isdir(inst)
    with open(os.path.join(kinfo.files.tracefs, "kprobe_events")) as f:
        assert t.group in f.read()
    t.close()
    assert not os.path.exists(inst)
    with open(os.path.join(kinfo.files.tracefs, "kprobe_events")) as f:
        assert t.group not in f.read()


def test_stale_instance_of_a_dead_vmabpf_removed(kinfo):
    """A vmabpf killed with SIGKILL leaves its instance and probes; the next start removes them."""
    p = subprocess.Popen(VMABPF + ["watch", "--backend", "tracefs", "-p", str(os.getpid())],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
    wait_banner(p)
    inst = os.path.join(kinfo.files.tracefs, "instances", f"{PREFIX}-{p.pid}")
    assert os.path.isdir(inst)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert os.path.isdir(inst)  # left behind
    plan = choose(kinfo, backend="tracefs")
    TracefsTracer(plan, kinfo, lambda ev: None, pids=[os.getpid()]).start().close()
    assert not os.path.exists(inst)
    with open(os.path.join(kinfo.files.tracefs, "kprobe_events")) as f:
        assert f"{PREFIX}_{p.pid}/" not in f.read()


KINDS = ("name_set", "merge", "split", "fork", "name_alloc")  # what both backends trace


def _side_by_side(collector, commands):
    """One `all` workload watched by the session's bcc COLLECTOR and by each `vmabpf ARGS -p PID -j`
    (name -> (ARGS, env)) at once: name -> the events each saw (times stripped), "bcc" the collector's."""
    p_wl, pid = collector.spawn("all")
    procs = {}
    for name, (args, env) in commands.items():
        procs[name] = subprocess.Popen(VMABPF + args + ["-p", str(pid), "-j"], stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
        wait_banner(procs[name])
    collector.tracer.watch_pid(pid)
    p_wl.stdin.write("\n")
    p_wl.stdin.flush()
    readline(p_wl, p_wl.stdout, "result")
    p_wl.stdin.write("\n")
    p_wl.stdin.close()
    p_wl.wait(timeout=60)
    outs = {}
    for name, p in procs.items():
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs[name] = [_strip(e) for e in map(json.loads, out.splitlines()) if e["type"] in KINDS]
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        collector.tracer.poll(100)
    collector.tracer.unwatch_pid(pid)
    outs["bcc"] = [_strip(e) for e in collector.events if e["pid"] == pid and e["type"] in KINDS]
    return outs


def _adb_env(tmp_path):
    env = dict(os.environ, PATH=os.path.join(REPO, "tests", "bin") + os.pathsep + os.environ["PATH"],
               FAKE_ADB_LOCAL="1", FAKE_ADB_LOG=str(tmp_path / "adb.log"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.pop("FAKE_ADB_ROOT", None)
    return env


def test_watch_cli_and_adb_print_the_bcc_events(collector, kinfo, tmp_path):
    """`vmabpf watch --backend tracefs -p PID -j` and `vmabpf watch --adb -p PID -j` (tracefs over `adb shell`,
    here a stand-in adb that runs the device command on this machine) beside the bcc tracer on one workload:
    the same events, times aside.  The device's kernel files are pulled once: a second start reads none."""
    env = _adb_env(tmp_path)
    outs = _side_by_side(collector, {"tracefs": (["watch", "--backend", "tracefs"], None),
                                     "adb": (["watch", "--adb"], env)})
    assert outs["bcc"], "the workload made no event under bcc: the comparison would prove nothing"
    assert outs["tracefs"] == outs["bcc"]
    assert outs["adb"] == outs["bcc"]
    log = (tmp_path / "adb.log").read_text()
    assert "cat /proc/kallsyms" in log and "/sys/kernel/btf/vmlinux" in log
    # the watch over adb removed its instance (what is left is this process's own tracers', if any)
    left = [n for n in os.listdir(os.path.join(kinfo.files.tracefs, "instances")) if n.startswith(PREFIX + "-")]
    assert all(n.split("-")[1] == str(os.getpid()) for n in left), left
    # a second start: the cached device files, none pulled again
    (tmp_path / "adb.log").write_text("")
    p = subprocess.Popen(VMABPF + ["watch", "--adb", "-p", str(os.getpid()), "--duration", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    wait_banner(p)
    assert p.wait(timeout=120) == 0
    assert "kallsyms" not in (tmp_path / "adb.log").read_text()


def test_adb_dying_ends_the_trace_and_removes_the_instance(kinfo, tmp_path):
    """The long-lived `adb shell cat trace_pipe` dies (USB unplugged): watch stops, says so, exits 0, and the
    probes and the instance are removed (here the "device" is still reachable for the clean-up)."""
    env = _adb_env(tmp_path)
    p = subprocess.Popen(VMABPF + ["watch", "--adb", "-p", str(os.getpid())], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    wait_banner(p)
    inst = f"instances/{PREFIX}-{p.pid}/trace_pipe"
    assert subprocess.run(["pkill", "-f", f"cat .*{inst}"]).returncode == 0
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert "trace pipe closed" in err
    assert not os.path.exists(os.path.join(kinfo.files.tracefs, f"instances/{PREFIX}-{p.pid}"))
    with open(os.path.join(kinfo.files.tracefs, "kprobe_events")) as f:
        assert f"{PREFIX}_{p.pid}/" not in f.read()


def test_ctrl_c_removes_the_instance_and_probes(kinfo):
    """SIGINT (Ctrl-C) ends `watch --backend tracefs` with its summary, exit 0, nothing left in tracefs."""
    p = subprocess.Popen(VMABPF + ["watch", "--backend", "tracefs", "-p", str(os.getpid())], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=REPO)
    wait_banner(p)
    assert os.path.isdir(os.path.join(kinfo.files.tracefs, f"instances/{PREFIX}-{p.pid}"))
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert "Traceback" not in err
    assert not os.path.exists(os.path.join(kinfo.files.tracefs, f"instances/{PREFIX}-{p.pid}"))
    with open(os.path.join(kinfo.files.tracefs, "kprobe_events")) as f:
        assert f"{PREFIX}_{p.pid}/" not in f.read()

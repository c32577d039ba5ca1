"""tracefs changes in batches: a device (tests/bin/adb, here running the device command on this machine) must
carry out a batch exactly as this machine's LocalFS does -- the same files, the same errors at the same ops --
in one `adb shell` per batch; and the tracer's set-up, polling and tear-down take a fixed number of round trips
however many probes the plan has (each was one `adb shell` per write: ~100 per watch)."""

import errno
import os
import shutil

import pytest

from vmatrace_bpf import tracefs_adb
from vmatrace_bpf.tracefs import TracefsTracer
from vmatrace_bpf.tracefs_adb import Device
from vmatrace_bpf.tracefs_io import LocalFS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def device(tmp_path, monkeypatch):
    """A Device whose "tracefs" is the directory tmp_path/dev (no device: the stand-in adb runs the command here)."""
    monkeypatch.setenv("PATH", os.path.join(REPO, "tests", "bin") + os.pathsep + os.environ["PATH"])
    monkeypatch.setenv("FAKE_ADB_LOCAL", "1")
    monkeypatch.setenv("FAKE_ADB_LOG", str(tmp_path / "adb.log"))
    monkeypatch.delenv("FAKE_ADB_NO_SHELL_PROTOCOL", raising=False)
    monkeypatch.delenv("FAKE_ADB_DEVICES", raising=False)
    (tmp_path / "dev").mkdir()
    d = Device.__new__(Device)  # (its __init__ asks the device for root and its tracefs)
    d.adb, d.serial, d.how, d.root = "adb", None, "adb root", str(tmp_path / "dev")
    d.pipes, d._alive, d._tgid = {}, {}, {}
    real = tracefs_adb.adbmod.shell
    d.calls = []

    def shell(*a, **k):
        d.calls.append(a[2])
        return real(*a, **k)
    monkeypatch.setattr(tracefs_adb.adbmod, "shell", shell)
    return d


def tree(root):
    out = {}
    for dirpath, dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        out[rel] = None
        for f in files:
            with open(os.path.join(dirpath, f)) as fh:
                out[os.path.join(rel, f)] = fh.read()
    return out


OPS = [("mkdir", "inst"), ("mkdir", "inst/options"), ("append", "kprobe_events", "p:g/a f\n"),
       ("append", "kprobe_events", "p:g/b f $arg1 'quoted' \"x\" $(id)\n"), ("write", "w", "1"),
       ("write", "w", "0"), ("write", "missing/y", "1"), ("mkdir", "inst"), ("rmdir", "nowhere"),
       ("append", "kprobe_events", "-:g/a\n")]


def _errnos(errs):
    return [None if e is None else e.errno for e in errs]


@pytest.mark.parametrize("stop", [False, True])
def test_a_device_batch_does_what_localfs_does(device, tmp_path, stop):
    local = tmp_path / "local"
    local.mkdir()
    for root in (local, tmp_path / "dev"):
        (root / "kprobe_events").write_text("")
        (root / "w").write_text("old")  # (tracefs files exist; neither side makes new ones here)
        (root / "inst_old").mkdir()
    ops = OPS + [("rmdir", "inst_old")]
    want = LocalFS(str(local)).batch(ops, stop=stop)
    got = device.batch(ops, stop=stop)
    assert _errnos(got) == _errnos(want)
    assert _errnos(want)[6:9] == [errno.ENOENT, errno.EEXIST, errno.ENOENT][:len(want) - 6]
    assert len(want) == (7 if stop else len(ops))
    assert tree(tmp_path / "dev") == tree(local)
    assert "$(id)" in (local / "kprobe_events").read_text()  # (the text is written, never run)
    assert [e.filename for e in got if e] == [device.path(op[1]) for op, e in zip(ops, want) if e]
    assert len(device.calls) == 1


def test_a_long_batch_is_split_and_still_stops_at_the_first_failure(device, tmp_path, monkeypatch):
    monkeypatch.setattr(tracefs_adb, "_SCRIPT_MAX", 200)
    dev = tmp_path / "dev"
    (dev / "f").write_text("")
    ops = [("append", "f", f"line {i}\n") for i in range(30)] + [("write", "nodir/x", "1")] + \
        [("append", "f", "after\n")]
    errs = device.batch(ops)
    assert _errnos(errs) == [None] * 30 + [errno.ENOENT]
    assert (dev / "f").read_text() == "".join(f"line {i}\n" for i in range(30))
    assert 1 < len(device.calls) < 30


def test_read_many_gives_each_text_whole(device, tmp_path):
    dev = tmp_path / "dev"
    (dev / "a").write_text("overrun: 3\ndropped events: 4\n")
    (dev / "b").write_text("no last newline")
    (dev / "c").write_text("")
    (dev / "d").write_text("\n\n@@vmabpf-file 0\n")  # a text that looks like the marker, not at a line start
    rels = ["a", "b", "missing", "c", "d"]
    want = LocalFS(str(dev)).read_many(rels)
    assert want == ["overrun: 3\ndropped events: 4\n", "no last newline", None, "", "\n\n@@vmabpf-file 0\n"]
    # a marker line inside a text would end that text early: tracefs stats never hold one
    assert device.read_many(rels[:4]) == want[:4]
    assert len(device.calls) == 1


class FakeTracefs(LocalFS):
    """A directory that behaves as tracefs does for the tracer: kprobe_events takes "p:G/E ..." and "-:G/E"
    lines, mkdir of an instance makes its files (and a directory per defined event), rmdir removes it."""

    def __init__(self, root):
        super().__init__(str(root))
        for f in ("kprobe_events", "README", "error_log"):
            (root / f).write_text("")
        (root / "instances").mkdir()

    def write(self, rel, text, append=False):
        if rel != "kprobe_events":
            return super().write(rel, text, append)
        lines = self.read(rel).splitlines()
        if text.startswith("-:"):
            event = text[2:].strip()
            if not any(ln.split()[0].split(":", 1)[1] == event for ln in lines):
                raise OSError(errno.ENOENT, "No such file or directory", self.path(rel))
            lines = [ln for ln in lines if ln.split()[0].split(":", 1)[1] != event]
        else:
            lines.append(text.strip())
        with open(self.path(rel), "w") as f:
            f.write("".join(ln + "\n" for ln in lines))

    def mkdir(self, rel):
        super().mkdir(rel)
        inst = self.path(rel)
        files = ["tracing_on", "trace_clock", "buffer_size_kb", "set_event_pid", "trace_marker", "trace_pipe",
                 "options/record-tgid", "options/overwrite", "options/event-fork",
                 "events/sched/sched_process_fork/enable", "per_cpu/cpu0/stats", "per_cpu/cpu1/stats"]
        for line in self.read("kprobe_events").splitlines():
            group, event = line.split()[0].split(":", 1)[1].split("/")
            files += [f"events/{group}/enable", f"events/{group}/{event}/enable", f"events/{group}/{event}/filter"]
        for f in files:
            os.makedirs(os.path.dirname(os.path.join(inst, f)), exist_ok=True)
            with open(os.path.join(inst, f), "w"):
                pass

    def rmdir(self, rel):
        if not os.path.isdir(self.path(rel)):
            raise OSError(errno.ENOENT, "No such file or directory", self.path(rel))
        shutil.rmtree(self.path(rel))


class RoundTrips:
    """An fs whose calls are counted: each is one `adb shell` on a device."""

    def __init__(self, fs):
        self.fs = fs
        self.trips = []

    def __getattr__(self, name):
        fn = getattr(self.fs, name)
        if name in ("read", "write", "exists", "listdir", "mkdir", "rmdir", "batch", "read_many", "open_pipe"):
            def counted(*a, **k):
                self.trips.append(name)
                return fn(*a, **k)
            return counted
        return fn


def test_setup_poll_and_teardown_take_a_fixed_number_of_round_trips(tmp_path, monkeypatch, saved_kernel):
    """Set-up, polling and tear-down of a tracer with every probe of the 6.12 plan, against a directory made to
    behave like tracefs: the round trips (calls a device makes one `adb shell` each) do not grow with the probes."""
    from vmatrace_bpf import plan as planmod
    kinfo = saved_kernel("x86_64", "6.12.117")
    plan = planmod.choose(kinfo, backend="tracefs")
    root = tmp_path / "tracefs"
    root.mkdir()
    fs = RoundTrips(FakeTracefs(root))
    monkeypatch.setattr(TracefsTracer, "_count", 0)
    tr = TracefsTracer(plan, kinfo, lambda ev: None, pids=[os.getpid()], fs=fs)
    tr.start()
    kprobes = (root / "kprobe_events").read_text().splitlines()
    assert len(kprobes) >= 8, kprobes  # the plan's probes, all defined
    assert all(f"vmabpf_{os.getpid()}/" in ln for ln in kprobes)
    inst = root / tr.inst
    assert (inst / "tracing_on").read_text() == "1" and (inst / "trace_clock").read_text() == "mono"
    assert sum((inst / "events" / f"vmabpf_{os.getpid()}" / ln.split()[0].split("/")[1] / "enable").read_text()
               == "1" for ln in kprobes) == len(kprobes)
    setup = list(fs.trips)
    assert setup.count("batch") == 2 and "write" not in setup, setup
    assert len(setup) <= 7, setup  # stale ones (2), README, the definitions, the instance, per_cpu, the pipe
    fs.trips.clear()
    for _ in range(20):
        tr.lost()
    assert fs.trips == ["read_many"]  # at most once a second
    fs.trips.clear()
    tr.close()
    assert fs.trips.count("batch") == 1 and "write" not in fs.trips, fs.trips
    assert not inst.exists() and tr.cleanup_error is None
    assert (root / "kprobe_events").read_text() == ""

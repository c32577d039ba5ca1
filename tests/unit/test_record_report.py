"""record + report without BPF: the writer, the reader, the report formats, broken and foreign files."""

import importlib.util
import io
import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO
from vmatrace_bpf import events
from vmatrace_bpf import reader
from vmatrace_bpf.errors import VmabpfError
from vmatrace_bpf.recording import RecordWriter, make_header
from vmatrace_bpf.aggregate import Aggregator
from vmatrace_bpf.chrome import chrome_trace
from vmatrace_bpf.reader import NotARecordError, RecordFile, build_report, read_events
from vmatrace_bpf.render import report_table as render_table

VMABPF = [sys.executable, "-m", "vmatrace_bpf"]

_spec = importlib.util.spec_from_file_location("report_read", os.path.join(REPO, "benchmarks", "report_read.py"))
_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_bench)
synthetic_events = _bench.synthetic_events


def run(*args, **kw):
    return subprocess.run(VMABPF + list(args), capture_output=True, text=True, cwd=REPO, **kw)


def base(t, ts, pid=7, **kw):
    return {"type": t, "ts": ts, "pid": pid, "tid": pid, "comm": "app", **kw}


# the "names" workload as the kernel reports it (see tests/kernel/test_watch_cli.py), plus a split and a fork
KNOWN = [
    base("name_alloc", 900, ptr=0xA0, name="a", refcount=1, name_truncated=False),
    base("name_set", 1000, addr=0x1000, len=4096, name="a", ret=0, err=None, name_truncated=False, name_null=False),
    base("name_set", 2000, addr=0x2000, len=4096, name="a", ret=0, err=None, name_truncated=False, name_null=False),
    base("merge", 2100, source="existing_range", outcome="prev", start=0x2000, end=0x3000, res_start=0x1000,
         res_end=0x3000, prev_start=0x1000, prev_end=0x2000, next_start=0, next_end=0, name="a", prev_name="a",
         next_name="", prev_cause=[], next_cause=["no_vma"], vm_flags=0x73),
    base("name_set", 3000, addr=0x3000, len=4096, name="b", ret=0, err=None, name_truncated=False, name_null=False),
    base("merge", 3100, source="existing_range", outcome="none", start=0x3000, end=0x4000, res_start=0,
         res_end=0, prev_start=0x1000, prev_end=0x3000, next_start=0, next_end=0, name="b", prev_name="a",
         next_name="", prev_cause=["name"], next_cause=["no_vma"], vm_flags=0x73),
    base("name_set", 4000, addr=0x1000, len=4096, name="bad$name", ret=-22, err="EINVAL", name_truncated=False,
         name_null=False),
    base("name_set", 5000, addr=0x1000, len=4096, name="x" * 79, ret=-22, err="EINVAL", name_truncated=True,
         name_null=False),
    base("name_set", 6000, addr=0x11000, len=4096, name="nowhere", ret=-12, err="ENOMEM", name_truncated=False,
         name_null=False),
    base("split", 7000, vma_start=0x1000, vma_end=0x3000, addr=0x2000, name="a", refcount=2, ret=0, err=None,
         name_truncated=False),
    base("fork", 9000, child_pid=8, latency_ns=2500, map_count=50, vmas_copied=49, named_copied=2,
         probe="dup_mmap"),
    {"type": "lost", "ts": 9500, "count": 3},
    base("name_free", 9900, ptr=0xA0, name="a", refcount=0, name_truncated=False),
    base("exit", 10000, comm=""),
]
PLAN = {"release": "6.12.117", "arch": "x86_64", "capabilities": [{"capability": "merge", "variant": "x"}]}


def write_record(path, events, reason="SIGINT", pids=(7,)):
    with open(path, "w") as f:
        w = RecordWriter(f, str(path))
        w.write_header(make_header(PLAN, "6.12.117", "x86_64", list(pids), False))
        for ev in events:
            w.write_event(dict(ev))
        w.close(reason)
    return w


def lines_of(path):
    return [json.loads(ln) for ln in open(path)]


# -- the writer ----------------------------------------------------------------------------------------------

def test_writer_header_events_footer(tmp_path):
    p = tmp_path / "r.jsonl"
    w = write_record(p, KNOWN)
    recs = lines_of(p)
    hdr, ftr = recs[0], recs[-1]
    assert hdr["type"] == "header" and hdr["format"] == "vmabpf-record" and hdr["version"] == 1
    assert hdr["kernel_release"] == "6.12.117" and hdr["arch"] == "x86_64" and hdr["plan"] == PLAN
    assert hdr["pid_filter"] == [7] and hdr["children"] is False and hdr["tool_version"]
    assert isinstance(hdr["start_time"]["wall"], str) and isinstance(hdr["start_time"]["monotonic_ns"], int)
    assert ftr == {"type": "footer", "events": len(KNOWN), "lost_events": 3, "end_time": ftr["end_time"],
                   "reason": "SIGINT"}
    assert w.events == len(KNOWN) and w.lost == 3
    # the exit record gets the comm of its process, as watch gives it
    assert recs[-2] == {**KNOWN[-1], "comm": "app"}
    # every line is flushed as written: one JSON object per line, compact like watch -j
    raw = open(p).read().splitlines()
    assert all(" " not in ln.split('"wall"')[0] for ln in raw[1:-1] if '"name":"' not in ln)


def test_writer_flushes_each_line():
    class Sink(io.StringIO):
        flushes = 0

        def flush(self):
            Sink.flushes += 1

    s = Sink()
    w = RecordWriter(s)
    w.write_header({"type": "header"})
    w.write_event(dict(KNOWN[1]))
    assert Sink.flushes == 2 and s.getvalue().count("\n") == 2
    w.close("exit")
    w.close("exit")  # idempotent
    assert s.getvalue().count('"footer"') == 1


def test_writer_write_error_is_one_line_error():
    class Full(io.StringIO):
        def write(self, s):
            raise OSError(28, "No space left on device")

    with pytest.raises(VmabpfError, match="No space left on device"):
        RecordWriter(Full(), "rec").write_event(dict(KNOWN[1]))


# -- reading and the report -----------------------------------------------------------------------------------

def test_round_trip_same_events_same_summary(tmp_path):
    p = tmp_path / "r.jsonl"
    evs = list(synthetic_events(3000, seed=4)) + KNOWN
    write_record(p, evs)
    got = list(read_events([str(p)]))
    expected = [dict(e) for e in evs]
    expected[-1]["comm"] = "app"
    assert got == expected
    live = Aggregator().add_all(expected).summary()
    summ, files, _ = build_report([str(p)])
    assert summ == live
    assert files[0]["events"] == len(evs) and files[0]["malformed_lines"] == 0 and not files[0]["truncated"]
    assert files[0]["footers"][0]["reason"] == "SIGINT"


def test_report_json_known_numbers(tmp_path):
    p = tmp_path / "r.jsonl"
    write_record(p, KNOWN)
    r = run("report", "--format", "json", str(p))
    assert r.returncode == 0 and r.stderr == ""
    js = json.loads(r.stdout)
    assert js == json.loads(run("report", "-j", str(p)).stdout)
    proc, = js["processes"]
    assert proc["pid"] == 7 and proc["comm"] == "app"
    assert proc["names"] == {"set": 3, "cleared": 0, "rejected": {"EINVAL": 2, "ENOMEM": 1}, "distinct": 2}
    assert proc["name_objects"] == {"allocated": 1, "freed": 1, "live": 0}
    m = proc["merges"]
    assert (m["attempted"], m["merged"], m["not_merged"], m["blocked_by_name_only"]) == (2, 1, 1, 1)
    assert m["top_name_pairs"] == [{"neighbour": "a", "proposed": "b", "count": 1}]
    assert m["not_merged_causes"] == {"name": 1, "no_vma": 1}
    assert proc["vmas_cost_by_names"] == 1
    assert proc["splits"] == {"count": 1, "errors": 0, "max_refcount_by_name": {"a": 2}}
    assert proc["forks"]["count"] == 1 and proc["forks"]["refcount_increments"] == 2
    assert proc["forks"]["named_copied_per_fork"] == [2] and proc["forks"]["latency_ns"]["p99"] == 2500
    assert proc["sharing"] == {"a": {"set": 2, "objects_allocated": 1, "objects_live": 0, "max_refcount": 2},
                               "b": {"set": 1, "objects_allocated": 0, "objects_live": 0, "max_refcount": 0}}
    assert js["lost_events"] == 3 and proc["exited"]
    assert js["files"][0]["recordings"][0]["kernel_release"] == "6.12.117"
    # -p keeps one process
    assert json.loads(run("report", "-j", "-p", "8", str(p)).stdout)["processes"] == []


def test_report_table(tmp_path):
    p = tmp_path / "r.jsonl"
    write_record(p, KNOWN)
    r = run("report", str(p))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "kernel 6.12.117 (x86_64)" in out and "ended by SIGINT: 14 events, 3 lost" in out
    assert "PID" in out and "NAME-BLK" in out
    assert "names rejected: EINVAL x2, ENOMEM x1" in out
    assert "'a' next to 'b': 1" in out
    assert "name objects allocated 1, freed 1, live 0" in out
    assert "VMAs the names cost: 1" in out
    assert "name refs taken 2 (per fork: 2)" in out and "p99 2us" in out
    assert "'a': 2 / 1 / 0 / 2" in out  # sharing per name
    assert "lost events: 3" in out
    # -o writes the same report to a file
    o = tmp_path / "out.txt"
    r2 = run("report", str(p), "-o", str(o))
    assert r2.returncode == 0 and r2.stdout == "" and open(o).read() == out


def test_report_reads_watch_json_output_and_several_files(tmp_path):
    w = tmp_path / "watch.jsonl"
    summ = Aggregator().add_all(KNOWN).summary()
    with open(w, "w") as f:
        for ev in KNOWN:
            f.write(json.dumps(ev, separators=(",", ":")) + "\n")
        f.write(json.dumps({"type": "summary", "final": True, **summ}) + "\n")
    r = run("report", "-j", str(w))
    assert r.returncode == 0 and r.stderr == ""
    js = json.loads(r.stdout)
    assert js["processes"] == summ["processes"]
    assert js["files"][0]["recordings"] == []
    # two files: one aggregation over both
    p = tmp_path / "r.jsonl"
    write_record(p, [base("name_set", 1, pid=9, addr=0, len=4096, name="z", ret=0, err=None)])
    js2 = json.loads(run("report", "-j", str(w), str(p)).stdout)
    assert [x["pid"] for x in js2["processes"]] == [7, 9]


def test_truncated_last_line_is_one_warning(tmp_path):
    p = tmp_path / "r.jsonl"
    write_record(p, KNOWN)
    data = open(p, "rb").read()
    lines = data.splitlines(keepends=True)
    cut = b"".join(lines[:-1])[:-7]  # footer gone, last event cut in the middle (power loss)
    open(p, "wb").write(cut)
    r = run("report", "-j", str(p))
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("\n") == 1 and "last line is incomplete" in r.stderr and f"{p}:{len(lines) - 1}" in r.stderr
    js = json.loads(r.stdout)
    assert js["files"][0]["truncated"] and js["files"][0]["events"] == len(KNOWN) - 1
    assert "Traceback" not in r.stderr


def test_malformed_lines_warn_with_line_numbers(tmp_path):
    p = tmp_path / "r.jsonl"
    write_record(p, KNOWN)
    lines = open(p).read().splitlines(keepends=True)
    lines.insert(3, "garbage\n")
    lines.insert(5, '{"type":"merge","ts":1,"pid":7}\n')  # a merge without its fields
    lines.insert(6, '{"type":"future_event","ts":1,"pid":7}\n')
    open(p, "w").write("".join(lines))
    warnings = []
    rf = RecordFile(str(p), warnings.append)
    evs = list(rf.events())
    assert len(evs) == len(KNOWN)
    assert rf.malformed == 2 and rf.unknown == 1 and not rf.truncated
    assert [w.split(":")[1] for w in warnings] == ["4", "6", "7"]
    assert "unknown event type 'future_event'" in warnings[2]


@pytest.mark.parametrize("content,why", [
    (b"", "is empty"),
    (b"\n\n  \n", "is empty"),
    (b"\x7fELF\x02\x01\x01\x00\x00\x00" * 50, "binary data"),
    (b"# vmatrace-bpf\nsome text\n", "line 1: not JSON"),
    (b'{"hello": "world"}\n', "line 1: not a vmabpf event"),
    (b"[1, 2, 3]\n", "line 1: not a vmabpf event"),
    (b'{"type":"header","format":"vmabpf-rec', "cut short inside its header"),
])
def test_not_a_record_one_line(tmp_path, content, why):
    p = tmp_path / "f"
    p.write_bytes(content)
    with pytest.raises(NotARecordError):
        list(RecordFile(str(p), lambda m: None).events())
    r = run("report", str(p))
    assert r.returncode == 1
    assert r.stdout == "" and r.stderr.count("\n") == 1 and r.stderr.startswith("vmabpf: ") and why in r.stderr
    assert "Traceback" not in r.stderr


def test_report_usage_errors(tmp_path):
    r = run("report", str(tmp_path / "missing"))
    assert r.returncode == 1 and r.stderr.strip() == f"vmabpf: {tmp_path / 'missing'}: no such file"
    r = run("report", str(tmp_path))
    assert r.returncode == 1 and "is a directory" in r.stderr and r.stderr.count("\n") == 1
    r = run("report")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_record_errors_without_bpf(tmp_path):
    r = run("record", "-p", "1")
    assert r.returncode == 2 and "-o" in r.stderr and "Traceback" not in r.stderr
    r = run("record", "-o", str(tmp_path / "x"), "-p", "999999")
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        "vmabpf: no process with PID 999999 (check the number with ps; it may have exited)"]
    assert not (tmp_path / "x").exists()
    r = run("record", "-o", str(tmp_path / "x"), "--duration", "0")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    r = run("record", "-o", str(tmp_path / "x"), "--children")
    assert r.returncode == 2 and "--children needs -p" in r.stderr


# -- chrome trace-event export ---------------------------------------------------------------------------------

def check_trace_event_format(doc):
    """The rules of the Trace Event Format (the JSON chrome://tracing and ui.perfetto.dev load)."""
    json.loads(json.dumps(doc, allow_nan=False))  # real JSON: no NaN/Infinity
    if isinstance(doc, dict):
        assert isinstance(doc.get("traceEvents"), list)
        if "displayTimeUnit" in doc:
            assert doc["displayTimeUnit"] in ("ms", "ns")
        events = doc["traceEvents"]
    else:
        assert isinstance(doc, list)
        events = doc
    for e in events:
        assert isinstance(e, dict)
        for key in ("name", "ph", "ts", "pid", "tid"):
            assert key in e, (key, e)
        assert isinstance(e["name"], str) and isinstance(e["ph"], str)
        assert isinstance(e["ts"], (int, float)) and not isinstance(e["ts"], bool)
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int)
        assert e["ph"] in set("BEXiIMCbneSTpFsftPOND") | {"(", ")"}, e
        if e["ph"] == "X":
            assert isinstance(e["dur"], (int, float)) and e["dur"] >= 0
        if e["ph"] in ("i", "I"):
            assert e.get("s", "t") in ("g", "p", "t")
        if e["ph"] == "M":
            assert e["name"] in ("process_name", "thread_name", "process_labels", "process_sort_index",
                                 "thread_sort_index")
            if e["name"] in ("process_name", "thread_name"):
                assert isinstance(e["args"]["name"], str)
        if "args" in e:
            assert isinstance(e["args"], dict)
    return events


def test_chrome_export_is_valid_trace_event_json(tmp_path):
    p = tmp_path / "r.jsonl"
    write_record(p, KNOWN + list(synthetic_events(500, seed=2)))
    o = tmp_path / "trace.json"
    r = run("report", "--format", "chrome", "-o", str(o), str(p))
    assert r.returncode == 0, r.stderr
    doc = json.load(open(o))
    events = check_trace_event_format(doc)
    procs = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert procs[7] == "app (7)" and set(procs) >= {7, 1200, 1201, 1202, 1203}
    fork = [e for e in events if e["ph"] == "X" and e["pid"] == 7]
    # the fork event is taken when dup_mmap has ended: the slice starts latency_ns before it
    assert len(fork) == 1 and fork[0]["dur"] == 2.5
    t0 = doc["otherData"]["t0_monotonic_ns"]
    assert fork[0]["ts"] == (9000 - 2500 - t0) / 1000
    inst = [e for e in events if e["ph"] == "i" and e["pid"] == 7]
    assert {e["cat"] for e in inst} == {"name_set", "merge", "split", "name_alloc", "name_free", "exit"}
    assert all(e["s"] == "t" for e in inst)
    assert any(e["name"] == "name 'bad$name' EINVAL" for e in inst)
    assert min(e["ts"] for e in events if e["ph"] != "M") == 0
    lost = [e for e in events if e.get("cat") == "lost"]
    assert len(lost) == 1 and lost[0]["s"] == "g"
    # -p: one process's track (plus lost events, which belong to no process)
    r = run("report", "--format", "chrome", "-p", "7", str(p))
    assert {e["pid"] for e in check_trace_event_format(json.loads(r.stdout))} == {0, 7}
    assert run("report", "-j", "--format", "chrome", str(p)).returncode == 2


# -- fuzzing: the reader raises only VmabpfError, the CLI never prints a traceback -------------------------

def _record_bytes():
    buf = io.StringIO()
    w = RecordWriter(buf)
    w.write_header(make_header(PLAN, "6.12.117", "x86_64", [7], False))
    for ev in KNOWN + list(synthetic_events(40, seed=3)):
        w.write_event(dict(ev))
    w.close("SIGTERM")
    return buf.getvalue().encode()


REAL = _record_bytes()
REAL_LINES = REAL.splitlines(keepends=True)

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                           max_leaves=8)


@st.composite
def mutated_records(draw):
    lines = list(REAL_LINES)
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["drop", "dup", "flip", "cut", "insert", "field", "swap"]))
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        if not lines:
            break
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "flip" and lines[i]:
            ln = bytearray(lines[i])
            j = draw(st.integers(0, len(ln) - 1))
            ln[j] = draw(st.integers(0, 255))
            lines[i] = bytes(ln)
        elif op == "cut":
            lines[i] = lines[i][:draw(st.integers(0, len(lines[i])))]
        elif op == "insert":
            lines.insert(i, draw(st.binary(max_size=40)) + b"\n")
        elif op == "field":
            try:
                ev = json.loads(lines[i])
            except ValueError:
                continue
            if isinstance(ev, dict) and ev:
                key = draw(st.sampled_from(sorted(ev)))
                if draw(st.booleans()):
                    ev[key] = draw(json_values)
                else:
                    del ev[key]
                lines[i] = json.dumps(ev).encode() + b"\n"
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
    data = b"".join(lines)
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return data


def _report_all_formats(path):
    """What the CLI does with a file, minus printing: only VmabpfError may come out."""
    try:
        summ, files, kept = build_report([path], keep_events=True, warn=lambda m: None)
    except VmabpfError:
        return None
    json.dumps({"files": files, **summ})
    render_table(summ, files)
    doc = chrome_trace(kept)
    check_trace_event_format(doc)
    return summ


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=mutated_records())
def test_fuzz_mutated_records(tmp_path, data):
    p = tmp_path / "fuzz.jsonl"
    p.write_bytes(data)
    _report_all_formats(str(p))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300) | st.lists(st.binary(max_size=30), max_size=8).map(b"\n".join)
       | st.lists(json_values.map(lambda v: json.dumps(v).encode()), max_size=6).map(b"\n".join))
def test_fuzz_random_files(tmp_path, data):
    p = tmp_path / "fuzz.bin"
    p.write_bytes(data)
    _report_all_formats(str(p))


def test_batch_decoding_equals_line_by_line(tmp_path, monkeypatch):
    """The batch path (one JSON array per batch) must give what line-by-line decoding gives, also for
    lines built to fool the join: a line holding two objects and lines that only parse together."""
    ev = json.dumps(KNOWN[1], separators=(",", ":"))
    tricky = [ev[:-1] + ',"k":[{"z":1}', ev, ev[:-1] + "}]}", ev + "," + ev, ev + " ,\t" + ev]
    lines = (REAL_LINES[:40] + [(t + "\n").encode() for t in tricky] + REAL_LINES[40:]) * 300
    # a batch (~32 KB) whose last line closes the array early: '...}],[{...}'
    lines += REAL_LINES[1:-1] * 3 + [(ev + '],[{"type":"x"}\n').encode()] + REAL_LINES[1:-1] * 3
    p = tmp_path / "r.jsonl"
    p.write_bytes(b"".join(lines))
    # the last line of a batch closing the array early
    rf = RecordFile(str(p), lambda m: None)
    rf.known = True
    batch = REAL_LINES[1:20] + [(ev + '],[{"type":"x"}\n').encode()]
    assert rf._decode(batch)[-1] is None and rf._decode(batch)[:-1] == [json.loads(x) for x in batch[:-1]]
    got = list(RecordFile(str(p), lambda m: None).events())
    want = []
    for ln in lines:
        try:
            e = json.loads(ln)
        except ValueError:
            continue
        if isinstance(e, dict) and events.valid_event(e):
            want.append(e)
    assert got == want


def test_cli_fuzzed_files_never_traceback(tmp_path):
    """A few corrupted files through the real command line (subprocesses are slow: no hypothesis here)."""
    variants = [REAL[: len(REAL) // 2], REAL.replace(b'"pid":7', b'"pid":"7"'), REAL.replace(b"}\n", b"\n"),
                REAL.replace(b'"prev_cause":[', b'"prev_cause":[{},'), b"\xff\xfe" + REAL,
                REAL.replace(b'"ts":', b'"ts":1e999,"x":'), REAL.replace(b"[]", b"[" * 5000)]
    for i, data in enumerate(variants):
        p = tmp_path / f"v{i}"
        p.write_bytes(data)
        for fmt in ("table", "json", "chrome"):
            r = run("report", "--format", fmt, str(p))
            assert "Traceback" not in r.stderr, (i, fmt, r.stderr)
            assert r.returncode in (0, 1), (i, fmt, r.stderr)
            if r.returncode == 1:
                assert r.stderr.count("\n") == 1 and r.stderr.startswith("vmabpf: ")


# -- big files are read in parallel parts: the same report as one pass -------------------------------------------

def test_merge_of_parts_equals_one_pass():
    evs = list(synthetic_events(6000, seed=9))
    # name objects freed and reallocated across part boundaries, comm changes, an exit
    evs += [base("name_alloc", 1, ptr=5, name="r", refcount=1), base("name_free", 2, ptr=5, name="r", refcount=0),
            base("name_alloc", 3, ptr=5, name="s", refcount=1), base("name_alloc", 4, ptr=6, name="t", refcount=1),
            base("name_alloc", 5, ptr=6, name="t", refcount=1), base("name_free", 6, ptr=6, name="t", refcount=0),
            base("exit", 7, comm="")] + KNOWN
    whole = Aggregator().add_all(evs).summary()
    for cuts in ([1], [6001], [6002, 6003, 6004], [100, 3000, 6005], [len(evs) - 1]):
        bounds = [0] + cuts + [len(evs)]
        agg = Aggregator()
        agg.add_all(evs[:bounds[1]])
        for a, b in zip(bounds[1:-1], bounds[2:]):
            agg.merge(Aggregator(track_frees=True).add_all(evs[a:b]))
        assert agg.summary() == whole, cuts


def test_parallel_read_equals_one_pass(tmp_path, monkeypatch):
    p = tmp_path / "big.jsonl"
    write_record(p, list(synthetic_events(20000, seed=6)) + KNOWN)
    lines = open(p, "rb").read().splitlines(keepends=True)
    for i in (7, 5000, 12001, 19999):
        lines.insert(i, b'{"type":"merge","pid":1}\n')
    lines[-1] = lines[-1][:-9]  # truncated footer
    p.write_bytes(b"".join(lines))
    monkeypatch.setattr(reader, "PART_MIN_BYTES", 64 << 10)
    w1, w3 = [], []
    one = build_report([str(p)], warn=w1.append, jobs=1)
    three = build_report([str(p)], warn=w3.append, jobs=3)
    assert reader.jobs_for(str(p), 3) == 3
    assert three[:2] == one[:2] and w3 == w1
    assert [w.split(":")[1] for w in w1[:5]] == ["8", "5001", "12002", "20000", str(len(lines))]
    # two files: live name objects and comm carry over from one to the next as in one pass
    q = tmp_path / "second.jsonl"
    write_record(q, [base("name_free", 1, ptr=0xA0 + 64 * k, name="x", refcount=0) for k in range(3000)])
    assert build_report([str(p), str(q)], warn=lambda m: None, jobs=3)[0] == \
        build_report([str(p), str(q)], warn=lambda m: None, jobs=1)[0]


def test_output_files_are_never_clobbered(tmp_path):
    """record -o / report -o: an existing file (or a symlink) is refused and left as it was; --replace
    replaces it only with a complete new one; a record that cannot start leaves no file of its own."""
    keep = tmp_path / "keep.jsonl"
    keep.write_text("precious\n")
    r = run("record", "-o", str(keep), "-p", "999999")
    assert r.returncode == 2 and "exists" in r.stderr and "Traceback" not in r.stderr
    assert keep.read_text() == "precious\n"
    r = run("record", "-o", str(keep), "--replace", "-p", "999999")  # fails later (no such PID)
    assert r.returncode == 1 and keep.read_text() == "precious\n"
    assert sorted(os.listdir(tmp_path)) == ["keep.jsonl"]
    r = run("record", "-o", str(tmp_path / "new.jsonl"), "-p", "999999")
    assert r.returncode == 1 and not (tmp_path / "new.jsonl").exists()
    # report -o
    rec = tmp_path / "rec.jsonl"
    rec.write_text(json.dumps({"type": "name_set", "ts": 1, "pid": 5, "tid": 5, "comm": "a", "addr": 4096,
                               "len": 4096, "ret": 0, "err": None, "name": "n", "name_null": False,
                               "name_truncated": False}) + "\n")
    victim = tmp_path / "victim"
    victim.write_text("do not touch\n")
    link = tmp_path / "out.txt"
    os.symlink(victim, link)
    r = run("report", str(rec), "-o", str(link))
    assert r.returncode == 2 and "symlink" in r.stderr and victim.read_text() == "do not touch\n"
    r = run("report", str(rec), "-o", str(link), "--replace")
    assert r.returncode == 0, r.stderr
    assert victim.read_text() == "do not touch\n" and not os.path.islink(link) and "PID" in link.read_text()


def test_hostile_strings_in_a_recording_never_reach_the_terminal_raw(tmp_path):
    """errno names, cause words and names come from the file: escaped, lone surrogates included."""
    evil = "\x1b[2J\x07\ud800"
    evs = [{"type": "name_set", "ts": 1, "pid": 5, "tid": 5, "comm": evil, "addr": 4096, "len": 4096, "ret": -22,
            "err": evil, "name": evil, "name_null": False, "name_truncated": False},
           {"type": "merge", "ts": 2, "pid": 5, "tid": 5, "comm": "c", "start": 4096, "end": 8192, "vm_flags": 0,
            "prev_start": 0, "prev_end": 4096, "next_start": 0, "next_end": 0, "res_start": 0, "res_end": 0,
            "source": evil, "outcome": "none", "prev_cause": [evil, "name"], "next_cause": ["unseen"],
            "name": "a", "prev_name": evil, "next_name": ""}]
    p = tmp_path / "evil.jsonl"
    p.write_text("".join(json.dumps(e) + "\n" for e in evs))  # json.dumps writes \ud800 as an escape
    for args in ([], ["-j"]):
        r = subprocess.run([sys.executable, "-m", "vmatrace_bpf", "report", str(p), *args], capture_output=True,
                           cwd=REPO)
        out = r.stdout + r.stderr
        assert b"Traceback" not in out
        assert b"\x1b" not in out and b"\x07" not in out, out
        assert r.returncode in (0, 1)


def test_report_refuses_devices_fifos_and_endless_lines(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    long = tmp_path / "long.jsonl"
    long.write_bytes(b"a" * (3 << 20))
    for path, want in (("/dev/zero", "is a character device, not a recording"), (str(fifo), "is a FIFO"),
                       (str(long), "line 1 is longer than 1048576 bytes")):
        r = run("report", path, timeout=60)
        assert r.returncode == 1 and want in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "vmatrace_bpf", "report", "-"], input=b"x" * (3 << 20),
                       capture_output=True, cwd=REPO, timeout=60)
    assert r.returncode == 1 and b"stdin: line 1 is longer than" in r.stderr


def test_json_out_is_strict_even_for_huge_numbers_in(tmp_path):
    """1e400 in a recording would be Infinity (not JSON) in report -j: the line is refused, with its number."""
    ok = {"type": "name_set", "ts": 1, "pid": 5, "tid": 5, "comm": "a", "addr": 4096, "len": 4096, "ret": 0,
          "err": None, "name": "n", "name_null": False, "name_truncated": False}
    p = tmp_path / "huge.jsonl"
    p.write_text(json.dumps({"type": "header", "format": "vmabpf-record", "version": 1, "x": 1}) + "\n"
                 + json.dumps(ok) + "\n"
                 + json.dumps(dict(ok, ts=2)).replace('"ts": 2', '"ts": 1e400') + "\n"
                 + '{"type": "footer", "events": 1e400, "lost_events": 0}\n')
    r = run("report", "-j", str(p))
    assert r.returncode == 0, r.stderr
    json.loads(r.stdout, parse_constant=lambda c: pytest.fail(f"{c} in report -j output"))
    assert "Infinity" not in r.stdout
    assert ":3: malformed line skipped" in r.stderr and ":4: malformed line skipped" in r.stderr


def many_process_recording(path, n):
    evs = []
    for i in range(n):
        pid = 100 + i
        for _ in range(i % 4):  # process i does i % 4 things: activity decides --top
            evs.append({"type": "name_set", "ts": i, "pid": pid, "tid": pid, "comm": f"p{i}", "addr": 4096,
                        "len": 4096, "ret": 0, "err": None, "name": f"n{i % 3}", "name_null": False,
                        "name_truncated": False})
        evs.append({"type": "split", "ts": i, "pid": pid, "tid": pid, "comm": f"p{i}", "vma_start": 4096,
                    "vma_end": 12288, "addr": 8192, "ret": 0, "new_below": 0, "refcount": 2, "name": "n0"})
    path.write_text("".join(json.dumps(e) + "\n" for e in evs))


def test_report_top_and_streamed_json(tmp_path):
    """The table details the --top most active processes and says how many it left out; -j, written one
    process at a time, is exactly every process's summary."""
    from vmatrace_bpf.aggregate import Aggregator
    from vmatrace_bpf.reader import read_recordings as aggregate
    from vmatrace_bpf.render import report_json as json_report
    p = tmp_path / "many.jsonl"
    many_process_recording(p, 50)
    r = run("report", "--top", "5", str(p))
    assert r.returncode == 0, r.stderr
    shown = [int(line.split()[1]) for line in r.stdout.splitlines() if line.startswith("PID ")]
    assert len(shown) == 5 and all((pid - 100) % 4 == 3 for pid in shown)  # the busiest: 3 names + a split
    assert "... and 45 less active processes" in r.stdout
    r = run("report", "--top", "0", str(p))
    assert sum(line.startswith("PID ") for line in r.stdout.splitlines()) == 50 and "less active" not in r.stdout
    r = run("report", "-j", str(p))
    js = json.loads(r.stdout)
    assert js["type"] == "report" and len(js["processes"]) == 50 and js["lost_events"] == 0
    agg = Aggregator()
    for line in p.read_text().splitlines():
        agg.add(json.loads(line))
    assert js["processes"] == agg.summary()["processes"]
    agg2, infos, _ = aggregate([str(p)], pid=107)
    out = []
    json_report(agg2, infos, 107, out.append)
    assert [x["pid"] for x in json.loads("".join(out))["processes"]] == [107]

"""`vmabpf maps` as a user runs it: click CliRunner and `python3 -m vmatrace_bpf maps`."""

import json
import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmatrace_bpf import procmaps as maps_cmd
from vmatrace_bpf.commands.maps import maps

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMAPS = os.path.join(REPO, "tests", "data", "smaps")


def data(name):
    return os.path.join(SMAPS, name)


def cli(*args):
    return CliRunner().invoke(maps, list(args))


def run(*args, **kw):
    env = dict(os.environ, PYTHONPATH=REPO)
    p = subprocess.run([sys.executable, "-m", "vmatrace_bpf", "maps", *args], cwd=REPO, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60, **kw)
    assert "Traceback" not in p.stderr
    return p


def test_live_own_process():
    p = run(str(os.getpid()), "--fragments")
    assert p.returncode == 0, p.stderr
    assert f"/proc/{os.getpid()}/smaps" in p.stdout and "TOTAL" in p.stdout and "[stack]" in p.stdout


def test_table_totals_are_the_plain_sum():
    r = cli("--file", data("names-k6.12.smaps"), "-j")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    with open(data("names-k6.12.smaps")) as f:
        text = f.read()
    assert out["total"]["pss_kb"] == sum(int(x) for x in re.findall(r"(?m)^Pss:\s+(\d+) kB$", text))
    assert out["total"]["swappss_kb"] == sum(int(x) for x in re.findall(r"(?m)^SwapPss:\s+(\d+) kB$", text))
    assert out["total"]["vmas"] == len(re.findall(r"(?m)^[0-9a-f]+-[0-9a-f]+ ", text))
    assert sum(r["pss_kb"] for r in out["rows"]) == out["total"]["pss_kb"]
    pss = [r["pss_kb"] for r in out["rows"]]
    assert pss == sorted(pss, reverse=True)


@pytest.mark.parametrize("sort,key", [("size", "size_kb"), ("rss", "rss_kb"), ("vmas", "vmas"), ("name", "name")])
def test_sort(sort, key):
    out = json.loads(cli("--file", data("glibc-k7.2.smaps"), "-j", "--sort", sort).output)
    vals = [r[key] for r in out["rows"]]
    assert vals == (sorted(vals) if sort == "name" else sorted(vals, reverse=True))


def test_by_category_and_fragments_json():
    r = cli("--file", data("glibc-k6.12.smaps"), "-j", "--by", "category", "--fragments")
    out = json.loads(r.output)
    classes = {row["name"] for row in out["rows"]}
    assert {"Native Heap", "Stack", "Unnamed anon", ".so mmap"} <= classes
    f = out["fragments"]
    assert {"left": "[anon:a]", "right": "[anon:b]", "boundaries": 2} in f["pairs"]
    assert {"name": "[anon:same]", "boundaries": 1} in f["same_name_splits"]
    assert f["vmas_in_runs"] - f["would_remain"] >= 3


def test_text_output():
    r = cli("--file", data("names-k7.2.smaps"), "--fragments")
    assert r.exit_code == 0
    assert "name pairs that keep neighbours apart" in r.output and "same name, still split" in r.output
    assert re.search(r"(?m)^TOTAL\s+75\s", r.output)


def test_maps_and_rollup_files():
    r = cli("--file", data("names-k6.1.maps"))
    assert r.exit_code == 0 and "(maps)" in r.output and "sizes only" in r.output
    r = cli("--file", data("names-k6.1.rollup"))
    assert r.exit_code == 0 and "[rollup]" in r.output


def test_names_are_escaped(tmp_path):
    f = tmp_path / "evil.maps"
    f.write_bytes(b"00400000-00401000 rw-p 00000000 00:00 0      [anon:\x1b[2Jx]\n"
                  b"00401000-00402000 r--p 00000000 08:01 5      /tmp/\xff\x07\n")
    r = cli("--file", str(f), "--fragments")
    assert r.exit_code == 0
    assert "\x1b" not in r.output and "\x07" not in r.output
    assert "[anon:\\x1b[2Jx]" in r.output and "/tmp/\\xff\\x07" in r.output


@pytest.mark.parametrize("content,msg", [
    (b"", "empty"),
    (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)), "binary"),
    (b"7f0000000000-7f0000001000 rw-p 00000000 00:00 0\nSize: 4 kB\nVmFlags: rd\n"
     b"7f0000001000-7f0000002000 rw-p 00000000 00:00 0\n", "truncated smaps"),
    (b"total 0\ndrwxr-xr-x 2 root root\n", "not a /proc/PID/maps or smaps line"),
])
def test_bad_files_give_one_line(tmp_path, content, msg):
    f = tmp_path / "bad"
    f.write_bytes(content)
    p = run("--file", str(f))
    assert p.returncode == 1 and p.stdout == ""
    assert len(p.stderr.strip().splitlines()) == 1 and msg in p.stderr and p.stderr.startswith("vmabpf: ")


@pytest.mark.parametrize("args,msg,code", [
    (["--file", "/nonexistent/x"], "no such file", 1),
    (["--file", "/"], "is a directory", 1),
    (["4000000"], "no process with PID 4000000", 1),
    (["999999999"], "999999999 is not in the range 1<=x<=4194304", 2),  # above PID_MAX_LIMIT
    (["0"], "0 is not in the range 1<=x<=4194304", 2),
    ([], "missing PID", 2),
    (["1", "--file", "x"], "not both", 2),
    (["-s", "x", "1"], "-s SERIAL needs --adb", 2),
])
def test_usage_and_missing_things(args, msg, code):
    p = run(*args)
    assert p.returncode == code, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and msg in p.stderr


def test_unreadable_file(tmp_path, monkeypatch):
    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr("os.open", denied)  # root reads everything: pretend
    with pytest.raises(maps_cmd.VmabpfError, match="permission denied"):
        maps_cmd.read_file(str(tmp_path / "x"))


def test_devices_fifos_and_directories_are_refused_at_once(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, kind in (("/dev/zero", "a character device"), (str(fifo), "a FIFO"), (str(tmp_path), "a directory")):
        with pytest.raises(maps_cmd.VmabpfError, match=f"is {kind}, not a maps/smaps file"):
            maps_cmd.read_file(path)


@pytest.mark.parametrize("reader", ["read_pid", "parse_pid"])
def test_another_users_process_says_run_as_root(tmp_path, monkeypatch, reader):
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "smaps").write_text("")

    real_open = open

    def fake_open(path, *a, **k):
        if str(path).endswith("/42/smaps"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)
    monkeypatch.setattr("builtins.open", fake_open)
    with pytest.raises(maps_cmd.VmabpfError, match="run as root"):
        getattr(maps_cmd, reader)(42, proc=str(tmp_path))


@pytest.mark.parametrize("reader", ["read_pid", "parse_pid"])
def test_kernel_thread_has_no_map(tmp_path, reader):
    (tmp_path / "2").mkdir()
    (tmp_path / "2" / "smaps").write_text("")
    with pytest.raises(maps_cmd.VmabpfError, match="no memory map"):
        getattr(maps_cmd, reader)(2, proc=str(tmp_path))


@pytest.mark.parametrize("name", ["glibc-k7.2.smaps", "android12-systemui-excerpt.smaps", "names-k6.1.maps"])
def test_live_pid_streamed_parses_as_read_whole(tmp_path, name):
    """`maps PID` streams /proc/PID/smaps (parse_pid); --save reads it whole (read_pid): the same VMAs."""
    (tmp_path / "7").mkdir()
    with open(data(name), "rb") as f:
        (tmp_path / "7" / "smaps").write_bytes(f.read())
    text, path = maps_cmd.read_pid(7, proc=str(tmp_path))
    whole, streamed = maps_cmd.parse(text, path), maps_cmd.parse_pid(7, proc=str(tmp_path))
    assert streamed.source == whole.source == path and streamed.kind == whole.kind
    assert [v._tuple() for v in streamed.vmas] == [v._tuple() for v in whole.vmas] and len(whole.vmas) > 5


def test_missing_pid_streamed(tmp_path):
    with pytest.raises(maps_cmd.VmabpfError, match="no process with PID 9"):
        maps_cmd.parse_pid(9, proc=str(tmp_path))


def test_broken_pipe_is_quiet():
    p = subprocess.run(f"{sys.executable} -m vmatrace_bpf maps --file {data('glibc-k7.2.smaps')} | head -1",
                       shell=True, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       env=dict(os.environ, PYTHONPATH=REPO), timeout=60)
    assert "Traceback" not in p.stderr and "Error" not in p.stderr


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=500), st.sampled_from([[], ["--fragments"], ["-j", "--by", "category", "--fragments"]]))
def test_fuzz_cli_never_tracebacks(tmp_path, content, extra):
    f = tmp_path / "fuzz"
    f.write_bytes(content)
    r = CliRunner().invoke(maps, ["--file", str(f), *extra])
    assert r.exit_code in (0, 1), r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)


def test_errors_escape_file_names_and_lines_once(tmp_path):
    bad = tmp_path / "c\td"
    bad.write_bytes(b"garbage\x1b[2J\n")
    r = subprocess.run([sys.executable, "-m", "vmatrace_bpf", "maps", "--file", str(bad)], capture_output=True,
                       text=True, cwd=REPO)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr == f"vmabpf: {tmp_path}/c\\x09d: line 1: not a /proc/PID/maps or smaps line: 'garbage\\x1b[2J'\n"
    r = subprocess.run([sys.executable, "-m", "vmatrace_bpf", "maps", "--file", str(tmp_path / "no\x1bpe")],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 1 and "\x1b" not in r.stderr and "no\\x1bpe: no such file" in r.stderr


def test_one_process_save_keeps_its_comm(tmp_path):
    """`maps PID --save` of a live host process records its comm (--diff tells a reused PID apart by it)."""
    child = subprocess.Popen(["sleep", "30"])
    try:
        out = tmp_path / "one.json"
        p = subprocess.run([sys.executable, "-m", "vmatrace_bpf", "maps", str(child.pid), "--save", str(out), "-j"],
                           cwd=REPO, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO), timeout=60)
        assert p.returncode == 0, p.stderr
        saved = json.loads(out.read_text())
        assert [(q["pid"], q["comm"]) for q in saved["processes"]] == [(child.pid, "sleep")]
    finally:
        child.kill()
        child.wait()

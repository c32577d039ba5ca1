"""`vmabpf maps --all`, --save, --diff and --by family: on the host, and on a device through
tests/bin/adb (all processes in one round trip)."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from vmatrace_bpf import mapsall, snapshot
from vmatrace_bpf.categories import family

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAKE_BIN = os.path.join(REPO, "tests", "bin")
SMAPS = os.path.join(REPO, "tests", "data", "smaps")
ANDROID = os.path.join(SMAPS, "android12-systemui-excerpt.smaps")
NAMES = os.path.join(SMAPS, "names-k6.12.smaps")


def run(*args, env=None):
    env = dict(env or os.environ, PYTHONPATH=REPO)
    p = subprocess.run([sys.executable, "-m", "vmatrace_bpf", "maps", *args], env=env, cwd=REPO,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    assert "Traceback" not in p.stderr
    return p


def text(path):
    with open(path) as f:
        return f.read()


def pss_of(smaps, name):
    """Pss of the VMAs named NAME, summed straight from the text (not through the parser)."""
    total, cur = 0, None
    for line in smaps.splitlines():
        m = re.match(r"[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+ ?(.*)$", line)
        if m:
            cur = m.group(1).strip(" ") or "[anon]"
        elif line.startswith("Pss:") and cur == name:
            total += int(line.split()[1])
    return total


@pytest.fixture
def device(tmp_path):
    proc = tmp_path / "proc"
    proc.mkdir()
    shutil.copy(ANDROID, proc / "2084.smaps")
    (proc / "2084.comm").write_text("ndroid.systemui\n")
    shutil.copy(NAMES, proc / "1000.smaps")
    shutil.copy(ANDROID, proc / "3001.smaps")
    env = dict(os.environ)
    env.update(PATH=FAKE_BIN + os.pathsep + env.get("PATH", ""), FAKE_ADB_PROC=str(proc),
               FAKE_ADB_LOG=str(tmp_path / "log"), FAKE_ADB_DEVICES="emulator-5554:device",
               FAKE_ADB_SU="su0", FAKE_ADB_PROTECTED="2084,3001")
    for k in ("FAKE_ADB_NO_SHELL_PROTOCOL", "FAKE_ADB_ROOT"):
        env.pop(k, None)
    return env


def log(env):
    with open(env["FAKE_ADB_LOG"]) as f:
        return f.read().splitlines()


def test_adb_all_one_round_trip_as_root(device):
    device["FAKE_ADB_ROOT"] = "1"
    p = run("--all", "--adb", "-j", env=device)
    assert p.returncode == 0, p.stderr
    assert len(log(device)) == 1 and log(device)[0].startswith("sh -c ")
    out = json.loads(p.stdout)
    assert out["snapshot"]["root"] and out["snapshot"]["processes"] == 3
    rows = {r["name"]: r for r in out["rows"]}
    # one name across processes: the sum over the device's processes, from the raw text
    for name in ("[anon:dalvik-main space (region space)]", "[anon:same]"):
        want = 2 * pss_of(text(ANDROID), name) + pss_of(text(NAMES), name)
        assert rows[name]["pss_kb"] == want, name
    assert rows["[anon:same]"]["processes"] == 1


def test_adb_all_with_su_after_shell_user(device):
    p = run("--all", "--adb", "--name", "dalvik-main", env=device)
    assert p.returncode == 0, p.stderr
    assert log(device)[0].startswith("sh -c ") and log(device)[1].startswith("su 0 sh -c ")
    assert "as root" in p.stdout and "ndroid.systemui" in p.stdout and "3001" in p.stdout


def test_adb_all_without_root_says_what_it_missed(device):
    device["FAKE_ADB_SU"] = "none"
    p = run("--all", "--adb", env=device)
    assert p.returncode == 0, p.stderr
    assert "2 unreadable" in p.stdout and "not root" in p.stdout
    assert "[anon:same]" in p.stdout and "dalvik-main" not in p.stdout


def test_family(device):
    device["FAKE_ADB_ROOT"] = "1"
    out = json.loads(run("--all", "--adb", "--by", "family", "-j", env=device).stdout)
    fams = {r["name"] for r in out["rows"]}
    assert "ART" in fams and fams <= set(__import__("vmatrace_bpf.categories").categories.FAMILIES)


def test_category_across_processes_is_the_sum_of_each_process(device):
    """`--all --by category`: dumpsys meminfo's classes over every process (its "Total PSS by category"), each
    row the sum of the per-process `--by category` rows of the same smaps files."""
    device["FAKE_ADB_ROOT"] = "1"
    p = run("--all", "--adb", "--by", "category", "-j", env=device)
    assert p.returncode == 0, p.stderr
    across = {r["name"]: r for r in json.loads(p.stdout)["rows"]}
    want = {}
    for path in (ANDROID, NAMES, ANDROID):
        one = json.loads(run("--file", path, "--by", "category", "-j").stdout)
        for r in one["rows"]:
            w = want.setdefault(r["name"], {"vmas": 0, "pss_kb": 0, "procs": 0})
            w["vmas"] += r["vmas"]
            w["pss_kb"] += r["pss_kb"]
            w["procs"] += 1
    assert "Dalvik Heap" in across and "Native Heap" in across
    assert {k: (r["vmas"], r["pss_kb"], r["processes"]) for k, r in across.items()} == \
        {k: (w["vmas"], w["pss_kb"], w["procs"]) for k, w in want.items()}
    text_out = run("--all", "--adb", "--by", "category", env=device).stdout
    assert any(line.split()[:2] == ["class", "procs"] for line in text_out.splitlines()), text_out


@pytest.mark.parametrize("name,fam", [
    ("[anon: glibc: malloc arena]", "glibc"), ("[anon: glibc: pthread stack: 1234]", "glibc"),
    ("[anon: Go: heap]", "Go runtime"), ("[anon:mimalloc]", "mimalloc"), ("[anon:scudo:primary]", "scudo"),
    ("[anon:GWP-ASan Guard Page]", "GWP-ASan"), ("[anon:stack_and_tls:5678]", "bionic"),
    ("[anon:libc_malloc]", "bionic"), ("[anon:dalvik-main space]", "ART"), ("[anon:my cache]", "other named"),
    ("", "unnamed anon"), ("[heap]", "kernel"), ("/usr/lib/libc.so.6", "file"),
    ("[anon:glibc: malloc]", "other named"),   # glibc's names have a space after "anon:": not this one
])
def test_family_rules(name, fam):
    assert family(name) == fam


def test_host_all_sees_this_process():
    p = run("--all", "-j")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["snapshot"]["processes"] >= 1
    assert any(r["name"] == "[stack]" for r in out["rows"])


def test_save_and_diff(device, tmp_path):
    device["FAKE_ADB_ROOT"] = "1"
    old, new = str(tmp_path / "old.json"), str(tmp_path / "new.json")
    assert run("--all", "--adb", "--save", old, env=device).returncode == 0
    saved = json.loads(text(old))
    assert saved["format"] == "vmabpf-maps-snapshot" and saved["kernel"] == "6.1.75-android14-11"
    assert {p["pid"] for p in saved["processes"]} == {1000, 2084, 3001}
    assert next(p for p in saved["processes"] if p["pid"] == 1000)["smaps"] == text(NAMES)
    # never clobber
    p = run("--all", "--adb", "--save", old, env=device)
    assert p.returncode == 2 and "not overwritten" in p.stderr and json.loads(text(old)) == saved
    # PID 3001 exits, PID 4000 starts with the names fixture
    proc = device["FAKE_ADB_PROC"]
    os.unlink(os.path.join(proc, "3001.smaps"))
    shutil.copy(NAMES, os.path.join(proc, "4000.smaps"))
    assert run("--all", "--adb", "--save", new, env=device).returncode == 0
    p = run("--diff", old, new, "-j")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    procs = {r["pid"]: r for r in d["processes"]}
    assert procs[3001]["status"] == "exited" and procs[4000]["status"] == "started"
    assert 1000 not in procs and 2084 not in procs
    names = {r["name"]: r for r in d["names"]}
    same = names["[anon:same]"]
    assert same["delta"]["pss_kb"] == pss_of(text(NAMES), "[anon:same]")
    assert same["old"]["processes"] == 1 and same["new"]["processes"] == 2
    dal = "[anon:dalvik-main space (region space)]"
    assert names[dal]["delta"]["pss_kb"] == -pss_of(text(ANDROID), dal)
    frag = mapsall.across(snapshot.load(new)).procs[4000].frag
    assert procs[4000]["delta"]["name_fragments"] == frag and frag > 0
    t = run("--diff", old, new)
    assert t.returncode == 0 and "exited" in t.stdout and "started" in t.stdout
    # --name: only the names containing it, and each process's change in those names alone
    d = json.loads(run("--diff", old, new, "--name", "anon:same", "-j").stdout)
    assert [r["name"] for r in d["names"]] == ["[anon:same]"] and d["pattern"] == "anon:same"
    procs = {r["pid"]: r for r in d["processes"]}
    assert procs[4000]["delta"]["pss_kb"] == pss_of(text(NAMES), "[anon:same]")
    assert procs[4000]["delta"]["vmas"] == sum(1 for ln in text(NAMES).splitlines() if ln.endswith(" [anon:same]"))
    assert 3001 not in procs  # it exited, but held no [anon:same]: nothing of it in those names
    assert "only names containing anon:same" in run("--diff", old, new, "--name", "anon:same").stdout


def test_diff_of_the_same_file_is_no_change(device, tmp_path):
    device["FAKE_ADB_ROOT"] = "1"
    f = str(tmp_path / "s.json")
    assert run("--all", "--adb", "--save", f, env=device).returncode == 0
    p = run("--diff", f, f)
    assert p.returncode == 0 and "no change" in p.stdout


@pytest.mark.parametrize("content,msg", [(b"{}", "not a vmabpf maps snapshot"), (b"xx", "not JSON"),
                                         (b'{"format": "vmabpf-maps-snapshot", "version": 9}', "version 9"),
                                         (b'{"format": "vmabpf-maps-snapshot", "version": 1}', "damaged")])
def test_bad_snapshot_one_line(tmp_path, content, msg):
    f = tmp_path / "bad"
    f.write_bytes(content)
    p = run("--diff", str(f), str(f))
    assert p.returncode == 1 and msg in p.stderr and len(p.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("time_text,msg", [("NaN", "NaN is not JSON"), ("1e999", "out of range"),
                                           ("1e300", "unix_time 1e+300 is out of range"), ("-5", "out of range")])
def test_hostile_snapshot_time_is_one_line(device, tmp_path, time_text, msg):
    device["FAKE_ADB_ROOT"] = "1"
    f = tmp_path / "s.json"
    assert run("--all", "--adb", "--save", str(f), env=device).returncode == 0
    j = json.loads(f.read_text())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(j).replace(f'"unix_time": {json.dumps(j["unix_time"])}', f'"unix_time": {time_text}'))
    assert time_text in bad.read_text()
    for args in (("--diff", str(f), str(bad)), ("--diff", str(f), str(bad), "-j")):
        p = run(*args)
        assert p.returncode == 1 and msg in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_live_interval_diff_of_own_process():
    p = run(str(os.getpid()), "--interval", "0.1", "--count", "2", "-j")
    assert p.returncode == 0, p.stderr
    docs = [json.loads(x) for x in re.split(r"(?m)^(?=\{)", p.stdout) if x.strip()]
    assert len(docs) == 2 and all(d["old"]["processes"] == 1 for d in docs)


def test_save_one_process(tmp_path):
    f = str(tmp_path / "one.json")
    p = run(str(os.getpid()), "--save", f)
    assert p.returncode == 0, p.stderr
    s = snapshot.load(f)
    assert [x.pid for x in s.processes] == [os.getpid()] and s.processes[0].smaps.startswith(
        tuple("0123456789abcdef"))


@pytest.mark.parametrize("args,msg", [(["--name", "x", "1"], "--name needs --all, --diff or --interval"),
                                      (["--all", "1"], "not both"),
                                      (["--file", "x", "--save", "y"], "--save keeps"),
                                      (["1", "--sort", "procs"], "needs --all")])
def test_usage(args, msg):
    p = run(*args)
    assert p.returncode == 2 and msg in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_snapshot_keeps_non_utf8_bytes(tmp_path):
    raw = b"00400000-00401000 r--p 00000000 00:00 0    /tmp/\xff\xfename\n"
    s = snapshot.Snapshot("host:/proc", 1.5, "6.12", True, [snapshot.Proc(7, "c\xffomm", raw.decode("utf-8", "surrogateescape"))])
    f = str(tmp_path / "s.json")
    snapshot.save(s, f)
    back = snapshot.load(f)
    assert back.processes[0].smaps.encode("utf-8", "surrogateescape") == raw
    json.loads(text(f))                           # strict JSON
    with pytest.raises(Exception, match="not overwritten"):
        snapshot.save(s, f)

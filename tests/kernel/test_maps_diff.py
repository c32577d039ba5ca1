"""`vmabpf maps --save` and `--diff` on a real kernel, here and through the stand-in adb (tests/bin/adb, the
"device" being this guest): a process whose named VMAs grow by a known number between two snapshots, made with
prctl(PR_SET_VMA_ANON_NAME) and alternating protections (so no two of them merge); the diff must say exactly
that name grew by that many VMAs and resident kB, and that the name already there did not change."""

import json
import os
import subprocess
import sys

import pytest

from guestutil import REPO, maps_json, readline

# Each stdin line "N NAME": 2N VMAs named NAME, one page each, every page touched.
GROW = r"""
import json, os, sys
from vmatrace_bpf.workload import PAGE, PROT_READ, map_region, protect, set_name, touch
def grow(n, name):
    pages = 2 * n
    addr = map_region(pages)
    touch(addr, pages)
    assert set_name(addr, pages * PAGE, name.encode()) == 0
    for i in range(1, pages, 2):
        protect(addr + i * PAGE, PAGE, PROT_READ)
grow(3, "vmabpf-diff-a")
print(json.dumps({"pid": os.getpid(), "page": PAGE}), flush=True)
for line in sys.stdin:
    n, name = line.split()
    grow(int(n), name)
    print("ok", flush=True)
"""


@pytest.fixture
def grower():
    p = subprocess.Popen([sys.executable, "-c", GROW], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
    hello = json.loads(readline(p, p.stdout, "the growing process's pid"))

    def grow(n, name):
        p.stdin.write(f"{n} {name}\n")
        p.stdin.flush()
        assert readline(p, p.stdout, "the growing process's ok").strip() == "ok"
    yield hello["pid"], hello["page"] // 1024, grow
    p.stdin.close()
    p.wait(timeout=60)


def adb_env(tmp_path):
    env = dict(os.environ, PATH=os.path.join(REPO, "tests", "bin") + os.pathsep + os.environ["PATH"],
               FAKE_ADB_LOCAL="1", FAKE_ADB_LOG=str(tmp_path / "adb.log"))
    for k in ("FAKE_ADB_ROOT", "FAKE_ADB_DEVICES", "FAKE_ADB_NO_SHELL_PROTOCOL"):
        env.pop(k, None)
    return env


def maps_env(env, *args):
    p = subprocess.run([sys.executable, "-m", "vmatrace_bpf", "maps", *args, "-j"], cwd=REPO,
                       env=dict(env, PYTHONPATH=REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def check_grew(d, pid, kb, n, name="vmabpf-diff-b"):
    rows = {r["name"]: r for r in d["names"]}
    grew = rows[f"[anon:{name}]"]
    assert grew["status"] == "new" and grew["delta"]["vmas"] == 2 * n, grew
    assert grew["delta"]["rss_kb"] == 2 * n * kb and grew["delta"]["pss_kb"] == 2 * n * kb, grew
    assert "[anon:vmabpf-diff-a]" not in rows  # 6 VMAs before and after: no change to report
    proc = {r["pid"]: r for r in d["processes"]}[pid]
    assert proc["status"] == "changed" and proc["delta"]["vmas"] >= 2 * n, proc


def test_save_and_diff_one_process(grower, tmp_path):
    pid, kb, grow = grower
    old, new = str(tmp_path / "old.json"), str(tmp_path / "new.json")
    first = maps_json(str(pid), "--save", old)
    assert {r["name"]: r["vmas"] for r in first["rows"]}["[anon:vmabpf-diff-a]"] == 6
    grow(5, "vmabpf-diff-b")
    maps_json(str(pid), "--save", new)
    check_grew(maps_json("--diff", old, new), pid, kb, 5)
    # the saved files are self-describing: this kernel, this machine, root
    with open(new) as f:
        saved = json.load(f)
    assert saved["kernel"] == os.uname().release and saved["root"] is True
    with open(f"/proc/{pid}/comm") as f:  # the comm that tells a reused PID apart
        assert [(p["pid"], p["comm"]) for p in saved["processes"]] == [(pid, f.read().rstrip("\n"))]


def test_save_and_diff_all_through_adb(grower, tmp_path):
    """`--all --adb --save` (every process of the "device" in one adb round trip) twice around the growth, and
    the diff of the two, restricted to the test's names by --name."""
    pid, kb, grow = grower
    env = adb_env(tmp_path)
    old, new = str(tmp_path / "old.json"), str(tmp_path / "new.json")
    before = maps_env(env, "--all", "--adb", "--save", old)
    assert before["snapshot"]["processes"] > 3
    grow(4, "vmabpf-diff-b")
    maps_env(env, "--all", "--adb", "--save", new)
    with open(env["FAKE_ADB_LOG"]) as f:
        assert len(f.read().splitlines()) == 2  # one `adb shell` per snapshot
    d = maps_env(env, "--diff", old, new, "--name", "vmabpf-diff")
    check_grew(d, pid, kb, 4)
    assert all("vmabpf-diff" in r["name"] for r in d["names"])
    fam = {r["name"]: r for r in maps_env(env, "--diff", old, new, "--by", "family")["names"]}
    assert fam["other named"]["delta"]["vmas"] >= 8

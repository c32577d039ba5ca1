"""`vmabpf maps --adb` end to end against tests/bin/adb, a fake adb put first on
PATH that serves real smaps text and answers with real adb and Android error
messages (see the script's docstring)."""

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAKE_BIN = os.path.join(REPO, "tests", "bin")
SMAPS = os.path.join(REPO, "tests", "data", "smaps")


@pytest.fixture
def device(tmp_path):
    proc = tmp_path / "proc"
    proc.mkdir()
    shutil.copy(os.path.join(SMAPS, "android12-systemui-excerpt.smaps"), proc / "2084.smaps")
    shutil.copy(os.path.join(SMAPS, "names-k6.12.smaps"), proc / "1000.smaps")
    env = dict(os.environ)
    env.update(PATH=FAKE_BIN + os.pathsep + env.get("PATH", ""), FAKE_ADB_PROC=str(proc),
               FAKE_ADB_LOG=str(tmp_path / "log"), FAKE_ADB_DEVICES="emulator-5554:device",
               FAKE_ADB_SU="none", FAKE_ADB_PROTECTED="2084", PYTHONPATH=REPO)
    env.pop("FAKE_ADB_NO_SHELL_PROTOCOL", None)
    return env


def run(env, *args):
    p = subprocess.run([sys.executable, "-m", "vmatrace_bpf", "maps", *args], env=env, cwd=REPO,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert "Traceback" not in p.stderr
    return p


def log(env):
    with open(env["FAKE_ADB_LOG"]) as f:
        return f.read().splitlines()


def test_own_app_without_root(device):
    p = run(device, "--adb", "1000", "--fragments")
    assert p.returncode == 0, p.stderr
    assert "adb:/proc/1000/smaps" in p.stdout and "[anon:same]" in p.stdout
    assert log(device) == ["cat /proc/1000/smaps"]


@pytest.mark.parametrize("su,used", [("su0", "su 0 cat /proc/2084/smaps"),
                                     ("magisk", "su -c 'cat /proc/2084/smaps'")])
def test_retries_with_su(device, su, used):
    device["FAKE_ADB_SU"] = su
    p = run(device, "--adb", "2084", "--by", "category")
    assert p.returncode == 0, p.stderr
    assert "Dalvik Heap" in p.stdout and "11420" in p.stdout
    assert log(device)[0] == "cat /proc/2084/smaps" and log(device)[-1] == used


def test_serial(device):
    device["FAKE_ADB_DEVICES"] = "emulator-5554:device,R58M2309K1N:device"
    p = run(device, "--adb", "-s", "R58M2309K1N", "1000", "-j")
    assert p.returncode == 0, p.stderr
    assert '"format": "smaps"' in p.stdout and "R58M2309K1N:/proc/1000/smaps" in p.stdout


@pytest.mark.parametrize("setup,args,expected", [
    ({"FAKE_ADB_DEVICES": ""}, ["1000"], "no devices/emulators found"),
    ({"FAKE_ADB_DEVICES": "a:device,b:device"}, ["1000"], "more than one device/emulator: choose one with -s"),
    ({"FAKE_ADB_DEVICES": "a:unauthorized"}, ["1000"], "device unauthorized"),
    ({"FAKE_ADB_DEVICES": "a:offline"}, ["1000"], "device offline"),
    ({}, ["-s", "nope", "1000"], "device 'nope' not found"),
    ({}, ["99999"], "no process with PID 99999 on the device"),
    ({}, ["2084"], "permission denied reading /proc/2084/smaps on the device, also with su"),
    ({"FAKE_ADB_SU": "su0", "FAKE_ADB_NO_SHELL_PROTOCOL": "1"}, ["99999"], "no process with PID 99999"),
    ({"FAKE_ADB_NO_SHELL_PROTOCOL": "1"}, ["2084"], "permission denied reading /proc/2084/smaps"),
])
def test_errors_are_one_line(device, setup, args, expected):
    device.update(setup)
    p = run(device, "--adb", *args)
    assert p.returncode != 0
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("vmabpf: ") and expected in lines[0]


def test_old_adb_without_shell_protocol_still_reads(device):
    device.update(FAKE_ADB_NO_SHELL_PROTOCOL="1", FAKE_ADB_SU="su0")
    p = run(device, "--adb", "2084")
    assert p.returncode == 0, p.stderr
    assert log(device) == ["cat /proc/2084/smaps", "su 0 cat /proc/2084/smaps"]


def test_no_adb_installed(device, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    device["PATH"] = str(empty)
    p = subprocess.run([sys.executable, "-m", "vmatrace_bpf", "maps", "--adb", "1000"], env=device, cwd=REPO,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert p.returncode != 0 and "adb not found on PATH" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_a_device_that_never_stops_is_cut_off(tmp_path, monkeypatch):
    """adb output is bounded in size and time: an endless stream ends in one error, not in memory running out."""
    from vmatrace_bpf import adb as maps_cmd
    fake = tmp_path / "adb"
    fake.write_text("#!/bin/sh\nexec yes 7f0000000000-7f0000001000\n")
    fake.chmod(0o755)
    monkeypatch.setattr(maps_cmd, "MAX_ADB_BYTES", 1 << 20)
    with pytest.raises(maps_cmd.VmabpfError, match="adb sent more than 1 MiB"):
        maps_cmd.shell(str(fake), None, "cat /proc/1/smaps")
    slow = tmp_path / "adb-slow"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    monkeypatch.setattr(maps_cmd, "ADB_TIMEOUT", 1)
    with pytest.raises(maps_cmd.VmabpfError, match="did not answer within 1 s"):
        maps_cmd.shell(str(slow), None, "cat /proc/1/smaps")

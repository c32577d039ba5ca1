"""The CLI on this host (no BPF needed): doctor from saved kernel files, errors as one line."""

import json
import os
import subprocess
import sys

from conftest import DATA, REPO, btf_path

VMABPF = [sys.executable, "-m", "vmatrace_bpf"]


def run(*args, **kw):
    return subprocess.run(VMABPF + list(args), capture_output=True, text=True, cwd=REPO, **kw)


def saved_args(release, arch="x86_64"):
    d = os.path.join(DATA, "kernels", arch)
    args = ["--kallsyms", f"{d}/kallsyms-{release}.txt", "--config", f"{d}/config-{release}", "--release", release,
            "--arch", arch]
    if os.path.exists(f"{d}/available_filter_functions-{release}.txt"):
        args += ["--filter-functions", f"{d}/available_filter_functions-{release}.txt"]
    if btf_path(arch, release):
        args += ["--btf", btf_path(arch, release)]
    return args


def test_doctor_saved_kernel_json():
    r = run("doctor", "--json", *saved_args("6.1.192"))
    js = json.loads(r.stdout)
    caps = {c["capability"]: c for c in js["plan"]["capabilities"]}
    assert caps["merge"]["variant"] == "vma_merge" and caps["merge"]["probes"][0]["target"] == "vma_merge"
    assert js["release"] == "6.1.192"


def test_doctor_on_this_host_says_what_is_missing():
    """This host's kernel has neither kprobes nor ANON_VMA_NAME: exit 1, no traceback."""
    r = run("doctor")
    if r.returncode == 0:
        return  # a host that can trace: nothing to check here
    assert r.returncode == 1
    assert "Traceback" not in r.stdout + r.stderr
    assert "vmabpf watch cannot run here" in r.stdout
    assert "[FAIL]" in r.stdout


def test_watch_errors_are_one_line():
    r = run("watch", "-p", "999999")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "no process with PID 999999" in r.stderr
    r = run("watch")
    assert r.returncode == 2 and r.stderr.strip() == "vmabpf: watch needs -p PID (the process to trace)"
    r = run("watch", "-p", str(os.getpid()), "--force", "fork=bogus")
    assert r.returncode == 1 and "unknown variant" in r.stderr and "Traceback" not in r.stderr


def test_backend_and_adb_errors_are_one_line(tmp_path):
    fake = os.path.join(REPO, "tests", "bin")
    for args, env, code, text in (
            (["watch", "-s", "X", "-p", "1"], {}, 2, "-s SERIAL chooses the device for --adb"),
            (["record", "-o", str(tmp_path / "r.jsonl"), "--backend", "bcc", "--adb", "-p", "1"], {}, 2,
             "bcc cannot run over adb"),
            (["watch", "--adb", "-p", "1"], {"PATH": str(tmp_path)}, 1, "adb not found on PATH"),
            (["watch", "--adb", "-p", "1"], {"PATH": fake + os.pathsep + os.environ["PATH"], "FAKE_ADB_DEVICES": ""},
             1, "no devices/emulators found")):
        r = run(*args, env=dict(os.environ, **env))
        assert r.returncode == code, (args, r.stderr)
        assert r.stderr.count("\n") == 1 and text in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "r.jsonl").exists()  # refused before the output was made
    js = json.loads(run("doctor", "--json", *saved_args("7.2.13")).stdout)
    assert js["tracefs_backend"]["missing"].startswith("name_free")


def test_watch_ebpf_prints_program_with_plan_macros():
    r = run("watch", "--ebpf", "-p", "1")
    assert r.returncode == 0
    assert "#define FILTER_PIDS 1" in r.stdout and '#include "vmatrace.h"' in r.stdout
    assert "TRACEPOINT_PROBE" in r.stdout


def test_doctor_saved_files_must_exist_and_parse(tmp_path):
    """Every file named for an offline plan is read, or one line says which and why."""
    import gzip
    ks = os.path.join(DATA, "kernels", "x86_64", "kallsyms-6.6.87.txt")
    cfg = os.path.join(DATA, "kernels", "x86_64", "config-6.6.87")
    rnd = tmp_path / "random"
    rnd.write_bytes(bytes(range(256)) * 20)
    trunc = tmp_path / "config.gz"
    trunc.write_bytes(gzip.compress(open(cfg, "rb").read())[:3000])
    cases = [
        (["--kallsyms", str(tmp_path / "missing")], "missing: no such file"),
        (["--kallsyms", str(rnd)], "line 1 is not a kallsyms file"),
        (["--kallsyms", "/dev/zero"], "/dev/zero is a character device"),
        (["--kallsyms", ks, "--btf", str(tmp_path / "nobtf")], "nobtf: not usable BTF: "),
        (["--kallsyms", ks, "--btf", str(rnd)], "not usable BTF: bad BTF magic"),
        (["--kallsyms", ks, "--config", str(trunc)], "config.gz: truncated or corrupt gzip"),
        (["--kallsyms", ks, "--filter-functions", str(tmp_path / "noff")], "noff: no such file"),
        (["--btf", str(rnd)], "they need --kallsyms"),
    ]
    for args, want in cases:
        r = run("doctor", *args)
        assert r.returncode in (1, 2) and want in r.stderr, (args, r.stderr)
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr and "Aborted" not in r.stderr + r.stdout


def test_numbers_are_checked_and_usage_errors_are_one_line():
    """-p 0 would mean 'no filter', --duration nan never ends, COUNT 0 prints nothing: all refused (exit 2)."""
    cases = [
        (["watch", "-p", "0"], "'-p' / '--pid': 0 is not in the range"),
        (["watch", "-p", "1", "-t", "0"], "'-t' / '--tid': 0 is not in the range"),
        (["watch", "-p", "1", "--duration", "nan"], "'nan' is not a positive, finite number of seconds"),
        (["watch", "-p", "1", "--duration", "-1"], "'-1' is not a positive, finite number of seconds"),
        (["watch", "-p", "1", "1", "0"], "'[COUNT]': 0 is not in the range x>=1"),
        (["watch", "-p", "1", "--", "-2"], "'[INTERVAL]': '-2' is not a positive"),
        (["record", "-o", "-", "--duration", "inf"], "'inf' is not a positive, finite number"),
        (["forklat", "1", "0"], "0 is not in the range x>=1"),
        (["report", "-p", "0", "x"], "0 is not in the range"),
        (["bench", "fork", "--vmas", "0"], "0 is not in the range"),
        (["nosuchcommand"], "No such command 'nosuchcommand'"),
        (["watch", "--bogus"], "No such option '--bogus'"),
    ]
    for args, want in cases:
        r = run(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith("vmabpf: ") and r.stderr.count("\n") == 1 and want in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_header_directories_must_be_roots(tmp_path, monkeypatch):
    """bcc compiles what it finds in BCC_KERNEL_SOURCE or $TMPDIR/kheaders-<release> into a program
    loaded into the kernel: doctor trusts only a non-empty directory of root's, writable by root only."""
    from vmatrace_bpf import checks as doctor
    from vmatrace_bpf.kernel import KernelInfo, KernelFiles
    d = tmp_path / "kheaders-9.9.9"
    d.mkdir()
    assert "is empty" in doctor.untrusted_dir(str(d))
    (d / "include").mkdir()
    os.chmod(d, 0o777)
    assert "writable by others" in doctor.untrusted_dir(str(d))
    os.chmod(d, 0o755)
    if os.geteuid() == 0:
        assert doctor.untrusted_dir(str(d)) == ""
        os.chown(d, 65534, 65534)
        assert "owned by uid 65534, not root" in doctor.untrusted_dir(str(d))
        k = KernelInfo(KernelFiles(release="9.9.9", arch="x86_64", live=True))
        monkeypatch.setenv("TMPDIR", str(tmp_path))
        monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
        c = doctor.check_headers(k)
        assert c.ok is False and c.blocking and "is not used: " in c.detail
        monkeypatch.setenv("BCC_KERNEL_SOURCE", str(d))
        c = doctor.check_headers(k)
        assert c.ok is False and "owned by uid 65534" in c.detail


# -- fuzzing the saved-file readers: one VmabpfError or a plan, never another exception -------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

KALLSYMS_LINE = st.from_regex(r"\A[0-9a-f]{1,16} [tTdD] [a-z_.0-9]{1,20}\n\Z", fullmatch=True)


@settings(max_examples=150, deadline=3000, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(ks=st.one_of(st.binary(max_size=300), st.lists(KALLSYMS_LINE, max_size=8).map("".join).map(str.encode)),
       cfg=st.one_of(st.binary(max_size=300), st.lists(st.sampled_from(
           ["CONFIG_ANON_VMA_NAME=y\n", "CONFIG_USERFAULTFD=y\n", "# CONFIG_X is not set\n", "junk\n"]),
           max_size=6).map("".join).map(str.encode)),
       gz=st.booleans(), cut=st.integers(0, 400))
def test_saved_kallsyms_and_config_readers_fuzzed(tmp_path, ks, cfg, gz, cut):
    import gzip
    from vmatrace_bpf.errors import VmabpfError
    from vmatrace_bpf.kernel import KernelInfo, check_saved_files
    from vmatrace_bpf.plan import choose
    (tmp_path / "ks").write_bytes(ks)
    (tmp_path / "cfg").write_bytes(gzip.compress(cfg)[:cut] if gz else cfg)
    k = KernelInfo.from_files("x", "x86_64", kallsyms=str(tmp_path / "ks"), config=str(tmp_path / "cfg"))
    try:
        check_saved_files(k.files)
    except VmabpfError:
        return
    choose(k)


def test_help_summaries_are_the_commands_own():
    from vmatrace_bpf import cli
    for name, summary in cli.COMMANDS.items():
        cmd = cli.load_command(name)
        first = " ".join(cmd.help.split("\n\n")[0].split())
        assert summary == first, name

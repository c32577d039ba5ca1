"""bcc compiles in an empty private directory (loader.empty_cwd): its first compile of a boot runs shell
commands (tar, rm -rf) in the working directory, and the caller's must be out of their reach."""

import os
import stat
from types import SimpleNamespace

import pytest

from vmatrace_bpf import loader
from vmatrace_bpf.errors import VmabpfError


class FakeBPF:
    """Records where it was compiled; a shell command of bcc's with a relative path would land there."""

    seen = []

    def __init__(self, text, cflags):
        cwd = os.getcwd()
        FakeBPF.seen.append((cwd, sorted(os.listdir(cwd)), stat.S_IMODE(os.stat(cwd).st_mode)))
        with open("stray", "w") as f:  # what bcc's shell might leave behind: it stays in that directory
            f.write("x")
        if "FAIL" in text:
            raise Exception("Failed to compile BPF module <text>")
        self.tracepoint_fds, self.kfunc_entry_fds, self.kfunc_exit_fds = {}, {}, {}


def tracer():
    t = loader.Tracer.__new__(loader.Tracer)
    t.defines, t.pids = {}, []
    return t


@pytest.fixture
def fake_bcc(monkeypatch, tmp_path):
    FakeBPF.seen = []
    monkeypatch.setattr(loader, "import_bcc", lambda: SimpleNamespace(BPF=FakeBPF))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "users-file").write_text("keep")
    return tmp_path


def test_compiles_in_an_empty_private_directory_and_comes_back(fake_bcc, monkeypatch):
    monkeypatch.setattr(loader, "program_source", lambda: "int f(void *ctx) { return 0; }")
    tracer().load()
    (cwd, listing, mode), = FakeBPF.seen
    assert cwd != str(fake_bcc) and listing == [] and mode == 0o700
    assert os.getcwd() == str(fake_bcc)
    assert sorted(os.listdir(fake_bcc)) == ["users-file"]  # the stray file went elsewhere
    assert os.path.exists(os.path.join(cwd, "stray"))      # and was left where bcc made it (not deleted blind)
    os.unlink(os.path.join(cwd, "stray"))
    os.rmdir(cwd)


def test_failed_compile_comes_back_too(fake_bcc, monkeypatch):
    monkeypatch.setattr(loader, "program_source", lambda: "FAIL")
    with pytest.raises(VmabpfError, match="failed to compile"):
        tracer().load()
    assert os.getcwd() == str(fake_bcc)
    (cwd, _, _), = FakeBPF.seen
    os.unlink(os.path.join(cwd, "stray"))
    os.rmdir(cwd)


def test_empty_directory_is_removed():
    here = os.getcwd()
    with loader.empty_cwd() as d:
        assert os.getcwd() == d and os.listdir(d) == []
    assert os.getcwd() == here and not os.path.exists(d)

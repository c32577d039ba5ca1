"""Output files never lose what was there (record -o, report -o)."""

import os
import stat

import pytest

from vmatrace_bpf.errors import VmabpfError
from vmatrace_bpf.outfile import OutputFile


def test_new_file_is_exclusive_and_private(tmp_path):
    p = tmp_path / "rec.jsonl"
    out = OutputFile(str(p))
    out.open().write("x\n")
    out.commit()
    assert p.read_text() == "x\n"
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600


def test_existing_file_is_refused_and_kept(tmp_path):
    p = tmp_path / "rec.jsonl"
    p.write_text("precious\n")
    with pytest.raises(VmabpfError, match="exists .a file.; not overwritten"):
        OutputFile(str(p)).open()
    assert p.read_text() == "precious\n"


def test_replace_keeps_the_old_file_until_the_new_one_is_complete(tmp_path):
    p = tmp_path / "rec.jsonl"
    p.write_text("old\n")
    out = OutputFile(str(p), force=True)
    out.open().write("new\n")
    assert p.read_text() == "old\n"  # not touched while writing
    out.commit()
    assert p.read_text() == "new\n"
    assert sorted(os.listdir(tmp_path)) == ["rec.jsonl"]  # no temp file left
    # a failed run (nothing worth keeping) leaves the old file alone
    out = OutputFile(str(p), force=True)
    out.open().write("half")
    out.discard()
    assert p.read_text() == "new\n" and sorted(os.listdir(tmp_path)) == ["rec.jsonl"]


def test_symlink_at_the_target_is_never_followed(tmp_path):
    target = tmp_path / "victim"
    target.write_text("do not touch\n")
    link = tmp_path / "out.jsonl"
    os.symlink(target, link)
    with pytest.raises(VmabpfError, match="exists .a symlink."):
        OutputFile(str(link)).open()
    out = OutputFile(str(link), force=True)
    out.open().write("report\n")
    out.commit()
    assert target.read_text() == "do not touch\n"
    assert not os.path.islink(link) and link.read_text() == "report\n"
    # a dangling symlink is refused too (O_EXCL would not follow it either)
    os.unlink(link)
    os.symlink(tmp_path / "nowhere", link)
    with pytest.raises(VmabpfError):
        OutputFile(str(link)).open()
    assert not (tmp_path / "nowhere").exists()


def test_discard_removes_only_what_it_created(tmp_path):
    p = tmp_path / "rec.jsonl"
    out = OutputFile(str(p))
    out.open()
    out.discard()
    assert not p.exists()


def test_directory_is_refused(tmp_path):
    with pytest.raises(VmabpfError, match="is a directory"):
        OutputFile(str(tmp_path)).open()

"""inputs.read_regular: whole files, bounded, without allocating the bound."""

import os
import subprocess
import sys

import pytest

from vmatrace_bpf.errors import VmabpfError
from vmatrace_bpf.inputs import read_regular

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_reads_the_whole_file_and_refuses_one_over_the_limit(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"x" * 3000)
    assert read_regular(str(p), "a test file", 3000) == b"x" * 3000
    with pytest.raises(VmabpfError, match="larger than"):
        read_regular(str(p), "a test file", 2999)


def test_a_file_that_says_size_zero_is_read_to_its_end():
    # /proc files stat as 0 bytes; this one is never empty
    data = read_regular("/proc/self/status", "a status file", 1 << 20)
    assert data.startswith(b"Name:") and data.endswith(b"\n")


def test_a_huge_limit_is_not_allocated(tmp_path):
    # the 8 GiB snapshot limit: reading a 1 KiB snapshot in a process allowed 1 GiB of address space
    # (a small guest) failed with MemoryError when the limit was allocated up front
    p = tmp_path / "small"
    p.write_bytes(b"y" * 1024)
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)); "
            "from vmatrace_bpf.inputs import read_regular; "
            "sys.exit(0 if read_regular(sys.argv[1], 'a test file', 8 << 30) == b'y' * 1024 else 3)")
    r = subprocess.run([sys.executable, "-c", code, str(p)], cwd=REPO, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=REPO))
    assert r.returncode == 0, r.stderr

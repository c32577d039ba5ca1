"""`vmabpf forklat`: in-kernel log2 histograms of dup_mmap latency, one section per VMA-count bucket."""

import json

from guestutil import finish, go, start_vmabpf, start_workload


def log2_bucket(v):
    """bcc's bpf_log2l(): index i such that 2**(i-1) <= v < 2**i."""
    return v.bit_length()


def run_forklat(*args):
    wl, pid = start_workload("forks")
    fl = start_vmabpf("forklat", "-p", str(pid), *args)
    res = go(wl)
    finish(wl)
    out, err = fl.communicate(timeout=120)  # ends when the process exits
    assert fl.returncode == 0, err
    return res, out


def test_forklat_sections_by_vma_count():
    res, out = run_forklat("-j", "-u")
    sections = [json.loads(line) for line in out.splitlines()]
    assert len(sections) == 3
    for sec, run in zip(sections, res["runs"]):
        b = log2_bucket(run["map_count"])
        assert sec["section"] == f"map_count {(1 << b) >> 1} -> {(1 << b) - 1}"
        assert sec["count"] == run["forks"] == 3
        assert sum(d["count"] for d in sec["data"]) == 3
        assert sec["val_type"] == "usecs"
        assert [set(d) for d in sec["data"]] == [{"interval-start", "interval-end", "count"}] * len(sec["data"])


def test_forklat_text_like_print_log2_hist():
    _, out = run_forklat("--by", "named")
    assert "without named VMAs" in out and "with named VMAs" not in out.replace("without named VMAs", "")
    assert "nsecs               : count     distribution" in out
    assert "count: 9" in out

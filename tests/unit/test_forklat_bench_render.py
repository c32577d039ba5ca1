"""forklat and bench output, from numbers (no kernel needed)."""

import json

from vmatrace_bpf.aggregate import regression
from vmatrace_bpf.forkhist import section_label
from vmatrace_bpf.forkbench import stats_ms
from vmatrace_bpf.render import bench_text as render, forklat_json as render_json, forklat_text as render_text


def sections():
    vals = [0] * 65
    vals[4], vals[5] = 2, 1  # 8-15 and 16-31
    return [(7, section_label("vmas", 7, ""), vals, 3, 3 * 12_000)]


def test_section_labels():
    assert section_label("vmas", 7, "") == "map_count 64 -> 127"
    assert section_label("named", 1, "") == "with named VMAs"
    assert section_label("named", 0, "") == "without named VMAs"
    assert section_label("comm", 0, "bash") == "comm = bash"


def test_forklat_json_has_bcc_keys():
    (obj,) = render_json(sections(), "nsecs", "vmas")
    json.dumps(obj)
    assert set(obj) >= {"ts", "val_type", "data"} and obj["section"] == "map_count 64 -> 127"
    assert obj["data"][-2:] == [{"interval-start": 8, "interval-end": 15, "count": 2},
                                {"interval-start": 16, "interval-end": 31, "count": 1}]
    assert obj["data"][0] == {"interval-start": 0, "interval-end": 1, "count": 0}
    assert obj["count"] == 3 and obj["avg"] == 12000


def test_forklat_text():
    text = render_text(sections(), "nsecs", "vmas")
    assert "map_count 64 -> 127" in text
    assert "         8 -> 15         : 2        |****************************************|" in text
    assert "avg = 12000 nsecs, total: 36000 nsecs, count: 3" in text
    assert render_text([], "usecs", "vmas") == "(no forks)"


def test_bench_numbers_and_table():
    assert regression(10.0, 14.0) == 40.0 and regression(None, 1.0) is None and regression(0, 1.0) is None
    s = stats_ms([3_000_000, 1_000_000, 2_000_000])
    assert s == {"n": 3, "median_ms": 2.0, "p90_ms": 3.0}
    res = {"vmas": 100, "name_len": 79, "pages": 0, "forks": 3, "distinct_names": True,
           "map_count": {"unnamed": 200, "named": 200},
           "modes": {"off": {"unnamed": s, "named": stats_ms([4_000_000] * 3), "regression_pct": 100.0},
                     "full": {"unnamed": {**s, "ratio_vs_off": 1.1}, "named": {**s, "ratio_vs_off": 0.5},
                              "regression_pct": 0.0,
                              "dup_mmap": {"unnamed": {**s, "named_refs_per_fork": [0]},
                                           "named": {**s, "named_refs_per_fork": [100]}},
                              "lost_events": 0}},
           "bpf_profile": {"kr_vm_area_dup": {"run_cnt": 300, "run_time_ns": 30000, "avg_ns": 100.0}}}
    text = render(res)
    assert "trace off, median" in text and "+100.0%" in text
    assert "1.100" in text and "[100]" in text and "kr_vm_area_dup" in text


def test_bench_workload_never_imports_from_the_current_directory(tmp_path, monkeypatch):
    """bench runs as root: a vmatrace_bpf/ package in the current directory (or on PYTHONPATH)
    must not be what its worker process runs."""
    import os
    from vmatrace_bpf.forkbench import Scenario
    evil = tmp_path / "vmatrace_bpf"
    evil.mkdir()
    marker = tmp_path / "pwned"
    code = f"open({str(marker)!r}, 'w').close()\n"
    for fn in ("__init__.py", "workload.py", "__main__.py"):
        (evil / fn).write_text(code)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    s = Scenario("unnamed", 4, 0, 0, True)  # (this host may not name VMAs)
    try:
        assert s.map_count >= 4 and s.pid != os.getpid()
    finally:
        s.close()
    assert not marker.exists()

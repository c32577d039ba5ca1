"""`vmabpf bench fork` in the guest: small and fast, every mode side by side."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_bench_fork_small_all_modes():
    r = subprocess.run([sys.executable, "-m", "vmatrace_bpf", "bench", "fork", "--vmas", "2000", "--forks", "20",
                        "--trace", "all", "-j"], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert list(res["modes"]) == ["off", "latency", "full"]
    for mode, row in res["modes"].items():
        for scen in ("unnamed", "named"):
            assert row[scen]["n"] == 20 and row[scen]["median_ms"] > 0
            if mode != "off":
                assert row[scen]["ratio_vs_off"] > 0
        assert row["regression_pct"] is not None
    # both processes hold the same number of VMAs; only the named one takes name references
    assert abs(res["map_count"]["named"] - res["map_count"]["unnamed"]) <= 2
    full = res["modes"]["full"]
    assert full["dup_mmap"]["named"]["named_refs_per_fork"] == [2000]
    assert full["dup_mmap"]["unnamed"]["named_refs_per_fork"] == [0]
    assert full["dup_mmap"]["named"]["n"] == 20 and full["lost_events"] == 0
    assert all(v > 0 for v in res["modes"]["latency"]["dup_mmap_mean_ms"].values())

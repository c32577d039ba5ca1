"""`vmabpf bench fork` in the guest: small and fast, every mode side by side."""

import json
import os
import subprocess
import sys

from vmatrace_bpf.kernel import KernelInfo
from vmatrace_bpf.plan import choose

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_bench_fork_small_all_modes():
    # errors="replace": bcc's first compile in a boot unpacks the kernel headers and once printed
    # "sh: 1: \xe5\xff\xff: not found" on stderr (arm64 6.12 guest, CI of 6d1eb05): not UTF-8, and not ours
    r = subprocess.run([sys.executable, "-m", "vmatrace_bpf", "bench", "fork", "--vmas", "2000", "--forks", "20",
                        "--trace", "all", "-j"], capture_output=True, text=True, errors="replace", cwd=REPO,
                       timeout=900)
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

    # the kernel's accounting (bpf_stats, bpftool) lists every program each tracer loaded, matched by
    # program id: fexit (kretfunc__vmlinux__*) and tracepoint programs too, not only the kprobes
    kinfo = KernelInfo.live()

    def programs(only, events):
        out = set()
        for p in choose(kinfo, only=only).probes():
            if p.kind == "tracepoint":
                if events:  # latency mode (FORK_NO_EVENTS) compiles no tracepoint program
                    out.add("tracepoint__" + p.target.replace(":", "__"))
            else:
                out.add(p.fn)
        return out

    want = ({f"{fn} [latency]" for fn in programs(["fork"], False)}
            | {f"{fn} [full]" for fn in programs(["fork", "vma_dup"], True)})
    prof = res["bpf_profile"]
    assert set(prof) == want, prof
    for label, st in prof.items():
        # bpftool names a program by its BTF function name, not bcc's (fexit: "vm_area_dup"), so only the id
        # ties the two together: found by id in bpftool's list, not taken from fdinfo
        assert st["source"] == "bpftool" and st["id"] > 0, (label, st)
        assert st["run_cnt"] > 0 and st["avg_ns"] > 0, (label, st)

    # the accounting is on only in the profile round after the timed forks (it slows every program run):
    # vm_area_dup ran for that round's forks of both processes (2,000 VMAs each), not for the 20 timed ones
    k = res["profile_round"]["forks"]
    assert k >= 3 and all(res["profile_round"]["modes"][m][s]["n"] == k for m in ("latency", "full")
                          for s in ("unnamed", "named"))
    dup = next(st["run_cnt"] for label, st in prof.items() if "vm_area_dup" in label and label.endswith("[full]"))
    assert 2 * k * 2000 <= dup < 2 * (k + 20) * 2000, (k, dup)

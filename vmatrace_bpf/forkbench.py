"""The fork benchmark behind `vmabpf bench fork`: what names cost fork(), and what vmabpf's own probes cost it.

Reproduces the experiment behind the refcounted struct anon_vma_name: a process
with N anonymous VMAs that cannot merge, unnamed or named (names of L
characters), forks F times; the table compares fork() latency (median, p90),
named against unnamed.  With --trace, the same forks also run with vmabpf's
probes attached (latency: dup_mmap only, histograms in the kernel; full: plus
vm_area_dup on every VMA copied, counted per fork in the kernel), interleaved
round by round with untraced forks so that the ratios are measured side by side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from statistics import median
from typing import Dict, Iterable, List, Optional

from . import workload
from .aggregate import percentile, regression
from .errors import VmabpfError
from .events import decode_name
from .loader import Tracer
from .plan import choose
from .session import prepare

MODES = ("off", "latency", "full")
SCENARIOS = ("unnamed", "named")
HEADROOM = 500  # VMAs left for the interpreter and libraries under vm.max_map_count


def max_map_count() -> int:
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 65530


class Scenario:
    """A workload process holding the VMAs, forking on request."""

    def __init__(self, name: str, vmas: int, name_len: int, pages: int, distinct: bool):
        self.name = name
        comm = f"vmabench-{name}"[:15]
        # run as root: the installed workload.py by its path, isolated (-I: no PYTHONPATH, no user
        # site), never `-m`, which would import a vmatrace_bpf/ from the current directory first
        args = [sys.executable, "-I", os.path.abspath(workload.__file__), "bench-server", str(vmas),
                str(name_len if name == "named" else 0), str(pages), "1" if distinct else "0", comm]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        hello = json.loads(self.proc.stdout.readline() or '{"error": "the workload died"}')
        if "error" in hello:
            self.close()
            raise VmabpfError(f"building {vmas} {name} VMAs failed: {hello['error']}")
        self.pid = hello["pid"]
        self.map_count = hello["map_count"]
        self.comm = comm

    def fork(self, k: int) -> List[int]:
        self.proc.stdin.write(f"fork {k}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        self.proc.wait(timeout=120)


def stats_ms(ns: List[int]) -> Dict[str, Optional[float]]:
    s = sorted(ns)
    return {"n": len(s), "median_ms": median(s) / 1e6 if s else None,
            "p90_ms": percentile(s, 90) / 1e6 if s else None}


def make_tracers(modes, kinfo, pids):
    """One loaded (not attached) program per traced mode."""
    tracers = {}
    if "latency" in modes:
        plan = choose(kinfo, only=["fork"])
        tracers["latency"] = Tracer(plan, kinfo, lambda ev: None, pids=pids, filter_pids=True,
                                    extra_defines={"FORKLAT": 1, "FORKLAT_BY": 3, "FORKLAT_DIV": 1,
                                                   "FORK_NO_EVENTS": 1})
    if "full" in modes:
        plan = choose(kinfo, only=["fork", "vma_dup"])
        events: List[dict] = []
        tracers["full"] = Tracer(plan, kinfo, events.append, pids=pids, filter_pids=True)
        tracers["full"].collected = events
    for name, t in tracers.items():
        if t.plan.missing:
            raise VmabpfError(f"--trace {name}: no attach point here for {t.plan.missing_line()}")
    return tracers


class BpfStats:
    """Per-program run counts and run time (kernel.bpf_stats_enabled, read with bpftool): where the
    tracer's time goes.  The probe mechanism itself (int3 trap or trampoline) is not in run_time_ns."""

    PATH = "/proc/sys/kernel/bpf_stats_enabled"

    def __init__(self):
        self.old = None

    def __enter__(self):
        try:
            with open(self.PATH) as f:
                self.old = f.read().strip()
            with open(self.PATH, "w") as f:
                f.write("1")
        except OSError:
            self.old = None
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            try:
                with open(self.PATH, "w") as f:
                    f.write(self.old)
            except OSError:
                pass

    @staticmethod
    def bpftool_progs() -> Optional[List[dict]]:
        """`bpftool prog show --json`, or None without bpftool."""
        # the distribution's bpftool by its path, not whatever PATH holds (this runs as root)
        bpftool = next((p for p in ("/usr/sbin/bpftool", "/usr/bin/bpftool", "/sbin/bpftool") if os.path.isfile(p)),
                       None)
        if not bpftool:
            return None
        try:
            out = subprocess.run([bpftool, "prog", "show", "--json"], capture_output=True, text=True, timeout=60)
            progs = json.loads(out.stdout or "null")
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return None
        return progs if isinstance(progs, list) else None

    @staticmethod
    def match(progs: Optional[List[dict]], programs: Dict[str, Dict[str, int]],
              expected: Iterable[str] = ()) -> Dict[str, dict]:
        """{label: {"id", "name", "run_cnt", "run_time_ns", "avg_ns", "source"}} for every program of
        PROGRAMS ({label: fdinfo numbers, see Tracer.programs}), matched to PROGS (bpftool's JSON) by
        program id: names cannot tell them apart (the kernel keeps 15 characters, BPF_OBJ_NAME_LEN 16,
        and bcc's fentry/fexit programs all begin "kfunc__vmlinux_"/"kretfunc__vmlin"; bpftool shows the
        BTF name of some, "vm_area_dup" for bcc's "kretfunc__vmlinux__vm_area_dup").  A program bpftool
        does not list is read from its fdinfo (the same kernel counters, source "fdinfo"); a label of
        EXPECTED that PROGRAMS lacks (a program that was never loaded) is listed with source "missing"
        and no numbers, never left out."""
        by_id = {p.get("id"): p for p in progs or () if isinstance(p, dict)}
        stats: Dict[str, dict] = {}
        for label, info in programs.items():
            p = by_id.get(info.get("prog_id"))
            if p is not None:
                st = {"id": p["id"], "name": p.get("name", ""), "run_cnt": p.get("run_cnt", 0),
                      "run_time_ns": p.get("run_time_ns", 0), "source": "bpftool"}
            else:
                st = {"id": info.get("prog_id"), "name": None, "run_cnt": info.get("run_cnt", 0),
                      "run_time_ns": info.get("run_time_ns", 0), "source": "fdinfo"}
            st["avg_ns"] = st["run_time_ns"] / st["run_cnt"] if st["run_cnt"] else None
            stats[label] = st
        for label in expected:
            if label not in stats:
                stats[label] = {"id": None, "name": None, "run_cnt": None, "run_time_ns": None, "avg_ns": None,
                                "source": "missing"}
        return stats

    @classmethod
    def read(cls, tracers: Dict[str, "Tracer"]) -> Dict[str, dict]:
        """{"FN [MODE]": stats} for every program of each of TRACERS ({mode: Tracer}): those loaded, and
        those it should have loaded but did not (source "missing")."""
        programs = {f"{fn} [{mode}]": info for mode, t in tracers.items() for fn, info in t.programs().items()}
        expected = [f"{fn} [{mode}]" for mode, t in tracers.items() for fn in t.expected_programs()]
        return cls.match(cls.bpftool_progs(), programs, expected)


def _forks(t: Optional[Tracer], mode: str, scen: Dict[str, "Scenario"], k: int) -> Dict[str, List[int]]:
    """K forks of each scenario with T attached (None: untraced): {scenario: fork() latencies, ns}."""
    if t:
        t.attach()
    try:
        return {name: scen[name].fork(k) for name in SCENARIOS}
    finally:
        if t:
            if mode == "full":
                t.drain()
            t.detach()


def run_bench(vmas: int, name_len: int, pages: int, forks: int, modes: List[str], distinct: bool,
              rounds: int = 5, progress=None, stats=None) -> dict:
    """The experiment's result (see the module).  STATS (BpfStats, or a stand-in) profiles the programs in
    one more round of forks after the timed ones: kernel.bpf_stats_enabled makes every program run read
    the clock twice (slow under TCG), so it is never on while forks are timed; the profile round's fork
    times are in the result ("profile_round") to show what the accounting costs."""
    traced = [m for m in modes if m != "off"]
    kinfo = None
    if traced:
        kinfo, _ = prepare([], None, ())
    scen = {}
    try:
        for name in SCENARIOS:
            scen[name] = Scenario(name, vmas, name_len, pages, distinct)
        tracers = make_tracers(traced, kinfo, [s.pid for s in scen.values()]) if traced else {}
        for t in tracers.values():
            t.load()
        if "full" in tracers:
            tracers["full"].open_events()
        user = {m: {s: [] for s in SCENARIOS} for m in modes}
        per_round = [forks // rounds + (1 if i < forks % rounds else 0) for i in range(rounds)]
        for r, k in enumerate(per_round):
            if not k:
                continue
            for mode in modes:
                for name, ns in _forks(tracers.get(mode), mode, scen, k).items():
                    user[mode][name].extend(ns)
            if progress:
                progress(r + 1, rounds)
        result = {"vmas": vmas, "name_len": name_len, "pages": pages, "forks": forks, "distinct_names": distinct,
                  "map_count": {s: scen[s].map_count for s in SCENARIOS}, "modes": {}}
        for mode in modes:
            row = {s: stats_ms(user[mode][s]) for s in SCENARIOS}
            row["regression_pct"] = regression(row["unnamed"]["median_ms"], row["named"]["median_ms"])
            result["modes"][mode] = row
        if "latency" in tracers:
            totals = tracers["latency"].table("forklat_totals")
            by_comm = {decode_name(bytes(k.comm)): (v.count, v.sum_ns) for k, v in totals.items()}
            result["modes"]["latency"]["dup_mmap_mean_ms"] = {
                s: (by_comm[scen[s].comm][1] / by_comm[scen[s].comm][0] / 1e6) if scen[s].comm in by_comm else None
                for s in SCENARIOS}
        if "full" in tracers:
            t = tracers["full"]
            t.drain()
            evs = [e for e in t.collected if e["type"] == "fork"]
            full = result["modes"]["full"]
            full["dup_mmap"] = {}
            for s in SCENARIOS:
                mine = [e for e in evs if e["pid"] == scen[s].pid]
                full["dup_mmap"][s] = stats_ms([e["latency_ns"] for e in mine])
                full["dup_mmap"][s]["named_refs_per_fork"] = sorted({e["named_copied"] for e in mine})
            full["lost_events"] = t.lost()
        if tracers and stats is not None:
            # the profile: one more round per traced mode with the kernel's accounting on (not in the ratios)
            k = max(3, per_round[0])
            with stats():
                prof_ms = {mode: {name: stats_ms(ns) for name, ns in _forks(t, mode, scen, k).items()}
                           for mode, t in tracers.items()}
                result["bpf_profile"] = stats.read(tracers)
            result["profile_round"] = {"forks": k, "modes": prof_ms}
        for t in tracers.values():
            t.close()
        for mode in modes:
            if mode != "off":
                for s in SCENARIOS:
                    off, on = result["modes"]["off"][s]["median_ms"], result["modes"][mode][s]["median_ms"]
                    result["modes"][mode][s]["ratio_vs_off"] = (on / off) if off and on else None
        return result
    finally:
        for s in scen.values():
            s.close()

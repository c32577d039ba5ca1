"""`vmabpf bench fork`: what names cost fork(), and what vmabpf's own probes cost it.

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
from typing import Dict, List, Optional

import click

from .errors import VmabpfError, one_line_errors
from .report import percentile

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
        from . import workload
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


def regression(unnamed: Optional[float], named: Optional[float]) -> Optional[float]:
    if not unnamed or named is None:
        return None
    return (named - unnamed) / unnamed * 100.0


def make_tracers(modes, kinfo, pids):
    """One loaded (not attached) program per traced mode."""
    from .loader import Tracer
    from .plan import choose
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
    def read(fn_names) -> Dict[str, dict]:
        """{fn: {"run_cnt", "run_time_ns", "avg_ns"}} for the loaded programs named FN_NAMES."""
        # the distribution's bpftool by its path, not whatever PATH holds (this runs as root)
        bpftool = next((p for p in ("/usr/sbin/bpftool", "/usr/bin/bpftool", "/sbin/bpftool") if os.path.isfile(p)),
                       None)
        if not bpftool:
            return {}
        try:
            out = subprocess.run([bpftool, "prog", "show", "--json"], capture_output=True, text=True, timeout=60)
            progs = json.loads(out.stdout or "[]")
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return {}
        wanted = {fn[:15]: fn for fn in fn_names}  # the kernel keeps 15 characters of a program name
        me = os.getpid()
        stats: Dict[str, dict] = {}
        for p in progs:
            owners = {x.get("pid") for x in p.get("pids", [])}
            name = p.get("name", "")
            # this process's programs (bpftool names their owners), else the plan's names
            if (owners and me not in owners) or (not owners and name not in wanted):
                continue
            st = stats.setdefault(wanted.get(name, name), {"run_cnt": 0, "run_time_ns": 0})
            st["run_cnt"] += p.get("run_cnt", 0)
            st["run_time_ns"] += p.get("run_time_ns", 0)
        for st in stats.values():
            st["avg_ns"] = st["run_time_ns"] / st["run_cnt"] if st["run_cnt"] else None
        return stats


def run_bench(vmas: int, name_len: int, pages: int, forks: int, modes: List[str], distinct: bool,
              rounds: int = 5, progress=None) -> dict:
    traced = [m for m in modes if m != "off"]
    kinfo = None
    if traced:
        from .watch import prepare
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
                t = tracers.get(mode)
                if t:
                    t.attach()
                try:
                    for name in SCENARIOS:
                        user[mode][name].extend(scen[name].fork(k))
                finally:
                    if t:
                        if mode == "full":
                            t.drain()
                        t.detach()
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
            from .events import decode_name
            by_comm = {decode_name(bytes(k.comm)): (v.count, v.sum_ns) for k, v in totals.items()}
            result["modes"]["latency"]["dup_mmap_mean_ms"] = {
                s: (by_comm[scen[s].comm][1] / by_comm[scen[s].comm][0] / 1e6) if scen[s].comm in by_comm else None
                for s in SCENARIOS}
        if tracers:
            fns = {p.fn for t in tracers.values() for p in t.plan.probes()}
            fns |= {"tracepoint__sched__sched_process_fork"}
            result["bpf_profile"] = BpfStats.read(sorted(fns))
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


def fmt(v, spec=".2f", suffix=""):
    return "-" if v is None else f"{v:{spec}}{suffix}"


def render(result: dict) -> str:
    from tabulate import tabulate
    pages = result["pages"]
    what = f"{result['vmas']} VMAs, {pages} page{'s' if pages != 1 else ''} touched each, " \
           f"names of {result['name_len']} chars{' (distinct)' if result['distinct_names'] else ' (all equal)'}"
    lines = [f"fork() of a process with {what}; {result['forks']} forks per scenario and mode", ""]
    rows = []
    for mode, row in result["modes"].items():
        for stat in ("median_ms", "p90_ms"):
            rows.append([f"trace {mode}, {stat[:-3]}", fmt(row["unnamed"][stat]), fmt(row["named"][stat]),
                         fmt(regression(row["unnamed"][stat], row["named"][stat]), "+.1f", "%")])
        if mode == "latency" and row.get("dup_mmap_mean_ms"):
            d = row["dup_mmap_mean_ms"]
            rows.append(["  dup_mmap (BPF), mean", fmt(d["unnamed"]), fmt(d["named"]),
                         fmt(regression(d["unnamed"], d["named"]), "+.1f", "%")])
        if mode == "full" and row.get("dup_mmap"):
            d = row["dup_mmap"]
            rows.append(["  dup_mmap (BPF), median", fmt(d["unnamed"]["median_ms"]), fmt(d["named"]["median_ms"]),
                         fmt(regression(d["unnamed"]["median_ms"], d["named"]["median_ms"]), "+.1f", "%")])
    lines.append(tabulate(rows, headers=["scenario", "unnamed ms", "named ms", "regression"], tablefmt="simple",
                          disable_numparse=True))
    if len(result["modes"]) > 1:
        lines.append("")
        rows = [[mode, fmt(row["unnamed"].get("ratio_vs_off", 1.0 if mode == "off" else None), ".3f"),
                 fmt(row["named"].get("ratio_vs_off", 1.0 if mode == "off" else None), ".3f")]
                for mode, row in result["modes"].items()]
        lines.append("tracer overhead, fork() median with probes / without (same run, interleaved):")
        lines.append(tabulate(rows, headers=["trace", "unnamed", "named"], tablefmt="simple",
                              disable_numparse=True))
    prof = result.get("bpf_profile")
    if prof:
        lines.append("\nBPF programs (kernel.bpf_stats_enabled; the probe mechanism itself is not included):")
        lines.append(tabulate([[fn, st["run_cnt"], fmt(st["avg_ns"], ".0f"), fmt(st["run_time_ns"] / 1e6, ".1f")]
                               for fn, st in sorted(prof.items())],
                              headers=["program", "runs", "avg ns", "total ms"], tablefmt="simple", disable_numparse=True))
    full = result["modes"].get("full")
    if full and full.get("dup_mmap"):
        refs = full["dup_mmap"]["named"]["named_refs_per_fork"]
        lines.append(f"\nname references taken per fork of the named process (vm_area_dup, in-kernel): {refs}; "
                     f"lost events: {full['lost_events']}")
    return "\n".join(lines)


@click.group()
def bench():
    """Benchmarks on this kernel (side by side, ratios)."""


@bench.command("fork")
@click.option("--vmas", type=click.IntRange(1, 1 << 24), help="VMAs in the forking process (default: vm.max_map_count minus headroom)")
@click.option("--name-len", type=click.IntRange(1, 79), default=79, show_default=True, help="name length")
@click.option("--pages", type=click.Choice(["0", "1", "10"]), default="0", show_default=True,
              help="pages populated per VMA")
@click.option("--forks", type=click.IntRange(1, 100000), default=20, show_default=True, help="forks per scenario")
@click.option("--trace", "trace", default="off", show_default=True, metavar="off|latency|full|all",
              help="probes attached during the forks; a comma list or 'all' runs them side by side")
@click.option("--same-name", is_flag=True, help="give every VMA the same name (default: distinct names)")
@click.option("-j", "--json", "as_json", is_flag=True, help="print JSON")
def bench_fork(vmas, name_len, pages, forks, trace, same_name, as_json):
    """fork() latency of a process with many VMAs, unnamed vs named, and the tracer's overhead."""
    one_line_errors(_bench_fork)(vmas, name_len, int(pages), forks, trace, same_name, as_json)


def _bench_fork(vmas, name_len, pages, forks, trace, same_name, as_json):
    modes = list(MODES) if trace == "all" else [m.strip() for m in trace.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise VmabpfError(f"--trace takes off, latency, full (comma-separated) or all, not {trace!r}", exit_code=2)
    if "off" not in modes and len(modes) > 1:
        modes.insert(0, "off")
    limit = max_map_count()
    if vmas is None:
        vmas = min(65536, limit - HEADROOM)
    if vmas + HEADROOM > limit:
        click.echo(f"vmabpf: warning: vm.max_map_count is {limit}: {vmas} VMAs leave under {HEADROOM} for the "
                   f"rest of the process; raise it with sysctl vm.max_map_count=N", err=True)
    if vmas < 2:
        raise VmabpfError("--vmas must be at least 2", exit_code=2)
    from .doctor import live_anon_name_test
    err = live_anon_name_test()
    if err:
        import errno as _errno
        raise VmabpfError(f"this kernel cannot name VMAs (prctl PR_SET_VMA_ANON_NAME: "
                          f"{_errno.errorcode.get(err, err)}): the named scenario needs CONFIG_ANON_VMA_NAME")

    def progress(done, total):
        if not as_json and sys.stderr.isatty():
            click.echo(f"\rround {done}/{total}", nl=done == total, err=True)

    with BpfStats():
        result = run_bench(vmas, name_len, pages, forks, modes, not same_name, progress=progress)
    if as_json:
        click.echo(json.dumps(result, indent=2, allow_nan=False))
    else:
        click.echo(render(result))

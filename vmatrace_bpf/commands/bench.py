"""`vmabpf bench fork`: what names cost fork(), and what vmabpf's own probes cost it (``forkbench.py``)."""

from __future__ import annotations

import errno
import json
import sys

import click

from ..checks import live_anon_name_test
from ..errors import VmabpfError, one_line_errors
from ..forkbench import HEADROOM, MODES, BpfStats, max_map_count, run_bench
from ..render import bench_text


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
@one_line_errors
def bench_fork(vmas, name_len, pages, forks, trace, same_name, as_json):
    """fork() latency of a process with many VMAs, unnamed vs named, and the tracer's overhead."""
    pages = int(pages)
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
    err = live_anon_name_test()
    if err:
        raise VmabpfError(f"this kernel cannot name VMAs (prctl PR_SET_VMA_ANON_NAME: "
                          f"{errno.errorcode.get(err, err)}): the named scenario needs CONFIG_ANON_VMA_NAME")

    def progress(done, total):
        if not as_json and sys.stderr.isatty():
            click.echo(f"\rround {done}/{total}", nl=done == total, err=True)

    result = run_bench(vmas, name_len, pages, forks, modes, not same_name, progress=progress, stats=BpfStats)
    if as_json:
        click.echo(json.dumps(result, indent=2, allow_nan=False))
    else:
        click.echo(bench_text(result))

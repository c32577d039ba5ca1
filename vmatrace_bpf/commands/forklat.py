"""`vmabpf forklat`: fork latency (dup_mmap) as log2 histograms, aggregated in the kernel.

Sections split the histogram by what makes a fork expensive: the number of
VMAs copied (log2 of map_count), whether the process has named VMAs (each one
costs a name reference), or the command.  Output as bcc's print_log2_hist.
"""

from __future__ import annotations

import json
import sys
import time

import click

from ..forkhist import FORKLAT_BY, fork_histograms
from ..errors import VmabpfError, one_line_errors
from ..loader import Tracer, build_defines, ebpf_text
from ..options import PID, duration_option, ebpf_option, interval_count_arguments
from ..render import FORKLAT_UNITS, forklat_json, forklat_text
from ..session import StopFlag, ebpf_plan, prepare, trace_loop


@click.command()
@click.option("-p", "--pid", type=PID, help="only forks of this process")
@click.option("-m", "--milliseconds", is_flag=True, help="millisecond histogram")
@click.option("-u", "--microseconds", is_flag=True, help="microsecond histogram")
@click.option("-j", "--json", "as_json", is_flag=True, help="JSON, one object per section")
@click.option("--by", type=click.Choice(sorted(FORKLAT_BY)), default="vmas", show_default=True,
              help="one histogram per log2 VMA count, per named/unnamed process, or per comm")
@click.option("-T", "--timestamp", is_flag=True, help="print a timestamp before each interval")
@duration_option
@ebpf_option
@interval_count_arguments
@one_line_errors
def forklat(pid, milliseconds, microseconds, as_json, by, timestamp, duration, ebpf, interval, count):
    """Fork latency (dup_mmap) as log2 histograms, by VMA count, named/unnamed or comm.

    With INTERVAL, print and reset every INTERVAL seconds (COUNT times).
    """
    if milliseconds and microseconds:
        raise VmabpfError("-m and -u are mutually exclusive", exit_code=2)
    unit = "msecs" if milliseconds else "usecs" if microseconds else "nsecs"
    # the named/unnamed split needs the per-VMA count (vm_area_dup); the others only dup_mmap
    only = ["fork", "vma_dup"] if by == "named" else ["fork"]
    extra = {"FORKLAT": 1, "FORKLAT_BY": FORKLAT_BY[by], "FORKLAT_DIV": FORKLAT_UNITS[unit], "FORK_NO_EVENTS": 1}
    if ebpf:
        kinfo, plan = ebpf_plan((), only)
        click.echo(ebpf_text({**build_defines(plan, kinfo, [pid] if pid else []), **extra}))
        return
    kinfo, plan = prepare([pid] if pid else [], None, (), only=only)
    if plan.missing:
        raise VmabpfError(f"this kernel offers no attach point for: {plan.missing_line()}; see 'vmabpf doctor'")
    ticks = []
    out = sys.stdout

    def show(tracer):
        sections = fork_histograms(tracer, by)
        if as_json:
            for obj in forklat_json(sections, unit, by):
                out.write(json.dumps(obj, allow_nan=False) + "\n")
        else:
            if timestamp:
                out.write(time.strftime("%H:%M:%S") + "\n")
            out.write(forklat_text(sections, unit, by) + "\n\n")
        out.flush()

    with StopFlag() as stop, Tracer(plan, kinfo, lambda ev: None, pids=[pid] if pid else [],
                                    filter_pids=bool(pid), extra_defines=extra) as tracer:
        click.echo(f"Tracing fork latency (dup_mmap{', ' + plan.choices['fork'].variant.name})"
                   f"{f' of PID {pid}' if pid else ''}, by {by}... Hit Ctrl-C to end.", err=True)

        def on_interval():
            show(tracer)
            ticks.append(1)
            return count is None or len(ticks) < count

        why = trace_loop(tracer, lambda ev: None, [pid] if pid else [], stop, duration, interval, on_interval)
        if why != "count":
            show(tracer)

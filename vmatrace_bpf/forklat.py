"""`vmabpf forklat`: fork latency (dup_mmap) as log2 histograms, aggregated in the kernel.

Sections split the histogram by what makes a fork expensive: the number of
VMAs copied (log2 of map_count), whether the process has named VMAs (each one
costs a name reference), or the command.  Output as bcc's print_log2_hist.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Dict, List, Tuple

import click

from .options import PID, COUNT, SECONDS

from .errors import VmabpfError, one_line_errors

BY = {"vmas": 1, "named": 2, "comm": 3}
UNITS = {"nsecs": 1, "usecs": 1000, "msecs": 1000000}


def section_label(by: str, section: int, comm: str) -> str:
    if by == "vmas":
        low, high = (1 << section) >> 1, (1 << section) - 1
        return f"map_count {low} -> {high}"
    if by == "named":
        return "with named VMAs" if section else "without named VMAs"
    return f"comm = {comm}"


def read_histograms(tracer, by: str) -> List[Tuple[int, str, List[int], int, int]]:
    """[(sort key, section label, log2 bucket counts, fork count, total ns)], cleared after reading."""
    from .events import decode_name
    hist, totals = tracer.table("forklat_hist"), tracer.table("forklat_totals")
    sections: Dict[Tuple[int, str], List[int]] = {}
    for k, v in hist.items():
        key = (k.section, decode_name(bytes(k.comm)))
        vals = sections.setdefault(key, [0] * 65)
        if k.slot < 65:
            vals[k.slot] += v.value
    sums = {(k.section, decode_name(bytes(k.comm))): (v.count, v.sum_ns) for k, v in totals.items()}
    hist.clear()
    totals.clear()
    out = []
    for key in sorted(sections):
        count, total = sums.get(key, (sum(sections[key]), 0))
        out.append((key[0], section_label(by, key[0], key[1]), sections[key], count, total))
    return out


def render_text(sections, unit: str, by: str) -> str:
    from .render import print_log2_hist_text
    parts = []
    for _, label, vals, count, total in sections:
        parts.append(print_log2_hist_text(vals, unit, section=f"\n{label}"))
        avg = total / count / UNITS[unit] if count else 0
        parts.append(f"\navg = {avg:.0f} {unit}, total: {total / UNITS[unit]:.0f} {unit}, count: {count}")
    return "\n".join(parts) if parts else "(no forks)"


def render_json(sections, unit: str, by: str) -> List[dict]:
    """bcc's JSON histogram keys (biolatency -j): ts, val_type, data[{interval-start, interval-end, count}]."""
    ts = time.strftime("%Y-%m-%d %H:%M:%S")
    out = []
    for _, label, vals, count, total in sections:
        data = []
        last = max((i for i, v in enumerate(vals) if v), default=0)
        for i in range(1, last + 1):
            low, high = (1 << i) >> 1, (1 << i) - 1
            if low == high:
                low -= 1
            data.append({"interval-start": low, "interval-end": high, "count": vals[i]})
        out.append({"ts": ts, "val_type": unit, "section": label, "by": by, "data": data, "count": count,
                    "avg": (total / count / UNITS[unit]) if count else None})
    return out


@click.command()
@click.option("-p", "--pid", type=PID, help="only forks of this process")
@click.option("-m", "--milliseconds", is_flag=True, help="millisecond histogram")
@click.option("-u", "--microseconds", is_flag=True, help="microsecond histogram")
@click.option("-j", "--json", "as_json", is_flag=True, help="JSON, one object per section")
@click.option("--by", type=click.Choice(sorted(BY)), default="vmas", show_default=True,
              help="one histogram per log2 VMA count, per named/unnamed process, or per comm")
@click.option("-T", "--timestamp", is_flag=True, help="print a timestamp before each interval")
@click.option("--duration", type=SECONDS, help="stop after this many seconds")
@click.option("--ebpf", is_flag=True, help="print the BPF program and exit")
@click.argument("interval", required=False, type=SECONDS)
@click.argument("count", required=False, type=COUNT)
def forklat(pid, milliseconds, microseconds, as_json, by, timestamp, duration, ebpf, interval, count):
    """Fork latency (dup_mmap) as log2 histograms, by VMA count, named/unnamed or comm.

    With INTERVAL, print and reset every INTERVAL seconds (COUNT times).
    """
    one_line_errors(_forklat)(pid, milliseconds, microseconds, as_json, by, timestamp, duration, ebpf, interval,
                              count)


def _forklat(pid, milliseconds, microseconds, as_json, by, timestamp, duration, ebpf, interval, count):
    from .kernel import KernelInfo
    from .loader import Tracer, build_defines, ebpf_text
    from .plan import choose
    from .watch import StopFlag, prepare, trace_loop

    if milliseconds and microseconds:
        raise VmabpfError("-m and -u are mutually exclusive", exit_code=2)
    unit = "msecs" if milliseconds else "usecs" if microseconds else "nsecs"
    # the named/unnamed split needs the per-VMA count (vm_area_dup); the others only dup_mmap
    only = ["fork", "vma_dup"] if by == "named" else ["fork"]
    extra = {"FORKLAT": 1, "FORKLAT_BY": BY[by], "FORKLAT_DIV": UNITS[unit], "FORK_NO_EVENTS": 1}
    if ebpf:
        kinfo = KernelInfo.live()
        plan = choose(kinfo, only=only)
        click.echo(ebpf_text({**build_defines(plan, kinfo, [pid] if pid else []), **extra}))
        return
    kinfo, _ = prepare([pid] if pid else [], None, ())
    plan = choose(kinfo, only=only)
    if plan.missing:
        raise VmabpfError(f"this kernel offers no attach point for: {plan.missing_line()}; see 'vmabpf doctor'")
    ticks = []
    out = sys.stdout

    def show(tracer):
        sections = read_histograms(tracer, by)
        if as_json:
            for obj in render_json(sections, unit, by):
                out.write(json.dumps(obj, allow_nan=False) + "\n")
        else:
            if timestamp:
                out.write(time.strftime("%H:%M:%S") + "\n")
            out.write(render_text(sections, unit, by) + "\n\n")
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

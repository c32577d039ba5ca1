"""Text output: event lines, summary tables, the doctor report.

Names come from processes and can hold anything (a rejected name may contain
control bytes), so every name goes through ``escape`` before it is printed.
"""

from __future__ import annotations

import json
import time
from typing import Callable, List, Optional

from .aggregate import regression
from .escape import escape
from .events import SCHEMA


def tabulate(*args, **kw) -> str:  # imported at the first table, not before a trace starts (~0.3 s under TCG)
    from tabulate import tabulate as _tabulate
    return _tabulate(*args, **kw)


def human_size(n: int) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n}{unit}" if unit == "" else (f"{n:.0f}{unit}" if n == int(n) else f"{n:.1f}{unit}")
        n /= 1024
    return str(n)


def qname(name: str, width: int = 0) -> str:
    s = escape(name)
    if width and len(s) > width:
        s = s[: width - 1] + "~"
    return f"'{s}'"


def causes(words: List[str]) -> str:
    return escape("+".join(words)) if words else "ok"


def event_detail(ev: dict, verbose: bool = False) -> str:
    t = ev["type"]
    w = 0 if verbose else 16
    if t == "name_set":
        rng = f"{ev['addr']:#x}+{human_size(ev['len'])}"
        nm = "(clear)" if ev.get("name_null") else qname(ev["name"], w) + ("..." if ev.get("name_truncated") else "")
        res = "ok" if ev["ret"] == 0 else escape(str(ev.get("err") or ev["ret"]))
        return f"{rng} {nm} {res}"
    if t == "merge":
        rng = f"{ev['start']:#x}+{human_size(ev['end'] - ev['start'])}"
        nm = qname(ev["name"], w)
        if ev["outcome"] in ("prev", "next", "both"):
            d = f"{rng} {nm} merged {ev['outcome']}: {ev['res_start']:#x}+{human_size(ev['res_end'] - ev['res_start'])}"
        elif ev["outcome"] == "error":
            d = f"{rng} {nm} merge failed (ENOMEM)"
        else:
            # "prev[name]": the VMA before differs by its name and nothing else
            d = f"{rng} {nm} no: prev[{causes(ev['prev_cause'])}] next[{causes(ev['next_cause'])}]"
        if verbose:
            d += (f" src={escape(str(ev['source']))} prev={ev['prev_start']:#x}-{ev['prev_end']:#x} {qname(ev['prev_name'])}"
                  f" next={ev['next_start']:#x}-{ev['next_end']:#x} {qname(ev['next_name'])}"
                  f" flags={ev['vm_flags']:#x}")
        return d
    if t == "split":
        res = "" if ev["ret"] == 0 else f" failed {escape(str(ev.get('err') or ev['ret']))}"
        nm = f"{qname(ev['name'], w)} refs={ev['refcount']}" if ev["name"] else "unnamed"
        return (f"{ev['vma_start']:#x}+{human_size(ev['vma_end'] - ev['vma_start'])} "
                f"at +{human_size(ev['addr'] - ev['vma_start'])} {nm}{res}")
    if t == "fork":
        return (f"child {ev['child_pid']} vmas={ev['map_count']} named={ev['named_copied']} "
                f"(+{ev['named_copied']} refs) dup_mmap {ev['latency_ns'] / 1000:.0f}us")
    if t in ("name_alloc", "name_free"):
        return f"{qname(ev['name'], w)} refs={ev['refcount']}" + (f" obj={ev['ptr']:#x}" if verbose else "")
    if t == "lost":
        return f"{ev['count']} events lost"
    return "process exited" if t == "exit" else ""


EVENT_LABEL = {name: t.label for name, t in SCHEMA.items()}


def event_header(timestamps: bool) -> str:
    return ("TIME(s)   " if timestamps else "") + f"{'PID':<7} {'COMM':<12} {'EVENT':<5} DETAIL"


def event_line(ev: dict, ts0: int = 0, timestamps: bool = False, verbose: bool = False) -> str:
    head = f"{(ev.get('ts', ts0) - ts0) / 1e9:<9.3f} " if timestamps else ""
    comm = escape(ev.get("comm", ""))[:12]
    line = f"{head}{ev.get('pid', 0):<7} {comm:<12} {EVENT_LABEL.get(ev['type'], ev['type'].upper()):<5} " \
           f"{event_detail(ev, verbose)}"
    return line if verbose or len(line) <= 79 else line[:78] + "~"


def summary_table(summary: dict) -> str:
    rows = []
    for p in summary["processes"]:
        m, n = p["merges"], p["names"]
        rows.append([p["pid"], escape(p["comm"])[:15], n["set"], sum(n["rejected"].values()),
                     m["attempted"], m["merged"], m["not_merged"], m["blocked_by_name_only"],
                     p["splits"]["count"], p["forks"]["count"], p["forks"]["refcount_increments"],
                     p["name_objects"]["live"]])
    hdr = ["PID", "COMM", "NAMED", "REJECT", "MERGE?", "MERGED", "FAILED", "NAME-BLK", "SPLITS", "FORKS",
           "REFS+", "OBJS"]
    out = tabulate(rows, headers=hdr, tablefmt="simple") if rows else "(no events)"
    lines = [out]
    if summary.get("processes_omitted"):
        lines.append(f"... and {summary['processes_omitted']} less active processes (--top 0 shows all, -j gives "
                     "every process)")
    for p in summary["processes"]:
        lines.append(process_details(p))
    lines.append(f"lost events: {summary['lost_events']}")
    return "\n".join(lines)


def _us(ns) -> str:
    return "-" if ns is None else f"{ns / 1000:.0f}us"


def process_details(p: dict) -> str:
    """Everything the summary row of process P leaves out: the same text for watch and report."""
    o, m, f = p["name_objects"], p["merges"], p["forks"]
    lines = [f"  names: set {p['names']['set']}, cleared {p['names']['cleared']}, distinct "
             f"{p['names']['distinct']}; name objects allocated {o['allocated']}, freed {o['freed']}, "
             f"live {o['live']}",
             f"  merges: attempted {m['attempted']}, merged {m['merged']}, not merged {m['not_merged']}, "
             f"errors {m['errors']}; VMAs the names cost: {p['vmas_cost_by_names']}; splits "
             f"{p['splits']['count']}"]
    if p["names"]["rejected"]:
        lines.append("  names rejected: " + ", ".join(f"{escape(str(k))} x{v}" for k, v in p["names"]["rejected"].items()))
    if m["not_merged_causes"]:
        lines.append("  not merged, by cause (per side): "
                     + ", ".join(f"{escape(str(k))} {v}"
                                 for k, v in sorted(m["not_merged_causes"].items(), key=lambda kv: -kv[1])))
    if m["top_name_pairs"]:
        lines.append(f"  merges blocked by the name alone: {m['blocked_by_name_only']}; top pairs:")
        for pair in m["top_name_pairs"]:
            lines.append(f"    {qname(pair['neighbour'])} next to {qname(pair['proposed'])}: {pair['count']}")
    if f["count"]:
        lat, per = f["latency_ns"], f["named_copied_per_fork"]
        lines.append(f"  forks: {f['count']}, dup_mmap min {_us(lat['min'])} p50 {_us(lat['p50'])} "
                     f"p90 {_us(lat['p90'])} p99 {_us(lat['p99'])} max {_us(lat['max'])}; name refs taken "
                     f"{f['refcount_increments']} (per fork: "
                     + ", ".join(str(x) for x in per[:10]) + (", ..." if len(per) > 10 else "") + ")")
    if p["splits"]["max_refcount_by_name"]:
        lines.append("  name sharing after splits (max refcount): " + ", ".join(
            f"{qname(k)} {v}" for k, v in p["splits"]["max_refcount_by_name"].items()))
    sharing = p.get("sharing") or {}
    if sharing:
        lines.append("  sharing per name (set / objects allocated / live / max refcount):")
        for i, (name, sh) in enumerate(sorted(sharing.items(), key=lambda kv: (-kv[1]["set"], kv[0]))):
            if i == 10:
                lines.append(f"    ... {len(sharing) - 10} more names")
                break
            lines.append(f"    {qname(name, 40)}: {sh['set']} / {sh['objects_allocated']} / {sh['objects_live']} / "
                         f"{sh['max_refcount']}")
    return f"PID {p['pid']} ({escape(p['comm'])}):\n" + "\n".join(lines)


def render_doctor(report) -> str:
    mark = {True: "ok  ", False: "FAIL", None: "info"}
    lines = [f"kernel {report.release} ({report.arch})", ""]
    for c in report.checks:
        if c.ok is False and not c.blocking:
            m = "warn"
        else:
            m = mark[c.ok]
        lines.append(f"[{m}] {c.name}: {c.detail}")
        if c.ok is False and c.fix:
            lines.append(f"       -> {c.fix}")
    lines.append("")
    lines.append("attach plan (first variant this kernel can trace, per capability):")
    rows = []
    for name, ch in report.plan.choices.items():
        if ch.ok:
            probes = ", ".join(f"{p.kind} {p.target}" for p in ch.probes)
            rows.append([name, ch.variant.name, probes])
            for why in ch.degraded:
                rows.append(["", "(less detail)", why])
        else:
            rows.append([name, "MISSING", ch.capability.missing_hint])
    lines.append(tabulate(rows, headers=["capability", "variant", "attach points"], tablefmt="simple"))
    lines.append("")
    lines.append("signatures (what each probe reads of its function, and what that was checked against):")
    for name, ch in report.plan.choices.items():
        for sig in ch.checked:
            lines.append(f"  {name}: {escape(sig)}")
        for variant, why in ch.rejected:
            lines.append(f"  {name}: not {variant}: {escape(why)}")
    lines.append("")
    lines.append("vmabpf watch can run here." if report.can_watch else
                 "vmabpf watch cannot run here: fix the FAIL lines above.")
    return "\n".join(lines)


def log2_bucket(i: int) -> tuple:
    """(low, high) of log2 bucket I as the BPF side fills it (bpf_log2l: bucket i holds values with i
    significant bits), printed as bcc's print_log2_hist does (bucket 1 is "0 -> 1").  The one definition."""
    low, high = (1 << i) >> 1, (1 << i) - 1
    if low == high:
        low -= 1
    return low, high


def print_log2_hist_text(vals: List[int], val_type: str, section: Optional[str] = None) -> str:
    """bcc's print_log2_hist() output for a log2 bucket array VALS (index = bucket)."""
    # Same text as bcc (table.py _print_log2_hist): header, then one row per bucket up to the last non-zero.
    idx_max = -1
    for i, v in enumerate(vals):
        if v > 0:
            idx_max = i
    val_max = max(vals) if vals else 0
    stars_max = 40
    if idx_max <= 32:
        header = "     %-19s : count     distribution"
        body = "%10d -> %-10d : %-8d |%-*s|"
    else:
        header = "               %-29s : count     distribution"
        body = "%20d -> %-20d : %-8d |%-*s|"
    out = []
    if section is not None:
        out.append(section)
    if idx_max > 0:
        out.append(header % val_type)
    for i in range(1, idx_max + 1):
        low, high = log2_bucket(i)
        val = vals[i]
        out.append(body % (low, high, val, stars_max, _stars(val, val_max, stars_max)))
    return "\n".join(out)


def _stars(val: int, val_max: int, width: int) -> str:
    i = 0
    text = ""
    while True:
        if i > (width * val / val_max) - 1 or i > width - 1:
            break
        text += "*"
        i += 1
    if val > val_max:
        text = text[:-1] + "+"
    return text


def report_table(summary: dict, files: List[dict]) -> str:
    out = []
    for f in files:
        for h in f["recordings"]:
            st = h.get("start_time")
            start = st.get("wall") if isinstance(st, dict) else None
            pids = h.get("pid_filter")
            who = ("PID " + ", ".join(str(x) for x in pids)) if isinstance(pids, list) and pids else "all processes"
            out.append(escape(f"{f['path']}: kernel {h.get('kernel_release')} ({h.get('arch')}), vmabpf "
                              f"{h.get('tool_version')}, {who}, started {start}"))
        for ft in f["footers"]:
            out.append(escape(f"  ended by {ft.get('reason')}: {ft.get('events')} events, "
                              f"{ft.get('lost_events')} lost"))
        if not f["recordings"]:
            out.append(escape(f"{f['path']}: {f['events']} events (no header: watch -j output)"))
        skipped = f["malformed_lines"] + f["unknown_lines"] + (1 if f["truncated"] else 0)
        if skipped:
            out.append(f"  {skipped} lines skipped" + (" (incomplete last line)" if f["truncated"] else ""))
    out += ["", summary_table(summary)]  # the same text as watch's summary
    return "\n".join(out)


# -- forklat: fork latency histograms (sections from aggregate.fork_histograms) ----------------

FORKLAT_UNITS = {"nsecs": 1, "usecs": 1000, "msecs": 1000000}


def forklat_text(sections, unit: str, by: str) -> str:
    parts = []
    for _, label, vals, count, total in sections:
        parts.append(print_log2_hist_text(vals, unit, section=f"\n{label}"))
        avg = total / count / FORKLAT_UNITS[unit] if count else 0
        parts.append(f"\navg = {avg:.0f} {unit}, total: {total / FORKLAT_UNITS[unit]:.0f} {unit}, count: {count}")
    return "\n".join(parts) if parts else "(no forks)"


def forklat_json(sections, unit: str, by: str) -> List[dict]:
    """bcc's JSON histogram keys (biolatency -j): ts, val_type, data[{interval-start, interval-end, count}]."""
    ts = time.strftime("%Y-%m-%d %H:%M:%S")
    out = []
    for _, label, vals, count, total in sections:
        data = []
        last = max((i for i, v in enumerate(vals) if v), default=0)
        for i in range(1, last + 1):
            low, high = log2_bucket(i)
            data.append({"interval-start": low, "interval-end": high, "count": vals[i]})
        out.append({"ts": ts, "val_type": unit, "section": label, "by": by, "data": data, "count": count,
                    "avg": (total / count / FORKLAT_UNITS[unit]) if count else None})
    return out


# -- bench fork ------------------------------------------------------------------------------------------

def fmt(v, spec=".2f", suffix=""):
    return "-" if v is None else f"{v:{spec}}{suffix}"


def bench_text(result: dict) -> str:
    what = f"{result['vmas']} VMAs, {result['pages']} page{'s' if result['pages'] != 1 else ''} touched each, " \
           f"names of {result['name_len']} chars{' (distinct)' if result['distinct_names'] else ' (all equal)'}"
    lines = [f"fork() of a process with {what}; {result['forks']} forks per scenario and mode", ""]
    rows = []
    for mode, row in result["modes"].items():
        for stat in ("median_ms", "p90_ms"):
            rows.append([f"trace {mode}, {stat[:-3]}", fmt(row["unnamed"][stat]), fmt(row["named"][stat]),
                         fmt(regression(row["unnamed"][stat], row["named"][stat]), "+.1f", "%")])
        for key, how in (("dup_mmap_mean_ms", "mean"), ("dup_mmap", "median")):  # latency's, full's
            d = {s: (v["median_ms"] if isinstance(v, dict) else v) for s, v in (row.get(key) or {}).items()}
            if d:
                rows.append([f"  dup_mmap (BPF), {how}", fmt(d["unnamed"]), fmt(d["named"]),
                             fmt(regression(d["unnamed"], d["named"]), "+.1f", "%")])
    lines.append(tabulate(rows, headers=["scenario", "unnamed ms", "named ms", "regression"], tablefmt="simple",
                          disable_numparse=True))
    if len(result["modes"]) > 1:
        lines.append("")
        rows = [[mode, fmt(row["unnamed"].get("ratio_vs_off", 1.0 if mode == "off" else None), ".3f"),
                 fmt(row["named"].get("ratio_vs_off", 1.0 if mode == "off" else None), ".3f")]
                for mode, row in result["modes"].items()]
        lines += ["tracer overhead, fork() median with probes / without (same run, interleaved):",
                  tabulate(rows, headers=["trace", "unnamed", "named"], tablefmt="simple", disable_numparse=True)]
    prof = result.get("bpf_profile")
    if prof:
        pr = result.get("profile_round") or {}
        lines.append(f"\nBPF programs (kernel.bpf_stats_enabled, in {pr.get('forks', '?')} more forks per scenario and mode "
                     "after the timed ones; the probe mechanism itself is not included):")
        rows = [[fn, "not loaded" if st.get("source") == "missing" else st["run_cnt"], fmt(st["avg_ns"], ".0f"),
                 fmt(st["run_time_ns"] and st["run_time_ns"] / 1e6, ".1f")] for fn, st in sorted(prof.items())]
        lines.append(tabulate(rows, headers=["program", "runs", "avg ns", "total ms"], tablefmt="simple", disable_numparse=True))
        lines += ["fork() median ms in that round (the accounting on), unnamed / named: " + ", ".join(
            f"{mode} {fmt(m['unnamed']['median_ms'], '.1f')} / {fmt(m['named']['median_ms'], '.1f')}"
            for mode, m in pr.get("modes", {}).items())] if pr.get("modes") else []
    full = result["modes"].get("full")
    if full and full.get("dup_mmap"):
        refs = full["dup_mmap"]["named"]["named_refs_per_fork"]
        lines.append(f"\nname references taken per fork of the named process (vm_area_dup, in-kernel): {refs}; "
                     f"lost events: {full['lost_events']}")
    return "\n".join(lines)


def report_json(agg, infos: List[dict], pid: Optional[int], write: Callable[[str], None]) -> None:
    """report -j: {"type": "report", "files": [...], "processes": [...], "lost_events": N}, written one
    process at a time (a million processes are never all in memory as summaries)."""
    write('{"type": "report", "files": ' + json.dumps(infos, allow_nan=False) + ', "processes": [')
    for i, summ in enumerate(agg.iter_summaries([pid] if pid is not None else None)):
        write(("," if i else "") + "\n " + json.dumps(summ, allow_nan=False))
    write("\n], " + f'"lost_events": {int(agg.lost)}' + "}\n")

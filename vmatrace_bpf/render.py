"""Text output: event lines, summary tables, the doctor report.

Names come from processes and can hold anything (a rejected name may contain
control bytes), so every name goes through ``escape`` before it is printed.
"""

from __future__ import annotations

from typing import List, Optional

from tabulate import tabulate

from .escape import escape  # noqa: F401  (the one escaping function; render's users import it from here)


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
    if t == "exit":
        return "process exited"
    return ""


EVENT_LABEL = {"name_set": "NAME", "merge": "MERGE", "split": "SPLIT", "fork": "FORK", "name_alloc": "ALLOC",
               "name_free": "FREE", "lost": "LOST", "exit": "EXIT"}


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
        low = (1 << i) >> 1
        high = (1 << i) - 1
        if low == high:
            low -= 1
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

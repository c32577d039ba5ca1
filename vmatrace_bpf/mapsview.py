"""What `vmabpf maps` prints: the per-name table, --fragments, and their JSON (one process);
the across-processes and diff tables live in mapsall.py."""

from __future__ import annotations

from tabulate import tabulate

from .escape import escape
from .mapsall import LABELS, _about as about, per_process, rows
from .mapstotals import SMAPS_COLUMNS, fragments, group
from .vma import ProcMaps


def render_table(pm: ProcMaps, by: str, sort: str) -> str:

    rows, total = group(pm, by=by, sort=sort)
    cols = ["#", "Virtual kB"] + ([f"{c} kB" for c in SMAPS_COLUMNS] if pm.has_fields else [])
    head = ["name" if by == "name" else "class"] + cols
    body = []
    for r in rows + [total]:
        vals = [r.vmas, r.size] + ([r.values[c] for c in SMAPS_COLUMNS] if pm.has_fields else [])
        body.append([escape(r.name)] + vals)
    align = ["left"] + ["right"] * len(cols)
    out = tabulate(body, headers=head, tablefmt="simple", colalign=align, disable_numparse=True)
    note = "" if pm.has_fields else "\n(maps text: sizes only; use smaps for Rss, Pss, Swap)"
    if pm.kind == "rollup":
        note = "\n(smaps_rollup: one pseudo-VMA for the whole process; use smaps for names)"
    return out + note


def _addr(a: int) -> str:
    return f"{a:x}"


def render_fragments(pm: ProcMaps) -> str:

    f = fragments(pm)
    lines = [f"{f.vmas_in_runs} of {f.vmas_total} VMAs are in {len(f.name_runs)} runs of adjacent anonymous "
             f"VMAs that differ only in name; with equal names {f.would_remain} would remain "
             f"({f.vmas_in_runs - f.would_remain} fewer)."]
    if pm.kind == "maps":
        lines.append("(maps text has no VmFlags: only permissions compared)")
    if f.name_runs:
        body = []
        for r in f.name_runs:
            names = [escape(v.display_name) for v in r.vmas]
            shown = ", ".join(names[:6]) + (f", ... ({len(names)})" if len(names) > 6 else "")
            body.append([f"{_addr(r.start)}-{_addr(r.end)}", r.vmas[0].perms, len(r.vmas), r.would_remain, shown])
        lines += ["", tabulate(body, headers=["range", "perms", "VMAs", "would remain", "names"],
                               tablefmt="simple", disable_numparse=True)]
    if f.pairs:
        body = [[escape(a), escape(b), n] for (a, b), n in f.pairs.most_common()]
        lines += ["", "name pairs that keep neighbours apart:",
                  tabulate(body, headers=["left", "right", "boundaries"], tablefmt="simple", disable_numparse=True)]
    if f.same_name_splits:
        body = [[escape(n), c] for n, c in f.same_name_splits.most_common()]
        lines += ["", "same name, still split (anon_vma, vm_pgoff, uffd or mempolicy differ; "
                  "or the kernel did not try to merge):",
                  tabulate(body, headers=["name", "boundaries"], tablefmt="simple", disable_numparse=True)]
    return "\n".join(lines)


def to_json(pm: ProcMaps, by: str, sort: str, with_fragments: bool) -> dict:
    rows, total = group(pm, by=by, sort=sort)
    out = {"source": escape(pm.source), "format": pm.kind, "by": by, "sort": sort,
           "rows": [dict(r.to_json(), name=escape(r.name)) for r in rows],
           "total": {k: v for k, v in total.to_json().items() if k != "name"}}
    if with_fragments:
        fj = fragments(pm).to_json()
        for r in fj["runs"]:
            r["names"] = [escape(n) for n in r["names"]]
        fj["pairs"] = [dict(p, left=escape(p["left"]), right=escape(p["right"])) for p in fj["pairs"]]
        fj["same_name_splits"] = [dict(s, name=escape(s["name"])) for s in fj["same_name_splits"]]
        out["fragments"] = fj
    return out


# -- across processes and diffs (mapsall) ----------------------------------------------
def _about(s) -> str:
    who = "as root" if s.root else "not as root"
    return f"{escape(s.source)}, kernel {escape(s.kernel) or '?'}, {s.to_json()['time']}, {who}"


def render_across(a, pattern, sort, breakdown: bool) -> str:

    s = a.snapshot
    head = [LABELS[a.by], "procs", "VMAs", "Rss kB", "Pss kB", "Private kB", "Swap kB",
            "name frag"]
    body = []
    rs = rows(a, pattern, sort)
    for k, c in rs:
        v = c.values()
        body.append([escape(k), v["processes"], v["vmas"], v["rss_kb"], v["pss_kb"], v["private_kb"], v["swap_kb"],
                     v["name_fragments"]])
    lines = [f"{_about(s)}: {len(a.procs)} processes" + (f", {len(s.unreadable)} unreadable" if s.unreadable else "")
             + (f", {len(a.damaged)} changed or exited while read (left out)" if a.damaged else "")]
    if not s.root and s.unreadable:
        lines.append("(not root: only the processes this user may read; run as root, or adb root / su on a device)")
    if not body:
        lines.append(f"no {LABELS[a.by]} matches {escape(pattern)!s}" if pattern
                     else "no VMAs")
        return "\n".join(lines)
    lines.append(tabulate(body, headers=head, tablefmt="simple", colalign=["left"] + ["right"] * 7,
                          disable_numparse=True))
    if breakdown:
        for k, _ in rs:
            pb = [[p.pid, escape(p.comm), c.vmas, c.rss, c.pss, c.private, c.swap, c.frag]
                  for p, c in per_process(a, k, sort)]
            lines += ["", f"{escape(k)}:", tabulate(pb, headers=["PID", "comm", "VMAs", "Rss kB", "Pss kB",
                                                                   "Private kB", "Swap kB", "name frag"],
                                                    tablefmt="simple", disable_numparse=True)]
    lines.append("(name frag: boundaries to a neighbour of another name that only the names keep apart)")
    return "\n".join(lines)


def across_json(a, pattern, sort, breakdown: bool) -> dict:

    out = {"snapshot": dict(about(a), source=escape(a.snapshot.source), kernel=escape(a.snapshot.kernel)),
           "by": a.by, "sort": sort, "pattern": pattern, "rows": [],
           "left_out": [{"pid": pid, "why": escape(why)} for pid, why in a.damaged],
           "unreadable": a.snapshot.unreadable}
    for k, c in rows(a, pattern, sort):
        r = dict(c.values(), name=escape(k))
        if breakdown:
            r["per_process"] = [dict(c2.values(), pid=p.pid, comm=escape(p.comm)) for p, c2 in per_process(a, k, sort)]
            for x in r["per_process"]:
                x.pop("processes")
        out["rows"].append(r)
    return out


def _signed(n: int) -> str:
    return f"{n:+d}" if n else "0"


def render_diff(d: dict, limit: int = 40) -> str:

    o, n = d["old"], d["new"]
    lines = [f"{w}: {escape(x['source'])} {x['time']} ({x['processes']} process{'' if x['processes'] == 1 else 'es'})"
             for w, x in (("old", o), ("new", n))]
    if d.get("pattern") is not None:
        lines.append(f"only {LABELS[d['by']]}s containing {escape(d['pattern'])} (and each process's change in them)")
    if not d["names"] and not d["processes"]:
        return "\n".join(lines + ["no change"])
    body = [[escape(r["name"]), r["status"]] + [_signed(r["delta"][k]) for k in
                                                ("vmas", "rss_kb", "pss_kb", "private_kb", "swap_kb", "name_fragments")]
            for r in d["names"][:limit]]
    lines += ["", tabulate(body, headers=[LABELS[d["by"]], "", "+VMAs", "+Rss kB",
                                          "+Pss kB", "+Private kB", "+Swap kB", "+name frag"],
                           tablefmt="simple", disable_numparse=True)]
    if len(d["names"]) > limit:
        lines.append(f"... {len(d['names']) - limit} more (-j for all)")
    body = [[r["pid"], escape(r["comm"]), r["status"]] + [_signed(r["delta"][k]) for k in
                                                           ("vmas", "rss_kb", "pss_kb", "name_fragments")]
            for r in d["processes"][:limit]]
    if body:
        lines += ["", tabulate(body, headers=["PID", "comm", "", "+VMAs", "+Rss kB", "+Pss kB", "+mergeable VMAs"],
                               tablefmt="simple", disable_numparse=True)]
        if len(d["processes"]) > limit:
            lines.append(f"... {len(d['processes']) - limit} more (-j for all)")
    return "\n".join(lines)


def diff_json(d: dict) -> dict:
    out = dict(d, names=[dict(r, name=escape(r["name"])) for r in d["names"]],
               processes=[dict(r, comm=escape(r["comm"])) for r in d["processes"]])
    out["old"] = dict(d["old"], source=escape(d["old"]["source"]), kernel=escape(d["old"]["kernel"]))
    out["new"] = dict(d["new"], source=escape(d["new"]["source"]), kernel=escape(d["new"]["kernel"]))
    return out

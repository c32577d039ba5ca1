#!/usr/bin/env python3
"""Median and spread of the fork experiment's ratios over repeated runs (benchmarks/fork_cost.sh RUNS=N).

    python3 benchmarks/fork_summary.py docs/fork-cost-results/*.json [-j]

Groups the `vmabpf bench fork -j` results by kernel, architecture, pages and names (distinct or equal), and per
group prints, over its runs: the named-vs-unnamed regression of untraced fork() (medians of each run), and the
tracer's overhead (fork() median with probes / without, same run) for latency and full mode, unnamed and named:
median, min and max.  Files that are not bench results (start-time-*.json, floor-*.json) are skipped, and said so.
"""

import json
import os
import re
import statistics
import sys


def key(path, d):
    base = os.path.basename(path)
    m = re.match(r"^(arm64-)?(\d+\.\d+\.\d+)-", base)
    kernel = (m.group(2) if m else "?") + (" arm64" if m and m.group(1) else "")
    return (kernel, d["pages"], "distinct" if d["distinct_names"] else "same name", d["vmas"])


def spread(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-", None
    med = statistics.median(vals)
    return f"{med:.3f} [{min(vals):.3f}-{max(vals):.3f}]", med


def main(argv):
    as_json = "-j" in argv
    paths = [a for a in argv if a != "-j"]
    groups, skipped = {}, []
    for p in paths:
        try:
            with open(p) as f:
                d = json.load(f)
        except (OSError, ValueError) as e:
            skipped.append(f"{p}: {e}")
            continue
        if not isinstance(d, dict) or "off" not in d.get("modes", {}) or any(
                k not in d for k in ("pages", "distinct_names", "vmas")):  # start-time-*, floor-* (fork_floor.py)
            skipped.append(f"{p}: not a bench fork result")
            continue
        groups.setdefault(key(p, d), []).append(d)
    out = []
    for k in sorted(groups):
        runs = groups[k]
        row = {"kernel": k[0], "pages": k[1], "names": k[2], "vmas": k[3], "runs": len(runs)}
        off = [r["modes"]["off"] for r in runs]
        row["named_vs_unnamed_off"] = spread([o["named"]["median_ms"] / o["unnamed"]["median_ms"] for o in off])
        for mode in ("latency", "full"):
            for side in ("unnamed", "named"):
                row[f"{mode}_{side}"] = spread([r["modes"][mode][side].get("ratio_vs_off") for r in runs
                                                if mode in r["modes"]])
        refs = set()
        for r in runs:
            got = r["modes"].get("full", {}).get("dup_mmap", {}).get("named", {}).get("named_refs_per_fork")
            refs.update(got if isinstance(got, list) else [got] if got is not None else [])
        refs = [str(v) for v in sorted(refs)]
        lost = sum(r["modes"].get("full", {}).get("lost_events", 0) for r in runs)
        row["named_refs_per_fork"], row["lost_events"] = refs, lost
        out.append(row)
    if as_json:
        print(json.dumps([{k: (v[1] if isinstance(v, tuple) else v) for k, v in r.items()} for r in out], indent=1,
                         allow_nan=False))
        return 0
    print("kernel | pages | names | runs | named/unnamed fork (off) | latency: unnamed / named | "
          "full: unnamed / named | name refs per fork | lost")
    print("|".join(["---"] * 9))
    for r in out:
        print(" | ".join([r["kernel"], str(r["pages"]), r["names"], str(r["runs"]), r["named_vs_unnamed_off"][0],
                          f"{r['latency_unnamed'][0]} / {r['latency_named'][0]}",
                          f"{r['full_unnamed'][0]} / {r['full_named'][0]}", ",".join(r["named_refs_per_fork"]),
                          str(r["lost_events"])]))
    print("(median [min-max] over the runs; each ratio is one run's fork() median with probes / without)")
    for s in skipped:
        print(f"skipped {s}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The floor under full mode's fork cost: what an *empty* BPF program on vm_area_dup costs fork(), side by side
with vmabpf's full mode.

    sudo python3 benchmarks/fork_floor.py [--rounds N] [--forks K] [--vmas V] [-j]

Full mode counts the name references a fork takes with a program on vm_area_dup(), which fork() calls once
per copied VMA.  Any program there, even one that returns at once, pays the attach mechanism on every one of
those calls: a BPF trampoline (fentry or fexit) where the kernel has them (x86_64; arm64 from 6.4), else a
kprobe/kretprobe.  This benchmark forks a process of V named VMAs (distinct 79-character names, as `bench fork`)
K times per round in each mode, modes interleaved round by round:

    off           nothing attached
    empty-fentry  KFUNC_PROBE(vm_area_dup) { return 0; }       (where fentry attaches: KernelInfo.kfunc_capable)
    empty-fexit   KRETFUNC_PROBE(vm_area_dup) { return 0; }    (the same)
    fentry-count  an fentry that calls bpf_get_current_pid_tgid() and counts its hits in an array slot
                  (full mode's fentry without the VMA reads; the hits per fork show it ran)
    full-hash     full mode with FORK_SLOTS_OFF: the per-fork counters in the thread's fork_state entry (a
                  hash lookup on every hit), as when another forking thread holds the thread's array slot
    empty-kprobe  a kprobe program that returns 0                (everywhere)
    full          vmabpf's full mode (`bench fork --trace all`'s "full": fork + vma_dup)

(the order of the modes turns by one each round), and prints each mode's fork() median over the untraced median (same run), and full mode's named-reference
count per fork (exact: V).  If the empty program alone is near full mode, the per-VMA body is not what
costs; only taking the probe off the per-VMA path would.
"""

import argparse
import json
import os
import sys
from statistics import median

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vmatrace_bpf.errors import VmabpfError  # noqa: E402
from vmatrace_bpf.forkbench import HEADROOM, Scenario, max_map_count  # noqa: E402
from vmatrace_bpf.loader import Tracer, empty_cwd, import_bcc  # noqa: E402
from vmatrace_bpf.plan import choose  # noqa: E402
from vmatrace_bpf.session import prepare  # noqa: E402

EMPTY = {
    "empty-fentry": "KFUNC_PROBE(vm_area_dup) { return 0; }",
    "empty-fexit": "KRETFUNC_PROBE(vm_area_dup) { return 0; }",
    "empty-kprobe": "int empty(struct pt_regs *ctx) { return 0; }",
    # full mode's fentry without its reads of the VMA: one helper call, an (inlined) array lookup, a count
    "fentry-count": "BPF_ARRAY(hits, u64, 1);\n"
                    "KFUNC_PROBE(vm_area_dup) { u32 k = 0; u64 *n = hits.lookup(&k);\n"
                    "  if (n && (u32)bpf_get_current_pid_tgid()) (*n)++; return 0; }",
}
KFUNC = ("empty-fentry", "fentry-count")


class Empty:
    """An empty program on vm_area_dup, attached and detached on request."""

    def __init__(self, mode: str):
        self.mode = mode
        with empty_cwd():
            self.bpf = import_bcc().BPF(text=EMPTY[mode])
        # bcc attaches KFUNC/KRETFUNC programs while loading: off until attach()
        self.detach()

    def attach(self) -> None:
        if self.mode in KFUNC:
            self.bpf.attach_kfunc(fn_name=b"kfunc__vmlinux__vm_area_dup")
        elif self.mode == "empty-fexit":
            self.bpf.attach_kretfunc(fn_name=b"kretfunc__vmlinux__vm_area_dup")
        else:
            self.bpf.attach_kprobe(event="vm_area_dup", fn_name="empty")

    def detach(self) -> None:
        if self.mode in KFUNC:
            self.bpf.detach_kfunc(fn_name=b"kfunc__vmlinux__vm_area_dup")
        elif self.mode == "empty-fexit":
            self.bpf.detach_kretfunc(fn_name=b"kretfunc__vmlinux__vm_area_dup")
        elif self.bpf.kprobe_fds:
            self.bpf.detach_kprobe(event="vm_area_dup")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--forks", type=int, default=3, help="forks per mode and round")
    ap.add_argument("--vmas", type=int, default=max_map_count() - HEADROOM)
    ap.add_argument("-j", dest="json", action="store_true")
    a = ap.parse_args()
    kinfo, _ = prepare([], None, ())
    proc = Scenario("named", a.vmas, 79, 0, True)
    try:
        modes = ["off"] + (["empty-fentry", "fentry-count", "empty-fexit"] if kinfo.kfunc_capable else [])
        modes += ["empty-kprobe", "full"]
        probes = {m: Empty(m) for m in modes if m in EMPTY}
        plan = choose(kinfo, only=["fork", "vma_dup"])
        if plan.missing:
            print(f"fork_floor: no attach point here for {plan.missing_line()}", file=sys.stderr)
            return 1
        events, events_hash = [], []
        full = Tracer(plan, kinfo, events.append, pids=[proc.pid], filter_pids=True).load()
        full.open_events()
        probes["full"] = full
        if plan.choices["vma_dup"].variant.name == "vm_area_dup-fentry":
            modes.append("full-hash")
            probes["full-hash"] = Tracer(plan, kinfo, events_hash.append, pids=[proc.pid], filter_pids=True,
                                         extra_defines={"FORK_SLOTS_OFF": 1}).load()
            probes["full-hash"].open_events()
        lat = {m: [] for m in modes}
        for r in range(a.rounds):
            # the order of the modes turns by one each round: none is always first or always after another
            for m in modes[r % len(modes):] + modes[:r % len(modes)]:
                t = probes.get(m)
                if t:
                    t.attach()
                try:
                    lat[m] += proc.fork(a.forks)
                finally:
                    if t:
                        if m.startswith("full"):
                            t.drain()
                        t.detach()
            print(f"round {r + 1}/{a.rounds}", file=sys.stderr, flush=True)
        full.drain()
        refs = sorted({e["named_copied"] for e in events if e["type"] == "fork"})
        refs_hash = sorted({e["named_copied"] for e in events_hash if e["type"] == "fork"})
        hits = probes["fentry-count"].bpf["hits"][0].value if "fentry-count" in probes else None
        forks_counted = len(lat.get("fentry-count", ()))
        off = median(lat["off"])
        out = {"kernel": kinfo.release, "arch": kinfo.arch, "vmas": proc.map_count, "rounds": a.rounds,
               "forks_per_round": a.forks, "fork_probe": plan.choices["fork"].variant.name,
               "vma_dup": plan.choices["vma_dup"].variant.name, "full_named_refs_per_fork": refs,
               "full_hash_named_refs_per_fork": refs_hash,
               "fentry_count_hits_per_fork": hits / forks_counted if hits is not None and forks_counted else None,
               "full_lost_events": full.lost(),
               "modes": {m: {"median_ms": median(v) / 1e6, "n": len(v), "ratio_vs_off": median(v) / off,
                             "min_ms": min(v) / 1e6, "min_ratio_vs_off": min(v) / min(lat["off"]),
                             "fork_ns": v} for m, v in lat.items()}}
        for t in probes.values():
            if isinstance(t, Tracer):
                t.close()
    finally:
        proc.close()
    if a.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"{out['kernel']} {out['arch']}: fork() of {out['vmas']} named VMAs, {a.rounds} rounds x "
              f"{a.forks} forks per mode (vma_dup: {out['vma_dup']})")
        for m, row in out["modes"].items():
            print(f"  {m:13} median {row['median_ms']:9.2f} ms  {row['ratio_vs_off']:.3f}x   "
                  f"min {row['min_ms']:9.2f} ms  {row['min_ratio_vs_off']:.3f}x")
        print(f"  full mode: named references per fork {refs} (full-hash: {refs_hash}), lost events "
              f"{out['full_lost_events']}; fentry-count hits per fork {out['fentry_count_hits_per_fork']}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except VmabpfError as e:  # an unsupported kernel, no bcc, no root: one line, as vmabpf says it
        print(f"fork_floor: {e}", file=sys.stderr)
        sys.exit(1)

"""Time to first event: seconds from `vmabpf watch -p PID` start to its banner, and where they go.

    sudo python3 benchmarks/start_time.py [--rounds N] [--tree LABEL=DIR ...] [--tracefs] [--breakdown] [-j]

With --tracefs, each tree is also run as `vmabpf watch --backend tracefs -p PID` (kprobe events in a
tracefs instance, no compile), interleaved with the bcc runs: label "LABEL/tracefs".

For each tree (a checkout of vmatrace-bpf; default: this one, labelled "this"), starts
`vmabpf watch -p PID` (PID: a sleeping process) from that tree, as root, and measures the
wall time from the start of the process to the banner ("Tracing named-VMA events ...", on
stderr), then ends it with SIGINT.  The trees are run in turn, round by round, so that
two versions (e.g. --tree before=build/start-time-main --tree after=.) are measured side by
side on the same kernel, in the same boot.  The first run of all is reported apart: it pays
for bcc unpacking the kernel headers (/sys/kernel/kheaders.tar.xz) once per boot.

Inside each run a small driver (below, DRIVER) wraps bcc before the command starts and
prints, on stderr, the seconds spent importing bcc, inside bcc's BPF(text=...) (clang
compiling the program, bcc's rewriter, the maps created and the tracepoint/fexit programs
loaded: "compile" below) and inside attach_* (kprobe programs are loaded, so verified, there).
The rest ("before") is the interpreter, imports, kernel facts (kallsyms, BTF) and the plan.
The same driver works on any tree, old or new: nothing is needed from the code measured.

Prints the kernel it ran on; run it in each test guest:
    tests/vm/run --kernel 6.12 -- python3 benchmarks/start_time.py --tree before=build/start-time-main --tree after=.
"""

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from statistics import median

BANNER = "Tracing named-VMA events"
MARK = "START_TIME "

# Runs in the measured process: python3 -I -c DRIVER TREE watch -p PID
DRIVER = r"""
import sys, time
tree = sys.argv.pop(1)
sys.path.insert(0, tree)
t = time.monotonic()
def out(what, s):
    sys.stderr.write("START_TIME %s %.6f\n" % (what, s))
    sys.stderr.flush()
if "tracefs" in sys.argv:  # no bcc in this process at all
    from vmatrace_bpf.cli import run
    sys.argv[0] = "vmabpf"
    run()
    sys.exit(0)
from vmatrace_bpf import loader
bcc = loader.import_bcc()
out("import_bcc", time.monotonic() - t)
def timed(name, fn):
    def wrapper(*a, **k):
        s = time.monotonic()
        try:
            return fn(*a, **k)
        finally:
            out(name, time.monotonic() - s)
    return wrapper
bcc.BPF.__init__ = timed("compile", bcc.BPF.__init__)
for m in ("attach_kprobe", "attach_kretprobe", "attach_tracepoint", "attach_kretfunc", "attach_kfunc"):
    if hasattr(bcc.BPF, m):
        setattr(bcc.BPF, m, timed("attach", getattr(bcc.BPF, m)))
from vmatrace_bpf.cli import run
sys.argv[0] = "vmabpf"
run()
"""


def one_run(tree: str, pid: int, timeout: float = 600, backend: str = "bcc") -> dict:
    """{"total", "import_bcc", "compile", "attach", "before"} seconds for one `watch -p PID` from TREE."""
    args = [sys.executable, "-I", "-c", DRIVER, os.path.abspath(tree), "watch", "-p", str(pid)]
    if backend != "bcc":
        args += ["--backend", backend]
    t0 = time.monotonic()
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    killer = threading.Timer(timeout, p.kill)
    killer.start()
    got = {"import_bcc": 0.0, "compile": 0.0, "attach": 0.0}
    banner = None
    err = []
    try:
        for line in p.stderr:
            if line.startswith(MARK):
                what, secs = line[len(MARK):].split()
                got[what] = got.get(what, 0.0) + float(secs)
            elif line.startswith(BANNER):
                banner = time.monotonic()
                break
            else:
                err.append(line)
        if banner is None:
            raise SystemExit(f"start_time: {tree}: no banner; vmabpf said: {''.join(err)[-2000:]}")
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=120)
    finally:
        killer.cancel()
        if p.poll() is None:
            p.kill()
            p.wait()
    got["total"] = banner - t0
    got["before"] = got["total"] - got["import_bcc"] - got["compile"] - got["attach"]
    return got


def breakdown() -> dict:
    """Seconds inside bcc's BPF(text=...) for the program `watch` loads here, for it without each capability
    of the plan (that capability's -D macros left out: what its code costs) and for stand-ins: a trivial
    program with vmatrace.bpf.c's kernel headers, with <linux/mm_types.h> alone and with <uapi/linux/ptrace.h>
    alone (what bcc costs before any kernel header).  In this process, one after the other, after one
    warm-up compile (a process's first compile is ~1 s slower: it is in `watch`'s figure, not in these)."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from vmatrace_bpf import loader
    from vmatrace_bpf.kernel import KernelInfo
    from vmatrace_bpf.plan import choose
    bcc = loader.import_bcc()
    kinfo = KernelInfo.live()
    plan = choose(kinfo)
    defines = loader.build_defines(plan, kinfo, [os.getpid()], filter_pids=True)
    cflags = loader.cflags(defines)
    trivial = "int f(struct pt_regs *ctx) { return 0; }\n"
    program = loader.program_source()
    variants = {"vmatrace.bpf.c (watch's plan)": (program, cflags)}
    for cap, ch in plan.choices.items():
        if ch.variant:
            drop = {ch.variant.macro, *ch.defines}
            variants[f"vmatrace.bpf.c without {cap}"] = (
                program, loader.cflags({k: v for k, v in defines.items() if k not in drop}))
    variants.update({
        "trivial + ptrace.h, sched.h, mm_types.h": ("#include <uapi/linux/ptrace.h>\n#include <linux/sched.h>\n"
                                                    "#include <linux/mm_types.h>\n" + trivial, cflags),
        "trivial + ptrace.h, mm_types.h": ("#include <uapi/linux/ptrace.h>\n#include <linux/mm_types.h>\n" + trivial,
                                           cflags),
        "trivial + ptrace.h": ("#include <uapi/linux/ptrace.h>\n" + trivial, cflags),
        "trivial, bcc's flags only": (trivial, []),
    })
    out = {}
    with loader.empty_cwd():  # as the loader compiles (bcc's shell commands kept out of this directory)
        bcc.BPF(text=trivial).cleanup()  # the warm-up
        for name, (text, flags) in variants.items():
            t = time.monotonic()
            bcc.BPF(text=text, cflags=flags).cleanup()
            out[name] = time.monotonic() - t
    return out


def summary(runs):
    keys = ("total", "before", "import_bcc", "compile", "attach")
    s = {k: median(r[k] for r in runs) for k in keys}
    s["n"] = len(runs)
    s["compile_share"] = s["compile"] / s["total"]
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tree", action="append", default=[], metavar="LABEL=DIR")
    ap.add_argument("-j", "--json", action="store_true")
    ap.add_argument("--breakdown", action="store_true", help="also time BPF(text=...) on stand-in programs")
    ap.add_argument("--tracefs", action="store_true", help="also each tree with --backend tracefs, interleaved")
    a = ap.parse_args()
    trees = [t.split("=", 1) if "=" in t else (t, t) for t in a.tree] or \
        [("this", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))]
    trees = [(label, tree, "bcc") for label, tree in trees] + (
        [(f"{label}/tracefs", tree, "tracefs") for label, tree in trees] if a.tracefs else [])
    target = subprocess.Popen(["sleep", "100000"])
    try:
        first = {"tree": trees[0][0], **one_run(trees[0][1], target.pid)}
        runs = {label: [] for label, _, _ in trees}
        for _ in range(a.rounds):
            for label, tree, backend in trees:
                runs[label].append(one_run(tree, target.pid, backend=backend))
    finally:
        target.kill()
        target.wait()
    res = {"kernel": platform.release(), "arch": platform.machine(), "rounds": a.rounds, "first_run": first,
           "trees": {label: {"dir": tree, "backend": backend, **summary(runs[label]), "runs": runs[label]}
                     for label, tree, backend in trees}}
    if a.breakdown:
        res["breakdown"] = breakdown()
    if a.json:
        print(json.dumps(res, indent=1))
        return
    print(f"vmabpf watch -p PID, start to banner, on {res['kernel']} ({res['arch']}); median of {a.rounds} "
          f"runs per tree, trees interleaved; seconds")
    print(f"first run of the boot ({first['tree']}, bcc unpacks kheaders): total {first['total']:.1f}, "
          f"compile {first['compile']:.1f}")
    print(f"{'tree':<16} {'total':>7} {'before':>7} {'bcc imp':>7} {'compile':>7} {'attach':>7} {'compile %':>9}")
    base = None
    for label, s in res["trees"].items():
        base = base or s
        print(f"{label:<16} {s['total']:7.2f} {s['before']:7.2f} {s['import_bcc']:7.2f} {s['compile']:7.2f} "
              f"{s['attach']:7.2f} {100 * s['compile_share']:8.0f}%"
              + ("" if s is base else f"   total {s['total'] / base['total']:.2f}x"
                 + (f", compile {s['compile'] / base['compile']:.2f}x" if s['compile'] else "")
                 + f" of {next(iter(res['trees']))}"))
    for name, secs in res.get("breakdown", {}).items():
        print(f"BPF(text=...) of {name}: {secs:.1f} s")


if __name__ == "__main__":
    main()

"""The attach-plan table and the BPF program agree: every variant's macro selects code, every
probe's function exists in the program.  (A mismatch would otherwise only show in a guest.)"""

import re

from vmatrace_bpf import events
from vmatrace_bpf.plan import CAPABILITIES

SRC = open(events.bpf_dir() + "/vmatrace.bpf.c").read()


def test_every_variant_macro_guards_code():
    for cap in CAPABILITIES:
        for v in cap.variants:
            assert re.search(rf"#(if|ifdef|elif).*\b{v.macro}\b", SRC), f"{cap.name}/{v.name}: {v.macro}"
            for p in v.probes:
                if p.macro:
                    assert re.search(rf"#(if|ifdef).*\b{p.macro}\b", SRC), p.macro


def test_every_probe_function_is_defined():
    for cap in CAPABILITIES:
        for v in cap.variants:
            for p in v.probes:
                if p.kind in ("kprobe", "kretprobe"):
                    assert re.search(rf"^int {p.fn}\(struct pt_regs \*ctx\)", SRC, re.M), p.fn
                elif p.kind == "kretfunc":
                    fn = p.fn.replace("kretfunc__vmlinux__", "")
                    assert f"KRETFUNC_PROBE({fn}," in SRC, p.fn
                elif p.kind == "tracepoint":
                    cat, ev = p.candidates[0].split(":")
                    assert f"TRACEPOINT_PROBE({cat}, {ev})" in SRC, p.candidates[0]


def test_vmg_offsets_are_all_used():
    for cap in CAPABILITIES:
        for v in cap.variants:
            for off in v.offsets:
                field = off.macro[len("VMG_"):-len("_OFF")]
                assert f"VMG(" in SRC and re.search(rf"VMG\([^,]+, {field}\)", SRC), off.macro

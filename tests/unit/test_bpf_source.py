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
                if not p.bcc:  # tracefs only
                    continue
                if p.kind in ("kprobe", "kretprobe"):
                    assert re.search(rf"^int {p.program}\(struct pt_regs \*ctx\)", SRC, re.M), p.fn
                elif p.kind == "kretfunc":
                    fn = p.fn.replace("kretfunc__vmlinux__", "")
                    assert f"KRETFUNC_PROBE({fn}," in SRC, p.fn
                elif p.kind == "kfunc":
                    fn = p.fn.replace("kfunc__vmlinux__", "")
                    assert f"KFUNC_PROBE({fn}," in SRC, p.fn
                elif p.kind == "tracepoint":
                    cat, ev = p.candidates[0].split(":")
                    assert f"TRACEPOINT_PROBE({cat}, {ev})" in SRC, p.candidates[0]
                else:
                    raise AssertionError(f"{p.fn}: probe kind {p.kind} is not checked here")


def test_vmg_offsets_are_all_used():
    for cap in CAPABILITIES:
        for v in cap.variants:
            for off in v.offsets:
                field = off.macro[len("VMG_"):-len("_OFF")]
                assert "VMG(" in SRC and re.search(rf"VMG\([^,]+, {field}\)", SRC), off.macro


def test_every_argument_read_is_declared_in_the_plan():
    """ARG(ctx, fn, param) in the BPF program <-> the probe attaching fn declares param@position:
    the positions come only from the plan's signatures (checked against BTF), never from the C."""
    used = set(re.findall(r"\bARG\(ctx, (\w+), (\w+)\)", SRC)) - {("fn", "param")}  # its definition
    assert used, "the program reads no argument through ARG()"
    declared = {}
    for cap in CAPABILITIES:
        for v in cap.variants:
            for p in v.probes:
                for name, _pos in p.params():
                    declared.setdefault(p.fn, set()).add(name)
    for fn, param in used:
        assert param in declared.get(fn, set()), f"{fn} reads {param}, which no probe of {fn} declares"
    # and no probe reads a raw register behind the plan's back
    body = SRC[SRC.index("#define ARG(ctx, fn, param)"):]
    assert "PT_REGS_PARM" not in body and "regs[" not in body.replace("r.regs[", "")


def test_layout_fields_are_the_members_the_program_reads():
    """plan.LAYOUT <-> the C: every field's macro is read, and the header path defines each one (so a kernel
    without BTF compiles the same reads)."""
    from vmatrace_bpf.plan import LAYOUT
    headers = SRC[SRC.index("#ifdef VT_BTF_LAYOUT"):SRC.index("/* the address of member M")]
    for f in LAYOUT:
        cdefine = re.search(rf"#define {f.macro} offsetof\(struct {f.struct}, ([\w.]+)\)", headers)
        assert cdefine and cdefine.group(1) == f.member, f.macro
        if f.optional:
            assert re.search(rf"#ifdef {f.optional}\n#define {f.macro} ", headers), f"{f.macro}: {f.optional}"
        body = SRC[SRC.index("/* the address of member M"):]
        short = f.macro.split("_", 1)[1][:-len("_OFF")]  # VMA_VM_START_OFF -> VM_START
        prefix = f.macro.split("_", 1)[0]
        assert re.search(rf"\b{prefix}\([^,()]+, {short}\)", body) or f.macro in body, f"{f.macro} is never read"
    # with BTF the structs are opaque (declared, never defined): any other access to their members fails to
    # compile, in every guest; offsetof() appears only in the header path
    btf_path = headers[:headers.index("#else")]
    for struct in {f.struct for f in LAYOUT}:
        assert f"struct {struct};" in btf_path, struct
    assert "#include" not in btf_path
    assert "offsetof(" not in SRC[SRC.index("/* the address of member M"):]

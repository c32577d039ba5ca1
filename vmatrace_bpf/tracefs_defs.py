"""The attach plan as kprobe_events definitions: the tracefs backend's "BPF program".

Each probe the plan chose (``plan.choose(backend="tracefs")``) becomes one
kprobe/kretprobe event whose fetch-args read what the BPF function of the same
name reads: its arguments at the slots the plan computed from the BTF prototype
(a register, or ``$stackN`` past the registers, as ``ARG()`` in
bpf/vmatrace.bpf.c), and struct members at offsets from this kernel's BTF
(``+OFF(...)`` dereferences).  Names are fetched as 80-byte arrays (``x64[10]``)
so that no name can be mistaken for the next field; the name a process passes
to prctl() is a user string (``ustring``, always the last field).

Pure: from a Plan and KernelInfo (saved files in the host tests) to text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from . import events
from .kernel import KernelInfo
from .plan import ARG_REGISTERS, Plan

# The registers holding the first argument words on function entry (plan.ARG_REGISTERS of them).
_REG_NAMES = {"x86_64": ("%di", "%si", "%dx", "%cx", "%r8", "%r9"),
              "arm64": tuple(f"%x{i}" for i in range(8))}
# Stack word n past the registers: x86_64 skips the return address ($stack0), arm64 does not.
_STACK_BASE = {"x86_64": 1, "arm64": 0}
# The syscall arguments in the user pt_regs (prctl: option, arg2, arg3, arg4, arg5).
_SYSCALL_REGS = {"x86_64": ("di", "si", "dx", "r10", "r8"), "arm64": ("regs[0]", "regs[1]", "regs[2]", "regs[3]",
                                                                      "regs[4]")}
NAME_WORDS = events.layout().c("VT_NAME_LEN") // 8  # a name as x64[10]: 80 bytes, no parsing ambiguity


class DefsError(ValueError):
    """This kernel's BTF lacks something a definition needs (the capability is then missing)."""


@dataclass
class EventDef:
    fn: str           # the BPF function name this probe stands for (kp_vma_merge, ...)
    kind: str         # kprobe, kretprobe, tracepoint
    target: str       # symbol, or "category:event"
    fields: List[Tuple[str, str, str]] = field(default_factory=list)  # (name, fetch, type)
    filter: str = ""  # the event's filter in the instance

    @property
    def event(self) -> str:
        return "vt_" + self.fn

    def line(self, group: str) -> str:
        """The kprobe_events line ('p:GROUP/EVENT TARGET f=FETCH:TYPE ...')."""
        head = {"kprobe": "p", "kretprobe": "r"}[self.kind]
        args = " ".join(f"{n}={f}:{t}" for n, f, t in self.fields)
        return f"{head}:{group}/{self.event} {self.target} {args}".rstrip()


class _Offsets:
    def __init__(self, kinfo: KernelInfo):
        if kinfo.btf is None:
            raise DefsError("no BTF (/sys/kernel/btf/vmlinux): struct offsets for the fetch-args cannot be known")
        self.btf = kinfo.btf

    def __call__(self, struct: str, member: str) -> int:
        for m in member.split("|"):
            off = self.btf.member_offset(struct, m)
            if off is not None:
                return off
        raise DefsError(f"BTF has no member {member!r} in struct {struct}")


def _deref(off: int, expr: str) -> str:
    return f"+{off}({expr})"


class Builder:
    """Fetch expressions for one kernel."""

    def __init__(self, plan: Plan, kinfo: KernelInfo, return_args: bool):
        self.arch = kinfo.arch
        if self.arch not in ARG_REGISTERS:
            raise DefsError(f"where {self.arch} passes arguments is not known (x86_64, arm64 only)")
        self.defines = plan.defines()
        self.off = _Offsets(kinfo)
        self.return_args = return_args  # kretprobes may read $argN (saved at entry): tracefs README says so
        # the members the BPF program reads, at the plan's offsets from BTF (plan.LAYOUT)
        if not plan.layout:
            raise DefsError(f"struct offsets for the fetch-args cannot be known ({plan.layout_why})")
        self.layout = lay = plan.layout
        self.vma = {m: lay[f"VMA_{m.upper()}_OFF"] for m in ("vm_start", "vm_end", "vm_flags", "vm_file", "anon_vma",
                                                           "vm_pgoff", "anon_name")}
        # CONFIG_USERFAULTFD off: no such check (the BPF side #ifdefs it too)
        self.vma["uffd"] = lay.get("VMA_UFFD_OFF")
        self.name_kref = lay["NAME_REFS_OFF"]
        self.name_str = lay["NAME_STR_OFF"]

    def arg(self, fn: str, param: str) -> str:
        key = f"ARG_{fn}_{param}"
        if key not in self.defines:
            raise DefsError(f"the plan placed no argument {param} for {fn}")
        slot = self.defines[key]
        nreg = ARG_REGISTERS[self.arch]
        if slot < nreg:
            return _REG_NAMES[self.arch][slot]
        return f"$stack{slot - nreg + _STACK_BASE[self.arch]}"

    def ret_arg(self, fn: str, param: str) -> str:
        """Argument PARAM of FN read in its kretprobe ($argN, saved at entry)."""
        if not self.return_args:
            raise DefsError("this kernel's kretprobe events cannot read arguments ($argN at return, "
                            "Linux 6.6+ per the tracefs README)")
        slot = self.defines.get(f"ARG_{fn}_{param}")
        if slot is None or slot >= ARG_REGISTERS[self.arch]:
            raise DefsError(f"{param} of {fn} is not in a register: $arg at return is not used for it")
        return f"$arg{slot + 1}"

    def vma_fields(self, prefix: str, ptr: str) -> List[Tuple[str, str, str]]:
        """The members of a VMA the merge test compares, read from pointer expression PTR."""
        v = self.vma
        out = [(f"{prefix}", ptr, "x64")]
        for name, key in (("start", "vm_start"), ("end", "vm_end"), ("flags", "vm_flags"), ("file", "vm_file"),
                          ("av", "anon_vma"), ("pgoff", "vm_pgoff"), ("anon", "anon_name")):
            out.append((f"{prefix}_{name}", _deref(v[key], ptr), "x64"))
        if v["uffd"] is not None:
            out.append((f"{prefix}_uffd", _deref(v["uffd"], ptr), "x64"))
        out.append((f"{prefix}_name", self.name_array(_deref(v["anon_name"], ptr)), f"x64[{NAME_WORDS}]"))
        return out

    def name_array(self, name_ptr: str) -> str:
        return _deref(self.name_str, name_ptr)


def _merge_req(b: Builder, fn: str, src: bool) -> List[Tuple[str, str, str]]:
    a = lambda p: b.arg(fn, p)  # noqa: E731
    out = [("start", a("addr"), "x64"), ("end", a("end"), "x64"), ("flags", a("vm_flags"), "x64"),
           ("pgoff", a("pgoff"), "x64")]
    if src:  # 6.9-6.11: anon_vma and file are src's (commit 2c8b947416a9)
        out += [("file", _deref(b.vma["vm_file"], a("src")), "x64"),
                ("av", _deref(b.vma["anon_vma"], a("src")), "x64")]
    else:
        out += [("file", a("file"), "x64"), ("av", a("anon_vma"), "x64")]
    out += [("uffd", a("vm_userfaultfd_ctx"), "x64"), ("anon", a("anon_name"), "x64"),
            ("name", b.name_array(a("anon_name")), f"x64[{NAME_WORDS}]")]
    return out


def _vmg(b: Builder, vmg: str, member: str) -> str:
    return _deref(b.defines[f"VMG_{member}_OFF"], vmg)


def _vmg_req(b: Builder, vmg: str) -> List[Tuple[str, str, str]]:
    out = [(f, _vmg(b, vmg, m), "x64") for f, m in (("start", "START"), ("end", "END"), ("flags", "FLAGS"),
                                                     ("pgoff", "PGOFF"), ("file", "FILE"), ("av", "ANON_VMA"),
                                                     ("uffd", "UFFD"), ("anon", "ANON_NAME"))]
    out.append(("name", b.name_array(_vmg(b, vmg, "ANON_NAME")), f"x64[{NAME_WORDS}]"))
    return out + b.vma_fields("prev", _vmg(b, vmg, "PREV"))


def _result(b: Builder) -> List[Tuple[str, str, str]]:
    return [("res", "$retval", "x64"), ("res_start", _deref(b.vma["vm_start"], "$retval"), "x64"),
            ("res_end", _deref(b.vma["vm_end"], "$retval"), "x64")]


def _define(b: Builder, fn: str, kind: str, target: str, kinfo: KernelInfo) -> EventDef:
    d = EventDef(fn, kind, target)
    f = d.fields
    v = b.vma
    if fn == "kp_prctl_enter":
        regs = b.arg(fn, "regs")
        r = [_deref(b.off("pt_regs", n) if "[" not in n else b.off("pt_regs", "regs") + 8 * int(n[5:-1]), regs)
             for n in _SYSCALL_REGS[kinfo.arch]]
        f += [("option", r[0], "x64"), ("arg2", r[1], "x64"), ("addr", r[2], "x64"), ("len", r[3], "x64"),
              ("nameptr", r[4], "x64"), ("name", _deref(0, r[4]), "ustring")]
        c = events.layout().constants
        d.filter = f"option == {c['VT_PR_SET_VMA']:#x} && arg2 == {c['VT_PR_SET_VMA_ANON_NAME']}"
    elif fn == "kr_prctl_exit":
        f.append(("ret", "$retval", "s64"))
    elif fn == "kp_vma_merge":
        f += _merge_req(b, fn, "ARG_kp_vma_merge_src" in b.defines) + b.vma_fields("prev", b.arg(fn, "prev"))
    elif fn == "kp_can_merge_before":
        f += b.vma_fields("next", b.arg(fn, "vma"))
    elif fn == "kr_vma_merge":
        f += _result(b)
    elif fn in ("kp_vmg_new", "kp_vmg_existing"):
        vmg = b.arg(fn, "vmg")
        f += _vmg_req(b, vmg)
        if fn == "kp_vmg_new":
            f += b.vma_fields("next", _vmg(b, vmg, "NEXT"))
        else:
            f.append(("middle_end", _deref(v["vm_end"], _vmg(b, vmg, "MIDDLE")), "x64"))
    elif fn in ("kr_vmg_new", "kr_vmg_existing"):
        vmg = b.ret_arg("kp" + fn[2:], "vmg")
        f += _result(b) + [("state", _vmg(b, vmg, "STATE"), "u32")]
        if fn == "kr_vmg_existing":  # next is found inside (vmg->next), when end == the middle's end
            f += b.vma_fields("next", _vmg(b, vmg, "NEXT"))
    elif fn == "kp_split":
        vma = b.arg(fn, "vma")
        f += [("vma", vma, "x64"), ("start", _deref(v["vm_start"], vma), "x64"),
              ("end", _deref(v["vm_end"], vma), "x64"), ("addr", b.arg(fn, "addr"), "x64"),
              ("new_below", b.arg(fn, "new_below"), "u32"), ("file", _deref(v["vm_file"], vma), "x64"),
              ("anon", _deref(v["anon_name"], vma), "x64"),
              ("ref", _deref(b.name_kref, _deref(v["anon_name"], vma)), "u32"),
              ("name", b.name_array(_deref(v["anon_name"], vma)), f"x64[{NAME_WORDS}]")]
    elif fn == "kr_split":
        f.append(("ret", "$retval", "s32"))
    elif fn == "kp_dup_mmap":
        f.append(("map_count", _deref(b.layout["MM_MAP_COUNT_OFF"], b.arg(fn, "oldmm")), "s32"))
    elif fn == "kp_uprobe_dup_mmap":
        f.append(("map_count", _deref(b.layout["MM_MAP_COUNT_OFF"], b.arg(fn, "oldmm")), "s32"))
    elif fn in ("kp_dup_mmap_start", "kp_dup_mmap_end"):
        pass  # the bracket: its time is all that is read
    elif fn == "kr_dup_mmap":
        f.append(("ret", "$retval", "s32"))
    elif fn == "kr_vm_area_dup":
        # the copy: a named one took a name reference (its kref, read here, is the count after it)
        f += [("vma", "$retval", "x64"), ("file", _deref(v["vm_file"], "$retval"), "x64"),
              ("anon", _deref(v["anon_name"], "$retval"), "x64"),
              ("ref", _deref(b.name_kref, _deref(v["anon_name"], "$retval")), "u32")]
    elif fn == "kr_name_alloc":
        f += [("ptr", "$retval", "x64"), ("ref", _deref(b.name_kref, "$retval"), "u32"),
              ("name", b.name_array("$retval"), f"x64[{NAME_WORDS}]")]
    elif fn == "tp_sched_fork":
        pass  # a tracepoint: its own fields (parent_pid, child_pid)
    else:
        raise DefsError(f"no tracefs definition for {fn}")
    return d


@dataclass
class Definitions:
    events: List[EventDef]
    missing: Dict[str, str]  # capability -> why it is not traced with tracefs here


def build(plan: Plan, kinfo: KernelInfo, return_args: bool) -> Definitions:
    """Every probe of PLAN as an EventDef; a capability whose definitions cannot be built is missing."""
    b = Builder(plan, kinfo, return_args)
    out: List[EventDef] = []
    missing: Dict[str, str] = {}
    for name, ch in plan.choices.items():
        if not ch.ok:
            continue
        try:
            defs = [_define(b, p.fn, p.kind, p.target, kinfo) for p in ch.probes]
        except DefsError as e:
            missing[name] = str(e)
            continue
        out += defs
    return Definitions(out, missing)


def return_args_supported(readme: Optional[str]) -> bool:
    """The tracefs README of kernels whose kretprobes can fetch $argN says so."""
    return bool(readme) and any("return probes support" in ln and "$arg" in ln for ln in readme.splitlines())

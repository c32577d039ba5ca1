"""The attach plan: which kernel functions and tracepoints each capability uses here.

ONE table (``CAPABILITIES``) lists, for every capability, the kernel variants
in order of preference.  The plan for a kernel is, per capability, the first
variant whose probe targets this kernel really has (kallsyms + ftrace's
available_filter_functions, GCC clones such as ``.isra.0`` included) and whose
private struct offsets BTF can give.  Nothing else in vmabpf branches on the
kernel: the BPF programs see the chosen variant as ``-D`` macros.  The other
kernel decisions live here too: where each argument is read (per architecture,
from the BTF prototype) and whether events go through the ring buffer.

Longer than the other modules (~600 lines) on purpose: the table and the checks
that keep it honest belong together, so a kernel difference is read in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .btf import BTFError
from .kernel import KernelInfo


@dataclass(frozen=True)
class Probe:
    """One attach point.  KIND is kprobe, kretprobe, kfunc (fentry), kretfunc (fexit) or tracepoint.

    For kprobes, CANDIDATES are function names tried in order (the first one
    traceable here wins, clones included); FN is the BPF function to attach.
    For tracepoints, CANDIDATES holds "category:event".

    ARGS is the signature the BPF function relies on: the parameters it reads
    (or that pin the function's identity), as "name@position" words with
    1-based positions, e.g. "prev@2 addr@3 anon_name@11".  RET is the type
    of the return value it reads ("ptr struct vm_area_struct", "int").  The
    plan checks both against the function's BTF prototype, and places each
    parameter in a register or stack slot for the BPF program
    (-DARG_<fn>_<name>=slot).  A probe that reads nothing of the function
    has neither.
    """

    kind: str
    candidates: Tuple[str, ...]
    fn: str
    optional: bool = False  # the variant works without it, knowing less
    macro: str = ""  # defined (=1) for the BPF program when this probe is attached
    args: str = ""
    ret: str = ""
    # the tracefs backend can place it (kprobe_events/kretprobe or a tracepoint it reads by field);
    # False: BPF only (fentry/fexit, a tracepoint whose use needs a BPF map), with the reason
    tracefs: bool = True
    bcc: bool = True  # False: only the tracefs backend places it (reads what BPF gets another way)
    # the C function bcc attaches when it is not FN: probes that run one program (compiled once), each
    # still its own probe by FN (its tracefs event, its -DARG_ macros)
    prog: str = ""

    @property
    def program(self) -> str:
        return self.prog or self.fn

    def params(self) -> List[Tuple[str, int]]:
        """[(name, 1-based position)] from ARGS."""
        out = []
        for word in self.args.split():
            name, _, pos = word.partition("@")
            out.append((name, int(pos)))
        return out

    @property
    def reads_function(self) -> bool:
        return bool(self.args or self.ret)


@dataclass(frozen=True)
class Evidence:
    """Why a variant's signatures hold on a kernel without BTF: every word of REQUIRES
    must hold ("sym": in kallsyms, "!sym": not in kallsyms, "CONFIG_X=y": in the
    kernel config).  NOTE names the kernel commits that make this evidence enough."""

    requires: Tuple[str, ...]
    note: str


@dataclass(frozen=True)
class Offset:
    """A struct member offset BPF needs that the kernel headers do not give."""

    macro: str
    struct: str
    member: str


@dataclass(frozen=True)
class Field:
    """A member of a kernel struct the BPF program reads at an offset (MACRO), SIZE bytes wide.
    OPTIONAL names the kernel option without which the member does not exist (its check is then
    left out, as the C #ifdefs it)."""

    macro: str
    struct: str
    member: str
    size: int
    optional: str = ""


# The members of public kernel structs the BPF program reads (bpf/vmatrace.bpf.c, "kernel struct layout").
# With BTF their offsets come from it and the program is compiled without <linux/mm_types.h> and
# <linux/sched.h>, which were ~80% of bcc's compile time (docs/fork-cost.md, "Start time"); without BTF the
# program includes those headers and takes the same offsets from them (offsetof).  The tracefs backend's
# fetch-args use the same offsets.
LAYOUT: Tuple[Field, ...] = (
    Field("VMA_VM_START_OFF", "vm_area_struct", "vm_start", 8),
    Field("VMA_VM_END_OFF", "vm_area_struct", "vm_end", 8),
    # a union with __vm_flags since 6.3 (commit bc292ab00f6c "mm: introduce vma->vm_flags wrapper functions")
    Field("VMA_VM_FLAGS_OFF", "vm_area_struct", "vm_flags", 8),
    Field("VMA_VM_FILE_OFF", "vm_area_struct", "vm_file", 8),
    Field("VMA_ANON_VMA_OFF", "vm_area_struct", "anon_vma", 8),
    Field("VMA_VM_PGOFF_OFF", "vm_area_struct", "vm_pgoff", 8),
    # 5.17-6.1: in a union with shared.rb (valid only when vm_file is NULL); its own member from 6.2
    Field("VMA_ANON_NAME_OFF", "vm_area_struct", "anon_name", 8),
    Field("VMA_UFFD_OFF", "vm_area_struct", "vm_userfaultfd_ctx.ctx", 8, optional="CONFIG_USERFAULTFD"),
    Field("NAME_KREF_OFF", "anon_vma_name", "kref", 4),
    Field("NAME_REFS_OFF", "anon_vma_name", "kref.refcount.refs.counter", 4),
    Field("NAME_STR_OFF", "anon_vma_name", "name", 0),  # char name[]: a flexible array, no size
    Field("MM_MAP_COUNT_OFF", "mm_struct", "map_count", 4),
    Field("TASK_MM_OFF", "task_struct", "mm", 8),
)


def resolve_layout(btf) -> Tuple[Dict[str, int], str]:
    """({macro: offset} for every LAYOUT field this kernel has, "") from BTF, or ({}, why the kernel
    headers must give them instead)."""
    if btf is None:
        return {}, "no BTF: offsets from the kernel headers (<linux/mm_types.h>)"
    out: Dict[str, int] = {}
    for f in LAYOUT:
        try:
            found = btf.member(f.struct, f.member)
        except BTFError as e:
            return {}, f"this kernel's BTF is malformed ({e}): offsets from the kernel headers"
        if found is None:
            if f.optional:
                continue
            return {}, f"BTF has no {f.struct}.{f.member}: offsets from the kernel headers"
        off, tid = found
        size = btf.type_size(tid) or 0
        if size != f.size:
            return {}, (f"BTF has {f.struct}.{f.member} {size} bytes wide, the program reads {f.size}: "
                        f"offsets from the kernel headers (whose sizes the program asserts)")
        out[f.macro] = off
    return out, ""


@dataclass(frozen=True)
class Variant:
    name: str
    macro: str
    probes: Tuple[Probe, ...]
    note: str
    offsets: Tuple[Offset, ...] = ()
    # without BTF: accepted only on this evidence (None: never; the signatures need BTF)
    without_btf: Optional[Evidence] = None
    # why the tracefs backend cannot use this variant ("" = it can, probe by probe)
    not_tracefs: str = ""


@dataclass(frozen=True)
class Capability:
    name: str
    what: str
    variants: Tuple[Variant, ...]
    # What to tell a user when no variant fits.
    missing_hint: str


def _kp(fn_entry: str, fn_ret: Optional[str], *cands: str, args: str = "", ret: str = "",
        ret_prog: str = "") -> Tuple[Probe, ...]:
    """A kprobe reading ARGS and, with FN_RET, a kretprobe reading the return value of type RET (running
    the C function RET_PROG when given)."""
    out = [Probe("kprobe", tuple(cands), fn_entry, args=args)]
    if fn_ret:
        out.append(Probe("kretprobe", tuple(cands), fn_ret, ret=ret, prog=ret_prog))
    return tuple(out)


# Evidence for signatures that have not changed, in the positions read, in any kernel
# with struct anon_vma_name (5.17, commit 5c26f6ac9416 "mm: refactor vm_area_struct::anon_vma_name
# usage code") up to 7.2; "anon_vma_name_alloc" in kallsyms marks such a kernel.
_STABLE = Evidence(("anon_vma_name_alloc",), "unchanged in the positions read from 5.17 to 7.2 (checked in "
                   "the kernel sources); anon_vma_name_alloc in kallsyms marks a kernel with struct anon_vma_name")
_VMA = "ptr struct vm_area_struct"


_VMG_OFFSETS = tuple(
    Offset(f"VMG_{m.upper()}_OFF", "vma_merge_struct", m)
    for m in ("prev", "next", "start", "end", "pgoff", "file", "anon_vma", "anon_name", "state")
) + (
    # 6.12 calls the VMA being modified "vma"; 7.x renamed it "middle".
    Offset("VMG_MIDDLE_OFF", "vma_merge_struct", "middle|vma"),
    # 6.12 "flags"; 7.x "vm_flags" (a union with vma_flags).
    Offset("VMG_FLAGS_OFF", "vma_merge_struct", "vm_flags|flags"),
    Offset("VMG_UFFD_OFF", "vma_merge_struct", "uffd_ctx"),
)

# The merge path's signatures.  vma_merge() kept its name while its argument list moved;
# the BPF program reads every argument at the slot the plan computes from the matching row.
_VMA_MERGE_61 = ("mm@1 prev@2 addr@3 end@4 vm_flags@5 anon_vma@6 file@7 pgoff@8 vm_userfaultfd_ctx@10 "
                 "anon_name@11")
_VMA_MERGE_VMI = ("vmi@1 mm@2 prev@3 addr@4 end@5 vm_flags@6 anon_vma@7 file@8 pgoff@9 vm_userfaultfd_ctx@11 "
                  "anon_name@12")
_VMA_MERGE_SRC = ("vmi@1 prev@2 src@3 addr@4 end@5 vm_flags@6 pgoff@7 policy@8 vm_userfaultfd_ctx@9 "
                  "anon_name@10")
# can_vma_merge_before(vma, vm_flags, anon_vma, file, vm_pgoff, vm_userfaultfd_ctx, anon_name): vma_merge()
# passes it the next VMA, and only when it looks at that VMA.
_CAN_MERGE_BEFORE = Probe("kprobe", ("can_vma_merge_before",), "kp_can_merge_before", optional=True, args="vma@1")

CAPABILITIES: Tuple[Capability, ...] = (
    Capability(
        "prctl", "names set with prctl(PR_SET_VMA_ANON_NAME) and their result",
        (
            Variant("syscall-tracepoints", "PRCTL_TRACEPOINT",
                    (Probe("tracepoint", ("syscalls:sys_enter_prctl",), "tp_prctl_enter"),
                     Probe("tracepoint", ("syscalls:sys_exit_prctl",), "tp_prctl_exit")),
                    "syscall tracepoints (CONFIG_FTRACE_SYSCALLS): fields by name, no function read",
                    not_tracefs="a syscall tracepoint gives the name's user address, not the string (a kprobe "
                                "fetch-arg reads it: ustring)"),
            Variant("syscall-kprobe", "PRCTL_KPROBE",
                    _kp("kp_prctl_enter", "kr_prctl_exit", "@syscall:prctl", args="regs@1", ret="long int"),
                    "kprobe on the arch's pt_regs syscall wrapper (__x64_sys_prctl since 4.17, commit fa697140f9a2 "
                    "\"syscalls/x86: Use 'struct pt_regs' based syscall calling convention for 64-bit syscalls\"; "
                    "__arm64_sys_prctl since 4.19, commit 4378a7d4be30 'arm64: implement syscall wrappers')",
                    without_btf=Evidence(("anon_vma_name_alloc",), "only the pt_regs wrappers are probed "
                                         "(__x64_sys_*/__arm64_sys_*), which take the user registers as argument 1 "
                                         "by construction")),
        ),
        "enable CONFIG_FTRACE_SYSCALLS (or kprobes on the prctl syscall)"),
    Capability(
        "merge", "VMA merge attempts, outcome and why a merge failed",
        (
            Variant("vma_merge", "MERGE_VMA_MERGE",
                    _kp("kp_vma_merge", "kr_vma_merge", "vma_merge", args=_VMA_MERGE_61, ret=_VMA)
                    + (_CAN_MERGE_BEFORE,),
                    "vma_merge(mm, prev, addr, end, vm_flags, anon_vma, file, pgoff, policy, vm_userfaultfd_ctx, "
                    "anon_name), 5.17 to 6.2: anon_name (argument 11) since 5.17 (commit 9a10064f5625 'mm: add a field "
                    "to store names for private anonymous memory'), a struct anon_vma_name since "
                    "commit 5c26f6ac9416 'mm: refactor vm_area_struct::anon_vma_name usage code' (5.17-rc7)",
                    without_btf=Evidence(
                        ("__vma_adjust", "anon_vma_name_alloc", "CONFIG_USERFAULTFD=y"),
                        "__vma_adjust() was removed in 6.3 (commit 0503ea8f5ba7 'mm/mmap: remove __vma_adjust()'), "
                        "the release that put vmi first in vma_merge(); with CONFIG_USERFAULTFD the uffd context argument "
                        "is one word, so every argument is one slot")),
            Variant("vma_merge-vmi", "MERGE_VMA_MERGE_VMI",
                    _kp("kp_vma_merge", "kr_vma_merge", "vma_merge", args=_VMA_MERGE_VMI, ret=_VMA)
                    + (_CAN_MERGE_BEFORE,),
                    "vma_merge(vmi, mm, prev, addr, end, vm_flags, anon_vma, file, pgoff, policy, "
                    "vm_userfaultfd_ctx, anon_name), 6.3 to 6.8: vmi added in 6.3 by commit 9760ebffbf55 'mm: "
                    "switch vma_merge(), split_vma(), and __split_vma to vma iterator'; every other argument moved "
                    "one slot (static from 6.7, same arguments)"),
            Variant("vma_merge-src", "MERGE_VMA_MERGE_SRC",
                    _kp("kp_vma_merge", "kr_vma_merge", "vma_merge", args=_VMA_MERGE_SRC, ret=_VMA)
                    + (_CAN_MERGE_BEFORE,),
                    "vma_merge(vmi, prev, src, addr, end, vm_flags, pgoff, policy, vm_userfaultfd_ctx, anon_name), "
                    "6.9 to 6.11: mm, anon_vma and file are taken from the VMA src (6.9, commit 2c8b947416a9 'mm/mmap: "
                    "pass vma to vma_merge()'); static since 6.7 (commit adb20b0c785e 'mm: make vma_merge() and split_vma() "
                    "internal'). Checked against BTF like the others, but no 6.9-6.11 test kernel proves it here"),
            Variant("vma_merge_struct", "MERGE_VMG",
                    # one return program for both (kr_vmg: the merge event's code compiled once, not twice)
                    _kp("kp_vmg_new", "kr_vmg_new", "vma_merge_new_range", args="vmg@1", ret=_VMA, ret_prog="kr_vmg")
                    + _kp("kp_vmg_existing", "kr_vmg_existing", "vma_merge_existing_range", "vma_modify",
                          args="vmg@1", ret=_VMA, ret_prog="kr_vmg"),
                    "struct vma_merge_struct, 6.12+ (commit 2f1c6611b0a8 'mm: introduce vma_merge_struct and abstract "
                    "vma_merge(),vma_modify()'); vma_merge_new_range from commit cacded5e42b9 'mm: avoid using "
                    "vma_merge() for new VMAs', vma_merge_existing_range from cc8cb3697a8d 'mm: refactor "
                    "vma_merge() into modify-only vma_merge_existing_range()', usually inlined into vma_modify",
                    _VMG_OFFSETS),
        ),
        "no known merge entry point (vma_merge / vma_merge_new_range) is traceable with a known signature"),
    Capability(
        "split", "VMA splits and the name refcount after them",
        (
            Variant("__split_vma", "SPLIT_PROBE",
                    _kp("kp_split", "kr_split", "__split_vma", "split_vma", args="vma@2 addr@3 new_below@4",
                        ret="int"),
                    "__split_vma(mm, vma, addr, new_below); 6.3+ (mm replaced by vmi, commit 9760ebffbf55): "
                    "vma, addr and new_below keep their places",
                    without_btf=_STABLE),
        ),
        "__split_vma and split_vma are both inlined or notrace, or their signature is not the known one"),
    Capability(
        "fork", "fork(): dup_mmap latency, map_count, child pid",
        (
            Variant("dup_mmap", "FORK_DUP_MMAP",
                    _kp("kp_dup_mmap", "kr_dup_mmap", "dup_mmap", args="mm@1 oldmm@2")
                    + (Probe("tracepoint", ("sched:sched_process_fork",), "tp_sched_fork"),),
                    "dup_mmap(mm, oldmm): static in kernel/fork.c (often inlined), in mm/mmap.c and declared in "
                    "mm/internal.h from 6.16 (commit 26a8f57760c1 'mm: move dup_mmap() to mm')",
                    without_btf=_STABLE),
            Variant("uprobe_dup_mmap-window", "FORK_UPROBE_WINDOW",
                    _kp("kp_dup_mmap_start", None, "uprobe_start_dup_mmap")
                    + _kp("kp_dup_mmap_end", None, "uprobe_end_dup_mmap")
                    + (Probe("tracepoint", ("sched:sched_process_fork",), "tp_sched_fork"),
                       # tracefs: a fetch-arg cannot reach current->mm; dup_mmap() calls uprobe_dup_mmap(oldmm, mm)
                       # with oldmm write-locked, before copying (kernel/fork.c since 3.5, commit f8ac4ec9c064
                       # "uprobes: Introduce MMF_HAS_UPROBES"; mm/mmap.c from 6.16): map_count is read there
                       Probe("kprobe", ("uprobe_dup_mmap",), "kp_uprobe_dup_mmap", args="oldmm@1", bcc=False)),
                    "dup_mmap inlined: the uprobe_start_dup_mmap()..uprobe_end_dup_mmap() calls bracket it "
                    "(no arguments read: the parent's mm is current->mm)"),
        ),
        "dup_mmap is inlined and the uprobe_*_dup_mmap bracket is missing (CONFIG_UPROBES?)"),
    Capability(
        "vma_dup", "vm_area_dup(): name refcount increments in fork and split",
        (
            Variant("vm_area_dup-fentry", "VMA_DUP_KFUNC",
                    (Probe("kfunc", ("vm_area_dup",), "kfunc__vmlinux__vm_area_dup", args="orig@1", ret=_VMA),),
                    "fentry (BPF trampoline: x86_64, arm64 from 6.4; BTF) reading the original through its BTF "
                    "type: the copy is named exactly when it is (dup_anon_vma_name); the per-fork counters sit in an "
                    "array slot of the forking thread (no helper call does work per VMA), or in its fork_state "
                    "entry when another thread holds the slot",
                    not_tracefs="fentry is a BPF program"),
            Variant("vm_area_dup", "VMA_DUP_PROBE",
                    (Probe("kretprobe", ("vm_area_dup",), "kr_vm_area_dup", ret=_VMA),),
                    "vm_area_dup() copies the anon_name pointer and takes a reference: dup_anon_vma_name(), 5.17 "
                    "(kref since commit 78db3412833d 'mm: add anonymous vma name refcounting')",
                    without_btf=_STABLE),
        ),
        "vm_area_dup is not traceable"),
    Capability(
        "name_alloc", "anon_vma_name objects allocated",
        (
            Variant("anon_vma_name_alloc", "NAME_ALLOC_PROBE",
                    (Probe("kretprobe", ("anon_vma_name_alloc",), "kr_name_alloc", ret="ptr struct anon_vma_name"),),
                    "anon_vma_name_alloc(name), mm/madvise.c, global since commit 5c26f6ac9416 (5.17)",
                    without_btf=_STABLE),
        ),
        "anon_vma_name_alloc is not traceable (CONFIG_ANON_VMA_NAME off?)"),
    Capability(
        "name_free", "anon_vma_name objects freed (last reference dropped)",
        (
            Variant("anon_vma_name_free", "NAME_FREE_PROBE",
                    (Probe("kprobe", ("anon_vma_name_free",), "kp_name_free", args="kref@1"),
                     Probe("tracepoint", ("kmem:kfree",), "tp_kfree", optional=True, macro="NAME_FREE_KFREE",
                           tracefs=False)),
                    "anon_vma_name_free(kref), the kref release function (named so by commit 5c26f6ac9416, 5.17); the compiler may also inline it "
                    "into callers in mm/madvise.c (7.x: set_anon_vma_name), so kfree() of a name object seen "
                    "allocated is watched too",
                    not_tracefs="where the compiler inlined anon_vma_name_free into its callers only kfree() "
                                "shows the free, and tracefs cannot pick the name objects out of every kfree() "
                                "(BPF keeps the live ones in a map): frees would be undercounted, so they are not "
                                "traced with tracefs",
                    without_btf=_STABLE),
        ),
        "anon_vma_name_free is not traceable (CONFIG_ANON_VMA_NAME off?)"),
)


@dataclass
class ResolvedProbe:
    kind: str
    target: str  # the real symbol (maybe a clone) or "category:event"
    fn: str
    prog: str = ""  # Probe.prog

    @property
    def program(self) -> str:
        """The C function bcc attaches (Probe.program)."""
        return self.prog or self.fn


@dataclass
class Choice:
    capability: Capability
    variant: Optional[Variant]
    probes: List[ResolvedProbe] = field(default_factory=list)
    defines: Dict[str, int] = field(default_factory=dict)
    rejected: List[Tuple[str, str]] = field(default_factory=list)  # (variant, why)
    degraded: List[str] = field(default_factory=list)  # optional probes missing from the chosen variant
    checked: List[str] = field(default_factory=list)  # the signatures the chosen variant was accepted on
    forced: bool = False

    @property
    def ok(self) -> bool:
        return self.variant is not None

    def why_missing(self) -> str:
        """One line: why no variant was chosen."""
        if self.ok:
            return ""
        if not self.rejected:
            return self.capability.missing_hint
        return "; ".join(f"{v}: {w}" for v, w in self.rejected)

    def to_json(self) -> dict:
        return {
            "capability": self.capability.name,
            "variant": self.variant.name if self.variant else None,
            "probes": [{"kind": p.kind, "target": p.target} for p in self.probes],
            "defines": dict(self.defines),
            "note": self.variant.note if self.variant else self.capability.missing_hint,
            "signatures": list(self.checked),
            "rejected": [{"variant": v, "why": w} for v, w in self.rejected],
            "degraded": list(self.degraded),
            "forced": self.forced,
        }


@dataclass
class Plan:
    release: str
    arch: str
    choices: Dict[str, Choice]
    ringbuf: bool = False  # events through the BPF ring buffer (else the perf buffer): has_ringbuf()
    backend: str = "bcc"  # "bcc" (BPF programs) or "tracefs" (kprobe_events in an instance of its own)
    # LAYOUT's offsets from BTF ({} when they come from the kernel headers, layout_why says why)
    layout: Dict[str, int] = field(default_factory=dict)
    layout_why: str = ""

    def defines(self) -> Dict[str, int]:
        out: Dict[str, int] = {}
        if self.layout:
            out["VT_BTF_LAYOUT"] = 1
            out.update(self.layout)
        for ch in self.choices.values():
            if ch.variant:
                out[ch.variant.macro] = 1
                out.update(ch.defines)
        return out

    def probes(self) -> List[ResolvedProbe]:
        return [p for ch in self.choices.values() for p in ch.probes]

    @property
    def missing(self) -> List[str]:
        return [name for name, ch in self.choices.items() if not ch.ok]

    def missing_line(self) -> str:
        """'merge (vma_merge: ...; vma_merge_struct: ...)' for every missing capability, or ''."""
        return "; ".join(f"{name} ({self.choices[name].why_missing()})" for name in self.missing)

    def forced_failures(self) -> List[str]:
        """'CAP=VARIANT: why' for each --force pin this kernel refused."""
        return [f"{name}={ch.rejected[0][0]}: {ch.rejected[0][1]}" for name, ch in self.choices.items()
                if ch.forced and not ch.ok and ch.rejected]

    def to_json(self) -> dict:
        return {"release": self.release, "arch": self.arch, "backend": self.backend,
                "layout": {"from": "BTF" if self.layout else "kernel headers", "offsets": dict(self.layout),
                           "why": self.layout_why},
                "capabilities": [ch.to_json() for ch in self.choices.values()]}


# Arguments a function receives in registers before the rest go on the stack, one 8-byte slot
# each (x86_64 SysV: rdi rsi rdx rcx r8 r9; arm64 AAPCS64: x0-x7).  The BPF program maps slot
# numbers to registers and stack addresses the same way (ARG() in bpf/vmatrace.bpf.c).
ARG_REGISTERS = {"x86_64": 6, "arm64": 8}


def _target_candidates(kinfo: KernelInfo, probe: Probe) -> Tuple[List[str], List[str]]:
    """(probe-able symbols for PROBE in order of preference, what was looked for)."""
    found, tried = [], []
    for cand in probe.candidates:
        if cand.startswith("@syscall:"):
            call = cand.split(":", 1)[1]
            tried.append(f"the {call} syscall wrapper")
            sym = kinfo.syscall_symbol(call)
            if sym:
                found.append(sym)
        else:
            tried.append(cand)
            found.extend(n for n in kinfo.text_symbol_names(cand) if kinfo.traceable(n))
    return found, tried


def _describe(proto, keep: int = 4) -> str:
    names = proto.names()
    return "(" + ", ".join(names[:keep] + (["..."] if len(names) > keep else [])) + ")"


def _reads(probe: Probe) -> str:
    return " ".join(w for w in (probe.args, f"returns {probe.ret}" if probe.ret else "") if w)


def _evidence_holds(kinfo: KernelInfo, word: str) -> bool:
    if word.startswith("CONFIG_"):
        name, _, want = word[len("CONFIG_"):].partition("=")
        return kinfo.config is not None and kinfo.config.get(name) == want
    if word.startswith("!"):
        return bool(kinfo.symbols) and word[1:] not in kinfo.symbols
    return word in kinfo.symbols


def _place_args(btf, proto, probe: Probe) -> Tuple[Optional[Dict[str, int]], str]:
    """{param: slot} for PROBE's parameters, from the types of every parameter up to the last one read."""
    params = probe.params()
    want = {pos: name for name, pos in params}
    slots: Dict[str, int] = {}
    slot = 0
    for i, p in enumerate(proto.params[:max(want, default=0)], start=1):
        size = btf.type_size(p.type_id)
        one_word = size is not None and 0 < size <= 8 and (
            btf.is_scalar(p.type_id)
            or (btf.is_struct(p.type_id) and all(btf.is_scalar(m.type_id) for m in btf.members(btf.resolve(p.type_id)))))
        if not one_word:
            # an empty struct (its option compiled out), a float, or an aggregate over 8 bytes: the
            # ABI places it (and so everything after it) in ways this plan does not model
            return None, (f"argument {i} ({p.name}: {btf.type_desc(p.type_id)}, {size} bytes) is not one "
                          f"register-sized word: the places of the arguments after it are not computed")
        if i in want:
            slots[want[i]] = slot
        slot += 1
    return slots, ""


def _check_signature(kinfo: KernelInfo, probe: Probe, target: str,
                     variant: Variant) -> Tuple[Optional[Dict[str, int]], str]:
    """(slot of each parameter read, what was checked) when PROBE may read TARGET's arguments here;
    (None, why not) otherwise."""
    if not probe.reads_function:
        return {}, ""
    if kinfo.arch not in ARG_REGISTERS:
        return None, f"where {kinfo.arch} passes function arguments is not known to vmabpf (x86_64, arm64 only)"
    if kinfo.is_clone(target):
        return None, (f"{target} is a GCC clone: its arguments may be dropped or reordered, and BTF describes "
                      f"only the original function")
    if kinfo.btf is None:
        ev = variant.without_btf
        if ev is None:
            return None, f"no BTF to check {target}'s signature ({_reads(probe)}) against, and no other evidence for it"
        missing = [w for w in ev.requires if not _evidence_holds(kinfo, w)]
        if missing:
            return None, (f"no BTF to check {target}'s signature, and the evidence for it does not hold here "
                          f"(missing: {', '.join(missing)})")
        return ({name: pos - 1 for name, pos in probe.params()},
                f"{target} [no BTF; evidence: {' '.join(ev.requires)}]: {_reads(probe)}: accepted")
    btf = kinfo.btf
    protos = btf.func_prototypes(target)
    if not protos:
        return None, f"BTF has no prototype for {target}"
    if len(protos) > 1:
        return None, (f"BTF has {len(protos)} different prototypes for {target} "
                      f"({'; '.join(p.text() for p in protos)}): which one is probed cannot be told")
    proto = protos[0]
    names = proto.names()
    for name, pos in probe.params():
        if pos > len(names) or names[pos - 1] != name:
            where = f"{name} is argument {names.index(name) + 1}" if name in names else f"no argument {name}"
            return None, (f"BTF has {target}{_describe(proto)}: argument order differs ({where}, expected {pos}; "
                          f"reads {probe.args})")
    if probe.ret:
        got = btf.type_desc(proto.ret_type)
        if got != probe.ret:
            return None, f"BTF has {target} returning {got}, expected {probe.ret}"
    slots, why = _place_args(btf, proto, probe)
    if slots is None:
        return None, f"{target}: {why}"
    return slots, f"{proto.text()} [BTF]: {_reads(probe)}: match"


def _resolve_probe(kinfo: KernelInfo, probe: Probe, variant: Variant) -> Tuple[Optional[str], Dict[str, int], str]:
    """(target, defines, what was checked) when the probe can attach here, else (None, {}, why)."""
    if probe.kind in ("kfunc", "kretfunc"):
        if not kinfo.kfunc_capable:
            return None, {}, f"no fentry/fexit here: {kinfo.kfunc_missing}"
        for cand in probe.candidates:
            if kinfo.has_btf_func(cand) and kinfo.traceable(cand):
                slots, checked = _check_signature(kinfo, probe, cand, variant)
                if slots is None:
                    return None, {}, checked
                return cand, {}, checked  # fentry/fexit arguments are typed: no slots
        return None, {}, f"BTF has no traceable function {' / '.join(probe.candidates)}"
    if probe.kind == "tracepoint":
        for cand in probe.candidates:
            cat, event = cand.split(":", 1)
            if kinfo.has_tracepoint(cat, event):
                return cand, {}, ""
        return None, {}, f"no tracepoint {', '.join(probe.candidates)}"
    found, tried = _target_candidates(kinfo, probe)
    if not found:
        return None, {}, "not traceable here: " + " / ".join(tried) + " (inlined, notrace or absent)"
    refusals = []
    for sym in found:
        slots, checked = _check_signature(kinfo, probe, sym, variant)
        if slots is not None:
            return sym, {f"ARG_{probe.fn}_{name}": slot for name, slot in slots.items()}, checked
        refusals.append(checked)
    return None, {}, "; ".join(refusals)


def _resolve_offset(kinfo: KernelInfo, off: Offset) -> Tuple[Optional[int], str]:
    if kinfo.btf is None:
        return None, f"struct {off.struct} is private to mm/: its layout needs BTF (/sys/kernel/btf/vmlinux)"
    for member in off.member.split("|"):
        val = kinfo.btf.member_offset(off.struct, member)
        if val is not None:
            return val, ""
    return None, f"BTF has no member {off.member!r} in struct {off.struct}"


class PlanError(ValueError):
    pass


def parse_force(specs: Sequence[str]) -> Dict[str, str]:
    """["fork=uprobe_dup_mmap-window", ...] -> {capability: variant}, checked against the table."""
    out = {}
    for spec in specs:
        cap, _, var = spec.partition("=")
        caps = {c.name: c for c in CAPABILITIES}
        if cap not in caps or var not in [v.name for v in caps[cap].variants]:
            choices = "; ".join(f"{c.name}={'|'.join(v.name for v in c.variants)}" for c in CAPABILITIES)
            raise PlanError(f"unknown variant {spec!r} (choose from: {choices})")
        out[cap] = var
    return out


def _add_checked(checked: List[str], note: str) -> None:
    """Add NOTE ('FUNCTION [how]: what is read: verdict'); the kprobe and kretprobe of one
    function share a line."""
    if not note:
        return
    head, sep, rest = note.partition("]: ")
    what, _, verdict = rest.rpartition(": ")
    for i, old in enumerate(checked):
        if sep and old.startswith(head + sep) and old.endswith(": " + verdict):
            checked[i] = f"{old[:-len(verdict) - 2]} {what}: {verdict}"
            return
    checked.append(note)


def _try_variant(kinfo: KernelInfo, variant: Variant, choice: Choice, backend: str = "bcc"):
    """(probes, defines, checked, degraded, "") when VARIANT holds here, else (..., why)."""
    resolved: List[ResolvedProbe] = []
    defines: Dict[str, int] = {}
    checked: List[str] = []
    degraded: List[str] = []
    for probe in variant.probes:
        if backend == "tracefs" and not probe.tracefs:
            degraded.append(f"{probe.kind} {'/'.join(probe.candidates)}: not with tracefs")
            continue
        if backend != "tracefs" and not probe.bcc:
            continue
        try:
            target, probe_defines, note = _resolve_probe(kinfo, probe, variant)
        except BTFError as e:
            target, probe_defines, note = None, {}, f"this kernel's BTF is malformed ({e}): nothing read from it"
        if target is None:
            if probe.optional:
                degraded.append(note)
                continue
            return resolved, defines, checked, degraded, note
        resolved.append(ResolvedProbe(probe.kind, target, probe.fn, probe.prog))
        defines.update(probe_defines)
        _add_checked(checked, note)
        if probe.macro:
            defines[probe.macro] = 1
    for off in variant.offsets:
        try:
            val, why = _resolve_offset(kinfo, off)
        except BTFError as e:
            val, why = None, f"this kernel's BTF is malformed ({e}): nothing read from it"
        if val is None:
            return resolved, defines, checked, degraded, why
        defines[off.macro] = val
    return resolved, defines, checked, degraded, ""


BACKENDS = ("bcc", "tracefs")


def choose(kinfo: KernelInfo, capabilities: Sequence[Capability] = CAPABILITIES,
           force: Optional[Dict[str, str]] = None, only: Optional[Sequence[str]] = None,
           backend: str = "bcc") -> Plan:
    """The plan for KINFO.  FORCE pins a capability to one variant (to test a
    fallback on a kernel that has the preferred one): a pinned variant must pass
    the same checks, or the capability is missing (``Plan.forced_failures``).
    ONLY limits the plan to some capabilities (others are left out, not reported missing).
    BACKEND "tracefs" takes only what kprobe_events can place (``Variant.not_tracefs``, ``Probe.tracefs``)."""
    force = force or {}
    choices: Dict[str, Choice] = {}
    for cap in capabilities:
        if only is not None and cap.name not in only:
            continue
        choice = Choice(cap, None, forced=cap.name in force)
        for variant in cap.variants:
            if cap.name in force and variant.name != force[cap.name]:
                continue
            if backend == "tracefs" and variant.not_tracefs:
                choice.rejected.append((variant.name, "not with tracefs: " + variant.not_tracefs))
                continue
            probes, defines, checked, degraded, why = _try_variant(kinfo, variant, choice, backend)
            if why:
                choice.rejected.append((variant.name, why))
                continue
            choice.variant, choice.probes, choice.defines = variant, probes, defines
            choice.checked, choice.degraded = checked, degraded
            break
        choices[cap.name] = choice
    layout, layout_why = resolve_layout(kinfo.btf)
    return Plan(kinfo.release, kinfo.arch, choices, ringbuf=has_ringbuf(kinfo), backend=backend,
                layout=layout, layout_why=layout_why)


def has_ringbuf(kinfo: KernelInfo) -> bool:
    """BPF ring buffer (since Linux commit 457f44363a88 "bpf: Implement BPF ring buffer and verifier
    support for it", v5.8): the helper's symbol is in kallsyms.  Older kernels get the perf buffer."""
    return any(s in kinfo.symbols for s in ("bpf_ringbuf_output", "bpf_ringbuf_reserve", "bpf_ringbuf_output_proto"))

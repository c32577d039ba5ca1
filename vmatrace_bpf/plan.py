"""The attach plan: which kernel functions and tracepoints each capability uses here.

ONE table (``CAPABILITIES``) lists, for every capability, the kernel variants
in order of preference.  The plan for a kernel is, per capability, the first
variant whose probe targets this kernel really has (kallsyms + ftrace's
available_filter_functions, GCC clones such as ``.isra.0`` included) and whose
private struct offsets BTF can give.  Nothing else in vmabpf branches on the
kernel: the BPF programs see the chosen variant as ``-D`` macros.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .kernel import KernelInfo


@dataclass(frozen=True)
class Probe:
    """One attach point.  KIND is kprobe, kretprobe or tracepoint.

    For kprobes, CANDIDATES are function names tried in order (the first one
    traceable here wins, clones included); FN is the BPF function to attach.
    For tracepoints, CANDIDATES holds "category:event".
    """

    kind: str
    candidates: Tuple[str, ...]
    fn: str
    optional: bool = False  # the variant works without it, knowing less
    macro: str = ""  # defined (=1) for the BPF program when this probe is attached


@dataclass(frozen=True)
class Offset:
    """A struct member offset BPF needs that the kernel headers do not give."""

    macro: str
    struct: str
    member: str


@dataclass(frozen=True)
class Variant:
    name: str
    macro: str
    probes: Tuple[Probe, ...]
    note: str
    offsets: Tuple[Offset, ...] = ()


@dataclass(frozen=True)
class Capability:
    name: str
    what: str
    variants: Tuple[Variant, ...]
    # What to tell a user when no variant fits.
    missing_hint: str


def _kp(fn_entry: str, fn_ret: Optional[str], *cands: str) -> Tuple[Probe, ...]:
    out = [Probe("kprobe", tuple(cands), fn_entry)]
    if fn_ret:
        out.append(Probe("kretprobe", tuple(cands), fn_ret))
    return tuple(out)


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

CAPABILITIES: Tuple[Capability, ...] = (
    Capability(
        "prctl", "names set with prctl(PR_SET_VMA_ANON_NAME) and their result",
        (
            Variant("syscall-tracepoints", "PRCTL_TRACEPOINT",
                    (Probe("tracepoint", ("syscalls:sys_enter_prctl",), "tp_prctl_enter"),
                     Probe("tracepoint", ("syscalls:sys_exit_prctl",), "tp_prctl_exit")),
                    "syscall tracepoints (CONFIG_FTRACE_SYSCALLS)"),
            Variant("syscall-kprobe", "PRCTL_KPROBE",
                    _kp("kp_prctl_enter", "kr_prctl_exit", "@syscall:prctl"),
                    "kprobe on the arch's prctl syscall wrapper (pt_regs-based, 4.17+)"),
        ),
        "enable CONFIG_FTRACE_SYSCALLS (or kprobes on the prctl syscall)"),
    Capability(
        "merge", "VMA merge attempts, outcome and why a merge failed",
        (
            Variant("vma_merge", "MERGE_VMA_MERGE",
                    _kp("kp_vma_merge", "kr_vma_merge", "vma_merge")
                    + (Probe("kprobe", ("can_vma_merge_before",), "kp_can_merge_before", optional=True),),
                    "vma_merge(mm, prev, addr, end, vm_flags, anon_vma, file, pgoff, policy, uffd_ctx, anon_name): "
                    "up to 6.11; the name (arg 11) was added in 5.17"),
            Variant("vma_merge_struct", "MERGE_VMG",
                    _kp("kp_vmg_new", "kr_vmg_new", "vma_merge_new_range")
                    + _kp("kp_vmg_existing", "kr_vmg_existing", "vma_merge_existing_range", "vma_modify"),
                    "struct vma_merge_struct, 6.12+ (commit 'mm: introduce vma_merge_struct'); "
                    "vma_merge_existing_range is usually inlined into vma_modify",
                    _VMG_OFFSETS),
        ),
        "no known merge entry point (vma_merge / vma_merge_new_range) is traceable"),
    Capability(
        "split", "VMA splits and the name refcount after them",
        (
            Variant("__split_vma", "SPLIT_PROBE", _kp("kp_split", "kr_split", "__split_vma", "split_vma"),
                    "__split_vma(mm|vmi, vma, addr, new_below): vma is argument 2 in every version"),
        ),
        "__split_vma and split_vma are both inlined or notrace"),
    Capability(
        "fork", "fork(): dup_mmap latency, map_count, child pid",
        (
            Variant("dup_mmap", "FORK_DUP_MMAP",
                    _kp("kp_dup_mmap", "kr_dup_mmap", "dup_mmap")
                    + (Probe("tracepoint", ("sched:sched_process_fork",), "tp_sched_fork"),),
                    "dup_mmap(mm, oldmm): static in kernel/fork.c (often inlined), global in mm/mmap.c from 6.16"),
            Variant("uprobe_dup_mmap-window", "FORK_UPROBE_WINDOW",
                    _kp("kp_dup_mmap_start", None, "uprobe_start_dup_mmap")
                    + _kp("kp_dup_mmap_end", None, "uprobe_end_dup_mmap")
                    + (Probe("tracepoint", ("sched:sched_process_fork",), "tp_sched_fork"),),
                    "dup_mmap inlined: the uprobe_start_dup_mmap()..uprobe_end_dup_mmap() calls bracket it"),
        ),
        "dup_mmap is inlined and the uprobe_*_dup_mmap bracket is missing (CONFIG_UPROBES?)"),
    Capability(
        "vma_dup", "vm_area_dup(): name refcount increments in fork and split",
        (
            Variant("vm_area_dup-fexit", "VMA_DUP_KRETFUNC",
                    (Probe("kretfunc", ("vm_area_dup",), "kretfunc__vmlinux__vm_area_dup"),),
                    "fexit (BPF trampoline, x86_64 with BTF): far cheaper than a kretprobe on a function "
                    "called once per VMA in fork"),
            Variant("vm_area_dup", "VMA_DUP_PROBE", (Probe("kretprobe", ("vm_area_dup",), "kr_vm_area_dup"),),
                    "vm_area_dup() copies the anon_name pointer and takes a reference (5.17+)"),
        ),
        "vm_area_dup is not traceable"),
    Capability(
        "name_alloc", "anon_vma_name objects allocated",
        (
            Variant("anon_vma_name_alloc", "NAME_ALLOC_PROBE",
                    (Probe("kretprobe", ("anon_vma_name_alloc",), "kr_name_alloc"),),
                    "anon_vma_name_alloc(name), mm/madvise.c, 5.17+"),
        ),
        "anon_vma_name_alloc is not traceable (CONFIG_ANON_VMA_NAME off?)"),
    Capability(
        "name_free", "anon_vma_name objects freed (last reference dropped)",
        (
            Variant("anon_vma_name_free", "NAME_FREE_PROBE",
                    (Probe("kprobe", ("anon_vma_name_free",), "kp_name_free"),
                     Probe("tracepoint", ("kmem:kfree",), "tp_kfree", optional=True, macro="NAME_FREE_KFREE")),
                    "anon_vma_name_free(kref), the kref release function, 5.17+; the compiler may also inline it "
                    "into callers in mm/madvise.c (7.x: set_anon_vma_name), so kfree() of a name object seen "
                    "allocated is watched too"),
        ),
        "anon_vma_name_free is not traceable (CONFIG_ANON_VMA_NAME off?)"),
)

CAPABILITY_NAMES = tuple(c.name for c in CAPABILITIES)


@dataclass
class ResolvedProbe:
    kind: str
    target: str  # the real symbol (maybe a clone) or "category:event"
    fn: str


@dataclass
class Choice:
    capability: Capability
    variant: Optional[Variant]
    probes: List[ResolvedProbe] = field(default_factory=list)
    defines: Dict[str, int] = field(default_factory=dict)
    rejected: List[Tuple[str, str]] = field(default_factory=list)  # (variant, why)
    degraded: List[str] = field(default_factory=list)  # optional probes missing from the chosen variant

    @property
    def ok(self) -> bool:
        return self.variant is not None

    def to_json(self) -> dict:
        return {
            "capability": self.capability.name,
            "variant": self.variant.name if self.variant else None,
            "probes": [{"kind": p.kind, "target": p.target} for p in self.probes],
            "defines": dict(self.defines),
            "note": self.variant.note if self.variant else self.capability.missing_hint,
            "rejected": [{"variant": v, "why": w} for v, w in self.rejected],
            "degraded": list(self.degraded),
        }


@dataclass
class Plan:
    release: str
    arch: str
    choices: Dict[str, Choice]

    def defines(self) -> Dict[str, int]:
        out: Dict[str, int] = {}
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

    def to_json(self) -> dict:
        return {"release": self.release, "arch": self.arch,
                "capabilities": [ch.to_json() for ch in self.choices.values()]}


def _resolve_probe(kinfo: KernelInfo, probe: Probe) -> Tuple[Optional[str], str]:
    """(target, "") when the probe can attach here, else (None, why)."""
    if probe.kind in ("kfunc", "kretfunc"):
        if not kinfo.kfunc_capable:
            return None, ("no fentry/fexit here (needs x86_64, BTF and BPF trampolines; bcc's "
                          "support_kfunc() is x86_64-only)")
        for cand in probe.candidates:
            if kinfo.has_btf_func(cand) and kinfo.traceable(cand):
                return cand, ""
        return None, f"BTF has no traceable function {' / '.join(probe.candidates)}"
    if probe.kind == "tracepoint":
        for cand in probe.candidates:
            cat, event = cand.split(":", 1)
            if kinfo.has_tracepoint(cat, event):
                return cand, ""
        return None, f"no tracepoint {', '.join(probe.candidates)}"
    tried = []
    for cand in probe.candidates:
        if cand.startswith("@syscall:"):
            sym = kinfo.syscall_symbol(cand.split(":", 1)[1])
            tried.append(f"the {cand.split(':', 1)[1]} syscall wrapper")
        else:
            sym = kinfo.find_function(cand)
            tried.append(cand)
        if sym:
            return sym, ""
    return None, "not traceable here: " + " / ".join(tried) + " (inlined, notrace or absent)"


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


def choose(kinfo: KernelInfo, capabilities: Sequence[Capability] = CAPABILITIES,
           force: Optional[Dict[str, str]] = None, only: Optional[Sequence[str]] = None) -> Plan:
    """The plan for KINFO.  FORCE pins a capability to one variant (to test a
    fallback on a kernel that has the preferred one); ONLY limits the plan to
    some capabilities (others are left out, not reported missing)."""
    force = force or {}
    choices: Dict[str, Choice] = {}
    for cap in capabilities:
        if only is not None and cap.name not in only:
            continue
        choice = Choice(cap, None)
        for variant in cap.variants:
            if cap.name in force and variant.name != force[cap.name]:
                continue
            resolved, defines, why = [], {}, ""  # type: List[ResolvedProbe], Dict[str, int], str
            for probe in variant.probes:
                target, why = _resolve_probe(kinfo, probe)
                if target is None and probe.optional:
                    choice.degraded.append(why)
                    why = ""
                    continue
                if target is None:
                    break
                resolved.append(ResolvedProbe(probe.kind, target, probe.fn))
                if probe.macro:
                    defines[probe.macro] = 1
            if not why:
                for off in variant.offsets:
                    val, why = _resolve_offset(kinfo, off)
                    if val is None:
                        break
                    defines[off.macro] = val
            if why:
                choice.rejected.append((variant.name, why))
                choice.degraded = []
                continue
            choice.variant, choice.probes, choice.defines = variant, resolved, defines
            break
        choices[cap.name] = choice
    return Plan(kinfo.release, kinfo.arch, choices)

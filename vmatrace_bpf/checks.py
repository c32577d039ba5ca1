"""Can vmabpf trace here, and through which attach points?  (What `vmabpf doctor` prints.)

Each check is a small function returning a Check; ``diagnose`` runs them all
and adds the attach plan.  ``blocking_problem`` is what the session calls
before loading BPF, so that every command fails with the same words as the doctor.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import mmap
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from .kernel import KernelInfo
from .loader import bcc_info, support_kfunc
from .plan import Plan, choose
from .workload import set_name  # the one prctl(PR_SET_VMA, ...) wrapper on the Python side

CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39


@dataclass
class Check:
    name: str
    ok: Optional[bool]  # None: could not tell / informational
    detail: str
    fix: str = ""
    blocking: bool = False  # watch cannot run while this fails

    def to_json(self) -> dict:
        return {"check": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix or None,
                "blocking": self.blocking}


@dataclass
class Report:
    release: str
    arch: str
    checks: List[Check]
    plan: Plan
    bcc: Dict[str, Optional[str]] = field(default_factory=dict)

    @property
    def can_watch(self) -> bool:
        return not any(c.blocking and c.ok is False for c in self.checks)

    def to_json(self) -> dict:
        return {"release": self.release, "arch": self.arch, "can_watch": self.can_watch,
                "bcc": self.bcc, "checks": [c.to_json() for c in self.checks], "plan": self.plan.to_json()}


# -- individual checks -------------------------------------------------------------
def live_anon_name_test() -> Optional[int]:
    """Name a scratch page with prctl: 0 if naming works, else the errno (EINVAL: compiled out)."""
    buf = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        return -set_name(addr, mmap.PAGESIZE, b"vmabpf-doctor")
    except (OSError, TypeError, ValueError, BufferError):
        return None
    finally:
        try:
            buf.close()
        except BufferError:
            pass


def check_anon_names(kinfo: KernelInfo, live: bool) -> Check:
    cfg = kinfo.config_enabled("ANON_VMA_NAME")
    parts = []
    if cfg is not None:
        parts.append(f"CONFIG_ANON_VMA_NAME={'y' if cfg else 'not set'}")
    ok = cfg
    if live:
        err = live_anon_name_test()
        if err == 0:
            parts.append("prctl(PR_SET_VMA_ANON_NAME) works")
            ok = True
        elif err is not None:
            parts.append(f"prctl(PR_SET_VMA_ANON_NAME) fails with {_errno.errorcode.get(err, err)}"
                         + (" (naming compiled out)" if err == _errno.EINVAL else ""))
            ok = False
    variant = android_name_variant(kinfo)
    if variant:
        parts.append(variant)
    return Check("anon VMA names", ok, "; ".join(parts) or "cannot tell (no kernel config, not a live kernel)",
                 "use a kernel built with CONFIG_ANON_VMA_NAME=y (5.17+, or an Android kernel)", blocking=True)


def android_name_variant(kinfo: KernelInfo) -> str:
    """Pre-upstream Android kernels keep a user pointer (const char __user *) instead of struct anon_vma_name."""
    btf = kinfo.btf
    if not btf:
        return ""
    desc = btf.member_type_desc("vm_area_struct", "anon_name")
    if desc and desc.startswith("ptr") and "anon_vma_name" not in desc:
        return ("pre-upstream Android variant: vm_area_struct.anon_name is a user pointer (no struct anon_vma_name, "
                "no refcount): names and merges can be traced, name objects and refcount sharing cannot")
    if desc is None and btf.struct_id("anon_vma_name") is None:
        return "BTF has no vm_area_struct.anon_name (naming compiled out?)"
    return ""


def check_root() -> Check:
    caps = 0
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    caps = int(line.split()[1], 16)
    except OSError:
        pass
    have = [n for n, bit in (("CAP_SYS_ADMIN", CAP_SYS_ADMIN), ("CAP_BPF", CAP_BPF), ("CAP_PERFMON", CAP_PERFMON))
            if caps >> bit & 1]
    ok = os.geteuid() == 0 or "CAP_SYS_ADMIN" in have or {"CAP_BPF", "CAP_PERFMON"} <= set(have)
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    return Check("privileges", ok, f"{who}; capabilities: {', '.join(have) or 'none'}",
                 "run as root (sudo vmabpf ...), or with CAP_BPF and CAP_PERFMON", blocking=True)


def check_kprobes(kinfo: KernelInfo) -> Check:
    cfg = kinfo.config_enabled("KPROBES")
    live_ok = None
    if kinfo.files.live and kinfo.files.tracefs:
        live_ok = os.path.exists(os.path.join(kinfo.files.tracefs, "kprobe_events"))
    ok = live_ok if live_ok is not None else cfg
    if ok is None and kinfo.files.live:
        ok = os.path.exists("/sys/bus/event_source/devices/kprobe")
    detail = {True: "available", False: "not available", None: "cannot tell"}[ok]
    if cfg is not None:
        detail += f" (CONFIG_KPROBES={'y' if cfg else 'not set'})"
    return Check("kprobes", ok, detail, "use a kernel with CONFIG_KPROBES=y and CONFIG_KPROBE_EVENTS=y", blocking=True)


def check_kallsyms(kinfo: KernelInfo) -> Check:
    n = len(kinfo.symbols)
    if not n:
        return Check("kallsyms", False, "cannot read /proc/kallsyms", "mount proc; run as root", blocking=True)
    return Check("kallsyms", True, f"{n} symbols" + ("" if kinfo.kallsyms_addresses_visible or not kinfo.files.live
                                                      else " (addresses hidden: kptr_restrict; run as root)"))


def check_tracepoints(kinfo: KernelInfo) -> Check:
    ok = kinfo.has_tracepoint("syscalls", "sys_enter_prctl")
    return Check("syscall tracepoints", ok, "syscalls:sys_enter_prctl " + ("present" if ok else "missing"),
                 "" if ok else "CONFIG_FTRACE_SYSCALLS is off: prctl falls back to a kprobe on the syscall wrapper")


def check_btf(kinfo: KernelInfo) -> Check:
    ok = kinfo.btf is not None
    return Check("BTF", ok, (kinfo.files.btf or "") + (" present" if ok else " missing"),
                 "" if ok else "CONFIG_DEBUG_INFO_BTF=y is needed for struct vma_merge_struct (6.12+) and fentry; "
                 "without it the program is compiled against the kernel headers (its compile takes about twice as long)")


def check_fentry(kinfo: KernelInfo, bcc_ok: bool) -> Check:
    why = kinfo.kfunc_missing
    if why:
        hint = "CONFIG_DEBUG_INFO_BTF=y" if kinfo.btf is None else ""
        return Check("fentry", False, f"not usable: {why} (kprobes are used)", hint)
    if not bcc_ok:
        return Check("fentry", None, "cannot tell without bcc")
    if kinfo.arch == "x86_64" and not support_kfunc():
        return Check("fentry", False, "bcc reports no fentry support (kprobes are used)")
    # bcc's support_kfunc() says no on every arch but x86_64 although the kernel attaches (kernel.py)
    return Check("fentry", True, "the kernel attaches BPF trampolines to kernel functions")


def untrusted_dir(path: str) -> str:
    """Why root should not compile against the headers in directory PATH ('' when it may): bcc
    includes them into a program loaded into the kernel, so they must be root's and not
    writable by others (an empty /tmp/kheaders-<release> made by another user is a trap)."""
    try:
        st = os.stat(path)
    except OSError as e:
        return f"{path}: {e.strerror or e}"
    if not os.path.isdir(path):
        return f"{path} is not a directory"
    if st.st_uid != 0:
        return f"{path} is owned by uid {st.st_uid}, not root"
    if st.st_mode & 0o022:
        return f"{path} is writable by {'others' if st.st_mode & 0o002 else 'its group'}"
    if not os.listdir(path):
        return f"{path} is empty"
    return ""


def check_headers(kinfo: KernelInfo) -> Check:
    """Where bcc will find kernel headers, in its own order."""
    env = os.environ.get("BCC_KERNEL_SOURCE")
    if env:
        why = untrusted_dir(env)
        return Check("kernel headers", not why, f"BCC_KERNEL_SOURCE={env}" + (f": {why}" if why else ""),
                     "BCC_KERNEL_SOURCE must name an unpacked header tree owned by root and writable only by it"
                     if why else "", blocking=True)
    if not kinfo.files.live:
        ik = kinfo.config_enabled("IKHEADERS")
        return Check("kernel headers", ik, f"CONFIG_IKHEADERS={'y' if ik else 'not set'}" if ik is not None
                     else "cannot tell", blocking=False)
    build = f"/lib/modules/{kinfo.release}/build"
    if os.path.isdir(build):
        return Check("kernel headers", True, build, blocking=True)
    # bcc's next place: kheaders it unpacked earlier into $TMPDIR/kheaders-<release>, used as found,
    # before /sys/kernel/kheaders.tar.xz is looked at
    tmp = os.path.join(os.environ.get("TMPDIR") or "/tmp", f"kheaders-{kinfo.release}")
    if os.path.lexists(tmp):
        why = untrusted_dir(tmp)
        if why:
            return Check("kernel headers", False, f"{tmp} is not used: {why}",
                         f"remove {tmp} (bcc would compile against it), then install linux-headers-{kinfo.release}, "
                         "'modprobe kheaders' or set BCC_KERNEL_SOURCE", blocking=True)
        return Check("kernel headers", True, tmp, blocking=True)
    if os.path.exists("/sys/kernel/kheaders.tar.xz"):
        return Check("kernel headers", True, "/sys/kernel/kheaders.tar.xz (CONFIG_IKHEADERS)", blocking=True)
    return Check("kernel headers", False, f"none: no {build}, no /sys/kernel/kheaders.tar.xz",
                 f"install linux-headers-{kinfo.release}, or 'modprobe kheaders' (CONFIG_IKHEADERS), "
                 "or set BCC_KERNEL_SOURCE", blocking=True)


def check_plan(plan: Plan) -> Check:
    ok = [n for n, c in plan.choices.items() if c.ok]
    missing = plan.missing
    detail = f"{len(ok)}/{len(plan.choices)} capabilities have an attach point"
    if missing:
        detail += f"; missing: {', '.join(missing)}"
    return Check("attach points", bool(ok), detail,
                 "; ".join(f"{m}: {plan.choices[m].capability.missing_hint} ({plan.choices[m].why_missing()})"
                           for m in missing), blocking=True)


def diagnose(kinfo: KernelInfo, live: bool = True, plan: Optional[Plan] = None, fentry: bool = True) -> Report:
    plan = plan if plan is not None else choose(kinfo)
    checks = [check_anon_names(kinfo, live), check_kprobes(kinfo), check_kallsyms(kinfo), check_tracepoints(kinfo),
              check_btf(kinfo), check_headers(kinfo)]
    bcc = bcc_info() if live else {}
    if live:
        checks.insert(0, check_root())
        checks.append(Check("bcc", bcc["error"] is None,
                            f"{bcc['version']} from {bcc['path']}" if bcc["error"] is None else "missing",
                            bcc["error"] or "", blocking=True))
    if fentry:
        checks.append(check_fentry(kinfo, bool(bcc) and bcc.get("error") is None))
    checks.append(check_plan(plan))
    return Report(kinfo.release, kinfo.arch, checks, plan, bcc)


def blocking_problem(kinfo: KernelInfo, plan: Optional[Plan] = None) -> Optional[str]:
    """None when tracing can start here, else one line saying what is wrong.  PLAN: KINFO's default plan
    when the caller has it already (planning takes ~0.25 s under TCG)."""
    rep = diagnose(kinfo, plan=plan, fentry=False)  # fentry's check blocks nothing, and asking bcc costs ~0.2 s
    bad = [c for c in rep.checks if c.blocking and c.ok is False]
    if not bad:
        return None
    return "; ".join(f"{c.name}: {c.detail}" + (f" ({c.fix})" if c.fix else "") for c in bad)

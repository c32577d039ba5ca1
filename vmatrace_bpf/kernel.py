"""What the running kernel offers: release, arch, config, symbols, BTF, tracepoints.

Pure reads, cached.  Every input is a path that can be pointed at a saved copy,
so the host tests feed it the kallsyms / available_filter_functions / BTF /
config files captured from the guest kernels (``KernelInfo.from_files``).
"""

from __future__ import annotations

import gzip
import os
import platform
import re
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Dict, List, Optional, Set

from .btf import BTF, BTFError
from .errors import VmabpfError
from .inputs import lines, open_regular

TRACEFS_ROOTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

# Suffixes GCC gives to specialised copies of a static function.  The probe
# goes on the clone; ".cold" is the unlikely-path tail, not an entry point.
_CLONE_RE = re.compile(r"^(?P<base>[^.]+)(?P<suffix>(\.(isra|constprop|part|lto_priv|llvm)\.\d+)+)$")


def machine_to_arch(machine: str) -> str:
    return {"aarch64": "arm64", "arm64": "arm64", "x86_64": "x86_64", "amd64": "x86_64"}.get(machine, machine)


@dataclass
class KernelFiles:
    """Where each fact is read from.  None means 'not available'."""

    release: str
    arch: str
    kallsyms: Optional[str] = "/proc/kallsyms"
    filter_functions: Optional[str] = None  # found under tracefs when None and live
    btf: Optional[str] = "/sys/kernel/btf/vmlinux"
    config: Optional[str] = None
    tracefs: Optional[str] = None
    live: bool = True


@dataclass
class KernelInfo:
    files: KernelFiles
    _cache: Dict[str, object] = field(default_factory=dict)

    # -- construction -------------------------------------------------------
    @classmethod
    def live(cls) -> "KernelInfo":
        uname = os.uname()
        tracefs = next((t for t in TRACEFS_ROOTS if os.path.exists(os.path.join(t, "events"))), None)
        config = None
        for cand in ("/proc/config.gz", f"/boot/config-{uname.release}"):
            if os.access(cand, os.R_OK):
                config = cand
                break
        ff = os.path.join(tracefs, "available_filter_functions") if tracefs else None
        return cls(KernelFiles(release=uname.release, arch=machine_to_arch(uname.machine),
                               filter_functions=ff, config=config, tracefs=tracefs, live=True))

    @classmethod
    def from_files(cls, release: str, arch: str, kallsyms: Optional[str], filter_functions: Optional[str] = None,
                   btf: Optional[str] = None, config: Optional[str] = None) -> "KernelInfo":
        return cls(KernelFiles(release=release, arch=arch, kallsyms=kallsyms, filter_functions=filter_functions,
                               btf=btf, config=config, tracefs=None, live=False))

    @property
    def release(self) -> str:
        return self.files.release

    @property
    def arch(self) -> str:
        return self.files.arch

    # -- kallsyms -----------------------------------------------------------
    @cached_property
    def symbols(self) -> Dict[str, str]:
        """symbol name -> kallsyms type letter (T, t, D, ...); empty if unreadable."""
        out: Dict[str, str] = {}
        path = self.files.kallsyms
        if not path:
            return out
        try:
            with open(path, "r", errors="replace") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3 and not (len(parts) > 3 and parts[3].startswith("[")):
                        out.setdefault(parts[2], parts[1])
        except OSError:
            pass
        return out

    @cached_property
    def kallsyms_addresses_visible(self) -> bool:
        """False when kptr_restrict hides addresses (non-root reads all zeros)."""
        path = self.files.kallsyms
        try:
            with open(path or "", "r") as f:
                for line in f:
                    return int(line.split()[0], 16) != 0
        except (OSError, ValueError, IndexError):
            pass
        return False

    @cached_property
    def _text_clones(self) -> Dict[str, List[str]]:
        clones: Dict[str, List[str]] = {}
        for name, typ in self.symbols.items():
            if "." not in name or typ not in "tT":  # most names: no regex (10x faster over a full kallsyms)
                continue
            m = _CLONE_RE.match(name)
            if m:
                clones.setdefault(m.group("base"), []).append(name)
        return clones

    # -- ftrace --------------------------------------------------------------
    @cached_property
    def filter_functions(self) -> Optional[Set[str]]:
        """Functions kprobes/fentry may attach to, or None if the list cannot be read."""
        path = self.files.filter_functions
        if not path:
            return None
        try:
            with open(path, "r", errors="replace") as f:
                return {line.split()[0] for line in f if line.strip()}
        except OSError:
            return None

    # -- BTF -------------------------------------------------------------------
    @cached_property
    def btf(self) -> Optional[BTF]:
        if not self.files.btf:
            return None
        try:
            return BTF.from_file(self.files.btf)
        except (OSError, BTFError):
            return None

    # -- config ----------------------------------------------------------------
    @cached_property
    def config(self) -> Optional[Dict[str, str]]:
        path = self.files.config
        if not path:
            return None
        try:
            with open(path, "rb") as raw:
                gz = raw.read(2) == b"\x1f\x8b"  # /proc/config.gz, or a saved copy by any name
            opener = gzip.open if gz else open
            with opener(path, "rt", errors="replace") as f:
                cfg = {}
                for line in f:
                    line = line.strip()
                    if line.startswith("CONFIG_") and "=" in line:
                        k, v = line.split("=", 1)
                        cfg[k[len("CONFIG_"):]] = v
                return cfg
        except (OSError, EOFError, zlib.error):
            return None

    def config_enabled(self, name: str) -> Optional[bool]:
        """True/False from the kernel config, None when the config cannot be read."""
        if self.config is None:
            return None
        return self.config.get(name) in ("y", "m")

    # -- function lookups ------------------------------------------------------
    def text_symbol_names(self, base: str) -> List[str]:
        """The names under which function BASE can be probed: itself and its GCC clones."""
        names = []
        if self.symbols.get(base, "") in ("t", "T"):
            names.append(base)
        names.extend(sorted(self._text_clones.get(base, [])))
        return names

    def traceable(self, symbol: str) -> bool:
        """kprobe-able: a text symbol that ftrace does not exclude (notrace, inline)."""
        if self.symbols.get(symbol, "") not in ("t", "T"):
            return False
        ff = self.filter_functions
        return ff is None or symbol in ff

    @staticmethod
    def is_clone(symbol: str) -> bool:
        """A GCC clone (.isra/.constprop/.part/...): its calling convention is not the source's."""
        return bool(_CLONE_RE.match(symbol))

    def find_function(self, base: str) -> Optional[str]:
        """First probe-able name for function BASE (exact name preferred over a clone)."""
        for name in self.text_symbol_names(base):
            if self.traceable(name):
                return name
        return None

    @property
    def kfunc_missing(self) -> str:
        """Why fentry/fexit cannot attach to a kernel function here, from this kernel's files ('' when it can).

        The kernel needs BTF (the program's attach target), BPF trampolines (bpf_trampoline_link_prog) and a way
        for ftrace to call a trampoline from the traced function.  x86_64 has had that since 5.5 (commit
        fec56f5890d9 "bpf: Introduce BPF trampoline").  arm64 got BPF trampolines in v6.0 (commit efc9909fdce0
        "bpf, arm64: Add bpf trampoline for arm64") but can attach one to a kernel function only since v6.4
        (commit 2aa6ac03516d "arm64: ftrace: Add direct call support"): CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS.
        bcc's BPF.support_kfunc() answers False on every arch but x86_64, yet its attach_kfunc() attaches
        wherever the kernel can (proven in the arm64 6.6 and 6.12 guests), so bcc is not asked."""
        if self.btf is None:
            return "no kernel BTF"
        if "bpf_trampoline_link_prog" not in self.symbols:
            return "no BPF trampolines (bpf_trampoline_link_prog is not in kallsyms)"
        if self.arch == "x86_64":
            return ""
        if self.arch == "arm64":
            direct = self.config_enabled("DYNAMIC_FTRACE_WITH_DIRECT_CALLS")
            if direct:
                return ""
            if direct is None:
                return ("arm64 attaches a BPF trampoline to a kernel function only with "
                        "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS (v6.4+) and this kernel's config cannot be read")
            return "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS is not set (arm64 needs it for fentry, v6.4+)"
        return f"fentry/fexit on {self.arch} is not known to vmabpf"

    @property
    def kfunc_capable(self) -> bool:
        return not self.kfunc_missing

    def has_btf_func(self, name: str) -> bool:
        return bool(self.btf and self.btf.has_func(name))

    # -- tracepoints ---------------------------------------------------------------
    def has_tracepoint(self, category: str, event: str) -> bool:
        if self.files.live and self.files.tracefs:
            return os.path.isdir(os.path.join(self.files.tracefs, "events", category, event))
        # Saved files: the tracepoint's metadata symbols are in kallsyms.
        if category == "syscalls":
            m = re.match(r"sys_(enter|exit)_(\w+)$", event)
            return bool(m) and f"event_{m.group(1)}__{m.group(2)}" in self.symbols
        return f"__tracepoint_{event}" in self.symbols or f"__traceiter_{event}" in self.symbols

    # -- misc ------------------------------------------------------------------
    def syscall_symbol(self, call: str) -> Optional[str]:
        """The traceable pt_regs wrapper of 64-bit syscall CALL on this arch, or None.

        Only the wrappers that take the user's registers as their one argument: ``sys_*`` and
        ``__se_sys_*`` take the syscall's own arguments, and ``__ia32_sys_*`` serves 32-bit tasks."""
        prefix = {"x86_64": "__x64_sys_", "arm64": "__arm64_sys_"}.get(self.arch)
        if prefix and self.traceable(prefix + call):
            return prefix + call
        return None


_KALLSYMS_LINE = re.compile(rb"^[0-9a-fA-F]{1,16} [a-zA-Z?] \S+")


def check_saved_files(files: KernelFiles) -> None:
    """Every saved file named for an offline plan must exist, be a regular file and parse:
    VmabpfError with one line saying which and why (never silently planned without it)."""

    def scan(path: str, what: str, good) -> None:
        with open_regular(path, what) as f:
            seen = 0
            for line in lines(f, path, what, limit=1 << 16):
                if line.strip():
                    if not good(line):
                        shown = line[:40].rstrip(b"\n").decode("utf-8", "surrogateescape")
                        raise VmabpfError(f"{path}: line {seen + 1} is not {what}: '{shown}'")
                    seen += 1
            if not seen:
                raise VmabpfError(f"{path} is empty: not {what}")

    if files.kallsyms:
        scan(files.kallsyms, "a kallsyms file ('address type name' lines)",
             lambda ln: _KALLSYMS_LINE.match(ln) is not None)
    if files.filter_functions:
        scan(files.filter_functions, "an available_filter_functions file",
             lambda ln: re.match(rb"^[A-Za-z_.$][\w.$]*(\s|$)", ln) is not None)
    if files.btf:
        try:
            BTF.from_file(files.btf)
        except BTFError as e:
            raise VmabpfError(f"{files.btf}: not usable BTF: {e}") from None
    if files.config:
        path = files.config
        try:
            with open_regular(path, "a kernel config") as raw:
                gz = raw.read(2) == b"\x1f\x8b"
                raw.seek(0)
                f = gzip.GzipFile(fileobj=raw) if gz else raw
                n = 0
                for line in lines(f, path, "a kernel config", limit=1 << 16):
                    n += line.startswith(b"CONFIG_") or line.startswith(b"# CONFIG_")
            if not n:
                raise VmabpfError(f"{path}: no CONFIG_ line: not a kernel config")
        except (EOFError, OSError, zlib.error) as e:
            raise VmabpfError(f"{path}: truncated or corrupt gzip ({e})") from None


def host_machine() -> str:
    return machine_to_arch(platform.machine())

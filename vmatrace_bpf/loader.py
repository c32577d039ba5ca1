"""Compile and attach the BPF programs of a plan; deliver decoded events.

The only module that imports bcc.  bcc comes from the distribution
(python3-bpfcc); from a virtualenv it is found in the system's dist-packages.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import sys
import tempfile
from typing import Callable, Dict, Iterable, List, Optional

from . import events
from .errors import VmabpfError
from .kernel import KernelInfo
from .plan import Plan

BCC_INSTALL_HINT = ("install bcc from the distribution: apt-get install python3-bpfcc "
                    "(the PyPI package named 'bcc' is unrelated)")


class BccMissing(VmabpfError):
    pass


_bcc = None


def import_bcc():
    """The bcc module, or BccMissing with the install command."""
    global _bcc
    if _bcc is not None:
        return _bcc
    try:
        import bcc  # noqa: F401
        mod = sys.modules["bcc"]
    except ImportError:
        mod = None
    if mod is None or not hasattr(mod, "BPF"):
        # A virtualenv does not see the distribution's packages: look there.
        sys.modules.pop("bcc", None)
        for d in sorted(glob.glob("/usr/lib/python3/dist-packages")) + sorted(
                glob.glob("/usr/lib/python3*/site-packages")):
            if os.path.isdir(os.path.join(d, "bcc")):
                sys.path.append(d)
                try:
                    import bcc  # noqa: F401,F811
                    mod = sys.modules["bcc"]
                except ImportError:
                    mod = None
                finally:
                    sys.path.remove(d)
                if mod is not None and hasattr(mod, "BPF"):
                    break
    if mod is None or not hasattr(mod, "BPF"):
        raise BccMissing("bcc (BPF Compiler Collection) not found: " + BCC_INSTALL_HINT)
    _bcc = mod
    return mod


def bcc_info() -> Dict[str, Optional[str]]:
    """{"version", "path", "error"} without raising."""
    try:
        mod = import_bcc()
    except BccMissing as e:
        return {"version": None, "path": None, "error": str(e)}
    except Exception as e:  # libbcc.so missing or broken: bcc's import raises OSError etc.
        return {"version": None, "path": None, "error": f"bcc failed to load: {e}"}
    return {"version": getattr(mod, "__version__", "unknown"), "path": os.path.dirname(mod.__file__),
            "error": None}


def support_kfunc() -> bool:
    try:
        return bool(import_bcc().BPF.support_kfunc())
    except Exception:
        return False


def program_source() -> str:
    with open(os.path.join(events.bpf_dir(), "vmatrace.bpf.c")) as f:
        return f.read()


def build_defines(plan: Plan, kinfo: KernelInfo, pids: Iterable[int] = (), tid: Optional[int] = None,
                  children: bool = False, filter_pids: Optional[bool] = None, ringbuf: Optional[bool] = None,
                  ringbuf_pages: int = 64) -> Dict[str, int]:
    d = plan.defines()
    d["VT_ARCH_X86_64" if kinfo.arch == "x86_64" else "VT_ARCH_ARM64"] = 1
    if filter_pids is None:
        filter_pids = bool(list(pids))
    if filter_pids:
        d["FILTER_PIDS"] = 1
    else:
        d["VT_SELF_TGID"] = os.getpid()
    if tid:
        d["FILTER_TID"] = int(tid)
    if children:
        d["FOLLOW_CHILDREN"] = 1
    if ringbuf is None:
        ringbuf = plan.ringbuf
    if ringbuf:
        d["USE_RINGBUF"] = 1
        d["RINGBUF_PAGES"] = ringbuf_pages
    return d


def cflags(defines: Dict[str, int]) -> List[str]:
    """The compiler flags of the program.  bcc passes ``-g -gdwarf-4`` before these (for the program's
    own BTF); ``-g0`` turns that off: nothing here uses the program's BTF (tables are typed by bcc's
    rewriter, fentry attaches by the kernel's BTF), and debug info was ~12% of the compile (x86_64 6.12
    guest, docs/fork-cost.md "Start time")."""
    return [f"-I{events.bpf_dir()}"] + [f"-D{k}={v}" for k, v in sorted(defines.items())] + [
        "-Wno-duplicate-decl-specifier", "-Wno-ignored-attributes", "-Wno-unknown-warning-option", "-g0"]


def ebpf_text(defines: Dict[str, int]) -> str:
    """What --ebpf prints: the program with the plan's macros in front."""
    head = "".join(f"#define {k} {v}\n" for k, v in sorted(defines.items()))
    return f"/* vmabpf: -D flags chosen by the attach plan */\n{head}\n{program_source()}"


def fdinfo(fd: int) -> Dict[str, int]:
    """The numeric fields of /proc/self/fdinfo/FD (a BPF program's: prog_id, run_time_ns, run_cnt, ...)."""
    out: Dict[str, int] = {}
    try:
        with open(f"/proc/self/fdinfo/{int(fd)}") as f:
            for line in f:
                key, _, val = line.partition(":")
                if key == "prog_tag":  # hex, not a number
                    continue
                try:
                    out[key.strip()] = int(val.strip())
                except ValueError:
                    pass
    except OSError:
        pass
    return out


@contextlib.contextmanager
def empty_cwd():
    """Run the block in an empty private directory (mode 0700), then return to the caller's one.

    bcc's first compile of a boot unpacks the kernel's headers with shell commands (system(): modprobe, tar,
    rm -rf) run in the caller's working directory; in a test guest one of them was garbage bytes (its
    shell error seen in session 26), and twice a CI run's checkout, the kernel tests' working directory,
    lost every file not starting with a dot, a deletion no code of ours makes.  Whatever bcc's shell runs
    with a relative path then finds nothing of the user's to touch."""
    back = os.open(".", os.O_RDONLY)
    d = tempfile.mkdtemp(prefix="vmabpf-bcc-")
    try:
        os.chdir(d)
        yield d
    finally:
        os.fchdir(back)
        os.close(back)
        try:
            os.rmdir(d)  # only if empty: what bcc left there stays (and says something)
        except OSError:
            pass


def program_name(kind: str, target: str, fn: str) -> str:
    """The name bcc gives the program of a probe (plan.Probe kind, target, fn): a TRACEPOINT_PROBE's is
    made from its tracepoint, not its C function."""
    return "tracepoint__" + target.replace(":", "__") if kind == "tracepoint" else fn


class Tracer:
    """The loaded programs.  Use as a context manager: exit detaches everything."""

    def __init__(self, plan: Plan, kinfo: KernelInfo, on_event: Callable[[events.Event], None],
                 pids: Iterable[int] = (), tid: Optional[int] = None, children: bool = False,
                 filter_pids: Optional[bool] = None, ringbuf: Optional[bool] = None,
                 extra_defines: Optional[Dict[str, int]] = None):
        self.plan = plan
        self.kinfo = kinfo
        self.on_event = on_event
        self.pids = list(pids)
        self.defines = build_defines(plan, kinfo, self.pids, tid, children, filter_pids, ringbuf)
        self.defines.update(extra_defines or {})
        self.ringbuf = "USE_RINGBUF" in self.defines
        self.lost_perf = 0
        self.undecodable = 0
        self.bpf = None
        self.attached: List[tuple] = []

    def load(self) -> "Tracer":
        """Compile and load the programs (nothing attached yet)."""
        bcc = import_bcc()
        try:
            with empty_cwd():
                self.bpf = bcc.BPF(text=program_source(), cflags=cflags(self.defines))
        except Exception as e:
            raise VmabpfError(f"the BPF program failed to compile or load ({e}); run 'vmabpf doctor' "
                              "to check kernel headers and BPF support") from None
        for pid in self.pids:
            self.watch_pid(pid)
        # bcc attaches TRACEPOINT_PROBE, KFUNC_PROBE and KRETFUNC_PROBE programs while loading;
        # take them off so that attach()/detach() control every probe alike
        self._auto = [("tracepoint", tp.decode(), program_name("tracepoint", tp.decode(), ""))
                      for tp in list(self.bpf.tracepoint_fds)]
        self._auto += [("kfunc", fn.decode(), fn.decode()) for fn in list(self.bpf.kfunc_entry_fds)]
        self._auto += [("kretfunc", fn.decode(), fn.decode()) for fn in list(self.bpf.kfunc_exit_fds)]
        for kind, target, fn in self._auto:
            self._detach_one(kind, target, fn)
        return self

    def attach(self) -> None:
        """Attach every probe of the plan."""
        todo = [(p.kind, p.target, p.program) for p in self.plan.probes() if p.kind in ("kprobe", "kretprobe")]
        todo += self._auto
        for kind, target, fn in todo:
            try:
                if kind == "kprobe":
                    self.bpf.attach_kprobe(event=target, fn_name=fn)
                elif kind == "kretprobe":
                    self.bpf.attach_kretprobe(event=target, fn_name=fn, maxactive=64)
                elif kind == "tracepoint":
                    self.bpf.attach_tracepoint(tp=target, fn_name=fn)
                elif kind == "kfunc":
                    self.bpf.attach_kfunc(fn_name=fn)
                else:
                    self.bpf.attach_kretfunc(fn_name=fn)
            except Exception as e:
                self.close()
                raise VmabpfError(f"attaching {kind} {target} failed: {e}") from None
            self.attached.append((kind, target, fn))

    def _detach_one(self, kind: str, target: str, fn: str) -> None:
        if kind == "kprobe":
            self.bpf.detach_kprobe(event=target)
        elif kind == "kretprobe":
            self.bpf.detach_kretprobe(event=target)
        elif kind == "tracepoint":
            self.bpf.detach_tracepoint(tp=target)
        elif kind == "kfunc":
            self.bpf.detach_kfunc(fn_name=fn)
        else:
            self.bpf.detach_kretfunc(fn_name=fn)

    def detach(self) -> None:
        """Detach every probe (the program stays loaded: attach() again is cheap)."""
        while self.attached:
            self._detach_one(*self.attached.pop())

    def open_events(self) -> None:
        """Start receiving events (ring buffer, or perf buffer on kernels before 5.8)."""
        table = self.bpf["events"]
        if self.ringbuf:
            table.open_ring_buffer(self._raw)
        else:
            table.open_perf_buffer(self._raw, page_cnt=256, lost_cb=self._lost)

    def start(self) -> "Tracer":
        self.load()
        self.attach()
        self.open_events()
        return self

    def watch_pid(self, pid: int) -> None:
        if "FILTER_PIDS" in self.defines:
            self.bpf["watched"][ctypes.c_uint32(pid)] = ctypes.c_uint8(1)

    def unwatch_pid(self, pid: int) -> None:
        if "FILTER_PIDS" in self.defines:
            try:
                del self.bpf["watched"][ctypes.c_uint32(pid)]
            except KeyError:
                pass

    def _raw(self, *args) -> None:
        # ring buffer: (ctx, data, size); perf buffer: (cpu, data, size)
        _, data, size = args
        ev = events.decode(ctypes.string_at(data, size))
        if ev is None:
            self.undecodable += 1
            return
        self.on_event(ev)

    def _lost(self, count: int) -> None:
        self.lost_perf += count

    def poll(self, timeout_ms: int = 100) -> None:
        if self.ringbuf:
            self.bpf.ring_buffer_poll(timeout_ms)
        else:
            self.bpf.perf_buffer_poll(timeout_ms)

    def drain(self) -> None:
        """Deliver what is queued without waiting."""
        if self.ringbuf:
            self.bpf.ring_buffer_consume()
        else:
            self.bpf.perf_buffer_poll(0)

    def programs(self) -> Dict[str, Dict[str, int]]:
        """{BPF function: its /proc/self/fdinfo numbers (prog_id, run_cnt, run_time_ns, ...)} for every
        program bcc has loaded so far (kprobe programs are loaded when first attached).  The kernel keeps
        only 15 characters of a name, and bcc's fentry/fexit names all begin "kfunc__vmlinux__"/"kretfunc__vmlin": the
        program id is what tells them apart (bpftool prog show lists it)."""
        out: Dict[str, Dict[str, int]] = {}
        for name, func in (self.bpf.funcs.items() if self.bpf is not None else ()):
            info = fdinfo(func.fd)
            if "prog_id" in info:
                out[name.decode() if isinstance(name, bytes) else name] = info
        return out

    def expected_programs(self) -> List[str]:
        """The BPF functions of every program attach() attaches (the keys programs() should have once
        each has been attached): the plan's kprobes and kretprobes, and the tracepoint and fentry/fexit programs
        bcc loaded with the object (a plan's tracepoint a -D macro compiles out is not one)."""
        names = [program_name(p.kind, p.target, p.program) for p in self.plan.probes()
                 if p.kind in ("kprobe", "kretprobe")]
        names = list(dict.fromkeys(names))  # probes that run one program: it is one program
        return names + [fn for _, _, fn in getattr(self, "_auto", ())]

    def table(self, name: str):
        """A BPF map of the loaded program (bcc table object)."""
        return self.bpf[name]

    def lost(self) -> int:
        """Records lost so far: perf buffer overruns plus ring buffer reservation failures."""
        n = self.lost_perf
        if self.bpf is not None:
            for v in self.bpf["drops"].values():
                n += v.value
        return n

    def close(self) -> None:
        if self.bpf is not None:
            try:
                self.bpf.cleanup()
            finally:
                self.bpf = None

    def __enter__(self) -> "Tracer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

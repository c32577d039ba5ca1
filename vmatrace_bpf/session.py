"""A trace session: the checks before loading, the one plan path, the trace loop and how it stops.

Every tracing command (watch, record, forklat, bench) goes through here:
``prepare`` (PID checks, kernel facts, blocking problems, the plan, --force),
``ebpf_plan`` (the same plan for --ebpf, which prints instead of loading),
``StopFlag`` (Ctrl-C and SIGTERM end a trace cleanly) and ``trace_loop``.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Callable, List, Optional, Sequence, Tuple

from .checks import blocking_problem
from .errors import VmabpfError
from .escape import escape
from .kernel import KernelInfo
from .loader import Tracer
from .plan import Plan, PlanError, choose, parse_force


def process_state(pid: int) -> Optional[str]:
    """The state letter from /proc/PID/stat, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return "?"
    # comm may hold spaces and parentheses: the state follows the last ')'
    return data[data.rfind(")") + 2:][:1] or "?"


def process_alive(pid: int) -> bool:
    return process_state(pid) not in (None, "Z", "X")


def check_pid(pid: int) -> None:
    if pid <= 0 or not process_alive(pid):
        raise VmabpfError(f"no process with PID {pid} (check the number with ps; it may have exited)")


def check_tid(pid: int, tid: int) -> None:
    if not os.path.exists(f"/proc/{pid}/task/{tid}"):
        raise VmabpfError(f"PID {pid} has no thread {tid} (see /proc/{pid}/task)")


class StopFlag:
    """Ctrl-C and SIGTERM end the trace loop cleanly (summary, detach, exit 0)."""

    def __init__(self):
        self.why: Optional[str] = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame):
        self.why = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _plan(kinfo: KernelInfo, force: Sequence[str], only: Optional[List[str]] = None, backend: str = "bcc") -> Plan:
    """The attach plan for KINFO with --force pins; a pin the kernel refuses is an error."""
    try:
        forced = parse_force(force)
    except PlanError as e:
        raise VmabpfError(str(e)) from None
    plan = choose(kinfo, force=forced, only=only, backend=backend)
    refused = plan.forced_failures()
    if refused:
        raise VmabpfError("--force refused on this kernel: " + "; ".join(refused))
    return plan


def tracefs_problem(kinfo: KernelInfo) -> Optional[str]:
    """None when the tracefs backend can start here, else one line."""
    if os.geteuid() != 0:
        return "not root: kprobe events are placed through tracefs, which needs root (sudo)"
    if not kinfo.files.tracefs or not os.path.exists(os.path.join(kinfo.files.tracefs, "kprobe_events")):
        return "no tracefs with kprobe_events (CONFIG_KPROBE_EVENTS; mount -t tracefs nodev /sys/kernel/tracing)"
    if not os.path.isdir(os.path.join(kinfo.files.tracefs, "instances")):
        return "tracefs has no instances directory (kernel older than 4.x?)"
    if kinfo.btf is None:
        return "no BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF): the fetch-args' offsets need it"
    return None


def backend_and_device(backend: Optional[str], use_adb: bool, serial: Optional[str]):
    """(backend, Device or None) from --backend, --adb and -s."""
    if serial and not use_adb:
        raise VmabpfError("-s SERIAL chooses the device for --adb: add --adb", exit_code=2)
    if use_adb:
        if backend == "bcc":
            raise VmabpfError("--adb traces through the device's tracefs: bcc cannot run over adb "
                              "(use --backend tracefs, the default with --adb)", exit_code=2)
        from .tracefs_adb import Device  # the bcc path does not load the tracefs modules
        return "tracefs", Device(serial)
    return backend or "bcc", None


def device_problem(kinfo: KernelInfo) -> Optional[str]:
    if kinfo.btf is None:
        return "no BTF from the device (/sys/kernel/btf/vmlinux): the fetch-args' offsets need it"
    return None


def prepare(pids: List[int], tid: Optional[int], force: Sequence[str],
            only: Optional[List[str]] = None, backend: str = "bcc", device=None) -> Tuple[KernelInfo, Plan]:
    """Checks, kernel info and plan for a trace of PIDS; raises VmabpfError with one line."""
    try:
        parse_force(force)  # a malformed --force is refused before anything else is tried
    except PlanError as e:
        raise VmabpfError(str(e)) from None
    if device is not None:
        for pid in pids:
            if not device.alive(pid):
                raise VmabpfError(f"no process with PID {pid} on the device (check with adb shell ps -A)")
            if tid and tid not in device.tids(pid):
                raise VmabpfError(f"PID {pid} has no thread {tid} on the device")
        kinfo = device.kernel_info()
        problem = device_problem(kinfo)
        if problem:
            raise VmabpfError(f"cannot trace on the device: {problem}")
        return kinfo, _plan(kinfo, force, only, "tracefs")
    for pid in pids:
        check_pid(pid)
        if tid:
            check_tid(pid, tid)
    kinfo = KernelInfo.live()
    if backend == "tracefs":
        problem, plan = tracefs_problem(kinfo), None
    else:
        # without --force and --only the checks' plan is the trace's: planned once
        plan = None if force or only is not None else choose(kinfo)
        problem = blocking_problem(kinfo, plan)
    if problem:
        raise VmabpfError(f"cannot trace on this kernel: {problem}; see 'vmabpf doctor'")
    return kinfo, plan if plan is not None else _plan(kinfo, force, only, backend)


def open_tracer(plan: Plan, kinfo: KernelInfo, on_event: Callable[[dict], None], device=None, **kw):
    """The plan's tracer: BPF programs through bcc, or kprobe events in a tracefs instance (a device's
    over adb with DEVICE)."""
    if device is None and plan.backend != "tracefs":
        return Tracer(plan, kinfo, on_event, **kw)
    from .tracefs import TracefsTracer  # the bcc path does not load the tracefs modules
    if device is not None:
        return TracefsTracer(plan, kinfo, on_event, fs=device, tids_of=device.tids, tgid_of=device.tgid, **kw)
    return TracefsTracer(plan, kinfo, on_event, **kw)


def ebpf_plan(force: Sequence[str] = (), only: Optional[List[str]] = None) -> Tuple[KernelInfo, Plan]:
    """Kernel facts and plan for --ebpf: no PID, root or bcc checks (it prints the program, loads nothing)."""
    kinfo = KernelInfo.live()
    return kinfo, _plan(kinfo, force, only)


def missing_note(plan: Plan) -> str:
    """' (not traced here: merge (why); ...)' for a banner's first line, or ''."""
    line = plan.missing_line()
    return f" (not traced here: {escape(line)})" if line else ""


def trace_loop(tracer, on_event: Callable[[dict], None], pids: List[int], stop: StopFlag,
               duration: Optional[float] = None, interval: Optional[float] = None,
               on_interval: Optional[Callable[[], bool]] = None,
               alive: Optional[Callable[[int], bool]] = None) -> str:
    """Poll until Ctrl-C/SIGTERM, DURATION, the (first) watched process exiting, or
    ON_INTERVAL returning False, or the tracer's event source ending (``tracer.ended``: adb died).
    ALIVE says whether a PID lives (a device's over adb).  Lost events are reported as
    {"type": "lost"}.  Returns why it stopped."""
    alive = alive or process_alive
    start = time.monotonic()
    next_tick = start + interval if interval else None
    next_alive_check = start
    lost_seen = 0
    why = ""
    while not why:
        tracer.poll(100)
        now = time.monotonic()
        lost = tracer.lost()
        if lost > lost_seen:
            on_event({"type": "lost", "ts": time.monotonic_ns(), "count": lost - lost_seen})
            lost_seen = lost
        if stop.why:
            why = stop.why
        elif duration is not None and now - start >= duration:
            why = "duration"
        elif pids and now >= next_alive_check:
            next_alive_check = now + 0.25
            if not alive(pids[0]):
                why = "exit"
        if getattr(tracer, "ended", None) and not why:
            why = "ended"
        if next_tick and now >= next_tick and not why:
            next_tick += interval
            if on_interval and on_interval() is False:
                why = "count"
    tracer.drain()
    lost = tracer.lost()
    if lost > lost_seen:
        on_event({"type": "lost", "ts": time.monotonic_ns(), "count": lost - lost_seen})
    if why == "exit":
        on_event({"type": "exit", "ts": time.monotonic_ns(), "pid": pids[0], "tid": pids[0], "comm": ""})
    return why

"""The tracefs backend: the plan's probes as kprobe events in a tracefs instance of vmabpf's own.

No bcc, no compiler: ``TracefsTracer`` has the loader's Tracer interface (context manager, poll,
drain, lost, watch_pid) and

1. removes what a vmabpf that died left behind (instances ``vmabpf-PID`` and kprobe groups
   ``vmabpf_PID`` whose PID is gone);
2. defines the probes (``tracefs_defs``) in ``kprobe_events`` under the group ``vmabpf_<own pid>``,
   capability by capability: one the kernel refuses is missing, with the kernel's error_log line;
3. makes the instance ``instances/vmabpf-<own pid>`` (others' tracing is untouched): mono clock
   (the one bpf_ktime_get_ns() reads), record-tgid, no overwrite (a full buffer drops new events,
   counted per CPU as "dropped events"), event-fork with the traced threads in set_event_pid;
4. reads its trace_pipe without blocking (select), and turns lines into events
   (``tracefs_assemble``); exit disables, removes the instance and the probes.
"""

from __future__ import annotations

import errno
import os
import re
import select
import time
from typing import Callable, Dict, Iterable, List, Optional

from . import events
from .errors import VmabpfError
from .kernel import KernelInfo
from .plan import Plan
from .tracefs_assemble import Assembler, LineParser, split_lines, starts_event
from .tracefs_defs import DefsError, EventDef, build, return_args_supported
from .tracefs_io import PREFIX, LocalFS, _last_error, _tgid_of, _tids, remove_stale

BUFFER_KB = 8192  # per CPU: a 65k-VMA fork makes one vm_area_dup event per VMA


def _page_shift(kinfo: KernelInfo, fs) -> int:
    """PAGE_SHIFT of the traced kernel (the merge test compares page offsets): 12 on x86_64; on arm64
    (4K, 16K or 64K pages) from the config, else the running kernel's page size (here, or the device's)."""
    if kinfo.arch != "arm64":
        return 12
    shift = (kinfo.config or {}).get("ARM64_PAGE_SHIFT")
    if shift is not None:
        return int(shift)
    size = fs.page_size() if hasattr(fs, "page_size") else os.sysconf("SC_PAGE_SIZE") if kinfo.files.live else None
    if not size or size & (size - 1):
        raise VmabpfError("the arm64 page size is not known (no kernel config, no page size from the kernel): "
                          "merge page offsets cannot be checked")
    return size.bit_length() - 1


def _softdirty(kinfo: KernelInfo) -> int:
    """VM_SOFTDIRTY, which the merge test ignores: the bit with CONFIG_MEM_SOFT_DIRTY.  Without a config the
    bit is ignored too: with the option off no flag has that value (include/linux/mm.h), so it is never set."""
    cfg = kinfo.config
    if cfg is not None and cfg.get("MEM_SOFT_DIRTY") != "y":
        return 0
    return events.layout().c("VT_VM_SOFTDIRTY_BIT")


class TracefsTracer:
    """The loaded probes.  Use as a context manager: exit removes the instance and the probes."""

    _count = 0

    def __init__(self, plan: Plan, kinfo: KernelInfo, on_event: Callable[[events.Event], None],
                 pids: Iterable[int] = (), tid: Optional[int] = None, children: bool = False,
                 filter_pids: Optional[bool] = None, fs=None, tids_of: Optional[Callable[[int], List[int]]] = None,
                 tgid_of: Optional[Callable[[int], Optional[int]]] = None):
        if fs is None:
            if not kinfo.files.tracefs:
                raise VmabpfError("tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)")
            fs = LocalFS(kinfo.files.tracefs)
        self.fs = fs
        self.plan = plan
        self.kinfo = kinfo
        self.on_event = on_event
        self.pids = list(pids)
        self.tid = tid
        self.children = children
        self.tids_of = tids_of or _tids
        self.me = os.getpid()
        TracefsTracer._count += 1  # a second tracer in one process gets names of its own
        n = "" if TracefsTracer._count == 1 else f"_{TracefsTracer._count}"
        self.group = f"{PREFIX}_{self.me}{n}"
        self.inst = f"instances/{PREFIX}-{self.me}{n.replace('_', '-')}"
        self.defined: List[EventDef] = []
        self.fd: Optional[int] = None
        self.buf = b""
        self.cpus: List[str] = []
        self.lost_base = 0
        self.missing: Dict[str, str] = {}
        self.filter_pids = filter_pids is None or filter_pids
        self.assembler = Assembler(on_event, {},
                                   tid=tid, children=children, self_tgid=self.me,
                                   page_shift=_page_shift(kinfo, fs), softdirty=_softdirty(kinfo),
                                   tgid_of=tgid_of or _tgid_of, filter_pids=self.filter_pids)
        self.ended: Optional[str] = None  # the trace pipe closed under us (adb died, the device went away)
        self.cleanup_error: Optional[str] = None
        self.marker: Optional[bytes] = None
        self.drains = 0
        self._lost, self._lost_at, self._lost_drains = 0, None, 0
        self.parser: Optional[LineParser] = None

    # -- set-up ------------------------------------------------------------------------------------------------
    def _define(self) -> None:
        try:
            readme = self.fs.read("README")
        except OSError:
            readme = ""
        try:
            defs = build(self.plan, self.kinfo, return_args_supported(readme))
        except DefsError as e:
            raise VmabpfError(f"cannot trace with tracefs here: {e}") from None
        self.missing.update(defs.missing)
        by_cap: Dict[str, List[EventDef]] = {}
        fns = {p.fn: name for name, ch in self.plan.choices.items() for p in ch.probes}
        for d in defs.events:
            by_cap.setdefault(fns[d.fn], []).append(d)
        # every definition in one batch; a capability with one refused definition is missing, and its
        # definitions that were taken are removed again
        probes = [(cap, d) for cap, ds in by_cap.items() for d in ds if d.kind != "tracepoint"]
        errs = self.fs.batch([("append", "kprobe_events", d.line(self.group) + "\n") for _, d in probes],
                             stop=False)
        refused: Dict[str, tuple] = {}
        for (cap, d), e in zip(probes, errs):
            if e is not None:
                refused.setdefault(cap, (d, e))
        log = _last_error(self.fs) if refused else ""
        for cap, (d, e) in refused.items():
            self.missing[cap] = (f"the kernel refused {d.kind} {d.target} ({os.strerror(e.errno)}"
                                 f"{': ' + log if log else ''})")
        taken = [d for (cap, d), e in zip(probes, errs) if e is None and cap in refused]
        if taken:
            self.fs.batch([self._undefine_op(d) for d in taken], stop=False)
        for cap, ds in by_cap.items():
            if cap not in refused:
                self.defined += ds
        for cap, why in self.missing.items():
            ch = self.plan.choices[cap]
            if ch.variant is not None:
                ch.rejected.append((ch.variant.name, "tracefs: " + why))
                ch.variant, ch.probes = None, []

    def _undefine_op(self, d: EventDef) -> tuple:
        return ("append", "kprobe_events", f"-:{self.group}/{d.event}\n")

    def _instance(self) -> None:
        inst = self.inst
        ops = [("mkdir", inst), ("write", f"{inst}/tracing_on", "0"), ("write", f"{inst}/trace_clock", "mono"),
               ("write", f"{inst}/buffer_size_kb", str(BUFFER_KB))]
        ops += [("write", f"{inst}/options/{opt}", val)
                for opt, val in (("record-tgid", "1"), ("overwrite", "0"), ("event-fork", "1"))]
        if self.pids:
            tids = sorted({t for pid in self.pids for t in self.tids_of(pid)} | set(self.pids))
            ops.append(("write", f"{inst}/set_event_pid", " ".join(map(str, tids))))
        for d in self.defined:
            if d.kind == "tracepoint":
                cat, ev = d.target.split(":")
                ops.append(("write", f"{inst}/events/{cat}/{ev}/enable", "1"))
            else:
                if d.filter:
                    ops.append(("write", f"{inst}/events/{self.group}/{d.event}/filter", d.filter))
                ops.append(("write", f"{inst}/events/{self.group}/{d.event}/enable", "1"))
        # tracing on last: what happens before the pipe is opened waits in the buffer
        ops.append(("write", f"{inst}/tracing_on", "1"))
        failed = next((e for e in self.fs.batch(ops) if e is not None), None)
        if failed is not None:
            raise failed
        self.cpus = sorted((c for c in self.fs.listdir(f"{inst}/per_cpu") if c.startswith("cpu")),
                           key=lambda c: int(c[3:]))
        self.fd = self.fs.open_pipe(f"{inst}/trace_pipe")
        self.parser = LineParser(self.defined)
        for pid in self.pids:
            self.watch_pid(pid)

    def start(self) -> "TracefsTracer":
        try:
            remove_stale(self.fs)
            self._define()
            self._instance()
        except OSError as e:
            self.close()
            raise VmabpfError(f"setting up the tracefs instance failed: {e.strerror or e} "
                              f"({getattr(e, 'filename', '') or 'tracefs'})") from None
        except BaseException:
            self.close()
            raise
        return self

    # -- events ------------------------------------------------------------------------------------------------
    def watch_pid(self, pid: int) -> None:
        """Events of PID from now on (the BPF side: an entry in its watched map)."""
        if self.filter_pids:
            self.assembler.watched.setdefault(pid, time.clock_gettime_ns(time.CLOCK_MONOTONIC))

    def unwatch_pid(self, pid: int) -> None:
        self.drain()
        self.assembler.watched.pop(pid, None)

    def _read(self) -> bool:
        try:
            data = os.read(self.fd, 1 << 20)
        except BlockingIOError:
            return False
        except OSError as e:
            if e.errno == errno.EAGAIN:
                return False
            raise
        if not data:
            if not self.ended and not isinstance(self.fs, LocalFS):
                self.ended = "the trace pipe closed (adb ended: device disconnected?)"
            return False
        lines, self.buf = split_lines(self.buf + data, starts_event)
        for line in lines:
            if self.marker and line.endswith(self.marker):
                self.marker = None  # the drain's marker: everything before it has been read
                continue
            rec = self.parser.parse(line)
            if rec is None:
                if line.strip():
                    self.assembler.undecodable += 1
                continue
            self.assembler.feed(rec)
        return True

    def poll(self, timeout_ms: int = 100) -> None:
        if self.fd is None:
            return
        r, _, _ = select.select([self.fd], [], [], timeout_ms / 1000)
        if r:
            while self._read():
                pass

    def drain(self, timeout: float = 10.0) -> None:
        """Deliver everything traced so far.  A marker is written to the instance's trace_marker and lines
        are read until it comes back: events still on their way (through adb) are not left behind."""
        if self.fd is None:
            return
        self.drains += 1
        marker = f"vmabpf-drain-{self.me}-{self.drains}"
        try:
            self.fs.write(f"{self.inst}/trace_marker", marker)
            self.marker = marker.encode()
        except (OSError, VmabpfError):
            self.marker = None  # no trace_marker (or the device is gone): what has arrived is all there is
        deadline = time.monotonic() + timeout
        while self.marker and not self.ended and time.monotonic() < deadline:
            r, _, _ = select.select([self.fd], [], [], 0.1)
            if r:
                while self._read():
                    pass
        while self._read():
            pass
        self.marker = None

    @property
    def undecodable(self) -> int:
        return self.assembler.undecodable

    def lost(self) -> int:
        """Events the instance's buffer dropped (overwrite off: 'dropped events'; 'overrun' too).  Read at most
        once a second (a device's are one adb round trip), and afresh after each drain()."""
        now = time.monotonic()
        if self._lost_at is not None and now - self._lost_at < 1.0 and self._lost_drains == self.drains:
            return self._lost
        n = 0
        for stats in self.fs.read_many([f"{self.inst}/per_cpu/{cpu}/stats" for cpu in self.cpus]):
            for key in ("overrun", "dropped events"):
                m = re.search(r"^" + key + r":\s*(\d+)", stats or "", re.M)
                if m:
                    n += int(m.group(1))
        self._lost, self._lost_at, self._lost_drains = n, now, self.drains
        return n

    # -- tear-down ---------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self.fd is not None:
            try:
                self.fs.close_pipe(self.fd)
            except OSError:
                pass
            self.fd = None
        try:
            self._remove()
        except (OSError, VmabpfError):
            pass  # the device is gone: the next start removes what is left (remove_stale)

    def _remove(self) -> None:
        """Disable and remove the instance, then the probes: one batch (a device: one round trip), the
        instance's rmdir retried while a reader of its trace_pipe still exiting holds it (EBUSY)."""
        inst = self.inst
        ops = [("write", f"{inst}/tracing_on", "0"), ("write", f"{inst}/events/{self.group}/enable", "0"),
               ("write", f"{inst}/events/sched/sched_process_fork/enable", "0"), ("rmdir", inst)]
        undefine = [self._undefine_op(d) for d in reversed(self.defined) if d.kind != "tracepoint"]
        errs = self.fs.batch(ops + undefine, stop=False)
        rmdir = errs[3]
        for attempt in range(9):
            if rmdir is None or rmdir.errno != errno.EBUSY:
                break
            time.sleep(0.2)
            rmdir = self.fs.batch([("rmdir", inst)])[0]
        if rmdir is not None and rmdir.errno != errno.ENOENT:  # ENOENT: the set-up never made it
            self.cleanup_error = f"{inst}: {rmdir.strerror}"
        again = [op for op, e in zip(undefine, errs[len(ops):]) if e is not None]
        if again and rmdir is None:
            self.fs.batch(again, stop=False)
        self.defined = []

    def __enter__(self) -> "TracefsTracer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

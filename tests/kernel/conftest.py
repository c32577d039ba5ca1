"""Kernel tests: run inside the QEMU guests (tests/vm/run), as root, with bcc.

On a host that cannot run them (no root, no bcc, no kprobes, no anon VMA
names) every test here is skipped with the reason.  Programs are compiled
once per guest run (session fixtures): bcc takes ~15-25 s per compile under TCG.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from guestutil import readline
from vmatrace_bpf import checks as doctor
from vmatrace_bpf.kernel import KernelInfo
from vmatrace_bpf.plan import choose

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _why_not() -> str:
    return doctor.blocking_problem(KernelInfo.live()) or ""


def pytest_collection_modifyitems(config, items):
    why = _why_not()
    if not why:
        return
    skip = pytest.mark.skip(reason=f"needs a kernel test guest (tests/vm/run): {why}")
    for item in items:
        if "tests/kernel" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def kinfo():
    return KernelInfo.live()


_ATTACHED = []  # the Collectors whose programs are attached now


@pytest.fixture(scope="module")
def bcc_to_ourselves():
    """A module that loads tracers of its own: bcc names its kprobe events by function and PID, so a session
    collector still attached in this process would make their kprobes fail to attach.  Detach the attached
    collectors for the module, and attach them again after it."""
    paused = list(_ATTACHED)
    for c in paused:
        c.close()
    yield
    for c in paused:
        c.reopen()


class Collector:
    """A loaded tracer plus a way to run a workload scenario under it."""

    def __init__(self, kinfo, force=None, ringbuf=None, header_layout=False, extra_defines=None):
        self.kinfo, self.ringbuf, self.extra_defines = kinfo, ringbuf, extra_defines
        self.plan = choose(kinfo, force=force or {})
        if header_layout:  # struct members at the kernel headers' offsets, as on a kernel without BTF
            self.plan.layout, self.plan.layout_why = {}, "the test asked for the kernel headers"
        self.events = []
        self.reopen()

    def reopen(self):
        """Load and attach again (after close())."""
        from vmatrace_bpf.loader import Tracer
        self.tracer = Tracer(self.plan, self.kinfo, self.events.append, filter_pids=True,
                             ringbuf=self.ringbuf, extra_defines=self.extra_defines).start()
        _ATTACHED.append(self)

    def spawn(self, scenario, *args):
        p = subprocess.Popen([sys.executable, "-m", "vmatrace_bpf.workload", scenario, "--wait", *args],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
        ready = json.loads(readline(p, p.stdout, "ready line from the workload"))
        return p, ready["pid"]

    def run(self, scenario, watch=True, alongside=None):
        """Run SCENARIO (watched), optionally with ALONGSIDE running unwatched at the same time.
        Returns (result, events of the scenario's PID, events of the other PID)."""
        p, pid = self.spawn(scenario)
        other = self.spawn(alongside) if alongside else None
        if watch:
            self.tracer.watch_pid(pid)
        if other:
            other[0].stdin.write("\n")
            other[0].stdin.flush()
        p.stdin.write("\n")
        p.stdin.flush()
        result = json.loads(readline(p, p.stdout, "result from the workload"))
        if other:
            json.loads(readline(other[0], other[0].stdout, "result from the second workload"))
        p.stdin.write("\n")
        p.stdin.close()
        p.wait(timeout=60)
        if other:
            other[0].stdin.write("\n")
            other[0].stdin.close()
            other[0].wait(timeout=60)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            self.tracer.poll(100)
        self.tracer.unwatch_pid(pid)
        mine = [e for e in self.events if e["pid"] == pid]
        theirs = [e for e in self.events if other and e["pid"] == other[1]]
        return result, mine, theirs

    def close(self):
        self.tracer.close()
        if self in _ATTACHED:
            _ATTACHED.remove(self)


@pytest.fixture(scope="session")
def collector(kinfo):
    c = Collector(kinfo)
    yield c
    c.close()


@pytest.fixture
def slotless_collector(kinfo, collector):
    """The default plan with FORK_SLOTS_OFF: vm_area_dup's program counts every fork in its fork_state entry,
    as it does a fork whose array slot another thread holds."""
    collector.close()
    c = Collector(kinfo, extra_defines={"FORK_SLOTS_OFF": 1})
    yield c
    c.close()
    collector.reopen()


@pytest.fixture(scope="module")
def fallback_collector(kinfo, collector):
    """The same capabilities through their fallback variants, where this kernel has them,
    delivered through the perf buffer instead of the ring buffer, and with the struct layout of a kernel
    without BTF (offsets from <linux/mm_types.h>, not from BTF).
    bcc names its kprobe events by function and PID, so two tracers in one process
    cannot share a function: the default one is detached first, and loaded again after."""
    collector.close()
    force = {"prctl": "syscall-kprobe", "fork": "uprobe_dup_mmap-window", "vma_dup": "vm_area_dup"}
    c = Collector(kinfo, force=force, ringbuf=False, header_layout=True)  # and the perf buffer (before 5.8)
    yield c
    c.close()
    collector.reopen()  # for the modules after this one

"""tracefs file access (this machine's; a device's has the same calls) and the clean-up of what a
vmabpf that died left behind: instances ``vmabpf-PID[-N]`` and kprobe groups ``vmabpf_PID[_N]``."""

from __future__ import annotations

import os
import re
from typing import Callable, List, Optional, Sequence, Tuple

PREFIX = "vmabpf"

# One change to tracefs, as ``batch`` takes them: ("write", REL, TEXT) truncates and writes, ("append", REL,
# TEXT) appends (kprobe_events), ("mkdir", REL), ("rmdir", REL).  A device carries out a whole batch in one
# `adb shell`: the ~60 writes of a set-up were ~60 round trips before.
Op = Tuple[str, ...]


class LocalFS:
    """tracefs on this machine (the device's, through adb, has the same calls)."""

    def __init__(self, root: str):
        self.root = root

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def read(self, rel: str) -> str:
        with open(self.path(rel), "rb") as f:
            return f.read(1 << 20).decode("utf-8", "replace")

    def write(self, rel: str, text: str, append: bool = False) -> None:
        # tracefs files take one write per command; O_APPEND keeps kprobe_events' other probes
        flags = os.O_WRONLY | (os.O_APPEND if append else os.O_TRUNC) | os.O_NOFOLLOW
        fd = os.open(self.path(rel), flags)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def exists(self, rel: str) -> bool:
        return os.path.exists(self.path(rel))

    def listdir(self, rel: str) -> List[str]:
        try:
            return os.listdir(self.path(rel))
        except OSError:
            return []

    def mkdir(self, rel: str) -> None:
        os.mkdir(self.path(rel))

    def rmdir(self, rel: str) -> None:
        os.rmdir(self.path(rel))

    def batch(self, ops: Sequence[Op], stop: bool = True) -> List[Optional[OSError]]:
        """Carry out OPS in order: the error of each (None: done).  With STOP the first failure ends the
        batch (the list is as long as what was tried)."""
        errs: List[Optional[OSError]] = []
        for op in ops:
            try:
                if op[0] in ("write", "append"):
                    self.write(op[1], op[2], append=op[0] == "append")
                elif op[0] == "mkdir":
                    self.mkdir(op[1])
                elif op[0] == "rmdir":
                    self.rmdir(op[1])
                else:
                    raise ValueError(f"unknown tracefs op {op[0]!r}")
                errs.append(None)
            except OSError as e:
                errs.append(e)
                if stop:
                    break
        return errs

    def read_many(self, rels: Sequence[str]) -> List[Optional[str]]:
        """The text of each file (None: unreadable)."""
        out: List[Optional[str]] = []
        for rel in rels:
            try:
                out.append(self.read(rel))
            except OSError:
                out.append(None)
        return out

    def open_pipe(self, rel: str) -> int:
        return os.open(self.path(rel), os.O_RDONLY | os.O_NONBLOCK)

    def close_pipe(self, fd: int) -> None:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def remove_stale(fs, alive: Callable[[int], bool] = _pid_alive) -> List[str]:
    """Remove the instances and kprobe groups of vmabpf processes that are gone; what was removed."""
    removed = []
    for name in fs.listdir("instances"):
        m = re.fullmatch(PREFIX + r"-(\d+)(?:-\d+)?", name)
        if m and not alive(int(m.group(1))):
            _disable_instance(fs, f"instances/{name}")
            try:
                fs.rmdir(f"instances/{name}")
                removed.append(name)
            except OSError:
                pass
    groups = set(re.findall(r"^[pr]\d*:(" + PREFIX + r"_(\d+)(?:_\d+)?)/", fs.read("kprobe_events"), re.M))
    for group, pid in sorted(groups):
        if not alive(int(pid)):
            _remove_group(fs, group)
            removed.append(group)
    return removed


def _disable_instance(fs, inst: str) -> None:
    try:
        fs.write(f"{inst}/tracing_on", "0")
        for group in fs.listdir(f"{inst}/events"):
            if group.startswith(PREFIX + "_"):
                fs.write(f"{inst}/events/{group}/enable", "0")
        fs.write(f"{inst}/events/sched/sched_process_fork/enable", "0")
    except OSError:
        pass


def _remove_group(fs, group: str) -> None:
    for line in fs.read("kprobe_events").splitlines():
        m = re.match(r"^[pr]\d*:(" + re.escape(group) + r"/\w+)\s", line)
        if m:
            try:
                fs.write("kprobe_events", f"-:{m.group(1)}\n", append=True)
            except OSError:
                pass


def _last_error(fs) -> str:
    try:
        lines = [ln.strip() for ln in fs.read("error_log").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " ".join(lines[-3:])


def _tids(pid: int) -> List[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]


def _tgid_of(tid: int) -> Optional[int]:
    try:
        with open(f"/proc/{tid}/status") as f:
            for line in f:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None

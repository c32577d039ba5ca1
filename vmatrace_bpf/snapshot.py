"""Snapshots: the raw smaps of many processes (or one), where and when they came from, and
the self-describing file `maps --save` writes and `maps --diff` reads.

A snapshot file is one JSON object (strict JSON; text that is not UTF-8 kept with
surrogate escapes, so a path comes back byte for byte)::

    {"format": "vmabpf-maps-snapshot", "version": 1, "source": "host:/proc",
     "time": "2026-12-01T23:30:00Z", "unix_time": 1796...., "kernel": "6.12.117",
     "root": true, "unreadable": [PID, ...],
     "processes": [{"pid": 1, "comm": "init", "smaps": "..."}, ...]}

From the host, every /proc/PID whose smaps can be read (all of them as root); from a
device, all processes in one adb round trip (a shell loop over /proc run as root where
su allows it).
"""

from __future__ import annotations

import json
import os
import shlex
import time
from dataclasses import dataclass, field
from typing import List, Optional

from . import adb as adbmod
from .errors import VmabpfError
from .inputs import STRICT_JSON, read_regular
from .outfile import OutputFile
from .vma import decode

FORMAT = "vmabpf-maps-snapshot"
VERSION = 1
MAX_SNAPSHOT_BYTES = 8 << 30
MARK = "@@vmabpf "


@dataclass
class Proc:
    pid: int
    comm: str
    smaps: str


@dataclass
class Snapshot:
    source: str
    unix_time: float
    kernel: str
    root: bool
    processes: List[Proc]
    unreadable: List[int] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "source": self.source,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.unix_time)),
                "unix_time": self.unix_time, "kernel": self.kernel, "root": self.root,
                "unreadable": self.unreadable,
                "processes": [{"pid": p.pid, "comm": p.comm, "smaps": p.smaps} for p in self.processes]}


def _read(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None


def host_comm(pid: int, proc: str = "/proc") -> str:
    """/proc/PID/comm, decoded ("" where it cannot be read: the process is gone or hidden)."""
    try:
        return decode((_read(os.path.join(proc, str(pid), "comm")) or b"").rstrip(b"\n"))
    except OSError:
        return ""


def from_host(proc: str = "/proc", pids: Optional[List[int]] = None) -> Snapshot:
    """Every process in PROC whose smaps is readable (PIDS: only these); kernel threads
    (empty smaps) and processes that exit while being read are left out, unreadable ones
    listed."""
    if pids is None:
        pids = sorted(int(d) for d in os.listdir(proc) if d.isdigit())
    procs, unreadable = [], []
    for pid in pids:
        base = os.path.join(proc, str(pid))
        try:
            data = _read(os.path.join(base, "smaps"))
        except PermissionError:
            unreadable.append(pid)
            continue
        if not data:
            continue
        procs.append(Proc(pid, host_comm(pid, proc), decode(data)))
    return Snapshot(f"host:{proc}", time.time(), os.uname().release, os.geteuid() == 0, procs, unreadable)


# -- a device: one round trip -----------------------------------------------------------
#: The device-side loop (toybox/mksh sh): a marker line before each process's smaps.
#: A smaps line starts with a hex digit or a capital letter, never with "@@".
DEVICE_SCRIPT = ('echo "@@vmabpf uid $(id -u)"; echo "@@vmabpf kernel $(uname -r)"; '
                 'for d in /proc/[0-9]*; do '
                 'echo "@@vmabpf pid ${d#/proc/} $(cat $d/comm 2>/dev/null)"; '
                 'cat $d/smaps 2>/dev/null || echo "@@vmabpf unreadable"; done')


def parse_device_output(out: str, source: str) -> Snapshot:
    """The Snapshot in the output of DEVICE_SCRIPT."""
    if not out.startswith(MARK + "uid "):
        first = (out.strip().splitlines() or ["(no output)"])[0][:80]
        raise VmabpfError(f"{source}: unexpected answer to the all-processes command: {first}")
    uid, kernel = None, ""
    procs: List[Proc] = []
    unreadable: List[int] = []
    cur: Optional[list] = None          # [pid, comm, lines, unreadable]

    def close():
        if cur is None:
            return
        if cur[3]:
            unreadable.append(cur[0])
        elif cur[2]:
            procs.append(Proc(cur[0], cur[1], "".join(cur[2])))
    for line in out.splitlines(keepends=True):
        if line.startswith(MARK):
            words = line[len(MARK):].rstrip("\r\n").split(" ", 2)
            if words[0] == "uid" and len(words) > 1 and words[1].isdigit():
                uid = int(words[1])
            elif words[0] == "kernel":
                kernel = " ".join(words[1:])
            elif words[0] == "pid" and len(words) > 1 and words[1].isdigit():
                close()
                cur = [int(words[1]), words[2] if len(words) > 2 else "", [], False]
            elif words[0] == "unreadable" and cur is not None:
                cur[3] = True
            continue
        if cur is not None:
            cur[2].append(line.replace("\r\n", "\n"))
    close()
    return Snapshot(source, time.time(), kernel, uid == 0, procs, unreadable)


def from_adb(serial: Optional[str] = None, adb: Optional[str] = None) -> Snapshot:
    """All processes of a device in one adb round trip, as root if adb root or su allows it
    (otherwise the shell user's, with the rest listed as unreadable)."""
    exe = adbmod.find_adb(adb)
    source = f"adb:{serial}" if serial else "adb"
    command = "sh -c " + shlex.quote(DEVICE_SCRIPT)
    fallback = None
    for how, cmd in adbmod.root_variants(command):
        rc, out, err = adbmod.shell(exe, serial, cmd, "all processes' smaps")
        problem = adbmod.adb_error(err if err.strip() or out.startswith(MARK) else out[:400], serial)
        if problem:
            raise VmabpfError(problem)
        if not out.startswith(MARK + "uid "):
            continue                    # this su is missing or refused
        snap = parse_device_output(out, source + (f" ({how})" if how else ""))
        if snap.root:
            return snap
        fallback = fallback or snap
    if fallback is None:
        raise VmabpfError(f"{source}: the device did not run the all-processes command (sh -c ...)")
    return fallback


# -- files ------------------------------------------------------------------------------
def save(snap: Snapshot, path: str, force: bool = False) -> None:
    out = OutputFile(path, force=force)
    fp = out.open()
    try:
        json.dump(snap.to_json(), fp, allow_nan=False)
        fp.write("\n")
    except BaseException:
        out.discard()
        raise
    out.commit()


def load(path: str) -> Snapshot:
    try:
        data = read_regular(path, "a vmabpf maps snapshot", MAX_SNAPSHOT_BYTES)
    except OSError as e:
        raise VmabpfError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        j = STRICT_JSON.decode(decode(data))
    except ValueError as e:
        raise VmabpfError(f"{path}: not a vmabpf maps snapshot (not JSON: {e})") from None
    if not isinstance(j, dict) or j.get("format") != FORMAT:
        raise VmabpfError(f"{path}: not a vmabpf maps snapshot (no \"format\": \"{FORMAT}\"; "
                          "write one with `vmabpf maps ... --save FILE`)")
    if j.get("version") != VERSION:
        raise VmabpfError(f"{path}: snapshot version {j.get('version')!r}, this vmabpf reads {VERSION}")
    try:
        procs = [Proc(int(p["pid"]), str(p["comm"]), str(p["smaps"])) for p in j["processes"]]
        if not 0 <= float(j["unix_time"]) < 1e11:  # a time gmtime() can print
            raise ValueError(f"unix_time {j['unix_time']!r} is out of range")
        return Snapshot(str(j["source"]), float(j["unix_time"]), str(j["kernel"]), bool(j["root"]), procs,
                        [int(x) for x in j.get("unreadable", [])])
    except (KeyError, TypeError, ValueError) as e:
        raise VmabpfError(f"{path}: damaged vmabpf maps snapshot ({type(e).__name__}: {e})") from None

"""A device's tracefs and kernel over adb, for the tracefs backend (`watch/record --adb`).

``Device`` gives the tracer the calls ``tracefs_io.LocalFS`` gives it on this machine (read, write,
exists, listdir, mkdir, rmdir, a pipe to read), each one ``adb shell`` as root (``adb root``, else
``su 0``, else ``su -c``, found once), plus what the session needs of the device: its kernel facts
(kallsyms, available_filter_functions, BTF and config, pulled once and cached per build under
``$XDG_CACHE_HOME/vmabpf/devices/<key>/``), whether a PID lives, its threads.  The trace pipe is one
long-lived ``adb shell cat .../trace_pipe``; when adb dies or the USB link drops, its end of file
ends the trace (``ended``), and what was received is kept.

No shell on the host: adb runs from an argument list; the device commands are quoted with shlex.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shlex
import subprocess
import time
from typing import Dict, List, Optional

from . import adb as adbmod
from .errors import VmabpfError
from .kernel import KernelInfo, machine_to_arch

_TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
_FAILED = "@@vmabpf-failed "  # + the op's index in its batch, on stderr
_FILE = "@@vmabpf-file "  # + the index of the file whose text follows (read_many)
_SCRIPT_MAX = 16000  # characters of one batch's script: well inside adb's and the device shell's limits
_ERRNOS = (("No such file", errno.ENOENT), ("nonexistent", errno.ENOENT), ("Permission denied", errno.EACCES), ("File exists", errno.EEXIST),
           ("busy", errno.EBUSY), ("Invalid argument", errno.EINVAL), ("Directory not empty", errno.ENOTEMPTY))


def _cache_root() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "vmabpf", "devices")


def _private_dir(path: str) -> None:
    """PATH as a directory of ours (made 0700 when missing; a symlink is refused)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not os.path.isdir(path) or os.path.islink(path) or (os.geteuid() == 0 and st.st_uid != 0):
        raise VmabpfError(f"the device cache {path} is not a directory of ours (a symlink?): remove it")


def _write_new(path: str, data: bytes) -> None:
    """DATA to PATH through a new file beside it (never following a symlink), renamed into place."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _oserror(msg: str, path: str) -> OSError:
    """The device shell's error message as the OSError a local call would raise."""
    code = next((n for text, n in _ERRNOS if text.lower() in msg.lower()), errno.EIO)
    return OSError(code, msg, path)


class Device:
    def __init__(self, serial: Optional[str] = None, adb: Optional[str] = None):
        self.adb = adbmod.find_adb(adb)
        self.serial = serial
        _, self.how = adbmod.run_as_root(
            self.adb, serial, "id -u", lambda out: out.strip() == "0",
            denied="the tracefs backend needs root on the device: `adb root` (userdebug builds) or su "
                   "(rooted devices); neither works here")
        root = self.run("for d in " + " ".join(_TRACEFS) + "; do [ -e $d/kprobe_events ] && echo $d && break; "
                        "done; true")[1].strip()
        if not root:
            raise VmabpfError("the device has no tracefs with kprobe_events (CONFIG_KPROBE_EVENTS off, or tracefs "
                              "not mounted at /sys/kernel/tracing)")
        self.root = root
        self.tracefs = root
        self.pipes: Dict[int, tuple] = {}  # fd -> (the adb process, the device path it reads)
        self._alive: Dict[int, tuple] = {}
        self._tgid: Dict[int, Optional[int]] = {}

    # -- one device command ------------------------------------------------------------------------------------
    def command(self, script: str) -> str:
        """The device command line running SCRIPT with sh as root."""
        inner = f"sh -c {shlex.quote(script)}"
        if self.how == "su 0":
            return f"su 0 {inner}"
        if self.how == "su -c":
            return f"su -c {shlex.quote(inner)}"
        return inner

    def run(self, script: str, what: str = "output"):
        rc, out, err = adbmod.shell(self.adb, self.serial, self.command(script), what)
        problem = adbmod.adb_error(err, self.serial)
        if problem:
            raise VmabpfError(problem)
        return rc, out, err

    def _check(self, script: str, path: str) -> str:
        rc, out, err = self.run(script)
        if rc != 0:
            raise _oserror((err.strip().splitlines() or [f"exit {rc}"])[-1], path)
        return out

    # -- the tracefs calls -------------------------------------------------------------------------------------
    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def read(self, rel: str) -> str:
        return self._check(f"cat {shlex.quote(self.path(rel))}", self.path(rel))

    def write(self, rel: str, text: str, append: bool = False) -> None:
        p = self.path(rel)
        self._check(f"printf %s {shlex.quote(text)} {'>>' if append else '>'} {shlex.quote(p)}", p)

    def exists(self, rel: str) -> bool:
        return self.run(f"test -e {shlex.quote(self.path(rel))}")[0] == 0

    def listdir(self, rel: str) -> List[str]:
        rc, out, _ = self.run(f"ls {shlex.quote(self.path(rel))}")
        return out.split() if rc == 0 else []

    def mkdir(self, rel: str) -> None:
        self._check(f"mkdir {shlex.quote(self.path(rel))}", self.path(rel))

    def rmdir(self, rel: str) -> None:
        self._check(f"rmdir {shlex.quote(self.path(rel))}", self.path(rel))

    def _op(self, op) -> str:
        p = shlex.quote(self.path(op[1]))
        if op[0] in ("write", "append"):
            return f"printf %s {shlex.quote(op[2])} {'>>' if op[0] == 'append' else '>'} {p}"
        if op[0] in ("mkdir", "rmdir"):
            return f"{op[0]} {p}"
        raise ValueError(f"unknown tracefs op {op[0]!r}")

    def batch(self, ops, stop: bool = True) -> List[Optional[OSError]]:
        """LocalFS.batch in as few `adb shell` calls as the command line allows (one for a set-up): each
        op's failure is marked on stderr with its index, after the shell's own message."""
        errs: List[Optional[OSError]] = []
        chunk: List[str] = []
        first = 0
        for i, op in enumerate(list(ops) + [None]):
            if op is not None:
                cmd = self._op(op)
                chunk.append(f"{cmd} || {{ echo {_FAILED}{i - first} >&2; {'exit 1' if stop else 'true'}; }}")
            if chunk and (op is None or sum(map(len, chunk)) > _SCRIPT_MAX):
                done = self._run_batch(ops[first:i + (op is not None)], "; ".join(chunk), stop)
                errs += done
                if stop and any(done):
                    return errs
                first, chunk = i + 1, []
        return errs

    def _run_batch(self, ops, script: str, stop: bool) -> List[Optional[OSError]]:
        rc, out, err = self.run(script)
        errs: List[Optional[OSError]] = [None] * len(ops)
        said: List[str] = []
        marked = False
        for line in (err + "\n" + out).splitlines():  # (an old adb merges stderr into stdout)
            if line.startswith(_FAILED) and line[len(_FAILED):].isdigit() and int(line[len(_FAILED):]) < len(ops):
                i = int(line[len(_FAILED):])
                errs[i] = _oserror((said or ["failed"])[-1], self.path(ops[i][1]))
                marked, said = True, []
                if stop:
                    return errs[:i + 1]
            elif line.strip():
                said.append(line.strip())
        if rc != 0 and not marked:  # the shell itself failed: nothing can be said of any op
            return [_oserror((said or [f"exit {rc}"])[-1], self.path(ops[0][1]))]
        return errs

    def read_many(self, rels) -> List[Optional[str]]:
        """The text of each file (None: unreadable), in one `adb shell`: each file's text follows a line
        "\n@@vmabpf-file I" (its own newline first, so a text without a last newline stays whole)."""
        out: List[Optional[str]] = [None] * len(rels)
        if not rels:
            return out
        mark = "printf '\\n%s\\n' " + shlex.quote(_FILE.strip() + " ")
        script = "; ".join(f"{mark}{i}; cat {shlex.quote(self.path(r))} 2>/dev/null || {mark}-"
                           for i, r in enumerate(rels))
        _, text, _ = self.run(script)
        cur = None
        for part in text.split("\n" + _FILE)[1:]:
            tag, _, body = part.partition("\n")
            if tag == "-":
                if cur is not None:
                    out[cur] = None
                cur = None
            elif tag.isdigit() and int(tag) < len(rels):
                cur = int(tag)
                out[cur] = body
        return out

    def open_pipe(self, rel: str) -> int:
        argv = [self.adb] + (["-s", self.serial] if self.serial else []) + [
            "shell", self.command(f"exec cat {shlex.quote(self.path(rel))}")]
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        except OSError as e:
            raise VmabpfError(f"cannot run adb: {e.strerror or e}") from None
        fd = p.stdout.fileno()
        os.set_blocking(fd, False)
        self.pipes[fd] = (p, self.path(rel))
        return fd

    def close_pipe(self, fd: int) -> None:
        p, path = self.pipes.pop(fd, (None, None))
        if p is not None:
            p.kill()
            p.wait()
            p.stdout.close()
            # the device's cat outlives the adb client for a while: end it, or the instance stays busy
            self.run(f"pkill -f {shlex.quote('cat ' + path)}; true")

    # -- what the session needs --------------------------------------------------------------------------------
    def alive(self, pid: int) -> bool:
        """Is PID a live process on the device (asked at most once a second)?"""
        now = time.monotonic()
        seen = self._alive.get(pid)
        if seen and now - seen[0] < 1.0:
            return seen[1]
        rc, out, _ = self.run(f"cat /proc/{int(pid)}/stat 2>/dev/null")
        state = out[out.rfind(")") + 2:][:1] if rc == 0 and ")" in out else None
        ok = state not in (None, "Z", "X")
        self._alive[pid] = (now, ok)
        return ok

    def page_size(self) -> Optional[int]:
        rc, out, _ = self.run("getconf PAGESIZE")
        return int(out.strip()) if rc == 0 and out.strip().isdigit() else None

    def tids(self, pid: int) -> List[int]:
        rc, out, _ = self.run(f"ls /proc/{int(pid)}/task")
        return [int(t) for t in out.split() if t.isdigit()] if rc == 0 else [pid]

    def tgid(self, tid: int) -> Optional[int]:
        if tid not in self._tgid:
            rc, out, _ = self.run(f"grep Tgid: /proc/{int(tid)}/status")
            parts = out.split()
            self._tgid[tid] = int(parts[1]) if rc == 0 and len(parts) == 2 and parts[1].isdigit() else None
        return self._tgid[tid]

    def kernel_info(self) -> KernelInfo:
        """The device kernel's facts, pulled once per build (uname, /proc/version, fingerprint)."""
        _, ident, _ = self.run("uname -r; uname -m; cat /proc/version; getprop ro.build.fingerprint 2>/dev/null; "
                               "true")
        lines = ident.splitlines()
        if len(lines) < 2:
            raise VmabpfError("the device did not say its kernel release (uname -r)")
        release, arch = lines[0].strip(), machine_to_arch(lines[1].strip())
        key = hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        d = os.path.join(_cache_root(), key)
        _private_dir(d)
        files = {"kallsyms": ("/proc/kallsyms", True), "available_filter_functions":
                 (self.path("available_filter_functions"), True), "btf": ("/sys/kernel/btf/vmlinux", True),
                 "config.gz": ("/proc/config.gz", False)}
        got = {}
        for name, (src, needed) in files.items():
            path = os.path.join(d, name)
            if not os.path.exists(path):
                rc, out, err = self.run(f"cat {shlex.quote(src)}", what=src)
                if rc != 0 or not out:
                    if needed:
                        raise VmabpfError(f"cannot read {src} on the device: "
                                          f"{(err.strip().splitlines() or ['empty'])[-1]}")
                    continue
                _write_new(path, out.encode("utf-8", "surrogateescape"))
            got[name] = path
        return KernelInfo.from_files(release, arch, kallsyms=got["kallsyms"],
                                     filter_functions=got["available_filter_functions"], btf=got["btf"],
                                     config=got.get("config.gz"))

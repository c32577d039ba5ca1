"""Android devices over adb: run one device command (as root where it can), bounded in
time and size, with adb's and the device's errors turned into one clear line.

`maps --adb` reads smaps through it; any other backend that drives a device (tracefs)
uses the same three calls:

- ``find_adb(adb)``: the adb binary (or a one-line error naming the package);
- ``shell(adb, serial, command)``: (status, stdout, stderr) of ``adb shell COMMAND``;
- ``run_as_root(adb, serial, command, ok)``: COMMAND as the shell user, then ``su 0``
  (userdebug builds), then ``su -c`` (Magisk and other root managers), until OK(stdout).

No shell on the host: adb is run from an argument list.
"""

from __future__ import annotations

import os
import selectors
import shlex
import shutil
import subprocess
import time
from typing import Callable, Optional, Tuple

from .errors import VmabpfError

ADB_TIMEOUT = 120
MAX_ADB_BYTES = 1 << 30  # one process's smaps is at most a few hundred MB; all processes rarely 1 GiB


def decode(data: bytes) -> str:
    # Paths are bytes; keep what is not UTF-8 (shown escaped later).
    return data.decode("utf-8", "surrogateescape")


def find_adb(adb: Optional[str] = None) -> str:
    found = adb or shutil.which("adb")
    if not found:
        raise VmabpfError("adb not found on PATH: install the Android platform tools (Debian: apt-get install adb)")
    return found


def adb_error(stderr: str, serial: Optional[str]) -> Optional[str]:
    """A one-line explanation of an error from adb itself (not from the device's command)."""
    s = stderr.strip()
    low = s.lower()
    if "no devices/emulators found" in low:
        return "adb: no devices/emulators found: connect a device and enable USB debugging (check `adb devices`)"
    if "more than one device" in low:
        return "adb: more than one device/emulator: choose one with -s SERIAL (see `adb devices`)"
    if "unauthorized" in low:
        return ("adb: device unauthorized: accept the 'Allow USB debugging?' dialog on the device "
                "(or `adb kill-server` and reconnect)")
    if "not found" in low and "device" in low and "'" in s:
        return f"adb: device '{serial}' not found (see `adb devices`)"
    if "offline" in low:
        return "adb: device offline: reconnect it or run `adb reconnect`"
    if "insufficient permissions" in low:
        return "adb: insufficient permissions for the USB device (udev rules / plugdev group)"
    if "cannot connect to daemon" in low or "failed to check server version" in low:
        return "adb: cannot start or reach the adb server (`adb start-server`)"
    return None


def shell(adb: str, serial: Optional[str], command: str, what: str = "one process's smaps") -> Tuple[int, str, str]:
    """(exit status, stdout, stderr) of `adb shell COMMAND`: bounded in time (ADB_TIMEOUT) and in size
    (MAX_ADB_BYTES; a device that never stops talking is cut off, not read until memory runs out)."""
    argv = [adb] + (["-s", serial] if serial else []) + ["shell", command]
    try:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    except OSError as e:
        raise VmabpfError(f"cannot run adb: {e.strerror or e}")
    bufs = {p.stdout: [], p.stderr: []}
    total = 0
    deadline = time.monotonic() + ADB_TIMEOUT
    why = ""
    with selectors.DefaultSelector() as sel:
        for f in bufs:
            sel.register(f, selectors.EVENT_READ)
        while sel.get_map() and not why:
            left = deadline - time.monotonic()
            if left <= 0:
                why = f"adb did not answer within {ADB_TIMEOUT} s ({' '.join(argv)[:200]})"
                break
            for key, _ in sel.select(min(left, 1.0)):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                bufs[key.fileobj].append(chunk)
                total += len(chunk)
                if total > MAX_ADB_BYTES:
                    shown = command if len(command) < 60 else command[:57] + "..."
                    why = f"adb sent more than {MAX_ADB_BYTES >> 20} MiB for '{shown}': not {what}; stopped reading"
                    break
    if why:
        p.kill()
    try:
        rc = p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        rc = p.wait()
    for f in bufs:
        f.close()
    if why:
        raise VmabpfError(why)
    return rc, decode(b"".join(bufs[p.stdout])), decode(b"".join(bufs[p.stderr]))


def root_variants(command: str):
    """COMMAND as the shell user, under userdebug su (`su 0`), under Magisk-style su (`su -c`)."""
    return [("", command), ("su 0", f"su 0 {command}"), ("su -c", f"su -c {shlex.quote(command)}")]


def run_as_root(adb: str, serial: Optional[str], command: str, ok: Callable[[str], bool],
                device_error: Callable[[str, int, str], Optional[str]] = lambda err, rc, out: None,
                denied: str = "permission denied on the device, also with su 0 and su -c: use a rooted device "
                              "or a userdebug build (`adb root`)",
                what: str = "output") -> Tuple[str, str]:
    """(stdout, how) of the first of root_variants(COMMAND) whose status is 0 and stdout OK accepts;
    HOW is "" (shell user), "su 0" or "su -c".

    adb's own errors raise at once; DEVICE_ERROR(stderr, status, stdout) may turn the device's
    answer into a one-line error; "permission denied" or a missing su tries the next variant, and
    DENIED is the error when every variant was refused.  Without adb's shell protocol (old adb or
    adbd) the device's stderr arrives on stdout and the exit status is always 0: both are looked at.
    """
    was_denied = False
    for i, (how, cmd) in enumerate(root_variants(command)):
        rc, out, err = shell(adb, serial, cmd, what)
        text_err = err if err.strip() else ("" if ok(out) else out)
        if rc == 0 and ok(out):
            return out, how
        problem = adb_error(text_err, serial) or device_error(text_err, rc, out)
        if problem:
            raise VmabpfError(problem)
        low = text_err.lower()
        if "permission denied" in low or "not permitted" in low:
            was_denied = True
            continue
        if i > 0 and ("su:" in low or "not found" in low or "inaccessible" in low or rc in (126, 127)
                      or "not allowed" in low or "denied" in low):
            continue                                # this su is missing or refused: try the next
        first = (text_err.strip().splitlines() or ["(no output)"])[0]
        shown = cmd if len(cmd) < 80 else cmd[:77] + "..."
        raise VmabpfError(f"adb shell '{shown}' failed (exit {rc}): {first}")
    if was_denied:
        raise VmabpfError(denied)
    raise VmabpfError(f"cannot run '{command[:80]}' on the device")


# -- smaps ---------------------------------------------------------------------------
def looks_like_maps(text: str) -> bool:
    return bool(text) and text[0] in "0123456789abcdef" and "-" in text.split(" ", 1)[0]


def read_smaps(pid: int, serial: Optional[str] = None, adb: Optional[str] = None) -> Tuple[str, str]:
    """(text, description) of /proc/PID/smaps on an Android device."""
    if pid <= 0:
        raise VmabpfError(f"invalid PID {pid}")
    adb = find_adb(adb)
    path = f"/proc/{pid}/smaps"

    def device_error(err: str, rc: int, out: str) -> Optional[str]:
        if "no such file or directory" in err.lower():
            return f"no process with PID {pid} on the device ({path}: No such file or directory)"
        if rc == 0 and not out.strip() and not err.strip():
            return f"PID {pid} has no memory map on the device (a kernel thread?)"
        return None
    out, how = run_as_root(adb, serial, f"cat {path}", looks_like_maps, device_error,
                           denied=f"permission denied reading {path} on the device, also with su 0 and su -c: "
                                  "PID belongs to another app; use a rooted device or a userdebug build (`adb root`)")
    return out, f"{serial + ':' if serial else 'adb:'}{path}" + (f" ({how})" if how else "")

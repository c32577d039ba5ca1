"""`vmabpf maps`: names, sizes and name-caused fragmentation from /proc/PID/smaps,
a saved file, or an Android device over adb.  No BPF, no root for one's own
processes."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from typing import Optional, Sequence, Tuple

import click

from ..options import PID

from ..errors import VmabpfError, one_line_errors
from ..escape import escape
from ..procmaps import SMAPS_COLUMNS, SORT_KEYS, ProcMaps, fragments, group, parse

ADB_TIMEOUT = 120


# -- reading ---------------------------------------------------------------------
def _decode(data: bytes) -> str:
    # Paths are bytes; keep what is not UTF-8 (shown escaped later).
    return data.decode("utf-8", "surrogateescape")


MAX_SMAPS_BYTES = 4 << 30  # a saved smaps of 1M VMAs is ~1 GiB


def read_file(path: str) -> str:
    """The text of a saved maps/smaps file; VmabpfError if it cannot be read."""
    from ..inputs import read_regular
    try:
        data = read_regular(path, "a maps/smaps file", MAX_SMAPS_BYTES)
    except OSError as e:
        raise VmabpfError(f"{path}: cannot read: {e.strerror or e}") from None
    return _decode(data)


def read_pid(pid: int, proc: str = "/proc") -> Tuple[str, str]:
    """(text, path) of /proc/PID/smaps (or maps where smaps does not exist)."""
    if pid <= 0:
        raise VmabpfError(f"invalid PID {pid}")
    if not os.path.isdir(os.path.join(proc, str(pid))):
        raise VmabpfError(f"no process with PID {pid}")
    last_error = None
    for name in ("smaps", "maps"):
        path = os.path.join(proc, str(pid), name)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError as e:
            last_error = e
            if not os.path.isdir(os.path.join(proc, str(pid))):
                raise VmabpfError(f"no process with PID {pid} (it exited)")
            continue
        except PermissionError:
            raise VmabpfError(f"cannot read {path}: permission denied (PID {pid} belongs to another user); "
                              "run as root (sudo vmabpf maps ...)")
        except ProcessLookupError:
            raise VmabpfError(f"no process with PID {pid} (it exited)")
        if not data:
            raise VmabpfError(f"PID {pid} has no memory map (a kernel thread, or it is exiting)")
        return _decode(data), path
    raise VmabpfError(f"cannot read {proc}/{pid}/smaps or maps: {last_error}")


# -- adb -----------------------------------------------------------------------------
def _adb_error(stderr: str, serial: Optional[str]) -> Optional[str]:
    """A one-line explanation of an error from adb itself (not from the device's cat)."""
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


MAX_ADB_BYTES = 1 << 30  # one process's smaps is at most a few hundred MB


def _run_adb(adb: str, serial: Optional[str], command: str) -> Tuple[int, str, str]:
    """(exit status, stdout, stderr) of `adb shell COMMAND`: bounded in time (ADB_TIMEOUT) and in size
    (MAX_ADB_BYTES; a device that never stops talking is cut off, not read until memory runs out)."""
    import selectors
    import time
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
                why = f"adb did not answer within {ADB_TIMEOUT} s ({' '.join(argv)})"
                break
            for key, _ in sel.select(min(left, 1.0)):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                bufs[key.fileobj].append(chunk)
                total += len(chunk)
                if total > MAX_ADB_BYTES:
                    why = (f"adb sent more than {MAX_ADB_BYTES >> 20} MiB for '{command}': not one process's "
                           "smaps; stopped reading")
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
    return rc, _decode(b"".join(bufs[p.stdout])), _decode(b"".join(bufs[p.stderr]))


def _looks_like_maps(text: str) -> bool:
    return bool(text) and text[0] in "0123456789abcdef" and "-" in text.split(" ", 1)[0]


def read_adb(pid: int, serial: Optional[str] = None, adb: Optional[str] = None) -> Tuple[str, str]:
    """(text, description) of /proc/PID/smaps on an Android device, via the adb binary.

    Tries ``cat`` as the shell user, then ``su 0 cat`` (userdebug builds'
    su), then ``su -c 'cat ...'`` (Magisk and other root managers).
    """
    if pid <= 0:
        raise VmabpfError(f"invalid PID {pid}")
    adb = adb or shutil.which("adb")
    if not adb:
        raise VmabpfError("adb not found on PATH: install the Android platform tools (Debian: apt-get install adb)")
    path = f"/proc/{pid}/smaps"
    cat = f"cat {path}"
    attempts = [cat, f"su 0 {cat}", f"su -c {shlex.quote(cat)}"]
    denied = False
    for i, command in enumerate(attempts):
        rc, out, err = _run_adb(adb, serial, command)
        # Without adb's shell protocol (old adb or adbd) the device's stderr arrives
        # on stdout and the exit status is always 0: look at both.
        text_err = err if err.strip() else ("" if _looks_like_maps(out) else out)
        if rc == 0 and _looks_like_maps(out):
            where = f"{serial + ':' if serial else 'adb:'}{path}" + (f" ({command.split(' cat')[0]})" if i else "")
            return out, where
        problem = _adb_error(text_err, serial)
        if problem:
            raise VmabpfError(problem)
        low = text_err.lower()
        if "no such file or directory" in low:
            raise VmabpfError(f"no process with PID {pid} on the device ({path}: No such file or directory)")
        if "permission denied" in low or "not permitted" in low:
            denied = True
            continue
        if i > 0 and ("su:" in low or "not found" in low or "inaccessible" in low or rc in (126, 127)
                      or "not allowed" in low or "denied" in low):
            continue                                # this su is missing or refused: try the next
        if rc == 0 and not out.strip():
            raise VmabpfError(f"PID {pid} has no memory map on the device (a kernel thread?)")
        first = (text_err.strip().splitlines() or ["(no output)"])[0]
        raise VmabpfError(f"adb shell '{command}' failed (exit {rc}): {first}")
    if denied:
        raise VmabpfError(f"permission denied reading {path} on the device, also with su 0 and su -c: "
                          "PID belongs to another app; use a rooted device or a userdebug build (`adb root`)")
    raise VmabpfError(f"cannot read {path} on the device")


# -- rendering ---------------------------------------------------------------------
def _kb(n: int) -> str:
    return f"{n:,}".replace(",", " ") if n else "0"


def render_table(pm: ProcMaps, by: str, sort: str) -> str:
    from tabulate import tabulate

    rows, total = group(pm, by=by, sort=sort)
    cols = ["#", "Virtual kB"] + ([f"{c} kB" for c in SMAPS_COLUMNS] if pm.has_fields else [])
    head = ["name" if by == "name" else "class"] + cols
    body = []
    for r in rows + [total]:
        vals = [r.vmas, r.size] + ([r.values[c] for c in SMAPS_COLUMNS] if pm.has_fields else [])
        body.append([escape(r.name)] + vals)
    align = ["left"] + ["right"] * len(cols)
    out = tabulate(body, headers=head, tablefmt="simple", colalign=align, disable_numparse=True)
    note = "" if pm.has_fields else "\n(maps text: sizes only; use smaps for Rss, Pss, Swap)"
    if pm.kind == "rollup":
        note = "\n(smaps_rollup: one pseudo-VMA for the whole process; use smaps for names)"
    return out + note


def _addr(a: int) -> str:
    return f"{a:x}"


def render_fragments(pm: ProcMaps) -> str:
    from tabulate import tabulate

    f = fragments(pm)
    lines = [f"{f.vmas_in_runs} of {f.vmas_total} VMAs are in {len(f.name_runs)} runs of adjacent anonymous "
             f"VMAs that differ only in name; with equal names {f.would_remain} would remain "
             f"({f.vmas_in_runs - f.would_remain} fewer)."]
    if pm.kind == "maps":
        lines.append("(maps text has no VmFlags: only permissions compared)")
    if f.name_runs:
        body = []
        for r in f.name_runs:
            names = [escape(v.display_name) for v in r.vmas]
            shown = ", ".join(names[:6]) + (f", ... ({len(names)})" if len(names) > 6 else "")
            body.append([f"{_addr(r.start)}-{_addr(r.end)}", r.vmas[0].perms, len(r.vmas), r.would_remain, shown])
        lines += ["", tabulate(body, headers=["range", "perms", "VMAs", "would remain", "names"],
                               tablefmt="simple", disable_numparse=True)]
    if f.pairs:
        body = [[escape(a), escape(b), n] for (a, b), n in f.pairs.most_common()]
        lines += ["", "name pairs that keep neighbours apart:",
                  tabulate(body, headers=["left", "right", "boundaries"], tablefmt="simple", disable_numparse=True)]
    if f.same_name_splits:
        body = [[escape(n), c] for n, c in f.same_name_splits.most_common()]
        lines += ["", "same name, still split (anon_vma, vm_pgoff, uffd or mempolicy differ; "
                  "or the kernel did not try to merge):",
                  tabulate(body, headers=["name", "boundaries"], tablefmt="simple", disable_numparse=True)]
    return "\n".join(lines)


def to_json(pm: ProcMaps, by: str, sort: str, with_fragments: bool) -> dict:
    rows, total = group(pm, by=by, sort=sort)
    out = {"source": escape(pm.source), "format": pm.kind, "by": by, "sort": sort,
           "rows": [dict(r.to_json(), name=escape(r.name)) for r in rows],
           "total": {k: v for k, v in total.to_json().items() if k != "name"}}
    if with_fragments:
        fj = fragments(pm).to_json()
        for r in fj["runs"]:
            r["names"] = [escape(n) for n in r["names"]]
        fj["pairs"] = [dict(p, left=escape(p["left"]), right=escape(p["right"])) for p in fj["pairs"]]
        fj["same_name_splits"] = [dict(s, name=escape(s["name"])) for s in fj["same_name_splits"]]
        out["fragments"] = fj
    return out


# -- the command -------------------------------------------------------------------
@click.command("maps", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("pid", required=False, type=PID)
@click.option("--file", "path", type=str, metavar="PATH", help="a saved maps, smaps or smaps_rollup file")
@click.option("--adb", "use_adb", is_flag=True, help="read /proc/PID/smaps from an Android device over adb")
@click.option("-s", "serial", metavar="SERIAL", help="with --adb: the device (as `adb devices` lists it)")
@click.option("-j", "--json", "as_json", is_flag=True, help="print JSON")
@click.option("--sort", type=click.Choice(sorted(SORT_KEYS)), default="pss", show_default=True,
              help="order of the rows (largest first; name: alphabetical)")
@click.option("--by", type=click.Choice(["name", "category"]), default="name", show_default=True,
              help="one row per name, or per class as dumpsys meminfo counts them")
@click.option("--fragments", "with_fragments", is_flag=True,
              help="runs of adjacent anonymous VMAs that differ only in name (merges names prevent)")
@one_line_errors
def maps(pid, path, use_adb, serial, as_json, sort, by, with_fragments):
    """Memory per VMA name and name-caused fragmentation, from smaps.

    \b
    vmabpf maps PID                  /proc/PID/smaps of a live process
    vmabpf maps --file PATH          a saved maps, smaps or smaps_rollup
    vmabpf maps --adb [-s SERIAL] PID    an Android device, through adb
    """
    if path is not None and (pid is not None or use_adb):
        raise VmabpfError("give either PID or --file PATH, not both (usage: vmabpf maps PID | --file PATH | "
                          "--adb [-s SERIAL] PID)", exit_code=2)
    if serial and not use_adb:
        raise VmabpfError("-s SERIAL needs --adb", exit_code=2)
    if path is None and pid is None:
        raise VmabpfError("missing PID (usage: vmabpf maps PID | --file PATH | --adb [-s SERIAL] PID)",
                          exit_code=2)
    if path is not None:
        text, source = read_file(path), path
    elif use_adb:
        text, source = read_adb(pid, serial)
    else:
        text, source = read_pid(pid)
    pm = parse(text, source)
    if as_json:
        click.echo(json.dumps(to_json(pm, by, sort, with_fragments), indent=1, allow_nan=False))
        return
    click.echo(f"{escape(source)}: {len(pm.vmas)} VMAs ({pm.kind})")
    click.echo(render_table(pm, by, sort))
    if with_fragments:
        click.echo()
        click.echo(render_fragments(pm))


def main(argv: Optional[Sequence[str]] = None) -> None:   # python3 -m vmatrace_bpf.maps_cmd
    maps.main(args=list(argv) if argv is not None else sys.argv[1:], prog_name="vmabpf maps")


if __name__ == "__main__":
    main()

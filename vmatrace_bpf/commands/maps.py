"""`vmabpf maps`: names, sizes and name-caused fragmentation from /proc/PID/smaps, a saved
file, or an Android device over adb; across all processes (--all), saved (--save) and
compared (--diff, or --interval/--count live).  No BPF, no root for one's own processes."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Optional, Sequence

import click

from .. import mapsall, mapsview, snapshot
from ..adb import read_smaps
from ..errors import VmabpfError, one_line_errors
from ..escape import escape
from ..options import PID, replace_option
from ..procmaps import SORT_KEYS, parse, parse_file, parse_pid, read_pid

USAGE = ("usage: vmabpf maps PID | --file PATH | --adb [-s SERIAL] PID | --all [--adb] | --diff OLD NEW")
ALL_SORT = ("pss", "rss", "private", "swap", "vmas", "procs", "name")


def _fail(msg: str):
    raise VmabpfError(f"{msg} ({USAGE})", exit_code=2)


def _collect(pid, use_adb, serial, all_procs):
    """A snapshot.Snapshot of what the options name: one process or all, host or device."""
    if all_procs:
        return snapshot.from_adb(serial) if use_adb else snapshot.from_host()
    if use_adb:
        text, source = read_smaps(pid, serial)
    else:
        text, source = read_pid(pid)
    # the comm tells a reused PID apart in --diff (host only: on a device it would cost another round trip)
    comm = "" if use_adb else snapshot.host_comm(pid)
    snap = snapshot.Snapshot(source, time.time(), "" if use_adb else os.uname().release,
                             False if use_adb else os.geteuid() == 0, [snapshot.Proc(pid, comm, text)])
    return snap


@click.command("maps", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("pid", required=False, type=PID)
@click.option("--file", "path", type=str, metavar="PATH", help="a saved maps, smaps or smaps_rollup file")
@click.option("--adb", "use_adb", is_flag=True, help="read /proc/PID/smaps from an Android device over adb")
@click.option("-s", "serial", metavar="SERIAL", help="with --adb: the device (as `adb devices` lists it)")
@click.option("--all", "all_procs", is_flag=True,
              help="every readable process (all as root; with --adb all of the device's in one round trip)")
@click.option("--name", "pattern", metavar="TEXT",
              help="with --all: only names (families) containing TEXT, each with its per-process breakdown")
@click.option("--save", "save_path", metavar="FILE", help="also save what was read (raw smaps) to FILE for --diff")
@replace_option("the --save file")
@click.option("--diff", "diff_paths", nargs=2, metavar="OLD NEW", help="compare two --save files")
@click.option("--interval", type=click.FloatRange(min=0.1), metavar="S", help="live diff: take a snapshot every S s")
@click.option("--count", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="with --interval: how many diffs")
@click.option("-j", "--json", "as_json", is_flag=True, help="print JSON")
@click.option("--sort", type=click.Choice(sorted(set(SORT_KEYS) | set(ALL_SORT))), default="pss", show_default=True,
              help="order of the rows (largest first; name: alphabetical; procs, private, swap: --all)")
@click.option("--by", type=click.Choice(["name", "category", "family"]), default="name", show_default=True,
              help="per name, per class as dumpsys meminfo counts them (Native Heap, Stack, Dalvik Heap, Go Heap, "
                   "...), or per allocator family (glibc, Go runtime, mimalloc, scudo, GWP-ASan, bionic, ART, "
                   "other); with --all or a diff, over every process")
@click.option("--fragments", "with_fragments", is_flag=True,
              help="runs of adjacent anonymous VMAs that differ only in name (merges names prevent)")
@one_line_errors
def maps(pid, path, use_adb, serial, all_procs, pattern, save_path, replace, diff_paths, interval, count, as_json,
         sort, by, with_fragments):
    """Memory per VMA name and name-caused fragmentation, from smaps.

    \b
    vmabpf maps PID                  /proc/PID/smaps of a live process
    vmabpf maps --file PATH          a saved maps, smaps or smaps_rollup
    vmabpf maps --adb [-s SERIAL] PID    an Android device, through adb
    vmabpf maps --all [--adb] [--name TEXT] [--by family]   per name across processes
    vmabpf maps (PID | --all) [--adb] --save FILE           keep a snapshot
    vmabpf maps --diff OLD NEW | (PID | --all) --interval S [--count N]   what grew
    """
    sources = sum(x for x in (pid is not None, path is not None, all_procs, bool(diff_paths)))
    if sources > 1:
        _fail("give one of PID, --file PATH, --all, --diff OLD NEW, not both")
    if serial and not use_adb:
        _fail("-s SERIAL needs --adb")
    if sources == 0:
        _fail("missing PID")
    if use_adb and (path is not None or diff_paths):
        _fail("--adb reads a device: not with --file or --diff")
    if (pattern is not None) and not (all_procs or diff_paths or interval is not None):
        _fail("--name needs --all, --diff or --interval")
    if save_path and (path is not None or diff_paths):
        _fail("--save keeps what PID or --all read")
    if interval is not None and (path is not None or diff_paths or save_path):
        _fail("--interval diffs live PID or --all")
    if sort not in SORT_KEYS and not (all_procs or diff_paths):
        _fail(f"--sort {sort} needs --all")
    if diff_paths:
        old, new = (mapsall.across(snapshot.load(p), by) for p in diff_paths)
        _print_diff(mapsall.diff(old, new, pattern), as_json)
        return
    if interval is not None:
        prev = mapsall.across(_collect(pid, use_adb, serial, all_procs), by)
        for _ in range(count):
            time.sleep(interval)
            cur = mapsall.across(_collect(pid, use_adb, serial, all_procs), by)
            _print_diff(mapsall.diff(prev, cur, pattern), as_json)
            prev = cur
        return
    if path is not None:
        pm = parse_file(path)
    elif not (use_adb or all_procs or save_path):
        pm = parse_pid(pid)                     # streamed as it is read: no copy of the whole smaps
    else:
        snap = _collect(pid, use_adb, serial, all_procs)
        if save_path:
            snapshot.save(snap, save_path, force=replace)
        if all_procs:
            a = mapsall.across(snap, by)
            breakdown = pattern is not None
            if as_json:
                click.echo(json.dumps(mapsview.across_json(a, pattern, sort, breakdown), indent=1, allow_nan=False))
            else:
                click.echo(mapsview.render_across(a, pattern, sort, breakdown))
            if save_path:
                click.echo(f"saved {len(snap.processes)} processes to {escape(save_path)}", err=True)
            return
        pm = parse(snap.processes[0].smaps, snap.source)
    source = pm.source
    if as_json:
        click.echo(json.dumps(mapsview.to_json(pm, by, sort, with_fragments), indent=1, allow_nan=False))
    else:
        click.echo(f"{escape(source)}: {len(pm.vmas)} VMAs ({pm.kind})")
        click.echo(mapsview.render_table(pm, by, sort))
        if with_fragments:
            click.echo()
            click.echo(mapsview.render_fragments(pm))
    if save_path:
        click.echo(f"saved to {escape(save_path)}", err=True)


def _print_diff(d: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(mapsview.diff_json(d), indent=1, allow_nan=False))
    else:
        click.echo(mapsview.render_diff(d))


def main(argv: Optional[Sequence[str]] = None) -> None:   # python3 -m vmatrace_bpf.commands.maps
    maps.main(args=list(argv) if argv is not None else sys.argv[1:], prog_name="vmabpf maps")


if __name__ == "__main__":
    main()

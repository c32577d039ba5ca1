"""`vmabpf report`: the per-process report of recordings (`vmabpf record`) or `watch -j` output.

Events go through the aggregation `watch` uses, so a recording gives the same
numbers offline as `watch` gave live.
"""

from __future__ import annotations

import json
import sys

import click

from ..errors import VmabpfError, one_line_errors
from ..chrome import chrome_trace
from ..options import PID, replace_option
from ..outfile import OutputFile
from ..reader import read_recordings
from ..escape import escape
from ..render import report_json, report_table

@click.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("-p", "--pid", type=PID, help="only this process")
@click.option("-j", "--json", "as_json", is_flag=True, help="same as --format json")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "chrome"]), default=None,
              help="table (default), json, or chrome (trace-event JSON for ui.perfetto.dev / chrome://tracing)")
@click.option("-o", "--output", metavar="OUT", help="write the report to OUT instead of stdout (a new file)")
@replace_option("OUT (with -o)")
@click.option("--top", type=click.IntRange(min=0), default=20, show_default=True,
              help="the table shows the N most active processes (0: all); -j always gives every one")
@one_line_errors
def report(files, pid, as_json, fmt, output, replace, top):
    """The per-process report of recordings made by `vmabpf record` (or of
    `vmabpf watch -j` output): names set and rejected, name objects, merges and
    why they failed, the VMAs names cost, splits, forks and name sharing.

    Needs no BPF and no root: record on the device, report anywhere.
    """
    if as_json and fmt not in (None, "json"):
        raise VmabpfError(f"-j and --format {fmt} disagree; use one", exit_code=2)
    fmt = fmt or ("json" if as_json else "table")
    out = None
    if output and output != "-":
        out = OutputFile(output, force=replace)  # refused at once if it exists, before the reading
        fp = out.open()
    else:
        fp = sys.stdout
    try:
        agg, infos, kept = read_recordings(list(files), pid, keep_events=(fmt == "chrome"))
        if fmt == "json":
            report_json(agg, infos, pid, fp.write)
        elif fmt == "chrome":
            fp.write(json.dumps(chrome_trace(kept, {"files": [i["path"] for i in infos]}), separators=(",", ":"),
                                allow_nan=False) + "\n")
        else:
            fp.write(report_table(agg.summary([pid] if pid is not None else None, top or None), infos) + "\n")
        fp.flush()
    except OSError as e:
        if out:
            out.discard()
        if isinstance(e, BrokenPipeError):
            raise
        raise VmabpfError(f"cannot write {output or 'stdout'}: {e.strerror or e}") from None
    except BaseException:
        if out:
            out.discard()
        raise
    if out:
        out.commit()
        click.echo(f"Wrote {fmt} report to {escape(output)}.", err=True)

"""`vmabpf doctor`: can vmabpf trace here, and through which attach points (``checks.py``)?"""

from __future__ import annotations

import json
import sys

import click

from ..checks import diagnose
from ..errors import VmabpfError, one_line_errors
from ..kernel import KernelInfo, check_saved_files, host_machine
from ..escape import escape
from ..plan import choose
from ..render import render_doctor
from ..session import tracefs_problem


@click.command()
@click.option("-j", "--json", "as_json", is_flag=True, help="print JSON")
@click.option("--kallsyms", type=click.Path(dir_okay=False), help="read a saved kallsyms instead of this kernel's")
@click.option("--filter-functions", type=click.Path(dir_okay=False), help="saved available_filter_functions")
@click.option("--btf", type=click.Path(dir_okay=False), help="saved BTF (/sys/kernel/btf/vmlinux)")
@click.option("--config", type=click.Path(dir_okay=False), help="saved kernel .config")
@click.option("--release", help="kernel release of the saved files")
@click.option("--arch", type=click.Choice(["x86_64", "arm64"]), help="architecture of the saved files")
@one_line_errors
def doctor(as_json, kallsyms, filter_functions, btf, config, release, arch):
    """Check kernel, privileges, bcc and headers; show the attach plan.

    Exits 0 when `vmabpf watch` can run here, 1 when it cannot.  With
    --kallsyms (and --btf, --config, ...) it plans for a kernel from saved
    files instead, e.g. ones pulled from a device with adb.
    """
    if kallsyms:
        kinfo = KernelInfo.from_files(release or "unknown", arch or host_machine(), kallsyms=kallsyms,
                                      filter_functions=filter_functions, btf=btf, config=config)
        check_saved_files(kinfo.files)
        report = diagnose(kinfo, live=False)
    elif filter_functions or btf or config:
        raise VmabpfError("--filter-functions, --btf and --config plan from saved files: they need --kallsyms",
                          exit_code=2)
    else:
        kinfo = KernelInfo.live()
        report = diagnose(kinfo)
    # the tracefs backend: what it can trace here (live: also whether it can start)
    tplan = choose(kinfo, backend="tracefs")
    tproblem = tracefs_problem(kinfo) if not kallsyms else None
    tracefs = {"usable": tproblem is None, "problem": tproblem, "missing": tplan.missing_line() or None}
    if as_json:
        click.echo(json.dumps(dict(report.to_json(), tracefs_backend=tracefs), indent=2, allow_nan=False))
    else:
        click.echo(render_doctor(report))
        click.echo("\ntracefs backend (--backend tracefs): " + escape(
            f"cannot start here: {tproblem}" if tproblem else "can start here" if not kallsyms else "planned"))
        if tracefs["missing"]:
            click.echo("  not traced with it: " + escape(tracefs["missing"]))
    sys.exit(0 if report.can_watch else 1)

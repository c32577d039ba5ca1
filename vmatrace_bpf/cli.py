"""vmabpf command line (click).  Conventions of bcc's tools: -p PID, interval
and count arguments, --ebpf, -j for JSON; errors are one line and a non-zero
exit, never a traceback."""

from __future__ import annotations

import json
import sys

import click

from . import __version__
from .errors import fail, one_line_errors


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vmabpf")
def main():
    """Trace what Linux does with named anonymous memory (prctl PR_SET_VMA_ANON_NAME).

    \b
    doctor   can vmabpf trace here, and through which kernel functions?
    watch    live events for one process: names, merges (and why they fail),
             splits, forks, name refcount sharing
    maps     names, sizes and name-caused fragmentation from /proc/PID/smaps,
             a saved file or an Android device (no BPF needed)
    """


@main.command()
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
    from .doctor import diagnose
    from .errors import VmabpfError
    from .kernel import KernelInfo, check_saved_files, host_machine
    from .render import render_doctor

    if kallsyms:
        kinfo = KernelInfo.from_files(release or "unknown", arch or host_machine(), kallsyms=kallsyms,
                                      filter_functions=filter_functions, btf=btf, config=config)
        check_saved_files(kinfo.files)
        report = diagnose(kinfo, live=False)
    elif filter_functions or btf or config:
        raise VmabpfError("--filter-functions, --btf and --config plan from saved files: they need --kallsyms",
                          exit_code=2)
    else:
        report = diagnose(KernelInfo.live())
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, allow_nan=False))
    else:
        click.echo(render_doctor(report))
    sys.exit(0 if report.can_watch else 1)


def run():
    """The `vmabpf` program.  `kill -USR1 PID` prints where it is (its Python stacks, on stderr)
    and it goes on: for finding out what a stuck trace waits for."""
    import faulthandler
    import signal
    try:
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    except (AttributeError, ValueError, OSError):  # no SIGUSR1, or stderr without a file descriptor
        pass
    no_args = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2; older ones print help and exit
    try:
        rc = main(standalone_mode=False, prog_name="vmabpf")
    except no_args as e:  # plain `vmabpf`: the help text
        click.echo(e.ctx.get_help() if e.ctx else str(e))
        rc = 0
    except click.UsageError as e:
        # one line, like every other error (click's own form is three); --help has the rest
        cmd = e.ctx.command_path if e.ctx else "vmabpf"
        fail(f"{e.format_message()} (see '{cmd} --help')", 2)
    except click.ClickException as e:
        fail(e.format_message(), e.exit_code)
    except click.Abort:
        fail("aborted", 130)
    sys.exit(rc if isinstance(rc, int) else 0)


def _register_commands():
    # each command lives in its own module; imported here, after `main` exists
    from .bench import bench
    from .forklat import forklat
    from .maps_cmd import maps
    from .record import record
    from .report_cmd import report
    from .watch import watch
    for cmd in (watch, forklat, maps, bench, record, report):
        main.add_command(cmd)


_register_commands()

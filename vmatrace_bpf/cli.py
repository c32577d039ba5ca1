"""vmabpf command line (click).  Conventions of bcc's tools: -p PID, interval
and count arguments, --ebpf, -j for JSON; errors are one line and a non-zero
exit, never a traceback."""

from __future__ import annotations

import sys

import click

from . import __version__
from .errors import fail


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
    # each command lives in its own module of commands/; imported here, after `main` exists
    from .commands.bench import bench
    from .commands.doctor import doctor
    from .commands.forklat import forklat
    from .commands.maps import maps
    from .commands.record import record
    from .commands.report import report
    from .commands.watch import watch
    for cmd in (doctor, watch, forklat, maps, bench, record, report):
        main.add_command(cmd)


_register_commands()

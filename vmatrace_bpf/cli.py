"""vmabpf command line (click).  Conventions of bcc's tools: -p PID, interval
and count arguments, --ebpf, -j for JSON; errors are one line and a non-zero
exit, never a traceback."""

from __future__ import annotations

import faulthandler
import importlib
import signal
import sys

import click

from . import __version__
from .errors import fail


# Each command lives in its own module of commands/, imported only when it runs: measured on this machine,
# importing all seven first costs ~0.12 s (`vmabpf maps PID` 0.19 s -> 0.31 s, `vmabpf --help` 0.17 s -> 0.30 s).
# --help lists them from the one-line summaries here; tests/unit/test_cli.py checks each against its command.
COMMANDS = {
    "bench": "Benchmarks on this kernel (side by side, ratios).",
    "doctor": "Check kernel, privileges, bcc and headers; show the attach plan.",
    "forklat": "Fork latency (dup_mmap) as log2 histograms, by VMA count, named/unnamed or comm.",
    "maps": "Memory per VMA name and name-caused fragmentation, from smaps.",
    "record": "Record named-VMA events to FILE (JSON Lines: header, events, footer) for `vmabpf report`, here "
              "or on another machine.",
    "report": "The per-process report of recordings made by `vmabpf record` (or of `vmabpf watch -j` output): "
              "names set and rejected, name objects, merges and why they failed, the VMAs names cost, splits, "
              "forks and name sharing.",
    "watch": "Live events for one process: names set and rejected, merges (merged or why not), splits, forks and "
             "name refcount sharing.",
}


def load_command(name: str) -> click.Command:
    return getattr(importlib.import_module(f".commands.{name}", __package__), name)


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        return load_command(name) if name in COMMANDS else None

    def format_commands(self, ctx, formatter):
        limit = formatter.width - 6 - max(len(n) for n in COMMANDS)
        rows = [(n, click.utils.make_default_short_help(COMMANDS[n], limit)) for n in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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

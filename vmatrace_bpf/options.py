"""Argument types shared by the commands: a bad number is a usage error (exit 2), never a filter
that silently means "everything" (-p 0) or a loop that never ends (--duration nan)."""

from __future__ import annotations

import math

import click

PID_MAX = 1 << 22  # PID_MAX_LIMIT on 64-bit kernels

PID = click.IntRange(1, PID_MAX)
COUNT = click.IntRange(min=1)


class Seconds(click.ParamType):
    """A finite number of seconds > 0."""

    name = "seconds"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            v = value
        else:
            try:
                v = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(v) or v <= 0:
            self.fail(f"{value!r} is not a positive, finite number of seconds", param, ctx)
        return v


SECONDS = Seconds()


# -- option blocks the tracing commands share (one wording, one type, one default) ---------------------------

def _both(*decorators):
    def apply(fn):
        for d in reversed(decorators):
            fn = d(fn)
        return fn
    return apply


children_option = click.option("--children", is_flag=True, help="follow processes it forks")
duration_option = click.option("--duration", type=SECONDS, help="stop after this many seconds")
ebpf_option = click.option("--ebpf", is_flag=True, help="print the BPF program and exit")
force_option = click.option("--force", multiple=True, metavar="CAP=VARIANT",
                            help="pin a capability to a variant of the attach plan (see doctor), "
                                 "e.g. fork=uprobe_dup_mmap-window")
backend_option = _both(
    click.option("--backend", type=click.Choice(["bcc", "tracefs"]), default=None,
                 help="bcc (default): BPF programs; tracefs (default with --adb): kprobe events, no compiler or bcc"),
    click.option("--adb", "use_adb", is_flag=True, help="trace an Android device over adb (tracefs backend, root)"),
    click.option("-s", "serial", metavar="SERIAL", help="with --adb: the device (as `adb devices` lists it)"))
# bcc tools' positional INTERVAL [COUNT]
interval_count_arguments = _both(click.argument("interval", required=False, type=SECONDS),
                                 click.argument("count", required=False, type=COUNT))


def replace_option(what: str):
    return click.option("--replace", is_flag=True, help=f"replace {what} if it exists (once the new one is complete)")

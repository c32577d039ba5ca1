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

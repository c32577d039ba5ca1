"""Errors a user can act on: one line, no traceback, a non-zero exit."""

import functools
import sys

import click

from .escape import escape


class VmabpfError(Exception):
    """Shown to the user as 'vmabpf: <message>' with exit status EXIT_CODE."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


def fail(message: str, code: int = 1):
    """Say MESSAGE as 'vmabpf: MESSAGE' on stderr, escaped (it may quote a file name, a line of a
    file, a device's answer), and exit with CODE."""

    click.echo(f"vmabpf: {escape(message)}", err=True)
    sys.exit(code)


def one_line_errors(fn):
    """Turn VmabpfError (and a few OS errors) into 'vmabpf: ...' and an exit code.
    Every command's body runs under it."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except VmabpfError as e:
            fail(str(e), e.exit_code)
        except BrokenPipeError:
            # output piped into head & co: not an error
            sys.stderr.close()
            sys.exit(0)
        except PermissionError as e:
            fail(f"permission denied: {e.filename or e}; run as root (sudo vmabpf ...)")
    return wrapper

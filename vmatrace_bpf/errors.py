"""Errors a user can act on: one line, no traceback, a non-zero exit."""


class VmabpfError(Exception):
    """Shown to the user as 'vmabpf: <message>' with exit status EXIT_CODE."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

"""The commands: a thin top floor (options, calls, exit codes).  None imports another."""

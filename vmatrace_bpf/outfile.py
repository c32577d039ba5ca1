"""Output files that never lose what was there: `record -o`, `report -o`.

- A new file is created exclusively (O_EXCL | O_NOFOLLOW, mode 0600: recordings of other
  processes are root-only data); if nothing gets written into it (the BPF program did not
  load), it is removed again -- it is ours.
- An existing file is refused, unless FORCE: then the output goes to a new file beside it,
  renamed over it only when complete, so the old file stays whole until then.  A symlink at
  the target is replaced (rename), never followed: root does not write where a link points.
"""

from __future__ import annotations

import os
import stat
import tempfile
from typing import IO, Optional

from .errors import VmabpfError


class OutputFile:
    def __init__(self, path: str, force: bool = False, mode: int = 0o600):
        self.path = path
        self.force = force
        self.mode = mode
        self.fp: Optional[IO[str]] = None
        self._tmp: Optional[str] = None  # set when replacing an existing file

    def open(self) -> IO[str]:
        path = self.path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        except OSError as e:
            raise VmabpfError(f"cannot write {path}: {e.strerror or e}") from None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise VmabpfError(f"{path} is a directory; -o wants a file name", exit_code=2)
        if st is not None and not self.force:
            what = "a symlink" if stat.S_ISLNK(st.st_mode) else "a file"
            raise VmabpfError(f"{path} exists ({what}); not overwritten (--replace replaces it, "
                              "keeping the old one until the new one is complete)", exit_code=2)
        try:
            if st is None:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, self.mode)
            else:
                fd, self._tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".vmabpf-tmp",
                                                 dir=os.path.dirname(os.path.abspath(path)))
                os.fchmod(fd, self.mode)
        except FileExistsError:
            raise VmabpfError(f"{path} appeared while starting; not overwritten", exit_code=2) from None
        except OSError as e:
            raise VmabpfError(f"cannot write {path}: {e.strerror or e}") from None
        self.fp = os.fdopen(fd, "w", encoding="utf-8")
        return self.fp

    def commit(self) -> None:
        """The output is complete: close it (and put it in place of the old file)."""
        if self.fp is None:
            return
        try:
            self.fp.flush()
            os.fsync(self.fp.fileno())
        except OSError:
            pass
        self.fp.close()
        self.fp = None
        if self._tmp:
            try:
                os.rename(self._tmp, self.path)
            except OSError as e:
                raise VmabpfError(f"cannot replace {self.path}: {e.strerror or e}; the output is in "
                                  f"{self._tmp}") from None
            self._tmp = None

    def discard(self) -> None:
        """Nothing worth keeping was written: remove what we created, leave any old file alone."""
        if self.fp is not None:
            try:
                self.fp.close()
            except OSError:
                pass
            self.fp = None
        victim = self._tmp or self.path
        try:
            os.unlink(victim)
        except OSError:
            pass
        self._tmp = None

"""The parse of a maps, smaps or smaps_rollup text: whole (parse) or streamed in pieces
(parse_stream), with a fast path per VMA checked against the line-by-line reference.

Errors a user can act on raise VmabpfError, naming the line (see vma.py for the checks).
"""

from __future__ import annotations

import gc
import re
from typing import Dict, Iterable, List, Optional

from .errors import VmabpfError
from .vma import _HEXCHARS, ProcMaps, Vma, _check_complete, _fail, _flags, _parse_field, decode, parse_header


_CACHE_MAX = 1 << 16


class _Ints(dict):
    """str -> int, converting each distinct value once (most smaps values repeat: 0, 4, 8 kB, ...);
    equal values share one int object."""

    __slots__ = ()

    def __missing__(self, s: str) -> int:
        v = self[s] = int(s)
        return v


class _Mids(dict):
    """"perms pgoff dev inode" of a header -> (perms, pgoff, dev, inode), parsed once per distinct
    text (anonymous VMAs all print "rw-p 00000000 00:00 0"); the strings are shared by the VMAs."""

    __slots__ = ()

    def __missing__(self, mid: str):
        perms, pgoff, dev, inode = mid.split(" ")
        v = self[mid] = (perms, int(pgoff, 16), dev, int(inode))
        return v


class _Parser:
    """The parse of one text, fed in pieces that end at a VMA header (streaming: no copy of the
    whole file).  Each VMA is first tried with a regular expression made from the first VMA's
    smaps keys (the kernel prints the same keys, in the same order, for every VMA of a process),
    matching the header and all its lines at once; anything that does not match exactly goes
    line by line through the checks that name the bad line.  The fast path converts each distinct
    value text once (_Ints, _Mids): 0.67 -> 0.47 s for 100k VMAs (benchmarks/maps_parse.py)."""

    def __init__(self, source: str, fast: bool = True):
        self.source = source
        self.vmas: List[Vma] = []
        self.lineno = 0
        self.fast_re = None
        self.fast_lines = 0
        self.want_fast = fast
        self.names: Dict[str, str] = {}
        self.seen_text = False
        self.pending = ""

    # the checks every VMA passes, fast or slow
    def _add(self, start, end, perms, pgoff, dev, inode, name, lineno, line_text) -> Vma:
        if end < start:
            raise _fail(self.source, lineno, "VMA ends before it starts", line_text())
        vmas = self.vmas
        if vmas and start < vmas[-1].vm_end:
            # the kernel prints one process's VMAs in address order, never overlapping: two files
            # pasted together (or an edited one) would be counted twice
            prev = vmas[-1]
            raise _fail(self.source, lineno, f"VMA overlaps or comes before the one on line {prev.line} "
                        f"({prev.vm_start:x}-{prev.vm_end:x}): not one process's maps in address order",
                        line_text())
        name = self.names.setdefault(name, name)
        v = Vma(start, end, perms, pgoff, dev, inode, name, lineno)
        vmas.append(v)
        return v

    def feed(self, text: str) -> None:
        if "\0" in text:
            raise VmabpfError(f"{self.source or 'input'}: binary data, not a /proc/PID/maps or smaps text")
        if not self.seen_text:
            if not text.strip():                    # only blanks so far: empty, unless more follows
                self.pending += text
                return
            self.seen_text = True
            text, self.pending = self.pending + text, ""
        pos, n = 0, len(text)
        fast = self.fast_re
        if fast is not None and self._bulk(text):
            return
        while pos < n:
            if fast is not None:
                m = fast.match(text, pos)
                if m is not None:
                    g = m.groups()
                    lineno = self.lineno + 1
                    perms, pgoff, dev, inode = self.mids[g[2]]
                    v = self._add(int(g[0], 16), int(g[1], 16), perms, pgoff, dev, inode,
                                  g[3].lstrip(" ") if g[3] else "", lineno, lambda: m.group(0).split("\n", 1)[0])
                    v._keys = self.fast_keys
                    v._vals = tuple(map(self.ints.__getitem__, g[4:-1]))
                    v.vm_flags = _flags(g[-1])
                    self.lineno += self.fast_lines
                    pos = m.end()
                    continue
            nxt = _next_header(text, pos)
            self._slow(text[pos:nxt])
            pos = nxt
            if fast is None and self.want_fast and len(self.vmas) >= 1:
                fast = self.fast_re = self._make_fast()

    def _bulk(self, text: str) -> bool:
        """All of TEXT at once if every line of it is a VMA in the first VMA's shape: findall
        (one C loop); the matches start at line starts and each takes the same number of whole
        lines, so equal line counts prove no line was skipped.  False: nothing was taken."""
        if not text.endswith("\n"):
            return False
        found = self.bulk_re.findall(text)
        if len(found) * self.fast_lines != text.count("\n"):
            return False
        keys, names, flags, vmas, new = self.fast_keys, self.names, _flags, self.vmas, object.__new__
        mids, ints = self.mids, self.ints.__getitem__
        lineno = self.lineno + 1
        step = self.fast_lines
        prev_end = vmas[-1].vm_end if vmas else -1
        start_len = len(vmas)
        append = vmas.append
        for g in found:
            start, end = int(g[0], 16), int(g[1], 16)
            if end < start or start < prev_end:
                del vmas[start_len:]                # let the line-by-line path name the line
                return False
            name = g[3]
            if name[:1] == " ":
                name = name.lstrip(" ")
            v = new(Vma)                            # no __init__: every slot is set here
            v.vm_start, v.vm_end, (v.perms, v.pgoff, v.dev, v.inode) = start, end, mids[g[2]]
            v.name, v.line, v._keys, v._vals = names.setdefault(name, name), lineno, keys, tuple(map(ints, g[4:-1]))
            v.vm_flags, v._extra = flags(g[-1]), None
            append(v)
            prev_end = end
            lineno += step
        if len(mids) > _CACHE_MAX:
            mids.clear()
        if len(self.ints) > _CACHE_MAX:
            self.ints.clear()
        self.lineno = lineno - 1
        return True

    def _slow(self, block: str) -> None:
        """One VMA (or a few lines) line by line, with the error that names the line."""
        lines = block.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        cur: Optional[Vma] = self.vmas[-1] if self.vmas else None
        fields: Optional[Dict[str, int]] = None
        extra: Dict[str, str] = {}
        for line in lines:
            self.lineno += 1
            lineno = self.lineno
            if line.endswith("\r"):                # saved from an old adb shell (a pty): CRLF
                line = line[:-1]
            if not line:
                raise _fail(self.source, lineno, "empty line inside a maps/smaps text")
            if line[0] in _HEXCHARS:
                hdr = parse_header(line)
                if hdr is None:
                    raise _fail(self.source, lineno, "not a /proc/PID/maps or smaps line", line)
                self._finish(cur, fields, extra)
                cur = self._add(*hdr, lineno, lambda: line)
                fields, extra = {}, {}
                continue
            key, sep, value = line.partition(":")
            if not sep or cur is None or not key or not (key[0].isalpha() and key.replace("_", "").isalnum()):
                raise _fail(self.source, lineno, "not a /proc/PID/maps or smaps line", line)
            if fields is None:                      # lines continuing the VMA of the last block
                fields, extra = cur.fields, dict(cur.extra)
            try:
                flags = _parse_field(fields, extra, key, value)
            except ValueError:
                raise _fail(self.source, lineno, f"malformed smaps field {key}", line) from None
            if flags is not None:
                cur.vm_flags = _flags(flags)
        self._finish(cur, fields, extra)

    @staticmethod
    def _finish(cur: Optional[Vma], fields, extra) -> None:
        if cur is not None and fields is not None:
            cur.set_fields(fields)
            cur._extra = extra or None

    def _make_fast(self):
        """The regular expression of a whole VMA with the first VMA's keys, or None (a maps
        text, or one with Name or other non-number lines: line by line then)."""
        first = self.vmas[0]
        if first.extra:
            return None
        keys = list(first.fields)
        parts = [r"([0-9a-f]+)-([0-9a-f]+) ([r-][w-][x-][ps] [0-9a-f]+ [0-9a-f]+:[0-9a-f]+ [0-9]+)"
                 r"(?: ([^\n]*))?(?<!\r)\n"]
        for k in keys:
            unit = "" if k in ("THPeligible", "ProtectionKey") else " kB"
            parts.append(re.escape(k) + r": *([0-9]+)" + unit + r"\n")
        if first.vm_flags is None:
            return None                             # every smaps since 2.6.x ends with VmFlags (3.8+)
        parts.append(r"VmFlags:([^\n]*)(?<!\r)\n")
        self.fast_keys = first._keys
        self.mids, self.ints = _Mids(), _Ints()
        self.fast_lines = 1 + len(keys) + 1
        self.bulk_re = re.compile("(?m)^" + "".join(parts))
        return re.compile("".join(parts))

    def finish(self) -> "ProcMaps":
        if not self.vmas:
            if not self.seen_text:
                raise VmabpfError(f"{self.source or 'input'}: empty (no VMAs)")
            raise _fail(self.source, 1, "not a /proc/PID/maps or smaps line")
        kind = _check_complete(self.vmas, self.source)
        return ProcMaps(self.vmas, kind, self.source)


def _next_header(text: str, pos: int) -> int:
    """Where the next VMA header after POS starts (a line starting with a hex digit), or the end."""
    i = pos
    n = len(text)
    while True:
        i = text.find("\n", i)
        if i < 0 or i + 1 >= n:
            return n
        if text[i + 1] in _HEXCHARS:
            return i + 1
        i += 1


def _last_header(text: str) -> int:
    """Where the last VMA header in TEXT starts (0 if none after the first line)."""
    i = len(text) - 1
    while True:
        i = text.rfind("\n", 0, i)
        if i < 0:
            return 0
        if i + 1 < len(text) and text[i + 1] in _HEXCHARS:
            return i + 1


def parse(text: str, source: str = "", fast: bool = True) -> ProcMaps:
    """Parse maps, smaps or smaps_rollup TEXT; SOURCE names it in errors; FAST=False:
    line by line only (the reference the fast path is tested against).

    Raises VmabpfError for an empty text, a binary file, a line that is neither
    a VMA header nor a smaps field, and a truncated smaps (a VMA at the end
    without the fields every other VMA has).
    """
    if not text.strip():
        raise VmabpfError(f"{source or 'input'}: empty (no VMAs)")
    p = _Parser(source, fast)
    with _no_gc():
        p.feed(text)
    return p.finish()


class _no_gc:
    """The cyclic GC off while VMAs are made: they hold no cycles, and the collector's passes
    over 100k new objects cost ~20% of the parse (measured with benchmarks/maps_parse.py)."""

    def __enter__(self):
        self.was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc):
        if self.was:
            gc.enable()


def parse_stream(chunks: Iterable[bytes], source: str = "", fast: bool = True) -> ProcMaps:
    """Parse what CHUNKS (bytes, any sizes) hold without joining them: each piece is cut at
    the last VMA header in it, decoded and parsed; only the rest is carried over."""
    p = _Parser(source, fast)
    with _no_gc():
        return _stream(p, chunks)


def _stream(p: "_Parser", chunks: Iterable[bytes]) -> ProcMaps:
    carry = b""
    for chunk in chunks:
        if not chunk:
            continue
        buf = carry + chunk if carry else chunk
        nl = buf.rfind(b"\n")
        if nl < 0:
            carry = buf
            continue
        text = decode(buf[:nl + 1])
        cut = _last_header(text)
        if cut == 0:
            carry = buf
            continue
        head = text[:cut]
        carry = text[cut:].encode("utf-8", "surrogateescape") + buf[nl + 1:]
        p.feed(head)
    if carry:
        p.feed(decode(carry))
    if not p.vmas and not p.seen_text:
        raise VmabpfError(f"{p.source or 'input'}: empty (no VMAs)")
    return p.finish()

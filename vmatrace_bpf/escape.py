"""The one escaping function: everything from outside (names, comms, recordings, smaps, file
names, kernel strings) goes through it before it reaches a terminal."""

from __future__ import annotations


def escape(text: str) -> str:
    """Printable ASCII as is (a backslash doubled); every other character as \\xNN / \\uNNNN /
    \\UNNNNNNNN, so no control byte, escape sequence or lone surrogate is ever printed raw.
    Bytes that were not UTF-8, kept as U+DC80..U+DCFF by the "surrogateescape" decoding of
    paths, show as the byte they were (\\xNN)."""
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text
    out = []
    for ch in text:
        o = ord(ch)
        if 0x20 <= o < 0x7F and ch != "\\":
            out.append(ch)
        elif ch == "\\":
            out.append("\\\\")
        elif o < 0x100:
            out.append(f"\\x{o:02x}")
        elif 0xDC80 <= o <= 0xDCFF:
            out.append(f"\\x{o - 0xDC00:02x}")
        else:
            out.append(f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
    return "".join(out)

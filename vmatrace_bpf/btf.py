"""A small reader for the kernel's BTF (``/sys/kernel/btf/vmlinux``).

Only what attach planning needs: which functions the kernel has (BTF keeps a FUNC record for every
out-of-line function, so this also tells whether fentry can target it), function parameter names, and
the byte offset of a struct member.  Structs private to ``mm/`` (``struct vma_merge_struct``) are not in
the kernel headers bcc compiles against, so their offsets come from here.  Format:
Documentation/bpf/btf.rst.  Parsing is lazy and indexes names only; records are decoded when asked for.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .errors import VmabpfError
from .inputs import read_regular

BTF_MAGIC = 0xEB9F

# BTF_KIND_* and the size of the data that follows each btf_type record.
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION = 1, 2, 3, 4, 5
KIND_ENUM, KIND_FWD, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST = 6, 7, 8, 9, 10
KIND_RESTRICT, KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC = 11, 12, 13, 14, 15
KIND_FLOAT, KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 16, 17, 18, 19

_MODIFIERS = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)
_MAX_CHAIN = 64  # typedef/qualifier/pointer chains are a handful long in real BTF
MAX_BYTES = 256 << 20  # a vmlinux BTF is 2-10 MB


class BTFError(Exception):
    """The file is not BTF, or is truncated."""


@dataclass(frozen=True)
class Member:
    name: str
    type_id: int
    bit_offset: int

    @property
    def offset(self) -> int:
        return self.bit_offset // 8


@dataclass(frozen=True)
class Param:
    name: str
    type_id: int


@dataclass(frozen=True)
class Prototype:
    """A function's BTF prototype: parameters in order and the return type id (0 = void)."""

    func: str
    params: Tuple[Param, ...]
    ret_type: int

    def names(self) -> List[str]:
        return [p.name for p in self.params]

    def text(self) -> str:
        return f"{self.func}({', '.join(self.names())})"


def _extra_size(kind: int, vlen: int) -> int:
    if kind in (KIND_INT, KIND_VAR, KIND_DECL_TAG):
        return 4
    if kind == KIND_ARRAY:
        return 12
    if kind in (KIND_STRUCT, KIND_UNION, KIND_DATASEC, KIND_ENUM64):
        return 12 * vlen
    if kind in (KIND_ENUM, KIND_FUNC_PROTO):
        return 8 * vlen
    return 0


_EXTRA_FIXED = tuple(_extra_size(k, 0) for k in range(32))
_EXTRA_PER_MEMBER = tuple(_extra_size(k, 1) - _extra_size(k, 0) for k in range(32))


class BTF:
    def __init__(self, data: bytes):
        if len(data) < 24:
            raise BTFError("too short for a BTF header")
        magic, = struct.unpack_from("<H", data, 0)
        endian = "<"
        if magic != BTF_MAGIC:
            magic, = struct.unpack_from(">H", data, 0)
            if magic != BTF_MAGIC:
                raise BTFError("bad BTF magic")
            endian = ">"
        self._e = endian
        hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(endian + "5I", data, 4)
        self._data = data
        self._types_start = hdr_len + type_off
        self._types_end = self._types_start + type_len
        self._str_start = hdr_len + str_off
        self._str_end = self._str_start + str_len
        if self._types_end > len(data) or self._str_end > len(data):
            raise BTFError("truncated BTF")
        if hdr_len < 24 or self._types_start > self._types_end or self._str_start > self._str_end:
            raise BTFError("malformed BTF header")
        # id -> offset of its btf_type record, decoded when asked for (_rec): no tuple per type (60-150k
        # types in a vmlinux), and int keys below: the index in 0.62-0.74x the time (session 27, host)
        self._pos = array("q", [0])
        self._unpack3 = struct.Struct(endian + "3I").unpack_from
        # kind << 32 | name's offset in the string section -> type ids: names are decoded only when asked
        # for (decoding every one made BTF parsing ~2x slower: seconds of `watch`'s start under TCG)
        self._by_name: Dict[int, List[int]] = {}
        self._name_offs: Dict[str, Tuple[int, ...]] = {}
        self._inside: Dict[Tuple[int, str], List[int]] = {}  # (kind, name) of names that end another string
        try:
            self._index()
        except (struct.error, ValueError, IndexError) as e:
            raise BTFError(f"malformed BTF type section ({e})") from None

    @classmethod
    def from_file(cls, path: str) -> "BTF":
        """BTF from PATH (a regular file of at most MAX_BYTES); BTFError for anything malformed."""
        try:
            return cls(read_regular(path, "a BTF file", MAX_BYTES))
        except VmabpfError as e:
            raise BTFError(str(e)) from None

    def _str(self, off: int) -> str:
        start = self._str_start + off
        end = self._data.find(b"\0", start, self._str_end)
        if off < 0 or end < 0:
            raise BTFError(f"string offset {off} is outside the string section")
        return self._data[start:end].decode("utf-8", "replace")

    def _index(self) -> None:
        unpack = struct.Struct(self._e + "2I").unpack_from
        data, pos, end = self._data, self._types_start, self._types_end
        named = frozenset((KIND_STRUCT, KIND_UNION, KIND_FUNC, KIND_TYPEDEF, KIND_ENUM, KIND_ENUM64))
        fixed, per_member = _EXTRA_FIXED, _EXTRA_PER_MEMBER  # (_extra_size as two tables: the loop's hot part)
        by_name, inside, str_start = self._by_name, [], self._str_start
        str_len = self._str_end - str_start
        if self._str_end > self._str_start and data[self._str_end - 1] != 0:
            raise BTFError("the string section does not end with a NUL")
        positions, add = self._pos, self._pos.append
        while pos < end:
            name_off, info = unpack(data, pos)
            kind = (info >> 24) & 0x1F
            add(pos)
            if name_off and kind in named:
                tid = len(positions) - 1
                if name_off >= str_len:
                    raise BTFError(f"type {tid}: name offset {name_off} is outside the string section")
                key = kind << 32 | name_off
                if data[str_start + name_off - 1]:  # a name inside another string: found by text, below
                    inside.append((kind, name_off, tid))
                ids = by_name.get(key)
                if ids is None:
                    by_name[key] = [tid]
                else:
                    ids.append(tid)
            pos += 12 + fixed[kind] + per_member[kind] * (info & 0xFFFF)
        if pos != end:
            raise BTFError("the type section does not end on a type boundary (truncated or corrupt)")
        for kind, name_off, tid in inside:
            self._inside.setdefault((kind, self._str(name_off)), []).append(tid)

    # -- lookups -----------------------------------------------------------
    def _rec(self, tid: int) -> Tuple[int, int, int, int, int, int]:
        """Type TID's record: (offset of its btf_type, kind, vlen, kind_flag, name_off, size_or_type)."""
        pos = self._pos[self._check_id(tid)]
        name_off, info, size_or_type = self._unpack3(self._data, pos) if tid else (0, 0, 0)  # 0: void
        return (pos, (info >> 24) & 0x1F, info & 0xFFFF, info >> 31, name_off, size_or_type)

    def kind(self, tid: int) -> int:
        return self._rec(tid)[1]

    def name(self, tid: int) -> str:
        name_off = self._rec(tid)[4]
        return self._str(name_off) if name_off else ""

    def _offs(self, name: str) -> Tuple[int, ...]:
        """Every offset in the string section at which the string NAME is (deduplicated BTF: one)."""
        offs = self._name_offs.get(name)
        if offs is None:
            found, needle = [], b"\0" + name.encode("utf-8", "surrogateescape") + b"\0"
            at = self._data.find(needle, self._str_start, self._str_end)
            while at >= 0 and name:
                found.append(at + 1 - self._str_start)
                at = self._data.find(needle, at + 1, self._str_end)
            offs = self._name_offs[name] = tuple(found)
        return offs

    def _named(self, kind: int, name: str) -> List[int]:
        """Type ids of KIND called NAME, in id order."""
        ids = [tid for off in self._offs(name) for tid in self._by_name.get(kind << 32 | off, ())]
        ids += self._inside.get((kind, name), ())
        return sorted(set(ids)) if len(ids) > 1 else ids

    def has_func(self, name: str) -> bool:
        return bool(self._named(KIND_FUNC, name))

    def func_names(self) -> List[str]:
        return [self._str(key & 0xFFFFFFFF) for key in self._by_name if key >> 32 == KIND_FUNC]

    def func_params(self, name: str) -> Optional[List[str]]:
        """Parameter names of function NAME, or None if BTF has no such function."""
        protos = self.func_prototypes(name)
        return [p.name for p in protos[0].params] if protos else None

    def func_prototypes(self, name: str) -> List["Prototype"]:
        """Every distinct prototype BTF records for function NAME (usually one; two static
        functions of one name in different files can differ).  Empty: no such function."""
        out: List[Prototype] = []
        for fid in self._named(KIND_FUNC, name):
            proto = self._rec(fid)[5]
            pos, kind, vlen, _, _, ret_type = self._rec(proto)
            if kind != KIND_FUNC_PROTO:
                raise BTFError(f"function {name}: type {proto} is not a prototype")
            unpack = struct.Struct(self._e + "2I").unpack_from
            params = []
            for i in range(vlen):
                name_off, ptype = unpack(self._data, pos + 12 + 8 * i)
                params.append(Param(self._str(name_off) if name_off else "", self._check_id(ptype)))
            p = Prototype(name, tuple(params), ret_type)
            if p not in out:
                out.append(p)
        return out

    def _check_id(self, tid: int) -> int:
        if not 0 <= tid < len(self._pos):
            raise BTFError(f"type id {tid} out of range")
        return tid

    def type_size(self, tid: int) -> Optional[int]:
        """Size in bytes of type TID (typedefs and qualifiers skipped), None when it has none (void,
        function)."""
        tid = self.resolve(tid)
        _, kind, _, _, _, size = self._rec(tid)
        if tid == 0 or kind in (KIND_FUNC, KIND_FUNC_PROTO, KIND_FWD):
            return None
        if kind == KIND_PTR:
            return 8
        if kind == KIND_ARRAY:
            return None
        return size

    def type_desc(self, tid: int) -> str:
        """'ptr struct vm_area_struct', 'int', 'unsigned long', 'struct vm_userfaultfd_ctx', 'void'."""
        t = self.resolve(tid)
        desc = []
        for _ in range(_MAX_CHAIN):
            if self.kind(t) != KIND_PTR:
                break
            desc.append("ptr")
            t = self.resolve(self._rec(t)[5])
        if t == 0:
            desc.append("void")
            return " ".join(desc)
        kind = self.kind(t)
        prefix = {KIND_STRUCT: "struct ", KIND_UNION: "union ", KIND_ENUM: "enum ", KIND_ENUM64: "enum "}.get(kind, "")
        desc.append(prefix + (self.name(t) or "?"))
        return " ".join(desc)

    def is_struct(self, tid: int) -> bool:
        return self.kind(self.resolve(tid)) in (KIND_STRUCT, KIND_UNION)

    def is_scalar(self, tid: int) -> bool:
        """An integer, enum or pointer: passed in one general-purpose register."""
        return self.kind(self.resolve(tid)) in (KIND_INT, KIND_ENUM, KIND_ENUM64, KIND_PTR)

    def struct_id(self, name: str) -> Optional[int]:
        for kind in (KIND_STRUCT, KIND_UNION):
            for tid in self._named(kind, name):
                rec = self._rec(tid)
                if rec[5] or rec[2]:  # skip empty decls
                    return tid
        return None

    def members(self, tid: int) -> List[Member]:
        pos, kind, vlen, kflag = self._rec(tid)[:4]
        if kind not in (KIND_STRUCT, KIND_UNION):
            raise BTFError(f"type {tid} is not a struct or union")
        unpack = struct.Struct(self._e + "3I").unpack_from
        out = []
        for i in range(vlen):
            name_off, mtype, off = unpack(self._data, pos + 12 + 12 * i)
            if kflag:
                off &= 0xFFFFFF
            out.append(Member(self._str(name_off) if name_off else "", mtype, off))
        return out

    def resolve(self, tid: int) -> int:
        """Skip typedefs and qualifiers (a chain that loops or never ends is malformed BTF)."""
        for _ in range(_MAX_CHAIN):
            rec = self._rec(tid)
            if rec[1] not in _MODIFIERS:
                return tid
            tid = rec[5]
        raise BTFError(f"type {tid}: typedef/qualifier chain longer than {_MAX_CHAIN} (a loop?)")

    def member_offset(self, struct_name: str, member: str) -> Optional[int]:
        """Byte offset of MEMBER (a dotted path allowed) in struct STRUCT_NAME.

        Members of anonymous unions/structs are found as if they were direct
        members, as C does.
        """
        found = self.member(struct_name, member)
        return None if found is None else found[0]

    def member(self, struct_name: str, member: str) -> Optional[Tuple[int, int]]:
        """(byte offset, type id) of MEMBER (a dotted path allowed) in struct STRUCT_NAME, as member_offset."""
        tid = self.struct_id(struct_name)
        if tid is None:
            return None
        total = 0
        mtype = tid
        for part in member.split("."):
            found = self._find_member(self.resolve(mtype), part) if self.is_struct(mtype) else None
            if found is None:
                return None
            bit_off, mtype = found
            total += bit_off
        return total // 8, mtype

    def _find_member(self, tid: int, name: str, depth: int = 0) -> Optional[Tuple[int, int]]:
        if depth > _MAX_CHAIN:
            raise BTFError(f"struct {tid}: anonymous members nested deeper than {_MAX_CHAIN} (a loop?)")
        for m in self.members(tid):
            if m.name == name:
                return m.bit_offset, m.type_id
            if not m.name:
                inner = self.resolve(m.type_id)
                if self.kind(inner) in (KIND_STRUCT, KIND_UNION):
                    found = self._find_member(inner, name, depth + 1)
                    if found is not None:
                        return m.bit_offset + found[0], found[1]
        return None

    def member_type_desc(self, struct_name: str, member: str) -> Optional[str]:
        """A short description of a member's type: 'ptr struct anon_vma_name', 'ptr char', ..."""
        tid = self.struct_id(struct_name)
        if tid is None:
            return None
        found = self._find_member(tid, member)
        if found is None:
            return None
        return self.type_desc(found[1])

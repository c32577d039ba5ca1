"""Build small BTF blobs for tests: a kernel whose prototypes differ from every known one."""

import struct

INT, PTR, STRUCT, FUNC, FUNC_PROTO = 1, 2, 4, 12, 13


class BTFBuilder:
    def __init__(self):
        self._types = []  # bytes of each type record, id = index + 1
        self._strs = b"\0"

    def _s(self, name):
        if not name:
            return 0
        off = len(self._strs)
        self._strs += name.encode() + b"\0"
        return off

    def _add(self, rec):
        self._types.append(rec)
        return len(self._types)

    def int(self, name, size):
        return self._add(struct.pack("<3I", self._s(name), INT << 24, size) + struct.pack("<I", size * 8))

    def ptr(self, tid):
        return self._add(struct.pack("<3I", 0, PTR << 24, tid))

    def struct(self, name, size, members=()):
        rec = struct.pack("<3I", self._s(name), (STRUCT << 24) | len(members), size)
        for mname, tid, bit_off in members:
            rec += struct.pack("<3I", self._s(mname), tid, bit_off)
        return self._add(rec)

    def func(self, name, ret, params):
        """FUNC NAME with a FUNC_PROTO returning RET (type id, 0 = void) taking PARAMS [(name, type id)]."""
        rec = struct.pack("<3I", 0, (FUNC_PROTO << 24) | len(params), ret)
        for pname, tid in params:
            rec += struct.pack("<2I", self._s(pname), tid)
        proto = self._add(rec)
        return self._add(struct.pack("<3I", self._s(name), FUNC << 24, proto))

    def bytes(self):
        types = b"".join(self._types)
        hdr = struct.pack("<HBBI4I", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(self._strs))
        return hdr + types + self._strs


def mm_kernel(builder=None, uffd_size=8):
    """A builder with the types vmabpf's probes name: (builder, {type name: id})."""
    b = builder or BTFBuilder()
    t = {}
    t["int"] = b.int("int", 4)
    t["long int"] = b.int("long int", 8)
    t["ulong"] = b.int("long unsigned int", 8)
    t["void*"] = b.ptr(0)
    for s in ("vm_area_struct", "mm_struct", "vma_iterator", "anon_vma", "file", "mempolicy", "anon_vma_name",
              "kref", "pt_regs", "vma_merge_struct"):
        t[s] = b.struct(s, 8, [("x", t["ulong"], 0)])
        t[s + "*"] = b.ptr(t[s])
    t["vm_userfaultfd_ctx"] = b.struct("vm_userfaultfd_ctx", uffd_size,
                                       [("ctx", t["void*"], 0)] if uffd_size else [])
    return b, t

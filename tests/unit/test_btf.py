import pytest

from vmatrace_bpf.btf import BTF, BTFError

from conftest import btf_path


@pytest.mark.parametrize("release,anon_name,state", [("6.12.117", 104, 116), ("7.2.13", 112, 120)])
def test_vma_merge_struct_offsets(release, anon_name, state):
    p = btf_path("x86_64", release)
    if not p:
        pytest.skip(f"needs ../shared/vm/x86_64/btf-{release}")
    b = BTF.from_file(p)
    assert b.member_offset("vma_merge_struct", "anon_name") == anon_name
    assert b.member_offset("vma_merge_struct", "state") == state
    assert b.member_type_desc("vm_area_struct", "anon_name") == "ptr struct anon_vma_name"
    assert b.func_params("vma_modify") == ["vmg"]


def test_6_1_vma_merge_signature_and_union():
    p = btf_path("x86_64", "6.1.192")
    if not p:
        pytest.skip("needs ../shared/vm/x86_64/btf-6.1.192")
    b = BTF.from_file(p)
    assert b.func_params("vma_merge")[10] == "anon_name"
    # anon_name lives in an anonymous union with shared.rb: found through it
    assert b.member_offset("vm_area_struct", "anon_name") == 40
    assert b.struct_id("vma_merge_struct") is None


def test_not_btf():
    with pytest.raises(BTFError):
        BTF(b"\0" * 64)
    with pytest.raises(BTFError):
        BTF(b"\x9f\xeb\x01\x00" + b"\x18\0\0\0" + b"\0\0\0\0" + b"\xff\0\0\0" * 4)


# -- malformed BTF: one BTFError, never a hang, a loop or another exception -------------------------
import struct  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from btfgen import mm_kernel  # noqa: E402


def small_btf():
    b, t = mm_kernel()
    b.func("vma_merge", t["vm_area_struct*"], [("vmi", t["vma_iterator*"]), ("anon_name", t["anon_vma_name*"])])
    return b.bytes()


SMALL = small_btf()


def exercise(data):
    """What vmabpf asks of a BTF: it answers, or raises BTFError."""
    try:
        b = BTF(data)
        for fn in b.func_names()[:20]:
            for p in b.func_prototypes(fn):
                b.type_desc(p.ret_type)
                for q in p.params:
                    b.type_size(q.type_id), b.type_desc(q.type_id), b.is_scalar(q.type_id), b.is_struct(q.type_id)
        b.member_offset("vm_area_struct", "x")
        b.member_type_desc("vm_userfaultfd_ctx", "ctx")
    except BTFError:
        pass


def test_self_referencing_types_do_not_loop():
    b, t = mm_kernel()
    data = bytearray(b.bytes())
    # turn the first pointer type into a volatile qualifier of itself
    first_ptr = t["void*"]
    pos, tid = 24, 1  # types start right after the 24-byte header: walk to type first_ptr
    while tid < first_ptr:
        kind, vlen = (struct.unpack_from("<I", data, pos + 4)[0] >> 24) & 0x1F, \
            struct.unpack_from("<I", data, pos + 4)[0] & 0xFFFF
        pos += 12 + {1: 4, 4: 12 * vlen, 13: 8 * vlen}.get(kind, 0)
        tid += 1
    struct.pack_into("<I", data, pos + 4, 9 << 24)  # BTF_KIND_VOLATILE ...
    struct.pack_into("<I", data, pos + 8, first_ptr)  # ... of itself
    bb = BTF(bytes(data))
    with pytest.raises(BTFError, match="loop"):
        bb.resolve(first_ptr)
    exercise(bytes(data))


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(SMALL) - 1), st.integers(0, 255)), min_size=1, max_size=8),
       st.integers(0, len(SMALL)))
def test_mutated_btf_gives_btferror_or_answers(flips, cut):
    data = bytearray(SMALL)
    for pos, val in flips:
        data[pos] = val
    exercise(bytes(data[:cut]) if cut < 24 else bytes(data))
    exercise(bytes(data[:cut]))


@settings(max_examples=100, deadline=2000)
@given(st.binary(max_size=512))
def test_random_bytes_are_not_btf(data):
    exercise(data)
    exercise(b"\x9f\xeb\x01\x00" + data)


def test_names_found_wherever_the_string_section_holds_them():
    """Names are looked up by their text in the string section, not decoded for every type: a name kept twice
    (BTF not deduplicated) finds both types, in id order; a name that is the tail of another string (its
    offset inside that string) is found too; a name offset past the section is malformed BTF."""
    import struct as st

    from btfgen import BTFBuilder
    g = BTFBuilder()
    i = g.int("int", 4)
    f1 = g.func("vma_merge", i, [("a", i)])
    f2 = g.func("vma_merge", i, [("a", i), ("b", i)])  # a second prototype, its name stored again
    big = g.struct("not_vm_area_struct", 8, [("x", i, 0)])
    tail = g.struct("", 16, [("vm_start", i, 0)])
    name_off = st.unpack_from("<I", g._types[big - 1])[0] + len("not_")
    g._types[tail - 1] = st.pack("<I", name_off) + g._types[tail - 1][4:]
    b = BTF(g.bytes())
    assert [len(p.params) for p in b.func_prototypes("vma_merge")] == [1, 2]
    assert b.has_func("vma_merge") and not b.has_func("vma_merg") and not b.has_func("")
    assert b.struct_id("vm_area_struct") == tail and b.struct_id("not_vm_area_struct") == big
    assert b.member_offset("vm_area_struct", "vm_start") == 0
    assert sorted(b.func_names()) == ["vma_merge", "vma_merge"]
    assert f1 < f2
    g._types[tail - 1] = st.pack("<I", 1 << 20) + g._types[tail - 1][4:]
    with pytest.raises(BTFError, match="outside the string section"):
        BTF(g.bytes())

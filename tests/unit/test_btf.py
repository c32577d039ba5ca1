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

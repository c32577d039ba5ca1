"""Attach-point choice from the kallsyms / available_filter_functions / BTF of the real guest kernels."""

import pytest

from vmatrace_bpf.kernel import KernelInfo
from vmatrace_bpf.plan import CAPABILITIES, PlanError, choose, parse_force



def targets(choice):
    return [(p.kind, p.target) for p in choice.probes]


def test_6_1_uses_vma_merge_and_dup_mmap(saved_kernel):
    plan = choose(saved_kernel("x86_64", "6.1.192"))
    assert plan.missing == []
    assert plan.choices["merge"].variant.name == "vma_merge"
    assert targets(plan.choices["merge"]) == [("kprobe", "vma_merge"), ("kretprobe", "vma_merge"),
                                              ("kprobe", "can_vma_merge_before")]
    assert plan.choices["fork"].variant.name == "dup_mmap"
    assert plan.choices["split"].probes[0].target == "__split_vma"
    assert plan.choices["prctl"].variant.name == "syscall-tracepoints"
    assert "MERGE_VMA_MERGE" in plan.defines() and "MERGE_VMG" not in plan.defines()


def test_6_12_uses_vma_merge_struct_and_fork_window(saved_kernel):
    plan = choose(saved_kernel("x86_64", "6.12.117"))
    merge = plan.choices["merge"]
    assert merge.variant.name == "vma_merge_struct"
    # vma_merge_existing_range is inlined into vma_modify on this build
    assert targets(merge) == [("kprobe", "vma_merge_new_range"), ("kretprobe", "vma_merge_new_range"),
                              ("kprobe", "vma_modify"), ("kretprobe", "vma_modify")]
    assert merge.rejected == [("vma_merge", "not traceable here: vma_merge (inlined, notrace or absent)")]
    assert merge.defines["VMG_ANON_NAME_OFF"] == 104 and merge.defines["VMG_STATE_OFF"] == 116
    assert merge.defines["VMG_MIDDLE_OFF"] == 40  # 6.12 calls it "vma"
    fork = plan.choices["fork"]
    assert fork.variant.name == "uprobe_dup_mmap-window"  # dup_mmap is inlined into dup_mm
    assert targets(fork)[:2] == [("kprobe", "uprobe_start_dup_mmap"), ("kprobe", "uprobe_end_dup_mmap")]


def test_7_2_offsets_differ_from_6_12(saved_kernel):
    plan = choose(saved_kernel("x86_64", "7.2.13"))
    d = plan.choices["merge"].defines
    assert (d["VMG_ANON_NAME_OFF"], d["VMG_STATE_OFF"], d["VMG_MIDDLE_OFF"], d["VMG_PREV_OFF"]) == (112, 120, 24, 16)
    assert (d["VMG_START_OFF"], d["VMG_END_OFF"]) == (48, 56)
    assert plan.choices["fork"].variant.name == "dup_mmap"  # global in mm/mmap.c again


def test_arm64_names_without_btf(saved_kernel):
    k = saved_kernel("arm64", "6.12.117", with_btf=False)
    plan = choose(k)
    # without BTF the private struct's layout is unknown: merge is missing, and says why
    assert plan.choices["merge"].variant is None
    assert any("needs BTF" in why for _, why in plan.choices["merge"].rejected)
    assert plan.choices["split"].ok and plan.choices["fork"].variant.name == "uprobe_dup_mmap-window"
    assert k.syscall_symbol("prctl") == "__arm64_sys_prctl"  # arm64 syscall wrapper name


def test_force_and_bad_force(saved_kernel):
    k = saved_kernel("x86_64", "7.2.13")
    plan = choose(k, force=parse_force(["fork=uprobe_dup_mmap-window", "prctl=syscall-kprobe"]))
    assert plan.choices["fork"].variant.name == "uprobe_dup_mmap-window"
    assert targets(plan.choices["prctl"]) == [("kprobe", "__x64_sys_prctl"), ("kretprobe", "__x64_sys_prctl")]
    with pytest.raises(PlanError, match="unknown variant"):
        parse_force(["fork=nope"])
    # forcing a variant this kernel cannot trace leaves the capability missing, with the reason
    plan = choose(saved_kernel("x86_64", "6.12.117"), force={"merge": "vma_merge"})
    assert plan.missing == ["merge"]


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_clones_and_notrace(tmp_path):
    """.isra/.constprop clones are probed under their own name; .cold is not an entry point;
    a symbol missing from available_filter_functions (notrace, inline) is not traceable."""
    ks = write(tmp_path, "kallsyms", "\n".join([
        "ffffffff81000000 t __split_vma.isra.0",
        "ffffffff81000100 t __split_vma.cold",
        "ffffffff81000200 T vma_merge",
        "ffffffff81000300 T dup_mmap.constprop.0",
        "ffffffff81000400 D vm_area_dup",
    ]) + "\n")
    ff = write(tmp_path, "ff", "__split_vma.isra.0\ndup_mmap.constprop.0\n")
    k = KernelInfo.from_files("x", "x86_64", kallsyms=ks, filter_functions=ff)
    assert k.find_function("__split_vma") == "__split_vma.isra.0"
    assert k.find_function("dup_mmap") == "dup_mmap.constprop.0"
    assert k.find_function("vma_merge") is None  # not in available_filter_functions
    assert k.find_function("vm_area_dup") is None  # data symbol
    plan = choose(k)
    assert plan.choices["split"].probes[0].target == "__split_vma.isra.0"
    assert plan.choices["merge"].variant is None


def test_every_capability_has_a_hint_and_unique_macros():
    macros = [v.macro for c in CAPABILITIES for v in c.variants]
    assert len(macros) == len(set(macros))
    assert all(c.missing_hint for c in CAPABILITIES)


def test_plan_json_is_complete(saved_kernel):
    plan = choose(saved_kernel("x86_64", "6.1.192"))
    js = plan.to_json()
    assert js["release"] == "6.1.192" and len(js["capabilities"]) == len(CAPABILITIES)
    assert all(c["variant"] for c in js["capabilities"])

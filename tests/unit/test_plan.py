"""Attach-point choice from the kallsyms / available_filter_functions / BTF of the real guest kernels."""

import pytest

from vmatrace_bpf.kernel import KernelInfo
from vmatrace_bpf.plan import CAPABILITIES, PlanError, choose, parse_force

from conftest import btf_kernels



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
    assert merge.rejected == [(v, "not traceable here: vma_merge (inlined, notrace or absent)")
                              for v in ("vma_merge", "vma_merge-vmi", "vma_merge-src")]
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
    assert dict(plan.choices["merge"].rejected)["vma_merge_struct"] == (
        "no BTF to check vma_merge_new_range's signature (vmg@1) against, "
        "and no other evidence for it")
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
    assert plan.forced_failures() == ["merge=vma_merge: not traceable here: vma_merge (inlined, notrace or absent)"]


def test_force_cannot_pin_a_variant_whose_signature_failed(saved_kernel):
    """6.6 has vma_merge, but with vmi first: pinning the 6.1 reading is refused, not obeyed."""
    k = saved_kernel("x86_64", "6.6.87")
    plan = choose(k, force={"merge": "vma_merge"})
    assert plan.choices["merge"].variant is None
    [failure] = plan.forced_failures()
    assert failure.startswith("merge=vma_merge: BTF has vma_merge(vmi, mm, prev, addr, ...): argument order differs")
    assert choose(k, force={"merge": "vma_merge-vmi"}).forced_failures() == []


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
    # a clone's arguments may be dropped or reordered (IPA-SRA, constant propagation): refused for
    # a probe that reads them, with the reason
    assert plan.choices["split"].variant is None
    assert "__split_vma.isra.0 is a GCC clone" in dict(plan.choices["split"].rejected)["__split_vma"]
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


# -- signatures: checked against the real BTF of every test kernel -----------------------------
# (variant, {ARG macro: slot}) per kernel: slots are 0-based argument words, the first 6 (x86_64)
# in registers, the rest on the stack.
VMA_MERGE_61_SLOTS = {"prev": 1, "addr": 2, "end": 3, "vm_flags": 4, "anon_vma": 5, "file": 6, "pgoff": 7,
                      "vm_userfaultfd_ctx": 9, "anon_name": 10}
VMA_MERGE_VMI_SLOTS = {k: v + 1 for k, v in VMA_MERGE_61_SLOTS.items()}
EXPECTED_MERGE = {
    ("x86_64", "6.1.192"): ("vma_merge", "kp_vma_merge", VMA_MERGE_61_SLOTS),
    ("x86_64", "6.6.87"): ("vma_merge-vmi", "kp_vma_merge", VMA_MERGE_VMI_SLOTS),
    ("x86_64", "6.12.117"): ("vma_merge_struct", "kp_vmg_new", {"vmg": 0}),
    ("x86_64", "7.2.13"): ("vma_merge_struct", "kp_vmg_new", {"vmg": 0}),
    # the same prototype on arm64: slots 8 and up are on the stack there (x0-x7), 6 and up on x86_64
    ("arm64", "6.6.87"): ("vma_merge-vmi", "kp_vma_merge", VMA_MERGE_VMI_SLOTS),
}


@pytest.mark.parametrize("arch,release", btf_kernels() or [("none", "none")])
def test_plan_from_each_real_btf(saved_kernel, arch, release):
    if arch == "none":
        pytest.skip("no BTF files: ../shared/vm/*/btf-* and tests/data/kernels/*/btf-*.xz are all absent")
    assert (arch, release) in EXPECTED_MERGE, f"a new test kernel {arch} {release}: add its expected plan here"
    plan = choose(saved_kernel(arch, release))
    assert plan.arch == arch
    variant, fn, slots = EXPECTED_MERGE[(arch, release)]
    merge = plan.choices["merge"]
    assert merge.variant.name == variant
    for param, slot in slots.items():
        assert merge.defines[f"ARG_{fn}_{param}"] == slot, param
    assert merge.checked and all("[BTF]" in c and c.endswith("match") for c in merge.checked)
    split = plan.choices["split"]
    assert {k: v for k, v in split.defines.items()} == {"ARG_kp_split_vma": 1, "ARG_kp_split_addr": 2,
                                                          "ARG_kp_split_new_below": 3}
    assert plan.choices["name_free"].defines == {"ARG_kp_name_free_kref": 0}
    if plan.choices["fork"].variant.name == "dup_mmap":
        assert plan.choices["fork"].defines["ARG_kp_dup_mmap_oldmm"] == 1
    assert plan.missing == []


def test_6_6_rejects_the_6_1_reading_with_the_prototype(saved_kernel):
    merge = choose(saved_kernel("x86_64", "6.6.87")).choices["merge"]
    assert merge.rejected[0][0] == "vma_merge"
    assert "BTF has vma_merge(vmi, mm, prev, addr, ...): argument order differs (mm is argument 2, expected 1" \
        in merge.rejected[0][1]
    assert merge.checked[0].startswith("vma_merge(vmi, mm, prev, addr, end, vm_flags, anon_vma, file, pgoff, policy, "
                                       "vm_userfaultfd_ctx, anon_name) [BTF]")


def test_without_btf_only_on_evidence(saved_kernel):
    # 6.1 without BTF: __vma_adjust (gone in 6.3) and CONFIG_USERFAULTFD=y say the 11-argument vma_merge
    plan = choose(saved_kernel("x86_64", "6.1.192", with_btf=False))
    assert plan.choices["merge"].variant.name == "vma_merge"
    assert "vma_merge [no BTF; evidence: __vma_adjust anon_vma_name_alloc CONFIG_USERFAULTFD=y]: mm@1" in plan.choices["merge"].checked[0]
    # 6.6 without BTF: no evidence tells vma_merge's argument list: refused, with the reason
    merge = choose(saved_kernel("x86_64", "6.6.87", with_btf=False)).choices["merge"]
    assert merge.variant is None
    why = dict(merge.rejected)
    assert "missing: __vma_adjust" in why["vma_merge"]
    assert "no BTF to check vma_merge's signature" in why["vma_merge-vmi"]
    assert "merge (vma_merge: " in choose(saved_kernel("x86_64", "6.6.87", with_btf=False)).missing_line()


# -- kernels that are in none of the shared files: synthetic BTF -----------------------------------
from btfgen import mm_kernel  # noqa: E402

KALLSYMS = """ffffffff81000000 T vma_merge
ffffffff81000100 t can_vma_merge_before
ffffffff81000200 T __split_vma
ffffffff81000300 T anon_vma_name_alloc
ffffffff81000400 T anon_vma_name_free
ffffffff81000500 t dup_mmap
ffffffff81000600 T vm_area_dup
"""


def synthetic_kernel(tmp_path, vma_merge_params, arch="x86_64", uffd_size=8, kallsyms=KALLSYMS):
    b, t = mm_kernel(uffd_size=uffd_size)
    b.func("vma_merge", t["vm_area_struct*"], [(n, t[ty]) for n, ty in vma_merge_params])
    b.func("can_vma_merge_before", t["int"], [("vma", t["vm_area_struct*"]), ("vm_flags", t["ulong"])])
    b.func("__split_vma", t["int"], [("vmi", t["vma_iterator*"]), ("vma", t["vm_area_struct*"]),
                                     ("addr", t["ulong"]), ("new_below", t["int"])])
    b.func("anon_vma_name_alloc", t["anon_vma_name*"], [("name", t["void*"])])
    b.func("anon_vma_name_free", 0, [("kref", t["kref*"])])
    b.func("dup_mmap", t["int"], [("mm", t["mm_struct*"]), ("oldmm", t["mm_struct*"])])
    b.func("vm_area_dup", t["vm_area_struct*"], [("orig", t["vm_area_struct*"])])
    (tmp_path / "btf").write_bytes(b.bytes())
    (tmp_path / "kallsyms").write_text(kallsyms)
    return KernelInfo.from_files("9.9.9", arch, kallsyms=str(tmp_path / "kallsyms"), btf=str(tmp_path / "btf"))


VMI = [("vmi", "vma_iterator*"), ("mm", "mm_struct*"), ("prev", "vm_area_struct*"), ("addr", "ulong"),
       ("end", "ulong"), ("vm_flags", "ulong"), ("anon_vma", "anon_vma*"), ("file", "file*"), ("pgoff", "ulong"),
       ("policy", "mempolicy*"), ("vm_userfaultfd_ctx", "vm_userfaultfd_ctx"), ("anon_name", "anon_vma_name*")]


SRC = [("vmi", "vma_iterator*"), ("prev", "vm_area_struct*"), ("src", "vm_area_struct*"), ("addr", "ulong"),
       ("end", "ulong"), ("vm_flags", "ulong"), ("pgoff", "ulong"), ("policy", "mempolicy*"),
       ("vm_userfaultfd_ctx", "vm_userfaultfd_ctx"), ("anon_name", "anon_vma_name*")]


def test_6_9_to_6_11_vma_merge_takes_src(tmp_path):
    """The 6.9-6.11 prototype (from the kernel sources; no such test kernel here)."""
    merge = choose(synthetic_kernel(tmp_path, SRC)).choices["merge"]
    assert merge.variant.name == "vma_merge-src"
    d = merge.defines
    assert (d["ARG_kp_vma_merge_src"], d["ARG_kp_vma_merge_pgoff"], d["ARG_kp_vma_merge_anon_name"]) == (2, 6, 9)
    assert "ARG_kp_vma_merge_file" not in d


def test_unknown_prototype_makes_merge_missing_never_a_wrong_variant(tmp_path):
    # a vma_merge of another shape (the VMA named "vma", the uffd context renamed): no variant fits
    other = [n if n[0] != "src" else ("vma", n[1]) for n in SRC]
    plan = choose(synthetic_kernel(tmp_path, other))
    merge = plan.choices["merge"]
    assert merge.variant is None and merge.probes == [] and merge.defines == {}
    why = dict(merge.rejected)
    assert why["vma_merge"].startswith("BTF has vma_merge(vmi, prev, vma, addr, ...): argument order differs")
    assert why["vma_merge-vmi"].startswith("BTF has vma_merge(vmi, prev, vma, addr, ...): argument order differs")
    assert why["vma_merge-src"].startswith("BTF has vma_merge(vmi, prev, vma, addr, ...): argument order differs "
                                           "(no argument src, expected 3")
    assert "merge (vma_merge: BTF has" in plan.missing_line()
    # the rest of the plan stands
    assert plan.choices["split"].ok and plan.choices["name_alloc"].ok


def test_arm64_stack_slots_from_the_prototype(tmp_path):
    plan = choose(synthetic_kernel(tmp_path, VMI, arch="arm64"))
    d = plan.choices["merge"].defines
    assert plan.choices["merge"].variant.name == "vma_merge-vmi"
    # x0-x7 hold vmi..file; pgoff is stack word 0 (slot 8), anon_name stack word 3 (slot 11)
    assert (d["ARG_kp_vma_merge_file"], d["ARG_kp_vma_merge_pgoff"], d["ARG_kp_vma_merge_anon_name"]) == (7, 8, 11)


def test_empty_uffd_struct_is_refused(tmp_path):
    """Without CONFIG_USERFAULTFD the uffd context is an empty struct: the arguments after it move
    in ways the plan does not compute, so it refuses instead of reading the wrong word."""
    merge = choose(synthetic_kernel(tmp_path, VMI, uffd_size=0)).choices["merge"]
    assert merge.variant is None
    assert "argument 11 (vm_userfaultfd_ctx: struct vm_userfaultfd_ctx, 0 bytes) is not one register-sized word" \
        in dict(merge.rejected)["vma_merge-vmi"]


def test_wrong_return_type_and_clones_are_refused(tmp_path):
    ks = KALLSYMS.replace("T __split_vma", "t __split_vma.isra.0")
    plan = choose(synthetic_kernel(tmp_path, VMI, kallsyms=ks))
    split = plan.choices["split"]
    assert split.variant is None
    assert "__split_vma.isra.0 is a GCC clone" in dict(split.rejected)["__split_vma"]


def test_ambiguous_prototypes_are_refused(tmp_path):
    k = synthetic_kernel(tmp_path, VMI)
    b, t = mm_kernel()
    b.func("vma_merge", t["vm_area_struct*"], [(n, t[ty]) for n, ty in VMI])
    b.func("vma_merge", t["vm_area_struct*"], [("mm", t["mm_struct*"])])
    (tmp_path / "btf").write_bytes(b.bytes())
    k = KernelInfo.from_files("9.9.9", "x86_64", kallsyms=str(tmp_path / "kallsyms"), btf=str(tmp_path / "btf"))
    assert "2 different prototypes for vma_merge" in dict(choose(k).choices["merge"].rejected)["vma_merge-vmi"]


def test_watch_and_record_banner_say_what_is_missing_and_why(saved_kernel):
    from vmatrace_bpf.session import missing_note
    note = missing_note(choose(saved_kernel("x86_64", "6.6.87", with_btf=False)))
    assert note.startswith(" (not traced here: merge (vma_merge: no BTF to check vma_merge's signature, and the "
                           "evidence for it does not hold here (missing: __vma_adjust); vma_merge-vmi: no BTF")
    assert missing_note(choose(saved_kernel("x86_64", "6.6.87"))) == ""


def test_unknown_arch_reads_no_arguments(tmp_path):
    plan = choose(synthetic_kernel(tmp_path, VMI, arch="riscv64"))
    assert plan.choices["merge"].variant is None and plan.choices["split"].variant is None
    assert "where riscv64 passes function arguments is not known" in dict(plan.choices["split"].rejected)["__split_vma"]


# -- the kernel struct layout the program reads (plan.LAYOUT) --------------------------------------
@pytest.mark.parametrize("arch,release", btf_kernels() or [("none", "none")])
def test_layout_from_each_real_btf(saved_kernel, arch, release):
    if arch == "none":
        pytest.skip("no BTF files: ../shared/vm/*/btf-* and tests/data/kernels/*/btf-*.xz are all absent")
    from vmatrace_bpf.plan import LAYOUT
    plan = choose(saved_kernel(arch, release))
    assert plan.layout_why == ""
    assert set(plan.layout) == {f.macro for f in LAYOUT}  # every matrix kernel has CONFIG_USERFAULTFD
    d = plan.defines()
    assert d["VT_BTF_LAYOUT"] == 1 and all(d[m] == v for m, v in plan.layout.items())
    assert plan.to_json()["layout"]["from"] == "BTF"


def test_layout_offsets_follow_the_kernel(saved_kernel):
    l61 = choose(saved_kernel("x86_64", "6.1.192")).layout
    l72 = choose(saved_kernel("x86_64", "7.2.13")).layout
    # 6.1: anon_name shares a union with shared.rb (right after vm_flags); 7.2: its own member, far after
    assert (l61["VMA_VM_FLAGS_OFF"], l61["VMA_ANON_NAME_OFF"], l61["VMA_VM_FILE_OFF"]) == (32, 40, 112)
    assert (l72["VMA_VM_FLAGS_OFF"], l72["VMA_ANON_NAME_OFF"], l72["VMA_VM_FILE_OFF"]) == (32, 168, 88)
    assert (l61["NAME_REFS_OFF"], l61["NAME_STR_OFF"]) == (0, 4)
    assert l61["MM_MAP_COUNT_OFF"] != l72["MM_MAP_COUNT_OFF"]


def test_layout_without_btf_comes_from_the_headers(saved_kernel):
    plan = choose(saved_kernel("x86_64", "6.1.192", with_btf=False))
    assert plan.layout == {} and "VT_BTF_LAYOUT" not in plan.defines()
    assert plan.layout_why == "no BTF: offsets from the kernel headers (<linux/mm_types.h>)"
    assert plan.to_json()["layout"] == {"from": "kernel headers", "offsets": {}, "why": plan.layout_why}


def _layout_kernel(tmp_path, flags_size=8, uffd=True):
    """A BTF with just the structs LAYOUT reads (vm_flags FLAGS_SIZE bytes wide, the uffd context or not)."""
    from btfgen import BTFBuilder
    from vmatrace_bpf.btf import BTF
    b = BTFBuilder()
    i32, u32, u64, char = b.int("int", 4), b.int("unsigned int", 4), b.int("long unsigned int", 8), b.int("char", 1)
    vp = b.ptr(0)
    members = [("vm_start", u64, 0), ("vm_end", u64, 64), ("vm_flags", u64 if flags_size == 8 else u32, 128),
               ("vm_file", vp, 192), ("anon_vma", vp, 256), ("vm_pgoff", u64, 320), ("anon_name", vp, 384)]
    if uffd:
        members.append(("vm_userfaultfd_ctx", b.struct("vm_userfaultfd_ctx", 8, [("ctx", vp, 0)]), 448))
    b.struct("vm_area_struct", 64, members)
    refcount = b.struct("refcount_struct", 4, [("refs", b.struct("", 4, [("counter", i32, 0)]), 0)])
    b.struct("anon_vma_name", 4, [("kref", b.struct("kref", 4, [("refcount", refcount, 0)]), 0),
                                  ("name", char, 32)])  # char, standing in for char name[]
    b.struct("mm_struct", 64, [("map_count", i32, 96)])
    b.struct("task_struct", 64, [("mm", vp, 256)])
    return BTF(b.bytes())


def test_layout_checks_sizes_and_leaves_out_only_optional_members(tmp_path, monkeypatch):
    from vmatrace_bpf.plan import resolve_layout
    layout, why = resolve_layout(_layout_kernel(tmp_path, uffd=False))
    assert why == "BTF has anon_vma_name.name 1 bytes wide, the program reads 0: offsets from the kernel headers " \
                  "(whose sizes the program asserts)"  # a char, not a flexible array: refused too
    # without CONFIG_USERFAULTFD's member the rest stands; vm_flags 4 bytes wide: refused
    from vmatrace_bpf import plan as plan_mod
    fields = tuple(f for f in plan_mod.LAYOUT if f.macro != "NAME_STR_OFF")
    monkeypatch.setattr(plan_mod, "LAYOUT", fields)
    layout, why = resolve_layout(_layout_kernel(tmp_path, uffd=False))
    assert why == "" and "VMA_UFFD_OFF" not in layout
    assert (layout["VMA_VM_FLAGS_OFF"], layout["VMA_ANON_NAME_OFF"], layout["MM_MAP_COUNT_OFF"]) == (16, 48, 12)
    assert layout["NAME_REFS_OFF"] == 0 and layout["TASK_MM_OFF"] == 32
    assert resolve_layout(_layout_kernel(tmp_path, uffd=True))[0]["VMA_UFFD_OFF"] == 56
    layout, why = resolve_layout(_layout_kernel(tmp_path, flags_size=4))
    assert layout == {} and why.startswith("BTF has vm_area_struct.vm_flags 4 bytes wide, the program reads 8")
    # a required member missing: all from the headers, saying which
    from btfgen import BTFBuilder
    from vmatrace_bpf.btf import BTF
    b = BTFBuilder()
    b.struct("vm_area_struct", 8, [("vm_start", b.int("long unsigned int", 8), 0)])
    assert resolve_layout(BTF(b.bytes())) == ({}, "BTF has no vm_area_struct.vm_end: offsets from the kernel headers")


def fentry_kernel(tmp_path, arch, config=None):
    """A synthetic kernel with BPF trampolines (bpf_trampoline_link_prog) and, if given, a config."""
    tmp_path.mkdir(exist_ok=True)
    k = synthetic_kernel(tmp_path, VMI, arch=arch,
                         kallsyms=KALLSYMS + "ffffffff81000700 T bpf_trampoline_link_prog\n")
    if config is None:
        return k
    (tmp_path / "config").write_text(config)
    return KernelInfo.from_files("9.9.9", arch, kallsyms=k.files.kallsyms, btf=k.files.btf,
                                 config=str(tmp_path / "config"))


DIRECT_CALLS = "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS=y\n"


@pytest.mark.parametrize("arch,config,variant,why", [
    ("x86_64", None, "vm_area_dup-fentry", ""),
    # arm64 attaches a BPF trampoline to a kernel function only with ftrace direct calls (v6.4+)
    ("arm64", DIRECT_CALLS, "vm_area_dup-fentry", ""),
    ("arm64", "# CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS is not set\nCONFIG_BPF_JIT=y\n", "vm_area_dup",
     "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS is not set"),
    ("arm64", None, "vm_area_dup", "config cannot be read"),
    ("riscv64", DIRECT_CALLS, None, "not known to vmabpf"),
])
def test_fentry_by_arch_and_direct_calls(tmp_path, arch, config, variant, why):
    k = fentry_kernel(tmp_path, arch, config)
    assert (why in k.kfunc_missing) if why else k.kfunc_missing == ""
    choice = choose(k).choices["vma_dup"]
    assert (choice.variant.name if choice.variant else None) == variant
    if why and arch == "arm64":
        assert why in dict(choice.rejected)["vm_area_dup-fentry"]


def test_fentry_needs_trampolines_and_btf(tmp_path):
    k = synthetic_kernel(tmp_path, VMI)  # no bpf_trampoline_link_prog in its kallsyms
    assert "no BPF trampolines" in k.kfunc_missing
    assert choose(k).choices["vma_dup"].variant.name == "vm_area_dup"
    bare = KernelInfo.from_files("9.9.9", "x86_64", kallsyms=k.files.kallsyms)
    assert bare.kfunc_missing == "no kernel BTF"


def test_doctor_fentry_check_follows_the_kernel_not_bcc_on_arm64(tmp_path, monkeypatch):
    from vmatrace_bpf import checks
    monkeypatch.setattr(checks, "support_kfunc", lambda: False)  # what bcc answers on arm64
    assert checks.check_fentry(fentry_kernel(tmp_path / "a", "arm64", DIRECT_CALLS), True).ok is True
    x86 = fentry_kernel(tmp_path / "x", "x86_64")
    c = checks.check_fentry(x86, True)
    assert c.ok is False and "bcc reports no fentry" in c.detail
    assert checks.check_fentry(x86, False).ok is None  # no bcc: cannot tell
    old = checks.check_fentry(fentry_kernel(tmp_path / "o", "arm64"), True)
    assert old.ok is False and "config cannot be read" in old.detail

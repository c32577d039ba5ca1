"""The tracefs backend without a kernel: definitions planned from saved BTF, line parsing, the host-side
merge rules, stale clean-up on a fake tracefs tree."""

import os

import pytest

from conftest import KERNELS
from vmatrace_bpf import events
from vmatrace_bpf.plan import choose
from vmatrace_bpf.tracefs_assemble import Assembler, LineParser, split_lines, starts_event
from vmatrace_bpf.tracefs_defs import EventDef, build, return_args_supported
from vmatrace_bpf.tracefs_io import LocalFS, remove_stale

C = events.layout().constants


@pytest.mark.parametrize("arch,release", sorted(KERNELS))
def test_definitions_from_saved_btf(saved_kernel, arch, release):
    k = saved_kernel(arch, release)
    plan = choose(k, backend="tracefs")
    assert plan.choices["name_free"].variant is None  # refused with tracefs, with the reason
    assert "kfree" in plan.choices["name_free"].why_missing()
    assert all(p.kind not in ("kfunc", "kretfunc") for p in plan.probes())  # fentry/fexit are BPF only
    defs = build(plan, k, return_args=True)
    assert not defs.missing
    by_fn = {d.fn: d for d in defs.events}
    line = by_fn["kp_prctl_enter"].line("g")
    assert line.startswith(f"p:g/vt_kp_prctl_enter {k.syscall_symbol('prctl')} ")
    assert line.endswith(":ustring")  # the user's string last: nothing after it to mistake
    # every name is an 80-byte array, never a string printed raw
    for d in defs.events:
        for name, fetch, typ in d.fields:
            if name.endswith("name") and d.fn != "kp_prctl_enter":
                assert typ == "x64[10]", (d.fn, name)
    # the split's VMA is read where the plan placed argument 2
    reg = {"x86_64": "%si", "arm64": "%x1"}[arch]
    assert f" vma={reg}:x64 " in by_fn["kp_split"].line("g")
    vm_start = k.btf.member_offset("vm_area_struct", "vm_start")
    assert f"start=+{vm_start}({reg}):x64" in by_fn["kp_split"].line("g")


def test_vma_merge_stack_arguments_per_arch(saved_kernel):
    """anon_name is argument 12 of 6.6's vma_merge: on the stack on x86_64 (after the return address),
    in x0-x7 + stack on arm64 (no return address on the stack)."""
    x = {d.fn: d for d in build(choose(saved_kernel("x86_64", "6.6.87"), backend="tracefs"),
                                saved_kernel("x86_64", "6.6.87"), True).events}
    a = {d.fn: d for d in build(choose(saved_kernel("arm64", "6.6.87"), backend="tracefs"),
                                saved_kernel("arm64", "6.6.87"), True).events}
    assert " anon=$stack6:x64 " in x["kp_vma_merge"].line("g")  # slot 11: 6 registers, then stack word 5 (+1)
    assert " anon=$stack3:x64 " in a["kp_vma_merge"].line("g")  # slot 11: 8 registers, then stack word 3


def test_fork_window_reads_map_count_at_uprobe_dup_mmap(saved_kernel):
    """6.12 inlines dup_mmap: the bracket times it, and uprobe_dup_mmap(oldmm, mm) gives map_count (tracefs
    only: the BPF program reads current->mm)."""
    k = saved_kernel("x86_64", "6.12.117")
    plan = choose(k, backend="tracefs")
    assert plan.choices["fork"].variant.name == "uprobe_dup_mmap-window"
    lines = [d.line("g") for d in build(plan, k, True).events if d.kind != "tracepoint"]
    off = k.btf.member_offset("mm_struct", "map_count")
    assert f"p:g/vt_kp_uprobe_dup_mmap uprobe_dup_mmap map_count=+{off}(%di):s32" in lines
    assert "kp_uprobe_dup_mmap" not in [p.fn for p in choose(k).probes()]
    p = LineParser(build(plan, k, True).events)
    assert p.parse(b"  a-5 (5) [000] .....  1.000001: vt_kp_dup_mmap_start: (uprobe_start_dup_mmap+0x4/0x60)")[0] \
        == "kp_dup_mmap_start"


def test_vmg_return_needs_return_args(saved_kernel):
    k = saved_kernel("x86_64", "6.12.117")
    defs = build(choose(k, backend="tracefs"), k, return_args=False)
    assert "merge" in defs.missing and "$arg" in defs.missing["merge"]


def test_readme_return_args():
    assert return_args_supported("\t     kernel return probes support: $retval, $arg<N>, $comm\n")
    assert not return_args_supported("\t     kernel return probes support: $retval, $comm\n")
    assert not return_args_supported(None)


SPLIT = EventDef("kp_split", "kprobe", "__split_vma", [("vma", "%si", "x64"), ("name", "x", "x64[10]"),
                                                        ("new_below", "%cx", "u32")])
PRCTL = EventDef("kp_prctl_enter", "kprobe", "__x64_sys_prctl", [("nameptr", "x", "x64"), ("name", "y", "ustring")])


def _arr(text: bytes) -> bytes:
    raw = text.ljust(80, b"\0")
    return b"{" + b",".join(b"0x%x" % int.from_bytes(raw[i:i + 8], "little") for i in range(0, 80, 8)) + b"}"


def test_parse_line_fields_and_header():
    p = LineParser([SPLIT, PRCTL])
    line = (b"  py thon-3-77   (     70) [001] d..1.  4.318894: vt_kp_split: (__split_vma+0x4/0x2d0) "
            b"vma=0xff11 name=" + _arr(b'x" new_below=9') + b" new_below=1")
    fn, tid, tgid, comm, ts, f = p.parse(line)
    assert (fn, tid, tgid, comm, ts) == ("kp_split", 77, 70, "py thon-3", 4_318_894_000)
    assert f == {"vma": 0xff11, "name": b'x" new_below=9'.ljust(80, b"\0"), "new_below": 1}
    # a user string with quotes and a newline in it, the last field
    buf = (b"  a-5 (5) [000] .....  1.000001: vt_kp_prctl_enter: (__x64_sys_prctl+0x4/0xa80) nameptr=0x10 "
           b'name="a"b\nc x=1"\n  a-5 (5) [000] .....  1.000002: vt_kp_prctl_enter: (f) nameptr=0x0 name=(fault)\nrest')
    lines, rest = split_lines(buf, starts_event)
    assert rest == b"rest" and len(lines) == 2
    assert p.parse(lines[0])[5] == {"nameptr": 0x10, "name": b'a"b\nc x=1'}
    assert p.parse(lines[1])[5] == {"nameptr": 0, "name": None}
    assert p.parse(b"garbage") is None
    assert p.parse(b"  a-5 (-------) [000] .....  1.000002: vt_unknown: (f) x=1") is None
    assert p.parse(b"  a-5 (-------) [000] .....  1.000002: vt_kp_split: (f) vma=zz") is None


def _vma(prefix, start, end, flags=0x100073, anon=0, name=b"", file=0, pgoff=None):
    return {prefix: 0x1000 + start, f"{prefix}_start": start, f"{prefix}_end": end, f"{prefix}_flags": flags,
            f"{prefix}_file": file, f"{prefix}_av": 0, f"{prefix}_pgoff": start >> 12 if pgoff is None else pgoff,
            f"{prefix}_anon": anon, f"{prefix}_uffd": 0, f"{prefix}_name": name.ljust(80, b"\0") if anon else None}


def test_merge_refused_for_the_name_alone():
    """A new range next to a VMA named differently: prev refused for the name only; nothing after it."""
    out = []
    a = Assembler(out.append, {9: 0})
    req = {"start": 0x5000, "end": 0x6000, "flags": 0x100073, "pgoff": 5, "file": 0, "av": 0, "uffd": 0,
           "anon": 0xaa, "name": b"b".ljust(80, b"\0")}
    req.update(_vma("prev", 0x3000, 0x5000, anon=0xbb, name=b"a"))
    req["next"] = 0
    a.feed(("kp_vmg_new", 9, 9, "w", 10, req))
    a.feed(("kr_vmg_new", 9, 9, "w", 20, {"res": 0, "res_start": None, "res_end": None, "state": 0}))
    (ev,) = out
    assert ev["outcome"] == "none" and ev["source"] == "new_range" and ev["ts"] == 20
    assert ev["prev_cause"] == ["name"] and ev["next_cause"] == ["no_vma"]
    assert (ev["name"], ev["prev_name"]) == ("b", "a")
    assert events.valid_event(ev)


def test_merge_with_prev_and_pgoff_flags():
    out = []
    a = Assembler(out.append, {9: 0})
    req = {"start": 0x5000, "end": 0x6000, "flags": 0x100073, "pgoff": 5, "file": 0, "av": 0, "uffd": 0, "anon": 0,
           "name": None}
    req.update(_vma("prev", 0x3000, 0x5000))
    a.feed(("kp_vma_merge", 9, 9, "w", 1, req))
    a.feed(("kp_can_merge_before", 9, 9, "w", 2, _vma("next", 0x6000, 0x7000, flags=0x100071, pgoff=99)))
    a.feed(("kr_vma_merge", 9, 9, "w", 3, {"res": 0x1, "res_start": 0x3000, "res_end": 0x6000}))
    (ev,) = out
    assert ev["outcome"] == "prev" and ev["prev_cause"] == []
    assert ev["next_cause"] == ["flags", "pgoff"] and (ev["next_start"], ev["next_end"]) == (0x6000, 0x7000)


def test_events_before_watch_time_and_of_others_ignored():
    out = []
    a = Assembler(out.append, {9: 100})
    split = {"vma": 1, "start": 0, "end": 0x2000, "addr": 0x1000, "new_below": 0, "file": 0, "anon": 0, "name": None}
    a.feed(("kp_split", 9, 9, "w", 50, split))   # before the process was watched
    a.feed(("kr_split", 9, 9, "w", 60, {"ret": 0}))
    a.feed(("kp_split", 8, 8, "w", 150, split))  # another process
    a.feed(("kr_split", 8, 8, "w", 160, {"ret": 0}))
    assert out == []
    a.feed(("kp_split", 9, 9, "w", 150, dict(split, anon=0x77, name=b"n".ljust(80, b"\0"))))
    a.feed(("kr_vm_area_dup", 9, 9, "w", 151, {"vma": 2, "file": 0, "anon": 0x77, "ref": 2}))
    a.feed(("kr_split", 9, 9, "w", 160, {"ret": 0}))
    (ev,) = out
    assert (ev["name"], ev["refcount"], ev["ret"], ev["err"]) == ("n", 2, 0, None)


def test_failed_split_keeps_the_refcount_it_had():
    """A split that fails (after or before copying the VMA) reports the name's refcount as it stands after
    the failure, as the BPF program reads it on return: the count at entry."""
    out = []
    a = Assembler(out.append, {9: 0})
    split = {"vma": 1, "start": 0, "end": 0x2000, "addr": 0x1000, "new_below": 0, "file": 0, "anon": 0x77,
             "ref": 3, "name": b"n".ljust(80, b"\0")}
    a.feed(("kp_split", 9, 9, "w", 1, split))
    a.feed(("kr_vm_area_dup", 9, 9, "w", 2, {"vma": 2, "file": 0, "anon": 0x77, "ref": 4}))
    a.feed(("kr_split", 9, 9, "w", 3, {"ret": -12}))
    (ev,) = out
    assert (ev["refcount"], ev["err"]) == (3, "ENOMEM") and events.valid_event(ev)


def test_fork_counts_and_child_followed():
    out = []
    a = Assembler(out.append, {9: 0}, children=True)
    a.feed(("kp_dup_mmap", 9, 9, "w", 1000, {"map_count": 3}))
    for anon, file in ((0x5, 0), (0, 0), (0x5, 0x9)):  # named, unnamed, a file VMA (its anon_name is not a name)
        a.feed(("kr_vm_area_dup", 9, 9, "w", 1001, {"vma": 1, "file": file, "anon": anon, "ref": 1}))
    a.feed(("kr_dup_mmap", 9, 9, "w", 4000, {"ret": 0}))
    a.feed(("tp_sched_fork", 9, 9, "w", 5000, {"child_pid": 10}))
    (ev,) = out
    assert (ev["latency_ns"], ev["map_count"], ev["vmas_copied"], ev["named_copied"], ev["child_pid"]) == \
        (3000, 3, 3, 1, 10)
    assert 10 in a.watched


def test_remove_stale_only_dead_owners(tmp_path):
    root = tmp_path
    (root / "instances" / "vmabpf-111").mkdir(parents=True)
    (root / "instances" / "vmabpf-222-2").mkdir(parents=True)
    (root / "instances" / "other").mkdir(parents=True)
    (root / "kprobe_events").write_text("p:vmabpf_111/vt_kp_split __split_vma\np:vmabpf_222/vt_x f\np:mine/x f\n")
    removed = remove_stale(LocalFS(str(root)), alive=lambda pid: pid == 222)
    assert sorted(os.listdir(root / "instances")) == ["other", "vmabpf-222-2"]
    assert "vmabpf-111" in removed and "vmabpf_111" in removed
    # (a real kprobe_events takes "-:GROUP/EVENT" writes; here the file just collects them)
    assert "-:vmabpf_111/vt_kp_split" in (root / "kprobe_events").read_text()

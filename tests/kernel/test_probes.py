"""Every probe, loaded in a real kernel, against workloads whose outcome is known.

Counts are exact and only for the watched PID; a second process naming VMAs
at the same time must not leak in.  Events are restricted to the workload's
own region (it maps at a fixed, isolated address) because the Python
interpreter maps and merges memory of its own.
"""

import errno

import pytest

PAGE = 4096


def in_region(ev, res):
    if ev["type"] == "merge":
        return res["base"] <= ev["start"] and ev["end"] <= res["end"]
    if ev["type"] == "split":
        return res["base"] <= ev["vma_start"] and ev["vma_end"] <= res["end"]
    if ev["type"] == "name_set":
        return res["base"] <= ev["addr"] < res["base"] + 64 * PAGE
    return True


def of(evs, type_, res=None, **match):
    out = [e for e in evs if e["type"] == type_ and (res is None or in_region(e, res))]
    return [e for e in out if all(e.get(k) == v for k, v in match.items())]


def modify_merges(evs, res):
    """Merge attempts on existing VMAs (prctl, mprotect): vma_merge (<= 6.11) or the existing-range path."""
    return [e for e in of(evs, "merge", res) if e["source"] in ("vma_merge", "existing_range")]


def new_range_merges_expected(plan):
    # mmap() of a fresh region tries vma_merge_new_range() (6.12+); 6.1's mmap_region()
    # expands neighbours itself, without vma_merge().
    return 1 if plan.choices["merge"].variant.name == "vma_merge_struct" else 0


# -- names: set, rejected, merged, blocked by name ------------------------------------
@pytest.fixture(scope="module")
def names_run(collector):
    return collector.run("names", alongside="noise")


def test_names_set_and_rejected(names_run):
    res, evs, noise = names_run
    assert res["results"] == {"a0": 0, "a1": 0, "b2": 0, "bad_char": -errno.EINVAL,
                              "too_long": -errno.EINVAL, "unmapped": -errno.ENOMEM}
    sets = of(evs, "name_set")
    assert [(e["name"], e["ret"]) for e in sets] == [
        ("a", 0), ("a", 0), ("b", 0), ("bad$name", -errno.EINVAL), ("x" * 79, -errno.EINVAL),
        ("nowhere", -errno.ENOMEM)]
    assert [e["err"] for e in sets] == [None, None, None, "EINVAL", "EINVAL", "ENOMEM"]
    assert [e["name_truncated"] for e in sets] == [False] * 4 + [True, False]
    assert sets[0]["addr"] == res["base"] and sets[0]["len"] == PAGE
    assert sets[5]["addr"] == res["base"] + 16 * PAGE


def test_names_merge_and_name_block(names_run, collector):
    res, evs, _ = names_run
    merges = modify_merges(evs, res)
    assert [(m["start"] - res["base"], m["end"] - res["base"], m["name"], m["outcome"]) for m in merges] == [
        (0, PAGE, "a", "none"), (PAGE, 2 * PAGE, "a", "prev"), (2 * PAGE, 3 * PAGE, "b", "none")]
    first, second, third = merges
    # the range ends inside the VMA; vma_merge() (5.17-6.11) never shows us that VMA
    assert first["next_cause"] == (["unseen"] if first["source"] == "vma_merge" else ["inside"])
    assert second["res_start"] == res["base"] and second["res_end"] == res["base"] + 2 * PAGE
    # a + b: not merged, the names differ and nothing else does
    assert third["prev_cause"] == ["name"]
    assert third["prev_name"] == "a"
    assert (third["prev_start"], third["prev_end"]) == (res["base"], res["base"] + 2 * PAGE)
    new_range = [e for e in of(evs, "merge", res) if e["source"] == "new_range"]
    assert len(new_range) == new_range_merges_expected(collector.plan)
    assert [(m["start"] - res["base"], m["end"] - res["base"], m["name"]) for m in res["maps"]] == [
        (0, 2 * PAGE, "[anon:a]"), (2 * PAGE, 3 * PAGE, "[anon:b]")]


def test_names_split_before_naming(names_run):
    res, evs, _ = names_run
    splits = of(evs, "split", res)
    # naming page 0 of the 3-page VMA splits it at page 1; the name is set after the split
    assert [(s["addr"] - res["base"], s["new_below"], s["name"], s["refcount"], s["ret"]) for s in splits] == [
        (PAGE, 0, "", 0, 0)]


def test_names_objects(names_run):
    res, evs, _ = names_run
    allocs = of(evs, "name_alloc")
    frees = of(evs, "name_free")
    # one object per accepted name string, 'nowhere' included (allocated before the range is checked);
    # all freed by the time the process has exited
    assert sorted(e["name"] for e in allocs) == ["a", "a", "b", "nowhere"]
    assert sorted(e["name"] for e in frees) == ["a", "a", "b", "nowhere"]
    assert all(e["refcount"] == 1 for e in allocs)
    assert {e["ptr"] for e in allocs} == {e["ptr"] for e in frees}


def test_noise_process_not_seen(names_run):
    _, evs, noise = names_run
    assert noise == []
    assert len({e["pid"] for e in evs}) == 1


# -- the same pattern without names merges --------------------------------------------
def test_unnamed_merges(collector):
    res, evs, _ = collector.run("unnamed")
    merges = modify_merges(evs, res)
    assert [(m["start"] - res["base"], m["outcome"]) for m in merges] == [
        (0, "none"), (PAGE, "prev"), (2 * PAGE, "prev")]
    assert len(of(evs, "split", res)) == 1
    assert len(res["maps"]) == 1
    assert of(evs, "name_set") == [] and of(evs, "name_alloc") == []


# -- splits and the refcount after each ---------------------------------------------------
def test_split_refcounts(collector):
    res, evs, _ = collector.run("split")
    assert res["results"] == {"name": 0}
    splits = of(evs, "split", res)
    assert [(s["addr"] - res["base"], s["name"], s["refcount"]) for s in splits] == [
        (PAGE, "mid", 2), (2 * PAGE, "mid", 3)]
    merges = modify_merges(evs, res)
    # naming the whole VMA (no neighbour), then mprotect of its middle page: nothing merges
    assert [m["outcome"] for m in merges] == ["none", "none"]
    m = merges[1]
    assert m["prev_cause"] == ["inside"]
    if m["source"] == "vma_merge" and (m["next_start"], m["next_end"]) == (0, 0):
        # 5.17-6.3: vma_merge() looks at a next VMA only when one starts at the range's end
        assert m["next_cause"] == ["unseen"]
    else:
        # 6.4-6.11's vma_merge() is given the VMA that holds the end (vma_lookup(mm, end));
        # 6.12+ knows the range ends inside the VMA being changed
        assert m["next_cause"] == ["inside"]
        if m["source"] == "vma_merge":
            assert (m["next_start"], m["next_end"]) == (res["base"], res["base"] + 3 * PAGE)
    assert [m["name"] for m in res["maps"]] == ["[anon:mid]"] * 3


# -- fork: refcount increments and latency -------------------------------------------------
def test_fork_refcount_increments(collector):
    res, evs, _ = collector.run("fork")
    assert set(res["results"].values()) == {0}
    forks = of(evs, "fork")
    assert len(forks) == 1
    f = forks[0]
    assert f["child_pid"] == res["child"]
    assert f["named_copied"] == res["k"] == 5
    assert f["latency_ns"] > 0
    assert res["k"] < f["vmas_copied"] <= f["map_count"]
    # the five name objects: allocated by the parent, freed when it exits (the child shared them)
    assert sorted(e["name"] for e in of(evs, "name_alloc")) == ["k0", "k1", "k2", "k3", "k4"]
    assert sorted(e["name"] for e in of(evs, "name_free")) == ["k0", "k1", "k2", "k3", "k4"]
    assert_fork_slots_released(collector)


def assert_fork_slots_released(collector):
    """vm_area_dup's per-fork counters: once the fork is over, no thread holds a slot and no fork counts in
    fork_state (a slot left claimed would send the next fork of that slot the slow way)."""
    assert len(collector.tracer.table("fork_claims")) == 0
    assert collector.tracer.table("fork_fallbacks")[0].value == 0
    assert all(v.tid == 0 for v in collector.tracer.table("fork_slots").values())


def test_vm_area_dup_on_fentry_where_the_kernel_attaches_trampolines(collector):
    """fentry on vm_area_dup wherever the kernel's facts say a trampoline attaches (x86_64; arm64 with ftrace
    direct calls, 6.4+), though bcc's support_kfunc() says no on arm64: the program is attached, and the fork
    tests above count through it."""
    kinfo = collector.kinfo
    variant = collector.plan.choices["vma_dup"].variant.name
    assert variant == ("vm_area_dup-fentry" if kinfo.kfunc_capable else "vm_area_dup"), kinfo.kfunc_missing
    if kinfo.arch == "x86_64" or kinfo.config_enabled("DYNAMIC_FTRACE_WITH_DIRECT_CALLS"):
        assert kinfo.kfunc_capable
    if kinfo.kfunc_capable:
        assert ("kfunc", "kfunc__vmlinux__vm_area_dup", "kfunc__vmlinux__vm_area_dup") in collector.tracer.attached
        assert b"kfunc__vmlinux__vm_area_dup" in collector.tracer.bpf.kfunc_entry_fds


def test_fork_counts_in_fork_state_when_the_slot_is_taken(slotless_collector):
    """FORK_SLOTS_OFF: every fork counts as one whose array slot another thread holds (in its fork_state
    entry, a hash lookup per VMA): the same exact counts."""
    res, evs, _ = slotless_collector.run("fork")
    forks = of(evs, "fork")
    assert len(forks) == 1 and forks[0]["child_pid"] == res["child"]
    assert forks[0]["named_copied"] == res["k"] == 5
    assert res["k"] < forks[0]["vmas_copied"] <= forks[0]["map_count"]
    assert_fork_slots_released(slotless_collector)


def test_lost_events_counted(collector):
    assert collector.tracer.lost() == 0
    assert collector.tracer.undecodable == 0


# -- fallback variants (forced), proven the same way ------------------------------------------
VOLATILE = {"ts", "pid", "tid", "comm", "ptr", "latency_ns", "child_pid"}
ADDRESSES = {"start", "end", "prev_start", "prev_end", "next_start", "next_end", "res_start", "res_end",
             "vma_start", "vma_end", "addr"}


def comparable(evs, res):
    """The workload's merge and split events in order, and its name objects, without what differs run to run."""
    def rel(k, v):  # the workload's region is placed anew in each run: addresses from its base
        return v - res["base"] if k in ADDRESSES and v else v
    seq = []
    for e in evs:
        if e["type"] not in ("merge", "split") or not in_region(e, res):
            continue
        e = {k: rel(k, v) for k, v in e.items() if k not in VOLATILE}
        for side in ("prev", "next"):  # a neighbour outside the region is the interpreter's, different each run
            if e.get(f"{side}_end") and not 0 <= e[f"{side}_start"] < res["end"] - res["base"]:
                e.update({f"{side}_{k}": "outside" for k in ("start", "end", "cause", "name")})
        seq.append(e)
    objs = sorted((e["type"], e["name"], e["refcount"]) for e in evs if e["type"] in ("name_alloc", "name_free"))
    return seq, objs


def test_fallbacks_prctl_kprobe_and_fork_window(fallback_collector, names_run):
    plan = fallback_collector.plan
    assert plan.choices["prctl"].variant.name == "syscall-kprobe"
    assert plan.choices["fork"].variant.name == "uprobe_dup_mmap-window"
    assert plan.choices["vma_dup"].variant.name == "vm_area_dup"  # kretprobe, not fexit
    assert not fallback_collector.tracer.ringbuf
    assert "VT_BTF_LAYOUT" not in fallback_collector.tracer.defines  # the header layout
    res, evs, _ = fallback_collector.run("names")
    assert [(e["name"], e["ret"]) for e in of(evs, "name_set")] == [
        ("a", 0), ("a", 0), ("b", 0), ("bad$name", -errno.EINVAL), ("x" * 79, -errno.EINVAL),
        ("nowhere", -errno.ENOMEM)]
    # every member read at the headers' offsets gives what BTF's offsets gave: the same merges (flags, file,
    # anon_vma, pgoff, uffd and names compared), splits (refcounts) and name objects
    default_res, default_evs, _ = names_run
    assert comparable(evs, res) == comparable(default_evs, default_res)
    res, evs, _ = fallback_collector.run("fork")
    forks = of(evs, "fork")
    assert len(forks) == 1 and forks[0]["probe"] == "uprobe_dup_mmap_window"
    assert forks[0]["named_copied"] == 5 and forks[0]["latency_ns"] > 0
    assert forks[0]["child_pid"] == res["child"]
    assert fallback_collector.tracer.lost() == 0

"""procmaps: parsing real maps/smaps/smaps_rollup text, per-name totals, classes, fragments.

The smaps files in tests/data/smaps are real: captured in the test guests by
tests/data/smaps/capture.py (kernels 6.1, 6.12, 7.2; glibc 2.41 with
glibc.mem.decorate_maps=1) and gocapture.py (a Go 1.25 program), plus an excerpt of a public Android 12 smaps
(see tests/data/smaps/README.md).  Totals are checked against a plain sum
written here, not against the code under test.
"""

import glob
import json
import os
import re
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmatrace_bpf.errors import VmabpfError
from vmatrace_bpf.escape import escape
from vmatrace_bpf.categories import category, family
from vmatrace_bpf.procmaps import find_runs, fragments, group, mergeable_neighbours, parse

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "smaps")
SMAPS = sorted(glob.glob(os.path.join(DATA, "*.smaps")))
TAGS = ["k6.1", "k6.12", "k7.2"]


def read(name):
    with open(os.path.join(DATA, name), encoding="utf-8", errors="surrogateescape") as f:
        return f.read()


def plain_sums(text):
    """Independent of procmaps: sum each 'Key: N kB' line, count header lines,
    add up end-start of each header, grouped by the name column (field 6)."""
    per_name, total = {}, {"vmas": 0, "size": 0}
    name = None
    for line in text.splitlines():
        m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+ ?(.*)$", line)
        if m:
            name = m.group(3).strip() or "[anon]"
            row = per_name.setdefault(name, {"vmas": 0, "size": 0})
            size = (int(m.group(2), 16) - int(m.group(1), 16)) // 1024
            for d in (row, total):
                d["vmas"] += 1
                d["size"] += size
            continue
        m = re.match(r"^(\w+):\s+(\d+) kB$", line)
        if m:
            for d in (per_name[name], total):
                d[m.group(1)] = d.get(m.group(1), 0) + int(m.group(2))
    return per_name, total


def test_data_is_there():
    assert len(SMAPS) >= 7


@pytest.mark.parametrize("path", SMAPS, ids=os.path.basename)
def test_totals_equal_a_plain_sum(path):
    text = read(os.path.basename(path))
    per_name, total = plain_sums(text)
    pm = parse(text, path)
    assert pm.kind == "smaps"
    rows, tot = group(pm)
    assert tot.vmas == total["vmas"] and tot.size == total["size"]
    for col in ("Rss", "Pss", "Private_Dirty", "Swap", "SwapPss"):
        assert tot.values[col] == total.get(col, 0), col
    assert {r.name for r in rows} == set(per_name)
    for r in rows:
        assert r.vmas == per_name[r.name]["vmas"]
        assert r.size == per_name[r.name]["size"]
        assert r.values["Pss"] == per_name[r.name].get("Pss", 0)
        assert r.values["Rss"] == per_name[r.name].get("Rss", 0)
    # Size: lines agree with the address range
    assert tot.size == total["Size"]


@pytest.mark.parametrize("tag", TAGS)
def test_fragments_match_the_known_layout(tag):
    layout = json.loads(read(f"names-{tag}.json"))
    pm = parse(read(f"names-{tag}.smaps"))
    f = fragments(pm)
    alt = [r for r in f.name_runs if r.start == layout["alt"]["start"]]
    assert len(alt) == 1, "the a,b,a,b run"
    run = alt[0]
    assert run.end == layout["alt"]["end"]
    assert len(run.vmas) == layout["alt"]["vmas"] == 4
    assert run.would_remain == layout["alt"]["would_remain"] == 1
    assert [v.name for v in run.vmas] == ["[anon:a]", "[anon:b]", "[anon:a]", "[anon:b]"]
    assert f.pairs[("[anon:a]", "[anon:b]")] == 2
    assert f.pairs[("[anon:b]", "[anon:a]")] == 1
    # the mremap'd page: same name, still split
    assert f.same_name_splits["[anon:same]"] == 1
    # the lone page is in no run
    lone = layout["lone"]["start"]
    assert not any(r.start <= lone < r.end for r in f.name_runs)


@pytest.mark.parametrize("tag", TAGS)
def test_maps_and_rollup_of_the_same_process(tag):
    maps = parse(read(f"names-{tag}.maps"))
    assert maps.kind == "maps"
    assert not maps.has_fields
    names = [v.name for v in maps.vmas]
    assert names.count("[anon:same]") == 2 and "[heap]" in names and "[stack]" in names
    f = fragments(maps)                      # without VmFlags: only permissions compared
    assert any([v.name for v in r.vmas] == ["[anon:a]", "[anon:b]", "[anon:a]", "[anon:b]"] for r in f.name_runs)
    rollup = parse(read(f"names-{tag}.rollup"))
    assert rollup.kind == "rollup" and len(rollup.vmas) == 1
    assert rollup.vmas[0].fields["Rss"] > 0
    # the rollup was read right after smaps: within a few pages of the sum
    _, tot = group(parse(read(f"names-{tag}.smaps")))
    assert abs(rollup.vmas[0].fields["Rss"] - tot.values["Rss"]) < 256


def test_kernel_7_fields_and_vmflags():
    pm = parse(read("names-k7.2.smaps"))
    v = pm.vmas[0]
    for key in ("Size", "KernelPageSize", "Pss_Dirty", "KSM", "THPeligible", "ProtectionKey", "FilePmdMapped"):
        assert key in v.fields, key
    assert v.vm_flags[:2] == ("rd", "mr")
    assert v.name == "/usr/bin/python3.13"


@pytest.mark.parametrize("tag", TAGS)
def test_glibc_decorate_maps_classes(tag):
    pm = parse(read(f"glibc-{tag}.smaps"))
    names = {v.name for v in pm.vmas}
    assert "[anon: glibc: malloc arena]" in names
    assert "[anon: glibc: malloc]" in names
    assert any(n.startswith("[anon: glibc: pthread stack: ") for n in names)
    rows, _ = group(pm, by="category")
    by = {r.name: r for r in rows}
    arenas = sum(1 for v in pm.vmas if v.name == "[anon: glibc: malloc arena]")
    assert arenas == 3                       # one per thread that malloc'ed
    assert by["Native Heap"].vmas >= arenas + 2          # + [heap] + a "glibc: malloc" chunk
    assert by["Stack"].vmas >= 4                         # [stack] + 3 pthread stacks


# Go 1.25.12's start-up names (tests/kernel/go/gonames.go, CGO_ENABLED=0, captured by
# tests/data/smaps/gocapture.py on x86_64 6.12.117 and arm64 6.6.87) and the class of each: the arenas are
# the heap, the rest the runtime's metadata.
GO_CLASSES = {"heap": "Go Heap", "heap reservation": "Go Heap", "heap index": "Go Runtime",
              "page summary": "Go Runtime", "page alloc": "Go Runtime", "page alloc index": "Go Runtime",
              "scavenge index": "Go Runtime", "immortal metadata": "Go Runtime", "allspans array": "Go Runtime",
              "gc bits": "Go Runtime", "profiler hash buckets": "Go Runtime"}


@pytest.mark.parametrize("name", ["go1.25-k6.12.smaps", "go1.25-arm64-k6.6.smaps"])
def test_go_runtime_names_of_a_real_capture(name):
    text = read(name)
    in_text = Counter(m.group(1) for m in re.finditer(r"^[0-9a-f]+-[0-9a-f]+ .*\[anon: Go: ([^\]]*)\]$", text, re.M))
    assert set(in_text) == set(GO_CLASSES)
    pm = parse(text)
    for n in in_text:
        assert family(f"[anon: Go: {n}]") == "Go runtime", n
        assert category(f"[anon: Go: {n}]") == GO_CLASSES[n], n
    assert not [v.name for v in pm.vmas if v.name.startswith("[anon:") and family(v.name) != "Go runtime"]
    by = {r.name: r.vmas for r in group(pm, by="category")[0]}
    assert by["Go Heap"] == in_text["heap"] + in_text["heap reservation"] == 2
    assert by["Go Runtime"] == sum(in_text.values()) - 2


def test_android_excerpt():
    text = read("android12-systemui-excerpt.smaps")
    pm = parse(text)
    assert pm.vmas[0].extra["Name"] == "[anon:dalvik-main space (region space)]"
    rows, tot = group(pm, by="category")
    by = {r.name: r for r in rows}
    assert by["Dalvik Heap"].vmas == 1 and by["Dalvik Heap"].values["Pss"] == 11420
    assert by["Dalvik Other"].vmas == 5
    assert by[".bss"].vmas == 4
    assert by["Stack"].vmas == 1 and by["Kernel"].vmas == 2
    assert by[".oat mmap"].vmas == 2 and by[".art mmap"].vmas == 2
    f = fragments(pm)
    # dalvik-main space ends at 32c00000, boot.art starts at 70fba000: not adjacent;
    # the five boot image spaces are, and differ only in name; so are bionic's
    # thread signal stack and the arc4random page after it.
    assert [len(r.vmas) for r in f.name_runs] == [5, 2]
    assert [r.would_remain for r in f.name_runs] == [1, 1]
    assert [v.name for v in f.name_runs[1].vmas] == ["[anon:thread signal stack]", "[anon:arc4random data]"]
    # the three [anon:.bss] of linker64 differ in permissions: no run
    assert not f.same_name_splits


@pytest.mark.parametrize("name,cls", [
    ("[anon:libc_malloc]", "Native Heap"), ("[anon:scudo:primary]", "Native Heap"),
    ("[anon:scudo:secondary]", "Native Heap"), ("[anon:GWP-ASan Guard Page]", "Native Heap"),
    ("[heap]", "Native Heap"), ("[anon:stack_and_tls:1234]", "Stack"), ("[stack]", "Stack"),
    ("[anon:dalvik-main space (region space)]", "Dalvik Heap"), ("[anon:dalvik-zygote space]", "Dalvik Heap"),
    ("[anon:dalvik-large object space allocation]", "Dalvik Heap"), ("[anon:dalvik-LinearAlloc]", "Dalvik Other"),
    ("[anon:dalvik-indirect ref table]", "Dalvik Other"), ("[anon:.bss]", ".bss"),
    ("[anon: glibc: malloc arena]", "Native Heap"), ("[anon: glibc: malloc]", "Native Heap"),
    ("[anon: glibc: loader malloc]", "Native Heap"), ("[anon: glibc: pthread stack: 42]", "Stack"),
    ("[anon: glibc: pthread user stack: 42]", "Stack"), ("[anon: glibc: fatal]", "Other anon"),
    ("[anon: Go: heap]", "Go Heap"), ("[anon: Go: page summary]", "Go Runtime"),
    ("[anon: Go: OS thread stack]", "Stack"), ("[anon: Go: goroutine stack (system)]", "Stack"),
    ("[anon: Go: goroutine stack]", "Go Runtime"),
    ("[anon:thread signal stack]", "Other anon"), ("", "Unnamed anon"), ("[anon_shmem:x]", "Shared anon"),
    ("/system/lib64/libc.so", ".so mmap"), ("/usr/lib/x86_64-linux-gnu/libz.so.1.3.1", ".so mmap"), ("/data/app/x/base.apk", ".apk mmap"),
    ("/dev/ashmem/CursorWindow (deleted)", "Ashmem"), ("/memfd:jit-cache (deleted)", "Dalvik Other"),
    ("[vdso]", "Kernel"), ("/usr/bin/python3", "Other mmap"),
])
def test_category(name, cls):
    assert category(name) == cls


HEADER = "7f0000000000-7f0000001000 rw-p 00000000 00:00 0 "
HEADER2 = "7f0000001000-7f0000002000 rw-p 00000000 00:00 0 "


def test_names_with_spaces_and_deleted():
    text = ("00400000-00401000 r--p 00000000 08:01 42                                 /tmp/my dir/a b.so (deleted)\n"
            "00401000-00402000 rw-s 00000000 00:01 7                                  /dev/zero (deleted)\n"
            "00402000-00403000 rw-s 00000000 00:01 8                                  [anon_shmem:shared buf]\n"
            "00403000-00404000 rw-p 00000000 00:00 0                                  [anon:x y z]\n")
    pm = parse(text)
    assert [v.name for v in pm.vmas] == ["/tmp/my dir/a b.so (deleted)", "/dev/zero (deleted)",
                                         "[anon_shmem:shared buf]", "[anon:x y z]"]
    assert pm.vmas[0].deleted and pm.vmas[0].inode == 42 and pm.vmas[0].dev == "08:01"
    assert not pm.vmas[2].is_anon_named_or_unnamed       # shared: never merged as anonymous
    assert category(pm.vmas[0].name) == ".so mmap"


def test_crlf_from_old_adb():
    pm = parse(read("names-k6.12.smaps").replace("\n", "\r\n"))
    assert pm.kind == "smaps"


@pytest.mark.parametrize("text,msg", [
    ("", "empty"), ("\n\n", "empty"), ("   ", "empty"),
    ("\x7fELF\x02\x01\x01\x00\x00\x00", "binary"),
    ("hello world\n", "not a /proc/PID/maps or smaps line"),
    ("Rss: 4 kB\n", "not a /proc/PID/maps or smaps line"),
    (HEADER + "\nSize: 4 kB\nRss: x kB\n", "malformed smaps field Rss"),
    (HEADER + "\nSize: 4 kB\nRss: 4 kB\nVmFlags: rd\n" + HEADER2 + "\n", "truncated smaps"),
    (HEADER + "\nSize: 4 kB\nRss: 4 kB\nVmFlags: rd\n" + HEADER2 + "\nSize: 4 kB\n", "truncated smaps"),
    (HEADER + "\n" + HEADER2 + "\nSize: 4 kB\n", "mixed or damaged"),
    # the same VMA twice (two captures pasted together) or out of order: never counted twice
    (HEADER + "\n" + HEADER + "\n", "line 2: VMA overlaps or comes before the one on line 1"),
    (HEADER2 + "\n" + HEADER + "\n", "not one process's maps in address order"),
    ("7f0000001000-7f0000000000 rw-p 00000000 00:00 0\n", "ends before it starts"),
])
def test_clear_errors(text, msg):
    with pytest.raises(VmabpfError) as e:
        parse(text, "f")
    assert msg in str(e.value)
    assert "\n" not in str(e.value)


def test_truncated_real_file():
    text = read("names-k6.12.smaps")
    last_header = max(m.start() for m in re.finditer(r"(?m)^[0-9a-f]+-[0-9a-f]+ ", text))
    with pytest.raises(VmabpfError, match="truncated smaps"):
        parse(text[: text.index("\n", last_header) + 1])
    with pytest.raises(VmabpfError, match="truncated smaps"):
        parse(text[: text.index("Pss:", last_header)])


def test_escape():
    assert escape("[anon:ok]") == "[anon:ok]"
    assert escape("a\x1b[2Jb\n") == "a\\x1b[2Jb\\x0a"
    assert escape(b"/tmp/\xff".decode("utf-8", "surrogateescape")) == "/tmp/\\xff"


# -- fuzzing: only VmabpfError may come out of the parser --------------------------
SAMPLE = read("names-k6.12.smaps")[:6000]
SAMPLE_LINES = SAMPLE.splitlines(keepends=True)


def _parse_or_vmabpf_error(text):
    try:
        pm = parse(text, "fuzz")
    except VmabpfError as e:
        assert str(e) and "\n" not in str(e)
        return
    group(pm, by="name")
    group(pm, by="category", sort="size")
    fragments(pm).to_json()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(list("0123456789abcdef-: \nkB")),
               max_size=400))
def test_fuzz_random_text(text):
    _parse_or_vmabpf_error(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(SAMPLE_LINES) - 1),
                          st.sampled_from(["drop", "dup", "cut", "garble", "swap"]),
                          st.text(max_size=8)), max_size=6))
def test_fuzz_mutated_smaps(mutations):
    lines = list(SAMPLE_LINES)
    for idx, op, junk in mutations:
        if not lines:
            break
        i = idx % len(lines)
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "cut":
            lines[i] = lines[i][: len(lines[i]) // 2]
        elif op == "garble":
            lines[i] = lines[i][:5] + junk + lines[i][5:]
        else:
            j = (i + 1) % len(lines)
            lines[i], lines[j] = lines[j], lines[i]
    _parse_or_vmabpf_error("".join(lines))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_bytes(data):
    _parse_or_vmabpf_error(data.decode("utf-8", "surrogateescape"))


def naive_runs(vmas):
    """Maximal runs joined by mergeable_neighbours, one pair at a time (find_runs skips re-checks)."""
    runs, cur = [], []
    for v in vmas:
        if cur and mergeable_neighbours(cur[-1], v):
            cur.append(v)
            continue
        if len(cur) > 1:
            runs.append(cur)
        cur = [v]
    return runs + ([cur] if len(cur) > 1 else [])


LAYOUT_VMA = st.tuples(st.booleans(), st.sampled_from(["rw-p", "r--p", "rw-s"]), st.sampled_from([0, 7]),
                       st.sampled_from(["", "[anon:a]", "[anon:b]", "/lib/x.so", "[heap]"]))


@settings(max_examples=200, deadline=None)
@given(st.lists(LAYOUT_VMA, max_size=30))
def test_find_runs_is_the_pairwise_rule(layout):
    lines, addr = [], 0x10000
    for gap, perms, inode, name in layout:
        addr += 0x1000 if gap else 0
        lines.append(f"{addr:x}-{addr + 0x1000:x} {perms} 00000000 00:{inode:02x} {inode} {name}".rstrip())
        addr += 0x1000
    if not lines:
        return
    pm = parse("\n".join(lines) + "\n")
    assert [r.vmas for r in find_runs(pm)] == naive_runs(pm.vmas)


@pytest.mark.parametrize("path", SMAPS, ids=os.path.basename)
def test_find_runs_is_the_pairwise_rule_on_captures(path):
    pm = parse(read(os.path.basename(path)))
    assert [r.vmas for r in find_runs(pm)] == naive_runs(pm.vmas)

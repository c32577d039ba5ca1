#!/usr/bin/env python3
"""Capture real /proc/self/smaps files with a known layout of named VMAs.

    python3 tests/data/smaps/capture.py OUTDIR TAG

Run as root in a test guest (tests/vm/run --kernel 6.12 -- python3 tests/data/smaps/capture.py ...).
Writes, for this process:

  OUTDIR/names-TAG.smaps    smaps after building the layout below
  OUTDIR/names-TAG.maps     maps at the same moment
  OUTDIR/names-TAG.rollup   smaps_rollup at the same moment
  OUTDIR/names-TAG.json     the layout: addresses and what --fragments must find there

Layout, far from every other mapping (vmatrace_bpf.workload.map_region):

  alt:   4 adjacent rw-p pages named a, b, a, b    -> one run of 4 VMAs that would be 1 VMA
         with equal names; name pairs a->b twice, b->a once
  same:  2 adjacent rw-p pages both named "same", the second moved there with mremap
         after being faulted, so its anon_vma and vm_pgoff differ -> same name, still split
  lone:  1 page named "lone" with a PROT_NONE gap after it -> in no run

With GLIBC_TUNABLES=glibc.mem.decorate_maps=1 (glibc >= 2.40) a second file
OUTDIR/glibc-TAG.smaps is written after starting threads that malloc, so the
malloc arenas, large mmap'd chunks and thread stacks are named by glibc.
"""

import ctypes
import json
import os
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(HERE))))

from vmatrace_bpf.workload import PAGE, PROT_NONE, PROT_RW, map_region, protect, set_name, touch  # noqa: E402

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mremap.restype = ctypes.c_void_p
_libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
MREMAP_MAYMOVE, MREMAP_FIXED = 1, 2


def copy(src, dst):
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data)


def build_layout():
    base = map_region(16, prot=PROT_NONE)
    # alt: pages 0..3
    protect(base, 4 * PAGE, PROT_RW)
    touch(base, 4)
    for i, name in enumerate([b"a", b"b", b"a", b"b"]):
        assert set_name(base + i * PAGE, PAGE, name) == 0
    # page 4 stays PROT_NONE (a gap); same: pages 5, 6
    same = base + 5 * PAGE
    protect(same, PAGE, PROT_RW)
    touch(same, 1)
    other = map_region(1, base=base + 0x1000000)
    touch(other, 1)
    moved = _libc.mremap(other, PAGE, PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, same + PAGE)
    assert moved == same + PAGE, "mremap failed"
    assert set_name(same, PAGE, b"same") == 0
    assert set_name(same + PAGE, PAGE, b"same") == 0
    # page 7 PROT_NONE gap; lone: page 8, then 9.. PROT_NONE
    lone = base + 8 * PAGE
    protect(lone, PAGE, PROT_RW)
    touch(lone, 1)
    assert set_name(lone, PAGE, b"lone") == 0
    return {
        "base": base,
        "page": PAGE,
        "alt": {"start": base, "end": base + 4 * PAGE, "names": ["a", "b", "a", "b"],
                "vmas": 4, "would_remain": 1, "pairs": {"[anon:a] -> [anon:b]": 2, "[anon:b] -> [anon:a]": 1}},
        "same": {"start": same, "end": same + 2 * PAGE, "name": "[anon:same]", "vmas": 2},
        "lone": {"start": lone, "end": lone + PAGE, "name": "[anon:lone]"},
    }


def glibc_threads(outpath, nthreads=3):
    start, done = threading.Barrier(nthreads + 1), threading.Event()
    keep = []

    def worker():
        keep.append(bytearray(300 * 1024))      # above the mmap threshold: "glibc: malloc"
        keep.append([bytes(64) for _ in range(2000)])
        keep.append(bytearray(20000))           # from this thread's arena
        start.wait()
        done.wait()

    threads = [threading.Thread(target=worker) for _ in range(nthreads)]
    for t in threads:
        t.start()
    start.wait()
    copy("/proc/self/smaps", outpath)
    done.set()
    for t in threads:
        t.join()


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    outdir, tag = argv
    os.makedirs(outdir, exist_ok=True)
    layout = build_layout()
    layout["kernel"] = os.uname().release
    stem = os.path.join(outdir, f"names-{tag}")
    copy("/proc/self/smaps", stem + ".smaps")
    copy("/proc/self/maps", stem + ".maps")
    copy("/proc/self/smaps_rollup", stem + ".rollup")
    with open(stem + ".json", "w") as f:
        json.dump(layout, f, indent=1)
    if "decorate_maps=1" in os.environ.get("GLIBC_TUNABLES", ""):
        glibc_threads(os.path.join(outdir, f"glibc-{tag}.smaps"))
    print(f"captured {stem}.* (kernel {layout['kernel']})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

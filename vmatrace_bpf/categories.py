"""The classes of `dumpsys meminfo` (category) and allocator families (family): who named a VMA, from the names real allocators and runtimes give.

`maps --by family` groups by these; whatever no rule knows is "other named" (an
``[anon:...]`` name nobody here recognises), "unnamed anon" (no name at all),
"kernel" (the names the kernel gives: [heap], [stack], [vdso], ...) or "file".
The rules (prefixes as each allocator names its mappings):

- glibc (2.40+, with GLIBC_TUNABLES=glibc.mem.decorate_maps=1): ``[anon: glibc: malloc arena]``,
  ``[anon: glibc: malloc]``, ``[anon: glibc: loader malloc]``,
  ``[anon: glibc: pthread stack: TID]``, ``[anon: glibc: pthread user stack: TID]``,
  ``[anon: glibc: unused stack]``, ``[anon: glibc: fork handler]`` ... (note the space
  after "anon:": glibc's names start with one).
- Go runtime (1.25+, on by default): ``[anon: Go: heap]``, ``[anon: Go: heap reservation]``,
  ``[anon: Go: heap index]``, ``[anon: Go: page summary]``, ``[anon: Go: page alloc]``,
  ``[anon: Go: scavenge index]``, ``[anon: Go: immortal metadata]``, ``[anon: Go: gc bits]`` ...
  (the names Go 1.25.12 gave in the test guests: tests/data/smaps/go1.25-*.smaps).
- mimalloc: ``[anon:mimalloc]`` and names
  starting with "mimalloc".
- scudo (Android's default allocator): ``[anon:scudo:primary]``, ``[anon:scudo:secondary]``,
  ``[anon:scudo:...]``.
- GWP-ASan (Android bionic/LLVM): ``[anon:GWP-ASan Guard Page]``, ``[anon:GWP-ASan Metadata]``
  ...
- bionic (Android libc, outside its malloc): ``[anon:libc_malloc]`` (jemalloc builds),
  ``[anon:stack_and_tls:TID]``, ``[anon:thread signal stack]``, ``[anon:bionic TLS]``,
  ``[anon:System property context nodes]``, ``[anon:atexit handlers]``,
  ``[anon:arc4random data]``, ``[anon:linker_alloc...]``, ``[anon:.bss]`` ...
- ART (Android runtime): ``[anon:dalvik-...]``, ``/dev/ashmem/dalvik-...``,
  ``/memfd:jit-cache``, ``[anon:ART ...]``.
"""

from __future__ import annotations

import re
from typing import Dict

FAMILIES = ("glibc", "Go runtime", "mimalloc", "scudo", "GWP-ASan", "bionic", "ART",
            "other named", "unnamed anon", "kernel", "file")

_BIONIC_PREFIXES = ("libc_malloc", "stack_and_tls:", "thread signal stack", "bionic TLS", "bionic_alloc",
                    "System property", "atexit handlers", "arc4random", "linker_alloc", ".bss",
                    "pthread_internal", "cfi shadow", "abort message", "bionic")
_cache: Dict[str, str] = {}


def family(name: str) -> str:
    """The allocator family of a VMA named NAME (as /proc/PID/maps prints it; "" for none)."""
    f = _cache.get(name)
    if f is None:
        if len(_cache) > 100_000:
            _cache.clear()
        f = _cache[name] = _family(name)
    return f


# [anon:NAME] rules in order: the first family whose prefixes NAME starts with (glibc and Go give their names a
# leading space: "[anon: glibc: malloc arena]", "[anon: Go: heap]")
_ANON_FAMILIES = (("glibc", (" glibc: ",)), ("Go runtime", (" Go: ",)), ("mimalloc", ("mimalloc",)),
                  ("scudo", ("scudo:",)), ("GWP-ASan", ("GWP-ASan",)), ("bionic", _BIONIC_PREFIXES),
                  ("ART", ("dalvik-", "ART ", "art-")))


def _family(name: str) -> str:
    if name.endswith(" (deleted)"):
        name = name[: -len(" (deleted)")]
    if not name:
        return "unnamed anon"
    if name.startswith("[anon:") and name.endswith("]"):
        inner = name[len("[anon:"):-1]
        for fam, prefixes in _ANON_FAMILIES:
            if inner.startswith(prefixes):
                return fam
        return "other named"
    if name.startswith("[anon_shmem:") or name.startswith("[anon:"):
        return "other named"
    if name.startswith(("/dev/ashmem/dalvik-", "/memfd:jit-")):
        return "ART"
    if name.startswith("["):
        return "kernel"
    return "file"


# -- classes (dumpsys meminfo and friends) -----------------------------------------
#: Dalvik heap spaces (frameworks/base android_os_Debug.cpp, libmeminfo androidprocheaps.cpp).
_DALVIK_HEAP_PREFIXES = ("[anon:dalvik-main space", "[anon:dalvik-alloc space", "[anon:dalvik-large object space",
                         "[anon:dalvik-free list large object space", "[anon:dalvik-non moving space",
                         "[anon:dalvik-zygote space")
#: Go 1.25's names for heap arenas (runtime/mheap.go sysMap "heap", malloc.go sysReserve "heap reservation");
#: "heap index" (malloc.go, the arena index) is metadata.
_GO_HEAP = frozenset(("heap", "heap reservation"))
# Go's own stack mappings (runtime/os_linux.go newosproc0; runtime/stack.go under GODEBUG=efence=1, which
# gives each goroutine stack a mapping): stacks, like glibc's pthread stacks.  Ordinary goroutine stacks
# live in "heap" spans and stay Go Heap.
_GO_STACK = frozenset(("OS thread stack", "goroutine stack (system)"))
_VERSIONED_SO = re.compile(r"\.so(\.[0-9]+)+\Z")
_KERNEL_NAMES = frozenset(("[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]", "[vectors]", "[sigpage]",
                           "[uprobes]", "[kuserhelpers]"))


def category(name: str) -> str:
    """The class of a VMA named NAME (as printed; "" for none).

    Android names follow `dumpsys meminfo` (libmeminfo's androidprocheaps.cpp):
    Native Heap = [heap], [anon:libc_malloc], [anon:scudo:*], [anon:GWP-ASan*];
    Stack = [stack], [anon:stack_and_tls:*]; Dalvik Heap = the main, large
    object, non moving and zygote spaces; Dalvik Other = other [anon:dalvik-*];
    file mappings by suffix.  Bionic's [anon:.bss] is its own class (dumpsys
    counts it with .so mmap).  glibc's decorate_maps names (2.40+): "glibc:
    malloc arena", "glibc: malloc", "glibc: loader malloc" are Native Heap,
    "glibc: pthread stack: TID", "glibc: pthread user stack: TID", "glibc:
    unused stack" are Stack; Go 1.25's "Go: heap" (the arenas: objects and
    goroutine stacks) and "Go: heap reservation" (their unmapped rest) are Go
    Heap, "Go: OS thread stack" and "Go: goroutine stack (system)" Stack, its
    other "Go: ..." names (heap index, page summary, gc bits, ...: the
    runtime's metadata) Go Runtime.
    """
    if name.endswith(" (deleted)"):
        name = name[: -len(" (deleted)")]
    if not name:
        return "Unnamed anon"
    if name.startswith("[anon:"):
        return _anon_category(name)
    if name.startswith("[anon_shmem:"):
        return "Shared anon"
    if name == "[heap]":
        return "Native Heap"
    if name.startswith("[stack"):           # [stack], and [stack:TID] of 3.x kernels
        return "Stack"
    if name in _KERNEL_NAMES:
        return "Kernel"
    if name.startswith("/dev/ashmem/dalvik-"):
        return "Dalvik Other"
    if name.startswith("/dev/ashmem"):
        return "Ashmem"
    if name.startswith("/memfd:jit-"):
        return "Dalvik Other"
    if name.startswith("/dev/"):
        return "Other dev"
    for suffix, cls in ((".so", ".so mmap"), (".jar", ".jar mmap"), (".apk", ".apk mmap"), (".ttf", ".ttf mmap"),
                        (".odex", ".dex mmap"), (".vdex", ".dex mmap"), (".oat", ".oat mmap"), (".art", ".art mmap"),
                        (".art]", ".art mmap")):
        if name.endswith(suffix):
            return cls
    if _VERSIONED_SO.search(name):        # glibc systems: libc.so.6, libz.so.1.3.1
        return ".so mmap"
    if ".dex" in name:
        return ".dex mmap"
    if name.startswith("["):
        return "Other anon"
    return "Other mmap"


def _anon_category(name: str) -> str:
    """Class of an ``[anon:...]`` name (see category())."""
    inner = name[len("[anon:"):]
    if inner.endswith("]"):
        inner = inner[:-1]
    if inner.startswith("libc_malloc") or inner.startswith("scudo:") or inner.startswith("GWP-ASan"):
        return "Native Heap"
    if inner.startswith("stack_and_tls:"):
        return "Stack"
    if inner.startswith("dalvik-"):
        return "Dalvik Heap" if name.startswith(_DALVIK_HEAP_PREFIXES) else "Dalvik Other"
    if inner == ".bss":
        return ".bss"
    stripped = inner.lstrip(" ")
    if stripped.startswith("glibc: "):
        what = stripped[len("glibc: "):]
        if what in ("malloc arena", "malloc", "loader malloc"):
            return "Native Heap"
        if what.startswith(("pthread stack", "pthread user stack", "unused stack")):
            return "Stack"
        return "Other anon"
    if stripped.startswith("Go: "):
        what = stripped[len("Go: "):]
        return "Go Heap" if what in _GO_HEAP else "Stack" if what in _GO_STACK else "Go Runtime"
    return "Other anon"

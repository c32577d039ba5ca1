"""Merge readings this kernel does not choose still compile and pass the verifier here.

vma_merge-src (6.9-6.11) has no test kernel in ../shared/vm: its signature is checked
against BTF by the plan (tests/unit/test_plan.py, from the kernel sources' prototype), and
this proves its BPF code builds and verifies on a real kernel.  What it cannot prove is its
counts; the variant's note and README say so.
"""

import pytest

from vmatrace_bpf.loader import build_defines, cflags, empty_cwd, import_bcc, program_source
from vmatrace_bpf.plan import CAPABILITIES


def variant(cap, name):
    return next(v for c in CAPABILITIES if c.name == cap for v in c.variants if v.name == name)


@pytest.mark.parametrize("name", ["vma_merge-src"])
def test_unproven_merge_reading_builds_and_verifies(kinfo, collector, name):
    chosen = collector.plan.choices["merge"].variant
    if chosen is None or chosen.macro == "MERGE_VMG":
        # one bcc compile (~40 s under TCG) is spent where it tells most: the kernels whose merge path is
        # vma_merge() (6.1, 6.6 on both arches), the nearest relatives of 6.9-6.11
        pytest.skip("this kernel's merge path is vma_merge_struct: the vma_merge() readings are built and "
                    "verified in the vma_merge() guests (6.1, 6.6)")
    bcc = import_bcc()
    d = {k: v for k, v in build_defines(collector.plan, kinfo, [1]).items()
         if not k.startswith(("MERGE_", "ARG_kp_vma_merge", "ARG_kp_can_merge", "ARG_kp_vmg", "VMG_"))}
    v = variant("merge", name)
    d[v.macro] = 1
    for probe in v.probes:
        for param, pos in probe.params():
            d[f"ARG_{probe.fn}_{param}"] = pos - 1  # every argument one word, as on the kernels it is for
    with empty_cwd():
        b = bcc.BPF(text=program_source(), cflags=cflags(d))
    try:
        for probe in v.probes:
            assert b.load_func(probe.program, bcc.BPF.KPROBE).fd >= 0
    finally:
        b.cleanup()

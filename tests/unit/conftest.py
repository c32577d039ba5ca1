import os

import pytest

from vmatrace_bpf.kernel import KernelInfo

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DATA = os.path.join(REPO, "tests", "data")
SHARED_VM = os.path.abspath(os.environ.get("VMABPF_SHARED", os.path.join(REPO, "..", "shared")) + "/vm")
KERNELS = {("x86_64", "6.1.192"), ("x86_64", "6.6.87"), ("x86_64", "6.12.117"), ("x86_64", "7.2.13"),
           ("arm64", "6.6.87"), ("arm64", "6.12.117")}


def btf_path(arch, release):
    p = os.path.join(SHARED_VM, arch, f"btf-{release}")
    return p if os.path.exists(p) else None


def fixture_kernel(arch, release, with_btf=True):
    d = os.path.join(DATA, "kernels", arch)

    def p(name):
        path = os.path.join(d, name)
        return path if os.path.exists(path) else None

    btf = btf_path(arch, release) if with_btf else None
    if with_btf and btf is None and arch == "x86_64":
        pytest.skip(f"needs the BTF file btf-{release} from ../shared/vm/{arch} (not present)")
    return KernelInfo.from_files(release, arch, kallsyms=p(f"kallsyms-{release}.txt"),
                                 filter_functions=p(f"available_filter_functions-{release}.txt"),
                                 btf=btf, config=p(f"config-{release}"))


@pytest.fixture
def saved_kernel():
    """saved_kernel(arch, release, with_btf=True) -> KernelInfo from the saved guest files."""
    return fixture_kernel

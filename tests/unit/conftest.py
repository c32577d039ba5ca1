import os

import pytest

from vmatrace_bpf.kernel import KernelInfo

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DATA = os.path.join(REPO, "tests", "data")
SHARED_VM = os.path.abspath(os.environ.get("VMABPF_SHARED", os.path.join(REPO, "..", "shared")) + "/vm")
KERNELS = {("x86_64", "6.1.192"), ("x86_64", "6.6.87"), ("x86_64", "6.12.117"), ("x86_64", "7.2.13"),
           ("arm64", "6.6.87"), ("arm64", "6.12.117")}


_UNPACKED = {}


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def btf_path(arch, release):
    """../shared/vm/ARCH/btf-RELEASE, or the xz copy in tests/data/kernels (BTF captured from a guest
    where shared/ has none: arm64), unpacked once per test run into a temporary file removed at exit."""
    p = os.path.join(SHARED_VM, arch, f"btf-{release}")
    if os.path.exists(p):
        return p
    xz = os.path.join(DATA, "kernels", arch, f"btf-{release}.xz")
    if not os.path.exists(xz):
        return None
    if xz not in _UNPACKED:
        import atexit
        import lzma
        import tempfile
        fd, out = tempfile.mkstemp(prefix=f"vmabpf-btf-{arch}-{release}-")
        atexit.register(_remove, out)
        with os.fdopen(fd, "wb") as f, lzma.open(xz) as src:
            f.write(src.read())
        _UNPACKED[xz] = out
    return _UNPACKED[xz]


def btf_kernels():
    """(arch, release) of every real BTF the tests have."""
    import glob
    out = set()
    for p in glob.glob(f"{SHARED_VM}/*/btf-*") + glob.glob(f"{DATA}/kernels/*/btf-*.xz"):
        arch = os.path.basename(os.path.dirname(p))
        out.add((arch, os.path.basename(p)[len("btf-"):].removesuffix(".xz")))
    return sorted(out)


def fixture_kernel(arch, release, with_btf=True):
    d = os.path.join(DATA, "kernels", arch)

    def p(name):
        path = os.path.join(d, name)
        return path if os.path.exists(path) else None

    btf = btf_path(arch, release) if with_btf else None
    if with_btf and btf is None:
        pytest.skip(f"needs the BTF file btf-{release} from ../shared/vm/{arch} (not present)")
    return KernelInfo.from_files(release, arch, kallsyms=p(f"kallsyms-{release}.txt"),
                                 filter_functions=p(f"available_filter_functions-{release}.txt"),
                                 btf=btf, config=p(f"config-{release}"))


@pytest.fixture
def saved_kernel():
    """saved_kernel(arch, release, with_btf=True) -> KernelInfo from the saved guest files."""
    return fixture_kernel

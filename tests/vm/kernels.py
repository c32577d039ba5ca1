"""Test kernels: ../shared/vm/<arch>/ images, else built from Debian's linux-source (cached)."""

import os
import re

IMAGE_PREFIX = {"x86_64": "bzImage-", "arm64": "Image-"}


class KernelError(Exception):
    pass


def _version_key(v):
    return tuple(int(x) for x in re.findall(r"\d+", v))


def available(arch, shared):
    """{version: image path} for every kernel image of ARCH in shared/vm and the build cache."""
    from rootfs import cache_dir
    out = {}
    for d in (os.path.join(shared, "vm", arch), os.path.join(cache_dir(), "kernels", arch)):
        if not os.path.isdir(d):
            continue
        for fn in os.listdir(d):
            if fn.startswith(IMAGE_PREFIX[arch]):
                out.setdefault(fn[len(IMAGE_PREFIX[arch]):], os.path.join(d, fn))
    return out


def matches(version, prefix):
    """'6.1' matches 6.1.192 but not 6.12.117."""
    return version == prefix or version.startswith(prefix + ".")


def find_kernel(spec, arch, shared):
    if os.sep in spec or os.path.isfile(spec):
        if not os.path.isfile(spec):
            raise KernelError(f"no kernel image at {spec}")
        return os.path.abspath(spec)
    have = available(arch, shared)
    hits = sorted((v for v in have if matches(v, spec)), key=_version_key)
    if hits:
        return have[hits[-1]]
    listed = ", ".join(sorted(have, key=_version_key)) or "none"
    raise KernelError(f"no {arch} kernel {spec} (have: {listed}); build one with "
                      f"tests/vm/build-kernel --arch {arch} {spec}")

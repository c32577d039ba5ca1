"""The guest root filesystem: a cached debootstrap of Debian trixie with bcc."""

import fcntl
import hashlib
import os
import shutil
import subprocess

SUITE = "trixie"
PACKAGES = ["python3", "python3-bpfcc", "bpfcc-tools", "bpftool", "python3-pytest", "python3-click",
            "python3-tabulate", "python3-hypothesis", "procps", "xz-utils", "tar", "zstd"]
DEB_ARCH = {"x86_64": "amd64", "arm64": "arm64"}
INIT_PATH = "usr/local/sbin/vmabpf-init"
INIT_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "guest-init.sh")


class RootfsError(Exception):
    pass


def cache_dir():
    return os.environ.get("VMABPF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vmabpf")


def rootfs_path(arch):
    key = hashlib.sha256(" ".join([SUITE, arch] + PACKAGES).encode()).hexdigest()[:10]
    return os.path.join(cache_dir(), f"rootfs-{SUITE}-{arch}-{key}")


def ensure_rootfs(arch):
    """Return the root directory for ARCH, building it (as root, ~1-2 min) if not cached."""
    path = rootfs_path(arch)
    if os.path.exists(os.path.join(path, ".vmabpf-complete")):
        return path
    if os.geteuid() != 0:
        raise RootfsError(f"no guest root filesystem at {path}; building one needs root (debootstrap): "
                          "run this as root once")
    if not shutil.which("debootstrap"):
        raise RootfsError("debootstrap not found: apt-get install debootstrap")
    os.makedirs(cache_dir(), exist_ok=True)
    with open(os.path.join(cache_dir(), "rootfs.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(os.path.join(path, ".vmabpf-complete")):
            return path
        tmp = path + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = ["debootstrap", "--variant=minbase", f"--arch={DEB_ARCH[arch]}", "--include=" + ",".join(PACKAGES),
               SUITE, tmp, os.environ.get("VMABPF_DEBIAN_MIRROR", "http://deb.debian.org/debian")]
        if arch != host_arch():
            _enable_binfmt()
        print(f"vm: building the {arch} guest root filesystem (debootstrap {SUITE}, once; cached in {path})",
              flush=True)
        log = path + ".log"
        with open(log, "w") as f:
            rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
        if rc != 0:
            raise RootfsError(f"debootstrap failed (exit {rc}); see {log}")
        # Empty apt caches: the tree is shared read-only and never updated.
        shutil.rmtree(os.path.join(tmp, "var/cache/apt/archives"), ignore_errors=True)
        open(os.path.join(tmp, ".vmabpf-complete"), "w").close()
        os.rename(tmp, path)
    return path


def host_arch():
    return {"x86_64": "x86_64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


def _enable_binfmt():
    """Foreign-arch debootstrap runs the target's binaries through qemu-user-static."""
    if not shutil.which("qemu-aarch64-static") and not os.path.exists("/usr/libexec/qemu-binfmt/aarch64-binfmt-P"):
        raise RootfsError("building an arm64 root needs qemu-user-static: apt-get install qemu-user-static")
    if not os.path.exists("/proc/sys/fs/binfmt_misc/register"):
        subprocess.call(["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"])
    if not os.path.exists("/proc/sys/fs/binfmt_misc/qemu-aarch64"):
        subprocess.call(["update-binfmts", "--enable", "qemu-aarch64"])
    if not os.path.exists("/proc/sys/fs/binfmt_misc/qemu-aarch64"):
        raise RootfsError("binfmt_misc has no qemu-aarch64 entry (update-binfmts --enable qemu-aarch64 failed)")


def install_init(root, mountpoints):
    """Put the guest init into ROOT and make the directories the guest mounts on."""
    with open(INIT_SRC) as f:
        text = f.read()
    dst = os.path.join(root, INIT_PATH)
    try:
        with open(dst) as f:
            same = f.read() == text
    except OSError:
        same = False
    if not same:
        with open(dst, "w") as f:
            f.write(text)
        os.chmod(dst, 0o755)
    for mp in mountpoints:
        os.makedirs(os.path.join(root, mp.lstrip("/")), exist_ok=True)
    os.makedirs(os.path.join(root, "vmrun"), exist_ok=True)

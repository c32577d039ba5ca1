"""Guests without a virtio transport: the root, the project and the command as an initramfs.

Some test kernels cannot reach QEMU's virtio-9p device: the arm64 6.6.87 build has neither
CONFIG_VIRTIO_MMIO nor a PCI host driver (CONFIG_PCI_HOST_GENERIC), so the virt machine's
devices are invisible to it.  Such a guest gets everything in RAM instead: the guest root
(built once into an uncompressed newc cpio, cached beside the root) plus a small second
archive per run (the project at its host path, the command), concatenated as the kernel
allows.  Files the command writes under the project come back over the console as a
base64 tar between two markers (guest-init.sh), and are written back by ``extract_files``
(regular files inside the project only).
"""

import io
import os
import stat
import tarfile

FILES_BEGIN = "VMABPF_FILES_BEGIN"
FILES_END = "VMABPF_FILES_END"
MAX_FILES_BYTES = 64 << 20
ARCHIVE_VERSION = 2  # bump when the way the root is archived changes (the cache is keyed by it)
_SKIP = {".git", ".venv", "__pycache__", ".pytest_cache", ".mypy_cache"}


def kernel_config(kernel_path):
    """The .config saved beside a test kernel image (config-<version>), as a dict, or None."""
    d, fn = os.path.split(kernel_path)
    ver = fn.split("-", 1)[1] if "-" in fn else ""
    path = os.path.join(d, f"config-{ver}")
    if not ver or not os.path.isfile(path):
        return None
    cfg = {}
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("CONFIG_") and "=" in line:
                k, v = line.strip().split("=", 1)
                cfg[k[len("CONFIG_"):]] = v
    return cfg


def needs_initramfs(arch, kernel_path):
    """(True, why) when the kernel cannot see QEMU's virtio-9p device on ARCH's machine."""
    cfg = kernel_config(kernel_path)
    if cfg is None:
        return False, ""
    if cfg.get("NET_9P_VIRTIO") != "y" or cfg.get("9P_FS") != "y":
        return True, "no 9p over virtio in its config"
    if arch == "arm64" and cfg.get("VIRTIO_MMIO") != "y" and not (
            cfg.get("VIRTIO_PCI") == "y" and cfg.get("PCI_HOST_GENERIC") == "y"):
        return True, "neither CONFIG_VIRTIO_MMIO nor a PCI host driver (CONFIG_PCI_HOST_GENERIC): no virtio device"
    return False, ""


class Newc:
    """A newc ("070701") cpio writer, as the kernel's initramfs unpacker reads it."""

    def __init__(self, fp):
        self.fp = fp
        self.ino = 1

    def _entry(self, name, mode, data=b"", mtime=0, rdev=0, uid=0, gid=0):
        name_b = name.encode() + b"\0"
        fields = [self.ino, mode, uid, gid, 1, mtime, len(data), 0, 0, os.major(rdev), os.minor(rdev),
                  len(name_b), 0]
        self.ino += 1
        hdr = b"070701" + b"".join(b"%08x" % f for f in fields)
        self.fp.write(hdr + name_b + b"\0" * (-(len(hdr) + len(name_b)) % 4))
        self.fp.write(data + b"\0" * (-len(data) % 4))

    def dir(self, name, mode=0o755, mtime=0):
        self._entry(name, stat.S_IFDIR | mode, mtime=mtime)

    def file(self, name, data, mode=0o644, mtime=0):
        self._entry(name, stat.S_IFREG | mode, data, mtime=mtime)

    def add_path(self, name, path, mtime=None):
        """PATH (not followed if a symlink) as NAME."""
        st = os.lstat(path)
        mt = int(st.st_mtime) if mtime is None else mtime
        perm = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            self._entry(name, stat.S_IFLNK | 0o777, os.readlink(path).encode(), mt)
        elif stat.S_ISDIR(st.st_mode):
            self._entry(name, stat.S_IFDIR | perm, mtime=mt, uid=st.st_uid, gid=st.st_gid)
        elif stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                self._entry(name, stat.S_IFREG | perm, f.read(), mt, uid=st.st_uid, gid=st.st_gid)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
            self._entry(name, stat.S_IFMT(st.st_mode) | perm, mtime=mt, rdev=st.st_rdev)

    def add_tree(self, prefix, top, skip=(), mtime=None):
        """Everything under TOP as PREFIX/..., directories before their contents."""
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if d not in skip)
            rel = os.path.relpath(dirpath, top)
            base = prefix if rel == "." else f"{prefix}/{rel}" if prefix else rel
            if base:
                self.add_path(base, dirpath, mtime)
            # os.walk lists symlinks to directories (merged /usr: /bin -> usr/bin) as directories
            # and does not descend into them: they are entries of their own
            links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
            dirnames[:] = [d for d in dirnames if d not in links]
            for fn in sorted(filenames + links):
                if fn in skip:
                    continue
                self.add_path(f"{base}/{fn}" if base else fn, os.path.join(dirpath, fn), mtime)

    def close(self):
        self._entry("TRAILER!!!", 0)


def base_archive(root):
    """The cached cpio of guest root ROOT (rebuilt when the init script in it is newer)."""
    out = root.rstrip("/") + f".v{ARCHIVE_VERSION}.cpio"
    init = os.path.join(root, "usr/local/sbin/vmabpf-init")
    if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(init):
        return out
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        w = Newc(f)
        w.add_tree("", root)
        w.close()
    os.replace(tmp, out)
    return out


def run_archive(path, repo, run_dir):
    """The per-run archive: REPO at its own path (its parents too), RUN_DIR as /vmrun.  Every mtime
    is 0, so that what the command writes is told apart by its time (find -newer)."""
    with open(path, "wb") as f:
        w = Newc(f)
        parts = repo.strip("/").split("/")
        for i in range(1, len(parts)):
            w.dir("/".join(parts[:i]))
        w.add_tree(repo.strip("/"), repo, skip=_SKIP, mtime=0)
        w.add_tree("vmrun", run_dir, mtime=0)
        w.close()


def extract_files(b64_lines, repo):
    """Write back the files the guest sent (base64 of a tar of absolute paths): regular files inside
    REPO only, never through a symlink.  Returns the paths written."""
    import base64
    data = base64.b64decode("".join(b64_lines))
    if len(data) > MAX_FILES_BYTES:
        raise ValueError(f"the guest sent {len(data)} bytes of files (limit {MAX_FILES_BYTES})")
    written = []
    repo = os.path.realpath(repo)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            if not m.isfile():
                continue
            dest = os.path.normpath("/" + m.name.lstrip("/"))
            if os.path.commonpath([dest, repo]) != repo or ".." in m.name.split("/"):
                continue
            parent = os.path.dirname(dest)
            if os.path.realpath(parent) != parent or os.path.islink(dest):
                continue
            os.makedirs(parent, exist_ok=True)
            src = tar.extractfile(m)
            tmp = dest + ".vmabpf-tmp"
            with open(tmp, "wb") as f:
                f.write(src.read())
            os.chmod(tmp, m.mode & 0o755)
            os.replace(tmp, dest)
            written.append(dest)
    return written

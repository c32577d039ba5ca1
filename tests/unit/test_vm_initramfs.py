"""The guest runner's initramfs path (tests/vm/initramfs.py): which kernels need it, the cpio it
writes, and what it accepts back from a guest."""

import base64
import io
import os
import stat
import sys
import tarfile

import pytest

from conftest import DATA, REPO

sys.path.insert(0, os.path.join(REPO, "tests", "vm"))
import initramfs  # noqa: E402


def read_newc(data):
    """[(name, mode, bytes)] of a newc archive, up to the trailer."""
    out, pos = [], 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        f = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = f[1], f[6], f[11]
        name = data[pos + 110: pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        body = data[pos: pos + size]
        pos += size
        pos += -pos % 4
        if name == "TRAILER!!!":
            return out
        out.append((name, mode, body))


def saved_image(tmp_path, arch, release):
    img = tmp_path / f"Image-{release}"
    img.write_bytes(b"")
    (tmp_path / f"config-{release}").write_bytes(open(f"{DATA}/kernels/{arch}/config-{release}", "rb").read())
    return str(img)


def test_which_kernels_need_it(tmp_path):
    need, why = initramfs.needs_initramfs("arm64", saved_image(tmp_path, "arm64", "6.6.87"))
    assert need and "CONFIG_VIRTIO_MMIO" in why
    assert initramfs.needs_initramfs("arm64", saved_image(tmp_path, "arm64", "6.12.117")) == (False, "")
    assert initramfs.needs_initramfs("x86_64", saved_image(tmp_path, "x86_64", "6.6.87")) == (False, "")
    assert initramfs.needs_initramfs("arm64", str(tmp_path / "Image-9.9")) == (False, "")  # no config: 9p


def test_tree_archive_keeps_symlinked_dirs_and_parents(tmp_path):
    root = tmp_path / "root"
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "sh").write_text("#!x\n")
    os.chmod(root / "usr" / "bin" / "sh", 0o755)
    os.symlink("usr/bin", root / "bin")  # merged /usr: a symlink to a directory
    buf = io.BytesIO()
    w = initramfs.Newc(buf)
    w.add_tree("", str(root))
    w.close()
    entries = {n: (m, b) for n, m, b in read_newc(buf.getvalue())}
    assert stat.S_ISLNK(entries["bin"][0]) and entries["bin"][1] == b"usr/bin"
    assert stat.S_ISREG(entries["usr/bin/sh"][0]) and stat.S_IMODE(entries["usr/bin/sh"][0]) == 0o755
    names = list(entries)
    assert names.index("usr") < names.index("usr/bin") < names.index("usr/bin/sh")


def test_run_archive_puts_the_project_at_its_path_with_old_mtimes(tmp_path):
    repo = tmp_path / "w" / "proj"
    (repo / ".git").mkdir(parents=True)
    (repo / "a.py").write_text("x = 1\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "cmd.sh").write_text("true\n")
    out = tmp_path / "run.cpio"
    initramfs.run_archive(str(out), str(repo), str(run))
    data = out.read_bytes()
    names = [n for n, _, _ in read_newc(data)]
    rel = str(repo).strip("/")
    assert f"{rel}/a.py" in names and "vmrun/cmd.sh" in names
    assert not any(n.startswith(f"{rel}/.git") for n in names)
    parts = rel.split("/")
    assert all("/".join(parts[:i]) in names for i in range(1, len(parts)))  # every parent directory
    pos, mtimes = 0, []
    while data[pos:pos + 6] == b"070701":
        f = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mtimes.append(f[5])
        pos += 110 + f[11]
        pos += -pos % 4
        pos += f[6] + (-f[6] % 4)
    assert set(mtimes) == {0}


def tar_b64(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, data
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    b = base64.b64encode(buf.getvalue()).decode()
    return [b[i:i + 76] for i in range(0, len(b), 76)]


def test_files_back_from_the_guest_stay_inside_the_project(tmp_path):
    repo = tmp_path / "proj"
    (repo / ".ci").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), repo / "escape")
    r = str(repo).lstrip("/")
    lines = tar_b64([(f"{r}/.ci/results.xml", b"<xml/>", "file"),
                     (f"{r}/../outside/x", b"no", "file"),
                     (str(tmp_path / 'elsewhere').lstrip("/"), b"no", "file"),
                     (f"{r}/escape/y", b"no", "file"),
                     (f"{r}/link", "/etc/passwd", "link")])
    written = initramfs.extract_files(lines, str(repo))
    assert written == [str(repo / ".ci" / "results.xml")]
    assert (repo / ".ci" / "results.xml").read_bytes() == b"<xml/>"
    assert os.listdir(outside) == [] and not (tmp_path / "elsewhere").exists() and not (repo / "link").exists()


def test_garbled_transfer_raises():
    with pytest.raises(Exception):
        initramfs.extract_files(["not base64 at all!"], "/nonexistent")

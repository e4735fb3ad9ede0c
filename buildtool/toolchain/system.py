"""The `system` provider: a CUDA toolkit already installed on this machine.

Search order (data: buildtool/data/toolchain.yaml `system`): $CUDA_HOME, $CUDA_PATH, the versioned
$CUDA_PATH_VX_Y, the toolkit around `nvcc` on PATH, then the default directories
(/usr/local/cuda-X.Y, /usr/local/cuda, ... ; C:/Program Files/NVIDIA GPU Computing Toolkit/CUDA/vX.Y).
A candidate is accepted when its `bin/nvcc --version` reports exactly the cell's major.minor.

Why exact major.minor, not "same major, >= minor": torch only warns on a minor mismatch, but the wheel is
labelled cuXY, and objects compiled against newer headers can reference runtime entry points that the
cuXY runtime a user has does not export; a 13.2 toolkit building a cu130 wheel would be mislabelled.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

from buildtool.toolchain.models import ProviderFacts, os_of
from buildtool.versions import split_cuda

_NVCC_RELEASE = re.compile(r"release (\d+)\.(\d+), V(\d+\.\d+\.\d+)")


def parse_nvcc_version(text: str) -> str | None:
    """Full toolkit version from `nvcc --version` output ("13.0.88"), None if not recognised."""
    m = _NVCC_RELEASE.search(text)
    return m.group(3) if m else None


def nvcc_name(platform: str) -> str:
    return "nvcc.exe" if os_of(platform) == "windows" else "nvcc"


def nvcc_version(nvcc: Path, env: Mapping[str, str] | None = None) -> str:
    """Run `nvcc --version`; raises OSError/ValueError with a reason a person can act on."""
    try:
        proc = subprocess.run(
            [str(nvcc), "--version"], capture_output=True, text=True, timeout=60, env=dict(env) if env else None
        )
    except subprocess.TimeoutExpired:
        raise OSError(f"{nvcc} --version did not answer in 60 s") from None
    version = parse_nvcc_version(proc.stdout)
    if proc.returncode != 0 or version is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ValueError(f"{nvcc} --version failed (exit {proc.returncode}): {tail[0]}")
    return version


def is_toolkit_root(root: Path, platform: str) -> bool:
    """A CUDA_HOME has bin/nvcc and the runtime headers (a bare nvcc wrapper script does not)."""
    return (root / "bin" / nvcc_name(platform)).is_file() and (root / "include" / "cuda_runtime.h").is_file()


def candidate_roots(cuda: str, platform: str, env: Mapping[str, str], facts: ProviderFacts) -> Iterator[tuple[str, Path]]:
    """(where it came from, directory) in search order; duplicates are the caller's business."""
    major, minor = split_cuda(cuda)
    sysf = facts.system
    for var in sysf.env_vars:
        if env.get(var):
            yield f"${var}", Path(env[var])
    for pattern in sysf.versioned_env_vars:
        var = pattern.format(major=major, minor=minor)
        if env.get(var):
            yield f"${var}", Path(env[var])
    nvcc = shutil.which(nvcc_name(platform), path=env.get("PATH", ""))
    if nvcc:
        # nvcc may be a symlink into the toolkit (resolve it) or a wrapper script (then bin/.. is no toolkit).
        yield f"nvcc on PATH ({nvcc})", Path(nvcc).resolve().parent.parent
    for pattern in sysf.default_dirs.get(os_of(platform), ()):
        yield "default location", Path(pattern.format(major=major, minor=minor))


def find_system_toolkit(
    cuda: str, platform: str, env: Mapping[str, str], facts: ProviderFacts
) -> tuple[Path | None, str, list[str]]:
    """(CUDA_HOME or None, full version or "", what was checked) for the first candidate of ``cuda``'s
    major.minor."""
    want = split_cuda(cuda)
    seen: set[Path] = set()
    notes: list[str] = []
    for origin, root in candidate_roots(cuda, platform, env, facts):
        try:
            key = root.resolve()
        except OSError:
            key = root
        if key in seen:
            continue
        seen.add(key)
        if not root.exists():
            notes.append(f"{origin}: {root} does not exist")
            continue
        if not is_toolkit_root(root, platform):
            notes.append(f"{origin}: {root} is not a CUDA toolkit (no bin/{nvcc_name(platform)} + include/cuda_runtime.h)")
            continue
        nvcc = root / "bin" / nvcc_name(platform)
        try:
            version = nvcc_version(nvcc)
        except (OSError, ValueError) as exc:
            notes.append(f"{origin}: {exc}")
            continue
        if split_cuda(version) != want:
            notes.append(f"{origin}: {root} is CUDA {version}, not {cuda}")
            continue
        notes.append(f"{origin}: {root} is CUDA {version}")
        return root, version, notes
    if not notes:
        notes.append("no CUDA_HOME/CUDA_PATH, no nvcc on PATH, no toolkit in the default locations")
    return None, "", notes


def install_hint(cuda: str, platform: str, facts: ProviderFacts) -> str:
    major, minor = split_cuda(cuda)
    template = facts.system.install_hint.get(os_of(platform), facts.system.install_hint["linux"])
    return " ".join(template.format(major=major, minor=minor).split())

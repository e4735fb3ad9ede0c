"""A throwaway project around the tiny CUDA fixture (tests/fixtures/tiny): recipe, matrix, kernel spec and
an sdist in a local source mirror, so `buildtool build` runs its real code path on a 30-second compile."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
import tarfile
from functools import cache
from pathlib import Path

from torchenv import torch_env

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "tiny"
TORCH_ENV = torch_env()
TORCH_PYTHON = TORCH_ENV / "bin" / "python"
CELL_ID = "linux-x86_64-cp311-cu130-torch2.14-tiny-0.1"
WHEEL = "tiny-0.1+cu130torch2.14cxx11abiTRUE-cp311-cp311-linux_x86_64.whl"
STABLE_CELL_ID = "linux-x86_64-abi3-cu130-torch2.14-tiny-0.1"
STABLE_WHEEL = "tiny-0.1+cu13stable-cp310-abi3-linux_x86_64.whl"

INIT_PY = b"import torch  # noqa: F401  (loads libc10/libtorch for the extension)\nfrom tiny_cuda import scale_add\n"


@cache
def torch_python() -> Path:
    """An interpreter with torch 2.14.1 (CUDA 13.0) for the tiny cell: $BUILDTOOL_TEST_TORCH_ENV (set by
    `nox -s tests`) when it exists, else buildtool's own cached build env for the cell (created once under
    ~/.cache/buildtool/buildenvs from the configured indexes: what a fresh CI machine does)."""
    if TORCH_PYTHON.exists():
        return TORCH_PYTHON
    from buildtool.build.buildenv import create_build_env
    from buildtool.host import default_cache_dir
    from buildtool.spec.matrix import Cell

    cell = Cell(platform="linux-x86_64", python="3.11", cuda="13.0", torch="2.14.1", package="tiny", version="0.1",
                cxx11_abi=True, cxx_std="20", archs=("9.0",), ptx=False, triton=None)
    cache = Path(os.environ.get("BUILDTOOL_TEST_ENV_CACHE") or default_cache_dir())
    return create_build_env(cell, cache / "buildenvs").python


@cache
def torch_site_packages() -> Path:
    import subprocess

    code = "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))"
    out = subprocess.run([str(torch_python()), "-c", code], capture_output=True, text=True, check=True).stdout
    return Path(out.strip().splitlines()[-1])


def available() -> str | None:
    """Why the tiny build cannot run here, or None when it can (a torch env is found or created lazily)."""
    if not FIXTURE.is_dir():
        return "tests/fixtures/tiny is missing"
    if shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").exists():
        return "no nvcc"
    if sys.platform != "linux":
        return "Linux only"
    if sys.version_info[:2] != (3, 11) and not TORCH_PYTHON.exists():
        return "the tiny cell is cp311: needs Python 3.11 for its build env"
    return None


def make_project(root: Path) -> Path:
    """Write the project into ``root``; returns the source mirror directory."""
    (root / "recipes").mkdir(parents=True, exist_ok=True)
    (root / "kernels").mkdir(exist_ok=True)
    mirror = root / "mirror"
    mirror.mkdir(exist_ok=True)
    for spec in (FIXTURE / "kernels").glob("*.yaml"):
        shutil.copyfile(spec, root / "kernels" / spec.name)
    shutil.copytree(FIXTURE / "shims", root / "kernels" / "shims", dirs_exist_ok=True)
    files = {f"tiny-0.1/{p.relative_to(FIXTURE).as_posix()}": p.read_bytes() for p in sorted(FIXTURE.rglob("*"))
             if p.is_file() and p.relative_to(FIXTURE).parts[0] not in ("kernels", "shims")}
    files["tiny-0.1/tiny/__init__.py"] = INIT_PY
    files["tiny-0.1/tiny/tests/test_tiny.py"] = b"def test_nothing():\n    pass\n"
    files["tiny-0.1/PKG-INFO"] = b"Metadata-Version: 2.1\nName: tiny\nVersion: 0.1\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1700000000, 0o644
            tar.addfile(info, io.BytesIO(data))
    sdist = mirror / "tiny-0.1.tar.gz"
    sdist.write_bytes(buf.getvalue())
    sha = hashlib.sha256(sdist.read_bytes()).hexdigest()
    (root / "recipes" / "tiny.yaml").write_text(f"""name: tiny
dist: tiny
summary: the tests' tiny CUDA extension
homepage: https://example.invalid/tiny
license: MIT
versions:
  - version: "0.1"
    source: {{kind: pypi-sdist, url: "https://example.invalid/tiny-0.1.tar.gz", sha256: {sha}}}
    kernels: [tiny_cuda]
    python_packages: [tiny]
    requires: [packaging]
    stable_abi: {{torch_floor: "2.10", decided_by: "torch::stable::contiguous (2.10)", kernels: [tiny_stable]}}
""", encoding="utf-8")
    (root / "matrix.yaml").write_text("""version: 1
axes: {platform: [linux-x86_64], python: ["3.11"], cuda: ["13.0"], torch: ["2.14.1"]}
packages: [tiny==0.1]
include:
  - {platform: linux-x86_64, python: "3.11", cuda: "13.0", torch: "2.14.1", packages: [tiny==0.1], abi: stable,
     tags: [stable]}
arch_policy:
  "13.0": {archs: ["9.0"], ptx: false}
default_profile: local
profiles:
  local: {description: the tiny cell, select: {package: [tiny], abi: [full]}}
  stable: {description: the tiny stable-ABI cell, select: {abi: [stable]}}
""", encoding="utf-8")
    return mirror


def build_command(mirror: Path, dist: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "buildtool", "build", "--build-python", str(torch_python()), "--toolchain", "system",
            "--source-mirror", str(mirror), "--dist", str(dist), *extra]


def build_env(project: Path, cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["BUILDTOOL_ROOT"] = str(project)
    env["BUILDTOOL_CACHE_DIR"] = str(cache)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/cuda/bin", env.get("PATH", "")])
    env.pop("SOURCE_DATE_EPOCH", None)
    return env


def torch_venv(path: Path) -> Path:
    """A fresh venv that sees the torch env's packages (a .pth), so pip installs next to torch 2.14.1."""
    import subprocess

    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    site = next((path / "lib").glob("python3.*/site-packages"))
    (site / "torch-env.pth").write_text(str(torch_site_packages()) + "\n", encoding="utf-8")
    return path / "bin" / "python"

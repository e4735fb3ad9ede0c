"""PEP 517 backend for prepared source trees (`buildtool prepare` writes build-backend = "buildtool.backend").

Self-contained: everything comes from the tree itself, its pyproject.toml `[tool.buildtool]` table
(buildtool.source.tree_config), the recipe and kernel specs prepare copied into `.buildtool/` and its provenance.json;
no checkout of this project has to be around it. Frontends::

    PIP_FIND_LINKS=TREE/.buildtool/wheels python -m build --wheel TREE    # isolated: torch + ninja installed
    PIP_FIND_LINKS=... pip wheel TREE                                     # isolated too
    UV_FIND_LINKS=... uv build --wheel TREE
    pip wheel --no-build-isolation TREE                                   # this env's torch
    cibuildwheel TREE                                                     # CIBW_BEFORE_BUILD installs torch

The builder itself (`mamba-wheel-builder==<version>`, build-system.requires) is not on PyPI: the caller
points the frontend at a wheel of it (prepare --builder-wheel copies one into `.buildtool/wheels/`).
`get_requires_for_build_wheel` adds the tree's torch (`[tool.buildtool] torch`, or `-C torch=X.Y.Z`) and
ninja, so an isolated env gets exactly the torch the wheel is labelled for.

The wheel is built for the running interpreter: its Python, its torch (version, CUDA, C++11 ABI) and this
machine's platform make the cell; the archs come from config settings (`-C archs=9.0;8.0`), else
$TORCH_CUDA_ARCH_LIST, else the tree's arch policy for that CUDA. The build itself is
buildtool.build.cell.build_tree, the same code `buildtool build` runs, minus the repair: a PEP 517 backend writes
the plain `linux_x86_64` / `win_amd64` wheel and `buildtool repair` (cibuildwheel's repair step) tags it.

Config settings: archs, torch, toolchain (auto|system|pypi|conda), jobs. Environment: TORCH_CUDA_ARCH_LIST,
BUILDTOOL_CACHE_DIR (objects and toolchains), BUILDTOOL_LOG_DIR (the log; default TREE/build/buildtool/).
"""

from __future__ import annotations

import functools
import gzip
import io
import os
import re
import shutil
import sys
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from buildtool.errors import BuildtoolError, UserError
from buildtool.source.prepare import load_prepared
from buildtool.source.tree_config import TreeConfig, read_tree_config
from buildtool.spec.compat import load_compat
from buildtool.spec.matrix import Cell
from buildtool.spec.matrix.cell import new_cell
from buildtool.spec.recipe import Recipe, load_recipe
from buildtool.wheel.write import source_date_epoch

__all__ = [
    "build_sdist",
    "build_wheel",
    "cell_for_current_env",
    "get_requires_for_build_sdist",
    "get_requires_for_build_wheel",
]

ConfigSettings = Mapping[str, Any] | None
T = TypeVar("T")
WORK_DIR = Path("build") / "buildtool"
_ARCH_RE = re.compile(r"^\d+\.\d+a?$")


def _reported(hook: Callable[..., T]) -> Callable[..., T]:
    """A hook that fails on the user's input prints one clear message and exits 1, instead of the frontend
    showing a traceback of the backend."""
    @functools.wraps(hook)
    def run(*args: Any, **kwargs: Any) -> T:
        try:
            return hook(*args, **kwargs)
        except BuildtoolError as exc:
            sys.stderr.write(f"buildtool: error: {exc}\n")
            raise SystemExit(exc.exit_code) from None
    return run


@_reported
def get_requires_for_build_wheel(config_settings: ConfigSettings = None) -> list[str]:
    """The tree's torch (so an isolated env builds against the torch the wheel is labelled for) and ninja."""
    return read_tree_config(Path.cwd()).build_requires(_setting(config_settings, "torch"))


def get_requires_for_build_sdist(config_settings: ConfigSettings = None) -> list[str]:
    return []


def _setting(config_settings: ConfigSettings, key: str) -> str | None:
    if not config_settings:
        return None
    value = config_settings.get(key)
    if isinstance(value, list):
        value = value[-1] if value else None
    return str(value) if value is not None else None


def _recipe(root: Path, config: TreeConfig) -> Recipe:
    """The recipe copied into the tree by prepare (the path [tool.buildtool] recipe names)."""
    path = root / config.recipe
    if not path.is_file():
        raise UserError(f"{path} is missing: [tool.buildtool] recipe names a file the tree does not have",
                        hint="prepare the tree again with `buildtool prepare`")
    return load_recipe_file(path)


def load_recipe_file(path: Path) -> Recipe:
    # load_recipe insists that the file is named after the recipe; a copy in the tree may not be.
    from buildtool.spec import yamlsrc

    if path.stem != "recipe":
        return load_recipe(path)
    recipe: Recipe = yamlsrc.validate(Recipe, yamlsrc.load(path))
    return recipe


def parse_arch_list(text: str, where: str) -> tuple[tuple[str, ...], bool]:
    """'8.0;9.0+PTX' -> (("8.0", "9.0"), True)."""
    items = [a.strip() for a in re.split(r"[;, ]+", text) if a.strip()]
    ptx = any(a.upper().endswith("+PTX") for a in items)
    archs = tuple(a.split("+")[0] for a in items)
    for a in archs:
        if not _ARCH_RE.match(a):
            raise UserError(f'arch "{a}" must look like 8.0, 9.0 or 9.0a (from {where})')
    return archs, ptx


def _archs(cuda: str, config_settings: ConfigSettings,
           arch_policy: Mapping[str, str] | None = None) -> tuple[tuple[str, ...], bool]:
    """(archs, ptx) from -C archs=..., $TORCH_CUDA_ARCH_LIST, or the tree's arch policy for ``cuda``."""
    setting = _setting(config_settings, "archs")
    if setting:
        return parse_arch_list(setting, "archs")
    env = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if env:
        return parse_arch_list(env, "TORCH_CUDA_ARCH_LIST")
    policy = (arch_policy or {}).get(cuda)
    if policy is None:
        known = ", ".join(arch_policy or {}) or "none"
        raise UserError(f"no archs given and the tree's [tool.buildtool.arch-policy] has no entry for CUDA {cuda} "
                        f"(it has: {known})",
                        hint="pass -C archs=9.0 (pip: --config-settings archs=9.0) or set TORCH_CUDA_ARCH_LIST")
    return parse_arch_list(policy, f"[tool.buildtool.arch-policy] {cuda}")


def cell_for_current_env(package: str, version: str, env: Any, config_settings: ConfigSettings = None,
                         arch_policy: Mapping[str, str] | None = None, *, abi: str = "full",
                         torch_floor: str | None = None) -> Cell:
    """The cell this interpreter + torch + machine make, for ``package==version`` on the ``abi`` track (a
    tree prepared for the stable track builds a stable-ABI wheel: ``torch_floor`` from its provenance)."""
    from buildtool.host import host_platform

    platform = host_platform()
    if platform not in load_compat().platforms:
        raise UserError("this machine is not a platform the builder knows (linux-x86_64, linux-aarch64, windows-x86_64)")
    if not env.torch_version:
        raise UserError(f"no torch in the build environment {env.python}",
                        hint="prepare the tree with --torch (an isolated build then installs it), pass "
                             "-C torch=X.Y.Z, or build with --no-isolation in an env that has torch")
    if not env.torch_cuda:
        raise UserError(f"torch {env.torch_version} in {env.python} is a CPU build: CUDA kernels need a CUDA torch")
    torch_public = env.torch_version.split("+", 1)[0]
    compat = load_compat()
    info = compat.torch_info(torch_public)
    if info is None:
        raise UserError(f"torch {torch_public} is not in the compatibility table")
    archs, ptx = _archs(env.torch_cuda, config_settings, arch_policy)
    stable = abi == "stable"
    if stable and not torch_floor:
        raise UserError("the prepared tree is for the stable-ABI track but its provenance names no torch_floor",
                        hint="prepare the tree again with this buildtool")
    return new_cell(
        compat, platform=platform, python=env.python_minor, cuda=env.torch_cuda, torch=torch_public,
        package=package, version=version, archs=archs, ptx=ptx, abi="stable" if stable else "full",
        torch_floor=torch_floor if stable else None,
        cxx11_abi=bool(env.cxx11_abi) if not platform.startswith("windows") else False,
    )


def _check_env_against_tree(config: TreeConfig, cell: Cell, torch_setting: str | None) -> None:
    """The tree's platform (its patches) and pins must be what this build env is."""
    if cell.platform != config.platform:
        raise UserError(f"this tree was prepared for {config.platform} (its patches were chosen for it); this "
                        f"machine is {cell.platform}", hint=f"prepare it again with --platform {cell.platform}")
    pinned = torch_setting or config.torch
    if pinned and cell.torch != pinned.split("+", 1)[0]:
        raise UserError(f"the build env has torch {cell.torch}, the tree pins torch {pinned}",
                        hint="build isolated (the frontend installs the pinned torch) or install that torch")
    if config.cuda and cell.cuda != config.cuda:
        raise UserError(f"the build env's torch is built for CUDA {cell.cuda}, the tree pins CUDA {config.cuda}",
                        hint=f"install torch from the CUDA {config.cuda} index (PIP_EXTRA_INDEX_URL / "
                             "PIP_INDEX_URL for the isolated env)")


@_reported
def build_wheel(wheel_directory: str, config_settings: ConfigSettings = None,
                metadata_directory: str | None = None) -> str:
    from buildtool.build import buildenv
    from buildtool.build.cell import CellLog, build_tree
    from buildtool.compile.models import CompileSettings
    from buildtool.toolchain import resolve

    root = Path.cwd()
    config = read_tree_config(root)
    prov = load_prepared(root).provenance
    recipe = _recipe(root, config)
    try:
        env = buildenv.current_env()
    except BuildtoolError as exc:
        raise UserError(f"no usable torch in the build environment ({exc.message})",
                        hint="prepare the tree with --torch X.Y.Z (an isolated build then installs it), pass "
                             "-C torch=X.Y.Z, or build with --no-isolation in an env that has torch") from None
    cell = cell_for_current_env(config.package, config.version, env, config_settings, config.arch_policy,
                                abi=config.abi, torch_floor=prov.torch_floor)
    _check_env_against_tree(config, cell, _setting(config_settings, "torch"))
    work = root / WORK_DIR
    # $BUILDTOOL_LOG_DIR: where CI keeps logs (cibuildwheel builds a copy of the tree inside its container)
    log_dir = os.environ.get("BUILDTOOL_LOG_DIR")
    log = CellLog(Path(log_dir) / f"{cell.id}.log" if log_dir else work / "build.log")
    sys.stderr.write(f"buildtool: building {cell.id} (archs {cell.arch_list}); log {log.path}\n")
    toolchain = resolve(cell.cuda, cell.platform, _setting(config_settings, "toolchain") or "auto")  # type: ignore[arg-type]
    jobs = _setting(config_settings, "jobs")
    built = build_tree(tree=root, tree_provenance=prov, recipe=recipe, cell=cell, toolchain=toolchain, env=env,
                       objects=work / "obj", staging=work / "wheel", log=log,
                       settings=CompileSettings(jobs=(int(jobs) or None) if jobs else None), repair=False)
    for note in built.notes:
        sys.stderr.write(f"buildtool: {note}\n")
    out = Path(wheel_directory)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(built.wheel, out / built.wheel.name)
    return built.wheel.name


# ---------------------------------------------------------------- sdist
_SDIST_SKIP = {"build", "dist", "__pycache__", ".git"}


@_reported
def build_sdist(sdist_directory: str, config_settings: ConfigSettings = None) -> str:
    """A reproducible .tar.gz of the prepared tree (sorted, fixed mtimes and owners) plus PKG-INFO."""
    root = Path.cwd()
    config = read_tree_config(root)
    version = config.version
    recipe = _recipe(root, config)
    base = f"{re.sub(r'[-_.]+', '_', recipe.dist).lower()}-{version}"
    epoch = source_date_epoch()
    pkg_info = (f"Metadata-Version: 2.1\nName: {recipe.dist}\nVersion: {version}\nSummary: {recipe.summary}\n"
                f"Home-page: {recipe.homepage}\nLicense: {recipe.license}\n").encode()
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and not (set(p.relative_to(root).parts) & _SDIST_SKIP))
    out = Path(sdist_directory)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{base}.tar.gz"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = [(f"{base}/PKG-INFO", pkg_info)] + [
            (f"{base}/{p.relative_to(root).as_posix()}", p.read_bytes()) for p in files
            if p.relative_to(root).as_posix() != "PKG-INFO"]
        for name, data in sorted(entries):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), epoch, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    with open(target, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=epoch, filename="") as gz:
        gz.write(raw.getvalue())
    return target.name

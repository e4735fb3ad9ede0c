"""PEP 517 backend for prepared source trees (`buildtool prepare` writes build-backend = "buildtool.backend").

    pip wheel --no-build-isolation PREPARED_TREE     # builds against this interpreter's torch

The wheel is built for the running interpreter: its Python, its torch (version, CUDA, C++11 ABI) and this
machine's platform make the cell; the archs come from config settings (`-C archs=9.0;8.0`), else
$TORCH_CUDA_ARCH_LIST, else the matrix's arch policy for that CUDA. The build itself is
buildtool.build.cell.build_tree, the same code `buildtool build` runs. Build isolation makes no sense here
(an isolated env would not have the torch the wheel must match), so no build requirements are declared.

Config settings: archs, toolchain (auto|system|pypi|conda), jobs.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import sys
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from buildtool.errors import UserError
from buildtool.spec.compat import load_compat
from buildtool.spec.matrix import Cell
from buildtool.spec.recipe import Recipe, load_recipe, load_recipes
from buildtool.wheel.write import source_date_epoch

__all__ = [
    "build_sdist",
    "build_wheel",
    "cell_for_current_env",
    "get_requires_for_build_sdist",
    "get_requires_for_build_wheel",
]

ConfigSettings = Mapping[str, Any] | None
TREE_PROVENANCE = "provenance.json"
WORK_DIR = Path("build") / "buildtool"


def get_requires_for_build_wheel(config_settings: ConfigSettings = None) -> list[str]:
    # torch must be the one already installed (that is what the wheel is built against): nothing to add.
    return []


def get_requires_for_build_sdist(config_settings: ConfigSettings = None) -> list[str]:
    return []


def _setting(config_settings: ConfigSettings, key: str) -> str | None:
    if not config_settings:
        return None
    value = config_settings.get(key)
    if isinstance(value, list):
        value = value[-1] if value else None
    return str(value) if value is not None else None


def _tree_provenance(root: Path) -> dict[str, Any]:
    path = root / TREE_PROVENANCE
    if not path.is_file():
        raise UserError(f"{root} is not a prepared tree: no {TREE_PROVENANCE}",
                        hint="create one with `buildtool prepare PACKAGE==VERSION`")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _field(prov: Mapping[str, Any], *names: str) -> str:
    for name in names:
        value: Any = prov
        for part in name.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if value:
            return str(value)
    raise UserError(f"{TREE_PROVENANCE} has none of {', '.join(names)}")


def _recipe(root: Path, package: str) -> Recipe:
    """The recipe copied into the tree by prepare, else the project's (a checkout next to buildtool)."""
    for candidate in (root / ".buildtool" / "recipe.yaml", root / ".buildtool" / f"{package}.yaml"):
        if candidate.is_file():
            return load_recipe_file(candidate)
    from buildtool.spec.project import find_project

    recipes = load_recipes(find_project().recipes_dir)
    if package not in recipes:
        raise UserError(f"no recipe for {package} in the prepared tree or the project")
    return recipes[package]


def load_recipe_file(path: Path) -> Recipe:
    # load_recipe insists that the file is named after the recipe; a copy in the tree may not be.
    from buildtool.spec import yamlsrc

    if path.stem != "recipe":
        return load_recipe(path)
    recipe: Recipe = yamlsrc.validate(Recipe, yamlsrc.load(path))
    return recipe


def _archs(cuda: str, config_settings: ConfigSettings) -> tuple[tuple[str, ...], bool]:
    """(archs, ptx) from -C archs=..., $TORCH_CUDA_ARCH_LIST, or the matrix's arch policy for ``cuda``."""
    text = _setting(config_settings, "archs") or os.environ.get("TORCH_CUDA_ARCH_LIST")
    if text:
        items = [a.strip() for a in re.split(r"[;, ]+", text) if a.strip()]
        ptx = any(a.upper().endswith("+PTX") for a in items)
        archs = tuple(a.split("+")[0] for a in items)
        for a in archs:
            if not re.match(r"^\d+\.\d+a?$", a):
                raise UserError(f'arch "{a}" must look like 8.0, 9.0 or 9.0a (from archs / TORCH_CUDA_ARCH_LIST)')
        return archs, ptx
    from buildtool.spec.matrix import load_matrix
    from buildtool.spec.project import find_project

    policy = load_matrix(find_project().root).spec.arch_policy.get(cuda)
    if policy is None:
        raise UserError(f"no archs given and no arch_policy for CUDA {cuda}",
                        hint="pass -C archs=9.0 (pip: --config-settings archs=9.0) or set TORCH_CUDA_ARCH_LIST")
    return tuple(policy.archs), policy.ptx


def cell_for_current_env(package: str, version: str, env: Any, config_settings: ConfigSettings = None, *,
                         abi: str = "full", torch_floor: str | None = None) -> Cell:
    """The cell this interpreter + torch + machine make, for ``package==version`` on the ``abi`` track (a
    tree prepared for the stable track builds a stable-ABI wheel: ``torch_floor`` from its provenance)."""
    from buildtool.build.cell import host_platform

    platform = host_platform()
    if platform is None:
        raise UserError("this machine is not a platform the builder knows (linux-x86_64, linux-aarch64, windows-x86_64)")
    if not env.torch_cuda:
        raise UserError(f"torch {env.torch_version} in {env.python} is a CPU build: CUDA kernels need a CUDA torch")
    torch_public = env.torch_version.split("+", 1)[0]
    compat = load_compat()
    info = compat.torch_info(torch_public)
    if info is None:
        raise UserError(f"torch {torch_public} is not in the compatibility table")
    archs, ptx = _archs(env.torch_cuda, config_settings)
    triton = compat.triton_requirement(torch_public, platform)
    stable = abi == "stable"
    if stable and not torch_floor:
        raise UserError("the prepared tree is for the stable-ABI track but its provenance names no torch_floor",
                        hint="prepare the tree again with this buildtool")
    return Cell(
        platform=platform, python=env.python_minor, cuda=env.torch_cuda, torch=torch_public, package=package,
        version=version, cxx11_abi=bool(env.cxx11_abi) if not platform.startswith("windows") else False,
        cxx_std=info.std_for(platform), archs=archs, ptx=ptx,
        triton=(triton[0] if stable else f"{triton[0]}{triton[1]}") if triton else None,
        abi="stable" if stable else "full", torch_floor=torch_floor if stable else None,
    )


def build_wheel(wheel_directory: str, config_settings: ConfigSettings = None,
                metadata_directory: str | None = None) -> str:
    from buildtool.build import buildenv
    from buildtool.build.cell import CellLog, build_tree
    from buildtool.compile.modules import CompileSettings
    from buildtool.toolchain import resolve

    root = Path.cwd()
    prov = _tree_provenance(root)
    package = _field(prov, "package", "recipe.name", "name")
    version = _field(prov, "version", "recipe.version")
    recipe = _recipe(root, package)
    env = buildenv.current_env()
    cell = cell_for_current_env(package, version, env, config_settings, abi=str(prov.get("abi") or "full"),
                                torch_floor=prov.get("torch_floor"))
    work = root / WORK_DIR
    log = CellLog(work / "build.log")
    sys.stderr.write(f"buildtool: building {cell.id} (archs {cell.arch_list}); log {log.path}\n")
    toolchain = resolve(cell.cuda, cell.platform, _setting(config_settings, "toolchain") or "auto")  # type: ignore[arg-type]
    jobs = _setting(config_settings, "jobs")
    built = build_tree(tree=root, tree_provenance=prov, recipe=recipe, cell=cell, toolchain=toolchain, env=env,
                       objects=work / "obj", staging=work / "wheel", log=log,
                       settings=CompileSettings(jobs=(int(jobs) or None) if jobs else None))
    for note in built.notes:
        sys.stderr.write(f"buildtool: {note}\n")
    out = Path(wheel_directory)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(built.wheel, out / built.wheel.name)
    return built.wheel.name


# ---------------------------------------------------------------- sdist
_SDIST_SKIP = {"build", "dist", "__pycache__", ".git"}


def build_sdist(sdist_directory: str, config_settings: ConfigSettings = None) -> str:
    """A reproducible .tar.gz of the prepared tree (sorted, fixed mtimes and owners) plus PKG-INFO."""
    root = Path.cwd()
    prov = _tree_provenance(root)
    package = _field(prov, "package", "recipe.name", "name")
    version = _field(prov, "version", "recipe.version")
    recipe = _recipe(root, package)
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

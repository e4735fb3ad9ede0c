"""Prepare: recipe version -> a self-contained, patched source tree that any PEP 517 frontend can build.

Python API (what the build stage calls)::

    from buildtool.source.prepare import prepare
    tree = prepare(project, "mamba-ssm", "2.3.2.post1", "windows-x86_64", Path("out"),
                   mirror=None, cache_dir=None)
    tree.root                 # Path of the prepared tree
    tree.provenance           # TreeProvenance (frozen pydantic model; .model_dump(mode="json") for JSON)
    tree.origin               # where the bytes came from this time (not part of the provenance)

Steps: look up the recipe version (unknown package/version/platform = UserError), check that every kernel
spec it names exists, fetch and verify the source (``buildtool.source.fetch``), extract the recipe's
subdirectory, check then apply the patches chosen for version + platform (``buildtool.source.patching``), and
write into ``out``:

- the package sources at the root (the recipe subdirectory's contents);
- ``pyproject.toml`` whose backend is ``buildtool.backend`` and whose ``[tool.buildtool]`` table
  (buildtool.source.tree_config) is everything the backend reads (upstream's pyproject, if any, is kept as
  ``.buildtool/upstream-pyproject.toml``); with ``builder_wheel`` the builder's wheel in ``.buildtool/wheels/``;
- ``provenance.json``: package, version, dist, platform, source (kind, url, commit or sha256, subdirectory,
  content_sha256), patches (name, sha256, files), buildtool_version, kernels, python_packages, requires;
- ``.buildtool/recipe.yaml`` and ``.buildtool/kernels/<name>.yaml`` (copies of the project's files).

The tree is assembled next to ``out`` and renamed into place at the end, so ``out`` is never half written.
``load_prepared(root)`` reads a prepared tree back.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from buildtool import __version__
from buildtool.errors import BuildtoolError, UserError, allowed_list, did_you_mean
from buildtool.model import Frozen
from buildtool.source.fetch import fetch, mirror_from_env
from buildtool.source.patching import AppliedPatch, apply_to_tree, load_patches, select
from buildtool.source.tree_config import TreeConfig, tree_config_toml
from buildtool.spec.abitrack import AbiTrack
from buildtool.spec.compat import PLATFORMS
from buildtool.spec.project import Project
from buildtool.spec.recipe import Recipe, RecipeVersion, load_recipes

PROVENANCE_FILE = "provenance.json"
META_DIR = ".buildtool"
SHIM_DIR = "shims"  # under META_DIR: the stable track's shim modules
BACKEND = "buildtool.backend"
BACKEND_DIST = "mamba-wheel-builder"
BUILDER_WHEELS = ".buildtool/wheels"  # where --builder-wheel puts the backend's own wheel


class TreeProvenance(Frozen):
    """What a prepared tree records in its provenance.json (the wheel's own provenance: buildtool.wheel.provenance)."""

    package: str
    version: str
    dist: str
    platform: str
    source: dict[str, Any]
    patches: tuple[AppliedPatch, ...]
    buildtool_version: str
    kernels: tuple[str, ...]
    python_packages: tuple[str, ...]
    requires: tuple[str, ...]
    abi: AbiTrack = "full"
    torch_floor: str | None = None  # stable track: the lowest torch the library targets
    shims: tuple[str, ...] = ()  # stable track: top-level shim modules copied from kernels/ (file names)


class PreparedTree(Frozen):
    root: Path
    provenance: TreeProvenance
    origin: str = ""  # where the source bytes came from this time (cache, mirror <path>, download, clone)


def parse_package_spec(text: str) -> tuple[str, str]:
    """``PKG==VER`` -> (PKG, VER)."""
    name, sep, version = text.partition("==")
    if not sep or not name.strip() or not version.strip():
        raise UserError(f'expected PACKAGE==VERSION, got "{text}" (e.g. causal-conv1d==1.7.0)')
    return name.strip(), version.strip()


def find_recipe(project: Project, package: str) -> Recipe:
    recipes = load_recipes(project.recipes_dir)
    if package in recipes:
        return recipes[package]
    for recipe in recipes.values():
        if canonicalize_name(recipe.name) == canonicalize_name(package):
            return recipe
    raise UserError(f'unknown package "{package}"{did_you_mean(package, recipes)}; known: {allowed_list(recipes)}')


def check_platform(platform: str) -> None:
    if platform not in PLATFORMS:
        raise UserError(f'unknown platform "{platform}"{did_you_mean(platform, PLATFORMS)}; '
                        f"known: {', '.join(PLATFORMS)}")


def kernel_spec_paths(project: Project, recipe: Recipe, rv: RecipeVersion, abi: AbiTrack = "full") -> list[Path]:
    paths = []
    for name in rv.kernels_for(abi):
        path = project.kernels_dir / f"{name}.yaml"
        if not path.is_file():
            raise UserError(f"kernel spec {name} (named by {recipe.name} {rv.version}) not found: {path}",
                            hint=f"add kernels/{name}.yaml or fix the recipe's kernels list")
        paths.append(path)
    return paths


def _track_note(abi: AbiTrack) -> str:
    return " (stable ABI)" if abi == "stable" else ""


def _shim_paths(project: Project, spec_paths: list[Path]) -> list[Path]:
    """The shim modules the kernel specs name (kernels/shims/*.py): our own Python, installed at the
    wheel's top level under upstream's old extension module name."""
    from buildtool.spec.kernelspec import load_kernel_spec

    out: list[Path] = []
    for spec_path in spec_paths:
        for rel in load_kernel_spec(spec_path).shims:
            path = project.kernels_dir / rel
            if not path.is_file():
                raise UserError(f"kernel spec {spec_path.stem} names the shim {rel}, not found: {path}")
            out.append(path)
    return out


def _check_kernel_sources(tree: Path, spec_paths: list[Path], what: str) -> None:
    """Every source and include dir a kernel spec names must exist in the prepared tree: a recipe that pairs
    a version with the wrong spec fails here, not an hour into a build."""
    from buildtool.spec.kernelspec import load_kernel_spec

    for path in spec_paths:
        spec = load_kernel_spec(path)
        missing = [s for s in (*spec.sources, *spec.include_dirs) if not (tree / s).exists()]
        if missing:
            raise UserError(f"kernel spec {path.stem} names {', '.join(missing)}, not in the source tree of {what}",
                            hint="the recipe pairs this version with the wrong kernel spec, or the spec's paths are wrong")


def arch_policy_table(project: Project) -> dict[str, str]:
    """The project's matrix.yaml arch policy as TORCH_CUDA_ARCH_LIST strings per CUDA ({} without a matrix)."""
    from buildtool.spec import yamlsrc
    from buildtool.spec.matrix.schema import MatrixFile

    path = project.root / "matrix.yaml"
    if not path.is_file():
        return {}
    spec: MatrixFile = yamlsrc.validate(MatrixFile, yamlsrc.load(path))
    return {cuda: ";".join(p.archs) + ("+PTX" if p.ptx and p.archs else "") for cuda, p in spec.arch_policy.items()}


def pyproject_text(recipe: Recipe, rv: RecipeVersion, platform: str, abi: AbiTrack = "full", *,
                   torch: str | None = None, cuda: str | None = None, arch_policy: dict[str, str] | None = None) -> str:
    """The generated pyproject.toml. Version and dependencies are dynamic: the backend adds the local
    label (+cuXYtorchA.Bcxx11abiX) and the torch/triton pins of the environment it builds in."""
    builder = f"{BACKEND_DIST}=={__version__}"
    config = TreeConfig(package=recipe.name, version=rv.version, platform=platform, kernels=rv.kernels_for(abi),
                        python_packages=rv.python_packages, abi=abi, builder=builder, torch=torch, cuda=cuda,
                        arch_policy=arch_policy or {})
    return "\n".join([
        "# Generated by `buildtool prepare`; the build backend compiles the kernels named in",
        "# .buildtool/kernels/ and never runs upstream's setup.py. The backend is not on PyPI: point the",
        f"# frontend at a wheel of it ({BUILDER_WHEELS}/ when prepared with --builder-wheel):",
        f"#   PIP_FIND_LINKS={BUILDER_WHEELS} python -m build --wheel        (isolated: installs torch, ninja)",
        "#   pip wheel --no-build-isolation .                              (this env's torch)",
        f"#   UV_FIND_LINKS={BUILDER_WHEELS} uv build --wheel",
        "[build-system]",
        f"requires = [{json.dumps(builder)}]",
        f"build-backend = {json.dumps(BACKEND)}",
        "",
        "[project]",
        f"name = {json.dumps(recipe.dist)}",
        f"description = {json.dumps(recipe.summary)}",
        f"license = {{ text = {json.dumps(recipe.license)} }}",
        f"urls = {{ Homepage = {json.dumps(recipe.homepage)} }}",
        'dynamic = ["version", "dependencies"]',
        "",
        tree_config_toml(config),
    ])


def _check_build_pins(torch: str | None, cuda: str | None) -> None:
    from buildtool.spec.compat import load_compat

    compat = load_compat()
    if torch is not None and compat.torch_info(torch) is None:
        raise UserError(f'--torch "{torch}" is not in the compatibility table{did_you_mean(torch, compat.torch)}; '
                        f"known: {allowed_list(compat.torch)}")
    if cuda is not None and cuda not in compat.cuda:
        raise UserError(f'--cuda "{cuda}" is not in the compatibility table{did_you_mean(cuda, compat.cuda)}; '
                        f"known: {allowed_list(compat.cuda)}")


def _check_builder_wheel(path: Path) -> None:
    expected = f"{BACKEND_DIST.replace('-', '_')}-{__version__}-"
    if not path.is_file() or not path.name.startswith(expected) or path.suffix != ".whl":
        raise UserError(f"--builder-wheel {path}: expected an existing {expected}*.whl (this builder's own version)",
                        hint="build it with `python -m pip wheel --no-deps -w builder-wheels .` in the checkout")


def prepare(project: Project, package: str, version: str, platform: str, out: Path, *,
            mirror: Path | str | None = None, cache_dir: Path | None = None, force: bool = False,
            abi: AbiTrack = "full", torch: str | None = None, cuda: str | None = None,
            builder_wheel: Path | None = None) -> PreparedTree:
    """Fetch, verify, extract and patch ``package`` ``version`` for ``platform`` into ``out``; with
    ``abi="stable"`` the stable track's patches, kernel specs and shim modules. ``torch`` / ``cuda`` pin
    what an isolated build installs; ``builder_wheel`` is copied into the tree so a frontend finds the
    backend (it is not on PyPI) through PIP_FIND_LINKS=<tree>/.buildtool/wheels."""
    recipe = find_recipe(project, package)
    rv = recipe.get(version)
    check_platform(platform)
    if builder_wheel is not None:
        _check_builder_wheel(builder_wheel)
    _check_build_pins(torch, cuda)
    spec_paths = kernel_spec_paths(project, recipe, rv, abi)
    shim_paths = _shim_paths(project, spec_paths)
    mirror_dir = mirror_from_env(mirror)
    patches = select(load_patches(project.patches_dir, recipe.name), rv.version, platform, abi)

    out = Path(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not force:
        raise UserError(f"output directory {out} exists and is not empty", hint="pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tree = staging / "tree"
        fetched = fetch(rv.source, tree, mirror=mirror_dir, cache_dir=cache_dir)
        applied = apply_to_tree(tree, patches, context=f"{recipe.name} {rv.version} {platform}{_track_note(abi)}")
        _check_kernel_sources(tree, spec_paths, f"{recipe.name} {rv.version}")
        meta = tree / META_DIR
        (meta / "kernels").mkdir(parents=True, exist_ok=True)
        upstream_pyproject = tree / "pyproject.toml"
        if upstream_pyproject.is_file():
            shutil.move(upstream_pyproject, meta / "upstream-pyproject.toml")
        upstream_pyproject.write_text(pyproject_text(recipe, rv, platform, abi, torch=torch, cuda=cuda,
                                                     arch_policy=arch_policy_table(project)), encoding="utf-8")
        if builder_wheel is not None:
            (tree / BUILDER_WHEELS).mkdir(parents=True)
            shutil.copyfile(builder_wheel, tree / BUILDER_WHEELS / builder_wheel.name)
        shutil.copyfile(project.recipes_dir / f"{recipe.name}.yaml", meta / "recipe.yaml")
        for path in spec_paths:
            shutil.copyfile(path, meta / "kernels" / path.name)
        if shim_paths:
            (meta / SHIM_DIR).mkdir(parents=True, exist_ok=True)
            for path in shim_paths:
                shutil.copyfile(path, meta / SHIM_DIR / path.name)
        provenance = TreeProvenance(
            package=recipe.name, version=rv.version, dist=recipe.dist, platform=platform,
            source=fetched.provenance(), patches=applied, buildtool_version=__version__,
            kernels=rv.kernels_for(abi), python_packages=rv.python_packages, requires=rv.requires, abi=abi,
            torch_floor=rv.stable_floor if abi == "stable" else None, shims=tuple(p.name for p in shim_paths),
        )
        (tree / PROVENANCE_FILE).write_text(json.dumps(provenance.model_dump(mode="json"), indent=2) + "\n",
                                            encoding="utf-8")
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        tree.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PreparedTree(root=out, provenance=provenance, origin=fetched.origin)


def load_prepared(root: Path) -> PreparedTree:
    path = root / PROVENANCE_FILE
    if not path.is_file():
        raise UserError(f"{root} is not a prepared tree: no {PROVENANCE_FILE}",
                        hint="create one with `buildtool prepare PACKAGE==VERSION --out DIR`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return PreparedTree(root=root, provenance=TreeProvenance.model_validate(data))
    except (ValueError, TypeError) as exc:
        raise UserError(f"{path} is not a valid provenance file: {str(exc).splitlines()[0]}") from None


# ---------------------------------------------------------------------------------------------- patches check


class PatchCheck(Frozen):
    """One patch against one recipe version (all platforms that select it)."""

    patch: str
    package: str
    version: str | None
    platforms: tuple[str, ...]
    status: str  # ok | fail | skipped | unclaimed
    detail: str = ""


class TreeCheck(Frozen):
    """One recipe version + platform after its patch set: does it apply, does lint-source pass?"""

    package: str
    version: str
    platform: str
    patches: tuple[str, ...]
    status: str  # ok | fail | skipped
    abi: AbiTrack = "full"
    lint_errors: int | None = None
    detail: str = ""


class PatchesReport(Frozen):
    patches: tuple[PatchCheck, ...]
    trees: tuple[TreeCheck, ...]

    @property
    def ok(self) -> bool:
        return all(p.status in ("ok", "skipped") for p in self.patches) and \
            all(t.status in ("ok", "skipped") and not t.lint_errors for t in self.trees)


def check_patches(project: Project, *, mirror: Path | str | None = None, cache_dir: Path | None = None,
                  package: str | None = None) -> PatchesReport:
    """Every patch against every recipe version it claims, and every version's full patch set per
    platform (applied, then lint-source for that platform)."""
    from buildtool.source.lint import scan
    from buildtool.source.patching import PatchConflict, check_tree

    mirror_dir = mirror_from_env(mirror)
    recipes = load_recipes(project.recipes_dir)
    if package is not None:
        recipes = {r.name: r for r in [find_recipe(project, package)]}
    patch_rows: list[PatchCheck] = []
    tree_rows: list[TreeCheck] = []
    for recipe in recipes.values():
        all_patches = load_patches(project.patches_dir, recipe.name)
        claimed: dict[str, int] = {p.name: 0 for p in all_patches}
        for rv in recipe.versions:
            tracks: list[AbiTrack] = ["full", "stable"] if rv.stable_floor else ["full"]
            per_platform = {(pl, abi): select(all_patches, rv.version, pl, abi) for pl in PLATFORMS for abi in tracks}
            relevant = sorted({p.name for ps in per_platform.values() for p in ps})
            for name in relevant:
                claimed[name] += 1
            with tempfile.TemporaryDirectory(prefix="buildtool-patches-") as tmp:
                src_dir = Path(tmp) / "src"
                try:
                    fetch(rv.source, src_dir, mirror=mirror_dir, cache_dir=cache_dir)
                except BuildtoolError as exc:
                    reason = str(exc).splitlines()[0]
                    for name in relevant:
                        patch_rows.append(PatchCheck(patch=name, package=recipe.name, version=rv.version,
                                                     platforms=_platforms_of(name, per_platform),
                                                     status="skipped", detail=reason))
                    for (pl, abi), chosen in per_platform.items():
                        tree_rows.append(TreeCheck(package=recipe.name, version=rv.version, platform=pl, abi=abi,
                                                   patches=tuple(p.name for p in chosen),
                                                   status="skipped", detail=reason))
                    continue
                failed: dict[str, str] = {}
                for (pl, abi), chosen in per_platform.items():
                    names = tuple(p.name for p in chosen)
                    work = Path(tmp) / f"tree-{pl}-{abi}"
                    shutil.copytree(src_dir, work, symlinks=True)
                    try:
                        apply_to_tree(work, chosen, context=f"{recipe.name} {rv.version} {pl}{_track_note(abi)}")
                    except PatchConflict as exc:
                        for f in exc.failures:
                            failed.setdefault(f.patch, f.one_line())
                        tree_rows.append(TreeCheck(package=recipe.name, version=rv.version, platform=pl, abi=abi,
                                                   patches=names, status="fail", detail=exc.message))
                        continue
                    report = scan(work, platform=pl)
                    tree_rows.append(TreeCheck(
                        package=recipe.name, version=rv.version, platform=pl, abi=abi, patches=names, status="ok",
                        lint_errors=len(report.errors),
                        detail="; ".join(sorted({f"{f.rule} {f.file}:{f.line}" for f in report.errors}))[:300]))
                for single in relevant:
                    # Each patch alone on pristine sources too, so a patch does not silently rely on another.
                    patch = next(p for p in all_patches if p.name == single)
                    if single not in failed:
                        try:
                            check_tree(src_dir, [patch])
                        except PatchConflict as exc:
                            failed[single] = exc.failures[0].one_line() + " (alone)"
                    patch_rows.append(PatchCheck(patch=single, package=recipe.name, version=rv.version,
                                                 platforms=_platforms_of(single, per_platform),
                                                 status="fail" if single in failed else "ok",
                                                 detail=failed.get(single, "")))
        for name, n in claimed.items():
            if n == 0:
                spec = next(p for p in all_patches if p.name == name).header.versions
                patch_rows.append(PatchCheck(patch=name, package=recipe.name, version=None, platforms=(),
                                             status="unclaimed",
                                             detail=f"versions {spec} match no version in recipes/{recipe.name}.yaml"))
    return PatchesReport(patches=tuple(patch_rows), trees=tuple(tree_rows))


def _platforms_of(name: str, per_platform: dict[tuple[str, AbiTrack], list[Any]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(pl for (pl, _), ps in per_platform.items() if any(p.name == name for p in ps)))

"""matrix.yaml: the declarative build matrix, expanded into deterministic, legal cells."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version
from pydantic import ConfigDict, Field, field_validator

from buildtool.errors import UserError, allowed_list, did_you_mean
from buildtool.model import Frozen
from buildtool.spec import archcover, yamlsrc
from buildtool.spec.abitrack import LIMITED_API_PYTHON, TRACKS, AbiTrack, limited_api_python_tag
from buildtool.spec.compat import PLATFORMS, Compat, load_compat
from buildtool.spec.recipe import Recipe
from buildtool.versions import cuda_major, torch_minor

AXES = ("platform", "python", "cuda", "torch")
_VERSION_RE = re.compile(r"^\d+\.\d+(\.\d+)?$")


def _as_tuple(v: Any) -> Any:
    if v is None or isinstance(v, dict):
        return v  # pydantic reports the wrong type with its location
    if isinstance(v, str | int | float):
        return (str(v),)
    return tuple(str(x) for x in v)


def _check_platforms(values: Iterable[str]) -> None:
    for p in values:
        if p not in PLATFORMS:
            raise ValueError(f'unknown platform "{p}"{did_you_mean(p, PLATFORMS)}; allowed: {", ".join(PLATFORMS)}')


def _check_versions(name: str, values: Iterable[str]) -> None:
    for v in values:
        if not _VERSION_RE.match(v):
            raise ValueError(f'{name} "{v}" is not a version like 3.10 or 12.4')


class _CellAxes(Frozen):
    """platform / python / cuda / torch, each one value or a list (shared by `axes` and `include`)."""

    platform: tuple[str, ...]
    python: tuple[str, ...]
    cuda: tuple[str, ...]
    torch: tuple[str, ...]

    _t = field_validator("platform", "python", "cuda", "torch", mode="before")(_as_tuple)

    @field_validator("platform")
    @classmethod
    def _platforms(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        _check_platforms(v)
        return v

    @field_validator("python", "cuda", "torch")
    @classmethod
    def _versions(cls, v: tuple[str, ...], info: Any) -> tuple[str, ...]:
        _check_versions(info.field_name, v)
        return v


class Axes(_CellAxes):
    @field_validator("python", "cuda", "torch")
    @classmethod
    def _unique(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        dupes = sorted({x for x in v if v.count(x) > 1})
        if dupes:
            raise ValueError(f"values must be unique; listed more than once: {', '.join(dupes)}")
        return v


class Selector(Frozen):
    """Matches cells: every given axis must contain the cell's value (torch also matches by minor)."""

    platform: tuple[str, ...] | None = None
    python: tuple[str, ...] | None = None
    cuda: tuple[str, ...] | None = None
    torch: tuple[str, ...] | None = None
    package: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None
    abi: tuple[AbiTrack, ...] | None = None

    _t = field_validator("platform", "python", "cuda", "torch", "package", "tags", "abi", mode="before")(_as_tuple)

    @field_validator("platform")
    @classmethod
    def _platforms(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None:
            _check_platforms(v)
        return v

    @field_validator("python", "cuda")
    @classmethod
    def _versions(cls, v: tuple[str, ...] | None, info: Any) -> tuple[str, ...] | None:
        if v is not None:
            _check_versions(info.field_name, v)
        return v

    def matches(self, cell: Cell) -> bool:
        if self.platform is not None and cell.platform not in self.platform:
            return False
        if self.python is not None and cell.python not in self.python:
            return False
        if self.cuda is not None and cell.cuda not in self.cuda:
            return False
        if self.torch is not None and not (cell.torch in self.torch or cell.torch_minor in self.torch):
            return False
        if self.package is not None and not ({cell.package, f"{cell.package}=={cell.version}"} & set(self.package)):
            return False
        if self.abi is not None and cell.abi not in self.abi:
            return False
        return not (self.tags is not None and not set(self.tags) & set(cell.tags))


class ArchPolicy(Frozen):
    """Per CUDA version: the GPUs (compute capabilities) its wheels must run on, and the code that covers
    them: SASS ``archs`` (natively or by binary compatibility, buildtool/archcover.py) plus PTX of the newest."""

    runs_on: tuple[str, ...] = Field((), description="compute capabilities every wheel must run on (checked)")
    archs: tuple[str, ...]
    ptx: bool = Field(False, description="also embed PTX for the newest arch (forward compatibility)")

    _t = field_validator("archs", "runs_on", mode="before")(_as_tuple)

    @field_validator("runs_on")
    @classmethod
    def _gpu_form(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for g in v:
            if not re.match(r"^\d+\.\d+$", g):
                raise ValueError(f'GPU "{g}" must be a compute capability like 8.6 or 12.1')
        return v

    @property
    def ptx_arch(self) -> str | None:
        return max(self.archs, key=lambda a: Version(a.rstrip("af"))) if self.ptx and self.archs else None

    @field_validator("archs")
    @classmethod
    def _arch_form(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for a in v:
            if not re.match(r"^\d+\.\d+a?$", a):
                raise ValueError(f'arch "{a}" must look like 8.0, 9.0 or 9.0a')
        return v


class IncludeEntry(_CellAxes):
    """Explicit cells added on top of the product of the axes (each field may be one value or a list)."""

    packages: tuple[str, ...]
    tags: tuple[str, ...] = ()
    archs: tuple[str, ...] | None = None
    abi: AbiTrack = Field("full", description="stable: a stable-ABI cell built against this python/cuda/torch")

    _t2 = field_validator("packages", "tags", "archs", mode="before")(_as_tuple)


class Profile(Frozen):
    description: str
    select: Selector
    archs: tuple[str, ...] | None = Field(
        None, description="SASS targets for this profile's builds instead of the cells' own (no PTX), like --archs: "
        "a quick developer build of a cell that the release builds for every arch")

    _t = field_validator("archs", mode="before")(_as_tuple)


class Runner(Frozen):
    """Where GitHub Actions builds and verifies a platform's cells."""

    runs_on: str = Field(alias="runs-on", description="hosted runner label for builds")
    container: str = Field("", description="build container image ('' = run on the host)")
    gpu_runs_on: tuple[str, ...] = Field(alias="gpu-runs-on", description="self-hosted GPU runner labels for verify")

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


# Used when matrix.yaml has no `runners:` section.
DEFAULT_RUNNERS: dict[str, Runner] = {
    "linux-x86_64": Runner(
        runs_on="ubuntu-22.04", container="quay.io/pypa/manylinux_2_28_x86_64",
        gpu_runs_on=("self-hosted", "linux", "gpu"),
    ),
    "linux-aarch64": Runner(
        runs_on="ubuntu-22.04-arm", container="quay.io/pypa/manylinux_2_28_aarch64",
        gpu_runs_on=("self-hosted", "linux", "arm64", "gpu"),
    ),
    "windows-x86_64": Runner(runs_on="windows-2022", container="", gpu_runs_on=("self-hosted", "windows", "gpu")),
}


class StableAbiSwitch(Frozen):
    """`stable_abi:` in matrix.yaml: ``true``/``false``, or a mapping with the full-ABI cells to keep."""

    enabled: bool = Field(False, description="serve torch >= a version's stable floor from one stable-ABI cell per "
                          "platform x CUDA major (versions whose recipe has stable_abi.kernels)")
    keep_full: tuple[Selector, ...] = Field((), description="full-ABI cells still built beside the stable track "
                                            "(the developer default, speed baselines)")


class MatrixFile(Frozen):
    version: Literal[1]
    axes: Axes
    packages: tuple[str, ...]
    exclude: tuple[Selector, ...] = ()
    include: tuple[IncludeEntry, ...] = ()
    arch_policy: dict[str, ArchPolicy]
    profiles: dict[str, Profile] = Field(default_factory=dict)
    default_profile: str = "local"
    runners: dict[str, Runner] = Field(default_factory=lambda: dict(DEFAULT_RUNNERS))
    stable_abi: StableAbiSwitch = StableAbiSwitch()

    _t = field_validator("packages", mode="before")(_as_tuple)

    @field_validator("stable_abi", mode="before")
    @classmethod
    def _switch(cls, v: Any) -> Any:
        return {"enabled": v} if isinstance(v, bool) else v

    @field_validator("arch_policy", mode="before")
    @classmethod
    def _str_keys(cls, v: Any) -> Any:
        return {str(k): val for k, val in v.items()} if isinstance(v, dict) else v

    @field_validator("default_profile")
    @classmethod
    def _default_profile_exists(cls, v: str, info: Any) -> str:
        profiles = info.data.get("profiles") or {}
        if profiles and v not in profiles:
            raise ValueError(
                f'"{v}" is not a profile{did_you_mean(v, profiles)}; profiles: {allowed_list(profiles)}'
            )
        return v

    @field_validator("runners", mode="before")
    @classmethod
    def _runner_keys(cls, v: Any) -> Any:
        if isinstance(v, dict):
            _check_platforms(str(k) for k in v)
        return v


class Cell(Frozen):
    """One wheel to build: a package version for one platform / Python / CUDA / torch."""

    platform: str
    python: str
    cuda: str
    torch: str
    package: str
    version: str
    cxx11_abi: bool
    cxx_std: str
    archs: tuple[str, ...]
    ptx: bool
    triton: str | None
    tags: tuple[str, ...] = ()
    abi: AbiTrack = "full"
    torch_floor: str | None = None  # stable track: the lowest torch the wheel serves (TORCH_TARGET_VERSION)

    @property
    def torch_minor(self) -> str:
        return torch_minor(self.torch)

    @property
    def python_tag(self) -> str:
        """The wheel's Python tag: the build Python's on the full track, the limited API's floor on the stable."""
        if self.abi == "stable":
            return limited_api_python_tag()
        return "cp" + self.python.replace(".", "")

    @property
    def abi_tag(self) -> str:
        return "abi3" if self.abi == "stable" else self.python_tag

    @property
    def cuda_major(self) -> str:
        return cuda_major(self.cuda)

    @property
    def compile_group(self) -> str:
        """One CI job: a full-ABI group is platform x CUDA x torch x package version (its Pythons build one
        after another, device objects compiled once); a stable cell is a group of its own."""
        if self.abi == "stable":
            return self.id
        return f"{self.platform}-{self.cuda_tag}-torch{self.torch_minor}-{self.package}-{self.version}"

    @property
    def cuda_tag(self) -> str:
        return "cu" + self.cuda.replace(".", "")

    @property
    def os(self) -> str:
        return self.platform.split("-", 1)[0]

    @property
    def id(self) -> str:
        """Full ABI: ``linux-x86_64-cp311-cu130-torch2.14-PKG-VER``; stable ABI: ``abi3`` in place of the
        Python, the torch it is built against (it serves every torch >= torch_floor)."""
        py = "abi3" if self.abi == "stable" else self.python_tag
        return f"{self.platform}-{py}-{self.cuda_tag}-torch{self.torch_minor}-{self.package}-{self.version}"

    @property
    def arch_list(self) -> str:
        """TORCH_CUDA_ARCH_LIST style: '8.0;9.0+PTX'."""
        items = list(self.archs)
        if self.ptx and items:
            items[-1] += "+PTX"
        return ";".join(items)

    def summary(self) -> dict[str, Any]:
        data = self.model_dump()
        data["id"] = self.id
        data["cxx11_abi"] = "TRUE" if self.cxx11_abi else "FALSE"
        data["arch_list"] = self.arch_list
        data["triton_package"] = self.triton_package
        if self.abi == "full":  # full-ABI summaries stay as they were (golden files, provenance)
            data.pop("abi")
            data.pop("torch_floor")
        return data

    @property
    def triton_package(self) -> str | None:
        """The triton distribution matched to the cell's torch: `triton` on Linux, `triton-windows` on Windows."""
        if self.triton is None:
            return None
        return re.split(r"[=<>~!]", self.triton, maxsplit=1)[0]


@dataclass(frozen=True)
class Expansion:
    cells: tuple[Cell, ...]
    excluded: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def by_id(self) -> dict[str, Cell]:
        return {c.id: c for c in self.cells}


@dataclass(frozen=True)
class Matrix:
    spec: MatrixFile
    doc: yamlsrc.Document
    recipes: Mapping[str, Recipe]
    compat: Compat
    _known_ok: set[tuple[str, str, bool]] = field(default_factory=set, compare=False, repr=False)

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(cls, path: Path, recipes: Mapping[str, Recipe], compat: Compat | None = None) -> Matrix:
        doc = yamlsrc.load(path)
        spec: MatrixFile = yamlsrc.validate(MatrixFile, doc)
        matrix = cls(spec=spec, doc=doc, recipes=recipes, compat=compat or load_compat())
        matrix._check_references()
        return matrix

    def _check_references(self) -> None:
        seen: dict[tuple[str, str], int] = {}
        for i, ref in enumerate(self.spec.packages):
            for pv in self.resolve_packages(ref, ("packages", i)):
                if pv in seen:
                    raise UserError(
                        f'packages[{i}]: "{ref}" selects {pv[0]} {pv[1]} again (already selected by '
                        f'packages[{seen[pv]}] "{self.spec.packages[seen[pv]]}"): the cells would be duplicates',
                        location=self.doc.location(("packages", i)),
                        hint="list each package version once",
                    )
                seen[pv] = i
        axes = self.spec.axes
        for name in ("python", "cuda", "torch"):
            for k, value in enumerate(getattr(axes, name)):
                self._check_known(name, value, ("axes", name, k))
        for i, entry in enumerate(self.spec.include):
            for j, ref in enumerate(entry.packages):
                self.resolve_packages(ref, ("include", i, "packages", j))
            for name in ("python", "cuda", "torch"):
                for k, value in enumerate(getattr(entry, name)):
                    self._check_known(name, value, ("include", i, name, k))
        known_tags = sorted({t for entry in self.spec.include for t in entry.tags})
        selectors: dict[Selector, tuple[str | int, ...]] = {}  # distinct rules only: 1 M copies check once
        for i, sel in enumerate(self.spec.exclude):
            if all(getattr(sel, axis) is None for axis in _FILTER_KEYS):
                raise UserError(
                    f"exclude[{i}]: an empty rule matches every cell (it would exclude the whole matrix)",
                    location=self.doc.location(("exclude", i)),
                    hint=f"name at least one of {', '.join(_FILTER_KEYS)}, e.g. {{platform: windows-x86_64}}",
                )
            selectors.setdefault(sel, ("exclude", i))
        for n, prof in self.spec.profiles.items():
            selectors.setdefault(prof.select, ("profiles", n, "select"))
        for k, sel in enumerate(self.spec.stable_abi.keep_full):
            selectors.setdefault(sel, ("stable_abi", "keep_full", k))
        for sel, path in selectors.items():
            self._check_selector(sel, path, known_tags)
        for cuda in self.spec.axes.cuda:
            if cuda not in self.spec.arch_policy:
                raise UserError(
                    f"axes.cuda lists {cuda} but arch_policy has no entry for it; "
                    f"arch_policy has: {allowed_list(self.spec.arch_policy)}",
                    location=self.doc.location(("axes", "cuda", self.spec.axes.cuda.index(cuda))),
                )
        for cuda, policy in self.spec.arch_policy.items():
            info = self.compat.cuda.get(cuda)
            if info is None:
                raise UserError(
                    f'arch_policy: unknown CUDA "{cuda}"{did_you_mean(cuda, self.compat.cuda)}; '
                    f"known: {allowed_list(self.compat.cuda)}",
                    location=self.doc.location(("arch_policy", cuda), key=True),
                )
            for k, arch in enumerate(policy.archs):
                if not info.can_compile(arch.rstrip("a")):
                    raise UserError(
                        f"arch_policy.{cuda}.archs: CUDA {cuda} cannot compile sm_{arch.replace('.', '')} "
                        f"(supported: {info.min_arch} to {info.max_arch})",
                        location=self.doc.location(("arch_policy", cuda, "archs", k)),
                    )
            for k, gpu in enumerate(policy.runs_on):
                if archcover.code_for(gpu, policy.archs, policy.ptx_arch) is None:
                    raise UserError(
                        f"arch_policy.{cuda}.runs_on: no code in archs {', '.join(policy.archs)}"
                        f"{' +PTX' if policy.ptx else ''} runs on {gpu} ({archcover.gpu_names(gpu)}); SASS X.y runs "
                        f"only on X.z with z >= y",
                        location=self.doc.location(("arch_policy", cuda, "runs_on", k)),
                        hint=f"the fewest SASS targets for runs_on are {', '.join(archcover.fewest_sass(policy.runs_on))}",
                    )

    def _known_values(self, axis: str) -> list[str]:
        if axis == "cuda":
            return list(self.compat.cuda)
        if axis == "torch":
            return [info.release for info in self.compat.torch.values()]
        pythons = {py for info in self.compat.torch.values() for py in info.python}
        return sorted(pythons, key=Version)

    def _check_known(self, axis: str, value: str, path: Sequence[str | int], *, minor_ok: bool = True) -> None:
        """A python/cuda/torch value must exist in the compatibility data (torch: a release or, where
        ``minor_ok``, a minor like 2.7); a typo would otherwise silently produce no cells."""
        if (axis, value, minor_ok) in self._known_ok:
            return
        known = self._known_values(axis)
        field_name = ".".join(str(p) for p in (path[:-1] if isinstance(path[-1], int) else path))
        if axis == "torch":
            info = self.compat.torch_info(value)
            ok = info is not None and (value == info.release or (minor_ok and value == torch_minor(value)))
            if not ok:
                why = (
                    f"torch {torch_minor(value)} is released as {info.release} in the compatibility data"
                    if info is not None else "not in the compatibility data"
                )
                raise UserError(
                    f'{field_name}: unknown torch "{value}" ({why}){_version_hint(value, known)}; '
                    f"allowed: {allowed_list(known, limit=20)}",
                    location=self.doc.location(path),
                    hint="add the release to buildtool/data/compat.yaml if it is new",
                )
            self._known_ok.add((axis, value, minor_ok))
            return
        if value not in known:
            raise UserError(
                f'{field_name}: unknown {axis} "{value}"{_version_hint(value, known)}; '
                f"allowed: {allowed_list(known, limit=20)}",
                location=self.doc.location(path),
            )
        self._known_ok.add((axis, value, minor_ok))

    def _check_selector(self, sel: Selector, path: tuple[str | int, ...], known_tags: Sequence[str]) -> None:
        """Every value an exclude rule or profile names must exist, or the rule silently matches nothing."""
        for axis in ("python", "cuda", "torch"):
            for k, value in enumerate(getattr(sel, axis) or ()):
                self._check_known(axis, value, (*path, axis, k))
        for k, ref in enumerate(sel.package or ()):
            loc_path = (*path, "package", k)
            name, sep, version = ref.partition("==")
            recipe = self.recipes.get(name)
            if recipe is None:
                raise UserError(
                    f'{".".join(str(p) for p in (*path, "package"))}: unknown package "{name}"'
                    f"{did_you_mean(name, self.recipes)}; known: {allowed_list(self.recipes)}",
                    location=self.doc.location(loc_path),
                )
            if sep and version not in recipe.by_version:
                known = list(recipe.by_version)
                raise UserError(
                    f'{".".join(str(p) for p in (*path, "package"))}: unknown version "{version}" of {name}'
                    f"{_version_hint(version, known)}; known: {allowed_list(known)}",
                    location=self.doc.location(loc_path),
                )
        for k, tag in enumerate(sel.tags or ()):
            if tag not in known_tags:
                raise UserError(
                    f'{".".join(str(p) for p in (*path, "tags"))}: unknown tag "{tag}"'
                    f"{did_you_mean(tag, known_tags)}; tags used by include entries: "
                    f"{allowed_list(known_tags) or '(none)'}",
                    location=self.doc.location((*path, "tags", k)),
                )

    def resolve_packages(self, ref: str, path: Sequence[str | int]) -> list[tuple[str, str]]:
        """'name==1.2' or 'name>=1.5,<1.7' -> [(name, version), ...] from the recipes."""
        loc = self.doc.location(path)
        try:
            req = Requirement(ref)
        except InvalidRequirement as exc:
            reason = str(exc).splitlines()[0]
            raise UserError(f'"{ref}" is not "name==version" or "name<spec>": {reason}', location=loc) from None
        recipe = self.recipes.get(req.name)
        if recipe is None:
            raise UserError(
                f'unknown package "{req.name}"{did_you_mean(req.name, self.recipes)}; '
                f"known: {allowed_list(self.recipes)}",
                location=loc,
            )
        if not req.specifier:
            raise UserError(f'"{ref}" needs a version or range, e.g. {req.name}=={recipe.versions[-1].version}', location=loc)
        found = recipe.matching(req.specifier)
        if not found:
            known = [v.version for v in recipe.versions]
            wanted = str(req.specifier).lstrip("=")
            raise UserError(
                f'unknown version "{req.specifier}" of {req.name}{_version_hint(wanted, known)}; '
                f"known: {allowed_list(known)}",
                location=loc,
            )
        return [(recipe.name, v.version) for v in found]

    # ---------------------------------------------------------------- expansion
    def _make_cell(
        self, platform: str, python: str, cuda: str, torch: str, package: str, version: str,
        tags: tuple[str, ...], archs: tuple[str, ...] | None, abi: AbiTrack = "full",
    ) -> tuple[Cell | None, list[str]]:
        reasons = self.compat.violations(platform=platform, python=python, cuda=cuda, torch=torch)
        recipe = self.recipes[package]
        rv = recipe.get(version)
        reasons += [f"{package} {version} {r}" for r in rv.constraints.violations(
            torch=torch, python=python, cuda=cuda, platform=platform)]
        floor = None
        if abi == "stable":
            floor = rv.stable_floor
            if floor is None:
                reasons.append(f"{package} {version} has no stable-ABI track: {rv.stable_reason()}")
            elif Version(torch_minor(torch)) < Version(floor):
                reasons.append(f"a stable-ABI cell of {package} {version} builds against torch >= its floor {floor}, "
                               f"not {torch}")
            elif rv.stable_abi and rv.stable_abi.build_floor and \
                    Version(torch_minor(torch)) < Version(rv.stable_abi.build_floor):
                reasons.append(f"{package} {version}'s stable-ABI port compiles only against torch >= "
                               f"{rv.stable_abi.build_floor}'s headers (stable_abi.build_torch), not {torch}")
            if Version(python) < Version(LIMITED_API_PYTHON):
                reasons.append(f"the stable track's limited API needs CPython >= {LIMITED_API_PYTHON} to build")
        info = self.compat.torch_info(torch)
        policy = self.spec.arch_policy.get(cuda)
        if policy is None and archs is None:
            reasons.append(f"no arch_policy for CUDA {cuda} and no archs given (arch_policy has: "
                           f"{', '.join(self.spec.arch_policy) or 'nothing'})")
        if reasons or info is None:
            return None, reasons
        release = torch if torch.count(".") == 2 else info.release
        cuda_info = self.compat.cuda[cuda]
        chosen = archs if archs is not None else policy.archs if policy else ()
        bad = [a for a in chosen if not cuda_info.can_compile(a.rstrip("a"))]
        if bad:
            return None, [f"CUDA {cuda} cannot compile {', '.join('sm_' + b.replace('.', '') for b in bad)}"]
        if abi == "stable":
            # One wheel for every torch >= the floor: triton by OS marker, never pinned to one torch's triton.
            triton_req = self.compat.triton_requirement(torch, platform)
            triton = triton_req[0] if triton_req else None
        else:
            pinned = self.compat.triton_requirement(torch, platform)
            triton = f"{pinned[0]}{pinned[1]}" if pinned else None
        cell = Cell(
            platform=platform, python=python, cuda=cuda, torch=release, package=package, version=version,
            cxx11_abi=info.abi_for(platform, cuda), cxx_std=info.std_for(platform),
            archs=tuple(chosen), ptx=bool(policy and policy.ptx and archs is None),
            triton=triton, tags=tags, abi=abi, torch_floor=floor,
        )
        return cell, []

    def stable_build_targets(self, platform: str, major: str, floor: str) -> list[tuple[str, str, str]]:
        """(python, cuda, torch) a stable-ABI cell of ``platform`` x CUDA ``major`` may build against, best first.

        An official torch build, so the build env installs as for any cell: the CUDA is the newest minor of
        that major on the axes that some torch >= the floor on the axes ships for ``platform`` (the newest
        toolkit's arch policy reaches the newest GPUs; within a major the driver runs the SASS by minor-version
        compatibility and libcudart.so.<major> comes with every torch of that major); the torch is the newest
        such one. The Python is the lowest on the axes, >= 3.10, that this torch ships for (the library uses no
        Python header: any would do). The expansion takes the first the recipe and the exclude rules allow."""
        axes = self.spec.axes
        toolkits = sorted((c for c in axes.cuda if cuda_major(c) == major), key=Version, reverse=True)
        torches = sorted((t for t in axes.torch if Version(torch_minor(t)) >= Version(floor)), key=Version, reverse=True)
        out = []
        for toolkit in toolkits:
            for torch in torches:
                info = self.compat.torch_info(torch)
                if info is None or platform not in info.platforms or toolkit not in info.cuda_for(platform):
                    continue
                pythons = sorted((p for p in axes.python if p in info.python
                                  and Version(p) >= Version(LIMITED_API_PYTHON)), key=Version)
                if pythons:
                    out.append((pythons[0], toolkit, torch))
        return out

    def stable_build_target(self, platform: str, major: str, floor: str) -> tuple[str, str, str] | None:
        targets = self.stable_build_targets(platform, major, floor)
        return targets[0] if targets else None

    def _stable_cells(self, base_pkgs: Sequence[tuple[str, str]], cells: dict[str, Cell],
                      excluded: dict[str, tuple[str, ...]]) -> dict[tuple[str, str, str, str], Cell]:
        """The stable-ABI cells of the axes: one per platform x CUDA major x stable-ported package version,
        keyed by (platform, major, package, version)."""
        out: dict[tuple[str, str, str, str], Cell] = {}
        majors = sorted({cuda_major(c) for c in self.spec.axes.cuda}, key=int)
        for (package, version), platform, major in itertools.product(base_pkgs, self.spec.axes.platform, majors):
            rv = self.recipes[package].get(version)
            if rv.stable_floor is None or rv.stable_abi is None:
                continue
            first: tuple[str, tuple[str, ...]] | None = None
            for python, cuda, torch in self.stable_build_targets(platform, major, rv.stable_abi.build_floor or rv.stable_floor):
                cid = f"{platform}-abi3-cu{cuda.replace('.', '')}-torch{torch_minor(torch)}-{package}-{version}"
                cell, reasons = self._make_cell(platform, python, cuda, torch, package, version, (), None, "stable")
                if cell is not None:
                    rule = next((k for k, sel in enumerate(self.spec.exclude) if sel.matches(cell)), None)
                    if rule is None:
                        cells[cell.id] = cell
                        out[(platform, major, package, version)] = cell
                        first = None
                        break
                    reasons = [f"excluded by rule exclude[{rule}] at {self.doc.location(('exclude', rule))}"]
                first = first or (cid, tuple(reasons))  # the best target's reason, if no target works
            if first is not None:
                excluded[first[0]] = first[1]
        return out

    def expand(self, *, stable_abi: bool | None = None) -> Expansion:
        """All cells; ``stable_abi`` overrides the file's switch (the summary's "before" numbers)."""
        use_stable = self.spec.stable_abi.enabled if stable_abi is None else stable_abi
        cells: dict[str, Cell] = {}
        excluded: dict[str, tuple[str, ...]] = {}
        axes = self.spec.axes
        base_pkgs = [pv for i, ref in enumerate(self.spec.packages) for pv in self.resolve_packages(ref, ("packages", i))]
        stable = self._stable_cells(base_pkgs, cells, excluded) if use_stable else {}
        candidates: list[Cell] = []
        for platform, python, cuda, torch, (package, version) in itertools.product(
            axes.platform, axes.python, axes.cuda, axes.torch, base_pkgs
        ):
            cid = _candidate_id(platform, python, cuda, torch, package, version)
            cell, reasons = self._make_cell(platform, python, cuda, torch, package, version, (), None)
            if cell is None:  # no such torch build (or the recipe rules it out): nothing to serve either
                excluded[cid] = tuple(reasons)
                continue
            candidates.append(cell)
        rules = first_matching_rules(candidates, self.spec.exclude)
        for n, cell in enumerate(candidates):
            rule = rules.get(n)
            if rule is not None:
                line = self.doc.location(("exclude", rule))
                excluded[cell.id] = (f"excluded by rule exclude[{rule}] at {line}",)
                continue
            served = stable.get((cell.platform, cell.cuda_major, cell.package, cell.version))
            floor = served.torch_floor if served else None
            kept = self._kept_full(cell.platform, cell.python, cell.cuda, cell.torch, cell.package, cell.version) \
                if served else None
            if served is not None and floor is not None and Version(cell.torch_minor) >= Version(floor) and kept is None:
                excluded[cell.id] = (
                    f"served by the stable-ABI track: {served.id} (one wheel for torch >= {floor} with CUDA "
                    f"{served.cuda_major}.x and CPython >= {LIMITED_API_PYTHON}; built against torch {served.torch}, "
                    f"CUDA {served.cuda})",
                )
                continue
            cells[cell.id] = cell
        for i, entry in enumerate(self.spec.include):
            pkgs = [pv for j, ref in enumerate(entry.packages) for pv in self.resolve_packages(ref, ("include", i, "packages", j))]
            for platform, python, cuda, torch, (package, version) in itertools.product(
                entry.platform, entry.python, entry.cuda, entry.torch, pkgs
            ):
                cell, reasons = self._make_cell(platform, python, cuda, torch, package, version, entry.tags,
                                                entry.archs, entry.abi)
                cid = _candidate_id(platform, python, cuda, torch, package, version)
                if cell is None:
                    raise UserError(
                        f"include[{i}]: impossible {'stable-ABI ' if entry.abi == 'stable' else ''}cell {cid}: " + "; ".join(reasons),
                        location=self.doc.location(("include", i)),
                    )
                if cell.id in cells:
                    raise UserError(
                        f"include[{i}]: duplicate cell {cell.id} (already produced by the axes or an earlier include)",
                        location=self.doc.location(("include", i)),
                        hint="remove the include or add an exclude rule for the axes' copy",
                    )
                excluded.pop(cell.id, None)
                cells[cell.id] = cell
        ordered = tuple(sorted(cells.values(), key=_sort_key))
        return Expansion(cells=ordered, excluded=excluded)

    def _kept_full(self, platform: str, python: str, cuda: str, torch: str, package: str, version: str) -> int | None:
        """The stable_abi.keep_full rule that keeps this full-ABI candidate beside the stable track, if any."""
        probe = Cell(platform=platform, python=python, cuda=cuda, torch=torch, package=package, version=version,
                     cxx11_abi=True, cxx_std="17", archs=(), ptx=False, triton=None)
        return next((k for k, sel in enumerate(self.spec.stable_abi.keep_full) if sel.matches(probe)), None)

    def _full_track_reason(self, package: str, version: str, torch: str, cell: Cell | None = None) -> str:
        if cell is not None and self.spec.stable_abi.enabled and self.recipes[package].get(version).stable_floor:
            k = self._kept_full(cell.platform, cell.python, cell.cuda, cell.torch, package, version)
            if k is not None:
                return (f"kept beside the stable-ABI track by stable_abi.keep_full[{k}] at "
                        f"{self.doc.location(('stable_abi', 'keep_full', k))}")
        track, why = self.track_of(package, version)
        return _full_track_reason_text(track, why, torch, self.recipes[package].get(version).stable_floor)

    def track_of(self, package: str, version: str) -> tuple[AbiTrack, str]:
        """Which track serves torch >= the floor for a package version, and why."""
        rv = self.recipes[package].get(version)
        floor = rv.stable_floor
        if floor is None:
            return "full", f"{package} {version} stays full ABI: {rv.stable_reason()}"
        if not self.spec.stable_abi.enabled:
            return "full", f"{package} {version} has a stable-ABI port (torch >= {floor}) but matrix.yaml has stable_abi off"
        decided = rv.stable_abi.decided_by if rv.stable_abi else ""
        return "stable", f"{package} {version}: stable-ABI track for torch >= {floor}" + (
            f" (floor set by {decided})" if decided else "")

    # ---------------------------------------------------------------- selection
    def select(self, expansion: Expansion, profile: str | None = None, filters: Sequence[str] = ()) -> list[Cell]:
        cells = list(expansion.cells)
        if not cells:
            reasons = sorted({r for rs in expansion.excluded.values() for r in rs})
            raise UserError(
                f"empty selection: the matrix produces no cell ({len(expansion.excluded)} combinations, all "
                f"excluded); reasons: {allowed_list(reasons, limit=4)}",
                location=self.doc.location(("axes",), key=True),
                hint="`buildtool matrix --explain ID` says why a cell is excluded",
            )
        if profile is not None:
            prof = self.spec.profiles.get(profile)
            if prof is None:
                raise UserError(
                    f'--profile: unknown profile "{profile}"{did_you_mean(profile, self.spec.profiles)}; '
                    f"profiles: {allowed_list(self.spec.profiles, limit=40) or '(none defined)'}",
                    location=self.doc.location(("profiles",), key=True),
                )
            cells = [c for c in cells if prof.select.matches(c)]
            if prof.archs is not None:
                cells = [self._with_profile_archs(c, profile, prof.archs) for c in cells]
            if not cells:
                raise UserError(
                    f'empty selection: profile "{profile}" selects no cell '
                    f"({len(expansion.cells)} cells in the matrix; its select: {_selector_text(prof.select)})",
                    location=self.doc.location(("profiles", profile, "select")),
                    hint="`buildtool matrix --list-profiles` shows how many cells each profile has",
                )
        for f in filters:
            sel = parse_filter(f)
            kept = [c for c in cells if sel.matches(c)]
            if not kept:
                axis = f.partition("=")[0].strip()
                present = sorted({v for c in cells for v in _axis_values(c, axis)})
                what = f'profile "{profile}"' if profile else "the matrix"
                source = {"package": ("packages",), "tags": ("include",), "abi": ("packages",)}.get(axis, ("axes", axis))
                raise UserError(
                    f'--filter {f}: empty selection, no cell of {what} matches; {axis} values there: '
                    f"{allowed_list(present, limit=20)}",
                    location=self.doc.location(source, key=True),
                )
            cells = kept
        return cells

    def _with_profile_archs(self, cell: Cell, profile: str, archs: tuple[str, ...]) -> Cell:
        bad = [a for a in archs if not self.compat.cuda[cell.cuda].can_compile(a.rstrip("a"))]
        if bad:
            raise UserError(
                f'profile "{profile}": CUDA {cell.cuda} ({cell.id}) cannot compile '
                + ", ".join("sm_" + b.replace(".", "") for b in bad),
                location=self.doc.location(("profiles", profile, "archs")),
            )
        return cell.model_copy(update={"archs": archs, "ptx": False})

    def explain(self, cell_id: str, expansion: Expansion) -> tuple[bool, list[str]]:
        """(is_built, reasons) for a cell id; unknown ids raise with a did-you-mean."""
        cells = expansion.by_id()
        if cell_id in cells:
            c = cells[cell_id]
            profiles = [n for n, p in self.spec.profiles.items() if p.select.matches(c)]
            lines = [
                f"built: C++11 ABI {'TRUE' if c.cxx11_abi else 'FALSE'}, C++{c.cxx_std}, archs {c.arch_list}, "
                f"triton {c.triton or 'none'}",
                f"profiles: {', '.join(profiles) or '(none)'}",
            ]
            if c.abi == "stable":
                lines.append(f"track: stable ABI: serves every torch >= {c.torch_floor} built with CUDA "
                                f"{c.cuda_major}.x and every CPython >= {LIMITED_API_PYTHON} on {c.platform} "
                                f"(built against torch {c.torch}, CUDA {c.cuda}, Python {c.python})")
            else:
                lines.append("track: full ABI: " + self._full_track_reason(c.package, c.version, c.torch, c))
            return True, [*lines, *self.gpu_code(c)]
        if cell_id in expansion.excluded:
            return False, list(expansion.excluded[cell_id])
        known = list(cells) + list(expansion.excluded)
        raise UserError(f'no cell "{cell_id}" in the matrix{did_you_mean(cell_id, known)}')

    def gpu_code(self, cell: Cell) -> list[str]:
        """Which code each GPU runs from the cell's wheel: the GPUs its CUDA version's policy must run on,
        then the other known GPUs that toolkit can target."""
        policy = self.spec.arch_policy.get(cell.cuda)
        required = policy.runs_on if policy else ()
        info = self.compat.cuda.get(cell.cuda)
        # every GPU the toolkit's code can run on (newer than its max_arch too: compatible SASS, PTX)
        known = [g for g in archcover.load_gpus().gpus if info is None or Version(g) >= Version(info.min_arch)]
        ptx = max(cell.archs, key=lambda a: Version(a.rstrip("af"))) if cell.ptx and cell.archs else None
        lines = [f"GPUs (arch_policy.{cell.cuda}.runs_on first):" if required else "GPUs:"]
        if policy and (cell.archs, cell.ptx) != (policy.archs, policy.ptx):
            lines[0] += " this cell sets its own archs, so runs_on is not guaranteed"
        for gpu in [*required, *(g for g in known if g not in required)]:
            code = archcover.code_for(gpu, cell.archs, ptx)
            what = code.describe() if code else "no code: the wheel does not run on it"
            extra = "" if gpu in required or not required else " (not in runs_on)"
            lines.append(f"  {gpu:>5} {archcover.gpu_names(gpu)}: {what}{extra}")
        if ptx:
            lines.append(f"  newer GPUs: compute_{ptx.replace('.', '')}: PTX, JIT-compiled by the driver at first load")
        return lines


def _full_track_reason_text(track: AbiTrack, why: str, torch: str, floor: str | None) -> str:
    if track == "stable" and floor is not None:
        return f"torch {torch_minor(torch)} is below the stable floor {floor} ({why})"
    return why


_NONE: frozenset[int] = frozenset()


def first_matching_rules(cells: Sequence[Cell], rules: Sequence[Selector]) -> dict[int, int]:
    """{cell index: index of the first rule matching it}, as ``next(k for k, r in enumerate(rules) if
    r.matches(cell))`` per cell would give, in time linear in the rules (not cells x rules): the cells are
    indexed by their axis values, each distinct rule looks up the cells it matches among those still
    unmatched, and the scan stops once every cell is matched."""
    index: dict[tuple[str, str], set[int]] = {}
    for n, cell in enumerate(cells):
        for axis in _FILTER_KEYS:
            for value in _axis_values(cell, axis):
                index.setdefault((axis, value), set()).add(n)
    unmatched = set(range(len(cells)))
    first: dict[int, int] = {}
    seen: set[Selector] = set()
    for k, rule in enumerate(rules):
        if not unmatched:
            break
        if rule in seen:  # a repeated rule can only match what its first copy already matched
            continue
        seen.add(rule)
        matched: set[int] | None = None  # None: no axis constrained yet (every unmatched cell)
        for axis in _FILTER_KEYS:
            values = getattr(rule, axis)
            if values is None:
                continue
            within = unmatched if matched is None else matched
            on_axis: set[int] = set()
            for value in values:
                on_axis |= index.get((axis, value), _NONE) & within
            matched = on_axis
            if not matched:
                break
        if matched is None:
            matched = set(unmatched)
        for n in matched:
            first[n] = k
        unmatched -= matched
    return first


def _version_hint(value: str, known: Sequence[str]) -> str:
    """did-you-mean for versions: the known version sharing the longest release prefix, then the nearest
    (difflib would offer 1.6.1 for 1.4.1)."""
    typed = [k for k in known if value.startswith(k) or k.startswith(value)]  # 12.66 -> 12.6
    if typed:
        return f' (did you mean "{max(typed, key=len)}"?)'
    try:
        wanted = Version(value).release
    except InvalidVersion:
        return did_you_mean(value, known)
    best: tuple[int, float, str] | None = None
    for k in known:
        try:
            rel = Version(k).release
        except InvalidVersion:
            continue
        prefix = next((i for i, (a, b) in enumerate(zip(wanted, rel, strict=False)) if a != b), min(len(wanted), len(rel)))
        if prefix == 0:
            continue
        distance = abs(sum(x * 1000.0 ** -i for i, x in enumerate(wanted)) - sum(x * 1000.0 ** -i for i, x in enumerate(rel)))
        key = (-prefix, distance, k)
        if best is None or key < best:
            best = key
    return f' (did you mean "{best[2]}"?)' if best else ""


def _selector_text(sel: Selector) -> str:
    parts = [f"{k}={','.join(v)}" for k, v in sel.model_dump(exclude_none=True).items()]
    return " ".join(parts) or "(everything)"


def _axis_values(cell: Cell, axis: str) -> tuple[str, ...]:
    if axis == "package":
        return (cell.package, f"{cell.package}=={cell.version}")
    if axis == "tags":
        return cell.tags
    if axis == "abi":
        return (cell.abi,)
    if axis == "torch":
        return (cell.torch, cell.torch_minor)
    return (str(getattr(cell, axis)),)


def _candidate_id(platform: str, python: str, cuda: str, torch: str, package: str, version: str) -> str:
    return f"{platform}-cp{python.replace('.', '')}-cu{cuda.replace('.', '')}-torch{torch_minor(torch)}-{package}-{version}"


def _sort_key(c: Cell) -> tuple[Any, ...]:
    return (c.platform, c.abi == "stable", Version(c.python), Version(c.cuda), Version(c.torch), c.package,
            Version(c.version))


_FILTER_KEYS = ("platform", "python", "cuda", "torch", "package", "tags", "abi")


def parse_filter(text: str) -> Selector:
    """'cuda=12.4,12.6' -> Selector(cuda=(12.4, 12.6))."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not value:
        raise UserError(f'filter "{text}" must look like AXIS=VALUE[,VALUE]; axes: {", ".join(_FILTER_KEYS)}')
    if key not in _FILTER_KEYS:
        raise UserError(f'unknown filter axis "{key}"{did_you_mean(key, _FILTER_KEYS)}; axes: {", ".join(_FILTER_KEYS)}')
    values = tuple(v.strip() for v in value.split(",") if v.strip())
    if key == "abi":
        for a in values:
            if a not in TRACKS:
                raise UserError(f'unknown ABI track "{a}"{did_you_mean(a, TRACKS)}; allowed: {", ".join(TRACKS)}')
    if key == "platform":
        for p in values:
            if p not in PLATFORMS:
                raise UserError(f'unknown platform "{p}"{did_you_mean(p, PLATFORMS)}; allowed: {", ".join(PLATFORMS)}')
    return Selector(**{key: values})


# ---------------------------------------------------------------- output formats
RUNNERS = {name: r.runs_on for name, r in DEFAULT_RUNNERS.items()}
GITHUB_CHUNK = 256  # GitHub Actions: at most 256 jobs per matrix


def github_matrix(
    cells: Sequence[Cell], chunk: int = GITHUB_CHUNK, runners: Mapping[str, Runner] | None = None
) -> dict[str, Any]:
    """GitHub Actions `include` matrices, chunked so no job matrix exceeds 256 entries, plus the verify
    matrix: one job per (platform, CUDA major) on that platform's self-hosted GPU runner."""
    table = dict(runners or DEFAULT_RUNNERS)
    missing = sorted({c.platform for c in cells} - set(table))
    if missing:
        raise UserError(f"runners: no runner for platform {', '.join(missing)}; runners: {allowed_list(table)}")
    rows = [
        {
            "id": c.id, "platform": c.platform, "os": c.os, "runs-on": table[c.platform].runs_on,
            "container": table[c.platform].container, "python": c.python, "cuda": c.cuda, "torch": c.torch,
            "package": c.package, "version": c.version, "cxx11-abi": "TRUE" if c.cxx11_abi else "FALSE",
            "arch-list": c.arch_list, "abi": c.abi,
        }
        for c in cells
    ]
    chunks = [rows[i : i + chunk] for i in range(0, len(rows), chunk)] or [[]]
    groups = sorted({(c.platform, c.cuda.split(".")[0]) for c in cells})
    verify = [
        {"platform": p, "os": p.split("-")[0], "cuda-major": major, "runs-on": list(table[p].gpu_runs_on)}
        for p, major in groups
    ]
    return {
        "count": len(rows), "chunks": len(chunks), "matrices": [{"include": part} for part in chunks],
        "verify": {"include": verify},
    }


def load_matrix(project_root: Path, matrix_path: Path | None = None) -> Matrix:
    from buildtool.spec.recipe import load_recipes

    recipes = load_recipes(project_root / "recipes")
    return Matrix.load(matrix_path or project_root / "matrix.yaml", recipes)

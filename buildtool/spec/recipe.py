"""Recipes (recipes/*.yaml): per package, the versions we can build, their source and their kernels."""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from pydantic import Field, field_validator, model_validator

from buildtool.errors import UserError, allowed_list, did_you_mean
from buildtool.model import Frozen
from buildtool.spec import yamlsrc
from buildtool.spec.abitrack import AbiTrack

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHA1 = re.compile(r"^[0-9a-f]{40}$")


class SdistSource(Frozen):
    """A PyPI sdist; only usable where the sdist ships csrc/ (causal-conv1d >= 1.5.1, mamba-ssm >= 2.2.5)."""

    kind: Literal["pypi-sdist"]
    url: str
    sha256: str
    subdirectory: str | None = None

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        if not _SHA256.match(v):
            raise ValueError("must be 64 lowercase hex characters")
        return v

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


class GitSource(Frozen):
    """A git repository fetched by full commit; ``sha256`` pins the content of the extracted tree."""

    kind: Literal["git"]
    url: str
    commit: str
    tag: str | None = None
    subdirectory: str | None = None
    mirror_name: str = Field(description="name of the repository in a source mirror, e.g. Dao-AILab+causal-conv1d")
    sha256: str | None = None

    @field_validator("commit")
    @classmethod
    def _full_sha(cls, v: str) -> str:
        if not _SHA1.match(v):
            raise ValueError("must be a full 40-character lowercase commit sha")
        return v


Source = Annotated[SdistSource | GitSource, Field(discriminator="kind")]


class Constraints(Frozen):
    """Which cells a version can be built for; empty means no constraint."""

    torch: str = ""
    python: str = ""
    cuda: str = ""
    platforms: tuple[str, ...] = ()

    @field_validator("torch", "python", "cuda")
    @classmethod
    def _spec(cls, v: str) -> str:
        try:
            SpecifierSet(v)
        except InvalidSpecifier as exc:
            raise ValueError(f"not a version specifier: {exc}") from None
        return v

    def violations(self, *, torch: str, python: str, cuda: str, platform: str) -> list[str]:
        out = []
        for name, value, spec in (("torch", torch, self.torch), ("python", python, self.python), ("cuda", cuda, self.cuda)):
            if spec and Version(value) not in SpecifierSet(spec):
                out.append(f"needs {name}{spec}, cell has {value}")
        if self.platforms and platform not in self.platforms:
            out.append(f"supports platforms {', '.join(self.platforms)} only")
        return out


class StableAbi(Frozen):
    """The version's stable-ABI track: its torch floor and kernel specs, or why it cannot have one."""

    torch_floor: str | None = Field(None, description="lowest torch minor the port targets (TORCH_TARGET_VERSION)")
    decided_by: str = Field("", description="the stable-ABI API that set the floor")
    build_torch: str | None = Field(None, description="lowest torch whose headers compile the port (default: the "
                                    "floor); the library still targets the floor")
    kernels: tuple[str, ...] = Field((), description="kernel specs built on the stable track")
    blocked: str = Field("", description="why the version stays full ABI (e.g. an API the stable ABI lacks)")

    @field_validator("torch_floor", "build_torch", mode="before")
    @classmethod
    def _minor(cls, v: object) -> object:
        if v is None:
            return v
        text = str(v)
        try:
            parsed = Version(text)
        except InvalidVersion:
            raise ValueError(f'"{text}" is not a torch minor like 2.10') from None
        if len(parsed.release) != 2:
            raise ValueError(f'"{text}" must be a torch minor like 2.10 (the stable ABI is versioned per minor)')
        return text

    @model_validator(mode="after")
    def _ported_or_blocked(self) -> StableAbi:
        if self.blocked and (self.kernels or self.torch_floor):
            raise ValueError("give either `blocked` (the version stays full ABI) or `torch_floor` + `kernels`, not both")
        if not self.blocked and not (self.kernels and self.torch_floor):
            raise ValueError("a ported version needs both `torch_floor` and `kernels` (or `blocked: <reason>`)")
        return self

    @property
    def ported(self) -> bool:
        return not self.blocked

    @property
    def build_floor(self) -> str | None:
        """The lowest torch a stable cell may be built against."""
        if self.torch_floor is None:
            return None
        if self.build_torch is None:
            return self.torch_floor
        return max(self.torch_floor, self.build_torch, key=Version)


class RecipeVersion(Frozen):
    version: str
    source: Source
    kernels: tuple[str, ...] = Field(description="kernel spec names under kernels/")
    python_packages: tuple[str, ...] = Field(description="top-level Python packages shipped in the wheel")
    requires: tuple[str, ...] = ()
    constraints: Constraints = Constraints()
    stable_abi: StableAbi | None = None
    notes: str = ""

    @property
    def stable_floor(self) -> str | None:
        """The torch floor of the version's stable track; None when it has none."""
        return self.stable_abi.torch_floor if self.stable_abi and self.stable_abi.ported else None

    def stable_reason(self) -> str:
        """Why the version has no stable track ('' when it has one)."""
        if self.stable_abi is None:
            return f"no stable-ABI port of {self.version} (its recipe entry has no stable_abi block)"
        return self.stable_abi.blocked

    def kernels_for(self, abi: AbiTrack) -> tuple[str, ...]:
        if abi == "full":
            return self.kernels
        if self.stable_abi is None or not self.stable_abi.ported:
            raise UserError(f"version {self.version} cannot be built on the stable-ABI track: {self.stable_reason()}")
        return self.stable_abi.kernels

    @field_validator("version")
    @classmethod
    def _pep440(cls, v: str) -> str:
        try:
            Version(v)
        except InvalidVersion:
            raise ValueError("not a PEP 440 version") from None
        return v


class Recipe(Frozen):
    name: str
    dist: str = Field(description="wheel distribution name, e.g. causal_conv1d")
    summary: str
    homepage: str
    license: str = "BSD-3-Clause"
    local_prefix: str = Field("", description="prefix for the local version label, e.g. 'vim' for forks")
    versions: tuple[RecipeVersion, ...]

    @cached_property
    def by_version(self) -> dict[str, RecipeVersion]:
        return {v.version: v for v in self.versions}

    def get(self, version: str) -> RecipeVersion:
        found = self.by_version.get(version)
        if found is None:
            known = list(self.by_version)
            raise UserError(
                f'unknown version "{version}" of {self.name}{did_you_mean(version, known)}; '
                f"known: {allowed_list(known)}"
            )
        return found

    def matching(self, spec: SpecifierSet) -> list[RecipeVersion]:
        return [v for v in self.versions if Version(v.version) in spec]


def load_recipe(path: Path) -> Recipe:
    recipe: Recipe = yamlsrc.validate(Recipe, yamlsrc.load(path))
    if canonicalize_name(recipe.name) != canonicalize_name(path.stem):
        raise UserError(f'recipe name "{recipe.name}" does not match its file name {path.name}')
    return recipe


def load_recipes(recipes_dir: Path) -> dict[str, Recipe]:
    if not recipes_dir.is_dir():
        raise UserError(f"recipes directory not found: {recipes_dir}")
    recipes = {}
    for path in sorted(recipes_dir.glob("*.yaml")):
        recipe = load_recipe(path)
        recipes[recipe.name] = recipe
    return recipes

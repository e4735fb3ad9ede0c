"""matrix.yaml's schema: the file's sections as frozen models, each value checked where it is read."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

from packaging.version import Version
from pydantic import ConfigDict, Field, field_validator

from buildtool.errors import allowed_list, did_you_mean
from buildtool.model import Frozen
from buildtool.spec.abitrack import AbiTrack
from buildtool.spec.compat import PLATFORMS

if TYPE_CHECKING:
    from buildtool.spec.matrix.cell import Cell

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

"""Wheel file names with upstream's local label: `+cu{XY}torch{A.B}cxx11abi{TRUE|FALSE}`.

The label goes into the file name AND into METADATA's Version (upstream puts it only in the name, so
pip refuses their wheels from an index). Upstream's own wheels use the CUDA major only (`cu12`); both
forms parse. Stable-ABI wheels (one per CUDA major, every torch >= the floor) carry `+cu{X}stable`: the
CUDA major and the track, no torch minor (`causal_conv1d-1.7.0+cu13stable-cp310-abi3-linux_x86_64.whl`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from buildtool.errors import UserError
from buildtool.versions import cuda_from_tag, cuda_major

_LABEL = re.compile(
    r"^(?:(?P<prefix>[a-z][a-z0-9]*)\.)?cu(?P<cuda>\d{2,4})torch(?P<torch>\d+\.\d+)cxx11abi(?P<abi>true|false)$",
    re.IGNORECASE,
)
_STABLE_LABEL = re.compile(r"^(?:(?P<prefix>[a-z][a-z0-9]*)\.)?cu(?P<cuda>\d{2})stable$", re.IGNORECASE)


@dataclass(frozen=True)
class LocalLabel:
    """Full ABI: CUDA, torch minor and C++11 ABI. Stable ABI (``stable=True``): the CUDA major only;
    ``torch`` and ``cxx11_abi`` are None (the wheel serves every torch >= its Requires-Dist floor)."""

    cuda: str
    torch: str | None
    cxx11_abi: bool | None
    prefix: str | None = None
    stable: bool = False

    def __str__(self) -> str:
        pre = f"{self.prefix}." if self.prefix else ""
        if self.stable:
            return f"{pre}cu{self.cuda.split('.')[0]}stable"
        return f"{pre}cu{self.cuda.replace('.', '')}torch{self.torch}cxx11abi{'TRUE' if self.cxx11_abi else 'FALSE'}"

    @classmethod
    def parse(cls, text: str) -> LocalLabel:
        s = _STABLE_LABEL.match(text)
        if s:
            return cls(cuda=str(int(s["cuda"])), torch=None, cxx11_abi=None,
                       prefix=s["prefix"].lower() if s["prefix"] else None, stable=True)
        m = _LABEL.match(text)
        if not m:
            raise ValueError(f'local label "{text}" is not like cu124torch2.4cxx11abiFALSE or cu13stable')
        return cls(
            cuda=cuda_from_tag(m["cuda"]), torch=m["torch"], cxx11_abi=m["abi"].upper() == "TRUE",
            prefix=m["prefix"].lower() if m["prefix"] else None,
        )

    @property
    def cuda_major(self) -> int:
        return int(cuda_major(self.cuda))


@dataclass(frozen=True)
class WheelName:
    dist: str             # normalised for file names: lowercase, '-' -> '_'
    version: str          # public version, e.g. 1.7.0
    label: LocalLabel | None
    python_tag: str
    abi_tag: str
    platform_tag: str
    build_tag: str | None = None

    @property
    def full_version(self) -> str:
        return f"{self.version}+{self.label}" if self.label else self.version

    @property
    def filename(self) -> str:
        parts = [self.dist, self.full_version]
        if self.build_tag:
            parts.append(self.build_tag)
        parts += [self.python_tag, self.abi_tag, self.platform_tag]
        return "-".join(parts) + ".whl"

    @property
    def project(self) -> str:
        return canonicalize_name(self.dist)

    def __str__(self) -> str:
        return self.filename

    @classmethod
    def parse(cls, filename: str) -> WheelName:
        name = filename.rsplit("/", 1)[-1]
        if not name.endswith(".whl"):
            raise UserError(f"not a wheel file name: {name}")
        parts = name[:-4].split("-")
        if len(parts) not in (5, 6):
            raise UserError(f"wheel file name must have 5 or 6 dash-separated parts: {name}")
        dist, version, *rest = parts
        build = rest[0] if len(parts) == 6 else None
        py, abi, plat = rest[-3:]
        try:
            v = Version(version)
        except InvalidVersion:
            raise UserError(f"invalid version {version!r} in wheel name {name}") from None
        public, _, local = version.partition("+")
        label = None
        if v.local is not None:
            try:
                label = LocalLabel.parse(local)
            except ValueError as exc:
                raise UserError(f"{name}: {exc}") from None
        return cls(dist=dist, version=public, label=label, python_tag=py, abi_tag=abi, platform_tag=plat, build_tag=build)

    @classmethod
    def for_cell(cls, dist: str, version: str, *, cuda: str, torch_minor: str, cxx11_abi: bool,
                 python_tag: str, platform_tag: str, prefix: str | None = None, stable: bool = False) -> WheelName:
        """Full ABI: ``cp311-cp311`` and the full label; ``stable``: ``<python_tag>-abi3`` and ``cu<major>stable``."""
        label = LocalLabel(cuda=cuda_major(cuda), torch=None, cxx11_abi=None, prefix=prefix or None, stable=True) \
            if stable else LocalLabel(cuda=cuda, torch=torch_minor, cxx11_abi=cxx11_abi, prefix=prefix or None)
        return cls(
            dist=re.sub(r"[-_.]+", "_", dist).lower(), version=version, label=label,
            python_tag=python_tag, abi_tag="abi3" if stable else python_tag, platform_tag=platform_tag,
        )

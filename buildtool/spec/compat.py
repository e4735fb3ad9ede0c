"""Compatibility knowledge (torch x CUDA x Python x platform), loaded from data/compat.yaml."""

from __future__ import annotations

from functools import cache
from typing import Literal

from packaging.version import Version
from pydantic import Field, field_validator

from buildtool.model import Frozen
from buildtool.spec import yamlsrc
from buildtool.versions import torch_minor

PlatformName = Literal["linux-x86_64", "linux-aarch64", "windows-x86_64"]
PLATFORMS: tuple[str, ...] = ("linux-x86_64", "linux-aarch64", "windows-x86_64")


class TorchInfo(Frozen):
    release: str
    cuda: tuple[str, ...]
    python: tuple[str, ...]
    pypi_default_cuda: str
    platforms: tuple[str, ...]
    aarch64_cuda: tuple[str, ...] | None = None
    cxx11_abi: bool | dict[str, bool]
    cxx_std: str | dict[str, str]
    triton: str | None  # the newest release's Linux pin
    #: release -> the triton specifier of its METADATA (Linux), the evidence behind ``triton``
    triton_by_release: dict[str, str] = Field(default_factory=dict)
    triton_windows: str | None
    glibc: str

    def abi_for(self, platform: str, cuda: str) -> bool:
        """The C++11 ABI torch was built with; derived, never an axis (Windows has no such ABI)."""
        if platform.startswith("windows"):
            return False
        if isinstance(self.cxx11_abi, bool):
            return self.cxx11_abi
        return self.cxx11_abi.get(cuda, False)

    def std_for(self, platform: str) -> str:
        if isinstance(self.cxx_std, str):
            return self.cxx_std
        return self.cxx_std.get(platform, self.cxx_std["default"])

    def cuda_for(self, platform: str) -> tuple[str, ...]:
        if platform == "linux-aarch64" and self.aarch64_cuda is not None:
            return self.aarch64_cuda
        return self.cuda


class CudaInfo(Frozen):
    max_gcc: int
    min_arch: str
    max_arch: str
    max_msvc: str
    msvc_needs_zc_preprocessor: bool = False

    def can_compile(self, arch: str) -> bool:
        return Version(self.min_arch) <= Version(arch) <= Version(self.max_arch)


class PlatformInfo(Frozen):
    os: Literal["linux", "windows"]
    machine: str
    wheel_tag: str
    repaired_tag: str


class Compat(Frozen):
    torch: dict[str, TorchInfo]
    cuda: dict[str, CudaInfo]
    platforms: dict[str, PlatformInfo]

    @field_validator("torch")
    @classmethod
    def _sorted(cls, v: dict[str, TorchInfo]) -> dict[str, TorchInfo]:
        return dict(sorted(v.items(), key=lambda kv: Version(kv[0])))

    def torch_info(self, torch: str) -> TorchInfo | None:
        return self.torch.get(torch_minor(torch))

    def triton_requirement(self, torch: str, platform: str) -> tuple[str, str] | None:
        """(distribution, specifier) of the triton matched to ``torch`` on ``platform``: triton's minor series,
        which every release of the torch minor accepts (their METADATA pin different patch releases)."""
        info = self.torch_info(torch)
        if info is None:
            return None
        if platform.startswith("windows"):
            if info.triton_windows is None:
                return None
            return ("triton-windows", f"=={info.triton_windows}.*")
        if info.triton is None:
            return None
        pin = Version(info.triton)
        return ("triton", f"=={pin.major}.{pin.minor}.*")

    def violations(self, *, platform: str, python: str, cuda: str, torch: str) -> list[str]:
        """Every reason this combination cannot exist as an official torch build (empty = legal)."""
        reasons: list[str] = []
        info = self.torch_info(torch)
        if info is None:
            return [f"torch {torch} is not in the compatibility table (known: {', '.join(self.torch)})"]
        if info.release != torch and torch_minor(torch) != torch:
            reasons.append(f"torch {torch_minor(torch)} is built from release {info.release}, not {torch}")
        if platform not in info.platforms:
            reasons.append(f"torch {torch} has no official {platform} wheels (official: {', '.join(info.platforms)})")
        cudas = info.cuda_for(platform)
        if cuda not in cudas:
            reasons.append(f"torch {torch} has no CUDA {cuda} build for {platform} (official: {', '.join(cudas)})")
        if python not in info.python:
            reasons.append(f"torch {torch} has no wheels for Python {python} (official: {', '.join(info.python)})")
        if cuda not in self.cuda:
            reasons.append(f"CUDA {cuda} is not in the compatibility table (known: {', '.join(self.cuda)})")
        return reasons


@cache
def load_compat() -> Compat:
    return yamlsrc.load_packaged(Compat, "compat.yaml")

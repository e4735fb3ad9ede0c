"""Cell: one wheel to build, the product of matrix.yaml's expansion that every later stage takes."""

from __future__ import annotations

import re
from typing import Any

from buildtool.model import Frozen
from buildtool.spec.abitrack import AbiTrack, limited_api_python_tag
from buildtool.spec.compat import Compat
from buildtool.versions import cuda_major, torch_minor


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


def new_cell(
    compat: Compat, *, platform: str, python: str, cuda: str, torch: str, package: str, version: str,
    archs: tuple[str, ...], ptx: bool, abi: AbiTrack = "full", torch_floor: str | None = None,
    tags: tuple[str, ...] = (), cxx11_abi: bool | None = None,
) -> Cell:
    """The one cell factory (the matrix's expansion and the PEP 517 backend's running interpreter): the torch
    release, C++ standard, C++11 ABI (``cxx11_abi`` when the build env's torch says) and triton requirement
    come from the compatibility data. ``torch`` must be in it (the callers check first, with their own errors)."""
    info = compat.torch_info(torch)
    if info is None:
        raise ValueError(f"torch {torch} is not in the compatibility data")
    req = compat.triton_requirement(torch, platform)
    # stable track: one wheel for every torch >= the floor, so triton by OS marker, never pinned to one torch's
    triton = (req[0] if abi == "stable" else f"{req[0]}{req[1]}") if req else None
    return Cell(
        platform=platform, python=python, cuda=cuda, torch=torch if torch.count(".") == 2 else info.release,
        package=package, version=version,
        cxx11_abi=info.abi_for(platform, cuda) if cxx11_abi is None else cxx11_abi,
        cxx_std=info.std_for(platform), archs=archs, ptx=ptx, triton=triton, tags=tags, abi=abi,
        torch_floor=torch_floor,
    )

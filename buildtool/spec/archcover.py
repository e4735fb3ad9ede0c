"""Which code a GPU runs from a wheel's device code, and the fewest SASS targets that cover a set of GPUs.

CUDA's binary compatibility: SASS built for X.y runs on X.z for z >= y (8.0 code on 8.6, 8.7, 8.9; 10.0 on
10.3; 12.0 on 12.1), never across majors. Arch-specific targets (9.0a, 10.0a, ...) and family targets
(10.0f) run only where they were built for here (conservative). PTX is compiled by the driver at first load
(JIT) for any GPU of its compute capability or newer. Pure functions; the GPU names are data
(``buildtool/data/gpus.yaml``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache
from typing import Literal

from packaging.version import Version
from pydantic import Field

from buildtool.model import Frozen
from buildtool.spec import yamlsrc

CodeKind = Literal["native", "compatible", "ptx"]


class Gpu(Frozen):
    names: str = Field(description="examples of GPUs with this compute capability")


class GpuTable(Frozen):
    gpus: dict[str, Gpu]


class Code(Frozen):
    """What one GPU runs: the target (sm_80, compute_120) and how."""

    gpu: str
    kind: CodeKind
    target: str

    def describe(self) -> str:
        how = {"native": "native SASS", "compatible": "compatible SASS (same major, older minor)",
               "ptx": "PTX, JIT-compiled by the driver at first load"}[self.kind]
        return f"{self.target}: {how}"


def _plain(arch: str) -> Version:
    return Version(arch.rstrip("af"))


def _specific(arch: str) -> bool:
    return arch.endswith(("a", "f"))


def code_for(gpu: str, archs: Sequence[str], ptx: str | None) -> Code | None:
    """The code a GPU of compute capability ``gpu`` runs from SASS ``archs`` and PTX of ``ptx``: the best
    of native SASS, then the newest compatible SASS, then PTX; None when nothing runs on it."""
    g = Version(gpu)
    native = [a for a in archs if _plain(a) == g]
    if native:
        return Code(gpu=gpu, kind="native", target=_target("sm", native[0]))
    compatible = [a for a in archs if not _specific(a) and _plain(a).major == g.major and _plain(a).minor < g.minor]
    if compatible:
        return Code(gpu=gpu, kind="compatible", target=_target("sm", max(compatible, key=_plain)))
    if ptx is not None and _plain(ptx) <= g:
        return Code(gpu=gpu, kind="ptx", target=_target("compute", ptx))
    return None


def _target(kind: str, arch: str) -> str:
    return f"{kind}_{arch.replace('.', '')}"


def fewest_sass(gpus: Iterable[str]) -> tuple[str, ...]:
    """The fewest SASS targets that run on every GPU listed: the lowest minor of each major."""
    lowest: dict[int, Version] = {}
    for gpu in gpus:
        v = Version(gpu)
        if v.major not in lowest or v < lowest[v.major]:
            lowest[v.major] = v
    return tuple(f"{v.major}.{v.minor}" for _, v in sorted(lowest.items()))


def uncovered(gpus: Iterable[str], archs: Sequence[str], ptx: str | None) -> list[str]:
    return [g for g in gpus if code_for(g, archs, ptx) is None]


@cache
def load_gpus() -> GpuTable:
    return yamlsrc.load_packaged(GpuTable, "gpus.yaml")


def gpu_names(gpu: str) -> str:
    info = load_gpus().gpus.get(gpu)
    return info.names if info else "GPUs of compute capability " + gpu

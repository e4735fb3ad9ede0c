"""Verification policy and tolerances, loaded from buildtool/data/{verify,tolerances}.yaml."""

from __future__ import annotations

import re
from functools import cache
from typing import Literal

from buildtool.model import Frozen
from buildtool.spec import yamlsrc


class Tolerance(Frozen):
    rtol: float
    atol: float


class Tolerances(Frozen):
    fwd: dict[str, Tolerance]
    bwd: dict[str, Tolerance]
    smoke: dict[str, Tolerance]

    def get(self, kind: Literal["fwd", "bwd", "smoke"], dtype: str) -> Tolerance:
        table: dict[str, Tolerance] = getattr(self, kind)
        name = dtype.removeprefix("torch.")
        if name not in table:
            raise KeyError(f"no {kind} tolerance for dtype {name} in tolerances.yaml (has: {', '.join(table)})")
        return table[name]


class GlibcPolicy(Frozen):
    GLIBC: str
    GLIBCXX: str
    CXXABI: str


class Pairing(Frozen):
    mamba: str
    causal_conv1d: str


class ScanBench(Frozen):
    name: str
    batch: int
    dim: int
    dstate: int
    seqlen: int
    dtype: str
    z: bool
    delta_softplus: bool
    baseline_fwd_ms: float
    baseline_fwd_bwd_ms: float


class VerifyPolicy(Frozen):
    manylinux: dict[str, GlibcPolicy]
    manylinux_aliases: dict[str, str]
    system_libs: tuple[str, ...]
    torch_libs: tuple[str, ...]
    cuda_libs: tuple[str, ...]
    forbidden_bundled: tuple[str, ...]
    pairing: tuple[Pairing, ...]
    scan_bench: tuple[ScanBench, ...]

    def glibc_for(self, platform_tag: str) -> tuple[str, GlibcPolicy | None]:
        """('2.28', policy) for manylinux_2_28_x86_64; ('', None) for tags that promise nothing (linux_x86_64)."""
        m = re.match(r"^manylinux_(\d+)_(\d+)_", platform_tag)
        version = f"{m[1]}.{m[2]}" if m else ""
        for alias, v in self.manylinux_aliases.items():
            if platform_tag.startswith(alias + "_"):
                version = v
        if not version:
            return "", None
        return version, self.manylinux.get(version)

    def is_torch_lib(self, name: str) -> bool:
        return any(re.search(p, name) for p in self.torch_libs)

    def is_cuda_lib(self, name: str, cuda_major: int | None) -> bool:
        majors = [str(cuda_major)] if cuda_major is not None else [r"\d+"]
        return any(re.search(p.replace("{major}", m), name) for p in self.cuda_libs for m in majors)

    def is_forbidden(self, path: str) -> bool:
        return any(re.search(p, path) for p in self.forbidden_bundled)


@cache
def load_tolerances() -> Tolerances:
    return yamlsrc.load_packaged(Tolerances, "tolerances.yaml")


@cache
def load_policy() -> VerifyPolicy:
    return yamlsrc.load_packaged(VerifyPolicy, "verify.yaml")

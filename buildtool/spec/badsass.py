"""Known-miscompiled SASS (buildtool/data/bad_sass.yaml): which (package, version, arch, nvcc) a wheel must not
carry, and what replaces it.

    archs, ptx, applied = safe_archs("causal-conv1d", "1.7.0", ("9.0", "10.0", "10.3"), True, "13.0.88")
    # -> ("9.0", "10.0"), True, (rule,)   the build logs rule.why / rule.upstream
    affected("causal-conv1d", "1.7.0", ("10.3",), "13.0.88")  # -> rule: doctor warns on that GPU
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Literal

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import field_validator

from buildtool.model import Frozen
from buildtool.spec import yamlsrc


class BadSass(Frozen):
    package: str
    versions: str
    arch: str
    nvcc: str
    instead: str
    kernels: tuple[str, ...]
    why: str
    upstream: str

    @field_validator("versions", "nvcc")
    @classmethod
    def _spec(cls, v: str) -> str:
        SpecifierSet(v)
        return v

    def applies(self, package: str, version: str, nvcc: str | None) -> bool:
        """True for this package version built by an nvcc in the range (or by an unknown nvcc: None)."""
        if package != self.package or Version(version) not in SpecifierSet(self.versions):
            return False
        if nvcc is None:
            return True
        try:
            return Version(nvcc) in SpecifierSet(self.nvcc)
        except InvalidVersion:
            return True

    @property
    def text(self) -> str:
        return f"{' '.join(self.why.split())} ({self.upstream})"


class BadSassFile(Frozen):
    version: Literal[1]
    rules: tuple[BadSass, ...]


@cache
def load_rules() -> tuple[BadSass, ...]:
    return yamlsrc.load_packaged(BadSassFile, "bad_sass.yaml").rules


def safe_archs(package: str, version: str, archs: Sequence[str], ptx: bool, nvcc: str,
               rules: Sequence[BadSass] | None = None) -> tuple[tuple[str, ...], bool, tuple[BadSass, ...]]:
    """``archs`` without the SASS ``nvcc`` miscompiles for this package (each replaced by its rule's `instead`
    arch, duplicates dropped, order kept); PTX stays on, for the newest arch that remains."""
    out: list[str] = []
    applied: list[BadSass] = []
    for arch in archs:
        rule = next((r for r in (load_rules() if rules is None else rules)
                     if r.arch == arch and r.applies(package, version, nvcc)), None)
        if rule is not None:
            applied.append(rule)
            arch = rule.instead
        if arch not in out:
            out.append(arch)
    return tuple(out), ptx, tuple(applied)


def affected(package: str, version: str, archs: Sequence[str], nvcc: str | None,
             rules: Sequence[BadSass] | None = None) -> BadSass | None:
    """The rule an installed wheel breaks (it carries the bad SASS and came from an nvcc in range), or None."""
    return next((r for r in (load_rules() if rules is None else rules)
                 if r.arch in archs and r.applies(package, version, nvcc)), None)

"""Known-bad dependency pairs (data/known_bad.yaml): which versions of a dependency break a package's import.

Pure functions over that data: which declared requirement lists fail to exclude a broken range, and which
installed (package, dependency) versions are a known break. The recipes, `doctor` and `verify` use them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from buildtool.model import Frozen
from buildtool.spec import yamlsrc


class BrokenRange(Frozen):
    versions: str
    error: str


class KnownBadPair(Frozen):
    package: str
    versions: str                 # the package versions this applies to
    dependency: str
    works: str                    # the bound a requirement list must apply to the dependency
    newest_working: str
    broken: tuple[BrokenRange, ...]
    why: str
    required_by: str
    upstream: str
    measured: str

    def applies_to(self, package_version: str) -> bool:
        try:
            return SpecifierSet(self.versions).contains(Version(package_version), prereleases=True)
        except InvalidVersion:
            return False

    def broken_range(self, dependency_version: str) -> BrokenRange | None:
        try:
            v = Version(dependency_version)
        except InvalidVersion:
            return None
        return next((b for b in self.broken if SpecifierSet(b.versions).contains(v, prereleases=True)), None)


class KnownBad(Frozen):
    version: int
    pairs: tuple[KnownBadPair, ...]


@cache
def load_known_bad() -> KnownBad:
    return yamlsrc.load_packaged(KnownBad, "known_bad.yaml")


def _pinned_version(req: Requirement) -> str | None:
    """The one version an `==X` requirement allows (what a recipe pins), else None."""
    specs = list(req.specifier)
    return specs[0].version if len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version else None


def unbounded(requires: Iterable[str], pairs: Iterable[KnownBadPair] | None = None) -> list[str]:
    """For a list of declared requirements: each known-bad pair it leaves open (the package is required, and the
    dependency is not bounded so that every broken version is excluded). Empty when the list is safe."""
    reqs: dict[str, list[Requirement]] = {}
    for text in requires:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        reqs.setdefault(canonicalize_name(req.name), []).append(req)
    problems = []
    for pair in pairs if pairs is not None else load_known_bad().pairs:
        for req in reqs.get(canonicalize_name(pair.package), []):
            pinned = _pinned_version(req)
            if pinned is not None and not pair.applies_to(pinned):
                continue
            bounds = [r.specifier for r in reqs.get(canonicalize_name(pair.dependency), [])]
            allowed = SpecifierSet(",".join(str(b) for b in bounds)) if bounds else SpecifierSet()
            leaks = [b for b in pair.broken if _overlaps(allowed, b.versions)]
            if leaks:
                problems.append(f"{req} without a bound on {pair.dependency} that excludes {leaks[0].versions} "
                                f"({leaks[0].error[:80]}); bound it {pair.dependency}{pair.works} "
                                f"(known_bad.yaml, {pair.upstream})")
    return problems


def _overlaps(allowed: SpecifierSet, broken: str) -> bool:
    """Does ``allowed`` admit a version in ``broken``? Checked on the versions that decide it: the bounds
    named in either specifier and just above them (enough for ranges of ==, <=, <, >=, > bounds)."""
    probes: set[Version] = set()
    for spec in (*allowed, *SpecifierSet(broken)):
        v = Version(spec.version.rstrip(".*"))
        probes |= {v, Version(f"{v.base_version}.post999"), Version(f"{v.major}.{v.minor}.{v.micro + 1}"),
                   Version(f"{v.major}.{v.minor + 1}.0"), Version(f"{v.major + 1}.0.0")}
    bad = SpecifierSet(broken)
    return any(bad.contains(v, prereleases=True) and allowed.contains(v, prereleases=True) for v in probes)


def installed_breaks(versions: Mapping[str, str], pairs: Iterable[KnownBadPair] | None = None) -> list[str]:
    """Known breaks among installed distributions (canonical name -> version)."""
    found = []
    for pair in pairs if pairs is not None else load_known_bad().pairs:
        pkg = versions.get(canonicalize_name(pair.package))
        dep = versions.get(canonicalize_name(pair.dependency))
        if pkg is None or dep is None or not pair.applies_to(pkg):
            continue
        broken = pair.broken_range(dep)
        if broken:
            found.append(f"{pair.package} {pkg} with {pair.dependency} {dep}: `import {pair.package}` raises "
                         f"{broken.error[:90]}...; {pair.dependency}{pair.works} works (newest {pair.newest_working}, "
                         f"{pair.upstream})")
    return found

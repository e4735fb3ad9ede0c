"""What a loaded matrix holds (the file, its source lines, the recipes, the compatibility data) and the
look-ups every later step makes against them: package references and known axis values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from buildtool.errors import UserError, allowed_list, did_you_mean
from buildtool.spec import yamlsrc
from buildtool.spec.compat import Compat
from buildtool.spec.matrix.schema import MatrixFile
from buildtool.spec.recipe import Recipe
from buildtool.versions import torch_minor


@dataclass(frozen=True)
class MatrixBase:
    spec: MatrixFile
    doc: yamlsrc.Document
    recipes: Mapping[str, Recipe]
    compat: Compat
    _known_ok: set[tuple[str, str, bool]] = field(default_factory=set, compare=False, repr=False)

    def _known_values(self, axis: str) -> list[str]:
        if axis == "cuda":
            return list(self.compat.cuda)
        if axis == "torch":
            return [info.release for info in self.compat.torch.values()]
        pythons = {py for info in self.compat.torch.values() for py in info.python}
        return sorted(pythons, key=Version)

    def check_known(self, axis: str, value: str, path: Sequence[str | int], *, minor_ok: bool = True) -> None:
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
                    f'{field_name}: unknown torch "{value}" ({why}){version_hint(value, known)}; '
                    f"allowed: {allowed_list(known, limit=20)}",
                    location=self.doc.location(path),
                    hint="add the release to buildtool/data/compat.yaml if it is new",
                )
            self._known_ok.add((axis, value, minor_ok))
            return
        if value not in known:
            raise UserError(
                f'{field_name}: unknown {axis} "{value}"{version_hint(value, known)}; '
                f"allowed: {allowed_list(known, limit=20)}",
                location=self.doc.location(path),
            )
        self._known_ok.add((axis, value, minor_ok))

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
                f'unknown version "{req.specifier}" of {req.name}{version_hint(wanted, known)}; '
                f"known: {allowed_list(known)}",
                location=loc,
            )
        return [(recipe.name, v.version) for v in found]


def version_hint(value: str, known: Sequence[str]) -> str:
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

"""The references matrix.yaml makes, checked at load: package versions, axis values, the values exclude
rules and profiles name, and every CUDA version's arch policy (a typo would silently produce no cells)."""

from __future__ import annotations

from collections.abc import Sequence

from buildtool.errors import UserError, allowed_list, did_you_mean
from buildtool.spec import archcover
from buildtool.spec.matrix.base import MatrixBase, version_hint
from buildtool.spec.matrix.rules import FILTER_KEYS
from buildtool.spec.matrix.schema import Selector


def check_references(m: MatrixBase) -> None:
    seen: dict[tuple[str, str], int] = {}
    for i, ref in enumerate(m.spec.packages):
        for pv in m.resolve_packages(ref, ("packages", i)):
            if pv in seen:
                raise UserError(
                    f'packages[{i}]: "{ref}" selects {pv[0]} {pv[1]} again (already selected by '
                    f'packages[{seen[pv]}] "{m.spec.packages[seen[pv]]}"): the cells would be duplicates',
                    location=m.doc.location(("packages", i)),
                    hint="list each package version once",
                )
            seen[pv] = i
    axes = m.spec.axes
    for name in ("python", "cuda", "torch"):
        for k, value in enumerate(getattr(axes, name)):
            m.check_known(name, value, ("axes", name, k))
    for i, entry in enumerate(m.spec.include):
        for j, ref in enumerate(entry.packages):
            m.resolve_packages(ref, ("include", i, "packages", j))
        for name in ("python", "cuda", "torch"):
            for k, value in enumerate(getattr(entry, name)):
                m.check_known(name, value, ("include", i, name, k))
    known_tags = sorted({t for entry in m.spec.include for t in entry.tags})
    selectors: dict[Selector, tuple[str | int, ...]] = {}  # distinct rules only: 1 M copies check once
    for i, sel in enumerate(m.spec.exclude):
        if all(getattr(sel, axis) is None for axis in FILTER_KEYS):
            raise UserError(
                f"exclude[{i}]: an empty rule matches every cell (it would exclude the whole matrix)",
                location=m.doc.location(("exclude", i)),
                hint=f"name at least one of {', '.join(FILTER_KEYS)}, e.g. {{platform: windows-x86_64}}",
            )
        selectors.setdefault(sel, ("exclude", i))
    for n, prof in m.spec.profiles.items():
        selectors.setdefault(prof.select, ("profiles", n, "select"))
    for k, sel in enumerate(m.spec.stable_abi.keep_full):
        selectors.setdefault(sel, ("stable_abi", "keep_full", k))
    for sel, path in selectors.items():
        _check_selector(m, sel, path, known_tags)
    for cuda in m.spec.axes.cuda:
        if cuda not in m.spec.arch_policy:
            raise UserError(
                f"axes.cuda lists {cuda} but arch_policy has no entry for it; "
                f"arch_policy has: {allowed_list(m.spec.arch_policy)}",
                location=m.doc.location(("axes", "cuda", m.spec.axes.cuda.index(cuda))),
            )
    for cuda, policy in m.spec.arch_policy.items():
        info = m.compat.cuda.get(cuda)
        if info is None:
            raise UserError(
                f'arch_policy: unknown CUDA "{cuda}"{did_you_mean(cuda, m.compat.cuda)}; '
                f"known: {allowed_list(m.compat.cuda)}",
                location=m.doc.location(("arch_policy", cuda), key=True),
            )
        for k, arch in enumerate(policy.archs):
            if not info.can_compile(arch.rstrip("a")):
                raise UserError(
                    f"arch_policy.{cuda}.archs: CUDA {cuda} cannot compile sm_{arch.replace('.', '')} "
                    f"(supported: {info.min_arch} to {info.max_arch})",
                    location=m.doc.location(("arch_policy", cuda, "archs", k)),
                )
        for k, gpu in enumerate(policy.runs_on):
            if archcover.code_for(gpu, policy.archs, policy.ptx_arch) is None:
                raise UserError(
                    f"arch_policy.{cuda}.runs_on: no code in archs {', '.join(policy.archs)}"
                    f"{' +PTX' if policy.ptx else ''} runs on {gpu} ({archcover.gpu_names(gpu)}); SASS X.y runs "
                    f"only on X.z with z >= y",
                    location=m.doc.location(("arch_policy", cuda, "runs_on", k)),
                    hint=f"the fewest SASS targets for runs_on are {', '.join(archcover.fewest_sass(policy.runs_on))}",
                )


def _check_selector(m: MatrixBase, sel: Selector, path: tuple[str | int, ...], known_tags: Sequence[str]) -> None:
    """Every value an exclude rule or profile names must exist, or the rule silently matches nothing."""
    for axis in ("python", "cuda", "torch"):
        for k, value in enumerate(getattr(sel, axis) or ()):
            m.check_known(axis, value, (*path, axis, k))
    for k, ref in enumerate(sel.package or ()):
        loc_path = (*path, "package", k)
        name, sep, version = ref.partition("==")
        recipe = m.recipes.get(name)
        if recipe is None:
            raise UserError(
                f'{".".join(str(p) for p in (*path, "package"))}: unknown package "{name}"'
                f"{did_you_mean(name, m.recipes)}; known: {allowed_list(m.recipes)}",
                location=m.doc.location(loc_path),
            )
        if sep and version not in recipe.by_version:
            known = list(recipe.by_version)
            raise UserError(
                f'{".".join(str(p) for p in (*path, "package"))}: unknown version "{version}" of {name}'
                f"{version_hint(version, known)}; known: {allowed_list(known)}",
                location=m.doc.location(loc_path),
            )
    for k, tag in enumerate(sel.tags or ()):
        if tag not in known_tags:
            raise UserError(
                f'{".".join(str(p) for p in (*path, "tags"))}: unknown tag "{tag}"'
                f"{did_you_mean(tag, known_tags)}; tags used by include entries: "
                f"{allowed_list(known_tags) or '(none)'}",
                location=m.doc.location((*path, "tags", k)),
            )

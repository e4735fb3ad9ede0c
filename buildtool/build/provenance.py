"""Filling the provenance a cell records in its wheel (the model: buildtool.wheel.provenance) from the cell,
the prepared tree, the toolchain and the build env; and whether an earlier build can be resumed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from buildtool import __version__
from buildtool.model import Frozen
from buildtool.source.patching import AppliedPatch
from buildtool.source.prepare import TreeProvenance
from buildtool.spec.matrix import Cell
from buildtool.wheel.provenance import SCHEMA_VERSION, CellRecord, ModuleRecord, Provenance, SourceRecord

if TYPE_CHECKING:
    from buildtool.build.buildenv import BuildEnv
    from buildtool.toolchain.models import Toolchain


# ---------------------------------------------------------------- provenance
def _portable(value: Any, roots: Mapping[str, str]) -> Any:
    """Replace machine-specific prefixes (the tree, torch, CUDA) with symbolic names such as {torch}, recursively."""
    if isinstance(value, str):
        for symbol, root in roots.items():
            if root and root in value:
                value = value.replace(root, symbol)
        return value
    if isinstance(value, list | tuple):
        return [_portable(v, roots) for v in value]
    if isinstance(value, dict):
        return {k: _portable(v, roots) for k, v in value.items()}
    return value


def module_flags(resolved: Sequence[Any]) -> list[dict[str, Any]]:
    """Per module: name, flags per translation unit language, link flags (from compile.units.ResolvedKernel)."""
    modules = []
    for kernel in resolved:
        by_lang: dict[str, list[str]] = {}
        for unit in kernel.units:
            by_lang.setdefault(unit.language, [])
            for flag in unit.flags:
                if flag not in by_lang[unit.language]:
                    by_lang[unit.language].append(flag)
        modules.append({
            "module": kernel.module, "spec": kernel.spec_name, "flags": by_lang,
            "link_flags": list(kernel.link_flags), "units": sorted(u.name for u in kernel.units),
        })
    return modules


def make_provenance(*, cell: Cell, tree_provenance: TreeProvenance, toolchain: Toolchain, env: BuildEnv,
                    modules: list[dict[str, Any]], tree_root: Path, min_driver_cuda: str | None = None) -> Provenance:
    """The wheel's provenance (buildtool.wheel.provenance owns the schema), with machine paths made symbolic."""
    roots = {"{tree}": str(tree_root), "{cuda_home}": str(toolchain.cuda_home)}
    return Provenance.model_validate(_portable({
        "schema_version": SCHEMA_VERSION,
        "buildtool_version": __version__,
        "cell": cell.summary(),
        "source": stable_source(tree_provenance).model_dump(mode="json"),
        "patches": [p.model_dump(mode="json") for p in tree_provenance.patches],
        "toolchain": {
            "provider": toolchain.provider, "cuda_version": toolchain.cuda_version,
            "host_compiler": {"kind": toolchain.host.kind, "version": toolchain.host.version},
        },
        "build_env": _env_summary(env),
        "archs": cell.arch_list,
        "min_driver_cuda": min_driver_cuda,
        "modules": modules,
        "stable_abi": stable_abi_provenance(cell, tree_provenance) if cell.abi == "stable" else None,
    }, roots))


def stable_abi_provenance(cell: Cell, tree_provenance: TreeProvenance) -> dict[str, Any]:
    """What a stable-ABI wheel promises and how: the floor, the TORCH_TARGET_VERSION it was compiled with,
    the torch whose headers it was compiled against, the limited API and the shims it installs."""
    from buildtool.spec.abitrack import LIMITED_API_HEX, torch_target_version

    floor = cell.torch_floor or ""
    return {"track": "stable", "torch_floor": floor, "torch_target_version": torch_target_version(floor),
            "built_against_torch": cell.torch, "py_limited_api": LIMITED_API_HEX,
            "shims": list(tree_provenance.shims)}


def stable_source(tree_provenance: TreeProvenance) -> SourceRecord:
    """The source block without where the bytes came from this time (download, cache, mirror): the same
    source fetched two ways is the same source."""
    return SourceRecord.model_validate({k: v for k, v in tree_provenance.source.items() if k != "origin"})


def _env_summary(env: Any) -> dict[str, Any]:
    keys = ("python_version", "torch_version", "torch_cuda", "cxx11_abi")
    return {k: str(getattr(env, k)) for k in keys if getattr(env, k, None) is not None}


class ResumeKey(Frozen):
    """The parts of a provenance that decide whether an existing wheel is still the one we would build:
    cell, source, patches and per module its flags - not the list of generated TUs (how finely heavy
    sources were split depends on the machine's job count, not on what the wheel contains)."""

    cell: CellRecord
    source: SourceRecord
    patches: tuple[AppliedPatch, ...]
    modules: tuple[ModuleRecord, ...]

    @classmethod
    def of(cls, prov: Provenance) -> ResumeKey:
        return cls(cell=prov.cell, source=prov.source, patches=prov.patches,
                   modules=tuple(m.model_copy(update={"units": ()}) for m in prov.modules))

    @classmethod
    def expected(cls, *, cell: Cell, tree_provenance: TreeProvenance, modules: list[dict[str, Any]],
                 roots: Mapping[str, str]) -> ResumeKey:
        data = _portable({"cell": cell.summary(), "source": stable_source(tree_provenance).model_dump(mode="json"),
                          "patches": [p.model_dump(mode="json") for p in tree_provenance.patches],
                          "modules": [{**m, "units": []} for m in modules]}, roots)
        return cls.model_validate(data)


def provenance_matches(found: Provenance | None, expected: ResumeKey) -> tuple[bool, str]:
    """Whether an existing wheel's provenance equals what this build would record (cell, source, patches,
    flags); the reason when not."""
    if found is None:
        return False, "the existing wheel has no readable provenance"
    have = ResumeKey.of(found)
    for key in ResumeKey.model_fields:
        if getattr(have, key) != getattr(expected, key):
            return False, f"{key} changed"
    return True, "same cell, source, patches and flags"

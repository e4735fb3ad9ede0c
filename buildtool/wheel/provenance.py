"""The provenance a buildtool wheel carries (``<dist-info>/buildtool_provenance.json``): what was built, from
which source and patches, with which flags and toolchain. This module owns its schema: the build stage
fills a ``Provenance``, the wheel writer serializes it, and index, verify, repair and doctor read it back
through ``parse_provenance`` - never as a loose dict.

Layouts: ``schema_version`` 2 is this model. Wheels written before it carry the untyped layout of
schema 1 (``"schema": 1``, no ``abi`` in a full-ABI cell); ``migrate_provenance`` is the one place that
turns that layout into this one."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import ValidationError, model_validator

from buildtool.errors import UserError
from buildtool.model import Frozen
from buildtool.source.patching import AppliedPatch
from buildtool.spec.abitrack import AbiTrack

PROVENANCE_FILE = "buildtool_provenance.json"
SCHEMA_VERSION = 2
LEGACY_SCHEMA = 1  # the untyped layout: "schema": 1


class CellRecord(Frozen):
    """The matrix cell the wheel was built for, as ``spec.matrix.Cell.summary`` states it."""

    id: str
    platform: str
    python: str
    cuda: str
    torch: str
    package: str
    version: str
    cxx11_abi: Literal["TRUE", "FALSE"]
    cxx_std: str
    archs: tuple[str, ...]
    ptx: bool
    arch_list: str                    # TORCH_CUDA_ARCH_LIST style: '8.0;9.0+PTX'
    triton: str | None
    triton_package: str | None
    tags: tuple[str, ...] = ()
    abi: AbiTrack = "full"
    torch_floor: str | None = None    # stable track: the lowest torch the wheel serves


class SourceRecord(Frozen):
    """Where the sources came from (not how they were fetched this time: cache, mirror and download of the
    same bytes are the same source)."""

    kind: str                         # pypi-sdist, git, ...
    url: str | None = None
    sha256: str | None = None         # sdist archive
    filename: str | None = None
    commit: str | None = None         # git
    tag: str | None = None
    subdirectory: str | None = None
    content_sha256: str | None = None
    source_date_epoch: int | None = None


class HostCompilerRecord(Frozen):
    kind: str                         # gcc / msvc
    version: str


class ToolchainRecord(Frozen):
    provider: str
    cuda_version: str
    host_compiler: HostCompilerRecord


class BuildEnvRecord(Frozen):
    """The torch build environment (values as strings, ``None`` where the environment did not say)."""

    python_version: str | None = None
    torch_version: str | None = None
    torch_cuda: str | None = None
    cxx11_abi: str | None = None


class ModuleRecord(Frozen):
    """One extension module: its kernel spec, the flags per translation-unit language, the link flags and
    the translation units compiled."""

    module: str
    spec: str
    flags: dict[str, tuple[str, ...]]
    link_flags: tuple[str, ...] = ()
    units: tuple[str, ...] = ()


class StableAbiRecord(Frozen):
    """What a stable-ABI wheel promises and how it keeps it."""

    track: Literal["stable"] = "stable"
    torch_floor: str
    torch_target_version: str
    built_against_torch: str
    py_limited_api: str
    shims: tuple[str, ...] = ()


class Provenance(Frozen):
    schema_version: Literal[2] = 2  # SCHEMA_VERSION
    buildtool_version: str
    cell: CellRecord
    source: SourceRecord
    patches: tuple[AppliedPatch, ...] = ()
    toolchain: ToolchainRecord
    build_env: BuildEnvRecord = BuildEnvRecord()
    archs: str                        # the cell's arch list, flat (readers of schema 1 look here)
    # the oldest driver that loads the modules (index page, `doctor`): CUDA X.0 for a X.y toolkit, 12.4 for
    # size-compressed fatbins (buildtool/data/compile_flags.yaml)
    min_driver_cuda: str | None = None
    modules: tuple[ModuleRecord, ...]
    stable_abi: StableAbiRecord | None = None

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        """Every way in (a wheel, an index manifest, a doctor probe) reads old layouts the same way."""
        return migrate_provenance(data) if isinstance(data, Mapping) else data

    @property
    def ptx_arch(self) -> str | None:
        """The arch whose PTX is embedded (the newest one, when the cell asks for PTX)."""
        return self.cell.archs[-1] if self.cell.ptx and self.cell.archs else None

    def to_json_bytes(self) -> bytes:
        """The file's bytes: sorted keys, two-space indent, one trailing newline (reproducible wheels)."""
        data = self.model_dump(mode="json", exclude_none=False)
        if data.get("stable_abi") is None:
            data.pop("stable_abi", None)  # full-ABI wheels carry no stable_abi block, as before
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


# ---------------------------------------------------------------- reading
class ProvenanceError(UserError):
    """A provenance file that is not one this buildtool can read (damaged, wrong layout, newer schema)."""


def migrate_provenance(data: Mapping[str, Any]) -> dict[str, Any]:
    """Any layout buildtool ever wrote -> the current one (``schema_version`` 2), as a plain dict for
    ``Provenance.model_validate``. Schema 1 (``"schema": 1``) differs only in the version key and in full-ABI
    cells without ``abi``/``torch_floor``; its ``build_env`` omitted unknown values, which are ``None`` now."""
    out = dict(data)
    if "schema_version" in out:
        return out
    legacy = out.pop("schema", LEGACY_SCHEMA)
    if legacy != LEGACY_SCHEMA:
        raise ValueError(f"provenance schema {legacy!r} is unknown (known: schema {LEGACY_SCHEMA} and "
                         f"schema_version {SCHEMA_VERSION})")
    cell = out.get("cell")
    if isinstance(cell, Mapping):
        out["cell"] = {"abi": "full", "torch_floor": None, **cell}
    out["schema_version"] = SCHEMA_VERSION
    return out


def parse_provenance(data: object, *, where: str = PROVENANCE_FILE) -> Provenance:
    """The typed provenance of a decoded JSON value (any known layout); ``ProvenanceError`` naming the file,
    the field and the problem otherwise."""
    if not isinstance(data, Mapping):
        raise ProvenanceError(f"{where}: is not a JSON object")
    version = data.get("schema_version")
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise ProvenanceError(f"{where}: schema_version {version} is newer than this buildtool reads "
                              f"({SCHEMA_VERSION})", hint="upgrade buildtool")
    try:
        return Provenance.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise ProvenanceError(f"{where}: not a buildtool provenance ({problems})") from None


def parse_provenance_bytes(raw: bytes, *, where: str = PROVENANCE_FILE) -> Provenance:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProvenanceError(f"{where}: is not valid JSON ({exc})") from None
    return parse_provenance(data, where=where)

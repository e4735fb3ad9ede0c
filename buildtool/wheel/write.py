"""Wheel assembly: METADATA, WHEEL, RECORD and the provenance file, written as a reproducible zip.

Reproducible means: the same inputs give the same bytes. Entries are sorted (the .dist-info last, RECORD
last of all), every timestamp is SOURCE_DATE_EPOCH (or a fixed epoch), permissions are fixed (0644, 0755
for shared libraries) and the compression level is pinned. Nothing time-dependent goes into the archive:
wall-clock timings are recorded next to the build log instead (see buildtool.build.cell).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from buildtool import __version__
from buildtool.errors import BuildError, UserError
from buildtool.spec.abitrack import LIMITED_API_PYTHON
from buildtool.spec.matrix import Cell
from buildtool.spec.recipe import Recipe, RecipeVersion
from buildtool.wheel.name import WheelName
from buildtool.wheel.provenance import PROVENANCE_FILE, Provenance
from buildtool.wheel.reader import open_wheel_file

__all__ = [
    "DEFAULT_EPOCH",
    "PROVENANCE_NAME",
    "WheelContents",
    "collect_python_files",
    "metadata_text",
    "read_wheel",
    "requirements",
    "rewrite_wheel",
    "source_date_epoch",
    "wheel_name_for",
    "wheel_text",
    "write_wheel",
]

# 1980-01-01T00:00:00Z, the earliest time a zip entry can carry: the default when neither
# SOURCE_DATE_EPOCH nor the source gives one.
DEFAULT_EPOCH = 315532800
PROVENANCE_NAME = PROVENANCE_FILE
COMPRESSLEVEL = 6

# Shared libraries keep the executable bit (some loaders and auditwheel care); everything else is 0644.
_LIBRARY = re.compile(r"\.(so(\.\d+)*|pyd|dll|dylib)$")
# What never goes into a wheel from the package directories: tests, kernel sources, build leftovers.
_SKIP_DIRS = frozenset({"tests", "test", "csrc", "__pycache__", ".git", "build"})
_SKIP_SUFFIXES = frozenset({".pyc", ".pyo", ".so", ".pyd", ".o", ".obj", ".cu", ".cuh", ".cpp", ".cc", ".c",
                            ".h", ".hpp", ".cxx"})

# Marker for the triton line: torch pins triton on Linux, triton-windows exists for Windows only.
_OS_MARKER = {"linux": 'platform_system == "Linux"', "windows": 'platform_system == "Windows"'}


def source_date_epoch(default: int | None = None) -> int:
    """$SOURCE_DATE_EPOCH, else ``default`` (e.g. the source's own date), else 1980-01-01."""
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            raise UserError(f"SOURCE_DATE_EPOCH={raw!r} is not an integer (seconds since 1970)") from None
    else:
        value = default if default is not None else DEFAULT_EPOCH
    return max(value, DEFAULT_EPOCH)


def wheel_name_for(recipe: Recipe, cell: Cell, platform_tag: str) -> WheelName:
    return WheelName.for_cell(
        recipe.dist, cell.version, cuda=cell.cuda, torch_minor=cell.torch_minor, cxx11_abi=cell.cxx11_abi,
        python_tag=cell.python_tag, platform_tag=platform_tag, prefix=recipe.local_prefix or None,
        stable=cell.abi == "stable",
    )


def requirements(version: RecipeVersion, cell: Cell) -> list[str]:
    """torch pinned to the cell's minor (installing a kernel must never replace torch) -- on the stable
    track torch >= the floor, which any torch the wheel serves already satisfies --, the recipe's
    requirements as written, and the cell's triton behind an OS marker (stable track: unpinned, so no torch's
    own triton pin is ever contradicted). The CUDA major cannot be expressed here (PyPI's torch versions carry
    no CUDA); resolve, install and doctor refuse a wheel whose CUDA major differs from torch's."""
    reqs = [f"torch>={cell.torch_floor}" if cell.abi == "stable" else f"torch=={cell.torch_minor}.*"]
    for text in version.requires:
        try:
            Requirement(text)
        except InvalidRequirement as exc:
            raise UserError(f"recipe requirement {text!r} is invalid: {exc}") from None
        reqs.append(text)
    if cell.triton:
        req = Requirement(cell.triton)
        if req.marker is None and cell.os in _OS_MARKER:
            reqs.append(f"{req}; {_OS_MARKER[cell.os]}")
        else:
            reqs.append(str(req))
    seen: set[str] = set()
    unique = []
    for r in reqs:
        key = str(Requirement(r))
        if key not in seen:
            seen.add(key)
            unique.append(r)
    return unique


def metadata_text(recipe: Recipe, version: RecipeVersion, cell: Cell, full_version: str) -> str:
    """Core metadata 2.1. The version carries the local label, exactly as in the file name."""
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {canonicalize_name(recipe.dist)}",
        f"Version: {full_version}",
        f"Summary: {recipe.summary}",
        f"Home-page: {recipe.homepage}",
        f"License: {recipe.license}",
        f"Requires-Python: >={LIMITED_API_PYTHON}" if cell.abi == "stable" else f"Requires-Python: =={cell.python}.*",
    ]
    lines += [f"Requires-Dist: {r}" for r in requirements(version, cell)]
    return "\n".join(lines) + "\n"


def wheel_text(tags: Sequence[str]) -> str:
    lines = ["Wheel-Version: 1.0", f"Generator: buildtool {__version__}", "Root-Is-Purelib: false"]
    lines += [f"Tag: {t}" for t in tags]
    return "\n".join(lines) + "\n"


def collect_python_files(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """arcname -> file for the recipe's top-level Python packages (tests, csrc and build leftovers left out)."""
    found: dict[str, Path] = {}
    for package in packages:
        base = root / package
        if not base.is_dir():
            raise BuildError(f"python package {package!r} not found in the prepared tree {root}",
                             hint="check python_packages in the recipe")
        for path in sorted(base.rglob("*")):
            rel = path.relative_to(root)
            if not path.is_file() or any(part in _SKIP_DIRS for part in rel.parts[:-1]):
                continue
            if path.suffix in _SKIP_SUFFIXES:
                continue
            found[rel.as_posix()] = path
    return found


@dataclass(frozen=True)
class WheelContents:
    """Everything a wheel holds, by archive name; dist-info files are generated, never copied."""

    name: WheelName
    files: Mapping[str, bytes | Path]  # arcname -> content or a file to read
    metadata: str
    provenance: Provenance | None = None

    @property
    def dist_info(self) -> str:
        return f"{self.name.dist}-{self.name.full_version}.dist-info"

    @property
    def tags(self) -> list[str]:
        return [f"{py}-{abi}-{plat}" for py in self.name.python_tag.split(".")
                for abi in self.name.abi_tag.split(".") for plat in self.name.platform_tag.split(".")]


def _hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def _zipinfo(arcname: str, epoch: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(arcname, date_time=time.gmtime(epoch)[:6])
    info.create_system = 3  # Unix, so the mode bits below mean something and do not depend on the host
    mode = 0o755 if _LIBRARY.search(arcname) else 0o644
    info.external_attr = (0o100000 | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def write_wheel(contents: WheelContents, out_dir: Path, *, epoch: int | None = None,
                extra_dist_info: Mapping[str, bytes] | None = None) -> Path:
    """Write ``contents`` as ``out_dir/<wheel file name>`` with sorted entries and a sha256 RECORD.

    ``extra_dist_info`` adds files inside the .dist-info (e.g. licenses kept by a repair tool).
    """
    when = source_date_epoch() if epoch is None else max(epoch, DEFAULT_EPOCH)
    info = contents.dist_info + "/"
    payload: dict[str, bytes] = {}
    for arcname, content in contents.files.items():
        if arcname.startswith(info):
            raise BuildError(f"{arcname}: the .dist-info is generated, not copied")
        payload[arcname] = content if isinstance(content, bytes) else Path(content).read_bytes()
    meta = {info + rel: data for rel, data in (extra_dist_info or {}).items()}
    meta[info + "METADATA"] = contents.metadata.encode()
    meta[info + "WHEEL"] = wheel_text(contents.tags).encode()
    if contents.provenance is not None:
        meta[info + PROVENANCE_NAME] = contents.provenance.to_json_bytes()
    ordered = sorted(payload.items()) + sorted(meta.items())
    record = "".join(f"{n},{_hash(d)},{len(d)}\n" for n, d in ordered) + f"{info}RECORD,,\n"
    ordered.append((info + "RECORD", record.encode()))

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / contents.name.filename
    tmp = target.with_name(target.name + ".tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=COMPRESSLEVEL) as zf:
            for arcname, data in ordered:
                zf.writestr(_zipinfo(arcname, when), data, compress_type=zipfile.ZIP_DEFLATED,
                            compresslevel=COMPRESSLEVEL)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


# ---------------------------------------------------------------- reading back
def read_wheel(path: Path) -> tuple[WheelName, dict[str, bytes]]:
    """The wheel's name and every entry (RECORD included) by archive name."""
    name = WheelName.parse(path.name)
    with open_wheel_file(path, check=False) as wheel:
        return name, wheel.entries()


def _dist_info_of(entries: Mapping[str, bytes]) -> str:
    found = {n.split("/", 1)[0] for n in entries if n.split("/", 1)[0].endswith(".dist-info") and "/" in n}
    if len(found) != 1:
        raise BuildError(f"a wheel needs exactly one .dist-info directory, found {sorted(found) or 'none'}")
    return found.pop()


def rewrite_wheel(src: Path, out_dir: Path, *, platform_tag: str | None = None, epoch: int | None = None) -> Path:
    """Re-emit a wheel (e.g. auditwheel's output) through the reproducible writer, optionally re-tagged.

    METADATA and the provenance are kept byte for byte, WHEEL is regenerated for the (new) tags, RECORD
    is recomputed. Returns the new path in ``out_dir``.
    """
    name, entries = read_wheel(src)
    if platform_tag is not None:
        name = WheelName(dist=name.dist, version=name.version, label=name.label, python_tag=name.python_tag,
                         abi_tag=name.abi_tag, platform_tag=platform_tag, build_tag=name.build_tag)
    old_info = _dist_info_of(entries)
    metadata = entries[f"{old_info}/METADATA"].decode()
    files = {n: d for n, d in entries.items() if not n.startswith(old_info + "/")}
    extra = {n[len(old_info) + 1:]: d for n, d in entries.items() if n.startswith(old_info + "/")}
    for generated in ("METADATA", "WHEEL", "RECORD"):
        extra.pop(generated, None)  # the provenance stays in `extra`: carried byte for byte, not re-serialized
    contents = WheelContents(name=name, files=files, metadata=metadata)
    return write_wheel(contents, out_dir, epoch=epoch, extra_dist_info=extra)

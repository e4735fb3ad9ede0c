"""`buildtool index`: a static wheel site that pip, uv and people can use.

    SITE/files/<wheel>              the wheels, plus <wheel>.metadata (PEP 658 core metadata)
    SITE/simple/index.html          PEP 503 project list           (+ index.json, PEP 691)
    SITE/simple/<project>/          PEP 503 page with #sha256= and data-requires-python /
                                    data-dist-info-metadata / data-core-metadata (+ index.json, PEP 691)
    SITE/manifest.json              every wheel with its environment (torch, CUDA, ABI, archs, glibc)
    SITE/index.html, page.js/css    the picker page (no CDN, no external fetch; manifest embedded)

Static hosting cannot negotiate content types, so the PEP 691 JSON lives next to each HTML page as
index.json; pip and uv read the HTML (they accept it as the fallback type).
"""

from __future__ import annotations

import email.parser
import hashlib
import html
import json
import re
import shutil
from collections.abc import Iterable
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from buildtool import __version__
from buildtool.binary.elf import read_elf_bytes
from buildtool.errors import UserError
from buildtool.model import Frozen
from buildtool.publish.commands import PYPI
from buildtool.versions import cuda_from_tag, cuda_major
from buildtool.wheel import tags as wheeltags
from buildtool.wheel.name import LocalLabel
from buildtool.wheel.provenance import PROVENANCE_FILE, Provenance
from buildtool.wheel.reader import open_wheel_file

MANIFEST_FORMAT = 1
# A local label that names only the CUDA major (stable-ABI wheels: `+cu13...`), when the full-ABI label does not parse.
_CUDA_ONLY_LABEL = re.compile(r"^(?:[a-z][a-z0-9]*\.)?cu(?P<cuda>\d{2,4})(?![0-9])", re.IGNORECASE)


class WheelRecord(Frozen):
    """One wheel as the manifest describes it (the resolver's candidate)."""

    filename: str
    url: str
    package: str                      # canonical project name (PEP 503)
    dist: str                         # name as in the file name
    version: str                      # full version, with the local label
    public_version: str
    python_tag: str
    abi_tag: str
    platform_tag: str
    platform: str                     # linux-x86_64 / linux-aarch64 / windows-x86_64 / any
    torch: str | None                 # torch major.minor from the label
    cuda: str | None                  # as in the label: '13.0' or '12' (major only, upstream style)
    cxx11_abi: bool | None
    archs: tuple[str, ...] = ()       # SASS archs ('8.0', '9.0'); empty = unknown
    ptx: str | None = None            # newest arch with PTX embedded, if any
    min_glibc: str | None = None
    min_driver_cuda: str | None = None  # oldest NVIDIA driver (as the CUDA version it reports) that loads it
    requires_python: str | None = None
    requires_dist: tuple[str, ...] = ()
    sha256: str
    size: int
    provenance: Provenance | None = None
    channel: str | None = None        # the channel (sub-index) that serves it; None: every channel

    @property
    def cuda_major(self) -> int | None:
        return int(cuda_major(self.cuda)) if self.cuda else None

    @property
    def parsed_version(self) -> Version:
        return Version(self.version)


class Channel(Frozen):
    """One sub-index in which no two wheels of a package pin different torch minors (DESIGN decision 8):
    a full-ABI channel per (CUDA, torch minor[, old C++ ABI]), a stable-ABI channel per CUDA major."""

    id: str                           # cu130-torch2.14, cu124-torch2.6-cxx11abiFALSE, cu13-stable
    kind: Literal["full", "stable"]
    cuda: str
    torch: str | None                 # torch minor (full ABI); None for stable
    cxx11_abi: bool | None
    url: str                          # the PEP 503 root (--index-url), absolute when --base-url was given
    packages: tuple[str, ...]


def channel_id(record: WheelRecord) -> str | None:
    """The channel of a wheel; None for a wheel without a CUDA label (served in every channel)."""
    if record.cuda is None:
        return None
    if record.torch is None:
        return f"cu{record.cuda_major}-stable"
    abi = "-cxx11abiFALSE" if record.cxx11_abi is False else ""
    return f"cu{record.cuda.replace('.', '')}-torch{record.torch}{abi}"


class Manifest(Frozen):
    format: int = MANIFEST_FORMAT
    generator: str
    generated: str
    base_url: str
    index_url: str
    wheels: tuple[WheelRecord, ...]
    channels: tuple[Channel, ...] = ()
    pypi_url: str = PYPI              # where the page's commands take everything but the kernels from

    def channel(self, channel_id: str | None) -> Channel | None:
        return next((c for c in self.channels if c.id == channel_id), None)

    def packages(self) -> list[str]:
        return sorted({w.package for w in self.wheels})


# ---------------------------------------------------------------- reading wheels
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _label_facts(local: str | None, abi3: bool, filename: str) -> tuple[str | None, str | None, bool | None]:
    """(torch minor, CUDA, cxx11 ABI) from a local label. Full-ABI labels name all three; a stable-ABI
    (abi3) wheel's label names the CUDA major only, and its torch range is its Requires-Dist."""
    if not local:
        return None, None, None
    try:
        label = LocalLabel.parse(local)
        return label.torch, label.cuda, label.cxx11_abi
    except ValueError as exc:
        m = _CUDA_ONLY_LABEL.match(local)
        if abi3 and m:
            return None, cuda_from_tag(m["cuda"]), None
        raise UserError(f"{filename}: {exc}") from None


def read_wheel(path: Path) -> tuple[WheelRecord, bytes]:
    """The record of a wheel (url left relative) and its METADATA bytes. Refuses wheels pip would discard
    and damaged archives (file and problem named, never a traceback)."""
    tags = wheeltags.wheel_tags(path.name)
    dist_name, version, _, _ = parse_wheel_filename(path.name)
    with open_wheel_file(path) as wheel:
        meta_name = wheel.info_member("METADATA")
        if meta_name is None:
            raise UserError(f"{path.name}: no .dist-info/METADATA inside")
        meta_bytes = wheel.read(meta_name)
        provenance = wheel.provenance(where=f"{path.name}: {wheel.dist_info}/{PROVENANCE_FILE}")
        glibc_needs: list[str] = []
        for _, data in wheel.shared_libraries():
            info = read_elf_bytes(data)
            if info and info.max_glibc:
                glibc_needs.append(info.max_glibc)
    meta = email.parser.BytesParser().parsebytes(meta_bytes)
    meta_version = meta.get("Version", "")
    try:
        same = Version(meta_version) == version
    except InvalidVersion:
        same = False
    if not same:
        raise UserError(
            f"{path.name}: METADATA says Version {meta_version} but the file name says {version}; "
            "pip discards such wheels from an index (failures.md F40)",
            hint="rebuild with buildtool, which writes the local label into METADATA too",
        )
    one = sorted(tags, key=str)[0]
    platform, tag_glibc = wheeltags.platform_of(tags)
    archs, ptx = (provenance.cell.archs, provenance.ptx_arch) if provenance else ((), None)
    min_glibc = tag_glibc or (max(glibc_needs, key=Version) if glibc_needs else None)
    torch, cuda, cxx11_abi = _label_facts(version.local, wheeltags.is_abi3(tags), path.name)
    platform_tag = ".".join(sorted({t.platform for t in tags}))
    record = WheelRecord(
        filename=path.name, url="files/" + quote(path.name), package=canonicalize_name(meta.get("Name", dist_name)),
        dist=path.name.split("-", 1)[0], version=str(version), public_version=version.public,
        python_tag=one.interpreter, abi_tag=one.abi, platform_tag=platform_tag, platform=platform,
        torch=torch, cuda=cuda, cxx11_abi=cxx11_abi, archs=archs, ptx=ptx, min_glibc=min_glibc,
        min_driver_cuda=provenance.min_driver_cuda if provenance else None,
        requires_python=meta.get("Requires-Python"), requires_dist=tuple(meta.get_all("Requires-Dist") or ()),
        sha256=_sha256(path), size=path.stat().st_size, provenance=provenance,
    )
    return record, meta_bytes


# ---------------------------------------------------------------- writing the site
def _project_page(project: str, records: list[WheelRecord], meta_sha: dict[str, str], depth: int = 2) -> str:
    rows = []
    for r in records:
        href = f"{_href(r.url, depth)}#sha256={r.sha256}"
        attrs = [f'href="{html.escape(href)}"']
        if r.requires_python:
            attrs.append(f'data-requires-python="{html.escape(r.requires_python)}"')
        if r.filename in meta_sha:  # PEP 658: only where <href>.metadata is served next to the wheel
            attrs.append(f'data-dist-info-metadata="sha256={meta_sha[r.filename]}"')
            attrs.append(f'data-core-metadata="sha256={meta_sha[r.filename]}"')
        rows.append(f"    <a {' '.join(attrs)}>{html.escape(r.filename)}</a><br/>")
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n    <meta name=\"pypi:repository-version\" content=\"1.1\">\n"
        f"    <title>Links for {html.escape(project)}</title>\n  </head>\n  <body>\n"
        f"    <h1>Links for {html.escape(project)}</h1>\n" + "\n".join(rows) + "\n  </body>\n</html>\n"
    )


def _project_json(project: str, records: list[WheelRecord], meta_sha: dict[str, str], depth: int = 2) -> dict[str, Any]:
    return {
        "meta": {"api-version": "1.1"},
        "name": project,
        "versions": sorted({r.version for r in records}, key=Version),
        "files": [
            {
                "filename": r.filename, "url": _href(r.url, depth), "hashes": {"sha256": r.sha256},
                "requires-python": r.requires_python, "size": r.size,
                "core-metadata": {"sha256": meta_sha[r.filename]} if r.filename in meta_sha else False,
                "dist-info-metadata": {"sha256": meta_sha[r.filename]} if r.filename in meta_sha else False,
            }
            for r in records
        ],
    }


def _root_page(projects: list[str]) -> str:
    links = "\n".join(f'    <a href="{quote(p)}/">{html.escape(p)}</a><br/>' for p in projects)
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n    <meta name=\"pypi:repository-version\" content=\"1.1\">\n"
        "    <title>Simple index</title>\n  </head>\n  <body>\n" + links + "\n  </body>\n</html>\n"
    )


def _href(url: str, depth: int = 2) -> str:
    """A wheel URL as seen from a project page ``depth`` levels below the site root (simple/<project>/: 2,
    channels/<id>/<project>/: 3): absolute stays, site-relative goes up."""
    return url if "://" in url else "../" * depth + url


def _write_simple(root: Path, by_project: dict[str, list[WheelRecord]], meta_sha: dict[str, str], depth: int) -> None:
    """A PEP 503 root (+ PEP 691 JSON beside each page) at ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for project, recs in by_project.items():
        pdir = root / project
        pdir.mkdir(exist_ok=True)
        (pdir / "index.html").write_text(_project_page(project, recs, meta_sha, depth), encoding="utf-8")
        (pdir / "index.json").write_text(json.dumps(_project_json(project, recs, meta_sha, depth), indent=1),
                                         encoding="utf-8")
    (root / "index.html").write_text(_root_page(list(by_project)), encoding="utf-8")
    (root / "index.json").write_text(json.dumps({
        "meta": {"api-version": "1.1"}, "projects": [{"name": p} for p in by_project],
    }, indent=1), encoding="utf-8")


def _channels(records: list[WheelRecord], base_url: str) -> dict[str, tuple[Channel, list[WheelRecord]]]:
    """Each channel with its wheels: the wheels labelled for it plus every wheel without a CUDA label."""
    shared = [r for r in records if channel_id(r) is None]
    out: dict[str, tuple[Channel, list[WheelRecord]]] = {}
    for cid in sorted({c for r in records if (c := channel_id(r))}):
        mine = [r for r in records if channel_id(r) == cid]
        first = mine[0]
        channel = Channel(
            id=cid, kind="stable" if first.torch is None else "full",
            cuda=str(first.cuda_major) if first.torch is None else str(first.cuda), torch=first.torch,
            cxx11_abi=first.cxx11_abi, url=_absolute(base_url, f"channels/{cid}/"),
            packages=tuple(sorted({r.package for r in mine})),
        )
        out[cid] = (channel, mine + shared)
    return out


def _channel_list_page(channels: list[Channel]) -> str:
    rows = "\n".join(
        f'    <li><a href="{html.escape(c.id)}/">{html.escape(c.id)}</a>: '
        + html.escape(f"{'stable ABI, every torch the wheels allow' if c.kind == 'stable' else 'torch ' + str(c.torch)}"
                      f", CUDA {c.cuda}; {', '.join(c.packages)}") + "</li>"
        for c in channels)
    return ("<!DOCTYPE html>\n<html>\n  <head><meta charset=\"utf-8\"><title>Channels</title></head>\n  <body>\n"
            "  <h1>Channels</h1>\n  <p>Use the channel of your torch as <code>--index-url</code> (pip) or "
            "<code>--extra-index-url</code> (uv): no two wheels in one channel pin different torch minors.</p>\n"
            f"  <ul>\n{rows}\n  </ul>\n  </body>\n</html>\n")


def _links_page(title: str, records: Iterable[WheelRecord], depth: int) -> str:
    """Plain <a href> links to every wheel: what `pip install --find-links URL` reads."""
    links = "\n".join(f'    <a href="{html.escape(_href(r.url, depth))}#sha256={r.sha256}">{html.escape(r.filename)}</a><br/>'
                      for r in records)
    return ("<!DOCTYPE html>\n<html>\n  <head><meta charset=\"utf-8\"><title>" + html.escape(title)
            + "</title></head>\n  <body>\n" + links + "\n  </body>\n</html>\n")


def _absolute(base_url: str, rel: str) -> str:
    return f"{base_url.rstrip('/')}/{rel}" if base_url else rel


def write_page(site: Path, manifest: Manifest) -> None:
    """The picker page: template + JS + CSS from buildtool/data/page, the manifest embedded as JSON."""
    page = resources.files("buildtool.data").joinpath("page")
    template = page.joinpath("index.html").read_text(encoding="utf-8")
    data = manifest.model_dump_json().replace("</", "<\\/")
    # Plain links to every wheel in the HTML itself, so `pip install --find-links SITE/` finds them too.
    links = "\n".join(f'      <li><a href="{html.escape(_site_relative(manifest, w.url))}#sha256={w.sha256}">'
                      f"{html.escape(w.filename)}</a></li>" for w in manifest.wheels)
    site.joinpath("index.html").write_text(
        template.replace("<!--MANIFEST-->", f'<script id="manifest" type="application/json">{data}</script>')
        .replace("<!--WHEEL-LINKS-->", f'<ul id="wheel-files">\n{links}\n    </ul>'),
        encoding="utf-8",
    )
    for asset in ("page.js", "page.css"):
        site.joinpath(asset).write_text(page.joinpath(asset).read_text(encoding="utf-8"), encoding="utf-8")


def _site_relative(manifest: Manifest, url: str) -> str:
    """A wheel URL relative to the site root when it lives under --base-url (the page works wherever served)."""
    base = manifest.base_url.rstrip("/") + "/" if manifest.base_url else ""
    return url[len(base):] if base and url.startswith(base) else url


def wheel_files(dist: Path) -> list[Path]:
    if not dist.is_dir():
        raise UserError(f"{dist} is not a directory of wheels")
    wheels = sorted(dist.glob("*.whl"))
    if not wheels:
        raise UserError(f"no wheels in {dist}", hint="build some with `buildtool build` or `nox -s build-<profile>`")
    return wheels


def build_index(dist: Path | Iterable[Path], out: Path, base_url: str = "", files_url: str | None = None) -> Manifest:
    """Write the site. With ``files_url`` the wheels stay where they are hosted (e.g. GitHub Release assets,
    too big for Pages): links point there and nothing is copied; PEP 658 metadata is then not advertised."""
    wheels = wheel_files(dist) if isinstance(dist, Path) else sorted(dist)
    files_dir = out / "files"
    files_dir.mkdir(parents=True, exist_ok=True)
    records: list[WheelRecord] = []
    meta_sha: dict[str, str] = {}
    seen: dict[str, Path] = {}
    for wheel in wheels:
        if wheel.name in seen:
            raise UserError(f"two wheels named {wheel.name}: {seen[wheel.name]} and {wheel}")
        seen[wheel.name] = wheel
        record, meta = read_wheel(wheel)
        if files_url:
            records.append(record.model_copy(update={"url": f"{files_url.rstrip('/')}/{quote(wheel.name)}"}))
            continue
        target = files_dir / wheel.name
        if wheel.resolve() != target.resolve():
            shutil.copyfile(wheel, target)
        target.with_name(wheel.name + ".metadata").write_bytes(meta)
        meta_sha[wheel.name] = hashlib.sha256(meta).hexdigest()
        records.append(record)
    by_project: dict[str, list[WheelRecord]] = {}
    for r in sorted(records, key=lambda r: (r.package, r.parsed_version, r.filename)):
        by_project.setdefault(r.package, []).append(r)
    _write_simple(out / "simple", by_project, meta_sha, depth=2)
    ordered = [r for recs in by_project.values() for r in recs]
    channels = _channels(ordered, base_url)
    shutil.rmtree(out / "channels", ignore_errors=True)   # a channel whose wheels are gone must not linger
    for cid, (_, recs) in channels.items():
        grouped: dict[str, list[WheelRecord]] = {}
        for r in recs:
            grouped.setdefault(r.package, []).append(r)
        _write_simple(out / "channels" / cid, grouped, meta_sha, depth=3)
    if channels:
        (out / "channels" / "index.html").write_text(_channel_list_page([c for c, _ in channels.values()]),
                                                     encoding="utf-8")
    if not files_url:
        (files_dir / "index.html").write_text(_links_page("Wheel files", ordered, depth=1).replace(
            'href="../files/', 'href="'), encoding="utf-8")
    manifest = Manifest(
        generator=f"buildtool {__version__}", generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        base_url=base_url.rstrip("/"), index_url=_absolute(base_url, "simple/"),
        wheels=tuple((r.model_copy(update={"url": _absolute(base_url, r.url)}) if "://" not in r.url else r)
                     .model_copy(update={"channel": channel_id(r)}) for r in ordered),
        channels=tuple(c for c, _ in channels.values()),
    )
    (out / "manifest.json").write_text(manifest.model_dump_json(indent=1), encoding="utf-8")
    write_page(out, manifest)
    return manifest


# ---------------------------------------------------------------- reading a site
def load_manifest_text(text: str, where: str) -> Manifest:
    try:
        manifest: Manifest = Manifest.model_validate_json(text)
    except ValueError as exc:
        raise UserError(f"{where} is not a buildtool manifest: {str(exc)[:300]}") from None
    return manifest

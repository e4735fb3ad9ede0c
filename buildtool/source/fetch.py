"""Sources: fetch a recipe version's pinned source, verify it, cache it and extract it safely.

Two kinds (see ``buildtool.spec.recipe``):

- ``pypi-sdist``: URL + sha256. Looked up, in order, in the content-addressed cache
  (``<cache>/sdist/<sha256>/<filename>``), in the source mirror (``<mirror>/<filename>``), then downloaded
  (urllib, timeout, atomic write). The sha256 is verified every time it is used; a mismatch is a hard error
  that names the expected and the actual hash.
- ``git``: URL + full commit (+ optional subdirectory). Materialised with ``git archive <commit> [<subdir>]``
  from a mirror (``<mirror>/<name>/repo``, ``<mirror>/<name>.git`` or ``<mirror>/<name>``: a bare git dir,
  a git dir or a work tree) or, without a mirror, from a ``git clone`` of the URL. The archive is cached
  under ``<cache>/git/<commit>/<subdir>.tar`` (a commit is itself a content address). A content hash of the
  extracted tree (:func:`tree_sha256`) is recorded and, when the recipe pins ``sha256``, verified.

The cache is ``$BUILDTOOL_CACHE_DIR/sources``, else ``$XDG_CACHE_HOME/buildtool/sources``, else
``~/.cache/buildtool/sources``. The mirror is ``--source-mirror DIR`` or ``$BUILDTOOL_SOURCE_MIRROR``.

Extraction (:func:`safe_extract`) refuses absolute paths, ``..``, links that point outside the tree,
devices and fifos, so a hostile archive cannot write outside its destination.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Literal

from buildtool import host
from buildtool.errors import UserError
from buildtool.model import Frozen
from buildtool.spec.recipe import GitSource, SdistSource

Source = SdistSource | GitSource

MIRROR_ENV = "BUILDTOOL_SOURCE_MIRROR"
DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


class FetchedSource(Frozen):
    """A source whose bytes are verified and extracted into ``tree`` (the recipe subdirectory's contents)."""

    kind: Literal["pypi-sdist", "git"]
    url: str
    tree: Path
    origin: str  # where the bytes came from: "cache", "mirror <path>", "download", "clone"
    content_sha256: str
    sha256: str | None = None  # sdist archive hash
    commit: str | None = None
    tag: str | None = None
    subdirectory: str | None = None
    filename: str | None = None
    source_date_epoch: int | None = None  # newest member mtime (git archive: the commit time)

    def provenance(self) -> dict[str, object]:
        """The ``source`` block of provenance.json."""
        data: dict[str, object] = {"kind": self.kind, "url": self.url}
        if self.kind == "git":
            data |= {"commit": self.commit, "tag": self.tag}
        else:
            data |= {"sha256": self.sha256, "filename": self.filename}
        # Not the origin (cache, mirror path, download): the same bytes from anywhere are the same source.
        data |= {"subdirectory": self.subdirectory, "content_sha256": self.content_sha256,
                 "source_date_epoch": self.source_date_epoch}
        return data


# ---------------------------------------------------------------------------------------------- locations


def default_cache_dir() -> Path:
    return host.default_cache_dir() / "sources"


def mirror_from_env(explicit: Path | str | None = None) -> Path | None:
    """``explicit`` if given, else $BUILDTOOL_SOURCE_MIRROR; a named mirror that is not a directory is an error."""
    raw = explicit if explicit is not None else os.environ.get(MIRROR_ENV) or None
    if raw is None:
        return None
    path = Path(raw).expanduser()
    if not path.is_dir():
        origin = "--source-mirror" if explicit is not None else MIRROR_ENV
        raise UserError(f"source mirror {path} ({origin}) is not a directory")
    return path


# ---------------------------------------------------------------------------------------------- hashing


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def tree_sha256(root: Path) -> str:
    """sha256 over a canonical listing of ``root``: one line per file, sorted by POSIX relative path,
    ``<sha256 of content> <x|-> <path>`` (x: executable) or ``<link> <target> <path>`` for symlinks.
    Independent of timestamps, owners and the order the archive listed its members in."""
    lines = []
    for path in sorted(_walk_files(root), key=lambda p: p.relative_to(root).as_posix()):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            lines.append(f"link {os.readlink(path)} {rel}")
        else:
            mode = "x" if path.stat().st_mode & stat.S_IXUSR else "-"
            lines.append(f"{file_sha256(path)} {mode} {rel}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _walk_files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in dirnames:
            if (base / name).is_symlink():
                yield base / name
        for name in filenames:
            yield base / name


def verify_sha256(path: Path, expected: str, what: str) -> None:
    actual = file_sha256(path)
    if actual != expected:
        raise UserError(f"sha256 mismatch for {what}: expected {expected}, got {actual}",
                        hint=f"the file at {path} is not the one the recipe pins; delete it if it is a stale copy")


# ---------------------------------------------------------------------------------------------- download


def download(url: str, dest: Path, *, sha256: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Download ``url`` to ``dest`` atomically (temp file + rename) and verify its sha256 before the rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=".part-", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            request = urllib.request.Request(url, headers={"User-Agent": "buildtool (mamba-wheel-builder)"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                while chunk := response.read(_CHUNK):
                    h.update(chunk)
                    fh.write(chunk)
        actual = h.hexdigest()
        if actual != sha256:
            raise UserError(f"sha256 mismatch for {url}: expected {sha256}, got {actual}",
                            hint="the server returned different bytes than the recipe pins; refusing to use them")
        os.replace(tmp, dest)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        if isinstance(exc, urllib.error.HTTPError):
            reason: object = f"HTTP {exc.code} {exc.reason}"
        else:
            reason = getattr(exc, "reason", None) or exc
        raise UserError(f"download failed: {url}: {reason}",
                        hint=f"offline? put the file into a source mirror (--source-mirror DIR or {MIRROR_ENV})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


# ---------------------------------------------------------------------------------------------- extraction


def _check_member_path(name: str, archive: str) -> PurePosixPath:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UserError(f"unsafe archive {archive}: member {name!r} has an absolute path")
    if ".." in p.parts:
        raise UserError(f"unsafe archive {archive}: member {name!r} escapes the tree (..)")
    return p


def _link_stays_inside(member: PurePosixPath, target: str, *, hard: bool) -> bool:
    if target.startswith("/") or (len(target) > 1 and target[1] == ":"):
        return False
    base = PurePosixPath() if hard else member.parent
    depth = 0
    for part in (base / target).parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return False
        elif part not in ("", "."):
            depth += 1
    return True


def _strip(p: PurePosixPath, strip: PurePosixPath | None) -> PurePosixPath | None:
    """Path relative to ``strip`` (a leading directory), None when outside it or equal to it."""
    if strip is None:
        return p
    parts, prefix = p.parts, strip.parts
    if parts[: len(prefix)] != prefix or len(parts) == len(prefix):
        return None
    return PurePosixPath(*parts[len(prefix):])


def safe_extract(archive: Path, dest: Path, *, strip: str | None = None) -> Path:
    """Extract a .tar(.gz|.bz2|.xz) or .zip into ``dest`` after checking every member; with ``strip``,
    only members under that leading directory are kept, relative to it. Nothing is written when a
    member is unsafe (all members are checked first)."""
    name = archive.name
    strip_path = PurePosixPath(strip.strip("/")) if strip else None
    if zipfile.is_zipfile(archive):
        _extract_zip(archive, dest, name, strip_path)
    elif tarfile.is_tarfile(archive):
        _extract_tar(archive, dest, name, strip_path)
    else:
        raise UserError(f"not a tar or zip archive: {archive}")
    return dest


def _extract_tar(archive: Path, dest: Path, name: str, strip: PurePosixPath | None) -> None:
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        plan: list[tuple[tarfile.TarInfo, PurePosixPath]] = []
        for m in members:
            p = _check_member_path(m.name, name)
            if m.ischr() or m.isblk() or m.isfifo() or m.isdev():
                raise UserError(f"unsafe archive {name}: member {m.name!r} is a device or fifo")
            if m.issym() and not _link_stays_inside(p, m.linkname, hard=False):
                raise UserError(f"unsafe archive {name}: symlink {m.name!r} -> {m.linkname!r} points outside the tree")
            if m.islnk():
                _check_member_path(m.linkname, name)
                if not _link_stays_inside(p, m.linkname, hard=True):
                    raise UserError(f"unsafe archive {name}: hard link {m.name!r} -> {m.linkname!r} points outside the tree")
            if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
                if m.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, b"g", b"x"):
                    continue
                raise UserError(f"unsafe archive {name}: member {m.name!r} has unsupported type {m.type!r}")
            rel = _strip(p, strip)
            if rel is not None:
                plan.append((m, rel))
        if strip is not None and not plan:
            raise UserError(f"archive {name} has nothing under {strip}/")
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        for m, rel in plan:
            target = dest / rel
            if not target.resolve().is_relative_to(root) and not m.issym():
                raise UserError(f"unsafe archive {name}: member {m.name!r} would land outside {dest}")
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.parent.resolve().is_relative_to(root):
                raise UserError(f"unsafe archive {name}: member {m.name!r} goes through a link outside the tree")
            if m.issym():
                target.unlink(missing_ok=True)
                os.symlink(m.linkname, target)
            elif m.islnk():
                src_rel = _strip(PurePosixPath(m.linkname), strip)
                if src_rel is None:
                    raise UserError(f"unsafe archive {name}: hard link {m.name!r} points outside {strip}/")
                shutil.copyfile(dest / src_rel, target)
            else:
                fh = tf.extractfile(m)
                assert fh is not None
                with fh, target.open("wb") as out:
                    shutil.copyfileobj(fh, out)
                target.chmod(0o755 if m.mode & 0o111 else 0o644)


def _extract_zip(archive: Path, dest: Path, name: str, strip: PurePosixPath | None) -> None:
    with zipfile.ZipFile(archive) as zf:
        plan = []
        for info in zf.infolist():
            p = _check_member_path(info.filename, name)
            kind = stat.S_IFMT(info.external_attr >> 16)
            if kind == stat.S_IFLNK:
                raise UserError(f"unsafe archive {name}: member {info.filename!r} is a symlink (not allowed in zips)")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise UserError(f"unsafe archive {name}: member {info.filename!r} is a device or fifo")
            rel = _strip(p, strip)
            if rel is not None:
                plan.append((info, rel))
        if strip is not None and not plan:
            raise UserError(f"archive {name} has nothing under {strip}/")
        dest.mkdir(parents=True, exist_ok=True)
        for info, rel in plan:
            target = dest / rel
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as fh, target.open("wb") as out:
                shutil.copyfileobj(fh, out)


def archive_epoch(archive: Path) -> int | None:
    """The newest member mtime: a reproducible SOURCE_DATE_EPOCH for wheels built from this source."""
    if zipfile.is_zipfile(archive):
        import datetime

        with zipfile.ZipFile(archive) as zf:
            stamps = [int(datetime.datetime(*i.date_time, tzinfo=datetime.timezone.utc).timestamp())
                      for i in zf.infolist()]
    else:
        with tarfile.open(archive) as tf:
            stamps = [int(m.mtime) for m in tf.getmembers()]
    return max(stamps) if stamps else None


def sdist_root(archive: Path) -> str:
    """The single top-level directory of an sdist (``pkg-1.0/``)."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
    else:
        with tarfile.open(archive) as tf:
            names = tf.getnames()
    tops = {PurePosixPath(n).parts[0] for n in names if PurePosixPath(n).parts}
    if len(tops) != 1:
        raise UserError(f"sdist {archive.name} does not have a single top-level directory (found {sorted(tops)[:5]})")
    return tops.pop()


# ---------------------------------------------------------------------------------------------- git


def mirror_candidates(mirror: Path, name: str) -> list[Path]:
    return [mirror / name / "repo", mirror / f"{name}.git", mirror / name]


GIT_TIMEOUT_S = 900.0
# Never ask for credentials (a private or renamed repository would otherwise hang on a prompt).
_GIT_ENV = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GCM_INTERACTIVE": "never"}


def _git(args: list[str], *, what: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", *args], capture_output=True, check=False, env=_GIT_ENV,
                              timeout=GIT_TIMEOUT_S)
    except FileNotFoundError:
        raise UserError(f"git is needed to fetch {what} but is not on PATH") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"git {args[0]} for {what} timed out after {GIT_TIMEOUT_S:.0f} s") from None


def _git_dir(candidate: Path) -> Path | None:
    """The git dir behind a mirror candidate (bare dir, dir with .git, or a .git dir), else None."""
    if not candidate.exists():
        return None
    if (candidate / ".git").exists():
        candidate = candidate / ".git"
    if (candidate / "objects").is_dir() and (candidate / "HEAD").exists():
        return candidate
    return None


def _archive_from_git_dir(git_dir: Path, src: GitSource, out: Path) -> bool:
    """``git archive`` the pinned commit (and subdirectory) into ``out``; False when the commit is absent."""
    what = f"{src.url}@{src.commit}"
    probe = _git(["--git-dir", str(git_dir), "cat-file", "-e", f"{src.commit}^{{commit}}"], what=what)
    if probe.returncode != 0:
        return False
    args = ["--git-dir", str(git_dir), "archive", "--format=tar", src.commit]
    if src.subdirectory:
        args.append(src.subdirectory.strip("/"))
    tmp = out.with_name(out.name + ".part")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("wb") as fh:
        proc = subprocess.run(["git", *args], stdout=fh, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise UserError(f"git archive of {what} failed: {proc.stderr.decode(errors='replace').strip().splitlines()[-1:]}")
    os.replace(tmp, out)
    return True


def _git_archive(src: GitSource, cache: Path, mirror: Path | None) -> tuple[Path, str]:
    subdir_key = (src.subdirectory or "_root").strip("/").replace("/", "+")
    cached = cache / "git" / src.commit / f"{subdir_key}.tar"
    if cached.is_file():
        return cached, "cache"
    tried: list[str] = []
    if mirror is not None:
        for candidate in mirror_candidates(mirror, src.mirror_name):
            git_dir = _git_dir(candidate)
            if git_dir is None:
                tried.append(f"{candidate} ({'not a git repository' if candidate.exists() else 'absent'})")
                continue
            if _archive_from_git_dir(git_dir, src, cached):
                return cached, f"mirror {git_dir}"
            tried.append(f"{git_dir} (no commit {src.commit[:12]})")
    with tempfile.TemporaryDirectory(prefix="buildtool-clone-") as tmp:
        clone = Path(tmp) / "repo.git"
        proc = _git(["clone", "--bare", "--quiet", "--filter=blob:none", src.url, str(clone)],
                    what=f"{src.url}@{src.commit}")
        if proc.returncode == 0 and _archive_from_git_dir(clone, src, cached):
            return cached, "clone"
        reason = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["commit not in the clone"]
        tried.append(f"git clone {src.url} ({reason[0]})")
    raise UserError(
        f"cannot fetch {src.url} at {src.commit}: tried {'; '.join(tried)}",
        hint=f"offline? point --source-mirror (or {MIRROR_ENV}) at a directory holding {src.mirror_name}/repo, "
             f"{src.mirror_name}.git or {src.mirror_name}",
    )


# ---------------------------------------------------------------------------------------------- fetch


def _sdist_archive(src: SdistSource, cache: Path, mirror: Path | None) -> tuple[Path, str]:
    cached = cache / "sdist" / src.sha256 / src.filename
    if cached.is_file():
        verify_sha256(cached, src.sha256, f"cached {src.filename}")
        return cached, "cache"
    if mirror is not None:
        mirrored = mirror / src.filename
        if mirrored.is_file():
            verify_sha256(mirrored, src.sha256, f"mirrored {mirrored}")
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(cached.name + ".part")
            shutil.copyfile(mirrored, tmp)
            os.replace(tmp, cached)
            return cached, f"mirror {mirrored}"
    download(src.url, cached, sha256=src.sha256)
    return cached, "download"


def fetch(src: Source, dest: Path, *, mirror: Path | None = None, cache_dir: Path | None = None) -> FetchedSource:
    """Fetch and verify ``src`` and extract its (sub)tree into ``dest`` (which must not exist yet)."""
    cache = cache_dir or default_cache_dir()
    if dest.exists():
        raise UserError(f"extraction target already exists: {dest}")
    if isinstance(src, SdistSource):
        archive, origin = _sdist_archive(src, cache, mirror)
        top = sdist_root(archive)
        strip = f"{top}/{src.subdirectory.strip('/')}" if src.subdirectory else top
        safe_extract(archive, dest, strip=strip)
        return FetchedSource(kind="pypi-sdist", url=src.url, tree=dest, origin=origin,
                             content_sha256=tree_sha256(dest), sha256=src.sha256, subdirectory=src.subdirectory,
                             filename=src.filename, source_date_epoch=archive_epoch(archive))
    archive, origin = _git_archive(src, cache, mirror)
    safe_extract(archive, dest, strip=src.subdirectory.strip("/") if src.subdirectory else None)
    content = tree_sha256(dest)
    if src.sha256 is not None and content != src.sha256:
        shutil.rmtree(dest, ignore_errors=True)
        raise UserError(
            f"content sha256 mismatch for {src.url}@{src.commit}"
            f"{' (' + src.subdirectory + ')' if src.subdirectory else ''}: expected {src.sha256}, got {content}",
            hint=f"the archive came from {origin}; a mirror with rewritten history or a corrupt cache gives this",
        )
    return FetchedSource(kind="git", url=src.url, tree=dest, origin=origin, content_sha256=content,
                         commit=src.commit, tag=src.tag, subdirectory=src.subdirectory,
                         source_date_epoch=archive_epoch(archive))

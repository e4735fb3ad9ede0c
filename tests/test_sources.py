"""Sources: safe extraction (hostile archives built here), hashing, downloads over real loopback HTTP and from
PyPI, the source mirror (sdists by name, git repos in every supported layout, built here with real git)."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import shutil
import subprocess
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from buildtool.errors import UserError
from buildtool.source.fetch import (
    default_cache_dir,
    download,
    fetch,
    mirror_from_env,
    safe_extract,
    tree_sha256,
)
from buildtool.spec.recipe import GitSource, SdistSource

# ---------------------------------------------------------------------------------------------- helpers


def _tar(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> Path:
    data = data or {}
    with tarfile.open(path, "w:gz") as tf:
        for m in members:
            payload = data.get(m.name)
            if payload is not None:
                m.size = len(payload)
                tf.addfile(m, io.BytesIO(payload))
            else:
                tf.addfile(m)
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _git(cwd: Path, *args: str) -> str:
    env = os.environ | {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_GLOBAL": "/dev/null"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def work_repo(tmp_path: Path) -> tuple[Path, str]:
    """A real git work tree with a subdirectory and two commits; returns (path, first commit)."""
    repo = tmp_path / "upstream"
    (repo / "kernels" / "scan" / "csrc").mkdir(parents=True)
    (repo / "kernels" / "scan" / "csrc" / "a.cu").write_text("int a;\n")
    (repo / "kernels" / "scan" / "setup.py").write_text("print('x')\n")
    (repo / "README.md").write_text("top\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "one")
    first = _git(repo, "rev-parse", "HEAD")
    (repo / "kernels" / "scan" / "csrc" / "a.cu").write_text("int a = 2;\n")
    _git(repo, "commit", "-qam", "two")
    return repo, first


def _git_source(commit: str, **kw: object) -> GitSource:
    return GitSource.model_validate({"kind": "git", "url": "https://example.invalid/up/stream", "commit": commit,
                                     "mirror_name": "up+stream", **kw})


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on loopback serving a directory."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(root), **kw)  # type: ignore[arg-type]

        def log_message(self, *a: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------------------------- extraction


def test_safe_extract_strips_top_directory(tmp_path: Path) -> None:
    arc = _tar(tmp_path / "p.tar.gz", [_file("p-1.0/csrc/a.cu"), _file("p-1.0/setup.py")],
               {"p-1.0/csrc/a.cu": b"int a;\n", "p-1.0/setup.py": b""})
    safe_extract(arc, tmp_path / "out", strip="p-1.0")
    assert (tmp_path / "out" / "csrc" / "a.cu").read_bytes() == b"int a;\n"


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_file("/etc/evil"), "has an absolute path"),
        (_file("p/../../evil"), "escapes the tree (..)"),
        (_link("p/link", "/etc/passwd"), "points outside the tree"),
        (_link("p/link", "../../outside"), "points outside the tree"),
        (_link("p/hard", "../outside", tarfile.LNKTYPE), "escapes the tree (..)"),
        (_link("p/dev", "", tarfile.CHRTYPE), "is a device or fifo"),
        (_link("p/fifo", "", tarfile.FIFOTYPE), "is a device or fifo"),
    ],
    ids=["absolute", "dotdot", "symlink-absolute", "symlink-up", "hardlink-up", "chardev", "fifo"],
)
def test_hostile_tar_is_refused_with_one_line_and_nothing_written(tmp_path: Path, member: tarfile.TarInfo,
                                                                  message: str) -> None:
    arc = _tar(tmp_path / "evil.tar.gz", [_file("p/ok.txt"), member], {"p/ok.txt": b"ok", member.name: b"x"})
    with pytest.raises(UserError) as exc:
        safe_extract(arc, tmp_path / "out")
    text = str(exc.value)
    assert text.startswith("unsafe archive evil.tar.gz: ") and message in text and "\n" not in text
    assert not (tmp_path / "out").exists()  # every member is checked before anything is written
    assert not (tmp_path / "evil").exists()


def test_symlink_inside_the_tree_is_kept(tmp_path: Path) -> None:
    arc = _tar(tmp_path / "ok.tar.gz", [_file("p/real.h"), _link("p/alias.h", "real.h")], {"p/real.h": b"x"})
    safe_extract(arc, tmp_path / "out", strip="p")
    assert (tmp_path / "out" / "alias.h").is_symlink() and (tmp_path / "out" / "alias.h").read_bytes() == b"x"


def test_hostile_zip_is_refused(tmp_path: Path) -> None:
    arc = tmp_path / "evil.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("p/ok.txt", "ok")
        zf.writestr("p/../../evil.txt", "x")
    with pytest.raises(UserError, match=r"unsafe archive evil.zip: member 'p/../../evil.txt' escapes the tree"):
        safe_extract(arc, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_zip_symlink_is_refused(tmp_path: Path) -> None:
    arc = tmp_path / "link.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        info = zipfile.ZipInfo("p/link")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UserError, match="is a symlink"):
        safe_extract(arc, tmp_path / "out")


def test_not_an_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"hello")
    with pytest.raises(UserError, match="not a tar or zip archive"):
        safe_extract(junk, tmp_path / "out")


# ---------------------------------------------------------------------------------------------- hashing


def test_tree_sha256_ignores_order_and_mtime_but_not_content_or_mode(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for root, names in ((a, ["x/1", "y", "x/2"]), (b, ["y", "x/2", "x/1"])):
        for n in names:
            (root / n).parent.mkdir(parents=True, exist_ok=True)
            (root / n).write_text(n)
    os.utime(b / "y", (1, 1))
    assert tree_sha256(a) == tree_sha256(b)
    (b / "y").chmod(0o755)
    assert tree_sha256(a) != tree_sha256(b)
    (b / "y").chmod(0o644)
    (b / "y").write_text("changed")
    assert tree_sha256(a) != tree_sha256(b)


def test_cache_dir_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BUILDTOOL_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "buildtool" / "sources"
    monkeypatch.setenv("BUILDTOOL_CACHE_DIR", str(tmp_path / "bt"))
    assert default_cache_dir() == tmp_path / "bt" / "sources"


def test_mirror_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BUILDTOOL_SOURCE_MIRROR", raising=False)
    assert mirror_from_env() is None
    monkeypatch.setenv("BUILDTOOL_SOURCE_MIRROR", str(tmp_path))
    assert mirror_from_env() == tmp_path
    with pytest.raises(UserError, match=r"source mirror .*nope \(--source-mirror\) is not a directory"):
        mirror_from_env(tmp_path / "nope")


# ---------------------------------------------------------------------------------------------- downloads


def _sdist_bytes() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        payload = b"int x;\n"
        info = tarfile.TarInfo("pkg-1.0/csrc/x.cu")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def test_download_over_loopback_verifies_and_caches(http_dir: tuple[str, Path], tmp_path: Path) -> None:
    base, root = http_dir
    data = _sdist_bytes()
    (root / "pkg-1.0.tar.gz").write_bytes(data)
    src = SdistSource(kind="pypi-sdist", url=f"{base}/pkg-1.0.tar.gz", sha256=hashlib.sha256(data).hexdigest())
    cache = tmp_path / "cache"
    got = fetch(src, tmp_path / "t1", cache_dir=cache)
    assert got.origin == "download" and (got.tree / "csrc" / "x.cu").read_text() == "int x;\n"
    (root / "pkg-1.0.tar.gz").unlink()  # the second fetch must come from the cache
    again = fetch(src, tmp_path / "t2", cache_dir=cache)
    assert again.origin == "cache" and again.content_sha256 == got.content_sha256


def test_wrong_hash_download_is_a_one_line_error_and_leaves_nothing(http_dir: tuple[str, Path],
                                                                     tmp_path: Path) -> None:
    base, root = http_dir
    data = _sdist_bytes()
    (root / "pkg-1.0.tar.gz").write_bytes(data)
    wrong = "0" * 64
    with pytest.raises(UserError) as exc:
        download(f"{base}/pkg-1.0.tar.gz", tmp_path / "dl" / "pkg-1.0.tar.gz", sha256=wrong)
    assert exc.value.message == (f"sha256 mismatch for {base}/pkg-1.0.tar.gz: expected {wrong}, "
                                 f"got {hashlib.sha256(data).hexdigest()}")
    assert list((tmp_path / "dl").iterdir()) == []  # no partial or unverified file


def test_download_failure_names_the_url(http_dir: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = http_dir
    with pytest.raises(UserError, match=r"download failed: .*/missing.tar.gz: .*(404|Not Found)"):
        download(f"{base}/missing.tar.gz", tmp_path / "x.tar.gz", sha256="0" * 64)


def test_sdist_from_mirror_by_file_name_and_tampered_mirror(tmp_path: Path) -> None:
    data = _sdist_bytes()
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "pkg-1.0.tar.gz").write_bytes(data)
    src = SdistSource(kind="pypi-sdist", url="https://example.invalid/pkg-1.0.tar.gz",
                      sha256=hashlib.sha256(data).hexdigest())
    got = fetch(src, tmp_path / "t", mirror=mirror, cache_dir=tmp_path / "c")
    assert got.origin.startswith("mirror ")
    (mirror / "pkg-1.0.tar.gz").write_bytes(data + b"x")
    with pytest.raises(UserError, match=r"sha256 mismatch for mirrored .*pkg-1.0.tar.gz: expected [0-9a-f]{64}, got"):
        fetch(src, tmp_path / "t2", mirror=mirror, cache_dir=tmp_path / "c2")


@pytest.mark.network
def test_real_pypi_sdist_download_and_hash(tmp_path: Path) -> None:
    src = SdistSource(
        kind="pypi-sdist",
        url="https://files.pythonhosted.org/packages/f4/d1/eba27735f31bd5527d39a3c7f693e6ded7b844cab275db719a15ad37b6cd/causal_conv1d-1.7.0.tar.gz",
        sha256="3202758494eaa7b597ce1c282dfa188889506bfcb92cad3c407d26736bfcd32b")
    got = fetch(src, tmp_path / "tree", cache_dir=tmp_path / "cache")
    assert (got.tree / "csrc" / "causal_conv1d_fwd.cu").is_file() and (got.tree / "setup.py").is_file()
    assert (tmp_path / "cache" / "sdist" / src.sha256 / "causal_conv1d-1.7.0.tar.gz").is_file()
    bad = src.model_copy(update={"sha256": "f" * 64})
    with pytest.raises(UserError, match=rf"sha256 mismatch for {src.url}: expected f{{64}}, got {src.sha256}"):
        fetch(bad, tmp_path / "tree2", cache_dir=tmp_path / "cache2")


# ---------------------------------------------------------------------------------------------- git


@pytest.mark.parametrize("layout", ["name/repo (bare)", "name.git (bare)", "name (work tree)"])
def test_git_source_from_every_mirror_layout(tmp_path: Path, work_repo: tuple[Path, str], layout: str) -> None:
    repo, first = work_repo
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    if layout == "name/repo (bare)":
        (mirror / "up+stream").mkdir()
        _git(tmp_path, "clone", "-q", "--bare", str(repo), str(mirror / "up+stream" / "repo"))
    elif layout == "name.git (bare)":
        _git(tmp_path, "clone", "-q", "--bare", str(repo), str(mirror / "up+stream.git"))
    else:
        shutil.copytree(repo, mirror / "up+stream")
    src = _git_source(first, subdirectory="kernels/scan")
    got = fetch(src, tmp_path / "tree", mirror=mirror, cache_dir=tmp_path / "cache")
    assert got.origin.startswith("mirror ")
    assert sorted(p.relative_to(got.tree).as_posix() for p in got.tree.rglob("*") if p.is_file()) == \
        ["csrc/a.cu", "setup.py"]
    assert (got.tree / "csrc" / "a.cu").read_text() == "int a;\n"  # the pinned commit, not HEAD
    assert got.provenance()["commit"] == first and got.provenance()["content_sha256"] == tree_sha256(got.tree)
    assert got.source_date_epoch == int(_git(repo, "show", "-s", "--format=%ct", first))  # for reproducible wheels


def test_git_content_hash_pin_is_verified(tmp_path: Path, work_repo: tuple[Path, str]) -> None:
    repo, first = work_repo
    mirror = tmp_path / "mirror"
    shutil.copytree(repo, mirror / "up+stream")
    good = fetch(_git_source(first), tmp_path / "a", mirror=mirror, cache_dir=tmp_path / "c").content_sha256
    pinned = fetch(_git_source(first, sha256=good), tmp_path / "b", mirror=mirror, cache_dir=tmp_path / "c")
    assert pinned.content_sha256 == good
    with pytest.raises(UserError) as exc:
        fetch(_git_source(first, sha256="a" * 64), tmp_path / "d", mirror=mirror, cache_dir=tmp_path / "c")
    assert exc.value.message == (f"content sha256 mismatch for https://example.invalid/up/stream@{first}: "
                                 f"expected {'a' * 64}, got {good}")
    assert not (tmp_path / "d").exists()


def test_git_without_the_commit_lists_what_was_tried(tmp_path: Path, work_repo: tuple[Path, str]) -> None:
    repo, _ = work_repo
    mirror = tmp_path / "mirror"
    shutil.copytree(repo, mirror / "up+stream")
    missing = "1" * 40
    with pytest.raises(UserError) as exc:
        fetch(_git_source(missing), tmp_path / "t", mirror=mirror, cache_dir=tmp_path / "c")
    msg = exc.value.message
    assert msg.startswith(f"cannot fetch https://example.invalid/up/stream at {missing}: tried ")
    assert f"(no commit {missing[:12]})" in msg and "git clone https://example.invalid/up/stream" in msg
    assert "\n" not in msg and "--source-mirror" in (exc.value.hint or "")

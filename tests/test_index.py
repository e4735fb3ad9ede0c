"""`buildtool index`: PEP 503/691/658 pages, manifest.json and the picker page, from real wheels."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest
from fixture_wheels import PY, buildtool, clean_env, compile_extension, label, make_wheel, serve
from provenance_samples import legacy_provenance

from buildtool.errors import UserError
from buildtool.publish.index import build_index, read_wheel

PROV = legacy_provenance(["8.0", "9.0"], ptx=True)  # a wheel of the untyped schema-1 layout: read through the migration


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("dist")
    work = tmp_path_factory.mktemp("ext")
    so_name, so = compile_extension(work, "tiny_ext")
    make_wheel(d, "tiny-kernel", f"1.0.0+{label('2.14')}", files={"tiny_kernel/__init__.py": "X = 1\n", so_name: so},
               requires=("torch==2.14.*", "tiny-helper"), provenance=PROV)
    make_wheel(d, "tiny-kernel", f"1.0.0+{label('2.6', '12.4', False)}", python_tag="cp310",
               files={"tiny_kernel/__init__.py": "X = 1\n"}, requires=("torch==2.6.*",))
    make_wheel(d, "tiny-kernel", f"1.0.0+{label('2.8', '12.8')}", platform_tag="win_amd64",
               files={"tiny_kernel/__init__.py": "X = 1\n"}, requires=("torch==2.8.*",))
    make_wheel(d, "tiny-helper", "0.1", python_tag="py3", platform_tag="any", files={"tiny_helper.py": "Y = 2\n"})
    return d


@pytest.fixture(scope="module")
def site(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = buildtool("index", str(dist), "--out", str(out), "--base-url", "https://wheels.example/mamba")
    assert proc.returncode == 0, proc.stderr
    return out


def test_layout_and_simple_pages(site: Path) -> None:
    page = (site / "simple" / "tiny-kernel" / "index.html").read_text()
    links = re.findall(r'<a href="([^"]+)"([^>]*)>([^<]+)</a>', page)
    assert len(links) == 3
    for href, attrs, text in links:
        path, frag = href.split("#")
        assert path.startswith("../../files/") and "%2B" in path  # '+' percent-encoded
        assert (site / "files" / text).exists()
        assert (site / "files" / (text + ".metadata")).exists()  # PEP 658
        assert re.fullmatch(r"sha256=[0-9a-f]{64}", frag)
        assert 'data-requires-python="&gt;=3.9"' in attrs
        assert re.search(r'data-dist-info-metadata="sha256=[0-9a-f]{64}"', attrs)
        assert re.search(r'data-core-metadata="sha256=[0-9a-f]{64}"', attrs)
    root = (site / "simple" / "index.html").read_text()
    assert 'href="tiny-kernel/"' in root and 'href="tiny-helper/"' in root


def test_pep691_json(site: Path) -> None:
    data = json.loads((site / "simple" / "tiny-kernel" / "index.json").read_text())
    assert data["meta"]["api-version"] == "1.1"
    assert data["name"] == "tiny-kernel"
    f = data["files"][0]
    assert set(f) >= {"filename", "url", "hashes", "requires-python", "core-metadata"}
    meta = (site / "files" / (f["filename"] + ".metadata")).read_bytes()
    import hashlib
    assert f["core-metadata"]["sha256"] == hashlib.sha256(meta).hexdigest()
    assert json.loads((site / "simple" / "index.json").read_text())["projects"]


def test_manifest_fields(site: Path) -> None:
    m = json.loads((site / "manifest.json").read_text())
    assert m["index_url"] == "https://wheels.example/mamba/simple/"
    by_name = {w["filename"]: w for w in m["wheels"]}
    w = next(w for n, w in by_name.items() if "torch2.14" in n)
    assert w["package"] == "tiny-kernel" and w["public_version"] == "1.0.0"
    assert (w["torch"], w["cuda"], w["cxx11_abi"]) == ("2.14", "13.0", True)
    assert w["archs"] == ["8.0", "9.0"] and w["ptx"] == "9.0"
    assert w["platform"] == "linux-x86_64" and w["python_tag"] == "cp311"
    assert w["url"].startswith("https://wheels.example/mamba/files/") and "%2B" in w["url"]
    assert w["size"] == (site / "files" / w["filename"]).stat().st_size
    assert w["provenance"]["source"]["kind"] == "pypi-sdist" and w["provenance"]["schema_version"] == 2
    assert w["min_glibc"]  # read from the compiled .so's GLIBC_ version needs
    assert "torch==2.14.*" in w["requires_dist"]
    win = next(w for n, w in by_name.items() if "win_amd64" in n)
    assert win["platform"] == "windows-x86_64" and win["cxx11_abi"] is True and win["min_glibc"] is None
    old = next(w for n, w in by_name.items() if "torch2.6" in n)
    assert (old["cuda"], old["cxx11_abi"], old["archs"]) == ("12.4", False, [])


def test_page_embeds_manifest_without_external_fetches(site: Path) -> None:
    html = (site / "index.html").read_text()
    assert '<script id="manifest" type="application/json">' in html
    for asset in ("page.js", "page.css"):
        text = (site / asset).read_text()
        assert "http://" not in text and "https://" not in text
    assert not re.search(r'(src|href)="https?://', html)


def test_upstream_style_wheel_refused(tmp_path: Path) -> None:
    """F40: file name with +label, METADATA without it: pip discards it from an index, so we refuse it."""
    w = make_wheel(tmp_path / "d", "tiny-kernel", f"1.0.0+{label('2.14')}", metadata_version="1.0.0",
                   files={"tiny_kernel/__init__.py": ""})
    with pytest.raises(UserError, match="F40"):
        read_wheel(w)
    proc = buildtool("index", str(tmp_path / "d"), "--out", str(tmp_path / "site"))
    assert proc.returncode == 2 and "error:" in proc.stderr and "Traceback" not in proc.stderr


def test_empty_dist_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no wheels"):
        build_index(tmp_path / "empty", tmp_path / "site")


def test_pip_reads_the_served_index(site: Path, tmp_path: Path) -> None:
    """pip's own index client (PEP 503 + 658 metadata) downloads the matching wheel over loopback."""
    with serve(site) as url:
        with urllib.request.urlopen(url + "/simple/tiny-kernel/") as resp:
            assert b"tiny_kernel-1.0.0" in resp.read()
        proc = subprocess.run(
            [PY, "-m", "pip", "download", "--no-deps", "--dest", str(tmp_path), "--index-url", url + "/simple/",
             "--python-version", "3.11", "--platform", "linux_x86_64", "--only-binary", ":all:",
             "tiny-kernel==1.0.0+cu130torch2.14cxx11abitrue"],
            capture_output=True, text=True, env=clean_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(tmp_path.glob("tiny_kernel-1.0.0+cu130torch2.14cxx11abiTRUE-*.whl"))


@pytest.mark.parametrize(("tag", "platform", "glibc"), [
    ("linux_x86_64", "linux-x86_64", None),
    ("manylinux_2_28_x86_64", "linux-x86_64", "2.28"),
    ("manylinux_2_27_x86_64.manylinux_2_28_x86_64", "linux-x86_64", "2.27"),
    ("manylinux2014_aarch64", "linux-aarch64", "2.17"),
    ("win_amd64", "windows-x86_64", None),
    ("any", "any", None),
])
def test_platform_tags(tag: str, platform: str, glibc: str | None) -> None:
    from packaging.tags import parse_tag

    from buildtool.wheel.tags import platform_of

    assert platform_of(parse_tag(f"cp311-cp311-{tag}")) == (platform, glibc)


def test_files_url_links_external_wheels(dist: Path, tmp_path: Path) -> None:
    """--files-url: wheels stay on their host (Release assets), the site only links them."""
    out = tmp_path / "site"
    proc = buildtool("index", str(dist), "--out", str(out), "--files-url", "https://releases.example/v1/")
    assert proc.returncode == 0, proc.stderr
    assert not list(out.glob("files/*.whl"))
    page = (out / "simple" / "tiny-kernel" / "index.html").read_text()
    assert 'href="https://releases.example/v1/tiny_kernel-1.0.0%2Bcu130torch2.14' in page
    assert "data-dist-info-metadata" not in page  # no <href>.metadata on the release host
    m = json.loads((out / "manifest.json").read_text())
    assert all(w["url"].startswith("https://releases.example/v1/") for w in m["wheels"])


# ---------------------------------------------------------------- channels (DESIGN decision 8)
@pytest.fixture(scope="module")
def channel_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cdist")
    for minor in ("2.13", "2.14"):
        make_wheel(d, "tiny-kernel", f"1.0.0+{label(minor)}", files={"tiny_kernel/__init__.py": ""},
                   requires=(f"torch=={minor}.*",))
    make_wheel(d, "tiny-kernel", f"1.0.0+{label('2.6', '12.4', False)}", files={"tiny_kernel/__init__.py": ""},
               requires=("torch==2.6.*",))
    make_wheel(d, "tiny-kernel", "1.0.0+cu13stable", python_tag="cp310", abi_tag="abi3",
               platform_tag="manylinux_2_28_x86_64", files={"tiny_kernel/__init__.py": ""}, requires=("torch>=2.10",))
    make_wheel(d, "tiny-helper", "0.1", python_tag="py3", platform_tag="any", files={"tiny_helper.py": ""})
    out = tmp_path_factory.mktemp("csite")
    proc = buildtool("index", str(d), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def test_one_channel_per_cuda_and_torch_minor_and_per_cuda_major_for_stable(channel_site: Path) -> None:
    manifest = json.loads((channel_site / "manifest.json").read_text())
    channels = {c["id"]: c for c in manifest["channels"]}
    assert set(channels) == {"cu130-torch2.13", "cu130-torch2.14", "cu124-torch2.6-cxx11abiFALSE", "cu13-stable"}
    assert channels["cu13-stable"]["kind"] == "stable" and channels["cu13-stable"]["cuda"] == "13"
    assert channels["cu130-torch2.14"]["url"] == "channels/cu130-torch2.14/"
    by_file = {w["filename"]: w["channel"] for w in manifest["wheels"]}
    assert by_file["tiny_kernel-1.0.0+cu13stable-cp310-abi3-manylinux_2_28_x86_64.whl"] == "cu13-stable"
    assert by_file["tiny_helper-0.1-py3-none-any.whl"] is None
    for cid in channels:
        page = (channel_site / "channels" / cid / "tiny-kernel" / "index.html").read_text()
        files = re.findall(r">([^<]+\.whl)<", page)
        assert len(files) == 1 and by_file[files[0]] == cid       # never two torch pins in one channel
        assert re.search(r'href="\.\./\.\./\.\./files/tiny_kernel-[^"]+#sha256=[0-9a-f]{64}"', page)
        assert (channel_site / "channels" / cid / "tiny-helper" / "index.html").exists()   # unlabelled: everywhere
        assert json.loads((channel_site / "channels" / cid / "tiny-kernel" / "index.json").read_text())["files"]
    assert "cu13-stable" in (channel_site / "channels" / "index.html").read_text()


def _pip_download(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "pip", "download", "--no-deps", "--dest", str(tmp), "--python-version", "3.11",
                           "--platform", "manylinux_2_28_x86_64", "--platform", "linux_x86_64", "--only-binary", ":all:",
                           *args], capture_output=True, text=True, env=clean_env())


def test_pip_through_a_channel_gets_that_channels_torch_pin(channel_site: Path, tmp_path: Path) -> None:
    """The all-in-one index offers every label and pip takes the highest; a channel offers one torch pin."""
    with serve(channel_site) as url:
        proc = _pip_download(tmp_path / "all", "--index-url", url + "/simple/", "tiny-kernel")
        assert proc.returncode == 0, proc.stderr
        (got,) = [p.name for p in (tmp_path / "all").glob("*.whl")]
        assert "torch2.13" not in got          # the highest label (cu13stable > cu130torch2.14), whatever torch is installed
        proc = _pip_download(tmp_path / "c", "--index-url", url + "/channels/cu130-torch2.13/", "tiny-kernel")
        assert proc.returncode == 0, proc.stderr
        assert [p.name for p in (tmp_path / "c").glob("*.whl")] == [
            "tiny_kernel-1.0.0+cu130torch2.13cxx11abiTRUE-cp311-cp311-linux_x86_64.whl"]
        proc = _pip_download(tmp_path / "s", "--index-url", url + "/channels/cu13-stable/", "tiny-kernel")
        assert proc.returncode == 0, proc.stderr
        assert [p.name for p in (tmp_path / "s").glob("*.whl")] == [
            "tiny_kernel-1.0.0+cu13stable-cp310-abi3-manylinux_2_28_x86_64.whl"]


@pytest.mark.parametrize("where", ["/", "/index.html", "/files/"])
def test_find_links_on_site_root_and_files(channel_site: Path, tmp_path: Path, where: str) -> None:
    with serve(channel_site) as url:
        proc = _pip_download(tmp_path, "--no-index", "--find-links", url + where,
                             "tiny-kernel==1.0.0+cu130torch2.13cxx11abiTRUE")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(list(tmp_path.glob("tiny_kernel-1.0.0+cu130torch2.13*.whl"))) == 1


# ---------------------------------------------------------------- damaged wheels
def _damaged(tmp: Path, how: str) -> Path:
    w = make_wheel(tmp / "d", "tiny-kernel", f"1.0.0+{label('2.14')}",
                   files={"tiny_kernel/__init__.py": "X = 1\n" * 2000, "tiny_kernel/big.py": "Y = 2\n" * 4000})
    data = bytearray(w.read_bytes())
    if how == "truncated":
        w.write_bytes(bytes(data[: len(data) // 2]))
    else:  # flip bytes inside the first member's compressed data: the zip directory stays intact
        start = data.index(b"tiny_kernel/__init__.py") + 40
        data[start:start + 16] = bytes(b ^ 0xFF for b in data[start:start + 16])
        w.write_bytes(bytes(data))
    return w


@pytest.mark.parametrize(("how", "words"), [("truncated", "not a zip archive"), ("corrupt", "tiny_kernel/__init__.py")])
def test_damaged_wheel_is_a_clear_error(tmp_path: Path, how: str, words: str) -> None:
    w = _damaged(tmp_path, how)
    proc = buildtool("index", str(w.parent), "--out", str(tmp_path / "site"))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "not a readable wheel (damaged)" in proc.stderr and w.name in proc.stderr and words in proc.stderr


def test_verify_reports_a_damaged_wheel_without_traceback(tmp_path: Path) -> None:
    from buildtool.verify.static import static_checks

    w = _damaged(tmp_path, "corrupt")
    wc, results = static_checks(w)
    assert wc is None and results[0].result == "fail"
    assert "not a readable wheel (damaged)" in results[0].detail and "tiny_kernel/__init__.py" in results[0].detail


@pytest.mark.parametrize(("torch", "cuda", "channel"), [
    ("2.13.0", "13.0", "cu130-torch2.13"), ("2.14.1", "13.0", "cu130-torch2.14"), ("2.15.0", "13.2", "cu13-stable")])
def test_resolve_explain_prints_the_channel_of_the_environment(channel_site: Path, torch: str, cuda: str,
                                                               channel: str) -> None:
    with serve(channel_site) as url:
        args = ("resolve", "tiny-kernel", "--index", url, "--torch", torch, "--cuda", cuda, "--abi", "TRUE",
                "--python-tag", "cp311", "--platform", "linux-x86_64", "--glibc", "2.36", "--no-host")
        proc = buildtool(*args, "--explain")
        data = json.loads(buildtool(*args, "--json").stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"channel for this environment: {url}/channels/{channel}/" in proc.stdout
    assert f"pip install --only-binary tiny-kernel --index-url {url}/channels/{channel}/" in proc.stdout
    assert data["channel_url"] == f"{url}/channels/{channel}/"
    assert data["commands"]["uv"].endswith(f"--extra-index-url {url}/channels/{channel}/ tiny-kernel torch=={torch}")

"""prepare: real PyPI sdists (network) and git snapshots (mirror) to patched PEP 517 trees with provenance,
for Linux and Windows, checked with lint-source before/after; and each user mistake as one clear line."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import tomllib
from mirror import source_mirror

from buildtool.cli import main
from buildtool.errors import BuildtoolError, UserError
from buildtool.source.fetch import fetch
from buildtool.source.lint import scan
from buildtool.source.patching import PatchConflict
from buildtool.source.prepare import load_prepared, parse_package_spec, prepare
from buildtool.spec.project import Project
from buildtool.spec.recipe import load_recipes

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """A copy of the project's recipes, patches, kernel specs and matrix, which tests may edit."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("recipes", "patches", "kernels"):
        shutil.copytree(REPO / name, root / name)
    shutil.copyfile(REPO / "matrix.yaml", root / "matrix.yaml")
    return Project(root)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One source cache for the session: each sdist is downloaded once."""
    return tmp_path_factory.mktemp("source-cache")


def _mirror() -> Path | None:
    return source_mirror()


def _check_tree(tree: Path, project: Project, package: str, version: str, platform: str) -> dict:
    prov = json.loads((tree / "provenance.json").read_text())
    rv = load_recipes(project.recipes_dir)[package].get(version)
    assert prov["package"] == package and prov["version"] == version and prov["platform"] == platform
    assert prov["kernels"] == list(rv.kernels) and prov["python_packages"] == list(rv.python_packages)
    assert prov["requires"] == list(rv.requires) and prov["buildtool_version"]
    for p in prov["patches"]:
        assert p["sha256"] == hashlib.sha256((project.patches_dir / p["name"]).read_bytes()).hexdigest()
    pyproject = tomllib.loads((tree / "pyproject.toml").read_text())
    from buildtool import __version__

    assert pyproject["build-system"] == {"requires": [f"mamba-wheel-builder=={__version__}"],
                                         "build-backend": "buildtool.backend"}
    table = pyproject["tool"]["buildtool"]
    assert table["kernels"] == list(rv.kernels) and table["recipe"] == ".buildtool/recipe.yaml"
    assert (tree / table["recipe"]).is_file() and "13.0" in table["arch-policy"]
    assert pyproject["tool"]["buildtool"]["package"] == package
    assert pyproject["tool"]["buildtool"]["platform"] == platform
    assert pyproject["project"]["name"] == load_recipes(project.recipes_dir)[package].dist
    for name in rv.kernels:
        assert (tree / ".buildtool" / "kernels" / f"{name}.yaml").read_bytes() == \
            (project.kernels_dir / f"{name}.yaml").read_bytes()
    assert (tree / ".buildtool" / "recipe.yaml").is_file()
    assert load_prepared(tree).provenance.model_dump(mode="json") == prov
    return prov


# ---------------------------------------------------------------------------------------------- PyPI sdists

SDISTS = [
    # package, version, patches expected (reference ids), rules firing on the unpacked sdist (Windows, CUDA 13)
    ("causal-conv1d", "1.7.0", [], set()),
    ("causal-conv1d", "1.6.0", ["CC-1", "CC-2"], {"msvc-alternative-token", "directive-in-macro-arguments"}),
    ("mamba-ssm", "2.3.2.post1", ["MS-1", "MS-3", "MS-2"],
     {"m-log2e-without-definition", "directive-in-macro-arguments", "nonstatic-constexpr-in-switch-macro",
      "nonstatic-constexpr-captured-by-switch"}),
    ("mamba-ssm", "2.2.6.post3", ["MS-1", "MS-3", "MS-2", "TF-1"],
     {"m-log2e-without-definition", "directive-in-macro-arguments", "nonstatic-constexpr-in-switch-macro",
      "nonstatic-constexpr-captured-by-switch"}),
]


@pytest.mark.network
@pytest.mark.parametrize(("package", "version", "refs", "before_rules"), SDISTS,
                         ids=[f"{p}-{v}" for p, v, _, _ in SDISTS])
@pytest.mark.parametrize("platform", ["linux-x86_64", "windows-x86_64"])
def test_prepare_pypi_sdist(project: Project, cache_dir: Path, tmp_path: Path, package: str, version: str,
                            refs: list[str], before_rules: set[str], platform: str) -> None:
    rv = load_recipes(project.recipes_dir)[package].get(version)
    pristine = fetch(rv.source, tmp_path / "pristine", cache_dir=cache_dir)
    before = scan(pristine.tree, platform="windows-x86_64", cuda="13.0")
    assert {f.rule for f in before.errors} == before_rules

    tree = prepare(project, package, version, platform, tmp_path / "out", cache_dir=cache_dir)
    prov = _check_tree(tree.root, project, package, version, platform)
    assert prov["source"]["kind"] == "pypi-sdist" and prov["source"]["sha256"] == rv.source.sha256
    assert prov["source"]["content_sha256"] == pristine.content_sha256
    assert [p["reference"] for p in prov["patches"]] == refs
    # The patched tree is clean for Windows + CUDA 13, on both platforms (patches apply everywhere).
    after = scan(tree.root, platform="windows-x86_64", cuda="13.0")
    assert after.clean, after.errors
    changed = sorted({f for p in prov["patches"] for f in p["files"]})
    for rel in changed:
        assert (tree.root / rel).read_bytes() != (pristine.tree / rel).read_bytes()
    unchanged = [p for p in pristine.tree.rglob("*") if p.is_file()
                 and p.relative_to(pristine.tree).as_posix() not in changed and p.name != "pyproject.toml"]
    assert unchanged and all((tree.root / p.relative_to(pristine.tree)).read_bytes() == p.read_bytes()
                             for p in unchanged)


# ---------------------------------------------------------------------------------------------- git via mirror

GIT = [
    ("causal-conv1d", "1.4.0", ["CC-1", "CC-2"]),
    ("causal-conv1d", "1.1.1", []),
    ("mamba-ssm", "2.2.2", ["MS-4", "MS-1", "MS-3", "MS-2", "TF-1"]),
    ("mamba-ssm-vim", "1.1.1", ["VIM-5", "VIM-1 (MS-4)", "VIM-3", "VIM-1 (MS-1)", "VIM-1 (MS-2)", "VIM-4", "TF-1"]),
    ("selective-scan", "0.0.2", ["VM-4", "VM-1", "VM-2"]),
]


@pytest.mark.mirror
@pytest.mark.parametrize(("package", "version", "refs"), GIT, ids=[f"{p}-{v}" for p, v, _ in GIT])
def test_prepare_git_source_from_mirror(project: Project, tmp_path: Path, package: str, version: str,
                                        refs: list[str]) -> None:
    mirror = _mirror()
    if mirror is None:
        pytest.skip("no source mirror: set BUILDTOOL_SOURCE_MIRROR to a directory of upstream git snapshots")
    rv = load_recipes(project.recipes_dir)[package].get(version)
    try:
        tree = prepare(project, package, version, "windows-x86_64", tmp_path / "out", mirror=mirror,
                       cache_dir=tmp_path / "cache")
    except BuildtoolError as exc:
        if exc.message.startswith("cannot fetch"):
            pytest.skip(f"{rv.source.mirror_name} at {rv.source.commit[:12]} is not in the mirror")  # type: ignore[union-attr]
        raise
    prov = _check_tree(tree.root, project, package, version, "windows-x86_64")
    assert prov["source"]["kind"] == "git" and prov["source"]["commit"] == rv.source.commit  # type: ignore[union-attr]
    assert prov["source"]["content_sha256"] == rv.source.sha256  # the recipe pins it; fetch verified it
    assert tree.origin.startswith("mirror ") and "origin" not in prov["source"]
    assert [p["reference"] for p in prov["patches"]] == refs
    assert scan(tree.root, platform="windows-x86_64", cuda="13.0").clean
    if package == "selective-scan":
        # VMamba's subdirectory is the tree root; both modules' sources are there.
        assert (tree.root / "csrc" / "selective_scan" / "cus" / "selective_scan.cpp").is_file()
        assert (tree.root / "csrc" / "selective_scan" / "cusoflex" / "selective_scan_oflex.cpp").is_file()
    if package == "mamba-ssm-vim":
        assert (tree.root / "mamba_ssm" / "modules" / "mamba_simple.py").read_text().count(
            "= None, None, None, None\n") == 1


@pytest.mark.mirror
def test_prepare_cli_json(project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    mirror = _mirror()
    if mirror is None or not (mirror / "MzeroMiko+VMamba").exists():
        pytest.skip("no source mirror with MzeroMiko+VMamba (set BUILDTOOL_SOURCE_MIRROR)")
    monkeypatch.setenv("BUILDTOOL_ROOT", str(project.root))
    monkeypatch.setenv("BUILDTOOL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BUILDTOOL_SOURCE_MIRROR", str(mirror))
    out = tmp_path / "vm"
    assert main(["prepare", "selective-scan==0.0.2", "--platform", "linux-x86_64", "--out", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["root"] == str(out) and data["kernels"] == ["selective_scan_cuda_core", "selective_scan_cuda_oflex"]
    # Again into the same directory: refused without --force, replaced with it.
    assert main(["prepare", "selective-scan==0.0.2", "--platform", "linux-x86_64", "--out", str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(["prepare", "selective-scan==0.0.2", "--platform", "linux-x86_64", "--out", str(out),
                 "--force"]) == 0
    assert "patch selective-scan/msvc-m-log2e.patch (VM-1)" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- mistakes


def _one_line(exc: UserError) -> str:
    assert "\n" not in exc.message
    return exc.message


def test_unknown_version_is_one_line(project: Project, tmp_path: Path) -> None:
    with pytest.raises(UserError) as exc:
        prepare(project, "causal-conv1d", "1.7.1", "linux-x86_64", tmp_path / "out")
    assert _one_line(exc.value) == ('unknown version "1.7.1" of causal-conv1d (did you mean "1.7.0"?); known: '
                                    "1.1.1, 1.4.0, 1.5.2, 1.6.0, 1.6.1, 1.7.0")
    assert not (tmp_path / "out").exists()


def test_unknown_package_and_platform(project: Project, tmp_path: Path) -> None:
    with pytest.raises(UserError) as exc:
        prepare(project, "causal-conv", "1.7.0", "linux-x86_64", tmp_path / "out")
    assert _one_line(exc.value).startswith('unknown package "causal-conv" (did you mean "causal-conv1d"?); known: ')
    with pytest.raises(UserError) as exc:
        prepare(project, "Causal_Conv1d", "1.7.0", "win64", tmp_path / "out")  # name normalised; platform not
    assert _one_line(exc.value).startswith('unknown platform "win64"')
    with pytest.raises(UserError, match=r'expected PACKAGE==VERSION, got "causal-conv1d-1.7.0"'):
        parse_package_spec("causal-conv1d-1.7.0")


def test_missing_kernel_spec(project: Project, tmp_path: Path) -> None:
    (project.kernels_dir / "causal_conv1d_cuda-1.5.yaml").unlink()
    with pytest.raises(UserError) as exc:
        prepare(project, "causal-conv1d", "1.7.0", "linux-x86_64", tmp_path / "out")
    assert _one_line(exc.value) == (f"kernel spec causal_conv1d_cuda-1.5 (named by causal-conv1d 1.7.0) not found: "
                                    f"{project.kernels_dir / 'causal_conv1d_cuda-1.5.yaml'}")


def _local_sdist_recipe(project: Project, tmp_path: Path) -> tuple[Path, str]:
    """A recipe version whose sdist sits in a local mirror (built here), so no network is needed."""
    import io
    import tarfile

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    from buildtool.spec.kernelspec import load_kernel_spec

    spec = load_kernel_spec(project.kernels_dir / "causal_conv1d_cuda-1.5.yaml")
    files = {f"causal_conv1d-9.9.9/{src}": "// stand-in\n" for src in spec.sources}
    files |= {"causal_conv1d-9.9.9/csrc/causal_conv1d.cpp": "x and y;\n", "causal_conv1d-9.9.9/setup.py": ""}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tf.addfile(info, io.BytesIO(text.encode()))
    (mirror / "causal_conv1d-9.9.9.tar.gz").write_bytes(buf.getvalue())
    sha = hashlib.sha256(buf.getvalue()).hexdigest()
    recipe = project.recipes_dir / "causal-conv1d.yaml"
    recipe.write_text(recipe.read_text() + f"""  - version: "9.9.9"
    source:
      kind: pypi-sdist
      url: https://example.invalid/causal_conv1d-9.9.9.tar.gz
      sha256: {sha}
    kernels: [causal_conv1d_cuda-1.5]
    python_packages: [causal_conv1d]
""")
    return mirror, sha


def test_non_applying_patch_is_one_line_and_writes_nothing(project: Project, tmp_path: Path) -> None:
    mirror, _ = _local_sdist_recipe(project, tmp_path)
    (project.patches_dir / "causal-conv1d" / "zz-stale.patch").write_text("""summary: a stale patch
reference: T-9
versions: "==9.9.9"
fixes: nothing
upstream: none
diff --git a/csrc/causal_conv1d.cpp b/csrc/causal_conv1d.cpp
--- a/csrc/causal_conv1d.cpp
+++ b/csrc/causal_conv1d.cpp
@@ -1 +1 @@
-x or y;
+x || y;
""")
    with pytest.raises(PatchConflict) as exc:
        prepare(project, "causal-conv1d", "9.9.9", "windows-x86_64", tmp_path / "out", mirror=mirror,
                cache_dir=tmp_path / "cache")
    assert _one_line(exc.value) == ("patch causal-conv1d/zz-stale.patch: csrc/causal_conv1d.cpp hunk 1 (@@ -1 +1 @@): "
                                    "context does not match (no fuzz is allowed) [causal-conv1d 9.9.9 windows-x86_64]")
    assert "    |x or y;" in (exc.value.hint or "") and "  > |x and y;" in (exc.value.hint or "")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_wrong_hash_from_mirror_is_one_line(project: Project, tmp_path: Path) -> None:
    mirror, sha = _local_sdist_recipe(project, tmp_path)
    (mirror / "causal_conv1d-9.9.9.tar.gz").write_bytes(b"tampered")
    with pytest.raises(UserError) as exc:
        prepare(project, "causal-conv1d", "9.9.9", "linux-x86_64", tmp_path / "out", mirror=mirror,
                cache_dir=tmp_path / "cache")
    assert _one_line(exc.value) == (f"sha256 mismatch for mirrored {mirror / 'causal_conv1d-9.9.9.tar.gz'}: "
                                    f"expected {sha}, got {hashlib.sha256(b'tampered').hexdigest()}")


def test_cli_errors_exit_2_without_traceback(project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BUILDTOOL_ROOT", str(project.root))
    assert main(["prepare", "mamba-ssm==9.0", "--platform", "linux-x86_64", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: unknown version "9.0" of mamba-ssm') and "Traceback" not in err


def test_provenance_is_the_same_from_mirror_and_cache(project: Project, tmp_path: Path) -> None:
    """The build stage keeps a prepared tree (and its compiled objects) when the provenance is unchanged, so
    where the bytes came from must not be part of it."""
    mirror, sha = _local_sdist_recipe(project, tmp_path)
    first = prepare(project, "causal-conv1d", "9.9.9", "linux-x86_64", tmp_path / "a", mirror=mirror,
                    cache_dir=tmp_path / "cache")
    second = prepare(project, "causal-conv1d", "9.9.9", "linux-x86_64", tmp_path / "b", mirror=mirror,
                     cache_dir=tmp_path / "cache")
    assert first.origin.startswith("mirror ") and second.origin == "cache"
    assert first.provenance == second.provenance and first.provenance.source["sha256"] == sha
    assert (tmp_path / "a" / "provenance.json").read_text() == (tmp_path / "b" / "provenance.json").read_text()


def test_kernel_spec_that_does_not_fit_the_source(project: Project, tmp_path: Path) -> None:
    mirror, _ = _local_sdist_recipe(project, tmp_path)
    recipe = project.recipes_dir / "causal-conv1d.yaml"
    head, _, _ = recipe.read_text().rpartition("kernels: [causal_conv1d_cuda-1.5]")  # the 9.9.9 entry's
    recipe.write_text(head + "kernels: [selective_scan_cuda-2.2]\n    python_packages: [causal_conv1d]\n")
    with pytest.raises(UserError) as exc:
        prepare(project, "causal-conv1d", "9.9.9", "linux-x86_64", tmp_path / "out", mirror=mirror,
                cache_dir=tmp_path / "cache")
    assert _one_line(exc.value).startswith("kernel spec selective_scan_cuda-2.2 names csrc/selective_scan/")
    assert _one_line(exc.value).endswith("not in the source tree of causal-conv1d 9.9.9")
    assert not (tmp_path / "out").exists()

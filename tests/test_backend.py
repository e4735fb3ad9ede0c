"""PEP 517 backend on a prepared tree: the cell comes from the running torch; `pip wheel
--no-build-isolation` builds the same wheel `buildtool build` does; sdists are reproducible."""

from __future__ import annotations

import email.parser
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import tinyproj

from buildtool import backend
from buildtool.errors import UserError
from buildtool.spec.project import Project

needs_tiny = pytest.mark.skipif(tinyproj.available() is not None, reason=str(tinyproj.available()))


@pytest.fixture(scope="module")
def torch_env():
    reason = tinyproj.available()
    if reason is not None:
        pytest.skip(reason)
    from buildtool.build.buildenv import env_from_python

    return env_from_python(tinyproj.torch_python())


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from buildtool.source.prepare import prepare

    root = tmp_path_factory.mktemp("backendproj")
    mirror = tinyproj.make_project(root)
    prepared = prepare(Project(root), "tiny", "0.1", "linux-x86_64", root / "tree", mirror=mirror,
                       cache_dir=root / "cache")
    return prepared.root


def test_build_requirements_come_from_the_tree(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree)
    assert backend.get_requires_for_build_wheel() == ["ninja"]  # prepared without --torch: no pin
    assert backend.get_requires_for_build_wheel({"torch": "2.13.0"}) == ["torch==2.13.0", "ninja"]
    assert backend.get_requires_for_build_sdist() == []
    pinned = tmp_path / "pinned"
    shutil.copytree(tree, pinned)
    text = (pinned / "pyproject.toml").read_text(encoding="utf-8")
    (pinned / "pyproject.toml").write_text(text.replace('builder = "', 'torch = "2.14.1"\nbuilder = "'),
                                           encoding="utf-8")
    monkeypatch.chdir(pinned)
    assert backend.get_requires_for_build_wheel() == ["torch==2.14.1", "ninja"]


def _fails(capsys: pytest.CaptureFixture[str], hook: Any, pattern: str) -> None:
    """A hook given bad input prints one `buildtool: error:` message (no traceback) and exits non-zero."""
    with pytest.raises(SystemExit) as exc:
        hook()
    assert exc.value.code not in (0, None)
    err = capsys.readouterr().err
    assert err.startswith("buildtool: error: ") and "Traceback" not in err
    assert re.search(pattern, err, re.S), err


def test_tree_config_errors_name_the_file_and_field(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tree, broken)
    path = broken / "pyproject.toml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("kernels = [", "kernelz = ["), encoding="utf-8")
    monkeypatch.chdir(broken)
    _fails(capsys, backend.get_requires_for_build_wheel,
           r"pyproject.toml \[tool.buildtool\]: kernels: Field required.*kernelz")
    path.write_text(text.split("[tool.buildtool]")[0], encoding="utf-8")
    _fails(capsys, backend.get_requires_for_build_wheel, r"has no \[tool.buildtool\] table")
    path.write_text("[tool.buildtool\n", encoding="utf-8")
    _fails(capsys, backend.get_requires_for_build_wheel, "not valid TOML")


def test_cell_from_running_torch(torch_env, tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from buildtool.source.tree_config import read_tree_config

    policy_table = read_tree_config(tree).arch_policy
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    cell = backend.cell_for_current_env("causal-conv1d", "1.7.0", torch_env, {"archs": "8.0;9.0+PTX"})
    assert cell.id == "linux-x86_64-cp311-cu130-torch2.14-causal-conv1d-1.7.0"
    assert cell.archs == ("8.0", "9.0") and cell.ptx and cell.cxx11_abi and cell.torch == "2.14.1"
    assert cell.triton and cell.triton.startswith("triton==")
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    assert backend.cell_for_current_env("causal-conv1d", "1.7.0", torch_env).archs == ("9.0",)
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    policy = backend.cell_for_current_env("causal-conv1d", "1.7.0", torch_env, None, policy_table)  # the tree's
    assert "9.0" in policy.archs and "7.0" not in policy.archs  # CUDA 13 has no sm_70
    with pytest.raises(UserError, match=r"arch-policy\] has no entry for CUDA 13.0"):
        backend.cell_for_current_env("causal-conv1d", "1.7.0", torch_env, None, {})
    with pytest.raises(UserError, match="must look like"):
        backend.cell_for_current_env("causal-conv1d", "1.7.0", torch_env, {"archs": "sm_90"})


def test_sdist_is_reproducible(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree)
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    a = backend.build_sdist(str(tmp_path / "a"))
    b = backend.build_sdist(str(tmp_path / "b"))
    assert a == b == "tiny-0.1.tar.gz"
    assert (tmp_path / "a" / a).read_bytes() == (tmp_path / "b" / b).read_bytes()
    with tarfile.open(tmp_path / "a" / a) as tar:
        names = tar.getnames()
        assert {"tiny-0.1/PKG-INFO", "tiny-0.1/provenance.json", "tiny-0.1/pyproject.toml",
                "tiny-0.1/.buildtool/kernels/tiny_cuda.yaml", "tiny-0.1/csrc/tiny.cpp"} <= set(names)
        assert names == sorted(names)
        assert {m.mtime for m in tar.getmembers()} == {315532800}


def test_not_a_prepared_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    _fails(capsys, lambda: backend.build_wheel(str(tmp_path / "out")), "not a prepared tree")


@pytest.mark.slow
@needs_tiny
def test_pip_wheel_no_build_isolation(tree: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A venv with torch 2.14.1 and buildtool importable (both via .pth, nothing copied) runs
    `pip wheel --no-build-isolation` on the prepared tree; the result is the wheel `buildtool build` names."""
    python = tinyproj.torch_venv(tmp_path / "venv")
    site = next((tmp_path / "venv" / "lib").glob("python3.*/site-packages"))
    # buildtool from the checkout, and its pure-Python dependencies the torch env lacks (pyelftools) from
    # this interpreter's environment, after the torch env's own packages.
    import sysconfig

    here = sysconfig.get_paths()["purelib"]
    (site / "zz-buildtool-src.pth").write_text(f"{tinyproj.REPO}\n{here}\n", encoding="utf-8")
    env = tinyproj.build_env(tree.parent, tmp_path_factory.getbasetemp() / "tiny-object-cache")
    env.pop("BUILDTOOL_ROOT")
    env["PIP_NO_INDEX"] = "1"
    out = tmp_path / "wheels"
    proc = subprocess.run([str(python), "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", str(out),
                           "--config-settings", "archs=9.0", "--config-settings", "toolchain=system", str(tree)],
                          capture_output=True, text=True, env=env, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels = sorted(os.listdir(out))
    assert wheels == [tinyproj.WHEEL]
    with zipfile.ZipFile(out / wheels[0]) as zf:
        info = "tiny-0.1+cu130torch2.14cxx11abiTRUE.dist-info"
        meta = email.parser.Parser().parsestr(zf.read(f"{info}/METADATA").decode())
        assert meta["Version"] == "0.1+cu130torch2.14cxx11abiTRUE"
        assert "tiny_cuda.cpython-311-x86_64-linux-gnu.so" in zf.namelist()
        assert f"{info}/buildtool_provenance.json" in zf.namelist()
    assert (tree / "build" / "buildtool" / "build.log").is_file()


def _builder_wheel(out: Path) -> Path:
    """This checkout as a wheel (the builder is not on PyPI), built from a copy so the checkout stays clean."""
    src = out / "src"
    shutil.copytree(tinyproj.REPO / "buildtool", src / "buildtool", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(tinyproj.REPO / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w",
                           str(out / "wheels"), str(src)], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (wheel,) = (out / "wheels").glob("mamba_wheel_builder-*.whl")
    return wheel


def _extension(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.startswith("tiny_cuda.") and n.endswith(".so")]
        return zf.read(name)


@pytest.mark.slow
@needs_tiny
@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the tiny cell is cp311: the isolated env must be 3.11")
def test_isolated_python_m_build_gives_buildtool_builds_extension(tmp_path: Path) -> None:
    """`python -m build` with build isolation, on a prepared tree with no checkout of this project around
    it: the frontend installs the builder from the tree's own wheel (PIP_FIND_LINKS), torch 2.14.1 and ninja
    from get_requires_for_build_wheel, into a fresh env; `buildtool repair` gives the wheel name `buildtool
    build` gives. Both compiled cold (separate object caches), the extensions are the same bytes: the
    compile records placeholders for the tree, the build dir and the torch env (-ffile-prefix-map), not the
    isolated env's random /tmp/build-env-* nor the buildenvs cache path."""
    from buildtool.source.prepare import prepare

    project = tmp_path / "project"
    mirror = tinyproj.make_project(project)
    builder = _builder_wheel(tmp_path / "builder")
    tree = prepare(Project(project), "tiny", "0.1", "linux-x86_64", tmp_path / "isolated" / "tree", mirror=mirror,
                   cache_dir=tmp_path / "sources", torch="2.14.1", cuda="13.0", builder_wheel=builder).root
    env = tinyproj.build_env(project, tmp_path / "cache-isolated")
    env.pop("BUILDTOOL_ROOT")
    env["PIP_FIND_LINKS"] = str(tree / ".buildtool" / "wheels")
    env["PYTHONPATH"] = ""
    proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "isolated" / "dist"),
                           "-C", "archs=9.0", "-C", "toolchain=system", str(tree)],
                          cwd=tmp_path / "isolated", capture_output=True, text=True, env=env, timeout=3600, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    output = proc.stdout + proc.stderr  # build reports its steps on stderr
    assert "torch==2.14.1" in output and "Installing packages in isolated environment" in output, output[-3000:]
    (isolated,) = (tmp_path / "isolated" / "dist").glob("*.whl")
    assert isolated.name == tinyproj.WHEEL

    bt_env = tinyproj.build_env(project, tmp_path / "cache-buildtool")
    dist = tmp_path / "buildtool-dist"
    proc = subprocess.run(tinyproj.build_command(mirror, dist), capture_output=True, text=True, env=bt_env,
                          timeout=3600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (built,) = dist.glob("*.whl")

    from buildtool.cli import main

    assert main(["repair", str(isolated), "-w", str(tmp_path / "repaired")]) == 0
    (repaired,) = (tmp_path / "repaired").glob("*.whl")
    assert repaired.name == built.name  # the tag `buildtool build` gives
    assert re.search(rb"/tmp/build-env-[a-z0-9_]+/", _extension(isolated)) is None
    assert _extension(isolated) == _extension(built)


@pytest.fixture(scope="module")
def builder_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _builder_wheel(tmp_path_factory.mktemp("builder"))


@pytest.mark.parametrize("frontend", ["uv build", "pip wheel"])
def test_isolated_frontends_find_the_builder_and_report_a_missing_torch_pin(
        frontend: str, builder_wheel: Path, tree: Path, tmp_path: Path) -> None:
    """uv and pip, each with build isolation and no checkout around the tree, install the builder from a
    find-links directory (it is not on PyPI) and run its hooks; a tree prepared without --torch gets no torch
    in the isolated env, and the backend says so in one line instead of a traceback."""
    copy = tmp_path / "tree"
    shutil.copytree(tree, copy, ignore=shutil.ignore_patterns("build"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BUILDTOOL_ROOT", "VIRTUAL_ENV")}
    env.update(PIP_FIND_LINKS=str(builder_wheel.parent), UV_FIND_LINKS=str(builder_wheel.parent))
    tools = Path(sys.executable).parent
    if frontend == "uv build":
        cmd = [str(tools / "uv"), "build", "--wheel", "--python", sys.executable, "--out-dir", str(tmp_path / "out"),
               str(copy)]
    else:
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "out"), str(copy)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert "buildtool: error: no usable torch in the build environment" in output, output[-3000:]
    assert "hint: prepare the tree with --torch" in output
    assert "UserError" not in output  # no traceback of the backend's exception

"""Build environments: index choice and install commands (pure), torch introspection of a real
interpreter, cell checks, and a real isolated venv with the default cell's torch (cached: paid once)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from torchenv import torch_env

from buildtool.build.buildenv import (
    BuildEnv,
    check_matches,
    create_build_env,
    current_env,
    env_from_python,
    env_key,
    find_python,
    install_commands,
    mismatches,
    torch_index,
)
from buildtool.errors import UserError
from buildtool.host import default_cache_dir
from buildtool.spec.matrix import Cell

# The torch venv the test session provides (noxfile `tests`), else the running interpreter's.
TORCHENV = torch_env() / "bin" / "python"


def cell(**over: object) -> Cell:
    base: dict[str, object] = dict(
        platform="linux-x86_64", python="3.11", cuda="13.0", torch="2.14.1", package="causal-conv1d",
        version="1.7.0", cxx11_abi=True, cxx_std="20", archs=("9.0",), ptx=False, triton="3.8.0",
    )
    base.update(over)
    return Cell.model_validate(base)


def fake_env(**over: object) -> BuildEnv:
    base: dict[str, object] = dict(
        python="/x/bin/python", python_version="3.11.7", torch_version="2.14.1+cu130", torch_cuda="13.0",
        cxx11_abi=True, include_dirs=["/x/torch/include"], library_dirs=["/x/torch/lib"],
        libraries=["c10", "torch"], torch_lib_dir="/x/torch/lib", site_packages="/x/site", ext_suffix=".so",
    )
    base.update(over)
    return BuildEnv.model_validate(base)


@pytest.mark.parametrize(
    ("over", "index_url", "expected"),
    [
        ({}, None, None),  # torch 2.14 + CUDA 13.0 is PyPI's default build on Linux
        ({"cuda": "12.6"}, None, "https://download.pytorch.org/whl/cu126"),
        ({"platform": "windows-x86_64", "cxx11_abi": False}, None, "https://download.pytorch.org/whl/cu130"),
        ({"torch": "2.4.1", "cuda": "12.4", "python": "3.10", "cxx11_abi": False}, None, "https://download.pytorch.org/whl/cu124"),
        ({"torch": "2.4.1", "cuda": "12.1", "python": "3.10", "cxx11_abi": False}, None, None),
        ({"cuda": "12.6"}, "https://mirror.example/whl/{cuda_tag}", "https://mirror.example/whl/cu126"),
    ],
)
def test_torch_index(over: dict[str, object], index_url: str | None, expected: str | None) -> None:
    assert torch_index(cell(**over), index_url) == expected


def test_install_commands() -> None:
    py = Path("/e/bin/python")
    pip_cmds = install_commands(py, cell(cuda="12.6"), "https://download.pytorch.org/whl/cu126", "pip")
    assert pip_cmds[0][:4] == ["/e/bin/python", "-m", "pip", "install"]
    assert pip_cmds[0][-3:] == ["torch==2.14.1", "--index-url", "https://download.pytorch.org/whl/cu126"]
    assert pip_cmds[1][-5:] == ["ninja", "numpy", "packaging", "setuptools", "wheel"]
    uv_cmds = install_commands(py, cell(), None, "uv")
    assert uv_cmds[0] == ["uv", "pip", "install", "--python", "/e/bin/python", "torch==2.14.1"]
    assert env_key(cell()) == "torch2.14.1-cu130-py3.11-linux-x86_64"


def test_mismatches_name_both_sides() -> None:
    assert mismatches(fake_env(), cell()) == []
    problems = mismatches(fake_env(torch_cuda="12.8", python_version="3.12.1", cxx11_abi=False), cell())
    assert "torch built for CUDA 12.8 (cell: 13.0)" in problems
    assert "Python 3.12.1 (cell: 3.11)" in problems
    assert "torch C++11 ABI False (cell: True)" in problems
    assert mismatches(fake_env(torch_cuda=None), cell()) == ["torch built for CUDA none (CPU build) (cell: 13.0)"]
    assert mismatches(fake_env(cxx11_abi=True), cell(platform="windows-x86_64", cxx11_abi=False)) == []
    with pytest.raises(UserError, match=r"torch 2\.13\.0 \(cell: 2\.14\.1\)"):
        check_matches(fake_env(torch_version="2.13.0"), cell())


def test_find_python() -> None:
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert find_python(running) == Path(sys.executable)
    with pytest.raises(UserError, match=r"no Python 2\.9 interpreter"):
        find_python("2.9")


def test_current_env_without_torch_is_a_user_error() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="cannot import torch"):
            current_env()
    else:
        env = current_env()
        assert env.origin == "current" and env.python == Path(sys.executable)


@pytest.mark.skipif(not TORCHENV.exists(), reason=f"no torch venv at {TORCHENV} (set BUILDTOOL_TEST_TORCH_ENV)")
def test_env_from_real_interpreter() -> None:
    env = env_from_python(TORCHENV)
    assert env.torch_version.startswith("2.14.1") and env.torch_cuda == "13.0" and env.cxx11_abi is True
    assert any(p.name == "include" and p.parent.name == "torch" for p in env.include_dirs)
    assert any((p / "Python.h").is_file() for p in env.include_dirs)
    assert not any("nonexistent" in str(p) for p in env.include_dirs)  # the toolkit's dirs stay out
    assert any((p / "cublas_v2.h").is_file() for p in env.cuda_library_include_dirs)
    assert {"c10", "torch", "torch_cpu", "torch_python", "c10_cuda", "torch_cuda"} <= set(env.libraries)
    assert env.torch_lib_dir.is_dir() and env.ext_suffix.endswith(".so")
    check_matches(env, cell())
    with pytest.raises(UserError, match=r"CUDA 13\.0 \(cell: 12\.6\)"):
        check_matches(env, cell(cuda="12.6"))


@pytest.mark.slow
@pytest.mark.skipif(sys.version_info[:2] != (3, 11) or not sys.platform.startswith("linux"),
                    reason="the local torch 2.14.1 wheel is cp311 linux")
def test_create_build_env_real() -> None:
    """A venv with torch 2.14.1 (CUDA 13.0) from pip's configured indexes (here: the local wheel copy);
    cached under the user cache, so the suite pays it once."""
    root = default_cache_dir() / "buildenvs"
    env = create_build_env(cell(), root)
    assert env.origin == "created" and env.torch_cuda == "13.0" and env.cxx11_abi is True
    assert env.python.is_relative_to(root / env_key(cell()))
    assert env.python_version.startswith("3.11.")
    # The env was built elsewhere and renamed: its console scripts must point at the final location.
    pip_script = env.python.parent / "pip"
    assert pip_script.read_text().splitlines()[0].startswith(f"#!{env.python.parent}/python")
    assert subprocess.run([str(pip_script), "--version"], capture_output=True).returncode == 0
    assert subprocess.run([str(env.python.parent / "ninja"), "--version"], capture_output=True).returncode == 0
    proc = subprocess.run([str(env.python), "-c", "import numpy, torch; print(torch.version.cuda)"],
                          capture_output=True, text=True)
    assert proc.stdout.strip() == "13.0", proc.stderr
    assert create_build_env(cell(), root) == env  # reused, not rebuilt
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary dirs left


def test_find_python_skips_an_interpreter_that_does_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pyenv shim for an installed-but-unselected version exits 127: it must not be taken (seen on the
    developer machine, where `python3.12` is such a shim)."""
    from buildtool.build.buildenv import find_python

    shim = tmp_path / "bin" / "python3.98"
    shim.parent.mkdir()
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.98: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim.parent}:/usr/bin:/bin")
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
    with pytest.raises(UserError, match=r"python3\.98 \(does not run as Python 3\.98\)"):
        find_python("3.98")

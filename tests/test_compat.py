"""buildtool/data/compat.yaml: every entry consistent with itself and with the rest of the table."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from buildtool.spec.compat import PLATFORMS, Compat, TorchInfo, load_compat
from buildtool.versions import torch_minor

COMPAT = load_compat()
TORCH = list(COMPAT.torch.items())


def _ids(items: list[tuple[str, TorchInfo]]) -> list[str]:
    return [k for k, _ in items]


def test_loads_and_is_sorted() -> None:
    assert isinstance(COMPAT, Compat)
    keys = list(COMPAT.torch)
    assert keys == sorted(keys, key=Version)
    assert list(COMPAT.platforms) == list(PLATFORMS)


@pytest.mark.parametrize(("minor", "info"), TORCH, ids=_ids(TORCH))
def test_torch_entry_consistent(minor: str, info: TorchInfo) -> None:
    release = Version(info.release)
    assert torch_minor(info.release) == minor, "release must belong to its minor"
    assert len(release.release) == 3 and not release.is_prerelease
    assert info.cuda, "at least one CUDA build"
    for cuda in (*info.cuda, *(info.aarch64_cuda or ())):
        assert cuda in COMPAT.cuda, f"CUDA {cuda} not in the cuda table"
    assert list(info.cuda) == sorted(info.cuda, key=Version) and len(set(info.cuda)) == len(info.cuda)
    assert info.pypi_default_cuda in info.cuda
    assert list(info.python) == sorted(info.python, key=Version) and len(set(info.python)) == len(info.python)
    assert all(Version(py).major == 3 for py in info.python)
    assert set(info.platforms) <= set(PLATFORMS) and "linux-x86_64" in info.platforms
    if info.aarch64_cuda is not None:
        assert "linux-aarch64" in info.platforms
    if isinstance(info.cxx11_abi, dict):
        assert set(info.cxx11_abi) == set(info.cuda), "an ABI per CUDA build, for every build"
    if isinstance(info.cxx_std, dict):
        assert "default" in info.cxx_std and set(info.cxx_std) - {"default"} <= set(PLATFORMS)
    assert info.std_for("linux-x86_64") in {"17", "20"} and info.std_for("windows-x86_64") in {"17", "20"}
    assert Version(info.glibc) >= Version("2.17")
    # triton is paired with torch; triton-windows exists from torch 2.4 on, and may lag a new torch (2.15)
    assert info.triton is not None
    if Version("2.4") <= Version(minor) <= Version("2.14"):
        assert info.triton_windows is not None
    if info.triton_windows is not None:
        win, linux = Version(info.triton_windows), Version(info.triton)
        assert win.major == linux.major
        # triton-windows starts at 3.1, which serves torch 2.4 (Linux: triton 3.0) too
        assert win.minor == linux.minor or (minor == "2.4" and (win.minor, linux.minor) == (1, 0))


def test_history_is_monotonic() -> None:
    """Newer torch never needs an older triton, an older glibc, or drops C++20 again."""
    infos = list(COMPAT.torch.values())
    for older, newer in itertools.pairwise(infos):
        assert Version(newer.triton or "0") >= Version(older.triton or "0"), newer.release
        assert Version(newer.glibc) >= Version(older.glibc), newer.release
        assert newer.std_for("windows-x86_64") >= older.std_for("windows-x86_64")


def test_cxx11_abi_rules() -> None:
    assert COMPAT.torch["2.6"].abi_for("linux-x86_64", "12.6") is True
    assert COMPAT.torch["2.6"].abi_for("linux-x86_64", "12.4") is False
    assert COMPAT.torch["2.7"].abi_for("linux-x86_64", "12.8") is True
    assert COMPAT.torch["2.7"].abi_for("windows-x86_64", "12.8") is False  # no such ABI on Windows
    assert COMPAT.torch["2.4"].abi_for("linux-x86_64", "12.4") is False


@pytest.mark.parametrize(("cuda", "info"), list(COMPAT.cuda.items()), ids=list(COMPAT.cuda))
def test_cuda_entry_consistent(cuda: str, info: object) -> None:
    from buildtool.spec.compat import CudaInfo

    assert isinstance(info, CudaInfo)
    assert Version(info.min_arch) < Version(info.max_arch)
    assert info.can_compile(info.min_arch) and info.can_compile(info.max_arch)
    assert not info.can_compile("3.0")
    assert 9 <= info.max_gcc <= 20
    if Version(cuda) >= Version("13.0"):
        assert Version(info.min_arch) >= Version("7.5"), "CUDA 13 dropped everything below sm_75"
    used = any(cuda in t.cuda or cuda in (t.aarch64_cuda or ()) for t in COMPAT.torch.values())
    assert used, f"CUDA {cuda} is not a build of any torch"


def test_cuda_table_monotonic() -> None:
    infos = list(COMPAT.cuda.items())
    assert [k for k, _ in infos] == sorted(COMPAT.cuda, key=Version)
    for (_, older), (_, newer) in itertools.pairwise(infos):
        assert newer.max_gcc >= older.max_gcc
        assert Version(newer.max_arch) >= Version(older.max_arch)


def test_platform_entries() -> None:
    for name, info in COMPAT.platforms.items():
        assert name == f"{info.os}-{info.machine.lower().replace('amd64', 'x86_64')}"
        assert info.wheel_tag.endswith(info.machine.lower()) or info.wheel_tag == "win_amd64"


@pytest.mark.parametrize(("minor", "info"), TORCH, ids=_ids(TORCH))
def test_triton_requirement_accepts_every_releases_own_pin(minor: str, info: TorchInfo) -> None:
    """A full-ABI wheel requires torch==MINOR.* and the triton of triton_requirement: every release of that
    minor must resolve, i.e. the version its METADATA pins is inside our specifier (else pip refuses the pair)."""
    assert info.triton_by_release, f"torch {minor}: no METADATA evidence for its triton pin"
    assert info.release in info.triton_by_release
    (dist, spec) = COMPAT.triton_requirement(info.release, "linux-x86_64") or ("", "")
    assert dist == "triton"
    for release, theirs in info.triton_by_release.items():
        assert torch_minor(release) == minor
        pinned = Version(re.sub(r"^(==|~=)", "", theirs))
        assert pinned in SpecifierSet(spec), f"torch {release} requires triton{theirs}, we would require {spec}"
    newest = max(info.triton_by_release, key=Version)
    assert Version(info.triton or "0") == Version(re.sub(r"^(==|~=)", "", info.triton_by_release[newest]))


def test_every_torch_of_the_matrix_has_a_triton_pin() -> None:
    """matrix.yaml's torch axes and pinned cells: each release has its minor's triton, with its METADATA."""
    text = (Path(__file__).resolve().parents[1] / "matrix.yaml").read_text()
    releases = set(re.findall(r'"(2\.\d+\.\d+)"', text))
    assert {"2.6.0", "2.14.1", "2.15.0"} <= releases
    for release in sorted(releases, key=Version):
        info = COMPAT.torch_info(release)
        assert info is not None and info.triton is not None, release
        if release == info.release:
            assert release in info.triton_by_release, release


def test_triton_requirement() -> None:
    assert COMPAT.triton_requirement("2.14.1", "linux-x86_64") == ("triton", "==3.8.*")
    assert COMPAT.triton_requirement("2.14.1", "windows-x86_64") == ("triton-windows", "==3.8.*")
    assert COMPAT.triton_requirement("2.3.1", "windows-x86_64") is None
    # torch-2.15.0 METADATA: triton~=3.9.0; PyPI has no triton-windows 3.9 yet
    assert COMPAT.triton_requirement("2.15.0", "linux-x86_64") == ("triton", "==3.9.*")
    # 2.12.0 pins triton==3.7.0, 2.12.1 triton==3.7.1: a torch==2.12.* wheel must accept both
    assert COMPAT.triton_requirement("2.12.0", "linux-x86_64") == ("triton", "==3.7.*")
    assert COMPAT.triton_requirement("2.15.0", "windows-x86_64") is None
    assert COMPAT.triton_requirement("1.13", "linux-x86_64") is None


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"platform": "linux-x86_64", "python": "3.11", "cuda": "12.6", "torch": "2.7.1"}, None),
        ({"platform": "linux-x86_64", "python": "3.11", "cuda": "12.6", "torch": "2.7"}, None),
        ({"platform": "linux-x86_64", "python": "3.11", "cuda": "12.6", "torch": "2.7.0"}, "built from release 2.7.1"),
        ({"platform": "linux-aarch64", "python": "3.11", "cuda": "12.1", "torch": "2.4.1"}, "no official linux-aarch64"),
        ({"platform": "linux-aarch64", "python": "3.11", "cuda": "12.6", "torch": "2.7.1"}, "no CUDA 12.6 build for linux-aarch64"),
        ({"platform": "windows-x86_64", "python": "3.14", "cuda": "12.6", "torch": "2.8.0"}, "no wheels for Python 3.14"),
        ({"platform": "linux-x86_64", "python": "3.11", "cuda": "12.6", "torch": "1.13.1"}, "not in the compatibility table"),
        ({"platform": "linux-x86_64", "python": "3.10", "cuda": "13.2", "torch": "2.15.0"}, "no wheels for Python 3.10"),
        ({"platform": "linux-x86_64", "python": "3.12", "cuda": "12.6", "torch": "2.15.0"}, "no CUDA 12.6 build"),
        ({"platform": "linux-aarch64", "python": "3.14", "cuda": "13.2", "torch": "2.15.0"}, None),
    ],
)
def test_violations(kwargs: dict[str, str], fragment: str | None) -> None:
    reasons = COMPAT.violations(**kwargs)
    if fragment is None:
        assert reasons == []
    else:
        assert any(fragment in r for r in reasons), reasons

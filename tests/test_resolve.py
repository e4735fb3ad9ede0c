"""Resolver: pure rules over a manifest of many candidates; every rejection reason exercised."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from fixture_wheels import buildtool

from buildtool.errors import UserError
from buildtool.publish.index import WheelRecord
from buildtool.user.resolve import RULES, Target, arch_covered, load_manifest, resolve


def rec(*, package: str = "mamba-ssm", version: str = "2.3.2", py: str = "cp311", platform: str = "linux-x86_64",
        torch: str = "2.8", cuda: str = "12.8", abi: bool = True, archs: tuple[str, ...] = ("8.0", "9.0"),
        ptx: str | None = None, glibc: str | None = "2.28") -> WheelRecord:
    label = f"cu{cuda.replace('.', '')}torch{torch}cxx11abi{'TRUE' if abi else 'FALSE'}"
    tag = {"linux-x86_64": "linux_x86_64", "linux-aarch64": "linux_aarch64", "windows-x86_64": "win_amd64"}[platform]
    name = f"{package.replace('-', '_')}-{version}+{label}-{py}-{py}-{tag}.whl"
    return WheelRecord(
        filename=name, url=f"files/{name}", package=package, dist=package.replace("-", "_"),
        version=f"{version}+{label}", public_version=version, python_tag=py, abi_tag=py, platform_tag=tag,
        platform=platform, torch=torch, cuda=cuda, cxx11_abi=abi, archs=archs, ptx=ptx, min_glibc=glibc,
        requires_dist=(f"torch=={torch}.*",), sha256="0" * 64, size=1,
    )


TARGET = Target(python_tag="cp311", platform="linux-x86_64", glibc="2.31", torch="2.8.0+cu128", torch_cuda="12.8",
                cxx11_abi=True, gpu_archs=("8.6",))


def many() -> list[WheelRecord]:
    """A grid of candidates around the target: every axis varied."""
    out = [
        rec(py=py, platform=plat, torch=torch, cuda=cuda, abi=abi)
        for py, plat, torch, cuda, abi in itertools.product(
            ("cp310", "cp311", "cp312"), ("linux-x86_64", "linux-aarch64", "windows-x86_64"),
            ("2.6", "2.7", "2.8", "2.9"), ("11.8", "12.8", "13.0"), (True, False))
    ]
    out += [
        rec(glibc="2.35", version="2.3.3"),              # newer, but needs a newer glibc (F10)
        rec(archs=("9.0", "10.0"), version="2.3.4"),     # newer, but no cubin for sm_86 (F12)
        rec(version="2.2.4"),                            # older: fits, loses on preference
        rec(version="2.3.2", cuda="12"),                 # upstream-style CUDA-major label, fits, same version
    ]
    return out


def test_picks_the_only_full_fit() -> None:
    res = resolve("mamba-ssm", many(), TARGET)
    assert res.chosen is not None
    c = res.chosen
    assert (c.python_tag, c.platform, c.torch, c.cuda_major, c.cxx11_abi, c.public_version) == (
        "cp311", "linux-x86_64", "2.8", 12, True, "2.3.2")
    rules = {r.rule for r in res.rejected}
    assert rules >= {"python", "platform", "torch", "cuda", "abi", "glibc", "gpu-arch", "preference"}
    assert {r.rule for r in res.rejected} - {"preference"} <= {rule for rule, _, _ in RULES}
    # every candidate accounted for exactly once
    assert len(res.rejected) + 1 == len(many())


@pytest.mark.parametrize(("candidate", "rule", "words"), [
    (rec(py="cp310"), "python", "Python cp310, this Python is cp311"),
    (rec(platform="windows-x86_64"), "platform", "windows-x86_64, this machine is linux-x86_64"),
    (rec(platform="linux-aarch64"), "platform", "linux-aarch64"),
    (rec(torch="2.7"), "torch", "torch 2.7, installed torch is 2.8.0+cu128"),
    (rec(cuda="13.0"), "cuda", "CUDA 13, torch uses CUDA 12.8"),
    (rec(cuda="11.8"), "cuda", "CUDA 11"),
    (rec(abi=False), "abi", "cxx11abiFALSE, torch._C._GLIBCXX_USE_CXX11_ABI is TRUE"),
    (rec(glibc="2.35"), "glibc", "needs glibc 2.35, this system has 2.31"),
    (rec(archs=("9.0",)), "gpu-arch", "no kernel for GPU sm_86 (wheel has sm_90)"),
    (rec(archs=("7.5",), ptx="8.9"), "gpu-arch", "+PTX sm_89"),
])
def test_each_rejection_reason(candidate: WheelRecord, rule: str, words: str) -> None:
    res = resolve("mamba-ssm", [candidate], TARGET)
    assert res.chosen is None
    (r,) = res.rejected
    assert r.rule == rule and words in r.reason


def test_version_specifier_and_unknown_package() -> None:
    res = resolve("mamba-ssm==2.2.4", many(), TARGET)
    assert res.chosen is not None and res.chosen.public_version == "2.2.4"
    assert any(r.rule == "version" for r in res.rejected)
    with pytest.raises(UserError, match='did you mean "mamba-ssm"'):
        resolve("mamba-sm", many(), TARGET)


def test_cpu_torch_and_missing_torch_are_explained() -> None:
    cpu = TARGET.model_copy(update={"torch": "2.8.0+cpu", "torch_cuda": None})
    (r,) = resolve("mamba-ssm", [rec()], cpu).rejected
    assert r.rule == "cuda" and "CPU-only" in r.reason
    none = TARGET.model_copy(update={"torch": None, "torch_cuda": None})
    (r,) = resolve("mamba-ssm", [rec()], none).rejected
    assert r.rule == "torch" and "not installed" in r.reason


def test_abi_ignored_on_windows_and_no_gpu_skips_arch_rule() -> None:
    win = TARGET.model_copy(update={"platform": "windows-x86_64", "cxx11_abi": False, "gpu_archs": ()})
    res = resolve("mamba-ssm", [rec(platform="windows-x86_64", archs=("12.0",))], win)
    assert res.chosen is not None
    assert any("GPU-arch rule was not applied" in n for n in res.notes)


@pytest.mark.parametrize(("gpu", "archs", "ptx", "ok"), [
    ("8.6", ("8.0",), None, True),      # same major, higher minor
    ("8.0", ("8.6",), None, False),     # lower minor: no
    ("9.0", ("8.0",), None, False),     # other major: no
    ("9.0", ("8.0",), "8.0", True),     # PTX JIT for newer
    ("12.0", ("10.0",), None, False),   # sm_100 does not cover sm_120
    ("9.0", ("9.0a",), None, True),     # arch-specific, exact
    ("10.0", ("9.0a",), None, False),
    ("6.1", ("6.2",), None, False),     # sm_62 does not cover 6.0/6.1 (failures.md §3)
])
def test_arch_coverage(gpu: str, archs: tuple[str, ...], ptx: str | None, ok: bool) -> None:
    assert arch_covered(gpu, archs, ptx) is ok


def test_cli_resolve_explain_json_with_overrides(tmp_path: Path) -> None:
    manifest = {"format": 1, "generator": "t", "generated": "now", "base_url": "", "index_url": "simple/",
                "wheels": [json.loads(w.model_dump_json()) for w in many()]}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    args = ["resolve", "mamba-ssm", "--manifest", str(path), "--torch", "2.8.0", "--cuda", "12.8", "--abi", "TRUE",
            "--gpu-arch", "8.6", "--glibc", "2.31", "--python-tag", "cp311", "--platform", "linux-x86_64", "--no-host"]
    proc = buildtool(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["chosen"]["filename"] == "mamba_ssm-2.3.2+cu128torch2.8cxx11abiTRUE-cp311-cp311-linux_x86_64.whl"
    assert data["url"].startswith("file://") and data["url"].endswith(".whl")
    human = buildtool(*args, "--explain")
    assert human.returncode == 0
    assert "rejected candidates" in human.stdout and "needs glibc 2.35" in human.stdout
    miss = buildtool("resolve", "mamba-ssm", "--manifest", str(path), "--torch", "2.5.1", "--no-host")
    assert miss.returncode == 1 and "no wheel of mamba-ssm fits" in miss.stdout


def test_manifest_errors_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no index given"):
        load_manifest(None, None)
    bad = tmp_path / "manifest.json"
    bad.write_text("{}")
    with pytest.raises(UserError, match="not a buildtool manifest"):
        load_manifest(None, bad)


def stable(*, py: str = "cp310", cuda: str = "13", floor: str = "2.10", version: str = "1.7.0",
           tag: str = "manylinux_2_28_x86_64") -> WheelRecord:
    """A stable-ABI (abi3) wheel: the label names the CUDA major only, Requires-Dist the torch floor."""
    name = f"causal_conv1d-{version}+cu{cuda}stable-{py}-abi3-{tag}.whl"
    return WheelRecord(
        filename=name, url=f"files/{name}", package="causal-conv1d", dist="causal_conv1d", version=f"{version}+cu{cuda}stable",
        public_version=version, python_tag=py, abi_tag="abi3", platform_tag=tag, platform="linux-x86_64",
        torch=None, cuda=cuda, cxx11_abi=None, archs=("9.0",), requires_dist=(f"torch>={floor}",), sha256="0" * 64, size=1,
    )


STABLE_TARGET = Target(python_tag="cp311", platform="linux-x86_64", glibc="2.36", torch="2.14.1+cu130",
                       torch_cuda="13.0", cxx11_abi=True, gpu_archs=("9.0",))


@pytest.mark.parametrize(("python_tag", "wheel_py", "fits"), [
    ("cp310", "cp39", True),      # "cp39" <= "cp310" is False as strings: packaging.tags knows better
    ("cp313", "cp310", True),
    ("cp311", "cp310", True),
    ("cp311", "cp312", False),    # abi3 from 3.12 does not run on 3.11
    ("cp39", "cp310", False),
])
def test_abi3_python_rule_follows_packaging_tags(python_tag: str, wheel_py: str, fits: bool) -> None:
    target = STABLE_TARGET.model_copy(update={"python_tag": python_tag})
    res = resolve("causal-conv1d", [stable(py=wheel_py)], target)
    assert (res.chosen is not None) is fits, res.rejected
    if not fits:
        (r,) = res.rejected
        assert r.rule == "python" and f"{wheel_py}-abi3 (CPython >= " in r.reason


def test_stable_wheel_torch_floor_and_cuda_major() -> None:
    assert resolve("causal-conv1d", [stable()], STABLE_TARGET).chosen is not None
    old = STABLE_TARGET.model_copy(update={"torch": "2.9.1+cu130"})
    (r,) = resolve("causal-conv1d", [stable()], old).rejected
    assert r.rule == "torch" and "needs torch>=2.10 (stable ABI floor)" in r.reason
    (r,) = resolve("causal-conv1d", [stable(cuda="12")], STABLE_TARGET).rejected
    assert r.rule == "cuda" and "CUDA 12" in r.reason


def test_full_abi_wheel_preferred_over_abi3_at_equal_version() -> None:
    """packaging.tags' order: cp311-cp311 before cp310-abi3 (what pip would prefer too)."""
    full = rec(package="causal-conv1d", version="1.7.0", py="cp311", torch="2.14", cuda="13.0", archs=("9.0",))
    res = resolve("causal-conv1d", [stable(), full], STABLE_TARGET)
    assert res.chosen == full
    assert [r.rule for r in res.rejected] == ["preference"]


def test_compressed_platform_tag_set() -> None:
    res = resolve("causal-conv1d", [stable(tag="manylinux_2_27_x86_64.manylinux_2_28_x86_64")], STABLE_TARGET)
    assert res.chosen is not None
    aarch = stable(tag="manylinux_2_28_aarch64").model_copy(update={"platform": "linux-aarch64"})
    (r,) = resolve("causal-conv1d", [aarch], STABLE_TARGET).rejected
    assert r.rule == "platform"

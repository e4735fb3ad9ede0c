"""Known-miscompiled SASS (data/bad_sass.yaml): the rule data, the arch filter the build applies, and the build
stage using it (causal-conv1d sm_103 with nvcc 13.x: Dao-AILab/causal-conv1d#105)."""

from __future__ import annotations

import pytest

from buildtool.build.cell import without_bad_sass
from buildtool.spec.badsass import affected, load_rules, safe_archs
from buildtool.spec.compat import load_compat
from buildtool.spec.matrix import Cell


def test_rules_load_and_cite_upstream() -> None:
    (rule,) = [r for r in load_rules() if r.package == "causal-conv1d"]
    assert (rule.arch, rule.instead, rule.nvcc) == ("10.3", "10.0", ">=13.0")
    assert "Dao-AILab/causal-conv1d#105" in rule.upstream and "PR #106" in rule.upstream
    assert set(rule.kernels) == {"causal_conv1d_fwd", "causal_conv1d_update"}
    compat = load_compat()
    for r in load_rules():  # both arches are real targets of the toolkits the rule names
        assert compat.cuda["13.0"].can_compile(r.arch) and compat.cuda["13.0"].can_compile(r.instead)


@pytest.mark.parametrize(
    ("package", "archs", "nvcc", "expected"),
    [
        ("causal-conv1d", ("9.0", "10.0", "10.3", "12.0"), "13.0.88", ("9.0", "10.0", "12.0")),
        ("causal-conv1d", ("9.0", "10.3"), "13.2.51", ("9.0", "10.0")),  # replaced, not just dropped
        ("causal-conv1d", ("10.3",), "12.9.86", ("10.3",)),  # CUDA 12.9's sm_103 cubin is fine
        ("mamba-ssm", ("10.0", "10.3"), "13.0.88", ("10.0", "10.3")),  # only causal-conv1d is affected
    ],
)
def test_safe_archs(package: str, archs: tuple[str, ...], nvcc: str, expected: tuple[str, ...]) -> None:
    got, ptx, applied = safe_archs(package, "1.7.0" if package == "causal-conv1d" else "2.3.2.post1", archs, True, nvcc)
    assert got == expected and ptx is True
    assert bool(applied) == (got != archs)


def test_affected_wheel() -> None:
    assert affected("causal-conv1d", "1.7.0+cu130torch2.14cxx11abiTRUE", ("10.0", "10.3"), "13.0.88") is not None
    assert affected("causal-conv1d", "1.4.0", ("10.3",), None) is not None  # unknown nvcc: assume affected
    assert affected("causal-conv1d", "1.7.0", ("10.0",), "13.0.88") is None


def _cell(archs: tuple[str, ...], package: str = "causal-conv1d", version: str = "1.7.0") -> Cell:
    return Cell(platform="linux-x86_64", python="3.11", cuda="13.0", torch="2.14.1", package=package, version=version,
                cxx11_abi=True, cxx_std="20", archs=archs, ptx=True, triton="triton==3.8.0")


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, text: str) -> None:
        self.lines.append(text)


def test_build_stage_keeps_sm_103_sass_out_of_causal_conv1d() -> None:
    """What `buildtool build --archs 10.0,10.3` does to a causal-conv1d cell once the toolchain is nvcc 13.0."""
    log = _Log()
    cell = without_bad_sass(_cell(("9.0", "10.0", "10.3")), "13.0.88", log)  # type: ignore[arg-type]
    assert cell.archs == ("9.0", "10.0") and cell.ptx is True and cell.arch_list == "9.0;10.0+PTX"
    assert len(log.lines) == 1 and "sm_103 -> sm_100 SASS with nvcc 13.0.88" in log.lines[0]
    assert "causal-conv1d#105" in log.lines[0]
    untouched = _cell(("9.0", "10.3"), "mamba-ssm", "2.3.2.post1")
    assert without_bad_sass(untouched, "13.0.88") is untouched

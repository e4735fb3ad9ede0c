"""Arch coverage: which code each GPU runs, the fewest SASS targets, and the shipped policy's coverage."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from buildtool.errors import UserError
from buildtool.spec import archcover
from buildtool.spec.compat import load_compat
from buildtool.spec.matrix import load_matrix

ROOT = Path(__file__).resolve().parents[1]
# upstream setup.py (causal-conv1d 1.7.0, mamba-ssm 2.3.2.post1) -gencode lists per toolkit
UPSTREAM_SASS = {
    "12.6": ["7.5", "8.0", "8.7", "9.0"],
    "12.8": ["7.5", "8.0", "8.7", "9.0", "10.0", "12.0"],
    "13.0": ["7.5", "8.0", "8.7", "9.0", "10.0", "12.0", "10.3", "11.0", "12.1"],
}


@pytest.mark.parametrize(("gpu", "archs", "ptx", "expected"), [
    ("9.0", ["8.0", "9.0"], None, ("native", "sm_90")),
    ("8.9", ["8.0", "8.6"], None, ("compatible", "sm_86")),      # the newest compatible minor
    ("10.3", ["10.0"], None, ("compatible", "sm_100")),
    ("12.1", ["12.0"], "12.0", ("compatible", "sm_120")),       # SASS before PTX
    ("11.0", ["10.0"], None, None),                               # never across majors
    ("9.0", ["9.0a"], None, ("native", "sm_90a")),
    ("10.3", ["10.0a"], None, None),                              # arch-specific: that GPU only
    ("12.0", ["9.0"], "9.0", ("ptx", "compute_90")),
    ("8.6", ["9.0"], "9.0", None),                                # PTX runs on newer GPUs only
])
def test_code_for(gpu: str, archs: list[str], ptx: str | None, expected: tuple[str, str] | None) -> None:
    code = archcover.code_for(gpu, archs, ptx)
    assert (None if code is None else (code.kind, code.target)) == expected


def test_fewest_sass_is_one_target_per_major() -> None:
    assert archcover.fewest_sass(["8.9", "7.5", "8.6", "8.0", "12.1", "10.3", "10.0"]) == ("7.5", "8.0", "10.0", "12.1")
    assert archcover.fewest_sass(["12.1", "12.0", "9.0"]) == ("9.0", "12.0")


def test_shipped_policy_covers_upstream_with_the_fewest_targets() -> None:
    matrix = load_matrix(ROOT)
    compat = load_compat()
    for cuda, policy in matrix.spec.arch_policy.items():
        assert policy.runs_on, f"arch_policy.{cuda} lists no GPUs"
        assert policy.archs == archcover.fewest_sass(policy.runs_on), cuda
        assert not archcover.uncovered(policy.runs_on, policy.archs, policy.ptx_arch)
        assert all(g in archcover.load_gpus().gpus for g in policy.runs_on)
        assert all(compat.cuda[cuda].can_compile(a) for a in policy.archs)
    # every GPU upstream's own list runs on is in runs_on
    for cuda, upstream in UPSTREAM_SASS.items():
        runs_on = matrix.spec.arch_policy[cuda].runs_on
        for gpu in archcover.load_gpus().gpus:
            if archcover.code_for(gpu, upstream, None) is not None:
                assert gpu in runs_on, (cuda, gpu)


def test_policy_that_misses_a_gpu_names_the_line(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "matrix.yaml").read_text())
    doc["arch_policy"]["13.0"]["archs"] = ["7.5", "8.0", "9.0", "10.0", "12.0"]  # no 11.0 for Jetson Thor
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(UserError) as err:
        load_matrix(ROOT, path)
    text = str(err.value) + str(err.value.hint)
    assert "runs on 11.0 (Jetson Thor" in text and "matrix.yaml:" in str(err.value.location)
    assert "11.0" in text.split("fewest SASS targets for runs_on are")[1]


def test_explain_shows_which_gpu_runs_which_code() -> None:
    matrix = load_matrix(ROOT)
    expansion = matrix.expand()
    built, lines = matrix.explain("linux-x86_64-cp311-cu130-torch2.14-mamba-ssm-2.3.2.post1", expansion)
    text = "\n".join(lines)
    assert built
    assert "9.0 H100, H200, GH200: sm_90: native SASS" in text
    assert "10.3 B300, GB300: sm_100: compatible SASS" in text
    assert "8.6 A10" in text and "sm_80: compatible SASS" in text

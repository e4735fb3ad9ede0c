"""Malformed matrix files: every mistake gives one message with file:line:col, the field, and the allowed
values or a did-you-mean; never a traceback (the CLI side is in test_cli_matrix.py).

Each case edits a small valid matrix (BASE) by text replacement. The line the error must point at carries
the comment ``# <-``; the test finds it, so cases stay readable and line numbers never drift."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from buildtool.errors import UserError
from buildtool.spec.matrix import load_matrix

REPO = Path(__file__).resolve().parents[1]

BASE = """\
version: 1
axes:
  platform: [linux-x86_64, windows-x86_64]
  python: ["3.11", "3.12"]
  cuda: ["12.6", "13.0"]
  torch: ["2.9.1", "2.10.0"]
packages:
  - causal-conv1d==1.7.0
exclude:
  - {platform: windows-x86_64, python: "3.12"}
include:
  - platform: windows-x86_64
    python: "3.10"
    cuda: "12.4"
    torch: "2.4.1"
    packages: [causal-conv1d==1.4.0]
    tags: [seeds]
arch_policy:
  "12.4": {archs: ["8.0"], ptx: true}
  "12.6": {archs: ["8.0", "9.0"], ptx: true}
  "13.0": {archs: ["9.0"]}
default_profile: seeds
profiles:
  seeds: {description: "the seed", select: {tags: [seeds]}}
  cu130: {description: "CUDA 13", select: {cuda: ["13.0"]}}
"""

MARK = "# <-"
ARCH_POLICY_BLOCK = BASE[BASE.index("arch_policy:") : BASE.index("default_profile:")]
INCLUDE_BLOCK = BASE[BASE.index("include:") : BASE.index("arch_policy:")]
PROFILES_BLOCK = BASE[BASE.index("profiles:") :]


@dataclass(frozen=True)
class Case:
    id: str
    edits: tuple[tuple[str, str], ...]
    expect: tuple[str, ...]  # fragments the message must contain (field, allowed values, did-you-mean)
    column: int | None = None  # where the column is certain, assert it too
    profile: str | None = None
    filters: tuple[str, ...] = ()


def C(id: str, edits: list[tuple[str, str]] | tuple[str, str], *expect: str, **kw: object) -> Case:
    if isinstance(edits, tuple):
        edits = [edits]
    return Case(id, tuple(edits), tuple(expect), **kw)  # type: ignore[arg-type]


CASES = [
    # ---------------------------------------------------------------- YAML syntax
    C("yaml-unclosed-flow", ("  - causal-conv1d==1.7.0\n", "  - [causal-conv1d==1.7.0\nexclude2: 1  # <-\n"),
      "YAML syntax error"),
    C("yaml-tab-indent", ("  python: [\"3.11\", \"3.12\"]\n", "\tpython: [\"3.11\"]  # <-\n"),
      "YAML syntax error", "'\\t'"),
    C("yaml-bad-indent", ("  cuda: [\"12.6\", \"13.0\"]\n", " cuda: [\"12.6\"]  # <-\n"), "YAML syntax error"),
    C("yaml-unterminated-quote", ('  "13.0": {archs: ["9.0"]}\n', '  "13.0: {archs: ["9.0"]}\ndefault_x: 1  # <-\n'),
      "YAML syntax error"),
    C("yaml-duplicate-top-key", ("default_profile: seeds\n", "default_profile: seeds\ndefault_profile: cu130  # <-\n"),
      'duplicate key "default_profile"', column=1),
    C("yaml-duplicate-nested-key", ('  cuda: ["12.6", "13.0"]\n', '  cuda: ["12.6", "13.0"]\n  cuda: ["12.6"]  # <-\n'),
      'duplicate key "cuda"', column=3),
    C("yaml-complex-key", ("version: 1\n", "version: 1\n? [a, b]  # <-\n: 1\n"), "mapping keys must be plain scalars"),
    # ---------------------------------------------------------------- unknown keys
    C("unknown-top-key", ("version: 1\n", "version: 1\nverison: 2  # <-\n"),
      'unknown key "verison" in top level', 'did you mean "version"', "allowed keys: arch_policy, axes"),
    C("unknown-axes-key", ("  platform: [linux-x86_64, windows-x86_64]\n", "  platfrom: [linux-x86_64]  # <-\n"),
      'unknown key "platfrom" in axes', 'did you mean "platform"', "allowed keys: cuda, platform, python, torch",
      column=3),
    C("unknown-exclude-key", ('  - {platform: windows-x86_64, python: "3.12"}\n', '  - {platfrm: windows-x86_64}  # <-\n'),
      'unknown key "platfrm" in exclude.0', 'did you mean "platform"', "allowed keys: abi, cuda, package"),
    C("unknown-include-key", ("    tags: [seeds]\n", "    tag: [seeds]  # <-\n"),
      'unknown key "tag" in include.0', 'did you mean "tags"', "allowed keys: abi, archs, cuda, packages"),
    C("unknown-select-key", ('select: {cuda: ["13.0"]}}\n', 'select: {cdua: ["13.0"]}}  # <-\n'),
      'unknown key "cdua" in profiles.cu130.select', 'did you mean "cuda"', "allowed keys: abi, cuda, package, platform"),
    C("unknown-arch-policy-key", ('  "13.0": {archs: ["9.0"]}\n', '  "13.0": {archs: ["9.0"], ptxx: true}  # <-\n'),
      'unknown key "ptxx" in arch_policy.13.0', 'did you mean "ptx"', "allowed keys: archs, ptx, runs_on"),
    C("unknown-profile-key", ('  cu130: {description: "CUDA 13"', '  cu130: {descripton: "CUDA 13"  # <-\n   '),
      'unknown key "descripton" in profiles.cu130', 'did you mean "description"', "allowed keys: archs, description, select"),
    C("unknown-runner-key", ("default_profile: seeds\n",
                             "default_profile: seeds\nrunners:\n  linux-x86_64: {run-on: ubuntu-22.04, gpu-runs-on: [gpu]}  # <-\n"),
      'unknown key "run-on" in runners.linux-x86_64', 'did you mean "runs-on"'),
    # ---------------------------------------------------------------- wrong types and missing keys
    C("version-string", ("version: 1\n", 'version: "one"  # <-\n'), "version: got str 'one'", "allowed values: 1",
      column=10),
    C("version-2", ("version: 1\n", "version: 2  # <-\n"), "version: got int 2", "allowed values: 1"),
    C("exclude-mapping", ('exclude:\n  - {platform: windows-x86_64, python: "3.12"}\n',
                          "exclude: {platform: windows-x86_64}  # <-\n"), "exclude: expected a list, got a mapping"),
    C("axes-cuda-null", ('  cuda: ["12.6", "13.0"]\n', "  cuda:  # <-\n"),
      "axes.cuda: expected a list, got nothing"),
    C("arch-policy-list", (ARCH_POLICY_BLOCK, "arch_policy: [1]  # <-\n"),
      "arch_policy: expected a mapping"),
    C("ptx-not-bool", ('  "13.0": {archs: ["9.0"]}\n', '  "13.0": {archs: ["9.0"], ptx: maybe}  # <-\n'),
      "arch_policy.13.0.ptx: expected true or false", "'maybe'"),
    C("profiles-list", (PROFILES_BLOCK, "profiles: [seeds]  # <-\n"), "profiles: expected a mapping"),
    C("packages-mapping", ("packages:\n  - causal-conv1d==1.7.0\n", "packages: {causal-conv1d: 1.7.0}  # <-\n"),
      "packages: expected a list, got a mapping"),
    C("include-missing-packages", ("    packages: [causal-conv1d==1.4.0]\n", ""),
      'missing required key "packages" in include.0', "required keys: cuda, packages, platform, python, torch"),
    C("axes-missing-torch", ('  torch: ["2.9.1", "2.10.0"]\n', ""),
      'missing required key "torch" in axes', "present keys: platform, python, cuda"),
    C("description-number", ('  seeds: {description: "the seed"', "  seeds: {description: [1]  # <-\n   "),
      "profiles.seeds.description: expected a string, got a list"),
    # ---------------------------------------------------------------- unknown values
    C("platform-typo", ("  platform: [linux-x86_64, windows-x86_64]\n", "  platform: [linux-x86-64]  # <-\n"),
      'axes.platform: unknown platform "linux-x86-64"', 'did you mean "linux-x86_64"',
      "allowed: linux-x86_64, linux-aarch64, windows-x86_64"),
    C("python-not-a-version", ('  python: ["3.11", "3.12"]\n', '  python: ["3.x"]  # <-\n'),
      'axes.python: python "3.x" is not a version like 3.10'),
    C("python-unknown", ('  python: ["3.11", "3.12"]\n', '  python: ["3.11", "2.7"]  # <-\n'),
      'axes.python: unknown python "2.7"', "allowed: 3.8, 3.9, 3.10"),
    C("cuda-unknown", ('  cuda: ["12.6", "13.0"]\n', '  cuda: ["12.6", "12.5"]  # <-\n'),
      'axes.cuda: unknown cuda "12.5"', "did you mean", "allowed: 11.8, 12.1, 12.4"),
    C("torch-unknown", ('  torch: ["2.9.1", "2.10.0"]\n', '  torch: ["2.2.0"]  # <-\n'),
      'axes.torch: unknown torch "2.2.0"', "not in the compatibility data", "allowed: 2.3.1"),
    C("torch-wrong-patch", ('  torch: ["2.9.1", "2.10.0"]\n', '  torch: ["2.9.0"]  # <-\n'),
      'axes.torch: unknown torch "2.9.0"', "released as 2.9.1", 'did you mean "2.9.1"'),
    C("include-torch-unknown", ('    torch: "2.4.1"\n', '    torch: "2.4.7"  # <-\n'),
      'include.0.torch: unknown torch "2.4.7"', 'did you mean "2.4.1"'),
    C("include-cuda-unknown", ('    cuda: "12.4"\n', '    cuda: "12.3"  # <-\n'),
      'include.0.cuda: unknown cuda "12.3"', "allowed: 11.8"),
    C("exclude-cuda-unknown", ('  - {platform: windows-x86_64, python: "3.12"}\n', '  - {cuda: ["12.66"]}  # <-\n'),
      'exclude.0.cuda: unknown cuda "12.66"', 'did you mean "12.6"'),
    C("exclude-torch-unknown", ('  - {platform: windows-x86_64, python: "3.12"}\n', '  - {torch: "2.66"}  # <-\n'),
      'exclude.0.torch: unknown torch "2.66"', "allowed: 2.3.1"),
    C("exclude-package-unknown", ('  - {platform: windows-x86_64, python: "3.12"}\n',
                                  "  - {package: causal-conv2d}  # <-\n"),
      'exclude.0.package: unknown package "causal-conv2d"', 'did you mean "causal-conv1d"'),
    C("select-tag-unknown", ("select: {tags: [seeds]}}\n", "select: {tags: [sed]}}  # <-\n"),
      'profiles.seeds.select.tags: unknown tag "sed"', 'did you mean "seeds"', "tags used by include entries: seeds"),
    C("select-package-unknown", ('select: {cuda: ["13.0"]}}\n', "select: {package: [mamba-sm]}}  # <-\n"),
      'profiles.cu130.select.package: unknown package "mamba-sm"', 'did you mean "mamba-ssm"'),
    C("select-package-version-unknown", ('select: {cuda: ["13.0"]}}\n', "select: {package: [mamba-ssm==2.3.3]}}  # <-\n"),
      'unknown version "2.3.3" of mamba-ssm', "known: 2.2.2"),
    C("default-profile-unknown", ("default_profile: seeds\n", "default_profile: seed  # <-\n"),
      'default_profile: "seed" is not a profile', 'did you mean "seeds"', "profiles: seeds, cu130"),
    C("arch-form", ('  "13.0": {archs: ["9.0"]}\n', '  "13.0": {archs: ["9.x"]}  # <-\n'),
      'arch_policy.13.0.archs: arch "9.x" must look like 8.0'),
    C("arch-not-compilable", ('  "13.0": {archs: ["9.0"]}\n', '  "13.0": {archs: ["7.0", "9.0"]}  # <-\n'),
      "arch_policy.13.0.archs: CUDA 13.0 cannot compile sm_70", "supported: 7.5 to 12.1"),
    C("arch-policy-unknown-cuda", ('  "13.0": {archs: ["9.0"]}\n', '  "13.0": {archs: ["9.0"]}\n  "12.5": {archs: ["9.0"]}  # <-\n'),
      'arch_policy: unknown CUDA "12.5"', "known: 11.8"),
    C("axes-cuda-without-policy", ('  "12.6": {archs: ["8.0", "9.0"], ptx: true}\n', ""),
      "axes.cuda lists 12.6 but arch_policy has no entry for it", "arch_policy has: 12.4, 13.0"),
    C("runner-unknown-platform", ("default_profile: seeds\n",
                                  "default_profile: seeds\nrunners:\n  linux-x86: {runs-on: x, gpu-runs-on: [gpu]}  # <-\n"),
      'runners: unknown platform "linux-x86"', 'did you mean "linux-x86_64"'),
    # ---------------------------------------------------------------- unknown package / version
    C("package-unknown", ("  - causal-conv1d==1.7.0\n", "  - causal-conv==1.7.0  # <-\n"),
      'unknown package "causal-conv"', 'did you mean "causal-conv1d"', "known: causal-conv1d"),
    C("package-version-unknown", ("  - causal-conv1d==1.7.0\n", "  - causal-conv1d==1.7.1  # <-\n"),
      'unknown version "==1.7.1" of causal-conv1d', 'did you mean "1.7.0"', "known: 1.1.1, 1.4.0"),
    C("package-without-version", ("  - causal-conv1d==1.7.0\n", "  - causal-conv1d  # <-\n"),
      '"causal-conv1d" needs a version or range', "causal-conv1d==1.7.0"),
    C("package-not-a-requirement", ("  - causal-conv1d==1.7.0\n", "  - causal conv1d  # <-\n"),
      '"causal conv1d" is not "name==version"'),
    C("include-package-version-unknown", ("    packages: [causal-conv1d==1.4.0]\n",
                                          "    packages: [causal-conv1d==1.4.1]  # <-\n"),
      'unknown version "==1.4.1" of causal-conv1d', 'did you mean "1.4.0"'),
    # ---------------------------------------------------------------- impossible combinations
    C("include-python-too-new", ("  - platform: windows-x86_64\n    python: \"3.10\"\n",
                                 "  - platform: windows-x86_64  # <-\n    python: \"3.13\"\n"),
      "include[0]: impossible cell windows-x86_64-cp313-cu124-torch2.4-causal-conv1d-1.4.0",
      "torch 2.4.1 has no wheels for Python 3.13 (official: 3.8, 3.9, 3.10, 3.11, 3.12)"),
    C("include-cuda-not-built", ("  - platform: windows-x86_64\n    python: \"3.10\"\n    cuda: \"12.4\"\n",
                                 "  - platform: windows-x86_64  # <-\n    python: \"3.10\"\n    cuda: \"12.6\"\n"),
      "impossible cell", "torch 2.4.1 has no CUDA 12.6 build for windows-x86_64 (official: 11.8, 12.1, 12.4)"),
    C("include-recipe-constraint", ("  - platform: windows-x86_64\n    python: \"3.10\"\n    cuda: \"12.4\"\n    torch: \"2.4.1\"\n",
                                    "  - platform: windows-x86_64  # <-\n    python: \"3.10\"\n    cuda: \"13.0\"\n    torch: \"2.14.1\"\n"),
      "impossible cell", "causal-conv1d 1.4.0 needs torch<2.13, cell has 2.14.1"),
    C("include-platform-without-torch", ("  - platform: windows-x86_64\n    python: \"3.10\"\n",
                                         "  - platform: linux-aarch64  # <-\n    python: \"3.10\"\n"),
      "impossible cell", "torch 2.4.1 has no official linux-aarch64 wheels (official: linux-x86_64, windows-x86_64)"),
    C("include-arch-too-old", ("    tags: [seeds]\n", "    tags: [seeds]\n  - {platform: linux-x86_64, python: \"3.12\", cuda: \"13.0\", torch: \"2.10.0\", packages: [causal-conv1d==1.6.1], archs: [\"7.0\"]}  # <-\n"),
      "include[1]: impossible cell", "CUDA 13.0 cannot compile sm_70"),
    # ---------------------------------------------------------------- duplicates
    C("packages-twice", ("  - causal-conv1d==1.7.0\n", "  - causal-conv1d==1.7.0\n  - causal-conv1d>=1.7  # <-\n"),
      'packages[1]: "causal-conv1d>=1.7" selects causal-conv1d 1.7.0 again', "packages[0]"),
    C("axes-value-twice", ('  python: ["3.11", "3.12"]\n', '  python: ["3.11", "3.12", "3.11"]  # <-\n'),
      "axes.python: values must be unique; listed more than once: 3.11"),
    C("include-duplicates-axes", ("    tags: [seeds]\n",
                                  "    tags: [seeds]\n  - {platform: linux-x86_64, python: \"3.11\", cuda: \"12.6\", torch: \"2.9.1\", packages: [causal-conv1d==1.7.0]}  # <-\n"),
      "include[1]: duplicate cell linux-x86_64-cp311-cu126-torch2.9-causal-conv1d-1.7.0"),
    C("include-duplicates-itself", ("    packages: [causal-conv1d==1.4.0]\n    tags: [seeds]\n",
                                    "    packages: [causal-conv1d==1.4.0]\n    tags: [seeds]\n  - {platform: windows-x86_64, python: \"3.10\", cuda: \"12.4\", torch: \"2.4.1\", packages: [causal-conv1d==1.4.0]}  # <-\n"),
      "include[1]: duplicate cell windows-x86_64-cp310-cu124-torch2.4-causal-conv1d-1.4.0", "earlier include"),
    # ---------------------------------------------------------------- empty selections
    C("profile-selects-nothing", ('select: {cuda: ["13.0"]}}\n', 'select: {cuda: ["11.8"]}}  # <-\n'),
      'empty selection: profile "cu130" selects no cell', "its select: cuda=11.8", profile="cu130"),
    C("matrix-produces-nothing", [("  - causal-conv1d==1.7.0\n", "  - causal-conv1d==1.4.0\n"),
                                  ('  torch: ["2.9.1", "2.10.0"]\n', '  torch: ["2.13.0"]\n'),
                                  (INCLUDE_BLOCK, "include: []\n"),
                                  ("default_profile: seeds\n", "default_profile: cu130\n"),
                                  ('  seeds: {description: "the seed", select: {tags: [seeds]}}\n', ""),
                                  ("axes:\n", "axes:  # <-\n")],
      "empty selection: the matrix produces no cell", "causal-conv1d 1.4.0 needs torch<2.13, cell has 2.13.0"),
    C("profile-unknown", ("profiles:\n", "profiles:  # <-\n"),
      '--profile: unknown profile "cu13"', 'did you mean "cu130"', "profiles: seeds, cu130", profile="cu13"),
    C("filter-matches-nothing", ('  cuda: ["12.6", "13.0"]\n', '  cuda: ["12.6", "13.0"]\n'),
      "--filter cuda=12.4: empty selection", 'profile "cu130"', "cuda values there: 13.0", profile="cu130",
      filters=("cuda=12.4",)),
]


def _write_case(tmp_path: Path, case: Case) -> tuple[Path, int | None]:
    text = BASE
    for old, new in case.edits:
        assert old in text, f"case {case.id}: edit target not in BASE: {old!r}"
        text = text.replace(old, new, 1)
    lines = text.splitlines()
    marked = [i + 1 for i, line in enumerate(lines) if MARK in line]
    assert len(marked) <= 1, f"case {case.id}: more than one {MARK} marker"
    path = tmp_path / "matrix.yaml"
    path.write_text(text, encoding="utf-8")
    return path, marked[0] if marked else None


def _error_of(path: Path, case: Case) -> UserError:
    with pytest.raises(UserError) as info:
        matrix = load_matrix(REPO, path)
        expansion = matrix.expand()
        matrix.select(expansion, case.profile, case.filters)
    return info.value


def test_enough_cases() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


def test_base_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "matrix.yaml"
    path.write_text(BASE, encoding="utf-8")
    matrix = load_matrix(REPO, path)
    cells = matrix.select(matrix.expand(), "seeds")
    assert [c.id for c in cells] == ["windows-x86_64-cp310-cu124-torch2.4-causal-conv1d-1.4.0"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_malformed_matrix_message(tmp_path: Path, case: Case) -> None:
    path, line = _write_case(tmp_path, case)
    error = _error_of(path, case)
    text = str(error)
    # file:line:col, always
    assert error.location is not None, text
    assert error.location.file == str(path), text
    assert re.match(rf"^{re.escape(str(path))}:\d+:\d+: ", text), text
    if line is not None:
        assert text.startswith(f"{path}:{line}:"), f"expected line {line}: {text}"
    if case.column is not None:
        assert text.startswith(f"{path}:{line}:{case.column}:"), text
    for fragment in case.expect:
        assert fragment in text, f"missing {fragment!r} in: {text}"
    assert "Traceback" not in text
    assert len(text.splitlines()) <= 2, "one message (plus an optional hint line)"


# ---------------------------------------------------------------- exclude rules: empty rule, indexed matching
def test_empty_exclude_rule_is_an_error(tmp_path: Path) -> None:
    text = (REPO / "matrix.yaml").read_text(encoding="utf-8").replace("exclude:\n", "exclude:\n  - {}\n", 1)
    path = tmp_path / "matrix.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError) as info:
        load_matrix(REPO, path)
    line = text.splitlines().index("  - {}") + 1
    assert str(info.value).startswith(f"{path}:{line}:5: exclude[0]: an empty rule matches every cell")


def test_first_matching_rules_agrees_with_a_scan_over_every_rule() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from buildtool.spec.matrix.rules import axis_values, first_matching_rules
    from buildtool.spec.matrix.schema import Selector

    matrix = load_matrix(REPO)
    cells = list(matrix.expand().cells)
    values = {axis: sorted({v for c in cells for v in axis_values(c, axis)}) for axis in
              ("platform", "python", "cuda", "torch", "package", "tags")}
    rule = st.fixed_dictionaries({}, optional={
        axis: st.lists(st.sampled_from(vals), min_size=1, max_size=3).map(tuple) for axis, vals in values.items() if vals
    }).map(lambda d: Selector(**d))

    @settings(max_examples=60, deadline=None)
    @given(st.lists(rule, max_size=25))
    def check(rules: list[Selector]) -> None:
        expected = {n: k for n, c in enumerate(cells)
                    for k in [next((k for k, r in enumerate(rules) if r.matches(c)), None)] if k is not None}
        assert first_matching_rules(cells, rules) == expected

    check()


def test_filter_value_that_is_not_a_version_is_a_user_error() -> None:
    """--filter cuda=99 once ended in pydantic's ValidationError traceback."""
    from buildtool.spec.matrix.rules import parse_filter

    with pytest.raises(UserError, match=r'^--filter cuda=99: cuda "99" is not a version like 3\.10 or 12\.4$'):
        parse_filter("cuda=99")
    with pytest.raises(UserError, match=r'--filter python=3\.x: python "3\.x" is not a version'):
        parse_filter("python=3.x")

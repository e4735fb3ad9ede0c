"""Patch engine: parsing, exact application with offsets and no fuzz, check-all-before-apply, selection by
version and platform, clear failures; and the project's own patches (headers valid, every one applied to
every version it claims through the source mirror)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from mirror import source_mirror

from buildtool.errors import BuildtoolError, UserError
from buildtool.source.patching import (
    PatchConflict,
    apply_file_patch,
    apply_to_tree,
    load_patches,
    parse_diff,
    parse_patch,
    plan,
    select,
)
from buildtool.spec.project import Project
from buildtool.spec.recipe import load_recipes

REPO = Path(__file__).resolve().parents[1]

HEADER = """summary: test patch
reference: T-1
versions: ">=1.0,<2"
fixes: |
  error: something
upstream: none
"""

SOURCE = "".join(f"line {i}\n" for i in range(1, 21))


def _patch(diff: str, header: str = HEADER, name: str = "pkg/t.patch"):
    return parse_patch(header + diff, name, "pkg")


DIFF_ONE = """diff --git a/f.txt b/f.txt
--- a/f.txt
+++ b/f.txt
@@ -4,3 +4,3 @@
 line 4
-line 5
+LINE FIVE
 line 6
@@ -15,3 +15,4 @@ some function
 line 15
 line 16
+inserted
 line 17
"""


def test_apply_exact() -> None:
    p = _patch(DIFF_ONE)
    new, errs = apply_file_patch(SOURCE, p.files[0], p.name)
    assert errs == []
    assert new is not None
    lines = new.splitlines()
    assert lines[4] == "LINE FIVE" and lines[16] == "inserted" and len(lines) == 21


def test_apply_with_offset_but_not_fuzz() -> None:
    p = _patch(DIFF_ONE)
    shifted = "extra\nextra\n" + SOURCE  # same context two lines lower: allowed (offset)
    new, errs = apply_file_patch(shifted, p.files[0], p.name)
    assert errs == [] and new is not None and new.splitlines()[6] == "LINE FIVE"
    changed = SOURCE.replace("line 6\n", "line 6 \n")  # one context character differs: refused
    new, errs = apply_file_patch(changed, p.files[0], p.name)
    assert new is None and len(errs) == 1
    f = errs[0]
    assert f.hunk == 1 and f.file == "f.txt" and f.header == "@@ -4,3 +4,3 @@"
    assert f.one_line() == "patch pkg/t.patch: f.txt hunk 1 (@@ -4,3 +4,3 @@): context does not match (no fuzz is allowed)"
    detail = f.detail()
    assert "expected at line 4:" in detail and "    |line 6" in detail and "  > |line 6 " in detail


def test_new_file_delete_file_and_no_newline_at_eof() -> None:
    diff = """--- /dev/null
+++ b/new.h
@@ -0,0 +1,2 @@
+#pragma once
+int x;
\\ No newline at end of file
--- a/old.h
+++ /dev/null
@@ -1,1 +0,0 @@
-gone
"""
    p = _patch(diff)
    result = plan({"old.h": "gone\n"}, [p])
    assert result.files == {"new.h": "#pragma once\nint x;", "old.h": None}


def test_crlf_files_keep_their_line_endings() -> None:
    p = _patch(DIFF_ONE)
    new, errs = apply_file_patch(SOURCE.replace("\n", "\r\n"), p.files[0], p.name)
    assert errs == [] and new is not None and "LINE FIVE\r\n" in new and "\n" not in new.replace("\r\n", "")


def test_check_all_before_apply_any(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text(SOURCE)
    (tmp_path / "g.txt").write_text("alpha\nbeta\n")
    good = _patch(DIFF_ONE, name="pkg/a-good.patch")
    bad = _patch("""--- a/g.txt
+++ b/g.txt
@@ -1,2 +1,2 @@
 alpha
-gamma
+delta
""", name="pkg/b-bad.patch")
    with pytest.raises(PatchConflict) as exc:
        apply_to_tree(tmp_path, [good, bad], context="pkg 1.0 linux-x86_64")
    assert exc.value.message == ("patch pkg/b-bad.patch: g.txt hunk 1 (@@ -1,2 +1,2 @@): context does not match "
                                 "(no fuzz is allowed) [pkg 1.0 linux-x86_64]")
    assert "-gamma" not in (exc.value.hint or "") and "    |gamma" in (exc.value.hint or "")
    assert (tmp_path / "f.txt").read_text() == SOURCE  # the good patch was not written either
    applied = apply_to_tree(tmp_path, [good])
    assert [a.name for a in applied] == ["pkg/a-good.patch"] and applied[0].files == ("f.txt",)
    assert "LINE FIVE" in (tmp_path / "f.txt").read_text()


def test_missing_file_is_reported() -> None:
    p = _patch(DIFF_ONE)
    with pytest.raises(PatchConflict, match=r"patch pkg/t.patch: f.txt: file not found in the source tree"):
        plan({}, [p])


def test_patches_apply_in_sequence_on_the_same_file() -> None:
    first = _patch(DIFF_ONE, name="pkg/1.patch")
    second = _patch("""--- a/f.txt
+++ b/f.txt
@@ -4,3 +4,3 @@
 line 4
-LINE FIVE
+line five again
 line 6
""", name="pkg/2.patch")
    result = plan({"f.txt": SOURCE}, [first, second])
    assert "line five again\n" in (result.files["f.txt"] or "")


def test_selection_by_version_and_platform() -> None:
    win = parse_patch(HEADER + "platforms: [windows-x86_64]\n" + DIFF_ONE, "pkg/win.patch", "pkg")
    anywhere = _patch(DIFF_ONE, name="pkg/any.patch")
    assert [p.name for p in select([win, anywhere], "1.5", "windows-x86_64")] == ["pkg/win.patch", "pkg/any.patch"]
    assert [p.name for p in select([win, anywhere], "1.5", "linux-x86_64")] == ["pkg/any.patch"]
    assert select([win, anywhere], "2.0", "windows-x86_64") == []
    assert [p.name for p in select([anywhere], "1.0.post1", "linux-aarch64")] == ["pkg/any.patch"]


def test_selection_by_abi_track() -> None:
    """`abi: stable` patches (the binding ports) apply to stable-ABI builds only; unmarked ones to both."""
    port = parse_patch(HEADER + "abi: stable\n" + DIFF_ONE, "pkg/port.patch", "pkg")
    full_only = parse_patch(HEADER + "abi: full\n" + DIFF_ONE, "pkg/full.patch", "pkg")
    anywhere = _patch(DIFF_ONE, name="pkg/any.patch")
    both = [port, full_only, anywhere]
    assert [p.name for p in select(both, "1.5", "linux-x86_64")] == ["pkg/full.patch", "pkg/any.patch"]
    assert [p.name for p in select(both, "1.5", "linux-x86_64", "stable")] == ["pkg/port.patch", "pkg/any.patch"]
    with pytest.raises(UserError, match=r"typo.patch:7:6: abi: got str 'stabel'; allowed values: 'full' or 'stable'"):
        parse_patch(HEADER + "abi: stabel\n" + DIFF_ONE, "pkg/typo.patch", "pkg")


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (HEADER.replace('">=1.0,<2"', '"1.0 or newer"'), r"t.patch:3:\d+: versions: not a PEP 440 version specifier"),
        (HEADER + "platforms: [windoze]\n", r't.patch:7:\d+: platforms: unknown platform "windoze"; allowed: linux-x86_64, '),
        (HEADER.replace("upstream: none\n", ""), r't.patch:1:1: missing required (field|key) "upstream"'),
        (HEADER + "fixed: x\n", r'unknown key "fixed" in top level \(did you mean "fixes"\?\)'),
    ],
    ids=["bad-specifier", "bad-platform", "missing-upstream", "typo"],
)
def test_header_errors_are_located(header: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_patch(header + DIFF_ONE, "pkg/t.patch", "pkg", file="t.patch")


def test_malformed_diffs() -> None:
    with pytest.raises(UserError, match=r"patch pkg/t.patch contains no diff"):
        parse_patch(HEADER, "pkg/t.patch", "pkg")
    with pytest.raises(UserError, match=r"hunk 1 of f.txt has -2 \+2 lines, header says -3 \+3"):
        parse_diff("--- a/f.txt\n+++ b/f.txt\n@@ -1,3 +1,3 @@\n a\n-b\n+c\n", "pkg/t.patch")
    with pytest.raises(UserError, match=r"has no header"):
        parse_patch(DIFF_ONE, "pkg/t.patch", "pkg")


# ---------------------------------------------------------------------------------------------- the project's patches


def test_every_project_patch_parses_with_a_complete_header() -> None:
    patches = load_patches(REPO / "patches")
    recipes = load_recipes(REPO / "recipes")
    assert len(patches) >= 14
    for p in patches:
        assert p.package in recipes, f"{p.name}: no recipe named {p.package}"
        assert p.header.fixes.strip() and p.header.upstream.strip() and p.header.reference
        assert any(p.applies_to(v.version, pl, abi) for v in recipes[p.package].versions
                   for pl in ("linux-x86_64", "windows-x86_64") for abi in ("full", "stable")), \
            f"{p.name} claims no recipe version"
        text = (REPO / "patches" / p.name).read_text()
        assert "\nindex " not in text, f"{p.name}: trim git's index lines"


def test_project_patches_are_what_git_apply_accepts(tmp_path: Path) -> None:
    """The files stay valid git patches (header before the diff is ignored by git), so users can `git apply`
    them by hand."""
    for p in load_patches(REPO / "patches"):
        proc = subprocess.run(["git", "apply", "--stat", str(REPO / "patches" / p.name)], capture_output=True,
                              text=True, cwd=tmp_path)
        assert proc.returncode == 0, f"{p.name}: {proc.stderr}"


def _mirror() -> Path | None:
    return source_mirror()


@pytest.mark.mirror
@pytest.mark.network
def test_patches_check_every_claimed_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`buildtool patches check`: every patch against every recipe version it claims (git versions from the
    mirror, sdists from PyPI), every version's patch set per platform applied and lint-clean."""
    mirror = _mirror()
    if mirror is None:
        pytest.skip("no source mirror: set BUILDTOOL_SOURCE_MIRROR to a directory of upstream git snapshots")
    from buildtool.source.prepare import check_patches

    monkeypatch.setenv("BUILDTOOL_CACHE_DIR", str(tmp_path / "cache"))
    report = check_patches(Project(REPO), mirror=mirror)
    skipped = [p for p in report.patches if p.status == "skipped"]
    if skipped:
        pytest.skip(f"sources missing from the mirror: {sorted({p.package for p in skipped})}")
    bad = [p for p in report.patches if p.status != "ok"] + \
        [t for t in report.trees if t.status != "ok" or t.lint_errors]
    assert not bad, bad
    assert len(report.patches) >= 23



CUB_TARGETS = [("mamba-ssm", "2.2.2"), ("mamba-ssm-vim", "1.1.1"), ("selective-scan", "0.0.2")]


@pytest.mark.slow
@pytest.mark.mirror
@pytest.mark.parametrize(("package", "version"), CUB_TARGETS, ids=[f"{p}-{v}" for p, v in CUB_TARGETS])
def test_cuda13_cub_patch_with_real_nvcc(tmp_path: Path, package: str, version: str) -> None:
    """nvcc 13 rejects upstream's reverse_scan.cuh with the exact error the patch header quotes, and
    accepts the patched header (a TU that includes it; cub names are looked up at definition)."""
    nvcc = shutil.which("nvcc")
    mirror = _mirror()
    if nvcc is None or mirror is None:
        pytest.skip("needs nvcc on PATH and a source mirror (BUILDTOOL_SOURCE_MIRROR)")
    version_out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    if "release 13." not in version_out:
        pytest.skip("needs nvcc 13.x (CCCL 3)")
    from buildtool.source.fetch import fetch

    rv = load_recipes(REPO / "recipes")[package].get(version)
    try:
        src = fetch(rv.source, tmp_path / "tree", mirror=mirror, cache_dir=tmp_path / "cache")
    except BuildtoolError as exc:
        pytest.skip(f"{package} {version} not in the mirror: {exc.message}")
    tu = tmp_path / "t.cu"
    tu.write_text('#include "reverse_scan.cuh"\n__global__ void k(float *x) { x[0] = 1.f; }\n')
    include = src.tree / "csrc" / "selective_scan"

    def compile_tu() -> subprocess.CompletedProcess[str]:
        return subprocess.run([nvcc, "-std=c++17", "-arch=sm_90", f"-I{include}", "-c", str(tu), "-o",
                               str(tmp_path / "t.o")], capture_output=True, text=True)

    before = compile_tu()
    assert before.returncode != 0
    assert 'error: namespace "cub" has no member "LaneId"' in before.stdout + before.stderr
    assert 'error: namespace "cub" has no member "CTA_SYNC"' in before.stdout + before.stderr
    patches = [p for p in select(load_patches(REPO / "patches", package), version, "linux-x86_64")
               if p.header.reference.endswith(("MS-4", "VM-4", "MS-4)"))]
    assert len(patches) == 1
    apply_to_tree(src.tree, patches)
    after = compile_tu()
    assert after.returncode == 0, after.stdout + after.stderr

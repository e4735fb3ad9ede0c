"""lint-source: each rule on small sources written here (positive and negative), rule filtering by platform
and CUDA, the CLI's exit codes and JSON, and the real upstream trees: findings before patching, clean after."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mirror import source_mirror

from buildtool.cli import main
from buildtool.errors import BuildtoolError, UserError
from buildtool.source.lint import load_rules, scan, strip_code

REPO = Path(__file__).resolve().parents[1]

SWITCH_H = r"""#pragma once
#define BOOL_SWITCH(COND, CONST_NAME, ...)      \
    [&] {                                       \
        if (COND) {                             \
            constexpr bool CONST_NAME = true;   \
            return __VA_ARGS__();               \
        } else {                                \
            constexpr bool CONST_NAME = false;  \
            return __VA_ARGS__();               \
        }                                       \
    }()
"""

LAUNCH_CU = r"""#include "static_switch.h"
#ifndef USE_ROCM
    #include <cub/block/block_load.cuh>
#endif
// a comment with and/or words, and M_LOG2E, and cub::CTA_SYNC() must not count
template<int kNThreads>
void launch(Params &params, cudaStream_t stream) {
    constexpr int kNRows = 1;
    static constexpr int kFine = 2;
    BOOL_SWITCH(params.even, kIsEven, [&] {
        BOOL_SWITCH(params.z, kHasZ, [&] {
            using Ktraits = Traits<kNThreads, kNRows, kFine, kIsEven, kHasZ>;
            constexpr int kSmemSize = Ktraits::kSmemSize;
            if (kSmemSize >= 48 * 1024) {
                #ifndef USE_ROCM
                cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemSize);
                #else
                cudaFuncSetAttribute((void *) kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemSize);
                #endif
            }
            kernel<<<grid, Ktraits::kNThreads, kSmemSize, stream>>>(params);
        });
    });
}
__device__ float f(float x) { constexpr float k = M_LOG2E; return x * k; }
__device__ void g() { int lane = cub::LaneId(); cub::CTA_SYNC(); }
"""

CHECKS_CPP = r"""#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
void f(at::Tensor x) {
    TORCH_CHECK(x.stride(2) % 8 == 0 and x.stride(0) % 8 == 0, "strides and layout must be ok");
    bool ok = not x.is_cuda() or x.numel() > 0;
}
"""

SETUP_PY = """cc_flag = []
cc_flag.append("-gencode")
cc_flag.append("arch=compute_53,code=sm_53")
# cc_flag.append("arch=compute_60,code=sm_60")   (a comment: ignored)
cc_flag.append("arch=compute_80,code=sm_80")
"""


@pytest.fixture
def dirty(tmp_path: Path) -> Path:
    root = tmp_path / "dirty"
    (root / "csrc").mkdir(parents=True)
    (root / "csrc" / "static_switch.h").write_text(SWITCH_H)
    (root / "csrc" / "launch.cu").write_text(LAUNCH_CU)
    (root / "csrc" / "checks.cpp").write_text(CHECKS_CPP)
    (root / "setup.py").write_text(SETUP_PY)
    return root


def _by_rule(report) -> dict[str, list[tuple[str, int]]]:  # type: ignore[no-untyped-def]
    out: dict[str, list[tuple[str, int]]] = {}
    for f in report.findings:
        out.setdefault(f.rule, []).append((f.file, f.line))
    return out


def test_rules_load_and_every_check_kind_is_used() -> None:
    book = load_rules()
    kinds = {r.check.kind for r in book.rules}
    assert kinds == {"regex", "directive-in-macro-args", "constexpr-in-macro-definition",
                     "constexpr-captured-by-macro", "arch-below"}
    assert len({r.id for r in book.rules}) == len(book.rules)


def test_strip_code_keeps_positions() -> None:
    text = 'a /* x\ny */ b // and\nc "and \\" or" \'&\' 1\'000;\n'
    stripped = strip_code(text)
    assert len(stripped) == len(text) and stripped.count("\n") == text.count("\n")
    assert "and" not in stripped and "or" not in stripped and "x" not in stripped
    assert stripped.split("\n")[2].startswith('c "') and "1'000" in stripped


def test_every_rule_fires_on_the_dirty_tree(dirty: Path) -> None:
    found = _by_rule(scan(dirty))
    assert found["msvc-alternative-token"] == [("csrc/checks.cpp", 4), ("csrc/checks.cpp", 5)]
    assert found["directive-in-macro-arguments"] == [("csrc/launch.cu", 15), ("csrc/launch.cu", 17),
                                                     ("csrc/launch.cu", 19)]
    assert found["m-log2e-without-definition"] == [("csrc/launch.cu", 25)]
    assert found["nonstatic-constexpr-in-switch-macro"] == [("csrc/static_switch.h", 5), ("csrc/static_switch.h", 8)]
    # kNRows is a template argument in a nested lambda: flagged; kFine is static; kSmemSize is only a value.
    assert found["nonstatic-constexpr-captured-by-switch"] == [("csrc/launch.cu", 8)]
    assert found["cub-removed-api"] == [("csrc/launch.cu", 26)]
    assert found["arch-below-sm75-in-setup"] == [("setup.py", 3)]
    assert found["cuda-context-include-in-host-source"] == [("csrc/checks.cpp", 2)]


def test_fixed_sources_scan_clean(dirty: Path) -> None:
    (dirty / "csrc" / "static_switch.h").write_text(SWITCH_H.replace("constexpr bool", "static constexpr bool"))
    fixed = (LAUNCH_CU.replace("    constexpr int kNRows", "    static constexpr int kNRows")
             .replace("cub::LaneId()", "threadIdx.x & 0x1f").replace("cub::CTA_SYNC();", "__syncthreads();"))
    lines = fixed.splitlines(keepends=True)
    rocm_only = ("                cudaFuncSetAttribute(ROCM_ONLY((void *)) kernel, "
                 "cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemSize);\n")
    fixed = "".join(lines[:14]) + rocm_only + "".join(lines[19:])  # lines 15-19: the #ifndef USE_ROCM block
    (dirty / "csrc" / "launch.cu").write_text("#ifndef M_LOG2E\n#define M_LOG2E 1.4426950408889634074\n#endif\n" + fixed)
    (dirty / "csrc" / "checks.cpp").write_text(CHECKS_CPP.replace(" and ", " && ").replace("not ", "!").replace(" or ", " || "))
    report = scan(dirty)
    assert report.clean, report.errors
    assert {f.rule for f in report.findings} == {"arch-below-sm75-in-setup", "cuda-context-include-in-host-source"}
    assert all(f.severity == "info" for f in report.findings)


def test_ciso646_include_silences_alternative_tokens(dirty: Path) -> None:
    (dirty / "csrc" / "checks.cpp").write_text("#include <ciso646>\n" + CHECKS_CPP)
    assert "msvc-alternative-token" not in _by_rule(scan(dirty))


def test_platform_and_cuda_select_rules(dirty: Path) -> None:
    linux = _by_rule(scan(dirty, platform="linux-x86_64", cuda="13.0"))
    assert set(linux) == {"cub-removed-api", "arch-below-sm75-in-setup", "cuda-context-include-in-host-source"}
    old_cuda_windows = _by_rule(scan(dirty, platform="windows-x86_64", cuda="12.4"))
    assert "cub-removed-api" not in old_cuda_windows and "msvc-alternative-token" in old_cuda_windows
    with pytest.raises(UserError, match=r"--cuda 'thirteen' is not a version"):
        scan(dirty, cuda="thirteen")


def test_cli_exit_codes_and_json(dirty: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint-source", str(dirty), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["clean"] is False and data["errors"] == 10 and data["files_scanned"] == 4
    assert main(["lint-source", str(dirty), "--platform", "linux-x86_64", "--cuda", "12.8"]) == 0
    text = capsys.readouterr().out
    assert "clean" in text and "cuda-context-include-in-host-source" in text
    assert main(["lint-source", str(dirty / "nope")]) == 2
    assert "error: not a directory:" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- real sources


def _mirror() -> Path | None:
    return source_mirror()


# package, version, rules that must fire on the unpatched upstream tree
UNPATCHED = [
    ("causal-conv1d", "1.4.0", {"msvc-alternative-token", "directive-in-macro-arguments"}),
    ("mamba-ssm", "2.2.2", {"m-log2e-without-definition", "nonstatic-constexpr-in-switch-macro",
                            "nonstatic-constexpr-captured-by-switch", "directive-in-macro-arguments",
                            "cub-removed-api"}),
    ("mamba-ssm-vim", "1.1.1", {"m-log2e-without-definition", "nonstatic-constexpr-in-switch-macro",
                                "nonstatic-constexpr-captured-by-switch", "cub-removed-api"}),
    ("selective-scan", "0.0.2", {"m-log2e-without-definition", "nonstatic-constexpr-in-switch-macro",
                                 "cub-removed-api"}),
]


@pytest.mark.mirror
@pytest.mark.parametrize(("package", "version", "expected"), UNPATCHED, ids=[f"{p}-{v}" for p, v, _ in UNPATCHED])
def test_unpatched_seed_sources_have_findings_and_patched_are_clean(tmp_path: Path, package: str, version: str,
                                                                   expected: set[str]) -> None:
    mirror = _mirror()
    if mirror is None:
        pytest.skip("no source mirror: set BUILDTOOL_SOURCE_MIRROR to a directory of upstream git snapshots")
    from buildtool.source.fetch import fetch
    from buildtool.source.patching import apply_to_tree, load_patches, select
    from buildtool.spec.recipe import load_recipes

    rv = load_recipes(REPO / "recipes")[package].get(version)
    try:
        src = fetch(rv.source, tmp_path / "tree", mirror=mirror, cache_dir=tmp_path / "cache")
    except BuildtoolError as exc:
        pytest.skip(f"{package} {version} not in the mirror: {exc.message}")
    before = scan(src.tree, platform="windows-x86_64", cuda="13.0")
    assert {f.rule for f in before.errors} == expected
    apply_to_tree(src.tree, select(load_patches(REPO / "patches", package), version, "windows-x86_64"))
    after = scan(src.tree, platform="windows-x86_64", cuda="13.0")
    assert after.clean, after.errors

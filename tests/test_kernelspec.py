"""Kernel specs: schema errors with file:line, the pure flag resolution for every platform/torch/CUDA
combination that changes a flag, arch flags, and the TU splitter (line split, fanout, link hazards) on the
fixture and on the real upstream sources (mirror / PyPI sdist when present)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from mirror import source_mirror

from buildtool.compile.split import SplitError, link_hazards, split_source, split_summary, split_text
from buildtool.compile.units import arch_flags, nvcc_threads, resolve
from buildtool.errors import BuildtoolError, UserError
from buildtool.spec.kernelspec import KernelSpec, SplitRule, TargetFacts, load_kernel_spec, load_kernel_specs
from buildtool.spec.recipe import load_recipes

REPO = Path(__file__).resolve().parents[1]
KERNELS = REPO / "kernels"
TINY_SPEC = REPO / "tests" / "fixtures" / "tiny" / "kernels" / "tiny_cuda.yaml"


def facts(**kw: object) -> TargetFacts:
    base: dict[str, object] = dict(platform="linux-x86_64", torch="2.14.1", cuda="13.0", cxx_std="20",
                                   cxx11_abi=True, archs=("9.0",), ptx=False, compiler="gcc",
                                   cuda_home="/usr/local/cuda")
    base.update(kw)
    return TargetFacts.model_validate(base)


def win(**kw: object) -> TargetFacts:
    base: dict[str, object] = dict(platform="windows-x86_64", compiler="msvc", cxx11_abi=False,
                                   cuda_home="C:/CUDA/v13.2", cuda="13.2", torch="2.13.0")
    base.update(kw)
    return facts(**base)


def tiny() -> KernelSpec:
    return load_kernel_spec(TINY_SPEC)


def unit(spec: KernelSpec, f: TargetFacts, language: str) -> tuple[str, ...]:
    resolved = resolve(spec, f)
    return next(u for u in resolved.units if u.language == language).flags


def includes(spec: KernelSpec, f: TargetFacts, language: str) -> tuple[str, ...]:
    resolved = resolve(spec, f)
    return next(u for u in resolved.units if u.language == language).include_dirs


# ------------------------------------------------------------------------------------------ the specs
def test_every_spec_a_recipe_names_exists_and_validates() -> None:
    recipes = load_recipes(REPO / "recipes")
    names = {k for r in recipes.values() for v in r.versions for k in v.kernels}
    assert names, "recipes name no kernel specs"
    specs = load_kernel_specs(KERNELS, sorted(names))
    assert {s.name for s in specs} == names
    for spec in specs:
        for f in (facts(), facts(torch="2.4.1", cuda="12.4", cxx_std="17", cxx11_abi=False,
                                 archs=("7.0", "8.0", "9.0"), ptx=True), win()):
            resolved = resolve(spec, f)
            assert resolved.module == spec.module
            assert any(u.language == "cxx" for u in resolved.units)


def test_spec_files_use_upstream_flags_without_debug_info() -> None:
    for path in sorted(KERNELS.glob("*.yaml")):
        spec = load_kernel_spec(path)
        track = facts(abi="stable", torch_floor="2.10") if spec.abi == "stable" else facts()
        flags = unit(spec, track, "cuda")
        for wanted in ("-O3", "--use_fast_math", "--expt-relaxed-constexpr", "--expt-extended-lambda",
                       "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__"):
            assert wanted in flags, (path.name, wanted)
        assert "-lineinfo" not in flags and "--ptxas-options=-v" not in flags


def test_unknown_spec_name_lists_known(tmp_path: Path) -> None:
    (tmp_path / "causal_conv1d_cuda-1.5.yaml").write_text("module: m\nsources: [a.cu]\n")
    with pytest.raises(UserError, match=r'unknown kernel spec "causal_conv1d_cuda-1.6".*did you mean "causal_conv1d_cuda-1.5"'):
        load_kernel_specs(tmp_path, ["causal_conv1d_cuda-1.6"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("module: m\nsources: [a.cu]\nnvcc_flag: [-O3]\n", r':3:1: unknown key "nvcc_flag".*did you mean "nvcc_flags"'),
        ("module: m\nsources: [a.cu]\nnvcc_flags: [-O3, -lineinfo]\n", r":3:.*-lineinfo.*debug line info"),
        ("module: m\nsources: [a.cu]\nnvcc_flags: [--ptxas-options=-v]\n", r"verbose ptxas"),
        ("module: m\nsources: [a.cu]\nnvcc_flags: [-gencode, arch=compute_90,code=sm_90]\n", r"arch flags come from the cell"),
        ("module: m\nsources: [a.cu]\ncxx_flags: ['-std=c++{cxx_standard}']\n", r'unknown placeholder "\{cxx_standard\}".*did you mean "cxx_std"'),
        ("module: m\nsources: [../a.cu]\n", r"relative path inside the source tree"),
        ("module: m\nsources: [a.txt]\n", r"sources end in"),
        ("module: 1bad\nsources: [a.cu]\n", r"module: must be a Python identifier"),
        ("module: m\nsources: [a.cu]\nsplit: [{source: b.cu, parts: 2}]\n", r'split source "b.cu" is not in sources'),
        ("module: m\nsources: [a.cpp]\nsplit: [{source: a.cpp, parts: 2}]\n", r"not a CUDA source"),
        ("module: m\nsources: [a.cu]\nsplit: [{source: a.cu, parts: 1}]\n", r"parts: Input should be greater than or equal to 2"),
        ("module: m\nsources: [a.cu]\nsplit: [{source: a.cu, parts: 2, match: '(x'}]\n", r"not a regular expression"),
        ("module: m\nsources: [a.cu]\nsplit: [{source: a.cu, parts: 2, key: 2, match: '(x)'}]\n", r"capture group"),
        ("module: m\nsources: [a.cu]\nsplit: [{source: a.cu, parts: 2, fanout: {declaration: 'void f<{item}, {match}>()', items: [1]}}]\n",
         r"set `key`"),
        ("module: m\nsources: [a.cu]\nsplit: [{source: a.cu, parts: 2, key: 1, match: '(x)', fanout: {declaration: 'template void f<{item}>()', items: [1]}}]\n",
         r"bare declaration"),
        ("module: m\nsources: [a.cu]\nrules: [{when: {torch: '>>2'}, cxx_flags: [-x]}]\n", r"not a version specifier"),
        ("module: m\nsources: [a.cu]\nrules: [{when: {platform: linux}, cxx_flags: [-x]}]\n", r'unknown platform "linux"'),
        ("module: m\nsources: [a.cu]\nrules: [{when: {os: macos}, cxx_flags: [-x]}]\n", r"os"),
        ("module: m\nsources: [a.cu]\ndefines: [-DFOO]\n", r"is not NAME or NAME=VALUE"),
    ],
)
def test_spec_errors_name_file_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        load_kernel_spec(path)
    assert str(path) in str(info.value)
    assert re.search(message, str(info.value), re.S), str(info.value)


# --------------------------------------------------------------------------------------- resolution
@pytest.mark.parametrize(("std", "expected"), [("17", "c++17"), ("20", "c++20")])
def test_cxx_standard_comes_from_the_cell(std: str, expected: str) -> None:
    f = facts(cxx_std=std)
    assert f"-std={expected}" in unit(tiny(), f, "cxx")
    assert f"-std={expected}" in unit(tiny(), f, "cuda")
    w = win(cxx_std=std)
    assert f"/std:{expected}" in unit(tiny(), w, "cxx")
    assert f"-std={expected}" in unit(tiny(), w, "cuda")
    assert not any(x.startswith("-std") for x in unit(tiny(), w, "cxx"))


def test_linux_gets_fpic_abi_define_and_no_msvc_flags() -> None:
    for abi, value in ((True, "1"), (False, "0")):
        cxx = unit(tiny(), facts(cxx11_abi=abi), "cxx")
        cu = unit(tiny(), facts(cxx11_abi=abi), "cuda")
        assert f"-D_GLIBCXX_USE_CXX11_ABI={value}" in cxx and f"-D_GLIBCXX_USE_CXX11_ABI={value}" in cu
    cxx = unit(tiny(), facts(), "cxx")
    cu = unit(tiny(), facts(), "cuda")
    assert "-fPIC" in cxx and "--compiler-options=-fPIC" in cu
    assert not any(x.startswith(("/", "-Xcompiler=/")) for x in cxx + cu)
    assert "-DWIN32_LEAN_AND_MEAN" not in cu
    assert "-DTORCH_EXTENSION_NAME=tiny_cuda" in cxx and "-DTORCH_API_INCLUDE_EXTENSION_H" in cxx


def test_windows_msvc_flags_and_defines() -> None:
    cxx = unit(tiny(), win(), "cxx")
    cu = unit(tiny(), win(), "cuda")
    for flag in ("/MD", "/EHsc", "/permissive-", "/wd4819", "/DWIN32_LEAN_AND_MEAN", "/DTORCH_EXTENSION_NAME=tiny_cuda"):
        assert flag in cxx, flag
    assert "-DWIN32_LEAN_AND_MEAN" in cu and "-Xcompiler=/MD" in cu and "--use-local-env" in cu
    assert "-Xcudafe=--diag_suppress=base_class_has_different_dll_interface" in cu
    assert not any("GLIBCXX" in x for x in cxx + cu) and "-fPIC" not in cxx
    assert "/O2" in cxx  # the spec's own msvc rule comes after the common flags


@pytest.mark.parametrize(("cuda", "wanted"), [("12.4", False), ("13.0", False), ("13.1", False), ("13.2", True), ("13.3", True)])
def test_zc_preprocessor_only_for_msvc_with_cuda_13_2_and_later(cuda: str, wanted: bool) -> None:
    assert ("/Zc:preprocessor" in unit(tiny(), win(cuda=cuda), "cxx")) is wanted
    assert ("-Xcompiler=/Zc:preprocessor" in unit(tiny(), win(cuda=cuda), "cuda")) is wanted
    assert not any("Zc" in x for x in unit(tiny(), facts(cuda=cuda), "cuda"))


@pytest.mark.parametrize(("cuda", "cccl"), [("11.8", False), ("12.9", False), ("13.0", True), ("13.2", True)])
def test_cccl_include_for_host_tus_on_cuda_13(cuda: str, cccl: bool) -> None:
    f = facts(cuda=cuda, cuda_home="/opt/cuda")
    assert ("/opt/cuda/include/cccl" in includes(tiny(), f, "cxx")) is cccl
    assert "/opt/cuda/include" in includes(tiny(), f, "cxx")
    assert not any(d.startswith("/opt/cuda") for d in includes(tiny(), f, "cuda"))  # nvcc adds its own


def test_fatbin_compression_on_every_modern_toolkit() -> None:
    for cuda in ("11.8", "12.4", "13.0", "13.2"):
        assert "-Xfatbin=-compress-all" in unit(tiny(), facts(cuda=cuda), "cuda")
        assert "-Xfatbin=-compress-all" in unit(tiny(), win(cuda=cuda), "cuda")


def test_torch_and_platform_rules_of_a_spec(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "module: m\nsources: [a.cu, b.cpp]\n"
        "rules:\n"
        "  - when: {torch: '>=2.13', platform: [windows-x86_64]}\n"
        "    defines: [_USE_MATH_DEFINES]\n"
        "  - when: {torch: '<2.6', os: linux}\n"
        "    cxx_flags: [-Wno-old]\n"
        "  - when: {cxx_std: '20'}\n"
        "    nvcc_flags: [-Xcudafe=--diag_suppress=20]\n"
    )
    spec = load_kernel_spec(path)
    assert "/D_USE_MATH_DEFINES" in unit(spec, win(torch="2.13.0"), "cxx")
    assert "-D_USE_MATH_DEFINES" in unit(spec, win(torch="2.13.0"), "cuda")
    assert "/D_USE_MATH_DEFINES" not in unit(spec, win(torch="2.12.1"), "cxx")
    assert "-D_USE_MATH_DEFINES" not in unit(spec, facts(torch="2.14.1"), "cuda")
    assert "-Wno-old" in unit(spec, facts(torch="2.4.1"), "cxx")
    assert "-Wno-old" not in unit(spec, facts(torch="2.6.0"), "cxx")
    assert "-Wno-old" not in unit(spec, win(torch="2.4.1"), "cxx")
    assert "-Xcudafe=--diag_suppress=20" in unit(spec, facts(cxx_std="20"), "cuda")
    assert "-Xcudafe=--diag_suppress=20" not in unit(spec, facts(cxx_std="17"), "cuda")


def test_torch_local_versions_match_specifiers() -> None:
    spec = KernelSpec(module="m", sources=("a.cu",),
                      rules=({"when": {"torch": ">=2.13"}, "defines": ("NEW_TORCH",)},))  # type: ignore[arg-type]
    assert "-DNEW_TORCH" in unit_of(spec, facts(torch="2.14.1+cu130"))
    assert "-DNEW_TORCH" not in unit_of(spec, facts(torch="2.4.1+cu124"))


def unit_of(spec: KernelSpec, f: TargetFacts) -> tuple[str, ...]:
    return resolve(spec, f).units[0].flags


def test_resolution_is_deterministic_and_pure() -> None:
    a = resolve(tiny(), facts(archs=("8.0", "9.0"), ptx=True))
    b = resolve(tiny(), facts(archs=("8.0", "9.0"), ptx=True))
    assert a == b
    assert [u.name for u in a.units] == [
        "csrc/tiny.cpp", "csrc/tiny_add.part1of2.cu", "csrc/tiny_add.part2of2.cu",
        "csrc/tiny_square.part1of3.cu", "csrc/tiny_square.part2of3.cu", "csrc/tiny_square.part3of3.cu",
    ]
    assert [u.uses_python for u in a.units] == [True, False, False, False, False, False]


# ------------------------------------------------------------------------------------------- archs
def test_arch_flags_per_arch_and_ptx_for_the_newest() -> None:
    assert arch_flags(("9.0",), False) == ("-gencode", "arch=compute_90,code=sm_90")
    assert arch_flags(("7.5", "8.0", "12.0"), True) == (
        "-gencode", "arch=compute_75,code=sm_75", "-gencode", "arch=compute_80,code=sm_80",
        "-gencode", "arch=compute_120,code=sm_120", "-gencode", "arch=compute_120,code=compute_120",
    )
    assert arch_flags(("9.0a", "10.0a"), False) == (
        "-gencode", "arch=compute_90a,code=sm_90a", "-gencode", "arch=compute_100a,code=sm_100a")
    assert arch_flags(("8.9", "9.0a"), True)[-1] == "arch=compute_90a,code=compute_90a"
    with pytest.raises(UserError, match="must look like"):
        arch_flags(("sm_90",), False)
    with pytest.raises(UserError, match="no target archs"):
        arch_flags((), False)


@pytest.mark.parametrize(("archs", "ptx", "threads"), [(("9.0",), False, 1), (("8.0", "9.0"), False, 2),
                                                        (("8.0", "9.0"), True, 3),
                                                        (("7.5", "8.0", "8.6", "8.9", "9.0", "12.0"), True, 4)])
def test_nvcc_threads_sized_to_arch_count(archs: tuple[str, ...], ptx: bool, threads: int) -> None:
    assert nvcc_threads(archs, ptx) == threads
    flags = unit(tiny(), facts(archs=archs, ptx=ptx), "cuda")
    assert flags[flags.index("--threads") + 1] == str(threads)
    assert flags.count("-gencode") == len(archs) + ptx


# ----------------------------------------------------------------------------------------- splitting
SOURCE = """\
#include "x.h"
template <typename T> void run(T x) { body(x); }
// comment
template void run<float>(float x);
template void run<double>(double x);
template void run<int>(int x);
"""


def test_line_split_keeps_every_line_number_and_each_instantiation_once() -> None:
    rule = SplitRule(source=("a.cu",), parts=2)
    parts = split_text(SOURCE, rule, origin="csrc/a.cu")
    assert len(parts) == 2
    for p in parts:
        assert p.startswith('#line 1 "csrc/a.cu"\n')
        assert len(p.splitlines()) == len(SOURCE.splitlines()) + 1
        assert "template <typename T> void run(T x) { body(x); }" in p
    summary = split_summary(SOURCE, rule)
    assert summary == {1: ["template void run<float>(float x);", "template void run<double>(double x);"],
                       2: ["template void run<int>(int x);"]}


def test_line_split_groups_by_key() -> None:
    text = SOURCE + "template void run2<float>(float x);\n"
    rule = SplitRule(source=("a.cu",), parts=3, match=r"^template void \w+<(\w+)>", key=1)
    summary = split_summary(text, rule)
    assert summary[1] == ["template void run<float>(float x);", "template void run2<float>(float x);"]
    assert summary[2] == ["template void run<double>(double x);"] and summary[3] == ["template void run<int>(int x);"]


def test_split_needs_enough_groups() -> None:
    with pytest.raises(SplitError, match="needs at least 4 distinct"):
        split_text(SOURCE, SplitRule(source=("a.cu",), parts=4), origin="a.cu")


def test_split_refuses_non_template_definitions_unless_exclusive() -> None:
    text = SOURCE.replace("// comment\n", "int helper(int a) {\n  return a;\n}\n")
    with pytest.raises(SplitError, match=r"a.cu:3: cannot split: `int helper\(int a\)`"):
        split_text(text, SplitRule(source=("a.cu",), parts=2), origin="a.cu")
    parts = split_text(text, SplitRule(source=("a.cu",), parts=2, exclusive=(r"^int helper\(",)), origin="a.cu")
    assert "return a;" in parts[0] and "return a;" not in parts[1]
    assert len(parts[1].splitlines()) == len(parts[0].splitlines())


def test_fanout_instantiates_launchers_in_their_own_parts() -> None:
    spec = tiny()
    rule = next(r for r in spec.split if r.fanout)
    text = (TINY_SPEC.parents[1] / rule.source[0]).read_text()
    parts = split_text(text, rule, origin=rule.source[0])
    assert len(parts) == 3
    assert parts[0].count("extern template void square_launch<") == 6
    assert parts[0].count("template void square_cuda<") == 3
    for p in parts[1:]:
        assert "template void square_cuda<" not in p
        assert p.count("template void square_launch<") == 3 and "extern template" not in p
    for p in parts:
        assert len(p.splitlines()) == len(text.splitlines()) + 1
    instantiated = [ln for p in parts[1:] for ln in split_summary(text, rule)[parts.index(p) + 1]]
    assert sorted(instantiated) == sorted(
        f"template void square_launch<{n}, {t}>(const ScaleAddParams &params, cudaStream_t stream);"
        for n in (128, 256) for t in ("float", "c10::Half", "c10::BFloat16"))


def test_link_hazard_detector() -> None:
    text = """\
template<> struct A<1> { int x; };
template<> void f<int>(int) { }
template<> __device__ __forceinline__ float conj<float>(float x) { return x; }
int counter = 0;
static int hidden = 1;
const int k = 3;
__device__ int devvar;
__global__ void k1(int *p) { *p = 1; }
__host__ __device__ int both(int x) { return x; }
struct S { int a; } s_instance;
struct Plain { int a; };
namespace foo { void g() {} namespace bar { inline void h() {} } }
extern "C" { void c_fn() {} }
void proto(int);
using T = int;
namespace cub = hipcub;
int table[] = {1, 2};
#define MACRO(x) void x() {}
/* void commented() {} */
const char *s = "void in_string() {}";
"""
    assert [h.first_line for h in link_hazards(text)] == [2, 4, 8, 9, 10, 12, 13, 17]


# ------------------------------------------------------------------------- real upstream sources
def _mirror() -> Path | None:
    return source_mirror()


def _git_show(repo: str, rev: str, path: str) -> str:
    mirror = _mirror()
    if mirror is None or not (mirror / repo / "repo").exists():
        pytest.skip(f"no source mirror of {repo} (set BUILDTOOL_SOURCE_MIRROR)")
    out = subprocess.run(["git", "--git-dir", str(mirror / repo / "repo"), "show", f"{rev}:{path}"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"{repo} {rev}:{path} not in the mirror")
    return out.stdout


CAUSAL = [("v1.1.1", "causal_conv1d_cuda-1.1"), ("v1.4.0", "causal_conv1d_cuda-1.4"),
          ("v1.5.2", "causal_conv1d_cuda-1.5"), ("v1.6.1", "causal_conv1d_cuda-1.5")]
MAMBA = [("state-spaces+mamba", "v2.2.2", "", "selective_scan_cuda-2.2"),
         ("state-spaces+mamba", "v2.2.4", "", "selective_scan_cuda-2.2"),
         ("state-spaces+mamba", "v2.3.2.post1", "", "selective_scan_cuda-2.3"),
         ("hustvl+Vim", "13ecb590cf506bb3287030f944f6bada351696bd", "mamba-1p1p1/", "selective_scan_cuda-1.1"),
         ("MzeroMiko+VMamba", "2ed52ead062a51a64521ed3871d52914bf532876", "kernels/selective_scan/",
          "selective_scan_cuda_core"),
         ("MzeroMiko+VMamba", "2ed52ead062a51a64521ed3871d52914bf532876", "kernels/selective_scan/",
          "selective_scan_cuda_oflex")]


def _check_split(spec: KernelSpec, read: object) -> int:
    """Every split source of ``spec`` splits the real file: each original explicit instantiation and each
    fanout launcher is defined in exactly one part, dispatcher parts declare their launchers `extern`,
    and no part is empty. Returns the number of split sources checked."""
    checked = 0
    sources = sorted({src for rule in spec.split for src in rule.source})
    for source in sources:
        rules = spec.rules_for(source)
        text = read(source)  # type: ignore[operator]
        summary = split_summary(text, rules)
        assert len(summary) == sum(r.parts for r in rules)
        originals = [ln.strip() for ln in text.splitlines() if re.match(r"^template\s+void\b.*;\s*$", ln)]
        defined = [x for part in summary.values() for x in part if not x.startswith("extern")]
        expected = list(originals)
        for rule in rules:
            if rule.fanout:
                args = [re.match(rule.match, o).group(rule.key).strip() for o in originals if re.match(rule.match, o)]  # type: ignore[union-attr]
                expected += [f"template {rule.fanout.declaration.format(item=i, match=a)};"
                             for a in args for i in rule.fanout.items]
        assert sorted(defined) == sorted(expected), source
        externs = [x for part in summary.values() for x in part if x.startswith("extern")]
        assert sorted(e.removeprefix("extern ") for e in externs) == sorted(set(expected) - set(originals))
        assert all(summary[k] for k in summary), f"{source}: an empty part"
        checked += 1
    return checked


@pytest.mark.mirror
@pytest.mark.parametrize(("tag", "spec_name"), CAUSAL)
def test_causal_conv1d_specs_split_the_real_sources(tag: str, spec_name: str) -> None:
    spec = load_kernel_spec(KERNELS / f"{spec_name}.yaml")
    repo = "Dao-AILab+causal-conv1d"
    for source in spec.sources:
        _git_show(repo, tag, source)  # every listed source exists at that tag
    for jobs in (2, 16):  # the small-machine and the big-machine split
        assert _check_split(spec.for_jobs(jobs), lambda s: _git_show(repo, tag, s)) >= 1


@pytest.mark.mirror
@pytest.mark.parametrize(("repo", "rev", "sub", "spec_name"), MAMBA)
def test_selective_scan_specs_split_the_real_sources(repo: str, rev: str, sub: str, spec_name: str) -> None:
    spec = load_kernel_spec(KERNELS / f"{spec_name}.yaml")
    for source in spec.sources:
        _git_show(repo, rev, sub + source)
    for jobs in (2, 16):
        assert _check_split(spec.for_jobs(jobs), lambda s: _git_show(repo, rev, sub + s)) >= 0


@pytest.mark.network
def test_causal_conv1d_1_7_0_sdist_splits(tmp_path: Path) -> None:
    """The default cell's source, the PyPI sdist of causal-conv1d 1.7.0, through the sources stage."""
    from buildtool.source.fetch import default_cache_dir, fetch

    source = load_recipes(REPO / "recipes")["causal-conv1d"].get("1.7.0").source
    try:
        fetched = fetch(source, tmp_path / "tree", cache_dir=default_cache_dir())
    except BuildtoolError as exc:
        pytest.skip(f"cannot fetch the sdist: {exc}")
    spec = load_kernel_spec(KERNELS / "causal_conv1d_cuda-1.5.yaml")
    assert all((fetched.tree / s).is_file() for s in spec.sources)
    assert _check_split(spec.for_jobs(2), lambda s: (fetched.tree / s).read_text()) == 1
    assert _check_split(spec.for_jobs(16), lambda s: (fetched.tree / s).read_text()) == 2
    assert link_hazards((fetched.tree / "csrc" / "causal_conv1d_bwd.cu").read_text()) == []


def test_several_rules_split_one_source_and_unclaimed_instantiations_stay_once() -> None:
    text = SOURCE + "template void other<int>(int x);\n"
    rules = (SplitRule(source=("a.cu",), parts=2, match=r"^template void run<(float|double)>"),
             SplitRule(source=("a.cu",), parts=2, match=r"^template void run<(\w+)>\(\w+ x\);", key=1,
                       fanout=None))
    with pytest.raises(SplitError, match=r"a.cu:4: the line is matched by split rules 1 and 2"):
        split_source(text, rules, origin="a.cu")
    disjoint = (rules[0], SplitRule(source=("a.cu",), parts=2, match=r"^template void run<int>",
                                    fanout={"declaration": "void body<{item}>(int)", "items": ("1", "2")}))  # type: ignore[arg-type]
    summary = split_summary(text, disjoint)
    assert summary[1] == ["template void run<float>(float x);", "template void other<int>(int x);"]
    assert summary[2] == ["template void run<double>(double x);"]
    assert summary[3] == ["extern template void body<1>(int);", "extern template void body<2>(int);",
                          "template void run<int>(int x);"]
    assert summary[4] == ["template void body<1>(int);", "template void body<2>(int);"]


def test_spec_rejects_the_same_source_split_twice_alike(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("module: m\nsources: [a.cu]\nsplit: [{source: a.cu, parts: 2}, {source: a.cu, parts: 3}]\n")
    with pytest.raises(UserError, match="split twice with the same `match`"):
        load_kernel_spec(path)


def test_split_rules_apply_from_their_min_jobs() -> None:
    spec = load_kernel_spec(KERNELS / "selective_scan_cuda-2.3.yaml")
    assert all(r.min_jobs == 10 for r in spec.split)
    assert spec.for_jobs(2).split == () and spec.for_jobs(16) == spec
    assert len(resolve(spec.for_jobs(2), facts()).units) == 10
    assert len(resolve(spec.for_jobs(16), facts()).units) == 1 + 6 * 6 + 3 * 2
    causal = load_kernel_spec(KERNELS / "causal_conv1d_cuda-1.5.yaml")
    # the bwd TU would otherwise be the whole build: always split, coarsely on small machines
    assert [u.name for u in resolve(causal, facts(), jobs=2).units if "bwd" in u.name] == [
        f"csrc/causal_conv1d_bwd.part{i}of4.cu" for i in range(1, 5)]
    assert len(resolve(causal, facts(), jobs=16).units) == 1 + 37 + 6 + 1
    assert causal.for_jobs(7).split[0].parts == 4 and causal.for_jobs(8).split[0].parts == 9


def test_mamba_splits_only_where_nvcc_split_compile_is_off() -> None:
    """On the 16-core H200 host -split-compile alone beat the fanout split (76 s / 854 CPU-s against
    80 s / 1084 CPU-s, docs/performance.md); the fanout stays for builds with `--split-compile 1`."""
    for name in ("selective_scan_cuda-1.1", "selective_scan_cuda-2.2", "selective_scan_cuda-2.3"):
        spec = load_kernel_spec(KERNELS / f"{name}.yaml")
        assert spec.split and all(r.without_split_compile for r in spec.split)
        assert spec.for_jobs(16, split_compile=16).split == ()
        assert spec.for_jobs(16, split_compile=1) == spec
        assert len(resolve(spec, facts(), jobs=16, split_compile=16).units) == len(spec.sources)
    # causal-conv1d's split does not depend on it (its one bwd TU would be the whole build)
    causal = load_kernel_spec(KERNELS / "causal_conv1d_cuda-1.5.yaml")
    assert causal.for_jobs(2, split_compile=2) == causal.for_jobs(2)
    rule = SplitRule(source=("a.cu",), parts=2, min_jobs=4, without_split_compile=True)
    assert [rule.applies(j, sc) for j, sc in ((2, 1), (4, 1), (4, 2), (16, 16))] == [False, True, False, False]


def test_split_job_ranges_of_one_source_must_not_overlap(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("module: m\nsources: [a.cu]\nsplit:\n  - {source: a.cu, parts: 2, max_jobs: 8}\n"
                    "  - {source: a.cu, parts: 4, min_jobs: 8}\n")
    with pytest.raises(UserError, match="for the same job counts"):
        load_kernel_spec(path)
    path.write_text("module: m\nsources: [a.cu]\nsplit:\n  - {source: a.cu, parts: 2, max_jobs: 7}\n"
                    "  - {source: a.cu, parts: 4, min_jobs: 8}\n")
    spec = load_kernel_spec(path)
    assert spec.for_jobs(7).split[0].parts == 2 and spec.for_jobs(8).split[0].parts == 4

"""The stable-ABI track in buildtool: recipe/kernel-spec schema, flag resolution, the matrix expansion (one cell
per platform x CUDA major serving torch >= the floor), `--explain`, the before/after summary, wheel names and
METADATA, and the static stable-ABI checks. The real compile of a stable module is in test_stable_abi_build.py
(slow); the ports themselves are abi-port's tests."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from packaging.version import Version

from buildtool.binary.elf import ElfInfo
from buildtool.compile.units import resolve
from buildtool.errors import UserError
from buildtool.publish.index import WheelRecord
from buildtool.spec.abitrack import torch_target_version
from buildtool.spec.kernelspec import KernelSpec, TargetFacts
from buildtool.spec.matrix import Cell, Matrix, load_matrix
from buildtool.spec.matrix.expand import make_cell
from buildtool.spec.matrix.rules import parse_filter
from buildtool.spec.matrix.schema import StableAbiSwitch
from buildtool.spec.recipe import Recipe, StableAbi
from buildtool.spec.tracksummary import summarize
from buildtool.user.resolve import Target
from buildtool.user.resolve import resolve as resolve_wheel
from buildtool.verify.stableabi import check_stable_symbols
from buildtool.verify.static import OpenedWheel
from buildtool.wheel.name import LocalLabel, WheelName
from buildtool.wheel.write import metadata_text, requirements, wheel_name_for

REPO = Path(__file__).resolve().parents[1]
FLOOR = "2.10"


def _replace_version(recipe: Recipe, version: str, stable_abi: StableAbi) -> Recipe:
    data = recipe.model_dump()  # re-validated, not model_copy: by_version is a cached property
    data["versions"] = [{**v, "stable_abi": stable_abi.model_dump()} if v["version"] == version else v
                        for v in data["versions"]]
    return Recipe.model_validate(data)


def _with_stable(recipe: Recipe, version: str, floor: str = FLOOR) -> Recipe:
    return _replace_version(recipe, version, StableAbi(torch_floor=floor, decided_by="torch::stable::contiguous",
                                                       kernels=("x_stable",)))


@pytest.fixture(scope="module")
def matrix() -> Matrix:
    """The project's matrix with the current line ported (whatever the recipes say today) and the track on."""
    base = load_matrix(REPO)
    recipes = dict(base.recipes)
    recipes["causal-conv1d"] = _with_stable(recipes["causal-conv1d"], "1.7.0")
    recipes["mamba-ssm"] = _with_stable(recipes["mamba-ssm"], "2.3.2.post1")
    return replace(base, recipes=recipes, spec=base.spec.model_copy(update={"stable_abi": StableAbiSwitch(enabled=True)}))


# ---------------------------------------------------------------- schema
def test_target_version_hex() -> None:
    assert torch_target_version("2.10") == "0x020a000000000000"
    assert torch_target_version("2.11") == "0x020b000000000000"


@pytest.mark.parametrize(("data", "message"), [
    ({"torch_floor": "2.10"}, "needs both `torch_floor` and `kernels`"),
    ({"blocked": "x", "kernels": ["k"]}, "either `blocked`"),
    ({"torch_floor": "2.10.1", "kernels": ["k"]}, "must be a torch minor like 2.10"),
])
def test_stable_abi_block_errors(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StableAbi.model_validate(data)


def test_blocked_version_says_why_and_cannot_build_stable() -> None:
    recipe = load_matrix(REPO).recipes["selective-scan"]
    v = recipe.versions[0].model_copy(update={"stable_abi": StableAbi(blocked="at::TensorIterator is missing")})
    assert v.stable_floor is None and v.stable_reason() == "at::TensorIterator is missing"
    with pytest.raises(UserError, match="cannot be built on the stable-ABI track: at::TensorIterator is missing"):
        v.kernels_for("stable")


def _facts(**kw: object) -> TargetFacts:
    base: dict[str, object] = dict(platform="linux-x86_64", torch="2.14.1", cuda="13.0", cxx_std="20", cxx11_abi=True,
                                   archs=("9.0",), ptx=False, compiler="gcc", cuda_home="/usr/local/cuda",
                                   abi="stable", torch_floor=FLOOR)
    base.update(kw)
    return TargetFacts.model_validate(base)


STABLE_SPEC = {"module": "_C_stable", "package": "pkg", "abi": "stable", "sources": ["b.cpp", "k.cu"],
               "shims": ["shims/pkg_cuda.py"]}


def test_stable_spec_resolves_to_target_version_limited_api_and_no_python() -> None:
    r = resolve(KernelSpec.model_validate(STABLE_SPEC), _facts())
    cxx = next(u for u in r.units if u.language == "cxx")
    cuda = next(u for u in r.units if u.language == "cuda")
    for unit in (cxx, cuda):
        assert "-DTORCH_TARGET_VERSION=0x020a000000000000" in unit.flags and "-DUSE_CUDA" in unit.flags
        assert "-DPy_LIMITED_API=0x030a0000" in unit.flags
    assert cxx.uses_python is False  # one binding object serves every CPython
    assert r.abi == "stable" and r.libraries == ("torch_cpu", "torch_cuda", "c10", "cudart")


@pytest.mark.parametrize(("update", "message"), [
    ({"link_libs": ["torch_cpu", "torch_python"]}, "torch_python cannot be linked by an `abi: stable` library"),
    ({"link_libs": ["python3.11"]}, "python3.11 cannot be linked"),
    ({"defines": ["TORCH_TARGET_VERSION=0x0209000000000000"]}, "set by the builder from the recipe"),
    ({"abi": "full"}, "shims belong to `abi: stable` specs"),
    ({"shims": ["shims/x.so"]}, "a shim is a Python module"),
])
def test_stable_spec_errors(update: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KernelSpec.model_validate({**STABLE_SPEC, **update})


def test_track_mismatch_between_spec_and_build_is_refused() -> None:
    with pytest.raises(UserError, match="is an `abi: stable` spec, the build is on the full-ABI track"):
        resolve(KernelSpec.model_validate(STABLE_SPEC), _facts(abi="full", torch_floor=None))


# ---------------------------------------------------------------- matrix
def test_stable_cells_one_per_platform_and_cuda_major(matrix: Matrix) -> None:
    cells = [c for c in matrix.expand().cells if c.abi == "stable" and not c.tags]  # the axes' stable cells
    keys = sorted((c.platform, c.cuda_major, c.package) for c in cells)
    # every platform x CUDA 12 and 13 x package (no CUDA-11 torch >= 2.10)
    assert keys == sorted(
        (p, m, pkg) for p in ("linux-aarch64", "linux-x86_64", "windows-x86_64") for m in ("12", "13")
        for pkg in ("causal-conv1d", "mamba-ssm"))
    lin13 = next(c for c in cells if c.platform == "linux-x86_64" and c.cuda_major == "13" and c.package == "causal-conv1d")
    # newest CUDA-13 toolkit on the axes, newest torch on the axes with a CUDA-13 build, lowest Python >= 3.10
    # (torch 2.15 ships for CPython 3.11-3.15)
    assert (lin13.cuda, lin13.torch, lin13.python, lin13.torch_floor) == ("13.2", "2.15.0", "3.11", FLOOR)
    assert lin13.id == "linux-x86_64-abi3-cu132-torch2.15-causal-conv1d-1.7.0"
    assert lin13.python_tag == "cp310" and lin13.abi_tag == "abi3" and lin13.triton == "triton"
    lin12 = next(c for c in cells if c.platform == "linux-x86_64" and c.cuda_major == "12" and c.package == "mamba-ssm")
    # CUDA 12.9 has no torch >= 2.10 build on the axes; 12.8 has (torch 2.11), and its arch policy reaches Blackwell
    assert (lin12.cuda, lin12.torch) == ("12.8", "2.11.0") and "10.0" in lin12.archs


def test_full_cells_at_or_above_the_floor_are_served_by_the_stable_track(matrix: Matrix) -> None:
    exp = matrix.expand()
    # the axes' cells; explicit include cells (the developer default, benchmarks) stay what they say
    full = [c for c in exp.cells if c.abi == "full" and c.package in ("causal-conv1d", "mamba-ssm")
            and c.version in ("1.7.0", "2.3.2.post1") and not c.tags]
    assert full and all(c.torch_minor in ("2.6", "2.7", "2.8", "2.9") for c in full)
    built, reasons = matrix.explain("linux-x86_64-cp312-cu128-torch2.11-causal-conv1d-1.7.0", exp)
    assert not built
    assert reasons[0].startswith("served by the stable-ABI track: linux-x86_64-abi3-cu128-torch2.11-causal-conv1d-1.7.0 "
                                 "(one wheel for torch >= 2.10 with CUDA 12.x and CPython >= 3.10")


def test_explain_names_the_track(matrix: Matrix) -> None:
    exp = matrix.expand()
    _, stable = matrix.explain("linux-x86_64-abi3-cu132-torch2.15-mamba-ssm-2.3.2.post1", exp)
    assert any(r.startswith("track: stable ABI: serves every torch >= 2.10 built with CUDA 13.x") for r in stable)
    _, below = matrix.explain("linux-x86_64-cp311-cu126-torch2.9-causal-conv1d-1.7.0", exp)
    assert any("track: full ABI: torch 2.9 is below the stable floor 2.10" in r for r in below)
    _, seed = matrix.explain("linux-x86_64-cp310-cu118-torch2.3-causal-conv1d-1.4.0", exp)
    assert any("track: full ABI: causal-conv1d 1.4.0 stays full ABI: no stable-ABI port of 1.4.0" in r for r in seed)


def test_blocked_package_stays_full_and_explain_says_which_api(matrix: Matrix) -> None:
    recipes = dict(matrix.recipes)
    recipes["mamba-ssm"] = _replace_version(recipes["mamba-ssm"], "2.3.2.post1",
                                            StableAbi(blocked="at::cuda::getCurrentDeviceProperties is missing"))
    only_full_includes = tuple(e for e in matrix.spec.include if e.abi == "full")
    m = replace(matrix, recipes=recipes, spec=matrix.spec.model_copy(update={"include": only_full_includes}))
    exp = m.expand()
    assert not [c for c in exp.cells if c.abi == "stable" and c.package == "mamba-ssm"]
    _, reasons = m.explain("linux-x86_64-cp312-cu130-torch2.13-mamba-ssm-2.3.2.post1", exp)
    assert any("stays full ABI: at::cuda::getCurrentDeviceProperties is missing" in r for r in reasons)


def test_summary_before_after_and_a_new_torch_adds_no_stable_cell(matrix: Matrix) -> None:
    s = summarize(matrix, "release", "2.16")
    before = [c for c in matrix.select(matrix.expand(stable_abi=False), "release") if c.abi == "full"]
    assert s.full_only.cells == len(before) and s.full_only.compile_groups == len({c.compile_group for c in before})
    assert s.with_stable.stable_cells == 12 + 4  # the axes' cells + the explicit local-stable / gpu-dev-stable ones
    assert s.with_stable.cells < s.full_only.cells and s.with_stable.compile_groups < s.full_only.compile_groups
    assert s.next_torch_adds_full_only > 0
    assert s.next_torch_adds_with_stable == 0


def test_filter_by_abi_and_a_bad_track_is_a_clear_error(matrix: Matrix) -> None:
    cells = matrix.select(matrix.expand(), None, ["abi=stable"])
    assert cells and all(c.abi == "stable" for c in cells)
    with pytest.raises(UserError, match='unknown ABI track "stabel" \\(did you mean "stable"\\?\\); allowed: full, stable'):
        parse_filter("abi=stabel")


def test_include_stable_cell_below_the_floor_is_refused(matrix: Matrix) -> None:
    cell, reasons = make_cell(matrix, "linux-x86_64", "3.11", "12.6", "2.9.1", "causal-conv1d", "1.7.0", (), None, "stable")
    assert cell is None and any("builds against torch >= its floor 2.10, not 2.9.1" in r for r in reasons)
    cell, reasons = make_cell(matrix, "linux-x86_64", "3.11", "13.0", "2.13.0", "causal-conv1d", "1.4.0", (), None, "stable")
    assert cell is None and any("has no stable-ABI track" in r for r in reasons)


# ---------------------------------------------------------------- wheel
def _stable_cell(**kw: object) -> Cell:
    base: dict[str, object] = dict(platform="linux-x86_64", python="3.11", cuda="13.0", torch="2.14.1",
                                   package="causal-conv1d", version="1.7.0", cxx11_abi=True, cxx_std="20",
                                   archs=("9.0",), ptx=False, triton="triton", abi="stable", torch_floor=FLOOR)
    base.update(kw)
    return Cell.model_validate(base)


def test_stable_wheel_name_label_and_metadata(matrix: Matrix) -> None:
    recipe = matrix.recipes["causal-conv1d"]
    cell = _stable_cell()
    name = wheel_name_for(recipe, cell, "linux_x86_64")
    assert name.filename == "causal_conv1d-1.7.0+cu13stable-cp310-abi3-linux_x86_64.whl"
    assert WheelName.parse(name.filename) == name
    meta = metadata_text(recipe, recipe.by_version["1.7.0"], cell, name.full_version)
    assert "Version: 1.7.0+cu13stable\n" in meta and "Requires-Python: >=3.10\n" in meta
    assert requirements(recipe.by_version["1.7.0"], cell) == ["torch>=2.10", "packaging", 'triton; platform_system == "Linux"']
    win = _stable_cell(platform="windows-x86_64", triton="triton-windows")
    assert requirements(recipe.by_version["1.7.0"], win)[-1] == 'triton-windows; platform_system == "Windows"'


def test_stable_label_parses_and_keeps_full_labels_working() -> None:
    lab = LocalLabel.parse("cu13stable")
    assert lab.stable and lab.cuda == "13" and lab.cuda_major == 13 and lab.torch is None and str(lab) == "cu13stable"
    full = LocalLabel.parse("cu130torch2.14cxx11abiTRUE")
    assert not full.stable and full.torch == "2.14" and str(full) == "cu130torch2.14cxx11abiTRUE"
    with pytest.raises(ValueError, match=r"cu124torch2\.4cxx11abiFALSE or cu13stable"):
        LocalLabel.parse("cu130stable")  # the stable label names the CUDA major only


# ---------------------------------------------------------------- static stable-ABI check (pure, on ELF facts)
def _wheel(undefined: tuple[str, ...], needed: tuple[str, ...] = ("libtorch_cpu.so", "libc10.so", "libcudart.so.13"),
           lib: str = "pkg/_C_stable.abi3.so") -> OpenedWheel:
    name = WheelName.parse("pkg-1.0+cu13stable-cp310-abi3-linux_x86_64.whl")
    return OpenedWheel(path=Path(name.filename), name=name, names=[lib, "pkg_cuda.py"], dist_info=None,
                         elves={lib: ElfInfo(machine="x86_64", needed=needed, soname=None, undefined=undefined)})


def test_stable_symbols_only_c_shim_passes() -> None:
    row = check_stable_symbols(_wheel(("aoti_torch_get_data_ptr", "torch_call_dispatcher", "__cudaLaunchKernel@libcudart.so.13",
                                       "_ZNSt6localeD1Ev@GLIBCXX_3.4")))
    assert row.result == "pass" and "2 C-shim symbols" in row.detail


@pytest.mark.parametrize(("undefined", "needed", "lib", "message"), [
    (("_ZN3c106detail14torchCheckFailEPKcS2_jS2_",), None, None, "uses 1 torch C++ symbol(s), e.g. _ZN3c106detail"),
    (("_ZNK2at10TensorBase7stridesEv",), None, None, "torch C++ symbol"),
    (("PyLong_FromLong",), None, None, "uses the CPython API (PyLong_FromLong)"),
    (("_ZTVN3c1011ErrorAlwaysE",), None, None, "uses 1 torch C++ symbol(s), e.g. _ZTVN3c10"),  # a vtable
    (("_ZN6caffe28TypeMeta3fooEv",), None, None, "torch C++ symbol"),
    (("_ZN8pybind116detail11get_internalsEv",), None, None, "uses pybind11 (_ZN8pybind116detail"),
    ((), ("libtorch_python.so", "libc10.so"), None, "needs libtorch_python.so"),
    ((), ("libpython3.11.so.1.0",), None, "needs libpython3.11.so.1.0"),
    ((), None, "pkg/_C_stable.cpython-311-x86_64-linux-gnu.so", "is named *.abi3.so"),
])
def test_stable_symbols_failures(undefined: tuple[str, ...], needed: tuple[str, ...] | None, lib: str | None,
                                 message: str) -> None:
    kwargs: dict[str, object] = {}
    if needed is not None:
        kwargs["needed"] = needed
    if lib is not None:
        kwargs["lib"] = lib
    row = check_stable_symbols(_wheel(undefined, **kwargs))  # type: ignore[arg-type]
    assert row.result == "fail" and message in row.detail


def test_stable_wheel_lists_its_shims_as_the_modules_to_import() -> None:
    assert _wheel(("aoti_torch_get_data_ptr",)).extension_modules == ["pkg_cuda"]


def test_project_matrix_serves_the_current_line_from_the_stable_track_and_keeps_the_baselines() -> None:
    m = load_matrix(REPO)
    exp = m.expand()
    assert m.spec.stable_abi.enabled
    kept = [c for c in exp.cells if c.abi == "full" and c.version in ("1.7.0", "2.3.2.post1")
            and Version(c.torch_minor) >= Version("2.10")]
    assert sorted(c.id for c in kept) == sorted(
        f"linux-x86_64-{py}-cu130-torch{t}-{pkg}" for py, t in (("cp311", "2.14"), ("cp312", "2.14"), ("cp312", "2.11"))
        for pkg in ("causal-conv1d-1.7.0", "mamba-ssm-2.3.2.post1"))
    _, why = m.explain("linux-x86_64-cp312-cu130-torch2.11-mamba-ssm-2.3.2.post1", exp)
    assert any("kept beside the stable-ABI track by stable_abi.keep_full[1] at" in r and "matrix.yaml:" in r for r in why)
    (local,) = m.select(exp, "local")
    assert local.abi == "full"  # `nox -s build-local` builds what it always built
    assert {c.id for c in m.select(exp, "local-stable")} == {
        "linux-x86_64-abi3-cu130-torch2.14-causal-conv1d-1.7.0", "linux-x86_64-abi3-cu130-torch2.14-mamba-ssm-2.3.2.post1"}
    assert {c.torch for c in m.select(exp, "gpu-dev-stable")} == {"2.11.0"}
    assert {c.package for c in m.select(exp, "gpu-dev-stable")} == {"causal-conv1d", "mamba-ssm"}
    # both ports build against every torch >= 2.10: the CUDA-12 cells of both packages build against the newest
    # torch of CUDA 12.8, the Windows CUDA-13 mamba-ssm cell against 2.14 (exclude[1] rules out 2.15 there)
    mamba = {c.id for c in exp.cells if c.abi == "stable" and c.package == "mamba-ssm" and not c.tags}
    assert "linux-x86_64-abi3-cu128-torch2.11-mamba-ssm-2.3.2.post1" in mamba
    assert "windows-x86_64-abi3-cu132-torch2.14-mamba-ssm-2.3.2.post1" in mamba
    _, why = m.explain("windows-x86_64-cp312-cu130-torch2.15-mamba-ssm-2.3.2.post1", exp)
    assert "exclude[1]" in why[0]  # an excluded combination is not claimed as served


def test_recipe_build_torch_raises_the_torch_a_stable_cell_builds_against(tmp_path: Path) -> None:
    (tmp_path / "recipes").mkdir()
    for recipe in (REPO / "recipes").glob("*.yaml"):
        text = recipe.read_text(encoding="utf-8")
        if recipe.name == "mamba-ssm.yaml":
            text = text.replace("      kernels: [selective_scan_stable-2.3]\n",
                                '      kernels: [selective_scan_stable-2.3]\n      build_torch: "2.14"\n')
            assert 'build_torch: "2.14"' in text
        (tmp_path / "recipes" / recipe.name).write_text(text, encoding="utf-8")
    gpu_dev_stable = '    packages: [causal-conv1d==1.7.0, mamba-ssm==2.3.2.post1]\n    abi: stable\n    archs: ["9.0"]\n    tags: [gpu-dev-stable]'
    matrix_text = (REPO / "matrix.yaml").read_text(encoding="utf-8")
    assert gpu_dev_stable in matrix_text
    with pytest.raises(UserError, match=r"matrix\.yaml:\d+:\d+: include\[\d\]: impossible stable-ABI cell "
                       r"linux-x86_64-cp312-cu130-torch2\.11-mamba-ssm-2\.3\.2\.post1: .*stable_abi\.build_torch"):
        load_matrix(tmp_path, REPO / "matrix.yaml").expand()
    (tmp_path / "matrix.yaml").write_text(matrix_text.replace(gpu_dev_stable, gpu_dev_stable.replace(", mamba-ssm==2.3.2.post1", "")), encoding="utf-8")
    m = load_matrix(tmp_path)
    exp = m.expand()
    mamba = {c.id for c in exp.cells if c.abi == "stable" and c.package == "mamba-ssm" and not c.tags}
    assert "linux-x86_64-abi3-cu126-torch2.14-mamba-ssm-2.3.2.post1" in mamba  # CUDA 12.8 has no torch >= 2.14
    cell, reasons = make_cell(m, "linux-x86_64", "3.12", "13.0", "2.11.0", "mamba-ssm", "2.3.2.post1", (), None, "stable")
    assert cell is None and any("compiles only against torch >= 2.14's headers (stable_abi.build_torch)" in r
                                for r in reasons)


def test_keep_full_selector_is_checked_like_a_profile(tmp_path: Path) -> None:
    text = (REPO / "matrix.yaml").read_text(encoding="utf-8").replace('python: "3.12", cuda: "13.0", torch: "2.11"',
                                                                     'python: "3.12", cuda: "13.0", torch: "2.11.7"')
    (tmp_path / "matrix.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match=r'stable_abi\.keep_full\.1\.torch: unknown torch "2\.11\.7"'):
        Matrix.load(tmp_path / "matrix.yaml", load_matrix(REPO).recipes)


# ---------------------------------------------------------------- resolver: the CUDA major is the guard
def _stable_record(cuda_major: str = "13") -> WheelRecord:
    name = f"causal_conv1d-1.7.0+cu{cuda_major}stable-cp310-abi3-linux_x86_64.whl"
    return WheelRecord(filename=name, url="files/" + name, package="causal-conv1d", dist="causal_conv1d",
                       version=f"1.7.0+cu{cuda_major}stable", public_version="1.7.0", python_tag="cp310",
                       abi_tag="abi3", platform_tag="linux_x86_64", platform="linux-x86_64", torch=None,
                       cuda=cuda_major, cxx11_abi=None, archs=("9.0",), requires_python=">=3.10",
                       requires_dist=("torch>=2.10", "packaging"), sha256="0" * 64, size=1)


@pytest.mark.parametrize(("torch", "torch_cuda", "python_tag", "chosen", "reason"), [
    ("2.11.0+cu130", "13.0", "cp312", True, ""),
    ("2.15.0+cu132", "13.2", "cp314", True, ""),
    ("2.12.1+cu126", "12.6", "cp312", False, "built for CUDA 13, torch uses CUDA 12.6"),
    ("2.9.1+cu130", "13.0", "cp312", False, "needs torch>=2.10"),
])
def test_resolver_serves_a_stable_wheel_to_every_torch_of_its_cuda_major_only(
        torch: str, torch_cuda: str, python_tag: str, chosen: bool, reason: str) -> None:
    target = Target(python_tag=python_tag, platform="linux-x86_64", torch=torch, torch_cuda=torch_cuda,
                    cxx11_abi=True, gpu_archs=("9.0",))
    res = resolve_wheel("causal-conv1d", [_stable_record()], target)
    assert (res.chosen is not None) is chosen
    if not chosen:
        assert reason in res.rejected[0].reason

"""Static wheel checks catch real faults: wrong METADATA version, corrupted RECORD, missing arch,
missing provenance, bundled CUDA libs, unresolvable dependencies, too-new GLIBC symbols."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from packaging.version import Version
from provenance_samples import legacy_provenance, without
from verify_fixtures import compile_c_so, compile_cuda_so, make_wheel, provenance

from buildtool.binary.elf import ElfInfo, read_elf_bytes
from buildtool.binary.fatbin import FATBIN_SECTION
from buildtool.verify.static import (
    TargetLibs,
    check_cuda_archs,
    check_glibc,
    check_name_metadata_tags,
    check_provenance,
    check_record,
    check_shared_libs,
    cuobjdump_archs,
    find_cuobjdump,
    open_wheel,
    static_checks,
)


def _elf(data: bytes) -> ElfInfo:
    info = read_elf_bytes(data, sections=(FATBIN_SECTION,))
    assert info is not None
    return info

needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")


@pytest.fixture(scope="module")
def cuda_so(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not on PATH: cannot build a real fatbin library")
    d = tmp_path_factory.mktemp("so")
    return compile_cuda_so(d / "tinyk_cuda.so", ["8.0", "9.0"], ptx=True).read_bytes()


def _by_check(results):  # type: ignore[no-untyped-def]
    return {r.check: r for r in results}


@needs_nvcc
def test_good_wheel_passes_every_static_check(tmp_path: Path, cuda_so: bytes) -> None:
    whl = make_wheel(tmp_path, files={"tinyk_cuda.so": cuda_so}, prov=provenance(["8.0", "9.0"], ptx=True))
    wc, results = static_checks(whl)
    assert wc is not None and wc.extension_modules == ["tinyk_cuda"]
    bad = [r for r in results if r.result != "pass"]
    assert not bad, bad
    archs = _by_check(results)["cuda archs"]
    assert archs.numbers["cubin"] == [80, 90] and archs.numbers["ptx"] == [90]


def test_wrong_metadata_version_fails_with_both_versions_named(tmp_path: Path) -> None:
    whl = make_wheel(tmp_path, metadata_version="0.1.1+cu130torch2.11cxx11abiTRUE", prov=provenance(["9.0"]))
    r = check_name_metadata_tags(open_wheel(whl))
    assert r.result == "fail"
    assert "METADATA Version '0.1.1+cu130torch2.11cxx11abiTRUE' != file name's '0.1.0+cu130torch2.11cxx11abiTRUE'" in r.detail


def test_metadata_without_local_label_fails(tmp_path: Path) -> None:
    """Upstream's habit: label only in the file name; pip then rejects the wheel from an index."""
    whl = make_wheel(tmp_path, metadata_version="0.1.0")
    r = check_name_metadata_tags(open_wheel(whl))
    assert r.result == "fail" and "METADATA Version '0.1.0'" in r.detail


def test_wheel_tag_mismatch_fails(tmp_path: Path) -> None:
    whl = make_wheel(tmp_path, tag="cp312-cp312-linux_x86_64")
    renamed = whl.with_name(whl.name.replace("cp312-cp312", "cp311-cp311"))
    whl.rename(renamed)
    r = check_name_metadata_tags(open_wheel(renamed))
    assert r.result == "fail" and "WHEEL Tag" in r.detail and "cp311" in r.detail


def test_corrupted_record_fails_naming_the_file(tmp_path: Path) -> None:
    whl = make_wheel(tmp_path, corrupt_after_record={"tinyk/__init__.py": b"__version__ = 'tampered'\n"})
    r = check_record(open_wheel(whl))
    assert r.result == "fail"
    assert "hash mismatch for tinyk/__init__.py" in r.detail and "size mismatch for tinyk/__init__.py" in r.detail


def test_file_missing_from_record_fails(tmp_path: Path) -> None:
    whl = make_wheel(tmp_path, corrupt_after_record={"tinyk/extra.py": b"x = 1\n"})
    r = check_record(open_wheel(whl))
    assert r.result == "fail" and "tinyk/extra.py is in the wheel but not in RECORD" in r.detail


def test_missing_provenance_fails(tmp_path: Path) -> None:
    r = check_provenance(open_wheel(make_wheel(tmp_path)))
    assert r.result == "fail" and "buildtool_provenance.json is missing" in r.detail


def test_incomplete_provenance_names_missing_keys(tmp_path: Path) -> None:
    prov = without(provenance(["9.0"]), "toolchain")
    r = check_provenance(open_wheel(make_wheel(tmp_path, prov=prov)))
    assert r.result == "fail" and "toolchain: Field required" in r.detail
    r = check_provenance(open_wheel(make_wheel(tmp_path, prov=without(provenance(["9.0"]), "cell", "archs"))))
    assert r.result == "fail" and "cell.archs: Field required" in r.detail


def test_provenance_in_the_legacy_layout_passes(tmp_path: Path) -> None:
    """Wheels built before the typed provenance carry the untyped schema-1 layout: read through the migration."""
    prov = legacy_provenance(["9.0"])
    r = check_provenance(open_wheel(make_wheel(tmp_path, prov=prov)))
    assert r.result == "pass" and r.numbers["archs"] == ["9.0"]
    r = check_provenance(open_wheel(make_wheel(tmp_path, prov={**prov, "modules": []})))
    assert r.result == "fail" and "lists no modules" in r.detail
    r = check_provenance(open_wheel(make_wheel(tmp_path, prov={**prov, "schema": 7})))
    assert r.result == "fail" and "provenance schema 7 is unknown" in r.detail


@needs_nvcc
def test_missing_arch_fails_naming_the_arch(tmp_path: Path, cuda_so: bytes) -> None:
    whl = make_wheel(tmp_path, files={"tinyk_cuda.so": cuda_so}, prov=provenance(["8.0", "9.0", "10.0"]))
    r = check_cuda_archs(open_wheel(whl), cuobjdump=None)
    assert r.result == "fail"
    assert "tinyk_cuda.so lacks sm_100 (declared 8.0;9.0;10.0)" in r.detail


@needs_nvcc
def test_missing_ptx_fails(tmp_path: Path) -> None:
    so = compile_cuda_so(tmp_path / "noptx.so", ["9.0"], ptx=False).read_bytes()
    whl = make_wheel(tmp_path, files={"tinyk_cuda.so": so}, prov=provenance(["9.0"], ptx=True))
    r = check_cuda_archs(open_wheel(whl), cuobjdump=None)
    assert r.result == "fail" and "lacks PTX for compute_90" in r.detail


@needs_nvcc
def test_fatbin_reader_agrees_with_cuobjdump(tmp_path: Path, cuda_so: bytes) -> None:
    tool = find_cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump here (PATH, CUDA_HOME, triton) to cross-check the fatbin reader")
    info = _elf(cuda_so)
    assert cuobjdump_archs(tool, cuda_so) == (set(info.cubin_archs), set(info.ptx_archs))
    whl = make_wheel(tmp_path, files={"tinyk_cuda.so": cuda_so}, prov=provenance(["8.0", "9.0"], ptx=True))
    r = check_cuda_archs(open_wheel(whl), cuobjdump=tool)
    assert r.result == "pass" and r.numbers["tool"] == "cuobjdump"


def test_library_without_cuda_code_fails_arch_check(tmp_path: Path) -> None:
    so = compile_c_so(tmp_path / "plain_ext.so").read_bytes()
    whl = make_wheel(tmp_path, files={"plain_ext.so": so}, prov=provenance(["9.0"]))
    r = check_cuda_archs(open_wheel(whl), cuobjdump=None)
    assert r.result == "fail" and "no library in the wheel embeds CUDA code" in r.detail


def test_bundled_cuda_runtime_fails(tmp_path: Path) -> None:
    so = compile_c_so(tmp_path / "ext.so").read_bytes()
    whl = make_wheel(tmp_path, files={"ext.so": so, "tinyk.libs/libcudart-1a2b3c4d.so.13": so})
    r = check_shared_libs(open_wheel(whl), target=None)
    assert r.result == "fail" and "bundles tinyk.libs/libcudart-1a2b3c4d.so.13" in r.detail


def test_unresolvable_dependency_fails(tmp_path: Path) -> None:
    dep = compile_c_so(tmp_path / "libsurprise.so")
    assert dep.exists()
    so = compile_c_so(tmp_path / "ext.so", needs=["surprise"]).read_bytes()
    whl = make_wheel(tmp_path, files={"ext.so": so})
    r = check_shared_libs(open_wheel(whl), target=None)
    assert r.result == "fail" and "ext.so needs libsurprise.so" in r.detail


def test_dependency_resolution_against_a_target_torch_layout(tmp_path: Path) -> None:
    """A fake target site-packages with torch/lib/libc10.so: a library needing libc10.so resolves there,
    and fails against a target that lacks it."""
    lib_dir = tmp_path / "site" / "torch" / "lib"
    lib_dir.mkdir(parents=True)
    compile_c_so(lib_dir / "libc10.so")
    src = tmp_path / "ext.c"
    src.write_text("int ext(void) { return 1; }\n")
    so = tmp_path / "ext.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(so), str(src), f"-L{lib_dir}", "-Wl,--no-as-needed", "-lc10"],
                   check=True, capture_output=True)
    whl = make_wheel(tmp_path, files={"ext.so": so.read_bytes()})
    target = TargetLibs.discover([tmp_path / "site"])
    assert target is not None and "libc10.so" in target.names
    assert check_shared_libs(open_wheel(whl), target).result == "pass"
    r = check_shared_libs(open_wheel(whl), TargetLibs(frozenset({"libtorch.so"}), "elsewhere"))
    assert r.result == "fail" and "ext.so needs libc10.so, which the target torch (elsewhere) does not provide" in r.detail


def test_glibc_symbols_checked_against_manylinux_2_17(tmp_path: Path) -> None:
    so = compile_c_so(tmp_path / "ext.so").read_bytes()
    newest = _elf(so).max_version("GLIBC_")
    whl = make_wheel(tmp_path, files={"ext.so": so}, tag="cp312-cp312-manylinux_2_17_x86_64")
    r = check_glibc(open_wheel(whl))
    if newest and Version(newest) > Version("2.17"):
        assert r.result == "fail" and f"needs GLIBC_{newest} > GLIBC_2.17" in r.detail
    else:
        assert r.result == "pass"


def test_not_a_zip_is_one_clear_failure(tmp_path: Path) -> None:
    bad = tmp_path / "tinyk-0.1.0-cp312-cp312-linux_x86_64.whl"
    bad.write_bytes(b"not a zip")
    wc, results = static_checks(bad)
    assert wc is None and results[0].result == "fail" and "not a readable wheel" in results[0].detail


def test_a_torch_that_is_not_the_target_is_not_used_for_resolution(tmp_path: Path) -> None:
    """A CPU torch 2.13 here says nothing about what torch 2.11+cu130 provides: fall back to the lists."""
    site = tmp_path / "site"
    (site / "torch" / "lib").mkdir(parents=True)
    (site / "torch" / "version.py").write_text("__version__ = '2.13.0+cpu'\n")
    compile_c_so(site / "torch" / "lib" / "libc10.so")
    target = TargetLibs.discover([site])
    assert target is not None and target.torch_version == "2.13.0+cpu"
    so = compile_c_so(tmp_path / "ext.so").read_bytes()
    wc = open_wheel(make_wheel(tmp_path, files={"ext.so": so}))  # label: cu130 torch 2.11
    assert target.serves(wc.name) == "the torch here is 2.13.0+cpu, the wheel targets torch 2.11"
    r = check_shared_libs(wc, target)
    assert r.result == "pass" and "the wheel targets torch 2.11" in r.detail

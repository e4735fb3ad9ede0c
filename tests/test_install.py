"""End to end: wheelhouse -> `buildtool index` -> 127.0.0.1 HTTP -> fresh venvs, via `buildtool install`,
plain `pip install --index-url` and `uv pip install`; torch is never touched; a tampered wheel is refused."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixture_wheels import (
    buildtool,
    clean_env,
    compile_extension,
    find_torch_site,
    label,
    make_venv,
    make_wheel,
    serve,
    torch_facts,
    uv_bin,
)
from provenance_samples import current_provenance

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Site:
    root: Path
    torch_site: Path
    torch: dict[str, object]
    version: str            # the matching kernel's full version
    cuda_override: tuple[str, ...]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    torch_site = find_torch_site(tmp_path_factory.mktemp("torchcache"))
    probe_venv = make_venv(tmp_path_factory.mktemp("probe") / "v", torch_site)
    facts = torch_facts(probe_venv)
    minor = ".".join(str(facts["version"]).split(".")[:2])
    cuda = str(facts["cuda"] or "13.0")
    abi = bool(facts["abi"])
    dist = tmp_path_factory.mktemp("dist")
    so_name, so = compile_extension(tmp_path_factory.mktemp("ext"), "tiny_kernel_ext")
    version = f"1.0.0+{label(minor, cuda, abi)}"
    make_wheel(dist, "tiny-kernel", version,
               files={"tiny_kernel/__init__.py": "from tiny_kernel_ext import touch\nVALUE = 42\n", so_name: so},
               requires=(f"torch=={minor}.*", "tiny-helper>=0.1"),
               provenance=current_provenance(["9.0"], ptx=True))
    # decoys: same package for other torch minors / CUDA / ABI; the resolver must skip them
    for other in (label("2.6", "12.4", False), label("2.8", cuda, abi), label(minor, "11.8", abi)):
        make_wheel(dist, "tiny-kernel", f"1.0.0+{other}", files={"tiny_kernel/__init__.py": "VALUE = 0\n"},
                   requires=("torch",))
    make_wheel(dist, "tiny-helper", "0.1", python_tag="py3", platform_tag="any", files={"tiny_helper.py": "H = 1\n"})
    root = tmp_path_factory.mktemp("site")
    proc = buildtool("index", str(dist), "--out", str(root))
    assert proc.returncode == 0, proc.stderr
    return Site(root=root, torch_site=torch_site, torch=facts, version=version,
                cuda_override=() if facts["cuda"] else ("--cuda", cuda))


def _import(python: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True)


def _assert_torch_untouched(python: Path, site: Site) -> None:
    after = torch_facts(python)
    assert after["version"] == site.torch["version"]
    assert str(after["file"]).startswith(str(site.torch_site))  # still the shared torch, nothing installed over it
    listing = subprocess.run([str(python), "-c", "import sysconfig,os;print(os.listdir(sysconfig.get_paths()['purelib']))"],
                             capture_output=True, text=True).stdout
    assert "'torch'" not in listing


def test_buildtool_install_into_fresh_venv(site: Site, tmp_path: Path) -> None:
    python = make_venv(tmp_path / "venv", site.torch_site)
    with serve(site.root) as url:
        proc = buildtool("install", "tiny-kernel", "--index", url, "--python", str(python), "--no-host",
                         *site.cuda_override, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    # tiny-helper is in the index too, so it is resolved and hash-checked like the kernel
    inst, helper = report["installed"]
    assert helper["filename"] == "tiny_helper-0.1-py3-none-any.whl"
    assert inst["filename"].startswith(f"tiny_kernel-{site.version}-")
    assert set(inst["modules"]) == {"tiny_kernel", "tiny_kernel_ext"}
    assert report["import_ok"] and report["torch_before"] == report["torch_after"]
    assert report["requirements"] == []
    check = _import(python, "import tiny_kernel, tiny_helper; tiny_kernel.touch(); print(tiny_kernel.VALUE)")
    assert check.returncode == 0 and check.stdout.strip() == "42", check.stderr
    _assert_torch_untouched(python, site)


def test_plain_pip_install_index_url(site: Site, tmp_path: Path) -> None:
    python = make_venv(tmp_path / "venv", site.torch_site, with_pip=True)
    with serve(site.root) as url:
        proc = subprocess.run(
            [str(python), "-m", "pip", "install", "--index-url", url + "/simple/", f"tiny-kernel=={site.version}"],
            capture_output=True, text=True, env=clean_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Requirement already satisfied: torch" in proc.stdout
    assert "Collecting torch" not in proc.stdout
    assert _import(python, "import tiny_kernel, tiny_helper; tiny_kernel.touch()").returncode == 0
    _assert_torch_untouched(python, site)


@pytest.mark.skipif(uv_bin() is None, reason="uv is not installed (it is in the dev extras)")
def test_uv_pip_install(site: Site, tmp_path: Path) -> None:
    python = make_venv(tmp_path / "venv", site.torch_site)
    uv = uv_bin()
    assert uv is not None
    with serve(site.root) as url:
        proc = subprocess.run(
            [uv, "pip", "install", "--python", str(python), "--index-url", url + "/simple/",
             f"tiny-kernel=={site.version}"],
            capture_output=True, text=True, env=clean_env(UV_CACHE_DIR=str(tmp_path / "uvcache")))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    changed = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip().startswith(("+ ", "- "))]
    assert any(ln.startswith("+ tiny-kernel==1.0.0+") for ln in changed), proc.stderr
    assert not any(ln.split("==")[0] in ("+ torch", "- torch") for ln in changed), proc.stderr
    assert _import(python, "import tiny_kernel, tiny_helper; tiny_kernel.touch()").returncode == 0
    _assert_torch_untouched(python, site)


def test_tampered_wheel_is_refused(site: Site, tmp_path: Path) -> None:
    tampered = tmp_path / "site"
    shutil.copytree(site.root, tampered)
    wheel = next(tampered.glob(f"files/tiny_kernel-{site.version}-*.whl"))
    with open(wheel, "ab") as fh:
        fh.write(b"\0evil")
    python = make_venv(tmp_path / "venv", site.torch_site)
    with serve(tampered) as url:
        proc = buildtool("install", "tiny-kernel", "--index", url, "--python", str(python), "--no-host",
                         *site.cuda_override)
    assert proc.returncode == 1
    assert "sha256 mismatch" in proc.stderr and "refusing to install" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _import(python, "import tiny_kernel").returncode != 0


def test_no_fitting_wheel_lists_reasons(site: Site, tmp_path: Path) -> None:
    python = make_venv(tmp_path / "venv", site.torch_site)
    with serve(site.root) as url:
        proc = buildtool("install", "tiny-kernel", "--index", url, "--python", str(python), "--no-host",
                         "--torch", "2.5.1", "--cuda", "12.4")
    assert proc.returncode == 2
    assert "no wheel of tiny-kernel fits" in proc.stderr and "built for torch" in proc.stderr


# ---------------------------------------------------------------- the same with the real builder's wheel
@pytest.fixture(scope="module")
def real_site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny CUDA kernel (tests/fixtures/tiny) built by `buildtool build` with real nvcc, then indexed.
    Shares test_build's object cache, so whichever module runs second does not compile again."""
    import tinyproj

    reason = tinyproj.available()
    if reason is not None:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("tinyproj")
    mirror = tinyproj.make_project(root)
    env = tinyproj.build_env(root, tmp_path_factory.getbasetemp() / "tiny-object-cache")
    proc = subprocess.run([*tinyproj.build_command(mirror, root / "dist"), "--json"], capture_output=True, text=True,
                          env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    site_dir = root / "site"
    proc = buildtool("index", str(root / "dist"), "--out", str(site_dir))
    assert proc.returncode == 0, proc.stderr
    return site_dir, tinyproj.torch_site_packages()


def test_real_builder_wheel_in_manifest(real_site: tuple[Path, Path]) -> None:
    import tinyproj

    (w,) = json.loads((real_site[0] / "manifest.json").read_text())["wheels"]
    assert w["filename"] == tinyproj.WHEEL
    assert (w["torch"], w["cuda"], w["cxx11_abi"], w["archs"]) == ("2.14", "13.0", True, ["9.0"])
    assert w["provenance"]["cell"]["id"] == tinyproj.CELL_ID and w["min_glibc"]


@pytest.mark.parametrize("installer", ["buildtool", "pip", "uv"])
def test_real_builder_wheel_installs_and_imports(real_site: tuple[Path, Path], tmp_path: Path, installer: str) -> None:
    site_dir, torch_site = real_site
    uv = uv_bin()
    if installer == "uv" and uv is None:
        pytest.skip("uv is not installed")
    python = make_venv(tmp_path / "venv", torch_site, with_pip=installer == "pip")
    before = torch_facts(python)
    with serve(site_dir) as url:
        if installer == "buildtool":
            proc = buildtool("install", "tiny", "--index", url, "--python", str(python), "--no-host")
        elif installer == "pip":
            proc = subprocess.run([str(python), "-m", "pip", "install", "--index-url", url + "/simple/",
                                   "tiny==0.1+cu130torch2.14cxx11abiTRUE"], capture_output=True, text=True,
                                  env=clean_env())
        else:
            assert uv is not None
            proc = subprocess.run([uv, "pip", "install", "--python", str(python), "--index-url", url + "/simple/",
                                   "tiny==0.1+cu130torch2.14cxx11abiTRUE"], capture_output=True, text=True,
                                  env=clean_env(UV_CACHE_DIR=str(tmp_path / "uvcache")))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check = _import(python, "import tiny, tiny_cuda; print(tiny_cuda.__file__)")
    assert check.returncode == 0, check.stderr
    assert str(tmp_path) in check.stdout  # the extension came from this venv, built by the real builder
    assert torch_facts(python) == before


def _dists(python: Path) -> dict[str, str]:
    from buildtool.user.install import installed_dists

    return installed_dists(str(python))


def test_pip_freeze_after_buildtool_install_is_an_index_install(site: Site, tmp_path: Path) -> None:
    """No direct_url.json pointing at a deleted temporary directory: freeze names the version with its label."""
    python = make_venv(tmp_path / "venv", site.torch_site)
    with serve(site.root) as url:
        proc = buildtool("install", "tiny-kernel", "--index", url, "--python", str(python), "--no-host",
                         *site.cuda_override)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    freeze = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "freeze"], capture_output=True,
                            text=True, env=clean_env())
    assert f"tiny-kernel=={site.version}".lower() in freeze.stdout.lower().splitlines(), freeze.stdout
    assert "file://" not in freeze.stdout


@pytest.mark.skipif(uv_bin() is None, reason="uv is not installed (it is in the dev extras)")
def test_buildtool_install_with_uv_as_the_installer(site: Site, tmp_path: Path) -> None:
    """`--installer uv`: the same resolve, sha256 and archive checks, then uv (named in the log) puts the
    wheels in; torch untouched, imports, and the freeze line is an index install, as with pip."""
    python = make_venv(tmp_path / "venv", site.torch_site)
    with serve(site.root) as url:
        proc = buildtool("install", "tiny-kernel", "--index", url, "--python", str(python), "--no-host",
                         *site.cuda_override, "--installer", "uv", "-v")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "installer: uv" in proc.stderr and " pip install --python " in proc.stderr
    assert "import ok" in proc.stdout
    freeze = subprocess.run([str(uv_bin()), "pip", "freeze", "--python", str(python)], capture_output=True, text=True,
                            env=clean_env())
    assert f"tiny-kernel=={site.version}".lower() in freeze.stdout.lower().splitlines(), freeze.stdout
    assert "file://" not in freeze.stdout
    check = _import(python, "import tiny_kernel, tiny_helper; tiny_kernel.touch(); print(tiny_kernel.VALUE)")
    assert check.returncode == 0 and check.stdout.strip() == "42", check.stderr
    _assert_torch_untouched(python, site)


def test_damaged_wheel_with_matching_hash_never_reaches_pip(site: Site, tmp_path: Path) -> None:
    """The zip is damaged and the manifest's sha256 updated to match it: refused before pip, env unchanged."""
    damaged = tmp_path / "site"
    shutil.copytree(site.root, damaged)
    wheel = next(damaged.glob(f"files/tiny_kernel-{site.version}-*.whl"))
    data = bytearray(wheel.read_bytes())
    start = data.index(b"tiny_kernel/__init__.py") + 40
    data[start:start + 8] = bytes(b ^ 0xFF for b in data[start:start + 8])
    wheel.write_bytes(bytes(data))
    manifest = json.loads((damaged / "manifest.json").read_text())
    for w in manifest["wheels"]:
        if w["filename"] == wheel.name:
            w["sha256"], w["size"] = hashlib.sha256(bytes(data)).hexdigest(), len(data)
    (damaged / "manifest.json").write_text(json.dumps(manifest))
    python = make_venv(tmp_path / "venv", site.torch_site)
    before = _dists(python)
    with serve(damaged) as url:
        proc = buildtool("install", "tiny-kernel", "--index", url, "--python", str(python), "--no-host",
                         *site.cuda_override)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "not a readable wheel (damaged)" in proc.stderr and wheel.name in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _dists(python) == before


def test_failed_install_leaves_the_environment_as_it_was(site: Site, tmp_path: Path) -> None:
    """The dependency step succeeds (a PyPI-side package goes in), then pip refuses the kernel wheel (a member
    that would land outside site-packages): what the first step added is removed again."""
    deps = tmp_path / "deps"
    make_wheel(deps, "tiny-dep", "1.0", python_tag="py3", platform_tag="any", files={"tiny_dep.py": ""})
    deps_site = tmp_path / "deps-site"
    assert buildtool("index", str(deps), "--out", str(deps_site)).returncode == 0
    dist = tmp_path / "dist"
    minor = ".".join(str(site.torch["version"]).split(".")[:2])
    version = f"2.0.0+{label(minor, str(site.torch['cuda'] or '13.0'), bool(site.torch['abi']))}"
    make_wheel(dist, "evil-kernel", version, files={"evil_kernel/__init__.py": "", "../../escape.py": ""},
               requires=(f"torch=={minor}.*", "tiny-dep"))
    kernel_site = tmp_path / "kernel-site"
    assert buildtool("index", str(dist), "--out", str(kernel_site)).returncode == 0
    python = make_venv(tmp_path / "venv", site.torch_site)
    before = _dists(python)
    with serve(kernel_site) as url, serve(deps_site) as deps_url:
        proc = buildtool("install", "evil-kernel", "--index", url, "--python", str(python), "--no-host",
                         *site.cuda_override, "--pip-arg=--index-url", f"--pip-arg={deps_url}/simple/")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "rollback: removing tiny-dep 1.0" in proc.stderr
    assert "rollback: the environment is as it was" in proc.stderr
    assert _dists(python) == before

"""Compile stage: the tiny fixture extension compiled END TO END with the real nvcc against a real torch
(split TU, ninja, object cache, link, import), plus the pure parts (jobs, cache keys, command shapes,
progress heartbeat with a real ninja). Windows command shapes are fixture tests (no MSVC here)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from torchenv import torch_python

from buildtool.compile.drivers import PREFIX_PLACEHOLDERS, compile_argv, link_argv, prefix_maps
from buildtool.compile.models import CompileRequest
from buildtool.compile.modules import compile_modules
from buildtool.compile.ninja import _ninja_path, ninja_binary, read_ninja_log, write_build_ninja
from buildtool.compile.plan import BuildContext, PlannedModule, cache_key, plan_modules
from buildtool.compile.progress import STATUS_MARK, NinjaProgress
from buildtool.compile.schedule import (
    UNIT_COST_BASE,
    UNIT_SECONDS_FILE,
    estimate_unit_seconds,
    nice_levels,
    order_by_cost,
    read_unit_history,
    unit_costs,
    unit_history_key,
    write_unit_history,
)
from buildtool.compile.sizing import GIB, default_jobs, default_split_compile, honours_split_compile
from buildtool.compile.target import HostCompiler, PythonFacts
from buildtool.errors import BuildError
from buildtool.spec.kernelspec import TargetFacts, load_kernel_spec
from buildtool.spec.matrix import Cell

TINY = Path(__file__).parent / "fixtures" / "tiny"
TINY_SPEC = TINY / "kernels" / "tiny_cuda.yaml"


def _nvcc() -> Path | None:
    found = shutil.which("nvcc")
    if found:
        return Path(found)
    cand = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc"
    return cand if cand.is_file() else None


def _torch_python() -> Path | None:
    return torch_python()


def _cell(**kw: object) -> Cell:
    base: dict[str, object] = dict(platform="linux-x86_64", python="3.11", cuda="13.0", torch="2.14.1",
                                   package="tiny", version="0", cxx11_abi=True, cxx_std="20", archs=("9.0",),
                                   ptx=False, triton=None)
    base.update(kw)
    return Cell.model_validate(base)


@pytest.fixture(scope="module")
def real_target() -> tuple[object, object]:
    """The real toolchain (system nvcc) and build env (a torch-with-CUDA interpreter)."""
    if _nvcc() is None:
        pytest.skip("no nvcc: install a CUDA toolkit or put nvcc on PATH")
    from buildtool import host, toolchain
    from buildtool.build.buildenv import create_build_env, env_from_python

    python = _torch_python()
    if python is not None:
        env = env_from_python(python)
    elif sys.version_info[:2] == (3, 11) and sys.platform.startswith("linux"):
        # CI: the cell's own build env (torch 2.14.1 from pip's indexes), cached and shared with test_buildenv
        env = create_build_env(_cell(), host.default_cache_dir() / "buildenvs")
    else:
        pytest.skip("no torch interpreter: set BUILDTOOL_TORCH_PYTHON to a Python with a CUDA torch")
    tc = toolchain.resolve("13.0", "linux-x86_64", "system")
    if not env.torch_cuda:
        pytest.skip(f"{python} has a CPU-only torch")
    return tc, env


@pytest.fixture(scope="module")
def cuobjdump(real_target: tuple[object, object]) -> str:
    """The toolkit's cuobjdump, else the torch env's triton copy (this machine's toolkit has none)."""
    from buildtool.verify.static import find_cuobjdump

    _, env = real_target
    in_env = sorted(Path(env.python).parent.parent.glob(  # type: ignore[attr-defined]
        "lib/python3*/site-packages/triton/backends/nvidia/bin/cuobjdump"))
    tool = find_cuobjdump() or (str(in_env[0]) if in_env else None)
    if tool is None:
        pytest.skip("no cuobjdump (CUDA toolkit bin/ or triton's copy)")
    return tool


def _list_elf(module: Path) -> tuple[list[int], list[int], str]:
    """(cubin archs, ptx archs, how): cuobjdump when available, else the pure fatbin reader."""
    from buildtool.binary.elf import read_elf_bytes
    from buildtool.binary.fatbin import FATBIN_SECTION
    from buildtool.verify.static import cuobjdump_archs, find_cuobjdump

    tool = find_cuobjdump()
    if tool:
        cubins, ptx = cuobjdump_archs(tool, module.read_bytes())
        return sorted(cubins), sorted(ptx), "cuobjdump"
    info = read_elf_bytes(module.read_bytes(), sections=(FATBIN_SECTION,))
    assert info is not None
    return list(info.cubin_archs), list(info.ptx_archs), "fatbin reader"


# ------------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_tiny_extension_end_to_end_real_nvcc(real_target: tuple[object, object], tmp_path: Path) -> None:
    tc, env = real_target
    spec = load_kernel_spec(TINY_SPEC)
    cache = tmp_path / "cache"
    result = compile_modules(CompileRequest(tree=TINY, specs=(spec,), cell=_cell(), build_dir=tmp_path / "b1",
                                log_path=tmp_path / "b1.log", cache_dir=cache, use_ccache=False, quiet=True), tc, env)
    # the .cpp binding, tiny_add.cu split in 2 parts, tiny_square.cu fanned out in 3: all compiled
    assert (result.cache_hits, result.cache_misses) == (0, 6)
    assert {t.unit for t in result.timings} == {
        "csrc/tiny.cpp", "csrc/tiny_add.part1of2.cu", "csrc/tiny_add.part2of2.cu",
        "csrc/tiny_square.part1of3.cu", "csrc/tiny_square.part2of3.cu", "csrc/tiny_square.part3of3.cu"}
    assert result.timings[0].seconds >= result.timings[-1].seconds
    (module,) = result.modules
    assert module.path.name == f"tiny_cuda{env.ext_suffix}" and module.size == module.path.stat().st_size  # type: ignore[attr-defined]
    # compressed device code (-Xfatbin=-compress-all): stored smaller than the uncompressed size recorded
    assert set(module.device_code) == {"sm_90"} == set(module.device_code_uncompressed)
    assert module.device_code["sm_90"] < module.device_code_uncompressed["sm_90"]
    cubins, ptx, how = _list_elf(module.path)
    assert cubins == [90], how
    assert ptx == [], how
    # linked, stripped, imports next to torch (it cannot run here: no GPU)
    # fanout: the dispatcher part only references the launchers (extern template), the other parts define
    # them, and together they link (an unresolved launcher would fail the import below: RTLD_NOW)
    objects = result.build_ninja.parent / "tiny_cuda" / "obj" / "csrc"
    nm = shutil.which("nm")
    if nm:
        def symbols(obj: str, flag: str) -> str:
            return subprocess.run([nm, "-C", flag, str(objects / obj)], capture_output=True, text=True).stdout
        assert "square_launch<128, float>" in symbols("tiny_square.part1of3.cu.o", "--undefined-only")
        assert "square_launch<128, float>" not in symbols("tiny_square.part1of3.cu.o", "--defined-only")
        assert "square_launch<128, float>" in symbols("tiny_square.part2of3.cu.o", "--defined-only")
        assert "square_launch<256, c10::BFloat16>" in symbols("tiny_square.part3of3.cu.o", "--defined-only")
    out = subprocess.run(
        [str(env.python), "-c", "import torch, tiny_cuda; print(tiny_cuda.scale_add.__doc__, tiny_cuda.square.__doc__)"],  # type: ignore[attr-defined]
        cwd=module.path.parent, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "alpha * x + y" in out.stdout and "x * x" in out.stdout
    file_out = subprocess.run(["file", str(module.path)], capture_output=True, text=True)
    if file_out.returncode == 0:
        assert "not stripped" not in file_out.stdout
    log = result.log_path.read_text()
    assert "nvcc" in log and "-Xfatbin=-compress-all" in log and "-lineinfo" not in log
    # CUDA 13: size-compressed fatbin (the reader above found the sm_90 entry and its uncompressed size)
    assert "-Xfatbin=-compress-mode=size" in log
    assert result.bound is not None and result.bound.cpu_seconds > 0 and result.bound.ratio
    # every TU's seconds are remembered next to the object cache and order the next cold build
    history = read_unit_history(cache)
    assert len(history) == 6 and all(v >= 0 for v in history.values())

    # The same sources from another place (as another Python version's prepared tree would be): every
    # object comes from the cache, only the link runs.
    tree2 = tmp_path / "tree2"
    shutil.copytree(TINY, tree2)
    again = compile_modules(CompileRequest(tree=tree2, specs=(spec,), cell=_cell(), build_dir=tmp_path / "b2",
                               log_path=tmp_path / "b2.log", cache_dir=cache, use_ccache=False, quiet=True), tc, env)
    assert (again.cache_hits, again.cache_misses) == (6, 0)
    assert all(t.cached for t in again.timings)
    assert again.modules[0].path.is_file()

    # An edited kernel misses only its own TUs (both split parts read the same file).
    kernel = tree2 / "csrc" / "tiny_add.cu"
    kernel.write_text(kernel.read_text().replace("kThreads = 256", "kThreads = 128"))
    third = compile_modules(CompileRequest(tree=tree2, specs=(spec,), cell=_cell(), build_dir=tmp_path / "b2",
                               log_path=tmp_path / "b3.log", cache_dir=cache, use_ccache=False, quiet=True), tc, env)
    assert (third.cache_hits, third.cache_misses) == (4, 2)


@pytest.mark.slow
def test_compile_error_is_a_build_error_with_the_compiler_message(real_target: tuple[object, object],
                                                                    tmp_path: Path) -> None:
    tc, env = real_target
    tree = tmp_path / "tree"
    shutil.copytree(TINY, tree)
    kernel = tree / "csrc" / "tiny_add.cu"
    kernel.write_text(kernel.read_text().replace("if (i < n) {", "if (i < n) { undeclared_thing();"))
    spec = load_kernel_spec(TINY_SPEC).model_copy(update={"sources": ("csrc/tiny_add.cu",), "split": ()})
    with pytest.raises(BuildError) as info:
        compile_modules(CompileRequest(tree=tree, specs=(spec,), cell=_cell(), build_dir=tmp_path / "b",
                           log_path=tmp_path / "b.log", cache_dir=tmp_path / "cache", use_ccache=False, quiet=True), tc, env)
    text = str(info.value)
    assert "tiny_add.cu" in text and "undeclared_thing" in text
    assert str(tmp_path / "b.log") in text
    assert "undeclared_thing" in (tmp_path / "b.log").read_text()


# ---------------------------------------------------------------------------------------- pure parts
def test_jobs_sized_to_cores_and_memory() -> None:
    gib = 1024**3
    assert default_jobs(1, cores=2, memory=22 * gib) == 2
    assert default_jobs(1, cores=16, memory=22 * gib) == 5  # 4 GiB per nvcc
    assert default_jobs(4, cores=16, memory=64 * gib) == 4  # --threads 4 multiplies memory
    assert default_jobs(4, cores=16, memory=3 * gib) == 1
    assert default_jobs(1, cores=8, memory=None) == 8


@dataclass
class FakeHost:
    kind: str
    path: Path
    version: str = "0"


@dataclass
class FakeToolchain:
    cuda_home: Path
    nvcc: Path
    cuda_version: str
    host: FakeHost
    env: dict[str, str] = field(default_factory=dict)
    include_dirs: tuple[Path, ...] = ()
    library_dirs: tuple[Path, ...] = ()


@dataclass
class FakeEnv:
    python: Path
    torch_version: str
    cxx11_abi: bool
    include_dirs: tuple[Path, ...]
    library_dirs: tuple[Path, ...]
    libraries: tuple[str, ...]
    ext_suffix: str
    cuda_library_include_dirs: tuple[Path, ...] = ()


def _windows_context(tmp_path: Path) -> BuildContext:
    cuda = "C:/Program Files/NVIDIA GPU Computing Toolkit/CUDA/v13.2"
    tc = FakeToolchain(Path(cuda), Path(cuda + "/bin/nvcc.exe"), "13.2.51",
                       FakeHost("msvc", Path("C:/VS/VC/Tools/MSVC/14.44.35207/bin/Hostx64/x64/cl.exe")))
    torch = Path("C:/py/Lib/site-packages/torch")
    env = FakeEnv(Path("C:/py/python.exe"), "2.13.0+cu132", False, (torch / "include",),
                  (torch / "lib", Path("C:/py/libs")), ("c10", "torch", "torch_cpu", "torch_python"),
                  ".cp312-win_amd64.pyd")
    cell = _cell(platform="windows-x86_64", python="3.12", cuda="13.2", torch="2.13.0", cxx11_abi=False,
                 archs=("8.0", "9.0", "12.0"), ptx=True)
    facts = TargetFacts.from_cell(cell, cuda="13.2", compiler="msvc", cuda_home=cuda)
    py = PythonFacts("3.12", env.ext_suffix, ("C:/py/Include",), ("C:/py/libs",))
    return BuildContext(tmp_path / "tree", tmp_path / "build", facts, tc, env,  # type: ignore[arg-type]
                           HostCompiler(str(tc.host.path), "msvc"), py, (str(torch / "include"),), None,
                           nvcc_identity="Cuda compilation tools, release 13.2, V13.2.51", host_identity="cl 14.44")


def _tiny_windows_plan(tmp_path: Path) -> tuple[BuildContext, list[PlannedModule]]:
    """The tiny fixture's sources copied into the Windows context's tree, planned (no compiler needed)."""
    ctx = _windows_context(tmp_path)
    (ctx.tree / "csrc").mkdir(parents=True)
    for name in ("tiny.cpp", "tiny_add.cu", "tiny_square.cu", "tiny.h"):
        shutil.copy(TINY / "csrc" / name, ctx.tree / "csrc" / name)
    return ctx, plan_modules(ctx, [load_kernel_spec(TINY_SPEC)])


def test_windows_link_and_compile_command_shapes_fixture(tmp_path: Path) -> None:
    ctx, modules = _tiny_windows_plan(tmp_path)
    (module,) = modules
    assert module.output.name == "tiny_cuda.cp312-win_amd64.pyd"
    assert all(u.object_path.suffix == ".obj" for u in module.units)
    link = link_argv(ctx, module)
    assert link[:3] == ["link.exe", "/nologo", "/DLL"]
    assert f"/OUT:{module.output}" in link and "/EXPORT:PyInit_tiny_cuda" in link
    assert "cudart.lib" in link and "torch_cuda.lib" in link and "c10_cuda.lib" in link
    assert "-INCLUDE:?warp_size@cuda@at@@YAHXZ" in link
    assert "/LIBPATH:C:/py/libs" in [a.replace("\\", "/") for a in link]
    assert any(a.replace("\\", "/").endswith("CUDA/v13.2/lib/x64") for a in link if a.startswith("/LIBPATH:"))
    cpp = next(u for u in module.units if u.unit.language == "cxx")
    argv = compile_argv(ctx, cpp)
    assert argv[:2] == [str(ctx.toolchain.host.path), "/nologo"]  # type: ignore[attr-defined]
    assert "/std:c++20" in argv and "/Zc:preprocessor" in argv and "/DWIN32_LEAN_AND_MEAN" in argv
    assert argv[-2] == "/c" or argv[-3] == "/c"
    assert argv[-1].startswith("/Fo") and argv[-1].endswith(".obj")
    cu = next(u for u in module.units if u.unit.language == "cuda")
    nvcc = compile_argv(ctx, cu)
    assert "-ccbin" not in nvcc  # vcvars' cl.exe on PATH is nvcc's host compiler
    assert "-Xcompiler=/Zc:preprocessor" in nvcc and "--use-local-env" in nvcc
    # cl can only strip a prefix (/d1trimfile), never rewrite it
    assert f"/d1trimfile:{ctx.tree}" in argv and f"-Xcompiler=/d1trimfile:{ctx.tree}" in nvcc
    assert not any("-ffile-prefix-map" in a for a in argv + nvcc)
    assert "-DWIN32_LEAN_AND_MEAN" in nvcc
    assert nvcc[nvcc.index("--threads") + 1] == "4"
    assert "arch=compute_120,code=compute_120" in nvcc
    for m in modules:
        m.link_command = link_argv(ctx, m)
    text = write_build_ninja(ctx, modules, launcher="sccache").read_text()
    assert 'command = cmd /s /c "type nul > $out.start && sccache $cmd /showIncludes"' in text
    assert "deps = msvc" in text
    # list2cmdline quoting: the toolkit path has spaces
    assert '"C:/Program Files/NVIDIA GPU Computing Toolkit/CUDA/v13.2/bin/nvcc.exe"' in text


def _linux_context(tmp_path: Path, site: Path, build_dir: Path) -> BuildContext:
    """A gcc context whose torch lives in ``site`` (torch_include_dir looks for torch/extension.h)."""
    (site / "torch" / "include" / "torch").mkdir(parents=True, exist_ok=True)
    (site / "torch" / "include" / "torch" / "extension.h").touch()
    tc = FakeToolchain(Path("/usr/local/cuda"), Path("/usr/local/cuda/bin/nvcc"), "13.0.88",
                       FakeHost("gcc", Path("/usr/bin/g++")))
    env = FakeEnv(site.parent / "bin" / "python", "2.14.1", True, (site / "torch" / "include",),
                  (site / "torch" / "lib",), ("c10", "torch"), ".cpython-311-x86_64-linux-gnu.so")
    facts = TargetFacts.from_cell(_cell(), cuda="13.0", compiler="gcc", cuda_home="/usr/local/cuda")
    py = PythonFacts("3.11", env.ext_suffix, ("/py/include/python3.11",))
    return BuildContext(tmp_path / "tree", build_dir, facts, tc, env,  # type: ignore[arg-type]
                        HostCompiler("/usr/bin/g++", "gcc"), py, (str(site / "torch" / "include"),), None)


def test_compiles_record_placeholders_for_tree_build_dir_and_torch_env(tmp_path: Path) -> None:
    """gcc applies the LAST matching -ffile-prefix-map: maps go shortest prefix first, so a build dir inside
    the tree is recorded as the build dir; nvcc gets them through -Xcompiler (every host pass)."""
    site = tmp_path / "env" / "lib" / "python3.11" / "site-packages"
    ctx = _linux_context(tmp_path, site, tmp_path / "tree" / "build" / "buildtool")
    assert prefix_maps(ctx) == [(str(tmp_path / "tree"), "/buildtool/tree"),
                                (str(tmp_path / "tree" / "build" / "buildtool"), "/buildtool/build"),
                                (str(site), "/buildtool/site-packages")]
    shutil.copytree(TINY, ctx.tree)
    (module,) = plan_modules(ctx, [load_kernel_spec(TINY_SPEC)])
    for unit in module.units:
        argv = compile_argv(ctx, unit)
        maps = [a.removeprefix("-Xcompiler=") for a in argv if "-ffile-prefix-map=" in a]
        assert maps == [f"-ffile-prefix-map={old}={new}" for old, new in prefix_maps(ctx)]
        assert all(a.startswith("-Xcompiler=") for a in argv if "-ffile-prefix-map=" in a) == (
            unit.unit.language == "cuda")
        assert argv.index(f"-I{site / 'torch' / 'include'}") < argv.index(next(a for a in argv if "prefix-map" in a))


def test_prefix_maps_leave_out_prefixes_a_flag_cannot_spell(tmp_path: Path) -> None:
    """nvcc splits -Xcompiler values at commas and gcc splits a map at its first "=": such a prefix stays
    absolute (the build still works; only its bytes depend on that path)."""
    site = tmp_path / "env,1" / "site-packages"
    ctx = _linux_context(tmp_path, site, tmp_path / "build=a")
    shutil.copytree(TINY, ctx.tree)
    (module,) = plan_modules(ctx, [load_kernel_spec(TINY_SPEC)])
    cu = next(u for u in module.units if u.unit.language == "cuda")
    cpp = next(u for u in module.units if u.unit.language == "cxx")
    assert [a for a in compile_argv(ctx, cu) if "prefix-map" in a] == [
        f"-Xcompiler=-ffile-prefix-map={ctx.tree}={PREFIX_PLACEHOLDERS['tree']}"]
    assert [a for a in compile_argv(ctx, cpp) if "prefix-map" in a] == [
        f"-ffile-prefix-map={ctx.tree}={PREFIX_PLACEHOLDERS['tree']}",
        f"-ffile-prefix-map={site}={PREFIX_PLACEHOLDERS['torch_site']}"]


def test_cache_key_ignores_python_for_cuda_units_and_not_for_the_binding(tmp_path: Path) -> None:
    """CUDA objects are shared across Python versions of a cell; the .cpp binding is per Python."""
    import dataclasses

    from buildtool.compile.units import resolve

    ctx = _windows_context(tmp_path)

    resolved = resolve(load_kernel_spec(TINY_SPEC), ctx.facts)
    cu = next(u for u in resolved.units if u.language == "cuda")
    cpp = next(u for u in resolved.units if u.language == "cxx")
    other = dataclasses.replace(ctx, python=PythonFacts("3.13", ".cp313-win_amd64.pyd", ("C:/py313/Include",)),
                                tree=tmp_path / "elsewhere", build_dir=tmp_path / "b313")
    newer_nvcc = dataclasses.replace(ctx, nvcc_identity="Cuda compilation tools, release 13.2, V13.2.78")

    def key(c: BuildContext, u: object, text: bytes = b"text", tree: str = "tree", torch: str = "torch",
            py: str = "py-headers") -> str:
        return cache_key(c, u, text, tree, torch, py)  # type: ignore[arg-type]

    assert key(ctx, cu, py="py311") == key(other, cu, py="py313")
    assert key(ctx, cpp, py="py311") != key(other, cpp, py="py313")
    assert key(ctx, cu) != key(ctx, cu, text=b"other text")
    assert key(ctx, cu) != key(ctx, cu, torch="torch 2.14 headers")
    assert key(ctx, cu) != key(ctx, cu, tree="an edited header")
    assert key(ctx, cu) != key(newer_nvcc, cu)
    assert key(ctx, cpp) == key(newer_nvcc, cpp)


def test_progress_heartbeat_names_running_units_with_real_ninja(tmp_path: Path) -> None:
    """A unit that runs long without finishing is named in the log while it runs (no silent hang)."""
    ninja = ninja_binary(dict(os.environ))
    (tmp_path / "build.ninja").write_text(textwrap.dedent("""\
        rule slow
          command = : > $out.start && sleep 2 && : > $out
          description = $desc
        build a.o: slow
          desc = mod: a.cu
        build b.o: slow
          desc = mod: b.cu
    """))
    log = io.StringIO()
    units = {str(tmp_path / "a.o"): "mod: a.cu", str(tmp_path / "b.o"): "mod: b.cu"}
    progress = NinjaProgress(units, log, quiet=True, heartbeat_s=0.8, poll_s=0.1)
    code = progress.run([ninja, "-C", str(tmp_path), "-j", "1"], {**os.environ, "NINJA_STATUS": STATUS_MARK + "%f/%t| "})
    assert code == 0
    text = log.getvalue()
    assert "still compiling" in text and "mod: a.cu (" in text
    assert f"{STATUS_MARK}1/2| mod: a.cu" in text and f"{STATUS_MARK}2/2| mod: b.cu" in text
    assert set(progress.finished) == set(units)


def test_read_ninja_log(tmp_path: Path) -> None:
    (tmp_path / ".ninja_log").write_text("# ninja log v5\n0\t1500\t0\tobj/a.o\tabc\n10\t30\t0\tobj/a.o\tdef\n")
    assert read_ninja_log(tmp_path) == {os.path.normpath("obj/a.o"): 0.02}


@pytest.mark.slow
def test_cold_compiles_are_byte_identical_across_build_dirs(real_target: tuple[object, object],
                                                            tmp_path: Path) -> None:
    """nvcc's intermediates are named after the source in a per-object --keep-dir (not tmpxft_<pid>), so
    two cold compiles in different build dirs give the same objects (docs/building.md)."""
    tc, env = real_target
    spec = load_kernel_spec(TINY_SPEC).model_copy(update={"sources": ("csrc/tiny_add.cu",), "split": ()})
    objects = []
    for name in ("one", "two"):
        result = compile_modules(CompileRequest(tree=TINY, specs=(spec,), cell=_cell(), build_dir=tmp_path / name,
                                    log_path=tmp_path / f"{name}.log", use_object_cache=False, use_ccache=False, quiet=True), tc, env)
        assert result.cache_misses == 1
        obj_dir = result.build_ninja.parent / "tiny_cuda" / "obj" / "csrc"
        objects.append((obj_dir / "tiny_add.cu.o").read_bytes())
        assert not list(obj_dir.glob("*.keep"))  # removed after a successful compile
    assert objects[0] == objects[1]


_WHERE_CU = textwrap.dedent("""\
    // __FILE__ three ways: the TU's own (TORCH_INTERNAL_ASSERT), a torch header's inline code (ArrayRef::slice's
    // TORCH_CHECK) and device code (assert), so the object names the tree and the torch env unless mapped.
    #include <c10/util/ArrayRef.h>
    #include <c10/util/Exception.h>
    #include <cassert>
    __global__ void twice(float *x, int n) { int i = threadIdx.x; assert(i < n); x[i] *= 2.f; }
    int64_t second(const int64_t *v, size_t n) { return c10::IntArrayRef(v, n).slice(1, 1)[0]; }
    void launch(float *x, int n) { TORCH_INTERNAL_ASSERT(n > 0, "n"); twice<<<1, 32>>>(x, n); }
""")


@pytest.mark.slow
def test_objects_are_byte_identical_across_trees_and_torch_envs_real_nvcc(real_target: tuple[object, object],
                                                                          tmp_path: Path) -> None:
    """The same TU in two trees, against the same torch headers at two paths (as an isolated `python -m build`
    env and `buildtool build`'s env are): -ffile-prefix-map through nvcc's -Xcompiler gives the same object,
    which records placeholders, not either path (docs/publishing.md)."""
    tc, env = real_target
    site = Path(str(env.site_packages))  # type: ignore[attr-defined]
    other_site = tmp_path / "isolated-env-x1" / "site-packages"
    shutil.copytree(site / "torch" / "include", other_site / "torch" / "include")
    other_env = env.model_copy(update={"include_dirs": tuple(  # type: ignore[attr-defined]
        other_site / Path(d).relative_to(site) if Path(d).is_relative_to(site) else Path(d) for d in env.include_dirs)})  # type: ignore[attr-defined]
    objects = []
    for name, target_env in (("tree-one", env), ("t2", other_env)):
        tree = tmp_path / name
        (tree / "csrc").mkdir(parents=True)
        (tree / "csrc" / "where.cu").write_text(_WHERE_CU)
        (tree / "where.yaml").write_text("module: where_cuda\ndescription: __FILE__ paths\nsources: [csrc/where.cu]\n")
        result = compile_modules(CompileRequest(tree=tree, specs=(load_kernel_spec(tree / "where.yaml"),), cell=_cell(),
                                                build_dir=tree / "build", log_path=tmp_path / f"{name}.log",
                                                use_object_cache=False, use_ccache=False, quiet=True), tc, target_env)
        (obj,) = result.build_ninja.parent.glob("*/obj/csrc/where.cu.o")
        objects.append(obj.read_bytes())
    for prefix in (str(tmp_path), str(site)):
        assert prefix.encode() not in objects[0] + objects[1]
    for recorded in (b"/buildtool/tree/csrc/where.cu", b"/buildtool/site-packages/torch/include/c10/util/ArrayRef.h"):
        assert recorded in objects[0]
    assert objects[0] == objects[1]


@pytest.mark.slow
def test_split_compile_gives_the_same_sass_for_every_kernel_real_nvcc(real_target: tuple[object, object],
                                                                       cuobjdump: str, tmp_path: Path) -> None:
    """-split-compile is a scheduling knob (not in cache keys or provenance) because each kernel's machine
    code is the same as without it. tiny_square.cu unsplit holds 6 kernels, so nvcc has partitions to make."""
    from buildtool.verify.static import sass_by_kernel

    tc, env = real_target
    spec = load_kernel_spec(TINY_SPEC).model_copy(update={"sources": ("csrc/tiny_square.cu",), "split": ()})
    sass = []
    for threads in (1, 4):
        result = compile_modules(CompileRequest(tree=TINY, specs=(spec,), cell=_cell(), build_dir=tmp_path / f"t{threads}",
                                    log_path=tmp_path / f"t{threads}.log", use_object_cache=False, use_ccache=False, split_compile=threads, quiet=True), tc, env)
        assert result.split_compile == threads
        ninja = result.build_ninja.read_text()
        assert ("-split-compile=4" in ninja) == (threads == 4)
        sass.append(sass_by_kernel(cuobjdump, result.build_ninja.parent / "tiny_cuda" / "obj" / "csrc" / "tiny_square.cu.o"))
    assert len(sass[0]) == 6
    assert sass[0] == sass[1]


def test_split_compile_pays_only_where_cores_would_idle_without_it() -> None:
    """Its ~6% extra CPU (compile_flags.yaml) buys wall time only where the TUs, started costliest first
    without it, leave cores idle. The cost lists are the TUs' seconds of measured builds."""
    from buildtool.compile.sizing import lpt_makespan, split_compile_pays
    from buildtool.spec.kernelspec import load_common_flags

    assert 0.04 <= load_common_flags().split_compile_cpu_overhead <= 0.08
    # mamba-ssm's TUs on 2 cores (docs/bench/local-2core-bound.json)
    mamba = [93, 93, 92, 72, 71, 69, 47, 47, 40, 23]
    assert lpt_makespan(mamba, 2) == 324.0  # two workers, costliest first
    assert lpt_makespan([5.0, 4.0, 3.0], 8) == 5.0 and lpt_makespan([1.0, 2.0], 1) == 3.0
    # there 10 TUs keep both cores busy, so off (measured: 4% faster)
    assert not split_compile_pays(mamba, jobs=2, cores=2)
    # the same TUs on 16 cores: 10 TUs leave 6 cores idle, so on (measured: 72-95 s against 84-89 s unsplit)
    assert split_compile_pays([80.0] * 6 + [30.0] * 3 + [20.0], jobs=16, cores=16)
    # causal-conv1d on 2 cores (4 bwd parts): off; on 16 cores (37 parts, 45 TUs): its waves leave cores idle
    assert not split_compile_pays([23.0] * 4 + [17.0, 11.0, 10.0], jobs=2, cores=2)
    assert split_compile_pays([23.0] * 37 + [17.0, 11.0, 10.0], jobs=16, cores=16)
    # one TU to rebuild: on anywhere; a memory-capped -j below the cores: the cores it leaves count
    assert split_compile_pays([40.0], jobs=2, cores=2)
    assert split_compile_pays([10.0] * 8, jobs=4, cores=8)
    assert not split_compile_pays([10.0] * 8, jobs=8, cores=8)
    assert not split_compile_pays([], jobs=2, cores=2)  # nothing to compile
    assert split_compile_pays([10.0, 10.5], jobs=2, cores=2, overhead=0.0)
    assert not split_compile_pays([10.0, 10.5], jobs=2, cores=2, overhead=0.06)


@pytest.mark.slow
def test_default_split_compile_follows_the_costs_real_nvcc(real_target: tuple[object, object], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset, -split-compile is on where the TUs' costs leave cores idle and off where they keep them busy;
    the costs here are the measured seconds in the object cache's history, the way a second build sees them."""
    from buildtool.compile import sizing

    tc, env = real_target
    monkeypatch.setattr(sizing, "_usable_cores", lambda: 2)
    spec = load_kernel_spec(TINY_SPEC).model_copy(update={"sources": ("csrc/tiny_add.cu", "csrc/tiny_square.cu"),
                                                          "split": ()})
    cache = tmp_path / "cache"

    def build(name: str, *, keep_objects: bool = False) -> tuple[int, str, str]:
        result = compile_modules(CompileRequest(tree=TINY, specs=(spec,), cell=_cell(), build_dir=tmp_path / name,
                                                log_path=tmp_path / f"{name}.log", cache_dir=cache, jobs=2,
                                                use_ccache=False, quiet=True), tc, env)
        if not keep_objects:
            shutil.rmtree(cache / "objects")  # cold again next time, with this build's times in the history
        return result.split_compile, result.build_ninja.read_text(), (tmp_path / f"{name}.log").read_text()

    history = cache / "unit-seconds.json"
    history.parent.mkdir(parents=True)
    keys = [f"{spec.name}|{u}|1" for u in ("csrc/tiny_add.cu", "csrc/tiny_square.cu")]
    history.write_text(json.dumps({keys[0]: 30.0, keys[1]: 2.0}))  # one TU far costlier: cores would idle
    threads, ninja, _ = build("uneven")
    assert threads == 2 and ninja.count("-split-compile=2") == 2
    history.write_text(json.dumps({keys[0]: 10.0, keys[1]: 10.0}))  # two even TUs on two cores: busy anyway
    threads, ninja, log = build("even", keep_objects=True)
    assert threads == 1 and "-split-compile" not in ninja
    assert "-split-compile off (the TUs keep the cores busy without it)" in log
    assert "measured cost 10 s" in log  # the decision used the history, not the size estimate
    _, _, log = build("cached")  # every object from the cache: nothing to decide, nothing claimed
    assert "0 to compile" in log and "keep the cores busy" not in log


def test_split_compile_default_is_every_core_where_nvcc_honours_it() -> None:
    from buildtool.spec.kernelspec import load_common_flags

    assert load_common_flags().split_compile_min_cuda == "13.0"  # measured: 12.4.131 ignores it, 13.0.88 splits
    assert default_split_compile("13.0.88", cores=16) == 16
    assert default_split_compile("13.2", cores=2) == 2
    assert default_split_compile("12.4.131", cores=16) == 1  # llc: Unknown command line argument '-split-compile=16'
    assert default_split_compile("11.2", cores=16) == 1
    assert default_split_compile("13.0", cores=1) == 1
    assert default_split_compile("not-a-version", cores=8) == 1
    assert honours_split_compile("13.0.88") and not honours_split_compile("12.9.86")


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.skipif(os.environ.get("BUILDTOOL_TEST_DEBIAN_TOOLKIT") != "1",
                    reason="needs Debian's CUDA 12.4 (1 GB): set BUILDTOOL_TEST_DEBIAN_TOOLKIT=1")
def test_nvcc_12_4_does_not_honour_split_compile(tmp_path: Path) -> None:
    """The measurement behind split_compile_min_cuda, with Debian's nvcc 12.4 (debian provider, cached)."""
    from buildtool.host import default_cache_dir, host_platform
    from buildtool.toolchain import debian, resolve
    from buildtool.toolchain.models import load_facts

    if not debian.is_debian_like(debian.read_os_release(), load_facts().debian):
        pytest.skip("the debian provider needs a Debian/Ubuntu host")
    tc = resolve("12.4", host_platform(), "debian", cache_dir=default_cache_dir())
    src = tmp_path / "k.cu"
    src.write_text("__global__ void twice(float* x) { x[threadIdx.x] *= 2.0f; }\n")
    proc = subprocess.run([str(tc.nvcc), "-c", str(src), "-o", str(tmp_path / "k.o"), "-arch=sm_90", "-split-compile=2"],
                          env=tc.apply(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and (tmp_path / "k.o").is_file()  # it compiles, unsplit, and says so
    assert "llc: Unknown command line argument '-split-compile=2'" in proc.stdout + proc.stderr


def test_build_ninja_starts_the_costliest_units_first(tmp_path: Path) -> None:
    ctx, modules = _tiny_windows_plan(tmp_path)
    units = [u for m in modules for u in m.units]
    estimated = unit_costs(ctx, units, {})
    # never timed: estimated from size; every CUDA TU here costs more than the start-up alone, per target
    assert all(estimated[u.label] > UNIT_COST_BASE[u.unit.language] for u in units)
    last = units[-1]
    measured = unit_costs(ctx, units, {unit_history_key(last, 4): 999.0})
    assert measured[last.label] == 999.0  # a measured time wins over the estimate (3 archs + PTX = 4 targets)
    ninja = write_build_ninja(ctx, modules, None, measured).read_text()
    edges = [line for line in ninja.splitlines() if line.startswith("build ") and ": link " not in line]
    ordered = order_by_cost(units, measured)
    expected = [u.object_path for u in ordered]
    assert last.unit.language == "cuda" and len(edges) == len(expected) == len(units)
    cuda = [u for u in ordered if u.unit.language == "cuda"]
    assert cuda[0] is last  # the costliest CUDA TU is the first CUDA edge (the host C++ TU goes before it)
    for edge, obj in zip(edges, expected, strict=True):
        assert edge.startswith(f"build {_ninja_path(obj)}: ")
    costs = [measured[u.label] for u in cuda]
    assert costs == sorted(costs, reverse=True)
    assert ninja.index(" link ") > ninja.index(_ninja_path(expected[-1]))  # links after every compile edge
    assert estimate_unit_seconds("cuda", 70 * 1024, 1) == pytest.approx(38.0)


def test_host_cxx_units_start_first_then_cuda_costliest_first(tmp_path: Path) -> None:
    """The host C++ TU never spreads over the cores and its size estimate misses torch's headers: it goes
    first even where it is estimated cheaper (measured: causal-conv1d's binding TU, started last, ran alone
    for the last 16-21 s of a 2-core build)."""
    ctx, modules = _tiny_windows_plan(tmp_path)
    units = [u for m in modules for u in m.units]
    cxx = next(u for u in units if u.unit.language == "cxx")
    costs = {u.label: (1.0 if u is cxx else 50.0 + i) for i, u in enumerate(units)}
    ordered = order_by_cost(units, costs)
    assert ordered[0] is cxx
    assert [costs[u.label] for u in ordered[1:]] == sorted((costs[u.label] for u in ordered[1:]), reverse=True)
    ninja = write_build_ninja(ctx, modules, None, costs).read_text()
    first_edge = next(line for line in ninja.splitlines() if line.startswith("build "))
    assert first_edge.startswith(f"build {_ninja_path(cxx.object_path)}: ")


def test_priorities_nice_cheaper_units_in_proportion_and_only_on_posix(tmp_path: Path) -> None:
    assert nice_levels({"a": 40.0, "b": 20.0, "c": 4.0, "d": 0.001}) == {"a": 0, "b": 3, "c": 10, "d": 19}
    ctx, modules = _tiny_windows_plan(tmp_path)
    units = [u for m in modules for u in m.units]
    nice = nice_levels(unit_costs(ctx, units, {}))
    assert "nice -n" not in write_build_ninja(ctx, modules, None, None, nice).read_text()  # Windows: no nice
    posix = dataclasses.replace(ctx, facts=ctx.facts.model_copy(update={"platform": "linux-x86_64"}))
    text = write_build_ninja(posix, modules, None, None, nice).read_text()
    assert "nice -n $nice " in text and text.count("  nice = ") == len(units)
    plain = write_build_ninja(posix, modules, None, None, None).read_text()
    assert "nice -n" not in plain and "  nice = " not in plain


def test_unit_history_survives_a_broken_file(tmp_path: Path) -> None:
    (tmp_path / UNIT_SECONDS_FILE).write_text("{not json")
    assert read_unit_history(tmp_path) == {}
    write_unit_history(tmp_path, {"spec|a.cu|1": 12.345})
    write_unit_history(tmp_path, {"spec|b.cu|1": 3.0})
    assert read_unit_history(tmp_path) == {"spec|a.cu|1": 12.35, "spec|b.cu|1": 3.0}
    assert read_unit_history(None) == {}


def test_split_compile_leaves_cache_keys_alone_and_only_touches_nvcc_commands(tmp_path: Path) -> None:
    ctx = dataclasses.replace(_windows_context(tmp_path), tree=TINY)
    spec = load_kernel_spec(TINY_SPEC)
    planned = plan_modules(ctx, [spec])
    split_ctx = dataclasses.replace(ctx, split_compile=8)
    again = plan_modules(split_ctx, [spec])
    assert [u.cache_key for m in planned for u in m.units] == [u.cache_key for m in again for u in m.units]
    for unit in again[0].units:
        argv = compile_argv(split_ctx, unit)
        assert ("-split-compile=8" in argv) == (unit.unit.language == "cuda")
    assert not any("-split-compile" in a for u in planned[0].units for a in compile_argv(ctx, u))


def test_split_compile_memory_lowers_the_default_job_count() -> None:
    gib = GIB
    assert default_jobs(1, cores=16, memory=40 * gib) == 10
    assert default_jobs(1, cores=16, memory=40 * gib, split_compile=16) == 7


@pytest.mark.slow
def test_sass_compare_tells_identical_kernels_from_different_ones_real_nvcc(real_target: tuple[object, object],
                                                                            cuobjdump: str, tmp_path: Path) -> None:
    """benchmarks/sass_compare.py on wheels holding the tiny module: built twice (once split, once whole
    with -split-compile) the kernels are the same; built at -O1 they are not."""
    import zipfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from sass_compare import compare

    tc, env = real_target
    full = load_kernel_spec(TINY_SPEC)
    spec = full.model_copy(update={"sources": ("csrc/tiny_square.cu",),
                                   "split": tuple(r for r in full.split if "csrc/tiny_square.cu" in r.source)})
    variants = {
        "split": (spec, {"split_compile": 1}),
        "whole": (spec, {"split": False, "split_compile": 4}),
        "O1": (spec.model_copy(update={"nvcc_flags": ("-O1", "-Xptxas=-O1", "-U__CUDA_NO_HALF_OPERATORS__",
                                                      "-U__CUDA_NO_HALF_CONVERSIONS__")}),
               {"split": False, "split_compile": 1}),
    }
    wheels = {}
    for name, (sp, kw) in variants.items():
        result = compile_modules(CompileRequest(tree=TINY, specs=(sp,), cell=_cell(), build_dir=tmp_path / name,
                                    log_path=tmp_path / f"{name}.log", use_object_cache=False, use_ccache=False, quiet=True, **kw), tc, env)  # type: ignore[arg-type]
        wheels[name] = tmp_path / f"tiny-{name}.whl"
        with zipfile.ZipFile(wheels[name], "w") as zf:
            zf.write(result.modules[0].path, result.modules[0].path.name)
    same = compare(wheels["split"], wheels["whole"], cuobjdump)["modules"]
    (module,) = same.values()
    assert module["identical"] == module["kernels_ours"] == 6 and not module["differing"]
    other = next(iter(compare(wheels["O1"], wheels["split"], cuobjdump)["modules"].values()))
    assert other["differing"] and other["identical"] < 6
    (per_arch,) = compare(wheels["split"], wheels["whole"], cuobjdump, archs=["sm_90"])["modules"].values()
    assert per_arch["identical"] == 6 and per_arch["per_arch"] == {
        "sm_90": {"kernels_ours": 6, "kernels_upstream": 6, "identical": 6}}
    (text,) = compare(wheels["split"], wheels["whole"], cuobjdump, method="text")["modules"].values()
    assert text["identical"] == 6 and text["code_bytes"] > 0 and text["per_arch"]["sm_90"]["identical"] == 6
    (text_o1,) = compare(wheels["O1"], wheels["split"], cuobjdump, method="text")["modules"].values()
    assert text_o1["differing"] and text_o1["identical"] < 6


# ------------------------------------------------------------------------------------------- jobserver
def test_jobserver_plan_needs_every_client_and_more_than_one_worker_per_nvcc() -> None:
    from buildtool.compile.jobserver import plan_jobserver

    on = dict(wanted=True, windows=False, cuda_version="13.0.88", ninja_version=(1, 13, 2), nvcc_workers=16, cores=16)
    assert plan_jobserver(**on).enabled and plan_jobserver(**on).slots == 16  # type: ignore[arg-type]
    for change, why in (({"wanted": False}, "opt in with --jobserver"), ({"windows": True}, "POSIX only"),
                        ({"nvcc_workers": 1}, "one worker"), ({"cuda_version": "12.9.86"}, "no --jobserver"),
                        ({"cuda_version": "not-a-version"}, "no --jobserver"),
                        ({"ninja_version": (1, 11, 1)}, "ninja 1.11.1 does not join"),
                        ({"ninja_version": None}, "of unknown version")):
        plan = plan_jobserver(**{**on, **change})  # type: ignore[arg-type]
        assert not plan.enabled and plan.slots == 0 and why in plan.reason, (change, plan)


def test_jobserver_fifo_holds_one_token_less_than_its_slots_and_goes_away(tmp_path: Path) -> None:
    from buildtool.compile.jobserver import jobserver

    with jobserver(4) as pool:
        assert pool.fifo.exists() and pool.slots == 4
        env = pool.environ({"MAKEFLAGS": "-j99 --jobserver-auth=fifo:/elsewhere", "PATH": "/bin"})
        assert env["MAKEFLAGS"] == f" -j4 --jobserver-auth=fifo:{pool.fifo}" and env["PATH"] == "/bin"
        fd = os.open(pool.fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            assert os.read(fd, 16) == b"+++"  # the fourth slot is the top process's own
        finally:
            os.close(fd)
    assert not pool.fifo.parent.exists()
    with pytest.raises(ValueError, match="at least 1 slot"), jobserver(0):
        pass


def _concurrency(events: list[tuple[float, int]]) -> int:
    running = peak = 0
    for _, step in sorted(events):
        running += step
        peak = max(peak, running)
    return peak


def test_real_ninja_runs_no_more_edges_than_the_jobserver_has_slots(tmp_path: Path) -> None:
    """ninja >= 1.13 (the PyPI wheel buildtool depends on) without -j takes a token per job beyond its own;
    the compile pool of build.ninja caps the jobs below the slots, as memory may require."""
    from buildtool.compile.jobserver import NINJA_JOBSERVER_MIN, jobserver
    from buildtool.compile.ninja import ninja_version

    ninja = ninja_binary(dict(os.environ))
    if (ninja_version(ninja) or ())[:2] < NINJA_JOBSERVER_MIN:
        pytest.skip(f"{ninja} is older than 1.13")
    for pool_depth, expected in ((None, 3), (2, 2)):
        work = tmp_path / f"pool{pool_depth}"
        work.mkdir()
        pool_lines = f"pool compile\n  depth = {pool_depth}\n" if pool_depth else ""
        body = "".join(f"build o{i}: s\n" + ("  pool = compile\n" if pool_depth else "") for i in range(6))
        (work / "build.ninja").write_text(
            # one write(2) per event: `>>` opens with O_APPEND, so concurrent edges never interleave a line
            # (print() under PYTHONUNBUFFERED=1, as CI sets it, writes a line in pieces)
            pool_lines + "rule s\n  command = python3 -c \"import os, time; os.write(1, f'+ {time.time()}\\n'.encode())\""
            " >> ev && sleep 0.6 && python3 -c \"import os, time; os.write(1, f'- {time.time()}\\n'.encode())\""
            " >> ev && touch $out\n" + body)
        with jobserver(3) as tokens:
            proc = subprocess.run([ninja, "-C", str(work)], env=tokens.environ(dict(os.environ)),
                                  capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        events = [(float(t), 1 if s == "+" else -1) for s, t in (ln.split() for ln in (work / "ev").read_text().splitlines())]
        assert len(events) == 12
        assert _concurrency(events) == expected, events


def test_ninja_binary_prefers_the_newer_of_path_and_the_pypi_wheel(tmp_path: Path) -> None:
    from buildtool.compile.ninja import ninja_version

    old = tmp_path / "ninja"
    old.write_text("#!/bin/sh\necho 1.11.1\n")
    old.chmod(0o755)
    assert ninja_version(str(old)) == (1, 11, 1)
    assert ninja_version(str(tmp_path / "missing")) is None
    chosen = ninja_binary({"PATH": str(tmp_path)})
    assert chosen != str(old) and (ninja_version(chosen) or ()) > (1, 11, 1)
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "ninja").write_text("#!/bin/sh\necho 99.0.0.git\n")
    (newer / "ninja").chmod(0o755)
    assert ninja_binary({"PATH": str(newer)}) == str(newer / "ninja")


def test_jobserver_flag_stays_out_of_cache_keys_and_host_commands(tmp_path: Path) -> None:
    ctx = dataclasses.replace(_windows_context(tmp_path), tree=TINY)
    spec = load_kernel_spec(TINY_SPEC)
    planned = plan_modules(ctx, [spec])
    js_ctx = dataclasses.replace(ctx, split_compile=8, jobserver=True)
    again = plan_modules(js_ctx, [spec])
    assert [u.cache_key for m in planned for u in m.units] == [u.cache_key for m in again for u in m.units]
    for unit in again[0].units:
        assert ("--jobserver" in compile_argv(js_ctx, unit)) == (unit.unit.language == "cuda")
    text = write_build_ninja(js_ctx, again, None, None, None, compile_pool=5).read_text()
    compile_edges = text.count(".o: cuda ") + text.count(".obj: cuda ") + text.count(": cxx ")
    assert "pool compile\n  depth = 5\n" in text and text.count("  pool = compile\n") == compile_edges > 0
    assert "pool compile" not in write_build_ninja(js_ctx, again, None).read_text()


@pytest.mark.slow
def test_jobserver_build_gives_the_same_objects_real_nvcc(real_target: tuple[object, object], tmp_path: Path) -> None:
    """nvcc --jobserver under buildtool's pool (the real ninja and nvcc as clients) is a scheduling knob: the
    objects are byte-identical to a build without it."""
    tc, env = real_target
    spec = load_kernel_spec(TINY_SPEC).model_copy(update={"sources": ("csrc/tiny_square.cu",), "split": ()})
    objects = []
    for on in (True, False):
        result = compile_modules(CompileRequest(tree=TINY, specs=(spec,), cell=_cell(), build_dir=tmp_path / f"js{on}",
                                                log_path=tmp_path / f"js{on}.log", use_object_cache=False,
                                                use_ccache=False, split_compile=2, jobserver=on, quiet=True), tc, env)
        log = (tmp_path / f"js{on}.log").read_text()
        ninja = result.build_ninja.read_text()
        if on:
            assert result.jobserver >= 1 and "--jobserver" in ninja and "jobserver on:" in log, log[:2000]
        else:
            assert result.jobserver == 0 and "--jobserver" not in ninja and "jobserver off (opt in with --jobserver)" in log
        objects.append((result.build_ninja.parent / "tiny_cuda" / "obj" / "csrc" / "tiny_square.cu.o").read_bytes())
    assert objects[0] == objects[1]


def test_session_per_compile_needs_the_kernels_autogroup(tmp_path: Path) -> None:
    from buildtool.compile.schedule import session_per_compile_available

    switch = tmp_path / "sched_autogroup_enabled"
    switch.write_text("0\n")
    assert session_per_compile_available(switch) is None
    assert session_per_compile_available(tmp_path / "missing") is None
    switch.write_text("1\n")
    assert session_per_compile_available(switch) == shutil.which("setsid")


@pytest.mark.skipif(not sys.platform.startswith("linux") or not shutil.which("setsid")
                    or not Path("/proc/self/autogroup").exists(), reason="Linux autogroup and setsid only")
def test_fair_share_starts_each_compile_in_its_own_autogroup_with_real_ninja(tmp_path: Path) -> None:
    """--fair-share: build.ninja prefixes every compile (not the link) with `setsid -w`, so each TU lands in its
    own scheduling group; the exit status still reaches ninja."""
    ctx = dataclasses.replace(_windows_context(tmp_path), tree=TINY)
    posix = dataclasses.replace(ctx, facts=ctx.facts.model_copy(update={"platform": "linux-x86_64"}))
    modules = plan_modules(posix, [load_kernel_spec(TINY_SPEC)])
    text = write_build_ninja(posix, modules, None, None, None, session="/usr/bin/setsid").read_text()
    assert text.count("/usr/bin/setsid -w ") == 2  # the cuda and cxx rules; links run as they are
    assert "setsid" not in write_build_ninja(ctx, modules, None, None, None, session="/usr/bin/setsid").read_text()
    setsid = shutil.which("setsid")
    (tmp_path / "build.ninja").write_text(
        f"rule s\n  command = {setsid} -w sh -c 'cat /proc/self/autogroup > $out; exit $code'\n"
        "build a: s\n  code = 0\nbuild b: s\n  code = 0\nbuild c: s\n  code = 3\n")
    proc = subprocess.run([ninja_binary(dict(os.environ)), "-C", str(tmp_path), "-k", "0", "-j", "2"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "cannot make progress" in proc.stdout  # `setsid -w` hands back c's exit 3
    groups = {(tmp_path / n).read_text().strip() for n in "ab"}
    # a process that no setsid() ever moved (a CI job under its container's init) sits in the kernel's default
    # autogroup, which /proc/<pid>/autogroup shows as an empty file; a new session always gets a named group
    assert len(groups) == 2 and all(g.startswith("/autogroup-") for g in groups), groups
    assert Path("/proc/self/autogroup").read_text().strip() not in groups


def test_split_compile_stays_off_where_it_would_change_blackwell_code(tmp_path: Path) -> None:
    """Measured: -split-compile leaves sm_75-sm_90 code unchanged and changes sm_100/110/120 code, so a build
    whose targets include Blackwell compiles unsplit, whatever --split-compile says."""
    from buildtool.compile.sizing import split_compile_keeps_code
    from buildtool.spec.kernelspec import load_common_flags

    assert load_common_flags().split_compile_below_arch == "10.0"
    assert split_compile_keeps_code(("7.5", "8.0", "8.7", "9.0"))
    assert split_compile_keeps_code(("9.0a",))
    for archs in (("9.0", "10.0"), ("12.0",), ("11.0",), ("10.0a",), ("7.5", "8.0", "9.0", "10.0", "11.0", "12.0")):
        assert not split_compile_keeps_code(archs), archs


@pytest.mark.slow
def test_a_blackwell_cell_compiles_unsplit_real_nvcc(real_target: tuple[object, object], tmp_path: Path) -> None:
    tc, env = real_target
    spec = load_kernel_spec(TINY_SPEC).model_copy(update={"sources": ("csrc/tiny_square.cu",), "split": ()})
    result = compile_modules(CompileRequest(tree=TINY, specs=(spec,), cell=_cell(archs=("9.0", "12.0")),
                                            build_dir=tmp_path / "b", log_path=tmp_path / "b.log", use_object_cache=False,
                                            use_ccache=False, split_compile=4, quiet=True), tc, env)
    assert result.split_compile == 1 and "-split-compile" not in result.build_ninja.read_text()

"""The compiler drivers (buildtool/compile/drivers.py) write the same command lines, byte for byte, as the
ones recorded in tests/golden/compile-argv.json: nvcc, g++ and its link on Linux; nvcc, cl.exe and link.exe
on Windows (an MSVC fixture: no MSVC here); full-ABI and stable-ABI links. A change to any flag, include
order or library must show up here as a golden-file diff (regenerate with UPDATE_GOLDEN=1)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest
from test_compile import TINY, TINY_SPEC, FakeEnv, FakeHost, FakeToolchain, _cell

from buildtool.compile.drivers import compile_argv, driver_for, link_argv
from buildtool.compile.plan import BuildContext, PlannedModule, plan_modules
from buildtool.compile.target import HostCompiler, PythonFacts
from buildtool.spec.kernelspec import TargetFacts, load_kernel_spec

GOLDEN = Path(__file__).resolve().parent / "golden" / "compile-argv.json"
STABLE_SPEC = TINY / "kernels" / "tiny_stable.yaml"


def _linux_context(tmp_path: Path) -> BuildContext:
    cuda = "/opt/cuda-13.0"
    torch = Path("/venv/lib/python3.11/site-packages/torch")
    (tmp_path / "torchlib").mkdir(exist_ok=True)
    tc = FakeToolchain(Path(cuda), Path(cuda + "/bin/nvcc"), "13.0.88", FakeHost("gcc", Path("/usr/bin/g++-12")),
                       include_dirs=(Path(cuda) / "include", Path(cuda) / "include" / "cccl"),
                       library_dirs=(Path(cuda) / "lib64" / "stubs",))
    env = FakeEnv(Path("/venv/bin/python"), "2.14.1", True, (torch / "include", torch / "include" / "torch" / "csrc" / "api" / "include"),
                  (torch / "lib",), ("c10", "torch", "torch_cpu", "torch_python"), ".cpython-311-x86_64-linux-gnu.so",
                  cuda_library_include_dirs=(Path("/venv/lib/python3.11/site-packages/nvidia/cu13/include"),))
    facts = TargetFacts.from_cell(_cell(archs=("8.0", "9.0"), ptx=True), cuda="13.0", compiler="gcc", cuda_home=cuda)
    py = PythonFacts("3.11", env.ext_suffix, ("/usr/include/python3.11",), ())
    return BuildContext(tmp_path / "tree", tmp_path / "build", facts, tc, env,  # type: ignore[arg-type]
                        HostCompiler("/usr/bin/g++-12", "gcc"), py, tuple(str(d) for d in env.include_dirs), None,
                        nvcc_identity="Cuda compilation tools, release 13.0, V13.0.88", host_identity="g++ 12.2.0",
                        split_compile=2)


def _windows_context(tmp_path: Path) -> BuildContext:
    from test_compile import _windows_context as windows

    return windows(tmp_path)


def _modules(ctx: BuildContext) -> list[PlannedModule]:
    (ctx.tree / "csrc").mkdir(parents=True, exist_ok=True)
    for name in ("tiny.cpp", "tiny_add.cu", "tiny_square.cu", "tiny.h"):
        shutil.copy(TINY / "csrc" / name, ctx.tree / "csrc" / name)
    full = plan_modules(ctx, [load_kernel_spec(TINY_SPEC)])
    # the same module linked as the stable track links: only the spec's libraries
    stable = [dataclasses.replace(m, resolved=m.resolved.model_copy(update={"libraries": ("torch_cpu", "torch_cuda", "c10", "cudart")}))
              for m in full]
    return full + stable


def _commands(ctx: BuildContext, tmp_path: Path) -> dict[str, list[str]]:
    modules = _modules(ctx)
    out: dict[str, list[str]] = {}
    for i, m in enumerate(modules):
        kind = "full" if i < len(modules) // 2 else "stable"
        out[f"link {kind}"] = link_argv(ctx, m)
        if kind == "full":
            for u in m.units:
                out[f"compile {u.unit.name}"] = compile_argv(ctx, u)
    root = str(tmp_path)
    return {k: [a.replace(root, "{tmp}").replace(root.replace("/", "\\"), "{tmp}") for a in v] for k, v in out.items()}


@pytest.mark.parametrize("platform", ["linux-gcc", "windows-msvc-fixture"])
def test_argv_is_byte_identical_to_the_golden_file(platform: str, tmp_path: Path) -> None:
    ctx = _linux_context(tmp_path) if platform == "linux-gcc" else _windows_context(tmp_path)
    got = _commands(ctx, tmp_path)
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
    if os.environ.get("UPDATE_GOLDEN"):
        golden[platform] = got
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    assert got == golden[platform]


def test_one_driver_per_platform(tmp_path: Path) -> None:
    linux, windows = _linux_context(tmp_path), _windows_context(tmp_path / "w")
    assert type(driver_for(linux)).__name__ == "GccDriver" and type(driver_for(windows)).__name__ == "MsvcDriver"

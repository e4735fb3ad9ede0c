"""benchmarks/upstream.py: the arch restriction applied to a temp copy of upstream's setup.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from upstream import restrict_archs

# Shaped like the Dao-lab setup.py files: flags filled in nested ifs, then copied with `+ cc_flag`.
SETUP = '''
ext_modules = []
if not SKIP:
    cc_flag = []
    cc_flag.append("-gencode")
    cc_flag.append("arch=compute_80,code=sm_80")
    if version >= 11.8:
        cc_flag.append("-gencode")
        cc_flag.append("arch=compute_90,code=sm_90")
        cc_flag.append("-gencode")
        cc_flag.append("arch=compute_100,code=sm_100")

    nvcc = ["-O3"] + cc_flag
    ext_modules.append(nvcc)
'''


def run(text: str) -> dict[str, object]:
    scope: dict[str, object] = {"SKIP": False, "version": 13.0}
    exec(compile(text, "setup.py", "exec"), scope)
    return scope


def test_restrict_keeps_only_requested_arch_before_the_list_is_copied() -> None:
    scope = run(restrict_archs(SETUP, ["9.0"]))
    assert scope["ext_modules"] == [["-O3", "-gencode", "arch=compute_90,code=sm_90"]]


def test_restrict_several_archs() -> None:
    scope = run(restrict_archs(SETUP, ["8.0", "10.0"]))
    assert scope["nvcc"] == ["-O3", "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_100,code=sm_100"]


def test_restrict_refuses_a_setup_without_cc_flag() -> None:
    with pytest.raises(ValueError, match="cc_flag"):
        restrict_archs("print('hello')\n", ["9.0"])


def test_host_cpu_accounts_busy_idle_and_stolen_core_seconds() -> None:
    """benchmarks/bench.py: what the machine itself says about a run, next to the build's own CPU-s."""
    import os

    from bench import host_cpu

    hz = os.sysconf("SC_CLK_TCK")
    before = [0, 0, 0, 0, 0, 0, 0, 0]
    after = [10 * hz, 1 * hz, 2 * hz, 5 * hz, 1 * hz, 0, 1 * hz, 3 * hz]  # user nice system idle iowait irq softirq steal
    out = host_cpu(before, after)
    assert (out["busy_s"], out["idle_s"], out["steal_s"]) == (14.0, 6.0, 3.0)
    assert "busy_s" not in host_cpu(None, after)


def test_ninja_timeline_starts_at_the_first_compile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bench

    obj = tmp_path / "build" / "cells" / "cell" / "obj"
    obj.mkdir(parents=True)
    (obj / ".ninja_log").write_text("# ninja log v6\n1500\t4000\t0\tmod/obj/b.cu.o\tx\n1000\t9000\t0\tmod/obj/a.cu.o\ty\n")
    monkeypatch.setattr(bench, "REPO", tmp_path)
    assert bench.ninja_timeline("cell") == [("a.cu.o", 0.0, 8.0), ("b.cu.o", 0.5, 3.0)]
    assert bench.ninja_timeline("missing") == []

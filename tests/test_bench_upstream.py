"""benchmarks/: upstream.py's arch restriction of a temp copy of upstream's setup.py; bench.py's machine readings
(CPU accounts, busy cores, ninja timeline, build.ninja targets); serial_part.py's -split-compile re-runs and fit."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from upstream import restrict_archs, set_cxx_standard

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


def test_upstream_cxx_standard_raised_only_where_older() -> None:
    """torch >= 2.14 refuses C++17 (patches.md MS-6): upstream's hard-coded flag follows the cell's standard."""
    setup = 'cxx = ["-O3", "-std=c++17"]\nnvcc = ["-O3", "-std=c++17", "-std=c++14x"]\nother = "-std=c++23"\n'
    text, changed = set_cxx_standard(setup, "20")
    assert changed == 2
    assert text == 'cxx = ["-O3", "-std=c++20"]\nnvcc = ["-O3", "-std=c++20", "-std=c++14x"]\nother = "-std=c++23"\n'
    assert set_cxx_standard(setup, "17") == (setup, 0)
    assert run(set_cxx_standard(SETUP, "20")[0])["nvcc"] == run(SETUP)["nvcc"]  # no flag: untouched


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


def test_busy_series_gives_busy_cores_per_interval() -> None:
    """benchmarks/bench.py: where in a build the cores sat idle, from timed /proc/stat readings."""
    from bench import busy_series

    hz = 100
    zero = [0] * 8
    # 2 s later: 300 jiffies busy (user+system+softirq) = 1.5 cores; then 1 s with 1 core busy (nice+irq)
    readings = [(10.0, zero), (12.0, [200, 0, 90, 500, 0, 0, 10, 0]), (13.0, [200, 60, 90, 600, 0, 40, 10, 0])]
    assert busy_series(readings, hz) == [(2.0, 1.5), (3.0, 1.0)]
    assert busy_series(readings[:1], hz) == []
    assert busy_series([(1.0, zero), (1.0, zero)], hz) == []  # no time passed: no sample


def test_core_sampler_reads_this_machine_while_work_runs() -> None:
    import os
    import time

    from bench import CoreSampler

    with CoreSampler(interval=0.1) as sampler:
        end = time.perf_counter() + 0.6
        while time.perf_counter() < end:  # keep one core busy
            pass
    series = sampler.series()
    assert len(series) >= 4
    assert all(0.0 <= busy <= os.cpu_count() + 0.5 for _, busy in series)
    assert max(busy for _, busy in series) >= 0.5
    assert [t for t, _ in series] == sorted(t for t, _ in series)


def test_ninja_target_finds_the_object_of_a_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bench

    obj = tmp_path / "build" / "cells" / "cell" / "obj"
    obj.mkdir(parents=True)
    (obj / "build.ninja").write_text(
        "rule cuda\n  command = nvcc $in\nbuild /b/obj/m/a$ b.cu.o: cuda /src/a b.cu\n  desc = m: a b.cu\n"
        "build /b/obj/m/c.cu.o: cuda /src/c.cu\n  desc = m: c.cu\n")
    monkeypatch.setattr(bench, "REPO", tmp_path)
    assert bench.ninja_target("cell", "m:a b.cu") == "/b/obj/m/a b.cu.o"
    assert bench.ninja_target("cell", "m:c.cu") == "/b/obj/m/c.cu.o"
    assert bench.ninja_target("cell", "m:gone.cu") is None  # another split: no such TU in this build
    assert bench.ninja_target("cell", "") is None


def test_serial_part_sets_split_compile_threads() -> None:
    """benchmarks/serial_part.py: build.ninja's rule line for a TU, re-run with another -split-compile and
    nvcc options before nvcc's -c (not after the rule's trailing `rm`)."""
    from serial_part import with_split_compile

    cmd = (": > o.start && rm -rf o.keep && mkdir -p o.keep && /cuda/bin/nvcc -ccbin=g++ -O3 -split-compile=16 "
           "-c /s/a.cu -o /o/a.o -MD -MF /o/a.o.d --keep --keep-dir o.keep && rm -rf o.keep")
    assert with_split_compile(cmd, 1) == (": > o.start && rm -rf o.keep && mkdir -p o.keep && /cuda/bin/nvcc "
                                          "-ccbin=g++ -O3 -c /s/a.cu -o /o/a.o -MD -MF /o/a.o.d --keep "
                                          "--keep-dir o.keep && rm -rf o.keep")
    timed = with_split_compile(cmd, 4, ("--time", "/t/x y.csv"))
    assert "-O3 -split-compile=4 --time '/t/x y.csv' -c /s/a.cu" in timed and timed.endswith("&& rm -rf o.keep")
    assert with_split_compile("nvcc -O3 -c a.cu -o a.o", 8) == "nvcc -O3 -split-compile=8 -c a.cu -o a.o"
    with pytest.raises(ValueError, match="no nvcc"):
        with_split_compile("g++ -shared -o m.so a.o", 2)


def test_serial_part_amdahl_fit() -> None:
    from serial_part import amdahl

    # 36 s serial + 64 s that split 16 ways = 40 s on 16 threads
    assert amdahl(100.0, 40.0, 16) == {"serial_s": 36.0, "parallel_s": 64.0, "serial_share": 0.36}
    assert amdahl(100.0, 100.0, 16)["serial_share"] == 1.0  # no gain: all serial
    assert amdahl(100.0, 5.0, 16)["serial_s"] == 0.0  # better than linear (noise): clamped at 0
    with pytest.raises(ValueError):
        amdahl(100.0, 40.0, 1)


def test_serial_part_reads_nvcc_time_phases_real_nvcc(tmp_path: Path) -> None:
    """A real `nvcc --time` CSV of a tiny TU: per-phase seconds, the device compiler's phases included."""
    import shutil
    import subprocess

    from serial_part import nvcc_phases

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("no nvcc on PATH")
    (tmp_path / "k.cu").write_text("__global__ void k(float* x) { x[threadIdx.x] *= 2.0f; }\n")
    subprocess.run([nvcc, "-arch=sm_90", "-c", "k.cu", "-o", "k.o", "--time", "t.csv"], cwd=tmp_path, check=True)
    phases = nvcc_phases(tmp_path / "t.csv")
    assert {"cicc", "ptxas", "cudafe++"} <= set(phases)
    assert all(v >= 0 for v in phases.values()) and phases["cicc"] > 0
    assert nvcc_phases(tmp_path / "missing.csv") == {}

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

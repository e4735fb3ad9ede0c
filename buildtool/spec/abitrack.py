"""The two ABI tracks a wheel can be built on, and the facts of the stable one.

*full*: the extension uses torch's whole C++ API and pybind11, so a wheel fits one torch minor and one
CPython. *stable*: the bindings are ported to the LibTorch stable ABI (``STABLE_TORCH_LIBRARY``,
``TORCH_TARGET_VERSION``) and the CPython limited API, so one wheel per OS x CUDA major serves every torch
>= the floor and every CPython >= 3.10 (DESIGN.md decision 7). The CUDA major is not abstracted by the
stable ABI (pytorch/pytorch#187320): a cu13 library needs libcudart.so.13, which only a CUDA-13 torch brings.
"""

from __future__ import annotations

from typing import Literal

from packaging.version import Version

from buildtool.versions import cuda_major

AbiTrack = Literal["full", "stable"]
TRACKS: tuple[AbiTrack, ...] = ("full", "stable")

#: Py_LIMITED_API of stable-track libraries (and the wheels' cp310-abi3 tag): CPython 3.10.
LIMITED_API_PYTHON = "3.10"
LIMITED_API_HEX = "0x030a0000"


def torch_target_version(floor: str) -> str:
    """TORCH_TARGET_VERSION for a torch floor: ``[major][minor][patch][abi tag]`` bytes, e.g. 2.10 ->
    ``0x020a000000000000`` (torch/headeronly/version.h)."""
    v = Version(floor)
    return f"0x{v.major:02x}{v.minor:02x}000000000000"


def stable_label(cuda: str) -> str:
    """The local version label of a stable-track wheel: the CUDA major and the track, no torch minor
    (``13.0`` -> ``cu13stable``)."""
    return f"cu{cuda_major(cuda)}stable"


def limited_api_python_tag() -> str:
    return "cp" + LIMITED_API_PYTHON.replace(".", "")


#: File stem of a stable-track library (``<package>/_C_stable.abi3.so``): it has no PyInit, so it is not
#: imported but loaded with ``torch.ops.load_library``; the shim modules do that.
STABLE_LIBRARY_STEM = "_C_stable"


def is_stable_library(filename: str) -> bool:
    return filename.split(".", 1)[0] == STABLE_LIBRARY_STEM

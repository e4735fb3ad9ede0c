"""Provenance files as the wheel stage writes them, for test wheels: the current typed layout
(buildtool.wheel.provenance, schema_version 2) and the untyped layout of schema 1 that wheels built
before it carry (taken from a causal-conv1d 1.7.0 wheel built here, shortened to one flag per language)."""

from __future__ import annotations

import copy
from typing import Any

from buildtool.wheel.provenance import Provenance


def legacy_provenance(archs: list[str] | tuple[str, ...] = ("9.0",), ptx: bool = False, *, cuda: str = "13.0",
                      torch: str = "2.14.1", package: str = "causal-conv1d", version: str = "1.7.0",
                      min_driver_cuda: str | None = "13.0", nvcc: str = "13.0.88") -> dict[str, Any]:
    """A schema-1 provenance (``"schema": 1``, no ``abi`` in the cell, ``build_env`` without unknowns)."""
    arch_list = ";".join(archs) + ("+PTX" if ptx and archs else "")
    py = "3.11"
    return {
        "archs": arch_list,
        "build_env": {"cxx11_abi": "True", "python_version": "3.11.7", "torch_cuda": cuda, "torch_version": f"{torch}+cu130"},
        "buildtool_version": "0.1.0",
        "cell": {
            "arch_list": arch_list, "archs": list(archs), "cuda": cuda, "cxx11_abi": "TRUE", "cxx_std": "20",
            "id": f"linux-x86_64-cp311-cu{cuda.replace('.', '')}-torch{'.'.join(torch.split('.')[:2])}-{package}-{version}",
            "package": package, "platform": "linux-x86_64", "ptx": ptx, "python": py, "tags": [], "torch": torch,
            "triton": "triton==3.8.0", "triton_package": "triton", "version": version,
        },
        "min_driver_cuda": min_driver_cuda,
        "modules": [{
            "flags": {"cuda": ["-O3", *(f"-gencode=arch=compute_{a.replace('.', '')},code=sm_{a.replace('.', '')}" for a in archs)],
                      "cxx": ["-O3"]},
            "link_flags": [], "module": "causal_conv1d_cuda", "spec": "causal_conv1d_cuda-1.5",
            "units": ["csrc/causal_conv1d.cpp", "csrc/causal_conv1d_fwd.cu"],
        }],
        "patches": [],
        "schema": 1,
        "source": {
            "content_sha256": "35" * 32, "filename": f"{package.replace('-', '_')}-{version}.tar.gz", "kind": "pypi-sdist",
            "sha256": "32" * 32, "source_date_epoch": 1787223254, "subdirectory": None,
            "url": f"https://files.pythonhosted.org/packages/{package}-{version}.tar.gz",
        },
        "toolchain": {"cuda_version": nvcc, "host_compiler": {"kind": "gcc", "version": "12.2.0"}, "provider": "system"},
    }


def current_provenance(archs: list[str] | tuple[str, ...] = ("9.0",), ptx: bool = False, **kw: Any) -> dict[str, Any]:
    """The same wheel's provenance in the current layout, as JSON data."""
    prov = Provenance.model_validate(legacy_provenance(archs, ptx, **kw))
    return prov.model_dump(mode="json")


def without(data: dict[str, Any], *path: str) -> dict[str, Any]:
    """A deep copy of ``data`` with the key at ``path`` removed (``without(p, "cell", "archs")``)."""
    out = copy.deepcopy(data)
    node = out
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return out

"""``selective_scan_cuda`` of the stable-ABI build of mamba-ssm (buildtool's shim, not upstream code).

Upstream's Python (``mamba_ssm/ops/selective_scan_interface.py``) imports the pybind11 extension
``selective_scan_cuda``. The stable-ABI wheel has no such extension: its kernels live in
``mamba_ssm/_C_stable.abi3.so`` (no pybind11, no libpython, no libtorch_python), which registers the
dispatcher ops ``selective_scan::fwd`` and ``selective_scan::bwd``. This module loads that library and
exposes ``fwd`` and ``bwd`` with the same arguments and return values as upstream's extension (lists with
None where upstream returns an undefined tensor), and registers fake kernels so ``torch.compile`` traces.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

_PACKAGE = "mamba_ssm"
_LIBRARY_STEM = "_C_stable"
_CHUNK = 2048  # the kernels scan 2048 positions per chunk (selective_scan.cpp: n_chunks)


def _library_path() -> str:
    """The compiled op library next to the package (found without importing it: the package imports us)."""
    spec = importlib.util.find_spec(_PACKAGE)
    dirs = list(spec.submodule_search_locations or []) if spec is not None else []
    for d in dirs:
        for suffix in (".abi3.so", ".pyd", ".so"):
            candidate = Path(d) / f"{_LIBRARY_STEM}{suffix}"
            if candidate.is_file():
                return str(candidate)
    raise ImportError(
        f"selective_scan_cuda: the stable-ABI op library {_LIBRARY_STEM}.abi3.so was not found in "
        f"{dirs or 'the ' + _PACKAGE + ' package (not installed)'}; reinstall the mamba-ssm wheel"
    )


torch.ops.load_library(_library_path())
_ops = torch.ops.selective_scan


def fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """[out, x] or [out, x, out_z] (with z), as upstream's extension."""
    return list(_ops.fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus))


def bwd(u, delta, A, B, C, D, z, delta_bias, dout, x, out, dz, delta_softplus, recompute_out_z):
    """[du, ddelta, dA, dB, dC, dD, ddelta_bias] + [dz] with z + [out_z] with recompute_out_z, as upstream's
    extension: dD / ddelta_bias / out_z are None where upstream returns an undefined tensor, and dz is the
    caller's tensor when one was passed (the op returns only the tensors it allocated)."""
    res = iter(_ops.bwd(u, delta, A, B, C, D, z, delta_bias, dout, x, out, dz, delta_softplus, recompute_out_z))
    grads = [next(res) for _ in range(5)]
    grads.append(next(res) if D is not None else None)
    grads.append(next(res) if delta_bias is not None else None)
    if z is not None:
        grads.append(dz if dz is not None else next(res))
    if recompute_out_z:
        grads.append(next(res) if z is not None else None)
    return grads


@torch.library.register_fake("selective_scan::fwd")
def _fwd_fake(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    batch, dim, seqlen = u.shape
    n_chunks = (seqlen + _CHUNK - 1) // _CHUNK
    out = [torch.empty_like(delta), u.new_empty((batch, dim, n_chunks, A.shape[1] * 2), dtype=A.dtype)]
    if z is not None:
        out.append(torch.empty_like(z))
    return out


@torch.library.register_fake("selective_scan::bwd")
def _bwd_fake(u, delta, A, B, C, D, z, delta_bias, dout, x, out, dz, delta_softplus, recompute_out_z):
    grads = [torch.empty_like(u), torch.empty_like(delta), torch.empty_like(A), torch.empty_like(B),
             torch.empty_like(C)]
    if D is not None:
        grads.append(torch.empty_like(D))
    if delta_bias is not None:
        grads.append(torch.empty_like(delta_bias))
    if z is not None and dz is None:
        grads.append(torch.empty_like(z))
    if z is not None and recompute_out_z:
        grads.append(torch.empty_like(out))
    return grads

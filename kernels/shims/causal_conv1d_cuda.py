"""``causal_conv1d_cuda`` of the stable-ABI build of causal-conv1d (buildtool's shim, not upstream code).

Upstream's Python (``causal_conv1d/cpp_functions.py``) imports the pybind11 extension ``causal_conv1d_cuda``.
The stable-ABI wheel has no such extension: its kernels live in ``causal_conv1d/_C_stable.abi3.so`` (no
pybind11, no libpython, no libtorch_python), which registers dispatcher ops in the ``causal_conv1d``
namespace. This module loads that library and exposes upstream's three functions with the same arguments
and return values, forwarding to ``torch.ops.causal_conv1d.*``, and registers fake kernels so
``torch.compile`` traces through them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

_PACKAGE = "causal_conv1d"
_LIBRARY_STEM = "_C_stable"


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
        f"causal_conv1d_cuda: the stable-ABI op library {_LIBRARY_STEM}.abi3.so was not found in "
        f"{dirs or 'the ' + _PACKAGE + ' package (not installed)'}; reinstall the causal-conv1d wheel"
    )


torch.ops.load_library(_library_path())
_ops = torch.ops.causal_conv1d


def causal_conv1d_fwd(x, weight, bias, seq_idx, initial_states, out, final_states_out, silu_activation):
    """Writes ``out`` (and ``final_states_out`` if given); returns None, as upstream's extension."""
    _ops.causal_conv1d_fwd(x, weight, bias, seq_idx, initial_states, out, final_states_out, silu_activation)


def causal_conv1d_bwd(x, weight, bias, dout, seq_idx, initial_states, dfinal_states, dx, dweight, dbias,
                      dinitial_states, silu_activation):
    """Writes dx, dweight (accumulated), dbias, dinitial_states; returns None, as upstream's extension.

    Upstream's C++ reads torch's deterministic-algorithms flag itself; the stable ABI cannot, so it is
    passed along (the CAUSAL_CONV1D_DETERMINISTIC environment variable still takes precedence in C++)."""
    _ops.causal_conv1d_bwd(x, weight, bias, dout, seq_idx, initial_states, dfinal_states, dx, dweight, dbias,
                           dinitial_states, silu_activation, torch.are_deterministic_algorithms_enabled())


def causal_conv1d_update(x, conv_state, weight, bias, out, silu_activation, cache_seqlens, conv_state_indices):
    """Writes ``out`` and updates ``conv_state``; returns None, as upstream's extension."""
    _ops.causal_conv1d_update(x, conv_state, weight, bias, out, silu_activation, cache_seqlens, conv_state_indices)


# Fake kernels: every op only writes tensors it was given (declared Tensor(a!) in the schema) and returns
# nothing, so tracing needs no shapes from them.
@torch.library.register_fake("causal_conv1d::causal_conv1d_fwd")
def _fwd_fake(x, weight, bias, seq_idx, initial_states, out, final_states_out, silu_activation):
    return None


@torch.library.register_fake("causal_conv1d::causal_conv1d_bwd")
def _bwd_fake(x, weight, bias, dout, seq_idx, initial_states, dfinal_states, dx, dweight, dbias, dinitial_states,
              silu_activation, deterministic=False):
    return None


@torch.library.register_fake("causal_conv1d::causal_conv1d_update")
def _update_fake(x, conv_state, weight, bias, out, silu_activation, cache_seqlens, conv_state_indices):
    return None

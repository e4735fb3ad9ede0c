"""Stand-ins for the compiled extension modules, with the same Python-facing signatures as their C++
bindings but computed by the references on the CPU. Used only by fixture tests (no GPU here): they let the
worker's adapters, harness, smoke models and report run end to end. `PERTURB` makes them wrong on purpose."""

from __future__ import annotations

import torch

from buildtool.verify.references import causal_conv1d_ref, causal_conv1d_update_ref, selective_scan_ref

PERTURB = {"value": 0.0}


@torch.enable_grad()
def _scan_grads(u, delta, A, B, C, D, z, delta_bias, softplus, dout):  # type: ignore[no-untyped-def]
    leaves = [t.detach().float().requires_grad_() if t is not None else None for t in (u, delta, A, B, C, D, z, delta_bias)]
    out = selective_scan_ref(*leaves[:5], D=leaves[5], z=leaves[6], delta_bias=leaves[7], delta_softplus=softplus)
    present = [t for t in leaves if t is not None]
    grads = iter(torch.autograd.grad(out, present, dout.float()))
    full = [next(grads) if t is not None else None for t in leaves]
    return [g.to(src.dtype) if g is not None else None for g, src in zip(full, (u, delta, A, B, C, D, z, delta_bias), strict=True)]


# ---- selective_scan_cuda (mamba-ssm 1.1 - 2.3)
def mamba_fwd(u, delta, A, B, C, D, z, delta_bias, softplus):  # type: ignore[no-untyped-def]
    out = selective_scan_ref(u, delta, A, B, C, D, None, delta_bias, softplus).to(u.dtype) + PERTURB["value"]
    # the kernel's chunk states (batch, dim, n_chunks, 2 * dstate): selective_scan_fn reads the last one
    x = torch.zeros(u.shape[0], u.shape[1], max(1, -(-u.shape[-1] // 2048)), 2 * A.shape[-1])
    if z is None:
        return [out, x]
    return [out, x, (out.float() * torch.nn.functional.silu(z.float())).to(u.dtype)]


def mamba_bwd(u, delta, A, B, C, D, z, delta_bias, dout, x, out, dz, softplus, recompute_out_z):  # type: ignore[no-untyped-def]
    du, ddelta, dA, dB, dC, dD, dz_, ddb = _scan_grads(u, delta, A, B, C, D, z, delta_bias, softplus, dout)
    if dz is not None and dz_ is not None:
        dz.copy_(dz_)
        dz_ = dz
    res = [du, ddelta, dA, dB, dC, dD, ddb]
    if z is not None:
        res.append(dz_)
    if recompute_out_z:
        y = selective_scan_ref(u, delta, A, B, C, D, None, delta_bias, softplus)
        res.append((y * torch.nn.functional.silu(z.float())).to(u.dtype))
    return res


# ---- selective_scan_cuda_core / _oflex (VMamba)
def vmamba_fwd(u, delta, A, B, C, D, delta_bias, softplus, nrows, out_float=False):  # type: ignore[no-untyped-def]
    out = selective_scan_ref(u, delta, A, B, C, D, None, delta_bias, softplus) + PERTURB["value"]
    return [out if out_float else out.to(u.dtype), torch.zeros(1)]


def vmamba_bwd(u, delta, A, B, C, D, delta_bias, dout, x, softplus, nrows):  # type: ignore[no-untyped-def]
    du, ddelta, dA, dB, dC, dD, _, ddb = _scan_grads(u, delta, A, B, C, D, None, delta_bias, softplus, dout)
    return [du, ddelta, dA, dB, dC, dD, ddb]


# ---- causal_conv1d_cuda. 1.1.x: fwd(x, w, b, seq_idx, silu) -> out; bwd(x, w, b, dout, seq_idx, dx, silu)
# -> [dx, dw, db]; update(x, state, w, b, silu) -> out.  1.6 / 1.7 (the outputs are arguments):
# fwd(x, w, b, seq_idx, initial_states, out, final_states_out, silu);
# bwd(x, w, b, dout, seq_idx, initial_states, dfinal_states, dx, dweight, dbias, dinitial_states, silu);
# update(x (b, d, l), state, w, b, out, silu, cache_seqlens, conv_state_indices).
def conv_fwd(x, weight, bias, *rest):  # type: ignore[no-untyped-def]
    out = causal_conv1d_ref(x, weight, bias, bool(rest[-1])).to(x.dtype) + PERTURB["value"]
    if len(rest) == 5:
        rest[2].copy_(out)
        return None
    return out


def conv_bwd(x, weight, bias, dout, *rest):  # type: ignore[no-untyped-def]
    """Gradients in closed form: 1.6+ calls this inside a torch.library custom op, below autograd."""
    silu = bool(rest[-1])
    xf, wf, g = x.double(), weight.double(), dout.double()
    width, seqlen = wf.shape[1], xf.shape[-1]
    if silu:
        pre = causal_conv1d_ref(xf, wf, bias.double() if bias is not None else None, False)
        sig = torch.sigmoid(pre)
        g = g * sig * (1 + pre * (1 - sig))
    gpad = torch.nn.functional.pad(g, (0, width - 1))
    xpad = torch.nn.functional.pad(xf, (width - 1, 0))
    dx = sum(wf[:, k, None] * gpad[..., width - 1 - k: width - 1 - k + seqlen] for k in range(width))
    dw = torch.stack([(g * xpad[..., k: k + seqlen]).sum((0, 2)) for k in range(width)], dim=1)
    dx, dw = dx.to(x.dtype), dw.to(weight.dtype)
    db = g.sum((0, 2)).to(bias.dtype) if bias is not None else None
    if len(rest) == 8:  # 1.6+: write into dx, dweight, dbias
        _seq, _init, _dfinal, dx_out, dw_out, db_out, _dinit, _silu = rest
        dx_out.copy_(dx)
        dw_out.copy_(dw)
        if db_out is not None:
            db_out.copy_(db)
        return None
    if len(rest) == 6:  # 1.4: (seq_idx, initial_states, dfinal_states, dx, return_dinitial_states, silu)
        if rest[3] is not None:
            rest[3].copy_(dx)
            dx = rest[3]
        return [dx, dw, db, None]
    dx_out = rest[1] if len(rest) == 3 else None  # 1.1: (seq_idx, dx, silu)
    if dx_out is not None:
        dx_out.copy_(dx)
        dx = dx_out
    return [dx, dw, db]


def conv_update(x, conv_state, weight, bias, *rest):  # type: ignore[no-untyped-def]
    """1.1: (x (b, d), state, w, b, silu) -> out; 1.4: (x (b, d, 1), state, w, b, silu, cache_seqlens) -> out;
    1.6+: (x (b, d, 1), state, w, b, out, silu, cache_seqlens, conv_state_indices), writes out."""
    out_arg, silu = (rest[0], bool(rest[1])) if len(rest) == 4 else (None, bool(rest[0]))
    step = x[..., 0] if x.dim() == 3 else x
    out, state = causal_conv1d_update_ref(step, conv_state, weight, bias, silu)
    conv_state.copy_(state.to(conv_state.dtype))
    out = out.to(x.dtype) + PERTURB["value"]
    out = out[..., None] if x.dim() == 3 else out
    if out_arg is not None:
        out_arg.copy_(out)
        return None
    return out


# ---- the public causal_conv1d API (for the package stand-in)
class _ConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, silu):  # type: ignore[no-untyped-def]
        ctx.save_for_backward(x, weight, bias)
        ctx.silu = silu
        return conv_fwd(x, weight, bias, None, silu)  # the 1.1.x arity

    @staticmethod
    def backward(ctx, dout):  # type: ignore[no-untyped-def]
        x, weight, bias = ctx.saved_tensors
        dx, dw, db = conv_bwd(x, weight, bias, dout, None, None, ctx.silu)
        return dx, dw, db, None


def causal_conv1d_fn(x, weight, bias=None, seq_idx=None, activation=None):  # type: ignore[no-untyped-def]
    return _ConvFn.apply(x, weight, bias, activation in ("silu", "swish"))


def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None):  # type: ignore[no-untyped-def]
    return conv_update(x, conv_state, weight, bias, activation in ("silu", "swish"))


MODULE_SOURCES = {
    "selective_scan_cuda.py": "from verify_fake_kernels import mamba_fwd as fwd, mamba_bwd as bwd\n",
    "selective_scan_cuda_core.py": "from verify_fake_kernels import vmamba_bwd as bwd\n"
                                   "from verify_fake_kernels import vmamba_fwd as _f\n"
                                   "def fwd(*a): return _f(*a)\n",
    "selective_scan_cuda_oflex.py": "from verify_fake_kernels import vmamba_fwd as fwd, vmamba_bwd as bwd\n",
    "causal_conv1d_cuda.py": "from verify_fake_kernels import conv_fwd as causal_conv1d_fwd, conv_bwd as causal_conv1d_bwd, "
                             "conv_update as causal_conv1d_update\n",
}
FAKE_CAUSAL_CONV1D_INIT = ("__version__ = '1.1.1'\n"
                           "from verify_fake_kernels import causal_conv1d_fn, causal_conv1d_update\n")

"""Pure-PyTorch reference implementations of the kernels, written from the math (not from upstream's
reference code). They run on any device, compute in float32 (float64 when given float64, for gradient
checks) and are differentiable, so autograd gives the reference gradients.

causal depthwise conv1d (width W, per channel d):
    out[b, d, t] = act( bias[d] + Σ_{k=0}^{W-1} weight[d, k] · x[b, d, t - (W-1) + k] ),  x[..., <0] = 0
causal conv1d single-step update with a state of the last W inputs:
    state' = [state[..., 1:], x];   out = act( bias + Σ_k weight[:, k] · state'[..., k] )
selective scan (Mamba S6), real A, per channel d and state n, B/C shared by the channels of a group:
    Δ = softplus(δ + δ_bias) (or δ + δ_bias),   h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t B_t u_t,
    y_t = ⟨C_t, h_t⟩ + D u_t,   out = y ⊙ silu(z) (when z is given)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def compute_dtype(*tensors: Tensor | None) -> torch.dtype:
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def causal_conv1d_ref(x: Tensor, weight: Tensor, bias: Tensor | None = None, silu: bool = False) -> Tensor:
    """x (batch, dim, seqlen), weight (dim, width), bias (dim,) -> (batch, dim, seqlen) in float32/64."""
    dt = compute_dtype(x, weight, bias)
    x, weight = x.to(dt), weight.to(dt)
    width, seqlen = weight.shape[1], x.shape[-1]
    padded = F.pad(x, (width - 1, 0))
    out = sum(weight[:, k, None] * padded[..., k: k + seqlen] for k in range(width))
    assert isinstance(out, Tensor)
    if bias is not None:
        out = out + bias.to(dt)[:, None]
    return F.silu(out) if silu else out


def causal_conv1d_update_ref(
    x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None = None, silu: bool = False
) -> tuple[Tensor, Tensor]:
    """x (batch, dim), conv_state (batch, dim, width) -> (out (batch, dim), new state). Pure: no in-place."""
    dt = compute_dtype(x, weight, bias)
    state = torch.cat([conv_state[..., 1:].to(dt), x.to(dt)[..., None]], dim=-1)
    out = (state * weight.to(dt)).sum(-1)
    if bias is not None:
        out = out + bias.to(dt)
    return (F.silu(out) if silu else out), state


def _per_channel(BC: Tensor, batch: int, dim: int, seqlen: int, dt: torch.dtype) -> Tensor:
    """B or C as (batch, dim, dstate, seqlen): from (batch, groups, dstate, seqlen), (batch, dstate, seqlen)
    or a constant (dim, dstate)."""
    BC = BC.to(dt)
    if BC.dim() == 2:
        return BC[None, :, :, None].expand(batch, dim, BC.shape[1], seqlen)
    if BC.dim() == 3:
        BC = BC[:, None]
    groups = BC.shape[1]
    return BC.repeat_interleave(dim // groups, dim=1)


def selective_scan_ref(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
    z: Tensor | None = None, delta_bias: Tensor | None = None, delta_softplus: bool = False,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """u, delta, z (batch, dim, seqlen); A (dim, dstate) real; B, C (batch, groups, dstate, seqlen),
    (batch, dstate, seqlen) or (dim, dstate); D, delta_bias (dim,). Sequential in time."""
    dt = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    batch, dim, seqlen = u.shape
    u, delta, A = u.to(dt), delta.to(dt), A.to(dt)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dt)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    Bc, Cc = _per_channel(B, batch, dim, seqlen, dt), _per_channel(C, batch, dim, seqlen, dt)
    h = u.new_zeros(batch, dim, A.shape[1])
    ys = []
    for t in range(seqlen):
        d_t = delta[:, :, t, None]
        h = torch.exp(d_t * A) * h + d_t * Bc[..., t] * u[:, :, t, None]
        ys.append((h * Cc[..., t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D.to(dt)[:, None] * u
    if z is not None:
        y = y * F.silu(z.to(dt))
    return (y, h) if return_last_state else y

"""Smoke models, forward and backward, built from the installed packages: Mamba, Mamba2 (triton path),
a Vim bimamba-v2 block and a tiny VMamba SS2D block on the raw oflex/core scan.

Mamba and Vim are also checked against a forward pass written here from the block's definition with the
module's own parameters and the pure-PyTorch references, so a wrong fused kernel (mamba_inner_fn) cannot
hide behind "it ran". Mamba2's fused path is compared with its unfused path. SS2D runs once on the
kernel scan and once on the reference scan.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from buildtool.verify.compare import Comparison, compare
from buildtool.verify.references import causal_conv1d_ref, selective_scan_ref

ScanFn = Callable[..., Any]  # a selective scan: the output, or (output, last state) with return_last_state


@dataclass(frozen=True)
class SmokeResult:
    comparisons: tuple[Comparison, ...]
    note: str
    fused: bool = True

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.comparisons)


def _mamba_branch(m: Any, xz: Tensor, suffix: str = "") -> Tensor:
    """One direction of a Mamba block up to (not including) out_proj: conv + SiLU, projections, gated scan.
    xz: (batch, 2*d_inner, seqlen)."""
    conv, x_proj, dt_proj = getattr(m, "conv1d" + suffix), getattr(m, "x_proj" + suffix), getattr(m, "dt_proj" + suffix)
    A_log, D = getattr(m, "A_b_log" if suffix else "A_log"), getattr(m, "D" + suffix)  # Vim's names: A_b_log, D_b
    x, z = xz.chunk(2, dim=1)
    x = causal_conv1d_ref(x, conv.weight[:, 0, :], conv.bias, silu=True)
    x_dbl = F.linear(x.transpose(1, 2), x_proj.weight)  # (b, l, dt_rank + 2 n)
    dt, B, C = torch.split(x_dbl, [m.dt_rank, m.d_state, m.d_state], dim=-1)
    delta = F.linear(dt, dt_proj.weight).transpose(1, 2)
    y = selective_scan_ref(x, delta, -torch.exp(A_log.float()), B.transpose(1, 2), C.transpose(1, 2), D.float(),
                           z=z, delta_bias=dt_proj.bias.float(), delta_softplus=True)
    assert isinstance(y, Tensor)
    return y


def mamba_block_reference(m: Any, hidden: Tensor) -> Tensor:
    """Mamba (and Vim's bimamba v2) block forward from the definition, on the references."""
    xz = F.linear(hidden, m.in_proj.weight, m.in_proj.bias).transpose(1, 2)
    y = _mamba_branch(m, xz)
    if getattr(m, "bimamba_type", "none") == "v2":
        y = y + _mamba_branch(m, xz.flip(-1), "_b").flip(-1)
        if getattr(m, "if_divide_out", False):
            y = y / 2
    out = F.linear(y.transpose(1, 2), m.out_proj.weight, m.out_proj.bias)
    if getattr(m, "init_layer_scale", None) is not None:
        out = out * m.gamma
    return out


@contextmanager
def _attribute(obj: object, name: str, value: object) -> Iterator[None]:
    """``obj.name = value`` for the duration of the block (the reference run of a model), then put back."""
    before = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, before)


def _run_twice(model: nn.Module, hidden: Tensor, ref_forward: Callable[[Tensor], Tensor], name: str) -> SmokeResult:
    """Forward + backward through the model and through `ref_forward`; compare outputs and grads."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    x_k = hidden.detach().clone().requires_grad_()
    out_k = model(x_k)
    g = torch.Generator(device="cpu").manual_seed(7)
    dout = torch.randn(out_k.shape, generator=g).to(out_k.device, out_k.dtype)
    grads_k = torch.autograd.grad(out_k, [x_k, *params.values()], dout, allow_unused=True)
    x_r = hidden.detach().clone().requires_grad_()
    out_r = ref_forward(x_r)
    grads_r = torch.autograd.grad(out_r, [x_r, *params.values()], dout.to(out_r.dtype), allow_unused=True)
    comps = [compare(f"{name} out", out_k, out_r, "float32", "bwd")]
    for pname, gk, gr in zip(["input", *params], grads_k, grads_r, strict=True):
        if gr is not None:
            comps.append(compare(f"{name} d{pname}", gk, gr, "float32", "bwd"))
    return SmokeResult(tuple(comps), f"{sum(p.numel() for p in params.values())} parameters, {len(comps)} tensors compared")


def smoke_mamba(Mamba: type, device: str, **kwargs: Any) -> SmokeResult:
    """The fused path (mamba_inner_fn: causal_conv1d + selective_scan kernels) when the module found
    causal_conv1d; otherwise upstream silently falls back to nn.Conv1d — the note says which ran."""
    import sys

    torch.manual_seed(0)
    model = Mamba(d_model=64, d_state=16, d_conv=4, expand=2, **kwargs).to(device)
    hidden = torch.randn(2, 128, 64, device=device)
    name = "Vim bimamba v2" if kwargs.get("bimamba_type") == "v2" else "Mamba"
    res = _run_twice(model, hidden, lambda x: mamba_block_reference(model, x), name)
    fused = getattr(sys.modules[Mamba.__module__], "causal_conv1d_fn", None) is not None
    path = "fused path (mamba_inner_fn)" if fused else "UNFUSED path: the module could not import causal_conv1d"
    return SmokeResult(res.comparisons, f"{path}; {res.note}", fused=fused)


def vim_reference_paths(ssi: Any, device: str) -> SmokeResult:
    """Vim's own reference functions against its fused ones, forward and backward: mamba_inner_ref vs
    mamba_inner_fn and bimamba_inner_ref vs bimamba_inner_fn (``ssi``: its mamba_ssm.ops.selective_scan_interface).
    The reference path is causal_conv1d_fn + selective_scan_fn, so this also proves Vim's Python calls the paired
    causal-conv1d correctly (upstream passes "silu" positionally into 1.1's seq_idx: patch VIM-4)."""
    g = torch.Generator(device="cpu").manual_seed(3)

    def rand(*shape: int, scale: float = 1.0) -> Tensor:
        return (torch.randn(*shape, generator=g) * scale).to(device)

    d_model, d_inner, d_state, dt_rank, width, batch, seqlen = 32, 64, 16, 4, 4, 2, 64
    params = {
        "xz": rand(batch, 2 * d_inner, seqlen), "conv1d_weight": rand(d_inner, 1, width, scale=0.5),
        "conv1d_bias": rand(d_inner, scale=0.1), "x_proj_weight": rand(dt_rank + 2 * d_state, d_inner, scale=0.1),
        "delta_proj_weight": rand(d_inner, dt_rank, scale=0.3), "out_proj_weight": rand(d_model, d_inner, scale=0.1),
    }
    A = -torch.exp(rand(d_inner, d_state, scale=0.5))
    A_b = -torch.exp(rand(d_inner, d_state, scale=0.5))
    D, delta_bias = rand(d_inner), rand(d_inner, scale=0.1)
    dout = rand(batch, seqlen, d_model)
    comps: list[Comparison] = []
    for name, fused_fn, ref_fn, As in (("mamba_inner", ssi.mamba_inner_fn, ssi.mamba_inner_ref, (A,)),
                                       ("bimamba_inner", ssi.bimamba_inner_fn, ssi.bimamba_inner_ref, (A, A_b))):
        outs, grads = [], []
        for fn in (fused_fn, ref_fn):
            leaves = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
            # out_proj_bias None, as Vim's blocks build out_proj (bias=False); the fused backward of 1.1.1 returns a
            # wrongly shaped grad for a bias
            out = fn(*leaves.values(), None, *As, None, None, D, delta_bias=delta_bias, delta_softplus=True)
            outs.append(out)
            grads.append(torch.autograd.grad(out, list(leaves.values()), dout, allow_unused=True))
        comps.append(compare(f"{name}_fn vs {name}_ref out", outs[0], outs[1], "float32", "bwd"))
        for pname, gf, gr in zip(params, *grads, strict=True):
            if gr is not None:
                comps.append(compare(f"{name}_fn vs {name}_ref d{pname}", gf, gr, "float32", "bwd"))
    return SmokeResult(tuple(comps), f"{len(comps)} tensors compared (fwd + bwd, fp32)")


def smoke_mamba2(Mamba2: type, device: str) -> SmokeResult:
    """Fused (mamba_split_conv1d_scan_combined) vs unfused (causal_conv1d + mamba_chunk_scan_combined)."""
    torch.manual_seed(0)
    # nheads = 128 / 16 = 8 keeps in_proj's width (2*128 + 2*32 + 8 = 328) a multiple of 8, which the
    # channel-last causal_conv1d requires of x's strides.
    fused = Mamba2(d_model=64, d_state=32, d_conv=4, expand=2, headdim=16, chunk_size=64, use_mem_eff_path=True).to(device)
    hidden = torch.randn(2, 128, 64, device=device)

    def unfused(x: Tensor) -> Tensor:
        with _attribute(fused, "use_mem_eff_path", False):
            out: Tensor = fused(x)
        return out
    return _run_twice(fused, hidden, unfused, "Mamba2")


class TinySS2D(nn.Module):
    """A small VMamba SS2D block: in_proj -> depthwise conv2d + SiLU -> four-direction selective scan
    (row-major, column-major and both reversed, one scan with 4 groups) -> merge -> LayerNorm -> gate ->
    out_proj. Written here from the VMamba paper's description; the scan is pluggable."""

    def __init__(self, d_model: int = 32, d_state: int = 8, expand: int = 2, directions: int = 4) -> None:
        super().__init__()
        d_inner, rank = expand * d_model, math.ceil(d_model / 16)
        self.d_inner, self.d_state, self.rank, self.K = d_inner, d_state, rank, directions
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, 3, padding=1, groups=d_inner)
        self.x_proj_weight = nn.Parameter(torch.randn(directions, rank + 2 * d_state, d_inner) * d_inner ** -0.5)
        self.dt_projs_weight = nn.Parameter(torch.randn(directions, d_inner, rank) * rank ** -0.5)
        dt = torch.exp(torch.rand(directions, d_inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        self.dt_projs_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.A_logs = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(directions * d_inner, 1))
        self.Ds = nn.Parameter(torch.ones(directions * d_inner))
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        self.scan: ScanFn = selective_scan_ref

    def forward(self, x: Tensor) -> Tensor:  # (batch, H, W, C)
        b, h, w, _ = x.shape
        K, D, L = self.K, self.d_inner, h * w
        xc, z = self.in_proj(x).chunk(2, dim=-1)
        xc = F.silu(self.conv2d(xc.permute(0, 3, 1, 2).contiguous()))  # (b, D, H, W)
        row, col = xc.flatten(2), xc.transpose(2, 3).flatten(2)
        xs = torch.stack([row, col, row.flip(-1), col.flip(-1)], dim=1)  # (b, K, D, L)
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)
        dts, Bs, Cs = torch.split(x_dbl, [self.rank, self.d_state, self.d_state], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)
        y = self.scan(xs.reshape(b, K * D, L).contiguous(), dts.reshape(b, K * D, L).contiguous(),
                      -torch.exp(self.A_logs.float()), Bs.contiguous(), Cs.contiguous(), self.Ds.float(),
                      delta_bias=self.dt_projs_bias.flatten().float(), delta_softplus=True)
        y = y.float().view(b, K, D, L)
        y_row = y[:, 0] + y[:, 2].flip(-1)
        y_col = (y[:, 1] + y[:, 3].flip(-1)).view(b, D, w, h).transpose(2, 3).flatten(2)
        y = (y_row + y_col).transpose(1, 2).reshape(b, h, w, D)
        return self.out_proj(self.out_norm(y) * F.silu(z))  # type: ignore[no-any-return]


def smoke_ss2d(scan: ScanFn, device: str, name: str) -> SmokeResult:
    torch.manual_seed(0)
    block = TinySS2D().to(device)
    hidden = torch.randn(2, 8, 12, 32, device=device)  # H != W, so a row/column mix-up shows

    def with_reference(x: Tensor) -> Tensor:
        with _attribute(block, "scan", selective_scan_ref):
            out: Tensor = block(x)
        return out
    block.scan = scan
    return _run_twice(block, hidden, with_reference, name)

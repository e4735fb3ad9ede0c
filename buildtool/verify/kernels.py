"""Numerics of the compiled kernels against the references, through one device-agnostic harness.

An *implementation* is a plain callable with the reference's signature; the adapters below wrap the raw
extension modules of each package (their Python-facing signatures, read from the C++ bindings) into
such callables with autograd. Tests plug the reference itself, or a deliberately perturbed one, into the
same harness on the CPU, so the harness and the comparison are exercised without a GPU.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from buildtool.verify.compare import Comparison, compare
from buildtool.verify.references import causal_conv1d_ref, causal_conv1d_update_ref, selective_scan_ref

ConvImpl = Callable[[Tensor, Tensor, Tensor | None, bool], Tensor]
UpdateImpl = Callable[[Tensor, Tensor, Tensor, Tensor | None, bool], Tensor]  # mutates conv_state in place
ScanImpl = Callable[..., Tensor]  # (u, delta, A, B, C, D, z, delta_bias, delta_softplus) -> out

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# ---------------------------------------------------------------- adapters over the installed packages
def causal_conv1d_impl(package: ModuleType) -> ConvImpl:
    """The public `causal_conv1d_fn` (same keyword API from 1.1 to 1.7; autograd through the package)."""
    fn = package.causal_conv1d_fn

    def run(x: Tensor, weight: Tensor, bias: Tensor | None, silu: bool) -> Tensor:
        return fn(x, weight, bias, activation="silu" if silu else None)  # type: ignore[no-any-return]
    return run


def causal_conv1d_update_impl(package: ModuleType) -> UpdateImpl:
    fn = package.causal_conv1d_update

    def run(x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None, silu: bool) -> Tensor:
        return fn(x, conv_state, weight, bias, activation="silu" if silu else None)  # type: ignore[no-any-return]
    return run


class _MambaScan(torch.autograd.Function):
    """selective_scan_cuda.fwd(u, delta, A, B, C, D?, z?, delta_bias?, softplus) -> [out, x, (out_z)];
    .bwd(u, delta, A, B, C, D?, z?, delta_bias?, dout, x, out, dz?, softplus, recompute_out_z)
    -> [du, ddelta, dA, dB, dC, dD, ddelta_bias, (dz)]  (mamba-ssm 1.1 - 2.3 and Vim's fork)."""

    @staticmethod
    def forward(ctx: Any, mod: ModuleType, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                D: Tensor | None, z: Tensor | None, delta_bias: Tensor | None, softplus: bool) -> Tensor:
        out, x, *rest = mod.fwd(u, delta, A, B, C, D, z, delta_bias, softplus)
        ctx.mod, ctx.softplus, ctx.has_z = mod, softplus, z is not None
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, x, out)
        result: Tensor = rest[0] if z is not None else out
        return result

    @staticmethod
    def backward(ctx: Any, dout: Tensor) -> tuple[Tensor | None, ...]:
        u, delta, A, B, C, D, z, delta_bias, x, out = ctx.saved_tensors
        du, ddelta, dA, dB, dC, dD, ddelta_bias, *rest = ctx.mod.bwd(
            u, delta, A, B, C, D, z, delta_bias, dout.contiguous(), x, out, None, ctx.softplus, False)
        dz = rest[0] if ctx.has_z else None
        return None, du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, None


def mamba_scan_impl(selective_scan_cuda: ModuleType) -> ScanImpl:
    def run(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
            z: Tensor | None = None, delta_bias: Tensor | None = None, delta_softplus: bool = False) -> Tensor:
        out: Tensor = _MambaScan.apply(selective_scan_cuda, u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        return out
    return run


class _VMambaScan(torch.autograd.Function):
    """VMamba core: fwd(u, delta, A, B, C, D?, delta_bias?, softplus, nrows) -> [out, x];
    oflex: fwd(..., nrows, out_float); both: bwd(u, delta, A, B, C, D?, delta_bias?, dout, x, softplus, nrows)
    -> [du, ddelta, dA, dB, dC, dD, ddelta_bias]. B and C are grouped: (batch, groups, dstate, seqlen)."""

    @staticmethod
    def forward(ctx: Any, mod: ModuleType, oflex: bool, out_float: bool, u: Tensor, delta: Tensor, A: Tensor,
                B: Tensor, C: Tensor, D: Tensor | None, delta_bias: Tensor | None, softplus: bool) -> Tensor:
        if oflex:
            out, x, *_ = mod.fwd(u, delta, A, B, C, D, delta_bias, softplus, 1, out_float)
        else:
            out, x, *_ = mod.fwd(u, delta, A, B, C, D, delta_bias, softplus, 1)
        ctx.mod, ctx.softplus = mod, softplus
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, x)
        return out  # type: ignore[no-any-return]

    @staticmethod
    def backward(ctx: Any, dout: Tensor) -> tuple[Tensor | None, ...]:
        u, delta, A, B, C, D, delta_bias, x = ctx.saved_tensors
        du, ddelta, dA, dB, dC, dD, ddelta_bias, *_ = ctx.mod.bwd(
            u, delta, A, B, C, D, delta_bias, dout.contiguous(), x, ctx.softplus, 1)
        return None, None, None, du, ddelta, dA, dB, dC, dD, ddelta_bias, None


def vmamba_scan_impl(mod: ModuleType, *, oflex: bool, out_float: bool = False) -> ScanImpl:
    def run(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
            z: Tensor | None = None, delta_bias: Tensor | None = None, delta_softplus: bool = False) -> Tensor:
        if z is not None:
            raise ValueError("VMamba's scans take no z")
        out: Tensor = _VMambaScan.apply(mod, oflex, out_float, u, delta, A, B, C, D, delta_bias, delta_softplus)
        return out
    return run


# ---------------------------------------------------------------- the harness
@dataclass(frozen=True)
class CaseResult:
    case: str
    comparisons: tuple[Comparison, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.comparisons)

    @property
    def worst(self) -> Comparison:
        return max(self.comparisons, key=lambda c: c.ratio)


def _leaf(t: Tensor | None, grad: bool) -> Tensor | None:
    return None if t is None else t.detach().clone().requires_grad_(grad)


def _grads(out: Tensor, inputs: list[Tensor | None], dout: Tensor) -> list[Tensor | None]:
    present = [t for t in inputs if t is not None and t.requires_grad]
    got = iter(torch.autograd.grad(out, present, dout, allow_unused=True))
    return [next(got) if t is not None and t.requires_grad else None for t in inputs]


def _fwd_bwd(name: str, impl: Callable[..., Any], ref: Callable[..., Any], args: dict[str, Tensor | None],
             static: dict[str, Any], dtype: str, backward: bool, out_dtype: torch.dtype | None = None) -> CaseResult:
    """Run impl on `args` and the reference on float32 copies of the same values; compare the output and,
    with `backward`, the gradient of every tensor argument for one random upstream gradient."""
    names = list(args)
    k_in = {n: _leaf(t, backward) for n, t in args.items()}
    r_in = {n: _leaf(None if t is None else (t.float() if t.is_floating_point() else t), backward) for n, t in args.items()}
    k_out = impl(**k_in, **static)
    r_out = ref(**r_in, **static)
    comps = [compare(f"{name} out", k_out, r_out, dtype, "fwd")]
    if out_dtype is not None and k_out.dtype != out_dtype:
        comps.append(Comparison(f"{name} out dtype", False, float("inf"), 0.0, 0.0,
                                f"{name}: output dtype {k_out.dtype} != expected {out_dtype}"))
    if backward:
        g = torch.Generator(device="cpu").manual_seed(1234)
        # the kernel gets dout in its output dtype; the reference gets exactly those (rounded) values
        dout = torch.randn(r_out.shape, generator=g).to(device=k_out.device, dtype=k_out.dtype)
        k_g = _grads(k_out, [k_in[n] for n in names], dout)
        r_g = _grads(r_out, [r_in[n] for n in names], dout.to(r_out.dtype))
        for n, kg, rg in zip(names, k_g, r_g, strict=True):
            if rg is not None:
                comps.append(compare(f"{name} d{n}", kg, rg, dtype, "bwd"))
    return CaseResult(name, tuple(comps))


def conv_cases(device: str, dtype: str, impl: ConvImpl, *, channel_last: bool = True, seed: int = 0,
               batch: int = 2, dim: int = 64, seqlen: int = 200) -> Iterator[CaseResult]:
    """widths 2-4 x bias x SiLU x (contiguous, channel-last): forward and backward."""
    dt = DTYPES[dtype]
    layouts = ["contiguous", "channel-last"] if channel_last else ["contiguous"]
    for width, with_bias, silu, layout in itertools.product((2, 3, 4), (False, True), (False, True), layouts):
        g = torch.Generator(device="cpu").manual_seed(seed + width)
        L = seqlen if layout == "contiguous" else (seqlen // 8) * 8
        x = torch.randn(batch, dim, L, generator=g)
        if layout == "channel-last":
            x = x.transpose(1, 2).contiguous().transpose(1, 2)
        args = {"x": x.to(device=device, dtype=dt), "weight": torch.randn(dim, width, generator=g).to(device, dt),
                "bias": torch.randn(dim, generator=g).to(device, dt) if with_bias else None}
        name = f"conv1d w{width}{' bias' if with_bias else ''}{' silu' if silu else ''} {layout}"
        yield _fwd_bwd(name, lambda x, weight, bias, silu: impl(x, weight, bias, silu),
                       lambda x, weight, bias, silu: causal_conv1d_ref(x, weight, bias, silu),
                       args, {"silu": silu}, dtype, backward=True)


def update_cases(device: str, dtype: str, impl: UpdateImpl, *, seed: int = 0, batch: int = 3, dim: int = 64) -> Iterator[CaseResult]:
    """One decoding step: the output and the shifted state (the kernel updates the state in place)."""
    dt = DTYPES[dtype]
    for width, with_bias, silu in itertools.product((2, 3, 4), (False, True), (False, True)):
        g = torch.Generator(device="cpu").manual_seed(seed + 10 * width)
        x = torch.randn(batch, dim, generator=g).to(device, dt)
        state = torch.randn(batch, dim, width, generator=g).to(device, dt)
        w = torch.randn(dim, width, generator=g).to(device, dt)
        b = torch.randn(dim, generator=g).to(device, dt) if with_bias else None
        ref_out, ref_state = causal_conv1d_update_ref(x, state, w, b, silu)
        k_state = state.clone()
        k_out = impl(x, k_state, w, b, silu)
        name = f"update w{width}{' bias' if with_bias else ''}{' silu' if silu else ''}"
        yield CaseResult(name, (compare(f"{name} out", k_out, ref_out, dtype, "fwd"),
                                compare(f"{name} state", k_state, ref_state, dtype, "fwd")))


@dataclass(frozen=True)
class ScanConfig:
    z: bool
    D: bool
    delta_bias: bool
    softplus: bool
    groups: int = 1
    seqlen: int = 256

    @property
    def label(self) -> str:
        parts = [f"L{self.seqlen}", f"g{self.groups}"] + [n for n in ("z", "D", "delta_bias", "softplus") if getattr(self, n)]
        return " ".join(parts)


MAMBA_SCAN_CONFIGS = (
    ScanConfig(z=False, D=False, delta_bias=False, softplus=False),
    ScanConfig(z=True, D=True, delta_bias=True, softplus=True),
    ScanConfig(z=True, D=True, delta_bias=False, softplus=False),
    ScanConfig(z=False, D=True, delta_bias=True, softplus=True, groups=2),
)
LONG_SCAN = ScanConfig(z=True, D=True, delta_bias=True, softplus=True, seqlen=2100)  # > 2048: several chunks
VMAMBA_SCAN_CONFIGS = (
    ScanConfig(z=False, D=False, delta_bias=False, softplus=False, groups=4),
    ScanConfig(z=False, D=True, delta_bias=True, softplus=True, groups=4),
)


def scan_inputs(device: str, dtype: str, cfg: ScanConfig, *, seed: int = 0, batch: int = 2, dim: int = 64,
                dstate: int = 16) -> dict[str, Tensor | None]:
    dt = DTYPES[dtype]
    g = torch.Generator(device="cpu").manual_seed(seed)
    L = cfg.seqlen
    return {
        "u": torch.randn(batch, dim, L, generator=g).to(device, dt),
        "delta": (0.5 * torch.rand(batch, dim, L, generator=g)).to(device, dt),
        "A": (-0.5 - torch.rand(dim, dstate, generator=g)).to(device),
        "B": torch.randn(batch, cfg.groups, dstate, L, generator=g).to(device, dt),
        "C": torch.randn(batch, cfg.groups, dstate, L, generator=g).to(device, dt),
        "D": torch.randn(dim, generator=g).to(device) if cfg.D else None,
        "z": torch.randn(batch, dim, L, generator=g).to(device, dt) if cfg.z else None,
        "delta_bias": (0.1 * torch.rand(dim, generator=g)).to(device) if cfg.delta_bias else None,
    }


#: the fields of a selective_scan speed shape (verify.yaml `scan_bench`) that decide its inputs
SCAN_SHAPE_FIELDS = ("dtype", "batch", "dim", "dstate", "seqlen", "z", "delta_softplus")


def scan_speed_calls(impl: ScanImpl, device: str, *, dtype: str, batch: int, dim: int, dstate: int, seqlen: int,
                     z: bool, delta_softplus: bool) -> tuple[Callable[[], object], Callable[[], object]]:
    """A selective_scan speed shape (DESIGN.md's, verify.yaml `scan_bench`) as two calls to time: the
    forward (time it under ``torch.no_grad()``) and forward + backward."""
    cfg = ScanConfig(z=z, D=True, delta_bias=True, softplus=delta_softplus, seqlen=seqlen)
    args = scan_inputs(device, dtype, cfg, batch=batch, dim=dim, dstate=dstate)
    if not z:
        args.pop("z")
    leaves = [t.requires_grad_() for t in args.values() if t is not None]

    def fwd() -> object:
        return impl(**args, delta_softplus=delta_softplus)

    def fwd_bwd() -> object:
        out = impl(**args, delta_softplus=delta_softplus)
        return torch.autograd.grad(out, leaves, torch.ones_like(out))
    return fwd, fwd_bwd


def scan_cases(device: str, dtype: str, impl: ScanImpl, configs: tuple[ScanConfig, ...], *, prefix: str = "scan",
               seed: int = 0, out_dtype: torch.dtype | None = None) -> Iterator[CaseResult]:
    for i, cfg in enumerate(configs):
        args = scan_inputs(device, dtype, cfg, seed=seed + i)
        if not cfg.z:
            args.pop("z")
        yield _fwd_bwd(f"{prefix} {cfg.label}", impl, selective_scan_ref, args, {"delta_softplus": cfg.softplus},
                       dtype, backward=True, out_dtype=out_dtype)

"""The reference implementations against independent formulations, on the CPU: conv1d as F.conv1d and as
an explicit loop, the selective scan in closed form (O(L²) matrix of decays) and by chunks, autograd
gradients against finite differences in float64. Needs torch (CPU is enough); skipped without it."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from buildtool.verify.compare import compare  # noqa: E402
from buildtool.verify.references import (  # noqa: E402
    causal_conv1d_ref,
    causal_conv1d_update_ref,
    selective_scan_ref,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- causal conv1d
def conv_via_f_conv1d(x, weight, bias, silu):  # type: ignore[no-untyped-def]
    width = weight.shape[1]
    out = F.conv1d(x, weight[:, None, :], bias, padding=width - 1, groups=x.shape[1])[..., : x.shape[-1]]
    return F.silu(out) if silu else out


def conv_via_loop(x, weight, bias, silu):  # type: ignore[no-untyped-def]
    batch, dim, seqlen = x.shape
    width = weight.shape[1]
    out = torch.zeros(batch, dim, seqlen, dtype=torch.float64)
    for b in range(batch):
        for d in range(dim):
            for t in range(seqlen):
                acc = float(bias[d]) if bias is not None else 0.0
                for k in range(width):
                    src = t - (width - 1) + k
                    if src >= 0:
                        acc += float(weight[d, k]) * float(x[b, d, src])
                out[b, d, t] = acc
    return F.silu(out) if silu else out


@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("silu", [False, True])
def test_conv_matches_f_conv1d(width: int, with_bias: bool, silu: bool) -> None:
    g = _gen(width)
    x = torch.randn(2, 8, 33, generator=g, dtype=torch.float64)
    w = torch.randn(8, width, generator=g, dtype=torch.float64)
    b = torch.randn(8, generator=g, dtype=torch.float64) if with_bias else None
    torch.testing.assert_close(causal_conv1d_ref(x, w, b, silu), conv_via_f_conv1d(x, w, b, silu))


def test_conv_matches_explicit_loop() -> None:
    g = _gen(1)
    x = torch.randn(1, 3, 9, generator=g, dtype=torch.float64)
    w = torch.randn(3, 4, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(causal_conv1d_ref(x, w, b, True), conv_via_loop(x, w, b, True))


def test_conv_is_causal() -> None:
    """Changing x at time t never changes outputs before t."""
    g = _gen(2)
    x = torch.randn(1, 4, 20, generator=g)
    w = torch.randn(4, 4, generator=g)
    y0 = causal_conv1d_ref(x, w)
    x2 = x.clone()
    x2[..., 12:] += 1.0
    y1 = causal_conv1d_ref(x2, w)
    torch.testing.assert_close(y0[..., :12], y1[..., :12])
    assert not torch.allclose(y0[..., 12:], y1[..., 12:])


def test_conv_channel_last_input_same_result() -> None:
    g = _gen(3)
    x = torch.randn(2, 16, 24, generator=g)
    x_cl = x.transpose(1, 2).contiguous().transpose(1, 2)
    assert x_cl.stride(1) == 1
    w = torch.randn(16, 3, generator=g)
    torch.testing.assert_close(causal_conv1d_ref(x_cl, w), causal_conv1d_ref(x, w))


def test_conv_gradients_match_finite_differences() -> None:
    g = _gen(4)
    x = torch.randn(1, 3, 7, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: causal_conv1d_ref(x, w, b, True), (x, w, b))


@pytest.mark.parametrize("width", [2, 3, 4])
def test_update_steps_reproduce_the_full_conv(width: int) -> None:
    """Feeding a sequence one step at a time through the update equals the causal conv of the sequence."""
    g = _gen(5)
    x = torch.randn(2, 6, 15, generator=g, dtype=torch.float64)
    w = torch.randn(6, width, generator=g, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    state = torch.zeros(2, 6, width, dtype=torch.float64)
    outs = []
    for t in range(x.shape[-1]):
        out, state = causal_conv1d_update_ref(x[..., t], state, w, b, silu=True)
        outs.append(out)
    torch.testing.assert_close(torch.stack(outs, -1), causal_conv1d_ref(x, w, b, silu=True))
    torch.testing.assert_close(state, x[..., -width:])


# ---------------------------------------------------------------- selective scan
def scan_closed_form(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):  # type: ignore[no-untyped-def]
    """h_t = Σ_{s<=t} exp(Σ_{r=s+1..t} Δ_r A) Δ_s B_s u_s  — one matrix of decays, no recurrence."""
    dim = u.shape[1]
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    groups = B.shape[1]
    Bc = B.repeat_interleave(dim // groups, dim=1)  # b d n l
    Cc = C.repeat_interleave(dim // groups, dim=1)
    cum = torch.cumsum(delta[..., None] * A[None, :, None, :], dim=2)  # b d l n : Σ_{r<=t} Δ_r A
    decay = cum[:, :, :, None, :] - cum[:, :, None, :, :]  # b d t s n : Σ_{r=s+1..t}
    L = u.shape[-1]
    mask = torch.tril(torch.ones(L, L, dtype=torch.bool))[None, None, :, :, None]
    weights = torch.where(mask, torch.exp(torch.where(mask, decay, 0.0)), 0.0)
    inject = (delta * u)[..., None] * Bc.permute(0, 1, 3, 2)  # b d s n
    h = (weights * inject[:, :, None, :, :]).sum(3)  # b d t n
    y = (h * Cc.permute(0, 1, 3, 2)).sum(-1)
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * F.silu(z)
    return y


def scan_by_chunks(u, delta, A, B, C, chunk: int):  # type: ignore[no-untyped-def]
    """The same recurrence carried across chunks through the last state only."""
    outs = []
    h0 = None
    for s in range(0, u.shape[-1], chunk):
        sl = slice(s, s + chunk)
        y, h = selective_scan_ref(u[..., sl], delta[..., sl], A, B[..., sl], C[..., sl], return_last_state=True)
        if h0 is not None:
            # add the carried state's contribution: C_t · (exp(Σ_{r<=t} Δ_r A) h0)
            decay = torch.exp(torch.cumsum(delta[..., sl, None] * A[None, :, None, :], dim=2))  # b d l n
            Cc = C[..., sl].repeat_interleave(u.shape[1] // C.shape[1], dim=1).permute(0, 1, 3, 2)
            y = y + (decay * h0[:, :, None, :] * Cc).sum(-1)
            h = h + decay[:, :, -1] * h0
        outs.append(y)
        h0 = h
    return torch.cat(outs, -1)


def _scan_inputs(seed: int, batch=2, dim=4, dstate=3, seqlen=12, groups=1, dtype=torch.float64):  # type: ignore[no-untyped-def]
    g = _gen(seed)
    return dict(
        u=torch.randn(batch, dim, seqlen, generator=g, dtype=dtype),
        delta=torch.rand(batch, dim, seqlen, generator=g, dtype=dtype) * 0.5,
        A=-torch.rand(dim, dstate, generator=g, dtype=dtype) - 0.1,
        B=torch.randn(batch, groups, dstate, seqlen, generator=g, dtype=dtype),
        C=torch.randn(batch, groups, dstate, seqlen, generator=g, dtype=dtype),
        D=torch.randn(dim, generator=g, dtype=dtype),
        z=torch.randn(batch, dim, seqlen, generator=g, dtype=dtype),
        delta_bias=torch.randn(dim, generator=g, dtype=dtype) * 0.1,
    )


@pytest.mark.parametrize("with_z", [False, True])
@pytest.mark.parametrize("softplus", [False, True])
@pytest.mark.parametrize("groups", [1, 2])
def test_scan_matches_closed_form(with_z: bool, softplus: bool, groups: int) -> None:
    a = _scan_inputs(10 + groups, groups=groups)
    if not with_z:
        a["z"] = None
    got = selective_scan_ref(**a, delta_softplus=softplus)
    torch.testing.assert_close(got, scan_closed_form(**a, delta_softplus=softplus))


def test_scan_by_chunks_matches_one_pass() -> None:
    a = _scan_inputs(20, seqlen=17)
    whole = selective_scan_ref(a["u"], a["delta"], a["A"], a["B"], a["C"])
    torch.testing.assert_close(scan_by_chunks(a["u"], a["delta"], a["A"], a["B"], a["C"], chunk=5), whole)


def test_scan_accepts_3d_and_constant_B_C() -> None:
    a = _scan_inputs(21)
    four_d = selective_scan_ref(a["u"], a["delta"], a["A"], a["B"], a["C"])
    three_d = selective_scan_ref(a["u"], a["delta"], a["A"], a["B"][:, 0], a["C"][:, 0])
    torch.testing.assert_close(three_d, four_d)
    Bconst = torch.randn(4, 3, dtype=torch.float64)
    Bvar = Bconst[None, :, :, None].expand(2, 4, 3, 12)
    # per-channel variable B (groups == dim) equals a constant B
    torch.testing.assert_close(selective_scan_ref(a["u"], a["delta"], a["A"], Bconst, a["C"]),
                               selective_scan_ref(a["u"], a["delta"], a["A"], Bvar.contiguous(), a["C"]))


def test_scan_gradients_match_finite_differences() -> None:
    a = _scan_inputs(30, batch=1, dim=2, dstate=2, seqlen=5)
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]
    args = tuple(a[n].clone().requires_grad_() for n in names)
    assert torch.autograd.gradcheck(
        lambda *t: selective_scan_ref(*t[:5], D=t[5], z=t[6], delta_bias=t[7], delta_softplus=True), args)


# ---------------------------------------------------------------- the comparison rule
def test_compare_passes_a_correct_result_and_fails_a_perturbed_one() -> None:
    """A deliberately wrong kernel result (the reference, perturbed) fails with a clear message."""
    a = _scan_inputs(40, dtype=torch.float32)
    ref = selective_scan_ref(**a, delta_softplus=True)
    good = compare("selective_scan fwd", ref.clone(), ref, "float32")
    assert good.ok and good.max_abs == 0.0
    wrong = ref.clone()
    wrong[0, 1, 5] += 0.05 * float(ref.abs().max()) + 0.01
    bad = compare("selective_scan fwd", wrong, ref, "float32")
    assert not bad.ok
    assert bad.message.startswith("selective_scan fwd: max|Δ|") and "> allowed" in bad.message
    assert "float32 fwd" in bad.message and bad.ratio > 1


def test_compare_catches_nan_and_shape_errors() -> None:
    ref = torch.ones(2, 3)
    nan = ref.clone()
    nan[0, 0] = float("nan")
    assert "non-finite" in compare("k", nan, ref, "float16").message
    assert "shape (3, 2) != reference (2, 3)" in compare("k", ref.T, ref, "float16").message
    assert not compare("k", None, ref, "bfloat16").ok


def test_bf16_rounding_passes_but_a_sign_error_does_not() -> None:
    g = _gen(41)
    x = torch.randn(2, 16, 64, generator=g).to(torch.bfloat16)
    w = torch.randn(16, 4, generator=g).to(torch.bfloat16)
    ref = causal_conv1d_ref(x, w, silu=True)
    assert compare("conv bf16", ref.to(torch.bfloat16), ref, "bfloat16").ok
    assert not compare("conv bf16", -ref.to(torch.bfloat16), ref, "bfloat16").ok


@pytest.mark.parametrize(("z", "grads"), [(True, 8), (False, 7)])
def test_scan_speed_calls_time_the_shape_forward_and_backward(z: bool, grads: int) -> None:
    """verify's speed check and benchmarks/kernel_speed.py time the same calls (here on the reference)."""
    from buildtool.verify.kernels import scan_speed_calls

    fwd, fwd_bwd = scan_speed_calls(selective_scan_ref, "cpu", dtype="float32", batch=1, dim=8, dstate=4,
                                    seqlen=16, z=z, delta_softplus=True)
    with torch.no_grad():
        out = fwd()
    assert isinstance(out, torch.Tensor) and out.shape == (1, 8, 16) and not out.requires_grad
    result = fwd_bwd()
    assert isinstance(result, tuple) and len(result) == grads
    assert all(g is not None and torch.isfinite(g).all() for g in result)

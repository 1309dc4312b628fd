"""What applications need from the engine: centre membership, per-sample normalization, per-bin
bandwidths, the Cauchy kernel, user kernels and sliding-window local histograms.

Every option is checked against the dense definition (:func:`softhist.reference.soft_histogramdd`),
by gradcheck and gradgradcheck in float64, through every public function that takes it.
"""

import math

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import softhist
from conftest import run_measuring_peak, same_at_thread_counts, sweep_gradcheck
from softhist import _cpp_backend, _ops, _plan, _torch_backend, reference
from softhist.kernels import KERNELS

LAPLACE = softhist.Kernel(
    "laplace",
    cdf=lambda z: torch.where(z < 0, 0.5 * torch.exp(z * math.sqrt(2.0)), 1 - 0.5 * torch.exp(-z * math.sqrt(2.0))),
    pdf=lambda z: torch.exp(-z.abs() * math.sqrt(2.0)) / math.sqrt(2.0),
    support=math.inf,
)
KERNEL_CASES = [*sorted(KERNELS), LAPLACE]
SMOOTH = [k for k in KERNEL_CASES if k != "box"]  # the box's density jumps: no second derivative
TOLERANCE = {torch.float64: 1e-9, torch.float32: 2e-6}  # relative to the histogram's largest cell
NON_UNIFORM = [0.0, 0.07, 0.2, 0.26, 0.5, 0.61, 0.83, 1.0]
HAS_CPP = _cpp_backend.unavailable_reason() is None


def _id(value):
    return value.name if isinstance(value, softhist.Kernel) else str(value)


def _close(got, want, dtype):
    scale = want.abs().max().item()
    assert (got.double() - want).abs().max().item() <= TOLERANCE[dtype] * max(scale, 1e-300)


# --------------------------------------------------------------------------- the definitions, densely


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("edges", ["uniform", "nonuniform"])
@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "normalized"])
@pytest.mark.parametrize("membership", ["mass", "center"])
@pytest.mark.parametrize("kernel", KERNEL_CASES, ids=_id)
def test_every_option_equals_the_dense_definition(kernel, membership, normalize, edges, dtype):
    x64 = torch.rand(3, 61, dtype=torch.float64) * 1.3 - 0.15  # some beyond the range, some reaching none
    w64 = torch.rand(3, 61, dtype=torch.float64)
    x, w = x64.to(dtype), w64.to(dtype)
    h = 0.09
    options = dict(kernel=kernel, bandwidth=h, membership=membership, normalize_samples=normalize, dim=1)
    if edges == "uniform":
        e = torch.linspace(0, 1, 10, dtype=torch.float64)
        got = softhist.histc(x, 9, 0.0, 1.0, weight=w, **options)
    else:
        e = torch.tensor(NON_UNIFORM, dtype=torch.float64)
        got, _ = softhist.histogram(x, e.to(dtype), weight=w, **options)
    # The reference reads the samples the engine read (float32 rounding is not the engine's error).
    want = torch.stack([
        reference.soft_histogramdd(x[r].double().unsqueeze(1), [e], [h], kernel, w[r].double(), membership=membership,
                                   normalize_samples=normalize)
        for r in range(3)
    ])
    assert got.dtype == dtype
    _close(got, want, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_joint_options_per_axis_equal_the_dense_definition(dtype):
    xy = (torch.rand(2, 83, 3, dtype=torch.float64) * 1.2 - 0.1).to(dtype)
    w = torch.rand(2, 83, dtype=dtype)
    e0 = torch.tensor(NON_UNIFORM, dtype=torch.float64)
    per_bin = torch.linspace(0.05, 0.12, 5, dtype=torch.float64)
    kernels, memberships = ["cauchy", "bspline", LAPLACE], ["center", "mass", "center"]
    bandwidths = [0.08, 0.1, per_bin]
    for normalize in (False, True):
        got, _ = softhist.histogramdd(
            xy, [e0.to(dtype), 4, 5], range=[None, (0, 1), (0, 1)], weight=w, kernel=kernels,
            bandwidth=[0.08, 0.1, per_bin.to(dtype)], membership=memberships, normalize_samples=normalize,
        )
        edges = [e0, torch.linspace(0, 1, 5, dtype=torch.float64), torch.linspace(0, 1, 6, dtype=torch.float64)]
        want = torch.stack([
            reference.soft_histogramdd(xy[r].double(), edges, bandwidths, kernels, w[r].double(), membership=memberships,
                                       normalize_samples=normalize)
            for r in range(2)
        ])
        _close(got, want, dtype)


def test_hard_axes_mix_with_centre_membership_and_normalization():
    xy = torch.rand(200, 2, dtype=torch.float64)
    got, _ = softhist.histogramdd(xy, [6, 4], range=[(0, 1), (0, 1)], mode=["hard", "soft"], membership="center",
                                  bandwidth=0.1, normalize_samples=True)
    edges = [torch.linspace(0, 1, 7, dtype=torch.float64), torch.linspace(0, 1, 5, dtype=torch.float64)]
    want = reference.soft_histogramdd(xy, edges, [0.1, 0.1], "gaussian", hard=[True, False], membership="center",
                                      normalize_samples=True)
    _close(got, want, torch.float64)
    assert got.sum().item() == pytest.approx(200.0, rel=1e-12)


def test_histogram2d_and_the_layer_take_the_options():
    x, y = torch.rand(50, dtype=torch.float64), torch.rand(50, dtype=torch.float64)
    got, _, _ = softhist.histogram2d(x, y, 5, range=[(0, 1), (0, 1)], kernel="cauchy", bandwidth=0.05,
                                     membership=["center", "mass"], normalize_samples=True)
    edges = [torch.linspace(0, 1, 6, dtype=torch.float64)] * 2
    want = reference.soft_histogramdd(torch.stack([x, y], 1), edges, [0.05, 0.05], "cauchy",
                                      membership=["center", "mass"], normalize_samples=True)
    _close(got, want, torch.float64)
    layer = softhist.nn.SoftHistogram(5, (0.0, 1.0), kernel=LAPLACE, bandwidth=0.1, membership="center", normalize_samples=True)
    assert "membership='center'" in repr(layer) and "normalize_samples=True" in repr(layer)
    direct = softhist.histc(x.float(), 5, 0, 1, kernel=LAPLACE, bandwidth=0.1, membership="center", normalize_samples=True)
    torch.testing.assert_close(layer(x.float()), direct)



@pytest.mark.parametrize("kernel", ["bspline", "gaussian", "epanechnikov"])
def test_torch_engine_normalized_float32_is_within_2e_6_of_float64(kernel):
    """A sample its kernel barely brings into the range has a tiny sum to divide by: float32 CDF
    differences there would keep no digit (2e-2 off for the B-spline), so the torch engine
    computes normalized factors in float64. Values and the samples' gradient, 2-D."""
    xy = torch.rand(2000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.3
    cot = torch.randn(8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    results = []
    for dtype in (torch.float32, torch.float64):
        leaf = xy.to(dtype).requires_grad_()
        hist = softhist.histogramdd(leaf, [8, 8], range=[(0, 1), (0, 1)], kernel=kernel, bandwidth=0.06,
                                    normalize_samples=True, backend="torch")[0]
        (grad,) = torch.autograd.grad((hist.double() * cot).sum(), leaf)
        assert hist.dtype == dtype
        results.append((hist.double(), grad.double()))
    for got, want in zip(*results):
        assert (got - want).abs().max().item() <= 2e-6 * want.abs().max().item()

# --------------------------------------------------------------------------- gradients


def _grad_inputs(per_bin: bool):
    x = (torch.rand(2, 7, dtype=torch.float64) * 1.2 - 0.1).requires_grad_()
    w = torch.rand(2, 7, dtype=torch.float64, requires_grad=True)
    e = torch.tensor(NON_UNIFORM, dtype=torch.float64, requires_grad=True)
    h = (torch.linspace(0.06, 0.11, 7, dtype=torch.float64) if per_bin else torch.tensor(0.08, dtype=torch.float64)).requires_grad_()
    return x, w, h, e


OPTION_CASES = [
    ("center", False, False), ("center", False, True), ("center", True, False), ("center", True, True), ("mass", True, False),
]


@pytest.mark.parametrize("membership,normalize,per_bin", OPTION_CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("kernel", SMOOTH, ids=_id)
def test_gradcheck_and_gradgradcheck_for_every_option(kernel, membership, normalize, per_bin):
    def f(x, w, h, e):
        return softhist.histogram(x, e, weight=w, kernel=kernel, bandwidth=h, membership=membership,
                                  normalize_samples=normalize, dim=1)[0]

    inputs = _grad_inputs(per_bin)
    assert gradcheck(f, inputs, **sweep_gradcheck(kernel))
    assert gradgradcheck(f, inputs, **sweep_gradcheck(kernel))


@pytest.mark.parametrize("kernel", ["cauchy", LAPLACE], ids=_id)
def test_gradcheck_for_the_new_kernels_binned_by_mass(kernel):
    def f(x, w, h, e):
        return softhist.histogram(x, e, weight=w, kernel=kernel, bandwidth=h, dim=1)[0]

    inputs = _grad_inputs(False)
    assert gradcheck(f, inputs)
    assert gradgradcheck(f, inputs)


def test_gradcheck_joint_per_axis_options():
    xy = (torch.rand(9, 2, dtype=torch.float64) * 1.2 - 0.1).requires_grad_()
    w = torch.rand(9, dtype=torch.float64, requires_grad=True)
    e = torch.tensor(NON_UNIFORM, dtype=torch.float64, requires_grad=True)
    h = torch.linspace(0.07, 0.12, 4, dtype=torch.float64, requires_grad=True)

    def f(xy, w, e, h):
        return softhist.histogramdd(xy, [e, 4], range=[None, (0, 1)], weight=w, kernel=["cauchy", "bspline"],
                                    bandwidth=[torch.tensor(0.1, dtype=torch.float64), h], membership=["mass", "center"],
                                    normalize_samples=True)[0]

    assert gradcheck(f, (xy, w, e, h))
    assert gradgradcheck(f, (xy, w, e, h))


def test_forward_mode_and_torch_func_agree_with_reverse_mode():
    x, w, h, e = (t.detach() for t in _grad_inputs(True))

    def f(x):
        return softhist.histogram(x, e, weight=w, kernel="logistic", bandwidth=h, membership="center",
                                  normalize_samples=True, dim=1)[0]

    reverse = torch.autograd.functional.jacobian(f, x)
    torch.testing.assert_close(torch.func.jacfwd(f)(x), reverse)
    torch.testing.assert_close(torch.func.jacrev(f)(x), reverse)
    batched = torch.func.vmap(f)(x.unsqueeze(0).expand(3, -1, -1))
    torch.testing.assert_close(batched, f(x).expand(3, -1, -1))


def test_straight_through_counts_forward_and_the_options_gradient_backward():
    x = torch.rand(40, dtype=torch.float64, requires_grad=True)
    options = dict(bandwidth=0.05, membership="center", normalize_samples=True)
    hard = softhist.histc(x, 8, 0, 1, mode="straight_through", **options)
    torch.testing.assert_close(hard, softhist.histc(x.detach(), 8, 0, 1, mode="hard"))
    weights = torch.linspace(-1, 1, 8, dtype=torch.float64)
    (g_st,) = torch.autograd.grad((hard * weights).sum(), x)
    (g_soft,) = torch.autograd.grad((softhist.histc(x, 8, 0, 1, **options) * weights).sum(), x)
    torch.testing.assert_close(g_st, g_soft)


def test_the_torch_engine_equals_the_plain_torch_formula_on_every_gradient():
    x, w, h, e = _grad_inputs(True)
    out = softhist.histogram(x, e, weight=w, bandwidth=h, membership="center", normalize_samples=True, dim=1, backend="torch")[0]
    upstream = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, w, h, e), upstream)
    binning = _plan.Binning(KERNELS["gaussian"], "soft", (_plan.Axis(7, 0.11, None, "center", True),), normalize_samples=True)
    formula = _ops.differentiable_histogram(x.unsqueeze(-1), w, h, [e], binning)
    want = torch.autograd.grad(formula, (x, w, h, e), upstream)
    torch.testing.assert_close(out, formula)
    for g, ref in zip(got, want):
        torch.testing.assert_close(g, ref)


# --------------------------------------------------------------------------- normalization, per-bin bandwidths, Cauchy


def test_hl_gauss_targets_equal_the_papers_listing():
    # Farebrother et al. (ICML 2024), "Stop Regressing", listing 1: HLGaussLoss.transform_to_probs.
    lo, hi, bins, sigma = -3.0, 5.0, 51, 0.75 * 8.0 / 51
    target = torch.rand(1000, dtype=torch.float64) * (hi - lo) + lo
    support = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    cdf_evals = torch.special.erf((support - target.unsqueeze(-1)) / (math.sqrt(2.0) * sigma))
    z = cdf_evals[..., -1] - cdf_evals[..., 0]
    listing = (cdf_evals[..., 1:] - cdf_evals[..., :-1]) / z.unsqueeze(-1)
    ours = softhist.histc(target[:, None], bins, lo, hi, bandwidth=sigma, dim=1, normalize_samples=True)
    assert (ours - listing).abs().max().item() <= 2e-7


def test_a_sample_that_reaches_no_cell_contributes_nothing_with_a_finite_gradient():
    x = torch.tensor([0.5, 3.0, float("nan")], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64, requires_grad=True)
    for membership in ("mass", "center"):
        h = softhist.histc(x, 4, 0, 1, weight=w, bandwidth=0.05, membership=membership, normalize_samples=True)
        assert h.sum().item() == pytest.approx(2.0, rel=1e-14)
        gx, gw = torch.autograd.grad((h * torch.arange(4.0, dtype=torch.float64)).sum(), (x, w))
        assert torch.isfinite(gx).all() and torch.isfinite(gw).all()
        assert gx[1].item() == 0.0 and gw[1].item() == 0.0


def test_per_bin_bandwidths_need_centre_membership_and_one_value_per_bin():
    x = torch.rand(10)
    with pytest.raises(ValueError, match=r"one bandwidth per bin .* needs membership='center', got membership='mass'"):
        softhist.histc(x, 4, 0, 1, bandwidth=torch.full((4,), 0.1))
    with pytest.raises(ValueError, match=r"per-bin bandwidths must have one value per bin \(4\), got shape \(3,\)"):
        softhist.histc(x, 4, 0, 1, bandwidth=torch.full((3,), 0.1), membership="center")
    with pytest.raises(ValueError, match=r"bandwidth must be positive and finite, got -0.1"):
        softhist.histc(x, 4, 0, 1, bandwidth=torch.tensor([0.1, -0.1, 0.1, 0.1]), membership="center")
    with pytest.raises(ValueError, match=r"membership must be one of \['mass', 'center'\]"):
        softhist.histc(x, 4, 0, 1, membership="centre")
    with pytest.raises(TypeError, match=r"normalize_samples must be a bool, got 'yes'"):
        softhist.histc(x, 4, 0, 1, normalize_samples="yes")


def test_per_bin_bandwidths_equal_one_bandwidth_when_they_are_equal():
    x = torch.rand(300, dtype=torch.float64)
    one = softhist.histc(x, 6, 0, 1, bandwidth=0.07, membership="center")
    per_bin = softhist.histc(x, 6, 0, 1, bandwidth=torch.full((6,), 0.07, dtype=torch.float64), membership="center")
    torch.testing.assert_close(per_bin, one, rtol=1e-13, atol=1e-13)


def test_the_cauchy_kernel_is_never_cut():
    k = KERNELS["cauchy"]
    assert k.support == math.inf
    z = torch.linspace(-40, 40, 8001, dtype=torch.float64).requires_grad_()
    (grad,) = torch.autograd.grad(k.cdf(z).sum(), z)
    torch.testing.assert_close(grad, k.pdf(z.detach()), rtol=1e-12, atol=1e-14)
    zd = z.detach()
    slope = torch.autograd.functional.jacobian(lambda t: k.pdf(t).sum(), zd).abs().max().item()
    assert slope == pytest.approx(k.pdf_slope, rel=1e-4)
    assert k.pdf(torch.tensor(150.0, dtype=torch.float64)) / k.pdf(torch.tensor(0.0, dtype=torch.float64)) > 4e-5
    # A sample 150 scales from the range still reaches every bin, by the CDF's exact difference.
    far = torch.tensor([-150.0], dtype=torch.float64)
    h = softhist.histc(far, 4, 0, 1, kernel="cauchy", bandwidth=1.0)
    edges = torch.linspace(0, 1, 5, dtype=torch.float64)
    want = (torch.atan(edges[1:] + 150.0) - torch.atan(edges[:-1] + 150.0)) / math.pi
    torch.testing.assert_close(h, want, rtol=1e-9, atol=0)
    assert (h > 0).all()


# --------------------------------------------------------------------------- dispatch and the call description


def test_auto_picks_the_torch_engine_for_options_the_native_engines_lack():
    cpu = torch.device("cpu")
    plain = _plan.Binning(KERNELS["gaussian"], "soft", (_plan.Axis(8, 0.1, (0.0, 1.0)),))
    native_has = {  # the native CPU engine's options (Triton's engine lacks them)
        "membership='center'": _plan.Binning(KERNELS["gaussian"], "soft", (_plan.Axis(8, 0.1, (0.0, 1.0), "center"),)),
        "normalize_samples=True": _plan.Binning(KERNELS["gaussian"], "soft", (_plan.Axis(8, 0.1, (0.0, 1.0)),), normalize_samples=True),
        "kernel='cauchy'": _plan.Binning(KERNELS["cauchy"], "soft", (_plan.Axis(8, 0.1, (0.0, 1.0)),)),
    }
    torch_only = {
        "kernel='laplace'": _plan.Binning(LAPLACE, "soft", (_plan.Axis(8, 0.1, (0.0, 1.0)),)),
        "per-bin bandwidths": _plan.Binning(KERNELS["gaussian"], "soft", (_plan.Axis(8, 0.1, (0.0, 1.0), "center", True),)),
    }
    for option, binning in {**native_has, **torch_only}.items():
        assert option in _plan.native_unsupported(binning)
        assert _torch_backend.TORCH_ENGINE.supports(binning) is None
    for option, binning in torch_only.items():
        assert _ops.select_backend(cpu, "auto", binning) is _torch_backend
        assert option in _cpp_backend.CPP_ENGINE.supports(binning)
    for binning in native_has.values():
        assert _cpp_backend.CPP_ENGINE.supports(binning) is None
    # A user kernel named like a built-in one is still a user kernel.
    impostor = softhist.Kernel("cauchy", KERNELS["cauchy"].cdf, KERNELS["cauchy"].pdf, math.inf)
    assert "kernel='cauchy'" in _cpp_backend.CPP_ENGINE.supports(_plan.Binning(impostor, "soft", (_plan.Axis(8, 0.1, (0.0, 1.0)),)))
    assert _plan.native_unsupported(plain) is None
    hard = _plan.Binning(LAPLACE, "hard", (_plan.Axis(8, 0.0, (0.0, 1.0), "center"),))
    assert _plan.native_unsupported(hard) is None  # exact counts use neither kernel nor membership
    if HAS_CPP:
        assert _ops.select_backend(cpu, "auto", plain) is _cpp_backend
        for binning in native_has.values():
            assert _ops.select_backend(cpu, "auto", binning) is _cpp_backend
        with pytest.raises(ValueError, match=r"backend='cpp' cannot run this call: .*per-bin bandwidths.*use backend='auto' or 'torch'"):
            softhist.histc(torch.rand(10), 4, 0, 1, bandwidth=torch.full((4,), 0.1), membership="center", backend="cpp")
        with pytest.raises(ValueError, match=r"backend='cpp' cannot run this call: .*kernel='laplace'"):
            softhist.histc(torch.rand(10), 4, 0, 1, kernel=LAPLACE, backend="cpp")


def test_the_plan_round_trips_through_its_text_with_the_options():
    binning = _plan.Binning(
        (KERNELS["cauchy"], LAPLACE, KERNELS["box"]), "soft",
        (_plan.Axis(7, 0.1, (-0.1, 0.5), "center", True), _plan.Axis(3, 0.2, None, "mass"), _plan.Axis(2, 0.3)),
        "edges", (False, False, True), normalize_samples=True,
    )
    assert _plan.binning_from_spec(binning.spec) == binning
    assert "membership:center" in binning.spec and "per_bin:1" in binning.spec and "normalize_samples=1" in binning.spec
    assert "kernel:user-laplace-" in binning.spec


def test_user_kernels_are_checked():
    with pytest.raises(ValueError, match=r"kernel.support must be a positive number \(math.inf for none\), got -1"):
        softhist.histc(torch.rand(5), 4, 0, 1, kernel=softhist.Kernel("bad", LAPLACE.cdf, LAPLACE.pdf, -1))
    with pytest.raises(TypeError, match=r"kernel.pdf must be a function of a tensor, got 3"):
        softhist.histc(torch.rand(5), 4, 0, 1, kernel=softhist.Kernel("bad", LAPLACE.cdf, 3, 1.0))


def test_compile_runs_the_new_options():
    x = torch.rand(100)

    def f(x):
        return softhist.histc(x, 8, 0, 1, kernel=LAPLACE, bandwidth=0.1, membership="center", normalize_samples=True)

    compiled = torch.compile(f, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), f(x))


# --------------------------------------------------------------------------- the native CPU engine's options

needs_cpp = pytest.mark.skipif(not HAS_CPP, reason="native engine not built")
NATIVE_KERNELS = sorted(KERNELS)  # every built-in kernel (user kernels run on the torch engine)


def _engines_agree(call, inputs, dtype):
    """``call(*inputs, backend)`` on the native and torch engines: the histograms within
    TOLERANCE[dtype] of the float64 torch engine's, and, in float64, every gradient (samples,
    weights, bandwidth, edges) within 1e-8 of the torch engine's (relative to its largest entry)."""
    def run(backend, dt):
        leaves = [t.detach().to(dt).requires_grad_(t.is_floating_point()) for t in inputs]
        out = call(*leaves, backend)
        cot = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view(out.shape).to(dt)
        grads = torch.autograd.grad((out * cot).sum(), leaves, allow_unused=True)
        return out, grads

    want, want_grads = run("torch", torch.float64)
    got, got_grads = run("cpp", dtype)
    assert got.dtype == dtype
    _close(got, want, dtype)
    if dtype == torch.float64:
        # A gradient that vanishes analytically (a normalized box's bandwidth) is rounding in both:
        # it is measured against a ten-thousandth of the largest gradient.
        largest = max(w.abs().max().item() for w in want_grads if w is not None)
        for g, w in zip(got_grads, want_grads):
            assert (g is None) == (w is None)
            if w is not None:
                assert (g - w).abs().max().item() <= 1e-8 * max(w.abs().max().item(), 1e-4 * largest)


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("edges", ["uniform", "nonuniform"])
@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "normalized"])
@pytest.mark.parametrize("membership", ["mass", "center"])
@pytest.mark.parametrize("kernel", NATIVE_KERNELS)
def test_the_native_engine_runs_every_option_as_the_torch_engine(kernel, membership, normalize, edges, dtype):
    torch.manual_seed(0)
    x = torch.rand(3, 61, dtype=torch.float64) * 1.3 - 0.15  # some beyond the range, some reaching none
    w = torch.rand(3, 61, dtype=torch.float64)
    h = torch.tensor(0.05 if kernel != "cauchy" else 0.02, dtype=torch.float64)
    e = torch.linspace(0, 1, 10, dtype=torch.float64) if edges == "uniform" else torch.tensor(NON_UNIFORM, dtype=torch.float64)
    options = dict(kernel=kernel, membership=membership, normalize_samples=normalize, dim=1)
    assert _ops.select_backend(torch.device("cpu"), "auto", _plan.Binning(
        KERNELS[kernel], "soft", (_plan.Axis(9, 0.05, None, membership),), normalize_samples=normalize)) is _cpp_backend

    def call(x, w, h, e, backend):
        return softhist.histogram(x, e, weight=w, bandwidth=h, backend=backend, **options)[0]

    _engines_agree(call, (x, w, h, e), dtype)
    if edges == "uniform":  # equal-width bins by range (the arithmetic windows; float32 may take a table)
        def by_range(x, w, h, backend):
            return softhist.histc(x, 9, 0.0, 1.0, weight=w, bandwidth=h, backend=backend, **options)

        _engines_agree(by_range, (x, w, h), dtype)


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "normalized"])
def test_the_native_engine_runs_the_options_per_axis_in_joint_histograms(normalize, dtype):
    torch.manual_seed(1)
    xyz = torch.rand(80, 3, dtype=torch.float64) * 1.2 - 0.1
    w = torch.rand(80, dtype=torch.float64)
    e = torch.tensor(NON_UNIFORM, dtype=torch.float64)
    h = torch.tensor(0.08, dtype=torch.float64)

    def joint(xyz, w, e, h, backend):  # two axes: centre (explicit edges) and mass (Cauchy, by range)
        return softhist.histogramdd(xyz[..., :2], [e, 5], range=[None, (0, 1)], weight=w, kernel=["bspline", "cauchy"],
                                    bandwidth=h, membership=["center", "mass"], normalize_samples=normalize, backend=backend)[0]

    def three(xyz, w, e, h, backend):  # any D: centre on every axis
        return softhist.histogramdd(xyz, [e, 5, 4], range=[None, (0, 1), (0, 1)], weight=w, kernel="gaussian", bandwidth=h,
                                    membership="center", normalize_samples=normalize, backend=backend)[0]

    _engines_agree(joint, (xyz, w, e, h), dtype)
    _engines_agree(three, (xyz, w, e, h), dtype)


@needs_cpp
@pytest.mark.parametrize("kernel", ["gaussian", "logistic", "bspline", "bspline2"])
def test_float32_centre_memberships_read_from_tables_equal_float64(kernel):
    # Enough float32 samples for the sub-bin table of centre memberships (values and, where they
    # interpolate finely enough, derivatives); the torch engine's float64 formula is the reference.
    torch.manual_seed(3)
    x = torch.rand(100_000) * 1.2 - 0.1
    h = 0.8 / 32
    got = softhist.histc(x, 32, 0, 1, kernel=kernel, bandwidth=h, membership="center", backend="cpp")
    assert any(getattr(key[0], "name", None) == kernel and key[-1] == "center" for key in _cpp_backend._TABLES)  # (joined keys: tuples)
    want = softhist.histc(x.double(), 32, 0, 1, kernel=kernel, bandwidth=h, membership="center", backend="torch")
    _close(got, want, torch.float32)
    xx, x64 = x.clone().requires_grad_(), x.double().requires_grad_()
    cot = torch.linspace(-1, 1, 32, dtype=torch.float64)
    (g,) = torch.autograd.grad((softhist.histc(xx, 32, 0, 1, kernel=kernel, bandwidth=h, membership="center", backend="cpp")
                                * cot.float()).sum(), xx)
    (g64,) = torch.autograd.grad((softhist.histc(x64, 32, 0, 1, kernel=kernel, bandwidth=h, membership="center", backend="torch")
                                  * cot).sum(), x64)
    _close(g, g64, torch.float32)


@needs_cpp
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("kernel", ["gaussian", "logistic", "box", "epanechnikov", "bspline", "bspline2"])
def test_float32_centre_backward_reads_tables_split_at_the_cut_equal_float64(kernel, normalize):
    # A bin's centre membership jumps (or its slope does) where the bin's centre crosses the
    # kernel's cut |z| = T, at f = frac(1/2 -+ T hb) in the sample's bin: the gradients' table is
    # split there, so no row interpolates across a jump. Samples spread over the range and right
    # at the cuts (the float32 values nearest them and their neighbours), weights, and gradients
    # in x, the weights and the bandwidth against the torch engine's float64 formula.
    torch.manual_seed(6)
    bins, hb = 32, 0.75
    cuts = _cpp_backend._centre_cuts(KERNELS[kernel], hb)
    assert cuts == sorted({c for c in ((0.5 - KERNELS[kernel].support * hb) % 1.0, (0.5 + KERNELS[kernel].support * hb) % 1.0)})
    layout = _cpp_backend._centre_table_size(KERNELS[kernel], hb, True)
    assert layout is not None and (layout.cuts[0] < 1.0 or kernel.startswith("bspline"))  # (B-splines: smooth at the cut)
    at_cuts = torch.tensor([(n + c) / bins for n in range(-3, bins + 3) for c in cuts], dtype=torch.float32)
    at_cuts = torch.cat([at_cuts, torch.nextafter(at_cuts, at_cuts - 1), torch.nextafter(at_cuts, at_cuts + 1)])
    x = torch.cat([torch.rand(100_000) * 1.2 - 0.1, at_cuts]).double()  # float32 values: both runs see the same samples
    w = torch.rand(x.numel()).double()
    binning = _plan.Binning((KERNELS[kernel],), "soft", (_plan.Axis(bins, hb / bins, (0.0, 1.0), "center"),), "histc", (False,),
                            normalize_samples=normalize)
    for _ in range(2):  # the second call finds the table built
        ints, *_ = _cpp_backend._plan(x.float().view(1, -1, 1), [torch.linspace(0, 1, bins + 1)], binning, smooth_gradients=True)
    fields = dict(zip(_cpp_backend.INT_FIELDS, ints))
    assert fields["kind"] == _cpp_backend.TABLE and fields["q"] == layout.rows

    def run(backend, dtype, normalize=normalize):
        leaves = [t.to(dtype).requires_grad_() for t in (x, w, torch.tensor(hb / bins, dtype=torch.float64))]
        out = softhist.histc(leaves[0], bins, 0, 1, weight=leaves[1], bandwidth=leaves[2], kernel=kernel, membership="center",
                             normalize_samples=normalize, backend=backend)
        cot = torch.linspace(-1, 1, bins, dtype=torch.float64).to(dtype)
        return [out, *torch.autograd.grad((out * cot).sum(), leaves)]

    got, want = run("cpp", torch.float32), run("torch", torch.float64)
    for g, ref in zip(got[:3], want[:3]):
        _close(g, ref, torch.float32)
    # The bandwidth's gradient sums every sample's table row: within 2e-5 of float64, or of the
    # terms it sums where normalizing cancels them (a box's normalized memberships do not depend on h).
    scale = max(abs(want[3].item()), abs(run("torch", torch.float64, False)[3].item()) if normalize else 0.0)
    assert abs(got[3].item() - want[3].item()) <= 2e-5 * scale


@needs_cpp
def test_centre_tables_of_kernels_with_a_kink_inside_take_the_exact_windows():
    # The triangle's density kinks at 0 as well as at its cut: a third cut in the bin, which the
    # tables (up to three pieces) do not take.
    assert _cpp_backend._centre_cuts(KERNELS["triangular"], 0.75) is None
    assert _cpp_backend._centre_table_size(KERNELS["triangular"], 0.75, True) is None


@needs_cpp
def test_float32_centre_backward_tables_are_bit_identical_across_thread_counts():
    torch.manual_seed(7)
    x = torch.rand(300_000) * 1.2 - 0.1
    w = torch.rand(300_000)

    def run():
        xx, ww, hh = x.clone().requires_grad_(), w.clone().requires_grad_(), torch.tensor(0.01, dtype=torch.float64, requires_grad=True)
        h = softhist.histc(xx, 64, 0, 1, weight=ww, bandwidth=hh, membership="center", backend="cpp")
        return [h, *torch.autograd.grad((h * torch.linspace(-1, 1, 64)).sum(), [xx, ww, hh])]

    same_at_thread_counts(run, (1, 3, 2))


@needs_cpp
@pytest.mark.parametrize("membership", ["mass", "center"])
@pytest.mark.parametrize("kernel", ["gaussian", "logistic", "bspline", "triangular"])
def test_float32_normalized_samples_read_from_tables_equal_float64(kernel, membership):
    # One float32 axis by range with enough samples: normalized samples read the sub-bin table
    # (those whose window meets a range end take the exact windows); samples beyond the range,
    # some reaching no bin, weights, and gradients in x, the weights and the bandwidth against
    # the torch engine's float64 formula.
    torch.manual_seed(4)
    x = (torch.rand(100_000) * 1.3 - 0.15).double()  # float32 values: both runs see the same samples
    w = torch.rand(100_000).double()
    bins, h = 32, torch.tensor(0.75 / 32, dtype=torch.float64)
    options = dict(kernel=kernel, membership=membership, normalize_samples=True)
    binning = _plan.Binning((KERNELS[kernel],), "soft", (_plan.Axis(bins, 0.75 / 32, (0.0, 1.0), membership),), "histc", (False,),
                            normalize_samples=True)
    if kernel != "triangular" or membership == "mass":  # (a centre triangle's kink: exact windows)
        for _ in range(2):  # the second call finds the table built
            ints, *_ = _cpp_backend._plan(x.float().view(1, -1, 1), [torch.linspace(0, 1, bins + 1)], binning)
        fields = dict(zip(_cpp_backend.INT_FIELDS, ints))
        assert fields["kind"] == _cpp_backend.TABLE and fields["normalize"] == 1

    def run(backend, dtype):
        leaves = [t.to(dtype).requires_grad_() for t in (x, w, h)]
        out = softhist.histc(leaves[0], bins, 0, 1, weight=leaves[1], bandwidth=leaves[2], backend=backend, **options)
        cot = torch.linspace(-1, 1, bins, dtype=torch.float64).to(dtype)
        return [out, *torch.autograd.grad((out * cot).sum(), leaves)]

    got, want = run("cpp", torch.float32), run("torch", torch.float64)
    assert got[0].sum().item() == pytest.approx(want[0].sum().item(), rel=1e-6)  # each sample counts its weight once
    for g, ref in zip(got[:3], want[:3]):
        _close(g, ref, torch.float32)
    # The bandwidth's gradient sums every sample's table row: within 2e-5 of float64.
    assert abs(got[3].item() - want[3].item()) <= 2e-5 * abs(want[3].item())


@needs_cpp
@pytest.mark.parametrize("membership", ["mass", "center"])
def test_float32_normalized_tables_are_bit_identical_across_thread_counts(membership):
    torch.manual_seed(5)
    x = torch.rand(300_000) * 1.2 - 0.1
    w = torch.rand(300_000)

    def run():
        xx, ww = x.clone().requires_grad_(), w.clone().requires_grad_()
        h = softhist.histc(xx, 64, 0, 1, weight=ww, bandwidth=0.01, membership=membership, normalize_samples=True, backend="cpp")
        return [h, *torch.autograd.grad((h * torch.linspace(-1, 1, 64)).sum(), [xx, ww])]

    same_at_thread_counts(run, (1, 3, 2))


@needs_cpp
@pytest.mark.parametrize("membership", ["mass", "center"])
def test_float32_normalized_end_samples_split_in_runs_and_scattered(membership):
    # The samples whose window meets a range end are split off by flags over each block of 256:
    # sorted samples make blocks of end samples alone, blocks with none and blocks with a few at
    # any place of a flag word; shuffled ones a few in every block. Both equal float64 (values and
    # the gradients in x and the weights); the shuffled ones give the same bits at any thread count.
    torch.manual_seed(6)
    bins = 64
    near_ends = torch.cat([torch.rand(3000) * 0.05 - 0.01, 1.01 - torch.rand(3000) * 0.05])
    x64 = torch.cat([near_ends, torch.rand(20_000)]).sort().values.double()
    w64 = torch.rand(x64.shape[0]).double() + 0.5
    for order in (torch.arange(x64.shape[0]), torch.randperm(x64.shape[0])):
        x, w = x64[order], w64[order]

        def run(dtype, backend):
            leaves = [t.to(dtype).requires_grad_() for t in (x, w)]
            h = softhist.histc(leaves[0], bins, 0, 1, weight=leaves[1], bandwidth=0.02, membership=membership,
                               normalize_samples=True, backend=backend)
            return [h, *torch.autograd.grad((h * torch.linspace(-1, 1, bins, dtype=dtype)).sum(), leaves)]

        for g, ref in zip(run(torch.float32, "cpp"), run(torch.float64, "torch")):
            _close(g, ref, torch.float32)
    same_at_thread_counts(lambda: run(torch.float32, "cpp"), (1, 3, 2))


@needs_cpp
@pytest.mark.parametrize("membership", ["mass", "center"])
def test_native_options_are_bit_identical_across_thread_counts(membership):
    torch.manual_seed(2)
    x = torch.rand(200_000, dtype=torch.float64) * 1.2 - 0.1

    def run():
        xx = x.clone().requires_grad_()
        h = softhist.histc(xx, 64, 0, 1, kernel="cauchy" if membership == "mass" else "logistic", membership=membership,
                           normalize_samples=True, backend="cpp")
        (g,) = torch.autograd.grad((h * torch.linspace(-1, 1, 64, dtype=torch.float64)).sum(), xx)
        return [h, g]

    same_at_thread_counts(run, (1, 3))


@needs_cpp
def test_a_normalized_cauchy_sample_far_from_the_range_still_counts_its_weight():
    x = torch.tensor([0.5, 40.0, -1e6], dtype=torch.float64)
    w = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    for backend in ("cpp", "torch"):
        h = softhist.histc(x, 8, 0, 1, weight=w, kernel="cauchy", bandwidth=0.05, normalize_samples=True, backend=backend)
        assert h.sum().item() == pytest.approx(6.0, rel=1e-12)
    raw = softhist.histc(x[1:2], 8, 0, 1, kernel="cauchy", bandwidth=0.05, backend="cpp")
    want = (torch.atan((torch.linspace(0, 1, 9, dtype=torch.float64) - 40.0) / 0.05)).diff() / math.pi
    torch.testing.assert_close(raw, want, rtol=1e-9, atol=0)


# --------------------------------------------------------------------------- local histograms


def _dense_local(input, bins, lo, hi, size, step, pad, **options):
    """Every window's histogram by a loop over output positions, from per-pixel memberships."""
    batch, channels, *lengths = input.shape
    per_pixel = softhist.histc(input.reshape(-1, 1), bins, lo, hi, dim=1, **options).view(batch, channels, *lengths, bins)
    outs = [(n + 2 * p - k) // s + 1 for n, k, s, p in zip(lengths, size, step, pad)]
    result = torch.zeros(batch, channels, bins, *outs, dtype=per_pixel.dtype)
    for position in torch.cartesian_prod(*[torch.arange(o) for o in outs]).view(-1, len(outs)).tolist():
        window = tuple(slice(max(i * s - p, 0), max(min(i * s - p + k, n), 0)) for i, k, s, p, n in zip(position, size, step, pad, lengths))
        result[(slice(None), slice(None), slice(None), *position)] = per_pixel[(slice(None), slice(None), *window)].sum(
            tuple(range(2, 2 + len(outs))))
    return result


@pytest.mark.parametrize("mode", ["soft", "hard", "straight_through"])
@pytest.mark.parametrize("shape,size,step,pad", [
    ((2, 3, 17), (4,), (3,), (2,)),
    ((1, 2, 9, 11), (3, 2), (2, 1), (1, 1)),
    ((1, 1, 5, 6, 7), (2, 3, 3), (2, 2, 1), (1, 0, 1)),
], ids=["1d", "2d", "3d"])
def test_local_histogram_equals_the_windows_histograms(shape, size, step, pad, mode):
    image = torch.rand(*shape, dtype=torch.float64)
    for membership, normalize in (("mass", False), ("center", True)):
        options = dict(bandwidth=0.07, membership=membership, normalize_samples=normalize, mode=mode)
        got = softhist.local_histogram(image, 6, (0, 1), size, step, pad, **options)
        want = _dense_local(image, 6, 0.0, 1.0, size, step, pad, **options)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        ref_shape = torch.nn.functional.avg_pool1d if len(size) == 1 else None
        if len(size) == 2:
            expected = torch.nn.functional.avg_pool2d(image[:, :1], size, step, pad).shape[2:]
            assert got.shape[3:] == expected
        elif ref_shape is not None:
            assert got.shape[3:] == ref_shape(image[:, :1], size, step, pad).shape[2:]


def test_local_histogram_normalized_pixels_count_once_per_window():
    image = torch.rand(2, 3, 12, 10, dtype=torch.float64) * 1.4 - 0.2  # some pixels outside the range reach no bin
    counts = softhist.local_histogram(image, 5, (0, 1), 3, 1, 1, normalize_samples=True, bandwidth=0.02)
    reach = KERNELS["gaussian"].support * 0.02  # a pixel this far outside still reaches a bin, then counts 1
    reaches = ((image > -reach) & (image < 1 + reach)).double()
    windows = torch.nn.functional.avg_pool2d(reaches, 3, 1, 1, divisor_override=1)
    torch.testing.assert_close(counts.sum(2), windows, rtol=1e-12, atol=1e-12)


def test_local_histogram_gradcheck():
    image = torch.rand(1, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    h = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    for membership, normalize in (("mass", False), ("center", True)):
        def f(image, h):
            return softhist.local_histogram(image, 4, (0, 1), (3, 2), (2, 1), (1, 1), bandwidth=h, membership=membership,
                                            normalize_samples=normalize)

        assert gradcheck(f, (image, h))
        assert gradgradcheck(f, (image, h), fast_mode=True)  # a random projection of every second derivative


def test_local_histogram_errors_name_the_argument():
    image = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match=r"input must have shape \(B, C, \*spatial\) with 1 to 3 spatial dims, got shape \(8, 8\)"):
        softhist.local_histogram(image[0, 0], 4, (0, 1), 2)
    with pytest.raises(ValueError, match=r"kernel_size must be an int >= 1 or 2 of them"):
        softhist.local_histogram(image, 4, (0, 1), (2, 2, 2))
    with pytest.raises(ValueError, match=r"padding must be at most half of kernel_size"):
        softhist.local_histogram(image, 4, (0, 1), 2, padding=2)
    with pytest.raises(ValueError, match=r"kernel_size=9 is larger than the padded input"):
        softhist.local_histogram(image, 4, (0, 1), 9)


class GatorSenseRBFHistogram(torch.nn.Module):
    """GatorSense's histogram layer (Peeples et al. 2021), as its code builds it: bin centres as a
    grouped 1x1 convolution's bias, widths as a second 1x1 convolution's weight, a Gaussian RBF
    ``exp(-(w (x - c))^2)``, then ``AvgPool2d`` over the windows."""

    def __init__(self, channels, centres, width, kernel_size, stride, padding):
        super().__init__()
        bins = centres.numel()
        self.centres = torch.nn.Conv2d(channels, channels * bins, 1, groups=channels, bias=True)
        self.widths = torch.nn.Conv2d(channels * bins, channels * bins, 1, groups=channels * bins, bias=False)
        self.centres.weight.data.fill_(1.0)
        self.centres.weight.requires_grad_(False)
        self.centres.bias.data = -centres.repeat(channels)
        self.widths.weight.data.fill_(1.0 / width)
        self.pool = torch.nn.AvgPool2d(kernel_size, stride, padding, count_include_pad=False)

    def forward(self, x):
        return self.pool(torch.exp(-self.widths(self.centres(x)) ** 2))


def test_local_histogram_computes_gatorsenses_windows_and_bins():
    # The same windows and bins (see scripts/bench_options.py for the speed comparison).
    bins, kernel_size = 16, 5
    width = 1.0 / bins
    centres = (torch.arange(bins) + 0.5) * width
    h = width / 2
    layer = GatorSenseRBFHistogram(3, centres, h * math.sqrt(2.0), kernel_size, 1, 2)
    image = torch.rand(4, 3, 20, 18)
    ours = softhist.local_histogram(image, bins, (0, 1), kernel_size, 1, 2, bandwidth=h, membership="center")
    counts = torch.nn.functional.avg_pool2d(torch.ones(1, 1, 20, 18), kernel_size, 1, 2, divisor_override=1)
    # Their RBF is our centre membership times h sqrt(2 pi) / width, averaged where we count.
    theirs = layer(image).view(4, 3, bins, 20, 18)
    torch.testing.assert_close(ours / counts * (h * math.sqrt(2 * math.pi) / width), theirs, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("membership", ["mass", "center"])
def test_local_histogram_memory_is_input_plus_output(membership):
    # (1, 3, 256, 256), 16 bins, 5 x 5 windows at stride 1: the windows' samples x bins would be
    # 3 * 256^2 * 25 * 16 floats (315 MB); the output is 12.6 MB.
    out = run_measuring_peak(
        """
        torch.manual_seed(0)
        image = torch.rand(1, 3, 256, 256, requires_grad=True)
        softhist.local_histogram(torch.rand(1, 1, 8, 8), 16, (0, 1), 5, 1, membership=MEMBERSHIP)  # imports, first call
        before = peak_rss()
        h = softhist.local_histogram(image, 16, (0, 1), 5, 1, membership=MEMBERSHIP)
        (h * torch.linspace(-1, 1, 16).view(1, 1, 16, 1, 1)).sum().backward()
        print(peak_rss() - before, tuple(h.shape))
        """.replace("MEMBERSHIP", repr(membership))
    )
    growth, shape = out.split(maxsplit=1)
    assert shape.strip() == "(1, 3, 16, 252, 252)"
    assert 0 < int(growth) <= 100 * 1000 * 1000


def _far_keys():
    return [key for key in _cpp_backend._TABLES if len(key) == 5 and getattr(key[0], "name", None) == "cauchy"]


@needs_cpp
@pytest.mark.parametrize("membership", ["mass", "center"])
@pytest.mark.parametrize("bandwidth", [0.5 / 48, 0.3 / 48, 2.0 / 48, 20.0 / 48], ids=["default", "narrow", "wide", "very_wide"])
def test_float32_cauchy_near_table_and_far_grid_equal_float64(membership, bandwidth):
    # Float32 Cauchy calls read their near bins from a sub-bin table and their far bins from the
    # far grid (_cpp_backend._far_plan): samples in the range, just outside it (in the grid's
    # margin), past the margin (exact memberships), and a pile-up at one point (the worst case of
    # the interpolation, relative to the histogram's largest cell).
    torch.manual_seed(4)
    x = torch.cat([torch.rand(100_000) * 1.2 - 0.1, torch.randn(3000) * 2.0, torch.full((20_000,), 0.3137),
                   torch.tensor([-1e6, 40.0, 1.9])])
    w = torch.rand(x.shape[0]) + 0.5
    cot = torch.randn(48, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def grads(dtype, backend):
        leaves = [t.to(dtype).detach().requires_grad_() for t in (x, w, torch.tensor(bandwidth))]
        h = softhist.histc(leaves[0], 48, 0, 1, weight=leaves[1], kernel="cauchy", bandwidth=leaves[2], membership=membership,
                           backend=backend)
        return [h.detach(), *torch.autograd.grad((h * cot.to(dtype)).sum(), leaves)]

    grads(torch.float32, "cpp")  # the first call brings the samples that build the table
    got = grads(torch.float32, "cpp")
    assert any(key[-1] == membership and key[3][0] == 48 for key in _far_keys())
    want = grads(torch.float64, "torch")
    for g, v in zip(got, want):
        _close(g, v, torch.float32)


@needs_cpp
@pytest.mark.parametrize("membership", ["mass", "center"])
def test_cauchy_far_grid_is_bit_identical_across_thread_counts(membership):
    # One row cut into chunks (their far grids summed in chunk order) and many short rows (one
    # far grid each): the same bits at any thread count.
    torch.manual_seed(5)
    for shape in ((300_000,), (40, 3000)):
        x = torch.rand(shape) * 1.4 - 0.2

        def run():
            xx = x.clone().requires_grad_()
            h = softhist.histc(xx, 64, 0, 1, kernel="cauchy", membership=membership, backend="cpp")
            (g,) = torch.autograd.grad((h * torch.linspace(-1, 1, 64)).sum(), xx)
            return [h, g]

        run()
        same_at_thread_counts(run, (1, 2, 3))
    assert any(key[-1] == membership for key in _far_keys())


def test_cauchy_far_grid_sizes_meet_the_table_bounds():
    # S (far grid intervals per bin) exists over bandwidths from half a bin to 40 bins,
    # and the near window J grows with the bandwidth within the table's reach; narrower kernels
    # (a near table past 8192 rows per bin) take the exact windows, as cut kernels do.
    cauchy = KERNELS["cauchy"]
    assert _cpp_backend._far_plan(cauchy, 0.1, "mass", True) == (None, 0)
    for bandwidth_bins in (0.5, 1.0, 3.0, 10.0, 40.0):
        for membership in ("mass", "center"):
            layout, nodes = _cpp_backend._far_plan(cauchy, bandwidth_bins, membership, True)
            assert nodes in _cpp_backend._FAR_NODES and layout is not None
            assert layout.reach == _cpp_backend._far_reach(bandwidth_bins) <= _cpp_backend._TABLE_MAX_REACH
    assert _cpp_backend._far_plan(LAPLACE, 0.5, "mass", True) == (None, 0)  # user kernels: the torch engine

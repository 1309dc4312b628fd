"""The Triton backend equals the torch backend on outputs and on every gradient.

Runs on CUDA, or on the CPU under Triton's interpreter: ``make test`` runs this file a
second time with ``TRITON_INTERPRET=1`` (the variable must be set before Triton is
imported). Sizes are small because the interpreter executes kernels with numpy.
"""

import dataclasses
import os

import pytest
import torch

import softhist
from softhist import _plan
from softhist._plan import NATIVE_KERNELS
from softhist.kernels import KERNELS

triton = pytest.importorskip("triton")

if torch.cuda.is_available():
    DEVICE = "cuda"
elif os.environ.get("TRITON_INTERPRET") == "1":
    DEVICE = "cpu"
else:
    pytest.skip("needs CUDA or TRITON_INTERPRET=1 (make test runs it that way)", allow_module_level=True)

# The kernels every engine has (user kernels run on the torch engine: test_options.py; the
# Cauchy kernel is never cut, so its window is the whole axis: test_options_match_torch).
KERNEL_NAMES = sorted(NATIVE_KERNELS)


def both_backends(fn, *inputs):
    """``fn(*inputs, backend=...)`` and the gradients of a fixed random projection, for each backend."""
    results = []
    for backend in ("torch", "triton"):
        leaves = [t.detach().clone().requires_grad_(t.requires_grad) for t in inputs]
        out = fn(*leaves, backend=backend)
        projection = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        (out.double() * projection.to(out.device)).sum().backward()
        results.append((out.detach(), [t.grad for t in leaves if t.requires_grad]))
    return results


def assert_backends_agree(fn, *inputs, rtol=1e-10, atol=1e-10):
    (out_torch, grads_torch), (out_triton, grads_triton) = both_backends(fn, *inputs)
    torch.testing.assert_close(out_triton, out_torch, rtol=rtol, atol=atol)
    assert len(grads_torch) == len(grads_triton) > 0
    for g_torch, g_triton in zip(grads_torch, grads_triton):
        torch.testing.assert_close(g_triton, g_torch, rtol=rtol, atol=atol)


def rand(*shape, dtype=torch.float64, lo=-0.2, hi=1.2):
    return (torch.rand(*shape, dtype=torch.float64) * (hi - lo) + lo).to(device=DEVICE, dtype=dtype)


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_uniform_bins_weights_batch_and_bandwidth(kernel):
    x, w = rand(3, 300), rand(3, 300, lo=0, hi=1)
    h = torch.tensor(0.04, dtype=torch.float64, device=DEVICE, requires_grad=True)
    x.requires_grad_()
    w.requires_grad_()

    def fn(x, w, h, backend):
        return softhist.histc(x, 17, 0, 1, kernel=kernel, bandwidth=h, weight=w, dim=1, backend=backend)

    assert_backends_agree(fn, x, w, h)


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_non_uniform_edges_gradients(kernel):
    x = rand(400, lo=-3, hi=3).requires_grad_()
    edges = torch.tensor([-3.0, -1.0, -0.9, -0.2, 0.0, 0.05, 0.5, 2.0, 2.5], dtype=torch.float64, device=DEVICE)
    edges.requires_grad_()
    h = torch.tensor(0.15, dtype=torch.float64, device=DEVICE, requires_grad=True)

    def fn(x, edges, h, backend):
        return softhist.histogram(x, edges, kernel=kernel, bandwidth=h, backend=backend)[0]

    assert_backends_agree(fn, x, edges, h)


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_joint_2d_with_non_uniform_axis(kernel):
    xy = rand(2, 250, 2).requires_grad_()
    w = rand(2, 250, lo=0.5, hi=1.5).requires_grad_()
    edges_y = torch.tensor([0.0, 0.1, 0.15, 0.4, 0.7, 1.0], dtype=torch.float64, device=DEVICE).requires_grad_()
    h = torch.tensor([0.05, 0.08], dtype=torch.float64, device=DEVICE, requires_grad=True)

    def fn(xy, w, edges_y, h, backend):
        bins = [torch.linspace(0, 1, 8, dtype=torch.float64, device=DEVICE), edges_y]
        return softhist.histogramdd(xy, bins, weight=w, kernel=kernel, bandwidth=h, backend=backend)[0]

    def fn_uniform(xy, w, h, backend):
        return softhist.histogramdd(xy, [9, 6], range=[(0, 1), (0, 1)], weight=w, kernel=kernel, bandwidth=h, backend=backend)[0]

    assert_backends_agree(fn, xy, w, edges_y, h)
    assert_backends_agree(fn_uniform, xy, w, h)


def _joint_leaves(n: int, lo: float, hi: float):
    """Leaves of a 2-D call: ``(2, n, 2)`` samples on ``[lo, hi]``, weights, learnable non-uniform
    edges for the second axis and a bandwidth per axis."""
    xy = rand(2, n, 2, lo=lo, hi=hi).requires_grad_()
    w = rand(2, n, lo=0.5, hi=1.5).requires_grad_()
    edges_y = torch.tensor([0.0, 0.1, 0.15, 0.4, 0.7, 1.0], dtype=torch.float64, device=DEVICE).requires_grad_()
    h = torch.tensor([0.05, 0.08], dtype=torch.float64, device=DEVICE, requires_grad=True)
    return xy, w, edges_y, h


@pytest.mark.parametrize("modes", [("hard", "soft"), ("soft", "hard"), ("straight_through", "hard")], ids="-".join)
def test_per_axis_kernels_and_hard_axes(modes):
    # Out-of-range samples on the hard axis, a non-uniform soft axis with learnable edges.
    xy, w, edges_y, h = _joint_leaves(250, -0.1, 1.1)

    def fn(xy, w, edges_y, h, backend):
        bins = [torch.linspace(0, 1, 8, dtype=torch.float64, device=DEVICE), edges_y]
        return softhist.histogramdd(
            xy, bins, weight=w, kernel=["bspline2", "gaussian"], mode=list(modes), bandwidth=h, backend=backend
        )[0]

    def fn_uniform(xy, w, h, backend):
        return softhist.histogramdd(
            xy, [9, 6], range=[(0, 1), (0, 1)], weight=w, kernel=["epanechnikov", "bspline2"], mode=list(modes),
            bandwidth=h, backend=backend,
        )[0]

    assert_backends_agree(fn, xy, w, edges_y, h)
    assert_backends_agree(fn_uniform, xy, w, h)


def test_three_axes():
    x = rand(300, 3).requires_grad_()

    def fn(x, backend):
        return softhist.histogramdd(x, [5, 4, 3], range=[(0, 1)] * 3, bandwidth=0.1, backend=backend)[0]

    assert_backends_agree(fn, x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_narrow_dtypes_accumulate_in_float32(dtype):
    x = rand(2, 500, dtype=dtype).requires_grad_()
    w = rand(2, 500, dtype=dtype, lo=0, hi=1).requires_grad_()

    def fn(x, w, backend):
        return softhist.histc(x, 32, 0, 1, weight=w, dim=1, backend=backend)

    (out_torch, grads_torch), (out_triton, grads_triton) = both_backends(fn, x, w)
    assert out_triton.dtype == out_torch.dtype == torch.float32  # half-precision histograms come back in float32
    assert [g.dtype for g in grads_triton] == [dtype, dtype]
    # Both accumulate in float32 from the same narrow inputs.
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(out_triton.double(), out_torch.double(), rtol=2 * eps, atol=2 * eps * out_torch.double().abs().max().item())
    for g_torch, g_triton in zip(grads_torch, grads_triton):
        scale = g_torch.double().abs().max().item()
        torch.testing.assert_close(g_triton.double(), g_torch.double(), rtol=2 * eps, atol=2 * eps * scale)


def test_float32_joint_matches_within_float32_resolution():
    xy = rand(600, 2, dtype=torch.float32).requires_grad_()

    def fn(xy, backend):
        return softhist.histogram2d(xy[:, 0], xy[:, 1], 12, range=[(0, 1), (0, 1)], backend=backend)[0]

    assert_backends_agree(fn, xy, rtol=1e-5, atol=1e-5)


def test_non_finite_samples_are_ignored_with_zero_gradients():
    x = torch.tensor([0.3, float("nan"), 0.5, float("inf"), -float("inf"), 0.51], dtype=torch.float64, device=DEVICE)
    w = torch.ones_like(x).requires_grad_()
    x.requires_grad_()
    hist = softhist.histc(x, 4, 0, 1, weight=w, bandwidth=0.1, backend="triton")
    clean = softhist.histc(x.detach()[[0, 2, 5]], 4, 0, 1, bandwidth=0.1, backend="torch")
    torch.testing.assert_close(hist.detach(), clean)
    (hist * torch.arange(1.0, 5.0, dtype=torch.float64, device=DEVICE)).sum().backward()
    assert torch.all(x.grad[[1, 3, 4]] == 0) and torch.all(w.grad[[1, 3, 4]] == 0)
    assert torch.all(x.grad[[0, 2, 5]] != 0)


def test_far_samples_and_empty_input():
    x = torch.tensor([-1e30, 1e30, 5.0, -7.0, 0.5], dtype=torch.float64, device=DEVICE)
    for kernel in ("gaussian", "cauchy"):  # the Cauchy kernel reaches every sample: z near -+1e31
        hist = softhist.histc(x, 8, 0, 1, kernel=kernel, backend="triton")
        torch.testing.assert_close(hist, softhist.histc(x, 8, 0, 1, kernel=kernel, backend="torch"))
    empty = torch.empty(0, dtype=torch.float32, device=DEVICE, requires_grad=True)
    out = softhist.histc(empty, 8, 0, 1, backend="triton")
    assert out.shape == (8,) and torch.all(out == 0)
    out.sum().backward()
    assert empty.grad.shape == (0,)


def test_straight_through_forward_is_hard_and_backward_soft():
    x = rand(500).requires_grad_()

    def fn(x, backend):
        return softhist.histc(x, 10, 0, 1, bandwidth=0.05, mode="straight_through", backend=backend)

    assert_backends_agree(fn, x)
    hard = softhist.histc(x.detach(), 10, 0, 1, mode="hard")
    torch.testing.assert_close(fn(x, "triton").detach(), hard)


def test_gradcheck_through_the_fused_kernels():
    x = rand(40).requires_grad_()
    w = rand(40, lo=0, hi=1).requires_grad_()
    edges = torch.tensor([0.0, 0.2, 0.25, 0.6, 1.0], dtype=torch.float64, device=DEVICE, requires_grad=True)
    h = torch.tensor(0.07, dtype=torch.float64, device=DEVICE, requires_grad=True)

    def f(x, w, edges, h):
        return softhist.histogram(x, edges, weight=w, bandwidth=h, backend="triton")[0]

    assert torch.autograd.gradcheck(f, (x, w, edges, h))


def _assert_deterministic_mode_repeats(xy, options, grad_tolerance):
    """``histogramdd(xy, [5 equal bins, edges_y], **options)`` on Triton under deterministic
    algorithms: bit-identical twice (histogram and the gradients of ``xy`` and ``edges_y``), and
    within ``1e-12`` (histogram) and ``grad_tolerance`` (gradients) of the floating-point run."""
    edges_y = torch.tensor([0.0, 0.3, 0.35, 1.0], dtype=torch.float64, device=DEVICE, requires_grad=True)

    def run():
        bins = [torch.linspace(0, 1, 6, dtype=torch.float64, device=DEVICE), edges_y]
        hist = softhist.histogramdd(xy, bins, backend="triton", **options)[0]
        grads = torch.autograd.grad((hist * torch.arange(hist.numel(), device=DEVICE).view(hist.shape)).sum(), (xy, edges_y))
        return hist, grads

    free = run()
    torch.use_deterministic_algorithms(True)
    try:
        first, second = run(), run()
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.equal(first[0], second[0]) and all(torch.equal(a, b) for a, b in zip(first[1], second[1]))
    torch.testing.assert_close(first[0], free[0], rtol=1e-12, atol=1e-12)
    for fixed, floating in zip(first[1], free[1]):
        torch.testing.assert_close(fixed, floating, rtol=grad_tolerance, atol=grad_tolerance)


def test_deterministic_mode_is_exact_to_fixed_point_and_repeatable():
    # 64-bit fixed point keeps 60 bits below the bound on the sums: far below float64 noise here.
    _assert_deterministic_mode_repeats(rand(2, 300, 2).requires_grad_(), dict(bandwidth=0.06), 1e-10)


def test_auto_picks_triton_only_on_cuda():
    from softhist import _cpp_backend, _torch_backend, _triton_backend
    from softhist._ops import select_backend

    x = torch.zeros(3, device=DEVICE)
    on_cpu = _cpp_backend if softhist.backends()["cpp"] is None else _torch_backend  # the native kernels, where built
    assert select_backend(x.device, "auto") is (_triton_backend if DEVICE == "cuda" else on_cpu)
    assert select_backend(x.device, "triton") is _triton_backend


def test_wide_windows_span_several_tiles():
    # Windows wider than one tile of cells: 1-D with a bandwidth of 30 bins, 2-D with 3 bins per axis.
    x = rand(2, 80).requires_grad_()
    xy = rand(60, 2).requires_grad_()
    h = torch.tensor(30 / 64, dtype=torch.float64, device=DEVICE, requires_grad=True)

    def wide_1d(x, h, backend):
        return softhist.histc(x, 64, 0, 1, bandwidth=h, dim=1, backend=backend)

    def wide_2d(xy, backend):
        return softhist.histogramdd(xy, 16, range=[(0, 1), (0, 1)], bandwidth=3 / 16, backend=backend)[0]

    assert_backends_agree(wide_1d, x, h)
    assert_backends_agree(wide_2d, xy)


@pytest.mark.parametrize("weighted", [False, True])
def test_table_strategy_forward(weighted):
    # Equal-width bins in float32 over many samples take the sub-bin table: one scatter kernel,
    # then the torch engine's exact matmul. Both engines bin the same float32 positions.
    from softhist import _torch_backend

    x = rand(2, 40_000, dtype=torch.float32)
    x[0, ::97] = float("nan")
    w = rand(2, 40_000, dtype=torch.float32, lo=0, hi=2) if weighted else None
    binning = _plan.Binning(KERNELS["gaussian"], "soft", (_plan.Axis(8, 0.5 / 8, (0.0, 1.0)),))
    assert _torch_backend._plan_table(x.view(2, -1, 1), binning) is not None
    outs = [softhist.histc(x, 8, 0, 1, weight=w, dim=1, backend=b) for b in ("torch", "triton")]
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-6, atol=0)
    torch.use_deterministic_algorithms(True)
    try:
        fixed = softhist.histc(x, 8, 0, 1, weight=w, dim=1, backend="triton")
    finally:
        torch.use_deterministic_algorithms(False)
    torch.testing.assert_close(fixed, outs[0], rtol=1e-6, atol=0)


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_joint_equals_dense_reference_with_gradients(kernel):
    # DESIGN's invariant for every backend, checked directly: outputs and gradients of the dense spec.
    from softhist import reference

    xy = rand(150, 2).requires_grad_()
    w = rand(150, lo=0.5, hi=1.5).requires_grad_()
    edges = [torch.linspace(0, 1, 7, dtype=torch.float64, device=DEVICE), torch.tensor([0.0, 0.2, 0.3, 0.7, 1.0], dtype=torch.float64, device=DEVICE)]
    h = [0.06, 0.09]
    ours = softhist.histogramdd(xy, edges, weight=w, kernel=kernel, bandwidth=h, backend="triton")[0]
    expected = reference.soft_histogramdd(xy, edges, h, kernel, w)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-10)
    g = torch.randn(ours.shape, dtype=torch.float64, device=DEVICE)
    for got, want in zip(torch.autograd.grad(ours, (xy, w), g), torch.autograd.grad(expected, (xy, w), g)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("case", ["2^20 bins", "narrow range", "narrow range, table"])
def test_float32_positions_are_computed_in_float64(case):
    """Positions (x - lo) * scale in float64, as the torch and native engines place samples:
    float32 input stays within 2e-6 (of the largest bin) of float64 where float32 positions
    would not (2^20 bins: u past float32's integers; [0.1, 0.101]: x - lo loses its digits)."""
    from softhist import _torch_backend

    bins, lo, hi, n = {"2^20 bins": (1 << 20, 0.0, 1.0, 3000), "narrow range": (64, 0.1, 0.101, 3000),
                       "narrow range, table": (64, 0.1, 0.101, 40_000)}[case]
    x = (rand(n, dtype=torch.float64) * (hi - lo) + lo).float()
    binning = _plan.Binning(KERNELS["gaussian"], "soft", (_plan.Axis(bins, 0.5 * (hi - lo) / bins, (lo, hi)),))
    assert (_torch_backend._plan_table(x.view(1, -1, 1), binning) is not None) == case.endswith("table")
    got = softhist.histc(x.to(DEVICE), bins, lo, hi, backend="triton").cpu()
    want = softhist.histc(x.double(), bins, lo, hi, backend="torch")
    assert ((got.double() - want).abs().max() / want.abs().max()).item() < 2e-6


# Options beyond bin-integrated compact kernels: (kernels per axis, membership per axis, normalize_samples).
OPTION_CASES = {
    "cauchy": (["cauchy", "cauchy"], "mass", False),
    "center": (["bspline", "gaussian"], ["center", "mass"], False),
    "normalize": (["epanechnikov", "logistic"], "mass", True),
    "center-normalize-cauchy": (["cauchy", "triangular"], "center", True),
}


@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_options_match_torch(case):
    # 2-D, one axis of equal-width bins and one of explicit learnable edges (samples beyond both
    # ends): the histogram and the gradients in the samples, weights, bandwidths and edges.
    kernel, membership, normalize = OPTION_CASES[case]
    xy, w, edges_y, h = _joint_leaves(30, -0.3, 1.3)

    def fn(xy, w, edges_y, h, backend):
        bins = [torch.linspace(0, 1, 8, dtype=torch.float64, device=DEVICE), edges_y]
        return softhist.histogramdd(
            xy, bins, weight=w, kernel=kernel, bandwidth=h, membership=membership, normalize_samples=normalize, backend=backend,
        )[0]

    def fn_1d(x, h, backend):  # one axis of equal-width bins, a batch of rows, no weights
        return softhist.histc(
            x, 9, 0, 1, kernel=kernel[0], bandwidth=h, membership=membership if isinstance(membership, str) else membership[0],
            normalize_samples=normalize, dim=1, backend=backend,
        )

    assert_backends_agree(fn, xy, w, edges_y, h)
    assert_backends_agree(fn_1d, xy.detach()[..., 0].clone().requires_grad_(), h.detach()[0].clone().requires_grad_())


@pytest.mark.parametrize("membership,kernel", [("center", "cauchy"), ("mass", "epanechnikov")])
def test_gradcheck_normalized_options_through_the_fused_kernels(membership, kernel):
    # The fused backward against finite differences of the fused forward (fast mode: a random
    # projection, which keeps the interpreter's run short).
    x = rand(8, lo=-0.1, hi=1.1).requires_grad_()
    w = rand(8, lo=0, hi=1).requires_grad_()
    edges = torch.tensor([0.0, 0.2, 0.25, 0.6, 1.0], dtype=torch.float64, device=DEVICE, requires_grad=True)
    h = torch.tensor(0.07, dtype=torch.float64, device=DEVICE, requires_grad=True)

    def f(x, w, edges, h):
        return softhist.histogram(
            x, edges, weight=w, bandwidth=h, membership=membership, kernel=kernel, normalize_samples=True, backend="triton",
        )[0]

    assert torch.autograd.gradcheck(f, (x, w, edges, h), fast_mode=True)


def test_normalized_cauchy_window_spans_several_tiles():
    # A Cauchy window is the whole axis: 300 bins take two tiles of cells, which read each
    # sample's 1/S from the once-per-block pass.
    x = rand(2, 12).requires_grad_()
    w = rand(2, 12, lo=0.5, hi=1.5).requires_grad_()
    h = torch.tensor(0.02, dtype=torch.float64, device=DEVICE, requires_grad=True)

    def fn(x, w, h, backend):
        return softhist.histc(x, 300, 0, 1, weight=w, kernel="cauchy", bandwidth=h, normalize_samples=True, dim=1, backend=backend)

    assert_backends_agree(fn, x, w, h)


def test_normalized_samples_that_reach_no_cell_add_nothing():
    # Compact kernel: the sample at 3 reaches no bin (its sum S is 0): it adds nothing and gets a
    # zero, finite gradient; every other sample adds exactly its weight.
    x = torch.tensor([0.3, 3.0, 0.98, -0.02], dtype=torch.float64, device=DEVICE, requires_grad=True)
    w = torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64, device=DEVICE, requires_grad=True)
    edges = torch.tensor([0.0, 0.2, 0.5, 1.0], dtype=torch.float64, device=DEVICE, requires_grad=True)

    def fn(x, w, edges, backend):
        return softhist.histogram(x, edges, weight=w, kernel="bspline", bandwidth=0.1, normalize_samples=True, backend=backend)[0]

    hist = fn(x, w, edges, "triton")
    torch.testing.assert_close(hist.sum(), w.detach()[[0, 2, 3]].sum())
    grads = torch.autograd.grad((hist * torch.arange(1.0, 4.0, dtype=torch.float64, device=DEVICE)).sum(), (x, w, edges))
    assert all(torch.isfinite(g).all() for g in grads) and grads[0][1] == 0 and grads[1][1] == 0
    assert_backends_agree(fn, x, w, edges)


def test_options_deterministic_mode_is_repeatable():
    # Normalized samples' edge gradients have no formula bound: a first pass sizes the fixed point.
    options = dict(bandwidth=0.06, membership="center", normalize_samples=True, kernel="cauchy")
    _assert_deterministic_mode_repeats(rand(40, 2).requires_grad_(), options, 1e-9)


def test_triton_serves_the_options():
    from softhist import _triton_backend
    from softhist._ops import select_backend
    from softhist.kernels import Kernel

    engine = _triton_backend.TRITON_ENGINE
    axis = _plan.Axis(8, 0.1, (0.0, 1.0))
    for kernel, membership, normalize in [("cauchy", "mass", False), ("gaussian", "center", False), ("box", "mass", True)]:
        binning = _plan.Binning(KERNELS[kernel], "soft", (dataclasses.replace(axis, membership=membership),), normalize_samples=normalize)
        assert engine.supports(binning) is None
        assert select_backend(torch.device(DEVICE), "triton", binning) is _triton_backend
    per_bin = _plan.Binning(KERNELS["gaussian"], "soft", (dataclasses.replace(axis, membership="center", per_bin=True),))
    assert "per-bin bandwidths" in engine.supports(per_bin)
    mine = Kernel("mine", KERNELS["cauchy"].cdf, KERNELS["cauchy"].pdf, float("inf"), 1.0, 1.0)
    assert "kernel='mine'" in engine.supports(_plan.Binning(mine, "soft", (axis,)))


def test_normalized_float32_within_2e6_of_float64():
    # A sample whose support barely reaches the range is divided by a tiny sum: these calls
    # compute in float64 whatever the input's dtype, so float32 samples stay within float32 noise.
    x = rand(2, 40, lo=-0.3, hi=1.3)
    w = rand(2, 40, lo=0.5, hi=1.5)
    results = {}
    for dtype, backend in ((torch.float32, "triton"), (torch.float64, "torch")):
        xs, ws = x.to(dtype).requires_grad_(), w.to(dtype).requires_grad_()
        out = softhist.histc(xs, 9, 0, 1, weight=ws, kernel="bspline", bandwidth=0.05, normalize_samples=True, dim=1, backend=backend)
        grads = torch.autograd.grad((out * torch.arange(9.0, device=DEVICE)).sum(), (xs, ws))
        results[dtype] = [out, *grads]
    for got, want in zip(results[torch.float32], results[torch.float64]):
        assert ((got.double() - want).abs().max() / want.abs().max()).item() < 2e-6

"""Joint histograms: histogramdd / histogram2d against numpy and the dense joint reference."""


import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

import softhist
from conftest import run_measuring_peak
from softhist import reference
from softhist._plan import NATIVE_KERNELS
from softhist.kernels import KERNELS

# The kernels every engine has (the Cauchy kernel and user kernels run on the torch engine: test_options.py).
KERNEL_NAMES = sorted(NATIVE_KERNELS)


def _adversarial_2d(dtype):
    """Uniform points plus exact float32/float64 edge ties, the range ends, NaN and inf on each axis."""
    edges = torch.linspace(-1.0, 2.0, 31, dtype=torch.float64)
    ties = torch.cat([edges, edges.to(dtype).double()])
    tie_points = torch.stack([ties, ties.flip(0)], 1)
    spread = torch.rand(3001, 2, dtype=torch.float64) * 3.6 - 1.3
    special = torch.tensor(
        [[float("nan"), 0.5], [0.5, float("inf")], [-1.0, 2.0], [2.0, 2.0], [2.0 + 1e-3, 0.0], [-1.0, -1.0]],
        dtype=torch.float64,
    )
    return torch.cat([spread, tie_points, special]).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bins,range_", [(30, [(-1.0, 2.0), (-1.0, 2.0)]), ([7, 3], [(-1.0, 2.0), (0.1, 0.9)]), ([30, 1], None)])
def test_histogramdd_hard_equals_numpy(dtype, bins, range_):
    x = _adversarial_2d(dtype)
    data = x if range_ is not None else x[torch.isfinite(x).all(1)]  # numpy rejects non-finite data when it picks the range
    hist, edges = softhist.histogramdd(data, bins, range=range_, mode="hard")
    ref, ref_edges = np.histogramdd(data.numpy(), bins, range=range_)
    assert hist.dtype == dtype and all(e.dtype == dtype for e in edges)
    np.testing.assert_array_equal(hist.numpy(), ref.astype(hist.numpy().dtype))
    for e, r in zip(edges, ref_edges):
        np.testing.assert_array_equal(e.numpy(), r.astype(e.numpy().dtype))


def test_histogramdd_hard_weights_density_and_edges_equal_numpy():
    x = _adversarial_2d(torch.float64)
    w = torch.rand(x.shape[0], dtype=torch.float64)
    bins = [torch.tensor([-1.0, -0.2, 0.0, 0.7, 2.0], dtype=torch.float64), 6]
    range_ = [None, (-1.0, 2.0)]
    ours, _ = softhist.histogramdd(x, bins, range=range_, weight=w, mode="hard")
    ref, _ = np.histogramdd(x.numpy(), [bins[0].numpy(), 6], range=range_, weights=w.numpy())
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-12)
    dens, _ = softhist.histogramdd(x, bins, range=range_, density=True, mode="hard")
    ref_dens, _ = np.histogramdd(x.numpy(), [bins[0].numpy(), 6], range=range_, density=True)
    np.testing.assert_array_equal(dens.numpy(), ref_dens)


def test_histogramdd_three_axes_equals_numpy():
    x = torch.rand(5003, 3)
    hist, _ = softhist.histogramdd(x, [4, 5, 6], mode="hard")
    np.testing.assert_array_equal(hist.numpy(), np.histogramdd(x.numpy(), [4, 5, 6])[0].astype(np.float32))


def test_histogram2d_hard_equals_numpy():
    x, y = torch.rand(2, 4001, dtype=torch.float64) * 2 - 0.5
    for bins in (8, [5, 9], torch.tensor([-0.5, 0.0, 0.2, 1.5], dtype=torch.float64)):
        hist, xe, ye = softhist.histogram2d(x, y, bins, mode="hard")
        np_bins = bins.numpy() if isinstance(bins, torch.Tensor) else bins
        ref, rxe, rye = np.histogram2d(x.numpy(), y.numpy(), np_bins)
        np.testing.assert_array_equal(hist.numpy(), ref)
        np.testing.assert_array_equal(xe.numpy(), rxe)
        np.testing.assert_array_equal(ye.numpy(), rye)


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_soft_histogramdd_equals_reference(kernel):
    x = torch.rand(2, 700, 2, dtype=torch.float64) * 1.4 - 0.2
    w = torch.rand(2, 700, dtype=torch.float64)
    edges_y = torch.tensor([0.0, 0.1, 0.5, 0.55, 1.0], dtype=torch.float64)
    ours, _ = softhist.histogramdd(x, [9, edges_y], range=[(0, 1), None], weight=w, kernel=kernel, bandwidth=[0.05, 0.08])
    edges_x = torch.linspace(0, 1, 10, dtype=torch.float64)
    for r in range(2):
        expected = reference.soft_histogramdd(x[r], [edges_x, edges_y], [0.05, 0.08], kernel, w[r])
        torch.testing.assert_close(ours[r], expected, rtol=1e-10, atol=1e-10)


def test_soft_three_axes_and_float32_equal_reference():
    x = torch.rand(900, 3) * 1.2 - 0.1
    ours, _ = softhist.histogramdd(x, [5, 4, 3], range=[(0, 1)] * 3, bandwidth=0.07)
    edges = [torch.linspace(0, 1, b + 1, dtype=torch.float64) for b in (5, 4, 3)]
    expected = reference.soft_histogramdd(x.double(), edges, [0.07] * 3)
    # float32 positions resolve to 2**-23 of the range: a relative 1e-6 of a bandwidth.
    torch.testing.assert_close(ours.double(), expected, rtol=0, atol=1e-5 * expected.max().item())


def test_one_axis_equals_histogram():
    x = torch.rand(3, 2000, dtype=torch.float64)
    dd, (edges,) = softhist.histogramdd(x.unsqueeze(-1), 12, range=[(0, 1)], bandwidth=0.03)
    flat, flat_edges = softhist.histogram(x, 12, range=(0, 1), bandwidth=0.03, dim=1)
    torch.testing.assert_close(dd, flat, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(edges, flat_edges)


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_mass_identity(kernel):
    x = torch.randn(20_001, 2, dtype=torch.float64) * 0.3 + 0.5
    w = torch.rand(20_001, dtype=torch.float64)
    h = (0.04, 0.02)
    hist, _ = softhist.histogramdd(x, [8, 16], range=[(0, 1), (0, 1)], weight=w, kernel=kernel, bandwidth=list(h))
    cdf = KERNELS[kernel].cdf
    inside = [cdf((1 - x[:, d]) / h[d]) - cdf((0 - x[:, d]) / h[d]) for d in range(2)]
    assert hist.sum().item() == pytest.approx((w * inside[0] * inside[1]).sum().item(), rel=1e-10)


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_gradcheck_histogramdd(kernel):
    x = (torch.rand(11, 2, dtype=torch.float64) * 1.4 - 0.2).requires_grad_()
    w = torch.rand(11, dtype=torch.float64, requires_grad=True)
    edges_y = torch.tensor([0.0, 0.3, 0.35, 0.8, 1.0], dtype=torch.float64, requires_grad=True)
    h = torch.tensor([0.1, 0.07], dtype=torch.float64, requires_grad=True)

    def f(x, w, edges_y, h):
        return softhist.histogramdd(x, [3, edges_y], range=[(0, 1), None], weight=w, kernel=kernel, bandwidth=h)[0]

    assert gradcheck(f, (x, w, edges_y, h), eps=1e-6, atol=1e-5)


def test_gradients_equal_reference_autograd():
    x = (torch.rand(2, 300, 2, dtype=torch.float64) * 1.4 - 0.2).requires_grad_()
    w = torch.rand(2, 300, dtype=torch.float64, requires_grad=True)
    ex = torch.tensor([-0.1, 0.2, 0.25, 0.9, 1.1], dtype=torch.float64, requires_grad=True)
    ey = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64, requires_grad=True)
    h = torch.tensor(0.06, dtype=torch.float64, requires_grad=True)  # one bandwidth shared by both axes
    g = torch.randn(2, 4, 2, dtype=torch.float64)
    ours = torch.autograd.grad(softhist.histogramdd(x, [ex, ey], weight=w, bandwidth=h)[0], (x, w, ex, ey, h), g)
    ref_hist = torch.stack([reference.soft_histogramdd(x[r], [ex, ey], [h, h], "gaussian", w[r]) for r in range(2)])
    ref = torch.autograd.grad(ref_hist, (x, w, ex, ey, h), g)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_straight_through_is_exact_forward_soft_backward():
    xy = torch.rand(500, 2, dtype=torch.float64, requires_grad=True)
    st, _ = softhist.histogramdd(xy, 6, range=[(0, 1), (0, 1)], mode="straight_through")
    hard, _ = softhist.histogramdd(xy.detach(), 6, range=[(0, 1), (0, 1)], mode="hard")
    torch.testing.assert_close(st.detach(), hard, rtol=0, atol=0)
    g = torch.randn(6, 6, dtype=torch.float64)
    (st_grad,) = torch.autograd.grad(st, xy, g)
    (soft_grad,) = torch.autograd.grad(softhist.histogramdd(xy, 6, range=[(0, 1), (0, 1)])[0], xy, g)
    torch.testing.assert_close(st_grad, soft_grad)


def test_histogram2d_equals_histogramdd_and_batches():
    x, y = torch.rand(2, 3, 400, dtype=torch.float64)
    hist, _, _ = softhist.histogram2d(x, y, [4, 5], range=[(0, 1), (0, 1)], bandwidth=0.05)
    dd, _ = softhist.histogramdd(torch.stack([x, y], -1), [4, 5], range=[(0, 1), (0, 1)], bandwidth=0.05)
    assert hist.shape == (3, 4, 5)
    torch.testing.assert_close(hist, dd)
    for r in range(3):
        single, _, _ = softhist.histogram2d(x[r], y[r], [4, 5], range=[(0, 1), (0, 1)], bandwidth=0.05)
        torch.testing.assert_close(hist[r], single)


def test_soft_density_integrates_to_one():
    xy = torch.rand(2000, 2, dtype=torch.float64)
    dens, edges = softhist.histogramdd(xy, [5, 7], density=True, bandwidth=0.05)
    volume = edges[0].diff().unsqueeze(1) * edges[1].diff().unsqueeze(0)
    assert (dens * volume).sum().item() == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: softhist.histogramdd(torch.rand(5, 2), [3, 4, 5]), ValueError, r"bins must have one entry per axis \(D = 2\), got 3"),
        (lambda: softhist.histogramdd(torch.rand(5, 2), 3, range=[(0, 1)]), ValueError, r"range must have one entry per axis \(D = 2\), got 1"),
        (lambda: softhist.histogramdd(torch.rand(5, 2), 3, range=[(0, 1), (1, 0)]), ValueError, r"range\[1\]: min must not exceed max, got min=1.0, max=0.0"),
        (lambda: softhist.histogramdd(torch.rand(5, 2), [3, torch.tensor([0.0, 0.0])]), ValueError, r"bins\[1\] must be strictly increasing"),
        (lambda: softhist.histogramdd(torch.rand(5, 2), [3, torch.tensor([0.0, 1.0])], range=[None, (0, 1)]), ValueError, r"range\[1\] must be None when bins\[1\] is an edges tensor"),
        (lambda: softhist.histogramdd(torch.rand(5, 0), 3), ValueError, r"at least one axis \(D >= 1\).*got shape \(5, 0\)"),
        (lambda: softhist.histogramdd(torch.tensor(0.5), 3), ValueError, r"input must have shape \(..., N, D\), got shape \(\)"),
        (lambda: softhist.histogramdd(torch.rand(5, 2), [3, 0]), ValueError, r"bins\[1\] must be a positive integer, got 0"),
        (lambda: softhist.histogramdd(torch.rand(5, 2), 3, weight=torch.rand(5, 2)), ValueError, r"weight must have the same shape as the input without its last dim, \(5,\)"),
        (lambda: softhist.histogramdd(torch.rand(5, 2), 3, bandwidth=[0.1]), ValueError, r"bandwidth must have one value per axis \(2\), got 1"),
        (lambda: softhist.histogramdd(torch.rand(5, 2), 3, bandwidth=[0.1, -1.0]), ValueError, r"bandwidth\[1\] must be positive and finite, got -1.0"),
        (lambda: softhist.histogram2d(torch.rand(5), torch.rand(4)), ValueError, r"x and y must have the same shape, got \(5,\) and \(4,\)"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_forward_and_backward_never_allocate_n_by_cells():
    # 2M 2-D samples x 512 x 512 cells: a dense N x cells float32 tensor would need 2 TiB.
    out = run_measuring_peak(
        """
        torch.manual_seed(0)
        xy = (torch.rand(2_000_000, 2) * 0.8 + 0.1).requires_grad_()
        before = peak_rss()
        hist, _ = softhist.histogramdd(xy, 512, range=[(0, 1), (0, 1)])
        (hist * torch.randn(512, 512)).sum().backward()
        print(peak_rss() - before, float(hist.sum()))
        """
    )
    growth, total = out.split()
    assert 0 < int(growth) < 1 << 30
    assert float(total) == pytest.approx(2_000_000, rel=1e-5)


# --------------------------------------------------------------------------- per-axis kernels and modes

PER_AXIS = [
    (["gaussian", "bspline2"], ["soft", "soft"]),
    (["bspline", "epanechnikov"], ["hard", "soft"]),
    (["bspline2", "logistic"], ["soft", "hard"]),
    (["triangular", "box"], ["straight_through", "hard"]),
]


@pytest.mark.parametrize("kernels,modes", PER_AXIS, ids=lambda v: "-".join(v))
def test_per_axis_kernels_and_modes_equal_reference(kernels, modes):
    x = (torch.rand(2, 301, 2, dtype=torch.float64) * 1.4 - 0.2).requires_grad_()  # some samples out of range
    w = (torch.rand(2, 301, dtype=torch.float64) + 0.5).requires_grad_()
    edges = [torch.linspace(0, 1, 8, dtype=torch.float64), torch.tensor([0.0, 0.1, 0.35, 0.5, 0.9, 1.0], dtype=torch.float64)]
    edges[1].requires_grad_()
    h = torch.tensor([0.06, 0.04], dtype=torch.float64, requires_grad=True)
    hist, _ = softhist.histogramdd(x, edges, weight=w, kernel=kernels, mode=modes, bandwidth=h)
    hard = [m == "hard" for m in modes]
    forward_hard = [m != "soft" for m in modes]  # straight-through counts hard forward
    expected = torch.stack([
        reference.soft_histogramdd(x[r], edges, h, kernels, w[r], hard=forward_hard) for r in range(2)
    ])
    torch.testing.assert_close(hist, expected, rtol=1e-12, atol=1e-12)
    # Gradients: those of the soft axes' formula, with hard axes as indicators.
    grad_out = torch.randn_like(hist)
    ours = torch.autograd.grad(hist, [x, w, h, edges[1]], grad_out)
    soft_ref = torch.stack([reference.soft_histogramdd(x[r], edges, h, kernels, w[r], hard=hard) for r in range(2)])
    theirs = torch.autograd.grad(soft_ref, [x, w, h, edges[1]], grad_out, allow_unused=True)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, torch.zeros_like(a) if b is None else b, rtol=1e-10, atol=1e-12)
    for d in range(2):
        if hard[d]:
            assert (ours[0][..., d] == 0).all() and ours[2][d] == 0


@pytest.mark.parametrize("kernels,modes", PER_AXIS[:3], ids=lambda v: "-".join(v))
def test_per_axis_gradcheck(kernels, modes):
    x = (torch.rand(40, 2, dtype=torch.float64) * 1.2 - 0.1).requires_grad_()
    w = (torch.rand(40, dtype=torch.float64) + 0.5).requires_grad_()
    e = torch.tensor([0.0, 0.2, 0.45, 0.7, 1.0], dtype=torch.float64, requires_grad=True)
    h = torch.tensor([0.07, 0.09], dtype=torch.float64, requires_grad=True)

    def fn(x, w, e, h):
        return softhist.histogramdd(x, [e, 6], range=[None, (0, 1)], weight=w, kernel=kernels, mode=modes, bandwidth=h)[0]

    assert gradcheck(fn, (x, w, e, h))


def test_per_axis_mutual_information_differentiates_the_soft_axis_only():
    x = torch.rand(500, dtype=torch.float64, requires_grad=True)
    y = (x.detach() ** 2).requires_grad_()
    mi = softhist.mutual_information(x, y, 12, range=(0, 1), kernel=["bspline2", "box"], mode=["soft", "hard"])
    mi.backward()
    assert x.grad.abs().sum() > 0 and (y.grad == 0).all()
    both_hard = softhist.mutual_information(x.detach(), y.detach(), 12, range=(0, 1), mode=["hard", "hard"])
    assert both_hard.item() == softhist.mutual_information(x.detach(), y.detach(), 12, range=(0, 1), mode="hard").item()


def test_per_axis_hard_axis_ignores_its_kernel_and_bandwidth():
    xy = torch.rand(400, 2, dtype=torch.float64)
    a, _ = softhist.histogramdd(xy, 5, range=[(0, 1)] * 2, kernel=["gaussian", "box"], mode=["soft", "hard"], bandwidth=[0.1, 3.0])
    b, _ = softhist.histogramdd(xy, 5, range=[(0, 1)] * 2, kernel=["gaussian", "bspline"], mode=["soft", "hard"], bandwidth=[0.1, 0.01])
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_binning_holds_one_kernel_and_one_hard_flag_per_axis():
    from softhist._torch_backend import Axis, Binning

    axes = (Axis(4, 0.1, (0.0, 1.0)), Axis(3, 0.2, (0.0, 1.0)))
    shared = Binning(KERNELS["gaussian"], "soft", axes)
    assert shared.kernels == (KERNELS["gaussian"],) * 2 and shared.hard_axes == (False, False)
    assert shared.kernel is KERNELS["gaussian"]
    mixed = Binning((KERNELS["box"], KERNELS["bspline2"]), "soft", axes, "edges", (True, False))
    with pytest.raises(ValueError, match=r"the axes use different kernels: \['box', 'bspline2'\]"):
        mixed.kernel
    with pytest.raises(ValueError, match=r"one kernel and one hard flag per axis \(2\), got 1 and 2"):
        Binning((KERNELS["box"],), "soft", axes, "edges", (True, False))

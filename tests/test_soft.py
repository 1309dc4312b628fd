"""Soft mode: the engine against the dense reference, and the invariants of DESIGN.md section 5."""

import math

import pytest
import torch

import softhist
from softhist import _plan, _torch_backend, reference
from softhist._plan import NATIVE_KERNELS
from softhist.kernels import KERNELS

from conftest import reference_rows, run_measuring_peak

# The kernels every engine has (the Cauchy kernel and user kernels run on the torch engine: test_options.py).
KERNEL_NAMES = sorted(NATIVE_KERNELS)


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
@pytest.mark.parametrize("bandwidth", [0.013, 0.05, 0.4])
def test_histc_float64_equals_reference(kernel, bandwidth):
    x = torch.rand(3, 1001, dtype=torch.float64) * 1.4 - 0.2
    w = torch.rand(3, 1001, dtype=torch.float64)
    ours = softhist.histc(x, 23, 0, 1, kernel=kernel, bandwidth=bandwidth, weight=w, dim=1)
    edges = torch.linspace(0, 1, 24, dtype=torch.float64)
    torch.testing.assert_close(ours, reference_rows(x, edges, bandwidth, kernel, w), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_histogram_non_uniform_edges_equals_reference(kernel):
    x = torch.randn(2001, dtype=torch.float64)
    edges = torch.tensor([-3.0, -1.0, -0.9, -0.2, 0.0, 0.05, 0.5, 2.0, 2.5], dtype=torch.float64)
    ours, out_edges = softhist.histogram(x, edges, kernel=kernel, bandwidth=0.1)
    assert out_edges is not edges and torch.equal(out_edges, edges)  # a new tensor, as numpy and torch return
    torch.testing.assert_close(ours, reference.soft_histogram(x, edges, 0.1, kernel), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kernel", [k for k in KERNEL_NAMES if k != "box"])
@pytest.mark.parametrize("bandwidth_in_bins", [0.25, 0.5, 4.0])
def test_float32_table_strategy_equals_reference(kernel, bandwidth_in_bins):
    bins, n = 8, 80_000
    x = torch.rand(n) * 1.2 - 0.1
    w = torch.rand(n)
    bandwidth = bandwidth_in_bins / bins
    binning = _plan.Binning(KERNELS[kernel], "soft", (_plan.Axis(bins, bandwidth, (0.0, 1.0)),))
    assert _torch_backend._plan_table(x.view(1, -1, 1), binning) is not None  # this size takes the table path
    ours = softhist.histc(x, bins, 0, 1, kernel=kernel, bandwidth=bandwidth, weight=w)
    expected = reference.soft_histogram(x.double(), torch.linspace(0, 1, bins + 1, dtype=torch.float64), bandwidth, kernel, w.double())
    # float32 accumulation of n terms: a few ulps of the total.
    torch.testing.assert_close(ours.double(), expected, rtol=0, atol=2e-6 * expected.sum().item())


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_float32_window_strategy_equals_reference(kernel):
    x = torch.rand(4, 999) * 1.2 - 0.1
    ours = softhist.histc(x, 300, 0, 1, kernel=kernel, dim=1)  # too few samples for a table
    expected = reference_rows(x.double(), torch.linspace(0, 1, 301, dtype=torch.float64), 0.5 / 300, kernel)
    # float32 resolves a position to 2**-23 * 300 bin widths, i.e. *2 kernel std: scale by the largest count.
    resolution = 2.0**-23 * 300 * 2
    torch.testing.assert_close(ours.double(), expected, rtol=0, atol=resolution * expected.max().item())


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_mass_identity(kernel, dtype):
    x = (torch.randn(50_001, dtype=torch.float64) * 0.3 + 0.5).to(dtype)
    w = torch.rand_like(x)
    h = 0.03
    hist = softhist.histc(x, 16, 0, 1, kernel=kernel, bandwidth=h, weight=w)
    cdf = KERNELS[kernel].cdf
    x64, w64 = x.double(), w.double()
    expected = (w64 * (cdf((1 - x64) / h) - cdf((0 - x64) / h))).sum()
    tol = 1e-9 if dtype == torch.float64 else 1e-6
    assert hist.double().sum().item() == pytest.approx(expected.item(), rel=tol)
    assert hist.double().sum().item() < w64.sum().item()  # mass spills past the range ends


def test_inner_samples_conserve_mass_exactly():
    x = torch.rand(10_000, dtype=torch.float64) * 0.5 + 0.25
    for kernel in KERNEL_NAMES:
        assert softhist.histc(x, 10, 0, 1, kernel=kernel, bandwidth=0.02).sum().item() == pytest.approx(10_000, rel=1e-12)


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_soft_tends_to_hard_as_bandwidth_shrinks(kernel):
    bins = 20
    x = ((torch.randint(0, bins, (5000,)) + 0.05 + 0.9 * torch.rand(5000)) / bins).double()  # away from edges
    hard = softhist.histc(x, bins, 0, 1, mode="hard")
    errors = [(softhist.histc(x, bins, 0, 1, kernel=kernel, bandwidth=h) - hard).abs().max().item() for h in (0.01, 1e-3, 1e-4)]
    assert errors[-1] < 1e-9
    assert errors[0] > errors[-1]


@pytest.mark.parametrize("dim", [0, 1, (0, 2), -1])
def test_batching_with_dim_equals_per_row(dim):
    x = torch.rand(4, 5, 63, dtype=torch.float64)
    out = softhist.histc(x, 7, 0, 1, bandwidth=0.05, dim=dim)
    dims = (dim,) if isinstance(dim, int) else dim
    dims = tuple(d % 3 for d in dims)
    batch = [d for d in range(3) if d not in dims]
    rows = x.permute(batch + list(dims)).reshape(math.prod(x.shape[d] for d in batch), -1)
    expected = reference_rows(rows, torch.linspace(0, 1, 8, dtype=torch.float64), 0.05, "gaussian")
    assert out.shape == tuple(x.shape[d] for d in batch) + (7,)
    torch.testing.assert_close(out.reshape(-1, 7), expected, rtol=1e-10, atol=1e-10)


def test_non_contiguous_input_and_weight():
    x = torch.rand(50, 40, dtype=torch.float64).t()[:, ::2]
    w = torch.rand(50, 40, dtype=torch.float64).t()[:, ::2]
    assert not x.is_contiguous()
    torch.testing.assert_close(
        softhist.histc(x, 9, 0, 1, weight=w, dim=1), softhist.histc(x.contiguous(), 9, 0, 1, weight=w.contiguous(), dim=1)
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_histograms_come_back_in_float32(dtype):
    # Half-precision samples are binned in float32, and the histogram stays there: a float16 bin
    # would overflow past 65504 and a bfloat16 one count by 2 past 256.
    x = (torch.rand(70_000) * 1.2 - 0.1).to(dtype)
    for n in (70_000, 500):  # table and window strategies
        half = softhist.histc(x[:n], 8, 0, 1)
        assert half.dtype == torch.float32
        torch.testing.assert_close(half, softhist.histc(x[:n].float(), 8, 0, 1), rtol=1e-6, atol=1e-6)
    many = torch.full((100_000,), 0.5, dtype=dtype)
    for mode in ("soft", "straight_through", ["straight_through", "hard"], ["hard", "straight_through"]):
        if isinstance(mode, list):
            hist, _ = softhist.histogramdd(torch.stack([many, many], -1), 2, range=[(0, 1), (0, 1)], mode=mode, bandwidth=0.05)
        else:
            hist = softhist.histc(many, 2, 0, 1, mode=mode, bandwidth=0.05)
        assert hist.dtype == torch.float32 and torch.isfinite(hist).all(), mode
        torch.testing.assert_close(hist.sum(), torch.tensor(100_000.0))


def test_non_finite_samples_are_ignored():
    x = torch.rand(500, dtype=torch.float64)
    dirty = torch.cat([x, torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=torch.float64)])
    for kernel in KERNEL_NAMES:
        torch.testing.assert_close(softhist.histc(dirty, 10, 0, 1, kernel=kernel), softhist.histc(x, 10, 0, 1, kernel=kernel))


def test_empty_input_gives_zeros():
    x = torch.empty(0, requires_grad=True)
    out = softhist.histc(x, 5, 0, 1)
    torch.testing.assert_close(out, torch.zeros(5))
    out.sum().backward()
    assert x.grad.shape == (0,)
    hist, _ = softhist.histogram(torch.empty(3, 0), 4, range=(0, 1), dim=1)
    torch.testing.assert_close(hist, torch.zeros(3, 4))


def test_soft_density_integrates_to_one():
    x = torch.rand(3000, dtype=torch.float64)
    edges = torch.tensor([-0.5, 0.1, 0.2, 0.7, 1.5], dtype=torch.float64)
    dens, _ = softhist.histogram(x, edges, density=True, bandwidth=0.05)
    assert (dens * edges.diff()).sum().item() == pytest.approx(1.0, rel=1e-12)


def test_tony_y_soft_histogram_is_the_logistic_kernel():
    x = torch.rand(4000, dtype=torch.float64) * 1.4 - 0.2
    for slope in (20.0, 100.0, 600.0):
        forum = reference.tony_y_soft_histogram(x, 30, 0.0, 1.0, slope)
        ours = softhist.histc(x, 30, 0, 1, kernel="logistic", bandwidth=reference.slope_to_bandwidth(slope))
        # Identical up to the logistic tail cut at T = 9.2 (2**-24 per sample and edge).
        torch.testing.assert_close(ours, forum, rtol=0, atol=4000 * 2 * 2.0**-24)
        per_edge = reference.sigmoid_per_edge_histogram(x, 30, 0.0, 1.0, slope)
        torch.testing.assert_close(per_edge, forum, rtol=1e-10, atol=1e-9)


def test_gaussian_times_delta_is_the_midpoint_rule():
    x = torch.rand(4000, dtype=torch.float64) * 0.6 + 0.2
    errors = []
    for sigma_in_bins in (1.0, 2.0, 4.0):
        sigma = sigma_in_bins / 30
        approx = reference.gaussian_times_delta_histogram(x, 30, 0.0, 1.0, sigma)
        exact = softhist.histc(x, 30, 0, 1, kernel="gaussian", bandwidth=sigma)
        errors.append((approx - exact).abs().max().item() / exact.max().item())
    # The midpoint rule's error falls like (delta / sigma)^2: ~4x per doubling of sigma.
    assert errors[0] > 3 * errors[1] > 9 * errors[2]
    assert errors[2] < 1e-3


@pytest.mark.parametrize("kernel", ["gaussian", "box"])  # table and window strategies
def test_forward_and_backward_never_allocate_n_by_bins(kernel):
    # 4M samples x 4096 bins: a dense N x B float32 tensor would need 64 GiB.
    out = run_measuring_peak(
        """
        torch.manual_seed(0)
        x = torch.rand(4_000_000, requires_grad=True)
        w = torch.rand(4_000_000, requires_grad=True)
        before = peak_rss()
        hist = softhist.histc(x, 4096, 0, 1, weight=w, kernel=KERNEL)
        (hist * torch.linspace(-1, 1, 4096)).sum().backward()
        print(peak_rss() - before, float(hist.sum()), float(w.sum()))
        """.replace("KERNEL", repr(kernel))
    )
    growth, total, weight_total = out.split()
    assert 0 < int(growth) < 1 << 30
    assert float(total) == pytest.approx(float(weight_total), rel=2e-3)  # only the range ends lose mass

"""Gradients: gradcheck in float64 for every kernel and every differentiable argument,
and the fast float32 strategy against the dense reference's autograd."""

import pytest
import torch
from torch.autograd import gradcheck

import softhist
from softhist import _plan, _torch_backend, reference
from softhist._plan import NATIVE_KERNELS
from softhist.kernels import KERNELS

# The kernels every engine has (the Cauchy kernel and user kernels run on the torch engine: test_options.py).
KERNEL_NAMES = sorted(NATIVE_KERNELS)


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_gradcheck_histc_input_weight_bandwidth(kernel):
    x = (torch.rand(2, 13, dtype=torch.float64) * 1.4 - 0.2).requires_grad_()
    w = torch.rand(2, 13, dtype=torch.float64, requires_grad=True)
    h = torch.tensor(0.09, dtype=torch.float64, requires_grad=True)

    def f(x, w, h):
        return softhist.histc(x, 6, 0, 1, kernel=kernel, bandwidth=h, weight=w, dim=1)

    assert gradcheck(f, (x, w, h), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_gradcheck_histogram_edges(kernel):
    x = (torch.rand(17, dtype=torch.float64) * 1.4 - 0.2).requires_grad_()
    edges = torch.tensor([0.0, 0.13, 0.2, 0.55, 0.6, 1.0], dtype=torch.float64, requires_grad=True)
    h = torch.tensor(0.07, dtype=torch.float64, requires_grad=True)

    def f(x, edges, h):
        return softhist.histogram(x, edges, kernel=kernel, bandwidth=h)[0]

    assert gradcheck(f, (x, edges, h), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_all_gradients_equal_reference_autograd(kernel):
    x = (torch.rand(301, dtype=torch.float64) * 1.4 - 0.2).requires_grad_()
    w = torch.rand(301, dtype=torch.float64, requires_grad=True)
    edges = torch.tensor([-0.1, 0.0, 0.3, 0.31, 0.5, 0.9, 1.1], dtype=torch.float64, requires_grad=True)
    h = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    g = torch.randn(6, dtype=torch.float64)
    ours = torch.autograd.grad(softhist.histogram(x, edges, weight=w, kernel=kernel, bandwidth=h)[0], (x, w, edges, h), g)
    ref = torch.autograd.grad(reference.soft_histogram(x, edges, h, kernel, w), (x, w, edges, h), g)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kernel", [k for k in KERNEL_NAMES if k != "box"])
def test_float32_table_gradients_equal_reference(kernel):
    bins, n = 8, 80_000
    x = (torch.rand(n) * 1.2 - 0.1).requires_grad_()
    w = torch.rand(n, requires_grad=True)
    h = torch.tensor(0.5 / bins, requires_grad=True)
    binning = _plan.Binning(KERNELS[kernel], "soft", (_plan.Axis(bins, h.item(), (0.0, 1.0)),))
    assert _torch_backend._plan_table(x.detach().view(1, -1, 1), binning) is not None
    g = torch.randn(bins)
    ours = torch.autograd.grad(softhist.histc(x, bins, 0, 1, kernel=kernel, bandwidth=h, weight=w), (x, w, h), g)
    x64, w64, h64 = (t.detach().double().requires_grad_() for t in (x, w, h))
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    ref = torch.autograd.grad(reference.soft_histogram(x64, edges, h64, kernel, w64), (x64, w64, h64), g.double())
    # Per-sample gradients: float32 resolution of the largest; the bandwidth's sums n terms.
    for a, b in zip(ours[:2], ref[:2]):
        torch.testing.assert_close(a.double(), b, rtol=0, atol=1e-5 * b.abs().max().item())
    torch.testing.assert_close(ours[2].double(), ref[2], rtol=1e-5, atol=0)


def test_batched_gradients_match_per_row():
    x = torch.rand(3, 400, dtype=torch.float64, requires_grad=True)
    h = torch.tensor(0.04, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, 10, dtype=torch.float64)
    gx, gh = torch.autograd.grad(softhist.histc(x, 10, 0, 1, bandwidth=h, dim=1), (x, h), g)
    for r in range(3):
        rx, rh = torch.autograd.grad(softhist.histc(x[r], 10, 0, 1, bandwidth=h), (x, h), g[r])
        torch.testing.assert_close(gx[r], rx[r])
    assert gh.shape == ()


def test_half_precision_gradients_follow_input_dtype():
    x = torch.rand(1000, dtype=torch.bfloat16, requires_grad=True)
    softhist.histc(x, 5, 0, 1).pow(2).sum().backward()
    assert x.grad.dtype == torch.bfloat16
    x32 = x.detach().float().requires_grad_()
    softhist.histc(x32, 5, 0, 1).pow(2).sum().backward()
    torch.testing.assert_close(x.grad.float(), x32.grad, rtol=2e-2, atol=2e-2 * x32.grad.abs().max().item())


def test_gradient_of_samples_outside_support_is_zero():
    x = torch.tensor([-5.0, 0.4, 7.0, float("nan")], dtype=torch.float64, requires_grad=True)
    softhist.histc(x, 4, 0, 1, bandwidth=0.1).pow(2).sum().backward()
    assert x.grad[0].item() == 0 and x.grad[2].item() == 0 and x.grad[3].item() == 0
    assert x.grad[1].item() != 0


@pytest.mark.parametrize("dims", [1, 2])
def test_non_finite_samples_get_zero_weight_gradients(dims):
    # Ignored samples: the histogram does not depend on their weights.
    x = torch.tensor([0.3, float("nan"), 0.5, float("inf")], dtype=torch.float64).unsqueeze(-1).expand(4, dims)
    w = torch.ones(4, dtype=torch.float64, requires_grad=True)
    hist = softhist.histogramdd(x, 4, range=[(0, 1)] * dims, weight=w, bandwidth=0.1)[0]
    (hist * torch.arange(1.0, hist.numel() + 1, dtype=torch.float64).view(hist.shape)).sum().backward()
    assert w.grad[1].item() == 0 and w.grad[3].item() == 0
    assert w.grad[0].item() != 0 and w.grad[2].item() != 0


def test_data_range_is_not_differentiated():
    # range=None and histc's min == max take the range from the data; gradients treat it as fixed.
    x = torch.rand(500, dtype=torch.float64, requires_grad=True)
    lo, hi = x.min().item(), x.max().item()
    g = torch.randn(7, dtype=torch.float64)
    (auto,) = torch.autograd.grad(softhist.histogram(x, 7)[0], x, g)
    (fixed,) = torch.autograd.grad(softhist.histogram(x, 7, range=(lo, hi))[0], x, g)
    torch.testing.assert_close(auto, fixed)
    (auto,) = torch.autograd.grad(softhist.histc(x, 7), x, g)
    (fixed,) = torch.autograd.grad(softhist.histc(x, 7, lo, hi), x, g)
    torch.testing.assert_close(auto, fixed)
    dd = torch.rand(300, 2, dtype=torch.float64, requires_grad=True)
    hist, _ = softhist.histogramdd(dd, 4)
    hist.sum().backward()
    assert torch.isfinite(dd.grad).all()

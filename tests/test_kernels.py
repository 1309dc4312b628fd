import math

import pytest
import torch

import softhist
from softhist.kernels import KERNELS, get_kernel

# The unit-variance kernels with a support (cut or compact); the Cauchy kernel, with neither, is
# checked in test_options.py.
NAMES = sorted(name for name, k in KERNELS.items() if math.isfinite(k.support))


@pytest.mark.parametrize("name", NAMES)
def test_unit_variance_and_mass(name):
    k = KERNELS[name]
    z = torch.linspace(-k.support - 1, k.support + 1, 400001, dtype=torch.float64)
    dz = z[1] - z[0]
    cdf = k.cdf(z)
    assert cdf[0].item() == 0.0 and cdf[-1].item() == 1.0
    torch.testing.assert_close(cdf + cdf.flip(0), torch.ones_like(cdf), rtol=0, atol=1e-12)  # symmetric
    # E[z^2] = 2 * int_0^inf 2 z (1 - F(z)) dz for a symmetric density; smooth even for the box.
    positive = z >= 0
    variance = 2 * torch.trapezoid(2 * z[positive] * (1 - cdf[positive]), dx=dz).item()
    # The Gaussian and logistic tails beyond their cut carry ~1e-5 of the variance.
    assert variance == pytest.approx(1.0, abs=2e-5)


@pytest.mark.parametrize("name", NAMES)
def test_pdf_is_cdf_derivative(name):
    k = KERNELS[name]
    z = torch.linspace(-k.support * 0.99, k.support * 0.99, 1001, dtype=torch.float64).requires_grad_()
    (grad,) = torch.autograd.grad(k.cdf(z).sum(), z)
    away_from_kinks = (z.detach().abs() > 1e-3)
    torch.testing.assert_close(grad[away_from_kinks], k.pdf(z.detach())[away_from_kinks], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_cdf_is_exactly_zero_and_one_beyond_support(name):
    k = KERNELS[name]
    t = k.support
    outside = torch.tensor([-1e30, -t - 1, -t, t, t + 1, 1e30], dtype=torch.float64)
    assert k.cdf(outside).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    assert k.pdf(outside).abs().max().item() == 0.0


@pytest.mark.parametrize("name", ["gaussian", "logistic"])
def test_truncated_tail_is_below_float32_resolution(name):
    k = KERNELS[name]
    z = torch.tensor(-k.support + 1e-9, dtype=torch.float64)
    assert 0 < k.cdf(z).item() <= 2.0**-24


@pytest.mark.parametrize("name", NAMES)
def test_pdf_slope_bound(name):
    k = KERNELS[name]
    if not math.isfinite(k.pdf_slope):
        pytest.skip("box density jumps; it has no slope bound")
    z = torch.linspace(-k.support, k.support, 200001, dtype=torch.float64)
    slope = (k.pdf(z).diff() / (z[1] - z[0])).abs().max().item()
    assert slope <= k.pdf_slope * (1 + 1e-3)
    assert slope >= k.pdf_slope * 0.99  # the bound is tight


@pytest.mark.parametrize("name", NAMES)
def test_pdf_curvature_bound(name):
    k = KERNELS[name]
    if not math.isfinite(k.pdf_curvature):
        pytest.skip("this density has a kink; it has no curvature bound")
    z = torch.linspace(-k.support * 0.999, k.support * 0.999, 200001, dtype=torch.float64)
    dz = z[1] - z[0]
    curvature = (k.pdf(z).diff().diff() / dz**2).abs().max().item()
    assert k.pdf_curvature * 0.99 <= curvature <= k.pdf_curvature * (1 + 1e-3)


def test_unknown_kernel_lists_valid_ones():
    with pytest.raises(ValueError, match="bspline.*got 'laplace'"):
        get_kernel("laplace")


def test_bspline_aliases_name_the_orders():
    assert [get_kernel(f"bspline{n}").name for n in range(4)] == ["box", "triangular", "bspline2", "bspline"]


def _unit_bspline(order: int, t: torch.Tensor) -> torch.Tensor:
    """The order-n B-spline with unit knot spacing, by its closed forms."""
    a = t.abs()
    if order == 1:
        return (1 - a).clamp_min(0)
    if order == 2:
        return torch.where(a < 0.5, 0.75 - a**2, 0.5 * (1.5 - a).clamp_min(0) ** 2)
    return torch.where(a < 1, 2 / 3 - a**2 + a**3 / 2, (2 - a).clamp_min(0) ** 3 / 6)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_point_evaluated_bspline_is_the_lower_order_kernel_binned(order):
    # beta_n(k - x) at bin centers k, one bin apart = the mass of the order-(n-1) B-spline
    # kernel (knots one bin apart, std sqrt(n / 12)) over bin [k - 1/2, k + 1/2).
    lower = get_kernel(f"bspline{order - 1}")
    std = math.sqrt(order / 12)
    x = torch.linspace(-3.0, 3.0, 601, dtype=torch.float64)
    k = torch.arange(-6, 7, dtype=torch.float64)
    point = _unit_bspline(order, k[None] - x[:, None])
    binned = lower.cdf((k[None] + 0.5 - x[:, None]) / std) - lower.cdf((k[None] - 0.5 - x[:, None]) / std)
    torch.testing.assert_close(binned, point, rtol=0, atol=1e-14)


def test_point_evaluated_order_zero_is_hard_binning():
    x = torch.tensor([-0.3, 0.2, 1.7, 2.49])
    hist, _ = softhist.histogramdd(x[:, None], [torch.arange(-0.5, 3.0)], mode="hard")  # bins centered at 0, 1, 2
    nearest = torch.bincount(torch.round(x).long(), minlength=3).double()
    torch.testing.assert_close(hist.double(), nearest)

"""The kernel table: one entry per smoothing kernel.

Every kernel is a probability density standardized to **unit variance**, so a
bandwidth ``h`` is the kernel's standard deviation in data units whatever the
kernel. A sample ``x`` puts mass ``F((e_{k+1} - x)/h) - F((e_k - x)/h)`` into
bin ``[e_k, e_{k+1})``, where ``F`` is the kernel's CDF (see ``DESIGN.md``).

Each entry holds:

* ``cdf(z)`` and ``pdf(z)`` for ``z`` in standard-deviation units;
* ``support``: ``T`` such that ``F(z) = 0`` for ``z <= -T`` and ``1`` for
  ``z >= T``. Compact kernels are exact there. The Gaussian and logistic tails
  are cut where they fall below float32 resolution, ``F(-T) <= 2**-24``
  (Gaussian ``T = 5.3``: ``F(-T) = 5.8e-8``; logistic ``T = 9.2``:
  ``F(-T) = 5.7e-8``), and ``F`` is clamped to exactly 0 or 1 beyond, so mass
  is conserved exactly;
* ``pdf_slope``: ``max |f'(z)|``, which bounds the error of interpolating bin
  masses on a sub-bin grid; ``inf`` where ``f`` jumps (the box kernel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Literal

import torch
from torch import Tensor

__all__ = ["Kernel", "KERNELS", "KernelName", "get_kernel"]

KernelName = Literal["gaussian", "logistic", "box", "triangular", "epanechnikov", "bspline"]


@dataclass(frozen=True)
class Kernel:
    """A unit-variance smoothing kernel: CDF, density, support and smoothness."""

    name: str
    cdf: Callable[[Tensor], Tensor]
    pdf: Callable[[Tensor], Tensor]
    support: float
    pdf_slope: float


def _truncated(cdf: Callable[[Tensor], Tensor], pdf: Callable[[Tensor], Tensor], support: float):
    """Clamp an infinite-support kernel to exactly 0/1 beyond ``±support``."""

    def cut_cdf(z: Tensor) -> Tensor:
        inside = cdf(z)
        return torch.where(z <= -support, 0.0, torch.where(z >= support, 1.0, inside))

    def cut_pdf(z: Tensor) -> Tensor:
        return torch.where(z.abs() >= support, 0.0, pdf(z))

    return cut_cdf, cut_pdf


# Gaussian: F = Phi.
_SQRT1_2 = 1.0 / math.sqrt(2.0)
_GAUSS_NORM = 1.0 / math.sqrt(2.0 * math.pi)
_gaussian_cdf, _gaussian_pdf = _truncated(
    lambda z: 0.5 * torch.special.erfc(-z * _SQRT1_2),
    lambda z: _GAUSS_NORM * torch.exp(-0.5 * z * z),
    5.3,
)

# Logistic with unit variance: scale s = sqrt(3)/pi, F = sigmoid(z/s).
_LOGISTIC_SCALE = math.sqrt(3.0) / math.pi


def _logistic_pdf(z: Tensor) -> Tensor:
    p = torch.sigmoid(z / _LOGISTIC_SCALE)
    return p * (1.0 - p) / _LOGISTIC_SCALE


_logistic_cdf, _logistic_pdf = _truncated(lambda z: torch.sigmoid(z / _LOGISTIC_SCALE), _logistic_pdf, 9.2)

# Box (uniform) on [-a, a], a = sqrt(3).
_BOX_A = math.sqrt(3.0)


def _box_cdf(z: Tensor) -> Tensor:
    return ((z + _BOX_A) / (2.0 * _BOX_A)).clamp(0.0, 1.0)


def _box_pdf(z: Tensor) -> Tensor:
    return (z.abs() < _BOX_A).to(z.dtype) * (0.5 / _BOX_A)


# Triangular on [-a, a], a = sqrt(6).
_TRI_A = math.sqrt(6.0)


def _triangular_cdf(z: Tensor) -> Tensor:
    t = (z / _TRI_A).clamp(-1.0, 1.0)
    # 1/2 + t - t|t|/2 integrates the density (1 - |t|) over [-1, t].
    return 0.5 + t - 0.5 * t * t.abs()


def _triangular_pdf(z: Tensor) -> Tensor:
    return (1.0 - (z / _TRI_A).abs()).clamp_min(0.0) / _TRI_A


# Epanechnikov on [-a, a], a = sqrt(5).
_EPA_A = math.sqrt(5.0)


def _epanechnikov_cdf(z: Tensor) -> Tensor:
    t = (z / _EPA_A).clamp(-1.0, 1.0)
    return 0.5 + 0.75 * t - 0.25 * t * t * t


def _epanechnikov_pdf(z: Tensor) -> Tensor:
    t = z / _EPA_A
    return (0.75 / _EPA_A) * (1.0 - t * t).clamp_min(0.0)


# Cubic B-spline with knot spacing b = sqrt(3) (variance of four unit boxes: 1/3 knots^2).
_BSP_B = math.sqrt(3.0)


def _bspline_cdf(z: Tensor) -> Tensor:
    a = (z / _BSP_B).abs().clamp(max=2.0)
    inner = a * (2.0 / 3.0 - a * a / 3.0 + a * a * a / 8.0)  # integral of the spline over [0, a], a < 1
    outer = 0.5 - (2.0 - a) ** 4 / 24.0  # same, 1 <= a <= 2
    half = torch.where(a < 1.0, inner, outer)
    return 0.5 + torch.sign(z) * half


def _bspline_pdf(z: Tensor) -> Tensor:
    a = (z / _BSP_B).abs()
    inner = 2.0 / 3.0 - a * a + 0.5 * a * a * a
    outer = (2.0 - a).clamp_min(0.0) ** 3 / 6.0
    return torch.where(a < 1.0, inner, outer) / _BSP_B


KERNELS: Dict[str, Kernel] = {
    k.name: k
    for k in (
        Kernel("gaussian", _gaussian_cdf, _gaussian_pdf, 5.3, _GAUSS_NORM * math.exp(-0.5)),
        Kernel("logistic", _logistic_cdf, _logistic_pdf, 9.2, 1.0 / (6.0 * math.sqrt(3.0)) / _LOGISTIC_SCALE**2),
        Kernel("box", _box_cdf, _box_pdf, _BOX_A, math.inf),
        Kernel("triangular", _triangular_cdf, _triangular_pdf, _TRI_A, 1.0 / _TRI_A**2),
        Kernel("epanechnikov", _epanechnikov_cdf, _epanechnikov_pdf, _EPA_A, 1.5 / _EPA_A**2),
        Kernel("bspline", _bspline_cdf, _bspline_pdf, 2.0 * _BSP_B, (2.0 / 3.0) / _BSP_B**2),
    )
}


def get_kernel(name: str) -> Kernel:
    """Look a kernel up by name, with an error that lists the valid names."""
    if not isinstance(name, str) or name not in KERNELS:
        raise ValueError(f"kernel must be one of {sorted(KERNELS)}, got {name!r}")
    return KERNELS[name]

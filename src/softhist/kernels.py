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
  ``F(-T) = 5.7e-8``) and renormalized, so ``F`` is exactly 0 or 1 beyond the
  cut, mass is conserved exactly and ``F`` differs from the uncut CDF by less
  than ``2**-24`` everywhere;
* ``pdf_slope``: ``max |f'(z)|``, which bounds the error of interpolating bin
  masses on a sub-bin grid; ``inf`` where ``f`` jumps (the box kernel);
* ``pdf_curvature``: ``max |f''(z)|``, the same bound for interpolating their
  gradients; ``inf`` where ``f'`` jumps (box, triangular, Epanechnikov).
"""

from __future__ import annotations

import functools
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
    pdf_curvature: float


def _truncated(odd: Callable[[Tensor], Tensor], odd_slope: Callable[[Tensor], Tensor], support: float):
    """A kernel with CDF ``(1 + g(z)) / 2`` (``g`` odd, ``g(±inf) = ±1``) cut at ``±support``
    and renormalized: ``F(z) = 1/2 + g(clamp(z)) / (2 g(T))`` is exactly 0 and 1 at the cut
    (``g`` is computed sign-symmetrically), so mass is conserved to the last bit."""

    @functools.lru_cache(maxsize=None)
    def twice_g_at_support(dtype: torch.dtype) -> float:
        return 2.0 * float(odd(torch.tensor(support, dtype=dtype)))

    def cdf(z: Tensor) -> Tensor:
        return odd(z.clamp(-support, support)) / twice_g_at_support(z.dtype) + 0.5

    def pdf(z: Tensor) -> Tensor:
        return odd_slope(z) * (z.abs() < support) / twice_g_at_support(z.dtype)

    return cdf, pdf


# Gaussian: g(z) = erf(z / sqrt(2)).
_SQRT1_2 = 1.0 / math.sqrt(2.0)
_GAUSS_NORM = 1.0 / math.sqrt(2.0 * math.pi)
_gaussian_cdf, _gaussian_pdf = _truncated(
    lambda z: torch.special.erf(z * _SQRT1_2),
    lambda z: (2.0 * _GAUSS_NORM) * torch.exp(-0.5 * z * z),
    5.3,
)

# Logistic with unit variance: scale s = sqrt(3)/pi, F = sigmoid(z/s), g(z) = tanh(z / 2s).
_LOGISTIC_SCALE = math.sqrt(3.0) / math.pi
_logistic_cdf, _logistic_pdf = _truncated(
    lambda z: torch.tanh(z * (0.5 / _LOGISTIC_SCALE)),
    lambda z: (0.5 / _LOGISTIC_SCALE) / torch.cosh(z * (0.5 / _LOGISTIC_SCALE)) ** 2,
    9.2,
)

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
        Kernel("gaussian", _gaussian_cdf, _gaussian_pdf, 5.3, _GAUSS_NORM * math.exp(-0.5), _GAUSS_NORM),
        Kernel(
            "logistic", _logistic_cdf, _logistic_pdf, 9.2,
            1.0 / (6.0 * math.sqrt(3.0)) / _LOGISTIC_SCALE**2, 0.125 / _LOGISTIC_SCALE**3,
        ),
        Kernel("box", _box_cdf, _box_pdf, _BOX_A, math.inf, math.inf),
        Kernel("triangular", _triangular_cdf, _triangular_pdf, _TRI_A, 1.0 / _TRI_A**2, math.inf),
        Kernel("epanechnikov", _epanechnikov_cdf, _epanechnikov_pdf, _EPA_A, 1.5 / _EPA_A**2, math.inf),
        Kernel("bspline", _bspline_cdf, _bspline_pdf, 2.0 * _BSP_B, (2.0 / 3.0) / _BSP_B**2, 2.0 / _BSP_B**3),
    )
}


def get_kernel(name: str) -> Kernel:
    """Look a kernel up by name, with an error that lists the valid names."""
    if not isinstance(name, str) or name not in KERNELS:
        raise ValueError(f"kernel must be one of {sorted(KERNELS)}, got {name!r}")
    return KERNELS[name]

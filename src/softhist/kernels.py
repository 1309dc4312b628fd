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

B-splines of every order up to 3 are here: order 0 is ``"box"``, order 1
``"triangular"``, order 2 ``"bspline2"`` and order 3 ``"bspline"``; the names
``"bspline0"``, ``"bspline1"`` and ``"bspline3"`` are aliases (:data:`KERNEL_ALIASES`).
The order-``n`` B-spline ``beta_n`` with unit knot spacing is ``n + 1`` unit boxes
convolved, so it has variance ``(n + 1) / 12`` and ``beta_n(t) = B_{n-1}(t + 1/2) -
B_{n-1}(t - 1/2)`` with ``B_{n-1}`` the CDF of ``beta_{n-1}``. Hence **evaluating an
order-n B-spline at bin centers one bin apart equals the bin masses of the order-(n-1)
B-spline kernel** with knots one bin apart: ITK's and MONAI's cubic Parzen window is
``"bspline2"`` with ``bandwidth = bin width / 2``, and order 0 evaluated at the centers
(nearest-bin counting) is hard binning.

One kernel is not unit-variance: ``"cauchy"``, density ``1 / (pi (1 + z^2))`` and CDF
``1/2 + atan(z) / pi``, has no variance, so its bandwidth is its scale ``gamma`` (the
half-width at half maximum). Its tails are heavy (at ``150 gamma`` the density still holds
``4e-5`` of the peak), so it is never cut: its support is ``inf`` and its window is the whole
axis (a call costs what the dense formula costs). HistoGAN's inverse-quadratic kernel
``1 / (1 + d^2 / sigma^2)`` is this density at ``gamma = sigma``, with centre membership.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Literal

import torch
from torch import Tensor

__all__ = ["Kernel", "KERNELS", "KERNEL_ALIASES", "KernelName", "get_kernel"]

KernelName = Literal[
    "gaussian", "logistic", "box", "triangular", "epanechnikov", "bspline", "bspline2", "bspline0", "bspline1", "bspline3",
    "cauchy",
]


@dataclass(frozen=True)
class Kernel:
    """A smoothing kernel: CDF, density, support and smoothness, as torch functions of the
    standardized offset ``z`` (in bandwidths).

    The built-in kernels are in :data:`KERNELS`. A user kernel is any ``Kernel(name, cdf, pdf,
    support)`` (``support``: ``T`` with ``F(z) = 0`` below ``-T`` and ``1`` above ``T``, in the
    same units, ``math.inf`` for none); it is accepted wherever ``kernel=`` is and runs on the
    torch engine. ``pdf`` must be the derivative of ``cdf`` for gradients to be right, and
    differentiable by autograd for centre membership and second derivatives.

    Example:
        >>> import math, torch, softhist
        >>> laplace = softhist.Kernel(
        ...     "laplace",
        ...     cdf=lambda z: torch.where(z < 0, 0.5 * torch.exp(z * math.sqrt(2)), 1 - 0.5 * torch.exp(-z * math.sqrt(2))),
        ...     pdf=lambda z: torch.exp(-z.abs() * math.sqrt(2)) / math.sqrt(2),
        ...     support=math.inf,
        ... )
        >>> softhist.histc(torch.tensor([0.5]), bins=4, min=0, max=1, kernel=laplace, bandwidth=0.1).sum().item() > 0.99
        True
    """

    name: str
    cdf: Callable[[Tensor], Tensor]
    pdf: Callable[[Tensor], Tensor]
    support: float
    pdf_slope: float = math.inf  # unknown for a user kernel: no sub-bin table
    pdf_curvature: float = math.inf

    def __post_init__(self) -> None:
        # Kept by key from the start, not when first described: under torch.compile dynamo
        # replays that registration only after the traced op has looked the kernel up.
        _USER_KERNELS[_user_key(self)] = self


_USER_KERNELS: Dict[str, "Kernel"] = {}


def _user_key(kernel: Kernel) -> str:
    return f"user-{''.join(c if c.isalnum() else '_' for c in kernel.name)}-{id(kernel):x}"


_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _truncated(odd: Callable[[Tensor], Tensor], odd_slope: Callable[[Tensor], Tensor], support: float):
    """A kernel with CDF ``(1 + g(z)) / 2`` (``g`` odd, ``g(±inf) = ±1``) cut at ``±support``
    and renormalized: ``F(z) = 1/2 + g(clamp(z)) / (2 g(T))`` is exactly 0 and 1 at the cut
    (``g`` is computed sign-symmetrically), so a sample's bin masses telescope to its weight: exactly
    in exact arithmetic, within one machine epsilon in floating point."""

    # Per dtype, computed once here: a plain lookup is also what torch.compile traces best.
    at_support = {dtype: 2.0 * float(odd(torch.tensor(support, dtype=dtype))) for dtype in _FLOAT_DTYPES}

    def twice_g_at_support(dtype: torch.dtype) -> float:
        return at_support[dtype]

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


# Quadratic B-spline (order 2) with knot spacing b = 2 (variance of three boxes of width b: b^2/4 = 1).
# With t = |z|/b, the density is beta_2(t)/b and the CDF is 1/2 + sign(z) * H(t), H the integral of
# beta_2 over [0, t]:
#   t < 1/2:        beta_2(t) = 3/4 - t^2,          H(t) = 3t/4 - t^3/3
#   1/2 <= t < 3/2: beta_2(t) = (3/2 - t)^2 / 2,    H(t) = 1/2 - (3/2 - t)^3 / 6
#   t >= 3/2:       beta_2(t) = 0,                  H(t) = 1/2
# Support |z| < 3; f' = -beta_2'(t)/b^2 sign(z) is continuous with max 1/b^2 (at t = 1/2), and
# f'' = beta_2''(t)/b^3 is -2/b^3 inside, 1/b^3 outside: max |f''| = 2/b^3.
_BSP2_B = 2.0


def _bspline2_cdf(z: Tensor) -> Tensor:
    t = (z / _BSP2_B).abs().clamp(max=1.5)
    inner = t * (0.75 - t * t / 3.0)
    outer = 0.5 - (1.5 - t) ** 3 / 6.0
    return 0.5 + torch.sign(z) * torch.where(t < 0.5, inner, outer)


def _bspline2_pdf(z: Tensor) -> Tensor:
    t = (z / _BSP2_B).abs()
    inner = 0.75 - t * t
    outer = 0.5 * (1.5 - t).clamp_min(0.0) ** 2
    return torch.where(t < 0.5, inner, outer) / _BSP2_B


# Cauchy with scale 1 (it has no variance: its bandwidth is the scale gamma). Never cut.
def _cauchy_cdf(z: Tensor) -> Tensor:
    return 0.5 + torch.atan(z) / math.pi


def _cauchy_pdf(z: Tensor) -> Tensor:
    return 1.0 / (math.pi * (1.0 + z * z))


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
        Kernel("bspline2", _bspline2_cdf, _bspline2_pdf, 1.5 * _BSP2_B, 1.0 / _BSP2_B**2, 2.0 / _BSP2_B**3),
        # max |f'| = 3 sqrt(3) / (8 pi) at z = 1/sqrt(3); max |f''| = 2/pi at z = 0.
        Kernel("cauchy", _cauchy_cdf, _cauchy_pdf, math.inf, 3.0 * math.sqrt(3.0) / (8.0 * math.pi), 2.0 / math.pi),
    )
}

# B-splines by order: order 0 is the box, order 1 the triangle, order 3 the cubic "bspline".
KERNEL_ALIASES: Dict[str, str] = {"bspline0": "box", "bspline1": "triangular", "bspline3": "bspline"}


# User kernels by the key the ops' text names them with (filled when a call is described).


def is_builtin(kernel: Kernel) -> bool:
    """Whether ``kernel`` is one of :data:`KERNELS` (not a user kernel of the same name)."""
    return KERNELS.get(kernel.name) is kernel


def kernel_key(kernel: Kernel) -> str:
    """The name an op's text gives ``kernel``: a built-in's name, or a generated key under which
    a user kernel is kept for :func:`kernel_from_key` (in this process)."""
    return kernel.name if is_builtin(kernel) else _user_key(kernel)


def kernel_from_key(key: str) -> Kernel:
    """The kernel :func:`kernel_key` named."""
    if key.startswith("user-"):
        if key not in _USER_KERNELS:
            raise ValueError(f"the user kernel {key!r} was described in another process; user kernels travel by reference only")
        return _USER_KERNELS[key]
    return get_kernel(key)


def get_kernel(name: str) -> Kernel:
    """Look a kernel up by name (or alias), with an error that lists the valid names.

    Example:
        >>> from softhist.kernels import get_kernel
        >>> get_kernel("bspline0").name, get_kernel("bspline2").support
        ('box', 3.0)
    """
    if isinstance(name, str) and name in KERNEL_ALIASES:
        name = KERNEL_ALIASES[name]
    if not isinstance(name, str) or name not in KERNELS:
        raise ValueError(f"kernel must be one of {sorted([*KERNELS, *KERNEL_ALIASES])}, got {name!r}")
    return KERNELS[name]

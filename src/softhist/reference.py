"""Dense reference implementations: the specification the tests check against.

Everything here builds the ``N x bins`` tensor on purpose: it is written for
clarity, not speed, and differentiates with plain autograd. It also holds the
formulas from the PyTorch forum thread "Differentiable torch.histc?", so the
tests can show that each one is a special case of the engine.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .kernels import Kernel, get_kernel

__all__ = [
    "soft_histogram",
    "soft_histogramdd",
    "tony_y_soft_histogram",
    "sigmoid_per_edge_histogram",
    "gaussian_times_delta_histogram",
    "slope_to_bandwidth",
]


def soft_histogram(
    x: Tensor, edges: Tensor, bandwidth, kernel: str = "gaussian", weight: Optional[Tensor] = None
) -> Tensor:
    """Soft histogram of 1-D ``x: (N,)`` over ``edges: (B+1,)``, dense: ``(B,)``.

    ``c_k = sum_i w_i * [F((e_{k+1} - x_i)/h) - F((e_k - x_i)/h)]``; non-finite
    samples are dropped.
    """
    cdf = get_kernel(kernel).cdf
    keep = torch.isfinite(x)
    w = torch.ones_like(x) if weight is None else weight
    x, w = x[keep], w[keep]
    per_edge = cdf((edges.unsqueeze(0) - x.unsqueeze(1)) / bandwidth)  # (N, B+1)
    return (w.unsqueeze(1) * (per_edge[:, 1:] - per_edge[:, :-1])).sum(0)


def soft_histogramdd(
    x: Tensor,
    edges: Sequence[Tensor],
    bandwidth: Sequence,
    kernel: Union[str, Kernel, Sequence[Union[str, Kernel]]] = "gaussian",
    weight: Optional[Tensor] = None,
    hard: Optional[Sequence[bool]] = None,
    membership: Union[str, Sequence[str]] = "mass",
    normalize_samples: bool = False,
) -> Tensor:
    """Soft joint histogram of ``x: (N, D)`` over per-axis ``edges``, dense: ``(B_0, ..., B_{D-1})``.

    The count of a cell is ``sum_i w_i * prod_d a_d(x_id)``, with ``a_d`` the 1-D
    CDF differences along axis ``d`` (``kernel``: one name or :class:`Kernel`, or one
    per axis), or on axes flagged in ``hard`` the indicator of the bin ``e_k <= x < e_{k+1}``
    (the last bin closed); samples with a non-finite coordinate are dropped.

    With ``membership="center"`` (one, or one per axis) ``a_d`` is instead the density at the
    bin centres times the bin widths, ``(e_{k+1} - e_k) f((c_k - x)/h_k) / h_k``, where an
    axis's bandwidth may be a 1-D tensor of one ``h_k`` per bin. With ``normalize_samples``
    each sample's cells are divided by their sum over all cells (0 where that sum is 0).
    """
    dims = len(edges)
    kernels = list(kernel) if isinstance(kernel, (list, tuple)) else [kernel] * dims
    kernels = [get_kernel(k) if isinstance(k, str) else k for k in kernels]
    memberships = [membership] * dims if isinstance(membership, str) else list(membership)
    hard = [False] * dims if hard is None else list(hard)
    keep = torch.isfinite(x).all(1)
    w = torch.ones(x.shape[0], dtype=x.dtype, device=x.device) if weight is None else weight
    x, w = x[keep], w[keep]
    hist = torch.ones_like(w)
    for d, (e, h) in enumerate(zip(edges, bandwidth)):
        if hard[d]:
            right_of = (x[:, d : d + 1] >= e.unsqueeze(0)).to(x.dtype)  # (N, B_d + 1)
            right_of[:, -1] = 0.0  # the last bin is closed: x == e_B counts in it
            factor = (right_of[:, :-1] - right_of[:, 1:]) * (x[:, d : d + 1] <= e[-1]).to(x.dtype)
        elif memberships[d] == "center":
            centers, widths = (e[1:] + e[:-1]) / 2, e[1:] - e[:-1]
            factor = widths / h * kernels[d].pdf((centers.unsqueeze(0) - x[:, d : d + 1]) / h)  # (N, B_d)
        else:
            per_edge = kernels[d].cdf((e.unsqueeze(0) - x[:, d : d + 1]) / h)  # (N, B_d + 1)
            factor = per_edge[:, 1:] - per_edge[:, :-1]
        hist = hist.unsqueeze(-1) * factor.view(-1, *([1] * d), factor.shape[1])
    if normalize_samples:
        total = hist.reshape(hist.shape[0], -1).sum(1).view(-1, *([1] * dims))
        hist = torch.where(total != 0, hist / torch.where(total != 0, total, 1.0), 0.0)
    return (w.view(-1, *([1] * dims)) * hist).sum(0)


def slope_to_bandwidth(slope: float) -> float:
    """The forum's sigmoid slope ``s`` as a logistic standard deviation: ``pi / (sqrt(3) s)``."""
    return math.pi / (math.sqrt(3.0) * slope)


def tony_y_soft_histogram(x: Tensor, bins: int, min: float, max: float, sigma: float) -> Tensor:
    """Tony-Y's ``SoftHistogram``: ``sigmoid(s(x - c + d/2)) - sigmoid(s(x - c - d/2))`` at bin centers ``c``.

    ``sigma`` is the sigmoid slope ``s``. Equals ``kernel="logistic"`` with
    ``bandwidth=slope_to_bandwidth(sigma)``.
    """
    delta = (max - min) / bins
    centers = min + delta * (torch.arange(bins, dtype=x.dtype, device=x.device) + 0.5)
    d = x.unsqueeze(0) - centers.unsqueeze(1)  # (bins, N)
    return (torch.sigmoid(sigma * (d + delta / 2)) - torch.sigmoid(sigma * (d - delta / 2))).sum(1)


def sigmoid_per_edge_histogram(x: Tensor, bins: int, min: float, max: float, sigma: float) -> Tensor:
    """One sigmoid per edge, then differences: ``bins + 1`` sigmoids instead of ``2 * bins``.

    This is the corrected form: edges at ``min + k * delta`` (the thread's
    version sat half a bin off).
    """
    edges = torch.linspace(min, max, bins + 1, dtype=x.dtype, device=x.device)
    right_of_edge = torch.sigmoid(sigma * (x.unsqueeze(0) - edges.unsqueeze(1))).sum(1)  # (bins+1,)
    return right_of_edge[:-1] - right_of_edge[1:]


def gaussian_times_delta_histogram(x: Tensor, bins: int, min: float, max: float, sigma: float) -> Tensor:
    """Gaussian density at bin centers times the bin width: the midpoint rule for the Gaussian kernel.

    Approximates ``kernel="gaussian", bandwidth=sigma``; the error shrinks as
    ``(delta / sigma)**2``.
    """
    delta = (max - min) / bins
    centers = min + delta * (torch.arange(bins, dtype=x.dtype, device=x.device) + 0.5)
    z = (centers.unsqueeze(1) - x.unsqueeze(0)) / sigma
    return (delta / sigma * torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)).sum(1)

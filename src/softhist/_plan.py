"""The description of a call that every engine reads: :class:`Axis`, :class:`Binning`, the
:class:`Engine` interface, and the sizing rules the engines share (windows, sub-bin tables).

This module owns no engine and no checks: the public functions build a :class:`Binning` (through
:mod:`._checks`), :mod:`._ops` carries it to one engine, and the engines consume it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .kernels import Kernel

# The interpolation error a sub-bin table is sized for: per unit of weight for the masses,
# and relative to the peak for their derivatives.
TABLE_TOLERANCE = 2.0**-24
GRADIENT_TOLERANCE = 2.0**-21


def host_cache(maxsize: int):
    """``functools.lru_cache`` for eager calls; under ``torch.compile`` the function itself, which
    dynamo traces (the cache's lock and tensors are not for a graph)."""

    def wrap(fn):
        cached = functools.lru_cache(maxsize=maxsize)(fn)

        @functools.wraps(fn)
        def call(*args):
            return fn(*args) if torch.compiler.is_compiling() else cached(*args)

        call.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
        return call

    return wrap


@dataclass(frozen=True)
class Axis:
    """One histogram axis: its bin count, bandwidth (as a float, to size windows) and,
    when its edges split ``(lo, hi)`` evenly, that range."""

    bins: int
    bandwidth: float
    uniform: Optional[Tuple[float, float]] = None

    @property
    def scale(self) -> float:
        """Bins per data unit (uniform axes)."""
        lo, hi = self.uniform
        return self.bins / (hi - lo)


@dataclass(frozen=True)
class Binning:
    """Everything about a call that is not a tensor.

    ``kernels`` holds one kernel per axis (a single :class:`Kernel` is taken for
    every axis). ``mode`` is the call's: ``"soft"``, ``"straight_through"`` or
    ``"hard"``. ``hard_axes`` marks, per axis, an axis binned hard inside a soft or
    straight-through histogram: its factor is the indicator of the sample's bin
    (by ``hard_rule``, against the edges the engine receives) and that axis's
    coordinate, edges and bandwidth get no gradient; its kernel is not used.
    ``hard_rule`` picks how hard counts assign samples: ``"histc"`` (torch.histc's
    arithmetic) or ``"edges"`` (compare with the edges, as numpy does).
    """

    kernels: Tuple[Kernel, ...]
    mode: str
    axes: Tuple[Axis, ...]
    hard_rule: str = "edges"
    hard_axes: Tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        dims = len(self.axes)
        if isinstance(self.kernels, Kernel):
            object.__setattr__(self, "kernels", (self.kernels,) * dims)
        if not self.hard_axes:
            object.__setattr__(self, "hard_axes", (False,) * dims)
        if len(self.kernels) != dims or len(self.hard_axes) != dims:
            raise ValueError(
                f"Binning needs one kernel and one hard flag per axis ({dims}), "
                f"got {len(self.kernels)} and {len(self.hard_axes)}"
            )

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(axis.bins for axis in self.axes)

    @property
    def kernel(self) -> Kernel:
        """The kernel of a call whose axes all share one (1-D calls, the table strategy)."""
        if any(k != self.kernels[0] for k in self.kernels[1:]):
            raise ValueError(f"the axes use different kernels: {[k.name for k in self.kernels]}")
        return self.kernels[0]

    def with_bandwidths(self, values: Sequence[float]) -> "Binning":
        """The same call with the bandwidths an op read from its bandwidth tensor."""
        axes = tuple(replace(axis, bandwidth=float(h)) for axis, h in zip(self.axes, values))
        return replace(self, axes=axes)

    @property
    def spec(self) -> str:
        """This description as text, the form the ``torch.library`` ops take it in (by name:
        ``mode=soft;hard_rule=histc;axis=kernel:gaussian,bins:256,bandwidth:0.5,lo:0.0,hi:1.0,hard:0``).
        :func:`binning_from_spec` reads it back; floats are written with ``repr``, which round-trips."""
        parts = [f"mode={self.mode}", f"hard_rule={self.hard_rule}"]
        for axis, kernel, hard in zip(self.axes, self.kernels, self.hard_axes):
            fields = {"kernel": kernel.name, "bins": axis.bins, "bandwidth": repr(float(axis.bandwidth)), "hard": int(hard)}
            if axis.uniform is not None:
                fields.update(lo=repr(float(axis.uniform[0])), hi=repr(float(axis.uniform[1])))
            parts.append("axis=" + ",".join(f"{k}:{v}" for k, v in fields.items()))
        return ";".join(parts)


@functools.lru_cache(maxsize=512)
def binning_from_spec(spec: str) -> Binning:
    """The :class:`Binning` that :attr:`Binning.spec` wrote."""
    from .kernels import get_kernel

    top, axes = {}, []
    for part in spec.split(";"):
        key, _, value = part.partition("=")
        if key == "axis":
            axes.append(dict(field.split(":", 1) for field in value.split(",")))
        else:
            top[key] = value
    binning = Binning(
        kernels=tuple(get_kernel(a["kernel"]) for a in axes),
        mode=top["mode"],
        axes=tuple(
            Axis(int(a["bins"]), float(a["bandwidth"]), (float(a["lo"]), float(a["hi"])) if "lo" in a else None) for a in axes
        ),
        hard_rule=top["hard_rule"],
        hard_axes=tuple(a["hard"] == "1" for a in axes),
    )
    return binning


def default_bandwidth(lo, hi, bins: int):
    """The default bandwidth: half the mean bin width of ``bins`` bins on ``[lo, hi]`` (numbers, or
    tensors that stay differentiable, as the outer edges of learnable bins are)."""
    return 0.5 * (hi - lo) / bins


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything narrower accumulates in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def window_edges(axis: Axis, kernel: Optional[Kernel], edges: Optional[Tensor]) -> int:
    """Edges per sample window along one axis: enough to cover the support ``[x - T*h, x + T*h]``,
    and never more than the ``B + 1`` edges of the axis, so a sample costs at most what the dense
    formula costs (a window of every edge, starting at the first, is exact for any sample); two
    (one bin) for a hard axis (``kernel=None``).

    For non-uniform edges this reads the edges once (a host sync).
    """
    if kernel is None:  # a hard axis: the sample's own bin
        return 2
    reach = 2.0 * kernel.support * axis.bandwidth
    if axis.uniform is not None:
        span = reach * axis.scale
        return axis.bins + 1 if span >= axis.bins else min(math.ceil(span) + 2, axis.bins + 1)
    e = edges.detach().to(torch.float64)
    most = int((torch.searchsorted(e, e + reach, right=True) - torch.arange(e.numel(), device=e.device)).max())
    return min(most + 4, axis.bins + 1)


@functools.lru_cache(maxsize=None)
def table_points(kernel: Kernel, bandwidth_bins: float) -> float:
    """Sub-positions per bin that a table of exact bin masses (and of their derivatives) needs for
    linear interpolation to err by at most ``2**-24`` per unit of weight (``2**-21`` of the peak
    for the derivatives), at a bandwidth of ``bandwidth_bins`` bin widths.

    Linear interpolation errs by at most ``(1/Q)^2 / 8`` times the second derivative. In bin
    units, with ``r = 1/hb``, a mass ``F((o+1-f)/hb) - F((o-f)/hb)`` has a second derivative of at
    most ``2 r^2 max|f'|``, and its derivative one of at most ``2 r^3 max|f''|`` (counted only where
    ``f'`` is continuous).
    """
    r = 1.0 / bandwidth_bins
    q = r * math.sqrt(kernel.pdf_slope / (4.0 * TABLE_TOLERANCE))
    if math.isfinite(kernel.pdf_curvature):
        peak = float(kernel.pdf(torch.zeros((), dtype=torch.float64)))
        q = max(q, r * math.sqrt(kernel.pdf_curvature / (4.0 * GRADIENT_TOLERANCE * peak)))
    return q


@dataclass(frozen=True)
class Engine:
    """A backend's histograms, as the functions the ops in :mod:`._ops` call.

    ``forward(x, weight, edges, binning) -> (rows, *bins)`` in the accumulation dtype, and
    ``backward(grad, x, weight, edges, binning, needs) -> (grad_x, grad_w, grad_h, grad_edges)``
    where ``needs = (x, weight, bandwidth, per-axis edges)`` says which gradients to compute;
    ``grad_h`` has shape ``(D,)`` and ``grad_edges`` holds one entry (or None) per axis.
    ``hard(x, weight, edges, binning) -> (rows, *bins)``: exact counts in float64.
    """

    forward: Callable[..., Tensor]
    backward: Callable[..., Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor], List[Optional[Tensor]]]]
    hard: Callable[..., Tensor]

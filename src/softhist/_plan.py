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

from .kernels import Kernel, is_builtin, kernel_from_key, kernel_key

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


def memo(method):
    """A property of a frozen description, computed once per instance and kept beside its fields
    (calls reuse their description, so what is derived from it is derived once)."""
    key = "_memo_" + method.__name__

    @functools.wraps(method)
    def get(self):
        try:
            return self.__dict__[key]
        except KeyError:
            value = self.__dict__[key] = method(self)
            return value

    return property(get)


@dataclass(frozen=True)
class Axis:
    """One histogram axis: its bin count, bandwidth (as a float, to size windows) and,
    when its edges split ``(lo, hi)`` evenly, that range."""

    bins: int
    bandwidth: float
    uniform: Optional[Tuple[float, float]] = None
    membership: str = "mass"  # "mass" (the kernel's mass in the bin) or "center" (its density at the bin centre)
    per_bin: bool = False  # one bandwidth per bin (centre membership); ``bandwidth`` is then their largest
    bin_bandwidths: Optional[Tuple[float, ...]] = None  # per-bin values, once an op has read them (not in the text)

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
    Each axis says its ``membership`` (``"mass"`` or ``"center"``) and whether it has one
    bandwidth per bin; ``normalize_samples`` divides each sample's cell values by their sum
    over the cells it reaches, so the sample contributes exactly its weight (or nothing).
    """

    kernels: Tuple[Kernel, ...]
    mode: str
    axes: Tuple[Axis, ...]
    hard_rule: str = "edges"
    hard_axes: Tuple[bool, ...] = ()
    normalize_samples: bool = False

    def __hash__(self) -> int:  # the fields' hash, once: descriptions key the engines' caches
        try:
            return self.__dict__["_memo_hash"]
        except KeyError:
            value = self.__dict__["_memo_hash"] = hash(
                (self.kernels, self.mode, self.axes, self.hard_rule, self.hard_axes, self.normalize_samples)
            )
            return value

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

    @memo
    def shape(self) -> Tuple[int, ...]:
        return tuple(axis.bins for axis in self.axes)

    @property
    def kernel(self) -> Kernel:
        """The kernel of a call whose axes all share one (1-D calls, the table strategy)."""
        if any(k != self.kernels[0] for k in self.kernels[1:]):
            raise ValueError(f"the axes use different kernels: {[k.name for k in self.kernels]}")
        return self.kernels[0]

    @memo
    def bandwidth_sizes(self) -> Tuple[int, ...]:
        """Entries per axis in the call's flat bandwidth tensor: ``bins`` for per-bin bandwidths, else 1."""
        return tuple(axis.bins if axis.per_bin else 1 for axis in self.axes)

    @memo
    def options(self) -> Tuple[str, ...]:
        """The options of this call beyond bin-integrated built-in kernels, by their argument
        (what an engine that lacks them names in its error)."""
        found = []
        if self.mode != "hard":
            found += [f"kernel={k.name!r}" for k in dict.fromkeys(self.kernels) if not is_builtin(k) or not math.isfinite(k.support)]
            if any(a.membership != "mass" for a in self.axes):
                found.append("membership='center'")
            if any(a.per_bin for a in self.axes):
                found.append("per-bin bandwidths")
            if self.normalize_samples:
                found.append("normalize_samples=True")
        return tuple(found)

    def with_bandwidths(self, values: Sequence[float]) -> "Binning":
        """The same call with the bandwidths an op read from its flat bandwidth tensor (per-bin
        axes take their largest, which sizes their windows)."""
        axes, start = [], 0
        for axis, size in zip(self.axes, self.bandwidth_sizes):
            mine = tuple(float(v) for v in values[start : start + size])
            axes.append(replace(axis, bandwidth=max(mine), bin_bandwidths=mine if axis.per_bin else None))
            start += size
        return replace(self, axes=tuple(axes))

    @memo
    def plain(self) -> bool:
        """Whether every axis is bin-integrated with one bandwidth and samples are not normalized:
        the calls the hand-written VJPs and the sub-bin tables cover."""
        return not self.normalize_samples and all(a.membership == "mass" and not a.per_bin for a in self.axes)

    def bandwidth_tensor(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        """The call's flat bandwidth tensor, from the numbers this description holds."""
        values = [v for a in self.axes for v in (a.bin_bandwidths if a.per_bin else (a.bandwidth,))]
        return torch.tensor(values, dtype=dtype, device=device)

    @memo
    def spec(self) -> str:
        """This description as text, the form the ``torch.library`` ops take it in (by name:
        ``mode=soft;hard_rule=histc;axis=kernel:gaussian,bins:256,bandwidth:0.5,lo:0.0,hi:1.0,hard:0``).
        :func:`binning_from_spec` reads it back; floats are written with ``repr``, which round-trips."""
        parts = [f"mode={self.mode}", f"hard_rule={self.hard_rule}", f"normalize_samples={int(self.normalize_samples)}"]
        for axis, kernel, hard in zip(self.axes, self.kernels, self.hard_axes):
            fields = {
                "kernel": kernel_key(kernel), "bins": axis.bins, "bandwidth": repr(float(axis.bandwidth)), "hard": int(hard),
                "membership": axis.membership, "per_bin": int(axis.per_bin),
            }
            if axis.uniform is not None:
                fields.update(lo=repr(float(axis.uniform[0])), hi=repr(float(axis.uniform[1])))
            parts.append("axis=" + ",".join(f"{k}:{v}" for k, v in fields.items()))
        return ";".join(parts)


@functools.lru_cache(maxsize=512)
def binning_from_spec(spec: str) -> Binning:
    """The :class:`Binning` that :attr:`Binning.spec` wrote."""
    top, axes = {}, []
    for part in spec.split(";"):
        key, _, value = part.partition("=")
        if key == "axis":
            axes.append(dict(field.split(":", 1) for field in value.split(",")))
        else:
            top[key] = value
    binning = Binning(
        kernels=tuple(kernel_from_key(a["kernel"]) for a in axes),
        mode=top["mode"],
        axes=tuple(
            Axis(
                int(a["bins"]), float(a["bandwidth"]), (float(a["lo"]), float(a["hi"])) if "lo" in a else None,
                a.get("membership", "mass"), a.get("per_bin", "0") == "1",
            )
            for a in axes
        ),
        hard_rule=top["hard_rule"],
        hard_axes=tuple(a["hard"] == "1" for a in axes),
        normalize_samples=top.get("normalize_samples", "0") == "1",
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


def shape_only_edges(bins: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``(bins + 1,)`` edges of an equal-width axis that carry the shape and no values (one
    element, expanded: no memory): for eager calls whose engine places equal-width edges
    arithmetically (the native one), so 10^8 bins cost no 10^8 edges. Whatever reads the values
    takes them from :func:`edge_values`."""
    return torch.zeros((), dtype=dtype, device=device).expand(bins + 1)


def _shape_only(e: Tensor) -> bool:
    return e.dim() == 1 and e.numel() > 1 and e.stride(0) == 0  # real edges increase: never all one element


def edge_values(edges: Sequence[Tensor], binning: "Binning") -> List[Tensor]:
    """``edges`` with :func:`shape_only_edges` replaced by their values, ``linspace(lo, hi, B + 1)``
    of the axis's range in their dtype (what ``histc`` builds otherwise); other edges as they are."""
    if not any(_shape_only(e) for e in edges):
        return list(edges)
    return [
        torch.linspace(*axis.uniform, axis.bins + 1, dtype=e.dtype, device=e.device) if _shape_only(e) and axis.uniform is not None else e
        for e, axis in zip(edges, binning.axes)
    ]


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
    ``grad_h`` has the shape of the flat bandwidth tensor (``sum(binning.bandwidth_sizes)``) and
    ``grad_edges`` holds one entry (or None) per axis.
    ``hard(x, weight, edges, binning, dtype=float64) -> (rows, *bins)``: exact counts (float64
    weight sums) rounded once to ``dtype``.
    ``supports(binning)``: None when the engine runs that call, else why not (the dispatch in
    :func:`._ops.select_backend` reads it); by default the native engines' options.
    ``reads_equal_width_edges``: False where the engine places equal-width edges arithmetically
    and reads only their shape (it may then be given :func:`shape_only_edges`).
    """

    forward: Callable[..., Tensor]
    backward: Callable[..., Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor], List[Optional[Tensor]]]]
    hard: Callable[..., Tensor]
    supports: Callable[[Binning], Optional[str]] = lambda binning: native_unsupported(binning)
    reads_equal_width_edges: bool = True


NATIVE_KERNELS = frozenset({"gaussian", "logistic", "box", "triangular", "epanechnikov", "bspline", "bspline2"})


def native_unsupported(binning: Binning, has: frozenset = frozenset()) -> Optional[str]:
    """Why a native engine (C++, Triton) cannot run ``binning``, or None: they have today's
    options, bin-integrated (mass) membership of the built-in compact or cut kernels, one bandwidth
    per axis and no per-sample normalization (hard counts need none of these), and the options
    of :attr:`Binning.options` named in ``has`` (the engine's own: ``_cpp_backend.OPTIONS``, ``_triton_backend.OPTIONS``)."""
    key = "_memo_native" + ",".join(sorted(has))
    if key not in binning.__dict__:
        binning.__dict__[key] = _native_unsupported(binning, has)
    return binning.__dict__[key]


def _native_unsupported(binning: Binning, has: frozenset) -> Optional[str]:
    options = [o for o in binning.options if not o.startswith("kernel=") and o not in has]
    if binning.mode != "hard":  # user kernels never run natively, whatever their name
        options[:0] = [f"kernel={k.name!r}" for k in dict.fromkeys(binning.kernels)
                       if not is_builtin(k) or (k.name not in NATIVE_KERNELS and f"kernel={k.name!r}" not in has)]
    return None if not options else f"it does not have {', '.join(options)} yet (the torch engine has)"

"""Public API: differentiable ``histc``, ``histogram``, ``histogram2d`` and ``histogramdd``.

Each public function checks its arguments (:mod:`._checks`), flattens the input once to
``(rows, n, D)``, describes the call once as a :class:`._plan.Binning`, and hands it to
:mod:`._ops`, which picks the engine and runs it; the batch shape is restored at the end.
The commonest eager call, ``histc`` on a whole tensor with numbers and names for arguments, has
its checks and description prepared once per distinct arguments (:func:`_prepared_histc`).
This module owns the torch and numpy semantics: shapes, output dtypes, equal-width edges as
numpy computes them, data ranges, densities and the sum over a process group.
"""

from __future__ import annotations

import functools
import math
import numbers
import sys
import warnings
from typing import TYPE_CHECKING, List, Literal, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
from torch import Tensor

from . import _checks, _ops
from ._plan import Axis, Binning, accumulation_dtype, default_bandwidth, host_cache, shape_only_edges
from .kernels import Kernel, KernelName

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = ["backends", "histc", "histogram", "histogram2d", "histogramdd", "local_histogram"]

Mode = Literal["soft", "hard", "straight_through"]
AxisModes = Union[Mode, Sequence[Mode]]  # one mode, or one per axis (joint histograms)
KernelArg = Union[KernelName, Kernel]  # a kernel's name, or a softhist.Kernel (a user kernel)
AxisKernels = Union[KernelArg, Sequence[KernelArg]]  # one kernel, or one per axis
Membership = Literal["mass", "center"]
AxisMemberships = Union[Membership, Sequence[Membership]]
BackendName = Literal["auto", "torch", "cpp", "triton"]
Bandwidth = Union[float, Tensor, None]
Dim = Union[int, Sequence[int], None]

backends = _ops.backends


# --------------------------------------------------------------------------- shapes and dtypes


def _flatten(input: Tensor, weight: Optional[Tensor], dim: Dim) -> Tuple[Tensor, Optional[Tensor], Tuple[int, ...]]:
    """Move the sample dims last and flatten to samples ``(batch, n, 1)`` of one axis and weights
    ``(batch, n)``; return the batch shape."""
    if weight is not None:
        _checks.check_weight(weight, input.shape, f"the input, {tuple(input.shape)}", input.device)
    if dim is None:  # every dim: one row, no permute
        n = input.numel()
        return input.reshape(1, n, 1), None if weight is None else weight.reshape(1, n), ()
    if input.dim() == 0:
        input = input.reshape(1)
        weight = None if weight is None else weight.reshape(1)
    dims = _checks.sample_dims(input.dim(), dim)
    batch_dims = [d for d in range(input.dim()) if d not in dims]
    batch_shape = tuple(input.shape[d] for d in batch_dims)
    order = batch_dims + list(dims)
    rows, n = math.prod(batch_shape), math.prod([input.shape[d] for d in dims])
    x = input.permute(order).reshape(rows, n, 1)  # explicit n: -1 is ambiguous for an empty batch
    w = None if weight is None else weight.permute(order).reshape(rows, n)
    return x, w, batch_shape


def _output_dtype(dtype: torch.dtype) -> torch.dtype:
    """The result's dtype: the input's, except float64 for integer and bool input (as numpy) and
    float32 for half precision in every mode (float16 stops at 65504, bfloat16 counts by 2 past 256)."""
    if not dtype.is_floating_point:
        return torch.float64
    if dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return dtype


def _floating(input: Tensor) -> Tensor:
    """Integer and bool samples (hard mode) are binned as float64, as numpy compares them."""
    return input if input.is_floating_point() else input.to(torch.float64)


# --------------------------------------------------------------------------- edges and ranges


def numpy_edges(lo: Tensor, hi: Tensor, bins: int, dtype: torch.dtype) -> Tensor:
    """``numpy.linspace(lo, hi, bins + 1)`` computed in lo's dtype, then cast to ``dtype``."""
    step = (hi - lo) / bins
    edges = torch.arange(bins + 1, dtype=lo.dtype, device=lo.device) * step + lo
    edges[-1] = hi
    return edges.to(dtype)


def _histc_edges(lo: float, hi: float, bins: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """histc's edges, which the caller never sees: built once per range and reused (read-only) up
    to 65,536 bins; more take no memory (:func:`._plan.shape_only_edges`: what reads their values
    builds them, the native engine never does), or, while compiling, are built per call."""
    if bins > 1 << 16:
        if torch.compiler.is_compiling():
            return torch.linspace(lo, hi, bins + 1, dtype=dtype, device=device)
        return shape_only_edges(bins, dtype, device)
    return _cached_histc_edges(lo, hi, bins, dtype, device)


@host_cache(maxsize=64)
def _cached_histc_edges(lo: float, hi: float, bins: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.linspace(lo, hi, bins + 1, dtype=dtype, device=device)


def _data_range(x: Tensor, group: Optional["ProcessGroup"] = None) -> Optional[Tuple[Tensor, Tensor]]:
    """Min and max of the finite samples, in x's dtype; None when there are none (host sync).

    With a process group, the min and max over every rank's samples (one MIN all-reduce).
    The range is a choice of binning, not a function to differentiate: it is detached.
    """
    _checks.check_data_range_readable(x)
    x = x.detach()
    finite = x[torch.isfinite(x)]
    if group is None:
        return torch.aminmax(finite) if finite.numel() else None
    lo, hi = torch.aminmax(finite.double()) if finite.numel() else (torch.tensor(math.inf), torch.tensor(-math.inf))
    extremes = torch.stack([lo, -hi]).to(device=x.device, dtype=torch.float64)
    dist.all_reduce(extremes, op=dist.ReduceOp.MIN, group=group)
    if not math.isfinite(float(extremes[0])):
        return None
    return extremes[0].to(x.dtype), (-extremes[1]).to(x.dtype)


def _all_reduce(hist: Tensor, group: Optional["ProcessGroup"]) -> Tensor:
    """Sum a histogram over the group's ranks; backward sums the upstream gradients over ranks."""
    if group is None:
        return hist
    import torch.distributed.nn.functional as dist_nn  # absent from builds without distributed support

    with warnings.catch_warnings():  # deprecated in favour of functional collectives, same semantics
        warnings.filterwarnings("ignore", message=".*all_reduce is deprecated", category=FutureWarning)
        return dist_nn.all_reduce(hist, op=dist.ReduceOp.SUM, group=group)


def _per_axis(value: object, dims: int, name: str, pairs: bool = False) -> list:
    """An int (or, for ``bins``, one value) broadcast to every axis, or a sequence of ``dims`` entries."""
    if not pairs and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return [value] * dims
    if isinstance(value, Tensor) or not isinstance(value, (list, tuple)):
        expected = "one (min, max) pair or None per axis" if pairs else "an int, or one int or edges tensor per axis"
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    if len(value) != dims:
        raise ValueError(f"{name} must have one entry per axis (D = {dims}), got {len(value)}: {value!r}")
    return list(value)


def _numpy_scalar_dtype(values: Sequence[object], data: torch.dtype) -> torch.dtype:
    """numpy computes equal-width edges in the result type of the data and the range: numpy scalars
    in ``range`` count with their own dtype (Python numbers do not). The torch dtype of that type."""
    numpy = sys.modules.get("numpy")
    scalars = [v for v in values if numpy is not None and isinstance(v, numpy.generic)]
    if not scalars:
        return data
    as_numpy = {torch.float16: numpy.float16, torch.float32: numpy.float32, torch.float64: numpy.float64}
    result = numpy.result_type(*scalars, numpy.empty(0, dtype=as_numpy.get(data, numpy.float64)))
    if result.kind != "f":
        result = numpy.dtype(numpy.float64)
    return {2: torch.float16, 4: torch.float32}.get(result.itemsize, torch.float64)


def _axis_edges(
    x: Tensor, bins: object, range_: object, bins_name: str, range_name: str, *, numpy_dd: bool,
    group: Optional["ProcessGroup"] = None, hard: bool = False,
) -> Tuple[Tensor, Optional[Tuple[float, float]]]:
    """Edges to bin one axis with, and ``(lo, hi)`` when they split it evenly.

    Follows numpy: ``histogram`` computes edges from an explicit range in float64 and rounds them
    to the result type of the data and the range; ``histogramdd`` keeps them in float64. Edges
    from the data's own range are computed in the data's dtype.
    """
    if isinstance(bins, Tensor):
        if range_ is not None:
            raise ValueError(f"{range_name} must be None when {bins_name} is an edges tensor, got {range_!r}")
        _checks.check_edges(bins, bins_name, hard)
        return (bins if bins.dtype in _checks.FLOAT_DTYPES else bins.to(torch.float64)).to(device=x.device), None
    count = _checks.check_bin_count(bins, bins_name)
    compute = x.dtype if x.is_floating_point() else torch.float64
    if range_ is not None:
        pair = _checks.check_pair(range_, range_name)
        lo, hi = _checks.check_range(pair[0], pair[1], range_name)
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        out = torch.float64 if numpy_dd else _numpy_scalar_dtype(pair, compute)
        _checks.check_split(lo, hi, count, torch.float64, out, bins_name)
        lo_t, hi_t = (torch.tensor(v, dtype=torch.float64, device=x.device) for v in (lo, hi))
        return numpy_edges(lo_t, hi_t, count, out), (lo, hi)
    data = _data_range(x, group) if x.numel() or group is not None else None
    if data is None:  # numpy's range for empty data: the Python ints 0 and 1, so edges computed in float64
        lo_t, hi_t = (torch.tensor(v, dtype=torch.float64, device=x.device) for v in (0.0, 1.0))
        return numpy_edges(lo_t, hi_t, count, compute), (0.0, 1.0)
    lo_t, hi_t = (v.to(compute) for v in data)
    if bool(lo_t == hi_t):
        lo_t, hi_t = lo_t - 0.5, hi_t + 0.5
    _checks.check_split(float(lo_t), float(hi_t), count, compute, compute, bins_name)
    return numpy_edges(lo_t, hi_t, count, compute), (float(lo_t), float(hi_t))


# --------------------------------------------------------------------------- the call description


def _bandwidths(
    bandwidth: object, edges: Sequence[Tensor], uniforms: Sequence[Optional[Tuple[float, float]]], acc: torch.dtype,
    memberships: Sequence[str],
):
    """Per-axis bandwidths: Python floats (and None) when every one is a number, else the call's
    flat bandwidth tensor (and its values, read inside the op) that stays differentiable; and,
    per axis, whether it has one bandwidth per bin.

    ``bandwidth`` is None (half the mean bin width: a number for equal-width bins, a tensor of the
    edges, differentiable in them, for explicit edges), one value for every axis, or one per
    axis (a sequence, or a 1-D tensor of length D). With centre membership an axis's value may
    be a 1-D tensor of one bandwidth per bin (for a 1-D histogram, ``bandwidth`` itself).
    """
    dims = len(edges)
    bins = [e.shape[0] - 1 for e in edges]
    if bandwidth is None:
        parts = [default_bandwidth(*(u if u is not None else (e[0], e[-1])), e.shape[0] - 1) for e, u in zip(edges, uniforms)]
    else:
        if isinstance(bandwidth, Tensor) and bandwidth.dim() == 1 and dims > 1:
            bandwidth = list(bandwidth.unbind())
        if isinstance(bandwidth, (list, tuple)):
            if len(bandwidth) != dims:
                raise ValueError(f"bandwidth must have one value per axis ({dims}), got {len(bandwidth)}")
            parts = [_checks.bandwidth_value(v, f"bandwidth[{d}]", bins[d], memberships[d]) for d, v in enumerate(bandwidth)]
        elif dims == 1:
            parts = [_checks.bandwidth_value(bandwidth, "bandwidth", bins[0], memberships[0])]
        else:
            parts = [_checks.bandwidth_value(bandwidth, "bandwidth")] * dims
    per_bin = tuple(isinstance(v, Tensor) and v.dim() == 1 for v in parts)
    if not any(isinstance(v, Tensor) for v in parts):
        return parts, per_bin, None
    device = next(e.device for e in edges)
    tensors = [v.to(dtype=acc, device=device).reshape(-1) if isinstance(v, Tensor) else torch.tensor([v], dtype=acc, device=device) for v in parts]
    return [0.0] * dims, per_bin, torch.cat(tensors)


def _bin(
    x: Tensor,
    weight: Optional[Tensor],
    edges: Sequence[Tensor],
    uniforms: Sequence[Optional[Tuple[float, float]]],
    *,
    hard_rule: str,
    kernel: object,
    bandwidth: object,
    mode: object,
    backend: str,
    membership: object = "mass",
    normalize_samples: object = False,
    group: Optional["ProcessGroup"] = None,
    counts_dtype: Optional[torch.dtype] = None,
) -> Tensor:
    """The engine entry: ``x: (rows, n, D)`` -> ``(rows, *bins)``, summed over the group's ranks.

    ``kernel``, ``mode`` and ``membership`` are one value or one per axis (see
    :func:`._checks.call_mode`). Hard counts come back in float64, or in ``counts_dtype`` when
    the caller returns them as they are (the engine rounds them once, as converting float64
    counts would, with no float64 copy; a group sums float64 counts first); soft histograms in
    the accumulation dtype.
    """
    backend = _checks.check_backend(backend)
    common = isinstance(kernel, str) and isinstance(mode, str) and isinstance(membership, str) and type(normalize_samples) is bool
    if common and _is_number_or_none(bandwidth) and None not in uniforms:
        # The common call (names, a number, equal-width bins) is described once and reused.
        shape = tuple(e.shape[0] - 1 for e in edges)
        binning = _uniform_binning(kernel, mode, membership, normalize_samples, bandwidth, shape, tuple(uniforms), hard_rule)
        bandwidth_tensor = None
    else:
        binning, bandwidth_tensor = _describe(x, edges, uniforms, hard_rule, kernel, bandwidth, mode, membership, normalize_samples)
    if binning.mode == "hard":
        dtype = counts_dtype if counts_dtype is not None and group is None else torch.float64
        hist = _ops.hard_histogram(x, weight, edges, binning, backend, dtype)
    else:
        hist = _ops.soft_histogram(x, weight, bandwidth_tensor, edges, binning, backend)
    return _all_reduce(hist, group)


def _is_number_or_none(value: object) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _describe(x, edges, uniforms, hard_rule, kernel, bandwidth, mode, membership, normalize_samples) -> Tuple[Binning, Optional[Tensor]]:
    """The call's :class:`Binning`, and its bandwidths as a tensor when any is one (see :func:`_bandwidths`)."""
    dims = len(edges)
    kernels = tuple(_checks.check_kernel(k) for k in _checks.axis_options(kernel, dims, "kernel"))
    memberships = _checks.check_membership(membership, dims)
    normalize = _checks.check_flag(normalize_samples, "normalize_samples")
    mode, hard_axes = _checks.call_mode(mode, dims)
    if mode == "hard":  # exact counts: one cell per sample, whatever the membership (normalized, still 1)
        _warn_if_trained(bandwidth, edges)
        axes = tuple(Axis(e.shape[0] - 1, 0.0, u) for e, u in zip(edges, uniforms))
        return Binning(kernels, mode, axes, hard_rule, hard_axes, False), None
    values, per_bin, bandwidth_tensor = _bandwidths(bandwidth, edges, uniforms, accumulation_dtype(x.dtype), memberships)
    axes = tuple(Axis(e.shape[0] - 1, float(h), u, m, p) for e, h, u, m, p in zip(edges, values, uniforms, memberships, per_bin))
    return Binning(kernels, mode, axes, hard_rule, hard_axes, normalize), bandwidth_tensor


@host_cache(maxsize=256)
def _uniform_binning(
    kernel: str, mode: str, membership: str, normalize: bool, bandwidth: Optional[float], shape: Tuple[int, ...],
    uniforms: Tuple[Tuple[float, float], ...], hard_rule: str,
) -> Binning:
    """:func:`_describe` for one kernel name, mode and membership, a number (or None) for the
    bandwidth and equal-width bins on every axis: what most calls pass, checked and described once."""
    dims = len(shape)
    kernels = (_checks.check_kernel(kernel),) * dims
    memberships = _checks.check_membership(membership, dims)
    call, hard_axes = _checks.call_mode(mode, dims)
    if call == "hard":
        return Binning(kernels, call, tuple(Axis(bins, 0.0, u) for bins, u in zip(shape, uniforms)), hard_rule, hard_axes, False)
    if bandwidth is None:
        values = [default_bandwidth(lo, hi, bins) for bins, (lo, hi) in zip(shape, uniforms)]
    else:
        values = [_checks.bandwidth_value(bandwidth, "bandwidth")] * dims
    axes = tuple(Axis(bins, float(h), u, m) for bins, h, u, m in zip(shape, values, uniforms, memberships))
    return Binning(kernels, call, axes, hard_rule, hard_axes, normalize)


def _warn_if_trained(bandwidth: object, edges: Sequence[Tensor]) -> None:
    """Hard counts are piecewise constant: edges or a bandwidth that require grad would get none."""
    trained = [e for e in edges if e.requires_grad] + ([bandwidth] if isinstance(bandwidth, Tensor) and bandwidth.requires_grad else [])
    if trained and torch.is_grad_enabled():
        warnings.warn(
            "softhist: mode='hard' gives exact counts, which pass no gradient to the edges or the bandwidth "
            "(only to weights); use mode='straight_through' (hard counts, soft gradients) or mode='soft' to train them",
            UserWarning,
            stacklevel=4,
        )


def _start(input: object, mode: object) -> str:
    """The checks every public function begins with: no TorchScript, a tensor input of a dtype the
    mode accepts. Returns the mode that governs the input's dtype."""
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        _checks.refuse_torchscript()
    governing = _checks.input_mode(mode)
    _checks.check_input(input, governing)
    return governing


def histc(
    input: Tensor,
    bins: int = 100,
    min: float = 0.0,
    max: float = 0.0,
    *,
    kernel: KernelArg = "gaussian",
    bandwidth: Bandwidth = None,
    mode: Mode = "soft",
    membership: Membership = "mass",
    normalize_samples: bool = False,
    weight: Optional[Tensor] = None,
    dim: Dim = None,
    backend: BackendName = "auto",
    group: Optional["ProcessGroup"] = None,
) -> Tensor:
    """Histogram with equal-width bins between ``min`` and ``max``.

    Differentiable analogue of :func:`torch.histc`. In soft mode a sample ``x``
    of weight ``w`` puts ``w * (F((e[k+1] - x)/h) - F((e[k] - x)/h))`` into bin
    ``k``, where ``F`` is the kernel's CDF and ``h`` the bandwidth; gradients
    reach ``input``, ``weight`` and ``bandwidth``.

    Args:
        input: samples, any shape ``(*)``; floating point (integers in hard mode).
        bins: number of bins, ``>= 1``.
        min, max: the range, numbers or 0-d tensors. ``min == max`` (the default)
            means the range of the finite data, as in ``torch.histc`` (one host sync).
        kernel: ``"gaussian"``, ``"logistic"``, ``"box"``, ``"triangular"``,
            ``"epanechnikov"``, ``"bspline"`` (cubic) or ``"bspline2"`` (quadratic);
            ``"bspline0"`` to ``"bspline3"`` name the B-splines by order (box,
            triangular, quadratic, cubic); ``"cauchy"`` (heavy-tailed, never cut);
            or a :class:`softhist.Kernel` of your own (torch engine).
        bandwidth: kernel standard deviation in data units (the scale for
            ``"cauchy"``), a float or a 0-d tensor (may require grad). With
            ``membership="center"`` also a 1-D tensor of one bandwidth per bin.
            ``None``: half a bin width.
        mode: ``"soft"``; ``"hard"`` for exact counts, equal to ``torch.histc``;
            ``"straight_through"`` for hard counts forward, soft gradients back.
        membership: ``"mass"``: a sample puts the kernel's mass in each bin (the
            CDF difference); ``"center"``: the kernel's density at the bin centre
            times the bin width, ``w * width_k * K((c_k - x)/h) / h`` (kornia,
            MONAI's Gaussian window, HistoGAN, histogram layers).
        normalize_samples: divide each sample's contributions by their sum over
            the bins it reaches, so it contributes exactly its weight (HL-Gauss
            targets); a sample that reaches no bin contributes 0.
        weight: per-sample weights, same shape as ``input``, differentiable.
        dim: the sample dimensions; the others are batch dimensions kept in
            front of the bins axis. ``None``: all dimensions.
        backend: ``"auto"`` (the native C++ kernels for CPU tensors and the fused
            Triton kernels for CUDA tensors where available, the torch engine
            elsewhere), ``"cpp"``, ``"triton"`` or ``"torch"``.
        group: a ``torch.distributed`` process group: return the histogram of
            every rank's samples (see "Beyond one machine" in the README).
            ``None``: this process's samples only.

    Returns:
        Tensor of shape ``(*batch, bins)`` in ``input``'s dtype; in float32 for
        float16/bfloat16 input, in every mode (exact where float16 would
        overflow at 65504), in float64 for integer input.

    Note:
        Bins are ``[e_k, e_{k+1})``, the last one closed. Soft mass near the range
        ends spills outside and is not counted. NaN samples are ignored, as
        ``torch.histc`` ignores them; infinite ones lie outside any finite range
        and are not counted (a range read from the data spans the finite samples).
        A NaN weight makes NaN the bins its sample reaches, as in numpy.
        Hard mode counts in int64, so counts stay exact past ``2**24``
        (where ``torch.histc``'s float32 counters saturate). A range whose width
        overflows the input's dtype raises (``torch.histc`` counts nothing there).

    Example:
        >>> import torch, softhist
        >>> x = torch.tensor([0.1, 0.4, 0.45, 0.9], requires_grad=True)
        >>> softhist.histc(x, bins=4, min=0, max=1, mode="hard")
        tensor([1., 2., 0., 1.])
        >>> h = softhist.histc(x, bins=4, min=0, max=1, bandwidth=0.05)
        >>> h.sum().backward()
        >>> x.grad.shape
        torch.Size([4])

        HL-Gauss value targets (Farebrother et al. 2024): each target's Gaussian
        mass over the bins, normalized to sum to one (0 for a target that reaches no bin).

        >>> y = torch.tensor([0.3, 0.95, 2.0])
        >>> targets = softhist.histc(y[:, None], bins=5, min=0, max=1, bandwidth=0.1, dim=1, normalize_samples=True)
        >>> targets.sum(1)
        tensor([1., 1., 0.])
    """
    if (
        type(input) is Tensor and type(bins) is int and weight is None and dim is None and group is None and type(backend) is str
        and type(min) in _PLAIN and type(max) in _PLAIN and (bandwidth is None or type(bandwidth) in _PLAIN)
        and type(kernel) is str and type(mode) is str and type(membership) is str and type(normalize_samples) is bool
        and not torch.compiler.is_compiling() and not torch.jit.is_tracing()
    ):  # the common call: its arguments checked and described once (data ranges excepted)
        call = _prepared_histc(input.dtype, input.device, bins, min, max, kernel, bandwidth, mode, membership, normalize_samples, backend)
        if call is not None:
            return call(input)
    _start(input, mode)
    bins = _checks.check_bin_count(bins)
    lo, hi = _checks.check_range(min, max, "histc range")
    group = _checks.check_group(group)
    out_dtype = _output_dtype(input.dtype)
    x, w, batch_shape = _flatten(_floating(input), weight, dim)
    _checks.check_cells(x.shape[0], (bins,))
    if lo == hi and (x.numel() > 0 or group is not None):
        data = _data_range(x, group)
        if data is not None:
            lo, hi = float(data[0]), float(data[1])
    if lo == hi:
        lo, hi = lo - 1.0, hi + 1.0
    _checks.check_width_fits(lo, hi, x.dtype)
    edges = _histc_edges(lo, hi, bins, x.dtype, x.device)
    hist = _bin(
        x, w, [edges], [(lo, hi)], hard_rule="histc",
        kernel=kernel, bandwidth=bandwidth, mode=mode, backend=backend, group=group,
        membership=membership, normalize_samples=normalize_samples, counts_dtype=out_dtype,
    )
    hist = hist.reshape(*batch_shape, bins)
    return hist if hist.dtype == out_dtype else hist.to(out_dtype)


_PLAIN = (int, float)  # hashable by value; bool is refused by the checks, not here


class _PreparedHistc:
    """An eager ``histc`` call on one row of every sample, no weight and no group, with its
    arguments checked and described once: what is left per call is what depends on the tensor."""

    __slots__ = ("edges", "binning", "backend", "out_dtype", "bins", "hard")

    def __init__(self, edges: Tensor, binning: Binning, backend: str, out_dtype: torch.dtype, bins: int) -> None:
        self.edges, self.binning, self.backend, self.out_dtype, self.bins = [edges], binning, backend, out_dtype, bins
        self.hard = binning.mode == "hard"

    def __call__(self, input: Tensor) -> Tensor:
        x = _floating(input)
        if self.hard:
            hist = _ops.hard_histogram(x.reshape(1, x.numel(), 1), None, self.edges, self.binning, self.backend, self.out_dtype)
            return hist.reshape(self.bins)
        hist = _ops.soft_histogram(x, None, None, self.edges, self.binning, self.backend, ((1, x.numel(), 1), (self.bins,)))
        return hist if hist.dtype == self.out_dtype else hist.to(self.out_dtype)


@functools.lru_cache(maxsize=64)  # as many as histc's edges kept (up to 65,537 each)
def _prepared_histc(
    dtype: torch.dtype, device: torch.device, bins: int, min: float, max: float, kernel: str, bandwidth: Optional[float],
    mode: str, membership: str, normalize_samples: bool, backend: str,
) -> Optional[_PreparedHistc]:
    """``histc``'s checks and description for the common eager call, in the general path's order
    (an error raises here, and so is never cached); None when the range comes from the data."""
    _checks.check_input_dtype(dtype, _checks.input_mode(mode))
    bins = _checks.check_bin_count(bins)
    lo, hi = _checks.check_range(min, max, "histc range")
    if lo == hi:
        return None
    backend = _checks.check_backend(backend)
    x_dtype = dtype if dtype.is_floating_point else torch.float64
    _checks.check_cells(1, (bins,))
    _checks.check_width_fits(lo, hi, x_dtype)
    edges = _histc_edges(lo, hi, bins, x_dtype, device)
    binning = _uniform_binning(kernel, mode, membership, normalize_samples, bandwidth, (bins,), ((lo, hi),), "histc")
    return _PreparedHistc(edges, binning, backend, _output_dtype(dtype), bins)


def histogram(
    input: Tensor,
    bins: Union[int, Tensor] = 100,
    *,
    range: Optional[Tuple[float, float]] = None,
    weight: Optional[Tensor] = None,
    density: bool = False,
    kernel: KernelArg = "gaussian",
    bandwidth: Bandwidth = None,
    mode: Mode = "soft",
    membership: Membership = "mass",
    normalize_samples: bool = False,
    dim: Dim = None,
    backend: BackendName = "auto",
    group: Optional["ProcessGroup"] = None,
) -> Tuple[Tensor, Tensor]:
    """Histogram with equal-width bins or explicit, possibly non-uniform edges.

    Differentiable analogue of :func:`numpy.histogram` / :func:`torch.histogram`.
    Gradients reach ``input``, ``weight``, ``bandwidth`` and, when ``bins`` is an
    edges tensor that requires grad, the edges.

    Args:
        input: samples, any shape ``(*)``; floating point (integers in hard mode).
        bins: number of equal-width bins, or ``B + 1`` edges (a 1-D tensor or a
            list): strictly increasing and finite for soft binning; in hard mode,
            as numpy, non-decreasing (equal neighbours make an empty bin), with
            infinite ends or integer values allowed.
        range: ``(min, max)`` for integer ``bins``; ``None``: the finite data's
            min and max, widened by 0.5 each side when equal (as numpy).
        weight: per-sample weights, same shape as ``input``, differentiable.
        density: divide by the total mass and the bin widths, as numpy does.
        kernel, bandwidth, mode, membership, normalize_samples, dim, backend, group:
            as in :func:`softhist.histc`.
            ``None`` bandwidth is half the mean bin width. With a group, ``range=None``
            and ``density`` use every rank's samples.

    Returns:
        ``(hist, bin_edges)``: ``hist`` of shape ``(*batch, B)`` in ``input``'s
        dtype (float32 for half-precision input; integer and bool input in
        float64, edges too, as numpy), and ``bin_edges`` of shape ``(B + 1,)``:
        a new tensor, also when ``bins`` is one (differentiable in it).

    Note:
        Hard mode equals ``numpy.histogram`` bit for bit, including edge ties
        from float rounding, where numpy and ``torch.histogram`` may disagree.
        Weighted counts sum in float64 (numpy sums float32 weights in float32),
        so they may differ from numpy's in the last bits, closer to the exact sum.
        Equal-width bins whose edges cannot be told apart in the data's dtype
        raise ``ValueError`` ("Too many bins for data range"), as numpy does.

    Example:
        >>> import torch, softhist
        >>> x = torch.tensor([0.0, 1.0, 1.0, 2.5, 3.0])
        >>> hist, edges = softhist.histogram(x, bins=3, mode="hard")
        >>> hist, edges
        (tensor([1., 2., 2.]), tensor([0., 1., 2., 3.]))
        >>> edges = torch.tensor([0.0, 1.0, 3.0], requires_grad=True)
        >>> hist, _ = softhist.histogram(x, bins=edges, bandwidth=0.2)
        >>> hist.sum().backward()
        >>> edges.grad.shape
        torch.Size([3])
    """
    governing = _start(input, mode)
    density = _checks.check_flag(density, "density")
    group = _checks.check_group(group)
    out_dtype = _output_dtype(input.dtype)
    x, w, batch_shape = _flatten(_floating(input), weight, dim)
    bins = _checks.as_edges(bins, x.device)
    _checks.check_cells(x.shape[0], (bins.shape[0] - 1 if isinstance(bins, Tensor) else _checks.check_bin_count(bins),))
    edges, uniform = _axis_edges(x, bins, range, "bins", "range", numpy_dd=False, group=group, hard=governing == "hard")
    hist = _bin(
        x, w, [edges], [uniform], hard_rule="edges",
        kernel=kernel, bandwidth=bandwidth, mode=mode, backend=backend, group=group,
        membership=membership, normalize_samples=normalize_samples, counts_dtype=None if density else out_dtype,
    )
    if density:
        hist = hist / torch.diff(edges).to(hist.dtype) / hist.sum(-1, keepdim=True)
    n_bins = edges.numel() - 1
    out_edges = bins.clone() if isinstance(bins, Tensor) else edges  # a new tensor (as numpy and torch return), still differentiable
    return hist.to(out_dtype).reshape(*batch_shape, n_bins), out_edges


def histogramdd(
    input: Tensor,
    bins: Union[int, Sequence[Union[int, Tensor]]] = 10,
    *,
    range: Optional[Sequence[Optional[Tuple[float, float]]]] = None,
    weight: Optional[Tensor] = None,
    density: bool = False,
    kernel: AxisKernels = "gaussian",
    bandwidth: Union[Bandwidth, Sequence[Union[float, Tensor]]] = None,
    mode: AxisModes = "soft",
    membership: AxisMemberships = "mass",
    normalize_samples: bool = False,
    backend: BackendName = "auto",
    group: Optional["ProcessGroup"] = None,
) -> Tuple[Tensor, List[Tensor]]:
    """Joint histogram of ``D``-dimensional samples.

    Differentiable analogue of :func:`numpy.histogramdd` / :func:`torch.histogramdd`.
    A sample's soft count in a cell is the product of its 1-D soft counts along
    each axis, ``w * prod_d a_d(x_d)``; it touches only the cells within the
    kernel's support, so nothing of size ``N x cells`` is built. Gradients reach
    ``input``, ``weight``, ``bandwidth`` and edges tensors that require grad.

    Args:
        input: samples, shape ``(*batch, N, D)``; the leading dims are batch dims.
            ``(N,)`` is one axis, as numpy reads it.
        bins: an int for every axis, or one entry per axis: an int or a 1-D
            tensor of strictly increasing edges.
        range: ``None``, or one entry per axis: ``(min, max)`` or ``None`` (the
            finite data's range, widened by 0.5 each side when empty, as numpy).
        weight: per-sample weights, shape ``(*batch, N)``, differentiable.
        density: divide by the total mass and the cell volumes, as numpy does.
        kernel: one kernel (see :func:`softhist.histc`) or one per axis.
        membership: ``"mass"`` or ``"center"`` (see :func:`softhist.histc`), one
            or one per axis.
        normalize_samples: divide each sample's cell values by their sum over all
            cells it reaches (the product of its per-axis sums), so it contributes
            exactly its weight.
        mode: one mode or one per axis. Axes may mix ``"hard"`` with ``"soft"``
            (or with ``"straight_through"``): a hard axis counts the sample in
            its own bin (numpy's rule, against the edges in the accumulation
            dtype) and passes no gradient to that coordinate, its edges or its
            bandwidth; its kernel and bandwidth are unused. ``"soft"`` and
            ``"straight_through"`` axes cannot be mixed.
        backend, group: as in :func:`softhist.histc`.
        bandwidth: one value for every axis or one per axis (floats, 0-d
            tensors or a 1-D tensor of length ``D``); standard deviations in
            data units. A centre-membership axis may take a 1-D tensor of one
            bandwidth per bin (in a list of per-axis values).
            ``None``: half of each axis's mean bin width.

    Returns:
        ``(hist, edges)``: ``hist`` of shape ``(*batch, B_0, ..., B_{D-1})`` in
        ``input``'s dtype (half-precision input in float32, integer input in
        float64), and a list of ``D`` edge tensors.

    Note:
        Hard mode equals ``numpy.histogramdd`` bit for bit (numpy computes edges
        from an explicit range in float64 and compares samples against them; so
        does softhist, then returns the edges in ``input``'s dtype).

    Example:
        >>> import torch, softhist
        >>> xy = torch.tensor([[0.1, 0.1], [0.6, 0.2], [0.7, 0.9]])
        >>> hist, edges = softhist.histogramdd(xy, bins=2, range=[(0, 1), (0, 1)], mode="hard")
        >>> hist
        tensor([[1., 0.],
                [1., 1.]])
        >>> xy = torch.rand(2, 100, 2, requires_grad=True)  # a batch of two point clouds
        >>> hist, _ = softhist.histogramdd(xy, bins=[4, 3], range=[(0, 1), (0, 1)], bandwidth=[0.1, 0.05])
        >>> hist.shape
        torch.Size([2, 4, 3])
        >>> hist.sum().backward()

        Per-axis kernels and modes: hard on the first axis, a quadratic B-spline on the second.

        >>> hist, _ = softhist.histogramdd(xy, bins=[4, 3], range=[(0, 1), (0, 1)],
        ...                                kernel=["box", "bspline2"], mode=["hard", "soft"])
        >>> hist.shape
        torch.Size([2, 4, 3])
    """
    governing = _start(input, mode)
    density = _checks.check_flag(density, "density")
    out_dtype = _output_dtype(input.dtype)
    input = _floating(input)
    if input.dim() == 1:  # (N,): one axis, as numpy reads a 1-D sample array
        input = input.unsqueeze(-1)
    if input.dim() < 2:
        raise ValueError(f"input must have shape (..., N, D), got shape {tuple(input.shape)}")
    dims = input.shape[-1]
    if dims == 0:
        raise ValueError(f"input must have at least one axis (D >= 1) in its last dimension, got shape {tuple(input.shape)}")
    _checks.check_weight(weight, input.shape[:-1], f"the input without its last dim, {tuple(input.shape[:-1])}", input.device)
    group = _checks.check_group(group)
    bins_per_axis = [_checks.as_edges(b, input.device) for b in _per_axis(bins, dims, "bins")]
    counts = [b.shape[0] - 1 if isinstance(b, Tensor) else _checks.check_bin_count(b, f"bins[{d}]") for d, b in enumerate(bins_per_axis)]
    ranges = [None] * dims if range is None else _per_axis(range, dims, "range", pairs=True)
    batch_shape = tuple(input.shape[:-2])
    rows = math.prod(batch_shape)
    _checks.check_cells(rows, counts)
    x = input.reshape(rows, input.shape[-2], dims)  # explicit sizes: -1 is ambiguous for an empty batch
    w = None if weight is None else weight.reshape(rows, input.shape[-2])
    axis_edges = [
        _axis_edges(x[..., d], b, r, f"bins[{d}]", f"range[{d}]", numpy_dd=True, group=group, hard=governing == "hard")
        for d, (b, r) in enumerate(zip(bins_per_axis, ranges))
    ]
    edges = [e for e, _ in axis_edges]
    hist = _bin(
        x, w, edges, [u for _, u in axis_edges], hard_rule="edges",
        kernel=kernel, bandwidth=bandwidth, mode=mode, backend=backend, group=group,
        membership=membership, normalize_samples=normalize_samples, counts_dtype=None if density else out_dtype,
    )
    if density:
        total = hist.flatten(1).sum(1).view(-1, *([1] * dims))
        for d, e in enumerate(edges):
            hist = hist / torch.diff(e).to(hist.dtype).view(*([1] * (d + 1)), -1, *([1] * (dims - d - 1)))
        hist = hist / total
    shape = tuple(e.numel() - 1 for e in edges)
    edge_dtype = input.dtype  # float64 for integer input (binned as float64)
    out_edges = [b.clone() if isinstance(b, Tensor) else e.to(edge_dtype) for b, e in zip(bins_per_axis, edges)]
    return hist.to(out_dtype).reshape(*batch_shape, *shape), out_edges


def histogram2d(
    x: Tensor,
    y: Tensor,
    bins: Union[int, Tensor, Sequence[Union[int, Tensor]]] = 10,
    *,
    range: Optional[Sequence[Optional[Tuple[float, float]]]] = None,
    weight: Optional[Tensor] = None,
    density: bool = False,
    kernel: AxisKernels = "gaussian",
    bandwidth: Union[Bandwidth, Sequence[Union[float, Tensor]]] = None,
    mode: AxisModes = "soft",
    membership: AxisMemberships = "mass",
    normalize_samples: bool = False,
    backend: BackendName = "auto",
    group: Optional["ProcessGroup"] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Joint histogram of paired samples ``x`` and ``y``.

    Differentiable analogue of :func:`numpy.histogram2d`: ``histogramdd`` on
    ``stack([x, y], -1)``.

    Args:
        x, y: samples of the same shape ``(*batch, N)``.
        bins: an int, a pair of ints, one edges tensor for both axes, or a pair
            of edges tensors (or mixed).
        range: ``[(xmin, xmax), (ymin, ymax)]`` or ``None``.
        weight, density, kernel, bandwidth, mode, membership, normalize_samples, backend, group: as in :func:`histogramdd`
            (``kernel``, ``bandwidth`` and ``mode`` one value or a pair).

    Returns:
        ``(hist, xedges, yedges)``, ``hist`` of shape ``(*batch, Bx, By)``.

    Example:
        >>> import torch, softhist
        >>> x, y = torch.tensor([0.1, 0.6, 0.7]), torch.tensor([0.1, 0.2, 0.9])
        >>> softhist.histogram2d(x, y, bins=2, range=[(0, 1), (0, 1)], mode="hard")[0]
        tensor([[1., 0.],
                [1., 1.]])
    """
    governing = _checks.input_mode(mode)
    for name, value in (("x", x), ("y", y)):
        _checks.check_input(value, governing, name)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if isinstance(bins, Tensor) or (
        isinstance(bins, (list, tuple)) and len(bins) != 2 and all(isinstance(v, numbers.Real) for v in bins)
    ) or (
        hasattr(bins, "__array__") and getattr(bins, "ndim", 0) == 1
    ):
        bins = [bins, bins]  # one edges tensor (or list of edges) for both axes, as numpy
    hist, (xedges, yedges) = histogramdd(
        torch.stack([x, y], -1), bins, range=range, weight=weight, density=density,
        kernel=kernel, bandwidth=bandwidth, mode=mode, backend=backend, group=group,
        membership=membership, normalize_samples=normalize_samples,
    )
    return hist, xedges, yedges


def _pool_sizes(value: object, spatial: int, name: str, *, minimum: int) -> Tuple[int, ...]:
    """An int for every spatial dim, or one per spatial dim (as torch's pooling takes them)."""
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,) * spatial
    if len(values) != spatial or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum for v in values):
        raise ValueError(f"{name} must be an int >= {minimum} or {spatial} of them (one per spatial dim), got {value!r}")
    return tuple(int(v) for v in values)


def _window_sums(values: Tensor, dim: int, size: int, stride: int, padding: int, count: int) -> Tensor:
    """Sums of ``count`` windows of ``size`` along ``dim``, ``stride`` apart, over zero padding: a
    sum-pool, separable over the spatial dims (``k`` adds per dim instead of ``k^d`` per window);
    padding adds nothing. One output-sized buffer forward and one input-sized buffer backward."""
    return _WindowSums.apply(values, dim, size, stride, padding, count)


def _strided(t: Tensor, dim: int, start: int, count: int, stride: int) -> Tensor:
    """``count`` entries of ``t`` along ``dim``, from ``start``, ``stride`` apart (a view)."""
    part = t.narrow(dim, start, (count - 1) * stride + 1)
    return part if stride == 1 else part.unfold(dim, 1, stride).squeeze(-1)


class _WindowSums(torch.autograd.Function):
    """:func:`_window_sums`; its backward (the adjoint: each output's gradient added back onto its
    window) is written in differentiable ops, so second derivatives flow through it."""

    @staticmethod
    def forward(ctx, values, dim, size, stride, padding, count):
        ctx.args = (dim, size, stride, padding, count, values.shape[dim])
        return _window_sums_forward(values, dim, size, stride, padding, count)

    @staticmethod
    def backward(ctx, grad):
        dim, size, stride, padding, count, length = ctx.args
        shape = list(grad.shape)
        shape[dim] = length + 2 * padding
        spread = grad.new_zeros(shape)
        for j in range(size):
            if torch.is_grad_enabled():  # build a graph: out-of-place, through index_add
                positions = torch.arange(count, device=grad.device) * stride + j
                spread = spread.index_add(dim, positions, grad)
            else:
                _strided(spread, dim, j, count, stride).add_(grad)
        return spread.narrow(dim, padding, length), None, None, None, None, None


def _window_sums_forward(values: Tensor, dim: int, size: int, stride: int, padding: int, count: int) -> Tensor:
    pads = [0, 0] * (values.dim() - 1 - dim) + [padding, padding]
    padded = torch.nn.functional.pad(values, pads) if padding else values
    total = _strided(padded, dim, 0, count, stride).clone()
    for j in range(1, size):
        total += _strided(padded, dim, j, count, stride)
    return total


def local_histogram(
    input: Tensor,
    bins: int,
    range: Optional[Tuple[float, float]],
    kernel_size: Union[int, Sequence[int]],
    stride: Union[int, Sequence[int], None] = None,
    padding: Union[int, Sequence[int]] = 0,
    *,
    kernel: KernelArg = "gaussian",
    bandwidth: Bandwidth = None,
    membership: Membership = "mass",
    normalize_samples: bool = False,
    mode: Mode = "soft",
    backend: BackendName = "auto",
) -> Tensor:
    """Sliding-window histograms of images: one histogram per channel and window, like pooling.

    Differentiable local histograms in the layout of :func:`torch.nn.functional.avg_pool2d`
    (1 to 3 spatial dims): the histogram of the window at each output position, of every
    channel separately. Parity: GatorSense's histogram layer (1x1 convolutions, an RBF and
    ``AvgPool2d``) is ``kernel="gaussian", membership="center"`` up to its constant factors
    (it averages where this counts).

    One engine pass gives each pixel's soft memberships ``(pixels, bins)``, then a sum-pool over
    the windows adds them up: memory ``O(input x bins + output)``, never windows x window volume x
    bins; gradients reach ``input`` (and a tensor ``bandwidth``) through both.

    Args:
        input: ``(B, C, *spatial)`` with 1 to 3 spatial dims; floating point.
        bins: number of equal-width bins on ``range``, ``>= 1``.
        range: ``(min, max)``; ``None``: the finite data's range (one host sync).
        kernel_size: window size, an int or one per spatial dim.
        stride: window step (default ``kernel_size``), an int or one per spatial dim.
        padding: implicit zero padding on each side, at most half the window; as with
            ``count_include_pad=False`` it adds no samples: windows count only real pixels.
        kernel, bandwidth, membership, normalize_samples, mode, backend: as in
            :func:`softhist.histc` (with ``normalize_samples=True`` each pixel adds exactly 1
            to every window holding it).

    Returns:
        ``(B, C, bins, *out_spatial)`` in ``input``'s dtype, ``out_spatial`` as
        :func:`torch.nn.functional.avg_pool2d` computes it (``floor((L + 2p - k) / s) + 1``);
        a view of a ``(B, C, *out_spatial, bins)`` tensor (call ``.contiguous()`` for a copy).

    Example:
        >>> import torch, softhist
        >>> image = torch.rand(2, 3, 32, 32, requires_grad=True)
        >>> h = softhist.local_histogram(image, 8, (0, 1), kernel_size=5, stride=1, padding=2)
        >>> h.shape
        torch.Size([2, 3, 8, 32, 32])
        >>> h.sum().backward()
        >>> counts = softhist.local_histogram(image, 8, (0, 1), 4, mode="hard")  # non-overlapping 4x4 patches
        >>> counts.sum(2).unique()
        tensor([16.])
    """
    _start(input, mode)
    if not 3 <= input.dim() <= 5:
        raise ValueError(f"input must have shape (B, C, *spatial) with 1 to 3 spatial dims, got shape {tuple(input.shape)}")
    spatial = input.dim() - 2
    bins = _checks.check_bin_count(bins)
    size = _pool_sizes(kernel_size, spatial, "kernel_size", minimum=1)
    step = size if stride is None else _pool_sizes(stride, spatial, "stride", minimum=1)
    pad = _pool_sizes(padding, spatial, "padding", minimum=0)
    if any(2 * p > k for p, k in zip(pad, size)):
        raise ValueError(f"padding must be at most half of kernel_size, got padding={padding!r}, kernel_size={kernel_size!r}")
    lengths = tuple(input.shape[2:])
    out_spatial = tuple((n + 2 * p - k) // s + 1 for n, p, k, s in zip(lengths, pad, size, step))
    if any(n + 2 * p < k for n, p, k in zip(lengths, pad, size)):
        raise ValueError(f"kernel_size={kernel_size!r} is larger than the padded input {tuple(n + 2 * p for n, p in zip(lengths, pad))}")
    out_dtype = _output_dtype(input.dtype)
    x = input.reshape(-1, 1, 1)  # one-sample rows: each pixel's memberships
    edges, uniform = _axis_edges(x[..., 0], bins, range, "bins", "range", numpy_dd=False, hard=mode == "hard")
    _checks.check_cells(x.shape[0], (bins,))
    per_pixel = _bin(
        x, None, [edges], [uniform], hard_rule="edges", kernel=kernel, bandwidth=bandwidth, mode=mode, backend=backend,
        membership=membership, normalize_samples=normalize_samples,
    )
    batch, channels = input.shape[:2]
    # Windows are summed with the bins last (no copy of the memberships); the result is a view
    # with the bins moved in front of the spatial dims.
    pooled = per_pixel.to(out_dtype).view(batch, channels, *lengths, bins)
    for d, (k, s, p, n) in enumerate(zip(size, step, pad, out_spatial)):
        pooled = _window_sums(pooled, d + 2, k, s, p, n)
    return pooled.movedim(-1, 2)


for _public in (histc, histogram, histogramdd, histogram2d, local_histogram):
    _public.__prepare_scriptable__ = _checks.refuse_torchscript  # torch.jit.script(histc) says what to use

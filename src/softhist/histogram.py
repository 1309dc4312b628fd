"""Public API: differentiable ``histc`` and ``histogram``.

Each public function validates its arguments, flattens the input once to
``(batch, n)``, picks the backend in one place (``_select_backend``) and
restores the batch shape at the end.
"""

from __future__ import annotations

import math
import numbers
from typing import Literal, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from . import _torch_backend
from ._torch_backend import Binning, accumulation_dtype
from .kernels import KernelName, get_kernel

__all__ = ["histc", "histogram"]

Mode = Literal["soft", "hard", "straight_through"]
BackendName = Literal["auto", "torch", "triton"]
Bandwidth = Union[float, Tensor, None]
Dim = Union[int, Sequence[int], None]

MODES = ("soft", "hard", "straight_through")
BACKENDS = ("auto", "torch", "triton")
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# --------------------------------------------------------------------------- validation


def _check_input(input: Tensor, mode: str, name: str = "input") -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(input).__name__}")
    if input.is_complex():
        raise TypeError(f"{name} must be real, got dtype {input.dtype}")
    if mode != "hard" and input.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be floating point for mode={mode!r} (got dtype {input.dtype}); "
            "cast it, or use mode='hard' for exact counts of integer data"
        )


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    return mode


def _check_bin_count(bins: object, name: str = "bins") -> int:
    if isinstance(bins, bool) or not isinstance(bins, numbers.Integral) or bins < 1:
        raise ValueError(f"{name} must be a positive integer, got {bins!r}")
    return int(bins)


def _check_number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _check_range(lo: object, hi: object, name: str) -> Tuple[float, float]:
    lo, hi = _check_number(lo, f"{name} (min)"), _check_number(hi, f"{name} (max)")
    if lo > hi:
        raise ValueError(f"{name}: min must not exceed max, got min={lo}, max={hi}")
    return lo, hi


def _check_edges(edges: Tensor, name: str = "bins") -> Tensor:
    """Explicit bin edges: 1-D, floating, finite, strictly increasing (one host sync)."""
    if edges.dim() != 1 or edges.numel() < 2:
        raise ValueError(f"{name} as a tensor must be 1-D bin edges with at least 2 entries, got shape {tuple(edges.shape)}")
    if edges.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} as edges must be floating point, got dtype {edges.dtype}")
    e = edges.detach()
    if not bool(torch.isfinite(e).all()):
        raise ValueError(f"{name} must be finite, got {e.tolist() if e.numel() <= 8 else e}")
    if not bool((e[1:] > e[:-1]).all()):
        raise ValueError(f"{name} must be strictly increasing, got {e.tolist() if e.numel() <= 8 else e}")
    return edges


def _resolve_bandwidth(bandwidth: Bandwidth, default: float, dtype: torch.dtype, device: torch.device) -> Tuple[Tensor, float]:
    """The bandwidth as a 0-d tensor (kept differentiable) and as a float (to size windows)."""
    if bandwidth is None:
        value = default
        tensor = torch.tensor(value, dtype=dtype, device=device)
    elif isinstance(bandwidth, Tensor):
        if bandwidth.dim() != 0:
            raise ValueError(f"bandwidth must be a float or a 0-d tensor, got shape {tuple(bandwidth.shape)}")
        if bandwidth.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"bandwidth must be floating point, got dtype {bandwidth.dtype}")
        value = float(bandwidth.detach())  # one host sync: windows are sized from the value
        tensor = bandwidth.to(dtype=dtype, device=device)
    else:
        value = _check_number(bandwidth, "bandwidth")
        tensor = torch.tensor(value, dtype=dtype, device=device)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"bandwidth must be positive and finite, got {value}")
    return tensor, value


def _select_backend(x: Tensor, backend: str):
    """The one place that decides which engine runs."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend == "triton":
        raise ValueError(
            "backend='triton' is not available: this build of softhist has no Triton kernels; "
            "use backend='auto' or 'torch'"
        )
    return _torch_backend


# --------------------------------------------------------------------------- shapes


def _sample_dims(ndim: int, dim: Dim) -> Tuple[int, ...]:
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, numbers.Integral) else tuple(dim)
    out = []
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral):
            raise TypeError(f"dim must be an int or a sequence of ints, got {dim!r}")
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise IndexError(f"dim {d} is out of range for an input with {ndim} dimensions")
        out.append(int(d) % max(ndim, 1))
    if len(set(out)) != len(out):
        raise ValueError(f"dim must not repeat a dimension, got {dim!r}")
    return tuple(out)


def _flatten(input: Tensor, weight: Optional[Tensor], dim: Dim) -> Tuple[Tensor, Optional[Tensor], Tuple[int, ...]]:
    """Move the sample dims last and flatten to ``(batch, n)``; return the batch shape."""
    if weight is not None:
        if not isinstance(weight, Tensor):
            raise TypeError(f"weight must be a torch.Tensor or None, got {type(weight).__name__}")
        if weight.shape != input.shape:
            raise ValueError(f"weight must have the input's shape {tuple(input.shape)}, got {tuple(weight.shape)}")
        if weight.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"weight must be floating point, got dtype {weight.dtype}")
    if input.dim() == 0:
        input = input.reshape(1)
        weight = None if weight is None else weight.reshape(1)
    dims = _sample_dims(input.dim(), dim)
    batch_dims = [d for d in range(input.dim()) if d not in dims]
    batch_shape = tuple(input.shape[d] for d in batch_dims)
    order = batch_dims + list(dims)
    rows = math.prod(batch_shape)
    x = input.permute(order).reshape(rows, -1)
    w = None if weight is None else weight.permute(order).reshape(rows, -1)
    return x, w, batch_shape


def _output_dtype(input: Tensor) -> torch.dtype:
    return input.dtype if input.is_floating_point() else torch.get_default_dtype()


def _finite_range(x: Tensor) -> Optional[Tuple[Tensor, Tensor]]:
    """Min and max of the finite samples, in x's dtype; None when there are none (host sync)."""
    finite = x[torch.isfinite(x)]
    if finite.numel() == 0:
        return None
    return torch.aminmax(finite)


def _numpy_edges(lo: Tensor, hi: Tensor, bins: int, dtype: torch.dtype) -> Tensor:
    """``numpy.linspace(lo, hi, bins + 1)`` computed in lo's dtype, then cast to ``dtype``."""
    step = (hi - lo) / bins
    edges = torch.arange(bins + 1, dtype=lo.dtype, device=lo.device) * step + lo
    edges[-1] = hi
    return edges.to(dtype)


# --------------------------------------------------------------------------- engine entry


def _bin(
    x: Tensor,
    weight: Optional[Tensor],
    edges: Tensor,
    *,
    bins: int,
    uniform: Optional[Tuple[float, float]],
    hard_rule: str,
    kernel: str,
    bandwidth: Bandwidth,
    mode: str,
    backend: str,
) -> Tensor:
    """``(rows, n)`` -> ``(rows, bins)``: hard counts in float64, soft in the accumulation dtype."""
    kernel_entry = get_kernel(kernel)
    engine = _select_backend(x, backend)
    acc = accumulation_dtype(x.dtype if x.is_floating_point() else torch.float64)
    lo, hi = uniform if uniform is not None else (float(edges[0].detach()), float(edges[-1].detach()))
    default_bandwidth = 0.5 * (hi - lo) / bins  # half the (mean) bin width
    bandwidth_tensor, bandwidth_value = _resolve_bandwidth(bandwidth, default_bandwidth, acc, x.device)
    binning = Binning(kernel_entry, mode, bins, bandwidth_value, uniform, hard_rule)
    if mode == "hard":
        if not x.is_floating_point():
            x = x.to(torch.float64)
        return engine.hard_histogram(x, weight, edges, binning)
    return engine.soft_histogram(x, weight, edges.to(acc), bandwidth_tensor, binning)


def histc(
    input: Tensor,
    bins: int = 100,
    min: float = 0.0,
    max: float = 0.0,
    *,
    kernel: KernelName = "gaussian",
    bandwidth: Bandwidth = None,
    mode: Mode = "soft",
    weight: Optional[Tensor] = None,
    dim: Dim = None,
    backend: BackendName = "auto",
) -> Tensor:
    """Histogram with equal-width bins between ``min`` and ``max``.

    Differentiable analogue of :func:`torch.histc`. In soft mode a sample ``x``
    of weight ``w`` puts ``w * (F((e[k+1] - x)/h) - F((e[k] - x)/h))`` into bin
    ``k``, where ``F`` is the kernel's CDF and ``h`` the bandwidth; gradients
    reach ``input``, ``weight`` and ``bandwidth``.

    Args:
        input: samples, any shape ``(*)``; floating point (integers in hard mode).
        bins: number of bins, ``>= 1``.
        min, max: the range. ``min == max`` (the default) means the range of the
            finite data, as in ``torch.histc`` (one host sync).
        kernel: ``"gaussian"``, ``"logistic"``, ``"box"``, ``"triangular"``,
            ``"epanechnikov"`` or ``"bspline"``.
        bandwidth: kernel standard deviation in data units, a float or a 0-d
            tensor (may require grad). ``None``: half a bin width.
        mode: ``"soft"``; ``"hard"`` for exact counts, equal to ``torch.histc``;
            ``"straight_through"`` for hard counts forward, soft gradients back.
        weight: per-sample weights, same shape as ``input``, differentiable.
        dim: the sample dimensions; the others are batch dimensions kept in
            front of the bins axis. ``None``: all dimensions.
        backend: ``"auto"`` or ``"torch"``.

    Returns:
        Tensor of shape ``(*batch, bins)`` in ``input``'s dtype.

    Note:
        Bins are ``[e_k, e_{k+1})``, the last one closed. Soft mass near the range
        ends spills outside and is not counted. NaN and infinite samples are
        ignored. Hard mode counts in int64, so counts stay exact past ``2**24``.

    Example:
        >>> import torch, softhist
        >>> x = torch.tensor([0.1, 0.4, 0.45, 0.9], requires_grad=True)
        >>> softhist.histc(x, bins=4, min=0, max=1, mode="hard")
        tensor([1., 2., 0., 1.])
        >>> h = softhist.histc(x, bins=4, min=0, max=1, bandwidth=0.05)
        >>> h.sum().backward()
        >>> x.grad.shape
        torch.Size([4])
    """
    mode = _check_mode(mode)
    _check_input(input, mode)
    bins = _check_bin_count(bins)
    lo, hi = _check_range(min, max, "histc range")
    x, w, batch_shape = _flatten(input, weight, dim)
    if lo == hi and x.numel() > 0:
        data = _finite_range(x)
        if data is not None:
            lo, hi = float(data[0]), float(data[1])
    if lo == hi:
        lo, hi = lo - 1.0, hi + 1.0
    compute = x.dtype if x.is_floating_point() else torch.float64
    edges = torch.linspace(lo, hi, bins + 1, dtype=compute, device=x.device)
    hist = _bin(
        x, w, edges, bins=bins, uniform=(lo, hi), hard_rule="histc",
        kernel=kernel, bandwidth=bandwidth, mode=mode, backend=backend,
    )
    return hist.to(_output_dtype(input)).reshape(*batch_shape, bins)


def histogram(
    input: Tensor,
    bins: Union[int, Tensor] = 100,
    *,
    range: Optional[Tuple[float, float]] = None,
    weight: Optional[Tensor] = None,
    density: bool = False,
    kernel: KernelName = "gaussian",
    bandwidth: Bandwidth = None,
    mode: Mode = "soft",
    dim: Dim = None,
    backend: BackendName = "auto",
) -> Tuple[Tensor, Tensor]:
    """Histogram with equal-width bins or explicit, possibly non-uniform edges.

    Differentiable analogue of :func:`numpy.histogram` / :func:`torch.histogram`.
    Gradients reach ``input``, ``weight``, ``bandwidth`` and, when ``bins`` is an
    edges tensor that requires grad, the edges.

    Args:
        input: samples, any shape ``(*)``; floating point (integers in hard mode).
        bins: number of equal-width bins, or a 1-D tensor of ``B + 1`` strictly
            increasing edges.
        range: ``(min, max)`` for integer ``bins``; ``None``: the finite data's
            min and max, widened by 0.5 each side when equal (as numpy).
        weight: per-sample weights, same shape as ``input``, differentiable.
        density: divide by the total mass and the bin widths, as numpy does.
        kernel, bandwidth, mode, dim, backend: as in :func:`softhist.histc`.
            ``None`` bandwidth is half the mean bin width.

    Returns:
        ``(hist, bin_edges)``: ``hist`` of shape ``(*batch, B)`` in ``input``'s
        dtype, and ``bin_edges`` of shape ``(B + 1,)``.

    Note:
        Hard mode equals ``numpy.histogram`` bit for bit, including edge ties
        from float rounding, where numpy and ``torch.histogram`` may disagree.

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
    mode = _check_mode(mode)
    _check_input(input, mode)
    x, w, batch_shape = _flatten(input, weight, dim)
    out_dtype = _output_dtype(input)
    if isinstance(bins, Tensor):
        if range is not None:
            raise ValueError(f"range must be None when bins is an edges tensor, got range={range!r}")
        edges = _check_edges(bins)
        n_bins, uniform = edges.numel() - 1, None
        edges_for_bins = edges.to(device=x.device)
    else:
        n_bins = _check_bin_count(bins)
        compute = x.dtype if x.is_floating_point() else torch.float64
        if range is not None:
            if not isinstance(range, (tuple, list)) or len(range) != 2:
                raise ValueError(f"range must be a (min, max) pair, got {range!r}")
            lo, hi = _check_range(range[0], range[1], "range")
            if lo == hi:
                lo, hi = lo - 0.5, hi + 0.5
            lo_t, hi_t = (torch.tensor(v, dtype=torch.float64, device=x.device) for v in (lo, hi))
        else:
            data = _finite_range(x) if x.numel() else None
            lo_t, hi_t = data if data is not None else (torch.zeros((), dtype=compute), torch.ones((), dtype=compute))
            lo_t, hi_t = lo_t.to(compute), hi_t.to(compute)
            if bool(lo_t == hi_t):
                lo_t, hi_t = lo_t - 0.5, hi_t + 0.5
        edges_for_bins = _numpy_edges(lo_t, hi_t, n_bins, compute)
        edges = edges_for_bins.to(out_dtype)
        uniform = (float(lo_t), float(hi_t))
    hist = _bin(
        x, w, edges_for_bins, bins=n_bins, uniform=uniform, hard_rule="edges",
        kernel=kernel, bandwidth=bandwidth, mode=mode, backend=backend,
    )
    if density:
        widths = torch.diff(edges_for_bins).to(hist.dtype)
        hist = hist / widths / hist.sum(-1, keepdim=True)
    return hist.to(out_dtype).reshape(*batch_shape, n_bins), edges

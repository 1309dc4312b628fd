"""Public API: differentiable ``histc`` and ``histogram``.

Each public function validates its arguments, flattens the input once to
``(batch, n)``, picks the backend in one place (``_select_backend``) and
restores the batch shape at the end.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import TYPE_CHECKING, Dict, List, Literal, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
from torch import Tensor

from . import _cpp_backend, _ops, _torch_backend
from ._plan import accumulation_dtype
from .kernels import KernelName, get_kernel

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = ["backends", "histc", "histogram", "histogram2d", "histogramdd"]

Mode = Literal["soft", "hard", "straight_through"]
AxisModes = Union[Mode, Sequence[Mode]]  # one mode, or one per axis (joint histograms)
AxisKernels = Union[KernelName, Sequence[KernelName]]  # one kernel, or one per axis
BackendName = Literal["auto", "torch", "cpp", "triton"]
Bandwidth = Union[float, Tensor, None]
Dim = Union[int, Sequence[int], None]

MODES = ("soft", "hard", "straight_through")
BACKENDS = ("auto", "torch", "cpp", "triton")
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


def _input_mode(mode: object) -> str:
    """Validate ``mode`` (one, or one per axis) and return the mode that governs the input's
    dtype: ``"hard"`` when every axis is hard (integer data allowed), ``"soft"`` otherwise."""
    if isinstance(mode, (list, tuple)):
        if not mode:
            raise ValueError(f"mode must be a mode or one mode per axis, got {mode!r}")
        modes = [_check_mode(m) for m in mode]
        return "hard" if all(m == "hard" for m in modes) else "soft"
    return _check_mode(mode)


def _axis_options(value: object, dims: int, name: str) -> list:
    """One value for every axis, or a list or tuple of ``dims`` values."""
    if isinstance(value, (list, tuple)):
        if len(value) != dims:
            raise ValueError(f"{name} must be one value or one per axis (D = {dims}), got {len(value)}: {value!r}")
        return list(value)
    return [value] * dims


def _call_mode(mode: object, dims: int) -> Tuple[str, Tuple[bool, ...]]:
    """The engine's mode for per-axis ``mode`` values, and which axes are hard within it.

    All hard: ``"hard"``. Hard axes mixed with soft ones: ``"soft"``; with
    straight-through ones: ``"straight_through"`` (hard counts forward, the soft
    axes' gradient backward). Soft and straight-through axes cannot be mixed.
    """
    modes = [_check_mode(m) for m in _axis_options(mode, dims, "mode")]
    kinds = set(modes)
    if kinds == {"hard"}:
        return "hard", (False,) * dims
    if {"soft", "straight_through"} <= kinds:
        raise ValueError(
            f"mode cannot mix 'soft' and 'straight_through' axes, got {mode!r}; "
            "make each axis 'soft' or 'hard', or each 'straight_through' or 'hard'"
        )
    return ("soft" if "soft" in kinds else "straight_through"), tuple(m == "hard" for m in modes)


# Largest bin count: more would overflow the int64 cell indices of a batch of histograms.
_MAX_BINS = 2**40


def _check_bin_count(bins: object, name: str = "bins") -> int:
    if isinstance(bins, bool) or not isinstance(bins, numbers.Integral) or bins < 1:
        raise ValueError(f"{name} must be a positive integer, got {bins!r}")
    if bins > _MAX_BINS:
        raise ValueError(f"{name} must be a positive integer of at most 2**40, got {bins!r}")
    return int(bins)


def _check_flag(value: object, name: str) -> bool:
    if not isinstance(value, (bool, numbers.Integral)) or value not in (0, 1):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def _check_number(value: object, name: str) -> float:
    if isinstance(value, Tensor) and value.dim() == 0 and not (value.is_complex() or value.dtype == torch.bool):
        value = value.item()  # a 0-d tensor, as torch.histc accepts (one host sync)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _check_range(lo: object, hi: object, name: str) -> Tuple[float, float]:
    lo, hi = _check_number(lo, f"{name} (min)"), _check_number(hi, f"{name} (max)")
    if lo > hi:
        raise ValueError(f"{name}: min must not exceed max, got min={lo}, max={hi} (max must be larger than or equal to min)")
    return lo, hi


def _as_edges(bins: object, device: torch.device) -> object:
    """Edges given as a list or tuple of numbers become a float64 tensor (as numpy reads them)."""
    if isinstance(bins, (list, tuple)) and all(isinstance(v, numbers.Real) for v in bins):
        return torch.tensor([float(v) for v in bins], dtype=torch.float64, device=device)
    return bins


def _check_edges(edges: Tensor, name: str = "bins", hard: bool = False) -> Tensor:
    """Explicit bin edges, 1-D (one host sync); returns them as the engine compares with them.

    Soft binning needs floating, finite, strictly increasing edges. Hard counts follow
    numpy: integer edges, infinite ends and equal neighbours (an empty bin) are fine.
    """
    if edges.dim() != 1 or edges.numel() < 2:
        raise ValueError(f"{name} as edges must be 1d with at least 2 entries, got shape {tuple(edges.shape)}")
    if edges.is_complex() or (not hard and edges.dtype not in _FLOAT_DTYPES):
        raise TypeError(f"{name} as edges must be floating point, got dtype {edges.dtype}")
    if torch.compiler.is_compiling() or edges.device.type == "meta":
        return edges if edges.dtype in _FLOAT_DTYPES else edges.to(torch.float64)  # checked inside the op
    e = edges.detach() if edges.dtype in _FLOAT_DTYPES else edges.to(torch.float64)
    shown = e.tolist() if e.numel() <= 8 else e
    if bool(torch.isnan(e).any()) or not (hard or bool(torch.isfinite(e).all())):
        raise ValueError(f"{name} must be finite, got {shown}")
    if hard and not bool((e[1:] >= e[:-1]).all()):
        raise ValueError(f"{name} must increase monotonically, got {shown}")
    if not hard and not bool((e[1:] > e[:-1]).all()):
        raise ValueError(f"{name} must be strictly increasing, got {shown} (mode='hard' accepts equal neighbours)")
    return edges if edges.dtype in _FLOAT_DTYPES else e


def _bandwidth_value(value: object, name: str) -> Union[float, Tensor]:
    """One axis's bandwidth: a positive, finite number, or a 0-d floating tensor (its value is
    checked inside the op that reads it, so a tensor costs no host sync here)."""
    if isinstance(value, Tensor):
        if value.dim() != 0:
            raise ValueError(f"{name} must be a float or a 0-d tensor, got shape {tuple(value.shape)}")
        if value.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name} must be floating point, got dtype {value.dtype}")
        return value
    number = _check_number(value, name)
    if not number > 0:
        raise ValueError(f"{name} must be positive and finite, got {number}")
    return number


def _resolve_bandwidth(bandwidth: object, defaults: Sequence[Union[float, Tensor]], dtype: torch.dtype, device: torch.device) -> Tensor:
    """Per-axis bandwidths as a ``(D,)`` tensor, kept differentiable.

    ``bandwidth`` is None (``defaults``), one value for every axis, or one per axis
    (a sequence, or a 1-D tensor of length D).
    """
    dims = len(defaults)
    if bandwidth is None:
        parts = list(defaults)
    else:
        if isinstance(bandwidth, Tensor) and bandwidth.dim() == 1 and dims > 1:
            bandwidth = list(bandwidth.unbind())
        if isinstance(bandwidth, (list, tuple)):
            if len(bandwidth) != dims:
                raise ValueError(f"bandwidth must have one value per axis ({dims}), got {len(bandwidth)}")
            parts = [_bandwidth_value(v, f"bandwidth[{d}]") for d, v in enumerate(bandwidth)]
        else:
            parts = [_bandwidth_value(bandwidth, "bandwidth")] * dims
    tensors = [v.to(dtype=dtype, device=device) if isinstance(v, Tensor) else torch.tensor(v, dtype=dtype, device=device) for v in parts]
    return torch.stack(tensors)


def _select_backend(x: Tensor, backend: str):
    """The one place that decides which engine runs.

    ``"auto"`` takes the native C++ kernels for CPU tensors and the fused Triton kernels for
    CUDA tensors, where they are available, and the torch engine otherwise (saying once why,
    when the native kernels are missing). ``"cpp"`` and ``"triton"`` never fall back: they
    raise if their kernels cannot run on ``x``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        return _torch_backend
    if backend == "cpp" or (backend == "auto" and x.device.type == "cpu"):
        reason = _cpp_backend.unavailable_reason()
        if reason is None and x.device.type == "cpu":
            return _cpp_backend
        if backend == "auto":
            _say_once(f"{reason}; CPU histograms run on the slower torch engine (see the README's \"Installing\")")
            return _torch_backend
        raise ValueError(
            f"backend='cpp' cannot run here: {reason or f'the input is on {x.device}, the native kernels take CPU tensors'}; "
            "use backend='auto' or 'torch'"
        )
    if backend == "auto" and not x.is_cuda:
        return _torch_backend
    reason = _triton_unavailable_reason(x)
    if reason is None:
        from . import _triton_backend

        return _triton_backend
    if backend == "auto":
        return _torch_backend
    raise ValueError(f"backend='triton' cannot run here: {reason}; use backend='auto' or 'torch'")


def _triton_unavailable_reason(x: Optional[Tensor]) -> Optional[str]:
    try:
        from . import _triton_backend
    except ImportError as error:
        return f"it needs the triton package ({error}); install it with `pip install softhist[triton]`"
    return None if x is None else _triton_backend.unavailable_reason(x)


_SAID: set = set()


def _say_once(message: str) -> None:
    if message not in _SAID:
        _SAID.add(message)
        warnings.warn(f"softhist: {message}", RuntimeWarning, stacklevel=4)


def backends() -> Dict[str, Optional[str]]:
    """Which engines can run in this process: ``{name: None}`` where one can, else why not.

    Example:
        >>> import softhist
        >>> softhist.backends()["torch"] is None
        True
    """
    return {
        "torch": None,
        "cpp": _cpp_backend.unavailable_reason(),
        "triton": _triton_unavailable_reason(None) or (None if torch.cuda.is_available() else "no CUDA device"),
    }


# --------------------------------------------------------------------------- shapes


def _sample_dims(ndim: int, dim: Dim) -> Tuple[int, ...]:
    if dim is None:
        return tuple(range(ndim))
    if not isinstance(dim, (numbers.Integral, list, tuple)) or isinstance(dim, bool):
        raise TypeError(f"dim must be an int or a sequence of ints, got {dim!r}")
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


def _check_weight(weight: object, shape: torch.Size, described: str, device: Optional[torch.device] = None) -> None:
    """Weights: None, or a floating tensor of the given shape on the input's device
    (``described`` states the shape in errors)."""
    if weight is None:
        return
    if not isinstance(weight, Tensor):
        raise TypeError(f"weight must be a torch.Tensor or None, got {type(weight).__name__}")
    if weight.shape != shape:
        raise ValueError(f"weight must have the same shape as {described}, got {tuple(weight.shape)}")
    if weight.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"weight must be floating point, got dtype {weight.dtype}")
    if device is not None and weight.device != device:
        raise ValueError(f"weight must be on the input's device ({device}), got device {weight.device}")


def _flatten(input: Tensor, weight: Optional[Tensor], dim: Dim) -> Tuple[Tensor, Optional[Tensor], Tuple[int, ...]]:
    """Move the sample dims last and flatten to ``(batch, n)``; return the batch shape."""
    _check_weight(weight, input.shape, f"the input, {tuple(input.shape)}", input.device)
    if input.dim() == 0:
        input = input.reshape(1)
        weight = None if weight is None else weight.reshape(1)
    dims = _sample_dims(input.dim(), dim)
    batch_dims = [d for d in range(input.dim()) if d not in dims]
    batch_shape = tuple(input.shape[d] for d in batch_dims)
    order = batch_dims + list(dims)
    rows, n = math.prod(batch_shape), math.prod([input.shape[d] for d in dims])
    x = input.permute(order).reshape(rows, n)  # explicit n: -1 is ambiguous for an empty batch
    w = None if weight is None else weight.permute(order).reshape(rows, n)
    return x, w, batch_shape


def _output_dtype(input: Tensor, mode: str) -> torch.dtype:
    """The result's dtype: the input's, except float64 for integer and bool input (as numpy)
    and float32 for half-precision counts (float16 stops at 65504, bfloat16 counts by 2 past 256)."""
    if not input.is_floating_point():
        return torch.float64
    if mode != "soft" and input.dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return input.dtype


def _floating(input: Tensor) -> Tensor:
    """Integer and bool samples (hard mode) are binned as float64, as numpy compares them."""
    return input if input.is_floating_point() else input.to(torch.float64)


def _check_split(lo: float, hi: float, count: int, calc: torch.dtype, out: torch.dtype, name: str) -> None:
    """numpy's rule: ``count`` equal-width edges on ``[lo, hi]``, computed in ``calc`` and stored in
    ``out``, must be finite and strictly increasing. Decided on the host: a cheap bound, then
    (only near the limits of ``out``) the same edges computed on the CPU."""
    info = torch.finfo(out)
    width = (hi - lo) / count
    if hi - lo < info.max / 4 and width > 8 * max(info.eps * max(abs(lo), abs(hi)), info.tiny * info.eps):
        return
    lo_t, hi_t = torch.tensor(lo, dtype=calc), torch.tensor(hi, dtype=calc)
    edges = _numpy_edges(lo_t, hi_t, count, out)
    if not (bool(torch.isfinite(edges).all()) and bool((edges[1:] > edges[:-1]).all())):
        raise ValueError(
            f"Too many bins for data range: {name}={count} equal-width bins on [{lo!r}, {hi!r}] "
            f"do not give finite, strictly increasing {out} edges; use fewer bins, another range or float64"
        )


def _finite_range(x: Tensor, group: Optional["ProcessGroup"] = None) -> Optional[Tuple[Tensor, Tensor]]:
    """Min and max of the finite samples, in x's dtype; None when there are none (host sync).

    With a process group, the min and max over every rank's samples (one MIN all-reduce).
    The range is a choice of binning, not a function to differentiate: it is detached.
    """
    if x.device.type == "meta":
        raise ValueError(
            "the data's range cannot be read from a meta tensor: its histogram's edges depend on the data; "
            "give the range (histc's min < max, range= for the others)"
        )
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


def _check_group(group: object) -> Optional["ProcessGroup"]:
    if group is None:
        return None
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            f"group={group!r} needs an initialized torch.distributed process group: "
            "call torch.distributed.init_process_group first, or pass group=None"
        )
    return group  # type: ignore[return-value]


def _all_reduce(hist: Tensor, group: Optional["ProcessGroup"]) -> Tensor:
    """Sum a histogram over the group's ranks; backward sums the upstream gradients over ranks."""
    if group is None:
        return hist
    import torch.distributed.nn.functional as dist_nn  # absent from builds without distributed support

    with warnings.catch_warnings():  # deprecated in favour of functional collectives, same semantics
        warnings.filterwarnings("ignore", message=".*all_reduce is deprecated", category=FutureWarning)
        return dist_nn.all_reduce(hist, op=dist.ReduceOp.SUM, group=group)


def _numpy_edges(lo: Tensor, hi: Tensor, bins: int, dtype: torch.dtype) -> Tensor:
    """``numpy.linspace(lo, hi, bins + 1)`` computed in lo's dtype, then cast to ``dtype``."""
    step = (hi - lo) / bins
    edges = torch.arange(bins + 1, dtype=lo.dtype, device=lo.device) * step + lo
    edges[-1] = hi
    return edges.to(dtype)


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


def _axis_edges(
    x: Tensor, bins: object, range_: object, bins_name: str, range_name: str, *, numpy_dd: bool,
    group: Optional["ProcessGroup"] = None, hard: bool = False,
) -> Tuple[Tensor, Optional[Tuple[float, float]]]:
    """Edges to bin one axis with, and ``(lo, hi)`` when they split it evenly.

    Follows numpy: ``histogram`` computes edges from an explicit range in float64
    and rounds them to the data's dtype; ``histogramdd`` keeps them in float64.
    Edges from the data's own range are computed in the data's dtype.
    """
    if isinstance(bins, Tensor):
        if range_ is not None:
            raise ValueError(f"{range_name} must be None when {bins_name} is an edges tensor, got {range_!r}")
        return _check_edges(bins, bins_name, hard).to(device=x.device), None
    count = _check_bin_count(bins, bins_name)
    compute = x.dtype if x.is_floating_point() else torch.float64
    if range_ is not None:
        if not isinstance(range_, (tuple, list)) or len(range_) != 2:
            raise ValueError(f"{range_name} must be a (min, max) pair, got {range_!r}")
        lo, hi = _check_range(range_[0], range_[1], range_name)
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        _check_split(lo, hi, count, torch.float64, torch.float64 if numpy_dd else compute, bins_name)
        lo_t, hi_t = (torch.tensor(v, dtype=torch.float64, device=x.device) for v in (lo, hi))
        return _numpy_edges(lo_t, hi_t, count, torch.float64 if numpy_dd else compute), (lo, hi)
    else:
        data = _finite_range(x, group) if x.numel() or group is not None else None
        if data is None:  # numpy's range for empty data: the Python ints 0 and 1, so edges computed in float64
            lo_t, hi_t = (torch.tensor(v, dtype=torch.float64, device=x.device) for v in (0.0, 1.0))
            return _numpy_edges(lo_t, hi_t, count, compute), (0.0, 1.0)
        lo_t, hi_t = (v.to(compute) for v in data)
        if bool(lo_t == hi_t):
            lo_t, hi_t = lo_t - 0.5, hi_t + 0.5
        _check_split(float(lo_t), float(hi_t), count, compute, compute, bins_name)
        edges = _numpy_edges(lo_t, hi_t, count, compute)
    return edges, (float(lo_t), float(hi_t))


# --------------------------------------------------------------------------- engine entry


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
    group: Optional["ProcessGroup"] = None,
) -> Tensor:
    """The engine entry: ``x: (rows, n, D)`` -> ``(rows, *bins)``, summed over the group's ranks.

    ``kernel`` and ``mode`` are one value or one per axis (see :func:`_call_mode`).
    Hard counts come back in float64, soft histograms in the accumulation dtype.
    """
    dims = len(edges)
    kernels = tuple(get_kernel(k) for k in _axis_options(kernel, dims, "kernel"))
    mode, hard_axes = _call_mode(mode, dims)
    engine = _select_backend(x, backend)
    acc = accumulation_dtype(x.dtype if x.is_floating_point() else torch.float64)
    uniform = [u is not None for u in uniforms]
    lo = [u[0] if u is not None else 0.0 for u in uniforms]
    hi = [u[1] if u is not None else 0.0 for u in uniforms]
    if mode == "hard":
        if not x.is_floating_point():
            x = x.to(torch.float64)
        hist = _ops.hard_histogram(x, weight, (uniform, lo, hi, hard_rule, engine.NAME), edges)
    else:
        # Half the mean bin width: a number for equal-width bins, a tensor (no host sync) for edges.
        defaults = [0.5 * (u[1] - u[0]) / (e.shape[0] - 1) if u is not None else (e[-1] - e[0]).detach() / (2 * (e.shape[0] - 1))
                    for e, u in zip(edges, uniforms)]
        bandwidth_tensor = _resolve_bandwidth(bandwidth, defaults, acc, x.device)
        params = (",".join(k.name for k in kernels), list(hard_axes), uniform, lo, hi, hard_rule, mode == "straight_through", engine.NAME)
        hist = _ops.soft_histogram(x, weight, bandwidth_tensor, params, edges)
    return _all_reduce(hist, group)


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
            triangular, quadratic, cubic).
        bandwidth: kernel standard deviation in data units, a float or a 0-d
            tensor (may require grad). ``None``: half a bin width.
        mode: ``"soft"``; ``"hard"`` for exact counts, equal to ``torch.histc``;
            ``"straight_through"`` for hard counts forward, soft gradients back.
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
        Tensor of shape ``(*batch, bins)`` in ``input``'s dtype; hard and
        straight-through counts of float16/bfloat16 input in float32 (exact
        where float16 would overflow at 65504), of integer input in float64.

    Note:
        Bins are ``[e_k, e_{k+1})``, the last one closed. Soft mass near the range
        ends spills outside and is not counted. NaN and infinite samples are
        ignored. Hard mode counts in int64, so counts stay exact past ``2**24``
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
    """
    mode = _check_mode(mode)
    _check_input(input, mode)
    out_dtype = _output_dtype(input, mode)
    bins = _check_bin_count(bins)
    lo, hi = _check_range(min, max, "histc range")
    group = _check_group(group)
    x, w, batch_shape = _flatten(_floating(input), weight, dim)
    if lo == hi and (x.numel() > 0 or group is not None):
        data = _finite_range(x, group)
        if data is not None:
            lo, hi = float(data[0]), float(data[1])
    if lo == hi:
        lo, hi = lo - 1.0, hi + 1.0
    compute = x.dtype
    if not math.isfinite(float(torch.tensor(hi, dtype=compute) - torch.tensor(lo, dtype=compute))):
        raise ValueError(
            f"histc range: max - min overflows {compute} (min={lo}, max={hi}), where torch.histc "
            "counts nothing; pass float64 input or a narrower range"
        )
    edges = torch.linspace(lo, hi, bins + 1, dtype=compute, device=x.device)
    hist = _bin(
        x.unsqueeze(-1), w, [edges], [(lo, hi)], hard_rule="histc",
        kernel=kernel, bandwidth=bandwidth, mode=mode, backend=backend, group=group,
    )
    return hist.to(out_dtype).reshape(*batch_shape, bins)


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
        kernel, bandwidth, mode, dim, backend, group: as in :func:`softhist.histc`.
            ``None`` bandwidth is half the mean bin width. With a group, ``range=None``
            and ``density`` use every rank's samples.

    Returns:
        ``(hist, bin_edges)``: ``hist`` of shape ``(*batch, B)`` in ``input``'s
        dtype (hard and straight-through counts of half-precision input in
        float32; integer and bool input in float64, edges too, as numpy), and
        ``bin_edges`` of shape ``(B + 1,)``.

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
    mode = _check_mode(mode)
    _check_input(input, mode)
    density = _check_flag(density, "density")
    group = _check_group(group)
    out_dtype, edge_dtype = _output_dtype(input, mode), _output_dtype(input, "soft")
    x, w, batch_shape = _flatten(_floating(input), weight, dim)
    bins = _as_edges(bins, x.device)
    edges, uniform = _axis_edges(x, bins, range, "bins", "range", numpy_dd=False, group=group, hard=mode == "hard")
    hist = _bin(
        x.unsqueeze(-1), w, [edges], [uniform], hard_rule="edges",
        kernel=kernel, bandwidth=bandwidth, mode=mode, backend=backend, group=group,
    )
    if density:
        hist = hist / torch.diff(edges).to(hist.dtype) / hist.sum(-1, keepdim=True)
    n_bins = edges.numel() - 1
    return hist.to(out_dtype).reshape(*batch_shape, n_bins), bins if isinstance(bins, Tensor) else edges.to(edge_dtype)


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
        bins: an int for every axis, or one entry per axis: an int or a 1-D
            tensor of strictly increasing edges.
        range: ``None``, or one entry per axis: ``(min, max)`` or ``None`` (the
            finite data's range, widened by 0.5 each side when empty, as numpy).
        weight: per-sample weights, shape ``(*batch, N)``, differentiable.
        density: divide by the total mass and the cell volumes, as numpy does.
        kernel: one kernel name (see :func:`softhist.histc`) or one per axis.
        mode: one mode or one per axis. Axes may mix ``"hard"`` with ``"soft"``
            (or with ``"straight_through"``): a hard axis counts the sample in
            its own bin (numpy's rule, against the edges in the accumulation
            dtype) and passes no gradient to that coordinate, its edges or its
            bandwidth; its kernel and bandwidth are unused. ``"soft"`` and
            ``"straight_through"`` axes cannot be mixed.
        backend, group: as in :func:`softhist.histc`.
        bandwidth: one value for every axis or one per axis (floats, 0-d
            tensors or a 1-D tensor of length ``D``); standard deviations in
            data units. ``None``: half of each axis's mean bin width.

    Returns:
        ``(hist, edges)``: ``hist`` of shape ``(*batch, B_0, ..., B_{D-1})`` in
        ``input``'s dtype (counts of half-precision input in float32, of integer
        input in float64), and a list of ``D`` edge tensors.

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
    call_mode = _input_mode(mode)
    _check_input(input, call_mode)
    density = _check_flag(density, "density")
    out_dtype, edge_dtype = _output_dtype(input, call_mode), _output_dtype(input, "soft")
    input = _floating(input)
    if input.dim() < 2:
        raise ValueError(f"input must have shape (..., N, D), got shape {tuple(input.shape)}")
    dims = input.shape[-1]
    if dims == 0:
        raise ValueError(f"input must have at least one axis (D >= 1) in its last dimension, got shape {tuple(input.shape)}")
    _check_weight(weight, input.shape[:-1], f"the input without its last dim, {tuple(input.shape[:-1])}", input.device)
    group = _check_group(group)
    bins_per_axis = [_as_edges(b, input.device) for b in _per_axis(bins, dims, "bins")]
    ranges = [None] * dims if range is None else _per_axis(range, dims, "range", pairs=True)
    batch_shape = tuple(input.shape[:-2])
    rows = math.prod(batch_shape)
    x = input.reshape(rows, input.shape[-2], dims)  # explicit sizes: -1 is ambiguous for an empty batch
    w = None if weight is None else weight.reshape(rows, input.shape[-2])
    axis_edges = [
        _axis_edges(x[..., d], b, r, f"bins[{d}]", f"range[{d}]", numpy_dd=True, group=group, hard=call_mode == "hard")
        for d, (b, r) in enumerate(zip(bins_per_axis, ranges))
    ]
    edges = [e for e, _ in axis_edges]
    hist = _bin(
        x, w, edges, [u for _, u in axis_edges], hard_rule="edges",
        kernel=kernel, bandwidth=bandwidth, mode=mode, backend=backend, group=group,
    )
    if density:
        total = hist.flatten(1).sum(1).view(-1, *([1] * dims))
        for d, e in enumerate(edges):
            hist = hist / torch.diff(e).to(hist.dtype).view(*([1] * (d + 1)), -1, *([1] * (dims - d - 1)))
        hist = hist / total
    shape = tuple(e.numel() - 1 for e in edges)
    out_edges = [b if isinstance(b, Tensor) else e.to(edge_dtype) for b, e in zip(bins_per_axis, edges)]
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
        weight, density, kernel, bandwidth, mode, backend, group: as in :func:`histogramdd`
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
    for name, value in (("x", x), ("y", y)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if isinstance(bins, Tensor) or (
        isinstance(bins, (list, tuple)) and len(bins) != 2 and all(isinstance(v, numbers.Real) for v in bins)
    ):
        bins = [bins, bins]  # one edges tensor (or list of edges) for both axes, as numpy
    hist, (xedges, yedges) = histogramdd(
        torch.stack([x, y], -1), bins, range=range, weight=weight, density=density,
        kernel=kernel, bandwidth=bandwidth, mode=mode, backend=backend, group=group,
    )
    return hist, xedges, yedges

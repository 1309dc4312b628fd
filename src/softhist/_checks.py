"""Argument checks: every public function's and module's arguments, each checked once per call, here alone.

Checks read Python numbers where the caller gave them (no tensor is created and nothing waits on a
device to check a Python argument). Values inside tensors (explicit edges, a tensor bandwidth) are
checked where the engine reads them, by :func:`check_edge_values` and :func:`check_bandwidths`, so
they cost no extra host sync and hold under ``torch.compile`` too. Errors are ``TypeError`` or
``ValueError`` naming the argument and the value; never an ``assert``.
"""

from __future__ import annotations

import math
import numbers
import struct
from typing import TYPE_CHECKING, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
from torch import Tensor

from ._plan import host_cache

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

MODES = ("soft", "hard", "straight_through")
Range = Tuple[float, float]
MEMBERSHIPS = ("mass", "center")
BACKENDS = ("auto", "torch", "cpp", "triton")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Bins per axis: the engines index an axis's bins, plus at most 2 x 127 window bins of padding,
# in int32 (the native engine refuses an axis past 2**30 slots).
MAX_BINS = 2**30 - 256
# Cells of all histograms of a call (rows x bins_0 x ... x bins_{D-1}): int64 cell indices, with
# room for the windows' padding.
MAX_CELLS = 2**56


# --------------------------------------------------------------------------- numbers


def _real(value: object) -> Optional[float]:
    """``value`` as a float when it is a real number: a Python or numpy scalar, or a 0-d array
    or tensor (one host sync for a tensor); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):  # int, float, numpy's scalars
        return float(value)
    if isinstance(value, Tensor):
        if value.dim() == 0 and not (value.is_complex() or value.dtype == torch.bool):
            return float(value.item())
        return None
    if getattr(value, "shape", None) == () and getattr(getattr(value, "dtype", None), "kind", "") in "iuf":
        return float(value)  # a 0-d numpy array
    return None


def check_number(value: object, name: str) -> float:
    """A finite real number (Python, numpy or 0-d tensor)."""
    number = float(value) if type(value) in (float, int) else _real(value)
    if number is None:
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    return number


def check_range(lo: object, hi: object, name: str) -> Tuple[float, float]:
    """``(min, max)`` as finite floats with ``min <= max``."""
    lo, hi = check_number(lo, f"{name} (min)"), check_number(hi, f"{name} (max)")
    if lo > hi:
        raise ValueError(f"{name}: min must not exceed max, got min={lo}, max={hi} (max must be larger than or equal to min)")
    return lo, hi


def check_pair(value: object, name: str) -> Tuple[object, object]:
    """A ``(min, max)`` pair: a tuple, list, 1-D array or tensor of two numbers."""
    if isinstance(value, Tensor) or hasattr(value, "__array__"):
        shape = tuple(getattr(value, "shape", ()))
        if shape == (2,):
            return value[0], value[1]
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        return value[0], value[1]
    raise ValueError(f"{name} must be a (min, max) pair, got {value!r}")


def check_flag(value: object, name: str) -> bool:
    if not isinstance(value, (bool, numbers.Integral)) or value not in (0, 1):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def check_bin_count(bins: object, name: str = "bins") -> int:
    if type(bins) is int and 1 <= bins <= MAX_BINS:  # the common case, without the numbers ABCs
        return bins
    if isinstance(bins, bool) or not isinstance(bins, numbers.Integral) or bins < 1:
        raise ValueError(f"{name} must be a positive integer, got {bins!r}")
    if bins > MAX_BINS:
        raise ValueError(f"{name} must be a positive integer of at most 2**30 - 256 (what the engines index), got {bins!r}")
    return int(bins)


def check_cells(rows: int, bins: Sequence[int]) -> None:
    """The histograms of a call must be indexable: ``rows x prod(bins)`` within int64, checked
    before anything is allocated (as numpy and torch refuse such shapes)."""
    cells = max(rows, 1)
    for b in bins:
        cells *= b
    if cells > MAX_CELLS:
        shape = " x ".join(str(b) for b in bins)
        raise ValueError(
            f"bins: too many cells: {rows} histogram(s) of {shape} cells ({cells:.3g} in all) are more than an int64 index "
            f"can address (at most 2**56); use fewer bins or fewer axes"
        )


# --------------------------------------------------------------------------- names


def check_mode(mode: object) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    return mode  # type: ignore[return-value]


def check_backend(backend: object) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    return backend  # type: ignore[return-value]


def axis_options(value: object, dims: int, name: str) -> list:
    """One value for every axis, or a list or tuple of ``dims`` values."""
    if isinstance(value, (list, tuple)):
        if len(value) != dims:
            raise ValueError(f"{name} must be one value or one per axis (D = {dims}), got {len(value)}: {value!r}")
        return list(value)
    return [value] * dims


def check_kernel(kernel: object, name: str = "kernel"):
    """A kernel name (or alias) from the table, or a :class:`softhist.Kernel` (a user kernel): the Kernel."""
    from .kernels import KERNEL_ALIASES, KERNELS, Kernel, get_kernel

    if isinstance(kernel, Kernel):
        if not (isinstance(kernel.name, str) and kernel.name):
            raise TypeError(f"{name}.name must be a non-empty str, got {kernel.name!r}")
        for part in ("cdf", "pdf"):
            if not callable(getattr(kernel, part)):
                raise TypeError(f"{name}.{part} must be a function of a tensor, got {getattr(kernel, part)!r}")
        support = _real(kernel.support)
        if support is None or not support > 0 or math.isnan(support):
            raise ValueError(f"{name}.support must be a positive number (math.inf for none), got {kernel.support!r}")
        return kernel
    if not isinstance(kernel, str) or (kernel not in KERNELS and kernel not in KERNEL_ALIASES):
        raise ValueError(
            f"{name} must be one of {sorted([*KERNELS, *KERNEL_ALIASES])}, got {kernel!r} (or a softhist.Kernel of your own)"
        )
    return get_kernel(kernel)


def check_membership(membership: object, dims: int) -> Tuple[str, ...]:
    """``"mass"`` or ``"center"``, one for every axis or one per axis."""
    values = tuple(axis_options(membership, dims, "membership"))
    for value in values:
        if value not in MEMBERSHIPS:
            raise ValueError(f"membership must be one of {list(MEMBERSHIPS)} (or one per axis), got {membership!r}")
    return values  # type: ignore[return-value]


def input_mode(mode: object) -> str:
    """Validate ``mode`` (one, or one per axis) and return the mode that governs the input's
    dtype: ``"hard"`` when every axis is hard (integer data allowed), ``"soft"`` when an axis is
    soft, ``"straight_through"`` otherwise."""
    if isinstance(mode, (list, tuple)):
        if not mode:
            raise ValueError(f"mode must be a mode or one mode per axis, got {mode!r}")
        modes = {check_mode(m) for m in mode}
        return "hard" if modes == {"hard"} else "soft" if "soft" in modes else "straight_through"
    return check_mode(mode)


def call_mode(mode: object, dims: int) -> Tuple[str, Tuple[bool, ...]]:
    """The engine's mode for per-axis ``mode`` values, and which axes are hard within it.

    All hard: ``"hard"``. Hard axes mixed with soft ones: ``"soft"``; with
    straight-through ones: ``"straight_through"`` (hard counts forward, the soft
    axes' gradient backward). Soft and straight-through axes cannot be mixed.
    """
    if isinstance(mode, str):
        return check_mode(mode), (False,) * dims
    modes = [check_mode(m) for m in axis_options(mode, dims, "mode")]
    kinds = set(modes)
    if kinds == {"hard"}:
        return "hard", (False,) * dims
    if {"soft", "straight_through"} <= kinds:
        raise ValueError(
            f"mode cannot mix 'soft' and 'straight_through' axes, got {mode!r}; "
            "make each axis 'soft' or 'hard', or each 'straight_through' or 'hard'"
        )
    return ("soft" if "soft" in kinds else "straight_through"), tuple(m == "hard" for m in modes)


# --------------------------------------------------------------------------- tensors


def check_input(input: object, mode: str, name: str = "input") -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(input).__name__}")
    check_input_dtype(input.dtype, mode, name)


def check_input_dtype(dtype: torch.dtype, mode: str, name: str = "input") -> None:
    if dtype.is_complex:
        raise TypeError(f"{name} must be real, got dtype {dtype}")
    if mode != "hard" and dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be floating point for mode={mode!r} (got dtype {dtype}); "
            "cast it, or use mode='hard' for exact counts of integer data"
        )


def check_weight(weight: object, shape: torch.Size, described: str, device: Optional[torch.device] = None) -> None:
    """Weights: None, or a floating tensor of the given shape on the input's device
    (``described`` states the shape in errors)."""
    if weight is None:
        return
    if not isinstance(weight, Tensor):
        raise TypeError(f"weight must be a torch.Tensor or None, got {type(weight).__name__}")
    if weight.shape != shape:
        raise ValueError(f"weight must have the same shape as {described}, got {tuple(weight.shape)}")
    if weight.dtype not in FLOAT_DTYPES:
        raise TypeError(f"weight must be floating point, got dtype {weight.dtype}")
    if device is not None and weight.device != device:
        raise ValueError(f"weight must be on the input's device ({device}), got device {weight.device}")


def sample_dims(ndim: int, dim: object) -> Tuple[int, ...]:
    """The sample dimensions ``dim`` names, normalized to ``0 <= d < ndim``."""
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


def as_edges(bins: object, device: torch.device) -> object:
    """Edges given as a list or tuple of numbers, or as an array (numpy's habit), become a
    float64 tensor (as numpy reads them); ints and tensors pass through."""
    if isinstance(bins, (list, tuple)) and bins and all(_real(v) is not None for v in bins):
        return torch.tensor([_real(v) for v in bins], dtype=torch.float64, device=device)
    if not isinstance(bins, Tensor) and hasattr(bins, "__array__") and getattr(bins, "ndim", 0) == 1:
        return torch.as_tensor(bins.__array__(), device=device)
    if not isinstance(bins, Tensor) and getattr(bins, "shape", None) == () and _real(bins) is not None:
        value = _real(bins)
        return int(value) if value == int(value) else bins  # a 0-d array holding a count
    return bins


def check_edges(edges: Tensor, name: str = "bins", hard: bool = False) -> None:
    """Explicit bin edges: their shape and dtype (their values are checked where the engine reads them)."""
    if edges.dim() != 1 or edges.numel() < 2:
        raise ValueError(f"{name} as edges must be 1d with at least 2 entries, got shape {tuple(edges.shape)}")
    if edges.is_complex() or edges.dtype == torch.bool or (not hard and edges.dtype not in FLOAT_DTYPES):
        raise TypeError(f"{name} as edges must be floating point, got dtype {edges.dtype}")
    if edges.numel() - 1 > MAX_BINS:
        raise ValueError(f"{name} as edges must hold at most 2**30 - 256 bins, got {edges.numel() - 1}")


def check_edge_values(edges: Tensor, name: str, hard: bool) -> None:
    """The values of explicit edges (one host sync, where the engine reads them anyway).

    Soft binning needs finite, increasing edges. Hard counts follow numpy: infinite ends and
    equal neighbours (an empty bin) are fine.
    """
    e = edges.detach()
    shown = e.tolist() if e.numel() <= 8 else e
    if bool(torch.isnan(e).any()) or not (hard or bool(torch.isfinite(e).all())):
        raise ValueError(f"{name} must be finite, got {shown}")
    if hard and not bool((e[1:] >= e[:-1]).all()):
        raise ValueError(f"{name} must increase monotonically, got {shown}")
    if not hard and not bool((e[1:] > e[:-1]).all()):
        raise ValueError(f"{name} must be strictly increasing, got {shown} (mode='hard' accepts equal neighbours)")


def bandwidth_value(value: object, name: str, bins: Optional[int] = None, membership: str = "mass") -> Union[float, Tensor]:
    """One axis's bandwidth: a positive, finite number, or a 0-d floating tensor, or (centre
    membership, an axis of ``bins`` bins) a 1-D tensor of one bandwidth per bin. Values in a
    tensor are checked where the engine reads them, so a tensor costs no host sync here."""
    if isinstance(value, Tensor):
        if value.dim() == 1 and bins is not None:
            if membership != "center":
                raise ValueError(
                    f"{name}: one bandwidth per bin (a 1-D tensor of shape {tuple(value.shape)}) needs membership='center', "
                    f"got membership={membership!r}"
                )
            if value.shape[0] != bins:
                raise ValueError(f"{name} as per-bin bandwidths must have one value per bin ({bins}), got shape {tuple(value.shape)}")
        elif value.dim() != 0:
            raise ValueError(f"{name} must be a float or a 0-d tensor, got shape {tuple(value.shape)}")
        if value.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be floating point, got dtype {value.dtype}")
        return value
    number = check_number(value, name)
    if not number > 0:
        raise ValueError(f"{name} must be positive and finite, got {number}")
    return number


def check_bandwidths(values: Sequence[float], hard_axes: Sequence[bool], sizes: Optional[Sequence[int]] = None) -> None:
    """Bandwidths read from the call's flat tensor (``sizes``: entries per axis, default one):
    positive and finite on every soft axis."""
    sizes = [1] * len(hard_axes) if sizes is None else sizes
    start = 0
    for d, (size, hard) in enumerate(zip(sizes, hard_axes)):
        for value in values[start : start + size]:
            if not hard and not (math.isfinite(value) and value > 0):
                name = "bandwidth" if len(hard_axes) == 1 else f"bandwidth[{d}]"
                raise ValueError(f"{name} must be positive and finite, got {value}")
        start += size


@host_cache(maxsize=256)
def check_scales(width: float, bandwidth: float, magnitude: float, acc: torch.dtype) -> None:
    """Soft binning divides by the bandwidth and by the bin width in ``acc``: both must be normal
    numbers there, and their ratio must fit (a subnormal range or bandwidth would give inf or NaN).
    The bandwidth must also resolve positions of ``magnitude`` (the range's largest end) in float64:
    ``z = (e - x) / h`` amplifies their rounding, and a sample on an edge would land in one bin or
    the other instead of half in each."""
    info = torch.finfo(acc)
    fits = lambda v: info.tiny <= v <= info.max / 1024  # noqa: E731
    if not (fits(width) and fits(bandwidth) and fits(width / bandwidth) and fits(bandwidth / width)):
        raise ValueError(
            f"bandwidth={bandwidth!r} with bins {width!r} wide is out of {acc}'s range for soft binning "
            f"(each and their ratio must lie in [{info.tiny:.3g}, {info.max / 1024:.3g}]); "
            "rescale the data, pass float64 input, or use mode='hard'"
        )
    resolution = 4 * torch.finfo(torch.float64).eps * magnitude  # the engines place samples in float64
    if bandwidth < resolution:
        raise ValueError(
            f"bandwidth={bandwidth!r} is below the resolution of positions on this range ({resolution:.3g}, "
            "4 float64 ulps of its largest end): a sample on an edge would land in one bin or the other by rounding; "
            "use mode='hard' for exact counts, mode='straight_through' for exact counts with a gradient, or float64 input"
        )


@host_cache(maxsize=256)
def check_split(lo: float, hi: float, count: int, calc: torch.dtype, out: torch.dtype, name: str) -> None:
    """numpy's rule: ``count`` equal-width edges on ``[lo, hi]``, computed in ``calc`` and stored in
    ``out``, must be finite and strictly increasing. Decided on the host: a cheap bound, then
    (only near the limits of ``out``) the same edges computed on the CPU."""
    info = torch.finfo(out)
    width = (hi - lo) / count
    if hi - lo < info.max / 4 and width > 8 * max(info.eps * max(abs(lo), abs(hi)), info.tiny * info.eps):
        return
    from .histogram import numpy_edges

    lo_t, hi_t = torch.tensor(lo, dtype=calc), torch.tensor(hi, dtype=calc)
    edges = numpy_edges(lo_t, hi_t, count, out)
    if not (bool(torch.isfinite(edges).all()) and bool((edges[1:] > edges[:-1]).all())):
        raise ValueError(
            f"Too many bins for data range: {name}={count} equal-width bins on [{lo!r}, {hi!r}] "
            f"do not give finite, strictly increasing {out} edges; use fewer bins, another range or float64"
        )


def round_to(value: float, dtype: torch.dtype) -> float:
    """A Python float rounded to ``dtype`` (to nearest, ties to even), infinite past its range;
    on the host, without a tensor."""
    if dtype == torch.float64:
        return value
    fmt = "e" if dtype == torch.float16 else "f"
    try:
        rounded = struct.unpack(fmt, struct.pack(fmt, value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)
    if dtype == torch.bfloat16:  # the float32's top 16 bits, rounded to nearest even
        bits = struct.unpack("<I", struct.pack("<f", rounded))[0]
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        rounded = struct.unpack("<f", struct.pack("<I", bits))[0]
    return rounded


@host_cache(maxsize=256)
def check_width_fits(lo: float, hi: float, dtype: torch.dtype) -> None:
    """torch.histc's range in ``dtype``: ``max - min`` must not overflow there (torch.histc then counts nothing)."""
    if not math.isfinite(round_to(round_to(hi, dtype) - round_to(lo, dtype), dtype)):
        raise ValueError(
            f"histc range: max - min overflows {dtype} (min={lo}, max={hi}), where torch.histc "
            "counts nothing; pass float64 input or a narrower range"
        )


def check_group(group: object) -> Optional["ProcessGroup"]:
    if group is None:
        return None
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            f"group={group!r} needs an initialized torch.distributed process group: "
            "call torch.distributed.init_process_group first, or pass group=None"
        )
    return group  # type: ignore[return-value]


TORCHSCRIPT = (
    "softhist does not support TorchScript (torch.jit.trace / torch.jit.script); "
    "use torch.compile, or torch.export for a graph to save"
)


def refuse_torchscript(*_args) -> None:
    """Raises the error that says TorchScript is not supported and what to use. Installed as the
    ``__prepare_scriptable__`` hook of the public functions and modules, which ``torch.jit.script``
    calls first, and called by the public functions while ``torch.jit.trace`` runs."""
    raise RuntimeError(TORCHSCRIPT)


def check_data_range_readable(x: Tensor) -> None:
    """A range read from the data needs the data's values: not on meta tensors, under vmap or
    inside a compiled graph, where the edges would depend on values the tracer does not have."""
    if x.device.type == "meta":
        where = "from a meta tensor"
    elif torch.compiler.is_compiling():
        where = "inside torch.compile"
    elif torch._C._are_functorch_transforms_active():
        where = "under a torch.func transform (vmap, grad, jacrev, ...)"
    else:
        return
    raise ValueError(
        f"the data's range cannot be read {where}: the histogram's edges would depend on the data; "
        "pass the range (histc's min < max, range= for the others)"
    )


# --------------------------------------------------------------------------- modules, losses and applications


def check_int_at_least(value: object, name: str, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    return int(value)


def check_positive(value: object, name: str) -> float:
    """A positive, finite number, given as a Python number or a 0-d real tensor (as ``histc`` takes them)."""
    if isinstance(value, Tensor):
        if value.dim() != 0 or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be a number or a 0-d real tensor, got a {value.dtype} tensor of shape {tuple(value.shape)}")
        number = float(value.detach())  # once, at construction
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive, finite number, got {value!r}")
    else:
        number = float(value)
    if not 0 < number < math.inf:
        raise ValueError(f"{name} must be a positive, finite number, got {value!r}")
    return number


def check_module_bandwidth(value: object, name: str = "bandwidth") -> Union[float, Tensor, None]:
    """None, a positive number, or a 0-d tensor with a positive value. A tensor that requires grad
    is kept, so its gradient flows as in :func:`softhist.histc`; any other becomes a float."""
    if value is None:
        return None
    number = check_positive(value, name)
    return value if isinstance(value, Tensor) and value.requires_grad else number


def check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


def check_dim_argument(dim: object) -> Union[int, Tuple[int, ...], None]:
    """``dim`` as :func:`softhist.histogram` takes it: None, an int or a sequence of distinct ints.
    Whether they fit the input's rank is known only in ``forward``."""
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, numbers.Integral) and not isinstance(dim, bool) else dim
    if not isinstance(dims, (list, tuple)) or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) for d in dims):
        raise TypeError(f"dim must be None, an int or a sequence of ints, got {dim!r}")
    if len(set(int(d) for d in dims)) != len(dims):
        raise ValueError(f"dim must not repeat a dimension, got {dim!r}")
    return int(dim) if dims is not dim else tuple(int(d) for d in dims)


def check_reduction(reduction: object) -> str:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be one of ['mean', 'sum', 'none'], got {reduction!r}")
    return reduction  # type: ignore[return-value]


def check_patch_size(patch_size: object) -> Union[int, Tuple[int, ...]]:
    """A positive int, or a non-empty sequence of them (one per spatial dim, matched in ``forward``)."""
    sizes = [patch_size] if isinstance(patch_size, numbers.Integral) else patch_size
    if not isinstance(sizes, (list, tuple)) or not sizes:
        raise TypeError(f"patch_size must be an int or a sequence of ints, got {patch_size!r}")
    for p in sizes:
        if isinstance(p, bool) or not isinstance(p, numbers.Integral):
            raise TypeError(f"patch_size must be an int or a sequence of ints, got {patch_size!r}")
        if p < 1:
            raise ValueError(f"patch_size must hold positive integers, got {patch_size!r}")
    return int(patch_size) if isinstance(patch_size, numbers.Integral) else tuple(int(p) for p in sizes)


def check_mi_range(range_: object) -> Union[None, Range, Tuple[Optional[Range], Optional[Range]]]:
    """None, ``(lo, hi)`` for both images, or one range (or None: that image's own) per image."""
    if range_ is None:
        return None
    if isinstance(range_, (tuple, list)) and len(range_) == 2 and all(r is None or isinstance(r, (tuple, list)) for r in range_):
        return tuple(check_optional_range(r, f"range[{i}]") for i, r in enumerate(range_))  # type: ignore[return-value]
    return check_range_pair(range_)


def check_tensor(value: object, name: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{name} must be real-valued, got dtype {value.dtype}")
    return value


def check_bins_dim(p: Tensor, dim: object, name: str) -> int:
    """``dim`` as a non-negative index into ``p``; the bins axis must not be empty."""
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"dim must be an int, got {dim!r}")
    ndim = max(p.dim(), 1)
    if not -ndim <= dim < ndim:
        raise IndexError(f"dim {dim} is out of range for {name} with {p.dim()} dimensions")
    dim = int(dim) % ndim
    if p.dim() == 0 or p.shape[dim] == 0:
        raise ValueError(f"{name} must have at least one bin along dim {dim}, got shape {tuple(p.shape)}")
    return dim


def check_images(a: Tensor, b: Tensor, names: Tuple[str, str]) -> None:
    """Two images of the same shape ``(B, C, *spatial)``, floating point."""
    for name, value in zip(names, (a, b)):
        check_tensor(value, name)
        if not value.is_floating_point():
            raise TypeError(f"{name} must be floating point, got dtype {value.dtype}")
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dim() < 3:
        raise ValueError(f"{names[0]} must have shape (B, C, *spatial), got {tuple(a.shape)}")


def check_range_pair(range_: object, name: str = "range") -> Range:
    """A finite ``(min, max)`` pair with ``min < max``, as floats."""
    if not isinstance(range_, (tuple, list)) or len(range_) != 2:
        raise ValueError(f"{name} must be a (min, max) pair, got {range_!r}")
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in range_):
        raise TypeError(f"{name} must hold two real numbers, got {range_!r}")
    lo, hi = float(range_[0]), float(range_[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{name} must be finite with min < max, got {range_!r}")
    return lo, hi


def check_optional_range(value: object, name: str) -> Optional[Range]:
    """None (the data's range), or a range as :func:`_check_range` takes it."""
    return None if value is None else check_range_pair(value, name)


def check_real(value: object, name: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return float(value)


def check_images_rgb(images: object, name: str = "images") -> Tensor:
    """Floating-point RGB images ``(B, 3, H, W)``."""
    check_tensor(images, name)
    if not images.is_floating_point():
        raise TypeError(f"{name} must be floating point, got dtype {images.dtype}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} must be RGB images of shape (B, 3, H, W), got shape {tuple(images.shape)}")
    return images


def check_kernel_size_nd(value: object, name: str, spatial: int, minimum: int) -> Tuple[int, ...]:
    """An int, or one int per spatial dim, each ``>= minimum``."""
    sizes = (value,) * spatial if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value
    if not isinstance(sizes, (list, tuple)) or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in sizes):
        raise TypeError(f"{name} must be an int or a sequence of ints, got {value!r}")
    if len(sizes) != spatial or any(s < minimum for s in sizes):
        raise ValueError(f"{name} must be an int >= {minimum} or {spatial} of them, got {value!r}")
    return tuple(int(s) for s in sizes)

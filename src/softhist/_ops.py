"""softhist's engines as PyTorch operators, and the one place that picks an engine.

Every histogram the public functions compute runs :func:`run_soft` or :func:`run_hard` on a
:class:`._plan.Binning`, the call's description. This module owns:

* **dispatch**: :func:`select_backend` is the one place that maps ``backend=`` and the device to an
  engine (native C++ on CPU, Triton on CUDA, torch anywhere);
* **the ops** ``torch.ops.softhist.{soft, soft_backward, hard, hard_backward}``: ``torch.library``
  custom ops with fake (meta) kernels, registered autograd and vmap rules, so ``torch.compile``,
  ``torch.export``, meta tensors and ``torch.func`` see one op per histogram. They take the
  description as its text (:attr:`._plan.Binning.spec`), by name;
* **the eager path**: with no transform, compile or forward-mode AD active, the public functions
  call the engine through one plain ``autograd.Function`` and skip the ops' dispatch layers, which
  cost more than the engine on small inputs. Both paths run the same :func:`run_soft`.

* ``soft``: soft and straight-through histograms, ``x: (rows, n, D)`` -> ``(rows, *bins)`` in the
  accumulation dtype.
* ``soft_backward``: its first derivatives, by the same engine's fused backward pass.
* ``hard``: exact counts in float64, differentiable in the weights; ``hard_backward``: that gradient.

Double backward: when a backward pass itself builds a graph (``create_graph=True``, the
``torch.func`` transforms), the first derivatives are computed instead by :func:`differentiable_vjp`,
the engines' VJP in plain torch ops that autograd differentiates again (``O(N x window)``
memory), so second derivatives are exact for every kernel whose density is continuous. The box
kernel's density jumps: it has no second derivative, and asking for one raises. Forward-mode AD
(``torch.autograd.forward_ad``, ``torch.func.jvp``, ``jacfwd``) runs :func:`histogram_jvp`.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.autograd.forward_ad as forward_ad
from torch import Tensor

from . import _checks, _cpp_backend, _torch_backend
from ._plan import Binning, Engine, accumulation_dtype, binning_from_spec, edge_values, host_cache, window_edges
from ._torch_backend import hard_bins, hard_cells
from .kernels import get_kernel, is_builtin

__all__ = ["backends", "differentiable_histogram", "hard", "run_hard", "run_soft", "select_backend", "soft"]


# --------------------------------------------------------------------------- dispatch


def select_backend(device: torch.device, backend: str, binning: Optional[Binning] = None):
    """The one place that decides which engine runs, as its module (``NAME``, ``*_ENGINE``).

    ``"auto"`` takes the native C++ kernels for CPU tensors and the fused Triton kernels for
    CUDA tensors, where they are available and have the call's options (``binning``: its
    engine's ``supports``), and the torch engine otherwise (saying once why, when the native
    kernels are missing). ``"cpp"`` and ``"triton"`` never fall back: they raise if their kernels
    cannot run on ``device`` or lack an option of the call.
    """
    module = _select_engine_module(device, backend)
    if binning is not None and module is not _torch_backend:
        reason = getattr(module, _ENGINE_NAMES[module.NAME]).supports(binning)
        if reason is not None:
            if backend == "auto":
                return _torch_backend
            raise ValueError(f"backend={backend!r} cannot run this call: {reason}; use backend='auto' or 'torch'")
    return module


def _select_engine_module(device: torch.device, backend: str):
    if backend == "torch":
        return _torch_backend
    on_cpu = device.type == "cpu"
    if backend == "cpp" or (backend == "auto" and on_cpu):
        reason = _cpp_backend.unavailable_reason()
        if reason is None and on_cpu:
            return _cpp_backend
        if backend == "auto":
            _say_once(f"{reason}; CPU histograms run on the slower torch engine (see the README's \"Installing\")")
            return _torch_backend
        raise ValueError(
            f"backend='cpp' cannot run here: {reason or f'the input is on {device}, the native kernels take CPU tensors'}; "
            "use backend='auto' or 'torch'"
        )
    if backend == "auto" and device.type != "cuda":
        return _torch_backend
    reason = triton_unavailable_reason(device)
    if reason is None:
        from . import _triton_backend

        return _triton_backend
    if backend == "auto":
        return _torch_backend
    raise ValueError(f"backend='triton' cannot run here: {reason}; use backend='auto' or 'torch'")


_ENGINE_NAMES = {"torch": "TORCH_ENGINE", "cpp": "CPP_ENGINE", "triton": "TRITON_ENGINE"}


def _engine(x: Tensor, backend: str, binning: Binning) -> Engine:
    module = select_backend(x.device, backend, binning)
    return getattr(module, _ENGINE_NAMES[module.NAME])


def triton_unavailable_reason(device: Optional[torch.device]) -> Optional[str]:
    try:
        from . import _triton_backend
    except ImportError as error:
        return f"it needs the triton package ({error}); install it with `pip install softhist[triton]`"
    return None if device is None else _triton_backend.unavailable_reason(torch.empty(0, device=device))


_SAID: set = set()


def _say_once(message: str) -> None:
    if message not in _SAID:
        _SAID.add(message)
        warnings.warn(f"softhist: {message}", RuntimeWarning, stacklevel=5)


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
        "triton": triton_unavailable_reason(None) or (None if torch.cuda.is_available() else "no CUDA device"),
    }


# --------------------------------------------------------------------------- running a call


def resolve(binning: Binning, bandwidth: Optional[Tensor], edges: Sequence[Tensor], acc: torch.dtype) -> Binning:
    """The call's description as the engines read it: bandwidths read from their tensor (a host
    sync, inside the op), explicit edges' values checked, and every soft axis's scales checked."""
    hard_call, dims = binning.mode == "hard", len(edges)
    explicit = False
    for d, (axis, e) in enumerate(zip(binning.axes, edges)):
        if axis.uniform is None:  # explicit edges: their values, once per call
            explicit = True
            _checks.check_edge_values(e, "bins" if dims == 1 else f"bins[{d}]", hard_call)
    if bandwidth is not None:
        values = bandwidth.detach().double().tolist()
        _checks.check_bandwidths(values, binning.hard_axes, binning.bandwidth_sizes)
        binning = binning.with_bandwidths(values)
    if hard_call:
        return binning
    if not explicit:  # every scale is in the description: checked once per description
        return _checked_scales(binning, acc)
    for axis, e, hard in zip(binning.axes, edges, binning.hard_axes):
        if not hard:
            lo, hi = axis.uniform if axis.uniform is not None else tuple(e.detach()[[0, -1]].tolist())
            _check_axis_scales(axis, lo, hi, acc)
    return binning


@host_cache(maxsize=256)
def _checked_scales(binning: Binning, acc: torch.dtype) -> Binning:
    for axis, hard in zip(binning.axes, binning.hard_axes):
        if not hard:
            _check_axis_scales(axis, *axis.uniform, acc)
    return binning


def _check_axis_scales(axis, lo: float, hi: float, acc: torch.dtype) -> None:
    # Equal-width bins: the bandwidth must also resolve positions on the range. Explicit (often
    # learned) edges are taken as they come.
    magnitude = max(abs(lo), abs(hi)) if axis.uniform is not None else 0.0
    narrowest = min(axis.bin_bandwidths) if axis.bin_bandwidths else axis.bandwidth
    _checks.check_scales((hi - lo) / axis.bins, narrowest, magnitude, acc)


def run_soft(x: Tensor, weight: Optional[Tensor], bandwidth: Optional[Tensor], edges: Sequence[Tensor], binning: Binning, backend: str) -> Tensor:
    """Soft (or straight-through) histograms ``(rows, *bins)`` of ``x: (rows, n, D)`` in the accumulation dtype."""
    acc = accumulation_dtype(x.dtype)
    engine = _engine(x, backend, binning)
    binning = resolve(binning, bandwidth, edges, acc)
    edges = _in_dtype(_engine_edges(engine, edges, binning), acc)  # the engines compare and compute in the accumulation dtype
    if binning.mode == "straight_through":
        return engine.hard(x, weight, edges, binning, acc)
    return engine.forward(x, weight, edges, binning)


def run_soft_backward(grad, x, weight, bandwidth, edges, binning, backend, needs):
    """``(dL/dx, dL/dweight, dL/dbandwidth, [dL/dedges])`` of :func:`run_soft` by the engine's fused
    backward pass; entries not in ``needs = (x, weight, bandwidth, *edges)`` are None."""
    acc = accumulation_dtype(x.dtype)
    engine = _engine(x, backend, binning)
    binning = resolve(binning, bandwidth, edges, acc)
    need_x, need_w, need_h, *need_edges = needs
    grad_x, grad_w, grad_h, grad_e = engine.backward(
        grad if grad.is_contiguous() else grad.contiguous(), x, weight, _in_dtype(_engine_edges(engine, edges, binning), acc), binning,
        (need_x, need_w, need_h, tuple(need_edges)),
    )
    return (
        _like(grad_x, x) if need_x else None,
        _like(grad_w, weight) if need_w else None,
        _like(grad_h, bandwidth) if need_h else None,
        [g.to(e.dtype, copy=True) if need else None for g, e, need in zip(grad_e, edges, need_edges)],  # engines may slice one buffer
    )


def _in_dtype(tensors: Sequence[Tensor], dtype: torch.dtype) -> List[Tensor]:
    return [t if t.dtype == dtype else t.to(dtype) for t in tensors]


def _like(grad: Tensor, t: Tensor) -> Tensor:
    """An engine's gradient (flat, in its dtype) shaped and typed as ``t``."""
    if grad.shape != t.shape:
        grad = grad.reshape(t.shape)
    return grad if grad.dtype == t.dtype else grad.to(t.dtype)


def run_hard(
    x: Tensor, weight: Optional[Tensor], edges: Sequence[Tensor], binning: Binning, backend: str, dtype: torch.dtype = torch.float64
) -> Tensor:
    """Exact counts (or weight sums) ``(rows, *bins)`` of ``x: (rows, n, D)``: float64 counts rounded
    once to ``dtype`` (the engine writes them so)."""
    engine = _engine(x, backend, binning)
    return engine.hard(x, weight, _engine_edges(engine, edges, binning), resolve(binning, None, edges, torch.float64), dtype)


def _engine_edges(engine: Engine, edges: Sequence[Tensor], binning: Binning) -> Sequence[Tensor]:
    """The edges an engine reads: shape-only equal-width edges (:func:`._plan.shape_only_edges`)
    get their values for engines that read them."""
    return edges if not engine.reads_equal_width_edges else edge_values(edges, binning)


def _bandwidths(binning: Binning, bandwidth: Optional[Tensor], like: Tensor) -> Tensor:
    """The call's flat bandwidth tensor for the plain-torch formulas (given, or the plan's numbers)."""
    if bandwidth is not None:
        return bandwidth
    return binning.bandwidth_tensor(accumulation_dtype(like.dtype), like.device)


def _empty(like: Tensor, *shape: int, dtype: Optional[torch.dtype] = None) -> Tensor:
    return like.new_empty(shape, dtype=dtype or like.dtype)


# --------------------------------------------------------------------------- soft


@torch.library.custom_op("softhist::soft", mutates_args=())
def soft(x: Tensor, weight: Optional[Tensor], bandwidth: Optional[Tensor], edges: List[Tensor], spec: str, backend: str) -> Tensor:
    """Soft (or straight-through) histograms ``(rows, *bins)`` of ``x: (rows, n, D)``, as ``spec``
    (:attr:`._plan.Binning.spec`) describes them, on ``backend``'s engine. ``bandwidth``: the
    per-axis bandwidths ``(D,)`` when they are tensors, else None (the numbers are in ``spec``)."""
    return run_soft(x, weight, bandwidth, edges, binning_from_spec(spec), backend)


@soft.register_fake
def _(x, weight, bandwidth, edges, spec, backend):
    return _empty(x, x.shape[0], *(e.shape[0] - 1 for e in edges), dtype=accumulation_dtype(x.dtype))


@torch.library.custom_op("softhist::soft_backward", mutates_args=())
def soft_backward(
    grad: Tensor, x: Tensor, weight: Optional[Tensor], bandwidth: Optional[Tensor], edges: List[Tensor], spec: str,
    backend: str, needs: List[bool],
) -> Tuple[Tensor, Tensor, Tensor, List[Tensor]]:
    """``(dL/dx, dL/dweight, dL/dbandwidth, [dL/dedges])`` of ``soft``; entries not in ``needs`` are empty."""
    grad_x, grad_w, grad_h, grad_e = run_soft_backward(grad, x, weight, bandwidth, edges, binning_from_spec(spec), backend, needs)
    return (
        _empty(x, 0) if grad_x is None else grad_x,
        _empty(x, 0) if grad_w is None else grad_w,
        _empty(x, 0) if grad_h is None else grad_h,
        [_empty(e, 0) if g is None else g for g, e in zip(grad_e, edges)],
    )


@soft_backward.register_fake
def _(grad, x, weight, bandwidth, edges, spec, backend, needs):
    need_x, need_w, need_h, *need_edges = needs
    return (
        x.new_empty(x.shape if need_x else (0,)),
        x.new_empty(weight.shape if need_w else (0,)),
        x.new_empty(bandwidth.shape if need_h else (0,), dtype=bandwidth.dtype if need_h else x.dtype),
        [e.new_empty(e.shape if need else (0,)) for e, need in zip(edges, need_edges)],
    )


def _soft_needs(ctx, weight: Optional[Tensor], bandwidth: Optional[Tensor], edge_needs: Sequence[bool]) -> List[bool]:
    need_x, need_w, need_h = ctx.needs_input_grad[:3]
    return [bool(need_x), bool(need_w) and weight is not None, bool(need_h) and bandwidth is not None, *map(bool, edge_needs)]


def _soft_grads(ctx, grad: Tensor, saved: Sequence[Tensor], needs: List[bool]):
    """The soft histogram's VJP for ``ctx`` (``saved``: its ``x, weight, bandwidth, *edges``;
    ``ctx.binning``, ``ctx.backend``): the fused backward pass, or the differentiable formula when
    the caller differentiates this backward (grad mode on)."""
    x, weight, bandwidth, *edges = saved
    binning = ctx.binning
    if torch.is_grad_enabled():  # the caller differentiates this backward: the VJP in plain torch ops
        binning = resolve(binning, bandwidth, edges, accumulation_dtype(x.dtype))
        grad_x, grad_w, grad_h, grad_e = differentiable_vjp(grad, x, weight, _bandwidths(binning, bandwidth, x), edges, binning)
        return (
            grad_x.to(x.dtype) if needs[0] else None,
            grad_w.to(weight.dtype) if needs[1] else None,
            grad_h.to(bandwidth.dtype) if needs[2] else None,
            [g.to(e.dtype) if need else None for g, e, need in zip(grad_e, edges, needs[3:])],
        )
    if ctx.eager:
        return run_soft_backward(grad, x, weight, bandwidth, edges, binning, ctx.backend, needs)
    grad_x, grad_w, grad_h, grad_e = soft_backward(grad.contiguous(), x, weight, bandwidth, edges, binning.spec, ctx.backend, needs)
    grad_x, grad_w, grad_h = (g if need else None for g, need in zip((grad_x, grad_w, grad_h), needs))
    return grad_x, grad_w, grad_h, [g if need else None for g, need in zip(grad_e, needs[3:])]


def _soft_setup(ctx, inputs, output) -> None:
    x, weight, bandwidth, edges, spec, backend = inputs
    ctx.save_for_backward(x, weight, bandwidth, *edges)
    ctx.binning, ctx.backend, ctx.eager = binning_from_spec(spec), backend, False


def _soft_grad(ctx, grad: Tensor):
    saved = ctx.saved_tensors
    _, weight, bandwidth, *edges = saved
    edge_needs = ctx.needs_input_grad[3]
    edge_needs = list(edge_needs) if isinstance(edge_needs, (list, tuple)) else [bool(edge_needs)] * len(edges)
    grad_x, grad_w, grad_h, grad_e = _soft_grads(ctx, grad, saved, _soft_needs(ctx, weight, bandwidth, edge_needs))
    return grad_x, grad_w, grad_h, grad_e, None, None


soft.register_autograd(_soft_grad, setup_context=_soft_setup)


def _soft_backward_grad(ctx, *cotangents):
    raise RuntimeError(
        "softhist: the fused backward pass was differentiated; call backward with create_graph=True "
        "(second derivatives run through differentiable_vjp)"
    )


soft_backward.register_autograd(_soft_backward_grad)


class _JumpingDensity(torch.autograd.Function):
    """``kernel.pdf(z)`` for a kernel whose density jumps (the box): its derivative in ``z`` is a
    sum of Dirac deltas, so differentiating it raises instead of returning a silent zero."""

    generate_vmap_rule = True

    @staticmethod
    def forward(z, name):
        return get_kernel(name).pdf(z)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.name = inputs[1]

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError(
            f"the {ctx.name!r} kernel has no second derivative (its density jumps at the edge of its support); "
            "differentiate its histogram once, or use a kernel with a continuous density such as 'triangular', "
            "'epanechnikov', 'bspline' or 'gaussian'"
        )


# --------------------------------------------------------------------------- the differentiable formula


def _bandwidth_slices(bandwidth: Tensor, binning: Binning) -> List[Tensor]:
    """Per axis, its entries of the flat bandwidth tensor: ``(1,)``, or ``(bins,)`` when per bin."""
    return list(torch.split(bandwidth.reshape(-1), list(binning.bandwidth_sizes)))


def window_cells(flat: Tensor, weight: Optional[Tensor], row: Tensor, bandwidth: Tensor, edges: Sequence[Tensor], binning: Binning):
    """Per-sample windows in differentiable torch ops, for samples ``flat: (m, D)`` (any dtype;
    computed in the accumulation dtype) of histogram rows ``row: (m,)``: the weights ``(m,)``
    (0 for non-finite samples), each sample's window cells in the flat ``(rows * cells)``
    histogram ``(m, cells)``, and per axis ``(factor, z, pdf at z, edge index)``, the last three
    None on hard axes. Windows are the engines' (capped at the axis, so they lie in the range).

    A mass axis's factor is ``F(z_{k+1}) - F(z_k)`` with ``z`` at the window's edges; a centre
    axis's is ``width_k f(z_k) / h_k`` with ``z`` at its bins' centres (and per-bin ``h_k``).
    With ``normalize_samples`` each axis's factors are divided by their sum (0 where it is 0),
    so a sample's cells sum to its weight: the cell value is their product."""
    acc = accumulation_dtype(flat.dtype)
    # A normalized sample is divided by its sum, tiny where its kernel barely reaches the range:
    # float32 CDF differences there keep no correct digit, so normalized factors are computed in
    # float64 (then rounded once to the accumulation dtype).
    work = torch.float64 if binning.normalize_samples else acc
    flat = flat.to(work)
    edges = edge_values(edges, binning)  # the windows below read every axis's edge values
    finite = torch.isfinite(flat).all(1)
    w = finite.to(acc) if weight is None else torch.where(finite, weight.reshape(-1).to(acc), 0.0)
    index = row.unsqueeze(1)
    axes = []
    for d, (axis, kernel, hard, e, h) in enumerate(zip(binning.axes, binning.kernels, binning.hard_axes, edges, _bandwidth_slices(bandwidth, binning))):
        e = e.to(work)
        h = h.to(work)
        column = torch.where(finite, flat[:, d], e.detach()[0])
        if hard:
            pos, valid = hard_bins(column.detach().to(acc), e.detach().to(acc), axis, binning.hard_rule)  # in the samples' arithmetic
            first, width = pos, 1
            factor = valid.to(work).unsqueeze(1)
            axes.append((factor, None, None, None))
        else:
            count = max(2, min(window_edges(axis, kernel, e.detach()), axis.bins + 1))
            reach = kernel.support * axis.bandwidth
            first = torch.searchsorted(e.detach(), (column.detach() - reach).contiguous(), right=True) - 1
            first = first.clamp(0, axis.bins + 1 - count)
            edge_index = first.unsqueeze(1) + torch.arange(count, device=flat.device)
            width = count - 1
            if axis.membership == "center":
                lo_e, hi_e = e[edge_index[:, :-1]], e[edge_index[:, 1:]]
                h_bin = h[edge_index[:, :-1]] if axis.per_bin else h
                z = ((lo_e + hi_e) * 0.5 - column.unsqueeze(1)) / h_bin
                pdf = kernel.pdf(z)
                factor = (hi_e - lo_e) / h_bin * pdf
            else:
                z = (e[edge_index] - column.unsqueeze(1)) / h
                cdf = kernel.cdf(z)
                jumps = not math.isfinite(kernel.pdf_slope) and is_builtin(kernel)
                pdf = _JumpingDensity.apply(z, kernel.name) if jumps else kernel.pdf(z)
                factor = cdf[:, 1:] - cdf[:, :-1]
            axes.append((factor, z, pdf, edge_index))
        index = (index.unsqueeze(-1) * axis.bins + first.view(-1, 1, 1) + torch.arange(width, device=flat.device)).flatten(1)
    if binning.normalize_samples:
        normalized = []
        for factor, *rest in axes:
            total = factor.sum(1, keepdim=True)
            reached = total != 0
            normalized.append((torch.where(reached, factor / torch.where(reached, total, 1.0), 0.0).to(acc), *rest))
        axes = normalized
    return w, index, axes


def _windows(x: Tensor, weight: Optional[Tensor], bandwidth: Tensor, edges: Sequence[Tensor], binning: Binning):
    """:func:`window_cells` of every sample of ``x: (rows, n, D)``."""
    rows, n, dims = x.shape
    row = torch.arange(rows, device=x.device).repeat_interleave(n)
    return window_cells(x.reshape(-1, dims), weight, row, bandwidth, edges, binning)


def _outer(factors: Sequence[Tensor]) -> Tensor:
    out = factors[0]
    for f in factors[1:]:
        out = (out.unsqueeze(-1) * f.unsqueeze(1)).flatten(1)
    return out


def cell_values(w: Tensor, axes) -> Tensor:
    """``(m, cells)``: each sample's window cells, ``w * prod_d factor_d``; a cell the kernel does
    not reach gets nothing, even from an infinite weight (0 * inf is NaN)."""
    masses = _outer([factor for factor, *_ in axes])
    return torch.where(masses != 0, w.unsqueeze(1) * masses, 0.0)


def differentiable_histogram(x: Tensor, weight: Optional[Tensor], bandwidth: Tensor, edges: Sequence[Tensor], binning: Binning) -> Tensor:
    """``(rows, *bins)``: the soft histogram of ``x: (rows, n, D)`` in plain torch ops, which autograd
    and every ``torch.func`` transform differentiate to any order. ``O(N x window cells)`` memory."""
    w, index, axes = _windows(x, weight, bandwidth, edges, binning)
    values = cell_values(w, axes)
    hist = torch.zeros(x.shape[0] * math.prod(binning.shape), dtype=values.dtype, device=x.device)
    return hist.index_add(0, index.reshape(-1), values.reshape(-1)).view(x.shape[0], *binning.shape)


def _formula_vjp(grad: Tensor, x: Tensor, weight: Optional[Tensor], bandwidth: Tensor, edges: Sequence[Tensor], binning: Binning):
    """:func:`differentiable_vjp` for calls the hand-written VJP does not cover (centre membership,
    per-bin bandwidths, normalized samples): ``torch.func.vjp`` of :func:`differentiable_histogram`,
    itself differentiable again (and under every transform)."""
    def f(x, weight, bandwidth, *edges):
        return differentiable_histogram(x, weight, bandwidth, edges, binning)

    weight_in = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device) if weight is None else weight
    out, pullback = torch.func.vjp(f, x, weight_in, bandwidth, *edges)
    grad_x, grad_w, grad_h, *grad_e = pullback(grad.to(out.dtype))
    return grad_x, grad_w, grad_h, list(grad_e)


def _formula_jvp(x: Tensor, weight: Optional[Tensor], bandwidth: Tensor, edges: Sequence[Tensor], binning: Binning, tangents) -> Tensor:
    """:func:`histogram_jvp` for calls the hand-written one does not cover: ``torch.func.jvp``."""
    x_t, weight_t, bandwidth_t, edges_t = tangents
    weight_in = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device) if weight is None else weight  # same cells as None

    def f(x, weight, bandwidth, *edges):
        return differentiable_histogram(x, weight, bandwidth, edges, binning)

    primals = (x, weight_in, bandwidth, *edges)
    given = (x_t, weight_t, bandwidth_t, *(list(edges_t) + [None] * (len(edges) - len(edges_t))))
    tangents = tuple(torch.zeros_like(p) if t is None else t.to(p.dtype) for p, t in zip(primals, given))
    return torch.func.jvp(f, primals, tangents)[1]


def histogram_jvp(x: Tensor, weight: Optional[Tensor], bandwidth: Tensor, edges: Sequence[Tensor], binning: Binning, tangents) -> Tensor:
    """``(rows, *bins)``: the soft histogram's forward-mode derivative along ``tangents = (x_t,
    weight_t, bandwidth_t, [edges_t])`` (any of them None), in plain torch ops. A cell holds
    ``w * prod_d a_d`` with ``a_d = F(z_hi) - F(z_lo)`` and ``z = (e - x) / h``, so its tangent is
    ``w_t * prod_d a_d + w * sum_d (a_d)_t * prod_{e != d} a_e``, where
    ``(a_d)_t = f(z_hi) z_hi_t - f(z_lo) z_lo_t`` and ``z_t = (e_t - x_t) / h - z h_t / h``."""
    if not binning.plain:
        return _formula_jvp(x, weight, bandwidth, edges, binning, tangents)
    x_t, weight_t, bandwidth_t, edges_t = tangents
    w, index, axes = _windows(x, weight, bandwidth, edges, binning)
    acc = w.dtype
    finite = torch.isfinite(x.reshape(-1, x.shape[-1])).all(1)
    flat_x_t = None if x_t is None else x_t.reshape(-1, x.shape[-1]).to(acc)
    masses = [mass for mass, *_ in axes]
    cells = torch.zeros(w.shape[0], math.prod(m.shape[1] for m in masses), dtype=acc, device=x.device)
    if weight_t is not None:
        cells = cells + _outer([torch.where(finite, weight_t.reshape(-1).to(acc), 0.0).unsqueeze(1)] + masses)
    for d, (mass, z, pdf, edge_index) in enumerate(axes):
        if z is None:  # a hard axis: its factor does not move
            continue
        h = bandwidth[d].to(acc)
        z_t = torch.zeros_like(z)
        if edges_t is not None and edges_t[d] is not None:
            z_t = z_t + edges_t[d].to(acc)[edge_index] / h
        if flat_x_t is not None:
            z_t = z_t - torch.where(finite, flat_x_t[:, d], 0.0).unsqueeze(1) / h
        if bandwidth_t is not None:
            z_t = z_t - z * (bandwidth_t[d].to(acc) / h)
        cdf_t = pdf * z_t
        factors = [w.unsqueeze(1)] + masses[:d] + [cdf_t[:, 1:] - cdf_t[:, :-1]] + masses[d + 1 :]
        cells = cells + _outer(factors)
    hist = torch.zeros(x.shape[0] * math.prod(binning.shape), dtype=acc, device=x.device)
    return hist.index_add(0, index.reshape(-1), cells.reshape(-1)).view(x.shape[0], *binning.shape)


def differentiable_vjp(grad: Tensor, x: Tensor, weight: Optional[Tensor], bandwidth: Tensor, edges: Sequence[Tensor], binning: Binning):
    """``(dL/dx, dL/dweight, dL/dbandwidth, [dL/dedges])`` of the soft histogram for the upstream
    ``grad``, in plain torch ops: the engines' VJP (see ``csrc/softhist_cpu.cpp``) written so that
    autograd can differentiate it again. Per soft axis, with ``A`` the cells' gradients contracted
    with the other axes' masses and ``dF_p = w (A[p-1] - A[p])``, ``dz_p = dF_p f(z_p) / h``:
    ``dL/dx = -sum dz``, ``dL/dh = -sum z dz``, ``dL/de_p = dz_p``. Centre membership, per-bin
    bandwidths and normalized samples run :func:`_formula_vjp`."""
    if not binning.plain:
        return _formula_vjp(grad, x, weight, bandwidth, edges, binning)
    w, index, axes = _windows(x, weight, bandwidth, edges, binning)
    masses = [mass for mass, *_ in axes]
    cells = grad.reshape(-1).to(w.dtype)[index].view(-1, *(m.shape[1] for m in masses))  # (m, W_0, ..., W_{D-1})
    letters = "abcdefghijklmnopqrstuvwxy"[: len(masses)]
    per_axis = []
    for d in range(len(masses)):
        others = [e for e in range(len(masses)) if e != d]
        spec = ",".join([f"z{letters}"] + [f"z{letters[e]}" for e in others]) + f"->z{letters[d]}"
        per_axis.append(torch.einsum(spec, cells, *(masses[e] for e in others)))  # A_d: (m, W_d)
    grad_w = (per_axis[0] * masses[0]).sum(1)
    grad_x, grad_h, grad_e = [], [], []
    for d, ((mass, z, pdf, edge_index), A) in enumerate(zip(axes, per_axis)):
        if z is None:  # a hard axis: no gradient
            grad_x.append(torch.zeros_like(w))
            grad_h.append(torch.zeros((), dtype=w.dtype, device=w.device))
            grad_e.append(torch.zeros(binning.axes[d].bins + 1, dtype=w.dtype, device=w.device))
            continue
        A = A * w.unsqueeze(1)
        dF = torch.nn.functional.pad(A, (1, 0)) - torch.nn.functional.pad(A, (0, 1))
        dz = dF * pdf / bandwidth[d].to(w.dtype)
        grad_x.append(-dz.sum(1))
        grad_h.append(-(dz * z).sum())
        edge_grad = torch.zeros(binning.axes[d].bins + 1, dtype=w.dtype, device=w.device)
        grad_e.append(edge_grad.index_add(0, edge_index.reshape(-1), dz.reshape(-1)))
    finite = torch.isfinite(x.reshape(-1, x.shape[-1])).all(1)
    grad_w = torch.where(finite, grad_w, 0.0)
    return torch.stack(grad_x, -1).view(x.shape), grad_w.view(x.shape[:2]), torch.stack(grad_h), grad_e


# --------------------------------------------------------------------------- hard


def _hard_slots(x: Tensor, edges: Sequence[Tensor], binning: Binning) -> Tensor:
    """Each sample's cell in the flat ``(rows * cells)`` histogram, or -1 outside the range."""
    rows, n, dims = x.shape
    cell, inside = hard_cells(x.reshape(-1, dims), edges, binning)
    row = torch.arange(rows, device=x.device).repeat_interleave(n) * math.prod(binning.shape)
    return torch.where(inside, row + cell, -1)


def _hard_weight_grad(grad: Tensor, x: Tensor, edges: Sequence[Tensor], binning: Binning) -> Tensor:
    """``(rows, n)``: the gradient at each sample's cell (zero outside the range): the counts' weight gradient."""
    slot = _hard_slots(x, edges, binning)
    values = grad.reshape(-1).index_select(0, slot.clamp(min=0))
    return torch.where(slot >= 0, values, 0.0).view(x.shape[:2]).contiguous()


@torch.library.custom_op("softhist::hard", mutates_args=())
def hard(x: Tensor, weight: Optional[Tensor], edges: List[Tensor], spec: str, backend: str) -> Tensor:
    """Exact counts (or weight sums) ``(rows, *bins)`` in float64 of ``x: (rows, n, D)``, on ``backend``'s engine."""
    return run_hard(x, weight, edges, binning_from_spec(spec), backend)


@hard.register_fake
def _(x, weight, edges, spec, backend):
    return _empty(x, x.shape[0], *(e.shape[0] - 1 for e in edges), dtype=torch.float64)


@torch.library.custom_op("softhist::hard_backward", mutates_args=())
def hard_backward(grad: Tensor, x: Tensor, edges: List[Tensor], spec: str) -> Tensor:
    """``(rows, n)``: ``hard``'s weight gradient."""
    return _hard_weight_grad(grad, x, edges, binning_from_spec(spec))


@hard_backward.register_fake
def _(grad, x, edges, spec):
    return grad.new_empty(x.shape[:2])


def _hard_setup(ctx, inputs, output) -> None:
    x, weight, edges, spec, backend = inputs
    ctx.save_for_backward(x, *edges)
    ctx.spec = spec
    ctx.weight_dtype = None if weight is None else weight.dtype


def _hard_grad(ctx, grad: Tensor):
    x, *edges = ctx.saved_tensors
    grad_w = hard_backward(grad, x, edges, ctx.spec).to(ctx.weight_dtype) if ctx.needs_input_grad[1] else None
    return None, grad_w, [None] * len(edges), None, None


def _hard_backward_setup(ctx, inputs, output) -> None:
    grad, x, edges, spec = inputs
    ctx.save_for_backward(x, *edges)
    ctx.spec = spec


def _hard_backward_grad(ctx, cotangent: Tensor):  # linear in grad: its adjoint is the histogram itself
    x, *edges = ctx.saved_tensors
    return hard(x, cotangent, edges, ctx.spec, "torch"), None, [None] * len(edges), None


hard.register_autograd(_hard_grad, setup_context=_hard_setup)
hard_backward.register_autograd(_hard_backward_grad, setup_context=_hard_backward_setup)


# --------------------------------------------------------------------------- the functions the public API calls


def _as_samples(x: Tensor, weight: Optional[Tensor], samples: Sequence[int]) -> Tuple[Tensor, Optional[Tensor]]:
    """Samples (and weights) in the engine's shape ``samples = (rows, n, D)`` (weights ``(rows, n)``)."""
    return x.reshape(samples), None if weight is None else weight.reshape(samples[:2])


class _EagerSoft(torch.autograd.Function):
    """The eager path of :func:`soft_histogram`: the engine called directly, one autograd node.
    Samples (and weights) come in the caller's shape and are reshaped to the engine's ``samples``
    shape ``(rows, n, D)``, and the result to ``out`` (None: as the engine returns it), inside the
    node: each view outside it would be an autograd node of its own, and on small inputs they
    cost more than the engine. ``apply(x, weight, bandwidth, binning, backend, (samples, out), *edges)``."""

    @staticmethod
    def forward(ctx, x, weight, bandwidth, binning, backend, shapes, *edges):
        samples, out = shapes
        ctx.save_for_backward(x, weight, bandwidth, *edges)  # as given: a double backward differentiates through them
        ctx.binning, ctx.backend, ctx.eager, ctx.samples = binning, backend, True, samples
        hist = run_soft(*_as_samples(x, weight, samples), bandwidth, edges, binning, backend)
        ctx.hist_shape = hist.shape
        return hist if out is None else hist.reshape(out)

    @staticmethod
    def backward(ctx, grad):
        x, weight, bandwidth, *edges = ctx.saved_tensors
        saved = (*_as_samples(x, weight, ctx.samples), bandwidth, *edges)
        needs = _soft_needs(ctx, weight, bandwidth, ctx.needs_input_grad[6:])
        grad_x, grad_w, grad_h, grad_e = _soft_grads(ctx, grad.reshape(ctx.hist_shape), saved, needs)
        return (
            None if grad_x is None else grad_x.reshape(x.shape), None if grad_w is None else grad_w.reshape(weight.shape),
            grad_h, None, None, None, *grad_e,
        )


class SoftHistogram(torch.autograd.Function):
    """``soft`` with autograd for every transform: backward (and double backward) as registered on
    the op, forward-mode AD (``torch.autograd.forward_ad``, ``torch.func.jvp``, ``jacfwd``) through
    :func:`histogram_jvp`, and vmap rules generated from the ops'. (Ops with ``register_autograd``
    alone do not yet run under ``torch.func.grad`` in torch 2.13.)

    ``apply(x, weight, bandwidth, binning, backend, *edges)``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bandwidth, binning, backend, *edges):
        return soft(x, weight, bandwidth, list(edges), binning.spec, backend)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bandwidth, binning, backend, *edges = inputs
        ctx.save_for_backward(x, weight, bandwidth, *edges)
        ctx.save_for_forward(x, weight, bandwidth, *edges)
        ctx.binning, ctx.backend, ctx.eager = binning, backend, False

    @staticmethod
    def backward(ctx, grad):
        saved = ctx.saved_tensors
        _, weight, bandwidth, *edges = saved
        grad_x, grad_w, grad_h, grad_e = _soft_grads(ctx, grad, saved, _soft_needs(ctx, weight, bandwidth, ctx.needs_input_grad[5:]))
        return grad_x, grad_w, grad_h, None, None, *grad_e

    @staticmethod
    def jvp(ctx, x_t, weight_t, bandwidth_t, _binning, _backend, *edges_t):
        x, weight, bandwidth, *edges = ctx.saved_tensors
        binning = resolve(ctx.binning, bandwidth, edges, accumulation_dtype(x.dtype))
        tangents = (x_t, weight_t, bandwidth_t, list(edges_t))
        return histogram_jvp(x, weight, _bandwidths(binning, bandwidth, x), edges, binning, tangents)


class _EagerHard(torch.autograd.Function):
    """The eager path of :func:`hard_histogram`: counts are linear in the weights."""

    @staticmethod
    def forward(ctx, x, weight, binning, backend, dtype, *edges):
        ctx.save_for_backward(x, *edges)
        ctx.binning, ctx.weight_dtype = binning, None if weight is None else weight.dtype
        return run_hard(x, weight, edges, binning, backend, dtype)

    @staticmethod
    def backward(ctx, grad):
        x, *edges = ctx.saved_tensors
        grad_w = _hard_weight_grad(grad, x, edges, ctx.binning).to(ctx.weight_dtype) if ctx.needs_input_grad[1] else None
        return None, grad_w, None, None, None, *([None] * len(edges))


class HardHistogram(torch.autograd.Function):
    """``hard`` with autograd for every transform: counts are linear in the weights."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, binning, backend, *edges):
        return hard(x, weight, list(edges), binning.spec, backend)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, binning, backend, *edges = inputs
        _hard_setup(ctx, (x, weight, edges, binning.spec, backend), output)
        ctx.backend = backend

    @staticmethod
    def backward(ctx, grad):
        _, grad_w, edges_grads, *_ = _hard_grad(ctx, grad)
        return None, grad_w, None, None, *edges_grads

    @staticmethod
    def jvp(ctx, x_t, weight_t, _binning, _backend, *edges_t):
        x, *edges = ctx.saved_tensors
        return None if weight_t is None else hard(x, weight_t, edges, ctx.spec, ctx.backend)


def _eager(x: Tensor) -> bool:
    """Whether a call can skip the ops: plain tensors, and no transform, compile or forward-mode AD
    active (the public functions refuse TorchScript tracing before they get here)."""
    return (
        type(x) is Tensor
        and x.device.type != "meta"
        and forward_ad._current_level < 0
        and not torch._C._are_functorch_transforms_active()
    )


def soft_histogram(
    x: Tensor, weight: Optional[Tensor], bandwidth: Optional[Tensor], edges: Sequence[Tensor], binning: Binning, backend: str,
    shapes: Optional[Tuple[Tuple[int, ...], Tuple[int, ...]]] = None,
) -> Tensor:
    """The public functions' entry to soft and straight-through histograms. Eager calls run the
    engine under one autograd node; under ``torch.compile`` the op itself, whose registered autograd
    dynamo traces (dynamo does not trace a custom ``jvp``); under transforms :class:`SoftHistogram`.

    ``shapes = (samples, out)``: ``x`` and ``weight`` come in the caller's shape, to be reshaped to
    ``samples = (rows, n, D)`` (weights ``(rows, n)``), and the result is reshaped to ``out``."""
    if backend != "auto":  # an engine asked for by name must run here, whatever path the call takes
        select_backend(x.device, backend, binning)
    if shapes is not None and not (_eager(x) and torch.is_grad_enabled() and _any_requires_grad(x, weight, bandwidth, *edges)):
        samples, out = shapes
        return soft_histogram(*_as_samples(x, weight, samples), bandwidth, edges, binning, backend).reshape(out)
    if torch.compiler.is_compiling():
        return soft(x, weight, bandwidth, list(edges), binning.spec, backend)
    if _eager(x):
        if not (torch.is_grad_enabled() and _any_requires_grad(x, weight, bandwidth, *edges)):
            return run_soft(x, weight, bandwidth, edges, binning, backend)  # nothing to differentiate
        return _EagerSoft.apply(x, weight, bandwidth, binning, backend, shapes or (x.shape, None), *edges)
    return SoftHistogram.apply(x, weight, bandwidth, binning, backend, *edges)


def _any_requires_grad(*tensors: Optional[Tensor]) -> bool:
    return any(t is not None and t.requires_grad for t in tensors)


def hard_histogram(
    x: Tensor, weight: Optional[Tensor], edges: Sequence[Tensor], binning: Binning, backend: str, dtype: torch.dtype = torch.float64
) -> Tensor:
    """The public functions' entry to exact counts (see :func:`soft_histogram`), in ``dtype``: eager
    calls have the engine write them so; the ops (float64) are converted."""
    if x.requires_grad:
        x = x.detach()  # counts are piecewise constant in the samples: no gradient, no graph
    if backend != "auto":
        select_backend(x.device, backend, binning)
    if torch.compiler.is_compiling():
        return hard(x, weight, list(edges), binning.spec, backend).to(dtype)
    if _eager(x):
        if weight is None or not (weight.requires_grad and torch.is_grad_enabled()):
            return run_hard(x, weight, edges, binning, backend, dtype)
        return _EagerHard.apply(x, weight, binning, backend, dtype, *edges)
    return HardHistogram.apply(x, weight, binning, backend, *edges).to(dtype)


# --------------------------------------------------------------------------- vmap


def _move(t: Optional[Tensor], dim: Optional[int], size: int) -> Optional[Tensor]:
    """The vmapped dim of ``t`` first (expanded when ``t`` is not batched)."""
    if t is None:
        return None
    return t.unsqueeze(0).expand(size, *t.shape) if dim is None else t.movedim(dim, 0)


def _fold_rows(op: Callable, info, in_dims, x, weight, *rest):
    """vmap by folding the batch into the rows: ``(V, rows, n, D)`` -> one call on ``(V * rows, n, D)``."""
    size = info.batch_size
    x = _move(x, in_dims[0], size)
    weight = _move(weight, in_dims[1], size)
    out = op(x.reshape(-1, *x.shape[2:]), None if weight is None else weight.reshape(-1, weight.shape[-1]), *rest)
    return out.view(size, -1, *out.shape[1:]), 0


def _loop(op: Callable, info, in_dims, *args):
    """vmap by one call per batch entry, stacked (for arguments the engines cannot fold)."""

    def pick(value, dim, i):
        if isinstance(value, (list, tuple)) and isinstance(dim, (list, tuple)):
            return [pick(v, d, i) for v, d in zip(value, dim)]
        return value if dim is None else value.select(dim, i)

    results = [op(*(pick(a, d, i) for a, d in zip(args, in_dims))) for i in range(info.batch_size)]
    first = results[0]
    if isinstance(first, Tensor):
        return torch.stack(results), 0
    stacked = tuple(
        [torch.stack(parts) for parts in zip(*column)] if isinstance(column[0], list) else torch.stack(column)
        for column in zip(*results)
    )
    out_dims = tuple([0] * len(s) if isinstance(s, list) else 0 for s in stacked)
    return stacked, out_dims


def _only_samples_batched(in_dims, sample_args: int = 2) -> bool:
    flat = list(itertools.chain.from_iterable(d if isinstance(d, (list, tuple)) else [d] for d in in_dims[sample_args:]))
    return all(d is None for d in flat)


@soft.register_vmap
def _(info, in_dims, x, weight, *rest):
    if _only_samples_batched(in_dims):
        return _fold_rows(soft, info, in_dims, x, weight, *rest)
    return _loop(soft, info, in_dims, x, weight, *rest)


@hard.register_vmap
def _(info, in_dims, x, weight, *rest):
    if _only_samples_batched(in_dims):
        return _fold_rows(hard, info, in_dims, x, weight, *rest)
    return _loop(hard, info, in_dims, x, weight, *rest)


@soft_backward.register_vmap
def _(info, in_dims, *args):
    return _loop(soft_backward, info, in_dims, *args)


@hard_backward.register_vmap
def _(info, in_dims, *args):
    return _loop(hard_backward, info, in_dims, *args)

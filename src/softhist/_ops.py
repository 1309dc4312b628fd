"""softhist's engines as PyTorch operators: ``torch.ops.softhist.{soft, soft_backward, hard, hard_backward}``.

Every histogram the public functions compute goes through one of these ``torch.library`` custom
ops. Each has a fake (meta) kernel, so ``torch.compile``, ``torch.export`` and meta tensors see
shapes without running an engine; registered autograd; and a vmap rule, so ``torch.func.grad``,
``vmap`` and ``jacrev`` work. Whatever an engine reads on the host (the bandwidth's value to size
windows, non-uniform edges) it reads inside the op, where it breaks no graph.

* ``soft``: soft and straight-through histograms, ``x: (rows, n, D)`` -> ``(rows, *bins)`` in the
  accumulation dtype, on the engine the call selected (``"cpp"``, ``"triton"`` or ``"torch"``).
* ``soft_backward``: its first derivatives, by the same engine's fused backward pass.
* ``hard``: exact counts in float64, differentiable in the weights; ``hard_backward``: that gradient.

Double backward: when a backward pass itself builds a graph (``create_graph=True``, the
``torch.func`` transforms), the first derivatives are computed instead by :func:`differentiable_vjp`,
the engines' VJP in plain torch ops that autograd differentiates again (``O(N x window)``
memory), so second derivatives are exact for every kernel whose density is continuous. The box
kernel's density jumps: it has no second derivative, and asking for one raises.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import _torch_backend
from ._plan import Axis, Binning, accumulation_dtype, window_edges
from ._torch_backend import hard_bins, hard_cells
from .kernels import get_kernel

__all__ = ["differentiable_histogram", "hard", "hard_histogram", "soft", "soft_histogram"]


def _engine(backend: str):
    if backend == "cpp":
        from . import _cpp_backend

        return _cpp_backend.CPP_ENGINE
    if backend == "triton":
        from . import _triton_backend

        return _triton_backend.TRITON_ENGINE
    return _torch_backend.TORCH_ENGINE


def _binning(
    bandwidth: Optional[Tensor], edges: Sequence[Tensor], kernels: str, hard_axes: Sequence[bool],
    uniform: Sequence[bool], lo: Sequence[float], hi: Sequence[float], hard_rule: str, mode: str,
    acc: torch.dtype = torch.float64,
) -> Binning:
    """The engines' description of a call, from the ops' arguments. Reads the bandwidth's values
    (a host sync, inside the op) and checks them, with the edges, as the public functions do."""
    values = [0.0] * len(edges) if bandwidth is None else bandwidth.detach().double().tolist()
    for d, (value, hard) in enumerate(zip(values, hard_axes)):
        if bandwidth is not None and not hard and not (math.isfinite(value) and value > 0):
            name = "bandwidth" if len(values) == 1 else f"bandwidth[{d}]"
            raise ValueError(f"{name} must be positive and finite, got {value}")
    for d, (e, flat) in enumerate(zip(edges, uniform)):
        if not flat and mode != "hard" and e.device.type != "meta":  # hard counts take numpy's edges
            e = e.detach()
            # The public functions check the edges as given; under torch.compile they leave it to this
            # (edges rounded to float32 may tie, which only empties a bin).
            if not bool(torch.isfinite(e).all()) or not bool((e[1:] >= e[:-1]).all()):
                name = "bins" if len(edges) == 1 else f"bins[{d}]"
                raise ValueError(f"{name} must be finite and increasing, got {e.tolist() if e.numel() <= 8 else e}")
    axes = tuple(Axis(e.numel() - 1, h, (a, b) if flat else None) for e, h, flat, a, b in zip(edges, values, uniform, lo, hi))
    if mode != "hard" and bandwidth is not None:
        for axis, e, hard in zip(axes, edges, hard_axes):
            if not hard and e.device.type != "meta":
                lo_, hi_ = axis.uniform if axis.uniform is not None else (float(e[0]), float(e[-1]))
                _check_scales((hi_ - lo_) / axis.bins, axis.bandwidth, acc)
    return Binning(tuple(get_kernel(k) for k in kernels.split(",")), mode, axes, hard_rule, tuple(hard_axes))


def _check_scales(width: float, bandwidth: float, acc: torch.dtype) -> None:
    """Soft binning divides by the bandwidth and by the bin width in ``acc``: both must be normal
    numbers there, and their ratio must fit (a subnormal range or bandwidth would give inf or NaN)."""
    info = torch.finfo(acc)
    fits = lambda v: info.tiny <= v <= info.max / 1024  # noqa: E731
    if not (fits(width) and fits(bandwidth) and fits(width / bandwidth) and fits(bandwidth / width)):
        raise ValueError(
            f"bandwidth={bandwidth!r} with bins {width!r} wide is out of {acc}'s range for soft binning "
            f"(each and their ratio must lie in [{info.tiny:.3g}, {info.max / 1024:.3g}]); "
            "rescale the data, pass float64 input, or use mode='hard'"
        )


def _empty(like: Tensor, *shape: int, dtype: Optional[torch.dtype] = None) -> Tensor:
    return like.new_empty(shape, dtype=dtype or like.dtype)


# --------------------------------------------------------------------------- soft


@torch.library.custom_op("softhist::soft", mutates_args=())
def soft(
    x: Tensor, weight: Optional[Tensor], bandwidth: Tensor, edges: List[Tensor], kernels: str, hard_axes: List[bool],
    uniform: List[bool], lo: List[float], hi: List[float], hard_rule: str, straight_through: bool, backend: str,
) -> Tensor:
    """Soft (or straight-through) histograms ``(rows, *bins)`` of ``x: (rows, n, D)``, on ``backend``'s engine.

    ``kernels``: one kernel name per axis, comma-separated; ``uniform[d]``: axis ``d``'s edges split
    ``(lo[d], hi[d])`` evenly.
    """
    acc = accumulation_dtype(x.dtype)
    binning = _binning(bandwidth, edges, kernels, hard_axes, uniform, lo, hi, hard_rule, "straight_through" if straight_through else "soft", acc)
    edges = [e.to(acc) for e in edges]  # the engines compare and compute in the accumulation dtype
    engine = _engine(backend)
    return engine.hard(x, weight, edges, binning).to(acc) if straight_through else engine.forward(x, weight, edges, binning)


@soft.register_fake
def _(x, weight, bandwidth, edges, kernels, hard_axes, uniform, lo, hi, hard_rule, straight_through, backend):
    return _empty(x, x.shape[0], *(e.shape[0] - 1 for e in edges), dtype=accumulation_dtype(x.dtype))


@torch.library.custom_op("softhist::soft_backward", mutates_args=())
def soft_backward(
    grad: Tensor, x: Tensor, weight: Optional[Tensor], bandwidth: Tensor, edges: List[Tensor], kernels: str,
    hard_axes: List[bool], uniform: List[bool], lo: List[float], hi: List[float], hard_rule: str, backend: str,
    needs: List[bool],
) -> Tuple[Tensor, Tensor, Tensor, List[Tensor]]:
    """``(dL/dx, dL/dweight, dL/dbandwidth, [dL/dedges])`` of ``soft``; entries not in ``needs`` are empty."""
    acc = accumulation_dtype(x.dtype)
    binning = _binning(bandwidth, edges, kernels, hard_axes, uniform, lo, hi, hard_rule, "soft", acc)
    need_x, need_w, need_h, *need_edges = needs
    engine_edges = [e.to(acc) for e in edges]
    grad_x, grad_w, grad_h, grad_e = _engine(backend).backward(grad, x, weight, engine_edges, binning, (need_x, need_w, need_h, tuple(need_edges)))
    return (
        _empty(x, 0) if grad_x is None else grad_x.reshape(x.shape).to(x.dtype),
        _empty(x, 0) if grad_w is None else grad_w.reshape(weight.shape).to(weight.dtype),
        _empty(bandwidth, 0) if grad_h is None else grad_h.reshape(bandwidth.shape).to(bandwidth.dtype),
        [_empty(e, 0) if g is None else g.to(e.dtype, copy=True) for g, e in zip(grad_e, edges)],  # engines may slice one buffer
    )


@soft_backward.register_fake
def _(grad, x, weight, bandwidth, edges, kernels, hard_axes, uniform, lo, hi, hard_rule, backend, needs):
    need_x, need_w, need_h, *need_edges = needs
    return (
        x.new_empty(x.shape if need_x else (0,)),
        x.new_empty(weight.shape if need_w else (0,)),
        bandwidth.new_empty(bandwidth.shape if need_h else (0,)),
        [e.new_empty(e.shape if need else (0,)) for e, need in zip(edges, need_edges)],
    )


def _soft_setup(ctx, inputs, output) -> None:
    x, weight, bandwidth, edges, *params = inputs
    ctx.save_for_backward(x, weight, bandwidth, *edges)
    ctx.params = params  # kernels, hard_axes, uniform, lo, hi, hard_rule, straight_through, backend


def _soft_grad(ctx, grad: Tensor):
    x, weight, bandwidth, *edges = ctx.saved_tensors
    kernels, hard_axes, uniform, lo, hi, hard_rule, _, backend = ctx.params
    need_x, need_w, need_h, need_edges = ctx.needs_input_grad[:4]
    need_edges = list(need_edges) if isinstance(need_edges, (list, tuple)) else [bool(need_edges)] * len(edges)
    needs = [bool(need_x), bool(need_w) and weight is not None, bool(need_h), *map(bool, need_edges)]
    if torch.is_grad_enabled():  # the caller differentiates this backward: the VJP in plain torch ops
        binning = _binning(bandwidth, edges, kernels, hard_axes, uniform, lo, hi, hard_rule, "soft")
        grad_x, grad_w, grad_h, grad_e = differentiable_vjp(grad, x, weight, bandwidth, edges, binning)
        grad_x = grad_x.to(x.dtype) if needs[0] else None
        grad_w = grad_w.to(weight.dtype) if needs[1] else None
        grad_h = grad_h.to(bandwidth.dtype) if needs[2] else None
        grad_e = [g.to(e.dtype) if need else None for g, e, need in zip(grad_e, edges, needs[3:])]
    else:
        grad_x, grad_w, grad_h, grad_e = soft_backward(
            grad.contiguous(), x, weight, bandwidth, edges, kernels, hard_axes, uniform, lo, hi, hard_rule, backend, needs
        )
        grad_x, grad_w, grad_h = (g if need else None for g, need in zip((grad_x, grad_w, grad_h), needs))
        grad_e = [g if need else None for g, need in zip(grad_e, needs[3:])]
    return grad_x, grad_w, grad_h, grad_e, None, None, None, None, None, None, None, None


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


soft.register_autograd(_soft_grad, setup_context=_soft_setup)


def _soft_backward_grad(ctx, *cotangents):
    raise RuntimeError(
        "softhist: the fused backward pass was differentiated; call backward with create_graph=True "
        "(second derivatives run through differentiable_vjp)"
    )


soft_backward.register_autograd(_soft_backward_grad)


# --------------------------------------------------------------------------- the differentiable formula


def _windows(x: Tensor, weight: Optional[Tensor], bandwidth: Tensor, edges: Sequence[Tensor], binning: Binning):
    """Per-sample windows in differentiable torch ops: the weights ``(m,)``, each sample's window
    cells in the flat ``(rows * cells)`` histogram ``(m, cells)``, and per axis ``(mass, z, pdf at z,
    edge index)`` (the last three None on hard axes). Windows are the engines' (capped at the axis)."""
    rows, n, dims = x.shape
    acc = accumulation_dtype(x.dtype)
    flat = x.reshape(-1, dims).to(acc)
    finite = torch.isfinite(flat).all(1)
    w = finite.to(acc) if weight is None else torch.where(finite, weight.reshape(-1).to(acc), 0.0)
    index = torch.arange(rows, device=x.device).repeat_interleave(n).unsqueeze(1)
    axes = []
    for d, (axis, kernel, hard, e) in enumerate(zip(binning.axes, binning.kernels, binning.hard_axes, edges)):
        e = e.to(acc)
        column = torch.where(finite, flat[:, d], e.detach()[0])
        if hard:
            pos, valid = hard_bins(column.detach(), e.detach(), axis, binning.hard_rule)
            first, width = pos, 1
            axes.append((valid.to(acc).unsqueeze(1), None, None, None))
        else:
            count = max(2, min(window_edges(axis, kernel, e.detach()), axis.bins + 1))
            reach = kernel.support * axis.bandwidth
            first = torch.searchsorted(e.detach(), (column.detach() - reach).contiguous(), right=True) - 1
            first = first.clamp(0, axis.bins + 1 - count)
            edge_index = first.unsqueeze(1) + torch.arange(count, device=x.device)
            z = (e[edge_index] - column.unsqueeze(1)) / bandwidth[d].to(acc)
            cdf = kernel.cdf(z)
            pdf = kernel.pdf(z) if math.isfinite(kernel.pdf_slope) else _JumpingDensity.apply(z, kernel.name)
            axes.append((cdf[:, 1:] - cdf[:, :-1], z, pdf, edge_index))
            width = count - 1
        index = (index.unsqueeze(-1) * axis.bins + first.view(-1, 1, 1) + torch.arange(width, device=x.device)).flatten(1)
    return w, index, axes


def _outer(factors: Sequence[Tensor]) -> Tensor:
    out = factors[0]
    for f in factors[1:]:
        out = (out.unsqueeze(-1) * f.unsqueeze(1)).flatten(1)
    return out


def differentiable_histogram(x: Tensor, weight: Optional[Tensor], bandwidth: Tensor, edges: Sequence[Tensor], binning: Binning) -> Tensor:
    """``(rows, *bins)``: the soft histogram of ``x: (rows, n, D)`` in plain torch ops, which autograd
    and every ``torch.func`` transform differentiate to any order. ``O(N x window cells)`` memory."""
    w, index, axes = _windows(x, weight, bandwidth, edges, binning)
    values = _outer([w.unsqueeze(1)] + [mass for mass, *_ in axes])
    hist = torch.zeros(x.shape[0] * math.prod(binning.shape), dtype=values.dtype, device=x.device)
    return hist.index_add(0, index.reshape(-1), values.reshape(-1)).view(x.shape[0], *binning.shape)


def differentiable_vjp(grad: Tensor, x: Tensor, weight: Optional[Tensor], bandwidth: Tensor, edges: Sequence[Tensor], binning: Binning):
    """``(dL/dx, dL/dweight, dL/dbandwidth, [dL/dedges])`` of the soft histogram for the upstream
    ``grad``, in plain torch ops: the engines' VJP (see ``csrc/softhist_cpu.cpp``) written so that
    autograd can differentiate it again. Per soft axis, with ``A`` the cells' gradients contracted
    with the other axes' masses and ``dF_p = w (A[p-1] - A[p])``, ``dz_p = dF_p f(z_p) / h``:
    ``dL/dx = -sum dz``, ``dL/dh = -sum z dz``, ``dL/de_p = dz_p``."""
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


def _hard_binning(edges: Sequence[Tensor], uniform: Sequence[bool], lo: Sequence[float], hi: Sequence[float], hard_rule: str) -> Binning:
    """The engines' description of exact counts (every axis hard; kernels and bandwidths unused)."""
    dims = len(edges)
    return _binning(None, edges, ",".join(["gaussian"] * dims), [True] * dims, uniform, lo, hi, hard_rule, "hard")


def _hard_slots(x: Tensor, edges: Sequence[Tensor], binning: Binning) -> Tensor:
    """Each sample's cell in the flat ``(rows * cells)`` histogram, or -1 outside the range."""
    rows, n, dims = x.shape
    cell, inside = hard_cells(x.reshape(-1, dims), edges, binning)
    row = torch.arange(rows, device=x.device).repeat_interleave(n) * math.prod(binning.shape)
    return torch.where(inside, row + cell, -1)


@torch.library.custom_op("softhist::hard", mutates_args=())
def hard(
    x: Tensor, weight: Optional[Tensor], edges: List[Tensor], uniform: List[bool], lo: List[float], hi: List[float], hard_rule: str,
    backend: str,
) -> Tensor:
    """Exact counts (or weight sums) ``(rows, *bins)`` in float64 of ``x: (rows, n, D)``, on ``backend``'s engine."""
    return _engine(backend).hard(x, weight, edges, _hard_binning(edges, uniform, lo, hi, hard_rule))


@hard.register_fake
def _(x, weight, edges, uniform, lo, hi, hard_rule, backend):
    return _empty(x, x.shape[0], *(e.shape[0] - 1 for e in edges), dtype=torch.float64)


@torch.library.custom_op("softhist::hard_backward", mutates_args=())
def hard_backward(grad: Tensor, x: Tensor, edges: List[Tensor], uniform: List[bool], lo: List[float], hi: List[float], hard_rule: str) -> Tensor:
    """``(rows, n)``: the gradient at each sample's cell (zero outside the range): ``hard``'s weight gradient."""
    slot = _hard_slots(x, edges, _hard_binning(edges, uniform, lo, hi, hard_rule))
    values = grad.reshape(-1).index_select(0, slot.clamp(min=0))
    return torch.where(slot >= 0, values, 0.0).view(x.shape[:2]).contiguous()


@hard_backward.register_fake
def _(grad, x, edges, uniform, lo, hi, hard_rule):
    return grad.new_empty(x.shape[:2])


def _hard_setup(ctx, inputs, output) -> None:
    x, weight, edges, *params = inputs
    ctx.save_for_backward(x, *edges)
    ctx.params = params
    ctx.weight_dtype = None if weight is None else weight.dtype


def _hard_grad(ctx, grad: Tensor):
    x, *edges = ctx.saved_tensors
    grad_w = hard_backward(grad, x, edges, *ctx.params[:4]) if ctx.needs_input_grad[1] else None
    return None, None if grad_w is None else grad_w.to(ctx.weight_dtype), [None] * len(edges), None, None, None, None, None


def _hard_backward_setup(ctx, inputs, output) -> None:
    grad, x, edges, *params = inputs
    ctx.save_for_backward(x, *edges)
    ctx.params = params


def _hard_backward_grad(ctx, cotangent: Tensor):  # linear in grad: its adjoint is the histogram itself
    x, *edges = ctx.saved_tensors
    return hard(x, cotangent, edges, *ctx.params, "torch"), None, [None] * len(edges), None, None, None, None


hard.register_autograd(_hard_grad, setup_context=_hard_setup)
hard_backward.register_autograd(_hard_backward_grad, setup_context=_hard_backward_setup)


# --------------------------------------------------------------------------- the functions the public API calls


class SoftHistogram(torch.autograd.Function):
    """``soft`` with autograd for every transform: backward (and double backward) as registered on
    the op, forward-mode AD (``jvp``, ``torch.func.jacfwd``) through :func:`differentiable_histogram`,
    and vmap rules generated from the ops'. (Ops with ``register_autograd`` alone do not yet run
    under ``torch.func.grad`` in torch 2.13.)

    ``apply(x, weight, bandwidth, params, *edges)``; ``params`` holds ``soft``'s other arguments.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bandwidth, params, *edges):
        return soft(x, weight, bandwidth, list(edges), *params)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bandwidth, params, *edges = inputs
        _soft_setup(ctx, (x, weight, bandwidth, edges, *params), output)
        ctx.save_for_forward(x, weight, bandwidth, *edges)
        ctx.edge_needs = ctx.needs_input_grad[4:]

    @staticmethod
    def backward(ctx, grad):
        ctx.needs_input_grad = (*ctx.needs_input_grad[:3], tuple(ctx.edge_needs))
        grad_x, grad_w, grad_h, grad_e, *_ = _soft_grad(ctx, grad)
        return grad_x, grad_w, grad_h, None, *grad_e

    @staticmethod
    def jvp(ctx, x_t, weight_t, bandwidth_t, _, *edges_t):
        x, weight, bandwidth, *edges = ctx.saved_tensors
        kernels, hard_axes, uniform, lo, hi, hard_rule, _, _ = ctx.params
        binning = _binning(bandwidth, edges, kernels, hard_axes, uniform, lo, hi, hard_rule, "soft")

        def fn(x, weight, bandwidth, *edges):
            return differentiable_histogram(x, weight, bandwidth, edges, binning)

        primals = (x, weight, bandwidth, *edges)
        tangents = (x_t, weight_t, bandwidth_t, *edges_t)
        keep = [i for i, (p, t) in enumerate(zip(primals, tangents)) if p is not None and t is not None]
        if not keep:
            return None

        def restricted(*varying):
            args = list(primals)
            for i, v in zip(keep, varying):
                args[i] = v
            return fn(*args)

        return torch.func.jvp(restricted, tuple(primals[i] for i in keep), tuple(tangents[i] for i in keep))[1]


class HardHistogram(torch.autograd.Function):
    """``hard`` with autograd for every transform: counts are linear in the weights."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, params, *edges):
        return hard(x, weight, list(edges), *params)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, params, *edges = inputs
        _hard_setup(ctx, (x, weight, edges, *params), output)

    @staticmethod
    def backward(ctx, grad):
        _, grad_w, edges_grads, *_ = _hard_grad(ctx, grad)
        return None, grad_w, None, *edges_grads

    @staticmethod
    def jvp(ctx, x_t, weight_t, _, *edges_t):
        x, *edges = ctx.saved_tensors
        return None if weight_t is None else hard(x, weight_t, edges, *ctx.params)


def soft_histogram(x: Tensor, weight: Optional[Tensor], bandwidth: Tensor, params: tuple, edges: Sequence[Tensor]) -> Tensor:
    """The public functions' entry to ``soft``. Under ``torch.compile`` the op itself, whose
    registered autograd dynamo traces (dynamo does not trace a custom ``jvp``); in eager mode
    :class:`SoftHistogram`, which every ``torch.func`` transform accepts."""
    if torch.compiler.is_compiling():
        return soft(x, weight, bandwidth, list(edges), *params)
    return SoftHistogram.apply(x, weight, bandwidth, params, *edges)


def hard_histogram(x: Tensor, weight: Optional[Tensor], params: tuple, edges: Sequence[Tensor]) -> Tensor:
    """The public functions' entry to ``hard`` (see :func:`soft_histogram`)."""
    x = x.detach()  # counts are piecewise constant in the samples: no gradient, no graph
    if torch.compiler.is_compiling():
        return hard(x, weight, list(edges), *params)
    return HardHistogram.apply(x, weight, params, *edges)


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

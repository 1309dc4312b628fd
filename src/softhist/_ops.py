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

Double backward: when a backward pass itself builds a graph (``create_graph=True``, nested
``torch.func.grad``), the first derivatives are computed instead by autograd through
:func:`differentiable_histogram`, the same formula in plain torch ops (``O(N x window)``
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
from ._torch_backend import Axis, Binning, _edge_bins, _histc_bins, _strides, accumulation_dtype
from .kernels import get_kernel

__all__ = ["differentiable_histogram", "hard", "soft"]


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
) -> Binning:
    """The engines' description of a call, from the ops' arguments. Reads the bandwidth's values
    (a host sync, inside the op) and checks them, with the edges, as the public functions do."""
    values = [0.0] * len(edges) if bandwidth is None else bandwidth.detach().double().tolist()
    for d, (value, hard) in enumerate(zip(values, hard_axes)):
        if bandwidth is not None and not hard and not (math.isfinite(value) and value > 0):
            name = "bandwidth" if len(values) == 1 else f"bandwidth[{d}]"
            raise ValueError(f"{name} must be positive and finite, got {value}")
    for d, (e, flat) in enumerate(zip(edges, uniform)):
        if not flat and e.device.type != "meta":
            e = e.detach()
            if not bool(torch.isfinite(e).all()) or not bool((e[1:] > e[:-1]).all()):
                name = "bins" if len(edges) == 1 else f"bins[{d}]"
                raise ValueError(f"{name} must be finite and strictly increasing, got {e.tolist() if e.numel() <= 8 else e}")
    axes = tuple(Axis(e.numel() - 1, h, (a, b) if flat else None) for e, h, flat, a, b in zip(edges, values, uniform, lo, hi))
    return Binning(tuple(get_kernel(k) for k in kernels.split(",")), mode, axes, hard_rule, tuple(hard_axes))


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
    binning = _binning(bandwidth, edges, kernels, hard_axes, uniform, lo, hi, hard_rule, "straight_through" if straight_through else "soft")
    if straight_through:
        return _torch_backend.hard_histogram(x, weight, edges, binning).to(accumulation_dtype(x.dtype))
    return _engine(backend).forward(x, weight, edges, binning)


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
    binning = _binning(bandwidth, edges, kernels, hard_axes, uniform, lo, hi, hard_rule, "soft")
    need_x, need_w, need_h, *need_edges = needs
    grad_x, grad_w, grad_h, grad_e = _engine(backend).backward(grad, x, weight, edges, binning, (need_x, need_w, need_h, tuple(need_edges)))
    return (
        _empty(x, 0) if grad_x is None else grad_x.reshape(x.shape).to(x.dtype),
        _empty(x, 0) if grad_w is None else grad_w.reshape(weight.shape).to(weight.dtype),
        _empty(bandwidth, 0) if grad_h is None else grad_h.reshape(bandwidth.shape).to(bandwidth.dtype),
        [_empty(e, 0) if g is None else g.to(e.dtype) for g, e in zip(grad_e, edges)],
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


_SOFT_ARGS = ("x", "weight", "bandwidth", "edges", "kernels", "hard_axes", "uniform", "lo", "hi", "hard_rule", "straight_through", "backend")


def _soft_setup(ctx, inputs, output) -> None:
    x, weight, bandwidth, edges, *params = inputs
    ctx.save_for_backward(x, weight, bandwidth, *edges)
    ctx.params = params  # kernels, hard_axes, uniform, lo, hi, hard_rule, straight_through, backend
    ctx.edge_count = len(edges)


def _soft_grad(ctx, grad: Tensor):
    x, weight, bandwidth, *edges = ctx.saved_tensors
    kernels, hard_axes, uniform, lo, hi, hard_rule, _, backend = ctx.params
    need_x, need_w, need_h, need_edges = ctx.needs_input_grad[:4]
    need_edges = list(need_edges) if isinstance(need_edges, (list, tuple)) else [bool(need_edges)] * len(edges)
    needs = [bool(need_x), bool(need_w) and weight is not None, bool(need_h), *map(bool, need_edges)]
    if torch.is_grad_enabled():  # the caller differentiates this backward: autograd through plain torch ops
        binning = _binning(bandwidth, edges, kernels, hard_axes, uniform, lo, hi, hard_rule, "soft")
        inputs = [x, weight, bandwidth, *edges]
        wanted = [t for t, need in zip(inputs, [needs[0], needs[1], needs[2], *needs[3:]]) if need]
        _check_twice_differentiable(binning, needs)
        hist = differentiable_histogram(x, weight, bandwidth, edges, binning)
        found = iter(torch.autograd.grad(hist, wanted, grad, create_graph=True, allow_unused=True))
        grads = [next(found) if need else None for need in needs]
        grads = [torch.zeros_like(t) if g is None and need else g for g, t, need in zip(grads, inputs, needs)]
        grad_x, grad_w, grad_h, *grad_e = grads
    else:
        grad_x, grad_w, grad_h, grad_e = soft_backward(
            grad.contiguous(), x, weight, bandwidth, edges, kernels, hard_axes, uniform, lo, hi, hard_rule, backend, needs
        )
        grad_x, grad_w, grad_h = (g if need else None for g, need in zip((grad_x, grad_w, grad_h), needs))
        grad_e = [g if need else None for g, need in zip(grad_e, needs[3:])]
    return grad_x, grad_w, grad_h, grad_e, None, None, None, None, None, None, None, None


def _check_twice_differentiable(binning: Binning, needs: Sequence[bool]) -> None:
    for kernel, hard in zip(binning.kernels, binning.hard_axes):
        if not hard and not math.isfinite(kernel.pdf_slope) and (needs[0] or needs[2] or any(needs[3:])):
            raise RuntimeError(
                f"the {kernel.name!r} kernel has no second derivative (its density jumps at the edge of its support); "
                "differentiate its histogram once, or use a kernel with a continuous density such as 'triangular', "
                "'epanechnikov', 'bspline' or 'gaussian'"
            )


soft.register_autograd(_soft_grad, setup_context=_soft_setup)


def _soft_backward_setup(ctx, inputs, output) -> None:
    ctx.inputs = inputs


def _soft_backward_grad(ctx, *cotangents):
    raise RuntimeError(
        "softhist: the fused backward pass was differentiated; call backward with create_graph=True "
        "(second derivatives run through differentiable_histogram)"
    )


soft_backward.register_autograd(_soft_backward_grad, setup_context=_soft_backward_setup)


# --------------------------------------------------------------------------- the differentiable formula


def differentiable_histogram(x: Tensor, weight: Optional[Tensor], bandwidth: Tensor, edges: Sequence[Tensor], binning: Binning) -> Tensor:
    """``(rows, *bins)``: the soft histogram of ``x: (rows, n, D)`` in plain torch ops, which autograd
    differentiates to any order in ``x``, ``weight``, ``bandwidth`` and ``edges``.

    Each sample evaluates the kernel's CDF at the window of edges around it along each axis (as the
    engines do, capped at the axis's edges) and scatters the product of its bin masses with an
    out-of-place ``index_add``. Memory is ``O(N x window cells)``: it serves double backward.
    """
    rows, n, dims = x.shape
    acc = accumulation_dtype(x.dtype)
    flat = x.reshape(-1, dims).to(acc)
    finite = torch.isfinite(flat).all(1)
    w = finite.to(acc) if weight is None else torch.where(finite, weight.reshape(-1).to(acc), 0.0)
    values = w.unsqueeze(1)
    index = torch.arange(rows, device=x.device).repeat_interleave(n).unsqueeze(1)
    for d, (axis, kernel, hard, e) in enumerate(zip(binning.axes, binning.kernels, binning.hard_axes, edges)):
        e = e.to(acc)
        column = torch.where(finite, flat[:, d], e.detach()[0])
        if hard:
            pos, valid = _histc_bins(column, axis) if binning.hard_rule == "histc" and axis.uniform is not None else _edge_bins(column, e.detach())
            mass, first, width = valid.to(acc).unsqueeze(1), pos, 1
        else:
            h = bandwidth[d].to(acc)
            reach = kernel.support * axis.bandwidth
            edge_count = _torch_backend._window(axis, kernel, e.detach())
            edge_count = max(2, min(edge_count, axis.bins + 1))
            first = torch.searchsorted(e.detach(), (column.detach() - reach).contiguous(), right=True) - 1
            first = first.clamp(0, axis.bins + 1 - edge_count)
            window = first.unsqueeze(1) + torch.arange(edge_count, device=x.device)
            cdf = kernel.cdf((e[window] - column.unsqueeze(1)) / h)
            mass, width = cdf[:, 1:] - cdf[:, :-1], edge_count - 1
        values = (values.unsqueeze(-1) * mass.unsqueeze(1)).flatten(1)
        index = (index.unsqueeze(-1) * axis.bins + first.view(-1, 1, 1) + torch.arange(width, device=x.device)).flatten(1)
    hist = torch.zeros(rows * math.prod(binning.shape), dtype=acc, device=x.device)
    hist = hist.index_add(0, index.reshape(-1), values.reshape(-1))
    return hist.view(rows, *binning.shape)


# --------------------------------------------------------------------------- hard


def _hard_slots(x: Tensor, edges: Sequence[Tensor], binning: Binning) -> Tensor:
    """Each sample's cell in the flat ``(rows * cells)`` histogram, or -1 outside the range."""
    rows, n, dims = x.shape
    strides = _strides(binning.shape)
    cells = math.prod(binning.shape)
    flat = x.reshape(-1, dims)
    slot = torch.arange(rows, device=x.device).repeat_interleave(n) * cells
    inside = torch.ones(flat.shape[0], dtype=torch.bool, device=x.device)
    for d, axis in enumerate(binning.axes):
        pos, valid = _histc_bins(flat[:, d], axis) if binning.hard_rule == "histc" else _edge_bins(flat[:, d], edges[d])
        slot = slot + pos * strides[d]
        inside &= valid
    return torch.where(inside, slot, -1)


@torch.library.custom_op("softhist::hard", mutates_args=())
def hard(
    x: Tensor, weight: Optional[Tensor], edges: List[Tensor], uniform: List[bool], lo: List[float], hi: List[float], hard_rule: str,
) -> Tensor:
    """Exact counts (or weight sums) ``(rows, *bins)`` in float64 of ``x: (rows, n, D)``."""
    binning = _binning(None, edges, ",".join(["gaussian"] * len(edges)), [True] * len(edges), uniform, lo, hi, hard_rule, "hard")
    return _torch_backend.hard_histogram(x, weight, edges, binning)


@hard.register_fake
def _(x, weight, edges, uniform, lo, hi, hard_rule):
    return _empty(x, x.shape[0], *(e.shape[0] - 1 for e in edges), dtype=torch.float64)


@torch.library.custom_op("softhist::hard_backward", mutates_args=())
def hard_backward(grad: Tensor, x: Tensor, edges: List[Tensor], uniform: List[bool], lo: List[float], hi: List[float], hard_rule: str) -> Tensor:
    """``(rows, n)``: the gradient at each sample's cell (zero outside the range): ``hard``'s weight gradient."""
    binning = _binning(None, edges, ",".join(["gaussian"] * len(edges)), [True] * len(edges), uniform, lo, hi, hard_rule, "hard")
    slot = _hard_slots(x, edges, binning)
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
    grad_w = hard_backward(grad, x, edges, *ctx.params) if ctx.needs_input_grad[1] else None
    return None, None if grad_w is None else grad_w.to(ctx.weight_dtype), None, None, None, None, None


def _hard_backward_setup(ctx, inputs, output) -> None:
    grad, x, edges, *params = inputs
    ctx.save_for_backward(x, *edges)
    ctx.params = params


def _hard_backward_grad(ctx, cotangent: Tensor):  # linear in grad: its adjoint is the histogram itself
    x, *edges = ctx.saved_tensors
    return hard(x, cotangent, edges, *ctx.params), None, None, None, None, None, None


hard.register_autograd(_hard_grad, setup_context=_hard_setup)
hard_backward.register_autograd(_hard_backward_grad, setup_context=_hard_backward_setup)


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

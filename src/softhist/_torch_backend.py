"""Torch backend: the 1-D engine on any device, in chunks, never ``N x bins``.

Inputs arrive flattened to ``x: (rows, n)``; each row gets its own histogram
over the shared ``edges: (B+1,)``. Two exact-formula evaluation strategies:

* **window** (general): each sample evaluates the kernel CDF only at the
  ``K`` edges inside its support, ``K ~ 2*T*h/width + 4``, and scatters the
  ``K-1`` differences with ``index_add_``. Any edges, any dtype, gradients for
  everything.
* **table** (uniform bins, float32 or narrower): a sample's bin masses depend
  only on its base bin and its position ``f`` in that bin. ``f`` is linearly
  binned onto ``Q`` sub-positions (two ``index_add_`` per sample), then a small
  ``(bins, Q) @ (Q, window)`` matmul applies exact, precomputed bin masses.
  ``Q`` is chosen so the interpolation error is below ``2**-24`` per unit of
  weight; the table is used when it costs less than the windows. Backward
  interpolates gradient tables the same way where the kernel's density has a
  continuous derivative, and otherwise recomputes through the window strategy.

Forward saves only its inputs; backward recomputes from ``x``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as nnf
from torch import Tensor

from .kernels import Kernel

# Elements (samples x window) processed per chunk: bounds temporaries to ~10 MiB each.
_CHUNK_ELEMENTS = 1 << 21
# Scatter targets (histograms, grids, edge and bandwidth gradients) sum in float64: a float32
# cell that receives a million additions drifts by ~1e-4 relative, float64 stays exact to float32.
_SUM_DTYPE = torch.float64
# Largest sub-bin grid, and the interpolation error the grid is sized for.
_TABLE_MAX_Q = 8192
_TABLE_MAX_POINTS = 1 << 23  # two float64 grids of 64 MiB
_TABLE_TOLERANCE = 2.0**-24


@dataclass(frozen=True)
class Binning:
    """Everything about a call that is not a tensor.

    ``uniform`` is ``(lo, hi)`` when the edges are an even split of that range;
    ``hard_rule`` picks how hard counts assign samples: ``"histc"`` (torch.histc's
    arithmetic) or ``"edges"`` (compare with the edges, as numpy does).
    ``bandwidth`` is the bandwidth's value as a Python float, to size windows.
    """

    kernel: Kernel
    mode: str
    bins: int
    bandwidth: float
    uniform: Optional[Tuple[float, float]] = None
    hard_rule: str = "edges"


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything narrower accumulates in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _chunks(total: int, size: int) -> Iterator[Tuple[int, int]]:
    size = max(1, size)
    for start in range(0, total, size):
        yield start, min(start + size, total)


def _row_offsets(start: int, end: int, n: int, stride: int, device: torch.device) -> Tensor:
    """Offset of each flattened sample's row in a ``(rows, stride)`` buffer."""
    return torch.arange(start, end, device=device).div_(n, rounding_mode="floor").mul_(stride)


# --------------------------------------------------------------------------- hard counts


def _histc_bins(x: Tensor, lo: float, hi: float, bins: int) -> Tuple[Tensor, Tensor]:
    """torch.histc's own assignment: truncate ``(x - lo) * B / (hi - lo)`` in x's dtype."""
    lo_t = torch.tensor(lo, dtype=x.dtype, device=x.device)
    hi_t = torch.tensor(hi, dtype=x.dtype, device=x.device)
    valid = (x >= lo_t) & (x <= hi_t)  # False for NaN
    pos = ((x - lo_t) * torch.tensor(bins, dtype=x.dtype, device=x.device) / (hi_t - lo_t)).nan_to_num_(0.0)
    pos = pos.clamp_(0, bins).long().clamp_(max=bins - 1)  # the last bin is closed
    return pos, valid


def _edge_bins(x: Tensor, edges: Tensor) -> Tuple[Tensor, Tensor]:
    """numpy.histogram's assignment: ``e[k] <= x < e[k+1]``, the last bin closed."""
    edges = edges.to(x.dtype)
    bins = edges.numel() - 1
    valid = (x >= edges[0]) & (x <= edges[-1])
    pos = (torch.searchsorted(edges, x.contiguous(), right=True) - 1).clamp_(0, bins - 1)
    return pos, valid


def hard_histogram(x: Tensor, weight: Optional[Tensor], edges: Tensor, binning: Binning) -> Tensor:
    """Exact counts, ``(rows, B)`` in float64: integer counting, so exact past 2**24.

    Differentiable with respect to ``weight`` (each count is linear in it).
    """
    rows, n = x.shape
    bins = binning.bins
    flat_x = x.reshape(-1)
    overflow = rows * bins  # a dump slot for samples outside the range
    counts = torch.zeros(overflow + 1, dtype=torch.int64, device=x.device)
    sums = None
    if weight is not None:
        flat_w = weight.reshape(-1).to(torch.float64)
        sums = torch.zeros(overflow + 1, dtype=torch.float64, device=x.device)
    for start, end in _chunks(flat_x.numel(), _CHUNK_ELEMENTS):
        xc = flat_x[start:end]
        if binning.hard_rule == "histc":
            pos, valid = _histc_bins(xc, *binning.uniform, bins)
        else:
            pos, valid = _edge_bins(xc, edges)
        if rows > 1:
            pos = pos + _row_offsets(start, end, n, bins, x.device)
        slot = torch.where(valid, pos, overflow)
        if sums is None:
            counts += torch.bincount(slot, minlength=overflow + 1)
        else:
            sums = sums.index_add(0, slot, flat_w[start:end])
    total = counts.to(torch.float64) if sums is None else sums
    return total[:overflow].view(rows, bins)


# --------------------------------------------------------------------------- window strategy


def _take(values: Tensor, index: Tensor) -> Tensor:
    """``values[index]`` for a 1-D ``values``; index_select is several times faster on CPU."""
    return values.index_select(0, index.reshape(-1)).view(index.shape)


def _window(binning: Binning, edges: Optional[Tensor]) -> int:
    """Edges per sample window: all edges within the support, plus a margin each side.

    For non-uniform edges this reads the edges once (a host sync).
    """
    reach = 2.0 * binning.kernel.support * binning.bandwidth
    if binning.uniform is not None:
        lo, hi = binning.uniform
        most = math.ceil(reach * binning.bins / (hi - lo)) + 1
        return most + 4
    e = edges.detach().to(torch.float64)
    most = int((torch.searchsorted(e, e + reach, right=True) - torch.arange(e.numel(), device=e.device)).max())
    return min(most + 4, binning.bins + 1)


def _window_positions(xc: Tensor, edges: Tensor, binning: Binning, width: int) -> Tuple[Tensor, Tensor]:
    """Bin slots ``(m, K)`` of each sample's window edges and ``z = (e - x) / h`` there.

    Slots index a per-row buffer of ``B + 2K`` bins, ``K`` of them virtual on each
    side of the range: edge ``j`` starts the bin in slot ``j + K``. The first edge
    lies at least one edge below ``x - T*h``, so ``F = 0`` there and bins left of
    the window get nothing; the last lies past ``x + T*h``.

    Uniform bins place edges arithmetically, ``e_j = lo + j * width`` (virtual
    ones beyond the range included); other edges are gathered, clamped to the
    last edge, whose repeats add zero mass.
    """
    bins = binning.bins
    reach = binning.kernel.support * binning.bandwidth
    steps = torch.arange(width, device=xc.device)
    if binning.uniform is not None:
        lo, hi = binning.uniform
        u = (xc - lo) * (bins / (hi - lo))  # position in bin widths
        start = torch.floor(u - reach * bins / (hi - lo)).sub_(1).clamp_(-width, bins)
        # z = (start + p - u) * width / h; u - start is exact (Sterbenz), so z keeps float32 resolution.
        offset = u.sub_(start).mul_(-(hi - lo) / bins / binning.bandwidth)
        z = torch.add(offset.unsqueeze(1), steps.to(xc.dtype), alpha=(hi - lo) / bins / binning.bandwidth)
        slot = start.long().add_(width).unsqueeze(1) + steps
        return slot, z
    start = torch.searchsorted(edges, (xc - reach).contiguous(), right=True).sub_(2).clamp_(0, bins)
    idx = (start.unsqueeze(1) + steps).clamp_(max=bins)
    z = (_take(edges, idx) - xc.unsqueeze(1)).div_(binning.bandwidth)
    return idx.add_(width), z


def _clean(xc: Tensor, wc: Optional[Tensor], dtype: torch.dtype, park: float) -> Tuple[Tensor, Tensor]:
    """Cast a chunk to the accumulation dtype; non-finite samples get weight 0 and a parked position."""
    xc = xc.to(dtype)
    finite = torch.isfinite(xc)
    wc = finite.to(dtype) if wc is None else torch.where(finite, wc.to(dtype), 0.0)
    return torch.where(finite, xc, park), wc


def _park(edges: Tensor, binning: Binning) -> float:
    """Where non-finite samples are put (with weight 0) so their windows stay in bounds."""
    return binning.uniform[0] if binning.uniform is not None else float(edges[0])


def _window_forward(x: Tensor, weight: Optional[Tensor], edges: Tensor, binning: Binning) -> Tensor:
    rows, n = x.shape
    bins, acc = binning.bins, accumulation_dtype(x.dtype)
    edges = edges.detach().to(acc)
    width = _window(binning, edges)
    stride = bins + 2 * width
    hist = torch.zeros(rows * stride, dtype=_SUM_DTYPE, device=x.device)
    flat_x = x.reshape(-1)
    flat_w = None if weight is None else weight.reshape(-1)
    park = _park(edges, binning)
    for start, end in _chunks(flat_x.numel(), _CHUNK_ELEMENTS // width):
        xc, wc = _clean(flat_x[start:end], None if flat_w is None else flat_w[start:end], acc, park)
        slot, z = _window_positions(xc, edges, binning, width)
        cdf = binning.kernel.cdf(z)
        mass = torch.sub(cdf[:, 1:], cdf[:, :-1]).mul_(wc.unsqueeze(1))
        slot = slot[:, :-1]
        if rows > 1:
            slot = slot + _row_offsets(start, end, n, stride, x.device).unsqueeze(1)
        hist.index_add_(0, slot.reshape(-1), mass.reshape(-1).to(_SUM_DTYPE))
    return hist.view(rows, stride)[:, width : width + bins].to(acc)


# VJP of the window strategy. With F_p = F(z_p) at window edge p and c_p = F_{p+1} - F_p
# feeding bin b_p, dL/dF_p = w * (g[b_{p-1}] - g[b_p]) (g = 0 on virtual bins). Since
# z = (e - x)/h: dz/dx = -1/h, dz/de = 1/h, dz/dh = -z/h, and dL/dw = sum_p g[b_p] c_p.
def _window_backward(
    grad: Tensor, x: Tensor, weight: Optional[Tensor], edges: Tensor, binning: Binning, needs: Tuple[bool, ...]
):
    rows, n = x.shape
    bins, acc, h = binning.bins, accumulation_dtype(x.dtype), binning.bandwidth
    need_x, need_w, need_e, need_h = needs
    edges_acc = edges.detach().to(acc)
    width = _window(binning, edges_acc)
    stride = bins + 2 * width
    grad_ext = nnf.pad(grad.to(acc), (width, width)).reshape(-1)  # zero on virtual bins
    flat_x = x.reshape(-1)
    flat_w = None if weight is None else weight.reshape(-1)
    park = _park(edges_acc, binning)
    grad_x = torch.zeros_like(flat_x, dtype=acc) if need_x else None
    grad_w = torch.zeros_like(flat_x, dtype=acc) if need_w else None
    grad_e = torch.zeros_like(edges_acc, dtype=_SUM_DTYPE) if need_e else None
    grad_h = torch.zeros((), dtype=_SUM_DTYPE, device=x.device) if need_h else None
    for start, end in _chunks(flat_x.numel(), _CHUNK_ELEMENTS // width):
        xc, wc = _clean(flat_x[start:end], None if flat_w is None else flat_w[start:end], acc, park)
        slot, z = _window_positions(xc, edges_acc, binning, width)
        if rows > 1:
            slot = slot + _row_offsets(start, end, n, stride, x.device).unsqueeze(1)
        g_bin = _take(grad_ext, slot)
        g_bin[:, -1] = 0.0  # the last window edge starts no bin of this sample
        if need_w:
            cdf = binning.kernel.cdf(z)
            grad_w[start:end] = (torch.sub(cdf[:, 1:], cdf[:, :-1]) * g_bin[:, :-1]).sum(1)
        if need_x or need_e or need_h:
            d_cdf = nnf.pad(g_bin[:, :-1], (1, 0)).sub_(g_bin)  # g[b_{p-1}] - g[b_p]
            d_z = d_cdf.mul_(binning.kernel.pdf(z)).mul_(wc.unsqueeze(1) / h)  # dL/dz / h
            if need_x:
                grad_x[start:end] = -d_z.sum(1)
            if need_e:
                edge_index = (slot - width).remainder_(stride) if rows > 1 else slot - width
                grad_e.index_add_(0, edge_index.reshape(-1), d_z.reshape(-1).to(_SUM_DTYPE))
            if need_h:
                grad_h -= (d_z * z).sum(dtype=_SUM_DTYPE)
    return grad_x, grad_w, grad_e, grad_h


# --------------------------------------------------------------------------- table strategy


@dataclass(frozen=True)
class _Table:
    """A sub-bin grid for uniform bins: ``Q`` positions per bin, offsets ``-J..J``, ``P`` pad bins."""

    q: int
    reach: int  # J: a sample in base bin n feeds bins n-J .. n+J
    pad: int  # P: bins kept on each side of the range for samples whose support reaches in
    scale: float  # bins per data unit
    lo: float

    @property
    def width(self) -> int:
        return 2 * self.reach + 1


def _plan_table(x: Tensor, binning: Binning) -> Optional[_Table]:
    """The sub-bin grid for this call, or None when the window strategy must run."""
    kernel = binning.kernel
    if binning.uniform is None or x.dtype == torch.float64 or not math.isfinite(kernel.pdf_slope):
        return None
    lo, hi = binning.uniform
    ratio = (hi - lo) / binning.bins / binning.bandwidth  # bin width in kernel std units
    # Linear interpolation error <= (1/Q)^2/8 * max|c''|, with |c''| <= 2 r^2 max|f'|.
    q = max(16, math.ceil(ratio * math.sqrt(kernel.pdf_slope / (4.0 * _TABLE_TOLERANCE))))
    reach = math.ceil(kernel.support / ratio) + 1
    # Grid points cost about a quarter of a window element each (measured on CPU):
    # take the table when it is cheaper than the windows and its memory stays bounded.
    points = x.shape[0] * (binning.bins + 2 * reach) * q
    if q > _TABLE_MAX_Q or points > _TABLE_MAX_POINTS or points > 4 * _window(binning, None) * x.numel():
        return None
    return _Table(q=q, reach=reach, pad=reach, scale=binning.bins / (hi - lo), lo=lo)


def _table_values(table: _Table, binning: Binning, dtype: torch.dtype, device: torch.device, what: str) -> Tensor:
    """``(Q, W)``: per sub-position ``f = q/Q`` and offset ``o``, the bin mass (``"mass"``),
    its derivative in x (``"dx"``) or in the bandwidth (``"dh"``), computed in float64."""
    kernel, h = binning.kernel, binning.bandwidth
    ratio = 1.0 / (table.scale * h)
    f = torch.arange(table.q, dtype=torch.float64, device=device) / table.q
    offsets = torch.arange(-table.reach, table.reach + 2, dtype=torch.float64, device=device)
    z = (offsets.unsqueeze(0) - f.unsqueeze(1)) * ratio  # (Q, W+1): edges o and o+1 of each bin
    if what == "mass":
        per_edge = kernel.cdf(z)
    elif what == "dx":
        per_edge = -kernel.pdf(z) / h
    else:
        per_edge = -kernel.pdf(z) * z / h
    return (per_edge[:, 1:] - per_edge[:, :-1]).to(dtype)


def _table_positions(xc: Tensor, table: _Table, bins: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Global sub-grid index ``k``, interpolation weight ``t`` and validity of each sample.

    Invalid samples (NaN, or too far from the range to reach it) get ``k = span``,
    the row's last grid point, which lies past every bin's support.
    """
    span = (bins + 2 * table.pad) * table.q
    grid = (xc - table.lo).mul_(table.scale).add_(table.pad).mul_(table.q)
    valid = (grid >= 0) & (grid < span)  # False for NaN and far-away samples
    grid = torch.where(valid, grid, float(span))
    k = grid.floor()
    t = grid.sub_(k)
    return k.long(), t, valid


def _table_forward(x: Tensor, weight: Optional[Tensor], binning: Binning, table: _Table) -> Tensor:
    rows, n = x.shape
    bins, acc = binning.bins, accumulation_dtype(x.dtype)
    base_bins = bins + 2 * table.pad
    stride = base_bins * table.q + 1
    # Linear binning onto the grid, as two moments per point: total weight and weight * t.
    # Point k then holds total[k] - moment[k] + moment[k-1]. Unweighted totals are integer counts.
    total = torch.zeros(rows * stride, dtype=_SUM_DTYPE, device=x.device)
    moment = torch.zeros(rows * stride, dtype=_SUM_DTYPE, device=x.device)
    flat_x = x.reshape(-1)
    flat_w = None if weight is None else weight.reshape(-1)
    for start, end in _chunks(flat_x.numel(), _CHUNK_ELEMENTS):
        k, t, valid = _table_positions(flat_x[start:end].to(acc), table, bins)
        if rows > 1:
            k += _row_offsets(start, end, n, stride, x.device)
        if flat_w is None:
            total += torch.bincount(k, minlength=rows * stride)
        else:
            wc = torch.where(valid, flat_w[start:end].to(acc), 0.0)
            total.index_add_(0, k, wc.to(_SUM_DTYPE))
            t.mul_(wc)
        moment.index_add_(0, k, t.to(_SUM_DTYPE))
    point = total.sub_(moment).view(rows, stride)
    point[:, 1:] += moment.view(rows, stride)[:, :-1]
    # The grid's last point sits past every bin's support: drop it.
    per_base = point[:, :-1].reshape(rows, base_bins, table.q)
    mass = per_base @ _table_values(table, binning, _SUM_DTYPE, x.device, "mass")  # (rows, base_bins, W)
    out = torch.zeros(rows, base_bins + 2 * table.reach, dtype=_SUM_DTYPE, device=x.device)
    for j in range(table.width):
        out[:, j : j + base_bins] += mass[:, :, j]
    first = table.pad + table.reach
    return out[:, first : first + bins].to(acc)


def _table_backward(
    grad: Tensor, x: Tensor, weight: Optional[Tensor], binning: Binning, table: _Table, needs: Tuple[bool, ...]
):
    rows, n = x.shape
    bins, acc = binning.bins, accumulation_dtype(x.dtype)
    need_x, need_w, _, need_h = needs
    base_bins = bins + 2 * table.pad
    margin = table.pad + table.reach
    # g_near[r, n, j] = grad of the bin at offset j from base bin n.
    g_near = nnf.pad(grad.to(acc), (margin, margin)).unfold(1, table.width, 1)[:, :base_bins]

    def per_grid_point(what: str) -> Tensor:
        # Chain rule on the sub-grid: (rows, base_bins, W) @ (W, Q), plus the dropped last point.
        values = g_near @ _table_values(table, binning, acc, x.device, what).T
        # Zeros for each row's last point, plus one so invalid samples' k + 1 stays in bounds.
        return nnf.pad(nnf.pad(values.reshape(rows, -1), (0, 1)).reshape(-1), (0, 1))

    g_x = per_grid_point("dx") if need_x else None
    g_w = per_grid_point("mass") if need_w else None
    g_h = per_grid_point("dh") if need_h else None
    stride = base_bins * table.q + 1
    flat_x = x.reshape(-1)
    flat_w = None if weight is None else weight.reshape(-1)
    grad_x = torch.zeros_like(flat_x, dtype=acc) if need_x else None
    grad_w = torch.zeros_like(flat_x, dtype=acc) if need_w else None
    grad_h = torch.zeros((), dtype=_SUM_DTYPE, device=x.device) if need_h else None

    def lerp(values: Tensor, k: Tensor, t: Tensor) -> Tensor:
        return torch.lerp(values.index_select(0, k), values.index_select(0, k + 1), t)

    for start, end in _chunks(flat_x.numel(), _CHUNK_ELEMENTS):
        # Invalid samples sit on a zero grid point, so they get zero gradients unmasked.
        k, t, valid = _table_positions(flat_x[start:end].to(acc), table, bins)
        wc = None if flat_w is None else torch.where(valid, flat_w[start:end].to(acc), 0.0)
        if rows > 1:
            k += _row_offsets(start, end, n, stride, x.device)
        if need_x:
            grad_x[start:end] = lerp(g_x, k, t) if wc is None else lerp(g_x, k, t).mul_(wc)
        if need_w:
            grad_w[start:end] = lerp(g_w, k, t)
        if need_h:
            per_sample = lerp(g_h, k, t) if wc is None else lerp(g_h, k, t).mul_(wc)
            grad_h += per_sample.sum(dtype=_SUM_DTYPE)
    return grad_x, grad_w, None, grad_h


# --------------------------------------------------------------------------- autograd


class SoftHistogramFunction(torch.autograd.Function):
    """``(rows, n)`` samples -> ``(rows, B)`` soft (or straight-through) histograms.

    Saves only its inputs; backward recomputes the kernel at each sample's window.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Optional[Tensor], edges: Tensor, bandwidth: Tensor, binning: Binning):
        ctx.save_for_backward(x, weight, edges, bandwidth)
        ctx.binning = binning
        acc = accumulation_dtype(x.dtype)
        if binning.mode == "straight_through":
            return hard_histogram(x, weight, edges, binning).to(acc)
        table = _plan_table(x, binning)
        if table is not None:
            return _table_forward(x, weight, binning, table)
        return _window_forward(x, weight, edges, binning)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight, edges, bandwidth = ctx.saved_tensors
        binning: Binning = ctx.binning
        needs = tuple(ctx.needs_input_grad[:4])
        table = _plan_table(x, binning)
        smooth_enough = math.isfinite(binning.kernel.pdf_curvature) or not (needs[0] or needs[3])
        if table is not None and smooth_enough and not needs[2]:
            grads = _table_backward(grad, x, weight, binning, table, needs)
        else:
            grads = _window_backward(grad, x, weight, edges, binning, needs)
        grad_x, grad_w, grad_e, grad_h = grads
        return (
            None if grad_x is None else grad_x.view(x.shape).to(x.dtype),
            None if grad_w is None else grad_w.view(weight.shape).to(weight.dtype),
            None if grad_e is None else grad_e.to(edges.dtype),
            None if grad_h is None else grad_h.to(bandwidth.dtype).view(bandwidth.shape),
            None,
        )


def soft_histogram(
    x: Tensor, weight: Optional[Tensor], edges: Tensor, bandwidth: Tensor, binning: Binning
) -> Tensor:
    """``(rows, n)`` -> ``(rows, B)`` in the accumulation dtype, differentiable in every tensor."""
    return SoftHistogramFunction.apply(x, weight, edges, bandwidth, binning)

"""Torch backend: the engine on any device, in chunks, never ``N x bins``.

Inputs arrive flattened to ``x: (rows, n, D)``; each row gets its own
``D``-dimensional histogram over per-axis ``edges[d]: (B_d + 1,)``. A sample's
soft count in a cell is ``w * prod_d a_d(x_d)``, where ``a_d`` is the 1-D CDF
difference along axis ``d``. Two evaluation strategies, both exact formulas:

* **window** (general): along each axis a sample evaluates the kernel CDF only
  at the ``K_d`` edges inside its support, ``K ~ 2*T*h/width + 4``; the outer
  product of the ``K_d - 1`` per-axis masses is scattered with ``index_add_``.
  Any edges, any dtype, any ``D``, gradients for everything.
* **table** (one axis, uniform bins, float32 or narrower): a sample's bin masses
  depend only on its base bin and its position ``f`` in that bin. ``f`` is
  linearly binned onto ``Q`` sub-positions, then a small ``(bins, Q) @ (Q, window)``
  matmul applies exact, precomputed bin masses. ``Q`` is chosen so the
  interpolation error is below ``2**-24`` per unit of weight; the table is used
  when it costs less than the windows. Backward interpolates gradient tables the
  same way where the kernel's density has a continuous derivative, and
  otherwise recomputes through the window strategy.

Forward saves only its inputs; backward recomputes from ``x``.
"""

from __future__ import annotations

import functools
import itertools
import math
import string
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as nnf
from torch import Tensor

from ._plan import Axis, Binning, Engine, accumulation_dtype, table_points, window_edges
from .kernels import Kernel

NAME = "torch"  # the backend= value that selects this engine

# Elements (samples x window cells) processed per chunk: bounds temporaries to ~10 MiB each.
_CHUNK_ELEMENTS = 1 << 21
# Scatter targets (histograms, grids, edge and bandwidth gradients) sum in float64: a float32
# cell that receives a million additions drifts by ~1e-4 relative, float64 stays exact to float32.
_SUM_DTYPE = torch.float64
# Largest sub-bin grid, and the interpolation error the grid is sized for.
_TABLE_MAX_Q = 8192
_TABLE_MAX_POINTS = 1 << 23  # two float64 grids of 64 MiB
_TABLE_CACHED_POINTS = 1 << 21  # two float64 grids of 16 MiB: about what stays in cache


def _chunks(total: int, size: int) -> Iterator[Tuple[int, int]]:
    """Chunk bounds; no samples still give one empty chunk, so outputs stay connected to the inputs'
    autograd graph (a rank with an empty shard must still join the backward all-reduce)."""
    size = max(1, size)
    for start in range(0, max(total, 1), size):
        yield start, min(start + size, total)


def _row_offsets(start: int, end: int, n: int, stride: int, device: torch.device) -> Tensor:
    """Offset of each flattened sample's row in a ``(rows, stride)`` buffer."""
    return torch.arange(start, end, device=device).div_(n, rounding_mode="floor").mul_(stride)


def _strides(sizes: Sequence[int]) -> List[int]:
    """Row-major strides of a buffer of the given sizes."""
    return [math.prod(sizes[d + 1 :]) for d in range(len(sizes))]


def _take(values: Tensor, index: Tensor) -> Tensor:
    """``values[index]`` for a 1-D ``values``; index_select is several times faster on CPU."""
    return values.index_select(0, index.reshape(-1)).view(index.shape)


# --------------------------------------------------------------------------- hard counts


def _histc_bins(x: Tensor, axis: Axis) -> Tuple[Tensor, Tensor]:
    """torch.histc's own assignment: truncate ``(x - lo) * B / (hi - lo)`` in x's dtype."""
    lo, hi = axis.uniform
    lo_t = torch.tensor(lo, dtype=x.dtype, device=x.device)
    hi_t = torch.tensor(hi, dtype=x.dtype, device=x.device)
    valid = (x >= lo_t) & (x <= hi_t)  # False for NaN
    pos = ((x - lo_t) * torch.tensor(axis.bins, dtype=x.dtype, device=x.device) / (hi_t - lo_t)).nan_to_num_(0.0)
    pos = pos.clamp_(0, axis.bins).long().clamp_(max=axis.bins - 1)  # the last bin is closed
    return pos, valid


def _edge_bins(x: Tensor, edges: Tensor) -> Tuple[Tensor, Tensor]:
    """numpy's assignment: ``e[k] <= x < e[k+1]``, the last bin closed, compared in the
    promoted dtype of ``x`` and ``edges`` (as numpy promotes)."""
    dtype = torch.promote_types(x.dtype, edges.dtype)
    x, edges = x.to(dtype), edges.to(dtype)
    bins = edges.numel() - 1
    valid = (x >= edges[0]) & (x <= edges[-1])
    pos = (torch.searchsorted(edges, x.contiguous(), right=True) - 1).clamp_(0, bins - 1)
    return pos, valid


def hard_bins(x: Tensor, edges: Tensor, axis: Axis, hard_rule: str) -> Tuple[Tensor, Tensor]:
    """Each sample's bin along one axis and whether it lies in the range, by the call's hard rule
    (torch.histc's arithmetic needs equal-width bins; other axes compare with the edges)."""
    if hard_rule == "histc" and axis.uniform is not None:
        return _histc_bins(x, axis)
    return _edge_bins(x, edges)


def hard_cells(x: Tensor, edges: Sequence[Tensor], binning: Binning) -> Tuple[Tensor, Tensor]:
    """``x: (m, D)`` -> each sample's cell in a row-major ``binning.shape`` histogram, and whether it lies in it."""
    strides = _strides(binning.shape)
    cell, inside = 0, True
    for d, axis in enumerate(binning.axes):
        pos, valid = hard_bins(x[:, d], edges[d], axis, binning.hard_rule)
        cell = cell + pos * strides[d]
        inside = inside & valid
    return cell, inside


def hard_histogram(
    x: Tensor, weight: Optional[Tensor], edges: Sequence[Tensor], binning: Binning, dtype: torch.dtype = torch.float64
) -> Tensor:
    """Exact counts, ``(rows, *bins)`` in ``dtype`` (float64 by default): integer counting, so
    exact past 2**24 (float64 weight sums), rounded once to ``dtype``.

    Differentiable with respect to ``weight`` (each count is linear in it).
    """
    rows, n, dims = x.shape
    cells = math.prod(binning.shape)
    overflow = rows * cells  # a dump slot for samples outside the range
    counts = torch.zeros(overflow + 1, dtype=torch.int64, device=x.device)
    sums = None
    flat_x = x.reshape(-1, dims)
    if weight is not None:
        flat_w = weight.reshape(-1).to(torch.float64)
        sums = torch.zeros(overflow + 1, dtype=torch.float64, device=x.device)
    for start, end in _chunks(flat_x.shape[0], _CHUNK_ELEMENTS):
        cell, inside = hard_cells(flat_x[start:end], edges, binning)
        if rows > 1:
            cell = cell + _row_offsets(start, end, n, cells, x.device)
        slot = torch.where(inside, cell, overflow)
        if sums is None:
            counts += torch.bincount(slot, minlength=overflow + 1)
        else:
            sums = sums.index_add(0, slot, flat_w[start:end])
    total = counts if sums is None else sums
    return total[:overflow].to(dtype).view(rows, *binning.shape)


# --------------------------------------------------------------------------- window strategy


def _window_positions(xc: Tensor, edges: Tensor, axis: Axis, kernel: Kernel, width: int) -> Tuple[Tensor, Tensor]:
    """First slot ``(m,)`` of each sample's window along one axis, and ``z = (e - x) / h`` at its ``K`` edges.

    Slots index a buffer of ``B + 2K`` bins, ``K`` of them virtual on each side of
    the range: edge ``j`` starts the bin in slot ``j + K``, and window edge ``p``
    starts the bin in slot ``first + p``. The first edge lies at or below
    ``x - T*h``, so ``F = 0`` there and bins left of the window get nothing; the
    last lies at or past ``x + T*h``.

    Uniform axes place edges arithmetically, ``e_j = lo + j * width`` (virtual
    ones beyond the range included); other edges are gathered, clamped to the
    last edge, whose repeats add zero mass.
    """
    reach = kernel.support * axis.bandwidth
    steps = torch.arange(width, device=xc.device)
    if axis.uniform is not None:
        # The position in bin widths, u = (x - lo) * scale, in float64: in float32 it keeps only
        # 24 bits of u, so at 2**20 bins a sample's place inside its bin is off by ~6% of a bin,
        # and lo itself would be rounded to float32 (a narrow range far from 0 loses ~1e-4 of a
        # bin). One float64 value per sample, chunk-sized, against K per sample for z.
        u = (xc.to(torch.float64) - axis.uniform[0]).mul_(axis.scale)
        # Starting at edge 0 rather than left of it keeps the window exact when it holds all B + 1 edges.
        start = torch.floor(u - reach * axis.scale).clamp_(0, axis.bins)
        # z = (start + p - u) * width / h: u - start is exact, and the small offset goes to x's dtype.
        bin_in_std = 1.0 / (axis.scale * axis.bandwidth)
        offset = u.sub_(start).mul_(-bin_in_std).to(xc.dtype)
        z = torch.add(offset.unsqueeze(1), steps.to(xc.dtype), alpha=bin_in_std)
        return start.long().add_(width), z
    start = torch.searchsorted(edges, (xc - reach).contiguous(), right=True).sub_(2).clamp_(0, axis.bins)
    idx = (start.unsqueeze(1) + steps).clamp_(max=axis.bins)
    z = (_take(edges, idx) - xc.unsqueeze(1)).div_(axis.bandwidth)
    return start.add_(width), z


@dataclass
class _Windows:
    """One chunk's windows: per-axis ``z`` and bin masses, and where each sample's block of cells lands."""

    z: List[Optional[Tensor]]  # (m, K_d); None on hard axes
    first: List[Tensor]  # (m,): slot of the first window bin along axis d
    masses: List[Tensor]  # (m, K_d - 1): a_d at each window bin
    block: Tensor  # (m,): row of the sample's block in the block buffer, or its first cell in the flat buffer
    weight: Tensor  # (m,): 0 for samples with a non-finite coordinate
    finite: Tensor  # (m,): whether every coordinate is finite (other samples are ignored)


# Largest block buffer (rows x first-slot grid x window cells) before falling back to flat scatters.
_MAX_BLOCK_ELEMENTS = 1 << 24


class _WindowPlan:
    """Window widths and buffer layout of a call.

    Each sample owns a block of ``prod(K_d - 1)`` cells starting at its first
    window slots. In **block** layout the blocks are rows of a
    ``(rows * prod(B_d + K_d + 1), cells)`` buffer, filled by one row-wise
    ``index_add_`` per chunk and folded into the histogram once at the end. When
    that buffer would be too large, the **flat** layout scatters every cell into
    the extended ``rows x prod(B_d + 2 K_d)`` histogram directly.
    """

    def __init__(self, x: Tensor, edges: Sequence[Tensor], binning: Binning):
        self.binning = binning
        self.acc = accumulation_dtype(x.dtype)
        self.edges = [e.detach().to(self.acc) for e in edges]
        self.kernels = [None if hard else k for k, hard in zip(binning.kernels, binning.hard_axes)]
        self.widths = [window_edges(a, k, e) for a, k, e in zip(binning.axes, self.kernels, self.edges)]
        self.window_shape = [k - 1 for k in self.widths]
        self.window_cells = math.prod(self.window_shape)
        self.sizes = [a.bins + 2 * k for a, k in zip(binning.axes, self.widths)]  # extended histogram
        self.firsts = [a.bins + k + 1 for a, k in zip(binning.axes, self.widths)]  # first-slot grid
        self.rows, self.n, self.dims = x.shape
        self.blocked = self.rows * math.prod(self.firsts) * self.window_cells <= _MAX_BLOCK_ELEMENTS
        self.layout = self.firsts if self.blocked else self.sizes
        self.strides = _strides(self.layout)
        self.cells = math.prod(self.layout)
        # Flat layout: offsets of a block's cells from its first cell.
        offsets = torch.zeros((), dtype=torch.long, device=x.device)
        for stride, k in zip(_strides(self.sizes), self.window_shape):
            offsets = offsets.unsqueeze(-1) + torch.arange(k, device=x.device) * stride
        self.offsets = offsets.reshape(-1)
        # Non-finite samples get weight 0 at a parked position that keeps windows in bounds.
        self.park = torch.tensor(
            [a.uniform[0] if a.uniform is not None else float(e[0]) for a, e in zip(binning.axes, self.edges)],
            dtype=self.acc, device=x.device,
        )
        self.chunk = _CHUNK_ELEMENTS // self.window_cells

    def windows(self, xc: Tensor, wc: Optional[Tensor], start: int, end: int) -> _Windows:
        # Work on 1-D columns: elementwise ops and reductions over a trailing dim of size D = 1
        # are many times slower on CPU than the same ops on a flat tensor.
        columns = [c.to(self.acc) for c in xc.unbind(1)]
        finite = torch.isfinite(columns[0])
        for column in columns[1:]:
            finite &= torch.isfinite(column)
        weight = finite.to(self.acc) if wc is None else torch.where(finite, wc.to(self.acc), 0.0)
        block = _row_offsets(start, end, self.n, self.cells, xc.device) if self.rows > 1 else 0
        z_all, firsts, masses = [], [], []
        for d, (axis, edges, width, kernel) in enumerate(zip(self.binning.axes, self.edges, self.widths, self.kernels)):
            column = torch.where(finite, columns[d], self.park[d])
            if kernel is None:  # hard axis: the indicator of the sample's bin
                pos, valid = hard_bins(column, edges, axis, self.binning.hard_rule)
                first, z, mass = pos.add_(width), None, valid.to(self.acc).unsqueeze(1)
            else:
                first, z = _window_positions(column, edges, axis, kernel, width)
                cdf = kernel.cdf(z)
                mass = torch.sub(cdf[:, 1:], cdf[:, :-1])
            z_all.append(z)
            firsts.append(first)
            masses.append(mass)
            block = block + first * self.strides[d]
        return _Windows(z_all, firsts, masses, block, weight, finite)

    def scatter(self, buffer: Tensor, win: _Windows, cell_values: Tensor) -> None:
        """Add ``cell_values: (m, cells)`` into the buffer at each sample's block."""
        if self.blocked:
            buffer.index_add_(0, win.block, cell_values)
        else:
            buffer.index_add_(0, (win.block.unsqueeze(1) + self.offsets).view(-1), cell_values.view(-1))

    def new_buffer(self) -> Tensor:
        shape = (self.rows * self.cells, self.window_cells) if self.blocked else (self.rows * self.cells,)
        return torch.zeros(shape, dtype=_SUM_DTYPE, device=self.park.device)

    def histogram(self, buffer: Tensor) -> Tensor:
        """The buffer as ``(rows, *bins)``: blocks folded onto their cells, virtual bins dropped."""
        if self.blocked:
            blocks = buffer.view(self.rows, *self.firsts, *self.window_shape)
            hist = torch.zeros(self.rows, *self.sizes, dtype=buffer.dtype, device=buffer.device)
            for offset in itertools.product(*(range(k) for k in self.window_shape)):
                target = (slice(None),) + tuple(slice(o, o + f) for o, f in zip(offset, self.firsts))
                hist[target] += blocks[(Ellipsis,) + offset]
        else:
            hist = buffer.view(self.rows, *self.sizes)
        for d, (axis, width) in enumerate(zip(self.binning.axes, self.widths)):
            hist = hist.narrow(d + 1, width, axis.bins)
        return hist

    def gradient_cells(self, grad: Tensor) -> Tensor:
        """``(rows, *bins)`` gradient -> per-block gradients (blocked) or the flat extended gradient."""
        pads: List[int] = []
        for width in reversed(self.widths):
            pads += [width, width]
        ext = nnf.pad(grad.to(self.acc), pads)  # zero on virtual bins
        if not self.blocked:
            return ext.reshape(-1)
        for d, (k, first) in enumerate(zip(self.window_shape, self.firsts)):
            ext = ext.unfold(d + 1, k, 1).narrow(d + 1, 0, first)
        return ext.reshape(self.rows * self.cells, self.window_cells)

    def gather(self, grad_cells: Tensor, win: _Windows) -> Tensor:
        """Each sample's block of cell gradients, ``(m, cells)``."""
        if self.blocked:
            return grad_cells.index_select(0, win.block)
        return _take(grad_cells, win.block.unsqueeze(1) + self.offsets)


def _outer(factors: Sequence[Tensor]) -> Tensor:
    """Per-sample outer product: ``(m, K_0), ..., (m, K_{D-1})`` -> ``(m, K_0 * ... * K_{D-1})``."""
    out = factors[0]
    for f in factors[1:]:
        out = (out.unsqueeze(-1) * f.unsqueeze(1)).flatten(1)
    return out


def _window_forward(x: Tensor, weight: Optional[Tensor], edges: Sequence[Tensor], binning: Binning) -> Tensor:
    plan = _WindowPlan(x, edges, binning)
    buffer = plan.new_buffer()
    flat_x = x.reshape(-1, plan.dims)
    flat_w = None if weight is None else weight.reshape(-1)
    for start, end in _chunks(flat_x.shape[0], plan.chunk):
        win = plan.windows(flat_x[start:end], None if flat_w is None else flat_w[start:end], start, end)
        cells = _outer([m.to(_SUM_DTYPE) for m in win.masses])
        # A cell the kernel does not reach gets nothing, even from an infinite weight (0 * inf is NaN).
        plan.scatter(buffer, win, torch.where(cells != 0, cells * win.weight.unsqueeze(1).to(_SUM_DTYPE), 0.0))
    return plan.histogram(buffer).to(plan.acc)


def _contract_except(grad_cells: Tensor, masses: Sequence[Tensor], keep: int) -> Tensor:
    """``sum`` of ``grad_cells * prod_{e != keep} masses[e]`` over every axis but ``keep``: ``(m, K_keep)``."""
    if len(masses) == 1:
        return grad_cells
    letters = string.ascii_lowercase[: len(masses)]
    others = [e for e in range(len(masses)) if e != keep]
    spec = ",".join([f"z{letters}"] + [f"z{letters[e]}" for e in others])
    cells = grad_cells.view(-1, *(m.shape[1] for m in masses))
    return torch.einsum(f"{spec}->z{letters[keep]}", cells, *(masses[e] for e in others))


# VJP of the window strategy, per axis. With F_p = F(z_p) at window edge p and a_p = F_{p+1} - F_p
# the mass of window bin p, dL/dF_p = dL/da_{p-1} - dL/da_p (zero past the window). Since
# z = (e - x)/h: dz/dx = -1/h, dz/de = 1/h, dz/dh = -z/h. dL/da_d contracts the cells' gradients
# with the other axes' masses and the weight; dL/dw = sum over cells of g * prod_d a_d.
def _window_backward(
    grad: Tensor, x: Tensor, weight: Optional[Tensor], edges: Sequence[Tensor], binning: Binning, needs
):
    need_x, need_w, need_h, need_edges = needs
    plan = _WindowPlan(x, edges, binning)
    grad_cells = plan.gradient_cells(grad)
    flat_x = x.reshape(-1, plan.dims)
    flat_w = None if weight is None else weight.reshape(-1)
    grad_x = torch.zeros(flat_x.shape, dtype=plan.acc, device=x.device) if need_x else None
    grad_w = torch.zeros(flat_x.shape[0], dtype=plan.acc, device=x.device) if need_w else None
    grad_h = torch.zeros(plan.dims, dtype=_SUM_DTYPE, device=x.device) if need_h else None
    grad_e = [torch.zeros_like(e, dtype=_SUM_DTYPE) if need else None for e, need in zip(plan.edges, need_edges)]
    for start, end in _chunks(flat_x.shape[0], plan.chunk):
        win = plan.windows(flat_x[start:end], None if flat_w is None else flat_w[start:end], start, end)
        block_grad = plan.gather(grad_cells, win)
        for d, axis in enumerate(binning.axes):
            wants_axis = (need_x or need_h or need_edges[d]) and not binning.hard_axes[d]
            if not (wants_axis or (d == 0 and need_w)):
                continue
            d_mass = _contract_except(block_grad, win.masses, d)  # dL/da_d, before the weight
            if d == 0 and need_w:
                grad_w[start:end] = torch.where(win.finite, (d_mass * win.masses[0]).sum(1), 0.0)
            if not wants_axis:
                continue
            d_mass = d_mass * win.weight.unsqueeze(1)
            d_cdf = nnf.pad(d_mass, (1, 0)).sub_(nnf.pad(d_mass, (0, 1)))
            d_z = d_cdf.mul_(binning.kernels[d].pdf(win.z[d])).div_(axis.bandwidth)  # dL/dz / h
            if need_x:
                grad_x[start:end, d] = -d_z.sum(1)
            if need_h:
                grad_h[d] -= (d_z * win.z[d]).sum(dtype=_SUM_DTYPE)
            if grad_e[d] is not None:
                edge_index = (win.first[d] - plan.widths[d]).unsqueeze(1) + torch.arange(plan.widths[d], device=x.device)
                grad_e[d].index_add_(0, edge_index.clamp_(max=axis.bins).reshape(-1), d_z.reshape(-1).to(_SUM_DTYPE))
    return grad_x, grad_w, grad_h, grad_e


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
    if len(binning.axes) != 1 or binning.hard_axes[0] or x.dtype == torch.float64 or x.numel() == 0 or not binning.plain:
        return None
    kernel = binning.kernels[0]
    if not (math.isfinite(kernel.pdf_slope) and math.isfinite(kernel.support)):
        return None
    axis = binning.axes[0]
    if axis.uniform is None:
        return None
    ratio = 1.0 / (axis.scale * axis.bandwidth)  # bin width in kernel std units
    q = max(16, math.ceil(table_points(kernel, axis.scale * axis.bandwidth)))
    reach = math.ceil(kernel.support / ratio) + 1
    # Grid points cost about a quarter of a window element each while the grids stay in cache,
    # and about two once they do not (measured on CPU: 8M points for 1M samples into 4096 bins
    # lost to the windows, for 4M samples they won): take the table when it is cheaper than the
    # windows and its memory stays bounded.
    points = x.shape[0] * (axis.bins + 2 * reach) * q
    point_cost = 0.25 if points <= _TABLE_CACHED_POINTS else 2.0
    masses = x.shape[0] * (axis.bins + 2 * reach) * (2 * reach + 1)  # the matmul's output: wide kernels make it huge
    if q > _TABLE_MAX_Q or max(points, masses) > _TABLE_MAX_POINTS or point_cost * points > window_edges(axis, kernel, None) * x.numel():
        return None
    return _Table(q=q, reach=reach, pad=reach, scale=axis.scale, lo=axis.uniform[0])


@functools.lru_cache(maxsize=32)
def _table_values(table: _Table, axis: Axis, kernel: Kernel, dtype: torch.dtype, device: torch.device, what: str) -> Tensor:
    """``(Q, W)``: per sub-position ``f = q/Q`` and offset ``o``, the bin mass (``"mass"``),
    its derivative in x (``"dx"``) or in the bandwidth (``"dh"``), computed in float64.

    Cached (read-only): a dozen small ops that otherwise dominate calls on few samples."""
    h = axis.bandwidth
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

    Computed in float64: in float32 a grid of a million points places samples only to ~1/30 of
    a point, which costs gradients ~1e-5 of relative accuracy.

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


def _table_forward(x: Tensor, weight: Optional[Tensor], axis: Axis, kernel: Kernel, table: _Table) -> Tensor:
    """``x: (rows, n)`` -> ``(rows, bins)``."""
    rows, n = x.shape
    stride = table_stride(table, axis)
    # Linear binning onto the grid, as two moments per point: total weight and weight * t.
    # Point k then holds total[k] - moment[k] + moment[k-1]. Unweighted totals are integer counts.
    # Weighted: three columns per point. A non-finite weight cannot go through the grid (inf * 0
    # and inf - inf are NaN, which the matmul would spread over the window), so the first column
    # holds the finite weights and the other two indicators of +inf and -inf weights (NaN: both).
    # The cells those reach (mass != 0) get +inf, -inf or NaN (both) on top, as the window path
    # gives them: no other cell is touched, and no host sync is needed to find such weights.
    columns = 1 if weight is None else 3
    total = torch.zeros(rows * stride, columns, dtype=_SUM_DTYPE, device=x.device)
    moment = torch.zeros(rows * stride, columns, dtype=_SUM_DTYPE, device=x.device)
    flat_x = x.reshape(-1)
    flat_w = None if weight is None else weight.reshape(-1)
    for start, end in _chunks(flat_x.numel(), _CHUNK_ELEMENTS):
        k, t, valid = _table_positions(flat_x[start:end].to(_SUM_DTYPE), table, axis.bins)
        if rows > 1:
            k += _row_offsets(start, end, n, stride, x.device)
        if flat_w is None:
            total[:, 0] += torch.bincount(k, minlength=rows * stride)
            moment[:, 0].index_add_(0, k, t.to(_SUM_DTYPE))
        else:
            w = flat_w[start:end].to(t.dtype)
            nan = torch.isnan(w)
            wc = torch.stack([
                torch.where(valid & torch.isfinite(w), w, 0.0), (valid & ((w == math.inf) | nan)).to(w.dtype),
                (valid & ((w == -math.inf) | nan)).to(w.dtype),
            ], 1).to(_SUM_DTYPE)
            total.index_add_(0, k, wc)
            moment.index_add_(0, k, wc * t.to(_SUM_DTYPE).unsqueeze(1))
    per_column = table_histogram(
        total.T.reshape(columns * rows, stride), moment.T.reshape(columns * rows, stride), axis, kernel, table
    ).view(columns, rows, -1)
    hist = per_column[0]
    if weight is not None:
        hist = hist + torch.where(per_column[1] != 0, math.inf, 0.0) + torch.where(per_column[2] != 0, -math.inf, 0.0)
    return hist.to(accumulation_dtype(x.dtype))


def table_stride(table: _Table, axis: Axis) -> int:
    """Grid points per row: ``Q`` per base bin, plus one past the last, where invalid samples go."""
    return (axis.bins + 2 * table.pad) * table.q + 1


def table_histogram(total: Tensor, moment: Tensor, axis: Axis, kernel: Kernel, table: _Table) -> Tensor:
    """``(rows, bins)`` float64 from the linear-binning moments ``(rows, stride)`` of each row's samples:
    point ``k`` holds ``total[k] - moment[k] + moment[k-1]``; exact bin masses are applied by a matmul."""
    rows = total.shape[0]
    base_bins = axis.bins + 2 * table.pad
    point = total - moment
    point[:, 1:] += moment[:, :-1]
    # The grid's last point sits past every bin's support: drop it.
    per_base = point[:, :-1].reshape(rows, base_bins, table.q)
    mass = per_base @ _table_values(table, axis, kernel, _SUM_DTYPE, total.device, "mass")  # (rows, base_bins, W)
    # Bin n + j - reach gets mass[:, n, j]: overlapping windows summed in one op (col2im).
    out = nnf.fold(mass.transpose(1, 2), output_size=(1, base_bins + 2 * table.reach), kernel_size=(1, table.width))
    out = out.view(rows, -1)
    first = table.pad + table.reach
    return out[:, first : first + axis.bins]


def _table_backward(
    grad: Tensor, x: Tensor, weight: Optional[Tensor], axis: Axis, kernel: Kernel, table: _Table, needs: Tuple[bool, ...]
):
    rows, n = x.shape
    bins, acc = axis.bins, accumulation_dtype(x.dtype)
    need_x, need_w, need_h = needs
    base_bins = bins + 2 * table.pad
    margin = table.pad + table.reach
    # g_near[r, n, j] = grad of the bin at offset j from base bin n.
    # Per-point values and their interpolation in float64: a float32 dot of W terms per point
    # errs by ~1e-5 relative on gradients that cancel.
    g_near = nnf.pad(grad.to(_SUM_DTYPE), (margin, margin)).unfold(1, table.width, 1)[:, :base_bins]

    def per_grid_point(what: str) -> Tensor:
        # Chain rule on the sub-grid: (rows, base_bins, W) @ (W, Q), plus the dropped last point.
        values = g_near @ _table_values(table, axis, kernel, _SUM_DTYPE, x.device, what).T
        # Zeros for each row's last point, plus one so invalid samples' k + 1 stays in bounds.
        return nnf.pad(nnf.pad(values.reshape(rows, -1), (0, 1)).reshape(-1), (0, 1))

    g_x = per_grid_point("dx") if need_x else None
    g_w = per_grid_point("mass") if need_w else None
    g_h = per_grid_point("dh") if need_h else None
    stride = table_stride(table, axis)
    flat_x = x.reshape(-1)
    flat_w = None if weight is None else weight.reshape(-1)
    grad_x = torch.zeros_like(flat_x, dtype=acc) if need_x else None
    grad_w = torch.zeros_like(flat_x, dtype=acc) if need_w else None
    grad_h = torch.zeros((), dtype=_SUM_DTYPE, device=x.device) if need_h else None

    def lerp(values: Tensor, k: Tensor, t: Tensor) -> Tensor:
        return torch.lerp(values.index_select(0, k), values.index_select(0, k + 1), t.to(_SUM_DTYPE)).to(acc)

    for start, end in _chunks(flat_x.numel(), _CHUNK_ELEMENTS):
        # Invalid samples sit on a zero grid point, so they get zero gradients unmasked.
        k, t, valid = _table_positions(flat_x[start:end].to(_SUM_DTYPE), table, bins)
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
    return grad_x, grad_w, grad_h


# --------------------------------------------------------------------------- formula strategy


# Centre membership, per-bin bandwidths and normalized samples run the plain-torch formula of
# :mod:`._ops` (``window_cells``: the same windows, as differentiable ops) in chunks of samples:
# forward sums its cells, backward differentiates each chunk's cells with autograd against the
# gathered output gradients. Memory stays O(chunk x window cells); nothing is saved between passes.


_FEW_SAMPLES = 16


def _formula_chunks(x: Tensor, edges: Sequence[Tensor], binning: Binning) -> Iterator[Tuple[int, int, Tensor]]:
    """Chunk bounds and each chunk's histogram rows, sized by the window cells per sample."""
    cells = 1
    for axis, kernel, hard, e in zip(binning.axes, binning.kernels, binning.hard_axes, edges):
        cells *= 1 if hard else max(1, min(window_edges(axis, kernel, e.detach()), axis.bins + 1) - 1)
    n = max(x.shape[1], 1)
    # A sixteenth of the window strategy's chunk: the formula keeps a dozen (m, cells) temporaries
    # (and, backward, their autograd graph) alive at once.
    for start, end in _chunks(x.shape[0] * x.shape[1], (_CHUNK_ELEMENTS // 16) // cells):
        yield start, end, torch.arange(start, end, device=x.device).div_(n, rounding_mode="floor")


def _formula_forward(x: Tensor, weight: Optional[Tensor], edges: Sequence[Tensor], binning: Binning) -> Tensor:
    from . import _ops  # the formula's module imports this one

    acc = accumulation_dtype(x.dtype)
    rows, _, dims = x.shape
    bandwidth = binning.bandwidth_tensor(acc, x.device)
    flat_x, flat_w = x.reshape(-1, dims), None if weight is None else weight.reshape(-1)
    # Cells of rows of few samples receive few additions: they sum in the accumulation dtype
    # (local histograms have one sample per row, and rows x bins cells).
    sum_dtype = _SUM_DTYPE if x.shape[1] > _FEW_SAMPLES else acc
    hist = torch.zeros(rows * math.prod(binning.shape), dtype=sum_dtype, device=x.device)
    for start, end, row in _formula_chunks(x, edges, binning):
        w, index, axes = _ops.window_cells(flat_x[start:end], None if flat_w is None else flat_w[start:end], row, bandwidth, edges, binning)
        hist.index_add_(0, index.reshape(-1), _ops.cell_values(w, axes).reshape(-1).to(sum_dtype))
    return hist.view(rows, *binning.shape).to(acc)


def _formula_backward(grad: Tensor, x: Tensor, weight: Optional[Tensor], edges: Sequence[Tensor], binning: Binning, needs):
    from . import _ops

    need_x, need_w, need_h, need_edges = needs
    acc = accumulation_dtype(x.dtype)
    dims = x.shape[2]
    flat_x, flat_w = x.reshape(-1, dims).detach(), None if weight is None else weight.reshape(-1).detach()
    grad = grad.reshape(-1).to(acc)
    bandwidth = binning.bandwidth_tensor(acc, x.device).requires_grad_(need_h)
    edge_leaves = [e.detach().to(acc).requires_grad_(bool(need)) for e, need in zip(edges, need_edges)]
    grad_x = torch.zeros(flat_x.shape, dtype=acc, device=x.device) if need_x else None
    grad_w = torch.zeros(flat_x.shape[0], dtype=acc, device=x.device) if need_w else None
    grad_h = torch.zeros(bandwidth.shape, dtype=_SUM_DTYPE, device=x.device) if need_h else None
    grad_e = [torch.zeros(e.shape, dtype=_SUM_DTYPE, device=x.device) if need else None for e, need in zip(edges, need_edges)]
    for start, end, row in _formula_chunks(x, edges, binning):
        with torch.enable_grad():
            xc = flat_x[start:end].to(acc).requires_grad_(need_x)
            wc = None if flat_w is None else flat_w[start:end].to(acc).requires_grad_(need_w)
            w, index, axes = _ops.window_cells(xc, wc, row, bandwidth, edge_leaves, binning)
            values = _ops.cell_values(w, axes)
            leaves = [xc if need_x else None, wc if need_w else None, bandwidth if need_h else None, *(
                e if need else None for e, need in zip(edge_leaves, need_edges))]
            wanted = [t for t in leaves if t is not None]
            if not wanted or not values.requires_grad:
                continue
            found = iter(torch.autograd.grad(values, wanted, _take(grad, index), allow_unused=True))
        got = [None if t is None else next(found) for t in leaves]
        if need_x and got[0] is not None:
            grad_x[start:end] = got[0]
        if need_w and got[1] is not None:
            grad_w[start:end] = got[1]
        if need_h and got[2] is not None:
            grad_h += got[2]
        for d, g in enumerate(got[3:]):
            if g is not None:
                grad_e[d] += g
    return grad_x, grad_w, grad_h, grad_e


# --------------------------------------------------------------------------- autograd


def _soft_forward(x: Tensor, weight: Optional[Tensor], edges: Sequence[Tensor], binning: Binning) -> Tensor:
    if not binning.plain:
        return _formula_forward(x, weight, edges, binning)
    table = _plan_table(x, binning)
    if table is not None:
        return _table_forward(x[..., 0], weight, binning.axes[0], binning.kernels[0], table)
    return _window_forward(x, weight, edges, binning)


def _soft_backward(grad: Tensor, x: Tensor, weight: Optional[Tensor], edges: Sequence[Tensor], binning: Binning, needs):
    need_x, need_w, need_h, need_edges = needs
    if not binning.plain:
        return _formula_backward(grad, x, weight, edges, binning, needs)
    table = _plan_table(x, binning)
    smooth_enough = math.isfinite(binning.kernels[0].pdf_curvature) or not (need_x or need_h)
    if table is None or not smooth_enough or any(need_edges):
        return _window_backward(grad, x, weight, edges, binning, needs)
    grad_x, grad_w, grad_h = _table_backward(
        grad, x[..., 0], weight, binning.axes[0], binning.kernels[0], table, (need_x, need_w, need_h)
    )
    return grad_x, grad_w, None if grad_h is None else grad_h.view(1), [None]


TORCH_ENGINE = Engine(_soft_forward, _soft_backward, hard_histogram, supports=lambda binning: None)

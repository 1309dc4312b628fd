"""Native CPU backend: the fused C++ kernels of ``csrc/`` (private ops ``torch.ops.softhist._native_*``).

Same contract as :mod:`._torch_backend` (an :class:`._torch_backend.Engine`: ``x: (rows, n, D)``
-> ``(rows, *bins)``; the ops of :mod:`._ops` carry its autograd). This module plans each call and the kernels run it:

* per axis, a strategy: ``HARD`` for an axis binned hard inside a soft histogram; ``TABLE`` (equal-width bins, float32 or narrower input, a kernel with a
  continuous density, or a compact one whose table is split at its jumps, enough samples): masses read from a sub-bin table of exact values and
  linearly interpolated; otherwise the exact window (``EXACT_UNIFORM`` for equal-width bins,
  ``EXACT_EDGES`` for any edges), with the kernel's CDF evaluated at each window edge;
* the window widths, capped at the axis's edges, so a call never costs more than the dense formula;
* the tables, built once per kernel and bandwidth (in bin widths) in float64 and cached.

The kernels read float32 or float64 (narrower inputs are computed in float32), accumulate in
float64 and are bit-identical across runs and thread counts.
"""

from __future__ import annotations

import functools
import importlib
import math
from collections import OrderedDict
from dataclasses import dataclass, fields, replace
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as nnf
from torch import Tensor

from . import _torch_backend
from ._plan import (
    GRADIENT_TOLERANCE, TABLE_TOLERANCE, Axis, Binning, Engine, accumulation_dtype, edge_values, host_cache, native_unsupported,
    table_points, window_edges,
)
from .kernels import Kernel, is_builtin

__all__ = ["CPP_ENGINE", "unavailable_reason"]

NAME = "cpp"  # the backend= value that selects this engine

try:
    importlib.import_module(f"{__package__}._C")  # loading the library registers torch.ops.softhist.*
    _LOAD_ERROR: Optional[str] = None
except (ImportError, OSError) as error:  # not built (no compiler, isolated build), or for an older torch
    _LOAD_ERROR = f"{type(error).__name__}: {error}"

KERNEL_IDS = {"gaussian": 0, "logistic": 1, "box": 2, "triangular": 3, "epanechnikov": 4, "bspline": 5, "bspline2": 6, "cauchy": 7}
EXACT_UNIFORM, EXACT_EDGES, TABLE, HARD = 0, 1, 2, 3
MEMBERSHIP_IDS = {"mass": 0, "center": 1}
# The options of native_unsupported this engine has: centre membership, per-sample normalization
# and the Cauchy kernel (never cut: its window is the whole axis).
OPTIONS = frozenset({"membership='center'", "normalize_samples=True", "kernel='cauchy'"})

_TABLE_MAX_Q = 8192
_TABLE_MAX_REACH = 63  # windows of up to 127 bins (128 stored): wide kernels still read a few rows
_NO_TABLES = torch.zeros(0, dtype=torch.float32)
_NO_EDGES = torch.zeros(0, dtype=torch.float64)

def hard_histogram(
    x: Tensor, weight: Optional[Tensor], edges: Sequence[Tensor], binning: Binning, dtype: torch.dtype = torch.float64
) -> Tensor:
    """Exact counts ``(rows, *bins)`` in ``dtype``, as :func:`._torch_backend.hard_histogram` counts them
    (torch.histc's arithmetic in the input's dtype, or numpy's comparison with the edges): the
    float64 counts rounded once, written by the kernel in ``dtype`` (no float64 copy)."""
    if x.dtype not in (torch.float32, torch.float64) or dtype not in (torch.float32, torch.float64):  # half precision: torch's own rounding
        return _torch_backend.hard_histogram(x, weight, edges, binning).to(dtype)
    bins, ranges, histc_rule = _hard_plan(binning)
    flat_edges = _NO_EDGES if histc_rule else torch.cat([e.detach().to(torch.float64).reshape(-1) for e in edge_values(edges, binning)])  # histc's rule reads none
    w = None if weight is None else _dense(weight.detach(), torch.float64)
    return torch.ops.softhist._native_hard(x if x.is_contiguous() else x.contiguous(), w, flat_edges, bins, ranges, histc_rule, dtype)


@host_cache(maxsize=256)
def _hard_plan(binning: Binning) -> Tuple[List[int], List[float], bool]:
    """The hard op's ``bins``, ``ranges`` (histc's rule; zeros for numpy's, which reads the edges) and rule."""
    histc_rule = binning.hard_rule == "histc"
    ranges = [v for axis in binning.axes for v in (axis.uniform if histc_rule else (0.0, 0.0))]
    return [a.bins for a in binning.axes], ranges, histc_rule


def unavailable_reason() -> Optional[str]:
    """Why the native kernels cannot run, or None when they can."""
    if _LOAD_ERROR is None:
        return None
    return (
        f"softhist's native CPU kernels are not built or do not load ({_LOAD_ERROR}); "
        "to build them, reinstall with `pip install --no-build-isolation .` where a C++ compiler is present"
    )


# --------------------------------------------------------------------------- tables


# The compact kernels whose density (box) or its derivative (triangular, Epanechnikov) jumps:
# their breakpoints z_b, and their CDF as polynomial pieces in t = z / a (ascending coefficients)
# between consecutive breakpoints, with F = 0 below -a and 1 above a. A bin mass
# F((o + 1 - f)/hb) - F((o - f)/hb) of a sample at f in its bin is a polynomial in f while no
# window edge crosses a breakpoint, that is between the cuts f = frac(-z_b hb), the same for
# every edge o: the table is split there and each piece interpolates its own polynomials.
_PIECES = {
    "box": (math.sqrt(3.0), (-1.0, 1.0), ((0.5, 0.5),)),
    "triangular": (math.sqrt(6.0), (-1.0, 0.0, 1.0), ((0.5, 1.0, 0.5), (0.5, 1.0, -0.5))),
    "epanechnikov": (math.sqrt(5.0), (-1.0, 1.0), ((0.5, 0.75, 0.0, -0.25),)),
}
# Inside the pieces, in units of a: max |f'|, max |f''| and max |(z f)''| (= |2 f' + z f''|), the
# second derivatives in f of the mass, d/du and d/dhb rows (over r^2, r^3, r^3, r = 1/hb, twice):
# box 0, 0, 0 (linear pieces: one row per piece is exact); triangular 1/a^2, 0, 2/a^2;
# Epanechnikov 3/(2a^2), 3/(2a^3), 9/(2a^2).
_PIECE_BOUNDS = {
    "box": (0.0, 0.0, 0.0),
    "triangular": (1.0 / 6.0, 0.0, 2.0 / 6.0),
    "epanechnikov": (1.5 / 5.0, 1.5 / 5.0**1.5, 4.5 / 5.0),
}


@dataclass(frozen=True)
class TableLayout:
    """A sub-bin table's rows: ``rows`` in all, ``q`` per bin (one piece), ``reach`` J bins each
    side; split at ``cuts`` (piece starts after 0, padded with 1.0) with piece rows from ``starts``."""

    q: int
    reach: int
    rows: int
    cuts: Tuple[float, float] = (1.0, 1.0)
    starts: Tuple[int, int] = (0, 0)


@functools.lru_cache(maxsize=None)
def _table_size(kernel: Kernel, bandwidth_bins: float) -> Optional[TableLayout]:
    """The layout of the sub-bin table for a bandwidth of ``bandwidth_bins`` bin widths, or None
    when it would be too large (very narrow or very wide kernels take the exact windows).

    Smooth kernels: ``Q`` rows per bin, the power of two at or above :func:`._plan.table_points`
    (the torch engine's bound), so ``(u - floor u) * Q`` is exact; a sample reaches
    ``J = ceil(T * hb)`` bins on each side. Compact kernels with jumps (:data:`_PIECES`): the
    bin is cut at the breakpoints; piece ``s`` on ``[c_s, c_{s+1})`` takes ``n_s = ceil(len * q)``
    rows of spacing ``len / n_s`` (``q`` from :data:`_PIECE_BOUNDS` and the same tolerances),
    then one more row that continues the piece's polynomials (read by a position rounded onto
    the piece's end, and by the gradient tables as the last row's end point).
    """
    if not math.isfinite(kernel.support):  # never cut (Cauchy): no window a table could hold
        return None
    reach = math.ceil(kernel.support * bandwidth_bins)
    if reach > _TABLE_MAX_REACH:
        return None
    if is_builtin(kernel) and kernel.name in _PIECES:
        a, breaks, _ = _PIECES[kernel.name]
        s1, s2, s3 = _PIECE_BOUNDS[kernel.name]
        r = 1.0 / bandwidth_bins
        peak = float(kernel.pdf(torch.zeros((), dtype=torch.float64)))
        q = r * max(math.sqrt(s1 / (4.0 * TABLE_TOLERANCE)), math.sqrt(max(s2, s3) / (4.0 * GRADIENT_TOLERANCE * peak)))
        q = max(1, math.ceil(q))
        cuts = sorted({c for c in ((-b * a * bandwidth_bins) % 1.0 for b in breaks) if 0.0 < c < 1.0}) or [0.5]  # (a cut at 0.5 where none falls inside: still pieces)
        bounds = [0.0, *cuts, 1.0]
        counts = [math.ceil((hi - lo) * q) for lo, hi in zip(bounds[:-1], bounds[1:])]
        if sum(counts) > _TABLE_MAX_Q:
            return None
        starts = [sum(n + 1 for n in counts[:s]) for s in range(1, len(counts))]
        rows = sum(n + 1 for n in counts)
        pad = 2 - len(cuts)
        return TableLayout(q, reach, rows, tuple(cuts + [1.0] * pad), tuple(starts + [rows] * pad))
    if not math.isfinite(kernel.pdf_slope):
        return None
    q = table_points(kernel, bandwidth_bins)
    size = 1 << max(4, math.ceil(math.log2(max(q, 1.0))))
    if size > _TABLE_MAX_Q:
        return None
    return TableLayout(size, reach, size)


def _centre_rows(
    kernel: Kernel, bandwidth_bins: float, offsets: Tensor, f: Tensor, piece: Optional[Tuple[float, float]] = None
) -> Tuple[Tensor, Tensor, Tensor]:
    """Centre memberships of bins ``n + o`` (``o`` in ``offsets``: ``-J .. J`` for a table, the far
    bins for a far grid) of samples at ``n + f`` (float64, ``(len(f), len(offsets))``)
    and their derivatives in the position ``u`` and the bandwidth ``hb`` (bin units): with
    ``r = 1/hb`` and ``z = (o + 1/2 - f) r``, ``a = r K(z)``, ``da/du = -r^2 K'(z)``,
    ``da/dhb = -r^2 (K(z) + z K'(z))`` (``K'`` by autograd of the kernel's density).

    ``piece = (lo, hi)``: samples in a piece of the bin between two cuts (:func:`_centre_cuts`),
    where no bin's centre crosses the kernel's cut ``|z| = T``: each bin is inside or outside
    the cut as it is at the piece's middle, over the whole piece, its density continued onto the
    piece's ends (the one-sided limit there: ``z`` pulled inside ``(-T, T)``, by the few ulps it
    lies past ``T`` at a cut, changes the values by that times their slope, ~1e-15)."""
    r = 1.0 / bandwidth_bins
    z = (offsets.unsqueeze(0) + 0.5 - f.unsqueeze(1)) * r
    inside = None
    if piece is not None:
        inside = ((offsets + 0.5 - 0.5 * (piece[0] + piece[1])) * r).abs() < kernel.support
        bound = math.nextafter(kernel.support, 0.0)
        z = z.clamp(-bound, bound)
    z = z.requires_grad_()
    with torch.enable_grad():
        density = kernel.pdf(z)
        (slope,) = torch.autograd.grad(density.sum(), z) if density.requires_grad else (torch.zeros_like(z),)  # a box: flat
    density, z = density.detach(), z.detach()
    if inside is not None:
        density, slope = density * inside, slope * inside
    return density * r, -slope * r * r, -(density + z * slope) * r * r


def _centre_cuts(kernel: Kernel, bandwidth_bins: float) -> Optional[List[float]]:
    """Where in the bin (``0 < f < 1``) a centre table is cut, or None where more than two cuts
    (three pieces, csrc/windows.h TableGrid) would be needed. Bin ``n + o``'s centre membership of
    a sample at ``n + f`` is ``r K((o + 1/2 - f) r)``: its value (a cut Gaussian, logistic or box)
    or its slope (Epanechnikov) jumps where the centre crosses the cut, ``o + 1/2 - f = ±T hb``,
    that is at ``f = frac(1/2 ∓ T hb)``, the same two places for every bin. Between them each
    bin's row is as smooth as the density inside the cut, and linear interpolation within a
    piece never crosses a jump. The triangular density also kinks at 0 (``f = 1/2``): a third
    cut, so it takes the exact windows."""
    if is_builtin(kernel) and kernel.name == "triangular":
        return None
    t_hb = kernel.support * bandwidth_bins
    return sorted({c for c in ((0.5 - t_hb) % 1.0, (0.5 + t_hb) % 1.0) if 0.0 < c < 1.0}) or [0.5]  # (none inside: still pieces)


@functools.lru_cache(maxsize=None)
def _centre_table_size(kernel: Kernel, bandwidth_bins: float, gradients: bool, reach: Optional[int] = None) -> Optional[TableLayout]:
    """The layout of a centre-membership table, or None. A centre membership follows the density,
    not its integral, so :func:`._plan.table_points`' bound (from the CDF's smoothness) does not
    size it: ``q`` rows per bin, the smallest power of two from 16 whose linear interpolation
    errs, at every point half-way between grid rows, by at most ``2**-24`` (values) and, with
    ``gradients``, ``2**-21`` of the largest derivative (derivative rows).

    One piece of ``Q = q`` rows where it fits (the cheaper grid to locate on): where a bin's
    centre crosses the cut ``|z| = T`` between two rows, the interpolation errs by up to the
    density's jump there, allowed for the values when it is below ``2**-20`` of their peak
    (Gaussian ``8e-7``, logistic ``2e-7``), for derivatives when below their tolerance (a
    cut Gaussian's derivative rows jump by up to ``2e-5`` of their peak: they do not fit). Else a
    table split at :func:`_centre_cuts` (pieces of ``ceil(len q)`` rows, then one more, as
    :func:`_table_size`'s), where no row interpolates across the cut. ``reach``: the near window
    of a kernel that is never cut (:func:`_far_plan`), whose far bins a far grid holds."""
    if reach is None:
        if not math.isfinite(kernel.support):
            return None
        reach = math.ceil(kernel.support * bandwidth_bins)  # a centre within T hb of the sample: |o + 1/2 - f| < T hb
    if reach > _TABLE_MAX_REACH:
        return None
    one = _centre_table_fit(kernel, bandwidth_bins, gradients, reach, None)
    if one is not None or not math.isfinite(kernel.support):
        return one
    cuts = _centre_cuts(kernel, bandwidth_bins)
    return None if cuts is None else _centre_table_fit(kernel, bandwidth_bins, gradients, reach, tuple(cuts))


def _centre_table_fit(
    kernel: Kernel, bandwidth_bins: float, gradients: bool, reach: int, cuts: Optional[Tuple[float, ...]]
) -> Optional[TableLayout]:
    """:func:`_centre_table_size`'s search, over one piece (``cuts`` None) or the pieces between ``cuts``."""
    r = 1.0 / bandwidth_bins
    offsets = torch.arange(-reach, reach + 1, dtype=torch.float64)
    bounds = [0.0, *cuts, 1.0] if cuts is not None else [0.0, 1.0]
    size = 16
    while size <= _TABLE_MAX_Q:
        counts = [math.ceil((hi - lo) * size) for lo, hi in zip(bounds[:-1], bounds[1:])] if cuts is not None else [size]
        if sum(counts) > _TABLE_MAX_Q:
            return None
        grids, halves, crossings = [], [], []
        for lo, hi, n in zip(bounds[:-1], bounds[1:], counts):
            f = lo + torch.arange(n + 1, dtype=torch.float64) * ((hi - lo) / n)
            piece = (lo, hi) if cuts is not None else None
            grids.append(_centre_rows(kernel, bandwidth_bins, offsets, f, piece))
            halves.append(_centre_rows(kernel, bandwidth_bins, offsets, 0.5 * (f[:-1] + f[1:]), piece))
            inside = ((offsets.unsqueeze(0) + 0.5 - f.unsqueeze(1)) * r).abs() < kernel.support
            crossing = inside[:-1] != inside[1:]  # a centre crosses the cut between these rows (one piece only)
            crossings.append(crossing if cuts is None else torch.zeros_like(crossing))
        fits = True
        for row in range(3 if gradients else 1):
            peak = max(float(g[row].abs().max()) for g in grids)
            allowed = TABLE_TOLERANCE if row == 0 else GRADIENT_TOLERANCE * peak
            across = 2.0**-20 * peak if row == 0 else allowed
            for g, m, crossing in zip(grids, halves, crossings):
                error = (0.5 * (g[row][:-1] + g[row][1:]) - m[row]).abs()
                jump = (g[row][1:] - g[row][:-1]).abs()
                fits = fits and float(torch.where(crossing, 0.0, error).max()) <= allowed
                fits = fits and float(torch.where(crossing, jump, 0.0).max()) <= across
        if fits:
            if cuts is None:
                return TableLayout(size, reach, size)
            starts = [sum(n + 1 for n in counts[:s]) for s in range(1, len(counts))]
            rows = sum(n + 1 for n in counts)
            pad = 2 - len(cuts)
            return TableLayout(size, reach, rows, tuple(cuts) + (1.0,) * pad, tuple(starts + [rows] * pad))
        size *= 2
    return None


# --------------------------------------------------------------------------- never-cut kernels: near table, far grid
#
# A kernel that is never cut (Cauchy) reaches every bin: no window holds a sample's memberships,
# and the exact path costs O(bins) per sample. Split them by the sample's base bin n (its table
# bin, TableGrid::locate): the near bins n - J .. n + J come from an ordinary sub-bin table (as
# for a cut kernel of reach J); the far bins, |k - n| > J, at least J bins from the sample, are
# smooth in its place f in the bin, so a coarse grid of S + 1 points per bin (f = s/S) holds them.
# Each sample spreads its weight over four points of its own bin by cubic Lagrange interpolation
# (the stencil one-sided near the bin's ends), and bin k then takes sum_{n,s} grid[n, s] m(k - n, s/S),
# with m(o, f) the membership of bin n + o of a sample at n + f: a function of the offset and f
# alone, stored once per offset (_build_far), so the product costs bins x grid points per row.
#
# Cubic interpolation at spacing 1/S errs by at most |prod_i (tau - i)| / 4! S^-4 max|d^4 m / df^4|
# (stencil points i = 0..3, tau in [0, 3]: the product is at most 1 where a sample reads it). For
# the Cauchy kernel a far bin's mass has d^4 m / df^4 = r^4 (f3(z_{o+1}) - f3(z_o)), r = 1/hb and
# f3 the density's third derivative: about r^5 f4(z) ~ r^5 120 / (pi z^6) at z >= J r, so with
# J = 6 hb (at least 3 bins) a few points per bin suffice. S is the least of _FAR_NODES whose
# interpolation errs, measured on a fine grid over the 40 nearest far bins each side (the error
# falls with the distance), by at most 2**-24 of the sample's peak membership (2**-21 of the peak
# for the derivative rows), the sub-bin tables' bounds. The grid spans the range and E = J + 8
# bins each side; samples farther out add their exact memberships (O(bins) each: they are few).
_FAR_NODES = (4, 8, 16, 32)
_FAR_MARGIN = 8


def _far_reach(bandwidth_bins: float) -> int:
    """The near window J of a never-cut kernel: six bandwidths, at least 3 bins, within _TABLE_MAX_REACH."""
    return min(_TABLE_MAX_REACH, max(3, math.ceil(6.0 * bandwidth_bins)))


def _far_rows(kernel: Kernel, bandwidth_bins: float, membership: str, offsets: Tensor, f: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Memberships of bins ``n + o`` (``o`` in ``offsets``) of samples at ``n + f`` and their derivatives
    in the position ``u`` and the bandwidth ``hb`` (bin units), float64 ``(len(f), len(offsets))``:
    a mass ``F(z_1) - F(z_0)``, ``z_j = (o + j - f) r``, has ``-(f(z_1) - f(z_0)) r`` and
    ``-(z_1 f(z_1) - z_0 f(z_0)) r``; a centre membership as :func:`_centre_rows`."""
    if membership == "center":
        return _centre_rows(kernel, bandwidth_bins, offsets, f)
    r = 1.0 / bandwidth_bins
    z0 = (offsets.unsqueeze(0) - f.unsqueeze(1)) * r
    z1 = (offsets.unsqueeze(0) + 1.0 - f.unsqueeze(1)) * r
    f0, f1 = kernel.pdf(z0), kernel.pdf(z1)
    return kernel.cdf(z1) - kernel.cdf(z0), -(f1 - f0) * r, -(z1 * f1 - z0 * f0) * r


def _far_weights(tau: Tensor) -> List[Tensor]:
    """Cubic Lagrange weights of stencil points 0..3 at ``tau`` (as csrc/far_1d.cpp computes them)."""
    return [-(tau - 1) * (tau - 2) * (tau - 3) / 6, tau * (tau - 2) * (tau - 3) / 2, -tau * (tau - 1) * (tau - 3) / 2, tau * (tau - 1) * (tau - 2) / 6]


@functools.lru_cache(maxsize=None)
def _far_nodes(kernel: Kernel, bandwidth_bins: float, membership: str) -> Optional[int]:
    """S, the far grid's intervals per bin, or None where none of :data:`_FAR_NODES` meets the bounds."""
    reach = _far_reach(bandwidth_bins)
    far = torch.arange(reach + 1, reach + 41, dtype=torch.float64)
    offsets = torch.cat([-far.flip(0), far])
    near = torch.arange(-reach, reach + 1, dtype=torch.float64)
    for nodes in _FAR_NODES:
        fine = torch.arange(32 * nodes, dtype=torch.float64) / (32 * nodes)
        peaks = [float(v.abs().max()) for v in _far_rows(kernel, bandwidth_bins, membership, near, fine)]
        grid = _far_rows(kernel, bandwidth_bins, membership, offsets, torch.arange(nodes + 1, dtype=torch.float64) / nodes)
        exact = _far_rows(kernel, bandwidth_bins, membership, offsets, fine)
        g = fine * nodes
        first = (g.floor() - 1).clamp(0, nodes - 3)
        weights = _far_weights(g - first)
        fits = True
        for row, (values, want, peak) in enumerate(zip(grid, exact, peaks)):
            got = sum(w.unsqueeze(1) * values[(first + i).long()] for i, w in enumerate(weights))
            fits = fits and float((got - want).abs().max()) <= (TABLE_TOLERANCE if row == 0 else GRADIENT_TOLERANCE) * peak
        if fits:
            return nodes
    return None


@functools.lru_cache(maxsize=None)
def _far_plan(kernel: Kernel, bandwidth_bins: float, membership: str, gradients: bool) -> Tuple[Optional[TableLayout], int]:
    """A never-cut kernel's near table (reach J) and far grid intervals per bin S, or (None, 0): the exact windows."""
    if not (is_builtin(kernel) and kernel.name == "cauchy"):
        return None, 0
    reach = _far_reach(bandwidth_bins)
    nodes = _far_nodes(kernel, bandwidth_bins, membership)
    if nodes is None:
        return None, 0
    if membership == "center":
        layout = _centre_table_size(kernel, bandwidth_bins, gradients, reach)
    else:
        size = 1 << max(4, math.ceil(math.log2(max(table_points(kernel, bandwidth_bins), 1.0))))
        layout = TableLayout(size, reach, size) if size <= _TABLE_MAX_Q else None
    return (layout, nodes) if layout is not None else (None, 0)


def _build_far(kernel: Kernel, bandwidth_bins: float, membership: str, bins: int, nodes: int) -> Tensor:
    """``(3, 2 bins + 2E - 1, S + 1)`` float32: block ``e`` holds the memberships (then their
    derivatives in ``u`` and ``hb``) of bin ``n + o``, ``o = E + bins - 1 - e``, of a sample at
    ``n + s/S``, zero where ``|o| <= J`` (the near table's bins). Bin ``k`` reads the grid's bin
    ``n' = n + E`` against block ``n' + bins - 1 - k``: one contiguous run per bin."""
    reach = _far_reach(bandwidth_bins)
    margin = reach + _FAR_MARGIN
    offsets = margin + bins - 1 - torch.arange(2 * bins + 2 * margin - 1, dtype=torch.float64)
    rows = _far_rows(kernel, bandwidth_bins, membership, offsets, torch.arange(nodes + 1, dtype=torch.float64) / nodes)
    near = offsets.abs() <= reach
    return torch.stack([torch.where(near, 0.0, v).t() for v in rows]).to(torch.float32).contiguous()


_TABLES: "OrderedDict[tuple, Tensor]" = OrderedDict()  # the 16 tables used last, flattened
_TABLES_KEPT = 16
_READY: dict = {}  # (binning, smooth, tables allowed, exact axes) -> a settled plan of equal-width axes


def _table(key: tuple) -> Tensor:
    """The table of ``key = (kernel, bandwidth_bins, layout, membership)``, or ``(kernel,
    bandwidth_bins, layout, (bins, S), membership)`` with a far grid: the flattened table of
    :func:`_build_table`, then its rows' sums ``(3, rows, 2)`` (of the values and of the steps:
    the sum of a row interpolated at t is ``s_0 + t s_1``, read by normalized samples), then the
    far grid's blocks of :func:`_build_far`; built once and kept among the last 16 used."""
    kernel, bandwidth_bins, layout, *far, membership = key
    table = _TABLES.get(key)
    if table is None:
        built = _build_table(kernel, bandwidth_bins, layout, membership)
        sums = built.double().sum(-1).to(torch.float32)
        parts = [built.reshape(-1), sums.reshape(-1)]
        if far:
            parts.append(_build_far(kernel, bandwidth_bins, membership, *far[0]).reshape(-1))
        table = _TABLES[key] = torch.cat(parts)
        if len(_TABLES) > _TABLES_KEPT:
            _TABLES.popitem(last=False)
            _READY.clear()  # kept plans hold their tables: let the evicted one go
    else:
        _TABLES.move_to_end(key)
    return table


def _piece_cdf_pdf(kernel: Kernel, z: Tensor, region: Tensor) -> Tuple[Tensor, Tensor]:
    """F and f of a :data:`_PIECES` kernel at ``z`` from the polynomial of the region (between
    breakpoints, -1 below the first) where ``region`` says, not where ``z`` lies: a piece's
    polynomial continued a little past its ends, and one-sided at a breakpoint."""
    a, breaks, polys = _PIECES[kernel.name]
    t = z / a
    cdf = (region >= len(breaks) - 1).to(z.dtype)  # 0 below the first breakpoint, 1 past the last
    pdf = torch.zeros_like(z)
    for k, coefficients in enumerate(polys):
        inside = region == k
        value = sum(c * t**i for i, c in enumerate(coefficients))
        slope = sum(i * c * t ** (i - 1) for i, c in enumerate(coefficients) if i) / a
        cdf, pdf = torch.where(inside, value, cdf), torch.where(inside, slope, pdf)
    return cdf, pdf


def _build_table(kernel: Kernel, bandwidth_bins: float, layout: TableLayout, membership: str = "mass") -> Tensor:
    """``(3, rows, 2, W8)`` float32: the masses (or centre memberships, :func:`_centre_rows`) of
    bins ``n - J .. n + J`` of a sample at ``n + f``, their derivatives in the position ``u`` and
    in the bandwidth ``hb`` (both in bin units), each row as (value, step to the next row) for
    interpolation; columns past ``2J + 1`` are zero.

    One piece: rows at ``f = q/Q``, exact values. Pieces (:func:`_table_size`): each piece's rows
    and the row after them, from the piece's own polynomials (one-sided at the cuts), each grid
    value less a twelfth of its second difference, ``v_j - (v_{j+1} - 2 v_j + v_{j-1}) / 12``:
    a chord errs by ``g'' s^2 t (1 - t) / 2`` at spacing ``s``, whose mean over the cell is
    ``g'' s^2 / 12``, so the lowered chords err by at most ``g'' s^2 / 12`` either way (not
    ``/ 8``, one-signed) and sums over many samples carry no interpolation bias."""
    r, reach = 1.0 / bandwidth_bins, layout.reach
    offsets = torch.arange(-reach, reach + 2, dtype=torch.float64)
    if membership == "center" and layout.cuts[0] >= 1.0:
        f = torch.arange(layout.q + 1, dtype=torch.float64) / layout.q
        per_bins = _centre_rows(kernel, bandwidth_bins, offsets[:-1], f)
        pieces = [(0, layout.q + 1)]
    elif membership == "center":  # pieces (_centre_table_size): each piece's rows, then one more that continues it
        bounds = [0.0, *(c for c in layout.cuts if c < 1.0), 1.0]
        starts = [0, *(s for s in layout.starts if s < layout.rows), layout.rows]
        parts, pieces = [], []
        for lo, hi, first, after in zip(bounds[:-1], bounds[1:], starts[:-1], starts[1:]):
            n = after - first - 1
            f = lo + torch.arange(n + 2, dtype=torch.float64) * ((hi - lo) / n)  # points 0 .. n + 1
            parts.append(_centre_rows(kernel, bandwidth_bins, offsets[:-1], f, (lo, hi)))
            pieces.append((first + len(pieces), n + 2))
        per_bins = tuple(torch.cat([part[k] for part in parts]) for k in range(3))
    elif layout.cuts[0] >= 1.0:
        f = torch.arange(layout.q + 1, dtype=torch.float64) / layout.q
        z = (offsets.unsqueeze(0) - f.unsqueeze(1)) * r  # (Q+1, W+1): z at bin edges n+o, o = -J..J+1
        cdf, pdf = kernel.cdf(z), kernel.pdf(z)
        pieces = [(0, layout.q + 1)]  # (first point, points) of each piece: rows between consecutive points
    else:
        bounds = [0.0, *(c for c in layout.cuts if c < 1.0), 1.0]
        starts = [0, *(s for s in layout.starts if s < layout.rows), layout.rows]
        a, breaks, _ = _PIECES[kernel.name]
        f_all, region_all, pieces, at = [], [], [], 0
        for lo, hi, first, after in zip(bounds[:-1], bounds[1:], starts[:-1], starts[1:]):
            n = after - first - 1  # rows of the piece, then the row that continues it
            f = lo + (torch.arange(n + 4, dtype=torch.float64) - 1.0) * ((hi - lo) / n)  # points -1 .. n + 2
            z_mid = (offsets - (lo + hi) / 2) * r  # each edge's region inside this piece
            region = torch.searchsorted(torch.tensor(breaks, dtype=torch.float64), z_mid / a) - 1
            f_all.append(f)
            region_all.append(region.expand(n + 4, -1))
            pieces.append((at + 1, n + 2))  # points 0 .. n + 1, with one each side for the second differences
            at += n + 4
        z = torch.cat([(offsets.unsqueeze(0) - f.unsqueeze(1)) * r for f in f_all])
        cdf, pdf = _piece_cdf_pdf(kernel, z, torch.cat(region_all))
    if membership != "center":
        per_edge = (cdf, -pdf * r, -z * pdf * r)  # F, dF/du (dz/du = -1/hb), dF/dhb (dz/dhb = -z/hb)
        per_bins = tuple(values[:, 1:] - values[:, :-1] for values in per_edge)
    width = 2 * reach + 1
    stored = (width + 7) // 8 * 8
    out = []
    for values in per_bins:
        per_bin = nnf.pad(values, (0, stored - width))  # (all points, W8)
        rows = []
        for first, count in pieces:
            points = per_bin[first : first + count]
            if layout.cuts[0] < 1.0 and membership != "center":
                points = points - (per_bin[first + 1 : first + count + 1] - 2.0 * points + per_bin[first - 1 : first + count - 1]) / 12.0
            rows.append(torch.stack([points[:-1], points[1:] - points[:-1]], 1))
        out.append(torch.cat(rows))
    return torch.stack(out).to(torch.float32).contiguous()


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class NativeAxis:
    """One axis of the native plan: the fields of ``csrc/plan.h`` (``SOFTHIST_AXIS_INTS`` then
    ``SOFTHIST_AXIS_FLOATS``), in that order. The one Python place that knows the op's layout."""

    kind: int
    kernel: int
    bins: int
    width: int  # window: edges K (exact) or bins W = 2J + 1 (table)
    q: int  # table rows (grid points per bin where the table is one piece)
    reach: int  # table reach J in bins
    membership: int  # MEMBERSHIP_IDS
    normalize: int  # 1: each sample's values divided by their sum
    lo: float
    scale: float  # bins per data unit
    h: float  # bandwidth
    support: float  # kernel support T
    row1: int = 0  # tables in pieces: the first rows of pieces 1 and 2
    row2: int = 0
    cut1: float = 1.0  # tables in pieces: where pieces 1 and 2 start in the bin (1.0: no piece)
    cut2: float = 1.0
    far: int = 0  # never-cut kernels: the far grid's intervals per bin S (0: no far grid)
    far_pad: int = 0  # the far grid's margin E in bins each side of the range


INT_FIELDS = tuple(f.name for f in fields(NativeAxis) if f.type in (int, "int"))
FLOAT_FIELDS = tuple(f.name for f in fields(NativeAxis) if f.type in (float, "float"))


def _pack(axes: Sequence[NativeAxis]) -> Tuple[List[int], List[float]]:
    """The op's ``axis_ints`` and ``axis_floats``."""
    ints = [int(getattr(a, name)) for a in axes for name in INT_FIELDS]
    floats = [float(getattr(a, name)) for a in axes for name in FLOAT_FIELDS]
    return ints, floats


@host_cache(maxsize=256)
def _axis_plan(binning: Binning, smooth_gradients: bool, tables_allowed: bool, exact_axes: Tuple[bool, ...], edge_windows: Tuple[int, ...]):
    """``(axis_ints, axis_floats, table keys)`` of a call: everything that depends on the binning
    (and, for explicit edges, their window widths ``edge_windows``), planned once. ``exact_axes``
    marks axes whose edge gradients are asked for (the tables do not serve them)."""
    axes: List[NativeAxis] = []
    keys = []
    for axis, kernel, hard, exact, edge_window in zip(binning.axes, binning.kernels, binning.hard_axes, exact_axes, edge_windows):
        lo, scale = (axis.uniform[0], axis.scale) if axis.uniform is not None else (0.0, 1.0)
        kind, width, layout = EXACT_EDGES, 0, None
        if hard:  # numpy's rule against the edges; the kernel is not used
            kind, width = HARD, 2
        elif axis.uniform is not None:
            kind = EXACT_UNIFORM
            bandwidth_bins = axis.bandwidth * scale
            # Normalized samples: on one axis, the kernels divide by each row's sum (samples whose
            # window meets a range end take the exact windows, table_1d.cpp); joint tables are
            # not normalized. Never-cut kernels: a near table and a far grid (one axis, samples
            # not normalized).
            table, far = None, 0
            if not binning.normalize_samples or len(binning.axes) == 1:
                if not math.isfinite(kernel.support):
                    if len(binning.axes) == 1 and not binning.normalize_samples:
                        table, far = _far_plan(kernel, bandwidth_bins, axis.membership, smooth_gradients)
                elif axis.membership == "mass":
                    table = _table_size(kernel, bandwidth_bins)
                else:
                    table = _centre_table_size(kernel, bandwidth_bins, smooth_gradients)
            pieces = table is not None and table.cuts[0] < 1.0  # the pieces interpolate smooth polynomials
            # A centre table's size already bounds its derivative rows' interpolation error.
            smooth = math.isfinite(kernel.pdf_curvature) or pieces or not smooth_gradients or axis.membership == "center"
            grid_fits = table is not None and (axis.bins + 2 * table.reach) * (table.rows + 1) < 2**31  # int32 grid positions
            if grid_fits and smooth and tables_allowed and not exact:
                kind, layout = TABLE, table
                width = 2 * table.reach + 1
                keys.append((kernel, bandwidth_bins, table, (axis.bins, far), axis.membership) if far else (kernel, bandwidth_bins, table, axis.membership))
            elif math.isfinite(kernel.support):
                width = math.ceil(2.0 * kernel.support * bandwidth_bins) + 2
            else:  # never cut: every edge
                width = axis.bins + 1
        else:
            width = edge_window if math.isfinite(kernel.support) else axis.bins + 1
        if kind in (EXACT_UNIFORM, EXACT_EDGES):
            width = max(2, min(width, axis.bins + 1))  # never wider than the axis: cost <= dense
        membership, normalize = MEMBERSHIP_IDS[axis.membership], int(binning.normalize_samples)
        if hard:  # the indicator of the sample's bin: nothing to weigh or normalize
            membership, normalize = 0, 0
        native = NativeAxis(
            kind, KERNEL_IDS.get(kernel.name, 0), axis.bins, width, 0, 0, membership, normalize, lo, scale, axis.bandwidth, kernel.support,
        )
        if layout is not None:
            native = replace(native, q=layout.rows, reach=layout.reach, row1=layout.starts[0], row2=layout.starts[1],
                             cut1=layout.cuts[0], cut2=layout.cuts[1])
            if far:
                native = replace(native, far=far, far_pad=layout.reach + _FAR_MARGIN)
        axes.append(native)
    ints, floats = _pack(axes)
    return ints, floats, tuple(keys)


def _tables(keys: Tuple[tuple, ...]) -> Tensor:
    """The op's tables: one axis's cached table as it is (no copy), several concatenated once."""
    if not keys:
        return _NO_TABLES
    if len(keys) == 1:
        return _table(keys[0])
    joined = _TABLES.get(keys)
    if joined is None:
        joined = torch.cat([_table(key) for key in keys])
        _TABLES[keys] = joined
        if len(_TABLES) > _TABLES_KEPT:
            _TABLES.popitem(last=False)
            _READY.clear()
    return joined


def _flat_edges(edges: Sequence[Tensor], binning: Binning) -> Tensor:
    """Every axis's edges in one float64 tensor, or none (an empty tensor) where no axis reads
    them: the kernels read edges only on axes without equal widths and on hard axes (their
    edge gradients come from the windows), so equal-width calls concatenate nothing, not even
    at 10^8 bins."""
    if all(a.uniform is not None and not hard for a, hard in zip(binning.axes, binning.hard_axes)):
        return _NO_EDGES
    return torch.cat([e.detach().to(torch.float64).reshape(-1) for e in edge_values(edges, binning)])


def _equal_widths(binning: Binning, edges: Sequence[Tensor]) -> Binning:
    """``binning`` with each soft axis whose explicit edges equal ``e_0 + k (e_B - e_0) / B`` in
    float64, bit for bit, taken as that equal-width range: the arithmetic windows (and tables)
    then serve it, with results identical to the range form."""
    axes = list(binning.axes)
    for d, (axis, e, hard) in enumerate(zip(binning.axes, edges, binning.hard_axes)):
        if axis.uniform is not None or hard or e.numel() != axis.bins + 1:
            continue
        e64 = e.detach().to(torch.float64).reshape(-1)
        lo, hi = float(e64[0]), float(e64[-1])
        if hi > lo and torch.equal(e64, torch.arange(axis.bins + 1, dtype=torch.float64) * ((hi - lo) / axis.bins) + lo):
            axes[d] = Axis(axis.bins, axis.bandwidth, (lo, hi))
    return binning if axes == list(binning.axes) else replace(binning, axes=tuple(axes))


_TABLE_BUILD_SAMPLES = 1 << 16
_SAMPLES_SEEN: dict = {}  # table keys -> samples their calls have brought while not built


def _plan(x: Tensor, edges: Sequence[Tensor], binning: Binning, smooth_gradients: bool = False, exact_axes: Optional[Sequence[bool]] = None):
    """Per-axis strategy, window and table: the kernels' ``axis_ints``, ``axis_floats``, edges and tables.

    ``smooth_gradients``: the table must also serve gradients in ``x`` or the bandwidth, which
    needs a kernel whose density has a continuous derivative. Tables serve float32 and narrower
    input; once built they beat the exact windows from one sample up (about 10 us against 37 us
    at 1,000 samples and 256 bins), but building one costs about what the exact windows cost on
    ~10^5 samples, so a table is built once the calls that could use it have brought
    ``_TABLE_BUILD_SAMPLES`` samples (one large call, or many small ones: a training loop's
    small histograms take the table from their 66th call of 1,000 samples on).

    A plan that reads no edge values (equal-width soft axes) and no longer waits for a table
    depends on its key alone: it is kept, so a training loop's calls plan once.
    """
    exact_axes = tuple(exact_axes) if exact_axes is not None else (False,) * len(binning.axes)
    tables_allowed = x.dtype != torch.float64
    key = (binning, smooth_gradients, tables_allowed, exact_axes)
    ready = _READY.get(key)
    if ready is not None:
        return ready
    explicit = any(a.uniform is None for a in binning.axes)
    if explicit:
        binning = _equal_widths(binning, edges)
    windows = tuple(  # explicit edges: the widest window they hold (a read of their values)
        window_edges(a, k, e) if a.uniform is None and not hard else 0
        for a, k, hard, e in zip(binning.axes, binning.kernels, binning.hard_axes, edges)
    )
    ints, floats, keys = _axis_plan(binning, smooth_gradients, tables_allowed, exact_axes, windows)
    settled = True
    if keys and not all(key in _TABLES for key in keys):
        # Build once this binning's calls have brought _TABLE_BUILD_SAMPLES samples (this one
        # included), so the exact windows spent before building cost about what building does.
        seen = _SAMPLES_SEEN.get(keys, 0) + x.shape[0] * x.shape[1]
        if seen < _TABLE_BUILD_SAMPLES:
            _SAMPLES_SEEN[keys] = seen
            if len(_SAMPLES_SEEN) > 1024:
                _SAMPLES_SEEN.clear()
            ints, floats, keys = _axis_plan(binning, smooth_gradients, False, exact_axes, windows)
            settled = False
    plan = ints, floats, _flat_edges(edges, binning), _tables(keys)
    if settled and not explicit and plan[2] is _NO_EDGES:
        if len(_READY) >= 256:
            _READY.clear()
        _READY[key] = plan
    return plan


# --------------------------------------------------------------------------- fake kernels
# Shapes only, for torch.compile, torch.export and meta tensors; bins come from the plan.


def _plan_bins(axis_ints: Sequence[int]) -> List[int]:
    step, at = len(INT_FIELDS), INT_FIELDS.index("bins")
    return list(axis_ints[at::step])


def _fake_soft(x, weight, edges, tables, axis_ints, axis_floats):
    return x.new_empty((x.shape[0], *_plan_bins(axis_ints)))


def _fake_soft_backward(grad, x, weight, edges, tables, axis_ints, axis_floats, needs):
    rows, n, dims = x.shape
    return (
        x.new_empty((rows * n * dims if needs[0] else 0,)),
        x.new_empty((rows * n if needs[1] else 0,)),
        x.new_empty((dims if needs[2] else 0,), dtype=torch.float64),
        x.new_empty((sum(b + 1 for b in _plan_bins(axis_ints)) if any(needs[3:]) else 0,), dtype=torch.float64),
    )


def _fake_hard(x, weight, edges, bins, ranges, histc_rule, dtype):
    return x.new_empty((x.shape[0], *bins), dtype=dtype)


if _LOAD_ERROR is None:
    torch.library.register_fake("softhist::_native_soft")(_fake_soft)
    torch.library.register_fake("softhist::_native_soft_backward")(_fake_soft_backward)
    torch.library.register_fake("softhist::_native_hard")(_fake_hard)


def _dense(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t`` as the kernels read it: contiguous, in ``dtype`` (itself when it already is)."""
    return t if t.dtype == dtype and t.is_contiguous() else t.to(dtype).contiguous()


def _prepare(x: Tensor, weight: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor]]:
    acc = accumulation_dtype(x.dtype)
    return _dense(x, acc), None if weight is None else _dense(weight, acc)


def _forward(x: Tensor, weight: Optional[Tensor], edges: Sequence[Tensor], binning: Binning) -> Tensor:
    x, weight = _prepare(x, weight)
    ints, floats, flat_edges, tables = _plan(x, edges, binning)
    return torch.ops.softhist._native_soft(x, weight, flat_edges, tables, ints, floats)


def _backward(grad: Tensor, x: Tensor, weight: Optional[Tensor], edges: Sequence[Tensor], binning: Binning, needs):
    need_x, need_w, need_h, need_edges = needs
    x, weight = _prepare(x, weight)
    ints, floats, flat_edges, tables = _plan(x, edges, binning, need_x or need_h, need_edges)
    exact_edges = [need and not hard for need, hard in zip(need_edges, binning.hard_axes)]  # hard axes: zero
    flags = [int(need_x), int(need_w), int(need_h), *map(int, exact_edges)]
    grad_x, grad_w, grad_h, grad_e = torch.ops.softhist._native_soft_backward(
        _dense(grad, x.dtype), x, weight, flat_edges, tables, ints, floats, flags
    )
    per_axis: List[Optional[Tensor]] = [None] * len(edges)
    if any(need_edges):
        start = 0
        for d, (e, need, exact) in enumerate(zip(edges, need_edges, exact_edges)):
            per_axis[d] = grad_e[start : start + e.numel()] if exact else torch.zeros_like(e, dtype=torch.float64) if need else None
            start += e.numel()
    return grad_x if need_x else None, grad_w if need_w else None, grad_h if need_h else None, per_axis


CPP_ENGINE = Engine(
    _forward, _backward, hard_histogram, reads_equal_width_edges=False, supports=lambda binning: native_unsupported(binning, OPTIONS),
)


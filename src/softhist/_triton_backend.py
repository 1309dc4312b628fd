"""Triton backend: fused forward and backward kernels, for every kernel and any ``D``.

Same contract as :mod:`._torch_backend` (``x: (rows, n, D)`` -> ``(rows, *bins)``) and
the same windows: along axis ``d`` a sample touches the ``K_d - 1`` bins of its window
(``K_d`` from :func:`._plan.window_edges`) and puts ``w * prod_d (F(z_hi) - F(z_lo))``
into each of its ``prod_d (K_d - 1)`` cells. The options of :data:`OPTIONS` change the
factors: centre membership takes ``Delta/h * f(centre)`` per bin, ``normalize_samples``
divides each axis's factors by their sum over the window's bins in the range, and the
Cauchy kernel (never cut) has the whole axis as its window. A program walks consecutive blocks of
samples; a block is a ``[BLOCK, CELLS]`` tile, one sample per row and one window cell per
column, so the kernel's CDF is evaluated only inside each sample's support.

Where the torch engine would take its sub-bin table (one axis, equal-width bins, float32
or narrower, many samples), the forward scatters each sample onto the table's grid in one
kernel (two adds per sample, spread over ``Q`` grid points per bin, so they rarely
contend) and applies the torch engine's exact matmul with bin masses. The backward is
always the fused window kernel.

Accumulation: a program adds its tiles into one of ``copies`` private partial histograms,
never into one shared histogram (contention on a few hundred addresses is what makes
per-sample atomics slow); the partials are summed afterwards. Under
``torch.use_deterministic_algorithms(True)`` each contribution is rounded to 64-bit fixed
point and added as an integer. Integer addition is exact and order-independent, so the
histogram and the edge gradients are bit-identical run to run. It costs one reduction and
a host sync to size the fixed point, and 64-bit integer atomics instead of float32 ones.

Under Triton's interpreter (``TRITON_INTERPRET=1``) the kernels run on CPU tensors, which
is how the test suite checks them against the torch backend without a GPU.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._plan import Binning, Engine, accumulation_dtype, native_unsupported, window_edges
from ._torch_backend import _plan_table, _Table, hard_histogram, table_histogram, table_stride

__all__ = ["TRITON_ENGINE", "unavailable_reason"]

NAME = "triton"  # the backend= value that selects this engine

_TILE = 2048  # elements of a [BLOCK, CELLS] tile: BLOCK samples by CELLS of their window cells
_MAX_CELLS = 256  # wider windows take several tiles
_MAX_EDGES = 64  # windows of up to this many edges evaluate the kernel once per edge
_PARTIAL_BYTES = 64 << 20  # memory for the private partial histograms (or edge gradients)
_PROGRAMS_PER_SM = 4
_FIXED_POINT_BITS = 60  # 2 bits of headroom in int64 for rounding and sign


def unavailable_reason(x: Tensor) -> Optional[str]:
    """Why these kernels cannot run on ``x``'s device, or None when they can."""
    interpreted = not isinstance(_forward_kernel, triton.runtime.JITFunction)  # TRITON_INTERPRET=1 at import
    if x.is_cuda and not interpreted:
        return None
    if x.device.type == "cpu" and interpreted:
        return None
    if x.device.type == "cpu":
        return (
            "the input is on cpu; Triton kernels run on CUDA tensors "
            "(or on CPU tensors under Triton's interpreter: set TRITON_INTERPRET=1 before importing triton)"
        )
    return f"the input is on {x.device}; Triton kernels run on CUDA tensors"


# --------------------------------------------------------------------------- device functions

# The kernel table of ``kernels.py``, in Triton. ``z`` is in standard deviations; ``support``
# is the table's ``T`` (the Gaussian and logistic are cut there and renormalized). A kernel is
# a small integer constexpr (``_KERNEL_CODES``); a launch packs one per axis, 4 bits each.
_KERNEL_CODES = {"gaussian": 0, "logistic": 1, "box": 2, "triangular": 3, "epanechnikov": 4, "bspline": 5, "bspline2": 6, "cauchy": 7}

# The options of ``Binning.options`` these kernels have beyond bin-integrated compact or cut kernels.
OPTIONS = frozenset({"membership='center'", "normalize_samples=True", "kernel='cauchy'"})


@triton.jit
def _tanh(y):
    e = tl.exp(-2.0 * tl.abs(y))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(y < 0, -t, t)


@triton.jit
def _atan(y):
    """arctan to float64 rounding (Cephes' ``atan``): for ``|y| > tan(3 pi/8)``, pi/2 - atan(1/|y|);
    for ``|y| > 0.66``, pi/4 + atan((|y| - 1)/(|y| + 1)); then ``t + t^3 P(t^2)/Q(t^2)`` on the
    reduced ``|t| <= 0.66`` (Cephes' coefficients: relative error about 2e-16)."""
    a = tl.abs(y)
    big = a > 2.414213562373095
    middle = (a > 0.66) & ~big
    t = tl.where(big, -1.0 / tl.where(big, a, 1.0), tl.where(middle, (a - 1.0) / (a + 1.0), a))
    zero = tl.zeros_like(a)  # constants typed as y (a where of two Python floats would be float32)
    base = tl.where(big, zero + 1.5707963267948966, tl.where(middle, zero + 0.7853981633974483, zero))
    z = t * t
    p = ((-8.750608600031904e-1 * z - 1.615753718733365e1) * z - 7.500855792314705e1) * z - 1.228866684490136e2
    p = p * z - 6.485021904942025e1
    q = (((z + 2.485846490142306e1) * z + 1.650270098316989e2) * z + 4.328810604912903e2) * z + 4.853903996359137e2
    q = q * z + 1.945506571482614e2
    r = base + (t + t * z * p / q)
    return tl.where(y < 0, -r, r)


@triton.jit
def _cdf(z, support, KERNEL: tl.constexpr):
    if KERNEL == 0:  # gaussian
        t = tl.minimum(tl.maximum(z, -support), support)
        return tl.math.erf(t * 0.7071067811865476) / (2.0 * tl.math.erf(support * 0.7071067811865476)) + 0.5
    elif KERNEL == 1:  # logistic, scale s = sqrt(3)/pi; 0.5/s = 0.9068996821171089
        t = tl.minimum(tl.maximum(z, -support), support)
        return _tanh(t * 0.9068996821171089) / (2.0 * _tanh(support * 0.9068996821171089)) + 0.5
    elif KERNEL == 2:  # box, a = sqrt(3)
        return tl.minimum(tl.maximum((z + 1.7320508075688772) / 3.4641016151377544, 0.0), 1.0)
    elif KERNEL == 3:  # triangular, a = sqrt(6)
        t = tl.minimum(tl.maximum(z / 2.449489742783178, -1.0), 1.0)
        return 0.5 + t - 0.5 * t * tl.abs(t)
    elif KERNEL == 4:  # epanechnikov, a = sqrt(5)
        t = tl.minimum(tl.maximum(z / 2.23606797749979, -1.0), 1.0)
        return 0.5 + 0.75 * t - 0.25 * t * t * t
    elif KERNEL == 5:  # cubic B-spline, knot spacing b = sqrt(3)
        a = tl.minimum(tl.abs(z) / 1.7320508075688772, 2.0)
        inner = a * (2.0 / 3.0 - a * a / 3.0 + a * a * a / 8.0)
        outer = 0.5 - (2.0 - a) * (2.0 - a) * (2.0 - a) * (2.0 - a) / 24.0
        half = tl.where(a < 1.0, inner, outer)
        return 0.5 + tl.where(z < 0, -half, tl.where(z > 0, half, 0.0))
    elif KERNEL == 6:  # quadratic B-spline, knot spacing b = 2
        t = tl.minimum(tl.abs(z) * 0.5, 1.5)
        inner = t * (0.75 - t * t / 3.0)
        outer = 0.5 - (1.5 - t) * (1.5 - t) * (1.5 - t) / 6.0
        half = tl.where(t < 0.5, inner, outer)
        return 0.5 + tl.where(z < 0, -half, tl.where(z > 0, half, 0.0))
    else:  # Cauchy, never cut: 1/2 + atan(z) / pi
        tl.static_assert(KERNEL == 7, "a kernel of kernels.py has no Triton version")
        return 0.5 + _atan(z) * 0.3183098861837907


@triton.jit
def _pdf(z, support, KERNEL: tl.constexpr):
    if KERNEL == 0:  # gaussian
        inside = tl.abs(z) < support
        peak = 0.7978845608028654 / (2.0 * tl.math.erf(support * 0.7071067811865476))  # 2 / sqrt(2 pi) / (2 g(T))
        return tl.where(inside, peak * tl.exp(-0.5 * z * z), 0.0)
    elif KERNEL == 1:  # logistic
        inside = tl.abs(z) < support
        e = tl.exp(-2.0 * tl.abs(z) * 0.9068996821171089)
        sech2 = 4.0 * e / ((1.0 + e) * (1.0 + e))
        return tl.where(inside, 0.9068996821171089 * sech2 / (2.0 * _tanh(support * 0.9068996821171089)), 0.0)
    elif KERNEL == 2:  # box
        return (tl.abs(z) < 1.7320508075688772).to(z.dtype) * (0.5 / 1.7320508075688772)
    elif KERNEL == 3:  # triangular
        return tl.maximum(1.0 - tl.abs(z / 2.449489742783178), 0.0) / 2.449489742783178
    elif KERNEL == 4:  # epanechnikov
        t = z / 2.23606797749979
        return (0.75 / 2.23606797749979) * tl.maximum(1.0 - t * t, 0.0)
    elif KERNEL == 5:  # cubic B-spline
        a = tl.abs(z) / 1.7320508075688772
        inner = 2.0 / 3.0 - a * a + 0.5 * a * a * a
        rest = tl.maximum(2.0 - a, 0.0)
        return tl.where(a < 1.0, inner, rest * rest * rest / 6.0) / 1.7320508075688772
    elif KERNEL == 6:  # quadratic B-spline
        t = tl.abs(z) * 0.5
        rest = tl.maximum(1.5 - t, 0.0)
        return tl.where(t < 0.5, 0.75 - t * t, 0.5 * rest * rest) * 0.5
    else:  # Cauchy: 1 / (pi (1 + z^2))
        tl.static_assert(KERNEL == 7, "a kernel of kernels.py has no Triton version")
        return 0.3183098861837907 / (1.0 + z * z)


@triton.jit
def _dpdf(z, support, KERNEL: tl.constexpr):
    """f'(z), the density's derivative (0 where the density is flat or cut, and at its kinks'
    z = 0, as torch differentiates kernels.py's densities): what centre membership's gradients need."""
    sign = (z > 0).to(z.dtype) - (z < 0).to(z.dtype)
    if KERNEL == 0:  # gaussian: f' = -z f
        return -z * _pdf(z, support, KERNEL)
    elif KERNEL == 1:  # logistic, f = c sech^2(a z): f' = -2a tanh(a z) f
        return -2.0 * 0.9068996821171089 * _tanh(z * 0.9068996821171089) * _pdf(z, support, KERNEL)
    elif KERNEL == 2:  # box: flat
        return z * 0.0
    elif KERNEL == 3:  # triangular, a = sqrt(6): f = (1 - |z|/a)/a
        return tl.where(tl.abs(z) < 2.449489742783178, -sign / 6.0, 0.0)
    elif KERNEL == 4:  # epanechnikov, a = sqrt(5): f = (3/4a)(1 - z^2/a^2)
        return tl.where(tl.abs(z) < 2.23606797749979, (-1.5 / (5.0 * 2.23606797749979)) * z, 0.0)
    elif KERNEL == 5:  # cubic B-spline, a = |z|/b: d/da of 2/3 - a^2 + a^3/2 (a < 1) and (2 - a)^3/6 (a < 2), over b^2
        a = tl.abs(z) / 1.7320508075688772
        rest = tl.maximum(2.0 - a, 0.0)
        return sign * tl.where(a < 1.0, a * (1.5 * a - 2.0), -0.5 * rest * rest) / 3.0
    elif KERNEL == 6:  # quadratic B-spline, t = |z|/2: d/dt of 3/4 - t^2 (t < 1/2) and (3/2 - t)^2/2 (t < 3/2), over 4
        t = tl.abs(z) * 0.5
        rest = tl.maximum(1.5 - t, 0.0)
        return sign * tl.where(t < 0.5, -2.0 * t, -rest) * 0.25
    else:  # Cauchy: f' = -2 z / (pi (1 + z^2)^2)
        tl.static_assert(KERNEL == 7, "a kernel of kernels.py has no Triton version")
        u = 1.0 + z * z
        return -0.6366197723675814 * z / (u * u)


# Per-axis parameters, one row per axis in two small tensors (see ``_Launch``).
_INT_FIELDS = 6  # bins, window bins, cell stride in the window block, histogram stride, edge offset, search steps
_FLOAT_FIELDS = 5  # lo (first edge), bins per unit (uniform axes), bandwidth h, reach T * h, the kernel's T


@triton.jit
def _count_at_most(edges_ptr, count, value, steps):
    """How many of the ``count`` sorted edges are ``<= value``: a branch-free binary search."""
    lo = tl.zeros(value.shape, dtype=tl.int64)
    hi = tl.zeros(value.shape, dtype=tl.int64) + count
    for _ in range(steps):
        active = lo < hi
        mid = (lo + hi) // 2
        right = active & (tl.load(edges_ptr + mid, mask=active, other=0.0) <= value)
        lo = tl.where(right, mid + 1, lo)
        hi = tl.where(active & ~right, mid, hi)
    return lo


@triton.jit
def _sample_column(x_ptr, sample, live, finite, axis_float_ptr, d: tl.constexpr, D: tl.constexpr, ACC: tl.constexpr):
    """Coordinate ``d`` of each sample, in the accumulation dtype; non-finite samples are parked
    at the axis's first edge (their weight is 0) so that their windows stay in bounds."""
    x = tl.load(x_ptr + sample * D + d, mask=live, other=0.0).to(ACC)
    return tl.where(finite, x, tl.load(axis_float_ptr + d * 5).to(ACC))


@triton.jit
def _axis_start(
    x, edges_ptr, axis_int_ptr, axis_float_ptr, d: tl.constexpr, UNIFORM: tl.constexpr, HARD: tl.constexpr, ACC: tl.constexpr,
):
    """Axis ``d`` of each sample's window: its first bin (``(BLOCK,)``, at or below ``x - T*h``;
    bins outside ``[0, bins)`` are virtual) and an anchor for ``z`` at its edges: on uniform
    axes ``z`` at the window's first edge, on others ``x`` itself.

    Uniform axes place edges arithmetically, ``e_j = lo + j * width``; other axes search
    the edges once per sample. A hard axis's window is the sample's own bin,
    ``e_k <= x < e_{k+1}`` (the last closed, as numpy), and its anchor is 1 where ``x`` is
    in the range, 0 elsewhere: the factor the sample's cells get along that axis.
    """
    bins = tl.load(axis_int_ptr + d * 6)
    reach = tl.load(axis_float_ptr + d * 5 + 3).to(ACC)
    if (HARD >> d) & 1:
        edges = edges_ptr + tl.load(axis_int_ptr + d * 6 + 4)
        count = _count_at_most(edges, bins + 1, x, tl.load(axis_int_ptr + d * 6 + 5))
        inside = (x >= tl.load(edges)) & (x <= tl.load(edges + bins))
        return tl.minimum(tl.maximum(count - 1, 0), bins - 1), inside.to(ACC)
    if (UNIFORM >> d) & 1:
        window = tl.load(axis_int_ptr + d * 6 + 1)
        lo = tl.load(axis_float_ptr + d * 5)  # float64, as the positions
        scale = tl.load(axis_float_ptr + d * 5 + 1)
        h = tl.load(axis_float_ptr + d * 5 + 2)
        # The position in bin widths in float64, as the torch and native engines compute it: in
        # float32, x - lo loses the sample's place on a narrow range far from 0, and u past 2^24
        # bins is not even an integer any more.
        u = (x.to(tl.float64) - lo) * scale
        # Starts at edge 0 or later: exact also for windows capped at all B + 1 edges.
        start = tl.minimum(tl.maximum(tl.floor(u - tl.load(axis_float_ptr + d * 5 + 3) * scale), 0.0), bins.to(tl.float64))
        # z = (start + q - u) * width / h: the fraction u - start (exact in float64), then in ACC.
        return start.to(tl.int64), ((u - start) * (-1.0 / (scale * h))).to(ACC)
    steps = tl.load(axis_int_ptr + d * 6 + 5)
    edge_offset = tl.load(axis_int_ptr + d * 6 + 4)
    count = _count_at_most(edges_ptr + edge_offset, bins + 1, x - reach, steps)
    return tl.minimum(tl.maximum(count - 2, 0), bins), x


@triton.jit
def _edge_value(
    q, first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr,
    d: tl.constexpr, UNIFORM: tl.constexpr, KERNEL: tl.constexpr, WHAT: tl.constexpr, ACC: tl.constexpr,
):
    """At window edge ``q`` (an int tensor broadcast against the samples): the kernel's CDF
    (``WHAT="cdf"``), its density over ``h`` (``"pdf"``), ``z`` times that (``"zpdf"``), ``z``
    itself (``"z"``) or the edge's index among all axes' edges (``"index"``). Non-uniform windows clamp to the
    last edge, whose repeats hold zero mass."""
    bins = tl.load(axis_int_ptr + d * 6)
    edge_offset = tl.load(axis_int_ptr + d * 6 + 4)
    h = tl.load(axis_float_ptr + d * 5 + 2).to(ACC)
    support = tl.load(axis_float_ptr + d * 5 + 4).to(ACC)  # this axis's kernel's T
    index = edge_offset + tl.minimum(tl.maximum(first[:, None] + q, 0), bins)
    if (UNIFORM >> d) & 1:
        z = anchor[:, None] + q.to(ACC) * (1.0 / (tl.load(axis_float_ptr + d * 5 + 1).to(ACC) * h))
    else:
        z = (tl.load(edges_ptr + index) - anchor[:, None]) / h
    if WHAT == "cdf":
        return _cdf(z, support, KERNEL)
    elif WHAT == "pdf":
        return _pdf(z, support, KERNEL) / h
    elif WHAT == "zpdf":
        return z * _pdf(z, support, KERNEL) / h
    elif WHAT == "z":
        return z
    else:
        return index


@triton.jit
def _at_cells(
    p, first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr,
    d: tl.constexpr, UNIFORM: tl.constexpr, KERNEL: tl.constexpr, WHAT: tl.constexpr, ACC: tl.constexpr,
    EDGES: tl.constexpr, BLOCK: tl.constexpr, CELLS: tl.constexpr,
):
    """``WHAT`` at the lower and upper edge of window bin ``p`` (``[1, CELLS]``) of each sample,
    ``[BLOCK, CELLS]`` each. Evaluated once per window edge and gathered onto the cells when the
    window fits a tile of ``EDGES`` edges (a 2-D cell shares its edges with its row and column);
    evaluated per cell otherwise (``EDGES = 0``, very wide windows)."""
    if EDGES > 0:
        values = _edge_value(
            tl.arange(0, EDGES)[None, :], first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr,
            d, UNIFORM, KERNEL, WHAT, ACC,
        )
        lower = tl.zeros([BLOCK, CELLS], dtype=tl.int32) + p.to(tl.int32)
        return tl.gather(values, lower, 1), tl.gather(values, lower + 1, 1)
    lower = _edge_value(p, first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr, d, UNIFORM, KERNEL, WHAT, ACC)
    upper = _edge_value(p + 1, first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr, d, UNIFORM, KERNEL, WHAT, ACC)
    return lower, upper


@triton.jit
def _window_bin(cell, axis_int_ptr, d: tl.constexpr):
    """Each cell's bin within the window along axis ``d`` (cells are row-major over the axes)."""
    return (cell // tl.load(axis_int_ptr + d * 6 + 2)) % tl.load(axis_int_ptr + d * 6 + 1)


# Centre membership: bin p holds a_p = s_p f(c_p) with s_p = Delta_p / h and c_p = (z_lo + z_hi)/2,
# the midpoint of its edges' z (so s_p = z_hi - z_lo). With dc/dx = -1/h, dc/dh = -c/h,
# ds/dh = -s/h, and the centre and width moving by 1/2 and -1 (lower edge) or +1 (upper):
#   da/dx = -s f'(c) / h,  da/dh = -s (f(c) + c f'(c)) / h,
#   da/de_lo = (-f(c) + s f'(c) / 2) / h,  da/de_hi = (f(c) + s f'(c) / 2) / h.
# Mass membership: a_p = F(z_hi) - F(z_lo) and dz/dx = -1/h, dz/dh = -z/h, dz/de = 1/h:
#   da/dx = -(f(z_hi) - f(z_lo)) / h,  da/dh = -(z_hi f(z_hi) - z_lo f(z_lo)) / h,
#   da/de_lo = -f(z_lo) / h,  da/de_hi = f(z_hi) / h.
@triton.jit
def _factor(
    p, first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr,
    d: tl.constexpr, UNIFORM: tl.constexpr, KERNEL: tl.constexpr, CENTER: tl.constexpr, WHAT: tl.constexpr, ACC: tl.constexpr,
    EDGES: tl.constexpr, BLOCK: tl.constexpr, CELLS: tl.constexpr,
):
    """Axis ``d``'s membership of window bin ``p`` (``[BLOCK or 1, CELLS]``) as the axis defines it
    (``CENTER``: at the bin's centre, else its mass), not normalized: the value ``a_p``
    (``WHAT="value"``) or its derivative in ``x`` (``"dx"``), ``h`` (``"dh"``), the bin's lower
    edge (``"lo"``) or its upper edge (``"hi"``), derived above."""
    if CENTER:
        z_lo, z_hi = _at_cells(
            p, first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr, d, UNIFORM, KERNEL, "z", ACC, EDGES, BLOCK, CELLS,
        )
        h = tl.load(axis_float_ptr + d * 5 + 2).to(ACC)
        support = tl.load(axis_float_ptr + d * 5 + 4).to(ACC)
        s = z_hi - z_lo
        c = 0.5 * (z_lo + z_hi)
        if WHAT == "value":
            return s * _pdf(c, support, KERNEL)
        elif WHAT == "dx":
            return -s * _dpdf(c, support, KERNEL) / h
        elif WHAT == "dh":
            return -s * (_pdf(c, support, KERNEL) + c * _dpdf(c, support, KERNEL)) / h
        elif WHAT == "lo":
            return (0.5 * s * _dpdf(c, support, KERNEL) - _pdf(c, support, KERNEL)) / h
        else:
            return (0.5 * s * _dpdf(c, support, KERNEL) + _pdf(c, support, KERNEL)) / h
    else:
        if WHAT == "value":
            lower, upper = _at_cells(
                p, first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr, d, UNIFORM, KERNEL, "cdf", ACC, EDGES, BLOCK, CELLS,
            )
            return upper - lower
        elif WHAT == "dh":
            lower, upper = _at_cells(
                p, first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr, d, UNIFORM, KERNEL, "zpdf", ACC, EDGES, BLOCK, CELLS,
            )
            return lower - upper
        else:
            lower, upper = _at_cells(
                p, first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr, d, UNIFORM, KERNEL, "pdf", ACC, EDGES, BLOCK, CELLS,
            )
            if WHAT == "dx":
                return lower - upper
            elif WHAT == "lo":
                return -lower
            else:
                return upper


@triton.jit
def _edge_factors(
    p, first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr,
    d: tl.constexpr, UNIFORM: tl.constexpr, KERNEL: tl.constexpr, CENTER: tl.constexpr, ACC: tl.constexpr,
    EDGES: tl.constexpr, BLOCK: tl.constexpr, CELLS: tl.constexpr,
):
    """Window bin ``p``'s derivatives in its lower and upper edge (:func:`_factor`'s ``"lo"`` and
    ``"hi"``) and those edges' indices, where the edge gradients add them."""
    lo = _factor(p, first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr, d, UNIFORM, KERNEL, CENTER, "lo", ACC, EDGES, BLOCK, CELLS)
    hi = _factor(p, first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr, d, UNIFORM, KERNEL, CENTER, "hi", ACC, EDGES, BLOCK, CELLS)
    e_lo, e_hi = _at_cells(p, first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr, d, UNIFORM, KERNEL, "index", ACC, EDGES, BLOCK, CELLS)
    return lo, hi, e_lo, e_hi


@triton.jit
def _axis_sums(
    first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr,
    d: tl.constexpr, UNIFORM: tl.constexpr, KERNEL: tl.constexpr, CENTER: tl.constexpr, DERIVATIVES: tl.constexpr,
    ACC: tl.constexpr, EDGES: tl.constexpr, BLOCK: tl.constexpr, CELLS: tl.constexpr,
):
    """Per-sample normalization along axis ``d``: ``S = sum_p a_p`` over the window's bins in the
    range (the cells a sample reaches are the product of its axes' bins, so their sum is the
    product of the axes' sums and normalizing each axis normalizes the cells), and, with
    ``DERIVATIVES``, ``sum_p da_p/dx`` and ``sum_p da_p/dh``: ``(BLOCK,)`` each."""
    bins = tl.load(axis_int_ptr + d * 6)
    window = tl.load(axis_int_ptr + d * 6 + 1)
    total = tl.zeros([BLOCK], dtype=ACC)
    total_dx = tl.zeros([BLOCK], dtype=ACC)
    total_dh = tl.zeros([BLOCK], dtype=ACC)
    for start in range(0, window, CELLS):
        p = start + tl.arange(0, CELLS)[None, :]
        valid = (p < window) & (first[:, None] + p < bins)
        p = tl.minimum(p, window - 1)  # inside the window's edges (masked past it)
        value = _factor(
            p, first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr,
            d, UNIFORM, KERNEL, CENTER, "value", ACC, EDGES, BLOCK, CELLS,
        )
        total += tl.sum(tl.where(valid, value, 0.0), axis=1)
        if DERIVATIVES:
            dx = _factor(
                p, first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr,
                d, UNIFORM, KERNEL, CENTER, "dx", ACC, EDGES, BLOCK, CELLS,
            )
            dh = _factor(
                p, first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr,
                d, UNIFORM, KERNEL, CENTER, "dh", ACC, EDGES, BLOCK, CELLS,
            )
            total_dx += tl.sum(tl.where(valid, dx, 0.0), axis=1)
            total_dh += tl.sum(tl.where(valid, dh, 0.0), axis=1)
    return total, total_dx, total_dh


@triton.jit
def _inverse(total):
    """``1/S``, and 0 where ``S = 0`` (a sample that reaches no cell adds nothing and gets zero gradients)."""
    return tl.where(total != 0, 1.0 / tl.where(total != 0, total, 1.0), 0.0)


@triton.jit
def _block_samples(
    x_ptr, w_ptr, block, total, n, cells, axis_float_ptr,
    D: tl.constexpr, HAS_WEIGHT: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr,
):
    """A block's sample indices (64-bit), which of them exist, which are finite, their weights
    (0 for non-finite samples) and the offset of their row's histogram."""
    sample = block * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    live = sample < total
    finite = live
    for d in tl.static_range(D):
        x = tl.load(x_ptr + sample * D + d, mask=live, other=0.0)
        finite = finite & (tl.abs(x) < float("inf"))  # False for NaN and +-inf
    if HAS_WEIGHT:
        weight = tl.load(w_ptr + sample, mask=live, other=0.0).to(ACC)
    else:
        weight = tl.full([BLOCK], 1.0, ACC)
    weight = tl.where(finite, weight, 0.0)
    return sample, live, finite, weight, (sample // n) * cells


@triton.jit
def _cells(
    x_ptr, sample, live, finite, cell, window_cells, edges_ptr, axis_int_ptr, axis_float_ptr, norm_ptr,
    SKIP: tl.constexpr, D: tl.constexpr, UNIFORM: tl.constexpr, KERNELS: tl.constexpr, HARD: tl.constexpr,
    CENTER: tl.constexpr, NORMALIZE: tl.constexpr, EDGES: tl.constexpr, BLOCK: tl.constexpr, CELLS: tl.constexpr,
    ACC: tl.constexpr,
):
    """For each ``[sample, cell]`` of a tile: the product of the per-axis memberships (masses,
    or densities at bin centres on the ``CENTER`` axes; divided by their sum over the window
    with ``NORMALIZE``: ``1/S`` from ``norm_ptr``, see ``_normalizers``) over every axis but
    ``SKIP`` (-1: all of them), the cell's offset in its row's histogram, and whether it is a
    real cell (inside the window and the range)."""
    mass = tl.full([BLOCK, CELLS], 1.0, ACC)
    target = tl.zeros([BLOCK, CELLS], dtype=tl.int64)
    keep = live[:, None] & (cell < window_cells)
    for d in tl.static_range(D):
        x = _sample_column(x_ptr, sample, live, finite, axis_float_ptr, d, D, ACC)
        first, anchor = _axis_start(x, edges_ptr, axis_int_ptr, axis_float_ptr, d, UNIFORM, HARD, ACC)
        p = _window_bin(cell, axis_int_ptr, d)
        if d != SKIP:
            if (HARD >> d) & 1:
                mass *= anchor[:, None]  # 1 in the sample's bin, 0 out of range (normalized already)
            elif ((CENTER >> d) & 1) | NORMALIZE:
                value = _factor(
                    p, first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr, d, UNIFORM, (KERNELS >> (4 * d)) & 15,
                    (CENTER >> d) & 1, "value", ACC, EDGES, BLOCK, CELLS,
                )
                if NORMALIZE:
                    value *= tl.load(norm_ptr + sample * D + d, mask=live, other=0.0)[:, None]
                mass *= value
            else:
                lower, upper = _at_cells(
                    p, first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr,
                    d, UNIFORM, (KERNELS >> (4 * d)) & 15, "cdf", ACC, EDGES, BLOCK, CELLS,
                )
                mass *= upper - lower
        bin = first[:, None] + p
        target += bin * tl.load(axis_int_ptr + d * 6 + 3)
        keep &= (bin >= 0) & (bin < tl.load(axis_int_ptr + d * 6))
    return mass, target, keep


@triton.jit
def _normalizers(
    x_ptr, sample, live, finite, edges_ptr, axis_int_ptr, axis_float_ptr, norm_ptr,
    D: tl.constexpr, UNIFORM: tl.constexpr, KERNELS: tl.constexpr, HARD: tl.constexpr, CENTER: tl.constexpr,
    EDGES: tl.constexpr, BLOCK: tl.constexpr, CELLS: tl.constexpr, ACC: tl.constexpr,
):
    """``1/S`` per sample and soft axis (``_axis_sums``; 0 where ``S = 0``) into ``norm_ptr``
    (``(samples, D)``), once per block: a window of several tiles reads it in each tile instead
    of summing the whole axis window again (a Cauchy window is the whole axis)."""
    for d in tl.static_range(D):
        if not ((HARD >> d) & 1):
            x = _sample_column(x_ptr, sample, live, finite, axis_float_ptr, d, D, ACC)
            first, anchor = _axis_start(x, edges_ptr, axis_int_ptr, axis_float_ptr, d, UNIFORM, HARD, ACC)
            total, _, _ = _axis_sums(
                first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr, d, UNIFORM, (KERNELS >> (4 * d)) & 15, (CENTER >> d) & 1,
                False, ACC, EDGES, BLOCK, CELLS,
            )
            tl.store(norm_ptr + sample * D + d, _inverse(total), mask=live)
    tl.debug_barrier()  # the tiles read these values from other threads than wrote them


@triton.jit
def _accumulate(ptr, value, mask, fixed_scale, FIXED_POINT: tl.constexpr):
    """Add into a partial buffer: floats, or 64-bit fixed point (exact, order-independent); or,
    with ``FIXED_POINT == 2``, keep the largest magnitude added there (exact, order-independent:
    the bound that sizes the fixed point where no formula bounds the values)."""
    if FIXED_POINT == 2:
        tl.atomic_max(ptr, tl.abs(value), mask=mask)
    elif FIXED_POINT:
        tl.atomic_add(ptr, tl.floor(value * fixed_scale + 0.5).to(tl.int64), mask=mask)
    else:
        tl.atomic_add(ptr, value, mask=mask)


@triton.jit
def _forward_kernel(
    x_ptr,  # (rows * n, D) samples, row-major, any float dtype
    w_ptr,  # (rows * n,) weights; read only when HAS_WEIGHT
    edges_ptr,  # every axis's edges, concatenated, in the accumulation dtype
    axis_int_ptr,  # (D, 6) int64 per-axis parameters (_INT_FIELDS)
    axis_float_ptr,  # (D, 5) float64 per-axis parameters (_FLOAT_FIELDS)
    out_ptr,  # (copies, rows * cells) partial histograms: accumulation dtype, or int64 fixed point
    norm_ptr,  # (rows * n, D) scratch for 1/S of normalized samples (when NORMALIZE)
    total, n, cells, window_cells, blocks_per_program, copies, fixed_scale,
    D: tl.constexpr, UNIFORM: tl.constexpr, KERNELS: tl.constexpr, HARD: tl.constexpr, HAS_WEIGHT: tl.constexpr,
    FIXED_POINT: tl.constexpr, CENTER: tl.constexpr, NORMALIZE: tl.constexpr, EDGES: tl.constexpr, BLOCK: tl.constexpr,
    CELLS: tl.constexpr,
):
    ACC: tl.constexpr = edges_ptr.dtype.element_ty
    pid = tl.program_id(0).to(tl.int64)
    partial = out_ptr + (pid % copies) * tl.cdiv(total, n) * cells
    for i in range(blocks_per_program):
        sample, live, finite, weight, row = _block_samples(
            x_ptr, w_ptr, pid * blocks_per_program + i, total, n, cells, axis_float_ptr, D, HAS_WEIGHT, BLOCK, ACC
        )
        if NORMALIZE:
            _normalizers(
                x_ptr, sample, live, finite, edges_ptr, axis_int_ptr, axis_float_ptr, norm_ptr,
                D, UNIFORM, KERNELS, HARD, CENTER, EDGES, BLOCK, CELLS, ACC,
            )
        for first_cell in range(0, window_cells, CELLS):  # wide windows take several tiles
            cell = first_cell + tl.arange(0, CELLS)[None, :]
            mass, target, keep = _cells(
                x_ptr, sample, live, finite, cell, window_cells, edges_ptr, axis_int_ptr, axis_float_ptr, norm_ptr,
                -1, D, UNIFORM, KERNELS, HARD, CENTER, NORMALIZE, EDGES, BLOCK, CELLS, ACC,
            )
            # A cell the kernel does not reach gets nothing, even from an infinite weight (0 * inf is NaN).
            _accumulate(partial + row[:, None] + target, tl.where(mass != 0, mass * weight[:, None], 0.0), keep, fixed_scale, FIXED_POINT)


@triton.jit
def _linear_binning_kernel(
    x_ptr,  # (rows * n,) samples, float32 or narrower
    w_ptr,  # (rows * n,) weights; read only when HAS_WEIGHT
    total_ptr,  # (rows * stride,) out: the weight at each grid point's cell (float64, or int64 fixed point)
    moment_ptr,  # (rows * stride,) out: the weight times t, the sample's position past that grid point
    grid_ptr,  # (2,) float64: the range's start lo and the bins per unit scale
    total, n, stride, pad, q, blocks_per_program, fixed_scale,
    HAS_WEIGHT: tl.constexpr, FIXED_POINT: tl.constexpr, BLOCK: tl.constexpr,
):
    """The table strategy's scatter (see ``_torch_backend``): two adds per sample, spread over
    ``Q`` grid points per bin, so they rarely contend; a matmul with exact bin masses follows."""
    pid = tl.program_id(0).to(tl.int64)
    for i in range(blocks_per_program):
        sample = (pid * blocks_per_program + i) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
        live = sample < total
        x = tl.load(x_ptr + sample, mask=live, other=0.0).to(tl.float64)
        # The same float64 arithmetic as the torch engine (_torch_backend._table_positions).
        grid = ((x - tl.load(grid_ptr)) * tl.load(grid_ptr + 1) + pad) * q
        valid = live & (grid >= 0) & (grid < stride - 1)  # False for NaN and samples beyond every support
        k = tl.where(valid, tl.floor(grid), 0.0)
        t = tl.where(valid, grid - k, 0.0).to(tl.float32)
        if HAS_WEIGHT:
            weight = tl.load(w_ptr + sample, mask=live, other=0.0).to(tl.float32)
        else:
            weight = tl.full([BLOCK], 1.0, tl.float32)
        point = (sample // n) * stride + k.to(tl.int64)
        _accumulate(total_ptr + point, weight.to(tl.float64), valid, fixed_scale, FIXED_POINT)
        _accumulate(moment_ptr + point, (weight * t).to(tl.float64), valid, fixed_scale, FIXED_POINT)


# VJP. A sample of weight w puts c = w * prod_d a_d into each window cell, with
# a_d = F(z_hi) - F(z_lo) and z = (e - x_d) / h_d. With g = dL/dc gathered at the cell and
# O_d = g * w * prod_{e != d} a_e (the cell's gradient with respect to a_d):
#   dz/dx_d = -1/h  =>  dL/dx_d = -sum_cells O_d * (f(z_hi) - f(z_lo)) / h
#   dz/dh_d = -z/h  =>  dL/dh_d = -sum_samples sum_cells O_d * (f(z_hi) z_hi - f(z_lo) z_lo) / h
#   dz/de   =  1/h  =>  dL/de_hi += O_d f(z_hi) / h,  dL/de_lo -= O_d f(z_lo) / h
#   dL/dw = sum_cells g * prod_d a_d.
# Centre membership and normalized samples take each axis's a_p and derivatives da_p/dt from
# _factor. Normalized, n_p = a_p / S with S = sum_q a_q over the axis's window (_axis_sums); the
# quotient rule, for t = x or h: dn_p/dt = (da_p/dt - n_p sum_q da_q/dt) / S, cell by cell. An
# edge e_q moves bin q - 1 (its upper edge), bin q (its lower edge) and S through both:
#   dL/de_q = sum_cells O_d (da_p/de_q) / S - Abar (da_{q-1}/de_q + da_q/de_q) / S,
# with Abar = sum_cells O_d n_p (the sample's share, w included): the first sum is scattered
# cell by cell, the second once the tiles have summed Abar, over the window's bins.
# x and w gradients are written once per sample; h gradients are summed per block and written
# to that block's slot; edge gradients are scattered into partials like the forward histogram.
@triton.jit
def _backward_kernel(
    x_ptr,  # (rows * n, D) samples
    w_ptr,  # (rows * n,) weights; read only when HAS_WEIGHT
    edges_ptr,  # concatenated edges, accumulation dtype
    axis_int_ptr,  # (D, 6) int64 per-axis parameters
    axis_float_ptr,  # (D, 5) float64 per-axis parameters (_FLOAT_FIELDS)
    grad_ptr,  # (rows * cells,) dL/dhistogram, accumulation dtype
    grad_x_ptr,  # (rows * n, D) out: dL/dx, accumulation dtype (written when NEED_X)
    grad_w_ptr,  # (rows * n,) out: dL/dw (written when NEED_W)
    grad_h_ptr,  # (blocks, D) out: each block's share of dL/dh (written when NEED_H)
    grad_e_ptr,  # (copies, edges) partial dL/dedges: accumulation dtype or int64 fixed point (when NEED_E)
    norm_ptr,  # (rows * n, D) scratch for 1/S of normalized samples (when NORMALIZE)
    total, n, cells, window_cells, blocks_per_program, copies, edge_count, fixed_scale,
    D: tl.constexpr, UNIFORM: tl.constexpr, KERNELS: tl.constexpr, HARD: tl.constexpr, HAS_WEIGHT: tl.constexpr,
    FIXED_POINT: tl.constexpr, CENTER: tl.constexpr, NORMALIZE: tl.constexpr, NEED_X: tl.constexpr, NEED_W: tl.constexpr,
    NEED_H: tl.constexpr, NEED_E: tl.constexpr, EDGES: tl.constexpr, BLOCK: tl.constexpr, CELLS: tl.constexpr,
):
    ACC: tl.constexpr = edges_ptr.dtype.element_ty
    pid = tl.program_id(0).to(tl.int64)
    edge_partial = grad_e_ptr + (pid % copies) * edge_count
    for i in range(blocks_per_program):
        block = pid * blocks_per_program + i
        sample, live, finite, weight, row = _block_samples(
            x_ptr, w_ptr, block, total, n, cells, axis_float_ptr, D, HAS_WEIGHT, BLOCK, ACC
        )
        if NORMALIZE and (NEED_W or D > 1):  # what _cells reads (the axis being differentiated sums its own)
            _normalizers(
                x_ptr, sample, live, finite, edges_ptr, axis_int_ptr, axis_float_ptr, norm_ptr,
                D, UNIFORM, KERNELS, HARD, CENTER, EDGES, BLOCK, CELLS, ACC,
            )
        if NEED_W:
            grad_w = tl.zeros([BLOCK], dtype=ACC)
            for first_cell in range(0, window_cells, CELLS):
                cell = first_cell + tl.arange(0, CELLS)[None, :]
                mass, target, keep = _cells(
                    x_ptr, sample, live, finite, cell, window_cells, edges_ptr, axis_int_ptr, axis_float_ptr, norm_ptr,
                    -1, D, UNIFORM, KERNELS, HARD, CENTER, NORMALIZE, EDGES, BLOCK, CELLS, ACC,
                )
                g = tl.load(grad_ptr + row[:, None] + target, mask=keep, other=0.0)  # 0 on virtual bins
                grad_w += tl.sum(g * mass, axis=1)
            tl.store(grad_w_ptr + sample, tl.where(finite, grad_w, 0.0), mask=live)
        for d in tl.static_range(D):
            if (HARD >> d) & 1:  # a hard axis passes no gradient to its coordinate, edges or bandwidth
                if NEED_X:
                    tl.store(grad_x_ptr + sample * D + d, tl.zeros([BLOCK], dtype=ACC), mask=live)
            elif (((CENTER >> d) & 1) | NORMALIZE) and (NEED_X or NEED_H or ((NEED_E >> d) & 1)):
                x = _sample_column(x_ptr, sample, live, finite, axis_float_ptr, d, D, ACC)
                first, anchor = _axis_start(x, edges_ptr, axis_int_ptr, axis_float_ptr, d, UNIFORM, HARD, ACC)
                inverse = tl.full([BLOCK], 1.0, ACC)
                sum_dx = tl.zeros([BLOCK], dtype=ACC)
                sum_dh = tl.zeros([BLOCK], dtype=ACC)
                if NORMALIZE:
                    sum_a, sum_dx, sum_dh = _axis_sums(
                        first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr, d, UNIFORM, (KERNELS >> (4 * d)) & 15,
                        (CENTER >> d) & 1, NEED_X or NEED_H,
                        ACC, EDGES, BLOCK, CELLS,
                    )
                    inverse = _inverse(sum_a)
                grad_x = tl.zeros([BLOCK], dtype=ACC)
                grad_h = tl.zeros([BLOCK], dtype=ACC)
                share = tl.zeros([BLOCK], dtype=ACC)  # Abar
                for first_cell in range(0, window_cells, CELLS):
                    cell = first_cell + tl.arange(0, CELLS)[None, :]
                    others, target, keep = _cells(
                        x_ptr, sample, live, finite, cell, window_cells, edges_ptr, axis_int_ptr, axis_float_ptr, norm_ptr,
                        d, D, UNIFORM, KERNELS, HARD, CENTER, NORMALIZE, EDGES, BLOCK, CELLS, ACC,
                    )
                    g = tl.load(grad_ptr + row[:, None] + target, mask=keep, other=0.0)
                    others = others * g * weight[:, None]
                    p = _window_bin(cell, axis_int_ptr, d)
                    scale = inverse[:, None]
                    if NORMALIZE:
                        normalized = _factor(
                            p, first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr, d, UNIFORM, (KERNELS >> (4 * d)) & 15,
                            (CENTER >> d) & 1, "value", ACC, EDGES, BLOCK, CELLS,
                        ) * scale
                        share += tl.sum(others * normalized, axis=1)
                    else:
                        normalized = tl.zeros([BLOCK, CELLS], dtype=ACC)
                    if NEED_X:
                        dx = _factor(
                            p, first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr, d, UNIFORM, (KERNELS >> (4 * d)) & 15,
                            (CENTER >> d) & 1, "dx", ACC, EDGES, BLOCK, CELLS,
                        )
                        grad_x += tl.sum(others * (dx - normalized * sum_dx[:, None]) * scale, axis=1)
                    if NEED_H:
                        dh = _factor(
                            p, first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr, d, UNIFORM, (KERNELS >> (4 * d)) & 15,
                            (CENTER >> d) & 1, "dh", ACC, EDGES, BLOCK, CELLS,
                        )
                        grad_h += tl.sum(others * (dh - normalized * sum_dh[:, None]) * scale, axis=1)
                    if (NEED_E >> d) & 1:
                        lo, hi, e_lo, e_hi = _edge_factors(
                            p, first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr, d, UNIFORM, (KERNELS >> (4 * d)) & 15,
                            (CENTER >> d) & 1, ACC, EDGES, BLOCK, CELLS,
                        )
                        _accumulate(edge_partial + e_lo, others * lo * scale, keep, fixed_scale, FIXED_POINT)
                        _accumulate(edge_partial + e_hi, others * hi * scale, keep, fixed_scale, FIXED_POINT)
                if NORMALIZE and ((NEED_E >> d) & 1):  # -Abar (da_{q-1}/de_q + da_q/de_q) / S, bin by bin
                    bins = tl.load(axis_int_ptr + d * 6)
                    window = tl.load(axis_int_ptr + d * 6 + 1)
                    spread = -(share * inverse)[:, None]
                    for start in range(0, window, CELLS):
                        p = start + tl.arange(0, CELLS)[None, :]
                        valid = live[:, None] & (p < window) & (first[:, None] + p < bins)
                        p = tl.minimum(p, window - 1)
                        lo, hi, e_lo, e_hi = _edge_factors(
                            p, first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr, d, UNIFORM, (KERNELS >> (4 * d)) & 15,
                            (CENTER >> d) & 1, ACC, EDGES, BLOCK, CELLS,
                        )
                        _accumulate(edge_partial + e_lo, spread * lo, valid, fixed_scale, FIXED_POINT)
                        _accumulate(edge_partial + e_hi, spread * hi, valid, fixed_scale, FIXED_POINT)
                if NEED_X:
                    tl.store(grad_x_ptr + sample * D + d, grad_x, mask=live)
                if NEED_H:
                    tl.store(grad_h_ptr + block * D + d, tl.sum(grad_h, axis=0))
            elif NEED_X or NEED_H or ((NEED_E >> d) & 1):
                x = _sample_column(x_ptr, sample, live, finite, axis_float_ptr, d, D, ACC)
                first, anchor = _axis_start(x, edges_ptr, axis_int_ptr, axis_float_ptr, d, UNIFORM, HARD, ACC)
                grad_x = tl.zeros([BLOCK], dtype=ACC)
                grad_h = tl.zeros([BLOCK], dtype=ACC)
                for first_cell in range(0, window_cells, CELLS):
                    cell = first_cell + tl.arange(0, CELLS)[None, :]
                    others, target, keep = _cells(
                        x_ptr, sample, live, finite, cell, window_cells, edges_ptr, axis_int_ptr, axis_float_ptr, norm_ptr,
                        d, D, UNIFORM, KERNELS, HARD, CENTER, NORMALIZE, EDGES, BLOCK, CELLS, ACC,
                    )
                    g = tl.load(grad_ptr + row[:, None] + target, mask=keep, other=0.0)
                    others = others * g * weight[:, None]
                    p = _window_bin(cell, axis_int_ptr, d)
                    f_lo, f_hi = _at_cells(
                        p, first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr,
                        d, UNIFORM, (KERNELS >> (4 * d)) & 15, "pdf", ACC, EDGES, BLOCK, CELLS,
                    )
                    grad_x -= tl.sum(others * (f_hi - f_lo), axis=1)
                    if NEED_H:
                        zf_lo, zf_hi = _at_cells(
                            p, first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr,
                            d, UNIFORM, (KERNELS >> (4 * d)) & 15, "zpdf", ACC, EDGES, BLOCK, CELLS,
                        )
                        grad_h -= tl.sum(others * (zf_hi - zf_lo), axis=1)
                    if (NEED_E >> d) & 1:
                        e_lo, e_hi = _at_cells(
                            p, first, anchor, edges_ptr, axis_int_ptr, axis_float_ptr,
                            d, UNIFORM, (KERNELS >> (4 * d)) & 15, "index", ACC, EDGES, BLOCK, CELLS,
                        )
                        _accumulate(edge_partial + e_hi, others * f_hi, keep, fixed_scale, FIXED_POINT)
                        _accumulate(edge_partial + e_lo, -(others * f_lo), keep, fixed_scale, FIXED_POINT)
                if NEED_X:
                    tl.store(grad_x_ptr + sample * D + d, grad_x, mask=live)
                if NEED_H:
                    tl.store(grad_h_ptr + block * D + d, tl.sum(grad_h, axis=0))


# --------------------------------------------------------------------------- launchers


def _device_of(x: Tensor):
    """Triton launches on the current CUDA device: make it ``x``'s for the launch."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def _programs(samples: int, block: int, device: torch.device) -> Tuple[int, int]:
    """How many programs to launch, and how many consecutive blocks of samples each one walks."""
    blocks = max(1, triton.cdiv(samples, block))
    if device.type == "cuda":
        most = torch.cuda.get_device_properties(device).multi_processor_count * _PROGRAMS_PER_SM
    else:  # the interpreter runs programs one after another: few programs, long loops
        most = 4
    per_program = triton.cdiv(blocks, min(blocks, most))
    return triton.cdiv(blocks, per_program), per_program


@functools.lru_cache(maxsize=64)
def _axis_parameters(
    binning: Binning,
    windows: Tuple[int, ...],
    edge_offsets: Tuple[int, ...],
    firsts: Tuple[Optional[float], ...],
    acc: torch.dtype,
    device: torch.device,
) -> Tuple[Tensor, Tensor]:
    """The per-axis parameter tensors (``_INT_FIELDS``, ``_FLOAT_FIELDS``), cached: building them
    copies host memory to the device, which waits for the stream, once per call otherwise.
    ``firsts`` holds the first edge of each non-uniform axis (None for uniform axes)."""
    shape = binning.shape
    axis_int, axis_float = [], []
    for d, (axis, first) in enumerate(zip(binning.axes, firsts)):
        steps = math.ceil(math.log2(axis.bins + 2))  # of the binary search over B + 1 edges
        axis_int.append([axis.bins, windows[d], math.prod(windows[d + 1 :]), math.prod(shape[d + 1 :]), edge_offsets[d], steps])
        lo, scale = (axis.uniform[0], axis.scale) if first is None else (first, 1.0)
        support = binning.kernels[d].support
        axis_float.append([lo, scale, axis.bandwidth, support * axis.bandwidth, support])
    return (
        torch.tensor(axis_int, dtype=torch.int64, device=device),
        torch.tensor(axis_float, dtype=torch.float64, device=device),  # positions are computed in float64
    )


@dataclass
class _Launch:
    """Grid, per-axis parameter tensors and constexprs shared by the forward and backward launches."""

    x: Tensor  # (rows * n, D), contiguous
    weight: Optional[Tensor]
    edges: Tensor  # concatenated edges, accumulation dtype
    edge_offsets: Tuple[int, ...]
    windows: List[int]  # window bins per axis
    axis_int: Tensor
    axis_float: Tensor
    rows: int
    n: int
    cells: int  # histogram cells per row
    window_cells: int
    programs: int
    blocks_per_program: int
    meta: dict  # constexprs and compile options

    @staticmethod
    def plan(x: Tensor, weight: Optional[Tensor], edges: Sequence[Tensor], binning: Binning) -> "_Launch":
        rows, n, dims = x.shape
        # Normalized samples divide by their sum S, which is tiny for a sample whose support barely
        # reaches the range: float32 masses there (F(z_hi) - F(z_lo) near 0 or 1) keep too few digits
        # after the division, so these calls compute in float64 (results come back in the call's dtype).
        acc = torch.float64 if binning.normalize_samples else accumulation_dtype(x.dtype)
        edges = [e.detach().to(acc) for e in edges]
        kernels = [None if hard else k for k, hard in zip(binning.kernels, binning.hard_axes)]
        windows = [window_edges(axis, k, e) - 1 for axis, k, e in zip(binning.axes, kernels, edges)]  # bins per window
        shape = binning.shape
        offsets = tuple(sum(e.numel() for e in edges[:d]) for d in range(dims))
        firsts = tuple(None if axis.uniform is not None else float(e[0]) for axis, e in zip(binning.axes, edges))
        axis_int, axis_float = _axis_parameters(binning, tuple(windows), offsets, firsts, acc, x.device)
        uniform = sum(1 << d for d, axis in enumerate(binning.axes) if axis.uniform is not None)
        total = rows * n
        window_cells = math.prod(windows)
        cells_padded = min(triton.next_power_of_2(window_cells), _MAX_CELLS)
        block = max(16, _TILE // cells_padded)
        programs, per_program = _programs(total, block, x.device)
        widest = max(windows) + 1
        edges_tile = triton.next_power_of_2(widest) if widest <= _MAX_EDGES else 0
        return _Launch(
            x=x.reshape(total, dims).contiguous(),
            weight=None if weight is None else weight.reshape(total).contiguous(),
            edges=torch.cat(edges).contiguous(),
            edge_offsets=offsets,
            windows=windows,
            axis_int=axis_int,
            axis_float=axis_float,
            rows=rows, n=max(n, 1), cells=math.prod(shape), window_cells=window_cells,
            programs=programs, blocks_per_program=per_program,
            meta=dict(
                D=dims, UNIFORM=uniform, KERNELS=sum(_KERNEL_CODES[k.name] << (4 * d) for d, k in enumerate(binning.kernels)),
                HARD=sum(1 << d for d, hard in enumerate(binning.hard_axes) if hard), HAS_WEIGHT=weight is not None,
                FIXED_POINT=int(torch.are_deterministic_algorithms_enabled()),
                CENTER=sum(1 << d for d, axis in enumerate(binning.axes) if axis.membership == "center"),
                NORMALIZE=int(binning.normalize_samples), EDGES=edges_tile, BLOCK=block, CELLS=cells_padded,
                enable_fp_fusion=True,  # fused multiply-adds, said explicitly (Triton's default is changing)
            ),
        )

    @property
    def total(self) -> int:
        return self.x.shape[0]

    @property
    def fixed_point(self) -> bool:
        return self.meta["FIXED_POINT"]

    def scratch(self) -> Tensor:
        """The kernels' ``(samples, D)`` scratch for normalized samples' ``1/S`` (else a placeholder)."""
        if not self.meta["NORMALIZE"]:
            return self.edges
        return torch.empty(self.total * self.meta["D"], dtype=self.edges.dtype, device=self.x.device)

    def copies(self, slots: int) -> int:
        """Private partial buffers of ``slots`` entries: one per program, within a memory budget."""
        return max(1, min(self.programs, _PARTIAL_BYTES // (8 * max(slots, 1))))

    def partials(self, copies: int, slots: int, fixed_point: Optional[bool] = None) -> Tensor:
        dtype = torch.int64 if (self.fixed_point if fixed_point is None else fixed_point) else self.edges.dtype
        return torch.zeros(copies, slots, dtype=dtype, device=self.x.device)

    def merge(self, partials: Tensor, scale: float) -> Tensor:
        """Sum the partials in float64 (exactly, as integers, in fixed point)."""
        if self.fixed_point:
            return partials.sum(0).to(torch.float64) / scale
        return partials.sum(0, dtype=torch.float64)


def _fixed_point_scale(bound: float) -> float:
    """``2**s`` such that values summing to at most ``bound`` in magnitude fit in int64.

    A non-finite bound (infinite weights or gradients) gives non-finite results either way.
    """
    if not (math.isfinite(bound) and bound > 0):
        return 1.0
    return 2.0 ** (_FIXED_POINT_BITS - math.ceil(math.log2(bound)))


def _weight_bound(weight: Optional[Tensor], samples: int) -> float:
    """Sum of the weights' magnitudes: bounds every cell, since a sample's cell masses sum to <= 1."""
    if weight is None:
        return float(samples)
    return float(weight.detach().abs().sum(dtype=torch.float64))


def _membership_bound(launch: "_Launch", binning: Binning) -> float:
    """A bound on a sample's cells' sum per unit of weight: 1 for masses and normalized samples.
    A centre axis sums ``s_p f(c_p)`` with ``s_p = Delta_p / h``: on either side of the mode ``f``
    is monotone, so ``s_p f(c_p) = 2 (hi_p - c_p) f(c_p) / h <= 2 int_{c_p}^{hi_p} f`` (or from
    ``lo_p`` on the falling side), and the bin holding the mode adds at most ``s_max f(0)``:
    ``sum_p s_p f(c_p) <= 2 + s_max f(0)``; the cells' sum is the product of the axes' sums."""
    if binning.normalize_samples:
        return 1.0
    bound = 1.0
    for d, (axis, kernel, hard) in enumerate(zip(binning.axes, binning.kernels, binning.hard_axes)):
        if axis.membership == "center" and not hard:
            if axis.uniform is not None:
                widest = 1.0 / axis.scale
            else:
                start = launch.edge_offsets[d]
                widest = float(launch.edges[start : start + axis.bins + 1].diff().max())
            bound *= 2.0 + widest / axis.bandwidth * float(kernel.pdf(torch.zeros((), dtype=torch.float64)))
    return bound


@functools.lru_cache(maxsize=64)
def _grid_parameters(lo: float, scale: float, device: torch.device) -> Tensor:
    """``[lo, scale]`` in float64 on the device, cached (a host-to-device copy waits for the stream)."""
    return torch.tensor([lo, scale], dtype=torch.float64, device=device)


def _table_forward(x: Tensor, weight: Optional[Tensor], binning: Binning, table: _Table) -> Tensor:
    """One axis, equal-width bins, float32 or narrower: linear binning onto the sub-bin grid in one
    kernel, then the torch engine's exact matmul with bin masses."""
    rows, n, _ = x.shape
    axis = binning.axes[0]
    stride = table_stride(table, axis)
    fixed_point = torch.are_deterministic_algorithms_enabled()
    dtype = torch.int64 if fixed_point else torch.float64
    total = torch.zeros(rows * stride, dtype=dtype, device=x.device)
    moment = torch.zeros(rows * stride, dtype=dtype, device=x.device)
    samples = x.numel()
    flat_w = None if weight is None else weight.reshape(-1).contiguous()
    scale = _fixed_point_scale(_weight_bound(flat_w, samples)) if fixed_point else 1.0
    programs, per_program = _programs(samples, _TILE, x.device)
    with _device_of(x):
        _linear_binning_kernel[(programs,)](
            x.reshape(-1).contiguous(), x if flat_w is None else flat_w, total, moment, _grid_parameters(table.lo, table.scale, x.device),
            samples, max(n, 1), stride, table.pad, table.q, per_program, scale,
            HAS_WEIGHT=flat_w is not None, FIXED_POINT=fixed_point, BLOCK=_TILE, enable_fp_fusion=True,
        )
    if fixed_point:
        total, moment = total.to(torch.float64) / scale, moment.to(torch.float64) / scale
    hist = table_histogram(total.view(rows, stride), moment.view(rows, stride), axis, binning.kernels[0], table)
    return hist.to(accumulation_dtype(x.dtype))


def _forward(x: Tensor, weight: Optional[Tensor], edges: Sequence[Tensor], binning: Binning) -> Tensor:
    table = _plan_table(x, binning)
    if table is not None:
        return _table_forward(x, weight, binning, table)
    launch = _Launch.plan(x, weight, edges, binning)
    slots = launch.rows * launch.cells
    copies = launch.copies(slots)
    out = launch.partials(copies, slots)
    scale = 1.0
    if launch.fixed_point:
        scale = _fixed_point_scale(_weight_bound(launch.weight, launch.total) * _membership_bound(launch, binning))
    with _device_of(x):
        _forward_kernel[(launch.programs,)](
            launch.x, launch.x if launch.weight is None else launch.weight, launch.edges,
            launch.axis_int, launch.axis_float, out, launch.scratch(),
            launch.total, launch.n, launch.cells, launch.window_cells, launch.blocks_per_program, copies,
            scale, **launch.meta,
        )
    hist = launch.merge(out, scale)
    return hist.to(accumulation_dtype(x.dtype)).view(launch.rows, *binning.shape)


def _backward(grad: Tensor, x: Tensor, weight: Optional[Tensor], edges: Sequence[Tensor], binning: Binning, needs):
    need_x, need_w, need_h, need_edges = needs
    launch = _Launch.plan(x, weight, edges, binning)
    acc = launch.edges.dtype
    dims = len(binning.axes)
    grad = grad.to(acc).contiguous().view(-1)
    blocks = launch.programs * launch.blocks_per_program
    grad_x = torch.empty(launch.total, dims, dtype=acc, device=x.device) if need_x else None
    grad_w = torch.empty(launch.total, dtype=acc, device=x.device) if need_w else None
    grad_h = torch.zeros(blocks, dims, dtype=acc, device=x.device) if need_h else None
    edge_count = launch.edges.numel()
    copies = launch.copies(edge_count)
    grad_e = launch.partials(copies, edge_count) if any(need_edges) else None
    scale = 1.0
    if grad_e is not None and launch.fixed_point and not binning.plain:
        # No formula bounds these edge gradients (1/S of normalized samples has none): a first pass
        # finds the largest contribution, and an edge takes at most 2 (window cells + 1) per sample.
        largest = launch.partials(copies, edge_count, fixed_point=False)
        with _device_of(x):
            _backward_kernel[(launch.programs,)](
                launch.x, launch.x if launch.weight is None else launch.weight, launch.edges,
                launch.axis_int, launch.axis_float, grad, launch.edges, launch.edges, launch.edges, largest, launch.scratch(),
                launch.total, launch.n, launch.cells, launch.window_cells, launch.blocks_per_program, copies,
                edge_count, 1.0,
                NEED_X=False, NEED_W=False, NEED_H=False,
                NEED_E=sum(1 << d for d, need in enumerate(need_edges) if need), **dict(launch.meta, FIXED_POINT=2),
            )
        scale = _fixed_point_scale(float(largest.max()) * launch.total * 2.0 * (launch.window_cells + 1))
    elif grad_e is not None and launch.fixed_point:
        # |dL/de| summed over a sample's cells is at most 2 * window * max f / h per unit of |g w|.
        per_weight = max(
            2.0 * window * float(kernel.pdf(torch.zeros((), dtype=torch.float64))) / axis.bandwidth
            for window, axis, kernel, hard in zip(launch.windows, binning.axes, binning.kernels, binning.hard_axes)
            if not hard
        ) if not all(binning.hard_axes) else 1.0
        scale = _fixed_point_scale(_weight_bound(launch.weight, launch.total) * float(grad.abs().max()) * per_weight)
    dummy = launch.edges
    with _device_of(x):
        _backward_kernel[(launch.programs,)](
            launch.x, launch.x if launch.weight is None else launch.weight, launch.edges,
            launch.axis_int, launch.axis_float, grad,
            dummy if grad_x is None else grad_x, dummy if grad_w is None else grad_w,
            dummy if grad_h is None else grad_h, dummy if grad_e is None else grad_e, launch.scratch(),
            launch.total, launch.n, launch.cells, launch.window_cells, launch.blocks_per_program, copies,
            edge_count, scale,
            NEED_X=need_x, NEED_W=need_w, NEED_H=need_h,
            NEED_E=sum(1 << d for d, need in enumerate(need_edges) if need), **launch.meta,
        )
    if grad_h is not None:
        grad_h = grad_h.sum(0, dtype=torch.float64)  # fixed order: deterministic
    grad_e_list: List[Optional[Tensor]] = [None] * dims
    if grad_e is not None:
        merged = launch.merge(grad_e, scale)
        for d, need in enumerate(need_edges):
            if need:
                start = launch.edge_offsets[d]
                grad_e_list[d] = merged[start : start + binning.axes[d].bins + 1]
    return grad_x, grad_w, grad_h, grad_e_list


TRITON_ENGINE = Engine(_forward, _backward, hard_histogram, supports=lambda binning: native_unsupported(binning, OPTIONS))


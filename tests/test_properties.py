"""Property-based checks (hypothesis) over random shapes, dtypes, ties, duplicates, ranges,
empty and batched inputs: hard mode equals numpy / torch.histc bit for bit, the soft mass
identity holds, soft tends to hard as the bandwidth shrinks, gradients stay finite, and no
call allocates more than O(N + bins).

Derandomized, with modest example counts and no deadline, so CI runs are stable and fast.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch.profiler import ProfilerActivity, profile

import softhist
from softhist._plan import NATIVE_KERNELS
from softhist.kernels import KERNELS

F64 = torch.float64
SETTINGS = dict(deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])

FLOAT_DTYPES = {"float16": (torch.float16, np.float16), "float32": (torch.float32, np.float32), "float64": (F64, np.float64)}
INT_DTYPES = {
    "int8": (torch.int8, np.int8), "int16": (torch.int16, np.int16), "int32": (torch.int32, np.int32),
    "int64": (torch.int64, np.int64), "uint8": (torch.uint8, np.uint8), "uint16": (torch.uint16, np.uint16),
    "uint32": (torch.uint32, np.uint32), "uint64": (torch.uint64, np.uint64), "bool": (torch.bool, np.bool_),
}


@st.composite
def float_samples(draw, finite: bool):
    """(array, lo, hi, bins): values drawn to tie with the edges, repeat, and straddle the range."""
    lo = draw(st.sampled_from([0.0, -1.0, -3.5, 0.1, 1e3]))
    width = draw(st.sampled_from([1.0, 0.3, 7.0, 1e-3, 1e4]))
    bins = draw(st.integers(1, 40))
    hi = lo + width
    edges = [lo + (hi - lo) * k / bins for k in range(bins + 1)]
    special = [math.nan, math.inf, -math.inf] if not finite else []
    pool = st.one_of(
        st.sampled_from(edges + [lo - width, hi + width] + special),
        st.floats(lo - 0.2 * width, hi + 0.2 * width, allow_nan=False, allow_infinity=False),
    )
    values = draw(st.lists(pool, min_size=0, max_size=60))
    values += values[: draw(st.integers(0, len(values)))]  # duplicates
    return values, lo, hi, bins


def _numpy_or_error(fn):
    try:
        return fn(), None
    except ValueError as error:
        return None, error


@settings(max_examples=150, **SETTINGS)
@given(data=float_samples(finite=False), dtype=st.sampled_from(sorted(FLOAT_DTYPES)), explicit=st.booleans(), rows=st.integers(1, 3))
def test_hard_histogram_equals_numpy(data, dtype, explicit, rows):
    values, lo, hi, bins = data
    torch_dtype, np_dtype = FLOAT_DTYPES[dtype]
    a = np.asarray(values, dtype=np.float64).astype(np_dtype)
    if not explicit:
        a = a[np.isfinite(a)]  # numpy cannot infer a range from NaN or inf; softhist ignores them
    batch = np.stack([np.roll(a, r) for r in range(rows)])
    x = torch.from_numpy(batch)
    range_ = (lo, hi) if explicit else None
    ref, error = _numpy_or_error(lambda: np.histogram(a, bins, range=range_))
    if error is not None:  # numpy cannot build these edges: softhist raises too
        with pytest.raises(ValueError, match="Too many bins for data range"):
            softhist.histogram(x, bins, range=range_, mode="hard", dim=-1)
        return
    hist, edges = softhist.histogram(x, bins, range=range_, mode="hard", dim=-1)
    assert hist.dtype == (torch.float32 if torch_dtype == torch.float16 else torch_dtype) and edges.dtype == torch_dtype
    np.testing.assert_array_equal(edges.numpy(), ref[1])
    for r in range(rows):  # a row is a rotation of the same samples: the same counts
        np.testing.assert_array_equal(hist[r].numpy(), ref[0])


@settings(max_examples=80, **SETTINGS)
@given(
    values=st.lists(st.integers(-300, 300), min_size=0, max_size=50),
    dtype=st.sampled_from(sorted(INT_DTYPES)),
    bins=st.integers(1, 20),
    explicit=st.booleans(),
    density=st.booleans(),
)
def test_hard_histogram_of_integers_equals_numpy(values, dtype, bins, explicit, density):
    torch_dtype, np_dtype = INT_DTYPES[dtype]
    info = np.iinfo(np_dtype) if np_dtype is not np.bool_ else None
    a = np.asarray(values, dtype=np.int64)
    a = (a != 0) if info is None else np.clip(a, info.min, info.max).astype(np_dtype)
    range_ = (-7.5, 40.0) if explicit else None
    ref_hist, ref_edges = np.histogram(a.astype(np.uint8) if info is None else a, bins, range=range_, density=density)
    hist, edges = softhist.histogram(torch.from_numpy(a), bins, range=range_, mode="hard", density=density)
    assert hist.dtype == F64 and edges.dtype == F64
    np.testing.assert_array_equal(edges.numpy(), ref_edges)
    np.testing.assert_array_equal(hist.numpy(), ref_hist)


@settings(max_examples=120, **SETTINGS)
@given(data=float_samples(finite=False), dtype=st.sampled_from(["float32", "float64"]), same_ends=st.booleans())
def test_hard_histc_equals_torch_histc(data, dtype, same_ends):
    values, lo, hi, bins = data
    torch_dtype, _ = FLOAT_DTYPES[dtype]
    x = torch.tensor(values, dtype=F64).to(torch_dtype)
    lo, hi = (lo, lo) if same_ends else (lo, hi)  # min == max: the finite data's range
    ours = softhist.histc(x, bins, lo, hi, mode="hard")
    # torch.histc raises on NaN or inf when it takes the data's range; softhist takes the finite
    # samples' range (and counts nothing outside it), so compare with torch.histc of those.
    reference = x[torch.isfinite(x)] if same_ends else x
    torch.testing.assert_close(ours, torch.histc(reference, bins, lo, hi), rtol=0, atol=0)


@st.composite
def soft_case(draw):
    """Random soft binning: kernel, uniform or uneven edges, bandwidth from tiny to wider than the range, batches."""
    kernel = draw(st.sampled_from(sorted(NATIVE_KERNELS)))
    bins = draw(st.integers(1, 12))
    rows, n = draw(st.integers(0, 3)), draw(st.integers(0, 40))
    uniform = draw(st.booleans())
    cuts = sorted(set(draw(st.lists(st.floats(0.01, 0.99), min_size=bins - 1, max_size=bins - 1, unique=True))))
    assume(len(cuts) == bins - 1)
    edges = torch.tensor([0.0] + (cuts if not uniform else [k / bins for k in range(1, bins)]) + [1.0], dtype=F64)
    bandwidth = draw(st.sampled_from([0.003, 0.05, 0.3, 2.0, 40.0]))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(rows, n, generator=g, dtype=F64) * 1.6 - 0.3
    if n and rows:
        x[0, 0] = edges[bins // 2]  # a tie with an edge
        x[-1, -1] = x[0, 0]  # and a duplicate
    weight = torch.rand(rows, n, generator=g, dtype=F64) if draw(st.booleans()) else None
    return kernel, edges, uniform, bandwidth, x, weight


def _soft(x, edges, uniform, **kwargs):
    if uniform:
        return softhist.histc(x, edges.numel() - 1, 0.0, 1.0, dim=-1, **kwargs)
    return softhist.histogram(x, edges, dim=-1, **kwargs)[0]


@settings(max_examples=80, **SETTINGS)
@given(case=soft_case())
def test_soft_mass_identity(case):
    kernel, edges, uniform, bandwidth, x, weight = case
    hist = _soft(x, edges, uniform, kernel=kernel, bandwidth=bandwidth, weight=weight)
    cdf = KERNELS[kernel].cdf
    inside = cdf((edges[-1] - x) / bandwidth) - cdf((edges[0] - x) / bandwidth)
    expected = (inside if weight is None else weight * inside).sum(-1)
    assert hist.shape == (x.shape[0], edges.numel() - 1)
    torch.testing.assert_close(hist.sum(-1), expected, rtol=1e-10, atol=1e-10)


@settings(max_examples=60, **SETTINGS)
@given(case=soft_case())
def test_soft_tends_to_hard_as_the_bandwidth_shrinks(case):
    kernel, edges, uniform, _, x, weight = case
    # Away from edge ties, by more than the kernel's support at the bandwidth used.
    bandwidth = 1e-7
    clear = ((x.unsqueeze(-1) - edges).abs() > 10 * bandwidth * KERNELS[kernel].support).all(-1)
    x = torch.where(clear, x, torch.nan)
    soft = _soft(x, edges, uniform, kernel=kernel, bandwidth=bandwidth, weight=weight)
    hard = _soft(x, edges, uniform, mode="hard", weight=weight)
    torch.testing.assert_close(soft, hard, rtol=0, atol=1e-9)


@settings(max_examples=60, **SETTINGS)
@given(case=soft_case(), dtype=st.sampled_from(["float16", "float32", "float64"]), nonfinite=st.booleans())
def test_gradients_are_finite(case, dtype, nonfinite):
    kernel, edges, uniform, bandwidth, x, weight = case
    torch_dtype, _ = FLOAT_DTYPES[dtype]
    x = x.to(torch_dtype)
    if nonfinite and x.numel():
        x.view(-1)[:: 3] = torch.tensor([math.nan, math.inf, -math.inf], dtype=torch_dtype).repeat(x.numel())[: x.view(-1)[::3].numel()]
    x.requires_grad_()
    h = torch.tensor(bandwidth, dtype=torch_dtype, requires_grad=True)
    e = edges.to(torch_dtype).requires_grad_()
    w = None if weight is None else weight.to(torch_dtype).requires_grad_()
    assume(bool((e[1:] > e[:-1]).all()))  # edges still distinct after rounding to float16
    hist = softhist.histogram(x, e, bandwidth=h, weight=w, kernel=kernel, dim=-1)[0]
    hist.pow(2).sum().backward()
    for grad in (x.grad, h.grad, e.grad) + (() if w is None else (w.grad,)):
        assert grad is not None and torch.isfinite(grad).all()


def largest_allocation(fn) -> int:
    """Bytes of the largest single CPU allocation made by any op in ``fn()``."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max((e.cpu_memory_usage for e in prof.events()), default=0)


@settings(max_examples=10, **SETTINGS)
@given(
    kernel=st.sampled_from(sorted(NATIVE_KERNELS)),
    bins=st.sampled_from([5000, 20000]),
    bandwidth_bins=st.sampled_from([0.02, 0.5, 3.0]),
    layout=st.sampled_from(["uniform", "uneven", "joint"]),
)
def test_no_call_allocates_more_than_n_plus_bins(kernel, bins, bandwidth_bins, layout):
    # N x bins float64 would be 8 * 20000 * bins bytes (0.8 to 3.2 GB). Every tensor stays O(N + bins),
    # beside the engine's fixed-size buffers: chunks of 2**21 elements, and the block buffer of at
    # most 2**24 (beyond it the engine scatters into the histogram directly). Bandwidths wider than
    # the range are checked in test_reliability.py (windows of every edge cost what the dense formula does).
    n = 20_000
    x = torch.rand(n, 2 if layout == "joint" else 1, requires_grad=True)
    if layout == "joint":
        cells = math.isqrt(bins)
        call = lambda: softhist.histogramdd(x, cells, range=[(0, 1), (0, 1)], bandwidth=bandwidth_bins / cells, kernel=kernel)[0].sum().backward()  # noqa: E731
        total = cells * cells
    elif layout == "uniform":
        call = lambda: softhist.histc(x, bins, 0, 1, bandwidth=bandwidth_bins / bins, kernel=kernel).sum().backward()  # noqa: E731
        total = bins
    else:
        edges = torch.linspace(0, 1, bins + 1) ** 1.5
        call = lambda: softhist.histogram(x, edges, bandwidth=bandwidth_bins / bins, kernel=kernel)[0].sum().backward()  # noqa: E731
        total = bins
    bound = 64 * (n + total) + 8 * (1 << 22) + 8 * (1 << 24)
    assert 8 * n * total > 2 * bound  # the dense size is far above the bound: the check can fail
    assert largest_allocation(call) <= bound

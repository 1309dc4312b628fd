"""Every input gets the right answer or a clear error: wide windows, empty batches, half-precision
counts, tiny numbers, numpy's conventions, losses with mass outside the range, learnable edges
that drift, and API parity with torch.histc / numpy.histogram."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import softhist
from softhist import _plan, _torch_backend, reference
from softhist._plan import NATIVE_KERNELS
from softhist.kernels import KERNELS

F64 = torch.float64


def largest_allocation(fn) -> int:
    """Bytes of the largest single CPU allocation made by any op in ``fn()``."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max((e.cpu_memory_usage for e in prof.events()), default=0)


# --------------------------------------------------------------------------- 1. wide bandwidths


@pytest.mark.parametrize("kernel", sorted(NATIVE_KERNELS))
@pytest.mark.parametrize("bandwidth", [0.01, 1.0, 100.0, 1e30])
def test_window_never_holds_more_than_every_edge(kernel, bandwidth):
    axis = _plan.Axis(64, bandwidth, (0.0, 1.0))
    assert _plan.window_edges(axis, KERNELS[kernel], None) <= 65
    edges = torch.linspace(0, 1, 65, dtype=F64) ** 2
    assert _plan.window_edges(_plan.Axis(64, bandwidth), KERNELS[kernel], edges) <= 65


@pytest.mark.parametrize("kernel", ["gaussian", "box", "bspline"])
@pytest.mark.parametrize("bandwidth", [0.3, 2.0, 50.0])
def test_wide_windows_equal_the_dense_reference(kernel, bandwidth):
    # Samples inside and far outside the range, windows capped at all edges: still the exact formula.
    x = (torch.rand(301, dtype=F64) * 5 - 2).requires_grad_()
    uniform, uneven = torch.linspace(0, 1, 9, dtype=F64), torch.linspace(0, 1, 9, dtype=F64).sqrt()
    for ours, edges in (
        (softhist.histc(x, 8, 0, 1, bandwidth=bandwidth, kernel=kernel), uniform),
        (softhist.histogram(x, uneven, bandwidth=bandwidth, kernel=kernel)[0], uneven),
    ):
        ref = reference.soft_histogram(x, edges, bandwidth, kernel)
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
        g_ours, = torch.autograd.grad(ours.pow(2).sum(), x)
        g_ref, = torch.autograd.grad(ref.pow(2).sum(), x)
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-12)


def test_wide_bandwidth_costs_no_more_than_the_dense_formula():
    # bandwidth = 100 on 64 bins over [0, 1]: the uncapped window had 67,842 edges a sample
    # (a 37 GB float64 temporary for 10k samples). Capped: at most N x (B + 1), the dense size.
    x = torch.rand(10_000)
    dense = 10_000 * 65 * 8
    assert largest_allocation(lambda: softhist.histc(x, 64, 0, 1, bandwidth=100.0)) <= 4 * dense
    y = torch.rand(10_000)
    xy = torch.stack([x, y], -1)
    plan = _torch_backend._WindowPlan(xy.unsqueeze(0), [torch.linspace(0, 1, 33)] * 2, _binning(2, 32, 1.0))
    assert plan.window_cells <= 32 * 32  # a 2-D sample touches at most every cell, as the dense formula
    mi = softhist.mutual_information(x, y, 32, range=(0, 1), bandwidth=1.0)
    assert torch.isfinite(mi)


def _binning(dims, bins, bandwidth):
    axes = tuple(_plan.Axis(bins, bandwidth, (0.0, 1.0)) for _ in range(dims))
    return _plan.Binning(KERNELS["gaussian"], "soft", axes)


def cdf_evaluations(monkeypatch, kernel: str, fn) -> int:
    """How many values ``fn()`` passes to the kernel's CDF: the work of a soft histogram."""
    count = [0]
    entry = KERNELS[kernel]

    def counted(z):
        count[0] += z.numel()
        return entry.cdf(z)

    monkeypatch.setitem(KERNELS, kernel, dataclasses.replace(entry, cdf=counted))
    fn()
    return count[0]


def test_mutual_information_loss_with_a_wide_sigma_costs_no_more_than_dense(monkeypatch):
    # MONAI's arguments with sigma_ratio=8 on a 128x128 image: 86 window edges per axis before,
    # 3.6x the dense formula's N x (bins + 1) CDF values per axis.
    loss_fn = softhist.nn.MutualInformationLoss(sigma_ratio=8, range=(0.0, 1.0))
    a = torch.rand(1, 1, 128, 128)
    used = cdf_evaluations(monkeypatch, "gaussian", lambda: loss_fn(a, a.flip(-1)))
    assert used <= 2 * 128 * 128 * 24


# --------------------------------------------------------------------------- 2. empty batch dims


@pytest.mark.parametrize("mode", ["soft", "hard", "straight_through"])
def test_empty_batch_dimensions_give_empty_results(mode):
    x = torch.rand(0, 5, requires_grad=mode != "hard")
    assert softhist.histc(x, 4, 0, 1, dim=-1, mode=mode).shape == (0, 4)
    hist, _ = softhist.histogram(x, 4, range=(0, 1), dim=-1, mode=mode)
    assert hist.shape == (0, 4)
    hist, edges = softhist.histogram(x, torch.tensor([0.0, 0.3, 1.0]), dim=-1, mode=mode)
    assert hist.shape == (0, 2)
    xy = torch.rand(0, 3, 5, 2, requires_grad=mode != "hard")
    assert softhist.histogramdd(xy, [4, 3], range=[(0, 1), (0, 1)], mode=mode)[0].shape == (0, 3, 4, 3)
    assert softhist.histogram2d(x, x, 3, range=[(0, 1), (0, 1)], mode=mode)[0].shape == (0, 3, 3)
    if mode != "hard":
        hist.sum().backward()
        assert x.grad.shape == x.shape
        assert softhist.mutual_information(x, x, 4, range=(0, 1), mode=mode).shape == (0,)
        assert softhist.histogram_matching_loss(x, torch.rand(7), 4, range=(0, 1), mode=mode).shape == (0,)
    layer = softhist.nn.SoftHistogram(4, (0.0, 1.0), mode=mode)
    assert layer(torch.rand(0, 2, 5)).shape == (0, 2, 4)


# --------------------------------------------------------------------------- 3. half-precision counts


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_hard_counts_are_exact_float32(dtype):
    zeros = torch.zeros(100_001, dtype=dtype)
    counts = softhist.histc(zeros, 4, -1, 1, mode="hard")
    assert counts.dtype == torch.float32
    assert counts.tolist() == [0.0, 0.0, 100_001.0, 0.0]  # float16 said inf, bfloat16 rounded
    hist, edges = softhist.histogram(torch.full((257,), 0.5, dtype=dtype), 2, range=(0, 1), mode="hard")
    assert hist.dtype == torch.float32 and hist.tolist() == [0.0, 257.0] and edges.dtype == dtype
    st = softhist.histc(zeros.requires_grad_(), 4, -1, 1, mode="straight_through", bandwidth=0.2)
    assert st.dtype == torch.float32 and st[2].item() == 100_001
    st.sum().backward()
    assert zeros.grad.dtype == dtype
    dd, _ = softhist.histogramdd(torch.zeros(70_000, 2, dtype=dtype), 2, range=[(-1, 1), (-1, 1)], mode="hard")
    assert dd.dtype == torch.float32 and dd[1, 1].item() == 70_000
    assert softhist.histc(torch.zeros(10, dtype=dtype), 4, -1, 1).dtype == torch.float32  # soft too


# --------------------------------------------------------------------------- 4. tiny values


def test_subnormal_samples_in_hard_mode_equal_torch_histc():
    x = torch.tensor([1e-45, 2e-45, 3e-44])
    torch.testing.assert_close(softhist.histc(x, 4, mode="hard"), torch.histc(x, 4), rtol=0, atol=0)
    hist, _ = softhist.histogram(x.double(), 2, range=(-1e-308, -2e-313), mode="hard")
    np.testing.assert_array_equal(hist.numpy(), np.histogram(x.double().numpy(), 2, range=(-1e-308, -2e-313))[0])


@pytest.mark.parametrize(
    "call",
    [
        lambda: softhist.histc(torch.rand(10), 4, 0, 1, bandwidth=1e-40),  # raised "cannot be converted to float"
        lambda: softhist.histc(torch.rand(10, dtype=F64), 4, 0, 1, bandwidth=1e-320),  # returned NaN
        lambda: softhist.histc(torch.rand(10) * 1e-40, 4),  # a subnormal data range
        lambda: softhist.histc(torch.tensor([1e-45, 2e-45, 3e-44]), 4),  # raised an index error
        lambda: softhist.mutual_information(torch.rand(100) * 1e-40, torch.rand(100) * 1e-40, 8),  # NaN / index error
    ],
    ids=["bandwidth-1e-40", "bandwidth-1e-320-f64", "subnormal-range", "subnormal-samples", "mi-subnormal-range"],
)
def test_soft_binning_beyond_the_dtype_says_so(call):
    with pytest.raises(ValueError, match=r"bandwidth=.* out of torch\.float(32|64)'s range for soft binning"):
        call()


def test_tiny_bandwidths_work_down_to_the_resolution_of_the_positions():
    x = torch.rand(50, dtype=F64)
    hist = softhist.histc(x, 4, 0, 1, bandwidth=1e-12)
    torch.testing.assert_close(hist, softhist.histc(x, 4, 0, 1, mode="hard"))
    # A sample on an edge keeps half its mass in each bin, as long as the bandwidth resolves the
    # rounding of its position; below that the bandwidth is refused, not silently rounded to 0 or 1.
    for dtype in (F64, torch.float32):
        for backend in ("auto", "torch"):
            edge = torch.tensor([0.125, 0.75], dtype=dtype)  # the outer edges, exactly
            hist = softhist.histc(edge, 6, 0.125, 0.75, bandwidth=1e-15, kernel="triangular", backend=backend)
            assert hist[0].item() == 0.5 and hist[-1].item() == 0.5, (dtype, backend, hist)
    for dtype, h in ((F64, 1e-300), (F64, 1e-17), (torch.float32, 1e-17)):
        with pytest.raises(ValueError, match="below the resolution"):
            softhist.histc(torch.rand(5, dtype=dtype), 4, 0, 1, bandwidth=h)


# --------------------------------------------------------------------------- 5. numpy's semantics


@pytest.mark.parametrize("dtype", [torch.int8, torch.int64, torch.uint8, torch.uint16, torch.uint32, torch.uint64, torch.bool])
def test_integer_and_bool_input_follow_numpy(dtype):
    values = torch.tensor([0, 1, 1, 3, 7, 7, 7, 200]) if dtype != torch.bool else torch.tensor([0, 1, 1, 0, 1])
    x = values.to(dtype)
    a = x.numpy().astype(np.uint8) if dtype == torch.bool else x.numpy()
    for density in (False, True):
        hist, edges = softhist.histogram(x, 5, mode="hard", density=density)
        ref_hist, ref_edges = np.histogram(a, 5, density=density)
        assert hist.dtype == F64 and edges.dtype == F64
        np.testing.assert_array_equal(hist.numpy(), ref_hist)
        np.testing.assert_array_equal(edges.numpy(), ref_edges)
    assert softhist.histc(x, 3, mode="hard").dtype == F64


def test_empty_input_edges_follow_numpy():
    for dtype, np_dtype in [(F64, np.float64), (torch.float32, np.float32), (torch.int64, np.int64)]:
        _, edges = softhist.histogram(torch.empty(0, dtype=dtype), 3, mode="hard")
        ref = np.histogram(np.empty(0, dtype=np_dtype), 3)[1]
        assert edges.numpy().dtype == ref.dtype
        np.testing.assert_array_equal(edges.numpy(), ref)


@pytest.mark.parametrize(
    "x,bins",
    [
        (torch.tensor([1, 1 + 2e-16] * 10, dtype=F64), 10),  # edges that cannot be told apart
        (torch.tensor([-3e38, 3e38]), 2),  # max - min overflows float32
    ],
)
@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_edges_numpy_cannot_build_raise_as_numpy_does(x, bins, mode):
    with pytest.raises(ValueError, match=r"Too many bins for data range"):
        np.histogram(x.numpy(), bins)
    with pytest.raises(ValueError, match=r"Too many bins for data range: bins=\d+"):
        softhist.histogram(x, bins, mode=mode)


def test_histc_range_that_overflows_raises():
    with pytest.raises(ValueError, match=r"histc range: max - min overflows torch.float32"):
        softhist.histc(torch.tensor([-3e38, 3e38]), 2, mode="hard")


def test_hard_mode_accepts_numpy_edges():
    x = torch.arange(10)
    for edges in ([0, 1, 3, 6, math.inf], [0, 2, 2, 9], torch.tensor([0, 5, 9])):
        hist, _ = softhist.histogram(x, edges, mode="hard")
        np.testing.assert_array_equal(hist.numpy(), np.histogram(x.numpy(), np.asarray(edges))[0])
    with pytest.raises(ValueError, match=r"bins must increase monotonically, got \[1.0, 3.0, 1.0\]"):
        softhist.histogram(x, torch.tensor([1, 3, 1]), mode="hard")
    with pytest.raises(ValueError, match=r"bins must be finite"):
        softhist.histogram(x.double(), [0.0, math.inf])  # soft binning needs finite edges
    with pytest.raises(ValueError, match=r"strictly increasing.*mode='hard' accepts equal neighbours"):
        softhist.histogram(x.double(), [0.0, 2.0, 2.0, 9.0])


# --------------------------------------------------------------------------- 6. losses with mass outside the range


def test_matching_loss_counts_samples_outside_the_range():
    target = torch.rand(1000)
    outside = torch.full((1000,), 5.0, requires_grad=True)
    inside = torch.full((1000,), 0.5, requires_grad=True)
    far = softhist.histogram_matching_loss(outside, target, 16, range=(0, 1))
    near = softhist.histogram_matching_loss(inside, target, 16, range=(0, 1))
    assert far > 4.0 > near > 0.2  # was 0.011 for the samples at 5, less than for those at 0.5
    far.backward()
    assert (outside.grad > 0).all()  # descent pulls them down into the range
    for metric in ("l1", "kl"):
        assert softhist.histogram_matching_loss(outside.detach(), target, 16, range=(0, 1), metric=metric) > softhist.histogram_matching_loss(
            inside.detach(), target, 16, range=(0, 1), metric=metric
        )


def test_matching_loss_descent_brings_far_samples_home():
    x = (torch.rand(500) + 4.0).requires_grad_()
    target = torch.rand(2000)
    opt = torch.optim.Adam([x], lr=0.1)
    for _ in range(80):
        loss = softhist.histogram_matching_loss(x, target, 16, range=(0, 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert 0.3 < x.detach().mean().item() < 0.7 and loss.item() < 0.1


def test_mutual_information_loss_warns_on_raw_intensities_and_clamps_to_a_range():
    fixed = torch.rand(2, 1, 24, 24)
    moving = (1 - fixed) ** 2
    on_unit = softhist.nn.MutualInformationLoss(range=(0.0, 1.0))(moving, fixed)
    assert softhist.nn.MutualInformationLoss()(moving, fixed).item() == pytest.approx(on_unit.item(), rel=1e-6)  # MONAI's (0, 1)
    with pytest.warns(UserWarning, match=r"pred's intensities span \[.*\], but range=None bins \(0, 1\) as MONAI does"):
        softhist.nn.MutualInformationLoss()(moving * 215, fixed * 215)  # silently -0.014 before
    raw = softhist.nn.MutualInformationLoss(range=(0.0, 215.0))(moving * 215, fixed * 215)
    assert raw.item() == pytest.approx(on_unit.item(), rel=1e-5) and raw.item() < -1.0
    clamped = softhist.nn.MutualInformationLoss(range=(0.0, 0.5))(moving, fixed)
    expected = softhist.nn.MutualInformationLoss(range=(0.0, 0.5))(moving.clamp(0, 0.5), fixed.clamp(0, 0.5))
    assert clamped.item() == pytest.approx(expected.item(), rel=1e-6)


# --------------------------------------------------------------------------- 7. learnable edges


def test_learnable_edges_survive_large_optimizer_steps():
    layer = softhist.nn.SoftHistogram(8, (0.0, 1.0), learnable_edges=True)
    with torch.no_grad():  # where a few huge steps leave them: far from 0, widths at their floor
        layer.edge_start.fill_(1e7)
        layer.raw_widths.fill_(-200.0)
    edges = layer.bin_edges
    assert (edges[1:] > edges[:-1]).all()  # float64: still strictly increasing
    assert (edges.float()[1:] == edges.float()[:-1]).all()  # in float32 they had collapsed
    hist = layer(torch.rand(3, 100) + 1e7)  # raised "bins must be strictly increasing"
    hist.sum().backward()
    assert torch.isfinite(layer.edge_start.grad)
    with torch.no_grad():
        layer.edge_start.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"SoftHistogram's learned edges are not finite \(edge_start=nan"):
        layer(torch.rand(3, 100))


# --------------------------------------------------------------------------- 8. API parity


def test_api_parity_with_torch_and_numpy():
    x = torch.rand(3, 50)
    torch.testing.assert_close(
        softhist.histc(x, 4, torch.tensor(0.0), torch.tensor(1.0), mode="hard"), torch.histc(x, 4, 0.0, 1.0), rtol=0, atol=0
    )
    listed, edges = softhist.histogram(x, [0.0, 0.25, 1.0], dim=1)
    torch.testing.assert_close(listed, softhist.histogram(x, torch.tensor([0.0, 0.25, 1.0], dtype=F64), dim=1)[0])
    assert edges.dtype == F64
    dd, _ = softhist.histogramdd(x.reshape(-1, 2), [[0.0, 0.5, 1.0], 3], range=[None, (0, 1)], mode="hard")
    np.testing.assert_array_equal(dd.numpy(), np.histogramdd(x.reshape(-1, 2).numpy(), [[0.0, 0.5, 1.0], 3], range=[None, (0, 1)])[0])


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: softhist.histc(torch.rand(3, 10), 4, 0, 1, dim=1.0), TypeError, r"dim must be an int or a sequence of ints, got 1.0"),
        (lambda: softhist.histogram(torch.rand(10), 4, density="yes"), TypeError, r"density must be a bool, got 'yes'"),
        (lambda: softhist.histogramdd(torch.rand(10, 2), 4, density="no"), TypeError, r"density must be a bool, got 'no'"),
        (lambda: softhist.histc(torch.rand(10), 10**30), ValueError, r"bins must be a positive integer of at most 2\*\*30 - 256 \(what the engines index\), got 10{30}"),
        (lambda: softhist.histc(torch.rand(10), 4, 0, 1, weight=torch.rand(10, device="meta")), ValueError,
         r"weight must be on the input's device \(cpu\), got device meta"),
        (lambda: softhist.histc(torch.rand(10), 4, torch.tensor([0.0, 1.0]), 1), TypeError, r"histc range \(min\) must be a real number"),
    ],
    ids=["dim-float", "density-string", "density-dd", "bins-huge", "weight-meta", "min-1d-tensor"],
)
def test_api_misuse_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()

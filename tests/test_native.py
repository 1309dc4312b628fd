"""The native CPU engine (``backend="cpp"``): outputs and every gradient against the dense
reference and the torch engine, for every kernel, strategy and axis count; accuracy at
scale; bit-identical results across runs and thread counts; dispatch and fallback."""

import importlib
import math
import warnings

import pytest
import torch

import softhist
from conftest import same_at_thread_counts
from softhist import _cpp_backend, _ops, reference
from softhist._plan import NATIVE_KERNELS

pytestmark = pytest.mark.skipif(
    softhist.backends()["cpp"] is not None, reason=f"native kernels unavailable: {softhist.backends()['cpp']}"
)

histogram_module = importlib.import_module("softhist.histogram")  # the module, not the function
ENGINES = ("cpp", "torch")
# The kernels every engine has (the Cauchy kernel and user kernels run on the torch engine: test_options.py).
KERNEL_NAMES = sorted(NATIVE_KERNELS)


def rand(*shape, lo=-0.2, hi=1.2, dtype=torch.float64):
    return (torch.rand(*shape, dtype=torch.float64) * (hi - lo) + lo).to(dtype)


def outputs_and_grads(fn, inputs, backend):
    """``fn(*inputs, backend)`` and the gradients of a fixed random projection of it."""
    leaves = [t.detach().clone().requires_grad_(t.requires_grad) for t in inputs]
    out = fn(*leaves, backend)
    projection = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grads = torch.autograd.grad((out.double() * projection).sum(), [t for t in leaves if t.requires_grad])
    return [out.detach(), *grads]


def assert_engines_agree(fn, *inputs, rtol=1e-9, atol=1e-11, dense=None):
    """cpp == torch engine (== the dense reference, when ``dense(*inputs)`` is given), every gradient."""
    native = outputs_and_grads(fn, inputs, "cpp")
    others = [outputs_and_grads(fn, inputs, "torch")]
    if dense is not None:
        others.append(outputs_and_grads(lambda *a: dense(*a[:-1]), inputs, None))
    for other in others:
        assert len(native) == len(other) >= 2
        for got, want in zip(native, other):
            torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_1d_uniform_weights_batch_bandwidth_match_dense(kernel):
    x, w = rand(3, 301), rand(3, 301, lo=0, hi=1)
    x[0, 5], x[1, 7], x[2, 0] = math.nan, math.inf, 40.0  # ignored, ignored, too far to count
    h = torch.tensor(0.035, dtype=torch.float64)
    for t in (x, w, h):
        t.requires_grad_()

    def fn(x, w, h, backend):
        return softhist.histc(x, 17, 0, 1, kernel=kernel, bandwidth=h, weight=w, dim=1, backend=backend)

    def dense(x, w, h):
        edges = torch.linspace(0, 1, 18, dtype=torch.float64)
        return torch.stack([reference.soft_histogram(x[r], edges, h, kernel, w[r]) for r in range(3)])

    assert_engines_agree(fn, x, w, h, dense=dense)


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_1d_non_uniform_edges_gradients_match_dense(kernel):
    x = rand(500, lo=-3, hi=3).requires_grad_()
    edges = torch.tensor([-3.0, -1.0, -0.9, -0.2, 0.0, 0.05, 0.5, 2.0, 2.5], dtype=torch.float64, requires_grad=True)
    h = torch.tensor(0.15, dtype=torch.float64, requires_grad=True)

    def fn(x, edges, h, backend):
        return softhist.histogram(x, edges, kernel=kernel, bandwidth=h, backend=backend)[0]

    assert_engines_agree(fn, x, edges, h, dense=lambda x, e, h: reference.soft_histogram(x, e, h, kernel))


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
@pytest.mark.parametrize("dims", [2, 3])
def test_joint_mixed_axes_match_dense(kernel, dims):
    xyz = rand(2, 203, dims).requires_grad_()
    w = rand(2, 203, lo=0.5, hi=1.5).requires_grad_()
    edges = torch.tensor([0.0, 0.1, 0.15, 0.5, 0.55, 0.9, 1.0], dtype=torch.float64, requires_grad=True)
    ranges = [(0, 1), None, (0.2, 0.8)][:dims]
    h = torch.tensor([0.05, 0.08, 0.1][:dims], dtype=torch.float64, requires_grad=True)

    def fn(xyz, w, edges, h, backend):
        return softhist.histogramdd(xyz, [7, edges, 4][:dims], range=ranges, weight=w, kernel=kernel, bandwidth=h, backend=backend)[0]

    def dense(xyz, w, edges, h):
        axis_edges = [torch.linspace(0, 1, 8, dtype=torch.float64), edges, torch.linspace(0.2, 0.8, 5, dtype=torch.float64)][:dims]
        return torch.stack([
            reference.soft_histogramdd(xyz[r], axis_edges, list(h.unbind()), kernel, w[r]) for r in range(2)
        ])

    assert_engines_agree(fn, xyz, w, edges, h, dense=dense)


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_gradcheck_every_input(kernel):
    x = rand(40, lo=-0.5, hi=1.5).requires_grad_()
    w = rand(40, lo=0.5, hi=1.5).requires_grad_()
    edges = torch.tensor([0.0, 0.2, 0.3, 0.7, 1.0], dtype=torch.float64, requires_grad=True)
    h = torch.tensor(0.12, dtype=torch.float64, requires_grad=True)

    def fn(x, w, edges, h):
        return softhist.histogram(x, edges, weight=w, kernel=kernel, bandwidth=h, backend="cpp")[0]

    assert torch.autograd.gradcheck(fn, (x, w, edges, h), atol=1e-6)


def test_table_and_wide_windows_in_float32_match_float64():
    """Many samples on equal-width bins take the sub-bin table; a bandwidth wider than the
    range takes an exact window capped at the bins (the cost never exceeds the dense formula).
    Both in float32 stay within 2e-6 of the torch engine in float64 on the same values."""
    x64 = rand(2, 40_000, dtype=torch.float32).double()  # past _TABLE_BUILD_SAMPLES: builds its tables
    for bandwidth in (None, 0.01, 3.0):

        def fn(x, backend):
            return softhist.histc(x, 64, 0, 1, bandwidth=bandwidth, dim=1, backend=backend)

        native = outputs_and_grads(fn, [x64.float().requires_grad_()], "cpp")
        exact = outputs_and_grads(fn, [x64.clone().requires_grad_()], "torch")
        for got, want in zip(native, exact):
            assert relative_error(got, want) < 2e-6




@pytest.mark.parametrize("length", [1, 2, 15, 16, 17, 64, 65])
@pytest.mark.parametrize("bandwidth", [None, 0.02])  # 8- and 16-cell table windows
def test_table_short_rows_match_float64_at_every_thread_count(length, bandwidth):
    """Short rows on a table axis are taken many at a time, each in a copy of its own
    (soft_forward.cpp; 65 samples: one row at a time): output and gradients within 2e-6 of the
    torch engine in float64, with weights, NaN and out-of-range samples; an infinite weight
    fills only its row's bins its kernel reaches; bit-identical across thread counts."""
    rows = -(-70_000 // length)  # past _TABLE_BUILD_SAMPLES: the first call builds the table
    x64, w64 = rand(rows, length, dtype=torch.float32).double(), rand(rows, length, lo=-0.5, hi=2.0, dtype=torch.float32).double()
    x64.view(-1)[::97] = math.nan
    x64.view(-1)[1::89] = 7.0  # too far to count

    def fn(x, w, backend):
        return softhist.histc(x, 40, 0, 1, weight=w, bandwidth=bandwidth, dim=1, backend=backend)

    x32, w32 = x64.float().requires_grad_(), w64.float().requires_grad_()
    native = same_at_thread_counts(lambda: outputs_and_grads(fn, [x32, w32], "cpp"), (1, 2))
    exact = outputs_and_grads(fn, [x64.clone().requires_grad_(), w64.clone().requires_grad_()], "torch")
    for got, want in zip(native, exact):
        assert relative_error(got, want) < 2e-6
    w_inf = w64.float()
    x64[rows // 2, length // 2], w_inf[rows // 2, length // 2] = 0.5, math.inf  # its row only: the bins its kernel reaches
    got = same_at_thread_counts(lambda: [fn(x64.float(), w_inf, "cpp")], (1, 2))[0]
    want = fn(x64, w_inf.double(), "torch")
    finite = torch.isfinite(want)
    assert 0 < int((~finite).sum()) < 20 and torch.equal(torch.isfinite(got), finite)
    assert ((got[finite].double() - want[finite]).abs().max() / want[finite].abs().max()).item() < 2e-6


@pytest.mark.parametrize("bandwidth", [0.01, 0.02])  # 8- and 16-cell table windows
def test_table_backward_of_every_tail_length_matches_float64(bandwidth):
    """The 1-D table's backward sums its per-sample dots eight samples at a time and the tail
    alone: rows of 8k + r samples, r = 0..7 (below one block and past it), with weight and
    bandwidth gradients, stay within 2e-6 of the torch engine in float64."""
    h = torch.tensor(bandwidth).double()  # float32 values, exact in both dtypes
    softhist.histc(rand(1 << 17, dtype=torch.float32), 48, 0, 1, bandwidth=h.float(), backend="cpp")  # builds the table

    def fn(x, w, h, backend):
        return softhist.histc(x, 48, 0, 1, weight=w, bandwidth=h, dim=1, backend=backend)

    for n in [*range(16, 24), *range(2048 + 40, 2048 + 48)]:
        x64, w64 = rand(3, n, dtype=torch.float32).double(), rand(3, n, lo=0.5, hi=2.0, dtype=torch.float32).double()
        native = outputs_and_grads(fn, [x64.float().requires_grad_(), w64.float().requires_grad_(), h.float().requires_grad_()], "cpp")
        exact = outputs_and_grads(fn, [x64.clone().requires_grad_(), w64.clone().requires_grad_(), h.clone().requires_grad_()], "torch")
        for got, want in zip(native, exact):
            assert relative_error(got, want) < 2e-6


@pytest.mark.parametrize(
    "bandwidths, kernel",
    [((0.5, 3.0), "gaussian"), ((3.0, 0.5), "gaussian"),  # in bins: 8- and 40-bin table windows on either axis
     ((0.5, 1.3), "box"), ((1.3, 0.5), "triangular"), ((0.5, 0.5), "epanechnikov"),  # tables in pieces
     ((0.5, 0.5), "gaussian")],  # 7-bin windows on both axes: the unrolled loops
)
def test_2d_table_path_in_float32_matches_float64(bandwidths, kernel):
    """Two equal-width axes in float32 take the 2-D table path (both axes' rows from their
    tables, in pieces for the compact kernels, their outer product per sample): output and the
    gradients of x, the weights and the bandwidth within 2e-6 of the torch engine in float64 on
    the same values, samples past the range included; an infinite weight goes only where its
    kernel reaches."""
    bins = (40, 24)
    x64 = rand(2, 40_000, 2, dtype=torch.float32).double()  # past _TABLE_BUILD_SAMPLES: builds its tables
    w64 = rand(2, 40_000, lo=0, hi=2, dtype=torch.float32).double()
    h64 = torch.tensor([b / n for b, n in zip(bandwidths, bins)], dtype=torch.float32).double()

    def fn(x, w, h, backend):
        return softhist.histogramdd(x, list(bins), range=[(0, 1), (0, 1)], weight=w, bandwidth=h, kernel=kernel, backend=backend)[0]

    _cpp_backend._TABLES.clear()
    _cpp_backend._READY.clear()
    native = outputs_and_grads(fn, [x64.float().requires_grad_(), w64.float().requires_grad_(), h64.float().requires_grad_()], "cpp")
    assert any(len(key) == 2 and all(isinstance(k, tuple) for k in key) for key in _cpp_backend._TABLES)  # both axes' tables
    exact = outputs_and_grads(fn, [x64.clone().requires_grad_(), w64.clone().requires_grad_(), h64.clone().requires_grad_()], "torch")
    for got, want in zip(native, exact):
        assert relative_error(got, want) < 2e-6
    w_inf = w64.clone()
    w_inf[0, 7] = math.inf
    got = fn(x64.float(), w_inf.float(), h64.float(), "cpp")
    want = fn(x64, w_inf, h64, "torch")
    assert torch.equal(got.isinf(), want.isinf()) and got.isinf().any() and not got.isnan().any()
    assert relative_error(got.nan_to_num(posinf=0.0), want.nan_to_num(posinf=0.0)) < 2e-6

@pytest.mark.parametrize("wants", ["x", "weight", "x, bandwidth"])
def test_2d_table_path_each_gradient_alone_matches_float64(wants):
    """The 2-D table path's backward computes only the gradients asked for (a loop per set):
    each set alone within 2e-6 of the torch engine in float64."""
    x64 = rand(30_000, 2, dtype=torch.float32).double()
    w64 = rand(30_000, lo=0, hi=2, dtype=torch.float32).double()
    h64 = torch.tensor(0.5 / 32, dtype=torch.float32).double()
    leaves = {"x": x64, "weight": w64, "bandwidth": h64}

    def grads(dtype, backend):
        args = {k: v.to(dtype).requires_grad_(k in wants) for k, v in leaves.items()}
        out = softhist.histogramdd(args["x"], 32, range=[(0, 1), (0, 1)], weight=args["weight"], bandwidth=args["bandwidth"], backend=backend)[0]
        asked = [args[k] for k in leaves if k in wants]
        return [out.detach(), *torch.autograd.grad((out * torch.arange(out.numel()).view(out.shape)).sum(), asked)]

    for got, want in zip(grads(torch.float32, "cpp"), grads(torch.float64, "torch")):
        assert relative_error(got, want) < 2e-6


def test_straight_through_gradient_matches_torch_engine():
    x = rand(1000).requires_grad_()

    def fn(x, backend):
        return softhist.histc(x, 10, 0, 1, mode="straight_through", bandwidth=0.05, backend=backend)

    assert_engines_agree(fn, x)


def test_half_precision_input_is_computed_in_float32():
    x = rand(5000, lo=0, hi=1, dtype=torch.float16)
    got = softhist.histc(x, 16, 0, 1, backend="cpp")
    want = softhist.histc(x.float(), 16, 0, 1, backend="cpp")
    assert got.dtype == torch.float32  # half-precision histograms come back in float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_empty_input_gives_zeros_and_gradients():
    x = torch.zeros(0, requires_grad=True)
    hist = softhist.histc(x, 8, 0, 1, backend="cpp")
    hist.sum().backward()
    assert hist.shape == (8,) and not hist.any() and x.grad.shape == (0,)


# --------------------------------------------------------------------------- accuracy at scale


def relative_error(got, want):
    return ((got.double() - want).abs().max() / want.abs().max()).item()


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
@pytest.mark.parametrize("case", ["1d-uniform", "1d-edges", "2d-uniform", "2d-edges"])
def test_float32_within_2e_6_of_float64_at_scale(kernel, case):
    """400K samples (1-D: the sub-bin table path) in float32: output and every gradient within
    2e-6 (max abs error / max abs value) of the same call in float64."""
    joint = case.startswith("2d")
    n = 100_000 if joint else 400_000
    x64 = (rand(n, 2) if joint else rand(n)).float().double()  # values float32 holds exactly
    w64 = rand(n, lo=0, hi=1).float().double()
    bins = 48 if joint else 128
    if case.endswith("edges"):
        edges64 = torch.cat([torch.zeros(1), torch.sort(torch.rand(bins - 1)).values, torch.ones(1)]).float().double()
    else:
        edges64 = None
    results = []
    for dtype in (torch.float32, torch.float64):
        x = x64.to(dtype).requires_grad_()
        w = w64.to(dtype).requires_grad_()
        h = torch.tensor(0.5 / bins, dtype=dtype, requires_grad=True)
        leaves = [x, w, h]
        if joint:
            spec = bins if edges64 is None else [edges64.to(dtype).requires_grad_()] * 2
            hist = softhist.histogramdd(x, spec, range=None if edges64 is not None else [(0, 1)] * 2, weight=w, bandwidth=h, kernel=kernel)[0]
        else:
            spec = bins if edges64 is None else edges64.to(dtype).requires_grad_()
            hist = softhist.histogram(x, spec, range=None if edges64 is not None else (0, 1), weight=w, bandwidth=h, kernel=kernel)[0]
        if edges64 is not None:
            leaves += spec if joint else [spec]
        projection = torch.randn(hist.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        grads = torch.autograd.grad((hist.double() * projection).sum(), leaves[:4] if joint and edges64 is not None else leaves)
        results.append([hist.detach(), *grads])
    for got, want in zip(*results):
        assert relative_error(got, want.double()) < 2e-6


@pytest.mark.parametrize("bandwidth_bins", [0.5, 3.0])  # windows of 8 cells and of more
@pytest.mark.parametrize("projection", ["ones", "randn"])
def test_float32_dots_of_x_and_weight_gradients_within_2e_6(bandwidth_bins, projection):
    """The sub-bin table's per-sample gradients of x and the weights take their dots with the
    cells' gradients in float32: within 2e-6 of float64 for two rows of 300K samples in range, with
    an all-ones projection too (its x gradients cancel to near 0 inside the range, and the largest
    sits at the range ends)."""
    x64 = rand(2, 300_000, lo=0, hi=1, dtype=torch.float32).double()
    w64 = rand(2, 300_000, lo=0.5, hi=1.5, dtype=torch.float32).double()
    shape = (2, 256)
    weights = torch.ones(shape, dtype=torch.float64)
    if projection == "randn":
        weights = torch.randn(shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    results = []
    for dtype in (torch.float32, torch.float64):
        x, w = x64.to(dtype).requires_grad_(), w64.to(dtype).requires_grad_()
        hist = softhist.histc(x, 256, 0, 1, weight=w, bandwidth=bandwidth_bins / 256, dim=1, backend="cpp")
        results.append(torch.autograd.grad((hist.double() * weights).sum(), [x, w]))
    for got, want in zip(*results):
        assert relative_error(got, want.double()) < 2e-6


# --------------------------------------------------------------------------- determinism


def test_bit_identical_across_runs_and_thread_counts():
    x = rand(2, 300_000, dtype=torch.float32).requires_grad_()
    xy = rand(150_000, 2, dtype=torch.float32).requires_grad_()
    edges = torch.tensor([0.0, 0.1, 0.15, 0.5, 0.55, 0.9, 1.0], requires_grad=True)
    h = torch.tensor(0.01, requires_grad=True)

    def run():
        out = [softhist.histc(x, 100, 0, 1, bandwidth=h, dim=1, backend="cpp")]
        out.append(softhist.histogramdd(xy, [edges, 32], range=[None, (0, 1)], bandwidth=h, backend="cpp")[0])
        grads = torch.autograd.grad(sum((o * torch.arange(o.numel()).view(o.shape)).sum() for o in out), [x, xy, edges, h])
        return [o.detach() for o in out] + list(grads)

    same_at_thread_counts(run)



@pytest.mark.parametrize("bandwidth", [0.02, 0.5 / 32])  # 16-cell windows; 8-cell ones (rows in registers)
def test_2d_table_path_bit_identical_across_thread_counts(bandwidth):
    xy = rand(3, 150_000, 2, dtype=torch.float32).requires_grad_()  # several chunks per row
    w = rand(3, 150_000, lo=0, hi=1, dtype=torch.float32).requires_grad_()
    h = torch.tensor(bandwidth, requires_grad=True)

    def run():
        out = softhist.histogramdd(xy, 32, range=[(0, 1), (0, 1)], weight=w, bandwidth=h, backend="cpp")[0]
        grads = torch.autograd.grad((out * torch.arange(out.numel()).view(out.shape)).sum(), [xy, w, h])
        return [out.detach(), *grads]

    same_at_thread_counts(run)

# --------------------------------------------------------------------------- dispatch


def test_auto_takes_the_native_engine_on_cpu():
    assert _ops.select_backend(torch.device("cpu"), "auto") is _cpp_backend
    assert _ops.select_backend(torch.device("meta"), "auto") is not _cpp_backend


def test_explicit_cpp_on_another_device_raises():
    with pytest.raises(ValueError, match="backend='cpp' cannot run here: the input is on meta"):
        softhist.histc(torch.zeros(3, device="meta"), 4, 0, 1, backend="cpp")


def test_missing_kernels_fall_back_once_with_the_reason(monkeypatch):
    monkeypatch.setattr(_cpp_backend, "_LOAD_ERROR", "ImportError: no _C")
    monkeypatch.setattr(_ops, "_SAID", set())
    with pytest.raises(ValueError, match="backend='cpp' cannot run here: .*not built.*no _C"):
        softhist.histc(torch.rand(10), 4, 0, 1, backend="cpp")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = softhist.histc(torch.rand(10), 4, 0, 1)
        softhist.histc(torch.rand(10), 4, 0, 1)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "no _C" in messages[0] and "torch engine" in messages[0]
    assert first.shape == (4,)
    assert "(ImportError: no _C)" in softhist.backends()["cpp"]


def test_native_ops_are_private_and_have_fake_kernels():
    """The engine's ops are private (their arguments are the plan layout) and run on meta tensors."""
    for name in ("_native_soft", "_native_soft_backward", "_native_hard"):
        assert hasattr(torch.ops.softhist, name)
    x = torch.rand(3, 50, 2, dtype=torch.float32)
    ints, floats = _cpp_backend._pack([
        _cpp_backend.NativeAxis(_cpp_backend.EXACT_UNIFORM, 0, 7, 5, 0, 0, 0, 0, 0.0, 7.0, 0.05, 5.3),
        _cpp_backend.NativeAxis(_cpp_backend.EXACT_UNIFORM, 2, 4, 3, 0, 0, 0, 0, 0.0, 4.0, 0.05, 1.8),
    ])
    edges = torch.cat([torch.linspace(0, 1, 8), torch.linspace(0, 1, 5)]).double()
    real = torch.ops.softhist._native_soft(x, None, edges, _cpp_backend._NO_TABLES, ints, floats)
    meta = torch.ops.softhist._native_soft(x.to("meta"), None, edges.to("meta"), _cpp_backend._NO_TABLES.to("meta"), ints, floats)
    assert real.shape == meta.shape == (3, 7, 4) and meta.dtype == real.dtype
    grad = torch.ones_like(real)
    needs = [1, 0, 1, 1, 0]
    real_b = torch.ops.softhist._native_soft_backward(grad, x, None, edges, _cpp_backend._NO_TABLES, ints, floats, needs)
    meta_b = torch.ops.softhist._native_soft_backward(grad.to("meta"), x.to("meta"), None, edges.to("meta"),
                                                       _cpp_backend._NO_TABLES.to("meta"), ints, floats, needs)
    assert [(t.shape, t.dtype) for t in real_b] == [(t.shape, t.dtype) for t in meta_b]
    for dtype in (torch.float64, torch.float32):
        hard = torch.ops.softhist._native_hard(x.to("meta"), None, edges.to("meta"), [7, 4], [0.0, 1.0, 0.0, 1.0], True, dtype)
        real_hard = torch.ops.softhist._native_hard(x, None, edges, [7, 4], [0.0, 1.0, 0.0, 1.0], True, dtype)
        assert hard.shape == real_hard.shape == (3, 7, 4) and hard.dtype == real_hard.dtype == dtype


def test_plan_layout_is_mirrored_in_python():
    """csrc/plan.h's field lists and _cpp_backend.NativeAxis name the same fields in the same order."""
    import pathlib
    import re

    header = (pathlib.Path(__file__).parents[1] / "csrc" / "plan.h").read_text()
    found = {kind: tuple(re.findall(r"X\((\w+)\)", re.search(rf"#define SOFTHIST_AXIS_{kind}\(X\)(.*)", header).group(1)))
             for kind in ("INTS", "FLOATS")}
    assert found["INTS"] == _cpp_backend.INT_FIELDS
    assert found["FLOATS"] == _cpp_backend.FLOAT_FIELDS


@pytest.mark.parametrize("kernel", ["bspline2", "gaussian"])
def test_hard_axis_inside_a_soft_histogram_matches_torch_engine(kernel):
    xy = rand(2, 700, 2).requires_grad_()
    w = rand(2, 700, lo=0.5, hi=1.5).requires_grad_()
    edges = torch.tensor([0.0, 0.1, 0.35, 0.5, 0.9, 1.0], dtype=torch.float64, requires_grad=True)
    h = torch.tensor([0.06, 0.04], dtype=torch.float64, requires_grad=True)

    def fn(xy, w, edges, h, backend):
        return softhist.histogramdd(xy, [9, edges], range=[(0, 1), None], weight=w, kernel=kernel, mode=["soft", "hard"], bandwidth=h,
                                    backend=backend)[0]

    assert_engines_agree(fn, xy, w, edges, h)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hard_counts_equal_the_torch_engine_and_torch_histc(dtype):
    x = torch.cat([rand(50_000, lo=-0.1, hi=1.1), torch.linspace(0, 1, 1000, dtype=torch.float64)]).to(dtype)  # ties on edges
    x[:7] = torch.tensor([math.nan, math.inf, -math.inf, 0.0, 1.0, -0.0, 0.5])
    for backend in ENGINES:
        got = softhist.histc(x, 37, 0, 1, mode="hard", backend=backend)
        assert torch.equal(got, torch.histc(x, 37, 0, 1))
    edges = torch.tensor([0.0, 0.1, 0.1 + 1e-9, 0.5, 1.0], dtype=dtype)
    w = rand(x.numel(), dtype=dtype)
    results = [softhist.histogram(x.view(3, -1), edges, weight=w.view(3, -1), mode="hard", dim=1, backend=b)[0] for b in ENGINES]
    torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=1e-12)
    xy = x[: 2 * 20_000].view(-1, 2)
    joint = [softhist.histogramdd(xy, [5, edges], range=[(0, 1), None], mode="hard", backend=b)[0] for b in ENGINES]
    assert torch.equal(joint[0], joint[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("length", [0, 1, 3, 16, 700, 40_000])
def test_hard_counts_of_many_rows_equal_per_row_counts_at_every_thread_count(dtype, length):
    """Short rows are binned many at a time (and counted in the output's dtype): each row's counts
    equal torch.histc's of that row alone; weighted sums, numpy's edge rule and joint histograms
    equal the torch engine's; all bit-identical across thread counts."""
    rows = max(3, min(3000, 60_000 // max(length, 1)))
    x = rand(rows, length, lo=-0.1, hi=1.1).to(dtype)
    if x.numel():
        x.view(-1)[:: 97] = 0.5  # ties on an edge
        x.view(-1)[1:: 89] = math.nan
    w = rand(rows, length, dtype=dtype)
    edges = torch.tensor([0.0, 0.1, 0.1 + 1e-9, 0.5, 1.0], dtype=dtype)
    xy = torch.stack([x, x.flip(1)], -1).reshape(rows * length, 2)

    def run(backend):
        return [
            softhist.histc(x, 37, 0, 1, mode="hard", dim=1, backend=backend),
            softhist.histc(x, 37, 0, 1, mode="hard", dim=1, weight=w, backend=backend),
            softhist.histogram(x, edges, mode="hard", dim=1, backend=backend)[0],
            softhist.histogram(x, edges, weight=w, mode="hard", dim=1, backend=backend)[0],
            softhist.histogramdd(xy.view(rows, length, 2), [5, edges], range=[(0, 1), None], mode="hard", backend=backend)[0],
            softhist.histc(x, 37, 0, 1, mode="straight_through", dim=1, backend=backend),
        ]

    got = same_at_thread_counts(lambda: run("cpp"), (1, 2, 3))
    assert all(g.dtype == dtype for g in got)
    assert torch.equal(got[0][:50], torch.stack([torch.histc(row, 37, 0, 1) for row in x[:50]]))
    for i, (a, b) in enumerate(zip(got, run("torch"))):
        if i in (1, 3):  # float64 weight sums: the same samples, summed in another order
            torch.testing.assert_close(a, b, rtol=1e-12 if dtype == torch.float64 else 2e-7, atol=0)
        else:
            assert torch.equal(a, b)


def test_histc_past_65536_bins_builds_no_edges_yet_every_path_has_their_values():
    """Past 65,536 bins histc passes shape-only edges (the native engine places equal-width edges
    arithmetically); the torch engine, forward-mode AD and double backward, which read edge
    values, get histc's linspace edges and agree with the native engine."""
    bins, h = 70_000, 2.0 / 70_000
    x = rand(3000, dtype=torch.float64)
    fn = lambda t, backend: softhist.histc(t, bins, 0, 1, bandwidth=h, backend=backend)  # noqa: E731
    assert_engines_agree(fn, x.requires_grad_())
    x = x.detach()
    assert torch.equal(softhist.histc(x, bins, 0, 1, mode="hard"), torch.histc(x, bins, 0, 1))
    tangent = torch.randn_like(x)
    _, jvp = torch.func.jvp(lambda t: fn(t, "cpp"), (x,), (tangent,))
    leaf = x.clone().requires_grad_()
    out = fn(leaf, "cpp")
    probe = torch.randn_like(out)
    (vjp,) = torch.autograd.grad(out, leaf, probe, create_graph=True)  # the differentiable formula
    torch.testing.assert_close((vjp * tangent).sum(), (jvp * probe).sum(), rtol=1e-9, atol=1e-9)
    (fused,) = torch.autograd.grad(fn(leaf, "cpp"), leaf, probe)
    assert ((vjp.detach() - fused).abs().max() / fused.abs().max()).item() < 1e-9


@pytest.mark.parametrize("spacing", ["equal", "log", "all equal"])
def test_hard_counts_against_edges_equal_numpy_at_and_beside_every_edge(spacing):
    """numpy's edge rule: a guess from equal widths, checked against the edges (or binary search)."""
    np = pytest.importorskip("numpy")
    edges = {
        "equal": torch.linspace(-1.0, 3.0, 41, dtype=torch.float64),
        "log": torch.logspace(-3, 0.5, 41, dtype=torch.float64),
        "all equal": torch.full((4,), 0.5, dtype=torch.float64),  # hard mode accepts equal neighbours, as numpy does
    }[spacing]
    beside = torch.cat([edges, torch.nextafter(edges, edges + 1), torch.nextafter(edges, edges - 1)])
    x = torch.cat([beside, rand(20_000, lo=-1.5, hi=3.5)])
    xy = torch.stack([x, x.flip(0)], 1)
    want_1d = np.histogram(x.numpy(), edges.numpy())[0]
    want_2d = np.histogramdd(xy.numpy(), [edges.numpy()] * 2)[0]
    for backend in ENGINES:
        assert np.array_equal(softhist.histogram(x, edges, mode="hard", backend=backend)[0].numpy(), want_1d)
        assert np.array_equal(softhist.histogramdd(xy, [edges, edges], mode="hard", backend=backend)[0].numpy(), want_2d)


@pytest.mark.parametrize("kernel", ["gaussian", "logistic", "bspline", "bspline2"])
def test_gradient_tables_for_many_samples_per_bin_stay_within_2e_6(kernel):
    """Few bins and many samples: the one-axis backward goes through per-grid-point gradient tables."""
    x64 = rand(2, 200_000, dtype=torch.float32).double()  # over 4 samples per grid point (16 + 6 bins x 2049)
    w64 = rand(2, 200_000, lo=0.5, hi=1.5, dtype=torch.float32).double()
    results = []
    for dtype in (torch.float32, torch.float64):
        x, w = x64.to(dtype).requires_grad_(), w64.to(dtype).requires_grad_()
        h = torch.tensor(1 / 32, dtype=dtype, requires_grad=True)
        hist = softhist.histc(x, 16, 0, 1, weight=w, bandwidth=h, kernel=kernel, dim=1)
        projection = torch.randn(hist.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        results.append([hist.detach(), *torch.autograd.grad((hist.double() * projection).sum(), [x, w, h])])
    for got, want in zip(*results):
        assert relative_error(got, want.double()) < 2e-6


@pytest.mark.parametrize("kernel", ["box", "triangular", "epanechnikov"])
@pytest.mark.parametrize("bandwidth_bins", [0.3, 0.5, 1.0 / math.sqrt(3.0), 1.7, 4.0])
def test_compact_kernels_take_the_table_in_pieces_within_2e_6(kernel, bandwidth_bins):
    """The box, triangular and Epanechnikov kernels (density or its derivative jumps) take the
    sub-bin table split at the jumps, forward and backward: output and the gradients of x, the
    weights and the bandwidth in float32 within 2e-6 of the exact windows in float64, at
    bandwidths whose cuts fall anywhere in the bin (1/sqrt3 bins: the box's fall on the bin edges)."""
    bins = 64
    x64 = rand(2, 70_000, dtype=torch.float32).double()  # past _TABLE_BUILD_SAMPLES: builds its table
    w64 = rand(2, 70_000, lo=0.5, hi=1.5, dtype=torch.float32).double()
    h64 = torch.tensor(bandwidth_bins / bins, dtype=torch.float64)
    results = []
    _cpp_backend._TABLES.clear()
    for dtype in (torch.float32, torch.float64):
        x, w, h = (t.to(dtype).requires_grad_() for t in (x64, w64, h64))
        hist = softhist.histc(x, bins, 0, 1, weight=w, bandwidth=h, kernel=kernel, dim=1, backend="cpp")
        projection = torch.randn(hist.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        results.append([hist.detach(), *torch.autograd.grad((hist.double() * projection).sum(), [x, w, h])])
    assert any(key[0].name == kernel and key[2].cuts[0] < 1.0 for key in _cpp_backend._TABLES)  # a table in pieces served it
    for got, want in zip(*results):
        assert relative_error(got, want.double()) < 2e-6


@pytest.mark.parametrize("kernel", ["box", "triangular", "epanechnikov"])
def test_gradient_tables_of_table_pieces_stay_within_2e_6(kernel):
    """The gradient tables over a table in pieces (every row, the rows after each piece included):
    output and the gradients of x and the weights within 2e-6 of float64; the bandwidth's, one
    sum over all samples whose terms cancel to a small total, within 2e-6 of the sum of the
    terms' sizes per bin (sum over bins of |projection * dH/dh|), float32 tables' resolution."""
    x64 = rand(2, 200_000, dtype=torch.float32).double()  # over 4 samples per grid point
    w64 = rand(2, 200_000, lo=0.5, hi=1.5, dtype=torch.float32).double()
    projection = torch.randn(2, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    results = []
    for dtype in (torch.float32, torch.float64):
        x, w = x64.to(dtype).requires_grad_(), w64.to(dtype).requires_grad_()
        h = torch.tensor(1 / 32, dtype=dtype, requires_grad=True)
        hist = softhist.histc(x, 16, 0, 1, weight=w, bandwidth=h, kernel=kernel, dim=1, backend="cpp")
        results.append([hist.detach(), *torch.autograd.grad((hist.double() * projection).sum(), [x, w, h], retain_graph=True)])
    per_bin = torch.stack([torch.autograd.grad(hist[r, b], h, retain_graph=True)[0] for r in range(2) for b in range(16)])
    h_scale = (per_bin.view(2, 16) * projection).abs().sum()
    for got, want in zip(results[0][:3], results[1][:3]):
        assert relative_error(got, want.double()) < 2e-6
    assert abs(results[0][3].double() - results[1][3]) / h_scale < 2e-6


@pytest.mark.parametrize("kernel", ["box", "triangular", "epanechnikov"])
def test_table_pieces_hold_exact_masses_and_derivatives(kernel):
    """Each row of a table in pieces, interpolated where a sample reads it (the piece of its
    position, at its fraction between rows), gives the exact masses and their derivatives in u
    and hb of its window (float64 kernels, relative to their peak) within float32 resolution."""
    k = softhist.kernels.get_kernel(kernel)
    for hb in (0.3, 0.5, 1.7):
        layout = _cpp_backend._table_size(k, hb)
        table = _cpp_backend._build_table(k, hb, layout).double()  # (3, rows, 2, W8)
        f = torch.cat([torch.rand(5000, dtype=torch.float64), torch.tensor([0.0, *layout.cuts[:1], 1.0 - 2**-40])])
        cuts, firsts = [0.0, *layout.cuts, 1.0], [0, *layout.starts, layout.rows]
        piece = (f.unsqueeze(1) >= torch.tensor(cuts[1:3], dtype=torch.float64)).sum(1)
        start, end = torch.tensor(cuts, dtype=torch.float64)[piece], torch.tensor(cuts[1:], dtype=torch.float64)[piece]
        first, after = torch.tensor(firsts)[piece], torch.tensor(firsts[1:])[piece]
        g = (f - start) * ((after - first - 1) / (end - start))
        row, t = first + g.floor().long(), (g - g.floor()).unsqueeze(1)
        z = (torch.arange(-layout.reach, layout.reach + 2, dtype=torch.float64) - f.unsqueeze(1)) / hb
        cdf, pdf = k.cdf(z), k.pdf(z)
        exact = [cdf.diff(dim=1), -pdf.diff(dim=1) / hb, -(z * pdf).diff(dim=1) / hb]
        for quantity, want in enumerate(exact):
            got = table[quantity, row, 0, : want.shape[1]] + t * table[quantity, row, 1, : want.shape[1]]
            assert ((got - want).abs().max() / want.abs().max()).item() < 1e-6


@pytest.mark.parametrize("kernel", ["gaussian", "epanechnikov"])
def test_non_uniform_edges_with_windows_of_many_edges_match_torch_engine(kernel):
    """x^1.5 edges: bins 50x narrower near 0 than near 1, so windows hold from 2 to 30 edges; each
    sample evaluates its own edges (eight at a time, up to the first past its support), the
    same values and gradients (x, weights, bandwidth, edges) as the torch engine."""
    x = torch.cat([rand(3000), torch.tensor([0.0, 1e-4, 0.999, 1.0, -0.011, 1.011], dtype=torch.float64)]).requires_grad_()
    w = rand(x.numel(), lo=0.5, hi=1.5).requires_grad_()
    edges = (torch.linspace(0, 1, 129, dtype=torch.float64) ** 1.5).requires_grad_()
    h = torch.tensor(1.0 / 256, dtype=torch.float64, requires_grad=True)

    def fn(x, w, edges, h, backend):
        return softhist.histogram(x, edges, weight=w, kernel=kernel, bandwidth=h, backend=backend)[0]

    assert_engines_agree(fn, x, w, edges, h)


def test_table_grid_past_int32_takes_the_exact_windows():
    """(bins + 2J) * Q grid points past 2**31 would overflow the table path's int32 positions."""
    bins = 1_100_000  # x 2,048 sub-positions at half a bin of bandwidth: past 2**31
    x = rand(5000, lo=0.0, hi=1.0, dtype=torch.float32)
    got = softhist.histc(x, bins, 0, 1, backend="cpp")
    want = softhist.histc(x.double(), bins, 0, 1, backend="torch")  # bins of 1e-6: float32 differences of x would not do
    assert relative_error(got, want) < 2e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equal_width_edges_as_a_tensor_equal_the_range_form(dtype):
    """Edges bit-equal to ``lo + k (hi - lo) / B`` take the arithmetic windows: the same values and
    gradients as the range form, bit for bit; edges off by one ulp keep the edge search."""
    x = rand(3, 5000, dtype=dtype)
    edges = torch.linspace(0, 1, 65, dtype=dtype)
    # Tables are built once calls have brought enough samples: build them first, so the two
    # forms below never straddle that moment (and so both take the same strategy).
    warm = rand(_cpp_backend._TABLE_BUILD_SAMPLES, dtype=dtype).requires_grad_()
    softhist.histogram(warm, 64, range=(0, 1), backend="cpp")[0].sum().backward()

    def both(edges):
        leaves = [x.clone().requires_grad_() for _ in range(2)]
        a = softhist.histogram(leaves[0], 64, range=(0, 1), dim=1, backend="cpp")[0]
        b = softhist.histogram(leaves[1], edges, dim=1, backend="cpp")[0]
        projection = torch.randn(a.shape, dtype=dtype, generator=torch.Generator().manual_seed(2))
        (ga,), (gb,) = (torch.autograd.grad((h * projection).sum(), [leaf]) for h, leaf in zip((a, b), leaves))
        return a, b, ga, gb

    a, b, ga, gb = both(edges)
    assert torch.equal(a, b) and torch.equal(ga, gb)
    nudged = edges.clone()
    nudged[17] = torch.nextafter(nudged[17], torch.tensor(1.0, dtype=dtype))
    a, b, ga, gb = both(nudged)
    assert not torch.equal(a, b)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("calls", ["one large", "many small"])
def test_plan_is_cached_and_tables_serve_small_calls_once_built(calls):
    """The plan depends on the binning alone (cached); a table is built once the calls that
    could use it have brought _TABLE_BUILD_SAMPLES samples (one large call or many small ones),
    after which calls of any size read it, within 2e-6 of float64."""
    _cpp_backend._TABLES.clear()
    _cpp_backend._READY.clear()
    _cpp_backend._SAMPLES_SEEN.clear()
    small = rand(700, dtype=torch.float32)
    exact = softhist.histc(small.double(), 40, 0, 1, bandwidth=0.013, backend="cpp")
    before = softhist.histc(small, 40, 0, 1, bandwidth=0.013, backend="cpp")
    assert not _cpp_backend._TABLES  # not yet worth building
    if calls == "one large":
        softhist.histc(rand(_cpp_backend._TABLE_BUILD_SAMPLES, dtype=torch.float32), 40, 0, 1, bandwidth=0.013, backend="cpp")
    else:
        for _ in range(_cpp_backend._TABLE_BUILD_SAMPLES // 700):
            softhist.histc(small, 40, 0, 1, bandwidth=0.013, backend="cpp")
    assert len(_cpp_backend._TABLES) == 1
    after = softhist.histc(small, 40, 0, 1, bandwidth=0.013, backend="cpp")
    for got in (before, after):
        assert relative_error(got, exact) < 2e-6

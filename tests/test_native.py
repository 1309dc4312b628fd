"""The native CPU engine (``backend="cpp"``): outputs and every gradient against the dense
reference and the torch engine, for every kernel, strategy and axis count; accuracy at
scale; bit-identical results across runs and thread counts; dispatch and fallback."""

import importlib
import math
import warnings

import pytest
import torch

import softhist
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

    threads = torch.get_num_threads()
    try:
        results = []
        for count in (1, 2, 3, 1):
            torch.set_num_threads(count)
            results.append(run())
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


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
    hard = torch.ops.softhist._native_hard(x.to("meta"), None, edges.to("meta"), [7, 4], [0.0, 1.0, 0.0, 1.0], True)
    assert hard.shape == (3, 7, 4) and hard.dtype == torch.float64


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

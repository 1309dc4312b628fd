"""The native engine on its own: size products that overflow raise clear errors (never a crash),
non-finite weights stay in the bins their kernel reaches, and many short rows cost one pass."""

import math

import pytest
import torch

import softhist
from conftest import run_in_fresh_process

pytestmark = pytest.mark.skipif(
    softhist.backends()["cpp"] is not None, reason=f"native kernels unavailable: {softhist.backends()['cpp']}"
)


def test_overflowing_cell_counts_raise_instead_of_crashing():
    """65536**4 and 256**8 cells overflow int64: an error for each (soft and hard), in one
    process of their own so that a crash fails the test."""
    cases = [(dims, bins, mode) for dims, bins in ((4, 65536), (8, 256)) for mode in ("soft", "hard")]
    code = (
        "import torch, softhist\n"
        f"for dims, bins, mode in {cases!r}:\n"
        "    try:\n"
        "        softhist.histogramdd(torch.rand(10, dims), bins, range=[(0, 1)] * dims, mode=mode, backend='cpp')\n"
        "        print('returned')\n"
        "    except (RuntimeError, ValueError) as error:\n"
        "        print('raised:', str(error).replace('\\n', ' '))\n"
    )
    done = run_in_fresh_process(code)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) == len(cases), done.stdout
    for case, line in zip(cases, lines):
        assert line.startswith("raised:") and ("overflow" in line or "too many" in line.lower()), (case, line)


def test_engine_checks_sizes_itself():
    """The op called directly (below any Python check): an overflowing plan is refused."""
    from softhist import _cpp_backend as cb

    x = torch.rand(1, 4, 4)
    axes = [cb.NativeAxis(cb.HARD, 0, 65536, 2, 0, 0, 0, 0, 0.0, 1.0, 0.1, 1.0)] * 4
    ints, floats = cb._pack(axes)
    edges = torch.zeros(4 * 65537, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="overflow"):
        torch.ops.softhist._native_soft(x, None, edges, cb._NO_TABLES, ints, floats)
    with pytest.raises(RuntimeError, match="overflow"):
        torch.ops.softhist._native_hard(x, None, edges, [65536] * 4, [0.0, 1.0] * 4, False, torch.float64)


def _without_the_infinite_sample(fn, x, w, bad):
    finite = w.clone()
    finite[bad] = 0.0
    return fn(x, finite)


@pytest.mark.parametrize("n", [2, 20_000])  # exact windows; the 1-D table
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("kernel", ["gaussian", "box", "triangular"])
def test_a_non_finite_weight_stays_in_the_bins_its_kernel_reaches_1d(n, value, kernel):
    x = torch.rand(n)
    x[0], x[1] = 0.06, 0.9
    w = torch.ones(n)
    w[0] = value

    def fn(x, w):
        return softhist.histogram(x, 8, range=(0, 1), weight=w, kernel=kernel, bandwidth=0.01, backend="cpp")[0]

    got, rest = fn(x, w), _without_the_infinite_sample(fn, x, w, 0)
    reached = torch.zeros(8, dtype=torch.bool)
    reached[0] = True  # x = 0.06 with bandwidth 0.01 reaches only [0, 0.125) (T = 5.3 at most)
    want = torch.where(reached, torch.full_like(rest, value), rest)
    torch.testing.assert_close(got, want, equal_nan=True)
    hard = softhist.histogram(x, 8, range=(0, 1), weight=w, mode="hard", backend="cpp")[0]
    assert torch.isfinite(hard[1:]).all()


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_a_non_finite_weight_stays_in_the_cells_its_kernel_reaches_nd(dims, backend):
    x = torch.rand(300, dims)
    x[0] = 0.1
    w = torch.ones(300)
    w[0] = math.inf

    def fn(x, w):
        return softhist.histogramdd(x, 4, range=[(0, 1)] * dims, weight=w, bandwidth=0.01, backend=backend)[0]

    got, rest = fn(x, w), _without_the_infinite_sample(fn, x, w, 0)
    corner = (0,) * dims
    assert got[corner] == math.inf
    got[corner] = rest[corner]
    torch.testing.assert_close(got, rest)


def test_a_non_finite_weight_in_the_torch_engine_window_path():
    x, w = torch.tensor([0.1, 0.9]), torch.tensor([math.inf, 1.0])
    got = softhist.histogram(x, 2, range=(0, 1), weight=w, bandwidth=0.05, backend="torch")[0]
    assert got[0] == math.inf and math.isfinite(got[1])


@pytest.mark.parametrize("mode", ["soft", "hard"])
@pytest.mark.parametrize("width", [1, 16])
def test_many_short_rows_equal_each_row_alone(mode, width):
    """65,536 rows of 16 (and of 1) in one pass: the same as each row histogrammed alone, and the
    same at 1 and 2 threads."""
    X = torch.rand(4096, width)
    X[::7] = torch.rand(X[::7].shape) * 1.4 - 0.2
    got = softhist.histc(X, 32, 0, 1, dim=1, mode=mode, backend="cpp")
    rows = torch.stack([softhist.histc(X[r], 32, 0, 1, mode=mode, backend="cpp") for r in range(0, 4096, 97)])
    torch.testing.assert_close(got[::97], rows, rtol=2e-6, atol=2e-6)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = softhist.histc(X, 32, 0, 1, dim=1, mode=mode, backend="cpp")
        torch.set_num_threads(2)
        two = softhist.histc(X, 32, 0, 1, dim=1, mode=mode, backend="cpp")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two) and torch.equal(one, got)


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_infinite_weights_reach_only_their_kernels_bins_on_the_table_paths(backend):
    """Many float32 samples take the engines' sub-bin tables; a weight of +inf, -inf or NaN
    makes exactly the bins its kernel reaches non-finite (as the float64 windows do), and every
    other bin stays within 2e-6 of float64."""
    x = torch.rand(1 << 20, generator=torch.Generator().manual_seed(4))
    w = torch.rand(1 << 20, generator=torch.Generator().manual_seed(5))
    x[:3] = torch.tensor([0.1, 0.6, 0.63])
    w[:3] = torch.tensor([math.inf, -math.inf, math.nan])
    got = softhist.histc(x, 64, 0, 1, weight=w, backend=backend)
    want = softhist.histc(x.double(), 64, 0, 1, weight=w.double(), backend="torch")
    finite = torch.isfinite(want)
    assert 0 < int((~finite).sum()) < 20
    assert torch.equal(torch.isfinite(got), finite)
    assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.isposinf(), want.isposinf())
    assert ((got[finite].double() - want[finite]).abs().max() / want[finite].abs().max()).item() < 2e-6


def test_window_buffers_stay_bounded_whatever_the_bandwidth():
    """A bandwidth covering the whole range puts every edge in each sample's window (65,537
    here): blocks of samples shrink so the window buffers stay within a few MiB (they took
    770 MB), forward and backward, in a fresh process whose peak RSS is measured."""
    code = (
        "import resource, torch, softhist\n"
        "x = torch.rand(1024).requires_grad_()\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "h = softhist.histc(x, 65536, 0, 1, bandwidth=1.0, backend='cpp')\n"
        "h.sum().backward()\n"
        "assert torch.isfinite(x.grad).all() and torch.isfinite(h).all()\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)\n"
    )
    done = run_in_fresh_process(code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.split()[-1]) < 100  # MiB above the start


@pytest.mark.parametrize("call", [
    "softhist.histc(x, BINS, 0, 1)",
    "softhist.histc(x, BINS, 0, 1, mode='hard')",
    "softhist.histc(x, BINS, 0, 1, mode='hard', weight=w)",
    "softhist.histogramdd(xy, [4472, 4472], range=[(0, 1), (0, 1)])[0]",
])
def test_memory_at_huge_bin_counts_is_three_outputs_plus_the_samples(call):
    """1M samples into 2e7 bins (or 4472^2 cells): the peak RSS growth of a fresh process stays
    within 3x the 80 MB float32 output plus 32 bytes per sample, whatever the bin count. Counts
    are written in the output's dtype (no float64 copy to convert), hard counts in the output
    itself, histc's equal-width edges are not built, and the soft forward's one float64 partial
    is all it adds (it peaked at 6x, 5x in 2-D, hard counts at 5x)."""
    from conftest import run_measuring_peak

    out = run_measuring_peak(
        """
        torch.manual_seed(0)
        BINS, N = 20_000_000, 1_000_000
        x, w, xy = torch.rand(N), torch.rand(N), torch.rand(N, 2)
        softhist.histc(x[:100], 10, 0, 1), softhist.histc(x[:100], 10, 0, 1, mode="hard", weight=w[:100])  # first calls
        softhist.histogramdd(xy[:100], [10, 10], range=[(0, 1), (0, 1)])
        before = peak_rss()
        h = CALL
        print(peak_rss() - before, h.numel() * h.element_size(), float(h.sum()))
        """.replace("CALL", call)
    )
    growth, output, total = (float(v) for v in out.split())
    assert 79e6 < output <= 80e6
    assert total == pytest.approx(5e5 if "weight" in call else 1e6, rel=0.01)  # every sample counted (half its weight on average)
    assert growth <= 3 * output + 32 * 1_000_000, f"peak {growth / 1e6:.0f} MB for an {output / 1e6:.0f} MB output"

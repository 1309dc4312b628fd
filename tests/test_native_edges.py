"""The native engine's one-axis path for explicit (non-uniform) edges in float32 (csrc/edges_1d.cpp):
each sample walks its own edges, eight at a time, reading the Gaussian's or logistic's CDF and
density from a cubic table, or with many samples adds Hermite moments on a grid of nodes (the
compact kernels take the general exact windows, checked here too). Against the torch engine in float64: values and every gradient (x, weights, bandwidth,
edges)."""

import pytest
import torch

import softhist
from conftest import same_at_thread_counts
from softhist._plan import NATIVE_KERNELS

pytestmark = pytest.mark.skipif(
    softhist.backends()["cpp"] is not None, reason=f"native kernels unavailable: {softhist.backends()['cpp']}"
)

KERNEL_NAMES = sorted(NATIVE_KERNELS)


def relative_error(got, want):
    return ((got.double() - want).abs().max() / want.abs().max()).item()


def float32_values(t):
    return t.float().double()  # values float32 holds exactly, so both precisions see the same input


def outputs_and_grads(x, w, edges, h, kernel, dtype, backend):
    leaves = [t.to(dtype).requires_grad_() for t in (x, w, edges, h)]
    out = softhist.histogram(leaves[0], leaves[2], weight=leaves[1], bandwidth=leaves[3], kernel=kernel, backend=backend)[0]
    projection = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return [out.detach(), *torch.autograd.grad((out.double() * projection).sum(), leaves)]


def assert_float32_matches_float64(x, w, edges, h, kernel, reference="torch"):
    got = outputs_and_grads(x, w, edges, h, kernel, torch.float32, "cpp")
    want = outputs_and_grads(x, w, edges, h, kernel, torch.float64, reference)
    for name, a, b in zip(("histogram", "x", "weight", "edges", "bandwidth"), got, want):
        assert relative_error(a, b) < 2e-6, name


EDGES = {
    "x^1.5": torch.linspace(0, 1, 257, dtype=torch.float64) ** 1.5,
    "x^3": torch.linspace(0, 1, 65, dtype=torch.float64) ** 3,  # the first bin 260,000x narrower than the last
    "clustered": torch.tensor([0.0, 1e-3, 1.5e-3, 2e-3, 0.1, 0.5, 0.5001, 0.9, 1.0], dtype=torch.float64),
}


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
@pytest.mark.parametrize("edges", list(EDGES))
def test_values_and_every_gradient_within_2e_6_of_float64(kernel, edges):
    """Samples inside and outside the edges (some beyond every kernel's reach), weights, and a
    bandwidth of a quarter of the mean bin: windows from 2 to dozens of edges."""
    e = float32_values(EDGES[edges])
    torch.manual_seed(0)
    x = float32_values(torch.rand(60_000, dtype=torch.float64) * 1.4 - 0.2)
    w = float32_values(torch.rand(x.numel(), dtype=torch.float64) + 0.5)
    h = float32_values(torch.tensor(0.25 / (e.numel() - 1), dtype=torch.float64))
    assert_float32_matches_float64(x, w, e, h, kernel)


@pytest.mark.parametrize("kernel", ["gaussian", "logistic", "epanechnikov"])
@pytest.mark.parametrize("bins", [1, 2, 3, 9])
def test_supports_wider_than_every_edge(kernel, bins):
    """A bandwidth whose support spans the whole axis many times over: each sample walks every
    edge (groups past the last edge read it again and add nothing), and edges at the ends get
    the gradients of the mass the kernel puts outside them."""
    torch.manual_seed(1)
    e = float32_values(torch.sort(torch.rand(bins + 1, dtype=torch.float64)).values)
    x = float32_values(torch.rand(2_000, dtype=torch.float64) * 3 - 1)
    w = float32_values(torch.rand(x.numel(), dtype=torch.float64))
    h = float32_values(torch.tensor(0.7, dtype=torch.float64))
    assert_float32_matches_float64(x, w, e, h, kernel)


def test_edges_too_unequal_for_the_lookup_grid():
    """A bin 10^-9 of the axis wide would need a lookup grid of 2 x 10^9 cells: the walk finds its
    first edge by search instead, with the same results."""
    e = float32_values(torch.tensor([0.0, 1e-9, 0.25, 0.5, 1.0], dtype=torch.float64))
    torch.manual_seed(2)
    x = float32_values(torch.rand(5_000, dtype=torch.float64) * 1.2 - 0.1)
    w = torch.ones_like(x)
    h = torch.tensor(0.02, dtype=torch.float64)
    assert_float32_matches_float64(x, w, e, h, "gaussian")


def test_non_finite_weights_and_samples():
    """An infinite weight fills only the bins its sample reaches (as the float64 path does); NaN
    samples and samples out of reach add nothing and get zero gradients."""
    e = torch.linspace(0, 1, 33) ** 1.5
    x = torch.tensor([0.3, float("nan"), 5.0, -5.0, 0.7])
    w = torch.tensor([1.0, 1.0, 1.0, 1.0, float("inf")])
    got = softhist.histogram(x, e, weight=w, bandwidth=0.01, backend="cpp")[0]
    want = softhist.histogram(x.double(), e.double(), weight=w.double(), bandwidth=0.01, backend="cpp")[0]
    assert torch.equal(got.double().isinf(), want.isinf())
    finite = want.isfinite()
    assert relative_error(got[finite], want[finite]) < 2e-6
    xg = x.clone().requires_grad_()
    out = softhist.histogram(xg, e, bandwidth=0.01, backend="cpp")[0]
    (grad,) = torch.autograd.grad(out.sum() + (out * torch.arange(32.0)).sum(), [xg])
    assert grad[1] == 0 and grad[2] == 0 and grad[3] == 0 and grad[0] != 0


def test_bit_identical_across_thread_counts():
    x = (torch.rand(2, 300_000) * 1.2 - 0.1).requires_grad_()
    w = torch.rand(2, 300_000).requires_grad_()
    edges = (torch.linspace(0, 1, 129) ** 1.5).requires_grad_()
    h = torch.tensor(0.003, requires_grad=True)

    def run():
        out = softhist.histogram(x, edges, weight=w, bandwidth=h, dim=1, backend="cpp")[0]
        grads = torch.autograd.grad((out * torch.arange(out.numel()).view(out.shape)).sum(), [x, w, edges, h])
        return [out.detach(), *grads]

    same_at_thread_counts(run)


@pytest.mark.parametrize("kernel", ["gaussian", "logistic"])
@pytest.mark.parametrize("edges", list(EDGES))
def test_many_samples_through_the_node_grid(kernel, edges):
    """Samples far outnumbering the grid nodes (h / 32 apart) take the node grid: each sample adds
    four Hermite moments, or reads its gradients from per-row node values, whatever its window.
    Values and every gradient within 2e-6 of the float64 engine, as the walk."""
    e = float32_values(EDGES[edges])
    torch.manual_seed(4)
    x = float32_values(torch.rand(400_000, dtype=torch.float64) * 1.4 - 0.2)
    w = float32_values(torch.rand(x.numel(), dtype=torch.float64) + 0.5)
    h = float32_values(torch.tensor(0.5 / (e.numel() - 1), dtype=torch.float64))
    # Against the native engine's float64 exact windows (tests/test_native.py holds them to the
    # torch engine on these edges' kind): the same float64 numbers, in a fraction of the time.
    assert_float32_matches_float64(x, w, e, h, kernel, reference="cpp")


def test_non_finite_weights_through_the_node_grid():
    """Among many samples, an infinite weight still fills only the bins its sample reaches, and its
    gradients are the walk's exact terms."""
    e = torch.linspace(0, 1, 65) ** 1.5
    torch.manual_seed(5)
    x = torch.rand(300_000)
    w = torch.rand(x.numel()) + 0.5
    w[1000] = float("inf")
    x[1000] = 0.5
    got = softhist.histogram(x, e, weight=w, backend="cpp")[0]
    want = softhist.histogram(x.double(), e.double(), weight=w.double(), backend="cpp")[0]
    assert torch.equal(got.double().isinf(), want.isinf()) and 0 < int(want.isinf().sum()) < 64
    finite = want.isfinite()
    assert relative_error(got[finite], want[finite]) < 2e-6

"""Statistics and losses: hard-mode values against scipy / scikit-learn, gradcheck on soft
histograms in float64, finite gradients on empty cells and constant input, bad input."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import mutual_info_score, normalized_mutual_info_score
from torch.autograd import gradcheck

import softhist
from conftest import sweep_gradcheck

F64 = torch.float64


def _counts(*shape, zeros=True):
    """Random positive counts; with ``zeros``, every third cell (diagonally) is exactly empty,
    so every fiber of 3 or more cells along any axis has empty and non-empty cells."""
    c = torch.randint(1, 40, shape).to(F64)
    if zeros:
        c[sum(torch.meshgrid(*(torch.arange(n) for n in shape), indexing="ij")) % 3 == 0] = 0
    return c


def _labels(x, edges):
    """Bin index of each sample under numpy's rule: [e_k, e_k+1), the last bin closed."""
    return np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)


def _soft_hist(x, bins=7, bandwidth=0.08, kernel="gaussian"):
    return softhist.histogram(x, bins, range=(0.0, 1.0), bandwidth=bandwidth, kernel=kernel, dim=-1)[0]


# --------------------------------------------------------------------------- values vs scipy


@pytest.mark.parametrize("dim", [-1, 1, 0])
def test_entropy_kl_js_equal_scipy(dim):
    p, q = _counts(3, 5, 11), _counts(3, 5, 11, zeros=False)  # q > 0 wherever p > 0
    axis = dim % 3
    ours = softhist.entropy(p, dim=dim)
    assert ours.shape == tuple(s for i, s in enumerate(p.shape) if i != axis)
    np.testing.assert_allclose(ours.numpy(), scipy.stats.entropy(p.numpy(), axis=axis), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        softhist.kl_divergence(p, q, dim=dim).numpy(), scipy.stats.entropy(p.numpy(), q.numpy(), axis=axis), rtol=1e-12, atol=1e-14
    )
    np.testing.assert_allclose(
        softhist.js_divergence(p, q, dim=dim).numpy(), jensenshannon(p.numpy(), q.numpy(), axis=axis) ** 2, rtol=1e-10, atol=1e-14
    )


def test_js_disjoint_supports_is_log2_and_symmetric():
    p, q = torch.tensor([3.0, 1.0, 0.0, 0.0], dtype=F64), torch.tensor([0.0, 0.0, 5.0, 2.0], dtype=F64)
    assert softhist.js_divergence(p, q).item() == pytest.approx(math.log(2), abs=1e-15)
    a, b = _counts(4, 9), _counts(4, 9, zeros=False)
    torch.testing.assert_close(softhist.js_divergence(a, b), softhist.js_divergence(b, a), rtol=1e-14, atol=1e-16)


def test_wasserstein_equals_scipy_on_nonuniform_edges():
    p, q = _counts(4, 9), _counts(4, 9, zeros=False)
    edges = torch.cumsum(torch.rand(10, dtype=F64) + 0.05, 0) - 2.0
    centers = (0.5 * (edges[1:] + edges[:-1])).numpy()
    ours = softhist.wasserstein(p, q, edges)
    ref = [scipy.stats.wasserstein_distance(centers, centers, p[i].numpy(), q[i].numpy()) for i in range(4)]
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-12, atol=1e-14)
    # Along another dim, and a shift of every mass by one bin costs exactly the center gap.
    np.testing.assert_allclose(softhist.wasserstein(p.T, q.T, edges, dim=0).numpy(), ref, rtol=1e-12)
    one, two = torch.zeros(9, dtype=F64), torch.zeros(9, dtype=F64)
    one[3], two[4] = 2.0, 7.0
    assert softhist.wasserstein(one, two, edges).item() == pytest.approx(centers[4] - centers[3], rel=1e-14)


def test_statistics_of_hard_histograms_equal_scipy_on_numpy_histograms():
    a, b = torch.randn(5000, dtype=F64), 0.7 * torch.randn(4000, dtype=F64) + 0.4
    ha, edges = softhist.histogram(a, 23, range=(-3.0, 3.0), mode="hard")
    hb, _ = softhist.histogram(b, 23, range=(-3.0, 3.0), mode="hard")
    na, nedges = np.histogram(a.numpy(), 23, range=(-3.0, 3.0))
    nb, _ = np.histogram(b.numpy(), 23, range=(-3.0, 3.0))
    centers = 0.5 * (nedges[1:] + nedges[:-1])
    assert softhist.entropy(ha).item() == pytest.approx(scipy.stats.entropy(na), rel=1e-12)
    assert softhist.js_divergence(ha, hb).item() == pytest.approx(jensenshannon(na, nb) ** 2, rel=1e-10)
    assert softhist.wasserstein(ha, hb, edges).item() == pytest.approx(
        scipy.stats.wasserstein_distance(centers, centers, na, nb), rel=1e-12
    )


# --------------------------------------------------------------------------- mutual information vs scikit-learn


@pytest.mark.parametrize("bins", [7, [5, 9], "edges"])
def test_mutual_information_hard_equals_sklearn(bins):
    x = torch.rand(2, 3, 1001, dtype=F64)
    y = (x + 0.3 * torch.rand(2, 3, 1001, dtype=F64)) ** 2
    if bins == "edges":
        bins = [torch.tensor([0.0, 0.1, 0.15, 0.5, 0.9, 1.0], dtype=F64), torch.tensor([0.0, 0.3, 0.7, 1.8], dtype=F64)]
        edges = [b.numpy() for b in bins]
    else:
        bx, by = (bins, bins) if isinstance(bins, int) else bins
        edges = [np.linspace(x.min().item(), x.max().item(), bx + 1), np.linspace(y.min().item(), y.max().item(), by + 1)]
    mi = softhist.mutual_information(x, y, bins, mode="hard")
    nmi = softhist.mutual_information(x, y, bins, mode="hard", normalized=True)
    assert mi.shape == nmi.shape == (2, 3)
    for i in np.ndindex(2, 3):
        lx, ly = _labels(x[i].numpy(), edges[0]), _labels(y[i].numpy(), edges[1])
        assert mi[i].item() == pytest.approx(mutual_info_score(lx, ly), abs=1e-12)
        assert nmi[i].item() == pytest.approx(normalized_mutual_info_score(lx, ly), abs=1e-12)
        # and from the contingency table numpy computes
        table = np.histogram2d(x[i].numpy(), y[i].numpy(), edges)[0].astype(np.int64)
        assert mi[i].item() == pytest.approx(mutual_info_score(None, None, contingency=table), abs=1e-12)


def test_mutual_information_limits_match_sklearn():
    x = torch.rand(500, dtype=F64)
    same = softhist.mutual_information(x, x, 8, mode="hard")
    assert same.item() == pytest.approx(softhist.entropy(softhist.histogram(x, 8, mode="hard")[0]).item(), abs=1e-13)
    assert softhist.mutual_information(x, x, 8, mode="hard", normalized=True).item() == pytest.approx(1.0, abs=1e-13)
    # one axis in a single bin: MI 0, NMI 0; both: NMI 1 (scikit-learn's perfect match)
    one = torch.full_like(x, 0.5)
    assert abs(softhist.mutual_information(one, x, 8, mode="hard").item()) < 1e-15
    assert softhist.mutual_information(one, x, 8, mode="hard", normalized=True).item() == 0.0
    assert normalized_mutual_info_score(np.zeros(500), _labels(x.numpy(), np.linspace(0, 1, 9))) == 0.0
    assert softhist.mutual_information(one, one, 8, mode="hard", normalized=True).item() == 1.0
    assert normalized_mutual_info_score(np.zeros(500), np.zeros(500)) == 1.0


def test_mutual_information_soft_approaches_hard_and_range_forms_agree():
    x = torch.rand(4000, dtype=F64)
    y = torch.sin(6 * x) + 0.1 * torch.rand(4000, dtype=F64)
    rng = [(0.0, 1.0), (-1.0, 1.1)]
    hard = softhist.mutual_information(x, y, 12, range=rng, mode="hard")
    soft = softhist.mutual_information(x, y, 12, range=rng, bandwidth=[1e-5, 1e-5], kernel="box")
    assert soft.item() == pytest.approx(hard.item(), abs=1e-3)
    wide = softhist.mutual_information(x, y, 12, range=rng)  # smoothing can only lose information
    assert 0 < wide.item() < hard.item()
    both = softhist.mutual_information(x, x, 12, range=(0.0, 1.0))
    torch.testing.assert_close(both, softhist.mutual_information(x, x, 12, range=[(0.0, 1.0), (0.0, 1.0)]), rtol=0, atol=0)


def test_mutual_information_batched_equals_rows_and_float32():
    x = torch.rand(2, 3, 300)
    y = x**2 + 0.05 * torch.randn(2, 3, 300)
    mi = softhist.mutual_information(x, y, 10, range=[(0, 1), (-0.2, 1.2)])
    assert mi.shape == (2, 3) and mi.dtype == torch.float32
    for i in np.ndindex(2, 3):
        row = softhist.mutual_information(x[i].double(), y[i].double(), 10, range=[(0, 1), (-0.2, 1.2)])
        assert mi[i].item() == pytest.approx(row.item(), abs=2e-5)


# --------------------------------------------------------------------------- gradcheck on soft histograms


def test_gradcheck_divergences_on_histogram_values():
    p = (torch.rand(2, 6, dtype=F64) + 0.1).requires_grad_()
    q = (torch.rand(2, 6, dtype=F64) + 0.1).requires_grad_()
    edges = (torch.cumsum(torch.rand(7, dtype=F64) + 0.1, 0)).requires_grad_()
    assert gradcheck(softhist.entropy, (p,))
    assert gradcheck(softhist.kl_divergence, (p, q))
    assert gradcheck(softhist.js_divergence, (p, q))
    assert gradcheck(softhist.wasserstein, (p, q, edges))


@pytest.mark.parametrize("kernel", ["gaussian", "bspline"])
def test_gradcheck_divergences_through_soft_histograms(kernel):
    x = torch.rand(2, 15, dtype=F64, requires_grad=True)
    t = torch.rand(2, 15, dtype=F64, requires_grad=True)
    h = torch.tensor(0.09, dtype=F64, requires_grad=True)
    edges = softhist.histogram(x.detach(), 7, range=(0.0, 1.0))[1]

    def stats(x, t, h):
        hx, ht = _soft_hist(x, bandwidth=h, kernel=kernel), _soft_hist(t, bandwidth=h, kernel=kernel)
        return torch.stack([
            softhist.entropy(hx), softhist.kl_divergence(hx, ht), softhist.js_divergence(hx, ht), softhist.wasserstein(hx, ht, edges)
        ])

    assert gradcheck(stats, (x, t, h), eps=1e-6, atol=1e-5, **sweep_gradcheck(kernel))


@pytest.mark.parametrize("normalized", [False, True])
def test_gradcheck_mutual_information(normalized):
    x = torch.rand(2, 7, dtype=F64, requires_grad=True)
    y = torch.rand(2, 7, dtype=F64, requires_grad=True)
    w = torch.rand(2, 7, dtype=F64, requires_grad=True)
    hx = torch.tensor(0.11, dtype=F64, requires_grad=True)
    hy = torch.tensor(0.07, dtype=F64, requires_grad=True)

    def mi(x, y, w, hx, hy):
        return softhist.mutual_information(
            x, y, [5, 4], range=[(0.0, 1.0), (-0.1, 1.1)], weight=w, bandwidth=[hx, hy], normalized=normalized
        )

    assert gradcheck(mi, (x, y, w, hx, hy), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("metric", ["wasserstein", "l1", "kl"])
def test_gradcheck_histogram_matching_loss(metric):
    x = torch.rand(2, 11, dtype=F64, requires_grad=True)
    target = torch.rand(13, dtype=F64, requires_grad=True)
    edges = torch.tensor([-0.1, 0.2, 0.3, 0.6, 0.8, 1.1], dtype=F64, requires_grad=True)
    h = torch.tensor(0.1, dtype=F64, requires_grad=True)

    def loss(x, target, edges, h):
        return softhist.histogram_matching_loss(x, target, edges, bandwidth=h, metric=metric)

    assert gradcheck(loss, (x, target, edges, h), eps=1e-6, atol=1e-5)
    hist = (torch.rand(5, dtype=F64) + 0.05).requires_grad_()
    assert gradcheck(
        lambda x, hist: softhist.histogram_matching_loss(x, hist, 5, range=(0.0, 1.0), metric=metric, target_type="histogram"),
        (x, hist), eps=1e-6, atol=1e-5,
    )


# --------------------------------------------------------------------------- empty cells, constant input, precision


def test_empty_cells_and_empty_histograms_give_finite_gradients():
    p = torch.tensor([[0.0, 2.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]], dtype=F64, requires_grad=True)
    q = torch.tensor([[1.0, 0.0, 0.0, 3.0], [1.0, 1.0, 1.0, 1.0]], dtype=F64, requires_grad=True)
    edges = torch.arange(5, dtype=F64, requires_grad=True)
    for stat in (
        lambda: softhist.entropy(p), lambda: softhist.kl_divergence(p, q), lambda: softhist.kl_divergence(q, p),
        lambda: softhist.js_divergence(p, q), lambda: softhist.wasserstein(p, q, edges),
    ):
        value = stat()
        grads = torch.autograd.grad(value.sum(), (p, q, edges), allow_unused=True)
        assert torch.isfinite(value).all()
        assert all(g is None or torch.isfinite(g).all() for g in grads)
    # An empty histogram counts as uniform, and nothing flows back through its zero normalizer.
    assert softhist.entropy(p)[1].item() == pytest.approx(math.log(4), abs=1e-15)
    assert softhist.kl_divergence(p, q)[1].item() == 0.0 and softhist.wasserstein(p, q, edges)[1].item() == 0.0
    grad = torch.autograd.grad(softhist.entropy(p)[1], p)[0]
    assert torch.equal(grad[1], torch.zeros(4, dtype=F64))
    # KL where q = 0 < p is +inf mathematically: here large and finite, log clamped at float64's tiny.
    kl = softhist.kl_divergence(q, p)[0].item()
    assert 0.25 * 700 < kl < 0.25 * 710 + 1


@pytest.mark.parametrize("mode", ["soft", "straight_through"])
@pytest.mark.parametrize("case", ["x constant", "y constant", "both constant", "sparse box"])
def test_mutual_information_gradients_finite_on_constant_input_and_empty_cells(case, mode):
    x = torch.rand(400, dtype=F64)
    y = x**3
    kernel, bandwidth = "gaussian", None
    if case in ("x constant", "both constant"):
        x = torch.full_like(x, 0.3)
    if case in ("y constant", "both constant"):
        y = torch.full_like(y, 0.7)
    if case == "sparse box":  # most of the 24 x 24 joint cells are exactly empty
        kernel, bandwidth = "box", 0.01
    x, y = x.requires_grad_(), y.requires_grad_()
    for rng in (None, (0.0, 1.0)):
        for normalized in (False, True):
            mi = softhist.mutual_information(x, y, 24, range=rng, kernel=kernel, bandwidth=bandwidth, mode=mode, normalized=normalized)
            gx, gy = torch.autograd.grad(mi, (x, y))
            assert torch.isfinite(mi) and torch.isfinite(gx).all() and torch.isfinite(gy).all()
            if case == "both constant" and normalized and mode == "straight_through":
                assert mi.item() == 1.0  # hard forward, both in one bin: scikit-learn's perfect match
            elif case != "sparse box":
                assert abs(mi.item()) < 1e-12  # a constant carries no information
            else:
                assert mi.item() > (0.5 if normalized else 1.0)  # y = x^3 is strongly dependent


def test_half_precision_accumulates_in_float32():
    p = torch.rand(4, 50) * 100
    for fn in (softhist.entropy, lambda t: softhist.js_divergence(t, t.flip(-1))):
        half = fn(p.half())
        assert half.dtype == torch.float16
        torch.testing.assert_close(half.float(), fn(p), rtol=2e-3, atol=2e-3)
    # 70k samples in one joint cell: a float16 histogram would overflow (max 65504).
    x = 0.5 + 0.01 * torch.randn(70_000)
    y = x + 0.01 * torch.randn(70_000)
    for dtype in (torch.float16, torch.bfloat16):
        mi = softhist.mutual_information(x.to(dtype), y.to(dtype), 8, range=(0, 1))
        assert mi.dtype == dtype and torch.isfinite(mi)
        ref = softhist.mutual_information(x.to(dtype).float(), y.to(dtype).float(), 8, range=(0, 1))
        assert mi.float().item() == pytest.approx(ref.item(), rel=1e-2)
        loss = softhist.histogram_matching_loss(x.to(dtype), y, 16, range=(0, 1))
        assert loss.dtype == torch.float32 and torch.isfinite(loss)


# --------------------------------------------------------------------------- histogram matching


def test_histogram_matching_hard_values_equal_numpy_and_scipy():
    x, t = 1.5 * torch.randn(3000, dtype=F64), 0.5 * torch.randn(2000, dtype=F64) + 1.0
    # Samples outside the range count in the end bins (x has about 20 beyond +-4).
    nx, edges = np.histogram(np.clip(x.numpy(), -4.0, 4.0), 20, range=(-4.0, 4.0))
    nt, _ = np.histogram(np.clip(t.numpy(), -4.0, 4.0), 20, range=(-4.0, 4.0))
    assert nx.sum() == 3000 and np.histogram(x.numpy(), 20, range=(-4.0, 4.0))[0].sum() < 2995
    centers = 0.5 * (edges[1:] + edges[:-1])
    kw = dict(range=(-4.0, 4.0), mode="hard")
    assert softhist.histogram_matching_loss(x, t, 20, metric="l1", **kw).item() == pytest.approx(
        np.abs(nx / nx.sum() - nt / nt.sum()).sum(), rel=1e-12
    )
    # Wasserstein adds the distance the outlying mass travels to the range.
    xs, ts = x.numpy(), t.numpy()
    travel = sum(abs(np.maximum(a, 0).mean() - np.maximum(b, 0).mean()) for a, b in [(-4 - xs, -4 - ts), (xs - 4, ts - 4)])
    assert softhist.histogram_matching_loss(x, t, 20, **kw).item() == pytest.approx(
        scipy.stats.wasserstein_distance(centers, centers, nx, nt) + travel, rel=1e-12
    )
    assert (nx[nt > 0] > 0).all()  # x covers the target's bins: KL(target || x) is finite
    assert softhist.histogram_matching_loss(x, t, 20, metric="kl", **kw).item() == pytest.approx(scipy.stats.entropy(nt, nx), rel=1e-12)
    hist_t = torch.from_numpy(nt).to(F64)
    for metric in ("wasserstein", "l1", "kl"):
        from_samples = softhist.histogram_matching_loss(x, t, 20, metric=metric, **kw)
        from_hist = softhist.histogram_matching_loss(x, hist_t, 20, metric=metric, target_type="histogram", **kw)
        assert from_hist.item() == pytest.approx(from_samples.item(), rel=1e-14)


def test_histogram_matching_default_range_covers_both_sample_sets():
    x, t = torch.rand(500, dtype=F64), torch.rand(700, dtype=F64) * 2 + 3
    ours = softhist.histogram_matching_loss(x, t, 10, mode="hard")
    lo, hi = x.min().item(), t.max().item()
    nx, edges = np.histogram(x.numpy(), 10, range=(lo, hi))
    nt, _ = np.histogram(t.numpy(), 10, range=(lo, hi))
    centers = 0.5 * (edges[1:] + edges[:-1])
    assert ours.item() == pytest.approx(scipy.stats.wasserstein_distance(centers, centers, nx, nt), rel=1e-12)


def test_histogram_matching_broadcasts_a_shared_target():
    x = torch.randn(3, 400, dtype=F64) + torch.tensor([[0.0], [1.0], [2.0]], dtype=F64)
    t = torch.randn(600, dtype=F64) + 2.0
    loss = softhist.histogram_matching_loss(x, t, 32, range=(-4.0, 6.0))
    assert loss.shape == (3,) and loss[0] > loss[1] > loss[2]
    for i in range(3):
        assert loss[i].item() == pytest.approx(softhist.histogram_matching_loss(x[i], t, 32, range=(-4.0, 6.0)).item(), rel=1e-12)


@pytest.mark.parametrize("metric", ["wasserstein", "l1", "kl"])
def test_histogram_matching_descent_pulls_samples_to_target(metric):
    x = torch.randn(400).requires_grad_()
    target = 0.5 * torch.randn(1000) + 1.5
    opt = torch.optim.Adam([x], lr=0.05)
    losses = []
    for _ in range(40):
        loss = softhist.histogram_matching_loss(x, target, 32, range=(-4.0, 4.0), bandwidth=0.2, metric=metric)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]
    assert abs(x.detach().mean().item() - 1.5) < abs(0.0 - 1.5) - 0.5
    if metric == "wasserstein":  # transport moves every sample, tails included
        assert abs(x.detach().mean().item() - 1.5) < 0.1
        assert abs(x.detach().std().item() - 0.5) < 0.15


@pytest.mark.parametrize("p_shape,q_shape,dim", [((5, 10), (10,), -1), ((10,), (5, 10), -1), ((3, 1, 7), (4, 7), 2), ((10, 5), (10, 1), 0)])
def test_two_histogram_statistics_broadcast_as_scipy(p_shape, q_shape, dim):
    """p and q broadcast as torch tensors (and scipy's arguments) do; dim indexes the broadcast shape."""
    p = torch.rand(p_shape, dtype=torch.float64) + 0.01
    q = (torch.rand(q_shape, dtype=torch.float64) + 0.01).requires_grad_()
    pn, qn = np.broadcast_arrays(p.numpy(), q.detach().numpy())
    axis = dim % len(pn.shape)
    bins = pn.shape[axis]
    edges = torch.cumsum(torch.rand(bins + 1, dtype=torch.float64) + 0.1, 0)
    centers = (0.5 * (edges[1:] + edges[:-1])).numpy()
    kl = softhist.kl_divergence(p, q, dim=dim)
    js = softhist.js_divergence(p, q, dim=dim)
    w = softhist.wasserstein(p, q, edges, dim=dim)
    assert kl.shape == js.shape == w.shape == tuple(np.delete(pn.shape, axis))
    np.testing.assert_allclose(kl.detach().numpy(), scipy.stats.entropy(pn, qn, axis=axis), rtol=1e-12)
    np.testing.assert_allclose(js.detach().numpy(), jensenshannon(pn, qn, axis=axis) ** 2, rtol=1e-10)
    pm, qm = np.moveaxis(pn, axis, -1).reshape(-1, bins), np.moveaxis(qn, axis, -1).reshape(-1, bins)
    want = [scipy.stats.wasserstein_distance(centers, centers, a, b) for a, b in zip(pm, qm)]
    np.testing.assert_allclose(w.detach().numpy().reshape(-1), want, rtol=1e-12)
    (kl.sum() + js.sum() + w.sum()).backward()  # the broadcast q gets the summed gradient
    assert q.grad.shape == q.shape and torch.isfinite(q.grad).all()


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: softhist.entropy([1.0, 2.0]), TypeError, r"p must be a torch.Tensor, got list"),
        (lambda: softhist.entropy(torch.ones(3, dtype=torch.complex64)), TypeError, r"p must be real-valued"),
        (lambda: softhist.entropy(torch.ones(3), dim=1), IndexError, r"dim 1 is out of range for p with 1 dimensions"),
        (lambda: softhist.entropy(torch.ones(3), dim=0.0), TypeError, r"dim must be an int, got 0.0"),
        (lambda: softhist.entropy(torch.ones(4, 0)), ValueError, r"p must have at least one bin along dim 1, got shape \(4, 0\)"),
        (lambda: softhist.entropy(torch.tensor(1.0)), ValueError, r"p must have at least one bin"),
        (lambda: softhist.kl_divergence(torch.ones(3), torch.ones(4)), ValueError,
         r"p and q must broadcast against each other, got shapes \(3,\) and \(4,\)"),
        (lambda: softhist.js_divergence(torch.ones(2, 3), torch.ones(2)), ValueError, r"must broadcast .* got shapes \(2, 3\) and \(2,\)"),
        (lambda: softhist.wasserstein(torch.ones(5, 3), torch.ones(4, 3), torch.arange(4.0)), ValueError,
         r"must broadcast .* got shapes \(5, 3\) and \(4, 3\)"),
        (lambda: softhist.kl_divergence(torch.ones(5, 3), torch.ones(3), dim=2), IndexError, r"dim 2 is out of range for p and q with 2"),
        (lambda: softhist.kl_divergence(torch.ones(3), None), TypeError, r"q must be a torch.Tensor, got NoneType"),
        (lambda: softhist.wasserstein(torch.ones(3), torch.ones(3), torch.arange(3.0)), ValueError,
         r"bin_edges must be 1-D with 4 entries \(p has 3 bins along dim 0\), got shape \(3,\)"),
        (lambda: softhist.wasserstein(torch.ones(3), torch.ones(3), torch.ones(2, 4)), ValueError, r"got shape \(2, 4\)"),
        (lambda: softhist.wasserstein(torch.ones(3), torch.ones(3), torch.arange(4)), TypeError, r"bin_edges must be floating point"),
        (lambda: softhist.mutual_information(torch.rand(5), torch.rand(6)), ValueError, r"x and y must have the same shape"),
        (lambda: softhist.mutual_information(torch.rand(5), torch.rand(5), normalized=1), TypeError, r"normalized must be a bool, got 1"),
        (lambda: softhist.mutual_information(torch.rand(5), torch.rand(5), range=(0, 1, 2)), ValueError, r"range must be \(min, max\)"),
        (lambda: softhist.mutual_information(torch.rand(5), torch.rand(5), kernel="laplace"), ValueError, r"kernel must be one of"),
        (lambda: softhist.histogram_matching_loss(torch.rand(5), torch.rand(5), metric="l2"), ValueError,
         r"metric must be one of \['wasserstein', 'l1', 'kl'\], got 'l2'"),
        (lambda: softhist.histogram_matching_loss(torch.rand(5), torch.rand(5), target_type="pdf"), ValueError,
         r"target_type must be one of \['samples', 'histogram'\], got 'pdf'"),
        (lambda: softhist.histogram_matching_loss(torch.rand(5), torch.rand(8), 8, target_type="histogram"), ValueError,
         r"range must be given when target_type='histogram' and bins is an int"),
        (lambda: softhist.histogram_matching_loss(torch.rand(5), torch.rand(7), 8, range=(0, 1), target_type="histogram"), ValueError,
         r"target as a histogram must have 8 bins on its last axis, got shape \(7,\)"),
        (lambda: softhist.histogram_matching_loss(torch.rand(2, 5), torch.rand(3, 5), 8), ValueError,
         r"the batch shapes of x \(2,\) and target \(3,\) do not broadcast"),
        (lambda: softhist.histogram_matching_loss(torch.tensor(1.0), torch.rand(5)), ValueError, r"must have a samples"),
    ],
)
def test_bad_input_raises_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()

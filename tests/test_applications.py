"""Applications against the references their users run: pytorch-metric-learning's HistogramLoss,
torchmetrics' calibration errors, the HL-Gauss listing of Farebrother et al. (2024) and
HistoGAN's Hellinger loss (the last two reimplemented here, as published)."""

import math
import pathlib
import subprocess
import sys

import pytest
import torch
from torch.autograd import gradcheck

import softhist
from softhist.applications import _normalizing_weight, histogram_loss, hl_gauss_probs

F64 = torch.float64
ROOT = pathlib.Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- histogram loss


def test_linear_binning_is_the_box_kernel_one_node_spacing_wide():
    """pytorch-metric-learning's weights max(0, 1 - |s - t_r| / delta) at nodes t_r = -1 + r delta
    are the box kernel's bin masses, bandwidth delta / sqrt(12), bins [t_r - delta/2, t_r + delta/2)."""
    n_bins = 13
    delta = 2 / n_bins
    s = torch.cat([torch.rand(200, dtype=F64) * 2 - 1, torch.tensor([-1.0, 1.0, 0.0], dtype=F64)])
    nodes = -1 + delta * torch.arange(n_bins + 1, dtype=F64)
    linear = (1 - (s[:, None] - nodes).abs() / delta).clamp_min(0)
    box = softhist.histc(
        s[:, None], n_bins + 1, -1 - delta / 2, 1 + delta / 2, kernel="box", bandwidth=delta / math.sqrt(12), dim=1
    )
    torch.testing.assert_close(box, linear, rtol=0, atol=1e-12)


LABELS = {
    "4-classes": lambda n: torch.arange(n) % 4,
    "singletons": lambda n: torch.cat([torch.arange(n - 6) % 3, torch.arange(10, 16)]),  # six labels seen once
    "pairs-only": lambda n: torch.arange(n) // 2,
}


@pytest.mark.parametrize("n_bins", [1, 7, 100])
@pytest.mark.parametrize("labels", list(LABELS), ids=list(LABELS))
def test_histogram_loss_equals_pytorch_metric_learning(labels, n_bins):
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    n = 37
    emb = torch.randn(n, 6)
    lab = LABELS[labels](n)
    ours_emb = emb.clone().requires_grad_()
    ref_emb = emb.clone().requires_grad_()
    ours = softhist.nn.HistogramLoss(n_bins=n_bins)(ours_emb, lab)
    ref = pml.HistogramLoss(n_bins=n_bins)(ref_emb, lab)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours_emb.grad, ref_emb.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("labels", [torch.zeros(9, dtype=torch.long), torch.arange(9)], ids=["one-class", "all-distinct"])
def test_histogram_loss_without_triplets_is_zero(labels):
    emb = torch.randn(9, 4, requires_grad=True)
    loss = histogram_loss(emb, labels)
    loss.backward()
    assert loss.item() == 0 and torch.equal(emb.grad, torch.zeros_like(emb))


def test_histogram_loss_float64_gradcheck_and_parallel_embeddings():
    emb = torch.randn(8, 3, dtype=F64, requires_grad=True)
    lab = torch.tensor([0, 0, 1, 1, 2, 2, 2, 0])
    # The box kernel's gradient jumps where a similarity crosses a node; random data stays away.
    assert gradcheck(lambda e: histogram_loss(e, lab, n_bins=10), (emb,), eps=1e-7, atol=1e-5)
    twins = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])  # similarity exactly 1
    loss = histogram_loss(twins, torch.tensor([0, 0, 1, 1]), n_bins=4)
    assert loss.isfinite() and 0 <= loss.item() <= 1


def test_histogram_loss_bad_input():
    with pytest.raises(ValueError, match="n_bins"):
        softhist.nn.HistogramLoss(n_bins=0)
    with pytest.raises(ValueError, match="labels"):
        histogram_loss(torch.randn(5, 2), torch.arange(4))
    with pytest.raises(ValueError, match="embeddings"):
        histogram_loss(torch.randn(5), torch.arange(5))


# --------------------------------------------------------------------------- calibration error


def _binary_case(n=400, n_bins=15):
    """Random probabilities, plus confidences exactly on torchmetrics' bin boundaries, 0 and 1."""
    boundaries = torch.linspace(0, 1, n_bins + 1)
    preds = torch.cat([torch.rand(n), boundaries, boundaries[[0, -1, -1, 3 % (n_bins + 1)]]])
    target = (torch.rand(preds.shape[0]) < preds.clamp(0.1, 0.9)).long()
    return preds, target


def _multiclass_case(n_bins=15, classes=4):
    logits = 3 * torch.randn(300, classes, 2)  # (N, C, *): an extra dim, flattened like torchmetrics
    probs = logits.softmax(1)
    # Rows whose top probability sits exactly on a bin boundary (or is 1).
    on_boundary = torch.zeros(n_bins + 1, classes, 2)
    top = torch.linspace(0, 1, n_bins + 1).clamp_min(1 / classes)
    on_boundary[:, 0, :] = top[:, None]
    on_boundary[:, 1:, :] = ((1 - top) / (classes - 1))[:, None, None]
    probs = torch.cat([probs, on_boundary])
    target = torch.randint(0, classes, (probs.shape[0], 2))
    target[::3] = probs[::3].argmax(1)
    return probs, target


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
@pytest.mark.parametrize("n_bins", [1, 7, 15])
def test_calibration_error_hard_equals_torchmetrics(norm, n_bins):
    tm = pytest.importorskip("torchmetrics.functional.classification")
    preds, target = _binary_case(n_bins=n_bins)
    ours = softhist.calibration_error(preds, target, n_bins, norm)
    ref = tm.binary_calibration_error(preds, target, n_bins=n_bins, norm=norm)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref.to(ours.dtype), rtol=0, atol=1e-6)
    probs, labels = _multiclass_case(n_bins)
    ours = softhist.calibration_error(probs, labels, n_bins, norm, task="multiclass")
    ref = tm.multiclass_calibration_error(probs, labels, num_classes=probs.shape[1], n_bins=n_bins, norm=norm)
    torch.testing.assert_close(ours, ref.to(ours.dtype), rtol=0, atol=1e-6)


def test_confidence_one_has_a_bin_of_its_own():
    # torchmetrics' bucketize(right=True) - 1 puts 1.0 past the last boundary: merging it into the
    # last bin would give |1 - 0.95| * 1 = 0.05, not 0.
    preds, target = torch.tensor([0.9, 1.0]), torch.tensor([1, 1])
    assert softhist.calibration_error(preds, target, n_bins=2).item() == pytest.approx(0.05, abs=1e-7)


def test_calibration_error_perfect_and_empty_bins_l2_is_zero():
    preds, target = torch.tensor([0.0, 1.0, 1.0]), torch.tensor([0, 1, 1])
    for norm in ("l1", "l2", "max"):
        assert softhist.calibration_error(preds, target, norm=norm).item() == 0


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_soft_calibration_error_gradcheck(norm):
    logits = torch.randn(40, 3, dtype=F64, requires_grad=True)
    labels = torch.randint(0, 3, (40,))
    bandwidth = torch.tensor(0.07, dtype=F64, requires_grad=True)

    def ece(z, h):
        return softhist.calibration_error(z.softmax(1), labels, 5, norm, task="multiclass", mode="soft", bandwidth=h)

    assert gradcheck(ece, (logits, bandwidth), atol=1e-6)
    preds = torch.rand(30, dtype=F64, requires_grad=True)
    target = (torch.rand(30) < 0.5).long()
    assert gradcheck(lambda p: softhist.calibration_error(p, target, 4, norm, mode="soft"), (preds,), atol=1e-6)


def test_soft_calibration_error_tends_to_hard_and_straight_through_is_both():
    preds, target = torch.rand(500, dtype=F64), (torch.rand(500) < 0.6).long()
    hard = softhist.calibration_error(preds, target, 10)
    sharp = softhist.calibration_error(preds, target, 10, mode="soft", bandwidth=1e-5)
    assert abs(sharp.item() - hard.item()) < 1e-3
    p_st = preds.clone().requires_grad_()
    p_soft = preds.clone().requires_grad_()
    st = softhist.calibration_error(p_st, target, 10, mode="straight_through", bandwidth=0.03)
    soft = softhist.calibration_error(p_soft, target, 10, mode="soft", bandwidth=0.03)
    assert st.item() == hard.item() and soft.item() != hard.item()
    st.backward()
    soft.backward()
    torch.testing.assert_close(p_st.grad, p_soft.grad, rtol=1e-12, atol=1e-15)


def test_per_sample_normalization_gives_each_sample_its_weight():
    x = torch.tensor([-0.3, -0.01, 0.0, 0.02, 0.5, 0.99, 1.0, 1.04, 7.0], dtype=F64, requires_grad=True)
    w = torch.tensor([1.0, 2.0, 1.0, 0.5, 1.0, 3.0, 1.0, 1.0, 1.0], dtype=F64)
    for kernel in ("gaussian", "box", "bspline"):
        scaled = _normalizing_weight(x, w, 0.0, 1.0, kernel, 0.05)
        per_sample = softhist.histc(x[:, None], 8, 0.0, 1.0, kernel=kernel, bandwidth=0.05, weight=scaled[:, None], dim=1)
        expected = w.clone()
        expected[[0, -1]] = 0  # -0.3 and 7.0 are beyond every kernel's reach: no mass, weight 0
        torch.testing.assert_close(per_sample.sum(1), expected, rtol=1e-12, atol=1e-12)
    per_sample.sum().backward()
    assert x.grad.isfinite().all()


def test_calibration_error_bad_input():
    p, t = torch.rand(5), torch.ones(5, dtype=torch.long)
    with pytest.raises(ValueError, match="task"):
        softhist.calibration_error(p, t, task="multilabel")
    with pytest.raises(ValueError, match="norm"):
        softhist.calibration_error(p, t, norm="l3")
    with pytest.raises(ValueError, match="n_bins"):
        softhist.calibration_error(p, t, n_bins=0)
    with pytest.raises(ValueError, match="mode"):
        softhist.calibration_error(p, t, mode="fuzzy")
    with pytest.raises(ValueError, match="bandwidth"):
        softhist.calibration_error(p, t, mode="soft", bandwidth=-1.0)
    with pytest.raises(ValueError, match="same shape"):
        softhist.calibration_error(p, t[:4])
    with pytest.raises(ValueError, match="multiclass"):
        softhist.calibration_error(torch.rand(5, 3), t[:4], task="multiclass")
    with pytest.raises(TypeError, match="preds"):
        softhist.calibration_error(t, t)


# --------------------------------------------------------------------------- HL-Gauss


class ListingHLGaussLoss(torch.nn.Module):
    """Listing 1 of Farebrother et al., "Stop Regressing: Training Value Functions via
    Classification for Scalable Deep RL" (ICML 2024), as published."""

    def __init__(self, min_value, max_value, num_bins, sigma, dtype=torch.float32):  # dtype: ours, for float64 checks
        super().__init__()
        self.min_value, self.max_value, self.num_bins, self.sigma = min_value, max_value, num_bins, sigma
        self.support = torch.linspace(min_value, max_value, num_bins + 1, dtype=dtype)

    def forward(self, logits, target):
        return torch.nn.functional.cross_entropy(logits, self.transform_to_probs(target))

    def transform_to_probs(self, target):
        support = self.support.to(target.dtype)
        cdf_evals = torch.special.erf((support - target.unsqueeze(-1)) / (torch.sqrt(torch.tensor(2.0)) * self.sigma))
        z = cdf_evals[..., -1] - cdf_evals[..., 0]
        bin_probs = cdf_evals[..., 1:] - cdf_evals[..., :-1]
        return bin_probs / z.unsqueeze(-1)

    def transform_from_probs(self, probs):
        centers = (self.support[:-1] + self.support[1:]) / 2
        return torch.sum(probs * centers, dim=-1)


HL_CASES = [  # (min, max, bins, sigma in bin widths)
    (-10.0, 10.0, 51, 0.75),
    (0.0, 1.0, 1, 0.75),
    (-3.0, 5.0, 7, 4.0),  # wider than the support: every target touches every edge
    (0.0, 200.0, 201, 0.1),
]


@pytest.mark.parametrize("case", HL_CASES, ids=lambda c: f"B{c[2]}-s{c[3]}")
def test_hl_gauss_equals_listing_inside_the_support(case):
    lo, hi, bins, sigma_bins = case
    sigma = sigma_bins * (hi - lo) / bins
    ours, ref = softhist.nn.HLGaussLoss(lo, hi, bins, sigma), ListingHLGaussLoss(lo, hi, bins, sigma)
    target = torch.cat([lo + (hi - lo) * torch.rand(500), torch.tensor([lo, hi, (lo + hi) / 2])])
    probs = ours.transform_to_probs(target)
    assert probs.shape == (503, bins) and probs.dtype == torch.float32
    torch.testing.assert_close(probs, ref.transform_to_probs(target), rtol=0, atol=2e-6)
    torch.testing.assert_close(probs.sum(-1), torch.ones(503), rtol=0, atol=1e-6)
    torch.testing.assert_close(ours.transform_from_probs(probs), ref.transform_from_probs(probs), rtol=0, atol=0)
    logits = torch.randn(503, bins)
    l_ours, l_ref = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    a, b = ours(l_ours, target), ref(l_ref, target)
    a.backward()
    b.backward()
    torch.testing.assert_close(a, b, rtol=0, atol=2e-6)
    torch.testing.assert_close(l_ours.grad, l_ref.grad, rtol=0, atol=1e-8)
    # float64: the cut of the Gaussian at 5.3 std is the only difference, below 2**-24.
    t64 = target.to(F64)
    ref64 = ListingHLGaussLoss(lo, hi, bins, sigma, dtype=F64)
    torch.testing.assert_close(ours.transform_to_probs(t64), ref64.transform_to_probs(t64), rtol=0, atol=1.2e-7)


def test_hl_gauss_outside_the_support_is_finite_and_ends_on_the_nearest_bin():
    ours, ref = softhist.nn.HLGaussLoss(0.0, 1.0, 10, 0.075), ListingHLGaussLoss(0.0, 1.0, 10, 0.075)
    target = torch.tensor([-5.0, -0.1, 1.2, 3.0, float("inf"), -float("inf")])
    probs = ours.transform_to_probs(target)
    assert probs.isfinite().all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(6), rtol=0, atol=1e-6)
    assert probs[[0, 5], 0].eq(1).all() and probs[[3, 4], -1].eq(1).all()
    assert probs[1, 0] > 0.5 and probs[2, -1] > 0.5  # just outside: mostly on the end bin, as the listing
    # -0.1 is 1.3 sigma below: the support holds z = 9% of its Gaussian, and the cut moves <= 6e-8 / z.
    torch.testing.assert_close(probs[1], ref.transform_to_probs(target[1]), rtol=0, atol=2e-6)
    assert ref.transform_to_probs(target[[0, 3]]).isnan().all()  # the listing's vanishing normalizer


def test_hl_gauss_shapes_and_bad_input():
    assert hl_gauss_probs(torch.zeros(2, 3), -1.0, 1.0, 5, 0.3).shape == (2, 3, 5)
    assert hl_gauss_probs(torch.zeros(0), -1.0, 1.0, 5, 0.3).shape == (0, 5)
    assert hl_gauss_probs(torch.tensor(0.2, dtype=F64), -1.0, 1.0, 5, 0.3).dtype == F64
    with pytest.raises(ValueError, match="sigma"):
        softhist.nn.HLGaussLoss(0.0, 1.0, 5, 0.0)
    with pytest.raises(ValueError, match="min_value"):
        softhist.nn.HLGaussLoss(1.0, 1.0, 5, 0.1)
    with pytest.raises(ValueError, match="num_bins"):
        hl_gauss_probs(torch.zeros(3), 0.0, 1.0, 0, 0.1)


# --------------------------------------------------------------------------- Hellinger


def histogan_loss(target_hist, input_hist):
    """HistoGAN's histogram loss (Afifi et al., CVPR 2021, `histogram_loss` in its training
    code) for one pair: (1/sqrt 2) * sqrt(sum((sqrt(target) - sqrt(input))^2)) / batch."""
    return (1 / math.sqrt(2.0) * torch.sqrt(torch.sum((torch.sqrt(target_hist) - torch.sqrt(input_hist)) ** 2))) / input_hist.shape[0]


def test_hellinger_equals_histogan_and_is_finite_at_empty_bins():
    p, q = torch.rand(6, 33, dtype=F64), torch.rand(6, 33, dtype=F64)
    p[:, ::4] = 0
    ours = softhist.hellinger(p, q)
    pn, qn = p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)
    ref = torch.stack([histogan_loss(qn[i : i + 1], pn[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(ours, ref, rtol=1e-14, atol=0)
    torch.testing.assert_close(softhist.hellinger(p.T, q.T, dim=0), ours, rtol=1e-14, atol=0)
    leaf = p.clone().requires_grad_()
    softhist.hellinger(leaf, q).sum().backward()
    assert leaf.grad.isfinite().all()
    ref_leaf = pn[:1].clone().requires_grad_()
    histogan_loss(qn[:1], ref_leaf).backward()
    assert not ref_leaf.grad.isfinite().all()  # HistoGAN: -inf at an empty bin (NaN where q is empty too)
    same = q.clone().requires_grad_()
    d = softhist.hellinger(same, q)
    d.sum().backward()
    assert d.eq(0).all() and same.grad.eq(0).all()


def test_hellinger_gradcheck_values_and_soft_histograms():
    p, q = torch.rand(3, 9, dtype=F64) + 0.1, torch.rand(3, 9, dtype=F64) + 0.1
    assert gradcheck(softhist.hellinger, (p.requires_grad_(), q.requires_grad_()))
    assert softhist.hellinger(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])).item() == 1.0
    x = torch.randn(2, 500, dtype=F64, requires_grad=True)
    h, _ = softhist.histogram(x, 12, range=(-3, 3), dim=1)
    assert gradcheck(lambda s: softhist.hellinger(softhist.histogram(s, 12, range=(-3, 3), dim=1)[0], h.detach()), (x,))
    with pytest.raises(ValueError, match="must broadcast against each other"):
        softhist.hellinger(torch.rand(3), torch.rand(4))


# --------------------------------------------------------------------------- examples


@pytest.mark.parametrize(
    "script", ["calibration_digits.py", "metric_learning_digits.py", "hl_gauss_diabetes.py", "hellinger_digits.py"]
)
def test_example_runs(script):
    pytest.importorskip("sklearn")
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), "--steps", "3"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()

"""Applications against the references their users run: pytorch-metric-learning's HistogramLoss,
torchmetrics' calibration errors, the HL-Gauss listing of Farebrother et al. (2024),
HistoGAN's Hellinger loss and RGB-uv histogram and GatorSense's RBF histogram layer (the last
four reimplemented here, as published)."""

import math
import pathlib
import runpy
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf
from torch.autograd import gradcheck

import softhist
from conftest import run_measuring_peak
from softhist.applications import histogram_loss, hl_gauss_probs

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


def test_soft_calibration_error_normalizes_each_confidence_to_one():
    # Soft-binned ECE spreads each confidence over the bins of [0, 1] with total membership 1,
    # so mass the kernel puts past 0 or 1 stays in the end bins.
    conf = torch.tensor([0.0, 0.01, 0.5, 0.98, 1.0], dtype=F64)
    target = torch.tensor([0, 0, 1, 1, 1])
    value = softhist.calibration_error(conf, target, 6, mode="soft", bandwidth=0.05)
    mass = softhist.histc(conf[:, None], 6, 0.0, 1.0, bandwidth=0.05, dim=1)  # (5, 6)
    member = mass / mass.sum(1, keepdim=True)  # the normalization written out
    count, acc, conf_sum = member.sum(0), (member * target[:, None]).sum(0), (member * conf[:, None]).sum(0)
    torch.testing.assert_close(count.sum(), torch.tensor(5.0, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(value, (acc - conf_sum).abs().sum() / count.sum(), rtol=0, atol=1e-12)


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
    x = torch.randn(2, 60, dtype=F64, requires_grad=True)
    h, _ = softhist.histogram(x, 12, range=(-3, 3), dim=1)
    assert gradcheck(lambda s: softhist.hellinger(softhist.histogram(s, 12, range=(-3, 3), dim=1)[0], h.detach()), (x,))
    with pytest.raises(ValueError, match="must broadcast against each other"):
        softhist.hellinger(torch.rand(3), torch.rand(4))


# --------------------------------------------------------------------------- RGB-uv histogram

HISTOGAN_EPS = 1e-6


def histogan_rgb_uv(x, h=64, insz=150, sigma=0.02, intensity_scale=True, hist_boundary=(-3, 3)):
    """HistoGAN's ``RGBuvHistBlock.forward`` (Afifi et al., CVPR 2021,
    ``histogram_classes/RGBuvHistBlock.py``) with ``method='inverse-quadratic'`` and
    ``resizing='interpolation'``: one image at a time, the three anchors' ``(N, h)`` factors
    in float64 against numpy's centres, cast to float32, multiplied, and normalized together."""
    x = torch.clamp(x, 0, 1)
    if x.shape[2] > insz or x.shape[3] > insz:
        x = nnf.interpolate(x, size=(insz, insz), mode="bilinear", align_corners=False)
    centres = torch.tensor(np.linspace(hist_boundary[0], hist_boundary[1], num=h)).unsqueeze(0)
    hists = torch.zeros((x.shape[0], 3, h, h))
    for l, image in enumerate(torch.unbind(x, 0)):
        pixels = torch.t(torch.reshape(image, (3, -1)))
        squares = pixels**2
        if intensity_scale:
            iy = torch.sqrt(squares[:, 0] + squares[:, 1] + squares[:, 2] + HISTOGAN_EPS).unsqueeze(1)
        else:
            iy = 1
        for anchor, (p, q) in enumerate([(1, 2), (0, 2), (0, 1)]):
            iu = (torch.log(pixels[:, anchor] + HISTOGAN_EPS) - torch.log(pixels[:, p] + HISTOGAN_EPS)).unsqueeze(1)
            iv = (torch.log(pixels[:, anchor] + HISTOGAN_EPS) - torch.log(pixels[:, q] + HISTOGAN_EPS)).unsqueeze(1)
            du = (1 / (1 + torch.pow(abs(iu - centres), 2) / sigma**2)).type(torch.float32)
            dv = (1 / (1 + torch.pow(abs(iv - centres), 2) / sigma**2)).type(torch.float32)
            hists[l, anchor] = torch.mm(torch.t(iy * du), dv)
    return hists / (hists.sum(dim=1).sum(dim=1).sum(dim=1).view(-1, 1, 1, 1) + HISTOGAN_EPS)


def _photo_like(shape):
    image = torch.rand(shape)
    if shape[2] > 2:
        image[0, :, 0, :5] = 0  # black pixels: log(0 + eps)
        image[0, 0, 1, :5] = 1.3  # clamped
        image[-1, :, -1, -3:] = 0.5  # grey: u = v = 0
    return image


RGB_UV_CASES = [  # (shape, bins, sigma, intensity_weighted)
    ((2, 3, 37, 41), 64, 0.02, True),
    ((3, 3, 20, 19), 17, 0.1, False),
    ((1, 3, 1, 1), 2, 0.02, True),
    ((1, 3, 150, 150), 64, 0.02, True),
]


@pytest.mark.parametrize("case", RGB_UV_CASES, ids=lambda c: f"{'x'.join(map(str, c[0]))}-B{c[1]}-s{c[2]}-I{int(c[3])}")
def test_rgb_uv_histogram_equals_histogan(case):
    shape, bins, sigma, weighted = case
    image = _photo_like(shape)
    ours_in, ref_in = image.clone().requires_grad_(), image.clone().requires_grad_()
    ours = softhist.rgb_uv_histogram(ours_in, bins, sigma, intensity_weighted=weighted)
    ref = histogan_rgb_uv(ref_in, bins, sigma=sigma, intensity_scale=weighted)
    assert ours.shape == (shape[0], 3, bins, bins) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-9)
    grad = torch.randn_like(ours)
    (ours * grad).sum().backward()
    (ref * grad).sum().backward()
    # Both float32 gradients are within 1.8e-5 (of the largest) of the float64 one, each by its rounding.
    scale = ref_in.grad.abs().max()
    torch.testing.assert_close(ours_in.grad / scale, ref_in.grad / scale, rtol=0, atol=4e-5)


def test_rgb_uv_histogram_of_a_resized_image_equals_histogan_on_a_large_one():
    image = _photo_like((1, 3, 173, 160))
    resized = nnf.interpolate(image.clamp(0, 1), size=(150, 150), mode="bilinear", align_corners=False)  # clamp first, as HistoGAN
    torch.testing.assert_close(softhist.rgb_uv_histogram(resized), histogan_rgb_uv(image), rtol=0, atol=1e-5)


def test_rgb_uv_histogram_is_cauchy_centre_membership_normalized():
    # k(d) = 1 / (1 + (d/sigma)^2) is the Cauchy density of scale sigma up to pi sigma; centre
    # membership multiplies by the bin width: constants the per-image normalization cancels.
    image = torch.rand(1, 3, 9, 11, dtype=F64)
    bins, sigma = 12, 0.3
    spacing = 6 / (bins - 1)
    x = image.reshape(3, -1)
    logs = torch.log(x + HISTOGAN_EPS)
    weight = torch.sqrt((x * x).sum(0) + HISTOGAN_EPS)
    joint = torch.stack([
        softhist.histogram2d(
            logs[a] - logs[p], logs[a] - logs[q], bins, range=[(-3 - spacing / 2, 3 + spacing / 2)] * 2, weight=weight,
            kernel="cauchy", bandwidth=sigma, membership="center",
        )[0]
        for a, (p, q) in enumerate([(1, 2), (0, 2), (0, 1)])
    ])
    total = joint.sum()
    ours = softhist.rgb_uv_histogram(image, bins, sigma)[0]
    constant = (spacing / (math.pi * sigma)) ** 2
    torch.testing.assert_close(ours, joint / (total + HISTOGAN_EPS * constant), rtol=1e-12, atol=0)


def test_rgb_uv_histogram_gradcheck_chunks_and_half_precision(monkeypatch):
    image = (0.1 + 0.8 * torch.rand(2, 3, 4, 5, dtype=F64)).requires_grad_()
    assert gradcheck(lambda im: softhist.rgb_uv_histogram(im, 6, 0.3), (image,))
    whole = softhist.rgb_uv_histogram(image, 6, 0.3)
    monkeypatch.setattr(softhist.applications, "_CHUNK_ELEMENTS", 1)  # one pixel per chunk
    torch.testing.assert_close(softhist.rgb_uv_histogram(image, 6, 0.3), whole, rtol=1e-14, atol=0)
    assert gradcheck(lambda im: softhist.rgb_uv_histogram(im, 6, 0.3), (image,))
    half = softhist.rgb_uv_histogram(image.detach().half(), 6, 0.3)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, whole.float(), rtol=0, atol=2e-3)


def test_rgb_uv_histogram_bad_input():
    image = torch.rand(1, 3, 4, 4)
    with pytest.raises(ValueError, match=r"images must be RGB images of shape \(B, 3, H, W\), got shape \(1, 4, 4, 4\)"):
        softhist.rgb_uv_histogram(torch.rand(1, 4, 4, 4))
    with pytest.raises(TypeError, match="images must be floating point"):
        softhist.rgb_uv_histogram(torch.ones(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="bins must be an integer >= 2, got 1"):
        softhist.rgb_uv_histogram(image, bins=1)
    with pytest.raises(ValueError, match="sigma must be positive"):
        softhist.rgb_uv_histogram(image, sigma=0.0)
    with pytest.raises(ValueError, match="range must be finite"):
        softhist.rgb_uv_histogram(image, range=(3, -3))
    with pytest.raises(TypeError, match="intensity_weighted must be a bool"):
        softhist.rgb_uv_histogram(image, intensity_weighted=1)


def test_rgb_uv_histogram_memory_is_pixels_plus_bins_squared():
    # 4 images of 128^2, 64 bins, forward and backward: the kernel values of every pixel, bin and
    # anchor would be 4 * 16384 * 64 * 3 * 2 floats (101 MB); the images are 0.8 MB.
    out = run_measuring_peak(
        """
        torch.manual_seed(0)
        images = torch.rand(4, 3, 128, 128, requires_grad=True)
        softhist.rgb_uv_histogram(torch.rand(1, 3, 8, 8, requires_grad=True)).sum().backward()  # imports, first call
        before = peak_rss()
        h = softhist.rgb_uv_histogram(images)
        (h * torch.rand(64, 64)).sum().backward()
        print(peak_rss() - before, tuple(h.shape))
        """
    )
    growth, shape = out.split(maxsplit=1)
    assert shape.strip() == "(4, 3, 64, 64)"
    # About 29-38 MB measured over repeated runs, 40.6 MB once in a full parallel run: never the
    # 101 MB of pixels x bins x anchors.
    assert 0 < int(growth) <= 50 * 1000 * 1000


# --------------------------------------------------------------------------- RBF histogram layer


class GatorSenseRBFLayer(torch.nn.Module):
    """GatorSense's ``HistogramLayer`` (``Utils/RBFHistogramPooling.py``, Peeples et al.) with
    ``dim=2`` and its defaults: a grouped 1x1 convolution of weight 1 and bias ``-centres``, a
    grouped 1x1 convolution by the widths, ``exp(-(.)^2)``, the bins' sum plus ``10e-6``
    divided out, and ``AvgPool2d(count_include_pad=False)``."""

    def __init__(self, in_channels, kernel_size, num_bins, stride=1, padding=0, normalize_count=True, normalize_bins=True):
        super().__init__()
        self.num_bins, self.normalize_count, self.normalize_bins = num_bins, normalize_count, normalize_bins
        self.bin_centers_conv = torch.nn.Conv2d(in_channels, num_bins * in_channels, 1, groups=in_channels, bias=True)
        self.bin_centers_conv.weight.data.fill_(1)
        self.bin_centers_conv.weight.requires_grad = False
        self.bin_widths_conv = torch.nn.Conv2d(
            num_bins * in_channels, num_bins * in_channels, 1, groups=num_bins * in_channels, bias=False
        )
        self.hist_pool = torch.nn.AvgPool2d(kernel_size, stride=stride, padding=padding, count_include_pad=False)

    def forward(self, xx):
        xx = torch.exp(-(self.bin_widths_conv(self.bin_centers_conv(xx)) ** 2))
        if self.normalize_bins:
            n, c, h, w = xx.size()
            xx_sum = xx.reshape(n, c // self.num_bins, self.num_bins, h, w).sum(2) + torch.tensor(10e-6)
            xx = xx / torch.repeat_interleave(xx_sum, self.num_bins, dim=1)
        if self.normalize_count:
            return self.hist_pool(xx)
        return np.prod(np.asarray(self.hist_pool.kernel_size)) * self.hist_pool(xx)


def _paired_layers(channels, bins, size, step, pad, **flags):
    ours = softhist.nn.HistogramLayer(channels, bins, size, step, pad, **flags)
    ref = GatorSenseRBFLayer(channels, size, bins, step, pad, **flags)
    with torch.no_grad():
        ref.bin_centers_conv.bias.copy_(-ours.centers.flatten())
        ref.bin_widths_conv.weight.copy_(ours.widths.reshape(-1, 1, 1, 1))
    return ours, ref


LAYER_CASES = [  # (B, C, H, W), bins, kernel_size, stride, padding, normalize_count, normalize_bins
    ((4, 3, 64, 64), 4, 3, 1, 0, True, True),
    ((2, 5, 17, 23), 7, (3, 2), (2, 1), (1, 1), True, True),
    ((3, 1, 9, 8), 1, 4, 4, 2, True, True),
    ((2, 3, 11, 10), 4, (3, 3), 2, 1, False, True),  # an int kernel_size: see test_histogram_layer_gradcheck_and_other_ranks
    ((2, 2, 10, 9), 3, 2, 1, 0, True, False),
]


@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda c: f"{'x'.join(map(str, c[0]))}-K{c[1]}-k{c[2]}-s{c[3]}-p{c[4]}-c{int(c[5])}b{int(c[6])}")
def test_histogram_layer_equals_gatorsense(case):
    shape, bins, size, step, pad, normalize_count, normalize_bins = case
    ours, ref = _paired_layers(shape[1], bins, size, step, pad, normalize_count=normalize_count, normalize_bins=normalize_bins)
    x = 2 * torch.rand(shape) - 0.5
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ours, out_ref = ours(x_ours), ref(x_ref)
    assert out_ours.shape == out_ref.shape
    torch.testing.assert_close(out_ours, out_ref, rtol=0, atol=1e-5)
    grad = torch.randn_like(out_ref)
    (out_ours * grad).sum().backward()
    (out_ref * grad).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.centers.grad.flatten(), -ref.bin_centers_conv.bias.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.widths.grad.flatten(), ref.bin_widths_conv.weight.grad.flatten(), rtol=1e-4, atol=1e-4)


def test_histogram_layer_gradcheck_and_other_ranks():
    layer = softhist.nn.HistogramLayer(2, 3, 3, 1, 1).double()
    x = torch.rand(2, 2, 5, 4, dtype=F64, requires_grad=True)
    params = (x, layer.centers, layer.widths)

    def run(inp, centers, widths):
        return torch.func.functional_call(layer, {"centers": centers, "widths": widths}, (inp,))

    assert gradcheck(run, params)
    # normalize_count=False: the average times the window's volume. GatorSense multiplies by
    # np.prod(kernel_size), which for an int kernel_size k is k, not k^2: we take k^2.
    counts = softhist.nn.HistogramLayer(2, 3, 3, normalize_count=False)
    counts.load_state_dict(layer.float().state_dict())
    _, ref = _paired_layers(2, 3, 3, 1, 0, normalize_count=False)
    with torch.no_grad():
        ref.bin_centers_conv.bias.copy_(-counts.centers.flatten())
        ref.bin_widths_conv.weight.copy_(counts.widths.reshape(-1, 1, 1, 1))
    image = torch.rand(2, 2, 6, 7)
    torch.testing.assert_close(counts(image), 3 * ref(image), rtol=1e-6, atol=1e-6)
    layer.double()
    assert layer(torch.rand(2, 2, 9, dtype=F64)).shape == (2, 6, 9)  # 1-D: avg_pool1d
    assert layer(torch.rand(1, 2, 4, 5, 6, dtype=F64)).shape == (1, 6, 4, 5, 6)  # 3-D: avg_pool3d


def test_histogram_layer_bad_arguments():
    with pytest.raises(ValueError, match="in_channels must be an integer >= 1, got 0"):
        softhist.nn.HistogramLayer(0, 4, 3)
    with pytest.raises(ValueError, match="num_bins"):
        softhist.nn.HistogramLayer(3, 0, 3)
    with pytest.raises(ValueError, match="kernel_size must be"):
        softhist.nn.HistogramLayer(3, 4, 0)
    with pytest.raises(TypeError, match="stride must be an int"):
        softhist.nn.HistogramLayer(3, 4, 3, stride=1.5)
    with pytest.raises(TypeError, match="normalize_bins must be a bool"):
        softhist.nn.HistogramLayer(3, 4, 3, normalize_bins="yes")
    layer = softhist.nn.HistogramLayer(3, 4, 3, padding=2)
    with pytest.raises(ValueError, match=r"input must have shape \(B, 3, \*spatial\)"):
        layer(torch.rand(1, 2, 8, 8))
    with pytest.raises(ValueError, match="padding must be at most half of kernel_size"):
        layer(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"kernel_size must be an int >= 1 or 2 of them"):
        softhist.nn.HistogramLayer(3, 4, (3, 3, 3))(torch.rand(1, 3, 8, 8))


# --------------------------------------------------------------------------- examples


@pytest.mark.parametrize(
    "script",
    [
        "calibration_digits.py", "metric_learning_digits.py", "hl_gauss_diabetes.py", "hellinger_digits.py",
        "colour_transfer.py", "texture_histogram_layer.py",
    ],
)
def test_example_runs(script, monkeypatch, capsys):
    # In this process, as `python examples/<script> --steps 3` runs it (a fresh interpreter per
    # example only re-imported torch and scikit-learn).
    pytest.importorskip("sklearn")
    path = ROOT / "examples" / script
    monkeypatch.setattr(sys, "argv", [str(path), "--steps", "3"])
    threads = torch.get_num_threads()
    try:
        runpy.run_path(str(path), run_name="__main__")
    finally:
        torch.set_num_threads(threads)
    assert capsys.readouterr().out.strip()

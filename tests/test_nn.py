"""softhist.nn: SoftHistogram and MutualInformationLoss, and an end-to-end registration."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck
from torch.func import functional_call

import softhist
from softhist.kernels import KERNELS
from softhist.nn import MutualInformationLoss, SoftHistogram
from softhist.registration import _point_gaussian_std

F64 = torch.float64


def _snapshot(module):
    """Everything a module holds: attributes, parameters and buffers (cloned)."""
    tensors = {k: v.detach().clone() for k, v in module.state_dict().items()}
    plain = {k: v for k, v in vars(module).items() if not k.startswith("_")}
    return plain, tensors, set(vars(module))


def _assert_stateless_forward(module, *inputs):
    before = _snapshot(module)
    module(*inputs).sum().backward()
    after = _snapshot(module)
    assert before[0] == after[0] and before[2] == after[2]
    assert before[1].keys() == after[1].keys() and all(torch.equal(before[1][k], after[1][k]) for k in before[1])


# --------------------------------------------------------------------------- SoftHistogram


@pytest.mark.parametrize("kernel", ["gaussian", "epanechnikov"])
def test_soft_histogram_equals_functional_histogram(kernel):
    x = torch.rand(3, 4, 257, dtype=F64) * 1.2 - 0.1
    layer = SoftHistogram(9, (0.0, 1.0), kernel=kernel, bandwidth=0.04)
    out = layer(x)
    assert out.shape == (3, 4, 9)
    torch.testing.assert_close(out, softhist.histogram(x, 9, range=(0.0, 1.0), kernel=kernel, bandwidth=0.04, dim=-1)[0], rtol=0, atol=0)
    # dim=(0, 2): samples over those dims, the bins still last
    layer = SoftHistogram(9, (0.0, 1.0), kernel=kernel, dim=(0, 2))
    assert layer(x).shape == (4, 9)
    w = torch.rand_like(x)
    hard = SoftHistogram(9, (0.0, 1.0), mode="hard", dim=None)(x, w)
    torch.testing.assert_close(hard, softhist.histogram(x, 9, range=(0.0, 1.0), weight=w, mode="hard")[0])


def test_soft_histogram_learnable_edges_and_bandwidth_start_where_asked():
    layer = SoftHistogram(6, (-1.0, 2.0), learnable_edges=True, learnable_bandwidth=True)
    assert layer.bin_edges.dtype == torch.float64  # learned edges are accumulated in float64
    torch.testing.assert_close(layer.bin_edges.detach().float(), torch.linspace(-1.0, 2.0, 7), rtol=1e-6, atol=1e-6)
    assert layer.current_bandwidth().item() == pytest.approx(0.25, rel=1e-6)  # half a bin width
    assert SoftHistogram(6, (-1.0, 2.0), bandwidth=0.1, learnable_bandwidth=True).current_bandwidth().item() == pytest.approx(0.1)
    assert {n for n, _ in layer.named_parameters()} == {"edge_start", "raw_widths", "log_bandwidth"}
    fixed = SoftHistogram(6, (-1.0, 2.0))
    assert list(fixed.parameters()) == []
    x = torch.rand(2, 500) * 3 - 1
    torch.testing.assert_close(layer(x), fixed(x), rtol=1e-5, atol=1e-3)


def test_soft_histogram_edges_stay_increasing_under_any_step():
    layer = SoftHistogram(5, (0.0, 1.0), learnable_edges=True)
    x = torch.rand(300)
    push = torch.tensor([5.0, -3.0, 4.0, -6.0, 2.0])
    # The same step on free edges would make them cross: the parametrization is what keeps the order.
    free = layer.bin_edges.detach().requires_grad_()
    (softhist.histogram(x, free)[0] / 300 * push).sum().backward()
    assert not (torch.diff(free.detach() - 0.5 * free.grad) > 0).all()
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    for _ in range(3):
        loss = (layer(x) / 300 * push).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        edges = layer.bin_edges.detach()
        assert torch.isfinite(edges).all() and (torch.diff(edges) > 0).all()
    # Where softplus underflows to 0 in float32, the width floor keeps the edges apart.
    with torch.no_grad():
        layer.edge_start.fill_(0.0)
        layer.raw_widths.fill_(-200.0)
    assert torch.nn.functional.softplus(layer.raw_widths).max().item() == 0.0
    assert (torch.diff(layer.bin_edges.detach()) > 0).all() and torch.isfinite(layer(x)).all()


def test_soft_histogram_gradcheck_through_parameters():
    layer = SoftHistogram(4, (0.0, 1.0), learnable_edges=True, learnable_bandwidth=True).double()
    x = torch.rand(2, 15, dtype=F64)
    names = [n for n, _ in layer.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in layer.parameters())

    def f(*values):
        return functional_call(layer, dict(zip(names, values)), (x,))

    assert gradcheck(f, params, eps=1e-6, atol=1e-5)


def test_soft_histogram_default_bandwidth_follows_learnable_edges_in_gradcheck():
    """With learnable edges and bandwidth=None the bandwidth is half the mean width of the current
    edges: the edges' gradient includes that path (finite differences see it)."""
    layer = SoftHistogram(5, (0.0, 1.0), learnable_edges=True).double()
    x = torch.rand(2, 40, dtype=F64) * 1.4 - 0.2
    names = [n for n, _ in layer.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in layer.parameters())

    def f(*values):
        return functional_call(layer, dict(zip(names, values)), (x,))

    assert gradcheck(f, params, eps=1e-6, atol=1e-7, rtol=1e-5)
    # Its value: half the mean bin width, as histogram's default on the same edges.
    edges = layer.bin_edges.detach()
    torch.testing.assert_close(layer.current_bandwidth(), (edges[-1] - edges[0]) / 10)
    torch.testing.assert_close(layer(x), softhist.histogram(x, edges, dim=-1)[0])


def test_soft_histogram_takes_a_0d_tensor_bandwidth_as_histc_does():
    x = torch.rand(3, 200, dtype=F64)
    want = softhist.histogram(x, 8, range=(0.0, 1.0), bandwidth=0.1, dim=-1)[0]
    torch.testing.assert_close(SoftHistogram(8, (0.0, 1.0), bandwidth=torch.tensor(0.1, dtype=F64))(x), want)
    learnable = SoftHistogram(8, (0.0, 1.0), bandwidth=torch.tensor(0.1), learnable_bandwidth=True)
    assert learnable.current_bandwidth().item() == pytest.approx(0.1)
    # A tensor that requires grad gets its gradient, as in histc.
    h = torch.tensor(0.1, dtype=F64, requires_grad=True)
    layer = SoftHistogram(8, (0.0, 1.0), bandwidth=h)
    (layer(x) ** 2).sum().backward()
    assert h.grad is not None and h.grad != 0
    assert "bandwidth=0.1 (tensor)" in repr(layer)
    local = softhist.nn.LocalMutualInformationLoss(4, 8, bandwidth=torch.tensor(0.05))
    assert local.bandwidth == pytest.approx(0.05)
    assert MutualInformationLoss(sigma_ratio=torch.tensor(0.5)).sigma_ratio == 0.5


def test_soft_histogram_repr_shows_the_learned_bandwidth():
    layer = SoftHistogram(8, (0.0, 1.0), learnable_bandwidth=True)
    assert "bandwidth=0.0625 (learnable)" in repr(layer)
    with torch.no_grad():
        layer.log_bandwidth.fill_(math.log(0.2))
    assert "bandwidth=0.2 (learnable)" in repr(layer) and "None" not in repr(layer)
    assert "bandwidth=0.03" in repr(SoftHistogram(8, (0.0, 1.0), bandwidth=0.03))
    assert "bandwidth=None" in repr(SoftHistogram(8, (0.0, 1.0)))


def test_soft_histogram_forward_stores_no_state():
    layer = SoftHistogram(7, (0.0, 1.0), learnable_edges=True, learnable_bandwidth=True)
    _assert_stateless_forward(layer, torch.rand(3, 100))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(bins=0, range=(0, 1)), ValueError, r"bins must be an integer >= 1, got 0"),
        (dict(bins=4, range=(1, 0)), ValueError, r"range must be finite with min < max, got \(1, 0\)"),
        (dict(bins=4, range=(0, float("inf"))), ValueError, r"range must be finite with min < max"),
        (dict(bins=4, range=0.5), ValueError, r"range must be a \(min, max\) pair, got 0.5"),
        (dict(bins=4, range=("a", 1)), TypeError, r"range must hold two real numbers"),
        (dict(bins=4, range=(0, 1), kernel="laplace"), ValueError, r"kernel must be one of"),
        (dict(bins=4, range=(0, 1), mode="fuzzy"), ValueError, r"mode must be one of \['soft', 'hard', 'straight_through'\], got 'fuzzy'"),
        (dict(bins=4, range=(0, 1), bandwidth=-1.0), ValueError, r"bandwidth must be a positive, finite number, got -1.0"),
        (dict(bins=4, range=(0, 1), bandwidth=torch.tensor(-0.5)), ValueError, r"bandwidth must be a positive, finite number, got tensor\(-0.5000\)"),
        (dict(bins=4, range=(0, 1), bandwidth=torch.tensor([0.1, 0.2])), TypeError, r"bandwidth must be a number or a 0-d real tensor, got .* shape \(2,\)"),
        (dict(bins=4, range=(0, 1), bandwidth="0.1"), TypeError, r"bandwidth must be a positive, finite number, got '0.1'"),
        (dict(bins=4, range=(0, 1), dim="rows"), TypeError, r"dim must be None, an int or a sequence of ints, got 'rows'"),
        (dict(bins=4, range=(0, 1), dim=1.5), TypeError, r"dim must be None, an int or a sequence of ints, got 1.5"),
        (dict(bins=4, range=(0, 1), dim=(0, 0)), ValueError, r"dim must not repeat a dimension, got \(0, 0\)"),
        (dict(bins=4, range=(0, 1), learnable_edges="yes"), TypeError, r"learnable_edges must be a bool, got 'yes'"),
        (dict(bins=4, range=(0, 1), learnable_bandwidth=1), TypeError, r"learnable_bandwidth must be a bool, got 1"),
        (dict(bins=4, range=(0, 1), group="world"), RuntimeError, r"group='world' needs an initialized torch.distributed process group"),
    ],
)
def test_soft_histogram_rejects(kwargs, error, match):
    with pytest.raises(error, match=match):
        SoftHistogram(**kwargs)


# --------------------------------------------------------------------------- MutualInformationLoss


def _images(*shape, dtype=torch.float32):
    fixed = torch.rand(*shape, dtype=dtype)
    return fixed, (torch.cos(3 * fixed) + 0.05 * torch.rand(*shape, dtype=dtype)).clamp(0, 1)


@pytest.mark.parametrize("shape", [(2, 1, 17, 23), (2, 3, 5, 6, 7)])
def test_mi_loss_gaussian_uses_monai_bin_layout(shape):
    fixed, moving = _images(*shape, dtype=F64)
    moving = moving * 1.2 - 0.1  # some intensities outside [0, 1]: clamped, as MONAI
    loss = MutualInformationLoss(num_bins=23, sigma_ratio=0.5, reduction="none", smooth_nr=0, smooth_dr=0)(moving, fixed)
    spacing = 1.0 / 22  # MONAI: centers linspace(0, 1, 23)
    h = _point_gaussian_std(0.5) * spacing  # the std of MONAI's point-evaluated, per-voxel normalized window
    assert _point_gaussian_std(0.5) == pytest.approx(math.sqrt(0.25 - 1 / 12), rel=1e-3)
    assert _point_gaussian_std(3.0) == pytest.approx(math.sqrt(9 - 1 / 12), rel=1e-9)
    x, y = moving.flatten(1).clamp(0, 1), fixed.flatten(1)
    cdf = KERNELS["gaussian"].cdf
    lo, hi = -spacing / 2, 1 + spacing / 2
    inside = lambda v: cdf((hi - v) / h) - cdf((lo - v) / h)  # noqa: E731
    expected = softhist.mutual_information(x, y, 23, range=(lo, hi), bandwidth=h, weight=1 / (inside(x) * inside(y)))
    assert loss.shape == (2,)
    torch.testing.assert_close(loss, -expected, rtol=1e-12, atol=0)


def _dense_monai_bspline_mi(pred, target, bins, ranges):
    """MONAI's b-spline recipe, dense: cubic B-spline at integer offsets for pred, nearest bin
    (ties halved) for target, on ITK's padded positions."""

    def positions(image, lo, hi):
        size = (hi - lo) / (bins - 4)
        return (image / size - (lo / size - 2)).clamp(2, bins - 3).flatten(1)

    k = torch.arange(bins, dtype=F64)
    a = (k - positions(pred, *ranges[0])[..., None]).abs()
    w_pred = torch.where(a < 1, (4 - 6 * a**2 + 3 * a**3) / 6, torch.where(a < 2, (2 - a).clamp_min(0) ** 3 / 6, 0.0))
    d = (k - positions(target, *ranges[1])[..., None]).abs()
    w_target = (d < 0.5).to(F64) + 0.5 * (d == 0.5).to(F64)
    pab = w_pred.transpose(1, 2) @ w_target / w_pred.shape[1]
    papb = pab.sum(2, keepdim=True) * pab.sum(1, keepdim=True)
    return torch.where(pab > 0, pab * torch.log(pab / papb), 0.0).sum((1, 2))


def test_mi_loss_bspline_layout_is_monai_recipe():
    fixed, moving = _images(2, 1, 20, 20, dtype=F64)
    ranges = [(0.0, 1.0), (-1.0, 3.0)]
    loss_fn = MutualInformationLoss("b-spline", 12, reduction="sum", range=ranges, smooth_nr=0, smooth_dr=0)
    expected = _dense_monai_bspline_mi(moving, fixed * 4 - 1, 12, ranges)
    torch.testing.assert_close(loss_fn(moving, fixed * 4 - 1), -expected.sum(), rtol=1e-12, atol=0)
    # Target positions halfway between two bins count half in each.
    target = torch.tensor([0.0, 0.0625, 0.5, 0.5625, 1.0], dtype=F64).repeat(8).view(1, 1, 40)  # ties at 1/16
    pred = torch.rand(1, 1, 40, dtype=F64)
    loss = MutualInformationLoss("b-spline", 12, range=[(0.0, 1.0)] * 2, smooth_nr=0, smooth_dr=0)(pred, target)
    torch.testing.assert_close(loss, -_dense_monai_bspline_mi(pred, target, 12, [(0.0, 1.0)] * 2)[0], rtol=1e-12, atol=0)


def test_mi_loss_reductions_range_none_and_normalized():
    fixed, moving = _images(3, 1, 12, 12, dtype=F64)
    per_item = MutualInformationLoss(reduction="none")(moving, fixed)
    assert (per_item < 0).all()
    assert MutualInformationLoss()(moving, fixed).item() == pytest.approx(per_item.mean().item(), rel=1e-14)
    assert MutualInformationLoss(reduction="sum")(moving, fixed).item() == pytest.approx(per_item.sum().item(), rel=1e-14)
    # b-spline, range=None: each image's own min and max over the batch, as MONAI
    scaled = MutualInformationLoss("b-spline", range=None, reduction="none")(moving * 100 + 7, fixed - 3)
    lo_m, hi_m, lo_f, hi_f = moving.min().item(), moving.max().item(), fixed.min().item(), fixed.max().item()
    explicit = MutualInformationLoss("b-spline", range=[(lo_m, hi_m), (lo_f, hi_f)], reduction="none")(moving, fixed)
    torch.testing.assert_close(scaled, explicit, rtol=1e-9, atol=1e-12)
    nmi = MutualInformationLoss(normalized=True, reduction="none")(moving, fixed)
    assert ((nmi < 0) & (nmi > -1)).all()


@pytest.mark.parametrize("kernel_type", ["gaussian", "b-spline"])
@pytest.mark.parametrize("range_", [(0.0, 1.0), None])
def test_mi_loss_constant_images_are_finite(kernel_type, range_):
    # MONAI issue 9018: constant images gave NaN with the b-spline kernel.
    pred = torch.zeros(1, 1, 8, 8, requires_grad=True)
    target = torch.ones(1, 1, 8, 8)
    for p, t in ((pred, target), (pred, torch.rand(1, 1, 8, 8)), (pred, pred.detach())):
        loss = MutualInformationLoss(kernel_type, range=range_)(p, t)
        (grad,) = torch.autograd.grad(loss, pred)
        assert torch.isfinite(loss) and abs(loss.item()) < 1e-5 and torch.isfinite(grad).all()


def test_mi_loss_half_precision_is_finite_and_close():
    # MONAI issue 7622: the loss went to -inf under float16 autocast.
    fixed, moving = _images(2, 1, 64, 64)
    ref = MutualInformationLoss()(moving, fixed)
    half = MutualInformationLoss()(moving.half(), fixed.half())
    assert half.dtype == torch.float16 and torch.isfinite(half)
    assert half.float().item() == pytest.approx(ref.item(), abs=5e-3)


def test_mi_loss_forward_stores_no_state():
    fixed, moving = _images(2, 1, 9, 9)
    _assert_stateless_forward(MutualInformationLoss(range=None), moving.requires_grad_(), fixed)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(kernel_type="parzen"), ValueError, r"kernel_type must be one of \['gaussian', 'b-spline'\], got 'parzen'"),
        (dict(num_bins=1), ValueError, r"num_bins must be an integer >= 2, got 1"),
        (dict(kernel_type="b-spline", num_bins=4), ValueError, r"num_bins must be an integer >= 5, got 4"),
        (dict(sigma_ratio=0.0), ValueError, r"sigma_ratio must be a positive, finite number, got 0.0"),
        (dict(reduction="max"), ValueError, r"reduction must be one of \['mean', 'sum', 'none'\], got 'max'"),
        (dict(smooth_nr=-1.0), ValueError, r"smooth_nr must be a non-negative number, got -1.0"),
        (dict(range=(1.0, 1.0)), ValueError, r"range must be finite with min < max, got \(1.0, 1.0\)"),
        (dict(range=[(0, 1), (2, 1)]), ValueError, r"range\[1\] must be finite with min < max"),
        (dict(normalized="yes"), TypeError, r"normalized must be a bool, got 'yes'"),
        (dict(mode="hard"), ValueError, r"mode must be 'soft' or 'straight_through' for a loss, got 'hard'"),
    ],
)
def test_mi_loss_rejects(kwargs, error, match):
    with pytest.raises(error, match=match):
        MutualInformationLoss(**kwargs)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(patch_size=0), ValueError, r"patch_size must hold positive integers, got 0"),
        (dict(patch_size=(4, -1)), ValueError, r"patch_size must hold positive integers, got \(4, -1\)"),
        (dict(patch_size="4"), TypeError, r"patch_size must be an int or a sequence of ints, got '4'"),
        (dict(patch_size=4, range=(1.0, 0.0)), ValueError, r"range must be finite with min < max, got \(1.0, 0.0\)"),
        (dict(patch_size=4, range=[(0, 1), (2, 1)]), ValueError, r"range\[1\] must be finite with min < max"),
        (dict(patch_size=4, range=(0, float("nan"))), ValueError, r"range must be finite with min < max"),
        (dict(patch_size=4, bandwidth=0.0), ValueError, r"bandwidth must be a positive, finite number, got 0.0"),
        (dict(patch_size=4, normalized=1), TypeError, r"normalized must be a bool, got 1"),
    ],
)
def test_local_mi_loss_rejects_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        softhist.nn.LocalMutualInformationLoss(**kwargs)


def test_local_mi_loss_takes_a_range_per_image():
    pred, target = torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8)
    loss = softhist.nn.LocalMutualInformationLoss(4, 8, range=[(0, 1), None])
    assert loss.range == ((0.0, 1.0), None)
    torch.testing.assert_close(
        loss(pred, target), -softhist.local_mutual_information(pred, target, 4, 8, range=[(0.0, 1.0), None]).mean()
    )


def test_mi_loss_rejects_bad_images():
    loss_fn = MutualInformationLoss()
    with pytest.raises(ValueError, match=r"pred and target must have the same shape, got \(1, 1, 4, 4\) and \(1, 1, 4, 5\)"):
        loss_fn(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 5))
    with pytest.raises(ValueError, match=r"pred must have shape \(B, C, \*spatial\), got \(16,\)"):
        loss_fn(torch.rand(16), torch.rand(16))
    with pytest.raises(TypeError, match=r"target must be a torch.Tensor, got ndarray"):
        loss_fn(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4).numpy())


# --------------------------------------------------------------------------- registration, end to end


def _blob_image(size, shift, seed=1, blobs=30):
    """Sum of Gaussian blobs, evaluated analytically at pixel centers moved by ``-shift`` (dy, dx)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.rand(blobs, 2, generator=g, dtype=F64) * size
    sigma = 3 + 4 * torch.rand(blobs, generator=g, dtype=F64)
    amp = torch.rand(blobs, generator=g, dtype=F64)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=F64), torch.arange(size, dtype=F64), indexing="ij")
    d2 = (yy[..., None] - shift[0] - centers[:, 0]) ** 2 + (xx[..., None] - shift[1] - centers[:, 1]) ** 2
    return (amp * torch.exp(-d2 / (2 * sigma**2))).sum(-1)


@pytest.fixture
def one_thread():
    """The registration's tensors are a few thousand elements: a second intra-op thread only adds
    fork/join cost, and on a busy 2-core machine its spinning turns ~1 s into ~20 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_registration_recovers_subpixel_shift_under_nonlinear_intensity_map(one_thread):
    size, shift, border = 64, (1.35, -0.65), 8
    base = _blob_image(size, (0.0, 0.0))
    lo, hi = base.min(), base.max()
    fixed = ((base - lo) / (hi - lo)).float()
    # moving(p) = g(fixed(p - shift)) with g non-monotonic: intensities are not linearly related
    g = lambda v: 0.5 + 0.5 * torch.sin(3 * math.pi * v)  # noqa: E731
    moving = g((_blob_image(size, shift) - lo) / (hi - lo)).float()
    assert abs(torch.corrcoef(torch.stack([fixed.flatten(), g(fixed).flatten()]))[0, 1]) < 0.5

    theta = torch.zeros(2, requires_grad=True)  # (dy, dx) in pixels
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    loss_fn = MutualInformationLoss(num_bins=32)
    opt = torch.optim.Adam([theta], lr=0.15)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 100)
    inner = (..., slice(border, -border), slice(border, -border))  # away from the padded border
    for _ in range(100):
        grid = torch.stack([(xx + theta[1]) * 2 / (size - 1) - 1, (yy + theta[0]) * 2 / (size - 1) - 1], -1)
        warped = F.grid_sample(moving[None, None], grid[None], mode="bilinear", align_corners=True)
        loss = loss_fn(warped[inner], fixed[None, None][inner])
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    error = (theta.detach() - torch.tensor(shift)).abs().max().item()
    print(f"registration: theta={theta.detach().tolist()}, max error {error:.4f} px")
    assert error < 0.05

"""Registration metrics against the libraries registration people compare with.

* ITK's Mattes metric, through SimpleITK's ``MetricEvaluate`` (every pixel sampled,
  identity transform), in 2-D and 3-D, with masks;
* MONAI's ``GlobalMutualInformationLoss`` from MONAI's own arguments;
* local MI against a loop over patches.

The images are real: the MRI slice that matplotlib ships (``s1045.ima.gz``, 8-bit
intensities stored big-endian in 16 bits), a 64 x 64 crop of it, and a small volume
stacked from shifted crops of it. The moving images are resampled copies (rotated,
shifted) with their intensities remapped, as in multimodal registration.
"""

import pathlib
import re
import runpy
import sys

import numpy as np
import pytest
import torch

import softhist
from softhist.nn import LocalMutualInformationLoss, MattesMutualInformationLoss, MutualInformationLoss

sitk = pytest.importorskip("SimpleITK")
cbook = pytest.importorskip("matplotlib.cbook")

F64 = torch.float64


@pytest.fixture(scope="module")
def mri():
    with cbook.get_sample_data("s1045.ima.gz") as f:
        return np.frombuffer(f.read(), ">u2").reshape(256, 256).astype(np.float64)


def _resampled(image: np.ndarray, transform) -> np.ndarray:
    itk = sitk.GetImageFromArray(image)
    return sitk.GetArrayFromImage(sitk.Resample(itk, itk, transform, sitk.sitkLinear, 0.0))


@pytest.fixture(scope="module")
def pair_2d(mri):
    fixed = mri[64:192:2, 64:192:2].copy()  # 64 x 64, intensities 0..215
    moving = np.sqrt(_resampled(fixed, sitk.Euler2DTransform((31.5, 31.5), 0.1, (1.5, -2.0))) + 10.0) * 3.0
    return fixed, moving


@pytest.fixture(scope="module")
def pair_3d(mri):
    fixed = np.stack([mri[60 + 3 * z : 188 + 3 * z : 4, 64 + z : 192 + z : 4] for z in range(10)])  # 10 x 32 x 32
    transform = sitk.Euler3DTransform((15.5, 15.5, 4.5), 0.05, -0.03, 0.08, (0.7, -1.2, 0.4))
    moving = np.log1p(_resampled(fixed, transform)) * 20.0
    return fixed, moving


def _itk_mattes(fixed: np.ndarray, moving: np.ndarray, bins: int, fixed_mask=None, moving_mask=None) -> float:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    method.SetMetricSamplingStrategy(method.NONE)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetInitialTransform(sitk.Transform(fixed.ndim, sitk.sitkIdentity))
    if fixed_mask is not None:
        method.SetMetricFixedMask(sitk.GetImageFromArray(fixed_mask.astype(np.uint8)))
    if moving_mask is not None:
        method.SetMetricMovingMask(sitk.GetImageFromArray(moving_mask.astype(np.uint8)))
    return method.MetricEvaluate(sitk.GetImageFromArray(fixed), sitk.GetImageFromArray(moving))


def _batch(*arrays, dtype=F64):
    return [torch.from_numpy(a).to(dtype)[None, None] for a in arrays]


# --------------------------------------------------------------------------- ITK's Mattes metric


@pytest.mark.parametrize("bins", [50, 32, 7])
def test_mattes_equals_itk_2d(pair_2d, bins):
    fixed, moving = pair_2d
    expected = _itk_mattes(fixed, moving, bins)
    moving_t, fixed_t = _batch(moving, fixed)
    value = MattesMutualInformationLoss(bins)(moving_t, fixed_t).item()
    assert value == pytest.approx(expected, rel=1e-5)
    assert value == pytest.approx(expected, rel=1e-12)  # in fact to rounding


def test_mattes_equals_itk_2d_with_masks(pair_2d):
    fixed, moving = pair_2d
    fixed_mask = np.zeros(fixed.shape, bool)
    fixed_mask[5:60, 8:50] = True
    moving_mask = np.zeros(fixed.shape, bool)
    moving_mask[10:64, 0:55] = True
    expected = _itk_mattes(fixed, moving, 32, fixed_mask, moving_mask)
    moving_t, fixed_t = _batch(moving, fixed)
    masks = dict(fixed_mask=torch.from_numpy(fixed_mask)[None, None], moving_mask=torch.from_numpy(moving_mask))
    value = MattesMutualInformationLoss(32)(moving_t, fixed_t, **masks).item()
    assert value == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["float64", "float32"])
def test_mattes_equals_itk_3d(pair_3d, dtype):
    fixed, moving = pair_3d
    expected = _itk_mattes(fixed, moving, 50)
    moving_t, fixed_t = _batch(moving, fixed, dtype=dtype)
    value = MattesMutualInformationLoss()(moving_t, fixed_t)
    assert value.dtype == dtype
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_mattes_batch_items_are_separate_images(pair_2d, pair_3d):
    fixed, moving = pair_2d
    other = np.ascontiguousarray(fixed[::-1])  # a second, different pair in the same batch
    moving_t = torch.from_numpy(np.stack([moving, other]))[:, None]
    fixed_t = torch.from_numpy(np.stack([fixed, fixed * 0.5 + 3]))[:, None]
    losses = MattesMutualInformationLoss(reduction="none")(moving_t, fixed_t)
    expected = [_itk_mattes(fixed, moving, 50), _itk_mattes(fixed * 0.5 + 3, other, 50)]
    torch.testing.assert_close(losses, torch.tensor(expected, dtype=F64), rtol=1e-12, atol=0)
    assert MattesMutualInformationLoss()(moving_t, fixed_t).item() == pytest.approx(sum(expected) / 2, rel=1e-12)


def test_mattes_ranges_follow_itk(pair_2d):
    fixed, moving = pair_2d
    moving_t, fixed_t = _batch(moving, fixed)
    own = MattesMutualInformationLoss(32)(moving_t, fixed_t)
    given = MattesMutualInformationLoss(
        32, moving_range=(moving.min(), moving.max()), fixed_range=(fixed.min(), fixed.max())
    )(moving_t, fixed_t)
    torch.testing.assert_close(given, own, rtol=1e-14, atol=0)
    # Moving intensities outside the range are not sampled: the same as masking them out.
    lo, hi = np.quantile(moving, [0.1, 0.9])
    narrowed = MattesMutualInformationLoss(32, moving_range=(lo, hi))(moving_t, fixed_t)
    inside = torch.from_numpy((moving >= lo) & (moving <= hi))
    expected = MattesMutualInformationLoss(32, moving_range=(lo, hi))(moving_t, fixed_t, moving_mask=inside)
    torch.testing.assert_close(narrowed, expected, rtol=1e-14, atol=0)


def test_mattes_gradient_is_the_cubic_bspline_derivative():
    g = torch.Generator().manual_seed(0)
    fixed = torch.rand(1, 1, 5, 6, generator=g, dtype=F64)
    moving = (torch.cos(2 * fixed) + 0.1 * torch.rand(1, 1, 5, 6, generator=g, dtype=F64)).requires_grad_()
    fn = lambda m: softhist.mattes_mutual_information(m, fixed, 9, moving_range=(0.3, 1.2))  # noqa: E731
    assert torch.autograd.gradcheck(fn, (moving,))


def test_mattes_constant_and_empty_images_are_finite():
    moving = torch.zeros(1, 1, 8, 8, requires_grad=True)
    for fixed, mask in ((torch.ones(1, 1, 8, 8), None), (torch.rand(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))):
        mi = softhist.mattes_mutual_information(moving, fixed, moving_mask=mask)
        (grad,) = torch.autograd.grad(mi.sum(), moving)
        assert mi.item() == pytest.approx(0.0, abs=1e-6) and torch.isfinite(grad).all()


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda m, f: softhist.mattes_mutual_information(m, f, 4), ValueError, r"bins must be an integer >= 5 .*got 4"),
        (lambda m, f: softhist.mattes_mutual_information(m, f[..., :3]), ValueError, r"moving and fixed must have the same shape"),
        (lambda m, f: softhist.mattes_mutual_information(m[0, 0], f[0, 0]), ValueError, r"moving must have shape \(B, C, \*spatial\)"),
        (lambda m, f: softhist.mattes_mutual_information(m, f.long()), TypeError, r"fixed must be floating point, got dtype torch.int64"),
        (lambda m, f: softhist.mattes_mutual_information(m, f, moving_range=(1, 0)), ValueError, r"moving_range must be finite with min < max"),
        (lambda m, f: softhist.mattes_mutual_information(m, f, fixed_mask=torch.ones(3)), ValueError, r"fixed_mask must broadcast"),
        (lambda m, f: MattesMutualInformationLoss(reduction="max"), ValueError, r"reduction must be one of"),
    ],
)
def test_mattes_rejects(call, error, match):
    with pytest.raises(error, match=match):
        call(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4))


# --------------------------------------------------------------------------- MONAI's global MI


@pytest.fixture(scope="module")
def monai_batch(pair_2d):
    """Two image pairs in [0, 1], float32, as MONAI's loss expects them."""
    fixed, moving = pair_2d
    f = torch.from_numpy(fixed / fixed.max()).float()[None, None]
    m = torch.from_numpy((moving - moving.min()) / (moving.max() - moving.min())).float()[None, None]
    return torch.cat([m, f]), torch.cat([f, m * 0.5])


@pytest.mark.parametrize("num_bins", [23, 32, 50, 10])
def test_mi_loss_equals_monai_bspline(monai_batch, num_bins):
    monai_losses = pytest.importorskip("monai.losses")
    pred, target = monai_batch
    expected = monai_losses.GlobalMutualInformationLoss("b-spline", num_bins, reduction="none")(pred, target)
    value = MutualInformationLoss("b-spline", num_bins, reduction="none")(pred, target)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("num_bins,sigma_ratio", [(23, 0.5), (32, 0.5), (50, 1.0), (10, 0.3), (16, 2.0)])
def test_mi_loss_matches_monai_gaussian(monai_batch, num_bins, sigma_ratio):
    monai_losses = pytest.importorskip("monai.losses")
    pred, target = monai_batch
    expected = monai_losses.GlobalMutualInformationLoss("gaussian", num_bins, sigma_ratio, reduction="none")(pred, target)
    value = MutualInformationLoss("gaussian", num_bins, sigma_ratio, reduction="none")(pred, target)
    torch.testing.assert_close(value, expected, rtol=2e-3, atol=0)  # MONAI's own tests: rtol=0.08, atol=0.05


def test_mi_loss_monai_gradients_point_the_same_way(monai_batch):
    monai_losses = pytest.importorskip("monai.losses")
    pred, target = monai_batch
    grads = []
    for loss_fn in (monai_losses.GlobalMutualInformationLoss("gaussian", 23), MutualInformationLoss("gaussian", 23)):
        p = pred.clone().requires_grad_()
        loss_fn(p, target).backward()
        grads.append(p.grad.flatten())
    cosine = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0).item()
    assert cosine > 0.99


# --------------------------------------------------------------------------- local MI


@pytest.mark.parametrize("shape,patch", [((2, 1, 12, 18), 6), ((1, 2, 8, 12, 9), (4, 6, 3))], ids=["2d", "3d"])
def test_local_mi_is_the_mean_of_patch_mi(shape, patch):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(*shape, generator=g, dtype=F64)
    y = (torch.sin(4 * x) + 0.3 * torch.rand(*shape, generator=g, dtype=F64)).requires_grad_()
    lmi = softhist.local_mutual_information(x, y, patch, bins=6, range=[(0, 1), (-0.3, 1.3)], bandwidth=0.1)
    sizes = (patch,) * (len(shape) - 2) if isinstance(patch, int) else patch
    expected = []
    for b in range(shape[0]):
        per_patch = []
        for corner in np.ndindex(*(s // p for s, p in zip(shape[2:], sizes))):
            window = (b, slice(None)) + tuple(slice(c * p, (c + 1) * p) for c, p in zip(corner, sizes))
            per_patch.append(
                softhist.mutual_information(
                    x[window].flatten(), y[window].flatten(), 6, range=[(0, 1), (-0.3, 1.3)], bandwidth=0.1
                )
            )
        expected.append(torch.stack(per_patch).mean())
    expected = torch.stack(expected)
    torch.testing.assert_close(lmi, expected, rtol=1e-12, atol=1e-14)
    (g_lmi,) = torch.autograd.grad(lmi.sum(), y)
    (g_loop,) = torch.autograd.grad(expected.sum(), y)
    torch.testing.assert_close(g_lmi, g_loop, rtol=1e-10, atol=1e-12)
    loss = LocalMutualInformationLoss(patch, 6, range=[(0, 1), (-0.3, 1.3)], bandwidth=0.1, reduction="none")(x, y)
    torch.testing.assert_close(loss, -lmi)


def test_local_mi_gradcheck():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(1, 1, 4, 6, generator=g, dtype=F64)
    y = (x**2 + 0.2 * torch.rand(1, 1, 4, 6, generator=g, dtype=F64)).requires_grad_()
    fn = lambda y: softhist.local_mutual_information(x, y, (2, 3), bins=4, range=(0, 1.2), bandwidth=0.15)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (y,))


def test_local_mi_rejects_patches_that_do_not_tile():
    x = torch.rand(1, 1, 10, 12)
    with pytest.raises(ValueError, match=r"spatial size 10 \(dim 2\) is not a multiple of patch_size 4"):
        softhist.local_mutual_information(x, x, 4)
    with pytest.raises(ValueError, match=r"patch_size must be an int or one int per spatial dim \(2\), got \(5, 4, 3\)"):
        softhist.local_mutual_information(x, x, (5, 4, 3))
    with pytest.raises(ValueError, match=r"patch_size must hold positive integers, got 0"):
        softhist.local_mutual_information(x, x, 0)


# --------------------------------------------------------------------------- the example


def test_register_mri_example_recovers_the_transform(monkeypatch, capsys):
    # In this process, as `python examples/register_mri.py` runs it.
    script = pathlib.Path(__file__).resolve().parents[1] / "examples" / "register_mri.py"
    monkeypatch.setattr(sys, "argv", [str(script)])
    threads = torch.get_num_threads()
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        torch.set_num_threads(threads)
    stdout = capsys.readouterr().out
    errors = re.findall(r"(\w+): angle error ([\d.]+) deg, shift error ([\d.]+) px", stdout)
    assert [name for name, _, _ in errors] == ["softhist", "SimpleITK"], stdout
    for _, angle, shift in errors:
        assert float(angle) < 0.05 and float(shift) < 0.05, stdout

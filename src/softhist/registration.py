"""Mutual information as image registration computes it: ITK's Mattes metric, MONAI's
global MI and local (patch-wise) MI, all as joint histograms of the engine.

Each is softhist's one formula with per-axis kernels and modes (see ``kernels.py``:
evaluating an order-``n`` B-spline at bin centers equals the bin masses of the
order-``(n-1)`` B-spline kernel):

* **ITK's Mattes metric** (``MattesMutualInformationImageToImageMetricv4``) maps each
  intensity to a continuous bin position ``t = v / s - (min / s - 2)``, bin size
  ``s = (max - min) / (bins - 4)`` (two padding bins each side). The fixed image counts
  in bin ``clamp(trunc(t), 2, bins - 3)`` (a zero-order window: hard binning); the
  moving image adds ``beta_3(k - t)``, the cubic B-spline at integer offsets, to bin
  ``k``: the ``"bspline2"`` kernel's masses over bins ``[k - 1/2, k + 1/2)``,
  bandwidth 1/2 (knots one bin apart). MI of the normalized joint; the value is ``-MI``.
* **MONAI's** ``GlobalMutualInformationLoss(kernel_type="b-spline")`` uses the same
  positions, clamped to ``[2, bins - 3]``, the cubic window for the prediction and a
  nearest-bin window (ties split in half) for the target.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import TYPE_CHECKING, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ._checks import check_images, check_optional_range
from .histogram import AxisKernels, BackendName, Bandwidth, Mode, histogram2d
from .kernels import get_kernel
from .losses import MIRange, _mutual_information_from_joint, _result_dtype, mutual_information

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = ["local_mutual_information", "mattes_mutual_information"]

Range = Tuple[float, float]
_PADDING = 2  # bins of padding on each side in ITK's and MONAI's B-spline layout


def _mask(mask: Optional[Tensor], image: Tensor, name: str) -> Tensor:
    """A boolean mask broadcast to ``image``'s shape, flattened to ``(B, N)``; nonzero is inside."""
    if mask is None:
        return torch.ones(image.shape[0], image[0].numel(), dtype=torch.bool, device=image.device)
    if not isinstance(mask, Tensor) or mask.is_complex():
        raise TypeError(f"{name} must be a real or boolean torch.Tensor, got {type(mask).__name__}")
    try:
        full = torch.broadcast_to(mask, image.shape)
    except RuntimeError:
        raise ValueError(f"{name} must broadcast to the images' shape {tuple(image.shape)}, got {tuple(mask.shape)}") from None
    return (full != 0).reshape(image.shape[0], -1).to(image.device)


def _masked_range(values: Tensor, mask: Tensor, fixed: Optional[Range]) -> Tuple[Tensor, Tensor]:
    """Per row ``(B, 1)``: min and max over the mask (detached), or the given range.
    Rows with an empty mask get ``(0, 1)`` (they have no samples)."""
    if fixed is not None:
        lo = torch.full((values.shape[0], 1), fixed[0], dtype=values.dtype, device=values.device)
        return lo, torch.full_like(lo, fixed[1])
    v = values.detach()
    lo = torch.where(mask, v, math.inf).amin(1, keepdim=True)
    hi = torch.where(mask, v, -math.inf).amax(1, keepdim=True)
    empty = ~mask.any(1, keepdim=True)
    return torch.where(empty, 0.0, lo), torch.where(empty, 1.0, hi)


def _itk_positions(values: Tensor, lo: Tensor, hi: Tensor, bins: int) -> Tensor:
    """ITK's continuous bin position ``v / s - (lo / s - 2)``, ``s = (hi - lo) / (bins - 4)``, with
    ITK's arithmetic. A constant image (``s = 0``) puts every sample at position 2."""
    size = (hi - lo) / (bins - 2 * _PADDING)
    size = torch.where(size > 0, size, 1.0)
    normalized_min = lo / size - _PADDING
    return values / size - normalized_min


def mattes_mutual_information(
    moving: Tensor,
    fixed: Tensor,
    bins: int = 50,
    *,
    moving_mask: Optional[Tensor] = None,
    fixed_mask: Optional[Tensor] = None,
    moving_range: Optional[Range] = None,
    fixed_range: Optional[Range] = None,
    backend: BackendName = "auto",
) -> Tensor:
    """Mattes mutual information of image pairs, as ITK computes it, in nats.

    Equals ``-`` the value of ITK's ``MattesMutualInformationImageToImageMetricv4``
    (SimpleITK's ``SetMetricAsMattesMutualInformation``) for the same images with every
    pixel sampled and the identity transform: a joint histogram of ``bins`` bins per
    image, two of them padding on each side, the fixed image binned hard (ITK's
    zero-order window) and the moving image with ITK's cubic B-spline Parzen window
    (softhist's ``"bspline2"`` kernel, one bin per knot; see the module docstring).
    Gradients reach ``moving`` and are ITK's: the cubic B-spline's derivative.

    Args:
        moving: images ``(B, C, *spatial)``; each batch item is one image (its channels
            and voxels are its samples). Already resampled onto the fixed image's grid.
        fixed: images of the same shape.
        bins: histogram bins per image, ``>= 5`` (ITK's default 50).
        moving_mask, fixed_mask: masks broadcastable to the images, nonzero inside. A
            voxel is sampled where both masks hold (ITK's fixed mask at the point and
            moving mask at the mapped point); each image's intensity range is taken
            over its own mask, as ITK does.
        moving_range, fixed_range: ``(min, max)`` of the intensities instead of each
            image's own (ITK reads them from the whole moving image, before any
            transform: pass the original's range when ``moving`` is a resampled copy).
            As in ITK, moving intensities outside their range are not sampled and fixed
            intensities outside theirs count in the end bins.
        backend: as in :func:`softhist.histc`.

    Returns:
        MI per batch item, ``(B,)``, in ``moving``'s dtype. ITK's metric value is ``-MI``.

    Example:
        >>> import torch, softhist
        >>> fixed = torch.rand(1, 1, 32, 32, dtype=torch.float64)
        >>> moving = (fixed ** 2).requires_grad_()
        >>> mi = softhist.mattes_mutual_information(moving, fixed, bins=20)
        >>> bool(mi > 1.5)  # a monotone remap: strongly dependent
        True
        >>> mi.sum().backward()
    """
    check_images(moving, fixed, ("moving", "fixed"))
    if isinstance(bins, bool) or not isinstance(bins, numbers.Integral) or bins < 5:
        raise ValueError(f"bins must be an integer >= 5 (two padding bins on each side), got {bins!r}")
    bins = int(bins)
    moving_range = check_optional_range(moving_range, "moving_range")
    fixed_range = check_optional_range(fixed_range, "fixed_range")
    batch = moving.shape[0]
    m = moving.reshape(batch, -1)
    if m.dtype in (torch.float16, torch.bfloat16):  # bin positions need more than 8 or 11 bits
        m = m.float()
    f = fixed.detach().reshape(batch, -1).to(torch.float64)  # ITK bins the fixed image in double
    m_mask, f_mask = _mask(moving_mask, moving, "moving_mask"), _mask(fixed_mask, fixed, "fixed_mask")
    m_lo, m_hi = _masked_range(m, m_mask, moving_range)
    f_lo, f_hi = _masked_range(f, f_mask, fixed_range)
    # ITK samples a voxel when both masks hold and the moving intensity is within its range.
    valid = m_mask & f_mask & (m.detach() >= m_lo) & (m.detach() <= m_hi)
    moving_position = torch.where(valid, _itk_positions(m, m_lo, m_hi, bins), math.nan)
    fixed_bin = _itk_positions(f, f_lo, f_hi, bins).trunc().clamp(_PADDING, bins - _PADDING - 1)
    # Moving bin k collects beta_3(k - t) = the "bspline2" mass over [k - 1/2, k + 1/2);
    # the fixed sample sits at the middle of its bin [k, k + 1).
    return mutual_information(
        (fixed_bin + 0.5).to(moving_position.dtype), moving_position, bins,
        range=[(0.0, float(bins)), (-0.5, bins - 0.5)], kernel=["box", "bspline2"], mode=["hard", "soft"],
        bandwidth=[0.5, 0.5], backend=backend,
    ).to(moving.dtype)


# --------------------------------------------------------------------------- MONAI's layouts


def _monai_bspline_positions(image: Tensor, bins: int, range_: Optional[Range]) -> Tensor:
    """MONAI's b-spline window positions ``(B, N)``: ITK's positions from the batch's min and max
    (or ``range_``), in the image's dtype and with MONAI's arithmetic, clamped to ``[2, bins - 3]``."""
    if range_ is None:
        hi, lo = image.detach().max(), image.detach().min()
    else:
        lo, hi = (torch.tensor(v, dtype=image.dtype, device=image.device) for v in range_)
    size = (hi - lo) / (bins - 2 * _PADDING)
    size = torch.where(size > 0, size, 1.0)
    normalized_min = torch.div(lo, size) - _PADDING
    position = torch.div(image, size) - normalized_min
    return position.clamp(_PADDING, bins - _PADDING - 1).reshape(image.shape[0], -1)


def monai_bspline_joint(
    pred: Tensor, target: Tensor, bins: int, range_: Sequence[Optional[Range]], mode: str = "soft",
    group: Optional["ProcessGroup"] = None, backend: BackendName = "auto",
) -> Tensor:
    """MONAI's b-spline joint histogram ``(B, bins, bins)`` (pred bins first).

    The prediction gets the cubic B-spline at integer offsets (``"bspline2"`` masses), the
    target its nearest bin, a position exactly halfway between two bins counting half in
    each (as MONAI): such targets enter twice, at the position and just below it, with
    weight 1/2 each.
    """
    p = _monai_bspline_positions(pred, bins, range_[0])
    t = _monai_bspline_positions(target.detach(), bins, range_[1])
    tie = (t - t.floor()) == 0.5
    below = torch.nextafter(t, torch.full_like(t, -math.inf))
    half = tie.to(p.dtype) * 0.5
    hist, _, _ = histogram2d(
        torch.cat([p, p], -1), torch.cat([t, below], -1), bins, range=[(-0.5, bins - 0.5)] * 2,
        weight=torch.cat([1.0 - half, half], -1), kernel=["bspline2", "box"], mode=[mode, "hard"],
        bandwidth=0.5, backend=backend, group=group,
    )
    return hist


def _point_gaussian_std(ratio: float) -> float:
    return _point_gaussian_std_cached(ratio)


# A function of a number: torch.compile takes its value and traces nothing. This is the mark that
# torch.compiler.assume_constant_result sets, set here so that importing softhist does not import
# torch._dynamo (the decorator does).
_point_gaussian_std._dynamo_marked_constant = True  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=64)
def _point_gaussian_std_cached(ratio: float) -> float:
    """Standard deviation, in bin spacings, of the kernel that MONAI's point-evaluated Gaussian
    window amounts to: a Gaussian of std ``ratio`` spacings evaluated at every bin center and
    normalized per sample (a softmax over the centers). Its variance is the mean squared distance
    from a sample to the centers it is spread over, less the ``1/12`` a bin's own width
    contributes; ``ratio**2 - 1/12`` once ``ratio`` exceeds about one."""
    x = (torch.arange(4096, dtype=torch.float64) + 0.5) / 4096  # positions within one bin
    reach = math.ceil(12 * ratio) + 2
    k = torch.arange(-reach, reach + 1, dtype=torch.float64)
    p = torch.softmax(-((x[:, None] - k) ** 2) / (2.0 * ratio * ratio), 1)
    variance = float((p * (k - x[:, None]) ** 2).sum(1).mean()) - 1.0 / 12.0
    return math.sqrt(max(variance, 1e-6))


def monai_gaussian_joint(
    pred: Tensor, target: Tensor, bins: int, sigma_ratio: float, range_: Sequence[Range], mode: str = "soft",
    group: Optional["ProcessGroup"] = None, backend: BackendName = "auto",
) -> Tensor:
    """MONAI's Gaussian joint histogram ``(B, bins, bins)``: intensities clamped to the range, bins
    centered at ``linspace(lo, hi, bins)``, a Gaussian kernel whose standard deviation matches
    MONAI's point-evaluated window (:func:`_point_gaussian_std`), and each sample's joint mass
    normalized to 1 (MONAI normalizes each sample's window) through its weight."""
    samples, bandwidths, ranges = [], [], []
    weight = None
    cdf = get_kernel("gaussian").cdf
    for image, (lo, hi) in zip((pred, target), range_):
        spacing = (hi - lo) / (bins - 1)
        h = _point_gaussian_std(sigma_ratio) * spacing
        x = image.reshape(image.shape[0], -1).clamp(lo, hi)
        edges = (lo - 0.5 * spacing, hi + 0.5 * spacing)
        if mode == "soft":  # straight-through counts each sample whole in one bin
            inside = cdf((edges[1] - x) / h) - cdf((edges[0] - x) / h)  # the sample's mass within the bins
            weight = 1.0 / inside if weight is None else weight / inside
        samples.append(x)
        bandwidths.append(h)
        ranges.append(edges)
    hist, _, _ = histogram2d(
        samples[0], samples[1], bins, range=ranges, weight=weight, kernel="gaussian", bandwidth=bandwidths,
        mode=mode, backend=backend, group=group,
    )
    return hist


def monai_mutual_information(joint: Tensor, smooth_nr: float, smooth_dr: float) -> Tensor:
    """MONAI's MI of joint histograms ``(B, bins, bins)``:
    ``sum p log((p + nr) / (p_x p_y + dr) + dr)``; with ``nr = dr = 0`` the exact MI."""
    if smooth_nr == 0.0 and smooth_dr == 0.0:
        return _mutual_information_from_joint(joint, normalized=False)
    dtype = torch.float64 if joint.dtype == torch.float64 else torch.float32
    pab = joint.to(dtype) / joint.to(dtype).sum((-2, -1), keepdim=True).clamp_min(torch.finfo(dtype).tiny)
    papb = pab.sum(-1, keepdim=True) * pab.sum(-2, keepdim=True)
    return (pab * torch.log((pab + smooth_nr) / (papb + smooth_dr) + smooth_dr)).sum((-2, -1))


# --------------------------------------------------------------------------- local MI


def _patch_size(patch_size: object, spatial: Sequence[int]) -> Tuple[int, ...]:
    sizes = [patch_size] * len(spatial) if isinstance(patch_size, numbers.Integral) else patch_size
    if not isinstance(sizes, (list, tuple)) or len(sizes) != len(spatial):
        raise ValueError(f"patch_size must be an int or one int per spatial dim ({len(spatial)}), got {patch_size!r}")
    out = []
    for d, (p, s) in enumerate(zip(sizes, spatial)):
        if isinstance(p, bool) or not isinstance(p, numbers.Integral) or p < 1:
            raise ValueError(f"patch_size must hold positive integers, got {patch_size!r}")
        if s % p:
            raise ValueError(
                f"the spatial size {s} (dim {d + 2}) is not a multiple of patch_size {int(p)}; crop or pad the images"
            )
        out.append(int(p))
    return tuple(out)


def _patches(image: Tensor, sizes: Tuple[int, ...]) -> Tensor:
    """``(B, C, *spatial)`` -> ``(B, P, C * prod(sizes))``: non-overlapping patches, row-major."""
    batch, channels, *spatial = image.shape
    split = [batch, channels]
    for s, p in zip(spatial, sizes):
        split += [s // p, p]
    tiles = image.reshape(split)
    dims = len(sizes)
    order = [0] + [2 + 2 * d for d in range(dims)] + [1] + [3 + 2 * d for d in range(dims)]
    return tiles.permute(order).reshape(batch, -1, channels * math.prod(sizes))


def local_mutual_information(
    x: Tensor,
    y: Tensor,
    patch_size: Union[int, Sequence[int]],
    bins: Union[int, Sequence[int]] = 32,
    *,
    range: MIRange = None,
    kernel: AxisKernels = "gaussian",
    bandwidth: Union[Bandwidth, Sequence[Union[float, Tensor]]] = None,
    mode: Union[Mode, Sequence[Mode]] = "soft",
    normalized: bool = False,
    backend: BackendName = "auto",
) -> Tensor:
    """Local mutual information: the mean over non-overlapping patches of each patch's MI.

    The images are tiled into patches of ``patch_size`` voxels (all channels of a patch
    are its samples); each patch gets its own joint histogram, all of them from one
    engine call (``B * patches`` rows), so the cost is ``O(voxels + patches * bins**2)``.
    Every patch is binned on the same edges: ``range=None`` takes each image's range
    over the whole batch (one host sync; a constant for autograd).

    Args:
        x, y: images ``(B, C, *spatial)`` of the same shape; each spatial size a
            multiple of the patch size.
        patch_size: an int for every spatial dim, or one per spatial dim.
        bins, range, kernel, bandwidth, mode, normalized, backend: as in
            :func:`softhist.mutual_information`.

    Returns:
        ``(B,)``: the mean patch MI (or NMI) of each batch item, in the images' dtype.

    Example:
        >>> import torch, softhist
        >>> x = torch.rand(2, 1, 16, 16)
        >>> y = torch.cat([1 - x[:1], torch.rand(1, 1, 16, 16)])  # dependent, then independent
        >>> lmi = softhist.local_mutual_information(x, y, patch_size=8, bins=4, range=(0, 1))
        >>> lmi.shape, bool(lmi[0] > lmi[1])
        (torch.Size([2]), True)
    """
    check_images(x, y, ("x", "y"))
    sizes = _patch_size(patch_size, x.shape[2:])
    mi = mutual_information(
        _patches(x, sizes), _patches(y, sizes), bins, range=range, kernel=kernel, bandwidth=bandwidth,
        mode=mode, normalized=normalized, backend=backend,
    )
    return mi.mean(-1).to(_result_dtype(x, y))

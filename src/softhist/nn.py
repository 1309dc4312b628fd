"""``nn.Module`` faces of the histogram functions.

The modules hold hyperparameters (and, when asked, learnable edges or
bandwidth) and nothing else: ``forward`` never writes to ``self``.
"""

from __future__ import annotations

import math
import numbers
import typing
import warnings
from typing import TYPE_CHECKING, Literal, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from . import _checks
from ._checks import (
    check_bool,
    check_dim_argument,
    check_group,
    check_int_at_least,
    check_mi_range,
    check_mode,
    check_module_bandwidth,
    check_optional_range,
    check_patch_size,
    check_positive,
    check_range_pair,
    check_reduction,
    refuse_torchscript,
)
from ._plan import default_bandwidth
from .applications import histogram_loss, hl_gauss_probs
from .histogram import Dim, Mode, histogram
from .kernels import Kernel, KernelName, get_kernel, is_builtin
from .losses import _mutual_information_from_joint, _samples_range
from .registration import (
    local_mutual_information,
    mattes_mutual_information,
    monai_bspline_joint,
    monai_gaussian_joint,
    monai_mutual_information,
)

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = [
    "HLGaussLoss",
    "HistogramLayer",
    "HistogramLoss",
    "LocalMutualInformationLoss",
    "MattesMutualInformationLoss",
    "MutualInformationLoss",
    "SoftHistogram",
]

Range = Tuple[float, float]
Reduction = Literal["mean", "sum", "none"]
MonaiKernel = Literal["gaussian", "b-spline"]
_MODES = typing.get_args(Mode)


def _bandwidth_repr(value: Union[float, Tensor, None]) -> str:
    return f"{float(value.detach()):.6g} (tensor)" if isinstance(value, Tensor) else repr(value)


def _inverse_softplus(y: float) -> float:
    """``x`` with ``softplus(x) = y > 0``, stable for small and large ``y``."""
    return y + math.log(-math.expm1(-y))


class SoftHistogram(nn.Module):
    """Soft histogram as a layer, optionally with learnable edges and bandwidth.

    Module face of :func:`softhist.histogram` with ``bins`` equal-width bins on
    ``range`` at initialization.

    Args:
        bins: number of bins, ``>= 1``.
        range: ``(min, max)`` of the (initial) edges.
        kernel, mode, membership, normalize_samples: as in :func:`softhist.histc`.
        bandwidth: kernel standard deviation in data units, a number or a
            0-d tensor (one that requires grad gets its gradient, as in
            :func:`softhist.histc`); ``None`` is half the mean bin width,
            recomputed from the current edges when they are learnable, and
            then differentiable with respect to them.
        dim: the sample dimensions of the input (an int, a sequence of ints
            or ``None`` for all); the others are batch dimensions, kept in
            front of the bins axis.
        learnable_edges: learn the edges. They are parametrized by a first edge
            and ``bins`` widths ``softplus(raw) + min_width``, accumulated with
            ``cumsum`` in float64, so they stay strictly increasing whatever the
            optimizer does; ``min_width`` (``1e-4`` of the initial width) keeps
            widths positive where ``softplus`` underflows. Should a step push the
            first edge so far that neighbouring edges round to the same value in
            the input's dtype, that bin holds no mass until the edges return. A
            parameter that became NaN or infinite raises a ``ValueError`` naming it.
        learnable_bandwidth: learn the bandwidth as ``exp(log_bandwidth)``, so
            it stays positive.
        group: a ``torch.distributed`` process group: each forward returns the
            histogram of every rank's samples (see :func:`softhist.histc`).

    Shape:
        ``forward(input (*), weight (*) or None) -> (*batch, bins)``, the bins on
        the last axis; with ``dim=-1``, ``(*batch, N) -> (*batch, bins)``.

    Raises:
        ValueError, TypeError: at construction, for a bad argument (named, with its value).

    Example:
        >>> import torch, softhist
        >>> layer = softhist.nn.SoftHistogram(8, (0.0, 1.0), learnable_edges=True, learnable_bandwidth=True)
        >>> hist = layer(torch.rand(4, 300))
        >>> hist.shape
        torch.Size([4, 8])
        >>> hist.sum().backward()
        >>> layer.raw_widths.grad.shape, layer.log_bandwidth.grad.shape
        (torch.Size([8]), torch.Size([]))
        >>> layer
        SoftHistogram(bins=8, range=(0.0, 1.0), kernel='gaussian', bandwidth=0.0625 (learnable), mode='soft', dim=-1, learnable_edges=True, learnable_bandwidth=True)
        >>> softhist.nn.SoftHistogram(8, (0.0, 1.0), bandwidth=torch.tensor(0.1)).bandwidth
        0.10000000149011612
    """

    def __init__(
        self,
        bins: int,
        range: Range,
        *,
        kernel: Union[KernelName, Kernel] = "gaussian",
        bandwidth: Optional[float] = None,
        mode: Mode = "soft",
        membership: Literal["mass", "center"] = "mass",
        normalize_samples: bool = False,
        dim: Dim = -1,
        learnable_edges: bool = False,
        learnable_bandwidth: bool = False,
        group: Optional["ProcessGroup"] = None,
    ) -> None:
        super().__init__()
        self.group = check_group(group)
        self.bins = check_int_at_least(bins, "bins")
        self.range = check_range_pair(range)
        checked = _checks.check_kernel(kernel)
        self.kernel = checked.name if is_builtin(checked) else checked
        self.mode = check_mode(mode)
        self.membership = _checks.check_membership(membership, 1)[0]
        self.normalize_samples = _checks.check_flag(normalize_samples, "normalize_samples")
        self.dim = check_dim_argument(dim)
        self.learnable_edges = check_bool(learnable_edges, "learnable_edges")
        self.learnable_bandwidth = check_bool(learnable_bandwidth, "learnable_bandwidth")
        lo, hi = self.range
        width = (hi - lo) / self.bins
        bandwidth = check_module_bandwidth(bandwidth)
        self.min_width = 1e-4 * width
        if self.learnable_edges:
            self.edge_start = nn.Parameter(torch.tensor(lo))
            self.raw_widths = nn.Parameter(torch.full((self.bins,), _inverse_softplus(width - self.min_width)))
        if self.learnable_bandwidth:
            start = float(bandwidth) if bandwidth is not None else 0.5 * width
            self.log_bandwidth = nn.Parameter(torch.tensor(math.log(start)))
            self.bandwidth = None
        else:
            self.bandwidth = bandwidth

    @property
    def bin_edges(self) -> Tensor:
        """The current edges, ``(bins + 1,)``; differentiable when learnable."""
        if not self.learnable_edges:
            return torch.linspace(*self.range, self.bins + 1)
        # float64: float32 edges far from zero (after a large step) would round onto each other.
        start, raw = self.edge_start.double(), self.raw_widths.double()
        widths = nnf.softplus(raw) + self.min_width
        return torch.cat([start.reshape(1), start + torch.cumsum(widths, 0)])

    def current_bandwidth(self) -> Union[float, Tensor, None]:
        """The bandwidth the next ``forward`` uses: a float, a 0-d tensor (learnable, or half the mean
        width of learnable edges, differentiable with respect to them) or None (half a bin width)."""
        return self._bandwidth(self.bin_edges if self.learnable_edges else None)

    def _bandwidth(self, edges: Optional[Tensor]) -> Union[float, Tensor, None]:
        if self.learnable_bandwidth:
            return self.log_bandwidth.exp()
        if self.bandwidth is None and edges is not None:  # histogram's default, as a tensor current_bandwidth() shows
            return default_bandwidth(edges[0], edges[-1], self.bins)
        return self.bandwidth

    def forward(self, input: Tensor, weight: Optional[Tensor] = None) -> Tensor:
        edges = self.bin_edges if self.learnable_edges else None
        bins: Union[int, Tensor] = edges if edges is not None else self.bins
        range_ = None if self.learnable_edges else self.range
        try:
            hist, _ = histogram(
                input, bins, range=range_, weight=weight, kernel=self.kernel,
                bandwidth=self._bandwidth(edges), mode=self.mode, dim=self.dim, group=self.group,
                membership=self.membership, normalize_samples=self.normalize_samples,
            )
        except ValueError as error:
            if not (self.learnable_edges and str(error).startswith("bins must be")):
                raise
            raise ValueError(
                f"SoftHistogram's learned edges are not finite (edge_start={self.edge_start.item()!r}, "
                f"raw_widths in [{self.raw_widths.min().item()!r}, {self.raw_widths.max().item()!r}]): "
                "the optimizer diverged; lower its learning rate"
            ) from None
        return hist

    def extra_repr(self) -> str:
        if self.learnable_bandwidth:
            bandwidth = f"{float(self.log_bandwidth.detach().exp()):.6g} (learnable)"
        else:
            bandwidth = _bandwidth_repr(self.bandwidth)
        return (
            f"bins={self.bins}, range={self.range}, kernel={self.kernel!r}, bandwidth={bandwidth}, "
            f"mode={self.mode!r}, dim={self.dim}, learnable_edges={self.learnable_edges}, "
            f"learnable_bandwidth={self.learnable_bandwidth}"
            + (f", membership={self.membership!r}" if self.membership != "mass" else "")
            + (", normalize_samples=True" if self.normalize_samples else "")
        )


class MutualInformationLoss(nn.Module):
    """Negative mutual information between two images, for registration.

    Drop-in for MONAI's ``GlobalMutualInformationLoss``: the same positional
    arguments, the same ``forward(pred, target)`` and the same sign and
    reduction. MI is computed per batch item over all voxels (channels and
    spatial dims flattened) from a soft joint histogram
    (:func:`softhist.mutual_information`), never an ``N x bins`` tensor.

    It reproduces MONAI's value from MONAI's arguments (the tests check it against
    MONAI itself): the b-spline kernel to about ``1e-6`` relative (float32
    rounding), the Gaussian to about ``1e-3`` relative on images in ``[0, 1]``
    (MONAI's own tests allow 8%). Bin layout and kernels on ``range = (lo, hi)``:

    * ``"b-spline"`` (Mattes et al., as ITK and MONAI): each intensity maps to
      the bin position ``t = v / s - (lo / s - 2)``, ``s = (hi - lo) / (num_bins - 4)``
      (two padding bins each side), clamped to ``[2, num_bins - 3]``. The
      prediction adds the cubic B-spline ``beta_3(k - t)`` to bin ``k``, which is
      softhist's ``"bspline2"`` kernel over bins ``[k - 1/2, k + 1/2)`` at
      bandwidth ``1/2``; the target counts in its nearest bin, a hard axis (a
      position halfway between two bins counts half in each, as in MONAI).
      ``range=None`` takes each image's min and max over the batch, as MONAI.
      ``sigma_ratio`` is not used, as in MONAI.
    * ``"gaussian"``: intensities clamped to the range, ``num_bins`` bins
      centered at ``linspace(lo, hi, num_bins)``, spacing ``d``. MONAI evaluates
      a Gaussian of std ``sigma_ratio * d`` at the centers and normalizes each
      voxel's weights; softhist integrates a Gaussian kernel over each bin, with
      the standard deviation that matches MONAI's window (``sqrt(sigma_ratio**2 - 1/12) * d``
      once ``sigma_ratio`` exceeds about 1, computed exactly below), and weights
      each voxel by the inverse of its mass inside the bins, so every voxel
      counts once, as in MONAI. ``range=None`` means ``(0, 1)``, as in MONAI; it
      warns when the intensities leave it (one host sync), since raw intensities
      (0-255, CT numbers) would be clamped onto one bin: pass their ``range``.
    * MI is MONAI's ``sum p log((p + smooth_nr) / (p_x p_y + smooth_dr) + smooth_dr)``;
      with ``smooth_nr = smooth_dr = 0`` it is the exact MI (``0 log 0 = 0``,
      logs clamped at the dtype's ``tiny``, finite gradients).

    Beyond MONAI: an explicit ``range`` (one pair, or one per image), the
    normalized MI, straight-through mode, a process group, float16 input, and
    constant images give MI 0 with finite gradients. Intensities are a
    constant for autograd where they set the range (MONAI differentiates
    through the b-spline path's min and max).

    Args:
        kernel_type: ``"gaussian"`` or ``"b-spline"``.
        num_bins: bins per image axis (``>= 2``; ``>= 5`` for ``"b-spline"``).
        sigma_ratio: Gaussian bandwidth in bin spacings.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` over the batch.
        smooth_nr, smooth_dr: MONAI's smoothing terms, see above.
        range: ``(lo, hi)`` for both images, ``[(lo, hi), (lo, hi)]`` for pred and
            target, or ``None`` (MONAI's, see above; with a group, agreed over all ranks).
        normalized: use the normalized MI ``2 MI / (H(X) + H(Y))``.
        mode: ``"soft"`` or ``"straight_through"`` (as in :func:`softhist.histogram`).
        group: a ``torch.distributed`` process group: MI over every rank's voxels
            (each rank holding a shard of each image), with ``range=None`` agreed
            over all ranks.

    Shape:
        ``pred``, ``target``: ``(B, C, *spatial)``, the same shape. Output: ``()``,
        or ``(B,)`` with ``reduction="none"``.

    Example:
        >>> import torch, softhist
        >>> loss_fn = softhist.nn.MutualInformationLoss(num_bins=16)
        >>> fixed = torch.rand(2, 1, 24, 24)
        >>> moving = (1 - fixed).requires_grad_()
        >>> loss = loss_fn(moving, fixed)
        >>> bool(loss < -1.5)  # strongly dependent: large MI
        True
        >>> loss.backward()
    """

    def __init__(
        self,
        kernel_type: MonaiKernel = "gaussian",
        num_bins: int = 23,
        sigma_ratio: float = 0.5,
        reduction: Reduction = "mean",
        smooth_nr: float = 1e-7,
        smooth_dr: float = 1e-7,
        *,
        range: Union[Range, Tuple[Range, Range], None] = None,
        normalized: bool = False,
        mode: Mode = "soft",
        group: Optional["ProcessGroup"] = None,
    ) -> None:
        super().__init__()
        self.group = check_group(group)
        if kernel_type not in ("gaussian", "b-spline"):
            raise ValueError(f"kernel_type must be one of ['gaussian', 'b-spline'], got {kernel_type!r}")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be one of ['mean', 'sum', 'none'], got {reduction!r}")
        self.kernel_type = kernel_type
        self.num_bins = check_int_at_least(num_bins, "num_bins", 5 if kernel_type == "b-spline" else 2)
        self.sigma_ratio = check_positive(sigma_ratio, "sigma_ratio")
        self.reduction = reduction
        for name, value in (("smooth_nr", smooth_nr), ("smooth_dr", smooth_dr)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        self.smooth_nr, self.smooth_dr = float(smooth_nr), float(smooth_dr)
        if range is None:
            self.range: Optional[Tuple[Range, Range]] = None
        elif isinstance(range, (tuple, list)) and len(range) == 2 and all(isinstance(r, (tuple, list)) for r in range):
            self.range = (check_range_pair(range[0], "range[0]"), check_range_pair(range[1], "range[1]"))
        else:
            self.range = (check_range_pair(range),) * 2
        if not isinstance(normalized, bool):
            raise TypeError(f"normalized must be a bool, got {normalized!r}")
        self.normalized = normalized
        if check_mode(mode) == "hard":
            raise ValueError("mode must be 'soft' or 'straight_through' for a loss, got 'hard'")
        self.mode = mode

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        for name, value in (("pred", pred), ("target", target)):
            if not isinstance(value, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if pred.shape != target.shape:
            raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
        if pred.dim() < 2:
            raise ValueError(f"pred must have shape (B, C, *spatial), got {tuple(pred.shape)}")
        out_dtype = pred.dtype if pred.is_floating_point() else torch.get_default_dtype()
        x, y = (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in (pred, target))
        ranges: Sequence[Optional[Range]] = self.range if self.range is not None else (None, None)
        if self.kernel_type == "gaussian":
            if self.range is None and not torch.compiler.is_compiling():
                self._warn_outside_unit_range(x, y)
            ranges = [r if r is not None else (0.0, 1.0) for r in ranges]
            hist = monai_gaussian_joint(x, y, self.num_bins, self.sigma_ratio, ranges, self.mode, self.group)
        else:
            if self.range is None and self.group is not None:
                ranges = [self._data_range(x, self.group), self._data_range(y, self.group)]
            hist = monai_bspline_joint(x, y, self.num_bins, ranges, self.mode, self.group)
        if self.normalized:
            mi = _mutual_information_from_joint(hist, normalized=True)
        else:
            mi = monai_mutual_information(hist, self.smooth_nr, self.smooth_dr)
        mi = mi.to(out_dtype)
        if self.reduction == "mean":
            return -mi.mean()
        if self.reduction == "sum":
            return -mi.sum()
        return -mi

    def _warn_outside_unit_range(self, *images: Tensor) -> None:
        """MONAI's Gaussian layout clamps intensities onto (0, 1): say so when they leave it (one host sync)."""
        for name, image in zip(("pred", "target"), images):
            lo, hi = self._data_range(image, self.group)
            if lo < -0.01 or hi > 1.01:
                warnings.warn(
                    f"MutualInformationLoss: {name}'s intensities span [{lo:.4g}, {hi:.4g}], but range=None bins (0, 1) as "
                    "MONAI does, clamping the rest onto the end bins; pass range=(lo, hi) for raw intensities",
                    UserWarning, stacklevel=3,
                )

    @staticmethod
    def _data_range(t: Tensor, group: Optional["ProcessGroup"]) -> Range:
        """Finite min and max over the whole batch and group (one host sync), widened when equal."""
        lo, hi = _samples_range(t, group=check_group(group))
        return (lo, hi) if lo < hi else (lo - 0.5, hi + 0.5)

    def extra_repr(self) -> str:
        return (
            f"kernel_type={self.kernel_type!r}, num_bins={self.num_bins}, sigma_ratio={self.sigma_ratio}, "
            f"reduction={self.reduction!r}, range={self.range}, normalized={self.normalized}, mode={self.mode!r}"
        )


def _reduce(values: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


class MattesMutualInformationLoss(nn.Module):
    """ITK's Mattes mutual information metric as a loss: ``-MI``, the value ITK returns.

    Equals the value of ITK's ``MattesMutualInformationImageToImageMetricv4`` (behind
    SimpleITK's ``SetMetricAsMattesMutualInformation``, ANTs and elastix) for the same
    images with every pixel sampled and the identity transform, to rounding: see
    :func:`softhist.mattes_mutual_information`. Resample the moving image (e.g. with
    ``torch.nn.functional.grid_sample``) and the loss differentiates through it.

    Args:
        num_bins: histogram bins per image, ``>= 5`` (ITK's default 50).
        moving_range, fixed_range: ``(min, max)`` intensity ranges; ``None``: each
            image's own min and max over its mask, as ITK (for a resampled moving
            image, pass the original image's range: ITK reads it before resampling).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` over the batch.

    Shape:
        ``forward(moving, fixed, moving_mask=None, fixed_mask=None)``: images
        ``(B, C, *spatial)`` of the same shape, masks broadcastable to them
        (nonzero inside). Output ``()``, or ``(B,)`` with ``reduction="none"``.

    Example:
        >>> import torch, softhist
        >>> loss_fn = softhist.nn.MattesMutualInformationLoss(num_bins=32)
        >>> fixed = torch.rand(2, 1, 32, 32)
        >>> moving = fixed.sqrt().requires_grad_()
        >>> loss = loss_fn(moving, fixed)
        >>> bool(loss < -2.0)
        True
        >>> loss.backward()
    """

    def __init__(
        self,
        num_bins: int = 50,
        *,
        moving_range: Optional[Range] = None,
        fixed_range: Optional[Range] = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        self.num_bins = check_int_at_least(num_bins, "num_bins", 5)
        self.moving_range = check_optional_range(moving_range, "moving_range")
        self.fixed_range = check_optional_range(fixed_range, "fixed_range")
        self.reduction = check_reduction(reduction)

    def forward(
        self, moving: Tensor, fixed: Tensor, moving_mask: Optional[Tensor] = None, fixed_mask: Optional[Tensor] = None
    ) -> Tensor:
        mi = mattes_mutual_information(
            moving, fixed, self.num_bins, moving_mask=moving_mask, fixed_mask=fixed_mask,
            moving_range=self.moving_range, fixed_range=self.fixed_range,
        )
        return _reduce(-mi, self.reduction)

    def extra_repr(self) -> str:
        return (
            f"num_bins={self.num_bins}, moving_range={self.moving_range}, fixed_range={self.fixed_range}, "
            f"reduction={self.reduction!r}"
        )


class LocalMutualInformationLoss(nn.Module):
    """Negative local mutual information: ``-`` the mean MI over non-overlapping patches.

    Module face of :func:`softhist.local_mutual_information`: each patch of
    ``patch_size`` voxels gets its own soft joint histogram (one engine call for all),
    so intensity relations may vary across the image (bias fields, local contrast).

    Args:
        patch_size: an int for every spatial dim, or one per spatial dim; the images'
            spatial sizes must be multiples of it.
        num_bins: bins per image axis.
        range: as in :func:`softhist.mutual_information` (default ``(0, 1)``; ``None``
            for each image's range over the batch).
        kernel, bandwidth, normalized: as in :func:`softhist.mutual_information`.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` over the batch.

    Shape:
        ``pred``, ``target``: ``(B, C, *spatial)``. Output ``()``, or ``(B,)``.

    Example:
        >>> import torch, softhist
        >>> loss_fn = softhist.nn.LocalMutualInformationLoss(patch_size=8, num_bins=8)
        >>> target = torch.rand(1, 1, 16, 16)
        >>> pred = (1 - target).requires_grad_()
        >>> loss = loss_fn(pred, target)
        >>> loss.backward()
        >>> bool(loss < -0.8)
        True
    """

    def __init__(
        self,
        patch_size: Union[int, Sequence[int]],
        num_bins: int = 32,
        *,
        range: Union[Range, Tuple[Range, Range], None] = (0.0, 1.0),
        kernel: KernelName = "gaussian",
        bandwidth: Optional[float] = None,
        normalized: bool = False,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        self.patch_size = check_patch_size(patch_size)
        self.num_bins = check_int_at_least(num_bins, "num_bins")
        self.range = check_mi_range(range)
        self.kernel = get_kernel(kernel).name
        self.bandwidth = check_module_bandwidth(bandwidth)
        if not isinstance(normalized, bool):
            raise TypeError(f"normalized must be a bool, got {normalized!r}")
        self.normalized = normalized
        self.reduction = check_reduction(reduction)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        lmi = local_mutual_information(
            pred, target, self.patch_size, self.num_bins, range=self.range, kernel=self.kernel,
            bandwidth=self.bandwidth, normalized=self.normalized,
        )
        return _reduce(-lmi, self.reduction)

    def extra_repr(self) -> str:
        return (
            f"patch_size={self.patch_size}, num_bins={self.num_bins}, range={self.range}, kernel={self.kernel!r}, "
            f"bandwidth={_bandwidth_repr(self.bandwidth)}, normalized={self.normalized}, reduction={self.reduction!r}"
        )


class HistogramLoss(nn.Module):
    """Histogram Loss (Ustinova & Lempitsky, NeurIPS 2016) on the cosine similarities of embeddings.

    Parity: ``pytorch_metric_learning.losses.HistogramLoss(n_bins=n_bins)`` (to float32
    rounding, gradients included), in ``O(N^2 / 2)`` work and memory where it builds every
    triplet. Module face of :func:`softhist.applications.histogram_loss`.

    Args:
        n_bins: number of node spacings on ``[-1, 1]``, ``>= 1``.

    Shape:
        ``forward(embeddings (N, D), labels (N,)) -> ()``.

    Example:
        >>> import torch, softhist
        >>> loss_fn = softhist.nn.HistogramLoss(n_bins=50)
        >>> emb = torch.randn(16, 8, requires_grad=True)
        >>> loss_fn(emb, torch.arange(16) % 4).backward()
        >>> emb.grad.shape
        torch.Size([16, 8])
    """

    def __init__(self, n_bins: int = 100) -> None:
        super().__init__()
        self.n_bins = check_int_at_least(n_bins, "n_bins")

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return histogram_loss(embeddings, labels, self.n_bins)

    def extra_repr(self) -> str:
        return f"n_bins={self.n_bins}"


class HLGaussLoss(nn.Module):
    """Cross-entropy against the HL-Gauss target distribution: regression as classification.

    Parity: ``HLGaussLoss`` of Farebrother et al. (ICML 2024, "Stop Regressing", listing 1):
    the same interface and values, to ``2e-6`` in float32 for targets inside the support
    (see :func:`softhist.applications.hl_gauss_probs`). A target outside
    ``[min_value, max_value]`` gets a finite distribution summing to 1 (all its mass on the
    nearest end bin once the Gaussian leaves the support), where the listing gives NaN.

    Args:
        min_value, max_value: the support, divided into ``num_bins`` equal bins.
        num_bins: ``>= 1``.
        sigma: the target Gaussian's std in target units (the paper: 0.75 bin widths).

    Shape:
        ``forward(logits (*, num_bins), target (*)) -> ()``, the mean cross-entropy;
        ``transform_to_probs(target (*)) -> (*, num_bins)``;
        ``transform_from_probs(probs (*, num_bins)) -> (*)``, the mean of the bin centers.

    Example:
        >>> import torch, softhist
        >>> loss_fn = softhist.nn.HLGaussLoss(0.0, 10.0, num_bins=20, sigma=0.375)
        >>> logits = torch.zeros(3, 20, requires_grad=True)
        >>> loss_fn(logits, torch.tensor([1.0, 5.0, 9.0])).backward()
        >>> loss_fn.transform_from_probs(loss_fn.transform_to_probs(torch.tensor([5.0])))
        tensor([5.0000])
    """

    def __init__(self, min_value: float, max_value: float, num_bins: int, sigma: float) -> None:
        super().__init__()
        self.min_value = float(min_value)
        self.max_value = float(max_value)
        self.num_bins = check_int_at_least(num_bins, "num_bins")
        self.sigma = check_positive(sigma, "sigma")
        if not (math.isfinite(self.min_value) and math.isfinite(self.max_value) and self.min_value < self.max_value):
            raise ValueError(f"min_value must be below max_value, both finite, got {min_value!r} and {max_value!r}")
        support = torch.linspace(self.min_value, self.max_value, self.num_bins + 1, dtype=torch.float32)
        self.register_buffer("support", support, persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return nnf.cross_entropy(logits, self.transform_to_probs(target).to(logits.dtype))

    def transform_to_probs(self, target: Tensor) -> Tensor:
        return hl_gauss_probs(target, self.min_value, self.max_value, self.num_bins, self.sigma)

    def transform_from_probs(self, probs: Tensor) -> Tensor:
        centers = (self.support[:-1] + self.support[1:]) / 2
        return torch.sum(probs * centers.to(probs.dtype), dim=-1)

    def extra_repr(self) -> str:
        return f"min_value={self.min_value}, max_value={self.max_value}, num_bins={self.num_bins}, sigma={self.sigma}"




class HistogramLayer(nn.Module):
    """Peeples et al.'s RBF histogram layer: learnable bin centres and widths, local histograms per window.

    Parity: GatorSense's ``HistogramLayer`` (``Utils/RBFHistogramPooling.py`` of
    github.com/GatorSense/Histogram_Layer; Peeples, Xu and Zare, "Histogram Layers for Texture
    Analysis", IEEE TAI 2021) with ``dim=2`` and its defaults (``normalize_count=True``,
    ``normalize_bins=True``, ``count_include_pad=False``, ``ceil_mode=False``): to ``1e-5`` given
    the same parameters, gradients included. Its ``bin_centers_conv.bias`` is ``-centers.flatten()``
    and its ``bin_widths_conv.weight`` is ``widths.flatten()``.

    Each pixel ``x`` of channel ``c`` votes ``r_k = exp(-(widths[c, k] * (x - centers[c, k]))^2)``
    for bin ``k``, an unnormalized Gaussian of std ``1 / (sqrt 2 |widths[c, k]|)``; with
    ``normalize_bins`` the votes are divided by ``sum_k r_k + 1e-5`` (the reference's constant),
    and the window average (``normalize_count``; otherwise the average times the window volume)
    is the local histogram.

    It is computed directly, not by :func:`softhist.local_histogram`: that function's bins are
    equal-width bins of one range, and these centres are free parameters per channel and bin.
    Memory is ``O(input x num_bins)`` (the votes, the output's size at stride 1), as in the
    reference; the reference's two grouped 1x1 convolutions become one broadcast
    ``(x - centers) * widths``.

    Args:
        in_channels: channels ``C`` of the input, ``>= 1``.
        num_bins: bins ``K`` per channel, ``>= 1``.
        kernel_size: window size, an int or one per spatial dim.
        stride: window step, an int or one per spatial dim (default 1, as in the reference).
        padding: implicit padding per side, at most half the window; padded pixels are not
            counted (``count_include_pad=False``).
        normalize_count: average over the window (True) or the average times the window's
            volume (False; GatorSense multiplies by ``np.prod(kernel_size)``, which for an int
            ``kernel_size`` ``k`` is ``k``, not ``k^2``: this layer takes ``k^2``; with padding
            the border windows, counting only real pixels, are scaled by the full volume as there).
        normalize_bins: divide each pixel's votes by their sum over the bins plus ``1e-5``.

    Attributes:
        centers, widths: ``(in_channels, num_bins)`` parameters, initialized uniform on
            ``[-1, 1]`` as the reference's convolutions initialize its bias and weight.

    Shape:
        ``(B, C, *spatial) -> (B, C * num_bins, *out_spatial)`` with 1 to 3 spatial dims, channel
        ``c * num_bins + k`` holding bin ``k`` of channel ``c``; ``out_spatial`` as
        :func:`torch.nn.functional.avg_pool2d` computes it.

    Example:
        >>> import torch, softhist
        >>> layer = softhist.nn.HistogramLayer(3, num_bins=4, kernel_size=3)
        >>> out = layer(torch.rand(2, 3, 16, 16))
        >>> out.shape
        torch.Size([2, 12, 14, 14])
        >>> out.sum().backward()
        >>> layer.centers.grad.shape, layer.widths.grad.shape
        (torch.Size([3, 4]), torch.Size([3, 4]))
    """

    _POOLS = {1: nnf.avg_pool1d, 2: nnf.avg_pool2d, 3: nnf.avg_pool3d}
    _BIN_EPS = 1e-5  # the reference's `torch.tensor(10e-6)` added to the bins' sum

    def __init__(
        self,
        in_channels: int,
        num_bins: int,
        kernel_size: Union[int, Sequence[int]],
        stride: Union[int, Sequence[int]] = 1,
        padding: Union[int, Sequence[int]] = 0,
        *,
        normalize_count: bool = True,
        normalize_bins: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = check_int_at_least(in_channels, "in_channels")
        self.num_bins = check_int_at_least(num_bins, "num_bins")
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.normalize_count = check_bool(normalize_count, "normalize_count")
        self.normalize_bins = check_bool(normalize_bins, "normalize_bins")
        self.centers = nn.Parameter(torch.empty(self.in_channels, self.num_bins).uniform_(-1.0, 1.0))
        self.widths = nn.Parameter(torch.empty(self.in_channels, self.num_bins).uniform_(-1.0, 1.0))
        for name, value, least in (("kernel_size", kernel_size, 1), ("stride", stride, 1), ("padding", padding, 0)):
            spatial = len(value) if isinstance(value, (list, tuple)) else 1
            _checks.check_kernel_size_nd(value, name, spatial, least)

    def forward(self, input: Tensor) -> Tensor:
        _checks.check_tensor(input, "input")
        if not 3 <= input.dim() <= 5 or input.shape[1] != self.in_channels:
            raise ValueError(
                f"input must have shape (B, {self.in_channels}, *spatial) with 1 to 3 spatial dims, got shape {tuple(input.shape)}"
            )
        spatial = input.dim() - 2
        size = _checks.check_kernel_size_nd(self.kernel_size, "kernel_size", spatial, 1)
        step = _checks.check_kernel_size_nd(self.stride, "stride", spatial, 1)
        pad = _checks.check_kernel_size_nd(self.padding, "padding", spatial, 0)
        if any(2 * p > k for p, k in zip(pad, size)):
            raise ValueError(f"padding must be at most half of kernel_size, got padding={self.padding!r}, kernel_size={self.kernel_size!r}")
        shape = (1, self.in_channels, self.num_bins) + (1,) * spatial
        z = (input.unsqueeze(2) - self.centers.view(shape)) * self.widths.view(shape)
        votes = torch.exp(-(z * z))  # (B, C, K, *spatial)
        if self.normalize_bins:
            votes = votes / (votes.sum(2, keepdim=True) + self._BIN_EPS)
        pooled = self._POOLS[spatial](votes.flatten(1, 2), size, step, pad, count_include_pad=False)
        return pooled if self.normalize_count else pooled * math.prod(size)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, num_bins={self.num_bins}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, normalize_count={self.normalize_count}, normalize_bins={self.normalize_bins}"
        )


for _module in (SoftHistogram, MutualInformationLoss, MattesMutualInformationLoss, LocalMutualInformationLoss, HistogramLoss, HLGaussLoss, HistogramLayer):
    _module.__prepare_scriptable__ = refuse_torchscript  # torch.jit.script(module) says what to use

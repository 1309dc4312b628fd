"""``nn.Module`` faces of the histogram functions.

The modules hold hyperparameters (and, when asked, learnable edges or
bandwidth) and nothing else: ``forward`` never writes to ``self``.
"""

from __future__ import annotations

import math
import numbers
import typing
from typing import TYPE_CHECKING, Literal, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from .histogram import Dim, Mode, _check_group, histogram
from .kernels import KernelName, get_kernel
from .losses import _finite_range, mutual_information

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = ["MutualInformationLoss", "SoftHistogram"]

Range = Tuple[float, float]
Reduction = Literal["mean", "sum", "none"]
MonaiKernel = Literal["gaussian", "b-spline"]
_MODES = typing.get_args(Mode)


def _check_bins(bins: object, name: str, least: int = 1) -> int:
    if isinstance(bins, bool) or not isinstance(bins, numbers.Integral) or bins < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {bins!r}")
    return int(bins)


def _check_range(range_: object, name: str = "range") -> Range:
    if not isinstance(range_, (tuple, list)) or len(range_) != 2:
        raise ValueError(f"{name} must be a (min, max) pair, got {range_!r}")
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in range_):
        raise TypeError(f"{name} must hold two real numbers, got {range_!r}")
    lo, hi = float(range_[0]), float(range_[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{name} must be finite with min < max, got {range_!r}")
    return lo, hi


def _check_positive(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 < float(value) < math.inf):
        raise ValueError(f"{name} must be a positive, finite number, got {value!r}")
    return float(value)


def _check_mode(mode: object) -> str:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {list(_MODES)}, got {mode!r}")
    return mode


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
        kernel, mode: as in :func:`softhist.histc`.
        bandwidth: kernel standard deviation in data units; ``None`` is half
            the mean bin width (recomputed from the current edges when they
            are learnable).
        dim: the sample dimensions of the input; the others are batch
            dimensions, kept in front of the bins axis.
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

    Example:
        >>> import torch, softhist
        >>> layer = softhist.nn.SoftHistogram(8, (0.0, 1.0), learnable_edges=True, learnable_bandwidth=True)
        >>> hist = layer(torch.rand(4, 300))
        >>> hist.shape
        torch.Size([4, 8])
        >>> hist.sum().backward()
        >>> layer.raw_widths.grad.shape, layer.log_bandwidth.grad.shape
        (torch.Size([8]), torch.Size([]))
    """

    def __init__(
        self,
        bins: int,
        range: Range,
        *,
        kernel: KernelName = "gaussian",
        bandwidth: Optional[float] = None,
        mode: Mode = "soft",
        dim: Dim = -1,
        learnable_edges: bool = False,
        learnable_bandwidth: bool = False,
        group: Optional["ProcessGroup"] = None,
    ) -> None:
        super().__init__()
        self.group = group
        self.bins = _check_bins(bins, "bins")
        self.range = _check_range(range)
        self.kernel = get_kernel(kernel).name
        self.mode = _check_mode(mode)
        self.dim = dim
        self.learnable_edges = bool(learnable_edges)
        self.learnable_bandwidth = bool(learnable_bandwidth)
        lo, hi = self.range
        width = (hi - lo) / self.bins
        if bandwidth is not None:
            bandwidth = _check_positive(bandwidth, "bandwidth")
        self.min_width = 1e-4 * width
        if self.learnable_edges:
            self.edge_start = nn.Parameter(torch.tensor(lo))
            self.raw_widths = nn.Parameter(torch.full((self.bins,), _inverse_softplus(width - self.min_width)))
        if self.learnable_bandwidth:
            start = bandwidth if bandwidth is not None else 0.5 * width
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
        """The bandwidth the next ``forward`` uses: a float, a 0-d tensor (learnable) or None."""
        return self.log_bandwidth.exp() if self.learnable_bandwidth else self.bandwidth

    def forward(self, input: Tensor, weight: Optional[Tensor] = None) -> Tensor:
        bins: Union[int, Tensor] = self.bin_edges if self.learnable_edges else self.bins
        range_ = None if self.learnable_edges else self.range
        try:
            hist, _ = histogram(
                input, bins, range=range_, weight=weight, kernel=self.kernel,
                bandwidth=self.current_bandwidth(), mode=self.mode, dim=self.dim, group=self.group,
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
        return (
            f"bins={self.bins}, range={self.range}, kernel={self.kernel!r}, bandwidth={self.bandwidth}, "
            f"mode={self.mode!r}, dim={self.dim}, learnable_edges={self.learnable_edges}, "
            f"learnable_bandwidth={self.learnable_bandwidth}"
        )


class MutualInformationLoss(nn.Module):
    """Negative mutual information between two images, for registration.

    Drop-in for MONAI's ``GlobalMutualInformationLoss``: the same positional
    arguments, the same ``forward(pred, target)`` and the same sign and
    reduction. MI is computed per batch item over all voxels (channels and
    spatial dims flattened) from a soft joint histogram
    (:func:`softhist.mutual_information`), never an ``N x bins`` tensor.

    Bin layout and kernels, as MONAI places them on ``range = (lo, hi)``:

    * ``"gaussian"``: ``num_bins`` bins centered at ``linspace(lo, hi, num_bins)``,
      spacing ``d = (hi - lo) / (num_bins - 1)``, Gaussian bandwidth
      ``sigma_ratio * d`` (MONAI's ``sigma``).
    * ``"b-spline"``: softhist's ``"bspline"`` kernel (the cubic B-spline) with
      knots one bin apart (bandwidth ``d / sqrt(3)``), ``d = (hi - lo) / (num_bins - 4)``
      and two bins of padding on each side, as MONAI (Mattes et al.), so no
      in-range sample loses mass. ``sigma_ratio`` is not used, as in MONAI.

    Differences from MONAI:

    * ``range`` is an argument. The default, ``None``, follows the data: each
      image's own min and max over the batch (one host sync per call), so raw
      intensities (CT numbers, 0-255) work as they are. MONAI assumes [0, 1]
      and clamps to it: pass ``range=(0, 1)`` for that (and to skip the host
      sync), or a pair of pairs for two modalities. Voxels outside an explicit
      range are clamped onto it, as MONAI clamps, so every voxel counts.
    * The soft mass of voxels near the ends that spills past the outer edges
      (the Gaussian layout's ends) is not counted; the joint histogram is
      renormalized.
    * A voxel's mass in a bin is the kernel's integral over the bin, not its
      value at the bin center renormalized per voxel. The B-spline window is
      applied to both images (MONAI bins the target with a zero-order window).
    * ``smooth_nr`` and ``smooth_dr`` are accepted and unused: ``0 log 0`` is 0
      exactly and logs are clamped at the dtype's ``tiny``, so no smoothing
      term biases the value (MONAI adds ``1e-7`` inside its log).
    * Constant images give MI 0 and finite gradients.

    Args:
        kernel_type: ``"gaussian"`` or ``"b-spline"``.
        num_bins: bins per image axis (``>= 2``; ``>= 5`` for ``"b-spline"``).
        sigma_ratio: Gaussian bandwidth in bin spacings.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` over the batch.
        smooth_nr, smooth_dr: MONAI compatibility, unused.
        range: intensity range, see above.
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
        self.group = group
        if kernel_type not in ("gaussian", "b-spline"):
            raise ValueError(f"kernel_type must be one of ['gaussian', 'b-spline'], got {kernel_type!r}")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be one of ['mean', 'sum', 'none'], got {reduction!r}")
        self.kernel_type = kernel_type
        self.num_bins = _check_bins(num_bins, "num_bins", 5 if kernel_type == "b-spline" else 2)
        self.sigma_ratio = _check_positive(sigma_ratio, "sigma_ratio")
        self.reduction = reduction
        for name, value in (("smooth_nr", smooth_nr), ("smooth_dr", smooth_dr)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        self.smooth_nr, self.smooth_dr = float(smooth_nr), float(smooth_dr)
        if range is None:
            self.range: Optional[Tuple[Range, Range]] = None
        elif isinstance(range, (tuple, list)) and len(range) == 2 and all(isinstance(r, (tuple, list)) for r in range):
            self.range = (_check_range(range[0], "range[0]"), _check_range(range[1], "range[1]"))
        else:
            self.range = (_check_range(range),) * 2
        if not isinstance(normalized, bool):
            raise TypeError(f"normalized must be a bool, got {normalized!r}")
        self.normalized = normalized
        if _check_mode(mode) == "hard":
            raise ValueError("mode must be 'soft' or 'straight_through' for a loss, got 'hard'")
        self.mode = mode

    def _layout(self, lo: float, hi: float) -> Tuple[Range, float]:
        """The histogram range and bandwidth that place the bins as MONAI does on ``[lo, hi]``."""
        if self.kernel_type == "gaussian":
            spacing = (hi - lo) / (self.num_bins - 1)
            return (lo - 0.5 * spacing, hi + 0.5 * spacing), self.sigma_ratio * spacing
        spacing = (hi - lo) / (self.num_bins - 4)
        return (lo - 2.0 * spacing, hi + 2.0 * spacing), spacing / math.sqrt(3.0)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        for name, value in (("pred", pred), ("target", target)):
            if not isinstance(value, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if pred.shape != target.shape:
            raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
        if pred.dim() < 2:
            raise ValueError(f"pred must have shape (B, C, *spatial), got {tuple(pred.shape)}")
        x, y = pred.reshape(pred.shape[0], -1), target.reshape(target.shape[0], -1)
        if self.range is not None:  # voxels outside the range count at its ends, as MONAI clamps
            x, y = x.clamp(*self.range[0]), y.clamp(*self.range[1])
        ranges: Sequence[Range] = self.range if self.range is not None else [self._data_range(x, self.group), self._data_range(y, self.group)]
        layouts = [self._layout(lo, hi) for lo, hi in ranges]
        mi = mutual_information(
            x, y, self.num_bins, range=[r for r, _ in layouts], bandwidth=[h for _, h in layouts],
            kernel="gaussian" if self.kernel_type == "gaussian" else "bspline",
            mode=self.mode, normalized=self.normalized, group=self.group,
        )
        if self.reduction == "mean":
            return -mi.mean()
        if self.reduction == "sum":
            return -mi.sum()
        return -mi

    @staticmethod
    def _data_range(t: Tensor, group: Optional["ProcessGroup"]) -> Range:
        """Finite min and max over the whole batch and group (one host sync), widened when equal."""
        lo, hi = _finite_range(t, group=_check_group(group))
        return (lo, hi) if lo < hi else (lo - 0.5, hi + 0.5)

    def extra_repr(self) -> str:
        return (
            f"kernel_type={self.kernel_type!r}, num_bins={self.num_bins}, sigma_ratio={self.sigma_ratio}, "
            f"reduction={self.reduction!r}, range={self.range}, normalized={self.normalized}, mode={self.mode!r}"
        )

"""Statistics and losses on histograms: entropy, divergences, Wasserstein, mutual information.

Every function normalizes its histogram inputs to probabilities along the bins
itself, so counts, densities, soft or hard histograms are all fine, and every
one is batched over the leading dimensions. The functions that take samples
(:func:`mutual_information`, :func:`histogram_matching_loss`) bin them with
:func:`softhist.histogram` / :func:`softhist.histogram2d` and share their
binning arguments.

Numerics:

* **No epsilon enters any value.** ``0 * log 0`` is exactly 0, so hard-mode
  results equal scipy's and scikit-learn's to rounding.
* **Logs are clamped** at the smallest normal number of the compute dtype,
  ``tiny = torch.finfo(dtype).tiny``. This changes a value only where it is
  infinite: ``KL(p || q)`` with ``q = 0 < p`` is ``+inf`` mathematically and
  here ``p * log(p / tiny)`` (about ``87 p`` in float32, ``708 p`` in float64).
  Its purpose is the gradients: ``d(p log p)/dp`` at an empty cell is ``-inf``
  and becomes ``log(tiny) + 0``, finite, so no NaN reaches a backward pass.
* **Empty histograms** (all zeros along the bins) count as uniform: entropy is
  ``log(bins)``, mutual information 0, and the gradient through the (zero)
  normalizer is 0 rather than NaN.
* **Precision:** float16 and bfloat16 are computed in float32 and the result is
  cast back to the input's dtype; float64 stays float64. Samples in half
  precision are binned in float32, since a half-precision histogram of a large
  image overflows float16 (max 65504).
* Entries must be non-negative; this is not checked, because a check would make
  the host wait for the device.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Literal, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ._checks import check_bins_dim, check_group, check_tensor
from .histogram import AxisKernels, AxisModes, BackendName, Bandwidth, Mode, _all_reduce, histogram, histogram2d
from .histogram import _data_range
from .kernels import KernelName, get_kernel

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = [
    "entropy",
    "histogram_matching_loss",
    "js_divergence",
    "kl_divergence",
    "mutual_information",
    "wasserstein",
]

Metric = Literal["wasserstein", "l1", "kl"]
TargetType = Literal["samples", "histogram"]
METRICS = ("wasserstein", "l1", "kl")
TARGET_TYPES = ("samples", "histogram")
_HALF_DTYPES = (torch.float16, torch.bfloat16)

# --------------------------------------------------------------------------- helpers


def _broadcast(p: Tensor, q: Tensor) -> Tuple[Tensor, Tensor]:
    """``p`` and ``q`` broadcast against each other, as torch (and scipy) broadcast."""
    try:
        shape = torch.broadcast_shapes(p.shape, q.shape)
    except RuntimeError:
        raise ValueError(f"p and q must broadcast against each other, got shapes {tuple(p.shape)} and {tuple(q.shape)}") from None
    return p.expand(shape), q.expand(shape)


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 stays float64; everything else (half, float32, integer counts) runs in float32."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _result_dtype(*tensors: Tensor) -> torch.dtype:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype if dtype.is_floating_point else torch.get_default_dtype()


def _normalize(p: Tensor, dim: Union[int, Tuple[int, ...]], dtype: torch.dtype) -> Tensor:
    """``p / p.sum(dim)`` in ``dtype``; an all-zero histogram becomes uniform.

    The zero normalizer is replaced by 1 *before* dividing, so the branch that
    ``where`` discards is finite and its (zero) gradient stays zero, not NaN.
    NaN sums are not ``== 0`` and propagate.
    """
    p = p.to(dtype)
    dims = (dim,) if isinstance(dim, int) else dim
    total = p.sum(dims, keepdim=True)
    empty = total == 0
    ratio = p / torch.where(empty, torch.ones_like(total), total)
    uniform = 1.0 / math.prod([p.shape[d] for d in dims])
    return torch.where(empty, torch.full_like(ratio, uniform), ratio)


def _log(p: Tensor) -> Tensor:
    """``log(max(p, tiny))``: finite everywhere, exact for every normal ``p``."""
    return torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))


def _xlogx(p: Tensor) -> Tensor:
    """``p log p`` with ``0 log 0 = 0``; its gradient at 0 is ``log(tiny)``, finite."""
    return p * _log(p)


def _xlog_ratio(p: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``p * log(a / b)`` as one log (accurate when ``a ~ b``), clamped as :func:`_log`.

    For probabilities ``a, b <= 1`` the clamped ratio lies in ``[tiny, 1/tiny]``,
    so it neither overflows nor hits ``log 0``.
    """
    tiny = torch.finfo(p.dtype).tiny
    return p * torch.log(a.clamp_min(tiny) / b.clamp_min(tiny))


def _kl_rows(p: Tensor, q: Tensor) -> Tensor:
    """``sum_k p_k log(p_k / q_k)`` over the last axis of probabilities."""
    return _xlog_ratio(p, p, q).sum(-1)


def _probabilities(p: Tensor, dim: int, name: str) -> Tuple[Tensor, torch.dtype]:
    """Validate, move the bins to the last axis and normalize; also return the output dtype."""
    check_tensor(p, name)
    dim = check_bins_dim(p, dim, name)
    return _normalize(p.movedim(dim, -1), -1, _compute_dtype(p)), _result_dtype(p)


# --------------------------------------------------------------------------- divergences


def _paired_probabilities(p: Tensor, q: Tensor, dim: object) -> Tuple[Tensor, Tensor]:
    """Two histograms checked, broadcast and normalized, bins moved last, in the compute dtype."""
    check_tensor(q, "q")
    check_tensor(p, "p")
    p, q = _broadcast(p, q)
    dim = check_bins_dim(p, dim, "p and q")
    dtype = _compute_dtype(p, q)
    return _normalize(p.movedim(dim, -1), -1, dtype), _normalize(q.movedim(dim, -1), -1, dtype)


def entropy(p: Tensor, dim: int = -1) -> Tensor:
    """Shannon entropy of a histogram, in nats.

    Equals :func:`scipy.stats.entropy` (``pk`` only, natural log): ``-sum p log p``
    after ``p`` is normalized along ``dim``.

    Args:
        p: histogram, shape ``(*, B, *)`` with the ``B`` bins along ``dim``;
            non-negative counts or probabilities (normalized here).
        dim: the bins axis.

    Returns:
        Tensor of ``p``'s shape without ``dim``, in ``p``'s floating dtype. An
        all-zero histogram counts as uniform (entropy ``log B``).

    Example:
        >>> import torch, softhist
        >>> softhist.entropy(torch.tensor([1.0, 1.0, 2.0]))
        tensor(1.0397)
        >>> softhist.entropy(torch.tensor([[0.0, 5.0], [3.0, 3.0]]))  # batched: log 1, log 2
        tensor([0.0000, 0.6931])
    """
    probs, out_dtype = _probabilities(p, dim, "p")
    return (0.0 - _xlogx(probs).sum(-1)).to(out_dtype)  # 0 - x, not -x: no -0.0 for a single full bin


def kl_divergence(p: Tensor, q: Tensor, dim: int = -1) -> Tensor:
    """Kullback-Leibler divergence ``KL(p || q) = sum p log(p / q)``, in nats.

    Equals :func:`scipy.stats.entropy` ``(pk=p, qk=q)`` with the natural log,
    wherever ``q > 0`` on ``p``'s support. Where ``q = 0 < p`` scipy returns
    ``inf``; here the log is clamped at ``tiny`` (see the module's Numerics), so
    the value is large and finite and gradients stay finite.

    Args:
        p: histogram, shape ``(*, B, *)`` with the bins along ``dim``.
        q: reference histogram; ``p`` and ``q`` broadcast against each other
            as torch tensors do (and as scipy's arguments do).
        dim: the bins axis, of the broadcast shape.

    Returns:
        Tensor of the broadcast shape without ``dim``.

    Raises:
        ValueError: ``p`` and ``q`` do not broadcast.

    Example:
        >>> import torch, softhist
        >>> p, q = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0])
        >>> softhist.kl_divergence(p, q)
        tensor(0.1308)
        >>> softhist.kl_divergence(p, p)
        tensor(0.)
        >>> softhist.kl_divergence(torch.tensor([[1.0, 3.0], [2.0, 2.0]]), q)  # (2, 2) against (2,)
        tensor([0.1308, 0.0000])
    """
    pp, qq = _paired_probabilities(p, q, dim)
    return _kl_rows(pp, qq).to(_result_dtype(p, q))


def js_divergence(p: Tensor, q: Tensor, dim: int = -1) -> Tensor:
    """Jensen-Shannon divergence ``(KL(p || m) + KL(q || m)) / 2``, ``m = (p + q) / 2``, in nats.

    Equals the square of :func:`scipy.spatial.distance.jensenshannon` (natural
    log). Always finite, at most ``log 2``.

    Args:
        p, q: histograms ``(*, B, *)``, bins along ``dim``, that broadcast
            against each other as torch tensors do.
        dim: the bins axis, of the broadcast shape.

    Returns:
        Tensor of the broadcast shape without ``dim``.

    Raises:
        ValueError: ``p`` and ``q`` do not broadcast.

    Example:
        >>> import torch, softhist
        >>> softhist.js_divergence(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))  # log 2
        tensor(0.6931)
        >>> softhist.js_divergence(torch.eye(2), torch.tensor([0.0, 1.0]))  # (2, 2) against (2,)
        tensor([0.6931, 0.0000])
    """
    pp, qq = _paired_probabilities(p, q, dim)
    m = 0.5 * (pp + qq)
    return (0.5 * (_kl_rows(pp, m) + _kl_rows(qq, m))).to(_result_dtype(p, q))


def wasserstein(p: Tensor, q: Tensor, bin_edges: Tensor, dim: int = -1) -> Tensor:
    """1-D earth mover's distance between two histograms on the same edges.

    Each bin's mass sits at its center ``c_k``; the distance is
    ``sum_k |P_k - Q_k| (c_{k+1} - c_k)`` over the cumulative sums ``P``, ``Q``
    of the normalized histograms. Equals
    ``scipy.stats.wasserstein_distance(centers, centers, p, q)``.

    Args:
        p, q: histograms ``(*, B, *)``, bins along ``dim``, that broadcast
            against each other as torch tensors do.
        bin_edges: ``(B + 1,)`` strictly increasing edges, shared by ``p`` and
            ``q``; may require grad. Monotonicity is not checked (that would
            make the host wait for the device).
        dim: the bins axis, of the broadcast shape.

    Returns:
        Tensor of the broadcast shape without ``dim``, in data units.

    Raises:
        ValueError: ``p`` and ``q`` do not broadcast, or ``bin_edges`` does
            not have one more entry than there are bins.

    Example:
        >>> import torch, softhist
        >>> edges = torch.tensor([0.0, 1.0, 2.0, 4.0])  # centers 0.5, 1.5, 3
        >>> softhist.wasserstein(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 2.0]), edges)
        tensor(2.5000)
    """
    check_tensor(q, "q")
    check_tensor(p, "p")
    check_tensor(bin_edges, "bin_edges")
    p, q = _broadcast(p, q)
    dim = check_bins_dim(p, dim, "p and q")
    bins = p.shape[dim]
    if bin_edges.dim() != 1 or bin_edges.numel() != bins + 1:
        raise ValueError(
            f"bin_edges must be 1-D with {bins + 1} entries (p has {bins} bins along dim {dim}), "
            f"got shape {tuple(bin_edges.shape)}"
        )
    if not bin_edges.is_floating_point():
        raise TypeError(f"bin_edges must be floating point, got dtype {bin_edges.dtype}")
    dtype = _compute_dtype(p, q, bin_edges)
    pp, qq = (_normalize(t.movedim(dim, -1), -1, dtype) for t in (p, q))
    edges = bin_edges.to(dtype)
    gaps = torch.diff(0.5 * (edges[1:] + edges[:-1]))  # (B - 1,) distances between centers
    # The last cumulative difference is 0 (both sum to 1); leaving it out keeps |.| away from its kink.
    cdf_gap = torch.cumsum(pp - qq, -1)[..., :-1]
    return (cdf_gap.abs() * gaps).sum(-1).to(_result_dtype(p, q, bin_edges))


# --------------------------------------------------------------------------- from samples

AxisRange = Optional[Tuple[float, float]]
MIRange = Union[None, Tuple[float, float], Sequence[AxisRange]]


def _float_samples(t: Tensor) -> Tensor:
    """Half-precision samples are binned in float32: their histograms overflow float16."""
    return t.float() if t.dtype in _HALF_DTYPES else t


def _samples_range(*samples: Tensor, group: Optional["ProcessGroup"] = None) -> Tuple[float, float]:
    """Min and max of the finite values of all ``samples`` together (one host sync), detached:
    the data's range is a constant for autograd. Over every rank's samples with a group.
    ``(0, 1)`` when there are none."""
    flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in samples])
    data = _data_range(flat, group)
    return (0.0, 1.0) if data is None else (float(data[0]), float(data[1]))


def _mi_range(range_: MIRange) -> Optional[Sequence[AxisRange]]:
    """``(lo, hi)`` for both axes becomes histogram2d's per-axis form; the rest passes through."""
    if range_ is None:
        return None
    if isinstance(range_, (tuple, list)) and len(range_) == 2 and all(isinstance(v, numbers.Real) for v in range_):
        return [tuple(range_), tuple(range_)]
    if isinstance(range_, (tuple, list)) and len(range_) == 2:
        return list(range_)
    raise ValueError(f"range must be (min, max), [(xmin, xmax), (ymin, ymax)] or None, got {range_!r}")


def _mutual_information_from_joint(hist: Tensor, normalized: bool) -> Tensor:
    """MI (or NMI) of joint histograms ``(*batch, Bx, By)`` in the compute dtype."""
    dtype = _compute_dtype(hist)
    pxy = _normalize(hist, (-2, -1), dtype)
    px, py = pxy.sum(-1), pxy.sum(-2)
    # sum p_xy log(p_xy / (p_x p_y)) as one log per cell: no cancellation when MI ~ 0.
    mi = _xlog_ratio(pxy, pxy, px.unsqueeze(-1) * py.unsqueeze(-2)).sum((-2, -1))
    if not normalized:
        return mi
    denom = -(_xlogx(px).sum(-1) + _xlogx(py).sum(-1))
    ok = denom > 0
    # Both marginals in one bin: a perfect match, 1 as in scikit-learn (and the branch stays finite).
    return torch.where(ok, 2.0 * mi / torch.where(ok, denom, torch.ones_like(denom)), torch.ones_like(denom))


def mutual_information(
    x: Tensor,
    y: Tensor,
    bins: Union[int, Tensor, Sequence[Union[int, Tensor]]] = 32,
    *,
    range: MIRange = None,
    weight: Optional[Tensor] = None,
    kernel: AxisKernels = "gaussian",
    bandwidth: Union[Bandwidth, Sequence[Union[float, Tensor]]] = None,
    mode: AxisModes = "soft",
    normalized: bool = False,
    backend: BackendName = "auto",
    group: Optional["ProcessGroup"] = None,
) -> Tensor:
    """Mutual information of paired samples, from their joint histogram, in nats.

    ``MI = sum p_xy log(p_xy / (p_x p_y))`` over the cells of
    :func:`softhist.histogram2d`, with ``p_x``, ``p_y`` its marginals. In hard
    mode it equals :func:`sklearn.metrics.mutual_info_score` on the bin indices
    (and ``normalized=True`` equals :func:`sklearn.metrics.normalized_mutual_info_score`
    with its default arithmetic mean).

    Args:
        x, y: paired samples, shape ``(*batch, N)`` each.
        bins: as in :func:`softhist.histogram2d`: an int, a pair, an edges
            tensor or a pair of them.
        range: ``(lo, hi)`` for both axes, ``[(xlo, xhi), (ylo, yhi)]`` (an
            entry may be ``None``), or ``None``: each axis's finite data range
            over the whole batch (one host sync; a constant for autograd, so
            pass it explicitly for ``gradcheck``). Equal ends widen by 0.5.
        weight: per-pair weights, shape ``(*batch, N)``, differentiable.
        kernel, bandwidth, mode, backend: as in :func:`softhist.histogram2d`: one
            value, or a pair for ``x`` and ``y`` (e.g. ``mode=["soft", "hard"]``
            bins ``y`` hard and differentiates through ``x`` alone).
        group: a ``torch.distributed`` process group: the MI of every rank's
            pairs, from the all-reduced joint histogram (ranges from ``None``
            are agreed over all ranks). Gradients follow :func:`softhist.histc`'s.
        normalized: return ``2 MI / (H(X) + H(Y))`` in ``[0, 1]``; 1 when both
            marginals sit in a single bin, as scikit-learn.

    Returns:
        Tensor of shape ``(*batch,)`` in the samples' dtype.

    Note:
        Samples outside the range are not counted, and soft mass that spills
        past the outer edges is lost, as in the histograms; the joint histogram
        is renormalized. With no mass in range the joint counts as uniform and
        MI is 0. Gradients stay finite on empty cells and constant input.

    Example:
        >>> import torch, softhist
        >>> x = torch.tensor([0.1, 0.2, 0.7, 0.9])
        >>> softhist.mutual_information(x, 1 - x, bins=2, range=(0, 1), mode="hard")  # log 2
        tensor(0.6931)
        >>> x = torch.rand(3, 500, requires_grad=True)
        >>> mi = softhist.mutual_information(x, x.detach() ** 2, bins=16, range=(0, 1), normalized=True)
        >>> mi.shape
        torch.Size([3])
        >>> mi.sum().backward()
    """
    check_tensor(x, "x")
    check_tensor(y, "y")
    if not isinstance(normalized, bool):
        raise TypeError(f"normalized must be a bool, got {normalized!r}")
    out_dtype = _result_dtype(x, y)
    hist, _, _ = histogram2d(
        _float_samples(x), _float_samples(y), bins, range=_mi_range(range),
        weight=None if weight is None else _float_samples(weight),
        kernel=kernel, bandwidth=bandwidth, mode=mode, backend=backend, group=group,
    )
    return _mutual_information_from_joint(hist, normalized).to(out_dtype)


def _outside(
    samples: Tensor, edges: Tensor, kernel: str, bandwidth: Bandwidth, mode: str, group: Optional["ProcessGroup"]
) -> Tensor:
    """What a histogram of ``samples (*batch, N)`` on ``edges`` leaves out, per row ``(*batch, 5)``:
    the mass below the first edge and above the last (soft: the kernel's mass past them, the
    complement of the histogram's), the summed distances of the samples below and above to the
    range, and the number of finite samples. Summed over the group's ranks."""
    lo, hi = edges[0], edges[-1]
    finite = torch.isfinite(samples)
    x = torch.where(finite, samples, 0.5 * (lo + hi)).to(edges.dtype if samples.dtype == torch.float64 else torch.float32)
    if mode == "soft":
        h = 0.5 * (hi - lo).detach() / (edges.numel() - 1) if bandwidth is None else bandwidth
        cdf = get_kernel(kernel).cdf
        below, above = cdf((lo - x) / h), 1.0 - cdf((hi - x) / h)
    else:
        below, above = (x < lo).to(x.dtype), (x > hi).to(x.dtype)
    parts = [below, above, torch.relu(lo - x), torch.relu(x - hi), torch.ones_like(x)]
    stats = torch.stack([torch.where(finite, part, 0.0).sum(-1) for part in parts], -1)
    return _all_reduce(stats, group)


def _fold(hist: Tensor, outside: Tensor) -> Tensor:
    """The mass below the range added to the first bin, the mass above to the last."""
    bins = hist.shape[-1]
    first = torch.zeros(bins, dtype=hist.dtype, device=hist.device).index_fill_(0, torch.tensor([0], device=hist.device), 1.0)
    last = first.flip(0)
    return hist + outside[..., :1].to(hist.dtype) * first + outside[..., 1:2].to(hist.dtype) * last


def histogram_matching_loss(
    x: Tensor,
    target: Tensor,
    bins: Union[int, Tensor] = 64,
    *,
    range: Optional[Tuple[float, float]] = None,
    kernel: KernelName = "gaussian",
    bandwidth: Bandwidth = None,
    mode: Mode = "soft",
    metric: Metric = "wasserstein",
    target_type: TargetType = "samples",
    backend: BackendName = "auto",
    group: Optional["ProcessGroup"] = None,
) -> Tensor:
    """A loss that pulls the distribution of ``x`` toward that of ``target``.

    Bins ``x`` (and ``target``, when it holds samples) on the same edges with
    :func:`softhist.histogram`, then compares the normalized histograms with
    ``metric``:

    * ``"wasserstein"``: :func:`wasserstein`, the earth mover's distance in
      data units. Its gradient moves samples even when the two histograms do
      not overlap, so it is the robust default.
    * ``"l1"``: ``sum |p_x - p_target|``, twice the total variation, in ``[0, 2]``.
    * ``"kl"``: :func:`kl_divergence` ``(target || x)``, which is very large
      where ``target`` has mass and ``x`` has none (see the module's Numerics).

    Mass outside the range counts against the loss: samples of ``x`` (and of a
    target given as samples) below the first edge or above the last, and the
    soft mass that spills past them, are added to the first and last bins.
    With ``"wasserstein"`` the loss also adds the distance that outlying mass
    travels to the range, ``|mean(relu(e_0 - x)) - mean(relu(e_0 - target))|``
    and the same above the range, so its gradient pulls far-away samples in;
    for a target inside the range this is the earth mover's distance (to half
    a bin). With ``"l1"`` and ``"kl"`` such samples count in the end bins but
    get a gradient only where the kernel reaches the range.

    Args:
        x: samples, shape ``(*batch, N)``.
        target: samples ``(*batch_t, M)`` (``target_type="samples"``), or a
            histogram ``(*batch_t, B)`` on the same bins (``"histogram"``:
            counts or probabilities). ``batch_t`` broadcasts against ``batch``.
        bins: number of equal-width bins, or a 1-D edges tensor (may require grad).
        range: ``(min, max)`` for integer ``bins``. ``None``: the finite range
            of ``x`` and ``target`` together (one host sync; a constant for
            autograd). Required for a target histogram with integer ``bins``.
        kernel, bandwidth, mode, backend: as in :func:`softhist.histogram`.
        metric: ``"wasserstein"``, ``"l1"`` or ``"kl"``.
        target_type: ``"samples"`` or ``"histogram"``.
        group: a ``torch.distributed`` process group: compare the histograms of
            every rank's ``x`` (and target samples; replicated targets give the
            same normalized histogram), with the range agreed over all ranks.

    Returns:
        Tensor of shape ``broadcast(batch, batch_t)``, one loss per histogram;
        reduce it (e.g. ``.mean()``) before ``backward``.

    Example:
        >>> import torch, softhist
        >>> x = torch.randn(2000, requires_grad=True)
        >>> target = 0.5 * torch.randn(3000) + 2.0
        >>> loss = softhist.histogram_matching_loss(x, target, bins=64, range=(-4, 4))
        >>> loss.backward()
        >>> bool(x.grad[x.detach() < 1].mean() < 0)  # descending moves those samples right
        True
    """
    check_tensor(x, "x")
    check_tensor(target, "target")
    group = check_group(group)
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    if target_type not in TARGET_TYPES:
        raise ValueError(f"target_type must be one of {list(TARGET_TYPES)}, got {target_type!r}")
    if x.dim() == 0 or target.dim() == 0:
        raise ValueError(f"x and target must have a samples (or bins) axis last, got shapes {tuple(x.shape)} and {tuple(target.shape)}")
    out_dtype = _result_dtype(x, target)
    if target_type == "samples" and range is None and not isinstance(bins, Tensor):
        range = _samples_range(x, target, group=group)
    elif target_type == "histogram" and range is None and not isinstance(bins, Tensor):
        raise ValueError("range must be given when target_type='histogram' and bins is an int, got range=None")
    binning = dict(range=range, kernel=kernel, bandwidth=bandwidth, mode=mode, dim=-1, backend=backend)
    hist_x, edges = histogram(_float_samples(x), bins, group=group, **binning)
    out_x = _outside(_float_samples(x), edges, kernel, bandwidth, mode, group)
    hist_x = _fold(hist_x, out_x)
    if target_type == "samples":
        hist_t, _ = histogram(_float_samples(target), bins, group=group, **binning)
        out_t = _outside(_float_samples(target), edges, kernel, bandwidth, mode, group)
        hist_t = _fold(hist_t, out_t)
    else:
        if target.shape[-1] != hist_x.shape[-1]:
            raise ValueError(
                f"target as a histogram must have {hist_x.shape[-1]} bins on its last axis, got shape {tuple(target.shape)}"
            )
        hist_t = target
        out_t = torch.zeros_like(out_x)
    try:
        hist_x, hist_t = torch.broadcast_tensors(hist_x, hist_t)
    except RuntimeError:
        raise ValueError(
            f"the batch shapes of x {tuple(x.shape[:-1])} and target {tuple(target.shape[:-1])} do not broadcast"
        ) from None
    if metric == "wasserstein":
        # The distance outlying mass travels to the range, as a mean over each side's samples.
        mean_x = out_x[..., 2:4] / out_x[..., 4:].clamp_min(1.0)
        mean_t = out_t[..., 2:4] / out_t[..., 4:].clamp_min(1.0)
        travel = (mean_x - mean_t).abs().sum(-1)
        loss = wasserstein(hist_x, hist_t, edges) + travel.to(_compute_dtype(hist_x, hist_t))
    elif metric == "kl":
        loss = kl_divergence(hist_t, hist_x)
    else:
        dtype = _compute_dtype(hist_x, hist_t)
        loss = (_normalize(hist_x, -1, dtype) - _normalize(hist_t, -1, dtype)).abs().sum(-1)
    return loss.to(out_dtype)


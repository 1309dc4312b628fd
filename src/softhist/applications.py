"""What people build on differentiable histograms, each equal to the reference its users run.

* :func:`histogram_loss`: the Histogram Loss of Ustinova & Lempitsky (NeurIPS 2016), equal to
  ``pytorch_metric_learning.losses.HistogramLoss``; module face :class:`softhist.nn.HistogramLoss`.
* :func:`calibration_error`: expected / root-mean-square / maximum calibration error, equal to
  torchmetrics' ``binary_calibration_error`` and ``multiclass_calibration_error`` in hard mode,
  differentiable in soft mode (soft-binned ECE, Karandikar et al., NeurIPS 2021).
* :func:`hl_gauss_probs`: the HL-Gauss target distribution of Farebrother et al. (ICML 2024,
  "Stop Regressing"); module face :class:`softhist.nn.HLGaussLoss`.
* :func:`hellinger`: the Hellinger distance between histograms (HistoGAN's colour loss), with
  finite gradients at empty bins.
* :func:`rgb_uv_histogram`: HistoGAN's RGB-uv log-chroma histograms of images, equal to its
  ``RGBuvHistBlock`` in ``O(pixels + bins^2)`` memory.

None of them builds a samples x bins tensor, except HL-Gauss, whose output is one (and
:func:`rgb_uv_histogram`, one chunk of pixels at a time).
"""

from __future__ import annotations

import builtins
import math
from typing import Literal, Tuple

import torch
import torch.nn.functional as nnf
from torch import Tensor

from ._checks import check_bool, check_images_rgb, check_int_at_least, check_mode, check_range_pair, check_real, check_tensor, refuse_torchscript
from .histogram import Bandwidth, Mode, histc, histogram
from .kernels import KERNELS
from .losses import _paired_probabilities, _result_dtype

__all__ = ["calibration_error", "hellinger", "histogram_loss", "hl_gauss_probs", "rgb_uv_histogram"]

Norm = Literal["l1", "l2", "max"]
Task = Literal["binary", "multiclass"]
NORMS = ("l1", "l2", "max")
TASKS = ("binary", "multiclass")
_HALF_DTYPES = (torch.float16, torch.bfloat16)


def _sqrt0(t: Tensor) -> Tensor:
    """``sqrt(t)`` for ``t >= 0`` whose gradient at ``t = 0`` is 0 instead of ``inf``.

    The inner ``where`` keeps the discarded branch finite, so no ``inf * 0 = NaN`` reaches
    the backward pass. For the Hellinger distance 0 is the subgradient of the outer norm at
    its minimum; for an empty bin it is the one a clamp at 0 gives (see :func:`hellinger`).
    """
    positive = t > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, t, torch.ones_like(t))), torch.zeros_like(t))


# --------------------------------------------------------------------------- histogram loss


def histogram_loss(embeddings: Tensor, labels: Tensor, n_bins: int = 100) -> Tensor:
    """Histogram Loss of Ustinova & Lempitsky (NeurIPS 2016) on cosine similarities.

    Parity: ``pytorch_metric_learning.losses.HistogramLoss(n_bins=n_bins)(embeddings, labels)``
    (to float32 rounding, gradients included), without its ``N^3`` triplet tensor.

    The cosine similarities ``s`` of the pairs ``i < j`` are linearly binned onto the
    ``n_bins + 1`` nodes ``t_r = -1 + r * delta``, ``delta = 2 / n_bins``, with weights
    ``max(0, 1 - |s - t_r| / delta)``: that is softhist's box kernel one node spacing wide
    (``bandwidth = delta / sqrt(12)``) on bins ``[t_r - delta/2, t_r + delta/2)``. Positive
    pairs (same label) give ``p_pos``, negative pairs ``p_neg``, each normalized by its count,
    and the loss is ``sum(p_neg * cumsum(p_pos))``: the probability that a negative pair is
    more similar than a positive one.

    Args:
        embeddings: ``(N, D)``, floating point.
        labels: ``(N,)`` class labels (any integer dtype).
        n_bins: number of node spacings on ``[-1, 1]``, ``>= 1``.

    Returns:
        0-d tensor. As in pytorch-metric-learning, a negative pair is used when at least one
        of its samples has a positive partner, and the loss is 0 (with a zero gradient) when
        there is no (anchor, positive, negative) triplet.

    Note:
        Work and memory are ``O(N^2 / 2)`` (one similarity per pair, binned in one engine call),
        where pytorch-metric-learning enumerates every triplet. A similarity of exactly 1 (two
        parallel embeddings) makes pytorch-metric-learning index past its last node; here it
        lands on the last node. Miners (``indices_tuple``) are not supported.

    Example:
        >>> import torch, softhist
        >>> emb = torch.randn(12, 5, requires_grad=True)
        >>> loss = softhist.applications.histogram_loss(emb, torch.arange(12) % 3, n_bins=20)
        >>> loss.backward()
        >>> bool(0 <= loss <= 1), emb.grad.shape
        (True, torch.Size([12, 5]))
    """
    check_tensor(embeddings, "embeddings")
    check_tensor(labels, "labels")
    n_bins = check_int_at_least(n_bins, "n_bins")
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {tuple(embeddings.shape)}")
    if labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"labels must be (N,) with N = {embeddings.shape[0]} (embeddings' rows), got shape {tuple(labels.shape)}"
        )
    if not embeddings.is_floating_point():
        raise TypeError(f"embeddings must be floating point, got dtype {embeddings.dtype}")
    n = embeddings.shape[0]
    unit = nnf.normalize(embeddings, p=2, dim=1)
    i, j = torch.triu_indices(n, n, 1, device=embeddings.device)
    sims = (unit @ unit.T)[i, j]  # (pairs,)
    _, label_ids, class_sizes = torch.unique(labels, return_inverse=True, return_counts=True)
    has_positive = class_sizes[label_ids] >= 2
    same = labels[i] == labels[j]
    positive = same.to(sims.dtype)
    negative = (~same & (has_positive[i] | has_positive[j])).to(sims.dtype)
    weight = torch.stack([positive, negative])  # (2, pairs)
    delta = 2.0 / n_bins
    hist = histc(
        sims.expand(2, -1), n_bins + 1, -1.0 - delta / 2, 1.0 + delta / 2,
        kernel="box", bandwidth=delta / math.sqrt(12.0), weight=weight, dim=1,
    )  # (2, n_bins + 1)
    counts = weight.sum(1, keepdim=True)
    p_pos, p_neg = hist / counts.clamp_min(1.0)
    loss = (p_neg * torch.cumsum(p_pos, 0)).sum()
    has_triplet = (counts > 0).all()
    return torch.where(has_triplet, loss, torch.zeros_like(loss))


# --------------------------------------------------------------------------- calibration error


def _confidences(preds: Tensor, target: Tensor, task: str) -> Tuple[Tensor, Tensor]:
    """torchmetrics' ``(confidences, accuracies)``, flattened to ``(N,)`` each."""
    check_tensor(preds, "preds")
    check_tensor(target, "target")
    if not preds.is_floating_point():
        raise TypeError(f"preds must be floating point probabilities, got dtype {preds.dtype}")
    if preds.dtype in _HALF_DTYPES:
        preds = preds.float()
    if task == "binary":
        if preds.shape != target.shape:
            raise ValueError(
                f"task='binary': preds and target must have the same shape, got {tuple(preds.shape)} and {tuple(target.shape)}"
            )
        return preds.reshape(-1), target.reshape(-1).to(preds.dtype)
    if preds.dim() < 2 or preds.dim() != target.dim() + 1 or preds.shape[:1] + preds.shape[2:] != target.shape:
        raise ValueError(
            f"task='multiclass': preds must be (N, C, *) and target (N, *), got {tuple(preds.shape)} and {tuple(target.shape)}"
        )
    if target.is_floating_point():
        raise TypeError(f"task='multiclass': target must hold integer class labels, got dtype {target.dtype}")
    probs = preds.movedim(1, -1).reshape(-1, preds.shape[1])
    confidences, predictions = probs.max(dim=1)
    return confidences, (predictions == target.reshape(-1)).to(probs.dtype)


def _calibration_from_bins(count: Tensor, acc_sum: Tensor, conf_sum: Tensor, norm: str) -> Tensor:
    """``norm`` of ``acc_bin - conf_bin`` weighted by the bins' shares; empty bins count 0.

    With ``A``, ``C``, ``n`` a bin's accuracy sum, confidence sum and count:
    ``prop * |acc - conf| = |A - C| / N``, so the L1 norm needs no division by ``n``.
    """
    total = count.sum()
    occupied = count > 0
    safe_count = torch.where(occupied, count, torch.ones_like(count))
    gap = acc_sum - conf_sum
    if norm == "l1":
        return gap.abs().sum() / total.clamp_min(torch.finfo(count.dtype).tiny)
    per_bin = torch.where(occupied, gap / safe_count, torch.zeros_like(gap))  # acc_bin - conf_bin
    if norm == "max":
        return per_bin.abs().max()
    return _sqrt0((per_bin * gap).sum() / total.clamp_min(torch.finfo(count.dtype).tiny))  # sum prop * gap^2


def _calibration_hard(conf: Tensor, acc: Tensor, n_bins: int, norm: str) -> Tensor:
    # torchmetrics: bucketize(conf, linspace(0, 1, n_bins + 1), right=True) - 1, so bins are
    # [b_k, b_{k+1}) and a confidence of exactly 1 gets a bin of its own, the (n_bins + 1)-th.
    # The same edges plus one past 1 give the same bins under numpy's rule.
    edges = torch.linspace(0, 1, n_bins + 1, dtype=conf.dtype, device=conf.device)
    edges = torch.cat([edges, edges.new_full((1,), 2.0)])
    weight = torch.stack([torch.ones_like(conf), acc, conf])
    hist, _ = histogram(conf.expand(3, -1), edges, weight=weight, mode="hard", dim=1)  # (3, n_bins + 1)
    return _calibration_from_bins(hist[0], hist[1], hist[2], norm)


def _calibration_soft(conf: Tensor, acc: Tensor, n_bins: int, norm: str, bandwidth: Bandwidth) -> Tensor:
    # Soft-binned ECE: each confidence spreads over the n_bins bins of [0, 1] and is normalized
    # to total membership 1, so mass that the kernel puts past 0 or 1 stays in the end bins.
    if bandwidth is None:
        bandwidth = 0.5 / n_bins
    weight = torch.stack([torch.ones_like(conf), acc, conf])
    hist = histc(conf.expand(3, -1), n_bins, 0.0, 1.0, bandwidth=bandwidth, weight=weight, dim=1, normalize_samples=True)
    return _calibration_from_bins(hist[0], hist[1], hist[2], norm)


def calibration_error(
    preds: Tensor,
    target: Tensor,
    n_bins: int = 15,
    norm: Norm = "l1",
    *,
    task: Task = "binary",
    mode: Mode = "hard",
    bandwidth: Bandwidth = None,
) -> Tensor:
    """Calibration error of predicted probabilities: ECE (``"l1"``), RMSCE (``"l2"``), MCE (``"max"``).

    Parity: ``mode="hard"`` equals torchmetrics'
    ``binary_calibration_error(preds, target, n_bins, norm)`` and
    ``multiclass_calibration_error(preds, target, C, n_bins, norm)`` (to ``1e-6``, ties on bin
    boundaries included). ``mode="soft"`` is the soft-binned calibration error of Karandikar
    et al. (NeurIPS 2021), differentiable; ``mode="straight_through"`` returns the hard value
    with the soft value's gradient.

    With ``conf`` the confidence (binary: ``preds``; multiclass: the top probability) and
    ``acc`` whether it was right (binary: ``target``; multiclass: ``argmax == target``), each
    bin ``b`` holds ``n_b`` samples with mean accuracy ``acc_b`` and mean confidence ``conf_b``:
    ``l1 = sum_b (n_b/N) |acc_b - conf_b|``, ``l2 = sqrt(sum_b (n_b/N) (acc_b - conf_b)^2)``,
    ``max = max_b |acc_b - conf_b|``. Empty bins count 0.

    Args:
        preds: probabilities. ``task="binary"``: ``(N, *)``, the positive class's probability;
            ``task="multiclass"``: ``(N, C, *)``, the class probabilities along dim 1.
        target: ``task="binary"``: ``(N, *)`` in ``{0, 1}``; ``"multiclass"``: ``(N, *)`` class indices.
        n_bins: equal-width bins on ``[0, 1]``, ``>= 1``.
        norm: ``"l1"``, ``"l2"`` or ``"max"``.
        task: ``"binary"`` or ``"multiclass"``.
        mode: ``"hard"`` (torchmetrics' bins: ``[b_k, b_{k+1})``, and a confidence of exactly
            1 in a bin of its own), ``"soft"`` (each confidence spread over the bins by a
            Gaussian of std ``bandwidth`` and normalized to total membership 1) or
            ``"straight_through"``.
        bandwidth: the soft bins' kernel std; ``None``: half a bin width, ``0.5 / n_bins``.

    Returns:
        0-d tensor in ``preds``' dtype (float32 for half-precision ``preds``).

    Note:
        ``preds`` must be probabilities: torchmetrics applies a sigmoid (softmax) when any value
        lies outside ``[0, 1]``, which costs a host sync; apply it yourself. In hard mode,
        confidences outside ``[0, 1]`` are not counted, and the gradient reaches ``preds``
        only through the bins' confidence sums (bin membership is piecewise constant).
        torchmetrics casts multiclass confidences to float32; here float64 stays float64. The bins'
        sums are float64 here and float32 in torchmetrics, whose value drifts from the exact one
        by about ``2e-6`` at a million samples (this one stays within ``1e-8``).

    Example:
        >>> import torch, softhist
        >>> preds = torch.tensor([0.25, 0.25, 0.55, 0.75, 0.75])
        >>> target = torch.tensor([0, 0, 1, 1, 1])
        >>> softhist.calibration_error(preds, target, n_bins=2)   # torchmetrics: tensor(0.2900)
        tensor(0.2900)
        >>> probs = torch.tensor([[0.6, 0.4], [0.2, 0.8], [0.9, 0.1]], requires_grad=True)
        >>> ece = softhist.calibration_error(probs, torch.tensor([0, 0, 0]), task="multiclass", mode="soft")
        >>> ece.backward()
        >>> probs.grad.shape
        torch.Size([3, 2])
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {list(NORMS)}, got {norm!r}")
    mode = check_mode(mode)
    n_bins = check_int_at_least(n_bins, "n_bins")
    if bandwidth is not None and not isinstance(bandwidth, Tensor):
        bandwidth = check_real(bandwidth, "bandwidth", positive=True)
    out_dtype = preds.dtype if isinstance(preds, Tensor) else None
    conf, acc = _confidences(preds, target, task)
    if mode == "hard":
        value = _calibration_hard(conf, acc, n_bins, norm)
    else:
        soft = _calibration_soft(conf, acc, n_bins, norm, bandwidth)
        if mode == "soft":
            value = soft
        else:
            # Exactly the hard value forward (soft - soft.detach() is 0), the soft gradient back.
            value = _calibration_hard(conf.detach(), acc, n_bins, norm).to(soft.dtype) + (soft - soft.detach())
    return value.to(out_dtype if out_dtype not in _HALF_DTYPES else torch.float32)


# --------------------------------------------------------------------------- HL-Gauss


def hl_gauss_probs(target: Tensor, min_value: float, max_value: float, num_bins: int, sigma: float) -> Tensor:
    """The HL-Gauss target distribution: a Gaussian around each target, integrated over the bins.

    Parity: ``HLGaussLoss.transform_to_probs`` of Farebrother et al. (ICML 2024, "Stop
    Regressing", listing 1), to ``2e-6`` in float32 for targets inside
    ``[min_value, max_value]``: ``erf`` differences at ``linspace(min_value, max_value,
    num_bins + 1)``, divided by their sum. softhist's Gaussian is cut at 5.3 std, below float32
    resolution; the cut moves no probability by more than ``2e-7``.

    Each target touches only the edges within 5.3 ``sigma`` of it, so the CDF is evaluated
    ``O(sigma / bin width)`` times per target, not ``num_bins + 1`` times.

    Args:
        target: ``(*)`` regression targets.
        min_value, max_value: the support, ``min_value < max_value``.
        num_bins: ``>= 1``.
        sigma: the Gaussian's std in target units, ``> 0`` (the paper suggests 0.75 bin widths).

    Returns:
        ``(*, num_bins)`` probabilities in ``target``'s dtype (float32 for half precision and
        integers), each row summing to 1. A target whose Gaussian has no mass in the support
        (more than 5.3 ``sigma`` outside it) puts all its mass on the nearest end bin; the
        listing divides by a vanishing normalizer there and returns NaN in float32. For a target
        outside the support the cut's share grows as the normalizer ``z`` (the support's share of
        the Gaussian) shrinks: probabilities move by at most ``6e-8 / z``.

    Example:
        >>> import torch
        >>> from softhist.applications import hl_gauss_probs
        >>> p = hl_gauss_probs(torch.tensor([0.5, 99.0]), 0.0, 1.0, num_bins=4, sigma=0.2)
        >>> p.sum(-1), p[1]
        (tensor([1., 1.]), tensor([0., 0., 0., 1.]))
    """
    check_tensor(target, "target")
    lo, hi = check_real(min_value, "min_value"), check_real(max_value, "max_value")
    if not lo < hi:
        raise ValueError(f"min_value must be below max_value, got min_value={min_value!r}, max_value={max_value!r}")
    num_bins = check_int_at_least(num_bins, "num_bins")
    sigma = check_real(sigma, "sigma", positive=True)
    if not target.is_floating_point() or target.dtype in _HALF_DTYPES:
        target = target.to(torch.float32)
    kernel = KERNELS["gaussian"]
    reach = kernel.support * sigma  # beyond it the CDF is exactly 0 or 1
    width = (hi - lo) / num_bins
    window = min(num_bins + 1, math.ceil(2.0 * reach / width) + 2)  # edges a target can tell apart
    t = target.reshape(-1, 1)
    # First edge of each target's window, kept inside the edges (the window then still holds every
    # edge within reach of the target); from a clamped target so that inf and huge values index safely.
    start = torch.floor((t.clamp(lo - reach - width, hi + reach + width) - lo - reach) / width)
    start = start.clamp_(0, num_bins + 1 - window).long()
    index = start + torch.arange(window, device=t.device)  # (M, window)
    # softhist's Gaussian CDF is 1/2 + erf(clamp(z, -T, T) / sqrt 2) / (2 erf(T / sqrt 2)); the
    # constants cancel in the normalization below, so only the erf is evaluated.
    edges = torch.linspace(lo, hi, num_bins + 1, dtype=t.dtype, device=t.device)
    bound = kernel.support / math.sqrt(2.0)
    offsets = edges.index_select(0, index.view(-1)).view_as(index).sub_(t)  # edge - target: the listing's order
    cdf = torch.special.erf(offsets.mul_(1.0 / (math.sqrt(2.0) * sigma)).clamp_(-bound, bound))
    mass = cdf[:, 1:] - cdf[:, :-1]  # (M, window - 1)
    total = mass.sum(1, keepdim=True)
    empty = total == 0
    mass = mass / (total + empty)
    # No mass in the support: the target lies far below it (its window starts at the first edge;
    # all to the first bin) or far above it (its window ends at the last edge; all to the last bin).
    above = (t > 0.5 * (lo + hi)).squeeze(1)
    empty = empty.squeeze(1)
    mass[:, 0] += empty & ~above
    mass[:, -1] += empty & above
    probs = torch.zeros(t.shape[0], num_bins, dtype=t.dtype, device=t.device)
    probs.scatter_(1, index[:, :-1], mass)
    return probs.reshape(*target.shape, num_bins)


# --------------------------------------------------------------------------- Hellinger


def hellinger(p: Tensor, q: Tensor, dim: int = -1) -> Tensor:
    """Hellinger distance ``(1/sqrt 2) * ||sqrt(p) - sqrt(q)||_2`` of histograms normalized along ``dim``.

    Parity: HistoGAN's histogram loss (Afifi et al., CVPR 2021) for one pair of histograms,
    ``(1/sqrt 2) * sqrt(sum((sqrt(q) - sqrt(p))^2))``; in ``[0, 1]``, 0 for equal histograms,
    1 for disjoint ones.

    Args:
        p, q: histograms whose shapes broadcast (as in :func:`softhist.kl_divergence`), bins along ``dim``; non-negative
            counts or probabilities (normalized here; an all-zero histogram counts as uniform).
        dim: the bins axis.

    Returns:
        Tensor of the broadcast shape without ``dim``.

    Note:
        The gradient is finite everywhere (HistoGAN's is NaN at an empty bin and at ``p = q``).
        ``d sqrt(p_k) / d p_k`` is infinite at an empty bin ``p_k = 0``; there it is taken as 0,
        the derivative of ``sqrt(max(p_k, 0))`` from below (no finite subgradient exists when
        ``q_k > 0``, and this one keeps the step bounded; mass still reaches an empty bin through
        the normalization of the other bins). At ``p = q`` the gradient is 0, a subgradient of
        the norm at its minimum.

    Example:
        >>> import torch, softhist
        >>> softhist.hellinger(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
        tensor(1.)
        >>> p = torch.tensor([[2.0, 2.0, 0.0]], requires_grad=True)
        >>> softhist.hellinger(p, torch.tensor([[1.0, 2.0, 1.0]])).sum().backward()
        >>> bool(p.grad.isfinite().all())
        True
    """
    pp, qq = _paired_probabilities(p, q, dim)
    squared = (_sqrt0(pp) - _sqrt0(qq)).pow(2).sum(-1)
    return _sqrt0(0.5 * squared).to(_result_dtype(p, q))


# --------------------------------------------------------------------------- RGB-uv histogram

_HISTOGAN_EPS = 1e-6  # HistoGAN's EPS: inside the logs, the intensity's square root and the final division
_CHUNK_ELEMENTS = 1 << 18  # kernel values per factor matrix and chunk of pixels (1 MB in float32)


def _inverse_quadratic(x: Tensor, centres: Tensor, sigma: float) -> Tuple[Tensor, Tensor]:
    """``(..., n) -> (..., n, bins)`` twice: ``k = 1 / (1 + (d / sigma)^2)`` at ``d = x - c_k`` and
    its derivative ``dk/dx = -2 d / sigma^2 * k^2``. ``k`` is ``pi sigma`` times the Cauchy density
    of scale ``sigma`` (softhist's ``kernel="cauchy", membership="center"`` up to the constant
    ``width / (pi sigma)``, which the normalization cancels)."""
    d = x.unsqueeze(-1) - centres
    k = 1.0 / (1.0 + (d / sigma).square())
    return k, d.mul_(-2.0 / sigma**2).mul_(k.square())


def _uv_counts_fwd(u: Tensor, v: Tensor, w: Tensor, centres: Tensor, sigma: float, chunk: int) -> Tensor:
    """``H[b, a, i, j] = sum_n w[b, n] k(u[b, a, n] - c_i) k(v[b, a, n] - c_j)``, float64: per chunk
    of pixels one matmul ``(w K_u)^T K_v`` of two ``(n, bins)`` factor matrices per image and anchor,
    never an ``(n, bins, bins)`` tensor."""
    batch, bins = u.shape[0], centres.shape[0]
    hist = u.new_zeros(batch, 3, bins, bins, dtype=torch.float64)
    for start in builtins.range(0, u.shape[-1], chunk):
        part = slice(start, start + chunk)
        ku = _inverse_quadratic(u[..., part], centres, sigma)[0].mul_(w[..., part].unsqueeze(-1))  # (B, 3, n, bins)
        kv = _inverse_quadratic(v[..., part], centres, sigma)[0]
        hist += (ku.transpose(-1, -2) @ kv).double()  # cells sum in float64
    return hist


# VJP, with G = dL/dH and per chunk K_u, K_v (n, bins) and their derivatives K_u', K_v':
#   P = K_u G          (n, bins):  dL/dv_n = w_n sum_j K_v'[n, j] P[n, j]
#   Q = K_v G^T        (n, bins):  dL/du_n = w_n sum_i K_u'[n, i] Q[n, i]
#   dL/dw_n = sum_anchors sum_j P[n, j] K_v[n, j]
# Only u, v, w are kept for the backward pass; it recomputes each chunk's factors.
def _uv_counts_bwd(
    grad: Tensor, u: Tensor, v: Tensor, w: Tensor, centres: Tensor, sigma: float, chunk: int
) -> Tuple[Tensor, Tensor, Tensor]:
    grad = grad.to(u.dtype)
    grad_u, grad_v, grad_w = torch.empty_like(u), torch.empty_like(v), torch.empty_like(w)
    for start in builtins.range(0, u.shape[-1], chunk):
        part = slice(start, start + chunk)
        ku, dku = _inverse_quadratic(u[..., part], centres, sigma)
        kv, dkv = _inverse_quadratic(v[..., part], centres, sigma)
        p, q = ku @ grad, kv @ grad.transpose(-1, -2)
        wp = w[..., part]
        grad_w[..., part] = (p * kv).sum((1, 3)).unsqueeze(1)
        grad_u[..., part] = (dku * q).sum(-1) * wp
        grad_v[..., part] = (dkv * p).sum(-1) * wp
    return grad_u, grad_v, grad_w


class _UVCounts(torch.autograd.Function):
    """The RGB-uv histograms' cells from log-chromas ``u, v (B, 3, N)`` and weights ``w (B, 1, N)``."""

    @staticmethod
    def forward(ctx, u: Tensor, v: Tensor, w: Tensor, centres: Tensor, sigma: float, chunk: int) -> Tensor:
        ctx.save_for_backward(u, v, w, centres)
        ctx.sigma, ctx.chunk = sigma, chunk
        return _uv_counts_fwd(u, v, w, centres, sigma, chunk)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        u, v, w, centres = ctx.saved_tensors
        return (*_uv_counts_bwd(grad, u, v, w, centres, ctx.sigma, ctx.chunk), None, None, None)


def rgb_uv_histogram(
    images: Tensor,
    bins: int = 64,
    sigma: float = 0.02,
    *,
    range: Tuple[float, float] = (-3.0, 3.0),
    intensity_weighted: bool = True,
) -> Tensor:
    """HistoGAN's RGB-uv histogram: per-image log-chroma histograms, differentiable in the pixels.

    Parity: ``RGBuvHistBlock(h=bins, sigma=sigma, method='inverse-quadratic',
    intensity_scale=intensity_weighted, hist_boundary=list(range))`` of HistoGAN (Afifi et al.,
    CVPR 2021, ``histogram_classes/RGBuvHistBlock.py``) on images of at most ``insz`` pixels a
    side (to ``1e-5``, gradients included), in ``O(pixels + bins^2)`` memory.

    With pixels clamped to ``[0, 1]`` and ``eps = 1e-6``, each channel is an anchor: for R,
    ``u = log(R + eps) - log(G + eps)``, ``v = log(R + eps) - log(B + eps)`` (G: ``G/R``, ``G/B``;
    B: ``B/R``, ``B/G``). Each pixel adds ``I_y * k(u - c_i) * k(v - c_j)`` to cell ``(i, j)`` of
    its anchor's histogram, with ``I_y = sqrt(R^2 + G^2 + B^2 + eps)`` (1 without
    ``intensity_weighted``), the inverse-quadratic kernel ``k(d) = 1 / (1 + (d / sigma)^2)`` (the
    Cauchy density of scale ``sigma``: ``kernel="cauchy", membership="center"`` up to a constant)
    and the bin centres ``c = linspace(*range, bins)``. The three histograms are divided together
    by their total plus ``eps``, so an image's ``(3, bins, bins)`` sums to 1.

    Args:
        images: ``(B, 3, H, W)`` RGB in ``[0, 1]``, floating point.
        bins: bins per axis, ``>= 2`` (the centres include both ends of ``range``).
        sigma: the kernel's scale, in log-chroma units, ``> 0``.
        range: the first and last bin centres (HistoGAN's ``hist_boundary``).
        intensity_weighted: weight each pixel by its intensity ``I_y`` (HistoGAN's ``intensity_scale``).

    Returns:
        ``(B, 3, bins, bins)`` in ``images``' dtype (float32 for half precision); channel 0 is
        anchored on R, 1 on G, 2 on B; rows are ``u``, columns ``v``.

    Note:
        HistoGAN first resizes images larger than ``insz = 150`` pixels a side to ``150 x 150``
        (bilinear, ``align_corners=False``, after the clamp); this function bins every pixel given.
        For its exact values on large images, pass ``torch.nn.functional.interpolate(images.clamp(0, 1),
        size=(150, 150), mode="bilinear", align_corners=False)``. It also drops channels past the third; here
        ``images`` must have 3. The pixels are binned in chunks: the backward pass recomputes a
        chunk's ``(pixels, bins)`` kernel values instead of keeping all of them, where HistoGAN
        keeps ``(pixels, bins)`` factors per image and anchor for its backward pass. Not twice
        differentiable.

    Example:
        >>> import torch, softhist
        >>> images = torch.rand(2, 3, 32, 32, requires_grad=True)
        >>> h = softhist.rgb_uv_histogram(images, bins=16)
        >>> h.shape, torch.allclose(h.sum((1, 2, 3)), torch.ones(2))
        (torch.Size([2, 3, 16, 16]), True)
        >>> softhist.hellinger(h.flatten(1), h.detach().flip(0).flatten(1)).sum().backward()
        >>> images.grad.shape
        torch.Size([2, 3, 32, 32])
    """
    check_images_rgb(images)
    bins = check_int_at_least(bins, "bins", 2)
    sigma = check_real(sigma, "sigma", positive=True)
    lo, hi = check_range_pair(range)
    intensity_weighted = check_bool(intensity_weighted, "intensity_weighted")
    if images.dtype in _HALF_DTYPES:
        images = images.float()
    batch = images.shape[0]
    x = images.clamp(0, 1).reshape(batch, 3, -1)  # (B, 3, N)
    logs = torch.log(x + _HISTOGAN_EPS)
    u = logs - logs[:, [1, 0, 0]]  # anchors R, G, B: log(R/G), log(G/R), log(B/R)
    v = logs - logs[:, [2, 2, 1]]  # log(R/B), log(G/B), log(B/G)
    if intensity_weighted:
        w = torch.sqrt(x.pow(2).sum(1, keepdim=True) + _HISTOGAN_EPS)  # (B, 1, N)
    else:
        w = torch.ones_like(x[:, :1])
    centres = torch.linspace(lo, hi, bins, dtype=torch.float64).to(x.dtype)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, batch * 3 * bins))
    hist = _UVCounts.apply(u, v, w.expand_as(x[:, :1]), centres, sigma, chunk)
    hist = hist / (hist.sum((1, 2, 3), keepdim=True) + _HISTOGAN_EPS)
    return hist.to(x.dtype)


for _public in (calibration_error, hellinger, histogram_loss, hl_gauss_probs, rgb_uv_histogram):
    _public.__prepare_scriptable__ = refuse_torchscript  # torch.jit.script says what to use

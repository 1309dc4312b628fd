"""``softhist demo``: match a photograph's tones to a target histogram by gradient descent.

A monotone tone curve, a piecewise-linear lookup table on the gray levels, is
learned with Adam by minimizing :func:`softhist.histogram_matching_loss`
between the curved pixels and the target: a flat histogram (histogram
equalization) or a second photograph's. The result is cross-checked against
the classic exact algorithm, CDF inversion ``T = G^-1(F(v))``, where ``F`` is
the photo's CDF and ``G`` the target's.

The default photograph is Grace Hopper's portrait from matplotlib's sample
data, so nothing is downloaded. Needs the ``demo`` extra (matplotlib, tqdm).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

import softhist

__all__ = ["DemoResult", "ImageError", "ToneCurve", "describe_change", "exact_matching_curve", "load_gray", "plot", "run"]

DEFAULT_IMAGE = "grace_hopper.jpg"  # matplotlib's sample data
BINS = 64  # histogram bins on [0, 1]; the bandwidth is softhist's default, half a bin
# The loss bins 4 more bins each side: the kernel (5.3 bandwidths = 2.65 bins) of a value near 0 or 1
# then stays in range. Mass that spilled out would drop from the normalized histogram, and the
# gradient would push highlights out of range instead of toward the target.
MARGIN = 4
PIECES = 64  # linear pieces of the tone curve
SAMPLE_PIXELS = 1 << 17  # pixels the curve is fitted on; it is applied to all of them
LEARNING_RATE = 0.1
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


class ImageError(ValueError):
    """A file that cannot be used as a photograph."""


class ToneCurve(torch.nn.Module):
    """A monotone tone curve on ``[0, 1]``: linear between ``pieces + 1`` equally spaced knots.

    The knot values are ``sigmoid(u_0 + cumsum(softplus(raw)))``: positive
    increments make the curve increasing by construction, the sigmoid keeps it
    inside ``(0, 1)``, and each increment moves only the knots above it. (A
    cumulative sum divided by its total also stays in range, but couples every
    knot to all the others: matching a darker target, its highlights lagged
    far behind.) It starts as the identity, clipped to ``[1/(4 pieces), 1 - 1/(4 pieces)]``.
    """

    def __init__(self, pieces: int = PIECES) -> None:
        super().__init__()
        if pieces < 1:
            raise ValueError(f"pieces must be a positive integer, got {pieces}")
        self.pieces = pieces
        margin = 0.25 / pieces  # keeps the end knots off the sigmoid's flat tails, and every increment positive
        start = torch.logit(torch.linspace(0.0, 1.0, pieces + 1, dtype=torch.float64).clamp(margin, 1 - margin))
        self.offset = torch.nn.Parameter(start[:1].float())
        self.raw = torch.nn.Parameter(torch.log(torch.expm1(torch.diff(start))).float())  # softplus(raw) = increments

    def knots(self) -> Tensor:
        """Curve values at ``linspace(0, 1, pieces + 1)``, shape ``(pieces + 1,)``, increasing."""
        return torch.sigmoid(torch.cat([self.offset, self.offset + torch.cumsum(F.softplus(self.raw), 0)]))

    def locate(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """Each value's piece and position inside it; they do not depend on the parameters, so compute once."""
        position = x.clamp(0, 1) * self.pieces
        piece = position.floor().clamp(max=self.pieces - 1).long()
        return piece, position - piece

    def forward(self, x: Tensor, located: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
        """Apply the curve to values ``x`` in ``[0, 1]``, any shape."""
        piece, frac = self.locate(x) if located is None else located
        v = self.knots()
        # index_select's backward is one index_add_, cheaper than advanced indexing's.
        return torch.lerp(v.index_select(0, piece.reshape(-1)), v.index_select(0, piece.reshape(-1) + 1), frac.reshape(-1)).reshape(piece.shape)


def load_gray(path: str) -> np.ndarray:
    """An image file as gray levels in ``[0, 1]``, shape ``(H, W)``, float64.

    Color is converted with the BT.601 luma weights; an alpha channel is dropped.
    Raises :class:`ImageError` if the file is not an image matplotlib/Pillow can read.
    """
    import matplotlib.image as mimage

    try:
        image = np.asarray(mimage.imread(path))
    except Exception as error:  # noqa: BLE001 - Pillow raises many types for a bad file
        raise ImageError(f"cannot read {path} as an image ({type(error).__name__}: {error})") from None
    if np.issubdtype(image.dtype, np.integer):
        image = image / np.iinfo(image.dtype).max
    image = image.astype(np.float64)
    if image.ndim == 3:  # (H, W, C): RGB(A) to luma; gray(+alpha) keeps its gray channel
        image = image[..., :3] @ np.array(_LUMA) if image.shape[-1] >= 3 else image[..., 0]
    if image.ndim != 2 or image.size < 2:
        raise ImageError(f"{path} is not a 2-D image (array of shape {image.shape})")
    return np.clip(image, 0.0, 1.0)


def exact_matching_curve(values: np.ndarray, source: np.ndarray, target: Optional[np.ndarray]) -> np.ndarray:
    """Classic histogram matching by CDF inversion, evaluated at ``values``: ``G^-1(F(v))``.

    ``F`` is the empirical CDF of ``source`` at mid-rank (ties share the middle of
    their step, so a gray level shared by many pixels maps to the middle of its
    range); ``G^-1`` is the target's quantile function, the identity for a flat
    target (``target=None``, histogram equalization).
    """
    ordered = np.sort(source.ravel())
    cdf = (np.searchsorted(ordered, values, "left") + np.searchsorted(ordered, values, "right")) / (2.0 * ordered.size)
    # Hazen's quantiles sit at the same mid-ranks, (i + 1/2) / n, so matching a photo to itself is the identity.
    return cdf if target is None else np.quantile(target.ravel(), cdf, method="hazen")


@dataclass
class DemoResult:
    """What ``run`` computed; ``plot`` draws it."""

    image: np.ndarray  # (H, W) gray levels in [0, 1]
    matched: np.ndarray  # the image through the learned curve
    exact: np.ndarray  # the image through the exact CDF-inversion curve
    target_density: np.ndarray  # (BINS,) the target's (hard) histogram as a density on [0, 1], for the figure
    knots: np.ndarray  # learned curve at linspace(0, 1, PIECES + 1)
    losses: List[float] = field(default_factory=list)  # per step, on the fitted pixels
    loss_before: float = math.nan  # whole image, identity curve
    loss_after: float = math.nan  # whole image, learned curve
    loss_exact: float = math.nan  # whole image, exact curve
    mean_gap: float = math.nan  # mean |learned - exact| over pixels, in 1/255 gray levels
    max_gap: float = math.nan  # max |learned - exact| over the image's gray values, in 1/255
    image_name: str = ""
    target_name: str = ""
    seconds: float = 0.0


@contextlib.contextmanager
def _threads(count: int) -> Iterator[None]:
    """Run with ``count`` intra-op threads, then restore the setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run(
    steps: int = 300,
    image_path: Optional[str] = None,
    target_path: Optional[str] = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Fit a tone curve so the photo's histogram matches the target's; cross-check with CDF inversion.

    Args:
        steps: Adam steps, ``>= 1``.
        image_path: the photo; ``None``: matplotlib's ``grace_hopper.jpg``.
        target_path: a photo whose histogram is the target; ``None``: flat (equalization).
        progress: show a tqdm progress bar.
        log: where the summary lines go.

    Returns:
        A :class:`DemoResult`.
    """
    from tqdm import tqdm

    if steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    if image_path is None:
        import matplotlib.cbook

        image_path = str(matplotlib.cbook.get_sample_data(DEFAULT_IMAGE, asfileobj=False))
    start = time.perf_counter()
    image = load_gray(image_path)
    target_pixels = None if target_path is None else load_gray(target_path)
    image_name = Path(image_path).name
    target_name = "flat (equalization)" if target_path is None else Path(target_path).name
    log(f"photo: {image_name}, {image.shape[1]}×{image.shape[0]} ({image.size:,} pixels); target: {target_name}")

    binning = dict(bins=BINS + 2 * MARGIN, range=(-MARGIN / BINS, 1.0 + MARGIN / BINS))
    pixels = torch.from_numpy(image.ravel()).float()
    # The target goes through the same soft binning as the photo, so smoothing is compared like with like;
    # the flat target is the soft histogram of evenly spread values.
    target_values = torch.linspace(0.5 / 4096, 1 - 0.5 / 4096, 4096) if target_pixels is None else torch.from_numpy(target_pixels.ravel()).float()
    target_hist = softhist.histogram(target_values, **binning)[0]

    def loss_of(values: Tensor) -> Tensor:
        return softhist.histogram_matching_loss(values, target_hist, **binning, target_type="histogram", metric="wasserstein")

    # The curve acts on gray levels alone, so a fixed random sample of pixels estimates the histogram well.
    generator = torch.Generator().manual_seed(0)
    sample = pixels[torch.randperm(pixels.numel(), generator=generator)[:SAMPLE_PIXELS]]
    curve = ToneCurve()
    located = curve.locate(sample)
    optimizer = torch.optim.Adam(curve.parameters(), lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    losses: List[float] = []
    # Each step works on ~10^5 values, where a second intra-op thread saves little; on a busy
    # machine, OpenMP threads waiting on each other can make a step many times slower.
    with _threads(1):
        with torch.no_grad():
            loss_before = float(loss_of(pixels))
        log(f"fitting a monotone tone curve ({PIECES} linear pieces) on {sample.numel():,} pixels: "
            f"Adam, {steps} steps, Wasserstein loss on soft bins 1/{BINS} wide")
        bar = tqdm(range(steps), desc="matching", unit="step", disable=not progress, leave=True)
        for _ in bar:
            loss = loss_of(curve(sample, located))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.5f}", refresh=False)
        bar.close()
        with torch.no_grad():
            matched = curve(pixels).numpy().astype(np.float64)
            knots = curve.knots().numpy().astype(np.float64)
            exact = exact_matching_curve(image.ravel(), image, target_pixels)
            loss_after = float(loss_of(torch.from_numpy(matched).float()))
            loss_exact = float(loss_of(torch.from_numpy(exact).float()))

    # Cross-check: the learned curve against the exact one at every gray value of the photo.
    levels, counts = np.unique(image.ravel(), return_counts=True)
    gap = np.abs(curve_at(knots, levels) - exact_matching_curve(levels, image, target_pixels)) * 255
    result = DemoResult(
        image=image, matched=matched.reshape(image.shape), exact=exact.reshape(image.shape),
        target_density=np.histogram(target_values.numpy(), BINS, range=(0.0, 1.0), density=True)[0], knots=knots, losses=losses,
        loss_before=loss_before, loss_after=loss_after, loss_exact=loss_exact,
        mean_gap=float((gap * counts).sum() / counts.sum()), max_gap=float(gap.max()),
        image_name=image_name, target_name=target_name, seconds=time.perf_counter() - start,
    )
    log(f"loss (Wasserstein distance to the target, whole photo): before {loss_before:.5f}, after {loss_after:.5f}"
        f" ({describe_change(loss_before, loss_after)})")
    log(f"cross-check against exact histogram matching (CDF inversion, loss {loss_exact:.5f}): the learned curve is "
        f"within {result.mean_gap:.2f}/255 gray levels of it on average over the pixels, {result.max_gap:.2f}/255 at most")
    return result


def describe_change(before: float, after: float) -> str:
    """How a loss changed, honestly: ``"84× lower"``, ``"1.3× higher"``, ``"4% lower"`` or ``"unchanged"``.

    Values equal at the 5 decimals the summary prints are unchanged; ratios below 10 keep two
    digits, and changes below 10% are given in percent.

    Example:
        >>> describe_change(0.19846, 0.00238), describe_change(0.001, 0.0013), describe_change(0.02, 0.020001)
        ('83× lower', '1.3× higher', 'unchanged')
        >>> describe_change(0.5, 0.48), describe_change(0.0, 0.004)
        ('4% lower', 'higher (from 0)')
    """
    if f"{before:.5f}" == f"{after:.5f}":
        return "unchanged"
    direction = "lower" if after < before else "higher"
    if after > before and before <= 0:
        return "higher (from 0)"
    if after < before and after <= 0:
        return "down to 0"
    ratio = before / after if after < before else after / before
    if ratio < 1.1:
        return f"{abs(after - before) / before * 100:.2g}% {direction}"
    digits = f"{ratio:.0f}" if ratio >= 10 else f"{ratio:.2g}"
    return f"{digits}× {direction}"


def curve_at(knots: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The piecewise-linear curve through ``knots`` (at ``linspace(0, 1, len(knots))``) at ``values``."""
    return np.interp(values, np.linspace(0.0, 1.0, knots.size), knots)


def plot(result: DemoResult, path: str) -> Tuple[int, int]:
    """Draw the demo figure to ``path`` (PNG, 1200×720 pixels); returns its (width, height) in pixels.

    Top: the photo before and after, and the learned curve with the exact one.
    Bottom: the photo's histogram against the target before and after, and the loss per step.
    """
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend and figures alone

    width, height, dpi = 12.0, 7.2, 100
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(2, 3, gridspec_kw=dict(width_ratios=[1, 1, 1.05]))
    edges = np.linspace(0.0, 1.0, BINS + 1)
    for ax, picture, title in ((axes[0, 0], result.image, f"before: {result.image_name}"),
                               (axes[0, 1], result.matched, "after: learned tone curve")):
        ax.imshow(picture, cmap="gray", vmin=0.0, vmax=1.0, interpolation="antialiased")
        ax.set_title(title)
        ax.axis("off")

    ax = axes[0, 2]
    levels = np.linspace(0.0, 1.0, 1024)
    ax.plot(levels, levels, color="0.7", linestyle=":", label="identity")
    exact_levels, order = np.unique(result.image.ravel(), return_index=True)
    ax.plot(exact_levels, result.exact.ravel()[order], color="tab:orange", linewidth=3, alpha=0.6, label="exact (CDF inversion)")
    ax.plot(levels, curve_at(result.knots, levels), color="tab:blue", linewidth=1.5, label="learned (softhist)")
    ax.plot(np.linspace(0.0, 1.0, result.knots.size), result.knots, "o", color="tab:blue", markersize=2)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="input gray level", ylabel="output gray level",
           title=f"tone curve (mean gap {result.mean_gap:.2f}/255)")
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize=8)

    target = result.target_density
    top = 0.0
    for ax, picture, title in ((axes[1, 0], result.image, f"histogram before (loss {result.loss_before:.4f})"),
                               (axes[1, 1], result.matched, f"histogram after (loss {result.loss_after:.4f})")):
        density, _ = np.histogram(picture, bins=edges, range=(0.0, 1.0), density=True)
        ax.bar(edges[:-1], density, width=np.diff(edges), align="edge", color="0.55", label="photo")
        ax.stairs(target, edges, color="tab:red", linewidth=2, label=f"target: {result.target_name}")
        ax.set(xlim=(0, 1), xlabel="gray level", ylabel="density", title=title)
        ax.legend(loc="upper right", fontsize=8)
        top = max(top, density.max(), target.max())
    for ax in axes[1, :2]:
        ax.set_ylim(0, 1.08 * top)

    ax = axes[1, 2]
    ax.semilogy(np.arange(1, len(result.losses) + 1), result.losses, color="tab:blue")
    ax.set(xlabel="Adam step", ylabel="Wasserstein loss", title="loss while fitting")
    ax.grid(True, which="both", alpha=0.3)

    fig.suptitle("softhist demo: histogram matching by gradient descent through a soft histogram")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return int(width * dpi), int(height * dpi)

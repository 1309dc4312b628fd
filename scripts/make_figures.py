"""Draw the README's pictures: docs/demo.png, docs/kernels.png, docs/membership.png and docs/bench.png.

    python scripts/make_figures.py                    # all three (the bench sweep takes minutes)
    python scripts/make_figures.py --only kernels     # one of them
    make figures                                      # the same, in the project's virtualenv

- demo.png: ``softhist demo`` with its defaults (``softhist.demo.run`` and ``plot``).
- kernels.png: the kernel gallery. Each kernel's weight curve, what one sample
  puts into a bin, how many samples get a gradient as the bandwidth shrinks, and
  each kernel's soft histogram next to the hard one at four bandwidths.
- membership.png: one sample's bin values under ``membership="mass"`` and ``"center"``,
  unnormalized and with ``normalize_samples=True``.
- bench.png: ``softhist bench --sweep --plot``, time and memory against N on
  this machine (the figure names the device).

Each PNG is re-encoded with a 256-color palette when that makes it smaller, so
the committed files stay well under 300 KB.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Sequence

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import softhist  # noqa: E402
from softhist import bench, demo  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"
KERNEL_NAMES = ("gaussian", "logistic", "box", "triangular", "epanechnikov", "bspline")
COLORS = dict(zip(KERNEL_NAMES, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")))


def shrink_png(path: Path) -> None:
    """Re-encode with an adaptive 256-color palette if that is smaller (line art and a gray photo lose nothing visible)."""
    before = path.stat().st_size
    with Image.open(path) as image:
        paletted = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    candidate = path.with_suffix(".tmp.png")
    paletted.save(candidate, optimize=True)
    if candidate.stat().st_size < before:
        candidate.replace(path)
    else:
        candidate.unlink()
    print(f"  {path.relative_to(DOCS.parent)}: {path.stat().st_size / 1024:.0f} KB")


def figure_demo() -> None:
    """The demo with its defaults, exactly as ``softhist demo`` runs it."""
    result = demo.run(progress=False)
    demo.plot(result, str(DOCS / "demo.png"))
    shrink_png(DOCS / "demo.png")


def _gradient_share(x: torch.Tensor, kernel: str, bandwidth_bins: float, bins: int, lo: float, hi: float) -> float:
    """Share of samples for which moving by one bin width changes some count by > 1% of a sample, to first order.

    Uses softhist's own gradients: one backward per bin gives the Jacobian ``d hist / d x``.
    """
    width = (hi - lo) / bins
    leaf = x.detach().double().requires_grad_()
    hist = softhist.histc(leaf, bins, lo, hi, kernel=kernel, bandwidth=bandwidth_bins * width)
    sensitivity = torch.zeros_like(leaf)
    for k in range(bins):
        (row,) = torch.autograd.grad(hist[k], leaf, retain_graph=True)
        sensitivity += row.abs()
    return float(((sensitivity * width) > 0.01).double().mean())


def figure_kernels() -> None:
    """The kernel gallery: weight curves, bin membership, gradient share against bandwidth, soft against hard."""
    generator = torch.Generator().manual_seed(0)
    n, bins, lo, hi = 3000, 24, -4.0, 4.0
    x = torch.cat([torch.randn(2 * n // 3, generator=generator) * 0.8 - 1.2, torch.randn(n // 3, generator=generator) * 0.5 + 1.8])
    width = (hi - lo) / bins
    fig, axes = plt.subplots(3, 3, figsize=(13.5, 11.5))

    ax = axes[0, 0]
    z = torch.linspace(-4, 4, 801, dtype=torch.float64)
    for name in KERNEL_NAMES:
        ax.plot(z, softhist.KERNELS[name].pdf(z), color=COLORS[name], label=name)
    ax.set(title="weight curves (unit variance)", xlabel="distance / bandwidth", ylabel="density")
    ax.legend(fontsize=8)

    ax = axes[0, 1]
    position = torch.linspace(-1.5, 2.5, 801, dtype=torch.float64)  # in bin widths; the bin is [0, 1)
    ax.fill_between(position, ((position >= 0) & (position < 1)).double(), step="post", color="0.85", label="hard")
    for name in KERNEL_NAMES:
        cdf, h = softhist.KERNELS[name].cdf, 0.5
        ax.plot(position, cdf((1 - position) / h) - cdf((0 - position) / h), color=COLORS[name], label=name)
    ax.set(title="one sample's count in bin [0, 1) (bandwidth ½ bin)", xlabel="sample position (bin widths)",
           ylabel="soft count", ylim=(-0.02, 1.05))
    ax.legend(fontsize=8, loc="upper right")

    ax = axes[0, 2]
    bandwidths = np.geomspace(0.02, 4.0, 16)
    for name in KERNEL_NAMES:
        share = [_gradient_share(x, name, b, bins, lo, hi) for b in bandwidths]
        ax.plot(bandwidths, share, marker="o", markersize=3, color=COLORS[name], label=name)
    ax.axvline(0.5, color="0.5", linestyle=":")
    ax.text(0.54, 0.9, "default ½ bin", color="0.4", fontsize=8)
    ax.text(0.56, 0.03, "straight_through: exact\ncounts forward, a wide\nbandwidth's gradient back", color="0.3", fontsize=7.5)
    ax.set(xscale="log", title="samples that get a gradient", xlabel="bandwidth (bin widths)",
           ylabel="share of samples", ylim=(-0.02, 1.05))
    ax.legend(fontsize=7.5, loc="center right")

    hard = softhist.histc(x, bins, lo, hi, mode="hard")
    edges = np.linspace(lo, hi, bins + 1)
    shades = {0.25: "0.1", 0.5: "tab:blue", 1.0: "tab:orange", 2.0: "tab:red"}
    for ax, name in zip(axes[1:].ravel(), KERNEL_NAMES):
        ax.bar(edges[:-1], hard.numpy(), width=width, align="edge", color="0.85", label="hard (= torch.histc)")
        for h, color in shades.items():
            soft = softhist.histc(x, bins, lo, hi, kernel=name, bandwidth=h * width)
            ax.stairs(soft.numpy(), edges, color=color, linewidth=1.4, label=f"soft, bandwidth {h:g} bin")
        ax.set(title=name, xlim=(lo, hi), xlabel="x", ylabel="count")
    handles, labels = axes[1, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.suptitle(f"softhist kernels: {n:,} samples, {bins} bins on [{lo:g}, {hi:g}]", fontsize=13)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(DOCS / "kernels.png", dpi=80)
    plt.close(fig)
    shrink_png(DOCS / "kernels.png")


def figure_membership() -> None:
    """One sample's contribution to each bin: the kernel's mass in the bin (``membership="mass"``)
    against its density at the bin centre times the width (``"center"``), unnormalized and with
    ``normalize_samples=True``."""
    bins, x, h = 10, torch.tensor([0.43], dtype=torch.float64), 0.05
    centres = (np.arange(bins) + 0.5) / bins
    z = np.linspace(0, 1, 400)
    fig, axes = plt.subplots(1, 2, figsize=(8, 2.6), sharey=True)
    for ax, normalize in zip(axes, (False, True)):
        for offset, membership, color in ((-0.022, "mass", "tab:blue"), (0.022, "center", "tab:orange")):
            values = softhist.histc(x, bins, 0, 1, bandwidth=h, membership=membership, normalize_samples=normalize)
            ax.bar(centres + offset, values.numpy(), width=0.04, color=color, label=f'membership="{membership}"')
        density = np.exp(-0.5 * ((z - 0.43) / h) ** 2) / (h * np.sqrt(2 * np.pi)) / bins
        ax.plot(z, density, color="gray", lw=1, label="density × bin width")
        ax.axvline(0.43, color="black", lw=0.8, ls=":")
        for edge in np.linspace(0, 1, bins + 1):
            ax.axvline(edge, color="lightgray", lw=0.5, zorder=0)
        ax.set_title(f"normalize_samples={normalize}: sums {'to 1' if normalize else 'differ'}", fontsize=9)
        ax.set_xlabel("x (sample at 0.43, Gaussian, bandwidth = half a bin)", fontsize=8)
    axes[0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(DOCS / "membership.png", dpi=80)
    plt.close(fig)
    shrink_png(DOCS / "membership.png")


def figure_bench(quick: bool) -> None:
    """``softhist bench --sweep --plot docs/bench.png``, single-threaded; the table goes to stdout.

    One thread: on a shared 2-core machine, intra-op threads that wait on each
    other make times swing tenfold from run to run; one thread gives numbers
    that reproduce, for every provider alike (the figure's title says so).
    """
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    argv = ["--sweep", "--plot", str(DOCS / "bench.png")] + (["--quick"] if quick else [])
    args = parser.parse_args(argv)
    bench.check_arguments(parser, args)
    bench.run(args)
    shrink_png(DOCS / "bench.png")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["demo", "kernels", "membership", "bench"], action="append", help="draw only this figure (repeatable)")
    parser.add_argument("--quick-bench", action="store_true", help="the bench sweep up to N = 1M, without torch.compile")
    args = parser.parse_args(argv)
    wanted: List[str] = args.only or ["demo", "kernels", "membership", "bench"]
    DOCS.mkdir(exist_ok=True)
    for name in wanted:
        start = time.perf_counter()
        print(f"docs/{name}.png ...", flush=True)
        if name == "demo":
            figure_demo()
        elif name == "kernels":
            figure_kernels()
        elif name == "membership":
            figure_membership()
        else:
            figure_bench(args.quick_bench)
        print(f"  {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

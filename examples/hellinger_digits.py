"""Undo an unknown intensity curve by matching histograms under the Hellinger distance.

The target images are scikit-learn's 8x8 handwritten digits (shipped with the package) with
intensities in [0, 1]; the observed images are the same kind of digits (a disjoint half) passed
through an unknown curve, ``v ** 2.2``. A curve ``v ** gamma`` is learned so the soft histogram
of the corrected images matches the target images' histogram, minimizing
``softhist.hellinger`` (HistoGAN's colour-histogram loss, with finite gradients at empty bins).
It prints the learned gamma (the truth is 1 / 2.2 = 0.45) and the distance before and after.

Run: ``python examples/hellinger_digits.py`` (needs scikit-learn).
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits

import softhist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="Adam steps")
    args = parser.parse_args()
    torch.manual_seed(0)
    pixels = torch.tensor(load_digits().data, dtype=torch.float32) / 16
    order = torch.randperm(len(pixels))
    target = pixels[order[: len(order) // 2]].reshape(-1)
    observed = pixels[order[len(order) // 2 :]].reshape(-1) ** 2.2
    # Soft bins of 1/16: the digits have 17 intensity levels. A margin keeps mass in the range.
    bins, value_range = 20, (-2 / 16, 18 / 16)
    target_hist = softhist.histc(target, bins, *value_range)
    log_gamma = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([log_gamma], lr=0.02)

    def distance() -> torch.Tensor:
        corrected = observed.clamp_min(1e-6) ** log_gamma.exp()
        return softhist.hellinger(softhist.histc(corrected, bins, *value_range), target_hist)

    before = distance().item()
    for _ in range(args.steps):
        loss = distance()
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"learned gamma {log_gamma.exp():.3f} (truth {1 / 2.2:.3f}); Hellinger distance {before:.4f} -> {distance():.4f}")


if __name__ == "__main__":
    main()

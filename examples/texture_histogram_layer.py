"""Train a tiny classifier whose features are local histograms: softhist.nn.HistogramLayer.

The data are scikit-learn's 8x8 handwritten digits (shipped with the package), split in half.
The network is a 3x3 convolution to 4 channels, then Peeples et al.'s RBF histogram layer
(``softhist.nn.HistogramLayer``, GatorSense's layer: 4 learnable bins per channel, histograms of
2x2 windows at stride 2), then a linear classifier on the ``(16, 4, 4)`` histograms. The bin
centres and widths train with the rest. It prints the held-out accuracy before and after
training and how far the bin centres moved.

Run: ``python examples/texture_histogram_layer.py [--steps N]`` (needs scikit-learn).
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits

import softhist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="Adam steps (full batch)")
    args = parser.parse_args()
    torch.manual_seed(0)
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16  # (1797, 1, 8, 8)
    labels = torch.tensor(digits.target)
    order = torch.randperm(len(labels))
    train, test = order[: len(order) // 2], order[len(order) // 2 :]
    histogram = softhist.nn.HistogramLayer(4, num_bins=4, kernel_size=2, stride=2)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), histogram, torch.nn.Flatten(), torch.nn.Linear(16 * 4 * 4, 10)
    )
    centres = histogram.centers.detach().clone()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)

    def accuracy() -> float:
        with torch.no_grad():
            return (model(images[test]).argmax(1) == labels[test]).float().mean().item()

    before = accuracy()
    for _ in range(args.steps):
        loss = torch.nn.functional.cross_entropy(model(images[train]), labels[train])
        opt.zero_grad()
        loss.backward()
        opt.step()
    moved = (histogram.centers.detach() - centres).abs().mean().item()
    print(f"held-out accuracy {before:.3f} -> {accuracy():.3f} after {args.steps} steps (train loss {loss.item():.3f})")
    print(f"bin centres moved by {moved:.3f} on average; widths now {histogram.widths.detach().abs().mean():.3f} on average")


if __name__ == "__main__":
    main()

"""Learn digit embeddings with the Histogram Loss (Ustinova & Lempitsky, NeurIPS 2016).

A small network maps scikit-learn's 8x8 handwritten digits (shipped with the package) to
16-dimensional embeddings, trained with ``softhist.nn.HistogramLoss``: the probability
that a pair of different digits is more similar (cosine) than a pair of the same digit.
It reports that loss and the nearest-neighbour accuracy (recall@1) on held-out digits,
before and after training. The loss equals pytorch-metric-learning's ``HistogramLoss``.

Run: ``python examples/metric_learning_digits.py`` (needs scikit-learn).
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits

import softhist


def recall_at_1(emb: torch.Tensor, labels: torch.Tensor) -> float:
    unit = torch.nn.functional.normalize(emb, dim=1)
    sims = unit @ unit.T
    sims.fill_diagonal_(-2.0)
    return (labels[sims.argmax(1)] == labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="Adam steps, one batch of 512 digits each")
    args = parser.parse_args()
    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16
    y = torch.tensor(digits.target)
    order = torch.randperm(len(y))
    train, test = order[:1200], order[1200:]
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 16))
    loss_fn = softhist.nn.HistogramLoss(n_bins=100)
    with torch.no_grad():
        before = loss_fn(net(x[test]), y[test]).item(), recall_at_1(net(x[test]), y[test])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(args.steps):
        batch = train[torch.randperm(len(train))[:512]]
        loss = loss_fn(net(x[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = loss_fn(net(x[test]), y[test]).item(), recall_at_1(net(x[test]), y[test])
    print(f"held-out digits: histogram loss {before[0]:.4f} -> {after[0]:.4f}, recall@1 {before[1]:.3f} -> {after[1]:.3f}")


if __name__ == "__main__":
    main()

"""Calibrate a digit classifier by minimizing a differentiable calibration error.

A small MLP is trained on scikit-learn's handwritten digits (shipped with the package, 8x8
images, 10 classes) until it is overconfident. It is then calibrated on a held-out split by
learning a temperature together with a bias per class, minimizing the negative log-likelihood
plus the soft-binned expected calibration error (``softhist.calibration_error(...,
mode="soft")``, Karandikar et al., NeurIPS 2021). The test split's ECE is reported with
``mode="hard"``, the value torchmetrics' ``multiclass_calibration_error`` gives.

Run: ``python examples/calibration_digits.py`` (needs scikit-learn).
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits

import softhist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="Adam steps for training and for calibrating")
    args = parser.parse_args()
    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16
    y = torch.tensor(digits.target)
    order = torch.randperm(len(y))
    train, calib, test = order[:900], order[900:1350], order[1350:]
    # Label noise on the training split makes the network learn to be overconfident.
    noisy = y[train].clone()
    flip = torch.rand(len(train)) < 0.2
    noisy[flip] = torch.randint(0, 10, (int(flip.sum()),))

    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(args.steps):
        loss = torch.nn.functional.cross_entropy(net(x[train]), noisy)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        logits = net(x)

    def ece(z: torch.Tensor, idx: torch.Tensor, mode: str = "hard") -> torch.Tensor:
        return softhist.calibration_error(z[idx].softmax(1), y[idx], 15, task="multiclass", mode=mode)

    before = ece(logits, test)
    log_temperature = torch.zeros((), requires_grad=True)
    bias = torch.zeros(10, requires_grad=True)
    opt = torch.optim.Adam([log_temperature, bias], lr=0.05)
    for _ in range(args.steps):
        z = logits / log_temperature.exp() + bias
        loss = torch.nn.functional.cross_entropy(z[calib], y[calib]) + 2.0 * ece(z, calib, mode="soft")
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        z = logits / log_temperature.exp() + bias
        after = ece(z, test)
        accuracy = (z[test].argmax(1) == y[test]).float().mean()
    print(f"test accuracy {accuracy:.3f}; temperature {log_temperature.exp():.2f}")
    print(f"test ECE (15 bins, torchmetrics' value): before {before:.4f}, after {after:.4f}")


if __name__ == "__main__":
    main()

"""Regression as classification: HL-Gauss (Farebrother et al., ICML 2024) on the diabetes data.

scikit-learn's diabetes data (shipped with the package: 442 patients, 10 features, disease
progression after a year) is regressed by two identical MLPs: one trained on the squared
error, one on ``softhist.nn.HLGaussLoss`` (cross-entropy against a Gaussian of std 0.75 bins
around each target, integrated over 51 bins), predicting the mean of its bin centers. It
prints the held-out root-mean-square error of both.

Run: ``python examples/hl_gauss_diabetes.py`` (needs scikit-learn).
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_diabetes

import softhist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="full-batch Adam steps per model")
    args = parser.parse_args()
    torch.manual_seed(0)
    data = load_diabetes()
    x = torch.tensor(data.data, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    y = torch.tensor(data.target, dtype=torch.float32)
    order = torch.randperm(len(y))
    train, test = order[:330], order[330:]
    lo, hi, bins = 0.0, 400.0, 51  # the targets lie in [25, 346]
    hl_gauss = softhist.nn.HLGaussLoss(lo, hi, bins, sigma=0.75 * (hi - lo) / bins)

    def fit(outputs: int, loss_fn) -> torch.nn.Module:
        net = torch.nn.Sequential(torch.nn.Linear(10, 64), torch.nn.ReLU(), torch.nn.Linear(64, outputs))
        opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-3)
        for _ in range(args.steps):
            loss = loss_fn(net(x[train]), y[train])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return net

    scale = y[train].std()
    mse = fit(1, lambda out, t: ((out[:, 0] * scale + y[train].mean() - t) / scale).pow(2).mean())
    hlg = fit(bins, hl_gauss)
    with torch.no_grad():
        pred_mse = mse(x[test])[:, 0] * scale + y[train].mean()
        pred_hlg = hl_gauss.transform_from_probs(hlg(x[test]).softmax(-1))
        rmse = lambda p: (p - y[test]).pow(2).mean().sqrt().item()  # noqa: E731
        baseline = rmse(torch.full_like(y[test], y[train].mean().item()))
    print(f"held-out RMSE: predicting the mean {baseline:.1f}, squared error {rmse(pred_mse):.1f}, HL-Gauss {rmse(pred_hlg):.1f}")


if __name__ == "__main__":
    main()

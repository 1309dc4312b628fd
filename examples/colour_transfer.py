"""Give one photo another's colours by matching HistoGAN's RGB-uv histograms.

The photos are matplotlib's sample data (nothing is downloaded): Grace Hopper's portrait takes
the colours of ``Minduka_Present_Blue_Pack.png``. A 3x3 colour matrix and an offset, applied to
every pixel, are learned so that the RGB-uv histogram (``softhist.rgb_uv_histogram``, HistoGAN's
log-chroma histogram) of the recoloured portrait matches the other photo's under the Hellinger
distance (``softhist.hellinger``, HistoGAN's colour loss). It prints the distance before and after
and the mean colours of the portrait, the result and the target.

Run: ``python examples/colour_transfer.py [--steps N] [--out result.png]`` (needs matplotlib).
"""

from __future__ import annotations

import argparse

import matplotlib
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as nnf

import softhist


def load(name: str, size: int) -> torch.Tensor:
    """A sample photo as ``(1, 3, size, size)`` RGB in [0, 1]."""
    image = plt.imread(matplotlib.cbook.get_sample_data(name, asfileobj=False))
    pixels = torch.tensor(image[..., :3], dtype=torch.float32).permute(2, 0, 1)[None]
    if image.dtype.kind == "u":
        pixels = pixels / 255
    return nnf.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="Adam steps")
    parser.add_argument("--out", default=None, help="save source | result | target side by side to this PNG")
    args = parser.parse_args()
    torch.manual_seed(0)
    source = load("grace_hopper.jpg", 96)
    target = load("Minduka_Present_Blue_Pack.png", 96)
    target_hist = softhist.rgb_uv_histogram(target).flatten(1)
    matrix = torch.eye(3, requires_grad=True)
    offset = torch.zeros(3, 1, 1, requires_grad=True)
    opt = torch.optim.Adam([matrix, offset], lr=0.01)

    def recolour() -> torch.Tensor:
        return (torch.einsum("ij,bjhw->bihw", matrix, source) + offset).clamp(0, 1)

    def distance() -> torch.Tensor:
        return softhist.hellinger(softhist.rgb_uv_histogram(recolour()).flatten(1), target_hist).mean()

    before = distance().item()
    for _ in range(args.steps):
        loss = distance()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        result = recolour()
        after = distance().item()

    def mean(image: torch.Tensor) -> str:
        return "(" + ", ".join(f"{v:.2f}" for v in image.mean((0, 2, 3)).tolist()) + ")"

    print(f"Hellinger distance of the RGB-uv histograms {before:.4f} -> {after:.4f} in {args.steps} steps")
    print(f"mean RGB: portrait {mean(source)}, result {mean(result)}, target {mean(target)}")
    if args.out:
        plt.imsave(args.out, torch.cat([source, result, target], dim=3)[0].permute(1, 2, 0).numpy())
        print(f"saved {args.out}")


if __name__ == "__main__":
    main()

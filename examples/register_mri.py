"""Rigid 2-D registration of an MRI slice by ITK's Mattes mutual information, in PyTorch.

The fixed image is the MRI slice that matplotlib ships (``s1045.ima.gz``). The moving
image is a copy rotated and shifted by a known rigid transform, with its intensities
remapped (inverted and gamma-curved, as a second modality would be). The transform is
recovered twice, with the same metric and the same starting point:

* softhist: ``softhist.nn.MattesMutualInformationLoss`` (ITK's metric value, to
  rounding) on the moving image resampled by ``torch.nn.functional.grid_sample``,
  minimized by Adam over (angle, shift);
* SimpleITK: ``ImageRegistrationMethod`` with Mattes MI (50 bins, every pixel sampled),
  a linear interpolator and its regular-step gradient descent.

It prints the recovered angle and shift of each next to the truth, with times and ITK's
metric value at each solution. Run: ``python examples/register_mri.py`` (needs SimpleITK
and matplotlib: ``pip install -e ".[test]"``).
"""

from __future__ import annotations

import argparse
import math
import time

import matplotlib.cbook as cbook
import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

import softhist

TRUE_ANGLE_DEG = 7.0
TRUE_SHIFT = (6.5, -4.25)  # (x, y) in pixels


def load_slice() -> np.ndarray:
    """The 256 x 256 MRI slice: 8-bit intensities stored big-endian in 16 bits."""
    with cbook.get_sample_data("s1045.ima.gz") as f:
        return np.frombuffer(f.read(), ">u2").reshape(256, 256).astype(np.float64)


def euler(angle: float, shift, center) -> sitk.Euler2DTransform:
    """ITK's rigid transform: ``p -> R(angle) (p - center) + center + shift``, fixed to moving."""
    return sitk.Euler2DTransform(center, angle, shift)


def make_pair():
    fixed = load_slice()
    center = ((fixed.shape[1] - 1) / 2, (fixed.shape[0] - 1) / 2)
    truth = euler(math.radians(TRUE_ANGLE_DEG), TRUE_SHIFT, center)
    image = sitk.GetImageFromArray(fixed)
    # moving(T(p)) = fixed(p): resample the fixed image by the inverse transform.
    moving = sitk.GetArrayFromImage(sitk.Resample(image, image, truth.GetInverse(), sitk.sitkLinear, 0.0))
    moving = 1000.0 * (1.0 - (moving / fixed.max()) ** 0.6)  # another "modality": inverted, gamma-curved
    return fixed, moving, center


def register_softhist(fixed: np.ndarray, moving: np.ndarray, center, steps: int, bins: int):
    """Adam over (angle * radius, shift x, shift y): one unit moves the image's edge by about a pixel."""
    height, width = fixed.shape
    fixed_t = torch.from_numpy(fixed).float()[None, None]
    moving_t = torch.from_numpy(moving).float()[None, None]
    loss_fn = softhist.nn.MattesMutualInformationLoss(bins, moving_range=(float(moving.min()), float(moving.max())))
    radius = 0.5 * math.hypot(height, width)
    params = torch.zeros(3, requires_grad=True)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij")
    cx, cy = center
    opt = torch.optim.Adam([params], lr=1.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)

    def warp(params):
        angle, tx, ty = params[0] / radius, params[1], params[2]
        cos, sin = torch.cos(angle), torch.sin(angle)
        mx = cos * (xs - cx) - sin * (ys - cy) + cx + tx  # T(p) in moving pixels
        my = sin * (xs - cx) + cos * (ys - cy) + cy + ty
        grid = torch.stack([mx * 2 / (width - 1) - 1, my * 2 / (height - 1) - 1], -1)[None]
        warped = F.grid_sample(moving_t, grid, mode="bilinear", align_corners=True)
        inside = (grid.detach().abs() <= 1).all(-1)[:, None]  # ITK samples points that map into the moving image
        return warped, inside

    start = time.perf_counter()
    for _ in range(steps):
        warped, inside = warp(params)
        loss = loss_fn(warped, fixed_t, moving_mask=inside)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    seconds = time.perf_counter() - start
    angle, tx, ty = params.detach().tolist()
    return math.degrees(angle / radius), (tx, ty), seconds


def register_sitk(fixed: np.ndarray, moving: np.ndarray, center, bins: int):
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    method.SetMetricSamplingStrategy(method.NONE)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-4, numberOfIterations=500, gradientMagnitudeTolerance=1e-8
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetInitialTransform(euler(0.0, (0.0, 0.0), center), inPlace=False)
    start = time.perf_counter()
    result = method.Execute(sitk.GetImageFromArray(fixed), sitk.GetImageFromArray(moving))
    seconds = time.perf_counter() - start
    angle, tx, ty = result.GetParameters()  # a composite holding the one Euler transform
    return math.degrees(angle), (tx, ty), seconds, method.GetOptimizerIteration()


def itk_metric(fixed: np.ndarray, moving: np.ndarray, transform: sitk.Transform, bins: int) -> float:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    method.SetMetricSamplingStrategy(method.NONE)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetInitialTransform(transform)
    return method.MetricEvaluate(sitk.GetImageFromArray(fixed), sitk.GetImageFromArray(moving))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="Adam steps (default 100)")
    parser.add_argument("--bins", type=int, default=50, help="histogram bins per image (default 50, ITK's)")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads (default 1: tensors of 65k pixels gain little from intra-op threads, which only add fork/join)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fixed, moving, center = make_pair()
    print(f"fixed: matplotlib's MRI slice s1045, {fixed.shape[1]}x{fixed.shape[0]}; moving: rotated {TRUE_ANGLE_DEG} deg, "
          f"shifted {TRUE_SHIFT} px, intensities 1000 (1 - (v / max)^0.6)")
    ours = register_softhist(fixed, moving, center, args.steps, args.bins)
    theirs = register_sitk(fixed, moving, center, args.bins)
    rows = [("truth", TRUE_ANGLE_DEG, TRUE_SHIFT, None, "")]
    rows.append(("softhist (Adam, grid_sample)", ours[0], ours[1], ours[2], f"{args.steps} steps"))
    rows.append(("SimpleITK (regular-step GD)", theirs[0], theirs[1], theirs[2], f"{theirs[3]} iterations"))
    print(f"{'':30s} {'angle (deg)':>12s} {'shift x':>9s} {'shift y':>9s} {'time (s)':>9s} {'ITK metric':>11s}")
    for name, angle, (tx, ty), seconds, note in rows:
        metric = itk_metric(fixed, moving, euler(math.radians(angle), (tx, ty), center), args.bins)
        time_text = f"{seconds:9.2f}" if seconds is not None else f"{'':9s}"
        print(f"{name:30s} {angle:12.4f} {tx:9.4f} {ty:9.4f} {time_text} {metric:11.6f}  {note}")
    for name, (angle, (tx, ty)) in (("softhist", ours[:2]), ("SimpleITK", theirs[:2])):
        error = max(abs(tx - TRUE_SHIFT[0]), abs(ty - TRUE_SHIFT[1]))
        print(f"{name}: angle error {abs(angle - TRUE_ANGLE_DEG):.4f} deg, shift error {error:.4f} px")


if __name__ == "__main__":
    main()

"""local_histogram against GatorSense's RBF histogram layer (1x1 convolutions + AvgPool2d), the
same windows and bins, forward + backward, in one process on one thread; and the peak memory of
local_histogram on (1, 3, 256, 256). Prints ratios side by side.

    python scripts/bench_options.py
"""

import math
import pathlib
import statistics
import subprocess
import sys
import time

import torch

import softhist

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from test_options import GatorSenseRBFHistogram  # noqa: E402 - the reference the tests check local_histogram against


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    bins, size = 16, 5
    width = 1.0 / bins
    h = width / 2
    layer = GatorSenseRBFHistogram(3, (torch.arange(bins) + 0.5) * width, h * math.sqrt(2.0), size, 1, 2)
    x = torch.rand(4, 3, 64, 64, requires_grad=True)

    def ours(membership):
        def run():
            softhist.local_histogram(x, bins, (0, 1), size, 1, 2, bandwidth=h, membership=membership).sum().backward()
        return run

    def theirs():
        layer(x).sum().backward()

    cases = {"GatorSense RBF layer": theirs, "local_histogram center": ours("center"), "local_histogram mass": ours("mass")}
    times = {name: [] for name in cases}
    for _ in range(3):
        for run in cases.values():
            run()
    for _ in range(15):  # interleaved, so load from other processes falls on every case alike
        for name, run in cases.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["GatorSense RBF layer"])
    print("(4, 3, 64, 64), 16 bins, 5 x 5 windows, stride 1, forward + backward, 1 thread")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:26s} {median * 1e3:7.1f} ms  {median / base:5.2f} x the RBF layer")
    probe = (
        "import torch, softhist\n"
        "def peak():\n"
        "    return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
        "image = torch.rand(1, 3, 256, 256, requires_grad=True)\n"
        "softhist.local_histogram(torch.rand(1, 1, 8, 8), 16, (0, 1), 5, 1, membership=M)\n"
        "before = peak()\n"
        "(softhist.local_histogram(image, 16, (0, 1), 5, 1, membership=M) * torch.linspace(-1, 1, 16).view(16, 1, 1)).sum().backward()\n"
        "print((peak() - before) / 1e6)\n"
    )
    print("(1, 3, 256, 256), 16 bins, 5 x 5 windows, stride 1, forward + backward: peak RSS growth")
    for membership in ("center", "mass"):
        out = subprocess.run([sys.executable, "-c", probe.replace("=M", f"={membership!r}")], capture_output=True, text=True, check=True)
        print(f"  membership={membership!r}: {float(out.stdout):.0f} MB")


if __name__ == "__main__":
    main()

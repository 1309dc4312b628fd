"""softhist.rgb_uv_histogram and softhist.nn.HistogramLayer next to the references reimplemented in
tests/test_applications.py (HistoGAN's RGBuvHistBlock, GatorSense's RBF HistogramLayer): forward +
backward time (median, one thread) and peak RSS growth (each case in a fresh process).

Run: ``python scripts/bench_rgb_uv_and_histogram_layer.py`` (CPU)."""

import json
import pathlib
import statistics
import subprocess
import sys
import time

CASE = r"""
import sys, time, statistics, torch, softhist
sys.path.insert(0, TESTS)
from test_applications import GatorSenseRBFLayer, _paired_layers, histogan_rgb_uv
torch.set_num_threads(1)
torch.manual_seed(0)

def peak_rss():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))

kind, which, batch, side = KIND, WHICH, BATCH, SIDE
if kind == "rgb_uv":
    x = torch.rand(batch, 3, side, side)
    f = (lambda t: softhist.rgb_uv_histogram(t)) if which == "softhist" else (lambda t: histogan_rgb_uv(t, insz=side))
    grad = torch.rand(batch, 3, 64, 64)
else:
    ours, ref = _paired_layers(3, 4, 3, 1, 0)
    x = torch.rand(batch, 3, side, side)
    f = ours if which == "softhist" else ref
    grad = torch.rand(batch, 12, side - 2, side - 2)
small = x[:1, :, :8, :8].clone().requires_grad_()
(f(small) * (grad[:1, :, :6, :6] if kind == "layer" else grad[:1])).sum().backward()  # warm-up
x.requires_grad_()
before = peak_rss()
times = []
for _ in range(REPEATS):
    x.grad = None
    start = time.perf_counter()
    (f(x) * grad).sum().backward()
    times.append(time.perf_counter() - start)
print(statistics.median(times), peak_rss() - before)
"""

def run(kind, which, batch, side, repeats):
    code = CASE
    for key, value in dict(TESTS=repr(str(pathlib.Path(__file__).resolve().parents[1] / "tests")), KIND=repr(kind),
                           WHICH=repr(which), BATCH=batch, SIDE=side, REPEATS=repeats).items():
        code = code.replace(key, str(value))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), int(out[1])


if __name__ == "__main__":
    rows = []
    for kind, batch, side, repeats in [("rgb_uv", 2, 256, 3), ("rgb_uv", 8, 256, 3), ("layer", 4, 64, 20)]:
        for which in ("reference", "softhist"):
            if kind == "rgb_uv" and which == "reference" and batch > 2:
                continue  # HistoGAN's block needs several GB here
            seconds, peak = run(kind, which, batch, side, repeats)
            rows.append(dict(case=f"{kind} ({batch}, 3, {side}, {side})", impl=which, ms=round(1000 * seconds, 1), peak_MB=round(peak / 1e6, 1)))
            print(json.dumps(rows[-1]), flush=True)

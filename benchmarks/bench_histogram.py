"""softhist against torch.histc, side by side in one process.

Every time is reported next to its ratio to ``torch.histc`` (forward, hard) on
the same data in the same run; absolute times are only meaningful together
with the device line printed first. Peak memory is the growth of peak RSS
(CPU, measured in a fresh interpreter so cases do not mask each other) or of
``torch.cuda.max_memory_allocated`` (GPU).

    python benchmarks/bench_histogram.py            # the full CPU table
    python benchmarks/bench_histogram.py --quick    # a smaller table in well under a minute
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch

import softhist
from softhist import reference

# A dense N x B baseline runs only when one N x B float32 temporary stays under this.
DENSE_LIMIT_BYTES = 1 << 30


@dataclass
class Case:
    name: str
    make_x: Callable[[], torch.Tensor]
    bins: int
    bandwidth_bins: float = 0.5  # bandwidth in bin widths
    kernel: str = "gaussian"
    dim: Optional[int] = None
    joint: bool = False  # x is (N, 2): histogramdd against torch.histogramdd
    dense_baseline: bool = False  # also time the forum's dense formula


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn: Callable[[], object], device: torch.device, budget_s: float = 1.0, max_repeats: int = 15) -> float:
    """Median wall time in ms over repeats that fit the budget (at least 3)."""
    fn()
    _sync(device)
    times: List[float] = []
    start = time.perf_counter()
    while len(times) < max_repeats and (len(times) < 3 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def providers(case: Case, x: torch.Tensor) -> Dict[str, Tuple[Callable, Optional[Callable]]]:
    """Provider name -> (forward, forward+backward or None), all on the same data.

    The first provider is the hard, non-differentiable baseline the ratios refer to.
    """
    lo, hi = 0.0, 1.0
    h = case.bandwidth_bins * (hi - lo) / case.bins
    flat = x.reshape(-1)
    grad_x = x.detach().clone().requires_grad_()
    if case.joint:
        square = [(lo, hi), (lo, hi)]

        def soft_joint(inp):
            return softhist.histogramdd(inp, case.bins, range=square, kernel=case.kernel, bandwidth=h)[0]

        def joint_fwd_bwd():
            out = soft_joint(grad_x)
            out.backward(torch.ones_like(out))
            grad_x.grad = None

        return {
            "torch.histogramdd (hard)": (lambda: torch.histogramdd(x, [case.bins] * 2, range=[lo, hi, lo, hi]), None),
            f"softhist soft ({case.kernel})": (lambda: soft_joint(x), joint_fwd_bwd),
            "softhist hard": (lambda: softhist.histogramdd(x, case.bins, range=square, mode="hard"), None),
        }

    def soft(inp):
        return softhist.histc(inp, case.bins, lo, hi, kernel=case.kernel, bandwidth=h, dim=case.dim)

    def soft_fwd_bwd():
        out = soft(grad_x)
        out.backward(torch.ones_like(out))
        grad_x.grad = None

    out = {
        "torch.histc (hard)": (lambda: torch.histc(flat, case.bins, lo, hi), None),
        f"softhist soft ({case.kernel})": (lambda: soft(x), soft_fwd_bwd),
        "softhist hard": (lambda: softhist.histc(x, case.bins, lo, hi, mode="hard", dim=case.dim), None),
    }
    if case.dense_baseline and flat.numel() * case.bins * 4 <= DENSE_LIMIT_BYTES:
        slope = reference.slope_to_bandwidth(1.0) / h  # the forum's sigmoid slope for this bandwidth
        dense_x = flat.detach().clone().requires_grad_()

        def forum_fwd_bwd():
            hist = reference.tony_y_soft_histogram(dense_x, case.bins, lo, hi, slope)
            hist.backward(torch.ones_like(hist))
            dense_x.grad = None

        out["forum sigmoid (dense)"] = (lambda: reference.tony_y_soft_histogram(flat, case.bins, lo, hi, slope), forum_fwd_bwd)
    return out


def cases(quick: bool, device: torch.device) -> List[Case]:
    def uniform(*shape):
        return lambda: torch.rand(*shape, generator=torch.Generator().manual_seed(0)).to(device)

    def with_nans():
        x = uniform(1 << 20)()
        x[::3] = float("nan")
        return x

    sizes = [1 << 16, 1 << 20] if quick else [1 << 16, 1 << 20, 1 << 22]
    out = [Case(f"flat N={n:,}", uniform(n), 256, dense_baseline=n <= (1 << 16) or not quick) for n in sizes]
    out.append(Case("joint 2-D N=1M, 64×64", uniform(1 << 20, 2), 64, joint=True))
    if quick:
        return out
    n = 1 << 20
    out += [Case(f"bins={b}, N=1M", uniform(n), b) for b in (16, 4096)]
    out += [Case(f"bandwidth={bw} bins, N=1M", uniform(n), 256, bandwidth_bins=bw) for bw in (0.25, 1.0, 4.0)]
    out += [Case(f"kernel={k}, N=1M", uniform(n), 256, kernel=k) for k in ("logistic", "box", "bspline")]
    out.append(Case("batched 64×65536", uniform(64, 65536), 256, dim=1))
    out.append(Case("one bin, N=1M", lambda: torch.full((n,), 0.5001, device=device), 256))
    out.append(Case("sorted, N=1M", lambda: uniform(n)().sort().values, 256))
    out.append(Case("1/3 NaN, N=1M", with_nans, 256))
    out.append(Case("N=4M, bins=4096", uniform(1 << 22), 4096))
    out.append(Case("joint 2-D N=2M, 512×512", uniform(1 << 21, 2), 512, joint=True))
    return out


def _peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM, unlike ru_maxrss, is not inherited through fork + exec."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_probe(case: Case, provider: str, device: torch.device) -> float:
    """Peak RSS growth (MiB) of one call, run in this (fresh) process."""
    x = case.make_x()
    fwd, fwd_bwd = providers(case, x)[provider]
    before = _peak_rss_mib()
    (fwd_bwd or fwd)()
    return _peak_rss_mib() - before


def peak_memory_mb(index: int, provider: str, fn: Callable, device: torch.device, argv: List[str]) -> float:
    """Peak memory growth of one forward(+backward) call, in MiB.

    GPU: ``torch.cuda.max_memory_allocated``. CPU: peak RSS growth, measured in a
    fresh interpreter so earlier cases cannot mask it.
    """
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    out = subprocess.run(
        [sys.executable, __file__, *argv, "--probe", str(index), provider], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def fmt(ms: Optional[float], base: float) -> str:
    return "—" if ms is None else f"{ms:.2f} ms ({ms / base:.1f}×)"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, smaller cases")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--no-dense", action="store_true", help="skip the dense forum-formula baseline")
    parser.add_argument("--probe", nargs=2, metavar=("CASE", "PROVIDER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    all_cases = cases(args.quick, device)
    if args.probe:
        print(_rss_probe(all_cases[int(args.probe[0])], args.probe[1], device))
        return
    passthrough = (["--quick"] if args.quick else []) + ["--device", args.device]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; softhist {softhist.__version__}; float32, uniform data on [0, 1]\n")
    print("Ratios are to the case's first row (torch.histc or torch.histogramdd forward).\n")
    print("| case | provider | fwd (× baseline fwd) | fwd+bwd (× baseline fwd) | peak MiB |")
    print("|---|---|---|---|---|")
    for index, case in enumerate(all_cases):
        x = case.make_x()
        table = providers(case, x)
        if args.no_dense:
            table.pop("forum sigmoid (dense)", None)
        baseline = next(iter(table.values()))[0]
        base = timeit(baseline, device)
        for provider, (fwd, fwd_bwd) in table.items():
            slow = provider.startswith("forum")
            fwd_ms = base if fwd is baseline else timeit(fwd, device, max_repeats=3 if slow else 15)
            bwd_ms = None if fwd_bwd is None else timeit(fwd_bwd, device, max_repeats=3 if slow else 15)
            mem = peak_memory_mb(index, provider, fwd_bwd or fwd, device, passthrough)
            print(f"| {case.name} | {provider} | {fmt(fwd_ms, base)} | {fmt(bwd_ms, base)} | {mem:.0f} |", flush=True)


if __name__ == "__main__":
    main()

"""softhist next to ``torch.histc`` and the soft histograms in the wild, side by side in one process.

Every time is reported next to its ratio to the case's hard baseline
(``torch.histc``, or ``torch.histogramdd`` for joint cases) forward, on the same
data in the same run; absolute times are only meaningful together with the
device line printed first. Peak memory is the growth of peak RSS (CPU: VmHWM,
measured in a fresh interpreter per row so cases do not mask each other) or of
``torch.cuda.max_memory_allocated`` (GPU).

Baselines, each where it is installed and its dense ``N x bins`` temporary stays
under 1 GiB: the forum thread's sigmoid formula, eager and under
``torch.compile``; ``kornia.enhance.histogram`` / ``histogram2d``; MONAI's
Parzen window (``GlobalMutualInformationLoss``). All of them build ``N x bins``.

    softhist bench                             # the full table
    softhist bench --quick                     # a smaller table, in under a minute on a 2-core CPU
    softhist bench --sweep --plot bench.png    # time and memory against N, log-log
    softhist bench --small                     # only the small inputs and many rows
    softhist bench --scaling                   # 16M samples at one thread and at all threads

Small inputs and many rows get their own table: a call on 1,000 samples against ``torch.histc`` and
the dense formula users write for it, many short rows (``dim=``) against the same samples as one
row, and ``import softhist`` against ``import torch``. Those calls take microseconds, so each time
there is the minimum over interleaved repeats of a batch of calls.

``--scaling`` times 16M samples at one thread and at ``--threads`` (default: torch's thread count),
interleaved, and prints the speed-up with the load average before and after: on a shared machine
the load says how many of the threads were free.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

import softhist
from softhist import reference

__all__ = ["add_arguments", "check_arguments", "main", "run"]

# A dense N x B baseline runs only when one N x B float32 temporary stays under this
# (on a GPU: an eighth of its memory, since the baselines keep about four such tensors).
DENSE_LIMIT_BYTES = 1 << 30
# Optional baselines: provider group -> the module that must be importable.
OPTIONAL_MODULES = {"kornia": "kornia", "MONAI": "monai", "fast-histogram": "fast_histogram"}

Fn = Callable[[], object]


@dataclass
class Case:
    name: str
    make_x: Callable[[], Tensor]
    bins: int
    n: int  # samples per histogram: the x axis of the plot
    bandwidth_bins: float = 0.5  # bandwidth in bin widths
    kernel: str = "gaussian"
    dim: Optional[int] = None
    joint: bool = False  # x is (N, 2): histogramdd against torch.histogramdd
    mi: bool = False  # x is (2, B, 1, *volume): a mutual information loss between x[0] and x[1]
    dense_baseline: bool = False  # also time the dense baselines (forum formula, kornia, MONAI)
    sweep: bool = False  # a point of the time-against-N plot: uniform data, 256 bins, default kernel

    @property
    def bandwidth(self) -> float:
        return self.bandwidth_bins / self.bins  # data on [0, 1]


@dataclass
class Provider:
    """One row of a case: ``build()`` returns ``(forward, forward+backward or None)`` on the case's data."""

    name: str
    build: Callable[[], Tuple[Fn, Optional[Fn]]]
    external: bool = False  # another library's code: a failure becomes a note in its row, not a crash
    compiled: bool = False  # torch.compile: compile before measuring memory, so the compiler's own is not counted


@dataclass
class Row:
    case: str
    provider: str
    n: int
    bins: int
    base_ms: float
    fwd_ms: Optional[float]
    fwd_bwd_ms: Optional[float]
    peak_mib: Optional[float]
    note: str = ""


@dataclass(frozen=True)
class Options:
    """What the command line chose; the probe interpreter rebuilds the same cases from it."""

    quick: bool = False
    tiny: bool = False  # one small case of each kind, for the test suite (implies quick)
    device: str = "cpu"
    sweep: bool = False
    dense: bool = True
    torch_compile: bool = True
    threads: Optional[int] = None  # torch.set_num_threads, or torch's default


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn: Fn, device: torch.device, budget_s: float = 1.0, max_repeats: int = 15) -> float:
    """Median wall time in ms after one warm-up call (which also compiles, for torch.compile).

    At least 3 repeats, more while they fit ``budget_s``; a call slower than the
    whole budget is repeated once (the dense baselines take seconds).
    """
    t0 = time.perf_counter()
    fn()
    _sync(device)
    least = 1 if time.perf_counter() - t0 > budget_s else 3
    times: List[float] = []
    start = time.perf_counter()
    while len(times) < max_repeats and (len(times) < least or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _backward(forward: Callable[[Tensor], Tensor], leaf: Tensor) -> Fn:
    """forward + backward of ``forward(leaf)`` with an all-ones upstream gradient."""

    def run() -> None:
        out = forward(leaf)
        out.backward(torch.ones_like(out))
        leaf.grad = None

    return run


def _dense_fits(case: Case, x: Tensor) -> bool:
    limit = DENSE_LIMIT_BYTES
    if x.is_cuda:
        limit = torch.cuda.get_device_properties(x.device).total_memory // 8
    samples = x.shape[0] if case.joint else x.numel()
    return case.dense_baseline and samples * case.bins * 4 <= limit


def installed(group: str) -> bool:
    """Whether an optional baseline's library can be imported (looked up without importing it)."""
    return importlib.util.find_spec(OPTIONAL_MODULES[group]) is not None


def providers(case: Case, x: Tensor, options: Options) -> List[Provider]:
    """The case's rows, all on the same data ``x``. The first is the hard baseline the ratios refer to.

    Building a provider imports its library, so a probe builds only the one it measures.
    """
    lo, hi = 0.0, 1.0
    h = case.bandwidth
    grad_x = x.detach().clone().requires_grad_()
    dense = options.dense and _dense_fits(case, x)
    # Bin centers and a 0-d bandwidth, as kornia takes them.
    width = (hi - lo) / case.bins
    centers = lo + width * (torch.arange(case.bins, dtype=x.dtype, device=x.device) + 0.5)
    sigma = torch.tensor(h, dtype=x.dtype, device=x.device)

    def monai_loss() -> torch.nn.Module:
        from monai.losses import GlobalMutualInformationLoss

        return GlobalMutualInformationLoss("gaussian", num_bins=case.bins, sigma_ratio=case.bandwidth_bins).to(x.device)

    if case.mi:
        moving, fixed = x[0], x[1]
        grad_moving = moving.detach().clone().requires_grad_()
        ours = softhist.nn.MutualInformationLoss("gaussian", num_bins=case.bins, sigma_ratio=case.bandwidth_bins, range=(0.0, 1.0))
        out = [
            # Same samples and cells as the joint histogram: a hard floor to compare with.
            Provider(f"torch.histc (hard, N samples, {case.bins}² bins)", lambda: (lambda: torch.histc(moving, case.bins**2, lo, hi), None)),
            Provider("softhist MutualInformationLoss", lambda: (lambda: ours(moving, fixed), _backward(lambda m: ours(m, fixed), grad_moving))),
        ]
        if options.dense and installed("MONAI"):

            def monai_mi_volumes() -> Tuple[Fn, Fn]:
                loss = monai_loss()
                return lambda: loss(moving, fixed), _backward(lambda m: loss(m, fixed), grad_moving)

            out.append(Provider("MONAI GlobalMutualInformationLoss (dense Parzen)", monai_mi_volumes, external=True))
        return out
    if case.joint:
        square = [(lo, hi), (lo, hi)]

        def soft_joint(inp: Tensor) -> Tensor:
            return softhist.histogramdd(inp, case.bins, range=square, kernel=case.kernel, bandwidth=h)[0]

        def soft_joint_torch_engine(inp: Tensor) -> Tensor:
            return softhist.histogramdd(inp, case.bins, range=square, kernel=case.kernel, bandwidth=h, backend="torch")[0]

        out = [
            Provider("torch.histogramdd (hard)", lambda: (lambda: torch.histogramdd(x, [case.bins] * 2, range=[lo, hi, lo, hi]), None)),
            Provider(f"softhist soft ({case.kernel})", lambda: (lambda: soft_joint(x), _backward(soft_joint, grad_x))),
            Provider("softhist hard", lambda: (lambda: softhist.histogramdd(x, case.bins, range=square, mode="hard"), None)),
        ]
        if x.is_cuda or softhist.backends()["cpp"] is None:
            out.append(Provider("softhist soft, torch engine", lambda: (lambda: soft_joint_torch_engine(x), _backward(soft_joint_torch_engine, grad_x))))
        if not x.is_cuda and installed("fast-histogram"):

            def fast_histogram_2d() -> Tuple[Fn, Fn]:
                from fast_histogram import histogram2d

                xs, ys = x[:, 0].contiguous().numpy(), x[:, 1].contiguous().numpy()
                return (lambda: histogram2d(xs, ys, case.bins, [(lo, hi), (lo, hi)])), None

            out.insert(1, Provider("fast-histogram histogram2d (hard)", fast_histogram_2d))
        if dense and installed("kornia"):

            def kornia_2d() -> Tuple[Fn, Fn]:
                import kornia

                def run(inp: Tensor) -> Tensor:
                    return kornia.enhance.histogram2d(inp[:, 0].unsqueeze(0), inp[:, 1].unsqueeze(0), centers, sigma)

                return lambda: run(x), _backward(run, grad_x)

            out.append(Provider("kornia histogram2d (dense)", kornia_2d, external=True))
        if dense and installed("MONAI"):

            def monai_mi() -> Tuple[Fn, Fn]:
                loss = monai_loss()

                def run(inp: Tensor) -> Tensor:  # the joint Parzen histogram, then MI over it
                    return loss(inp[:, 0].unsqueeze(0), inp[:, 1].unsqueeze(0))

                return lambda: run(x), _backward(run, grad_x)

            out.append(Provider("MONAI MI loss (dense Parzen)", monai_mi, external=True))
        return out

    flat = x.reshape(-1)

    def soft(inp: Tensor) -> Tensor:
        return softhist.histc(inp, case.bins, lo, hi, kernel=case.kernel, bandwidth=h, dim=case.dim)

    out = [
        Provider("torch.histc (hard)", lambda: (lambda: torch.histc(flat, case.bins, lo, hi), None)),
        Provider(f"softhist soft ({case.kernel})", lambda: (lambda: soft(x), _backward(soft, grad_x))),
        Provider("softhist hard", lambda: (lambda: softhist.histc(x, case.bins, lo, hi, mode="hard", dim=case.dim), None)),
    ]
    if not x.is_cuda and case.dim is None and installed("fast-histogram"):  # the fastest hard counts on a CPU

        def fast_histogram_1d() -> Tuple[Fn, Fn]:
            from fast_histogram import histogram1d

            values = flat.detach().numpy()
            return (lambda: histogram1d(values, case.bins, (lo, hi))), None

        out.insert(1, Provider("fast-histogram histogram1d (hard)", fast_histogram_1d))
    if x.is_cuda or softhist.backends()["cpp"] is None:  # the fused kernels next to the portable engine

        def soft_torch_engine(inp: Tensor) -> Tensor:
            return softhist.histc(inp, case.bins, lo, hi, kernel=case.kernel, bandwidth=h, dim=case.dim, backend="torch")

        out.append(Provider("softhist soft, torch engine", lambda: (lambda: soft_torch_engine(x), _backward(soft_torch_engine, grad_x))))
    compile_anyway = x.is_cuda and options.dense and case.dense_baseline  # inductor fuses N x B away on GPU
    if not (dense or compile_anyway):
        return out
    slope = reference.slope_to_bandwidth(1.0) / h  # the forum's sigmoid slope for this bandwidth
    dense_x = flat.detach().clone().requires_grad_()

    def forum(inp: Tensor) -> Tensor:
        return reference.tony_y_soft_histogram(inp, case.bins, lo, hi, slope)

    if dense:
        out.append(Provider("forum sigmoid (dense)", lambda: (lambda: forum(flat), _backward(forum, dense_x))))
    if options.torch_compile and not options.quick:

        def compiled() -> Tuple[Fn, Fn]:
            # A fresh cache per case: dynamo stops recompiling a function after a few shapes
            # and silently falls back to eager.
            torch._dynamo.reset()
            fn = torch.compile(reference.tony_y_soft_histogram, dynamic=False)

            def run(inp: Tensor) -> Tensor:
                return fn(inp, case.bins, lo, hi, slope)

            return lambda: run(flat), _backward(run, dense_x)

        out.append(Provider("forum sigmoid (dense, torch.compile)", compiled, external=True, compiled=True))
    if not dense:
        return out
    if installed("kornia"):

        def kornia_1d() -> Tuple[Fn, Fn]:
            import kornia

            def run(inp: Tensor) -> Tensor:
                return kornia.enhance.histogram(inp.unsqueeze(0), centers, sigma)

            return lambda: run(flat), _backward(run, dense_x)

        out.append(Provider("kornia histogram (dense)", kornia_1d, external=True))
    if installed("MONAI"):

        def monai_1d() -> Tuple[Fn, Fn]:
            loss = monai_loss()

            def run(inp: Tensor) -> Tensor:  # (weights (1, N, bins), probability (1, 1, bins))
                return loss.parzen_windowing_gaussian(inp.unsqueeze(0))[1]

            return lambda: run(flat), _backward(run, dense_x)

        out.append(Provider("MONAI Parzen window (dense)", monai_1d, external=True))
    return out


def cases(options: Options) -> List[Case]:
    """The benchmark cases; ``--probe`` rebuilds the same list from the same options."""
    device = torch.device(options.device)

    def uniform(*shape: int) -> Callable[[], Tensor]:
        return lambda: torch.rand(*shape, generator=torch.Generator().manual_seed(0)).to(device)

    def with_nans() -> Tensor:
        x = uniform(1 << 20)()
        x[::3] = float("nan")
        return x

    def flat(n: int, dense: bool) -> Case:
        return Case(f"flat N={n:,}", uniform(n), 256, n, dense_baseline=dense, sweep=True)

    if options.sweep:
        top = (24 if options.quick else 27) if device.type == "cuda" else (20 if options.quick else 22)
        return [flat(1 << p, True) for p in range(10, top + 1, 2)]
    if device.type == "cuda":
        return _gpu_cases(options, uniform, flat)
    if options.tiny:
        return [flat(1 << 12, True), Case("joint 2-D N=4K, 16×16", uniform(1 << 12, 2), 16, 1 << 12, joint=True),
                Case("MI loss 2×8³ voxels, 23 bins", uniform(2, 2, 1, 8, 8, 8), 23, 2 * 8**3, mi=True)]
    sizes = [1 << 16, 1 << 20] if options.quick else [1 << 16, 1 << 20, 1 << 22]
    out = [flat(n, n <= (1 << 16) or not options.quick) for n in sizes]
    if options.quick:
        # 1M joint samples take seconds per soft call on 2 cores; 64K keep --quick quick.
        out.append(Case("joint 2-D N=64K, 64×64", uniform(1 << 16, 2), 64, 1 << 16, joint=True))
        out.append(Case("MI loss 2×32³ voxels, 23 bins", uniform(2, 2, 1, 32, 32, 32), 23, 2 * 32**3, mi=True))
        return out
    n = 1 << 20
    out.append(Case("joint 2-D N=1M, 64×64", uniform(n, 2), 64, n, joint=True, dense_baseline=True))
    # Two volumes (moving and fixed) of two images each: (2, batch 2, channel 1, 64, 64, 64).
    out.append(Case("MI loss 2×64³ voxels, 23 bins", uniform(2, 2, 1, 64, 64, 64), 23, 2 * 64**3, mi=True))
    out += [Case(f"bins={b}, N=1M", uniform(n), b, n) for b in (16, 4096)]
    out += [Case(f"bandwidth={bw} bins, N=1M", uniform(n), 256, n, bandwidth_bins=bw) for bw in (0.25, 1.0, 4.0)]
    out += [Case(f"kernel={k}, N=1M", uniform(n), 256, n, kernel=k) for k in ("logistic", "box", "bspline")]
    out.append(Case("batched 64×65536", uniform(64, 65536), 256, 65536, dim=1))
    out.append(Case("one bin, N=1M", lambda: torch.full((n,), 0.5001, device=device), 256, n))
    out.append(Case("sorted, N=1M", lambda: uniform(n)().sort().values, 256, n))
    out.append(Case("1/3 NaN, N=1M", with_nans, 256, n))
    out.append(Case("N=4M, bins=4096", uniform(1 << 22), 4096, 1 << 22))
    out.append(Case("joint 2-D N=2M, 512×512", uniform(1 << 21, 2), 512, 1 << 21, joint=True))
    return out


def _gpu_cases(options: Options, uniform: Callable[..., Callable[[], Tensor]], flat: Callable[[int, bool], Case]) -> List[Case]:
    """BENCHMARKS.md's GPU cases: 1M, 16M and 128M flat; 64 x 64K batched; 4096 bins; MI on 2 x 96³ voxels."""
    sizes = [1 << 20, 1 << 24] if options.quick else [1 << 20, 1 << 24, 1 << 27]
    out = [flat(n, True) for n in sizes]
    out.append(Case("batched 64×65536", uniform(64, 65536), 256, 65536, dim=1, dense_baseline=True))
    out.append(Case("N=16M, bins=4096", uniform(1 << 24), 4096, 1 << 24))
    voxels = 96**3
    for bins in (23,) if options.quick else (23, 64):
        # Two volumes (moving and fixed) of two images each: (2, batch 2, channel 1, 96, 96, 96).
        out.append(Case(f"MI loss 2×96³ voxels, {bins} bins", uniform(2, 2, 1, 96, 96, 96), bins, 2 * voxels, mi=True))
    return out


# --------------------------------------------------------------------------- peak memory


def _peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM, unlike ru_maxrss, is not inherited through fork + exec."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> bool:
    """Lower VmHWM to the current RSS (Linux: ``5 > /proc/self/clear_refs``); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def _rss_probe(case: Case, provider: str, options: Options) -> float:
    """Peak RSS growth (MiB) of one call, run in this (fresh) process."""
    x = case.make_x()
    spec = next(p for p in providers(case, x, options) if p.name == provider)
    fwd, fwd_bwd = spec.build()
    call = fwd_bwd or fwd
    if spec.compiled:
        call()  # compile first: the compiler's memory is not the kernel's
        _reset_peak_rss()
    # torch's first backward(gradient) imports its symbolic-shapes module (sympy, ~30 MiB) in any
    # program: imported first, so the figure is the call's own.
    importlib.import_module("torch.fx.experimental.symbolic_shapes")
    before = _peak_rss_mib()
    call()
    return _peak_rss_mib() - before


def _probe_argv(options: Options) -> List[str]:
    threads = ["--threads", str(options.threads)] if options.threads else []
    sizes = ["--tiny"] if options.tiny else ["--quick"] if options.quick else []
    return sizes + (["--sweep"] if options.sweep else []) + ["--device", options.device] + threads


def peak_memory_mb(index: int, spec: Provider, call: Fn, options: Options) -> Optional[float]:
    """Peak memory growth of one forward(+backward) call, in MiB; None if the probe failed.

    GPU: ``torch.cuda.max_memory_allocated``. CPU: peak RSS growth, measured in a
    fresh interpreter so earlier cases cannot mask it.
    """
    device = torch.device(options.device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        call()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    # The probe imports this very softhist, installed or not.
    src = str(Path(softhist.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])))
    if spec.compiled:
        # The probe compiles, then lowers VmHWM to the current RSS. A fixed mmap threshold stops glibc
        # from keeping the compile call's freed buffers in its heap, where the measured call would reuse
        # them without raising RSS.
        env["MALLOC_MMAP_THRESHOLD_"] = str(1 << 16)
    out = subprocess.run(
        [sys.executable, "-m", "softhist.bench", *_probe_argv(options), "--probe", str(index), spec.name],
        capture_output=True, text=True, env=env,
    )
    if out.returncode != 0:
        return None
    return float(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- output


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def fmt(ms: Optional[float], base: float) -> str:
    return "—" if ms is None else f"{ms:.2f} ms ({ms / base:.1f}×)"


def _short_error(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:80]}" if text else type(error).__name__


def write_csv(rows: Sequence[Row], path: str, device_name: str) -> None:
    """One line per row; times in ms, ratios to the case's hard baseline forward."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "provider", "n", "bins", "fwd_ms", "fwd_bwd_ms", "fwd_ratio", "fwd_bwd_ratio", "peak_mib", "device", "note"])
        for r in rows:
            writer.writerow([
                r.case, r.provider, r.n, r.bins,
                "" if r.fwd_ms is None else f"{r.fwd_ms:.4f}",
                "" if r.fwd_bwd_ms is None else f"{r.fwd_bwd_ms:.4f}",
                "" if r.fwd_ms is None else f"{r.fwd_ms / r.base_ms:.3f}",
                "" if r.fwd_bwd_ms is None else f"{r.fwd_bwd_ms / r.base_ms:.3f}",
                "" if r.peak_mib is None else f"{r.peak_mib:.1f}",
                device_name, r.note,
            ])


def plot(rows: Sequence[Row], path: str, device_name: str) -> None:
    """Forward time, forward+backward time and peak memory against N, log-log, one line per provider.

    Uses the rows of the flat cases (uniform data, 256 bins); ``--sweep`` gives them more sizes.
    """
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend and figures alone

    by_provider: Dict[str, List[Row]] = {}
    for r in rows:
        if r.case.startswith("flat N="):
            by_provider.setdefault(r.provider, []).append(r)
    fig = Figure(figsize=(15, 4.8))
    axes = fig.subplots(1, 3)
    panels = [("forward", lambda r: r.fwd_ms, "time (ms)"), ("forward + backward", lambda r: r.fwd_bwd_ms, "time (ms)"),
              ("peak memory growth", lambda r: r.peak_mib, "MiB")]
    styles = {"torch.histc (hard)": dict(color="black", linestyle="--"), "softhist hard": dict(color="tab:blue", linestyle="--"),
              "softhist soft (gaussian)": dict(color="tab:blue", linewidth=2.5)}
    palette = iter(["tab:red", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"])
    for name, provider_rows in by_provider.items():
        style = styles.get(name) or dict(color=next(palette, "gray"))
        for ax, (_, value, _) in zip(axes, panels):
            points = [(r.n, value(r)) for r in provider_rows if value(r) is not None and value(r) > 0]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=4, label=name, **style)
    for ax, (title, _, unit) in zip(axes, panels):
        ax.set(xscale="log", yscale="log", xlabel="samples N (256 bins)", ylabel=unit, title=title)
        ax.grid(True, which="major", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), frameon=False)
    fig.suptitle(f"softhist bench, float32 — {device_name}")
    fig.tight_layout(rect=(0, 0.1 if len(labels) <= 4 else 0.14, 1, 1))
    fig.savefig(path, dpi=100)


# --------------------------------------------------------------------------- command line


def _device(text: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``."""
    kind, _, index = text.partition(":")
    if kind == "cpu" and not index or kind == "cuda" and (not index or index.isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"unknown device {text!r} (choose cpu or cuda)")


def _threads(text: str) -> int:
    """A positive thread count for ``torch.set_num_threads``."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench's options, shared by ``softhist bench`` and ``benchmarks/bench_histogram.py``."""
    parser.add_argument("--quick", action="store_true", help="fewer, smaller cases: under a minute on a 2-core CPU")
    parser.add_argument("--device", default="cpu", type=_device, metavar="{cpu,cuda}", help="where to run (default: cpu)")
    parser.add_argument("--csv", metavar="PATH", help="also write every row to this CSV file")
    parser.add_argument("--plot", metavar="PATH", help="draw time and memory against N, log-log, to this PNG (needs matplotlib)")
    parser.add_argument("--sweep", action="store_true", help="only the flat cases, at N = 1K, 4K, ..., 4M (1M with --quick), for --plot")
    parser.add_argument("--no-dense", action="store_true", help="skip the dense baselines (forum formula, kornia, MONAI)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline (always skipped with --quick)")
    parser.add_argument("--small", action="store_true", help="only the small inputs and many rows (CPU)")
    parser.add_argument(
        "--scaling", action="store_true",
        help="only 16M samples at one thread and at --threads (default: torch's thread count), as a speed-up (CPU)",
    )
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # one small case of each kind, for the tests
    parser.add_argument(
        "--threads", type=_threads, metavar="N",
        help="CPU threads (torch.set_num_threads) for every provider; default: torch's choice. The README's tables name theirs",
    )


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject what would only fail after minutes of benchmarking (``parser.error`` exits with one line)."""
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available (torch {torch.__version__})")
    for flag in ("csv", "plot"):
        path = getattr(args, flag)
        if path is not None and not Path(path).resolve().parent.is_dir():
            parser.error(f"--{flag} {path}: directory {str(Path(path).parent)!r} does not exist")
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib: pip install 'softhist[demo]'")


# --------------------------------------------------------------------------- small inputs and many rows


def fastest(calls: Dict[str, Fn], device: torch.device, repeats: int = 7, budget_s: float = 0.02) -> Dict[str, float]:
    """Each call's time in ms: the minimum, over ``repeats`` interleaved rounds, of the mean over a
    batch sized to take about ``budget_s`` (short calls are timed many at a time)."""
    batch = {}
    for label, fn in calls.items():
        fn()
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        batch[label] = max(1, min(10_000, int(budget_s / max(time.perf_counter() - t0, 1e-7))))
    best = {label: float("inf") for label in calls}
    for _ in range(repeats):
        for label, fn in calls.items():
            t0 = time.perf_counter()
            for _ in range(batch[label]):
                fn()
            _sync(device)
            best[label] = min(best[label], 1e3 * (time.perf_counter() - t0) / batch[label])
    return best


def _import_seconds(module: str, repeats: int = 3) -> float:
    """Wall time of ``import module`` in a fresh interpreter, the minimum of a few."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return min(times)


def small_inputs(options: Options) -> List[Row]:
    """Print the table of small inputs and many rows; returns its rows."""
    device = torch.device(options.device)
    gen = torch.Generator().manual_seed(0)
    rows: List[Row] = []
    print("\n### Small inputs and many rows\n")
    print("Minimum of interleaved repeats. Ratios: to `torch.histc` forward on the same 1,000 samples; "
          "many rows to the same call on the same samples as one row.\n")
    print("| case | call | time | ratio |")
    print("|---|---|---|---|")

    def report(case: str, times: Dict[str, float], base_label: str) -> None:
        base = times[base_label]
        for label, ms in times.items():
            print(f"| {case} | {label} | {1e3 * ms:.1f} µs | {ms / base:.2f}× |", flush=True)
            rows.append(Row(case, label, 0, 0, base, ms, None, None))

    x = torch.rand(1000, generator=gen).to(device)
    leaf = x.clone().requires_grad_()
    edges = torch.linspace(0, 1, 257, device=device)
    dense = lambda t: reference.soft_histogram(t, edges, 0.5 / 256, "gaussian")  # noqa: E731 - the five-line formula
    case = "1,000 samples, 256 bins"
    rounds, budget = (2, 0.002) if options.tiny else (7, 0.02)
    report(case, fastest({
        "torch.histc": lambda: torch.histc(x, 256, 0, 1),
        "softhist hard": lambda: softhist.histc(x, 256, 0, 1, mode="hard"),
        "softhist soft forward": lambda: softhist.histc(x, 256, 0, 1),
        "softhist soft forward+backward": _backward(lambda t: softhist.histc(t, 256, 0, 1), leaf),
        "dense formula forward": lambda: dense(x),
        "dense formula forward+backward": _backward(dense, leaf),
    }, device, rounds, budget), "torch.histc")

    for rows_, length in ((1024, 16), (1024, 1)) if options.tiny else ((65_536, 16), (65_536, 1)):
        many = torch.rand(rows_, length, generator=gen).to(device)
        one = many.reshape(1, -1)
        many_leaf, one_leaf = many.clone().requires_grad_(), one.clone().requires_grad_()
        case = f"{rows_:,} rows of {length}, 32 bins"
        for mode in ("hard", "soft"):
            calls = {
                f"{mode}, as one row": lambda m=mode: softhist.histc(one, 32, 0, 1, dim=1, mode=m),
                f"{mode}, as rows (dim=1)": lambda m=mode: softhist.histc(many, 32, 0, 1, dim=1, mode=m),
            }
            if mode == "soft":
                calls["soft forward+backward, as one row"] = _backward(lambda t: softhist.histc(t, 32, 0, 1, dim=1), one_leaf)
                calls["soft forward+backward, as rows"] = _backward(lambda t: softhist.histc(t, 32, 0, 1, dim=1), many_leaf)
            times = fastest(calls, device, rounds if options.tiny else 3, budget if options.tiny else 0.05)
            for label, ms in times.items():
                base = times[label.replace("as rows (dim=1)", "as one row").replace("as rows", "as one row")]
                print(f"| {case} | {label} | {ms:.2f} ms | {ms / base:.2f}× |", flush=True)
                rows.append(Row(case, label, rows_ * length, 32, base, ms, None, None))

    torch_s, softhist_s = _import_seconds("torch", 1 if options.tiny else 3), _import_seconds("softhist", 1 if options.tiny else 3)
    print(f"| import | `import torch` | {torch_s:.2f} s | 1.00× |")
    print(f"| import | `import softhist` | {softhist_s:.2f} s | {softhist_s / torch_s:.2f}× |", flush=True)
    return rows


def thread_scaling(options: Options, threads: int) -> List[Row]:
    """Print the table of 16M samples at one thread and at ``threads``; returns its rows."""
    device = torch.device(options.device)
    n = 1 << (16 if options.tiny else 24)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, generator=gen).to(device)
    leaf = x.clone().requires_grad_()
    calls = {
        "torch.histc": lambda: torch.histc(x, 256, 0, 1),
        "softhist hard": lambda: softhist.histc(x, 256, 0, 1, mode="hard"),
        "softhist soft forward": lambda: softhist.histc(x, 256, 0, 1),
        "softhist soft forward+backward": _backward(lambda t: softhist.histc(t, 256, 0, 1), leaf),
    }

    def at(count: int, fn: Fn) -> Fn:
        def run() -> None:
            torch.set_num_threads(count)
            fn()

        return run

    before = os.getloadavg()[0]
    timed = fastest(
        {f"{label} @{count}": at(count, fn) for label, fn in calls.items() for count in (1, threads)},
        device, 2 if options.tiny else 5, 0.002 if options.tiny else 0.2,
    )
    torch.set_num_threads(threads)
    print(f"\n### Threads: {n:,} samples, 256 bins\n")
    print(f"Minimum of interleaved repeats at 1 and {threads} threads; load average {before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after (this machine: {os.cpu_count()} CPUs).\n")
    print(f"| call | 1 thread | {_plural(threads, 'thread')} | speed-up |")
    print("|---|---|---|---|")
    rows: List[Row] = []
    for label in calls:
        one, many = timed[f"{label} @1"], timed[f"{label} @{threads}"]
        print(f"| {label} | {one:.1f} ms | {many:.1f} ms | {one / many:.2f}× |", flush=True)
        rows.append(Row(f"threads, N={n:,}", label, n, 256, one, many, None, None))
    return rows


def run(args: argparse.Namespace) -> List[Row]:
    """Print the Markdown table; write ``--csv`` and ``--plot`` if asked. Returns the rows."""
    tiny = getattr(args, "tiny", False)
    options = Options(
        quick=args.quick or tiny, tiny=tiny, device=args.device, sweep=args.sweep, dense=not args.no_dense,
        torch_compile=not args.no_compile, threads=args.threads,
    )
    if options.threads:
        torch.set_num_threads(options.threads)
    device = torch.device(options.device)
    budget, repeats = (0.05, 3) if options.tiny else (0.3, 10) if options.quick else (1.0, 15)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU, {_plural(torch.get_num_threads(), 'thread')}"
    print(f"device: {name}; torch {torch.__version__}; softhist {softhist.__version__}; float32, uniform data on [0, 1]\n")
    if getattr(args, "small", False):
        return small_inputs(options)
    if getattr(args, "scaling", False):
        return thread_scaling(options, options.threads or torch.get_num_threads())
    missing = [f"{group} (pip install {OPTIONAL_MODULES[group]})" for group in OPTIONAL_MODULES if not installed(group)]
    if missing and options.dense:
        print(f"Not installed, so not compared: {', '.join(missing)}.")
    if options.dense and options.torch_compile and options.quick:
        print("torch.compile baseline skipped with --quick: compiling one shape takes 10-30 s on a 2-core CPU.")
    print("Dense baselines run where their N × bins float32 temporary fits in 1 GiB.")
    print("Ratios are to the case's first row (torch.histc or torch.histogramdd forward).\n")
    print("| case | provider | fwd (× baseline fwd) | fwd+bwd (× baseline fwd) | peak MiB |")
    print("|---|---|---|---|---|")
    rows: List[Row] = []
    for index, case in enumerate(cases(options)):
        x = case.make_x()
        specs = providers(case, x, options)
        baseline, _ = specs[0].build()
        base = timeit(baseline, device, budget, repeats)
        timed: List[Tuple[Provider, Optional[Fn], Row]] = []
        for spec in specs:
            note, call = "", None
            try:
                fwd, fwd_bwd = (baseline, None) if spec is specs[0] else spec.build()
                fwd_ms = base if fwd is baseline else timeit(fwd, device, budget, repeats)
                bwd_ms = None if fwd_bwd is None else timeit(fwd_bwd, device, budget, repeats)
                call = fwd_bwd or fwd
            except Exception as error:  # noqa: BLE001 - another library's failure is a result, not a crash
                if not spec.external:
                    raise
                fwd_ms = bwd_ms = None
                note = f"failed: {_short_error(error)}"
            timed.append((spec, call, Row(case.name, spec.name, case.n, case.bins, base, fwd_ms, bwd_ms, None, note)))
        # Memory after the case's timings: each CPU probe is its own interpreter, so two at a time
        # measure the same as one at a time, in half the wall time, without disturbing a timing.
        with ThreadPoolExecutor(max_workers=1 if device.type == "cuda" else 2) as pool:
            probed = [item for item in timed if item[1] is not None]
            if options.tiny:  # the tests: one probe (the first case's softhist row) shows the probes work
                probed = [item for item in probed if item[0].name.startswith("softhist")][:1] if index == 0 else []
            found = dict(zip(map(id, probed), pool.map(lambda item: peak_memory_mb(index, item[0], item[1], options), probed)))
            peaks = [found.get(id(item)) for item in timed]
        for (_, _, row), peak in zip(timed, peaks):
            row.peak_mib = peak
            memory = "—" if peak is None else f"{peak:.0f}"
            cells = f"{row.note} | —" if row.note else f"{fmt(row.fwd_ms, base)} | {fmt(row.fwd_bwd_ms, base)}"
            print(f"| {case.name} | {row.provider} | {cells} | {memory} |", flush=True)
            rows.append(row)
    if not options.sweep and device.type == "cpu":
        small_inputs(options)  # a table of its own, not in the CSV
    if args.csv:
        write_csv(rows, args.csv, name)
    if args.plot:
        plot(rows, args.plot, name)
    written = [path for path in (args.csv, args.plot) if path]
    if written:
        print("\n" + "\n".join(f"wrote {path}" for path in written))
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m softhist.bench`` and ``benchmarks/bench_histogram.py``: the same flags as ``softhist bench``."""
    parser = argparse.ArgumentParser(prog="bench_histogram.py", description=__doc__.split("\n")[0])
    add_arguments(parser)
    parser.add_argument("--probe", nargs=2, metavar=("CASE", "PROVIDER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        options = Options(quick=args.quick or args.tiny, tiny=args.tiny, device=args.device, sweep=args.sweep, threads=args.threads)
        if options.threads:
            torch.set_num_threads(options.threads)
        print(_rss_probe(cases(options)[int(args.probe[0])], args.probe[1], options))
        return 0
    check_arguments(parser, args)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

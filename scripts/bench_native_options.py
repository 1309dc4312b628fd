"""The native CPU engine's options against the same call with today's options (bin-integrated
Gaussian, one bandwidth, samples not normalized): one thread, 1M float32 samples, 256 bins,
forward and forward + backward, minimum of interleaved repeats in one process, as ratios.

    python scripts/bench_native_options.py [--backend cpp|auto|torch] [--samples N]
"""

import argparse
import time

import torch

import softhist


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="cpp")
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    bins = 256
    x = torch.rand(args.samples, requires_grad=True)
    edges = torch.linspace(0, 1, bins + 1) ** 1.5  # non-uniform edges
    cases = {
        "today's options (gaussian, mass)": dict(),
        "membership='center'": dict(membership="center"),
        "normalize_samples=True": dict(normalize_samples=True),
        "center + normalize": dict(membership="center", normalize_samples=True),
        "kernel='cauchy'": dict(kernel="cauchy"),
        "edges: today's options": dict(edges=True),
        "edges: membership='center'": dict(edges=True, membership="center"),
        "edges: normalize_samples=True": dict(edges=True, normalize_samples=True),
    }
    if args.only:
        cases = {k: v for k, v in cases.items() if k.startswith("today") or k.startswith("edges: today") or args.only in k}

    def call(opts, backward):
        opts = dict(opts)
        backend = "torch" if opts.get("kernel") == "cauchy" and args.backend == "torch" else args.backend
        if opts.pop("edges", False):
            def run():
                h = softhist.histogram(x, edges, backend=backend, **opts)[0]
                if backward:
                    h.sum().backward()
        else:
            def run():
                h = softhist.histc(x, bins, 0.0, 1.0, backend=backend, **opts)
                if backward:
                    h.sum().backward()
        return run

    runs = {(name, b): call(o, b) for name, o in cases.items() for b in (False, True)}
    times = {k: float("inf") for k in runs}
    for _ in range(args.repeats):
        for k, run in runs.items():
            start = time.perf_counter()
            run()
            times[k] = min(times[k], time.perf_counter() - start)
    print(f"{args.samples} float32 samples, {bins} bins, 1 thread, backend={args.backend!r} (min of {args.repeats} interleaved)")
    for name in cases:
        base = "edges: today's options" if name.startswith("edges") else "today's options (gaussian, mass)"
        f, fb = times[(name, False)], times[(name, True)]
        print(f"  {name:36s} fwd {f * 1e3:8.1f} ms {f / times[(base, False)]:6.2f}x   fwd+bwd {fb * 1e3:8.1f} ms {fb / times[(base, True)]:6.2f}x")


if __name__ == "__main__":
    main()

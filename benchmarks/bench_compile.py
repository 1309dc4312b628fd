"""torch.compile(fullgraph=True) of a training-style function against eager, in one process.

The function calls ``histc``, ``histogram_matching_loss`` and ``mutual_information`` on N samples
(default 200K) and back-propagates their sum. Prints the first compiled call (compilation
included), then the median steady-state time of eager and compiled forward+backward.

    python benchmarks/bench_compile.py [--n 200000] [--threads 1]
"""

import argparse
import statistics
import time

import torch

import softhist


def loss_fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    hist = softhist.histc(x, 64, -4, 4)
    matching = softhist.histogram_matching_loss(x, y, 64, range=(-4, 4))
    mi = softhist.mutual_information(x, y, 32, range=(-4, 4))
    return hist.var() * 1e-6 + matching - mi


def step(fn, x: torch.Tensor, y: torch.Tensor) -> None:
    loss = fn(x, y)
    loss.backward()
    x.grad = None


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="samples (default 200000)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, generator=generator).requires_grad_()
    y = 0.5 * x.detach() + 0.3 * torch.randn(args.n, generator=generator)
    compiled = torch.compile(loss_fn, fullgraph=True)
    start = time.perf_counter()
    step(compiled, x, y)
    first = time.perf_counter() - start
    step(loss_fn, x, y)
    eager_ms = median_ms(lambda: step(loss_fn, x, y), args.repeats)
    compiled_ms = median_ms(lambda: step(compiled, x, y), args.repeats)
    print(f"torch {torch.__version__}, {args.threads} thread(s), N = {args.n:,}, backends {softhist.backends()}")
    print(f"first compiled call (compilation included): {first:.1f} s")
    print(f"steady state, forward+backward: eager {eager_ms:.1f} ms, compiled {compiled_ms:.1f} ms ({eager_ms / compiled_ms:.2f}x)")


if __name__ == "__main__":
    main()

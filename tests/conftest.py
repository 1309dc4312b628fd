import subprocess
import sys
import textwrap

import pytest
import torch

from softhist import reference


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def reference_rows(x, edges, bandwidth, kernel, weight=None):
    """Dense reference for ``x: (rows, n)`` -> ``(rows, B)``."""
    rows = [
        reference.soft_histogram(x[r], edges, bandwidth, kernel, None if weight is None else weight[r])
        for r in range(x.shape[0])
    ]
    return torch.stack(rows)


def run_measuring_peak(body: str) -> str:
    """What ``body`` prints, run in a fresh interpreter after ``import torch, softhist`` with
    ``peak_rss()`` (this process's peak RSS in bytes) defined; skips where /proc is missing."""
    if not sys.platform.startswith("linux"):
        pytest.skip("reads peak RSS from /proc")
    script = textwrap.dedent(
        """
        import torch, softhist

        def peak_rss():  # VmHWM: unlike ru_maxrss, not inherited from the parent through fork + exec
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
        """
    ) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=True).stdout


def sweep_gradcheck(kernel) -> dict:
    """``gradcheck``/``gradgradcheck`` options for a test swept over kernels: the Gaussian's whole
    Jacobians, every other kernel's by fast mode (random projections ``u^T J v`` of the same
    Jacobians, about 20x cheaper; a 0.2% error in any one input's gradient fails both modes)."""
    return {"fast_mode": kernel != "gaussian"}


def same_at_thread_counts(run, counts=(1, 2, 3, 1)):
    """``run()`` (a list of tensors) at each of torch's thread ``counts``: every result bit-identical
    to the first, which is returned. The thread count is restored afterwards."""
    threads = torch.get_num_threads()
    try:
        results = []
        for count in counts:
            torch.set_num_threads(count)
            results.append(run())
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)
    return results[0]

import struct
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


# A process that has imported torch and softhist and forks a child per script: each script runs in
# a process of its own (its peak RSS its own, a crash its own) without paying the imports again.
_FORK_SERVER = r"""
import os, struct, sys, tempfile, traceback
import torch, softhist

requests, replies = sys.stdin.buffer, sys.stdout.buffer
while header := requests.read(8):
    script = requests.read(struct.unpack("<Q", header)[0]).decode()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            code = 0
            try:
                exec(compile(script, "<script>", "exec"), {"__name__": "__main__"})
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        texts = []
        for f in (out, err):
            f.seek(0)
            texts.append(f.read())
    replies.write(struct.pack("<iQQ", os.waitstatus_to_exitcode(status), *map(len, texts)) + b"".join(texts))
    replies.flush()
"""
_server = None


def run_in_fresh_process(script: str) -> subprocess.CompletedProcess:
    """``script`` run in a process of its own, forked from one that has imported torch and softhist
    only (as ``python -c script`` after those imports would run it): its return code (negative for
    a signal), stdout and stderr."""
    global _server
    if _server is None or _server.poll() is not None:
        _server = subprocess.Popen([sys.executable, "-c", _FORK_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    data = script.encode()
    _server.stdin.write(struct.pack("<Q", len(data)) + data)
    _server.stdin.flush()
    code, out_size, err_size = struct.unpack("<iQQ", _server.stdout.read(struct.calcsize("<iQQ")))
    out, err = _server.stdout.read(out_size).decode(), _server.stdout.read(err_size).decode()
    return subprocess.CompletedProcess(["<fork server>", script], code, out, err)


def run_measuring_peak(body: str) -> str:
    """What ``body`` prints, run in a process of its own (:func:`run_in_fresh_process`) with
    ``peak_rss()`` (that process's peak RSS in bytes) defined; skips where /proc or fork is missing."""
    if not sys.platform.startswith("linux"):
        pytest.skip("reads peak RSS from /proc")
    script = textwrap.dedent(
        """
        import torch, softhist

        def peak_rss():  # VmHWM: a forked process's starts at its RSS when forked
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
        """
    ) + textwrap.dedent(body)
    done = run_in_fresh_process(script)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


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

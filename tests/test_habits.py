"""Habits of the layers around the engine (issue 22): losses that broadcast like torch,
modules that check their arguments when built, a CLI that answers bad input in one line,
and a torch engine as accurate in float32 as the native one."""

import math

import numpy as np
import pytest
import torch

import softhist

F64 = torch.float64


# --------------------------------------------------------------------------- torch engine accuracy (item 18)


def _relative_error(value, reference):
    """Largest absolute error over the largest absolute value of the float64 result."""
    value, reference = value.detach().double(), reference.detach().double()
    return float((value - reference).abs().max() / reference.abs().max())


def _histc_and_grads(x, weight, bandwidth, bins, lo, hi, kernel, dtype):
    """Forward and the gradients (samples, weights, bandwidth) of a fixed projection, in ``dtype``."""
    xs = x.detach().to(dtype).clone().requires_grad_()
    ws = weight.detach().to(dtype).clone().requires_grad_()
    hs = torch.tensor(bandwidth, dtype=F64 if dtype == F64 else torch.float32, requires_grad=True)
    out = softhist.histc(xs, bins, lo, hi, kernel=kernel, bandwidth=hs, weight=ws, backend="torch")
    projection = torch.randn(bins, generator=torch.Generator().manual_seed(3), dtype=F64)
    (out.double() * projection).sum().backward()
    return out, xs.grad, ws.grad, hs.grad


ACCURACY_CASES = {
    # (samples, bins, lo, hi): 2**20 bins put positions near 1e6 bin widths; a narrow range far
    # from zero needs lo itself in more than float32.
    "1000-in-2^20-bins": (torch.rand(1000, generator=torch.Generator().manual_seed(0), dtype=F64) * 3 - 1, 2**20, -1.0, 2.0),
    "1000-in-narrow-range": (0.1 + 0.001 * torch.rand(1000, generator=torch.Generator().manual_seed(1), dtype=F64), 64, 0.1, 0.101),
}


@pytest.mark.parametrize("kernel", ["gaussian", "box", "bspline"])
@pytest.mark.parametrize("case", sorted(ACCURACY_CASES))
def test_torch_engine_float32_within_2e6_of_float64(case, kernel):
    x, bins, lo, hi = ACCURACY_CASES[case]
    x = x.float().double()  # the same samples in both dtypes
    weight = torch.rand(x.shape, generator=torch.Generator().manual_seed(2), dtype=F64).float().double()
    bandwidth = 0.5 * (hi - lo) / bins
    got = _histc_and_grads(x, weight, bandwidth, bins, lo, hi, kernel, torch.float32)
    want = _histc_and_grads(x, weight, bandwidth, bins, lo, hi, kernel, F64)
    for name, value, reference in zip(("histogram", "grad x", "grad weight", "grad bandwidth"), got, want):
        assert _relative_error(value, reference) <= 2e-6, name


def test_torch_engine_bfloat16_at_2_20_bins_keeps_float32_accuracy():
    x, bins, lo, hi = ACCURACY_CASES["1000-in-2^20-bins"]
    x = x.bfloat16()
    got = softhist.histc(x, bins, lo, hi, backend="torch")
    want = softhist.histc(x.double(), bins, lo, hi, backend="torch")
    assert got.dtype == torch.float32  # half-precision histograms come back in float32
    assert _relative_error(got, want) <= 2e-6


def test_torch_engine_window_positions_match_native_at_2_20_bins():
    if softhist.backends()["cpp"] is not None:
        pytest.skip(f"native engine not built: {softhist.backends()['cpp']}")
    x, bins, lo, hi = ACCURACY_CASES["1000-in-2^20-bins"]
    x = x.float()
    torch_engine = softhist.histc(x, bins, lo, hi, backend="torch")
    native = softhist.histc(x, bins, lo, hi, backend="cpp")
    assert _relative_error(torch_engine, native) <= 2e-6


# --------------------------------------------------------------------------- documented numerics (item 23)


def _cpu_engines():
    return ["torch"] + (["cpp"] if softhist.backends()["cpp"] is None else [])


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("kernel", ["gaussian", "logistic", "bspline", "box"])
def test_a_samples_bins_add_up_to_its_weight_within_one_epsilon(kernel, dtype):
    """The README's claim: telescoping sums, to one machine epsilon (not to the last bit)."""
    x = (torch.rand(5000, 1, dtype=F64) * 0.5 + 0.25).to(dtype)  # every support inside [0, 1]
    for backend in _cpu_engines():
        hist = softhist.histc(x, 64, 0, 1, kernel=kernel, dim=-1, backend=backend)  # one sample per row
        assert (hist.double().sum(-1) - 1).abs().max() <= torch.finfo(dtype).eps, backend


INF, NAN = math.inf, math.nan


@pytest.mark.parametrize("backend", _cpu_engines())
def test_infinite_samples_and_nan_weights_as_documented(backend):
    x = torch.tensor([0.1, 0.5, INF, -INF, NAN, 0.9], dtype=F64)
    finite = x[torch.isfinite(x)]
    # Inside an explicit range, infinite samples are not counted (soft and hard).
    for mode in ("soft", "hard"):
        torch.testing.assert_close(
            softhist.histc(x, 4, 0, 1, mode=mode, backend=backend), softhist.histc(finite, 4, 0, 1, mode=mode, backend=backend)
        )
    # A range from the data spans the finite samples.
    torch.testing.assert_close(softhist.histogram(x, 4, mode="hard")[1], torch.linspace(0.1, 0.9, 5, dtype=F64))
    # Hard mode, infinite outer edges: +-inf count in the outer bins, as numpy counts them.
    edges = torch.tensor([-INF, 0.0, 0.5, INF], dtype=F64)
    hard, _ = softhist.histogram(x, edges, mode="hard", backend=backend)
    np.testing.assert_array_equal(hard.numpy(), np.histogram(x.numpy(), edges.numpy())[0])
    with pytest.raises(ValueError, match="bins must be finite"):
        softhist.histogram(x, edges)
    # A NaN weight: NaN in its sample's bin (hard, as numpy) or in the bins its kernel reaches (soft).
    w = torch.tensor([1.0, NAN, 1.0, 1.0, 1.0, 1.0], dtype=F64)
    hard = softhist.histc(x, 4, 0, 1, mode="hard", weight=w, backend=backend)
    keep = np.isfinite(x.numpy())
    np.testing.assert_array_equal(hard.numpy(), np.histogram(x.numpy()[keep], 4, (0, 1), weights=w.numpy()[keep])[0])
    # Soft: the bins of its window, those its kernel's support reaches (3 and 4 here), and at most one more each side.
    soft = softhist.histc(x, 8, 0, 1, weight=w, bandwidth=0.02, backend=backend)
    nan_bins = torch.isnan(soft).nonzero().view(-1).tolist()
    assert {3, 4} <= set(nan_bins) <= {2, 3, 4, 5}
    assert nan_bins == torch.isnan(softhist.histc(x, 8, 0, 1, weight=w, bandwidth=0.02, backend="torch")).nonzero().view(-1).tolist()
    # ...and nothing where its sample is not counted.
    for position in (INF, NAN, 5.0):
        xs = x.clone()
        xs[1] = position
        for mode in ("soft", "hard"):
            assert torch.isfinite(softhist.histc(xs, 8, 0, 1, weight=w, mode=mode, backend=backend)).all(), (position, mode)

"""Bad input: a ValueError/TypeError (IndexError for dim) that names the argument and the value."""

import pytest
import torch

import softhist

X = torch.rand(10)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(bins=0), ValueError, r"bins must be a positive integer, got 0"),
        (dict(bins=-3), ValueError, r"bins must be a positive integer, got -3"),
        (dict(bins=2.5), ValueError, r"bins must be a positive integer, got 2.5"),
        (dict(bins=True), ValueError, r"bins must be a positive integer, got True"),
        (dict(min=1.0, max=0.0), ValueError, r"min must not exceed max, got min=1.0, max=0.0"),
        (dict(min=float("nan"), max=1.0), ValueError, r"min\) must be finite, got nan"),
        (dict(min=0.0, max=float("inf")), ValueError, r"max\) must be finite, got inf"),
        (dict(min="0", max=1.0), TypeError, r"min\) must be a real number, got '0'"),
        (dict(bandwidth=0.0), ValueError, r"bandwidth must be positive and finite, got 0.0"),
        (dict(bandwidth=-0.1), ValueError, r"bandwidth must be positive and finite, got -0.1"),
        (dict(bandwidth=float("inf")), ValueError, r"bandwidth must be finite, got inf"),
        (dict(bandwidth=torch.tensor(-1.0)), ValueError, r"bandwidth must be positive and finite, got -1.0"),
        (dict(bandwidth=torch.tensor(float("nan"))), ValueError, r"bandwidth must be positive and finite, got nan"),
        (dict(bandwidth=torch.ones(2, 2)), ValueError, r"bandwidth must be a float or a 0-d tensor, got shape \(2, 2\)"),
        (dict(kernel="laplace"), ValueError, r"kernel must be one of \['box', 'bspline', .*\], got 'laplace'"),
        (dict(mode="fuzzy"), ValueError, r"mode must be one of \['soft', 'hard', 'straight_through'\], got 'fuzzy'"),
        (dict(backend="cuda"), ValueError, r"backend must be one of \['auto', 'torch', 'cpp', 'triton'\], got 'cuda'"),
        (dict(weight=torch.rand(9)), ValueError, r"weight must have the same shape as the input, \(10,\), got \(9,\)"),
        (dict(weight=[1.0] * 10), TypeError, r"weight must be a torch.Tensor or None, got list"),
        (dict(weight=torch.ones(10, dtype=torch.int64)), TypeError, r"weight must be floating point, got dtype torch.int64"),
        (dict(dim=1), IndexError, r"dim 1 is out of range for an input with 1 dimensions"),
        (dict(dim=(0, 0)), ValueError, r"dim must not repeat a dimension, got \(0, 0\)"),
        (dict(dim="0"), TypeError, r"dim must be an int or a sequence of ints"),
    ],
)
def test_histc_rejects(kwargs, error, match):
    with pytest.raises(error, match=match):
        softhist.histc(X, **{"min": 0.0, "max": 1.0, **kwargs})


def test_triton_backend_never_falls_back():
    # A CPU tensor outside Triton's interpreter: the fused kernels cannot run, and asking for them says why.
    with pytest.raises(ValueError, match=r"backend='triton' (cannot run here: the input is on cpu|needs the triton package)"):
        softhist.histc(X, 4, 0.0, 1.0, backend="triton")
    with pytest.raises(ValueError, match=r"backend='triton'"):
        softhist.histogramdd(torch.rand(5, 2), 3, backend="triton")


def test_histc_rejects_non_tensor_and_integer_soft_input():
    with pytest.raises(TypeError, match=r"input must be a torch.Tensor, got list"):
        softhist.histc([0.1, 0.2])
    with pytest.raises(TypeError, match=r"input must be floating point for mode='soft' \(got dtype torch.int64\)"):
        softhist.histc(torch.arange(5), 5, 0, 5)
    with pytest.raises(TypeError, match=r"input must be real, got dtype torch.complex64"):
        softhist.histc(torch.zeros(3, dtype=torch.complex64), mode="hard")


@pytest.mark.parametrize(
    "bins,kwargs,error,match",
    [
        (torch.tensor([0.0, 1.0, 0.5]), {}, ValueError, r"bins must be strictly increasing, got \[0.0, 1.0, 0.5\]"),
        (torch.tensor([0.0, 0.0, 1.0]), {}, ValueError, r"bins must be strictly increasing"),
        (torch.tensor([0.0, float("inf")]), {}, ValueError, r"bins must be finite"),
        (torch.tensor([[0.0, 1.0]]), {}, ValueError, r"bins as edges must be 1d with at least 2 entries, got shape \(1, 2\)"),
        (torch.tensor([0.5]), {}, ValueError, r"at least 2 entries, got shape \(1,\)"),
        (torch.tensor([0, 1, 2]), {}, TypeError, r"bins as edges must be floating point, got dtype torch.int64"),
        (torch.tensor([0.0, 1.0]), dict(range=(0, 1)), ValueError, r"range must be None when bins is an edges tensor"),
        (5, dict(range=(1.0, 0.0)), ValueError, r"min must not exceed max, got min=1.0, max=0.0"),
        (5, dict(range=(0.0,)), ValueError, r"range must be a \(min, max\) pair, got \(0.0,\)"),
        (5, dict(range=(0.0, float("nan"))), ValueError, r"range \(max\) must be finite, got nan"),
        (0, {}, ValueError, r"bins must be a positive integer, got 0"),
    ],
)
def test_histogram_rejects(bins, kwargs, error, match):
    with pytest.raises(error, match=match):
        softhist.histogram(X, bins, **kwargs)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(mode=["soft", "straight_through"]), ValueError, r"mode cannot mix 'soft' and 'straight_through' axes, got \['soft', 'straight_through'\]"),
        (dict(mode=["soft", "hard", "soft"]), ValueError, r"mode must be one value or one per axis \(D = 2\), got 3"),
        (dict(mode=["soft", "blurry"]), ValueError, r"mode must be one of \['soft', 'hard', 'straight_through'\], got 'blurry'"),
        (dict(mode=[]), ValueError, r"mode must be a mode or one mode per axis, got \[\]"),
        (dict(kernel=["gaussian"]), ValueError, r"kernel must be one value or one per axis \(D = 2\), got 1"),
        (dict(kernel=["gaussian", "laplace"]), ValueError, r"kernel must be one of \[.*'bspline0'.*\], got 'laplace'"),
    ],
)
def test_per_axis_options_rejected(kwargs, error, match):
    with pytest.raises(error, match=match):
        softhist.histogramdd(torch.rand(10, 2), 4, **kwargs)


def test_integer_input_needs_every_axis_hard():
    ints = torch.randint(0, 5, (20, 2))
    assert softhist.histogramdd(ints, 5, range=[(0, 5)] * 2, mode=["hard", "hard"])[0].sum() == 20
    with pytest.raises(TypeError, match=r"input must be floating point for mode='soft'"):
        softhist.histogramdd(ints, 5, range=[(0, 5)] * 2, mode=["hard", "soft"])

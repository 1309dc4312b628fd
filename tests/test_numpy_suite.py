"""numpy's own histogram tests, run against softhist's hard mode.

numpy ships ``numpy/lib/tests/test_histograms.py``. It is loaded here as a fresh module in
which ``histogram``, ``histogramdd`` and ``np.histogram`` / ``np.histogramdd`` /
``np.histogram2d`` are thin shims: they convert numpy arrays to tensors the way numpy reads
its arguments, call softhist with ``mode="hard"`` and convert the results back. Everything
else the tests use (``np.linspace``, ``histogram_bin_edges``, the asserts) stays numpy's.

Softhist's own choices the shims adapt to (not numpy behaviour they hide):

* weights must be floating point in softhist (they are differentiable): integer weights are
  passed as float64, which holds their sums exactly below 2**53;
* lists of 0-d arrays, big-endian and longdouble arrays are converted as ``np.asarray``
  reads them (native byte order, longdouble as float64).

Out of scope, and why, is the list below: each test there is skipped with its reason.
"""

import importlib.util
import pathlib

import numpy as np
import pytest
import torch

import softhist

SOURCE = pathlib.Path(np.__file__).parent / "lib" / "tests" / "test_histograms.py"


def _tensor(a) -> torch.Tensor:
    a = np.asarray(a)
    if a.dtype.byteorder not in "=|":
        a = a.astype(a.dtype.newbyteorder("="))
    if a.dtype == np.longdouble:
        a = a.astype(np.float64)
    return torch.from_numpy(np.array(a))


def _bins(bins):
    """A bin count stays an int; an array of edges becomes a tensor; lists of edges pass as lists."""
    if isinstance(bins, np.integer):
        return int(bins)
    if isinstance(bins, np.ndarray):
        return _tensor(bins)
    return bins


def _range(range_):
    return None if range_ is None else tuple(float(v) for v in range_)


def _weights(weights, shape=None):
    if weights is None:
        return None
    w = _tensor(weights)
    return w if w.is_floating_point() else w.to(torch.float64)


def histogram(a, bins=10, range=None, density=None, weights=None):
    hist, edges = softhist.histogram(
        _tensor(a), _bins(bins), range=_range(range), weight=_weights(weights), density=bool(density), mode="hard"
    )
    return hist.numpy(), edges.numpy()


def _sample(sample):
    """numpy's reading of a sample: an (N, D) array, or a sequence of D arrays of N values."""
    if not (isinstance(sample, np.ndarray) and sample.ndim == 2):  # numpy: `N, D = sample.shape` or this
        sample = np.atleast_2d(sample).T
    return _tensor(sample)


def histogramdd(sample, bins=10, range=None, density=None, weights=None):
    x = _sample(sample)
    if isinstance(bins, (list, tuple)):
        bins = [_bins(b) for b in bins]
    else:
        bins = _bins(bins)
    ranges = None if range is None else [None if r is None else _range(r) for r in range]
    hist, edges = softhist.histogramdd(x, bins, range=ranges, weight=_weights(weights), density=bool(density), mode="hard")
    return hist.numpy(), [e.numpy() for e in edges]


def histogram2d(x, y, bins=10, range=None, density=None, weights=None):
    if isinstance(bins, (list, tuple)):
        bins = [_bins(b) for b in bins] if len(bins) == 2 else bins
    else:
        bins = _bins(bins)
    ranges = None if range is None else [None if r is None else _range(r) for r in range]
    hist, xedges, yedges = softhist.histogram2d(
        _tensor(x), _tensor(y), bins, range=ranges, weight=_weights(weights), density=bool(density), mode="hard"
    )
    return hist.numpy(), xedges.numpy(), yedges.numpy()


class _NumpyWithSofthist:
    """``np`` inside the suite: numpy, with its histograms replaced by the shims."""

    histogram = staticmethod(histogram)
    histogramdd = staticmethod(histogramdd)
    histogram2d = staticmethod(histogram2d)

    def __getattr__(self, name):
        return getattr(np, name)


# Out of scope: (class, test) -> why. Everything else in numpy's file runs and must pass.
OUT_OF_SCOPE = {
    # Result dtypes: softhist returns floating counts, as torch.histc and torch.histogram do.
    ("TestHistogram", "test_type"): "counts are floating tensors (torch.histc's convention), not integer arrays",
    # numpy's warning on bool input; softhist counts bool input as 0/1 without one.
    ("TestHistogram", "test_bool_conversion"): "numpy-specific RuntimeWarning on bool input",
    # Object arrays: complex and Decimal weights.
    ("TestHistogram", "test_exotic_weights"): "complex and Decimal (object array) weights",
    # A float bin count is a ValueError in softhist (one rule for every bins that is not a positive int).
    ("TestHistogram", "test_error_binnum_type"): "bins=2.4 raises ValueError, not TypeError",
    # numpy rejects an infinite sample when it infers the range; softhist ignores non-finite samples, as torch.histc.
    ("TestHistogram", "test_object_array_of_0d"): "infinite samples are ignored when inferring the range, as torch.histc",
    # String bin estimators ('auto', 'fd', ...).
    ("TestHistogram", "test_some_nan_values"): "string bin estimator bins='auto'",
    ("TestHistogram", "test_histogram_bin_edges"): "string bin estimator bins='auto' (and numpy's histogram_bin_edges)",
    ("TestHistogram", "test_gh_28400"): "string bin estimator bins='auto'",
    # datetime64 / timedelta64 samples.
    ("TestHistogram", "test_datetime"): "datetime64 and timedelta64 samples",
    # A range given as numpy arrays of a wider dtype promotes numpy's edges (and longdouble);
    # softhist's range is Python numbers and its edges follow the input's dtype.
    ("TestHistogram", "test_precision"): "range as arrays of a wider dtype (float32/longdouble) promoting the edges",
    # int64 values past 2**53 compared exactly: softhist compares integer samples as float64.
    ("TestHistogramdd", "test_large_integers"): "exact int64 comparisons past 2**53 (softhist compares in float64)",
}
# The whole class: numpy's bin-count estimators, selected by strings.
OUT_OF_SCOPE_CLASSES = {"TestHistogramOptimBinNums": "string bin estimators ('auto', 'fd', 'scott', 'stone', ...)"}


def _load_suite():
    assert SOURCE.exists(), f"numpy's test_histograms.py is missing from {SOURCE.parent}"
    spec = importlib.util.spec_from_file_location("numpy_test_histograms_on_softhist", SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.np = _NumpyWithSofthist()
    module.histogram, module.histogramdd = histogram, histogramdd
    for (cls, name), reason in OUT_OF_SCOPE.items():
        owner = getattr(module, cls)
        setattr(owner, name, pytest.mark.skip(reason=f"out of scope: {reason}")(getattr(owner, name)))
    for cls, reason in OUT_OF_SCOPE_CLASSES.items():
        pytest.mark.skip(reason=f"out of scope: {reason}")(getattr(module, cls))
    return module


_suite = _load_suite()
TestHistogram = _suite.TestHistogram
TestHistogramdd = _suite.TestHistogramdd
TestHistogramOptimBinNums = _suite.TestHistogramOptimBinNums


def test_the_shims_reach_softhist():
    # The suite above must exercise softhist, not numpy: a sample softhist rejects in hard mode
    # (complex input) fails through the shim where numpy would count it.
    with pytest.raises(TypeError, match=r"input must be real"):
        _suite.np.histogram(np.array([1j, 2j]))
    assert _suite.histogram is histogram and _suite.np.histogram2d is histogram2d

"""softhist: differentiable histograms for PyTorch."""

from . import applications, nn, reference
from .applications import calibration_error, hellinger
from .histogram import backends, histc, histogram, histogram2d, histogramdd, local_histogram
from .kernels import KERNELS, Kernel
from .losses import entropy, histogram_matching_loss, js_divergence, kl_divergence, mutual_information, wasserstein
from .registration import local_mutual_information, mattes_mutual_information
from .applications import rgb_uv_histogram

__version__ = "0.1.0"

__all__ = [
    "KERNELS",
    "Kernel",
    "__version__",
    "applications",
    "backends",
    "calibration_error",
    "entropy",
    "hellinger",
    "histc",
    "histogram",
    "histogram2d",
    "histogram_matching_loss",
    "histogramdd",
    "js_divergence",
    "kl_divergence",
    "local_histogram",
    "local_mutual_information",
    "mattes_mutual_information",
    "mutual_information",
    "nn",
    "reference",
    "rgb_uv_histogram",
    "wasserstein",
]

"""softhist: differentiable histograms for PyTorch."""

from .histogram import histc, histogram, histogram2d, histogramdd
from .kernels import KERNELS

__version__ = "0.1.0"

__all__ = ["KERNELS", "__version__", "histc", "histogram", "histogram2d", "histogramdd"]

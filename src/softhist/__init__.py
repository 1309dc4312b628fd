"""softhist: differentiable histograms for PyTorch."""

from .histogram import histc, histogram
from .kernels import KERNELS

__version__ = "0.1.0"

__all__ = ["KERNELS", "__version__", "histc", "histogram"]

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

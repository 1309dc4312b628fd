"""Hard mode: bit-for-bit parity with torch.histc and numpy.histogram."""

import numpy as np
import pytest
import torch

import softhist


def _adversarial(dtype=torch.float32):
    """Uniform data plus exact edges, the range ends, near-ties, duplicates and non-finite values."""
    lo, hi, bins = -1.0, 3.0, 1000
    edges64 = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    ties = torch.cat([edges64, edges64.to(dtype).double()]).to(dtype)
    near = torch.cat([torch.nextafter(ties, torch.full_like(ties, -10)), torch.nextafter(ties, torch.full_like(ties, 10))])
    spread = torch.rand(20011, dtype=torch.float64).mul(4.6).sub(1.3).to(dtype)
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), lo, hi, hi, lo - 1e-3, hi + 1e-3], dtype=dtype)
    return torch.cat([spread, ties, near, special]), (lo, hi, bins)


def _torch_histc_unsaturated(x, bins, lo, hi):
    """torch.histc summed over chunks of 200 samples, so its float16/bfloat16 counters never saturate;
    in the dtype softhist returns counts in (float32 for half-precision input)."""
    parts = [torch.histc(chunk, bins, lo, hi).double() for chunk in x.split(200)]
    return torch.stack(parts).sum(0).to(_count_dtype(x.dtype))


def _count_dtype(dtype):
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_histc_equals_torch_histc_on_ties(dtype):
    x, (lo, hi, bins) = _adversarial(dtype)
    for b, (a, z) in [(bins, (lo, hi)), (7, (0.1, 0.9)), (1, (0.0, 1.0)), (256, (-1.3, 3.3))]:
        ours = softhist.histc(x, b, a, z, mode="hard")
        assert ours.dtype == _count_dtype(dtype)
        torch.testing.assert_close(ours, _torch_histc_unsaturated(x, b, a, z), rtol=0, atol=0)
        if dtype in (torch.float32, torch.float64):
            torch.testing.assert_close(ours, torch.histc(x, b, a, z), rtol=0, atol=0)


def test_histc_min_equals_max_uses_finite_data_range():
    x = torch.randn(5003)
    torch.testing.assert_close(softhist.histc(x, 13, mode="hard"), torch.histc(x, 13), rtol=0, atol=0)
    torch.testing.assert_close(softhist.histc(x, 13, 2.0, 2.0, mode="hard"), torch.histc(x, 13, 2.0, 2.0), rtol=0, atol=0)
    with_nan = torch.cat([x, torch.tensor([float("nan"), float("inf")])])
    torch.testing.assert_close(softhist.histc(with_nan, 13, mode="hard"), torch.histc(x, 13), rtol=0, atol=0)
    constant = torch.full((9,), 2.5)  # a single value: the range widens to [v - 1, v + 1]
    torch.testing.assert_close(softhist.histc(constant, 4, mode="hard"), torch.histc(constant, 4), rtol=0, atol=0)


def test_histc_empty_input_gives_zeros():
    out = softhist.histc(torch.empty(0), 5, mode="hard")
    torch.testing.assert_close(out, torch.histc(torch.empty(0), 5), rtol=0, atol=0)
    torch.testing.assert_close(softhist.histc(torch.empty(0), 5, 0, 1), torch.zeros(5), rtol=0, atol=0)


def test_histc_weighted_and_batched_match_per_row_histc():
    x = torch.rand(3, 5, 63)
    w = torch.rand(3, 5, 63)
    ours = softhist.histc(x, 10, 0, 1, mode="hard", weight=w, dim=-1)
    assert ours.shape == (3, 5, 10)
    for i in range(3):
        for j in range(5):
            np.testing.assert_allclose(ours[i, j].numpy(), np.histogram(x[i, j].numpy(), 10, (0.0, 1.0), weights=w[i, j].numpy())[0], rtol=1e-6)
    hard = softhist.histc(x, 10, 0, 1, mode="hard", dim=(0, 2))
    for j in range(5):
        torch.testing.assert_close(hard[j], torch.histc(x[:, j], 10, 0, 1), rtol=0, atol=0)


def test_counts_stay_exact_past_2_pow_24():
    # A float32 counter stops at 2**24 (2**24 + 1 rounds back down); n is representable.
    n = (1 << 25) + 8
    x = torch.full((n,), 0.5)
    assert softhist.histc(x, 1, 0, 1, mode="hard").item() == n
    assert softhist.histogram(x, 1, range=(0, 1), mode="hard")[0].item() == n


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bins,range_", [(10, None), (1000, (-1.0, 3.0)), (7, (0.1, 0.9)), (1, None), (3, (0.5, 0.5))])
def test_histogram_equals_numpy(dtype, bins, range_):
    x, _ = _adversarial(dtype)
    finite = x[torch.isfinite(x)]
    data = finite if range_ is None else x  # numpy rejects non-finite data when it picks the range
    hist, edges = softhist.histogram(data, bins, range=range_, mode="hard")
    ref_hist, ref_edges = np.histogram(data.numpy(), bins, range=range_)
    assert edges.dtype == dtype and hist.dtype == dtype
    np.testing.assert_array_equal(edges.numpy(), ref_edges)
    np.testing.assert_array_equal(hist.numpy(), ref_hist.astype(hist.numpy().dtype))
    # NaN and inf are ignored when picking the range too.
    if range_ is None:
        np.testing.assert_array_equal(softhist.histogram(x, bins, mode="hard")[0].numpy(), hist.numpy())


def test_histogram_weights_and_density_equal_numpy():
    x, (lo, hi, _) = _adversarial(torch.float64)
    w = torch.rand_like(x)
    for bins in (17, torch.tensor([-1.0, -0.5, 0.0, 0.1, 2.0, 3.0], dtype=torch.float64)):
        ours, _ = softhist.histogram(x, bins, range=None if isinstance(bins, torch.Tensor) else (lo, hi), weight=w, mode="hard")
        ref, _ = np.histogram(x.numpy(), bins.numpy() if isinstance(bins, torch.Tensor) else bins, range=None if isinstance(bins, torch.Tensor) else (lo, hi), weights=w.numpy())
        np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-12)
        dens, _ = softhist.histogram(x, bins, range=None if isinstance(bins, torch.Tensor) else (lo, hi), density=True, mode="hard")
        ref_dens, _ = np.histogram(x.numpy(), bins.numpy() if isinstance(bins, torch.Tensor) else bins, range=None if isinstance(bins, torch.Tensor) else (lo, hi), density=True)
        np.testing.assert_array_equal(dens.numpy(), ref_dens)


def test_histogram_float32_density_equals_numpy_bit_for_bit():
    x = torch.rand(40009) * 3
    dens, edges = softhist.histogram(x, 33, density=True, mode="hard")
    ref, ref_edges = np.histogram(x.numpy(), 33, density=True)
    np.testing.assert_array_equal(edges.numpy(), ref_edges)
    np.testing.assert_array_equal(dens.numpy(), ref.astype(np.float32))


def test_histogram_non_uniform_edges_ties_equal_numpy():
    edges = torch.tensor([0.0, 0.1, 0.3, 0.35, 0.9, 1.0])
    x = torch.cat([edges, torch.rand(999), torch.nextafter(edges, torch.zeros_like(edges))])
    hist, out_edges = softhist.histogram(x, edges, mode="hard")
    assert out_edges is not edges and torch.equal(out_edges, edges)
    np.testing.assert_array_equal(hist.numpy(), np.histogram(x.numpy(), edges.numpy())[0])


def test_integer_input_in_hard_mode_equals_numpy():
    x = torch.randint(-5, 20, (1001,))
    hist, edges = softhist.histogram(x, 6, mode="hard")
    ref, ref_edges = np.histogram(x.numpy(), 6)
    np.testing.assert_array_equal(hist.numpy(), ref)
    np.testing.assert_array_equal(edges.numpy(), ref_edges.astype(np.float32))


def test_hard_mode_is_differentiable_in_weight():
    x = torch.tensor([0.1, 0.2, 0.8])
    w = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    h = softhist.histc(x, 2, 0, 1, weight=w, mode="hard")
    h.backward(torch.tensor([10.0, 100.0]))
    assert w.grad.tolist() == [10.0, 10.0, 100.0]


def test_straight_through_forward_is_exact_and_gradient_is_soft():
    x = (torch.rand(2, 4001, dtype=torch.float64) * 1.2 - 0.1).requires_grad_()
    st = softhist.histc(x, 9, 0, 1, mode="straight_through", dim=1)
    torch.testing.assert_close(st.detach(), softhist.histc(x.detach(), 9, 0, 1, mode="hard", dim=1), rtol=0, atol=0)
    g = torch.randn(2, 9, dtype=torch.float64)
    (st_grad,) = torch.autograd.grad(st, x, g)
    (soft_grad,) = torch.autograd.grad(softhist.histc(x, 9, 0, 1, dim=1), x, g)
    torch.testing.assert_close(st_grad, soft_grad)
    assert st_grad.abs().sum() > 0
    hist, _ = softhist.histogram(x[0], 9, range=(0, 1), mode="straight_through")
    np.testing.assert_array_equal(hist.detach().numpy(), np.histogram(x[0].detach().numpy(), 9, (0, 1))[0])

"""softhist as PyTorch-native ops: torch.compile(fullgraph=True), torch.func transforms, exact
second derivatives (gradgradcheck), meta tensors."""

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import softhist
from conftest import sweep_gradcheck
from softhist.kernels import KERNELS

SMOOTH_KERNELS = sorted(k for k in KERNELS if KERNELS[k].pdf_slope < float("inf"))  # all but the box


def rand(*shape, lo=0.0, hi=1.0, dtype=torch.float64):
    return torch.rand(*shape, dtype=dtype) * (hi - lo) + lo


# --------------------------------------------------------------------------- torch.compile


def every_function(x, y, w, edges, bandwidth):
    """Each public function once, with ranges given as numbers."""
    hist = softhist.histc(x, 16, 0, 1, weight=w, bandwidth=bandwidth)
    hist_e, _ = softhist.histogram(x, edges, density=True)
    joint, _ = softhist.histogramdd(torch.stack([x, y], -1), [8, edges], range=[(0, 1), None])
    joint2, _, _ = softhist.histogram2d(x, y, 6, range=[(0, 1), (0, 1)], kernel=["gaussian", "bspline"])
    counts = softhist.histc(x, 16, 0, 1, mode="hard")
    st = softhist.histc(x, 16, 0, 1, mode="straight_through")
    mi = softhist.mutual_information(x, y, 8, range=(0, 1))
    matching = softhist.histogram_matching_loss(x, y, 12, range=(-0.5, 1.5))
    stats = softhist.entropy(hist) + softhist.kl_divergence(hist, st + 1) + softhist.js_divergence(hist, st)
    return hist, hist_e, joint, joint2, counts, st, mi, matching, stats


def test_fullgraph_compile_of_every_function_equals_eager():
    torch._dynamo.reset()
    x, y = rand(3000), rand(3000)
    w, edges = rand(3000, lo=0.5, hi=1.5), torch.tensor([0.0, 0.2, 0.3, 0.7, 1.0])
    x, w = x.float().detach().requires_grad_(), w.float()
    y, edges = y.float(), edges.float()
    bandwidth = torch.tensor(0.04, requires_grad=True)
    compiled = torch.compile(every_function, fullgraph=True)
    got, want = compiled(x, y, w, edges, bandwidth), every_function(x, y, w, edges, bandwidth)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    grads_got = torch.autograd.grad(sum(t.sum() for t in got if t.requires_grad), [x, bandwidth])
    grads_want = torch.autograd.grad(sum(t.sum() for t in want if t.requires_grad), [x, bandwidth])
    for a, b in zip(grads_got, grads_want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    other = compiled(rand(4100).float(), rand(4100).float(), rand(4100).float(), edges, bandwidth)  # another size
    assert other[0].shape == (16,)


def test_fullgraph_compiled_training_step_equals_eager():
    torch._dynamo.reset()
    target = torch.randn(2000) * 0.5 + 1.0
    losses = {}
    for name in ("eager", "compiled"):
        torch.manual_seed(0)
        layer = softhist.nn.SoftHistogram(24, (-3.0, 3.0), learnable_edges=True, learnable_bandwidth=True)
        mi = softhist.nn.MutualInformationLoss(num_bins=8, range=(-3.0, 3.0))
        samples = torch.randn(2000, requires_grad=True)
        opt = torch.optim.SGD([samples, *layer.parameters()], lr=0.05)

        def step(samples):
            hist = layer(samples)
            reference = layer(target)
            return (hist - reference).pow(2).mean() + mi(samples.view(1, 1, 40, 50), target.view(1, 1, 40, 50))

        run = torch.compile(step, fullgraph=True, backend="aot_eager") if name == "compiled" else step  # one inductor test above
        history = []
        for _ in range(3):
            loss = run(samples)
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(loss.detach())
        losses[name] = (torch.stack(history), samples.detach().clone())
    torch.testing.assert_close(losses["compiled"][0], losses["eager"][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(losses["compiled"][1], losses["eager"][1], rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- torch.func


def test_vmap_equals_dim_batching_soft_and_hard():
    batch = rand(5, 400)
    for mode in ("soft", "hard", "straight_through"):
        got = torch.func.vmap(lambda t: softhist.histc(t, 12, 0, 1, mode=mode))(batch)
        want = softhist.histc(batch, 12, 0, 1, mode=mode, dim=1)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    xy = rand(3, 200, 2)
    got = torch.func.vmap(lambda t: softhist.histogramdd(t, 5, range=[(0, 1), (0, 1)])[0])(xy)
    torch.testing.assert_close(got, softhist.histogramdd(xy, 5, range=[(0, 1), (0, 1)])[0], rtol=1e-12, atol=1e-12)


def test_vmap_over_bandwidths_and_weights():
    x, weights, widths = rand(300), rand(4, 300), torch.tensor([0.02, 0.05, 0.1, 0.2], dtype=torch.float64)
    got = torch.func.vmap(lambda w, h: softhist.histc(x, 9, 0, 1, weight=w, bandwidth=h))(weights, widths)
    want = torch.stack([softhist.histc(x, 9, 0, 1, weight=w, bandwidth=h) for w, h in zip(weights, widths)])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_func_grad_jacrev_jacfwd_equal_autograd():
    x, edges = rand(60), torch.tensor([0.0, 0.25, 0.4, 0.8, 1.0], dtype=torch.float64)

    def fn(x, edges):
        return softhist.histogram(x, edges, bandwidth=0.07)[0]

    jac_x, jac_e = torch.autograd.functional.jacobian(fn, (x, edges))
    for transform in (torch.func.jacrev, torch.func.jacfwd):
        got_x, got_e = transform(fn, argnums=(0, 1))(x, edges)
        torch.testing.assert_close(got_x, jac_x, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(got_e, jac_e, rtol=1e-10, atol=1e-10)
    scalar = lambda x: softhist.mutual_information(x, x**2, 6, range=(0, 1))  # noqa: E731
    leaf = x.clone().requires_grad_()
    scalar(leaf).backward()
    torch.testing.assert_close(torch.func.grad(scalar)(x), leaf.grad, rtol=1e-10, atol=1e-10)
    per_sample = torch.func.vmap(torch.func.grad(lambda t: softhist.histc(t, 5, 0, 1, bandwidth=0.1).pow(2).sum()))(rand(3, 50))
    assert per_sample.shape == (3, 50) and torch.isfinite(per_sample).all()


# --------------------------------------------------------------------------- second derivatives


@pytest.mark.parametrize("kernel", SMOOTH_KERNELS)
def test_gradgradcheck_samples_weights_bandwidth_edges(kernel):
    x = rand(25, lo=-0.2, hi=1.2).requires_grad_()
    w = rand(25, lo=0.5, hi=1.5).requires_grad_()
    edges = torch.tensor([0.0, 0.2, 0.45, 0.7, 1.0], dtype=torch.float64, requires_grad=True)
    h = torch.tensor(0.11, dtype=torch.float64, requires_grad=True)

    def fn(x, w, edges, h):
        return softhist.histogram(x, edges, weight=w, kernel=kernel, bandwidth=h)[0]

    assert gradcheck(fn, (x, w, edges, h), **sweep_gradcheck(kernel))
    assert gradgradcheck(fn, (x, w, edges, h), **sweep_gradcheck(kernel))


@pytest.mark.parametrize("kernel", ["gaussian", "bspline"])
def test_gradgradcheck_joint_histogram_and_mutual_information(kernel):
    xy = rand(20, 2).requires_grad_()
    h = torch.tensor([0.12, 0.09], dtype=torch.float64, requires_grad=True)

    def joint(xy, h):
        return softhist.histogramdd(xy, [4, 3], range=[(0, 1), (0, 1)], kernel=kernel, bandwidth=h)[0]

    def mi(xy, h):
        return softhist.mutual_information(xy[:, 0], xy[:, 1], 4, range=(0, 1), kernel=kernel, bandwidth=h)

    assert gradgradcheck(joint, (xy, h), **sweep_gradcheck(kernel))
    assert gradgradcheck(mi, (xy, h), **sweep_gradcheck(kernel))


def test_second_derivative_of_entropy_matches_finite_differences():
    x = rand(200, dtype=torch.float64).requires_grad_()

    def entropy(x):
        return softhist.entropy(softhist.histc(x, 8, 0, 1, bandwidth=0.06))

    (grad,) = torch.autograd.grad(entropy(x), x, create_graph=True)
    direction = torch.randn(200, dtype=torch.float64)
    (hvp,) = torch.autograd.grad(grad @ direction, x)
    eps = 1e-5
    numeric = (torch.autograd.grad(entropy(x + eps * direction), x)[0] - torch.autograd.grad(entropy(x - eps * direction), x)[0]) / (2 * eps)
    torch.testing.assert_close(hvp, numeric, rtol=1e-5, atol=1e-6)


def test_box_kernel_has_no_second_derivative():
    x = rand(30).requires_grad_()
    (grad,) = torch.autograd.grad(softhist.histc(x, 5, 0, 1, kernel="box").pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="'box' kernel has no second derivative"):
        torch.autograd.grad(grad.sum(), x)


# --------------------------------------------------------------------------- meta tensors


def test_meta_outputs_have_the_right_shapes():
    x, y = torch.empty(2, 1000, device="meta"), torch.empty(2, 1000, device="meta")
    assert softhist.histc(x, 7, 0, 1).shape == (7,)
    assert softhist.histc(x, 7, 0, 1, dim=1, mode="hard").shape == (2, 7)
    hist, edges = softhist.histogram(x, 5, range=(0, 1), dim=-1)
    assert hist.shape == (2, 5) and edges.shape == (6,) and hist.device.type == "meta"
    assert softhist.histogramdd(torch.stack([x, y], -1), [4, 6], range=[(0, 1), (0, 2)])[0].shape == (2, 4, 6)
    assert softhist.histogram2d(x, y, 3, range=[(0, 1), (0, 1)])[0].shape == (2, 3, 3)
    assert softhist.mutual_information(x, y, 8, range=(0, 1)).shape == (2,)
    assert softhist.histogram_matching_loss(x, y, 8, range=(0, 1)).shape == (2,)


def test_meta_with_a_data_range_raises_clearly():
    x = torch.empty(100, device="meta")
    with pytest.raises(ValueError, match="data's range cannot be read from a meta tensor"):
        softhist.histc(x, 7)
    with pytest.raises(ValueError, match="data's range cannot be read from a meta tensor"):
        softhist.histogram(x, 7)

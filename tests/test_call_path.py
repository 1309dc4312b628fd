"""The call path from the public functions to the engines: one description, one dispatch, checks
once, and what users bring from numpy, torch and scipy."""

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torch._dynamo as dynamo
import torch.autograd.forward_ad as fwAD

import softhist
from softhist import _ops, _plan
from softhist.kernels import KERNELS

F64 = torch.float64


# --------------------------------------------------------------------------- the description


def test_the_plan_round_trips_through_its_text_by_name():
    binning = _plan.Binning(
        (KERNELS["gaussian"], KERNELS["box"]), "straight_through",
        (_plan.Axis(7, 0.1 / 3, (-0.1, 1.0 / 3)), _plan.Axis(3, 1e-300)), "edges", (False, True),
    )
    assert _plan.binning_from_spec(binning.spec) == binning
    assert "kernel:gaussian" in binning.spec and "bins:7" in binning.spec and "hard:1" in binning.spec
    # The applications' options: membership and per-bin bandwidths per axis, normalization per call.
    options = _plan.Binning(
        (KERNELS["cauchy"], KERNELS["box"]), "soft",
        (_plan.Axis(7, 0.1, (0.0, 1.0), "center", True), _plan.Axis(3, 0.2)), "edges", (False, False), normalize_samples=True,
    )
    assert _plan.binning_from_spec(options.spec) == options
    assert "membership:center" in options.spec and "per_bin:1" in options.spec and "normalize_samples=1" in options.spec


@pytest.mark.parametrize("mode", ["soft", "straight_through", "hard"])
def test_the_eager_path_and_the_op_give_identical_results_and_gradients(mode):
    x = torch.rand(3, 700, requires_grad=True)
    w = torch.rand(3, 700, requires_grad=True)

    def run(x, w):
        return softhist.histc(x, 33, 0, 1, weight=w, dim=1, mode=mode)

    eager = run(x, w)
    grads = torch.autograd.grad(eager.square().sum(), (x, w), allow_unused=True, materialize_grads=True)
    # Under a transform the call goes through the torch.library op instead.
    op_out, vjp = torch.func.vjp(run, x, w)
    op_grads = vjp(2 * op_out)
    assert torch.equal(eager, op_out)
    for a, b in zip(grads, op_grads):  # the transform's backward is the differentiable formula
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))



@pytest.mark.parametrize("mode", ["soft", "straight_through", "hard"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.int64])
def test_the_prepared_histc_call_equals_the_general_path(mode, dtype):
    """``histc`` on a whole tensor with plain arguments is prepared once per arguments; naming
    ``dim`` takes the general path: the same engine, so the same bits, gradients included."""
    if dtype == torch.int64 and mode != "hard":
        pytest.skip("integer samples are for hard counts")
    base = torch.rand(4, 250, generator=torch.Generator().manual_seed(1)) * 1.2 - 0.1
    x = (base * 10).to(dtype) if dtype == torch.int64 else base.to(dtype).requires_grad_(mode != "hard")
    lo, hi = (0, 10) if dtype == torch.int64 else (0.0, 1.0)
    for _ in range(2):  # the second call reads the prepared description
        fast = softhist.histc(x, 17, lo, hi, mode=mode, bandwidth=0.04 if mode != "hard" else None)
        general = softhist.histc(x, 17, lo, hi, mode=mode, bandwidth=0.04 if mode != "hard" else None, dim=(0, 1))
        assert fast.dtype == general.dtype and torch.equal(fast, general)
        if x.requires_grad:
            cot = torch.linspace(-1, 1, 17, dtype=fast.dtype)
            (a,) = torch.autograd.grad((fast * cot).sum(), x)
            (b,) = torch.autograd.grad((general * cot).sum(), x)
            assert torch.equal(a, b) and a.shape == x.shape
    assert fast.grad_fn is None or type(fast.grad_fn).__name__ == "_EagerSoftBackward"  # one node, no view nodes


def test_the_prepared_histc_call_checks_as_the_general_path():
    x = torch.rand(10)
    for call, error, match in [
        (lambda: softhist.histc(x.to(torch.int32), 4, 0, 1), TypeError, "floating point for mode='soft'"),
        (lambda: softhist.histc(x, 0, 0, 1), ValueError, "bins must be a positive integer"),
        (lambda: softhist.histc(x, 4, 1, 0), ValueError, "min must not exceed max"),
        (lambda: softhist.histc(x, 4, 0, float("inf")), ValueError, "must be finite"),
        (lambda: softhist.histc(x, 4, 0, 1, mode="firm"), ValueError, "mode must be one of"),
        (lambda: softhist.histc(x, 4, 0, 1, kernel="gauss"), ValueError, "kernel must be one of"),
        (lambda: softhist.histc(x, 4, 0, 1, backend="gpu"), ValueError, "backend must be one of"),
        (lambda: softhist.histc(x, 4, 0, 1, bandwidth=-1.0), ValueError, "bandwidth"),
    ]:
        for _ in range(2):  # an error is never cached as a description
            with pytest.raises(error, match=match):
                call()
    # A range read from the data is per call: min == max takes the general path.
    torch.testing.assert_close(softhist.histc(x, 4, mode="hard"), torch.histc(x, 4))

def test_dispatch_is_decided_in_one_place():
    cpu = torch.device("cpu")
    assert _ops.select_backend(cpu, "torch").NAME == "torch"
    expected = "cpp" if softhist.backends()["cpp"] is None else "torch"
    assert _ops.select_backend(cpu, "auto").NAME == expected
    with pytest.raises(ValueError, match="backend must be one of"):
        softhist.histc(torch.rand(3), 4, 0, 1, backend="gpu")


# --------------------------------------------------------------------------- compile and import


COMPILED = {
    "histc": lambda x: softhist.histc(x, 16, 0, 1),
    "histc-hard": lambda x: softhist.histc(x, 16, 0, 1, mode="hard"),
    "histc-tensor-bandwidth": lambda x: softhist.histc(x, 16, 0, 1, bandwidth=torch.tensor(0.05)),
    "histogram": lambda x: softhist.histogram(x, 16, range=(0, 1), dim=1)[0],
    "histogramdd": lambda x: softhist.histogramdd(torch.stack([x, x], -1), 8, range=[(0, 1), (0, 1)])[0],
    "histogram2d": lambda x: softhist.histogram2d(x, x * 0.5, 8, range=[(0, 1), (0, 1)])[0],
    "mutual_information": lambda x: softhist.mutual_information(x, x.flip(-1), bins=8, range=[(0, 1), (0, 1)]),
    "histogram_matching_loss": lambda x: softhist.histogram_matching_loss(x, x.flip(-1), 8, range=(0, 1)),
    "nn.SoftHistogram": softhist.nn.SoftHistogram(8, (0.0, 1.0)),
}


@pytest.mark.parametrize("name", list(COMPILED))
def test_default_compile_is_one_graph_without_breaks(name):
    dynamo.reset()
    explained = dynamo.explain(COMPILED[name])(torch.rand(2, 300, requires_grad=True))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def test_import_does_not_import_dynamo_or_inductor():
    code = "import sys, softhist; print(sorted(m for m in sys.modules if m.startswith(('torch._dynamo', 'torch._inductor'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- gradients that were wrong or missing


def test_edges_gradient_includes_the_default_bandwidth():
    # The default bandwidth is half the mean bin width, a function of the outer edges.
    x = torch.rand(40, dtype=F64)
    edges = torch.tensor([0.0, 0.2, 0.5, 0.6, 1.0], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda e: softhist.histogram(x, e)[0], (edges,))
    xy = torch.rand(30, 2, dtype=F64)
    assert torch.autograd.gradcheck(lambda e: softhist.histogramdd(xy, [e, e])[0], (edges,))


@pytest.mark.parametrize("kernel", ["gaussian", "triangular"])
def test_forward_mode_ad_equals_torch_func_jvp_and_the_jacobian(kernel):
    x, w = torch.rand(2, 30, dtype=F64), torch.rand(2, 30, dtype=F64)
    h = torch.tensor(0.07, dtype=F64)
    edges = torch.tensor([0.0, 0.1, 0.35, 0.5, 0.9, 1.0], dtype=F64)
    tangents = (torch.randn_like(x), torch.randn_like(w), torch.tensor(0.3, dtype=F64), torch.randn_like(edges))

    def fn(x, w, h, e):
        return softhist.histogram(x, e, weight=w, bandwidth=h, kernel=kernel, dim=1)[0]

    with fwAD.dual_level():
        duals = [fwAD.make_dual(p, t) for p, t in zip((x, w, h, edges), tangents)]
        tangent = fwAD.unpack_dual(fn(*duals)).tangent
    _, expected = torch.func.jvp(fn, (x, w, h, edges), tangents)
    torch.testing.assert_close(tangent, expected)
    # ... and both are the Jacobian applied to the tangents.
    jacobians = torch.autograd.functional.jacobian(fn, (x, w, h, edges))
    by_jacobian = sum((j.reshape(*expected.shape, -1) @ t.reshape(-1)) for j, t in zip(jacobians, tangents))
    torch.testing.assert_close(tangent, by_jacobian)


def test_hard_counts_do_not_pretend_to_train_edges():
    x = torch.rand(40)
    edges = torch.tensor([0.0, 0.5, 1.0], requires_grad=True)
    with pytest.warns(UserWarning, match="mode='straight_through'"):
        hist, _ = softhist.histogram(x, edges, mode="hard")
    assert not hist.requires_grad
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = torch.rand(40, requires_grad=True)
        counts = softhist.histc(x, 4, 0, 1, weight=w, mode="hard")  # weights do get a gradient
    counts.sum().backward()
    assert torch.equal(w.grad, torch.ones(40))


# --------------------------------------------------------------------------- clear errors


@pytest.mark.parametrize(
    "call",
    [
        lambda: softhist.histogramdd(torch.rand(10, 4), 65536, range=[(0, 1)] * 4),
        lambda: softhist.histogramdd(torch.rand(10, 8), 256, range=[(0, 1)] * 8, mode="hard"),
        lambda: softhist.histogramdd(torch.rand(2**20, 10, 2), [2**20, 2**20], range=[(0, 1)] * 2, mode="hard"),
    ],
    ids=["4-axes-soft", "8-axes-hard", "rows-times-cells"],
)
def test_overflowing_cell_counts_raise_before_any_allocation(call):
    with pytest.raises(ValueError, match="more than an int64 index can address"):
        call()


def test_bins_past_what_the_engines_index_raise_before_building_edges():
    with pytest.raises(ValueError, match=r"at most 2\*\*30 - 256"):
        softhist.histc(torch.rand(10), 2_000_000_000, 0, 1)
    with pytest.raises(ValueError, match=r"at most 2\*\*30 - 256"):
        softhist.histogram(torch.rand(10), 2**31, range=(0, 1))


def test_torchscript_is_refused_with_what_to_use():
    with pytest.raises(RuntimeError, match="does not support TorchScript.*torch.compile"):
        torch.jit.trace(lambda v: softhist.histc(v, 8, 0, 1), (torch.rand(5),))
    with pytest.raises(RuntimeError, match="does not support TorchScript.*torch.compile"):
        torch.jit.script(softhist.histogram)
    with pytest.raises(RuntimeError, match="does not support TorchScript.*torch.compile"):
        torch.jit.script(softhist.nn.SoftHistogram(8, (0.0, 1.0)))


def test_a_data_range_under_vmap_names_the_fix():
    with pytest.raises(ValueError, match="range cannot be read under a torch.func transform.*pass the range"):
        torch.vmap(lambda v: softhist.histc(v, 8))(torch.rand(3, 10))
    out = torch.vmap(lambda v: softhist.histc(v, 8, 0, 1))(torch.rand(3, 10))  # with a range it runs
    assert out.shape == (3, 8)


def test_integer_y_is_refused_in_soft_mode_as_x_is():
    for call in (lambda: softhist.histogram2d(torch.rand(5), torch.arange(5), 3),
                 lambda: softhist.mutual_information(torch.rand(5), torch.arange(5), bins=3)):
        with pytest.raises(TypeError, match="y must be floating point for mode='soft'"):
            call()


# --------------------------------------------------------------------------- numpy's habits


def test_numpy_arrays_as_edges_and_range():
    x = torch.rand(50, dtype=F64)
    edges = np.linspace(0, 1, 5)
    hist, out_edges = softhist.histogram(x, edges, mode="hard")
    np.testing.assert_array_equal(hist.numpy(), np.histogram(x.numpy(), edges)[0])
    np.testing.assert_array_equal(out_edges.numpy(), edges)
    hist, _ = softhist.histogram(x, 4, range=np.array([0.0, 1.0]), mode="hard")
    np.testing.assert_array_equal(hist.numpy(), np.histogram(x.numpy(), 4, range=(0, 1))[0])
    hist2, *_ = softhist.histogram2d(x, x.flip(0), edges, mode="hard")
    np.testing.assert_array_equal(hist2.numpy(), np.histogram2d(x.numpy(), x.flip(0).numpy(), edges)[0])


def test_numpy_scalars_in_range_set_the_edges_dtype_as_in_numpy():
    data = np.array([0.3, 0.33, 0.66, 0.999], dtype=np.float16)
    for lo, hi in ((np.float64(0), np.float64(1)), (np.float32(0), np.float32(1)), (0.0, 1.0)):
        hist, edges = softhist.histogram(torch.from_numpy(data), 3, range=(lo, hi), mode="hard")
        want, want_edges = np.histogram(data, 3, range=(lo, hi))
        np.testing.assert_array_equal(hist.numpy(), want)
        assert str(edges.dtype).endswith(str(want_edges.dtype))
        np.testing.assert_array_equal(edges.numpy(), want_edges)


def test_histogramdd_of_one_dimensional_samples_is_one_axis_as_numpy():
    x = torch.rand(20)
    hist, edges = softhist.histogramdd(x, 4, mode="hard")
    want, want_edges = np.histogramdd(x.numpy(), 4)
    np.testing.assert_array_equal(hist.numpy(), want)
    assert hist.shape == (4,) and len(edges) == 1


def test_returned_edges_are_a_new_tensor_that_keeps_the_graph():
    edges = torch.tensor([0.0, 0.4, 1.0], requires_grad=True)
    _, out = softhist.histogram(torch.rand(10), edges)
    assert out is not edges and torch.equal(out, edges)
    out.sum().backward()
    assert torch.equal(edges.grad, torch.ones(3))

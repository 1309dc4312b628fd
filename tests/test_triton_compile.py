"""The fused kernels compile for a real GPU, even on a machine without one.

Triton's interpreter (``tests/test_backends.py``) runs the kernels with numpy and accepts
code that the compiler would reject; this compiles both kernels for an sm_90 target through
Triton's whole pipeline (MLIR passes and ptxas), which needs no GPU.
"""

import os

import pytest

triton = pytest.importorskip("triton")

if os.environ.get("TRITON_INTERPRET") == "1":
    pytest.skip("the interpreter replaces compiled kernels", allow_module_level=True)

from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from softhist import _triton_backend  # noqa: E402


def _signature(kernel, constexprs, acc, fixed_point):
    """Argument types: pointers typed as the launchers pass them, scalars as 64-bit ints."""
    types = {}
    for name in kernel.arg_names:
        if name in constexprs:
            types[name] = "constexpr"
        elif name in ("x_ptr", "w_ptr"):
            types[name] = "*bf16" if acc == "fp32" else "*fp64"
        elif name in ("out_ptr", "grad_e_ptr", "total_ptr", "moment_ptr"):
            types[name] = "*i64" if fixed_point == 1 else ("*fp64" if name in ("total_ptr", "moment_ptr") else f"*{acc}")
        elif name == "axis_int_ptr":
            types[name] = "*i64"
        elif name.endswith("_ptr"):
            types[name] = f"*{acc}"
        else:
            types[name] = "fp32" if name in ("fixed_scale", "lo", "scale") else "i64"
    return types


@pytest.mark.parametrize(
    "acc,fixed_point,dims,uniform,kernels,hard,edges,center,normalize",
    # 2-D: one uniform and one non-uniform axis. edges=0: windows too wide to evaluate per edge.
    # hard: a bit per axis binned hard inside the soft histogram. center: a bit per axis with
    # centre membership; normalize: per-sample normalization. fixed_point=2: the backward's bound pass.
    [
        ("fp32", False, 1, 1, ["gaussian"], 0, 0, 0, 0),
        ("fp64", True, 2, 1, ["bspline", "bspline"], 0, 16, 0, 0),
        ("fp32", False, 2, 2, ["box", "bspline2"], 1, 16, 0, 0),
        ("fp32", True, 2, 3, ["epanechnikov", "logistic"], 2, 0, 0, 0),
        ("fp32", 2, 1, 1, ["logistic"], 0, 0, 1, 1),
        ("fp64", 2, 2, 1, ["cauchy", "bspline"], 0, 16, 2, 1),
    ],
)
def test_kernels_compile_for_sm90(acc, fixed_point, dims, uniform, kernels, hard, edges, center, normalize):
    target = GPUTarget("cuda", 90, 32)
    packed = sum(_triton_backend._KERNEL_CODES[k] << (4 * d) for d, k in enumerate(kernels))
    meta = dict(
        D=dims, UNIFORM=uniform, KERNELS=packed, HARD=hard, HAS_WEIGHT=True, FIXED_POINT=int(fixed_point), CENTER=center,
        NORMALIZE=normalize, EDGES=edges, BLOCK=32, CELLS=64,
    )
    backward_meta = dict(meta, NEED_X=True, NEED_W=True, NEED_H=True, NEED_E=(1 << dims) - 1 - uniform)
    for kernel_fn, constexprs in ((_triton_backend._forward_kernel, meta), (_triton_backend._backward_kernel, backward_meta)):
        source = ASTSource(kernel_fn, _signature(kernel_fn, constexprs, acc, fixed_point), constexprs)
        compiled = triton.compile(source, target=target, options={"enable_fp_fusion": True})  # as the launchers ask
        assert "cubin" in compiled.asm and len(compiled.asm["cubin"]) > 0


@pytest.mark.parametrize("fixed_point", [False, True])
def test_table_scatter_kernel_compiles_for_sm90(fixed_point):
    kernel_fn = _triton_backend._linear_binning_kernel
    constexprs = dict(HAS_WEIGHT=True, FIXED_POINT=fixed_point, BLOCK=1024)
    source = ASTSource(kernel_fn, _signature(kernel_fn, constexprs, "fp32", fixed_point), constexprs)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"enable_fp_fusion": True})
    assert len(compiled.asm["cubin"]) > 0

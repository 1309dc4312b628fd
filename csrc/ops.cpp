// Registration alone: the ops' schemas and their CPU kernels (ops.h), and the empty Python module
// whose import loads this library.
#include <Python.h>

#include <torch/csrc/stable/library.h>

#include "ops.h"

using namespace softhist::native;

// Private ops: their int[]/float[] arguments are the plan layout of plan.h, which only
// src/softhist/_cpp_backend.py writes. The public ops are torch.ops.softhist.{soft, hard, ...}.
STABLE_TORCH_LIBRARY_FRAGMENT(softhist, m) {
  m.def("_native_soft(Tensor x, Tensor? weight, Tensor edges, Tensor tables, int[] axis_ints, float[] axis_floats) -> Tensor");
  m.def(
      "_native_soft_backward(Tensor grad, Tensor x, Tensor? weight, Tensor edges, Tensor tables, int[] axis_ints, "
      "float[] axis_floats, int[] needs) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("_native_hard(Tensor x, Tensor? weight, Tensor edges, int[] bins, float[] ranges, bool histc_rule, ScalarType dtype) -> Tensor");
}

STABLE_TORCH_LIBRARY_IMPL(softhist, CPU, m) {
  m.impl("_native_soft", TORCH_BOX(&soft_histogram));
  m.impl("_native_soft_backward", TORCH_BOX(&soft_histogram_backward));
  m.impl("_native_hard", TORCH_BOX(&hard_histogram));
}

// `import softhist._C` loads this library (and so registers the ops); the module itself is empty.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "softhist's native CPU kernels (torch.ops.softhist._native_*)", -1,
                               nullptr, nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&module);
}

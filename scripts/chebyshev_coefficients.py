"""Print the Chebyshev coefficients that csrc/kernels.h uses for erf and exp.

The native engine evaluates the Gaussian and logistic kernels with branch-free polynomials
(libm's erf and exp are scalar calls that stop the loops from vectorizing):

* ``erf(t) = t * sum_i ERF[i] T_i(2 t^2 / S - 1)`` for ``t^2`` in ``[0, S]``, ``S = 5.3^2 / 2``
  (the Gaussian's cut at 5.3 standard deviations): degree 22, max abs error 4.5e-14;
* ``exp(-v) = sum_i EXP[i] T_i(2 v / V - 1)`` for ``v`` in ``[0, V]``, ``V = 9.2 pi / sqrt(3)``
  (twice the logistic's reach in tanh units, which also covers the Gaussian's ``z^2 / 2``):
  degree 26, max abs error 6.6e-15.

Run: python scripts/chebyshev_coefficients.py
"""

import math

import numpy as np
from numpy.polynomial import chebyshev

S = 5.3**2 / 2
V = 9.2 * math.pi / math.sqrt(3.0)
NODES = np.cos(np.pi * (np.arange(4000) + 0.5) / 4000)


def fit(values, degree):
    return chebyshev.chebfit(NODES, values, degree)


def main() -> None:
    s = (NODES + 1) / 2 * S
    t = np.sqrt(s)
    erf = np.vectorize(math.erf)
    erf_over_t = np.where(t > 0, erf(t) / np.maximum(t, 1e-300), 2 / math.sqrt(math.pi))
    for name, coeffs in (("ERF", fit(erf_over_t, 22)), ("EXP", fit(np.exp(-(NODES + 1) / 2 * V), 26))):
        body = ",\n    ".join(", ".join(f"{c:.17g}" for c in coeffs[i : i + 4]) for i in range(0, len(coeffs), 4))
        print(f"constexpr double {name}[{len(coeffs)}] = {{\n    {body}}};")


if __name__ == "__main__":
    main()

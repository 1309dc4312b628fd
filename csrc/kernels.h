// The kernels' CDF F, density f and its derivative f', the same kernels as src/softhist/kernels.py,
// as branch-free polynomials that vectorize (libm's erf, exp and atan are scalar calls).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace softhist::native {

// The same kernels as src/softhist/kernels.py, each of unit variance but the Cauchy (its
// bandwidth is its scale). Kernel ids follow _cpp_backend.KERNEL_IDS.
enum KernelId : int64_t { GAUSSIAN = 0, LOGISTIC = 1, BOX = 2, TRIANGULAR = 3, EPANECHNIKOV = 4, BSPLINE = 5, BSPLINE2 = 6, CAUCHY = 7 };

// Chebyshev series from scripts/chebyshev_coefficients.py: erf(t) = t * sum ERF_i T_i(2t^2/S - 1)
// on t^2 <= S = 5.3^2/2 (error 4.5e-14); exp(-v) = sum EXP_i T_i(2v/V - 1) on v <= V = 9.2 pi/sqrt3
// (error 6.6e-15). libm's erf and exp are scalar calls; these polynomials vectorize.
constexpr double ERF[23] = {
    0.50735983636859938, -0.34768808964590092, 0.1557856672557372, -0.069698796992139933,
    0.029615641795395407, -0.011754833789988603, 0.0043332346831837162, -0.001481892195517837,
    0.0004706542564584313, -0.00013912868778325133, 3.8382454499408574e-05, -9.9107988414803917e-06,
    2.4022235615744148e-06, -5.481314754601781e-07, 1.1806116034880893e-07, -2.4065837105433681e-08,
    4.6539271813004621e-09, -8.5575307079918799e-10, 1.4993684045296748e-10, -2.5081767584358737e-11,
    4.013309920452461e-12, -6.1531516358816365e-13, 9.056912024432699e-14};
constexpr double EXP[27] = {
    0.14034409955377786, -0.26328732763821844, 0.21757606366175836, -0.15897778776964558,
    0.1032512182778817, -0.059977126684256317, 0.031366168266133983, -0.014864757370043218,
    0.0064237370353632502, -0.0025461770424367583, 0.00093068104093074072, -0.00031525812814862155,
    9.9411444750463224e-05, -2.9301248009956345e-05, 8.1026964473854727e-06, -2.1092873352669295e-06,
    5.1849390374209309e-07, -1.2069136140213042e-07, 2.6671819108029627e-08, -5.6091864834978649e-09,
    1.1250252724000811e-09, -2.1563052304676011e-10, 3.9568375508576533e-11, -6.9632947276371647e-12,
    1.1771073576316395e-12, -1.9137257494456019e-13, 2.9978399686052147e-14};
constexpr double ERF_S = 5.3 * 5.3 / 2.0;
constexpr double EXP_V = 16.686954150954801;  // 9.2 * pi / sqrt(3)

template <int N>
constexpr double chebyshev(double x, const double (&c)[N]) {  // Clenshaw's recurrence
  double b1 = 0.0, b2 = 0.0;
#pragma GCC unroll 32
  for (int k = N - 1; k > 0; --k) {
    double b0 = c[k] + 2.0 * x * b1 - b2;
    b2 = b1;
    b1 = b0;
  }
  return c[0] + x * b1 - b2;
}
constexpr double erf_poly(double t) { return t * chebyshev(t * t * (2.0 / ERF_S) - 1.0, ERF); }
constexpr double exp_neg(double v) { return chebyshev(v * (2.0 / EXP_V) - 1.0, EXP); }
inline double clamp(double v, double lo, double hi) { return std::min(std::max(v, lo), hi); }
inline double sign(double v) { return v > 0.0 ? 1.0 : (v < 0.0 ? -1.0 : 0.0); }  // torch.sign: 0 at 0

// atan to within a few ulps, branch-free: r = min(|z|, 1/|z|) in [0, 1]; atan r = atan a + atan y
// with y = (r - a) / (1 + a r) and a the nearest of tan(0), tan(pi/8), tan(pi/4) (cut at
// tan(pi/16) and tan(3 pi/16)), so |y| <= tan(pi/16) ~ 0.199, where the odd Taylor series
// y sum_n (-y^2)^n / (2n + 1) has shrunk below 1e-18 by n = 13; atan |z| = pi/2 - atan(1/|z|) for |z| > 1.
inline double atan_poly(double z) {
  constexpr double PI_2 = 1.57079632679489661923, PI_8 = 0.39269908169872415481, TAN_PI_8 = 0.41421356237309504880;
  const double t = std::fabs(z);
  const bool big = t > 1.0;
  const double r = big ? 1.0 / t : t;
  const bool low = r < 0.19891236737965800691, mid = r < 0.66817863791929891999;
  const double a = low ? 0.0 : (mid ? TAN_PI_8 : 1.0), base = low ? 0.0 : (mid ? PI_8 : 2.0 * PI_8);
  const double y = (r - a) / (1.0 + a * r), y2 = y * y;
  double s = 1.0 / 27.0;
#pragma GCC unroll 16
  for (int n = 12; n >= 0; --n) s = 1.0 / double(2 * n + 1) - y2 * s;
  const double v = base + y * s;
  return std::copysign(big ? PI_2 - v : v, z);
}

// Gaussian, cut at T = 5.3 and renormalized: F = 1/2 + erf(z/sqrt2) / (2 erf(T/sqrt2)).
constexpr double SQRT1_2 = 0.70710678118654752440;
constexpr double GAUSS_T = 5.3;
constexpr double GAUSS_G = erf_poly(GAUSS_T * SQRT1_2);
constexpr double GAUSS_PDF = 0.39894228040143267794 / GAUSS_G;
// Logistic of unit variance, cut at T = 9.2: F = 1/2 + tanh(a z) / (2 tanh(a T)), a = pi / (2 sqrt3);
// tanh(y) = (1 - e) / (1 + e) and sech^2(y) = 4e / (1 + e)^2 with e = exp(-2|y|).
constexpr double LOGI_A = 0.90689968211710892;
constexpr double LOGI_T = 9.2;
constexpr double LOGI_G = (1.0 - exp_neg(2.0 * LOGI_A * LOGI_T)) / (1.0 + exp_neg(2.0 * LOGI_A * LOGI_T));
// Compact kernels: half-widths of the box, triangular and Epanechnikov kernels; knot spacings of
// the cubic and quadratic B-splines.
constexpr double BOX_A = 1.7320508075688772, TRI_A = 2.4494897427831781, EPA_A = 2.2360679774997897;
constexpr double BSP_B = 1.7320508075688772, BSP2_B = 2.0;
constexpr double INV_PI = 0.31830988618379067154;

template <int K>
inline double cdf(double z) {
  if constexpr (K == GAUSSIAN) {
    return 0.5 + erf_poly(clamp(z, -GAUSS_T, GAUSS_T) * SQRT1_2) * (0.5 / GAUSS_G);
  } else if constexpr (K == LOGISTIC) {
    double y = clamp(z, -LOGI_T, LOGI_T) * LOGI_A;
    double e = exp_neg(2.0 * std::fabs(y));
    return 0.5 + std::copysign((1.0 - e) / (1.0 + e), y) * (0.5 / LOGI_G);
  } else if constexpr (K == BOX) {
    return clamp((z + BOX_A) * (0.5 / BOX_A), 0.0, 1.0);
  } else if constexpr (K == TRIANGULAR) {
    double t = clamp(z / TRI_A, -1.0, 1.0);
    return 0.5 + t - 0.5 * t * std::fabs(t);
  } else if constexpr (K == EPANECHNIKOV) {
    double t = clamp(z / EPA_A, -1.0, 1.0);
    return 0.5 + 0.75 * t - 0.25 * t * t * t;
  } else if constexpr (K == BSPLINE) {
    double a = std::min(std::fabs(z) / BSP_B, 2.0), b = 2.0 - a;
    double half = a < 1.0 ? a * (2.0 / 3.0 - a * a / 3.0 + a * a * a / 8.0) : 0.5 - b * b * b * b / 24.0;
    return 0.5 + (z > 0 ? half : (z < 0 ? -half : 0.0));
  } else if constexpr (K == BSPLINE2) {  // t = |z|/2: H(t) = 3t/4 - t^3/3 below 1/2, 1/2 - (3/2 - t)^3/6 below 3/2
    double t = std::min(std::fabs(z) / BSP2_B, 1.5), b = 1.5 - t;
    double half = t < 0.5 ? t * (0.75 - t * t / 3.0) : 0.5 - b * b * b / 6.0;
    return 0.5 + (z > 0 ? half : (z < 0 ? -half : 0.0));
  } else {  // Cauchy, never cut: F = 1/2 + atan(z) / pi
    return 0.5 + atan_poly(z) * INV_PI;
  }
}

template <int K>
inline double pdf(double z) {
  if constexpr (K == GAUSSIAN) {
    double zc = clamp(z, -GAUSS_T, GAUSS_T);
    return std::fabs(z) < GAUSS_T ? exp_neg(0.5 * zc * zc) * GAUSS_PDF : 0.0;
  } else if constexpr (K == LOGISTIC) {
    double e = exp_neg(2.0 * LOGI_A * std::fabs(clamp(z, -LOGI_T, LOGI_T)));
    return std::fabs(z) < LOGI_T ? LOGI_A * 4.0 * e / ((1.0 + e) * (1.0 + e)) * (0.5 / LOGI_G) : 0.0;
  } else if constexpr (K == BOX) {
    return std::fabs(z) < BOX_A ? 0.5 / BOX_A : 0.0;
  } else if constexpr (K == TRIANGULAR) {
    return std::max(1.0 - std::fabs(z) / TRI_A, 0.0) / TRI_A;
  } else if constexpr (K == EPANECHNIKOV) {
    double t = z / EPA_A;
    return (0.75 / EPA_A) * std::max(1.0 - t * t, 0.0);
  } else if constexpr (K == BSPLINE) {
    double a = std::fabs(z) / BSP_B, b = std::max(2.0 - a, 0.0);
    return (a < 1.0 ? 2.0 / 3.0 - a * a + 0.5 * a * a * a : b * b * b / 6.0) / BSP_B;
  } else if constexpr (K == BSPLINE2) {
    double t = std::fabs(z) / BSP2_B, b = std::max(1.5 - t, 0.0);
    return (t < 0.5 ? 0.75 - t * t : 0.5 * b * b) / BSP2_B;
  } else {
    return INV_PI / (1.0 + z * z);
  }
}

// f'(z), the density's derivative (0 where the density is flat or cut, and at its kinks' z = 0,
// as torch differentiates src/softhist/kernels.py's densities): what bin-centre memberships
// f(z) need for their gradients.
template <int K>
inline double dpdf(double z) {
  if constexpr (K == GAUSSIAN) {
    return -z * pdf<GAUSSIAN>(z);
  } else if constexpr (K == LOGISTIC) {  // f = c sech^2(a z): f' = -2a tanh(a z) f
    // With e = exp(-2a|z|) and r = 1/(1 + e): tanh(a|z|) = (1 - e) r, f = (2a / G) e r^2 (as pdf).
    double e = exp_neg(2.0 * LOGI_A * std::fabs(clamp(z, -LOGI_T, LOGI_T))), r = 1.0 / (1.0 + e);
    double v = std::copysign((1.0 - e) * r * e * r * r, z) * (-4.0 * LOGI_A * LOGI_A / LOGI_G);
    return std::fabs(z) < LOGI_T ? v : 0.0;  // this form vectorizes with clang too
  } else if constexpr (K == BOX) {
    return 0.0 * z;
  } else if constexpr (K == TRIANGULAR) {
    return std::fabs(z) < TRI_A ? -sign(z) / (TRI_A * TRI_A) : 0.0;
  } else if constexpr (K == EPANECHNIKOV) {
    return std::fabs(z) < EPA_A ? (-1.5 / (EPA_A * EPA_A * EPA_A)) * z : 0.0;
  } else if constexpr (K == BSPLINE) {  // d/da of 2/3 - a^2 + a^3/2 (a < 1) and (2 - a)^3/6 (a < 2), a = |z|/b
    double a = std::fabs(z) / BSP_B, b = std::max(2.0 - a, 0.0);
    return sign(z) * (a < 1.0 ? a * (1.5 * a - 2.0) : -0.5 * b * b) / (BSP_B * BSP_B);
  } else if constexpr (K == BSPLINE2) {  // d/dt of 3/4 - t^2 (t < 1/2) and (3/2 - t)^2/2 (t < 3/2)
    double t = std::fabs(z) / BSP2_B, b = std::max(1.5 - t, 0.0);
    return sign(z) * (t < 0.5 ? -2.0 * t : -b) / (BSP2_B * BSP2_B);
  } else {
    double d = 1.0 + z * z;
    return -2.0 * INV_PI * z / (d * d);
  }
}

// F in place over n values of z, and f(z) or f'(z) into out, for a kernel id (hot: one clone per ISA).
void eval_cdf(int64_t kernel, double* z, int64_t n);
void eval_pdf(int64_t kernel, const double* z, double* out, int64_t n);
void eval_dpdf(int64_t kernel, const double* z, double* out, int64_t n);

}  // namespace softhist::native

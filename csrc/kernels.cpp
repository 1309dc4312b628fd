// The kernels evaluated over arrays: one vectorized loop per kernel, chosen once per call.
#include "kernels.h"

#include "simd.h"

namespace softhist::native {

template <int K>
SOFTHIST_INLINE void cdf_in_place(double* z, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) z[i] = cdf<K>(z[i]);
}

template <int K>
SOFTHIST_INLINE void pdf_of(const double* z, double* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = pdf<K>(z[i]);
}

template <int K>
SOFTHIST_INLINE void dpdf_of(const double* z, double* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = dpdf<K>(z[i]);
}

SOFTHIST_HOT void eval_cdf(int64_t kernel, double* z, int64_t n) {
  switch (kernel) {
    case GAUSSIAN: cdf_in_place<GAUSSIAN>(z, n); break;
    case LOGISTIC: cdf_in_place<LOGISTIC>(z, n); break;
    case BOX: cdf_in_place<BOX>(z, n); break;
    case TRIANGULAR: cdf_in_place<TRIANGULAR>(z, n); break;
    case EPANECHNIKOV: cdf_in_place<EPANECHNIKOV>(z, n); break;
    case BSPLINE: cdf_in_place<BSPLINE>(z, n); break;
    case BSPLINE2: cdf_in_place<BSPLINE2>(z, n); break;
    default: cdf_in_place<CAUCHY>(z, n); break;
  }
}

SOFTHIST_HOT void eval_pdf(int64_t kernel, const double* z, double* out, int64_t n) {
  switch (kernel) {
    case GAUSSIAN: pdf_of<GAUSSIAN>(z, out, n); break;
    case LOGISTIC: pdf_of<LOGISTIC>(z, out, n); break;
    case BOX: pdf_of<BOX>(z, out, n); break;
    case TRIANGULAR: pdf_of<TRIANGULAR>(z, out, n); break;
    case EPANECHNIKOV: pdf_of<EPANECHNIKOV>(z, out, n); break;
    case BSPLINE: pdf_of<BSPLINE>(z, out, n); break;
    case BSPLINE2: pdf_of<BSPLINE2>(z, out, n); break;
    default: pdf_of<CAUCHY>(z, out, n); break;
  }
}

SOFTHIST_HOT void eval_dpdf(int64_t kernel, const double* z, double* out, int64_t n) {
  switch (kernel) {
    case GAUSSIAN: dpdf_of<GAUSSIAN>(z, out, n); break;
    case LOGISTIC: dpdf_of<LOGISTIC>(z, out, n); break;
    case BOX: dpdf_of<BOX>(z, out, n); break;
    case TRIANGULAR: dpdf_of<TRIANGULAR>(z, out, n); break;
    case EPANECHNIKOV: dpdf_of<EPANECHNIKOV>(z, out, n); break;
    case BSPLINE: dpdf_of<BSPLINE>(z, out, n); break;
    case BSPLINE2: dpdf_of<BSPLINE2>(z, out, n); break;
    default: dpdf_of<CAUCHY>(z, out, n); break;
  }
}

}  // namespace softhist::native

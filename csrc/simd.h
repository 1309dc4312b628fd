// Vector helpers shared by the hot loops: the target-clone attribute, eight-double vectors,
// interpolated table rows and short dot products with a fixed summation order.
#pragma once

#include <cstdint>
#include <cstring>

// x86-64 builds carry AVX-512, AVX2 and baseline versions of the hot loops; the loader picks one.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#define SOFTHIST_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SOFTHIST_HOT
#endif

// The helpers below pass eight-double vectors by value. Always inlined, they compile into each
// clone's own registers and no call passes a vector across an ABI boundary (clang rejects such
// calls from a clone without AVX-512; GCC warns with -Wpsabi).
#if defined(__GNUC__)
#define SOFTHIST_INLINE inline __attribute__((always_inline))
#else
#define SOFTHIST_INLINE inline
#endif

namespace softhist::native {

// Eight doubles as one value (GCC/clang vector extension): each target clone compiles it to its
// own registers (one AVX-512 register, two AVX2 ones, four SSE2 ones), so sums that live in it
// stay in registers instead of going through memory. No function here takes or returns one by
// value: such a call would pass it in a clone-dependent way (clang rejects it in the clones
// without AVX-512, GCC warns with -Wpsabi). Memory is viewed through unaligned, aliasing
// wrappers instead (SOFTHIST_AT8, SOFTHIST_LOAD8, SOFTHIST_WIDEN8), and results come back through references.
typedef double v8d __attribute__((vector_size(64)));
typedef float v8f_mem __attribute__((vector_size(32), aligned(4), may_alias));

// Eight doubles at p (any alignment) as a v8d lvalue: a packed, aliasing wrapper, so both GCC and
// clang emit unaligned loads and stores (a vector typedef with reduced alignment is not enough for
// clang). SOFTHIST_AT8 reads and writes, SOFTHIST_LOAD8 reads.
struct __attribute__((packed, may_alias)) v8d_unaligned {
  v8d v;
};
#define SOFTHIST_AT8(p) (reinterpret_cast<::softhist::native::v8d_unaligned*>(p)->v)
#define SOFTHIST_LOAD8(p) (v8d(reinterpret_cast<const ::softhist::native::v8d_unaligned*>(p)->v))

// Eight floats at p, widened to doubles.
#define SOFTHIST_WIDEN8(p) __builtin_convertvector(*reinterpret_cast<const v8f_mem*>(p), v8d)

typedef float v8f __attribute__((vector_size(32)));
// Eight floats at p (any alignment) as a v8f lvalue, as SOFTHIST_AT8 for doubles.
struct __attribute__((packed, may_alias)) v8f_unaligned {
  v8f v;
};
#define SOFTHIST_AT8F(p) (reinterpret_cast<::softhist::native::v8f_unaligned*>(p)->v)
#define SOFTHIST_LOAD8F(p) (v8f(reinterpret_cast<const ::softhist::native::v8f_unaligned*>(p)->v))
// A table row interpolated in float32 and widened once: row[j..] + t * row[w8 + j..] rounded to
// float32 (one more rounding of values already stored in float32: relative error 2^-24 per
// cell, well inside the 2e-6 bound), then one conversion to doubles instead of two.
#define SOFTHIST_LERP8F(row, w8, j, t) \
  __builtin_convertvector(*reinterpret_cast<const v8f_mem*>((row) + (j)) + (t) * *reinterpret_cast<const v8f_mem*>((row) + (w8) + (j)), v8d)

SOFTHIST_INLINE double sum8(const v8d& v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }

// Eight partial sums in one vector register (no array in memory, whose stores the next
// iteration would wait on), their fixed tree, then the tail in order: short windows (3 cells for
// the box kernel) are a plain sum.
SOFTHIST_INLINE double dot(const double* a, const double* b, int64_t n) {
  int64_t j = 0;
  double s = 0.0;
  if (n >= 8) {
    v8d acc = SOFTHIST_LOAD8(a) * SOFTHIST_LOAD8(b);
    for (j = 8; j + 8 <= n; j += 8) acc += SOFTHIST_LOAD8(a + j) * SOFTHIST_LOAD8(b + j);
    s = sum8(acc);
  }
  for (; j < n; ++j) s += a[j] * b[j];
  return s;
}

// Table rows are (value, step) pairs of w8 floats each (w8 a multiple of 8), interpolated in
// float64: eight columns from j of the row at t are row[j..] + t * row[w8 + j..].
#define SOFTHIST_LERP8(row, w8, j, t) (SOFTHIST_WIDEN8((row) + (j)) + (t) * SOFTHIST_WIDEN8((row) + (w8) + (j)))

// out[0..8) = eight partial sums of sum_j G[j] * (the row at t)[j].
SOFTHIST_INLINE void row_dot8(double* out, const double* G, const float* row, int64_t w8, double t) {
  const float tf = float(t);
  v8d acc = SOFTHIST_LOAD8(G) * SOFTHIST_LERP8F(row, w8, 0, tf);
  for (int64_t j = 8; j < w8; j += 8) acc += SOFTHIST_LOAD8(G + j) * SOFTHIST_LERP8F(row, w8, j, tf);
  SOFTHIST_AT8(out) = acc;
}


}  // namespace softhist::native

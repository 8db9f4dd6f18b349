// Shared by every kernel file of xtc.infer.kernels: includes, the exported-symbol macro, the thread
// count, horizontal sums and a vector exp. All files are compiled together into one library per
// instruction set: "avx2" (AVX2 + FMA + F16C, the baseline every supported CPU has) and
// "avx512-vnni" (adds AVX-512 F/BW/VL/DQ and VNNI). The 256-bit code below compiles in both; a
// kernel adds an `#if XTC_AVX512` path only where 512-bit vectors or VNNI dot products pay off.
#pragma once

#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__) && \
    defined(__AVX512VNNI__)
#define XTC_AVX512 1
#else
#define XTC_AVX512 0
#endif

// GCC < 13 warns inside its own AVX-512 headers (`__m512 __Y = __Y;` in _mm512_undefined_*, GCC
// bug 105593) wherever such an intrinsic is inlined; the warning is about the header, not us.
// Our own code still gets these warnings: every file is also built for AVX2, with -Werror in the tests.
#if XTC_AVX512 && defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#define API extern "C" __attribute__((visibility("default")))

// Threads for every parallel region, whichever thread calls (omp_set_num_threads would only set
// the calling thread's default, and the language server runs inference on a worker thread).
// Defined in elementwise.cpp.
extern int xtc_threads;
#define NT num_threads(xtc_threads > 0 ? xtc_threads : omp_get_max_threads())

// 4 bytes as one int32 (for broadcasts); memcpy keeps it free of aliasing and alignment traps.
static inline int32_t load4(const void* p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline int32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

static inline float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float hmax_ps(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// exp(x) for x <= ~88 (Cephes-style polynomial, ~1-2 ulp); very negative inputs give 0.
static inline __m256 exp256(__m256 x) {
    const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-88.3762626647949f);
    x = _mm256_max_ps(_mm256_min_ps(x, hi), lo);
    __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
    fx = _mm256_floor_ps(fx);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500E-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
    __m256 x2 = _mm256_mul_ps(x, x);
    y = _mm256_fmadd_ps(y, x2, _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// Write `cols` (<= width) results of one output row: y = v + bias, or y += v + bias when beta
// (a residual add in the epilogue). Shared by every matrix kernel's tail.
static inline void store_row(const float* v, int cols, const float* bias, float* out, int beta) {
    for (int c = 0; c < cols; c++) {
        float r = v[c] + (bias ? bias[c] : 0.0f);
        out[c] = beta ? out[c] + r : r;
    }
}

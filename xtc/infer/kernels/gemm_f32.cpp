// fp32 linear layers (plain models, and students whose activations stay in floating point).
// Weights are packed in panels of 16 output columns, P[(n / 16) * K * 16 + k * 16 + n % 16] = W[n][k],
// zero-padded to a multiple of 16 columns: one panel row is one 512-bit vector or two 256-bit ones.
// Micro-kernel: MR rows x 16 (AVX2) or 32 (AVX-512: two panels) columns, broadcast x[m][k] times
// panel rows (BLIS-style). Accumulators are named variables, not an array: GCC keeps arrays of
// vectors in memory.
#include "common.h"

#if XTC_AVX512
// 6 rows x 2 panels: 12 zmm accumulators; per k two panel loads feed 12 FMAs.
#define F32_MR 6
#define ROW(i)                                            \
    if (MR > i) {                                         \
        const __m512 xb = _mm512_set1_ps(x##i[k]);        \
        c##i##0 = _mm512_fmadd_ps(xb, w0, c##i##0);       \
        if (NP > 1) c##i##1 = _mm512_fmadd_ps(xb, w1, c##i##1); \
    }
template <int MR, int NP>
static void f32_tile(int m0, int p, int N, int K, const float* x, int ldx, const float* P, const float* bias,
                     float* y, int ldy, int beta) {
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
           c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const float* pan0 = P + (size_t)p * K * 16;
    const float* pan1 = pan0 + (NP > 1 ? (size_t)K * 16 : 0);
    const float* x0 = x + (size_t)m0 * ldx;
    const float* x1 = x0 + (MR > 1 ? ldx : 0);
    const float* x2 = x0 + (MR > 2 ? 2 * (size_t)ldx : 0);
    const float* x3 = x0 + (MR > 3 ? 3 * (size_t)ldx : 0);
    const float* x4 = x0 + (MR > 4 ? 4 * (size_t)ldx : 0);
    const float* x5 = x0 + (MR > 5 ? 5 * (size_t)ldx : 0);
    for (int k = 0; k < K; k++) {
        const __m512 w0 = _mm512_loadu_ps(pan0 + 16 * (size_t)k);
        const __m512 w1 = NP > 1 ? _mm512_loadu_ps(pan1 + 16 * (size_t)k) : w0;
        ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5)
    }
    alignas(64) float buf[6][32];
    _mm512_store_ps(buf[0], c00), _mm512_store_ps(buf[0] + 16, c01);
    _mm512_store_ps(buf[1], c10), _mm512_store_ps(buf[1] + 16, c11);
    _mm512_store_ps(buf[2], c20), _mm512_store_ps(buf[2] + 16, c21);
    _mm512_store_ps(buf[3], c30), _mm512_store_ps(buf[3] + 16, c31);
    _mm512_store_ps(buf[4], c40), _mm512_store_ps(buf[4] + 16, c41);
    _mm512_store_ps(buf[5], c50), _mm512_store_ps(buf[5] + 16, c51);
    const int n0 = p * 16, width = 16 * NP, cols = N - n0 < width ? N - n0 : width;
    for (int i = 0; i < MR; i++) store_row(buf[i], cols, bias ? bias + n0 : nullptr, y + (size_t)(m0 + i) * ldy + n0, beta);
}
#undef ROW
#define F32_NP 2
#else
// 6 rows x 1 panel (two ymm per row): 12 ymm accumulators.
#define F32_MR 6
#define ROW(i)                                            \
    if (MR > i) {                                         \
        const __m256 xb = _mm256_broadcast_ss(x##i + k);  \
        c##i##0 = _mm256_fmadd_ps(xb, w0, c##i##0);       \
        c##i##1 = _mm256_fmadd_ps(xb, w1, c##i##1);       \
    }
template <int MR, int NP>
static void f32_tile(int m0, int p, int N, int K, const float* x, int ldx, const float* P, const float* bias,
                     float* y, int ldy, int beta) {
    static_assert(NP == 1, "one panel per AVX2 tile");
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
           c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const float* pan = P + (size_t)p * K * 16;
    const float* x0 = x + (size_t)m0 * ldx;
    const float* x1 = x0 + (MR > 1 ? ldx : 0);
    const float* x2 = x0 + (MR > 2 ? 2 * (size_t)ldx : 0);
    const float* x3 = x0 + (MR > 3 ? 3 * (size_t)ldx : 0);
    const float* x4 = x0 + (MR > 4 ? 4 * (size_t)ldx : 0);
    const float* x5 = x0 + (MR > 5 ? 5 * (size_t)ldx : 0);
    for (int k = 0; k < K; k++) {
        const __m256 w0 = _mm256_loadu_ps(pan + 16 * (size_t)k), w1 = _mm256_loadu_ps(pan + 16 * (size_t)k + 8);
        ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5)
    }
    alignas(32) float buf[6][16];
    _mm256_store_ps(buf[0], c00), _mm256_store_ps(buf[0] + 8, c01);
    _mm256_store_ps(buf[1], c10), _mm256_store_ps(buf[1] + 8, c11);
    _mm256_store_ps(buf[2], c20), _mm256_store_ps(buf[2] + 8, c21);
    _mm256_store_ps(buf[3], c30), _mm256_store_ps(buf[3] + 8, c31);
    _mm256_store_ps(buf[4], c40), _mm256_store_ps(buf[4] + 8, c41);
    _mm256_store_ps(buf[5], c50), _mm256_store_ps(buf[5] + 8, c51);
    const int n0 = p * 16, cols = N - n0 < 16 ? N - n0 : 16;
    for (int i = 0; i < MR; i++) store_row(buf[i], cols, bias ? bias + n0 : nullptr, y + (size_t)(m0 + i) * ldy + n0, beta);
}
#undef ROW
#define F32_NP 1
#endif

typedef void (*f32_tile_fn)(int, int, int, int, const float*, int, const float*, const float*, float*, int, int);
#if F32_NP == 2
static const f32_tile_fn F32_TILES[2][F32_MR] = {
    {f32_tile<1, 1>, f32_tile<2, 1>, f32_tile<3, 1>, f32_tile<4, 1>, f32_tile<5, 1>, f32_tile<6, 1>},
    {f32_tile<1, 2>, f32_tile<2, 2>, f32_tile<3, 2>, f32_tile<4, 2>, f32_tile<5, 2>, f32_tile<6, 2>}};
#else
static const f32_tile_fn F32_TILES[1][F32_MR] = {
    {f32_tile<1, 1>, f32_tile<2, 1>, f32_tile<3, 1>, f32_tile<4, 1>, f32_tile<5, 1>, f32_tile<6, 1>}};
#endif

// y[M, N] (+)= x[M, K] @ W^T + bias, W in panels (see above).
API void xtc_gemm_f32(int M, int N, int K, const float* x, int ldx, const float* P, const float* bias, float* y,
                      int ldy, int beta) {
    const int panels = (N + 15) / 16, units = (panels + F32_NP - 1) / F32_NP;
    const int mb = 48;  // rows per block: the row tiles share each panel while it is in cache
#pragma omp parallel NT if ((double)M * N * K > 2e5)
    for (int mb0 = 0; mb0 < M; mb0 += mb) {
        int mb1 = mb0 + mb < M ? mb0 + mb : M;
#pragma omp for schedule(static) nowait
        for (int u = 0; u < units; u++) {
            const int p = u * F32_NP, np = panels - p < F32_NP ? panels - p : F32_NP;
            for (int m0 = mb0; m0 < mb1; m0 += F32_MR) {
                int mr = mb1 - m0 < F32_MR ? mb1 - m0 : F32_MR;
                F32_TILES[np - 1][mr - 1](m0, p, N, K, x, ldx, P, bias, y, ldy, beta);
            }
        }
    }
}

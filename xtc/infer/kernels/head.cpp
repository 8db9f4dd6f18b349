// The output head: x[M, K] (fp32, the final norm's output) times an embedding table [N, K] that
// doubles as the head (tied) or a separate head table. Tables are fp32, int8 codes (a scale per
// row or group, optionally a min), or 4-bit affine codes in groups. The head is the biggest
// matrix a decoding step reads (49152 x 576 for SmolLM2), so the tables stay at their stored
// width and are expanded in registers; activations stay fp32 (no activation quantisation here).
#include "common.h"

// Per-token sums of x over each group of gl columns (the `min` term of affine tables).
static void group_sums(int M, int K, int gl, const float* x, int ldx, float* xs) {
    const int G = K / gl;
    for (int m = 0; m < M; m++)
        for (int g = 0; g < G; g++) {
            float s = 0.0f;
            for (int k = g * gl; k < (g + 1) * gl; k++) s += x[(size_t)m * ldx + k];
            xs[(size_t)m * G + g] = s;
        }
}

// y[M, N] = x[M, K] @ W^T for a row-major fp32 table W (N x K): the head of a plain model.
// Bound by reading W; 256-bit code in both builds.
API void xtc_gemv_f32rows(int M, int N, int K, const float* x, int ldx, const float* W, float* y, int ldy) {
#pragma omp parallel for NT schedule(static) if ((double)M * N * K > 1e5)
    for (int n = 0; n < N; n++) {
        const float* wr = W + (size_t)n * K;
        for (int m = 0; m < M; m++) {
            const float* xr = x + (size_t)m * ldx;
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
            int k = 0;
            for (; k + 16 <= K; k += 16) {
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + k), _mm256_loadu_ps(xr + k), a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + k + 8), _mm256_loadu_ps(xr + k + 8), a1);
            }
            float s = hsum_ps(_mm256_add_ps(a0, a1));
            for (; k < K; k++) s += wr[k] * xr[k];
            y[(size_t)m * ldy + n] = s;
        }
    }
}

// Dot products of 8 int8 or 4-bit codes with fp32 activations, into acc. The same 256-bit code in
// both builds: a 512-bit accumulator would sum other lanes together, and the head's rounding
// must not depend on the instruction set (greedy decoding turns ulps into other tokens).
typedef __m256 hacc;
static inline hacc hacc_zero() { return _mm256_setzero_ps(); }
static inline float hacc_sum(hacc a) { return hsum_ps(a); }
static inline hacc hacc_scale(hacc part, float s, hacc acc) { return _mm256_fmadd_ps(part, _mm256_set1_ps(s), acc); }
static inline hacc hacc_add(hacc a, hacc b) { return _mm256_add_ps(a, b); }
#define I8_STEP 8
static inline hacc dot_i8(const int8_t* c, const float* x, hacc acc) {
    __m256 w = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)c)));
    return _mm256_fmadd_ps(w, _mm256_loadu_ps(x), acc);
}
static inline hacc dot_u4x16(__m128i codes, const float* x, hacc acc) {
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(codes)), _mm256_loadu_ps(x), acc);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(codes, 8))), _mm256_loadu_ps(x + 8),
                           acc);
}

// Rows are processed HEAD_ROWS at a time with two accumulators each: one row's multiply-adds
// form a dependency chain (4-cycle latency), so independent rows keep the FMA units busy, and
// they share every load of x. Each group's partial dot product is scaled in the vector (no
// horizontal sum per group); the min term is the dot product of a row's mins with the per-token
// group sums of x.
#define HEAD_ROWS 4

// int8 table rows n0..n0+R-1 against one token.
template <int R>
static void i8_rows(int n0, int K, int gl, const float* xr, const float* xs, const int8_t* codes,
                    const float* scale, const float* mins, float* out) {
    const int G = K / gl;
    hacc total[R];
    float offset[R];
    for (int r = 0; r < R; r++) total[r] = hacc_zero(), offset[r] = 0.0f;
    for (int g = 0; g < G; g++) {
        hacc part[R][2];
        for (int r = 0; r < R; r++) part[r][0] = part[r][1] = hacc_zero();
        int k = g * gl, p = 0;
        for (; k + I8_STEP <= (g + 1) * gl; k += I8_STEP, p ^= 1)
            for (int r = 0; r < R; r++) part[r][p] = dot_i8(codes + (size_t)(n0 + r) * K + k, xr + k, part[r][p]);
        for (int r = 0; r < R; r++) {
            total[r] = hacc_scale(hacc_add(part[r][0], part[r][1]), scale[(size_t)(n0 + r) * G + g], total[r]);
            if (mins) offset[r] += mins[(size_t)(n0 + r) * G + g] * xs[g];
        }
    }
    for (int r = 0; r < R; r++) out[r] = hacc_sum(total[r]) + offset[r];
}

// y[M, N] = x @ (codes * scale + min)^T for an int8 table with a scale (and optionally a min) per
// row or group of gl columns: w[n, k] = scale[n, g] * codes[n, k] + mins[n, g]. K and gl are
// multiples of 8.
API void xtc_gemv_i8f(int M, int N, int K, int gl, const float* x, int ldx, const int8_t* codes,
                      const float* scale, const float* mins, float* y, int ldy) {
    const int G = K / gl, tiles = (N + HEAD_ROWS - 1) / HEAD_ROWS;
    float* xs = (float*)malloc(sizeof(float) * (size_t)M * G);
    group_sums(M, K, gl, x, ldx, xs);
#pragma omp parallel for NT schedule(static) if ((double)M * N * K > 1e5)
    for (int t = 0; t < tiles; t++) {
        const int n0 = t * HEAD_ROWS, rows = N - n0 < HEAD_ROWS ? N - n0 : HEAD_ROWS;
        for (int m = 0; m < M; m++) {
            float out[HEAD_ROWS];
            const float* xr = x + (size_t)m * ldx;
            const float* xsm = xs + (size_t)m * G;
            if (rows == HEAD_ROWS) i8_rows<HEAD_ROWS>(n0, K, gl, xr, xsm, codes, scale, mins, out);
            else
                for (int r = 0; r < rows; r++) i8_rows<1>(n0 + r, K, gl, xr, xsm, codes, scale, mins, out + r);
            for (int r = 0; r < rows; r++) y[(size_t)m * ldy + n0 + r] = out[r];
        }
    }
    free(xs);
}

// 4-bit table rows n0..n0+R-1 against one token (layout: see xtc_gemv_u4f).
template <int R>
static void u4_rows(int n0, int K, int gl, const float* xr, const float* xs, const uint8_t* codes,
                    const uint16_t* sm, float* out) {
    const int G = K / gl, cpg = gl / 32;
    const __m128i low4 = _mm_set1_epi8(0x0F);
    hacc total[R];
    float offset[R];
    for (int r = 0; r < R; r++) total[r] = hacc_zero(), offset[r] = 0.0f;
    for (int g = 0; g < G; g++) {
        hacc part[R][2];
        for (int r = 0; r < R; r++) part[r][0] = part[r][1] = hacc_zero();
        for (int c = g * cpg; c < (g + 1) * cpg; c++)
            for (int r = 0; r < R; r++) {
                const __m128i v = _mm_loadu_si128((const __m128i*)(codes + (size_t)(n0 + r) * (K / 2) + (size_t)c * 16));
                part[r][0] = dot_u4x16(_mm_and_si128(v, low4), xr + 32 * c, part[r][0]);
                part[r][1] = dot_u4x16(_mm_and_si128(_mm_srli_epi16(v, 4), low4), xr + 32 * c + 16, part[r][1]);
            }
        for (int r = 0; r < R; r++) {
            const uint16_t* p = sm + ((size_t)(n0 + r) * G + g) * 2;
            total[r] = hacc_scale(hacc_add(part[r][0], part[r][1]), _cvtsh_ss(p[0]), total[r]);
            offset[r] += _cvtsh_ss(p[1]) * xs[g];
        }
    }
    for (int r = 0; r < R; r++) out[r] = hacc_sum(total[r]) + offset[r];
}

// y[M, N] = x @ (q * scale + min)^T for a 4-bit affine table: per row, chunks of 32 codes in 16
// bytes (byte i = q[32c + i] | q[32c + 16 + i] << 4, built by xtc.infer.layers), and per row and
// group of gl columns (a multiple of 32) the fp16 pair (scale, min) in `sm`. K % 32 == 0.
API void xtc_gemv_u4f(int M, int N, int K, int gl, const float* x, int ldx, const uint8_t* codes,
                      const uint16_t* sm, float* y, int ldy) {
    const int G = K / gl, tiles = (N + HEAD_ROWS - 1) / HEAD_ROWS;
    float* xs = (float*)malloc(sizeof(float) * (size_t)M * G);
    group_sums(M, K, gl, x, ldx, xs);
#pragma omp parallel for NT schedule(static) if ((double)M * N * K > 1e5)
    for (int t = 0; t < tiles; t++) {
        const int n0 = t * HEAD_ROWS, rows = N - n0 < HEAD_ROWS ? N - n0 : HEAD_ROWS;
        for (int m = 0; m < M; m++) {
            float out[HEAD_ROWS];
            const float* xr = x + (size_t)m * ldx;
            const float* xsm = xs + (size_t)m * G;
            if (rows == HEAD_ROWS) u4_rows<HEAD_ROWS>(n0, K, gl, xr, xsm, codes, sm, out);
            else
                for (int r = 0; r < rows; r++) u4_rows<1>(n0 + r, K, gl, xr, xsm, codes, sm, out + r);
            for (int r = 0; r < rows; r++) y[(size_t)m * ldy + n0 + r] = out[r];
        }
    }
    free(xs);
}

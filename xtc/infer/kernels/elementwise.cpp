// Row-wise kernels: the thread count, 8-bit activation quantisation (alone, or fused behind a
// norm or the MLP activation so the fp32 row never leaves the cache), RMSNorm / LayerNorm, and
// the MLP activations.
#include "common.h"

int xtc_threads = 0;

// Bumped whenever an exported signature changes (the Python side checks it).
API int xtc_version(void) { return 5; }

API void xtc_set_threads(int n) { xtc_threads = n > 0 ? n : 1; }

// How many threads a parallel region gets from the calling thread (for tests).
API int xtc_threads_used(void) {
    int used = 0;
#pragma omp parallel NT
    {
#pragma omp single
        used = omp_get_num_threads();
    }
    return used;
}

// Per-row 8-bit activation quantisation, exactly as the training side's quantize_activations:
// scale = max(amax, 1e-8) / 127, q = clamp(rint(x / scale), -127, 127). Writes the signed codes
// over Kp columns (zero codes in the padding, so padded weights never contribute), the scale, and
// the code sum per group of gl columns (the affine kernels' `min` term needs it; gl % 8 == 0).
static void quant_row(const float* xr, int K, int Kp, int gl, int8_t* qr, float* sxm, int32_t* qs) {
    const int G = Kp / gl;
    __m256 vmax = _mm256_setzero_ps();
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    int k = 0;
    for (; k + 8 <= K; k += 8) vmax = _mm256_max_ps(vmax, _mm256_and_ps(_mm256_loadu_ps(xr + k), absmask));
    float amax = hmax_ps(vmax);
    for (; k < K; k++) {
        float a = fabsf(xr[k]);
        amax = a > amax ? a : amax;
    }
    float scale = (amax > 1e-8f ? amax : 1e-8f) / 127.0f;
    *sxm = scale;
    const __m256 vs = _mm256_set1_ps(scale), qmax = _mm256_set1_ps(127.0f), qmin = _mm256_set1_ps(-127.0f);
    for (int g = 0; g < G; g++) qs[g] = 0;
    k = 0;
    for (; k + 8 <= K; k += 8) {
        // Division, not multiplication by 1/scale: rint(x / scale) must round as the reference does.
        __m256 q = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(xr + k), vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q = _mm256_max_ps(_mm256_min_ps(q, qmax), qmin);
        __m256i qi = _mm256_cvtps_epi32(q);
        qs[k / gl] += hsum_epi32(qi);
        __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(qi), _mm256_extracti128_si256(qi, 1));
        _mm_storel_epi64((__m128i*)(qr + k), _mm_packs_epi16(p16, p16));
    }
    for (; k < K; k++) {
        float q = nearbyintf(xr[k] / scale);
        q = q > 127.0f ? 127.0f : (q < -127.0f ? -127.0f : q);
        qs[k / gl] += (int32_t)q;
        qr[k] = (int8_t)q;
    }
    for (; k < Kp; k++) qr[k] = 0;
}

API void xtc_quant(const float* x, int M, int K, int ldx, int Kp, int gl, int8_t* q, float* sx, int32_t* qsum) {
    const int G = Kp / gl;
#pragma omp parallel for NT schedule(static) if (M > 8)
    for (int m = 0; m < M; m++)
        quant_row(x + (size_t)m * ldx, K, Kp, gl, q + (size_t)m * Kp, sx + m, qsum + (size_t)m * G);
}

// RMSNorm (Llama) or LayerNorm (GPT-2) of one row.
static void norm_row(const float* xr, int K, const float* w, const float* b, float eps, int rms, float* o) {
    __m256 vs = _mm256_setzero_ps();
    int k = 0;
    float mean = 0.0f;
    if (!rms) {
        for (; k + 8 <= K; k += 8) vs = _mm256_add_ps(vs, _mm256_loadu_ps(xr + k));
        float s = hsum_ps(vs);
        for (; k < K; k++) s += xr[k];
        mean = s / K;
    }
    const __m256 vm = _mm256_set1_ps(mean);
    __m256 vss = _mm256_setzero_ps();
    for (k = 0; k + 8 <= K; k += 8) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(xr + k), vm);
        vss = _mm256_fmadd_ps(d, d, vss);
    }
    float ss = hsum_ps(vss);
    for (; k < K; k++) ss += (xr[k] - mean) * (xr[k] - mean);
    float r = 1.0f / sqrtf(ss / K + eps);
    if (rms) {
        for (k = 0; k < K; k++) o[k] = w[k] * (xr[k] * r);
    } else {
        for (k = 0; k < K; k++) o[k] = (xr[k] - mean) * r * w[k] + (b ? b[k] : 0.0f);
    }
}

// Norm then quantisation, for a quantised linear's input.
API void xtc_norm_quant(const float* x, int M, int K, const float* w, const float* b, float eps, int rms,
                        int Kp, int gl, int8_t* q, float* sx, int32_t* qsum) {
    const int G = Kp / gl;
#pragma omp parallel NT if (M > 8)
    {
        float* row = (float*)malloc(sizeof(float) * (size_t)K);
#pragma omp for schedule(static)
        for (int m = 0; m < M; m++) {
            norm_row(x + (size_t)m * K, K, w, b, eps, rms, row);
            quant_row(row, K, Kp, gl, q + (size_t)m * Kp, sx + m, qsum + (size_t)m * G);
        }
        free(row);
    }
}

// RMSNorm (Llama) or LayerNorm (GPT-2) per row.
API void xtc_norm(const float* x, int M, int K, int ldx, const float* w, const float* b, float eps, int rms,
                  float* out, int ldo) {
#pragma omp parallel for NT schedule(static) if (M > 16)
    for (int m = 0; m < M; m++) norm_row(x + (size_t)m * ldx, K, w, b, eps, rms, out + (size_t)m * ldo);
}

static inline __m256 silu_mul8(__m256 g, __m256 up) {
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 sig = _mm256_div_ps(one, _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), g))));
    return _mm256_mul_ps(_mm256_mul_ps(g, sig), up);
}

// The last n < 8 lanes of a row: loads and stores masked (lanes past n read as 0, not written), so
// that a row's tail rounds as its body does (no scalar expf / tanhf: their rounding is libm's).
static inline __m256i tail_mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// silu(gate) * up of one row of a fused (gate | up) output.
static void silu_mul_row(const float* g, int F, float* o) {
    const float* up = g + F;
    int f = 0;
    for (; f + 8 <= F; f += 8) _mm256_storeu_ps(o + f, silu_mul8(_mm256_loadu_ps(g + f), _mm256_loadu_ps(up + f)));
    if (f < F) {
        const __m256i m = tail_mask(F - f);
        _mm256_maskstore_ps(o + f, m, silu_mul8(_mm256_maskload_ps(g + f, m), _mm256_maskload_ps(up + f, m)));
    }
}

// GELU, tanh approximation: 0.5 v (1 + tanh(u)), u = sqrt(2 / pi) (v + 0.044715 v^3), with
// tanh(u) = 1 - 2 / (exp(2 u) + 1) on exp256 (saturates to +-1 where exp256 clamps).
static inline __m256 gelu8(__m256 v) {
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 c = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.044715f), v), v), v);
    __m256 u = _mm256_mul_ps(_mm256_set1_ps(0.7978845608028654f), _mm256_add_ps(v, c));
    __m256 t = _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(exp256(_mm256_add_ps(u, u)), one)));
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v), _mm256_add_ps(one, t));
}

static void gelu_row(const float* a, long F, float* o) {
    long f = 0;
    for (; f + 8 <= F; f += 8) _mm256_storeu_ps(o + f, gelu8(_mm256_loadu_ps(a + f)));
    if (f < F) {
        const __m256i m = tail_mask((int)(F - f));
        _mm256_maskstore_ps(o + f, m, gelu8(_mm256_maskload_ps(a + f, m)));
    }
}

// out[m, f] = silu(gu[m, f]) * gu[m, F + f]   (Llama MLP on the fused gate/up output)
API void xtc_silu_mul(const float* gu, int M, int F, int ld, float* out, int ldo) {
#pragma omp parallel for NT schedule(static) if (M > 8)
    for (int m = 0; m < M; m++) silu_mul_row(gu + (size_t)m * ld, F, out + (size_t)m * ldo);
}

// The MLP activation then quantisation (the down projection's input). kind 0: silu(gate) * up on a
// fused (M, 2F) gate/up output; kind 1: GELU (tanh) on (M, F).
API void xtc_act_quant(int kind, const float* a, int M, int F, int ld, int Kp, int gl, int8_t* q, float* sx,
                       int32_t* qsum) {
    const int G = Kp / gl;
#pragma omp parallel NT if (M > 8)
    {
        float* row = (float*)malloc(sizeof(float) * (size_t)F);
#pragma omp for schedule(static)
        for (int m = 0; m < M; m++) {
            const float* g = a + (size_t)m * ld;
            if (kind == 0) {
                silu_mul_row(g, F, row);
            } else {
                gelu_row(g, F, row);
            }
            quant_row(row, F, Kp, gl, q + (size_t)m * Kp, sx + m, qsum + (size_t)m * G);
        }
        free(row);
    }
}

// GELU, tanh approximation (GPT-2's gelu_new), in place.
API void xtc_gelu_tanh(float* x, long n) {
    const long chunk = 4096;
#pragma omp parallel for NT schedule(static) if (n > 65536)
    for (long i = 0; i < n; i += chunk) gelu_row(x + i, n - i < chunk ? n - i : chunk, x + i);
}

// Binary (1-bit) linears on 8-bit activations: the k = 1 case of the affine format,
// w[r, j] = scale[r, g] * b[r, j] + min[r, g] with bits b in {0, 1} (XTC's +-alpha weights are
// scale = 2 alpha, min = -alpha). Weights are bit-packed, 8 per byte, LSB first; activations are
// signed 8-bit codes q with a scale sx per token and code sums qsum per group, so
//   y[t, r] = sx[t] * sum_g (scale[r, g] * sum_{j in g} b[r, j] q[t, j] + min[r, g] * qsum[t, g]) + bias[r].
// The integer sums are exact; only the per-group scales are floating point. Prefill (many rows)
// expands the bits to bytes once per call and runs a matrix kernel (xtc_gemm_b1); decoding (a few
// rows) looks the sums up in per-token tables instead (xtc_gemv_lut), reading each weight as one bit.
#include "common.h"

// Matrix kernel. The weight bits are first expanded to bytes in "lanes" layout:
// P[(nb * S + s) * 32 + j * 4 + t] = bit(w[8 nb + j][4 s + t]) (0 or 1), S = Kp / 4, so that one
// vpmaddubsw of 32 weight bytes against 4 broadcast activation bytes gives 8 output columns x 2
// pair sums: outputs land in SIMD lanes and need no horizontal reduction.
static void expand_lanes(const uint8_t* bits, int N, int Kp, int nb, uint8_t* P) {
    static uint64_t lut[256];
    static int ready = 0;
    if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {  // byte of 8 bits -> 8 bytes of 0 / 1 (benign race: same values)
        for (int b = 0; b < 256; b++) {
            uint64_t v = 0;
            for (int t = 0; t < 8; t++)
                if (b >> t & 1) v |= (uint64_t)1 << (8 * t);
            lut[b] = v;
        }
        __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
    }
    const int S = Kp / 4, bytes = Kp / 8;
    uint32_t* out = (uint32_t*)(P + (size_t)nb * S * 32);
    for (int j = 0; j < 8; j++) {
        int n = nb * 8 + j;
        if (n >= N) {
            for (int s = 0; s < S; s++) out[(size_t)s * 8 + j] = 0;
            continue;
        }
        const uint8_t* row = bits + (size_t)n * bytes;
        for (int b = 0; b < bytes; b++) {
            uint64_t v = lut[row[b]];
            out[(size_t)(2 * b) * 8 + j] = (uint32_t)v;
            out[(size_t)(2 * b + 1) * 8 + j] = (uint32_t)(v >> 32);
        }
    }
}

// Tiles of MR <= 4 rows x NR <= 2 blocks of 8 columns. int16 partial sums (|pair| <= 254) are
// flushed to int32 every 64 steps (|sum| <= 64 * 254 < 32768) and at every group end.
#define LM(i, j) if (MR > i && NR > j) a##i##j = _mm256_add_epi16(a##i##j, _mm256_maddubs_epi16(w##j, x##i))
#define LF(i, j) if (MR > i && NR > j) T[i][j] = _mm256_add_epi32(T[i][j], _mm256_madd_epi16(a##i##j, ones))
template <int MR, int NR>
static void ltile(int m0, int nb0, int N, int Kp, int gl, const int8_t* q, const float* sx, const int32_t* qsum,
                  const uint8_t* P, const float* scale_t, const float* min_t, int Np, const float* bias, float* y,
                  int ldy, int beta) {
    const int S = Kp / 4, G = Kp / gl, spg = gl / 4;
    const __m256i ones = _mm256_set1_epi16(1);
    const int8_t* q0 = q + (size_t)m0 * Kp;
    const int8_t* q1 = q0 + (MR > 1 ? Kp : 0);
    const int8_t* q2 = q0 + (MR > 2 ? 2 * (size_t)Kp : 0);
    const int8_t* q3 = q0 + (MR > 3 ? 3 * (size_t)Kp : 0);
    const uint8_t* p0 = P + (size_t)nb0 * S * 32;
    const uint8_t* p1 = p0 + (NR > 1 ? (size_t)S * 32 : 0);
    __m256 F[MR][NR];
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) F[i][j] = _mm256_setzero_ps();
    for (int g = 0; g < G; g++) {
        __m256i T[MR][NR];
        for (int i = 0; i < MR; i++)
            for (int j = 0; j < NR; j++) T[i][j] = _mm256_setzero_si256();
        for (int s0 = g * spg; s0 < (g + 1) * spg; s0 += 64) {
            int s1 = s0 + 64 < (g + 1) * spg ? s0 + 64 : (g + 1) * spg;
            __m256i z = _mm256_setzero_si256();
            __m256i a00 = z, a01 = z, a10 = z, a11 = z, a20 = z, a21 = z, a30 = z, a31 = z;
            for (int s = s0; s < s1; s++) {
                __m256i w0 = _mm256_loadu_si256((const __m256i*)(p0 + (size_t)s * 32)), w1 = z;
                if (NR > 1) w1 = _mm256_loadu_si256((const __m256i*)(p1 + (size_t)s * 32));
                __m256i x0 = _mm256_set1_epi32(load4(q0 + 4 * s));
                LM(0, 0); LM(0, 1);
                if (MR > 1) { __m256i x1 = _mm256_set1_epi32(load4(q1 + 4 * s)); LM(1, 0); LM(1, 1); }
                if (MR > 2) { __m256i x2 = _mm256_set1_epi32(load4(q2 + 4 * s)); LM(2, 0); LM(2, 1); }
                if (MR > 3) { __m256i x3 = _mm256_set1_epi32(load4(q3 + 4 * s)); LM(3, 0); LM(3, 1); }
            }
            LF(0, 0); LF(0, 1); LF(1, 0); LF(1, 1); LF(2, 0); LF(2, 1); LF(3, 0); LF(3, 1);
        }
        for (int j = 0; j < NR; j++) {
            size_t n0 = (size_t)(nb0 + j) * 8;
            __m256 sc = _mm256_loadu_ps(scale_t + (size_t)g * Np + n0), mn = _mm256_loadu_ps(min_t + (size_t)g * Np + n0);
            for (int i = 0; i < MR; i++) {
                __m256 xs = _mm256_set1_ps((float)qsum[(size_t)(m0 + i) * G + g]);
                F[i][j] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(T[i][j]), _mm256_fmadd_ps(mn, xs, F[i][j]));
            }
        }
    }
    for (int j = 0; j < NR; j++) {
        int n0 = (nb0 + j) * 8, cols = N - n0 < 8 ? N - n0 : 8;
        for (int i = 0; i < MR; i++) {
            alignas(32) float v[8];
            _mm256_store_ps(v, _mm256_mul_ps(F[i][j], _mm256_set1_ps(sx[m0 + i])));
            store_row(v, cols, bias ? bias + n0 : nullptr, y + (size_t)(m0 + i) * ldy + n0, beta);
        }
    }
}
#undef LM
#undef LF

typedef void (*ltile_fn)(int, int, int, int, int, const int8_t*, const float*, const int32_t*, const uint8_t*,
                         const float*, const float*, int, const float*, float*, int, int);
static const ltile_fn LTILES[4][2] = {
    {ltile<1, 1>, ltile<1, 2>}, {ltile<2, 1>, ltile<2, 2>}, {ltile<3, 1>, ltile<3, 2>}, {ltile<4, 1>, ltile<4, 2>}};

// y[M, N] (+)= the binary product (see the top) plus bias; beta = 1 adds to y (a residual).
// scale_t / min_t: (groups, Np), Np = N rounded up to 32 (zero padded). `P` is scratch of
// (N rounded up to 8) * Kp bytes. Use for M >= a few rows.
API void xtc_gemm_b1(int M, int N, int Kp, int gl, const int8_t* q, const float* sx, const int32_t* qsum,
                     const uint8_t* bits, const float* scale_t, const float* min_t, const float* bias,
                     float* y, int ldy, int beta, uint8_t* P, int mb) {
    const int nblocks = (N + 7) / 8, Np = (N + 31) / 32 * 32;
    const int pairs = (nblocks + 1) / 2;
#pragma omp parallel NT if ((double)M * N * Kp > 2e5)
    {
#pragma omp for schedule(static)
        for (int nb = 0; nb < nblocks; nb++) expand_lanes(bits, N, Kp, nb, P);
        for (int mb0 = 0; mb0 < M; mb0 += mb) {
            int mb1 = mb0 + mb < M ? mb0 + mb : M;
#pragma omp for schedule(static) nowait
            for (int pb = 0; pb < pairs; pb++) {
                int nb0 = pb * 2, nr = nblocks - nb0 < 2 ? nblocks - nb0 : 2;
                for (int m0 = mb0; m0 < mb1; m0 += 4) {
                    int mr = mb1 - m0 < 4 ? mb1 - m0 : 4;
                    LTILES[mr - 1][nr - 1](m0, nb0, N, Kp, gl, q, sx, qsum, P, scale_t, min_t, Np, bias, y, ldy, beta);
                }
            }
        }
    }
}

// Matrix-vector kernel for decoding (T-MAC style lookup tables). For each group of 4 activation
// codes q, a 16-entry table holds the sum of q over every subset (the weights whose bit is 1);
// the 4 weight bits of a row are the index. Tables are int16 (|sum| <= 508), split in low and
// high bytes so that vpshufb looks up 32 rows at once. Weights in "lut" layout:
// W[(rb * S + s) * 16 + i] holds the nibble (k = 4s..4s+3) of row 32 rb + i (low half) and of row
// 32 rb + 16 + i (high half). sum_k b_k q_k = sum_s E_s[nibble].
static void build_tables(const int8_t* qr, int S, uint8_t* L) {
    for (int s = 0; s < S; s++) {
        int q0 = qr[4 * s], q1 = qr[4 * s + 1], q2 = qr[4 * s + 2], q3 = qr[4 * s + 3];
        uint8_t* t = L + (size_t)s * 32;
        for (int v = 0; v < 16; v++) {
            int e = (v & 1 ? q0 : 0) + (v & 2 ? q1 : 0) + (v & 4 ? q2 : 0) + (v & 8 ? q3 : 0);
            t[v] = (uint8_t)(e & 0xFF);
            t[16 + v] = (uint8_t)((e >> 8) & 0xFF);
        }
    }
}

// y[M, N] (+)= the binary product for a few rows. scale_t / min_t: (groups, Np32), Np32 = N
// rounded up to 32. `tables` is scratch of M * Kp * 8 bytes. The int16 sums stay exact for 64
// steps (64 * 508 < 32768), then go to int32.
API void xtc_gemv_lut(int M, int N, int Kp, int gl, const int8_t* q, const float* sx, const int32_t* qsum,
                      const uint8_t* W, const float* scale_t, const float* min_t, int Np32, const float* bias, float* y,
                      int ldy, int beta, uint8_t* tables) {
    const int S = Kp / 4, G = Kp / gl, spg = gl / 4, blocks = (N + 31) / 32;
    for (int m = 0; m < M; m++) build_tables(q + (size_t)m * Kp, S, tables + (size_t)m * S * 32);
    const __m256i low4 = _mm256_set1_epi8(0x0F);
#pragma omp parallel for NT schedule(static) if ((double)M * N * Kp > 2e5)
    for (int rb = 0; rb < blocks; rb++) {
        const uint8_t* wb = W + (size_t)rb * S * 16;
        for (int m = 0; m < M; m++) {
            const uint8_t* L = tables + (size_t)m * S * 32;
            __m256 f[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
            for (int g = 0; g < G; g++) {
                __m256i r[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                                _mm256_setzero_si256()};
                for (int s0 = g * spg; s0 < (g + 1) * spg; s0 += 64) {
                    int s1 = s0 + 64 < (g + 1) * spg ? s0 + 64 : (g + 1) * spg;
                    __m256i alo = _mm256_setzero_si256(), ahi = alo;
                    for (int s = s0; s < s1; s++) {
                        __m128i b = _mm_loadu_si128((const __m128i*)(wb + (size_t)s * 16));
                        __m256i v = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(b, 4), b), low4);
                        __m256i tlo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(L + (size_t)s * 32)));
                        __m256i thi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(L + (size_t)s * 32 + 16)));
                        __m256i lo = _mm256_shuffle_epi8(tlo, v), hi = _mm256_shuffle_epi8(thi, v);
                        alo = _mm256_add_epi16(alo, _mm256_unpacklo_epi8(lo, hi));  // rows 0-7 | 16-23
                        ahi = _mm256_add_epi16(ahi, _mm256_unpackhi_epi8(lo, hi));  // rows 8-15 | 24-31
                    }
                    r[0] = _mm256_add_epi32(r[0], _mm256_cvtepi16_epi32(_mm256_castsi256_si128(alo)));
                    r[1] = _mm256_add_epi32(r[1], _mm256_cvtepi16_epi32(_mm256_castsi256_si128(ahi)));
                    r[2] = _mm256_add_epi32(r[2], _mm256_cvtepi16_epi32(_mm256_extracti128_si256(alo, 1)));
                    r[3] = _mm256_add_epi32(r[3], _mm256_cvtepi16_epi32(_mm256_extracti128_si256(ahi, 1)));
                }
                const __m256 xs = _mm256_set1_ps((float)qsum[(size_t)m * G + g]);
                const float* sc = scale_t + (size_t)g * Np32 + (size_t)rb * 32;
                const float* mn = min_t + (size_t)g * Np32 + (size_t)rb * 32;
                for (int i = 0; i < 4; i++)
                    f[i] = _mm256_fmadd_ps(_mm256_loadu_ps(sc + 8 * i), _mm256_cvtepi32_ps(r[i]),
                                           _mm256_fmadd_ps(_mm256_loadu_ps(mn + 8 * i), xs, f[i]));
            }
            alignas(32) float v[32];
            const __m256 s = _mm256_set1_ps(sx[m]);
            for (int i = 0; i < 4; i++) _mm256_store_ps(v + 8 * i, _mm256_mul_ps(f[i], s));
            int n0 = rb * 32, cols = N - n0 < 32 ? N - n0 : 32;
            store_row(v, cols, bias ? bias + n0 : nullptr, y + (size_t)m * ldy + n0, beta);
        }
    }
}

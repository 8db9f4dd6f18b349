// Affine k-bit linears (k = 1..4) on 8-bit activations, the packed format's general case:
//   w[r, j] = scale[r, g] * q[r, j] + min[r, g],  q unsigned in [0, 2^k - 1], g = j / gl,
//   y[t, r] = sx[t] * sum_g (scale[r, g] * sum_{j in g} q[r, j] x[t, j] + min[r, g] * xsum[t, g]) + bias[r],
// with x the signed 8-bit activation codes of token t, sx its scale and xsum its code sums per
// group. Unsigned codes times signed bytes is exactly what vpmaddubsw (AVX2) and vpdpbusd
// (AVX-512 VNNI) multiply; the integer sums are exact, only the group epilogue is fp32.
//
// In-memory weight layout (built at load time by xtc.infer.layers.AffineLinear; the on-disk
// layout is the plain bit-packed one): rows in blocks of 16, the input dimension in chunks of 32
// (zero-padded), a block's chunks contiguous. A chunk is 64 * k bytes of 64-byte "units"; in a
// unit, bytes 4 i .. 4 i + 3 belong to row i of the block and hold one "step" of 4 consecutive
// inputs in each bit field: exactly the operand shape of vpdpbusd (16 rows x 4 inputs, one
// zmm) and of vpmaddubsw + vpmaddwd (8 rows x 4 inputs, one ymm: AVX2 takes a unit as two ymm).
//   k = 1, 2, 4: unit u holds steps u * (8 / k) + f in bits [f k, f k + k) (f = field);
//   k = 3: two units of 2-bit low parts (as k = 2), then one unit of high bits (as k = 1).
// Unpacking a field is a shift and a mask per 64 bytes. Scales and mins: fp16, per block and
// group 16 scales then 16 mins (`sm`), read with F16C.
#include "common.h"

#if XTC_AVX512
// One 16-row block is one 512-bit vector: 16 int32 / fp32 lanes = the block's rows.
struct Wv { __m512i v; };  // 64 weight bytes (16 rows x 4 inputs)
struct Xv { __m512i v; };  // 4 activation bytes, broadcast
struct Cv { __m512i v; };  // a chunk's partial sums (int32)
struct Iv { __m512i v; };  // a group's sums (int32)
struct Fv { __m512 v; };   // fp32 results
static inline Wv w_load(const uint8_t* p) { return {_mm512_loadu_si512(p)}; }
static inline Wv w_and(Wv w, int mask) { return {_mm512_and_si512(w.v, _mm512_set1_epi8((char)mask))}; }
static inline Wv w_srl(Wv w, int n) { return {_mm512_srli_epi16(w.v, (unsigned)n)}; }
static inline Wv w_sll(Wv w, int n) { return {_mm512_slli_epi16(w.v, (unsigned)n)}; }
static inline Wv w_or(Wv a, Wv b) { return {_mm512_or_si512(a.v, b.v)}; }
static inline Xv x_bcast(const int8_t* p) { return {_mm512_set1_epi32(load4(p))}; }
static inline Cv c_zero() { return {_mm512_setzero_si512()}; }
static inline Cv c_dot(Cv c, Wv w, Xv x) { return {_mm512_dpbusd_epi32(c.v, w.v, x.v)}; }
static inline Iv i_zero() { return {_mm512_setzero_si512()}; }
static inline Iv i_flush(Iv t, Cv c) { return {_mm512_add_epi32(t.v, c.v)}; }
static inline Fv f_zero() { return {_mm512_setzero_ps()}; }
static inline Fv f_half(const uint16_t* p) { return {_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p))}; }
// acc + scale * t + min * xs
static inline Fv f_group(Fv acc, Fv scale, Iv t, Fv mn, float xs) {
    return {_mm512_fmadd_ps(scale.v, _mm512_cvtepi32_ps(t.v), _mm512_fmadd_ps(mn.v, _mm512_set1_ps(xs), acc.v))};
}
static inline void f_store(float* p, Fv v, float s) { _mm512_storeu_ps(p, _mm512_mul_ps(v.v, _mm512_set1_ps(s))); }
#else
// One 16-row block is two 256-bit vectors (rows 0-7, rows 8-15).
struct Wv { __m256i lo, hi; };
struct Xv { __m256i v; };
struct Cv { __m256i lo, hi; };  // int16 pair sums: vpmaddubsw, added without widening
struct Iv { __m256i lo, hi; };  // int32
struct Fv { __m256 lo, hi; };
static inline Wv w_load(const uint8_t* p) {
    return {_mm256_loadu_si256((const __m256i*)p), _mm256_loadu_si256((const __m256i*)(p + 32))};
}
static inline Wv w_and(Wv w, int mask) {
    const __m256i m = _mm256_set1_epi8((char)mask);
    return {_mm256_and_si256(w.lo, m), _mm256_and_si256(w.hi, m)};
}
static inline Wv w_srl(Wv w, int n) { return {_mm256_srli_epi16(w.lo, n), _mm256_srli_epi16(w.hi, n)}; }
static inline Wv w_sll(Wv w, int n) { return {_mm256_slli_epi16(w.lo, n), _mm256_slli_epi16(w.hi, n)}; }
static inline Wv w_or(Wv a, Wv b) { return {_mm256_or_si256(a.lo, b.lo), _mm256_or_si256(a.hi, b.hi)}; }
static inline Xv x_bcast(const int8_t* p) { return {_mm256_set1_epi32(load4(p))}; }
static inline Cv c_zero() { return {_mm256_setzero_si256(), _mm256_setzero_si256()}; }
// The empty asm makes each sum exist in a register at this point: without it GCC re-associates a
// tile's chains of integer adds into trees, computes every product first and spills them all.
static inline __m256i in_order(__m256i v) {
    __asm__("" : "+x"(v));
    return v;
}
// int16 lanes stay exact over a chunk (8 steps): |sum| <= 8 * 2 * 15 * 127 = 30480 < 32768.
static inline Cv c_dot(Cv c, Wv w, Xv x) {
    return {in_order(_mm256_add_epi16(c.lo, _mm256_maddubs_epi16(w.lo, x.v))),
            in_order(_mm256_add_epi16(c.hi, _mm256_maddubs_epi16(w.hi, x.v)))};
}
static inline Iv i_zero() { return {_mm256_setzero_si256(), _mm256_setzero_si256()}; }
static inline Iv i_flush(Iv t, Cv c) {
    const __m256i ones = _mm256_set1_epi16(1);
    return {_mm256_add_epi32(t.lo, _mm256_madd_epi16(c.lo, ones)), _mm256_add_epi32(t.hi, _mm256_madd_epi16(c.hi, ones))};
}
static inline Fv f_zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
static inline Fv f_half(const uint16_t* p) {
    return {_mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p)), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(p + 8)))};
}
static inline Fv f_group(Fv acc, Fv scale, Iv t, Fv mn, float xs) {
    const __m256 x = _mm256_set1_ps(xs);
    return {_mm256_fmadd_ps(scale.lo, _mm256_cvtepi32_ps(t.lo), _mm256_fmadd_ps(mn.lo, x, acc.lo)),
            _mm256_fmadd_ps(scale.hi, _mm256_cvtepi32_ps(t.hi), _mm256_fmadd_ps(mn.hi, x, acc.hi))};
}
static inline void f_store(float* p, Fv v, float s) {
    const __m256 m = _mm256_set1_ps(s);
    _mm256_storeu_ps(p, _mm256_mul_ps(v.lo, m));
    _mm256_storeu_ps(p + 8, _mm256_mul_ps(v.hi, m));
}
#endif

// Steps per unit and units per chunk (k = 3 counts its two low units; the high unit comes last).
template <int BITS> struct Fields {
    static constexpr int width = BITS == 3 ? 2 : BITS;  // bits per field of a (low) unit
    static constexpr int per_unit = 8 / width;
    static constexpr int units = 8 / per_unit;
};

// Codes of step `step` (field f of a unit already loaded as `raw`; `hi`: the high-bit unit, k = 3).
template <int BITS>
static inline Wv unpack(Wv raw, Wv hi, int f, int step) {
    constexpr int width = Fields<BITS>::width;
    Wv q = w_and(f ? w_srl(raw, width * f) : raw, (1 << width) - 1);
    if (BITS == 3) {  // bit `step` of the high unit becomes bit 2 of the code (16-bit shifts, then mask)
        Wv h = step >= 2 ? w_srl(hi, step - 2) : w_sll(hi, 2 - step);
        q = w_or(q, w_and(h, 4));
    }
    return q;
}

struct AffineJob {
    int N, Kp, gl;
    const int8_t* x;       // (M, Kp) activation codes
    const float* sx;       // (M,) activation scales
    const int32_t* xsum;   // (M, Kp / gl) code sums per group
    const uint8_t* W;      // blocks of 16 rows, chunk layout (see the top)
    const uint16_t* sm;    // (blocks, groups, 32) fp16 scales then mins
    const float* bias;     // (N,) or null
    float* y;
    int ldy, beta;
};

// Independent partial-sum chains per (token, block): a dot-product instruction waits for the
// previous one into the same register (vpdpbusd: ~5 cycles), so a small tile (1 token: decoding)
// spreads a chunk's 8 steps over several registers. AVX2 adds int16 sums (1 cycle): one chain.
template <int MR, int NB> struct Chains {
#if XTC_AVX512
    static constexpr int n = MR * NB >= 8 ? 1 : 8 / (MR * NB);
#else
    static constexpr int n = 1;
#endif
};

// MR tokens x NB blocks of 16 rows, the whole input dimension. Per group: int sums T, then the
// fp32 epilogue; per chunk: partial sums A (int16 pairs on AVX2, int32 on AVX-512).
template <int BITS, int MR, int NB>
static void affine_tile(const AffineJob& J, int m0, int rb0) {
    using FL = Fields<BITS>;
    constexpr int P = Chains<MR, NB>::n;
    constexpr size_t chunk_bytes = 64 * BITS;
    const int C = J.Kp / 32, G = J.Kp / J.gl, cpg = J.gl / 32;
    const uint8_t* wb[NB];
    for (int j = 0; j < NB; j++) wb[j] = J.W + (size_t)(rb0 + j) * C * chunk_bytes;
    const int8_t* xr[MR];
    for (int i = 0; i < MR; i++) xr[i] = J.x + (size_t)(m0 + i) * J.Kp;
    Fv F[MR][NB];
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NB; j++) F[i][j] = f_zero();
    for (int g = 0; g < G; g++) {
        Iv T[MR][NB];
        for (int i = 0; i < MR; i++)
            for (int j = 0; j < NB; j++) T[i][j] = i_zero();
        for (int c = g * cpg; c < (g + 1) * cpg; c++) {
            Cv A[MR][NB][P];
            for (int i = 0; i < MR; i++)
                for (int j = 0; j < NB; j++)
                    for (int p = 0; p < P; p++) A[i][j][p] = c_zero();
            Wv hi[NB];
            for (int j = 0; j < NB; j++) hi[j] = BITS == 3 ? w_load(wb[j] + (size_t)c * chunk_bytes + 128) : Wv{};
#pragma GCC unroll 8
            for (int u = 0; u < FL::units; u++) {
                Wv raw[NB];
                for (int j = 0; j < NB; j++) raw[j] = w_load(wb[j] + (size_t)c * chunk_bytes + 64 * u);
#pragma GCC unroll 8
                for (int f = 0; f < FL::per_unit; f++) {
                    const int step = u * FL::per_unit + f;
                    Wv w[NB];
                    for (int j = 0; j < NB; j++) w[j] = unpack<BITS>(raw[j], hi[j], f, step);
                    for (int i = 0; i < MR; i++) {
                        const Xv xb = x_bcast(xr[i] + 32 * c + 4 * step);
                        for (int j = 0; j < NB; j++) A[i][j][step % P] = c_dot(A[i][j][step % P], w[j], xb);
                    }
                }
            }
            for (int i = 0; i < MR; i++)
                for (int j = 0; j < NB; j++)
                    for (int p = 0; p < P; p++) T[i][j] = i_flush(T[i][j], A[i][j][p]);
        }
        for (int j = 0; j < NB; j++) {
            const uint16_t* sm = J.sm + ((size_t)(rb0 + j) * G + g) * 32;
            const Fv scale = f_half(sm), mn = f_half(sm + 16);
            for (int i = 0; i < MR; i++) F[i][j] = f_group(F[i][j], scale, T[i][j], mn, (float)J.xsum[(size_t)(m0 + i) * G + g]);
        }
    }
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NB; j++) {
            alignas(64) float v[16];
            f_store(v, F[i][j], J.sx[m0 + i]);
            const int n0 = (rb0 + j) * 16, cols = J.N - n0 < 16 ? J.N - n0 : 16;
            store_row(v, cols, J.bias ? J.bias + n0 : nullptr, J.y + (size_t)(m0 + i) * J.ldy + n0, J.beta);
        }
}

// Matrix tiles: 4 tokens x 2 blocks on AVX-512 (32 registers), 4 tokens x 1 block on AVX2 (16
// registers: the int16 partial sums alone take 8).
#if XTC_AVX512
#define GEMM_NB 2
#else
#define GEMM_NB 1
#endif

typedef void (*affine_fn)(const AffineJob&, int, int);
#define TILES_MR(B, NB) {affine_tile<B, 1, NB>, affine_tile<B, 2, NB>, affine_tile<B, 3, NB>, affine_tile<B, 4, NB>}
#if GEMM_NB == 2
#define TILES(B) {TILES_MR(B, 1), TILES_MR(B, 2)}
#else
#define TILES(B) {TILES_MR(B, 1)}
#endif
static const affine_fn AFFINE_TILES[4][GEMM_NB][4] = {TILES(1), TILES(2), TILES(3), TILES(4)};
#undef TILES
#undef TILES_MR

// y[M, N] (+)= the affine product (see the top) plus bias; beta = 1 adds to y (a residual).
// Kp: the padded input width (a multiple of 32); gl: the group length (a multiple of 32 dividing
// Kp; Kp for one group per row). Up to 4 tokens run as a matrix-vector product (threads split the
// row blocks, each weight read once); more run as a matrix product in blocks of `mb` tokens,
// tiles of 4 tokens x GEMM_NB blocks whose weights stay in L1 while the tokens stream past.
API void xtc_affine(int bits, int M, int N, int Kp, int gl, const int8_t* x, const float* sx, const int32_t* xsum,
                    const uint8_t* W, const uint16_t* sm, const float* bias, float* y, int ldy, int beta, int mb) {
    if (bits < 1 || bits > 4 || M < 1) return;
    const AffineJob J = {N, Kp, gl, x, sx, xsum, W, sm, bias, y, ldy, beta};
    const int blocks = (N + 15) / 16;
    const affine_fn(*tiles)[4] = AFFINE_TILES[bits - 1];
    if (M <= 4) {
        const affine_fn tile = tiles[0][M - 1];
#pragma omp parallel for NT schedule(static) if ((double)M * N * Kp > 2e5)
        for (int rb = 0; rb < blocks; rb++) tile(J, 0, rb);
        return;
    }
    const int units = (blocks + GEMM_NB - 1) / GEMM_NB;
#pragma omp parallel NT if ((double)M * N * Kp > 2e5)
    for (int mb0 = 0; mb0 < M; mb0 += mb) {
        const int mb1 = mb0 + mb < M ? mb0 + mb : M;
#pragma omp for schedule(static) nowait
        for (int p = 0; p < units; p++) {
            const int rb0 = GEMM_NB * p, nb = blocks - rb0 < GEMM_NB ? blocks - rb0 : GEMM_NB;
            for (int m0 = mb0; m0 < mb1; m0 += 4) {
                const int mr = mb1 - m0 < 4 ? mb1 - m0 : 4;
                tiles[nb - 1][mr - 1](J, m0, rb0);
            }
        }
    }
}

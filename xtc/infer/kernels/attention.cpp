// Attention over the key/value cache, and the rotary embedding that writes keys and values into it.
// 256-bit code in both builds: attention is a small share of the time and bound by the cache reads.
#include "common.h"

// Softmax numerators of one row of scores in place, zeros from len to Lpad; returns 1 / their sum.
// All in 8-lane vectors, the last one masked (no scalar expf: its rounding is libm's), the sum as
// lanes then hsum_ps: the order xtc.infer.exact repeats.
static inline float softmax_row(float* sr, int len, int Lpad) {
    const int body = len & ~7;
    const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32(len - body), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256 minf = _mm256_set1_ps(-INFINITY);
    __m256 vm = minf;
    for (int j = 0; j < body; j += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(sr + j));
    if (body < len) vm = _mm256_max_ps(vm, _mm256_blendv_ps(minf, _mm256_maskload_ps(sr + body, tail), _mm256_castsi256_ps(tail)));
    const __m256 vmx = _mm256_set1_ps(hmax_ps(vm));
    __m256 vsum = _mm256_setzero_ps();
    for (int j = 0; j < body; j += 8) {
        const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(sr + j), vmx));
        _mm256_storeu_ps(sr + j, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    if (body < len) {  // masked loads and stores only here: AMD's masked stores are slow
        const __m256 e = _mm256_and_ps(exp256(_mm256_sub_ps(_mm256_maskload_ps(sr + body, tail), vmx)), _mm256_castsi256_ps(tail));
        _mm256_maskstore_ps(sr + body, tail, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    for (int j = len; j < Lpad; j++) sr[j] = 0.0f;  // future keys are masked
    return 1.0f / hsum_ps(vsum);
}

// Causal attention of n new queries (positions start..start+n-1) over the cache.
// q: token i, head h at q[i*ldq + h*hd]. Keys are stored in panels of 16 positions,
// (KVH, cap/16, hd, 16), so that 16 keys x hd are contiguous; values (KVH, cap, hd).
// Rows (query, head) sharing a kv head are processed R <= 4 at a time: scores as
// broadcast(q[d]) x 16 keys, then a softmax, then p x values in 8*DC-wide slices of hd.
template <int R, int DC>
static void attn_rows(const float* const* qr, const int* len, int Lmax, int hd, const float* KP,
                      const float* V, int cap, float scale, float* s, float* const* orow) {
    const int Lpad = (Lmax + 15) & ~15;
    const __m256 vs = _mm256_set1_ps(scale);
    for (int j0 = 0; j0 < Lpad; j0 += 16) {
        __m256 a0[R], a1[R];
        for (int r = 0; r < R; r++) a0[r] = a1[r] = _mm256_setzero_ps();
        const float* kp = KP + (size_t)j0 * hd;
        for (int d = 0; d < hd; d++) {
            __m256 k0 = _mm256_loadu_ps(kp + 16 * d), k1 = _mm256_loadu_ps(kp + 16 * d + 8);
            for (int r = 0; r < R; r++) {
                __m256 qb = _mm256_broadcast_ss(qr[r] + d);
                a0[r] = _mm256_fmadd_ps(qb, k0, a0[r]);
                a1[r] = _mm256_fmadd_ps(qb, k1, a1[r]);
            }
        }
        for (int r = 0; r < R; r++) {
            _mm256_storeu_ps(s + (size_t)r * cap + j0, _mm256_mul_ps(a0[r], vs));
            _mm256_storeu_ps(s + (size_t)r * cap + j0 + 8, _mm256_mul_ps(a1[r], vs));
        }
    }
    float inv[R];
    for (int r = 0; r < R; r++) inv[r] = softmax_row(s + (size_t)r * cap, len[r], Lpad);
    for (int d0 = 0; d0 < hd; d0 += 8 * DC) {
        __m256 a[R][DC];
        for (int r = 0; r < R; r++)
            for (int c = 0; c < DC; c++) a[r][c] = _mm256_setzero_ps();
        for (int j = 0; j < Lmax; j++) {
            const float* vr = V + (size_t)j * hd + d0;
            __m256 v[DC];
            for (int c = 0; c < DC; c++) v[c] = _mm256_loadu_ps(vr + 8 * c);
            for (int r = 0; r < R; r++) {
                __m256 p = _mm256_broadcast_ss(s + (size_t)r * cap + j);
                for (int c = 0; c < DC; c++) a[r][c] = _mm256_fmadd_ps(p, v[c], a[r][c]);
            }
        }
        for (int r = 0; r < R; r++)
            for (int c = 0; c < DC; c++)
                _mm256_storeu_ps(orow[r] + d0 + 8 * c, _mm256_mul_ps(a[r][c], _mm256_set1_ps(inv[r])));
    }
}

template <int DC>
static void attn_dispatch(int R, const float* const* qr, const int* len, int Lmax, int hd, const float* KP,
                          const float* V, int cap, float scale, float* s, float* const* orow) {
    switch (R) {
        case 1: attn_rows<1, DC>(qr, len, Lmax, hd, KP, V, cap, scale, s, orow); break;
        case 2: attn_rows<2, DC>(qr, len, Lmax, hd, KP, V, cap, scale, s, orow); break;
        case 3: attn_rows<3, DC>(qr, len, Lmax, hd, KP, V, cap, scale, s, orow); break;
        default: attn_rows<4, DC>(qr, len, Lmax, hd, KP, V, cap, scale, s, orow); break;
    }
}

static void attn_rows_scalar(int R, const float* const* qr, const int* len, int hd, const float* KP, const float* V,
                             float scale, float* s, int cap, float* const* orow) {
    for (int r = 0; r < R; r++) {
        float* sr = s + (size_t)r * cap;
        for (int j = 0; j < len[r]; j++) {
            float acc = 0.0f;
            for (int d = 0; d < hd; d++) acc += qr[r][d] * KP[(size_t)(j / 16) * 16 * hd + 16 * d + j % 16];
            sr[j] = acc * scale;
        }
        const float inv = softmax_row(sr, len[r], len[r]);
        for (int d = 0; d < hd; d++) {
            float acc = 0.0f;
            for (int j = 0; j < len[r]; j++) acc += sr[j] * V[(size_t)j * hd + d];
            orow[r][d] = acc * inv;
        }
    }
}

API void xtc_attention(int n, int start, int H, int KVH, int hd, const float* q, int ldq, const float* kp,
                       const float* vc, int cap, float* out, int ldo, float scale) {
    const int group = H / KVH;
    const int rows = n * group;  // per kv head, ordered (query, head in group)
    const int per = (rows + 3) / 4;
#pragma omp parallel NT if ((double)KVH * n * group * (start + n) * hd > 1e5)
    {
        float* s = (float*)aligned_alloc(32, sizeof(float) * 4 * (size_t)cap);
#pragma omp for schedule(dynamic, 2)
        for (int item = 0; item < KVH * per; item++) {
            int g = item / per, r0 = (item % per) * 4;
            int R = rows - r0 < 4 ? rows - r0 : 4;
            const float* qr[4];
            float* orow[4];
            int len[4], Lmax = 0;
            for (int r = 0; r < R; r++) {
                int i = (r0 + r) / group, h = g * group + (r0 + r) % group;
                qr[r] = q + (size_t)i * ldq + (size_t)h * hd;
                orow[r] = out + (size_t)i * ldo + (size_t)h * hd;
                len[r] = start + i + 1;
                Lmax = len[r] > Lmax ? len[r] : Lmax;
            }
            const float* KP = kp + (size_t)g * hd * cap;
            const float* V = vc + (size_t)g * cap * hd;
            if (hd % 16 == 0)
                attn_dispatch<2>(R, qr, len, Lmax, hd, KP, V, cap, scale, s, orow);
            else if (hd % 8 == 0)
                attn_dispatch<1>(R, qr, len, Lmax, hd, KP, V, cap, scale, s, orow);
            else
                attn_rows_scalar(R, qr, len, hd, KP, V, scale, s, cap, orow);
        }
        free(s);
    }
}

// Rotary embedding in place for `heads` heads of hd per token (transformers' rotate_half form).
API void xtc_rope(float* x, int n, int heads, int hd, int ld, const float* cos, const float* sin, int start) {
    const int half = hd / 2;
#pragma omp parallel for NT schedule(static) if (n > 16)
    for (int i = 0; i < n; i++) {
        const float* c = cos + (size_t)(start + i) * hd;
        const float* s = sin + (size_t)(start + i) * hd;
        for (int h = 0; h < heads; h++) {
            float* v = x + (size_t)i * ld + (size_t)h * hd;
            for (int d = 0; d < half; d++) {
                float a = v[d], bb = v[d + half];
                v[d] = a * c[d] - bb * s[d];
                v[d + half] = bb * c[d + half] + a * s[d + half];
            }
        }
    }
}

// Rotary embedding (if cos != NULL) on the q and k heads of a fused qkv output, then keys into
// the panel cache (KVH, cap/16, hd, 16) and values into (KVH, cap, hd) at positions start...
API void xtc_rope_kv(float* qkv, int n, int start, int H, int KVH, int hd, int ld, const float* cos,
                     const float* sin, float* kp, float* vc, int cap) {
    const int half = hd / 2;
#pragma omp parallel for NT schedule(static) if (n > 16)
    for (int i = 0; i < n; i++) {
        float* row = qkv + (size_t)i * ld;
        int pos = start + i;
        if (cos) {
            const float* c = cos + (size_t)pos * hd;
            const float* s = sin + (size_t)pos * hd;
            for (int h = 0; h < H + KVH; h++) {
                float* v = row + (size_t)h * hd;
                for (int d = 0; d < half; d++) {
                    float a = v[d], bb = v[d + half];
                    v[d] = a * c[d] - bb * s[d];
                    v[d + half] = bb * c[d + half] + a * s[d + half];
                }
            }
        }
        for (int g = 0; g < KVH; g++) {
            const float* k = row + (size_t)(H + g) * hd;
            const float* v = row + (size_t)(H + KVH + g) * hd;
            float* panel = kp + ((size_t)g * (cap / 16) + pos / 16) * hd * 16 + pos % 16;
            for (int d = 0; d < hd; d++) panel[16 * d] = k[d];
            memcpy(vc + ((size_t)g * cap + pos) * hd, v, sizeof(float) * hd);
        }
    }
}

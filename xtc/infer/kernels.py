"""The runtime's compiled CPU kernels: C++ (AVX2, FMA, OpenMP) built once with the system's g++
and loaded with ctypes, so the runtime needs neither torch nor a build step at install time.

`load()` returns the library, or None when it cannot be used (no compiler, no AVX2, build error,
`XTC_KERNELS=0`); the runtime then falls back to numpy. Builds are cached under
`$XDG_CACHE_HOME/xtc/kernels` (default `~/.cache/xtc/kernels`), keyed by the source's hash.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

SOURCE = r"""
// CPU kernels for xtc.runtime (AVX2 + FMA, OpenMP), loaded with ctypes; no torch needed.
//
// Binary linears: weights are bit-packed (bit 1 = +1, bit 0 = -1, 8 per byte, LSB first),
// activations are 8-bit codes q in [-127, 127] stored offset as u = q + 128 (uint8). With b the
// weight bit and w = 2b - 1:
//   sum_k w_k q_k = 2 sum_k b_k q_k - sum_k q_k,
//   sum_k b_k q_k = -T - 128 popcount(b),  T = sum_k u_k * (-b_k)    (vpmaddubsw: u8 x s8)
// T is accumulated exactly in int16 lanes (|pair| <= 510, flushed every 64 steps) and then int32,
// so the integer part is exact; only the per-row/group scales are floating point. Prefill (many
// rows) uses that matrix kernel (xtc_gemm_b1); decoding (a few rows) looks the sums up in
// per-token tables instead (xtc_gemv_lut), reading the weights at one bit each.
// Plain fp32 linears use a panel GEMM (xtc_gemm_f32); attention, norms, RoPE and activations
// have their own kernels, so one OpenMP thread pool does all the work.
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define API extern "C" __attribute__((visibility("default")))

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

API int xtc_version(void) { return 4; }

// Threads for every parallel region, whichever thread calls (omp_set_num_threads would only set
// the calling thread's default, and the language server runs inference on a worker thread).
static int xtc_threads = 0;
#define NT num_threads(xtc_threads > 0 ? xtc_threads : omp_get_max_threads())

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

// Per-row 8-bit activation quantisation, exactly as xtc.quant.quantize_activations:
// scale = max(amax, 1e-8) / 127, q = clamp(rint(x / scale)). Writes u = q + 128 over Kp columns
// (zero codes in the padding), the scale, and the code sum per group of gl columns.
static void quant_row(const float* xr, int K, int Kp, int gl, uint8_t* ur, float* sxm, int32_t* qs) {
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
        __m256 q = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(xr + k), vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q = _mm256_max_ps(_mm256_min_ps(q, qmax), qmin);
        __m256i qi = _mm256_cvtps_epi32(q);
        qs[k / gl] += hsum_epi32(qi);
        __m256i ui = _mm256_add_epi32(qi, _mm256_set1_epi32(128));
        __m128i p16 = _mm_packus_epi32(_mm256_castsi256_si128(ui), _mm256_extracti128_si256(ui, 1));
        __m128i p8 = _mm_packus_epi16(p16, p16);
        _mm_storel_epi64((__m128i*)(ur + k), p8);
    }
    for (; k < K; k++) {
        float q = nearbyintf(xr[k] / scale);
        q = q > 127.0f ? 127.0f : (q < -127.0f ? -127.0f : q);
        qs[k / gl] += (int32_t)q;
        ur[k] = (uint8_t)((int)q + 128);
    }
    for (; k < Kp; k++) ur[k] = 128;
}

API void xtc_quant(const float* x, int M, int K, int ldx, int Kp, int gl, uint8_t* u, float* sx, int32_t* qsum) {
    const int G = Kp / gl;
#pragma omp parallel for NT schedule(static) if (M > 8)
    for (int m = 0; m < M; m++)
        quant_row(x + (size_t)m * ldx, K, Kp, gl, u + (size_t)m * Kp, sx + m, qsum + (size_t)m * G);
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

// Norm then quantisation, for a binary linear's input (the normalised row never leaves the cache).
API void xtc_norm_quant(const float* x, int M, int K, const float* w, const float* b, float eps, int rms,
                        int Kp, int gl, uint8_t* u, float* sx, int32_t* qsum) {
    const int G = Kp / gl;
#pragma omp parallel NT if (M > 8)
    {
        float* row = (float*)malloc(sizeof(float) * (size_t)K);
#pragma omp for schedule(static)
        for (int m = 0; m < M; m++) {
            norm_row(x + (size_t)m * K, K, w, b, eps, rms, row);
            quant_row(row, K, Kp, gl, u + (size_t)m * Kp, sx + m, qsum + (size_t)m * G);
        }
        free(row);
    }
}

// Matrix kernel (many rows, prefill). The weight bits are first expanded to bytes in "lanes"
// layout: P[(nb * S + s) * 32 + j * 4 + t] = -bit(w[8 nb + j][4 s + t]) (0 or -1), S = Kp / 4,
// so that one vpmaddubsw of 4 broadcast activation bytes against 32 weight bytes gives 8 output
// columns x 2 pair sums: outputs land in SIMD lanes and need no horizontal reduction.
// Tiles of MR <= 4 rows x NR <= 2 blocks of 8 columns; int16 partial sums flushed to int32 every
// 64 steps (|sum| <= 64 * 510 < 32768) and at every group end.
static void expand_lanes(const uint8_t* bits, int N, int Kp, int nb, int8_t* P) {
    static uint64_t lut[256];
    static int ready = 0;
    if (!ready) {  // byte of 8 bits -> two 4-byte fields of 0x00 / 0xFF (benign race: same values)
        for (int b = 0; b < 256; b++) {
            uint64_t v = 0;
            for (int t = 0; t < 8; t++)
                if (b >> t & 1) v |= (uint64_t)0xFF << (8 * t);
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

#define LM(i, j) if (MR > i && NR > j) a##i##j = _mm256_add_epi16(a##i##j, _mm256_maddubs_epi16(x##i, w##j))
#define LF(i, j) if (MR > i && NR > j) T[i][j] = _mm256_add_epi32(T[i][j], _mm256_madd_epi16(a##i##j, ones))
template <int MR, int NR>
static void ltile(int m0, int nb0, int N, int Kp, int gl, const uint8_t* u, const float* sx, const int32_t* qsum,
                  const int8_t* P, const float* alpha_t, const int32_t* pc_t, int Np, const float* bias, float* y,
                  int ldy, int beta) {
    const int S = Kp / 4, G = Kp / gl, spg = gl / 4;
    const __m256i ones = _mm256_set1_epi16(1);
    const uint8_t* u0 = u + (size_t)m0 * Kp;
    const uint8_t* u1 = u0 + (MR > 1 ? Kp : 0);
    const uint8_t* u2 = u0 + (MR > 2 ? 2 * (size_t)Kp : 0);
    const uint8_t* u3 = u0 + (MR > 3 ? 3 * (size_t)Kp : 0);
    const int8_t* p0 = P + (size_t)nb0 * S * 32;
    const int8_t* p1 = p0 + (NR > 1 ? (size_t)S * 32 : 0);
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
                __m256i x0 = _mm256_set1_epi32(*(const int32_t*)(u0 + 4 * s));
                LM(0, 0); LM(0, 1);
                if (MR > 1) { __m256i x1 = _mm256_set1_epi32(*(const int32_t*)(u1 + 4 * s)); LM(1, 0); LM(1, 1); }
                if (MR > 2) { __m256i x2 = _mm256_set1_epi32(*(const int32_t*)(u2 + 4 * s)); LM(2, 0); LM(2, 1); }
                if (MR > 3) { __m256i x3 = _mm256_set1_epi32(*(const int32_t*)(u3 + 4 * s)); LM(3, 0); LM(3, 1); }
            }
            LF(0, 0); LF(0, 1); LF(1, 0); LF(1, 1); LF(2, 0); LF(2, 1); LF(3, 0); LF(3, 1);
        }
        for (int j = 0; j < NR; j++) {
            size_t n0 = (size_t)(nb0 + j) * 8;
            __m256i p = _mm256_slli_epi32(_mm256_loadu_si256((const __m256i*)(pc_t + (size_t)g * Np + n0)), 8);
            __m256 al = _mm256_loadu_ps(alpha_t + (size_t)g * Np + n0);
            for (int i = 0; i < MR; i++) {
                __m256i yi = _mm256_sub_epi32(_mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(T[i][j], 1)), p);
                yi = _mm256_sub_epi32(yi, _mm256_set1_epi32(qsum[(size_t)(m0 + i) * G + g]));
                F[i][j] = _mm256_fmadd_ps(al, _mm256_cvtepi32_ps(yi), F[i][j]);
            }
        }
    }
    for (int j = 0; j < NR; j++) {
        int n0 = (nb0 + j) * 8, cols = N - n0 < 8 ? N - n0 : 8;
        for (int i = 0; i < MR; i++) {
            alignas(32) float v[8];
            _mm256_store_ps(v, _mm256_mul_ps(F[i][j], _mm256_set1_ps(sx[m0 + i])));
            float* out = y + (size_t)(m0 + i) * ldy + n0;
            for (int c = 0; c < cols; c++) {
                float r = v[c] + (bias ? bias[n0 + c] : 0.0f);
                out[c] = beta ? out[c] + r : r;
            }
        }
    }
}
#undef LM
#undef LF

typedef void (*ltile_fn)(int, int, int, int, int, const uint8_t*, const float*, const int32_t*, const int8_t*,
                         const float*, const int32_t*, int, const float*, float*, int, int);
static const ltile_fn LTILES[4][2] = {
    {ltile<1, 1>, ltile<1, 2>}, {ltile<2, 1>, ltile<2, 2>}, {ltile<3, 1>, ltile<3, 2>}, {ltile<4, 1>, ltile<4, 2>}};

// y[M, N] (+)= (u - 128) @ W^T for binary W (bit-packed N x Kp/8), scaled per row/group, plus bias;
// beta = 1 adds to y (a residual). alpha_t / pc_t: scales and bit counts as (groups, Np), Np = N
// rounded up to 32 (zero padded). `P` is scratch of (N rounded up to 8) * Kp bytes. Use for M >= a
// few rows.
API void xtc_gemm_b1(int M, int N, int Kp, int gl, const uint8_t* u, const float* sx, const int32_t* qsum,
                     const uint8_t* bits, const float* alpha_t, const int32_t* pc_t, const float* bias,
                     float* y, int ldy, int beta, int8_t* P, int mb) {
    const int nblocks = (N + 7) / 8, Np = (N + 31) / 32 * 32;  // Np: row stride of alpha_t / pc_t
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
                    LTILES[mr - 1][nr - 1](m0, nb0, N, Kp, gl, u, sx, qsum, P, alpha_t, pc_t, Np, bias, y, ldy, beta);
                }
            }
        }
    }
}

// Matrix-vector kernel for decoding (T-MAC style lookup tables). For each group of 4 activation
// codes q, a 16-entry table holds the sum of q over every subset (the weights that are +1); the
// 4 weight bits of a row are the index. Tables are int16, split in low and high bytes so that
// vpshufb looks up 32 rows at once. Weights in "lut" layout: W[(rb * S + s) * 16 + i] holds the
// nibble (k = 4s..4s+3) of row 32 rb + i (low half) and of row 32 rb + 16 + i (high half).
// sum_k w_k q_k = 2 sum_s E_s[nibble] - sum_k q_k.
static void build_tables(const uint8_t* ur, int S, uint8_t* L) {
    for (int s = 0; s < S; s++) {
        int q0 = ur[4 * s] - 128, q1 = ur[4 * s + 1] - 128, q2 = ur[4 * s + 2] - 128, q3 = ur[4 * s + 3] - 128;
        uint8_t* t = L + (size_t)s * 32;
        for (int v = 0; v < 16; v++) {
            int e = (v & 1 ? q0 : 0) + (v & 2 ? q1 : 0) + (v & 4 ? q2 : 0) + (v & 8 ? q3 : 0);
            t[v] = (uint8_t)(e & 0xFF);
            t[16 + v] = (uint8_t)((e >> 8) & 0xFF);
        }
    }
}

// y[M, N] (+)= the binary product for a few rows. alpha_t: (groups, Np32), Np32 = N rounded up to
// 32. `tables` is scratch of M * Kp * 8 bytes.
API void xtc_gemv_lut(int M, int N, int Kp, int gl, const uint8_t* u, const float* sx, const int32_t* qsum,
                      const uint8_t* W, const float* alpha_t, int Np32, const float* bias, float* y, int ldy,
                      int beta, uint8_t* tables) {
    const int S = Kp / 4, G = Kp / gl, spg = gl / 4, blocks = (N + 31) / 32;
    for (int m = 0; m < M; m++) build_tables(u + (size_t)m * Kp, S, tables + (size_t)m * S * 32);
    const __m256i low4 = _mm256_set1_epi8(0x0F);
#pragma omp parallel for NT schedule(static) if ((double)M * N * Kp > 2e5)
    for (int rb = 0; rb < blocks; rb++) {
        const uint8_t* wb = W + (size_t)rb * S * 16;
        for (int m = 0; m < M; m++) {
            const uint8_t* L = tables + (size_t)m * S * 32;
            __m256 f0 = _mm256_setzero_ps(), f1 = f0, f2 = f0, f3 = f0;
            for (int g = 0; g < G; g++) {
                __m256i r0 = _mm256_setzero_si256(), r1 = r0, r2 = r0, r3 = r0;
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
                    r0 = _mm256_add_epi32(r0, _mm256_cvtepi16_epi32(_mm256_castsi256_si128(alo)));
                    r1 = _mm256_add_epi32(r1, _mm256_cvtepi16_epi32(_mm256_castsi256_si128(ahi)));
                    r2 = _mm256_add_epi32(r2, _mm256_cvtepi16_epi32(_mm256_extracti128_si256(alo, 1)));
                    r3 = _mm256_add_epi32(r3, _mm256_cvtepi16_epi32(_mm256_extracti128_si256(ahi, 1)));
                }
                const __m256i qs = _mm256_set1_epi32(qsum[(size_t)m * G + g]);
                const float* al = alpha_t + (size_t)g * Np32 + (size_t)rb * 32;
                f0 = _mm256_fmadd_ps(_mm256_loadu_ps(al), _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_slli_epi32(r0, 1), qs)), f0);
                f1 = _mm256_fmadd_ps(_mm256_loadu_ps(al + 8), _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_slli_epi32(r1, 1), qs)), f1);
                f2 = _mm256_fmadd_ps(_mm256_loadu_ps(al + 16), _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_slli_epi32(r2, 1), qs)), f2);
                f3 = _mm256_fmadd_ps(_mm256_loadu_ps(al + 24), _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_slli_epi32(r3, 1), qs)), f3);
            }
            alignas(32) float v[32];
            const __m256 s = _mm256_set1_ps(sx[m]);
            _mm256_store_ps(v, _mm256_mul_ps(f0, s));
            _mm256_store_ps(v + 8, _mm256_mul_ps(f1, s));
            _mm256_store_ps(v + 16, _mm256_mul_ps(f2, s));
            _mm256_store_ps(v + 24, _mm256_mul_ps(f3, s));
            int n0 = rb * 32, cols = N - n0 < 32 ? N - n0 : 32;
            float* out = y + (size_t)m * ldy + n0;
            for (int c = 0; c < cols; c++) {
                float r = v[c] + (bias ? bias[n0 + c] : 0.0f);
                out[c] = beta ? out[c] + r : r;
            }
        }
    }
}

// fp32 linear layers (plain models): weights packed in panels of 16 output columns,
// P[(n / 16) * K * 16 + k * 16 + n % 16] = W[n][k], zero-padded to a multiple of 16 columns.
// Micro-kernel: MR rows x 16 columns, broadcast x[m][k] times a panel row (BLIS-style).
// (Accumulators are named variables, not an array: GCC keeps arrays of vectors in memory.)
template <int MR>
static void f32_tile(int m0, int p, int N, int K, const float* x, int ldx, const float* P, const float* bias,
                     float* y, int ldy, int beta) {
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
        __m256 w0 = _mm256_loadu_ps(pan + 16 * k), w1 = _mm256_loadu_ps(pan + 16 * k + 8), xb;
        xb = _mm256_broadcast_ss(x0 + k);
        c00 = _mm256_fmadd_ps(xb, w0, c00);
        c01 = _mm256_fmadd_ps(xb, w1, c01);
        if (MR > 1) {
            xb = _mm256_broadcast_ss(x1 + k);
            c10 = _mm256_fmadd_ps(xb, w0, c10);
            c11 = _mm256_fmadd_ps(xb, w1, c11);
        }
        if (MR > 2) {
            xb = _mm256_broadcast_ss(x2 + k);
            c20 = _mm256_fmadd_ps(xb, w0, c20);
            c21 = _mm256_fmadd_ps(xb, w1, c21);
        }
        if (MR > 3) {
            xb = _mm256_broadcast_ss(x3 + k);
            c30 = _mm256_fmadd_ps(xb, w0, c30);
            c31 = _mm256_fmadd_ps(xb, w1, c31);
        }
        if (MR > 4) {
            xb = _mm256_broadcast_ss(x4 + k);
            c40 = _mm256_fmadd_ps(xb, w0, c40);
            c41 = _mm256_fmadd_ps(xb, w1, c41);
        }
        if (MR > 5) {
            xb = _mm256_broadcast_ss(x5 + k);
            c50 = _mm256_fmadd_ps(xb, w0, c50);
            c51 = _mm256_fmadd_ps(xb, w1, c51);
        }
    }
    int n0 = p * 16, cols = N - n0 < 16 ? N - n0 : 16;
    alignas(32) float buf[6][16];
    _mm256_store_ps(buf[0], c00), _mm256_store_ps(buf[0] + 8, c01);
    _mm256_store_ps(buf[1], c10), _mm256_store_ps(buf[1] + 8, c11);
    _mm256_store_ps(buf[2], c20), _mm256_store_ps(buf[2] + 8, c21);
    _mm256_store_ps(buf[3], c30), _mm256_store_ps(buf[3] + 8, c31);
    _mm256_store_ps(buf[4], c40), _mm256_store_ps(buf[4] + 8, c41);
    _mm256_store_ps(buf[5], c50), _mm256_store_ps(buf[5] + 8, c51);
    for (int i = 0; i < MR; i++) {
        float* out = y + (size_t)(m0 + i) * ldy + n0;
        for (int j = 0; j < cols; j++) {
            float v = buf[i][j] + (bias ? bias[n0 + j] : 0.0f);
            out[j] = beta ? out[j] + v : v;
        }
    }
}

typedef void (*f32_tile_fn)(int, int, int, int, const float*, int, const float*, const float*, float*, int, int);
static const f32_tile_fn F32_TILES[6] = {f32_tile<1>, f32_tile<2>, f32_tile<3>, f32_tile<4>, f32_tile<5>, f32_tile<6>};

// y[M, N] (+)= x[M, K] @ W^T + bias, W in panels (see above).
API void xtc_gemm_f32(int M, int N, int K, const float* x, int ldx, const float* P, const float* bias, float* y,
                      int ldy, int beta) {
    const int panels = (N + 15) / 16;
    const int mb = 48;  // rows per block: 6-row tiles share each panel while it is in cache
#pragma omp parallel NT if ((double)M * N * K > 2e5)
    for (int mb0 = 0; mb0 < M; mb0 += mb) {
        int mb1 = mb0 + mb < M ? mb0 + mb : M;
#pragma omp for schedule(static) nowait
        for (int p = 0; p < panels; p++)
            for (int m0 = mb0; m0 < mb1; m0 += 6) {
                int mr = mb1 - m0 < 6 ? mb1 - m0 : 6;
                F32_TILES[mr - 1](m0, p, N, K, x, ldx, P, bias, y, ldy, beta);
            }
    }
}

// y[M, N] = x[M, K] @ W^T for a row-major fp32 table W (N x K): the head of a plain model.
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

// y[M, N] = x[M, K] @ (codes * scale)^T for an int8 table with a scale per row or group of gl
// (embeddings used as the output head); x stays fp32. K and gl are multiples of 8.
API void xtc_gemv_i8f(int M, int N, int K, int gl, const float* x, int ldx, const int8_t* codes,
                      const float* scale, float* y, int ldy) {
    const int G = K / gl;
#pragma omp parallel for NT schedule(static) if ((double)M * N * K > 1e5)
    for (int n = 0; n < N; n++) {
        const int8_t* cr = codes + (size_t)n * K;
        for (int m = 0; m < M; m++) {
            const float* xr = x + (size_t)m * ldx;
            float total = 0.0f;
            for (int g = 0; g < G; g++) {
                __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
                int k = g * gl, end = k + gl;
                for (; k + 16 <= end; k += 16) {
                    __m256 c0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(cr + k))));
                    __m256 c1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(cr + k + 8))));
                    a0 = _mm256_fmadd_ps(c0, _mm256_loadu_ps(xr + k), a0);
                    a1 = _mm256_fmadd_ps(c1, _mm256_loadu_ps(xr + k + 8), a1);
                }
                for (; k < end; k += 8) {
                    __m256 c0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(cr + k))));
                    a0 = _mm256_fmadd_ps(c0, _mm256_loadu_ps(xr + k), a0);
                }
                total += scale[(size_t)n * G + g] * hsum_ps(_mm256_add_ps(a0, a1));
            }
            y[(size_t)m * ldy + n] = total;
        }
    }
}

// Rows of an int8 table, dequantised: out[i] = codes[ids[i]] * scale (per row or group).
API void xtc_embed_i8(int n, const int64_t* ids, int K, int gl, const int8_t* codes, const float* scale, float* out) {
    const int G = K / gl;
    for (int i = 0; i < n; i++) {
        const int8_t* cr = codes + (size_t)ids[i] * K;
        const float* sr = scale + (size_t)ids[i] * G;
        float* o = out + (size_t)i * K;
        for (int k = 0; k < K; k++) o[k] = (float)cr[k] * sr[k / gl];
    }
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
    for (int r = 0; r < R; r++) {
        float* sr = s + (size_t)r * cap;
        float mx = -INFINITY;
        int j = 0;
        __m256 vm = _mm256_set1_ps(-INFINITY);
        for (; j + 8 <= len[r]; j += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(sr + j));
        mx = hmax_ps(vm);
        for (; j < len[r]; j++) mx = sr[j] > mx ? sr[j] : mx;
        __m256 vmx = _mm256_set1_ps(mx), vsum = _mm256_setzero_ps();
        j = 0;
        for (; j + 8 <= len[r]; j += 8) {
            __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(sr + j), vmx));
            _mm256_storeu_ps(sr + j, e);
            vsum = _mm256_add_ps(vsum, e);
        }
        float sum = hsum_ps(vsum);
        for (; j < len[r]; j++) {
            sr[j] = expf(sr[j] - mx);
            sum += sr[j];
        }
        for (; j < Lpad; j++) sr[j] = 0.0f;  // future keys are masked
        inv[r] = 1.0f / sum;
    }
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
        float mx = -INFINITY;
        for (int j = 0; j < len[r]; j++) {
            float acc = 0.0f;
            for (int d = 0; d < hd; d++) acc += qr[r][d] * KP[(size_t)(j / 16) * 16 * hd + 16 * d + j % 16];
            sr[j] = acc * scale;
            mx = sr[j] > mx ? sr[j] : mx;
        }
        float sum = 0.0f;
        for (int j = 0; j < len[r]; j++) {
            sr[j] = expf(sr[j] - mx);
            sum += sr[j];
        }
        for (int d = 0; d < hd; d++) {
            float acc = 0.0f;
            for (int j = 0; j < len[r]; j++) acc += sr[j] * V[(size_t)j * hd + d];
            orow[r][d] = acc / sum;
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

// RMSNorm (Llama) or LayerNorm (GPT-2) per row.
API void xtc_norm(const float* x, int M, int K, int ldx, const float* w, const float* b, float eps, int rms,
                  float* out, int ldo) {
#pragma omp parallel for NT schedule(static) if (M > 16)
    for (int m = 0; m < M; m++) norm_row(x + (size_t)m * ldx, K, w, b, eps, rms, out + (size_t)m * ldo);
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

// out[m, f] = silu(gu[m, f]) * gu[m, F + f]   (Llama MLP on the fused gate/up output)
API void xtc_silu_mul(const float* gu, int M, int F, int ld, float* out, int ldo) {
#pragma omp parallel for NT schedule(static) if (M > 8)
    for (int m = 0; m < M; m++) {
        const float* g = gu + (size_t)m * ld;
        const float* up = g + F;
        float* o = out + (size_t)m * ldo;
        int f = 0;
        const __m256 one = _mm256_set1_ps(1.0f);
        for (; f + 8 <= F; f += 8) {
            __m256 gv = _mm256_loadu_ps(g + f);
            __m256 sig = _mm256_div_ps(one, _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), gv))));
            _mm256_storeu_ps(o + f, _mm256_mul_ps(_mm256_mul_ps(gv, sig), _mm256_loadu_ps(up + f)));
        }
        for (; f < F; f++) o[f] = g[f] / (1.0f + expf(-g[f])) * up[f];
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

static inline float gelu_tanh1(float v) {
    return 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
}

// The MLP activation then quantisation (the down projection's input). kind 0: silu(gate) * up on a
// fused (M, 2F) gate/up output; kind 1: GELU (tanh) on (M, F).
API void xtc_act_quant(int kind, const float* a, int M, int F, int ld, int Kp, int gl, uint8_t* u, float* sx,
                       int32_t* qsum) {
    const int G = Kp / gl;
#pragma omp parallel NT if (M > 8)
    {
        float* row = (float*)malloc(sizeof(float) * (size_t)F);
#pragma omp for schedule(static)
        for (int m = 0; m < M; m++) {
            const float* g = a + (size_t)m * ld;
            int f = 0;
            if (kind == 0) {
                const float* up = g + F;
                const __m256 one = _mm256_set1_ps(1.0f);
                for (; f + 8 <= F; f += 8) {
                    __m256 gv = _mm256_loadu_ps(g + f);
                    __m256 sig = _mm256_div_ps(one, _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), gv))));
                    _mm256_storeu_ps(row + f, _mm256_mul_ps(_mm256_mul_ps(gv, sig), _mm256_loadu_ps(up + f)));
                }
                for (; f < F; f++) row[f] = g[f] / (1.0f + expf(-g[f])) * up[f];
            } else {
                for (; f < F; f++) row[f] = gelu_tanh1(g[f]);
            }
            quant_row(row, F, Kp, gl, u + (size_t)m * Kp, sx + m, qsum + (size_t)m * G);
        }
        free(row);
    }
}

// GELU, tanh approximation (GPT-2's gelu_new), in place.
API void xtc_gelu_tanh(float* x, long n) {
#pragma omp parallel for NT schedule(static) if (n > 65536)
    for (long i = 0; i < n; i++) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    }
}
"""

FLAGS = ["-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-fPIC", "-shared", "-fno-math-errno", "-std=c++17"]

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False
error: str | None = None  # why the kernels are unavailable (for `xtc bench` and the tests)

_P = ctypes.c_void_p
_I = ctypes.c_int
_F = ctypes.c_float
SIGNATURES = {
    "xtc_version": ([], _I),
    "xtc_set_threads": ([_I], None),
    "xtc_threads_used": ([], _I),
    "xtc_quant": ([_P, _I, _I, _I, _I, _I, _P, _P, _P], None),
    "xtc_gemm_b1": ([_I, _I, _I, _I, _P, _P, _P, _P, _P, _P, _P, _P, _I, _I, _P, _I], None),
    "xtc_gemv_lut": ([_I, _I, _I, _I, _P, _P, _P, _P, _P, _I, _P, _P, _I, _I, _P], None),
    "xtc_norm_quant": ([_P, _I, _I, _P, _P, _F, _I, _I, _I, _P, _P, _P], None),
    "xtc_rope_kv": ([_P, _I, _I, _I, _I, _I, _I, _P, _P, _P, _P, _I], None),
    "xtc_act_quant": ([_I, _P, _I, _I, _I, _I, _I, _P, _P, _P], None),
    "xtc_gemm_f32": ([_I, _I, _I, _P, _I, _P, _P, _P, _I, _I], None),
    "xtc_gemv_f32rows": ([_I, _I, _I, _P, _I, _P, _P, _I], None),
    "xtc_gemv_i8f": ([_I, _I, _I, _I, _P, _I, _P, _P, _P, _I], None),
    "xtc_embed_i8": ([_I, _P, _I, _I, _P, _P, _P], None),
    "xtc_attention": ([_I, _I, _I, _I, _I, _P, _I, _P, _P, _I, _P, _I, _F], None),
    "xtc_norm": ([_P, _I, _I, _I, _P, _P, _F, _I, _P, _I], None),
    "xtc_rope": ([_P, _I, _I, _I, _I, _P, _P, _I], None),
    "xtc_silu_mul": ([_P, _I, _I, _I, _P, _I], None),
    "xtc_gelu_tanh": ([_P, ctypes.c_long], None),
}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xtc" / "kernels"


def _cpu_ok() -> bool:
    if sys.platform != "linux":
        return False
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return False
    return {"avx2", "fma", "f16c"} <= set(flags)


def _build(target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    compiler = os.environ.get("CXX", "g++")
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / "kernels.cpp"
        src.write_text(SOURCE)
        out = Path(tmp) / target.name
        proc = subprocess.run([compiler, *FLAGS, str(src), "-o", str(out)], capture_output=True, text=True,
                              timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {proc.stderr.strip()[-400:]}")
        os.replace(out, target)  # atomic: concurrent builders never see a partial library


def load() -> ctypes.CDLL | None:
    """The compiled kernels (building them on first use), or None with `error` set."""
    global _lib, _tried, error
    with _lock:
        if _tried:
            return _lib
        _tried = True
        if os.environ.get("XTC_KERNELS", "1") in ("0", "false", "no"):
            error = "disabled by XTC_KERNELS=0"
            return None
        if not _cpu_ok():
            error = "this CPU lacks AVX2/FMA (or is not Linux x86-64)"
            return None
        digest = hashlib.sha256((SOURCE + " ".join(FLAGS)).encode()).hexdigest()[:16]
        target = cache_dir() / f"xtc-kernels-{digest}.so"
        # OpenMP threads spin ~300k iterations at each barrier before sleeping. On a machine
        # shared with other busy programs (another OpenMP/torch process above all), two spinning
        # teams starve each other: decoding measured 100x slower. A short spin keeps the quiet
        # speed (regions follow each other within microseconds) and yields the cores under load.
        # Only effective if libgomp is not loaded yet (it reads its settings once).
        if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
            os.environ["GOMP_SPINCOUNT"] = "1000"
        try:
            if not target.exists():
                _build(target)
            lib = ctypes.CDLL(str(target))
            for name, (args, res) in SIGNATURES.items():
                fn = getattr(lib, name)
                fn.argtypes, fn.restype = args, res
        except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as exc:
            error = f"{exc.__class__.__name__}: {str(exc)[:300]}"
            return None
        _lib = lib
        return lib

/* One draw per row of a (N, V) float32 logit matrix, the inner step of the KV-cache sampler.
 *
 * For row x (logits already divided by the temperature) the eager sampler spends four passes and
 * four N×V buffers on log_softmax, exp, cumsum and searchsorted. Here, per row:
 *
 *   m = max_j x_j,   e_j = exp(x_j − m),   Z = Σ_j e_j                    (one pass, e kept in scratch)
 *   token = min { j : Σ_{i ≤ j} e_i > u·Z }                                 (inverse CDF, one uniform u)
 *   log p(token) = x_token − m − log Z                                      (the log-softmax at the draw)
 *
 * which is hyperr1.decoding.sample_categorical applied to softmax(x), with the same single uniform per
 * row, so the eager and the native sampler consume the same random stream. greedy takes the first
 * argmax instead (log p = −log Z). The search first walks sums of BLOCK consecutive e_j, then one
 * block, in double precision. A row holding NaN or +inf (or only −inf) gets token V − 1 and
 * log p = NaN, so that a diverged policy shows up as NaN log-probabilities rather than as plausible
 * samples; −inf logits (masked tokens) get e_j = 0 exactly and are never drawn.
 *
 * exp is a polynomial the compiler vectorises (no libm call): x = n ln2 + r with |r| ≤ ln2/2, e^r by
 * its degree-6 Taylor polynomial (relative error below 2e-7, about float32 rounding), 2^n from the
 * exponent bits; arguments below −87 give exactly 0. Rows are split over threads with OpenMP
 * (static schedule: the same result for any thread count, each row being computed by one thread).
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#define BLOCK 16
#define MIN_ELEMENTS_PER_THREAD 65536

/* Threads for `work` elements split into `parts` independent pieces (rows, heads): one per
 * MIN_ELEMENTS_PER_THREAD elements, at most `requested` and `parts`, at least 1. */
static int64_t thread_count(int64_t work, int64_t parts, int requested) {
    int64_t t = work / MIN_ELEMENTS_PER_THREAD;
    if (t > requested) t = requested;
    if (t > parts) t = parts;
    return t < 1 ? 1 : t;
}

static inline float exp_le0(float x) {
    const float keep = (float)(x >= -87.0f); /* exactly 0 below −87 and for −inf */
    const float xc = x < -87.0f ? -87.0f : x;
    const float n = rintf(xc * 1.44269504f);
    const float r = (xc - n * 0.693145752f) - n * 1.42860677e-6f; /* Cody–Waite: ln2 = hi + lo */
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale * keep;
}

/* max_j x_j of a row into *max; 0 when that row can be normalised, 1 when it holds NaN or +inf, or
 * only −inf (nothing with positive mass). */
static inline int row_max(const float *restrict x, int64_t v, float *max) {
    float m = -INFINITY;
    int nan = 0;
#pragma omp simd reduction(max : m) reduction(| : nan)
    for (int64_t j = 0; j < v; ++j) {
        m = x[j] > m ? x[j] : m;
        nan |= x[j] != x[j];
    }
    *max = m;
    return nan || m == INFINITY || m == -INFINITY;
}

static void sample_row(const float *restrict x, int64_t v, double u, int greedy, float *restrict e,
                       float *restrict block, int64_t *token, float *logp) {
    float m;
    if (row_max(x, v, &m)) {
        *token = v - 1;
        *logp = NAN;
        return;
    }
#pragma omp simd
    for (int64_t j = 0; j < v; ++j) e[j] = exp_le0(x[j] - m);
    const int64_t full = v / BLOCK, nb = (v + BLOCK - 1) / BLOCK;
    for (int64_t b = 0; b < full; ++b) {
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int j = 0; j < BLOCK; ++j) s += e[b * BLOCK + j];
        block[b] = s;
    }
    if (nb > full) {
        float s = 0.0f;
        for (int64_t j = full * BLOCK; j < v; ++j) s += e[j];
        block[full] = s;
    }
    double z = 0.0;
    for (int64_t b = 0; b < nb; ++b) z += block[b];
    int64_t t = 0;
    if (greedy) {
        while (x[t] != m) ++t;
    } else {
        const double target = u * z;
        double acc = 0.0;
        int64_t b = 0;
        while (b < nb - 1 && acc + block[b] <= target) acc += block[b++];
        t = b * BLOCK;
        const int64_t end = (b + 1) * BLOCK < v ? (b + 1) * BLOCK : v;
        while (t < end - 1 && (acc += e[t]) <= target) ++t;
        while (e[t] == 0.0f && t > 0) --t; /* rounding past the last positive e_j: step back onto it */
    }
    *token = t;
    *logp = (x[t] - m) - (float)log(z);
}

/* logits (n, v), u (n) uniforms in [0, 1) (unused when greedy), scratch (threads, v + v/BLOCK + 1);
 * writes tokens (n) and logp (n). Returns 0, or 1 on bad sizes. */
int hyperr1_sample_rows(const float *logits, int64_t n, int64_t v, const float *u, int greedy, float *scratch,
                        int64_t scratch_rows, int64_t *tokens, float *logp, int threads) {
    if (n < 0 || v < 1) return 1;
    const int64_t t = thread_count(n * v, n, threads);
    if (t > scratch_rows) return 1;
    const int64_t stride = v + v / BLOCK + 1;
#pragma omp parallel for schedule(static) num_threads((int)t) if (t > 1)
    for (int64_t r = 0; r < n; ++r) {
        float *e = scratch + (int64_t)omp_get_thread_num() * stride;
        sample_row(logits + r * v, v, greedy ? 0.0 : (double)u[r], greedy, e, e + v, tokens + r, logp + r);
    }
    return 0;
}

/* Single-query attention, the attention of one decoding step (hyperr1.native.attend).
 *
 * For prompt (or row) b, head h and query g of that prompt, with keys k_j and values v_j (j < len,
 * and mask[b, j] != 0 where a mask is given):
 *
 *   s_j = scale · ⟨q, k_j⟩,   m = max_j s_j,   out = Σ_j exp(s_j − m) v_j / Σ_j exp(s_j − m)
 *
 * which is scaled_dot_product_attention of one query row, with the exp of sample_row. Self-attention
 * passes the cache (one query per row, G = 1, len = the positions decoded so far); cross-attention
 * the prompt's keys, its G samples as G queries and the prompt mask. A query with no key to attend
 * gets NaN, as scaled_dot_product_attention gives it.
 *
 * The keys are stored transposed, (d, len_max) per (b, h), so that the scores of a query are d
 * vectorised passes s += q_c · k_{c,·} over blocks of SCORE_BLOCK positions held in registers, and
 * the values (len_max, d), so that the output is len vectorised passes o += w_j · v_j over the d
 * components. A len_max that is a multiple of SCORE_BLOCK spares the masked tail of the last block
 * (its scores past len are computed from whatever the buffer holds, and dropped). Layouts (float32):
 *
 *   q   (B, G, H, d), query rows q_stride floats apart (q + (b·G + g)·q_stride + h·d)
 *   kt  (B, H, d, len_max) contiguous;  v (B, H, len_max, d) contiguous
 *   mask (B, len_max) bytes or NULL;  out (B, G, H, d) contiguous;  scratch (threads, len) floats
 *
 * (b, h) pairs are split over threads (static schedule: each output is computed by one thread, so
 * the result does not depend on the thread count). Returns 0, or 1 on bad sizes. */
#define SCORE_BLOCK 16

/* One (b, h) pair: its G queries against its keys. Inlined into hyperr1_attend once per head width in
 * ATTEND_WIDTHS (8, 12, 16, 32, 64) with d a constant, so that the loops over d unroll and stay in registers. */
static inline __attribute__((always_inline)) void attend_pair(
    const float *restrict qb, int64_t q_stride, const float *restrict kb, const float *restrict vb,
    const uint8_t *mb, int64_t g, int64_t h, const int64_t d, int64_t len, int64_t len_max, float scale,
    float *restrict ob, float *restrict s) {
    for (int64_t gi = 0; gi < g; ++gi) {
        const float *restrict qr = qb + gi * q_stride;
        float *restrict o = ob + gi * h * d;
        for (int64_t j0 = 0; j0 < len; j0 += SCORE_BLOCK) { /* SCORE_BLOCK scores in registers over all c */
            const int64_t n = len - j0 < SCORE_BLOCK ? len - j0 : SCORE_BLOCK;
            float acc[SCORE_BLOCK] = {0.0f};
            if (j0 + SCORE_BLOCK <= len_max) { /* a whole block (past len: unused, in bounds) */
                for (int64_t c = 0; c < d; ++c) {
                    const float qc = scale * qr[c];
                    const float *restrict kc = kb + c * len_max + j0;
#pragma omp simd
                    for (int64_t j = 0; j < SCORE_BLOCK; ++j) acc[j] += qc * kc[j];
                }
            } else {
                for (int64_t c = 0; c < d; ++c) {
                    const float qc = scale * qr[c];
                    const float *restrict kc = kb + c * len_max + j0;
#pragma omp simd
                    for (int64_t j = 0; j < n; ++j) acc[j] += qc * kc[j];
                }
            }
            for (int64_t j = 0; j < n; ++j) s[j0 + j] = acc[j];
        }
        if (mb) {
#pragma omp simd
            for (int64_t j = 0; j < len; ++j) s[j] = mb[j] ? s[j] : -INFINITY;
        }
        float m = -INFINITY;
#pragma omp simd reduction(max : m)
        for (int64_t j = 0; j < len; ++j) m = s[j] > m ? s[j] : m;
        if (m == -INFINITY) {
            for (int64_t c = 0; c < d; ++c) o[c] = NAN;
            continue;
        }
        float z = 0.0f;
#pragma omp simd reduction(+ : z)
        for (int64_t j = 0; j < len; ++j) {
            s[j] = exp_le0(s[j] - m);
            z += s[j];
        }
        const float inv = 1.0f / z;
        float acc[d > 0 && d <= 64 ? d : 1];
        if (d <= 64) {
            for (int64_t c = 0; c < d; ++c) acc[c] = 0.0f;
            for (int64_t j = 0; j < len; ++j) {
                const float w = s[j] * inv;
#pragma omp simd
                for (int64_t c = 0; c < d; ++c) acc[c] += w * vb[j * d + c];
            }
            for (int64_t c = 0; c < d; ++c) o[c] = acc[c];
        } else {
            for (int64_t c = 0; c < d; ++c) o[c] = 0.0f;
            for (int64_t j = 0; j < len; ++j) {
                const float w = s[j] * inv;
#pragma omp simd
                for (int64_t c = 0; c < d; ++c) o[c] += w * vb[j * d + c];
            }
        }
    }
}

#define ATTEND_PAIR(D) \
    attend_pair(qb, q_stride, kb, vb, mb, g, h, (D), len, len_max, scale, ob, s)

int hyperr1_attend(const float *q, int64_t q_stride, const float *kt, const float *v, const uint8_t *mask,
                   int64_t b, int64_t g, int64_t h, int64_t d, int64_t len, int64_t len_max, float scale,
                   float *out, float *scratch, int64_t scratch_rows, int threads) {
    if (b < 0 || g < 1 || h < 1 || d < 1 || len < 1 || len > len_max || q_stride < h * d) return 1;
    const int64_t t = thread_count(b * g * h * len * d, b * h, threads);
    if (t > scratch_rows) return 1;
#pragma omp parallel for schedule(static) num_threads((int)t) if (t > 1)
    for (int64_t bh = 0; bh < b * h; ++bh) {
        const int64_t bi = bh / h, hi = bh % h;
        const float *kb = kt + bh * len_max * d, *vb = v + bh * len_max * d;
        const float *qb = q + bi * g * q_stride + hi * d;
        const uint8_t *mb = mask ? mask + bi * len_max : NULL;
        float *ob = out + (bi * g * h + hi) * d;
        float *s = scratch + (int64_t)omp_get_thread_num() * len;
        switch (d) { /* ATTEND_WIDTHS: the usual head widths get d as a constant */
            case 8: ATTEND_PAIR(8); break;
            case 12: ATTEND_PAIR(12); break;
            case 16: ATTEND_PAIR(16); break;
            case 32: ATTEND_PAIR(32); break;
            case 64: ATTEND_PAIR(64); break;
            default: ATTEND_PAIR(d);
        }
    }
    return 0;
}

/* Teacher-forced log-probabilities of given tokens, the forward of hyperr1.decoding.TokenLogProbs.
 *
 * For row z (V logits) and its token y, with m = max_j z_j, e_j = exp(z_j − m) and Z = Σ_j e_j:
 *
 *   p_j = e_j / Z                                   (the softmax, kept for backward)
 *   log π_y = (z_y − m) − log Z                      (log-softmax at y)
 *   H = log Z − Σ_j e_j (z_j − m) / Z                (entropy −Σ p log p; a term with e_j = 0 counts 0)
 *
 * two passes over a row that stays in L1, where PyTorch's logsumexp, subtraction, exp, gather and
 * dot product take five passes and two fresh N×V buffers. A row holding NaN or +inf, or only −inf,
 * gets p, log π and H all NaN (PyTorch gives NaN there too, if not at every entry of p). Rows are
 * split over threads (static schedule: each row computed by one thread, whatever their number).
 * Returns 0, 1 on bad sizes, 2 when a token is outside [0, V) (then the outputs are incomplete). */
static int token_logprob_row(const float *restrict z, int64_t v, int64_t y, float *restrict p, float *logp,
                             float *ent) {
    if (y < 0 || y >= v) return 2;
    float m;
    if (row_max(z, v, &m)) {
        for (int64_t j = 0; j < v; ++j) p[j] = NAN;
        *logp = NAN;
        *ent = NAN;
        return 0;
    }
    float sum = 0.0f, sum_ez = 0.0f;
#pragma omp simd reduction(+ : sum, sum_ez)
    for (int64_t j = 0; j < v; ++j) {
        const float d = z[j] - m, e = exp_le0(d);
        p[j] = e;
        sum += e;
        sum_ez += e > 0.0f ? e * d : 0.0f; /* −inf logits: 0, not 0 · (−inf) */
    }
    const float inv = 1.0f / sum, log_sum = logf(sum);
#pragma omp simd
    for (int64_t j = 0; j < v; ++j) p[j] *= inv;
    *logp = (z[y] - m) - log_sum;
    *ent = log_sum - sum_ez * inv;
    return 0;
}

int hyperr1_token_logprobs(const float *logits, const int64_t *tokens, int64_t n, int64_t v, float *p, float *logp,
                           float *ent, int threads) {
    if (n < 0 || v < 1) return 1;
    const int64_t t = thread_count(n * v, n, threads);
    int status = 0;
#pragma omp parallel for schedule(static) num_threads((int)t) if (t > 1) reduction(| : status)
    for (int64_t r = 0; r < n; ++r) status |= token_logprob_row(logits + r * v, v, tokens[r], p + r * v, logp + r, ent + r);
    return status;
}

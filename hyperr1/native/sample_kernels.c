/* The C kernels of decoding (hyperr1.native, hyperr1.decoding), float32 on the CPU, in four parts:
 * the draw of a sampling step (hyperr1_sample_rows), the attention of one query row per sample
 * (hyperr1_attend) and teacher forcing's log-probabilities (hyperr1_token_logprobs); the whole decoder
 * stack of a sampling step (hyperr1_decoder_step); and the attention of whole sequences with its
 * backward (hyperr1_attention_forward / _backward). Each part's formulas head its section.
 *
 * One draw per row of a (N, V) float32 logit matrix, the inner step of the KV-cache sampler.
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
 * exp is exp_le0 of vector_math.h, a polynomial the compiler vectorises (relative error below 2e-7).
 * Rows are split over threads with OpenMP
 * (static schedule: the same result for any thread count, each row being computed by one thread).
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "vector_math.h"

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

/* Scores s_j (j < len) → e_j = exp(s_j − max s) in place, keys with mask byte 0 (mb not NULL) at −∞;
 * *inv = 1 / Σ_j e_j. Returns 1, leaving s undefined, when no key is left or a score is NaN or +∞. */
static inline int exp_scores(float *restrict s, const uint8_t *mb, int64_t len, float *inv) {
    if (mb) {
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) s[j] = mb[j] ? s[j] : -INFINITY;
    }
    float m;
    if (row_max(s, len, &m)) return 1;
    float z = 0.0f;
#pragma omp simd reduction(+ : z)
    for (int64_t j = 0; j < len; ++j) {
        s[j] = exp_le0(s[j] - m);
        z += s[j];
    }
    *inv = 1.0f / z;
    return 0;
}

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
        float inv;
        if (exp_scores(s, mb, len, &inv)) { /* no key to attend, or a NaN score */
            for (int64_t c = 0; c < d; ++c) o[c] = NAN;
            continue;
        }
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

/* CALL(width) with the usual head widths (ATTEND_WIDTHS: 8, 12, 16, 32, 64) as constants, so that the
 * loops over a head's components unroll and stay in registers; other widths at run time. */
#define WITH_CONSTANT_WIDTH(d, CALL) \
    switch (d) {                     \
        case 8: CALL(8); break;      \
        case 12: CALL(12); break;    \
        case 16: CALL(16); break;    \
        case 32: CALL(32); break;    \
        case 64: CALL(64); break;    \
        default: CALL(d);            \
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
        WITH_CONSTANT_WIDTH(d, ATTEND_PAIR)
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

/* Backward of the log-probabilities: ∂L/∂z_j = g (1_{j = y} − p_j) per row, for the upstream gradient g of
 * log π_y (entropy gets none), into grad (n, v): one pass per row where PyTorch's broadcast multiply and
 * scatter-add took two over a fresh N×V buffer. Returns 0, 1 on bad sizes, 2 when a token is outside [0, v)
 * (then nothing is written). */
int hyperr1_token_logprobs_backward(const float *p, const int64_t *tokens, const float *g, int64_t n, int64_t v,
                                    float *grad, int threads) {
    if (n < 0 || v < 1) return 1;
    for (int64_t r = 0; r < n; ++r)
        if (tokens[r] < 0 || tokens[r] >= v) return 2;
    const int64_t t = thread_count(n * v, n, threads);
#pragma omp parallel for schedule(static) num_threads((int)t) if (t > 1)
    for (int64_t r = 0; r < n; ++r) {
        const float gr = -g[r];
        const float *restrict pr = p + r * v;
        float *restrict out = grad + r * v;
#pragma omp simd
        for (int64_t j = 0; j < v; ++j) out[j] = gr * pr[j];
        out[tokens[r]] -= gr;
    }
    return 0;
}

/* One decoding step of the whole BART decoder stack for one token per row (hyperr1.native.DecoderStep).
 *
 * hyperr1.decoding.decode with a cache and native attention runs a step as ~30 PyTorch ops per layer
 * (linear layers, layer norms, GELU, cache writes), each a few µs of dispatch on tensors of
 * N × 48 floats; here every row goes through every layer in one call. For row r (prompt b = r / G),
 * token y and position t, with LN the layer norm over D features (biased variance, ε):
 *
 *   x = LN_emb(s · E[y] + P[t])
 *   per layer:  [q; k; v] = W_qkv x + b_qkv,  K[t] ← k, V[t] ← v
 *               x = LN_1(x + W_o · attn(q; K[0..t], V[0..t]) + b_o)
 *               x = LN_2(x + W_co · attn(W_cq x + b_cq; prompt b's keys and values, its mask) + b_co)
 *               x = LN_3(x + W_2 · gelu(W_1 x + b_1) + b_2)
 *
 * with attn of attend_pair (one query per head) and gelu below. Weights come packed in one buffer, per
 * layer, the matrices transposed to (in, out):
 *
 *   W_qkvᵀ (D, 3D), b_qkv (3D), W_oᵀ (D, D), b_o, γ_1, β_1, W_cqᵀ (D, D), b_cq, W_coᵀ (D, D), b_co,
 *   γ_2, β_2, W_1ᵀ (D, F), b_1 (F), W_2ᵀ (F, D), b_2, γ_3, β_3                     (layer_floats each)
 *
 * Rows go through the layers in blocks of ROWS: a product is then a small matrix product whose ROWS × 16
 * accumulators stay in registers while the weights stream past once per block (one row at a time, a
 * product at width 48 was bound by its loop overhead: 5 µs per row and step). Caches (float32,
 * contiguous): self keys transposed (L, N, H, d, T_max) and values (L, N, H, T_max, d); prompt keys
 * transposed (L, B, H, d, S_max) and values (L, B, H, S_max, d), mask (B, S_max) bytes; T_max and S_max
 * multiples of SCORE_BLOCK. Blocks are split over threads (static schedule: each row is computed by one
 * thread in the same order, so the result does not depend on the thread count). scratch holds
 * decoder_scratch(D, F, T_max, S_max) floats per thread. Returns 0, 1 on bad sizes, 2 for a token
 * outside [0, vocab). */
#define ROWS 8

static int64_t layer_floats(int64_t d, int64_t f) { return 6 * d * d + 13 * d + 2 * d * f + f; }

int64_t hyperr1_decoder_scratch(int64_t d, int64_t f, int64_t t_max, int64_t s_max) {
    return ROWS * (5 * d + f) + (t_max > s_max ? t_max : s_max); /* q|k|v, attention, product, MLP; scores */
}

/* y (rows, out) = x (rows, in) · wt (in, out) + b for rows ≤ ROWS, all row-major and contiguous: per block of
 * 16 outputs, rows × 16 sums in registers over the `in` inputs (rows a constant once inlined). */
static inline __attribute__((always_inline)) void linear_rows(const float *restrict x, int64_t rows, int64_t in,
                                                               const float *restrict wt, const float *restrict b,
                                                               int64_t out, float *restrict y) {
    for (int64_t o0 = 0; o0 < out; o0 += 16) {
        const int64_t w = out - o0 < 16 ? out - o0 : 16;
        float acc[ROWS][16];
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < 16; ++j) acc[r][j] = j < w ? b[o0 + j] : 0.0f;
        if (w == 16) {
            for (int64_t i = 0; i < in; ++i) {
                const float *restrict wi = wt + i * out + o0;
                for (int64_t r = 0; r < rows; ++r) {
                    const float xi = x[r * in + i];
#pragma omp simd
                    for (int64_t j = 0; j < 16; ++j) acc[r][j] += xi * wi[j];
                }
            }
        } else { /* the last, partial block of outputs */
            for (int64_t i = 0; i < in; ++i) {
                const float *restrict wi = wt + i * out + o0;
                for (int64_t r = 0; r < rows; ++r) {
                    const float xi = x[r * in + i];
                    for (int64_t j = 0; j < w; ++j) acc[r][j] += xi * wi[j];
                }
            }
        }
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < w; ++j) y[r * out + o0 + j] = acc[r][j];
    }
}

static void linear_block(const float *x, int64_t rows, int64_t in, const float *wt, const float *b, int64_t out,
                         float *y) {
    if (rows == ROWS)
        linear_rows(x, ROWS, in, wt, b, out, y);
    else
        linear_rows(x, rows, in, wt, b, out, y);
}

/* x ← LN(x + r) = γ (u − mean u) / √(var u + ε) + β with u = x + r (r may be NULL), over d features. */
static inline void add_layer_norm(float *restrict x, const float *restrict r, int64_t d, const float *restrict gamma,
                                  const float *restrict beta, float eps) {
    if (r) {
#pragma omp simd
        for (int64_t c = 0; c < d; ++c) x[c] += r[c];
    }
    float mean = 0.0f;
#pragma omp simd reduction(+ : mean)
    for (int64_t c = 0; c < d; ++c) mean += x[c];
    mean /= (float)d;
    float var = 0.0f;
#pragma omp simd reduction(+ : var)
    for (int64_t c = 0; c < d; ++c) var += (x[c] - mean) * (x[c] - mean);
    const float inv = 1.0f / sqrtf(var / (float)d + eps);
#pragma omp simd
    for (int64_t c = 0; c < d; ++c) x[c] = (x[c] - mean) * inv * gamma[c] + beta[c];
}

/* gelu(u) = u (1 + erf(u/√2)) / 2 through erfc(z), z = |u|/√2, by the Chebyshev fit of Numerical Recipes
 * (§6.2, erfcc: fractional error below 1.2e-7 for every z ≥ 0) with the vectorised exp of exp_le0:
 *
 *   erfc(z) = τ · exp(−z² − 1.26551223 + τ P(τ)),   τ = 1 / (1 + z/2),
 *   gelu(u) = u − u · erfc(z)/2  (u ≥ 0),   u · erfc(z)/2  (u < 0)
 *
 * so that the negative side, where 1 + erf is small, keeps its relative precision (glibc's erff is a
 * scalar call per element). */
static inline float gelu(float u) {
    const float z = fabsf(u) * 0.70710678f, t = 1.0f / (1.0f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    const float half_erfc = 0.5f * t * exp_le0(-z * z - 1.26551223f + t * p);
    return u >= 0.0f ? u - u * half_erfc : u * half_erfc;
}

/* One query of width d against len keys. */
static void attend_one(const float *q, const float *kb, const float *vb, const uint8_t *mb, int64_t d, int64_t len,
                       int64_t len_max, float scale, float *o, float *s) {
#define ATTEND_ONE(D) attend_pair(q, (D), kb, vb, mb, 1, 1, (D), len, len_max, scale, o, s)
    WITH_CONSTANT_WIDTH(d, ATTEND_ONE)
#undef ATTEND_ONE
}

/* Rows r0 .. r0 + rows − 1 (their embedded tokens in x) through every layer; x (rows, D) holds the output. */
static void decoder_block(const float *restrict weights, int64_t layers, int64_t d, int64_t f, int64_t h,
                          const float *restrict ln_emb, int64_t r0, int64_t rows, int64_t n, int64_t g,
                          float *self_kt, float *self_v, int64_t t, int64_t t_max, const float *cross_kt,
                          const float *cross_v, const uint8_t *mask, int64_t s_max, float eps, float *restrict x,
                          float *restrict scratch) {
    const int64_t dh = d / h, b = n / g;
    const float scale = 1.0f / sqrtf((float)dh);
    float *qkv = scratch, *a = qkv + ROWS * 3 * d, *y = a + ROWS * d, *hid = y + ROWS * d, *s = hid + ROWS * f;
    for (int64_t r = 0; r < rows; ++r) add_layer_norm(x + r * d, NULL, d, ln_emb, ln_emb + d, eps);
    for (int64_t l = 0; l < layers; ++l) {
        const float *w = weights + l * layer_floats(d, f);
        const float *w_qkv = w, *b_qkv = w_qkv + 3 * d * d, *w_o = b_qkv + 3 * d, *b_o = w_o + d * d;
        const float *ln1 = b_o + d, *w_cq = ln1 + 2 * d, *b_cq = w_cq + d * d, *w_co = b_cq + d;
        const float *b_co = w_co + d * d, *ln2 = b_co + d, *w_1 = ln2 + 2 * d, *b_1 = w_1 + d * f;
        const float *w_2 = b_1 + f, *b_2 = w_2 + f * d, *ln3 = b_2 + d;
        /* self-attention: this position's key and value into the cache, then attend over positions 0..t */
        linear_block(x, rows, d, w_qkv, b_qkv, 3 * d, qkv);
        for (int64_t r = 0; r < rows; ++r) {
            const float *qr = qkv + r * 3 * d;
            for (int64_t hi = 0; hi < h; ++hi) {
                const int64_t row = (l * n + r0 + r) * h + hi;
                float *kt = self_kt + row * dh * t_max, *v = self_v + row * t_max * dh;
                for (int64_t c = 0; c < dh; ++c) {
                    kt[c * t_max + t] = qr[d + hi * dh + c];
                    v[t * dh + c] = qr[2 * d + hi * dh + c];
                }
                attend_one(qr + hi * dh, kt, v, NULL, dh, t + 1, t_max, scale, a + r * d + hi * dh, s);
            }
        }
        linear_block(a, rows, d, w_o, b_o, d, y);
        for (int64_t r = 0; r < rows; ++r) add_layer_norm(x + r * d, y + r * d, d, ln1, ln1 + d, eps);
        /* cross-attention against the keys and values of each row's prompt */
        linear_block(x, rows, d, w_cq, b_cq, d, qkv);
        for (int64_t r = 0; r < rows; ++r) {
            const int64_t bi = (r0 + r) / g;
            for (int64_t hi = 0; hi < h; ++hi) {
                const int64_t row = (l * b + bi) * h + hi;
                attend_one(qkv + r * d + hi * dh, cross_kt + row * dh * s_max, cross_v + row * s_max * dh,
                           mask + bi * s_max, dh, s_max, s_max, scale, a + r * d + hi * dh, s);
            }
        }
        linear_block(a, rows, d, w_co, b_co, d, y);
        for (int64_t r = 0; r < rows; ++r) add_layer_norm(x + r * d, y + r * d, d, ln2, ln2 + d, eps);
        /* MLP */
        linear_block(x, rows, d, w_1, b_1, f, hid);
#pragma omp simd
        for (int64_t j = 0; j < rows * f; ++j) hid[j] = gelu(hid[j]);
        linear_block(hid, rows, f, w_2, b_2, d, y);
        for (int64_t r = 0; r < rows; ++r) add_layer_norm(x + r * d, y + r * d, d, ln3, ln3 + d, eps);
    }
}

int hyperr1_decoder_step(const float *weights, int64_t layers, int64_t d, int64_t f, int64_t h,
                         const float *embed, int64_t vocab, float embed_scale, const float *pos, const float *ln_emb,
                         const int64_t *tokens, int64_t n, int64_t g, float *self_kt, float *self_v, int64_t t,
                         int64_t t_max, const float *cross_kt, const float *cross_v, const uint8_t *mask,
                         int64_t s_max, float eps, float *out, float *scratch, int64_t scratch_rows, int threads) {
    if (layers < 1 || d < 1 || f < 1 || h < 1 || d % h || g < 1 || n % g || t < 0 || t >= t_max) return 1;
    if (t_max % SCORE_BLOCK || s_max < 1 || s_max % SCORE_BLOCK) return 1;
    for (int64_t r = 0; r < n; ++r)
        if (tokens[r] < 0 || tokens[r] >= vocab) return 2;
    const int64_t blocks = (n + ROWS - 1) / ROWS;
    const int64_t tc = thread_count(n * layers * layer_floats(d, f), blocks, threads);
    if (tc > scratch_rows) return 1;
    const int64_t stride = hyperr1_decoder_scratch(d, f, t_max, s_max);
#pragma omp parallel for schedule(static) num_threads((int)tc) if (tc > 1)
    for (int64_t blk = 0; blk < blocks; ++blk) {
        const int64_t r0 = blk * ROWS, rows = n - r0 < ROWS ? n - r0 : ROWS;
        float *x = out + r0 * d; /* the block's states are computed in place in the output */
        for (int64_t r = 0; r < rows; ++r) {
            const float *e = embed + tokens[r0 + r] * d;
#pragma omp simd
            for (int64_t c = 0; c < d; ++c) x[r * d + c] = embed_scale * e[c] + pos[c];
        }
        decoder_block(weights, layers, d, f, h, ln_emb, r0, rows, n, g, self_kt, self_v, t, t_max, cross_kt, cross_v,
                      mask, s_max, eps, x, scratch + (int64_t)omp_get_thread_num() * stride);
    }
    return 0;
}

/* Attention of whole sequences with its backward, for teacher forcing (hyperr1.decoding.attention).
 *
 * Per (b, h) pair, queries q_i (i < Lq), keys k_j and values v_j (j < Lk), width d, scale σ = 1/√d:
 *
 *   s_ij = σ ⟨q_i, k_j⟩ (−∞ where key j is masked, or j > i when causal),  P_i = softmax(s_i),  o_i = Σ_j P_ij v_j
 *
 * and backward, for the upstream gradient g_i = ∂L/∂o_i, with δ_i = ⟨g_i, o_i⟩ = Σ_j P_ij ⟨g_i, v_j⟩:
 *
 *   ∂L/∂v_j = Σ_i P_ij g_i,   ∂L/∂s_ij = P_ij (⟨g_i, v_j⟩ − δ_i),
 *   ∂L/∂q_i = σ Σ_j ∂L/∂s_ij k_j,   ∂L/∂k_j = σ Σ_i ∂L/∂s_ij q_i
 *
 * which is scaled_dot_product_attention's math. At the sizes of this package (L ≤ ~128, d ≤ 64) PyTorch's
 * flash-attention CPU kernel spends most of its 0.2 ms forward and 0.6 ms backward per call outside the
 * arithmetic; here forward keeps P (B, H, Lq, Lk) for backward. Layouts (float32, contiguous): q, o, g,
 * ∂q (B, H, Lq, d); k, v, ∂k, ∂v (B, H, Lk, d); p (B, H, Lq, Lk); mask (B, Lk) bytes or NULL. A query row
 * with no key to attend gets NaN, as in scaled_dot_product_attention. Pairs are split over threads
 * (static schedule: each pair computed by one thread, whatever their number). scratch holds
 * hyperr1_attention_scratch(d, Lk) floats per thread. Returns 0, or 1 on bad sizes. */
int64_t hyperr1_attention_scratch(int64_t d, int64_t lk) {
    /* keys (or values) transposed, QB = 4 rows of scores, the forward's key-bias row */
    return (d + 4 + 1) * ((lk + SCORE_BLOCK - 1) / SCORE_BLOCK * SCORE_BLOCK);
}

/* Keys transposed and padded with zeros to (d, lk_pad), lk_pad = lk rounded up to SCORE_BLOCK: attend_pair's layout. */
static inline void transpose_keys(const float *restrict k, int64_t lk, int64_t d, int64_t lk_pad, float *restrict kt) {
    for (int64_t c = 0; c < d; ++c) {
        for (int64_t j = 0; j < lk; ++j) kt[c * lk_pad + j] = k[j * d + c];
        for (int64_t j = lk; j < lk_pad; ++j) kt[c * lk_pad + j] = 0.0f;
    }
}

/* One (b, h) pair, QB queries at a time: each block of SCORE_BLOCK keys gets QB × SCORE_BLOCK score sums in
 * registers (one load of the transposed keys serves the QB queries), and the outputs QB × d sums over the
 * keys. One query at a time, both loops were chains of dependent multiply-adds (d long, then Lk long):
 * about 230 cycles per query at d = 12, Lk = 16. A causal block attends the keys its last query sees;
 * the others' later keys are masked. */
#define QB 4

static inline __attribute__((always_inline)) void attention_pair(
    const float *restrict q, const float *restrict k, const float *restrict v, const uint8_t *mb, int64_t lq,
    int64_t lk, const int64_t d, int causal, float scale, float *restrict o, float *restrict p,
    float *restrict scratch) {
    const int64_t lk_pad = (lk + SCORE_BLOCK - 1) / SCORE_BLOCK * SCORE_BLOCK;
    float *kt = scratch, *s = kt + d * lk_pad, *key_bias = s + QB * lk_pad; /* s: QB rows of lk_pad scores */
    transpose_keys(k, lk, d, lk_pad, kt);
    for (int64_t j = 0; j < lk_pad; ++j) key_bias[j] = j < lk && (!mb || mb[j]) ? 0.0f : -INFINITY;
    for (int64_t i0 = 0; i0 < lq; i0 += QB) {
        const int64_t nb = lq - i0 < QB ? lq - i0 : QB;
        const int64_t len = causal && i0 + nb < lk ? i0 + nb : lk; /* keys any query of the block sees */
        for (int64_t j0 = 0; j0 < len; j0 += SCORE_BLOCK) {
            float acc[QB][SCORE_BLOCK] = {{0.0f}};
            for (int64_t c = 0; c < d; ++c) {
                const float *restrict kc = kt + c * lk_pad + j0;
                for (int64_t r = 0; r < QB; ++r) {
                    const float qc = scale * q[(i0 + (r < nb ? r : 0)) * d + c]; /* rows past nb: discarded */
#pragma omp simd
                    for (int64_t j = 0; j < SCORE_BLOCK; ++j) acc[r][j] += qc * kc[j];
                }
            }
            for (int64_t r = 0; r < QB; ++r)
                for (int64_t j = 0; j < SCORE_BLOCK; ++j) s[r * lk_pad + j0 + j] = acc[r][j];
        }
        /* softmax of each query's scores into its row of p, over whole blocks of keys: masked keys, padding
         * and (causal) later keys at −∞, so that no loop runs a short scalar tail */
        const int64_t len_pad = (len + SCORE_BLOCK - 1) / SCORE_BLOCK * SCORE_BLOCK;
        for (int64_t r = 0; r < nb; ++r) {
            const int64_t i = i0 + r, end = causal ? i + 1 : lk_pad;
            float *restrict sr = s + r * lk_pad, *restrict pr = p + i * lk;
#pragma omp simd
            for (int64_t j = 0; j < len_pad; ++j) sr[j] = j < end ? sr[j] + key_bias[j] : -INFINITY;
            float inv;
            if (exp_scores(sr, NULL, len_pad, &inv)) { /* no key to attend (or a diverged query): NaN, as SDPA */
                for (int64_t j = 0; j < lk; ++j) pr[j] = NAN;
                continue;
            }
#pragma omp simd
            for (int64_t j = 0; j < lk; ++j) pr[j] = j < len_pad ? sr[j] * inv : 0.0f;
        }
        float acc[QB][d > 0 && d <= 64 ? d : 1]; /* a constant d ≤ 64: the sums stay in registers */
        float *restrict oa = d <= 64 ? &acc[0][0] : o + i0 * d;
        for (int64_t x = 0; x < QB * d; ++x)
            if (x < nb * d || d <= 64) oa[x] = 0.0f;
        for (int64_t j = 0; j < len; ++j) {
            const float *restrict vj = v + j * d;
            for (int64_t r = 0; r < nb; ++r) {
                const float w = p[(i0 + r) * lk + j];
#pragma omp simd
                for (int64_t c = 0; c < d; ++c) oa[r * d + c] += w * vj[c];
            }
        }
        if (d <= 64)
            for (int64_t x = 0; x < nb * d; ++x) o[i0 * d + x] = oa[x];
    }
}

#define ATTENTION_PAIR(D) \
    attention_pair(q + bh * lq * (D), k + bh * lk * (D), v + bh * lk * (D), mb, lq, lk, (D), causal, scale, \
                   o + bh * lq * (D), p + bh * lq * lk, sc)

int hyperr1_attention_forward(const float *q, const float *k, const float *v, const uint8_t *mask, int64_t b,
                              int64_t h, int64_t lq, int64_t lk, int64_t d, int causal, float scale, float *o,
                              float *p, float *scratch, int64_t scratch_rows, int threads) {
    if (b < 0 || h < 1 || lq < 1 || lk < 1 || d < 1) return 1;
    const int64_t t = thread_count(b * h * lq * lk * d, b * h, threads);
    if (t > scratch_rows) return 1;
#pragma omp parallel for schedule(static) num_threads((int)t) if (t > 1)
    for (int64_t bh = 0; bh < b * h; ++bh) {
        const uint8_t *mb = mask ? mask + (bh / h) * lk : NULL;
        float *sc = scratch + (int64_t)omp_get_thread_num() * hyperr1_attention_scratch(d, lk);
        WITH_CONSTANT_WIDTH(d, ATTENTION_PAIR)
    }
    return 0;
}

static inline __attribute__((always_inline)) void attention_pair_backward(
    const float *restrict q, const float *restrict k, const float *restrict v, const float *restrict o,
    const float *restrict p, const float *restrict g, int64_t lq, int64_t lk, const int64_t d, float scale,
    float *restrict gq, float *restrict gk, float *restrict gv, float *restrict vt, float *restrict ds) {
    const int64_t lk_pad = (lk + SCORE_BLOCK - 1) / SCORE_BLOCK * SCORE_BLOCK;
    transpose_keys(v, lk, d, lk_pad, vt); /* values transposed, (d, lk_pad): ⟨g_i, v_j⟩ as the scores */
    for (int64_t x = 0; x < lk * d; ++x) gk[x] = gv[x] = 0.0f;
    for (int64_t i0 = 0; i0 < lq; i0 += QB) { /* QB queries at a time, as in the forward */
        const int64_t nb = lq - i0 < QB ? lq - i0 : QB;
        for (int64_t j0 = 0; j0 < lk; j0 += SCORE_BLOCK) { /* ds_rj = ⟨g_r, v_j⟩ */
            float acc[QB][SCORE_BLOCK] = {{0.0f}};
            for (int64_t c = 0; c < d; ++c) {
                const float *restrict vc = vt + c * lk_pad + j0;
                for (int64_t r = 0; r < QB; ++r) {
                    const float gc = g[(i0 + (r < nb ? r : 0)) * d + c]; /* rows past nb: discarded */
#pragma omp simd
                    for (int64_t j = 0; j < SCORE_BLOCK; ++j) acc[r][j] += gc * vc[j];
                }
            }
            for (int64_t r = 0; r < QB; ++r)
                for (int64_t j = 0; j < SCORE_BLOCK; ++j) ds[r * lk_pad + j0 + j] = acc[r][j];
        }
        for (int64_t r = 0; r < nb; ++r) { /* σ ∂L/∂s_rj = σ P_rj (⟨g_r, v_j⟩ − δ_r) */
            const float *restrict gr = g + (i0 + r) * d, *restrict orow = o + (i0 + r) * d;
            const float *restrict pr = p + (i0 + r) * lk;
            float *restrict dr = ds + r * lk_pad;
            float delta = 0.0f;
#pragma omp simd reduction(+ : delta)
            for (int64_t c = 0; c < d; ++c) delta += gr[c] * orow[c];
#pragma omp simd
            for (int64_t j = 0; j < lk; ++j) dr[j] = pr[j] * (dr[j] - delta) * scale;
        }
        float acc[QB][d > 0 && d <= 64 ? d : 1]; /* ∂L/∂q of the block: a constant d ≤ 64 stays in registers */
        float *restrict qa = d <= 64 ? &acc[0][0] : gq + i0 * d;
        for (int64_t x = 0; x < QB * d; ++x)
            if (x < nb * d || d <= 64) qa[x] = 0.0f;
        for (int64_t j = 0; j < lk; ++j) {
            const float *restrict kj = k + j * d;
            float *restrict gkj = gk + j * d, *restrict gvj = gv + j * d;
            for (int64_t r = 0; r < nb; ++r) {
                const float sj = ds[r * lk_pad + j], pj = p[(i0 + r) * lk + j];
                const float *restrict qr = q + (i0 + r) * d, *restrict gr = g + (i0 + r) * d;
#pragma omp simd
                for (int64_t c = 0; c < d; ++c) {
                    qa[r * d + c] += sj * kj[c];
                    gkj[c] += sj * qr[c];
                    gvj[c] += pj * gr[c];
                }
            }
        }
        if (d <= 64)
            for (int64_t x = 0; x < nb * d; ++x) gq[i0 * d + x] = qa[x];
    }
}

#define ATTENTION_PAIR_BACKWARD(D)                                                                              \
    attention_pair_backward(q + bh * lq * (D), k + bh * lk * (D), v + bh * lk * (D), o + bh * lq * (D),            \
                            p + bh * lq * lk, g + bh * lq * (D), lq, lk, (D), scale, gq + bh * lq * (D),           \
                            gk + bh * lk * (D), gv + bh * lk * (D), sc,                                        \
                            sc + (D) * ((lk + SCORE_BLOCK - 1) / SCORE_BLOCK * SCORE_BLOCK))

int hyperr1_attention_backward(const float *q, const float *k, const float *v, const float *o, const float *p,
                               const float *g, int64_t b, int64_t h, int64_t lq, int64_t lk, int64_t d, float scale,
                               float *gq, float *gk, float *gv, float *scratch, int64_t scratch_rows, int threads) {
    if (b < 0 || h < 1 || lq < 1 || lk < 1 || d < 1) return 1;
    const int64_t t = thread_count(b * h * lq * lk * d, b * h, threads);
    if (t > scratch_rows) return 1;
#pragma omp parallel for schedule(static) num_threads((int)t) if (t > 1)
    for (int64_t bh = 0; bh < b * h; ++bh) {
        float *sc = scratch + (int64_t)omp_get_thread_num() * hyperr1_attention_scratch(d, lk);
        WITH_CONSTANT_WIDTH(d, ATTENTION_PAIR_BACKWARD)
    }
    return 0;
}

/* The output head and the draw of a sampling step, from the decoder states (hyperr1.native.HeadDraw).
 *
 * For row r with decoder state h (D): u = W_p h + b_p (k), the head's projection (W_p given transposed,
 * D × k). The Poincaré head (hyperr1.model, geometry.clipped_expmap0 and distance_kernels.c):
 *
 *   z = tanh(√c min(‖u‖, ρ)) · u / (√c ‖u‖)                      (exp₀ of u clipped to norm ρ)
 *   A = σ [z, ‖z‖², 1],  σ = c / max(1 − c‖z‖², ε)
 *   x_j = α · acosh(1 + 2 max(⟨A, B_j⟩, 0)) + b_j                  (α = −s/√c; Bᵀ given, (k + 2) × V)
 *
 * the Euclidean head x_j = ⟨u, U_j⟩ + b_j (Uᵀ given, k × V). The tempered logits x / T are drawn from as
 * by sample_row with the row's uniform (greedy without), and the step's bookkeeping is done in place, as
 * hyperr1.decoding._draw does it: a row already done gets the pad token, log p 0 and mask 0 (its
 * logits are not computed); a row that draws the end-of-sequence token is done from the next step on.
 * tokens, logp and mask point at this step's column of (N, T) buffers, stride floats (or ids) apart;
 * next (N) receives this step's tokens for the next decoding step. Rows are split over threads (each
 * row computed by one thread). scratch holds 2V + V/BLOCK + k + 3 floats per thread. Returns the number
 * of rows done after the step, or −1 on bad sizes. */
static void head_logits(const float *restrict h, int64_t d, const float *restrict wpt, const float *restrict bp,
                        int64_t k, int poincare, float c, float clip_r, float eps, const float *restrict bt,
                        const float *restrict bias, float alpha, int64_t v, float temp, float *restrict a,
                        float *restrict x) {
    for (int64_t i = 0; i < k; ++i) a[i] = bp[i];
    for (int64_t e = 0; e < d; ++e) {
        const float he = h[e];
#pragma omp simd
        for (int64_t i = 0; i < k; ++i) a[i] += he * wpt[e * k + i];
    }
    int64_t terms = k;
    if (poincare) { /* a ← A = σ [z, ‖z‖², 1] */
        float n2 = 0.0f;
        for (int64_t i = 0; i < k; ++i) n2 += a[i] * a[i];
        const float sqrt_c = sqrtf(c), n = sqrtf(n2) < 1e-15f ? 1e-15f : sqrtf(n2); /* exp₀(0) = 0 without 0/0 */
        const float f = tanhf(sqrt_c * (n < clip_r ? n : clip_r)) / (sqrt_c * n);
        float z2 = 0.0f;
        for (int64_t i = 0; i < k; ++i) {
            a[i] *= f;
            z2 += a[i] * a[i];
        }
        const float den = 1.0f - c * z2, sigma = c / (den < eps ? eps : den);
        for (int64_t i = 0; i < k; ++i) a[i] *= sigma;
        a[k] = sigma * z2;
        a[k + 1] = sigma;
        terms = k + 2;
    }
    for (int64_t j = 0; j < v; ++j) x[j] = 0.0f;
    for (int64_t i = 0; i < terms; ++i) {
        const float ai = a[i];
        const float *restrict b = bt + i * v;
#pragma omp simd
        for (int64_t j = 0; j < v; ++j) x[j] += ai * b[j];
    }
    if (poincare) {
#pragma omp simd
        for (int64_t j = 0; j < v; ++j) {
            const float w = x[j] < 0.0f ? 0.0f : x[j]; /* cancellation in ⟨A, B_j⟩ can give w < 0; NaN stays */
            x[j] = (alpha * log_ge1(1.0f + 2.0f * (w + sqrtf(w + w * w))) + bias[j]) / temp;
        }
    } else {
#pragma omp simd
        for (int64_t j = 0; j < v; ++j) x[j] = (x[j] + bias[j]) / temp;
    }
}

int64_t hyperr1_head_draw(const float *hidden, int64_t n, int64_t d, const float *wpt, const float *bp, int64_t k,
                          int poincare, float c, float clip_r, float eps, const float *bt, const float *bias,
                          float alpha, int64_t v, float temp, const float *u, uint8_t *done, int64_t pad,
                          int64_t eos, int64_t *tokens, float *logp, uint8_t *mask, int64_t stride, int64_t *next,
                          float *scratch, int64_t scratch_rows, int threads) {
    if (n < 0 || d < 1 || k < 1 || v < 1 || stride < 1) return -1;
    const int64_t t = thread_count(n * v * (k + 2), n, threads);
    if (t > scratch_rows) return -1;
    const int64_t per_thread = 2 * v + v / BLOCK + k + 3;
    int64_t finished = 0;
#pragma omp parallel for schedule(static) num_threads((int)t) if (t > 1) reduction(+ : finished)
    for (int64_t r = 0; r < n; ++r) {
        float *x = scratch + (int64_t)omp_get_thread_num() * per_thread, *e = x + v, *block = e + v;
        float *a = block + v / BLOCK + 1;
        int64_t token = pad;
        float lp = 0.0f;
        const int was_done = done[r];
        if (!was_done) {
            head_logits(hidden + r * d, d, wpt, bp, k, poincare, c, clip_r, eps, bt, bias, alpha, v, temp, a, x);
            sample_row(x, v, u ? (double)u[r] : 0.0, u == NULL, e, block, &token, &lp);
        }
        tokens[r * stride] = token;
        logp[r * stride] = lp;
        mask[r * stride] = (uint8_t)!was_done;
        next[r] = token;
        done[r] = (uint8_t)(was_done || token == eos);
        finished += done[r];
    }
    return finished;
}

/* The Poincaré distance head as two fused passes, float32 on the CPU.
 *
 * The head's logits are out_ij = α · acosh(1 + 2 w_ij) + b_j, where
 *
 *   w_ij = c‖x_i − y_j‖² / ((1 − c‖x_i‖²)(1 − c‖y_j‖²)) = Σ_k A_ik B_jk  (K = D + 2 terms),
 *   A_i = σ_i [x_i, ‖x_i‖², 1], σ_i = c / (1 − c‖x_i‖²),  B_j = v_j [−2y_j, 1, ‖y_j‖²], v_j = 1 / (1 − c‖y_j‖²),
 *
 * so that α = −s/√c gives −s · d_c(x_i, y_j) + b_j (geometry.distance_logits). Eager PyTorch spends
 * a dozen small ops on the factors, a matrix product, nine elementwise passes with as many N×M
 * buffers and, in backward, an elementwise pass and two more products on that. Here each
 * direction is one pass over the rows, in blocks of ROWS rows:
 *
 *   forward:   w = A Bᵀ,  out = α · acosh(1 + 2 max(w, 0)) + b
 *   backward:  w = A Bᵀ again,  q = g / max(√(w + w²), √ε),  ∂L/∂A = α q B,  ∂L/∂B = α qᵀ A,
 *              ∂L/∂b = Σ_i g_i:,  α ∂L/∂α = Σ_ij g_ij (out_ij − b_j),  then ∂L/∂x, ∂L/∂y, ∂L/∂c
 *              through the factors
 *
 * using acosh(1 + 2w) = log(1 + 2(w + √(w + w²))) and ∂/∂w acosh(1 + 2w) = 1/√(w + w²); the floors
 * (√ε on the root, ε on 1 − c‖x‖²) are the eager kernel's guards. Backward recomputes w instead
 * of reading a saved N×M buffer: on a 2-core machine a second fresh N×M buffer per step costs
 * more in page faults than the K multiply-adds per element (benchmarks/bench_head.py), and q
 * never leaves the cache, each block of rows feeding both products as soon as it is formed.
 * Scratch is O(M·K) per thread, nothing N×M.
 *
 * Rows are split over threads with OpenMP, which runs in PyTorch's own thread pool (the process
 * loads one libgomp). The split is static, so that for a given thread count the per-thread partial
 * sums, and hence every gradient, are the same bit for bit from run to run (resumed runs repeat
 * uninterrupted ones exactly); dynamic scheduling would absorb a slow core but lose that. The loops are plain C that gcc vectorises across the columns j at
 * -O3 -march=native; K is a compile-time constant (-DHYPERR1_K=…, one build per dimension) so
 * that the K-term products unroll, and the ROWS rows of a block share every load of Bᵀ.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vector_math.h"

#ifndef HYPERR1_K
#error "compile with -DHYPERR1_K=<dim + 2>"
#endif
enum { K = HYPERR1_K };

#define MIN_ELEMENTS_PER_THREAD 65536 /* below this a thread costs more than it saves */
#define ROWS 8                        /* rows per block (a multiple of 4, see rows_times_bt) */

static int thread_count(int64_t n, int64_t m, int requested) {
    int64_t t = (n * m) / MIN_ELEMENTS_PER_THREAD;
    if (t > requested) t = requested;
    if (t > n) t = n;
    return t < 1 ? 1 : (int)t;
}

/* w[r] += Σ_k a_rk bt_kj for r < R at column j, each load of Bᵀ serving all R rows. A macro, not
 * a function: through a helper function gcc stops vectorising the enclosing loop over j. */
#define ROW_PRODUCTS(w, a, bt, m, j, R)                              \
    _Pragma("GCC unroll 64") for (int k_ = 0; k_ < K; ++k_) {       \
        const float b_ = (bt)[k_ * (m) + (j)];                       \
        _Pragma("GCC unroll 8") for (int r_ = 0; r_ < (R); ++r_) {   \
            (w)[r_] += (a)[r_ * K + k_] * b_;                        \
        }                                                            \
    }

/* R ≤ ROWS consecutive output rows (R is a constant at each call site). */
static inline __attribute__((always_inline)) void forward_rows(const float *restrict a, const float *restrict bt,
                                                              const float *restrict bias, float alpha,
                                                              float *restrict out, int64_t m, const int R) {
#pragma omp simd
    for (int64_t j = 0; j < m; ++j) {
        float w[ROWS] = {0.0f};
        ROW_PRODUCTS(w, a, bt, m, j, R);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
            const float x = w[r] < 0.0f ? 0.0f : w[r]; /* cancellation in A Bᵀ can give w < 0; NaN stays */
            out[r * m + j] = alpha * log_ge1(1.0f + 2.0f * (x + sqrtf(x + x * x))) + bias[j];
        }
    }
}

/* ga_k = Σ_j q_j bt_kj for one row q (m), four k at a time: four independent sums hide the
 * latency of the multiply-adds and share each load of q. */
static inline void row_times_bt(const float *restrict q, const float *restrict bt, float *restrict ga, int64_t m) {
    int k = 0;
    for (; k + 4 <= K; k += 4) {
        const float *restrict b0 = bt + k * m, *restrict b1 = b0 + m, *restrict b2 = b1 + m, *restrict b3 = b2 + m;
        float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
        for (int64_t j = 0; j < m; ++j) {
            s0 += q[j] * b0[j];
            s1 += q[j] * b1[j];
            s2 += q[j] * b2[j];
            s3 += q[j] * b3[j];
        }
        ga[k] = s0, ga[k + 1] = s1, ga[k + 2] = s2, ga[k + 3] = s3;
    }
    for (; k < K; ++k) {
        const float *restrict b0 = bt + k * m;
        float s0 = 0.0f;
#pragma omp simd reduction(+ : s0)
        for (int64_t j = 0; j < m; ++j) s0 += q[j] * b0[j];
        ga[k] = s0;
    }
}

/* The same for ROWS = 4 rows of q (4×m, ga 4×K), two k at a time: eight independent sums, each
 * load of q serving two of them and each load of bt four. */
static inline void rows_times_bt(const float *restrict q, const float *restrict bt, float *restrict ga, int64_t m) {
    const float *restrict q0 = q, *restrict q1 = q + m, *restrict q2 = q + 2 * m, *restrict q3 = q + 3 * m;
    for (int k = 0; k < K; k += 2) {
        const int k1 = k + 1 < K ? k + 1 : k; /* an odd K repeats its last k, stored once */
        const float *restrict b0 = bt + k * m, *restrict b1 = bt + k1 * m;
        float s00 = 0.0f, s01 = 0.0f, s10 = 0.0f, s11 = 0.0f, s20 = 0.0f, s21 = 0.0f, s30 = 0.0f, s31 = 0.0f;
#pragma omp simd reduction(+ : s00, s01, s10, s11, s20, s21, s30, s31)
        for (int64_t j = 0; j < m; ++j) {
            s00 += q0[j] * b0[j], s01 += q0[j] * b1[j];
            s10 += q1[j] * b0[j], s11 += q1[j] * b1[j];
            s20 += q2[j] * b0[j], s21 += q2[j] * b1[j];
            s30 += q3[j] * b0[j], s31 += q3[j] * b1[j];
        }
        ga[k1] = s01, ga[K + k1] = s11, ga[2 * K + k1] = s21, ga[3 * K + k1] = s31;
        ga[k] = s00, ga[K + k] = s10, ga[2 * K + k] = s20, ga[3 * K + k] = s30;
    }
}

/* Backward for R ≤ ROWS consecutive rows: q_rj = g_rj / max(√(w_rj + w_rj²), root_floor) (kept in
 * q, R×m); adds Σ_r q_rj a_r to column j of gbt, Σ_r g_rj to colsum_j and Σ_r g_rj (out_rj − bias_j)
 * to dotcol_j; sets ga_r = Σ_j q_rj bt_:j. */
static inline __attribute__((always_inline)) void backward_rows(
    const float *restrict a, const float *restrict bt, const float *restrict g, const float *restrict out,
    const float *restrict bias, float root_floor, float *restrict q, float *restrict ga,
    float *restrict gbt, float *restrict colsum, float *restrict dotcol, int64_t m, const int R) {
#pragma omp simd
    for (int64_t j = 0; j < m; ++j) {
        float w[ROWS] = {0.0f}, qj[ROWS], gsum = 0.0f, gdot = 0.0f;
        ROW_PRODUCTS(w, a, bt, m, j, R);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
            const float x = w[r] < 0.0f ? 0.0f : w[r], root = sqrtf(x + x * x), gr = g[r * m + j];
            qj[r] = gr / (root < root_floor ? root_floor : root);
            q[r * m + j] = qj[r];
            gsum += gr;
            gdot += gr * (out[r * m + j] - bias[j]);
        }
        colsum[j] += gsum;
        dotcol[j] += gdot;
#pragma GCC unroll 64
        for (int k = 0; k < K; ++k) {
            float acc = gbt[k * m + j];
#pragma GCC unroll 8
            for (int r = 0; r < R; ++r) acc += a[r * K + k] * qj[r];
            gbt[k * m + j] = acc;
        }
    }
    if (R == ROWS)
        for (int r = 0; r < ROWS; r += 4) rows_times_bt(q + r * m, bt, ga + r * K, m);
    else
        row_times_bt(q, bt, ga, m);
}

/* The factors of the distance (geometry._left_factor / _right_factor), with D = K − 2:
 *   A_i = σ_i [x_i, ‖x_i‖², 1],  σ_i = c / max(1 − c‖x_i‖², eps)          (n×K)
 *   B_j = v_j [−2y_j, 1, ‖y_j‖²],  v_j = 1 / max(1 − c‖y_j‖², eps)         (stored transposed, K×m)
 * so that (A Bᵀ)_ij = c‖x_i − y_j‖² / ((1 − c‖x_i‖²)(1 − c‖y_j‖²)). The floor only acts on points
 * outside the ball (invalid input), where it keeps the distance large and finite. Every floor and
 * clamp here is written so that NaN passes through it (x < lo ? lo : x), as through clamp_min in
 * the eager kernel: a diverged input must show up as NaN logits and gradients, not be hidden. */
enum { D = K - 2 };

static float squared_norm(const float *v) {
    float s = 0.0f;
    for (int d = 0; d < D; ++d) s += v[d] * v[d];
    return s;
}

/* Rows [i, i + R) of A into a (R×K). */
static void left_factor(const float *x, float c, float eps, int64_t i, int R, float *a) {
    for (int r = 0; r < R; ++r) {
        const float *xi = x + (i + r) * D;
        const float x2 = squared_norm(xi), den = 1.0f - c * x2, sigma = c / (den < eps ? eps : den);
        for (int d = 0; d < D; ++d) a[r * K + d] = sigma * xi[d];
        a[r * K + D] = sigma * x2;
        a[r * K + D + 1] = sigma;
    }
}

/* Bᵀ (K×m). */
static void right_factor_t(const float *y, float c, float eps, int64_t m, float *bt) {
    for (int64_t j = 0; j < m; ++j) {
        const float *yj = y + j * D;
        const float y2 = squared_norm(yj), den = 1.0f - c * y2, v = 1.0f / (den < eps ? eps : den);
        for (int d = 0; d < D; ++d) bt[d * m + j] = -2.0f * v * yj[d];
        bt[D * m + j] = v;
        bt[(D + 1) * m + j] = v * y2;
    }
}

/* Chain rule through A_i = σ_i [x_i, ‖x_i‖², 1], σ_i = c / den_i, den_i = 1 − c‖x_i‖² (floored at eps),
 * for R rows with ∂L/∂A in ga (R×K): writes ∂L/∂x_i and returns Σ_i ∂L/∂σ_i · ∂σ_i/∂c, using
 * ∂σ/∂‖x‖² = σ² and ∂σ/∂c = 1/den² (0 and 1/eps where floored). */
static double left_factor_backward(const float *x, float c, float eps, int64_t i, int R, const float *ga,
                                   float *grad_x) {
    double gc = 0.0;
    for (int r = 0; r < R; ++r) {
        const float *xi = x + (i + r) * D, *g = ga + r * K;
        const float x2 = squared_norm(xi), den = 1.0f - c * x2;
        const int floored = den < eps;
        const float sigma = c / (floored ? eps : den);
        float gsigma = g[D] * x2 + g[D + 1];
        for (int d = 0; d < D; ++d) gsigma += g[d] * xi[d];
        const float gx2 = sigma * g[D] + (floored ? 0.0f : gsigma * sigma * sigma);
        for (int d = 0; d < D; ++d) grad_x[(i + r) * D + d] = sigma * g[d] + 2.0f * xi[d] * gx2;
        gc += floored ? gsigma / eps : gsigma / ((double)den * den);
    }
    return gc;
}

/* Chain rule through B_j = v_j [−2y_j, 1, ‖y_j‖²], v_j = 1 / (1 − c‖y_j‖²) (floored), with ∂L/∂Bᵀ in
 * gbt (K×m): writes ∂L/∂y and returns Σ_j ∂L/∂v_j · ∂v_j/∂c, using ∂v/∂‖y‖² = c v², ∂v/∂c = ‖y‖² v². */
static double right_factor_backward(const float *y, float c, float eps, int64_t m, const float *gbt, float *grad_y) {
    double gc = 0.0;
    for (int64_t j = 0; j < m; ++j) {
        const float *yj = y + j * D;
        const float y2 = squared_norm(yj), den = 1.0f - c * y2;
        const int floored = den < eps;
        const float v = 1.0f / (floored ? eps : den);
        float gv = gbt[D * m + j] + gbt[(D + 1) * m + j] * y2;
        for (int d = 0; d < D; ++d) gv -= 2.0f * gbt[d * m + j] * yj[d];
        const float gy2 = v * gbt[(D + 1) * m + j] + (floored ? 0.0f : gv * c * v * v);
        for (int d = 0; d < D; ++d) grad_y[j * D + d] = -2.0f * v * gbt[d * m + j] + 2.0f * yj[d] * gy2;
        if (!floored) gc += (double)gv * y2 * v * v;
    }
    return gc;
}

/* Scratch for Bᵀ and backward's per-thread sums ((K + 2 + ROWS)·m floats per thread), kept per
 * calling thread and grown on demand (never shrunk, nor freed when a thread exits: one buffer per
 * thread that ever called, as large as its largest call). A fresh allocation of this size on every call
 * comes from mmap in glibc, and its page faults cost a fifth of the backward pass (measured with
 * benchmarks/bench_head.py on 2 cores). */
static _Thread_local float *scratch_memory = NULL;
static _Thread_local size_t scratch_floats = 0;

static float *scratch_buffer(size_t floats) {
    if (floats > scratch_floats) {
        free(scratch_memory);
        scratch_memory = malloc(sizeof(float) * floats);
        scratch_floats = scratch_memory ? floats : 0;
    }
    return scratch_memory;
}

/* out (n×m) = α · acosh(1 + 2 max(A Bᵀ, 0)) + bias for points x (n×D) and y (m×D) on the ball of
 * curvature −c. Returns 0, or 1 when Bᵀ cannot be allocated (then nothing is written). */
int hyperr1_distance_forward(const float *x, const float *y, float c, float eps, const float *bias, float alpha,
                             float *out, int64_t n, int64_t m, int threads) {
    if (m == 0) return 0; /* an n×0 output: nothing to write */
    float *bt = scratch_buffer((size_t)(K * m));
    if (!bt) return 1;
    right_factor_t(y, c, eps, m, bt);
    threads = thread_count(n, m, threads);
#pragma omp parallel num_threads(threads)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        float a[ROWS * K];
        int64_t i = n * t / nt;
        const int64_t end = n * (t + 1) / nt;
        for (; i + ROWS <= end; i += ROWS) {
            left_factor(x, c, eps, i, ROWS, a);
            forward_rows(a, bt, bias, alpha, out + i * m, m, ROWS);
        }
        for (; i < end; ++i) {
            left_factor(x, c, eps, i, 1, a);
            forward_rows(a, bt, bias, alpha, out + i * m, m, 1);
        }
    }
    return 0;
}

/* Log-probabilities of given tokens under the tempered distance logits, without an n×m buffer: for
 * row i, with x_ij = (α · acosh(1 + 2 max(w_ij, 0)) + b_j) / T (the logits above over a temperature T),
 *
 *   ℓ_i = log Σ_j exp x_ij,   log π_i = x_{i, y_i} − ℓ_i,   H_i = ℓ_i − Σ_j π_ij x_ij,   π_ij = exp(x_ij − ℓ_i)
 *
 * (hyperr1.decoding.TokenLogProbs of these logits), a block of ROWS rows at a time in the thread's scratch:
 * teacher forcing's logits are 1,024 × 1,255 floats, and writing them, reading them for the softmax,
 * writing the softmax and reading it back in backward went to memory four times. ℓ (n) is kept for
 * the backward. A row whose logits hold NaN or +inf gets NaN in all three. Returns 0, 1 when the
 * scratch cannot be allocated, 2 when a token is outside [0, m). */
static void logprob_rows(const float *restrict out, const int64_t *tokens, int64_t m, float temp, int R,
                         float *logp, float *ent, float *lse) {
    for (int r = 0; r < R; ++r) {
        const float *restrict o = out + r * m;
        float mx = -INFINITY;
        int bad = 0;
#pragma omp simd reduction(max : mx) reduction(| : bad)
        for (int64_t j = 0; j < m; ++j) {
            const float x = o[j] / temp;
            mx = x > mx ? x : mx;
            bad |= x != x;
        }
        if (bad || mx == INFINITY || mx == -INFINITY) {
            logp[r] = ent[r] = lse[r] = NAN;
            continue;
        }
        float z = 0.0f, zx = 0.0f;
#pragma omp simd reduction(+ : z, zx)
        for (int64_t j = 0; j < m; ++j) {
            const float d = o[j] / temp - mx, e = exp_le0(d);
            z += e;
            zx += e > 0.0f ? e * d : 0.0f;
        }
        const float log_z = logf(z);
        lse[r] = mx + log_z;
        logp[r] = (o[tokens[r]] / temp - mx) - log_z;
        ent[r] = log_z - zx / z;
    }
}

/* Scratch of the log-probability passes: Bᵀ, then per thread the backward's sums and q, plus the block's
 * recomputed logits and its gradient. */
static size_t logprob_scratch(int64_t m, int threads) {
    return (size_t)(K + 2 + 3 * ROWS) * (size_t)m * (size_t)threads + (size_t)(K * m);
}

int hyperr1_distance_logprob_forward(const float *x, const float *y, float c, float eps, const float *bias, float alpha,
                                     float temp, const int64_t *tokens, float *logp, float *ent, float *lse, int64_t n,
                                     int64_t m, int threads) {
    if (m == 0) return 2;
    for (int64_t i = 0; i < n; ++i)
        if (tokens[i] < 0 || tokens[i] >= m) return 2;
    threads = thread_count(n, m, threads);
    float *scratch = scratch_buffer(logprob_scratch(m, threads));
    if (!scratch) return 1;
    float *bt = scratch + (size_t)(K + 2 + 3 * ROWS) * (size_t)m * (size_t)threads;
    right_factor_t(y, c, eps, m, bt);
#pragma omp parallel num_threads(threads)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        float a[ROWS * K], *out = scratch + (size_t)(K + 2 + 3 * ROWS) * (size_t)m * (size_t)t;
        int64_t i = n * t / nt;
        const int64_t end = n * (t + 1) / nt;
        while (i < end) {
            const int R = end - i >= ROWS ? ROWS : 1;
            left_factor(x, c, eps, i, R, a);
            if (R == ROWS)
                forward_rows(a, bt, bias, alpha, out, m, ROWS);
            else
                forward_rows(a, bt, bias, alpha, out, m, 1);
            logprob_rows(out, tokens + i, m, temp, R, logp + i, ent + i, lse + i);
            i += R;
        }
    }
    return 0;
}

/* Backward of hyperr1_distance_forward for the upstream gradient g (n×m), or, with lp given, of
 * hyperr1_distance_logprob_forward for the gradient lp->g (n) of the log-probabilities: per block its
 * logits are recomputed and ∂L/∂out_ij = g_i (1_{j = y_i} − π_ij) / T formed in the thread's scratch. With
 * q = g / max(√(w + w²), root_floor) and w = A Bᵀ recomputed, ∂L/∂A = α q B and ∂L/∂Bᵀ = α Aᵀ q
 * are carried through the factors to
 *   grad_x (n×D), grad_y (m×D), *grad_c (∂L/∂c through the factors; α's own dependence on c is
 *   the caller's), colsum (m) = Σ_i g_ij = ∂L/∂b, *dot = Σ_ij g_ij (out_ij − bias_j) = α ∂L/∂α.
 * Returns 0, 1 when the scratch cannot be allocated, 2 when a token is outside [0, m) (then nothing is
 * written). */
struct logprob_grad {
    const float *g, *lse;
    const int64_t *tokens;
    float temp;
};

static int backward_pass(const float *g, const float *out, const struct logprob_grad *lp, const float *x,
                         const float *y, float c, float eps, const float *bias, float alpha, float root_floor,
                         float *grad_x, float *grad_y, double *grad_c, float *colsum, double *dot, int64_t n,
                         int64_t m, int threads) {
    if (m == 0) { /* no classes: every gradient is zero (grad_y, colsum are empty) */
        memset(grad_x, 0, sizeof(float) * (size_t)(n * D));
        *grad_c = 0.0;
        *dot = 0.0;
        return 0;
    }
    threads = thread_count(n, m, threads);
    /* Aᵀq (K×m), Σ g, Σ g(out − b), q (ROWS×m), and for lp the block's logits and gradient (2 ROWS×m) */
    const size_t per_thread = (size_t)(K + 2 + 3 * ROWS) * (size_t)m;
    float *scratch = scratch_buffer(per_thread * (size_t)threads + (size_t)(K * m));
    if (!scratch) return 1;
    float *bt = scratch + per_thread * (size_t)threads;
    right_factor_t(y, c, eps, m, bt);
    double gc = 0.0;
    int used = 1; /* OpenMP may start fewer threads than asked (OMP_THREAD_LIMIT, nesting) */
#pragma omp parallel num_threads(threads) reduction(+ : gc)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        if (t == 0) used = nt;
        float *gbt_t = scratch + per_thread * (size_t)t;
        float *colsum_t = gbt_t + K * m, *dotcol_t = colsum_t + m, *q = dotcol_t + m;
        float *out_blk = q + ROWS * m, *g_blk = out_blk + ROWS * m;
        memset(gbt_t, 0, sizeof(float) * (size_t)(K + 2) * (size_t)m);
        float a[ROWS * K], ga[ROWS * K];
        int64_t i = n * t / nt;
        const int64_t end = n * (t + 1) / nt;
        while (i < end) {
            const int R = end - i >= ROWS ? ROWS : 1;
            left_factor(x, c, eps, i, R, a);
            const float *gi = lp ? g_blk : g + i * m, *oi = lp ? out_blk : out + i * m;
            if (lp) { /* the logits again, and ∂L/∂out of the log-probabilities */
                if (R == ROWS)
                    forward_rows(a, bt, bias, alpha, out_blk, m, ROWS);
                else
                    forward_rows(a, bt, bias, alpha, out_blk, m, 1);
                const float temp = lp->temp;
                for (int r = 0; r < R; ++r) {
                    const float gr = lp->g[i + r] / temp, l = lp->lse[i + r];
                    const float *restrict o = out_blk + r * m;
                    float *restrict gb = g_blk + r * m;
#pragma omp simd
                    for (int64_t j = 0; j < m; ++j) gb[j] = -gr * exp_le0(o[j] / temp - l);
                    gb[lp->tokens[i + r]] += gr;
                }
            }
            if (R == ROWS)
                backward_rows(a, bt, gi, oi, bias, root_floor, q, ga, gbt_t, colsum_t, dotcol_t, m, ROWS);
            else
                backward_rows(a, bt, gi, oi, bias, root_floor, q, ga, gbt_t, colsum_t, dotcol_t, m, 1);
            for (int k = 0; k < R * K; ++k) ga[k] *= alpha;
            gc += left_factor_backward(x, c, eps, i, R, ga, grad_x);
            i += R;
        }
    }
    /* sum the threads' partials into thread 0's block: Σ_j over Aᵀq, Σ g and Σ g(out − b) */
    double total = 0.0;
    for (int t = 1; t < used; ++t) {
        const float *part = scratch + per_thread * (size_t)t;
        for (size_t k = 0; k < (size_t)(K + 2) * (size_t)m; ++k) scratch[k] += part[k];
    }
    for (int64_t j = 0; j < m; ++j) {
        colsum[j] = scratch[K * m + j];
        total += scratch[(K + 1) * m + j];
    }
    for (int64_t k = 0; k < K * m; ++k) scratch[k] *= alpha;
    gc += right_factor_backward(y, c, eps, m, scratch, grad_y);
    *grad_c = gc;
    *dot = total;
    return 0;
}

int hyperr1_distance_backward(const float *g, const float *out, const float *x, const float *y, float c, float eps,
                              const float *bias, float alpha, float root_floor, float *grad_x, float *grad_y,
                              double *grad_c, float *colsum, double *dot, int64_t n, int64_t m, int threads) {
    return backward_pass(g, out, NULL, x, y, c, eps, bias, alpha, root_floor, grad_x, grad_y, grad_c, colsum, dot, n,
                         m, threads);
}

int hyperr1_distance_logprob_backward(const float *g, const float *lse, const int64_t *tokens, float temp,
                                      const float *x, const float *y, float c, float eps, const float *bias,
                                      float alpha, float root_floor, float *grad_x, float *grad_y, double *grad_c,
                                      float *colsum, double *dot, int64_t n, int64_t m, int threads) {
    for (int64_t i = 0; i < n; ++i)
        if (tokens[i] < 0 || tokens[i] >= m) return 2;
    const struct logprob_grad lp = {g, lse, tokens, temp};
    return backward_pass(NULL, NULL, &lp, x, y, c, eps, bias, alpha, root_floor, grad_x, grad_y, grad_c, colsum, dot,
                         n, m, threads);
}

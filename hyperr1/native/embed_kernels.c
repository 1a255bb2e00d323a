/* One Riemannian SGD step of the Nickel & Kiela (2017) embedding loss, float64 on the CPU.
 *
 * The same step as hyperr1.embeddings.sparse_sgd_step with the gradients of sampled_softmax_grad,
 * for a batch of B closure pairs (u_b, v_b) and K drawn negatives each (the draws come from
 * PyTorch's generator, so both kernels see the same stream):
 *
 *   invalid_bk = [neg_bk = u_b] or [(u_b, neg_bk) is a closure pair]   (binary search in the sorted keys u·n + v)
 *   d_bj = d(x_u, y_j) over the candidates y_0 = x_v, y_k = x_neg_bk, p_b = softmax(−d_b) over the valid ones
 *   L = −(1/B) Σ_b log p_b0,  ∂L/∂d_bj = (1[j = 0] − p_bj)/B
 *
 * Ball (curvature −c):  α = 1 − c‖x‖², β = 1 − c‖y‖² (floored at ε), w = c‖x − y‖²/(αβ) (floored at ε),
 *   d = log(1 + 2(w + √(w + w²)))/√c, ∂d/∂w = 1/(√c √(w + w²)) (0 where w was floored),
 *   ∂w/∂x = 2c/(αβ)·((x − y) + wβ x),  ∂w/∂y = 2c/(αβ)·((y − x) + wα y).
 * Euclidean:  d = √max(‖x − y‖², ε), ∂d/∂x = (x − y)/d (0 where floored).
 *
 * Gradients of all B(2 + K) touched rows are summed pair by pair (∂L/∂x_u, then the candidates'),
 * all from the table as it was before the step, and then each touched row takes
 * x ← proj(x − η (1 − c‖x‖²)²/4 · g) on the ball (geoopt's egrad2rgrad with λ_x floored as geoopt
 * floors it, and its retraction x + u, projected to norm ≤ maxnorm) or x ← x − η g in Euclidean
 * space. The numbers equal the PyTorch kernel's up to the order of floating-point sums.
 *
 * In PyTorch ops the step is some forty small kernels with as many (B, 1+K, d) buffers, a sort
 * (unique) and a binary search through the keys: about 20 µs per pair at B = 1024 on the 82,115
 * WordNet nouns. Here it is one pass per pair over its 1 + K candidate rows, which stay in cache.
 * Single-threaded: the batch's gradient sum is sequential, so every run is bit-for-bit repeatable.
 *
 * Scratch owned by the caller, zero between calls: grad (n × d doubles) and mark (n int32). The
 * touched list `rows` has room for B(2 + K) entries; the step leaves grad and mark zero again.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <float.h>

#define AHEAD 2 /* pairs between a prefetch and the use of its rows */

/* the first index i in [lo, hi) with keys[i] >= key (hi if none) */
static int64_t lower_bound(const int64_t *keys, int64_t lo, int64_t hi, int64_t key) {
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (keys[mid] < key) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static inline double sqnorm(const double *x, int64_t d) {
    double s = 0.0;
    for (int64_t i = 0; i < d; i++) s += x[i] * x[i];
    return s;
}

/* Returns 0, or 1 if the scratch `cand` (room for (1 + K)(d + 5) doubles) is too small; the
 * batch-mean loss goes to *loss. */
int hyperr1_embed_sgd_step(double *table, int64_t n, int64_t d, const int64_t *pairs, int64_t B,
                           const int64_t *neg, int64_t K, const int64_t *keys, int64_t num_keys,
                           double c, double lr, double maxnorm, int poincare, double *grad,
                           int32_t *mark, int64_t *rows, double *cand, int64_t cand_cap,
                           double *loss) {
    const double eps = DBL_EPSILON, sqrt_c = sqrt(c);
    const int64_t J = 1 + K;
    if (cand_cap < J * (d + 5)) return 1;
    double *dist = cand;      /* (J) d(x_u, y_j) */
    double *coef = dist + J;  /* (J) ∂d/∂‖x − y‖²-type factor: 2c/(αβ)·∂d/∂w, or 1/d */
    double *wa = coef + J;    /* (J) w·α, the factor of y in ∂w/∂y */
    double *wb = wa + J;      /* (J) w·β, the factor of x in ∂w/∂x */
    double *e = wb + J;       /* (J) e^{−d_j − max}, the softmax's numerators */
    double *g_u = e + J;      /* (d) ∂L/∂x_u of this pair */
    int64_t num_rows = 0;
    double total = 0.0;
    for (int64_t b = 0; b < B; b++) {
        const int64_t u = pairs[2 * b];
        if (b + AHEAD < B) /* a later pair's rows are random in the table: start loading them now */
            for (int64_t j = -1; j < J; j++) {
                const int64_t a = b + AHEAD;
                const int64_t r = j < 0 ? pairs[2 * a] : j == 0 ? pairs[2 * a + 1] : neg[a * K + j - 1];
                __builtin_prefetch(table + r * d);
                __builtin_prefetch(table + r * d + d - 1);
                __builtin_prefetch(grad + r * d, 1);
                __builtin_prefetch(grad + r * d + d - 1, 1);
                __builtin_prefetch(mark + r, 1);
            }
        const double *x = table + u * d;
        const double alpha = fmax(1.0 - c * sqnorm(x, d), eps);
        /* u's ancestors are the keys in [u·n, u·n + n): one search for the range, then small ones in it */
        const int64_t first = lower_bound(keys, 0, num_keys, u * n);
        const int64_t last = lower_bound(keys, first, num_keys, (u + 1) * n);
        double m = -INFINITY;
        for (int64_t j = 0; j < J; j++) {
            const int64_t r = j == 0 ? pairs[2 * b + 1] : neg[b * K + j - 1];
            const double *y = table + r * d;
            double sq = 0.0;
            for (int64_t i = 0; i < d; i++) {
                const double diff = x[i] - y[i];
                sq += diff * diff;
            }
            if (poincare) {
                const double beta = fmax(1.0 - c * sqnorm(y, d), eps);
                const double w_raw = c * sq / (alpha * beta);
                const double w = fmax(w_raw, eps); /* ∂d/∂w is infinite at w = 0: no gradient through the floor */
                const double root = sqrt(w + w * w);
                dist[j] = log1p(2.0 * (w + root)) / sqrt_c;
                coef[j] = w_raw > eps ? 2.0 * c / (alpha * beta) / (sqrt_c * root) : 0.0;
                wa[j] = w * alpha;
                wb[j] = w * beta;
            } else {
                dist[j] = sqrt(fmax(sq, eps));
                coef[j] = sq > eps ? 1.0 / dist[j] : 0.0;
            }
            /* a negative that is u or one of u's ancestors leaves the softmax */
            if (j > 0) {
                const int64_t at = lower_bound(keys, first, last, u * n + r);
                if (r == u || (at < last && keys[at] == u * n + r)) dist[j] = INFINITY;
            }
            if (-dist[j] > m) m = -dist[j];
        }
        double s = 0.0;
        for (int64_t j = 0; j < J; j++) {
            s += (e[j] = exp(-dist[j] - m)); /* exp(−∞) = 0 */
        }
        total += dist[0] + m + log(s); /* −log p_0 = d_0 + log Σ_j e^{−d_j} */
        memset(g_u, 0, sizeof(double) * d);
        for (int64_t j = 0; j < J; j++) {
            const int64_t r = j == 0 ? pairs[2 * b + 1] : neg[b * K + j - 1];
            const double p = e[j] / s;
            const double k = coef[j] * ((j == 0 ? 1.0 : 0.0) - p) / (double)B;
            const double *y = table + r * d;
            double *gy = grad + r * d;
            if (!mark[r]) { mark[r] = 1; rows[num_rows++] = r; }
            for (int64_t i = 0; i < d; i++) {
                const double diff = x[i] - y[i];
                if (poincare) {
                    g_u[i] += k * (diff + wb[j] * x[i]);
                    gy[i] += k * (wa[j] * y[i] - diff);
                } else {
                    g_u[i] += k * diff;
                    gy[i] -= k * diff;
                }
            }
        }
        if (!mark[u]) { mark[u] = 1; rows[num_rows++] = u; }
        for (int64_t i = 0; i < d; i++) grad[u * d + i] += g_u[i];
    }
    /* the update of every touched row, from its summed gradient */
    for (int64_t t = 0; t < num_rows; t++) {
        const int64_t r = rows[t];
        double *x = table + r * d, *g = grad + r * d;
        if (poincare) {
            const double s = fmax(1.0 - c * sqnorm(x, d), 1e-15); /* 2/λ_x, floored as in geoopt */
            const double scale = lr * s * s / 4.0;
            double nn = 0.0;
            for (int64_t i = 0; i < d; i++) {
                x[i] -= scale * g[i];
                nn += x[i] * x[i];
            }
            const double norm = fmax(sqrt(nn), 1e-15);
            if (norm > maxnorm)
                for (int64_t i = 0; i < d; i++) x[i] = x[i] / norm * maxnorm;
        } else {
            for (int64_t i = 0; i < d; i++) x[i] -= lr * g[i];
        }
        memset(g, 0, sizeof(double) * d);
        mark[r] = 0;
    }
    *loss = total / (double)B;
    return 0;
}

"""Pure Poincaré-ball functions on top of geoopt.

Everything here is a function of tensors with keyword-only curvature ``c > 0`` (the ball
``{x : c‖x‖² < 1}``, sectional curvature ``-c``). geoopt supplies the Möbius operations, the
exponential and logarithmic maps and the projection; this module adds what geoopt lacks:

* :func:`pairwise_dist` -- all-pairs distances through **one** matrix product, with a fused
  autograd kernel (geoopt's ``dist`` broadcasts an ``N×M×d`` tensor of Möbius sums instead);
* :func:`distance_logits` -- the affine map ``α·d(x, p) + b`` used by the distance head, fused
  with the distance so that no extra ``N×M`` intermediate is kept for the backward pass; its
  elementwise part runs in PyTorch ops or, for float32 on the CPU, in the C loops of
  :mod:`hyperr1.native` (one pass each way);
* :func:`clip_features` -- feature clipping of Guo et al. (2022);
* :func:`mlr_logits` -- hyperbolic multinomial logistic regression of Ganea et al. (2018),
  computed pairwise from inner products;
* :func:`gromov_delta` / :func:`delta_hyperbolicity` -- Gromov δ by the four-point condition,
  reported relative to the diameter as in Khrulkov et al. (2020).

References
----------
Nickel & Kiela 2017, "Poincaré Embeddings for Learning Hierarchical Representations".
Ganea, Bécigneul & Hofmann 2018, "Hyperbolic Neural Networks".
Khrulkov et al. 2020, "Hyperbolic Image Embeddings".
Guo et al. 2022, "Clipped Hyperbolic Classifiers Are Super-Hyperbolic Classifiers".
"""

from __future__ import annotations

import functools
import math
import warnings

import geoopt
import networkx as nx
import torch

from hyperr1 import native

__all__ = [
    "PoincareBall",
    "ball",
    "clip_features",
    "expmap0",
    "logmap0",
    "project",
    "pairwise_dist",
    "distance_logits",
    "dist",
    "mlr_logits",
    "gromov_delta",
    "delta_hyperbolicity",
]


def _as_c(c: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    c = torch.as_tensor(c, dtype=like.dtype, device=like.device)
    if not bool((c > 0).all()):
        raise ValueError(f"curvature parameter c must be > 0, got {c.tolist()}")
    return c


class PoincareBall(geoopt.PoincareBall):
    """geoopt's ball with a configurable boundary margin for ``projx`` and the retraction.

    geoopt keeps points within (1 − ε)/√c with ε = 1e-5 in float64 (4e-3 in float32). For an
    embedding that margin caps the distance from the origin at log((2 − ε)/ε) ≈ 12.2 and piles
    the leaves of a deep hierarchy onto one sphere; with the closed-form distances of this module
    (exact near the boundary, see :func:`dist`) float64 supports ε down to about 1e-12, i.e.
    distances up to ≈ 28 from the origin. ``boundary_eps=None`` keeps geoopt's default.
    """

    def __init__(self, c: float = 1.0, learnable: bool = False, *, boundary_eps: float | None = None):
        super().__init__(c=c, learnable=learnable)
        if boundary_eps is not None and not 0 < boundary_eps < 1:
            raise ValueError(f"boundary_eps must be in (0, 1), got {boundary_eps}")
        self.boundary_eps = boundary_eps

    def projx(self, x: torch.Tensor, *, dim=-1) -> torch.Tensor:
        eps = -1.0 if self.boundary_eps is None else self.boundary_eps  # -1: geoopt's default
        return geoopt.manifolds.stereographic.math.project(x, k=self.k, dim=dim, eps=eps)

    def retr(self, x: torch.Tensor, u: torch.Tensor, *, dim=-1) -> torch.Tensor:
        """First-order retraction x + u, projected (Nickel & Kiela 2017, eq. 5)."""
        return self.projx(x + u, dim=dim)


def ball(c: float = 1.0, *, learnable: bool = False, boundary_eps: float | None = None) -> PoincareBall:
    """A Poincaré ball of curvature ``-c`` (``c > 0``); see :class:`PoincareBall`."""
    if not c > 0:
        raise ValueError(f"curvature parameter c must be > 0, got {c}")
    return PoincareBall(c=c, learnable=learnable, boundary_eps=boundary_eps)


def expmap0(v: torch.Tensor, *, c: float | torch.Tensor) -> torch.Tensor:
    """exp₀(v) = tanh(√c‖v‖) v / (√c‖v‖), projected into the ball as geoopt's ``expmap0``.

    The same values as geoopt's (a test checks), written out because geoopt's TorchScript
    version costs three times as much per call on the small batches of a decoding step.
    """
    c = _as_c(c, v)
    sqrt_c = c.sqrt()
    # guard: exp₀(0) = 0; the clamp avoids 0/0 and matches geoopt's min norm
    n = v.norm(dim=-1, keepdim=True).clamp_min(1e-15)
    return project(torch.tanh(sqrt_c * n) * (v / (sqrt_c * n)), c=c)


def clipped_expmap0(v: torch.Tensor, r: float | None, *, c: float | torch.Tensor) -> torch.Tensor:
    """exp₀(clip_r(v)) in one pass: with n = ‖v‖ and n' = min(n, r),

        exp₀(clip_r(v)) = tanh(√c n') · v / (√c n),

    the same point as :func:`expmap0` of :func:`clip_features` (one norm instead of three).
    The boundary projection is skipped when tanh(√c r) cannot reach the float margin.
    """
    if r is None:
        return expmap0(v, c=c)
    if not r > 0:
        raise ValueError(f"clip radius r must be > 0 or None, got {r}")
    c = _as_c(c, v)
    sqrt_c = c.sqrt()
    n = v.norm(dim=-1, keepdim=True).clamp_min(1e-15)  # guard: exp₀(0) = 0 without 0/0
    z = v * (torch.tanh(sqrt_c * n.clamp_max(r)) / (sqrt_c * n))
    if float(sqrt_c) * r < 3.0:  # tanh(3) < 1 − 4e-3: inside geoopt's margin in every dtype
        return z
    return project(z, c=c)


def logmap0(x: torch.Tensor, *, c: float | torch.Tensor) -> torch.Tensor:
    """log₀(x) = artanh(√c‖x‖) x / (√c‖x‖) (geoopt)."""
    return geoopt.manifolds.stereographic.math.logmap0(x, k=-_as_c(c, x))


def project(x: torch.Tensor, *, c: float | torch.Tensor) -> torch.Tensor:
    """Project onto the ball of radius (1 − ε)/√c with geoopt's dtype-dependent ε (4e-3 for
    float32, 1e-5 for float64): points inside stay, points beyond move radially onto it."""
    c = _as_c(c, x)
    max_norm = (1 - _BALL_EPS.get(x.dtype, 1e-5)) / c.sqrt()
    norm = x.norm(dim=-1, keepdim=True).clamp_min(1e-15)  # guard: 0/0 at the origin
    return torch.where(norm > max_norm, x / norm * max_norm, x)


_BALL_EPS = {torch.float32: 4e-3}  # geoopt's boundary margin by dtype (1e-5 for every other dtype)


def dist(x: torch.Tensor, y: torch.Tensor, *, c: float | torch.Tensor) -> torch.Tensor:
    """Paired (broadcast) distance d_c(x, y) over the last dimension, by the closed form

        d_c(x, y) = (1/√c) · arcosh(1 + 2c‖x − y‖² / ((1 − c‖x‖²)(1 − c‖y‖²))).

    geoopt's ``dist`` goes through ‖(−x) ⊕ y‖ and an artanh clamped at 1 − 1e-7, which saturates
    at 2·artanh(1 − 1e-7)/√c ≈ 16.8/√c; the closed form stays exact near the boundary and is
    cheaper (no Möbius sum). Used for the sampled pairs of :mod:`hyperr1.embeddings`.
    """
    c = _as_c(c, x)
    floor = torch.finfo(x.dtype).eps
    sq = (x - y).pow(2).sum(-1)
    # guard: conformal factors of points outside the ball (invalid input) stay positive
    den = (1 - c * x.pow(2).sum(-1)).clamp_min(floor) * (1 - c * y.pow(2).sum(-1)).clamp_min(floor)
    w = c * sq / den  # acosh(1 + 2w)/√c is the distance
    # guard: ∂ acosh(1 + 2w)/∂w = 1/√(w + w²) is infinite at w = 0 (x = y); a floor at ε keeps
    # gradients finite there (zero through the clamp) and moves no distance above √ε.
    w = w.clamp_min(floor)
    return torch.log1p(2 * (w + torch.sqrt(w + w * w))) / c.sqrt()


def clip_features(x: torch.Tensor, r: float | None) -> torch.Tensor:
    """Feature clipping x · min(1, r/‖x‖) (Guo et al. 2022, eq. 7); ``r=None`` is the identity.

    Applied to Euclidean features before ``expmap0`` it keeps points away from the boundary, where
    the hyperbolic gradient vanishes, and makes huge inputs harmless.
    """
    if r is None:
        return x
    if not r > 0:
        raise ValueError(f"clip radius r must be > 0 or None, got {r}")
    # guard: ‖x‖ = 0 would divide by zero; such rows need no clipping anyway
    norm = x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    return x * (r / norm).clamp_max(1.0)


# ---------------------------------------------------------------------------------------------
# all-pairs distances through one matrix product
# ---------------------------------------------------------------------------------------------


def _pair_factors(x: torch.Tensor, y: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors A (N×(d+2)), B (M×(d+2)) with (A Bᵀ)_ij = w_ij = c‖x_i − y_j‖² / ((1−c‖x_i‖²)(1−c‖y_j‖²)).

    ‖x − y‖² = ‖x‖² + ‖y‖² − 2⟨x, y⟩, so appending the squared norm and a column of ones turns
    the numerator into one matrix product, and the conformal factors scale rows of each side.
    """
    return _left_factor(x, c), _right_factor(y, c)


# guard (both factors): points from outside the ball (or exactly on its boundary) would flip the
# sign of the conformal factor; geoopt's projx keeps ‖x‖ ≤ (1 − 4e-3)/√c in float32, so the floor
# only acts on invalid input, where it yields a large but finite distance.


def _left_factor(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """A = [x, ‖x‖², 1] · c / (1 − c‖x‖²), (N, d+2)."""
    x2 = x.pow(2).sum(-1, keepdim=True)  # (N, 1)
    ux = c / (1 - c * x2).clamp_min(torch.finfo(x.dtype).eps)  # (N, 1)
    return torch.cat([x, x2, torch.ones_like(x2)], dim=-1) * ux


def _right_factor(y: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """B = [−2y, 1, ‖y‖²] / (1 − c‖y‖²), (M, d+2)."""
    y2 = y.pow(2).sum(-1, keepdim=True)  # (M, 1)
    vy = 1 / (1 - c * y2).clamp_min(torch.finfo(y.dtype).eps)  # (M, 1)
    return torch.cat([-2 * y, torch.ones_like(y2), y2], dim=-1) * vy


KERNELS = ("auto", "eager", "native")
"""Kernels of :func:`distance_logits`: ``"eager"`` (PyTorch ops, any device and dtype), ``"native"``
(:mod:`hyperr1.native`, fused C loops for float32 on the CPU), ``"auto"`` (native where it applies
and builds, else eager, with a one-time warning when a float32 CPU call cannot get it)."""

_ROOT_FLOOR = math.sqrt(torch.finfo(torch.float32).eps)


def _resolve_kernel(kernel: str, x: torch.Tensor) -> str:
    """``"eager"`` or ``"native"`` for tensors like ``x``; errors name what ``kernel`` needs."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; known: {list(KERNELS)}")
    if kernel == "native":
        if not native.supports(x):
            raise ValueError(
                f"kernel='native' runs float32 tensors on the CPU, got {x.dtype} on {x.device}; "
                "use kernel='eager' or 'auto'"
            )
        native.library(x.shape[-1])  # raises NativeUnavailable with the compiler's message
        return "native"
    if kernel == "auto" and native.supports(x) and _native_builds(x.shape[-1]):
        return "native"
    return "eager"


@functools.cache
def _native_builds(dim: int) -> bool:
    try:
        native.library(dim)
    except native.NativeUnavailable as e:
        warnings.warn(
            f"hyperr1: the native distance kernel is unavailable, using the eager one (slower): {e}",
            RuntimeWarning,
            stacklevel=4,
        )
        return False
    return True


class DistanceLogits:
    """Inference-only α · d_c(x, p_j) + b_j against fixed points p (e.g. a head's prototypes while
    sampling): whatever depends only on p is prepared once (for the eager kernel the factor B,
    stored transposed and contiguous), so each call costs one matrix product and one in-place
    elementwise pass, or one native call; values agree with :func:`distance_logits` (same kernel)
    to float rounding."""

    def __init__(self, y: torch.Tensor, *, c, alpha=1.0, bias: torch.Tensor | None = None, kernel: str = "auto"):
        self.kernel = _resolve_kernel(kernel, y)
        self.c = _as_c(c, y).detach()
        self.alpha = (torch.as_tensor(alpha, dtype=y.dtype, device=y.device) / self.c.sqrt()).detach()
        self.bias = None if bias is None else bias.detach()
        if self.kernel == "native":
            self.y = y.detach().contiguous()
            self._native_args = (float(self.c), _bias_or_zeros(self.bias, y.shape[0]), float(self.alpha))
        else:
            self.b_t = _right_factor(y.detach(), self.c).T.contiguous()  # (d+2, M): contiguous is faster

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # (N, d) → (N, M)
        if self.kernel == "native":
            return native.distance_forward(x.contiguous(), self.y, *self._native_args)
        return _arcosh_affine_inplace(_left_factor(x, self.c) @ self.b_t, self.alpha, self.bias)


def _acosh_1_plus_2w_(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(acosh(1 + 2w), √(w + w²)), the first in w's own buffer: acosh(1 + 2w) = log1p(2(w + √(w + w²)))."""
    # guard: w = c‖x−y‖²λ… ≥ 0 mathematically; cancellation in ‖x‖²+‖y‖²−2⟨x,y⟩ can make it
    # slightly negative, and √(w + w²) of a negative w is NaN.
    w.clamp_min_(0)
    root = torch.mul(w, w).add_(w).sqrt_()  # √(w + w²), (N, M)
    return w.add_(root).mul_(2).log1p_(), root


def _arcosh_affine_inplace(w: torch.Tensor, alpha: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """α · acosh(1 + 2w) + b computed in place on w, for inference (nothing kept for backward);
    bit for bit the values of :class:`_ArcoshAffine`."""
    d, _ = _acosh_1_plus_2w_(w)
    return d.mul_(alpha) if bias is None else torch.addcmul(bias, d, alpha)


def _arcosh_affine_eager(
    w: torch.Tensor, alpha: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(α·acosh(1 + 2w) + b, acosh(1 + 2w), max(√(w + w²), √ε)), overwriting w with the middle one:
    three N×M buffers in all (w, the root and the output) where out-of-place ops would take nine."""
    d, root = _acosh_1_plus_2w_(w)
    out = d * alpha if bias is None else torch.addcmul(bias, d, alpha)
    # guard: at w → 0 (x = y) the derivative 1/√(w+w²) diverges while ∂w/∂x → 0; below the
    # float resolution of w their product is rounding noise, so cap the derivative at 1/√ε.
    return out, d, root.clamp_min_(math.sqrt(torch.finfo(w.dtype).eps))


def _bias_or_zeros(bias: torch.Tensor | None, m: int) -> torch.Tensor:
    """The bias (M,) as the native kernels take it: contiguous, zeros for no bias."""
    return torch.zeros(m, dtype=torch.float32) if bias is None else bias.detach().contiguous()


class _ArcoshAffine(torch.autograd.Function):
    """out = α · acosh(1 + 2 A Bᵀ) + bias, with a hand-written backward (eager PyTorch ops).

    With w = (A Bᵀ)_ij ≥ 0: acosh(1 + 2w) = log1p(2w + 2√(w + w²)) and
    ∂/∂w acosh(1 + 2w) = 1 / √(w + w²). Only √(w + w²) and the distances are kept for backward;
    autograd would keep four ``N×M`` intermediates and run eight elementwise passes.
    """

    @staticmethod
    def forward(ctx, a, b, alpha, bias):  # a: (N, k), b: (M, k), alpha: (), bias: (M,) or None
        out, d, root = _arcosh_affine_eager(a @ b.T, alpha, bias)
        ctx.save_for_backward(a, b, alpha, d, root)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad):  # grad: (N, M)
        a, b, alpha, d, root = ctx.saved_tensors
        grad_a = grad_b = grad_alpha = grad_bias = None
        if ctx.needs_input_grad[3] and ctx.has_bias:
            grad_bias = grad.sum(0)
        if ctx.needs_input_grad[2]:
            grad_alpha = torch.dot(grad.reshape(-1), d.reshape(-1)).reshape(alpha.shape)
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            gw = grad / root  # ∂L/∂w up to the scalar α, (N, M)
            if ctx.needs_input_grad[0]:
                grad_a = (gw @ b) * alpha
            if ctx.needs_input_grad[1]:
                grad_b = (gw.T @ a) * alpha
        return grad_a, grad_b, grad_alpha, grad_bias


class _NativeDistanceLogits(torch.autograd.Function):
    """out = α · acosh(1 + 2 A Bᵀ) + bias by the fused passes of :mod:`hyperr1.native` (float32, CPU),
    from the points x, y and c directly: the factors A, B and their backward are inside the kernel.

    Nothing N×M is kept for backward besides the output (the eager kernel keeps two more
    buffers): backward recomputes A Bᵀ row block by row block. It reads the output for
    ∂L/∂α = Σ g·(out − b) / α, so α must not be 0 (:func:`distance_logits` routes α = 0 to the
    eager kernel) and the output must not be modified in place before backward (autograd's
    version check enforces that).
    """

    @staticmethod
    def forward(ctx, x, y, c, alpha, bias):
        alpha_value = float(alpha)
        if alpha_value == 0.0:
            raise ValueError("the native distance kernel's backward needs α != 0")
        out = _native_logits(x, y, c, alpha_value, bias)
        ctx.save_for_backward(x, y, c, alpha, bias, out)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, y, c, alpha, bias, out = ctx.saved_tensors
        alpha_value = float(alpha)
        grad_x, grad_y, grad_c, grad_bias, dot = native.distance_backward(
            grad.contiguous(),
            out,
            x.contiguous(),
            y.contiguous(),
            float(c),
            _bias_or_zeros(bias, y.shape[0]),
            alpha_value,
            root_floor=_ROOT_FLOOR,
        )
        needs = ctx.needs_input_grad
        return (
            grad_x,
            grad_y,
            _scalar_like(grad_c, c) if needs[2] else None,
            _scalar_like(dot / alpha_value, alpha) if needs[3] else None,
            grad_bias if bias is not None else None,
        )


def _native_logits(
    x: torch.Tensor, y: torch.Tensor, c: torch.Tensor, alpha: float, bias: torch.Tensor | None
) -> torch.Tensor:
    """The native forward on tensors as autograd hands them over (any layout, bias optional)."""
    return native.distance_forward(x.contiguous(), y.contiguous(), float(c), _bias_or_zeros(bias, y.shape[0]), alpha)


def _scalar_like(value: float, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(value, dtype=like.dtype).reshape(like.shape)


def distance_logits(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    c: float | torch.Tensor,
    alpha: float | torch.Tensor = 1.0,
    bias: torch.Tensor | None = None,
    kernel: str = "auto",
) -> torch.Tensor:
    """α · d_c(x_i, y_j) + b_j for all pairs, in one matrix product and a hand-written backward.

    ``x`` is (N, d), ``y`` is (M, d), the result (N, M). Gradients flow to x, y, c, α and b.
    ``kernel`` picks the implementation (see :data:`KERNELS`; with gradients, α = 0 always runs
    the eager one, whose backward does not divide by α): on the CPU the native one runs
    forward + backward about 2.7× faster than the eager one (``benchmarks/bench_head.py``) and
    agrees with it to float32 rounding (relative differences up to about 1e-5 for points near
    the boundary, where the distance is ill-conditioned). See :func:`pairwise_dist` for the
    distance.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[-1] != y.shape[-1]:
        raise ValueError(f"expected (N, d) and (M, d) tensors, got {tuple(x.shape)} and {tuple(y.shape)}")
    kernel = _resolve_kernel(kernel, x)
    c = _as_c(c, x)
    # acosh(1 + 2w)/√c is the distance, so fold 1/√c into the scalar α
    alpha = torch.as_tensor(alpha, dtype=x.dtype, device=x.device) / c.sqrt()
    if kernel == "native":
        if not torch.is_grad_enabled():  # inference (sampling): no autograd
            return _native_logits(x, y, c, float(alpha), bias)
        if float(alpha.detach()) != 0.0:  # the native backward divides by α; α = 0 takes the eager path below
            return _NativeDistanceLogits.apply(x, y, c, alpha, bias)
    a, b = _pair_factors(x, y, c)
    if not torch.is_grad_enabled():  # inference (sampling): no autograd, everything in place
        return _arcosh_affine_inplace(a @ b.T, alpha, bias)
    return _ArcoshAffine.apply(a, b, alpha, bias)


def pairwise_dist(x: torch.Tensor, y: torch.Tensor, *, c: float | torch.Tensor = 1.0) -> torch.Tensor:
    """All-pairs Poincaré distances, (N, d) × (M, d) → (N, M).

        d_c(x, y) = (1/√c) · arcosh(1 + 2c‖x − y‖² / ((1 − c‖x‖²)(1 − c‖y‖²)))

    (Nickel & Kiela 2017, eq. 1, for c = 1). The squared norm of the difference comes from one
    matrix product (see ``_pair_factors``), so memory is O(N·M) rather than geoopt's O(N·M·d).
    Agrees with ``geoopt.PoincareBall(c).dist`` to 1e-5 relative in float64 up to ‖x‖ = 1 − 1e-5;
    for nearly coincident points the error is absolute (about √ε of the dtype) because of the
    cancellation in ‖x‖² + ‖y‖² − 2⟨x, y⟩.
    """
    return distance_logits(x, y, c=c)


# ---------------------------------------------------------------------------------------------
# hyperbolic multinomial logistic regression
# ---------------------------------------------------------------------------------------------


def mlr_logits(x: torch.Tensor, p: torch.Tensor, a: torch.Tensor, *, c: float | torch.Tensor) -> torch.Tensor:
    """Hyperbolic MLR logits (Ganea et al. 2018, eq. 25), all pairs: (N, d), (K, d), (K, d) → (N, K).

        ζ_k(x) = (λ_pₖ ‖aₖ‖ / √c) · asinh( 2√c ⟨(−pₖ) ⊕ x, aₖ⟩ / ((1 − c‖(−pₖ) ⊕ x‖²) ‖aₖ‖) )

    ``p`` are the hyperplane offsets on the ball and ``a`` their normals given at the origin;
    the normal at pₖ is the parallel transport aₖ(1 − c‖pₖ‖²), so λ_pₖ‖aₖ‖ = 2‖a⁰ₖ‖.
    The Möbius sum m = (−p) ⊕ x is never materialised: with β = 1 − 2c⟨p, x⟩ + c‖x‖²,
    γ = 1 − c‖p‖², δ = 1 − 2c⟨p, x⟩ + c²‖p‖²‖x‖²,

        ⟨m, â⟩ = (γ⟨x, â⟩ − β⟨p, â⟩) / δ,    ‖m‖² = ‖x − p‖² / δ,

    so the cost is two (N×d)·(d×K) products.
    """
    c = _as_c(c, x)
    sqrt_c = c.sqrt()
    a_norm = a.norm(dim=-1).clamp_min(torch.finfo(a.dtype).tiny)  # guard: zero normal vector
    a_hat = a / a_norm[:, None]  # (K, d)
    x2 = x.pow(2).sum(-1, keepdim=True)  # (N, 1)
    p2 = p.pow(2).sum(-1)  # (K,)
    xp = x @ p.T  # (N, K)
    xa = x @ a_hat.T  # (N, K)
    pa = (p * a_hat).sum(-1)  # (K,)
    beta = 1 - 2 * c * xp + c * x2
    gamma = 1 - c * p2
    # guard: δ = ‖1 ⊕ …‖ denominators are ≥ (1 − √c‖p‖√c‖x‖)² > 0 inside the ball
    delta = (1 - 2 * c * xp + c * c * p2 * x2).clamp_min(torch.finfo(x.dtype).eps)
    m_a = (gamma * xa - beta * pa) / delta
    m2 = (x2 + p2 - 2 * xp).clamp_min(0) / delta
    # guard: keep 1 − c‖m‖² positive for points pushed onto the boundary by rounding
    denom = (1 - c * m2).clamp_min(torch.finfo(x.dtype).eps)
    return (2 * a_norm / sqrt_c) * torch.asinh(2 * sqrt_c * m_a / denom)


# ---------------------------------------------------------------------------------------------
# Gromov δ-hyperbolicity
# ---------------------------------------------------------------------------------------------


def gromov_delta(distances: torch.Tensor, *, base_points: torch.Tensor | None = None) -> float:
    """Gromov δ of a finite metric space by the four-point condition.

    With Gromov products (x|y)_w = ½(d(x, w) + d(y, w) − d(x, y)),

        δ = max_{w,x,y,z} [ min((x|z)_w, (z|y)_w) − (x|y)_w ],

    the maximum over the given ``base_points`` (all points when None). For a fixed w the inner
    maximum over z is a (max, min) matrix product, computed in row chunks. Trees have δ = 0.
    """
    d = torch.as_tensor(distances, dtype=torch.float64)
    if d.dim() != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"distance matrix must be square, got shape {tuple(d.shape)}")
    n = d.shape[0]
    ws = torch.arange(n) if base_points is None else torch.as_tensor(base_points)
    best = 0.0
    chunk = max(1, 2**22 // max(n * n, 1))
    for w in ws.tolist():
        g = 0.5 * (d[:, w, None] + d[None, :, w] - d)  # (n, n) Gromov products at w
        for start in range(0, n, chunk):
            rows = g[start : start + chunk]  # (r, n): (x|z)_w for x in the chunk
            maxmin = torch.minimum(rows[:, :, None], g[None, :, :]).amax(dim=1)  # (r, n)
            best = max(best, float((maxmin - rows).max()))
    return best


def delta_hyperbolicity(
    data: torch.Tensor | nx.Graph,
    *,
    c: float | None = 1.0,
    num_points: int = 200,
    num_base_points: int | None = 8,
    seed: int = 0,
) -> float:
    """Relative Gromov δ, 2δ / diameter, on a random sample (Khrulkov et al. 2020, sec. 3).

    ``data`` may be
      * an (N, d) tensor of points on the Poincaré ball of curvature ``-c`` (``c=None`` for
        Euclidean points),
      * an (N, N) distance matrix -- pass ``c=None`` and a square symmetric tensor, or
      * a networkx graph, measured by undirected shortest-path length.

    ``num_points`` nodes are sampled without replacement (all when fewer), and δ is maximised
    over ``num_base_points`` base points of the sample (all when None). The result lies in
    [0, 1]: 0 for trees, near 0 for strongly hyperbolic data.
    """
    gen = torch.Generator().manual_seed(seed)
    if isinstance(data, nx.Graph):
        nodes = list(data.nodes)
        if len(nodes) < 2:
            raise ValueError("delta_hyperbolicity needs a graph with at least 2 nodes")
        pick = torch.randperm(len(nodes), generator=gen)[:num_points].tolist()
        und = data.to_undirected(as_view=True)
        sample = [nodes[i] for i in pick]
        d = torch.zeros(len(sample), len(sample), dtype=torch.float64)
        for i, u in enumerate(sample):
            lengths = nx.single_source_shortest_path_length(und, u)
            for j, v in enumerate(sample):
                if v not in lengths:
                    raise ValueError(f"graph is disconnected: no path between {u!r} and {v!r}")
                d[i, j] = lengths[v]
    else:
        t = torch.as_tensor(data)
        if t.dim() != 2:
            raise ValueError(f"expected points (N, d) or distances (N, N), got shape {tuple(t.shape)}")
        pick = torch.randperm(t.shape[0], generator=gen)[:num_points]
        is_matrix = (
            c is None and t.shape[0] == t.shape[1] and torch.allclose(t, t.T) and bool((t.diagonal() == 0).all())
        )
        if is_matrix:
            d = t[pick][:, pick].double()
        else:
            pts = t[pick].double()
            d = torch.cdist(pts, pts) if c is None else pairwise_dist(pts, pts, c=c)
            d.fill_diagonal_(0)
    diameter = float(d.max())
    if diameter == 0:
        return 0.0
    base = None
    if num_base_points is not None and num_base_points < d.shape[0]:
        base = torch.randperm(d.shape[0], generator=gen)[:num_base_points]
    return 2 * gromov_delta(d, base_points=base) / diameter

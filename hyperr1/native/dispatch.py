r"""The distance head's logits α · d_c(x_i, y_j) + b_j: kernel choice and autograd wrappers.

The math lives in :mod:`hyperr1.geometry`: with the factors A = :func:`~hyperr1.geometry.left_factor`
(x) and B = :func:`~hyperr1.geometry.right_factor` (y), one matrix product gives

.. math::

    w_{ij} = (A B^\top)_{ij} = \frac{c\,\lVert x_i - y_j\rVert^2}{(1 - c\lVert x_i\rVert^2)(1 - c\lVert y_j\rVert^2)},
    \qquad \sqrt{c}\, d_c(x_i, y_j) = \operatorname{arcosh}(1 + 2 w_{ij})

(Nickel & Kiela 2017, eq. 1, for c = 1). This module evaluates α·arcosh(1 + 2w)/√c + b over the N×M
matrix and its backward, by one of the :data:`KERNELS`:

* ``"eager"`` -- PyTorch ops on any device and dtype: the product A Bᵀ, then
  arcosh(1 + 2w) = log1p(2(w + √(w + w²))) in place, with the hand-written backward
  ∂ arcosh(1 + 2w)/∂w = 1/√(w + w²) (:class:`_ArcoshAffine`), which keeps two N×M buffers where
  autograd would keep four;
* ``"native"`` -- the fused C passes of :mod:`hyperr1.native` (float32 on the CPU), factors and
  chain rule inside the loops, nothing N×M kept but the output (:class:`_NativeDistanceLogits`);
* ``"auto"`` -- native where it applies and builds, eager otherwise.

:func:`distance_logits` is the differentiable entry point; :class:`DistanceLogits` prepares the
prototypes' half once for a run of inference calls (sampling).

References
----------
Nickel & Kiela 2017, "Poincaré Embeddings for Learning Hierarchical Representations".
"""

from __future__ import annotations

import functools
import math
import warnings

import torch

from hyperr1 import geometry, native

__all__ = ["KERNELS", "DistanceLogits", "distance_logits", "distance_logprobs", "resolve_kernel"]

KERNELS = ("auto", "eager", "native")
"""Kernels of :func:`distance_logits`: ``"eager"`` (PyTorch ops, any device and dtype), ``"native"``
(:mod:`hyperr1.native`, fused C loops for float32 on the CPU), ``"auto"`` (native where it applies
and builds, else eager, with a one-time warning when a float32 CPU call cannot get it)."""

_ROOT_FLOOR = math.sqrt(torch.finfo(torch.float32).eps)  # the native backward's floor of √(w + w²)


def resolve_kernel(kernel: str, x: torch.Tensor) -> str:
    """``"eager"`` or ``"native"``: the kernel that ``kernel`` (one of :data:`KERNELS`) runs for
    tensors like ``x``. Errors name what ``kernel`` needs; ``"native"`` raises
    :class:`hyperr1.native.NativeUnavailable` with the compiler's message when the build fails."""
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
    sampling).

    Whatever depends only on p is prepared once (for the eager kernel the factor B, stored
    transposed and contiguous), so each call costs one matrix product and one in-place
    elementwise pass, or one native call; values agree with :func:`distance_logits` (same kernel)
    to float rounding.

    Args:
        y: the fixed points p, (M, d) on the ball.
        c: curvature parameter c > 0.
        alpha: the scalar α.
        bias: the per-point bias b, (M,), or None.
        kernel: one of :data:`KERNELS`.
    """

    def __init__(self, y: torch.Tensor, *, c, alpha=1.0, bias: torch.Tensor | None = None, kernel: str = "auto"):
        self.kernel = resolve_kernel(kernel, y)
        self.c = geometry.as_curvature(c, y).detach()
        self.alpha = (torch.as_tensor(alpha, dtype=y.dtype, device=y.device) / self.c.sqrt()).detach()
        self.bias = None if bias is None else bias.detach()
        if self.kernel == "native":
            self.y = y.detach().contiguous()
            self._native_args = (float(self.c), _bias_or_zeros(self.bias, y.shape[0]), float(self.alpha))
        else:
            self.b_t = geometry.right_factor(y.detach(), c=self.c).T.contiguous()  # (d+2, M): contiguous is faster

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # (N, d) → (N, M)
        if self.kernel == "native":
            return native.distance_forward(x.contiguous(), self.y, *self._native_args)
        return _arcosh_affine_inplace(geometry.left_factor(x, c=self.c) @ self.b_t, self.alpha, self.bias)


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
        return _point_grads(ctx.needs_input_grad, grad_x, grad_y, grad_c, grad_bias, dot, c, alpha, bias)


def _point_grads(needs, grad_x, grad_y, grad_c: float, grad_bias, dot: float, c, alpha, bias) -> tuple:
    """The gradients of (x, y, c, α, bias) from the native backward's outputs (α ∂L/∂α is ``dot``)."""
    alpha_value = float(alpha)
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
    the boundary, where the distance is ill-conditioned). See
    :func:`hyperr1.geometry.pairwise_dist` for the distance.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[-1] != y.shape[-1]:
        raise ValueError(f"expected (N, d) and (M, d) tensors, got {tuple(x.shape)} and {tuple(y.shape)}")
    kernel = resolve_kernel(kernel, x)
    c = geometry.as_curvature(c, x)
    # acosh(1 + 2w)/√c is the distance, so fold 1/√c into the scalar α
    alpha = torch.as_tensor(alpha, dtype=x.dtype, device=x.device) / c.sqrt()
    if kernel == "native":
        if not torch.is_grad_enabled():  # inference (sampling): no autograd
            return _native_logits(x, y, c, float(alpha), bias)
        if float(alpha.detach()) != 0.0:  # the native backward divides by α; α = 0 takes the eager path below
            return _NativeDistanceLogits.apply(x, y, c, alpha, bias)
    a, b = geometry.pair_factors(x, y, c=c)
    if not torch.is_grad_enabled():  # inference (sampling): no autograd, everything in place
        return _arcosh_affine_inplace(a @ b.T, alpha, bias)
    return _ArcoshAffine.apply(a, b, alpha, bias)


class _NativeDistanceLogProbs(torch.autograd.Function):
    """(log softmax(out / T) at the tokens, its entropy) for out = α · acosh(1 + 2 A Bᵀ) + bias, by the
    passes of :func:`hyperr1.native.distance_logprob_forward` / ``_backward``: the N×M logits, their
    softmax and its gradient live a block of rows at a time in the kernel's scratch, never in memory
    (on teacher forcing's 1,024 × 1,255 logits, four passes over 5 MB buffers in the GRPO step). Backward
    recomputes the logits, as the distance backward recomputes w; the entropy gets no gradient."""

    @staticmethod
    def forward(ctx, x, y, c, alpha, bias, tokens, temperature):
        x, y = x.contiguous(), y.contiguous()
        logp, ent, lse = native.distance_logprob_forward(
            x, y, float(c), _bias_or_zeros(bias, y.shape[0]), float(alpha), temperature, tokens
        )
        ctx.save_for_backward(x, y, c, alpha, bias, tokens, lse)
        ctx.temperature = temperature
        ctx.mark_non_differentiable(ent)
        return logp, ent

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad, _grad_entropy):
        x, y, c, alpha, bias, tokens, lse = ctx.saved_tensors
        alpha_value = float(alpha)
        grad_x, grad_y, grad_c, grad_bias, dot = native.distance_logprob_backward(
            grad.contiguous(), lse, tokens, ctx.temperature, x, y, float(c), _bias_or_zeros(bias, y.shape[0]),
            alpha_value, root_floor=_ROOT_FLOOR,
        )  # fmt: skip
        grads = _point_grads(ctx.needs_input_grad, grad_x, grad_y, grad_c, grad_bias, dot, c, alpha, bias)
        return (*grads, None, None)  # tokens, temperature


def distance_logprobs(
    x: torch.Tensor,
    y: torch.Tensor,
    tokens: torch.Tensor,
    *,
    c: float | torch.Tensor,
    alpha: float | torch.Tensor = 1.0,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """log softmax(ℓ / T)_{y_i} and the entropy of softmax(ℓ / T) per row (N,) for the logits
    ℓ = :func:`distance_logits` (x (N, d), y (M, d), the same ``c``, ``alpha``, ``bias``) and ``tokens``
    (N,), by the native kernel (float32 CPU tensors; :class:`_NativeDistanceLogProbs`). Gradients flow to
    x, y, c, α and b through the log-probabilities; the entropy is a metric. Equals
    :class:`hyperr1.decoding.TokenLogProbs` of those logits to float rounding."""
    if resolve_kernel("native", x) != "native" or not temperature > 0:
        raise ValueError(f"distance_logprobs needs the native kernel and a temperature > 0, got {temperature}")
    c = geometry.as_curvature(c, x)
    alpha = torch.as_tensor(alpha, dtype=x.dtype, device=x.device) / c.sqrt()
    if float(alpha.detach()) == 0.0:
        raise ValueError("distance_logprobs: the native backward needs α != 0")
    return _NativeDistanceLogProbs.apply(x, y, c, alpha, bias, tokens.reshape(-1).contiguous(), float(temperature))

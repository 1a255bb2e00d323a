"""Hyperbolic layers: thin ``nn.Module`` wrappers around :mod:`hyperr1.geometry`.

Points on the ball are :class:`geoopt.ManifoldParameter`s, so geoopt's Riemannian optimizers
(see :mod:`hyperr1.optim`) keep them on the manifold. Every layer takes ``c`` (curvature ``-c``)
and ``learnable_c``; layers that share a ball can be given the same ``geoopt.PoincareBall``
through ``ball=``.
"""

from __future__ import annotations

import geoopt
import torch
from torch import nn

from hyperr1 import geometry
from hyperr1.native import dispatch

__all__ = [
    "PoincareProjection",
    "HyperbolicDistanceHead",
    "HyperbolicMLR",
    "MobiusLinear",
    "PoincareEmbedding",
]


def _make_ball(c: float, learnable_c: bool, ball: geoopt.PoincareBall | None) -> geoopt.PoincareBall:
    return ball if ball is not None else geometry.ball(c, learnable=learnable_c)


def _points_near_origin(n: int, dim: int, std: float, ball: geoopt.PoincareBall) -> geoopt.ManifoldParameter:
    with torch.no_grad():
        data = ball.projx(torch.randn(n, dim) * std)
    return geoopt.ManifoldParameter(data, manifold=ball)


class PoincareProjection(nn.Module):
    r"""Euclidean features → the ball: :math:`x \mapsto \exp_0(\operatorname{clip}_r(W x + b))`.

    Feature clipping x·min(1, r/‖x‖) (Guo et al. 2022) bounds the norm of the output by
    tanh(√c·r)/√c, which keeps gradients alive and makes any input finite. The usual first layer of
    a hyperbolic head on top of a Euclidean encoder.

    Args:
        in_features: width of the Euclidean input.
        out_features: dimension of the ball.
        c: curvature parameter c > 0 (ball of radius 1/√c, curvature −c).
        clip_r: clipping radius r of the linear map's output; None: no clipping.
        learnable_c: make c a trainable parameter.
        ball: a ``geoopt.PoincareBall`` to share with other layers (overrides ``c``, ``learnable_c``).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        c: float = 1.0,
        clip_r: float | None = 1.0,
        learnable_c: bool = False,
        ball: geoopt.PoincareBall | None = None,
    ):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.clip_r = clip_r
        self.ball = _make_ball(c, learnable_c, ball)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) → (..., out)
        return geometry.clipped_expmap0(self.linear(x), self.clip_r, c=self.ball.c)

    def extra_repr(self) -> str:
        return f"clip_r={self.clip_r}"


class HyperbolicDistanceHead(nn.Module):
    r"""Prototype classifier on the ball: :math:`\operatorname{logit}_k(x) = -s\, d_c(x, p_k)^q + b_k`.

    ``p_k`` (``num_classes × dim``) is a ManifoldParameter initialised near the origin, ``s > 0``
    a learnable scale (stored as log s), ``q`` is 1 or 2 (``squared``), ``b_k`` an optional
    per-class bias. With ``q = 1`` the distance, scale and bias run in one fused kernel
    (:func:`hyperr1.native.dispatch.distance_logits`); ``kernel`` picks its implementation (one of
    :data:`hyperr1.native.dispatch.KERNELS`; ``"auto"`` takes the native C loops for float32 on the CPU).
    Input: points on the ball (..., dim), e.g. from :class:`PoincareProjection`; output (..., K).

    Args:
        dim: dimension of the ball.
        num_classes: K, the number of prototypes.
        c: curvature parameter c > 0.
        squared: q = 2 (squared distances) instead of q = 1.
        bias: learn the per-class bias b_k.
        init_scale: initial s.
        init_std: standard deviation of the prototypes' initial coordinates.
        learnable_c: make c a trainable parameter.
        ball: a ``geoopt.PoincareBall`` to share with other layers (overrides ``c``, ``learnable_c``).
        kernel: one of :data:`hyperr1.native.dispatch.KERNELS`.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        *,
        c: float = 1.0,
        squared: bool = False,
        bias: bool = True,
        init_scale: float = 1.0,
        init_std: float = 1e-2,
        learnable_c: bool = False,
        ball: geoopt.PoincareBall | None = None,
        kernel: str = "auto",
    ):
        super().__init__()
        if kernel not in dispatch.KERNELS:
            raise ValueError(f"unknown kernel {kernel!r}; known: {list(dispatch.KERNELS)}")
        if init_scale <= 0:
            raise ValueError(f"init_scale must be > 0, got {init_scale}")
        self.ball = _make_ball(c, learnable_c, ball)
        self.prototypes = _points_near_origin(num_classes, dim, init_std, self.ball)
        self.log_scale = nn.Parameter(torch.tensor(float(init_scale)).log())
        self.bias = nn.Parameter(torch.zeros(num_classes)) if bias else None
        self.squared = squared
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., dim) on the ball → (..., K)
        flat = x.reshape(-1, x.shape[-1])  # (N, dim)
        scale = self.log_scale.exp()
        if self.squared:
            d = geometry.pairwise_dist(flat, self.prototypes, c=self.ball.c)
            logits = -scale * d.pow(2)
            if self.bias is not None:
                logits = logits + self.bias
        else:
            logits = dispatch.distance_logits(
                flat, self.prototypes, c=self.ball.c, alpha=-scale, bias=self.bias, kernel=self.kernel
            )
        return logits.reshape(*x.shape[:-1], -1)

    def extra_repr(self) -> str:
        k, d = self.prototypes.shape
        return f"dim={d}, num_classes={k}, squared={self.squared}, bias={self.bias is not None}"


class HyperbolicMLR(nn.Module):
    """Hyperbolic multinomial logistic regression (Ganea et al. 2018, sec. 3.1).

    One hyperplane per class, through ``offsets`` p_k on the ball (ManifoldParameter) with normal
    ``normals`` a_k given in the tangent space at the origin; logits from
    :func:`hyperr1.geometry.mlr_logits` (the signed, scaled distance of x to each hyperplane).
    Input: points on the ball (..., dim); output (..., K).

    Args:
        dim: dimension of the ball.
        num_classes: K, the number of hyperplanes.
        c: curvature parameter c > 0.
        init_std: standard deviation of the offsets' initial coordinates.
        learnable_c: make c a trainable parameter.
        ball: a ``geoopt.PoincareBall`` to share with other layers (overrides ``c``, ``learnable_c``).
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        *,
        c: float = 1.0,
        init_std: float = 1e-2,
        learnable_c: bool = False,
        ball: geoopt.PoincareBall | None = None,
    ):
        super().__init__()
        self.ball = _make_ball(c, learnable_c, ball)
        self.offsets = _points_near_origin(num_classes, dim, init_std, self.ball)
        bound = dim**-0.5
        self.normals = nn.Parameter(torch.empty(num_classes, dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., dim) → (..., K)
        flat = x.reshape(-1, x.shape[-1])
        logits = geometry.mlr_logits(flat, self.offsets, self.normals, c=self.ball.c)
        return logits.reshape(*x.shape[:-1], -1)


class MobiusLinear(nn.Module):
    r"""Möbius linear layer (Ganea et al. 2018, eq. 26–28): :math:`y = \sigma^{\otimes}((M \otimes x) \oplus b)`.

    M ⊗ x = exp₀(M log₀ x) is the Möbius matrix–vector product, b a ManifoldParameter bias, and
    the nonlinearity is applied in the tangent space at the origin: σ^⊗(y) = exp₀(σ(log₀ y)).
    Input and output are points on the ball.

    Args:
        in_features: dimension of the input ball.
        out_features: dimension of the output ball.
        c: curvature parameter c > 0.
        bias: learn the Möbius bias b.
        nonlinearity: σ, e.g. ``nn.Tanh()``; None: none.
        learnable_c: make c a trainable parameter.
        ball: a ``geoopt.PoincareBall`` to share with other layers (overrides ``c``, ``learnable_c``).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        c: float = 1.0,
        bias: bool = True,
        nonlinearity: nn.Module | None = None,
        learnable_c: bool = False,
        ball: geoopt.PoincareBall | None = None,
    ):
        super().__init__()
        self.ball = _make_ball(c, learnable_c, ball)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        self.bias = geoopt.ManifoldParameter(torch.zeros(out_features), manifold=self.ball) if bias else None
        self.nonlinearity = nonlinearity

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) on the ball → (..., out)
        y = self.ball.mobius_matvec(self.weight, x)
        if self.bias is not None:
            y = self.ball.mobius_add(y, self.bias)
        if self.nonlinearity is not None:
            y = self.ball.expmap0(self.nonlinearity(self.ball.logmap0(y)))
        return y


class PoincareEmbedding(nn.Module):
    """An embedding table on the ball, initialised uniformly in [−init, init]^dim (Nickel & Kiela 2017).

    Train it with :func:`hyperr1.optim.riemannian_optimizer`; ``forward(ids)`` gathers rows.

    Args:
        num_embeddings: rows of the table.
        dim: dimension of the ball.
        c: curvature parameter c > 0.
        init: half-width of the uniform initialisation.
        learnable_c: make c a trainable parameter.
        ball: a ``geoopt.PoincareBall`` to share with other layers (overrides ``c``, ``learnable_c``).
    """

    def __init__(
        self,
        num_embeddings: int,
        dim: int,
        *,
        c: float = 1.0,
        init: float = 1e-3,
        learnable_c: bool = False,
        ball: geoopt.PoincareBall | None = None,
    ):
        super().__init__()
        self.ball = _make_ball(c, learnable_c, ball)
        with torch.no_grad():
            data = self.ball.projx(torch.empty(num_embeddings, dim).uniform_(-init, init))
        self.weight = geoopt.ManifoldParameter(data, manifold=self.ball)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (...) → (..., dim)
        return self.weight[ids]

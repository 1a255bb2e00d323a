"""Riemannian optimizers with separate learning rates for manifold and Euclidean parameters.

geoopt's :class:`~geoopt.optim.RiemannianAdam` / :class:`~geoopt.optim.RiemannianSGD` update a
:class:`~geoopt.ManifoldParameter` by a retraction along its Riemannian gradient (Bécigneul &
Ganea 2019, "Riemannian Adaptive Optimization Methods") and every other parameter as plain Adam
/ SGD would. Points on the ball usually want a different step size from the Euclidean weights
around them, hence two parameter groups.
"""

from __future__ import annotations

from collections.abc import Iterable

import geoopt
import torch

__all__ = ["OPTIMIZERS", "split_parameters", "riemannian_optimizer"]

OPTIMIZERS = {"adam": geoopt.optim.RiemannianAdam, "sgd": geoopt.optim.RiemannianSGD}
"""The optimizers :func:`riemannian_optimizer` builds, by ``name``."""


def split_parameters(
    params: torch.nn.Module | Iterable[torch.nn.Parameter],
) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """(manifold parameters, Euclidean parameters), skipping those that do not require grad."""
    if isinstance(params, torch.nn.Module):
        params = params.parameters()
    manifold, euclidean = [], []
    for p in params:
        if p.requires_grad:
            (manifold if isinstance(p, geoopt.ManifoldParameter) else euclidean).append(p)
    return manifold, euclidean


def riemannian_optimizer(
    params: torch.nn.Module | Iterable[torch.nn.Parameter],
    *,
    name: str = "adam",
    lr: float = 1e-3,
    manifold_lr: float | None = None,
    weight_decay: float = 0.0,
    stabilize: int | None = 10,
    **kwargs,
) -> torch.optim.Optimizer:
    """Build RiemannianAdam (``name="adam"``) or RiemannianSGD (``name="sgd"``).

    Parameter groups: manifold parameters at ``manifold_lr`` (default ``lr``) with no weight
    decay (decay toward the Euclidean origin is not a Riemannian operation), Euclidean
    parameters at ``lr`` with ``weight_decay``. ``stabilize`` re-projects manifold parameters
    onto the manifold every that many steps. Extra keyword arguments go to the optimizer
    (e.g. ``betas``, ``momentum``).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {sorted(OPTIMIZERS)}")
    if lr <= 0 or (manifold_lr is not None and manifold_lr <= 0):
        raise ValueError(f"learning rates must be > 0, got lr={lr}, manifold_lr={manifold_lr}")
    manifold, euclidean = split_parameters(params)
    if not manifold and not euclidean:
        raise ValueError("no trainable parameters given to the optimizer")
    groups = []
    if manifold:
        groups.append({"params": manifold, "lr": manifold_lr or lr, "weight_decay": 0.0, "kind": "manifold"})
    if euclidean:
        groups.append({"params": euclidean, "lr": lr, "weight_decay": weight_decay, "kind": "euclidean"})
    return OPTIMIZERS[name](groups, lr=lr, stabilize=stabilize, **kwargs)

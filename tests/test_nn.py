"""Layers: gradients, boundary behaviour, state_dict round trips and optimizer groups."""

import copy
import io

import geoopt
import pytest
import torch

from hyperr1 import geometry as G
from hyperr1.nn import (
    HyperbolicDistanceHead,
    HyperbolicMLR,
    MobiusLinear,
    PoincareEmbedding,
    PoincareProjection,
)
from hyperr1.optim import RiemannianAdam, riemannian_optimizer, split_parameters

DTYPES = [torch.float32, torch.float64]


def make_layers(c=1.0):
    torch.manual_seed(0)
    return {
        "projection": (PoincareProjection(6, 4, c=c, clip_r=1.5), "euclidean"),
        "head": (HyperbolicDistanceHead(4, 7, c=c, init_std=0.2), "ball"),
        "head_squared": (HyperbolicDistanceHead(4, 7, c=c, squared=True, init_std=0.2), "ball"),
        "mlr": (HyperbolicMLR(4, 5, c=c, init_std=0.2), "ball"),
        "mobius": (MobiusLinear(4, 3, c=c, nonlinearity=torch.nn.Tanh()), "ball"),
    }


def layer_input(kind, in_features, dtype, n=5, seed=1):
    """Euclidean features, or points strictly inside the ball (norm ≤ 0.8, so that finite
    differences in gradcheck never cross the boundary projection)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, in_features, generator=g, dtype=dtype)
    if kind == "euclidean":
        return x
    return G.clip_features(x, 0.8) * torch.rand(n, 1, generator=g, dtype=dtype)


def in_features(layer):
    for name in ("linear", "prototypes", "offsets", "weight"):
        if hasattr(layer, name):
            t = getattr(layer, name)
            return t.in_features if name == "linear" else t.shape[1]
    raise AssertionError


@pytest.mark.parametrize("name", list(make_layers()))
def test_gradcheck_float64(name):
    layer, kind = make_layers()[name]
    layer = layer.double()
    x = layer_input(kind, in_features(layer), torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: layer(x), (x,))
    # and every parameter receives a finite gradient
    layer(x).sum().backward()
    for p in layer.parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all()


def test_embedding_gradcheck_float64():
    emb = PoincareEmbedding(10, 3, init=0.2).double()
    emb.weight.manifold.assert_check_point_on_manifold(emb.weight)
    ids, others = torch.tensor([0, 3, 3, 9]), torch.tensor([1, 2, 4, 5])  # d(x, x) is a cusp: no self pairs
    w = emb.weight.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda w: G.pairwise_dist(w[ids], w[others], c=1.0), (w,))
    assert emb(ids).shape == (4, 3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(make_layers()))
def test_no_nan_at_the_boundary_and_for_huge_inputs(name, dtype):
    layer, kind = make_layers()[name]
    layer = layer.to(dtype)
    n_in = in_features(layer)
    if kind == "euclidean":
        x = torch.randn(8, n_in, dtype=dtype) * 1e30  # clipping makes this harmless
    else:
        x = geoopt.PoincareBall().projx(torch.randn(8, n_in, dtype=dtype) * 1e3)  # on the boundary
    x.requires_grad_()
    out = layer(x)
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert torch.isfinite(x.grad).all()
    for p in layer.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


def test_projection_output_norm_is_bounded_by_clip_radius():
    proj = PoincareProjection(3, 2, c=2.0, clip_r=0.5)
    y = proj(torch.randn(100, 3) * 1e6)
    bound = torch.tanh(torch.tensor(2.0).sqrt() * 0.5) / 2.0**0.5
    assert y.norm(dim=-1).max() <= bound + 1e-6


def test_distance_head_logits_equal_negative_scaled_distance():
    head = HyperbolicDistanceHead(3, 4, init_scale=2.5, init_std=0.3).double()
    with torch.no_grad():
        head.bias.copy_(torch.arange(4.0, dtype=torch.float64))
    x = G.project(torch.randn(6, 3, dtype=torch.float64) * 0.3, c=1.0)
    d = geoopt.PoincareBall().dist(x[:, None], head.prototypes[None])
    torch.testing.assert_close(head(x), -2.5 * d + torch.arange(4.0, dtype=torch.float64))
    head.squared = True
    torch.testing.assert_close(head(x), -2.5 * d.pow(2) + torch.arange(4.0, dtype=torch.float64))
    assert head(x[None]).shape == (1, 6, 4)  # leading dimensions are kept


def test_mobius_linear_matches_definition():
    layer = MobiusLinear(3, 2, c=1.0).double()
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([0.1, -0.2], dtype=torch.float64))
    x = G.project(torch.randn(4, 3, dtype=torch.float64) * 0.3, c=1.0)
    ball = geoopt.PoincareBall()
    mx = G.expmap0(G.logmap0(x, c=1.0) @ layer.weight.T, c=1.0)  # M ⊗ x = exp₀(M log₀ x)
    torch.testing.assert_close(layer(x), ball.mobius_add(mx, layer.bias))


def state_dict_roundtrip(module):
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("name", list(make_layers()) + ["embedding"])
def test_state_dict_round_trip_keeps_manifold_parameters(name):
    layer = PoincareEmbedding(9, 3, init=0.3) if name == "embedding" else make_layers()[name][0]
    with torch.no_grad():  # move every parameter away from its initial value
        for p in layer.parameters():
            p.copy_(p.manifold.projx(p + 0.05) if isinstance(p, geoopt.ManifoldParameter) else p + 0.05)
    fresh = PoincareEmbedding(9, 3) if name == "embedding" else make_layers()[name][0]
    fresh.load_state_dict(state_dict_roundtrip(layer))
    for (k, a), (_, b) in zip(layer.named_parameters(), fresh.named_parameters(), strict=True):
        assert torch.equal(a, b), k
        assert type(a) is type(b), k
        if isinstance(b, geoopt.ManifoldParameter):
            assert isinstance(b.manifold, geoopt.PoincareBall)
            b.manifold.assert_check_point_on_manifold(b)


def test_optimizer_groups_and_riemannian_step_stays_on_ball():
    head = HyperbolicDistanceHead(4, 6, init_std=0.3)
    proj = PoincareProjection(5, 4)
    model = torch.nn.Sequential(proj, head)
    manifold, euclidean = split_parameters(model)
    assert [id(p) for p in manifold] == [id(head.prototypes)]
    opt = riemannian_optimizer(model, lr=0.5, manifold_lr=2.0, weight_decay=0.1)
    lrs = {g["kind"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"manifold": 2.0, "euclidean": 0.5}
    for _ in range(20):  # large steps: points must stay strictly inside the ball
        loss = -model(torch.randn(16, 5)).logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.prototypes.manifold.assert_check_point_on_manifold(head.prototypes)
    assert head.prototypes.norm(dim=-1).max() < 1


def _adam_run(opt_class, groups_of, steps, *, state=None, seed=0):
    """Parameters and optimizer after ``steps`` steps on fixed random gradients; one Euclidean
    parameter has no gradient on every third step (it then counts fewer steps)."""
    torch.manual_seed(seed)
    ball = geoopt.PoincareBall()
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    params.append(geoopt.ManifoldParameter(ball.projx(0.3 * torch.randn(4, 2)), manifold=ball))
    params.append(torch.nn.Parameter(torch.randn(2, 2)))
    opt = opt_class(groups_of(params), lr=0.05, stabilize=2)
    if state is not None:  # a copy: load_state_dict keeps the given tensors, and steps change them
        opt.load_state_dict(copy.deepcopy(state))
    gen = torch.Generator().manual_seed(1)
    for t in range(steps):
        for i, p in enumerate(params):
            p.grad = None if (i == 3 and t % 3 == 1) else torch.randn(p.shape, generator=gen)
        opt.step()
    return params, opt


GROUPINGS = {
    "two groups": lambda ps: [
        {"params": [ps[2]], "lr": 0.2, "weight_decay": 0.0},
        {"params": [ps[0], ps[1], ps[3]], "weight_decay": 0.1},
    ],
    "one mixed group": lambda ps: [{"params": ps, "weight_decay": 0.01}],
    "amsgrad group": lambda ps: [{"params": ps[:2], "amsgrad": True}, {"params": ps[2:]}],
}


@pytest.mark.parametrize("grouping", list(GROUPINGS))
def test_the_foreach_adam_repeats_geoopt_bit_for_bit(grouping):
    ours, ours_opt = _adam_run(RiemannianAdam, GROUPINGS[grouping], 9)
    theirs, theirs_opt = _adam_run(geoopt.optim.RiemannianAdam, GROUPINGS[grouping], 9)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)
    ours_state, theirs_state = ours_opt.state_dict()["state"], theirs_opt.state_dict()["state"]
    assert ours_state.keys() == theirs_state.keys()
    for key in ours_state:
        a, b = ours_state[key], theirs_state[key]
        assert a.keys() == b.keys() and a["step"] == b["step"]
        assert all(torch.equal(a[k], b[k]) for k in a if k != "step")
    assert ours_opt.state_dict()["state"][3]["step"] == 6  # skipped on steps 1, 4, 7


@pytest.mark.parametrize("writer", [geoopt.optim.RiemannianAdam, RiemannianAdam])
def test_the_foreach_adam_and_geoopt_continue_alike_from_either_state(writer):
    _, first = _adam_run(writer, GROUPINGS["two groups"], 4)
    state = first.state_dict()
    ours, _ = _adam_run(RiemannianAdam, GROUPINGS["two groups"], 3, state=state)
    theirs, _ = _adam_run(geoopt.optim.RiemannianAdam, GROUPINGS["two groups"], 3, state=state)
    fresh, _ = _adam_run(RiemannianAdam, GROUPINGS["two groups"], 3)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert not any(torch.equal(a, b) for a, b in zip(ours, fresh, strict=True))  # the state was used


def test_riemannian_optimizer_builds_the_foreach_adam():
    assert type(riemannian_optimizer(torch.nn.Linear(2, 2))) is RiemannianAdam


def test_optimizer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown optimizer"):
        riemannian_optimizer(torch.nn.Linear(2, 2), name="lbfgs")
    with pytest.raises(ValueError, match="learning rates"):
        riemannian_optimizer(torch.nn.Linear(2, 2), lr=0)
    with pytest.raises(ValueError, match="no trainable"):
        riemannian_optimizer([])


def test_head_rejects_an_unknown_kernel():
    with pytest.raises(ValueError, match="unknown kernel"):
        HyperbolicDistanceHead(4, 9, kernel="triton")

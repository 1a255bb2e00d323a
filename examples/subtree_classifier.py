"""Which mammal subtree is a concept in? Hyperbolic vs Euclidean classifiers on Poincaré embeddings.

The subtree-classification experiment of Ganea et al. (2018, sec. 4) in miniature: embed the
WordNet mammal hierarchy on the Poincaré ball (Nickel & Kiela 2017), label every concept with the
child of ``placental.n.01`` whose subtree holds it (carnivore, ungulate, rodent, primate, ...:
those with at least ``--min-size`` descendants; concepts under two of them are left out), and fit
two classifiers on the same points:

* hyperbolic multinomial logistic regression, :class:`hyperr1.nn.HyperbolicMLR`, on the ball,
  trained with Riemannian Adam (:func:`hyperr1.optim.riemannian_optimizer`);
* Euclidean multinomial logistic regression, ``nn.Linear``, on the same coordinates.

Prints the held-out accuracy of both and of the majority class.

    python examples/subtree_classifier.py            # about 30 s on a laptop CPU
    python examples/subtree_classifier.py --tiny     # a smoke run of a few seconds
    python examples/subtree_classifier.py --embedding results/embeddings/poincare_d2/embedding.safetensors
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from hyperr1.embeddings import EmbedConfig, load_embedding, train_embedding
from hyperr1.hierarchy import Hierarchy, load_hierarchy
from hyperr1.nn import HyperbolicMLR
from hyperr1.optim import riemannian_optimizer

PARENT = "placental.n.01"  # the subtrees below this concept are the classes


def subtree_labels(h: Hierarchy, parent: str, min_size: int) -> tuple[list[str], dict[str, int]]:
    """(class names, concept → class id) for the concepts in exactly one large subtree of ``parent``."""
    classes = [k for k in h.children(parent) if len(h.descendants(k)) >= min_size]
    members = {k: h.descendants(k) for k in classes}
    labels = {}
    for v in h.nodes:
        inside = [i for i, k in enumerate(classes) if v in members[k]]
        if len(inside) == 1:
            labels[v] = inside[0]
    return classes, labels


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int, lr: float) -> nn.Module:
    """Full-batch cross-entropy with Riemannian Adam (plain Adam for Euclidean parameters)."""
    opt = riemannian_optimizer(model, lr=lr)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (model(x).argmax(-1) == y).double().mean().item()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=2, help="embedding dimension (default 2)")
    p.add_argument("--epochs", type=int, default=150, help="embedding epochs (default 150; EmbedConfig's is 600)")
    p.add_argument("--embedding", help="a saved embedding (hyperr1 embed --out DIR writes DIR/embedding.safetensors)")
    p.add_argument("--min-size", type=int, default=20, help="smallest subtree that is a class (descendants)")
    p.add_argument("--steps", type=int, default=500, help="full-batch steps of each classifier")
    p.add_argument("--lr", type=float, default=0.05, help="learning rate of both classifiers")
    p.add_argument("--test-frac", type=float, default=0.3, help="share of the concepts held out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="5 embedding epochs, 50 steps: a smoke run")
    args = p.parse_args(argv)
    if args.tiny:
        args.epochs, args.steps = 5, 50

    t0 = time.perf_counter()
    h = load_hierarchy("mammals")
    if args.embedding:
        emb, nodes, meta = load_embedding(args.embedding)
        if meta.get("manifold") != "poincare":
            raise SystemExit(f"{args.embedding} holds a {meta.get('manifold')!r} embedding, not a Poincaré one")
        c = float(meta["c"])
        print(f"embedding: {args.embedding} ({len(nodes)} concepts, dim {emb.shape[1]})")
    else:
        cfg = EmbedConfig(dim=args.dim, epochs=args.epochs, eval_every=0, seed=args.seed)
        result = train_embedding(cfg, h, progress=False)
        emb, nodes, c = result["embedding"], result["nodes"], cfg.c
        print(f"embedding: dim {args.dim}, {args.epochs} epochs, reconstruction MAP {result['metrics']['map']:.3f}")

    classes, labels = subtree_labels(h, PARENT, args.min_size)
    row = {v: i for i, v in enumerate(nodes)}
    concepts = sorted(labels)
    x = emb[[row[v] for v in concepts]].double()  # (N, dim) points on the ball
    y = torch.tensor([labels[v] for v in concepts])  # (N,)
    perm = torch.randperm(len(concepts), generator=torch.Generator().manual_seed(args.seed))
    n_test = int(len(concepts) * args.test_frac)
    test, train = perm[:n_test], perm[n_test:]
    print(f"{len(classes)} subtrees of {PARENT}: {', '.join(k.split('.')[0] for k in classes)}")
    print(f"{len(train)} training and {len(test)} held-out concepts")

    torch.manual_seed(args.seed)
    dim, k = x.shape[1], len(classes)
    models = {
        "hyperbolic MLR": HyperbolicMLR(dim, k, c=c).double(),
        "Euclidean MLR": nn.Linear(dim, k).double(),
    }
    majority = torch.bincount(y[train], minlength=k).argmax()
    print(f"{'majority class':16s} test accuracy {(y[test] == majority).double().mean().item():.3f}")
    for name, model in models.items():
        fit(model, x[train], y[train], steps=args.steps, lr=args.lr)
        print(f"{name:16s} test accuracy {accuracy(model, x[test], y[test]):.3f}")
    print(f"done in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()

"""Experiment: Poincaré embedding of a WordNet noun closure (Nickel & Kiela 2017, Table 1).

The reference experiment is ``--root entity.n.01``: all 82,115 noun synsets (hyponyms and
instance hyponyms) and their 743,241 (node, ancestor) pairs; Nickel & Kiela report MAP 0.851 /
mean rank 4.02 at dim 10 and 0.823 / 4.9 at dim 5.

    python experiments/embed_nouns.py --root entity.n.01 --dim 10 --budget 2700   # one run
    python experiments/embed_nouns.py --scaling                                   # scaling.md

``--init-scheme hierarchy`` starts from :func:`hyperr1.embeddings.hierarchy_init` (radius ∝ depth,
directions inherited from the parents) instead of the paper's uniform cloud near the origin, and
refines it with the same Riemannian SGD at a small η; its run directory is
``<root>_d<dim>_hierarchy[_<tag>]``, and its history starts with the construction's own MAP at
epoch 0 (the construction's seconds count as training time). ``--boundary-eps`` sets the ball's
margin ε, which caps the distance from the origin at log((2 − ε)/ε): at the default 1e-10 a level
spacing a ≥ 2.2 clips the deepest nouns onto one sphere, and the dim-5 runs use 1e-14
(``python experiments/nouns_init_grid.py`` compares the two on the construction alone).

A run writes ``results/embeddings_nouns/<root>_d<dim>/``: ``config.json`` (the resolved
EmbedConfig, seed, version, commit), ``progress.jsonl`` (one line per epoch: loss, training
and wall seconds, peak RSS), ``history.jsonl`` (MAP / mean rank against training seconds at
every evaluation), ``metrics.json`` and ``embedding.safetensors`` at the end. Training runs
until ``--epochs`` or until ``--budget`` training seconds have passed. Periodic evaluations rank
a fixed random sample of ``--eval-sample`` nodes against all nodes (an unbiased estimate of MAP
that costs a few seconds); the last evaluation ranks every node. The state is checkpointed to
``checkpoint.safetensors`` every ``--checkpoint-every`` epochs and a rerun of the same command
resumes from it (the result equals that of an uninterrupted run, except the wall clock).

``--scaling`` runs a few epochs of each of mammal.n.01, animal.n.01, artifact.n.01 (10,699 nodes)
and entity.n.01 in a fresh process each (so that peak memory is per dataset), then a full evaluation, and writes
``results/embeddings_nouns/scaling.md`` / ``scaling.json`` with seconds per epoch, peak memory
and the fitted exponent α of cost ∝ pairs^α.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hyperr1.embeddings import (
    ClosureIndex,
    EmbedConfig,
    load_dataset,
    load_training_state,
    reconstruction,
    save_embedding,
    save_training_state,
    train_embedding,
)
from hyperr1.runs import append_jsonl, read_json, write_json, write_jsonl, write_record


@dataclasses.dataclass
class NounsConfig:
    root: str = "entity.n.01"  # root synset of the closure ("wordnet:<root>")
    dim: int = 10  # embedding dimension d
    epochs: int = 1000  # upper bound on epochs; the time budget usually stops first
    budget: float | None = 2700.0  # training seconds (evaluation excluded) before stopping; None: no budget
    batch_size: int = 64  # closure pairs per step
    lr: float = 4.0  # η after burn-in, on the batch mean (4 beat 2, 8, 24 on animal.n.01 over 20–30 epochs)
    burnin_epochs: int = 1  # epochs at η/10 (one noun epoch is 743k pair updates)
    negatives: int = 50  # K negatives per pair
    lr_decay: str = "none"  # "linear" (to 0 at --epochs) or "none" after burn-in
    init_scheme: str = "uniform"  # "uniform" (Nickel & Kiela's) or "hierarchy" (embeddings.hierarchy_init)
    init_level: float = EmbedConfig.init_level  # "hierarchy": hyperbolic radius per level of depth
    init_spread: float = EmbedConfig.init_spread  # "hierarchy": tangent offset of a depth-1 node
    boundary_eps: float = 1e-10  # points stay within 1 − ε of the boundary: caps the radius at log(2/ε)
    tag: str = ""  # appended to the run directory's name (two runs of one root, dim and init)
    kernel: str = "auto"  # the SGD step: "native" (C), "eager" (PyTorch ops) or "auto"
    eval_every: int = 3  # epochs between (sampled) evaluations
    eval_sample: int = 2000  # nodes ranked against all nodes in periodic evaluations
    checkpoint_every: int = 1  # epochs between checkpoints
    threads: int = 1  # torch threads (the CPU is shared)
    device: str = "cpu"  # "cpu" or "cuda"
    seed: int = 0  # seed of initialisation, sampling and the evaluation sample
    wordnet_dir: str = EmbedConfig.wordnet_dir  # WordNet 3.0 dict directory
    out: str = "results/embeddings_nouns"  # parent of the run directory

    def embed_config(self) -> EmbedConfig:
        return EmbedConfig(
            data=f"wordnet:{self.root}",
            wordnet_dir=self.wordnet_dir,
            dim=self.dim,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            burnin_epochs=self.burnin_epochs,
            negatives=self.negatives,
            lr_decay=self.lr_decay,
            init_scheme=self.init_scheme,
            init_level=self.init_level,
            init_spread=self.init_spread,
            boundary_eps=self.boundary_eps,
            kernel=self.kernel,
            eval_every=self.eval_every,
            eval_sample=self.eval_sample,
            max_seconds=self.budget,
            seed=self.seed,
        ).validate()

    def run_dir(self) -> Path:
        suffix = "" if self.init_scheme == "uniform" else f"_{self.init_scheme}"
        suffix += f"_{self.tag}" if self.tag else ""
        return Path(self.out) / f"{self.root}_d{self.dim}{suffix}"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(exp: NounsConfig, *, progress: bool = False) -> dict:
    torch.set_num_threads(exp.threads)
    cfg = exp.embed_config()
    out = exp.run_dir()
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.safetensors"
    state, wall_before = None, 0.0
    if ckpt.exists():
        record = read_json(out / "config.json")
        if record["config"] != dataclasses.asdict(cfg):
            raise SystemExit(f"{out} holds a run with another config; remove it or change --out")
        state = load_training_state(ckpt)
        rows = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines() if line.strip()]
        rows = [r for r in rows if r["epoch"] <= state["epoch"]]  # drop epochs after the checkpoint
        write_jsonl(out / "progress.jsonl", rows)
        wall_before = rows[-1]["wall_seconds"] if rows else 0.0
        print(f"resuming {out} after epoch {state['epoch']} ({state['train_seconds']:.0f} s trained)", flush=True)
    else:
        write_record(out, dataclasses.asdict(cfg), kind="embed_nouns")
        (out / "progress.jsonl").write_text("")
    t_load = time.perf_counter()
    h = load_dataset(cfg)
    print(
        f"{cfg.data}: {len(h)} nodes, {len(h.closure_pairs())} pairs (loaded in {time.perf_counter() - t_load:.1f} s)"
    )
    start = time.perf_counter() - wall_before

    def on_epoch(s: dict) -> None:
        row = {
            "epoch": s["epoch"],
            "loss": s["loss"],
            "train_seconds": s["train_seconds"],
            "wall_seconds": time.perf_counter() - start,
            "peak_rss_mb": peak_rss_mb(),
        }
        if s["history"] and s["history"][-1]["epoch"] == s["epoch"]:
            row.update(map=s["history"][-1]["map"], mean_rank=s["history"][-1]["mean_rank"])
        append_jsonl(out / "progress.jsonl", row)
        write_jsonl(out / "history.jsonl", s["history"])
        if s["epoch"] % exp.checkpoint_every == 0:
            save_training_state(ckpt, s)
        print(json.dumps(row), flush=True)

    result = train_embedding(cfg, hierarchy=h, progress=progress, device=exp.device, state=state, on_epoch=on_epoch)
    write_jsonl(out / "history.jsonl", result["history"])
    final_eval = result["history"][-1]
    metrics = {
        **result["metrics"],
        "wall_seconds": time.perf_counter() - start,
        "final_eval_seconds": final_eval.get("eval_seconds"),
        "peak_rss_mb": peak_rss_mb(),
        "reference_nickel_kiela": {"10": {"map": 0.851, "mean_rank": 4.02}, "5": {"map": 0.823, "mean_rank": 4.9}},
    }
    write_json(out / "metrics.json", metrics)
    save_embedding(out / "embedding.safetensors", result["embedding"], result["nodes"], cfg)
    print(json.dumps(metrics, indent=2), flush=True)
    print(write_curve(out), flush=True)
    print(write_summary(out.parent), flush=True)
    return metrics


def write_summary(parent: Path) -> str:
    """``summary.md``: one row per finished run under ``parent`` (final MAP with the sampled MAP at
    10 and 30 training minutes, against Nickel & Kiela's numbers at the same dimension)."""
    lines = [
        "| data | dim | init | ε | η | seed | epochs | train s | MAP | mean rank | MAP by 10 / 30 min (sampled) "
        "| Nickel & Kiela MAP / rank |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for out in sorted(parent.glob("*_d*/metrics.json"), key=lambda q: q.parent.name):
        m, cfg = read_json(out), read_json(out.parent / "config.json")["config"]
        history = [json.loads(line) for line in (out.parent / "history.jsonl").read_text().splitlines()]

        def at(minutes: float, history=history) -> str:
            before = [r for r in history if r["seconds"] <= 60 * minutes]
            return f"{before[-1]['map']:.3f}" if before and history[-1]["seconds"] >= 60 * minutes else "—"

        ref = m.get("reference_nickel_kiela", {}).get(str(cfg["dim"]))
        lines.append(
            f"| {cfg['data']} | {cfg['dim']} | {cfg.get('init_scheme', 'uniform')} | "
            f"{cfg['boundary_eps']:g} | {cfg['lr']:g} | {cfg['seed']} | "
            f"{m['epochs_run']} | {m['train_seconds']:,.0f} | {m['map']:.3f} | "
            f"{m['mean_rank']:.1f} | {at(10)} / {at(30)} | "
            + (f"{ref['map']:.3f} / {ref['mean_rank']:.2f} |" if ref else "— |")
        )
    text = "\n".join(lines) + "\n"
    (parent / "summary.md").write_text(text)
    return text


def write_curve(out: Path) -> str:
    """``curve.md``: MAP and mean rank against training and wall seconds, from the run's logs."""
    wall = {r["epoch"]: r["wall_seconds"] for r in map(json.loads, (out / "progress.jsonl").read_text().splitlines())}
    wall.setdefault(0, 0.0)  # the construction's evaluation, before the first epoch
    lines = [
        "| epoch | train s | wall s | MAP | mean rank | evaluated |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for line in (out / "history.jsonl").read_text().splitlines():
        r = json.loads(line)
        who = (
            f"sample of {r['num_nodes_evaluated']:,} nodes"
            if r["sample"]
            else f"all {r['num_nodes_evaluated']:,} nodes"
        )
        lines.append(
            f"| {r['epoch']} | {r['seconds']:.0f} | {wall.get(r['epoch'], float('nan')):.0f} | {r['map']:.3f} | "
            f"{r['mean_rank']:.1f} | {who} |"
        )
    text = "\n".join(lines) + "\n"
    (out / "curve.md").write_text(text)
    return text


# ------------------------------------------------------------------------------------ scaling


def measure(root: str, epochs: int, threads: int, wordnet_dir: str, device: str) -> dict:
    """Seconds per epoch (training only), the full evaluation, and peak RSS, in this process."""
    torch.set_num_threads(threads)
    cfg = EmbedConfig(
        data=f"wordnet:{root}", wordnet_dir=wordnet_dir, dim=10, epochs=epochs, eval_every=0, burnin_epochs=0
    )
    h = load_dataset(cfg)
    rss_loaded = peak_rss_mb()
    times: list[float] = []
    cpu_marks = [time.process_time()]  # CPU seconds of this process: steadier than wall time on a shared machine

    def on_epoch(s: dict) -> None:
        times.append(s["train_seconds"] - sum(times))
        cpu_marks.append(time.process_time())

    result = train_embedding(cfg, hierarchy=h, progress=False, device=device, on_epoch=on_epoch, final_eval=False)
    rss_trained = peak_rss_mb()
    index = ClosureIndex.from_hierarchy(h)
    # above 10k nodes a fixed sample of rows is ranked (against all nodes, in the same chunks, so the
    # same peak memory as the full evaluation) and the full evaluation's time is extrapolated
    rows = None if len(h) <= 10_000 else torch.randperm(len(h), generator=torch.Generator().manual_seed(0))[:4096]
    t0 = time.perf_counter()
    rec = reconstruction(result["embedding"].to(device), index, manifold="poincare", c=1.0, rows=rows)
    eval_seconds = time.perf_counter() - t0
    return {
        "root": root,
        "nodes": len(h),
        "pairs": int(index.pairs.shape[0]),
        "epochs": epochs,
        "seconds_per_epoch": float(np.median(times)),
        "epoch_seconds": times,
        # epoch 1's CPU time also holds the setup (closure index, table), so it is left out when there are more
        "cpu_seconds_per_epoch": float(np.median(np.diff(cpu_marks)[1:] if epochs > 1 else np.diff(cpu_marks))),
        "full_eval_seconds": eval_seconds * len(h) / (len(h) if rows is None else len(rows)),
        "eval_rows_timed": len(h) if rows is None else len(rows),
        "map_after": rec["map"],
        "peak_rss_mb_loaded": rss_loaded,
        "peak_rss_mb_trained": rss_trained,
        "peak_rss_mb": peak_rss_mb(),
        "threads": threads,
        "device": device,
    }


def scaling(out: Path, roots: list[str], epochs: int, threads: int, wordnet_dir: str, device: str) -> None:
    rows = []
    for root in roots:
        cmd = [sys.executable, __file__, "--measure", root, "--epochs", str(epochs), "--threads", str(threads)]
        cmd += ["--wordnet-dir", wordnet_dir, "--device", device]
        print("running", " ".join(cmd), flush=True)
        line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(line))
        print(line, flush=True)
    pairs = np.array([r["pairs"] for r in rows], dtype=float)
    alpha_train = float(np.polyfit(np.log(pairs), np.log([r["seconds_per_epoch"] for r in rows]), 1)[0])
    alpha_cpu = float(np.polyfit(np.log(pairs), np.log([r["cpu_seconds_per_epoch"] for r in rows]), 1)[0])
    nodes = np.array([r["nodes"] for r in rows], dtype=float)
    alpha_eval = float(np.polyfit(np.log(nodes), np.log([r["full_eval_seconds"] for r in rows]), 1)[0])
    write_json(
        out / "scaling.json",
        {
            "rows": rows,
            "alpha_train_vs_pairs": alpha_train,
            "alpha_cpu_vs_pairs": alpha_cpu,
            "alpha_eval_vs_nodes": alpha_eval,
        },
    )
    rows_note = ", ".join(f"{r['root']}: {r['eval_rows_timed']:,} of {r['nodes']:,} rows timed" for r in rows)
    lines = [
        f"Training: dim 10, batch 64, K = 50 negatives, Riemannian SGD on the touched rows; {threads} torch "
        f"thread(s), device {device}, median over {epochs} epochs. Evaluation: full reconstruction (every node "
        "ranked against all nodes), chunked. Peak RSS is the whole process (Python, WordNet parsing, networkx "
        f"graph, closure, training, evaluation), one process per row. Full-evaluation seconds are measured on "
        f"({rows_note}) and scaled to all rows; memory is per chunk, so the sampled evaluation's peak is "
        "the full one's.",
        "",
        "| data | nodes | pairs | wall s / epoch | CPU s / epoch | CPU µs / pair | full eval wall s | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| wordnet:{r['root']} | {r['nodes']:,} | {r['pairs']:,} | {r['seconds_per_epoch']:.1f} | "
            f"{r['cpu_seconds_per_epoch']:.1f} | {1e6 * r['cpu_seconds_per_epoch'] / r['pairs']:.1f} | "
            f"{r['full_eval_seconds']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        f"Fitted exponents (numpy.polyfit on log–log): wall seconds per epoch ∝ pairs^{alpha_train:.2f}, "
        f"CPU seconds per epoch ∝ pairs^{alpha_cpu:.2f}; "
        f"full evaluation seconds ∝ nodes^{alpha_eval:.2f} (O(n²) distances by construction).",
        "",
        f"Command: `python experiments/embed_nouns.py --scaling --epochs {epochs} --threads {threads}`",
    ]
    (out / "scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(NounsConfig):
        kind = float if f.name == "budget" else type(f.default) if f.default is not None else str
        conv = (lambda t, k=kind: None if t.lower() == "none" else k(t)) if f.name == "budget" else kind
        p.add_argument(f"--{f.name.replace('_', '-')}", type=conv, default=f.default)
    p.add_argument("--scaling", action="store_true", help="measure s/epoch and memory, write scaling.md")
    p.add_argument("--scaling-roots", nargs="+", default=["mammal.n.01", "animal.n.01", "artifact.n.01", "entity.n.01"])
    p.add_argument("--measure", help=argparse.SUPPRESS)  # one scaling row, in a fresh process
    p.add_argument("--progress", action="store_true", help="tqdm bars (not for logs)")
    p.add_argument("--curve", action="store_true", help="only (re)write curve.md of the run and summary.md")
    args = p.parse_args()
    if args.curve:
        exp = NounsConfig(root=args.root, dim=args.dim, init_scheme=args.init_scheme, tag=args.tag, out=args.out)
        print(write_curve(exp.run_dir()))
        print(write_summary(Path(args.out)))
        return
    if args.measure:
        print(json.dumps(measure(args.measure, args.epochs, args.threads, args.wordnet_dir, args.device)))
        return
    if args.scaling:
        epochs = args.epochs if args.epochs != NounsConfig.epochs else 2
        scaling(Path(args.out), args.scaling_roots, epochs, args.threads, args.wordnet_dir, args.device)
        return
    exp = NounsConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(NounsConfig)})
    run(exp, progress=args.progress)


if __name__ == "__main__":
    main()

"""Diagnose a finished ``hyperr1 train`` run: where does held-out accuracy go?

For the warm-started policy (``runs/<name>/warm_start/model``) and the final GRPO policy (the
newest ``runs/<name>/grpo/checkpoints/step_*/model``) this measures, with greedy decoding:

(a) accuracy per hop count (1..15) and per task (``is_a`` yes, ``is_a`` no, ``ancestor_k``,
    ``lca``) on the held-out splits (hops >= the run's ``eval_min_hops``) and on a sample of the
    multi-hop training queries;
(b) recall of the taught ``parent`` facts (the ``parent`` examples of the training split:
    prompt → answer), overall and for the held-out subjects (whose only training is that fact);
(c) an error taxonomy of the held-out completions, mutually exclusive, in this order:
    ``format failure`` (not exactly in the grammar), ``correct`` (right answer, chain proves it),
    ``right answer, invalid chain``, and for a wrong answer: ``wrong chain structure`` (chain
    does not start at the query's concept(s), or wrong number of chains), ``wrong step`` (a step
    that is not a parent edge; the hop index of the first one is histogrammed, and whether the
    policy knows that parent fact when asked it directly), ``right chain, wrong answer``,
    ``stops early`` (a faithful chain that has not yet reached the needed end), ``overshoots``
    (faithful, past the needed end) and ``wrong branch`` (faithful, on a path that can't prove
    the answer);
(d) the teacher-forced step accuracy: along each held-out gold chain, whether the argmax token
    after ``->`` is a parent of the previous concept, by step index (no exposure errors: every
    prefix is the gold one).

Completions are only parsed (:func:`hyperr1.rewards.parse_completion`) and checked against the
graph (:class:`hyperr1.hierarchy.Hierarchy`); model output is never evaluated as code.

    python experiments/diagnose.py runs/diag_base        # → results/diagnosis/diag_base.{json,md}
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from hyperr1.decoding import decode_completions, encode_prompts
from hyperr1.evaluate import bootstrap_ci
from hyperr1.hierarchy import Hierarchy, load_hierarchy
from hyperr1.model import HyperR1ForConditionalGeneration
from hyperr1.pipeline import TrainConfig, config_from_dict
from hyperr1.rewards import chain_is_valid, is_correct, parse_completion
from hyperr1.sft import encode_completions
from hyperr1.splits import TEST_SPLITS, build_splits
from hyperr1.tasks import ANSWER_OPEN, STEP, YES, TaskExample
from hyperr1.tokenizer import load_tokenizer

TASK_LABELS = ("is_a yes", "is_a no", "ancestor_k", "lca")
CATEGORIES = (
    "correct",
    "right answer, invalid chain",
    "format failure",
    "wrong chain structure",
    "wrong step",
    "right chain, wrong answer",
    "stops early",
    "overshoots",
    "wrong branch",
)


@dataclass
class DiagnoseConfig:
    """What to diagnose and where to write it."""

    run: str = "runs/diag_base"  # run directory of `hyperr1 train` (holds config.json, warm_start/, grpo/)
    out: str = "results/diagnosis"  # output directory: <out>/<run name>.json and .md
    train_sample: int = 1000  # multi-hop training queries sampled for the train columns (0: none)
    max_hops: int = 15  # hop counts 1..max_hops get a column in the per-hop table
    batch_size: int = 256  # prompts per decoding call
    max_new_tokens: int | None = None  # None: the run's grpo.max_completion_length
    threads: int = 1  # torch intra-op threads
    seed: int = 0  # seed of the train sample and the bootstrap


# ---------------------------------------------------------------- loading


def load_run(run: Path) -> tuple[TrainConfig, Hierarchy, dict, object]:
    """(resolved TrainConfig, hierarchy, splits, tokenizer) of a run directory."""
    saved = json.loads((run / "config.json").read_text())["config"]
    cfg = config_from_dict(TrainConfig, saved)
    h = load_hierarchy(cfg.data)
    splits, _ = build_splits(h, cfg.tasks)  # deterministic from the saved TasksConfig
    return cfg, h, splits, load_tokenizer(run / "tokenizer")


def model_paths(run: Path) -> dict[str, Path]:
    """``{"warm_start": .., "grpo": ..}``: the warm start and the newest complete GRPO checkpoint."""
    paths = {"warm_start": run / "warm_start" / "model"}
    ckpts = [c for c in sorted((run / "grpo" / "checkpoints").glob("step_*")) if (c / "state.json").exists()]
    if ckpts:
        paths["grpo"] = ckpts[-1] / "model"
    return paths


# ---------------------------------------------------------------- decoding


@torch.no_grad()
def greedy(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """One greedy completion per prompt (text, end-of-sequence dropped)."""
    model.eval()
    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        ids, amask = encode_prompts(tokenizer, prompts[i : i + batch_size], model.device)  # (B, S)
        s = model.sample(ids, amask, num_samples=1, max_new_tokens=max_new_tokens, greedy=True)
        out += decode_completions(tokenizer, s.tokens, s.mask)
    return out


@torch.no_grad()
def teacher_forced_steps(model, tokenizer, exs: list[TaskExample], h: Hierarchy, batch_size: int) -> dict:
    """Along each gold completion, is argmax π(· | gold prefix) after ``->`` a parent of the previous
    concept? Returns ``{step index: [hits]}`` (index 1-based within its chain) and the answer-token hits."""
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    by_step: dict[int, list[bool]] = {}
    answer_hits: list[bool] = []
    for i in range(0, len(exs), batch_size):
        batch = exs[i : i + batch_size]
        ids, amask = encode_prompts(tokenizer, [ex.prompt for ex in batch], model.device)  # (B, S)
        targets, tmask = encode_completions(tokenizer, [ex.completion for ex in batch], model.device)  # (B, T)
        start = torch.full_like(targets[:, :1], model.config.decoder_start_token_id)
        dec_in = torch.cat([start, targets[:, :-1]], dim=1)  # (B, T): <s> y_1 .. y_{T-1}
        pred = model(input_ids=ids, attention_mask=amask, decoder_input_ids=dec_in).logits.argmax(-1)  # (B, T)
        for ex, tgt, p, m in zip(batch, targets.tolist(), pred.tolist(), tmask.tolist(), strict=True):
            toks = [vocab[t] for t, keep in zip(tgt, m, strict=True) if keep]
            step = 0
            for j in range(2, len(toks)):
                if toks[j - 2] == "<think>" or toks[j - 2] == ";":
                    step = 0
                if toks[j - 1] == STEP and toks[j - 2] in h:
                    step += 1
                    by_step.setdefault(step, []).append(vocab[p[j]] in h.parents(toks[j - 2]))
                if toks[j - 1] == ANSWER_OPEN:
                    answer_hits.append(vocab[p[j]] in ex.answers)
    return {"by_step": by_step, "answer": answer_hits}


# ---------------------------------------------------------------- grading


def task_label(ex: TaskExample) -> str:
    return f"is_a {ex.answer}" if ex.task == "is_a" else ex.task


def classify(ex: TaskExample, text: str, h: Hierarchy) -> dict:
    """The taxonomy category of one completion (see the module docstring), with details."""
    p = parse_completion(text)
    correct = is_correct(p, ex.answers)
    out: dict = {"correct": correct}
    if not p.well_formed:
        out["category"] = "format failure"
        out["format_kind"] = (
            "no think block" if not p.has_think else "no single-token answer" if p.answer is None else "grammar"
        )
        return out
    valid = chain_is_valid(p, ex.task, ex.args, h)
    if correct:
        out["category"] = "correct" if valid else "right answer, invalid chain"
        return out
    chains = p.chains
    starts = [c[0] for c in chains]
    want_starts = sorted(ex.args[:2]) if ex.task == "lca" else [ex.args[0]]
    if sorted(starts) != want_starts:
        out["category"] = "wrong chain structure"
        out["structure_kind"] = (
            "wrong number of chains"
            if len(chains) != len(want_starts)
            else "starts at a concept not in the question"
            if not set(starts) & set(ex.args)
            else "wrong start"
        )
        return out
    for ci, c in enumerate(chains):
        for si in range(len(c) - 1):
            a, b = c[si], c[si + 1]
            if not h.graph.has_edge(a, b):
                out.update(category="wrong step", chain=ci, hop=si + 1, node=a, claimed=b)
                out["wrong_kind"] = (
                    "not a concept"
                    if b not in h
                    else "skips up (an ancestor, not the parent)"
                    if h.is_a(a, b)
                    else "repeats / goes down"
                    if b == a or h.is_a(b, a)
                    else "off the hierarchy path"
                )
                return out
    if any(chain_is_valid(dataclasses.replace(p, answer=g), ex.task, ex.args, h) for g in ex.answers):
        out["category"] = "right chain, wrong answer"
        return out
    out["category"] = _faithful_miss(ex, chains, h)
    return out


def _faithful_miss(ex: TaskExample, chains, h: Hierarchy) -> str:
    """A chain of true parent edges from the right start(s) that does not prove any accepted answer."""
    if ex.task == "ancestor_k":
        return "stops early" if len(chains[0]) - 1 < int(ex.args[1]) else "overshoots"
    if ex.task == "is_a":
        end, y = chains[0][-1], ex.args[1]
        if ex.answer == YES:
            if y in chains[0]:
                return "overshoots"
            return "stops early" if h.is_a(end, y) else "wrong branch"
        return "stops early" if h.parents(end) else "wrong branch"
    # lca: two faithful chains from x and y
    if len(chains) != 2:
        return "wrong branch"
    ends = {c[-1] for c in chains}
    lcas = set(ex.answers)
    if len(ends) == 1:  # they meet, but above (or beside) a lowest common ancestor
        return "overshoots"
    if all(any(e == a or h.is_a(e, a) for a in lcas) for e in ends):
        return "stops early"
    return "overshoots" if any(any(h.is_a(a, e) for a in lcas) for e in ends) else "wrong branch"


# ---------------------------------------------------------------- aggregation


def rate(values: list[bool], seed: int) -> dict:
    """Mean of 0/1 values with a 95% percentile-bootstrap CI (hyperr1.evaluate.bootstrap_ci)."""
    if not values:
        return {"value": None, "ci": None, "n": 0}
    lo, hi = bootstrap_ci([float(v) for v in values], seed=seed)
    return {"value": sum(values) / len(values), "ci": [lo, hi], "n": len(values)}


def accuracy_tables(exs: list[TaskExample], graded: list[dict], max_hops: int, seed: int) -> dict:
    hits = [g["correct"] for g in graded]
    fmt = [g["category"] != "format failure" for g in graded]
    return {
        "overall": rate(hits, seed),
        "format": rate(fmt, seed),
        "by_hops": {
            str(k): rate([c for ex, c in zip(exs, hits, strict=True) if ex.hops == k], seed)
            for k in range(1, max_hops + 1)
        },
        "by_task": {
            t: rate([c for ex, c in zip(exs, hits, strict=True) if task_label(ex) == t], seed) for t in TASK_LABELS
        },
    }


def taxonomy(exs: list[TaskExample], graded: list[dict], parent_known: dict[str, bool]) -> dict:
    n = len(graded)
    cats = Counter(g["category"] for g in graded)
    wrong = [g for g in graded if g["category"] == "wrong step"]
    by_task = {
        t: dict(Counter(g["category"] for ex, g in zip(exs, graded, strict=True) if task_label(ex) == t))
        for t in TASK_LABELS
    }
    return {
        "n": n,
        "counts": {c: cats.get(c, 0) for c in CATEGORIES},
        "shares": {c: cats.get(c, 0) / n for c in CATEGORIES},
        "by_task": by_task,
        "format_kinds": dict(Counter(g["format_kind"] for g in graded if g["category"] == "format failure")),
        "structure_kinds": dict(
            Counter(g["structure_kind"] for g in graded if g["category"] == "wrong chain structure")
        ),
        "first_wrong_hop": dict(sorted(Counter(g["hop"] for g in wrong).items())),
        "first_wrong_chain": dict(Counter(g["chain"] for g in wrong)),
        "wrong_kinds": dict(Counter(g["wrong_kind"] for g in wrong)),
        "wrong_step_parent_fact_known": sum(parent_known.get(g["node"], False) for g in wrong),
        "wrong_steps": len(wrong),
    }


def diagnose_model(model, tokenizer, h, cfg: TrainConfig, dcfg: DiagnoseConfig, sets: dict) -> dict:
    max_new = dcfg.max_new_tokens or cfg.grpo.max_completion_length
    out: dict = {}
    # (b) parent facts first: the taxonomy asks whether a wrong step's fact is known
    parents = sets["parent"]
    texts = greedy(model, tokenizer, [ex.prompt for ex in parents], max_new, dcfg.batch_size)
    held_subjects = {ex.args[0] for ex in sets["test_unseen_subject"]}
    known = {ex.args[0]: is_correct(parse_completion(t), ex.answers) for ex, t in zip(parents, texts, strict=True)}
    step_ok = []
    for ex, t in zip(parents, texts, strict=True):
        steps = parse_completion(t).steps
        step_ok.append(bool(steps) and steps[0][0] == ex.args[0] and h.graph.has_edge(*steps[0]))
    out["parent_recall"] = {
        "answer": rate(list(known.values()), dcfg.seed),
        "answer_held_out_subjects": rate([v for x, v in known.items() if x in held_subjects], dcfg.seed),
        "answer_other_subjects": rate([v for x, v in known.items() if x not in held_subjects], dcfg.seed),
        "think_step": rate(step_ok, dcfg.seed),
        "format": rate([parse_completion(t).well_formed for t in texts], dcfg.seed),
    }
    # (a) + (c) held-out splits and the train sample
    for name in (*TEST_SPLITS, "train_sample"):
        exs = sets[name]
        texts = greedy(model, tokenizer, [ex.prompt for ex in exs], max_new, dcfg.batch_size)
        graded = [classify(ex, t, h) for ex, t in zip(exs, texts, strict=True)]
        out[name] = {
            "accuracy": accuracy_tables(exs, graded, dcfg.max_hops, dcfg.seed),
            "taxonomy": taxonomy(exs, graded, known),
            "examples": [
                {"prompt": ex.question, "target": ex.completion, "greedy": t, **g}
                for ex, t, g in [row for row in zip(exs, texts, graded, strict=True) if not row[2]["correct"]][:8]
            ],  # a few wrong completions, for reading
        }
    # (d) teacher-forced steps on both held-out splits together
    held = sets["test_unseen_pair"] + sets["test_unseen_subject"]
    tf = teacher_forced_steps(model, tokenizer, held, h, dcfg.batch_size)
    out["teacher_forced"] = {
        "step_by_index": {str(k): rate(v, dcfg.seed) for k, v in sorted(tf["by_step"].items())},
        "step_all": rate([x for v in tf["by_step"].values() for x in v], dcfg.seed),
        "answer_given_gold_chain": rate(tf["answer"], dcfg.seed),
    }
    return out


# ---------------------------------------------------------------- markdown


def _cell(m: dict) -> str:
    if not m or m["value"] is None:
        return "—"
    return f"{m['value']:.2f} ({m['n']})"


def _ci(m: dict) -> str:
    if m["value"] is None:
        return "—"
    return f"{m['value']:.3f} [{m['ci'][0]:.3f}, {m['ci'][1]:.3f}] (n={m['n']})"


def markdown(report: dict) -> str:
    models = [m for m in ("warm_start", "grpo") if m in report["models"]]
    sets = (*TEST_SPLITS, "train_sample")
    hops = range(1, report["config"]["max_hops"] + 1)
    lines = [f"# Diagnosis of `{report['run']}`", "", f"Command: `{report['command']}`", ""]
    lines += ["Models: " + ", ".join(f"`{m}` = `{report['model_paths'][m]}`" for m in models), ""]
    lines += ["## (a) Greedy accuracy per hop count (value (n))", ""]
    lines += ["| model | set | all | " + " | ".join(f"h={k}" for k in hops) + " |"]
    lines += ["| --- | --- | ---: |" + " ---: |" * len(hops)]
    for m in models:
        for s in sets:
            a = report["models"][m][s]["accuracy"]
            lines.append(
                f"| {m} | {s} | {_cell(a['overall'])} | " + " | ".join(_cell(a["by_hops"][str(k)]) for k in hops) + " |"
            )
    lines += ["", "## (a) Greedy accuracy per task (value (n)) and format", ""]
    lines += [
        "| model | set | " + " | ".join(TASK_LABELS) + " | format |",
        "| --- | --- |" + " ---: |" * (len(TASK_LABELS) + 1),
    ]
    for m in models:
        for s in sets:
            a = report["models"][m][s]["accuracy"]
            lines.append(
                f"| {m} | {s} | "
                + " | ".join(_cell(a["by_task"][t]) for t in TASK_LABELS)
                + f" | {_cell(a['format'])} |"
            )
    lines += ["", "## (b) Recall of the taught parent facts (greedy, 95% bootstrap CI)", ""]
    lines += ["| model | answer correct | held-out subjects | other subjects | think step x → parent | format |"]
    lines += ["| --- | ---: | ---: | ---: | ---: | ---: |"]
    for m in models:
        r = report["models"][m]["parent_recall"]
        lines.append(
            f"| {m} | {_ci(r['answer'])} | {_ci(r['answer_held_out_subjects'])} | {_ci(r['answer_other_subjects'])} "
            f"| {_ci(r['think_step'])} | {_ci(r['format'])} |"
        )
    lines += ["", "## (c) Error taxonomy of held-out greedy completions (share of the split)", ""]
    lines += [
        "| model | set | n | " + " | ".join(CATEGORIES) + " |",
        "| --- | --- | ---: |" + " ---: |" * len(CATEGORIES),
    ]
    for m in models:
        for s in sets:
            t = report["models"][m][s]["taxonomy"]
            lines.append(f"| {m} | {s} | {t['n']} | " + " | ".join(f"{t['shares'][c]:.3f}" for c in CATEGORIES) + " |")
    lines += ["", "First wrong step: hop index within its chain (count), the kind of wrong step, and how often the"]
    lines += ["policy answers the parent fact of that step's node correctly when asked it directly.", ""]
    lines += ["| model | set | wrong steps | first wrong hop index: count | kinds | parent fact of the node known |"]
    lines += ["| --- | --- | ---: | --- | --- | ---: |"]
    for m in models:
        for s in sets:
            t = report["models"][m][s]["taxonomy"]
            hop = ", ".join(f"{k}: {v}" for k, v in t["first_wrong_hop"].items())
            kinds = ", ".join(f"{k}: {v}" for k, v in t["wrong_kinds"].items())
            known = f"{t['wrong_step_parent_fact_known']} / {t['wrong_steps']}"
            lines.append(f"| {m} | {s} | {t['wrong_steps']} | {hop} | {kinds} | {known} |")
    lines += ["", "Kinds of format failure and of wrong chain structure:", ""]
    lines += ["| model | set | format failures | wrong chain structures |", "| --- | --- | --- | --- |"]
    for m in models:
        for s in sets:
            t = report["models"][m][s]["taxonomy"]
            fk = ", ".join(f"{k}: {v}" for k, v in t["format_kinds"].items()) or "—"
            sk = ", ".join(f"{k}: {v}" for k, v in t["structure_kinds"].items()) or "—"
            lines.append(f"| {m} | {s} | {fk} | {sk} |")
    lines += ["", "Taxonomy per task (held-out splits together):", ""]
    lines += ["| model | task | " + " | ".join(CATEGORIES) + " |", "| --- | --- |" + " ---: |" * len(CATEGORIES)]
    for m in models:
        for task in TASK_LABELS:
            c = Counter()
            for s in TEST_SPLITS:
                c.update(report["models"][m][s]["taxonomy"]["by_task"][task])
            lines.append(f"| {m} | {task} | " + " | ".join(str(c.get(k, 0)) for k in CATEGORIES) + " |")
    lines += ["", "## (d) Teacher-forced step accuracy on held-out gold chains (argmax after `->` is a parent)", ""]
    steps = sorted({int(k) for m in models for k in report["models"][m]["teacher_forced"]["step_by_index"]})
    lines += ["| model | all steps | answer given gold chain | " + " | ".join(f"step {k}" for k in steps) + " |"]
    lines += ["| --- | ---: | ---: |" + " ---: |" * len(steps)]
    for m in models:
        tf = report["models"][m]["teacher_forced"]
        cells = " | ".join(_cell(tf["step_by_index"].get(str(k), {})) for k in steps)
        lines.append(f"| {m} | {_ci(tf['step_all'])} | {_ci(tf['answer_given_gold_chain'])} | {cells} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- entry point


def run_diagnosis(dcfg: DiagnoseConfig, command: str = "") -> dict:
    torch.set_num_threads(dcfg.threads)
    run = Path(dcfg.run)
    cfg, h, splits, tokenizer = load_run(run)
    multi = [ex for ex in splits["train"] if ex.task != "parent"]
    rng = random.Random(dcfg.seed)
    sample = sorted(rng.sample(range(len(multi)), min(dcfg.train_sample, len(multi))))
    sets = {
        "parent": [ex for ex in splits["train"] if ex.task == "parent"],
        "train_sample": [multi[i] for i in sample],
        **{s: [ex for ex in splits[s] if ex.hops >= cfg.eval_min_hops] for s in TEST_SPLITS},
    }
    paths = model_paths(run)
    report = {
        "run": str(run),
        "command": command,
        "config": dataclasses.asdict(dcfg),
        "eval_min_hops": cfg.eval_min_hops,
        "model_paths": {k: str(v) for k, v in paths.items()},
        "sizes": {k: len(v) for k, v in sets.items()},
        "models": {},
    }
    for name, path in paths.items():
        model = HyperR1ForConditionalGeneration.from_pretrained(path)
        report["models"][name] = diagnose_model(model, tokenizer, h, cfg, dcfg, sets)
    out = Path(dcfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{run.name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{run.name}.md").write_text(markdown(report))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory of `hyperr1 train`, e.g. runs/diag_base")
    for f in dataclasses.fields(DiagnoseConfig):
        if f.name != "run":
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=int if f.type in ("int", "int | None") else str)
    args = parser.parse_args(argv)
    values = {k: v for k, v in vars(args).items() if v is not None}
    dcfg = DiagnoseConfig(**values)
    command = "python experiments/diagnose.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = run_diagnosis(dcfg, command=command)
    print(markdown(report))


if __name__ == "__main__":
    main()

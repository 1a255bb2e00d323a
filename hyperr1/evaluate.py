"""Evaluation harness: any policy, every split, per hop count and task, with bootstrap CIs.

A policy is anything satisfying :class:`Policy` — a callable from a batch of prompts to completions,
greedy or sampled. For each split :func:`evaluate` asks for one greedy completion and ``k`` sampled
ones (R1's protocol: temperature 0.6, top-p 0.95) per prompt and reports, overall, per hop count
and per task (every value with a 95% bootstrap confidence interval over examples):

=======================  ============================================================  ========
metric                   definition                                                    from
=======================  ============================================================  ========
``accuracy``             answer correct                                                greedy
``pass@1``               (1/k) Σ_i correct_i  (DeepSeek-R1's pass@1 estimate)          k samples
``maj@k``                the most frequent answer of the k samples is correct (cons@k)  k samples
``format``               completion follows the grammar exactly                        greedy
``faithfulness``         share of chain steps, after retractions, that are parent edges  greedy
``right_valid_chain``    correct answer reached by a chain that proves it              greedy
``right_invalid_chain``  correct answer with a chain that does not prove it            greedy
``reflection_rate``      share of completions with at least one ``wait``               k samples
``good_retractions``     share of retractions with a wrong withdrawn step and a right  k samples
                         replacement (ratio of sums; bootstrapped over examples that
                         retract at all; ``null`` if none does)
=======================  ============================================================  ========

With ``k = 0`` the sampled metrics are ``null`` and reflection is read from the greedy completions.
Majority-vote ties go to the answer sampled first; completions without an answer do not vote.
Confidence intervals are percentile bootstraps (``scipy.stats.bootstrap``) seeded by
``EvalConfig.seed``; for one example or all-equal values the interval is the point value.
"""

from __future__ import annotations

import inspect
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from scipy.stats import bootstrap

from hyperr1.hierarchy import Hierarchy
from hyperr1.rewards import (
    chain_is_valid,
    faithfulness,
    good_retractions,
    is_correct,
    parse_completion,
)
from hyperr1.tasks import TaskExample

# scipy >= 1.15 names the generator `rng`; older versions call it `random_state`.
_RNG_KW = "rng" if "rng" in inspect.signature(bootstrap).parameters else "random_state"
METRICS = (
    "accuracy",
    "pass@1",
    "maj@k",
    "format",
    "faithfulness",
    "right_valid_chain",
    "right_invalid_chain",
    "reflection_rate",
    "good_retractions",
)


class Policy(Protocol):
    """Maps a batch of prompts to ``num_samples`` completions each (``out[i][j]`` for prompt i).

    ``greedy=True`` asks for argmax decoding (``temperature``/``top_p`` then unused and
    ``num_samples == 1``); otherwise nucleus sampling at ``temperature`` with ``top_p``.
    Completions are text in the task grammar; a trailing end-of-sequence token is allowed.
    """

    def __call__(
        self,
        prompts: Sequence[str],
        *,
        num_samples: int,
        greedy: bool,
        temperature: float,
        top_p: float,
    ) -> list[list[str]]: ...


@dataclass
class EvalConfig:
    """Evaluation protocol."""

    k: int = 8  # samples per prompt for pass@1, maj@k and reflection (0: greedy only)
    temperature: float = 0.6  # sampling temperature (R1: 0.6)
    top_p: float = 0.95  # nucleus mass (R1: 0.95)
    batch_size: int = 256  # prompts per policy call
    confidence: float = 0.95  # level of the bootstrap confidence intervals
    n_resamples: int = 1000  # bootstrap resamples
    seed: int = 0  # seed of the bootstrap
    n_logged: int = 5  # greedy completions kept per split in the results, for inspection


@dataclass(frozen=True)
class CompletionScore:
    """Everything the harness reads from one completion of one example."""

    correct: bool  # answer is an accepted answer
    well_formed: bool  # follows the grammar exactly
    faithfulness: float  # share of steps that are parent edges
    valid_chain: bool  # chains prove the answer (rewards.chain_is_valid)
    reflected: bool  # at least one `wait`
    retractions: int  # number of retractions
    good_retractions: int  # retractions wrong -> right
    answer: str | None  # the parsed answer


def score_completion(ex: TaskExample, completion: object, h: Hierarchy) -> CompletionScore:
    """Grade one completion of ``ex`` against the graph."""
    p = parse_completion(completion)
    return CompletionScore(
        correct=is_correct(p, ex.answers),
        well_formed=p.well_formed,
        faithfulness=faithfulness(p, h),
        valid_chain=chain_is_valid(p, ex.task, ex.args, h),
        reflected=p.n_wait > 0,
        retractions=len(p.retractions),
        good_retractions=good_retractions(p, h),
        answer=p.answer,
    )


def bootstrap_ci(
    values: Sequence[float], *, confidence: float = 0.95, n_resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean; the point value for n = 1 or all-equal values."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("bootstrap_ci of no values")
    if x.size == 1 or np.all(x == x[0]):  # degenerate: every resample has the same mean
        return float(x.mean()), float(x.mean())
    res = bootstrap(
        (x,),
        np.mean,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        **{_RNG_KW: np.random.default_rng(seed)},
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _ratio_ci(num: np.ndarray, den: np.ndarray, cfg: EvalConfig) -> dict:
    """Σ num / Σ den with a paired bootstrap over the examples with den > 0."""
    keep = den > 0
    num, den = num[keep], den[keep]
    if not keep.any():
        return {"value": None, "ci": None, "n": 0}
    value = float(num.sum() / den.sum())
    if num.size == 1 or np.all(num / den == value):
        return {"value": value, "ci": [value, value], "n": int(num.size)}
    res = bootstrap(
        (num, den),
        lambda a, b, axis=-1: a.sum(axis) / b.sum(axis),
        paired=True,
        confidence_level=cfg.confidence,
        n_resamples=cfg.n_resamples,
        method="percentile",
        **{_RNG_KW: np.random.default_rng(cfg.seed)},
    )
    ci = res.confidence_interval
    return {"value": value, "ci": [float(ci.low), float(ci.high)], "n": int(num.size)}


def _mean_ci(values: np.ndarray, cfg: EvalConfig) -> dict:
    if values.size == 0 or np.isnan(values).any():
        return {"value": None, "ci": None, "n": int(values.size)}
    lo, hi = bootstrap_ci(values, confidence=cfg.confidence, n_resamples=cfg.n_resamples, seed=cfg.seed)
    return {"value": float(values.mean()), "ci": [lo, hi], "n": int(values.size)}


def _call(policy: Policy, prompts: list[str], n: int, greedy: bool, cfg: EvalConfig) -> list:
    out: list[list[str]] = []
    for i in range(0, len(prompts), cfg.batch_size):
        batch = prompts[i : i + cfg.batch_size]
        got = policy(
            batch,
            num_samples=n,
            greedy=greedy,
            temperature=0.0 if greedy else cfg.temperature,
            top_p=1.0 if greedy else cfg.top_p,
        )
        if len(got) != len(batch) or any(len(c) != n for c in got):
            raise ValueError(f"policy must return {n} completions for each of {len(batch)} prompts")
        out += got
    return out


def _per_example(
    exs: Sequence[TaskExample], policy: Policy, h: Hierarchy, cfg: EvalConfig
) -> tuple[dict[str, np.ndarray], list[str]]:
    """One row per example of every per-example quantity the metrics aggregate."""
    prompts = [ex.prompt for ex in exs]
    greedy = [c[0] for c in _call(policy, prompts, 1, True, cfg)]
    sampled = _call(policy, prompts, cfg.k, False, cfg) if cfg.k > 0 else [[] for _ in exs]
    rows: dict[str, list[float]] = {m: [] for m in (*METRICS[:-1], "ret_good", "ret_total")}
    for ex, g, samples in zip(exs, greedy, sampled, strict=True):
        sg = score_completion(ex, g, h)
        ss = [score_completion(ex, c, h) for c in samples]
        votes = Counter(s.answer for s in ss if s.answer is not None)
        majority = votes.most_common(1)[0][0] if votes else None
        reflect_from = ss or [sg]
        rows["accuracy"].append(sg.correct)
        rows["pass@1"].append(np.mean([s.correct for s in ss]) if ss else math.nan)
        rows["maj@k"].append(majority in ex.answers if ss else math.nan)
        rows["format"].append(sg.well_formed)
        rows["faithfulness"].append(sg.faithfulness)
        rows["right_valid_chain"].append(sg.correct and sg.valid_chain)
        rows["right_invalid_chain"].append(sg.correct and not sg.valid_chain)
        rows["reflection_rate"].append(np.mean([s.reflected for s in reflect_from]))
        rows["ret_good"].append(sum(s.good_retractions for s in reflect_from))
        rows["ret_total"].append(sum(s.retractions for s in reflect_from))
    return {m: np.asarray(v, dtype=float) for m, v in rows.items()}, greedy


def _metrics(rows: dict[str, np.ndarray], idx: np.ndarray, cfg: EvalConfig) -> dict:
    out = {m: _mean_ci(rows[m][idx], cfg) for m in METRICS[:-1]}
    out["good_retractions"] = _ratio_ci(rows["ret_good"][idx], rows["ret_total"][idx], cfg)
    out["n"] = int(idx.size)
    return out


def evaluate(
    policy: Policy,
    splits: Mapping[str, Sequence[TaskExample]] | Sequence[TaskExample],
    hierarchy: Hierarchy,
    cfg: EvalConfig | None = None,
) -> dict:
    """Evaluate ``policy`` on every split (a bare sequence is the split ``"all"``).

    Returns a JSON-serialisable ``{"config", "splits": {name: {"overall", "by_hops", "by_task",
    "samples"}}}``; each metric is ``{"value", "ci": [lo, hi], "n"}``.
    """
    cfg = cfg or EvalConfig()
    if not isinstance(splits, Mapping):
        splits = {"all": list(splits)}
    results: dict = {"config": asdict(cfg), "splits": {}}
    for name, exs in splits.items():
        if not exs:
            results["splits"][name] = {"overall": {"n": 0}, "by_hops": {}, "by_task": {}}
            continue
        rows, greedy = _per_example(exs, policy, hierarchy, cfg)
        hops = np.array([ex.hops for ex in exs])
        tasks = np.array([ex.task for ex in exs])
        results["splits"][name] = {
            "overall": _metrics(rows, np.arange(len(exs)), cfg),
            "by_hops": {str(k): _metrics(rows, np.flatnonzero(hops == k), cfg) for k in sorted(set(hops))},
            "by_task": {str(t): _metrics(rows, np.flatnonzero(tasks == t), cfg) for t in sorted(set(tasks))},
            "correct": rows["accuracy"].astype(int).tolist(),  # per example, for paired comparisons
            "samples": [
                {"prompt": ex.prompt, "target": ex.completion, "greedy": g}
                for ex, g in zip(exs[: cfg.n_logged], greedy, strict=False)
            ],
        }
    return results


def paired_lift(before: dict, after: dict, cfg: EvalConfig | None = None) -> dict:
    """Per split, the accuracy gain ``after − before`` of two :func:`evaluate` results on the same
    examples, with a paired bootstrap CI over examples (the mean of the per-example differences
    ``1[after right] − 1[before right]``): ``{split: {"value", "ci", "n"}}``."""
    cfg = cfg or EvalConfig()
    out = {}
    for name, split in after["splits"].items():
        a, b = before["splits"].get(name, {}).get("correct"), split.get("correct")
        if a is None or b is None or len(a) != len(b):
            raise ValueError(f"paired_lift: split {name!r} lacks per-example results on the same examples")
        if b:
            out[name] = _mean_ci(np.asarray(b, dtype=float) - np.asarray(a, dtype=float), cfg)
    return out


def flat_metrics(results: dict) -> dict[str, float]:
    """``{"eval/<split>/<metric>": v, "eval/<split>/<metric>@hops=3": v, ...@task=lca: v}``."""
    flat = {}
    for split, res in results["splits"].items():
        groups = [("", res["overall"])]
        groups += [(f"@hops={k}", m) for k, m in res["by_hops"].items()]
        groups += [(f"@task={t}", m) for t, m in res["by_task"].items()]
        for suffix, metrics in groups:
            for name in METRICS:
                if name in metrics and metrics[name]["value"] is not None:
                    flat[f"eval/{split}/{name}{suffix}"] = metrics[name]["value"]
    return flat


def write_results(results: dict, path: str | Path) -> Path:
    """Write the results as indented JSON (strict: no NaN) atomically (temp file + rename, so a kill
    never leaves half a file) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path

"""Train/test splits of the hierarchy tasks, the contamination audit, curriculum and warm start.

Splits measure reasoning, not recall (all deterministic from ``TasksConfig.seed``):

- ``train``: the ``parent`` fact of every non-root concept, plus multi-hop queries (``is_a``
  balanced yes/no, ``ancestor_k`` with k ≥ 2, ``lca``); a fraction ρ of targets holds a retraction.
- ``test_unseen_pair``: multi-hop queries whose concept pair — ``{x, y}`` for ``is_a``/``lca``,
  ``{x, a}`` for every accepted answer a of ``ancestor_k`` — is never a pair of a training query
  (parent facts included), although every parent fact is taught.
- ``test_unseen_subject``: multi-hop queries about held-out concepts that never appear as an
  argument of a multi-hop training query (their parent fact is still taught).
- ``warm_start``: the training queries of at most ``warm_max_hops`` steps, a fraction of them
  without the think block — the partial "initial curriculum" that leaves RL length and format.

Test queries have at least ``min_test_hops`` steps. Queries are never asked twice in a split;
``lca`` queries count as the same query in either argument order. :func:`audit_splits` runs
whenever splits are built: it raises :class:`ContaminationError` if a test query (task and
arguments) or an unseen pair occurs in training, and reports question n-gram overlap and how often
a test pair already lies on some training chain (taught compositionally, never asked).
"""

from __future__ import annotations

import json
import random
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from hyperr1.hierarchy import Hierarchy, load_hierarchy
from hyperr1.runs import write_json, write_record
from hyperr1.tasks import (
    MAX_K,
    NO,
    YES,
    TaskExample,
    check_concepts,
    gold,
    make_example,
    render_completion,
)

TEST_SPLITS = ("test_unseen_pair", "test_unseen_subject")


class ContaminationError(ValueError):
    """A test query, pair or held-out subject leaked into training."""


@dataclass
class TasksConfig:
    """Everything that determines the task splits (``hyperr1 tasks``)."""

    data: str = "mammals"  # shipped hierarchy name or child<TAB>parent TSV path
    out: str = "runs/tasks"  # output directory of run_tasks
    seed: int = 0  # seed of every random choice
    unseen_subject_frac: float = 0.1  # share of non-root concepts held out as unseen subjects
    n_train_is_a: int = 4000  # is_a training queries (half yes, half no)
    n_train_ancestor_k: int = 2000  # ancestor_k training queries
    n_train_lca: int = 2000  # lca training queries
    n_test: int = 300  # queries per multi-hop task in each test split (is_a half yes)
    min_test_hops: int = 2  # shortest target chain of a test query
    max_hops: int | None = None  # longest target chain of any multi-hop query (None: no limit)
    near_frac: float = 0.5  # share of is_a negatives and lca partners drawn near x (hard ones)
    retraction_rate: float = 0.1  # ρ: share of training targets with a `wait` retraction
    warm_max_hops: int = 2  # longest chain in the warm-start set
    warm_no_think_frac: float = 0.3  # share of warm-start targets without the think block
    ngram: int = 4  # n of the question n-gram overlap in the audit


# ---------------------------------------------------------------- query keys


def concept_args(ex: TaskExample) -> tuple[str, ...]:
    """The concept arguments of a query (``k`` of ``ancestor_k`` excluded)."""
    return ex.args[:1] if ex.task in ("parent", "ancestor_k") else ex.args


def query_key(ex: TaskExample) -> tuple:
    """Identity of a query; ``lca`` is symmetric in its arguments."""
    return (ex.task, tuple(sorted(ex.args))) if ex.task == "lca" else ex.key


def pair_keys(ex: TaskExample) -> set[frozenset[str]]:
    """Unordered concept pairs a query asks about: {x, y}, or {x, a} for each accepted answer a."""
    x = ex.args[0]
    others = {ex.args[1]} if ex.task in ("is_a", "lca") else set(ex.answers)
    return {frozenset((x, o)) for o in others}


# ---------------------------------------------------------------- sampling


def near_concepts(h: Hierarchy, x: str) -> list[str]:
    """Concepts near ``x`` that are not its ancestors: its children, its siblings, the siblings of
    its ancestors, and its cousins (children of its parents' siblings). Sorted."""
    up = h.ancestors(x) | {x}
    pool = set(h.children(x))
    for a in up:
        for p in h.parents(a):
            pool.update(h.children(p))
    for p in h.parents(x):
        for g in h.parents(p):
            for uncle in h.children(g):
                pool.update(h.children(uncle))
    return sorted(pool - up)


def _candidates(
    h: Hierarchy,
    rng: random.Random,
    task: str,
    subjects: Sequence[str],
    partners: set[str],
    near_frac: float,
    attempts: int,
) -> Iterator[tuple[str, ...]]:
    """Candidate argument tuples: enumerated and shuffled where the set is small (``is_a`` yes,
    ``ancestor_k``), else drawn at random with the partner near x with probability near_frac."""
    if task == "is_a_yes":
        cands = [(x, y) for x in subjects for y in sorted(h.ancestors(x)) if y in partners]
    elif task == "ancestor_k":
        cands = [(x, str(k)) for x in subjects for k in range(2, min(h.depth(x), MAX_K) + 1)]
    else:  # is_a negatives and lca
        near: dict[str, list[str]] = {}
        pool = sorted(partners)
        for _ in range(attempts):
            x = rng.choice(subjects)
            if x not in near:
                near[x] = [v for v in near_concepts(h, x) if v in partners]
            use_near = near[x] and rng.random() < near_frac
            yield x, rng.choice(near[x] if use_near else pool)
        return
    rng.shuffle(cands)
    yield from cands


def sample_queries(
    h: Hierarchy,
    rng: random.Random,
    task: str,
    n: int,
    *,
    subjects: Sequence[str],
    partners: Iterable[str],
    accept: Callable[[TaskExample], bool],
    near_frac: float,
    seen: set,
    retraction_rate: float = 0.0,
) -> list[TaskExample]:
    """Up to ``n`` new examples of ``task`` (``is_a_yes``, ``is_a_no``, ``ancestor_k``, ``lca``)
    with x from ``subjects``, second concept from ``partners``, passing ``accept``; adds their
    query keys to ``seen``."""
    name = "is_a" if task.startswith("is_a") else task
    want = {"is_a_yes": YES, "is_a_no": NO}.get(task)
    out: list[TaskExample] = []
    if n <= 0 or not subjects:
        return out
    stream = _candidates(h, rng, task, subjects, set(partners), near_frac, 50 * n + 2000)
    for args in stream:
        if len(out) >= n:
            break
        if args[0] == args[1] or (name, tuple(sorted(args)) if name == "lca" else args) in seen:
            continue
        if want == NO and h.is_a(args[0], args[1]):
            continue
        try:
            ex = make_example(h, name, args, retraction_rate=retraction_rate, rng=rng)
        except ValueError:  # e.g. lca of related or disconnected concepts: not a query
            continue
        if (want is None or ex.answer == want) and accept(ex):
            seen.add(query_key(ex))
            out.append(ex)
    return out


# ---------------------------------------------------------------- splits


def build_splits(h: Hierarchy, cfg: TasksConfig) -> tuple[dict[str, list[TaskExample]], dict]:
    """``({split: examples}, audit report)``; the audit raises if the splits are contaminated."""
    check_concepts(h)
    rng = random.Random(cfg.seed)
    non_roots = [v for v in h.nodes if h.parents(v)]
    eligible = [v for v in non_roots if h.depth(v) >= max(2, cfg.min_test_hops)]
    rng.shuffle(eligible)
    held = sorted(eligible[: round(cfg.unseen_subject_frac * len(non_roots))])
    held_set = set(held)
    known = [v for v in non_roots if v not in held_set]  # subjects outside the held-out set
    others = [v for v in h.nodes if v not in held_set]  # partners (roots included)
    max_hops = cfg.max_hops if cfg.max_hops is not None else 10**9
    parent_pairs = {frozenset(e) for e in h.graph.edges}

    def test_ok(ex: TaskExample) -> bool:
        return cfg.min_test_hops <= ex.hops <= max_hops and not pair_keys(ex) & parent_pairs

    def draw(n_is_a: int, n_anc: int, n_lca: int, subjects, partners, accept, rate):
        sizes = {"is_a_yes": n_is_a // 2, "is_a_no": n_is_a // 2, "ancestor_k": n_anc, "lca": n_lca}
        kw = dict(subjects=subjects, partners=partners, accept=accept, near_frac=cfg.near_frac)
        seen: set = set()  # query keys already in this split
        return [
            ex
            for task, n in sizes.items()
            for ex in sample_queries(h, rng, task, n, **kw, seen=seen, retraction_rate=rate)
        ]

    n = cfg.n_test
    test_subject = draw(n, n, n, held, h.nodes, test_ok, 0.0)
    test_pair = draw(n, n, n, known, others, test_ok, 0.0)
    reserved = set().union(*(pair_keys(ex) for ex in test_pair))

    def train_ok(ex: TaskExample) -> bool:
        return ex.hops <= max_hops and not pair_keys(ex) & reserved

    rate = cfg.retraction_rate
    train = [make_example(h, "parent", (v,), retraction_rate=rate, rng=rng) for v in non_roots]
    n_train = (cfg.n_train_is_a, cfg.n_train_ancestor_k, cfg.n_train_lca)
    train += draw(*n_train, known, others, train_ok, rate)
    splits = {
        "train": train,
        "test_unseen_pair": test_pair,
        "test_unseen_subject": test_subject,
        "warm_start": build_warm_start(train, cfg),
    }
    return splits, audit_splits(splits, h, ngram=cfg.ngram)


def build_warm_start(train: Sequence[TaskExample], cfg: TasksConfig) -> list[TaskExample]:
    """Training queries with ``hops <= warm_max_hops``, ``is_a`` cut back to as many yes as no
    (short chains are mostly yes); exactly ``round(warm_no_think_frac * n)`` of them, chosen with
    the seed, answer without the think block."""
    pool = [ex for ex in train if ex.hops <= cfg.warm_max_hops]
    yes = [i for i, ex in enumerate(pool) if ex.task == "is_a" and ex.answer == YES]
    drop = set(yes[sum(ex.task == "is_a" and ex.answer == NO for ex in pool) :])
    pool = [ex for i, ex in enumerate(pool) if i not in drop]
    rng = random.Random(cfg.seed + 1)
    bare = set(rng.sample(range(len(pool)), round(cfg.warm_no_think_frac * len(pool))))
    return [
        replace(ex, completion=render_completion((), ex.answer, think=False)) if i in bare else ex
        for i, ex in enumerate(pool)
    ]


# ---------------------------------------------------------------- audit


def ngram_overlap(train: Sequence[str], test: Sequence[str], n: int) -> dict:
    """Word n-gram overlap of test questions with training questions.

    ``jaccard`` = |A ∩ B| / |A ∪ B| and ``containment`` = |A ∩ B| / |B| over the n-gram sets A of
    training and B of test questions; per question, the share of its n-grams seen in training.
    """

    def grams(q: str) -> set[tuple[str, ...]]:
        w = q.split()
        return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}

    seen = set().union(*(grams(q) for q in train)) if train else set()
    per_q = [grams(q) for q in test]
    pool = set().union(*per_q) if per_q else set()
    share = [len(g & seen) / len(g) for g in per_q if g]
    return {
        "n": n,
        "jaccard": len(pool & seen) / len(pool | seen) if pool | seen else 0.0,
        "containment": len(pool & seen) / len(pool) if pool else 0.0,
        "mean_question_containment": statistics.fmean(share) if share else 0.0,
        "max_question_containment": max(share, default=0.0),
        "questions_fully_contained": sum(s == 1.0 for s in share),
    }


def audit_splits(splits: dict[str, list[TaskExample]], h: Hierarchy, *, ngram: int = 4) -> dict:
    """Prove the test splits disjoint from training; raise :class:`ContaminationError` if not."""
    train = splits["train"]
    train_keys = {query_key(ex) for ex in train}
    train_pairs = set().union(*(pair_keys(ex) for ex in train)) if train else set()
    multi_hop_args = {a for ex in train if ex.task != "parent" for a in concept_args(ex)}
    on_chains: set[frozenset[str]] = set()
    for ex in train:
        for c in gold(h, ex.task, ex.args)[0]:
            on_chains.update(frozenset((u, v)) for i, u in enumerate(c) for v in c[i + 1 :])
    taught = {ex.args[0] for ex in train if ex.task == "parent"}
    missing = sorted(v for v in h.nodes if h.parents(v) and v not in taught)
    report: dict = {"parent_facts_taught": len(taught), "parent_facts_missing": len(missing)}
    errors = [f"{len(missing)} parent facts not taught, e.g. {missing[:3]}"] if missing else []
    warm_outside = [ex for ex in splits.get("warm_start", []) if query_key(ex) not in train_keys]
    if warm_outside:
        errors.append(f"{len(warm_outside)} warm-start queries are not training queries")
    for name in TEST_SPLITS:
        test = splits.get(name, [])
        keys = [query_key(ex) for ex in test]
        leaked = [k for k in keys if k in train_keys]
        pairs = [ex for ex in test if pair_keys(ex) & train_pairs]
        held = {ex.args[0] for ex in test}
        subj_leak = sorted(held & multi_hop_args) if name == "test_unseen_subject" else []
        entry = {
            "queries": len(test),
            "duplicate_queries": len(keys) - len(set(keys)),
            "queries_in_train": len(leaked),
            "pairs_in_train": len(pairs),
            "held_out_subjects": len(held) if name == "test_unseen_subject" else None,
            "held_out_subjects_in_multi_hop_train": len(subj_leak),
            "pairs_on_train_chains": sum(bool(pair_keys(ex) & on_chains) for ex in test),
            "question_ngrams": ngram_overlap([ex.question for ex in train], [ex.question for ex in test], ngram),
        }
        report[name] = entry
        if leaked or entry["duplicate_queries"]:
            errors.append(f"{name}: {len(leaked)} queries in train, e.g. {leaked[:2]}")
        if name == "test_unseen_pair" and pairs:
            errors.append(f"{name}: {len(pairs)} pairs occur in train, e.g. {pairs[0].key}")
        if subj_leak:
            errors.append(f"{name}: held-out subjects asked in multi-hop train, e.g. {subj_leak[:3]}")
    report["passed"] = not errors
    if errors:
        raise ContaminationError("contaminated splits: " + "; ".join(errors))
    return report


# ---------------------------------------------------------------- summary


def summary_markdown(splits: dict[str, list[TaskExample]], title: str = "") -> str:
    """Markdown tables: split sizes and task mix, then the hop-count distribution."""
    lines = [f"## {title}", ""] if title else []
    lines += [
        "| split | queries | parent | is_a (yes / no) | ancestor_k | lca | retractions | hops min / median / max |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    all_hops = sorted({ex.hops for exs in splits.values() for ex in exs})
    for name, exs in splits.items():
        tasks = Counter(ex.task for ex in exs)
        yes = sum(ex.task == "is_a" and ex.answer == YES for ex in exs)
        hops = [ex.hops for ex in exs] or [0]
        lines.append(
            f"| {name} | {len(exs)} | {tasks['parent']} | {yes} / {tasks['is_a'] - yes} "
            f"| {tasks['ancestor_k']} | {tasks['lca']} | {sum(ex.retraction for ex in exs)} "
            f"| {min(hops)} / {statistics.median(hops):g} / {max(hops)} |"
        )
    lines += ["", "| split | " + " | ".join(f"{k} hops" for k in all_hops) + " |"]
    lines.append("| --- |" + " ---: |" * len(all_hops))
    for name, exs in splits.items():
        count = Counter(ex.hops for ex in exs)
        lines.append(f"| {name} | " + " | ".join(str(count[k]) for k in all_hops) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- command line


def run_tasks(cfg: TasksConfig) -> dict:
    """Build the splits of ``cfg.data`` and write them to ``cfg.out``.

    Writes ``<split>.jsonl`` (one :meth:`TaskExample.to_json` per line), ``audit.json``,
    ``config.json`` (the run record of :mod:`hyperr1.runs`, plus the hierarchy's size) and ``summary.md``; returns
    ``{"out", "sizes", "audit", "summary"}``.
    """
    h = load_hierarchy(cfg.data)
    splits, audit = build_splits(h, cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, exs in splits.items():
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(ex.to_json() + "\n" for ex in exs)
    summary = summary_markdown(splits, f"Task splits of `{h.name}` (seed {cfg.seed})")
    summary += "\n" + _audit_markdown(audit)
    (out / "summary.md").write_text(summary, encoding="utf-8")
    (out / "audit.json").write_text(json.dumps(audit, indent=2) + "\n", encoding="utf-8")
    record = write_record(out, asdict(cfg), kind="tasks")
    record["hierarchy"] = {"name": h.name, "nodes": len(h), "edges": h.graph.number_of_edges()}
    write_json(out / "config.json", record)
    sizes = {name: len(exs) for name, exs in splits.items()}
    return {"out": str(out), "sizes": sizes, "audit": audit, "summary": summary}


def _audit_markdown(audit: dict) -> str:
    lines = [
        f"Contamination audit: {'passed' if audit['passed'] else 'FAILED'}; "
        f"{audit['parent_facts_taught']} parent facts taught.",
        "",
        "| test split | queries | in train | pairs in train | pairs on train chains "
        "| question n-gram containment (mean / max) | fully contained |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in TEST_SPLITS:
        e, g = audit[name], audit[name]["question_ngrams"]
        lines.append(
            f"| {name} | {e['queries']} | {e['queries_in_train']} | {e['pairs_in_train']} "
            f"| {e['pairs_on_train_chains']} | {g['mean_question_containment']:.3f} / "
            f"{g['max_question_containment']:.3f} | {g['questions_fully_contained']} |"
        )
    return "\n".join(lines) + "\n"

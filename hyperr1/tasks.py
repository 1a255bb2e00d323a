"""Verifiable hierarchical-reasoning tasks generated from a :class:`~hyperr1.hierarchy.Hierarchy`.

Four tasks, one completion grammar (whitespace-separated tokens, one token per concept)::

    <think> x -> p1 -> p2 </think> <answer> A </answer>          then end-of-sequence

=============  =============  ==========================================  =====================
task           args           target chain(s) inside <think>              answer
=============  =============  ==========================================  =====================
``parent``     ``(x,)``       ``x -> p`` (one step)                       ``p``, any parent
``is_a``       ``(x, y)``     climb from x to y (yes) or to a root (no)   ``yes`` | ``no``
``ancestor_k`` ``(x, "k")``   exactly k steps up from x                   any node k steps up
``lca``        ``(x, y)``     ``x -> .. -> a ; y -> .. -> a``             any lowest common anc.
=============  =============  ==========================================  =====================

``parent`` is the "answer only" atomic fact of the design; it uses the same grammar as every
other task with a one-step chain, so that one format reward covers all tasks. Chains of ``lca`` are
separated by the grammar token ``;``.

With multiple inheritance the *target* takes one canonical path (shortest, sorted-first parent at
each step, as :meth:`Hierarchy.path_to_root`); the checkers in :mod:`hyperr1.rewards` accept every
valid path, so ``answers`` lists every accepted answer.

Retraction (the measurable form of R1's "self-reflection"): ``a -> b wait c`` withdraws the step
a→b and replaces it with a→c. :func:`make_example` inserts one wrong step followed by ``wait`` and
the right step into a chosen fraction of training targets.

The hop-count curriculum (:func:`bucket_by_hops`, :class:`HopCurriculum`) samples training
queries up to a chain length h_max and widens h_max when a monitored accuracy reaches τ.

The prompt follows R1-Zero's template (an instruction naming the think/answer format, the
question, then the model's turn); all of it is lower case and space separated, so a word-level
tokenizer covers it exactly (:func:`template_words`).
"""

from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields

from hyperr1.hierarchy import Hierarchy

# ---------------------------------------------------------------- grammar

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
STEP, WAIT, SEP = "->", "wait", ";"  # step up one parent edge / withdraw the last step / next chain
YES, NO = "yes", "no"
TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
OPERATORS = (STEP, WAIT, SEP)
GRAMMAR_TOKENS = (*TAGS, *OPERATORS, YES, NO)
TASKS = ("parent", "is_a", "ancestor_k", "lca")
Chains = tuple[tuple[str, ...], ...]  # one or two upward paths, each [x, p1, ..., end]
MAX_K = 32  # largest k of ancestor_k; the numerals "1".."32" are template words

PREAMBLE = (
    "a conversation between user and assistant . the user asks a question about a hierarchy of "
    "concepts and the assistant answers it . the assistant first climbs the hierarchy one parent "
    "at a time inside <think> </think> and then gives the answer inside <answer> </answer> , "
    "that is <think> reasoning here </think> <answer> answer here </answer> ."
)
QUESTIONS = {
    "parent": "what is the parent of {x} ?",
    "is_a": "is {x} a kind of {y} ?",
    "ancestor_k": "what is the ancestor of {x} that is {y} steps up ?",
    "lca": "what is the lowest common ancestor of {x} and {y} ?",
}


def render_question(task: str, args: tuple[str, ...]) -> str:
    """The question part of the prompt (what the contamination audit compares)."""
    if task not in QUESTIONS:
        raise ValueError(f"unknown task {task!r}; known tasks: {TASKS}")
    return QUESTIONS[task].format(x=args[0], y=args[1] if len(args) > 1 else "")


def render_prompt(task: str, args: tuple[str, ...]) -> str:
    """R1-Zero style prompt: ``PREAMBLE user : <question> assistant :``."""
    return f"{PREAMBLE} user : {render_question(task, args)} assistant :"


def template_words() -> list[str]:
    """Sorted words of the prompt template and numerals 1..MAX_K, grammar tokens excluded."""
    text = " ".join([PREAMBLE, "user : assistant :", *QUESTIONS.values()])
    words = {w for w in text.split() if not w.startswith("{")}
    words |= {str(k) for k in range(1, MAX_K + 1)}
    return sorted(words - set(GRAMMAR_TOKENS))


def render_completion(
    chains: Chains,
    answer: str,
    *,
    retraction: tuple[int, int, str] | None = None,
    think: bool = True,
) -> str:
    """``<think> c1 ; c2 </think> <answer> answer </answer>`` (no end-of-sequence token).

    ``retraction=(chain, step, wrong)`` renders step ``step`` of chain ``chain`` as
    ``a -> wrong wait b``; ``think=False`` gives the answer-only form ``<answer> A </answer>``.
    """
    answer_part = f"{ANSWER_OPEN} {answer} {ANSWER_CLOSE}"
    if not think:
        return answer_part
    parts = []
    for ci, chain in enumerate(chains):
        toks = [chain[0]]
        for si, node in enumerate(chain[1:]):
            if retraction is not None and retraction[:2] == (ci, si):
                toks += [STEP, retraction[2], WAIT, node]
            else:
                toks += [STEP, node]
        parts.append(" ".join(toks))
    return f"{THINK_OPEN} {f' {SEP} '.join(parts)} {THINK_CLOSE} {answer_part}"


# ---------------------------------------------------------------- paths in the graph


def path_between(h: Hierarchy, x: str, a: str) -> list[str]:
    """Canonical upward path ``[x, ..., a]`` to an ancestor ``a`` (or ``a == x``).

    Shortest in parent steps; at each step the sorted-first parent still on a shortest path, which
    for ``a`` a root reached first is :meth:`Hierarchy.path_to_root`. Distances to ``a`` come from
    a breadth-first search down from ``a`` restricted to ``x`` and its ancestors.
    """
    allowed = h.ancestors(x) | {x}
    if a not in allowed:
        raise ValueError(f"{a!r} is not an ancestor of {x!r} in {h.name!r}")
    dist, queue = {a: 0}, deque([a])
    while queue:
        v = queue.popleft()
        for c in h.children(v):
            if c in allowed and c not in dist:
                dist[c] = dist[v] + 1
                queue.append(c)
    path = [x]
    while path[-1] != a:
        cur = path[-1]
        path.append(min(p for p in h.parents(cur) if dist.get(p) == dist[cur] - 1))
    return path


def kth_ancestors(h: Hierarchy, x: str, k: int) -> list[str]:
    """Every node at the end of an upward path of exactly ``k`` parent edges from ``x``."""
    level = {x}
    for _ in range(k):
        level = {p for v in level for p in h.parents(v)}
    return sorted(level)


def gold(h: Hierarchy, task: str, args: tuple[str, ...]) -> tuple[Chains, str, tuple[str, ...]]:
    """``(target chains, canonical answer, every accepted answer)`` of a query.

    Raises ``ValueError`` for a query without an answer (a root's parent, ``k`` beyond the depth,
    ``lca`` of related or disconnected nodes) and ``HierarchyError`` for unknown concepts.
    """
    x = args[0]
    if task == "parent":
        if not h.parents(x):
            raise ValueError(f"{x!r} is a root: it has no parent")
        path = h.path_to_root(x)
        return (tuple(path[:2]),), path[1], tuple(h.parents(x))
    if task == "is_a":
        y = args[1]
        if h.is_a(x, y):
            return (tuple(path_between(h, x, y)),), YES, (YES,)
        return (tuple(h.path_to_root(x)),), NO, (NO,)
    if task == "ancestor_k":
        k = int(args[1])
        if not 1 <= k <= min(h.depth(x), MAX_K):
            raise ValueError(f"k={k} outside 1..{min(h.depth(x), MAX_K)} for {x!r}")
        path = h.path_to_root(x)
        return (tuple(path[: k + 1]),), path[k], tuple(kth_ancestors(h, x, k))
    if task == "lca":
        y = args[1]
        if x == y or h.is_a(x, y) or h.is_a(y, x):
            raise ValueError(f"lca query needs unrelated concepts, got {x!r} and {y!r}")
        lcas = h.lca(x, y)
        if not lcas:
            raise ValueError(f"{x!r} and {y!r} have no common ancestor")
        paths = {a: (path_between(h, x, a), path_between(h, y, a)) for a in lcas}
        a = min(lcas, key=lambda a: (len(paths[a][0]) + len(paths[a][1]), a))
        return (tuple(paths[a][0]), tuple(paths[a][1])), a, tuple(lcas)
    raise ValueError(f"unknown task {task!r}; known tasks: {TASKS}")


# ---------------------------------------------------------------- examples


@dataclass(frozen=True)
class TaskExample:
    """One query with its target completion and everything the checkers need.

    ``key = (task, args)`` identifies the query (the contamination audit compares keys); the
    grader accepts any answer in ``answers`` and verifies chains against the graph.
    """

    task: str  # one of TASKS
    args: tuple[str, ...]  # (x,) parent; (x, y) is_a and lca; (x, str(k)) ancestor_k
    prompt: str  # render_prompt(task, args)
    completion: str  # target completion, without the end-of-sequence token
    answer: str  # canonical gold answer (the one the target chain reaches)
    answers: tuple[str, ...]  # every accepted answer, sorted (multiple inheritance)
    hops: int  # parent steps in the target chain(s) after retractions: the curriculum's length
    retraction: bool = False  # whether the target contains a `wait` retraction

    @property
    def key(self) -> tuple[str, tuple[str, ...]]:
        return self.task, self.args

    @property
    def question(self) -> str:
        return render_question(self.task, self.args)

    def to_row(self) -> dict:
        """A plain dict (lists, not tuples) for JSONL and TRL/datasets columns."""
        row = asdict(self)
        row["args"], row["answers"] = list(self.args), list(self.answers)
        return row

    def to_json(self) -> str:
        return json.dumps(self.to_row(), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str | dict) -> TaskExample:
        row = json.loads(line) if isinstance(line, str) else dict(line)
        row["args"], row["answers"] = tuple(row["args"]), tuple(row["answers"])
        return cls(**row)


def make_example(
    h: Hierarchy,
    task: str,
    args: tuple[str, ...],
    *,
    retraction_rate: float = 0.0,
    rng: random.Random | None = None,
) -> TaskExample:
    """Build the example of one query; with probability ``retraction_rate`` (drawn from ``rng``)
    the target holds one retraction ``a -> b wait c`` with b a wrong parent (a sibling of the right
    parent c when one exists, else a random non-parent of a)."""
    args = tuple(str(a) for a in args)
    chains, answer, answers = gold(h, task, args)
    retraction = None
    if retraction_rate > 0 and rng is not None and rng.random() < retraction_rate:
        retraction = _pick_retraction(h, chains, rng)
    return TaskExample(
        task=task,
        args=args,
        prompt=render_prompt(task, args),
        completion=render_completion(chains, answer, retraction=retraction),
        answer=answer,
        answers=answers,
        hops=sum(len(c) - 1 for c in chains),
        retraction=retraction is not None,
    )


def _pick_retraction(h: Hierarchy, chains: Chains, rng: random.Random) -> tuple[int, int, str] | None:
    steps = [(ci, si) for ci, c in enumerate(chains) for si in range(len(c) - 1)]
    if not steps:
        return None
    ci, si = rng.choice(steps)
    cur, right = chains[ci][si], chains[ci][si + 1]
    bad = set(h.parents(cur)) | {cur}
    near = sorted({s for p in h.parents(right) for s in h.children(p)} - bad)
    if near:
        return ci, si, rng.choice(near)
    for _ in range(32):  # random fallback; a tiny graph may have no wrong step at all
        w = rng.choice(h.nodes)
        if w not in bad:
            return ci, si, w
    return None


# ---------------------------------------------------------------- curriculum


def bucket_by_hops(examples: Iterable[TaskExample]) -> dict[int, list[TaskExample]]:
    """Examples grouped by chain length, keys ascending."""
    buckets: dict[int, list[TaskExample]] = {}
    for ex in examples:
        buckets.setdefault(ex.hops, []).append(ex)
    return dict(sorted(buckets.items()))


@dataclass
class HopCurriculum:
    """Hop-count curriculum: sample queries with ``hops <= max_hops``; widen by ``step`` whenever
    the monitored accuracy reaches ``threshold`` (τ), up to ``ceiling``."""

    max_hops: int = 2  # h_max: the longest chain currently sampled
    ceiling: int | None = None  # the largest h_max; None: no limit (see from_examples)
    threshold: float = 0.8  # τ: widen when the monitored accuracy is at least τ
    step: int = 1  # Δh added to h_max per widening
    widenings: int = 0  # how many times the range has been widened

    def update(self, accuracy: float) -> bool:
        """Record an accuracy; widen (and return True) if it reaches the threshold."""
        ceiling = self.ceiling if self.ceiling is not None else float("inf")
        if accuracy >= self.threshold and self.max_hops < ceiling:
            self.max_hops = int(min(ceiling, self.max_hops + self.step))
            self.widenings += 1
            return True
        return False

    @classmethod
    def from_examples(cls, examples: Iterable[TaskExample], **kwargs) -> HopCurriculum:
        """A curriculum whose ceiling is the longest chain among ``examples``."""
        return cls(ceiling=max(ex.hops for ex in examples), **kwargs)

    def select(self, examples: Iterable[TaskExample]) -> list[TaskExample]:
        """The examples inside the current range."""
        return [ex for ex in examples if ex.hops <= self.max_hops]

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for f in fields(self):
            setattr(self, f.name, state[f.name])


def check_concepts(h: Hierarchy) -> None:
    """Raise ``ValueError`` if a concept cannot be one grammar token (whitespace, reserved word)."""
    spaced = sorted(v for v in h.nodes if not v or any(c.isspace() for c in v))
    if spaced:
        shown = ", ".join(repr(v) for v in spaced[:5]) + (", …" if len(spaced) > 5 else "")
        raise ValueError(
            f"{len(spaced)} concept(s) of {h.name!r} are not single whitespace-free tokens ({shown}); every "
            "concept is one token of the policy's vocabulary: rename them in the data, e.g. with '_' for "
            "spaces as WordNet's lemmas do (domestic_cat)"
        )
    reserved = sorted(v for v in h.nodes if v in GRAMMAR_TOKENS)
    if reserved:
        raise ValueError(f"concept(s) {reserved} of {h.name!r} collide with grammar tokens; rename them in the data")

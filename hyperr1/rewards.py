"""Rule-based rewards for the hierarchy tasks, in TRL's reward-function calling convention.

Every reward is ``fn(completions, **kwargs) -> list[float]`` as ``trl.GRPOTrainer`` calls it: the
completions are strings or conversational lists (``[{"role": "assistant", "content": ...}]``),
and dataset columns (``answers``, ``task``, ``args``, ...) arrive as keyword lists, one entry per
completion. Every score lies in [0, 1] for every input text and no completion makes a reward
raise; completions are only ever split on whitespace and compared with strings, never evaluated.

The grammar (see :mod:`hyperr1.tasks`), on whitespace-separated tokens::

    completion := <think> chain ( ; chain )* </think> <answer> A </answer>  [eos | pad]*
    chain      := C ( -> C | wait C )*          with `wait` never the first operator of a chain

``C`` is any token that is not a grammar or special token; ``A`` any token that is not a tag,
operator or special token. Leading ``<s>``/``<pad>`` and trailing ``</s>``/``<pad>`` strings (with
or without whitespace between them and the text: ``x</s></s>`` reads as ``x``) are ignored.
``a -> b wait c`` withdraws the step a→b and replaces it with a→c, so the chain read for
faithfulness is ``a -> c``.

- ``format_reward``: 1 if the completion follows the grammar exactly, else 0 (R1's format reward).
- ``tag_count_reward``: 0.25 for each of the four tags present exactly once (open-r1's
  ``tag_count_reward``), partial credit towards the format.
- ``accuracy_reward``: 1 if the first ``<answer> A </answer>`` block holds one token A that is an
  accepted answer; lenient about the rest of the format, so that accuracy and format are separate.
- ``make_faithfulness_reward(h)``: the fraction of chain steps, after retractions, that are true
  parent edges of ``h`` (0 without steps).
- ``composite_reward(weights, h)``: ``Σ_i w_i r_i / Σ_i w_i``; R1's recipe is accuracy + format.
  Normalising by ``Σ w`` keeps it in [0, 1] and leaves GRPO's group-normalised advantages
  ``(r - mean) / std`` unchanged.

One registry, one parse: :data:`REWARDS` maps each reward's name to its score of one
:class:`ParsedCompletion`, and every entry point reads it. :func:`score_completions` parses each
completion once and returns every defined reward and the weighted total together (what a trainer
logs and optimises); the TRL-style functions above and ``composite_reward`` are thin views of it.

Cost: O(len(text)) per completion for every reward. The text is split on whitespace once, and the
special tokens are dropped by moving two indices over that token list (never by re-slicing the
text, which made ``</s> </s> ...`` quadratic); ``benchmarks/bench_rewards.py`` measures it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property

from hyperr1.hierarchy import Hierarchy
from hyperr1.tasks import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    GRAMMAR_TOKENS,
    OPERATORS,
    SEP,
    STEP,
    TAGS,
    THINK_CLOSE,
    THINK_OPEN,
    WAIT,
    YES,
    Chains,
)
from hyperr1.tokenizer import BOS, EOS, PAD, SPECIAL_TOKENS

RewardFn = Callable[..., list[float]]
_NOT_CONCEPT = frozenset(GRAMMAR_TOKENS) | frozenset(SPECIAL_TOKENS)
_NOT_ANSWER = frozenset(TAGS) | frozenset(OPERATORS) | frozenset(SPECIAL_TOKENS)
_CHAIN_OPS = frozenset({STEP, WAIT})  # operators inside a chain
_BODY_OPS = frozenset(OPERATORS)  # ... and between chains
_LEADING, _TRAILING = (BOS, PAD), (EOS, PAD)  # specials ignored at the start / at the end


@dataclass(frozen=True)
class ParsedCompletion:
    """What a completion says, read leniently, plus whether it is exactly well formed.

    The chains and retractions are read from the think body on first use and kept: the format,
    tag-count and accuracy rewards never need them, and on a long body they are most of the work.
    """

    well_formed: bool  # follows the grammar exactly
    answer: str | None  # the single token of the first answer block, else None
    n_wait: int  # `wait` tokens anywhere in the completion
    tag_counts: tuple[int, ...] = (0, 0, 0, 0)  # occurrences of each of TAGS, in TAGS order
    think_body: tuple[str, ...] | None = field(default=None, repr=False)  # first think block's tokens

    @property
    def has_think(self) -> bool:
        """Holds a ``<think> ... </think>`` block."""
        return self.think_body is not None

    @cached_property
    def _chains_and_retractions(self) -> tuple[Chains, tuple[tuple[str, str, str], ...]]:
        return _read_chains(self.think_body or ())

    @property
    def chains(self) -> Chains:
        """Chains of the first think block, retractions applied."""
        return self._chains_and_retractions[0]

    @property
    def retractions(self) -> tuple[tuple[str, str, str], ...]:
        """``(a, withdrawn b, replacement c)`` per ``wait`` that withdrew a step."""
        return self._chains_and_retractions[1]

    @property
    def steps(self) -> list[tuple[str, str]]:
        """Every (child, claimed parent) step of the chains."""
        return [(c[i], c[i + 1]) for c in self.chains for i in range(len(c) - 1)]


def completion_text(completion: object) -> str:
    """The text of a completion: a string, or the contents of a TRL conversational list."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, (list, tuple)):
        parts = [m.get("content") for m in completion if isinstance(m, dict)]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def _strip_specials(toks: list[str]) -> list[str]:
    """``toks`` without leading ``<s>``/``<pad>`` and trailing ``</s>``/``<pad>``, glued or not.

    The same tokens as removing those strings from the ends of the text one at a time, with any
    whitespace beside them, and splitting what is left (``"x</s> </s>"`` → ``["x"]``,
    ``"<s><think>"`` → ``["<think>"]``). Two indices walk in from the ends over whole tokens, and
    within a token the glued specials are matched by offset (``endswith(tok, 0, end)``), so every
    character is looked at a bounded number of times: O(len(text)). (Re-slicing the text once per
    special, as this function once did, made ``</s> </s> ...`` quadratic.)
    """
    j = len(toks)  # toks[:j] is what the trailing specials leave
    while j:
        t = toks[j - 1]
        if t in _TRAILING:  # the common case, a whole special token
            j -= 1
            continue
        end = len(t)
        while t.endswith(_TRAILING, 0, end):  # "</s>" ends in "s>", "<pad>" in "d>"
            end -= len(EOS) if t[end - 2] == "s" else len(PAD)
        if end:  # text before the glued specials ends the trailing run
            toks[j - 1] = t[:end]
            break
        j -= 1
    i = 0  # toks[i:j] is what the leading specials leave
    while i < j:
        t = toks[i]
        if t in _LEADING:
            i += 1
            continue
        start = 0
        while t.startswith(_LEADING, start):  # "<s>" starts with "<s", "<pad>" with "<p"
            start += len(BOS) if t[start + 1] == "s" else len(PAD)
        if start < len(t):
            toks[i] = t[start:]
            break
        i += 1
    return toks[i:j]


def _well_formed(toks: list[str]) -> bool:
    """Whether ``toks`` follows the grammar of the module docstring exactly.

    The think body ``seg ( ; seg )*`` with ``seg := C ( op C )*`` is exactly a sequence of odd
    length with concepts at the even positions and ``->``/``wait``/``;`` at the odd ones, in which
    no segment's first operator is ``wait``: the operator sequence neither starts with ``wait``
    nor holds ``; wait``. Each condition is one C-level pass over a slice (set operations,
    ``str.join`` and a substring search), with no per-segment Python work or lists.
    """
    if len(toks) < 6 or toks[0] != THINK_OPEN or toks[-4:-2] != [THINK_CLOSE, ANSWER_OPEN]:
        return False
    if toks[-1] != ANSWER_CLOSE or toks[-2] in _NOT_ANSWER:
        return False
    body = toks[1:-4]
    ops = body[1::2]  # the operators, if the body is well formed
    if len(body) % 2 == 0 or not _NOT_CONCEPT.isdisjoint(body[::2]) or not _BODY_OPS.issuperset(ops):
        return False
    joined = " ".join(ops)  # only "->", "wait" and ";" now, so the search below is exact
    return not (joined.startswith(WAIT) or f"{SEP} {WAIT}" in joined)


def _read_chains(body: Sequence[str]) -> tuple[Chains, tuple[tuple[str, str, str], ...]]:
    """Chains of a think body, leniently: a concept right after a concept starts a new chain.

    One pass; a finished chain is kept as a tuple at once, so only the chain being read is a list.
    """
    chains: list[tuple[str, ...]] = []
    retractions: list[tuple[str, str, str]] = []
    cur: list[str] = []
    op = None  # the operator since the last concept, if any
    for t in body:
        if t == SEP:
            if cur:
                chains.append(tuple(cur))
                cur = []
            op = None
        elif t in _CHAIN_OPS:
            op = t
        else:  # a concept
            if not cur:
                cur.append(t)
            elif op == STEP:
                cur.append(t)
            elif op == WAIT and len(cur) >= 2:  # withdraw the last step, take this one instead
                retractions.append((cur[-2], cur[-1], t))
                cur[-1] = t
            else:
                chains.append(tuple(cur))
                cur = [t]
            op = None
    if cur:
        chains.append(tuple(cur))
    return tuple(chains), tuple(retractions)


def _block(toks: list[str], open_tag: str, close_tag: str) -> list[str] | None:
    """Tokens between the first ``open_tag`` and the next ``close_tag``; None if absent."""
    try:
        i = toks.index(open_tag)
        return toks[i + 1 : toks.index(close_tag, i + 1)]
    except ValueError:
        return None


def parse_completion(completion: object) -> ParsedCompletion:
    """Read a completion (string or conversational list); never raises; O(len(text))."""
    toks = _strip_specials(completion_text(completion).split())
    body = _block(toks, THINK_OPEN, THINK_CLOSE)
    inner = _block(toks, ANSWER_OPEN, ANSWER_CLOSE)
    return ParsedCompletion(
        well_formed=_well_formed(toks),
        answer=inner[0] if inner is not None and len(inner) == 1 else None,
        n_wait=toks.count(WAIT),
        tag_counts=tuple(toks.count(tag) for tag in TAGS),
        think_body=tuple(body) if body is not None else None,
    )


# ---------------------------------------------------------------- graph checks


def is_correct(parsed: ParsedCompletion, answers: Collection[str]) -> bool:
    """The answer is one of the accepted ``answers``."""
    return parsed.answer is not None and parsed.answer in answers


def faithfulness(parsed: ParsedCompletion, h: Hierarchy) -> float:
    """Fraction of chain steps (after retractions) that are parent edges of ``h``; 0 if none."""
    chains = parsed.chains
    n_steps = sum(map(len, chains)) - len(chains)  # a chain of k concepts has k − 1 steps
    if not n_steps:
        return 0.0
    has_edge = h.graph.has_edge
    return sum(sum(map(has_edge, c, c[1:])) for c in chains if len(c) > 1) / n_steps


def good_retractions(parsed: ParsedCompletion, h: Hierarchy) -> int:
    """Retractions whose withdrawn step was wrong and whose replacement is a true edge."""
    return sum((not h.graph.has_edge(a, b)) and h.graph.has_edge(a, c) for a, b, c in parsed.retractions)


def chain_is_valid(parsed: ParsedCompletion, task: str, args: Sequence[str], h: Hierarchy) -> bool:
    """Whether the chains prove the stated answer, for any valid path (multiple inheritance).

    Every step must be a parent edge and: ``parent`` one chain x→A; ``is_a`` one chain from x
    ending at y (answer yes) or at a root not passing y (no); ``ancestor_k`` one chain from x of
    exactly k steps ending at A; ``lca`` two chains, from x and from y, both ending at A.
    """
    chains, answer = parsed.chains, parsed.answer
    if answer is None or not chains or any(len(c) < 2 for c in chains):
        return False
    if faithfulness(parsed, h) < 1.0:
        return False
    x, first = args[0], chains[0]
    if task == "lca":
        ends = {c[-1] for c in chains}
        return len(chains) == 2 and {c[0] for c in chains} == set(args[:2]) and ends == {answer}
    if len(chains) != 1 or first[0] != x:
        return False
    if task == "parent":
        return len(first) == 2 and first[-1] == answer
    if task == "ancestor_k":
        return str(len(first) - 1) == str(args[1]) and first[-1] == answer
    if task == "is_a":
        if answer == YES:
            return first[-1] == args[1]
        end = first[-1]
        return end in h and not h.parents(end) and args[1] not in first
    return False


# ---------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Reward:
    """One reward: its score r ∈ [0, 1] of a parsed completion, and what that score reads."""

    score: Callable[[ParsedCompletion, Collection[str] | None, Hierarchy | None], float]  # (parsed, gold, h) -> r
    doc: str  # one line, the docstring of its TRL-style function
    needs_answers: bool = False  # reads the accepted answers (an `answers` column)
    needs_hierarchy: bool = False  # reads the graph


REWARDS: dict[str, Reward] = {
    "accuracy": Reward(
        lambda p, gold, h: float(is_correct(p, gold)),
        "1.0 if the first answer block holds exactly one token and it is an accepted answer.",
        needs_answers=True,
    ),
    "format": Reward(lambda p, gold, h: float(p.well_formed), "1.0 for a completion that follows the grammar exactly."),
    "tag_count": Reward(
        lambda p, gold, h: 0.25 * sum(n == 1 for n in p.tag_counts),
        "0.25 for each of ``<think> </think> <answer> </answer>`` occurring exactly once.",
    ),
    "faithfulness": Reward(
        lambda p, gold, h: faithfulness(p, h),
        "Fraction of chain steps (after retractions) that are parent edges of the hierarchy.",
        needs_hierarchy=True,
    ),
}  # name -> reward; the names are those of RewardWeights' fields, in the same order


def defined_rewards(*, answers: bool, hierarchy: bool) -> list[str]:
    """Names of the rewards that can be scored given answers (or not) and a hierarchy (or not)."""
    return [n for n, r in REWARDS.items() if (answers or not r.needs_answers) and (hierarchy or not r.needs_hierarchy)]


_NO_ANSWERS = "the accuracy reward needs an `answers` (or `answer`) dataset column"


def _accepted(n: int, answers: Sequence | None) -> list[frozenset[str]]:
    """Per-completion accepted answers from an ``answers`` column: lists, JSON lists or strings."""
    if answers is None:
        raise ValueError(_NO_ANSWERS)
    if len(answers) != n:
        raise ValueError(f"{len(answers)} gold answers for {n} completions")
    out = []
    for a in answers:
        if isinstance(a, str) and a.startswith("["):
            try:  # a JSON-serialised list of answers
                a = json.loads(a)
            except ValueError:
                pass
        out.append(frozenset({a} if isinstance(a, str) else {str(v) for v in a}))
    return out


def _score(
    names: Sequence[str],
    completions: Sequence[object],
    gold: Sequence[Collection[str]] | None,
    hierarchy: Hierarchy | None,
) -> dict[str, list[float]]:
    """``{name: [r_name(c) for c in completions]}``, parsing each completion exactly once."""
    if isinstance(completions, (str, bytes)):  # a str is a Sequence: it would be scored one character at a time
        raise TypeError("completions must be a sequence of completions, got one string: pass [completion]")
    per_fn: dict[str, list[float]] = {n: [] for n in names}
    for i, c in enumerate(completions):
        p = parse_completion(c)  # the one parse of this completion
        g = gold[i] if gold is not None else None
        for n in names:
            per_fn[n].append(REWARDS[n].score(p, g, hierarchy))
    return per_fn


# ---------------------------------------------------------------- TRL reward functions


def trl_reward(name: str, hierarchy: Hierarchy | None = None) -> RewardFn:
    """The TRL-style ``fn(completions, **columns) -> list[float]`` of ``REWARDS[name]``.

    A reward that reads the accepted answers takes them from the ``answers`` column (or
    ``answer``, strings); one that reads the graph needs ``hierarchy`` here.
    """
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; known: {list(REWARDS)}")
    spec = REWARDS[name]
    if spec.needs_hierarchy and hierarchy is None:
        raise ValueError(f"the {name} reward needs the hierarchy: trl_reward({name!r}, h)")

    def reward(
        completions: Sequence[object], answers: Sequence | None = None, answer: Sequence | None = None, **kwargs
    ) -> list[float]:
        gold = _accepted(len(completions), answers if answers is not None else answer) if spec.needs_answers else None
        return _score((name,), completions, gold, hierarchy)[name]

    reward.__name__ = reward.__qualname__ = f"{name}_reward"  # TRL logs rewards under __name__
    reward.__doc__ = spec.doc
    return reward


format_reward = trl_reward("format")
tag_count_reward = trl_reward("tag_count")
accuracy_reward = trl_reward("accuracy")


def make_faithfulness_reward(h: Hierarchy) -> RewardFn:
    """``faithfulness_reward(completions, **kwargs)``: fraction of steps that are parent edges."""
    return trl_reward("faithfulness", h)


def reward_functions(hierarchy: Hierarchy | None = None) -> dict[str, RewardFn]:
    """The TRL-style function of every reward that can be scored (faithfulness needs the graph)."""
    return {n: trl_reward(n, hierarchy) for n in defined_rewards(answers=True, hierarchy=hierarchy is not None)}


# ---------------------------------------------------------------- weighted total


@dataclass(frozen=True)
class RewardWeights:
    """Weights w_i of the composite reward Σ w_i r_i / Σ w_i (R1: accuracy + format)."""

    accuracy: float = 1.0  # w_acc, weight of accuracy_reward
    format: float = 1.0  # w_fmt, weight of the strict format_reward
    tag_count: float = 0.0  # weight of the partial-credit tag_count_reward
    faithfulness: float = 0.0  # w_faith, weight of the faithfulness reward (needs the hierarchy)


assert [f.name for f in fields(RewardWeights)] == list(REWARDS), "one weight per reward, in registry order"


@dataclass(frozen=True)
class RewardScores:
    """What :func:`score_completions` returns: the weighted total and every defined reward."""

    total: list[float]  # Σ_i w_i r_i / Σ_i w_i per completion, in [0, 1]
    per_fn: dict[str, list[float]]  # reward name -> r per completion, for every defined reward


def _weight_table(weights: RewardWeights | dict | None) -> dict[str, float]:
    """``{name: w}`` for every reward, checked: w ≥ 0 with Σ w > 0; a dict's missing names weigh 0."""
    if isinstance(weights, dict):
        if unknown := sorted(set(weights) - set(REWARDS)):
            raise ValueError(f"unknown rewards {unknown}; known: {list(REWARDS)}")
        table = {n: float(weights.get(n, 0.0)) for n in REWARDS}
    else:
        w = weights or RewardWeights()
        table = {n: float(getattr(w, n)) for n in REWARDS}
    if any(not v >= 0 for v in table.values()) or not sum(table.values()) > 0:  # `not >=` also rejects NaN
        raise ValueError(f"reward weights must be >= 0 with a positive sum, got {table}")
    return table


def _check_needs(table: dict[str, float], *, answers: bool, hierarchy: bool) -> None:
    """Raise if a reward with a positive weight needs answers or a hierarchy that is missing."""
    if table["faithfulness"] > 0 and not hierarchy:
        raise ValueError("a faithfulness weight needs the hierarchy: composite_reward(w, h)")
    if table["accuracy"] > 0 and not answers:
        raise ValueError(_NO_ANSWERS)


def score_completions(
    completions: Sequence[object],
    answers: Sequence | None,
    weights: RewardWeights | dict | None = None,
    hierarchy: Hierarchy | None = None,
) -> RewardScores:
    """Every defined reward and the weighted total ``Σ_i w_i r_i / Σ_i w_i`` (clipped to [0, 1]),
    parsing each completion exactly once.

    ``answers`` is the ``answers`` column (per completion: a list of accepted answers, a JSON
    list or one string), or None when the accuracy weight is 0; ``per_fn`` holds accuracy when
    answers are given, format and tag_count always, faithfulness when ``hierarchy`` is given,
    whatever their weights. The sum runs over the non-zero weights in registry order, so the
    total is bit-for-bit that of :func:`composite_reward`, which calls this.
    """
    table = _weight_table(weights)
    _check_needs(table, answers=answers is not None, hierarchy=hierarchy is not None)
    gold = _accepted(len(completions), answers) if answers is not None else None
    names = defined_rewards(answers=gold is not None, hierarchy=hierarchy is not None)
    per_fn = _score(names, completions, gold, hierarchy)
    used = [(n, w) for n, w in table.items() if w > 0]
    w_sum = sum(table.values())
    total = []
    for i in range(len(completions)):
        v = 0.0
        for n, w in used:
            v += w * per_fn[n][i]
        total.append(min(1.0, max(0.0, v / w_sum)))  # guard: rounding of the mean past 1
    return RewardScores(total=total, per_fn=per_fn)


def composite_reward(weights: RewardWeights | dict | None = None, hierarchy: Hierarchy | None = None) -> RewardFn:
    """The weighted mean ``Σ w_i r_i / Σ w_i`` of the rewards with non-zero weight, TRL-style.

    ``weights`` is a :class:`RewardWeights` (default: R1's accuracy + format) or a dict naming
    exactly the rewards wanted (missing names weigh 0), e.g. ``{"accuracy": 1, "format": 0.5}``.
    The weights and the hierarchy are checked here, once; the scores are ``score_completions``'s.
    """
    table = _weight_table(weights)
    _check_needs(table, answers=True, hierarchy=hierarchy is not None)

    def reward(
        completions: Sequence[object], answers: Sequence | None = None, answer: Sequence | None = None, **kwargs
    ) -> list[float]:
        return score_completions(completions, answers if answers is not None else answer, table, hierarchy).total

    reward.__name__ = reward.__qualname__ = "composite_reward"
    return reward


__all__ = [
    "accuracy_reward",
    "chain_is_valid",
    "completion_text",
    "composite_reward",
    "defined_rewards",
    "faithfulness",
    "format_reward",
    "good_retractions",
    "is_correct",
    "make_faithfulness_reward",
    "parse_completion",
    "ParsedCompletion",
    "Reward",
    "reward_functions",
    "RewardFn",
    "REWARDS",
    "RewardScores",
    "RewardWeights",
    "score_completions",
    "tag_count_reward",
    "trl_reward",
]

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
operator or special token. A leading ``<s>`` and trailing ``</s>``/``<pad>`` strings (with or
without whitespace) are ignored. ``a -> b wait c`` withdraws the step a→b and replaces it with
a→c, so the chain read for faithfulness is ``a -> c``.

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
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

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


@dataclass(frozen=True)
class ParsedCompletion:
    """What a completion says, read leniently, plus whether it is exactly well formed."""

    well_formed: bool  # follows the grammar exactly
    has_think: bool  # holds a <think> ... </think> block
    chains: Chains  # chains of the first think block, retractions applied
    retractions: tuple[tuple[str, str, str], ...]  # (a, withdrawn b, replacement c) per `wait`
    answer: str | None  # the single token of the first answer block, else None
    n_wait: int  # `wait` tokens anywhere in the completion

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


def _strip_specials(text: str) -> str:
    text = text.strip()
    while True:
        before = text
        for tok in (EOS, PAD):
            if text.endswith(tok):
                text = text[: -len(tok)].rstrip()
        for tok in (BOS, PAD):
            if text.startswith(tok):
                text = text[len(tok) :].lstrip()
        if text == before:
            return text


def _well_formed(toks: list[str]) -> bool:
    if len(toks) < 6 or toks[0] != THINK_OPEN or toks[-4:-2] != [THINK_CLOSE, ANSWER_OPEN]:
        return False
    if toks[-1] != ANSWER_CLOSE or toks[-2] in _NOT_ANSWER:
        return False
    segments: list[list[str]] = [[]]
    for t in toks[1:-4]:
        if t == SEP:
            segments.append([])
        else:
            segments[-1].append(t)
    for seg in segments:
        # concept (op concept)*: odd length, concepts at even positions, the first op a step
        if len(seg) % 2 == 0 or any(t in _NOT_CONCEPT for t in seg[::2]):
            return False
        if any(op not in (STEP, WAIT) for op in seg[1::2]) or seg[1:2] not in ([], [STEP]):
            return False
    return True


def _read_chains(body: list[str]) -> tuple[Chains, tuple[tuple[str, str, str], ...]]:
    """Chains of a think body, leniently: a concept right after a concept starts a new chain."""
    chains, retractions, cur, op = [], [], [], None
    for t in body:
        if t == SEP:
            if cur:
                chains.append(cur)
            cur, op = [], None
        elif t in (STEP, WAIT):
            op = t
        else:
            if cur and op == STEP:
                cur.append(t)
            elif cur and op == WAIT and len(cur) >= 2:
                retractions.append((cur[-2], cur[-1], t))
                cur[-1] = t
            else:
                if cur:
                    chains.append(cur)
                cur = [t]
            op = None
    if cur:
        chains.append(cur)
    return tuple(tuple(c) for c in chains), tuple(retractions)


def _block(toks: list[str], open_tag: str, close_tag: str) -> list[str] | None:
    """Tokens between the first ``open_tag`` and the next ``close_tag``; None if absent."""
    if open_tag not in toks:
        return None
    i = toks.index(open_tag)
    try:
        return toks[i + 1 : toks.index(close_tag, i + 1)]
    except ValueError:
        return None


def parse_completion(completion: object) -> ParsedCompletion:
    """Read a completion (string or conversational list); never raises."""
    toks = _strip_specials(completion_text(completion)).split()
    body = _block(toks, THINK_OPEN, THINK_CLOSE)
    chains, retractions = _read_chains(body) if body is not None else ((), ())
    inner = _block(toks, ANSWER_OPEN, ANSWER_CLOSE)
    return ParsedCompletion(
        well_formed=_well_formed(toks),
        has_think=body is not None,
        chains=chains,
        retractions=retractions,
        answer=inner[0] if inner is not None and len(inner) == 1 else None,
        n_wait=toks.count(WAIT),
    )


# ---------------------------------------------------------------- graph checks


def is_correct(parsed: ParsedCompletion, answers: Sequence[str]) -> bool:
    """The answer is one of the accepted ``answers``."""
    return parsed.answer is not None and parsed.answer in answers


def faithfulness(parsed: ParsedCompletion, h: Hierarchy) -> float:
    """Fraction of chain steps (after retractions) that are parent edges of ``h``; 0 if none."""
    steps = parsed.steps
    return sum(h.graph.has_edge(a, b) for a, b in steps) / len(steps) if steps else 0.0


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


# ---------------------------------------------------------------- TRL reward functions


def format_reward(completions: Sequence[object], **kwargs) -> list[float]:
    """1.0 for a completion that follows the grammar exactly, else 0.0."""
    return [float(parse_completion(c).well_formed) for c in completions]


def tag_count_reward(completions: Sequence[object], **kwargs) -> list[float]:
    """0.25 for each of ``<think> </think> <answer> </answer>`` occurring exactly once."""
    out = []
    for c in completions:
        toks = _strip_specials(completion_text(c)).split()
        out.append(0.25 * sum(toks.count(tag) == 1 for tag in TAGS))
    return out


def _accepted(n: int, answers: Sequence | None, answer: Sequence | None) -> list[set[str]]:
    """Per-completion accepted answers from an ``answers`` column (lists or JSON lists) or an
    ``answer`` column (strings)."""
    col = answers if answers is not None else answer
    if col is None:
        raise ValueError("accuracy_reward needs an `answers` (or `answer`) dataset column")
    if len(col) != n:
        raise ValueError(f"{len(col)} gold answers for {n} completions")
    out = []
    for a in col:
        if isinstance(a, str) and a.startswith("["):
            try:  # a JSON-serialised list of answers
                a = json.loads(a)
            except ValueError:
                pass
        out.append({a} if isinstance(a, str) else {str(v) for v in a})
    return out


def accuracy_reward(
    completions: Sequence[object],
    answers: Sequence | None = None,
    answer: Sequence | None = None,
    **kwargs,
) -> list[float]:
    """1.0 if the first answer block holds exactly one token and it is an accepted answer."""
    gold = _accepted(len(completions), answers, answer)
    return [float(is_correct(parse_completion(c), g)) for c, g in zip(completions, gold, strict=True)]


def make_faithfulness_reward(h: Hierarchy) -> RewardFn:
    """``faithfulness_reward(completions, **kwargs)``: fraction of steps that are parent edges."""

    def faithfulness_reward(completions: Sequence[object], **kwargs) -> list[float]:
        return [faithfulness(parse_completion(c), h) for c in completions]

    return faithfulness_reward


@dataclass(frozen=True)
class RewardWeights:
    """Weights w_i of the composite reward Σ w_i r_i / Σ w_i (R1: accuracy + format)."""

    accuracy: float = 1.0  # w_acc, weight of accuracy_reward
    format: float = 1.0  # w_fmt, weight of the strict format_reward
    tag_count: float = 0.0  # weight of the partial-credit tag_count_reward
    faithfulness: float = 0.0  # w_faith, weight of the faithfulness reward (needs the hierarchy)


def composite_reward(weights: RewardWeights | dict | None = None, hierarchy: Hierarchy | None = None) -> RewardFn:
    """The weighted mean ``Σ w_i r_i / Σ w_i`` of the rewards with non-zero weight.

    ``weights`` is a :class:`RewardWeights` (default: R1's accuracy + format) or a dict naming
    exactly the rewards wanted (missing names weigh 0), e.g. ``{"accuracy": 1, "format": 0.5}``.
    """
    names = [f.name for f in fields(RewardWeights)]
    if isinstance(weights, dict):
        if unknown := sorted(set(weights) - set(names)):
            raise ValueError(f"unknown rewards {unknown}; known: {names}")
        table = {n: float(weights.get(n, 0.0)) for n in names}
    else:
        w = weights or RewardWeights()
        table = {n: getattr(w, n) for n in names}
    if any(v < 0 for v in table.values()) or sum(table.values()) <= 0:
        raise ValueError(f"reward weights must be >= 0 with a positive sum, got {table}")
    if table["faithfulness"] > 0 and hierarchy is None:
        raise ValueError("a faithfulness weight needs the hierarchy: composite_reward(w, h)")
    fns: dict[str, RewardFn] = {
        "accuracy": accuracy_reward,
        "format": format_reward,
        "tag_count": tag_count_reward,
    }
    if hierarchy is not None:
        fns["faithfulness"] = make_faithfulness_reward(hierarchy)
    total = sum(table.values())

    def reward(completions: Sequence[object], **kwargs) -> list[float]:
        out = [0.0] * len(completions)
        for name, wi in table.items():
            if wi > 0:
                for i, r in enumerate(fns[name](completions, **kwargs)):
                    out[i] += wi * r
        return [min(1.0, max(0.0, v / total)) for v in out]

    reward.__name__ = "composite_reward"
    return reward

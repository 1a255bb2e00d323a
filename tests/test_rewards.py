import json
import time
from dataclasses import fields

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hyperr1 import rewards
from hyperr1.hierarchy import Hierarchy
from hyperr1.rewards import (
    REWARDS,
    RewardScores,
    RewardWeights,
    accuracy_reward,
    chain_is_valid,
    composite_reward,
    format_reward,
    make_faithfulness_reward,
    parse_completion,
    reward_functions,
    score_completions,
    tag_count_reward,
)
from hyperr1.splits import TasksConfig, build_splits
from hyperr1.tasks import GRAMMAR_TOKENS, SEP, STEP, TAGS, WAIT, make_example
from hyperr1.tokenizer import BOS, EOS, PAD

CFG = TasksConfig(n_train_is_a=60, n_train_ancestor_k=30, n_train_lca=30, n_test=20, retraction_rate=0.5)
DIAMOND = [
    ("a", "r"),
    ("b", "r"),
    ("c", "a"),
    ("c", "b"),
    ("d", "c"),
    ("e", "c"),
    ("f", "a"),
    ("g", "b"),
    ("h", "d"),
    ("i", "d"),
    ("j", "f"),
    ("k", "g"),
    ("l", "e"),
    ("m", "h"),
]
HIERARCHIES = {
    "tree": Hierarchy.balanced_tree(3, 3),
    "random": Hierarchy.random_tree(70, seed=5),
    "dag": Hierarchy.from_edges(DIAMOND),
}


def all_rewards(h):
    """Every TRL-style reward: the module's functions, the registry's, and the composite."""
    return {
        "format": format_reward,
        "tag_count": tag_count_reward,
        "accuracy": accuracy_reward,
        "faithfulness": make_faithfulness_reward(h),
        **{f"registry/{name}": fn for name, fn in reward_functions(h).items()},
        "composite": composite_reward(RewardWeights(1, 1, 1, 1), h),
        "score_completions": lambda c, answers, **cols: (
            score_completions(c, answers, RewardWeights(1, 1, 1, 1), h).total
        ),
    }


@pytest.mark.parametrize("name", sorted(HIERARCHIES))
@pytest.mark.parametrize("suffix", ["", " </s>", "</s>\n", " </s> <pad> <pad>"])
def test_oracle_scores_one_on_every_reward(name, suffix):
    h = HIERARCHIES[name]
    splits, _ = build_splits(h, CFG)
    exs = splits["train"] + splits["test_unseen_pair"] + splits["test_unseen_subject"]
    assert {ex.task for ex in exs} == {"parent", "is_a", "ancestor_k", "lca"}
    assert any(ex.retraction for ex in exs)
    cols = {"answers": [list(ex.answers) for ex in exs], "task": [ex.task for ex in exs]}
    for completions in (
        [ex.completion + suffix for ex in exs],
        [[{"role": "assistant", "content": ex.completion + suffix}] for ex in exs],
    ):
        for rname, fn in all_rewards(h).items():
            assert set(fn(completions, **cols)) == {1.0}, rname
    for ex in exs:
        assert chain_is_valid(parse_completion(ex.completion), ex.task, ex.args, h)


def test_checker_accepts_any_valid_path():
    h = HIERARCHIES["dag"]
    ex = make_example(h, "is_a", ("m", "r"))  # canonical climbs through a; b is as valid
    other = "<think> m -> h -> d -> c -> b -> r </think> <answer> yes </answer>"
    assert other != ex.completion
    faith = make_faithfulness_reward(h)
    assert accuracy_reward([other], answers=[ex.answers]) == faith([other]) == [1.0]
    assert chain_is_valid(parse_completion(other), "is_a", ex.args, h)
    k4 = make_example(h, "ancestor_k", ("m", "4"))
    alt = "<think> m -> h -> d -> c -> b </think> <answer> b </answer>"
    assert accuracy_reward([alt], answers=[k4.answers]) == [1.0]
    assert chain_is_valid(parse_completion(alt), "ancestor_k", k4.args, h)
    lca = make_example(h, "lca", ("l", "j"))
    swapped = "<think> j -> f -> a ; l -> e -> c -> a </think> <answer> a </answer>"
    assert chain_is_valid(parse_completion(swapped), "lca", lca.args, h)


@pytest.mark.parametrize(
    "text",
    [
        "<answer> x </answer>",  # no think block
        "<think> </think> <answer> x </answer>",  # empty chain
        "<think> a -> b </think> <answer> x </answer> extra",
        "<think> a -> b </think> <answer> x y </answer>",
        "<think> a wait b </think> <answer> b </answer>",  # nothing to withdraw
        "<think> a -> -> b </think> <answer> b </answer>",
        "<think> a -> b ; </think> <answer> b </answer>",
        "<think> <think> a -> b </think> </think> <answer> b </answer>",
        "<think> a -> yes </think> <answer> yes </answer>",
        "<think> a -> b </think> <answer> -> </answer>",
        "<think>a -> b</think> <answer> b </answer>",  # tokens are whitespace separated
        "<s> <think> a -> b </think> <answer> b </answer> </s> trailing",
    ],
)
def test_format_rejects(text):
    assert format_reward([text]) == [0.0]


def test_format_accepts_grammar_variants():
    ok = [
        "<think> a -> b </think> <answer> b </answer>",
        "  <think> a -> b wait c -> d ; e -> d </think> <answer> d </answer></s>",
        "<think> a </think> <answer> no </answer>",  # a chain may have no step
        "<s> <think> a -> b wait c wait d </think>\n<answer> d </answer> </s>",
    ]
    assert format_reward(ok) == [1.0] * len(ok)


def test_tag_count_partial_credit():
    texts = ["", "<answer> yes </answer>", "<think> <think> </think> <answer> x </answer>"]
    assert tag_count_reward(texts) == [0.0, 0.5, 0.75]


def test_accuracy_columns_and_parsing():
    comps = ["<think> a -> b </think> <answer> b </answer>", "<answer> b c </answer>", "b"]
    assert accuracy_reward(comps, answer=["b", "b", "b"]) == [1.0, 0.0, 0.0]
    assert accuracy_reward(comps[:1], answers=[json.dumps(["a", "b"])]) == [1.0]
    assert accuracy_reward(["<answer> x </answer> <answer> b </answer>"], answer=["b"]) == [0.0]
    with pytest.raises(ValueError):
        accuracy_reward(comps)
    with pytest.raises(ValueError):
        accuracy_reward(comps, answer=["b"])


def test_one_string_is_not_a_batch_of_characters():
    text = "<think> a -> b </think> <answer> b </answer>"
    assert format_reward([text]) == [1.0]
    for call in (lambda: format_reward(text), lambda: accuracy_reward(text, answer=["b"] * len(text))):
        with pytest.raises(TypeError, match="one string"):
            call()
    with pytest.raises(TypeError, match="one string"):
        composite_reward()(text, answers=["b"] * len(text))


def test_faithfulness_applies_retractions():
    h = Hierarchy.balanced_tree(2, 3)
    faith = make_faithfulness_reward(h)
    good = "<think> n0.1.0.1 -> n0.0 wait n0.1.0 -> n0.1 -> n0 </think> <answer> yes </answer>"
    assert faith([good]) == [1.0]
    half = "<think> n0.1.0.1 -> n0.1.0 -> n0.0 -> n0 </think> <answer> yes </answer>"
    assert faith([half]) == [pytest.approx(2 / 3)]
    assert faith(["<answer> yes </answer>", "", "<think> n0 </think>"]) == [0.0, 0.0, 0.0]
    p = parse_completion(good)
    assert p.retractions == (("n0.1.0.1", "n0.0", "n0.1.0"),) and p.n_wait == 1


def test_composite_weights():
    h = Hierarchy.balanced_tree(2, 2)
    text = ["<answer> n0 </answer>"]  # right answer, bad format
    assert composite_reward()(text, answer=["n0"]) == [0.5]  # R1: (accuracy + format) / 2
    assert composite_reward({"accuracy": 3, "format": 1})(text, answer=["n0"]) == [0.75]
    assert composite_reward({"format": 1, "accuracy": 0})(text) == [0.0]
    assert composite_reward().__name__ == "composite_reward"
    with pytest.raises(ValueError):
        composite_reward({"faithfulness": 1.0})
    with pytest.raises(ValueError):
        composite_reward({"accuracy": 0, "format": 0})
    assert composite_reward({"faithfulness": 1.0}, h)(text) == [0.0]


_TOKENS = [*GRAMMAR_TOKENS, "</s>", "<s>", "<pad>", "<unk>", "n0", "n0.1", "n0.1.0", "", "é", "🦒"]
_SOUP = st.lists(st.sampled_from(_TOKENS), max_size=60).map(" ".join)
_GLUED = st.lists(st.sampled_from([*_TOKENS, " ", "\n", "<", "/s>", "pad>"]), max_size=60).map("".join)
_NESTED = st.recursive(
    st.sampled_from(["n0", "n0.1", "yes", "", "->"]),
    lambda inner: st.builds(
        lambda t, a, b: f"<{t}> {a} </{t}> {b}", st.sampled_from(["think", "answer"]), inner, inner
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(st.text(max_size=300), _SOUP, _GLUED, _NESTED, _SOUP.map(lambda s: s * 60), _GLUED.map(lambda s: s * 500))
)
@example("")
@example("<think> " + "n0 -> " * 2000 + "n0.1 </think> <answer> yes </answer>")
@example("<answer>" * 5000)
@example("</s>" * 50_000)
@example("<s> <pad> " * 20_000 + "<think> n0.1 -> n0 </think> <answer> n0 </answer>" + "<pad></s> " * 20_000)
@example("__import__('os').system('false')")
def test_every_reward_is_defined_in_unit_interval(text):
    h = HIERARCHIES["tree"]
    for completions in ([text], [[{"role": "assistant", "content": text}]], [None], [42]):
        for fn in all_rewards(h).values():
            (r,) = fn(completions, answers=[["n0", "yes"]])
            assert isinstance(r, float) and 0.0 <= r <= 1.0


# ------------------------------------------------------------------ specials, grammar, linear time


def _strip_specials_by_slicing(text: str) -> list[str]:
    """The specification: remove ``</s>``/``<pad>`` from the end and ``<s>``/``<pad>`` from the
    start of the text one at a time, with the whitespace beside them, then split. (The reward
    module did exactly this once; it is quadratic, so only short texts are checked against it.)"""
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
            return text.split()


_FRAGMENTS = [BOS, EOS, PAD, "<", ">", "/", "s", "s>", "</", "pad>", "d>", "<pa", " ", "\n", "\u2028", "\x85", "x"]


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=30).map("".join))
@example("<s><pad> <think> a -> b </think> <answer> b </answer></s><pad></s>")
@example("x</s> </s>")
@example("<pad>")
def test_special_tokens_are_stripped_as_the_string_specification_says(text):
    assert rewards._strip_specials(text.split()) == _strip_specials_by_slicing(text)


def _well_formed_by_segments(toks: list[str]) -> bool:
    """The grammar read literally: split the think body at `;`, check every chain on its own."""
    if len(toks) < 6 or toks[0] != "<think>" or toks[-4:-2] != ["</think>", "<answer>"] or toks[-1] != "</answer>":
        return False
    if toks[-2] in (*TAGS, STEP, WAIT, SEP, BOS, EOS, PAD, "<unk>"):
        return False
    segments, cur = [], []
    for t in toks[1:-4]:
        if t == SEP:
            segments.append(cur)
            cur = []
        else:
            cur.append(t)
    segments.append(cur)
    for seg in segments:
        concepts, ops = seg[::2], seg[1::2]
        if not seg or len(seg) % 2 == 0 or ops[:1] == [WAIT]:
            return False
        if any(c in GRAMMAR_TOKENS or c in (BOS, EOS, PAD, "<unk>") for c in concepts) or any(
            op not in (STEP, WAIT) for op in ops
        ):
            return False
    return True


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from([SEP, STEP, WAIT, "a", "b", "yes", "<think>", "</think>", EOS]), max_size=14))
@example(["a", SEP, "b", WAIT, "c"])
@example(["a", STEP, "b", SEP, "c", STEP, "d", WAIT, "e"])
def test_format_agrees_with_the_grammar_read_segment_by_segment(body):
    for answer in ("a", "yes", STEP):
        toks = ["<think>", *body, "</think>", "<answer>", answer, "</answer>"]
        assert format_reward([" ".join(toks)]) == [float(_well_formed_by_segments(toks))], toks


MB = 2**20
ADVERSARIAL = {  # 1 MB texts that were slow (the first three took 2 s to 27 s per reward) or could be
    "eos_run": "<think> a -> b </think> <answer> b </answer> " + "</s> " * (MB // 5),
    "eos_glued": "<think> a -> b </think> <answer> b </answer>" + "</s>" * (MB // 4),
    "bos_pad_run": "<s> <pad> " * (MB // 10) + "<think> a -> b </think> <answer> b </answer>",
    "open_tags": "<answer> " * (MB // 9),
    "long_chain": "<think> " + "n0.1 -> " * (MB // 8) + "n0 </think> <answer> n0 </answer>",
    "many_chains": "<think> " + "n0 ; " * (MB // 5) + "n0 </think> <answer> n0 </answer>",
    "concept_soup": "<think> " + "n0 " * (MB // 3) + "</think>",  # 350,000 one-concept chains
    "retractions": "<think> n0.1.0 -> n0.0 " + "wait n0.1 " * (MB // 10) + "</think> <answer> n0.1 </answer>",
}
CEILING_S = 2.0  # a ceiling, not a benchmark: linear code takes 15-100 ms here (benchmarks/bench_rewards.py)


@pytest.mark.parametrize("case", sorted(ADVERSARIAL))
def test_every_reward_scores_a_megabyte_under_a_ceiling(case):
    text = ADVERSARIAL[case]
    h = HIERARCHIES["tree"]
    for name, fn in all_rewards(h).items():
        t0 = time.perf_counter()
        (r,) = fn([text], answers=[["n0", "b"]])
        elapsed = time.perf_counter() - t0
        assert 0.0 <= r <= 1.0
        assert elapsed < CEILING_S, f"{name} took {elapsed:.1f} s on 1 MB of {case}: quadratic again?"


def test_reward_of_a_long_valid_chain():
    h = Hierarchy.from_edges([(f"v{i}", f"v{i + 1}") for i in range(20_000)])
    text = "<s> <think> " + " -> ".join(f"v{i}" for i in range(20_001)) + " </think> <answer> v20000 </answer></s>"
    scores = score_completions([text], [["v20000"]], RewardWeights(1, 1, 1, 1), h)
    assert scores.per_fn == {"accuracy": [1.0], "format": [1.0], "tag_count": [1.0], "faithfulness": [1.0]}


# ------------------------------------------------------------------ one registry, one parse


def test_registry_is_the_one_list_of_rewards():
    assert list(REWARDS) == [f.name for f in fields(RewardWeights)]
    h = HIERARCHIES["tree"]
    assert list(reward_functions(h)) == list(REWARDS)
    assert list(reward_functions()) == ["accuracy", "format", "tag_count"]  # faithfulness needs the graph
    assert {fn.__name__ for fn in reward_functions(h).values()} == {f"{n}_reward" for n in REWARDS}
    assert format_reward.__name__ == "format_reward" and make_faithfulness_reward(h).__name__ == "faithfulness_reward"
    with pytest.raises(ValueError, match="needs the hierarchy"):
        rewards.trl_reward("faithfulness")
    with pytest.raises(ValueError, match="unknown reward"):
        rewards.trl_reward("length")


_WEIGHTS = st.builds(RewardWeights, *[st.sampled_from([0.0, 0.5, 1.0, 3.0])] * 4).filter(
    lambda w: w.accuracy + w.format + w.tag_count + w.faithfulness > 0
)
_COMPLETIONS = st.lists(st.one_of(_SOUP, _GLUED, _NESTED, st.text(max_size=40)), min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(_COMPLETIONS, _WEIGHTS, st.sampled_from(sorted(HIERARCHIES)), st.data())
def test_score_completions_equals_the_individual_rewards(completions, weights, hname, data):
    h = HIERARCHIES[hname]
    one_gold = st.lists(st.sampled_from(["n0", "n0.1", "yes", "a", "r"]), min_size=1, max_size=3)
    gold = [data.draw(one_gold) for _ in completions]
    scores = score_completions(completions, gold, weights, h)
    assert isinstance(scores, RewardScores) and list(scores.per_fn) == list(REWARDS)
    individual = {name: fn(completions, answers=gold) for name, fn in reward_functions(h).items()}
    assert scores.per_fn == individual
    assert scores.per_fn["faithfulness"] == make_faithfulness_reward(h)(completions)
    assert scores.total == composite_reward(weights, h)(completions, answers=gold)  # bit for bit
    w = {f.name: getattr(weights, f.name) for f in fields(RewardWeights)}
    expected = [sum(w[n] * individual[n][i] for n in w) / sum(w.values()) for i in range(len(completions))]
    assert scores.total == pytest.approx(expected, abs=1e-12)
    assert all(0.0 <= t <= 1.0 for t in scores.total)


def test_score_completions_defines_what_it_can():
    text = ["<answer> n0 </answer>"]
    assert list(score_completions(text, None, {"format": 1}).per_fn) == ["format", "tag_count"]
    assert list(score_completions(text, ["n0"], None).per_fn) == ["accuracy", "format", "tag_count"]
    assert score_completions(text, ["n0"]).total == [0.5]  # R1's default: (accuracy + format) / 2
    with pytest.raises(ValueError, match="answers"):
        score_completions(text, None, RewardWeights())
    with pytest.raises(ValueError, match="hierarchy"):
        score_completions(text, ["n0"], {"faithfulness": 1.0})
    with pytest.raises(ValueError, match="1 gold answers for 2"):
        score_completions(text * 2, ["n0"], RewardWeights())
    with pytest.raises(ValueError, match=">= 0"):
        score_completions(text, ["n0"], {"accuracy": float("nan")})
    empty = RewardScores(total=[], per_fn={"accuracy": [], "format": [], "tag_count": []})
    assert score_completions([], [], RewardWeights()) == empty


def test_each_completion_is_parsed_once(monkeypatch):
    calls = []
    real = rewards.parse_completion

    def counting(completion):
        calls.append(completion)
        return real(completion)

    monkeypatch.setattr(rewards, "parse_completion", counting)
    h = HIERARCHIES["tree"]
    completions = ["<think> n0.1 -> n0 </think> <answer> n0 </answer>", "", "<answer> yes </answer>"]
    scores = score_completions(completions, [["n0"]] * 3, RewardWeights(1, 1, 1, 1), h)
    assert len(calls) == 3 and len(scores.per_fn) == 4  # four rewards and a total from three parses
    calls.clear()
    composite_reward(RewardWeights(1, 1, 1, 1), h)(completions, answers=[["n0"]] * 3)
    assert len(calls) == 3
    calls.clear()
    format_reward(completions)
    assert len(calls) == 3

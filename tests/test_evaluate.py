import json
import random

import numpy as np
import pytest

from hyperr1.evaluate import (
    METRICS,
    EvalConfig,
    bootstrap_ci,
    evaluate,
    flat_metrics,
    paired_lift,
    score_completion,
    write_results,
)
from hyperr1.hierarchy import Hierarchy
from hyperr1.rewards import parse_completion
from hyperr1.splits import TasksConfig, build_splits
from hyperr1.tasks import render_completion

FAST = EvalConfig(k=4, n_resamples=200, batch_size=64)


@pytest.fixture(scope="module")
def world():
    h = Hierarchy.balanced_tree(3, 4)
    cfg = TasksConfig(n_train_is_a=200, n_train_ancestor_k=100, n_train_lca=100, n_test=60, retraction_rate=0.2)
    splits, _ = build_splits(h, cfg)
    return h, {k: splits[k] for k in ("train", "test_unseen_pair", "test_unseen_subject")}


def table_policy(table: dict[str, str]):
    """A policy that answers every prompt from a fixed table (greedy and sampled alike)."""

    def policy(prompts, *, num_samples, greedy, temperature, top_p):
        assert greedy == (temperature == 0.0) and (greedy or (temperature, top_p) == (0.6, 0.95))
        return [[table[p] + " </s>"] * num_samples for p in prompts]

    return policy


def value(results, split, metric, group="overall"):
    return results["splits"][split][group][metric]["value"]


def test_oracle_scores_one(world, tmp_path):
    h, splits = world
    oracle = table_policy({ex.prompt: ex.completion for exs in splits.values() for ex in exs})
    res = evaluate(oracle, splits, h, FAST)
    for split in splits:
        groups = [res["splits"][split]["overall"], *res["splits"][split]["by_hops"].values()]
        groups += res["splits"][split]["by_task"].values()
        for g in groups:
            for m in ("accuracy", "pass@1", "maj@k", "format", "faithfulness", "right_valid_chain"):
                assert g[m]["value"] == 1.0 and g[m]["ci"] == [1.0, 1.0], (split, m)
            assert g["right_invalid_chain"]["value"] == 0.0
    train = splits["train"]
    assert value(res, "train", "reflection_rate") == pytest.approx(np.mean([ex.retraction for ex in train]))
    assert value(res, "train", "good_retractions") == 1.0
    assert value(res, "test_unseen_pair", "good_retractions") is None  # no retraction at all
    path = write_results(res, tmp_path / "eval" / "oracle.json")
    assert json.loads(path.read_text()) == res
    flat = flat_metrics(res)
    assert flat["eval/test_unseen_pair/accuracy"] == 1.0
    assert "eval/test_unseen_subject/pass@1@hops=2" in flat
    assert "eval/train/maj@k@task=lca" in flat


def test_constant_yes(world):
    h, splits = world
    res = evaluate(lambda p, **kw: [["<answer> yes </answer>"] * kw["num_samples"]] * len(p), splits, h, FAST)
    for split in splits:
        by_task = res["splits"][split]["by_task"]
        assert by_task["is_a"]["accuracy"]["value"] == 0.5  # is_a is balanced
        assert by_task["is_a"]["pass@1"]["value"] == 0.5 == by_task["is_a"]["maj@k"]["value"]
        for task in ("ancestor_k", "lca"):
            assert by_task[task]["accuracy"]["value"] == 0.0
        n_is_a = by_task["is_a"]["n"]
        assert value(res, split, "accuracy") == pytest.approx(0.5 * n_is_a / len(splits[split]))
        assert value(res, split, "format") == 0.0 and value(res, split, "faithfulness") == 0.0
        assert value(res, split, "right_valid_chain") == 0.0
        assert value(res, split, "right_invalid_chain") == value(res, split, "accuracy")
        lo, hi = by_task["is_a"]["accuracy"]["ci"]
        assert lo < 0.5 < hi


@pytest.mark.parametrize("q", [0.0, 0.3, 1.0])
def test_corrupted_oracle_has_known_faithfulness(world, q):
    """Replace the last concept of the first chain by a non-parent in a fraction q of targets:
    exactly one of that example's n steps turns wrong, so faithfulness = 1 - mean(c_i / n_i)."""
    h, splits = world
    exs = splits["test_unseen_pair"]
    rng = random.Random(0)
    hit = set(rng.sample(range(len(exs)), round(q * len(exs))))
    table, expected = {}, []
    for i, ex in enumerate(exs):
        chains = list(parse_completion(ex.completion).chains)
        if i in hit:
            *head, a, _ = chains[0]
            w = next(v for v in h.nodes if v not in h.parents(a) and v != a and h.parents(v))
            chains[0] = (*head, a, w)
        table[ex.prompt] = render_completion(tuple(chains), ex.answer)
        expected.append(1 - (i in hit) / ex.hops)
    res = evaluate(table_policy(table), {"t": exs}, h, FAST)
    assert value(res, "t", "faithfulness") == pytest.approx(np.mean(expected), abs=1e-12)
    assert value(res, "t", "right_invalid_chain") == pytest.approx(len(hit) / len(exs))
    assert value(res, "t", "right_valid_chain") == pytest.approx(1 - len(hit) / len(exs))
    assert value(res, "t", "accuracy") == 1.0 and value(res, "t", "format") == 1.0


def test_pass_at_1_and_majority_from_samples(world):
    h, splits = world
    exs = splits["test_unseen_subject"][:30]
    by_prompt = {ex.prompt: ex for ex in exs}

    def wrong(ex):
        return "<answer> no </answer>" if ex.answer == "yes" else "<answer> n0 </answer>"

    def policy(prompts, *, num_samples, greedy, temperature, top_p):
        out = []
        for p in prompts:
            ex = by_prompt[p]
            if greedy:
                out.append([wrong(ex)])
            else:  # 3 right, 1 wrong in every group of 4
                out.append([ex.completion if j % 4 else wrong(ex) for j in range(num_samples)])
        return out

    res = evaluate(policy, {"t": exs}, h, EvalConfig(k=4, n_resamples=200))
    assert value(res, "t", "accuracy") == 0.0
    assert value(res, "t", "pass@1") == 0.75 and value(res, "t", "maj@k") == 1.0


def test_score_completion_and_reflection():
    h = Hierarchy.balanced_tree(2, 3)
    from hyperr1.tasks import make_example

    ex = make_example(h, "is_a", ("n0.1.0.1", "n0"))
    bad_fix = "<think> n0.1.0.1 -> n0.1.0 wait n0.0 -> n0 </think> <answer> yes </answer>"
    s = score_completion(ex, bad_fix, h)
    assert s.reflected and s.retractions == 1 and s.good_retractions == 0
    assert s.correct and not s.valid_chain and s.faithfulness == 0.5
    assert not score_completion(ex, "", h).correct


def test_greedy_only_and_policy_validation(world):
    h, splits = world
    exs = splits["test_unseen_pair"][:10]
    oracle = table_policy({ex.prompt: ex.completion for ex in exs})
    res = evaluate(oracle, exs, h, EvalConfig(k=0, n_resamples=100))
    assert value(res, "all", "accuracy") == 1.0 and value(res, "all", "pass@1") is None
    assert set(res["splits"]["all"]["overall"]) == {*METRICS, "n"}
    with pytest.raises(ValueError, match="completions"):
        evaluate(lambda p, **kw: [["x"]], exs, h, FAST)


def test_bootstrap_ci_edge_cases():
    assert bootstrap_ci([0.3]) == (0.3, 0.3)
    assert bootstrap_ci([1.0] * 50) == (1.0, 1.0)
    x = np.random.default_rng(0).integers(0, 2, 200).astype(float)
    a = bootstrap_ci(x, n_resamples=500, seed=3)
    assert a == bootstrap_ci(x, n_resamples=500, seed=3)  # deterministic
    assert a[0] < x.mean() < a[1] and a[1] - a[0] < 0.2
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_paired_lift_is_the_mean_per_example_gain(world):
    """Oracle after, constant "yes" before: the lift is 1 − accuracy(yes) on the same examples, and
    its paired CI is the bootstrap of the per-example differences; mismatched results are refused."""
    h, splits = world
    oracle = table_policy({ex.prompt: ex.completion for exs in splits.values() for ex in exs})
    yes = evaluate(lambda p, **kw: [["<answer> yes </answer>"] * kw["num_samples"]] * len(p), splits, h, FAST)
    best = evaluate(oracle, splits, h, FAST)
    lift = paired_lift(yes, best, FAST)
    for split in splits:
        assert best["splits"][split]["correct"] == [1] * len(splits[split])
        assert lift[split]["value"] == pytest.approx(1 - value(yes, split, "accuracy"))
        lo, hi = lift[split]["ci"]
        assert 0 < lo <= lift[split]["value"] <= hi <= 1
    assert paired_lift(best, best, FAST)["train"] == {"value": 0.0, "ci": [0.0, 0.0], "n": len(splits["train"])}
    del yes["splits"]["train"]["correct"]
    with pytest.raises(ValueError, match="train"):
        paired_lift(yes, best, FAST)

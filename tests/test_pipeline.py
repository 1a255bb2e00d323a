"""``hyperr1 train`` end to end at a tiny budget, its resume, and its config errors."""

import json

import pytest
from tiny_world import write_tiny_config
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from hyperr1.cli import main
from hyperr1.decoding import TextPolicy
from hyperr1.evaluate import EvalConfig, evaluate
from hyperr1.hierarchy import load_hierarchy
from hyperr1.pipeline import TrainConfig, load_train_config
from hyperr1.splits import TEST_SPLITS, build_splits


@pytest.fixture()
def tiny_config(tmp_path):
    return write_tiny_config(tmp_path)


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_train_end_to_end_and_resume(tiny_config, capsys):
    cfg, run = tiny_config
    assert main(["train", "--config", str(cfg), "--quiet"]) == 0
    for name in (
        "config.json",
        "results.json",
        "eval_warm_start.json",
        "eval_grpo.json",
        "tokenizer",
        "warm_start/model/model.safetensors",
        "grpo/metrics.jsonl",
        "grpo/samples.jsonl",
        "policy/model.safetensors",
    ):
        assert (run / name).exists(), name
    results = json.loads((run / "results.json").read_text())
    assert results["grpo_steps"] == 4
    # the headline numbers are those of the saved models: re-evaluating them gives the same accuracy
    train_cfg = load_train_config(cfg).resolved()
    h = load_hierarchy(train_cfg.data)
    splits, _ = build_splits(h, train_cfg.tasks)
    held_out = {name: [ex for ex in splits[name] if ex.hops >= 3] for name in TEST_SPLITS}
    tok = AutoTokenizer.from_pretrained(run / "policy")
    for phase, path in (("warm_start", run / "warm_start" / "model"), ("grpo", run / "policy")):
        model = AutoModelForSeq2SeqLM.from_pretrained(path)
        again = evaluate(TextPolicy(model, tok, max_new_tokens=24), held_out, h, EvalConfig(k=0))
        for split in TEST_SPLITS:
            assert results[phase][split]["accuracy"]["value"] == again["splits"][split]["overall"]["accuracy"]["value"]
    # the final policy answers through the plain Hugging Face interface (the README's snippet)
    prompt = held_out["test_unseen_pair"][0].prompt
    out = model.generate(**tok(prompt, return_tensors="pt"), max_new_tokens=24)
    greedy = TextPolicy(model, tok, max_new_tokens=24)([prompt], num_samples=1, greedy=True)[0][0]
    assert tok.decode(out[0], skip_special_tokens=True).split() == greedy.split()  # generate() = lean sampler
    saved = json.loads((run / "config.json").read_text())
    assert saved["config"]["grpo"]["steps"] == 4 and saved["meta"]["hyperr1_version"] and saved["resumes"] == []
    assert saved["meta"]["command"] and saved["meta"]["start_time"]
    ckpt = json.loads((run / "grpo" / "checkpoints" / "step_000004" / "state.json").read_text())
    assert ckpt["config"] == saved["config"]  # every checkpoint carries the resolved config
    assert [r["step"] for r in _rows(run / "grpo" / "metrics.jsonl")] == [1, 2, 3, 4]
    # resume a finished run with a longer budget: it continues from step 4 and reuses the warm start
    assert main(["train", "--config", str(cfg), "--quiet", "--resume", "--set", "grpo.steps=6"]) == 0
    assert [r["step"] for r in _rows(run / "grpo" / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    record = json.loads((run / "config.json").read_text())
    assert record["config"] == saved["config"] and record["meta"] == saved["meta"]  # the first record stays
    assert [r["overrides"] for r in record["resumes"]] == [{"grpo.steps": [4, 6]}]


def test_resume_refuses_other_config_changes(tiny_config, capsys):
    cfg, run = tiny_config
    assert main(["train", "--config", str(cfg), "--quiet", "--set", "grpo.steps=2"]) == 0
    capsys.readouterr()
    assert main(["train", "--config", str(cfg), "--quiet", "--resume", "--set", "grpo.lr=0.01"]) == 2
    err = capsys.readouterr().err
    assert "would change ['grpo.lr']" in err and "0.001 -> 0.01" in err


def test_a_record_older_than_the_schedule_resumes_as_constant(tiny_config, capsys):
    """Runs recorded before the warm-start schedule existed ran at a constant η: resuming one does
    not count the missing keys as changes, asking for a warmup on it does."""
    cfg, run = tiny_config
    assert main(["train", "--config", str(cfg), "--quiet", "--set", "grpo.steps=2"]) == 0
    record = json.loads((run / "config.json").read_text())
    for key in ("warmup_steps", "schedule", "restarts"):
        del record["config"]["sft"][key]
    (run / "config.json").write_text(json.dumps(record))
    assert main(["train", "--config", str(cfg), "--quiet", "--resume", "--set", "grpo.steps=3"]) == 0
    capsys.readouterr()
    assert main(["train", "--config", str(cfg), "--quiet", "--resume", "--set", "sft.warmup_steps=5"]) == 2
    assert "would change ['sft.warmup_steps']" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg), "--quiet", "--resume", "--set", "sft.restarts=2"]) == 2
    assert "would change ['sft.restarts']" in capsys.readouterr().err


def test_tensorboard_gets_the_documented_scalars(tiny_config):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg, run = tiny_config
    assert main(["train", "--config", str(cfg), "--quiet"]) == 0
    events = EventAccumulator(str(run / "grpo" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    documented = ["loss/total", "loss/policy", "loss/kl", "reward/total", "reward/accuracy", "reward/format"]
    documented += ["grpo/kl", "grpo/clip_frac", "rate/format", "optim/lr", "curriculum/max_hops"]
    documented += ["guard/episodes", "eval/test_unseen_pair/accuracy", "eval/test_unseen_subject/format"]
    assert set(documented) <= tags, set(documented) - tags
    rows = _rows(run / "grpo" / "metrics.jsonl")
    logged = [(e.step, e.value) for e in events.Scalars("reward/total")]
    assert logged == [(r["step"], pytest.approx(r["reward/total"])) for r in rows]


@pytest.mark.parametrize(
    "override, message",
    [
        ("grpo.stepz=3", "unknown keys ['stepz']"),
        ("grpo.steps='many'", "config.grpo.steps: expected int"),
        ("model.head='lorentz'", "unknown head"),
        ("grpo.loss_type='ppo'", "unknown loss_type"),
        ("nonsense", "section.key=value"),
    ],
)
def test_bad_configs_are_clear_errors(tiny_config, capsys, override, message):
    cfg, _ = tiny_config
    assert main(["train", "--config", str(cfg), "--set", override]) == 2
    assert message in capsys.readouterr().err


def test_missing_config_file_and_unknown_dataset(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--set", "data='dinosaurs'", "--set", f"out='{tmp_path}'"]) == 2
    assert "dinosaurs" in capsys.readouterr().err


def test_shipped_configs_load():
    for name in ("mammals_poincare", "mammals_euclidean"):
        cfg = load_train_config(f"experiments/configs/{name}.toml")
        assert isinstance(cfg, TrainConfig) and cfg.model.head == name.split("_")[1]


def test_warm_start_from_another_run(tiny_config, capsys):
    cfg, run = tiny_config
    assert main(["train", "--config", str(cfg), "--quiet", "--set", "grpo.steps=2"]) == 0
    # a GRPO-only variant reuses the finished warm start: same weights, recorded in its run record
    variant_args = ["--name", "variant", "--set", "grpo.steps=2", "--set", "grpo.lr=2e-4"]
    variant_args += ["--warm-start-from", str(run)]
    assert main(["train", "--config", str(cfg), "--quiet", *variant_args]) == 0
    variant = run.parent / "variant"
    for f in ("warm_start/model/model.safetensors", "warm_start/metrics.jsonl"):
        assert (variant / f).read_bytes() == (run / f).read_bytes()
    assert json.loads((variant / "config.json").read_text())["warm_start_from"]["run"] == str(run)
    assert [r["step"] for r in _rows(variant / "grpo" / "metrics.jsonl")] == [1, 2]
    capsys.readouterr()
    # a variant whose warm start would differ is refused, naming the key
    other_args = ["--name", "other", "--set", "sft.epochs=4", "--warm-start-from", str(run)]
    assert main(["train", "--config", str(cfg), "--quiet", *other_args]) == 2
    assert "sft.epochs" in capsys.readouterr().err


def test_split_seed_fixes_the_task_splits_alone():
    """Runs of several seeds can share one test set: split_seed seeds the splits, seed the rest."""
    own = TrainConfig(seed=3).resolved()
    assert own.tasks.seed == own.sft.seed == own.grpo.seed == 3
    shared = TrainConfig(seed=3, split_seed=0).resolved()
    assert shared.tasks.seed == 0 and shared.sft.seed == shared.grpo.seed == 3

"""``hyperr1 train`` end to end at a tiny budget, its resume, and its config errors."""

import json

import pytest

from hyperr1.cli import main
from hyperr1.hierarchy import Hierarchy
from hyperr1.pipeline import TrainConfig, load_train_config

TINY = """
name = "tiny"
seed = 0
[model]
d_model = 32
ffn_dim = 64
head_dim = 4
[tasks]
n_train_is_a = 100
n_train_ancestor_k = 50
n_train_lca = 50
n_test = 20
[sft]
epochs = 3
batch_size = 32
lr = 1e-2
[grpo]
steps = 4
prompts_per_step = 4
num_generations = 4
max_completion_length = 24
eval_every = 2
eval_examples = 8
checkpoint_every = 2
[eval]
k = 2
n_resamples = 50
"""


@pytest.fixture()
def tiny_config(tmp_path):
    tsv = tmp_path / "tree.tsv"
    Hierarchy.balanced_tree(3, 3).to_tsv(tsv)
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(f'data = "{tsv}"\nout = "{tmp_path / "runs"}"\n' + TINY)
    return cfg, tmp_path / "runs" / "tiny"


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
    ):
        assert (run / name).exists(), name
    results = json.loads((run / "results.json").read_text())
    assert results["grpo_steps"] == 4
    for phase in ("warm_start", "grpo"):
        for split in ("test_unseen_pair", "test_unseen_subject"):
            acc = results[phase][split]["accuracy"]
            assert 0 <= acc["value"] <= 1 and acc["ci"][0] <= acc["value"] <= acc["ci"][1]
    saved = json.loads((run / "config.json").read_text())
    assert saved["config"]["grpo"]["steps"] == 4 and saved["meta"]["hyperr1_version"]
    rows = [json.loads(line) for line in (run / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    # resume a finished run with a longer budget: it continues from step 4 and reuses the warm start
    assert main(["train", "--config", str(cfg), "--quiet", "--resume", "--set", "grpo.steps=6"]) == 0
    rows = [json.loads(line) for line in (run / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]


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

"""The experiment scripts' own logic: sweep files, the paired statistics, tables from rows."""

import json
import sys
from pathlib import Path

import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import distill_mammals  # noqa: E402
import mammals_heads  # noqa: E402

from hyperr1.distill_pipeline import DistillRunConfig  # noqa: E402
from hyperr1.pipeline import load_config  # noqa: E402


def test_shipped_sweeps_load_and_pair_every_seed():
    sweep = mammals_heads.load_sweep(mammals_heads.CONFIGS / "heads_sweep.toml")
    names = [r.name for r in sweep.runs]
    assert len(names) == len(set(names)) == 40
    for run in sweep.runs:  # every Poincaré run has its Euclidean twin: same seed and dim
        twin = "euclidean" if run.label == "poincare" else "poincare"
        assert f"{twin}_d{run.dim}_s{run.seed}" in names
        assert f"model.head_dim={run.dim}" not in run.overrides  # set by the runner, after the overrides
    tune = mammals_heads.load_sweep(mammals_heads.CONFIGS / "heads_tune_euclidean.toml")
    assert {r.seed for r in tune.runs}.isdisjoint({r.seed for r in sweep.runs})  # tuned on other seeds
    spec, jobs = distill_mammals.load_jobs(distill_mammals.CONFIGS / "distill_sweep.toml")
    assert len({j.name for j in jobs}) == len(jobs) and {j.setup for j in jobs} >= {"seq_kd", "word_kd", "gkd"}
    _, long = distill_mammals.load_jobs(distill_mammals.CONFIGS / "distill_sweep_long.toml")
    assert {j.setup for j in long} == {"sft_only+student_grpo", "word_kd"} and len(long) == 6
    chain_spec, chain = distill_mammals.load_jobs(distill_mammals.CONFIGS / "distill_sweep_chain.toml")
    for job in (j for j in chain if j.setup == "sft_word_kd"):  # starts from its own seed's warm start
        start = distill_mammals.warm_start_of(chain_spec, job.seed)
        assert f"student_s{job.seed}" in str(start) and f"init_checkpoint={json.dumps(str(start))}" in job.overrides
        assert [j.name for j in chain].index(f"student_s{job.seed}") < [j.name for j in chain].index(job.name)


@pytest.mark.parametrize("sweep", sorted(p.name for p in distill_mammals.CONFIGS.glob("distill_sweep*.toml")))
def test_every_shipped_distillation_job_resolves_to_a_valid_config(sweep):
    """Each job's overrides name real fields with valid values (a typo fails here, not hours in)."""
    spec, jobs = distill_mammals.load_jobs(distill_mammals.CONFIGS / sweep)
    for job in (j for j in jobs if j.kind == "distill"):
        assert job.setup in distill_mammals.SETUP_ORDER
        overrides = [f"teacher={json.dumps(spec['teacher'])}", *job.overrides]
        cfg = load_config(DistillRunConfig, distill_mammals.CONFIGS / spec["distill_config"], overrides)
        cfg.validate()


def test_a_student_table_changes_the_student_of_every_distillation_run(tmp_path):
    sweep = (distill_mammals.CONFIGS / "distill_sweep.toml").read_text()
    wide = sweep.replace("[distill_overrides]", "[student]\nhead_dim = 8\n\n[distill_overrides]")
    (tmp_path / "wide.toml").write_text(wide)
    _, jobs = distill_mammals.load_jobs(tmp_path / "wide.toml")
    distilled = [j for j in jobs if j.kind == "distill"]
    assert distilled and all("student.head_dim=8" in j.overrides for j in distilled)


def test_the_students_own_pipeline_takes_the_teachers_record_and_splits(tmp_path):
    """Setups 1 and 2 train on the teacher's data and task splits whatever their seed, with the student's model."""
    from dataclasses import asdict

    from hyperr1.pipeline import ModelConfig, TrainConfig

    teacher = TrainConfig(name="t", data="some/tree.tsv", seed=7)
    teacher.sft.epochs = 13
    (tmp_path / "config.json").write_text(json.dumps({"kind": "train", "config": asdict(teacher.resolved())}))
    student = ModelConfig(head="euclidean", d_model=8, ffn_dim=16)
    cfg = distill_mammals.student_train_config(tmp_path, student, ["seed=2", "grpo.steps=5"])
    assert (cfg.data, cfg.sft.epochs, cfg.grpo.steps, cfg.seed) == ("some/tree.tsv", 13, 5, 2)
    assert (cfg.model.d_model, cfg.model.ffn_dim, cfg.model.head) == (8, 16, "euclidean")
    resolved = cfg.resolved()
    assert resolved.tasks.seed == 7 and resolved.sft.seed == 2  # the teacher's splits, the student's own seed


@pytest.mark.parametrize(
    "text, message",
    [
        ('seeds = [0]\ndims = [2]\n[heads.p]\nconfig = "mammals_poincare.toml"\n', "missing key 'name'"),
        ('name = "x"\nseeds = [0]\ndims = [2]\ncolour = 1\n[heads.p]\nconfig = "a"\n', "unknown keys"),
        ('name = "x"\nseeds = [0]\ndims = [2]\n[heads.p]\nconfig = "nope.toml"\n', "does not exist"),
        ('name = "x"\nseeds = [0]\ndims = [2]\n[heads.p]\n', "has no config"),
        (
            'name = "x"\nseeds = [0]\ndims = [2]\n[overrides]\n"a.b" = [1]\n'
            '[heads.p]\nconfig = "mammals_poincare.toml"\n',
            "only numbers",
        ),
    ],
)
def test_bad_sweep_files_are_clear_errors(tmp_path, text, message):
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        mammals_heads.load_sweep(path)


def test_mean_ci_and_paired_match_scipy():
    a, b = [0.5, 0.6, 0.55, 0.7, 0.65], [0.4, 0.45, 0.5, 0.52, 0.6]
    m, h = mammals_heads.mean_ci(a)
    lo, hi = stats.t.interval(0.95, len(a) - 1, loc=sum(a) / len(a), scale=stats.sem(a))
    assert m == pytest.approx(sum(a) / len(a)) and (m - h, m + h) == pytest.approx((lo, hi))
    d = mammals_heads.paired(a, b)
    assert d["per_seed"] == pytest.approx([x - y for x, y in zip(a, b, strict=True)])
    assert d["wilcoxon_p"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert mammals_heads.mean_ci([0.3]) == (0.3, 0.0)
    assert mammals_heads.paired([0.1, 0.2], [0.1, 0.2])["wilcoxon_p"] is None  # all differences zero


def _rows(head, dim, seed, warm, grpo):
    return [
        {"head": head, "head_dim": dim, "seed": seed, "phase": phase, "split": split, "accuracy": acc, "format": 1.0}
        for phase, acc in (("warm_start", warm), ("grpo", grpo))
        for split in mammals_heads.SPLITS
    ]


def test_tables_from_rows():
    rows = []
    for seed in range(4):
        rows += _rows("poincare", 2, seed, 0.3, 0.5 + 0.01 * seed)
        rows += _rows("euclidean", 2, seed, 0.3, 0.4)
    md = mammals_heads.table(rows)
    assert "| poincare | 2 | 4 | 0.300 ± 0.000 | 0.515 ±" in md and "+21.5 ±" in md
    paired = mammals_heads.paired_table(rows)
    grpo_line = next(line for line in paired.splitlines() if "| grpo |" in line)
    assert "| 2 | grpo | 4 | +11.5 |" in grpo_line
    assert "+10.0, +11.0, +12.0, +13.0" in grpo_line


def test_collapse_summary_counts_episodes_and_triggers():
    episodes = {
        "poincare_d2_s0": [{"length": 3, "reasons": ["KL spike"]}, {"length": 1, "reasons": ["KL spike", "format"]}],
        "poincare_d2_s1": [],
        "euclidean_d2_s0": [],
    }
    summary = mammals_heads.collapse_summary(episodes)
    assert summary["poincare_d2"] == {
        "runs": 2,
        "runs_with_episode": 1,
        "episodes": 2,
        "steps_in_episode": 4,
        "triggers": {"KL spike": 2, "format": 1},
    }
    assert summary["euclidean_d2"]["episodes"] == 0


def test_export_curves_thins_and_keeps_evaluations(tmp_path):
    keys = {k: 0.5 for k in mammals_heads.CURVE_KEYS}
    lines = [json.dumps({"step": s, **keys, **({"eval/x/accuracy": 0.7} if s == 20 else {})}) for s in range(1, 21)]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    mammals_heads.export_curves(tmp_path / "m.jsonl", tmp_path / "c.jsonl", every=10)
    rows = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 20]
    assert rows[0]["rate/reflection"] == 0.5 and any(r.get("eval/x/accuracy") == 0.7 for r in rows)


def _distill_row(setup, init, seed, student, teacher=0.8, size="default"):
    acc = {s: {"value": student, "ci": [student, student], "n": 10} for s in (*distill_mammals.HELD_OUT,)}
    bias = {s: {"value": student, "ci": None, "n": 10} for s in distill_mammals.BIAS_SETS}
    t = {s: {"value": teacher, "ci": None, "n": 10} for s in (*distill_mammals.HELD_OUT, *distill_mammals.BIAS_SETS)}
    return {
        "setup": setup, "init": init, "seed": seed, "size": size, "student_params": 100, "teacher_params": 1000,
        "ratio": 0.1, "teacher": t, "student": {**bias, **acc}, "student_confidence": {"distill_seen": 0.9},
    }  # fmt: skip


def test_distillation_tables_from_rows():
    rows = [_distill_row("student_grpo", "random", s, 0.2) for s in range(3)]
    rows += [_distill_row("word_kd", "logmap", s, 0.6 + 0.02 * s) for s in range(3)]
    md = distill_mammals.results_table(rows)
    line = next(line for line in md.splitlines() if line.startswith("| word_kd"))
    assert "| 3 |" in line and "0.620 ±" in line and "+42.0 [" in line  # paired vs student_grpo
    assert "77.5 ±" in line  # retention 0.62 / 0.8
    bias = distill_mammals.bias_table(rows)
    assert "| teacher | — | 3 | 0.800 ± 0.000 | +0.0 ± 0.0" in bias
    assert "0.900 / nan / nan" in bias  # a set a student was not scored on shows as nan, never a crash


def test_a_warm_start_with_restarts_reports_each_and_the_chosen_one(tmp_path):
    """warm_start_restarts reads train_sft's done.json and each restart's last monitor row; the
    table marks the chosen (lowest-NLL) restart; a single warm start gives no entry."""
    done = {
        "epochs": 2,
        "restarts": [
            {"restart": 0, "order_seed": 1, "gold_nll": 0.5},
            {"restart": 1, "order_seed": 1001, "gold_nll": 0.2},
        ],
        "chosen": 1,
    }
    (tmp_path / "done.json").write_text(json.dumps(done))
    keys = [f"eval/{s}/accuracy" for s in distill_mammals.HELD_OUT]
    rows = [
        {"restart": 0, "epoch": 1, keys[0]: 0.9, keys[1]: 0.9},
        {"restart": 0, "epoch": 2, keys[0]: 0.4, keys[1]: 0.6},
        {"restart": 1, "epoch": 1, "sft/loss": 1.0},  # no monitor row for restart 1
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    info = distill_mammals.warm_start_restarts(tmp_path)
    assert info["chosen"] == 1 and [t["monitor_held_out"] for t in info["tried"]] == [0.5, None]
    row = _distill_row("sft_only", "random", 4, 0.7) | {"warm_start_restarts": info}
    assert (
        distill_mammals.restarts_table([row]).splitlines()[2]
        == "| 4 | 1, 1001 | 0.500, 0.200* | 0.500, —* | 1 | 0.700 |"
    )
    assert distill_mammals.restarts_table([_distill_row("sft_only", "random", 0, 0.7)]) == ""
    (tmp_path / "done.json").write_text(json.dumps({"epochs": 2}))
    assert distill_mammals.warm_start_restarts(tmp_path) is None


def test_short_runs_keep_their_curves_and_old_curves_do_not_break_the_reflection_table(tmp_path):
    keys = {k: 0.25 for k in mammals_heads.CURVE_KEYS}
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"step": s, **keys}) + "\n" for s in range(1, 5)))
    mammals_heads.export_curves(tmp_path / "m.jsonl", tmp_path / "curves" / "poincare_d2_s0.jsonl", every=10)
    rows = [json.loads(line) for line in (tmp_path / "curves" / "poincare_d2_s0.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4] and rows[0]["rate/reflection"] == 0.25  # 4 steps: one short block
    (tmp_path / "curves" / "poincare_d2_s1.jsonl").write_text(json.dumps({"step": 10, "reward/total": 0.5}) + "\n")
    table = mammals_heads.reflection_table(
        _rows("poincare", 2, 0, 0.3, 0.4) + _rows("poincare", 2, 1, 0.3, 0.4), tmp_path / "curves"
    )
    assert "| poincare_d2 | 1 | 0.250 ± 0.000 | 0.250 ± 0.000 |" in table  # the seed without reflection is skipped


def test_benchmark_repeats_keep_every_run_and_the_median_one(tmp_path):
    """benchmarks/repeat.py: each run's ratio in bench_repeats.json, the median run as the result file."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import repeat

    counter = tmp_path / "n"
    fake = tmp_path / "bench_fake.py"  # ratios 3, 1, 2 on its three runs
    fake.write_text(
        "import json, sys, pathlib\n"
        f"c = pathlib.Path({str(counter)!r}); i = int(c.read_text()) if c.exists() else 0; c.write_text(str(i + 1))\n"
        "out = sys.argv[sys.argv.index('--out') + 1]\n"
        "json.dump({'nested': {'ratio': [3.0, 1.0, 2.0][i]}, 'run': i}, open(out, 'w'))\n"
    )
    repeat.main(["--runs", "3", "--key", "nested.ratio", "--results", str(tmp_path), "--", sys.executable, str(fake)])
    table = json.loads((tmp_path / "bench_repeats.json").read_text())["bench_fake"]
    assert table["runs"] == [3.0, 1.0, 2.0] and (table["min"], table["median"], table["max"]) == (1.0, 2.0, 3.0)
    assert json.loads((tmp_path / "bench_fake.json").read_text())["run"] == 2  # the run whose ratio is the median
    with pytest.raises(SystemExit):
        repeat.main(["--key", "x", "--results", str(tmp_path)])


def test_a_second_stage_starts_from_the_first_stages_student_of_its_seed(tmp_path):
    """start_from: the stage-2 run of a seed loads the stage-1 student of that seed and init, and waits for it."""
    stage2 = '\n[setups.gold_sft_gkd_hard]\nstart_from = "gold_sft"\ninits = ["logmap"]\n'
    base = (distill_mammals.CONFIGS / "distill_sweep_chain_hard_logmap.toml").read_text() + stage2
    (tmp_path / "two.toml").write_text(base.replace("seeds = [0]", "seeds = [0, 1]"))
    spec, jobs = distill_mammals.load_jobs(tmp_path / "two.toml")
    assert not [j for j in jobs if j.kind == "train"]  # student_pipeline = false
    names = [j.name for j in jobs]
    for job in (j for j in jobs if j.setup == "gold_sft_gkd_hard"):
        assert job.init == "logmap" and job.after == f"gold_sft_logmap_s{job.seed}"
        start = Path("runs") / spec["name"] / job.after / "student"
        assert f"init_checkpoint={json.dumps(str(start))}" in job.overrides
        assert names.index(job.after) < names.index(job.name)
    assert {j.seed for j in jobs if j.setup == "gold_sft_gkd_hard"} == {0, 1}
    for text, message in [
        (base.replace('start_from = "gold_sft"', 'start_from = "nowhere"'), "not a setup defined before it"),
        (base.replace('inits = ["logmap"]\n', 'inits = ["warm_start"]\n'), "no runs of inits"),
    ]:  # fmt: skip
        (tmp_path / "bad.toml").write_text(text)
        with pytest.raises(ValueError, match=message):
            distill_mammals.load_jobs(tmp_path / "bad.toml")


def test_warm_start_order_draws_and_merges_its_rows(tmp_path):
    """experiments/warm_start_order.py: the two orders of one gold set, bad run names, and a collect
    that keeps the rows of runs made on another machine."""
    import warm_start_order as wso

    examples = list(range(10))
    assert wso.order_examples(examples, "epochs", 3, seed=5) == (examples, 3)
    drawn, epochs = wso.order_examples(examples, "replacement", 3, seed=5)
    assert epochs == 1 and len(drawn) == 30 and set(drawn) <= set(examples)
    assert (
        drawn
        == wso.order_examples(examples, "replacement", 3, seed=5)[0]
        != wso.order_examples(examples, "replacement", 3, seed=6)[0]
    )
    for bad in (["shuffle:1"], ["epochs"], ["epochs:x"]):
        with pytest.raises(ValueError, match="sampling"):
            wso.OrderConfig(runs=bad).parsed_runs()
    with pytest.raises(ValueError, match="--tag"):
        wso.OrderConfig(runs=["epochs:0"], overrides=["sft.warmup_steps=5"]).parsed_runs()

    cfg = wso.OrderConfig(
        out=str(tmp_path / "runs"), results=str(tmp_path / "results"), tag="w", overrides=["sft.warmup_steps=5"]
    )
    assert cfg.run_dir("epochs", 2).name == "epochs_o2_s0_w"
    base = dict(init_seed=0, sweep="s.toml", sequences=10, eval={})
    old = dict(
        base, sampling="epochs", order_seed=0, final_sft_loss=0.5, held_out=0.4
    )  # a row from before tags existed
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "runs.jsonl").write_text(json.dumps(old) + "\n")
    for seed, acc in ((0, 0.6), (1, 0.8)):
        new = dict(
            base, sampling="epochs", tag="w", overrides=cfg.overrides, order_seed=seed, final_sft_loss=0.3, held_out=acc
        )
        if seed == 1:  # a warm start that was distilled too
            new["distilled"] = {"setup": "gkd", "held_out": 0.85, "teacher_held_out": 0.9}
        (cfg.run_dir("epochs", seed)).mkdir(parents=True)
        (cfg.run_dir("epochs", seed) / "results.json").write_text(json.dumps(new))
    text = wso.collect(cfg)
    rows = [json.loads(line) for line in (tmp_path / "results" / "runs.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and rows[0] == old
    assert "| epochs | as the sweep | 0 | 0 | 0.400 |" in text
    assert "| epochs | sft.warmup_steps=5 | 0 | 0, 1 | 0.700 ± " in text and "| —, 0.850 |" in text
    assert rows[2]["distilled"]["held_out"] == 0.85

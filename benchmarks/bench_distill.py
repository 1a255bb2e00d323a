"""Seconds per distillation step: hyperr1's ``DistillTrainer`` against TRL's ``GKDTrainer``.

Both distil a randomly initialised teacher into a randomly initialised student of matched sizes on
the shipped ``mammals`` train prompts (the R1-Zero prompt, 68-73 words, word-level tokenizer of 1,255
words). hyperr1: its encoder–decoder teacher at the shipped size (width 64, 2 + 2 layers, Poincaré
head of dimension 16: 353,065 parameters) and the default student of ``hyperr1 distill`` (width 12,
1 + 1 layers, Euclidean head of dimension 4: 27,771). TRL: decoder-only Llama models with the same
widths, attention heads and total layer count, the MLP width chosen to match the parameter count
(teacher 353,024, student 27,792; tied embeddings). One step, on both sides, is GKD's (Agarwal et al.
2024): B = 32 prompts; with probability λ the student samples completions of at most 32 tokens at
temperature 1, otherwise the teacher writes them; the teacher's full next-token distributions on
them; one update of the generalized JSD(β) at τ = 1 (token-level mean, gradient clipped at 1).
float32 on the CPU, 2 threads. A TRL step is timed from ``on_step_begin`` to ``on_step_end``
(generation, teacher and student forwards, backward, optimizer update), a hyperr1 step is
:meth:`hyperr1.distill.DistillTrainer.step`; the median is taken after warm-up, and the process CPU
time of each step is reported beside it.

What cannot match: a decoder-only model re-reads the prompt with every completion (sequences of up
to 73 + 32 tokens, teacher and student logits at every position) where the encoder–decoder reads it
once and decodes 32 positions; the Poincaré head scores V distances where a Llama has a tied linear
head. The default λ = 1 makes every step on-policy on both sides; with λ < 1 TRL's off-policy steps
sample the teacher (``seq_kd``) where hyperr1 decodes it greedily, and each side draws its own coin.

TRL is an optional benchmark dependency: it needs its own environment, since it pins its own
transformers/accelerate/datasets (``pip install torch==2.13.0 trl==1.16.0 && pip install -e .``).
Without it only hyperr1 runs.

    python benchmarks/bench_distill.py [--trl-only | --hyperr1-only] [--steps 15] [--warmup 5] [--repeats 3]
                                       [--lam 1.0] [--beta 0.5] [--sequential] [--out results/bench_distill.json]

When both run, their steps alternate (one TRL step, then one hyperr1 step, inside TRL's
``on_step_end``, outside its timing), so a busy spell of other processes slows both alike;
``--sequential`` runs them back to back instead, as ``bench_grpo.py`` does. Prints the figures of
every repeat as JSON, with the ratio TRL / hyperr1 of the median step times (and, interleaved, the
median of the per-step ratios) and its range over the repeats when both ran, and writes the same
JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

# The word-level Llama models (hidden, layers, attention heads, MLP width): the widths, heads and
# total layers of hyperr1's teacher (2 + 2) and student (1 + 1); the MLP width matches the parameters.
TEACHER = dict(hidden=64, layers=4, heads=4, intermediate=269)  # 353,024 parameters (hyperr1: 353,065)
STUDENT = dict(hidden=12, layers=2, heads=2, intermediate=160)  # 27,792 parameters (hyperr1: 27,771)


def _trl_available() -> bool:
    try:
        import trl.experimental.gkd  # noqa: F401
    except ImportError:
        return False
    return True


def _summary(durations: list[float], cpu: list[float], tokens: list[int], warmup: int) -> dict:
    """Figures over the steps after ``warmup``: ``durations`` are wall-clock step times, ``cpu`` the
    process CPU time of each step (all threads; less sensitive to other busy processes than the wall
    clock, which is what counts), ``tokens`` the completion tokens trained on per step (or empty)."""
    dur, cpu_dur, toks = durations[warmup:], cpu[warmup:], tokens[warmup:]
    if not dur:
        raise ValueError(f"no step after the {warmup} warm-up steps")
    med = statistics.median(dur)
    rates = [n / t for n, t in zip(toks, dur, strict=True)] if toks else []
    return {
        "seconds_per_step_median": med,
        "seconds_per_step_min": min(dur),
        "seconds_per_step_max": max(dur),
        "steps_per_second": 1.0 / med,
        "cpu_seconds_per_step_median": statistics.median(cpu_dur),
        "completion_tokens_per_step_mean": statistics.fmean(toks) if toks else None,
        # the median of the per-step rates: as robust to a step slowed by another process as the step median
        "completion_tokens_per_second": statistics.median(rates) if rates else None,
        "timed_steps": len(dur),
        "step_seconds": [round(t, 4) for t in durations],  # every step, warm-up included
        "step_cpu_seconds": [round(t, 4) for t in cpu],
    }


def _mammals():
    """(hierarchy, tokenizer, train examples) of the shipped mammals tasks."""
    from hyperr1.hierarchy import load_hierarchy
    from hyperr1.splits import TasksConfig, build_splits
    from hyperr1.tokenizer import build_tokenizer

    h = load_hierarchy("mammals")
    tok = build_tokenizer(h)  # word-level, pad 0, bos 1, eos 2, adds no special tokens
    splits, _ = build_splits(h, TasksConfig())
    return h, tok, list(splits["train"])


# ---------------------------------------------------------------- TRL's GKDTrainer


def _llama(tok, *, hidden: int, layers: int, heads: int, intermediate: int, max_positions: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    return LlamaForCausalLM(config)


class _PromptCompletionCollator:
    """Examples {prompt, completion} (text) → the batch ``GKDTrainer`` expects: ``input_ids``,
    ``attention_mask`` and ``labels`` (−100 on the prompt) of prompt + completion + </s>, and
    ``prompts`` / ``prompt_attention_mask`` for generation; all left-padded, as TRL's own collator.
    (TRL's default collator applies a chat template, which the word-level tokenizer has not.)"""

    def __init__(self, tok):
        self.tok = tok

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        pad, eos = self.tok.pad_token_id, self.tok.eos_token_id
        prompts = [self.tok(ex["prompt"])["input_ids"] for ex in examples]
        full = [p + self.tok(ex["completion"])["input_ids"] + [eos] for p, ex in zip(prompts, examples, strict=True)]
        labels = [[-100] * len(p) + f[len(p) :] for p, f in zip(prompts, full, strict=True)]

        def left(rows, value):  # (B, L) left-padded
            width = max(len(r) for r in rows)
            return torch.tensor([[value] * (width - len(r)) + r for r in rows], dtype=torch.long)

        return {
            "input_ids": left(full, pad),
            "attention_mask": left([[1] * len(f) for f in full], 0),
            "labels": left(labels, -100),
            "prompts": left(prompts, pad),
            "prompt_attention_mask": left([[1] * len(p) for p in prompts], 0),
        }


def trl_gkd_seconds_per_step(
    *,
    prompts: int = 32,
    max_new_tokens: int = 32,
    lam: float = 1.0,
    beta: float = 0.5,
    lr: float = 3e-3,
    steps: int = 15,
    warmup: int = 5,
    seed: int = 0,
    between=None,
) -> dict:
    """Seconds per optimizer step of ``trl.experimental.gkd.GKDTrainer`` (float32, CPU, 2 threads).

    One optimizer step = ``prompts`` prompts (``per_device_train_batch_size``, no gradient
    accumulation). With probability λ (``lmbda``) the student samples the completions (temperature
    1, top-k 0, top-p 1, ``max_new_tokens``); otherwise, with ``seq_kd = True`` whenever λ < 1, the
    teacher samples them (hyperr1 decodes its teacher greedily: the same amount of work). The loss
    is TRL's generalized JSD(β) at temperature 1 over the completion tokens.
    ``completion_tokens_per_second`` counts the generated tokens TRL trains on (up to and including
    the first ``</s>``) over the timed step time. ``between``, if given, is called after each timed
    step, outside the timing (the interleaved mode runs one hyperr1 step there).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is loaded from a hub
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        import trl
        from datasets import Dataset
        from transformers import PrinterCallback, TrainerCallback
        from trl.experimental.gkd import GKDConfig, GKDTrainer
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "TRL is not installed: run this benchmark in an environment with "
            "`pip install torch==2.13.0 trl==1.16.0 && pip install -e .`"
        ) from err

    torch.set_num_threads(2)
    torch.manual_seed(seed)
    _, tok, train = _mammals()
    tok.padding_side = "left"  # decoder-only generation continues the prompt's last token
    dataset = Dataset.from_dict({"prompt": [ex.prompt for ex in train], "completion": [ex.completion for ex in train]})
    longest_prompt = max(len(tok(ex.prompt)["input_ids"]) for ex in train)
    max_positions = 128
    if longest_prompt + max_new_tokens > max_positions:
        raise ValueError(f"prompt ({longest_prompt}) + completion ({max_new_tokens}) exceed {max_positions} positions")
    teacher = _llama(tok, **TEACHER, max_positions=max_positions).eval()
    student = _llama(tok, **STUDENT, max_positions=max_positions)
    n_teacher, n_student = (sum(p.numel() for p in m.parameters()) for m in (teacher, student))

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.t_begin = self.cpu_begin = 0.0
            self.durations: list[float] = []
            self.cpu: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.t_begin, self.cpu_begin = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            self.durations.append(time.perf_counter() - self.t_begin)
            self.cpu.append(time.process_time() - self.cpu_begin)
            if between is not None:
                between()

    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        args = GKDConfig(
            output_dir=tmp,
            per_device_train_batch_size=prompts,
            gradient_accumulation_steps=1,
            lmbda=lam,
            beta=beta,
            temperature=1.0,  # sampling temperature; the loss is taken at temperature 1
            max_new_tokens=max_new_tokens,
            seq_kd=lam < 1,  # off-policy steps generate with the teacher, as hyperr1's do
            learning_rate=lr,
            max_grad_norm=1.0,
            max_steps=warmup + steps,
            gradient_checkpointing=False,  # a 27.8k-parameter student does not need it; generation keeps its cache
            use_cpu=True,
            bf16=False,
            fp16=False,
            report_to=[],
            logging_steps=10**9,
            save_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
            seed=seed,
        )
        trainer = GKDTrainer(
            model=student,
            teacher_model=teacher,
            args=args,
            data_collator=_PromptCompletionCollator(tok),
            train_dataset=dataset,
            processing_class=tok,
            callbacks=[timer],
        )
        trainer.remove_callback(PrinterCallback)  # keeps stdout to the JSON that main prints

        generated: list[int] = []  # completion tokens trained on, per generating step
        generate = trainer.generate_on_policy_outputs

        def counted_generate(model, inputs, generation_config):
            ids, mask, labels = generate(model, inputs, generation_config)
            generated.append(int((labels != -100).sum()))
            return ids, mask, labels

        trainer.generate_on_policy_outputs = counted_generate
        trainer.train()
        gkd_config = {
            k: getattr(trainer.args, k)
            for k in (
                "per_device_train_batch_size",
                "gradient_accumulation_steps",
                "lmbda",
                "beta",
                "temperature",
                "max_new_tokens",
                "seq_kd",
                "learning_rate",
                "max_grad_norm",
                "gradient_checkpointing",
                "bf16",
                "use_cpu",
                "max_steps",
            )
        }

    tokens = generated if len(generated) == len(timer.durations) else []  # every step generates when λ = 1
    return {
        **_summary(timer.durations, timer.cpu, tokens, warmup),
        "params": {"teacher": n_teacher, "student": n_student},
        "models": {
            name: f"LlamaForCausalLM hidden={m['hidden']} layers={m['layers']} heads={m['heads']} "
            f"intermediate={m['intermediate']} vocab={len(tok)} tied embeddings"
            for name, m in (("teacher", TEACHER), ("student", STUDENT))
        },
        "generating_steps": len(generated),
        "gkd_config": gkd_config,
        "trl_version": trl.__version__,
    }


# ---------------------------------------------------------------- hyperr1's trainer


class Hyperr1Distill:
    """hyperr1's side of the benchmark, one :meth:`hyperr1.distill.DistillTrainer.step` per :meth:`step`.

    Teacher: a randomly initialised policy at the shipped size (Poincaré head); student: the default
    ``hyperr1 distill`` student, log-map initialised from it as the pipeline does. The settings are
    GKD's as in :func:`trl_gkd_seconds_per_step`: λ, divergence ``jsd`` with β, τ = 1, sampling
    temperature 1, token-level (``dapo``) aggregation, gradient clipping at 1. Off-policy steps
    (probability 1 − λ) decode the teacher greedily.
    """

    def __init__(self, *, prompts: int, max_new_tokens: int, lam: float, beta: float, lr: float, seed: int):
        from hyperr1.distill import DistillConfig, DistillTrainer, init_student_from_teacher
        from hyperr1.distill_pipeline import DistillRunConfig
        from hyperr1.model import HyperR1ForConditionalGeneration, build_policy

        torch.set_num_threads(2)
        torch.manual_seed(seed)
        h, tok, train = _mammals()
        self.teacher = build_policy(len(tok))  # the shipped size: width 64, 2 + 2 layers, Poincaré head k = 16
        self.student = HyperR1ForConditionalGeneration(DistillRunConfig().student.hf_config(len(tok)))
        init_student_from_teacher(self.student, self.teacher)
        cfg = DistillConfig(
            steps=10**6,  # step() is called directly; train() is never run
            divergence="jsd",
            beta=beta,
            tau=1.0,
            lam=lam,
            prompts_per_step=prompts,
            max_completion_length=max_new_tokens,
            temperature=1.0,
            lr=lr,
            grad_clip=1.0,
            loss_type="dapo",  # TRL: the sum over completion tokens / their number
            seed=seed,
        )
        self.prompts = prompts
        self._out = tempfile.TemporaryDirectory()  # the trainer's run directory; nothing is written to it
        self.trainer = DistillTrainer(self.student, self.teacher, tok, train, h, cfg, self._out.name, progress=False)
        self.durations: list[float] = []
        self.cpu: list[float] = []
        self.tokens: list[int] = []
        self.on_policy = 0

    def step(self) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        row = self.trainer.step()
        self.durations.append(time.perf_counter() - t0)
        self.cpu.append(time.process_time() - c0)
        self.tokens.append(round(row["completion/length"] * self.prompts))
        self.on_policy += int(row["distill/on_policy"])

    def summary(self, warmup: int) -> dict:
        from hyperr1.model import count_parameters

        self._out.cleanup()
        return {
            **_summary(self.durations, self.cpu, self.tokens, warmup),
            "params": {"teacher": count_parameters(self.teacher), "student": count_parameters(self.student)},
            "models": {
                "teacher": "HyperR1ForConditionalGeneration d_model=64 layers=2+2 heads=4 ffn=256 head=poincare k=16",
                "student": "HyperR1ForConditionalGeneration d_model=12 layers=1+1 heads=2 ffn=24 head=euclidean k=4",
            },
            "on_policy_steps": self.on_policy,
        }


def hyperr1_distill_seconds_per_step(
    *,
    prompts: int = 32,
    max_new_tokens: int = 32,
    lam: float = 1.0,
    beta: float = 0.5,
    lr: float = 3e-3,
    steps: int = 15,
    warmup: int = 5,
    seed: int = 0,
) -> dict:
    """Seconds per :meth:`hyperr1.distill.DistillTrainer.step` on TRL's workload (:class:`Hyperr1Distill`),
    ``warmup + steps`` steps back to back."""
    side = Hyperr1Distill(prompts=prompts, max_new_tokens=max_new_tokens, lam=lam, beta=beta, lr=lr, seed=seed)
    for _ in range(warmup + steps):
        side.step()
    return side.summary(warmup)


# ---------------------------------------------------------------- main


def _versions() -> dict:
    import transformers

    import hyperr1

    try:
        import trl

        trl_version = trl.__version__
    except ImportError:
        trl_version = None
    try:
        root = Path(__file__).resolve().parent
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl_version,
        "hyperr1": getattr(hyperr1, "__version__", None),
        "git_commit": commit,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group()
    which.add_argument("--trl-only", action="store_true", help="time TRL's GKDTrainer only")
    which.add_argument("--hyperr1-only", action="store_true", help="time hyperr1's DistillTrainer only")
    p.add_argument("--prompts", type=int, default=32, help="B: prompts per step")
    p.add_argument("--max-new-tokens", type=int, default=32, help="longest completion, </s> included")
    p.add_argument("--lam", type=float, default=1.0, help="λ: share of on-policy (student-sampled) steps")
    p.add_argument("--beta", type=float, default=0.5, help="β of the generalized JSD (0: forward KL)")
    p.add_argument("--lr", type=float, default=3e-3, help="student learning rate (both sides)")
    p.add_argument("--steps", type=int, default=15, help="timed steps after warm-up")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3, help="times the whole benchmark is run (the ratio's range)")
    p.add_argument(
        "--sequential",
        action="store_true",
        help="run all of TRL's steps, then all of hyperr1's (default: alternate them, one TRL step then one "
        "hyperr1 step, so that both see the same load from other processes)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/bench_distill.json", help="where the JSON is written ('' : nowhere)")
    args = p.parse_args()
    kw = dict(
        prompts=args.prompts,
        max_new_tokens=args.max_new_tokens,
        lam=args.lam,
        beta=args.beta,
        lr=args.lr,
        steps=args.steps,
        warmup=args.warmup,
        seed=args.seed,
    )

    run_trl = not args.hyperr1_only and _trl_available()
    if not args.hyperr1_only and not run_trl:
        print(
            "TRL is not installed; skipping the TRL baseline "
            "(pip install torch==2.13.0 trl==1.16.0 in a separate environment).",
            flush=True,
        )
    results: dict = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.machine()} {platform.processor() or ''} cpus={os.cpu_count()}".strip(),
        "load_average_at_start": os.getloadavg(),  # (1, 5, 15 min): other busy processes skew every figure
        "versions": _versions(),
        "workload": kw,
        "order": "sequential" if args.sequential or not (run_trl and not args.trl_only) else "interleaved",
        "repeats": [],
    }
    for _ in range(args.repeats):
        rep: dict = {"load_average_1min": os.getloadavg()[0]}
        if results["order"] == "interleaved":
            ours = Hyperr1Distill(**{k: v for k, v in kw.items() if k not in ("steps", "warmup")})
            rep["trl"] = trl_gkd_seconds_per_step(**kw, between=ours.step)
            rep["hyperr1"] = ours.summary(args.warmup)
            # step i of each side ran back to back: the median of their ratios cancels slow spells of the machine
            pairs = zip(rep["trl"]["step_seconds"], rep["hyperr1"]["step_seconds"], strict=True)
            rep["paired_trl_over_hyperr1"] = statistics.median([t / o for t, o in pairs][args.warmup :])
        else:
            if run_trl:
                rep["trl"] = trl_gkd_seconds_per_step(**kw)
            if not args.trl_only:
                rep["hyperr1"] = hyperr1_distill_seconds_per_step(**kw)
        if "trl" in rep and "hyperr1" in rep:
            rep["trl_over_hyperr1"] = rep["trl"]["seconds_per_step_median"] / rep["hyperr1"]["seconds_per_step_median"]
            rep["cpu_trl_over_hyperr1"] = (
                rep["trl"]["cpu_seconds_per_step_median"] / rep["hyperr1"]["cpu_seconds_per_step_median"]
            )
            tps = {side: rep[side]["completion_tokens_per_second"] for side in ("trl", "hyperr1")}
            if tps["trl"] and tps["hyperr1"]:
                rep["tokens_per_second_hyperr1_over_trl"] = tps["hyperr1"] / tps["trl"]
        results["repeats"].append(rep)
    results["load_average_at_end"] = os.getloadavg()
    ratios = [rep["trl_over_hyperr1"] for rep in results["repeats"] if "trl_over_hyperr1" in rep]
    if ratios:
        results["trl_over_hyperr1"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
        for key in ("paired_trl_over_hyperr1", "cpu_trl_over_hyperr1", "tokens_per_second_hyperr1_over_trl"):
            values = [rep[key] for rep in results["repeats"] if key in rep]
            if values:
                results[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    text = json.dumps(results, indent=2, default=str)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

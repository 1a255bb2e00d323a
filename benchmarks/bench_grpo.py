"""Seconds per GRPO optimizer step: hyperr1's trainer against Hugging Face TRL's ``GRPOTrainer``.

Both train a randomly initialised policy of matched size on the shipped ``mammals`` train prompts:
TRL a 2-layer decoder (hidden 64, 4 heads, tied embeddings; 207,104 parameters with the mammal
tokenizer's 1,255 words), hyperr1 its encoder–decoder at width 48 (202,297 parameters). Rewards are
R1's (``accuracy_reward`` + ``format_reward``): 8 prompts x 8 generations per optimizer
step, completions of at most 16 tokens sampled at temperature 1, float32 on the CPU, 2 threads.
A step is timed from ``on_step_begin`` to ``on_step_end`` (generation, rewards, loss, backward and
the optimizer update) and the median is taken after warm-up.

TRL is an optional benchmark dependency: it needs its own environment, since it pins its own
transformers/accelerate/datasets (``pip install torch==2.13.0 trl==1.16.0 && pip install -e .``).
Without it only hyperr1 runs.

    python benchmarks/bench_grpo.py [--trl-only | --hyperr1-only] [--steps 20] [--warmup 3] [--prompt full|question]

Prints the per-step figures of each as JSON and the ratio TRL / hyperr1 when both ran. hyperr1's
trainer keeps glibc from returning freed memory to the kernel (:mod:`hyperr1.allocator`), a
process-wide setting; TRL, timed first with glibc's defaults, is timed a second time under that
setting (``trl_kept_memory``, ratio ``trl_kept_memory_over_hyperr1``), so that the headline ratio
``trl_over_hyperr1`` (each as it ships) can be read against the allocator's share.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import tempfile
import time

import torch
from report import add_out_argument, write_result

# The word-level policy: hidden 64, 2 layers, 4 heads, SwiGLU MLP of width 244, tied embeddings.
HIDDEN, LAYERS, HEADS, INTERMEDIATE = 64, 2, 4, 244


def _trl_available() -> bool:
    try:
        import trl  # noqa: F401
    except ImportError:
        return False
    return True


def _summary(begin_end: list[float], ends: list[float], tokens: list[int], warmup: int) -> dict:
    """Medians over the steps after ``warmup``: ``begin_end`` are step durations, ``ends`` the
    ``perf_counter`` times the steps ended, ``tokens`` the sampled tokens per step (or empty)."""
    dur, toks = begin_end[warmup:], tokens[warmup:]
    wall = [ends[i] - ends[i - 1] for i in range(max(warmup, 1), len(ends))]
    if not dur:
        raise ValueError(f"no step after the {warmup} warm-up steps")
    med = statistics.median(dur)
    return {
        "seconds_per_step_median": med,
        "seconds_per_step_mean": statistics.fmean(dur),
        "seconds_per_step_min": min(dur),
        "seconds_per_step_max": max(dur),
        # between consecutive on_step_end events: also counts the dataloader and the trainer's bookkeeping
        "seconds_per_step_wall_median": statistics.median(wall) if wall else None,
        "steps_per_second": 1.0 / med,
        "sampled_tokens_per_step_mean": statistics.fmean(toks) if toks else None,
        "sampled_tokens_per_second": sum(toks) / sum(dur) if toks else None,
        "timed_steps": len(dur),
        "step_seconds": [round(t, 4) for t in begin_end],  # every step, warm-up included
    }


def _prompt(ex, style: str) -> str:
    """The prompt of a task example: the shipped R1-Zero prompt, or its question part only."""
    if style == "full":
        return ex.prompt
    if style == "question":
        from hyperr1.tasks import render_question

        return f"user : {render_question(ex.task, ex.args)} assistant :"
    raise ValueError(f"prompt_style must be 'full' or 'question', got {style!r}")


def trl_grpo_seconds_per_step(
    *,
    prompts: int = 8,
    generations: int = 8,
    max_completion_length: int = 16,
    steps: int = 20,
    warmup: int = 3,
    seed: int = 0,
    prompt_style: str = "full",
    intermediate_size: int = INTERMEDIATE,
) -> dict:
    """Seconds per optimizer step of ``trl.GRPOTrainer`` (float32, CPU, 2 threads).

    One optimizer step = ``prompts`` prompts x ``generations`` completions, all generated, scored
    and trained on in that step (``per_device_train_batch_size = prompts * generations``, no
    gradient accumulation, so TRL's ``steps_per_generation = 1`` and ``num_iterations = 1``).
    ``sampled_tokens_per_second`` counts the completion tokens TRL keeps (up to and including the
    first ``</s>``) over the timed step time. ``prompt_style`` is ``"full"`` (the R1-Zero prompt
    the tasks ship, 68-73 words) or ``"question"`` (``user : <question> assistant :``, 11-16 words).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is loaded from a hub
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        import trl
        from datasets import Dataset
        from transformers import LlamaConfig, LlamaForCausalLM, PrinterCallback, TrainerCallback
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "TRL is not installed: run this benchmark in an environment with "
            "`pip install torch==2.13.0 trl==1.16.0 && pip install -e .`"
        ) from err

    from hyperr1.hierarchy import load_hierarchy
    from hyperr1.rewards import accuracy_reward, format_reward
    from hyperr1.splits import TasksConfig, build_splits
    from hyperr1.tokenizer import build_tokenizer

    torch.set_num_threads(2)
    torch.manual_seed(seed)
    h = load_hierarchy("mammals")
    tok = build_tokenizer(h)  # word-level, pad 0, bos 1, eos 2, adds no special tokens
    splits, _ = build_splits(h, TasksConfig())
    train = splits["train"]
    texts = [_prompt(ex, prompt_style) for ex in train]
    # Plain-string prompts (TRL's "standard" format): no chat template is applied, the prompt is
    # tokenised as is. `answers` is passed to the reward functions as a keyword column.
    dataset = Dataset.from_dict({"prompt": texts, "answers": [list(ex.answers) for ex in train]})

    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=HIDDEN,
        intermediate_size=intermediate_size,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        max_position_embeddings=128,  # prompts are <= 73 words, completions <= 16
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())

    sampled: list[int] = []  # completion tokens per generation batch (= per optimizer step here)

    @functools.wraps(format_reward)
    def counted_format_reward(completions, completion_ids=None, **kwargs):
        if completion_ids is not None:
            sampled.append(sum(len(ids) for ids in completion_ids))
        return format_reward(completions, **kwargs)

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.t_begin = 0.0
            self.begin_end: list[float] = []
            self.ends: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.t_begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            self.begin_end.append(now - self.t_begin)
            self.ends.append(now)

    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        args = GRPOConfig(
            output_dir=tmp,
            per_device_train_batch_size=prompts * generations,  # one optimizer step = P x G completions
            gradient_accumulation_steps=1,  # -> steps_per_generation = 1, generation_batch_size = P x G
            num_generations=generations,
            max_completion_length=max_completion_length,
            temperature=1.0,
            beta=0.0,  # TRL 1.16 default: no reference model, no KL term
            num_iterations=1,
            max_steps=warmup + steps,
            gradient_checkpointing=False,  # TRL defaults to True; a 207k-parameter model does not need it
            use_cpu=True,
            bf16=False,  # TRL defaults to bf16=True
            fp16=False,
            report_to=[],
            logging_steps=10**9,
            save_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
            seed=seed,
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=[accuracy_reward, counted_format_reward],
            args=args,
            train_dataset=dataset,
            processing_class=tok,
            callbacks=[timer],
        )
        trainer.remove_callback(PrinterCallback)  # keeps stdout to the JSON that main prints
        trainer.train()
        grpo_config = {
            k: getattr(trainer.args, k)
            for k in (
                "per_device_train_batch_size",
                "gradient_accumulation_steps",
                "generation_batch_size",
                "steps_per_generation",
                "num_generations",
                "num_iterations",
                "max_completion_length",
                "temperature",
                "top_p",
                "top_k",
                "beta",
                "epsilon",
                "loss_type",
                "scale_rewards",
                "learning_rate",
                "gradient_checkpointing",
                "bf16",
                "use_cpu",
                "max_steps",
            )
        }

    # with steps_per_generation = 1 every optimizer step generates exactly once
    tokens = sampled if len(sampled) == len(timer.begin_end) else []
    out = _summary(timer.begin_end, timer.ends, tokens, warmup)
    out.update(
        params=n_params,
        model=f"LlamaForCausalLM hidden={HIDDEN} layers={LAYERS} heads={HEADS} "
        f"intermediate={intermediate_size} vocab={len(tok)} tied embeddings",
        prompts=prompts,
        generations=generations,
        prompt_style=prompt_style,
        grpo_config=grpo_config,
        trl_version=trl.__version__,
        torch_version=torch.__version__,
        threads=torch.get_num_threads(),
    )
    return out


# ---------------------------------------------------------------- hyperr1's trainer


def hyperr1_grpo_seconds_per_step(
    *,
    prompts: int = 8,
    generations: int = 8,
    max_completion_length: int = 16,
    steps: int = 20,
    warmup: int = 3,
    seed: int = 0,
    prompt_style: str = "full",
    head: str = "poincare",
) -> dict:
    """Seconds per optimizer step of hyperr1's GRPO trainer on TRL's workload above.

    The policy is the encoder–decoder of :mod:`hyperr1.model` at a matched size: width 48, 2 + 2
    layers, MLP 128, head dimension 16 (202,297 parameters with the Poincaré head, against TRL's
    207,104), randomly initialised. The settings are TRL's defaults as resolved above: β = 0
    (no reference model), DAPO token-level loss, group-scaled advantages, μ = 1, temperature 1.
    One step is :meth:`hyperr1.trainer.GRPOTrainer.step`: sampling, rewards, loss, backward and
    the Riemannian Adam update.
    """
    from dataclasses import replace

    from hyperr1.hierarchy import load_hierarchy
    from hyperr1.model import build_policy, count_parameters
    from hyperr1.splits import TasksConfig, build_splits
    from hyperr1.tokenizer import build_tokenizer
    from hyperr1.trainer import GRPOConfig, GRPOTrainer

    torch.set_num_threads(2)
    torch.manual_seed(seed)
    h = load_hierarchy("mammals")
    tok = build_tokenizer(h)
    splits, _ = build_splits(h, TasksConfig(seed=seed))
    train = [replace(ex, prompt=_prompt(ex, prompt_style)) for ex in splits["train"]]
    model = build_policy(len(tok), head=head, d_model=48, encoder_ffn_dim=128, decoder_ffn_dim=128, head_dim=16)
    cfg = GRPOConfig(
        steps=warmup + steps,
        prompts_per_step=prompts,
        num_generations=generations,
        max_completion_length=max_completion_length,
        temperature=1.0,
        beta=0.0,
        loss_type="dapo",
        scale_rewards="group",
        lr=1e-6,
        manifold_lr=1e-6,
        curriculum_start_hops=100,  # every training prompt, as TRL samples them
        guard=False,
        seed=seed,
    )
    with tempfile.TemporaryDirectory() as out:
        trainer = GRPOTrainer(model, tok, train, h, cfg, out, progress=False)
        begin_end, ends, tokens = [], [], []
        for _ in range(warmup + steps):
            t0 = time.perf_counter()
            row = trainer.step()
            t1 = time.perf_counter()
            begin_end.append(t1 - t0)
            ends.append(t1)
            tokens.append(round(row["completion/length"] * prompts * generations))
    return {**_summary(begin_end, ends, tokens, warmup), "params": count_parameters(model), "head": head}


# ---------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group()
    which.add_argument("--trl-only", action="store_true", help="time TRL's GRPOTrainer only")
    which.add_argument("--hyperr1-only", action="store_true", help="time hyperr1's trainer only")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--max-completion-length", type=int, default=16)
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps after warm-up")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--prompt",
        choices=("full", "question"),
        default="full",
        help="full: the shipped R1-Zero prompt (~70 words); question: `user : <question> assistant :` (~13)",
    )
    add_out_argument(p, "results/bench_grpo.json (results/bench_grpo_question.json with --prompt question)")
    args = p.parse_args()
    kw = dict(
        prompts=args.prompts,
        generations=args.generations,
        max_completion_length=args.max_completion_length,
        steps=args.steps,
        warmup=args.warmup,
        seed=args.seed,
        prompt_style=args.prompt,
    )

    results: dict = {
        "machine": f"{platform.machine()} {platform.processor() or ''} cpus={os.cpu_count()}".strip(),
        "load_average_at_start": os.getloadavg()[0],  # another busy process skews every figure
        "workload": kw,
    }
    if not args.hyperr1_only:
        if _trl_available():
            results["trl"] = trl_grpo_seconds_per_step(**kw)
            # hyperr1's trainers keep glibc from unmapping freed memory (hyperr1.allocator); TRL timed
            # again under that same process-wide setting, so that the ratio does not hide it
            from hyperr1.allocator import keep_freed_memory

            if keep_freed_memory():
                results["trl_kept_memory"] = trl_grpo_seconds_per_step(**kw)
        else:
            print(
                "TRL is not installed; skipping the TRL baseline "
                "(pip install torch==2.13.0 trl==1.16.0 in a separate environment).",
                flush=True,
            )
    if not args.trl_only:
        try:
            results["hyperr1"] = hyperr1_grpo_seconds_per_step(**kw)
        except NotImplementedError as err:
            print(f"hyperr1 GRPO trainer not timed: {err}", flush=True)
    if "trl" in results and "hyperr1" in results:
        results["trl_over_hyperr1"] = (
            results["trl"]["seconds_per_step_median"] / results["hyperr1"]["seconds_per_step_median"]
        )
        if "trl_kept_memory" in results:
            results["trl_kept_memory_over_hyperr1"] = (
                results["trl_kept_memory"]["seconds_per_step_median"]
                / results["hyperr1"]["seconds_per_step_median"]
            )
    default = "results/bench_grpo.json" if args.prompt == "full" else "results/bench_grpo_question.json"
    one_side = args.trl_only or args.hyperr1_only  # half a comparison is not a result for the paper
    write_result(results, args.out if args.out is not None else "" if one_side else None, default)


if __name__ == "__main__":
    main()

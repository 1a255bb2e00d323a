"""Sampling speed: hyperr1's KV-cache sampler against ``transformers``' ``model.generate()``.

Same model (the default policy: width 64, 2 + 2 layers, Poincaré head, randomly initialised), same
batch (8 shipped ``mammals`` prompts × 8 samples), same number of new tokens, in one process; the
two are timed alternately and the medians after a warm-up are printed with their ratio.
``generate()`` gets ``min_new_tokens`` so that both decode exactly ``--new-tokens`` tokens per
sequence (a random model almost never ends early). ``draw_kernel`` times the sampler against itself
with the PyTorch-ops draw (``kernel="eager"``) in place of the C one; ``decoder_kernel`` against itself
with the decoder stack run op by op (C attention and draw, PyTorch ops between them) in place of the
fused C step (:class:`hyperr1.native.DecoderStep`).

    python benchmarks/bench_sampler.py [--repeats 10] [--new-tokens 32] [--head poincare|euclidean] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from report import add_out_argument, write_result

from hyperr1 import decoding
from hyperr1.hierarchy import load_hierarchy
from hyperr1.model import build_policy, count_parameters
from hyperr1.splits import TasksConfig, build_splits
from hyperr1.tokenizer import build_tokenizer


def paired_medians(ours, theirs, repeats: int, warmup: int = 2) -> tuple[float, float]:
    """Median seconds of each, timed alternately so that machine noise hits both alike."""
    for _ in range(warmup):
        ours(), theirs()
    t_ours, t_theirs = [], []
    for _ in range(repeats):
        for fn, times in ((ours, t_ours), (theirs, t_theirs)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(t_ours), statistics.median(t_theirs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--head", default="poincare")
    p.add_argument("--threads", type=int, default=2)
    add_out_argument(p, "results/bench_sampler.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    h = load_hierarchy("mammals")
    tok = build_tokenizer(h)
    splits, _ = build_splits(h, TasksConfig())
    enc = tok([ex.prompt for ex in splits["train"][: args.prompts]], padding=True, return_tensors="pt")
    model = build_policy(len(tok), head=args.head).eval()
    n_tok = args.new_tokens

    def ours_sample():
        out = model.sample(enc.input_ids, enc.attention_mask, num_samples=args.samples, max_new_tokens=n_tok)
        assert out.tokens.shape[1] == n_tok

    @torch.no_grad()
    def hf_sample():
        out = model.generate(
            input_ids=enc.input_ids,
            attention_mask=enc.attention_mask,
            do_sample=True,
            top_k=0,
            num_return_sequences=args.samples,
            max_new_tokens=n_tok,
            min_new_tokens=n_tok,
        )
        assert out.shape[1] == n_tok + 1  # the start token and the new tokens

    def ours_sample_eager():  # the same sampler with the PyTorch-ops draw: the A/B of the C draw
        out = model.sample(
            enc.input_ids, enc.attention_mask, num_samples=args.samples, max_new_tokens=n_tok, kernel="eager"
        )
        assert out.tokens.shape[1] == n_tok

    def ours_sample_per_op():  # the decoder stack op by op: the A/B of the fused decoding step
        fused, decoding.native_decoder = decoding.native_decoder, lambda *args, **kwargs: None
        try:
            ours_sample()
        finally:
            decoding.native_decoder = fused

    def ours_greedy():
        model.sample(enc.input_ids, enc.attention_mask, greedy=True, max_new_tokens=n_tok)

    @torch.no_grad()
    def hf_greedy():
        model.generate(
            input_ids=enc.input_ids,
            attention_mask=enc.attention_mask,
            do_sample=False,
            max_new_tokens=n_tok,
            min_new_tokens=n_tok,
        )

    res = {
        "machine": f"{platform.machine()} cpus={os.cpu_count()} threads={torch.get_num_threads()}",
        "load_average_at_start": os.getloadavg()[0],
        "params": count_parameters(model),
        "batch": f"{args.prompts} prompts x {args.samples} samples, {n_tok} new tokens, prompt length "
        f"{enc.input_ids.shape[1]}",
    }
    for name, ours, theirs in [("sample", ours_sample, hf_sample), ("greedy", ours_greedy, hf_greedy)]:
        t_ours, t_hf = paired_medians(ours, theirs, args.repeats)
        res[name] = {"hyperr1_s": t_ours, "generate_s": t_hf, "speedup": t_hf / t_ours}
        res[f"generate_over_hyperr1_{name}"] = t_hf / t_ours
    t_native, t_eager = paired_medians(ours_sample, ours_sample_eager, args.repeats)
    res["draw_kernel"] = {"native_s": t_native, "eager_s": t_eager, "eager_over_native": t_eager / t_native}
    t_fused, t_per_op = paired_medians(ours_sample, ours_sample_per_op, args.repeats)
    res["decoder_kernel"] = {"fused_s": t_fused, "per_op_s": t_per_op, "per_op_over_fused": t_per_op / t_fused}
    write_result(res, args.out, "results/bench_sampler.json")


if __name__ == "__main__":
    main()

"""Ask a trained policy a question about the mammal hierarchy, and grade its answer.

A run of ``hyperr1 train`` saves its policy and tokenizer to ``runs/<name>/policy/`` (``make
reproduce`` writes ``runs/quick_poincare/``); after ``import hyperr1`` transformers' Auto classes
load that directory like any seq2seq model. The script asks one question in the prompt format of
training (:func:`hyperr1.tasks.render_prompt`), decodes greedily, and grades the completion with the
rule-based checks of :mod:`hyperr1.rewards` against the hierarchy: format (the ``<think> …
</think> <answer> … </answer>`` grammar followed exactly), accuracy (the answer) and faithfulness
(the share of reasoning steps that are true parent edges).

    python examples/ask_policy.py --policy runs/quick_poincare/policy is_a beagle.n.01 dog.n.01
    python examples/ask_policy.py --policy runs/quick_poincare/policy lca beagle.n.01 tabby.n.01
    python examples/ask_policy.py --demo parent beagle.n.01   # no trained run yet: an untrained tiny policy
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import hyperr1  # noqa: F401  registers the "hyperr1" model type with transformers' Auto classes
from hyperr1.hierarchy import load_hierarchy
from hyperr1.model import build_policy, save_policy
from hyperr1.rewards import faithfulness, is_correct, parse_completion
from hyperr1.tasks import TASKS, gold, render_completion, render_prompt
from hyperr1.tokenizer import build_tokenizer


def write_untrained_policy(path: Path, hierarchy) -> None:
    """A tiny untrained policy and the hierarchy's tokenizer, saved the way a run saves its policy."""
    torch.manual_seed(0)
    tokenizer = build_tokenizer(hierarchy)
    small = dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=64, decoder_ffn_dim=64)
    save_policy(build_policy(len(tokenizer), head_dim=4, **small), path)
    tokenizer.save_pretrained(path)


def ask(policy_dir: str | Path, prompt: str, *, max_new_tokens: int) -> str:
    """The policy's greedy completion of ``prompt``, special tokens dropped."""
    model = AutoModelForSeq2SeqLM.from_pretrained(policy_dir)
    tok = AutoTokenizer.from_pretrained(policy_dir)
    out = model.generate(**tok(prompt, return_tensors="pt"), max_new_tokens=max_new_tokens, do_sample=False)
    return tok.decode(out[0], skip_special_tokens=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("question", nargs="*", help=f"TASK CONCEPT [CONCEPT], TASK one of {', '.join(TASKS)}")
    p.add_argument("--policy", help="a policy directory (runs/<name>/policy)")
    p.add_argument("--data", default="mammals", help="the hierarchy the policy was trained on (default mammals)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--demo", action="store_true", help="use an untrained tiny policy instead of a trained one")
    args = p.parse_args(argv)
    if (args.policy is None) == (not args.demo):
        p.error("give --policy DIR or --demo")
    task, *concepts = args.question or ["is_a", "beagle.n.01", "dog.n.01"]
    if task not in TASKS or not 1 <= len(concepts) <= 2:
        p.error(f"a question is TASK CONCEPT [CONCEPT] with TASK one of {list(TASKS)}, got {args.question}")
    h = load_hierarchy(args.data)
    try:
        chains, answer, accepted = gold(h, task, tuple(concepts))
    except ValueError as e:  # unknown concept, or a question without an answer (a root's parent, ...)
        p.error(str(e))
    prompt = render_prompt(task, tuple(concepts))

    with tempfile.TemporaryDirectory() as tmp:
        policy = args.policy
        if args.demo:
            policy = Path(tmp) / "policy"
            write_untrained_policy(policy, h)
            print("(an untrained demo policy: expect a random answer)")
        completion = ask(policy, prompt, max_new_tokens=args.max_new_tokens)

    parsed = parse_completion(completion)
    print(f"question:   {prompt.split(' user : ')[-1].removesuffix(' assistant :')}")
    print(f"policy:     {completion}")
    print(f"gold:       {render_completion(chains, answer)}")
    print(f"format {int(parsed.well_formed)}, accuracy {int(is_correct(parsed, accepted))}, ", end="")
    print(f"faithfulness {faithfulness(parsed, h):.2f}")


if __name__ == "__main__":
    main()

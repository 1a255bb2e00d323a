"""The lean decoding path of the policy: KV-cache sampler, teacher-forced log-probabilities and
full next-token distributions.

The functions here run the BART weights of a :class:`hyperr1.model.HyperR1ForConditionalGeneration`
through ``scaled_dot_product_attention`` with a preallocated key/value cache, instead of through
``BartDecoder``:

- the encoder runs once per prompt, and the cross-attention keys and values are projected once
  per prompt and shared by its ``num_samples`` completions (prompt-major rows: the samples of one
  prompt are consecutive);
- each sampling step costs one token's worth of work (the new token's query against the cache);
- the Poincaré head's prototype half of the distance computation is built once per sampling run;
- the draw of each step (max, exp, inverse CDF, log-probability) is one C pass per row
  (:func:`hyperr1.native.sample_rows`) on float32 CPU logits;
- each step's self- and cross-attention of one query per row is one C call
  (:func:`hyperr1.native.attend`): ``scaled_dot_product_attention`` spends ~80 µs per call on these
  (N, H, 1, d_h) shapes, a third of a step (``benchmarks/bench_sampler.py``);
- for a GELU decoder (BART's default) the whole decoder stack of a step is one C call
  (:class:`hyperr1.native.DecoderStep`, built by :func:`native_decoder`): ~30 PyTorch ops per layer,
  each a few µs of dispatch on N × 48 floats, became one pass over blocks of 8 rows; the head, the
  draw and the step's bookkeeping are a second call (:class:`hyperr1.native.HeadDraw`, built by
  :func:`native_head`), and the per-step draw and attention above serve the other models;
- teacher forcing (:func:`decode` without a cache) and the encoder (:func:`encode`, ``BartEncoder``
  against its weights) attend through :func:`attention`, C kernels for forward and backward
  (:class:`Attention`) in place of the flash-attention CPU kernel, and a Poincaré head's
  log-probabilities come straight from its distances (:func:`hyperr1.native.dispatch.distance_logprobs`),
  with no N·T·V logits in memory.

``tests/test_model.py`` checks that this path gives the logits of the Hugging Face forward to
float precision and that sampled log-probabilities equal teacher-forced ones.

Shapes: B prompts of S tokens, N = B·G completions of T tokens, width D, H heads of d_h = D/H,
vocabulary V.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from hyperr1 import geometry, native
from hyperr1.native import dispatch
from hyperr1.native.dispatch import DistanceLogits, _bias_or_zeros

if TYPE_CHECKING:  # the model module imports this one
    from hyperr1.model import HyperR1ForConditionalGeneration

KV = list[tuple[torch.Tensor, torch.Tensor]]  # one (keys, values) pair per decoder layer


SAMPLE_KERNELS = ("auto", "eager", "native")
"""Per-step draws and attention of :func:`sample`: PyTorch ops, the C kernels
(:func:`hyperr1.native.sample_rows`, :func:`hyperr1.native.attend`), or the C kernels where they apply."""


@dataclass
class SampleOutput:
    """Completions drawn by :func:`sample` (N = prompts × samples)."""

    tokens: torch.Tensor  # (N, T) sampled ids; after end-of-sequence: pad
    logprobs: torch.Tensor  # (N, T) log π(token | prefix) at the sampling temperature; 0 on padding
    mask: torch.Tensor  # (N, T) bool: True on completion tokens, the end-of-sequence token included


def filter_logits(logits: torch.Tensor, *, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Keep the ``top_k`` largest logits and the smallest set whose probability reaches ``top_p``
    (nucleus sampling, Holtzman et al. 2020); the others become −inf. The most likely token always
    survives. ``top_k=0`` and ``top_p=1`` leave the logits unchanged."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        mass_before = probs.cumsum(-1) - probs  # mass of the strictly more likely tokens
        drop_sorted = mass_before >= top_p  # the first token has mass_before 0 and is kept
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_categorical(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row of ``probs`` (N, V) by inverting the CDF with a single uniform per row.

    Same distribution as ``torch.multinomial(probs, 1)``, which on the CPU draws V exponentials
    per row and was a quarter of a GRPO step. Zero-probability tokens have empty CDF intervals and
    are never drawn.
    """
    cdf = probs.cumsum(-1)  # (N, V)
    u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_max(probs.shape[-1] - 1)  # (N,)


# ---------------------------------------------------------------- the decoder against BART's weights


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(N, L, D) → (N, H, L, D/H)."""
    n, length, d = x.shape
    return x.view(n, length, num_heads, d // num_heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(N, H, L, d_h) → (N, L, H·d_h)."""
    n, h, length, d_h = x.shape
    return x.transpose(1, 2).reshape(n, length, h * d_h)


class Attention(torch.autograd.Function):
    """scaled_dot_product_attention of whole sequences by the C kernels :func:`hyperr1.native.attention_forward`
    and :func:`~hyperr1.native.attention_backward` (float32 CPU): forward keeps the probabilities P for
    backward. Same values and gradients as ``F.scaled_dot_product_attention`` to float rounding
    (``tests/test_native_sample.py``)."""

    @staticmethod
    def forward(ctx, q, k, v, mask, causal):  # (B, H, Lq, d), (B, H, Lk, d) x 2, (B, Lk) bool or None, bool
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        o, p = native.attention_forward(q, k, v, mask, causal)
        ctx.save_for_backward(q, k, v, o, p)
        return o

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        return (*native.attention_backward(*ctx.saved_tensors, grad.contiguous()), None, None)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    causal: bool = False,
    kernel: str = "auto",
) -> torch.Tensor:
    """softmax(q kᵀ/√d) v (B, H, Lq, d) with key mask (B, Lk) (True: attend) and/or causal masking (query i
    sees keys j ≤ i). ``kernel`` (one of :data:`SAMPLE_KERNELS`): the C kernels (:class:`Attention`, float32
    on the CPU), ``F.scaled_dot_product_attention`` ("eager"), or the first where it applies ("auto"). At the
    sizes of this package the flash-attention CPU kernel spent 0.2 ms per forward and 0.6 ms per backward
    call, a sixth of a question-only GRPO step."""
    if _native_attention(kernel, q.device, q.dtype):
        return Attention.apply(q, k, v, None if mask is None else mask.contiguous(), causal)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask[:, None, None, :],
                                          is_causal=causal)  # fmt: skip


def _embed(stack, tokens: torch.Tensor, start: int) -> torch.Tensor:
    """LN_emb(s · E[y] + P[start + j]) (·, L, D) of ``tokens`` (·, L) by a ``BartEncoder`` or ``BartDecoder``
    ``stack``: scaled token embeddings, learned positions (whose rows start at ``offset``), layer norm."""
    x = F.embedding(tokens, stack.embed_tokens.weight)
    if stack.embed_tokens.embed_scale != 1.0:
        x = x * stack.embed_tokens.embed_scale
    first = start + stack.embed_positions.offset  # BART's learned positions start at row 2
    return stack.layernorm_embedding(x + stack.embed_positions.weight[first : first + tokens.shape[1]])


def encode(
    model: HyperR1ForConditionalGeneration, input_ids: torch.Tensor, attention_mask: torch.Tensor, kernel: str = "auto"
) -> torch.Tensor:
    """Encoder states (B, S, D) of the prompts: ``BartEncoder`` (post-LN blocks: self-attention over the
    unmasked prompt tokens, GELU MLP) written against its weights, with :func:`attention` by ``kernel``.
    A model in training mode with any encoder dropout or layer drop configured runs ``BartEncoder``
    itself, which applies them (the package's configs have none: GRPO's ratio wants a deterministic policy)."""
    cfg = model.config
    if model.training and any(
        getattr(cfg, name, 0.0) for name in ("dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop")
    ):
        return model.encode(input_ids, attention_mask)
    enc = model.model.encoder
    x = _embed(enc, input_ids, 0)  # (B, S, D)
    mask = attention_mask.bool()
    for layer in enc.layers:
        sa = layer.self_attn
        q, k, v = (_heads(proj(x), sa.num_heads) for proj in (sa.q_proj, sa.k_proj, sa.v_proj))
        x = layer.self_attn_layer_norm(x + sa.out_proj(_merge(attention(q, k, v, mask=mask, kernel=kernel))))
        x = layer.final_layer_norm(x + layer.fc2(layer.activation_fn(layer.fc1(x))))
    return x


def inference_head(model: HyperR1ForConditionalGeneration):
    """``model.logits`` for a run of decoding steps: the prototypes' half of the distance
    computation is built once (:class:`hyperr1.native.dispatch.DistanceLogits`), same values."""
    head = model.head
    if model.config.head != "poincare" or head.squared:
        return model.logits
    fixed = DistanceLogits(
        head.prototypes, c=head.ball.c, alpha=-head.log_scale.exp(), bias=head.bias, kernel=head.kernel
    )
    return lambda hidden: fixed(model.projection(hidden))  # (N, D) → (N, V)


def cross_kv(model: HyperR1ForConditionalGeneration, enc: torch.Tensor) -> KV:
    """Per decoder layer, cross-attention keys and values (B, H, S, d_h) of the encoder states."""
    kv = []
    for layer in model.model.decoder.layers:
        attn = layer.encoder_attn
        kv.append((_heads(attn.k_proj(enc), attn.num_heads), _heads(attn.v_proj(enc), attn.num_heads)))
    return kv


def fused_qkv(model: HyperR1ForConditionalGeneration) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per decoder layer, the stacked self-attention projections [W_q; W_k; W_v] (3D, D) and biases."""
    fused = []
    for layer in model.model.decoder.layers:
        sa = layer.self_attn
        weight = torch.cat([sa.q_proj.weight, sa.k_proj.weight, sa.v_proj.weight])
        fused.append((weight, torch.cat([sa.q_proj.bias, sa.k_proj.bias, sa.v_proj.bias])))
    return fused


def decode(
    model: HyperR1ForConditionalGeneration,
    tokens: torch.Tensor,
    start: int,
    cross: KV,
    enc_mask: torch.Tensor,
    cache: KV | None = None,
    qkv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    native_attention: bool = False,
    kernel: str = "auto",
) -> torch.Tensor:
    """Decoder states (N, L, D) of ``tokens`` (N, L) at positions start..start+L−1.

    The same computation as ``BartDecoder`` (post-LN blocks: causal self-attention, cross-
    attention, GELU MLP) written against its weights. With ``cache`` (per layer, preallocated
    keys and values (N, H, T_max, d_h)) the new keys/values are written at ``start`` and the
    queries attend to every cached position before them; without it, causal attention over
    ``tokens`` alone (training). ``cross`` holds one (B, H, S, d_h) pair per layer for the
    B prompts, whose N/B samples are consecutive rows of ``tokens``; ``enc_mask`` (B, 1, 1, S)
    is True at real prompt tokens. ``qkv`` optionally holds :func:`fused_qkv` for a run of steps.
    ``native_attention`` (one token per row, with a cache, float32 CPU) runs both attentions through
    the C kernel :func:`hyperr1.native.attend`, same values to float rounding; the keys of ``cache``
    and ``cross`` are then stored transposed, (·, H, d_h, positions), and all of them contiguous.
    Without a cache (teacher forcing) both attentions go through :func:`attention` by ``kernel``.
    """
    dec = model.model.decoder
    n, length = tokens.shape
    if cache is not None and start > 0 and length > 1:
        raise ValueError("with a cache, a block of several tokens can only be decoded from position 0")
    x = _embed(dec, tokens, start)  # (N, L, D)
    qkv = qkv or fused_qkv(model)
    if native_attention and (cache is None or length != 1):
        raise ValueError("native_attention decodes one token per row against a cache")
    for i, layer in enumerate(dec.layers):
        sa = layer.self_attn
        if native_attention:  # one query per row against the cache, in C
            q, k, v = F.linear(x[:, 0], *qkv[i]).chunk(3, dim=-1)  # (N, D) each
            kt_all, v_all = cache[i]  # keys transposed: (N, H, d_h, T_max)
            kt_all[:, :, :, start] = k.view(n, sa.num_heads, -1)
            v_all[:, :, start] = v.view(n, sa.num_heads, -1)
            a = native.attend(q, kt_all, v_all, start + 1)[:, None]  # (N, 1, D)
        else:
            q, k, v = (_heads(t, sa.num_heads) for t in F.linear(x, *qkv[i]).chunk(3, dim=-1))
            if cache is not None:
                k_all, v_all = cache[i]
                k_all[:, :, start : start + length] = k
                v_all[:, :, start : start + length] = v
                k, v = k_all[:, :, : start + length], v_all[:, :, : start + length]
                # one new query attends to every cached key; a block of L > 1 queries attends causally
                a = _merge(F.scaled_dot_product_attention(q, k, v, is_causal=length > 1))
            else:  # teacher forcing: causal attention over the tokens
                a = _merge(attention(q, k, v, causal=True, kernel=kernel))
        x = layer.self_attn_layer_norm(x + sa.out_proj(a))
        ca = layer.encoder_attn
        ck, cv = cross[i]  # (B, H, S, d_h), keys transposed for native_attention: once per prompt
        b, h, s_len, d_h = cv.shape
        g = n // b
        if native_attention:  # the G rows of a prompt are G queries against its keys
            a = native.attend(ca.q_proj(x[:, 0]), ck, cv, s_len, enc_mask.view(b, s_len))[:, None]
        else:
            # the G samples of a prompt become G·L queries against that prompt's keys: (B, H, G·L, d_h)
            q = ca.q_proj(x).view(b, g, length, h, d_h).permute(0, 3, 1, 2, 4).reshape(b, h, g * length, d_h)
            if cache is None:
                a = attention(q, ck, cv, mask=enc_mask.view(b, s_len), kernel=kernel)
            else:
                a = F.scaled_dot_product_attention(q, ck, cv, attn_mask=enc_mask)
            a = a.view(b, h, g, length, d_h).permute(0, 2, 3, 1, 4).reshape(n, length, h * d_h)  # (N, L, D)
        x = layer.encoder_attn_layer_norm(x + ca.out_proj(a))
        x = layer.final_layer_norm(x + layer.fc2(layer.activation_fn(layer.fc1(x))))
    return x


def prepare(
    model: HyperR1ForConditionalGeneration,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    num_samples: int,
    kernel: str = "auto",
) -> tuple[KV, torch.Tensor]:
    """Encode each prompt once; its cross keys/values serve all its ``num_samples`` rows.

    Returns the per-layer cross keys/values [(B, H, S, d_h)] and the prompt mask (B, 1, 1, S).
    """
    max_pos = model.config.max_position_embeddings
    if input_ids.dim() != 2 or input_ids.shape != attention_mask.shape:
        raise ValueError(
            f"expected (B, S) prompt ids and mask, got {tuple(input_ids.shape)}, {tuple(attention_mask.shape)}"
        )
    if input_ids.shape[1] > max_pos:
        raise ValueError(f"prompt of {input_ids.shape[1]} tokens exceeds max_position_embeddings={max_pos}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    enc = encode(model, input_ids, attention_mask, kernel)  # (B, S, D)
    return cross_kv(model, enc), attention_mask.bool()[:, None, None, :]


# ---------------------------------------------------------------- teacher forcing


def completion_logits(
    model: HyperR1ForConditionalGeneration,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completions: torch.Tensor,
    *,
    num_samples: int = 1,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Teacher-forced logits / T (N, T, V) of every position of ``completions`` (N, T), N = B·num_samples
    with the samples of one prompt contiguous; differentiable."""
    logits = model.logits(completion_states(model, input_ids, attention_mask, completions, num_samples=num_samples))
    return logits if temperature == 1.0 else logits / temperature  # T = 1: no copy of N·T·V floats (N, T, V)


def completion_states(
    model: HyperR1ForConditionalGeneration,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completions: torch.Tensor,
    *,
    num_samples: int = 1,
) -> torch.Tensor:
    """Teacher-forced decoder states (N, T, D) before the head, at every position of ``completions`` (N, T),
    N = B·num_samples with the samples of one prompt contiguous; differentiable."""
    n_expected = input_ids.shape[0] * num_samples
    if completions.dim() != 2 or completions.shape[0] != n_expected:
        raise ValueError(
            f"expected ({n_expected}, T) completions for {input_ids.shape[0]} prompts × "
            f"{num_samples} samples, got {tuple(completions.shape)}"
        )
    if completions.shape[1] > model.config.max_position_embeddings:
        raise ValueError(
            f"completion of {completions.shape[1]} tokens exceeds max_position_embeddings="
            f"{model.config.max_position_embeddings}"
        )
    cross, enc_mask = prepare(model, input_ids, attention_mask, num_samples)
    start = torch.full_like(completions[:, :1], model.config.decoder_start_token_id)
    dec_in = torch.cat([start, completions[:, :-1]], dim=1)  # (N, T): <s> y_1 .. y_{T-1}
    return decode(model, dec_in, 0, cross, enc_mask)


class TokenLogProbs(torch.autograd.Function):
    """log softmax(z)_y and the entropy of softmax(z) per position, in fewer passes over V than
    ``log_softmax`` + ``gather`` (+ the entropy) and their backward.

    With ℓ = logsumexp(z) and p = exp(z − ℓ)::

        log π_y = z_y − ℓ,      H = −Σ_v p_v log p_v = ℓ − Σ_v p_v z_v,      ∂ log π_y / ∂z = 1_y − p

    Forward keeps p (the one N·T·V buffer) for backward, which is one multiply and a scatter-add of
    the incoming gradient at y (on float32 CPU tensors one C pass per row,
    :func:`hyperr1.native.token_logprobs_backward`: 1.28 ms of PyTorch's broadcast multiply alone on the
    question-only GRPO step's 1,024 × 1,255 logits); the entropy is a metric and gets no gradient. On float32 CPU logits
    forward is the C kernel :func:`hyperr1.native.token_logprobs` (two passes per row, in L1),
    elsewhere PyTorch ops (logsumexp, exp, gather, a dot product: five passes, two fresh N·T·V
    buffers); both give the same values to float32 rounding (``tests/test_model.py``). On the
    1,024 × 1,255 logits of the question-only GRPO step of ``benchmarks/bench_grpo.py`` (one thread,
    thread CPU time, alternating in one process) the forward took 6.6–9.2 ms in PyTorch ops and
    0.73–0.75 ms in C; inside the step the C pass took 3.4 ms until :mod:`hyperr1.allocator` kept its
    output's pages mapped (1,255 page faults per call, 0.76 ms without them).
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, tokens: torch.Tensor, entropy: bool):  # (N, T, V), (N, T)
        if native.supports(logits) and native.sample_available():
            p, logp, ent = native.token_logprobs(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1))
            p, logp, ent = p.view(logits.shape), logp.view(tokens.shape), ent.view(tokens.shape)
        else:
            p, logp, ent = _token_logprobs_eager(logits, tokens, entropy)
        if not entropy:
            ent = torch.zeros_like(logp)
        ctx.save_for_backward(p, tokens)
        ctx.mark_non_differentiable(ent)
        return logp, ent

    @staticmethod
    def backward(ctx, grad_logp: torch.Tensor, _grad_entropy):
        p, tokens = ctx.saved_tensors
        if native.supports(p) and native.sample_available():  # one C pass per row
            v = p.shape[-1]
            g = grad_logp.reshape(-1).contiguous()
            return native.token_logprobs_backward(p.reshape(-1, v), tokens.reshape(-1), g).view(p.shape), None, None
        g = grad_logp.unsqueeze(-1)  # (N, T, 1)
        grad = (p * -g).scatter_add_(-1, tokens.unsqueeze(-1), g)  # (1_y − p) · g
        return grad, None, None


def _token_logprobs_eager(logits: torch.Tensor, tokens: torch.Tensor, entropy: bool = True):
    """:class:`TokenLogProbs`' forward in PyTorch ops: (p (N, T, V), log π_y (N, T), H (N, T) or None)."""
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # (N, T, 1)
    p = (logits - lse).exp_()  # (N, T, V)
    logp = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - lse.squeeze(-1)  # (N, T)
    ent = lse.squeeze(-1) - torch.linalg.vecdot(p, logits) if entropy else None
    return p, logp, ent


def completion_logprobs(
    model: HyperR1ForConditionalGeneration,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completions: torch.Tensor,
    *,
    num_samples: int = 1,
    temperature: float = 1.0,
    return_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced log π(y_t | x, y_<t) (N, T) of ``completions``; with ``return_entropy`` also
    the entropy H(π(· | x, y_<t)) = −Σ_v π_v log π_v per position (N, T)."""
    hidden = completion_states(model, input_ids, attention_mask, completions, num_samples=num_samples)  # (N, T, D)
    fused = _distance_logprobs(model, hidden, completions, temperature)
    if fused is not None:
        logp, entropy = fused
    else:
        logits = model.logits(hidden)  # (N, T, V)
        logits = logits if temperature == 1.0 else logits / temperature  # T = 1: no copy of N·T·V floats
        logp, entropy = TokenLogProbs.apply(logits, completions, return_entropy)  # (N, T) each
    return (logp, entropy) if return_entropy else logp


def _distance_logprobs(model, hidden: torch.Tensor, completions: torch.Tensor, temperature: float):
    """(log π, H) (N, T) each straight from the Poincaré head's distances (:func:`hyperr1.native.dispatch.
    distance_logprobs`, no N·T·V logits in memory), or None where that does not apply: a Euclidean or
    squared-distance head, or a kernel other than the native one."""
    head = model.head
    if model.config.head != "poincare" or head.squared:
        return None
    z = model.projection(hidden)  # (N, T, k) on the ball
    flat = z.reshape(-1, z.shape[-1])
    if dispatch.resolve_kernel(head.kernel, flat) != "native":
        return None
    logp, entropy = dispatch.distance_logprobs(
        flat, head.prototypes, completions, c=head.ball.c, alpha=-head.log_scale.exp(), bias=head.bias,
        temperature=temperature,
    )  # fmt: skip
    return logp.view(completions.shape), entropy.view(completions.shape)


def completion_log_distribution(
    model: HyperR1ForConditionalGeneration,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completions: torch.Tensor,
    *,
    num_samples: int = 1,
    temperature: float = 1.0,
) -> torch.Tensor:
    """The full teacher-forced next-token distribution log softmax(logits / T) (N, T, V) at every
    position of ``completions`` — what logit distillation compares (Hinton et al. 2015). Gathering
    it at the completion's tokens gives :func:`completion_logprobs` to float rounding."""
    logits = completion_logits(
        model, input_ids, attention_mask, completions, num_samples=num_samples, temperature=temperature
    )
    return logits.log_softmax(-1)


# ---------------------------------------------------------------- sampling


def sample(
    model: HyperR1ForConditionalGeneration,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    num_samples: int = 1,
    max_new_tokens: int = 64,
    greedy: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    kernel: str = "auto",
) -> SampleOutput:
    """Draw ``num_samples`` completions per prompt (prompt-major rows), stopping each sequence
    at its end-of-sequence token; ``greedy`` takes the argmax instead.

    Log-probabilities are those of the tempered distribution softmax(logits / T) before
    top-k/top-p filtering, i.e. of the policy being trained when T = 1.

    ``kernel`` picks the per-step draw and attention: ``"eager"`` (log_softmax, exp,
    :func:`sample_categorical`; ``scaled_dot_product_attention``), ``"native"`` (the C kernels
    :func:`hyperr1.native.sample_rows`, one pass per row over float32 CPU logits, and
    :func:`hyperr1.native.attend`, both attentions of a step) or ``"auto"`` (native where it applies
    and builds: CPU, float32; the draw also needs no top-k/top-p). Both draw one uniform per row from
    ``generator`` and invert the same CDF, so they give the same tokens up to float rounding at a
    CDF boundary, and log-probabilities within float32 rounding.
    """
    if kernel not in SAMPLE_KERNELS:
        raise ValueError(f"unknown sampling kernel {kernel!r}; known: {list(SAMPLE_KERNELS)}")
    if temperature <= 0 and not greedy:
        raise ValueError(f"temperature must be > 0 for sampling, got {temperature}")
    if not 0 < top_p <= 1 or top_k < 0:
        raise ValueError(f"need top_p in (0, 1] and top_k >= 0, got top_p={top_p}, top_k={top_k}")
    max_pos = model.config.max_position_embeddings
    if not 1 <= max_new_tokens <= max_pos:
        raise ValueError(f"max_new_tokens must be in [1, {max_pos}], got {max_new_tokens}")
    with torch.inference_mode():  # lighter than no_grad for a loop of small ops
        out = _draw(
            model, input_ids, attention_mask, num_samples, max_new_tokens, greedy, temperature, top_k, top_p, generator,
            kernel,
        )  # fmt: skip
    # inference tensors cannot enter autograd later (training re-scores these tokens): plain copies
    return SampleOutput(*(t.clone() for t in out))


def _native_draw(kernel: str, filtered: bool, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether :func:`sample` draws with the C kernel (``kernel`` as there)."""
    applies = not filtered and device.type == "cpu" and dtype == torch.float32
    if kernel == "native":
        if not applies:
            raise ValueError("kernel='native' samples float32 CPU logits without top-k/top-p; use 'auto' or 'eager'")
        native.sample_library()  # raises NativeUnavailable with the compiler's message
        return True
    return kernel == "auto" and applies and native.sample_available()


def _native_attention(kernel: str, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether :func:`sample` and :func:`attention` attend with the C kernels (``kernel`` as there)."""
    if kernel not in SAMPLE_KERNELS:
        raise ValueError(f"unknown attention kernel {kernel!r}; known: {list(SAMPLE_KERNELS)}")
    applies = device.type == "cpu" and dtype == torch.float32
    if kernel == "native":
        if not applies:
            raise ValueError("kernel='native' decodes float32 on the CPU; use 'auto' or 'eager'")
        return True
    return kernel == "auto" and applies and native.sample_available()


ATTEND_BLOCK = 16
"""SCORE_BLOCK of ``sample_kernels.c``: the C attention's buffers hold whole blocks of positions."""


def _blocked_cross(cross: KV, enc_mask: torch.Tensor) -> tuple[KV, torch.Tensor]:
    """The prompt keys transposed (B, H, d_h, S'), the values (B, H, S', d_h) and the mask (B, 1, 1, S'),
    contiguous and padded with masked positions to S' = S rounded up to ATTEND_BLOCK."""
    pad = -enc_mask.shape[-1] % ATTEND_BLOCK
    blocked = [
        (F.pad(k.transpose(2, 3), (0, pad)).contiguous(), F.pad(v, (0, 0, 0, pad)).contiguous()) for k, v in cross
    ]
    return blocked, F.pad(enc_mask, (0, pad), value=False).contiguous()


def native_decoder(
    model: HyperR1ForConditionalGeneration, cross: KV, enc_mask: torch.Tensor, num_samples: int, t_max: int
) -> native.DecoderStep | None:
    """The whole decoder stack of a sampling step as one C call (:class:`hyperr1.native.DecoderStep`)
    for the blocked prompt keys and values of :func:`_blocked_cross`, or None where it does not apply:
    a decoder whose MLP is not GELU (the C step computes gelu(u) = u·(1 + erf(u/√2))/2, BART's
    default) or whose layer norms differ in ε. Same values as :func:`decode` to float rounding."""
    cfg, dec = model.config, model.model.decoder
    norms = [dec.layernorm_embedding] + [
        m for layer in dec.layers for m in (layer.self_attn_layer_norm, layer.encoder_attn_layer_norm,
                                            layer.final_layer_norm)
    ]  # fmt: skip
    if cfg.activation_function != "gelu" or len({m.eps for m in norms}) != 1 or any(
        m.weight is None or m.bias is None for m in norms
    ):
        return None
    packed = []
    for layer, (w_qkv, b_qkv) in zip(dec.layers, fused_qkv(model), strict=True):
        sa, ca = layer.self_attn, layer.encoder_attn
        packed += [w_qkv.t(), b_qkv, sa.out_proj.weight.t(), sa.out_proj.bias, layer.self_attn_layer_norm.weight,
                   layer.self_attn_layer_norm.bias, ca.q_proj.weight.t(), ca.q_proj.bias, ca.out_proj.weight.t(),
                   ca.out_proj.bias, layer.encoder_attn_layer_norm.weight, layer.encoder_attn_layer_norm.bias,
                   layer.fc1.weight.t(), layer.fc1.bias, layer.fc2.weight.t(), layer.fc2.bias,
                   layer.final_layer_norm.weight, layer.final_layer_norm.bias]  # fmt: skip
    weights = torch.cat([t.detach().reshape(-1) for t in packed])  # the order of sample_kernels.c
    b, h, d_h, s_max = cross[0][0].shape
    n, layers = b * num_samples, len(dec.layers)
    return native.DecoderStep(
        weights, layers=layers, heads=h, d_model=cfg.d_model, ffn_dim=dec.layers[0].fc1.out_features,
        embed=dec.embed_tokens.weight.detach(), embed_scale=float(dec.embed_tokens.embed_scale),
        positions=dec.embed_positions.weight.detach()[dec.embed_positions.offset :],
        ln_embedding=torch.stack([dec.layernorm_embedding.weight, dec.layernorm_embedding.bias]).detach(),
        eps=norms[0].eps, num_samples=num_samples,
        self_kt=weights.new_zeros(layers, n, h, d_h, t_max), self_v=weights.new_zeros(layers, n, h, t_max, d_h),
        cross_kt=torch.stack([k for k, _ in cross]), cross_v=torch.stack([v for _, v in cross]),
        mask=enc_mask.view(b, s_max),
    )  # fmt: skip


def native_head(model: HyperR1ForConditionalGeneration, rows: int, temperature: float) -> native.HeadDraw | None:
    """The head and the draw of a sampling step as one C call (:class:`hyperr1.native.HeadDraw`) for
    ``rows`` rows at ``temperature``, or None where it does not apply: a squared-distance head, a head
    asking for the PyTorch-ops kernel (``head_kernel="eager"``), or a projection without clipping or
    whose clipped points can reach the ball's float margin (√c·r ≥ 3, where
    :func:`hyperr1.geometry.clipped_expmap0` projects). Same logits as ``model.logits`` to float
    rounding, the same draw as :func:`hyperr1.native.sample_rows`."""
    head, proj = model.head, model.projection
    if model.config.head == "euclidean":
        return native.HeadDraw(
            projection=proj.weight.detach(), projection_bias=_bias_or_zeros(proj.bias, proj.out_features),
            factor=head.weight.detach().t().contiguous(), bias=_bias_or_zeros(head.bias, head.out_features),
            poincare=False, temperature=temperature, rows=rows,
        )  # fmt: skip
    y = head.prototypes.detach()
    c = geometry.as_curvature(head.ball.c, y).detach()
    if head.squared or head.kernel == "eager" or proj.clip_r is None or float(c.sqrt()) * proj.clip_r >= 3.0:
        return None
    return native.HeadDraw(
        projection=proj.linear.weight.detach(), projection_bias=_bias_or_zeros(proj.linear.bias, y.shape[1]),
        factor=geometry.right_factor(y, c=c).T.contiguous(), bias=_bias_or_zeros(head.bias, y.shape[0]), poincare=True,
        c=float(c), clip_r=proj.clip_r, alpha=float(-head.log_scale.detach().exp() / c.sqrt()),
        temperature=temperature, rows=rows,
    )  # fmt: skip


def _draw(
    model, input_ids, attention_mask, num_samples, max_new_tokens, greedy, temperature, top_k, top_p, generator, kernel
):
    """The sampling loop of :func:`sample` (arguments as there, already checked)."""
    cfg = model.config
    cross, enc_mask = prepare(model, input_ids, attention_mask, num_samples, kernel)
    n, device = enc_mask.shape[0] * num_samples, input_ids.device
    heads, d_h = cfg.decoder_attention_heads, cfg.d_model // cfg.decoder_attention_heads
    filtered = top_k > 0 or top_p < 1.0
    use_native = _native_draw(kernel, filtered, device, cross[0][0].dtype)  # the logits' dtype and device
    fast = _native_attention(kernel, device, cross[0][0].dtype)
    if fast:  # the C attention reads keys transposed, (·, H, d_h, positions), in whole blocks of positions
        cross, enc_mask = _blocked_cross(cross, enc_mask)
    t_cache = -(-max_new_tokens // ATTEND_BLOCK) * ATTEND_BLOCK if fast else max_new_tokens
    step = native_decoder(model, cross, enc_mask, num_samples, t_cache) if fast else None  # holds its own cache
    cache = [
        (cross[0][0].new_zeros(n, heads, t_cache, d_h), cross[0][0].new_zeros(n, heads, t_cache, d_h))
        for _ in range(cfg.decoder_layers if step is None else 0)
    ]  # (N, H, T_max, d_h) per layer; for the C attention the keys (N, H, d_h, T_max)
    if fast:
        cache = [(kt.view(n, heads, d_h, t_cache), v) for kt, v in cache]
    head_draw = native_head(model, n, 1.0 if greedy else temperature) if step is not None and use_native else None
    head = inference_head(model) if head_draw is None else None  # the per-op head and q|k|v: only where used
    qkv = fused_qkv(model) if step is None else None
    tokens = torch.full((n, max_new_tokens), cfg.pad_token_id, dtype=torch.long, device=device)
    logprobs = torch.zeros(n, max_new_tokens, device=device)
    mask = torch.zeros(n, max_new_tokens, dtype=torch.bool, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    last = torch.full((n, 1), cfg.decoder_start_token_id, dtype=torch.long, device=device)
    for t in range(max_new_tokens):
        if head_draw is not None:  # decoder stack, then head, draw and bookkeeping: two C calls a step
            u = None if greedy else torch.rand(n, 1, generator=generator, dtype=torch.float32).squeeze(1)
            hidden = step(last.view(n), t)  # (N, D)
            finished = head_draw(hidden, u, done, tokens, logprobs, mask, t, pad=cfg.pad_token_id, eos=cfg.eos_token_id)
            if finished == n:
                tokens, logprobs, mask = tokens[:, : t + 1], logprobs[:, : t + 1], mask[:, : t + 1]
                break
            last = head_draw.next
            continue
        if step is not None:  # the whole decoder stack in one C call
            logits = head(step(last.view(n), t))  # (N, V)
        else:
            logits = head(decode(model, last, t, cross, enc_mask, cache, qkv, native_attention=fast)[:, -1])
        if not greedy and temperature != 1.0:
            logits = logits / temperature
        if use_native:  # the uniforms sample_categorical would draw, one per row
            u = None if greedy else torch.rand(n, 1, generator=generator, dtype=logits.dtype).squeeze(1)
            nxt, logp = native.sample_rows(logits, u)
        else:
            logp_all = logits.log_softmax(-1)
            if greedy:
                nxt = logits.argmax(-1)
            else:
                probs = filter_logits(logits, top_k=top_k, top_p=top_p).softmax(-1) if filtered else logp_all.exp()
                nxt = sample_categorical(probs, generator)  # (N,)
            logp = logp_all.gather(-1, nxt[:, None]).squeeze(-1)
        nxt = nxt.masked_fill(done, cfg.pad_token_id)
        tokens[:, t] = nxt
        logprobs[:, t] = logp.masked_fill(done, 0.0)
        mask[:, t] = ~done
        done = done | (nxt == cfg.eos_token_id)
        if bool(done.all()):
            tokens, logprobs, mask = tokens[:, : t + 1], logprobs[:, : t + 1], mask[:, : t + 1]
            break
        last = nxt[:, None]
    return tokens, logprobs, mask


# ---------------------------------------------------------------- text in, text out


def encode_prompts(tokenizer, prompts: Sequence[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt ids and attention mask (B, S), right-padded."""
    enc = tokenizer(list(prompts), padding=True, return_tensors="pt")
    return enc.input_ids.to(device), enc.attention_mask.to(device)


_VOCABULARIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer → its tokens by id


def _tokens_by_id(tokenizer) -> list[str]:
    """Every id's token string, kept per tokenizer (listing 1,255 of them took 0.5 ms, about 1% of a
    GRPO step); listed again when the tokenizer has grown (tokens added)."""
    vocab = _VOCABULARIES.get(tokenizer)
    if vocab is None or len(vocab) != len(tokenizer):
        vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        _VOCABULARIES[tokenizer] = vocab
    return vocab


def decode_completions(tokenizer, tokens: torch.Tensor, mask: torch.Tensor) -> list[str]:
    """Completion ids (N, T) → text, the end-of-sequence token and padding dropped."""
    vocab = _tokens_by_id(tokenizer)
    eos = tokenizer.eos_token_id
    rows = []
    for ids, m in zip(tokens.tolist(), mask.tolist(), strict=True):
        rows.append(" ".join(vocab[i] for i, keep in zip(ids, m, strict=True) if keep and i != eos))
    return rows


class TextPolicy:
    """The model as an :class:`hyperr1.evaluate.Policy`: prompts (text) → completions (text).

    Prompts are tokenized and encoded in batches; sampling uses :func:`sample` with a seeded
    generator, so an evaluation is reproducible.
    """

    def __init__(self, model: HyperR1ForConditionalGeneration, tokenizer, *, max_new_tokens: int = 64, seed: int = 0):
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens
        self.generator = torch.Generator(device=model.device).manual_seed(seed)

    def __call__(self, prompts, *, num_samples: int, greedy: bool, temperature: float = 1.0, top_p: float = 1.0):
        was_training = self.model.training
        self.model.eval()
        ids, amask = encode_prompts(self.tokenizer, prompts, self.model.device)
        out = sample(
            self.model,
            ids,
            amask,
            num_samples=1 if greedy else num_samples,
            max_new_tokens=self.max_new_tokens,
            greedy=greedy,
            temperature=temperature,
            top_p=top_p,
            generator=self.generator,
        )
        self.model.train(was_training)
        texts = decode_completions(self.tokenizer, out.tokens, out.mask)
        k = 1 if greedy else num_samples
        return [texts[i * k : (i + 1) * k] for i in range(len(prompts))]


__all__ = [
    "SAMPLE_KERNELS",
    "SampleOutput",
    "TextPolicy",
    "completion_log_distribution",
    "completion_logits",
    "completion_logprobs",
    "decode",
    "decode_completions",
    "encode_prompts",
    "filter_logits",
    "sample",
    "sample_categorical",
]

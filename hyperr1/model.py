"""The policy: a small encoder–decoder transformer whose output layer lives on the Poincaré ball.

The encoder reads the prompt, the decoder writes the completion; both are ``transformers``' BART
blocks (post-LayerNorm, learned positions) at a tiny size. Only the output layer differs between
the two heads being compared::

    decoder state h ∈ R^D ──┬─ head="poincare":  z = exp₀(clip_r(W h + b)) ∈ B^k_c,
                            │                    logit_v = −s · d_c(z, p_v) + b_v   (p_v on the ball)
                            └─ head="euclidean": z = W h + b ∈ R^k,  logit_v = u_vᵀ z + b_v

``k = head_dim`` is set independently of the width ``D``; every vocabulary token, and so every
concept of the hierarchy, owns a prototype p_v (a ``geoopt.ManifoldParameter``) or a row u_v.

:class:`HyperR1ForConditionalGeneration` is a ``PreTrainedModel`` with ``GenerationMixin``:
``save_pretrained`` / ``from_pretrained`` (safetensors) and ``generate()`` work as for any
Hugging Face seq2seq model, and the Auto classes know the ``"hyperr1"`` model type.

For training and sampling it also has a lean path (:meth:`~HyperR1ForConditionalGeneration.sample`,
:meth:`~HyperR1ForConditionalGeneration.completion_logprobs`) that runs the same BART weights
through ``scaled_dot_product_attention`` with a preallocated key/value cache: the encoder runs
once per prompt, the cross-attention keys and values are projected once per prompt, and each
decoding step costs one token's worth of work. ``tests/test_model.py`` checks that the lean path
gives the logits of the Hugging Face forward to float precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import geoopt
import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModelForSeq2SeqLM, BartConfig, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput
from transformers.models.bart.modeling_bart import BartModel

from hyperr1 import geometry
from hyperr1.nn import HyperbolicDistanceHead, PoincareProjection

HEADS = ("poincare", "euclidean")


@strict
class HyperR1Config(BartConfig):
    """Configuration of the policy: BART's fields (widths, layers, token ids) plus the head.

    Defaults give a 2 + 2 layer model of width 64 (about 0.3 M parameters with the mammals
    vocabulary); dropout is off because GRPO's importance ratio assumes a deterministic policy.
    """

    model_type = "hyperr1"

    vocab_size: int = 1255  # V: tokens (the mammals tokenizer has 1,255)
    d_model: int = 64  # D: width of encoder and decoder
    encoder_layers: int | None = 2
    decoder_layers: int | None = 2
    encoder_attention_heads: int | None = 4
    decoder_attention_heads: int | None = 4
    encoder_ffn_dim: int | None = 256
    decoder_ffn_dim: int | None = 256
    max_position_embeddings: int = 128  # longest prompt and longest completion, in tokens
    dropout: float | int | None = 0.0
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    decoder_start_token_id: int | None = 1  # the decoder starts from <s>
    forced_eos_token_id: int | list[int] | None = None
    tie_word_embeddings: bool = True  # encoder and decoder share the token embedding (there is no LM head)
    head: str = "poincare"  # output layer: "poincare" (distance head on the ball) or "euclidean" (linear)
    head_dim: int = 16  # k: dimension of the head's space, independent of D
    curvature: float = 1.0  # c of the ball B^k_c (radius 1/√c)
    learn_curvature: bool = False  # make c a trainable parameter (shared by projection and head)
    clip_r: float | None = 2.0  # r of the feature clipping before exp₀ (Guo et al. 2022); None: off
    head_init_scale: float = 5.0  # initial s of logit_v = −s·d(z, p_v) + b_v
    head_kernel: str = "auto"  # distance kernel of the Poincaré head (see hyperr1.geometry.KERNELS)

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; known heads: {list(HEADS)}")
        if self.head_dim < 1:
            raise ValueError(f"head_dim must be >= 1, got {self.head_dim}")
        if self.head_kernel not in geometry.KERNELS:
            raise ValueError(f"unknown head_kernel {self.head_kernel!r}; known: {list(geometry.KERNELS)}")
        if self.curvature <= 0:
            raise ValueError(f"curvature must be > 0, got {self.curvature}")
        for side in ("encoder", "decoder"):
            heads = getattr(self, f"{side}_attention_heads")
            if self.d_model % heads:
                raise ValueError(f"d_model={self.d_model} is not divisible by {side}_attention_heads={heads}")


@dataclass
class SampleOutput:
    """Completions drawn by :meth:`HyperR1ForConditionalGeneration.sample` (N = prompts × samples)."""

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


class HyperR1PreTrainedModel(PreTrainedModel):
    config_class = HyperR1Config
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        # BART's normal(0, init_std) for linear and embedding weights; the Poincaré head's
        # prototypes, scale and curvature keep the initialisation of hyperr1.nn.
        std = self.config.init_std
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class HyperR1ForConditionalGeneration(HyperR1PreTrainedModel, GenerationMixin):
    """Encoder–decoder policy with a Poincaré or Euclidean output head (see the module docstring)."""

    def __init__(self, config: HyperR1Config):
        super().__init__(config)
        self.model = BartModel(config)
        k, vocab = config.head_dim, config.vocab_size
        if config.head == "poincare":
            ball = geometry.PoincareBall(c=config.curvature, learnable=config.learn_curvature)
            self.projection = PoincareProjection(config.d_model, k, clip_r=config.clip_r, ball=ball)
            self.head = HyperbolicDistanceHead(
                k, vocab, ball=ball, init_scale=config.head_init_scale, kernel=config.head_kernel
            )
            # projection and head share one ball (one curvature); tell save_pretrained it is tied
            self._tied_weights_keys = {**(self._tied_weights_keys or {}), "projection.ball.isp_c": "head.ball.isp_c"}
        else:
            self.projection = nn.Linear(config.d_model, k)
            self.head = nn.Linear(k, vocab)
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """``PreTrainedModel.from_pretrained``, then the ball's points are ManifoldParameters again.

        The Hugging Face loader materialises every weight as a plain ``nn.Parameter``; geoopt's
        optimizers only take Riemannian steps on ``ManifoldParameter``s, so they are rewrapped
        here (values unchanged, bit for bit).
        """
        model = super().from_pretrained(*args, **kwargs)
        model.restore_manifold_parameters()
        return model

    def restore_manifold_parameters(self) -> None:
        """Rewrap the Poincaré head's prototypes as a ``ManifoldParameter`` on its ball and
        freeze the curvature again unless ``learn_curvature``."""
        if self.config.head != "poincare":
            return
        ball = self.head.ball  # the loader also makes every tensor trainable, a fixed c included
        ball.isp_c.requires_grad_(bool(self.config.learn_curvature))
        p = self.head.prototypes
        if not isinstance(p, geoopt.ManifoldParameter):
            self.head.prototypes = geoopt.ManifoldParameter(p.detach(), manifold=ball, requires_grad=p.requires_grad)

    def load_weights(self, path) -> None:
        """Load, in place, the ``model.safetensors`` that ``save_pretrained`` wrote into ``path``.

        Parameters keep their identity (ManifoldParameters stay ManifoldParameters, optimizers stay
        attached); a file that does not match the model raises ``ValueError``. Tied copies, which
        ``save_pretrained`` leaves out, are the only keys allowed to be missing.
        """
        from safetensors.torch import load_file

        missing, unexpected = self.load_state_dict(load_file(Path(path) / "model.safetensors"), strict=False)
        if unexpected or set(missing) - set(self.all_tied_weights_keys):
            raise ValueError(f"weights in {path} do not match the model: missing {missing}, unexpected {unexpected}")

    # ---------------------------------------------------------------- Hugging Face interface

    def get_encoder(self):
        return self.model.get_encoder()

    def get_decoder(self):
        return self.model.get_decoder()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.shared

    def get_output_embeddings(self):
        return None  # the head is not a tied linear layer

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Decoder states (..., D) → vocabulary logits (..., V) through the head."""
        return self.head(self.projection(hidden))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        cache=None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> Seq2SeqLMOutput:
        """Teacher-forced forward as BART's: logits (B, T, V); with ``labels`` the mean token
        cross-entropy over positions whose label is not ``-100``."""
        cache = kwargs.pop("past_key_values", cache)
        if labels is not None:
            use_cache = False
        out = self.model(
            input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            encoder_outputs=encoder_outputs,
            cache=cache,
            use_cache=use_cache,
            **kwargs,
        )
        logits = self.logits(out.last_hidden_state)  # (B, T, V)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        return Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            cache=out.cache,
            encoder_last_hidden_state=out.encoder_last_hidden_state,
        )

    # ---------------------------------------------------------------- lean path

    def _inference_head(self):
        """:meth:`logits` for a run of decoding steps: the prototypes' half of the distance
        computation is built once (:class:`hyperr1.geometry.DistanceLogits`), same values."""
        head = self.head
        if self.config.head != "poincare" or head.squared:
            return self.logits
        fixed = geometry.DistanceLogits(
            head.prototypes, c=head.ball.c, alpha=-head.log_scale.exp(), bias=head.bias, kernel=head.kernel
        )
        return lambda hidden: fixed(self.projection(hidden))  # (N, D) → (N, V)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Encoder states (B, S, D) of the prompts."""
        return self.model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def _cross_kv(self, enc: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per decoder layer, cross-attention keys and values (B, H, S, d_h) of the encoder states."""
        kv = []
        for layer in self.model.decoder.layers:
            attn = layer.encoder_attn
            kv.append((_heads(attn.k_proj(enc), attn.num_heads), _heads(attn.v_proj(enc), attn.num_heads)))
        return kv

    def _decode(
        self,
        tokens: torch.Tensor,
        start: int,
        cross_kv: list[tuple[torch.Tensor, torch.Tensor]],
        enc_mask: torch.Tensor,
        cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        qkv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """Decoder states (N, L, D) of ``tokens`` (N, L) at positions start..start+L−1.

        The same computation as ``BartDecoder`` (post-LN blocks: causal self-attention, cross-
        attention, GELU MLP) written against its weights. With ``cache`` (per layer, preallocated
        keys and values (N, H, T_max, d_h)) the new keys/values are written at ``start`` and the
        queries attend to every cached position before them; without it, causal attention over
        ``tokens`` alone (training). ``cross_kv`` holds one (B, H, S, d_h) pair per layer for the
        B prompts, whose N/B samples are consecutive rows of ``tokens``; ``enc_mask`` (B, 1, 1, S)
        is True at real prompt tokens. ``qkv`` optionally holds :meth:`_fused_qkv` for a run of steps.
        """
        dec = self.model.decoder
        n, length = tokens.shape
        if cache is not None and start > 0 and length > 1:
            raise ValueError("with a cache, a block of several tokens can only be decoded from position 0")
        offset = dec.embed_positions.offset  # BART's learned positions start at row 2
        x = F.embedding(tokens, dec.embed_tokens.weight)  # (N, L, D)
        if dec.embed_tokens.embed_scale != 1.0:
            x = x * dec.embed_tokens.embed_scale
        x = x + dec.embed_positions.weight[start + offset : start + offset + length]
        x = dec.layernorm_embedding(x)
        qkv = qkv or self._fused_qkv()
        for i, layer in enumerate(dec.layers):
            sa = layer.self_attn
            q, k, v = (_heads(t, sa.num_heads) for t in F.linear(x, *qkv[i]).chunk(3, dim=-1))
            if cache is not None:
                k_all, v_all = cache[i]
                k_all[:, :, start : start + length] = k
                v_all[:, :, start : start + length] = v
                k, v = k_all[:, :, : start + length], v_all[:, :, : start + length]
            # one new query attends to every cached key; a block of L > 1 queries attends causally
            a = F.scaled_dot_product_attention(q, k, v, is_causal=length > 1)
            x = layer.self_attn_layer_norm(x + sa.out_proj(_merge(a)))
            ca = layer.encoder_attn
            ck, cv = cross_kv[i]  # (B, H, S, d_h): once per prompt, shared by its G samples
            b, h, _, d_h = ck.shape
            g = n // b
            # the G samples of a prompt become G·L queries against that prompt's keys: (B, H, G·L, d_h)
            q = ca.q_proj(x).view(b, g, length, h, d_h).permute(0, 3, 1, 2, 4).reshape(b, h, g * length, d_h)
            a = F.scaled_dot_product_attention(q, ck, cv, attn_mask=enc_mask)
            a = a.view(b, h, g, length, d_h).permute(0, 2, 3, 1, 4).reshape(n, length, h * d_h)  # (N, L, D)
            x = layer.encoder_attn_layer_norm(x + ca.out_proj(a))
            x = layer.final_layer_norm(x + layer.fc2(layer.activation_fn(layer.fc1(x))))
        return x

    def _fused_qkv(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per decoder layer, the stacked self-attention projections [W_q; W_k; W_v] and biases."""
        fused = []
        for layer in self.model.decoder.layers:
            sa = layer.self_attn
            fused.append(
                (
                    torch.cat([sa.q_proj.weight, sa.k_proj.weight, sa.v_proj.weight]),  # (3D, D)
                    torch.cat([sa.q_proj.bias, sa.k_proj.bias, sa.v_proj.bias]),
                )
            )
        return fused

    def _prepare(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_samples: int
    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """Encode each prompt once; its cross keys/values serve all its ``num_samples`` rows."""
        max_pos = self.config.max_position_embeddings
        if input_ids.dim() != 2 or input_ids.shape != attention_mask.shape:
            raise ValueError(
                f"expected (B, S) prompt ids and mask, got {tuple(input_ids.shape)}, {tuple(attention_mask.shape)}"
            )
        if input_ids.shape[1] > max_pos:
            raise ValueError(f"prompt of {input_ids.shape[1]} tokens exceeds max_position_embeddings={max_pos}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        enc = self.encode(input_ids, attention_mask)  # (B, S, D)
        return self._cross_kv(enc), attention_mask.bool()[:, None, None, :]  # [(B, H, S, d_h)] per layer, (B, 1, 1, S)

    def completion_logprobs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        completions: torch.Tensor,
        *,
        num_samples: int = 1,
        temperature: float = 1.0,
        return_entropy: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced log π(y_t | x, y_<t) (N, T) of ``completions`` (N, T), N = B·num_samples
        with the samples of one prompt contiguous; differentiable. With ``return_entropy`` also the
        entropy of π(· | x, y_<t) per position (N, T)."""
        n_expected = input_ids.shape[0] * num_samples
        if completions.dim() != 2 or completions.shape[0] != n_expected:
            raise ValueError(
                f"expected ({n_expected}, T) completions for {input_ids.shape[0]} prompts × "
                f"{num_samples} samples, got {tuple(completions.shape)}"
            )
        if completions.shape[1] > self.config.max_position_embeddings:
            raise ValueError(
                f"completion of {completions.shape[1]} tokens exceeds max_position_embeddings="
                f"{self.config.max_position_embeddings}"
            )
        cross_kv, enc_mask = self._prepare(input_ids, attention_mask, num_samples)
        start = torch.full_like(completions[:, :1], self.config.decoder_start_token_id)
        dec_in = torch.cat([start, completions[:, :-1]], dim=1)  # (N, T): <s> y_1 .. y_{T-1}
        logits = self.logits(self._decode(dec_in, 0, cross_kv, enc_mask)) / temperature  # (N, T, V)
        logp_all = logits.log_softmax(-1)
        logp = logp_all.gather(-1, completions.unsqueeze(-1)).squeeze(-1)  # (N, T)
        if not return_entropy:
            return logp
        entropy = -(logp_all.exp() * logp_all).sum(-1)  # (N, T)
        return logp, entropy

    def sample(
        self,
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
    ) -> SampleOutput:
        """Draw ``num_samples`` completions per prompt (prompt-major rows), stopping each sequence
        at its end-of-sequence token; ``greedy`` takes the argmax instead.

        Log-probabilities are those of the tempered distribution softmax(logits / T) before
        top-k/top-p filtering, i.e. of the policy being trained when T = 1.
        """
        with torch.inference_mode():  # lighter than no_grad for a loop of small ops
            out = self._draw(
                input_ids, attention_mask, num_samples, max_new_tokens, greedy, temperature, top_k, top_p, generator
            )
        # inference tensors cannot enter autograd later (training re-scores these tokens): plain copies
        return SampleOutput(*(t.clone() for t in out))

    def _draw(
        self, input_ids, attention_mask, num_samples, max_new_tokens, greedy, temperature, top_k, top_p, generator
    ):
        """The sampling loop of :meth:`sample` (arguments as there)."""
        if temperature <= 0 and not greedy:
            raise ValueError(f"temperature must be > 0 for sampling, got {temperature}")
        if not 0 < top_p <= 1 or top_k < 0:
            raise ValueError(f"need top_p in (0, 1] and top_k >= 0, got top_p={top_p}, top_k={top_k}")
        max_pos = self.config.max_position_embeddings
        if not 1 <= max_new_tokens <= max_pos:
            raise ValueError(f"max_new_tokens must be in [1, {max_pos}], got {max_new_tokens}")
        cfg = self.config
        cross_kv, enc_mask = self._prepare(input_ids, attention_mask, num_samples)
        n, device = enc_mask.shape[0] * num_samples, input_ids.device
        heads, d_h = cfg.decoder_attention_heads, cfg.d_model // cfg.decoder_attention_heads
        cache = [
            (
                cross_kv[0][0].new_empty(n, heads, max_new_tokens, d_h),
                cross_kv[0][0].new_empty(n, heads, max_new_tokens, d_h),
            )
            for _ in range(cfg.decoder_layers)
        ]
        head, qkv = self._inference_head(), self._fused_qkv()
        filtered = top_k > 0 or top_p < 1.0
        tokens = torch.full((n, max_new_tokens), cfg.pad_token_id, dtype=torch.long, device=device)
        logprobs = torch.zeros(n, max_new_tokens, device=device)
        mask = torch.zeros(n, max_new_tokens, dtype=torch.bool, device=device)
        done = torch.zeros(n, dtype=torch.bool, device=device)
        last = torch.full((n, 1), cfg.decoder_start_token_id, dtype=torch.long, device=device)
        for t in range(max_new_tokens):
            logits = head(self._decode(last, t, cross_kv, enc_mask, cache, qkv)[:, -1])  # (N, V)
            if not greedy and temperature != 1.0:
                logits = logits / temperature
            logp_all = logits.log_softmax(-1)
            if greedy:
                nxt = logits.argmax(-1)
            else:
                probs = filter_logits(logits, top_k=top_k, top_p=top_p).softmax(-1) if filtered else logp_all.exp()
                nxt = sample_categorical(probs, generator)  # (N,)
            nxt = nxt.masked_fill(done, cfg.pad_token_id)
            tokens[:, t] = nxt
            logprobs[:, t] = logp_all.gather(-1, nxt[:, None]).squeeze(-1).masked_fill(done, 0.0)
            mask[:, t] = ~done
            done = done | (nxt == cfg.eos_token_id)
            if bool(done.all()):
                tokens, logprobs, mask = tokens[:, : t + 1], logprobs[:, : t + 1], mask[:, : t + 1]
                break
            last = nxt[:, None]
        return tokens, logprobs, mask


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(N, L, D) → (N, H, L, D/H)."""
    n, length, d = x.shape
    return x.view(n, length, num_heads, d // num_heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(N, H, L, d_h) → (N, L, H·d_h)."""
    n, h, length, d_h = x.shape
    return x.transpose(1, 2).reshape(n, length, h * d_h)


def save_policy(model: HyperR1ForConditionalGeneration, path) -> None:
    """``save_pretrained`` without Hugging Face's per-shard progress bar (runs save often)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(path)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_policy(vocab_size: int, **overrides) -> HyperR1ForConditionalGeneration:
    """A freshly initialised policy for a vocabulary of ``vocab_size`` tokens."""
    return HyperR1ForConditionalGeneration(HyperR1Config(vocab_size=vocab_size, **overrides))


def encode_prompts(tokenizer, prompts: Sequence[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt ids and attention mask (B, S), right-padded."""
    enc = tokenizer(list(prompts), padding=True, return_tensors="pt")
    return enc.input_ids.to(device), enc.attention_mask.to(device)


def decode_completions(tokenizer, tokens: torch.Tensor, mask: torch.Tensor) -> list[str]:
    """Completion ids (N, T) → text, the end-of-sequence token and padding dropped."""
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    eos = tokenizer.eos_token_id
    rows = []
    for ids, m in zip(tokens.tolist(), mask.tolist(), strict=True):
        rows.append(" ".join(vocab[i] for i, keep in zip(ids, m, strict=True) if keep and i != eos))
    return rows


class TextPolicy:
    """The model as an :class:`hyperr1.evaluate.Policy`: prompts (text) → completions (text).

    Prompts are tokenized and encoded in batches; sampling uses :meth:`~HyperR1ForConditionalGeneration.sample`
    with a seeded generator, so an evaluation is reproducible.
    """

    def __init__(self, model: HyperR1ForConditionalGeneration, tokenizer, *, max_new_tokens: int = 64, seed: int = 0):
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens
        self.generator = torch.Generator(device=model.device).manual_seed(seed)

    def __call__(self, prompts, *, num_samples: int, greedy: bool, temperature: float = 1.0, top_p: float = 1.0):
        was_training = self.model.training
        self.model.eval()
        ids, amask = encode_prompts(self.tokenizer, prompts, self.model.device)
        out = self.model.sample(
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


AutoConfig.register("hyperr1", HyperR1Config)
AutoModelForSeq2SeqLM.register(HyperR1Config, HyperR1ForConditionalGeneration)

__all__ = [
    "HEADS",
    "HyperR1Config",
    "HyperR1ForConditionalGeneration",
    "SampleOutput",
    "TextPolicy",
    "build_policy",
    "count_parameters",
    "decode_completions",
    "encode_prompts",
    "filter_logits",
    "save_policy",
]

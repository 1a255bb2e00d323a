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
:meth:`~HyperR1ForConditionalGeneration.completion_logprobs`,
:meth:`~HyperR1ForConditionalGeneration.completion_log_distribution`), thin methods over
:mod:`hyperr1.decoding`: the same BART weights through ``scaled_dot_product_attention`` with a
preallocated key/value cache.

Loading is strict: :meth:`~HyperR1ForConditionalGeneration.from_pretrained` and
:meth:`~HyperR1ForConditionalGeneration.load_weights` refuse weights that do not fit the config,
non-finite tensors and prototypes outside the ball, naming the tensor.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import geoopt
import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModelForSeq2SeqLM, BartConfig, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput
from transformers.models.bart.modeling_bart import BartModel

from hyperr1 import decoding, geometry
from hyperr1.native.dispatch import KERNELS
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
    head_kernel: str = "auto"  # distance kernel of the Poincaré head (see hyperr1.native.dispatch.KERNELS)

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; known heads: {list(HEADS)}")
        if self.head_dim < 1:
            raise ValueError(f"head_dim must be >= 1, got {self.head_dim}")
        if self.head_kernel not in KERNELS:
            raise ValueError(f"unknown head_kernel {self.head_kernel!r}; known: {list(KERNELS)}")
        if self.curvature <= 0:
            raise ValueError(f"curvature must be > 0, got {self.curvature}")
        for side in ("encoder", "decoder"):
            heads = getattr(self, f"{side}_attention_heads")
            if self.d_model % heads:
                raise ValueError(f"d_model={self.d_model} is not divisible by {side}_attention_heads={heads}")


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
        """``PreTrainedModel.from_pretrained``, strict and validated; the ball's points are
        ManifoldParameters again.

        Weights that do not fit are an error, never a silent re-initialisation: a tensor missing
        from the file (other than a tied copy), an unexpected one (e.g. a Euclidean head's under a
        Poincaré config), a shape mismatch, a non-finite value or a prototype outside the ball
        raises ``ValueError`` naming the tensor. The Hugging Face loader materialises every weight
        as a plain ``nn.Parameter``; geoopt's optimizers only take Riemannian steps on
        ``ManifoldParameter``s, so they are rewrapped here (values unchanged, bit for bit).
        """
        want_info = kwargs.pop("output_loading_info", False)
        kwargs.setdefault("ignore_mismatched_sizes", True)  # reported below, naming the tensors and shapes
        with _quiet_hub():  # problems are raised below; the loader's bar and report would only be noise
            model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        where = args[0] if args else kwargs.get("pretrained_model_name_or_path", "?")
        problems = []
        for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
            keys = sorted(str(k) for k in info.get(kind) or ())
            if kind == "missing_keys":
                keys = [k for k in keys if k not in model.all_tied_weights_keys]
            if keys:
                problems.append(f"{kind.replace('_', ' ')}: {keys}")
        if problems:
            head = model.config.head
            raise ValueError(f"weights in {where} do not fit a {head}-head {cls.__name__}: " + "; ".join(problems))
        model.validate_weights(where)
        model.restore_manifold_parameters()
        return (model, info) if want_info else model

    def validate_weights(self, where: object = "the model") -> None:
        """``ValueError`` naming the first tensor that is not finite, or a prototype outside the ball
        (c‖p_v‖² ≥ 1: the distance head's factor 1 − c‖p‖² would be ≤ 0)."""
        for name, t in self.state_dict().items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise ValueError(f"weights in {where}: tensor {name!r} has non-finite values")
        if self.config.head == "poincare":
            p = self.head.prototypes.detach()
            c = float(self.head.ball.c.detach())
            norms = c * p.double().pow(2).sum(-1)  # (V,)
            if bool((norms >= 1).any()):
                bad = int(norms.argmax())
                raise ValueError(
                    f"weights in {where}: tensor 'head.prototypes' row {bad} lies outside the Poincaré ball "
                    f"(c·‖p‖² = {float(norms[bad]):.4g} >= 1)"
                )

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

        file = Path(path) / "model.safetensors"
        try:
            state = load_file(file)
        except Exception as err:  # safetensors' SafetensorError (truncated / garbage file) derives from Exception only
            raise ValueError(f"cannot read weights {file}: {err}") from err
        try:
            missing, unexpected = self.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shape mismatches
            raise ValueError(f"weights in {path} do not match the model: {err}") from err
        if unexpected or set(missing) - set(self.all_tied_weights_keys):
            raise ValueError(f"weights in {path} do not match the model: missing {missing}, unexpected {unexpected}")
        self.validate_weights(path)

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

    # ---------------------------------------------------------------- lean path (hyperr1.decoding)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Encoder states (B, S, D) of the prompts."""
        return self.model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def completion_logprobs(self, input_ids, attention_mask, completions, **kwargs):
        """Teacher-forced log π(y_t | x, y_<t) (N, T); see :func:`hyperr1.decoding.completion_logprobs`."""
        return decoding.completion_logprobs(self, input_ids, attention_mask, completions, **kwargs)

    def completion_log_distribution(self, input_ids, attention_mask, completions, **kwargs) -> torch.Tensor:
        """Full next-token log-distributions (N, T, V); see :func:`hyperr1.decoding.completion_log_distribution`."""
        return decoding.completion_log_distribution(self, input_ids, attention_mask, completions, **kwargs)

    def sample(self, input_ids, attention_mask, **kwargs) -> decoding.SampleOutput:
        """KV-cache sampling of completions; see :func:`hyperr1.decoding.sample`."""
        return decoding.sample(self, input_ids, attention_mask, **kwargs)


@contextlib.contextmanager
def _quiet_hub():
    """Hugging Face's progress bars and loading report off for the block (runs save and load often)."""
    from transformers.utils import logging as hf_logging

    was_enabled, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if was_enabled:
            hf_logging.enable_progress_bar()


def save_policy(model: HyperR1ForConditionalGeneration, path) -> None:
    """``save_pretrained`` without Hugging Face's per-shard progress bar (runs save often)."""
    with _quiet_hub():
        model.save_pretrained(path)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_policy(vocab_size: int, **overrides) -> HyperR1ForConditionalGeneration:
    """A freshly initialised policy for a vocabulary of ``vocab_size`` tokens."""
    return HyperR1ForConditionalGeneration(HyperR1Config(vocab_size=vocab_size, **overrides))


AutoConfig.register("hyperr1", HyperR1Config)
AutoModelForSeq2SeqLM.register(HyperR1Config, HyperR1ForConditionalGeneration)

__all__ = [
    "HEADS",
    "HyperR1Config",
    "HyperR1ForConditionalGeneration",
    "build_policy",
    "count_parameters",
    "save_policy",
]

"""AL-IQA (esnthere/AL-IQA): CLIP ViT-B/16 with CoOp prompt learners for three antonym pairs.

The CLIP towers are open_clip's modules (QuickGELU, LayerNorm eps 1e-5, causal text mask, pooling at
the end-of-text token), arranged under the authors' names so their checkpoints load as they are:
`image_encoder.*` (CLIP's visual tower), `text_encoder.*` (positional embedding, transformer,
`ln_final`, `text_projection`), `logit_scale` and `prompt_learner{k}.{ctx,token_prefix,token_suffix}`.

CLIP's token embedding is used only to build the prompt learners' fixed prefix/suffix buffers, so,
as in the authors' state dict, it is not saved: it is a non-persistent buffer, filled from CLIP's
pretrained weights by `load_clip_weights`. An authors' checkpoint carries the buffers it was trained
with, so loading one needs no token embedding.

Inputs are ImageNet-normalised (the authors' pipeline), not CLIP-normalised.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from iqa_cli.errors import CheckpointError, ConfigError
from iqa_cli.models.checkpoint import mismatch_report, read_state_dict, unwrap_state_dict
from iqa_cli.models.registry import register_model

if TYPE_CHECKING:  # open_clip is imported where AL-IQA is built, so other methods never load it
    from open_clip.tokenizer import SimpleTokenizer

# The authors' three antonym pairs; the released test scripts score with the last (high/low quality).
QUALITY_PAIRS: tuple[tuple[str, str], ...] = (("good", "bad"), ("clear", "unclear"), ("high quality", "low quality"))
SCORE_HEAD = 2
DEFAULT_N_CTX = 8  # rounds 2-3, the fine-tune step and every released model; round 1 used 4
CTX_INIT_STD = 0.02
VOCAB_SIZE = 49408  # CLIP's BPE vocabulary (open_clip ships the file, so tokenising works offline)
PLACEHOLDER = "X"  # CoOp writes the learnable context as "X X ... X" before tokenising


@lru_cache(maxsize=4)
def clip_tokenizer(context_length: int) -> SimpleTokenizer:
    """CLIP's BPE tokenizer (lower-casing, ftfy clean-up), padding/truncating to `context_length`."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)


def tokenize(texts: Sequence[str], context_length: int) -> torch.Tensor:
    """Token ids (N, context_length) with start/end-of-text tokens; refuses texts that do not fit."""
    tokenizer = clip_tokenizer(context_length)
    for text in texts:
        needed = len(tokenizer.encode(text)) + 2
        if needed > context_length:
            raise ConfigError(f"prompt '{text}' needs {needed} tokens, more than the context length {context_length}")
    with torch.device("cpu"):  # host ids, even while a model is built on the meta device
        return tokenizer(list(texts))


def causal_mask(length: int) -> torch.Tensor:
    """Additive mask: token i attends to tokens 0..i (CLIP's text transformer)."""
    return torch.full((length, length), float("-inf")).triu_(1)


class TextEncoder(nn.Module):
    """CLIP's text tower fed with token embeddings instead of token ids (CoOp's `TextEncoder`)."""

    attn_mask: torch.Tensor

    def __init__(self, context_length: int, width: int, layers: int, heads: int, embed_dim: int) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        from open_clip.transformer import LayerNorm, QuickGELU, Transformer

        self.transformer = Transformer(width, layers, heads, mlp_ratio=4.0, act_layer=QuickGELU, norm_layer=LayerNorm)
        self.ln_final = LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        self.register_buffer("attn_mask", causal_mask(context_length), persistent=False)
        self._init_parameters()

    def _init_parameters(self) -> None:
        # CLIP's initialisation; the released and pretrained weights replace it anyway.
        width, layers = self.transformer.width, self.transformer.layers
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std = width**-0.5 * (2 * layers) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=width**-0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width**-0.5)

    def forward(
        self, prompts: torch.Tensor, tokenized_prompts: torch.Tensor, length: int | None = None
    ) -> torch.Tensor:
        """prompts (N, L, width) embeddings; tokenized_prompts (N, L) ids, pooled at the end-of-text token.

        The attention is causal, so no position sees the padding after the last end-of-text token:
        running only the first `max(eot) + 1` positions gives the same features for a fraction of the
        work (about 13 of 77 positions for the AL-IQA prompts). `length` is that count when the caller
        knows it on the host (reading it from device tokens would wait for the GPU at every step).
        """
        eot = tokenized_prompts.argmax(dim=-1)  # the end-of-text id is the largest in the vocabulary
        if length is None:
            length = int(eot.max()) + 1
        x = prompts[:, :length] + self.positional_embedding[:length].to(prompts.dtype)
        x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection


class PromptLearner(nn.Module):
    """CoOp prompts for one set of class names: [SOS] + ctx (shared, learnable) + "<class>." + [EOS] + padding.

    `ctx` is generic (shared by the classes), the class token sits at the end. Without `ctx_init`
    the context is n_ctx random vectors (N(0, 0.02)); with `ctx_init` (e.g. "a photo of a") it starts
    as those words' token embeddings, so the untrained prompt is exactly that sentence (zero-shot CLIP).
    """

    tokenized_prompts: torch.Tensor
    token_prefix: torch.Tensor
    token_suffix: torch.Tensor

    def __init__(
        self,
        classnames: Sequence[str],
        token_embedding: torch.Tensor,
        *,
        n_ctx: int = DEFAULT_N_CTX,
        ctx_init: str | None = None,
        context_length: int = 77,
    ) -> None:
        super().__init__()
        if len(classnames) < 2:
            raise ConfigError(f"a prompt learner needs at least 2 class names, got {list(classnames)}")
        self.classnames = [str(name) for name in classnames]
        self.context_length = context_length
        width = token_embedding.shape[1]
        if ctx_init:
            ctx_ids = torch.tensor(clip_tokenizer(context_length).encode(ctx_init), dtype=torch.long)
            self.n_ctx = int(ctx_ids.numel())
            ctx = F.embedding(ctx_ids.to(token_embedding.device), token_embedding).detach().clone()
            self.prefix_text = ctx_init
        else:
            if n_ctx < 1:
                raise ConfigError(f"n_ctx must be at least 1, got {n_ctx}")
            self.n_ctx = int(n_ctx)
            ctx = torch.empty(self.n_ctx, width, device=token_embedding.device, dtype=token_embedding.dtype)
            nn.init.normal_(ctx, std=CTX_INIT_STD)
            self.prefix_text = " ".join([PLACEHOLDER] * self.n_ctx)
        self.ctx = nn.Parameter(ctx)
        self.prompt_texts = [f"{self.prefix_text} {name}." for name in self.classnames]
        tokenized = tokenize(self.prompt_texts, context_length)
        self.text_length = int(tokenized.argmax(dim=-1).max()) + 1  # on the host, once: see TextEncoder
        self.register_buffer("tokenized_prompts", tokenized.to(token_embedding.device), persistent=False)
        n_cls, rest = len(self.classnames), context_length - 1 - self.n_ctx
        self.register_buffer("token_prefix", torch.empty(n_cls, 1, width, device=token_embedding.device))
        self.register_buffer("token_suffix", torch.empty(n_cls, rest, width, device=token_embedding.device))
        self.refresh_buffers(token_embedding)

    @torch.no_grad()
    def refresh_buffers(self, token_embedding: torch.Tensor) -> None:
        """Recompute the fixed [SOS] prefix and "<class>." [EOS] suffix embeddings from a token embedding."""
        embedded = F.embedding(self.tokenized_prompts.to(token_embedding.device), token_embedding)
        self.token_prefix.copy_(embedded[:, :1])
        self.token_suffix.copy_(embedded[:, 1 + self.n_ctx :])

    def forward(self) -> torch.Tensor:
        """The prompt embeddings (n_cls, context_length, width)."""
        ctx = self.ctx.unsqueeze(0).expand(len(self.classnames), -1, -1)
        return torch.cat([self.token_prefix, ctx.to(self.token_prefix.dtype), self.token_suffix], dim=1)


class ALIQA(nn.Module):
    """The authors' `CustomCLIP`: forward(image) -> one (B, n_cls) logit tensor per prompt learner."""

    token_embedding: torch.Tensor

    def __init__(
        self,
        n_ctx: int = DEFAULT_N_CTX,
        classnames: Sequence[Sequence[str]] = QUALITY_PAIRS,
        score_head: int = SCORE_HEAD,
        embed_dim: int = 512,
        image_size: int = 224,
        patch_size: int = 16,
        vision_width: int = 768,
        vision_layers: int = 12,
        vision_heads: int = 12,
        context_length: int = 77,
        text_width: int = 512,
        text_layers: int = 12,
        text_heads: int = 8,
    ) -> None:
        super().__init__()
        if not -len(classnames) <= score_head < len(classnames):
            raise ConfigError(f"score_head {score_head} is not one of the {len(classnames)} prompt learners")
        self.context_length = context_length
        self.score_head = score_head % len(classnames)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        from open_clip.transformer import LayerNorm, QuickGELU, VisionTransformer

        self.image_encoder = VisionTransformer(
            image_size=image_size,
            patch_size=patch_size,
            width=vision_width,
            layers=vision_layers,
            heads=vision_heads,
            mlp_ratio=4.0,
            output_dim=embed_dim,
            act_layer=QuickGELU,
            norm_layer=LayerNorm,
        )
        self.text_encoder = TextEncoder(context_length, text_width, text_layers, text_heads, embed_dim)
        token_embedding = torch.empty(VOCAB_SIZE, text_width)
        nn.init.normal_(token_embedding, std=0.02)
        # Not saved (the authors' state dict has no token embedding); CLIP's weights fill it.
        self.register_buffer("token_embedding", token_embedding, persistent=False)
        self.num_learners = len(classnames)
        for k, names in enumerate(classnames):
            self.add_module(f"prompt_learner{k}", self.make_prompt_learner(names, n_ctx=n_ctx))

    @property
    def prompt_learners(self) -> list[PromptLearner]:
        return [getattr(self, f"prompt_learner{k}") for k in range(self.num_learners)]

    def make_prompt_learner(
        self, classnames: Sequence[str], *, n_ctx: int = DEFAULT_N_CTX, ctx_init: str | None = None
    ) -> PromptLearner:
        """A new prompt learner for any class names (e.g. other antonym pairs), on this model's vocabulary."""
        return PromptLearner(
            classnames, self.token_embedding, n_ctx=n_ctx, ctx_init=ctx_init, context_length=self.context_length
        )

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Image features (B, embed_dim) before L2 normalisation."""
        return self.image_encoder(image)

    def encode_learner(self, learner: PromptLearner) -> torch.Tensor:
        """Text features (n_cls, embed_dim) of a prompt learner's prompts, before L2 normalisation."""
        return self.text_encoder(learner(), learner.tokenized_prompts, learner.text_length)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Text features of plain sentences (zero-shot CLIP), before L2 normalisation."""
        tokens = tokenize(texts, self.context_length)
        length = int(tokens.argmax(dim=-1).max()) + 1
        tokens = tokens.to(self.token_embedding.device)
        return self.text_encoder(F.embedding(tokens, self.token_embedding), tokens, length)

    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """exp(logit_scale) * cos(image, text): (B, n_texts)."""
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        return self.logit_scale.exp() * image_features @ text_features.t()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        image_features = self.encode_image(image)
        return tuple(self.logits(image_features, self.encode_learner(pl)) for pl in self.prompt_learners)

    def score(self, image: torch.Tensor) -> torch.Tensor:
        """Quality in [0, 1]: p(first class) of the scoring head (default: 'high quality' vs 'low quality')."""
        return positive_probability(self(image)[self.score_head])

    @torch.no_grad()
    def refresh_prompt_buffers(self) -> None:
        """Rebuild every prompt learner's prefix/suffix from the current token embedding."""
        for learner in self.prompt_learners:
            learner.refresh_buffers(self.token_embedding)

    def set_trainable(self, stage: str) -> list[str]:
        """Freeze all but what the authors train; returns the trainable parameter names.

        'prompts': only the prompt contexts (rounds 1-3). 'fine-tune': the prompts plus the last four
        blocks (8-11) and the final LayerNorm of each tower (`ln_post`, `ln_final`); projections,
        embeddings and `logit_scale` stay frozen (step 4).
        """
        if stage not in ("prompts", "fine-tune"):
            raise ConfigError(f"unknown AL-IQA training stage '{stage}' (known: prompts, fine-tune)")
        tune_blocks = set()
        if stage == "fine-tune":
            for tower in (self.image_encoder, self.text_encoder):
                depth = len(tower.transformer.resblocks)
                tune_blocks |= {id(p) for b in tower.transformer.resblocks[max(0, depth - 4) :] for p in b.parameters()}
            tune_blocks |= {id(p) for p in self.image_encoder.ln_post.parameters()}
            tune_blocks |= {id(p) for p in self.text_encoder.ln_final.parameters()}
        names = []
        for name, param in self.named_parameters():
            param.requires_grad_(name.startswith("prompt_learner") or id(param) in tune_blocks)
            if param.requires_grad:
                names.append(name)
        return names


def positive_probability(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over a head's classes, probability of the first (positive) one: (B,)."""
    return logits.softmax(dim=-1)[:, 0]


# -- CLIP's pretrained weights (open_clip / OpenAI layout) ------------------------------------------

CLIP_TEXT_KEYS = ("positional_embedding", "transformer.", "ln_final.", "text_projection")
CLIP_IGNORED = ("input_resolution", "context_length", "vocab_size", "attn_mask")


def clip_to_aliqa(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a CLIP state dict (OpenAI / open_clip names: `visual.*`, `transformer.*`, ...) to ours."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("visual."):
            out["image_encoder." + key[len("visual.") :]] = value
        elif key == "token_embedding.weight":
            out["token_embedding"] = value
        elif key.startswith(CLIP_TEXT_KEYS):
            out["text_encoder." + key] = value
        elif key in CLIP_IGNORED:
            continue
        else:
            out[key] = value  # logit_scale, or something unexpected that the shape check reports
    return out


def load_clip_weights(model: ALIQA, source: str | Path | Mapping[str, Any]) -> ALIQA:
    """Load pretrained CLIP (a safetensors/.pt file of plain tensors, or a state dict) into both towers.

    Fills the image and text towers, the token embedding and `logit_scale`, then rebuilds every
    prompt learner's prefix/suffix from the new token embedding (the contexts keep their values),
    which is what the authors' constructor does after loading CLIP.
    """
    path = source if isinstance(source, (str, Path)) else None
    if path is not None:
        state, _ = read_state_dict(path)
    else:
        state = unwrap_state_dict(source)
    state = clip_to_aliqa(state)
    expected = {
        k: v
        for k, v in model.state_dict().items()
        if k.startswith(("image_encoder.", "text_encoder.")) or k == "logit_scale"
    }
    expected["token_embedding"] = model.token_embedding
    report = mismatch_report(expected, state)
    if report:
        raise CheckpointError(f"CLIP weights do not fit this AL-IQA model: {report}", path=path)
    with torch.no_grad():
        model.token_embedding.copy_(state.pop("token_embedding"))
        model.load_state_dict(state, strict=False)  # strict=False: the prompt learners keep theirs
    model.refresh_prompt_buffers()
    return model


TINY_CONFIG = {
    "embed_dim": 32,
    "image_size": 32,
    "patch_size": 8,
    "vision_width": 64,
    "vision_layers": 2,
    "vision_heads": 2,
    "context_length": 16,
    "text_width": 32,
    "text_layers": 2,
    "text_heads": 2,
}


@register_model(
    "aliqa",
    description="AL-IQA: CLIP ViT-B/16 with CoOp prompts for good/bad, clear/unclear, high/low quality",
    inputs="(B,3,224,224) ImageNet-normalised; returns 3 x (B,2) logits, score = p(high quality)",
    tiny_config=TINY_CONFIG,
)
def build_aliqa(**config: Any) -> ALIQA:
    return ALIQA(**config)

"""A tiny LLaVA-OneVision and a tokenizer trained offline: the CPU default of GEA.

The tiny model has the real architecture (SigLIP vision tower, two-layer projector,
Qwen2 language model) at about 2 M parameters with random weights, so every code path
of the policy runs in tests and on CPU without downloading a checkpoint. The tokenizer
is a byte-level BPE trained with Hugging Face `tokenizers` on the texts the caller
passes (instructions, prompt texts, action phrases).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SiglipVisionConfig,
)

from gea.policy.frames import ImageProcessor, build_image_processor

logger = logging.getLogger(__name__)

PAD_TOKEN = "<pad>"
EOS_TOKEN = "<eos>"
IMAGE_TOKEN = "<image>"
# LlavaOnevisionConfig requires a video token id, although GEA never feeds video.
VIDEO_TOKEN = "<video>"
BASE_SPECIAL_TOKENS = (PAD_TOKEN, EOS_TOKEN, IMAGE_TOKEN, VIDEO_TOKEN)
QWEN2_INIT_STD = 0.02  # Qwen2Config's default initializer_range


@dataclass(frozen=True)
class TinyModelSpec:
    """Sizes of the tiny model. The defaults give about 2 M parameters and 50 tokens per frame."""

    image_size: int = 56
    patch_size: int = 8
    vision_hidden_size: int = 128
    vision_layers: int = 2
    vision_heads: int = 2
    text_hidden_size: int = 256
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    max_positions: int = 4096
    vocab_size: int = 1024
    # Initial std of the vision tower's patch position embeddings. None keeps SigLIP's
    # 1/sqrt(width), several times weaker than a patch's content, so a larger value makes a
    # patch's place in the grid stand out in its features from the first step.
    vision_position_std: Optional[float] = None
    # Std of the initial weights of the language model and the projector. None keeps Qwen2's
    # 0.02, which is 1/sqrt(width) at width 2,500. At width 256, BabyAI's SFT loss stayed at
    # the action prior for 1,500 steps with 0.02 and fell below it within 250 steps with
    # 1/sqrt(256) = 0.06.
    text_init_std: Optional[float] = None

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}.")
        if self.vision_hidden_size % self.vision_heads:
            raise ValueError(f"vision_hidden_size {self.vision_hidden_size} must divide by vision_heads {self.vision_heads}.")
        if self.text_hidden_size % self.text_heads or self.text_heads % self.text_kv_heads:
            raise ValueError(
                f"text_hidden_size {self.text_hidden_size} must divide by text_heads {self.text_heads}, "
                f"which must divide by text_kv_heads {self.text_kv_heads}."
            )
        if self.vision_position_std is not None and not self.vision_position_std > 0:
            raise ValueError(f"vision_position_std must be positive (or None for SigLIP's default), got {self.vision_position_std}.")
        if self.text_init_std is not None and not self.text_init_std > 0:
            raise ValueError(f"text_init_std must be positive (or None for Qwen2's 0.02), got {self.text_init_std}.")
        if self.vocab_size < 300:
            raise ValueError(f"vocab_size must be at least 300 (256 bytes plus special tokens), got {self.vocab_size}.")


def train_tokenizer(
    texts: Iterable[str],
    extra_special_tokens: Sequence[str] = (),
    vocab_size: int = 1024,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts`.

    Digits are split into single tokens so numbers tokenize the same way in every
    context. `vocab_size` bounds the learned vocabulary; the special tokens (pad, eos,
    image, video and `extra_special_tokens`, such as ``<act_0>`` ... ``<act_511>``) come
    on top, first in the id order. Any byte sequence can be encoded, including text
    absent from `texts`.
    """
    extra = list(extra_special_tokens)
    clashes = sorted(set(extra) & set(BASE_SPECIAL_TOKENS))
    if clashes:
        raise ValueError(f"extra_special_tokens {clashes} are reserved; remove them from the list.")
    if len(set(extra)) != len(extra):
        raise ValueError("extra_special_tokens contains duplicates; pass each token once.")
    special_tokens = [*BASE_SPECIAL_TOKENS, *extra]

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size + len(special_tokens),
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        extra_special_tokens={"image_token": IMAGE_TOKEN, "video_token": VIDEO_TOKEN},
    )
    logger.info("Trained a byte-level BPE tokenizer with %d tokens (%d special).", len(tokenizer), len(special_tokens))
    return tokenizer


def build_tiny_config(tokenizer: PreTrainedTokenizerFast, spec: TinyModelSpec = TinyModelSpec()) -> LlavaOnevisionConfig:
    """Build a LLaVA-OneVision config sized by `spec` whose vocabulary matches `tokenizer`."""
    vision = SiglipVisionConfig(
        hidden_size=spec.vision_hidden_size,
        intermediate_size=2 * spec.vision_hidden_size,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        vision_use_head=False,
    )
    text = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.text_hidden_size,
        intermediate_size=2 * spec.text_hidden_size,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_kv_heads,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        initializer_range=QWEN2_INIT_STD if spec.text_init_std is None else spec.text_init_std,
    )
    return LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        video_token_index=tokenizer.convert_tokens_to_ids(VIDEO_TOKEN),
        image_grid_pinpoints=[[spec.image_size, spec.image_size]],
        tie_word_embeddings=True,
    )


def build_tiny_model(
    texts: Iterable[str],
    extra_special_tokens: Sequence[str] = (),
    spec: TinyModelSpec = TinyModelSpec(),
    seed: int = 0,
) -> tuple[LlavaOnevisionForConditionalGeneration, PreTrainedTokenizerFast, ImageProcessor]:
    """Build a randomly initialized tiny LLaVA-OneVision, its tokenizer and its image processor.

    `seed` fixes the random weights. Save the three with ``save_pretrained`` into one
    folder (or wrap them in `GEAPolicy` and save that) to load them back unchanged.
    """
    tokenizer = train_tokenizer(texts, extra_special_tokens, vocab_size=spec.vocab_size)
    config = build_tiny_config(tokenizer, spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaOnevisionForConditionalGeneration(config)
        if spec.vision_position_std is not None:
            with torch.no_grad():
                model.model.vision_tower.embeddings.position_embedding.weight.normal_(0.0, spec.vision_position_std)
    model.eval()
    processor = build_image_processor(spec.image_size)
    parameter_count = sum(parameter.numel() for parameter in model.parameters())
    logger.info("Built a tiny LLaVA-OneVision with %.2f M parameters.", parameter_count / 1e6)
    return model, tokenizer, processor

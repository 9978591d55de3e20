"""LoRA adapters on the language model through `peft`, and the state dict of the bare base model."""

from __future__ import annotations

import re
from typing import Sequence

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlavaOnevisionForConditionalGeneration

LORA_FOLDER = "lora"

# peft wraps a targeted Linear as `<name>.base_layer` and adds `<name>.lora_A...` next to it.
_BASE_LAYER_INFIX = ".base_layer."
_LORA_KEY_PATTERN = re.compile(r"\.lora_(A|B|embedding_A|embedding_B|magnitude_vector)\.")


def language_model_target_pattern(module_names: Sequence[str]) -> str:
    """Return a peft `target_modules` regex that matches `module_names` in the language model only.

    SigLIP's attention also has ``q_proj``, ``k_proj`` and ``v_proj``; the
    ``model.language_model`` anchor keeps the vision tower free of adapters.
    """
    names = "|".join(re.escape(name) for name in module_names)
    return rf"model\.language_model\.layers\.\d+\.(self_attn|mlp)\.({names})"


def add_lora(
    model: LlavaOnevisionForConditionalGeneration,
    rank: int,
    alpha: float,
    dropout: float,
    module_names: Sequence[str],
) -> PeftModel:
    """Wrap `model` with new LoRA adapters on its language model; peft freezes every base weight."""
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=language_model_target_pattern(module_names),
        bias="none",
    )
    return get_peft_model(model, config)


def load_lora(model: LlavaOnevisionForConditionalGeneration, folder: str, trainable: bool) -> PeftModel:
    """Attach the LoRA adapter saved in `folder` to `model`."""
    return PeftModel.from_pretrained(model, folder, is_trainable=trainable)


def base_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Return `model`'s state dict without LoRA weights and with peft's wrapper names undone.

    Saving this dict gives the unmodified base checkpoint, so the base folder loads with
    plain transformers and the adapter lives only in the LoRA folder.
    """
    state = {}
    for key, value in model.state_dict().items():
        if _LORA_KEY_PATTERN.search(key):
            continue
        state[key.replace(_BASE_LAYER_INFIX, ".")] = value
    return state

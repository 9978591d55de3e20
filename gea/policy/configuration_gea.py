"""`GEAPolicyConfig`: the settings GEA adds on top of a LLaVA-OneVision checkpoint.

The checkpoint's own `LlavaOnevisionConfig` (vision tower, language model, projector)
is saved by transformers next to this one. This file contains what GEA decides: how much
history the prompt carries, how many tokens each frame costs, the value head and LoRA.
It is saved as ``gea_policy.json`` in the policy folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Union

CONFIG_NAME = "gea_policy.json"

# Pooling modes for the blocks of patches that `frame_pool_stride` merges (see `GEAPolicyConfig`).
FRAME_POOL_MODES = ("bilinear", "max")

# The projection layers of Qwen2's attention and MLP blocks, the language model of
# every LLaVA-OneVision checkpoint.
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class GEAPolicyConfig:
    """GEA's policy settings.

    Attributes:
        history_length: observations the prompt carries (the current one and the
            ``history_length - 1`` before it, each followed by the action taken).
        frame_pool_stride: bilinear downsampling of each frame's patch grid before it
            enters the language model. 1 keeps every patch. 2 halves each side, as
            LLaVA-OneVision's video path does, which turns the 27 x 27 grid of the
            384 px SigLIP tower into 14 x 14 = 196 tokens.
        frame_pool_mode: how pooling combines patches, ``"bilinear"`` (LLaVA-OneVision's
            interpolation, which averages 2 x 2 blocks at stride 2) or ``"max"`` (each
            feature's maximum over the block).
        frame_newline: append the model's learned ``image_newline`` vector after each
            frame, as LLaVA-OneVision does after every image.
        temperature: default sampling temperature of `GEAPolicy.act`; 0 decodes greedily.
        value_hidden_size: width of the value head's hidden layer.
        lora_rank: LoRA rank on the language model; 0 trains no adapter.
        lora_alpha: LoRA scaling numerator (the update is scaled by alpha / rank).
        lora_dropout: dropout on the LoRA input.
        lora_target_modules: language-model module names that receive adapters.
    """

    history_length: int = 3
    frame_pool_stride: int = 1
    frame_pool_mode: str = "bilinear"
    frame_newline: bool = True
    temperature: float = 1.0
    value_hidden_size: int = 256
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_target_modules: tuple[str, ...] = field(default=DEFAULT_LORA_TARGETS)

    def __post_init__(self) -> None:
        self.lora_target_modules = tuple(self.lora_target_modules)
        if self.history_length < 1:
            raise ValueError(f"history_length must be at least 1, got {self.history_length}.")
        if self.frame_pool_stride < 1:
            raise ValueError(f"frame_pool_stride must be at least 1 (1 keeps every patch), got {self.frame_pool_stride}.")
        if self.frame_pool_mode not in FRAME_POOL_MODES:
            raise ValueError(f"frame_pool_mode must be one of {list(FRAME_POOL_MODES)}, got {self.frame_pool_mode!r}.")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 decodes greedily), got {self.temperature}.")
        if self.value_hidden_size < 1:
            raise ValueError(f"value_hidden_size must be positive, got {self.value_hidden_size}.")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0 (0 disables LoRA), got {self.lora_rank}.")
        if self.lora_alpha <= 0:
            raise ValueError(f"lora_alpha must be positive, got {self.lora_alpha}.")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}.")
        if self.lora_rank > 0 and not self.lora_target_modules:
            raise ValueError("lora_target_modules is empty; name at least one module such as 'q_proj'.")

    @classmethod
    def for_onevision(cls, **overrides) -> "GEAPolicyConfig":
        """Return the frame settings GEA uses with LLaVA-OneVision 0.5B and 7B: 196 tokens per frame.

        Their SigLIP tower takes 384 px inputs with 14 px patches, a 27 x 27 grid. Stride 2
        pools it to 14 x 14, and no newline is appended. `overrides` set any other field.
        """
        settings = {"frame_pool_stride": 2, "frame_newline": False}
        settings.update(overrides)
        return cls(**settings)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["lora_target_modules"] = list(self.lora_target_modules)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "GEAPolicyConfig":
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown GEAPolicyConfig keys {unknown}; known keys are {sorted(known)}.")
        return cls(**data)

    def save(self, folder: Union[str, Path]) -> Path:
        """Write ``gea_policy.json`` into `folder` and return its path."""
        path = Path(folder) / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, folder: Union[str, Path]) -> "GEAPolicyConfig":
        """Read ``gea_policy.json`` from `folder`."""
        return cls.from_dict(json.loads((Path(folder) / CONFIG_NAME).read_text()))

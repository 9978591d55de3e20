"""Typed configs for SFT, read from YAML files under `experiments/`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Type, TypeVar

import yaml

T = TypeVar("T")

TINY_INIT = "tiny"


def from_mapping(cls: Type[T], data: Optional[dict], where: str) -> T:
    """Build dataclass `cls` from `data`, rejecting unknown keys with the list of known ones."""
    data = dict(data or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"Unknown keys {unknown} in {where}; known keys are {sorted(known)}.")
    return cls(**data)


@dataclass
class DatasetSpec:
    """One trajectory folder in the SFT mix, sampled with probability proportional to `weight`."""

    path: str
    weight: float = 1.0
    envs: Optional[list[str]] = None
    successful_only: bool = True

    def __post_init__(self) -> None:
        if self.weight <= 0:
            raise ValueError(f"Dataset {self.path!r} has weight {self.weight}; weights must be positive.")


@dataclass
class VisionPretrainingConfig:
    """Settings of the vision pretraining stage (`policy.vision_pretraining` in an SFT config).

    Attributes:
        env: registered embodiment whose adapter provides `patch_labels`
            (see `gea.training.vision_pretraining`).
        frames: random-walk frames to collect. A tenth is held out to measure accuracy.
        steps: optimizer steps over the vision tower and the per-patch classifier.
        batch_size: frames per step.
        lr: AdamW learning rate.
        seed: seeds the environments, the random walk and the batch order.
    """

    env: str
    frames: int = 20_000
    steps: int = 1_000
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"vision_pretraining.{name} must be at least 1, got {getattr(self, name)}.")
        if self.frames < 10:
            raise ValueError(f"vision_pretraining.frames must be at least 10 (a tenth is held out), got {self.frames}.")
        if not self.lr > 0:
            raise ValueError(f"vision_pretraining.lr must be positive, got {self.lr}.")


@dataclass
class PolicyInitConfig:
    """Where the policy's weights come from.

    `init` is ``"tiny"`` (a randomly initialized tiny LLaVA-OneVision with a tokenizer
    trained on the data's text), a LLaVA-OneVision checkpoint (local folder or hub id), or a
    GEA run or checkpoint folder written by `gea sft`, whose policy and action tokens are
    fine-tuned with a fresh optimizer and schedule.
    `tiny` contains `gea.policy.TinyModelSpec` fields, and `policy` contains `GEAPolicyConfig` fields
    (from a GEA checkpoint, they override single fields of its saved policy config).
    `vision_pretraining`, when set, trains the vision tower on labelled simulator frames
    before SFT starts (`VisionPretrainingConfig` fields).
    """

    init: str = TINY_INIT
    tiny: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    vision_pretraining: Optional[VisionPretrainingConfig] = None

    def __post_init__(self) -> None:
        if isinstance(self.vision_pretraining, dict):
            self.vision_pretraining = from_mapping(
                VisionPretrainingConfig, self.vision_pretraining, "SFT config policy.vision_pretraining"
            )


@dataclass
class OptimizationConfig:
    """The `train:` section of an SFT config.

    `validation_episodes` holds out the last that many usable episodes of every dataset
    (0 holds out none). At each checkpoint, the action-token loss on up to
    `validation_samples` of their steps, the same steps each time, is logged as ``val/loss``.

    `balance_embodiments` scales each embodiment's samples in a batch by 1 / their mean
    loss (see `gea.training.sft.balance_embodiment_losses`), so an embodiment with costly
    action tokens does not supply most of the gradient. Logged losses are the plain means
    either way. On GoToLocal with reach over 8,000 steps it slowed both (experiments/sft.md),
    so it is off by default and each sample weighs the same.
    """

    steps: int = 1000
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05
    max_grad_norm: float = 1.0
    mixed_precision: str = "auto"
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    log_every: int = 10
    validation_episodes: int = 0
    validation_samples: int = 256
    balance_embodiments: bool = False

    def __post_init__(self) -> None:
        if self.validation_episodes < 0:
            raise ValueError(f"train.validation_episodes must be >= 0 (0 disables validation), got {self.validation_episodes}.")
        for name in ("steps", "batch_size", "grad_accum", "checkpoint_every", "log_every", "keep_checkpoints", "validation_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be at least 1, got {getattr(self, name)}.")
        if self.lr <= 0:
            raise ValueError(f"train.lr must be positive, got {self.lr}.")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}.")
        if not isinstance(self.balance_embodiments, bool):
            raise ValueError(f"train.balance_embodiments must be true or false, got {self.balance_embodiments!r}.")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError(f"train.mixed_precision must be auto, no, bf16 or fp16, got {self.mixed_precision!r}.")


@dataclass
class SFTConfig:
    """Everything `gea sft` needs; see `experiments/*.yaml` for examples."""

    run_dir: str
    datasets: list[DatasetSpec]
    action_tokenizer: Optional[str] = None
    policy: PolicyInitConfig = field(default_factory=PolicyInitConfig)
    train: OptimizationConfig = field(default_factory=OptimizationConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.datasets:
            raise ValueError("SFT config lists no datasets; add at least one under `datasets:`.")

    @classmethod
    def from_dict(cls, data: dict, where: str = "SFT config") -> "SFTConfig":
        data = dict(data)
        datasets = [from_mapping(DatasetSpec, spec, f"{where} datasets[{i}]") for i, spec in enumerate(data.pop("datasets", []))]
        policy = from_mapping(PolicyInitConfig, data.pop("policy", None), f"{where} policy")
        train = from_mapping(OptimizationConfig, data.pop("train", None), f"{where} train")
        config = from_mapping(cls, {**data, "datasets": datasets, "policy": policy, "train": train}, where)
        return config

    @classmethod
    def from_yaml(cls, path: str | Path) -> "SFTConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"SFT config {path} not found.")
        return cls.from_dict(yaml.safe_load(path.read_text()) or {}, where=str(path))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

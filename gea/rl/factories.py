"""Picklable factories that build a PPO run's policy, de-tokenizer and expert source on each Ray process.

RLlib sends them pickled to every env runner and learner, and each process builds its
own objects from the checkpoint folder on the local disk.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from gea.data import TrajectoryDataset
from gea.policy import GEAPolicyConfig
from gea.rl.detokenizer import PaddedDetokenizer
from gea.rl.env import GeaEnvConfig
from gea.rl.expert import TrajectoryExpertSource
from gea.rl.policy import GEAActionPolicy, build_action_policy
from gea.training.bundle import ACTION_TOKENIZER_FOLDER, POLICY_FOLDER, PolicyBundle, load_bundle

logger = logging.getLogger(__name__)


def lora_policy_config(checkpoint: Path, lora_rank: int) -> GEAPolicyConfig:
    """Return the checkpoint's policy config with LoRA of `lora_rank` (kept if the checkpoint already has LoRA).

    Raises ValueError if the checkpoint carries LoRA of another rank.
    """
    saved = GEAPolicyConfig.load(Path(checkpoint) / POLICY_FOLDER)
    if saved.lora_rank == 0:
        return dataclasses.replace(saved, lora_rank=lora_rank)
    if saved.lora_rank != lora_rank:
        raise ValueError(
            f"Checkpoint {checkpoint} already has LoRA of rank {saved.lora_rank}, but lora_rank is {lora_rank}; "
            f"set lora_rank: {saved.lora_rank} in the PPO config."
        )
    return saved


def load_lora_bundle(checkpoint: Path, lora_rank: int) -> PolicyBundle:
    """Load a checkpoint's policy with trainable LoRA adapters (new ones if it has none) and its de-tokenizer."""
    return load_bundle(Path(checkpoint), policy_config=lora_policy_config(checkpoint, lora_rank), lora_trainable=True)


@dataclass(frozen=True)
class DetokenizerFactory:
    """Builds the run's `PaddedDetokenizer` from a checkpoint's tokenizer and action tokenizer."""

    checkpoint: str
    envs: tuple[str, ...]

    def __call__(self) -> PaddedDetokenizer:
        from transformers import AutoTokenizer

        from gea_tokenizers import ActionDetokenizer

        folder = Path(self.checkpoint)
        tokenizer = AutoTokenizer.from_pretrained(folder / POLICY_FOLDER)
        return PaddedDetokenizer(ActionDetokenizer.load(folder / ACTION_TOKENIZER_FOLDER, tokenizer), self.envs)


@dataclass(frozen=True)
class PolicyFactory:
    """Builds the `GEAActionPolicy` of a checkpoint with trainable LoRA adapters and value head."""

    checkpoint: str
    envs: tuple[str, ...]
    lora_rank: int

    def __call__(self) -> GEAActionPolicy:
        bundle = load_lora_bundle(Path(self.checkpoint), self.lora_rank)
        return build_action_policy(bundle.policy, PaddedDetokenizer(bundle.detokenizer, self.envs))


@dataclass(frozen=True)
class ExpertSourceFactory:
    """Builds a `TrajectoryExpertSource` over trajectory folders for the run's embodiments."""

    paths: tuple[str, ...]
    env_config: GeaEnvConfig

    def __call__(self) -> TrajectoryExpertSource:
        dataset = TrajectoryDataset(list(self.paths))
        logger.info("Expert source: %d stored episodes under %s.", len(dataset), list(self.paths))
        return TrajectoryExpertSource(dataset, self.env_config, self.env_config.detokenizer_factory())

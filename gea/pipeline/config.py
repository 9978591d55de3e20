"""The config of `gea run`: one section per stage, each validated by that stage's own config class."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from gea.training.config import from_mapping

STAGES = ("collect", "tokenizer", "sft", "eval_sft", "ppo", "eval_ppo")


@dataclass
class CollectSection:
    """Expert episodes per embodiment, e.g. ``{"babyai/GoToLocal": 300}``."""

    episodes: dict[str, int]
    workers: int = 2
    # Perturbation of the executed actions, as `gea collect --action-noise`.
    action_noise: float = 0.0

    def __post_init__(self) -> None:
        if not self.episodes:
            raise ValueError("collect.episodes is empty; name at least one embodiment and its episode count.")
        if not 0.0 <= self.action_noise <= 1.0:
            raise ValueError(
                f"collect.action_noise must be in [0, 1], got {self.action_noise}. Use 0 to record the expert as is."
            )
        for name, count in self.episodes.items():
            if count < 1:
                raise ValueError(f"collect.episodes[{name!r}] must be at least 1, got {count}.")


@dataclass
class TokenizerSection:
    """`gea_tokenizers.ResidualVQConfig` fields (`model`) and `TrainingConfig` fields (`training`)."""

    model: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalSection:
    episodes: int = 20
    workers: int = 2
    batch_size: int = 8
    videos_per_env: int = 2
    greedy: bool = False
    # Caps every adapter's step limit during evaluation (None keeps each adapter's own).
    max_episode_steps: Optional[int] = None


@dataclass
class PipelineConfig:
    """Everything `gea run` does; see `experiments/quickstart.yaml`.

    `sft` contains `SFTConfig` fields except `run_dir`, `datasets` and `action_tokenizer`,
    which the pipeline fills in. `ppo` contains `gea ppo` config fields except `run_dir`,
    `init` and `envs`, and `ppo_envs` lists the embodiments PPO trains on (default: all).
    """

    run_dir: str
    image_size: int
    collect: CollectSection
    tokenizer: TokenizerSection = field(default_factory=TokenizerSection)
    sft: dict[str, Any] = field(default_factory=dict)
    ppo: Optional[dict[str, Any]] = None
    ppo_envs: Optional[list[str]] = None
    eval: EvalSection = field(default_factory=EvalSection)
    # PyTorch CPU threads of this process and of the workers it starts (None: PyTorch's default,
    # one per core). On a machine whose cores other processes also use, one thread avoids
    # OpenMP threads waiting on each other. With two threads and one other busy process on
    # a 2-core machine, a quickstart SFT step took 5.2 s instead of 0.7 s.
    torch_threads: Optional[int] = None

    def __post_init__(self) -> None:
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"torch_threads must be at least 1 or null, got {self.torch_threads}.")
        if self.image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {self.image_size}.")
        for key in ("run_dir", "datasets", "action_tokenizer"):
            if key in self.sft:
                raise ValueError(f"sft.{key} is set by `gea run`; remove it from the config.")

    @property
    def envs(self) -> list[str]:
        return list(self.collect.episodes)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "PipelineConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Pipeline config {path} not found.")
        data = yaml.safe_load(path.read_text()) or {}
        where = str(path)
        data["collect"] = from_mapping(CollectSection, data.get("collect"), f"{where} collect")
        data["tokenizer"] = from_mapping(TokenizerSection, data.get("tokenizer"), f"{where} tokenizer")
        data["eval"] = from_mapping(EvalSection, data.get("eval"), f"{where} eval")
        config = from_mapping(cls, data, where)
        config.validate_stage_sections(where)
        return config

    def validate_stage_sections(self, where: str) -> None:
        """Check the `sft` and `ppo` sections now, so a typo fails before the stages before them run."""
        from gea.training.config import SFTConfig

        SFTConfig.from_dict({**self.sft, "run_dir": self.run_dir, "datasets": [{"path": self.run_dir}]}, f"{where} sft")
        if self.ppo is not None:
            from gea.rl.run import PPORunConfig

            PPORunConfig.from_dict(
                {**self.ppo, "run_dir": self.run_dir, "init": self.run_dir, "envs": self.ppo_envs or self.envs},
                where=f"{where} ppo",
            )

    def section_for(self, stage: str) -> dict:
        """Return the settings stage `stage` depends on, to detect a config edited after the stage ran."""
        sections = {
            "collect": {"collect": dataclasses.asdict(self.collect), "image_size": self.image_size},
            "tokenizer": dataclasses.asdict(self.tokenizer),
            "sft": self.sft,
            "eval_sft": dataclasses.asdict(self.eval),
            "ppo": {"ppo": self.ppo, "ppo_envs": self.ppo_envs},
            "eval_ppo": dataclasses.asdict(self.eval),
        }
        return sections[stage]

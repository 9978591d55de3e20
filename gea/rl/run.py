"""Stage 2 end to end: PPO on RLlib from an SFT checkpoint, with checkpoints, resume and evaluation.

One iteration reads top to bottom: RLlib samples and updates (`Algorithm.train`), the
driver logs rollout and loss metrics, and on schedule it saves a checkpoint in the SFT
layout and evaluates that checkpoint with the evaluation harness. Only the LoRA
adapters and the value head train.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from gea.rl.algorithm import PPOSettings
from gea.rl.env import REWARD_ENV, REWARD_MODES
from gea.training.config import from_mapping

logger = logging.getLogger(__name__)

STATE_FILE = "ppo_state.json"
LEARNER_STATE_FILE = "learner_state.pt"
CONFIG_FILE = "ppo_config.yaml"
EVAL_HISTORY_FILE = "eval_history.jsonl"
TENSORBOARD_FOLDER = "tensorboard"
STAGE = "ppo"
REQUIRED_KEYS = ("run_dir", "init", "envs")


@dataclass
class PPORunConfig:
    """Everything `gea ppo` needs; see `experiments/ppo_babyai.yaml`.

    Attributes:
        run_dir: output folder: ``checkpoints/``, ``tensorboard/``, ``eval_history.jsonl``.
        init: the SFT checkpoint (a step folder, its ``checkpoints/`` folder or its run folder).
        envs: embodiments to train on; the checkpoint's action tokenizer must cover them.
        settings: `gea.rl.algorithm.PPOSettings` fields (scale knobs and PPO hyperparameters).
        iterations: RLlib training iterations in total (a resumed run continues to this count).
        eval_every: evaluate every this many iterations and after the last; 0 never evaluates.
        eval_episodes: evaluation episodes per embodiment, over the harness's fixed seeds.
        eval_max_episode_steps: caps each adapter's step limit in evaluation; None keeps it.
        eval_at_start: also evaluate `init` before training, logged at iteration 0.
        eval_greedy: evaluate with greedy decoding instead of sampling.
        eval_batch_size: environments the evaluation steps together.
        checkpoint_every: save every this many iterations (and after the last, and at
            every evaluation, which reads the saved checkpoint).
        keep_checkpoints: newest checkpoints kept on disk.
        lora_rank: rank of the LoRA adapters PPO trains (new adapters unless `init` has some).
        expert_data: trajectory folders for the SFT term; None uses the folders the SFT
            checkpoint was trained on. Relative paths resolve against the working directory.
        image_size: rendered frame size; None uses the SFT checkpoint's.
        max_episode_steps: caps each adapter's step limit in training rollouts; None keeps it.
        reward: ``"env"`` (the simulator's reward) or ``"success"`` (1 when the goal is first
            reached, else 0); see `gea.rl.env.GeaEnvConfig`.
        ray_num_cpus: CPUs Ray schedules on; None reserves one per env runner and learner.
        resume: continue from the latest checkpoint in `run_dir` if there is one.
    """

    run_dir: str
    init: str
    envs: list[str]
    settings: dict[str, Any] = field(default_factory=dict)
    iterations: int = 10
    eval_every: int = 0
    eval_episodes: int = 20
    eval_max_episode_steps: Optional[int] = None
    eval_at_start: bool = False
    eval_greedy: bool = False
    eval_batch_size: int = 8
    checkpoint_every: int = 5
    keep_checkpoints: int = 2
    lora_rank: int = 8
    expert_data: Optional[list[str]] = None
    image_size: Optional[int] = None
    max_episode_steps: Optional[int] = None
    reward: str = REWARD_ENV
    ray_num_cpus: Optional[int] = None
    resume: bool = False

    def __post_init__(self) -> None:
        self.envs = list(self.envs)
        if not self.envs:
            raise ValueError("PPO config lists no envs; name at least one embodiment such as babyai/GoToLocal.")
        if len(set(self.envs)) != len(self.envs):
            raise ValueError(f"PPO config envs has duplicates: {self.envs}; list each embodiment once.")
        for name in ("iterations", "eval_episodes", "eval_batch_size", "checkpoint_every", "keep_checkpoints", "lora_rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"PPO config {name} must be at least 1, got {getattr(self, name)}.")
        if self.eval_every < 0:
            raise ValueError(f"PPO config eval_every must be >= 0 (0 never evaluates), got {self.eval_every}.")
        for name in ("eval_max_episode_steps", "image_size", "max_episode_steps", "ray_num_cpus"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"PPO config {name} must be at least 1 or null, got {value}.")
        if self.reward not in REWARD_MODES:
            raise ValueError(f"PPO config reward must be one of {REWARD_MODES}, got {self.reward!r}.")
        if self.expert_data is not None and not self.expert_data:
            raise ValueError("PPO config expert_data is an empty list; list trajectory folders or remove the key.")
        self.ppo_settings()

    def ppo_settings(self) -> PPOSettings:
        """Return `settings` as validated `PPOSettings`."""
        return from_mapping(PPOSettings, self.settings, "PPO config settings")

    @classmethod
    def from_dict(cls, data: dict, where: str = "PPO config") -> "PPORunConfig":
        """Build from a mapping, rejecting unknown keys with the list of known ones."""
        missing = [name for name in REQUIRED_KEYS if data.get(name) is None]
        if missing:
            raise ValueError(f"{where} lacks {missing}; set them in the config (`gea ppo` also takes --init and --run-dir).")
        return from_mapping(cls, data, where)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "PPORunConfig":
        """Read a YAML config; `overrides` (such as ``init``) replace its keys."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"PPO config {path} not found.")
        data = yaml.safe_load(path.read_text()) or {}
        data.update({key: value for key, value in overrides.items() if value is not None})
        return cls.from_dict(data, where=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_ppo(config: PPORunConfig, show_progress: bool = True) -> Path:
    """Train with PPO and return the final checkpoint folder.

    Ray starts on loopback (unless already running in this process) and is shut down on
    return or error.
    """
    import ray

    from gea.rl.ray_init import init_ray
    from gea.rl.trainer import PPOTrainer

    trainer = PPOTrainer(config, show_progress=show_progress)
    settings = trainer.settings
    num_cpus = config.ray_num_cpus or max(1, settings.num_env_runners + settings.num_learners)
    # None lets Ray detect the GPUs; fractional GPUs per learner share whole devices.
    num_gpus = math.ceil(settings.num_gpus_per_learner * max(settings.num_learners, 1)) or None
    context = init_ray(num_cpus=num_cpus, num_gpus=num_gpus)
    try:
        return trainer.train()
    finally:
        if context is not None:
            ray.shutdown()


def read_eval_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """Return the evaluation records of a PPO run, oldest first."""
    path = Path(run_dir) / EVAL_HISTORY_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

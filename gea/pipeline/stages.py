"""The stages of `gea run`. Each reads earlier stages' outputs from the run folder and writes its own."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from gea.pipeline.config import STAGES, PipelineConfig

logger = logging.getLogger(__name__)

DONE_MARKER = ".done"


@dataclass(frozen=True)
class RunPaths:
    root: Path

    def stage(self, name: str) -> Path:
        return self.root / name

    @property
    def data(self) -> Path:
        return self.stage("collect")

    @property
    def tokenizer(self) -> Path:
        return self.stage("tokenizer")

    def is_done(self, name: str) -> bool:
        return (self.stage(name) / DONE_MARKER).is_file()

    def mark_done(self, name: str, summary: dict) -> None:
        (self.stage(name) / DONE_MARKER).write_text(json.dumps(summary, indent=2))

    def summary(self, name: str) -> dict:
        return json.loads((self.stage(name) / DONE_MARKER).read_text())

    def invalidate_from(self, name: str) -> list[str]:
        """Delete the outputs of stage `name` and of every later stage; return the stages cleared."""
        cleared = list(STAGES[STAGES.index(name) :])
        for stage in cleared:
            # Collected episodes are kept: `gea collect` skips the ones present, so redoing it only
            # fills gaps. Delete run_dir/collect by hand to recollect from scratch.
            if stage == "collect":
                (self.data / DONE_MARKER).unlink(missing_ok=True)
            else:
                shutil.rmtree(self.stage(stage), ignore_errors=True)
        return cleared


def run_collect(config: PipelineConfig, paths: RunPaths) -> dict:
    from gea.data.collect import collect

    results = {}
    for name, episodes in config.collect.episodes.items():
        summary = collect(
            [name],
            episodes,
            paths.data,
            image_size=config.image_size,
            workers=config.collect.workers,
            action_noise=config.collect.action_noise,
        )
        results[name] = {"new": len(summary.collected[name]), "skipped": summary.skipped[name]}
    return results


def run_tokenizer(config: PipelineConfig, paths: RunPaths) -> dict:
    from gea.data import TrajectoryDataset
    from gea_envs import ActionKind, get_adapter
    from gea_tokenizers import ResidualVQConfig, TrainingConfig, train_residual_vq

    dataset = TrajectoryDataset(paths.data, embodiments=config.envs)
    continuous = [name for name in config.envs if get_adapter(name).action_space.kind is ActionKind.CONTINUOUS]
    paths.tokenizer.mkdir(parents=True, exist_ok=True)
    if not continuous:
        return {"continuous_embodiments": []}
    actions = {name: np.stack(dataset.actions(name, successful_only=True)) for name in continuous}
    tokenizer, report = train_residual_vq(
        actions,
        ResidualVQConfig(**config.tokenizer.model),
        TrainingConfig(**config.tokenizer.training),
        log_dir=paths.tokenizer / "tensorboard",
    )
    tokenizer.save(paths.tokenizer / "model")
    return {"continuous_embodiments": continuous, "report": _jsonable(report)}


def tokenizer_folder(paths: RunPaths) -> Optional[str]:
    folder = paths.tokenizer / "model"
    return str(folder) if folder.is_dir() else None


def run_sft(config: PipelineConfig, paths: RunPaths) -> dict:
    from gea.training.config import SFTConfig
    from gea.training.sft import SFTTrainer

    sft_config = SFTConfig.from_dict(
        {
            **config.sft,
            "run_dir": str(paths.stage("sft")),
            # Every embodiment is its own dataset with equal weight, as GEA mixes its datasets.
            "datasets": [{"path": str(paths.data), "envs": [name]} for name in config.envs],
            "action_tokenizer": tokenizer_folder(paths),
        },
        where="sft section",
    )
    checkpoint = SFTTrainer(sft_config, resume=True).train()
    return {"checkpoint": str(checkpoint)}


def run_eval(config: PipelineConfig, paths: RunPaths, checkpoint: str, stage: str) -> dict:
    from gea.evaluation.harness import EvaluationConfig, evaluate
    from gea.evaluation.policy_agent import policy_agent_factory
    from gea.evaluation.report import write_report
    from gea.evaluation.seeds import eval_seeds
    from gea.manifest import build_manifest, hash_path

    agent_factory, image_size = policy_agent_factory(Path(checkpoint), greedy=config.eval.greedy, image_size=config.image_size)
    eval_config = EvaluationConfig(
        envs=tuple(config.envs),
        episodes=config.eval.episodes,
        image_size=image_size,
        workers=config.eval.workers,
        batch_size=config.eval.batch_size,
        videos_per_env=config.eval.videos_per_env,
        max_episode_steps=config.eval.max_episode_steps,
    )
    result = evaluate(agent_factory, eval_config)
    manifest = build_manifest(
        checkpoint=checkpoint,
        checkpoint_sha256=hash_path(Path(checkpoint)),
        seeds=eval_seeds(eval_config.episodes, eval_config.seed_version),
        image_size=image_size,
        greedy=config.eval.greedy,
    )
    report_paths = write_report(result, paths.stage(stage), manifest)
    return {
        "success": {s.embodiment: [s.success_rate, s.success_low, s.success_high] for s in result.summaries},
        "macro_success_rate": result.macro_success_rate,
        "paths": {kind: str(path) for kind, path in report_paths.items()},
    }


def run_ppo(config: PipelineConfig, paths: RunPaths, init_checkpoint: str) -> dict:
    from gea.rl.run import PPORunConfig, run_ppo as run

    ppo_config = PPORunConfig.from_dict(
        {
            **(config.ppo or {}),
            "run_dir": str(paths.stage("ppo")),
            "init": init_checkpoint,
            "envs": config.ppo_envs or config.envs,
            # A rerun after an interruption continues from the stage's latest checkpoint.
            "resume": True,
        },
        where="ppo section",
    )
    checkpoint = run(ppo_config)
    return {"checkpoint": str(checkpoint)}


def _jsonable(value):
    import dataclasses

    if dataclasses.is_dataclass(value):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value

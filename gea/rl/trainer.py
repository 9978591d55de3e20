"""`PPOTrainer`: the iteration loop behind `gea.rl.run.run_ppo`.

The driver keeps its own copy of the policy and, before each checkpoint, copies the
learners' trainable tensors into it (`GeaTorchRLModule.get_state` sends only those).
Checkpoints use the SFT layout, so `gea eval` and `load_bundle` read them unchanged.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from gea.rl.algorithm import build_ppo_config
from gea.rl.env import GeaEnvConfig
from gea.rl.factories import DetokenizerFactory, ExpertSourceFactory, PolicyFactory, load_lora_bundle
from gea.rl.learner import GeaPPOTorchLearner
from gea.rl.run import (
    CONFIG_FILE,
    EVAL_HISTORY_FILE,
    LEARNER_STATE_FILE,
    STAGE,
    STATE_FILE,
    TENSORBOARD_FOLDER,
    PPORunConfig,
)
from gea.training.bundle import check_embodiments_covered
from gea.training.checkpoint import RUN_CHECKPOINTS_FOLDER, CheckpointManager, resolve_checkpoint, verify_checkpoint

logger = logging.getLogger(__name__)

# Prefix of the GEA policy's parameters in the RL module's state: module.policy (the
# GEAActionPolicy), then its .policy (the GEAPolicy).
MODULE_POLICY_PREFIX = "policy.policy."
# Observation size reserved for the instruction; a longer instruction raises ValueError naming this limit.
MAX_INSTRUCTION_BYTES = 512


def _scalar(value: Any) -> Optional[float]:
    """Return `value` as a finite float, or None for non-numbers and NaN (RLlib's "no data")."""
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)) and np.isfinite(value):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and torch.isfinite(value):
        return float(value)
    return None


class PPOTrainer:
    """Resolves a `PPORunConfig` into an RLlib algorithm and runs its iterations."""

    def __init__(self, config: PPORunConfig, show_progress: bool = True) -> None:
        self.config = config
        self.show_progress = show_progress
        self.settings = config.ppo_settings()
        self.run_dir = Path(config.run_dir)
        self.checkpoints = CheckpointManager(self.run_dir / RUN_CHECKPOINTS_FOLDER, keep=config.keep_checkpoints)
        self.init = resolve_checkpoint(config.init)
        self.init_metadata = verify_checkpoint(self.init)["metadata"]
        self.resume_from = self.checkpoints.latest() if config.resume else None
        if config.resume and self.resume_from is None:
            logger.info("No checkpoint in %s yet; starting from %s.", self.checkpoints.root, self.init)
        self.image_size = int(config.image_size or self.init_metadata.get("image_size") or 0)
        if self.image_size < 8:
            raise ValueError(
                f"Checkpoint {self.init} records no image_size; set image_size in the PPO config to the size "
                "the SFT data was collected at."
            )

    # ------------------------------------------------------------------------ setup steps

    @property
    def weights_from(self) -> Path:
        """The checkpoint every process loads: the latest PPO checkpoint when resuming, else `init`."""
        return self.resume_from if self.resume_from is not None else self.init

    def expert_paths(self) -> list[str]:
        """Return the trajectory folders of the SFT term: the config's, else the SFT checkpoint's."""
        if self.config.expert_data is not None:
            paths = list(self.config.expert_data)
        else:
            datasets = self.init_metadata.get("config", {}).get("datasets") or []
            paths = sorted({str(spec["path"]) for spec in datasets})
        if not paths:
            raise ValueError(
                f"Checkpoint {self.init} records no SFT datasets; set expert_data in the PPO config or sft_coeff: 0."
            )
        # Checked here because the learners that read them may run in other processes.
        missing = [path for path in paths if not Path(path).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"Expert trajectory folders {missing} not found (relative paths resolve against {Path.cwd()}); "
                "set expert_data in the PPO config to existing folders or set settings.sft_coeff to 0."
            )
        return paths

    def check_resumable(self) -> None:
        """Raise if the checkpoint to resume from was trained on other embodiments."""
        if self.resume_from is None:
            return
        saved = verify_checkpoint(self.resume_from)["metadata"].get("trained_envs")
        if saved != list(self.config.envs):
            raise ValueError(
                f"Checkpoint {self.resume_from} was trained on {saved}, but the config lists {list(self.config.envs)}. "
                "Resume with the same envs or start a new run_dir."
            )

    def env_config(self, history_length: int) -> GeaEnvConfig:
        envs = tuple(self.config.envs)
        return GeaEnvConfig(
            envs=envs,
            detokenizer_factory=DetokenizerFactory(str(self.weights_from), envs),
            image_size=self.image_size,
            frame_stack=history_length,
            max_instruction_bytes=MAX_INSTRUCTION_BYTES,
            seed=self.settings.seed,
            max_episode_steps=self.config.max_episode_steps,
            reward=self.config.reward,
        )

    def build_algorithm(self):
        """Load the driver's copy of the policy and build the RLlib algorithm."""
        config = self.config
        self.check_resumable()
        self.bundle = load_lora_bundle(self.weights_from, config.lora_rank)
        check_embodiments_covered(self.bundle.detokenizer, config.envs)
        self.env_settings = self.env_config(self.bundle.policy.config.history_length)
        expert_factory = None
        if self.settings.sft_coeff > 0:
            expert_factory = ExpertSourceFactory(tuple(self.expert_paths()), self.env_settings)
        policy_factory = PolicyFactory(str(self.weights_from), tuple(config.envs), config.lora_rank)
        algorithm_config = build_ppo_config(self.settings, self.env_settings, policy_factory, expert_factory)
        return algorithm_config.build_algo()

    def _restore(self, algorithm) -> tuple[int, int]:
        """Restore learner state from `resume_from`; return (iteration, environment steps) reached."""
        if self.resume_from is None:
            return 0, 0
        state = torch.load(self.resume_from / LEARNER_STATE_FILE, weights_only=False)
        algorithm.learner_group.foreach_learner(lambda learner: learner.set_resume_state(state))
        progress = json.loads((self.resume_from / STATE_FILE).read_text())
        logger.info("Resuming PPO from %s at iteration %d.", self.resume_from, progress["iteration"])
        return int(progress["iteration"]), int(progress["env_steps"])

    # ------------------------------------------------------------------------- the loop

    def train(self) -> Path:
        """Run the remaining iterations and return the last checkpoint."""
        from torch.utils.tensorboard import SummaryWriter

        config = self.config
        algorithm = self.build_algorithm()
        try:
            iteration, steps_before = self._restore(algorithm)
            last_checkpoint = self.resume_from
            writer = SummaryWriter(str(self.run_dir / TENSORBOARD_FOLDER))
            if config.eval_at_start and iteration == 0:
                self._evaluate(self.init, iteration=0, env_steps=0)
            progress = tqdm(total=config.iterations, initial=iteration, desc="ppo", unit="iter", disable=not self.show_progress)
            env_steps = steps_before
            while iteration < config.iterations:
                # 1. Sample and update.
                result = algorithm.train()
                iteration += 1
                env_steps = steps_before + int(result.get("num_env_steps_sampled_lifetime", 0))

                # 2. Log.
                metrics = self._log(writer, result, iteration, env_steps)
                progress.set_postfix({key.split("/")[1]: f"{value:.2f}" for key, value in metrics.items() if key.endswith("success_rate")})
                progress.update()

                # 3. Checkpoint and evaluate.
                last = iteration == config.iterations
                evaluate_now = config.eval_every > 0 and (iteration % config.eval_every == 0 or last)
                if evaluate_now or last or iteration % config.checkpoint_every == 0:
                    last_checkpoint = self._save(algorithm, iteration, env_steps)
                if evaluate_now:
                    self._evaluate(last_checkpoint, iteration, env_steps)
            progress.close()
            writer.close()
        finally:
            algorithm.stop()
        if last_checkpoint is None:
            raise RuntimeError(f"No checkpoint written: the run in {self.run_dir} had no iterations left.")
        return last_checkpoint

    def _log(self, writer, result: dict, iteration: int, env_steps: int) -> dict[str, float]:
        """Write rollout and learner metrics to TensorBoard; return the rollout ones."""
        rollout: dict[str, float] = {}
        for key, value in result.get("env_runners", {}).items():
            number = _scalar(value)
            if number is None:
                continue
            if key.startswith("rollout/"):
                rollout[key] = number
            elif key in ("episode_return_mean", "episode_len_mean"):
                rollout[f"rollout/{key}"] = number
        for key, value in rollout.items():
            writer.add_scalar(key, value, iteration)
        writer.add_scalar("rollout/env_steps", env_steps, iteration)
        for module_id, learner in result.get("learners", {}).items():
            if module_id.startswith("__") or not isinstance(learner, dict):
                continue
            for key, value in learner.items():
                number = _scalar(value)
                if number is not None:
                    writer.add_scalar(key if key.startswith("train/") else f"train/{key}", number, iteration)
        writer.flush()
        return rollout

    # ------------------------------------------------------------------ checkpoints, eval

    def _pull_weights(self, algorithm) -> None:
        """Copy the learners' trainable weights into the driver's policy."""
        module_states = algorithm.learner_group.get_weights()
        if len(module_states) != 1:
            raise RuntimeError(f"Expected one RL module, got {sorted(module_states)}.")
        (state,) = module_states.values()
        policy_state = {
            name[len(MODULE_POLICY_PREFIX) :]: torch.as_tensor(np.asarray(value))
            for name, value in state.items()
            if name.startswith(MODULE_POLICY_PREFIX)
        }
        if len(policy_state) != len(state):
            raise RuntimeError(f"Module state has keys outside {MODULE_POLICY_PREFIX!r}: {sorted(state)[:5]}.")
        _, unexpected = self.bundle.policy.load_state_dict(policy_state, strict=False)
        if unexpected:
            raise RuntimeError(f"The learner sent weights the driver's policy does not have: {unexpected[:5]}.")

    def _save(self, algorithm, iteration: int, env_steps: int) -> Path:
        self._pull_weights(algorithm)
        learner_state = next(iter(algorithm.learner_group.foreach_learner(GeaPPOTorchLearner.get_resume_state))).get()
        config_text = yaml.safe_dump(self.config.to_dict(), sort_keys=False)

        def write(folder: Path) -> None:
            self.bundle.save(folder)
            torch.save(learner_state, folder / LEARNER_STATE_FILE)
            (folder / STATE_FILE).write_text(json.dumps({"iteration": iteration, "env_steps": env_steps}))
            (folder / CONFIG_FILE).write_text(config_text)

        metadata = {
            "stage": STAGE,
            "step": iteration,
            "env_steps": env_steps,
            "init": str(self.init),
            "image_size": self.image_size,
            "embodiments": self.bundle.detokenizer.embodiments,
            "trained_envs": list(self.config.envs),
            "detokenizer_fingerprint": self.bundle.detokenizer.fingerprint(),
            "config": {"datasets": [{"path": path} for path in self._expert_paths_or_empty()]},
        }
        return self.checkpoints.save(iteration, write, metadata)

    def _expert_paths_or_empty(self) -> list[str]:
        return self.expert_paths() if self.settings.sft_coeff > 0 else []

    def _evaluate(self, checkpoint: Path, iteration: int, env_steps: int) -> None:
        """Evaluate `checkpoint` with the harness and log ``eval/<env>/success_rate``."""
        from gea.evaluation.harness import EvaluationConfig, evaluate
        from gea.evaluation.policy_agent import policy_agent_factory
        from gea.evaluation.report import write_tensorboard

        config = self.config
        agent_factory, image_size = policy_agent_factory(checkpoint, greedy=config.eval_greedy, image_size=self.image_size)
        eval_config = EvaluationConfig(
            envs=tuple(config.envs),
            episodes=config.eval_episodes,
            image_size=image_size,
            batch_size=config.eval_batch_size,
            videos_per_env=0,
            max_episode_steps=config.eval_max_episode_steps,
        )
        result = evaluate(agent_factory, eval_config, show_progress=False)
        write_tensorboard(result, self.run_dir / TENSORBOARD_FOLDER, step=iteration)
        record = {
            "iteration": iteration,
            "env_steps": env_steps,
            "checkpoint": str(checkpoint),
            "success": {
                s.embodiment: {"rate": s.success_rate, "low": s.success_low, "high": s.success_high, "episodes": s.episodes}
                for s in result.summaries
            },
        }
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / EVAL_HISTORY_FILE, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        logger.info(
            "Iteration %d eval: %s",
            iteration,
            ", ".join(f"{s.embodiment} {s.success_rate:.2f} [{s.success_low:.2f}, {s.success_high:.2f}]" for s in result.summaries),
        )

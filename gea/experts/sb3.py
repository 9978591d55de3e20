"""Train stable-baselines3 experts on an embodiment's state observation, and measure experts.

An adapter opts in by satisfying `SB3TrainableAdapter`: it states how to train its expert
(`expert_spec`), builds a render-free environment (`make_state_env`) and loads a saved
model as its `ExpertPolicy` (`load_expert`). Nothing here depends on a particular body.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence, runtime_checkable

import gymnasium as gym

from gea_envs.base import EmbodimentAdapter, ExpertPolicy

logger = logging.getLogger(__name__)

# Episodes of the freshly trained model that `train_expert` plays before returning.
DEFAULT_EVAL_EPISODES = 5
# Evaluation seeds start here so they never coincide with a training seed.
EVAL_SEED_OFFSET = 10_000


@runtime_checkable
class SB3TrainableAdapter(Protocol):
    """An adapter whose expert is a stable-baselines3 model trained on the state observation."""

    name: str
    max_episode_steps: int

    @property
    def expert_spec(self) -> Any:
        """An object with ``algorithm`` (class name), ``timesteps`` and ``hyperparameters``."""

    @property
    def expert_path(self) -> Path:
        """Where the shipped expert file lives."""

    def make_state_env(self, seed: int) -> gym.Env:
        """Build the environment without rendering."""

    def load_expert(self, path: Path) -> ExpertPolicy:
        """Load the expert saved at `path`."""


@dataclass(frozen=True)
class ExpertTrainingConfig:
    """One `train_expert` run.

    Attributes:
        embodiment: registry name, such as ``"mujoco/Reacher-v5"``.
        out: zip file to write; None writes the adapter's shipped expert file.
        timesteps: environment steps to train; None uses the adapter's default.
        seed: seed of the algorithm, the network initialisation and the environment.
        eval_episodes: episodes played after training to log return and success rate (0 skips).
        torch_threads: CPU threads torch may use. Small MLPs gain little from more.
        resume: zip file of a model to continue training for `timesteps` more steps. Its replay
            buffer is not saved with it, so an off-policy model (SAC) restarts from an empty one.
        max_minutes: wall-clock training budget. Training stops when it runs out and the model
            is saved as it is then. None trains for all `timesteps`.
    """

    embodiment: str
    out: Optional[Path] = None
    timesteps: Optional[int] = None
    seed: int = 0
    eval_episodes: int = DEFAULT_EVAL_EPISODES
    torch_threads: int = 1
    max_minutes: Optional[float] = None
    resume: Optional[Path] = None

    def __post_init__(self) -> None:
        if self.timesteps is not None and self.timesteps < 1:
            raise ValueError(f"timesteps must be positive, got {self.timesteps}.")
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {self.seed}.")
        if self.eval_episodes < 0:
            raise ValueError(f"eval_episodes must be 0 or more, got {self.eval_episodes}.")
        if self.torch_threads < 1:
            raise ValueError(f"torch_threads must be at least 1, got {self.torch_threads}.")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes must be positive, got {self.max_minutes}.")
        if self.resume is not None and not Path(self.resume).is_file():
            raise ValueError(f"Model to resume {self.resume} not found; pass the zip file a previous run saved.")
        if self.out is not None and Path(self.out).suffix != ".zip":
            raise ValueError(f"Expert output {self.out} must end in .zip, the stable-baselines3 save format.")


@dataclass
class ExpertEvaluation:
    """Returns and successes of an expert over several episodes, with the wall time they took."""

    embodiment: str
    returns: list[float] = field(default_factory=list)
    successes: list[bool] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0

    @property
    def mean_return(self) -> float:
        return statistics.fmean(self.returns) if self.returns else float("nan")

    @property
    def std_return(self) -> float:
        return statistics.pstdev(self.returns) if self.returns else float("nan")

    @property
    def success_rate(self) -> float:
        return sum(self.successes) / len(self.successes) if self.successes else float("nan")

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else float("nan")


def trainable_embodiments() -> list[str]:
    """Return the registered embodiments whose expert `train_expert` can train."""
    from gea_envs import ADAPTERS

    return [name for name in ADAPTERS.names() if isinstance(ADAPTERS.get(name), SB3TrainableAdapter)]


def get_trainable_adapter(embodiment: str) -> SB3TrainableAdapter:
    """Build the adapter of `embodiment`, raising if its expert is not a stable-baselines3 model."""
    from gea_envs import get_adapter

    adapter = get_adapter(embodiment)
    if not isinstance(adapter, SB3TrainableAdapter):
        known = ", ".join(trainable_embodiments()) or "(none)"
        raise ValueError(
            f"Embodiment {embodiment!r} has no stable-baselines3 expert to train. Trainable embodiments: {known}."
        )
    return adapter


def train_expert(config: ExpertTrainingConfig) -> Path:
    """Train the expert that `config` describes, save it as a zip file and return the path."""
    import torch

    adapter = get_trainable_adapter(config.embodiment)
    timesteps = config.timesteps if config.timesteps is not None else adapter.expert_spec.timesteps
    out = Path(config.out) if config.out is not None else adapter.expert_path

    # The thread count is process-wide, so restore it for whatever runs after training.
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.torch_threads)
    try:
        model = _build_model(adapter, config.seed, config.resume)
        _learn(model, adapter.name, timesteps, config)
    finally:
        torch.set_num_threads(previous_threads)

    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    logger.info("Saved expert to %s (%.1f MB)", out, out.stat().st_size / 1e6)

    if config.eval_episodes:
        _log_evaluation(adapter, out, config)
    return out


def _learn(model: Any, name: str, timesteps: int, config: ExpertTrainingConfig) -> None:
    logger.info(
        "Training %s expert for %s: %d timesteps, seed %d",
        type(model).__name__,
        name,
        timesteps,
        config.seed,
    )
    started = time.perf_counter()
    deadline = None if config.max_minutes is None else started + 60 * config.max_minutes
    steps_before = model.num_timesteps
    model.learn(
        total_timesteps=timesteps,
        callback=_make_progress_callback(timesteps, deadline),
        reset_num_timesteps=config.resume is None,
    )
    model.get_env().close()

    trained = model.num_timesteps - steps_before
    if trained < timesteps:
        logger.warning(
            "Stopped %s after %d of %d timesteps because the %.1f-minute budget ran out",
            name,
            trained,
            timesteps,
            config.max_minutes,
        )
    logger.info("Trained %s for %d timesteps in %.0f s", name, trained, time.perf_counter() - started)


def _log_evaluation(adapter: SB3TrainableAdapter, path: Path, config: ExpertTrainingConfig) -> None:
    seeds = [EVAL_SEED_OFFSET + config.seed + i for i in range(config.eval_episodes)]
    evaluation = evaluate_expert(adapter, adapter.load_expert(path), seeds)
    logger.info(
        "Expert %s over %d episodes: return %.1f +- %.1f, success rate %.2f",
        adapter.name,
        len(seeds),
        evaluation.mean_return,
        evaluation.std_return,
        evaluation.success_rate,
    )


def _build_model(adapter: SB3TrainableAdapter, seed: int, resume: Optional[Path]) -> Any:
    import stable_baselines3
    from stable_baselines3.common.monitor import Monitor

    spec = adapter.expert_spec
    # Monitor records episode returns, which the progress bar shows.
    env = Monitor(adapter.make_state_env(seed))
    algorithm_class = getattr(stable_baselines3, spec.algorithm)
    if resume is not None:
        logger.info("Resuming from %s", resume)
        model = algorithm_class.load(str(resume), env=env, device="cpu")
        model.set_random_seed(seed)
        return model
    return algorithm_class("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **spec.hyperparameters)


def evaluate_expert(
    adapter: EmbodimentAdapter,
    expert: ExpertPolicy,
    seeds: Sequence[int],
    *,
    image_size: int = 64,
    record: bool = False,
) -> ExpertEvaluation:
    """Play one episode per seed with `expert` and collect returns and successes.

    With `record`, every step is rendered at `image_size` as in data collection, so
    `steps_per_second` measures collection speed; without it only the first frame is.
    """
    from gea_envs.rollout import run_expert_episode

    if not seeds:
        raise ValueError("evaluate_expert needs at least one seed.")
    evaluation = ExpertEvaluation(embodiment=adapter.name)
    env = adapter.make_env(seed=seeds[0], image_size=image_size)
    try:
        started = time.perf_counter()
        for seed in seeds:
            episode = run_expert_episode(adapter, seed, image_size, expert=expert, record=record, env=env)
            evaluation.returns.append(episode.episode_return)
            evaluation.successes.append(episode.success)
            evaluation.steps += episode.length
        evaluation.seconds = time.perf_counter() - started
    finally:
        env.close()
    return evaluation


def _make_progress_callback(total_timesteps: int, deadline: Optional[float]) -> Any:
    """Build a callback that draws a tqdm bar with the mean return of the last 100 episodes.

    The callback stops training once ``time.perf_counter()`` passes `deadline`, if given.
    """
    # Defined here so that importing this module does not import stable-baselines3.
    from stable_baselines3.common.callbacks import BaseCallback
    from tqdm.auto import tqdm

    class ProgressBarCallback(BaseCallback):
        def _on_training_start(self) -> None:
            self.bar = tqdm(total=total_timesteps, unit="step", desc="train-expert")

        def _on_step(self) -> bool:
            self.bar.update(self.training_env.num_envs)
            episodes = self.model.ep_info_buffer
            if episodes and self.n_calls % 1000 == 0:
                self.bar.set_postfix(mean_return=f"{statistics.fmean(e['r'] for e in episodes):.1f}")
            return deadline is None or time.perf_counter() < deadline

        def _on_training_end(self) -> None:
            self.bar.close()

    return ProgressBarCallback()

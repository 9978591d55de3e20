"""Evaluate an agent on several environments over fixed seeds, in parallel worker processes."""

from __future__ import annotations

import logging
import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from gea.evaluation.agents import EvaluationAgent
from gea.evaluation.runner import WorkerOutput, run_episodes
from gea.evaluation.seeds import DEFAULT_VERSION, eval_seeds
from gea.evaluation.stats import (
    EnvironmentSummary,
    EpisodeResult,
    episode_weighted_average,
    macro_average,
    summarize,
)

logger = logging.getLogger(__name__)

AgentFactory = Callable[[], EvaluationAgent]


@dataclass(frozen=True)
class EvaluationConfig:
    """Settings of one evaluation: environments, seed list, episode counts, batching and videos."""

    envs: tuple[str, ...]
    episodes: int = 20
    seed_version: str = DEFAULT_VERSION
    image_size: int = 64
    workers: int = 1
    batch_size: int = 8
    videos_per_env: int = 2
    max_episode_steps: Optional[int] = None

    def __post_init__(self) -> None:
        if not self.envs:
            raise ValueError("EvaluationConfig.envs is empty; name at least one embodiment (see `gea envs`).")
        for name, value in (("episodes", self.episodes), ("workers", self.workers), ("batch_size", self.batch_size)):
            if value < 1:
                raise ValueError(f"EvaluationConfig.{name} must be at least 1, got {value}.")
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise ValueError(f"EvaluationConfig.max_episode_steps must be at least 1 or None, got {self.max_episode_steps}.")
        if self.videos_per_env < 0:
            raise ValueError(f"EvaluationConfig.videos_per_env must be >= 0, got {self.videos_per_env}.")


@dataclass
class EvaluationResult:
    config: EvaluationConfig
    episodes: list[EpisodeResult]
    summaries: list[EnvironmentSummary]
    videos: dict[tuple[str, int], list[np.ndarray]]

    @property
    def macro_success_rate(self) -> float:
        return macro_average(self.summaries)

    @property
    def episode_weighted_success_rate(self) -> float:
        return episode_weighted_average(self.summaries)


# Agents built in this worker process, by pickled factory: a worker serves many chunks of
# one evaluation and loads the agent (e.g. a checkpoint) only once.
_WORKER_AGENTS: dict[bytes, EvaluationAgent] = {}


def _worker_agent(agent_factory: AgentFactory) -> EvaluationAgent:
    key = pickle.dumps(agent_factory)
    if key not in _WORKER_AGENTS:
        _WORKER_AGENTS.clear()
        _WORKER_AGENTS[key] = agent_factory()
    return _WORKER_AGENTS[key]


def _worker(agent_factory: AgentFactory, jobs, config: EvaluationConfig, video_jobs) -> WorkerOutput:
    import torch

    # Each worker owns one core's share; more threads per worker only contend.
    torch.set_num_threads(1)
    return run_episodes(
        _worker_agent(agent_factory),
        jobs,
        config.image_size,
        config.batch_size,
        video_jobs,
        max_episode_steps=config.max_episode_steps,
    )


def evaluate(agent_factory: AgentFactory, config: EvaluationConfig, show_progress: bool = True) -> EvaluationResult:
    """Run ``config.episodes`` episodes per environment and summarize them.

    `agent_factory` must be picklable (a top-level function or `functools.partial`) when
    ``config.workers > 1``: each worker process builds its own agent.
    """
    from gea_envs import ADAPTERS

    for name in config.envs:
        if name not in ADAPTERS:
            ADAPTERS.get(name)  # raises with the list of known names
    seeds = eval_seeds(config.episodes, config.seed_version)
    jobs = [(env, seed) for env in config.envs for seed in seeds]
    video_jobs = frozenset((env, seed) for env in config.envs for seed in seeds[: config.videos_per_env])

    outputs: list[WorkerOutput] = []
    progress = tqdm(total=len(jobs), desc="eval", unit="episode", disable=not show_progress)
    if config.workers == 1:
        outputs.append(
            run_episodes(
                agent_factory(),
                jobs,
                config.image_size,
                config.batch_size,
                video_jobs,
                lambda _: progress.update(),
                config.max_episode_steps,
            )
        )
    else:
        # Chunks of two batches each: small enough for a live progress bar and an even
        # spread over workers, large enough to keep every worker's batch full.
        chunk = 2 * config.batch_size
        chunks = [jobs[i : i + chunk] for i in range(0, len(jobs), chunk)]
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=config.workers, mp_context=context) as pool:
            futures = [pool.submit(_worker, agent_factory, part, config, video_jobs) for part in chunks]
            for future in as_completed(futures):
                output = future.result()
                progress.update(len(output.results))
                outputs.append(output)
    progress.close()

    episodes = sorted((r for o in outputs for r in o.results), key=lambda r: (r.embodiment, r.seed))
    videos = {key: frames for o in outputs for key, frames in o.videos.items()}
    summaries = [summarize(env, [r for r in episodes if r.embodiment == env]) for env in config.envs]
    return EvaluationResult(config, episodes, summaries, videos)

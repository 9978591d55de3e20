"""Expert trajectory collection in parallel worker processes."""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from gea.data.trajectories import episode_path, read_episode_info, write_episode

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CollectedEpisode:
    embodiment: str
    seed: int
    success: bool
    length: int
    episode_return: float


@dataclass
class CollectionSummary:
    """Per-embodiment counts of one `collect` call, skipped (already stored) episodes excluded."""

    collected: dict[str, list[CollectedEpisode]]
    skipped: dict[str, int]

    def success_rate(self, embodiment: str) -> float:
        episodes = self.collected.get(embodiment, [])
        return sum(e.success for e in episodes) / len(episodes) if episodes else float("nan")


def _collect_chunk(
    embodiment: str, seeds: list[int], out_dir: str, image_size: int, action_noise: float
) -> list[CollectedEpisode]:
    """Collect the episodes of `seeds` with one environment, writing each as soon as it ends."""
    # Runs in a worker process: import here so that each worker sets up its own simulators.
    from gea_envs import get_adapter
    from gea_envs.rollout import run_expert_episode

    adapter = get_adapter(embodiment)
    # One environment serves the whole chunk: `reset(seed=...)` fully determines an episode
    # (the adapter contract test checks this), and some simulators take seconds to start.
    env = adapter.make_env(seed=seeds[0], image_size=image_size)
    results = []
    try:
        for seed in seeds:
            episode = run_expert_episode(adapter, seed=seed, image_size=image_size, env=env, action_noise=action_noise)
            write_episode(out_dir, episode, adapter.action_space.kind, image_size)
            results.append(CollectedEpisode(embodiment, seed, episode.success, episode.length, episode.episode_return))
    finally:
        env.close()
    return results


def _check_same_noise(path: Path, action_noise: float) -> None:
    """Raise if the stored episode at `path` was collected with another action noise."""
    stored = read_episode_info(path).action_noise
    if stored != action_noise:
        raise ValueError(
            f"{path} was collected with action_noise={stored}, not {action_noise}. A folder contains one noise "
            f"level, so pass --action-noise {stored} to continue it or choose another --out folder."
        )


def _chunks(jobs: list[tuple[str, int]], size: int) -> list[tuple[str, list[int]]]:
    """Group consecutive jobs of the same embodiment into chunks of at most `size` seeds."""
    chunks: list[tuple[str, list[int]]] = []
    for name, seed in jobs:
        if chunks and chunks[-1][0] == name and len(chunks[-1][1]) < size:
            chunks[-1][1].append(seed)
        else:
            chunks.append((name, [seed]))
    return chunks


def collect(
    embodiments: Sequence[str],
    episodes: int,
    out_dir: str | Path,
    *,
    image_size: int = 64,
    seed_start: int = 0,
    workers: int = 1,
    chunk_size: int = 10,
    show_progress: bool = True,
    action_noise: float = 0.0,
) -> CollectionSummary:
    """Run each embodiment's expert for `episodes` seeds and write the episodes under `out_dir`.

    Episode ``k`` of every embodiment uses seed ``seed_start + k``. Episodes already
    stored are skipped, so rerunning an interrupted collection continues it. Each worker
    task plays up to `chunk_size` seeds of one embodiment in one environment. With
    `action_noise` > 0 the environment executes perturbed expert actions while the files
    keep the expert's labels (see `gea_envs.rollout.run_expert_episode`).
    """
    from gea_envs import ADAPTERS

    for name in embodiments:
        if name not in ADAPTERS:
            ADAPTERS.get(name)  # raises with the list of known names
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}.")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}.")
    if not 0.0 <= action_noise <= 1.0:
        raise ValueError(f"action_noise must be in [0, 1], got {action_noise}. Use 0 to record the expert as is.")

    out_dir = Path(out_dir)
    jobs: list[tuple[str, int]] = []
    skipped = {name: 0 for name in embodiments}
    for name in embodiments:
        for seed in range(seed_start, seed_start + episodes):
            path = episode_path(out_dir, name, seed)
            if path.exists():
                _check_same_noise(path, action_noise)
                skipped[name] += 1
            else:
                jobs.append((name, seed))
    for name, count in skipped.items():
        if count:
            logger.info("%s: %d of %d episodes already stored in %s, skipping them", name, count, episodes, out_dir)

    collected: dict[str, list[CollectedEpisode]] = {name: [] for name in embodiments}
    progress = tqdm(total=len(jobs), desc="collect", unit="episode", disable=not show_progress)
    chunks = _chunks(jobs, chunk_size)
    if workers == 1:
        for name, seeds in chunks:
            results = _collect_chunk(name, seeds, str(out_dir), image_size, action_noise)
            collected[name].extend(results)
            progress.update(len(results))
    else:
        _collect_parallel(chunks, str(out_dir), image_size, action_noise, workers, collected, progress)
    progress.close()
    return CollectionSummary(collected=collected, skipped=skipped)


def _collect_parallel(
    chunks: list[tuple[str, list[int]]],
    out_dir: str,
    image_size: int,
    action_noise: float,
    workers: int,
    collected: dict[str, list[CollectedEpisode]],
    progress: tqdm,
) -> None:
    # "spawn" because forked workers would inherit MuJoCo/EGL and Chromium state of the parent.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: dict[Future, tuple[str, list[int]]] = {
            pool.submit(_collect_chunk, name, seeds, out_dir, image_size, action_noise): (name, seeds)
            for name, seeds in chunks
        }
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                name, seeds = pending.pop(future)
                try:
                    results = future.result()
                except Exception as error:
                    for other in pending:
                        other.cancel()
                    raise RuntimeError(
                        f"Collecting {name} seeds {seeds[0]}..{seeds[-1]} failed: {error}. Episodes finished so far "
                        f"are kept in {out_dir}; rerun the same command to continue."
                    ) from error
                collected[name].extend(results)
                progress.update(len(results))

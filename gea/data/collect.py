"""Expert trajectory collection in parallel worker processes."""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from gea.data.trajectories import episode_path, write_episode

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


def _collect_one(embodiment: str, seed: int, out_dir: str, image_size: int) -> CollectedEpisode:
    # Runs in a worker process: import here so that each worker sets up its own simulators.
    from gea_envs import get_adapter
    from gea_envs.rollout import run_expert_episode

    adapter = get_adapter(embodiment)
    episode = run_expert_episode(adapter, seed=seed, image_size=image_size)
    write_episode(out_dir, episode, adapter.action_space.kind, image_size)
    return CollectedEpisode(embodiment, seed, episode.success, episode.length, episode.episode_return)


def collect(
    embodiments: Sequence[str],
    episodes: int,
    out_dir: str | Path,
    *,
    image_size: int = 64,
    seed_start: int = 0,
    workers: int = 1,
    show_progress: bool = True,
) -> CollectionSummary:
    """Run each embodiment's expert for `episodes` seeds and write the episodes under `out_dir`.

    Episode ``k`` of every embodiment uses seed ``seed_start + k``. Episodes already
    stored are skipped, so rerunning an interrupted collection continues it.
    """
    from gea_envs import ADAPTERS

    for name in embodiments:
        if name not in ADAPTERS:
            ADAPTERS.get(name)  # raises with the list of known names
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}.")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}.")

    out_dir = Path(out_dir)
    jobs: list[tuple[str, int]] = []
    skipped = {name: 0 for name in embodiments}
    for name in embodiments:
        for seed in range(seed_start, seed_start + episodes):
            if episode_path(out_dir, name, seed).exists():
                skipped[name] += 1
            else:
                jobs.append((name, seed))
    for name, count in skipped.items():
        if count:
            logger.info("%s: %d of %d episodes already stored in %s, skipping them", name, count, episodes, out_dir)

    collected: dict[str, list[CollectedEpisode]] = {name: [] for name in embodiments}
    progress = tqdm(total=len(jobs), desc="collect", unit="episode", disable=not show_progress)
    if workers == 1:
        for name, seed in jobs:
            result = _collect_one(name, seed, str(out_dir), image_size)
            collected[name].append(result)
            progress.update()
    else:
        _collect_parallel(jobs, str(out_dir), image_size, workers, collected, progress)
    progress.close()
    return CollectionSummary(collected=collected, skipped=skipped)


def _collect_parallel(
    jobs: list[tuple[str, int]],
    out_dir: str,
    image_size: int,
    workers: int,
    collected: dict[str, list[CollectedEpisode]],
    progress: tqdm,
) -> None:
    # "spawn" because forked workers would inherit MuJoCo/EGL and Chromium state of the parent.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: dict[Future, tuple[str, int]] = {
            pool.submit(_collect_one, name, seed, out_dir, image_size): (name, seed) for name, seed in jobs
        }
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                name, seed = pending.pop(future)
                try:
                    result = future.result()
                except Exception as error:
                    for other in pending:
                        other.cancel()
                    raise RuntimeError(
                        f"Collecting {name} seed {seed} failed: {error}. Episodes finished so far are kept in "
                        f"{out_dir}; rerun the same command to continue."
                    ) from error
                collected[name].append(result)
                progress.update()

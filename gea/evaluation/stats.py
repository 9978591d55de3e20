"""Success-rate statistics: Wilson intervals and the two cross-environment averages."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Return the Wilson score interval for a binomial proportion (95 % for the default `z`).

    Unlike the normal approximation it stays inside [0, 1] and is informative at 0 % and 100 %.
    """
    if trials <= 0:
        raise ValueError(f"trials must be positive, got {trials}.")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be in [0, {trials}], got {successes}.")
    p = successes / trials
    denominator = 1 + z**2 / trials
    centre = (p + z**2 / (2 * trials)) / denominator
    half_width = z * math.sqrt(p * (1 - p) / trials + z**2 / (4 * trials**2)) / denominator
    return max(0.0, centre - half_width), min(1.0, centre + half_width)


@dataclass(frozen=True)
class EpisodeResult:
    """Outcome of one evaluation episode."""

    embodiment: str
    seed: int
    success: bool
    length: int
    episode_return: float
    valid_decodes: int
    decodes: int


@dataclass(frozen=True)
class EnvironmentSummary:
    embodiment: str
    episodes: int
    success_rate: float
    success_low: float
    success_high: float
    mean_length: float
    mean_return: float
    decode_valid_rate: float


def summarize(embodiment: str, results: Sequence[EpisodeResult]) -> EnvironmentSummary:
    """Aggregate the episodes of one environment."""
    if not results:
        raise ValueError(f"No evaluation episodes for {embodiment}.")
    successes = sum(r.success for r in results)
    low, high = wilson_interval(successes, len(results))
    decodes = sum(r.decodes for r in results)
    return EnvironmentSummary(
        embodiment=embodiment,
        episodes=len(results),
        success_rate=successes / len(results),
        success_low=low,
        success_high=high,
        mean_length=sum(r.length for r in results) / len(results),
        mean_return=sum(r.episode_return for r in results) / len(results),
        decode_valid_rate=sum(r.valid_decodes for r in results) / decodes if decodes else 1.0,
    )


def macro_average(summaries: Sequence[EnvironmentSummary]) -> float:
    """Mean of per-environment success rates: every environment counts the same."""
    return sum(s.success_rate for s in summaries) / len(summaries)


def episode_weighted_average(summaries: Sequence[EnvironmentSummary]) -> float:
    """Share of all episodes that succeeded: environments with more episodes count more."""
    episodes = sum(s.episodes for s in summaries)
    return sum(s.success_rate * s.episodes for s in summaries) / episodes

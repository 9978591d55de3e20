"""Per-embodiment rollout metrics logged by every env runner."""

from __future__ import annotations

from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback

from gea.rl.env import INFO_DECODE_VALID_RATE, INFO_EMBODIMENT, INFO_SUCCESS

# Episodes averaged into each logged rate; RLlib keeps this window per env runner
# and merges the runners' windows when it reduces the results.
# NOTE: in the BabyAI run of experiments/ppo.md the logged rate followed each iteration's
# 5 to 8 finished episodes (0.0 right after 0.8), so RLlib 2.60 seems to reduce this
# window every iteration rather than keep the last 100 episodes.
METRICS_WINDOW = 100


def success_rate_key(embodiment: str) -> str:
    """Return the metric name of `embodiment`'s episode success rate."""
    return f"rollout/{embodiment}/success_rate"


def decode_valid_rate_key(embodiment: str) -> str:
    """Return the metric name of the share of `embodiment`'s steps whose tokens decoded to a valid action."""
    return f"rollout/{embodiment}/decode_valid_rate"


class RolloutMetricsCallback(RLlibCallback):
    """Log ``rollout/<env>/success_rate`` and ``rollout/<env>/decode_valid_rate`` at each episode end.

    Both come from the info dict of the episode's last step, which `GeaEmbodimentEnv`
    fills with the adapter's success decision and the episode's decode-valid share.
    """

    def on_episode_end(self, *, episode: Any, metrics_logger: Any = None, **kwargs: Any) -> None:
        if metrics_logger is None:
            return
        info = episode.get_infos(-1)
        if INFO_SUCCESS not in info:
            return
        embodiment = info[INFO_EMBODIMENT]
        metrics_logger.log_value(
            success_rate_key(embodiment), float(info[INFO_SUCCESS]), reduce="mean", window=METRICS_WINDOW
        )
        metrics_logger.log_value(
            decode_valid_rate_key(embodiment),
            float(info[INFO_DECODE_VALID_RATE]),
            reduce="mean",
            window=METRICS_WINDOW,
        )

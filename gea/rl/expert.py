"""Expert batches for the supervised (SFT) term of the RL loss.

The learner mixes ``sft_coeff * SFT loss`` on expert demonstrations into every PPO
update, which keeps the policy close to the behaviour it learned in stage 1. An
`ExpertBatchSource` yields batches in the RL environment's own observation format,
so the module scores expert and on-policy samples with the same forward pass.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol, Sequence

import numpy as np
from ray.rllib.core.columns import Columns

from gea.rl.env import GeaEnvConfig, encode_instruction, stack_observation
from gea_envs.rollout import EpisodeRecord
from gea_envs.spaces import Action


class ExpertBatchSource(Protocol):
    """Samples expert steps; each learner builds its own source from a factory."""

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, Any]:
        """Return ``{Columns.OBS: {key: array}, Columns.ACTIONS: int64 (batch_size, max_action_tokens)}``."""
        ...


class RecordedEpisodeExpertSource:
    """Serves uniformly sampled steps of recorded expert episodes as token-id batches.

    Episodes are `gea_envs.rollout.EpisodeRecord`s, as `TrajectoryDataset.load_episode`
    returns them. Observations are built exactly as `GeaEmbodimentEnv` builds them
    (frame stacking, padding, instruction bytes), and actions are encoded with
    `encode_action(embodiment, action) -> padded token ids`.
    """

    def __init__(
        self,
        episodes: Sequence[EpisodeRecord],
        env_config: GeaEnvConfig,
        encode_action: Callable[[str, Action], np.ndarray],
    ) -> None:
        usable = [episode for episode in episodes if episode.length and episode.frames]
        if not usable:
            raise ValueError("RecordedEpisodeExpertSource needs at least one episode recorded with frames.")
        for episode in usable:
            if episode.embodiment not in env_config.envs:
                raise ValueError(
                    f"Expert episode of {episode.embodiment!r} is not an embodiment of this run {env_config.envs}."
                )
        self.episodes = list(usable)
        self.env_config = env_config
        self.encode_action = encode_action
        # (episode, step) pairs, so sampling is uniform over steps rather than episodes.
        self._index = np.array(
            [(e, t) for e, episode in enumerate(self.episodes) for t in range(episode.length)], dtype=np.int64
        )

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, Any]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        picks = self._index[rng.integers(0, len(self._index), size=batch_size)]
        observations = [self._observation(int(e), int(t)) for e, t in picks]
        actions = [self._action(int(e), int(t)) for e, t in picks]
        stacked = {key: np.stack([observation[key] for observation in observations]) for key in observations[0]}
        return {Columns.OBS: stacked, Columns.ACTIONS: np.stack(actions).astype(np.int64)}

    def _observation(self, episode_index: int, step: int) -> dict[str, np.ndarray]:
        episode = self.episodes[episode_index]
        first = max(0, step - self.env_config.frame_stack + 1)
        history = [np.stack(episode.frames[t]) for t in range(first, step + 1)]
        # At the start of an episode the environment repeats the first frame.
        history = [history[0]] * (self.env_config.frame_stack - len(history)) + history
        proprio: Optional[np.ndarray] = episode.proprio[step] if episode.proprio else None
        return stack_observation(
            self.env_config,
            embodiment=episode.embodiment,
            frame_history=history,
            proprio=proprio,
            instruction=encode_instruction(episode.instruction, self.env_config.max_instruction_bytes),
        )

    def _action(self, episode_index: int, step: int) -> np.ndarray:
        episode = self.episodes[episode_index]
        return np.asarray(self.encode_action(episode.embodiment, episode.actions[step]), dtype=np.int64)

"""Expert batches for the supervised (SFT) term of the RL loss.

The learner mixes ``sft_coeff * SFT loss`` on expert demonstrations into every PPO
update, which keeps the policy close to the behaviour it learned in stage 1. An
`ExpertBatchSource` yields batches in the RL environment's own observation format,
so the module scores expert and on-policy samples with the same forward pass.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Optional, Protocol, Sequence

import numpy as np
from ray.rllib.core.columns import Columns

from gea.data import TrajectoryDataset
from gea.rl.detokenizer import ActionDetokenizer
from gea.rl.env import GeaEnvConfig, encode_instruction, stack_observation
from gea_envs.rollout import EpisodeRecord
from gea_envs.spaces import Action


class ExpertBatchSource(Protocol):
    """Samples expert steps; each learner builds its own source from a factory."""

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, Any]:
        """Return ``{Columns.OBS: {key: array}, Columns.ACTIONS: int64 (batch_size, max_action_tokens)}``."""
        ...


class PaddingDetokenizer(ActionDetokenizer, Protocol):
    """A de-tokenizer that also encodes agent actions as padded token ids ``(max_action_tokens,)``."""

    def encode(self, embodiment: str, action: Action) -> np.ndarray:
        ...


class _EpisodeStepSource:
    """Samples expert steps with every embodiment equally likely, then a uniform step of it.

    Weighting embodiments equally keeps one with many recorded steps from crowding the
    others out of the SFT term. Subclasses provide the episodes' metadata and loading.
    Observations are built exactly as `GeaEmbodimentEnv` builds them (frame stacking,
    action history, padding, instruction bytes).
    """

    def __init__(
        self,
        embodiments: Sequence[str],
        lengths: Sequence[int],
        env_config: GeaEnvConfig,
        detokenizer: PaddingDetokenizer,
    ) -> None:
        for embodiment in embodiments:
            if embodiment not in env_config.envs:
                raise ValueError(
                    f"Expert episode of {embodiment!r} is not an embodiment of this run {env_config.envs}."
                )
        self.env_config = env_config
        self.detokenizer = detokenizer
        # Per embodiment, the (episode, step) pairs of its episodes.
        steps: dict[str, list[tuple[int, int]]] = {}
        for index, (embodiment, length) in enumerate(zip(embodiments, lengths)):
            steps.setdefault(embodiment, []).extend((index, t) for t in range(length))
        self._steps = {name: np.asarray(pairs, dtype=np.int64) for name, pairs in sorted(steps.items()) if pairs}
        if not self._steps:
            raise ValueError("The expert source needs at least one episode with at least one step.")

    def _episode(self, index: int) -> tuple[EpisodeRecord, np.ndarray]:
        """Return episode `index` and its actions' padded token ids ``(length, max_action_tokens)``."""
        raise NotImplementedError

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, Any]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        names = sorted(self._steps)
        observations, actions = [], []
        for name_index in rng.integers(0, len(names), size=batch_size):
            pairs = self._steps[names[int(name_index)]]
            episode_index, step = pairs[rng.integers(0, len(pairs))]
            observation, action = self._step(int(episode_index), int(step))
            observations.append(observation)
            actions.append(action)
        stacked = {key: np.stack([observation[key] for observation in observations]) for key in observations[0]}
        return {Columns.OBS: stacked, Columns.ACTIONS: np.stack(actions).astype(np.int64)}

    def _step(self, episode_index: int, step: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        episode, action_ids = self._episode(episode_index)
        first = max(0, step - self.env_config.frame_stack + 1)
        proprio: Optional[np.ndarray] = episode.proprio[step] if episode.proprio else None
        observation = stack_observation(
            self.env_config,
            embodiment=episode.embodiment,
            frame_history=[np.stack(episode.frames[t]) for t in range(first, step + 1)],
            proprio=proprio,
            instruction=encode_instruction(episode.instruction, self.env_config.max_instruction_bytes),
            action_history=self._history_ids(episode, action_ids, first, step),
            detokenizer=self.detokenizer,
        )
        return observation, action_ids[step]

    def _history_ids(self, episode: EpisodeRecord, action_ids: np.ndarray, first: int, step: int) -> list[np.ndarray]:
        """Return the token ids of the actions executed at steps ``first`` to ``step - 1``."""
        if not episode.executed_actions:
            # The labels were executed as they are, so their cached ids serve.
            return [action_ids[t] for t in range(first, step)]
        return [
            np.asarray(self.detokenizer.encode(episode.embodiment, episode.executed_actions[t]), dtype=np.int64)
            for t in range(first, step)
        ]

    def _encode(self, episode: EpisodeRecord) -> np.ndarray:
        """Return the padded token ids ``(length, max_action_tokens)`` of the episode's actions."""
        return np.stack(
            [np.asarray(self.detokenizer.encode(episode.embodiment, action), dtype=np.int64) for action in episode.actions]
        )


class RecordedEpisodeExpertSource(_EpisodeStepSource):
    """Serves steps of in-memory expert episodes (`gea_envs.rollout.EpisodeRecord`)."""

    def __init__(self, episodes: Sequence[EpisodeRecord], env_config: GeaEnvConfig, detokenizer: PaddingDetokenizer) -> None:
        usable = [episode for episode in episodes if episode.length and episode.frames]
        if not usable:
            raise ValueError("RecordedEpisodeExpertSource needs at least one episode recorded with frames.")
        super().__init__(
            [episode.embodiment for episode in usable], [episode.length for episode in usable], env_config, detokenizer
        )
        self.episodes = list(usable)
        self._action_ids = [self._encode(episode) for episode in usable]

    def _episode(self, index: int) -> tuple[EpisodeRecord, np.ndarray]:
        return self.episodes[index], self._action_ids[index]


class TrajectoryExpertSource(_EpisodeStepSource):
    """Serves steps of episodes stored by `gea collect`, loading them lazily.

    Args:
        dataset: the stored episodes (only the run's embodiments are used).
        env_config: the run's environment settings; frames must have been recorded at
            its ``image_size``.
        detokenizer: encodes the expert actions as padded token ids.
        successful_only: skip episodes whose expert failed, as SFT does by default.
        cache_episodes: decoded episodes kept in memory.
    """

    def __init__(
        self,
        dataset: TrajectoryDataset,
        env_config: GeaEnvConfig,
        detokenizer: PaddingDetokenizer,
        successful_only: bool = True,
        cache_episodes: int = 128,
    ) -> None:
        if cache_episodes < 1:
            raise ValueError(f"cache_episodes must be at least 1, got {cache_episodes}.")
        self.dataset = dataset
        self._indices = [
            index
            for index, info in enumerate(dataset.episodes)
            if info.embodiment in env_config.envs and info.length and (info.success or not successful_only)
        ]
        if not self._indices:
            raise ValueError(
                f"No usable expert episodes of {list(env_config.envs)} in {[str(root) for root in dataset.roots]} "
                f"(successful_only={successful_only}); collect them with `gea collect`."
            )
        infos = [dataset.episodes[index] for index in self._indices]
        sizes = sorted({info.image_size for info in infos})
        if sizes != [env_config.image_size]:
            raise ValueError(
                f"Expert episodes were recorded at image sizes {sizes} but the run renders {env_config.image_size} px; "
                "set the run's image_size to match or collect the expert data again at that size."
            )
        super().__init__([info.embodiment for info in infos], [info.length for info in infos], env_config, detokenizer)
        self._cache: OrderedDict[int, tuple[EpisodeRecord, np.ndarray]] = OrderedDict()
        self._cache_size = cache_episodes

    def _episode(self, index: int) -> tuple[EpisodeRecord, np.ndarray]:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        record = self.dataset.load_episode(self._indices[index])
        entry = (record, self._encode(record))
        self._cache[index] = entry
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return entry

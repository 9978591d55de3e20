"""SFT samples: one step of one expert episode, as a policy prompt plus its target action tokens."""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from gea.data import TrajectoryDataset
from gea.data.trajectories import decode_frame
from gea.policy import GEAPolicy, PolicyInput
from gea.training.config import DatasetSpec
from gea_envs import get_adapter
from gea_tokenizers import ActionDetokenizer, PrefixConstraint

logger = logging.getLogger(__name__)


@dataclass
class SFTBatch:
    inputs: list[PolicyInput]
    action_ids: list[list[int]]
    constraints: list[PrefixConstraint]
    embodiments: list[str]


@dataclass
class _Episode:
    # PNG bytes per step and camera. A sample decodes only the frames its prompt shows, which
    # keeps long episodes of large frames from costing a full decode on every cache miss.
    png_frames: list[list[bytes]]
    action_ids: list[list[int]]  # the expert's labels: the training targets
    history_ids: list[list[int]]  # the executed actions: what the prompt's history shows


class SFTDataMix:
    """Samples steps from several trajectory datasets mixed by weight.

    Sampling is a pure function of ``(seed, step, rank)``, so a resumed run draws exactly
    the batches the interrupted run would have drawn. The data position is therefore just the step.

    With `validation_episodes` > 0, the last that many usable episodes of each dataset are
    held out of training; `validation_batches` serves their steps.
    """

    def __init__(
        self,
        specs: Sequence[DatasetSpec],
        datasets: Sequence[TrajectoryDataset],
        policy: GEAPolicy,
        detokenizer: ActionDetokenizer,
        cache_episodes: int = 2048,
        validation_episodes: int = 0,
    ) -> None:
        self.policy = policy
        self.detokenizer = detokenizer
        self.datasets = list(datasets)
        self._cache: OrderedDict[tuple[int, int], _Episode] = OrderedDict()
        self._cache_size = cache_episodes
        # Per dataset: (episode index, step) of every usable step.
        self._steps: list[np.ndarray] = []
        # (dataset index, episode index, step) of every held-out step.
        self.validation_steps: list[tuple[int, int, int]] = []
        weights = []
        for dataset_index, (spec, dataset) in enumerate(zip(specs, datasets)):
            usable = [index for index, info in enumerate(dataset.episodes) if info.success or not spec.successful_only]
            if validation_episodes and validation_episodes >= len(usable):
                raise ValueError(
                    f"Dataset {spec.path} has {len(usable)} usable episodes, so it cannot hold out "
                    f"validation_episodes={validation_episodes}; lower train.validation_episodes or collect more episodes."
                )
            held_out = usable[len(usable) - validation_episodes :]
            training = usable[: len(usable) - validation_episodes]
            pairs = [(index, t) for index in training for t in range(dataset.episodes[index].length)]
            if not pairs:
                raise ValueError(
                    f"Dataset {spec.path} has no usable steps (successful_only={spec.successful_only}); "
                    "collect more episodes or set successful_only: false."
                )
            self._steps.append(np.asarray(pairs, dtype=np.int64))
            self.validation_steps += [
                (dataset_index, index, t) for index in held_out for t in range(dataset.episodes[index].length)
            ]
            weights.append(spec.weight)
        self.weights = np.asarray(weights, dtype=np.float64) / sum(weights)

    @property
    def num_steps(self) -> int:
        return sum(len(steps) for steps in self._steps)

    def _episode(self, dataset_index: int, episode_index: int) -> _Episode:
        key = (dataset_index, episode_index)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        dataset = self.datasets[dataset_index]
        record = dataset.load_episode(episode_index, decode_frames=False)
        action_ids = self.detokenizer.encode_many(record.embodiment, record.actions)
        history_ids = action_ids
        if record.executed_actions:
            history_ids = self.detokenizer.encode_many(record.embodiment, record.executed_actions)
        episode = _Episode(record.frames, action_ids, history_ids)
        self._cache[key] = episode
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return episode

    def sample_at(self, dataset_index: int, episode_index: int, t: int) -> tuple[PolicyInput, list[int], str]:
        """Build the prompt of step `t` of an episode and return it with the target action ids."""
        info = self.datasets[dataset_index].episodes[episode_index]
        adapter = get_adapter(info.embodiment)
        episode = self._episode(dataset_index, episode_index)
        history = self.policy.config.history_length
        frames_history = [
            [decode_frame(data, info) for data in step_frames] for step_frames in episode.png_frames[: t + 1][-history:]
        ]
        actions_history = episode.history_ids[:t][-(len(frames_history) - 1) :] if len(frames_history) > 1 else []
        policy_input = self.policy.build_input(adapter.prompt, info.instruction, frames_history, actions_history)
        return policy_input, episode.action_ids[t], info.embodiment

    def _append(self, batch: SFTBatch, dataset_index: int, episode_index: int, t: int) -> None:
        policy_input, action_ids, embodiment = self.sample_at(dataset_index, episode_index, t)
        batch.inputs.append(policy_input)
        batch.action_ids.append(action_ids)
        batch.constraints.append(self.detokenizer.constraint(embodiment))
        batch.embodiments.append(embodiment)

    def validation_batches(self, max_samples: int, batch_size: int, seed: int) -> Iterator[SFTBatch]:
        """Yield batches of at most `max_samples` held-out steps, the same steps on every call."""
        if not self.validation_steps:
            return
        rng = np.random.default_rng(seed)
        count = min(max_samples, len(self.validation_steps))
        chosen = sorted(rng.choice(len(self.validation_steps), size=count, replace=False).tolist())
        for start in range(0, count, batch_size):
            batch = SFTBatch([], [], [], [])
            for position in chosen[start : start + batch_size]:
                self._append(batch, *self.validation_steps[position])
            yield batch

    def batch(self, seed: int, step: int, batch_size: int, rank: int = 0) -> SFTBatch:
        """Draw the batch of optimizer step `step` (micro-batches pass distinct `step` keys)."""
        rng = np.random.default_rng([seed, step, rank])
        dataset_choices = rng.choice(len(self.datasets), size=batch_size, p=self.weights)
        batch = SFTBatch([], [], [], [])
        for dataset_index in dataset_choices:
            steps = self._steps[dataset_index]
            episode_index, t = steps[rng.integers(len(steps))]
            self._append(batch, int(dataset_index), int(episode_index), int(t))
        return batch


def load_datasets(specs: Sequence[DatasetSpec]) -> list[TrajectoryDataset]:
    return [TrajectoryDataset(spec.path, embodiments=spec.envs) for spec in specs]

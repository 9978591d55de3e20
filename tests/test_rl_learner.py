"""Learner pieces that run without Ray: per-embodiment averaging and expert batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from test_rl_stand_ins import EMBODIMENTS, make_detokenizer, make_env_config

import gea_envs
from gea.rl.env import OBS_EMBODIMENT, OBS_FRAMES, observation_space
from gea.rl.expert import RecordedEpisodeExpertSource
from gea.rl.learner import mean_per_group
from gea_envs.base import ExpertPolicy
from gea_envs.rollout import run_expert_episode


class ZeroExpert(ExpertPolicy):
    def __init__(self, dim: int) -> None:
        self.dim = dim

    def act(self, env, raw_obs, info):
        return np.zeros(self.dim, dtype=np.float32)


def test_mean_per_group_weights_groups_equally():
    values = torch.tensor([1.0, 1.0, 1.0, 5.0])
    groups = torch.tensor([0, 0, 0, 1])
    # Group 0 averages 1 and group 1 averages 5, whatever their sizes.
    assert mean_per_group(values, groups).item() == pytest.approx(3.0)


def test_expert_source_matches_env_space():
    episodes = []
    for seed, name in enumerate(EMBODIMENTS):
        adapter = gea_envs.get_adapter(name)
        episode = run_expert_episode(adapter, seed, image_size=16, expert=ZeroExpert(adapter.action_space.dim))
        episodes.append(episode)
    config = make_env_config()
    detokenizer = make_detokenizer()
    source = RecordedEpisodeExpertSource(episodes, config, detokenizer)
    batch = source.sample(6, np.random.default_rng(0))

    space = observation_space(config, detokenizer)
    for row in range(6):
        observation = {key: value[row] for key, value in batch[Columns.OBS].items()}
        assert space.contains(observation)
    assert batch[Columns.ACTIONS].shape == (6, detokenizer.max_action_tokens)
    for row in range(6):
        name = EMBODIMENTS[int(batch[Columns.OBS][OBS_EMBODIMENT][row])]
        ids = [int(token) for token in batch[Columns.ACTIONS][row] if token != detokenizer.pad_token_id]
        assert detokenizer.decode(name, ids).valid
    assert batch[Columns.OBS][OBS_FRAMES].dtype == np.uint8


def test_expert_source_rejects_foreign_embodiment():
    adapter = gea_envs.get_adapter(EMBODIMENTS[1])
    episode = run_expert_episode(adapter, 0, image_size=16, expert=ZeroExpert(adapter.action_space.dim))
    with pytest.raises(ValueError, match="not an embodiment of this run"):
        RecordedEpisodeExpertSource(
            [episode], make_env_config(embodiments=EMBODIMENTS[:1]), make_detokenizer()
        )

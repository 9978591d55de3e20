"""Collection with action noise: the expert's labels, the executed actions, and what SFT shows of each."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from gea.data import TrajectoryDataset, write_episode
from gea.data.collect import collect
from gea_envs import ContinuousActionSpace, DiscreteActionSpace, get_adapter
from gea_envs.rollout import run_expert_episode
from gea_envs.spaces import ActionKind

MOVE_RIGHT = 1


def test_continuous_noise_scales_with_half_range():
    space = ContinuousActionSpace(low=(-1.0, 0.0), high=(1.0, 4.0))
    rng = np.random.default_rng(0)

    noisy = np.stack([space.perturb(np.array([0.0, 2.0], np.float32), 0.1, rng) for _ in range(4000)])

    np.testing.assert_allclose(noisy.std(axis=0), [0.1, 0.2], rtol=0.1)
    np.testing.assert_allclose(noisy.mean(axis=0), [0.0, 2.0], atol=0.02)
    assert space.perturb(np.array([1.0, 4.0], np.float32), 0.5, rng).max() <= 4.0


def test_discrete_noise_replaces_actions_at_the_given_rate():
    space = DiscreteActionSpace(("a", "b", "c", "d"))
    rng = np.random.default_rng(0)

    changed = np.mean([space.perturb(0, 0.4, rng) != 0 for _ in range(4000)])

    assert changed == pytest.approx(0.4 * 3 / 4, abs=0.03)  # a redraw keeps the action 1 time in 4
    assert space.perturb(2, 0.0, rng) == 2


def test_noisy_episode_keeps_expert_labels(line_world_adapter):
    episodes = [run_expert_episode(line_world_adapter, seed, image_size=8, action_noise=0.5) for seed in range(5)]

    for episode in episodes:
        assert episode.actions == [MOVE_RIGHT] * episode.length
        assert len(episode.executed_actions) == episode.length
        assert episode.history_actions == episode.executed_actions
    assert any(0 in episode.executed_actions for episode in episodes)  # some moved left
    again = run_expert_episode(line_world_adapter, 3, image_size=8, action_noise=0.5)
    assert again.executed_actions == episodes[3].executed_actions


def test_clean_episode_has_no_executed_actions(line_world_adapter):
    episode = run_expert_episode(line_world_adapter, seed=3, image_size=8)

    assert episode.executed_actions == []
    assert episode.history_actions == episode.actions


def test_noise_outside_unit_interval_raises(line_world_adapter):
    with pytest.raises(ValueError, match="action_noise must be in"):
        run_expert_episode(line_world_adapter, seed=0, image_size=8, action_noise=1.5)


def test_executed_actions_and_noise_round_trip(tmp_path, line_world_adapter):
    noisy = run_expert_episode(line_world_adapter, seed=1, image_size=8, action_noise=0.5)
    clean = run_expert_episode(line_world_adapter, seed=2, image_size=8)
    noisy_path = write_episode(tmp_path, noisy, ActionKind.DISCRETE, image_size=8)
    clean_path = write_episode(tmp_path, clean, ActionKind.DISCRETE, image_size=8)

    dataset = TrajectoryDataset(tmp_path)
    loaded = [dataset.load_episode(index) for index in range(2)]

    assert [info.action_noise for info in dataset.episodes] == [0.5, 0.0]
    assert loaded[0].executed_actions == noisy.executed_actions
    assert loaded[0].actions == noisy.actions
    assert loaded[1].executed_actions == []
    assert "executed" in pq.read_schema(noisy_path).names
    assert "executed" not in pq.read_schema(clean_path).names


def test_collect_rejects_mixed_noise_levels(tmp_path, registered_line_world):
    collect([registered_line_world.name], 2, tmp_path, image_size=8, show_progress=False, action_noise=0.2)

    with pytest.raises(ValueError, match=r"action_noise=0.2, not 0.0\. .*--action-noise 0.2"):
        collect([registered_line_world.name], 3, tmp_path, image_size=8, show_progress=False)


def test_babyai_bot_recovers_from_random_moves():
    adapter = get_adapter("babyai/GoToLocal")

    episodes = [run_expert_episode(adapter, seed, image_size=14, record=False, action_noise=0.3) for seed in range(20)]

    perturbed_steps = sum(
        executed != label for episode in episodes for label, executed in zip(episode.actions, episode.executed_actions)
    )
    assert perturbed_steps >= 10
    assert all(executed in (0, 1, 2) for episode in episodes for executed in episode.executed_actions)
    assert sum(episode.success for episode in episodes) >= 19


def test_pipeline_collect_rejects_bad_noise():
    from gea.pipeline.config import CollectSection

    with pytest.raises(ValueError, match=r"collect.action_noise must be in \[0, 1\], got -0.1"):
        CollectSection({"babyai/GoToLocal": 1}, action_noise=-0.1)

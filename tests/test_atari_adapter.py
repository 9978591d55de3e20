"""Atari adapters (``atari/<Game>``) on the real ALE emulator, with the RAM-reading paddle experts."""

from __future__ import annotations

import numpy as np
import pytest

from gea_envs import ADAPTERS, DiscreteActionSpace, Domain, EpisodeOutcome, get_adapter
from gea_envs.adapters.atari_adapter import ACTION_MEANINGS, GAMES, AtariAdapter, PaddleGeometry
from gea_envs.rollout import run_expert_episode

IMAGE_SIZE = 64
NAMES = [f"atari/{game.game}" for game in GAMES]


@pytest.fixture(scope="module", params=NAMES)
def adapter(request) -> AtariAdapter:
    return get_adapter(request.param)


def first_frame(adapter: AtariAdapter, seed: int, image_size: int = IMAGE_SIZE) -> np.ndarray:
    env = adapter.make_env(seed=seed, image_size=image_size)
    try:
        raw_obs, info = env.reset(seed=seed)
        return adapter.observe(env, raw_obs, info).frames[0]
    finally:
        env.close()


def test_pong_and_breakout_registered():
    assert "atari/Pong" in ADAPTERS
    assert "atari/Breakout" in ADAPTERS


def test_action_names_match_ale_minimal_set(adapter):
    env = adapter.make_env(seed=0, image_size=IMAGE_SIZE)
    try:
        meanings = env.unwrapped.get_action_meanings()
        assert env.action_space.n == adapter.action_space.n
    finally:
        env.close()
    assert tuple(meanings) == adapter.game.action_meanings
    assert isinstance(adapter.action_space, DiscreteActionSpace)
    assert adapter.action_space.names == tuple(ACTION_MEANINGS[meaning] for meaning in meanings)


def test_pong_action_names_in_language():
    names = get_adapter("atari/Pong").action_space.names
    assert names == ("no operation", "fire", "move right", "move left", "move right and fire", "move left and fire")


@pytest.mark.parametrize("bad_action", [-1, 6, 1.0, False, None])
def test_invalid_discrete_action_raises(bad_action):
    with pytest.raises(ValueError):
        get_adapter("atari/Pong").to_env_action(bad_action)


def test_metadata_and_success_rule(adapter):
    assert adapter.domain == Domain.GAMES
    assert f"{adapter.game.return_threshold:g}" in adapter.success_rule
    assert "probability 0.25" in adapter.prompt.simulator
    assert "210x160" in adapter.prompt.camera


@pytest.mark.parametrize("image_size", [64, 84])
def test_frame_shape(adapter, image_size):
    frame = first_frame(adapter, seed=0, image_size=image_size)
    assert frame.shape == (image_size, image_size, 3)
    assert frame.dtype == np.uint8
    assert frame.std() > 0


def test_same_seed_same_first_frame(adapter):
    np.testing.assert_array_equal(first_frame(adapter, seed=5), first_frame(adapter, seed=5))


def test_success_uses_return_threshold(adapter):
    threshold = adapter.game.return_threshold
    assert adapter.is_success(EpisodeOutcome(episode_return=threshold, length=10, goal_reached=False))
    assert not adapter.is_success(EpisodeOutcome(episode_return=threshold - 1, length=10, goal_reached=True))


def test_pong_ends_at_points_to_win():
    adapter = get_adapter("atari/Pong")
    env = adapter.make_env(seed=0, image_size=IMAGE_SIZE)
    try:
        env.reset(seed=0)
        terminated = truncated = False
        steps = 0
        while not (terminated or truncated):
            # Standing still loses every point, so the opponent reaches points_to_win first.
            _, _, terminated, truncated, _ = env.step(0)
            steps += 1
        ram = env.unwrapped.ale.getRAM()
        agent_score, opponent_score = (int(ram[address]) for address in adapter.game.score_addresses)
    finally:
        env.close()
    assert terminated
    assert opponent_score == adapter.game.points_to_win
    assert agent_score < adapter.game.points_to_win
    assert steps < adapter.max_episode_steps


def test_breakout_truncates_at_step_limit():
    adapter = get_adapter("atari/Breakout")
    env = adapter.make_env(seed=0, image_size=IMAGE_SIZE)
    try:
        env.reset(seed=0)
        steps = 0
        terminated = truncated = False
        while not (terminated or truncated):
            # Without fire no ball is served, so no life is lost and only the step limit ends the game.
            _, _, terminated, truncated, _ = env.step(0)
            steps += 1
    finally:
        env.close()
    assert truncated
    assert not terminated
    assert steps == adapter.max_episode_steps


def test_paddle_expert_reads_ball_from_ram():
    adapter = get_adapter("atari/Pong")
    geometry = adapter.game.geometry
    env = adapter.make_env(seed=0, image_size=IMAGE_SIZE)
    try:
        raw_obs, info = env.reset(seed=0)
        expert = adapter.make_expert(env)
        expert.reset(env, raw_obs, info)
        ball_seen = False
        for _ in range(60):
            action = expert.act(env, raw_obs, info)
            raw_obs, _, _, _, info = env.step(adapter.to_env_action(action))
            ram = env.unwrapped.ale.getRAM()
            ball_seen = ball_seen or int(ram[geometry.ball_approach]) != 0
    finally:
        env.close()
    assert ball_seen


def test_invalid_geometry_raises():
    with pytest.raises(ValueError, match="RAM address"):
        PaddleGeometry(200, 1, 2, 10, 0, 100, 0, 1, 2)
    with pytest.raises(ValueError, match="wall_low"):
        PaddleGeometry(0, 1, 2, 10, 100, 50, 0, 1, 2)


@pytest.mark.parametrize("name", NAMES)
def test_expert_beats_threshold(name):
    adapter = get_adapter(name)
    episode = run_expert_episode(adapter, seed=1, image_size=IMAGE_SIZE, record=False)
    assert episode.success, f"return {episode.episode_return} below {adapter.game.return_threshold}"


def play_actions(adapter: AtariAdapter, actions: list[int]) -> np.ndarray:
    env = adapter.make_env(seed=3, image_size=IMAGE_SIZE)
    try:
        env.reset(seed=3)
        for action in actions:
            env.step(action)
        return env.unwrapped.ale.getRAM().copy()
    finally:
        env.close()


def test_expert_search_leaves_game_unchanged():
    adapter = get_adapter("atari/Pong")
    env = adapter.make_env(seed=3, image_size=IMAGE_SIZE)
    try:
        raw_obs, info = env.reset(seed=3)
        expert = adapter.make_expert(env)
        expert.reset(env, raw_obs, info)
        actions = []
        for _ in range(150):
            actions.append(expert.act(env, raw_obs, info))
            raw_obs, _, _, _, info = env.step(actions[-1])
        ram_with_search = env.unwrapped.ale.getRAM().copy()
    finally:
        env.close()
    # Replaying the same actions without the expert's trial runs must reach the same state.
    np.testing.assert_array_equal(play_actions(adapter, actions), ram_with_search)


def test_random_play_fails(adapter):
    env = adapter.make_env(seed=0, image_size=IMAGE_SIZE)
    rng = np.random.default_rng(0)
    try:
        env.reset(seed=0)
        episode_return = 0.0
        for _ in range(adapter.max_episode_steps):
            _, reward, terminated, truncated, _ = env.step(int(rng.integers(adapter.action_space.n)))
            episode_return += float(reward)
            if terminated or truncated:
                break
    finally:
        env.close()
    assert episode_return < adapter.game.return_threshold


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_expert_mean_return_on_twenty_seeds(name):
    adapter = get_adapter(name)
    env = adapter.make_env(seed=0, image_size=IMAGE_SIZE)
    try:
        episodes = [run_expert_episode(adapter, seed, IMAGE_SIZE, record=False, env=env) for seed in range(20)]
    finally:
        env.close()
    mean_return = float(np.mean([episode.episode_return for episode in episodes]))
    successes = sum(episode.success for episode in episodes)
    assert mean_return >= 0.8 * adapter.game.expert_mean_return
    assert successes >= round(0.8 * adapter.expert_success_rate * 20)

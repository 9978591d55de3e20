"""The RLlib environment around real MuJoCo adapters."""

from __future__ import annotations

import numpy as np
import pytest
from test_rl_stand_ins import EMBODIMENTS, PAD_TOKEN_ID, make_detokenizer, make_env_config

from gea.rl.env import (
    INFO_DECODE_REASON,
    INFO_DECODE_VALID,
    INFO_DECODE_VALID_RATE,
    INFO_SUCCESS,
    OBS_ACTION_HISTORY,
    OBS_EMBODIMENT,
    OBS_FRAMES,
    OBS_HISTORY_LENGTH,
    OBS_INSTRUCTION,
    OBS_PROPRIO,
    OBS_PROPRIO_LENGTH,
    GeaEmbodimentEnv,
    GeaEnvConfig,
    decode_instruction,
    encode_instruction,
    make_gea_env,
)
from gea.rl.detokenizer import strip_padding
from ray.rllib.env.env_context import EnvContext

PENDULUM, REACHER = EMBODIMENTS


@pytest.fixture
def reacher_env():
    env = GeaEmbodimentEnv(make_env_config(), REACHER, seed=3)
    yield env
    env.close()


def valid_tokens(embodiment: str, action: np.ndarray) -> np.ndarray:
    return make_detokenizer().encode(embodiment, action)


def test_reset_observation_in_space(reacher_env):
    observation, info = reacher_env.reset(seed=3)
    assert reacher_env.observation_space.contains(observation)
    assert observation[OBS_EMBODIMENT] == EMBODIMENTS.index(REACHER)
    assert observation[OBS_PROPRIO_LENGTH] == 10
    assert decode_instruction(observation[OBS_INSTRUCTION]) == "move the fingertip to the red target"
    # The first observation repeats the reset frame for every stacked slot.
    np.testing.assert_array_equal(observation[OBS_FRAMES][0], observation[OBS_FRAMES][1])


def test_step_decodes_valid_tokens(reacher_env):
    first, _ = reacher_env.reset(seed=3)
    observation, reward, terminated, truncated, info = reacher_env.step(
        valid_tokens(REACHER, np.array([0.5, -0.5], np.float32))
    )
    assert info[INFO_DECODE_VALID] is True
    assert info[INFO_DECODE_REASON] == ""
    assert reacher_env.observation_space.contains(observation)
    # The newest frame moves to the last slot and the previous newest becomes the oldest.
    np.testing.assert_array_equal(observation[OBS_FRAMES][0], first[OBS_FRAMES][1])
    assert np.isfinite(reward)


def test_action_history_follows_steps(reacher_env):
    first, _ = reacher_env.reset(seed=3)
    assert int(first[OBS_HISTORY_LENGTH]) == 1
    assert (first[OBS_ACTION_HISTORY] == PAD_TOKEN_ID).all()
    actions = [valid_tokens(REACHER, np.array([value, -value], np.float32)) for value in (0.5, -0.25)]
    observation, *_ = reacher_env.step(actions[0])
    assert int(observation[OBS_HISTORY_LENGTH]) == 2
    np.testing.assert_array_equal(observation[OBS_ACTION_HISTORY][-1], actions[0])
    observation, *_ = reacher_env.step(actions[1])
    # frame_stack is 2, so the history keeps only the action after the older stacked frame.
    assert int(observation[OBS_HISTORY_LENGTH]) == 2
    np.testing.assert_array_equal(observation[OBS_ACTION_HISTORY][-1], actions[1])
    assert reacher_env.observation_space.contains(observation)


def test_step_limit_caps_adapter_limit():
    env = GeaEmbodimentEnv(make_env_config(max_episode_steps=3), REACHER, seed=3)
    env.reset(seed=3)
    tokens = valid_tokens(REACHER, np.zeros(2, np.float32))
    truncated = [env.step(tokens)[3] for _ in range(3)]
    env.close()
    assert truncated == [False, False, True]


def test_step_reports_invalid_tokens(reacher_env):
    reacher_env.reset(seed=3)
    tokens = np.full(reacher_env.action_space.shape, PAD_TOKEN_ID)
    tokens[0] = 5  # one code where Reacher needs two
    _, _, _, _, info = reacher_env.step(tokens)
    assert info[INFO_DECODE_VALID] is False
    assert "needs 2" in info[INFO_DECODE_REASON]


def test_invalid_action_penalty_applied():
    env = GeaEmbodimentEnv(make_env_config(invalid_action_penalty=-1.0), REACHER, seed=3)
    env.reset(seed=3)
    tokens = np.full(env.action_space.shape, PAD_TOKEN_ID)
    _, penalized, _, _, _ = env.step(tokens)
    env.close()
    # Reacher's reward is a negative distance and control cost, so above -1 without the penalty.
    assert penalized < -1.0


def test_episode_end_reports_success_and_rate(reacher_env):
    reacher_env.reset(seed=3)
    tokens = valid_tokens(REACHER, np.zeros(2, np.float32))
    info = {}
    for step in range(reacher_env.adapter.max_episode_steps):
        _, _, terminated, truncated, info = reacher_env.step(tokens)
        if terminated or truncated:
            break
    assert truncated
    assert INFO_SUCCESS in info
    assert info[INFO_DECODE_VALID_RATE] == 1.0


def test_runner_placement_by_worker_index():
    config = make_env_config()
    placed = [make_gea_env(EnvContext({"gea": config}, worker_index=index)) for index in (1, 2, 3)]
    try:
        assert [env.embodiment for env in placed] == [PENDULUM, REACHER, PENDULUM]
        assert placed[0].observation_space == placed[1].observation_space
        assert placed[0].action_space == placed[1].action_space
    finally:
        for env in placed:
            env.close()


def test_pendulum_proprio_padded():
    env = GeaEmbodimentEnv(make_env_config(), PENDULUM, seed=0)
    observation, _ = env.reset(seed=0)
    env.close()
    assert observation[OBS_PROPRIO_LENGTH] == 4
    assert not observation[OBS_PROPRIO][4:].any()


def test_make_env_rejects_missing_config():
    with pytest.raises(TypeError, match="GeaEnvConfig"):
        make_gea_env(EnvContext({}, worker_index=1))


def test_config_rejects_empty_envs():
    with pytest.raises(ValueError, match="envs is empty"):
        GeaEnvConfig(envs=(), detokenizer_factory=make_detokenizer)


def test_instruction_round_trip_and_limit():
    encoded = encode_instruction("pick up the red ball", 32)
    assert encoded.shape == (32,)
    assert decode_instruction(encoded) == "pick up the red ball"
    with pytest.raises(ValueError, match="max_instruction_bytes"):
        encode_instruction("x" * 33, 32)


def test_strip_padding_keeps_inner_pads():
    assert strip_padding([3, 0, 4, 0, 0], 0) == [3, 0, 4]
    assert strip_padding([0, 0], 0) == []


def test_success_reward_pays_once_at_success():
    reach = "metaworld/reach-v3"
    env = GeaEmbodimentEnv(make_env_config(embodiments=(reach,), frame_stack=1, reward="success"), reach, seed=0)
    detokenizer = make_detokenizer((reach,))
    env.reset(seed=0)
    simulator = env._env
    expert = env.adapter.make_expert(simulator)

    rewards, info = [], {}
    for _ in range(150):
        action = expert.act(simulator, simulator.unwrapped._get_obs(), {})
        _, reward, terminated, truncated, info = env.step(detokenizer.encode(reach, action))
        rewards.append(reward)
        if terminated or truncated:
            break
    env.close()

    assert info[INFO_SUCCESS] is True
    assert rewards[-1] == 1.0
    assert sum(rewards) == 1.0


def test_unknown_reward_mode_lists_known():
    with pytest.raises(ValueError, match=r"reward must be one of \('env', 'success'\), got 'dense'"):
        make_env_config(reward="dense")

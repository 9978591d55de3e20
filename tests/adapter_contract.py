"""Checks every embodiment adapter must pass; shared by the registry-wide test and the guide's example."""

from __future__ import annotations

import math

import numpy as np

from gea_envs import ActionKind, EmbodimentAdapter, Observation
from gea_envs.rollout import run_expert_episode

IMAGE_SIZE = 64


def check_observation(adapter: EmbodimentAdapter, observation: Observation) -> None:
    assert isinstance(observation, Observation)
    assert observation.frames, f"{adapter.name}: observe() returned no frames"
    for frame in observation.frames:
        assert frame.shape == (IMAGE_SIZE, IMAGE_SIZE, 3), f"{adapter.name}: frame shape {frame.shape}"
        assert frame.dtype == np.uint8, f"{adapter.name}: frame dtype {frame.dtype}"
    assert isinstance(observation.instruction, str) and observation.instruction.strip()
    if observation.proprio is not None:
        assert observation.proprio.ndim == 1
        assert np.all(np.isfinite(observation.proprio))


def first_frame(adapter: EmbodimentAdapter, seed: int) -> np.ndarray:
    env = adapter.make_env(seed=seed, image_size=IMAGE_SIZE)
    try:
        raw_obs, info = env.reset(seed=seed)
        return adapter.observe(env, raw_obs, info).frames[0].copy()
    finally:
        env.close()


def check_reset_and_step(adapter: EmbodimentAdapter, seed: int = 0, steps: int = 3) -> None:
    env = adapter.make_env(seed=seed, image_size=IMAGE_SIZE)
    try:
        raw_obs, info = env.reset(seed=seed)
        check_observation(adapter, adapter.observe(env, raw_obs, info))
        expert = adapter.make_expert(env)
        expert.reset(env, raw_obs, info)
        for _ in range(steps):
            action = expert.act(env, raw_obs, info)
            env_action = adapter.to_env_action(action)
            restored = adapter.from_env_action(env_action)
            if adapter.action_space.kind is ActionKind.CONTINUOUS:
                np.testing.assert_allclose(restored, action, atol=1e-6)
            else:
                assert restored == action, f"{adapter.name}: {action!r} came back as {restored!r}"
            raw_obs, reward, terminated, truncated, info = env.step(env_action)
            assert math.isfinite(float(reward))
            if terminated or truncated:
                break
            check_observation(adapter, adapter.observe(env, raw_obs, info))
    finally:
        env.close()


def check_prompt(adapter: EmbodimentAdapter) -> None:
    assert "/" in adapter.name
    assert adapter.max_episode_steps > 0
    assert adapter.success_rule.strip()
    assert 0.0 < adapter.expert_success_rate <= 1.0


def expert_successes(adapter: EmbodimentAdapter, seeds: list[int]) -> int:
    return sum(run_expert_episode(adapter, seed, IMAGE_SIZE, record=False).success for seed in seeds)


def required_successes(adapter: EmbodimentAdapter, episodes: int) -> int:
    """Successes expected from the expert on `episodes` seeds, with one episode of slack for chance."""
    return max(1, math.ceil(adapter.expert_success_rate * episodes) - 1)


def frame_after_reuse(adapter: EmbodimentAdapter, seed: int, steps: int = 3) -> np.ndarray:
    """Return the first frame of `seed` in an environment that already played part of another episode."""
    env = adapter.make_env(seed=seed + 1, image_size=IMAGE_SIZE)
    try:
        raw_obs, info = env.reset(seed=seed + 1)
        expert = adapter.make_expert(env)
        expert.reset(env, raw_obs, info)
        for _ in range(steps):
            raw_obs, _, terminated, truncated, info = env.step(adapter.to_env_action(expert.act(env, raw_obs, info)))
            if terminated or truncated:
                break
        raw_obs, info = env.reset(seed=seed)
        return adapter.observe(env, raw_obs, info).frames[0].copy()
    finally:
        env.close()

"""Short PPO runs on real MuJoCo embodiments with the stand-in policy behind GeaTorchRLModule."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ray import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
import ray
from test_rl_stand_ins import EMBODIMENTS, make_env_config, make_policy

import gea_envs
from gea.rl.algorithm import PPOSettings, build_ppo_config
from gea.rl.callbacks import decode_valid_rate_key, success_rate_key
from gea.rl.expert import RecordedEpisodeExpertSource
from gea.rl.learner import SFT_LOSS_METRIC
from gea.rl.ray_init import init_ray
from gea_envs.base import ExpertPolicy
from gea_envs.rollout import run_expert_episode

cloudpickle.register_pickle_by_value(sys.modules[__name__])

CRASHING = "test/crashing-pendulum"
# A restarted env runner imports torch, transformers and the simulators again. That took over
# 120 s on 2 cores shared with two SFT runs, and the loop below stops as soon as it has sampled.
RESTART_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def ray_session():
    init_ray(num_cpus=2)
    yield
    ray.shutdown()


class RandomExpert(ExpertPolicy):
    """Uniform random actions: enough to exercise the SFT path, not to teach anything."""

    def __init__(self, space) -> None:
        self.rng = np.random.default_rng(0)
        self.space = space

    def act(self, env, raw_obs, info):
        return self.rng.uniform(self.space.low, self.space.high).astype(np.float32)


def make_expert_source():
    from test_rl_stand_ins import make_detokenizer

    episodes = []
    for seed, name in enumerate(EMBODIMENTS):
        adapter = gea_envs.get_adapter(name)
        record = run_expert_episode(adapter, seed, image_size=16, expert=RandomExpert(adapter.action_space))
        episodes.append(record)
    detokenizer = make_detokenizer()
    return RecordedEpisodeExpertSource(episodes, make_env_config(), detokenizer)


def small_settings(**overrides) -> PPOSettings:
    values = dict(
        num_env_runners=2,
        rollout_fragment_length=32,
        train_batch_size_per_learner=64,
        minibatch_size=32,
        num_epochs=1,
        lr=1e-3,
        sft_batch_size=8,
    )
    values.update(overrides)
    return PPOSettings(**values)


@pytest.mark.slow
def test_ppo_trains_two_embodiments(ray_session):
    config = build_ppo_config(small_settings(), make_env_config(), make_policy, make_expert_source)
    algorithm = config.build_algo()
    try:
        results = [algorithm.train() for _ in range(3)]
    finally:
        algorithm.stop()
    learner = results[-1]["learners"]["default_policy"]
    assert learner[SFT_LOSS_METRIC] > 0
    assert np.isfinite(learner["total_loss"])
    # RLlib reports NaN for an embodiment none of whose episodes ended in an iteration.
    for name in EMBODIMENTS:
        success = [r["env_runners"].get(success_rate_key(name), np.nan) for r in results]
        valid = [r["env_runners"].get(decode_valid_rate_key(name), np.nan) for r in results]
        reported = [value for value in success if np.isfinite(value)]
        assert reported, f"no episode of {name} ended in {len(results)} iterations"
        assert all(0.0 <= value <= 1.0 for value in reported)
        # The stand-in samples under the constraint, so every action decodes.
        assert all(value == 1.0 for value in valid if np.isfinite(value))


class CrashingPendulumEnv(gym.Wrapper):
    """Raises on the fifth step of the first runner that reaches it; later runners run normally."""

    def __init__(self, env: gym.Env, marker: Path) -> None:
        super().__init__(env)
        self.marker = marker
        self.steps = 0

    def step(self, action):
        self.steps += 1
        if self.steps == 5 and not self.marker.exists():
            self.marker.touch()
            raise RuntimeError("Simulated simulator crash.")
        return self.env.step(action)


def make_crashing_adapter(marker: Path):
    adapter = gea_envs.get_adapter(EMBODIMENTS[0])
    make_env = adapter.make_env
    adapter.name = CRASHING
    adapter.make_env = lambda seed, image_size: CrashingPendulumEnv(make_env(seed, image_size), marker)
    return adapter


@pytest.mark.slow
def test_crashed_env_runner_restarts(ray_session, tmp_path):
    marker = tmp_path / "crashed"
    factory = lambda: make_crashing_adapter(marker)  # noqa: E731
    # The driver builds the de-tokenizer and the learner's policy, which look the adapter up.
    gea_envs.ADAPTERS.register(CRASHING, factory, overwrite=True)
    env_config = make_env_config(embodiments=(CRASHING,), adapter_factories={CRASHING: factory})
    settings = small_settings(num_env_runners=1, sft_coeff=0.0, env_runner_restart_delay_s=1.0)
    config = build_ppo_config(settings, env_config, lambda: make_policy((CRASHING,)))
    algorithm = config.build_algo()
    try:
        # Iterations return no samples while the crashed runner restarts, so train until it
        # has sampled again, for at most RESTART_TIMEOUT_S.
        deadline = time.monotonic() + RESTART_TIMEOUT_S
        steps_after_crash = 0.0
        while time.monotonic() < deadline:
            result = algorithm.train()
            if marker.exists():
                steps_after_crash += result.get("env_runners", {}).get("num_env_steps_sampled", 0.0)
            if algorithm.env_runner_group.num_remote_worker_restarts() >= 1 and steps_after_crash > 0:
                break
        restarts = algorithm.env_runner_group.num_remote_worker_restarts()
    finally:
        algorithm.stop()
    assert marker.exists(), "the environment never reached its crashing step"
    assert restarts == 1
    assert steps_after_crash > 0

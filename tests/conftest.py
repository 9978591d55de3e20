"""Shared fixtures. Test-only fakes live here; they never stand in for a simulator in a capability test."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from gea_envs import ADAPTERS, DiscreteActionSpace, Domain, EmbodimentAdapter, EmbodimentPrompt, ExpertPolicy, Observation


class LineWorld(gym.Env):
    """A 1-D corridor: start at 0, reach `length` by moving right. Frames encode the position."""

    def __init__(self, length: int = 4, image_size: int = 8):
        self.length = length
        self.image_size = image_size
        self.action_space = gym.spaces.Discrete(2)
        self.observation_space = gym.spaces.Discrete(length + 1)
        self.position = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = int(self.np_random.integers(0, 2))
        return self.position, {}

    def step(self, action):
        self.position = max(0, self.position + (1 if action == 1 else -1))
        terminated = self.position >= self.length
        return self.position, float(terminated), terminated, False, {}

    def render(self):
        frame = np.zeros((self.image_size, self.image_size, 3), dtype=np.uint8)
        frame[..., 0] = 40 * self.position
        return frame


class MoveRight(ExpertPolicy):
    def act(self, env, raw_obs, info):
        return 1


class LineWorldAdapter(EmbodimentAdapter):
    """Test-only adapter; the expert always moves right and always succeeds."""

    name = "test/line-world"
    domain = Domain.NAVIGATION
    prompt = EmbodimentPrompt(
        agent="a point on a line", action_space="move left or move right", simulator="a test corridor", camera="none"
    )
    action_space = DiscreteActionSpace(("move left", "move right"))
    max_episode_steps = 20
    success_rule = "reach the end of the corridor"
    expert_success_rate = 1.0

    def make_env(self, seed: int, image_size: int) -> gym.Env:
        return LineWorld(image_size=image_size)

    def observe(self, env, raw_obs, info) -> Observation:
        return Observation(frames=[env.render()], instruction="go to the right end", proprio=np.array([raw_obs], np.float32))

    def make_expert(self, env) -> ExpertPolicy:
        return MoveRight()


@pytest.fixture
def line_world_adapter() -> LineWorldAdapter:
    return LineWorldAdapter()


@pytest.fixture
def registered_line_world(line_world_adapter):
    """The line world, registered under its name for code that looks adapters up by name."""
    ADAPTERS.register(line_world_adapter.name, type(line_world_adapter), overwrite=True)
    yield line_world_adapter
    ADAPTERS._factories.pop(line_world_adapter.name)

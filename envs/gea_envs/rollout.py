"""Run one episode of an adapter's environment with an expert and record it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from gea_envs.base import EmbodimentAdapter, EpisodeOutcome, ExpertPolicy
from gea_envs.spaces import Action


@dataclass
class EpisodeRecord:
    """One recorded episode. Step ``t`` contains the observation seen before action ``t``."""

    embodiment: str
    seed: int
    instruction: str
    frames: list[list[np.ndarray]] = field(default_factory=list)
    proprio: list[Optional[np.ndarray]] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    success: bool = False
    truncated: bool = False

    @property
    def length(self) -> int:
        return len(self.actions)

    @property
    def episode_return(self) -> float:
        return float(sum(self.rewards))


def run_expert_episode(
    adapter: EmbodimentAdapter,
    seed: int,
    image_size: int,
    *,
    expert: Optional[ExpertPolicy] = None,
    record: bool = True,
    env=None,
) -> EpisodeRecord:
    """Play one episode of `adapter` with its expert (or `expert`) and return the record.

    Pass `env` to reuse an environment across episodes; it is then reset with `seed`
    and left open. Without it, an environment is built and closed here.
    """
    own_env = env is None
    if own_env:
        env = adapter.make_env(seed=seed, image_size=image_size)
    try:
        raw_obs, info = env.reset(seed=seed)
        policy = expert if expert is not None else adapter.make_expert(env)
        policy.reset(env, raw_obs, info)
        observation = adapter.observe(env, raw_obs, info)
        episode = EpisodeRecord(embodiment=adapter.name, seed=seed, instruction=observation.instruction)
        goal_reached = False
        terminated = truncated = False
        for _ in range(adapter.max_episode_steps):
            action = policy.act(env, raw_obs, info)
            if record:
                episode.frames.append(observation.frames)
                episode.proprio.append(observation.proprio)
            episode.actions.append(action)

            raw_obs, reward, terminated, truncated, info = env.step(adapter.to_env_action(action))
            episode.rewards.append(float(reward))
            goal_reached = goal_reached or adapter.goal_reached(float(reward), bool(terminated), info)
            if terminated or truncated:
                break
            if record:
                observation = adapter.observe(env, raw_obs, info)

        episode.truncated = bool(truncated or not terminated)
        outcome = EpisodeOutcome(
            episode_return=episode.episode_return,
            length=episode.length,
            goal_reached=goal_reached,
            truncated=episode.truncated,
        )
        episode.success = adapter.is_success(outcome)
        return episode
    finally:
        if own_env:
            env.close()

"""Run one episode of an adapter's environment with an expert and record it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from gea_envs.base import EmbodimentAdapter, EpisodeOutcome, ExpertPolicy
from gea_envs.spaces import Action

# Second key of the noise generator's seed, so that its stream differs from other uses of `seed`.
NOISE_STREAM = 7


@dataclass
class EpisodeRecord:
    """One recorded episode. Step ``t`` contains the observation seen before action ``t``."""

    embodiment: str
    seed: int
    instruction: str
    frames: list[list[np.ndarray]] = field(default_factory=list)
    proprio: list[Optional[np.ndarray]] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    # What env.step received when collection noise was on, one per step. It is empty when the
    # environment executed `actions` (the expert's labels) as they are.
    executed_actions: list[Action] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    success: bool = False
    truncated: bool = False
    action_noise: float = 0.0

    @property
    def length(self) -> int:
        return len(self.actions)

    @property
    def episode_return(self) -> float:
        return float(sum(self.rewards))

    @property
    def history_actions(self) -> list[Action]:
        """The actions the environment received: what a policy's action history should show."""
        return self.executed_actions or self.actions


def run_expert_episode(
    adapter: EmbodimentAdapter,
    seed: int,
    image_size: int,
    *,
    expert: Optional[ExpertPolicy] = None,
    record: bool = True,
    env=None,
    action_noise: float = 0.0,
) -> EpisodeRecord:
    """Play one episode of `adapter` with its expert (or `expert`) and return the record.

    Pass `env` to reuse an environment across episodes; it is then reset with `seed`
    and left open. Without it, an environment is built and closed here.

    With `action_noise` > 0 the environment receives ``adapter.perturb_action`` of each
    expert action while the record keeps the expert's action as the label, so the data
    shows how the expert recovers from states its own actions never reach (DART, Laskey et
    al. 2017). The noise is drawn from a generator seeded by `seed`.
    """
    if not 0.0 <= action_noise <= 1.0:
        raise ValueError(f"action_noise must be in [0, 1], got {action_noise}. Use 0 to record the expert as is.")
    noise_rng = np.random.default_rng([seed, NOISE_STREAM])
    own_env = env is None
    if own_env:
        env = adapter.make_env(seed=seed, image_size=image_size)
    try:
        raw_obs, info = env.reset(seed=seed)
        policy = expert if expert is not None else adapter.make_expert(env)
        policy.reset(env, raw_obs, info)
        observation = adapter.observe(env, raw_obs, info)
        episode = EpisodeRecord(
            embodiment=adapter.name, seed=seed, instruction=observation.instruction, action_noise=action_noise
        )
        goal_reached = False
        terminated = truncated = False
        for _ in range(adapter.max_episode_steps):
            action = policy.act(env, raw_obs, info)
            if record:
                episode.frames.append(observation.frames)
                episode.proprio.append(observation.proprio)
            episode.actions.append(action)
            executed = action
            if action_noise:
                executed = adapter.perturb_action(action, action_noise, noise_rng)
                episode.executed_actions.append(executed)
            policy.executed(executed)

            raw_obs, reward, terminated, truncated, info = env.step(adapter.to_env_action(executed))
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

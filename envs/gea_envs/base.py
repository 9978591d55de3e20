"""The adapter interface: the only class a new embodiment implements.

Trainers, the policy and the evaluator see an embodiment only through an
`EmbodimentAdapter`: its prompt text, its observations turned into frames and an
instruction, its action space, its expert and its success rule. They never branch
on an embodiment's name.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from typing import Any, Optional

import gymnasium as gym
import numpy as np

from gea_envs.spaces import Action, ActionSpace


class Domain(str, enum.Enum):
    STATIC_MANIPULATION = "static manipulation"
    NAVIGATION = "navigation"
    GAMES = "games"
    UI_CONTROL = "ui control"
    CONTINUOUS_CONTROL = "continuous control"


@dataclass(frozen=True)
class EmbodimentPrompt:
    """The fixed text the policy's prompt carries for one embodiment."""

    agent: str
    action_space: str
    simulator: str
    camera: str

    def __post_init__(self) -> None:
        for name in ("agent", "action_space", "simulator", "camera"):
            if not getattr(self, name).strip():
                raise ValueError(f"EmbodimentPrompt.{name} must be non-empty text.")


@dataclass
class Observation:
    """The policy's input at one step.

    `frames` are RGB images of shape ``(image_size, image_size, 3)`` and dtype uint8, one
    per camera. `proprio` is an optional float32 vector such as joint positions.
    """

    frames: list[np.ndarray]
    instruction: str
    proprio: Optional[np.ndarray] = None


@dataclass
class EpisodeOutcome:
    """Summary of a finished episode, from which an adapter decides success."""

    episode_return: float
    length: int
    goal_reached: bool
    truncated: bool = False


class ExpertPolicy(abc.ABC):
    """A demonstrator that acts from the raw environment (it may read simulator state)."""

    def reset(self, env: gym.Env, raw_obs: Any, info: dict) -> None:
        """Prepare for a new episode that `env.reset` just started."""

    @abc.abstractmethod
    def act(self, env: gym.Env, raw_obs: Any, info: dict) -> Action:
        """Return the agent-level action (see `gea_envs.spaces`) for the current step."""

    def executed(self, action: Action) -> None:
        """Learn which action ``env.step`` actually received after the last `act`.

        It differs from the suggestion when collection injects noise or another policy acts
        (as in DAgger). An expert that keeps a plan overrides this to replan from the executed
        action. The default ignores it, which suits experts that act from the state alone.
        """


class EmbodimentAdapter(abc.ABC):
    """One embodiment: a Gymnasium environment plus everything the platform needs to know about it.

    Subclasses set the class attributes and implement the abstract methods. Simulator
    packages should be imported inside methods, not at module level, so that listing the
    registry stays fast and an embodiment whose simulator is missing fails only when used.
    This is a convention that no check enforces.

    Attributes:
        name: registry name, ``"<suite>/<task>"`` (e.g. ``"babyai/GoToLocal"``).
        domain: the embodiment's domain.
        prompt: agent, action-space, simulator and camera text for the policy's prompt.
        action_space: the agent-level action space.
        max_episode_steps: step limit applied by `make_env`.
        success_rule: one sentence stating how success is decided, shown by ``gea envs``.
        expert_success_rate: the share of episodes the expert is expected to solve; the
            contract tests check it on a few seeds.
    """

    name: str
    domain: Domain
    prompt: EmbodimentPrompt
    action_space: ActionSpace
    max_episode_steps: int
    success_rule: str
    expert_success_rate: float = 0.9

    @abc.abstractmethod
    def make_env(self, seed: int, image_size: int) -> gym.Env:
        """Build the environment, rendering headless at `image_size` pixels square.

        `seed` selects construction-time randomness (such as a task variation); the caller
        still calls ``env.reset(seed=seed)``.
        """

    @abc.abstractmethod
    def observe(self, env: gym.Env, raw_obs: Any, info: dict) -> Observation:
        """Turn a raw observation into frames, instruction and optional proprioception."""

    def perturb_action(self, action: Action, scale: float, rng: np.random.Generator) -> Action:
        """Return `action` with collection noise of size `scale` (see ``gea collect --action-noise``).

        The default defers to the action space: Gaussian noise of `scale` times the half-range
        for continuous actions, a uniformly drawn action with probability `scale` otherwise.
        Override it to keep the noise to actions that move the agent rather than end the episode.
        """
        return self.action_space.perturb(action, scale, rng)

    def to_env_action(self, action: Action) -> Any:
        """Convert an agent-level action to what ``env.step`` takes (identity by default)."""
        return self.action_space.validate(action)

    def from_env_action(self, env_action: Any) -> Action:
        """Convert an environment action back to the agent-level action (identity by default)."""
        return self.action_space.validate(env_action)

    @abc.abstractmethod
    def make_expert(self, env: gym.Env) -> ExpertPolicy:
        """Build the expert that demonstrates this embodiment on `env`."""

    patch_label_count: int = 0
    """Classes of `patch_labels`; 0 when the adapter gives none."""

    def patch_labels(self, env: gym.Env) -> Optional[np.ndarray]:
        """Return the current frame's symbolic content per grid cell, or None (the default).

        An adapter whose simulator records what each region of the frame shows (a grid world's
        cells) returns an int array of shape ``(rows, cols)`` in ``[0, patch_label_count)``,
        row 0 at the top of the frame. Vision pretraining (`gea.training.vision_pretraining`)
        teaches the vision tower to predict it, one label per patch.
        """
        return None

    def goal_reached(self, reward: float, terminated: bool, info: dict) -> bool:
        """Return whether this step reached the task's goal (default: positive reward at termination)."""
        return bool(terminated and reward > 0)

    def is_success(self, outcome: EpisodeOutcome) -> bool:
        """Decide success of a finished episode (default: the goal was reached at some step)."""
        return outcome.goal_reached

    def describe(self) -> dict[str, str]:
        """Return a one-row summary for listings."""
        return {
            "name": self.name,
            "domain": self.domain.value,
            "action": self.action_space.kind.value,
            "success": self.success_rule,
        }

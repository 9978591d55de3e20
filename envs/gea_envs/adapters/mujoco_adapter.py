"""Gymnasium MuJoCo locomotion and reaching bodies (``mujoco/<Env>``) with stable-baselines3 experts.

The agent acts with joint torques inside the environment's action bounds. The policy receives one
RGB frame from a camera chosen per task plus the state observation vector as
proprioception, because a single frame shows positions but not the velocities that
balancing and running depend on.

Experts are stable-baselines3 models trained on the state observation by
``gea train-expert mujoco/<Env>`` and shipped as zip files in ``gea_envs/experts/``.
Success is an episode return at or above a per-task threshold, because these tasks
have no goal state that ends the episode.
"""

from __future__ import annotations

import importlib.resources
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from gea_envs import ADAPTERS
from gea_envs.base import (
    Domain,
    EmbodimentAdapter,
    EmbodimentPrompt,
    EpisodeOutcome,
    ExpertPolicy,
    Observation,
)
from gea_envs.spaces import Action, ContinuousActionSpace

logger = logging.getLogger(__name__)

SUITE = "mujoco"
EXPERT_PACKAGE = "gea_envs"
EXPERT_FOLDER = "experts"
SUPPORTED_ALGORITHMS = ("SAC", "PPO")


@dataclass(frozen=True)
class ExpertTrainingSpec:
    """Settings with which `gea train-expert` trains an embodiment's stable-baselines3 expert.

    Attributes:
        algorithm: stable-baselines3 algorithm class name, one of `SUPPORTED_ALGORITHMS`.
        timesteps: default number of environment steps to train for.
        hyperparameters: keyword arguments for the algorithm's constructor
            (``policy_kwargs`` included), on top of stable-baselines3's defaults.
    """

    algorithm: str
    timesteps: int
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.algorithm not in SUPPORTED_ALGORITHMS:
            raise ValueError(f"Unsupported expert algorithm {self.algorithm!r}; use one of {SUPPORTED_ALGORITHMS}.")
        if self.timesteps < 1:
            raise ValueError(f"Expert training timesteps must be positive, got {self.timesteps}.")


@dataclass(frozen=True)
class MujocoTask:
    """The per-task facts of one Gymnasium MuJoCo environment.

    Attributes:
        env_id: Gymnasium id, such as ``"HalfCheetah-v5"``.
        instruction: the task sentence given to the policy.
        agent: the body, described for the prompt.
        action_dim: number of actuators.
        action_meaning: what the actuators apply, for the prompt.
        torque_limit: symmetric bound of every actuator's control range. Stated here rather
            than read from the env so listing adapters does not load MuJoCo; a test checks
            both against Gymnasium's action space.
        camera: the rendered view, described for the prompt.
        camera_config: overrides of Gymnasium's ``default_camera_config`` (empty keeps its default).
        max_episode_steps: step limit (may be shorter than Gymnasium's default).
        success_return: minimum episode return over `max_episode_steps` that counts as success.
        success_reason: why `success_return` is the threshold, for the success rule.
        expert_success_rate: measured share of expert episodes that succeed.
        expert: how the expert is trained.
    """

    env_id: str
    instruction: str
    agent: str
    action_dim: int
    action_meaning: str
    torque_limit: float
    camera: str
    max_episode_steps: int
    success_return: float
    success_reason: str
    expert_success_rate: float
    expert: ExpertTrainingSpec
    camera_config: dict[str, Any] = field(default_factory=dict)


class StableBaselinesExpert(ExpertPolicy):
    """Acts with a trained stable-baselines3 model on the state observation, deterministically."""

    def __init__(self, model: Any, action_space: ContinuousActionSpace) -> None:
        self._model = model
        self._action_space = action_space

    def act(self, env: gym.Env, raw_obs: Any, info: dict) -> Action:
        action, _ = self._model.predict(np.asarray(raw_obs, dtype=np.float32), deterministic=True)
        # Keeps recorded actions inside the bounds that `to_env_action` and the tokenizers enforce.
        return self._action_space.clip(np.asarray(action, dtype=np.float32))


def expert_file_name(embodiment: str) -> str:
    """Return the expert zip file name for `embodiment` (``/`` replaced by ``__``)."""
    return embodiment.replace("/", "__") + ".zip"


def shipped_expert_path(embodiment: str) -> Path:
    """Return where the shipped expert of `embodiment` lives inside the `gea_envs` package."""
    return Path(str(importlib.resources.files(EXPERT_PACKAGE) / EXPERT_FOLDER / expert_file_name(embodiment)))


def load_sb3_model(path: Path, algorithm: str) -> Any:
    """Load a stable-baselines3 model of class `algorithm` from `path` onto the CPU."""
    import stable_baselines3

    if algorithm not in SUPPORTED_ALGORITHMS:
        raise ValueError(f"Unsupported expert algorithm {algorithm!r}; use one of {SUPPORTED_ALGORITHMS}.")
    algorithm_class = getattr(stable_baselines3, algorithm)
    return algorithm_class.load(str(path), device="cpu")


def _lower_render_quality(env: gym.Env) -> None:
    """Turn off shadows and multisampling, which dominate CPU (EGL/OSMesa) render time.

    Must run before the first ``render()``, because the renderer reads these settings
    when it creates its OpenGL context.
    """
    quality = env.unwrapped.model.vis.quality
    quality.shadowsize = 0
    quality.offsamples = 0


class MujocoAdapter(EmbodimentAdapter):
    """One Gymnasium MuJoCo task: torques in, a rendered frame plus the state vector out."""

    domain = Domain.CONTINUOUS_CONTROL

    def __init__(self, task: MujocoTask) -> None:
        self.task = task
        self.name = f"{SUITE}/{task.env_id}"
        self.max_episode_steps = task.max_episode_steps
        self.expert_success_rate = task.expert_success_rate
        self.expert_spec = task.expert
        self.success_rule = (
            f"Episode return over {task.max_episode_steps} steps is at least {task.success_return:g} "
            f"({task.success_reason})."
        )
        self.action_space = ContinuousActionSpace(
            low=(-task.torque_limit,) * task.action_dim, high=(task.torque_limit,) * task.action_dim
        )
        self.prompt = EmbodimentPrompt(
            agent=task.agent,
            action_space=(
                f"{task.action_dim} real numbers in [{-task.torque_limit:g}, {task.torque_limit:g}]: "
                f"{task.action_meaning}"
            ),
            simulator="MuJoCo physics (Gymnasium)",
            camera=task.camera,
        )

    def to_env_action(self, action: Action) -> np.ndarray:
        """Validate a torque vector, raising if its shape is wrong or a value is outside the bounds."""
        return self._check_bounds(self.action_space.validate(action))

    def from_env_action(self, env_action: Any) -> Action:
        return self._check_bounds(self.action_space.validate(env_action))

    def _check_bounds(self, action: np.ndarray) -> np.ndarray:
        low = np.asarray(self.action_space.low, dtype=np.float32)
        high = np.asarray(self.action_space.high, dtype=np.float32)
        if np.any(action < low) or np.any(action > high):
            raise ValueError(
                f"Action {action} of {self.name} is outside the bounds [{low}, {high}]. "
                f"Clip it with `action_space.clip` first."
            )
        return action

    def make_env(self, seed: int, image_size: int) -> gym.Env:
        """Build the environment rendering `image_size`-pixel RGB frames (`seed` is unused here)."""
        if image_size < 1:
            raise ValueError(f"image_size must be a positive number of pixels, got {image_size}.")
        camera_kwargs = {"default_camera_config": self.task.camera_config} if self.task.camera_config else {}
        env = gym.make(
            self.task.env_id,
            render_mode="rgb_array",
            width=image_size,
            height=image_size,
            max_episode_steps=self.max_episode_steps,
            **camera_kwargs,
        )
        _lower_render_quality(env)
        return env

    def make_state_env(self, seed: int) -> gym.Env:
        """Build the environment without rendering, for training experts on the state vector."""
        env = gym.make(self.task.env_id, max_episode_steps=self.max_episode_steps)
        env.action_space.seed(seed)
        return env

    def observe(self, env: gym.Env, raw_obs: Any, info: dict) -> Observation:
        frame = np.ascontiguousarray(env.render(), dtype=np.uint8)
        return Observation(
            frames=[frame],
            instruction=self.task.instruction,
            proprio=np.asarray(raw_obs, dtype=np.float32),
        )

    @property
    def expert_path(self) -> Path:
        """The shipped expert zip file of this embodiment."""
        return shipped_expert_path(self.name)

    def make_expert(self, env: gym.Env) -> ExpertPolicy:
        return self.load_expert(self.expert_path)

    def load_expert(self, path: Path) -> ExpertPolicy:
        """Load the stable-baselines3 expert saved at `path`."""
        if not path.is_file():
            raise FileNotFoundError(
                f"Expert file {path} for {self.name} not found. Train it with "
                f"`gea train-expert {self.name} --out {path}`."
            )
        logger.debug("Loading %s expert for %s from %s", self.expert_spec.algorithm, self.name, path)
        return StableBaselinesExpert(load_sb3_model(path, self.expert_spec.algorithm), self.action_space)

    def goal_reached(self, reward: float, terminated: bool, info: dict) -> bool:
        # Success depends on the whole episode's return, decided in `is_success`.
        return False

    def is_success(self, outcome: EpisodeOutcome) -> bool:
        return outcome.episode_return >= self.task.success_return


TASKS: tuple[MujocoTask, ...] = (
    MujocoTask(
        env_id="InvertedPendulum-v5",
        instruction="keep the pole balanced upright by moving the cart",
        agent="a cart on a rail with a hinged pole",
        action_dim=1,
        action_meaning="the horizontal force pushing the cart",
        torque_limit=3.0,
        camera="a fixed side view of the rail",
        max_episode_steps=1000,
        success_return=950.0,
        success_reason="reward is 1 per step until the pole falls, so the pole stayed up for 95% of the episode",
        # Shipped expert (SAC, 20k steps): 1000 on 20 of 20 episodes. Uniform-random policy: 4.4 +- 2.6.
        expert_success_rate=1.0,
        expert=ExpertTrainingSpec(
            algorithm="SAC",
            timesteps=20_000,
            hyperparameters={"learning_starts": 1000, "policy_kwargs": {"net_arch": [64, 64]}},
        ),
    ),
    MujocoTask(
        env_id="Reacher-v5",
        instruction="move the fingertip to the red target",
        agent="a two-joint planar arm",
        action_dim=2,
        action_meaning="the torques at the shoulder and the elbow",
        torque_limit=1.0,
        camera="a fixed top-down view of the arena",
        # Gymnasium's default view is so far away that the 2 cm target covers about one
        # pixel at 64 px; 0.65 m above the base still shows the arm's full 0.21 m reach.
        camera_config={"distance": 0.65, "elevation": -90.0, "azimuth": 90.0, "lookat": (0.0, 0.0, 0.0)},
        max_episode_steps=50,
        success_return=-6.0,
        success_reason="the reward is minus the fingertip-target distance in m and the control cost, so the "
        "fingertip averaged within 12 cm of the target over the episode, approach included",
        # Shipped expert: -4.3 +- 1.3, min -6.9, success on 17 of 20 episodes (the misses are far targets
        # it reaches late). Uniform-random policy: -43 +- 3.5, max -37.
        expert_success_rate=0.85,
        expert=ExpertTrainingSpec(
            algorithm="SAC",
            # NOTE: the shipped file comes from a 30k-step run resumed twice with `--resume` (30k, then
            # 40k more steps), each time with an empty replay buffer. A single 100k run is untested.
            timesteps=100_000,
            hyperparameters={"learning_starts": 1000, "batch_size": 64, "policy_kwargs": {"net_arch": [64, 64]}},
        ),
    ),
    MujocoTask(
        env_id="HalfCheetah-v5",
        instruction="run forward as fast as possible",
        agent="a two-legged planar cheetah",
        action_dim=6,
        action_meaning="the torques at the back thigh, shin and foot, then the front thigh, shin and foot",
        torque_limit=1.0,
        camera="a side view that follows the body",
        # NOTE: Gymnasium's default is 1000 steps. 300 keeps CPU rollouts short, and the threshold fits 300.
        max_episode_steps=300,
        success_return=600.0,
        success_reason="the forward reward is the speed in m/s, so the body averaged at least 2 m/s",
        # Shipped expert (SAC, 60k steps): 863 +- 92, min 728 over 20 episodes.
        # Uniform-random policy: -94 +- 38, max -35.
        expert_success_rate=0.95,
        expert=ExpertTrainingSpec(
            algorithm="SAC",
            timesteps=60_000,
            # Half of SB3's default network width (256) and batch size (256) cut the cost of
            # SAC's gradient updates, which dominate training time on a CPU.
            hyperparameters={"learning_starts": 5000, "batch_size": 128, "policy_kwargs": {"net_arch": [128, 128]}},
        ),
    ),
)


def _register() -> None:
    for task in TASKS:
        ADAPTERS.register(f"{SUITE}/{task.env_id}", lambda task=task: MujocoAdapter(task))


_register()

"""Meta-World v3 tabletop manipulation with a Sawyer arm: the ten MT10 tasks.

Each task registers as ``metaworld/<task>`` (e.g. ``metaworld/pick-place-v3``). The policy
receives one upright RGB frame from the fixed ``corner4`` camera, a language instruction and
the hand position plus gripper opening, and moves the hand by end-effector deltas.

Task variations follow the benchmark. Meta-World's MT1 benchmark for a task contains 50
variations (object and goal positions), and ``env.reset(seed=s)`` plays variation
``s % 50`` of the set that MT1 generates with `TASK_SET_SEED`. The same seed therefore
always gives the same first frame, even on a reused environment, and seeds 0 to 49 cover
every variation once. The scripted experts come from ``metaworld.policies``.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any, Optional

import gymnasium as gym
import numpy as np

from gea_envs.base import Domain, EmbodimentAdapter, EmbodimentPrompt, ExpertPolicy, Observation
from gea_envs.spaces import ContinuousActionSpace

SUITE = "metaworld"
CAMERA = "corner4"
# Meta-World's own horizon: `SawyerXYZEnv.step` raises once an episode passes 500 steps.
MAX_PATH_LENGTH = 500
# Seed of the MT1 task-variation set. Fixed so that a reset seed names the same
# variation on every machine and in every run.
TASK_SET_SEED = 0
SUCCESS_KEY = "success"
TASK_INDEX_KEY = "metaworld_task_index"
# State-vector layout of Meta-World v3: hand xyz, then gripper opening in [0, 1].
PROPRIO_DIM = 4

PROMPT = EmbodimentPrompt(
    agent="a Sawyer robot arm with 7 joints and a two-finger parallel gripper, working at a table",
    action_space=(
        "4 numbers in [-1, 1]: the hand's target displacement along x (to the arm's right), "
        "y (away from the arm's base) and z (up), 1 cm per unit per step, "
        "then the gripper command (+1 closes the fingers, -1 opens them)"
    ),
    simulator="MuJoCo 3.3 physics running Meta-World v3 tasks, 80 control steps per simulated second",
    camera=(
        "one RGB image from a fixed camera to the right of the arm's base, looking diagonally across "
        "the table at the arm and the objects (Meta-World's corner4 camera, rotated upright)"
    ),
)


@dataclass(frozen=True)
class MetaWorldTask:
    """One Meta-World v3 task as GEA presents it.

    Attributes:
        env_name: Meta-World's task name, such as ``"reach-v3"``.
        instruction: the language instruction the policy receives.
        expert_success_rate: the share of the 50 MT1 variations that the scripted expert
            solves within `MAX_PATH_LENGTH` steps.
    """

    env_name: str
    instruction: str
    expert_success_rate: float

    def __post_init__(self) -> None:
        if not self.env_name.endswith("-v3"):
            raise ValueError(f"Meta-World task names end in '-v3', got {self.env_name!r}.")
        if not self.instruction.strip():
            raise ValueError(f"Task {self.env_name!r} needs a non-empty instruction.")
        if not 0.0 <= self.expert_success_rate <= 1.0:
            raise ValueError(
                f"expert_success_rate of {self.env_name!r} must be in [0, 1], got {self.expert_success_rate}."
            )


# expert_success_rate: successes of MetaWorldScriptedExpert on seeds 0-49 (each MT1 variation once)
# at image_size 64 with the 500-step limit, metaworld 3.1.1 and mujoco 3.3.0.
MT10_TASKS: tuple[MetaWorldTask, ...] = (
    MetaWorldTask("reach-v3", "move the gripper to the red sphere", 1.0),
    MetaWorldTask("push-v3", "push the red puck to the green marker", 1.0),
    MetaWorldTask("pick-place-v3", "pick up the red puck and place it at the blue marker", 1.0),
    MetaWorldTask("door-open-v3", "pull the door of the black cabinet open by its handle", 0.92),
    MetaWorldTask("drawer-open-v3", "pull the drawer open by its handle", 1.0),
    MetaWorldTask("drawer-close-v3", "push the drawer closed", 1.0),
    MetaWorldTask("button-press-topdown-v3", "press the red button down from above", 1.0),
    MetaWorldTask(
        "peg-insert-side-v3", "pick up the green peg and insert it into the hole in the side of the box", 0.82
    ),
    MetaWorldTask("window-open-v3", "slide the window open", 1.0),
    MetaWorldTask("window-close-v3", "slide the window closed", 1.0),
)


@functools.lru_cache(maxsize=None)
def benchmark_tasks(env_name: str) -> tuple[Any, ...]:
    """Return the 50 task variations of Meta-World's MT1 benchmark for `env_name`.

    Building the set resets a fresh environment 50 times (0.6 s on one core of the 2-core
    development VM), so the set is cached per process.
    """
    import metaworld

    return tuple(metaworld.MT1(env_name, seed=TASK_SET_SEED).train_tasks)


class SeededTaskVariation(gym.Wrapper):
    """Set the task variation that the reset seed names, then reset.

    ``reset(seed=s)`` plays variation ``s % len(tasks)``. A reset without a seed draws a
    variation from a generator seeded by the last reset seed, or by `seed` before the first.
    Meta-World's own ``RandomTaskSelectWrapper`` (metaworld 3.1.1) draws the variation before
    it applies the reset seed, so its first frame after ``reset(seed=s)`` depends on earlier resets.
    """

    def __init__(self, env: gym.Env, tasks: tuple[Any, ...], seed: int) -> None:
        super().__init__(env)
        if not tasks:
            raise ValueError("SeededTaskVariation needs at least one task variation.")
        self._tasks = tasks
        self._rng = np.random.default_rng(seed)

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None) -> tuple[np.ndarray, dict]:
        if seed is None:
            index = int(self._rng.integers(len(self._tasks)))
        else:
            index = seed % len(self._tasks)
            self._rng = np.random.default_rng(seed)
        self.env.unwrapped.set_task(self._tasks[index])
        # Meta-World's reset sets positions and velocities but keeps other simulator state
        # (such as the solver's warm start), so a reused environment's first frame could
        # differ from a fresh one's in the last bit. Clearing all of it makes `seed` decide.
        import mujoco

        mujoco.mj_resetData(self.env.unwrapped.model, self.env.unwrapped.data)
        raw_obs, info = self.env.reset(seed=seed, options=options)
        info[TASK_INDEX_KEY] = index
        return raw_obs, info


class TerminateOnSuccess(gym.Wrapper):
    """End the episode at the first step where Meta-World reports ``info["success"]``.

    Meta-World 3.1.1 never sets ``terminated`` itself, so without this an expert that finished at
    step 60 would keep acting until the step limit.
    """

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        raw_obs, reward, terminated, truncated, info = self.env.step(action)
        succeeded = bool(info.get(SUCCESS_KEY, False))
        return raw_obs, reward, bool(terminated) or succeeded, truncated, info


class MetaWorldScriptedExpert(ExpertPolicy):
    """Meta-World's hand-written policy for one task, acting from the 39-D state vector."""

    def __init__(self, env_name: str) -> None:
        from metaworld.policies import ENV_POLICY_MAP

        if env_name not in ENV_POLICY_MAP:
            raise ValueError(
                f"Meta-World has no scripted policy for {env_name!r}. Known tasks: {sorted(ENV_POLICY_MAP)}."
            )
        self._policy = ENV_POLICY_MAP[env_name]()

    def act(self, env: gym.Env, raw_obs: Any, info: dict) -> np.ndarray:
        with warnings.catch_warnings():
            # The policies' gains exceed 1 on purpose far from a target and rely on clipping.
            warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high")
            action = self._policy.get_action(np.asarray(raw_obs))
        return np.clip(action, -1.0, 1.0).astype(np.float32)


class MetaWorldAdapter(EmbodimentAdapter):
    """One Meta-World v3 task: a Sawyer arm moved by end-effector deltas, seen from one camera."""

    domain = Domain.STATIC_MANIPULATION
    prompt = PROMPT
    action_space = ContinuousActionSpace(low=(-1.0, -1.0, -1.0, -1.0), high=(1.0, 1.0, 1.0, 1.0))
    success_rule = (
        "Success when Meta-World's info['success'] is 1 at any step (the object, or the gripper in reach, "
        "is within the task's distance threshold of its goal). The episode ends at that step."
    )

    def __init__(
        self,
        task: MetaWorldTask,
        max_episode_steps: int = MAX_PATH_LENGTH,
        terminate_on_success: bool = True,
    ) -> None:
        if not 1 <= max_episode_steps <= MAX_PATH_LENGTH:
            raise ValueError(
                f"max_episode_steps must be in [1, {MAX_PATH_LENGTH}] because Meta-World raises after "
                f"{MAX_PATH_LENGTH} steps, got {max_episode_steps}."
            )
        self.task = task
        self.name = f"{SUITE}/{task.env_name}"
        self.max_episode_steps = max_episode_steps
        self.expert_success_rate = task.expert_success_rate
        self.terminate_on_success = terminate_on_success

    def make_env(self, seed: int, image_size: int) -> gym.Env:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        from gea_envs.adapters._mujoco_render import FastUprightRender

        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive integer number of pixels, got {image_size!r}.")
        env_class = ALL_V3_ENVIRONMENTS[self.task.env_name]
        env: gym.Env = env_class(render_mode="rgb_array", camera_name=CAMERA, width=image_size, height=image_size)
        env = FastUprightRender(env)
        env = SeededTaskVariation(env, benchmark_tasks(self.task.env_name), seed)
        if self.terminate_on_success:
            env = TerminateOnSuccess(env)
        return gym.wrappers.TimeLimit(env, max_episode_steps=self.max_episode_steps)

    def observe(self, env: gym.Env, raw_obs: Any, info: dict) -> Observation:
        frame = env.render()
        proprio = np.asarray(raw_obs[:PROPRIO_DIM], dtype=np.float32)
        return Observation(frames=[frame], instruction=self.task.instruction, proprio=proprio)

    def to_env_action(self, action: Any) -> np.ndarray:
        return self.action_space.clip(self.action_space.validate(action))

    def make_expert(self, env: gym.Env) -> ExpertPolicy:
        return MetaWorldScriptedExpert(self.task.env_name)

    def goal_reached(self, reward: float, terminated: bool, info: dict) -> bool:
        return bool(info.get(SUCCESS_KEY, False))


def _register_mt10() -> None:
    from gea_envs import ADAPTERS

    for task in MT10_TASKS:
        ADAPTERS.register(f"{SUITE}/{task.env_name}", functools.partial(MetaWorldAdapter, task))


_register_mt10()

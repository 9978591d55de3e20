"""The RLlib environment: any registered embodiment adapter behind token-id actions.

Observation (a `gymnasium.spaces.Dict`, identical for every embodiment of a run so one
module serves them all):

- ``frames``: uint8 ``(frame_stack * num_cameras, H, W, 3)``, oldest frame first. Until
  an episode has ``frame_stack`` observations, its first frame fills the older slots.
- ``history_length``: how many of the last ``frame_stack`` observation slots are real
  observations of this episode (1 at reset), so a policy can rebuild the exact prompt.
- ``action_history``: int64 ``(frame_stack - 1, max_action_tokens)``, the padded token ids
  of the actions taken after each stacked observation but the current one, oldest
  first; only when ``frame_stack > 1``. Rows without a real action hold only padding.
- ``proprio``: float32 ``(max_proprio_dim,)``, zero-padded; only when ``max_proprio_dim > 0``.
- ``proprio_length``: how many leading ``proprio`` entries are real.
- ``embodiment``: index into `GeaEnvConfig.envs`; the module looks up the prompt text.
- ``instruction``: uint8 ``(max_instruction_bytes,)``, the episode's instruction as
  zero-padded UTF-8. Bytes pass RLlib's connectors (batching, tensor conversion)
  unchanged, while a `gymnasium.spaces.Text` observation cannot become a tensor.

Action: ``MultiDiscrete([vocab_size] * max_action_tokens)`` token ids, padded with the
de-tokenizer's pad id, decoded here by an `ActionDetokenizer`.

Embodiment placement: env runner ``k`` (RLlib's ``worker_index``, from 1) hosts
``envs[(k - 1) % len(envs)]`` in all of its sub-environments. RLlib 2.60 gives
sub-environments of one runner no index of their own (its vector entry point even
drops the `EnvContext`), so the runner is the smallest unit a creator can place. One
embodiment per runner also lets the policy decode a runner's batch under one constraint.
"""

from __future__ import annotations

import importlib
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import gymnasium as gym
import numpy as np

import gea_envs
from gea.rl.detokenizer import ActionDetokenizer, DecodedAction, strip_padding
from gea_envs.base import EmbodimentAdapter, EpisodeOutcome, Observation

logger = logging.getLogger(__name__)

ENV_NAME = "gea_embodiment"

OBS_FRAMES = "frames"
OBS_PROPRIO = "proprio"
OBS_PROPRIO_LENGTH = "proprio_length"
OBS_EMBODIMENT = "embodiment"
OBS_INSTRUCTION = "instruction"
OBS_HISTORY_LENGTH = "history_length"
OBS_ACTION_HISTORY = "action_history"

INFO_EMBODIMENT = "embodiment"
INFO_DECODE_VALID = "decode_valid"
INFO_DECODE_REASON = "decode_reason"
# Values of `GeaEnvConfig.reward`.
REWARD_ENV = "env"
REWARD_SUCCESS = "success"
REWARD_MODES = (REWARD_ENV, REWARD_SUCCESS)

# Set only in the info of an episode's last step.
INFO_SUCCESS = "success"
INFO_DECODE_VALID_RATE = "decode_valid_rate"


@dataclass
class GeaEnvConfig:
    """Settings every env runner needs to build its environment, sent to the runners pickled.

    Attributes:
        envs: adapter names (``"suite/task"``); runner ``k`` hosts ``envs[(k - 1) % len(envs)]``.
        detokenizer_factory: builds the `ActionDetokenizer` on each runner.
        image_size: rendered frame side in pixels, the same for all embodiments.
        frame_stack: how many most recent frames each observation carries.
        num_cameras: frames per step; every embodiment of a run must render this many.
        max_proprio_dim: proprioception is zero-padded to this length; 0 drops it.
        max_instruction_bytes: longest UTF-8 instruction; longer ones raise.
        invalid_action_penalty: reward added on a step whose tokens decoded invalid.
        reward: ``"env"`` passes the simulator's reward on. ``"success"`` gives 1 on the step
            where the adapter first reports the goal reached and 0 on every other step. Meta-World
            needs it: its dense reward pays for every step near the goal, and the episode ends
            at success, so the dense return grows when the policy puts success off.
        seed: base seed; runner ``k`` builds its simulator with ``seed + k``.
        max_episode_steps: caps every adapter's own step limit; None keeps each adapter's.
        adapter_modules: modules to import on each runner before the adapter lookup, for
            adapters registered outside `gea_envs.adapters`.
        adapter_factories: adapters to register on each runner, for embodiments defined
            where no module can import them (notebooks, tests); pickled with cloudpickle.
    """

    envs: tuple[str, ...]
    detokenizer_factory: Callable[[], ActionDetokenizer]
    image_size: int = 224
    frame_stack: int = 1
    num_cameras: int = 1
    max_proprio_dim: int = 0
    max_instruction_bytes: int = 256
    invalid_action_penalty: float = 0.0
    reward: str = REWARD_ENV
    seed: int = 0
    max_episode_steps: Optional[int] = None
    adapter_modules: tuple[str, ...] = ()
    adapter_factories: Mapping[str, Callable[[], EmbodimentAdapter]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.envs = tuple(self.envs)
        if not self.envs:
            raise ValueError("GeaEnvConfig.envs is empty; name at least one registered adapter such as 'mujoco/Reacher-v5'.")
        if len(set(self.envs)) != len(self.envs):
            raise ValueError(f"GeaEnvConfig.envs has duplicates: {self.envs}; list each embodiment once.")
        for name, value, minimum in (
            ("image_size", self.image_size, 8),
            ("frame_stack", self.frame_stack, 1),
            ("num_cameras", self.num_cameras, 1),
            ("max_proprio_dim", self.max_proprio_dim, 0),
            ("max_instruction_bytes", self.max_instruction_bytes, 1),
        ):
            if value < minimum:
                raise ValueError(f"GeaEnvConfig.{name} must be at least {minimum}, got {value}.")
        if self.reward not in REWARD_MODES:
            raise ValueError(f"GeaEnvConfig.reward must be one of {REWARD_MODES}, got {self.reward!r}.")
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise ValueError(f"GeaEnvConfig.max_episode_steps must be at least 1 or None, got {self.max_episode_steps}.")
        if not callable(self.detokenizer_factory):
            raise TypeError(f"GeaEnvConfig.detokenizer_factory must be callable, got {self.detokenizer_factory!r}.")

    def embodiment_for_runner(self, worker_index: int) -> str:
        """Return the embodiment that env runner `worker_index` hosts (0 is the local runner)."""
        return self.envs[max(worker_index - 1, 0) % len(self.envs)]


def observation_space(config: GeaEnvConfig, detokenizer: ActionDetokenizer) -> gym.spaces.Dict:
    """Build the observation space shared by every embodiment of a run (`detokenizer` shapes the action history)."""
    size = config.image_size
    spaces: dict[str, gym.Space] = {
        OBS_FRAMES: gym.spaces.Box(0, 255, (config.frame_stack * config.num_cameras, size, size, 3), np.uint8),
        OBS_EMBODIMENT: gym.spaces.Discrete(len(config.envs)),
        OBS_INSTRUCTION: gym.spaces.Box(0, 255, (config.max_instruction_bytes,), np.uint8),
        # Discrete(n, start=1) is not converted to a tensor by every RLlib connector, so the
        # count is a Box of one int64.
        OBS_HISTORY_LENGTH: gym.spaces.Box(1, config.frame_stack, (), np.int64),
    }
    if config.frame_stack > 1:
        spaces[OBS_ACTION_HISTORY] = gym.spaces.Box(
            0, detokenizer.vocab_size - 1, (config.frame_stack - 1, detokenizer.max_action_tokens), np.int64
        )
    if config.max_proprio_dim:
        spaces[OBS_PROPRIO] = gym.spaces.Box(-np.inf, np.inf, (config.max_proprio_dim,), np.float32)
        spaces[OBS_PROPRIO_LENGTH] = gym.spaces.Discrete(config.max_proprio_dim + 1)
    return gym.spaces.Dict(spaces)


def action_space(detokenizer: ActionDetokenizer) -> gym.spaces.MultiDiscrete:
    """Build the token-id action space of `detokenizer`."""
    return gym.spaces.MultiDiscrete(np.full(detokenizer.max_action_tokens, detokenizer.vocab_size, dtype=np.int64))


def encode_instruction(instruction: str, max_bytes: int) -> np.ndarray:
    """Return `instruction` as zero-padded UTF-8 bytes of length `max_bytes`."""
    data = instruction.encode("utf-8")
    if len(data) > max_bytes or b"\0" in data:
        raise ValueError(
            f"Instruction {instruction!r} is {len(data)} UTF-8 bytes or contains NUL; "
            f"GeaEnvConfig.max_instruction_bytes is {max_bytes}. Raise it."
        )
    array = np.zeros(max_bytes, dtype=np.uint8)
    array[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    return array


def decode_instruction(data: np.ndarray) -> str:
    """Invert `encode_instruction` for one observation's ``instruction`` entry."""
    raw = np.asarray(data, dtype=np.uint8).tobytes()
    return raw.rstrip(b"\0").decode("utf-8")


def resolve_adapter(config: GeaEnvConfig, name: str) -> EmbodimentAdapter:
    """Import `config.adapter_modules`, register `config.adapter_factories`, then build adapter `name`."""
    for module in config.adapter_modules:
        importlib.import_module(module)
    for factory_name, factory in config.adapter_factories.items():
        if factory_name not in gea_envs.ADAPTERS:
            gea_envs.ADAPTERS.register(factory_name, factory)
    return gea_envs.get_adapter(name)


def check_frames(config: GeaEnvConfig, embodiment: str, frames: list[np.ndarray]) -> np.ndarray:
    """Stack one step's camera frames, raising if their count, size or dtype differs from the run's."""
    stacked = np.stack(frames)
    expected = (config.num_cameras, config.image_size, config.image_size, 3)
    if stacked.shape != expected or stacked.dtype != np.uint8:
        raise ValueError(
            f"Adapter {embodiment!r} returned frames of shape {stacked.shape} and dtype {stacked.dtype}; "
            f"the run expects uint8 {expected}. Set GeaEnvConfig.num_cameras to its camera count."
        )
    return stacked


def stack_observation(
    config: GeaEnvConfig,
    *,
    embodiment: str,
    frame_history: list[np.ndarray],
    proprio: Optional[np.ndarray],
    instruction: np.ndarray,
    action_history: list[np.ndarray],
    detokenizer: ActionDetokenizer,
) -> dict[str, np.ndarray]:
    """Build one observation of `observation_space`.

    Args:
        frame_history: the episode's last observations' frames, at most ``frame_stack`` of
            them, oldest first, each of shape ``(num_cameras, H, W, 3)``.
        proprio: the adapter's proprioception vector, or None.
        instruction: the output of `encode_instruction`.
        action_history: the padded token ids of the actions taken after each entry of
            `frame_history` but the last, so one fewer entry.
        detokenizer: the run's de-tokenizer; its pad id fills action-history rows that
            have no real action.
    """
    if not 1 <= len(frame_history) <= config.frame_stack:
        raise ValueError(f"Expected 1 to {config.frame_stack} steps of frames, got {len(frame_history)}.")
    if len(action_history) != len(frame_history) - 1:
        raise ValueError(
            f"Expected one action per observation but the last: {len(frame_history)} observations and "
            f"{len(action_history)} actions."
        )
    steps = [check_frames(config, embodiment, list(step)) for step in frame_history]
    # Older slots repeat the episode's first frame, as if the agent had waited before it.
    steps = [steps[0]] * (config.frame_stack - len(steps)) + steps
    result = {
        OBS_FRAMES: np.concatenate(steps, axis=0),
        OBS_EMBODIMENT: config.envs.index(embodiment),
        OBS_INSTRUCTION: instruction,
        OBS_HISTORY_LENGTH: np.asarray(len(frame_history), dtype=np.int64),
    }
    if config.frame_stack > 1:
        result[OBS_ACTION_HISTORY] = _pad_action_history(config, action_history, detokenizer)
    if config.max_proprio_dim:
        padded = np.zeros(config.max_proprio_dim, dtype=np.float32)
        length = 0
        if proprio is not None:
            values = np.asarray(proprio, dtype=np.float32).reshape(-1)
            length = values.size
            if length > config.max_proprio_dim:
                raise ValueError(
                    f"Adapter {embodiment!r} returned {length} proprioception values but "
                    f"GeaEnvConfig.max_proprio_dim is {config.max_proprio_dim}. Raise it."
                )
            padded[:length] = values
        result[OBS_PROPRIO] = padded
        result[OBS_PROPRIO_LENGTH] = length
    return result


def _pad_action_history(
    config: GeaEnvConfig, action_history: list[np.ndarray], detokenizer: ActionDetokenizer
) -> np.ndarray:
    """Right-align `action_history` in ``frame_stack - 1`` rows, like the frames they follow."""
    rows = [np.asarray(action, dtype=np.int64).reshape(-1) for action in action_history]
    width = detokenizer.max_action_tokens
    if any(row.shape[0] != width for row in rows):
        raise ValueError(f"Every action of the action history must be padded to max_action_tokens={width}.")
    history = np.full((config.frame_stack - 1, width), detokenizer.pad_token_id, dtype=np.int64)
    if rows:
        history[len(history) - len(rows) :] = np.stack(rows)
    return history


class GeaEmbodimentEnv(gym.Env):
    """One embodiment's simulator with token-id actions and a run-wide observation space."""

    metadata = {"render_modes": []}

    def __init__(self, config: GeaEnvConfig, embodiment: str, seed: int) -> None:
        if embodiment not in config.envs:
            raise ValueError(f"Embodiment {embodiment!r} is not in GeaEnvConfig.envs {config.envs}.")
        self.config = config
        self.embodiment = embodiment
        self.embodiment_index = config.envs.index(embodiment)
        self.adapter = resolve_adapter(config, embodiment)
        self.detokenizer = config.detokenizer_factory()
        self.observation_space = observation_space(config, self.detokenizer)
        self.action_space = action_space(self.detokenizer)
        self.step_limit = self.adapter.max_episode_steps
        if config.max_episode_steps is not None:
            self.step_limit = min(self.step_limit, config.max_episode_steps)
        self._env = self.adapter.make_env(seed=seed, image_size=config.image_size)
        self._frames: deque[np.ndarray] = deque(maxlen=config.frame_stack)
        self._actions: deque[np.ndarray] = deque(maxlen=max(config.frame_stack - 1, 0))
        self._instruction = np.zeros(config.max_instruction_bytes, dtype=np.uint8)
        self._last_observation: Optional[dict[str, np.ndarray]] = None
        self._reset_episode_statistics()

    def _reset_episode_statistics(self) -> None:
        self._steps = 0
        self._valid_steps = 0
        self._episode_return = 0.0
        self._goal_reached = False

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        raw_obs, info = self._env.reset(seed=seed, options=options)
        self._reset_episode_statistics()
        observation = self.adapter.observe(self._env, raw_obs, info)
        self._instruction = encode_instruction(observation.instruction, self.config.max_instruction_bytes)
        self._frames.clear()
        self._actions.clear()
        self._frames.append(self._checked_frames(observation))
        self._last_observation = self._build_observation(observation)
        return self._last_observation, {INFO_EMBODIMENT: self.embodiment}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        if self._last_observation is None:
            raise RuntimeError("step() was called before reset(); call reset() first.")
        padded = np.asarray(action, dtype=np.int64).reshape(-1)
        token_ids = strip_padding(padded, self.detokenizer.pad_token_id)
        decoded = self.detokenizer.decode(self.embodiment, token_ids)
        self._steps += 1
        self._valid_steps += int(decoded.valid)

        if decoded.action is None:
            observation, reward, terminated, truncated = self._skip_step()
        else:
            observation, reward, terminated, truncated = self._simulate(decoded, padded)
        if not decoded.valid:
            reward += self.config.invalid_action_penalty
        self._episode_return += reward

        info = {
            INFO_EMBODIMENT: self.embodiment,
            INFO_DECODE_VALID: decoded.valid,
            INFO_DECODE_REASON: decoded.reason,
        }
        if terminated or truncated:
            info.update(self._episode_summary(truncated=truncated and not terminated))
        return observation, reward, terminated, truncated, info

    def _simulate(self, decoded: DecodedAction, padded_token_ids: np.ndarray) -> tuple[dict, float, bool, bool]:
        env_action = self.adapter.to_env_action(decoded.action)
        raw_obs, reward, terminated, truncated, raw_info = self._env.step(env_action)
        reward = float(reward)
        reached_before = self._goal_reached
        self._goal_reached = self._goal_reached or self.adapter.goal_reached(reward, bool(terminated), raw_info)
        if self.config.reward == REWARD_SUCCESS:
            reward = float(self._goal_reached and not reached_before)
        observation = self.adapter.observe(self._env, raw_obs, raw_info)
        self._frames.append(self._checked_frames(observation))
        # A deque of maxlen 0 (frame_stack 1) drops the action, as it should.
        self._actions.append(padded_token_ids.copy())
        self._last_observation = self._build_observation(observation)
        truncated = bool(truncated) or self._steps >= self.step_limit
        return self._last_observation, reward, bool(terminated), truncated

    def _skip_step(self) -> tuple[dict, float, bool, bool]:
        # Undecodable tokens cost a turn without moving the simulator; the step limit
        # still applies so such a policy cannot stall an episode forever.
        truncated = self._steps >= self.step_limit
        return self._last_observation, 0.0, False, truncated

    def _episode_summary(self, truncated: bool) -> dict[str, Any]:
        outcome = EpisodeOutcome(
            episode_return=self._episode_return,
            length=self._steps,
            goal_reached=self._goal_reached,
            truncated=truncated,
        )
        return {
            INFO_SUCCESS: bool(self.adapter.is_success(outcome)),
            INFO_DECODE_VALID_RATE: self._valid_steps / max(self._steps, 1),
        }

    def _checked_frames(self, observation: Observation) -> np.ndarray:
        return check_frames(self.config, self.embodiment, observation.frames)

    def _build_observation(self, observation: Observation) -> dict[str, np.ndarray]:
        return stack_observation(
            self.config,
            embodiment=self.embodiment,
            frame_history=list(self._frames),
            proprio=observation.proprio,
            instruction=self._instruction,
            action_history=list(self._actions),
            detokenizer=self.detokenizer,
        )

    def close(self) -> None:
        self._env.close()
        super().close()


def make_gea_env(env_context: Mapping[str, Any]) -> GeaEmbodimentEnv:
    """Build the environment of one sub-environment slot from RLlib's `EnvContext`.

    The context contains the `GeaEnvConfig` under ``"gea"``; its ``worker_index`` picks
    the embodiment (see the module docstring).
    """
    config = env_context.get("gea") if hasattr(env_context, "get") else None
    if not isinstance(config, GeaEnvConfig):
        raise TypeError(
            f"The env config must hold a GeaEnvConfig under 'gea', got {config!r}; "
            "build the algorithm config with gea.rl.algorithm.build_ppo_config."
        )
    worker_index = int(getattr(env_context, "worker_index", 0) or 0)
    embodiment = config.embodiment_for_runner(worker_index)
    logger.info("Env runner %d builds embodiment %s.", worker_index, embodiment)
    return GeaEmbodimentEnv(config, embodiment, seed=config.seed + worker_index)


def register_gea_env() -> str:
    """Register `make_gea_env` with Ray Tune's registry under `ENV_NAME` and return the name."""
    from ray.tune.registry import register_env

    register_env(ENV_NAME, make_gea_env)
    return ENV_NAME

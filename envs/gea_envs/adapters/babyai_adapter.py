"""BabyAI grid-world levels from minigrid (``babyai/<Level>``) with the BabyAI bot as expert.

The agent is a triangle in a grid of rooms and follows a generated instruction such as
"pick up the grey key". It observes its egocentric 7x7 partial view, rendered top-down as
RGB, and acts with minigrid's seven discrete actions named in language.

The expert is minigrid's `BabyAIBot`, which plans from the simulator's full state.
Success is minigrid's own rule: the episode ends with a positive reward, which BabyAI
gives only when the instruction is completed (``1 - 0.9 * steps / max_steps``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from dataclasses import dataclass
from typing import Any, Optional

import gymnasium as gym
import numpy as np

from gea_envs import ADAPTERS
from gea_envs.base import Domain, EmbodimentAdapter, EmbodimentPrompt, ExpertPolicy, Observation
from gea_envs.spaces import Action, DiscreteActionSpace

logger = logging.getLogger(__name__)

SUITE = "babyai"
IMAGE_KEY = "image"
MISSION_KEY = "mission"

# minigrid's agent view is 7x7 cells by default (MiniGridEnv.agent_view_size).
VIEW_CELLS = 7

# Patch labels are object type x colour of minigrid's symbolic view (11 types, 6 colours).
OBJECT_TYPES = 11
COLORS = 6

# minigrid.core.actions.Actions in index order: left, right, forward, pickup, drop, toggle, done.
ACTION_NAMES = ("turn left", "turn right", "move forward", "pick up", "drop", "toggle", "done")
MOVE_ACTIONS = (0, 1, 2)


@dataclass(frozen=True)
class BabyAILevel:
    """One BabyAI level as minigrid 3.2.0 registers it.

    Attributes:
        level: the level name inside the Gymnasium id ``BabyAI-<level>-v0``.
        max_steps: minigrid's own step limit for the level (``env.unwrapped.max_steps``),
            after which it truncates the episode. Stated here so that listing adapters does
            not build environments; a test checks it against minigrid.
        layout: the world layout in words, for the prompt.
    """

    level: str
    max_steps: int
    layout: str

    def __post_init__(self) -> None:
        if not self.level or not self.level.isidentifier():
            raise ValueError(f"Invalid BabyAI level name {self.level!r}; use the name in 'BabyAI-<level>-v0'.")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be positive, got {self.max_steps} for level {self.level!r}.")

    @property
    def env_id(self) -> str:
        return f"BabyAI-{self.level}-v0"


_SINGLE_ROOM = "a single 8x8 room with several objects"
_NINE_ROOMS = "a 3x3 maze of 8x8 rooms joined by doors"

# BabyAIBot solves all of these (20 of 20 episodes each, seeds 0-19, measured with
# minigrid 3.2.0). It fails on the PutNext*Carrying and KeyInBox levels, so those are absent.
LEVELS = (
    BabyAILevel("GoToRedBall", 64, _SINGLE_ROOM + ", of which one red ball"),
    BabyAILevel("GoToLocal", 64, _SINGLE_ROOM),
    BabyAILevel("PickupLoc", 64, _SINGLE_ROOM),
    BabyAILevel("GoTo", 576, _NINE_ROOMS),
    BabyAILevel("GoToObjMaze", 576, _NINE_ROOMS + " that start closed, with a single object"),
    BabyAILevel("Pickup", 576, _NINE_ROOMS),
    BabyAILevel("UnlockPickup", 72, "two rooms joined by a locked door, with the door's key"),
    BabyAILevel("Synth", 1152, _NINE_ROOMS + ", with a locked room in half of the episodes"),
    BabyAILevel("BossLevel", 2880, _NINE_ROOMS + ", with a locked room in half of the episodes"),
)


class PartialViewFrame(gym.ObservationWrapper):
    """Replace the symbolic ``image`` observation with the agent's RGB partial view.

    The 7x7 view is drawn with tiles of ``ceil(image_size / 7)`` pixels and resized to
    `image_size` with PIL when that is not a multiple of 7. The wrapper also routes the
    "Sampling rejected" lines that BabyAI's level generator prints on reset into the
    debug log, so that collecting data does not flood the terminal.
    """

    def __init__(self, env: gym.Env, image_size: int) -> None:
        super().__init__(env)
        if image_size < VIEW_CELLS:
            raise ValueError(f"image_size must be at least {VIEW_CELLS} pixels (one per cell), got {image_size}.")
        self.image_size = image_size
        self.tile_size = math.ceil(image_size / VIEW_CELLS)
        frame_space = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        self.observation_space = gym.spaces.Dict({**env.observation_space.spaces, IMAGE_KEY: frame_space})

    def reset(self, **kwargs: Any) -> tuple[dict, dict]:
        # NOTE: redirect_stdout swaps sys.stdout for the whole process, so another thread's
        # prints during a reset also land in this log.
        with contextlib.redirect_stdout(io.StringIO()) as generator_output:
            result = super().reset(**kwargs)
        for line in generator_output.getvalue().splitlines():
            logger.debug("BabyAI level generator: %s", line)
        return result

    def observation(self, observation: dict) -> dict:
        return {**observation, IMAGE_KEY: self.render_view()}

    def render_view(self) -> np.ndarray:
        """Draw the agent's partial view: the agent at the bottom centre, facing up."""
        frame = self.unwrapped.get_frame(tile_size=self.tile_size, agent_pov=True)
        if frame.shape[0] != self.image_size:
            from PIL import Image

            frame = np.asarray(Image.fromarray(frame).resize((self.image_size, self.image_size), Image.BILINEAR))
        return frame


class BabyAIBotExpert(ExpertPolicy):
    """Drive minigrid's `BabyAIBot` through the `ExpertPolicy` interface.

    The bot is rebuilt on every reset because it parses the instruction and maps the
    explored cells once per episode.
    """

    def __init__(self) -> None:
        self._bot: Any = None
        self._suggested: Optional[int] = None
        self._executed: Optional[int] = None

    def reset(self, env: gym.Env, raw_obs: Any, info: dict) -> None:
        from minigrid.utils.baby_ai_bot import BabyAIBot

        self._bot = BabyAIBot(env)
        self._suggested = self._executed = None

    def act(self, env: gym.Env, raw_obs: Any, info: dict) -> Action:
        if self._bot is None:
            raise RuntimeError("BabyAIBotExpert.act was called before reset; call reset after env.reset.")
        # replan(None) means "my last suggestion was executed". Any other action puts the bot in
        # advising mode, where its subgoals plan how to undo or use that action.
        action_taken = None if self._executed == self._suggested else self._executed
        self._suggested = int(self._bot.replan(action_taken))
        self._executed = self._suggested
        return self._suggested

    def executed(self, action: Action) -> None:
        self._executed = int(action)


class BabyAIAdapter(EmbodimentAdapter):
    """One BabyAI level: instruction following in a partially observed grid world."""

    domain = Domain.NAVIGATION
    action_space = DiscreteActionSpace(ACTION_NAMES)
    success_rule = "The episode ends with a positive reward, which BabyAI gives only when the instruction is completed."
    expert_success_rate = 0.95
    patch_label_count = OBJECT_TYPES * COLORS

    def __init__(self, level: BabyAILevel) -> None:
        self.level = level
        self.name = f"{SUITE}/{level.level}"
        self.max_episode_steps = level.max_steps
        self.prompt = EmbodimentPrompt(
            agent="a triangle-shaped agent in a grid world that can carry one object at a time",
            action_space=(
                "one of seven discrete actions: turn left, turn right, move forward, pick up (the object in front), "
                "drop (the carried object in front), toggle (open or close the door in front), done"
            ),
            simulator=f"BabyAI level {level.level} (minigrid): {level.layout}",
            camera=(
                "egocentric 7x7 partial view, top-down: the agent is the red triangle at the bottom centre facing up, "
                "and walls and closed doors hide the cells behind them"
            ),
        )

    def make_env(self, seed: int, image_size: int) -> gym.Env:
        # minigrid registers the BabyAI ids on import. Each level truncates at its own
        # max_steps, so no TimeLimit is added.
        import minigrid  # noqa: F401

        return PartialViewFrame(gym.make(self.level.env_id), image_size)

    def observe(self, env: gym.Env, raw_obs: Any, info: dict) -> Observation:
        return Observation(frames=[raw_obs[IMAGE_KEY]], instruction=str(raw_obs[MISSION_KEY]))

    def make_expert(self, env: gym.Env) -> ExpertPolicy:
        return BabyAIBotExpert()

    def perturb_action(self, action: Action, scale: float, rng: np.random.Generator) -> Action:
        """With probability `scale`, turn left, turn right or move forward, drawn uniformly.

        Noise that picks up, drops or toggles could undo the level's own goal, so it only moves.
        """
        return int(rng.choice(MOVE_ACTIONS)) if rng.random() < scale else int(action)

    def patch_labels(self, env: gym.Env) -> np.ndarray:
        """Object type x colour of each cell of the 7x7 view, as (row, column) from the top of the frame."""
        # NOTE: minigrid encodes the agent's own cell as what it carries (or empty), while the frame
        # draws the agent there, so that one cell's label does not describe its pixels.
        symbolic = env.unwrapped.gen_obs()[IMAGE_KEY]  # (7, 7, 3): column, row, (type, colour, state)
        labels = symbolic[..., 0].astype(np.int64) * COLORS + symbolic[..., 1]
        return labels.T  # (row, column), as the frame is drawn


def _register() -> None:
    for level in LEVELS:
        ADAPTERS.register(f"{SUITE}/{level.level}", lambda level=level: BabyAIAdapter(level))


_register()

"""MiniWoB++ web tasks (``miniwob/<task>``) in headless Chromium, with a DOM oracle expert.

The agent sees a screenshot of the 160 x 210 pixel task page (the instruction on top,
the task area below) and acts with `UIAction`: a click on a cell of a 32 x 42 grid of
5-pixel cells, or typing text into the focused element.

Why 5-pixel cells: a click lands on a cell's centre pixel, so a target is reachable
only if some cell centre lies inside it. Any box at least one cell wide and tall
contains a centre. The narrowest target in these tasks is a one-letter link in
click-link (5.6 pixels wide and 11 tall in Debian's Chromium 156, measured over seeds
0-299), so cells may be at most 5 pixels wide. Square cells keep x and y on the same scale.

Success is MiniWoB's full raw reward of 1.0. The environment reward is MiniWoB's
time-discounted reward, which click-checkboxes also pays in part (positive once most
boxes are right), so a positive reward alone does not mean the task was solved.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from PIL import Image

from gea_envs import ADAPTERS
from gea_envs.adapters.miniwob_oracle import (
    SCREENSHOT_KEY,
    UTTERANCE_KEY,
    ClickElement,
    Page,
    ScreenGrid,
    TaskPlanner,
    TypeText,
    choose_click_cell,
    plan_click_checkboxes,
    plan_click_dialog,
    plan_click_link,
    plan_click_named_button,
    plan_click_only_button,
    plan_enter_text,
    plan_focus_text,
)
from gea_envs.base import Domain, EmbodimentAdapter, EmbodimentPrompt, ExpertPolicy, Observation
from gea_envs.spaces import CLICK, TYPE, Action, UIAction, UIActionSpace

logger = logging.getLogger(__name__)

SUITE = "miniwob"

# miniwob.constants TASK_WIDTH and TASK_HEIGHT (miniwob 1.1.0): the screenshot size,
# repeated here so that listing adapters does not start importing miniwob.
SCREEN_WIDTH = 160
SCREEN_HEIGHT = 210
CELL_PIXELS = 5
GRID = ScreenGrid(cell_pixels=CELL_PIXELS, columns=SCREEN_WIDTH // CELL_PIXELS, rows=SCREEN_HEIGHT // CELL_PIXELS)
# enter-text types first names, and 32 characters leave room for longer tasks.
MAX_TEXT_CHARS = 32

# The miniwob action types this adapter uses. An env action's "action_type" is an index into this tuple.
CLICK_COORDS = "CLICK_COORDS"
TYPE_TEXT = "TYPE_TEXT"
ENV_ACTION_TYPES: tuple[str, ...] = (CLICK_COORDS, TYPE_TEXT)
ACTION_TYPE_KEY = "action_type"
COORDS_KEY = "coords"
TEXT_KEY = "text"
RAW_REWARD_KEY = "raw_reward"
FULL_REWARD = 1.0


@dataclass(frozen=True)
class MiniWoBTask:
    """The per-task facts of one MiniWoB++ task.

    Attributes:
        subdomain: MiniWoB task name, the HTML file name without ``.html``.
        planner: the DOM oracle's step planner for this task.
        max_episode_steps: step limit, a few steps above what the oracle needs.
        expert_success_rate: measured share of oracle episodes that succeed.
    """

    subdomain: str
    planner: TaskPlanner
    max_episode_steps: int
    expert_success_rate: float

    def __post_init__(self) -> None:
        if self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps of {self.subdomain!r} must be positive, got {self.max_episode_steps}.")
        if not 0.0 <= self.expert_success_rate <= 1.0:
            raise ValueError(
                f"expert_success_rate of {self.subdomain!r} must be in [0, 1], got {self.expert_success_rate}."
            )


# The oracle solved 20 of 20 episodes of every task (seeds 1000-1019) on a 2-core machine
# under heavy load, hence expert_success_rate=1.0.
TASKS: tuple[MiniWoBTask, ...] = (
    MiniWoBTask("click-test", plan_click_only_button, max_episode_steps=5, expert_success_rate=1.0),
    MiniWoBTask("click-test-2", plan_click_named_button, max_episode_steps=5, expert_success_rate=1.0),
    MiniWoBTask("click-button", plan_click_named_button, max_episode_steps=5, expert_success_rate=1.0),
    MiniWoBTask("click-link", plan_click_link, max_episode_steps=5, expert_success_rate=1.0),
    MiniWoBTask("click-dialog", plan_click_dialog, max_episode_steps=5, expert_success_rate=1.0),
    # Up to 6 boxes to toggle, then Submit.
    MiniWoBTask("click-checkboxes", plan_click_checkboxes, max_episode_steps=10, expert_success_rate=1.0),
    MiniWoBTask("focus-text", plan_focus_text, max_episode_steps=5, expert_success_rate=1.0),
    # Click the box, type, click Submit.
    MiniWoBTask("enter-text", plan_enter_text, max_episode_steps=6, expert_success_rate=1.0),
)


class _ImageSize(gym.Wrapper):
    """Carries the requested frame size so that `MiniWoBAdapter.observe` can resize screenshots."""

    def __init__(self, env: gym.Env, image_size: int) -> None:
        super().__init__(env)
        self.image_size = image_size


class DomOracleExpert(ExpertPolicy):
    """Plans each step from the page's DOM elements and task fields (see `gea_envs.adapters.miniwob_oracle`)."""

    def __init__(self, planner: TaskPlanner, grid: ScreenGrid, action_space: UIActionSpace) -> None:
        self._planner = planner
        self._grid = grid
        self._action_space = action_space

    def act(self, env: gym.Env, raw_obs: Any, info: dict) -> Action:
        page = Page.from_observation(raw_obs)
        step = self._planner(page)
        if isinstance(step, TypeText):
            action = UIAction(kind=TYPE, text=step.text)
        elif isinstance(step, ClickElement):
            x, y = choose_click_cell(self._grid, page, step.element)
            action = UIAction(kind=CLICK, x=x, y=y)
        else:
            raise TypeError(f"Task planner returned {step!r}, expected a ClickElement or TypeText.")
        return self._action_space.validate(action)


class MiniWoBAdapter(EmbodimentAdapter):
    """One MiniWoB++ task: screenshot and utterance in, grid clicks and typed text out."""

    domain = Domain.UI_CONTROL
    action_space = UIActionSpace(grid_width=GRID.columns, grid_height=GRID.rows, max_text_chars=MAX_TEXT_CHARS)
    success_rule = (
        "The episode ends with MiniWoB's full raw reward of 1.0: the task was done completely "
        "within MiniWoB's 10-second limit."
    )

    def __init__(self, task: MiniWoBTask) -> None:
        self.task = task
        self.name = f"{SUITE}/{task.subdomain}"
        self.max_episode_steps = task.max_episode_steps
        self.expert_success_rate = task.expert_success_rate
        self.prompt = EmbodimentPrompt(
            agent="a user operating a web page with a mouse and keyboard",
            action_space=(
                f"click(x, y) on a cell of a {GRID.columns} x {GRID.rows} grid over the screenshot "
                f"(x counts cells from the left, y from the top), or type(text) of up to {MAX_TEXT_CHARS} "
                "printable ASCII characters into the focused element"
            ),
            simulator="MiniWoB++ web tasks in headless Chromium",
            camera=(
                f"a {SCREEN_WIDTH} x {SCREEN_HEIGHT} pixel screenshot of the page, instruction on top "
                "and task area below, resized to a square"
            ),
        )

    def make_env(self, seed: int, image_size: int) -> gym.Env:
        """Start Chromium on the task page. `seed` is unused here: ``reset(seed=...)`` seeds the page's generator."""
        if image_size < 1:
            raise ValueError(f"image_size must be a positive number of pixels, got {image_size}.")
        from gea_envs.adapters.miniwob_browser import make_offline_env

        env = make_offline_env(self.task.subdomain, ENV_ACTION_TYPES, text_max_len=MAX_TEXT_CHARS)
        try:
            if (env.instance.task_width, env.instance.task_height) != (SCREEN_WIDTH, SCREEN_HEIGHT):
                raise RuntimeError(
                    f"{self.name}: miniwob's screenshot is {env.instance.task_width} x {env.instance.task_height} "
                    f"pixels, but this adapter's grid assumes {SCREEN_WIDTH} x {SCREEN_HEIGHT}."
                )
            limited = gym.wrappers.TimeLimit(env, max_episode_steps=self.max_episode_steps)
        except BaseException:
            env.close()
            raise
        return _ImageSize(limited, image_size)

    def observe(self, env: gym.Env, raw_obs: Any, info: dict) -> Observation:
        image_size = env.get_wrapper_attr("image_size")
        screenshot = Image.fromarray(np.asarray(raw_obs[SCREENSHOT_KEY], dtype=np.uint8))
        frame = np.asarray(screenshot.resize((image_size, image_size), Image.Resampling.BILINEAR), dtype=np.uint8)
        return Observation(frames=[frame], instruction=str(raw_obs[UTTERANCE_KEY]))

    def to_env_action(self, action: Action) -> dict[str, Any]:
        """Convert a `UIAction` to a miniwob action dict (a click goes to the cell's centre pixel)."""
        action = self.action_space.validate(action)
        if action.kind == CLICK:
            left, top = GRID.click_point(action.x, action.y)
            return {
                ACTION_TYPE_KEY: ENV_ACTION_TYPES.index(CLICK_COORDS),
                COORDS_KEY: np.array([left, top], dtype=np.float32),
                TEXT_KEY: "",
            }
        return {
            ACTION_TYPE_KEY: ENV_ACTION_TYPES.index(TYPE_TEXT),
            COORDS_KEY: np.zeros(2, dtype=np.float32),
            TEXT_KEY: action.text,
        }

    def from_env_action(self, env_action: Any) -> Action:
        """Convert a miniwob action dict back to a `UIAction` (a click maps to the cell containing it)."""
        if not isinstance(env_action, dict) or ACTION_TYPE_KEY not in env_action:
            raise ValueError(f"Expected a miniwob action dict with an {ACTION_TYPE_KEY!r} key, got {env_action!r}.")
        index = int(env_action[ACTION_TYPE_KEY])
        if not 0 <= index < len(ENV_ACTION_TYPES):
            raise ValueError(
                f"miniwob action_type {index} is not one this adapter uses: 0 to {len(ENV_ACTION_TYPES) - 1} "
                f"for {ENV_ACTION_TYPES}."
            )
        if ENV_ACTION_TYPES[index] == CLICK_COORDS:
            left, top = (float(value) for value in env_action[COORDS_KEY])
            x, y = GRID.cell_at(left, top)
            return self.action_space.validate(UIAction(kind=CLICK, x=x, y=y))
        return self.action_space.validate(UIAction(kind=TYPE, text=str(env_action[TEXT_KEY])))

    def make_expert(self, env: gym.Env) -> ExpertPolicy:
        return DomOracleExpert(self.task.planner, GRID, self.action_space)

    def goal_reached(self, reward: float, terminated: bool, info: dict) -> bool:
        """Return whether the episode ended with MiniWoB's full raw reward (not the time-discounted one)."""
        if not terminated:
            return False
        if RAW_REWARD_KEY not in info:
            raise ValueError(
                f"{self.name}: step info is missing {RAW_REWARD_KEY!r}. "
                "Pass the info dict that the miniwob env returned."
            )
        return float(info[RAW_REWARD_KEY]) >= FULL_REWARD


def _register() -> None:
    for task in TASKS:
        ADAPTERS.register(f"{SUITE}/{task.subdomain}", functools.partial(MiniWoBAdapter, task))


_register()

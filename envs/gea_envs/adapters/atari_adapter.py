"""Atari 2600 games from ale-py (``atari/<Game>``) with scripted experts that read the console RAM.

The agent plays with the game's minimal action set, each action named by its ALE meaning
in language ("move right and fire"). It observes the 210x160 RGB screen resized to a square
frame. Environments use the ALE v5 defaults of ale-py 0.12.1: 4 frames per step and
sticky actions (each frame repeats the previous action with probability 0.25), so that
the same action sequence does not replay the same game.

Episodes are cut short for CPU training (see `GAMES`). The experts move the paddle to
where the ball will cross the paddle's line, predicted from the ball's position and
velocity in RAM, and choose the last actions before contact by trying them on a copy of
the emulator state. Success is an episode return of at least half the expert's mean
return, because these games have no goal state.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any, Optional

import gymnasium as gym
import numpy as np

from gea_envs import ADAPTERS
from gea_envs.base import Domain, EmbodimentAdapter, EmbodimentPrompt, EpisodeOutcome, ExpertPolicy, Observation
from gea_envs.spaces import Action, DiscreteActionSpace

logger = logging.getLogger(__name__)

SUITE = "atari"
FRAMES_PER_STEP = 4
STICKY_ACTION_PROBABILITY = 0.25
# Success needs this share of the expert's mean return.
SUCCESS_SHARE_OF_EXPERT = 0.5

# The 18 ALE actions (ale_py.Action) in language.
ACTION_MEANINGS = {
    "NOOP": "no operation",
    "FIRE": "fire",
    "UP": "move up",
    "RIGHT": "move right",
    "LEFT": "move left",
    "DOWN": "move down",
    "UPRIGHT": "move up and right",
    "UPLEFT": "move up and left",
    "DOWNRIGHT": "move down and right",
    "DOWNLEFT": "move down and left",
    "UPFIRE": "move up and fire",
    "RIGHTFIRE": "move right and fire",
    "LEFTFIRE": "move left and fire",
    "DOWNFIRE": "move down and fire",
    "UPRIGHTFIRE": "move up and right and fire",
    "UPLEFTFIRE": "move up and left and fire",
    "DOWNRIGHTFIRE": "move down and right and fire",
    "DOWNLEFTFIRE": "move down and left and fire",
}


@dataclass(frozen=True)
class PaddleGeometry:
    """RAM layout and paddle movement of a one-paddle ball game, for `PaddleExpert`.

    Positions are in the game's RAM units. The ball travels along the "approach" axis
    towards the agent's paddle, which slides along the other axis, between walls at
    `wall_low` and `wall_high` that reflect the ball.

    Attributes:
        ball_along: RAM address of the ball's position on the paddle's axis.
        ball_approach: RAM address of the ball's position on the approach axis; 0 while
            no ball is in play.
        paddle: RAM address of the paddle's position on its axis.
        contact_line: approach-axis position at which the ball meets the paddle.
        wall_low: lowest ball position on the paddle's axis before it bounces.
        wall_high: highest ball position on the paddle's axis before it bounces.
        aim_offset: paddle position minus the ball position that centres the ball on the paddle.
        increase_action: minimal-set index of the action that raises the paddle position.
        decrease_action: minimal-set index of the action that lowers the paddle position.
        serve_action: minimal-set index of the action that puts a new ball in play, if the
            game needs one.
    """

    ball_along: int
    ball_approach: int
    paddle: int
    contact_line: float
    wall_low: float
    wall_high: float
    aim_offset: float
    increase_action: int
    decrease_action: int
    serve_action: Optional[int] = None

    def __post_init__(self) -> None:
        for name in ("ball_along", "ball_approach", "paddle"):
            address = getattr(self, name)
            if not 0 <= address < 128:
                raise ValueError(f"{name} must be an Atari 2600 RAM address in [0, 128), got {address}.")
        if self.wall_low >= self.wall_high:
            raise ValueError(f"wall_low must be below wall_high, got {self.wall_low} and {self.wall_high}.")


@dataclass(frozen=True)
class AtariGame:
    """The per-game facts of one ALE game.

    Attributes:
        game: the game name in ALE ids, such as ``"Pong"`` for ``ALE/Pong-v5``.
        action_meanings: ALE names of the minimal action set in index order. Stated here so
            that listing adapters does not load the ROM; a test checks them against ALE.
        max_episode_steps: agent steps (of `FRAMES_PER_STEP` frames) after which the episode is truncated.
        expert_mean_return: the scripted expert's mean return over 20 episodes (seeds 0-19,
            ale-py 0.12.1, measured with `run_expert_episode`).
        expert_success_rate: share of those episodes that met the success threshold.
        geometry: RAM layout and paddle movement for the scripted expert.
        goal: the task in words; it is also the instruction.
        controls: what the actions do in this game, for the prompt.
        points_to_win: if set, the episode ends when either side has this many points.
        score_addresses: RAM addresses of the (agent, opponent) scores, needed with `points_to_win`.
    """

    game: str
    action_meanings: tuple[str, ...]
    max_episode_steps: int
    expert_mean_return: float
    expert_success_rate: float
    geometry: PaddleGeometry
    goal: str
    controls: str
    points_to_win: Optional[int] = None
    score_addresses: Optional[tuple[int, int]] = None

    def __post_init__(self) -> None:
        unknown = [meaning for meaning in self.action_meanings if meaning not in ACTION_MEANINGS]
        if unknown:
            raise ValueError(f"Unknown ALE action names {unknown} for {self.game}; use names from ale_py.Action.")
        if self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be positive, got {self.max_episode_steps} for {self.game}.")
        if self.expert_mean_return <= 0:
            raise ValueError(f"expert_mean_return must be positive, got {self.expert_mean_return} for {self.game}.")
        if (self.points_to_win is None) != (self.score_addresses is None):
            raise ValueError(f"{self.game}: set points_to_win and score_addresses together, or neither.")

    @property
    def env_id(self) -> str:
        return f"ALE/{self.game}-v5"

    @property
    def return_threshold(self) -> float:
        return SUCCESS_SHARE_OF_EXPERT * self.expert_mean_return


# RAM addresses, walls and contact lines below were read from ale-py 0.12.1 ROMs by comparing
# RAM bytes with object positions on screen and with where the ball bounced.
GAMES = (
    AtariGame(
        game="Pong",
        action_meanings=("NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"),
        max_episode_steps=2000,
        expert_mean_return=2.7,
        expert_success_rate=0.95,
        geometry=PaddleGeometry(
            ball_along=54,
            ball_approach=49,
            paddle=51,
            contact_line=188,
            wall_low=44,
            wall_high=207,
            aim_offset=-5,
            increase_action=3,
            decrease_action=2,
        ),
        goal="win the game of Pong: score 3 points before the computer opponent does",
        controls=(
            "you control the green paddle on the right; 'move right' moves it up, 'move left' moves it down, "
            "and the variants with fire move it the same way"
        ),
        points_to_win=3,
        score_addresses=(14, 13),
    ),
    AtariGame(
        game="Breakout",
        action_meanings=("NOOP", "FIRE", "RIGHT", "LEFT"),
        max_episode_steps=1000,
        expert_mean_return=61.0,
        expert_success_rate=1.0,
        geometry=PaddleGeometry(
            ball_along=99,
            ball_approach=101,
            paddle=72,
            contact_line=177,
            wall_low=55,
            wall_high=201,
            aim_offset=-8,
            increase_action=2,
            decrease_action=3,
            serve_action=1,
        ),
        goal="break as many bricks as you can by bouncing the ball off your paddle, and do not let the ball pass it",
        controls="you control the paddle at the bottom; fire puts a new ball in play after one is lost",
    ),
)


class ResizedScreen(gym.ObservationWrapper):
    """Resize the 210x160 RGB screen to ``image_size`` x ``image_size`` with PIL (bilinear)."""

    def __init__(self, env: gym.Env, image_size: int) -> None:
        super().__init__(env)
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}.")
        self.image_size = image_size
        self.observation_space = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        from PIL import Image

        size = (self.image_size, self.image_size)
        return np.asarray(Image.fromarray(observation).resize(size, Image.BILINEAR))


class FirstToPoints(gym.Wrapper):
    """End the episode (terminated) as soon as either side's score in RAM reaches `points`."""

    def __init__(self, env: gym.Env, points: int, score_addresses: tuple[int, int]) -> None:
        super().__init__(env)
        if points < 1:
            raise ValueError(f"points must be positive, got {points}.")
        self.points = points
        self.score_addresses = score_addresses

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        ram = self.unwrapped.ale.getRAM()
        if max(int(ram[address]) for address in self.score_addresses) >= self.points:
            terminated = True
        return observation, reward, terminated, truncated, info


class PaddleExpert(ExpertPolicy):
    """Move the paddle to where the ball will cross the paddle's line, reading positions from RAM.

    The on-screen paddle trails the joystick: it keeps sliding for a few frames after a
    move stops. The expert therefore estimates where the paddle will settle, then picks
    the action (stay, or one step either way) whose settling point is closest to the aim.
    Choosing from settling points instead of current positions stops the paddle from
    oscillating around the aim.

    One agent step moves the paddle about 22 RAM units, more than the margin for hitting
    the ball, so in the last steps before contact a `ContactSearch` on the emulator picks
    the action instead.
    """

    # RAM units a paddle moves in one agent step of held input: about 5.5 per frame in both
    # Pong and Breakout, times FRAMES_PER_STEP.
    PADDLE_STEP = 22.0
    # Share of the last step's paddle movement still to come while the input is held, and
    # after it is released. Estimated from frame-by-frame traces of the paddle position.
    DRIFT_WHILE_HELD = 0.45
    DRIFT_AFTER_RELEASE = 0.15

    def __init__(self, geometry: PaddleGeometry) -> None:
        self.geometry = geometry
        self.search = ContactSearch(geometry)
        self._previous_ball: Optional[tuple[int, int]] = None
        self._previous_paddle: Optional[int] = None
        self._previous_action = 0
        self._steps = 0

    def reset(self, env: gym.Env, raw_obs: Any, info: dict) -> None:
        self._previous_ball = None
        self._previous_paddle = None
        self._previous_action = 0
        self._steps = 0

    def act(self, env: gym.Env, raw_obs: Any, info: dict) -> Action:
        geometry = self.geometry
        ram = env.unwrapped.ale.getRAM()
        ball = (int(ram[geometry.ball_along]), int(ram[geometry.ball_approach]))
        paddle = int(ram[geometry.paddle])
        paddle_velocity = 0 if self._previous_paddle is None else paddle - self._previous_paddle
        self._previous_paddle = paddle
        self._steps += 1

        if ball[1] == 0:
            self._previous_ball = None
            # Alternate serving with moving, so the paddle also recentres between balls.
            if geometry.serve_action is not None and self._steps % 2 == 0:
                return self._remember(geometry.serve_action)
            aim = (geometry.wall_low + geometry.wall_high) / 2
            return self._remember(self._closest_action(paddle, paddle_velocity, aim + geometry.aim_offset))

        aim = self._predict_crossing(ball)
        steps_to_contact = self._steps_to_contact(ball)
        self._previous_ball = ball
        action = self._closest_action(paddle, paddle_velocity, aim + geometry.aim_offset)
        if steps_to_contact is not None and steps_to_contact <= self.search.horizon:
            action = self.search.choose(env, default_action=action)
        return self._remember(action)

    def _steps_to_contact(self, ball: tuple[int, int]) -> Optional[float]:
        """Return the agent steps until the ball reaches the contact line, or None when it moves away."""
        if self._previous_ball is None:
            return None
        approach_velocity = ball[1] - self._previous_ball[1]
        if approach_velocity <= 0:
            return None
        return max(0.0, (self.geometry.contact_line - ball[1]) / approach_velocity)

    def _predict_crossing(self, ball: tuple[int, int]) -> float:
        """Return where the ball will cross the contact line, or its current position when it moves away."""
        along, approach = ball
        if self._previous_ball is None:
            return float(along)
        along_velocity = along - self._previous_ball[0]
        approach_velocity = approach - self._previous_ball[1]
        if approach_velocity <= 0:
            return float(along)
        crossing = along + along_velocity * (self.geometry.contact_line - approach) / approach_velocity
        return self._reflect(crossing)

    def _reflect(self, position: float) -> float:
        """Fold a straight-line position back between the walls, as the bounces do."""
        low, high = self.geometry.wall_low, self.geometry.wall_high
        span = high - low
        folded = (position - low) % (2 * span)
        if folded > span:
            folded = 2 * span - folded
        return low + folded

    def _closest_action(self, paddle: int, paddle_velocity: int, goal: float) -> int:
        geometry = self.geometry
        input_held = (self._previous_action == geometry.increase_action and paddle_velocity > 0) or (
            self._previous_action == geometry.decrease_action and paddle_velocity < 0
        )
        drift = self.DRIFT_WHILE_HELD if input_held else self.DRIFT_AFTER_RELEASE
        settled = paddle + drift * paddle_velocity
        distances = {
            0: abs(settled - goal),
            geometry.increase_action: abs(settled + self.PADDLE_STEP - goal),
            geometry.decrease_action: abs(settled - self.PADDLE_STEP - goal),
        }
        return min(distances, key=distances.get)

    def _remember(self, action: int) -> int:
        self._previous_action = action
        return action


class ContactSearch:
    """Choose the action for the last steps before the ball reaches the paddle by trying them on the emulator.

    Every sequence of `horizon` actions from {stay, increase, decrease} is played from a
    saved emulator state, followed by up to `extra_steps` no-ops, and scored by whether
    the paddle returns the ball and how steeply: a steep return is the shot that the
    built-in opponents miss. The state, random-number generator included, is restored
    afterwards, so the search does not change the game that follows, and each trial gets
    the same sticky-action draws as the real step.
    """

    def __init__(self, geometry: PaddleGeometry, horizon: int = 2, extra_steps: int = 3) -> None:
        if horizon < 1 or extra_steps < 0:
            raise ValueError(f"horizon must be positive and extra_steps non-negative, got {horizon} and {extra_steps}.")
        self.geometry = geometry
        self.horizon = horizon
        self.extra_steps = extra_steps

    def choose(self, env: gym.Env, default_action: int) -> int:
        """Return the first action of the best-scoring sequence, or `default_action` when none scores higher."""
        ale = env.unwrapped.ale
        action_set = ale.getMinimalActionSet()
        moves = (0, self.geometry.increase_action, self.geometry.decrease_action)
        # Trying the default first means that a tie keeps it.
        first_actions = (default_action,) + tuple(move for move in moves if move != default_action)
        start = ale.cloneState(include_rng=True)
        best_score, best_action = float("-inf"), default_action
        try:
            for first in first_actions:
                for rest in itertools.product(moves, repeat=self.horizon - 1):
                    ale.restoreState(start)
                    score = self._play(ale, action_set, (first, *rest))
                    if score > best_score:
                        best_score, best_action = score, first
        finally:
            ale.restoreState(start)
        return best_action

    def _play(self, ale: Any, action_set: Any, sequence: tuple[int, ...]) -> float:
        """Play `sequence` then no-ops; score 0 for a lost ball, 1 plus the return's steepness for a hit."""
        geometry = self.geometry
        ram = ale.getRAM()
        previous = (int(ram[geometry.ball_along]), int(ram[geometry.ball_approach]))
        for action in sequence + (0,) * self.extra_steps:
            reward = sum(ale.act(action_set[action]) for _ in range(FRAMES_PER_STEP))
            ram = ale.getRAM()
            ball = (int(ram[geometry.ball_along]), int(ram[geometry.ball_approach]))
            if reward < 0 or ball[1] == 0:
                return 0.0
            if ball[1] < previous[1]:
                return 1.0 + abs(ball[0] - previous[0]) / 100.0
            previous = ball
        # Neither hit nor miss within the trial: rank it between the two.
        return 0.5


class AtariAdapter(EmbodimentAdapter):
    """One Atari game, played from screen frames with the minimal action set."""

    domain = Domain.GAMES

    def __init__(self, game: AtariGame) -> None:
        self.game = game
        self.name = f"{SUITE}/{game.game}"
        self.action_space = DiscreteActionSpace(tuple(ACTION_MEANINGS[meaning] for meaning in game.action_meanings))
        self.max_episode_steps = game.max_episode_steps
        self.expert_success_rate = game.expert_success_rate
        self.success_rule = (
            f"The episode return is at least {game.return_threshold:g}, "
            f"{SUCCESS_SHARE_OF_EXPERT:.0%} of the scripted expert's mean return of {game.expert_mean_return:g}."
        )
        self.prompt = EmbodimentPrompt(
            agent=f"the player in the Atari 2600 game {game.game}: {game.controls}",
            action_space=f"one of {len(game.action_meanings)} discrete joystick actions: "
            + ", ".join(self.action_space.names),
            simulator=(
                f"the Arcade Learning Environment (ale-py) running the {game.game} ROM; each action is held for "
                f"{FRAMES_PER_STEP} frames and is replaced by the previous one with probability "
                f"{STICKY_ACTION_PROBABILITY} per frame"
            ),
            camera="the full 210x160 game screen, resized to a square frame",
        )

    def make_env(self, seed: int, image_size: int) -> gym.Env:
        import ale_py

        gym.register_envs(ale_py)
        env = gym.make(
            self.game.env_id,
            frameskip=FRAMES_PER_STEP,
            repeat_action_probability=STICKY_ACTION_PROBABILITY,
            full_action_space=False,
            max_episode_steps=self.game.max_episode_steps,
        )
        if self.game.points_to_win is not None:
            env = FirstToPoints(env, self.game.points_to_win, self.game.score_addresses)
        return ResizedScreen(env, image_size)

    def observe(self, env: gym.Env, raw_obs: Any, info: dict) -> Observation:
        return Observation(frames=[raw_obs], instruction=self.game.goal)

    def make_expert(self, env: gym.Env) -> ExpertPolicy:
        return PaddleExpert(self.game.geometry)

    def goal_reached(self, reward: float, terminated: bool, info: dict) -> bool:
        # These games have no goal state; is_success judges the return instead.
        return False

    def is_success(self, outcome: EpisodeOutcome) -> bool:
        return outcome.episode_return >= self.game.return_threshold


def _register() -> None:
    for game in GAMES:
        ADAPTERS.register(f"{SUITE}/{game.game}", lambda game=game: AtariAdapter(game))


_register()

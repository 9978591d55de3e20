"""Action-space descriptions that adapters declare and tokenizers read.

Three kinds exist. The agent-level action of each kind is what trajectories store,
tokenizers encode and policies emit:

- `ContinuousActionSpace`: a float32 vector of shape ``(dim,)`` inside ``[low, high]``.
- `DiscreteActionSpace`: an ``int`` index into `names`, each name written in language.
- `UIActionSpace`: a `UIAction` (click a cell of a coarse grid over the screenshot, or type text).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import ClassVar, Union

import numpy as np


class ActionKind(str, enum.Enum):
    CONTINUOUS = "continuous"
    DISCRETE = "discrete"
    UI = "ui"


@dataclass(frozen=True)
class ContinuousActionSpace:
    """A box of real-valued actions, such as end-effector deltas or joint torques."""

    low: tuple[float, ...]
    high: tuple[float, ...]
    kind: ClassVar[ActionKind] = ActionKind.CONTINUOUS

    def __post_init__(self) -> None:
        if len(self.low) != len(self.high) or not self.low:
            raise ValueError(f"low and high must be non-empty and of equal length, got {self.low} and {self.high}.")
        if any(lo >= hi for lo, hi in zip(self.low, self.high)):
            raise ValueError(f"Every low bound must be below its high bound, got low={self.low} high={self.high}.")

    @property
    def dim(self) -> int:
        return len(self.low)

    def validate(self, action: object) -> np.ndarray:
        """Return `action` as a float32 vector, raising if its shape or values are invalid."""
        array = np.asarray(action, dtype=np.float32)
        if array.shape != (self.dim,):
            raise ValueError(f"Expected a continuous action of shape ({self.dim},), got shape {array.shape}.")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"Continuous action contains non-finite values: {array}.")
        return array

    def clip(self, action: np.ndarray) -> np.ndarray:
        return np.clip(action, self.low, self.high).astype(np.float32)

    def perturb(self, action: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
        """Add Gaussian noise of standard deviation `scale` times each dimension's half-range, then clip."""
        half_range = (np.asarray(self.high) - np.asarray(self.low)) / 2.0
        return self.clip(np.asarray(action, dtype=np.float64) + rng.normal(0.0, scale, self.dim) * half_range)


@dataclass(frozen=True)
class DiscreteActionSpace:
    """A finite set of actions, each named in language ("turn left", "fire")."""

    names: tuple[str, ...]
    kind: ClassVar[ActionKind] = ActionKind.DISCRETE

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("A discrete action space needs at least one action name.")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"Discrete action names must be unique, got {self.names}.")

    @property
    def n(self) -> int:
        return len(self.names)

    def validate(self, action: object) -> int:
        if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)):
            raise ValueError(f"Expected an integer discrete action, got {action!r}.")
        if not 0 <= int(action) < self.n:
            raise ValueError(f"Discrete action {action} is outside [0, {self.n}).")
        return int(action)

    def perturb(self, action: int, scale: float, rng: np.random.Generator) -> int:
        """With probability `scale`, replace `action` by a uniformly drawn one (possibly the same)."""
        return int(rng.integers(self.n)) if rng.random() < scale else int(action)


CLICK = "click"
TYPE = "type"
_UI_TEXT_PATTERN = re.compile(r"^[\x20-\x7e]*$")


@dataclass(frozen=True)
class UIAction:
    """One UI step: a click on grid cell ``(x, y)`` or typing `text` into the focused element."""

    kind: str
    x: int = 0
    y: int = 0
    text: str = ""

    def to_record(self) -> dict:
        return {"kind": self.kind, "x": int(self.x), "y": int(self.y), "text": self.text}

    @classmethod
    def from_record(cls, record: dict) -> "UIAction":
        return cls(kind=str(record["kind"]), x=int(record["x"]), y=int(record["y"]), text=str(record["text"]))


@dataclass(frozen=True)
class UIActionSpace:
    """Clicks on a ``grid_width`` x ``grid_height`` grid laid over the screenshot, and typed text."""

    grid_width: int
    grid_height: int
    max_text_chars: int = 32
    kind: ClassVar[ActionKind] = ActionKind.UI

    def __post_init__(self) -> None:
        if self.grid_width < 1 or self.grid_height < 1:
            raise ValueError(f"Grid size must be positive, got {self.grid_width} x {self.grid_height}.")
        if self.max_text_chars < 1:
            raise ValueError(f"max_text_chars must be positive, got {self.max_text_chars}.")

    def validate(self, action: object) -> UIAction:
        if not isinstance(action, UIAction):
            raise ValueError(f"Expected a UIAction, got {action!r}.")
        if action.kind == CLICK:
            if not (0 <= action.x < self.grid_width and 0 <= action.y < self.grid_height):
                raise ValueError(
                    f"Click at ({action.x}, {action.y}) is outside the {self.grid_width} x {self.grid_height} grid."
                )
        elif action.kind == TYPE:
            if not 0 < len(action.text) <= self.max_text_chars or not _UI_TEXT_PATTERN.match(action.text):
                raise ValueError(
                    f"Typed text {action.text!r} must be 1 to {self.max_text_chars} printable ASCII characters."
                )
        else:
            raise ValueError(f"Unknown UI action kind {action.kind!r}; expected {CLICK!r} or {TYPE!r}.")
        return action

    def perturb(self, action: UIAction, scale: float, rng: np.random.Generator) -> UIAction:
        """With probability `scale`, replace `action` by a click on a uniformly drawn grid cell."""
        if rng.random() >= scale:
            return action
        return UIAction(CLICK, x=int(rng.integers(self.grid_width)), y=int(rng.integers(self.grid_height)))


ActionSpace = Union[ContinuousActionSpace, DiscreteActionSpace, UIActionSpace]
Action = Union[np.ndarray, int, UIAction]

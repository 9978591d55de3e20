"""A DOM oracle for MiniWoB++ tasks: read the page's elements, pick the next click or text to type.

The oracle reads miniwob's ``dom_elements`` (tag, text, value, box in page pixels, focus)
and ``fields`` (the task arguments parsed from the utterance, such as the button to
click). It is reactive: each step plans again from the current page, so a click that
did not take effect is retried instead of derailing a fixed plan.

Clicks go to the centre of a `ScreenGrid` cell. `choose_click_cell` picks the cell whose
centre lies inside the target, avoids other controls that overlap it, and prefers the
cell nearest the target's centre.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Union

logger = logging.getLogger(__name__)

# Keys of a miniwob 1.1.0 observation dict.
UTTERANCE_KEY = "utterance"
SCREENSHOT_KEY = "screenshot"
DOM_ELEMENTS_KEY = "dom_elements"
FIELDS_KEY = "fields"

# Index of each flag in a serialized element's ``flags`` array (miniwob.observation).
FOCUSED_FLAG = 0
IS_LEAF_FLAG = 3

TEXT_NODE_TAG = "t"
INPUT_TAG_PREFIX = "input_"
CHECKBOX_TAG = "input_checkbox"
TEXT_INPUT_TAG = "input_text"
BUTTON_TAG = "button"
# miniwob stores a checkbox's ``checked`` property as its value and serializes it with
# ``str(value or "")``: "True" when checked, "" when not.
CHECKED_VALUE = "True"


class OracleError(RuntimeError):
    """Raised when the page does not contain what a task's oracle needs."""


@dataclass(frozen=True)
class ScreenGrid:
    """A grid of square cells laid over the screenshot. A click lands on a cell's centre pixel.

    Attributes:
        cell_pixels: side of one cell in page pixels.
        columns: number of cells across.
        rows: number of cells down.
    """

    cell_pixels: int
    columns: int
    rows: int

    def __post_init__(self) -> None:
        for name in ("cell_pixels", "columns", "rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"ScreenGrid.{name} must be positive, got {getattr(self, name)}.")

    def click_point(self, x: int, y: int) -> tuple[int, int]:
        """Return the page pixel ``(left, top)`` at the centre of cell ``(x, y)``.

        Whole pixels, because WebDriver pointer moves are defined on integer coordinates.
        """
        if not (0 <= x < self.columns and 0 <= y < self.rows):
            raise ValueError(f"Cell ({x}, {y}) is outside the {self.columns} x {self.rows} grid.")
        half = self.cell_pixels // 2
        return x * self.cell_pixels + half, y * self.cell_pixels + half

    def cell_at(self, left: float, top: float) -> tuple[int, int]:
        """Return the cell that contains page pixel ``(left, top)``."""
        x = math.floor(left / self.cell_pixels)
        y = math.floor(top / self.cell_pixels)
        if not (0 <= x < self.columns and 0 <= y < self.rows):
            raise ValueError(
                f"Pixel ({left}, {top}) is outside the {self.columns * self.cell_pixels} x "
                f"{self.rows * self.cell_pixels} pixel screenshot."
            )
        return x, y


@dataclass(frozen=True)
class DomElement:
    """One element of a miniwob observation, with its box in page pixels.

    Text nodes are pseudo-elements with tag ``"t"`` and a negative `ref`. The root's
    `parent` is 0.
    """

    ref: int
    parent: int
    tag: str
    text: str
    value: str
    element_id: str
    classes: tuple[str, ...]
    left: float
    top: float
    width: float
    height: float
    focused: bool
    is_leaf: bool

    @classmethod
    def from_observation(cls, record: dict[str, Any]) -> "DomElement":
        flags = record["flags"]
        return cls(
            ref=int(record["ref"]),
            parent=int(record["parent"]),
            tag=str(record["tag"]),
            text=str(record["text"]),
            value=str(record["value"]),
            element_id=str(record["id"]),
            classes=tuple(str(record["classes"]).split()),
            left=float(record["left"][0]),
            top=float(record["top"][0]),
            width=float(record["width"][0]),
            height=float(record["height"][0]),
            focused=bool(flags[FOCUSED_FLAG]),
            is_leaf=bool(flags[IS_LEAF_FLAG]),
        )

    @property
    def center(self) -> tuple[float, float]:
        return self.left + self.width / 2, self.top + self.height / 2

    @property
    def is_control(self) -> bool:
        """Whether clicking this element runs a handler of its own (buttons, inputs, links)."""
        return self.tag in (BUTTON_TAG, "a") or self.tag.startswith(INPUT_TAG_PREFIX) or "alink" in self.classes

    def contains(self, left: float, top: float) -> bool:
        return self.left <= left < self.left + self.width and self.top <= top < self.top + self.height


@dataclass(frozen=True)
class Page:
    """The elements and task fields of one miniwob observation."""

    utterance: str
    elements: tuple[DomElement, ...]
    fields: dict[str, str]

    @classmethod
    def from_observation(cls, raw_obs: dict[str, Any]) -> "Page":
        return cls(
            utterance=str(raw_obs[UTTERANCE_KEY]),
            elements=tuple(DomElement.from_observation(record) for record in raw_obs[DOM_ELEMENTS_KEY]),
            fields={str(key): str(value) for key, value in raw_obs[FIELDS_KEY]},
        )

    def field(self, key: str) -> str:
        if key not in self.fields:
            raise OracleError(f"Utterance {self.utterance!r} has no field {key!r}. Its fields are {self.fields}.")
        return self.fields[key]

    def find_all(self, predicate: Callable[[DomElement], bool]) -> list[DomElement]:
        return [element for element in self.elements if predicate(element)]

    def find(self, predicate: Callable[[DomElement], bool], description: str) -> DomElement:
        """Return the first element matching `predicate`, or raise `OracleError` naming `description`."""
        for element in self.elements:
            if predicate(element):
                return element
        raise OracleError(f"No {description} on the page for utterance {self.utterance!r}.")

    def children(self, element: DomElement) -> list[DomElement]:
        return [child for child in self.elements if child.parent == element.ref]

    def is_descendant(self, element: DomElement, ancestor: DomElement) -> bool:
        parents = {candidate.ref: candidate.parent for candidate in self.elements}
        ref = element.parent
        while ref:
            if ref == ancestor.ref:
                return True
            ref = parents.get(ref, 0)
        return False


@dataclass(frozen=True)
class ClickElement:
    """Oracle step: click inside `element`."""

    element: DomElement


@dataclass(frozen=True)
class TypeText:
    """Oracle step: type `text` into the focused element."""

    text: str


PlannedStep = Union[ClickElement, TypeText]
TaskPlanner = Callable[[Page], PlannedStep]


def _cells_inside(grid: ScreenGrid, element: DomElement) -> Iterator[tuple[int, int]]:
    """Yield the cells whose click point lies inside `element`'s box."""
    first_x = max(0, math.floor(element.left / grid.cell_pixels))
    last_x = min(grid.columns - 1, math.floor((element.left + element.width) / grid.cell_pixels))
    first_y = max(0, math.floor(element.top / grid.cell_pixels))
    last_y = min(grid.rows - 1, math.floor((element.top + element.height) / grid.cell_pixels))
    for y in range(first_y, last_y + 1):
        for x in range(first_x, last_x + 1):
            if element.contains(*grid.click_point(x, y)):
                yield x, y


def choose_click_cell(grid: ScreenGrid, page: Page, target: DomElement) -> tuple[int, int]:
    """Return the grid cell to click so that the click lands on `target`.

    Only cells whose click point lies inside `target` qualify. Of those, cells whose click
    point also lies inside another control are skipped, because that control may be drawn
    on top and take the click. Controls inside `target` do not count, since their clicks
    reach `target` too. The cell nearest `target`'s centre wins.
    """
    inside = list(_cells_inside(grid, target))
    if not inside:
        # NOTE: only a target narrower or shorter than one cell, or off screen, gets here,
        # so the click lands near it and may miss.
        logger.warning(
            "No grid cell centre lies inside %s %r. Clicking the cell at its centre.", target.tag, target.text
        )
        center_x, center_y = target.center
        return grid.cell_at(
            min(max(center_x, 0), grid.columns * grid.cell_pixels - 1),
            min(max(center_y, 0), grid.rows * grid.cell_pixels - 1),
        )

    rivals = [
        element
        for element in page.elements
        if element.is_control and element.ref != target.ref and not page.is_descendant(element, target)
    ]
    clear = [cell for cell in inside if not any(rival.contains(*grid.click_point(*cell)) for rival in rivals)]
    # A target that other controls cover completely still gets a click, which may miss.
    candidates = clear or inside
    center_x, center_y = target.center

    def distance_to_center(cell: tuple[int, int]) -> float:
        left, top = grid.click_point(*cell)
        return (left - center_x) ** 2 + (top - center_y) ** 2

    return min(candidates, key=distance_to_center)


def _submit_button(page: Page) -> DomElement:
    return page.find(lambda element: element.tag == BUTTON_TAG and element.element_id == "subbtn", "Submit button")


def plan_click_named_button(page: Page) -> PlannedStep:
    """Plan a click on the button whose text is the ``target`` field (click-button, click-test-2)."""
    target = page.field("target")
    return ClickElement(
        page.find(lambda element: element.tag == BUTTON_TAG and element.text == target, f"button {target!r}")
    )


def plan_click_only_button(page: Page) -> PlannedStep:
    """Plan a click on the page's only button (click-test)."""
    return ClickElement(page.find(lambda element: element.tag == BUTTON_TAG, "button"))


def plan_click_link(page: Page) -> PlannedStep:
    """Plan a click on the link (a ``span.alink``) whose text is the ``target`` field (click-link)."""
    target = page.field("target")
    return ClickElement(
        page.find(lambda element: "alink" in element.classes and element.text == target, f"link {target!r}")
    )


def plan_click_dialog(page: Page) -> PlannedStep:
    """Plan a click on the dialog's close button, the "x" in its title bar (click-dialog)."""
    return ClickElement(
        page.find(
            lambda element: element.tag == BUTTON_TAG and "ui-dialog-titlebar-close" in element.classes,
            "dialog close button",
        )
    )


def _checkbox_label(page: Page, checkbox: DomElement) -> str:
    """Return the text beside `checkbox`: the text node that shares its ``<label>``."""
    siblings = [element for element in page.elements if element.parent == checkbox.parent]
    texts = [element.text for element in siblings if element.tag == TEXT_NODE_TAG]
    if len(texts) != 1:
        raise OracleError(f"Checkbox {checkbox.element_id!r} has {len(texts)} text labels, expected 1: {texts}.")
    return texts[0]


def plan_click_checkboxes(page: Page) -> PlannedStep:
    """Plan a click on the first checkbox in the wrong state, or on Submit once none is (click-checkboxes).

    The ``target <i>`` fields name the boxes to check. Every other box must stay unchecked.
    """
    labels_to_check = {value for key, value in page.fields.items() if key.startswith("target ")}
    for checkbox in page.find_all(lambda element: element.tag == CHECKBOX_TAG):
        should_be_checked = _checkbox_label(page, checkbox) in labels_to_check
        if (checkbox.value == CHECKED_VALUE) != should_be_checked:
            return ClickElement(checkbox)
    return ClickElement(_submit_button(page))


def plan_focus_text(page: Page) -> PlannedStep:
    """Plan a click on the text box, which focuses it (focus-text)."""
    return ClickElement(page.find(lambda element: element.tag == TEXT_INPUT_TAG, "text box"))


def plan_enter_text(page: Page) -> PlannedStep:
    """Plan the next of: focus the text box, type the ``target`` field, click Submit (enter-text)."""
    target = page.field("target")
    text_box = page.find(lambda element: element.tag == TEXT_INPUT_TAG, "text box")
    if text_box.value == target:
        return ClickElement(_submit_button(page))
    if not text_box.focused:
        return ClickElement(text_box)
    if text_box.value:
        # NOTE: the UI action space has no key to erase text, so wrong text in the box
        # cannot be fixed, and submitting it ends the episode as a failure.
        logger.warning("Text box contains %r instead of %r and cannot be cleared. Submitting.", text_box.value, target)
        return ClickElement(_submit_button(page))
    return TypeText(target)

"""Semantic action tokens: discrete and UI actions written as short phrases in the LLM's own vocabulary.

A discrete action is its language name from `DiscreteActionSpace.names` ("turn left").
A UI action is ``click X Y`` with integer grid coordinates or ``type TEXT``. Each phrase
is tokenized with the policy's tokenizer and followed by the tokenizer's end-of-sequence
id, which marks the end of the action. Parsing never guesses: text or ids that are not
exactly one valid phrase give a `DecodedAction` with ``valid=False`` and the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Hashable, Optional, Sequence

from transformers import PreTrainedTokenizerBase

from gea_envs.spaces import CLICK, TYPE, Action, DiscreteActionSpace, UIAction, UIActionSpace
from gea_tokenizers.constraint import CharacterAutomaton, TextGrammarConstraint, TrieConstraint, find_violation

_PRINTABLE_ASCII = frozenset(chr(code) for code in range(0x20, 0x7F))
_DIGITS = frozenset("0123456789")


@dataclass(frozen=True)
class DecodedAction:
    """The result of turning tokens or text back into an action.

    Attributes:
        action: the decoded action, or the documented fallback action when `valid` is False.
        valid: whether the input was exactly one well-formed action.
        reason: why the input was invalid; empty when `valid` is True.
    """

    action: Action
    valid: bool
    reason: str = ""


def end_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """Return the tokenizer's end-of-sequence id, which ends every semantic action."""
    if tokenizer.eos_token_id is None:
        raise ValueError(
            f"Tokenizer {type(tokenizer).__name__} has no eos token; set tokenizer.eos_token before building "
            "action codecs, because the eos id marks the end of every action."
        )
    return int(tokenizer.eos_token_id)


def printable_token_texts(tokenizer: PreTrainedTokenizerBase) -> dict[int, str]:
    """Return the decoded text of every non-special token id made only of printable ASCII.

    NOTE: decoding ids one at a time matches decoding them together for byte-level BPE
    tokenizers (GPT-2, Qwen2, LLaVA-OneVision). SentencePiece tokenizers drop a leading
    space when decoding one id, so `tokenize_phrase` rejects them.
    """
    special = set(tokenizer.all_special_ids)
    ids = [token_id for token_id in range(len(tokenizer)) if token_id not in special]
    texts = tokenizer.batch_decode([[token_id] for token_id in ids], clean_up_tokenization_spaces=False)
    return {
        token_id: text
        for token_id, text in zip(ids, texts)
        if text and all(char in _PRINTABLE_ASCII for char in text)
    }


def tokenize_phrase(tokenizer: PreTrainedTokenizerBase, phrase: str, token_texts: dict[int, str]) -> list[int]:
    """Tokenize `phrase` without special tokens, checking that its token texts concatenate to it."""
    ids = tokenizer.encode(phrase, add_special_tokens=False)
    rebuilt = "".join(token_texts.get(token_id, "\0") for token_id in ids)
    if rebuilt != phrase:
        raise ValueError(
            f"Tokenizer {type(tokenizer).__name__} splits {phrase!r} into ids {ids} whose decoded texts give "
            f"{rebuilt!r}; action phrases need a tokenizer whose tokens decode one by one to printable ASCII "
            "(a byte-level BPE tokenizer)."
        )
    return ids


class DiscreteActionCodec:
    """Encodes a discrete action index as its name's tokens plus the end token, and back."""

    def __init__(
        self, space: DiscreteActionSpace, tokenizer: PreTrainedTokenizerBase, token_texts: dict[int, str]
    ) -> None:
        self.space = space
        self.end_token_id = end_token_id(tokenizer)
        self._sequences = [tokenize_phrase(tokenizer, name, token_texts) + [self.end_token_id] for name in space.names]
        self._index_of = {tuple(sequence): index for index, sequence in enumerate(self._sequences)}
        if len(self._index_of) != len(self._sequences):
            raise ValueError(f"Two action names of {space.names} tokenize to the same ids.")
        self.constraint = TrieConstraint(self._sequences)

    @property
    def phrase_token_ids(self) -> set[int]:
        """Every id that some action's phrase uses, including the end token."""
        return {token_id for sequence in self._sequences for token_id in sequence}

    def encode(self, action: Action) -> list[int]:
        return list(self._sequences[self.space.validate(action)])

    def decode(self, token_ids: Sequence[int], fallback: int) -> DecodedAction:
        """Decode one action's ids; invalid ids give `fallback` with the reason."""
        violation = find_violation(self.constraint, token_ids)
        if violation is not None:
            return DecodedAction(fallback, False, violation)
        return DecodedAction(self._index_of[tuple(int(token_id) for token_id in token_ids)], True)

    def parse_text(self, text: str, fallback: int) -> DecodedAction:
        """Parse an exact, case-sensitive action name; surrounding whitespace is ignored."""
        name = text.strip()
        if name in self.space.names:
            return DecodedAction(self.space.names.index(name), True)
        return DecodedAction(fallback, False, f"{name!r} is not one of the action names {list(self.space.names)}")


class UIAutomaton(CharacterAutomaton):
    """Accepts ``click X Y`` (decimal, no leading zeros, inside the grid) and ``type TEXT``.

    TEXT is 1 to ``max_text_chars`` printable ASCII characters. Every state it returns
    can still reach an accepted text, so a constrained decoder never gets stuck.
    """

    def __init__(self, space: UIActionSpace) -> None:
        self._space = space
        self._keywords = (f"{CLICK} ", f"{TYPE} ")

    @property
    def start(self) -> Hashable:
        return ("keyword", "")

    @property
    def max_chars(self) -> int:
        click_chars = len(self._keywords[0]) + len(str(self._space.grid_width - 1)) + 1
        click_chars += len(str(self._space.grid_height - 1))
        return max(click_chars, len(self._keywords[1]) + self._space.max_text_chars)

    def step(self, state: Hashable, char: str) -> Optional[Hashable]:
        phase, value = state
        if phase == "keyword":
            read = value + char
            if read == self._keywords[0]:
                return ("x", "")
            if read == self._keywords[1]:
                return ("text", 0)
            return ("keyword", read) if any(keyword.startswith(read) for keyword in self._keywords) else None
        if phase == "text":
            return ("text", value + 1) if char in _PRINTABLE_ASCII and value < self._space.max_text_chars else None
        limit = self._space.grid_width if phase == "x" else self._space.grid_height
        if char in _DIGITS:
            digits = value + char
            if value == "0" or int(digits) >= limit:
                return None
            return (phase, digits)
        if char == " " and phase == "x" and value:
            return ("y", "")
        return None

    def accepts(self, state: Hashable) -> bool:
        phase, value = state
        return (phase == "y" and value != "") or (phase == "text" and value >= 1)


_CLICK_PATTERN = re.compile(rf"^{CLICK} (0|[1-9][0-9]*) (0|[1-9][0-9]*)$")
_TYPE_PATTERN = re.compile(rf"^{TYPE} (.+)$", re.DOTALL)


class UIActionCodec:
    """Encodes a `UIAction` as ``click X Y`` or ``type TEXT`` tokens plus the end token, and back.

    The constraint accepts any tokenization of a valid phrase, while `encode` produces
    the tokenizer's own tokenization.
    """

    def __init__(self, space: UIActionSpace, tokenizer: PreTrainedTokenizerBase, token_texts: dict[int, str]) -> None:
        self.space = space
        self.end_token_id = end_token_id(tokenizer)
        self._tokenizer = tokenizer
        self._token_texts = token_texts
        self.constraint = TextGrammarConstraint(UIAutomaton(space), token_texts, self.end_token_id)

    @property
    def phrase_token_ids(self) -> set[int]:
        """Ids of the keywords, digits and separators of UI phrases, and the end token.

        Typed text may use any printable-ASCII token, which this set leaves out.
        """
        phrases = [f"{CLICK} 0123456789", f"{TYPE} ", " 0 1 2 3 4 5 6 7 8 9"]
        ids = {self.end_token_id}
        for phrase in phrases:
            ids.update(self._tokenizer.encode(phrase, add_special_tokens=False))
        return ids

    @staticmethod
    def phrase(action: UIAction) -> str:
        return f"{CLICK} {action.x} {action.y}" if action.kind == CLICK else f"{TYPE} {action.text}"

    def encode(self, action: Action) -> list[int]:
        action = self.space.validate(action)
        return tokenize_phrase(self._tokenizer, self.phrase(action), self._token_texts) + [self.end_token_id]

    def decode(self, token_ids: Sequence[int], fallback: UIAction) -> DecodedAction:
        """Decode one action's ids; invalid ids give `fallback` with the reason."""
        violation = find_violation(self.constraint, token_ids)
        if violation is not None:
            return DecodedAction(fallback, False, violation)
        return self.parse_text(self.constraint.text_of(list(token_ids)[:-1]), fallback)

    def parse_text(self, text: str, fallback: UIAction) -> DecodedAction:
        """Parse exactly ``click X Y`` or ``type TEXT``; nothing else is accepted."""
        click = _CLICK_PATTERN.match(text)
        if click is not None:
            x, y = int(click.group(1)), int(click.group(2))
            if not (x < self.space.grid_width and y < self.space.grid_height):
                return DecodedAction(
                    fallback,
                    False,
                    f"click at ({x}, {y}) is outside the {self.space.grid_width} x {self.space.grid_height} grid",
                )
            return DecodedAction(UIAction(CLICK, x=x, y=y), True)
        typed = _TYPE_PATTERN.match(text)
        if typed is not None:
            action = UIAction(TYPE, text=typed.group(1))
            try:
                return DecodedAction(self.space.validate(action), True)
            except ValueError as error:
                return DecodedAction(fallback, False, str(error))
        return DecodedAction(
            fallback, False, f"{text!r} is neither '{CLICK} X Y' with integer X and Y nor '{TYPE} TEXT'"
        )

"""Prefix constraints: which token ids may follow a partial action during decoding.

The policy requests the allowed ids from a `PrefixConstraint` at every generation step and
masks all other logits, so every finished sequence is a well-formed action of its
embodiment. Three implementations cover the action kinds:

- `FixedLengthConstraint`: one allowed id set per position (continuous actions as VQ codes).
- `TrieConstraint`: a finite set of id sequences (discrete actions named in language).
- `TextGrammarConstraint`: any tokenization of a text accepted by a character automaton,
  followed by an end token (UI actions such as ``click 3 7`` or ``type hello``).
"""

from __future__ import annotations

import abc
import functools
from dataclasses import dataclass, field
from typing import Hashable, Iterable, Mapping, Optional, Protocol, Sequence, runtime_checkable


@runtime_checkable
class PrefixConstraint(Protocol):
    """The token grammar of one embodiment's actions.

    Attributes:
        max_length: maximum number of tokens in one complete action.
    """

    max_length: int

    def allowed_next(self, prefix: Sequence[int]) -> list[int]:
        """Return the ids allowed after `prefix`, sorted ascending.

        The list is empty if and only if `prefix` is a complete action. A prefix that no
        valid action starts with raises ValueError.
        """
        ...

    def is_complete(self, prefix: Sequence[int]) -> bool:
        """Return whether `prefix` is a complete action."""
        ...


def find_violation(constraint: PrefixConstraint, token_ids: Sequence[int]) -> Optional[str]:
    """Return why `token_ids` is not one complete action under `constraint`, or None if it is."""
    ids = [int(token_id) for token_id in token_ids]
    for position, token_id in enumerate(ids):
        try:
            allowed = constraint.allowed_next(ids[:position])
        except ValueError as error:
            return str(error)
        if not allowed:
            return f"the action is complete after {position} tokens but {len(ids)} were given"
        if token_id not in allowed:
            return f"token id {token_id} at position {position} is not allowed there"
    if not constraint.is_complete(ids):
        return f"the action is incomplete after {len(ids)} tokens"
    return None


class FixedLengthConstraint:
    """Sequences of exactly ``len(allowed_per_position)`` tokens, each from its position's set."""

    def __init__(self, allowed_per_position: Sequence[Iterable[int]]) -> None:
        if not allowed_per_position:
            raise ValueError("FixedLengthConstraint needs at least one position.")
        self._allowed = [sorted({int(token_id) for token_id in ids}) for ids in allowed_per_position]
        self._allowed_sets = [frozenset(ids) for ids in self._allowed]
        for position, ids in enumerate(self._allowed):
            if not ids:
                raise ValueError(f"Position {position} of a FixedLengthConstraint has no allowed ids.")
        self.max_length = len(self._allowed)

    def allowed_next(self, prefix: Sequence[int]) -> list[int]:
        self._validate_prefix(prefix)
        if len(prefix) == self.max_length:
            return []
        return list(self._allowed[len(prefix)])

    def is_complete(self, prefix: Sequence[int]) -> bool:
        self._validate_prefix(prefix)
        return len(prefix) == self.max_length

    def _validate_prefix(self, prefix: Sequence[int]) -> None:
        if len(prefix) > self.max_length:
            raise ValueError(f"Prefix of {len(prefix)} tokens is longer than the action length {self.max_length}.")
        for position, token_id in enumerate(prefix):
            if int(token_id) not in self._allowed_sets[position]:
                raise ValueError(f"Token id {token_id} is not allowed at position {position}.")


@dataclass
class _TrieNode:
    children: dict[int, "_TrieNode"] = field(default_factory=dict)
    terminal: bool = False


class TrieConstraint:
    """A finite set of id sequences, none of which may be a proper prefix of another.

    Prefix-freeness keeps "complete" unambiguous: a finished sequence allows no more ids.
    Sequences ending in an end token are prefix-free by construction.
    """

    def __init__(self, sequences: Iterable[Sequence[int]]) -> None:
        self._root = _TrieNode()
        self.max_length = 0
        count = 0
        for sequence in sequences:
            self._insert([int(token_id) for token_id in sequence])
            self.max_length = max(self.max_length, len(sequence))
            count += 1
        if count == 0:
            raise ValueError("TrieConstraint needs at least one sequence.")

    def _insert(self, sequence: list[int]) -> None:
        if not sequence:
            raise ValueError("TrieConstraint sequences must be non-empty.")
        node = self._root
        for position, token_id in enumerate(sequence):
            if node.terminal:
                raise ValueError(f"Sequence {sequence} extends the complete sequence {sequence[:position]}.")
            node = node.children.setdefault(token_id, _TrieNode())
        if node.children or node.terminal:
            raise ValueError(f"Sequence {sequence} is a duplicate or a prefix of another sequence.")
        node.terminal = True

    def _walk(self, prefix: Sequence[int]) -> _TrieNode:
        node = self._root
        for position, token_id in enumerate(prefix):
            child = node.children.get(int(token_id))
            if child is None:
                raise ValueError(f"Token id {token_id} at position {position} does not continue any valid action.")
            node = child
        return node

    def allowed_next(self, prefix: Sequence[int]) -> list[int]:
        return sorted(self._walk(prefix).children)

    def is_complete(self, prefix: Sequence[int]) -> bool:
        return self._walk(prefix).terminal


class CharacterAutomaton(abc.ABC):
    """A deterministic automaton over characters; `TextGrammarConstraint` runs it on token texts.

    States must be hashable because allowed-id sets are cached per state.
    """

    @property
    @abc.abstractmethod
    def start(self) -> Hashable:
        """The state before any character."""

    @abc.abstractmethod
    def step(self, state: Hashable, char: str) -> Optional[Hashable]:
        """Return the state after `char`, or None if no accepted text continues with it."""

    @abc.abstractmethod
    def accepts(self, state: Hashable) -> bool:
        """Return whether the text read so far is a complete action."""

    @property
    @abc.abstractmethod
    def max_chars(self) -> int:
        """The maximum number of characters of an accepted text."""


@dataclass
class _CharTrieNode:
    children: dict[str, "_CharTrieNode"] = field(default_factory=dict)
    token_ids: list[int] = field(default_factory=list)


class TextGrammarConstraint:
    """Any token sequence whose texts concatenate to an accepted text, then `end_token_id`.

    Allowing every tokenization (not only the tokenizer's canonical one) means a policy
    that spells ``12`` as ``1``, ``2`` still produces a valid action. Allowed sets are
    found by walking a character trie of all token texts in step with the automaton,
    and cached per automaton state.

    Args:
        automaton: the accepted texts.
        token_texts: the text of each usable token id; ids with empty text are ignored
            because they would let a sequence grow without bound.
        end_token_id: the id that ends an action; it must not be in `token_texts`.
    """

    def __init__(self, automaton: CharacterAutomaton, token_texts: Mapping[int, str], end_token_id: int) -> None:
        if end_token_id in token_texts:
            raise ValueError(f"The end token id {end_token_id} must not also be a text token.")
        self._automaton = automaton
        self._end_token_id = int(end_token_id)
        self._token_texts = {int(token_id): text for token_id, text in token_texts.items() if text}
        self._trie = _CharTrieNode()
        for token_id, text in self._token_texts.items():
            node = self._trie
            for char in text:
                node = node.children.setdefault(char, _CharTrieNode())
            node.token_ids.append(token_id)
        # Worst case: one character per token, then the end token.
        self.max_length = automaton.max_chars + 1
        self._allowed_for_state = functools.lru_cache(maxsize=4096)(self._compute_allowed)

    def text_of(self, token_ids: Sequence[int]) -> str:
        """Concatenate the texts of `token_ids`, which must all be text tokens."""
        try:
            return "".join(self._token_texts[int(token_id)] for token_id in token_ids)
        except KeyError as error:
            raise ValueError(f"Token id {error.args[0]} is not a text token of this grammar.") from None

    def _run(self, prefix: Sequence[int]) -> tuple[Hashable, bool]:
        """Return the automaton state after `prefix` and whether the end token was read."""
        state = self._automaton.start
        for position, token_id in enumerate(prefix):
            token_id = int(token_id)
            if token_id == self._end_token_id:
                if position != len(prefix) - 1:
                    raise ValueError(f"Tokens follow the end token at position {position}.")
                if not self._automaton.accepts(state):
                    raise ValueError(f"The end token at position {position} follows an incomplete action.")
                return state, True
            text = self._token_texts.get(token_id)
            if text is None:
                raise ValueError(f"Token id {token_id} at position {position} is not allowed in this grammar.")
            for char in text:
                state = self._automaton.step(state, char)
                if state is None:
                    raise ValueError(
                        f"Token id {token_id} ({text!r}) at position {position} does not continue any valid action."
                    )
        return state, False

    def _compute_allowed(self, state: Hashable) -> tuple[int, ...]:
        allowed: list[int] = []
        pending = [(self._trie, state)]
        while pending:
            node, node_state = pending.pop()
            for char, child in node.children.items():
                child_state = self._automaton.step(node_state, char)
                if child_state is None:
                    continue
                allowed.extend(child.token_ids)
                pending.append((child, child_state))
        if self._automaton.accepts(state):
            allowed.append(self._end_token_id)
        return tuple(sorted(allowed))

    def allowed_next(self, prefix: Sequence[int]) -> list[int]:
        state, ended = self._run(prefix)
        if ended:
            return []
        return list(self._allowed_for_state(state))

    def is_complete(self, prefix: Sequence[int]) -> bool:
        return self._run(prefix)[1]

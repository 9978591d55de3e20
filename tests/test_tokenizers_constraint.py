"""Unit tests of the prefix constraints on hand-built token tables."""

from __future__ import annotations

import pytest

from gea_envs.spaces import UIActionSpace
from gea_tokenizers.constraint import (
    FixedLengthConstraint,
    PrefixConstraint,
    TextGrammarConstraint,
    TrieConstraint,
    find_violation,
)
from gea_tokenizers.semantic import UIAutomaton

END = 99
# Characters as single tokens plus a few multi-character tokens, like a small BPE vocabulary.
TOKEN_TEXTS = {index: char for index, char in enumerate("abcdefghijklmnopqrstuvwxyz0123456789 ")}
TOKEN_TEXTS.update({50: "click", 51: "type", 52: " 1", 53: "10", 54: "hello"})
CHAR_ID = {text: token_id for token_id, text in TOKEN_TEXTS.items()}


def ids_of(*pieces: str) -> list[int]:
    return [CHAR_ID[piece] for piece in pieces]


def test_fixed_length_allowed_and_complete():
    constraint = FixedLengthConstraint([[5, 3], [7]])
    assert isinstance(constraint, PrefixConstraint)
    assert constraint.max_length == 2
    assert constraint.allowed_next([]) == [3, 5]
    assert constraint.allowed_next([5]) == [7]
    assert constraint.allowed_next([5, 7]) == []
    assert constraint.is_complete([5, 7])
    assert not constraint.is_complete([5])


def test_fixed_length_rejects_bad_prefix():
    constraint = FixedLengthConstraint([[5, 3], [7]])
    with pytest.raises(ValueError, match="not allowed at position 1"):
        constraint.allowed_next([5, 5])
    with pytest.raises(ValueError, match="longer than the action length"):
        constraint.allowed_next([5, 7, 7])
    with pytest.raises(ValueError, match="no allowed ids"):
        FixedLengthConstraint([[1], []])


def test_trie_walks_sequences():
    constraint = TrieConstraint([[1, 2, END], [1, 3, END], [4, END]])
    assert constraint.max_length == 3
    assert constraint.allowed_next([]) == [1, 4]
    assert constraint.allowed_next([1]) == [2, 3]
    assert constraint.allowed_next([4]) == [END]
    assert constraint.allowed_next([4, END]) == []
    assert constraint.is_complete([1, 3, END])
    assert not constraint.is_complete([1, 3])
    with pytest.raises(ValueError, match="does not continue any valid action"):
        constraint.allowed_next([2])


def test_trie_rejects_prefix_sequences():
    with pytest.raises(ValueError, match="prefix"):
        TrieConstraint([[1, 2], [1]])
    with pytest.raises(ValueError, match="extends the complete sequence"):
        TrieConstraint([[1], [1, 2]])
    with pytest.raises(ValueError, match="duplicate"):
        TrieConstraint([[1, 2], [1, 2]])


def make_ui_constraint(width: int = 12, height: int = 5, max_chars: int = 6) -> TextGrammarConstraint:
    return TextGrammarConstraint(UIAutomaton(UIActionSpace(width, height, max_chars)), TOKEN_TEXTS, END)


def test_grammar_click_digits_respect_grid():
    constraint = make_ui_constraint(width=12, height=5)
    after_click = constraint.allowed_next([50, CHAR_ID[" "]])
    assert CHAR_ID["0"] in after_click
    assert 53 in after_click  # "10" < 12
    assert END not in after_click
    after_one = constraint.allowed_next([50, 52])  # "click 1"
    assert set(after_one) == {CHAR_ID["0"], CHAR_ID["1"], CHAR_ID[" "], 52}  # 52 is " 1", a valid y
    after_zero = constraint.allowed_next([50] + ids_of(" ", "0"))
    assert after_zero == [CHAR_ID[" "], 52]  # no leading zeros, so no digit may follow "0"
    after_y = constraint.allowed_next([50] + ids_of(" ", "3", " ", "4"))
    assert after_y == [END]  # "4" then any digit would leave the 5-row grid


def test_grammar_accepts_any_tokenization():
    constraint = make_ui_constraint()
    canonical = [50, 52, CHAR_ID[" "], CHAR_ID["2"], END]  # "click" " 1" " " "2"
    spelled = ids_of("c", "l", "i", "c", "k", " ", "1", " ", "2") + [END]
    assert find_violation(constraint, canonical) is None
    assert find_violation(constraint, spelled) is None
    assert constraint.text_of(canonical[:-1]) == constraint.text_of(spelled[:-1]) == "click 1 2"


def test_grammar_type_text_length_limit():
    constraint = make_ui_constraint(max_chars=6)
    typed = [51, CHAR_ID[" "], 54]  # "type hello"
    assert END in constraint.allowed_next(typed)
    assert 54 not in constraint.allowed_next(typed)  # 10 characters > 6
    full = typed + [CHAR_ID["x"]]
    assert constraint.allowed_next(full) == [END]
    assert constraint.max_length == len("type ") + 6 + 1


def test_grammar_rejects_bad_sequences():
    constraint = make_ui_constraint()
    assert "position 0 is not allowed" in find_violation(constraint, ids_of("x") + [END])
    assert "position 3 is not allowed" in find_violation(constraint, [50, CHAR_ID[" "], CHAR_ID["1"], END])
    assert "incomplete" in find_violation(constraint, [51, CHAR_ID[" "]])
    assert "complete after" in find_violation(constraint, [51, CHAR_ID[" "], CHAR_ID["a"], END, END])
    with pytest.raises(ValueError, match="not allowed in this grammar"):
        constraint.allowed_next([1234])


def test_grammar_every_allowed_state_can_finish():
    """Greedy walks that always take the lowest allowed id must end within max_length."""
    constraint = make_ui_constraint()
    for first in constraint.allowed_next([]):
        prefix = [first]
        while constraint.allowed_next(prefix):
            prefix.append(constraint.allowed_next(prefix)[-1])
            assert len(prefix) <= constraint.max_length
        assert constraint.is_complete(prefix)

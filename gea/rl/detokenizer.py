"""Turn the policy's action token ids back into agent-level actions inside the RL environment.

RLlib's env runners hand the environment the token ids the module sampled. The
environment calls an `ActionDetokenizer` to decode them and then the adapter's
`to_env_action`, so the simulator receives only simulator actions and the module
emits only token ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from gea_envs.spaces import Action

if TYPE_CHECKING:
    from gea_tokenizers import ActionDetokenizer as PolicyActionDetokenizer
    from gea_tokenizers.continuous import ContinuousTokenizer


@dataclass(frozen=True)
class DecodedAction:
    """The result of decoding one token sequence.

    Attributes:
        action: the agent-level action to execute, or None when the tokens could not be
            turned into any action; the environment then skips the simulator step.
        valid: whether the tokens formed a well-formed action of the embodiment. An
            invalid sequence may still carry a repaired `action`.
        reason: why the tokens were invalid; empty when `valid`.
    """

    action: Optional[Action]
    valid: bool
    reason: str = ""

    def __post_init__(self) -> None:
        if self.valid and self.action is None:
            raise ValueError("A valid DecodedAction needs an action; set valid=False with a reason instead.")
        if not self.valid and not self.reason:
            raise ValueError("An invalid DecodedAction needs a reason that names the bad tokens.")


@runtime_checkable
class ActionDetokenizer(Protocol):
    """Decodes token-id sequences of every embodiment in a run.

    Attributes:
        vocab_size: token ids lie in ``[0, vocab_size)``; the RL action space is
            ``MultiDiscrete([vocab_size] * max_action_tokens)``.
        max_action_tokens: maximum number of tokens in one action of any embodiment.
        pad_token_id: fills the positions after the last token of a shorter action.
    """

    vocab_size: int
    max_action_tokens: int
    pad_token_id: int

    def decode(self, embodiment: str, token_ids: Sequence[int]) -> DecodedAction:
        """Decode `token_ids` (trailing padding already removed) for `embodiment`."""
        ...


def strip_padding(token_ids: Sequence[int], pad_token_id: int) -> list[int]:
    """Return `token_ids` without the trailing run of `pad_token_id`."""
    ids = [int(token_id) for token_id in token_ids]
    end = len(ids)
    while end > 0 and ids[end - 1] == pad_token_id:
        end -= 1
    return ids[:end]


class ContinuousCodeDetokenizer:
    """Decodes continuous actions from token ids ``first_code_id + code`` of a `ContinuousTokenizer`.

    A policy that adds the tokenizer's ``num_codes`` codes to its vocabulary as one
    contiguous id range starting at `first_code_id` emits these ids. Sequences of the
    wrong length or with ids outside the range are repaired (codes clipped, missing
    positions filled with the middle code) and reported invalid.
    """

    def __init__(self, tokenizer: "ContinuousTokenizer", first_code_id: int, pad_token_id: int, vocab_size: int) -> None:
        if first_code_id < 0 or first_code_id + tokenizer.num_codes > vocab_size:
            raise ValueError(
                f"Code ids [{first_code_id}, {first_code_id + tokenizer.num_codes}) must lie inside the "
                f"vocabulary [0, {vocab_size}); raise vocab_size or move first_code_id."
            )
        if first_code_id <= pad_token_id < first_code_id + tokenizer.num_codes or not 0 <= pad_token_id < vocab_size:
            raise ValueError(
                f"pad_token_id {pad_token_id} must lie in [0, {vocab_size}) and outside the code ids "
                f"[{first_code_id}, {first_code_id + tokenizer.num_codes})."
            )
        self.tokenizer = tokenizer
        self.first_code_id = first_code_id
        self.pad_token_id = pad_token_id
        self.vocab_size = vocab_size
        self.max_action_tokens = tokenizer.tokens_per_action

    def encode(self, embodiment: str, action: np.ndarray) -> np.ndarray:
        """Return the padded token ids, shape ``(max_action_tokens,)``, of one continuous action."""
        codes = self.tokenizer.encode(embodiment, np.asarray(action, dtype=np.float32)[None])[0]
        token_ids = np.full(self.max_action_tokens, self.pad_token_id, dtype=np.int64)
        token_ids[: codes.shape[0]] = codes + self.first_code_id
        return token_ids

    def decode(self, embodiment: str, token_ids: Sequence[int]) -> DecodedAction:
        width = self.tokenizer.tokens_for(embodiment)
        codes = np.asarray(token_ids, dtype=np.int64) - self.first_code_id
        problems = []
        if codes.shape[0] != width:
            problems.append(f"{codes.shape[0]} tokens where {embodiment!r} needs {width}")
            codes = np.concatenate([codes, np.full(width, self.tokenizer.num_codes // 2)])[:width]
        outside = (codes < 0) | (codes >= self.tokenizer.num_codes)
        if outside.any():
            bad_ids = (codes[outside] + self.first_code_id).tolist()
            problems.append(f"ids {bad_ids} outside the code range")
            codes = np.clip(codes, 0, self.tokenizer.num_codes - 1)
        action = self.tokenizer.decode(embodiment, codes[None])[0]
        if problems:
            return DecodedAction(action=action, valid=False, reason="; ".join(problems))
        return DecodedAction(action=action, valid=True)


class PaddedDetokenizer:
    """`gea_tokenizers.ActionDetokenizer` behind the fixed-width token-id actions of the RL environment.

    The pad id is ``len(llm_tokenizer)``, one past the tokenizer's last id. No constraint
    allows it, so it never collides with a real action token (the end-of-sequence token
    that ends discrete and UI actions included), and stripping trailing pads recovers
    every action exactly. `vocab_size` counts it.
    """

    def __init__(self, detokenizer: "PolicyActionDetokenizer", embodiments: Sequence[str]) -> None:
        missing = sorted(set(embodiments) - set(detokenizer.embodiments))
        if missing:
            raise ValueError(
                f"The action tokenizer does not cover {missing}; it covers {detokenizer.embodiments}. "
                "Train (SFT) on data of those embodiments first."
            )
        self.detokenizer = detokenizer
        self.embodiments = tuple(embodiments)
        self.pad_token_id = len(detokenizer.llm_tokenizer)
        self.vocab_size = self.pad_token_id + 1
        self.max_action_tokens = max(detokenizer.constraint(name).max_length for name in self.embodiments)

    def decode(self, embodiment: str, token_ids: Sequence[int]) -> DecodedAction:
        decoded = self.detokenizer.decode(embodiment, token_ids)
        return DecodedAction(action=decoded.action, valid=decoded.valid, reason=decoded.reason)

    def pad(self, token_ids: Sequence[int]) -> np.ndarray:
        """Return `token_ids` padded to ``(max_action_tokens,)``; longer sequences raise ValueError."""
        if len(token_ids) > self.max_action_tokens:
            raise ValueError(
                f"An action of {len(token_ids)} tokens does not fit max_action_tokens={self.max_action_tokens}."
            )
        padded = np.full(self.max_action_tokens, self.pad_token_id, dtype=np.int64)
        padded[: len(token_ids)] = np.asarray(token_ids, dtype=np.int64)
        return padded

    def encode(self, embodiment: str, action: Action) -> np.ndarray:
        """Return the padded token ids of one agent-level action."""
        return self.pad(self.detokenizer.encode(embodiment, action))

    def encode_many(self, embodiment: str, actions: Sequence[Action]) -> np.ndarray:
        """Return the padded token ids ``(len(actions), max_action_tokens)`` of one embodiment's actions."""
        return np.stack([self.pad(ids) for ids in self.detokenizer.encode_many(embodiment, actions)])

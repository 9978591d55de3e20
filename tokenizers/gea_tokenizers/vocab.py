"""Map continuous-action codes onto LLM token ids.

Code ``c`` becomes one fixed token id, the same at every codebook position, so 512 codes
need 512 ids. Two ways to choose the ids:

- `least_used_code_map`: reuse the ids of a pretrained vocabulary that a text corpus
  uses least; the vocabulary size stays the same.
- `added_token_code_map`: add ``<act_0>`` ... ``<act_{n-1}>`` to the tokenizer; the policy
  must then resize its embedding matrix to ``len(tokenizer)``.
"""

from __future__ import annotations

import collections
import enum
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

ACTION_TOKEN_TEMPLATE = "<act_{code}>"


class CodeMapMode(str, enum.Enum):
    LEAST_USED = "least_used"
    ADDED_TOKENS = "added_tokens"


@dataclass(frozen=True)
class CodeMap:
    """Code ``c`` is token id ``token_ids[c]``.

    Attributes:
        token_ids: one distinct id per code.
        mode: how the ids were chosen.
    """

    token_ids: tuple[int, ...]
    mode: CodeMapMode

    def __post_init__(self) -> None:
        if not self.token_ids:
            raise ValueError("A CodeMap needs at least one token id.")
        if len(set(self.token_ids)) != len(self.token_ids):
            raise ValueError("CodeMap token ids must be distinct; some code ids repeat.")
        object.__setattr__(self, "token_ids", tuple(int(token_id) for token_id in self.token_ids))
        object.__setattr__(self, "mode", CodeMapMode(self.mode))
        object.__setattr__(self, "_code_of", {token_id: code for code, token_id in enumerate(self.token_ids)})

    @property
    def num_codes(self) -> int:
        return len(self.token_ids)

    def codes_to_ids(self, codes: Iterable[int]) -> list[int]:
        return [self.token_ids[int(code)] for code in codes]

    def id_to_code(self, token_id: int) -> Optional[int]:
        """Return the code of `token_id`, or None if it is not a code token."""
        return self._code_of.get(int(token_id))

    def check_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Raise ValueError unless every id exists in `tokenizer` (and, for added tokens, has its ``<act_c>`` text)."""
        size = len(tokenizer)
        too_large = [token_id for token_id in self.token_ids if token_id >= size]
        if too_large:
            raise ValueError(
                f"Code map ids up to {max(too_large)} do not exist in a tokenizer of {size} ids; "
                "load the tokenizer the code map was built with."
            )
        if self.mode is CodeMapMode.ADDED_TOKENS:
            expected = [ACTION_TOKEN_TEMPLATE.format(code=code) for code in range(self.num_codes)]
            actual = tokenizer.convert_ids_to_tokens(list(self.token_ids))
            if actual != expected:
                raise ValueError(
                    "The tokenizer's ids for the action tokens differ from the code map; call "
                    "add_action_tokens(tokenizer, num_codes) on the tokenizer the map was built from."
                )

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode.value, "token_ids": list(self.token_ids)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CodeMap":
        return cls(token_ids=tuple(data["token_ids"]), mode=CodeMapMode(data["mode"]))

    def save(self, path: Union[str, Path]) -> None:
        Path(path).write_text(json.dumps(self.to_json()) + "\n")

    @classmethod
    def load(cls, path: Union[str, Path]) -> "CodeMap":
        return cls.from_json(json.loads(Path(path).read_text()))


def least_used_code_map(
    tokenizer: PreTrainedTokenizerBase,
    corpus: Iterable[str],
    num_codes: int,
    exclude_ids: Iterable[int] = (),
) -> CodeMap:
    """Choose the `num_codes` ids that tokenizing `corpus` produces least often.

    Special tokens and `exclude_ids` (the ids that action phrases use) are never chosen.
    Ties in count go to the highest id, because byte-level BPE learns its rarest merges
    last. The corpus should resemble the policy's prompts and instructions, so the
    chosen ids carry little meaning the policy needs.
    """
    if num_codes < 1:
        raise ValueError(f"num_codes must be at least 1, got {num_codes}.")
    counts: collections.Counter[int] = collections.Counter()
    for text in corpus:
        counts.update(tokenizer.encode(text, add_special_tokens=False))
    excluded = set(tokenizer.all_special_ids) | {int(token_id) for token_id in exclude_ids}
    candidates = [token_id for token_id in range(len(tokenizer)) if token_id not in excluded]
    if len(candidates) < num_codes:
        raise ValueError(
            f"Only {len(candidates)} token ids remain after excluding special and action-phrase ids, "
            f"but {num_codes} codes need ids; use added_token_code_map instead."
        )
    candidates.sort(key=lambda token_id: (counts[token_id], -token_id))
    chosen = candidates[:num_codes]
    used = sum(1 for token_id in chosen if counts[token_id] > 0)
    if used:
        logger.warning("%d of the %d chosen code ids occur in the corpus; the corpus is small or the vocabulary is.",
                       used, num_codes)
    return CodeMap(token_ids=tuple(chosen), mode=CodeMapMode.LEAST_USED)


def add_action_tokens(tokenizer: PreTrainedTokenizerBase, num_codes: int) -> list[int]:
    """Add ``<act_0>`` ... ``<act_{num_codes-1}>`` as special tokens (if absent) and return their ids in code order."""
    if num_codes < 1:
        raise ValueError(f"num_codes must be at least 1, got {num_codes}.")
    tokens = [ACTION_TOKEN_TEMPLATE.format(code=code) for code in range(num_codes)]
    missing = [token for token in tokens if token not in tokenizer.get_vocab()]
    if missing:
        # Special, as `GEAPolicy.add_tokens` adds them: the BPE never produces them from text,
        # so typed UI text cannot contain an action token.
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    return list(tokenizer.convert_tokens_to_ids(tokens))


def added_token_code_map(tokenizer: PreTrainedTokenizerBase, num_codes: int) -> CodeMap:
    """Add action tokens to `tokenizer` and map code ``c`` to ``<act_c>``.

    The caller must resize the policy's embeddings afterwards:
    ``model.resize_token_embeddings(len(tokenizer))``.
    """
    return CodeMap(token_ids=tuple(add_action_tokens(tokenizer, num_codes)), mode=CodeMapMode.ADDED_TOKENS)


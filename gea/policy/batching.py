"""Left-padded batches of prompts, and the outputs `GEAPolicy` returns for them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass
class LeftPaddedIds:
    """Token ids padded on the left so every row's last token sits in the last column.

    Left padding lets one forward pass per generated position append a token to every
    row at the same column of the KV cache.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    lengths: torch.Tensor

    @property
    def offsets(self) -> torch.Tensor:
        """The column of each row's first real token."""
        return self.input_ids.shape[1] - self.lengths


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> LeftPaddedIds:
    """Stack `sequences` into ``(batch, max_length)`` tensors, padding on the left with `pad_id`."""
    if not sequences:
        raise ValueError("left_pad got no sequences; pass at least one.")
    lengths = torch.tensor([len(sequence) for sequence in sequences], dtype=torch.long)
    if int(lengths.min()) == 0:
        raise ValueError(f"Sequence {int(lengths.argmin())} is empty; every prompt needs at least one token.")
    width = int(lengths.max())
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, width - len(sequence) :] = torch.as_tensor(list(sequence), dtype=torch.long)
        attention_mask[row, width - len(sequence) :] = 1
    # Positions count real tokens only, so a row's positions do not depend on its padding.
    position_ids = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)
    return LeftPaddedIds(input_ids, attention_mask, position_ids, lengths)


@dataclass
class ActionOutput:
    """Actions decoded by `GEAPolicy.act`.

    Attributes:
        token_ids: the action token ids of each row (rows may differ in length).
        log_probs: ``(batch, max_length)`` log-probability of each token under the
            constrained distribution it was drawn from; 0 past a row's end.
        mask: ``(batch, max_length)`` bool, True on real tokens.
        values: ``(batch,)`` value estimates of the prompts.
    """

    token_ids: list[list[int]]
    log_probs: torch.Tensor
    mask: torch.Tensor
    values: torch.Tensor


@dataclass
class ScoreOutput:
    """Teacher-forced scores of given action tokens from `GEAPolicy.score`.

    Attributes:
        log_probs: ``(batch, max_length)`` log-probability of each given token under the
            constrained distribution; 0 past a row's end.
        entropy: ``(batch, max_length)`` entropy of the constrained distribution at each
            position; 0 past a row's end.
        mask: ``(batch, max_length)`` bool, True on real tokens.
        values: ``(batch,)`` value estimates of the prompts.
    """

    log_probs: torch.Tensor
    entropy: torch.Tensor
    mask: torch.Tensor
    values: torch.Tensor

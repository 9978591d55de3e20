"""Prefill of a batch whose rows share their text before the first frame.

Rows of one embodiment and instruction start with the same tokens: the prompt header
and the first ``Observation:`` label, about a quarter of a tiny-model prompt with three
frames. `prefill_shared` runs each distinct prefix through the language model once,
copies its KV cache to every row that starts with it, and runs only the rows' remaining
tokens over that cache. Causal attention makes the result equal to a full prefill up
to float rounding.

The cache columns of row ``r`` are ``[pad][prefix of r][pad][suffix of r]``: both parts
are left-padded to their own width, the attention mask is 0 on both pads, and position
ids count real tokens only, so each row gets the same positions as in its own prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from gea.policy.batching import LeftPaddedIds, left_pad


@dataclass
class PrefixSplit:
    """Rows split into a shared prefix and a suffix that starts at the first image token.

    Attributes:
        prefixes: the distinct prefixes, each a non-empty list of token ids.
        group_of_row: ``(batch,)`` index into `prefixes` of each row's prefix.
        suffixes: each row's tokens after its prefix (all of its image tokens).
    """

    prefixes: list[list[int]]
    group_of_row: torch.Tensor
    suffixes: list[list[int]]


def split_shared_prefixes(sequences: Sequence[Sequence[int]], image_token_id: int) -> Optional[PrefixSplit]:
    """Split each row at its first image token; return None unless two rows share the text before it.

    Returns None as well if a row has no image token or starts with one, because then
    there is no text prefix to share.
    """
    prefixes: list[list[int]] = []
    index_of_prefix: dict[tuple[int, ...], int] = {}
    groups, suffixes = [], []
    for sequence in sequences:
        sequence = list(sequence)
        if image_token_id not in sequence:
            return None
        cut = sequence.index(image_token_id)
        if cut == 0:
            return None
        key = tuple(sequence[:cut])
        if key not in index_of_prefix:
            index_of_prefix[key] = len(prefixes)
            prefixes.append(sequence[:cut])
        groups.append(index_of_prefix[key])
        suffixes.append(sequence[cut:])
    if len(prefixes) == len(sequences):
        return None
    return PrefixSplit(prefixes, torch.tensor(groups, dtype=torch.long), suffixes)


@dataclass
class SharedPrefill:
    """Column layout of a prefill with shared prefixes.

    Attributes:
        attention_mask: ``(batch, prefix_width + suffix_width)``, 0 on padding.
        position_ids: ``(batch, prefix_width + suffix_width)`` positions of real tokens.
        prefix_width: number of prefix columns.
    """

    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    prefix_width: int


def shared_layout(split: PrefixSplit, pad_id: int) -> tuple[SharedPrefill, LeftPaddedIds]:
    """Lay out `split` as cache columns; return the layout and the left-padded distinct prefixes.

    The prefixes have one row per distinct prefix, ready for the prefix pass.
    """
    prefix_ids = left_pad(split.prefixes, pad_id)
    suffix_mask = left_pad(split.suffixes, pad_id).attention_mask
    attention_mask = torch.cat([prefix_ids.attention_mask[split.group_of_row], suffix_mask], dim=-1)
    # Positions count real tokens only, so a row's positions do not depend on either pad.
    position_ids = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)
    layout = SharedPrefill(attention_mask, position_ids, prefix_width=prefix_ids.input_ids.shape[1])
    return layout, prefix_ids

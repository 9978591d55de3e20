"""Prefill of a batch whose rows share their text before the first frame.

Rows of one embodiment start with the same tokens: the prompt header up to the
instruction (all of it, and the first ``Observation:`` label, when the instruction is the
same too). It is 40 to 70 % of the tokens of a BabyAI or Meta-World prompt at three to one
frames of history.
`split_shared_prefixes` groups rows by such a common prefix, and the policy runs each
group's prefix through the language model once, copies its KV cache to every row of the
group, and runs only the rows' remaining tokens over that cache. Causal attention makes
the result equal to a full pass up to float rounding, gradients included, so decoding,
SFT and PPO scoring all take this path.

The cache columns of row ``r`` are ``[pad][prefix of r][pad][suffix of r]``: both parts
are left-padded to their own width, the attention mask is 0 on both pads, and position
ids count real tokens only, so each row gets the same positions as in its own prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from gea.policy.batching import LeftPaddedIds, left_pad

# Rows with different texts join one group only if they share at least this many tokens:
# enough that the saved compute outweighs an extra padded prefix row.
MIN_SHARED_TOKENS = 16


@dataclass
class PrefixSplit:
    """Rows split into a shared prefix and a suffix, which starts at or before the row's first image token.

    Attributes:
        prefixes: one prefix per group, each a non-empty list of token ids.
        group_of_row: ``(batch,)`` index into `prefixes` of each row's prefix.
        suffixes: each row's tokens after its prefix (all of its image tokens).
    """

    prefixes: list[list[int]]
    group_of_row: torch.Tensor
    suffixes: list[list[int]]


def split_shared_prefixes(
    sequences: Sequence[Sequence[int]], image_token_id: int, min_shared: int = MIN_SHARED_TOKENS
) -> Optional[PrefixSplit]:
    """Group rows by a common prefix before their first image token; return None if no two rows share one.

    A row joins the group with which it shares the longest prefix, if that prefix is at
    least `min_shared` tokens or the whole text before both rows' first image. The group's
    prefix then shrinks to what all its rows share. Returns None as well if a row has no
    image token or starts with one, because then there is no text prefix to share.
    """
    heads: list[list[int]] = []
    for sequence in sequences:
        sequence = list(sequence)
        if image_token_id not in sequence:
            return None
        cut = sequence.index(image_token_id)
        if cut == 0:
            return None
        heads.append(sequence[:cut])
    prefixes: list[list[int]] = []
    groups: list[int] = []
    for head in heads:
        best_group, best_length = -1, 0
        for group, prefix in enumerate(prefixes):
            length = _common_length(prefix, head)
            identical = length == len(prefix) == len(head)
            if (length >= min_shared or identical) and length > best_length:
                best_group, best_length = group, length
        if best_group < 0:
            prefixes.append(head)
            groups.append(len(prefixes) - 1)
        else:
            prefixes[best_group] = prefixes[best_group][:best_length]
            groups.append(best_group)
    if len(prefixes) == len(sequences):
        return None
    suffixes = [list(sequence[len(prefixes[group]) :]) for sequence, group in zip(sequences, groups)]
    return PrefixSplit(prefixes, torch.tensor(groups, dtype=torch.long), suffixes)


def _common_length(first: Sequence[int], second: Sequence[int]) -> int:
    length = 0
    for a, b in zip(first, second):
        if a != b:
            break
        length += 1
    return length


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

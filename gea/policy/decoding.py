"""Constrained next-token distributions: logit masks, sampling, log-probabilities and entropy.

Every distribution here is the model's softmax restricted to the ids a `PrefixConstraint`
allows, at temperature ``T``: ``softmax(logits / T)`` renormalized over the allowed ids.
Decoding and teacher-forced scoring both call `masked_log_probs`, so a token sampled
by `GEAPolicy.act` gets the same log-probability when `GEAPolicy.score` rescores it.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from gea_tokenizers.constraint import PrefixConstraint


def allowed_ids_mask(
    constraints: Sequence[PrefixConstraint],
    prefixes: Sequence[Sequence[int]],
    vocab_size: int,
    device: torch.device,
) -> torch.Tensor:
    """Return a bool mask of shape ``(batch, vocab_size)``, True where the row's constraint allows the id.

    A row whose prefix is already complete gets an all-False row; callers ignore its
    output. Raises ValueError if a constraint allows an id outside the vocabulary.
    """
    # Rows of one embodiment share a constraint object and often a prefix, so each distinct
    # (constraint, prefix) state is asked and validated once and its mask row is copied to its rows.
    state_of_key: dict[tuple[int, tuple[int, ...]], int] = {}
    state_ids: list[list[int]] = []
    state_of_row = []
    for row, (constraint, prefix) in enumerate(zip(constraints, prefixes)):
        key = (id(constraint), tuple(prefix))
        if key not in state_of_key:
            allowed = constraint.allowed_next(prefix)
            if allowed and (max(allowed) >= vocab_size or min(allowed) < 0):
                raise ValueError(
                    f"Row {row}: the constraint allows ids up to {max(allowed)}, outside the model's vocabulary "
                    f"of {vocab_size}; add the action tokens to the tokenizer and resize the embeddings."
                )
            state_of_key[key] = len(state_ids)
            state_ids.append(allowed)
        state_of_row.append(state_of_key[key])
    state_mask = torch.zeros(len(state_ids), vocab_size, dtype=torch.bool)
    for state, allowed in enumerate(state_ids):
        state_mask[state, allowed] = True
    return state_mask[torch.tensor(state_of_row, dtype=torch.long)].to(device)


def masked_log_probs(logits: torch.Tensor, allowed: torch.Tensor, temperature: float) -> torch.Tensor:
    """Return log-probabilities of ``softmax(logits / temperature)`` restricted to `allowed`.

    Disallowed ids get ``-inf``. Rows with no allowed id (finished rows) come back as all
    ``-inf``; callers must not sample from them. `temperature` must be positive.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive to define a distribution, got {temperature}.")
    scores = logits.float() / temperature
    scores = scores.masked_fill(~allowed, float("-inf"))
    # log_softmax of an all -inf row (a finished row) is NaN, so those rows are zeroed before
    # and restored to -inf after.
    has_allowed = allowed.any(dim=-1, keepdim=True)
    log_probs = torch.log_softmax(torch.where(has_allowed, scores, torch.zeros_like(scores)), dim=-1)
    return log_probs.masked_fill(~allowed, float("-inf"))


def masked_entropy(log_probs: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Return the entropy of each masked distribution over the last dimension (0 for empty rows)."""
    # Zero the -inf entries before multiplying: 0 * -inf is NaN, and torch.where would pass
    # that NaN into the gradient even from the branch it discards.
    finite = torch.where(allowed, log_probs, torch.zeros_like(log_probs))
    terms = torch.where(allowed, finite.exp() * finite, torch.zeros_like(finite))
    return -terms.sum(dim=-1)


def select_tokens(
    log_probs: torch.Tensor,
    greedy: bool,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Pick one id per row: the argmax if `greedy`, else a sample from ``exp(log_probs)``.

    Rows that are all ``-inf`` (finished rows) return id 0, which callers discard.
    """
    has_allowed = torch.isfinite(log_probs).any(dim=-1)
    safe = torch.where(has_allowed[:, None], log_probs, torch.zeros_like(log_probs))
    if greedy:
        tokens = safe.argmax(dim=-1)
    else:
        tokens = torch.multinomial(safe.exp(), num_samples=1, generator=generator).squeeze(-1)
    return torch.where(has_allowed, tokens, torch.zeros_like(tokens))

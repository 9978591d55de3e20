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
    mask = torch.zeros(len(constraints), vocab_size, dtype=torch.bool)
    for row, (constraint, prefix) in enumerate(zip(constraints, prefixes)):
        allowed = constraint.allowed_next(prefix)
        if not allowed:
            continue
        ids = torch.as_tensor(allowed, dtype=torch.long)
        if int(ids.max()) >= vocab_size or int(ids.min()) < 0:
            raise ValueError(
                f"Row {row}: the constraint allows ids up to {int(ids.max())}, outside the model's vocabulary "
                f"of {vocab_size}; add the action tokens to the tokenizer and resize the embeddings."
            )
        mask[row, ids] = True
    return mask.to(device)


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

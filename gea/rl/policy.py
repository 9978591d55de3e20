"""`GEAActionPolicy`: `GEAPolicy` behind the `ActionTokenPolicy` interface of the RL module.

Every row's prompt is built by `GEAPolicy.build_input`, the function SFT trains on,
from the observation's real frames, its instruction, its embodiment's prompt text and
the token ids of the actions taken after the earlier observations. Sampling calls
`GEAPolicy.act` (temperature 1, or greedy), training calls `GEAPolicy.score`, so the
log-probability the env runner records for a sampled action is the one the learner
recomputes for it.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from gea.policy import GEAPolicy, PolicyInput
from gea.rl.detokenizer import PaddedDetokenizer, strip_padding
from gea.rl.module import PolicyBatch, TokenScores
from gea_envs import get_adapter
from gea_tokenizers.constraint import PrefixConstraint

# Sampling temperature of exploration: the policy's own distribution, which PPO's
# importance ratios assume.
EXPLORATION_TEMPERATURE = 1.0


class GEAActionPolicy(nn.Module):
    """Samples, scores and values token-id actions of several embodiments with one `GEAPolicy`.

    Args:
        policy: the GEA policy. Its ``config.history_length`` should equal the run's
            ``frame_stack``, so the prompt contains every stacked observation.
        detokenizer: the padded de-tokenizer of the run's embodiments.
        max_rows_per_forward: rows per forward pass of `compute_values`, which RLlib calls
            on a whole train batch; bounds activation memory.
    """

    def __init__(self, policy: GEAPolicy, detokenizer: PaddedDetokenizer, max_rows_per_forward: int = 64) -> None:
        super().__init__()
        if max_rows_per_forward < 1:
            raise ValueError(f"max_rows_per_forward must be at least 1, got {max_rows_per_forward}.")
        self.policy = policy
        self.detokenizer = detokenizer
        self.max_rows_per_forward = max_rows_per_forward
        self._prompts = {name: get_adapter(name).prompt for name in detokenizer.embodiments}

    # ------------------------------------------------------------------------------ inputs

    def _constraint(self, embodiment: str) -> PrefixConstraint:
        return self.detokenizer.detokenizer.constraint(embodiment)

    def policy_inputs(self, batch: PolicyBatch) -> tuple[list[PolicyInput], list[PrefixConstraint]]:
        """Build each row's prompt and constraint."""
        inputs, constraints = [], []
        pad = self.detokenizer.pad_token_id
        for row, embodiment in enumerate(batch.row_embodiments()):
            if embodiment not in self._prompts:
                raise ValueError(f"Row {row} is embodiment {embodiment!r}, which this policy was not built for.")
            actions = [strip_padding(action, pad) for action in batch.padded_action_history(row)]
            frames = batch.frame_history(row)
            inputs.append(self.policy.build_input(self._prompts[embodiment], batch.instructions[row], frames, actions))
            constraints.append(self._constraint(embodiment))
        return inputs, constraints

    def _pad(self, rows: Sequence[Sequence[int]], device: torch.device) -> torch.Tensor:
        return torch.as_tensor(np.stack([self.detokenizer.pad(row) for row in rows]), device=device)

    def _pad_columns(self, values: torch.Tensor) -> torch.Tensor:
        """Zero-pad ``(B, L)`` per-token values to ``(B, max_action_tokens)``."""
        missing = self.detokenizer.max_action_tokens - values.shape[1]
        return nn.functional.pad(values, (0, missing))

    # ------------------------------------------------------------------- ActionTokenPolicy

    def sample_tokens(self, batch: PolicyBatch, greedy: bool) -> TokenScores:
        inputs, constraints = self.policy_inputs(batch)
        temperature = 0.0 if greedy else EXPLORATION_TEMPERATURE
        output = self.policy.act(inputs, constraints, temperature=temperature)
        log_probs = torch.where(output.mask, output.log_probs, torch.zeros_like(output.log_probs))
        return TokenScores(
            token_ids=self._pad(output.token_ids, output.values.device),
            log_probs=self._pad_columns(log_probs),
            values=output.values,
        )

    def score_tokens(self, batch: PolicyBatch, token_ids: torch.Tensor) -> TokenScores:
        inputs, constraints = self.policy_inputs(batch)
        actions = [strip_padding(row, self.detokenizer.pad_token_id) for row in token_ids.cpu().tolist()]
        scores = self.policy.score(inputs, actions, constraints, temperature=EXPLORATION_TEMPERATURE)
        log_allowed = _log_allowed_counts(constraints, actions, scores.mask.shape[1]).to(scores.log_probs.device)
        return TokenScores(
            token_ids=token_ids.long(),
            log_probs=self._pad_columns(scores.log_probs),
            values=scores.values,
            entropy=self._pad_columns(scores.entropy),
            log_allowed=self._pad_columns(log_allowed),
        )

    def compute_values(self, batch: PolicyBatch) -> torch.Tensor:
        inputs, _ = self.policy_inputs(batch)
        chunks = [
            self.policy.values(inputs[start : start + self.max_rows_per_forward])
            for start in range(0, len(inputs), self.max_rows_per_forward)
        ]
        return torch.cat(chunks)


def _log_allowed_counts(
    constraints: Sequence[PrefixConstraint], actions: Sequence[Sequence[int]], width: int
) -> torch.Tensor:
    """Return ``log(number of allowed ids)`` at each position of each action, 0 past its end."""
    counts = torch.zeros(len(actions), width)
    for row, (constraint, action) in enumerate(zip(constraints, actions)):
        for position in range(len(action)):
            counts[row, position] = math.log(max(len(constraint.allowed_next(action[:position])), 1))
    return counts


def build_action_policy(
    policy: GEAPolicy, detokenizer: PaddedDetokenizer, max_rows_per_forward: Optional[int] = None
) -> GEAActionPolicy:
    """Wrap `policy` for the RL module, freezing all but its LoRA adapters and value head."""
    policy.freeze_except_lora_and_value_head()
    if max_rows_per_forward is None:
        return GEAActionPolicy(policy, detokenizer)
    return GEAActionPolicy(policy, detokenizer, max_rows_per_forward)

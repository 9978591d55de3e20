"""`GeaTorchRLModule`: the RLlib module around a token-emitting GEA policy.

The module turns RLlib observation batches into `PolicyBatch` inputs and delegates to
an `ActionTokenPolicy`:

- exploration: the policy samples each row's tokens under its embodiment's constraint;
- inference: the same, greedily;
- training: the policy scores the batch's actions by teacher forcing and returns the
  masked per-position logits plus value estimates from the same forward pass.

The action distribution is `TokenSequenceDistribution` over the policy's action
vocabulary. Values are in the return-normalized scale of
`gea.rl.gae.NormalizedGeneralAdvantageEstimation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, Sequence

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule

from gea.rl.distribution import TokenSequenceDistribution
from gea.rl.env import OBS_EMBODIMENT, OBS_FRAMES, OBS_INSTRUCTION, OBS_PROPRIO, OBS_PROPRIO_LENGTH, decode_instruction

# Keys of the module's `model_config`.
POLICY_FACTORY_KEY = "policy_factory"
ENVS_KEY = "envs"


@dataclass
class PolicyBatch:
    """Policy inputs for a batch of steps.

    Attributes:
        frames: uint8 ``(B, frames, H, W, 3)``, oldest frame first.
        embodiment_indices: int64 ``(B,)`` indices into `embodiments`.
        embodiments: the run's adapter names; a policy looks up prompt text and action
            constraints by name.
        instructions: one instruction per row.
        proprio: float32 ``(B, max_proprio_dim)`` zero-padded, or None.
        proprio_lengths: int64 ``(B,)`` real entries of each `proprio` row, or None.
    """

    frames: torch.Tensor
    embodiment_indices: torch.Tensor
    embodiments: tuple[str, ...]
    instructions: list[str]
    proprio: Optional[torch.Tensor] = None
    proprio_lengths: Optional[torch.Tensor] = None

    def row_embodiments(self) -> list[str]:
        """Return each row's embodiment name."""
        return [self.embodiments[int(index)] for index in self.embodiment_indices.tolist()]


@dataclass
class TokenSample:
    """Sampled actions: token ids ``(B, max_action_tokens)`` padded, and the masked logits they were drawn from."""

    token_ids: torch.Tensor
    logits: torch.Tensor


@dataclass
class TokenScores:
    """Teacher-forced scores: masked logits ``(B, max_action_tokens, K)`` and values ``(B,)``."""

    logits: torch.Tensor
    values: torch.Tensor


class ActionTokenPolicy(Protocol):
    """The policy interface `GeaTorchRLModule` calls (implemented by a `torch.nn.Module`).

    Attributes:
        action_vocabulary: sorted token ids that index the last logit dimension ``K``,
            including the pad id, which is the only allowed token after an action ends.
    """

    action_vocabulary: Sequence[int]

    def sample_tokens(self, batch: PolicyBatch, greedy: bool) -> TokenSample:
        """Decode one action per row under the row's embodiment constraint."""
        ...

    def score_tokens(self, batch: PolicyBatch, token_ids: torch.Tensor) -> TokenScores:
        """Score padded `token_ids` ``(B, max_action_tokens)`` by teacher forcing."""
        ...

    def compute_values(self, batch: PolicyBatch) -> torch.Tensor:
        """Return value estimates ``(B,)`` of the rows' observations."""
        ...


class GeaTorchRLModule(TorchRLModule, ValueFunctionAPI):
    """RLlib module delegating to an `ActionTokenPolicy` built on each process.

    `model_config` contains ``policy_factory`` (a picklable callable returning the policy)
    and ``envs`` (the run's adapter names, in `GeaEnvConfig.envs` order).
    """

    def setup(self) -> None:
        factory: Optional[Callable[[], Any]] = self.model_config.get(POLICY_FACTORY_KEY)
        if not callable(factory):
            raise ValueError(
                f"model_config[{POLICY_FACTORY_KEY!r}] must be a callable returning the policy, got {factory!r}."
            )
        envs = tuple(self.model_config.get(ENVS_KEY, ()))
        if not envs:
            raise ValueError(f"model_config[{ENVS_KEY!r}] must list the run's embodiments, got {envs!r}.")
        self.embodiments = envs
        self.policy = factory()
        self._distribution_class = TokenSequenceDistribution.for_vocabulary(self.policy.action_vocabulary)

    def get_inference_action_dist_cls(self) -> type[TokenSequenceDistribution]:
        return self._distribution_class

    def get_exploration_action_dist_cls(self) -> type[TokenSequenceDistribution]:
        return self._distribution_class

    def get_train_action_dist_cls(self) -> type[TokenSequenceDistribution]:
        return self._distribution_class

    def policy_batch(self, batch: dict[str, Any]) -> PolicyBatch:
        """Convert an RLlib batch's observations into the policy's inputs."""
        observations = batch[Columns.OBS]
        instructions = [decode_instruction(row) for row in observations[OBS_INSTRUCTION].cpu().numpy()]
        return PolicyBatch(
            frames=observations[OBS_FRAMES],
            embodiment_indices=observations[OBS_EMBODIMENT].long(),
            embodiments=self.embodiments,
            instructions=instructions,
            proprio=observations.get(OBS_PROPRIO),
            proprio_lengths=observations.get(OBS_PROPRIO_LENGTH),
        )

    def _sample(self, batch: dict[str, Any], greedy: bool) -> dict[str, Any]:
        with torch.no_grad():
            sample = self.policy.sample_tokens(self.policy_batch(batch), greedy=greedy)
        distribution = self._distribution_class.from_logits(sample.logits)
        return {
            Columns.ACTIONS: sample.token_ids,
            Columns.ACTION_LOGP: distribution.logp(sample.token_ids),
            Columns.ACTION_DIST_INPUTS: sample.logits,
        }

    def _forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self._sample(batch, greedy=True)

    def _forward_exploration(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self._sample(batch, greedy=False)

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        scores = self.policy.score_tokens(self.policy_batch(batch), batch[Columns.ACTIONS])
        return {Columns.ACTION_DIST_INPUTS: scores.logits, Columns.VF_PREDS: scores.values}

    def compute_values(self, batch: dict[str, Any], embeddings: Optional[Any] = None) -> torch.Tensor:
        return self.policy.compute_values(self.policy_batch(batch))

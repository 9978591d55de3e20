"""`GeaTorchRLModule`: the RLlib module around a token-emitting GEA policy.

The module turns RLlib observation batches into `PolicyBatch` inputs and delegates to
an `ActionTokenPolicy` (`gea.rl.policy.GEAActionPolicy` for the real GEA policy):

- exploration: the policy samples each row's tokens under its embodiment's constraint;
- inference: the same, greedily;
- training: the policy scores the batch's actions by teacher forcing and returns
  per-token log-probabilities, entropies and values from the same forward pass.

The action distribution is `TokenSequenceDistribution`. Values are in the
return-normalized scale of `gea.rl.gae.NormalizedGeneralAdvantageEstimation`.

Only trainable tensors (LoRA adapters and the value head of the GEA policy) are part
of the module's state: every process builds the frozen weights from the same
checkpoint, so weight syncs from the learner to the env runners send only the few
tensors that change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.numpy import convert_to_numpy
from ray.rllib.utils.torch_utils import convert_to_torch_tensor

from gea.rl.distribution import TokenSequenceDistribution, pack_scores
from gea.rl.env import (
    OBS_ACTION_HISTORY,
    OBS_EMBODIMENT,
    OBS_FRAMES,
    OBS_HISTORY_LENGTH,
    OBS_INSTRUCTION,
    OBS_PROPRIO,
    OBS_PROPRIO_LENGTH,
    decode_instruction,
)

# Keys of the module's `model_config`.
POLICY_FACTORY_KEY = "policy_factory"
ENVS_KEY = "envs"
NUM_CAMERAS_KEY = "num_cameras"


@dataclass
class PolicyBatch:
    """Policy inputs for a batch of steps.

    Attributes:
        frames: uint8 ``(B, frame_stack * num_cameras, H, W, 3)``, oldest frame first.
        embodiment_indices: int64 ``(B,)`` indices into `embodiments`.
        embodiments: the run's adapter names; a policy looks up prompt text and action
            constraints by name.
        instructions: one instruction per row.
        history_lengths: int64 ``(B,)`` real observations among the stacked ones (the
            last ones), or None to treat every slot as real.
        action_history: int64 ``(B, frame_stack - 1, max_action_tokens)`` padded token ids
            of the actions after each stacked observation but the last, or None.
        num_cameras: frames per observation step.
        proprio: float32 ``(B, max_proprio_dim)`` zero-padded, or None.
        proprio_lengths: int64 ``(B,)`` real entries of each `proprio` row, or None.
    """

    frames: torch.Tensor
    embodiment_indices: torch.Tensor
    embodiments: tuple[str, ...]
    instructions: list[str]
    history_lengths: Optional[torch.Tensor] = None
    action_history: Optional[torch.Tensor] = None
    num_cameras: int = 1
    proprio: Optional[torch.Tensor] = None
    proprio_lengths: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def row_embodiments(self) -> list[str]:
        """Return each row's embodiment name."""
        return [self.embodiments[int(index)] for index in self.embodiment_indices.tolist()]

    def real_steps(self, row: int) -> int:
        """Return how many of the row's last stacked observations are real."""
        if self.history_lengths is None:
            return int(self.frames.shape[1]) // self.num_cameras
        return int(self.history_lengths[row])

    def frame_history(self, row: int) -> list[list[np.ndarray]]:
        """Return the row's real observations, oldest first, each a list of ``num_cameras`` frames."""
        frames = self.frames[row].cpu().numpy()
        steps = frames.shape[0] // self.num_cameras
        cameras = self.num_cameras
        return [list(frames[step * cameras : (step + 1) * cameras]) for step in range(steps - self.real_steps(row), steps)]

    def padded_action_history(self, row: int) -> np.ndarray:
        """Return the padded token ids of the actions after the row's real observations but the last."""
        real = self.real_steps(row)
        if self.action_history is None or real <= 1:
            return np.zeros((0, 0), dtype=np.int64)
        history = self.action_history[row].cpu().numpy()
        return history[history.shape[0] - (real - 1) :]


@dataclass
class TokenScores:
    """Action token ids and their scores, one row per step.

    Attributes:
        token_ids: int64 ``(B, max_action_tokens)``, padded with the de-tokenizer's pad id.
        log_probs: ``(B, max_action_tokens)`` log-probability of each token under the
            masked distribution it was drawn from; 0 on padding.
        values: ``(B,)`` value estimates.
        entropy: ``(B, max_action_tokens)`` entropy of each position's masked distribution,
            0 on padding; None where the policy did not compute it (sampling).
        log_allowed: ``(B, max_action_tokens)`` log of the number of ids the constraint
            allowed at each position, 0 on padding; None where not computed.
    """

    token_ids: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    entropy: Optional[torch.Tensor] = None
    log_allowed: Optional[torch.Tensor] = None

    def distribution_inputs(self) -> torch.Tensor:
        """Return the packed inputs of `TokenSequenceDistribution`."""
        if self.entropy is None or self.log_allowed is None:
            raise ValueError("Distribution inputs need entropy and log_allowed; score the tokens with score_tokens.")
        return pack_scores(self.token_ids, self.log_probs, self.entropy, self.log_allowed)


class ActionTokenPolicy(Protocol):
    """The policy interface `GeaTorchRLModule` calls (implemented by a `torch.nn.Module`)."""

    def sample_tokens(self, batch: PolicyBatch, greedy: bool) -> TokenScores:
        """Decode one action per row under the row's embodiment constraint (entropy optional)."""
        ...

    def score_tokens(self, batch: PolicyBatch, token_ids: torch.Tensor) -> TokenScores:
        """Score padded `token_ids` ``(B, max_action_tokens)`` by teacher forcing, entropy included."""
        ...

    def compute_values(self, batch: PolicyBatch) -> torch.Tensor:
        """Return value estimates ``(B,)`` of the rows' observations."""
        ...


class GeaTorchRLModule(TorchRLModule, ValueFunctionAPI):
    """RLlib module delegating to an `ActionTokenPolicy` built on each process.

    `model_config` contains ``policy_factory`` (a picklable callable returning the policy),
    ``envs`` (the run's adapter names, in `GeaEnvConfig.envs` order) and optionally
    ``num_cameras`` (default 1).
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
        self.num_cameras = int(self.model_config.get(NUM_CAMERAS_KEY, 1))
        self.policy = factory()

    def get_inference_action_dist_cls(self) -> type[TokenSequenceDistribution]:
        return TokenSequenceDistribution

    def get_exploration_action_dist_cls(self) -> type[TokenSequenceDistribution]:
        return TokenSequenceDistribution

    def get_train_action_dist_cls(self) -> type[TokenSequenceDistribution]:
        return TokenSequenceDistribution

    def policy_batch(self, batch: dict[str, Any]) -> PolicyBatch:
        """Convert an RLlib batch's observations into the policy's inputs."""
        observations = batch[Columns.OBS]
        instructions = [decode_instruction(row) for row in observations[OBS_INSTRUCTION].cpu().numpy()]
        history_lengths = observations.get(OBS_HISTORY_LENGTH)
        return PolicyBatch(
            frames=observations[OBS_FRAMES],
            embodiment_indices=observations[OBS_EMBODIMENT].long(),
            embodiments=self.embodiments,
            instructions=instructions,
            history_lengths=None if history_lengths is None else history_lengths.long().reshape(-1),
            action_history=observations.get(OBS_ACTION_HISTORY),
            num_cameras=self.num_cameras,
            proprio=observations.get(OBS_PROPRIO),
            proprio_lengths=observations.get(OBS_PROPRIO_LENGTH),
        )

    def _sample(self, batch: dict[str, Any], greedy: bool) -> dict[str, Any]:
        with torch.no_grad():
            sample = self.policy.sample_tokens(self.policy_batch(batch), greedy=greedy)
        # RLlib's GetActions connector passes ACTIONS and ACTION_LOGP through, so no
        # distribution inputs are needed on the env runners.
        return {Columns.ACTIONS: sample.token_ids, Columns.ACTION_LOGP: sample.log_probs.sum(dim=-1)}

    def _forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self._sample(batch, greedy=True)

    def _forward_exploration(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self._sample(batch, greedy=False)

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        scores = self.policy.score_tokens(self.policy_batch(batch), batch[Columns.ACTIONS])
        return {Columns.ACTION_DIST_INPUTS: scores.distribution_inputs(), Columns.VF_PREDS: scores.values}

    def compute_values(self, batch: dict[str, Any], embeddings: Optional[Any] = None) -> torch.Tensor:
        return self.policy.compute_values(self.policy_batch(batch))

    # ------------------------------------------------------------------------------ state

    def trainable_names(self) -> set[str]:
        """Return the names of the parameters the learner updates."""
        return {name for name, parameter in self.named_parameters() if parameter.requires_grad}

    def get_state(self, components=None, *, not_components=None, inference_only: bool = False, **kwargs) -> dict:
        trainable = self.trainable_names()
        return convert_to_numpy({name: tensor for name, tensor in self.state_dict().items() if name in trainable})

    def set_state(self, state: dict) -> None:
        missing, unexpected = self.load_state_dict(convert_to_torch_tensor(state), strict=False)
        lacking = sorted(self.trainable_names() & set(missing))
        if unexpected or lacking:
            raise ValueError(
                f"The module state does not match this module: unexpected keys {list(unexpected)[:5]}, "
                f"missing trainable keys {lacking[:5]}. Build every process's policy from the same checkpoint "
                "and the same LoRA settings."
            )

"""The PPO learner of GEA's RL stage.

Loss per module::

    PPO clipped surrogate + vf_loss_coeff * clipped value loss
    - entropy_coeff * normalized entropy (averaged per embodiment)
    + kl_coeff * KL estimate (only with use_kl_loss)
    + sft_coeff * SFT loss on an expert batch

Value targets and advantages come from `NormalizedGeneralAdvantageEstimation`, which
replaces RLlib's GAE piece in the learner pipeline. Only parameters with
``requires_grad`` (the policy's LoRA adapters and value head) reach the optimizer.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import numpy as np
import torch
from ray.rllib.algorithms.ppo.ppo import LEARNER_RESULTS_KL_KEY, LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.learner import GeneralAdvantageEstimation
from ray.rllib.core import COMPONENT_OPTIMIZER
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.torch_utils import explained_variance

from gea.rl.distribution import approximate_kl
from gea.rl.env import OBS_EMBODIMENT
from gea.rl.expert import ExpertBatchSource
from gea.rl.gae import NormalizedGeneralAdvantageEstimation
from gea.training.numerics import flush_denormals_on_cpu

logger = logging.getLogger(__name__)

# Keys of `AlgorithmConfig.learner_config_dict` this learner reads.
SFT_COEFF_KEY = "sft_coeff"
SFT_BATCH_SIZE_KEY = "sft_batch_size"
EXPERT_SOURCE_FACTORY_KEY = "expert_source_factory"
NORMALIZE_RETURNS_KEY = "normalize_returns"

RESUME_OPTIMIZER_KEY = "optimizer"
RESUME_RETURN_STATISTICS_KEY = "return_statistics"

SFT_LOSS_METRIC = "train/sft_loss"
NORMALIZED_ENTROPY_METRIC = "train/normalized_entropy"
TRAINABLE_PARAMETERS_METRIC = "train/trainable_parameters"


def mean_per_group(values: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Average `values` within each group id, then average the group means.

    Every embodiment present in the batch then counts equally, however many of the
    batch's steps it contributed.
    """
    unique_groups, inverse = torch.unique(groups, return_inverse=True)
    sums = torch.zeros(len(unique_groups), dtype=values.dtype, device=values.device).index_add(0, inverse, values)
    counts = torch.bincount(inverse, minlength=len(unique_groups)).to(values.dtype)
    return (sums / counts).mean()


class GeaPPOTorchLearner(PPOTorchLearner):
    """PPO with per-embodiment return normalization, normalized entropy and an SFT term."""

    def build(self) -> None:
        super().build()
        flush_denormals_on_cpu(torch.device(self.device))
        settings = self.config.learner_config_dict
        self.sft_coeff = float(settings.get(SFT_COEFF_KEY, 0.0))
        self.sft_batch_size = int(settings.get(SFT_BATCH_SIZE_KEY, 32))
        self._replace_gae_connector(bool(settings.get(NORMALIZE_RETURNS_KEY, True)))
        self.expert_source: Optional[ExpertBatchSource] = None
        factory: Optional[Callable[[], ExpertBatchSource]] = settings.get(EXPERT_SOURCE_FACTORY_KEY)
        if self.sft_coeff > 0 and factory is None:
            raise ValueError(
                f"sft_coeff is {self.sft_coeff} but no expert source is configured; set "
                f"learner_config_dict[{EXPERT_SOURCE_FACTORY_KEY!r}] or set sft_coeff to 0."
            )
        if self.sft_coeff > 0:
            self.expert_source = factory()
        self._expert_rng = np.random.default_rng(self.config.seed)

    def _replace_gae_connector(self, normalize_returns: bool) -> None:
        if self._learner_connector is None or not self.config.add_default_connectors_to_learner_pipeline:
            return
        self._learner_connector.remove(GeneralAdvantageEstimation)
        self._learner_connector.append(
            NormalizedGeneralAdvantageEstimation(
                gamma=self.config.gamma, lambda_=self.config.lambda_, normalize_returns=normalize_returns
            )
        )

    def _normalized_gae(self) -> Optional[NormalizedGeneralAdvantageEstimation]:
        if self._learner_connector is None:
            return None
        for piece in self._learner_connector.connectors:
            if isinstance(piece, NormalizedGeneralAdvantageEstimation):
                return piece
        return None

    def get_resume_state(self) -> dict[str, Any]:
        """Return what a resumed run needs besides the weights: optimizer state and return statistics."""
        gae = self._normalized_gae()
        return {
            RESUME_OPTIMIZER_KEY: self.get_state(components=COMPONENT_OPTIMIZER)[COMPONENT_OPTIMIZER],
            RESUME_RETURN_STATISTICS_KEY: gae.get_state() if gae is not None else {},
        }

    def set_resume_state(self, state: dict[str, Any]) -> None:
        """Restore the output of `get_resume_state`."""
        self.set_state({COMPONENT_OPTIMIZER: state[RESUME_OPTIMIZER_KEY]})
        gae = self._normalized_gae()
        if gae is not None:
            gae.set_state(state[RESUME_RETURN_STATISTICS_KEY])

    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        module = self._module[module_id]
        params = [param for param in self.get_parameters(module) if param.requires_grad]
        if not params:
            raise ValueError(
                f"Module {module_id!r} has no parameters with requires_grad; unfreeze the LoRA adapters "
                "and the value head before training."
            )
        self.metrics.log_value((module_id, TRAINABLE_PARAMETERS_METRIC), sum(p.numel() for p in params), window=1)
        self.register_optimizer(
            module_id=module_id,
            optimizer=torch.optim.Adam(params),
            params=params,
            lr_or_lr_schedule=config.lr,
        )

    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict[str, Any], fwd_out: dict) -> Any:
        module = self.module[module_id].unwrapped()
        mask = batch.get(Columns.LOSS_MASK)
        if mask is None:
            mask = torch.ones_like(batch[Postprocessing.ADVANTAGES], dtype=torch.bool)

        def masked_mean(values: torch.Tensor) -> torch.Tensor:
            return values[mask].mean()

        dist_class = module.get_train_action_dist_cls()
        current = dist_class.from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        logp = current.logp(batch[Columns.ACTIONS])
        ratio = torch.exp(logp - batch[Columns.ACTION_LOGP])
        advantages = batch[Postprocessing.ADVANTAGES]
        surrogate = torch.min(
            advantages * ratio, advantages * torch.clamp(ratio, 1 - config.clip_param, 1 + config.clip_param)
        )

        # A module whose training forward pass already yields values (GEA's value head
        # shares the language model's forward pass) returns them under VF_PREDS.
        values = fwd_out.get(Columns.VF_PREDS)
        if values is None:
            values = module.compute_values(batch, embeddings=fwd_out.get(Columns.EMBEDDINGS))
        vf_loss = torch.pow(values - batch[Postprocessing.VALUE_TARGETS], 2.0)
        vf_loss_clipped = torch.clamp(vf_loss, 0, config.vf_clip_param)

        entropy_term = self._entropy_term(current, batch, mask)
        entropy_coeff = self.entropy_coeff_schedulers_per_module[module_id].get_current_value()
        total_loss = masked_mean(-surrogate + config.vf_loss_coeff * vf_loss_clipped) - entropy_coeff * entropy_term

        # The env runners keep only the sampled actions' log-probabilities, so the KL
        # between the sampling and the current policy is estimated from them. It is logged
        # in every run and enters the loss only with use_kl_loss.
        mean_kl = masked_mean(approximate_kl(batch[Columns.ACTION_LOGP], logp))
        if config.use_kl_loss:
            total_loss = total_loss + self.curr_kl_coeffs_per_module[module_id] * mean_kl

        sft_loss = torch.tensor(0.0, device=total_loss.device)
        if self.expert_source is not None:
            sft_loss = self._sft_loss(module)
            total_loss = total_loss + self.sft_coeff * sft_loss

        self.metrics.log_dict(
            {
                POLICY_LOSS_KEY: -masked_mean(surrogate),
                VF_LOSS_KEY: masked_mean(vf_loss_clipped),
                LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY: explained_variance(
                    batch[Postprocessing.VALUE_TARGETS][mask], values[mask]
                ),
                ENTROPY_KEY: masked_mean(current.entropy()),
                NORMALIZED_ENTROPY_METRIC: entropy_term,
                LEARNER_RESULTS_KL_KEY: mean_kl,
                SFT_LOSS_METRIC: sft_loss,
            },
            key=module_id,
            window=1,
        )
        return total_loss

    def _entropy_term(self, distribution: Any, batch: dict[str, Any], mask: torch.Tensor) -> torch.Tensor:
        """Mean normalized entropy with each embodiment weighted equally (plain entropy if unsupported)."""
        if hasattr(distribution, "normalized_entropy"):
            entropy = distribution.normalized_entropy()
        else:
            entropy = distribution.entropy()
        observations = batch.get(Columns.OBS)
        if isinstance(observations, dict) and OBS_EMBODIMENT in observations:
            return mean_per_group(entropy[mask], observations[OBS_EMBODIMENT][mask].long())
        return entropy[mask].mean()

    def _sft_loss(self, module: Any) -> torch.Tensor:
        """Negative log-likelihood per expert action (summed over its tokens) on a fresh expert batch."""
        expert = self.expert_source.sample(self.sft_batch_size, self._expert_rng)
        expert_batch = {
            Columns.OBS: {key: torch.as_tensor(value, device=self._device) for key, value in expert[Columns.OBS].items()},
            Columns.ACTIONS: torch.as_tensor(expert[Columns.ACTIONS], device=self._device),
        }
        # NOTE: with several learners this forward pass bypasses the DistributedDataParallel
        # wrapper. The gradients still reach the shared parameters, but this path has only
        # run with a single learner.
        fwd_out = module.forward_train(expert_batch)
        distribution = module.get_train_action_dist_cls().from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        return -distribution.logp(expert_batch[Columns.ACTIONS]).mean()

"""Generalized advantage estimation with per-embodiment return normalization.

Returns of different embodiments differ by orders of magnitude (a MuJoCo episode
returns thousands, a BabyAI episode at most 1). The value head therefore predicts
returns normalized by running statistics of its own embodiment: value targets are
``(G - mean_e) / std_e`` and advantages are divided by ``std_e`` before the usual
batch standardization, so no embodiment dominates the value loss or the policy
gradient.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.postprocessing.value_predictions import compute_value_targets

from gea.rl.env import OBS_EMBODIMENT

# Floor of a normalizer's standard deviation, so a constant return does not divide by 0.
_MIN_STD = 1e-4


class RunningMeanStd:
    """Mean and variance of every value seen so far (Chan et al.'s parallel update)."""

    def __init__(self) -> None:
        self.mean = 0.0
        self.var = 1.0
        self.count = 0

    @property
    def std(self) -> float:
        return max(float(np.sqrt(self.var)), _MIN_STD)

    def update(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.size == 0:
            return
        batch_mean, batch_var, batch_count = float(values.mean()), float(values.var()), values.size
        if self.count == 0:
            self.mean, self.var, self.count = batch_mean, batch_var, batch_count
            return
        total = self.count + batch_count
        delta = batch_mean - self.mean
        self.mean += delta * batch_count / total
        combined = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        self.var = combined / total
        self.count = total

    def get_state(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def set_state(self, state: dict[str, float]) -> None:
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), int(state["count"])


class ReturnNormalizer:
    """One `RunningMeanStd` of returns per embodiment index."""

    def __init__(self) -> None:
        self.statistics: dict[int, RunningMeanStd] = {}

    def _get(self, group: int) -> RunningMeanStd:
        return self.statistics.setdefault(int(group), RunningMeanStd())

    def means_and_stds(self, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return each sample's mean and std, shape ``groups.shape``."""
        means = np.array([self._get(group).mean for group in groups], dtype=np.float64)
        stds = np.array([self._get(group).std for group in groups], dtype=np.float64)
        return means, stds

    def update(self, values: np.ndarray, groups: np.ndarray) -> None:
        for group in np.unique(groups):
            self._get(group).update(values[groups == group])

    def get_state(self) -> dict[str, Any]:
        return {str(group): stats.get_state() for group, stats in self.statistics.items()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.statistics = {}
        for group, stats_state in state.items():
            self._get(int(group)).set_state(stats_state)


def compute_normalized_targets(
    normalized_values: np.ndarray,
    rewards: np.ndarray,
    terminateds: np.ndarray,
    truncateds: np.ndarray,
    valid: np.ndarray,
    groups: np.ndarray,
    normalizer: Optional[ReturnNormalizer],
    gamma: float,
    lambda_: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Compute standardized advantages and (normalized) value targets for a flat batch.

    The inputs follow RLlib's learner layout: episodes one after another, each followed
    by one artificial step (``valid`` False) whose value is the bootstrap value of a
    truncated episode. `normalizer` None switches return normalization off.

    Returns:
        ``(advantages, value_targets)``, both float32 of the input length. Entries of
        artificial steps are meaningless and masked out of the loss.
    """
    if normalizer is None:
        means, stds = np.zeros(len(groups)), np.ones(len(groups))
    else:
        means, stds = normalizer.means_and_stds(groups)
    values = normalized_values * stds + means
    targets = compute_value_targets(
        values=values,
        rewards=rewards,
        terminateds=terminateds,
        truncateds=truncateds,
        gamma=gamma,
        lambda_=lambda_,
    ).astype(np.float64)
    if normalizer is not None:
        normalizer.update(targets[valid], groups[valid])
        means, stds = normalizer.means_and_stds(groups)
    advantages = (targets - values) / stds
    real_advantages = advantages[valid]
    advantages = (advantages - real_advantages.mean()) / max(_MIN_STD, real_advantages.std())
    return advantages.astype(np.float32), ((targets - means) / stds).astype(np.float32)


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


class NormalizedGeneralAdvantageEstimation(ConnectorV2):
    """Learner connector piece replacing RLlib's `GeneralAdvantageEstimation`.

    It runs last in the learner pipeline, after RLlib's `AddOneTsToEpisodesAndTruncate`
    and tensor conversion, and writes `Postprocessing.ADVANTAGES` and
    `Postprocessing.VALUE_TARGETS` into each module's batch. Only stateless modules
    (no time dimension) are supported; GEA's module carries history as stacked frames.
    """

    def __init__(
        self,
        input_observation_space=None,
        input_action_space=None,
        *,
        gamma: float,
        lambda_: float,
        normalize_returns: bool = True,
    ) -> None:
        super().__init__(input_observation_space, input_action_space)
        self.gamma = gamma
        self.lambda_ = lambda_
        self.normalize_returns = normalize_returns
        self.normalizers: dict[str, ReturnNormalizer] = {}

    def __call__(self, *, rl_module: Any, episodes: list, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        for module_id, module_batch in batch.items():
            module = rl_module[module_id]
            if not isinstance(module, ValueFunctionAPI):
                continue
            if module.is_stateful():
                raise ValueError(
                    f"Module {module_id!r} is stateful; NormalizedGeneralAdvantageEstimation supports "
                    "stateless modules only. Stack frames in the observation instead of using a memory."
                )
            self._process_module(module_id, module, module_batch)
        return batch

    def _process_module(self, module_id: str, module: Any, module_batch: dict[str, Any]) -> None:
        with torch.no_grad():
            values_tensor = module.compute_values(module_batch)
        values = _to_numpy(values_tensor).astype(np.float64).reshape(-1)
        count = values.shape[0]
        valid = _to_numpy(module_batch.get(Columns.LOSS_MASK, np.ones(count, dtype=bool))).astype(bool)
        observations = module_batch[Columns.OBS]
        if isinstance(observations, dict) and OBS_EMBODIMENT in observations:
            groups = _to_numpy(observations[OBS_EMBODIMENT]).astype(np.int64).reshape(-1)
        else:
            groups = np.zeros(count, dtype=np.int64)
        normalizer = None
        if self.normalize_returns:
            normalizer = self.normalizers.setdefault(module_id, ReturnNormalizer())

        advantages, targets = compute_normalized_targets(
            normalized_values=values,
            rewards=_to_numpy(module_batch[Columns.REWARDS]).astype(np.float64),
            terminateds=_to_numpy(module_batch[Columns.TERMINATEDS]).astype(np.float64),
            truncateds=_to_numpy(module_batch[Columns.TRUNCATEDS]).astype(np.float64),
            valid=valid,
            groups=groups,
            normalizer=normalizer,
            gamma=self.gamma,
            lambda_=self.lambda_,
        )
        device = values_tensor.device
        module_batch[Postprocessing.ADVANTAGES] = torch.as_tensor(advantages, device=device)
        module_batch[Postprocessing.VALUE_TARGETS] = torch.as_tensor(targets, device=device)

    def get_state(self, components=None, *, not_components=None, **kwargs) -> dict[str, Any]:
        return {module_id: normalizer.get_state() for module_id, normalizer in self.normalizers.items()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.normalizers = {}
        for module_id, normalizer_state in state.items():
            normalizer = ReturnNormalizer()
            normalizer.set_state(normalizer_state)
            self.normalizers[module_id] = normalizer

    def get_ctor_args_and_kwargs(self) -> tuple[tuple, dict[str, Any]]:
        return (
            (self.input_observation_space, self.input_action_space),
            {"gamma": self.gamma, "lambda_": self.lambda_, "normalize_returns": self.normalize_returns},
        )

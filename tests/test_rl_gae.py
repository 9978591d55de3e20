"""GAE and per-embodiment return normalization against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from gea.rl.gae import ReturnNormalizer, RunningMeanStd, compute_normalized_targets

# Learner layout: episode A (2 steps, terminated), its artificial step, episode B
# (2 steps, truncated), its artificial step holding B's bootstrap value V(s_2) = 5.
VALUES = np.array([0.5, 1.0, 7.0, 2.0, 4.0, 5.0])
REWARDS = np.array([1.0, 2.0, 0.0, 0.0, 3.0, 0.0])
TERMINATEDS = np.array([0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
TRUNCATEDS = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 0.0])
VALID = np.array([True, True, False, True, True, False])
GAMMA, LAMBDA = 0.9, 0.8

# By hand, with delta_t = r_t + gamma * V_{t+1} * (1 - terminal_t) - V_t:
#   A: delta_1 = 2 - 1 = 1.0,                 adv_1 = 1.0
#      delta_0 = 1 + 0.9 * 1.0 - 0.5 = 1.4,   adv_0 = 1.4 + 0.72 * 1.0 = 2.12
#   B: delta_1 = 3 + 0.9 * 5.0 - 4.0 = 3.5,   adv_1 = 3.5
#      delta_0 = 0 + 0.9 * 4.0 - 2.0 = 1.6,   adv_0 = 1.6 + 0.72 * 3.5 = 4.12
RAW_ADVANTAGES = np.array([2.12, 1.0, 4.12, 3.5])
TARGETS = RAW_ADVANTAGES + VALUES[VALID]


def compute(groups: np.ndarray, normalizer, values: np.ndarray = VALUES):
    return compute_normalized_targets(
        normalized_values=values,
        rewards=REWARDS,
        terminateds=TERMINATEDS,
        truncateds=TRUNCATEDS,
        valid=VALID,
        groups=groups,
        normalizer=normalizer,
        gamma=GAMMA,
        lambda_=LAMBDA,
    )


def test_gae_matches_hand_computation():
    advantages, targets = compute(np.zeros(6, dtype=np.int64), normalizer=None)
    np.testing.assert_allclose(targets[VALID], TARGETS, rtol=1e-6)
    standardized = (RAW_ADVANTAGES - RAW_ADVANTAGES.mean()) / RAW_ADVANTAGES.std()
    np.testing.assert_allclose(advantages[VALID], standardized, rtol=1e-5)


def test_terminal_ignores_next_value():
    changed = VALUES.copy()
    changed[2] = -100.0  # the artificial step after a terminal must not be bootstrapped
    _, targets = compute(np.zeros(6, dtype=np.int64), normalizer=None, values=changed)
    np.testing.assert_allclose(targets[VALID], TARGETS, rtol=1e-6)


def test_truncation_bootstraps_next_value():
    changed = VALUES.copy()
    changed[5] = 15.0  # B's bootstrap value rises by 10
    _, targets = compute(np.zeros(6, dtype=np.int64), normalizer=None, values=changed)
    assert targets[4] == pytest.approx(TARGETS[3] + GAMMA * 10.0, rel=1e-6)
    assert targets[3] == pytest.approx(TARGETS[2] + GAMMA * LAMBDA * GAMMA * 10.0, rel=1e-6)


def test_normalized_targets_per_embodiment():
    groups = np.array([0, 0, 0, 1, 1, 1])
    normalizer = ReturnNormalizer()
    # A fresh normalizer has mean 0 and std 1, so values are used as they are.
    _, targets = compute(groups, normalizer)
    first = normalizer.statistics[0]
    second = normalizer.statistics[1]
    assert first.mean == pytest.approx(TARGETS[:2].mean())
    assert second.mean == pytest.approx(TARGETS[2:].mean())
    expected_a = (TARGETS[:2] - TARGETS[:2].mean()) / TARGETS[:2].std()
    expected_b = (TARGETS[2:] - TARGETS[2:].mean()) / TARGETS[2:].std()
    np.testing.assert_allclose(targets[VALID], np.concatenate([expected_a, expected_b]), rtol=1e-5)


def test_running_mean_std_matches_numpy():
    rng = np.random.default_rng(0)
    chunks = [rng.normal(3.0, 2.0, size) for size in (5, 17, 1, 40)]
    statistics = RunningMeanStd()
    for chunk in chunks:
        statistics.update(chunk)
    everything = np.concatenate(chunks)
    assert statistics.mean == pytest.approx(everything.mean())
    assert statistics.var == pytest.approx(everything.var())
    assert statistics.count == everything.size


def test_normalizer_state_round_trip():
    normalizer = ReturnNormalizer()
    normalizer.update(np.array([1.0, 2.0, 10.0]), np.array([0, 0, 3]))
    restored = ReturnNormalizer()
    restored.set_state(normalizer.get_state())
    assert restored.statistics[3].mean == pytest.approx(10.0)
    assert restored.statistics[0].count == 2

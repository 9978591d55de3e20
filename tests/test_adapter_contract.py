"""The adapter contract, run on every registered embodiment with its real simulator."""

from __future__ import annotations

import numpy as np
import pytest

from adapter_contract import (
    check_prompt,
    check_reset_and_step,
    expert_successes,
    first_frame,
    frame_after_reuse,
    required_successes,
)
from gea_envs import ADAPTERS, UnknownNameError, get_adapter

NAMES = ADAPTERS.names()


def test_unknown_name_lists_known_ones():
    with pytest.raises(UnknownNameError) as error:
        get_adapter("metaworld/no-such-task")
    assert "Known embodiments" in str(error.value)
    for name in NAMES[:3]:
        assert name in str(error.value)


@pytest.mark.parametrize("name", NAMES)
def test_prompt_and_metadata(name):
    check_prompt(get_adapter(name))


@pytest.mark.parametrize("name", NAMES)
def test_reset_step_and_action_round_trip(name):
    check_reset_and_step(get_adapter(name))


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_first_frame(name):
    adapter = get_adapter(name)
    np.testing.assert_array_equal(first_frame(adapter, 7), first_frame(adapter, 7))


@pytest.mark.parametrize("name", NAMES)
def test_reused_env_resets_like_fresh(name):
    # Collection and evaluation reuse one environment across seeds.
    adapter = get_adapter(name)
    np.testing.assert_array_equal(frame_after_reuse(adapter, 7), first_frame(adapter, 7))


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_expert_reaches_stated_success(name):
    adapter = get_adapter(name)
    episodes = 5
    assert expert_successes(adapter, list(range(100, 100 + episodes))) >= required_successes(adapter, episodes)

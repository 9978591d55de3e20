"""BabyAI adapters (``babyai/<Level>``) on the real minigrid simulator, with the BabyAI bot as expert."""

from __future__ import annotations

import logging

import gymnasium as gym
import numpy as np
import pytest

from gea_envs import ADAPTERS, DiscreteActionSpace, Domain, get_adapter
from gea_envs.adapters.babyai_adapter import LEVELS, BabyAIAdapter, BabyAIBotExpert, PartialViewFrame
from gea_envs.rollout import run_expert_episode

IMAGE_SIZE = 64
NAMES = [f"babyai/{level.level}" for level in LEVELS]
# Levels whose episodes take under ~100 bot steps, so their expert runs stay fast.
FAST_NAMES = ["babyai/GoToLocal", "babyai/PickupLoc", "babyai/UnlockPickup"]


def first_observation(adapter: BabyAIAdapter, seed: int, image_size: int = IMAGE_SIZE):
    env = adapter.make_env(seed=seed, image_size=image_size)
    try:
        raw_obs, info = env.reset(seed=seed)
        return adapter.observe(env, raw_obs, info)
    finally:
        env.close()


def test_required_levels_registered():
    for level in ("GoToLocal", "PickupLoc", "GoTo", "Pickup", "UnlockPickup", "GoToObjMaze"):
        assert f"babyai/{level}" in ADAPTERS


@pytest.mark.parametrize("name", NAMES)
def test_max_steps_match_minigrid(name):
    adapter = get_adapter(name)
    env = adapter.make_env(seed=0, image_size=IMAGE_SIZE)
    try:
        env.reset(seed=0)
        assert env.unwrapped.max_steps == adapter.max_episode_steps
    finally:
        env.close()


def test_action_names_follow_minigrid_order():
    from minigrid.core.actions import Actions

    adapter = get_adapter("babyai/GoToLocal")
    assert isinstance(adapter.action_space, DiscreteActionSpace)
    assert adapter.action_space.names == (
        "turn left",
        "turn right",
        "move forward",
        "pick up",
        "drop",
        "toggle",
        "done",
    )
    assert [action.value for action in Actions] == list(range(adapter.action_space.n))


@pytest.mark.parametrize("bad_action", [7, -1, 2.0, True, "forward"])
def test_invalid_discrete_action_raises(bad_action):
    adapter = get_adapter("babyai/GoToLocal")
    with pytest.raises(ValueError):
        adapter.to_env_action(bad_action)


def test_metadata_and_prompt():
    adapter = get_adapter("babyai/GoTo")
    assert adapter.domain == Domain.NAVIGATION
    assert "egocentric 7x7 partial view, top-down" in adapter.prompt.camera
    assert "GoTo" in adapter.prompt.simulator
    assert adapter.describe()["name"] == "babyai/GoTo"


@pytest.mark.parametrize("image_size", [64, 56, 100])
def test_frame_shape_and_instruction(image_size):
    adapter = get_adapter("babyai/PickupLoc")
    observation = first_observation(adapter, seed=3, image_size=image_size)
    assert len(observation.frames) == 1
    frame = observation.frames[0]
    assert frame.shape == (image_size, image_size, 3)
    assert frame.dtype == np.uint8
    assert observation.instruction.startswith("pick up")
    assert observation.proprio is None


def test_frame_shows_agent_at_bottom_centre():
    observation = first_observation(get_adapter("babyai/GoToLocal"), seed=0, image_size=70)
    tile = 10  # 70 pixels over 7 cells, so no resize
    agent_tile = observation.frames[0][6 * tile : 7 * tile, 3 * tile : 4 * tile]
    # Visible cells are drawn lightened, so the red agent is about (255, 76, 76).
    red = (agent_tile[..., 0] > 200) & (agent_tile[..., 1] < 100) & (agent_tile[..., 2] < 100)
    assert red.sum() > 10


def test_image_size_below_view_cells_raises():
    env = gym.make("BabyAI-GoToLocal-v0")
    try:
        with pytest.raises(ValueError, match="image_size"):
            PartialViewFrame(env, image_size=5)
    finally:
        env.close()


def test_same_seed_same_first_frame():
    adapter = get_adapter("babyai/GoTo")
    first = first_observation(adapter, seed=11)
    second = first_observation(adapter, seed=11)
    np.testing.assert_array_equal(first.frames[0], second.frames[0])
    assert first.instruction == second.instruction


def test_different_seeds_differ():
    adapter = get_adapter("babyai/GoTo")
    observations = [first_observation(adapter, seed) for seed in range(4)]
    starts = {(observation.instruction, observation.frames[0].tobytes()) for observation in observations}
    assert len(starts) == 4


def test_level_generator_output_goes_to_log(capsys, caplog):
    adapter = get_adapter("babyai/PickupLoc")
    with caplog.at_level(logging.DEBUG, logger="gea_envs.adapters.babyai_adapter"):
        for seed in range(6):  # some of seeds 0-5 print "Sampling rejected" lines in minigrid 3.2.0
            first_observation(adapter, seed)
    assert "Sampling rejected" not in capsys.readouterr().out
    assert any("Sampling rejected" in record.getMessage() for record in caplog.records)


def test_expert_before_reset_raises():
    adapter = get_adapter("babyai/GoToLocal")
    env = adapter.make_env(seed=0, image_size=IMAGE_SIZE)
    try:
        raw_obs, info = env.reset(seed=0)
        with pytest.raises(RuntimeError, match="reset"):
            BabyAIBotExpert().act(env, raw_obs, info)
    finally:
        env.close()


@pytest.mark.parametrize("name", FAST_NAMES)
def test_expert_solves_fast_levels(name):
    adapter = get_adapter(name)
    for seed in (0, 1, 2):
        episode = run_expert_episode(adapter, seed, IMAGE_SIZE)
        assert episode.success, f"{name} seed {seed}: {episode.instruction!r} failed after {episode.length} steps"
        assert episode.rewards[-1] > 0
        assert not episode.truncated
        assert len(episode.frames) == episode.length
        assert all(adapter.action_space.validate(action) == action for action in episode.actions)


@pytest.mark.parametrize("name", NAMES)
def test_expert_success_on_twenty_seeds(name):
    adapter = get_adapter(name)
    env = adapter.make_env(seed=0, image_size=IMAGE_SIZE)
    try:
        episodes = [run_expert_episode(adapter, seed, IMAGE_SIZE, record=False, env=env) for seed in range(20)]
    finally:
        env.close()
    assert sum(episode.success for episode in episodes) >= 19


def test_patch_labels_match_the_drawn_cells():
    """Each key, ball or box label sits on the patch drawn in its colour (one 8 px patch per cell at 56 px)."""
    from minigrid.core.constants import COLORS, IDX_TO_COLOR, OBJECT_TO_IDX

    adapter = get_adapter("babyai/GoToLocal")
    objects = {OBJECT_TO_IDX[name] for name in ("key", "ball", "box")}
    hues = {index: np.asarray(COLORS[name], float) for index, name in IDX_TO_COLOR.items() if name != "grey"}
    env = adapter.make_env(seed=0, image_size=56)
    checked = 0
    try:
        for seed in range(5):
            raw_obs, info = env.reset(seed=seed)
            frame = adapter.observe(env, raw_obs, info).frames[0]
            labels = adapter.patch_labels(env)
            assert labels.shape == (7, 7)
            assert labels.max() < adapter.patch_label_count
            for (row, col), label in np.ndenumerate(labels):
                kind, color = divmod(int(label), 6)
                if kind not in objects or color not in hues:
                    continue
                pixels = frame[row * 8:(row + 1) * 8, col * 8:(col + 1) * 8].reshape(-1, 3).astype(float)
                vivid = pixels[np.ptp(pixels, axis=1).argmax()]
                # Objects are drawn over a grey floor: compare the colour direction, not the value.
                shifted = vivid - vivid.min()
                scores = {index: shifted @ (hue - hue.min()) / np.linalg.norm(hue - hue.min()) for index, hue in hues.items()}
                assert max(scores, key=scores.get) == color, (seed, row, col, vivid)
                checked += 1
    finally:
        env.close()
    assert checked >= 5

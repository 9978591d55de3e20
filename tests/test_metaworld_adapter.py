"""Meta-World v3 adapters on the real MuJoCo simulator: registration, observations, seeds and experts."""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
import pytest

from gea_envs import ADAPTERS, ContinuousActionSpace, Domain, get_adapter
from gea_envs.adapters._mujoco_render import FastUprightRender, camera_is_upside_down
from gea_envs.adapters.metaworld_adapter import (
    MAX_PATH_LENGTH,
    MT10_TASKS,
    PROPRIO_DIM,
    TASK_INDEX_KEY,
    MetaWorldAdapter,
    MetaWorldTask,
)
from gea_envs.rollout import run_expert_episode

IMAGE_SIZE = 64
MT10_NAMES = (
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "window-close-v3",
)
STATE_DIM = 39
GOAL_SLICE = slice(-3, None)
VARIATIONS = 50


def make_reset_env(name: str, seed: int = 0, image_size: int = IMAGE_SIZE):
    adapter = get_adapter(f"metaworld/{name}")
    env = adapter.make_env(seed=seed, image_size=image_size)
    raw_obs, info = env.reset(seed=seed)
    return adapter, env, raw_obs, info


def hand_after(env: gym.Env, action: list[float], steps: int) -> np.ndarray:
    for _ in range(steps):
        raw_obs, _, _, _, _ = env.step(np.asarray(action, dtype=np.float32))
    return raw_obs[:PROPRIO_DIM]


@pytest.fixture()
def reach():
    adapter, env, raw_obs, info = make_reset_env("reach-v3")
    yield adapter, env, raw_obs, info
    env.close()


def test_all_mt10_tasks_registered():
    for name in MT10_NAMES:
        adapter = get_adapter(f"metaworld/{name}")
        assert isinstance(adapter, MetaWorldAdapter)
        assert adapter.name == f"metaworld/{name}"
        assert adapter.domain is Domain.STATIC_MANIPULATION
    assert {f"metaworld/{task.env_name}" for task in MT10_TASKS} <= set(ADAPTERS.names())


def test_task_settings_are_consistent():
    for task in MT10_TASKS:
        adapter = get_adapter(f"metaworld/{task.env_name}")
        assert adapter.max_episode_steps == MAX_PATH_LENGTH
        assert 0.0 < adapter.expert_success_rate <= 1.0
        assert adapter.task.instruction.strip()
    assert len({task.instruction for task in MT10_TASKS}) == len(MT10_TASKS)


def test_action_space_is_4d_unit_box():
    adapter = get_adapter("metaworld/reach-v3")
    assert isinstance(adapter.action_space, ContinuousActionSpace)
    assert adapter.action_space.low == (-1.0,) * 4
    assert adapter.action_space.high == (1.0,) * 4


@pytest.mark.parametrize(
    "kwargs",
    [
        {"env_name": "reach-v2", "instruction": "reach", "expert_success_rate": 1.0},
        {"env_name": "reach-v3", "instruction": "  ", "expert_success_rate": 1.0},
        {"env_name": "reach-v3", "instruction": "reach", "expert_success_rate": 1.5},
    ],
)
def test_task_rejects_invalid_fields(kwargs):
    with pytest.raises(ValueError):
        MetaWorldTask(**kwargs)


@pytest.mark.parametrize("steps", [0, MAX_PATH_LENGTH + 1])
def test_adapter_rejects_step_limit_outside_range(steps):
    with pytest.raises(ValueError, match=str(steps)):
        MetaWorldAdapter(MT10_TASKS[0], max_episode_steps=steps)


@pytest.mark.parametrize("image_size", [0, -8, 64.0, True])
def test_make_env_rejects_invalid_image_size(image_size):
    with pytest.raises(ValueError, match="image_size"):
        get_adapter("metaworld/reach-v3").make_env(seed=0, image_size=image_size)


def test_reset_and_step_shapes(reach):
    adapter, env, raw_obs, info = reach
    assert raw_obs.shape == (STATE_DIM,)
    assert info[TASK_INDEX_KEY] == 0

    observation = adapter.observe(env, raw_obs, info)
    assert len(observation.frames) == 1
    assert observation.frames[0].shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert observation.frames[0].dtype == np.uint8
    assert observation.proprio.shape == (PROPRIO_DIM,)
    assert observation.proprio.dtype == np.float32
    np.testing.assert_allclose(observation.proprio, raw_obs[:PROPRIO_DIM], rtol=1e-6)
    assert observation.instruction == adapter.task.instruction

    raw_obs, reward, terminated, truncated, info = env.step(adapter.to_env_action(np.zeros(4)))
    assert raw_obs.shape == (STATE_DIM,)
    assert np.isfinite(float(reward))
    assert "success" in info
    assert not terminated
    assert not truncated


def test_frames_follow_image_size():
    adapter, env, raw_obs, info = make_reset_env("reach-v3", image_size=40)
    try:
        assert adapter.observe(env, raw_obs, info).frames[0].shape == (40, 40, 3)
    finally:
        env.close()


def test_to_env_action_clips_and_validates():
    adapter = get_adapter("metaworld/reach-v3")
    clipped = adapter.to_env_action([2.0, -3.0, 0.5, 1.0])
    np.testing.assert_array_equal(clipped, np.array([1.0, -1.0, 0.5, 1.0], dtype=np.float32))
    assert clipped.dtype == np.float32
    with pytest.raises(ValueError):
        adapter.to_env_action([0.0, 0.0, 0.0])
    with pytest.raises(ValueError):
        adapter.to_env_action([0.0, np.nan, 0.0, 0.0])


def test_same_seed_same_first_frame_on_reused_env(reach):
    adapter, env, raw_obs, info = reach
    first = adapter.observe(env, raw_obs, info).frames[0].copy()
    env.reset(seed=5)
    raw_obs, info = env.reset(seed=0)
    np.testing.assert_array_equal(adapter.observe(env, raw_obs, info).frames[0], first)

    adapter_fresh, env_fresh, raw_fresh, info_fresh = make_reset_env("reach-v3", seed=0)
    try:
        np.testing.assert_array_equal(adapter_fresh.observe(env_fresh, raw_fresh, info_fresh).frames[0], first)
    finally:
        env_fresh.close()


@pytest.mark.parametrize("name", ["reach-v3", "pick-place-v3", "window-open-v3"])
def test_different_seeds_different_goals(name):
    adapter = get_adapter(f"metaworld/{name}")
    env = adapter.make_env(seed=0, image_size=IMAGE_SIZE)
    try:
        obs_a, info_a = env.reset(seed=1)
        frame_a = adapter.observe(env, obs_a, info_a).frames[0].copy()
        obs_b, info_b = env.reset(seed=2)
        frame_b = adapter.observe(env, obs_b, info_b).frames[0]
    finally:
        env.close()
    assert not np.allclose(obs_a[GOAL_SLICE], obs_b[GOAL_SLICE])
    assert not np.array_equal(frame_a, frame_b)


def test_seeds_map_onto_benchmark_variations(reach):
    _, env, _, _ = reach
    first_goal = env.reset(seed=3)[0][GOAL_SLICE]
    raw_obs, info = env.reset(seed=3 + VARIATIONS)
    assert info[TASK_INDEX_KEY] == 3
    np.testing.assert_array_equal(raw_obs[GOAL_SLICE], first_goal)

    _, info = env.reset()
    assert 0 <= info[TASK_INDEX_KEY] < VARIATIONS


def test_seedless_resets_repeat_after_same_seed(reach):
    _, env, _, _ = reach
    env.reset(seed=11)
    after_first = [env.reset()[1][TASK_INDEX_KEY] for _ in range(4)]
    env.reset(seed=11)
    after_second = [env.reset()[1][TASK_INDEX_KEY] for _ in range(4)]
    assert after_first == after_second


def wood_and_arm_masks(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return boolean masks of table-wood pixels and of red arm pixels."""
    r, g, b = (frame[..., channel].astype(int) for channel in range(3))
    wood = (r > 60) & (r - b > 25) & (g - b > 10) & (r - g > 15) & (r - g < 60)
    arm = (r > 100) & (g < 50) & (b < 50)
    assert wood.sum() > 300, "too few table pixels to judge the orientation"
    assert arm.sum() > 100, "too few red arm pixels to judge the orientation"
    return wood, arm


@pytest.mark.parametrize("name", ["reach-v3", "door-open-v3", "window-close-v3"])
def test_frame_is_upright(name):
    adapter, env, raw_obs, info = make_reset_env(name)
    try:
        frame = adapter.observe(env, raw_obs, info).frames[0]
    finally:
        env.close()
    wood, arm = wood_and_arm_masks(frame)
    rows, columns = np.indices(frame.shape[:2])
    # The table top fills the lower part of an upright frame and the arm reaches down from above.
    assert rows[wood].mean() > rows[arm].mean() + 8
    # The arm's base is at the lower left; a frame mirrored left to right would put it at the right.
    lower_half = rows >= frame.shape[0] // 2
    assert columns[arm & lower_half].mean() < frame.shape[1] / 4


def test_corner_cameras_detected_upside_down(reach):
    _, env, _, _ = reach
    base = env.unwrapped
    for camera in ("corner", "corner2", "corner3", "corner4"):
        camera_id = mujoco.mj_name2id(base.model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        assert camera_is_upside_down(base.data, camera_id), camera
    topview = mujoco.mj_name2id(base.model, mujoco.mjtObj.mjOBJ_CAMERA, "topview")
    assert not camera_is_upside_down(base.data, topview)
    assert not camera_is_upside_down(base.data, -1)


def test_render_quality_is_fast(reach):
    _, env, _, _ = reach
    quality = env.unwrapped.model.vis.quality
    assert quality.shadowsize == 0
    assert quality.offsamples == 0


def test_fast_render_rejects_late_or_wrong_wrapping():
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    env_class = ALL_V3_ENVIRONMENTS["reach-v3"]
    no_render = env_class()
    try:
        with pytest.raises(ValueError, match="rgb_array"):
            FastUprightRender(no_render)
    finally:
        no_render.close()

    _, env, _, _ = make_reset_env("reach-v3")
    try:
        env.render()
        with pytest.raises(RuntimeError, match="before the first render"):
            FastUprightRender(env.unwrapped)
    finally:
        env.close()


def test_action_axes_match_prompt(reach):
    adapter, env, raw_obs, _ = reach
    start = raw_obs[:PROPRIO_DIM]
    steps = 10
    for axis in range(3):
        env.reset(seed=0)
        action = [0.0, 0.0, 0.0, -1.0]
        action[axis] = 1.0
        moved = hand_after(env, action, steps)[axis] - start[axis]
        # One unit moves the hand's target 1 cm per step; the hand trails its target a little.
        assert 0.5 * 0.01 * steps < moved <= 0.01 * steps + 1e-3, (axis, moved)
    assert "1 cm per unit per step" in adapter.prompt.action_space


def test_gripper_command_sign_matches_prompt(reach):
    _, env, _, _ = reach
    closed = hand_after(env, [0.0, 0.0, 0.0, 1.0], steps=15)[3]
    opened = hand_after(env, [0.0, 0.0, 0.0, -1.0], steps=15)[3]
    assert closed < 0.5 < opened


@pytest.mark.parametrize("name", ["reach-v3", "pick-place-v3"])
def test_expert_solves_task(name):
    adapter = get_adapter(f"metaworld/{name}")
    env = adapter.make_env(seed=0, image_size=IMAGE_SIZE)
    try:
        for seed in (0, 1, 2):
            episode = run_expert_episode(adapter, seed, IMAGE_SIZE, record=False, env=env)
            assert episode.success, (name, seed)
            # The episode ends at the success step instead of running to the step limit.
            assert not episode.truncated, (name, seed)
            assert episode.length < adapter.max_episode_steps, (name, seed)
    finally:
        env.close()


def test_recorded_episode_has_frames_per_step():
    adapter = get_adapter("metaworld/reach-v3")
    episode = run_expert_episode(adapter, 4, IMAGE_SIZE)
    assert episode.success
    assert len(episode.frames) == episode.length
    assert len(episode.proprio) == episode.length
    assert episode.frames[0][0].shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert all(action.shape == (4,) for action in episode.actions)
    assert episode.instruction == adapter.task.instruction


def test_episode_continues_without_success_termination():
    task = MT10_TASKS[0]
    adapter = MetaWorldAdapter(task, max_episode_steps=120, terminate_on_success=False)
    episode = run_expert_episode(adapter, 0, IMAGE_SIZE, record=False)
    assert episode.success
    assert episode.truncated
    assert episode.length == 120


@pytest.mark.slow
@pytest.mark.parametrize("name", MT10_NAMES)
def test_expert_meets_stated_success_rate(name):
    adapter = get_adapter(f"metaworld/{name}")
    env = adapter.make_env(seed=0, image_size=IMAGE_SIZE)
    try:
        # Seeds 0-49 play each of the 50 benchmark variations once, so the rate is exact.
        successes = sum(
            run_expert_episode(adapter, seed, IMAGE_SIZE, record=False, env=env).success for seed in range(VARIATIONS)
        )
    finally:
        env.close()
    assert successes / VARIATIONS >= adapter.expert_success_rate - 1e-9

"""Gymnasium MuJoCo adapters, their shipped stable-baselines3 experts and `gea train-expert`."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import gea_envs
from gea.cli import main as gea_main
from gea.experts import ExpertTrainingConfig, evaluate_expert, train_expert, trainable_embodiments
from gea.experts.sb3 import get_trainable_adapter
from gea_envs import ADAPTERS, ContinuousActionSpace, Domain, EpisodeOutcome, UnknownNameError, get_adapter
from gea_envs.adapters.mujoco_adapter import TASKS, MujocoAdapter, load_sb3_model
from gea_envs.rollout import run_expert_episode

IMAGE_SIZE = 32
NAMES = [f"mujoco/{task.env_id}" for task in TASKS]
EXPERT_SEEDS = tuple(range(101, 111))
# Ten episodes estimate a success rate of 0.85 to within about +-0.11 (one binomial standard deviation).
EXPERT_RATE_SLACK = 0.2


@pytest.fixture(scope="module", params=NAMES)
def adapter(request) -> MujocoAdapter:
    return get_adapter(request.param)


def first_observation(adapter: MujocoAdapter, seed: int):
    env = adapter.make_env(seed=seed, image_size=IMAGE_SIZE)
    try:
        raw_obs, info = env.reset(seed=seed)
        return adapter.observe(env, raw_obs, info), env.observation_space.shape
    finally:
        env.close()


def test_required_tasks_registered():
    for name in ("mujoco/Reacher-v5", "mujoco/InvertedPendulum-v5", "mujoco/HalfCheetah-v5"):
        assert name in ADAPTERS


def test_adapter_metadata(adapter):
    assert adapter.domain == Domain.CONTINUOUS_CONTROL
    assert isinstance(adapter.action_space, ContinuousActionSpace)
    assert f"{adapter.task.success_return:g}" in adapter.success_rule
    assert adapter.describe()["name"] == adapter.name


def test_action_bounds_match_gymnasium(adapter):
    env = gym.make(adapter.task.env_id)
    try:
        np.testing.assert_array_equal(np.asarray(adapter.action_space.low, np.float32), env.action_space.low)
        np.testing.assert_array_equal(np.asarray(adapter.action_space.high, np.float32), env.action_space.high)
    finally:
        env.close()


def test_observation_shapes(adapter):
    observation, state_shape = first_observation(adapter, seed=0)
    assert len(observation.frames) == 1
    frame = observation.frames[0]
    assert frame.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert frame.dtype == np.uint8
    assert frame.std() > 0, "the rendered frame is a single colour"
    assert observation.proprio.dtype == np.float32
    assert observation.proprio.shape == state_shape
    assert observation.instruction.strip()


def test_same_seed_same_first_frame(adapter):
    first, _ = first_observation(adapter, seed=7)
    second, _ = first_observation(adapter, seed=7)
    np.testing.assert_array_equal(first.frames[0], second.frames[0])
    np.testing.assert_array_equal(first.proprio, second.proprio)


def test_different_seed_different_state(adapter):
    first, _ = first_observation(adapter, seed=7)
    second, _ = first_observation(adapter, seed=8)
    assert not np.array_equal(first.proprio, second.proprio)


def test_render_quality_lowered(adapter):
    env = adapter.make_env(seed=0, image_size=IMAGE_SIZE)
    try:
        assert env.unwrapped.model.vis.quality.shadowsize == 0
        assert env.unwrapped.model.vis.quality.offsamples == 0
    finally:
        env.close()


def test_image_size_must_be_positive(adapter):
    with pytest.raises(ValueError, match="image_size"):
        adapter.make_env(seed=0, image_size=0)


def test_action_validation(adapter):
    dim = adapter.action_space.dim
    inside = np.full(dim, 0.5 * adapter.task.torque_limit, dtype=np.float32)
    np.testing.assert_array_equal(adapter.to_env_action(inside), inside)
    np.testing.assert_array_equal(adapter.from_env_action(inside), inside)
    with pytest.raises(ValueError, match="shape"):
        adapter.to_env_action(np.zeros(dim + 1, dtype=np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        adapter.to_env_action(np.full(dim, np.nan, dtype=np.float32))


def test_action_outside_bounds_rejected(adapter):
    too_high = np.full(adapter.action_space.dim, 1.01 * adapter.task.torque_limit, dtype=np.float32)
    with pytest.raises(ValueError, match="outside the bounds"):
        adapter.to_env_action(too_high)
    with pytest.raises(ValueError, match="outside the bounds"):
        adapter.from_env_action(-too_high)
    clipped = adapter.action_space.clip(too_high)
    np.testing.assert_array_equal(adapter.to_env_action(clipped), clipped)


def test_success_uses_return_threshold(adapter):
    threshold = adapter.task.success_return
    steps = adapter.max_episode_steps
    assert adapter.is_success(EpisodeOutcome(episode_return=threshold, length=steps, goal_reached=False))
    assert not adapter.is_success(EpisodeOutcome(episode_return=threshold - 1, length=steps, goal_reached=False))
    assert not adapter.goal_reached(reward=1.0, terminated=True, info={})


def test_missing_expert_names_file_and_command(tmp_path):
    adapter = get_adapter("mujoco/Reacher-v5")
    missing = tmp_path / "absent.zip"
    with pytest.raises(FileNotFoundError) as error:
        adapter.load_expert(missing)
    assert str(missing) in str(error.value)
    assert "gea train-expert mujoco/Reacher-v5" in str(error.value)


@pytest.mark.parametrize("name", NAMES)
def test_shipped_expert_succeeds(name):
    adapter = get_adapter(name)
    evaluation = evaluate_expert(adapter, adapter.make_expert(env=None), EXPERT_SEEDS, image_size=IMAGE_SIZE)
    minimum_rate = adapter.expert_success_rate - EXPERT_RATE_SLACK
    message = f"{name} expert returns {evaluation.returns} on seeds {EXPERT_SEEDS}"
    assert evaluation.success_rate >= minimum_rate, message


def test_expert_actions_inside_bounds():
    adapter = get_adapter("mujoco/HalfCheetah-v5")
    episode = run_expert_episode(adapter, seed=5, image_size=IMAGE_SIZE, record=True)
    actions = np.stack(episode.actions)
    assert actions.dtype == np.float32
    assert np.all(actions >= np.asarray(adapter.action_space.low, np.float32))
    assert np.all(actions <= np.asarray(adapter.action_space.high, np.float32))
    assert len(episode.frames) == episode.length == adapter.max_episode_steps
    assert episode.frames[0][0].shape == (IMAGE_SIZE, IMAGE_SIZE, 3)


def test_train_expert_command_round_trip(tmp_path):
    out = tmp_path / "reacher.zip"
    exit_code = gea_main(
        ["train-expert", "mujoco/Reacher-v5", "--timesteps", "300", "--out", str(out), "--eval-episodes", "1"]
    )
    assert exit_code == 0
    assert out.is_file()

    adapter = get_adapter("mujoco/Reacher-v5")
    expert = adapter.load_expert(out)
    env = adapter.make_env(seed=0, image_size=IMAGE_SIZE)
    try:
        raw_obs, info = env.reset(seed=0)
        action = expert.act(env, raw_obs, info)
    finally:
        env.close()
    assert adapter.action_space.validate(action).shape == (adapter.action_space.dim,)


def test_train_expert_resume_adds_timesteps(tmp_path):
    first = tmp_path / "first.zip"
    resumed = tmp_path / "resumed.zip"
    base = {"embodiment": "mujoco/InvertedPendulum-v5", "timesteps": 200, "eval_episodes": 0}
    train_expert(ExpertTrainingConfig(out=first, **base))
    train_expert(ExpertTrainingConfig(out=resumed, resume=first, **base))

    assert load_sb3_model(resumed, "SAC").num_timesteps == 400


def test_resume_from_missing_file_rejected(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        ExpertTrainingConfig(embodiment="mujoco/Reacher-v5", resume=tmp_path / "absent.zip")


def test_train_expert_stops_at_budget(tmp_path):
    out = tmp_path / "pendulum.zip"
    budget_minutes = 0.002  # 0.12 s: far fewer steps than requested fit in it.
    config = ExpertTrainingConfig(
        embodiment="mujoco/InvertedPendulum-v5",
        out=out,
        timesteps=1_000_000,
        eval_episodes=0,
        max_minutes=budget_minutes,
    )
    assert train_expert(config) == out

    model = load_sb3_model(out, "SAC")
    assert 0 < model.num_timesteps < 1_000_000


def test_trainable_embodiments_lists_mujoco():
    assert set(NAMES) <= set(trainable_embodiments())


def test_untrainable_embodiment_rejected(monkeypatch):
    name = "test/untrainable"
    # A discrete-action adapter without a stable-baselines3 expert represents the other suites.
    monkeypatch.setitem(ADAPTERS._factories, name, lambda: _UntrainableAdapter())
    with pytest.raises(ValueError, match="mujoco/Reacher-v5"):
        get_trainable_adapter(name)


def test_unknown_embodiment_rejected():
    with pytest.raises(UnknownNameError):
        get_trainable_adapter("mujoco/NoSuchEnv-v0")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("timesteps", 0, "timesteps"),
        ("seed", -1, "seed"),
        ("eval_episodes", -1, "eval_episodes"),
        ("torch_threads", 0, "torch_threads"),
        ("max_minutes", 0.0, "max_minutes"),
        ("out", "expert.pt", ".zip"),
    ],
)
def test_training_config_validation(field, value, message):
    with pytest.raises(ValueError, match=message):
        ExpertTrainingConfig(embodiment="mujoco/Reacher-v5", **{field: value})


class _UntrainableAdapter(gea_envs.EmbodimentAdapter):
    name = "test/untrainable"
    domain = Domain.NAVIGATION
    prompt = gea_envs.EmbodimentPrompt(agent="a dot", action_space="left or right", simulator="none", camera="none")
    action_space = gea_envs.DiscreteActionSpace(("left", "right"))
    max_episode_steps = 1
    success_rule = "never"

    def make_env(self, seed, image_size):
        raise NotImplementedError

    def observe(self, env, raw_obs, info):
        raise NotImplementedError

    def make_expert(self, env):
        raise NotImplementedError

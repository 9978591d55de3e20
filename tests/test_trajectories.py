"""The trajectory format: round trips, lazy listing, corrupt files and resumable collection."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from gea.data import CorruptTrajectoryError, TrajectoryDataset, episode_path, write_episode
from gea.data.collect import collect
from gea_envs import ADAPTERS, ContinuousActionSpace, UIAction
from gea_envs.rollout import EpisodeRecord, run_expert_episode
from gea_envs.spaces import ActionKind


@pytest.fixture
def registered_line_world(line_world_adapter):
    ADAPTERS.register(line_world_adapter.name, type(line_world_adapter), overwrite=True)
    yield line_world_adapter
    ADAPTERS._factories.pop(line_world_adapter.name)


def test_episode_round_trip(tmp_path, line_world_adapter):
    episode = run_expert_episode(line_world_adapter, seed=3, image_size=8)
    path = write_episode(tmp_path, episode, ActionKind.DISCRETE, image_size=8)

    dataset = TrajectoryDataset(tmp_path)
    loaded = dataset.load_episode(0)

    assert path == episode_path(tmp_path, "test/line-world", 3)
    assert dataset.episodes[0].success
    assert loaded.actions == episode.actions
    assert loaded.rewards == episode.rewards
    assert loaded.instruction == "go to the right end"
    for original, restored in zip(episode.frames, loaded.frames):
        np.testing.assert_array_equal(original[0], restored[0])
    np.testing.assert_array_equal(loaded.proprio[0], episode.proprio[0])


@pytest.mark.parametrize(
    ("kind", "actions"),
    [
        (ActionKind.CONTINUOUS, [np.array([0.5, -1.0], np.float32), np.array([0.25, 0.0], np.float32)]),
        (ActionKind.UI, [UIAction("click", 3, 4), UIAction("type", text="hello")]),
    ],
)
def test_action_kinds_round_trip(tmp_path, kind, actions):
    frame = np.zeros((4, 4, 3), np.uint8)
    episode = EpisodeRecord(
        embodiment="test/kinds", seed=0, instruction="", frames=[[frame]] * 2, proprio=[None] * 2,
        actions=actions, rewards=[0.0, 1.0], success=True,
    )
    write_episode(tmp_path, episode, kind, image_size=4)
    loaded = TrajectoryDataset(tmp_path).load_episode(0)
    for expected, restored in zip(actions, loaded.actions):
        if kind is ActionKind.CONTINUOUS:
            np.testing.assert_array_equal(expected, restored)
        else:
            assert expected == restored
    assert loaded.proprio == [None, None]


def test_truncated_file_names_file_and_episode(tmp_path, line_world_adapter):
    path = write_episode(tmp_path, run_expert_episode(line_world_adapter, seed=7, image_size=8), ActionKind.DISCRETE, 8)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    with pytest.raises(CorruptTrajectoryError) as error:
        TrajectoryDataset(tmp_path)
    assert str(path) in str(error.value)
    assert "episode_00000007" in str(error.value)


def test_frames_readable_with_pyarrow_and_datasets(tmp_path, line_world_adapter):
    import datasets

    path = write_episode(tmp_path, run_expert_episode(line_world_adapter, seed=1, image_size=8), ActionKind.DISCRETE, 8)
    table = pq.read_table(path)
    hf = datasets.load_dataset("parquet", data_files=str(path), split="train")
    assert table.num_rows == len(hf)
    assert hf[0]["action"] == 1


def test_missing_folder_error_names_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="gea collect"):
        TrajectoryDataset(tmp_path / "nothing")


def test_collect_continues_interrupted_run(tmp_path, registered_line_world):
    first = collect(["test/line-world"], 3, tmp_path, image_size=8, show_progress=False)
    episode_path(tmp_path, "test/line-world", 1).unlink()  # as if the run stopped before seed 1 was written
    second = collect(["test/line-world"], 4, tmp_path, image_size=8, show_progress=False)

    assert len(first.collected["test/line-world"]) == 3
    assert second.skipped["test/line-world"] == 2
    assert sorted(e.seed for e in second.collected["test/line-world"]) == [1, 3]
    assert len(TrajectoryDataset(tmp_path)) == 4


def test_collect_unknown_embodiment_lists_known(tmp_path):
    with pytest.raises(KeyError, match="Known embodiments"):
        collect(["nope/nothing"], 1, tmp_path)


def test_continuous_space_rejects_bad_bounds():
    with pytest.raises(ValueError, match="low bound"):
        ContinuousActionSpace(low=(1.0,), high=(0.0,))

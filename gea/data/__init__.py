"""Expert trajectories on disk: writing, lazy reading and collection."""

from gea.data.trajectories import (
    CorruptTrajectoryError,
    EpisodeInfo,
    TrajectoryDataset,
    episode_path,
    write_episode,
)

__all__ = ["CorruptTrajectoryError", "EpisodeInfo", "TrajectoryDataset", "episode_path", "write_episode"]

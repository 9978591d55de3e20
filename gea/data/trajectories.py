"""The on-disk trajectory format: one Parquet file per episode.

Layout::

    DIR/<embodiment with "/" replaced by "__">/episode_<seed, 8 digits>.parquet

Each file has one row per step ``t``: the observation seen before action ``t`` and the
action taken.

==========  ================================  ==========================================
column      Arrow type                        content
==========  ================================  ==========================================
step        int32                             step index from 0
frames      list<binary>                      PNG-encoded RGB frames, one per camera
proprio     list<float32> (null if absent)    proprioception
action      per action kind                   continuous: list<float32>; discrete: int64;
                                              UI: struct<kind, x, y, text>
reward      float32                           reward returned by ``env.step``
executed    as ``action``, present only in    what ``env.step`` received when
            episodes collected with noise     collection noise perturbed ``action``
==========  ================================  ==========================================

Episode metadata (embodiment, seed, instruction, success, return, length, truncation,
action kind, image size, action noise, format version) is JSON under the schema metadata key
``b"gea"``, so listing a folder reads only file footers. The files are plain Parquet:
``datasets.load_dataset("parquet", data_files=...)`` and ``pyarrow`` read them directly.
Files are written to a temporary name and renamed, so an interrupted collection never
leaves a partial episode under a final name.
"""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from gea.errors import GEAError
from gea_envs.rollout import EpisodeRecord
from gea_envs.spaces import Action, ActionKind, UIAction

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
METADATA_KEY = b"gea"
EPISODE_GLOB = "episode_*.parquet"

COLUMN_STEP = "step"
COLUMN_FRAMES = "frames"
COLUMN_PROPRIO = "proprio"
COLUMN_ACTION = "action"
COLUMN_REWARD = "reward"
COLUMN_EXECUTED = "executed"

_UI_ACTION_TYPE = pa.struct([("kind", pa.string()), ("x", pa.int32()), ("y", pa.int32()), ("text", pa.string())])
_ACTION_TYPES = {
    ActionKind.CONTINUOUS: pa.list_(pa.float32()),
    ActionKind.DISCRETE: pa.int64(),
    ActionKind.UI: _UI_ACTION_TYPE,
}


class CorruptTrajectoryError(GEAError):
    """Raised when a trajectory file cannot be read; the message names the file and the episode."""


@dataclass(frozen=True)
class EpisodeInfo:
    """Metadata of one stored episode, read from the file footer only."""

    path: Path
    embodiment: str
    seed: int
    instruction: str
    success: bool
    episode_return: float
    length: int
    truncated: bool
    action_kind: ActionKind
    image_size: int
    action_noise: float = 0.0


def embodiment_dirname(embodiment: str) -> str:
    return embodiment.replace("/", "__")


def episode_path(root: Union[str, Path], embodiment: str, seed: int) -> Path:
    """Return where the episode of `embodiment` with `seed` is stored under `root`."""
    return Path(root) / embodiment_dirname(embodiment) / f"episode_{seed:08d}.parquet"


def _encode_png(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(frame, dtype=np.uint8)).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def decode_frame(data: bytes, info: EpisodeInfo) -> np.ndarray:
    """Decode one PNG-encoded frame of the episode that `info` describes, naming its file if corrupt."""
    try:
        return _decode_png(data)
    except OSError as error:
        raise CorruptTrajectoryError(
            f"A frame in {info.path} ({info.embodiment} episode seed {info.seed}) is not a valid PNG: {error}."
        ) from error


def _action_to_arrow(action: Action, kind: ActionKind):
    if kind is ActionKind.CONTINUOUS:
        return np.asarray(action, dtype=np.float32).tolist()
    if kind is ActionKind.DISCRETE:
        return int(action)
    return action.to_record()


def _action_from_arrow(value, kind: ActionKind) -> Action:
    if kind is ActionKind.CONTINUOUS:
        return np.asarray(value, dtype=np.float32)
    if kind is ActionKind.DISCRETE:
        return int(value)
    return UIAction.from_record(value)


def write_episode(root: Union[str, Path], episode: EpisodeRecord, action_kind: ActionKind, image_size: int) -> Path:
    """Write `episode` under `root` atomically and return its path."""
    if len(episode.frames) != episode.length:
        raise ValueError(
            f"Episode {episode.embodiment} seed {episode.seed} has {len(episode.frames)} observations for "
            f"{episode.length} actions; record it with record=True."
        )
    path = episode_path(root, episode.embodiment, episode.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format_version": FORMAT_VERSION,
        "embodiment": episode.embodiment,
        "seed": episode.seed,
        "instruction": episode.instruction,
        "success": bool(episode.success),
        "episode_return": episode.episode_return,
        "length": episode.length,
        "truncated": bool(episode.truncated),
        "action_kind": action_kind.value,
        "image_size": image_size,
        "action_noise": episode.action_noise,
    }
    fields = [
        (COLUMN_STEP, pa.int32()),
        (COLUMN_FRAMES, pa.list_(pa.binary())),
        (COLUMN_PROPRIO, pa.list_(pa.float32())),
        (COLUMN_ACTION, _ACTION_TYPES[action_kind]),
        (COLUMN_REWARD, pa.float32()),
    ]
    columns = {
        COLUMN_STEP: list(range(episode.length)),
        COLUMN_FRAMES: [[_encode_png(frame) for frame in frames] for frames in episode.frames],
        COLUMN_PROPRIO: [None if p is None else np.asarray(p, dtype=np.float32).tolist() for p in episode.proprio],
        COLUMN_ACTION: [_action_to_arrow(action, action_kind) for action in episode.actions],
        COLUMN_REWARD: episode.rewards,
    }
    if episode.executed_actions:
        if len(episode.executed_actions) != episode.length:
            raise ValueError(
                f"Episode {episode.embodiment} seed {episode.seed} has {len(episode.executed_actions)} executed "
                f"actions for {episode.length} steps; record one per step or none."
            )
        fields.append((COLUMN_EXECUTED, _ACTION_TYPES[action_kind]))
        columns[COLUMN_EXECUTED] = [_action_to_arrow(action, action_kind) for action in episode.executed_actions]
    schema = pa.schema(fields, metadata={METADATA_KEY: json.dumps(metadata).encode()})
    table = pa.Table.from_pydict(columns, schema=schema)
    tmp_path = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp_path, compression="zstd")
    os.replace(tmp_path, path)
    return path


def read_episode_info(path: Path) -> EpisodeInfo:
    """Read the metadata of the episode file at `path` from its footer."""
    try:
        schema = pq.read_schema(path)
        metadata = json.loads(schema.metadata[METADATA_KEY])
    except (OSError, pa.ArrowException, KeyError, TypeError, ValueError) as error:
        raise CorruptTrajectoryError(
            f"Cannot read trajectory file {path} (episode {path.stem}): {error}. "
            "Delete the file and rerun `gea collect` with the same arguments to collect the episode again."
        ) from error
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CorruptTrajectoryError(
            f"Trajectory file {path} has format version {metadata.get('format_version')!r}; "
            f"this version of GEA reads version {FORMAT_VERSION}. Collect the data again."
        )
    return EpisodeInfo(
        path=path,
        embodiment=metadata["embodiment"],
        seed=int(metadata["seed"]),
        instruction=metadata["instruction"],
        success=bool(metadata["success"]),
        episode_return=float(metadata["episode_return"]),
        length=int(metadata["length"]),
        truncated=bool(metadata["truncated"]),
        action_kind=ActionKind(metadata["action_kind"]),
        image_size=int(metadata["image_size"]),
        action_noise=float(metadata.get("action_noise", 0.0)),
    )


class TrajectoryDataset:
    """Episodes stored under one or more root folders, read lazily.

    Construction reads only file footers. `load_episode` reads and decodes one episode.
    """

    def __init__(self, roots: Union[str, Path, Sequence[Union[str, Path]]], embodiments: Optional[Iterable[str]] = None):
        if isinstance(roots, (str, Path)):
            roots = [roots]
        self.roots = [Path(root) for root in roots]
        for root in self.roots:
            if not root.is_dir():
                raise FileNotFoundError(f"Trajectory folder {root} not found; create it with `gea collect ... --out {root}`.")
        wanted = None if embodiments is None else set(embodiments)
        paths = sorted(path for root in self.roots for path in root.glob(f"*/{EPISODE_GLOB}"))
        infos = [read_episode_info(path) for path in paths]
        self.episodes: list[EpisodeInfo] = [info for info in infos if wanted is None or info.embodiment in wanted]
        if wanted is not None:
            missing = wanted - {info.embodiment for info in self.episodes}
            if missing:
                raise ValueError(
                    f"No episodes of {sorted(missing)} under {[str(r) for r in self.roots]}; "
                    f"found {self.embodiments or 'none'}. Collect them with `gea collect`."
                )

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def embodiments(self) -> list[str]:
        return sorted({info.embodiment for info in self.episodes})

    def episodes_of(self, embodiment: str) -> list[int]:
        """Return the indices of the episodes of `embodiment`."""
        return [i for i, info in enumerate(self.episodes) if info.embodiment == embodiment]

    def _read_table(self, info: EpisodeInfo, columns: Optional[list[str]] = None) -> pa.Table:
        try:
            table = pq.read_table(info.path, columns=columns)
        except (OSError, pa.ArrowException) as error:
            raise CorruptTrajectoryError(
                f"Cannot read trajectory file {info.path} ({info.embodiment} episode seed {info.seed}): {error}. "
                "Delete the file and rerun `gea collect` to collect the episode again."
            ) from error
        if table.num_rows != info.length:
            raise CorruptTrajectoryError(
                f"Trajectory file {info.path} ({info.embodiment} episode seed {info.seed}) has {table.num_rows} "
                f"steps but its metadata says {info.length}. Delete the file and collect the episode again."
            )
        return table

    def load_episode(self, index: int, decode_frames: bool = True) -> EpisodeRecord:
        """Read episode `index`; frames stay PNG bytes when `decode_frames` is False."""
        info = self.episodes[index]
        table = self._read_table(info).to_pydict()
        frames = table[COLUMN_FRAMES]
        if decode_frames:
            frames = [[decode_frame(data, info) for data in step_frames] for step_frames in frames]
        return EpisodeRecord(
            embodiment=info.embodiment,
            seed=info.seed,
            instruction=info.instruction,
            frames=frames,
            proprio=[None if p is None else np.asarray(p, dtype=np.float32) for p in table[COLUMN_PROPRIO]],
            actions=[_action_from_arrow(value, info.action_kind) for value in table[COLUMN_ACTION]],
            executed_actions=[_action_from_arrow(value, info.action_kind) for value in table.get(COLUMN_EXECUTED, [])],
            rewards=[float(r) for r in table[COLUMN_REWARD]],
            success=info.success,
            truncated=info.truncated,
            action_noise=info.action_noise,
        )

    def actions(self, embodiment: str, successful_only: bool = False) -> list[Action]:
        """Return every stored action of `embodiment`, reading only the action column."""
        result: list[Action] = []
        for index in self.episodes_of(embodiment):
            info = self.episodes[index]
            if successful_only and not info.success:
                continue
            column = self._read_table(info, columns=[COLUMN_ACTION]).column(COLUMN_ACTION).to_pylist()
            result.extend(_action_from_arrow(value, info.action_kind) for value in column)
        return result

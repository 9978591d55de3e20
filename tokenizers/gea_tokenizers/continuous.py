"""The parts every continuous-action tokenizer shares: per-embodiment statistics and the interface.

A continuous tokenizer turns float actions of any registered width into a fixed number
of integer codes per action and back. Actions are first normalized with statistics of
their own embodiment, computed from data and saved with the tokenizer, so one codebook
serves arm deltas in [-1, 1] and joint torques in [-0.4, 0.4] alike.
"""

from __future__ import annotations

import abc
import enum
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np

CONFIG_FILE = "config.json"
TOKENIZER_TYPE_KEY = "tokenizer_type"
STATISTICS_KEY = "statistics"

# Dimensions whose data never varies get this scale, so normalizing divides by a
# finite number and a constant dimension decodes back to its constant.
_MIN_SCALE = 1e-6


class NormalizationMode(str, enum.Enum):
    """The mapping from raw actions to the normalized range that codebooks and bins see."""

    MEAN_STD = "mean_std"  # (a - mean) / std
    MIN_MAX = "min_max"  # min -> -1, max -> +1


@dataclass(frozen=True)
class ActionStatistics:
    """Per-dimension statistics of one embodiment's actions, all float32 vectors of equal length."""

    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    count: int

    def __post_init__(self) -> None:
        shapes = {name: np.shape(getattr(self, name)) for name in ("mean", "std", "min", "max")}
        if len(set(shapes.values())) != 1 or len(shapes["mean"]) != 1:
            raise ValueError(f"ActionStatistics fields must be 1-D vectors of one length, got shapes {shapes}.")
        if self.count < 1:
            raise ValueError(f"ActionStatistics.count must be at least 1, got {self.count}.")

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def from_actions(cls, actions: np.ndarray) -> "ActionStatistics":
        """Compute statistics of `actions`, shape ``(N, dim)`` with N >= 1."""
        array = as_action_matrix(actions, "actions")
        return cls(
            mean=array.mean(axis=0).astype(np.float32),
            std=array.std(axis=0).astype(np.float32),
            min=array.min(axis=0).astype(np.float32),
            max=array.max(axis=0).astype(np.float32),
            count=int(array.shape[0]),
        )

    def normalize(self, actions: np.ndarray, mode: NormalizationMode) -> np.ndarray:
        offset, scale = self._offset_scale(mode)
        return ((actions - offset) / scale).astype(np.float32)

    def denormalize(self, normalized: np.ndarray, mode: NormalizationMode) -> np.ndarray:
        offset, scale = self._offset_scale(mode)
        return (normalized * scale + offset).astype(np.float32)

    def _offset_scale(self, mode: NormalizationMode) -> tuple[np.ndarray, np.ndarray]:
        if mode is NormalizationMode.MEAN_STD:
            return self.mean, np.maximum(self.std, _MIN_SCALE)
        center = (self.max + self.min) / 2
        half_range = np.maximum((self.max - self.min) / 2, _MIN_SCALE)
        return center, half_range

    def to_json(self) -> dict[str, Any]:
        # float32 -> Python float is exact and repr round-trips, so loading is bit-identical.
        return {
            "mean": [float(value) for value in self.mean],
            "std": [float(value) for value in self.std],
            "min": [float(value) for value in self.min],
            "max": [float(value) for value in self.max],
            "count": self.count,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ActionStatistics":
        return cls(
            mean=np.asarray(data["mean"], dtype=np.float32),
            std=np.asarray(data["std"], dtype=np.float32),
            min=np.asarray(data["min"], dtype=np.float32),
            max=np.asarray(data["max"], dtype=np.float32),
            count=int(data["count"]),
        )


def as_action_matrix(actions: Any, what: str) -> np.ndarray:
    """Return `actions` as a finite float32 array of shape ``(N, dim)`` with N >= 1."""
    array = np.asarray(actions, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{what} must have shape (N, dim) with N, dim >= 1, got shape {array.shape}.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contain non-finite values.")
    return array


def compute_statistics(actions_by_embodiment: Mapping[str, Any]) -> dict[str, ActionStatistics]:
    """Compute `ActionStatistics` for every embodiment's action matrix."""
    if not actions_by_embodiment:
        raise ValueError("No embodiments given: pass at least one embodiment's actions.")
    return {
        name: ActionStatistics.from_actions(as_action_matrix(actions, f"Actions of {name!r}"))
        for name, actions in actions_by_embodiment.items()
    }


class ContinuousTokenizer(abc.ABC):
    """Maps continuous actions of known embodiments to ``tokens_per_action`` codes in ``[0, num_codes)``.

    Subclasses implement the code mapping on normalized actions. Encoding or decoding
    for an embodiment without statistics, or with actions of another width, raises
    ValueError naming the embodiment and the widths.
    """

    tokenizer_type: str

    def __init__(self, statistics: Mapping[str, ActionStatistics], normalization: NormalizationMode) -> None:
        if not statistics:
            raise ValueError("A continuous tokenizer needs statistics for at least one embodiment.")
        self.statistics = dict(statistics)
        self.normalization = NormalizationMode(normalization)

    @property
    @abc.abstractmethod
    def tokens_per_action(self) -> int:
        """Number of codes one action becomes."""

    @property
    @abc.abstractmethod
    def num_codes(self) -> int:
        """Number of distinct code symbols; every code lies in ``[0, num_codes)``."""

    @property
    def embodiments(self) -> list[str]:
        return sorted(self.statistics)

    def statistics_for(self, embodiment: str) -> ActionStatistics:
        try:
            return self.statistics[embodiment]
        except KeyError:
            raise ValueError(
                f"The {self.tokenizer_type} tokenizer has no action statistics for embodiment {embodiment!r}; "
                f"it knows {self.embodiments}. Retrain it with data from {embodiment!r}."
            ) from None

    def normalize(self, embodiment: str, actions: Any) -> np.ndarray:
        """Check `actions` (shape ``(N, dim)``) against `embodiment` and normalize them."""
        statistics = self.statistics_for(embodiment)
        array = as_action_matrix(actions, f"Actions of {embodiment!r}")
        if array.shape[1] != statistics.dim:
            raise ValueError(
                f"Actions of width {array.shape[1]} do not match embodiment {embodiment!r}, whose actions have "
                f"width {statistics.dim} in the {self.tokenizer_type} tokenizer."
            )
        return statistics.normalize(array, self.normalization)

    def tokens_for(self, embodiment: str) -> int:
        """Number of codes one action of `embodiment` becomes (`tokens_per_action` unless overridden)."""
        self.statistics_for(embodiment)
        return self.tokens_per_action

    def validate_codes(self, embodiment: str, codes: Any) -> np.ndarray:
        """Return `codes` as an int64 array of shape ``(N, tokens_for(embodiment))`` inside ``[0, num_codes)``."""
        width = self.tokens_for(embodiment)
        array = np.asarray(codes)
        if array.ndim != 2 or array.shape[1] != width:
            raise ValueError(f"Codes for embodiment {embodiment!r} must have shape (N, {width}), got {array.shape}.")
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"Codes must be integers, got dtype {array.dtype}.")
        if array.size and (array.min() < 0 or array.max() >= self.num_codes):
            raise ValueError(f"Codes must lie in [0, {self.num_codes}), got range [{array.min()}, {array.max()}].")
        return array.astype(np.int64)

    @abc.abstractmethod
    def encode(self, embodiment: str, actions: Any) -> np.ndarray:
        """Encode actions of shape ``(N, dim)`` to int64 codes of shape ``(N, tokens_per_action)``."""

    @abc.abstractmethod
    def decode(self, embodiment: str, codes: Any) -> np.ndarray:
        """Decode codes of shape ``(N, tokens_per_action)`` to float32 actions of shape ``(N, dim)``."""

    @abc.abstractmethod
    def config_json(self) -> dict[str, Any]:
        """The tokenizer's settings as JSON-serializable data, without statistics."""

    def save(self, directory: Union[str, Path]) -> Path:
        """Write ``config.json`` (settings and statistics) and any weights into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        document = {
            TOKENIZER_TYPE_KEY: self.tokenizer_type,
            "config": self.config_json(),
            "normalization": self.normalization.value,
            STATISTICS_KEY: {name: self.statistics[name].to_json() for name in self.embodiments},
        }
        (directory / CONFIG_FILE).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        self._save_weights(directory)
        return directory

    def _save_weights(self, directory: Path) -> None:
        """Write weight files next to ``config.json``; tokenizers without weights write nothing."""

    def fingerprint(self) -> str:
        """Return a SHA-256 hex digest of settings, statistics and weights.

        Two tokenizers with equal fingerprints map every action to the same codes.
        """
        digest = hashlib.sha256()
        digest.update(self.tokenizer_type.encode())
        digest.update(json.dumps(self.config_json(), sort_keys=True).encode())
        digest.update(self.normalization.value.encode())
        for name in self.embodiments:
            digest.update(json.dumps([name, self.statistics[name].to_json()], sort_keys=True).encode())
        self._update_fingerprint(digest)
        return digest.hexdigest()

    def _update_fingerprint(self, digest: "hashlib._Hash") -> None:
        """Add weights to the fingerprint; tokenizers without weights add nothing."""


def read_statistics(document: Mapping[str, Any]) -> dict[str, ActionStatistics]:
    return {name: ActionStatistics.from_json(data) for name, data in document[STATISTICS_KEY].items()}

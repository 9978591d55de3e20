"""Uniform per-dimension binning: the OpenVLA-style baseline for continuous actions.

Each dimension of a min/max-normalized action (range [-1, 1]) falls into one of
`num_bins` equal-width bins, and decoding returns bin centers. Actions are not padded, so
an embodiment of width ``d`` gets ``d`` tokens per action. `tokens_per_action` is the
width of the widest embodiment.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np

from gea_tokenizers.continuous import (
    CONFIG_FILE,
    TOKENIZER_TYPE_KEY,
    ActionStatistics,
    ContinuousTokenizer,
    NormalizationMode,
    compute_statistics,
    read_statistics,
)

BINNING_TYPE = "uniform_binning"


@dataclass(frozen=True)
class BinningConfig:
    """Settings of `BinningTokenizer`.

    Attributes:
        num_bins: equal-width bins per dimension over the normalized range [-1, 1]; 256
            as in OpenVLA.
    """

    num_bins: int = 256

    def __post_init__(self) -> None:
        if self.num_bins < 2:
            raise ValueError(f"BinningConfig.num_bins must be at least 2, got {self.num_bins}.")


class BinningTokenizer(ContinuousTokenizer):
    """One token per action dimension: the index of its bin in the embodiment's min/max range.

    Values outside the range seen in the data are clipped into the first or last bin.
    Unlike the VQ tokenizer, the number of tokens differs between embodiments, so
    `encode` returns ``(N, dim)`` codes and `tokens_for` gives the per-embodiment count.
    """

    tokenizer_type = BINNING_TYPE

    def __init__(self, statistics: Mapping[str, ActionStatistics], config: BinningConfig = BinningConfig()) -> None:
        super().__init__(statistics, NormalizationMode.MIN_MAX)
        self.config = config
        edges = np.linspace(-1.0, 1.0, config.num_bins + 1, dtype=np.float64)
        self._inner_edges = edges[1:-1]
        self._centers = ((edges[:-1] + edges[1:]) / 2).astype(np.float32)

    @classmethod
    def fit(
        cls, actions_by_embodiment: Mapping[str, Any], config: BinningConfig = BinningConfig()
    ) -> "BinningTokenizer":
        """Build a tokenizer whose bin ranges are each embodiment's data min and max."""
        return cls(compute_statistics(actions_by_embodiment), config)

    @property
    def tokens_per_action(self) -> int:
        return max(statistics.dim for statistics in self.statistics.values())

    def tokens_for(self, embodiment: str) -> int:
        """Number of tokens of one action of `embodiment` (its action width)."""
        return self.statistics_for(embodiment).dim

    @property
    def num_codes(self) -> int:
        return self.config.num_bins

    def encode(self, embodiment: str, actions: Any) -> np.ndarray:
        normalized = self.normalize(embodiment, actions)
        return np.digitize(np.clip(normalized, -1.0, 1.0), self._inner_edges).astype(np.int64)

    def decode(self, embodiment: str, codes: Any) -> np.ndarray:
        statistics = self.statistics_for(embodiment)
        array = self.validate_codes(embodiment, codes)
        return statistics.denormalize(self._centers[array], self.normalization)

    def config_json(self) -> dict[str, Any]:
        return asdict(self.config)

    @classmethod
    def load(cls, directory: Union[str, Path]) -> "BinningTokenizer":
        """Load a tokenizer written by `save`."""
        document = json.loads((Path(directory) / CONFIG_FILE).read_text())
        if document[TOKENIZER_TYPE_KEY] != BINNING_TYPE:
            raise ValueError(
                f"{directory} contains a {document[TOKENIZER_TYPE_KEY]!r} tokenizer, not {BINNING_TYPE!r}; "
                "use gea_tokenizers.load_continuous_tokenizer to load any type."
            )
        return cls(read_statistics(document), BinningConfig(**document["config"]))

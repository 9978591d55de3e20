"""Residual VQ-VAE tokenizer: one learned codebook stack shared by every continuous embodiment.

An action is normalized with its embodiment's statistics, zero-padded to
`ResidualVQConfig.padded_width`, mapped by an MLP encoder to a ``code_dim`` vector, and
quantized by `vector_quantize_pytorch.ResidualVQ` into ``num_quantizers`` codes (one
token each). Decoding sums the chosen code vectors, runs the MLP decoder and keeps the
embodiment's own leading dimensions. Training minimizes the reconstruction MSE of the
real (unpadded) dimensions plus the commitment loss. The codebooks are not trained by
gradients: they follow an exponential moving average of their assigned vectors, start
from k-means on the first batch, and replace dead codes with random encoder outputs.

With ``search_encoding`` (the default), encoding does not use the encoder's greedy
residual assignment: it decodes every code combination once and picks the combination
whose decoded action is nearest to the input on the embodiment's own dimensions. The
greedy combination is one of the candidates, so the round-trip error can only shrink.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from vector_quantize_pytorch import ResidualVQ

from gea_tokenizers.continuous import (
    CONFIG_FILE,
    TOKENIZER_TYPE_KEY,
    ActionStatistics,
    ContinuousTokenizer,
    NormalizationMode,
    read_statistics,
)

RESIDUAL_VQ_TYPE = "residual_vq"
WEIGHTS_FILE = "model.safetensors"
# Search encoding keeps one decoded action per code combination in memory
# (padded_width float32 values each), so it is limited to about a million combinations.
MAX_SEARCH_COMBINATIONS = 1 << 20
# Actions per step of the nearest-combination search. A few actions' scores (1 MiB each at
# 2^18 combinations) stay in the CPU cache: on a shared 2-core x86_64 machine, 4 per step encoded
# HalfCheetah actions in 2.5 ms each and 64 per step in 6.1 ms each.
_SEARCH_CHUNK = 4
_DECODE_CHUNK = 16384


@dataclass(frozen=True)
class ResidualVQConfig:
    """Architecture of the residual VQ-VAE.

    The defaults are sized to train on a CPU in minutes. GEA's published model uses
    ``code_dim=1024`` and 4-layer MLPs of width 4096 with the same codebooks.

    Attributes:
        padded_width: common action width; every embodiment's actions are zero-padded to it.
        code_dim: size of the encoder output and of each code vector.
        hidden_width: width of the hidden layers of encoder and decoder.
        mlp_layers: linear layers in each of encoder and decoder (at least 1).
        num_quantizers: residual codebooks, which is the number of tokens per action.
        codebook_size: codes per codebook.
        commitment_weight: weight of the commitment loss that pulls encoder outputs to their codes.
        ema_decay: decay of the exponential moving average that updates the codebooks.
        dead_code_threshold: a code whose moving-average usage falls below this many
            assignments per batch is replaced by a random encoder output.
        normalization: how raw actions are normalized before padding.
        search_encoding: encode each action as the code combination whose decoded action
            is nearest to it, instead of the encoder's greedy residual codes. Needs
            ``codebook_size ** num_quantizers <= MAX_SEARCH_COMBINATIONS``. With the
            defaults, the first encode decodes all 2^18 combinations (5 s on one CPU core)
            and each action then costs about 2.5 ms, in batches or alone.
        clip_to_data_range: clip decoded actions to the per-dimension minimum and maximum
            of the embodiment's training actions. Saturated actions (torques at their
            limits) then decode exactly, and the search scores candidates after clipping.
    """

    padded_width: int = 21
    code_dim: int = 32
    hidden_width: int = 256
    mlp_layers: int = 4
    num_quantizers: int = 2
    codebook_size: int = 512
    commitment_weight: float = 0.25
    ema_decay: float = 0.99
    dead_code_threshold: float = 2.0
    normalization: NormalizationMode = NormalizationMode.MEAN_STD
    search_encoding: bool = True
    clip_to_data_range: bool = True

    def __post_init__(self) -> None:
        for name in ("padded_width", "code_dim", "hidden_width", "mlp_layers", "num_quantizers"):
            if getattr(self, name) < 1:
                raise ValueError(f"ResidualVQConfig.{name} must be at least 1, got {getattr(self, name)}.")
        if self.codebook_size < 2:
            raise ValueError(f"ResidualVQConfig.codebook_size must be at least 2, got {self.codebook_size}.")
        if self.commitment_weight < 0:
            raise ValueError(f"ResidualVQConfig.commitment_weight must be >= 0, got {self.commitment_weight}.")
        if not 0 < self.ema_decay < 1:
            raise ValueError(f"ResidualVQConfig.ema_decay must be in (0, 1), got {self.ema_decay}.")
        if self.dead_code_threshold < 0:
            raise ValueError(f"ResidualVQConfig.dead_code_threshold must be >= 0, got {self.dead_code_threshold}.")
        try:
            object.__setattr__(self, "normalization", NormalizationMode(self.normalization))
        except ValueError:
            modes = [mode.value for mode in NormalizationMode]
            raise ValueError(f"ResidualVQConfig.normalization must be one of {modes}, got {self.normalization!r}.")
        combinations = self.codebook_size**self.num_quantizers
        if self.search_encoding and combinations > MAX_SEARCH_COMBINATIONS:
            raise ValueError(
                f"ResidualVQConfig.search_encoding needs codebook_size ** num_quantizers <= {MAX_SEARCH_COMBINATIONS}, "
                f"got {self.codebook_size} ** {self.num_quantizers} = {combinations}; set search_encoding=False "
                "or use fewer codes."
            )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["normalization"] = self.normalization.value
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ResidualVQConfig":
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown ResidualVQConfig fields {unknown}; known fields are {sorted(known)}.")
        missing = sorted(known - set(data))
        if missing:
            # Filling them with today's defaults would silently change how actions map to codes.
            raise ValueError(
                f"This residual VQ config is missing the fields {missing} because an older version of "
                "gea_tokenizers saved it. Retrain the tokenizer with `gea train-tokenizer`."
            )
        return cls(**data)


def _mlp(in_width: int, hidden_width: int, out_width: int, layers: int) -> nn.Sequential:
    widths = [in_width] + [hidden_width] * (layers - 1) + [out_width]
    modules: list[nn.Module] = []
    for index in range(layers):
        modules.append(nn.Linear(widths[index], widths[index + 1]))
        if index < layers - 1:
            modules.append(nn.GELU())
    return nn.Sequential(*modules)


class ResidualVQAutoencoder(nn.Module):
    """Encoder MLP, residual quantizer and decoder MLP on padded, normalized actions."""

    def __init__(self, config: ResidualVQConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = _mlp(config.padded_width, config.hidden_width, config.code_dim, config.mlp_layers)
        self.quantizer = ResidualVQ(
            dim=config.code_dim,
            num_quantizers=config.num_quantizers,
            codebook_size=config.codebook_size,
            commitment_weight=config.commitment_weight,
            decay=config.ema_decay,
            kmeans_init=True,
            kmeans_iters=10,
            threshold_ema_dead_code=config.dead_code_threshold,
        )
        self.decoder = _mlp(config.code_dim, config.hidden_width, config.padded_width, config.mlp_layers)

    def forward(self, padded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return reconstruction ``(B, padded_width)``, codes ``(B, num_quantizers)`` and commitment loss."""
        quantized, codes, commit_losses = self.quantizer(self.encoder(padded))
        return self.decoder(quantized), codes, commit_losses.sum()

    @torch.no_grad()
    def encode(self, padded: torch.Tensor) -> torch.Tensor:
        _, codes, _ = self.quantizer(self.encoder(padded), freeze_codebook=True)
        return codes

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.quantizer.get_output_from_indices(codes))

    @torch.no_grad()
    def decode_all_combinations(self) -> torch.Tensor:
        """Decode every code combination to a ``(codebook_size ** num_quantizers, padded_width)`` table.

        Row ``i`` contains the decoded action of the combination whose codes are the
        base-``codebook_size`` digits of ``i``, first codebook most significant (see
        `combination_codes`).
        """
        total = self.config.codebook_size**self.config.num_quantizers
        table = torch.empty(total, self.config.padded_width)
        for start in range(0, total, _DECODE_CHUNK):
            rows = torch.arange(start, min(start + _DECODE_CHUNK, total))
            table[rows] = self.decode(combination_codes(rows, self.config))
        return table


def combination_codes(rows: torch.Tensor, config: ResidualVQConfig) -> torch.Tensor:
    """Split combination indices ``(N,)`` into codes ``(N, num_quantizers)``, first codebook most significant."""
    digits = []
    for position in range(config.num_quantizers):
        place = config.codebook_size ** (config.num_quantizers - 1 - position)
        digits.append((rows // place) % config.codebook_size)
    return torch.stack(digits, dim=1)


class ResidualVQTokenizer(ContinuousTokenizer):
    """A trained `ResidualVQAutoencoder` plus the statistics of the embodiments it was trained on.

    Build one with `gea_tokenizers.training.train_residual_vq`, or `load` a saved one.
    Encoding and decoding run the model in eval mode, so they never change the codebooks.
    Search encoding caches decoded code combinations on first use: call
    `clear_search_cache` after changing the model's weights.
    """

    tokenizer_type = RESIDUAL_VQ_TYPE

    def __init__(
        self,
        statistics: Mapping[str, ActionStatistics],
        config: ResidualVQConfig = ResidualVQConfig(),
        model: ResidualVQAutoencoder | None = None,
    ) -> None:
        super().__init__(statistics, config.normalization)
        too_wide = {name: stats.dim for name, stats in statistics.items() if stats.dim > config.padded_width}
        if too_wide:
            raise ValueError(
                f"Embodiments {too_wide} have actions wider than padded_width={config.padded_width}; "
                "raise ResidualVQConfig.padded_width to at least their width."
            )
        self.config = config
        self.model = model if model is not None else ResidualVQAutoencoder(config)
        self.model.eval()
        self._decoded_combinations: torch.Tensor | None = None
        self._search_tables: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def tokens_per_action(self) -> int:
        return self.config.num_quantizers

    @property
    def num_codes(self) -> int:
        return self.config.codebook_size

    def pad(self, embodiment: str, actions: Any) -> torch.Tensor:
        """Normalize and zero-pad `actions` of `embodiment` to a ``(N, padded_width)`` tensor."""
        normalized = self.normalize(embodiment, actions)
        padded = np.zeros((normalized.shape[0], self.config.padded_width), dtype=np.float32)
        padded[:, : normalized.shape[1]] = normalized
        return torch.from_numpy(padded)

    def encode(self, embodiment: str, actions: Any) -> np.ndarray:
        self.model.eval()
        padded = self.pad(embodiment, actions)
        if self.config.search_encoding:
            return self._search_codes(embodiment, padded).numpy().astype(np.int64)
        return self.model.encode(padded).numpy().astype(np.int64)

    def decode(self, embodiment: str, codes: Any) -> np.ndarray:
        statistics = self.statistics_for(embodiment)
        array = self.validate_codes(embodiment, codes)
        self.model.eval()
        padded = self.model.decode(torch.from_numpy(array)).numpy()
        actions = statistics.denormalize(padded[:, : statistics.dim], self.normalization)
        if self.config.clip_to_data_range:
            actions = np.clip(actions, statistics.min, statistics.max)
        return actions

    def clear_search_cache(self) -> None:
        """Forget the decoded code combinations, so the next search encoding decodes them again."""
        self._decoded_combinations = None
        self._search_tables.clear()

    def _search_table(self, embodiment: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the search table of `embodiment` and the squared norm of each of its rows.

        The table contains every decoded combination on the embodiment's dimensions, clipped as
        `decode` clips. It is built on first use and cached until `clear_search_cache`.
        """
        if embodiment not in self._search_tables:
            if self._decoded_combinations is None:
                self._decoded_combinations = self.model.decode_all_combinations()
            statistics = self.statistics_for(embodiment)
            table = self._decoded_combinations[:, : statistics.dim]
            if self.config.clip_to_data_range:
                low = torch.from_numpy(statistics.normalize(statistics.min[None, :], self.normalization))
                high = torch.from_numpy(statistics.normalize(statistics.max[None, :], self.normalization))
                table = torch.minimum(torch.maximum(table, low), high)
            table = table.contiguous()
            self._search_tables[embodiment] = (table, (table**2).sum(dim=1))
        return self._search_tables[embodiment]

    def _search_codes(self, embodiment: str, padded: torch.Tensor) -> torch.Tensor:
        table, squared_norms = self._search_table(embodiment)
        targets = padded[:, : table.shape[1]]
        rows = []
        for start in range(0, targets.shape[0], _SEARCH_CHUNK):
            chunk = targets[start : start + _SEARCH_CHUNK]
            # ||t - x||^2 without the ||x||^2 term, which is the same for every candidate.
            scores = squared_norms[None, :] - 2.0 * (chunk @ table.T)
            rows.append(scores.argmin(dim=1))
        return combination_codes(torch.cat(rows), self.config)

    def config_json(self) -> dict[str, Any]:
        return self.config.to_json()

    def _save_weights(self, directory: Path) -> None:
        state = {name: tensor.detach().contiguous().clone() for name, tensor in self.model.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE))

    def _update_fingerprint(self, digest) -> None:
        for name, tensor in sorted(self.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())

    @classmethod
    def load(cls, directory: Union[str, Path]) -> "ResidualVQTokenizer":
        """Load a tokenizer written by `save`; outputs are bit-identical to the saved one's."""
        directory = Path(directory)
        document = json.loads((directory / CONFIG_FILE).read_text())
        if document[TOKENIZER_TYPE_KEY] != RESIDUAL_VQ_TYPE:
            raise ValueError(
                f"{directory} contains a {document[TOKENIZER_TYPE_KEY]!r} tokenizer, not {RESIDUAL_VQ_TYPE!r}; "
                "use gea_tokenizers.load_continuous_tokenizer to load any type."
            )
        config = ResidualVQConfig.from_json(document["config"])
        model = ResidualVQAutoencoder(config)
        model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)), strict=True)
        return cls(read_statistics(document), config, model)

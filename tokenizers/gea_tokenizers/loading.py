"""Load any saved continuous tokenizer by the type recorded in its ``config.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Union

from gea_tokenizers.binning import BINNING_TYPE, BinningTokenizer
from gea_tokenizers.continuous import CONFIG_FILE, TOKENIZER_TYPE_KEY, ContinuousTokenizer
from gea_tokenizers.residual_vq import RESIDUAL_VQ_TYPE, ResidualVQTokenizer

CONTINUOUS_TOKENIZER_LOADERS: dict[str, Callable[[Union[str, Path]], ContinuousTokenizer]] = {
    RESIDUAL_VQ_TYPE: ResidualVQTokenizer.load,
    BINNING_TYPE: BinningTokenizer.load,
}


def load_continuous_tokenizer(directory: Union[str, Path]) -> ContinuousTokenizer:
    """Load the continuous tokenizer saved in `directory`, whatever its type."""
    config_path = Path(directory) / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"No {CONFIG_FILE} in {directory}; pass a folder written by ContinuousTokenizer.save.")
    tokenizer_type = json.loads(config_path.read_text()).get(TOKENIZER_TYPE_KEY)
    loader = CONTINUOUS_TOKENIZER_LOADERS.get(tokenizer_type)
    if loader is None:
        raise ValueError(
            f"{config_path} names tokenizer type {tokenizer_type!r}; known types are "
            f"{sorted(CONTINUOUS_TOKENIZER_LOADERS)}."
        )
    return loader(directory)

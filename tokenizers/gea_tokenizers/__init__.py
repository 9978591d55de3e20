"""Action tokenizers: how each embodiment's actions become LLM tokens and back.

Start from `ActionDetokenizer`, which combines a continuous tokenizer (`ResidualVQTokenizer`
or the `BinningTokenizer` baseline), a `CodeMap` onto the LLM vocabulary and the semantic
phrases of discrete and UI actions, and hands the policy one `PrefixConstraint` per
embodiment for constrained decoding.
"""

from gea_tokenizers.binning import BinningConfig, BinningTokenizer
from gea_tokenizers.constraint import (
    FixedLengthConstraint,
    PrefixConstraint,
    TextGrammarConstraint,
    TrieConstraint,
    find_violation,
)
from gea_tokenizers.continuous import ActionStatistics, ContinuousTokenizer, NormalizationMode
from gea_tokenizers.detokenizer import ActionDetokenizer, action_phrase_token_ids
from gea_tokenizers.loading import load_continuous_tokenizer
from gea_tokenizers.residual_vq import ResidualVQConfig, ResidualVQTokenizer
from gea_tokenizers.semantic import DecodedAction, DiscreteActionCodec, UIActionCodec
from gea_tokenizers.training import (
    TokenizerReport,
    TrainingConfig,
    evaluate_tokenizer,
    parse_embodiment_weights,
    train_residual_vq,
)
from gea_tokenizers.vocab import CodeMap, CodeMapMode, add_action_tokens, added_token_code_map, least_used_code_map

__all__ = [
    "ActionDetokenizer",
    "ActionStatistics",
    "BinningConfig",
    "BinningTokenizer",
    "CodeMap",
    "CodeMapMode",
    "ContinuousTokenizer",
    "DecodedAction",
    "DiscreteActionCodec",
    "FixedLengthConstraint",
    "NormalizationMode",
    "PrefixConstraint",
    "ResidualVQConfig",
    "ResidualVQTokenizer",
    "TextGrammarConstraint",
    "TokenizerReport",
    "TrainingConfig",
    "TrieConstraint",
    "UIActionCodec",
    "action_phrase_token_ids",
    "add_action_tokens",
    "added_token_code_map",
    "evaluate_tokenizer",
    "find_violation",
    "least_used_code_map",
    "load_continuous_tokenizer",
    "parse_embodiment_weights",
    "train_residual_vq",
]

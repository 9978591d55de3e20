"""GEA's policy: LLaVA-OneVision with a shared prompt format, constrained decoding, a value head and LoRA.

Start with `build_tiny_model` (CPU, no download) or `GEAPolicy.from_pretrained` on a
LLaVA-OneVision checkpoint, build prompts with `GEAPolicy.build_input`, decode actions
with `GEAPolicy.act` and score them for training with `GEAPolicy.score`.
"""

from gea.policy.batching import ActionOutput, ScoreOutput
from gea.policy.configuration_gea import GEAPolicyConfig
from gea.policy.frames import build_image_processor, tokens_per_frame
from gea.policy.modeling_gea import GEAPolicy
from gea.policy.prompt import PolicyInput, PromptBuilder
from gea.policy.tiny import TinyModelSpec, build_tiny_model, train_tokenizer
from gea.policy.value_head import ValueHead

__all__ = [
    "ActionOutput",
    "GEAPolicy",
    "GEAPolicyConfig",
    "PolicyInput",
    "PromptBuilder",
    "ScoreOutput",
    "TinyModelSpec",
    "ValueHead",
    "build_image_processor",
    "build_tiny_model",
    "tokens_per_frame",
    "train_tokenizer",
]

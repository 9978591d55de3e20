"""The policy and its action de-tokenizer, saved and loaded together as one unit."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from gea.policy import GEAPolicy, GEAPolicyConfig
from gea_tokenizers import ActionDetokenizer

logger = logging.getLogger(__name__)

POLICY_FOLDER = "policy"
ACTION_TOKENIZER_FOLDER = "action_tokenizer"


@dataclass
class PolicyBundle:
    policy: GEAPolicy
    detokenizer: ActionDetokenizer

    def save(self, folder: Path) -> None:
        self.policy.save_pretrained(folder / POLICY_FOLDER)
        self.detokenizer.save(folder / ACTION_TOKENIZER_FOLDER)


def load_bundle(folder: Path, policy_config: Optional[GEAPolicyConfig] = None, lora_trainable: bool = True) -> PolicyBundle:
    """Load the policy and de-tokenizer of a checkpoint folder.

    The de-tokenizer is checked against the policy's tokenizer: a checkpoint whose
    action tokenizer was built for another vocabulary is rejected.
    """
    folder = Path(folder)
    for name in (POLICY_FOLDER, ACTION_TOKENIZER_FOLDER):
        if not (folder / name).is_dir():
            raise FileNotFoundError(
                f"{folder / name} not found: {folder} is not a GEA policy checkpoint (expected `{POLICY_FOLDER}/` and "
                f"`{ACTION_TOKENIZER_FOLDER}/`, as written by `gea sft` or `gea ppo`)."
            )
    policy = GEAPolicy.from_pretrained(folder / POLICY_FOLDER, config=policy_config, lora_trainable=lora_trainable)
    detokenizer = ActionDetokenizer.load(folder / ACTION_TOKENIZER_FOLDER, policy.tokenizer)
    return PolicyBundle(policy, detokenizer)


def check_embodiments_covered(detokenizer: ActionDetokenizer, embodiments: Iterable[str]) -> None:
    """Raise if `detokenizer` cannot act for some of `embodiments`."""
    missing = sorted(set(embodiments) - set(detokenizer.embodiments))
    if missing:
        raise ValueError(
            f"The checkpoint's action tokenizer does not cover {missing}; it covers {detokenizer.embodiments}. "
            "Train (SFT) on data of those embodiments first."
        )

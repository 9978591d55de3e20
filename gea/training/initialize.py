"""Build the initial policy and its action de-tokenizer for the embodiments in the SFT data."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Optional

from gea.data import TrajectoryDataset
from gea.policy import GEAPolicy, GEAPolicyConfig, TinyModelSpec, build_tiny_model
from gea.training.bundle import POLICY_FOLDER, PolicyBundle, check_embodiments_covered, load_bundle
from gea.training.checkpoint import LATEST_NAME, MANIFEST_NAME, RUN_CHECKPOINTS_FOLDER, resolve_checkpoint
from gea.training.config import TINY_INIT, PolicyInitConfig
from gea_envs import ActionKind, ActionSpace, get_adapter
from gea_tokenizers import (
    ActionDetokenizer,
    ContinuousTokenizer,
    action_phrase_token_ids,
    added_token_code_map,
    least_used_code_map,
    load_continuous_tokenizer,
)
from gea_tokenizers.vocab import ACTION_TOKEN_TEMPLATE

logger = logging.getLogger(__name__)


def _action_phrases(space: ActionSpace) -> list[str]:
    """Example phrases of an action space, so the tiny tokenizer learns their merges."""
    if space.kind is ActionKind.DISCRETE:
        return list(space.names)
    if space.kind is ActionKind.UI:
        clicks = [f"click {x} {y}" for x in range(space.grid_width) for y in range(0, space.grid_height, 3)]
        return clicks + ["type hello world", "type Submit"]
    return []


def text_corpus(datasets: Iterable[TrajectoryDataset], embodiments: Iterable[str]) -> list[str]:
    """Return the prompts, instructions and action phrases of the data: what the tiny tokenizer is trained on."""
    corpus: list[str] = []
    for name in sorted(set(embodiments)):
        adapter = get_adapter(name)
        prompt = adapter.prompt
        corpus += [prompt.agent, prompt.action_space, prompt.simulator, prompt.camera]
        corpus += _action_phrases(adapter.action_space)
    for dataset in datasets:
        corpus += sorted({info.instruction for info in dataset.episodes})
    corpus += ["Agent: ", "Action space: ", "Simulator: ", "Camera: ", "Instruction: ", "Observation: ", "Action: "]
    return corpus


def build_bundle(
    init: PolicyInitConfig,
    datasets: list[TrajectoryDataset],
    embodiments: list[str],
    continuous_tokenizer_dir: Optional[str],
) -> PolicyBundle:
    """Build the initial policy (tiny, pretrained or a GEA checkpoint) and a de-tokenizer for `embodiments`."""
    if is_gea_checkpoint(init.init):
        return _bundle_from_checkpoint(init, embodiments, continuous_tokenizer_dir)
    spaces = {name: get_adapter(name).action_space for name in embodiments}
    continuous_names = [name for name, space in spaces.items() if space.kind is ActionKind.CONTINUOUS]
    continuous = _load_continuous(continuous_tokenizer_dir, continuous_names)
    policy_config = GEAPolicyConfig.from_dict(init.policy)
    corpus = text_corpus(datasets, embodiments)

    if init.init == TINY_INIT:
        spec = TinyModelSpec(**init.tiny)
        action_tokens = [ACTION_TOKEN_TEMPLATE.format(code=c) for c in range(continuous.num_codes)] if continuous else []
        model, tokenizer, processor = build_tiny_model(corpus, action_tokens, spec, seed=init.seed)
        policy = GEAPolicy(model, tokenizer, processor, policy_config)
        code_map = added_token_code_map(policy.tokenizer, continuous.num_codes) if continuous else None
    else:
        policy = GEAPolicy.from_pretrained(init.init, config=policy_config)
        code_map = None
        if continuous:
            # A pretrained vocabulary keeps its size: codes reuse its least-used ids.
            exclude = action_phrase_token_ids(spaces, policy.tokenizer)
            code_map = least_used_code_map(policy.tokenizer, corpus, continuous.num_codes, exclude)
    if init.vision_pretraining is not None:
        from gea.training.vision_pretraining import pretrain_vision_tower

        pretrain_vision_tower(policy, init.vision_pretraining)
    detokenizer = ActionDetokenizer(spaces, policy.tokenizer, continuous, code_map)
    logger.info("Built policy from %s for %d embodiments.", init.init, len(embodiments))
    return PolicyBundle(policy, detokenizer)


def is_gea_checkpoint(init: str) -> bool:
    """Return whether `init` names a local folder written by `gea sft` or `gea ppo` (a checkpoint or its run folder)."""
    path = Path(init)
    return any(
        candidate.exists()
        for candidate in (path / MANIFEST_NAME, path / LATEST_NAME, path / RUN_CHECKPOINTS_FOLDER / LATEST_NAME)
    )


def _bundle_from_checkpoint(
    init: PolicyInitConfig, embodiments: list[str], continuous_tokenizer_dir: Optional[str]
) -> PolicyBundle:
    """Start from a GEA checkpoint's policy and de-tokenizer, keeping its action tokens.

    The optimizer, schedule and step count start afresh, so this fine-tunes a trained policy,
    for example on a new mix of the same embodiments, while `--resume` continues a run.

    NOTE: a `gea ppo` checkpoint loads with its LoRA adapter, whose base weights PEFT keeps
    frozen. Only `gea sft` checkpoints are tested here.
    """
    if init.tiny or init.vision_pretraining is not None:
        raise ValueError(
            f"policy.init is the checkpoint {init.init}, which fixes the architecture and the vision tower, so remove "
            "`policy.tiny` and `policy.vision_pretraining` from the config."
        )
    checkpoint = resolve_checkpoint(init.init)
    # `policy.policy` overrides single fields of the checkpoint's own policy config.
    saved = GEAPolicyConfig.load(checkpoint / POLICY_FOLDER)
    bundle = load_bundle(checkpoint, GEAPolicyConfig.from_dict({**saved.to_dict(), **init.policy}))
    check_embodiments_covered(bundle.detokenizer, embodiments)
    if continuous_tokenizer_dir is not None and bundle.detokenizer.continuous is not None:
        configured = _load_continuous(continuous_tokenizer_dir, list(bundle.detokenizer.continuous.statistics))
        if configured.fingerprint() != bundle.detokenizer.continuous.fingerprint():
            raise ValueError(
                f"The action tokenizer in {continuous_tokenizer_dir} does not match the one in checkpoint "
                f"{checkpoint}: its codebooks or action statistics differ. Point `action_tokenizer:` at the folder "
                "the checkpoint was trained with, or remove it to keep the checkpoint's."
            )
    logger.info("Fine-tuning the policy of checkpoint %s for %d embodiments.", checkpoint, len(embodiments))
    return bundle


def _load_continuous(directory: Optional[str], continuous_names: list[str]) -> Optional[ContinuousTokenizer]:
    if not continuous_names:
        return None
    if directory is None:
        raise ValueError(
            f"The data contains continuous embodiments {continuous_names}; set `action_tokenizer:` in the config to a "
            "folder written by `gea train-tokenizer`."
        )
    continuous = load_continuous_tokenizer(directory)
    missing = sorted(set(continuous_names) - set(continuous.statistics))
    if missing:
        raise ValueError(
            f"The action tokenizer in {directory} has no statistics for {missing} (it has {sorted(continuous.statistics)}); "
            "retrain it with `gea train-tokenizer` on data that includes them."
        )
    return continuous

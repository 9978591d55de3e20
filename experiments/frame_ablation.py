"""Does an SFT checkpoint look at its frames? Action NLL with true frames against shuffled ones.

The script draws SFT batches from the checkpoint's own datasets (the paths in its saved SFT
config) and scores the expert's action tokens twice. The first pass gives each sample its
own frames. The second gives it the frames of another sample of the same batch that has
as many frames. A policy that reads its observations loses likelihood when the frames are
shuffled, while one that predicts from the prompt text and past actions alone scores the same. With shuffled frames the
loss is about the entropy of the expert's action distribution given the text.

Usage:
    python experiments/frame_ablation.py runs/sft_babyai/checkpoints/step_00000800 --batches 8
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import yaml

from gea.policy.prompt import PolicyInput
from gea.training.bundle import load_bundle
from gea.training.config import SFTConfig
from gea.training.sft import CONFIG_FILE, ActionNLL
from gea.training.sft_data import SFTBatch, SFTDataMix, load_datasets

logger = logging.getLogger("frame_ablation")

# Batches come from step indices far beyond any SFT run's, so the draw differs from the
# first batches that run trained on (the data still is its training data).
FIRST_STEP = 1_000_000


def shuffle_frames(batch: SFTBatch, rng: np.random.Generator) -> SFTBatch:
    """Give each sample the frames of another sample with the same number of frames."""
    inputs = list(batch.inputs)
    by_count: dict[int, list[int]] = {}
    for index, item in enumerate(inputs):
        by_count.setdefault(len(item.frames), []).append(index)
    shuffled = list(inputs)
    for indices in by_count.values():
        for target, source in zip(indices, rng.permutation(indices)):
            shuffled[target] = PolicyInput(inputs[target].input_ids, inputs[source].frames)
    return SFTBatch(shuffled, batch.action_ids, batch.constraints, batch.embodiments)


def frame_ablation(checkpoint: Path, batches: int, batch_size: int, seed: int = 0) -> tuple[float, float, int]:
    """Return the mean per-token action NLL with true and with shuffled frames, and the sample count."""
    config = SFTConfig.from_dict(yaml.safe_load((checkpoint / CONFIG_FILE).read_text()))
    bundle = load_bundle(checkpoint, lora_trainable=False)
    bundle.policy.eval()
    data = SFTDataMix(config.datasets, load_datasets(config.datasets), bundle.policy, bundle.detokenizer)
    loss = ActionNLL(bundle.policy)
    rng = np.random.default_rng(seed)
    true_nll, shuffled_nll = [], []
    with torch.no_grad():
        for index in range(batches):
            batch = data.batch(seed, FIRST_STEP + index, batch_size)
            true_nll.append(loss(batch).numpy())
            shuffled_nll.append(loss(shuffle_frames(batch, rng)).numpy())
    true_all, shuffled_all = np.concatenate(true_nll), np.concatenate(shuffled_nll)
    return float(true_all.mean()), float(shuffled_all.mean()), len(true_all)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="SFT checkpoint folder, the one that contains sft_config.yaml.")
    parser.add_argument("--batches", type=int, default=8, help="Batches to score. Default: 8.")
    parser.add_argument("--batch-size", type=int, default=32, help="Samples per batch. Default: 32.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    true_nll, shuffled_nll, samples = frame_ablation(args.checkpoint, args.batches, args.batch_size)
    logger.info(
        "%s: action NLL per token %.3f with its frames, %.3f with shuffled frames (%d samples).",
        args.checkpoint, true_nll, shuffled_nll, samples,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

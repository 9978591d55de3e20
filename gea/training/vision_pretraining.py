"""Vision pretraining on simulator frames whose cells carry symbolic labels.

A randomly initialized vision tower learns to read small grid cells slowly when the only
signal is the expert's next action (experiments/sft.md measures it). An adapter whose
simulator records what each cell of the frame shows (`EmbodimentAdapter.patch_labels`)
gives one label per patch for free, 49 per 56 px BabyAI frame. This stage trains the
vision tower with a linear per-patch classifier on such labels before SFT: the CPU
stand-in for the vision tower a real LLaVA-OneVision checkpoint brings pretrained.
The classifier is discarded afterwards, and SFT trains the whole policy as usual.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from gea.policy import GEAPolicy
from gea.policy.frames import preprocess_frames
from gea.training.config import VisionPretrainingConfig
from gea_envs import EmbodimentAdapter, get_adapter

logger = logging.getLogger(__name__)

# Random-walk episodes restart after this many steps, so the frames cover many rooms
# rather than the corners one walk wanders into.
STEPS_PER_EPISODE = 8
HELD_OUT_SHARE = 0.1
EVAL_BATCH_SIZE = 256


@dataclass
class VisionPretrainingResult:
    """Per-patch accuracy on held-out frames, against always predicting the most common label."""

    accuracy: float
    majority_accuracy: float
    final_loss: float


def collect_labelled_frames(
    adapter: EmbodimentAdapter, count: int, image_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Collect frames ``(count, H, W, 3)`` and labels ``(count, rows, cols)`` by random walks in `adapter`'s env."""
    env = adapter.make_env(seed, image_size)
    env.action_space.seed(seed)
    frames, labels = [], []
    episode = 0
    with tqdm(total=count, desc="vision frames", unit="frame") as progress:
        while len(frames) < count:
            raw_obs, info = env.reset(seed=seed + episode)
            episode += 1
            for _ in range(STEPS_PER_EPISODE):
                cell_labels = adapter.patch_labels(env)
                if cell_labels is None:
                    raise ValueError(
                        f"Invalid vision_pretraining.env {adapter.name!r}: it gives no patch labels (its adapter does "
                        "not implement `patch_labels`). Pick an embodiment that does, such as a BabyAI level."
                    )
                frames.append(adapter.observe(env, raw_obs, info).frames[-1])
                labels.append(cell_labels)
                progress.update()
                if len(frames) == count:
                    break
                raw_obs, _, terminated, truncated, info = env.step(env.action_space.sample())
                if terminated or truncated:
                    break
    env.close()
    logger.info("Collected %d labelled frames from %d random-walk episodes of %s.", count, episode, adapter.name)
    return np.stack(frames), np.stack(labels)


class _PatchClassifier(nn.Module):
    """The policy's vision tower and a linear classifier on each patch's features."""

    def __init__(self, policy: GEAPolicy, num_labels: int) -> None:
        super().__init__()
        base = policy.base_model
        self.vision_tower = base.model.vision_tower
        self.feature_layer = base.config.vision_feature_layer
        if not isinstance(self.feature_layer, int):
            raise ValueError(
                f"Vision pretraining reads one vision layer, but the model concatenates layers {self.feature_layer}."
            )
        self.head = nn.Linear(base.config.vision_config.hidden_size, num_labels)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # The same hidden layer `encode_frames` hands to the projector during SFT and acting.
        outputs = self.vision_tower(pixel_values, output_hidden_states=True, return_dict=True)
        return self.head(outputs.hidden_states[self.feature_layer])  # (frames, patches, labels)


def pretrain_vision_tower(policy: GEAPolicy, config: VisionPretrainingConfig) -> VisionPretrainingResult:
    """Train `policy`'s vision tower in place to predict `config.env`'s patch labels."""
    adapter = get_adapter(config.env)
    vision_config = policy.base_model.config.vision_config
    image_size, grid = vision_config.image_size, vision_config.image_size // vision_config.patch_size
    frames, labels = collect_labelled_frames(adapter, config.frames, image_size, config.seed)
    if labels.shape[1:] != (grid, grid):
        raise ValueError(
            f"{config.env} labels {labels.shape[1]}x{labels.shape[2]} cells, but the vision tower sees {grid}x{grid} "
            f"patches ({image_size} px, {vision_config.patch_size} px patches). To match them, set the tiny model's "
            "image_size and patch_size to give one patch per cell."
        )
    if labels.min() < 0 or labels.max() >= adapter.patch_label_count:
        raise ValueError(
            f"{config.env} gave patch labels in [{labels.min()}, {labels.max()}], outside [0, "
            f"{adapter.patch_label_count}). Fix the adapter's `patch_labels` or `patch_label_count`."
        )
    labels = torch.from_numpy(labels.reshape(len(labels), grid * grid))  # (frames, patches)
    held_out = max(1, int(len(frames) * HELD_OUT_SHARE))
    train_frames, train_labels = frames[held_out:], labels[held_out:]

    model = _PatchClassifier(policy, adapter.patch_label_count)
    was_training = model.vision_tower.training
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
    generator = np.random.default_rng(config.seed)
    loss_value = float("nan")
    for _ in tqdm(range(config.steps), desc="vision pretraining", unit="step"):
        mb_inds = generator.integers(0, len(train_frames), config.batch_size)
        pixel_values = preprocess_frames(policy.image_processor, list(train_frames[mb_inds]))
        logits = model(pixel_values)  # (batch, patches, labels)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), train_labels[mb_inds].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_value = float(loss.detach())

    model.eval()
    prediction_batches = []
    with torch.no_grad():
        for start in range(0, held_out, EVAL_BATCH_SIZE):
            chunk = frames[start:min(start + EVAL_BATCH_SIZE, held_out)]
            pixel_values = preprocess_frames(policy.image_processor, list(chunk))
            prediction_batches.append(model(pixel_values).argmax(-1))  # (frames, patches)
    predictions = torch.cat(prediction_batches)
    truth = labels[:held_out]
    majority = torch.mode(truth.flatten()).values
    result = VisionPretrainingResult(
        accuracy=float((predictions == truth).float().mean()),
        majority_accuracy=float((truth == majority).float().mean()),
        final_loss=loss_value,
    )
    model.vision_tower.train(was_training)
    logger.info(
        "Vision pretraining on %s: held-out patch accuracy %.3f (most common label alone: %.3f), final loss %.3f.",
        config.env, result.accuracy, result.majority_accuracy, result.final_loss,
    )
    return result

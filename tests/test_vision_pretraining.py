"""Vision pretraining on BabyAI frames labelled cell by cell, on the real simulator."""

from __future__ import annotations

import pytest
import torch

from gea.policy import GEAPolicy, GEAPolicyConfig, TinyModelSpec, build_tiny_model
from gea.training.config import SFTConfig, VisionPretrainingConfig
from gea.training.vision_pretraining import collect_labelled_frames, pretrain_vision_tower
from gea_envs import get_adapter

BABYAI = "babyai/GoToLocal"
CORPUS = ["go to the red ball", "turn left", "turn right", "move forward"]


def tiny_policy(image_size: int = 56) -> GEAPolicy:
    model, tokenizer, processor = build_tiny_model(CORPUS, spec=TinyModelSpec(image_size=image_size), seed=0)
    return GEAPolicy(model, tokenizer, processor, GEAPolicyConfig(history_length=1))


def test_collect_frames_shapes_and_variety():
    frames, labels = collect_labelled_frames(get_adapter(BABYAI), count=20, image_size=56, seed=3)
    assert frames.shape == (20, 56, 56, 3)
    assert labels.shape == (20, 7, 7)
    # Random walks of up to 8 steps from several resets: the frames are not all one view.
    assert len({frame.tobytes() for frame in frames}) > 10


def test_pretraining_learns_cells_in_vision_tower():
    policy = tiny_policy()
    language_before = {name: p.clone() for name, p in policy.base_model.model.language_model.named_parameters()}
    vision_before = {name: p.clone() for name, p in policy.base_model.model.vision_tower.named_parameters()}

    result = pretrain_vision_tower(policy, VisionPretrainingConfig(env=BABYAI, frames=400, steps=150, batch_size=32))

    # Most cells are floor or wall; the labels of the rest need the vision tower.
    assert result.accuracy > result.majority_accuracy + 0.2
    vision_after = dict(policy.base_model.model.vision_tower.named_parameters())
    assert any(not torch.equal(vision_before[name], vision_after[name]) for name in vision_before)
    for name, parameter in policy.base_model.model.language_model.named_parameters():
        assert torch.equal(language_before[name], parameter), name


def test_adapter_without_labels_raises(registered_line_world):
    with pytest.raises(ValueError, match="gives no patch labels"):
        pretrain_vision_tower(tiny_policy(), VisionPretrainingConfig(env=registered_line_world.name, frames=10, steps=1))


def test_patch_grid_mismatch_raises():
    # 64 px with 8 px patches is an 8x8 grid; BabyAI's view is 7x7 cells.
    with pytest.raises(ValueError, match="set the tiny model's image_size"):
        pretrain_vision_tower(tiny_policy(image_size=64), VisionPretrainingConfig(env=BABYAI, frames=10, steps=1))


def test_config_errors_name_the_value(tmp_path):
    with pytest.raises(ValueError, match="frames must be at least 10"):
        VisionPretrainingConfig(env=BABYAI, frames=5)
    with pytest.raises(ValueError, match="lr must be positive"):
        VisionPretrainingConfig(env=BABYAI, lr=0.0)
    config = {"run_dir": str(tmp_path), "datasets": [{"path": str(tmp_path)}]}
    with pytest.raises(ValueError, match="epochs"):
        SFTConfig.from_dict({**config, "policy": {"vision_pretraining": {"env": BABYAI, "epochs": 2}}})
    parsed = SFTConfig.from_dict({**config, "policy": {"vision_pretraining": {"env": BABYAI, "steps": 7}}})
    assert parsed.policy.vision_pretraining == VisionPretrainingConfig(env=BABYAI, steps=7)
    assert parsed.to_dict()["policy"]["vision_pretraining"]["steps"] == 7

"""A real, barely trained SFT checkpoint on BabyAI for the PPO tests."""

from __future__ import annotations

from pathlib import Path

from gea.data.collect import collect
from gea.training.config import SFTConfig
from gea.training.sft import SFTTrainer

BABYAI = "babyai/GoToLocal"
IMAGE_SIZE = 32
HISTORY_LENGTH = 2


def make_sft_checkpoint(root: Path, episodes: int = 4, steps: int = 2) -> Path:
    """Collect expert episodes under `root`/data, run SFT for `steps` steps and return the checkpoint."""
    data = root / "data"
    collect([BABYAI], episodes, data, image_size=IMAGE_SIZE, show_progress=False)
    config = SFTConfig.from_dict(
        {
            "run_dir": str(root / "sft"),
            "datasets": [{"path": str(data), "envs": [BABYAI]}],
            "policy": {
                "tiny": {"image_size": IMAGE_SIZE, "text_layers": 1, "vision_layers": 1},
                "policy": {"history_length": HISTORY_LENGTH},
            },
            "train": {"steps": steps, "batch_size": 2, "checkpoint_every": steps, "log_every": 1},
        }
    )
    return SFTTrainer(config, show_progress=False).train()

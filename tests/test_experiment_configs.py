"""Every config under experiments/ parses with the command it is written for, so a renamed field cannot rot one."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gea.pipeline.config import PipelineConfig
from gea.rl.run import PPORunConfig
from gea.training.config import SFTConfig

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
CONFIGS = sorted(EXPERIMENTS.glob("*.yaml"))


def parser_for(data: dict):
    """`gea sft` configs list datasets, `gea ppo` configs list settings, `gea run` configs have a collect stage."""
    if "datasets" in data:
        return SFTConfig.from_yaml
    if "settings" in data:
        return PPORunConfig.from_yaml
    if "collect" in data:
        return PipelineConfig.from_yaml
    raise AssertionError(f"Cannot tell which command reads keys {sorted(data)}.")


def test_experiment_configs_found():
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_experiment_config_parses(path):
    parser_for(yaml.safe_load(path.read_text()))(path)

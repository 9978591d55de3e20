"""`gea train-tokenizer` on trajectories collected with `gea collect` from real simulators."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gea.cli import main
from gea.data.trajectories import TrajectoryDataset
from gea_tokenizers import BinningTokenizer, ResidualVQTokenizer, load_continuous_tokenizer

ARM = "metaworld/reach-v3"
GRID_WORLD = "babyai/GoToLocal"
TINY_ARGS = ["--steps", "20", "--batch-size", "128", "--codebook-size", "32", "--code-dim", "16"]
TINY_ARGS += ["--hidden-width", "32"]


@pytest.fixture(scope="module")
def trajectories(tmp_path_factory):
    root = tmp_path_factory.mktemp("trajectories")
    argv = ["collect", ARM, GRID_WORLD, "--episodes", "1", "--out", str(root), "--image-size", "16", "--workers", "1"]
    assert main(argv) == 0
    return root


def test_trains_vq_on_continuous_embodiments(trajectories, tmp_path, capsys):
    out = tmp_path / "vq"
    assert main(["train-tokenizer", "--data", str(trajectories), "--out", str(out), *TINY_ARGS]) == 0
    tokenizer = load_continuous_tokenizer(out)
    assert isinstance(tokenizer, ResidualVQTokenizer)
    assert tokenizer.embodiments == [ARM]  # the discrete grid world is skipped
    assert tokenizer.num_codes == 32
    report = json.loads((out / "report.json").read_text())
    assert set(report["recon_mse"]) == {ARM}
    assert len(report["codebooks"]) == 2
    assert any((out / "tensorboard").iterdir())
    assert ARM in capsys.readouterr().out

    actions = np.stack(TrajectoryDataset(trajectories).actions(ARM))
    assert tokenizer.statistics[ARM].count == len(actions)
    assert np.array_equal(tokenizer.statistics[ARM].max, actions.max(axis=0))


def test_fits_binning(trajectories, tmp_path):
    out = tmp_path / "binning"
    assert main(["train-tokenizer", "--data", str(trajectories), "--out", str(out), "--tokenizer", "binning"]) == 0
    tokenizer = load_continuous_tokenizer(out)
    assert isinstance(tokenizer, BinningTokenizer)
    assert tokenizer.tokens_for(ARM) == 4


def test_rejects_discrete_embodiment(trajectories, tmp_path):
    argv = ["train-tokenizer", "--data", str(trajectories), "--out", str(tmp_path), "--embodiments", GRID_WORLD]
    with pytest.raises(SystemExit, match=r"\['babyai/GoToLocal'\] do not have continuous actions"):
        main(argv)


def test_cli_defaults_match_config_defaults():
    import argparse

    from gea.commands import train_tokenizer
    from gea_tokenizers import ResidualVQConfig, TrainingConfig

    parser = argparse.ArgumentParser()
    train_tokenizer.add_arguments(parser)
    args = parser.parse_args(["--data", "x", "--out", "y"])
    model, training = ResidualVQConfig(), TrainingConfig()
    assert args.steps == training.steps
    assert args.batch_size == training.batch_size
    assert args.code_dim == model.code_dim
    assert args.hidden_width == model.hidden_width
    assert args.mlp_layers == model.mlp_layers
    assert args.codebook_size == model.codebook_size
    assert args.num_quantizers == model.num_quantizers


def test_weight_option_reaches_training(trajectories, tmp_path):
    out = tmp_path / "weighted"
    argv = ["train-tokenizer", "--data", str(trajectories), "--out", str(out), *TINY_ARGS, "--weight", f"{ARM}=2"]
    assert main(argv) == 0
    assert load_continuous_tokenizer(out).embodiments == [ARM]


def test_weight_without_data_fails(trajectories, tmp_path, caplog):
    argv = ["train-tokenizer", "--data", str(trajectories), "--out", str(tmp_path), *TINY_ARGS]
    assert main([*argv, "--weight", "mujoco/HalfCheetah-v5=4"]) == 2
    assert "['mujoco/HalfCheetah-v5']" in caplog.text
    assert ARM in caplog.text
    assert main([*argv, "--weight", "HalfCheetah"]) == 2
    assert "NAME=WEIGHT" in caplog.text

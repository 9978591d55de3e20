"""`gea run` end to end on real simulators: every stage, at the smallest sizes that exercise it."""

from __future__ import annotations

import json

import yaml

from gea.cli import main

CONFIG = {
    "image_size": 32,
    "collect": {
        "workers": 2,
        "episodes": {"babyai/GoToLocal": 8, "metaworld/reach-v3": 2, "miniwob/click-button": 2},
    },
    "tokenizer": {"model": {"codebook_size": 16, "hidden_width": 32, "code_dim": 16}, "training": {"steps": 20, "batch_size": 64}},
    "sft": {
        "policy": {"tiny": {"image_size": 32, "text_layers": 1, "vision_layers": 1}, "policy": {"history_length": 2}},
        "train": {"steps": 3, "batch_size": 4, "checkpoint_every": 3},
    },
    "ppo_envs": ["babyai/GoToLocal"],
    "ppo": {
        "iterations": 1,
        "lora_rank": 4,
        "checkpoint_every": 1,
        "max_episode_steps": 16,
        "settings": {
            "num_env_runners": 1,
            "num_envs_per_env_runner": 2,
            "rollout_fragment_length": 16,
            "train_batch_size_per_learner": 32,
            "minibatch_size": 16,
            "num_epochs": 1,
            "sft_batch_size": 4,
        },
    },
    "eval": {"episodes": 1, "workers": 1, "batch_size": 3, "videos_per_env": 1, "max_episode_steps": 8},
}


def test_gea_run_every_stage(tmp_path, capsys):
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), **CONFIG}))

    assert main(["run", str(config_path)]) == 0
    output = capsys.readouterr().out

    run_dir = tmp_path / "run"
    for stage in ("collect", "tokenizer", "sft", "eval_sft", "ppo", "eval_ppo"):
        assert (run_dir / stage / ".done").is_file(), stage
    assert "success after SFT" in output
    assert "success after PPO" in output
    for env in CONFIG["collect"]["episodes"]:
        assert env in output
    results = json.loads((run_dir / "eval_ppo" / "results.json").read_text())
    assert {s["embodiment"] for s in results["summaries"]} == set(CONFIG["collect"]["episodes"])
    assert list((run_dir / "eval_ppo" / "videos").glob("*.gif"))

    # A second run reuses every stage: no stage writes its marker again.
    markers = {stage: (run_dir / stage / ".done").stat().st_mtime_ns for stage in ("collect", "sft", "ppo", "eval_ppo")}
    assert main(["run", str(config_path)]) == 0
    assert "success after PPO" in capsys.readouterr().out
    for stage, mtime in markers.items():
        assert (run_dir / stage / ".done").stat().st_mtime_ns == mtime, stage
    done = json.loads((run_dir / "sft" / ".done").read_text())
    assert done["seconds"] > 0
    assert done["peak_rss_gib"] > 0

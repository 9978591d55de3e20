"""Atomic checkpoints: latest pointer, pruning and corruption detection."""

from __future__ import annotations

import pytest

from gea.training.checkpoint import CheckpointError, CheckpointManager, resolve_checkpoint, verify_checkpoint


def _writer(text: str):
    def write(folder):
        (folder / "weights.bin").write_text(text)
        (folder / "sub").mkdir()
        (folder / "sub" / "state.json").write_text("{}")

    return write


def test_latest_points_to_newest_and_prunes(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    for step in (10, 20, 30):
        manager.save(step, _writer(f"step {step}"), {"loss": 1.0})

    latest = manager.latest()
    assert latest.name == "step_00000030"
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_00000020", "step_00000030"]
    assert resolve_checkpoint(tmp_path) == latest
    assert verify_checkpoint(latest)["metadata"] == {"loss": 1.0}


def test_interrupted_write_keeps_previous_latest(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(1, _writer("good"))

    def crash(folder):
        (folder / "weights.bin").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        manager.save(2, crash)
    assert manager.latest().name == "step_00000001"


def test_corrupt_file_named_in_error(tmp_path):
    path = CheckpointManager(tmp_path).save(5, _writer("weights"))
    (path / "weights.bin").write_text("flipped")
    with pytest.raises(CheckpointError, match="weights.bin"):
        resolve_checkpoint(path)


def test_folder_without_manifest_rejected(tmp_path):
    with pytest.raises(CheckpointError, match="not a GEA checkpoint"):
        verify_checkpoint(tmp_path)

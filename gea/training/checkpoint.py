"""Atomic, verifiable checkpoints.

A checkpoint is a folder ``ROOT/step_<8 digits>/`` holding whatever the stage writes plus
``checkpoint.json`` (step, metadata and a SHA-256 per file). It is written under a
temporary name and renamed into place, and ``ROOT/latest`` is replaced atomically after
that, so a kill at any moment leaves the previous checkpoint as the latest complete one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Callable, Optional

from gea.errors import GEAError

logger = logging.getLogger(__name__)

MANIFEST_NAME = "checkpoint.json"
LATEST_NAME = "latest"
# Training stages keep their checkpoints in this subfolder of the run folder.
RUN_CHECKPOINTS_FOLDER = "checkpoints"


class CheckpointError(GEAError):
    """Raised for a missing, incomplete or corrupt checkpoint; the message names the file."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointManager:
    """Writes numbered checkpoints under `root`, keeps the newest `keep`, and finds the latest."""

    def __init__(self, root: str | Path, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}.")
        self.root = Path(root)
        self.keep = keep

    def save(self, step: int, write_files: Callable[[Path], None], metadata: Optional[dict] = None) -> Path:
        """Create checkpoint `step`: `write_files(folder)` fills a temporary folder that is then renamed."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"step_{step:08d}"
        tmp = self.root / f".tmp_step_{step:08d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        write_files(tmp)
        files = {
            str(path.relative_to(tmp)): _sha256(path) for path in sorted(tmp.rglob("*")) if path.is_file()
        }
        manifest = {"step": step, "metadata": metadata or {}, "files": files}
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(self.root)

        latest_tmp = self.root / f".{LATEST_NAME}.tmp"
        latest_tmp.write_text(final.name)
        os.replace(latest_tmp, self.root / LATEST_NAME)
        logger.info("Saved checkpoint %s", final)
        self._prune()
        return final

    def latest(self) -> Optional[Path]:
        """Return the latest complete checkpoint, or None if `root` has none."""
        pointer = self.root / LATEST_NAME
        if not pointer.exists():
            return None
        path = self.root / pointer.read_text().strip()
        verify_checkpoint(path)
        return path

    def _prune(self) -> None:
        checkpoints = sorted(self.root.glob("step_*"))
        for old in checkpoints[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)


def verify_checkpoint(path: str | Path) -> dict:
    """Check every file of the checkpoint against its recorded SHA-256 and return the manifest."""
    path = Path(path)
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        raise CheckpointError(
            f"{path} is not a GEA checkpoint: {MANIFEST_NAME} is missing. Pass a folder written by `gea sft` or `gea ppo` "
            "(a `step_*` folder, or the run folder containing `latest`)."
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError) as error:
        raise CheckpointError(f"Checkpoint manifest {manifest_path} is corrupt: {error}.") from error
    for name, expected in files.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"Checkpoint file {file} is missing; the checkpoint {path} is incomplete.")
        if _sha256(file) != expected:
            raise CheckpointError(
                f"Checkpoint file {file} does not match its recorded SHA-256; the checkpoint {path} is corrupt. "
                "Resume from an earlier checkpoint or retrain."
            )
    return manifest


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a checkpoint folder, a folder with a ``latest`` pointer, or a run folder; verify and return the checkpoint."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"Checkpoint {path} not found.")
    if (path / RUN_CHECKPOINTS_FOLDER / LATEST_NAME).exists():
        path = path / RUN_CHECKPOINTS_FOLDER
    if (path / LATEST_NAME).exists():
        latest = CheckpointManager(path).latest()
        if latest is None:
            raise CheckpointError(f"Run folder {path} has no complete checkpoint.")
        return latest
    verify_checkpoint(path)
    return path

"""Provenance recorded beside every result: versions, commit, renderer and inputs."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Optional

_PACKAGES = (
    "gea", "torch", "transformers", "tokenizers", "peft", "vector-quantize-pytorch", "ray", "gymnasium",
    "mujoco", "metaworld", "minigrid", "ale-py", "miniwob", "selenium", "stable-baselines3", "numpy",
)


def package_versions() -> dict[str, Optional[str]]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(repo: Path = Path(__file__).resolve().parents[1]) -> Optional[str]:
    """Return the checkout's commit, with ``-dirty`` if it has uncommitted changes; None outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def hash_path(path: Path) -> str:
    """SHA-256 over a file, or over every file below a folder (relative names included)."""
    digest = hashlib.sha256()
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def build_manifest(**extra) -> dict:
    """Return the provenance dictionary, with `extra` entries (seeds, image size, checkpoint hash...)."""
    return {
        "packages": package_versions(),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "renderer": {"MUJOCO_GL": os.environ.get("MUJOCO_GL"), "chromium": os.environ.get("MINIWOB_CHROME_BINARY")},
        **extra,
    }


def describe_machine() -> str:
    """Return one line naming the CPU, cores, thread settings, load and key versions, for benchmark pages."""
    import re

    import torch
    import transformers

    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        if match:
            cpu = match.group(1).strip()
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores, torch threads: {torch.get_num_threads()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load average at the end {load}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}"
    )

"""Fixed, versioned evaluation seeds.

Evaluation seeds start far above the seeds `gea collect` uses by default (0, 1, 2, ...),
so a policy is never scored on the episodes it was trained on. Changing the list means
adding a new version, never editing an old one, so results stay comparable.
"""

from __future__ import annotations

SEED_LISTS = {
    "v1": 1_000_000,
}
DEFAULT_VERSION = "v1"


def eval_seeds(episodes: int, version: str = DEFAULT_VERSION) -> list[int]:
    """Return the first `episodes` seeds of evaluation seed list `version`."""
    if version not in SEED_LISTS:
        raise ValueError(f"Unknown evaluation seed list {version!r}; known versions: {sorted(SEED_LISTS)}.")
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}.")
    start = SEED_LISTS[version]
    return list(range(start, start + episodes))

"""Fixed, versioned evaluation seeds.

Evaluation seeds start far above the seeds `gea collect` uses by default (0, 1, 2, ...),
so a policy is never scored on the episodes it was trained on. Changing the list means
adding a new version, never editing an old one, so results stay comparable.

`v1` is the list results are reported on. `dev1` is a disjoint list for choosing settings
such as the sampling temperature, so that the choice is not fitted to the reported seeds.
"""

from __future__ import annotations

# Each list contains LIST_LENGTH seeds from its start, so no two lists share a seed.
LIST_LENGTH = 1_000_000
SEED_LISTS = {
    "v1": 1_000_000,
    "dev1": 2_000_000,
}
DEFAULT_VERSION = "v1"


def eval_seeds(episodes: int, version: str = DEFAULT_VERSION) -> list[int]:
    """Return the first `episodes` seeds of evaluation seed list `version`."""
    if version not in SEED_LISTS:
        raise ValueError(f"Unknown evaluation seed list {version!r}; known versions: {sorted(SEED_LISTS)}.")
    if not 1 <= episodes <= LIST_LENGTH:
        raise ValueError(f"episodes must be between 1 and {LIST_LENGTH}, got {episodes}.")
    start = SEED_LISTS[version]
    return list(range(start, start + episodes))

"""Embodiment adapters: every environment GEA can train on, behind one interface.

Importing this package sets headless-rendering defaults (see `gea_envs.headless`) and
registers the built-in adapters in `ADAPTERS`.
"""

from gea_envs.headless import configure_headless

configure_headless()

from gea_envs.base import (  # noqa: E402
    Domain,
    EmbodimentAdapter,
    EmbodimentPrompt,
    EpisodeOutcome,
    ExpertPolicy,
    Observation,
)
from gea_envs.registry import Registry, UnknownNameError  # noqa: E402
from gea_envs.spaces import (  # noqa: E402
    Action,
    ActionKind,
    ActionSpace,
    ContinuousActionSpace,
    DiscreteActionSpace,
    UIAction,
    UIActionSpace,
)

ADAPTERS: Registry[EmbodimentAdapter] = Registry("embodiment")


def get_adapter(name: str) -> EmbodimentAdapter:
    """Build the adapter registered as `name`; unknown names raise with the list of known ones."""
    return ADAPTERS.get(name)


from gea_envs import adapters  # noqa: E402,F401  (registers the built-in adapters)

__all__ = [
    "ADAPTERS",
    "Action",
    "ActionKind",
    "ActionSpace",
    "ContinuousActionSpace",
    "DiscreteActionSpace",
    "Domain",
    "EmbodimentAdapter",
    "EmbodimentPrompt",
    "EpisodeOutcome",
    "ExpertPolicy",
    "Observation",
    "Registry",
    "UIAction",
    "UIActionSpace",
    "UnknownNameError",
    "get_adapter",
]

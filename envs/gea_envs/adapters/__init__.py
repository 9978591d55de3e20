"""Built-in adapters. Each module registers its embodiments in `gea_envs.ADAPTERS` on import."""
from gea_envs.adapters import mujoco_adapter  # noqa: F401
from gea_envs.adapters import metaworld_adapter  # noqa: F401
from gea_envs.adapters import miniwob_adapter  # noqa: F401
from gea_envs.adapters import babyai_adapter  # noqa: F401
from gea_envs.adapters import atari_adapter  # noqa: F401

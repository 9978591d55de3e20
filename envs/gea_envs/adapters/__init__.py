"""Built-in adapters. Each module registers its embodiments in `gea_envs.ADAPTERS` on import."""

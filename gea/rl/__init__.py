"""Stage 2 of GEA: PPO on Ray RLlib's new API stack across embodiments.

- `gea.rl.ray_init.init_ray`: a loopback-only local Ray node.
- `gea.rl.env`: the RLlib environment around any registered adapter, acting in token ids.
- `gea.rl.module.GeaTorchRLModule` and `gea.rl.distribution.TokenSequenceDistribution`:
  the policy seam and its action distribution.
- `gea.rl.learner.GeaPPOTorchLearner` with `gea.rl.gae`: PPO plus SFT, normalized
  entropy and per-embodiment return normalization.
- `gea.rl.algorithm.build_ppo_config`: one call that wires them together.

Importing this package sets the environment variables that keep Ray on loopback,
before any submodule imports Ray.
"""

from gea.rl.ray_init import configure_loopback_environment

configure_loopback_environment()

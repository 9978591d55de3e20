"""Stage 2 of GEA: PPO on Ray RLlib's new API stack across embodiments.

- `gea.rl.ray_init.init_ray`: a loopback-only local Ray node.
- `gea.rl.env`: the RLlib environment around any registered adapter, acting in token ids.
- `gea.rl.module.GeaTorchRLModule` and `gea.rl.distribution.TokenSequenceDistribution`:
  the policy seam and its action distribution (per-token scores of the sampled sequence).
- `gea.rl.learner.GeaPPOTorchLearner` with `gea.rl.gae`: PPO plus SFT, normalized
  entropy and per-embodiment return normalization.
- `gea.rl.policy.GEAActionPolicy`: the real `GEAPolicy` behind the module, training
  only its LoRA adapters and value head.
- `gea.rl.algorithm.build_ppo_config`: one call that wires them together.
- `gea.rl.run.run_ppo` with `PPORunConfig`: the whole stage (`gea ppo`), with
  checkpoints in the SFT layout, resume and periodic evaluation.

Importing this package sets the environment variables that keep Ray on loopback,
before any submodule imports Ray.
"""

from gea.rl.ray_init import configure_loopback_environment

configure_loopback_environment()

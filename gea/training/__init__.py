"""Training stages: SFT on expert trajectories (PPO lives in `gea.rl`) and shared checkpointing."""

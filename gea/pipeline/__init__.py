"""`gea run`: every stage of the method (collect, tokenizer, SFT, PPO, evaluation) from one config."""

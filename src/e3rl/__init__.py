"""e3rl: RL post-training of language models with verifiable rewards, a difficulty-aware rollout
budget and entropy-targeting temperature control."""

__version__ = "0.1.0"

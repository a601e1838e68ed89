"""trl-ext: RL fine-tuning with verifiable rewards on top of TRL."""

__version__ = "0.1.0"

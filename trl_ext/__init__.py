"""trl-ext: RL fine-tuning with verifiable rewards on top of TRL."""

from __future__ import annotations

from importlib import import_module

__version__ = "0.1.0"

# Trainers import TRL, transformers and torch: load them on first use so that `import trl_ext` stays light.
_LAZY = {"RAFTConfig": "trl_ext.trainer.raft_config", "RAFTTrainer": "trl_ext.trainer.raft_trainer"}
_LAZY |= {"PPOConfig": "trl_ext.trainer.ppo_config", "PPOTrainer": "trl_ext.trainer.ppo_trainer"}
_LAZY |= {"DPORoundsConfig": "trl_ext.trainer.dpo_rounds_config"}
_LAZY |= {"DPORoundsTrainer": "trl_ext.trainer.dpo_rounds_trainer"}
_LAZY |= {"ProgressCallback": "trl_ext.run.progress"}
_LAZY |= dict.fromkeys(
    [
        "DynamicSamplingGRPOConfig",
        "DynamicSamplingGRPOTrainer",
        "DynamicSamplingRLOOConfig",
        "DynamicSamplingRLOOTrainer",
    ],
    "trl_ext.trainer.dynamic_sampling",
)
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trl_ext' has no attribute {name!r}")

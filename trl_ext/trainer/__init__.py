"""Trainers and their configs (RAFT, PPO, DPO rounds, GRPO and RLOO with dynamic sampling) and their pieces.

This layer imports TRL, transformers and `rewards`, nothing else of trl_ext: a user can take a trainer into their
own TRL script without the recipes' machinery.
"""

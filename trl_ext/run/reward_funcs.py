"""The run's reward functions, by name (anything `rewards` exports) or dotted import path."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from trl_ext.run.arguments import RecipeError


def resolve_reward_funcs(names: list[str]) -> list[Callable]:
    """Reward functions by name (anything exported by `rewards`) or dotted import path."""
    import rewards

    resolved = []
    for name in names:
        if name in rewards.__all__:
            resolved.append(getattr(rewards, name))
            continue
        module_name, _, attribute = name.rpartition(".")
        try:
            resolved.append(getattr(importlib.import_module(module_name), attribute))
        except (ImportError, AttributeError, ValueError) as error:
            raise RecipeError(
                f"unknown reward function '{name}'; use one of {sorted(rewards.__all__)} or a dotted import path"
            ) from error
    return resolved

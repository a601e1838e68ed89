"""What a run prints: once per run, from the main process, however many processes run it."""

from __future__ import annotations


def print_on_main(message: str) -> None:
    """Print once per run, not once per process."""
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(message, flush=True)

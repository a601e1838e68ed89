"""Files that are whole or absent: what a reader, or a run resumed after a kill, may find on disk."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | os.PathLike, content: str | Callable[[Path], object]) -> None:
    """Write `content` to `path` through a temporary file beside it, renamed into place once complete.

    `content` is text, or a function that writes the file at the path it is given (`pq.write_table(table, p)`,
    `dataset.to_parquet(str(p))`). The temporary name starts with a dot, so a round directory's clean-up
    (`trl_ext.trainer.rounds`) recognises what a killed process left; a write that fails removes it at once.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if isinstance(content, str):
            temporary.write_text(content)
        else:
            content(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)

"""Read an offline W&B run (`offline-run-*/run-*.wandb`) without the W&B service.

wandb >= 0.31 writes no summary or config JSON for offline runs and ships no reader: the `.wandb` file is a
LevelDB-log-framed stream of `wandb_internal_pb2.Record` messages. Tests and comparisons read it here.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

_BLOCK_SIZE = 32768
_FILE_HEADER = 7  # b":W&B" + 2-byte magic + 1-byte version
_RECORD_HEADER = 7  # crc32 (4) + length (2) + type (1)
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    name: str = ""
    group: str = ""
    tags: list[str] = field(default_factory=list)

    def series(self, key: str) -> list[float]:
        """Every logged value of `key`, in order."""
        return [row[key] for row in self.history if key in row]


def _payloads(data: bytes):
    if data[:4] != b":W&B":
        raise ValueError("not a W&B run file (missing ':W&B' header)")
    position, chunks = _FILE_HEADER, []
    while position + _RECORD_HEADER <= len(data):
        left_in_block = _BLOCK_SIZE - position % _BLOCK_SIZE
        if left_in_block < _RECORD_HEADER:
            position += left_in_block  # block trailer padding
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position : position + _RECORD_HEADER])
        payload = data[position + _RECORD_HEADER : position + _RECORD_HEADER + length]
        position += _RECORD_HEADER + length
        if kind == _FULL:
            yield payload
        elif kind == _FIRST:
            chunks = [payload]
        elif kind == _MIDDLE:
            chunks.append(payload)
        elif kind == _LAST:
            yield b"".join(chunks + [payload])
        elif kind == 0 and length == 0:
            position += left_in_block - _RECORD_HEADER  # zero padding up to the next block
        else:
            raise ValueError(f"corrupt W&B run file: record type {kind} at byte {position}")


def _items(items) -> dict:
    return {"/".join(item.nested_key) if item.nested_key else item.key: json.loads(item.value_json) for item in items}


def read_offline_run(path: str | Path) -> OfflineRun:
    """Parse a `run-*.wandb` file, or the `offline-run-*` directory holding one."""
    from wandb.proto import wandb_internal_pb2

    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("run-*.wandb"))
        if not files:
            raise FileNotFoundError(f"No run-*.wandb file in {path}")
        path = files[0]
    run = OfflineRun()
    for payload in _payloads(path.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            run.history.append(_items(record.history.item))
        elif kind == "summary":
            run.summary.update(_items(record.summary.update))
        elif kind == "config":
            run.config.update(_items(record.config.update))
        elif kind == "run":
            run.name, run.group, run.tags = record.run.display_name, record.run.run_group, list(record.run.tags)
            run.config.update(_items(record.run.config.update))
    return run


def latest_offline_run(wandb_dir: str | Path) -> Path:
    """The newest `offline-run-*` directory under `wandb_dir` (or its `wandb/` subdirectory)."""
    root = Path(wandb_dir)
    runs = sorted(root.glob("offline-run-*")) or sorted((root / "wandb").glob("offline-run-*"))
    if not runs:
        raise FileNotFoundError(f"No offline W&B run under {root}")
    return runs[-1]

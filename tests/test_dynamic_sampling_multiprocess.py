"""Dynamic sampling on two CPU processes (gloo), launched as users launch them: processes that keep different
numbers of groups still train on balanced batches, in the same steps, with no collective out of step."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from trl_ext.trainer.dynamic_sampling import balanced_group_count

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parent / "dynamic_sampling_ranks.py"
PROCESSES = 2
GROUP, STEPS_PER_GENERATION = 4, 4  # as the script sets them


def launch(model_dir: Path, output_dir: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node 2 tests/dynamic_sampling_ranks.py`, one thread per process; every process it
    started is killed when it returns, also after a timeout (a collective out of step would hang, not fail)."""
    env = os.environ | {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(PROCESSES)]
    command += [str(SCRIPT), str(model_dir), str(output_dir)]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    launcher = subprocess.Popen(command, cwd=output_dir, env=env, start_new_session=True, **pipes)
    try:
        stdout, stderr = launcher.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            for process in [*psutil.Process(launcher.pid).children(recursive=True), psutil.Process(launcher.pid)]:
                process.kill()
    return subprocess.CompletedProcess(command, launcher.returncode, stdout, stderr)


def test_two_processes_train_balanced_batches_in_the_same_steps(tiny_model_dir, tmp_path):
    result = launch(tiny_model_dir, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    for kind in ("grpo", "rloo"):
        ranks = [json.loads((tmp_path / f"{kind}-rank-{rank}.json").read_text()) for rank in range(PROCESSES)]
        first, second = ranks
        assert first["global_step"] == second["global_step"] == 4
        assert first["micro_batch_sizes"] == second["micro_batch_sizes"]  # balanced: same micro-batches everywhere
        assert first["balanced_calls"] == second["balanced_calls"] and first["stats"] == second["stats"]
        calls = first["balanced_calls"]
        assert len(calls) == first["stats"]["generation_batches"] == 2  # 4 steps, 2 per generation batch
        assert any(kept[0] != kept[1] for kept, _, _ in calls)  # the processes did keep different numbers
        sizes = first["micro_batch_sizes"]
        for index, (kept, target, quantum) in enumerate(calls):
            count = balanced_group_count(kept, target, quantum)
            batch = sizes[index * STEPS_PER_GENERATION : (index + 1) * STEPS_PER_GENERATION]
            assert batch == [count * GROUP // STEPS_PER_GENERATION] * STEPS_PER_GENERATION
        assert "must be a multiple of num_generations (8)" in first["refused"]

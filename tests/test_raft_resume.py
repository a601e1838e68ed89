"""A RAFT run SIGKILLed mid-cycle resumes where it stopped: finished phases are reused, not redone or lost."""

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

# Runs a 3-cycle RAFT; PAUSE=<phase>:<cycle> makes it write PAUSED and wait in that phase of that cycle.
SCRIPT = """
import os, sys, time
from pathlib import Path
from transformers import TrainerCallback
from trl_ext import RAFTConfig, RAFTTrainer
from trl_ext.data.loading import add_prompts, generate_gsm8k_like
from trl_ext.data.embedded import embedded_model_path

output_dir = Path(sys.argv[1])
phase, _, cycle = os.environ.get("PAUSE", "").partition(":")
trainer = None

def pause_in(name):
    if name == phase and trainer.cycle + 1 == int(cycle):
        (output_dir / "PAUSED").write_text(name)
        time.sleep(600)

def length_reward(completions, **kwargs):
    pause_in("score")
    return [float(len(c[0]["content"]) % 7) for c in completions]

class PauseInSFT(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        pause_in("sft")

args = RAFTConfig(
    output_dir=str(output_dir), num_cycles=3, prompts_per_cycle=4, num_generations=4, max_completion_length=48,
    generation_batch_size=16, per_device_train_batch_size=4, learning_rate=1e-3, report_to="none", bf16=False,
    use_cpu=True, gradient_checkpointing=False, disable_tqdm=True, seed=0,
)
prompts = add_prompts(generate_gsm8k_like(16, seed=3), system_prompt="Solve.")
trainer = RAFTTrainer(str(embedded_model_path()), length_reward, args, train_dataset=prompts, callbacks=[PauseInSFT()])
trainer.train(resume_from_checkpoint=(output_dir / "raft_state.json").exists() or None)
print("DONE", trainer.cycle)
"""


def start(script: Path, output_dir: Path, pause: str = "") -> subprocess.Popen:
    env = os.environ | {"PAUSE": pause}
    return subprocess.Popen(
        [sys.executable, str(script), str(output_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def kill_when_paused(process: subprocess.Popen, output_dir: Path, timeout: float = 240) -> str:
    """SIGKILL the run once it waits at its pause point; returns what it printed."""
    marker = output_dir / "PAUSED"
    deadline = time.time() + timeout
    while not marker.exists():
        if process.poll() is not None:
            pytest.fail(f"the run ended before pausing:\n{process.stdout.read()}")
        if time.time() > deadline:
            process.kill()
            pytest.fail("the run did not reach its pause point in time")
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGKILL)
    output, _ = process.communicate()
    marker.unlink()
    return output


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def completed(output_dir: Path) -> int:
    return json.loads((output_dir / "raft_state.json").read_text())["completed_cycles"]


@pytest.mark.slow
def test_sigkill_mid_cycle_loses_only_the_phase_in_flight(tmp_path):
    from trl_ext.data.embedded import embedded_model_path

    embedded_model_path()  # build outside the timed runs if the cache is cold
    script, run = tmp_path / "run_raft.py", tmp_path / "run"
    script.write_text(SCRIPT)

    # Killed during cycle 2's SFT: cycle 1 is complete, cycle 2's samples and selection are on disk, its model is not.
    kill_when_paused(start(script, run, pause="sft:2"), run)
    assert completed(run) == 1
    assert sorted(p.name for p in (run / "checkpoint-2").iterdir()) == ["samples.parquet", "selected.parquet"]
    samples_2 = run / "checkpoint-2/samples.parquet"
    samples_2_written, samples_2_digest = samples_2.stat().st_mtime_ns, digest(samples_2)

    # Resumed, then killed while scoring cycle 3: cycle 3's generations are on disk, its scores are not.
    output = kill_when_paused(start(script, run, pause="score:3"), run)
    assert "cycle 2/3" in output and "reused samples, selection" in output  # its SFT redone, from kept samples
    assert completed(run) == 2
    assert sorted(p.name for p in (run / "checkpoint-3").iterdir()) == ["generations.parquet"]
    generations_3 = (run / "checkpoint-3/generations.parquet").read_bytes()

    # Resumed to the end: every cycle complete, each with all its artifacts; finished phases were reused.
    final = start(script, run)
    output, _ = final.communicate(timeout=300)
    assert final.returncode == 0, output
    assert "DONE 3" in output
    assert "cycle 2/3" not in output  # cycle 2 finished in the second run, and was not redone in the third
    assert "reused generations" in output
    state = json.loads((run / "raft_state.json").read_text())
    assert state["completed_cycles"] == 3 and [c["raft/cycle"] for c in state["cycles"]] == [1, 2, 3]
    for cycle in (1, 2, 3):
        assert sorted(p.name for p in (run / f"checkpoint-{cycle}").iterdir()) == [
            "metrics.json",
            "model",
            "samples.parquet",
            "selected.parquet",
        ]
        assert (run / f"checkpoint-{cycle}/model/model.safetensors").is_file()
    assert (samples_2.stat().st_mtime_ns, digest(samples_2)) == (samples_2_written, samples_2_digest)  # not rewritten

    scored = pq.read_table(run / "checkpoint-3/samples.parquet").to_pydict()
    generated = pq.read_table(io.BytesIO(generations_3)).to_pydict()
    assert scored["completion_ids"] == generated["completion_ids"]  # cycle 3 scored the generations it had kept

"""Our reward functions work in TRL as they are: in a plain GRPOTrainer script and by name in `trl grpo`."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PLAIN_TRL_SCRIPT = textwrap.dedent(
    """
    import sys
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer
    from rewards import math_answer_reward

    model_dir, output_dir = sys.argv[1], sys.argv[2]
    rows = [{"prompt": [{"role": "user", "content": f"Tom has {n} pens. Then Tom gets 2 more. How many?"}],
             "answer": f"{n}+2={n + 2}\\n#### {n + 2}"} for n in range(16)]
    args = GRPOConfig(output_dir=output_dir, max_steps=2, per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=16, report_to="none", bf16=False, use_cpu=True, logging_steps=1)
    trainer = GRPOTrainer(model=model_dir, reward_funcs=[math_answer_reward], args=args,
                          train_dataset=Dataset.from_list(rows))
    trainer.train()
    means = [h["rewards/math_answer_reward/mean"] for h in trainer.state.log_history if "reward" in h]
    assert len(means) == 2 and all(0.0 <= m <= 1.0 for m in means), means
    assert not [name for name in sys.modules if name.startswith("trl_ext")], "the script must not need trl_ext"
    print("PLAIN TRL OK")
    """
)


@pytest.mark.slow
def test_math_reward_in_a_plain_trl_script(tiny_model_dir, tmp_path):
    script = tmp_path / "plain.py"
    script.write_text(PLAIN_TRL_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(tiny_model_dir), str(tmp_path / "out")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "PLAIN TRL OK" in result.stdout


@pytest.mark.slow
def test_math_reward_by_name_in_trl_cli(tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"prompt": [{"role": "user", "content": f"{n} plus 3?"}], "answer": f"#### {n + 3}"} for n in range(16)]
    (data / "train.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    trl = shutil.which("trl", path=str(Path(sys.executable).parent))
    result = subprocess.run(
        [
            trl,
            "grpo",
            "--model_name_or_path",
            str(tiny_model_dir),
            "--dataset_name",
            str(data),
            "--reward_funcs",
            "rewards.math_answer_reward",
            "rewards.hash_format_reward",
            "--max_steps",
            "1",
            "--per_device_train_batch_size",
            "8",
            "--num_generations",
            "4",
            "--max_completion_length",
            "16",
            "--report_to",
            "none",
            "--bf16",
            "false",
            "--use_cpu",
            "true",
            "--logging_steps",
            "1",
            "--output_dir",
            str(tmp_path / "out"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,  # the installed package, not the checkout
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "rewards/math_answer_reward/mean" in result.stdout + result.stderr

"""`trl-ext compare`: settings checked before any run, summaries and tables from run records, reuse of finished runs
without losing unfinished ones, and the whole command on the embedded default."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trl_ext.compare import (
    Comparison,
    RunRecord,
    check,
    curves,
    first_reaching,
    markdown_table,
    read_record,
    run_one,
    summarize,
)

HELD = {"policy_weights": 100, "weights": 200, "gradients": 100, "optimizer": 200, "total": 500}


def record(method, seed, accuracies, seconds_per_point=10.0, tokens_per_point=1000, before=0.3, after=None):
    points = [
        {"seconds": i * seconds_per_point, "tokens": i * tokens_per_point, "step": i, "accuracy": a}
        for i, a in enumerate(accuracies)
    ]
    return RunRecord(
        method=method,
        seed=seed,
        returncode=0,
        wall_seconds=60.0,
        before=before,
        after=accuracies[-1] if after is None else after,
        points=points,
        train_seconds=points[-1]["seconds"],
        generated_tokens=points[-1]["tokens"],
        held_bytes=HELD,
        peak_bytes=2**30,
        device="cpu",
    )


def comparison(tmp_path, **changes) -> Comparison:
    return Comparison(**({"methods": ["grpo", "raft"], "seeds": [1, 2], "output_dir": tmp_path} | changes))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"methods": ["grpo", "sft"]}, "unknown method"),
        ({"budget_seconds": None}, "give a budget"),
        ({"budget_seconds": 0}, "--budget_seconds must be positive"),
        ({"parallel": 0}, "--parallel must be positive"),
        ({"seeds": [1, 1]}, "repeats a seed"),
        ({"recipe_args": ["--seed", "3"]}, "set per run"),
    ],
)
def test_bad_settings_fail_before_any_run(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        check(comparison(tmp_path, **changes))
    assert not (tmp_path / "runs").exists()


def test_each_run_is_the_recipe_with_the_budget_and_an_open_ended_loop(tmp_path):
    spec = comparison(tmp_path, budget_tokens=5000, recipe_args=["--learning_rate", "1e-5"])
    grpo, raft = spec.recipe_command("grpo", 1), spec.recipe_command("raft", 2)
    assert "accelerate.commands.launch" in grpo and grpo[grpo.index("--seed") + 1] == "1"
    assert grpo[grpo.index("--output_dir") + 1] == str(tmp_path / "runs" / "grpo-s1")
    assert grpo[grpo.index("--budget_seconds") + 1] == "90.0" and grpo[grpo.index("--budget_tokens") + 1] == "5000"
    assert grpo[grpo.index("--max_steps") + 1] == "1000000" and raft[raft.index("--num_cycles") + 1] == "100000"
    assert grpo[-2:] == ["--learning_rate", "1e-5"]  # the user's flags come last and win
    assert str(Path("recipes") / "raft_gsm8k.py") in " ".join(raft)


def test_summary_threshold_and_time_to_reach():
    records = [
        record("grpo", 1, [0.3, 0.5, 0.6]),
        record("grpo", 2, [0.3, 0.4, 0.5]),
        record("raft", 1, [0.3, 0.35, 0.4]),
        record("raft", 2, [0.3, 0.3, 0.3]),
    ]
    rows, threshold = summarize(records)
    assert threshold == pytest.approx(0.3 + (0.55 - 0.3) / 2)  # start + half of the best method's mean gain
    grpo, raft = rows
    assert grpo["after"] == pytest.approx((0.55, np.std([0.6, 0.5], ddof=1)))
    assert grpo["gain"][0] == pytest.approx(0.25) and grpo["reached"] == 2
    assert grpo["seconds_to_threshold"] == 15.0 and grpo["tokens_to_threshold"] == 1500  # median of 10 and 20
    assert raft["reached"] == 0 and math.isnan(raft["seconds_to_threshold"])
    assert grpo["weights_multiple"] == 2.0 and grpo["held_mib"] == pytest.approx(500 / 2**20)
    assert first_reaching(records[0].points, 0.45, "tokens") == 1000


def test_table_shows_every_method_including_failed_ones():
    failed = RunRecord("ppo", 1, returncode=1, wall_seconds=3.0, error="exit 1")
    rows, threshold = summarize([record("grpo", 1, [0.3, 0.6]), failed])
    table = markdown_table(rows, threshold)
    lines = table.splitlines()
    assert lines[0].startswith("| method | held-out after") and "s to 45%" in lines[0] and "peak RSS MiB" in lines[0]
    assert "| grpo | 60.0% ± 0.0 | +30.0 ± 0.0 | 10 | 1,000 |" in table
    assert lines[-1].startswith("| ppo | failed (1 runs) |")
    assert len({line.count("|") for line in lines}) == 1  # every row has every column


def test_curves_average_seeds_on_a_common_grid():
    records = [record("grpo", 1, [0.2, 0.4, 0.6]), record("grpo", 2, [0.2, 0.2, 0.2], seconds_per_point=5.0)]
    grid, mean, low, high = curves(records, "seconds", grid_size=3)["grpo"]
    assert grid.tolist() == [0.0, 5.0, 10.0]  # up to the shorter run's end
    assert mean.tolist() == pytest.approx([0.2, 0.25, 0.3]) and low.tolist() == pytest.approx([0.2, 0.2, 0.2])
    assert high.tolist() == pytest.approx([0.2, 0.3, 0.4])


def test_missing_files_make_an_incomplete_record(tmp_path):
    assert "no eval_results.json" in read_record(tmp_path, "grpo", 1).error
    assert not read_record(tmp_path, "grpo", 1).ok


def _fake_recipe(tmp_path: Path, fail: bool = False) -> list[str]:
    """A stand-in for a recipe run: writes what a finished run leaves (or fails), in a second."""
    script = tmp_path / "fake_recipe.py"
    script.write_text(
        "import json, sys, pathlib\n"
        "out = pathlib.Path(sys.argv[1]); out.mkdir(parents=True)\n"
        f"if {fail}: sys.exit('boom')\n"
        "(out / 'eval_results.json').write_text(json.dumps({'eval/before/accuracy': 0.3, "
        "'eval/after/accuracy': 0.5}))\n"
        "points = [{'seconds': 0, 'tokens': 0, 'step': 0, 'accuracy': 0.3}, "
        "{'seconds': 5, 'tokens': 100, 'step': 3, 'accuracy': 0.5}]\n"
        "(out / 'progress.json').write_text(json.dumps({'points': points, 'train_seconds': 5, "
        "'generated_tokens': 100, 'held_bytes': {}, 'peak_bytes': 1, 'device': 'cpu'}))\n"
    )
    return [sys.executable, str(script)]


def test_finished_runs_are_reused_and_unfinished_ones_kept_aside(tmp_path, monkeypatch):
    spec = comparison(tmp_path)
    monkeypatch.setattr(
        Comparison, "recipe_command", lambda self, m, s: [*_fake_recipe(tmp_path), str(self.run_dir(m, s))]
    )
    first = run_one(spec, "grpo", 1, log=lambda message: None)
    assert first.ok and first.after == 0.5 and first.steps == 3
    stamp = (spec.run_dir("grpo", 1) / "progress.json").stat().st_mtime_ns
    messages = []
    assert run_one(spec, "grpo", 1, log=messages.append).ok
    assert "reusing" in messages[0] and (spec.run_dir("grpo", 1) / "progress.json").stat().st_mtime_ns == stamp

    changed = comparison(tmp_path, budget_seconds=30.0)
    with pytest.raises(ValueError, match="grpo seed 1 run made with other settings"):
        check(changed)  # a finished run is reused only under the settings it was made with

    partial = spec.run_dir("raft", 1)
    partial.mkdir(parents=True)
    (partial / "checkpoint-1").mkdir()
    assert run_one(spec, "raft", 1, log=messages.append).ok
    kept = list(partial.parent.glob("raft-s1.incomplete-*"))
    assert len(kept) == 1 and (kept[0] / "checkpoint-1").is_dir()  # nothing the stopped run left is lost


def test_a_failed_run_reports_its_log(tmp_path, monkeypatch):
    spec = comparison(tmp_path)
    command = _fake_recipe(tmp_path, fail=True)
    monkeypatch.setattr(Comparison, "recipe_command", lambda self, m, s: [*command, str(self.run_dir(m, s))])
    failed = run_one(spec, "grpo", 1, log=lambda message: None)
    assert not failed.ok and failed.returncode == 1 and "boom" in failed.error and "grpo-s1.log" in failed.error


@pytest.mark.slow
def test_compare_runs_two_methods_and_writes_table_plots_and_wandb(embedded_model_dir, tmp_path):
    from trl_ext.run.wandb_offline import latest_offline_run, read_offline_run

    out = tmp_path / "compare"
    command = [sys.executable, "-m", "trl_ext.cli", "compare", "--methods", "grpo", "dpo", "--seeds", "3"]
    command += ["--budget_seconds", "6", "--eval_every", "3", "--eval_problems", "20", "--output_dir", str(out)]
    command += ["--", "--eval_num_problems", "40"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)}
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for name in ("results.md", "results.json", "accuracy_vs_time.png", "accuracy_vs_tokens.png", "memory.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "accuracy_vs_time.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "results.md").read_text()
    assert "| grpo |" in table and "| dpo |" in table and "Regenerate: `trl-ext compare" in table
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [(r["method"], r["seed"]) for r in runs] == [("grpo", 3), ("dpo", 3)]
    assert all(r["train_seconds"] >= 6 and r["generated_tokens"] > 0 and len(r["points"]) >= 2 for r in runs)

    logged = read_offline_run(latest_offline_run(tmp_path))  # the comparison's own run, made after the two runs'
    assert logged.name == "compare-grpo-dpo-1seeds" and {"grpo", "dpo"} <= set(logged.tags)
    logged_media = {key.split("/")[0] for row in logged.history for key in row}  # tables and images nest their keys
    assert {"comparison", "accuracy_vs_time", "accuracy_vs_tokens", "memory"} <= logged_media

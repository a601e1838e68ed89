import wandb

from trl_ext.run.tracking import package_versions, run_name, wandb_credentials_available
from trl_ext.run.wandb_offline import latest_offline_run, read_offline_run


def test_run_names_follow_the_convention():
    assert run_name("grpo", "Qwen/Qwen2.5-0.5B-Instruct", "openai/gsm8k", 7) == "grpo-Qwen2.5-0.5B-Instruct-gsm8k-s7"
    assert run_name("raft", "/models/tiny/", "../data/test.jsonl", 1) == "raft-tiny-test-s1"


def test_credentials_come_from_env_or_netrc(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert not wandb_credentials_available()
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert wandb_credentials_available()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_credentials_available()
    assert {"trl", "transformers", "torch", "python"} <= set(package_versions())


def test_offline_reader_recovers_history_summary_config(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    run = wandb.init(  # dir and mode explicit: an earlier run in this process may have set others
        project="p",
        name="grpo-x-y-s1",
        group="grpo-x",
        tags=["grpo", "x"],
        config={"lr": 0.1},
        dir=str(tmp_path),
        mode="offline",
    )
    for step in range(300):  # enough records to span several 32 KiB blocks
        run.log({"train/reward": step / 300, "train/text": "x" * 200})
    run.summary["eval/after/accuracy"] = 0.75
    run.finish()
    offline = read_offline_run(latest_offline_run(tmp_path))
    assert offline.name == "grpo-x-y-s1" and offline.group == "grpo-x" and offline.tags == ["grpo", "x"]
    assert offline.config["lr"] == 0.1
    assert offline.series("train/reward") == [step / 300 for step in range(300)]
    assert offline.summary["eval/after/accuracy"] == 0.75

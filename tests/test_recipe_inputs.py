"""Bad input fails with a one-line message that says what to fix, before any model is built or loaded."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from trl import GRPOConfig

from trl_ext.run import RecipeError, Run, resolve_settings
from trl_ext.run.settings import resolve_resume

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """An empty model cache: if it stays empty, no embedded model was built."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TRL_EXT_CACHE", str(cache))
    yield cache
    assert not cache.exists() or not any(cache.iterdir()), "a model was built before the error"


def settings_for(argv, tmp_path):
    argv = argv + ["--output_dir", str(tmp_path / "out"), "--report_to", "none"]
    return resolve_settings("grpo", GRPOConfig, argv=argv)


def prepare(argv, tmp_path):
    return Run.start(settings_for(argv, tmp_path))


def test_missing_dataset_file(tmp_path, empty_cache):
    with pytest.raises(RecipeError, match=r"missing\.jsonl does not exist; check --dataset_name"):
        prepare(["--dataset_name", str(tmp_path / "missing.jsonl")], tmp_path)


def test_wrong_columns_name_the_columns_found(tmp_path, empty_cache):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"problem": "1+1?", "final": "2"}) + "\n")
    with pytest.raises(RecipeError, match=r"has columns \['problem', 'final'\].*--question_column"):
        prepare(["--dataset_name", str(path)], tmp_path)


def test_unknown_model_path(tmp_path, empty_cache):
    with pytest.raises(RecipeError, match="no config.json"):
        prepare(["--model_name_or_path", str(tmp_path / "no-such-model")], tmp_path)


def test_unknown_yaml_key_suggests_the_right_one(tmp_path, empty_cache):
    config = tmp_path / "run.yaml"
    config.write_text("lerning_rate: 1.0e-5\nmax_steps: 3\n")
    with pytest.raises(RecipeError, match="unknown key 'lerning_rate' in .*did you mean 'learning_rate'"):
        settings_for(["--config", str(config)], tmp_path)
    with pytest.raises(RecipeError, match="does not exist"):
        settings_for(["--config", str(tmp_path / "none.yaml")], tmp_path)


def test_unknown_flag_and_reward_function(tmp_path, empty_cache):
    with pytest.raises(RecipeError, match="unknown argument '--num_generation'; did you mean 'num_generations'"):
        settings_for(["--num_generation", "4"], tmp_path)
    with pytest.raises(RecipeError, match="unknown reward function 'math_reward'"):
        prepare(["--reward_funcs", "math_reward"], tmp_path)


def test_existing_checkpoints_are_never_overwritten(tmp_path):
    (tmp_path / "checkpoint-4").mkdir()
    with pytest.raises(RecipeError, match="already holds checkpoint-4; pass --resume_from_checkpoint true"):
        resolve_resume(None, str(tmp_path))
    assert resolve_resume("true", str(tmp_path)).endswith("checkpoint-4")
    with pytest.raises(RecipeError, match="no checkpoint"):
        resolve_resume("last", str(tmp_path / "elsewhere"))


def test_yaml_and_flags_are_recorded_as_their_sources(tmp_path, monkeypatch):
    monkeypatch.delenv("FOO", raising=False)
    config = tmp_path / "run.yaml"
    config.write_text("learning_rate: 1.0e-5\nenv:\n  FOO: bar\n")
    argv = ["--config", str(config), "--max-steps=3", "--seed", "1", "--no_eval_before", "--use_peft"]
    settings = settings_for(argv, tmp_path)
    yaml_source = f"YAML {config}"
    assert settings.sources["learning_rate"] == yaml_source
    assert {settings.sources[name] for name in ("max_steps", "seed", "eval_before")} == {"command line"}
    assert settings.sources["use_peft"] == "command line"  # over the CPU preset's `use_peft: false`
    training, script, model = settings.training, settings.script, settings.model
    assert (training.learning_rate, training.max_steps, training.seed) == (1e-5, 3, 1)
    assert script.eval_before is False and model.use_peft is True
    assert os.environ["FOO"] == "bar"  # the file's env section, as TRL's scripts apply it


@pytest.mark.parametrize(
    ("flags", "expected"),
    [([], True), (["--eval_before"], True), (["--eval_before", "false"], False), (["--eval_before=False"], False)]
    + [(["--eval_before", "true"], True), (["--no_eval_before"], False), (["--no-eval-before"], False)],
)
def test_boolean_flags_take_every_form_trl_takes(flags, expected, tmp_path):
    settings = settings_for(flags, tmp_path)
    assert settings.script.eval_before is expected
    assert settings.sources.get("eval_before", "TRL default") == ("command line" if flags else "TRL default")


def test_flags_that_are_not_arguments_are_refused(tmp_path):
    with pytest.raises(RecipeError, match="unknown argument '--no_such_flag'"):
        settings_for(["--no_such_flag"], tmp_path)
    with pytest.raises(RecipeError, match="unexpected value 'stray'"):
        settings_for(["stray"], tmp_path)


def test_the_script_prints_one_line_and_exits_nonzero(tmp_path):
    env = {**os.environ, "TRL_EXT_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(
        [
            sys.executable,
            "recipes/grpo_gsm8k.py",
            "--model_name_or_path",
            "nobody/no-such-model",
            "--report_to",
            "none",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: model 'nobody/no-such-model' is neither")
    assert "Traceback" not in result.stderr


def test_hub_kernels_are_kept_only_where_they_can_be_fetched(monkeypatch):
    import trl_ext.platform.detect as platform

    assert platform.hub_kernel_kwargs(unavailable=True) == {"use_kernels": False}
    assert platform.hub_kernel_kwargs(unavailable=False) == {}
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets
    monkeypatch.setattr("huggingface_hub.get_session", lambda: pytest.fail("offline: no network call"))
    assert platform.hub_kernels_unavailable()
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr(platform, "package_available", lambda name: False)
    assert not platform.hub_kernels_unavailable()  # without the kernels package nothing would be fetched
    monkeypatch.setattr(platform, "package_available", lambda name: name == "kernels")

    class Session:
        def __init__(self, reachable: bool):
            self.reachable = reachable

        def head(self, url, timeout):
            if not self.reachable:
                raise ConnectionError(f"{url} unreachable")

    monkeypatch.setattr("huggingface_hub.get_session", lambda: Session(reachable=False))
    assert platform.hub_kernels_unavailable()  # online in name, but the hub does not answer
    monkeypatch.setattr("huggingface_hub.get_session", lambda: Session(reachable=True))
    assert not platform.hub_kernels_unavailable()  # reachable: transformers keeps its kernels


def test_offline_runs_load_models_without_hub_kernels(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    run = prepare(["--model_name_or_path", str(tiny_model_dir), "--eval_num_problems", "8"], tmp_path)
    assert run.settings.training.model_init_kwargs["use_kernels"] is False  # the model's own init kwargs
    assert "USE_HUB_KERNELS" not in os.environ
    assert "offline or unreachable: models load without hub kernels" in capsys.readouterr().out
    insisted = ["--model_init_kwargs", '{"use_kernels": true}']
    run = prepare(["--model_name_or_path", str(tiny_model_dir), "--eval_num_problems", "8", *insisted], tmp_path / "b")
    assert run.settings.training.model_init_kwargs["use_kernels"] is True  # the user's word wins

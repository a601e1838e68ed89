"""Every setting of a run, resolved once: TRL's defaults, trl-ext's, the preset, the embedded default, YAML, flags.

`resolve_settings` reads the command line and `--config file.yaml` with TRL's own parser, then merges six layers,
the later winning:

1. TRL's defaults (the config dataclasses' own);
2. trl-ext's defaults (W&B reporting, bf16 only where the device has it, a 10-minute collective timeout, ...);
3. the memory preset (`--preset`, `auto` by default: see `trl_ext.platform.presets`);
4. the embedded default's tuned values, when no model is given (they win over the preset: a tiny model on a big
   GPU still wants its own batch and lengths);
5. the YAML file;
6. the flags.

Then it builds the configs once (each dataclass's `__post_init__` runs once) and keeps where every value came from:
`--print_config` prints that record, W&B gets it as the run's config. Which values were set by the user comes from
the parser's results, never from sniffing argv. Nothing here loads a model: a bad flag, key, path or combination
fails in seconds, with one line naming what to fix.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from trl import ModelConfig, TrlParser

from trl_ext.platform.detect import Platform, detect_platform, hub_kernel_kwargs
from trl_ext.platform.presets import Preset, resolve_preset
from trl_ext.run.arguments import RecipeArguments, RecipeError
from trl_ext.run.tasks import EMBEDDED_MODEL_NAME, EMBEDDED_TRAINING_DEFAULTS, GSM8K_TASK, Task
from trl_ext.run.tracking import run_name

# Recipes' default for `--ddp_timeout` (TRL's is 30 minutes): how long a process waits in a collective operation
# before the run fails. Long enough for one process to save a large checkpoint while the others wait.
COLLECTIVE_TIMEOUT_SECONDS = 600
TRL_DEFAULT = "TRL default"
TRL_EXT_DEFAULT = "trl-ext default"
EMBEDDED_DEFAULT = "embedded default"
COMMAND_LINE = "command line"
DERIVED = "derived"


class ConfigShown(Exception):
    """`--print_config` printed the settings; the entry point ends the run there, successfully."""


@dataclass(frozen=True)
class Settings:
    """A run's resolved settings: the three configs TRL's scripts take, and where each value came from.

    Built by `resolve_settings`; nothing changes them afterwards. `model_name_or_path` is None for the embedded
    default (the model step builds it).
    """

    method: str
    task: Task
    script: Any  # RecipeArguments (or a subclass)
    training: Any  # the trainer's config: GRPOConfig, RAFTConfig, ...
    model: ModelConfig
    platform: Platform
    preset: Preset
    resume_from_checkpoint: str | None
    sources: Mapping[str, str] = field(default_factory=dict)  # field -> where its value came from
    notes: tuple[str, ...] = ()  # what the run should say about how its settings were chosen

    @property
    def is_embedded(self) -> bool:
        return self.model.model_name_or_path is None

    @property
    def model_label(self) -> str:
        return EMBEDDED_MODEL_NAME if self.is_embedded else self.model.model_name_or_path

    @property
    def dataset_label(self) -> str:
        return self.script.dataset_name or self.task.embedded_dataset

    def changed(self) -> list[tuple[str, Any, str]]:
        """(field, value, source) for every value that differs from TRL's default, in field order."""
        rows = []
        for config in (self.script, self.training, self.model):
            for f in dataclasses.fields(config):
                source, value = self.sources.get(f.name, TRL_DEFAULT), getattr(config, f.name)
                if source != TRL_DEFAULT and value != _default(f):
                    rows.append((f.name, value, source))
        return rows

    def record(self) -> dict[str, dict]:
        """The changed values and their sources, JSON-ready (W&B's config, the printed table)."""
        return {name: {"value": _json_ready(value), "source": source} for name, value, source in self.changed()}

    def describe(self) -> str:
        rows = [(name, json.dumps(entry["value"]), entry["source"]) for name, entry in self.record().items()]
        width = max((len(name) for name, _, _ in rows), default=0)
        lines = [f"{self.method} settings that differ from TRL's defaults (value, then where it came from):"]
        lines += [f"  {name:<{width}}  {value}  [{source}]" for name, value, source in rows]
        return "\n".join(lines)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING


def _json_ready(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    return str(value.value if hasattr(value, "value") else value)  # enums (save_strategy, ...) and the rest


def resolve_settings(
    method: str,
    config_class: type,
    script_class: type = RecipeArguments,
    task: Task = GSM8K_TASK,
    argv: list[str] | None = None,
    platform: Platform | None = None,
) -> Settings:
    """Parse the command line (`argv`, default `sys.argv[1:]`) and resolve every setting of a `method` run, once,
    for `platform` (detected when None).

    Raises `RecipeError` for bad input, before any model loads; `ConfigShown` after printing them for
    `--print_config`.
    """
    parser = recipe_parser(script_class, config_class)
    defaults = vars(parser.parse_known_args([])[0])
    fields = set(defaults)
    flags, config_path = _split_config(list(sys.argv[1:] if argv is None else argv))
    yaml_values = _yaml_values(config_path, fields) if config_path else {}
    flag_values = _flags_given(parser, flags, fields)
    given = yaml_values | flag_values
    join_processes(given)  # before any TRL config exists: whoever joins first sets the collective timeout

    platform = platform or detect_platform()
    model_path = given.get("model_name_or_path")
    if model_path is not None:
        check_model_source(model_path)
    try:
        preset = resolve_preset(given.get("preset", "auto"), model_path, method, platform)
    except ValueError as error:
        raise RecipeError(str(error)) from error
    layers = [
        (TRL_EXT_DEFAULT, project_defaults(platform)),
        (f"preset {preset.name}", preset.values(method, batch=model_path is not None)),
    ]
    if model_path is None:
        layers.append((EMBEDDED_DEFAULT, EMBEDDED_TRAINING_DEFAULTS.get(method, {}) | task.embedded_overrides))
    layers = [(name, without_aliases_of(layer, set(given))) for name, layer in layers]
    layers += [(f"YAML {config_path}", yaml_values), (COMMAND_LINE, flag_values)]
    values, sources = merge_layers([(name, current_names(layer)) for name, layer in layers], fields)
    derived = _derived_values(method, task, defaults | values, given, fields)
    values |= derived
    sources |= {name: f"{sources[name]}, completed" if name in given else DERIVED for name in derived}
    notes = ()
    if values.get("model_init_kwargs", {}).get("use_kernels") is False and "use_kernels" not in _as_dict(
        given.get("model_init_kwargs")
    ):
        notes = (
            "The Hugging Face Hub is offline or unreachable: models load without hub kernels (use_kernels=False; "
            "--model_init_kwargs '{\"use_kernels\": true}' to insist).",
        )

    parser.set_defaults(**values)
    try:
        script, training, model = parser.parse_args_into_dataclasses(args=[])
    except ValueError as error:
        raise RecipeError(_conflict_message(str(error), sources)) from error
    settings = Settings(
        method=method,
        task=task,
        script=script,
        training=training,
        model=model,
        platform=platform,
        preset=preset,
        resume_from_checkpoint=resolve_resume(training.resume_from_checkpoint, training.output_dir),
        sources=sources,
        notes=notes,
    )
    if script.print_config:
        from accelerate import PartialState

        if PartialState().is_main_process:
            print(settings.describe(), flush=True)
        raise ConfigShown()
    return settings


def recipe_parser(script_class: type, config_class: type) -> TrlParser:
    """TRL's parser for `(script arguments, trainer config, ModelConfig)`, exact flag names only."""
    parser = TrlParser((script_class, config_class, ModelConfig))
    parser.allow_abbrev = False  # a misspelt flag must fail, not silently match a longer one
    return parser


def merge_layers(layers: list[tuple[str, Mapping[str, Any]]], fields: set[str]) -> tuple[dict, dict]:
    """Values and their sources from `layers` (name, values), later layers winning; keys that name no field are
    left out (a preset names fields of every method's config)."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, layer in layers:
        for key, value in layer.items():
            if key in fields:
                values[key], sources[key] = value, name
    return values, sources


def project_defaults(platform: Platform) -> dict[str, Any]:
    """Where trl-ext's recipes differ from TRL's defaults, and why."""
    return {
        "report_to": [
            "wandb"
        ],  # transformers 5 reports nowhere by default; recipes log to W&B (offline without a key)
        "bf16": platform.is_gpu and platform.bf16,  # TRL's default bf16 fails outright on a CPU, or a GPU without it
        "ddp_timeout": COLLECTIVE_TIMEOUT_SECONDS,
        "dataloader_pin_memory": platform.is_gpu,  # pinning memory means nothing without an accelerator
    }


# Names that mean the same field in TRL configs (transformers 5 renamed gradient_checkpointing).
FIELD_ALIASES = [{"gradient_checkpointing", "activation_checkpointing"}, {"bf16", "fp16"}]


# transformers 5's names for fields TRL's configs still set under the deprecated ones (which warn when used).
RENAMED = {
    "gradient_checkpointing": "activation_checkpointing",
    "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs",
}


def current_names(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` with deprecated field names replaced by the current ones (a value under the current name wins)."""
    renamed = {RENAMED.get(k, k): v for k, v in values.items() if k in RENAMED}
    return renamed | {k: v for k, v in values.items() if k not in RENAMED}


def without_aliases_of(values: Mapping[str, Any], given: set[str]) -> dict[str, Any]:
    """`values` without the fields the user set and their aliases: setting `fp16` leaves `bf16` to the user too."""
    taken = set(given)
    for group in FIELD_ALIASES:
        if taken & group:
            taken |= group
    return {k: v for k, v in values.items() if k not in taken}


def _derived_values(method: str, task: Task, resolved: dict, given: Mapping[str, Any], fields: set[str]) -> dict:
    """Values computed from the other settings (`resolved`, TRL's defaults included): the models' init kwargs, the
    run's name and output directory, and TRL's defaults for renamed fields under their current names."""
    derived: dict[str, Any] = {}
    for old, new in RENAMED.items():  # TRL's own default under the deprecated name, set under the current one
        if resolved.get(new) is None and resolved.get(old) is not None:
            derived[new] = resolved[old]
    without_kernels = hub_kernel_kwargs()
    derived["model_init_kwargs"] = {
        "revision": resolved["model_revision"],
        "attn_implementation": resolved["attn_implementation"],
        "dtype": resolved["dtype"],
        **without_kernels,
        **_as_dict(resolved.get("model_init_kwargs")),
    }
    if "teacher_model_init_kwargs" in fields:  # distillation loads a teacher too
        derived["teacher_model_init_kwargs"] = without_kernels | _as_dict(resolved.get("teacher_model_init_kwargs"))
    if resolved.get("run_name") is None:
        model_label = given.get("model_name_or_path") or EMBEDDED_MODEL_NAME
        dataset_label = given.get("dataset_name") or task.embedded_dataset
        derived["run_name"] = run_name(method, model_label, dataset_label, resolved["seed"])
    if resolved.get("output_dir") is None:
        derived["output_dir"] = str(Path("outputs") / (resolved.get("run_name") or derived["run_name"]))
    return {k: v for k, v in derived.items() if k in fields}


def _as_dict(value: Any) -> dict:
    """A dict-valued setting as given: a dict, a JSON string from the command line, or None."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise RecipeError(f"expected a JSON object, got {value!r} ({error})") from error
    return dict(value or {})


# Values TRL's configs derive from others when unset: a complaint about one is about those.
DERIVED_FROM = {
    "generation_batch_size": ("per_device_train_batch_size", "gradient_accumulation_steps", "steps_per_generation")
}


def _conflict_message(error: str, sources: Mapping[str, str]) -> str:
    """A config's own complaint, with where the values it names (or derives them from) came from."""
    mentioned = {name for name in sources if name in error}
    mentioned |= {base for name, bases in DERIVED_FROM.items() if name in error for base in bases}
    named = sorted(name for name in mentioned if name in sources)
    where = "; ".join(f"{name} from {sources[name]}" for name in named)
    return f"{error.splitlines()[0]}" + (f" (settings: {where})" if where else "")


def _split_config(argv: list[str]) -> tuple[list[str], str | None]:
    if "--config" not in argv:
        return argv, None
    position = argv.index("--config")
    if position + 1 >= len(argv):
        raise RecipeError("--config needs a YAML file's path")
    return argv[:position] + argv[position + 2 :], argv[position + 1]


def _yaml_values(path: str, fields: set[str]) -> dict[str, Any]:
    """The values a `--config` file sets; its `env` section goes to the environment, as in TRL's scripts."""
    if not Path(path).is_file():
        raise RecipeError(f"config file {path} does not exist (check --config)")
    with open(path) as handle:
        config = yaml.safe_load(handle) or {}
    if not isinstance(config, dict):
        raise RecipeError(f"config file {path} must hold a YAML mapping of argument names to values")
    for key in config:
        if key != "env" and key not in fields:
            raise RecipeError(f"unknown key '{key}' in {path}{_suggest(key, fields)}")
    env = config.pop("env", {}) or {}
    if not isinstance(env, dict):
        raise RecipeError(f"the env section of {path} must map variable names to values")
    os.environ.update({str(k): str(v) for k, v in env.items()})  # the user's own request, as `trl` does
    return config


def _flags_given(parser: TrlParser, flags: list[str], fields: set[str]) -> dict[str, Any]:
    """The fields the command line sets, with their values, as the parser reads them: `--flag`, `--flag value`,
    `--flag=value`, `--no_flag`.

    Every field starts out holding a marker; argparse fills in defaults only for fields it finds unset, so the fields
    that no longer hold the marker are exactly those the flags set. Unknown flags fail with a suggestion.
    """
    unset = object()
    namespace, unknown = parser.parse_known_args(flags, namespace=argparse.Namespace(**dict.fromkeys(fields, unset)))
    for token in unknown:
        name = token.split("=", 1)[0]
        if name.startswith("-"):
            raise RecipeError(f"unknown argument '{name}'{_suggest(name.lstrip('-'), fields)}")
        raise RecipeError(f"unexpected value '{token}' (every argument is a --flag; a value follows its flag)")
    return {name: value for name, value in vars(namespace).items() if value is not unset}


def _suggest(name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def join_processes(given: Mapping[str, Any]) -> None:
    """Join the run's process group now, with `--ddp_timeout` for every collective operation.

    Whoever first joins sets the timeout for the whole run; transformers passes `--ddp_timeout` only on GPUs (not with
    `use_cpu`), so a recipe joins itself, before any config or trainer does. A single process has nothing to join.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    from accelerate import PartialState

    cpu = bool(given.get("use_cpu")) or os.environ.get("ACCELERATE_USE_CPU", "").lower() in {"1", "true", "yes"}
    backend = {"backend": given["ddp_backend"]} if given.get("ddp_backend") else {}
    timeout = timedelta(seconds=float(given.get("ddp_timeout", COLLECTIVE_TIMEOUT_SECONDS)))
    PartialState(cpu=cpu, timeout=timeout, **backend)


def check_model_source(name_or_path: str) -> None:
    """Fail fast, before any weights load, when the model is neither a local model directory nor on the hub."""
    path = Path(name_or_path).expanduser()
    if path.exists() or name_or_path.startswith((".", "/", "~")):
        if not (path / "config.json").is_file():
            raise RecipeError(
                f"model path {path} is not a model directory (no config.json); pass a directory written by "
                "save_pretrained, or a hub id such as Qwen/Qwen2.5-0.5B-Instruct"
            )
        return
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise RecipeError(
            f"model '{name_or_path}' is neither a local directory nor reachable on the Hugging Face Hub "
            f"({type(error).__name__}); check --model_name_or_path"
        ) from error


def resolve_resume(resume: str | None, output_dir: str) -> str | None:
    """`--resume_from_checkpoint` as a path: `true`/`last` mean the newest checkpoint in `output_dir`."""
    from transformers.trainer_utils import get_last_checkpoint

    if resume is None or str(resume).lower() in {"false", "no", ""}:
        checkpoints = sorted(Path(output_dir).glob("checkpoint-*")) if Path(output_dir).is_dir() else []
        if checkpoints:
            raise RecipeError(
                f"{output_dir} already holds {checkpoints[-1].name}; pass --resume_from_checkpoint true to continue "
                "that run, or choose another --output_dir (nothing was overwritten)"
            )
        return None
    if str(resume).lower() in {"true", "last", "yes"}:
        last = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
        if last is None:
            raise RecipeError(f"--resume_from_checkpoint {resume}: no checkpoint-* directory in {output_dir}")
        return last
    if not Path(resume).is_dir():
        raise RecipeError(f"--resume_from_checkpoint {resume} is not a checkpoint directory")
    return resume

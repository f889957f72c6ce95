"""The arguments of `training/train.py`: three dataclasses (model, data, training) filled from the YAML recipe, then
from `--key value` overrides (later wins). Names follow `transformers.TrainingArguments` where it has one.

Every field of `S2CAConfig` is also a recipe key and a flag; those are not re-declared here but validated by the
config itself (`split_config_flags` reads them by the config's own annotations), so a new config field needs no
edit in this file. Errors name the field, and the recipe or the command line it came from.
"""

import argparse
import math
import os
import sys
import typing
from dataclasses import dataclass, field, fields
from typing import Literal

import yaml
from transformers import HfArgumentParser

from s2ca_hf import S2CAConfig


CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
DEFAULT_RECIPE = os.path.join(CONFIG_DIR, "synthetic.yaml")
OWN_DATA_RECIPE = os.path.join(CONFIG_DIR, "own_data.yaml")  # the default with --train_file or --dataset_name
# The HF example scripts' names for our flags: `--model_name_or_path` names the CLIP to start from.
ALIASES = {"--model_name_or_path": "--clip", "--model-name-or-path": "--clip"}


@dataclass
class ModelArguments:
    """Training-only model settings. Every field of `S2CAConfig` (num_concepts, allocation, temporal_module, ...) is
    also a recipe key and a `--key value` flag: those are validated by the config itself (`model_config` holds them),
    so that a new config field needs no edit here."""

    clip: str | None = field(default=None, metadata={"help": "CLIP checkpoint (Hub id or folder); synthetic: auto"})
    pretrained_clip_dir: str = field(default="runs/clip-synthetic", metadata={"help": "where the small CLIP lives"})
    teacher: str | None = field(default=None, metadata={"help": "ATR teacher CLIP (default: --clip)"})
    align: bool = True
    transform: bool = True
    reconstruct: bool = True
    align_weight: float = 1.0
    transform_weight: float = 1.0
    reconstruct_weight: float = 1.0
    reconstruct_mask_ratio: float = 0.5
    cache_teacher_outputs: bool = True
    gradient_checkpointing: bool = False
    model_config: dict = field(default_factory=dict, init=False)  # S2CAConfig fields from the recipe and flags

    def __post_init__(self):
        check(0 < self.reconstruct_mask_ratio <= 1, "reconstruct_mask_ratio", self.reconstruct_mask_ratio, "in (0, 1]")
        for name in ("align_weight", "transform_weight", "reconstruct_weight"):
            check(getattr(self, name) >= 0, name, getattr(self, name), ">= 0")


@dataclass
class DataArguments:
    corpus: Literal["synthetic", "msrvtt", "msvd", "didemo", "activitynet"] = "synthetic"
    data_dir: str = "data/synthetic"
    video_dir: str | None = None
    protocol: list[str] = field(default_factory=list, metadata={"help": "corpus options KEY=VALUE (train_csv=7k)"})
    train_file: str | None = field(default=None, metadata={"help": "your own pairs: a CSV or JSON-lines file"})
    validation_file: str | None = field(default=None, metadata={"help": "your own val pairs (selection split)"})
    test_file: str | None = field(default=None, metadata={"help": "your own test pairs"})
    dataset_name: str | None = field(
        default=None, metadata={"help": "your own pairs as a datasets dataset (Hub id or folder)"}
    )
    dataset_config_name: str | None = None
    video_column: str = field(default="video", metadata={"help": "own pairs: the column of video paths"})
    caption_column: str = field(default="caption", metadata={"help": "own pairs: the column of captions"})
    train_split: str = "train"
    eval_splits: list[str] = field(default_factory=lambda: ["test"])
    selection_split: str = "test"
    max_words: int = 32
    max_frames: int = 12
    synthetic_num_videos: int = 1000
    synthetic_val_size: int | None = field(
        default=None, metadata={"help": "synthetic val clips (default: a tenth of the clips)"}
    )
    synthetic_test_size: int | None = field(
        default=None, metadata={"help": "synthetic test clips (default: a tenth of the clips)"}
    )
    synthetic_compositional_size: int | None = field(
        default=None, metadata={"help": "(default: a tenth of the clips)"}
    )
    synthetic_open_vocab_size: int | None = field(default=None, metadata={"help": "(default: a tenth of the clips)"})
    frame_cache: bool = True
    frame_cache_dir: str | None = None
    preprocessing_num_workers: int | None = None
    on_error: Literal["raise", "skip"] = "raise"
    group_batches: bool = field(
        default=True,
        metadata={"help": "keep each minimal-pair group (the corpus's `group` column, if any) in one global batch"},
    )
    use_foils: bool = field(
        default=True,
        metadata={"help": "one false caption per row (the corpus's `foils` column, if any) as a negative text"},
    )

    def __post_init__(self):
        check(2 <= self.max_words <= 77, "max_words", self.max_words, "in [2, 77] (CLIP's context)")
        check(self.max_frames >= 1, "max_frames", self.max_frames, ">= 1")
        check(
            not self.eval_splits or self.selection_split in self.eval_splits,
            "selection_split",
            self.selection_split,
            f"one of eval_splits {self.eval_splits}",
        )
        for item in self.protocol:
            check("=" in item, "protocol", item, "KEY=VALUE")


@dataclass
class TrainingArguments:
    output_dir: str | None = field(default=None, metadata={"help": "default runs/<recipe name>"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "replace a previous run in output_dir"})
    num_train_epochs: int = 5
    max_steps: int = field(default=-1, metadata={"help": "> 0 overrides num_train_epochs"})
    per_device_train_batch_size: int = 128
    per_device_eval_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    clip_lr_scale: float = field(default=1e-3, metadata={"help": "CLIP weights train at learning_rate x this"})
    weight_decay: float = 0.2
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_epsilon: float = 1e-6
    lr_scheduler_type: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = field(
        default="auto", metadata={"help": "auto: bf16 on GPU"}
    )
    seed: int = 42
    logging_steps: int = 10
    save_steps: int = field(default=0, metadata={"help": "also save every N steps (0: each epoch end only)"})
    save_total_limit: int | None = 2
    eval_strategy: Literal["epoch", "steps", "no"] = "epoch"
    eval_steps: int | None = None
    metric_for_best_model: str = "text_to_video/R@1"
    early_stopping_patience: int = field(
        default=0,
        metadata={"help": "stop after this many evaluations without a better metric_for_best_model (0: never)"},
    )
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "'latest' or a checkpoint folder"})
    report_to: str = field(default="auto", metadata={"help": "auto (tensorboard if installed), none, or a,b"})
    dataloader_num_workers: int = 0
    disable_tqdm: bool = False
    use_cpu: bool = False

    def __post_init__(self):
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs"):
            check(getattr(self, name) >= 1, name, getattr(self, name), ">= 1")
        for name in ("learning_rate", "clip_lr_scale", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon"):
            check(math.isfinite(getattr(self, name)), name, getattr(self, name), "a finite number")
        check(math.isfinite(self.max_grad_norm), "max_grad_norm", self.max_grad_norm, "a finite number")
        check(self.learning_rate > 0, "learning_rate", self.learning_rate, "> 0")
        check(self.weight_decay >= 0, "weight_decay", self.weight_decay, ">= 0")
        check(0 <= self.warmup_ratio < 1, "warmup_ratio", self.warmup_ratio, "in [0, 1)")
        check(
            self.eval_strategy != "steps" or (self.eval_steps or 0) > 0,
            "eval_steps",
            self.eval_steps,
            "> 0 with eval_strategy=steps",
        )
        check(self.early_stopping_patience >= 0, "early_stopping_patience", self.early_stopping_patience, ">= 0")
        check(
            not self.early_stopping_patience or self.eval_strategy != "no",
            "early_stopping_patience",
            self.early_stopping_patience,
            "0 with eval_strategy=no (early stopping reads the evaluations)",
        )
        direction, _, metric = self.metric_for_best_model.partition("/")
        check(
            direction in ("text_to_video", "video_to_text") and metric,
            "metric_for_best_model",
            self.metric_for_best_model,
            "like text_to_video/R@1",
        )


def check(condition: bool, name: str, value, expected: str) -> None:
    if not condition:
        raise ValueError(f"Recipe field `{name}` must be {expected}, got {value!r}.")


# S2CAConfig fields that a recipe may not set: they come from the CLIP checkpoint, or from `max_frames`.
FROM_CLIP = ("text_config", "vision_config", "projection_dim", "logit_scale_init_value", "num_frames")


def model_config_fields() -> dict:
    """The S2CAConfig fields a recipe and the command line can set, with their type annotations."""
    return {name: kind for name, kind in S2CAConfig.__annotations__.items() if name not in FROM_CLIP}


def config_value(name: str, text: str):
    """A command-line string as the value of config field `name`, by the field's annotation."""
    annotation = model_config_fields()[name]
    kinds = set(typing.get_args(annotation)) or {annotation}
    if type(None) in kinds and text.lower() in ("none", "null"):
        return None
    if bool in kinds:
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise ValueError(f"Recipe field `{name}` must be true or false, got {text!r}.")
    for kind in (int, float):
        if kind in kinds:
            try:
                return kind(text)
            except ValueError:
                pass
    if str in kinds:
        return text
    raise ValueError(f"Recipe field `{name}` must be {annotation}, got {text!r}.")


def split_config_flags(tokens: list[str]) -> tuple[dict, list[str]]:
    """(`--key value` pairs whose key is a config field, the other tokens); `--key=value` works too."""
    config_fields, values, rest = model_config_fields(), {}, []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        name, equals, inline = token[2:].partition("=") if token.startswith("--") else ("", "", "")
        if name in config_fields:
            if equals:
                values[name] = config_value(name, inline)
                index += 1
                continue
            if index + 1 >= len(tokens):
                raise ValueError(f"--{name} needs a value.")
            values[name] = config_value(name, tokens[index + 1])
            index += 2
            continue
        rest.append(token)
        index += 1
    return values, rest


def scale_synthetic_split_sizes(data_args, recipe: dict, command_line: list[str]) -> None:
    """A recipe's evaluation split sizes suit its number of clips: when the command line asks for another number of
    clips, the sizes it does not set scale with it (`--synthetic_num_videos 200` on the default recipe: 16 val, 40
    test, 40 compositional and 24 open-vocabulary clips, 80 for training)."""
    planned = recipe.get("synthetic_num_videos")
    if not planned or data_args.synthetic_num_videos == planned:
        return
    given = {token[2:].replace("-", "_").split("=")[0] for token in command_line if token.startswith("--")}
    for split in ("val", "test", "compositional", "open_vocab"):
        name = f"synthetic_{split}_size"
        if name not in given and recipe.get(name):
            setattr(data_args, name, max(1, round(recipe[name] * data_args.synthetic_num_videos / planned)))


def parse_arguments(argv: list[str] | None) -> tuple[ModelArguments, DataArguments, TrainingArguments, str]:
    """The recipe's values first, then the command line's (`--key value`, later wins); unknown names are errors.

    S2CAConfig fields go to `model_args.model_config` and are checked by `S2CAConfig` itself."""
    tokens = list(sys.argv[1:] if argv is None else argv)
    if tokens and not tokens[0].startswith("-") and tokens[0].endswith((".yaml", ".yml")):
        tokens = ["--config", *tokens]  # `train.py recipe.yaml`, as the HF example scripts take a config file
    tokens = [ALIASES.get(token, token) for token in tokens]
    flags = {token[2:].replace("-", "_").split("=")[0] for token in tokens if token.startswith("--")}
    if flags & {"train_file", "dataset_name"} and "config" not in flags:
        tokens = ["--config", OWN_DATA_RECIPE, *tokens]  # your own pairs: the recipe for them, not the built-in one
    tokens = [t for token in tokens for t in (["--disable_tqdm", "true"] if token == "--quiet" else [token])]
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=DEFAULT_RECIPE)
    known, rest = pre.parse_known_args(tokens)
    if not os.path.isfile(known.config):
        raise FileNotFoundError(f"Recipe {known.config} does not exist (recipes are in {CONFIG_DIR}).")
    with open(known.config) as f:
        recipe = yaml.safe_load(f) or {}
    if not isinstance(recipe, dict):
        raise ValueError(f"Recipe {known.config} must be a mapping of field: value.")
    types = (ModelArguments, DataArguments, TrainingArguments)
    config_fields = model_config_fields()
    names = {f.name for cls in types for f in fields(cls) if f.init} | set(config_fields)
    unknown = sorted(set(recipe) - names)
    if unknown:
        raise ValueError(f"Unknown recipe field(s) {unknown} in {known.config}; the fields are {sorted(names)}.")
    model_config = {key: value for key, value in recipe.items() if key in config_fields}
    from_recipe = []
    for key, value in recipe.items():
        if value is None or key in config_fields:
            continue
        if isinstance(value, dict):  # protocol: {train_csv: 7k}
            value = [f"{k}={v}" for k, v in value.items()]
        values = value if isinstance(value, list) else [value]
        from_recipe += [f"--{key}", *(str(v).lower() if isinstance(v, bool) else str(v) for v in values)]
    from_flags, rest = split_config_flags(rest)
    model_config.update(from_flags)
    parser = HfArgumentParser(types, exit_on_error=False)
    if "-h" in rest or "--help" in rest:
        print(
            "train.py [RECIPE.yaml | --config RECIPE.yaml] [--field value ...]: the recipe's fields, then the command "
            f"line's (default recipe {DEFAULT_RECIPE}; --model_name_or_path means --clip, --quiet --disable_tqdm)."
        )
        parser.print_help()
        print("\nModel fields (S2CAConfig; see its docstring): " + ", ".join(f"--{n}" for n in config_fields))
        raise SystemExit(0)
    try:
        S2CAConfig(**model_config)  # the config's own checks, naming the field
        model_args, data_args, train_args = parser.parse_args_into_dataclasses(from_recipe + rest)
    except argparse.ArgumentError as error:
        raise ValueError(f"{error} (recipe {known.config} or the command line)") from error
    except (TypeError, ValueError) as error:
        raise ValueError(f"{error} (recipe {known.config} or the command line)") from error
    model_args.model_config = model_config
    scale_synthetic_split_sizes(data_args, recipe, rest)
    name = os.path.splitext(os.path.basename(known.config))[0]
    train_args.output_dir = train_args.output_dir or os.path.join("runs", name)
    return model_args, data_args, train_args, name

"""The results file: what `training/evaluate_model.py` writes, what `training/push_to_hub.py` accepts, and the Markdown
metric table that evaluation and training print.

A results file (`<corpus>-<split>.json`, with a `.md` beside it) names the model (path, revision, sha256 of its
`model.safetensors`), the corpus, split and protocol, the counts, the metrics, any post-processing (always apart from
the plain numbers), the date and the versions. The writer and the validator live here together so that the schema
one produces is the schema the other checks.
"""

import datetime
import json
import math
import os
import platform
from typing import Any

import torch
import transformers

import s2ca_hf


WEIGHTS_NAME = "model.safetensors"  # results are keyed on the sha256 of this one file
WRITER = "training/evaluate_model.py"
DIRECTIONS = {"text_to_video": "text-to-video", "video_to_text": "video-to-text"}
# A model with the late-interaction re-ranker also reports text-to-video after re-ranking the first stage's top
# candidates (`evaluate_corpus`); tables show it when it is there.
RERANKED = "text_to_video_reranked"
# The metrics every results file must hold for both directions (std_rank is written too, but not required).
METRIC_KEYS = ("R@1", "R@5", "R@10", "R@50", "MdR", "MnR")


class ResultsError(ValueError):
    """A results file is malformed, or was measured on another model."""


# ---------------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------------


def results_record(
    model: dict, corpus: str, split: str, protocol: dict, evaluation: dict, device: str, command: str
) -> dict:
    """The results file's content. `model`: name_or_path, revision, sha256; `evaluation`: what `evaluate_corpus`
    returned (its protocol, counts, metrics and post-processing); `protocol`: what the caller adds to its protocol."""
    return {
        "model": model,
        "corpus": corpus,
        "split": split,
        "protocol": {**evaluation["protocol"], **protocol},
        "counts": evaluation["counts"],
        "metrics": evaluation["metrics"],
        "post_processing": evaluation["post_processing"],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "s2ca_hf": s2ca_hf.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
        "device": device,
        "command": command,
    }


def metrics_table(blocks: dict[str, dict], label: str, keys: tuple[str, ...] = METRIC_KEYS, digits: int = 2) -> str:
    """A Markdown table with one row per block and direction: `blocks` maps a row label (an evaluation, a split) to
    its metrics, `{"text_to_video": {"R@1": ...}, "video_to_text": {...}}`."""
    lines = [f"| {label} | direction | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for name, metrics in blocks.items():
        for direction in [d for d in (*DIRECTIONS, RERANKED) if d in metrics]:
            values = " | ".join(f"{metrics[direction][key]:.{digits}f}" for key in keys)
            lines.append(f"| {name} | {direction.replace('_', ' ')} | {values} |")
    return "\n".join(lines)


def results_markdown(results: dict) -> str:
    """The `.md` beside a results file: what was measured, the plain and post-processed numbers, the command."""
    blocks = {"plain": results["metrics"]} | {
        f"{name} (post-processed)": metrics for name, metrics in (results.get("post_processing") or {}).items()
    }
    lines = [
        f"# {results['corpus']} {results['split']}: {results['model']['name_or_path']}",
        "",
        f"{results['counts']['texts']} texts, {results['counts']['videos']} videos; ties: "
        f"{results['protocol']['ties']}; video-to-text: {results['protocol']['video_to_text']}.",
        "",
        metrics_table(blocks, "evaluation"),
        "",
        f"Command: `{results['command']}`",
        "",
    ]
    return "\n".join(lines)


def write_results(results: dict, output_dir: str | os.PathLike) -> str:
    """Writes `<corpus>-<split>.json` and `.md` into `output_dir`; returns their common path without the suffix."""
    os.makedirs(output_dir, exist_ok=True)
    stem = os.path.join(output_dir, f"{results['corpus']}-{results['split']}")
    with open(stem + ".json", "w") as f:
        json.dump(results, f, indent=2)
    with open(stem + ".md", "w") as f:
        f.write(results_markdown(results))
    return stem


# ---------------------------------------------------------------------------------------------------------------------
# Reading and checking
# ---------------------------------------------------------------------------------------------------------------------


def _require(data: dict, key: str, kind: type | tuple[type, ...], path: str, where: str = "") -> Any:
    name = f"{where}.{key}" if where else key
    if not isinstance(data, dict) or key not in data:
        raise ResultsError(f"{path}: missing `{name}`; is this a results file written by {WRITER}?")
    value = data[key]
    if not isinstance(value, kind):
        raise ResultsError(f"{path}: `{name}` must be {kind}, got {type(value).__name__}: {value!r}.")
    return value


def _check_metrics(metrics: dict, path: str, where: str) -> None:
    for direction in DIRECTIONS:
        block = _require(metrics, direction, dict, path, where)
        for key in METRIC_KEYS:
            value = _require(block, key, (int, float), path, f"{where}.{direction}")
            if isinstance(value, bool) or not math.isfinite(value):
                raise ResultsError(f"{path}: `{where}.{direction}.{key}` must be a finite number, got {value!r}.")


def load_results(path: str | os.PathLike) -> dict:
    """Reads and validates one results JSON; errors name the file and the missing or malformed field."""
    path = os.fspath(path)
    try:
        with open(path) as f:
            results = json.load(f)
    except FileNotFoundError as error:
        raise ResultsError(f"Results file not found: {path}") from error
    except json.JSONDecodeError as error:
        raise ResultsError(f"{path} is not valid JSON: {error}") from error
    model = _require(results, "model", dict, path)
    sha = _require(model, "sha256", str, path, "model")
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower()):
        raise ResultsError(f"{path}: `model.sha256` must be 64 hex digits, got {sha!r}.")
    _require(results, "corpus", str, path)
    _require(results, "split", str, path)
    _require(results, "protocol", dict, path)
    counts = _require(results, "counts", dict, path)
    _require(counts, "texts", int, path, "counts")
    _require(counts, "videos", int, path, "counts")
    _check_metrics(_require(results, "metrics", dict, path), path, "metrics")
    for method, metrics in (results.get("post_processing") or {}).items():
        _check_metrics(metrics, path, f"post_processing.{method}")
    results["_path"] = path
    return results


def check_results_for_model(results: dict, weights_sha256: str) -> None:
    """Stops when a results file was measured on other weights than the ones being published."""
    measured = results["model"]["sha256"].lower()
    if measured != weights_sha256.lower():
        raise ResultsError(
            f"{results['_path']} is for another model: it was measured on weights with sha256 {measured} "
            f"({results['model'].get('name_or_path')}), but the exported {WEIGHTS_NAME} has sha256 "
            f"{weights_sha256}. Evaluate this checkpoint with {WRITER} and pass that results file."
        )

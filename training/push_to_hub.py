"""Publish a trained S2CA model to the Hugging Face Hub: export, parity check, model card, one commit.

    python training/push_to_hub.py --model runs/msrvtt/final --repo_id org/s2ca-msrvtt \
        --results results/msrvtt_test.json [--results ...] [--recipe training/configs/msrvtt.yaml] \
        [--dry_run OUT] [--create_pr] [--revision BRANCH] [--private] [--tag v0.1.0]

1. Loads the model and processor with `s2ca_hf`, registers them (and the `"video-text-retrieval"` pipeline) for
   the Auto classes, and writes the repository folder: `model.safetensors`, `config.json` (`auto_map`,
   `custom_pipelines`), the model code files, the processor and tokenizer files.
2. Checks that every results file was measured on exactly these weights (sha256 of `model.safetensors`).
3. Parity check: a fresh process that cannot import `s2ca_hf` loads the folder with `trust_remote_code=True`; its
   processed inputs, text and video features, logits and pipeline ranking on a fixed input must equal the in-memory
   model's, or the export stops and prints the difference.
4. Renders `README.md` from `hub_cards/template.md` with `huggingface_hub.ModelCard`; the numbers in it are read
   from the results files, never typed in.
5. Unless `--dry_run OUT`: creates the repository if needed, uploads the folder in one commit (a pull request with
   `--create_pr`), tags that commit (the card tells users to pin the tag) and keeps the rendered card in
   `hub_cards/`.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import RepositoryNotFoundError

import s2ca_hf
from s2ca_hf import S2CAModel, S2CAProcessor, VideoTextRetrievalPipeline, register_for_auto_class
from s2ca_hf.utils import file_sha256


REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_PATH = REPO_ROOT / "hub_cards" / "template.md"
CARD_DIR = REPO_ROOT / "hub_cards"

CODE_FILES = (
    "configuration_s2ca.py",
    "modeling_s2ca.py",
    "video_processing_s2ca.py",
    "video_io.py",
    "processing_s2ca.py",
    "pipeline_s2ca.py",
)
WEIGHTS_NAME = "model.safetensors"
# The lowest transformers the package is tested with; the card's install line asks for it.
MIN_TRANSFORMERS = "5.17"

CORPUS_NAMES = {
    "msrvtt": "MSR-VTT",
    "msvd": "MSVD",
    "didemo": "DiDeMo",
    "activitynet": "ActivityNet Captions",
    "synthetic": "the s2ca-hf built-in synthetic corpus",
}
DIRECTIONS = {"text_to_video": "text-to-video", "video_to_text": "video-to-text"}
# Metric key in a results file -> (model-index metric type, printed name). std_rank is kept out of the table.
METRICS = {
    "R@1": "recall_at_1",
    "R@5": "recall_at_5",
    "R@10": "recall_at_10",
    "R@50": "recall_at_50",
    "MdR": "median_rank",
    "MnR": "mean_rank",
}
# No pipeline tag: the Hub's "use this model" snippet for a tag is `pipeline("<tag>", model=...)`, and the built-in
# pipeline of every existing tag (video-classification included, which X-CLIP's cards use) fails on this model.
# Without one, the snippet is the Auto class with trust_remote_code, which works; the card's own snippet shows the
# "video-text-retrieval" pipeline (tested against a local Hub server in tests/test_hub_server.py).
PIPELINE_TAG = None
TAGS = ["s2ca", "text-video-retrieval", "video-text-retrieval", "zero-shot-video-classification", "clip", "video"]


class ResultsError(ValueError):
    """A results file is malformed, or was measured on another model."""


class ParityError(RuntimeError):
    """The exported folder, loaded as remote code, does not reproduce the in-memory model."""


# ---------------------------------------------------------------------------------------------------------------------
# Results files (written by training/evaluate_model.py)
# ---------------------------------------------------------------------------------------------------------------------


def _require(data: dict, key: str, kind: type | tuple[type, ...], path: str, where: str = "") -> Any:
    name = f"{where}.{key}" if where else key
    if not isinstance(data, dict) or key not in data:
        raise ResultsError(f"{path}: missing `{name}`; is this a results file written by training/evaluate_model.py?")
    value = data[key]
    if not isinstance(value, kind):
        raise ResultsError(f"{path}: `{name}` must be {kind}, got {type(value).__name__}: {value!r}.")
    return value


def _check_metrics(metrics: dict, path: str, where: str) -> None:
    for direction in DIRECTIONS:
        block = _require(metrics, direction, dict, path, where)
        for key in METRICS:
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
            f"{weights_sha256}. Evaluate this checkpoint with training/evaluate_model.py and pass that results file."
        )


# ---------------------------------------------------------------------------------------------------------------------
# The model card
# ---------------------------------------------------------------------------------------------------------------------


def corpus_name(corpus: str) -> str:
    return CORPUS_NAMES.get(corpus.lower(), corpus)


def _format(value: float, key: str) -> str:
    return f"{value:.1f}" if key != "MdR" or value != int(value) else f"{value:.0f}"


def describe_protocol(results: dict) -> str:
    """One paragraph saying what the numbers of a results file measure."""
    protocol, counts = results["protocol"], results["counts"]
    captions = protocol.get("captions_per_video")
    caption_text = {
        "single": "one caption per video",
        "multiple": "several captions per video, every caption a text-to-video query",
    }.get(captions, f"captions per video: {captions}")
    ties = protocol.get("ties")
    tie_text = {
        "average": "a ground truth tied with other candidates takes the mean of the tied positions",
        "clip4clip": "ties are counted as CLIP4Clip's code counts them",
    }.get(ties, f"ties: {ties}")
    parts = [
        f"Protocol: {corpus_name(results['corpus'])}, `{results['split']}` split, {counts['texts']} texts against "
        f"{counts['videos']} videos ({caption_text})",
        tie_text,
    ]
    if protocol.get("video_to_text"):
        parts.append(f"video-to-text: {protocol['video_to_text']}")
    options = protocol.get("corpus_options") or {}
    if options:
        parts.append("corpus options: " + ", ".join(f"`{key}={value}`" for key, value in sorted(options.items())))
    parts.append(f"post-processing: {protocol.get('post_processing') or 'none'}")
    return "; ".join(parts) + "."


def _table_rows(metrics: dict, suffix: str = "") -> list[dict]:
    return [
        {
            "direction": DIRECTIONS[direction] + suffix,
            "cells": [_format(metrics[direction][key], key) for key in METRICS],
        }
        for direction in DIRECTIONS
    ]


def results_sections(all_results: list[dict]) -> list[dict]:
    """What the card's Results section prints for each results file: title, protocol, table rows, provenance."""
    sections = []
    for results in all_results:
        rows = _table_rows(results["metrics"])
        for method, metrics in sorted((results.get("post_processing") or {}).items()):
            rows += _table_rows(metrics, f" + {method.upper()} (post-processed)")
        versions = results.get("versions") or {}
        version_text = ", ".join(f"{name} {version}" for name, version in versions.items())
        provenance = f"Source: `{os.path.basename(results['_path'])}`, written by `training/evaluate_model.py`"
        if results.get("date"):
            provenance += f" on {results['date']}"
        if version_text:
            provenance += f" ({version_text})"
        sections.append(
            {
                "title": f"{corpus_name(results['corpus'])}, {results['split']}",
                "protocol": describe_protocol(results),
                "rows": rows,
                "provenance": provenance + ".",
            }
        )
    return sections


def eval_results(all_results: list[dict]) -> list[EvalResult]:
    """The card's `model-index`: one entry per metric, direction and results file (post-processing marked)."""
    entries = []
    for results in all_results:
        blocks = [(None, results["metrics"])] + sorted((results.get("post_processing") or {}).items())
        for method, metrics in blocks:
            for direction, task in DIRECTIONS.items():
                for key, metric_type in METRICS.items():
                    entries.append(
                        EvalResult(
                            task_type=f"{task}-retrieval",
                            task_name=f"{task.capitalize()} retrieval",
                            dataset_type=results["corpus"],
                            dataset_name=corpus_name(results["corpus"]),
                            dataset_split=results["split"],
                            dataset_args=dict(results["protocol"].get("corpus_options") or {}) or None,
                            metric_type=metric_type,
                            metric_name=key if method is None else f"{key} ({method.upper()})",
                            metric_config=method,
                            metric_value=float(metrics[direction][key]),
                        )
                    )
    return entries


def architecture_rows(model: S2CAModel, processor: S2CAProcessor) -> list[tuple[str, str]]:
    config = model.config
    vision, text = config.vision_config, config.text_config
    rows = [
        (
            "backbone",
            f"CLIP ViT, image {vision.image_size}, patch {vision.patch_size}, width {vision.hidden_size} / "
            f"{vision.num_hidden_layers} layers (vision), {text.hidden_size} / {text.num_hidden_layers} layers (text)",
        ),
        ("joint dimension D", str(config.projection_dim)),
        ("temporal module", f"`{config.temporal_module}`"),
        ("shared concepts", f"K = {config.num_concepts}" if config.use_concepts else "off (CLIP4Clip baseline)"),
    ]
    if config.use_concepts:
        rows += [
            ("allocation", f"`{config.allocation}` (argmax at inference: deterministic)"),
            ("video tokens allocated", f"`{config.video_tokens}`"),
            ("concept score weight λ", str(config.concept_score_weight)),
        ]
    rows.append(("retrieval vector size", str(config.embedding_dim)))
    return rows


def render_model_card(
    model: S2CAModel,
    processor: S2CAProcessor,
    repo_id: str,
    weights_sha256: str,
    all_results: list[dict] | None = None,
    revision: str = f"v{s2ca_hf.__version__}",
    license: str = "apache-2.0",
    base_model: str | None = None,
    datasets: list[str] | None = None,
    recipe_path: str | None = None,
    parity_statement: str = "",
    template_path: str | os.PathLike = TEMPLATE_PATH,
) -> ModelCard:
    """Renders the model card. Every results file must be for `weights_sha256`; none means an unevaluated card."""
    all_results = list(all_results or [])
    for results in all_results:
        check_results_for_model(results, weights_sha256)
    model_name = repo_id.split("/")[-1]
    corpora = [results["corpus"] for results in all_results]
    dataset_names = list(dict.fromkeys((datasets or []) + corpora))
    card_data = ModelCardData(
        model_name=model_name,
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        license=license,
        tags=TAGS,
        datasets=dataset_names or None,
        base_model=base_model,
        eval_results=eval_results(all_results) or None,
    )
    recipe = recipe_name = recipe_language = None
    if recipe_path is not None:
        recipe = Path(recipe_path).read_text().strip()
        recipe_name = os.path.basename(recipe_path)
        recipe_language = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}.get(Path(recipe_path).suffix, "text")
    video_processor = processor.video_processor
    frame_policy = video_processor.frame_policy.describe()
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path),
        model_name=model_name,
        repo_id=repo_id,
        revision=revision,
        package_version=s2ca_hf.__version__,
        min_transformers=MIN_TRANSFORMERS,
        evaluated=bool(all_results),
        evaluated_on=", ".join(dict.fromkeys(f"{corpus_name(r['corpus'])} ({r['split']})" for r in all_results)),
        results=results_sections(all_results),
        architecture=architecture_rows(model, processor),
        embedding_dim=model.config.embedding_dim,
        processor={
            "max_frames": video_processor.max_frames,
            "frame_policy": frame_policy,
            "max_text_length": processor.max_text_length,
        },
        recipe=recipe,
        recipe_name=recipe_name,
        recipe_language=recipe_language,
        datasets=[corpus_name(name) for name in dataset_names],
        base_model=base_model,
        sha256=weights_sha256,
        num_parameters=f"{sum(p.numel() for p in model.parameters()):,}",
        parity_statement=parity_statement,
    )


# ---------------------------------------------------------------------------------------------------------------------
# The repository folder
# ---------------------------------------------------------------------------------------------------------------------


def _same_tensors(path_a: str | os.PathLike, path_b: str | os.PathLike) -> bool:
    from safetensors import safe_open

    with safe_open(path_a, "pt") as a, safe_open(path_b, "pt") as b:
        if set(a.keys()) != set(b.keys()):
            return False
        return all(torch.equal(a.get_tensor(key), b.get_tensor(key)) for key in a.keys())


def write_repo_folder(
    model: S2CAModel, processor: S2CAProcessor, folder: str | os.PathLike, source_dir: str | None = None
) -> str:
    """Writes weights, config, code and processor files into `folder` (which must be empty or absent) and returns
    the sha256 of the written `model.safetensors`."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(
            f"{folder} is not empty: the repository folder is written from scratch, so stale files "
            "cannot be uploaded with it. Remove it or pick another folder."
        )
    folder.mkdir(parents=True, exist_ok=True)
    register_for_auto_class()
    # Saving through the pipeline is what writes `custom_pipelines` into config.json and copies pipeline_s2ca.py
    # (transformers has no register_for_auto_class for pipelines); it also saves the model with its auto_map.
    pipe = VideoTextRetrievalPipeline(model=model, processor=processor, task=s2ca_hf.PIPELINE_TASK)
    pipe.save_pretrained(folder)
    processor.save_pretrained(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise RuntimeError(
            f"save_pretrained wrote no single {WEIGHTS_NAME} in {folder} (a sharded checkpoint?); "
            "results files are keyed on the sha256 of that one file."
        )
    # Results files name the sha256 of the weights they were measured on. Re-serialising equal tensors may still
    # change the bytes (another transformers or safetensors version), so publish the evaluated file itself when
    # it holds exactly the tensors just saved; the parity check below then runs on those very bytes.
    source = Path(source_dir) / WEIGHTS_NAME if source_dir else None
    if source is not None and source.is_file() and file_sha256(source) != file_sha256(weights):
        if _same_tensors(source, weights):
            shutil.copyfile(source, weights)
    return file_sha256(weights)


# ---------------------------------------------------------------------------------------------------------------------
# Parity check in a process without s2ca_hf
# ---------------------------------------------------------------------------------------------------------------------

PARITY_TEXTS = ["a man is cooking in a kitchen", "a dog runs along the beach", "two people are dancing"]

# Runs in a fresh interpreter: s2ca_hf is made unimportable, so everything must come from the folder's own code.
PARITY_CHILD = textwrap.dedent(
    """
    import json, sys
    sys.modules["s2ca_hf"] = None
    import numpy as np, torch
    from transformers import AutoModel, AutoProcessor, pipeline

    folder, work = sys.argv[1], sys.argv[2]
    spec = json.load(open(f"{work}/spec.json"))
    videos = [np.load(path) for path in spec["videos"]]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    for obj in (model, processor, processor.video_processor):
        if not type(obj).__module__.startswith("transformers_modules"):
            raise SystemExit(f"{type(obj)} was not loaded from the folder's code")
    inputs = processor(text=spec["texts"], videos=videos, return_tensors="pt")
    with torch.inference_mode():
        out = model(**inputs)
        text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"]).pooler_output
        video = model.get_video_features(inputs["pixel_values_videos"], inputs["frame_mask"]).pooler_output
    pipe = pipeline(model=folder, trust_remote_code=True)
    ranking = pipe(videos[0], candidate_labels=spec["texts"])
    torch.save({**dict(inputs), "text_embeds": text, "video_embeds": video, "logits_per_text": out.logits_per_text,
                "pipeline_logits": torch.tensor([r["logit"] for r in ranking]),
                "pipeline_labels": [r["label"] for r in ranking]}, f"{work}/remote.pt")
    """
)


def parity_videos(processor: S2CAProcessor) -> list[np.ndarray]:
    """Two fixed clips of random frames: one filling every frame slot, one shorter (so padding is checked too),
    a little larger than the crop so resizing and cropping run."""
    video_processor = processor.video_processor
    crop = video_processor.crop_size
    height, width = crop["height"] + 8, crop["width"] + 16
    rng = np.random.default_rng(0)
    counts = [video_processor.max_frames, max(1, video_processor.max_frames // 2)]
    return [rng.integers(0, 256, (n, height, width, 3), dtype=np.uint8) for n in counts]


def reference_outputs(model: S2CAModel, processor: S2CAProcessor, texts: list[str], videos: list) -> dict:
    """What the in-memory (s2ca_hf) model gives on the parity input; the exported folder must give the same."""
    model.eval()
    inputs = processor(text=texts, videos=videos, return_tensors="pt")
    with torch.inference_mode():
        out = model(**inputs)
        text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"]).pooler_output
        video = model.get_video_features(inputs["pixel_values_videos"], inputs["frame_mask"]).pooler_output
    ranking = VideoTextRetrievalPipeline(model=model, processor=processor)(videos[0], candidate_labels=texts)
    return {
        **dict(inputs),
        "text_embeds": text,
        "video_embeds": video,
        "logits_per_text": out.logits_per_text,
        "pipeline_logits": torch.tensor([r["logit"] for r in ranking]),
        "pipeline_labels": [r["label"] for r in ranking],
    }


def compare_outputs(expected: dict, actual: dict, atol: float = 0.0) -> dict[str, float]:
    """Max absolute difference per output; raises `ParityError` listing every output that differs."""
    differences, failures = {}, []
    for key, value in expected.items():
        other = actual.get(key)
        if not isinstance(value, torch.Tensor):
            if other != value:
                failures.append(f"  {key}: {other!r} != expected {value!r}")
            continue
        if not isinstance(other, torch.Tensor) or other.shape != value.shape:
            shape = getattr(other, "shape", None)
            failures.append(f"  {key}: shape {tuple(shape) if shape is not None else None} != {tuple(value.shape)}")
            continue
        diff = (other.double() - value.double()).abs().max().item() if value.numel() else 0.0
        differences[key] = diff
        if not diff <= atol:  # also catches NaN
            failures.append(f"  {key}: max |difference| = {diff:.3g} (allowed {atol:g})")
    if failures:
        raise ParityError(
            "Parity check failed: the exported folder, loaded with trust_remote_code=True in a process without "
            "s2ca_hf, does not reproduce the in-memory model:\n" + "\n".join(failures) + "\nNothing was uploaded."
        )
    return differences


def check_parity(
    model: S2CAModel, processor: S2CAProcessor, folder: str | os.PathLike, atol: float = 0.0, timeout: float = 900
) -> dict[str, float]:
    """Loads `folder` as remote code in a fresh process and compares it with the in-memory model on a fixed input.

    Returns the max absolute difference of every compared output; raises `ParityError` when one exceeds `atol`
    (0: bit-identical, which the same code on the same machine gives) or the folder cannot be loaded at all.
    """
    videos = parity_videos(processor)
    expected = reference_outputs(model, processor, PARITY_TEXTS, videos)
    with tempfile.TemporaryDirectory(prefix="s2ca-parity-") as work:
        paths = []
        for index, frames in enumerate(videos):
            paths.append(os.path.join(work, f"video_{index}.npy"))
            np.save(paths[-1], frames)
        with open(os.path.join(work, "spec.json"), "w") as f:
            json.dump({"texts": PARITY_TEXTS, "videos": paths}, f)
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",  # the folder is local: nothing may be fetched
            "HF_MODULES_CACHE": os.path.join(work, "modules"),  # no stale copy of the code from an earlier export
        }
        # cwd=work: with `-c`, the current directory is on sys.path, and a checkout's s2ca_hf/ must not be found.
        result = subprocess.run(
            [sys.executable, "-c", PARITY_CHILD, str(Path(folder).resolve()), work],
            capture_output=True,
            text=True,
            cwd=work,
            env=env,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise ParityError(
                f"Parity check failed: {folder} could not be loaded and run with trust_remote_code=True in a "
                f"process without s2ca_hf (exit {result.returncode}):\n{result.stderr[-4000:]}\nNothing was uploaded."
            )
        actual = torch.load(os.path.join(work, "remote.pt"), weights_only=False)
    return compare_outputs(expected, actual, atol)


# ---------------------------------------------------------------------------------------------------------------------
# Upload
# ---------------------------------------------------------------------------------------------------------------------


def upload(
    folder: str | os.PathLike,
    repo_id: str,
    tag: str,
    revision: str | None = None,
    create_pr: bool = False,
    private: bool = False,
    commit_message: str | None = None,
    api: HfApi | None = None,
):
    """Creates the repository if needed, uploads `folder` in one commit (or pull request) and tags that commit.

    The tag is checked before anything is uploaded: an existing tag would leave the card pinning other files.
    """
    api = api or HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    try:
        tags = {ref.name for ref in api.list_repo_refs(repo_id, repo_type="model").tags}
    except RepositoryNotFoundError:
        tags = set()
    if tag in tags:
        raise SystemExit(
            f"{repo_id} already has a tag {tag!r}, and the card pins it: pass another --tag (the card's usage "
            "snippet pins the tag created for this commit)."
        )
    if revision not in (None, "main"):
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="model",
        folder_path=str(folder),
        revision=revision,
        create_pr=create_pr,
        commit_message=commit_message or f"Upload S2CA model (s2ca-hf {s2ca_hf.__version__})",
    )
    # A pull request's commit holds exactly the reviewed files, so the tag can point at it before the merge.
    api.create_tag(repo_id, tag=tag, revision=commit.oid, repo_type="model", tag_message=commit.commit_message)
    return commit


# ---------------------------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="saved model and processor (folder or Hub id)")
    parser.add_argument("--repo_id", required=True, help="target Hub repository, org/name")
    parser.add_argument("--results", action="append", default=[], help="results JSON of training/evaluate_model.py")
    parser.add_argument("--dry_run", metavar="OUT", help="write and check the folder OUT, upload nothing")
    parser.add_argument("--create_pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--revision", help="branch to commit to (created if missing; default main)")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument(
        "--tag", default=f"v{s2ca_hf.__version__}", help="tag created at the commit (pinned by the card)"
    )
    parser.add_argument("--license", default="apache-2.0", help="licence of the weights, for the card")
    parser.add_argument(
        "--base_model", help="the CLIP checkpoint the model started from, e.g. openai/clip-vit-base-patch32"
    )
    parser.add_argument(
        "--dataset", action="append", default=[], help="training dataset (Hub id or name) for the card"
    )
    parser.add_argument("--recipe", help="the training recipe file (YAML/JSON), shown in the card as is")
    parser.add_argument("--commit_message")
    parser.add_argument("--parity_atol", type=float, default=0.0, help="allowed max |difference| (default 0: exact)")
    parser.add_argument("--card_dir", default=str(CARD_DIR), help="where the published card is kept")
    args = parser.parse_args(argv)
    if args.repo_id.count("/") != 1 or not all(args.repo_id.split("/")):
        parser.error(f"--repo_id must be org/name, got {args.repo_id!r}")
    if args.recipe and not os.path.isfile(args.recipe):
        parser.error(f"--recipe: no such file {args.recipe}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    # 1. Results first: a malformed file should fail before minutes of export work.
    all_results = [load_results(path) for path in args.results]

    # 2. The reference implementation: the s2ca_hf classes, on the CPU in float32.
    model = S2CAModel.from_pretrained(args.model, dtype=torch.float32).eval()
    processor = S2CAProcessor.from_pretrained(args.model)

    # 3. The repository folder (a temporary one unless --dry_run), and the results checked against its weights.
    workdir = None
    if args.dry_run:
        folder = Path(args.dry_run)
    else:
        workdir = tempfile.mkdtemp(prefix="s2ca-push-")
        folder = Path(workdir) / args.repo_id.split("/")[-1]
    try:
        source_dir = args.model if os.path.isdir(args.model) else None
        weights_sha256 = write_repo_folder(model, processor, folder, source_dir)
        for results in all_results:
            check_results_for_model(results, weights_sha256)

        # 4. Parity: the folder as the Hub will serve it, loaded where s2ca_hf does not exist.
        differences = check_parity(model, processor, folder, atol=args.parity_atol)
        worst = max(differences.values(), default=0.0)
        parity_statement = (
            "Before upload, a fresh process that could not import `s2ca_hf` loaded these files with "
            "`trust_remote_code=True` and reproduced the exporter's processed inputs, text and video features, logits "
            "and pipeline ranking on a fixed input "
            + ("exactly." if worst == 0 else f"to within {worst:.2g} (largest absolute difference).")
        )
        print(f"Parity check passed: {len(differences)} outputs, largest absolute difference {worst:.3g}.")

        # 5. The card, from the results files.
        card = render_model_card(
            model,
            processor,
            args.repo_id,
            weights_sha256,
            all_results,
            revision=args.tag,
            license=args.license,
            base_model=args.base_model,
            datasets=args.dataset,
            recipe_path=args.recipe,
            parity_statement=parity_statement,
        )
        card.save(folder / "README.md")
        summary = {
            "folder": str(folder),
            "sha256": weights_sha256,
            "files": sorted(p.name for p in folder.iterdir()),
            "parity": differences,
            "results": [results["_path"] for results in all_results],
        }
        if args.dry_run:
            print(f"Dry run: {folder} is ready and checked; nothing was uploaded.")
            return summary

        # 6. One commit (or pull request), tagged; then keep the card of the published checkpoint.
        commit = upload(
            folder,
            args.repo_id,
            tag=args.tag,
            revision=args.revision,
            create_pr=args.create_pr,
            private=args.private,
            commit_message=args.commit_message,
        )
        os.makedirs(args.card_dir, exist_ok=True)
        kept = Path(args.card_dir) / f"{args.repo_id.replace('/', '--')}.md"
        shutil.copyfile(folder / "README.md", kept)
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        print(
            f"Uploaded {args.repo_id} at {commit.oid} ({commit.pr_url or commit.commit_url}), tag {args.tag}, {stamp}."
        )
        print(f"The card is kept in {kept}: commit it, and add it to {Path(args.card_dir) / 'README.md'}.")
        return {**summary, "commit": commit.oid, "pr_url": commit.pr_url, "card": str(kept)}
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except (ResultsError, ParityError, FileExistsError) as error:
        raise SystemExit(f"push_to_hub: {error}") from None

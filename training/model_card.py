"""The model card of an exported S2CA checkpoint, rendered from `hub_cards/template.md` with
`huggingface_hub.ModelCard`: the usage snippet pins the revision, and every number is read from a results file
(`results.py`), never typed in. No results file: no results section, and the card says the model is unevaluated."""

import os
import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from results import DIRECTIONS, WRITER, check_results_for_model

import s2ca_hf
from s2ca_hf import S2CAModel, S2CAProcessor


REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_PATH = REPO_ROOT / "hub_cards" / "template.md"
# The lowest transformers the package is tested with; the card's install line asks for it.
MIN_TRANSFORMERS = "5.17"

CORPUS_NAMES = {
    "msrvtt": "MSR-VTT",
    "msvd": "MSVD",
    "didemo": "DiDeMo",
    "activitynet": "ActivityNet Captions",
    "synthetic": "the s2ca-hf built-in synthetic corpus",
}
# Metric key in a results file -> model-index metric type, in the order of the card's table columns (std_rank is
# kept out of the table).
METRIC_TYPES = {
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


def corpus_name(corpus: str) -> str:
    return CORPUS_NAMES.get(corpus.lower(), corpus)


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def is_hub_id(name: str | None) -> bool:
    """`org/name`, and no folder here of that name: what the card's metadata may link to (a local path or a corpus
    key such as `synthetic` is no Hub repository; the card's text names it instead)."""
    return bool(name) and HUB_ID.fullmatch(name) is not None and not os.path.exists(name)


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
            "cells": [_format(metrics[direction][key], key) for key in METRIC_TYPES],
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
        provenance = f"Source: `{os.path.basename(results['_path'])}`, written by `{WRITER}`"
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
                for key, metric_type in METRIC_TYPES.items():
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
            (
                "allocation",
                f"`{config.allocation}` "
                + {
                    "soft": "(a softmax over the concepts, not discrete: deterministic)",
                    "gumbel": "(discrete: argmax at inference, deterministic)",
                    "expert_choice": "(discrete: each video concept takes its best tokens of every frame, each word "
                    "its best concept; deterministic)",
                }[config.allocation],
            ),
            ("concept tracks over the frames", "yes" if config.concept_tracks else "no"),
            (
                "late-interaction re-ranker",
                f"weight {config.late_interaction_weight}" if config.has_late_interaction else "no",
            ),
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
    space: str | None = None,
) -> ModelCard:
    """Renders the model card. Every results file must be for `weights_sha256`; none means an unevaluated card.
    `space` is the Hub id of a demo Space serving the model (`space/build_space.py`), linked from the card."""
    if space is not None and not is_hub_id(space):
        raise ValueError(f"space={space!r} is not a Hub id (org/name): the card can only link a Space on the Hub.")
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
        datasets=[name for name in dataset_names if is_hub_id(name)] or None,
        base_model=base_model if is_hub_id(base_model) else None,
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
        base_model_on_hub=is_hub_id(base_model),
        sha256=weights_sha256,
        num_parameters=f"{sum(p.numel() for p in model.parameters()):,}",
        parity_statement=parity_statement,
        space=space,
    )


def parity_statement(differences: dict[str, float]) -> str:
    """What the card says about the parity check that ran (`parity.check_parity`'s differences)."""
    worst = max(differences.values(), default=0.0)
    return (
        "Before upload, a fresh process that could not import `s2ca_hf` loaded these files with "
        "`trust_remote_code=True` and reproduced the exporter's processed inputs, text and video features, logits "
        "and pipeline ranking on a fixed input "
        + ("exactly." if worst == 0 else f"to within {worst:.2g} (largest absolute difference).")
    )

"""Does S2CA beat its baselines? Retrieval quality on the built-in concept-video corpus (docs/benchmarks.md §1).

    python benchmarks/accuracy.py             # the full protocol: 6 rows x 3 seeds, hours on 2 cores (resumable)
    python benchmarks/accuracy.py --seeds 0 --max_steps 20 -- --synthetic_num_videos 200   # a quick look

1. A small CLIP is pretrained on the corpus's captioned stills (`training/pretrain_clip.py`, made once and cached):
   the stand-in for OpenAI CLIP and the ATR teacher. The stills show a wider world than the clips (colours and
   shapes fine-tuning never shows, three sizes, position words), so the teacher knows something the students
   are not taught.
2. From it, every row is fine-tuned by `training/train.py` (the synthetic recipe) with the same data and seeds,
   each until its val text->video R@1 stops improving (`--early_stopping_patience` evaluations, every
   `--eval_steps`, at most `--max_steps`): meanP, seqTransf, S2CA as the recipe trains it (the default), S2CA with
   ATR and S2CA with the hard Gumbel allocation of the paper's abstract; "CLIP zero-shot (no fine-tuning)"
   evaluates the pretrained CLIP as meanP without training. Every row trains on the same group-aware batches with
   caption foils (the recipe's defaults).
3. Each run keeps the checkpoint with the best val R@1 (val is the only split any choice is made on); metrics on
   val, test, compositional (combinations never seen in training) and open_vocab (colours and shapes only the
   stills show); mean and std over the seeds, and the step each seed peaked at. A text's correct answers are every
   clip of its split that shows all the caption says.
4. Every figure has a ceiling: the R@1 of observers blind to frame order, to motion, to binding (`oracles`).
5. For every method and seed: R@1 per query type (names everything / one of several / binding pair / motion pair),
   what its wrong top-1 hits fail of the caption (the error table), what fine-tuning kept of the teacher's
   open-vocabulary knowledge, and for the S2CA rows how they use their concepts (tokens per concept, empty-concept
   rate, shared concepts, R@1 from s_inst, s_con and both, the concept score weight best on val).

A finished run (its folder holds the same arguments) is reused, so an interrupted benchmark continues where it
stopped. Writes `benchmarks/results/accuracy.json` and `accuracy.md`, with the machine, the corpus format and the
small CLIP's zero-shot R@1: results differ between CPUs, so methods are compared within one file only.
"""

import argparse
import datetime
import importlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys

import torch
import transformers

from s2ca_hf.data.synthetic import ERROR_KINDS, QUERY_TYPES


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")
# Every choice is made on val; the others are only reported: test (in distribution), compositional (combinations never
# seen in training), open_vocab (colours and shapes only the pretraining stills show: what fine-tuning forgets).
SPLITS = ("val", "test", "compositional", "open_vocab")
KEYS = ("R@1", "R@5", "R@10", "MdR", "MnR")
NO_ATR = ["--align", "false", "--transform", "false", "--reconstruct", "false"]
ATR = ["--align", "true", "--transform", "true", "--reconstruct", "true"]
DEFAULT_S2CA = "S2CA (default)"
METHODS = {
    # name: train.py overrides on top of the synthetic recipe, or None (no training). The recipe's S2CA is the default
    # chosen on val (soft allocation, detached towers, residual loss, no ATR; docs/research-log.md); the last two rows
    # put back, one at a time, what the paper's abstract has and the measurements took out.
    "CLIP zero-shot (no fine-tuning)": None,
    "meanP": ["--use_concepts", "false", "--temporal_module", "mean", *NO_ATR],
    "seqTransf": ["--use_concepts", "false", "--temporal_module", "transformer", *NO_ATR],
    DEFAULT_S2CA: [],
    "S2CA + ATR (Align, Transform, Reconstruct)": ATR,
    "S2CA with hard Gumbel allocation": ["--allocation", "gumbel"],
}


def load_training_script(name: str):
    """training/<name>.py, imported by name (the training scripts import each other so: `from losses import ...`)."""
    folder = os.path.join(REPO, "training")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


RUN_MARKER = "benchmark_run.json"  # in a finished run's folder: the exact train.py arguments it ran with


def run_training(arguments: list[str]) -> dict:
    """One `training/train.py` run in its own process, as a user runs it (a long-lived process that forks data
    workers after heavy torch work can hang), returning its `eval_results.json` summary.

    A run whose folder holds a finished run with the same arguments is reused, so an interrupted benchmark
    continues where it stopped."""
    output_dir = arguments[arguments.index("--output_dir") + 1]
    marker = os.path.join(output_dir, RUN_MARKER)
    if os.path.isfile(marker):
        with open(marker) as f:
            if json.load(f) == arguments:
                with open(os.path.join(output_dir, "eval_results.json")) as f:
                    return json.load(f)
    # A benchmark run replaces what an earlier run of the same benchmark left in its folder.
    command = [
        sys.executable,
        os.path.join(REPO, "training", "train.py"),
        *arguments,
        "--overwrite_output_dir",
        "true",
    ]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr[-4000:]}")
    with open(os.path.join(output_dir, "eval_results.json")) as f:
        summary = json.load(f)
    with open(marker, "w") as f:
        json.dump(arguments, f)
    return summary


def zero_shot_model(clip_dir: str, max_frames: int, max_words: int):
    """The pretrained CLIP as CLIP4Clip-meanP without any fine-tuning, and its processor."""
    from s2ca_hf import S2CAModel, S2CAProcessor

    model = S2CAModel.from_clip(clip_dir, use_concepts=False, temporal_module="mean").eval()
    size = model.config.vision_config.image_size
    processor = S2CAProcessor.from_clip(
        clip_dir,
        max_text_length=max_words,
        max_frames=max_frames,
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
    )
    return model, processor


@torch.inference_mode()
def encode_split(model, processor, data_dir: str, split: str) -> dict:
    """Every clip of an evaluation split and its one caption (text i describes video i), through the model's two
    towers: instance features, concept outputs, and the Gumbel agreement statistics of the allocation."""
    from torch.utils.data import DataLoader

    from s2ca_hf.data import VideoTextCollator, load_corpus

    dataset = load_corpus("synthetic", data_dir, split)
    parts = {"text": [], "video": []}
    generator = torch.Generator().manual_seed(0)
    for batch in DataLoader(dataset, batch_size=32, collate_fn=VideoTextCollator(processor)):
        text = model.encode_text(batch["input_ids"], batch["attention_mask"])
        video = model.encode_video(batch["pixel_values_videos"], batch["frame_mask"])
        for side, out in (("text", text), ("video", video)):
            part = {"instance": out.instance_embeds}
            if out.concepts is not None:
                concepts = out.concepts
                logits, valid = concepts.allocation_logits, concepts.token_mask.bool()
                noise = -torch.empty(logits.shape).exponential_(generator=generator).log()
                noisy = logits + model.config.gumbel_noise_scale * noise
                part.update(
                    features=concepts.concept_features,
                    weights=concepts.concept_weights,
                    empty=concepts.empty_concepts,
                    counts=concepts.token_counts,
                    agree=(noisy.argmax(1) == logits.argmax(1))[valid].float(),
                    spread=logits.std(1)[valid],
                )
            parts[side].append(part)
    encoded = {side: {k: torch.cat([p[k] for p in parts[side]]) for k in parts[side][0]} for side in parts}
    encoded["video_ids"] = list(dataset["video_id"])
    column = {video_id: k for k, video_id in enumerate(encoded["video_ids"])}
    encoded["positives"] = [sorted(column[v] for v in ids) for ids in dataset["positive_video_ids"]]
    encoded["query_types"] = list(dataset["query_type"])
    return encoded


def scores(model, encoded: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    """s_inst and s_con `(T, V)` of an encoded split (s_con None without concepts)."""
    from s2ca_hf.modeling_s2ca import concept_similarity

    text, video = encoded["text"], encoded["video"]
    instance = text["instance"] @ video["instance"].t()
    if "features" not in text:
        return instance, None
    concept = concept_similarity(
        text["features"], text["weights"], video["features"], video["weights"], model.config.concept_weighting
    )
    return instance, concept


def t2v_r1(scores_: torch.Tensor, positives: list[list[int]], rows: list[int] | None = None) -> float | None:
    """Text->video R@1 with every correct answer counted (the corpus's content-aware ground truth), over `rows`
    (default: every query); None for no row."""
    from s2ca_hf.retrieval.metrics import retrieval_metrics

    rows = list(range(len(positives))) if rows is None else rows
    if not rows:
        return None
    subset = scores_[rows]
    own = torch.tensor(rows)  # text i's own clip is video i
    metrics = retrieval_metrics(subset, own, positives=[positives[r] for r in rows])
    return metrics["text_to_video"]["R@1"]


def r1_by_query_type(scores_: torch.Tensor, encoded: dict) -> dict[str, float | None]:
    """Text->video R@1 per query type: captions that name everything, one (or some) of several objects, a binding
    pair, a motion pair (see `s2ca_hf.data.synthetic`)."""
    types = encoded["query_types"]
    return {
        kind: t2v_r1(scores_, encoded["positives"], [i for i, t in enumerate(types) if t == kind])
        for kind in QUERY_TYPES
    }


def attribute_errors(scores_: torch.Tensor, encoded: dict, clips: dict) -> dict:
    """For each text query whose top-1 video is not a correct answer, what that video fails of what the caption says
    (`s2ca_hf.data.synthetic.query_error`), per 100 queries; "none" counts top-1 videos that show everything the
    caption says yet are not among its listed answers (0 unless the ground truth is wrong). Also the share of the
    wrong top-1 hits inside the query's minimal-pair group."""
    from s2ca_hf.data.synthetic import query_error

    video_ids = encoded["video_ids"]
    top = scores_.argmax(dim=1).tolist()
    wrong = [(i, j) for i, j in enumerate(top) if j not in encoded["positives"][i]]
    kinds = [query_error(clips[video_ids[i]].query, clips[video_ids[j]]) for i, j in wrong]
    in_group = sum(clips[video_ids[i]].group == clips[video_ids[j]].group for i, j in wrong)
    result = {kind: 100.0 * kinds.count(kind) / len(top) for kind in ERROR_KINDS}
    result.update(errors=100.0 * len(wrong) / len(top), in_group=in_group / len(wrong) if wrong else None)
    return result


LAMBDAS = (0.25, 0.5, 1.0, 2.0, 4.0)


def concept_statistics(model, encoded: dict) -> dict:
    """How a trained model uses its concepts on one split (one caption per video, text i describes video i).

    * tokens per concept and the empty-concept rate, per modality; the mean |cosine| between distinct prototypes
      (collapse shows as 1);
    * `shared_concepts_matched` / `_unmatched`: how many concepts are non-empty on both the text and the video side,
      for the true pairs and for all other pairs: s_con only sees concepts both sides use;
    * `concept_cosine_matched` / `_unmatched`: the mean cosine of a concept's text and video features over those
      shared concepts (does a shared concept carry content, or only its prototype?);
    * `{side}_top_concept_share`: the share of an item's tokens in its fullest concept (1: everything in one);
    * `{side}_logit_spread`: the std over concepts of the allocation logits Z, and `{side}_train_eval_agreement`: how
      often training's noisy allocation argmax(Z + g) picks evaluation's argmax(Z) (chance: 1/K; Gumbel only). Small
      logits next to the noise mean the concepts are trained on near-random groupings of tokens.
    """
    prototypes = torch.nn.functional.normalize(model.concepts.prototypes.detach(), dim=-1)
    cosines = prototypes @ prototypes.t()
    off_diagonal = ~torch.eye(len(cosines), dtype=torch.bool)
    stats = {"prototype_abs_cosine": float(cosines[off_diagonal].abs().mean())}
    for side in ("text", "video"):
        part = encoded[side]
        counts = part["counts"]
        stats[f"{side}_tokens_per_concept"] = [round(float(v), 3) for v in counts.mean(0)]
        stats[f"{side}_empty_concept_rate"] = float(part["empty"].mean())
        stats[f"{side}_top_concept_share"] = float((counts.max(1).values / counts.sum(1).clamp(min=1e-6)).mean())
        stats[f"{side}_logit_spread"] = float(part["spread"].mean())
        noisy = model.config.allocation in ("gumbel", "relaxed")
        stats[f"{side}_train_eval_agreement"] = float(part["agree"].mean()) if noisy else None
    text, video = encoded["text"], encoded["video"]
    shared = (1 - text["empty"]) @ (1 - video["empty"]).t()  # (T, V): concepts non-empty on both sides
    per_concept_cosine = torch.einsum("tkd,vkd->tvk", text["features"], video["features"])  # 0 where one is empty
    matched = torch.eye(len(shared), dtype=torch.bool)
    for name, pairs in (("matched", matched), ("unmatched", ~matched)):
        stats[f"shared_concepts_{name}"] = float(shared[pairs].mean())
        cosine_sum = per_concept_cosine.sum(-1)[pairs].sum()
        stats[f"concept_cosine_{name}"] = float(cosine_sum / shared[pairs].sum().clamp(min=1))
    return stats


@torch.inference_mode()
def diagnostics(model, processor, data_dir: str) -> dict:
    """Per split: the attribute error breakdown of the model's score and, with concepts, text->video R@1 from
    s_inst alone, s_con alone and the model's score (`t2v_R@1_instance_only` / `_concept_only` / `_combined`); on
    `val` also the concept statistics and R@1 for other concept score weights lambda_e (chosen there, never on test).
    """
    from s2ca_hf.data.synthetic import load_clips

    clips = load_clips(data_dir)
    model.eval()
    result = {}
    for split in SPLITS:
        encoded = encode_split(model, processor, data_dir, split)
        instance, concept = scores(model, encoded)
        combined = instance if concept is None else instance + model.config.concept_score_weight * concept
        positives = encoded["positives"]
        entry = {
            "errors": attribute_errors(combined, encoded, clips),
            "query_types": r1_by_query_type(combined, encoded),
        }
        if concept is not None:
            entry["t2v_R@1_instance_only"] = t2v_r1(instance, positives)
            entry["t2v_R@1_concept_only"] = t2v_r1(concept, positives)
            entry["t2v_R@1_combined"] = t2v_r1(combined, positives)
            if split == "val":
                entry["lambda_e"] = {str(w): t2v_r1(instance + w * concept, positives) for w in LAMBDAS}
                entry.update(concept_statistics(model, encoded))
        result[split] = entry
    return result


def run_diagnostics(model_dir: str, data_dir: str) -> dict:
    from s2ca_hf import S2CAModel, S2CAProcessor

    return diagnostics(S2CAModel.from_pretrained(model_dir), S2CAProcessor.from_pretrained(model_dir), data_dir)


def selected(summary: dict) -> tuple[dict, str]:
    """The metrics of the checkpoint that `train.py` selected on val (its `best_step`), and where it is."""
    for evaluation in summary["evaluations"]:
        if evaluation["step"] == summary["best_step"]:
            return evaluation["metrics"], summary["best_model"]
    return summary["final_metrics"], summary["final_model"]


def summarise(name: str, per_seed: list[dict], seeds: list[int], best_steps: list[int] | None = None) -> list[dict]:
    rows = []
    for split in SPLITS:
        row = {"method": name, "split": split, "seeds": seeds, "best_steps": best_steps}
        for direction in ("text_to_video", "video_to_text"):
            values = {key: [run[split][direction][key] for run in per_seed] for key in KEYS}
            row[direction] = {key: statistics.fmean(v) for key, v in values.items()}
            row[f"{direction}_std"] = {key: statistics.pstdev(v) if len(v) > 1 else 0.0 for key, v in values.items()}
        rows.append(row)
    return rows


DIAGNOSTICS = (  # the allocation statistics that the tables show, as (text, video) or (true pair, other pairs)
    ("empty t / v", "text_empty_concept_rate", "video_empty_concept_rate"),
    ("top t / v", "text_top_concept_share", "video_top_concept_share"),
    ("Z std t / v", "text_logit_spread", "video_logit_spread"),
    ("train = eval t / v", "text_train_eval_agreement", "video_train_eval_agreement"),
    ("shared pair / other", "shared_concepts_matched", "shared_concepts_unmatched"),
    ("cos pair / other", "concept_cosine_matched", "concept_cosine_unmatched"),
)
R1_DIAGNOSTICS = ("t2v_R@1_instance_only", "t2v_R@1_concept_only", "t2v_R@1_combined")
DIAGNOSTICS_LEGEND = (
    "t / v = text / video, means over seeds, val split. empty = share of the K concepts that get no token; top = "
    "share of an item's tokens in its fullest concept; Z std = spread of the allocation logits over the concepts; "
    "train = eval = how often training's noisy allocation argmax(Z + g) picks evaluation's argmax(Z) (chance 1/K; "
    "– for soft allocation, which has no noise); shared = concepts non-empty on both sides (true pair / any other "
    "pair); cos = mean concept cosine over shared concepts (true pair / other pairs); R@1 inst / con / both = "
    "text->video R@1 from s_inst alone, s_con alone, and s_inst + lambda_e s_con (the model's score), on val, test "
    "and compositional; best lambda_e = the concept score weight with the best val R@1 (of "
    + ", ".join(str(w) for w in LAMBDAS)
    + "), with that R@1."
)
ERRORS_LEGEND = (
    "Per 100 text queries (means over seeds): all = queries whose top-1 video is not a correct answer (a correct "
    "answer shows everything the caption says); then what that video fails of the caption: none = it shows everything "
    "yet is not listed as an answer (0 unless the ground truth is wrong), one named object's colour, shape or motion, "
    "direction = a named motion reversed in time, binding = every named colour, shape and motion is there on other "
    "objects, background, several = more than one thing; in group = share of the wrong top-1 hits that are in the "
    "query's own minimal-pair group."
)
QUERY_TYPES_LEGEND = (
    "Text->video R@1 per query type (means over seeds): all = the caption names every object; subset = it names one "
    "or some of several; binding = the clip has a twin with two objects' colours, shapes or motions swapped; motion = "
    "the clip has a twin with one object's motion reversed in time (or changed). Ceilings: the table above."
)
ORACLES_LEGEND = (
    "Text->video R@1 of observers with a perfect view of the captions and clips, blind to one thing, breaking ties at "
    "random: everything (100 when no query has an indistinguishable wrong answer), no frame order (a motion and its "
    "time reversal look alike: what a model that pools frames without order can reach), no motion, no binding (the "
    "named colours, shapes and motions anywhere in the scene)."
)


def cell(value) -> str:
    return "–" if value is None or value != value else f"{value:.2f}"  # None / NaN: a statistic the row lacks


def r1_cell(value) -> str:
    return "–" if value is None else f"{value:.1f}"


def diagnostic_header() -> str:
    names = " | ".join(name for name, _, _ in DIAGNOSTICS)
    return names + " | R@1 inst / con / both: " + " | ".join(SPLITS) + " | best lambda_e (val R@1)"


def diagnostic_cells(runs: list[dict]) -> str:
    """The table cells of one row: mean concept statistics on val and R@1 triples per split over the seeds."""
    stats = mean_statistics([run["val"] for run in runs])
    cells = [f"{cell(stats.get(a))} / {cell(stats.get(b))}" for _, a, b in DIAGNOSTICS]
    for split in SPLITS:
        split_stats = mean_statistics([run[split] for run in runs])
        cells.append(" / ".join(r1_cell(split_stats.get(k)) for k in R1_DIAGNOSTICS))
    sweep = [run["val"].get("lambda_e") for run in runs]
    if all(sweep):
        means = {w: statistics.fmean(s[w] for s in sweep) for w in sweep[0]}
        best = max(means, key=means.get)
        cells.append(f"{best} ({means[best]:.1f})")
    else:
        cells.append("–")
    return " | ".join(cells)


def mean_statistics(runs: list[dict]) -> dict:
    """Means over seeds of each scalar statistic (None where any run lacks it)."""
    keys = [k for k, v in runs[0].items() if not isinstance(v, (list, dict))]
    return {
        k: None if any(run.get(k) is None for run in runs) else statistics.fmean(run[k] for run in runs) for k in keys
    }


def error_lines(by_method: dict[str, list[dict]]) -> list[str]:
    """The attribute error table: one row per method and reported split."""
    lines = [
        "| method | split | all | " + " | ".join(ERROR_KINDS) + " | in group |",
        "|---|---|---|" + "---|" * (len(ERROR_KINDS) + 1),
    ]
    for method, runs in by_method.items():
        for split in SPLITS[1:]:
            errors = mean_statistics([run[split]["errors"] for run in runs])
            kinds = " | ".join(f"{errors[k]:.1f}" for k in ERROR_KINDS)
            lines.append(f"| {method} | {split} | {errors['errors']:.1f} | {kinds} | {cell(errors['in_group'])} |")
    return lines


def query_type_lines(by_method: dict[str, list[dict]]) -> list[str]:
    """Text->video R@1 per query type and split, one row per method and split."""
    lines = ["| method | split | " + " | ".join(QUERY_TYPES) + " |", "|---|---|" + "---|" * len(QUERY_TYPES)]
    for method, runs in by_method.items():
        for split in SPLITS:
            per_type = mean_statistics([run[split]["query_types"] for run in runs])
            lines.append(f"| {method} | {split} | " + " | ".join(r1_cell(per_type[t]) for t in QUERY_TYPES) + " |")
    return lines


def oracle_lines(oracles: dict[str, dict]) -> list[str]:
    views = [view for view in next(iter(oracles.values())) if view != "queries"]
    lines = ["| split | queries | " + " | ".join(views) + " |", "|---|---|" + "---|" * len(views)]
    for split, row in oracles.items():
        lines.append(f"| {split} | {row['queries']} | " + " | ".join(f"{row[v]:.1f}" for v in views) + " |")
    return lines


def forgetting_lines(report: dict) -> list[str]:
    """open_vocab text->video R@1 of every fine-tuned row against the pretrained CLIP's zero-shot: how much of what
    only pretraining showed each method keeps."""
    rows = {(row["method"], row["split"]): row for row in report["rows"]}
    zero_shot = report["clip_zero_shot"]["open_vocab"]["text_to_video"]["R@1"]
    lines = ["| method | open_vocab T2V R@1 | minus the CLIP's zero-shot |", "|---|---|---|"]
    for (method, split), row in rows.items():
        if split == "open_vocab":
            value = row["text_to_video"]["R@1"]
            lines.append(
                f"| {method} | {value:.1f} ± {row['text_to_video_std']['R@1']:.1f} | {value - zero_shot:+.1f} |"
            )
    return lines


def concept_lines(by_method: dict[str, list[dict]]) -> list[str]:
    lines = ["| method | " + diagnostic_header() + " |", "|---|" + "---|" * (len(DIAGNOSTICS) + len(SPLITS) + 1)]
    for method, runs in by_method.items():
        if "t2v_R@1_combined" in runs[0]["val"]:
            lines.append(f"| {method} | {diagnostic_cells(runs)} |")
    return lines


def header(report: dict) -> str:
    versions = " · ".join(f"{name} {version}" for name, version in report["versions"].items())
    zero_shot_r1 = " / ".join(f"{report['clip_zero_shot'][split]['text_to_video']['R@1']:.1f}" for split in SPLITS)
    return (
        f"{report['date']} · {report['machine']} · {versions} · seeds {report['seeds']} · `{report['command']}` · "
        f"the small CLIP's zero-shot text->video R@1 ({' / '.join(SPLITS)}): {zero_shot_r1}"
    )


def group_by_method(per_run: dict[str, dict]) -> dict[str, list[dict]]:
    by_method: dict[str, list[dict]] = {}
    for key, run in per_run.items():
        by_method.setdefault(key.rsplit(" / seed ", 1)[0], []).append(run)
    return by_method


GOAL = {"seqTransf": 5.0, "meanP": 10.0}  # S2CA's goal: at least this many text->video R@1 points above each


def goal_lines(report: dict) -> list[str]:
    """The method's goal, read off the rows: the default S2CA's text->video R@1 gap to each baseline per split (means
    over seeds, with the larger of the two seeds' stds), and whether s_inst + s_con beats s_inst alone."""
    r1 = {(row["method"], row["split"]): row for row in report["rows"]}
    if not all((method, "test") in r1 for method in (DEFAULT_S2CA, *GOAL)):
        return []
    lines = [
        f"| split | {DEFAULT_S2CA} | "
        + " | ".join(f"- {m} (target +{t:g})" for m, t in GOAL.items())
        + " | s_inst + s_con - s_inst |",
        "|---|---|" + "---|" * (len(GOAL) + 1),
    ]
    runs = group_by_method(report["diagnostics"]).get(DEFAULT_S2CA, [])
    for split in SPLITS:
        ours = r1[DEFAULT_S2CA, split]
        cells = [f"{ours['text_to_video']['R@1']:.1f} ± {ours['text_to_video_std']['R@1']:.1f}"]
        for method, target in GOAL.items():
            theirs = r1[method, split]
            gap = ours["text_to_video"]["R@1"] - theirs["text_to_video"]["R@1"]
            spread = max(ours["text_to_video_std"]["R@1"], theirs["text_to_video_std"]["R@1"])
            cells.append(f"{gap:+.1f} (std {spread:.1f}): {'met' if gap >= target and spread < gap else 'not met'}")
        if runs and "t2v_R@1_combined" in runs[0][split]:
            added = statistics.fmean(r[split]["t2v_R@1_combined"] - r[split]["t2v_R@1_instance_only"] for r in runs)
            cells.append(f"{added:+.1f}")
        else:
            cells.append("–")
        lines.append(f"| {split} | " + " | ".join(cells) + " |")
    return lines


def markdown(report: dict) -> str:
    lines = [
        "# Retrieval quality on the built-in concept-video corpus",
        "",
        header(report),
        "",
        "Each run trains until its val text->video R@1 stops improving and keeps its best checkpoint (step in the "
        "table); val is the selection split, the others are only reported. A text's correct answers are every clip "
        "of its split that shows all the caption says.",
        "",
        "| method | split | T2V R@1 | T2V R@5 | T2V MnR | V2T R@1 | V2T R@5 | V2T MnR | best step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        steps = row.get("best_steps")
        cells = []
        for direction in ("text_to_video", "video_to_text"):
            for key in ("R@1", "R@5", "MnR"):
                cells.append(f"{row[direction][key]:.1f} ± {row[direction + '_std'][key]:.1f}")
        cells.append(", ".join(str(step) for step in steps) if steps else "–")
        lines.append(f"| {row['method']} | {row['split']} | " + " | ".join(cells) + " |")
    if report.get("oracles"):
        lines += ["", "Ceilings (`oracles`):", "", *oracle_lines(report["oracles"]), "", ORACLES_LEGEND]
    goal = goal_lines(report)
    if goal:
        lines += ["", "The goal: the default S2CA against the baselines (text->video R@1, chosen on val):", ""]
        lines += goal
    by_method = group_by_method(report["diagnostics"])
    lines += ["", "Text->video R@1 per query type:", "", *query_type_lines(by_method), "", QUERY_TYPES_LEGEND]
    if any(row["split"] == "open_vocab" for row in report["rows"]):
        lines += ["", "What fine-tuning keeps of pretraining (open_vocab):", "", *forgetting_lines(report)]
    lines += ["", "What the top-1 wrong hit fails of the caption (text->video):", "", *error_lines(by_method)]
    lines += ["", ERRORS_LEGEND]
    if any("t2v_R@1_combined" in runs[0]["val"] for runs in by_method.values()):
        lines += ["", "How the S2CA rows use their concepts (`diagnostics` in the JSON file: every seed):", ""]
        lines += [*concept_lines(by_method), "", DIAGNOSTICS_LEGEND]
    return "\n".join(lines + [""])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--data_dir", default="data/synthetic")
    parser.add_argument("--pretrained_clip_dir", default="runs/clip-synthetic")
    parser.add_argument("--clip", default=None, help="use this CLIP checkpoint instead of the pretrained small one")
    parser.add_argument("--work_dir", default="runs/accuracy")
    parser.add_argument(
        "--max_steps", type=int, default=4000, help="the most steps a row trains (it stops earlier once val stalls)"
    )
    parser.add_argument("--eval_steps", type=int, default=100, help="evaluate val every this many steps")
    parser.add_argument(
        "--early_stopping_patience",
        type=int,
        default=4,
        help="stop a row after this many evaluations without a better val R@1 (0: train all --max_steps)",
    )
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument("--name", default="accuracy", help="the results files' name")
    parser.add_argument("train_overrides", nargs="*", help="more train.py overrides, after --")
    args = parser.parse_args(argv)

    # train.py runs from the repository root: every path is made absolute so both processes mean the same files.
    for name in ("data_dir", "pretrained_clip_dir", "work_dir", "out"):
        setattr(args, name, os.path.abspath(getattr(args, name)))
    args.clip = os.path.abspath(args.clip) if args.clip and os.path.isdir(args.clip) else args.clip
    common = ["--data_dir", args.data_dir, "--pretrained_clip_dir", args.pretrained_clip_dir]
    common += ["--eval_splits", *SPLITS, "--selection_split", "val"]
    common += ["--max_steps", str(args.max_steps), "--eval_strategy", "steps", "--eval_steps", str(args.eval_steps)]
    common += ["--early_stopping_patience", str(args.early_stopping_patience)]
    common += [*(["--clip", args.clip] if args.clip else []), *args.train_overrides]
    rows, per_run = [], {}
    clip_zero_shot = None
    report = {"rows": rows, "diagnostics": per_run, "seeds": args.seeds}
    for name in args.methods:
        overrides = METHODS[name]
        if overrides is None:  # deterministic: one evaluation stands for every seed
            clip_zero_shot, diagnosed = zero_shot_report(args, common)
            rows += summarise(name, [clip_zero_shot], args.seeds[:1])
            per_run[f"{name} / seed {args.seeds[0]}"] = diagnosed
            continue
        per_seed, best_steps = [], []
        for seed in args.seeds:
            slug = name.replace(" ", "_").replace("(", "").replace(")", "").replace(",", "")
            output_dir = os.path.join(args.work_dir, f"{slug}-seed{seed}")
            summary = run_training([*common, *overrides, "--seed", str(seed), "--output_dir", output_dir])
            metrics, model_dir = selected(summary)
            per_seed.append(metrics)
            best_steps.append(summary["best_step"])
            per_run[f"{name} / seed {seed}"] = run_diagnostics(model_dir, args.data_dir)
        rows += summarise(name, per_seed, args.seeds, best_steps)
        if clip_zero_shot is not None:  # written after every method, so that a long run's finished rows are kept
            report.update(
                clip_zero_shot=clip_zero_shot,
                oracles=oracles(args.data_dir),
                corpus_format=corpus_format(args.data_dir),
            )
            save_report(report, args.name, argv, args.out, markdown, script="benchmarks/accuracy.py")
    if clip_zero_shot is None:
        clip_zero_shot, _ = zero_shot_report(args, common)
    report.update(
        clip_zero_shot=clip_zero_shot, oracles=oracles(args.data_dir), corpus_format=corpus_format(args.data_dir)
    )
    return save_report(report, args.name, argv, args.out, markdown, script="benchmarks/accuracy.py")


def corpus_format(data_dir: str) -> int:
    """The format version of the built-in corpus the benchmark ran on (what the README labels its figures with)."""
    from s2ca_hf.data.synthetic import META_JSON

    with open(os.path.join(data_dir, META_JSON)) as f:
        return json.load(f)["format_version"]


def oracles(data_dir: str) -> dict[str, dict]:
    """Per evaluation split, the text->video R@1 ceilings of `s2ca_hf.data.synthetic.oracle_r1` and the query count."""
    from s2ca_hf.data.synthetic import load_clips, oracle_r1

    clips = list(load_clips(data_dir).values())
    return {
        split: {"queries": len(members), **oracle_r1(members)}
        for split in SPLITS
        if (members := [c for c in clips if c.split == split])
    }


def zero_shot_report(args, common: list[str]) -> tuple[dict, dict]:
    """The small CLIP's zero-shot metrics on every split and its diagnostics (pretraining it first if needed)."""
    from s2ca_hf.data import load_corpus
    from s2ca_hf.retrieval.evaluation import evaluate_corpus

    clip = args.clip or args.pretrained_clip_dir
    if not os.path.isdir(clip):  # a first (one-step) training run pretrains the small CLIP
        run_training([*common, "--max_steps", "1", "--output_dir", os.path.join(args.work_dir, "pretrain")])
    _, data_args, _, _ = load_training_script("train_arguments").parse_arguments(common)
    model, processor = zero_shot_model(clip, data_args.max_frames, data_args.max_words)
    metrics = {
        split: evaluate_corpus(model, processor, load_corpus("synthetic", args.data_dir, split), progress=False)[
            "metrics"
        ]
        for split in SPLITS
    }
    return metrics, diagnostics(model, processor, args.data_dir)


def machine() -> str:
    """The CPU model (results depend on it: float kernels differ), core count and architecture."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    return f"{model}, {platform.machine()}, {os.cpu_count()} cores"


def save_report(report: dict, name: str, argv: list[str] | None, out: str, render, script: str | None = None) -> dict:
    """Adds the date, machine, exact command and versions, writes `<out>/<name>.json` and `.md`, prints the table.
    `script` is the benchmark that ran (default: `benchmarks/<name>.py`)."""
    script = script or f"benchmarks/{name}.py"
    report.update(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        machine=machine(),
        command=" ".join([f"python {script}", *(argv if argv is not None else sys.argv[1:])]),
        versions={"torch": torch.__version__, "transformers": transformers.__version__},
    )
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(render(report))
    if importlib.util.find_spec("matplotlib") is not None:  # the figures beside the tables (the viz extra)
        import figures

        figures.write_figures(report, name, out)
    print(render(report))
    return report


if __name__ == "__main__":
    main()
